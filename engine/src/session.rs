//! Building the `SessionContext` a statement runs in.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::datasource::empty::EmptyTable;
use datafusion::execution::context::SessionContext;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::SessionConfig;

use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{Column, ScalarValue};
use datafusion::datasource::{MemTable, ViewTable, provider_as_source};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, cast};
use datafusion::prelude::{col, lit};

use crate::function_args::UsersOfBitmap;
use crate::identity::{
    self,
    person_key::{PersonSource, WithPersonKey},
};
use crate::segments::functions::{LoadedSegments, SegmentChangesFunction, SegmentMembersFunction};
use crate::segments::{self, SEGMENT_CHANGES, SEGMENT_MEMBERS};
use crate::tables::{
    CATALOG, PERSON_KEY, SCHEMA, SystemTable, TableKind, USER_ID, USER_KEY, is_reserved_column,
    written_at_column,
};
use crate::tags::functions::{AudienceFunction, AudienceOverlapFunction, scalar_functions};
use crate::tags::resolve::ResolvedTags;
use crate::tags::{AUDIENCE, AUDIENCE_OVERLAP, VALUE, bitmaps_schema};
use crate::traits::functions::{TraitFunction, TraitTables};
use crate::traits::{TRAIT, TRAITS_VIEW, values_schema};
use crate::{Engine, Result};

/// Names under which the system tables are visible to SQL.
pub const USER_KEYS_TABLE: &str = "user_keys";
pub const TAGS_VIEW: &str = "tags";
pub const SEGMENTS_VIEW: &str = "segments";
pub const SEGMENT_VERSIONS_VIEW: &str = "segment_versions";
pub const SEGMENT_RUNS_VIEW: &str = "segment_runs";
pub const PERSONS_VIEW: &str = "persons";

const SEGMENTS_SQL: &str = "SELECT d.name AS segment, d.schedule, v.version, v.members, v.persons, v.entered, \
     v.exited, v.committed_at AS refreshed_at, d.query FROM definitions d LEFT JOIN \
     (SELECT *, row_number() OVER (PARTITION BY segment ORDER BY version DESC) AS newest FROM versions) v \
     ON v.segment = d.name AND v.newest = 1";

const SEGMENT_VERSIONS_SQL: &str = "SELECT segment, version, run_id, committed_at, members, persons, \
     entered, exited FROM versions";

/// A run writes a `running` row when it starts and a final row when it ends; a run shows its
/// final row once there is one.
const SEGMENT_RUNS_SQL: &str = "SELECT segment, run_id, trigger, scheduled_at, started_at, \
     finished_at, status, version, members, entered, exited, error FROM runs \
     WHERE status <> 'running' OR run_id NOT IN (SELECT run_id FROM runs WHERE status <> 'running')";

impl Engine {
    /// A session over the newest committed version of every table.
    ///
    /// Tables are planned from the Delta log at the moment of the call, so rows committed by
    /// any writer before it are visible, and a query never sees a half-written commit.
    pub async fn session(&self) -> Result<SessionContext> {
        self.session_with(Arc::default(), Arc::default()).await
    }

