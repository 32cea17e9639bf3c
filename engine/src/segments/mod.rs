//! Segments: named audiences materialised into numbered versions, with the users who entered
//! and exited at each version.
//!
//! - `CREATE SEGMENT name [SCHEDULE 'cron'] AS <query returning user_id>` validates the query and
//!   the cron expression, stores the definition (`_cohort/segment_definitions`) and materialises
//!   version 1. `ALTER SEGMENT name SET SCHEDULE 'cron' | DROP SCHEDULE`, `DROP SEGMENT`,
//!   `SHOW SEGMENTS`, `REFRESH SEGMENT name` (run now).
//! - A run evaluates the query into a bitmap of user keys and commits **one** row to
//!   `_cohort/segment_versions`: the members, and the entered/exited bitmaps against the previous
//!   version. The commit is conditional on no other commit having written that version (a
//!   replace-where on `version >= n`), so versions count 1, 2, 3... without gaps or duplicates,
//!   and a failed or killed run leaves the previous version current. A run whose members equal
//!   the current version's commits nothing.
//! - Every run is recorded in `_cohort/segment_runs`: a `running` row when it starts, a
//!   `succeeded` / `unchanged` / `failed` row when it ends. Runs found `running` when the server starts were
//!   interrupted and are marked failed.
//! - SQL: `segment_members('name' [, version])`, `segment_changes('name', since_version)`, and the
//!   views `segments` and `segment_runs`.

pub mod functions;
pub mod schedule;
pub mod scheduler;
mod watch;

use backon::Retryable;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use cohort_sql_extensions::bitmap::{RoaringTreemap, decode, encode};
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{SessionContext, col, lit};
use deltalake::protocol::SaveMode;
use futures::StreamExt;

use crate::Engine;
use crate::catalog_statement::{CatalogStatement, ObjectKind};
use crate::error::{EngineError, Result};
use crate::statement::StatementOutcome;
use crate::store::{micros_column, text_column};
use crate::tables::{SystemTable, USER_ID, UTC, timestamp_type};

pub const SEGMENT_MEMBERS: &str = "segment_members";
pub const SEGMENT_CHANGES: &str = "segment_changes";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentDefinition {
    pub name: String,
    pub query: String,
    pub schedule: Option<String>,
    /// Microseconds since the epoch.
    pub created_at: i64,
    /// `SPLIT (...)`: each member's group by a salted hash of their key.
    pub split: Option<Split>,
}

/// A segment's experiment split: `groups` as `SplitGroups` writes it, and the seed that salts
/// the hash (the segment's name unless `SEED` gave one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub groups: String,
    pub seed: String,
}

/// The column `segment_members` and the activation streams add for a split segment.
pub const SPLIT_GROUP_COLUMN: &str = "split_group";

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Create,
    Manual,
    Schedule,
    /// A scheduled run missed while the server was down, run once at start-up.
    CatchUp,
}

impl Trigger {
    fn name(self) -> &'static str {
        match self {
            Trigger::Create => "create",
            Trigger::Manual => "manual",
            Trigger::Schedule => "schedule",
            Trigger::CatchUp => "catch_up",
        }
    }
}

/// A committed version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentVersion {
    pub segment: String,
    pub version: i64,
    pub run_id: String,
    pub committed_at: i64,
    pub members: i64,
    pub entered: i64,
    pub exited: i64,
}

pub fn definitions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("query", DataType::Utf8, false),
        Field::new("schedule", DataType::Utf8, true),
        Field::new("created_at", timestamp_type(), false),
        Field::new("split", DataType::Utf8, true),
        Field::new("seed", DataType::Utf8, true),
    ]))
}

pub fn versions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("segment", DataType::Utf8, false),
        Field::new("version", DataType::Int64, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("committed_at", timestamp_type(), false),
        Field::new("members", DataType::Int64, false),
        Field::new("entered", DataType::Int64, false),
        Field::new("exited", DataType::Int64, false),
        Field::new("members_bitmap", DataType::Binary, false),
        Field::new("entered_bitmap", DataType::Binary, false),
        Field::new("exited_bitmap", DataType::Binary, false),
    ]))
}

pub fn runs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("segment", DataType::Utf8, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("trigger", DataType::Utf8, false),
        Field::new("scheduled_at", timestamp_type(), true),
        Field::new("started_at", timestamp_type(), false),
        Field::new("finished_at", timestamp_type(), true),
        Field::new("status", DataType::Utf8, false),
        Field::new("version", DataType::Int64, true),
        Field::new("members", DataType::Int64, true),
        Field::new("entered", DataType::Int64, true),
        Field::new("exited", DataType::Int64, true),
        Field::new("error", DataType::Utf8, true),
    ]))
}

