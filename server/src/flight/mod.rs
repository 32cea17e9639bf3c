//! Cohort's Arrow Flight SQL service.
//!
//! Statement tickets are self-contained ([`StatementHandle`] carries the SQL and any bound
//! parameters), so DoGet re-plans from the ticket; only prepared-statement bindings and the
//! results of data-changing statements (which run when their FlightInfo is requested, because
//! some clients never call DoGet for them) are held in server memory.

pub mod boundary;
mod cancel;
pub mod codec;
mod held;
pub mod metadata;
mod prepared;

use std::pin::Pin;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{GetTablesBuilder, SqlInfoData, XdbcTypeInfoData};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetCrossReference,
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementIngest,
    CommandStatementQuery, CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt,
    SqlInfo, TableDefinitionOptions, TableExistsOption, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use cohort_engine::statement::rows_affected_batch;
use cohort_engine::tables::{CATALOG, SCHEMA};
use cohort_engine::{Engine, TableKind};
use cohort_proto::v1::StatementHandle;
use datafusion::catalog::TableProvider;
use datafusion::logical_expr::TableType;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Authenticator, Principal};
use crate::detached::detach;
use crate::limits::Governor;
use crate::statements::{Described, Ran, Statements};
use crate::status::{arrow_status, datafusion_status, engine_status};
use codec::{
    MAX_PARAMETER_BYTES, PutReading, decode_handle, decode_parameters, encode_parameters,
    parameter_values, read_put_batches,
};
use held::HeldCounts;
use prepared::PreparedStatements;

pub use codec::statement_ticket;

type DoGetStream = Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send>>;

pub struct CohortFlightSqlService {
    engine: Arc<Engine>,
    authenticator: Arc<Authenticator>,
    statements: Statements,
    prepared: PreparedStatements,
    held_results: HeldCounts,
    sql_info: SqlInfoData,
    xdbc_type_info: XdbcTypeInfoData,
}

impl CohortFlightSqlService {
    pub fn new(
        engine: Arc<Engine>,
        authenticator: Arc<Authenticator>,
        governor: Arc<Governor>,
    ) -> Self {
        Self {
            statements: Statements::new(Arc::clone(&engine), governor),
            engine,
            authenticator,
            prepared: PreparedStatements::default(),
            held_results: HeldCounts::default(),
            sql_info: metadata::sql_info(),
            xdbc_type_info: metadata::xdbc_type_info(),
        }
    }

    /// Plans (or, for data-changing statements, runs) `sql` and describes how to fetch its result.
    async fn statement_flight_info(
        &self,
        principal: &Principal,
        sql: &str,
        parameters: Option<&RecordBatch>,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let values = parameter_values(parameters, 0)?;
        let (schema, handle) = match self.statements.describe(principal, sql, values).await? {
            Described::Query(schema) => {
                let handle = StatementHandle {
                    sql: sql.to_string(),
                    parameters_ipc: encode_parameters(parameters)?,
                    query_id: uuid::Uuid::new_v4().to_string(),
                    ..Default::default()
                };
                (boundary::wire_schema(&schema), handle)
            }
            Described::RowsAffected(rows) => {
                let schema = rows_affected_batch(rows).schema();
                let id = uuid::Uuid::new_v4().to_string();
                self.held_results.hold(id.clone(), rows);
                let handle = StatementHandle {
                    result_id: id,
                    ..Default::default()
                };
                (schema, handle)
            }
        };
        let ticket = TicketStatementQuery {
            statement_handle: handle.encode_to_vec().into(),
        };
        flight_info(&schema, ticket.as_any().encode_to_vec(), descriptor)
    }

