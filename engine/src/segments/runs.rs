//! Segment runs: evaluating a segment's query, committing the next version, and recording
//! every run in `_cohort/segment_runs`.

use backon::Retryable;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use cohort_sql_extensions::bitmap::{RoaringTreemap, decode, encode};
use datafusion::prelude::{col, lit};
use deltalake::protocol::SaveMode;
use futures::StreamExt;

use super::versions::{encode_person_keys, read_versions};
use super::{SegmentDefinition, SegmentVersion, Trigger, now_micros, runs_schema, versions_schema};
use crate::Engine;
use crate::error::{EngineError, Result};
use crate::store::{micros_column, text_column};
use crate::tables::{SystemTable, USER_ID, UTC};

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

impl Engine {
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

    /// The newest committed version of a segment, with its members and (BY PERSON) their
    /// stored person keys.
    async fn latest_segment_version(
        &self,
        segment: &str,
    ) -> Result<Option<(SegmentVersion, RoaringTreemap, Option<Vec<u8>>)>> {
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
        let person_keys = match batch.column_by_name("person_keys") {
            Some(column) => {
                let column = cast(column, &DataType::Binary)?;
                let column = column.as_binary::<i32>();
                column.is_valid(0).then(|| column.value(0).to_vec())
            }
            None => None,
        };
        Ok(versions
            .into_iter()
            .next()
            .map(|v| (v, members, person_keys)))
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
        // Resolved before the query runs: the persons are those of one identity version.
        let persons = if definition.by_person {
            Some(self.person_map().await?)
        } else {
            None
        };
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
        // BY PERSON: the members become every identifier of the persons the query named.
        let by_person = persons.map(|map| {
            let people = members
                .iter()
                .map(|key| map.person_of(key as i64) as u64)
                .collect();
            let (identifiers, moved) = map.members(&people);
            members = identifiers;
            (
                map.version(),
                people.len() as i64,
                encode_person_keys(&moved),
            )
        });
        let person_keys = by_person.as_ref().map(|(_, _, keys)| keys.clone());
        let previous = self.latest_segment_version(&definition.name).await?;
        let (number, before) = match previous {
            // A version with nobody entering or leaving would only make consumers page through
            // empty diffs (a schedule every few seconds would pile them up): the run is recorded,
            // the current version stays. For a segment BY PERSON the persons of its members
            // must not have changed either (two members merged).
            Some((version, bitmap, keys)) if bitmap == members && keys == person_keys => {
                return Ok(Materialised::Unchanged(version));
            }
            Some((version, bitmap, _)) => (version.version + 1, bitmap),
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
            persons: by_person.as_ref().map(|(_, persons, _)| *persons),
        };
        let identity_version = by_person
            .as_ref()
            .and_then(|(version, _, _)| *version)
            .map(|v| v as i64);
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
                Arc::new(Int64Array::from(vec![identity_version])),
                Arc::new(Int64Array::from(vec![version.persons])),
                Arc::new(BinaryArray::from_iter([person_keys.as_deref()])),
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
}
