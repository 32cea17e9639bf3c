//! Bytes clients send in Flight SQL requests, decoded with their claimed lengths checked first:
//! statement tickets and handles (protobuf), bound parameters (an Arrow IPC stream inside a
//! handle, or a DoPut) and DoPut record batches (see `cohort_engine::ipc` for why lengths are
//! checked before arrow decodes anything).

use std::sync::Arc;
use std::time::Duration;

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
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
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

/// A DoPut's decoded record batches, accounted in the engine's memory pool while they are held.
pub struct PutBatches {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    _reservation: MemoryReservation,
}

/// How a DoPut is read: what it carries (for messages), the most bytes it may decode to, the
/// pool its batches are accounted in, and how long the client may send nothing.
pub struct PutReading<'a> {
    pub what: &'static str,
    pub max_bytes: u64,
    pub memory: &'a Arc<dyn MemoryPool>,
    pub stall_timeout: Duration,
}

/// Reads the record batches of a DoPut (ingest data or parameter bindings); each message is
/// checked before it is decoded, all of them together may decode to `max_bytes` at most, and
/// the decoded batches are reserved in the memory pool that bounds queries, so concurrent
/// uploads cannot together outgrow the server's memory limit. A client that sends nothing for
/// `stall_timeout` (when non-zero) is refused, so an idle upload does not hold its slot.
pub async fn read_put_batches(
    request: Request<PeekableFlightDataStream>,
    reading: PutReading<'_>,
) -> Result<PutBatches, Status> {
    let what = reading.what;
    let mut budget = DecodeBudget::new(what, reading.max_bytes);
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
    let reservation = MemoryConsumer::new(format!("DoPut {what}")).register(reading.memory);
    let mut batches = Vec::new();
    loop {
        let next = if reading.stall_timeout.is_zero() {
            decoded.next().await
        } else {
            tokio::time::timeout(reading.stall_timeout, decoded.next())
                .await
                .map_err(|_| {
                    Status::deadline_exceeded(format!(
                        "{what}: the client sent nothing for {} s (stall_timeout)",
                        reading.stall_timeout.as_secs_f64()
                    ))
                })?
        };
        let Some(batch) = next else { break };
        let batch = batch.map_err(|e| match e {
            FlightError::Tonic(status) => *status,
            other => decode_status("Arrow IPC data", other),
        })?;
        reservation
            .try_grow(batch.get_array_memory_size())
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "{what}: the server's memory limit is taken by other work ({} MiB of this \
                     request held); retry later, send less at once, or raise memory_limit",
                    reservation.size() >> 20
                ))
            })?;
        batches.push(batch);
    }
    let schema = decoded
        .schema()
        .cloned()
        .or_else(|| batches.first().map(RecordBatch::schema))
        .unwrap_or_else(|| Arc::new(Schema::empty()));
    Ok(PutBatches {
        schema,
        batches,
        _reservation: reservation,
    })
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
