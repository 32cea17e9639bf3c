//! Rewrites of PostgreSQL clients' statements, after `datafusion-pg-catalog`'s rules, for
//! what DataFusion cannot plan as written: array constructors from subqueries, LIKE with an
//! escape character, regproc literals and correlated scalar subqueries.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, CastKind, DataType, Expr as SqlExpr, Function, FunctionArg, FunctionArgExpr,
    FunctionArgumentClause, FunctionArgumentList, FunctionArguments, GroupByExpr, Ident,
    ObjectName, OrderBy, OrderByKind, Query, SelectItem, SetExpr, Statement, TableAlias,
    TableAliasColumnDef, TableFactor, UnaryOperator, Value as SqlValue, ValueWithSpan, VisitMut,
    VisitorMut, visit_expressions, visit_expressions_mut,
};

use datafusion::sql::sqlparser::dialect::{Dialect, GenericDialect, PostgreSqlDialect};
use datafusion::sql::sqlparser::parser::Parser;

use super::functions::{LIKE_PATTERN, PG_DATA_TYPE, PREFIX_ELEMENTS};

/// The rewrite applied before `datafusion-pg-catalog`'s, whose token blacklist replaces some
/// client queries by empty answers (Grafana's search-path lookup, which this makes
/// plannable): scalar functions in FROM as one-row tables. Returns whether `statement`
/// changed; an unchanged statement goes to the blacklist as the client wrote it.
pub(super) fn before_compatibility(statement: &mut Statement) -> bool {
    let mut functions = FunctionsInFrom {
        scalar: true,
        changed: false,
    };
    let _ = statement.visit(&mut functions);
    functions.changed
}

/// Functions in FROM as PostgreSQL plans them. `generate_series(1, 3) AS i` names its column
/// `i` (DataFusion: `value`), so it becomes `generate_series(1, 3) AS i(i)`; a scalar
/// function in FROM is a one-row table whose column is named by the alias, so
/// `string_to_array(x, ',') s` becomes `(SELECT string_to_array(x, ',') AS s) AS s`.
struct FunctionsInFrom {
    /// Rewrite scalar functions (before the compatibility rules), else name the columns of
    /// set-returning ones (after them).
    scalar: bool,
    changed: bool,
}

/// Set-returning functions whose one column PostgreSQL names after the table alias.
const ONE_COLUMN_TABLE_FUNCTIONS: &[&str] = &["generate_series", "generate_subscripts", "unnest"];
/// Array-valued scalar functions clients call in FROM.
const SCALAR_FUNCTIONS_IN_FROM: &[&str] = &[
    "string_to_array",
    "regexp_split_to_array",
    "current_schemas",
    "parse_ident",
];

impl VisitorMut for FunctionsInFrom {
    type Break = ();

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table {
            name,
            args: Some(args),
            alias: Some(alias),
            ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        let Some(function) = unqualified(name) else {
            return ControlFlow::Continue(());
        };
        if !alias.columns.is_empty() {
            return ControlFlow::Continue(());
        }
        if !self.scalar
            && ONE_COLUMN_TABLE_FUNCTIONS.contains(&function.as_str())
            && args.args.len() <= 3
        {
            if function == "unnest" && args.args.len() != 1 {
                return ControlFlow::Continue(());
            }
            alias.columns = vec![TableAliasColumnDef {
                name: alias.name.clone(),
                data_type: None,
            }];
            self.changed = true;
        } else if self.scalar && SCALAR_FUNCTIONS_IN_FROM.contains(&function.as_str()) {
            let arguments: Vec<String> = args.args.iter().map(ToString::to_string).collect();
            let select = format!("SELECT {name}({}) AS {}", arguments.join(", "), alias.name);
            let Some(subquery) = parse_query(&PostgreSqlDialect {}, &select) else {
                return ControlFlow::Continue(());
            };
            *factor = TableFactor::Derived {
                lateral: false,
                subquery,
                alias: Some(alias.clone()),
                sample: None,
            };
            self.changed = true;
        }
        ControlFlow::Continue(())
    }
}

