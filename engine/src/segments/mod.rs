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
//! - `BY PERSON`: the query's identifiers are taken as their persons at the identity version
//!   current when the run starts, and the members are every identifier of those persons. A
//!   version then also stores each member's `person_key` (for the identifiers that are not
//!   their person's key) and counts `persons`; its diffs stay per identifier, so a consumer
//!   that applies them holds exactly the identifiers of the current version, and a new
//!   identifier joining a member person enters.
//! - SQL: `segment_members('name' [, version])`, `segment_changes('name', since_version)`, and the
//!   views `segments` and `segment_runs`.

pub mod functions;
mod runs;
pub mod schedule;
pub mod scheduler;
mod versions;
mod watch;

pub(crate) use runs::RunRow;
pub(crate) use versions::SegmentCache;
use versions::all_versions;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{SessionContext, col};

use crate::Engine;
use crate::catalog_statement::{CatalogStatement, ObjectKind};
use crate::error::{EngineError, Result};
use crate::outcome::StatementOutcome;
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
    /// Members are persons (`BY PERSON`).
    pub by_person: bool,
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
    pub(crate) fn name(self) -> &'static str {
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
    /// People among the members, for a segment `BY PERSON`.
    pub persons: Option<i64>,
}

pub fn definitions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("query", DataType::Utf8, false),
        Field::new("schedule", DataType::Utf8, true),
        Field::new("created_at", timestamp_type(), false),
        Field::new("split", DataType::Utf8, true),
        Field::new("seed", DataType::Utf8, true),
        // Absent from stores written before BY PERSON: read as false.
        Field::new("by_person", DataType::Boolean, true),
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
        // BY PERSON only (absent from stores written before it): the identity version the
        // members were resolved at, their person count, and `(user_key, person_key)` of the
        // members that are not their person's key, as little-endian i64 pairs.
        Field::new("identity_version", DataType::Int64, true),
        Field::new("persons", DataType::Int64, true),
        Field::new("person_keys", DataType::Binary, true),
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
            misrouted @ CatalogStatement::Identity(_) => Err(misrouted.misrouted()),
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
                    by_person: options.by_person,
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
                Arc::new(BooleanArray::from(vec![definition.by_person])),
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
            let by_person = crate::store::added_flag_column(batch, "by_person")?;
            for (row, by_person) in by_person.into_iter().enumerate() {
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
                    by_person,
                });
            }
        }
        Ok(definitions)
    }

    pub(crate) async fn segment_definition(&self, name: &str) -> Result<SegmentDefinition> {
        self.segment_definitions()
            .await?
            .into_iter()
            .find(|d| d.name == name)
            .ok_or_else(|| unknown_segment(name))
    }

    /// `SHOW SEGMENTS`: name, schedule, version, members, persons, refreshed_at, next_run,
    /// split, seed, query.
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
            Field::new("persons", DataType::Int64, true),
            Field::new("refreshed_at", timestamp_type(), true),
            Field::new("next_run", timestamp_type(), true),
            Field::new("split", DataType::Utf8, true),
            Field::new("seed", DataType::Utf8, true),
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
                Arc::new(Int64Array::from_iter(
                    definitions
                        .iter()
                        .map(|d| version_of(d).and_then(|v| v.persons)),
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
                Arc::new(StringArray::from_iter(
                    definitions
                        .iter()
                        .map(|d| d.split.as_ref().map(|s| s.groups.as_str())),
                )),
                Arc::new(StringArray::from_iter(
                    definitions
                        .iter()
                        .map(|d| d.split.as_ref().map(|s| s.seed.as_str())),
                )),
                Arc::new(StringArray::from_iter_values(
                    definitions.iter().map(|d| d.query.as_str()),
                )),
            ],
        )?;
        Ok(SessionContext::new().read_batch(batch)?)
    }
}
