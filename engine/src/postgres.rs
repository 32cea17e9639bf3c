//! SQL from PostgreSQL clients (psql, JDBC, SQLAlchemy, BI tools): parsed in PostgreSQL's
//! dialect, checked like any statement before anything recursive touches it, then rewritten by
//! `datafusion-pg-catalog` into SQL DataFusion plans (`::regclass` casts, `OPERATOR(...)`,
//! catalog queries drivers send at connect), and planned in a session that has `pg_catalog`.

use std::ops::ControlFlow;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::{Int32Array, StringBuilder};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::CatalogProviderList;
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, create_udf,
};
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentClause,
    FunctionArgumentList, FunctionArguments, GroupByExpr, Ident, LambdaFunction,
    LambdaFunctionParameter, LambdaSyntax, ObjectName, OneOrManyWithParens, OrderBy, OrderByKind,
    Query, SelectItem, SetExpr, Statement, TableFactor, Value as SqlValue, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_pg_catalog::pg_catalog::catalog_info::CatalogInfo;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::generate_series_arg_coercion::CoerceIntArgsToBigInt;
use datafusion_pg_catalog::pg_catalog::oid_type_planner::PgOidTypePlanner;
use datafusion_pg_catalog::pg_catalog::{
    self as pg, ArrowTable, PgCatalogSchemaProvider, PgCatalogStaticTables, array_bounds_udf,
    format_type, has_privilege_udf, pg_get_expr_udf, quote_ident_udf,
};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

use crate::depth::{check_sql_statement, on_planning_stack};
use crate::error::{EngineError, Result};
use crate::limits::StatementLimits;
use crate::tables::CATALOG;

/// Parses PostgreSQL clients' SQL. Build one and share it: it prepares its rewrite rules once.
#[derive(Debug, Default)]
pub struct PostgresParser {
    compatibility: PostgresCompatibilityParser,
}

impl PostgresParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// The statements of `sql`, rewritten for DataFusion. Size and nesting are checked before
    /// parsing and the depth of every parsed statement before the rewrite rules walk it, all on
    /// the planning stack, so a hostile statement is refused like on any other endpoint.
    pub fn parse(&self, sql: &str, limits: &StatementLimits) -> Result<Vec<Statement>> {
        limits.check_size(sql)?;
        limits.check(sql)?;
        on_planning_stack(|| {
            let parsed = Parser::parse_sql(&PostgreSqlDialect {}, sql)
                .map_err(|e| EngineError::InvalidStatement(e.to_string()))?;
            for statement in &parsed {
                check_sql_statement(statement, limits.max_depth)?;
            }
            drop(parsed);
            let mut statements = self
                .compatibility
                .parse(sql)
                .map_err(|e| EngineError::InvalidStatement(e.to_string()))?;
            for statement in &mut statements {
                let _ = statement.visit(&mut ArraySubqueries);
                let _ = statement.visit(&mut AggregateScalarSubqueries);
            }
            Ok(statements)
        })
    }
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

/// `ARRAY(SELECT e FROM unnest(a) x)` maps `e` over the elements of `a`: as
/// `array_transform(a, x -> e)` it needs no subquery, which matters when `a` is a column of
/// the outer query (psql's `\d+` unnests the toast table's options), a correlation DataFusion
/// cannot plan inside a table function.
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
        } if name
            .0
            .last()
            .and_then(|part| part.as_ident())
            .is_some_and(|ident| ident.value.eq_ignore_ascii_case("unnest"))
            && args.args.len() == 1 =>
        {
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
    let body = match &select.projection[0] {
        SelectItem::UnnamedExpr(body) | SelectItem::ExprWithAlias { expr: body, .. } => body,
        _ => return None,
    };
    let lambda = SqlExpr::Lambda(LambdaFunction {
        params: OneOrManyWithParens::One(LambdaFunctionParameter {
            name: element,
            data_type: None,
        }),
        body: Box::new(body.clone()),
        syntax: LambdaSyntax::Arrow,
    });
    Some(SqlExpr::Function(Function {
        name: ObjectName::from(vec![Ident::new("array_transform")]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: vec![
                FunctionArg::Unnamed(FunctionArgExpr::Expr(array)),
                FunctionArg::Unnamed(FunctionArgExpr::Expr(lambda)),
            ],
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    }))
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
        let aggregated = matches!(item, SqlExpr::Function(f)
            if AGGREGATES.iter().any(|name| f.name.to_string().eq_ignore_ascii_case(name)));
        if !aggregated {
            let inner = std::mem::replace(item, SqlExpr::value(SqlValue::Null));
            *item = aggregate("first_value", inner, Vec::new());
        }
        ControlFlow::Continue(())
    }
}