/// What a run did.
enum Materialised {
    /// A new version with these members was committed.
    Committed(SegmentVersion),
    /// The members are those of this (current) version: nothing was committed.
    Unchanged(SegmentVersion),
}

/// Run ends kept in memory at most while storage refuses to record them.
const MAX_UNRECORDED_RUNS: usize = 1000;

/// One row of `segment_runs`.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunRow {
    segment: String,
    run_id: String,
    trigger: &'static str,
    scheduled_at: Option<i64>,
    started_at: i64,
    finished_at: Option<i64>,
    status: &'static str,
    version: Option<i64>,
    members: Option<i64>,
    entered: Option<i64>,
    exited: Option<i64>,
    error: Option<String>,
}

impl RunRow {
    fn batch(&self) -> Result<RecordBatch> {
        let timestamp = |v: Option<i64>| -> ArrayRef {
            Arc::new(TimestampMicrosecondArray::from(vec![v]).with_timezone(UTC))
        };
        Ok(RecordBatch::try_new(
            runs_schema(),
            vec![
                Arc::new(StringArray::from(vec![self.segment.as_str()])),
                Arc::new(StringArray::from(vec![self.run_id.as_str()])),
                Arc::new(StringArray::from(vec![self.trigger])),
                timestamp(self.scheduled_at),
                timestamp(Some(self.started_at)),
                timestamp(self.finished_at),
                Arc::new(StringArray::from(vec![self.status])),
                Arc::new(Int64Array::from(vec![self.version])),
                Arc::new(Int64Array::from(vec![self.members])),
                Arc::new(Int64Array::from(vec![self.entered])),
                Arc::new(Int64Array::from(vec![self.exited])),
                Arc::new(StringArray::from(vec![self.error.as_deref()])),
            ],
        )?)
    }
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn unknown_segment(name: &str) -> EngineError {
    ObjectKind::Segment.unknown(name)
}

impl Engine {
    pub(crate) async fn run_segment_statement(
        &self,
        statement: CatalogStatement,
    ) -> Result<StatementOutcome> {
        match statement {
            CatalogStatement::Create {
                name,
                query,
                schedule,
                options,
                or_replace,
                if_not_exists,
                ..
            } => {
                let _catalog = self.catalog_lock.lock().await;
                let split = options.split.map(|groups| Split {
                    groups,
                    seed: options.seed.unwrap_or_else(|| name.clone()),
                });
                let previous = self
                    .segment_definitions()
                    .await?
                    .into_iter()
                    .find(|d| d.name == name);
                if ObjectKind::Segment.create_taken(
                    &name,
                    previous.is_some(),
                    or_replace,
                    if_not_exists,
                )? {
                    return Ok(StatementOutcome::RowsAffected(0));
                }
                self.validate_segment_query(&name, &query).await?;
                let definition = SegmentDefinition {
                    name,
                    query,
                    schedule,
                    created_at: now_micros(),
                    split,
                };
                self.write_segment_definition(&definition).await?;
                let version = match self
                    .refresh_segment(&definition, Trigger::Create, None)
                    .await
                {
                    Ok(version) => version,
                    Err(error) => {
                        // CREATE fails as a whole: no definition is left behind (or the one it
                        // replaced is put back) for the scheduler to keep failing on.
                        let undone = match &previous {
                            Some(previous) => self.write_segment_definition(previous).await,
                            None => {
                                self.store
                                    .delete_where(
                                        SystemTable::SegmentDefinitions,
                                        "name",
                                        &definition.name,
                                    )
                                    .await
                            }
                        };
                        if let Err(undo) = undone {
                            tracing::error!(segment = %definition.name, error = %undo,
                                "the first run failed and the definition could not be removed");
                        }
                        return Err(error);
                    }
                };
                self.scheduler_wake.notify_one();
                Ok(StatementOutcome::RowsAffected(version.members as u64))
            }
            CatalogStatement::AlterSchedule { name, schedule, .. } => {
                let _catalog = self.catalog_lock.lock().await;
                let mut definition = self.segment_definition(&name).await?;
                definition.schedule = schedule;
                self.write_segment_definition(&definition).await?;
                self.scheduler_wake.notify_one();
                Ok(StatementOutcome::RowsAffected(1))
            }
            CatalogStatement::Drop {
                name, if_exists, ..
            } => {
                let _catalog = self.catalog_lock.lock().await;
                if !self
                    .segment_definitions()
                    .await?
                    .iter()
                    .any(|d| d.name == name)
                {
                    ObjectKind::Segment.drop_missing(&name, if_exists)?;
                    return Ok(StatementOutcome::RowsAffected(0));
                }
                // Versions first: a crash in between leaves a defined segment without history,
                // never history nobody can see. Run records stay as an audit trail.
                self.store
                    .delete_where(SystemTable::SegmentVersions, "segment", &name)
                    .await?;
                self.store
                    .delete_where(SystemTable::SegmentDefinitions, "name", &name)
                    .await?;
                self.scheduler_wake.notify_one();
                Ok(StatementOutcome::RowsAffected(1))
            }
            CatalogStatement::Show { .. } => {
                Ok(StatementOutcome::Query(self.show_segments().await?))
            }
            CatalogStatement::Refresh { name, .. } => {
                let definitions = match name {
                    Some(name) => vec![self.segment_definition(&name).await?],
                    None => self.segment_definitions().await?,
                };
                let mut members = 0;
                for definition in &definitions {
                    members += self
                        .refresh_segment(definition, Trigger::Manual, None)
                        .await?
                        .members;
                }
                Ok(StatementOutcome::RowsAffected(members as u64))
            }
        }
    }

