//! Building the `SessionContext` a statement runs in.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::datasource::empty::EmptyTable;
use datafusion::execution::context::SessionContext;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::SessionConfig;

use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::{MemTable, ViewTable, provider_as_source};
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::prelude::col;

use crate::tables::{CATALOG, SCHEMA, SystemTable, TableKind, USER_ID, USER_KEY};
use crate::tags::functions::{AudienceFunction, scalar_functions};
use crate::tags::resolve::ResolvedTags;
use crate::tags::{AUDIENCE, VALUE, bitmaps_schema};
use crate::{Engine, Result};

/// Names under which the system tables are visible to SQL.
pub const USER_KEYS_TABLE: &str = "user_keys";
pub const TAGS_VIEW: &str = "tags";

impl Engine {
    /// A session over the newest committed version of every table.
    ///
    /// Tables are planned from the Delta log at the moment of the call, so rows committed by
    /// any writer before it are visible, and a query never sees a half-written commit.
    pub async fn session(&self) -> Result<SessionContext> {
        self.session_with_tags(Arc::new(ResolvedTags::default()))
            .await
    }

    /// A session whose tag functions answer from `tags` (read before planning).
    pub(crate) async fn session_with_tags(
        &self,
        tags: Arc<ResolvedTags>,
    ) -> Result<SessionContext> {
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
        let user_id_type = ctx
            .table_provider(TableKind::Events.name())
            .await?
            .schema()
            .field_with_name(USER_ID)
            .map(|f| f.data_type().clone())
            .unwrap_or(DataType::Int64);
        let user_keys = self
            .system_provider(&ctx, SystemTable::UserKeys, || {
                Schema::new(vec![
                    Field::new(USER_ID, DataType::Utf8, false),
                    Field::new(USER_KEY, DataType::Int64, false),
                ])
            })
            .await?;
        ctx.register_table(USER_KEYS_TABLE, Arc::clone(&user_keys))?;
        let bitmaps = self
            .system_provider(&ctx, SystemTable::TagBitmaps, || {
                bitmaps_schema().as_ref().clone()
            })
            .await?;
        let tags_view = LogicalPlanBuilder::scan("tag_bitmaps", provider_as_source(bitmaps), None)?
            .project(vec![
                col("tag"),
                col(VALUE),
                col("users"),
                col("refreshed_at"),
            ])?
            .build()?;
        ctx.register_table(TAGS_VIEW, Arc::new(ViewTable::new(tags_view, None)))?;
        let contains = datafusion::execution::FunctionRegistry::udf(&ctx, "bitmap_contains")?;
        ctx.register_udtf(
            AUDIENCE,
            Arc::new(AudienceFunction {
                tags: Arc::clone(&tags),
                user_keys,
                user_id_type,
                bitmap_contains: contains,
            }),
        );
        for function in scalar_functions(&tags) {
            ctx.register_udf(function);
        }
        Ok(ctx)
    }

    async fn system_provider(
        &self,
        ctx: &SessionContext,
        table: SystemTable,
        empty: impl FnOnce() -> Schema,
    ) -> Result<Arc<dyn TableProvider>> {
        match self.store.latest(table).await? {
            Some(table) => {
                table.update_datafusion_session(&ctx.state())?;
                Ok(table.table_provider().await?)
            }
            None => Ok(Arc::new(MemTable::try_new(
                Arc::new(empty()),
                vec![vec![]],
            )?)),
        }
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