fn aggregate(name: &str, argument: SqlExpr, clauses: Vec<FunctionArgumentClause>) -> SqlExpr {
    SqlExpr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(argument))],
            clauses,
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

/// `pg_catalog` for query sessions: its tables (one provider shared by every session, so a
/// table keeps its oid from one statement to the next, as psql's `\d` needs) and the
/// functions drivers call at connect (`current_schema()`, `pg_get_userbyid`, `format_type`,
/// `version()`, ...). The catalog's static tables are decoded once, here, not per statement.
pub(crate) struct PgCatalog {
    schema: Arc<PgCatalogSchemaProvider<LatestCatalogs, EmptyContextProvider>>,
    latest: LatestCatalogs,
    functions: Vec<ScalarUDF>,
    keywords: Arc<ArrowTable>,
}

impl std::fmt::Debug for PgCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCatalog").finish_non_exhaustive()
    }
}

/// What PostgreSQL clients read as the server's version (`SELECT version()`).
pub const VERSION: &str = concat!(
    "PostgreSQL 15.0 (Cohort ",
    env!("CARGO_PKG_VERSION"),
    ") on x86_64-pc-linux-gnu"
);

impl PgCatalog {
    pub(crate) fn new() -> Result<Self> {
        let static_tables = Arc::new(PgCatalogStaticTables::try_new()?);
        let latest = LatestCatalogs::default();
        let schema = Arc::new(PgCatalogSchemaProvider::try_new(
            latest.clone(),
            Arc::clone(&static_tables),
            EmptyContextProvider,
        )?);
        let privilege = has_privilege_udf::create_has_privilege_udf;
        let functions = vec![
            pg::create_current_database_udf(CATALOG),
            pg::create_current_schema_udf(),
            pg::create_current_schemas_udf(),
            pg::create_pg_get_userbyid_udf(),
            privilege("has_table_privilege"),
            privilege("has_schema_privilege"),
            privilege("has_database_privilege"),
            privilege("has_any_column_privilege"),
            pg::create_pg_table_is_visible(),
            format_type::create_format_type_udf(),
            pg::create_session_user_udf(),
            pg_get_expr_udf::create_pg_get_expr_udf(),
            pg::create_pg_get_partkeydef_udf(),
            pg::create_pg_relation_is_publishable_udf(),
            pg::create_pg_get_statisticsobjdef_columns_udf(),
            pg::create_pg_encoding_to_char_udf(),
            pg::create_pg_backend_pid_udf(),
            pg::create_pg_relation_size_udf(),
            pg::create_pg_total_relation_size_udf(),
            pg::create_pg_stat_get_numscans(),
            pg::create_pg_get_constraintdef(),
            pg::create_pg_get_partition_ancestors_udf(),
            quote_ident_udf::create_quote_ident_udf(),
            quote_ident_udf::create_parse_ident_udf(),
            array_bounds_udf::create_array_upper_udf(),
            array_bounds_udf::create_array_lower_udf(),
            version_udf(),
            to_regtype_udf(),
            pg_get_serial_sequence_udf(),
            always_visible_udf("pg_collation_is_visible"),
            always_visible_udf("pg_type_is_visible"),
            json_build_object_udf(),
        ];
        Ok(Self {
            schema,
            latest,
            functions,
            keywords: Arc::clone(&static_tables.pg_get_keywords),
        })
    }

