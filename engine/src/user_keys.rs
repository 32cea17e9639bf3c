//! The user-key dictionary: every user id the store has seen, mapped to a dense non-negative
//! integer (`user_key`) that bitmaps hold.
//!
//! Keys are assigned at ingest, before the rows are written, and are never reassigned: the
//! dictionary is a Delta table (`_cohort/user_keys`) that only grows. Ids are keyed by their text,
//! so user `42` ingested as an integer into events and as `'42'` into profiles is one user.
//!
//! Concurrent ingest is safe across processes: a writer that assigns keys from `next` commits with
//! the read predicate `user_key >= next` (a Delta replace-where that removes nothing). If another
//! writer committed keys in that range meanwhile, Delta's conflict check refuses the commit and the
//! writer reloads the dictionary and tries again, so two users can never share a key. Retries
//! wait a jittered, growing delay: without it, writers that collided once start their next
//! attempts together and keep colliding.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, AsArray, Int64Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use backon::{BackoffBuilder, ExponentialBuilder};
use datafusion::prelude::{col, lit};
use deltalake::errors::DeltaTableError;
use deltalake::kernel::transaction::TransactionError;
use deltalake::protocol::SaveMode;
use tokio::sync::Mutex;

use crate::error::{EngineError, Result};
use crate::store::Store;
use crate::tables::{SystemTable, USER_ID, USER_KEY};

/// Retries after a conflict before concurrent writers are reported as an error; with the
/// delays below a writer keeps trying for 13 to 26 s.
const MAX_RETRIES: usize = 32;

fn conflict_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(5))
        .with_max_delay(Duration::from_millis(500))
        .with_max_times(MAX_RETRIES)
        .with_jitter()
        .build()
}

#[derive(Default)]
pub struct UserKeys {
    dictionary: Mutex<Dictionary>,
}

#[derive(Default)]
struct Dictionary {
    /// The table version `keys` reflects; `None` before the first load.
    version: Option<u64>,
    keys: HashMap<String, i64>,
    next: i64,
}

impl UserKeys {
    /// The key of every row of `user_ids` (integers or strings, no nulls), assigning keys to
    /// ids never seen before and committing them before returning.
    pub async fn assign(&self, store: &Store, user_ids: &ArrayRef) -> Result<Int64Array> {
        let ids = id_text(user_ids)?;
        let mut dictionary = self.dictionary.lock().await;
        let mut waits = conflict_backoff();
        loop {
            if dictionary.version.is_none() {
                // Keys are only ever added on top of an existing version: creating a Delta
                // table does not fail on a concurrent creation, so creation carries no keys.
                store.ensure(SystemTable::UserKeys, schema()).await?;
            }
            dictionary.refresh(store).await?;
            let mut missing: Vec<&str> = Vec::new();
            let mut pending: std::collections::HashSet<&str> = Default::default();
            for id in ids.iter().flatten() {
                if !dictionary.keys.contains_key(id) && pending.insert(id) {
                    missing.push(id);
                }
            }
            if missing.is_empty() {
                return Ok(dictionary.keys_of(&ids));
            }
            match dictionary.append(store, &missing).await {
                Ok(()) => return Ok(dictionary.keys_of(&ids)),
                Err(EngineError::Delta(e)) if is_conflict(&e) => {
                    let Some(wait) = waits.next() else {
                        return Err(EngineError::Delta(DeltaTableError::Generic(format!(
                            "could not assign user keys after {} attempts: other writers kept assigning keys at the same time",
                            MAX_RETRIES + 1
                        ))));
                    };
                    tracing::debug!(
                        retry_in = ?wait,
                        "user keys assigned concurrently; reloading the dictionary"
                    );
                    dictionary.version = None;
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The key of every row of `user_ids`, or `None` for ids the store has never seen.
    pub async fn lookup(&self, store: &Store, user_ids: &ArrayRef) -> Result<Vec<Option<i64>>> {
        let ids = id_text(user_ids)?;
        let mut dictionary = self.dictionary.lock().await;
        dictionary.refresh(store).await?;
        Ok(ids
            .iter()
            .map(|id| id.and_then(|id| dictionary.keys.get(id).copied()))
            .collect())
    }
}

impl UserKeys {
    /// How many keys the dictionary holds now; they are `0..count` (keys are dense).
    pub async fn key_count(&self, store: &Store) -> Result<u64> {
        let mut dictionary = self.dictionary.lock().await;
        dictionary.refresh(store).await?;
        Ok(dictionary.next.max(0) as u64)
    }

    /// Every key the dictionary holds now.
    pub async fn all_keys(&self, store: &Store) -> Result<roaring::RoaringTreemap> {
        let mut dictionary = self.dictionary.lock().await;
        dictionary.refresh(store).await?;
        Ok(dictionary.keys.values().map(|&key| key as u64).collect())
    }
}

fn id_text(user_ids: &ArrayRef) -> Result<StringArray> {
    Ok(cast(user_ids, &DataType::Utf8)?.as_string::<i32>().clone())
}

fn schema() -> arrow::datatypes::SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(USER_ID, DataType::Utf8, false),
        Field::new(USER_KEY, DataType::Int64, false),
    ]))
}

