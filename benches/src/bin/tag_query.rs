//! Builds a tagged store and times a stored-tag expression, for `tag_compare.py`.
//!
//! ```sh
//! tag_query prepare --profiles /tmp/cohort-tags/profiles.parquet --store /tmp/cohort-tags/store
//! tag_query run --store /tmp/cohort-tags/store --expr 't0 & (t1 | t2) - t3 ^ t4'
//! ```
//!
//! `prepare` ingests the profiles (user_id plus boolean columns t0, t1, ...) and creates one tag
//! per boolean column with `CREATE TAG tN AS SELECT user_id FROM profiles WHERE tN`. `run` times
//! the whole statement `SELECT bitmap_cardinality(audience_bitmap(expr))` as a client sends it:
//! parsing, reading the tags' bitmaps from the store, planning and evaluating.

use std::path::PathBuf;
use std::time::Instant;

use arrow::array::AsArray;
use arrow::datatypes::{DataType, Int64Type};
use clap::{Parser, Subcommand};
use cohort_benches::peak_rss_mb;
use cohort_engine::tables::TableKind;
use cohort_engine::{Engine, EngineConfig};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ingest the profiles and create a tag per boolean column.
    Prepare {
        #[arg(long)]
        profiles: PathBuf,
        #[arg(long)]
        store: PathBuf,
    },
    /// Time the expression; prints `{"first_ms":..,"best_ms":..,"peak_rss_mb":..,"users":..}`.
    Run {
        #[arg(long)]
        store: PathBuf,
        #[arg(long)]
        expr: String,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Time this statement instead (its first column must be an Int64).
        #[arg(long)]
        sql: Option<String>,
    },
}

async fn open(store: &std::path::Path, threads: Option<usize>) -> anyhow::Result<Engine> {
    Ok(Engine::open(EngineConfig {
        data: store.to_string_lossy().into_owned(),
        target_partitions: threads,
        ..Default::default()
    })
    .await?)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match args.command {
            Command::Prepare { profiles, store } => {
                let engine = open(&store, None).await?;
                let report = engine
                    .ingest_files(TableKind::Profiles, &[profiles], None, &|_| {})
                    .await?;
                let (schema, _) = engine
                    .execute_collect("SELECT * FROM profiles LIMIT 0")
                    .await?;
                let mut tags = 0;
                for field in schema.fields() {
                    if field.data_type() == &DataType::Boolean {
                        let name = field.name();
                        engine
                            .execute_collect(&format!(
                                "CREATE TAG {name} AS SELECT user_id FROM profiles WHERE {name}"
                            ))
                            .await?;
                        tags += 1;
                    }
                }
                eprintln!("{} profiles, {tags} tags", report.rows);
            }
            Command::Run {
                store,
                expr,
                threads,
                repeat,
                sql,
            } => {
                let engine = open(&store, Some(threads)).await?;
                let sql = sql.unwrap_or_else(|| {
                    format!(
                        "SELECT bitmap_cardinality(audience_bitmap('{}'))",
                        expr.replace('\'', "''")
                    )
                });
                let mut times = Vec::with_capacity(repeat);
                let mut users = 0;
                for _ in 0..repeat.max(1) {
                    let started = Instant::now();
                    let (_, batches) = engine.execute_collect(&sql).await?;
                    times.push(started.elapsed().as_secs_f64() * 1000.0);
                    users = batches[0].column(0).as_primitive::<Int64Type>().value(0);
                }
                // The first run reads the tags from the store; later runs find them decoded.
                let best = times.iter().copied().fold(f64::INFINITY, f64::min);
                println!(
                    "{{\"first_ms\":{:.2},\"best_ms\":{best:.2},\"peak_rss_mb\":{:.1},\"users\":{users}}}",
                    times[0],
                    peak_rss_mb()
                );
            }
        }
        Ok(())
    })
}