    async fn validate_segment_query(&self, name: &str, query: &str) -> Result<()> {
        let df = self.plan_statement_query(query).await.map_err(|e| {
            EngineError::InvalidStatement(format!(
                "the query of segment '{name}' does not plan: {e}"
            ))
        })?;
        if df.schema().field_with_unqualified_name(USER_ID).is_err() {
            let columns: Vec<&str> = df
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            return Err(EngineError::InvalidStatement(format!(
                "the query of segment '{name}' must return a user_id column; it returns {}",
                columns.join(", ")
            )));
        }
        Ok(())
    }

    async fn write_segment_definition(&self, definition: &SegmentDefinition) -> Result<()> {
        let row = RecordBatch::try_new(
            definitions_schema(),
            vec![
                Arc::new(StringArray::from(vec![definition.name.as_str()])),
                Arc::new(StringArray::from(vec![definition.query.as_str()])),
                Arc::new(StringArray::from(vec![definition.schedule.as_deref()])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![definition.created_at]).with_timezone(UTC),
                ),
                Arc::new(StringArray::from(vec![
                    definition.split.as_ref().map(|s| s.groups.as_str()),
                ])),
                Arc::new(StringArray::from(vec![
                    definition.split.as_ref().map(|s| s.seed.as_str()),
                ])),
            ],
        )?;
        crate::catalog_objects::write_definition(
            &self.store,
            SystemTable::SegmentDefinitions,
            definitions_schema(),
            &definition.name,
            row,
        )
        .await
    }

    /// Every segment definition, in name order.
    pub async fn segment_definitions(&self) -> Result<Vec<SegmentDefinition>> {
        let Some(table) = self.store.latest(SystemTable::SegmentDefinitions).await? else {
            return Ok(Vec::new());
        };
        let batches = crate::store::scan_table(&table)
            .await?
            .sort(vec![col("name").sort(true, false)])?
            .collect()
            .await?;
        let mut definitions = Vec::new();
        for batch in &batches {
            let (names, queries, schedules) = (
                text_column(batch, "name")?,
                text_column(batch, "query")?,
                text_column(batch, "schedule")?,
            );
            let created = micros_column(batch, "created_at")?;
            // Definitions written before splits existed have neither column.
            let optional = |name: &str| text_column(batch, name).ok();
            let (splits, seeds) = (optional("split"), optional("seed"));
            for row in 0..batch.num_rows() {
                let text = |column: &Option<StringArray>| {
                    column
                        .as_ref()
                        .filter(|c| c.is_valid(row))
                        .map(|c| c.value(row).to_string())
                };
                let name = names.value(row).to_string();
                let split = text(&splits).map(|groups| Split {
                    groups,
                    seed: text(&seeds).unwrap_or_else(|| name.clone()),
                });
                definitions.push(SegmentDefinition {
                    name,
                    query: queries.value(row).to_string(),
                    schedule: schedules
                        .is_valid(row)
                        .then(|| schedules.value(row).to_string()),
                    created_at: created.value(row),
                    split,
                });
            }
        }
        Ok(definitions)
    }

