//! Tables show their base columns first, whatever order the Delta log keeps.
//!
//! A new table is created in the documented order (`user_id, event, ts, event_date, user_key`,
//! then properties as they arrive), but delta-rs moves partition columns behind the others when
//! a write evolves the schema, so after the first new property `event_date` would sit among the
//! properties. Rather than rewrite the log, SQL sees each table through [`BaseColumnsFirst`]: the
//! leading columns in their order, then every other column in the log's order. Scans ask the
//! Delta provider for the same columns in its own order and reorder them with a projection.
//! Columns Cohort keeps for its own bookkeeping (names starting with `__cohort_`, such as when
//! each profile attribute was written) are left out of what SQL sees.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{ScanArgs, ScanResult, Session, TableProvider};
use datafusion::common::{Constraints, Statistics};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;

use crate::tables::{TableKind, is_reserved_column};

/// `inner` with `kind`'s leading columns first; `inner` itself when its order is already that.
pub fn base_columns_first(
    kind: TableKind,
    inner: Arc<dyn TableProvider>,
) -> Arc<dyn TableProvider> {
    let schema = inner.schema();
    let leading = kind.leading_columns();
    let mut order: Vec<usize> = leading
        .iter()
        .filter_map(|name| schema.index_of(name).ok())
        .collect();
    order.extend((0..schema.fields().len()).filter(|i| {
        let name = schema.field(*i).name().as_str();
        !leading.contains(&name) && !is_reserved_column(name)
    }));
    if order.len() == schema.fields().len()
        && order
            .iter()
            .enumerate()
            .all(|(position, inner)| position == *inner)
    {
        return inner;
    }
    let reordered = Arc::new(Schema::new_with_metadata(
        order
            .iter()
            .map(|&i| schema.field(i).clone())
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    ));
    Arc::new(BaseColumnsFirst {
        inner,
        order,
        schema: reordered,
    })
}

#[derive(Debug)]
pub struct BaseColumnsFirst {
    inner: Arc<dyn TableProvider>,
    /// For each column of `schema`, its index in the inner provider's schema.
    order: Vec<usize>,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for BaseColumnsFirst {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.inner.constraints()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn get_table_definition(&self) -> Option<&str> {
        self.inner.get_table_definition()
    }

    fn get_logical_plan(&'_ self) -> Option<Cow<'_, LogicalPlan>> {
        self.inner.get_logical_plan()
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.inner.get_column_default(column)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let args = ScanArgs::default()
            .with_projection(projection.map(Vec::as_slice))
            .with_filters(Some(filters))
            .with_limit(limit);
        Ok(self.scan_with_args(state, args).await?.into_inner())
    }

    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: ScanArgs<'a>,
    ) -> Result<ScanResult> {
        let wanted: Vec<usize> = match args.projection() {
            Some(projection) => projection.iter().map(|&i| self.order[i]).collect(),
            None => self.order.clone(),
        };
        // The inner provider is asked in its own column order, as any scan would ask it.
        let mut inner_projection = wanted.clone();
        inner_projection.sort_unstable();
        inner_projection.dedup();
        let inner_args = ScanArgs::default()
            .with_projection(Some(&inner_projection))
            .with_filters(args.filters())
            .with_limit(args.limit())
            .with_statistics_requests(args.statistics_requests());
        let plan = self
            .inner
            .scan_with_args(state, inner_args)
            .await?
            .into_inner();
        if inner_projection == wanted {
            return Ok(plan.into());
        }
        let scanned = plan.schema();
        let columns = wanted.iter().map(|inner| {
            let position = inner_projection
                .binary_search(inner)
                .expect("every wanted column was scanned");
            let name = scanned.field(position).name().clone();
            (
                Arc::new(Column::new(&name, position))
                    as Arc<dyn datafusion::physical_expr::PhysicalExpr>,
                name,
            )
        });
        Ok((Arc::new(ProjectionExec::try_new(columns, plan)?) as Arc<dyn ExecutionPlan>).into())
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Filters name columns, never positions: the same for both orders.
        self.inner.supports_filters_pushdown(filters)
    }

    fn statistics(&self) -> Option<Statistics> {
        let mut statistics = self.inner.statistics()?;
        if statistics.column_statistics.len() != self.inner.schema().fields().len() {
            return None;
        }
        let columns = std::mem::take(&mut statistics.column_statistics);
        statistics.column_statistics = self.order.iter().map(|&i| columns[i].clone()).collect();
        Some(statistics)
    }
}
