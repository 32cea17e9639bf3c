//! SQL from PostgreSQL clients (psql, JDBC, SQLAlchemy, BI tools): parsed in PostgreSQL's
//! dialect, checked like any statement before anything recursive touches it, then rewritten by
//! `datafusion-pg-catalog` into SQL DataFusion plans (`::regclass` casts, `OPERATOR(...)`,
//! catalog queries drivers send at connect), and planned in a session that has `pg_catalog`.

mod coercion;
mod functions;
mod rewrites;
mod tables;

use std::sync::Arc;

use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::ScalarUDF;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::generate_series_arg_coercion::CoerceIntArgsToBigInt;
use datafusion_pg_catalog::pg_catalog::oid_type_planner::PgOidTypePlanner;
use datafusion_pg_catalog::pg_catalog::{
    self as pg, ArrowTable, PgCatalogSchemaProvider, PgCatalogStaticTables, array_bounds_udf,
    format_type, has_privilege_udf, pg_get_expr_udf, quote_ident_udf,
};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

use self::functions::*;
pub use self::functions::{SERVER_VERSION, default_setting};
use self::tables::{LatestCatalogs, PgCatalogTables};
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
            let mut parsed = Parser::parse_sql(&PostgreSqlDialect {}, sql)
                .map_err(crate::error::syntax_error)?;
            let mut changed = false;
            for statement in &mut parsed {
                check_sql_statement(statement, limits.max_depth)?;
                changed |= rewrites::before_compatibility(statement);
            }
            // The compatibility parser matches client queries by their tokens: give it the
            // client's own text unless a rewrite changed it.
            let rewritten = changed.then(|| {
                parsed
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            });
            drop(parsed);
            let mut statements = self
                .compatibility
                .parse(rewritten.as_deref().unwrap_or(sql))
                .map_err(crate::error::syntax_error)?;
            for statement in &mut statements {
                rewrites::rewrite(statement);
            }
            Ok(statements)
        })
    }
}

