//! `cohort sql`: statements from the command line, a file, standard input or an interactive
//! shell, run on the store directly or on a running server.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use cohort_engine::Engine;

use crate::config::{OutputFormat, Settings, SqlArgs};
use crate::remote::RemoteClient;
use crate::script::{self, ScriptStatement};

/// Where statements run: the store opened in this process, or a server.
pub enum Target {
    Local(Box<Engine>),
    Remote(Box<RemoteClient>),
}

impl Target {
    pub async fn open(settings: Settings, args: &SqlArgs) -> anyhow::Result<Self> {
        Ok(match &args.connect {
            Some(url) => Self::Remote(Box::new(RemoteClient::connect(url, args).await?)),
            None => Self::Local(Box::new(Engine::open(settings.engine).await?)),
        })
    }

    pub async fn run(&mut self, sql: &str) -> anyhow::Result<(SchemaRef, Vec<RecordBatch>)> {
        match self {
            Self::Local(engine) => Ok(engine.execute_collect(sql).await?),
            Self::Remote(client) => client.execute(sql).await,
        }
    }
}

/// Where a script came from, for its error messages.
enum Origin<'a> {
    CommandLine,
    StandardInput,
    File(&'a Path),
}

pub async fn run(settings: Settings, args: SqlArgs) -> anyhow::Result<()> {
    let (text, origin) = match (&args.sql, &args.file) {
        (Some(sql), _) => (sql.clone(), Origin::CommandLine),
        (None, Some(path)) if path.as_os_str() == "-" => (read_stdin()?, Origin::StandardInput),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            (text, Origin::File(path))
        }
        (None, None) if std::io::stdin().is_terminal() => {
            let mut target = Target::open(settings, &args).await?;
            return crate::shell::run(&mut target, args.format, args.timing).await;
        }
        (None, None) => (read_stdin()?, Origin::StandardInput),
    };
    let statements = script::split(&text).map_err(|e| match &origin {
        Origin::File(path) => anyhow::anyhow!("{}: {e}", path.display()),
        _ => anyhow::anyhow!("{e}"),
    })?;
    if statements.is_empty() {
        anyhow::bail!(match origin {
            Origin::CommandLine => "no SQL statement given".to_string(),
            Origin::StandardInput => "no SQL statement on standard input".to_string(),
            Origin::File(path) => format!("no SQL statement in {}", path.display()),
        });
    }
    let mut target = Target::open(settings, &args).await?;
    let several = statements.len() > 1;
    let mut stdout = std::io::stdout().lock();
    for (index, statement) in statements.iter().enumerate() {
        let started = Instant::now();
        let (schema, batches) = target.run(&statement.sql).await.map_err(|error| {
            // The engine's positions count from the statement's start; the context says
            // where in the script that is.
            let place = format!("statement {} (line {})", index + 1, statement.line);
            match (&origin, several) {
                (Origin::File(path), _) => error.context(format!("{}, {place}", path.display())),
                (_, true) => error.context(place),
                (_, false) => error,
            }
        })?;
        let elapsed = started.elapsed();
        if index > 0 && args.format == OutputFormat::Table {
            writeln!(stdout)?;
        }
        crate::output::print(&schema, &batches, args.format, &mut stdout)?;
        stdout.flush()?;
        if args.timing {
            eprintln!("{}", timing_text(elapsed));
        }
    }
    Ok(())
}

fn read_stdin() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| anyhow::anyhow!("cannot read standard input: {e}"))?;
    Ok(text)
}

/// `Time: 12.345 ms`, as psql's `\timing` prints it.
pub fn timing_text(elapsed: Duration) -> String {
    format!("Time: {:.3} ms", elapsed.as_secs_f64() * 1000.0)
}

/// One statement of a shell's input, run until it ends or Ctrl-C cancels it.
pub async fn run_cancellable(
    target: &mut Target,
    statement: &ScriptStatement,
) -> anyhow::Result<(SchemaRef, Vec<RecordBatch>)> {
    tokio::select! {
        result = target.run(&statement.sql) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("cancelled")),
    }
}