    async fn segment_definition(&self, name: &str) -> Result<SegmentDefinition> {
        self.segment_definitions()
            .await?
            .into_iter()
            .find(|d| d.name == name)
            .ok_or_else(|| unknown_segment(name))
    }

    /// Runs a segment now: evaluates its query and commits the next version. The run is
    /// recorded whether it succeeds or fails.
    pub async fn refresh_segment(
        &self,
        definition: &SegmentDefinition,
        trigger: Trigger,
        scheduled_at: Option<i64>,
    ) -> Result<SegmentVersion> {
        // One run of a segment at a time in this process; other processes are kept apart by
        // the conditional commit of the version number.
        let lock = {
            let mut running = self.segment_locks.lock().await;
            Arc::clone(running.entry(definition.name.clone()).or_default())
        };
        let _running = lock.lock().await;
        let started_at = now_micros();
        let run_id = format!("{started_at:x}-{:08x}", rand::random::<u32>());
        let mut row = RunRow {
            segment: definition.name.clone(),
            run_id: run_id.clone(),
            trigger: trigger.name(),
            scheduled_at,
            started_at,
            status: "running",
            ..Default::default()
        };
        self.append_run(&row).await?;
        let outcome = self.materialise(definition, &run_id).await;
        row.finished_at = Some(now_micros());
        match &outcome {
            Ok(Materialised::Committed(version)) => {
                row.status = "succeeded";
                row.version = Some(version.version);
                row.members = Some(version.members);
                row.entered = Some(version.entered);
                row.exited = Some(version.exited);
                tracing::info!(segment = %definition.name, version = version.version, members = version.members,
                    entered = version.entered, exited = version.exited, trigger = trigger.name(), "segment refreshed");
            }
            Ok(Materialised::Unchanged(version)) => {
                row.status = "unchanged";
                row.version = Some(version.version);
                row.members = Some(version.members);
                row.entered = Some(0);
                row.exited = Some(0);
                tracing::debug!(segment = %definition.name, version = version.version, trigger = trigger.name(),
                    "segment unchanged; no version committed");
            }
            Err(e) => {
                row.status = "failed";
                row.error = Some(e.to_string());
                tracing::warn!(segment = %definition.name, error = %e, "segment run failed");
            }
        }
        // A run must not stay `running` because this one write failed: retried, and if storage
        // is still failing, recorded with the next run's start.
        let backoff = backon::ExponentialBuilder::default()
            .with_min_delay(std::time::Duration::from_millis(100))
            .with_max_times(4);
        let recorded = (|| async { self.append_run(&row).await })
            .retry(backoff)
            .await;
        if let Err(e) = recorded {
            tracing::warn!(segment = %definition.name, error = %e,
                "could not record the end of a run; it is recorded with the next one");
            let mut unrecorded = self.unrecorded_runs.lock().expect("lock poisoned");
            if unrecorded.len() < MAX_UNRECORDED_RUNS {
                unrecorded.push(row);
            }
        }
        match outcome? {
            Materialised::Committed(version) => {
                self.publish_segment_version(version.clone());
                Ok(version)
            }
            Materialised::Unchanged(version) => Ok(version),
        }
    }

    /// Appends `row`, with any run ends an earlier append could not record.
    async fn append_run(&self, row: &RunRow) -> Result<()> {
        let table = self
            .store
            .ensure(SystemTable::SegmentRuns, runs_schema())
            .await?;
        let pending: Vec<RunRow> = self.unrecorded_runs.lock().expect("lock poisoned").clone();
        let mut batches = vec![row.batch()?];
        for earlier in &pending {
            batches.push(earlier.batch()?);
        }
        table
            .write(batches)
            .with_save_mode(SaveMode::Append)
            .await?;
        if !pending.is_empty() {
            let mut unrecorded = self.unrecorded_runs.lock().expect("lock poisoned");
            unrecorded.retain(|r| !pending.iter().any(|p| p.run_id == r.run_id));
        }
        Ok(())
    }

