//! Running one SQL statement: queries plan into a DataFrame; `INSERT INTO events|profiles` goes
//! through the validated ingest path; everything that would reach outside the store is refused.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::execution::context::{SQLOptions, SessionContext};
use datafusion::logical_expr::{Cast, Expr, LogicalPlan, TryCast};
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{Statement, TableObject};
use datafusion::sql::sqlparser::dialect::GenericDialect;

use crate::Engine;
use crate::catalog_statement::{CatalogStatement, ObjectKind};
use crate::depth::{PlanningStack, check_plan};
use crate::error::{EngineError, Result};
use crate::limits::StatementLimits;
use crate::params::rewrite_question_marks;
use crate::tables::TableKind;
use crate::tags::resolve::TagRequests;

pub use crate::outcome::{Access, StatementOutcome, rows_affected_batch};

/// The kinds of statement Cohort runs.
enum Kind {
    /// A query, with the tags its tag functions refer to.
    Query(TagRequests),
    Insert {
        table: TableKind,
        columns: Vec<String>,
        source: String,
    },
    Catalog(CatalogStatement),
    /// `OPTIMIZE events|profiles`.
    Optimize(TableKind),
}

/// A statement checked for one caller and classified; see [`Engine::classify_as`].
pub struct Classified {
    sql: String,
    kind: Kind,
    access: Access,
    dialect: Dialect,
}

/// Whose SQL a statement is: it decides what its query session offers besides the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// Flight SQL clients and the CLI.
    #[default]
    Cohort,
    /// PostgreSQL clients (already rewritten by [`crate::postgres::PostgresParser`]): their
    /// queries also see `pg_catalog`.
    Postgres,
}

impl Classified {
    /// Whether the statement changes data or definitions (such statements run to completion,
    /// never cut off by a statement timeout).
    pub fn writes(&self) -> bool {
        self.kind.writes()
    }
}

/// Client SQL may read the store but not define tables over arbitrary files or change settings.
fn query_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

impl Kind {
    fn writes(&self) -> bool {
        match self {
            Kind::Query(_) => false,
            Kind::Catalog(statement) => !statement.reads_only(),
            Kind::Insert { .. } | Kind::Optimize(_) => true,
        }
    }
}

/// Classifies one statement. Runs on the planning stack: the parsed tree is checked for depth
/// and dropped here, and a refused tree may be deep.
fn classify(sql: &str, limits: &StatementLimits) -> Result<Kind> {
    crate::depth::on_planning_stack(|| classify_parsed(sql, limits))
}

fn classify_parsed(sql: &str, limits: &StatementLimits) -> Result<Kind> {
    limits.check(sql)?;
    if let Some(statement) = crate::catalog_statement::parse(sql)? {
        return Ok(Kind::Catalog(statement));
    }
    if let Some(table) = crate::optimize::parse(sql)? {
        return Ok(Kind::Optimize(table));
    }
    let mut statements = DFParser::parse_sql_with_dialect(sql, &GenericDialect {})
        .map_err(crate::error::statement_error)?;
    for statement in &statements {
        crate::depth::check_statement(statement, limits.max_depth)?;
    }
    let statement = match statements.len() {
        0 => return Err(EngineError::InvalidStatement("empty statement".into())),
        1 => statements.pop_front().expect("one statement"),
        n => {
            return Err(EngineError::InvalidStatement(format!(
                "expected one statement, found {n}: send them one at a time"
            )));
        }
    };
    let requests = TagRequests::collect(&statement)?;
    match statement {
        DFStatement::Statement(inner) => match *inner {
            Statement::Query(_)
            | Statement::Explain { .. }
            | Statement::ExplainTable { .. }
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::ShowVariable { .. } => Ok(Kind::Query(requests)),
            Statement::Insert(insert) => {
                let name = match &insert.table {
                    TableObject::TableName(name) => name.to_string(),
                    other => {
                        return Err(EngineError::Unsupported(format!("INSERT INTO {other}")));
                    }
                };
                let bare = name.rsplit('.').next().unwrap_or(&name).trim_matches('"');
                let table: TableKind = bare.parse()?;
                let source = insert.source.ok_or_else(|| {
                    EngineError::Unsupported("INSERT without VALUES or a query".into())
                })?;
                if insert.overwrite {
                    return Err(EngineError::Unsupported("INSERT OVERWRITE".into()));
                }
                Ok(Kind::Insert {
                    table,
                    columns: insert.columns.iter().map(|c| c.to_string().trim_matches('"').to_string()).collect(),
                    source: source.to_string(),
                })
            }
            other => Err(refusal(&other.to_string())),
        },
        DFStatement::Explain(_) => Ok(Kind::Query(requests)),
        DFStatement::CreateExternalTable(_) => Err(EngineError::Unsupported(
            "CREATE EXTERNAL TABLE: Cohort queries only the tables of its own store; load files with `cohort ingest` or Flight SQL bulk ingest".into(),
        )),
        DFStatement::CopyTo(_) => Err(EngineError::Unsupported(
            "COPY: export results through a client instead".into(),
        )),
        other => Err(refusal(&other.to_string())),
    }
}