    /// Adds `pg_catalog` to a query session.
    pub(crate) fn install(&self, ctx: &SessionContext) -> Result<()> {
        self.latest.set(Arc::clone(ctx.state().catalog_list()));
        let catalog = ctx.catalog(CATALOG).ok_or_else(|| {
            EngineError::Config(format!("the query session has no catalog '{CATALOG}'"))
        })?;
        catalog.register_schema("pg_catalog", Arc::clone(&self.schema) as _)?;
        for function in &self.functions {
            ctx.register_udf(function.clone());
        }
        ctx.register_udtf("pg_get_keywords", Arc::clone(&self.keywords) as _);
        {
            // Oid alias types (`regclass`, ...) parse as int4 casts.
            let state = ctx.state_ref();
            let existing = state.read().clone();
            *state.write() = SessionStateBuilder::new_from_existing(existing)
                .with_type_planner(Arc::new(PgOidTypePlanner))
                .build();
        }
        // `generate_series(1, array_upper(...))`: int4 arguments widened to the int8 the
        // table functions take (wrapping Cohort's bounded ones, whose limits stay).
        CoerceIntArgsToBigInt::widen(ctx);
        Ok(())
    }
}

fn version_udf() -> ScalarUDF {
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|_: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                VERSION.to_string(),
            ))))
        }),
    )
}

/// `to_regtype(name)`: the oid of a built-in type by name, NULL for any other (psycopg and
/// SQLAlchemy look up optional types such as `hstore` this way at connect).
fn to_regtype_udf() -> ScalarUDF {
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let names = ColumnarValue::values_to_arrays(args)?;
            let names = datafusion::common::cast::as_string_array(&names[0])?;
            let oids: Int32Array = names
                .iter()
                .map(|name| name.and_then(builtin_type_oid))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(oids)))
        }),
    )
}

fn builtin_type_oid(name: &str) -> Option<i32> {
    let name = name.trim().trim_matches('"').to_ascii_lowercase();
    let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
    Some(match name {
        "bool" | "boolean" => 16,
        "bytea" => 17,
        "int8" | "bigint" => 20,
        "int2" | "smallint" => 21,
        "int4" | "integer" | "int" => 23,
        "text" => 25,
        "oid" => 26,
        "json" => 114,
        "float4" | "real" => 700,
        "float8" | "double precision" => 701,
        "varchar" | "character varying" => 1043,
        "date" => 1082,
        "time" => 1083,
        "timestamp" | "timestamp without time zone" => 1114,
        "timestamptz" | "timestamp with time zone" => 1184,
        "interval" => 1186,
        "numeric" | "decimal" => 1700,
        "uuid" => 2950,
        "jsonb" => 3802,
        _ => return None,
    })
}

/// `pg_get_serial_sequence(table, column)`: always NULL, Cohort has no sequences (SQLAlchemy
/// asks while reflecting identity columns).
fn pg_get_serial_sequence_udf() -> ScalarUDF {
    create_udf(
        "pg_get_serial_sequence",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)))),
    )
}

/// `pg_collation_is_visible(oid)`, `pg_type_is_visible(oid)`: true, every collation and type
/// is a built-in one, in `pg_catalog`, which is always on the search path.
fn always_visible_udf(name: &str) -> ScalarUDF {
    create_udf(
        name,
        vec![DataType::Int32],
        DataType::Boolean,
        Volatility::Immutable,
        Arc::new(|_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))),
    )
}

fn json_build_object_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(JsonBuildObject::default())
}

/// `json_build_object(key, value, ...)`: a JSON object as text, keys as text, values as JSON
/// numbers, booleans, strings or null.
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: Signature,
}