    /// Marks runs that were `running` when the process stopped as failed (called at start-up).
    pub async fn fail_interrupted_runs(&self) -> Result<usize> {
        let Some(table) = self.store.latest(SystemTable::SegmentRuns).await? else {
            return Ok(0);
        };
        let batches = crate::store::scan_table(&table).await?.collect().await?;
        let mut open: HashMap<String, RunRow> = HashMap::new();
        let mut finished = std::collections::HashSet::new();
        for batch in &batches {
            let (segments, runs, triggers, statuses) = (
                text_column(batch, "segment")?,
                text_column(batch, "run_id")?,
                text_column(batch, "trigger")?,
                text_column(batch, "status")?,
            );
            let started = micros_column(batch, "started_at")?;
            let scheduled = micros_column(batch, "scheduled_at")?;
            for row in 0..batch.num_rows() {
                let run_id = runs.value(row).to_string();
                if statuses.value(row) == "running" {
                    let trigger = match triggers.value(row) {
                        "create" => Trigger::Create,
                        "schedule" => Trigger::Schedule,
                        "catch_up" => Trigger::CatchUp,
                        _ => Trigger::Manual,
                    };
                    open.insert(
                        run_id,
                        RunRow {
                            segment: segments.value(row).to_string(),
                            run_id: runs.value(row).to_string(),
                            trigger: trigger.name(),
                            scheduled_at: scheduled.is_valid(row).then(|| scheduled.value(row)),
                            started_at: started.value(row),
                            ..Default::default()
                        },
                    );
                } else {
                    finished.insert(run_id);
                }
            }
        }
        let mut failed = 0;
        for (run_id, mut row) in open {
            if finished.contains(&run_id) {
                continue;
            }
            row.finished_at = Some(now_micros());
            row.status = "failed";
            row.error = Some("interrupted: the server stopped during the run".into());
            self.append_run(&row).await?;
            failed += 1;
        }
        if failed > 0 {
            tracing::warn!(runs = failed, "marked interrupted segment runs as failed");
        }
        Ok(failed)
    }

    /// The newest committed version of a segment, with its members.
    async fn latest_segment_version(
        &self,
        segment: &str,
    ) -> Result<Option<(SegmentVersion, RoaringTreemap)>> {
        let Some(table) = self.store.latest(SystemTable::SegmentVersions).await? else {
            return Ok(None);
        };
        let batches = crate::store::scan_table(&table)
            .await?
            .filter(col("segment").eq(lit(segment)))?
            .sort(vec![col("version").sort(false, false)])?
            .limit(0, Some(1))?
            .collect()
            .await?;
        let Some(batch) = batches.into_iter().find(|b| b.num_rows() > 0) else {
            return Ok(None);
        };
        let versions = read_versions(&batch)?;
        let bitmap = cast(
            crate::store::stored_column(&batch, "members_bitmap")?,
            &DataType::Binary,
        )?;
        let members = decode("segment", bitmap.as_binary::<i32>().value(0))?;
        Ok(versions.into_iter().next().map(|v| (v, members)))
    }