/// The SQL that is classified and run for a client's `sql`: `?` placeholders numbered, and
/// `SHOW FUNCTIONS` as the query that answers it.
fn statement_sql(sql: &str) -> Result<String> {
    let sql = rewrite_question_marks(sql);
    Ok(crate::show_functions::rewrite(&sql)?.unwrap_or(sql))
}

fn refusal(statement: &str) -> EngineError {
    let verb: String = statement
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    EngineError::Unsupported(format!(
        "{verb}: Cohort runs queries (SELECT, WITH, VALUES, EXPLAIN, SHOW) and INSERT INTO events/profiles"
    ))
}

impl Engine {
    /// Runs one statement with full access (the local CLI and tests, which hold the store
    /// anyway). `?` placeholders are accepted as well as `$n`.
    pub async fn execute(
        &self,
        sql: &str,
        params: Option<Vec<ScalarValue>>,
    ) -> Result<StatementOutcome> {
        self.execute_as(Access::ReadWrite, sql, params).await
    }

    /// Runs one statement for a caller with `access`: a read-only caller's INSERT or tag and
    /// segment changes are refused before anything runs.
    pub async fn execute_as(
        &self,
        access: Access,
        sql: &str,
        params: Option<Vec<ScalarValue>>,
    ) -> Result<StatementOutcome> {
        self.execute_classified(self.classify_as(access, sql)?, params)
            .await
    }

    /// Checks `sql` (size, depth, what `access` may run) and classifies it, once: an endpoint
    /// admits the statement by what it is (a write is never cut off by a timeout), then runs it
    /// with [`Engine::execute_classified`] without parsing it again.
    pub fn classify_as(&self, access: Access, sql: &str) -> Result<Classified> {
        self.classify_in(Dialect::Cohort, access, sql)
    }

    /// [`Engine::classify_as`] for a statement of `dialect`.
    pub fn classify_in(&self, dialect: Dialect, access: Access, sql: &str) -> Result<Classified> {
        self.config.limits.check_size(sql)?;
        let sql = statement_sql(sql)?;
        let kind = self.classify(&sql)?;
        if access == Access::ReadOnly && kind.writes() {
            return Err(EngineError::PermissionDenied(
                "this statement changes data or definitions; it needs the admin role".into(),
            ));
        }
        Ok(Classified {
            sql,
            kind,
            access,
            dialect,
        })
    }

    /// Runs a statement [`Engine::classify_as`] accepted.
    pub async fn execute_classified(
        &self,
        statement: Classified,
        params: Option<Vec<ScalarValue>>,
    ) -> Result<StatementOutcome> {
        let Classified {
            sql, kind, dialect, ..
        } = statement;
        match kind {
            Kind::Query(requests) => {
                let ctx = self.session_for(&requests).await?;
                if dialect == Dialect::Postgres {
                    self.pg_catalog()?.install(&ctx)?;
                }
                Ok(StatementOutcome::Query(
                    plan_query(&ctx, &sql, params, &self.config.limits).await?,
                ))
            }
            Kind::Catalog(statement) => self.run_catalog_statement(statement).await,
            Kind::Optimize(table) => Ok(StatementOutcome::RowsAffected(
                self.optimize(table).await?.rows,
            )),
            Kind::Insert {
                table,
                columns,
                source,
            } => {
                let rows = self
                    .insert_rows(table, &columns, &source, vec![params])
                    .await?;
                Ok(StatementOutcome::RowsAffected(rows))
            }
        }
    }

