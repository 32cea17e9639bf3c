//! `path_edges`: the weighted edges of a Sankey diagram from a column of paths.
//!
//! ```sql
//! SELECT * FROM path_edges((<query returning one column of paths>))
//!   -> (step Int64, source Utf8, target Utf8, users Int64)
//! ```
//!
//! The query (a scalar subquery, hence the double parentheses) returns one column of string
//! lists, one path per row, typically `event_path` per user. Each pair of consecutive items is
//! an edge: `step` k joins item k to item k + 1 (1-based), and `users` counts the paths that
//! take that edge at that step. A path takes a given step once, so with one path per user,
//! `users` is a number of users. NULL paths and NULL items make no edges. Rows come in no
//! particular order: a chart wants `ORDER BY step, users DESC`.
//!
//! The edges are planned as an ordinary aggregate over the paths (unnest, group by), so the
//! subquery's plan and Cohort's operators work as they do anywhere else.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Builder, ListArray, StringBuilder, StructArray};
use arrow::buffer::OffsetBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Fields};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Column, plan_err};
use datafusion::datasource::ViewTable;
use datafusion::error::Result;
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlanBuilder, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion::prelude::{col, lit};

use crate::common::is_string;

pub const NAME: &str = "path_edges";
const USAGE: &str = "path_edges((SELECT event_path(ts, event, 5) FROM events GROUP BY user_id))";

/// Cohort's table functions, by name.
pub fn table_functions() -> Vec<(&'static str, Arc<dyn TableFunctionImpl>)> {
    vec![(NAME, Arc::new(PathEdges))]
}

#[derive(Debug)]
struct PathEdges;

impl TableFunctionImpl for PathEdges {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let [Expr::ScalarSubquery(subquery)] = args.exprs() else {
            return plan_err!(
                "{NAME} takes one query in parentheses, e.g. {USAGE}; got {} argument(s)",
                args.exprs().len()
            );
        };
        let paths = subquery.subquery.as_ref();
        let schema = paths.schema();
        if schema.fields().len() != 1 {
            return plan_err!(
                "{NAME}: the query must return one column of paths, got {} columns",
                schema.fields().len()
            );
        }
        let (qualifier, field) = schema.qualified_field(0);
        let item_type = match field.data_type() {
            DataType::List(item) | DataType::LargeList(item) | DataType::ListView(item) => {
                item.data_type().clone()
            }
            other => return plan_err!("{NAME}: a path is a list of strings, got {other}"),
        };
        if !is_string(&item_type) && item_type != DataType::Null {
            return plan_err!("{NAME}: a path is a list of strings, got a list of {item_type}");
        }
        let path = Expr::Column(Column::new(qualifier.cloned(), field.name()));
        let transitions = ScalarUDF::new_from_impl(Transitions::new());
        let edge = |name: &str| get_field(col("edge"), name).alias(name);
        let plan = LogicalPlanBuilder::from(paths.clone())
            .project(vec![transitions.call(vec![path]).alias("edge")])?
            .unnest_column("edge")?
            .project(vec![edge("step"), edge("source"), edge("target")])?
            .aggregate(
                vec![col("step"), col("source"), col("target")],
                vec![count(lit(1)).alias("users")],
            )?
            .build()?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}

fn edge_fields() -> Fields {
    Fields::from(vec![
        Field::new("step", DataType::Int64, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("target", DataType::Utf8, false),
    ])
}

fn edges_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(
        DataType::Struct(edge_fields()),
        false,
    )))
}

/// The edges of each path: `List<Struct<step, source, target>>`, empty for a NULL path. Not
/// registered: it exists for `path_edges`' plan.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Transitions {
    signature: Signature,
}

impl Transitions {
    fn new() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Transitions {
    fn name(&self) -> &str {
        "path_transitions"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(edges_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let paths = args.args[0].to_array(args.number_rows)?;
        let list_type = DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)));
        let paths = cast(&paths, &list_type)?;
        Ok(ColumnarValue::Array(transitions(paths.as_list::<i32>())?))
    }
}

fn transitions(paths: &ListArray) -> Result<ArrayRef> {
    let (mut steps, mut sources, mut targets) = (
        Int64Builder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut lengths = Vec::with_capacity(paths.len());
    for row in 0..paths.len() {
        let mut edges = 0;
        if paths.is_valid(row) {
            let path = paths.value(row);
            let items = path.as_string::<i32>();
            for k in 1..items.len() {
                if items.is_valid(k - 1) && items.is_valid(k) {
                    steps.append_value(k as i64);
                    sources.append_value(items.value(k - 1));
                    targets.append_value(items.value(k));
                    edges += 1;
                }
            }
        }
        lengths.push(edges);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(steps.finish()),
        Arc::new(sources.finish()),
        Arc::new(targets.finish()),
    ];
    let edges = StructArray::try_new(edge_fields(), columns, None)?;
    Ok(Arc::new(ListArray::try_new(
        Arc::new(Field::new_list_field(
            DataType::Struct(edge_fields()),
            false,
        )),
        OffsetBuffer::from_lengths(lengths),
        Arc::new(edges),
        None,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_items_are_numbered_edges() {
        let strings = arrow::array::StringArray::from(vec![
            Some("home"),
            Some("cart"),
            Some("buy"),
            Some("home"),
            None,
            Some("x"),
        ]);
        let paths = ListArray::new(
            Arc::new(Field::new_list_field(DataType::Utf8, true)),
            OffsetBuffer::from_lengths([3, 0, 1, 2]),
            Arc::new(strings),
            Some(vec![true, false, true, true].into()),
        );
        let edges = transitions(&paths).unwrap();
        let edges = edges.as_list::<i32>();
        assert_eq!(
            edges.offsets().iter().copied().collect::<Vec<_>>(),
            [0, 2, 2, 2, 2]
        );
        let rows = edges.values().as_struct();
        let targets = rows.column(2).as_string::<i32>();
        assert_eq!(targets.value(0), "cart");
        assert_eq!(targets.value(1), "buy");
    }
}
