//! Reading committed segment versions: for the segment functions (cached per Delta version)
//! and for the watcher and SHOW SEGMENTS.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, BinaryArray, Int64Array, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use datafusion::prelude::{col, lit};

use super::{SegmentVersion, functions, unknown_segment};
use crate::Engine;
use crate::error::{EngineError, Result};
use crate::store::{micros_column, text_column};
use crate::tables::SystemTable;

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
            if definition.by_person {
                loaded.by_person.insert(name.clone());
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
        // Versions of a segment made before BY PERSON have no person keys.
        let person_keys = match batch.column_by_name("person_keys") {
            Some(column) => Some(cast(column, &DataType::Binary)?.as_binary::<i32>().clone()),
            None => None,
        };
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
                    person_keys: person_keys
                        .as_ref()
                        .filter(|keys| keys.is_valid(row))
                        .map(|keys| keys.value(row).to_vec()),
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

/// Every committed version of every segment, without the bitmaps (which are not read).
pub(super) async fn all_versions(table: &deltalake::DeltaTable) -> Result<Vec<SegmentVersion>> {
    let scan = crate::store::scan_table(table).await?;
    let mut columns = [
        "segment",
        "version",
        "run_id",
        "committed_at",
        "members",
        "entered",
        "exited",
    ]
    .map(col)
    .to_vec();
    // Stores written before BY PERSON have no person counts.
    if scan.schema().field_with_unqualified_name("persons").is_ok() {
        columns.push(col("persons"));
    }
    let batches = scan.select(columns)?.collect().await?;
    let mut versions = Vec::new();
    for batch in &batches {
        versions.extend(read_versions(batch)?);
    }
    Ok(versions)
}

pub(super) fn read_versions(batch: &RecordBatch) -> Result<Vec<SegmentVersion>> {
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
    let persons = int("persons").ok();
    Ok((0..batch.num_rows())
        .map(|row| SegmentVersion {
            segment: segments.value(row).to_string(),
            version: versions.value(row),
            run_id: runs.value(row).to_string(),
            committed_at: committed.value(row),
            members: members.value(row),
            entered: entered.value(row),
            exited: exited.value(row),
            persons: persons
                .as_ref()
                .filter(|p| p.is_valid(row))
                .map(|p| p.value(row)),
        })
        .collect())
}

/// `(user_key, person_key)` pairs as a version stores them: little-endian i64s, in order.
pub(super) fn encode_person_keys(pairs: &[(i64, i64)]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(pairs.len() * 16);
    for (key, person) in pairs {
        bytes.extend_from_slice(&key.to_le_bytes());
        bytes.extend_from_slice(&person.to_le_bytes());
    }
    bytes
}

pub(super) fn decode_person_keys(segment: &str, bytes: &[u8]) -> Result<Vec<(i64, i64)>> {
    if !bytes.len().is_multiple_of(16) {
        return Err(EngineError::Corrupt(format!(
            "segment '{segment}': its person keys are {} bytes, not a whole number of pairs",
            bytes.len()
        )));
    }
    let int = |b: &[u8]| i64::from_le_bytes(b.try_into().expect("8 bytes"));
    Ok(bytes
        .chunks_exact(16)
        .map(|pair| (int(&pair[..8]), int(&pair[8..])))
        .collect())
}