    fn put_reading(&self, what: &'static str, max_bytes: u64) -> PutReading<'_> {
        PutReading {
            what,
            max_bytes,
            memory: &self.engine.runtime().memory_pool,
            stall_timeout: self.statements.governor().limits().stall_timeout,
        }
    }

    /// Runs a statement for its row count (the update path), once per bound parameter row;
    /// several rows of a write run under one slot, an INSERT's as one commit.
    async fn execute_update(
        &self,
        principal: &Principal,
        sql: &str,
        parameters: Option<&RecordBatch>,
    ) -> Result<i64, Status> {
        let rows = parameters.map_or(0, RecordBatch::num_rows);
        if rows <= 1 {
            let values = parameter_values(parameters, 0)?;
            let count = self
                .statements
                .run_for_count(principal, sql, values)
                .await?;
            return Ok(count as i64);
        }
        let rows = (0..rows)
            .map(|row| parameter_values(parameters, row).map(Option::unwrap_or_default))
            .collect::<Result<Vec<_>, Status>>()?;
        let count = self
            .statements
            .run_each_for_count(principal, sql, rows)
            .await?;
        Ok(count as i64)
    }

    fn prepared(&self, handle: &[u8]) -> Result<(String, StatementHandle), Status> {
        let handle = decode_handle("prepared statement handle", handle)?;
        if handle.prepared_id.is_empty() {
            return Err(Status::invalid_argument("not a prepared statement handle"));
        }
        Ok((handle.prepared_id.clone(), handle))
    }

    fn metadata_flight_info(
        &self,
        schema: &Schema,
        command: impl ProstMessageExt,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        Ok(Response::new(flight_info(
            schema,
            command.as_any().encode_to_vec(),
            descriptor,
        )?))
    }

    async fn table_list(&self) -> Result<Vec<(String, String, Arc<dyn TableProvider>)>, Status> {
        let ctx = self.engine.session().await.map_err(engine_status)?;
        let catalog = ctx
            .catalog(CATALOG)
            .ok_or_else(|| Status::internal("default catalog missing"))?;
        let mut tables = Vec::new();
        for schema_name in catalog.schema_names() {
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            let mut names = schema.table_names();
            names.sort();
            for name in names {
                if let Some(provider) = schema
                    .table(&name)
                    .await
                    .map_err(|e| datafusion_status(&e))?
                {
                    tables.push((schema_name.clone(), name, provider));
                }
            }
        }
        Ok(tables)
    }
}

fn table_type_name(table_type: TableType) -> &'static str {
    match table_type {
        TableType::Base => "TABLE",
        TableType::View => "VIEW",
        TableType::Temporary => "LOCAL TEMPORARY",
    }
}

fn flight_info(
    schema: &Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo, Status> {
    Ok(FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| arrow_status(&e))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor)
        .with_total_records(-1)
        .with_total_bytes(-1))
}

fn batch_stream(batch: RecordBatch) -> Response<DoGetStream> {
    let schema = batch.schema();
    let stream = futures::stream::iter([Ok(batch)]);
    Response::new(encode(schema, stream))
}

fn encode(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
) -> DoGetStream {
    Box::pin(
        FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from),
    )
}

#[tonic::async_trait]
impl FlightSqlService for CohortFlightSqlService {
    type FlightService = CohortFlightSqlService;