fn is_conflict(error: &DeltaTableError) -> bool {
    matches!(
        error,
        DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(_) | TransactionError::VersionAlreadyExists(_)
        } | DeltaTableError::VersionAlreadyExists(_)
    )
}

impl Dictionary {
    fn keys_of(&self, ids: &StringArray) -> Int64Array {
        ids.iter().map(|id| id.map(|id| self.keys[id])).collect()
    }

    /// Brings `keys` up to the table's newest version. Commits of this process keep the
    /// version current, so a reload only happens after another process wrote keys.
    async fn refresh(&mut self, store: &Store) -> Result<()> {
        let Some(table) = store.latest(SystemTable::UserKeys).await? else {
            *self = Dictionary::default();
            return Ok(());
        };
        if self.version == table.version() {
            return Ok(());
        }
        let batches = crate::store::scan_table(&table)
            .await?
            .select(vec![col(USER_ID), col(USER_KEY)])?
            .collect()
            .await?;
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        let mut keys = HashMap::with_capacity(rows);
        let mut next = 0;
        for batch in &batches {
            let ids = id_text(batch.column(0))?;
            let values = cast(batch.column(1), &DataType::Int64)?;
            let values = values.as_primitive::<arrow::datatypes::Int64Type>();
            for (id, key) in ids.iter().zip(values.iter()) {
                if let (Some(id), Some(key)) = (id, key) {
                    keys.insert(id.to_string(), key);
                    next = next.max(key + 1);
                }
            }
        }
        tracing::debug!(
            users = keys.len(),
            version = table.version().unwrap_or_default(),
            "user keys loaded"
        );
        *self = Dictionary {
            version: table.version(),
            keys,
            next,
        };
        Ok(())
    }

    /// Commits keys `next..` for `ids`; on success the dictionary holds them.
    async fn append(&mut self, store: &Store, ids: &[&str]) -> Result<()> {
        let first = self.next;
        let keys = Int64Array::from_iter_values(first..first + ids.len() as i64);
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from_iter_values(ids.iter().copied())),
                Arc::new(keys.clone()),
            ],
        )?;
        let read_version = self.version;
        let table = match store.latest(SystemTable::UserKeys).await? {
            Some(table) if table.version() == read_version => {
                table
                    .write(vec![batch])
                    .with_save_mode(SaveMode::Overwrite)
                    .with_replace_where(col(USER_KEY).gt_eq(lit(first)))
                    .await?
            }
            // Someone wrote since we read (or the table vanished): let the caller reload.
            _ => return Err(EngineError::Delta(DeltaTableError::VersionAlreadyExists(0))),
        };
        for (id, key) in ids.iter().zip(keys.values()) {
            self.keys.insert((*id).to_string(), *key);
        }
        self.next = first + ids.len() as i64;
        // Only when no other commit slipped in between do we know the whole table.
        self.version = table
            .version()
            .filter(|v| Some(*v) == read_version.map(|r| r + 1));
        tracing::debug!(
            new_users = ids.len(),
            first_key = first,
            "user keys assigned"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_stable_dense_and_shared_by_integer_and_text_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).await.unwrap();
        let keys = UserKeys::default();
        let first: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "a", "7"]));
        let assigned = keys.assign(&store, &first).await.unwrap();
        assert_eq!(assigned.values().to_vec(), vec![0, 1, 0, 2]);

        let second: ArrayRef = Arc::new(Int64Array::from(vec![7, 8]));
        let assigned = keys.assign(&store, &second).await.unwrap();
        assert_eq!(assigned.values().to_vec(), vec![2, 3]);

        // A new process sees the same keys.
        let reopened = UserKeys::default();
        let ids: ArrayRef = Arc::new(StringArray::from(vec!["8", "b", "unknown"]));
        let found = reopened.lookup(&store, &ids).await.unwrap();
        assert_eq!(found, vec![Some(3), Some(1), None]);
    }

    #[tokio::test]
    async fn concurrent_writers_never_share_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let location = dir.path().to_str().unwrap().to_string();
        // Separate stores and dictionaries stand for separate processes. Eight writers: with
        // retries that did not wait, this many gave up every time.
        let mut writers = Vec::new();
        for writer in 0..8 {
            let location = location.clone();
            writers.push(tokio::spawn(async move {
                let store = Store::open(&location).await.unwrap();
                let keys = UserKeys::default();
                for round in 0..5 {
                    let ids: Vec<String> = (0..20)
                        .map(|i| format!("w{writer}-r{round}-{i}"))
                        .chain(["shared".to_string()])
                        .collect();
                    let ids: ArrayRef = Arc::new(StringArray::from(ids));
                    keys.assign(&store, &ids).await.unwrap();
                }
            }));
        }
        for writer in writers {
            writer.await.unwrap();
        }
        let store = Store::open(&location).await.unwrap();
        let keys = UserKeys::default();
        let mut dictionary = keys.dictionary.lock().await;
        dictionary.refresh(&store).await.unwrap();
        assert_eq!(dictionary.keys.len(), 8 * 5 * 20 + 1);
        let mut assigned: Vec<i64> = dictionary.keys.values().copied().collect();
        assigned.sort_unstable();
        assigned.dedup();
        assert_eq!(
            assigned.len(),
            dictionary.keys.len(),
            "a key was given twice"
        );
    }
}
