//! The `cohort` command: serve, ingest, optimize, sql, demo, auth.

use std::io::IsTerminal;
use std::time::Duration;

use clap::Parser;
use cohort_engine::Engine;
use cohort_engine::demo::DemoOptions;
use cohort_engine::ingest::IngestProgress;
use indicatif::{ProgressBar, ProgressStyle};
use tracing_subscriber::EnvFilter;

use crate::config::{Cli, Command, Settings};

/// Two TLS backends are linked (ring for gRPC, aws-lc-rs through the AWS SDK), so rustls
/// cannot pick one itself; an error means one is installed already, which is as good.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Dependency log targets that report internal details at levels meant for their developers.
const QUIET_DEPENDENCIES: &str =
    "deltalake_core=error,buoyant_kernel=error,aws_config=error,aws_smithy_runtime=error";

pub async fn run() -> anyhow::Result<()> {
    install_tls_provider();
    let cli = Cli::parse();
    let (store, serve) = match &cli.command {
        Command::Serve(args) => (Some(&args.store), Some(args)),
        Command::Ingest(args) => (Some(&args.store), None),
        Command::Optimize(args) => (Some(&args.store), None),
        Command::Sql(args) => (Some(&args.store), None),
        Command::Demo(args) => (Some(&args.store), None),
        Command::Auth(_) => (None, None),
    };
    let mut settings = Settings::resolve(&cli.global, store, serve).map_err(anyhow::Error::msg)?;
    if !matches!(cli.command, Command::Serve(_)) && cli.global.log.is_none() {
        // One-shot commands print results on stdout; keep routine logs out of the way.
        settings.log = format!("warn,{QUIET_DEPENDENCIES}");
    }
    init_logging(&settings.log)?;

    match cli.command {
        Command::Serve(args) => {
            let bar = Bar::new("demo events");
            crate::serve::serve(settings, args.demo, &|n| bar.set(n)).await
        }
        Command::Ingest(args) => {
            let engine = Engine::open(settings.engine).await?;
            let bar = Bar::new("rows read");
            let read = std::sync::atomic::AtomicU64::new(0);
            let report = engine
                .ingest_files(
                    args.table.into(),
                    &args.files,
                    args.format.map(Into::into),
                    &|p| match p {
                        IngestProgress::FileRead { rows, .. } => {
                            let total = read
                                .fetch_add(rows as u64, std::sync::atomic::Ordering::Relaxed)
                                + rows as u64;
                            bar.set(total);
                        }
                        IngestProgress::Writing { .. } => bar.message("writing"),
                    },
                )
                .await?;
            bar.finish();
            match report.version {
                Some(version) => println!(
                    "{} written to {} (version {version})",
                    rows_text(report.rows),
                    report.table
                ),
                None => println!("no rows in the input: nothing written to {}", report.table),
            }
            Ok(())
        }
        Command::Optimize(args) => {
            let engine = Engine::open(settings.engine).await?;
            let report = engine.optimize(args.table.into()).await?;
            match report.version {
                Some(version) => println!(
                    "{}: {} files in {} rewritten into {} ({}, version {version})",
                    report.table,
                    report.files_removed,
                    match (report.table, report.partitions) {
                        (cohort_engine::TableKind::Profiles, _) => "the table".to_string(),
                        (_, 1) => "1 day".to_string(),
                        (_, days) => format!("{days} days"),
                    },
                    report.files_added,
                    rows_text(report.rows),
                ),
                None => println!("{}: nothing to optimize", report.table),
            }
            Ok(())
        }
        Command::Sql(args) => crate::sql_command::run(settings, args).await,
        Command::Auth(command) => crate::remote::auth_command(command),
        Command::Demo(args) => {
            let data = settings.engine.data.clone();
            let engine = Engine::open(settings.engine).await?;
            if !args.force && !engine.store().is_empty().await? {
                anyhow::bail!(
                    "the store at {data} already holds data, and the demo would add a second \
                     copy; pass --force to add it anyway, or --data DIR for a new store"
                );
            }
            let bar = Bar::new("events generated");
            let options = DemoOptions {
                users: args.users,
                events: args.events,
                seed: args.seed,
            };
            let report = engine.write_demo(options, &|n| bar.set(n)).await?;
            bar.finish();
            println!(
                "demo data written: {} events, {} profiles",
                report.events, report.profiles
            );
            Ok(())
        }
    }
}

/// `1 row`, `2 rows`.
fn rows_text(rows: u64) -> String {
    if rows == 1 {
        "1 row".to_string()
    } else {
        format!("{rows} rows")
    }
}

/// The line `cohort` prints for a failed command: each context once, then the root cause in
/// its own words. Engine and DataFusion errors already summarise their chain (which repeats
/// the message at every level), so the walk stops at them; transport errors (TLS, DNS) say
/// only "transport error" at the top and the reason further down, so their chain is kept.
pub fn report(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        if let Some(engine) = cause.downcast_ref::<cohort_engine::EngineError>() {
            parts.push(engine.to_string());
            break;
        }
        if let Some(datafusion) = cause.downcast_ref::<datafusion::error::DataFusionError>() {
            parts.push(cohort_engine::error::datafusion_message(datafusion));
            break;
        }
        parts.push(cause.to_string());
    }
    cohort_engine::error::distinct_causes(parts)
}

fn init_logging(filter: &str) -> anyhow::Result<()> {
    // The storage libraries log every Delta log read at info, and the AWS credential chain
    // warns once per source it tries before the store reports the one error that matters:
    // unless the filter names them, only their errors are shown.
    let filter = if ["deltalake", "buoyant", "aws_"]
        .iter()
        .any(|name| filter.contains(name))
    {
        filter.to_string()
    } else {
        format!("{filter},{QUIET_DEPENDENCIES}")
    };
    let filter = EnvFilter::try_new(&filter)
        .map_err(|e| anyhow::anyhow!("invalid log filter '{filter}': {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

/// A spinner with a count on an interactive terminal; nothing at all otherwise.
struct Bar(Option<ProgressBar>);

impl Bar {
    fn new(unit: &'static str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let bar = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {human_pos} {msg} ({elapsed})")
                .expect("valid template"),
        );
        bar.set_message(unit);
        bar.enable_steady_tick(Duration::from_millis(120));
        Self(Some(bar))
    }

    fn set(&self, n: u64) {
        if let Some(bar) = &self.0 {
            bar.set_position(n);
        }
    }

    fn message(&self, message: &'static str) {
        if let Some(bar) = &self.0 {
            bar.set_message(message);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
