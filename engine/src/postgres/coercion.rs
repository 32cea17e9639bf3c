//! PostgreSQL reads a quoted literal compared with a typed expression as a value of that
//! type: `indisprimary = 'f'` (SQLAlchemy 1.4's index reflection, which Superset runs) is a
//! boolean comparison. DataFusion finds no common type for Boolean and Utf8, so for
//! PostgreSQL clients this analyzer rule, run before type coercion, casts such a literal to
//! Boolean (`t`, `true`, `yes`, `on`, `1` and their negations, as PostgreSQL accepts them).

use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result as DfResult, ScalarValue};
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator};
use datafusion::optimizer::AnalyzerRule;

#[derive(Debug, Default)]
pub(super) struct BooleanLiterals;

impl AnalyzerRule for BooleanLiterals {
    fn analyze(&self, plan: LogicalPlan, _: &ConfigOptions) -> DfResult<LogicalPlan> {
        plan.transform_up_with_subqueries(|plan| {
            let mut scope = DFSchema::empty();
            for input in plan.inputs() {
                scope.merge(input.schema());
            }
            plan.map_expressions(|expr| expr.transform_up(|expr| boolean_literal(expr, &scope)))
        })
        .map(|transformed| transformed.data)
    }

    fn name(&self) -> &str {
        "cohort_pg_boolean_literals"
    }
}

fn boolean_literal(expr: Expr, scope: &DFSchema) -> DfResult<Transformed<Expr>> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &expr else {
        return Ok(Transformed::no(expr));
    };
    if !matches!(op, Operator::Eq | Operator::NotEq) {
        return Ok(Transformed::no(expr));
    }
    let is_boolean = |side: &Expr| {
        side.get_type(scope)
            .is_ok_and(|data_type| data_type == DataType::Boolean)
    };
    let (left, right) = match (text_literal(left), text_literal(right)) {
        (None, Some(text)) if is_boolean(left) => match parse_boolean(text) {
            Some(value) => (left.clone(), Box::new(boolean(value))),
            None => return Ok(Transformed::no(expr)),
        },
        (Some(text), None) if is_boolean(right) => match parse_boolean(text) {
            Some(value) => (Box::new(boolean(value)), right.clone()),
            None => return Ok(Transformed::no(expr)),
        },
        _ => return Ok(Transformed::no(expr)),
    };
    Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr {
        left,
        op: *op,
        right,
    })))
}

fn text_literal(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Literal(
            ScalarValue::Utf8(Some(text))
            | ScalarValue::Utf8View(Some(text))
            | ScalarValue::LargeUtf8(Some(text)),
            _,
        ) => Some(text),
        _ => None,
    }
}

fn boolean(value: bool) -> Expr {
    Expr::Literal(ScalarValue::Boolean(Some(value)), None)
}

/// PostgreSQL's boolean input: any unambiguous prefix of true/false/yes/no, on/off, 1/0.
fn parse_boolean(text: &str) -> Option<bool> {
    let text = text.trim().to_ascii_lowercase();
    let prefix_of = |word: &str| !text.is_empty() && word.starts_with(text.as_str());
    if prefix_of("true") || prefix_of("yes") || text == "on" || text == "1" {
        Some(true)
    } else if prefix_of("false") || prefix_of("no") || text == "off" || text == "0" {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgresql_boolean_spellings_are_read() {
        for text in ["t", "TRUE", "y", "yes", "on", "1", " true "] {
            assert_eq!(parse_boolean(text), Some(true), "{text}");
        }
        for text in ["f", "false", "n", "no", "off", "0"] {
            assert_eq!(parse_boolean(text), Some(false), "{text}");
        }
        for text in ["", "o", "maybe", "2"] {
            assert_eq!(parse_boolean(text), None, "{text}");
        }
    }
}
