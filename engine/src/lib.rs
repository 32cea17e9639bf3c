//! Cohort's engine: the Delta Lake store on object storage, ingest, demo data, and the
//! DataFusion `SessionContext` every query runs in.
//!
//! Everything a server or the CLI does goes through [`Engine`]; it holds no per-query state,
//! so one engine serves all sessions.

mod catalog_objects;
pub mod catalog_statement;
mod column_order;
pub mod demo;
pub mod depth;
pub mod error;
pub mod faults;
mod function_args;
pub mod holdouts;
pub mod identity;
pub mod ingest;
pub mod ipc;
mod jobs;
pub mod limits;
pub mod optimize;
mod outcome;
pub mod params;
pub mod postgres;
pub mod segments;
mod session;
mod show_functions;
pub mod statement;
pub mod store;
pub mod tables;
pub mod tags;
pub mod traits;
pub mod user_keys;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use tokio::sync::Mutex;

pub use error::{EngineError, Result};
pub use ingest::IngestReport;
pub use limits::StatementLimits;
pub use optimize::OptimizeReport;
pub use statement::{Access, Classified, Dialect, StatementOutcome, plan_query_schema};
pub use store::Store;
pub use tables::TableKind;

/// Default data location: a directory beside where Cohort runs.
pub const DEFAULT_DATA: &str = "./cohort-data";

/// Engine settings. The server's configuration embeds these.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Store location: a directory path or `s3://bucket/prefix`.
    pub data: String,
    /// Memory all running queries may use together, in bytes; past it operators spill to disk.
    pub memory_limit: Option<usize>,
    /// Directory for spill files (the OS temporary directory when unset).
    pub spill_dir: Option<PathBuf>,
    /// Parallelism of one query; defaults to the number of cores.
    pub target_partitions: Option<usize>,
    /// Size and complexity limits checked on every statement before it is parsed.
    pub limits: StatementLimits,
    /// Wraps the store's object store (fault injection in tests); `None` in production.
    pub object_store_layer: Option<store::ObjectStoreLayer>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            data: DEFAULT_DATA.to_string(),
            memory_limit: None,
            spill_dir: None,
            target_partitions: None,
            limits: StatementLimits::default(),
            object_store_layer: None,
        }
    }
}

pub struct Engine {
    config: EngineConfig,
    store: Store,
    runtime: Arc<RuntimeEnv>,
    /// Serialises writers of one table within this process; Delta's optimistic commits
    /// handle writers in other processes.
    write_locks: HashMap<TableKind, Mutex<()>>,
    user_keys: user_keys::UserKeys,
    /// Serialises tag (and later segment) definition changes and refreshes within this process.
    catalog_lock: Mutex<()>,
    tag_cache: tags::TagCache,
    trait_cache: traits::TraitCache,
    identity_cache: identity::IdentityCache,
    segment_cache: segments::SegmentCache,
    /// Per-segment locks: one run of a segment at a time.
    segment_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Wakes the scheduler when definitions or schedules change.
    scheduler_wake: Arc<tokio::sync::Notify>,
    /// Every committed segment version, for subscribers (activation streams).
    segment_versions_committed: tokio::sync::broadcast::Sender<segments::SegmentVersion>,
    /// The newest version announced per segment, so each is announced once.
    segment_versions_published: std::sync::Mutex<HashMap<String, i64>>,
    /// Ends of segment runs whose record could not be written; written with the next record.
    unrecorded_runs: std::sync::Mutex<Vec<segments::RunRow>>,
    /// `pg_catalog` for PostgreSQL clients' sessions, built at their first statement.
    pg_catalog: std::sync::Mutex<Option<Arc<postgres::PgCatalog>>>,
}

impl Engine {
    pub async fn open(config: EngineConfig) -> Result<Self> {
        let store = Store::open_with(&config.data, config.object_store_layer.clone()).await?;
        let runtime = build_runtime(&config)?;
        let write_locks = TableKind::ALL
            .iter()
            .map(|k| (*k, Mutex::new(())))
            .collect();
        Ok(Self {
            config,
            store,
            runtime,
            write_locks,
            user_keys: Default::default(),
            catalog_lock: Mutex::new(()),
            tag_cache: Default::default(),
            trait_cache: Default::default(),
            identity_cache: Default::default(),
            segment_cache: Default::default(),
            segment_locks: Default::default(),
            scheduler_wake: Arc::new(tokio::sync::Notify::new()),
            segment_versions_committed: tokio::sync::broadcast::channel(64).0,
            segment_versions_published: Default::default(),
            unrecorded_runs: Default::default(),
            pg_catalog: Default::default(),
        })
    }

    fn pg_catalog(&self) -> Result<Arc<postgres::PgCatalog>> {
        let mut catalog = self.pg_catalog.lock().expect("pg_catalog lock");
        if let Some(catalog) = catalog.as_ref() {
            return Ok(Arc::clone(catalog));
        }
        let built = Arc::new(postgres::PgCatalog::new()?);
        *catalog = Some(Arc::clone(&built));
        Ok(built)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn runtime(&self) -> &Arc<RuntimeEnv> {
        &self.runtime
    }

    /// Notified when segment definitions or schedules change, for the scheduler.
    pub fn scheduler_wake(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.scheduler_wake)
    }

    /// Notified of every committed segment version: at once for this process's runs, and for
    /// other processes' runs while [`Engine::watch_segment_versions`] runs.
    pub fn subscribe_segment_versions(
        &self,
    ) -> tokio::sync::broadcast::Receiver<segments::SegmentVersion> {
        self.segment_versions_committed.subscribe()
    }
}

fn build_runtime(config: &EngineConfig) -> Result<Arc<RuntimeEnv>> {
    let mut builder = RuntimeEnvBuilder::new();
    if let Some(limit) = config.memory_limit {
        if limit == 0 {
            return Err(EngineError::Config(
                "memory limit must be above zero".into(),
            ));
        }
        builder = builder.with_memory_pool(Arc::new(FairSpillPool::new(limit)));
    }
    if let Some(dir) = &config.spill_dir {
        std::fs::create_dir_all(dir).map_err(|e| {
            EngineError::Config(format!(
                "cannot create spill directory '{}': {e}",
                dir.display()
            ))
        })?;
        builder = builder.with_disk_manager_builder(
            DiskManagerBuilder::default()
                .with_mode(DiskManagerMode::Directories(vec![dir.clone()])),
        );
    }
    Ok(builder.build_arc()?)
}
