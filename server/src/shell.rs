//! The interactive `cohort sql` shell: line editing and history (rustyline), statements over
//! several lines until a `;`, psql-style backslash commands, Ctrl-C to cancel.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Editor, Helper};

use crate::config::OutputFormat;
use crate::script;
use crate::sql_command::{Target, run_cancellable, timing_text};

const HELP: &str = "\
Statements end with ';' and may span lines. Ctrl-C cancels the input or a running statement,
Ctrl-D quits.
  \\q               quit (also: quit, exit)
  \\timing [on|off] print how long each statement took
  \\format NAME     table, csv or json
  \\d [TABLE]       list the tables, or the columns of TABLE
  \\?               this help";

/// Tells rustyline when Enter ends the input: after a statement's `;`, or at once for a
/// backslash command.
struct SqlHelper;

impl Validator for SqlHelper {
    fn validate(&self, context: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        let input = context.input();
        Ok(if is_command(input) || script::is_complete(input) {
            ValidationResult::Valid(None)
        } else {
            ValidationResult::Incomplete
        })
    }
}

impl Completer for SqlHelper {
    type Candidate = String;
}
impl Hinter for SqlHelper {
    type Hint = String;
}
impl Highlighter for SqlHelper {}
impl Helper for SqlHelper {}

fn is_command(input: &str) -> bool {
    let input = input.trim();
    input.starts_with('\\')
        || input.eq_ignore_ascii_case("quit")
        || input.eq_ignore_ascii_case("exit")
}

/// The history file: COHORT_HISTORY, else ~/.cohort_history; none without a home directory.
fn history_path() -> Option<PathBuf> {
    match std::env::var_os("COHORT_HISTORY") {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ => std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cohort_history")),
    }
}

struct Shell {
    format: OutputFormat,
    timing: bool,
}

pub async fn run(target: &mut Target, format: OutputFormat, timing: bool) -> anyhow::Result<()> {
    let mut editor: Editor<SqlHelper, FileHistory> = Editor::new()?;
    editor.set_helper(Some(SqlHelper));
    let history = history_path();
    if let Some(path) = &history {
        // A first run has no history file yet.
        let _ = editor.load_history(path);
    }
    let mut shell = Shell { format, timing };
    println!(
        "cohort {} — statements end with ';', \\? for help, \\q to quit",
        env!("CARGO_PKG_VERSION")
    );
    loop {
        // The editor blocks on the terminal; the runtime keeps serving other tasks meanwhile.
        let line = tokio::task::block_in_place(|| editor.readline("cohort> "));
        let input = match line {
            Ok(input) => input,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(error) => return Err(error.into()),
        };
        if input.trim().is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(input.as_str());
        if is_command(&input) {
            match shell.command(input.trim()) {
                Command::Quit => break,
                Command::Done => {}
                Command::Sql(sql) => shell.run_statements(target, &sql).await,
            }
            continue;
        }
        shell.run_statements(target, &input).await;
    }
    if let Some(path) = &history
        && let Err(error) = editor.save_history(path)
    {
        eprintln!(
            "warning: cannot save the history to {}: {error}",
            path.display()
        );
    }
    Ok(())
}

enum Command {
    Quit,
    Done,
    /// A command that is a statement (`\d`).
    Sql(String),
}

impl Shell {
    fn command(&mut self, input: &str) -> Command {
        if input.eq_ignore_ascii_case("quit") || input.eq_ignore_ascii_case("exit") {
            return Command::Quit;
        }
        let mut words = input.trim_end_matches(';').split_whitespace();
        let name = words.next().unwrap_or_default();
        let argument = words.next();
        match (name, argument) {
            ("\\q", _) => return Command::Quit,
            ("\\?", _) => println!("{HELP}"),
            ("\\timing", None) => self.timing = !self.timing,
            ("\\timing", Some("on")) => self.timing = true,
            ("\\timing", Some("off")) => self.timing = false,
            ("\\format", Some("table")) => self.format = OutputFormat::Table,
            ("\\format", Some("csv")) => self.format = OutputFormat::Csv,
            ("\\format", Some("json")) => self.format = OutputFormat::Json,
            ("\\d", None) => return Command::Sql("SHOW TABLES".into()),
            ("\\d", Some(table)) => return Command::Sql(format!("SHOW COLUMNS FROM {table}")),
            _ => {
                eprintln!("unknown command {input}: \\? lists the commands");
                return Command::Done;
            }
        }
        if name == "\\timing" {
            println!("Timing is {}.", if self.timing { "on" } else { "off" });
        }
        Command::Done
    }

    /// Runs each statement of `input`; a failed one is reported and the shell goes on.
    async fn run_statements(&self, target: &mut Target, input: &str) {
        let statements = match script::split(input) {
            Ok(statements) => statements,
            Err(error) => {
                eprintln!("error: {error}");
                return;
            }
        };
        for statement in &statements {
            let started = Instant::now();
            let result = run_cancellable(target, statement).await;
            let elapsed = started.elapsed();
            let printed = result.and_then(|(schema, batches)| {
                let mut stdout = std::io::stdout().lock();
                crate::output::print(&schema, &batches, self.format, &mut stdout)?;
                stdout.flush()?;
                Ok(())
            });
            if let Err(error) = printed {
                eprintln!("error: {}", crate::cli::report(&error));
                // The statements after a failed one may depend on it.
                return;
            }
            if self.timing {
                println!("{}", timing_text(elapsed));
            }
        }
    }
}