/// Applies every rewrite to `statement`.
pub(super) fn rewrite(statement: &mut Statement) {
    let _ = statement.visit(&mut ArraySubqueries);
    let _ = statement.visit(&mut LikeEscapes);
    let _ = statement.visit(&mut RegprocNames);
    let _ = statement.visit(&mut GenerateSubscripts);
    let _ = statement.visit(&mut UserKeyword);
    let _ = statement.visit(&mut SubqueriesInOrderBy);
    let _ = statement.visit(&mut InSubqueriesInProjections {
        budget: IN_REWRITE_BUDGET_BYTES,
    });
    let _ = statement.visit(&mut InformationSchemaColumns);
    let _ = statement.visit(&mut FunctionsInFrom {
        scalar: false,
        changed: false,
    });
    let _ = statement.visit(&mut AggregateScalarSubqueries);
}

/// Rewrites PostgreSQL's array constructor from a subquery, `ARRAY(SELECT e FROM ... ORDER BY
/// o)`, to the scalar subquery `(SELECT array_agg(e ORDER BY o) FROM ...)`, which DataFusion
/// plans (psql's `\d+` builds its table options this way). One difference remains: over no rows
/// PostgreSQL gives an empty array, `array_agg` gives NULL. A subquery that groups, limits or
/// selects several columns is left alone and fails to plan as before.
struct ArraySubqueries;

impl VisitorMut for ArraySubqueries {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut SqlExpr) -> ControlFlow<()> {
        let SqlExpr::Function(function) = expr else {
            return ControlFlow::Continue(());
        };
        if !function.name.to_string().eq_ignore_ascii_case("array") {
            return ControlFlow::Continue(());
        }
        let FunctionArguments::Subquery(query) = &mut function.args else {
            return ControlFlow::Continue(());
        };
        let simple = query.limit_clause.is_none()
            && query.with.is_none()
            && matches!(query.body.as_ref(), SetExpr::Select(select)
                if select.projection.len() == 1
                    && select.distinct.is_none()
                    && select.having.is_none()
                    && matches!(&select.group_by, GroupByExpr::Expressions(keys, _) if keys.is_empty())
                    && matches!(select.projection[0],
                        SelectItem::UnnamedExpr(_) | SelectItem::ExprWithAlias { .. }));
        if !simple {
            return ControlFlow::Continue(());
        }
        if let Some(mapped) = map_over_unnest(query) {
            *expr = mapped;
            return ControlFlow::Continue(());
        }
        let mut query = query.clone();
        let order_by = query.order_by.take();
        let SetExpr::Select(select) = query.body.as_mut() else {
            unreachable!("checked above")
        };
        let item = match &mut select.projection[0] {
            SelectItem::UnnamedExpr(item) | SelectItem::ExprWithAlias { expr: item, .. } => item,
            _ => unreachable!("checked above"),
        };
        let element = std::mem::replace(item, SqlExpr::value(SqlValue::Null));
        let mut clauses = Vec::new();
        if let Some(OrderBy {
            kind: OrderByKind::Expressions(keys),
            ..
        }) = order_by
        {
            clauses.push(FunctionArgumentClause::OrderBy(keys));
        }
        select.projection[0] = SelectItem::UnnamedExpr(aggregate("array_agg", element, clauses));
        *expr = SqlExpr::Subquery(query);
        ControlFlow::Continue(())
    }
}

/// `x LIKE p ESCAPE '/'` (SQLAlchemy escapes its schema prefix this way) becomes
/// `x LIKE cohort_like_pattern(p, '/')`: DataFusion takes only the backslash as the escape
/// character, so the pattern is translated to backslash escapes.
struct LikeEscapes;

