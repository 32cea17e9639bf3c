//! Building the `SessionContext` a statement runs in.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::datasource::empty::EmptyTable;
use datafusion::execution::context::SessionContext;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::SessionConfig;

use crate::tables::{CATALOG, SCHEMA, TableKind};
use crate::{Engine, Result};

impl Engine {
    /// A session over the newest committed version of every table.
    ///
    /// Tables are planned from the Delta log at the moment of the call, so rows committed by
    /// any writer before it are visible, and a query never sees a half-written commit.
    pub async fn session(&self) -> Result<SessionContext> {
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_create_default_catalog_and_schema(true)
            .with_information_schema(true);
        if let Some(partitions) = self.config.target_partitions {
            config = config.with_target_partitions(partitions.max(1));
        }
        if let Some(limit) = self.config.memory_limit {
            // A sort reserves this much up front for merging its spill files; DataFusion's
            // 10 MB default cannot be met under a small limit, so scale it with the pool.
            let reservation = (limit / 8).min(10 * 1024 * 1024);
            config = config
                .with_sort_spill_reservation_bytes(reservation)
                .with_sort_in_place_threshold_bytes(reservation);
        }
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(Arc::clone(&self.runtime))
            .with_default_features()
            .build();
        cohort_sql_extensions::register_all(&mut state)?;
        let ctx = SessionContext::new_with_state(state);
        for kind in TableKind::ALL {
            let provider = self.table_provider(&ctx, kind).await?;
            ctx.register_table(kind.name(), provider)?;
        }
        Ok(ctx)
    }

    async fn table_provider(
        &self,
        ctx: &SessionContext,
        kind: TableKind,
    ) -> Result<Arc<dyn TableProvider>> {
        match self.store.latest(kind).await? {
            Some(table) => {
                table.update_datafusion_session(&ctx.state())?;
                Ok(table.table_provider().await?)
            }
            None => Ok(Arc::new(EmptyTable::new(kind.empty_schema()))),
        }
    }
}