    async fn materialise(
        &self,
        definition: &SegmentDefinition,
        run_id: &str,
    ) -> Result<Materialised> {
        let df = self.plan_statement_query(&definition.query).await?;
        let df = df.select(vec![col(USER_ID)]).map_err(|_| {
            EngineError::InvalidStatement(format!(
                "the query of segment '{}' no longer returns user_id",
                definition.name
            ))
        })?;
        let mut stream = df.execute_stream().await?;
        let mut members = RoaringTreemap::new();
        let mut unknown = 0usize;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            for key in self.user_keys.lookup(&self.store, batch.column(0)).await? {
                match key {
                    Some(key) => {
                        members.insert(key as u64);
                    }
                    None => unknown += 1,
                }
            }
        }
        if unknown > 0 {
            tracing::warn!(segment = %definition.name, rows = unknown,
                "segment query returned user ids the store has never seen; they were left out");
        }
        let previous = self.latest_segment_version(&definition.name).await?;
        let (number, before) = match previous {
            // A version with nobody entering or leaving would only make consumers page through
            // empty diffs (a schedule every few seconds would pile them up): the run is recorded,
            // the current version stays.
            Some((version, bitmap)) if bitmap == members => {
                return Ok(Materialised::Unchanged(version));
            }
            Some((version, bitmap)) => (version.version + 1, bitmap),
            None => (1, RoaringTreemap::new()),
        };
        let entered = &members - &before;
        let exited = &before - &members;
        let version = SegmentVersion {
            segment: definition.name.clone(),
            version: number,
            run_id: run_id.to_string(),
            committed_at: now_micros(),
            members: members.len() as i64,
            entered: entered.len() as i64,
            exited: exited.len() as i64,
        };
        let row = RecordBatch::try_new(
            versions_schema(),
            vec![
                Arc::new(StringArray::from(vec![version.segment.as_str()])),
                Arc::new(Int64Array::from(vec![version.version])),
                Arc::new(StringArray::from(vec![run_id])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![version.committed_at]).with_timezone(UTC),
                ),
                Arc::new(Int64Array::from(vec![version.members])),
                Arc::new(Int64Array::from(vec![version.entered])),
                Arc::new(Int64Array::from(vec![version.exited])),
                Arc::new(BinaryArray::from_iter_values([encode(&members)])),
                Arc::new(BinaryArray::from_iter_values([encode(&entered)])),
                Arc::new(BinaryArray::from_iter_values([encode(&exited)])),
            ],
        )?;
        // Conditional on nobody else having committed this version number meanwhile.
        self.store
            .replace_where(
                SystemTable::SegmentVersions,
                versions_schema(),
                col("segment")
                    .eq(lit(version.segment.as_str()))
                    .and(col("version").gt_eq(lit(number))),
                row,
            )
            .await?;
        Ok(Materialised::Committed(version))
    }

    /// `SHOW SEGMENTS`: name, schedule, version, members, refreshed_at, next_run, query.
    async fn show_segments(&self) -> Result<DataFrame> {
        let definitions = self.segment_definitions().await?;
        let mut latest: HashMap<String, SegmentVersion> = HashMap::new();
        if let Some(table) = self.store.latest(SystemTable::SegmentVersions).await? {
            for version in all_versions(&table).await? {
                let newer = latest
                    .get(&version.segment)
                    .is_none_or(|v| v.version < version.version);
                if newer {
                    latest.insert(version.segment.clone(), version);
                }
            }
        }
        let now = chrono::Utc::now();
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("schedule", DataType::Utf8, true),
            Field::new("version", DataType::Int64, true),
            Field::new("members", DataType::Int64, true),
            Field::new("refreshed_at", timestamp_type(), true),
            Field::new("next_run", timestamp_type(), true),
            Field::new("query", DataType::Utf8, false),
        ]));
        let version_of = |d: &SegmentDefinition| latest.get(&d.name);
        let next_run = |d: &SegmentDefinition| {
            let cron = schedule::parse(d.schedule.as_deref()?).ok()?;
            Some(schedule::next_after(&cron, now)?.timestamp_micros())
        };
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(
                    definitions.iter().map(|d| d.name.as_str()),
                )),
                Arc::new(StringArray::from_iter(
                    definitions.iter().map(|d| d.schedule.as_deref()),
                )),
                Arc::new(Int64Array::from_iter(
                    definitions.iter().map(|d| version_of(d).map(|v| v.version)),
                )),
                Arc::new(Int64Array::from_iter(
                    definitions.iter().map(|d| version_of(d).map(|v| v.members)),
                )),
                Arc::new(
                    definitions
                        .iter()
                        .map(|d| version_of(d).map(|v| v.committed_at))
                        .collect::<TimestampMicrosecondArray>()
                        .with_timezone(UTC),
                ),
                Arc::new(
                    definitions
                        .iter()
                        .map(next_run)
                        .collect::<TimestampMicrosecondArray>()
                        .with_timezone(UTC),
                ),
                Arc::new(StringArray::from_iter_values(
                    definitions.iter().map(|d| d.query.as_str()),
                )),
            ],
        )?;
        Ok(SessionContext::new().read_batch(batch)?)
    }
}

impl Engine {
    /// Reads every version of the named segments (for `segment_members` / `segment_changes`).
    pub(crate) async fn load_segments(
        &self,
        names: &std::collections::BTreeSet<String>,
    ) -> Result<functions::LoadedSegments> {
        let mut loaded = functions::LoadedSegments::default();
        if names.is_empty() {
            return Ok(loaded);
        }
        let definitions = self.segment_definitions().await?;
        for name in names {
            let Some(definition) = definitions.iter().find(|d| &d.name == name) else {
                return Err(unknown_segment(name));
            };
            loaded.versions.insert(name.clone(), Arc::default());
            if let Some(split) = &definition.split {
                loaded.splits.insert(name.clone(), split.clone());
            }
        }
        let Some(table) = self.store.latest(SystemTable::SegmentVersions).await? else {
            return Ok(loaded);
        };
        let mut cache = self.segment_cache.loaded.lock().await;
        let version = table.version();
        if cache.as_ref().is_none_or(|(cached, _)| *cached != version) {
            *cache = Some((version, HashMap::new()));
        }
        let (_, segments) = cache.as_mut().expect("set above");
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| !segments.contains_key(*n))
            .collect();
        if !missing.is_empty() {
            let mut read = read_segment_versions(&table, &missing).await?;
            for name in missing {
                let versions = read.remove(name).unwrap_or_default();
                segments.insert(name.clone(), Arc::new(versions));
            }
        }
        for name in names {
            loaded
                .versions
                .insert(name.clone(), Arc::clone(&segments[name]));
        }
        Ok(loaded)
    }
}