impl VisitorMut for LikeEscapes {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut SqlExpr) -> ControlFlow<()> {
        let (SqlExpr::Like {
            pattern,
            escape_char,
            ..
        }
        | SqlExpr::ILike {
            pattern,
            escape_char,
            ..
        }) = expr
        else {
            return ControlFlow::Continue(());
        };
        let Some(ValueWithSpan {
            value: SqlValue::SingleQuotedString(escape),
            ..
        }) = escape_char.as_ref()
        else {
            return ControlFlow::Continue(());
        };
        if escape == "\\" {
            return ControlFlow::Continue(());
        }
        let escape = SqlExpr::value(SqlValue::SingleQuotedString(escape.clone()));
        let original = std::mem::replace(pattern.as_mut(), SqlExpr::value(SqlValue::Null));
        **pattern = function(LIKE_PATTERN, vec![original, escape]);
        *escape_char = None;
        ControlFlow::Continue(())
    }
}

/// `'pg_catalog.array_in'::regproc` is a function's oid in PostgreSQL; the compatibility rules
/// turn it into `(SELECT oid FROM pg_catalog.pg_proc WHERE proname = '...')`. The catalog here
/// stores regproc columns (`pg_type.typinput`, `typoutput`, ...) as function names, so that
/// oid would be compared with a name and fail to cast (the JDBC driver's type cache does
/// `typinput = 'pg_catalog.array_in'::regproc`). The cast becomes the unqualified name.
struct RegprocNames;

const REGPROC_LOOKUP: &str = "SELECT oid FROM pg_catalog.pg_proc WHERE proname = ";

impl VisitorMut for RegprocNames {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut SqlExpr) -> ControlFlow<()> {
        let SqlExpr::Subquery(query) = expr else {
            return ControlFlow::Continue(());
        };
        if !query.to_string().starts_with(REGPROC_LOOKUP) {
            return ControlFlow::Continue(());
        }
        let SetExpr::Select(select) = query.body.as_ref() else {
            return ControlFlow::Continue(());
        };
        let Some(SqlExpr::BinaryOp { right, .. }) = &select.selection else {
            return ControlFlow::Continue(());
        };
        let SqlExpr::Value(ValueWithSpan {
            value: SqlValue::SingleQuotedString(name),
            ..
        }) = right.as_ref()
        else {
            return ControlFlow::Continue(());
        };
        let unqualified = name.rsplit('.').next().unwrap_or(name).to_string();
        *expr = SqlExpr::value(SqlValue::SingleQuotedString(unqualified));
        ControlFlow::Continue(())
    }
}

/// `ARRAY(SELECT e FROM unnest(a) x)` over a column `a` of the outer query (psql's `\d+`
/// unnests the toast table's options) is a correlation DataFusion cannot plan inside a table
/// function. The two element maps catalog queries use need no subquery: `x` itself is `a`,
/// and `'prefix' || x` is `cohort_prefix_elements(a, 'prefix')`. Other maps are left to the
/// aggregated form.
fn map_over_unnest(query: &Query) -> Option<SqlExpr> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    if query.order_by.is_some() || select.selection.is_some() || select.from.len() != 1 {
        return None;
    }
    let from = &select.from[0];
    if !from.joins.is_empty() {
        return None;
    }
    let (array, alias) = match &from.relation {
        TableFactor::Table {
            name,
            args: Some(args),
            alias,
            ..
        } if unqualified(name).as_deref() == Some("unnest") && args.args.len() == 1 => {
            let FunctionArg::Unnamed(FunctionArgExpr::Expr(array)) = &args.args[0] else {
                return None;
            };
            (array.clone(), alias.as_ref()?)
        }
        TableFactor::UNNEST {
            array_exprs,
            alias: Some(alias),
            with_offset: false,
            with_ordinality: false,
            ..
        } if array_exprs.len() == 1 => (array_exprs[0].clone(), alias),
        _ => return None,
    };
    // `unnest(a) x` names the element `x`; `unnest(a) AS t(x)` names it `x` too.
    let element = match alias.columns.as_slice() {
        [] => alias.name.clone(),
        [column] => column.name.clone(),
        _ => return None,
    };
    let is_element = |expr: &SqlExpr| matches!(expr, SqlExpr::Identifier(ident) if ident.value.eq_ignore_ascii_case(&element.value));
    let body = match &select.projection[0] {
        SelectItem::UnnamedExpr(body) | SelectItem::ExprWithAlias { expr: body, .. } => body,
        _ => return None,
    };
    match body {
        body if is_element(body) => Some(array),
        SqlExpr::BinaryOp {
            left,
            op: BinaryOperator::StringConcat,
            right,
        } if is_element(right)
            && matches!(
                left.as_ref(),
                SqlExpr::Value(ValueWithSpan {
                    value: SqlValue::SingleQuotedString(_),
                    ..
                })
            ) =>
        {
            Some(function(PREFIX_ELEMENTS, vec![array, *left.clone()]))
        }
        _ => None,
    }
}

