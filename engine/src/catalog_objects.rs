//! What the catalog objects (tags, traits, segments, holdouts) share: one definitions table
//! each, keyed by name, written one definition per commit and read whole.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::prelude::{col, lit};

use crate::error::Result;
use crate::store::Store;
use crate::tables::SystemTable;

/// A definitions table's rows, parsed, for the table version they were read at: a version
/// never changes, so a cached list is exact until the next commit.
pub(crate) struct DefinitionCache<T>(tokio::sync::Mutex<Option<(u64, Arc<Vec<T>>)>>);

impl<T> Default for DefinitionCache<T> {
    fn default() -> Self {
        Self(tokio::sync::Mutex::new(None))
    }
}

impl<T> DefinitionCache<T> {
    /// The definitions in `table`, in name order; `parse` turns its batches into definitions
    /// when the table changed since the last read.
    pub async fn read(
        &self,
        store: &Store,
        table: SystemTable,
        parse: impl FnOnce(&[RecordBatch]) -> Result<Vec<T>>,
    ) -> Result<Arc<Vec<T>>> {
        let Some(table) = store.latest(table).await? else {
            return Ok(Arc::new(Vec::new()));
        };
        let version = table.version().unwrap_or_default();
        let mut cached = self.0.lock().await;
        if let Some((cached_version, definitions)) = cached.as_ref()
            && *cached_version == version
        {
            return Ok(Arc::clone(definitions));
        }
        let batches = crate::store::scan_table(&table)
            .await?
            .sort(vec![col("name").sort(true, false)])?
            .collect()
            .await?;
        let definitions = Arc::new(parse(&batches)?);
        *cached = Some((version, Arc::clone(&definitions)));
        Ok(definitions)
    }
}

/// Writes one definition (`row`, of `schema`) in place of the one named `name`, in one commit.
pub(crate) async fn write_definition(
    store: &Store,
    table: SystemTable,
    schema: SchemaRef,
    name: &str,
    row: RecordBatch,
) -> Result<()> {
    store
        .replace_where(table, schema, col("name").eq(lit(name)), row)
        .await?;
    Ok(())
}
