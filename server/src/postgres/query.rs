//! Simple and extended queries. Every statement a PostgreSQL client sends is parsed in
//! PostgreSQL's dialect (checked for size and depth first), then either answered here (the
//! session statements of [`super::session`]) or run through [`Statements`], the admission path
//! Flight SQL uses: the same roles, slots, statement timeout, result limits, memory pool and
//! cancellation. Result rows are produced on their own task ([`detach`]), so a client that
//! stops reading frees its slot after `stall_timeout` as on Flight SQL.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_pg::datatypes::df::deserialize_parameters;
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, into_pg_type};
use async_trait::async_trait;
use cohort_engine::EngineError;
use cohort_engine::limits::StatementLimits;
use cohort_engine::postgres::PostgresParser;
use datafusion::common::{ParamValues, ScalarValue};
use futures::stream::BoxStream;
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{
    ExtendedQueryHandler, SimpleQueryHandler, send_execution_response, send_query_response,
    send_ready_for_query,
};
use pgwire::api::results::{DataRowEncoder, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireConnectionState, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::DataRow;
use pgwire::messages::response::EmptyQueryResponse;
use pgwire::messages::simplequery::Query;
use pgwire::types::format::FormatOptions;

use super::connections::Registered;
use super::errors::{error, sqlstate, status_error};
use super::session::{SessionStatement, Settings};
use super::types::{PgColumns, encode_rows};
use crate::auth::Principal;
use crate::detached::detach;
use crate::statements::{Ran, Shape, Statements, flight_status};
use crate::status::engine_status;

/// One statement of a client's SQL.
#[derive(Debug, Clone)]
enum Parsed {
    Session(SessionStatement),
    /// Cohort SQL for the engine.
    Engine(String),
}

/// A statement prepared with the extended protocol (Parse).
#[derive(Debug, Clone)]
pub enum Prepared {
    Session(SessionStatement),
    Engine { sql: String, shape: Arc<Shape> },
}

/// The state the query handlers share.
pub struct Queries {
    statements: Statements,
    parser: PostgresParser,
    limits: StatementLimits,
    stall_timeout: Duration,
}

impl Queries {
    pub fn new(statements: Statements) -> Self {
        let limits = statements.engine().config().limits.clone();
        let stall_timeout = statements.governor().limits().stall_timeout;
        Self {
            statements,
            parser: PostgresParser::new(),
            limits,
            stall_timeout,
        }
    }

    fn parse(&self, sql: &str) -> PgWireResult<Vec<Parsed>> {
        // Cohort's own statements (CREATE TAG ..., SHOW SEGMENTS, REFRESH SEGMENT ...) are not
        // PostgreSQL: the engine takes them as written.
        if self.limits.check_size(sql).is_ok()
            && matches!(
                cohort_engine::catalog_statement::parse(sql),
                Ok(Some(_)) | Err(_)
            )
        {
            return Ok(as_written(sql));
        }
        match self.parser.parse(sql, &self.limits) {
            Ok(statements) => Ok(statements
                .iter()
                .map(|statement| match SessionStatement::of(statement) {
                    Some(session) => Parsed::Session(session),
                    None => Parsed::Engine(statement.to_string()),
                })
                .collect()),
            // Not PostgreSQL: the engine parses it in its own dialect or says what is wrong.
            Err(EngineError::InvalidStatement(_)) => Ok(as_written(sql)),
            Err(e) => Err(status_error(&engine_status(e))),
        }
    }

    /// Runs one statement; `format` is how the client wants result columns.
    async fn run<C>(
        &self,
        client: &C,
        statement: &Parsed,
        values: Option<Vec<ScalarValue>>,
        format: &Format,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + Send + Sync,
    {
        match statement {
            Parsed::Session(session) => session_response(client, session, format),
            Parsed::Engine(sql) => self.run_engine(client, sql, values, format).await,
        }
    }

    async fn run_engine<C>(
        &self,
        client: &C,
        sql: &str,
        values: Option<Vec<ScalarValue>>,
        format: &Format,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + Send + Sync,
    {
        let principal = principal_of(client)?;
        let query_id = uuid::Uuid::new_v4().to_string();
        if let Some(registered) = client.session_extensions().get::<Registered>() {
            registered.running(&query_id);
        }
        let ran = self
            .statements
            .run(&principal, sql, values, Some(&query_id))
            .await
            .map_err(|status| status_error(&status))?;
        let (schema, stream) = match ran {
            Ran::RowsAffected(rows) => return Ok(Response::Execution(command_tag(sql, rows))),
            Ran::Query { schema, stream } => (schema, stream),
        };
        let columns = PgColumns::of(&schema);
        let format_options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let fields = Arc::new(arrow_schema_to_pg_fields(
            &columns.schema,
            format,
            Some(format_options),
        )?);
        let encoded = Arc::clone(&fields);
        let batches = detach(stream, self.stall_timeout, |status| {
            Err(arrow_flight::error::FlightError::Tonic(Box::new(status)))
        });
        let rows = batches.flat_map(move |batch| -> BoxStream<'static, PgWireResult<DataRow>> {
            let batch = batch
                .map_err(|e| status_error(&flight_status(e)))
                .and_then(|batch| {
                    columns
                        .convert(batch)
                        .map_err(|e| error(sqlstate::INTERNAL_ERROR, e.to_string()))
                });
            match batch {
                Ok(batch) => {
                    futures::stream::iter(encode_rows(Arc::clone(&encoded), batch)).boxed()
                }
                Err(e) => futures::stream::once(async { Err(e) }).boxed(),
            }
        });
        Ok(Response::Query(QueryResponse::new(fields, rows)))
    }

    /// Describes (and for a query, plans) one statement for the extended protocol.
    async fn prepare<C>(&self, client: &C, sql: &str) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Send + Sync,
    {
        let mut parsed = self.parse(sql)?;
        if parsed.len() > 1 {
            return Err(error(
                sqlstate::SYNTAX_ERROR,
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        Ok(match parsed.pop() {
            None => None,
            Some(Parsed::Session(session)) => Some(Prepared::Session(session)),
            Some(Parsed::Engine(sql)) => {
                let principal = principal_of(client)?;
                let shape = self
                    .statements
                    .shape(&principal, &sql)
                    .await
                    .map_err(|status| status_error(&status))?;
                Some(Prepared::Engine {
                    sql,
                    shape: Arc::new(shape),
                })
            }
        })
    }
}

/// `sql` as one statement for the engine, without its closing semicolon.
fn as_written(sql: &str) -> Vec<Parsed> {
    let sql = sql.trim().trim_end_matches(';').trim_end();
    vec![Parsed::Engine(sql.to_string())]
}

fn principal_of<C: ClientInfo>(client: &C) -> PgWireResult<Arc<Principal>> {
    client
        .session_extensions()
        .get::<Principal>()
        .ok_or_else(|| error(sqlstate::INVALID_AUTHORIZATION, "not logged in"))
}

/// The command tag of a data-changing statement: `INSERT 0 n`, or the statement's first two
/// words (`CREATE TAG`, `REFRESH SEGMENT`), as PostgreSQL tags its DDL.
fn command_tag(sql: &str, rows: u64) -> Tag {
    let words: Vec<String> = sql
        .split_whitespace()
        .take(2)
        .map(str::to_ascii_uppercase)
        .collect();
    if words.first().is_some_and(|w| w == "INSERT") {
        return Tag::new("INSERT")
            .with_oid(0)
            .with_rows(usize::try_from(rows).unwrap_or(usize::MAX));
    }
    Tag::new(&words.join(" "))
}

fn settings_of<C: ClientInfo>(client: &C) -> Arc<Mutex<Settings>> {
    client
        .session_extensions()
        .get_or_insert_with(|| Mutex::new(Settings::with_startup(client.metadata())))
}

fn show_field(name: &str, format: &Format) -> FieldInfo {
    FieldInfo::new(
        name.to_string(),
        None,
        None,
        Type::TEXT,
        format.format_for(0),
    )
}

fn session_response<C: ClientInfo>(
    client: &C,
    session: &SessionStatement,
    format: &Format,
) -> PgWireResult<Response> {
    let settings = settings_of(client);
    let mut settings = settings.lock().expect("lock poisoned");
    Ok(match session {
        SessionStatement::Set { name, value } => {
            if let Some(value) = value {
                settings.set(name, value.clone());
            }
            Response::Execution(Tag::new(session.tag()))
        }
        SessionStatement::Reset { name: None } => {
            settings.reset_all();
            Response::Execution(Tag::new(session.tag()))
        }
        SessionStatement::Reset { name: Some(name) } => {
            if !settings.knows(name) {
                return Err(unrecognized_parameter(name));
            }
            settings.reset(name);
            Response::Execution(Tag::new(session.tag()))
        }
        SessionStatement::Show { name } => {
            let value = settings
                .show(name)
                .ok_or_else(|| unrecognized_parameter(name))?;
            let fields = Arc::new(vec![show_field(name, format)]);
            let mut row = DataRowEncoder::new(Arc::clone(&fields));
            row.encode_field(&Some(value))?;
            let row = row.take_row();
            let mut response = QueryResponse::new(fields, futures::stream::iter([Ok(row)]));
            response.set_command_tag("SHOW");
            Response::Query(response)
        }
        SessionStatement::Begin => Response::TransactionStart(Tag::new(session.tag())),
        SessionStatement::Commit | SessionStatement::Rollback => {
            Response::TransactionEnd(Tag::new(session.tag()))
        }
        SessionStatement::Discard => {
            settings.reset_all();
            Response::Execution(Tag::new(session.tag()))
        }
        SessionStatement::Deallocate
        | SessionStatement::Savepoint
        | SessionStatement::Release
        | SessionStatement::RollbackTo => Response::Execution(Tag::new(session.tag())),
    })
}

fn unrecognized_parameter(name: &str) -> PgWireError {
    error(
        sqlstate::UNDEFINED_OBJECT,
        format!("unrecognized configuration parameter \"{name}\""),
    )
}

/// The handlers pgwire calls, over the shared [`Queries`].
pub struct QueryHandler {
    queries: Arc<Queries>,
}

impl QueryHandler {
    pub fn new(queries: Arc<Queries>) -> Self {
        Self { queries }
    }
}

#[async_trait]
impl SimpleQueryHandler for QueryHandler {
    /// Like pgwire's default, except that each statement's response is sent before the next
    /// statement runs: a query's rows hold its slot until they are sent, so running the next
    /// statement first could wait on that very slot.
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let mut transaction = client.transaction_status();
        let result = async {
            let statements = self.queries.parse(&query.query)?;
            if statements.is_empty() {
                client
                    .feed(PgWireBackendMessage::EmptyQueryResponse(
                        EmptyQueryResponse::new(),
                    ))
                    .await?;
            }
            for statement in &statements {
                match self
                    .queries
                    .run(client, statement, None, &Format::UnifiedText)
                    .await?
                {
                    Response::Query(results) => send_query_response(client, results, true).await?,
                    Response::Execution(tag) => send_execution_response(client, tag).await?,
                    Response::TransactionStart(tag) => {
                        send_execution_response(client, tag).await?;
                        transaction = transaction.to_in_transaction_state();
                    }
                    Response::TransactionEnd(tag) => {
                        send_execution_response(client, tag).await?;
                        transaction = transaction.to_idle_state();
                    }
                    Response::EmptyQuery => {
                        client
                            .feed(PgWireBackendMessage::EmptyQueryResponse(
                                EmptyQueryResponse::new(),
                            ))
                            .await?;
                    }
                    Response::Error(info) => return Err(PgWireError::UserError(info)),
                    Response::CopyIn(_) | Response::CopyOut(_) | Response::CopyBoth(_) => {
                        return Err(error(
                            sqlstate::FEATURE_NOT_SUPPORTED,
                            "COPY is not supported",
                        ));
                    }
                }
            }
            Ok::<_, PgWireError>(())
        }
        .await;
        // On an error pgwire sends it, then ReadyForQuery in the error state.
        client.set_transaction_status(transaction);
        result?;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        send_ready_for_query(client, transaction).await
    }

    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // Only reached through pgwire's default `on_query`, which `on_query` above replaces.
        let mut responses = Vec::new();
        for statement in self.queries.parse(query)? {
            match self
                .queries
                .run(client, &statement, None, &Format::UnifiedText)
                .await
            {
                Ok(response) => responses.push(response),
                Err(e) => {
                    responses.push(Response::Error(Box::new(ErrorInfo::from(e))));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

#[async_trait]
impl QueryParser for Queries {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        self.prepare(client, sql).await
    }

    fn get_parameter_types(&self, statement: &Prepared) -> PgWireResult<Vec<Type>> {
        match statement {
            Prepared::Engine { shape, .. } => match shape.as_ref() {
                Shape::Rows { parameters, .. } | Shape::Write { parameters } => parameters
                    .iter()
                    .map(|ty| ty.as_ref().map_or(Ok(Type::UNKNOWN), into_pg_type))
                    .collect(),
            },
            Prepared::Session(_) => Ok(Vec::new()),
        }
    }

    fn get_result_schema(
        &self,
        statement: &Prepared,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let format = format.unwrap_or(&Format::UnifiedText);
        match statement {
            Prepared::Engine { shape, .. } => match shape.as_ref() {
                Shape::Rows { schema, .. } => {
                    arrow_schema_to_pg_fields(&PgColumns::of(schema).schema, format, None)
                }
                Shape::Write { .. } => Ok(Vec::new()),
            },
            Prepared::Session(SessionStatement::Show { name }) => {
                Ok(vec![show_field(name, format)])
            }
            Prepared::Session(_) => Ok(Vec::new()),
        }
    }
}

#[async_trait]
impl ExtendedQueryHandler for QueryHandler {
    type Statement = Prepared;
    type QueryParser = Queries;

    fn query_parser(&self) -> Arc<Queries> {
        Arc::clone(&self.queries)
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match &portal.statement.statement {
            Prepared::Session(session) => {
                session_response(client, session, &portal.result_column_format)
            }
            Prepared::Engine { sql, shape } => {
                let inferred: Vec<Option<&arrow::datatypes::DataType>> = match shape.as_ref() {
                    Shape::Rows { parameters, .. } | Shape::Write { parameters } => {
                        parameters.iter().map(Option::as_ref).collect()
                    }
                };
                let values = match deserialize_parameters(portal, &inferred)? {
                    ParamValues::List(values) => values.into_iter().map(|v| v.value).collect(),
                    ParamValues::Map(_) => Vec::new(),
                };
                let values = Some(values).filter(|v: &Vec<ScalarValue>| !v.is_empty());
                self.queries
                    .run_engine(client, sql, values, &portal.result_column_format)
                    .await
            }
        }
    }
}
