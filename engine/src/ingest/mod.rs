//! Ingest: validate every input completely, then write all of it in one Delta commit.
//!
//! Events are appended (partitioned by `event_date`, rows sorted by `user_id, ts` within each
//! commit so per-user aggregation reads them in order). Profiles are upserted by `user_id` with
//! a Delta MERGE: columns present in the input overwrite, columns absent are left as they were.

mod normalize;
mod read;

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, UInt32Array};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;

pub use normalize::storage_type;
pub use read::{FileFormat, InputFile, STDIN_PATH, read_file};

use crate::Engine;
use crate::error::{EngineError, Result};
use crate::store::IdentifiedCommit;
use crate::tables::{TS, TableKind, USER_ID, USER_KEY};

/// What an ingest wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestReport {
    pub table: TableKind,
    /// Rows accepted (for profiles: after collapsing repeated user ids to their last row).
    pub rows: u64,
    /// The Delta table version the commit created; None when there were no rows to write
    /// (an empty input commits nothing).
    pub version: Option<u64>,
}

/// Progress of a multi-file ingest, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub enum IngestProgress {
    FileRead {
        index: usize,
        total: usize,
        rows: usize,
    },
    Writing {
        rows: usize,
    },
}

impl Engine {
    /// Reads, validates and writes the files as one commit: all of them, or (on any error) none.
    /// A path of `-` is standard input; `format` overrides what the file names imply.
    pub async fn ingest_files(
        &self,
        kind: TableKind,
        paths: &[PathBuf],
        format: Option<FileFormat>,
        progress: &(dyn Fn(IngestProgress) + Sync),
    ) -> Result<IngestReport> {
        if paths.is_empty() {
            return Err(EngineError::invalid_input("ingest", "no input files given"));
        }
        let _guard = self.write_locks[&kind].lock().await;
        let existing = self.current_schema(kind).await?;
        let mut normalizer = normalize::Normalizer::new(kind, existing);
        for (index, path) in paths.iter().enumerate() {
            let path = path.clone();
            let input = tokio::task::spawn_blocking(move || read_file(&path, format))
                .await
                .map_err(|e| EngineError::Io(std::io::Error::other(e)))??;
            normalizer.add(&input.name, &input.schema, &input.batches)?;
            let rows = input.batches.iter().map(RecordBatch::num_rows).sum();
            progress(IngestProgress::FileRead {
                index,
                total: paths.len(),
                rows,
            });
        }
        let normalized = normalizer.finish()?;
        progress(IngestProgress::Writing {
            rows: normalized.batches.iter().map(RecordBatch::num_rows).sum(),
        });
        self.commit(kind, normalized).await
    }

    /// Validates and writes in-memory batches (Flight SQL bulk ingest, INSERT) as one commit.
    pub async fn ingest_batches(
        &self,
        kind: TableKind,
        source: &str,
        schema: &Schema,
        batches: &[RecordBatch],
    ) -> Result<IngestReport> {
        let _guard = self.write_locks[&kind].lock().await;
        let existing = self.current_schema(kind).await?;
        let mut normalizer = normalize::Normalizer::new(kind, existing);
        normalizer.add(source, schema, batches)?;
        self.commit(kind, normalizer.finish()?).await
    }

    async fn current_schema(&self, kind: TableKind) -> Result<Option<SchemaRef>> {
        Ok(self
            .store
            .latest(kind)
            .await?
            .map(|t| t.snapshot().map(|s| s.snapshot().arrow_schema()))
            .transpose()?)
    }

    async fn commit(
        &self,
        kind: TableKind,
        normalized: normalize::Normalized,
    ) -> Result<IngestReport> {
        let batch = concat_batches(&normalized.schema, &normalized.batches)?;
        drop(normalized.batches);
        if batch.num_rows() == 0 {
            return Ok(IngestReport {
                table: kind,
                rows: 0,
                version: None,
            });
        }
        let existing = self.store.latest(kind).await?;
        let (rows, table) = match kind {
            TableKind::Events => {
                let batch = sort_rows(&batch, &[USER_ID, TS])?;
                let batch = self.with_user_keys(batch).await?;
                let rows = batch.num_rows();
                let table = existing.unwrap_or(self.store.fresh_handle(kind).await?);
                (rows, append(table, kind, batch).await?)
            }
            TableKind::Profiles => {
                let batch = last_row_per_user(&batch)?;
                let batch = self.with_user_keys(batch).await?;
                let rows = batch.num_rows();
                let table = match existing {
                    Some(table) => upsert(table, batch, &normalized.provided).await?,
                    None => append(self.store.fresh_handle(kind).await?, kind, batch).await?,
                };
                (rows, table)
            }
        };
        let version = table.version().unwrap_or_default();
        tracing::info!(table = %kind, rows, version, "ingest committed");
        Ok(IngestReport {
            table: kind,
            rows: rows as u64,
            version: Some(version),
        })
    }
}