    /// Runs a data-changing statement once per row of parameters and returns the rows written.
    /// An INSERT's rows from every parameter row are one commit (all land or none), as one
    /// multi-row INSERT would be; other statements run once per row.
    pub async fn execute_each_classified(
        &self,
        statement: Classified,
        rows: Vec<Vec<ScalarValue>>,
    ) -> Result<u64> {
        let Classified {
            sql, kind, access, ..
        } = statement;
        let Kind::Insert {
            table,
            columns,
            source,
        } = kind
        else {
            let mut total = 0;
            for values in rows {
                // Only catalog statements get here; each row is its own statement.
                if let StatementOutcome::RowsAffected(n) =
                    self.execute_as(access, &sql, Some(values)).await?
                {
                    total += n;
                }
            }
            return Ok(total);
        };
        let rows = rows.into_iter().map(Some).collect();
        self.insert_rows(table, &columns, &source, rows).await
    }

    /// The types of a data-changing statement's `$n` parameters, for a driver's describe: an
    /// INSERT's from its source query, where a bare `$n` in a VALUES row takes the type of the
    /// column it fills; the tag and segment statements take none.
    pub async fn write_parameter_types(
        &self,
        statement: &Classified,
    ) -> Result<Vec<Option<arrow::datatypes::DataType>>> {
        match &statement.kind {
            Kind::Insert {
                table,
                columns,
                source,
            } => self.insert_parameter_types(*table, columns, source).await,
            Kind::Query(_) | Kind::Catalog(_) | Kind::Optimize(_) => Ok(Vec::new()),
        }
    }

