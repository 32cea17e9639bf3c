//! A store is one URL (a local directory or `s3://bucket/prefix`) holding one Delta Lake table per
//! [`TableKind`]. Delta's log gives atomic commits: data files are written first and become visible
//! only when the commit entry is put with put-if-absent, so a crash leaves the table as it was.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::AsArray;
use backon::{ExponentialBuilder, Retryable};
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::{DeltaTable, DeltaTableBuilder, ObjectStore};
use tokio::sync::Mutex;
use url::Url;

use crate::error::{EngineError, Result};
use crate::tables::{SystemTable, TableKind, TableLocation};

/// Turns what a user typed (`./cohort-data`, `/abs/dir`, `file:///x`, `s3://b/p`) into a directory URL.
pub fn resolve_store_url(location: &str) -> Result<Url> {
    let location = location.trim();
    if location.is_empty() {
        return Err(EngineError::Config("the data location is empty".into()));
    }
    let url = if location.contains("://") {
        Url::parse(location)
            .map_err(|e| EngineError::Config(format!("invalid data URL '{location}': {e}")))?
    } else {
        let path = Path::new(location);
        std::fs::create_dir_all(path).map_err(|e| {
            EngineError::Config(format!("cannot create data directory '{location}': {e}"))
        })?;
        let absolute = std::fs::canonicalize(path)?;
        Url::from_directory_path(&absolute).map_err(|()| {
            EngineError::Config(format!(
                "'{}' is not a usable directory",
                absolute.display()
            ))
        })?
    };
    match url.scheme() {
        "file" => {
            if let Ok(path) = url.to_file_path() {
                std::fs::create_dir_all(&path).map_err(|e| {
                    EngineError::Config(format!("cannot create data directory '{location}': {e}"))
                })?;
            }
        }
        "s3" | "s3a" => {}
        other => {
            return Err(EngineError::Config(format!(
                "unsupported data URL scheme '{other}': use a local directory or s3://bucket/prefix"
            )));
        }
    }
    Ok(with_trailing_slash(url))
}

fn with_trailing_slash(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}

/// Turns the store's object store into the one its tables use.
pub type WrapObjectStore = dyn Fn(Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> + Send + Sync;

/// Wraps the object store every table of a store goes through.
#[derive(Clone)]
pub struct ObjectStoreLayer(pub Arc<WrapObjectStore>);

impl std::fmt::Debug for ObjectStoreLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectStoreLayer")
    }
}

/// Handles to the store's Delta tables, refreshed from the log before every use.
pub struct Store {
    root: Url,
    tables: HashMap<TableLocation, Mutex<DeltaTable>>,
    /// With a layer: the wrapped object store every table handle uses.
    wrapped: Option<Arc<dyn ObjectStore>>,
}

impl Store {
    pub async fn open(location: &str) -> Result<Self> {
        Self::open_with(location, None).await
    }

    pub async fn open_with(location: &str, layer: Option<ObjectStoreLayer>) -> Result<Self> {
        let root = resolve_store_url(location)?;
        let wrapped = match layer {
            Some(layer) => Some((layer.0)(root_object_store(&root)?)),
            None => None,
        };
        let mut tables = HashMap::new();
        let locations = TableKind::ALL
            .into_iter()
            .map(TableLocation::from)
            .chain(SystemTable::ALL.into_iter().map(TableLocation::from));
        for location in locations {
            let table = open_table(&root, location, wrapped.as_ref()).await?;
            tables.insert(location, Mutex::new(table));
        }
        if root.scheme() != "file" {
            // Credentials, bucket and endpoint are only tried on first use: try them now, so a
            // wrong setting fails the command at once and in words, not some later statement.
            let events = tables[&TableLocation::from(TableKind::Events)].lock().await;
            events
                .verify_deltatable_existence()
                .await
                .map_err(|e| unreachable_store(&root, &e))?;
        }
        tracing::debug!(store = %redact(&root), "store opened");
        Ok(Self {
            root,
            tables,
            wrapped,
        })
    }

    pub fn root(&self) -> &Url {
        &self.root
    }

    pub fn table_url(&self, table: impl Into<TableLocation>) -> Url {
        table_url(&self.root, table.into())
    }