/// `pg_catalog` for query sessions: its tables (one provider shared by every session, so a
/// table keeps its oid from one statement to the next, as psql's `\d` needs) and the
/// functions drivers call at connect (`current_schema()`, `pg_get_userbyid`, `format_type`,
/// `version()`, ...). The catalog's static tables are decoded once, here, not per statement.
pub(crate) struct PgCatalog {
    schema: Arc<PgCatalogTables>,
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
        let schema = Arc::new(PgCatalogTables::new(Arc::new(
            PgCatalogSchemaProvider::try_new(
                latest.clone(),
                Arc::clone(&static_tables),
                EmptyContextProvider,
            )?,
        )));
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
            encoding_name_udf(),
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
            like_pattern_udf(),
            prefix_elements_udf(),
            current_setting_udf(),
            no_description_udf("col_description"),
            no_description_udf("obj_description"),
            no_description_udf("shobj_description"),
            no_description_udf("pg_get_indexdef"),
            pg_get_serial_sequence_udf(),
            always_visible_udf("pg_collation_is_visible"),
            always_visible_udf("pg_type_is_visible"),
            json_build_object_udf(),
            pg_data_type_udf(),
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
            // Oid alias types (`regclass`, ...) parse as int4 casts; quoted booleans compare
            // with boolean columns before type coercion runs.
            let state = ctx.state_ref();
            let existing = state.read().clone();
            let mut builder = SessionStateBuilder::new_from_existing(existing)
                .with_type_planner(Arc::new(PgOidTypePlanner));
            if let Some(analyzer) = builder.analyzer() {
                analyzer
                    .rules
                    .insert(0, Arc::new(coercion::BooleanLiterals));
            }
            *state.write() = builder.build();
        }
        // `generate_series(1, array_upper(...))`: int4 arguments widened to the int8 the
        // table functions take (wrapping Cohort's bounded ones, whose limits stay).
        CoerceIntArgsToBigInt::widen(ctx);
        Ok(())
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
    fn subqueries_in_order_by_become_hidden_columns() {
        let sql = rewritten(
            "SELECT relname AS name FROM pg_class ORDER BY CASE WHEN relnamespace IN \
             (SELECT oid FROM pg_namespace) THEN 0 ELSE 1 END, name LIMIT 5",
        );
        assert!(
            sql.starts_with(
                "SELECT * EXCLUDE (__cohort_order_1) FROM (SELECT relname AS name, CASE"
            ),
            "{sql}"
        );
        assert!(
            sql.ends_with("AS __cohort_sorted ORDER BY __cohort_order_1, name LIMIT 5"),
            "{sql}"
        );
        // A key on a column that is not in the output cannot be moved outside.
        let sql = rewritten(
            "SELECT relname FROM pg_class ORDER BY relnamespace IN (SELECT oid FROM pg_namespace), oid",
        );
        assert!(!sql.contains("EXCLUDE"), "{sql}");
    }

    #[test]
    fn in_subqueries_in_select_lists_become_scalar_subqueries() {
        let sql = rewritten(
            "SELECT CASE WHEN nspname IN (SELECT 'public') THEN 0 ELSE 1 END, \
             nspname NOT IN (SELECT 'x') FROM pg_namespace WHERE oid IN (SELECT 1)",
        );
        assert!(
            sql.contains("WHEN array_has((SELECT array_agg(value) FROM (SELECT 'public')"),
            "{sql}"
        );
        assert!(
            sql.contains("NOT (CASE WHEN (SELECT count(*) FROM (SELECT 'x')"),
            "{sql}"
        );
        // A filter plans as written.
        assert!(sql.ends_with("WHERE oid IN (SELECT 1)"), "{sql}");
    }

    #[test]
    fn nested_in_subqueries_cannot_grow_the_statement_without_bound() {
        // Each level would triple the text: 3^15 copies if nothing stopped it.
        let mut sql = "SELECT 1".to_string();
        for _ in 0..15 {
            sql = format!("SELECT 1 IN ({sql})");
        }
        let rewritten = rewritten(&sql);
        // What the rewrites may add is bounded (the parser's own recursion limit alone let
        // this one reach 322 KB, after 18 s of rewriting in a debug build).
        assert!(
            rewritten.len() <= sql.len() + rewrites::IN_REWRITE_BUDGET_BYTES,
            "{} bytes",
            rewritten.len()
        );
        // The innermost levels were rewritten, the rest left as written.
        assert!(rewritten.contains("array_has("), "{rewritten}");
        assert!(
            rewritten.starts_with("SELECT 1 IN (SELECT 1 IN ("),
            "{rewritten}"
        );
    }

    #[test]
    fn information_schema_columns_name_postgresql_types() {
        let sql = rewritten(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'e'",
        );
        assert!(
            sql.contains("cohort_pg_data_type(data_type) AS data_type"),
            "{sql}"
        );
        assert!(
            sql.ends_with(") AS columns WHERE table_name = 'e'"),
            "{sql}"
        );
        let sql = rewritten("SELECT c.data_type FROM information_schema.columns AS c");
        assert!(
            sql.ends_with("FROM information_schema.columns) AS c"),
            "{sql}"
        );
        for (arrow, pg) in [
            ("Int64", "bigint"),
            ("Int32", "integer"),
            ("Utf8", "text"),
            ("Utf8View", "text"),
            ("Float64", "double precision"),
            ("Boolean", "boolean"),
            ("Date32", "date"),
            (r#"Timestamp(µs, "UTC")"#, "timestamp with time zone"),
            ("Timestamp(µs)", "timestamp without time zone"),
            ("List(Utf8)", "ARRAY"),
            ("Decimal128(10, 2)", "numeric"),
            ("not a type", "not a type"),
        ] {
            assert_eq!(pg_data_type(arrow), pg, "{arrow}");
        }
    }

    #[test]
    fn regproc_literals_become_function_names() {
        let sql = rewritten(
            "SELECT typinput = 'pg_catalog.array_in'::regproc AS is_array FROM pg_catalog.pg_type",
        );
        assert!(sql.contains("typinput = 'array_in' AS is_array"), "{sql}");
    }

    #[test]
    fn like_escapes_are_translated_to_backslashes() {
        assert_eq!(backslash_escaped("pg/_%", Some('/')), "pg\\_%");
        assert_eq!(backslash_escaped("a//b", Some('/')), "a/b");
        assert_eq!(backslash_escaped("c:\\x", Some('/')), "c:\\\\x");
        assert_eq!(backslash_escaped("50#%", Some('#')), "50\\%");
        assert_eq!(backslash_escaped("a\\_", None), "a\\\\_");
        let sql = rewritten(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg/_' || '%' ESCAPE '/'",
        );
        assert!(
            sql.contains("NOT LIKE cohort_like_pattern('pg/_' || '%', '/')"),
            "{sql}"
        );
        assert!(!sql.contains("ESCAPE"), "{sql}");
    }

    #[test]
    fn array_subqueries_become_aggregated_subqueries() {
        // psql's `\d+`: table options joined with the toast table's.
        let sql = rewritten(
            "SELECT array_to_string(c.reloptions || array(select 'toast.' || x \
             from pg_catalog.unnest(tc.reloptions) x), ', ') FROM pg_class c, pg_class tc",
        );
        assert!(
            sql.contains("c.reloptions || cohort_prefix_elements(tc.reloptions, 'toast.')"),
            "{sql}"
        );
        let sql = rewritten("SELECT ARRAY(SELECT x FROM unnest(c.options) x) FROM pg_class c");
        assert!(sql.contains("SELECT c.options FROM"), "{sql}");
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
}
