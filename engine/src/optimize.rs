//! `OPTIMIZE events|profiles`: rewrite a table's small files into large sorted ones.
//!
//! Every ingest sorts its own rows by `(user_id, ts)`, but a store filled by many small ingests
//! holds many files per day, and a per-user scan then meets each user once per file. OPTIMIZE
//! rewrites each `events` day that has more files than its size needs into as few files as the
//! writer's target size allows, sorted by `(user_id, ts)`; `profiles` (upserts leave one file
//! per MERGE) is rewritten whole, sorted by `user_id`. The rows, their keys and every hidden
//! column stay as they are.
//!
//! All rewritten files are replaced in one Delta commit, under the table's write lock, so a
//! reader sees the table before or after, never between; a concurrent writer in another
//! process that adds files to a rewritten day makes one of the two commits fail rather than
//! lose rows. The old files stay in the store (earlier versions still read them).
//!
//! deltalake's own `optimize` is not used: its compaction concatenates files without sorting
//! them, and its Z-order interleaves columns instead of the lexicographic `(user_id, ts)` order
//! the per-user operators run fastest on.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::ScalarValue;
use datafusion::datasource::provider_as_source;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::logical_expr::{Expr, cast};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::prelude::{col, lit};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use deltalake::delta_datafusion::DeltaSessionConfig;
use deltalake::delta_datafusion::planner::DeltaPlanner;
use deltalake::kernel::LogicalFileView;
use deltalake::protocol::SaveMode;

use crate::Engine;
use crate::error::{EngineError, Result};
use crate::store::IdentifiedCommit;
use crate::tables::{EVENT_DATE, TS, TableKind, USER_ID};

/// Files smaller than this are worth merging; delta-rs writes files up to about this size.
const TARGET_FILE_BYTES: u64 = 100 * 1024 * 1024;

/// What an OPTIMIZE rewrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptimizeReport {
    pub table: TableKind,
    /// Days of `events` (for `profiles`: 1, the whole table) that were rewritten.
    pub partitions: u64,
    pub files_removed: u64,
    pub files_added: u64,
    pub rows: u64,
    /// The Delta version of the rewrite; None when nothing needed rewriting.
    pub version: Option<u64>,
}

/// `OPTIMIZE [TABLE] events|profiles`, if `sql` is that statement.
pub(crate) fn parse(sql: &str) -> Result<Option<TableKind>> {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Ok(None);
    };
    let words: Vec<&Token> = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_) | Token::SemiColon))
        .collect();
    let word = |t: &Token| match t {
        Token::Word(w) => Some(w.value.clone()),
        _ => None,
    };
    match words.first().and_then(|t| word(t)) {
        Some(first) if first.eq_ignore_ascii_case("OPTIMIZE") => {}
        _ => return Ok(None),
    }
    let mut rest: Vec<String> = words[1..]
        .iter()
        .map(|t| word(t).unwrap_or_else(|| t.to_string()))
        .collect();
    if rest
        .first()
        .is_some_and(|w| w.eq_ignore_ascii_case("TABLE"))
    {
        rest.remove(0);
    }
    match rest.as_slice() {
        [name] => Ok(Some(name.parse()?)),
        _ => Err(EngineError::InvalidStatement(
            "expected OPTIMIZE events or OPTIMIZE profiles".into(),
        )),
    }
}

/// The files of one partition: how many, and their total size.
#[derive(Debug, Default)]
struct PartitionFiles {
    files: u64,
    bytes: u64,
    rows: u64,
}

impl PartitionFiles {
    /// More files than the data needs at the target size: a rewrite makes fewer.
    fn worth_rewriting(&self) -> bool {
        self.files > 1 && self.files > self.bytes.div_ceil(TARGET_FILE_BYTES).max(1)
    }
}