    async fn insert_parameter_types(
        &self,
        table: TableKind,
        columns: &[String],
        source: &str,
    ) -> Result<Vec<Option<arrow::datatypes::DataType>>> {
        let requests = match self.classify(source)? {
            Kind::Query(requests) => requests,
            _ => TagRequests::default(),
        };
        let ctx = self.session_for(&requests).await?;
        let df = plan_query(&ctx, source, None, &self.config.limits).await?;
        let mut types = parameter_types(df.logical_plan())?;
        // A table not written yet has no columns to take types from.
        let Ok(provider) = ctx.table_provider(table.name()).await else {
            return Ok(types);
        };
        let schema = provider.schema();
        let targets: Vec<&arrow::datatypes::Field> = if columns.is_empty() {
            schema
                .fields()
                .iter()
                .filter(|f| f.name() != crate::tables::EVENT_DATE)
                .map(AsRef::as_ref)
                .collect()
        } else {
            columns
                .iter()
                .filter_map(|name| schema.field_with_name(name).ok())
                .collect()
        };
        df.logical_plan().apply(|node| {
            if let LogicalPlan::Values(values) = node {
                for row in &values.values {
                    for (value, target) in row.iter().zip(&targets) {
                        let position = match value {
                            Expr::Placeholder(placeholder) => placeholder_position(&placeholder.id),
                            _ => None,
                        };
                        let slot = position
                            .and_then(|n| n.checked_sub(1))
                            .and_then(|i| types.get_mut(i));
                        if let Some(slot) = slot {
                            *slot = Some(target.data_type().clone());
                        }
                    }
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        Ok(types)
    }

    /// Plans `source` once per parameter row and writes all the rows as one commit.
    async fn insert_rows(
        &self,
        table: TableKind,
        columns: &[String],
        source: &str,
        parameter_rows: Vec<Option<Vec<ScalarValue>>>,
    ) -> Result<u64> {
        let requests = match self.classify(source)? {
            Kind::Query(requests) => requests,
            _ => TagRequests::default(),
        };
        let ctx = self.session_for(&requests).await?;
        let mut batches = Vec::new();
        for values in parameter_rows {
            let df = plan_query(&ctx, source, values, &self.config.limits).await?;
            batches.extend(df.collect().await?);
        }
        let batches = name_insert_columns(&ctx, table, columns, batches).await?;
        let Some(first) = batches.first() else {
            return Ok(0);
        };
        let schema = first.schema();
        // Parameter rows may type a column differently (an Int32 then an Int64): one schema.
        let batches = batches
            .iter()
            .map(|b| {
                let columns = b
                    .columns()
                    .iter()
                    .zip(schema.fields())
                    .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Ok(RecordBatch::try_new(Arc::clone(&schema), columns)?)
            })
            .collect::<Result<Vec<_>>>()?;
        let report = self
            .ingest_batches(table, "INSERT", &schema, &batches)
            .await?;
        Ok(report.rows)
    }

    fn classify(&self, sql: &str) -> Result<Kind> {
        classify(sql, &self.config.limits)
    }

    async fn run_catalog_statement(&self, statement: CatalogStatement) -> Result<StatementOutcome> {
        match statement.kind() {
            ObjectKind::Tag => self.run_tag_statement(statement).await,
            ObjectKind::Segment => self.run_segment_statement(statement).await,
            ObjectKind::Trait => self.run_trait_statement(statement).await,
            ObjectKind::Holdout => self.run_holdout_statement(statement).await,
            ObjectKind::IdentityRule => self.run_identity_statement(statement).await,
        }
    }

    /// A session with the tags `requests` names loaded.
    async fn session_for(&self, requests: &TagRequests) -> Result<SessionContext> {
        let tags = self.resolve_tags(requests).await?;
        let segments = self.load_segments(&requests.segments).await?;
        self.session_with(Arc::new(tags), Arc::new(segments)).await
    }

    /// Plans `sql`, which must be a query (a tag or segment definition's body).
    pub(crate) async fn plan_statement_query(&self, sql: &str) -> Result<DataFrame> {
        match self.classify(sql)? {
            Kind::Query(requests) => {
                let ctx = self.session_for(&requests).await?;
                plan_query(&ctx, sql, None, &self.config.limits).await
            }
            _ => Err(EngineError::InvalidStatement(
                "expected a query (SELECT ...)".into(),
            )),
        }
    }

    /// Runs a statement and collects its result (for the CLI and tests). The schema is
    /// returned separately because an empty result has no batches to carry it.
    pub async fn execute_collect(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        match self.execute(sql, None).await? {
            StatementOutcome::Query(df) => {
                let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
                Ok((schema, df.collect().await?))
            }
            StatementOutcome::RowsAffected(n) => {
                let batch = rows_affected_batch(n);
                Ok((batch.schema(), vec![batch]))
            }
        }
    }
}

/// The result schema of a query without running it, e.g. for a prepared statement.
pub async fn plan_query_schema(
    engine: &Engine,
    sql: &str,
) -> Result<(SchemaRef, Vec<Option<arrow::datatypes::DataType>>)> {
    engine.config.limits.check_size(sql)?;
    let sql = statement_sql(sql)?;
    match engine.classify(&sql)? {
        Kind::Query(requests) => {
            let ctx = engine.session_for(&requests).await?;
            let df = plan_query(&ctx, &sql, None, &engine.config.limits).await?;
            let plan = df.logical_plan();
            let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
            Ok((schema, parameter_types(plan)?))
        }
        Kind::Insert {
            table,
            columns,
            source,
        } => Ok((
            rows_affected_batch(0).schema(),
            engine
                .insert_parameter_types(table, &columns, &source)
                .await?,
        )),
        Kind::Catalog(CatalogStatement::Show { .. }) => {
            let schema = engine.execute_collect(&sql).await?.0;
            Ok((schema, Vec::new()))
        }
        Kind::Catalog(_) | Kind::Optimize(_) => Ok((rows_affected_batch(0).schema(), Vec::new())),
    }
}

/// Most parameters one statement may have (PostgreSQL's own limit).
pub const MAX_PARAMETERS: usize = 65_535;

/// The types of a plan's `$n` parameters by position (`$1` first; `None` where the planner
/// could not infer one, or for a position the statement skips). A parameter the planner left
/// untyped but the statement casts, `$1::bytea`, takes the cast's type, as in PostgreSQL.
pub fn parameter_types(plan: &LogicalPlan) -> Result<Vec<Option<arrow::datatypes::DataType>>> {
    let mut numbered: Vec<(usize, Option<arrow::datatypes::DataType>)> = plan
        .get_parameter_types()?
        .into_iter()
        .filter_map(|(name, ty)| Some((placeholder_position(&name)?, ty)))
        .collect();
    numbered.sort_by_key(|(position, _)| *position);
    let count = numbered.last().map_or(0, |(position, _)| *position);
    if count > MAX_PARAMETERS {
        return Err(EngineError::LimitExceeded(format!(
            "the statement refers to parameter ${count}; at most {MAX_PARAMETERS} are allowed"
        )));
    }
    let mut ordered = vec![None; count];
    for (position, ty) in numbered {
        if let Some(slot) = position.checked_sub(1).and_then(|i| ordered.get_mut(i)) {
            *slot = ty;
        }
    }
    if ordered.iter().any(Option::is_none) {
        plan.apply_with_subqueries(|node| {
            node.apply_expressions(|expr| {
                expr.apply(|expr| {
                    let (Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field })) =
                        expr
                    else {
                        return Ok(TreeNodeRecursion::Continue);
                    };
                    if let Expr::Placeholder(placeholder) = expr.as_ref() {
                        let slot = placeholder_position(&placeholder.id)
                            .and_then(|n| n.checked_sub(1))
                            .and_then(|i| ordered.get_mut(i));
                        if let Some(slot @ None) = slot {
                            *slot = Some(field.data_type().clone());
                        }
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
            })
        })?;
    }
    Ok(ordered)
}

/// `$3` is position 3.
fn placeholder_position(id: &str) -> Option<usize> {
    id.strip_prefix('$')?.parse().ok()
}

/// Plans a query; bound values are cast to the types the planner inferred for their
/// placeholders, since drivers send e.g. Int32 for a comparison with an Int64 column.
/// SQL planning runs on the planning stack and the plan's depth is checked before anything
/// else (optimiser, execution) walks it.
async fn plan_query(
    ctx: &SessionContext,
    sql: &str,
    params: Option<Vec<ScalarValue>>,
    limits: &StatementLimits,
) -> Result<DataFrame> {
    let df = PlanningStack::new(async {
        let df = ctx.sql_with_options(sql, query_options()).await?;
        check_plan(df.logical_plan(), limits.max_depth)?;
        Ok::<_, EngineError>(df)
    })
    .await?;
    let Some(values) = params else {
        return Ok(df);
    };
    let types = df.logical_plan().get_parameter_types()?;
    let values = values
        .into_iter()
        .enumerate()
        .map(|(i, value)| match types.get(&format!("${}", i + 1)) {
            Some(Some(wanted)) if &value.data_type() != wanted => value.cast_to(wanted),
            _ => Ok(value),
        })
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    Ok(df.with_param_values(ParamValues::from(values))?)
}

/// Gives INSERT's rows the target column names: the explicit column list, or else the table's
/// columns in order (as `INSERT INTO t VALUES (...)` means).
async fn name_insert_columns(
    ctx: &SessionContext,
    table: TableKind,
    columns: &[String],
    batches: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>> {
    let Some(first) = batches.first() else {
        return Ok(batches);
    };
    let width = first.num_columns();
    let names: Vec<String> = if columns.is_empty() {
        let provider = ctx.table_provider(table.name()).await?;
        let table_columns: Vec<String> = provider
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| n != crate::tables::EVENT_DATE)
            .collect();
        if width > table_columns.len() {
            return Err(EngineError::InvalidStatement(format!(
                "INSERT has {width} values per row but {table} has {} columns ({})",
                table_columns.len(),
                table_columns.join(", ")
            )));
        }
        table_columns.into_iter().take(width).collect()
    } else {
        if columns.len() != width {
            return Err(EngineError::InvalidStatement(format!(
                "INSERT names {} columns but gives {width} values per row",
                columns.len()
            )));
        }
        columns.to_vec()
    };
    let fields: Vec<arrow::datatypes::Field> = first
        .schema()
        .fields()
        .iter()
        .zip(&names)
        .map(|(f, name)| f.as_ref().clone().with_name(name))
        .collect();
    let schema = Arc::new(arrow::datatypes::Schema::new(fields));
    batches
        .into_iter()
        .map(|b| {
            Ok(RecordBatch::try_new(
                Arc::clone(&schema),
                b.columns().to_vec(),
            )?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(sql: &str) -> Result<Kind> {
        super::classify(sql, &StatementLimits::default())
    }

    #[tokio::test]
    async fn parameter_types_are_positional() {
        use arrow::datatypes::DataType;
        let ctx = SessionContext::new();
        let plan = |sql: &str| {
            let ctx = ctx.clone();
            let sql = sql.to_string();
            async move { ctx.sql(&sql).await.unwrap().logical_plan().clone() }
        };
        let types = parameter_types(&plan("SELECT $2 + 1.5 AS a, $1 = 'x' AS b").await).unwrap();
        assert_eq!(types, vec![Some(DataType::Utf8), Some(DataType::Float64)]);
        // A skipped position stays in its place, untyped.
        let gapped = parameter_types(&plan("SELECT $3 = 'x' AS c, $1 + 1 AS d").await).unwrap();
        assert_eq!(gapped.len(), 3);
        assert_eq!(gapped[1], None);
        assert_eq!(gapped[2], Some(DataType::Utf8));
        let huge = plan("SELECT $70000 = 'x' AS e").await;
        assert!(matches!(
            parameter_types(&huge),
            Err(EngineError::LimitExceeded(_))
        ));
    }

    #[test]
    fn refuses_external_tables_and_settings() {
        assert!(matches!(
            classify("CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'"),
            Err(EngineError::Unsupported(_))
        ));
        assert!(matches!(
            classify("SET datafusion.execution.batch_size = 1"),
            Err(EngineError::Unsupported(_))
        ));
        assert!(matches!(
            classify("COPY (SELECT 1) TO '/tmp/x.csv'"),
            Err(EngineError::Unsupported(_))
        ));
        assert!(matches!(
            classify("DROP TABLE events"),
            Err(EngineError::Unsupported(_))
        ));
    }

    #[test]
    fn classifies_queries_and_inserts() {
        assert!(matches!(classify("SELECT 1"), Ok(Kind::Query(_))));
        assert!(matches!(classify("EXPLAIN SELECT 1"), Ok(Kind::Query(_))));
        assert!(matches!(classify("SHOW TABLES"), Ok(Kind::Query(_))));
        assert!(matches!(
            classify("SHOW TAGS"),
            Ok(Kind::Catalog(CatalogStatement::Show {
                kind: ObjectKind::Tag
            }))
        ));
        match classify(
            "INSERT INTO cohort.public.events (user_id, event, ts) VALUES (1, 'a', '2026-01-01')",
        ) {
            Ok(Kind::Insert { table, columns, .. }) => {
                assert_eq!(table, TableKind::Events);
                assert_eq!(columns, ["user_id", "event", "ts"]);
            }
            _ => panic!("not an insert"),
        }
        assert!(matches!(
            classify("INSERT INTO other VALUES (1)"),
            Err(EngineError::TableNotFound(_))
        ));
        assert!(matches!(
            classify("SELECT 1; SELECT 2"),
            Err(EngineError::InvalidStatement(_))
        ));
        assert!(matches!(
            classify(""),
            Err(EngineError::InvalidStatement(_))
        ));
    }
}
