//! `cohort.v1.ActivationService`: segments for activation tools (see `activation.proto`).
//!
//! Everything is answered through the same SQL functions clients can call
//! (`segments`, `segment_members`, `segment_changes`), so the gRPC view and the SQL view of a
//! segment cannot disagree.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{BatchCoalescer, concat_batches};
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use cohort_engine::Engine;
use cohort_engine::catalog_statement::validate_name;
use cohort_engine::segments::SegmentVersion as EngineVersion;
use cohort_engine::statement::StatementOutcome;
use cohort_proto::v1::activation_service_server::ActivationService;
use cohort_proto::v1::{
    ListSegmentsRequest, ListSegmentsResponse, SegmentVersion, StreamChangesRequest,
    StreamMembersRequest, SubscribeRequest, UsersBatch,
};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::detached::{StreamOut, spawn_producer};
use crate::flight::boundary::{to_wire, wire_schema};
use crate::limits::{Admitted, Governor};
use crate::status::engine_status;

/// Users per streamed batch.
const BATCH_ROWS: usize = 65_536;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

pub struct CohortActivationService {
    engine: Arc<Engine>,
    /// Streams take a statement slot like any query (untimed: a consumer paces a big segment).
    governor: Arc<Governor>,
}

impl CohortActivationService {
    pub fn new(engine: Arc<Engine>, governor: Arc<Governor>) -> Self {
        Self { engine, governor }
    }

    async fn query(&self, sql: &str) -> Result<(SchemaRef, RecordBatch), Status> {
        let (schema, batches) = self
            .engine
            .execute_collect(sql)
            .await
            .map_err(engine_status)?;
        let batch =
            concat_batches(&schema, &batches).map_err(|e| Status::internal(e.to_string()))?;
        Ok((schema, batch))
    }

    async fn segments(&self, only: Option<&str>) -> Result<Vec<SegmentVersion>, Status> {
        let filter = only.map_or(String::new(), |name| format!(" WHERE segment = '{name}'"));
        let (_, batch) = self
            .query(&format!(
                "SELECT segment, schedule, version, members, entered, exited, refreshed_at \
                 FROM segments{filter} ORDER BY segment"
            ))
            .await?;
        let (segments, schedules) = (
            as_type(&batch, 0, &DataType::Utf8)?,
            as_type(&batch, 1, &DataType::Utf8)?,
        );
        let (segments, schedules) = (segments.as_string::<i32>(), schedules.as_string::<i32>());
        let text = |i: usize| if i == 0 { segments } else { schedules };
        let ints = (2..6)
            .map(|i| as_type(&batch, i, &DataType::Int64))
            .collect::<Result<Vec<_>, _>>()?;
        let int = |i: usize| ints[i - 2].as_primitive::<Int64Type>();
        let micros = as_type(&batch, 6, &DataType::Int64)?;
        let micros = micros.as_primitive::<Int64Type>();
        Ok((0..batch.num_rows())
            .map(|row| SegmentVersion {
                segment: text(0).value(row).to_string(),
                schedule: if text(1).is_valid(row) {
                    text(1).value(row).to_string()
                } else {
                    String::new()
                },
                version: value_or_zero(int(2), row),
                members: value_or_zero(int(3), row),
                entered: value_or_zero(int(4), row),
                exited: value_or_zero(int(5), row),
                committed_at_micros: value_or_zero(micros, row),
                flight_ticket: Vec::new(),
            })
            .collect())
    }

    async fn segment(&self, name: &str) -> Result<SegmentVersion, Status> {
        let name = checked_name(name)?;
        self.segments(Some(&name))
            .await?
            .pop()
            .ok_or_else(|| Status::not_found(format!("unknown segment '{name}'")))
    }
}

/// NULL (a segment without a version yet) reads as 0, as the proto documents.
fn value_or_zero(column: &arrow::array::Int64Array, row: usize) -> i64 {
    if column.is_valid(row) {
        column.value(row)
    } else {
        0
    }
}

/// A column converted to the type this service reads it as (the engine may hand out view or
/// dictionary encodings).
fn as_type(
    batch: &RecordBatch,
    index: usize,
    data_type: &DataType,
) -> Result<arrow::array::ArrayRef, Status> {
    arrow::compute::cast(batch.column(index), data_type)
        .map_err(|e| Status::internal(e.to_string()))
}