impl Engine {
    /// Rewrites `kind`'s fragmented partitions into few files sorted for per-user scans, in one
    /// commit; see the module documentation.
    pub async fn optimize(&self, kind: TableKind) -> Result<OptimizeReport> {
        let _guard = self.write_locks[&kind].lock().await;
        let nothing = OptimizeReport {
            table: kind,
            partitions: 0,
            files_removed: 0,
            files_added: 0,
            rows: 0,
            version: None,
        };
        let Some(table) = self.store.latest(kind).await? else {
            return Ok(nothing);
        };
        let mut partitions: BTreeMap<Option<String>, PartitionFiles> = BTreeMap::new();
        for file in table.snapshot()?.log_data().iter() {
            let entry = partitions.entry(partition_of(kind, &file)).or_default();
            entry.files += 1;
            entry.bytes += file.size().max(0) as u64;
            entry.rows += file.num_records().unwrap_or_default() as u64;
        }
        partitions.retain(|_, files| files.worth_rewriting());
        if partitions.is_empty() {
            return Ok(nothing);
        }
        let (predicate, order): (Option<Expr>, Vec<&str>) = match kind {
            TableKind::Events => {
                let days = partitions
                    .keys()
                    .map(|day| match day {
                        Some(day) => Ok(cast(
                            lit(ScalarValue::Utf8(Some(day.clone()))),
                            arrow::datatypes::DataType::Date32,
                        )),
                        None => Err(EngineError::Corrupt(
                            "an events file without an event_date partition".into(),
                        )),
                    })
                    .collect::<Result<Vec<_>>>()?;
                (
                    Some(col(EVENT_DATE).in_list(days, false)),
                    vec![EVENT_DATE, USER_ID, TS],
                )
            }
            TableKind::Profiles => (None, vec![USER_ID]),
        };
        // delta-rs plans its write with its own planner; the store's runtime lets the sort
        // spill within the memory limit. One partition: the writer consumes partitions side by
        // side, which would interleave two sorted halves in one file.
        let config = SessionConfig::from(DeltaSessionConfig::default()).with_target_partitions(1);
        let ctx = SessionContext::new_with_state(
            SessionStateBuilder::new()
                .with_default_features()
                .with_config(config)
                .with_runtime_env(Arc::clone(&self.runtime))
                .with_query_planner(DeltaPlanner::new())
                .build(),
        );
        table.update_datafusion_session(&ctx.state())?;
        let mut rows = ctx.read_table(table.table_provider().await?)?;
        if let Some(predicate) = &predicate {
            rows = rows.filter(predicate.clone())?;
        }
        let rows = rows.sort(
            order
                .iter()
                .map(|c| col(datafusion::common::Column::from_name(*c)).sort(true, false))
                .collect(),
        )?;
        // The writer's planner drops a sort no operator above it asks for; planned here and
        // handed over as a stream, the rows reach the files in order.
        let sorted = rows.create_physical_plan().await?;
        let schema = sorted.schema();
        let sorted = StreamingTable::try_new(
            Arc::clone(&schema),
            vec![Arc::new(SortedRows { schema, sorted })],
        )?;
        let input =
            LogicalPlanBuilder::scan("sorted_rows", provider_as_source(Arc::new(sorted)), None)?
                .build()?;
        let commit = IdentifiedCommit::new();
        let mut write = table
            .clone()
            .write(vec![])
            .with_input_plan(input)
            .with_session_state(Arc::new(ctx.state()))
            .with_save_mode(SaveMode::Overwrite)
            .with_partition_columns(kind.partition_columns())
            .with_commit_properties(commit.properties());
        if let Some(predicate) = predicate {
            write = write.with_replace_where(predicate);
        }
        let written = commit.settle(&table, write.await).await?;
        let version = written.version();
        let files_added = written
            .snapshot()?
            .log_data()
            .iter()
            .filter(|file| partitions.contains_key(&partition_of(kind, file)))
            .count() as u64;
        let report = OptimizeReport {
            table: kind,
            partitions: partitions.len() as u64,
            files_removed: partitions.values().map(|p| p.files).sum(),
            files_added,
            rows: partitions.values().map(|p| p.rows).sum(),
            version,
        };
        tracing::info!(
            table = %kind,
            partitions = report.partitions,
            files_removed = report.files_removed,
            files_added = report.files_added,
            rows = report.rows,
            ?version,
            "optimized"
        );
        Ok(report)
    }
}

/// One partition of already planned, sorted rows.
#[derive(Debug)]
struct SortedRows {
    schema: SchemaRef,
    sorted: Arc<dyn ExecutionPlan>,
}

impl PartitionStream for SortedRows {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        match self.sorted.execute(0, ctx) {
            Ok(stream) => stream,
            Err(error) => Box::pin(RecordBatchStreamAdapter::new(
                Arc::clone(&self.schema),
                futures::stream::once(async move { Err(error) }),
            )),
        }
    }
}

/// The `event_date` of an events file; profiles are one partition.
fn partition_of(kind: TableKind, file: &LogicalFileView) -> Option<String> {
    match kind {
        TableKind::Events => file
            .partition_values_map()
            .get(EVENT_DATE)
            .cloned()
            .flatten(),
        TableKind::Profiles => None,
    }
}
