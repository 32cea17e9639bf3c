//! The SQL side of traits.
//!
//! | name | kind | rows |
//! |---|---|---|
//! | `trait('name' [, as_of])` | table function | `user_id, user_key, value` (typed as the trait), now or as the last refresh at or before `as_of` left it |
//! | `traits` | view | `user_id, user_key`, then one typed column per trait: every user with a value of any trait |
//!
//! ```sql
//! SELECT avg(value) FROM trait('ltv');
//! SELECT user_id, lifetime_orders, ltv FROM traits WHERE ltv > 100;
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Column, JoinType, plan_err};
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::error::{DataFusionError, Result};
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprFunctionExt, LogicalPlan, LogicalPlanBuilder, cast,
};
use datafusion::prelude::{col, lit};

use super::{TRAIT, TraitDefinition};
use crate::function_args::{constant_string, table_argument};
use crate::tables::{USER_ID, USER_KEY};
use crate::tags::resolve::scalar_as_of;

const VALUES: &str = "trait_values";
const KEYS: &str = "user_keys";

/// What trait plans read: the values table now and at the times a statement names, and the
/// user-key dictionary for `user_id`.
#[derive(Debug, Clone)]
pub struct TraitTables {
    pub definitions: Arc<Vec<TraitDefinition>>,
    pub now: Arc<dyn TableProvider>,
    /// By point in time (microseconds), read before planning.
    pub at: Arc<HashMap<i64, Arc<dyn TableProvider>>>,
    pub user_keys: Arc<dyn TableProvider>,
    pub user_id_type: DataType,
}

impl TraitTables {
    /// `user_id, user_key` joined to `values` (which has `user_key`), then `values`' other columns.
    fn with_user_ids(&self, values: LogicalPlan, columns: Vec<Expr>) -> Result<LogicalPlan> {
        let keys =
            LogicalPlanBuilder::scan(KEYS, provider_as_source(Arc::clone(&self.user_keys)), None)?
                .build()?;
        let mut projection = vec![
            cast(
                Expr::Column(Column::new(Some(KEYS), USER_ID)),
                self.user_id_type.clone(),
            )
            .alias(USER_ID),
            Expr::Column(Column::new(Some(VALUES), USER_KEY)).alias(USER_KEY),
        ];
        projection.extend(columns);
        LogicalPlanBuilder::from(values)
            .join(
                keys,
                JoinType::Inner,
                (
                    vec![Column::new(Some(VALUES), USER_KEY)],
                    vec![Column::new(Some(KEYS), USER_KEY)],
                ),
                None,
            )?
            .project(projection)?
            .build()
    }

    /// The `traits` view: one row per user with any trait value, a column per trait.
    pub fn wide_view(&self) -> Result<Arc<dyn TableProvider>> {
        let scan =
            LogicalPlanBuilder::scan(VALUES, provider_as_source(Arc::clone(&self.now)), None)?;
        let names: Vec<Expr> = self
            .definitions
            .iter()
            .map(|d| lit(d.name.as_str()))
            .collect();
        let scan = if names.is_empty() {
            scan.filter(lit(false))?
        } else {
            scan.filter(col("trait").in_list(names, false))?
        };
        let pivots = self
            .definitions
            .iter()
            .map(|d| {
                max(col(d.value_type.value_column()))
                    .filter(col("trait").eq(lit(d.name.as_str())))
                    .build()
                    .map(|e| e.alias(d.name.as_str()))
            })
            .collect::<Result<Vec<_>>>()?;
        let values = scan
            .aggregate(vec![col(USER_KEY)], pivots)?
            .alias(VALUES)?
            .build()?;
        let columns = self
            .definitions
            .iter()
            .map(|d| {
                Expr::Column(Column::new(Some(VALUES), d.name.as_str())).alias(d.name.as_str())
            })
            .collect();
        Ok(Arc::new(ViewTable::new(
            self.with_user_ids(values, columns)?,
            None,
        )))
    }
}

/// `trait('name' [, as_of])`.
#[derive(Debug)]
pub struct TraitFunction {
    pub tables: TraitTables,
}

impl TableFunctionImpl for TraitFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.is_empty() || exprs.len() > 2 {
            return plan_err!(
                "{TRAIT} takes a trait name and optionally a point in time, got {} arguments",
                exprs.len()
            );
        }
        let constants = exprs
            .iter()
            .map(|e| {
                table_argument(e)
                    .ok_or_else(|| DataFusionError::Plan(format!("{TRAIT}: {e} is not a constant")))
            })
            .collect::<Result<Vec<_>>>()?;
        let Some(name) = constant_string(TRAIT, 1, &constants[0])? else {
            return plan_err!("{TRAIT}: the trait name is NULL");
        };
        let name = name.to_lowercase();
        let Some(definition) = self.tables.definitions.iter().find(|d| d.name == name) else {
            return plan_err!("unknown trait '{name}' (SHOW TRAITS lists the traits)");
        };
        let values = match constants.get(1) {
            None => Arc::clone(&self.tables.now),
            Some(ColumnarValue::Scalar(value)) => {
                let at = scalar_as_of(value).map_err(|e| DataFusionError::Plan(e.to_string()))?;
                match self.tables.at.get(&at) {
                    Some(table) => Arc::clone(table),
                    None => {
                        return plan_err!(
                            "{TRAIT}: the point in time must be a literal (traits are read before the query runs)"
                        );
                    }
                }
            }
            Some(ColumnarValue::Array(_)) => {
                return plan_err!("{TRAIT}: the point in time must be a constant");
            }
        };
        let values = LogicalPlanBuilder::scan(VALUES, provider_as_source(values), None)?
            .filter(col("trait").eq(lit(name.as_str())))?
            .build()?;
        let value = cast(
            Expr::Column(Column::new(
                Some(VALUES),
                definition.value_type.value_column(),
            )),
            definition.value_type.data_type(),
        )
        .alias("value");
        Ok(Arc::new(ViewTable::new(
            self.tables.with_user_ids(values, vec![value])?,
            None,
        )))
    }
}