impl Engine {
    /// Fills the `user_key` column, assigning keys to users never seen before. The keys are
    /// committed first: a crash before the rows commit leaves unused keys, never a row without one.
    async fn with_user_keys(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let user_ids = batch.column_by_name(USER_ID).expect("validated column");
        let keys = self.user_keys.assign(&self.store, user_ids).await?;
        let position = batch.schema().index_of(USER_KEY)?;
        let mut columns = batch.columns().to_vec();
        columns[position] = Arc::new(keys);
        Ok(RecordBatch::try_new(batch.schema(), columns)?)
    }
}

async fn append(table: DeltaTable, kind: TableKind, batch: RecordBatch) -> Result<DeltaTable> {
    let commit = IdentifiedCommit::new();
    let result = table
        .clone()
        .write(vec![batch])
        .with_save_mode(SaveMode::Append)
        .with_schema_mode(SchemaMode::Merge)
        .with_partition_columns(kind.partition_columns())
        .with_table_name(kind.name())
        .with_commit_properties(commit.properties())
        .await;
    commit.settle(&table, result).await
}

/// Upserts by `user_id`, touching only the columns the input provided: a file with just
/// `user_id, plan` changes plans and leaves every other attribute as it was.
async fn upsert(table: DeltaTable, batch: RecordBatch, columns: &[String]) -> Result<DeltaTable> {
    // Only the provided columns go into the MERGE source: with schema merging, a source column
    // (even all-null, back-filled) would overwrite the target's value.
    let provided = columns
        .iter()
        .map(|c| batch.schema().index_of(c))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let source = SessionContext::new().read_batch(batch.project(&provided)?)?;
    let qualified = |alias: &str, name: &str| {
        datafusion::prelude::Expr::Column(datafusion::common::Column::new(Some(alias), name))
    };
    let commit = IdentifiedCommit::new();
    let merged = table
        .clone()
        .merge(
            source,
            qualified("target", USER_ID).eq(qualified("source", USER_ID)),
        )
        .with_source_alias("source")
        .with_target_alias("target")
        .with_merge_schema(true)
        .when_matched_update(|update| {
            columns
                .iter()
                .filter(|c| c.as_str() != USER_ID)
                .fold(update, |u, c| u.update(c.as_str(), qualified("source", c)))
        })?
        .when_not_matched_insert(|insert| {
            columns
                .iter()
                .fold(insert, |i, c| i.set(c.as_str(), qualified("source", c)))
        })?
        .with_commit_properties(commit.properties())
        .await;
    let merged = merged.map(|(table, metrics)| {
        tracing::debug!(
            inserted = metrics.num_target_rows_inserted,
            updated = metrics.num_target_rows_updated,
            "profiles merged"
        );
        table
    });
    commit.settle(&table, merged).await
}

fn sort_rows(batch: &RecordBatch, keys: &[&str]) -> Result<RecordBatch> {
    let columns = keys
        .iter()
        .map(|k| SortColumn {
            values: Arc::clone(batch.column_by_name(k).expect("validated column")),
            options: None,
        })
        .collect::<Vec<_>>();
    let indices = lexsort_to_indices(&columns, None)?;
    Ok(take_record_batch(batch, &indices)?)
}

/// A MERGE source may hold each key once; within one ingest the last row of a user wins.
fn last_row_per_user(batch: &RecordBatch) -> Result<RecordBatch> {
    let user_ids: &ArrayRef = batch.column_by_name(USER_ID).expect("validated column");
    let converter = RowConverter::new(vec![SortField::new(user_ids.data_type().clone())])?;
    let rows = converter.convert_columns(&[Arc::clone(user_ids)])?;
    let mut seen = std::collections::HashSet::with_capacity(rows.num_rows());
    let mut keep: Vec<u32> = Vec::with_capacity(rows.num_rows());
    for i in (0..rows.num_rows()).rev() {
        if seen.insert(rows.row(i)) {
            keep.push(i as u32);
        }
    }
    if keep.len() == batch.num_rows() {
        return Ok(batch.clone());
    }
    keep.reverse();
    Ok(take_record_batch(batch, &UInt32Array::from(keep))?)
}