impl Default for JsonBuildObject {
    fn default() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        if !args.args.len().is_multiple_of(2) {
            return Err(DataFusionError::Plan(
                "json_build_object takes key/value pairs: an even number of arguments".into(),
            ));
        }
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let mut objects = StringBuilder::new();
        for row in 0..args.number_rows {
            let mut object = serde_json::Map::new();
            for pair in arrays.chunks(2) {
                let key = ScalarValue::try_from_array(&pair[0], row)?;
                let value = ScalarValue::try_from_array(&pair[1], row)?;
                object.insert(scalar_text(&key), scalar_json(&value));
            }
            objects.append_value(serde_json::Value::Object(object).to_string());
        }
        Ok(ColumnarValue::Array(Arc::new(objects.finish())))
    }
}

fn scalar_text(value: &ScalarValue) -> String {
    match value {
        ScalarValue::Utf8(Some(text))
        | ScalarValue::LargeUtf8(Some(text))
        | ScalarValue::Utf8View(Some(text)) => text.clone(),
        other => other.to_string(),
    }
}

fn scalar_json(value: &ScalarValue) -> serde_json::Value {
    use serde_json::Value;
    if value.is_null() {
        return Value::Null;
    }
    match value {
        ScalarValue::Boolean(Some(b)) => Value::Bool(*b),
        ScalarValue::Int8(Some(v)) => Value::from(*v),
        ScalarValue::Int16(Some(v)) => Value::from(*v),
        ScalarValue::Int32(Some(v)) => Value::from(*v),
        ScalarValue::Int64(Some(v)) => Value::from(*v),
        ScalarValue::UInt8(Some(v)) => Value::from(*v),
        ScalarValue::UInt16(Some(v)) => Value::from(*v),
        ScalarValue::UInt32(Some(v)) => Value::from(*v),
        ScalarValue::UInt64(Some(v)) => Value::from(*v),
        ScalarValue::Float32(Some(v)) => Value::from(f64::from(*v)),
        ScalarValue::Float64(Some(v)) => Value::from(*v),
        other => Value::String(scalar_text(other)),
    }
}

/// The catalogs of the latest query session that installed `pg_catalog`: every session has the
/// same tables, so the shared catalog provider may describe any of them.
#[derive(Debug, Clone, Default)]
struct LatestCatalogs {
    inner: Arc<RwLock<Option<Arc<dyn CatalogProviderList>>>>,
}

impl LatestCatalogs {
    fn set(&self, catalogs: Arc<dyn CatalogProviderList>) {
        *self.inner.write().expect("catalogs lock") = Some(catalogs);
    }

    fn get(&self) -> DfResult<Arc<dyn CatalogProviderList>> {
        self.inner
            .read()
            .expect("catalogs lock")
            .clone()
            .ok_or_else(|| DataFusionError::Internal("pg_catalog read before any session".into()))
    }
}

#[async_trait]
impl CatalogInfo for LatestCatalogs {
    async fn catalog_names(&self) -> DfResult<Vec<String>> {
        let mut names = CatalogInfo::catalog_names(&self.get()?).await?;
        names.sort();
        Ok(names)
    }

    async fn schema_names(&self, catalog: &str) -> DfResult<Option<Vec<String>>> {
        let names = CatalogInfo::schema_names(&self.get()?, catalog).await?;
        Ok(names.map(|mut names| {
            names.sort();
            names
        }))
    }

    async fn table_names(&self, catalog: &str, schema: &str) -> DfResult<Option<Vec<String>>> {
        let names = CatalogInfo::table_names(&self.get()?, catalog, schema).await?;
        Ok(names.map(|mut names| {
            names.sort();
            names
        }))
    }

