//! Runs every `.slt` file (engine and sql-extensions) against an engine on a fresh temporary store.
//! One test per file, so `cargo test` and `cargo nextest` list and filter them by name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use cohort_engine::{Engine, EngineConfig, EngineError, StatementOutcome};
use libtest_mimic::{Arguments, Failed, Trial};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};

struct EngineDb {
    engine: Arc<Engine>,
}

#[async_trait::async_trait]
impl AsyncDB for EngineDb {
    type Error = EngineError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, EngineError> {
        match self.engine.execute(sql, None).await? {
            StatementOutcome::RowsAffected(rows) => Ok(DBOutput::StatementComplete(rows)),
            StatementOutcome::Query(df) => {
                let types = df
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| column_type(f.data_type()))
                    .collect();
                let batches = df.collect().await?;
                Ok(DBOutput::Rows {
                    types,
                    rows: format_rows(&batches)?,
                })
            }
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "cohort"
    }
}

/// The sqllogictest letter of a column: `I` integers, `R` floating point and decimals, `T`
/// strings; `?` anything else (booleans, times, lists, binary), which a file writes as any
/// other letter (DataFusion's `B`, `D`, `P` ...).
fn column_type(data_type: &DataType) -> DefaultColumnType {
    match data_type {
        t if t.is_integer() => DefaultColumnType::Integer,
        t if t.is_floating() || t.is_decimal() => DefaultColumnType::FloatingPoint,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DefaultColumnType::Text,
        DataType::Dictionary(_, value) => column_type(value),
        _ => DefaultColumnType::Any,
    }
}

fn format_rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, EngineError> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|f| {
                        let value = f.value(row).to_string();
                        if value.is_empty() {
                            "(empty)".to_string()
                        } else {
                            value
                        }
                    })
                    .collect(),
            );
        }
    }
    Ok(rows)
}

fn run_file(path: &Path) -> Result<(), Failed> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let dir = tempfile::tempdir()?;
        let engine = Arc::new(
            Engine::open(EngineConfig {
                data: dir.path().to_string_lossy().into_owned(),
                ..Default::default()
            })
            .await?,
        );
        let mut runner = sqllogictest::Runner::new(move || {
            let engine = Arc::clone(&engine);
            async move { Ok(EngineDb { engine }) }
        });
        // Column letters are checked: `query I` on a string column fails.
        runner.with_column_validator(sqllogictest::strict_column_validator);
        runner
            .run_file_async(path)
            .await
            .map_err(|e| Failed::from(e.display(true).to_string()))
    })
}

fn main() {
    let arguments = Arguments::from_args();
    // The engine's own files, and those of sql-extensions: that crate has no store, but its
    // functions are registered in every engine session, so one runner serves both.
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dirs = [
        manifest.join("tests/slt"),
        manifest.join("../sql-extensions/tests/slt"),
    ];
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in &dirs {
        let found: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("readable entry").path())
            .filter(|path| path.extension().is_some_and(|e| e == "slt"))
            .collect();
        assert!(!found.is_empty(), "no .slt files in {}", dir.display());
        files.extend(found);
    }
    files.sort_by_key(|p| p.file_name().map(|n| n.to_owned()));
    let trials = files
        .into_iter()
        .map(|path| {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            Trial::test(name, move || run_file(&path))
        })
        .collect();
    libtest_mimic::run(&arguments, trials).exit();
}
