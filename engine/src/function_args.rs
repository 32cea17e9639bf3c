//! What the engine's SQL functions (tags, segments, traits) share: reading their constant
//! arguments, and turning a bitmap of user keys into rows.

use std::sync::Arc;

use arrow::datatypes::DataType;
use cohort_sql_extensions::bitmap::{RoaringTreemap, encode};
use datafusion::catalog::TableProvider;
use datafusion::common::{ScalarValue, plan_err};
use datafusion::datasource::provider_as_source;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, LogicalPlanBuilder, ScalarUDF, cast,
};
use datafusion::prelude::{col, lit};

use crate::error::EngineError;
use crate::tables::{USER_ID, USER_KEY};

/// An engine error as DataFusion reports it from inside a function.
pub(crate) fn engine_error(error: EngineError) -> DataFusionError {
    match error {
        EngineError::DataFusion(e) => e,
        other => DataFusionError::Plan(other.to_string()),
    }
}

/// A constant string argument; NULL is `None`.
pub fn constant_string(
    function: &str,
    position: usize,
    arg: &ColumnarValue,
) -> Result<Option<String>> {
    match arg {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(s) | ScalarValue::Utf8View(s) | ScalarValue::LargeUtf8(s),
        ) => Ok(s.clone()),
        ColumnarValue::Scalar(ScalarValue::Null) => Ok(None),
        ColumnarValue::Scalar(other) => {
            plan_err!(
                "{function}: argument {position} must be a string, found {}",
                other.data_type()
            )
        }
        ColumnarValue::Array(_) => plan_err!(
            "{function}: argument {position} must be a constant string (tags are read before the query runs)"
        ),
    }
}

/// A constant the planner passed to a table function: a literal, or a cast of one
/// (`TIMESTAMP '...'` arrives as a cast of a string).
pub fn table_argument(expr: &Expr) -> Option<ColumnarValue> {
    match expr {
        Expr::Literal(value, _) => Some(ColumnarValue::Scalar(value.clone())),
        Expr::Cast(cast) => match cast.expr.as_ref() {
            Expr::Literal(value, _) => Some(ColumnarValue::Scalar(value.clone())),
            _ => None,
        },
        _ => None,
    }
}

/// Turns a bitmap of user keys into rows of `user_id, user_key`: a scan of the user-key
/// dictionary filtered by the (constant) bitmap.
#[derive(Debug, Clone)]
pub struct UsersOfBitmap {
    pub user_keys: Arc<dyn TableProvider>,
    /// The type `user_id` has in `events` (the dictionary holds ids as text).
    pub user_id_type: DataType,
    pub bitmap_contains: Arc<ScalarUDF>,
}

impl UsersOfBitmap {
    /// `user_id, user_key`, then `extra` columns (constants per bitmap).
    pub fn plan(&self, bitmap: &RoaringTreemap, extra: Vec<Expr>) -> Result<LogicalPlan> {
        let selected = self.bitmap_contains.call(vec![
            lit(ScalarValue::Binary(Some(encode(bitmap)))),
            col(USER_KEY),
        ]);
        let mut columns = vec![
            cast(col(USER_ID), self.user_id_type.clone()).alias(USER_ID),
            col(USER_KEY),
        ];
        columns.extend(extra);
        LogicalPlanBuilder::scan(
            "user_keys",
            provider_as_source(Arc::clone(&self.user_keys)),
            None,
        )?
        .filter(selected)?
        .project(columns)?
        .build()
    }
}