/// Segment names are identifiers; anything else never reaches SQL text.
fn checked_name(name: &str) -> Result<String, Status> {
    let name = name.to_lowercase();
    validate_name(&name).map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(name)
}

/// Encodes with the plain types every Arrow client reads (no view types).
fn ipc(batch: &RecordBatch) -> Result<Vec<u8>, Status> {
    let batch = &to_wire(batch, &wire_schema(&batch.schema()))
        .map_err(|e| Status::internal(e.to_string()))?;
    let mut bytes = Vec::new();
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut bytes, &batch.schema())
        .map_err(|e| Status::internal(e.to_string()))?;
    writer
        .write(batch)
        .map_err(|e| Status::internal(e.to_string()))?;
    writer
        .finish()
        .map_err(|e| Status::internal(e.to_string()))?;
    drop(writer);
    Ok(bytes)
}

/// A version's identity, repeated in each of its messages.
#[derive(Clone)]
struct VersionHeader {
    segment: String,
    version: i64,
    committed_at_micros: i64,
}

type Messages = StreamOut<Result<UsersBatch, Status>>;

/// Runs `producer` on its own task, holding the admission slot until it is done, and streams
/// what it sends. A bounded channel keeps at most a couple of encoded batches ahead of the
/// consumer, so a segment of any size streams in constant memory; when the consumer goes away,
/// the next send fails and the producer stops; when it stops reading for `stall_timeout`, the
/// producer ends and frees the slot (see [`crate::detached`]).
fn spawn_stream<F, Fut>(
    admitted: Admitted,
    stall_timeout: std::time::Duration,
    producer: F,
) -> BoxStream<UsersBatch>
where
    F: FnOnce(Messages) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    spawn_producer(stall_timeout, Err, move |messages| async move {
        let _slot = admitted;
        producer(messages).await
    })
}

async fn send(messages: &Messages, message: UsersBatch) -> Result<(), Status> {
    messages.send(Ok(message)).await
}

/// Runs `sql` and sends its rows as one version's messages of at most [`BATCH_ROWS`] users.
/// The last message is marked complete; a version without rows still gets that one message, so
/// a consumer's cursor always advances.
async fn send_version(
    engine: &Engine,
    sql: &str,
    header: &VersionHeader,
    messages: &Messages,
) -> Result<(), Status> {
    let StatementOutcome::Query(frame) = engine.execute(sql, None).await.map_err(engine_status)?
    else {
        return Err(Status::internal("a segment read did not plan as a query"));
    };
    let mut rows = frame.execute_stream().await.map_err(internal)?;
    let schema = rows.schema();
    let mut coalescer = BatchCoalescer::new(Arc::clone(&schema), BATCH_ROWS);
    // One full batch is held back until the next exists: only then is it known not to be last.
    let mut held: Option<RecordBatch> = None;
    let message = |users: &RecordBatch, version_complete| -> Result<UsersBatch, Status> {
        Ok(UsersBatch {
            segment: header.segment.clone(),
            version: header.version,
            committed_at_micros: header.committed_at_micros,
            arrow_ipc: ipc(users)?,
            version_complete,
        })
    };
    let mut finished = false;
    while !finished {
        match rows.next().await {
            Some(batch) => coalescer.push_batch(batch.map_err(internal)?),
            None => {
                finished = true;
                coalescer.finish_buffered_batch()
            }
        }
        .map_err(internal)?;
        while let Some(full) = coalescer.next_completed_batch() {
            if let Some(previous) = held.replace(full) {
                send(messages, message(&previous, false)?).await?;
            }
        }
    }
    let last = held.unwrap_or_else(|| RecordBatch::new_empty(schema));
    send(messages, message(&last, true)?).await
}

fn internal(error: impl std::fmt::Display) -> Status {
    Status::internal(error.to_string())
}

fn proto_version(version: &EngineVersion, schedule: String) -> SegmentVersion {
    SegmentVersion {
        segment: version.segment.clone(),
        version: version.version,
        members: version.members,
        entered: version.entered,
        exited: version.exited,
        committed_at_micros: version.committed_at,
        schedule,
        flight_ticket: Vec::new(),
    }
}

