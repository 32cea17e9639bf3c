//! SQL from PostgreSQL clients (psql, JDBC, SQLAlchemy, BI tools): parsed in PostgreSQL's
//! dialect, checked like any statement before anything recursive touches it, then rewritten by
//! `datafusion-pg-catalog` into SQL DataFusion plans (`::regclass` casts, `OPERATOR(...)`,
//! catalog queries drivers send at connect), and planned in a session that has `pg_catalog`.

use datafusion::execution::context::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
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
            self.compatibility
                .parse(sql)
                .map_err(|e| EngineError::InvalidStatement(e.to_string()))
        })
    }
}

/// Adds `pg_catalog` (tables and the functions drivers call, such as `current_schema()`,
/// `pg_get_userbyid`, `format_type`) to a query session.
pub(crate) fn install_catalog(ctx: &SessionContext) -> Result<()> {
    datafusion_pg_catalog::setup_pg_catalog(ctx, CATALOG, EmptyContextProvider)
        .map_err(|e| EngineError::DataFusion(*e))
}