/// Rewrites a scalar subquery that selects one plain expression, `(SELECT e FROM ... WHERE
/// <correlated>)`, to `(SELECT first_value(e) FROM ...)`: DataFusion plans a correlated scalar
/// subquery only when it is aggregated, and the catalog queries of SQLAlchemy and Superset
/// (column defaults, identity options, collations) are written this way. PostgreSQL would fail
/// if such a subquery returned several rows; here it gives one of them.
struct AggregateScalarSubqueries;

const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "first_value",
    "last_value",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "json_agg",
    "every",
];

impl VisitorMut for AggregateScalarSubqueries {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut SqlExpr) -> ControlFlow<()> {
        let SqlExpr::Subquery(query) = expr else {
            return ControlFlow::Continue(());
        };
        let SetExpr::Select(select) = query.body.as_mut() else {
            return ControlFlow::Continue(());
        };
        let plain = matches!(&select.group_by, GroupByExpr::Expressions(keys, _) if keys.is_empty())
            && select.having.is_none()
            && query.limit_clause.is_none()
            && select.projection.len() == 1;
        if !plain {
            return ControlFlow::Continue(());
        }
        let item = match &mut select.projection[0] {
            SelectItem::UnnamedExpr(item) | SelectItem::ExprWithAlias { expr: item, .. } => item,
            _ => return ControlFlow::Continue(()),
        };
        // `count(*) - count(x)` is aggregated too.
        let aggregated = visit_expressions(item, |e| match e {
            SqlExpr::Function(f)
                if AGGREGATES
                    .iter()
                    .any(|name| f.name.to_string().eq_ignore_ascii_case(name)) =>
            {
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        })
        .is_break();
        if !aggregated {
            let inner = std::mem::replace(item, SqlExpr::value(SqlValue::Null));
            *item = aggregate("first_value", inner, Vec::new());
        }
        ControlFlow::Continue(())
    }
}

fn aggregate(name: &str, argument: SqlExpr, clauses: Vec<FunctionArgumentClause>) -> SqlExpr {
    let mut call = function(name, vec![argument]);
    if let SqlExpr::Function(Function {
        args: FunctionArguments::List(list),
        ..
    }) = &mut call
    {
        list.clauses = clauses;
    }
    call
}

/// `generate_subscripts(a, dim)` (SQLAlchemy numbers the columns of a key with it beside
/// `unnest(a)`) becomes `unnest(range(1, cardinality(a) + 1))`, which DataFusion zips with
/// the other `unnest` of the select list as PostgreSQL does. Cohort's arrays have one
/// dimension, so `dim` is 1.
struct GenerateSubscripts;