    /// A session whose tag and segment functions answer from what was read before planning.
    pub(crate) async fn session_with(
        &self,
        tags: Arc<ResolvedTags>,
        segments: Arc<LoadedSegments>,
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
        let state = cohort_sql_extensions::session_state(
            SessionStateBuilder::new()
                .with_config(config)
                .with_runtime_env(Arc::clone(&self.runtime))
                .with_default_features(),
        )?;
        let ctx = SessionContext::new_with_state(state);
        let identity_version = self.store.latest(SystemTable::IdentityPersons).await?;
        let persons = PersonSource {
            table: identity_version.clone(),
            cache: self.identity_cache.persons.clone(),
        };
        for kind in TableKind::ALL {
            let stored = self.stored_provider(&ctx, kind).await?;
            let provider = crate::column_order::base_columns_first(kind, Arc::clone(&stored));
            ctx.register_table(kind.name(), WithPersonKey::wrap(provider, persons.clone()))?;
            if kind == TableKind::Profiles {
                let profiles = WithPersonKey::wrap(stored, persons.clone());
                ctx.register_table(PERSONS_VIEW, persons_view(profiles).await?)?;
            }
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
        let trait_values = self
            .system_provider(&ctx, SystemTable::TraitValues, || {
                values_schema().as_ref().clone()
            })
            .await?;
        let trait_tables = TraitTables {
            definitions: self.trait_definitions().await?,
            now: trait_values,
            at: Arc::new(tags.trait_tables.clone()),
            user_keys: Arc::clone(&user_keys),
            user_id_type: user_id_type.clone(),
        };
        ctx.register_table(TRAITS_VIEW, trait_tables.wide_view()?)?;
        ctx.register_udtf(
            TRAIT,
            Arc::new(TraitFunction {
                tables: trait_tables,
            }),
        );
        ctx.register_udtf(
            AUDIENCE_OVERLAP,
            Arc::new(AudienceOverlapFunction {
                tags: Arc::clone(&tags),
            }),
        );
        let users = UsersOfBitmap {
            user_keys,
            user_id_type,
            bitmap_contains: datafusion::execution::FunctionRegistry::udf(&ctx, "bitmap_contains")?,
        };
        ctx.register_udtf(
            AUDIENCE,
            Arc::new(AudienceFunction {
                tags: Arc::clone(&tags),
                users: users.clone(),
            }),
        );
        for function in scalar_functions(&tags) {
            ctx.register_udf(function);
        }
        let split_group = datafusion::execution::FunctionRegistry::udf(
            &ctx,
            cohort_sql_extensions::split::SPLIT_GROUP,
        )?;
        ctx.register_udtf(
            SEGMENT_MEMBERS,
            Arc::new(SegmentMembersFunction {
                segments: Arc::clone(&segments),
                users: users.clone(),
                split_group: Arc::clone(&split_group),
            }),
        );
        ctx.register_udtf(
            SEGMENT_CHANGES,
            Arc::new(SegmentChangesFunction {
                segments,
                users,
                split_group,
            }),
        );
        self.register_segment_views(&ctx).await?;
        self.register_identity_views(&ctx, identity_version).await?;
        Ok(ctx)
    }

    /// `identities`, `identity_merges` and `identity_refusals` at the identity version
    /// `persons` (logs of later, uncommitted versions stay hidden).
    async fn register_identity_views(
        &self,
        ctx: &SessionContext,
        persons: Option<deltalake::DeltaTable>,
    ) -> Result<()> {
        let version = persons.as_ref().and_then(|t| t.version()).unwrap_or(0);
        let sources = SessionContext::new();
        sources.register_table(USER_KEYS_TABLE, ctx.table_provider(USER_KEYS_TABLE).await?)?;
        let persons: Arc<dyn TableProvider> = match persons {
            Some(table) => {
                table.update_datafusion_session(&ctx.state())?;
                table.table_provider().await?
            }
            None => Arc::new(MemTable::try_new(identity::persons_schema(), vec![vec![]])?),
        };
        sources.register_table("persons", persons)?;
        for (name, table, schema) in [
            (
                "merges",
                SystemTable::IdentityMerges,
                identity::merges_schema(),
            ),
            (
                "refusals",
                SystemTable::IdentityRefusals,
                identity::refusals_schema(),
            ),
        ] {
            self.register_view_source(ctx, &sources, name, table, schema)
                .await?;
        }
        let identities =
            "SELECT k.user_id, k.user_key, coalesce(p.person_key, k.user_key) AS person_key \
             FROM user_keys k LEFT JOIN persons p ON p.user_key = k.user_key"
                .to_string();
        let merges = format!(
            "SELECT version, person_key, merged_person_key, rule, merged_at FROM merges \
             WHERE version <= {version}"
        );
        let refusals = format!(
            "SELECT r.version, r.rule, r.limited_by, a.user_id, b.user_id AS other_user_id, \
             r.user_key, r.other_user_key, r.refused_at FROM refusals r \
             LEFT JOIN user_keys a ON a.user_key = r.user_key \
             LEFT JOIN user_keys b ON b.user_key = r.other_user_key WHERE r.version <= {version}"
        );
        for (view, sql) in [
            (identity::IDENTITIES_VIEW, identities),
            (identity::IDENTITY_MERGES_VIEW, merges),
            (identity::IDENTITY_REFUSALS_VIEW, refusals),
        ] {
            let plan = sources.sql(&sql).await?.into_unoptimized_plan();
            ctx.register_table(view, Arc::new(ViewTable::new(plan, Some(sql))))?;
        }
        Ok(())
    }

    /// Registers `table` in `sources` as `name`, for views planned over it. A store written
    /// before a column of `schema` was added lacks it: the views read it as NULL.
    async fn register_view_source(
        &self,
        ctx: &SessionContext,
        sources: &SessionContext,
        name: &str,
        table: SystemTable,
        schema: arrow::datatypes::SchemaRef,
    ) -> Result<()> {
        let provider = self
            .system_provider(ctx, table, || schema.as_ref().clone())
            .await?;
        let stored = provider.schema();
        let missing: Vec<_> = schema
            .fields()
            .iter()
            .filter(|f| stored.field_with_name(f.name()).is_err())
            .collect();
        if missing.is_empty() {
            sources.register_table(name, provider)?;
            return Ok(());
        }
        let mut columns: Vec<Expr> = stored
            .fields()
            .iter()
            .map(|f| col(Column::from_name(f.name())))
            .collect();
        columns.extend(
            missing
                .iter()
                .map(|f| cast(lit(ScalarValue::Null), f.data_type().clone()).alias(f.name())),
        );
        let plan = LogicalPlanBuilder::scan(name, provider_as_source(provider), None)?
            .project(columns)?
            .build()?;
        sources.register_table(name, Arc::new(ViewTable::new(plan, None)))?;
        Ok(())
    }

    /// `segments`, `segment_versions` and `segment_runs`, planned over the system tables.
    async fn register_segment_views(&self, ctx: &SessionContext) -> Result<()> {
        let sources = SessionContext::new();
        for (name, table, schema) in [
            (
                "definitions",
                SystemTable::SegmentDefinitions,
                segments::definitions_schema(),
            ),
            (
                "versions",
                SystemTable::SegmentVersions,
                segments::versions_schema(),
            ),
            ("runs", SystemTable::SegmentRuns, segments::runs_schema()),
        ] {
            self.register_view_source(ctx, &sources, name, table, schema)
                .await?;
        }
        for (view, sql) in [
            (SEGMENTS_VIEW, SEGMENTS_SQL),
            (SEGMENT_VERSIONS_VIEW, SEGMENT_VERSIONS_SQL),
            (SEGMENT_RUNS_VIEW, SEGMENT_RUNS_SQL),
        ] {
            let plan = sources.sql(sql).await?.into_unoptimized_plan();
            ctx.register_table(view, Arc::new(ViewTable::new(plan, Some(sql.to_string()))))?;
        }
        Ok(())
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

    /// The table as stored, bookkeeping columns included.
    async fn stored_provider(
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

/// One row per person with a profile: `person_key`, the `user_ids` whose profile rows were
/// merged, then every attribute. Each attribute is the most recently written non-null value
/// among the person's identifiers (ties, and values written before Cohort kept write times,
/// go to the newest identifier, the one with the largest user key).
async fn persons_view(profiles: Arc<dyn TableProvider>) -> Result<Arc<dyn TableProvider>> {
    let schema = profiles.schema();
    let quoted = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    let mut columns = vec![
        PERSON_KEY.to_string(),
        format!("array_agg({USER_ID} ORDER BY {USER_KEY}) AS user_ids"),
    ];
    for field in schema.fields() {
        let name = field.name();
        if [USER_ID, USER_KEY, PERSON_KEY].contains(&name.as_str()) || is_reserved_column(name) {
            continue;
        }
        let attribute = quoted(name);
        let written = written_at_column(name);
        let written = if schema.field_with_name(&written).is_ok() {
            quoted(&written)
        } else {
            "CAST(NULL AS TIMESTAMP)".to_string()
        };
        columns.push(format!(
            "first_value({attribute} ORDER BY {written} DESC NULLS LAST, {USER_KEY} DESC) \
             FILTER (WHERE {attribute} IS NOT NULL) AS {attribute}"
        ));
    }
    let sql = format!(
        "SELECT {} FROM profiles GROUP BY {PERSON_KEY}",
        columns.join(", ")
    );
    let sources = SessionContext::new();
    sources.register_table(TableKind::Profiles.name(), profiles)?;
    let plan = sources.sql(&sql).await?.into_unoptimized_plan();
    Ok(Arc::new(ViewTable::new(plan, Some(sql))))
}