/// Every committed version of the named segments, ascending.
async fn read_segment_versions(
    table: &deltalake::DeltaTable,
    names: &[&String],
) -> Result<HashMap<String, Vec<functions::LoadedVersion>>> {
    let wanted: Vec<_> = names.iter().map(|n| lit(n.as_str())).collect();
    let batches = crate::store::scan_table(table)
        .await?
        .filter(col("segment").in_list(wanted, false))?
        .sort(vec![col("version").sort(true, false)])?
        .collect()
        .await?;
    let mut loaded: HashMap<String, Vec<functions::LoadedVersion>> = HashMap::new();
    for batch in &batches {
        let versions = read_versions(batch)?;
        let bytes = |name: &str| -> Result<BinaryArray> {
            Ok(
                cast(crate::store::stored_column(batch, name)?, &DataType::Binary)?
                    .as_binary::<i32>()
                    .clone(),
            )
        };
        let (members, entered, exited) = (
            bytes("members_bitmap")?,
            bytes("entered_bitmap")?,
            bytes("exited_bitmap")?,
        );
        for (row, version) in versions.into_iter().enumerate() {
            loaded
                .entry(version.segment)
                .or_default()
                .push(functions::LoadedVersion {
                    version: version.version,
                    committed_at: version.committed_at,
                    members: members.value(row).to_vec(),
                    entered: entered.value(row).to_vec(),
                    exited: exited.value(row).to_vec(),
                });
        }
    }
    Ok(loaded)
}

/// Segment versions read per Delta version of `segment_versions`. Committed versions never
/// change, so an entry is exact; a run commits a new Delta version, which is read afresh. Only
/// the newest Delta version is kept: segment functions never time-travel.
#[derive(Default)]
pub(crate) struct SegmentCache {
    loaded: SegmentsByTableVersion,
}

type SegmentsByTableVersion = tokio::sync::Mutex<
    Option<(
        Option<deltalake::kernel::Version>,
        HashMap<String, Arc<Vec<functions::LoadedVersion>>>,
    )>,
>;

/// Scheduled tags share the scheduler with segments under this prefix (`:` is never part of a
/// segment name).
const TAG_JOB_PREFIX: &str = "tag:";
/// Scheduled traits, likewise.
const TRAIT_JOB_PREFIX: &str = "trait:";

#[async_trait::async_trait]
impl scheduler::Jobs for Engine {
    async fn jobs(&self) -> Result<Vec<scheduler::ScheduledJob>> {
        let time =
            |micros: i64| chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default();
        let mut jobs: Vec<scheduler::ScheduledJob> = self
            .segment_definitions()
            .await?
            .into_iter()
            .map(|d| scheduler::ScheduledJob {
                created_at: time(d.created_at),
                name: d.name,
                schedule: d.schedule,
            })
            .collect();
        for tag in self.tag_definitions().await?.iter() {
            if tag.schedule.is_some() {
                jobs.push(scheduler::ScheduledJob {
                    name: format!("{TAG_JOB_PREFIX}{}", tag.name),
                    schedule: tag.schedule.clone(),
                    created_at: time(tag.created_at),
                });
            }
        }
        for definition in self.trait_definitions().await?.iter() {
            if definition.schedule.is_some() {
                jobs.push(scheduler::ScheduledJob {
                    name: format!("{TRAIT_JOB_PREFIX}{}", definition.name),
                    schedule: definition.schedule.clone(),
                    created_at: time(definition.created_at),
                });
            }
        }
        Ok(jobs)
    }