impl VisitorMut for GenerateSubscripts {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut SqlExpr) -> ControlFlow<()> {
        let SqlExpr::Function(call) = expr else {
            return ControlFlow::Continue(());
        };
        let named = unqualified(&call.name).as_deref() == Some("generate_subscripts");
        let FunctionArguments::List(list) = &call.args else {
            return ControlFlow::Continue(());
        };
        let [FunctionArg::Unnamed(FunctionArgExpr::Expr(array)), _] = list.args.as_slice() else {
            return ControlFlow::Continue(());
        };
        if !named {
            return ControlFlow::Continue(());
        }
        let length = SqlExpr::Cast {
            kind: CastKind::Cast,
            expr: Box::new(function("cardinality", vec![array.clone()])),
            data_type: DataType::BigInt(None),
            array: false,
            format: None,
        };
        let one = || SqlExpr::value(SqlValue::Number("1".into(), false));
        let end = SqlExpr::BinaryOp {
            left: Box::new(length),
            op: BinaryOperator::Plus,
            right: Box::new(one()),
        };
        *expr = function("unnest", vec![function("range", vec![one(), end])]);
        ControlFlow::Continue(())
    }
}

/// PostgreSQL's `user` (the keyword, as in Grafana's search-path lookup) is `current_user`;
/// DataFusion's SQL would read it as a column, so it becomes `session_user`, the name the
/// compatibility rules give `current_user`.
struct UserKeyword;

impl VisitorMut for UserKeyword {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut SqlExpr) -> ControlFlow<()> {
        if let SqlExpr::Function(call) = expr
            && matches!(call.args, FunctionArguments::None)
            && call.name.0.len() == 1
            && call.name.to_string().eq_ignore_ascii_case("user")
        {
            call.name = ObjectName::from(vec![Ident::new("session_user")]);
        }
        ControlFlow::Continue(())
    }
}

/// DataFusion plans a subquery in a projection but not in ORDER BY (Grafana sorts the tables
/// on the search path first with `ORDER BY CASE WHEN schema IN (SELECT ...) ...`). Such a key
/// is computed as a hidden column: `SELECT * EXCLUDE (__cohort_order_1) FROM (SELECT ...,
/// key AS __cohort_order_1 FROM ...) AS __cohort_sorted ORDER BY __cohort_order_1, ...`.
/// Only when the other keys name output columns (by position or alias), so that they mean
/// the same outside, and the select is not DISTINCT (a hidden column would change that).
struct SubqueriesInOrderBy;

const HIDDEN_ORDER: &str = "__cohort_order_";

