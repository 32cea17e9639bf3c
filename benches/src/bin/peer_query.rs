//! Generates the benchmark data set and times Cohort's queries on it, for `peer_compare.py`.
//!
//! ```sh
//! peer_query generate --users 500000 --events 10000000 --out /tmp/bench/events.parquet
//! peer_query run --data /tmp/bench/events.parquet --query funnel --threads 2
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};
use cohort_benches::{FUNNEL_SQL, peak_rss_mb, retention_sql};
use cohort_engine::demo::{DemoOptions, generate};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the demo data set as one Parquet file sorted by (user_id, ts).
    Generate {
        #[arg(long, default_value_t = 500_000)]
        users: usize,
        #[arg(long, default_value_t = 10_000_000)]
        events: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Time one query; prints `{"query":..,"best_ms":..,"peak_rss_mb":..,"rows":..}`.
    Run {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, value_parser = ["funnel", "retention"])]
        query: String,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Bound the memory pool (MiB, fair spill pool) as `cohort serve` does by default;
        /// unbounded when absent.
        #[arg(long)]
        memory_limit_mib: Option<usize>,
        /// Run this SQL instead of the named query (e.g. `EXPLAIN ANALYZE ...` to see where the
        /// time goes) and print its result.
        #[arg(long)]
        sql: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.command {
        Command::Generate { users, events, out } => {
            let (batch, _) = generate(DemoOptions { users, events, seed: 42 }, &|_| {})?;
            let columns = ["user_id", "ts"].map(|c| arrow::compute::SortColumn {
                values: Arc::clone(batch.column_by_name(c).expect("demo column")),
                options: None,
            });
            let indices = arrow::compute::lexsort_to_indices(&columns, None)?;
            let batch = arrow::compute::take_record_batch(&batch, &indices)?;
            if let Some(dir) = out.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let properties = WriterProperties::builder().set_max_row_group_row_count(Some(1 << 20)).build();
            let mut writer = ArrowWriter::try_new(std::fs::File::create(&out)?, batch.schema(), Some(properties))?;
            for start in (0..batch.num_rows()).step_by(1 << 16) {
                writer.write(&batch.slice(start, (1 << 16).min(batch.num_rows() - start)))?;
            }
            writer.close()?;
            println!("{} events written to {}", batch.num_rows(), out.display());
        }
        Command::Run { data, query, threads, repeat, memory_limit_mib, sql: custom } => runtime.block_on(async {
            // DATAFUSION_* variables tune a run, as for any DataFusion session.
            let config = SessionConfig::from_env()?.with_target_partitions(threads);
            let mut runtime_env = RuntimeEnvBuilder::new();
            if let Some(mib) = memory_limit_mib {
                runtime_env = runtime_env.with_memory_pool(Arc::new(FairSpillPool::new(mib << 20)));
            }
            let builder = SessionStateBuilder::new()
                .with_config(config)
                .with_runtime_env(runtime_env.build_arc()?)
                .with_default_features();
            let state = cohort_sql_extensions::session_state(builder)?;
            let ctx = SessionContext::new_with_state(state);
            ctx.register_parquet("events", data.to_string_lossy().as_ref(), ParquetReadOptions::default())
                .await?;
            let sql = match &custom {
                Some(sql) => sql.clone(),
                None if query == "funnel" => FUNNEL_SQL.to_string(),
                None => retention_sql(),
            };
            let mut best = f64::MAX;
            let mut rows = 0;
            for _ in 0..repeat.max(1) {
                let started = Instant::now();
                let batches = ctx.sql(&sql).await?.collect().await?;
                best = best.min(started.elapsed().as_secs_f64() * 1000.0);
                rows = batches.iter().map(|b| b.num_rows()).sum::<usize>();
                if custom.is_some() {
                    println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
                }
            }
            println!(
                "{{\"query\":\"{query}\",\"best_ms\":{best:.1},\"peak_rss_mb\":{:.1},\"rows\":{rows}}}",
                peak_rss_mb()
            );
            anyhow::Ok(())
        })?,
    }
    Ok(())
}