    /// The table at its newest committed version, or `None` if nothing was ever committed to it.
    pub async fn latest(&self, table: impl Into<TableLocation>) -> Result<Option<DeltaTable>> {
        let mut table = self.tables[&table.into()].lock().await;
        if table.version().is_some() {
            table.update_incremental(None).await?;
        } else {
            // Probe first: loading a location without a log makes the kernel log an error.
            if !table.verify_deltatable_existence().await? {
                return Ok(None);
            }
            match table.load().await {
                Ok(()) => {}
                Err(deltalake::DeltaTableError::NotATable(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Some(table.clone()))
    }

    /// An uninitialised handle to the table location, for the first write that creates it.
    pub async fn fresh_handle(&self, table: impl Into<TableLocation>) -> Result<DeltaTable> {
        open_table(&self.root, table.into(), self.wrapped.as_ref()).await
    }

    /// The table, created empty with `schema` if nothing was committed to it yet.
    ///
    /// Two processes creating a table at once both succeed (the loser's creation commits on
    /// top of the winner's), which is why creation writes no rows: rows are written afterwards
    /// by commits whose conflicts Delta does detect.
    pub async fn ensure(
        &self,
        table: impl Into<TableLocation> + Copy,
        schema: arrow::datatypes::SchemaRef,
    ) -> Result<DeltaTable> {
        if let Some(existing) = self.latest(table).await? {
            return Ok(existing);
        }
        let location: TableLocation = table.into();
        let name = location.0.rsplit('/').next().unwrap_or(location.0);
        let created = self
            .fresh_handle(location)
            .await?
            .write(vec![arrow::record_batch::RecordBatch::new_empty(schema)])
            .with_save_mode(deltalake::protocol::SaveMode::Append)
            .with_partition_columns(location.partition_columns())
            .with_table_name(name)
            .await;
        match created {
            Ok(created) => Ok(created),
            Err(e) => match self.latest(table).await? {
                Some(existing) => {
                    tracing::debug!(error = %e, table = name, "table created concurrently");
                    Ok(existing)
                }
                None => Err(e.into()),
            },
        }
    }

    /// Deletes the rows where `column = value`, if the table exists.
    pub async fn delete_where(
        &self,
        table: impl Into<TableLocation>,
        column: &str,
        value: &str,
    ) -> Result<()> {
        if let Some(table) = self.latest(table).await? {
            table
                .delete()
                .with_predicate(
                    datafusion::prelude::col(column).eq(datafusion::prelude::lit(value)),
                )
                .await?;
        }
        Ok(())
    }

    /// Replaces the rows matching `predicate` by `rows` in one commit, creating the table with
    /// `schema` first if needed, and returns the table as committed. Two writers replacing
    /// overlapping rows at once conflict (the predicate is the commit's read set), so one of
    /// them fails rather than both landing. A commit storage reported as failed but that landed
    /// counts as committed (see [`IdentifiedCommit`]). Columns `rows` has and the table lacks
    /// are added (a store written by an older Cohort gains them; its rows read NULL there).
    pub async fn replace_where(
        &self,
        table: impl Into<TableLocation> + Copy,
        schema: arrow::datatypes::SchemaRef,
        predicate: datafusion::prelude::Expr,
        rows: arrow::record_batch::RecordBatch,
    ) -> Result<DeltaTable> {
        let before = self.ensure(table, schema).await?;
        let commit = IdentifiedCommit::new();
        let result = before
            .clone()
            .write(vec![rows])
            .with_save_mode(deltalake::protocol::SaveMode::Overwrite)
            .with_schema_mode(deltalake::operations::write::SchemaMode::Merge)
            .with_replace_where(predicate)
            .with_commit_properties(commit.properties())
            .await;
        commit.settle(&before, result).await
    }

    /// The table as it was at `at` (its newest version committed at or before then), or
    /// `None` if it did not exist yet.
    pub async fn as_of(
        &self,
        table: impl Into<TableLocation>,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<DeltaTable>> {
        let Some(mut table) = self.latest(table).await? else {
            return Ok(None);
        };
        table.load_with_datetime(at).await?;
        // For a time before the first commit the search settles on the first version.
        let version = table.version().unwrap_or_default();
        let committed_at = table.snapshot()?.version_timestamp(version);
        if committed_at.is_some_and(|t| t > at.timestamp_millis()) {
            return Ok(None);
        }
        Ok(Some(table))
    }

    /// True when no table holds any committed data yet.
    pub async fn is_empty(&self) -> Result<bool> {
        for kind in TableKind::ALL {
            if self.latest(kind).await?.is_some() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn table_url(root: &Url, table: TableLocation) -> Url {
    root.join(&format!("{}/", table.0))
        .expect("a table location is a valid relative URL")
}

async fn open_table(
    root: &Url,
    table: TableLocation,
    wrapped: Option<&Arc<dyn ObjectStore>>,
) -> Result<DeltaTable> {
    let url = table_url(root, table);
    if url.scheme() == "file"
        && let Ok(path) = url.to_file_path()
    {
        std::fs::create_dir_all(path)?;
    }
    let mut builder = DeltaTableBuilder::from_url(url.clone())?;
    if let Some(store) = wrapped {
        builder = builder.with_storage_backend(Arc::clone(store), url);
    }
    Ok(builder.build()?)
}

/// The object store at the root of the store's file system or bucket, for wrapping.
fn root_object_store(root: &Url) -> Result<Arc<dyn ObjectStore>> {
    match root.scheme() {
        "file" => Ok(Arc::new(object_store::local::LocalFileSystem::new())),
        _ => Ok(Arc::new(
            object_store::aws::AmazonS3Builder::from_env()
                .with_url(root.as_str())
                .build()
                .map_err(|e| {
                    EngineError::Config(format!("object store for {}: {e}", redact(root)))
                })?,
        )),
    }
}

/// Why an object store cannot be used, with what to set.
fn unreachable_store(root: &Url, error: &deltalake::DeltaTableError) -> EngineError {
    let mut causes = vec![error.to_string()];
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    let all = causes.join(": ");
    let store = redact(root);
    let bucket = root.host_str().unwrap_or_default();
    let denied = [
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "Forbidden",
    ]
    .iter()
    .any(|code| all.contains(code));
    // Without credentials the request may go out unsigned and be denied rather than fail.
    let no_credentials = all.contains("loading credentials")
        || all.contains("credentials provider")
        || (denied
            && [
                "AWS_ACCESS_KEY_ID",
                "AWS_PROFILE",
                "AWS_WEB_IDENTITY_TOKEN_FILE",
            ]
            .iter()
            .all(|name| std::env::var_os(name).is_none()));
    let reason = if no_credentials {
        "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), \
         and AWS_REGION; for S3-compatible storage also AWS_ENDPOINT_URL (AWS_ALLOW_HTTP=true for http://)"
            .to_string()
    } else if all.contains("NoSuchBucket") || all.contains("bucket does not exist") {
        format!("bucket '{bucket}' does not exist (Cohort creates tables, not buckets)")
    } else if denied {
        format!(
            "access denied: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and that they may list and write s3://{bucket}"
        )
    } else {
        let endpoint = std::env::var("AWS_ENDPOINT_URL")
            .map(|url| format!(" (AWS_ENDPOINT_URL={url})"))
            .unwrap_or_default();
        format!("{}{endpoint}", crate::error::distinct_causes(causes))
    };
    EngineError::Config(format!("cannot use the store {store}: {reason}"))
}

/// A URL safe to log: no user info or query string (which may carry credentials).
pub fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.to_string()
}

/// Tags one commit with a unique Delta application transaction, so that when storage reports
/// an error for a commit that in fact landed (a timeout after the write), the ingest finds its
/// commit in the log and reports success: the caller then never retries an acknowledged-as-failed
/// commit that is visible, which would duplicate its rows.
pub(crate) struct IdentifiedCommit {
    app_id: String,
}

impl IdentifiedCommit {
    pub(crate) fn new() -> Self {
        Self {
            app_id: format!("cohort-commit-{}", uuid::Uuid::new_v4()),
        }
    }

    pub(crate) fn properties(&self) -> CommitProperties {
        CommitProperties::default().with_application_transaction(Transaction::new(&self.app_id, 1))
    }

    /// The commit's outcome: `result` if it succeeded; after an error, the table if the
    /// commit is in the log anyway, else the error.
    pub(crate) async fn settle(
        &self,
        before: &DeltaTable,
        result: std::result::Result<DeltaTable, deltalake::DeltaTableError>,
    ) -> Result<DeltaTable> {
        let error = match result {
            Ok(table) => return Ok(table),
            Err(error) => error,
        };
        // Whether the commit is in the log: Some(table) if so, None if the log says it is not;
        // an error (reading the log failed) is worth another look after a pause.
        let landed = || async {
            let mut reloaded = before.clone();
            if reloaded.version().is_some() {
                reloaded.update_incremental(None).await?;
            } else {
                reloaded.load().await?;
            }
            let state = reloaded.snapshot()?;
            let committed = state
                .transaction_version(reloaded.log_store().as_ref(), &self.app_id)
                .await?;
            Ok::<_, deltalake::DeltaTableError>(committed.map(|_| reloaded))
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_times(2);
        match landed.retry(backoff).await {
            Ok(Some(reloaded)) => {
                tracing::warn!(error = %error, "storage reported a commit as failed, but it landed");
                Ok(reloaded)
            }
            Ok(None) => Err(error.into()),
            // Neither the commit nor the check can be trusted: a client that retried on a
            // plain failure could write the rows twice.
            Err(check) => {
                tracing::error!(error = %error, check = %check, "commit outcome unknown");
                Err(EngineError::CommitOutcomeUnknown(format!(
                    "{error}; reading the log to see whether it landed failed too: {check}"
                )))
            }
        }
    }
}

pub type SharedStore = Arc<Store>;

/// A DataFrame over one version of a Delta table (Cohort's small system tables are read whole).
pub async fn scan_table(table: &DeltaTable) -> Result<datafusion::dataframe::DataFrame> {
    let ctx = datafusion::prelude::SessionContext::new();
    table.update_datafusion_session(&ctx.state())?;
    Ok(ctx.read_table(table.table_provider().await?)?)
}

/// The table provider of one version of a Delta table, for a session whose object stores
/// already include the store's (every session registers them for its own tables).
pub async fn table_provider(
    table: &DeltaTable,
) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
    Ok(table.table_provider().await?)
}

/// A column of a system-table batch as plain Utf8.
pub fn text_column(
    batch: &arrow::record_batch::RecordBatch,
    name: &str,
) -> Result<arrow::array::StringArray> {
    let column = stored_column(batch, name)?;
    Ok(
        arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8)?
            .as_string::<i32>()
            .clone(),
    )
}

/// A column of a batch read from a system table; a store holding other columns than Cohort
/// wrote is reported, never a panic.
pub fn stored_column<'a>(
    batch: &'a arrow::record_batch::RecordBatch,
    name: &str,
) -> Result<&'a arrow::array::ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| EngineError::Corrupt(format!("a stored table has no column '{name}'")))
}

/// A column of a system-table batch as Int64.
pub fn int64_column(
    batch: &arrow::record_batch::RecordBatch,
    name: &str,
) -> Result<arrow::array::Int64Array> {
    let column = stored_column(batch, name)?;
    Ok(
        arrow::compute::cast(column, &arrow::datatypes::DataType::Int64)?
            .as_primitive::<arrow::datatypes::Int64Type>()
            .clone(),
    )
}

/// A flag column added to a system table after its first release: each row's value, false
/// where it is NULL or the column is absent (a table written before the flag existed).
pub fn added_flag_column(
    batch: &arrow::record_batch::RecordBatch,
    name: &str,
) -> Result<Vec<bool>> {
    let Some(column) = batch.column_by_name(name) else {
        return Ok(vec![false; batch.num_rows()]);
    };
    let column = arrow::compute::cast(column, &arrow::datatypes::DataType::Boolean)?;
    let column = column.as_boolean();
    Ok((0..batch.num_rows())
        .map(|row| arrow::array::Array::is_valid(column, row) && column.value(row))
        .collect())
}

/// A column of a system-table batch as UTC microseconds.
pub fn micros_column(
    batch: &arrow::record_batch::RecordBatch,
    name: &str,
) -> Result<arrow::array::TimestampMicrosecondArray> {
    let column = stored_column(batch, name)?;
    Ok(
        arrow::compute::cast(column, &crate::tables::timestamp_type())?
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
            .clone(),
    )
}