impl VisitorMut for SubqueriesInOrderBy {
    type Break = ();

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        let Some(OrderBy {
            kind: OrderByKind::Expressions(keys),
            ..
        }) = &query.order_by
        else {
            return ControlFlow::Continue(());
        };
        let has_subquery = |expr: &SqlExpr| {
            visit_expressions(expr, |e| match e {
                SqlExpr::Subquery(_) | SqlExpr::InSubquery { .. } | SqlExpr::Exists { .. } => {
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            })
            .is_break()
        };
        if !keys.iter().any(|key| has_subquery(&key.expr)) {
            return ControlFlow::Continue(());
        }
        let SetExpr::Select(select) = query.body.as_ref() else {
            return ControlFlow::Continue(());
        };
        let mut aliases = Vec::new();
        for item in &select.projection {
            match item {
                SelectItem::ExprWithAlias { alias, .. } => aliases.push(alias.value.clone()),
                SelectItem::UnnamedExpr(_) => {}
                _ => return ControlFlow::Continue(()),
            }
        }
        let names_output = |expr: &SqlExpr| match expr {
            SqlExpr::Value(ValueWithSpan {
                value: SqlValue::Number(..),
                ..
            }) => true,
            SqlExpr::Identifier(ident) => aliases.iter().any(|alias| {
                alias == &ident.value
                    || (ident.quote_style.is_none() && alias.eq_ignore_ascii_case(&ident.value))
            }),
            _ => false,
        };
        if select.distinct.is_some()
            || !keys
                .iter()
                .all(|key| has_subquery(&key.expr) || names_output(&key.expr))
        {
            return ControlFlow::Continue(());
        }
        let mut inner = query.clone();
        inner.order_by = None;
        inner.limit_clause = None;
        inner.fetch = None;
        let mut outer_keys = Vec::new();
        let mut hidden = Vec::new();
        let SetExpr::Select(inner_select) = inner.body.as_mut() else {
            unreachable!("checked above")
        };
        for key in keys {
            let mut key = key.clone();
            if has_subquery(&key.expr) {
                let name = Ident::new(format!("{HIDDEN_ORDER}{}", hidden.len() + 1));
                inner_select.projection.push(SelectItem::ExprWithAlias {
                    expr: std::mem::replace(&mut key.expr, SqlExpr::Identifier(name.clone())),
                    alias: name.clone(),
                });
                hidden.push(name.value);
            }
            outer_keys.push(key);
        }
        // PostgreSQL's dialect has no `* EXCLUDE`; the engine plans it (and re-parses in the
        // generic dialect).
        let outer = format!(
            "SELECT * EXCLUDE ({}) FROM (SELECT 1) AS __cohort_sorted",
            hidden.join(", ")
        );
        let Some(mut outer) = parse_query(&GenericDialect {}, &outer) else {
            return ControlFlow::Continue(());
        };
        let SetExpr::Select(outer_select) = outer.body.as_mut() else {
            return ControlFlow::Continue(());
        };
        let Some(TableFactor::Derived { subquery, .. }) =
            outer_select.from.first_mut().map(|from| &mut from.relation)
        else {
            return ControlFlow::Continue(());
        };
        **subquery = inner;
        outer.order_by = Some(OrderBy {
            kind: OrderByKind::Expressions(outer_keys),
            interpolate: None,
        });
        outer.limit_clause = query.limit_clause.take();
        outer.fetch = query.fetch.take();
        *query = *outer;
        ControlFlow::Continue(())
    }
}

/// DataFusion plans `x IN (SELECT ...)` in a filter but not in a SELECT list (Grafana's table
/// list computes `schema IN (<search path>)` in a CASE), where scalar subqueries do plan. So
/// there it becomes scalar subqueries with IN's three-valued answer: false over no rows, true
/// on a match, NULL when `x` is NULL or the subquery gave a NULL, else false.
///
/// Each rewrite writes the subquery three times, so IN nested in IN would grow the statement
/// threefold per level, after its size and depth were checked: the SQL a statement's rewrites
/// may add is bounded, and an IN beyond the bound is left to fail planning as written.
struct InSubqueriesInProjections {
    /// Bytes of SQL the remaining rewrites of this statement may still add.
    budget: usize,
}

/// Catalog queries need a few KiB; a hostile statement must not get to megabytes.
pub(super) const IN_REWRITE_BUDGET_BYTES: usize = 256 * 1024;

impl VisitorMut for InSubqueriesInProjections {
    type Break = ();

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        let SetExpr::Select(select) = query.body.as_mut() else {
            return ControlFlow::Continue(());
        };
        for item in &mut select.projection {
            let (SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. }) = item
            else {
                continue;
            };
            let _ = visit_expressions_mut(expr, |e| {
                if let SqlExpr::InSubquery {
                    expr: needle,
                    subquery,
                    negated,
                } = e
                    && let Some(membership) =
                        membership_by_scalar_subqueries(needle, subquery, &mut self.budget)
                {
                    *e = if *negated {
                        SqlExpr::UnaryOp {
                            op: UnaryOperator::Not,
                            expr: Box::new(SqlExpr::Nested(Box::new(membership))),
                        }
                    } else {
                        membership
                    };
                }
                ControlFlow::<()>::Continue(())
            });
        }
        ControlFlow::Continue(())
    }
}