#[tonic::async_trait]
impl ActivationService for CohortActivationService {
    async fn list_segments(
        &self,
        _request: Request<ListSegmentsRequest>,
    ) -> Result<Response<ListSegmentsResponse>, Status> {
        let mut segments = self.segments(None).await?;
        for segment in &mut segments {
            if segment.version > 0 {
                segment.flight_ticket = crate::flight::statement_ticket(&format!(
                    "SELECT * FROM segment_members('{}', {})",
                    segment.segment, segment.version
                ));
            }
        }
        Ok(Response::new(ListSegmentsResponse { segments }))
    }

    type StreamMembersStream = BoxStream<UsersBatch>;

    async fn stream_members(
        &self,
        request: Request<StreamMembersRequest>,
    ) -> Result<Response<Self::StreamMembersStream>, Status> {
        let request = request.into_inner();
        let segment = self.segment(&request.segment).await?;
        // Pin the version first, so the users and the version number always match.
        let version = request.version.unwrap_or(segment.version);
        let committed_at_micros = if version == segment.version {
            segment.committed_at_micros
        } else {
            let (_, batch) = self
                .query(&format!(
                    "SELECT CAST(committed_at AS BIGINT) FROM segment_versions \
                     WHERE segment = '{}' AND version = {version}",
                    segment.segment
                ))
                .await?;
            if batch.num_rows() == 0 {
                return Err(Status::not_found(format!(
                    "segment '{}' has no version {version}",
                    segment.segment
                )));
            }
            as_type(&batch, 0, &DataType::Int64)?
                .as_primitive::<Int64Type>()
                .value(0)
        };
        let header = VersionHeader {
            segment: segment.segment,
            version,
            committed_at_micros,
        };
        let admitted = self.governor.admit(None, false).await?;
        let engine = Arc::clone(&self.engine);
        let stall = self.governor.limits().stall_timeout;
        Ok(Response::new(spawn_stream(
            admitted,
            stall,
            move |messages| async move {
                let sql = format!(
                    "SELECT * FROM segment_members('{}', {version})",
                    header.segment
                );
                send_version(&engine, &sql, &header, &messages).await
            },
        )))
    }

    type StreamChangesStream = BoxStream<UsersBatch>;

    async fn stream_changes(
        &self,
        request: Request<StreamChangesRequest>,
    ) -> Result<Response<Self::StreamChangesStream>, Status> {
        let request = request.into_inner();
        let segment = self.segment(&request.segment).await?;
        let (_, versions) = self
            .query(&format!(
                "SELECT version, CAST(committed_at AS BIGINT) FROM segment_versions \
                 WHERE segment = '{}' AND version > {} ORDER BY version",
                segment.segment, request.after_version
            ))
            .await?;
        let numbers = as_type(&versions, 0, &DataType::Int64)?;
        let committed = as_type(&versions, 1, &DataType::Int64)?;
        let headers: Vec<VersionHeader> = (0..versions.num_rows())
            .map(|row| VersionHeader {
                segment: segment.segment.clone(),
                version: numbers.as_primitive::<Int64Type>().value(row),
                committed_at_micros: committed.as_primitive::<Int64Type>().value(row),
            })
            .collect();
        let admitted = self.governor.admit(None, false).await?;
        let engine = Arc::clone(&self.engine);
        // Version by version, so only one version's changes are in flight at a time and each
        // version's messages end with the one marked complete.
        let stall = self.governor.limits().stall_timeout;
        Ok(Response::new(spawn_stream(
            admitted,
            stall,
            move |messages| async move {
                for header in &headers {
                    let sql = format!(
                        "SELECT * EXCLUDE (version, changed_at) FROM segment_changes('{}', {}) \
                     WHERE version = {}",
                        header.segment,
                        header.version - 1,
                        header.version
                    );
                    send_version(&engine, &sql, header, &messages).await?;
                }
                Ok(())
            },
        )))
    }

    type SubscribeStream = BoxStream<SegmentVersion>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let wanted = request
            .into_inner()
            .segments
            .iter()
            .map(|s| checked_name(s))
            .collect::<Result<Vec<_>, _>>()?;
        let receiver = self.engine.subscribe_segment_versions();
        let stream = futures::stream::unfold(receiver, move |mut receiver| {
            let wanted = wanted.clone();
            async move {
                loop {
                    match receiver.recv().await {
                        Ok(version) if wanted.is_empty() || wanted.contains(&version.segment) => {
                            return Some((Ok(proto_version(&version, String::new())), receiver));
                        }
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::warn!(
                                missed,
                                "a subscriber fell behind; it should re-list segments"
                            );
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