    async fn last_scheduled(
        &self,
        jobs: &[String],
    ) -> Result<HashMap<String, chrono::DateTime<chrono::Utc>>> {
        let time =
            |micros: i64| chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default();
        let mut last: HashMap<String, i64> = HashMap::new();
        let (catalog_jobs, segments): (Vec<&String>, Vec<&String>) = jobs
            .iter()
            .partition(|j| j.starts_with(TAG_JOB_PREFIX) || j.starts_with(TRAIT_JOB_PREFIX));
        if !segments.is_empty()
            && let Some(table) = self.store.latest(SystemTable::SegmentRuns).await?
        {
            let names = segments.iter().map(|s| lit(s.as_str())).collect();
            let batches = crate::store::scan_table(&table)
                .await?
                .filter(
                    col("segment")
                        .in_list(names, false)
                        .and(col("trigger").in_list(
                            vec![lit(Trigger::Schedule.name()), lit(Trigger::CatchUp.name())],
                            false,
                        )),
                )?
                .select(vec![col("segment"), col("scheduled_at")])?
                .collect()
                .await?;
            for batch in &batches {
                let segments = text_column(batch, "segment")?;
                let scheduled = micros_column(batch, "scheduled_at")?;
                for row in 0..batch.num_rows() {
                    if scheduled.is_valid(row) {
                        let newest = last
                            .entry(segments.value(row).to_string())
                            .or_insert(i64::MIN);
                        *newest = (*newest).max(scheduled.value(row));
                    }
                }
            }
        }
        // Tags and traits keep no run history: their last refresh stands for the last
        // scheduled run.
        if catalog_jobs.iter().any(|j| j.starts_with(TAG_JOB_PREFIX)) {
            for (tag, refreshed) in self.tag_refresh_times().await? {
                let job = format!("{TAG_JOB_PREFIX}{tag}");
                if catalog_jobs.contains(&&job) {
                    last.insert(job, refreshed);
                }
            }
        }
        if catalog_jobs.iter().any(|j| j.starts_with(TRAIT_JOB_PREFIX)) {
            for (name, (_, refreshed)) in self.trait_sizes().await? {
                let job = format!("{TRAIT_JOB_PREFIX}{name}");
                if let (Some(refreshed), true) = (refreshed, catalog_jobs.contains(&&job)) {
                    last.insert(job, refreshed);
                }
            }
        }
        Ok(last.into_iter().map(|(job, m)| (job, time(m))).collect())
    }

    async fn run(
        &self,
        segment: &str,
        trigger: Trigger,
        scheduled_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        if let Some(tag) = segment.strip_prefix(TAG_JOB_PREFIX) {
            return self.refresh_tag(tag).await.map(|_| ());
        }
        if let Some(name) = segment.strip_prefix(TRAIT_JOB_PREFIX) {
            return self.refresh_trait(name).await.map(|_| ());
        }
        let definition = self.segment_definition(segment).await?;
        self.refresh_segment(&definition, trigger, Some(scheduled_at.timestamp_micros()))
            .await
            .map(|_| ())
    }
}

/// Every committed version of every segment, without the bitmaps (which are not read).
async fn all_versions(table: &deltalake::DeltaTable) -> Result<Vec<SegmentVersion>> {
    let batches = crate::store::scan_table(table)
        .await?
        .select(
            [
                "segment",
                "version",
                "run_id",
                "committed_at",
                "members",
                "entered",
                "exited",
            ]
            .map(col)
            .to_vec(),
        )?
        .collect()
        .await?;
    let mut versions = Vec::new();
    for batch in &batches {
        versions.extend(read_versions(batch)?);
    }
    Ok(versions)
}

fn read_versions(batch: &RecordBatch) -> Result<Vec<SegmentVersion>> {
    let (segments, runs) = (
        text_column(batch, "segment")?,
        text_column(batch, "run_id")?,
    );
    let committed = micros_column(batch, "committed_at")?;
    let int = |name: &str| -> Result<Int64Array> {
        let column = batch
            .column_by_name(name)
            .ok_or_else(|| EngineError::InvalidStatement(format!("missing column {name}")))?;
        Ok(cast(column, &DataType::Int64)?
            .as_primitive::<Int64Type>()
            .clone())
    };
    let (versions, members, entered, exited) = (
        int("version")?,
        int("members")?,
        int("entered")?,
        int("exited")?,
    );
    Ok((0..batch.num_rows())
        .map(|row| SegmentVersion {
            segment: segments.value(row).to_string(),
            version: versions.value(row),
            run_id: runs.value(row).to_string(),
            committed_at: committed.value(row),
            members: members.value(row),
            entered: entered.value(row),
            exited: exited.value(row),
        })
        .collect())
}