fn membership_by_scalar_subqueries(
    needle: &SqlExpr,
    subquery: &Query,
    budget: &mut usize,
) -> Option<SqlExpr> {
    let values = format!("({subquery}) AS __cohort_in(value)");
    let needle_text = needle.to_string();
    let added = 3 * values.len() + 2 * needle_text.len();
    *budget = budget.checked_sub(added)?;
    let needle = needle_text;
    let sql = format!(
        "SELECT CASE \
         WHEN (SELECT count(*) FROM {values}) = 0 THEN false \
         WHEN array_has((SELECT array_agg(value) FROM {values}), {needle}) THEN true \
         WHEN ({needle}) IS NULL OR (SELECT count(*) - count(value) FROM {values}) > 0 THEN NULL \
         ELSE false END"
    );
    let query = parse_query(&PostgreSqlDialect {}, &sql)?;
    let SetExpr::Select(select) = *query.body else {
        return None;
    };
    match select.projection.into_iter().next()? {
        SelectItem::UnnamedExpr(expr) => Some(expr),
        _ => None,
    }
}

/// `information_schema.columns` as PostgreSQL's: `data_type` named as PostgreSQL names it
/// (`bigint`, not `Int64`: Grafana and DBeaver choose time and number columns by it) and the
/// cardinal numbers as integers. The table becomes a derived table of DataFusion's, under the
/// alias the client gave or `columns`.
struct InformationSchemaColumns;

impl VisitorMut for InformationSchemaColumns {
    type Break = ();

    // After the children: the derived table's own reference to the table is not revisited.
    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table {
            name,
            args: None,
            alias,
            ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        let parts: Vec<String> = name
            .0
            .iter()
            .filter_map(|part| part.as_ident())
            .map(|ident| ident.value.to_ascii_lowercase())
            .collect();
        let [.., schema, table] = parts.as_slice() else {
            return ControlFlow::Continue(());
        };
        if schema != "information_schema" || table != "columns" || parts.len() != name.0.len() {
            return ControlFlow::Continue(());
        }
        let select = format!(
            "SELECT table_catalog, table_schema, table_name, column_name, \
             CAST(ordinal_position AS INT) AS ordinal_position, column_default, is_nullable, \
             {PG_DATA_TYPE}(data_type) AS data_type, \
             CAST(character_maximum_length AS INT) AS character_maximum_length, \
             CAST(character_octet_length AS INT) AS character_octet_length, \
             CAST(numeric_precision AS INT) AS numeric_precision, \
             CAST(numeric_precision_radix AS INT) AS numeric_precision_radix, \
             CAST(numeric_scale AS INT) AS numeric_scale, \
             CAST(datetime_precision AS INT) AS datetime_precision, interval_type \
             FROM {name}"
        );
        let Some(subquery) = parse_query(&PostgreSqlDialect {}, &select) else {
            return ControlFlow::Continue(());
        };
        let alias = alias.take().unwrap_or_else(|| TableAlias {
            explicit: true,
            name: Ident::new("columns"),
            at: None,
            columns: vec![],
        });
        *factor = TableFactor::Derived {
            lateral: false,
            subquery,
            alias: Some(alias),
            sample: None,
        };
        ControlFlow::Continue(())
    }
}

/// The one query of `sql`, a template a rewrite fills with the client's parts (None if those
/// make it unparsable, and the rewrite leaves the statement as it was).
fn parse_query(dialect: &dyn Dialect, sql: &str) -> Option<Box<Query>> {
    match Parser::parse_sql(dialect, sql).ok()?.pop()? {
        Statement::Query(query) => Some(query),
        _ => None,
    }
}

/// The last part of `name`, lower-cased (`pg_catalog.unnest` is `unnest`).
fn unqualified(name: &ObjectName) -> Option<String> {
    name.0
        .last()
        .and_then(|part| part.as_ident())
        .map(|ident| ident.value.to_ascii_lowercase())
}

/// A call of the function `name` with `args`.
pub(super) fn function(name: &str, args: Vec<SqlExpr>) -> SqlExpr {
    SqlExpr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|arg| FunctionArg::Unnamed(FunctionArgExpr::Expr(arg)))
                .collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}