    /// The auth layer has already checked the credentials (Basic or bearer); the handshake
    /// exchanges them for a session token, so the password is verified once per connection.
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let principal = Principal::of(&request)?;
        let token = self.authenticator.issue_session(principal);
        let response = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let mut response =
            Response::new(Box::pin(futures::stream::iter([Ok(response)])) as Pin<Box<_>>);
        let header = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("token header"))?;
        response.metadata_mut().insert("authorization", header);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let principal = Principal::of(&request)?.clone();
        let info = self
            .statement_flight_info(&principal, &query.query, None, request.into_inner())
            .await?;
        Ok(Response::new(info))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (id, _) = self.prepared(&query.prepared_statement_handle)?;
        let principal = Principal::of(&request)?.clone();
        let (sql, parameters) = self.prepared.get(&principal, &id)?;
        if parameters.as_ref().is_some_and(|p| p.num_rows() > 1) {
            return Err(Status::invalid_argument(
                "a query binds one row of parameters; bind several rows only for updates",
            ));
        }
        let info = self
            .statement_flight_info(&principal, &sql, parameters.as_ref(), request.into_inner())
            .await?;
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let principal = Principal::of(&request)?;
        let handle = decode_handle("statement ticket", ticket.statement_handle.as_ref())?;
        if !handle.result_id.is_empty() {
            let rows = self
                .held_results
                .take(&handle.result_id)
                .ok_or_else(|| Status::not_found("result already fetched or expired"))?;
            return Ok(batch_stream(rows_affected_batch(rows)));
        }
        let parameters = decode_parameters(&handle.parameters_ipc)?;
        let values = parameter_values(parameters.as_ref(), 0)?;
        let query_id = Some(handle.query_id.as_str()).filter(|id| !id.is_empty());
        let (schema, stream) = match self
            .statements
            .run(principal, &handle.sql, values, query_id)
            .await?
        {
            Ran::RowsAffected(rows) => return Ok(batch_stream(rows_affected_batch(rows))),
            Ran::Query { schema, stream } => (boundary::wire_schema(&schema), stream),
        };
        let target = Arc::clone(&schema);
        let batches = stream.map(move |batch| Ok(boundary::to_wire(&batch?, &target)?));
        let stall = self.statements.governor().limits().stall_timeout;
        let batches = detach(batches, stall, |status| {
            Err(FlightError::Tonic(Box::new(status)))
        });
        Ok(Response::new(encode(schema, batches)))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let principal = Principal::of(&request)?;
        self.engine
            .config()
            .limits
            .check_size(&query.query)
            .map_err(engine_status)?;
        let sql = cohort_engine::params::rewrite_question_marks(&query.query);
        // Planning takes a slot and the statement timeout like any other statement.
        let admitted = self.statements.governor().admit(None, true).await?;
        let (schema, parameter_types) = admitted
            .run(async {
                cohort_engine::plan_query_schema(&self.engine, &sql)
                    .await
                    .map_err(engine_status)
            })
            .await?;
        drop(admitted);
        let parameter_schema = Schema::new(
            parameter_types
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    Field::new(
                        format!("${}", i + 1),
                        t.clone().unwrap_or(DataType::Utf8),
                        true,
                    )
                })
                .collect::<Vec<_>>(),
        );
        let id = self.prepared.create(principal, sql.clone())?;
        let handle = StatementHandle {
            sql,
            prepared_id: id,
            ..Default::default()
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.encode_to_vec().into(),
            dataset_schema: schema_bytes(&boundary::wire_schema(&schema))?,
            parameter_schema: schema_bytes(&parameter_schema)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let (id, _) = self.prepared(&query.prepared_statement_handle)?;
        self.prepared.close(Principal::of(&request)?, &id)
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let (id, _) = self.prepared(&query.prepared_statement_handle)?;
        let principal = Principal::of(&request)?.clone();
        let put =
            read_put_batches(request, self.put_reading("parameters", MAX_PARAMETER_BYTES)).await?;
        let parameters = arrow::compute::concat_batches(&put.schema, &put.batches)
            .map_err(|e| arrow_status(&e))?;
        self.prepared.bind(&principal, &id, parameters)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(query.prepared_statement_handle),
        })
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let (id, _) = self.prepared(&query.prepared_statement_handle)?;
        let principal = Principal::of(&request)?.clone();
        let put =
            read_put_batches(request, self.put_reading("parameters", MAX_PARAMETER_BYTES)).await?;
        let (sql, stored) = self.prepared.get(&principal, &id)?;
        let parameters = if put.batches.is_empty() {
            stored
        } else {
            Some(
                arrow::compute::concat_batches(&put.schema, &put.batches)
                    .map_err(|e| arrow_status(&e))?,
            )
        };
        self.execute_update(&principal, &sql, parameters.as_ref())
            .await
    }

    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let principal = Principal::of(&request)?;
        self.execute_update(principal, &command.query, None).await
    }

    async fn do_put_statement_ingest(
        &self,
        command: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Principal::of(&request)?.require_admin()?;
        let kind: TableKind = command.table.parse().map_err(engine_status)?;
        if command.catalog.as_deref().is_some_and(|c| c != CATALOG)
            || command.schema.as_deref().is_some_and(|s| s != SCHEMA)
        {
            return Err(Status::not_found(format!(
                "bulk ingest writes to {CATALOG}.{SCHEMA}.events or {CATALOG}.{SCHEMA}.profiles"
            )));
        }
        if command.temporary {
            return Err(Status::unimplemented("temporary tables are not supported"));
        }
        check_exists_option(kind, command.table_definition_options.as_ref())?;
        // Ingest is a write: a slot (taken before the data is read, so uploads at once are as
        // many as statements), no timeout.
        let admitted = self.statements.governor().admit(None, false).await?;
        let max_bytes = self.statements.governor().limits().max_put_bytes;
        let report = admitted
            .run(async {
                let put =
                    read_put_batches(request, self.put_reading("bulk ingest", max_bytes)).await?;
                self.engine
                    .ingest_batches(kind, "bulk ingest", &put.schema, &put.batches)
                    .await
                    .map_err(engine_status)
            })
            .await?;
        Ok(report.rows as i64)
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_flight_info(&query.into_builder().schema(), query, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        Ok(batch_stream(builder.build().map_err(Status::from)?))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_flight_info(
            &query.clone().into_builder().schema(),
            query,
            request.into_inner(),
        )
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut builder = query.into_builder();
        let ctx = self.engine.session().await.map_err(engine_status)?;
        if let Some(catalog) = ctx.catalog(CATALOG) {
            let mut names = catalog.schema_names();
            names.sort();
            for name in names {
                builder.append(CATALOG, name);
            }
        }
        Ok(batch_stream(builder.build().map_err(Status::from)?))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_flight_info(
            &query.clone().into_builder().schema(),
            query,
            request.into_inner(),
        )
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut builder: GetTablesBuilder = query.into_builder();
        for (schema_name, name, provider) in self.table_list().await? {
            let schema = boundary::wire_schema(&provider.schema());
            builder
                .append(
                    CATALOG,
                    &schema_name,
                    &name,
                    table_type_name(provider.table_type()),
                    &schema,
                )
                .map_err(Status::from)?;
        }
        Ok(batch_stream(builder.build().map_err(Status::from)?))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_flight_info(&query.into_builder().schema(), query, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut builder = query.into_builder();
        for table_type in ["LOCAL TEMPORARY", "TABLE", "VIEW"] {
            builder.append(table_type);
        }
        Ok(batch_stream(builder.build().map_err(Status::from)?))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_flight_info(&self.sql_info.schema(), query, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let batch = query
            .into_builder(&self.sql_info)
            .build()
            .map_err(Status::from)?;
        Ok(batch_stream(batch))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_flight_info(&self.xdbc_type_info.schema(), query, request.into_inner())
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let batch = query
            .into_builder(&self.xdbc_type_info)
            .build()
            .map_err(Status::from)?;
        Ok(batch_stream(batch))
    }

    // Cohort's tables have no declared keys: these calls answer with empty results of the
    // specified schemas, which is what drivers expect, rather than UNIMPLEMENTED.

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_flight_info(
            &metadata::primary_keys_schema(),
            query,
            request.into_inner(),
        )
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Ok(batch_stream(RecordBatch::new_empty(
            metadata::primary_keys_schema(),
        )))
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_flight_info(
            &metadata::foreign_keys_schema(),
            query,
            request.into_inner(),
        )
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Ok(batch_stream(RecordBatch::new_empty(
            metadata::foreign_keys_schema(),
        )))
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_flight_info(
            &metadata::foreign_keys_schema(),
            query,
            request.into_inner(),
        )
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Ok(batch_stream(RecordBatch::new_empty(
            metadata::foreign_keys_schema(),
        )))
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_flight_info(
            &metadata::foreign_keys_schema(),
            query,
            request.into_inner(),
        )
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Ok(batch_stream(RecordBatch::new_empty(
            metadata::foreign_keys_schema(),
        )))
    }

    async fn do_get_fallback(
        &self,
        _request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(Status::unimplemented(format!(
            "unsupported ticket type {}",
            message.type_url
        )))
    }

    /// `CancelFlightInfo` (the Flight RPC action ADBC's cancel sends): stops the query the
    /// FlightInfo's ticket names, or keeps its DoGet from starting.
    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let action = request.into_inner();
        if action.r#type != "CancelFlightInfo" {
            return Err(Status::invalid_argument(format!(
                "unknown action type '{}'",
                action.r#type
            )));
        }
        let body = cancel::cancel_flight_info(self.statements.governor(), action)?;
        let body = arrow_flight::Result { body };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(body)]))))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &Default::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| arrow_status(&e))?;
    Ok(message.0)
}

/// ADBC's ingest modes map to these options: "append" (table must exist) works; "create" and
/// "replace" cannot, because `events` and `profiles` always exist and are never replaced.
fn check_exists_option(
    kind: TableKind,
    options: Option<&TableDefinitionOptions>,
) -> Result<(), Status> {
    let Some(options) = options else {
        return Ok(());
    };
    match TableExistsOption::try_from(options.if_exists).unwrap_or(TableExistsOption::Unspecified) {
        TableExistsOption::Append | TableExistsOption::Unspecified => Ok(()),
        TableExistsOption::Fail => Err(Status::already_exists(format!(
            "table {kind} already exists: ingest with mode 'append' (ADBC: adbc_ingest(..., mode=\"append\"))"
        ))),
        TableExistsOption::Replace => Err(Status::unimplemented(format!(
            "replacing table {kind} is not supported: ingest with mode 'append'"
        ))),
    }
}