    async fn table_schema(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> DfResult<Option<SchemaRef>> {
        CatalogInfo::table_schema(&self.get()?, catalog, schema, table).await
    }

    async fn table_type(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> DfResult<Option<TableType>> {
        CatalogInfo::table_type(&self.get()?, catalog, schema, table).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let statements = PostgresParser::new()
            .parse(sql, &StatementLimits::default())
            .unwrap();
        statements
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[test]
    fn deep_statements_are_refused_before_the_rewrite_rules_walk_them() {
        let limits = StatementLimits::default();
        let parser = PostgresParser::new();
        for sql in [
            format!("SELECT 1{}", "::BIGINT".repeat(120_000)),
            format!("SELECT 1{}", " UNION ALL SELECT 1".repeat(40_000)),
        ] {
            let error = parser.parse(&sql, &limits).unwrap_err();
            assert!(matches!(error, EngineError::LimitExceeded(_)), "{error}");
        }
        let too_long = format!("SELECT '{}'", "x".repeat(limits.max_sql_bytes));
        assert!(matches!(
            parser.parse(&too_long, &limits),
            Err(EngineError::LimitExceeded(_))
        ));
    }

    #[test]
    fn postgres_syntax_is_rewritten_for_datafusion() {
        assert_eq!(rewritten("SELECT 1; SELECT 2"), "SELECT 1; SELECT 2");
        let operator = rewritten(
            "SELECT relname FROM pg_class WHERE relname OPERATOR(pg_catalog.~) '^events$'",
        );
        assert!(!operator.contains("OPERATOR"), "{operator}");
        assert!(operator.contains("relname ~ '^events$'"), "{operator}");
    }

    #[test]
    fn plain_scalar_subqueries_are_aggregated_and_aggregated_ones_kept() {
        // SQLAlchemy's collation check: a correlated scalar subquery inside an expression.
        let sql = rewritten(
            "SELECT CASE WHEN (SELECT t.typcollation FROM pg_type t WHERE t.oid = a.atttypid) \
             != a.attcollation THEN 1 END AS c, \
             (SELECT count(*) FROM pg_type t WHERE t.oid = a.atttypid) > 0 AS n \
             FROM pg_attribute a",
        );
        assert!(sql.contains("first_value(t.typcollation)"), "{sql}");
        assert!(sql.contains("(SELECT count(*) FROM"), "{sql}");
        assert!(!sql.contains("first_value(count"), "{sql}");
    }

    #[test]
    fn array_subqueries_become_aggregated_subqueries() {
        // psql's `\d+`: table options joined with the toast table's.
        let sql = rewritten(
            "SELECT array_to_string(c.reloptions || array(select 'toast.' || x \
             from pg_catalog.unnest(tc.reloptions) x), ', ') FROM pg_class c, pg_class tc",
        );
        assert!(
            sql.contains("array_transform(tc.reloptions, x -> 'toast.' || x)"),
            "{sql}"
        );
        let sql =
            rewritten("SELECT ARRAY(SELECT upper(n) FROM unnest(c.options) AS t(n) WHERE n <> '')");
        assert!(sql.contains("(SELECT array_agg(upper(n)) FROM"), "{sql}");
        let sql = rewritten("SELECT ARRAY(SELECT relname FROM pg_class ORDER BY oid DESC)");
        assert!(
            sql.contains("(SELECT array_agg(relname ORDER BY oid DESC) FROM pg_catalog.pg_class)"),
            "{sql}"
        );
        // Several columns: not an array PostgreSQL would build either; left for the planner.
        let sql = rewritten("SELECT ARRAY(SELECT relname, oid FROM pg_class)");
        assert!(sql.contains("ARRAY(SELECT relname, oid"), "{sql}");
    }

    #[test]
    fn builtin_types_resolve_by_name() {
        assert_eq!(builtin_type_oid("int4"), Some(23));
        assert_eq!(builtin_type_oid("pg_catalog.timestamptz"), Some(1184));
        assert_eq!(builtin_type_oid("hstore"), None);
    }

    #[test]
    fn json_values_keep_their_types() {
        use serde_json::Value;
        assert_eq!(scalar_json(&ScalarValue::Int64(Some(3))), Value::from(3));
        assert_eq!(
            scalar_json(&ScalarValue::Boolean(Some(true))),
            Value::Bool(true)
        );
        assert_eq!(scalar_json(&ScalarValue::Utf8(None)), Value::Null);
        assert_eq!(
            scalar_json(&ScalarValue::Utf8(Some("a".into()))),
            Value::String("a".into())
        );
    }
}
