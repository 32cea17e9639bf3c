//! Bytes clients send in Flight SQL requests, decoded with their claimed lengths checked first:
//! statement tickets and handles (protobuf), bound parameters (an Arrow IPC stream inside a
//! handle, or a DoPut) and DoPut record batches (see `cohort_engine::ipc` for why lengths are
//! checked before arrow decodes anything).

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use arrow_flight::FlightData;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{Any, ProstMessageExt, TicketStatementQuery};
use cohort_engine::ipc::{DecodeBudget, check_message, read_stream};
use cohort_proto::v1::StatementHandle;
use datafusion::common::ScalarValue;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Status};

use crate::status::{arrow_status, decode_status, engine_status};

/// Most bytes bound parameters may decode to, in a handle or one DoPut.
pub const MAX_PARAMETER_BYTES: u64 = 64 << 20;

/// A statement handle (a ticket's or a prepared statement's), from protobuf bytes.
pub fn decode_handle(what: &str, bytes: &[u8]) -> Result<StatementHandle, Status> {
    StatementHandle::decode(bytes).map_err(|e| decode_status(what, e))
}

/// The statement handles a ticket names (for CancelFlightInfo).
pub fn ticket_handle(ticket: &[u8]) -> Result<Option<StatementHandle>, Status> {
    let any = Any::decode(ticket).map_err(|e| decode_status("ticket", e))?;
    match any
        .unpack::<TicketStatementQuery>()
        .map_err(|e| decode_status("ticket", e))?
    {
        Some(statement) => Ok(Some(decode_handle(
            "statement ticket",
            statement.statement_handle.as_ref(),
        )?)),
        None => Ok(None),
    }
}

pub fn encode_parameters(parameters: Option<&RecordBatch>) -> Result<Vec<u8>, Status> {
    let Some(batch) = parameters else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut writer =
        StreamWriter::try_new(&mut out, &batch.schema()).map_err(|e| arrow_status(&e))?;
    writer.write(batch).map_err(|e| arrow_status(&e))?;
    writer.finish().map_err(|e| arrow_status(&e))?;
    drop(writer);
    Ok(out)
}

/// The parameters a handle carries, checked before decoding.
pub fn decode_parameters(bytes: &[u8]) -> Result<Option<RecordBatch>, Status> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let mut budget = DecodeBudget::new("parameters", MAX_PARAMETER_BYTES);
    let batches = read_stream(bytes, &mut budget).map_err(engine_status)?;
    Ok(batches.into_iter().next())
}

pub fn parameter_values(
    parameters: Option<&RecordBatch>,
    row: usize,
) -> Result<Option<Vec<ScalarValue>>, Status> {
    match parameters {
        Some(batch) if batch.num_columns() > 0 && batch.num_rows() > 0 => Ok(Some(
            cohort_engine::params::params_from_row(batch, row).map_err(engine_status)?,
        )),
        _ => Ok(None),
    }
}

/// Checks one DoPut message's claimed lengths against its bytes and the request's budget.
fn check_flight_data(data: &FlightData, budget: &mut DecodeBudget) -> Result<(), Status> {
    if data.data_header.is_empty() {
        return Ok(());
    }
    check_message(&data.data_header, &data.data_body, budget)
        .map(|_| ())
        .map_err(engine_status)
}

/// Reads the record batches of a DoPut (ingest data or parameter bindings); each message is
/// checked before it is decoded, and all of them together may decode to `max_bytes` at most.
pub async fn read_put_batches(
    request: Request<PeekableFlightDataStream>,
    what: &'static str,
    max_bytes: u64,
) -> Result<(SchemaRef, Vec<RecordBatch>), Status> {
    let mut budget = DecodeBudget::new(what, max_bytes);
    let checked = request
        .into_inner()
        .map(move |data| {
            let data = data?;
            check_flight_data(&data, &mut budget)?;
            Ok::<_, Status>(data)
        })
        // A message with no IPC header only carries the descriptor (arrow's Rust client sends
        // one before a prepared update's first batch, or alone when nothing is bound).
        .try_filter(|data| futures::future::ready(!data.data_header.is_empty()));
    let mut decoded =
        FlightRecordBatchStream::new_from_flight_data(checked.map_err(FlightError::from));
    let mut batches = Vec::new();
    while let Some(batch) = decoded.next().await {
        batches.push(batch.map_err(|e| match e {
            FlightError::Tonic(status) => *status,
            other => decode_status("Arrow IPC data", other),
        })?);
    }
    let schema = decoded
        .schema()
        .cloned()
        .or_else(|| batches.first().map(RecordBatch::schema))
        .unwrap_or_else(|| Arc::new(Schema::empty()));
    Ok((schema, batches))
}

/// A self-contained DoGet ticket that runs `sql` (a query) on any Cohort server.
pub fn statement_ticket(sql: &str) -> Vec<u8> {
    let handle = StatementHandle {
        sql: sql.to_string(),
        ..Default::default()
    };
    TicketStatementQuery {
        statement_handle: handle.encode_to_vec().into(),
    }
    .as_any()
    .encode_to_vec()
}
