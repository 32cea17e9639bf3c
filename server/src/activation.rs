//! `cohort.v1.ActivationService`: segments for activation tools (see `activation.proto`).
//!
//! Everything is answered through the same SQL functions clients can call
//! (`segments`, `segment_members`, `segment_changes`), so the gRPC view and the SQL view of a
//! segment cannot disagree.

use std::pin::Pin;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use cohort_engine::Engine;
use cohort_engine::catalog_statement::validate_name;
use cohort_engine::segments::SegmentVersion as EngineVersion;
use cohort_proto::v1::activation_service_server::ActivationService;
use cohort_proto::v1::{
    ListSegmentsRequest, ListSegmentsResponse, SegmentVersion, StreamChangesRequest,
    StreamMembersRequest, SubscribeRequest, UsersBatch,
};
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::flight::boundary::{to_wire, wire_schema};
use crate::status::engine_status;

/// Users per streamed batch.
const BATCH_ROWS: usize = 65_536;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

pub struct CohortActivationService {
    engine: Arc<Engine>,
}

impl CohortActivationService {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
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

/// One version's users as messages of at most [`BATCH_ROWS`] users, the last one marked.
fn version_batches(
    segment: &str,
    version: i64,
    committed_at_micros: i64,
    users: &RecordBatch,
) -> Result<Vec<UsersBatch>, Status> {
    let mut messages = Vec::new();
    let mut offset = 0;
    loop {
        let length = BATCH_ROWS.min(users.num_rows() - offset);
        messages.push(UsersBatch {
            segment: segment.to_string(),
            version,
            committed_at_micros,
            arrow_ipc: ipc(&users.slice(offset, length))?,
            version_complete: offset + length == users.num_rows(),
        });
        offset += length;
        if offset >= users.num_rows() {
            return Ok(messages);
        }
    }
}

fn stream_of(messages: Vec<UsersBatch>) -> BoxStream<UsersBatch> {
    Box::pin(futures::stream::iter(messages.into_iter().map(Ok)))
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
                    "SELECT user_id, user_key FROM segment_members('{}', {})",
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
        let (_, users) = self
            .query(&format!(
                "SELECT user_id, user_key FROM segment_members('{}', {version}) ORDER BY user_key",
                segment.segment
            ))
            .await?;
        let committed_at = if version == segment.version {
            segment.committed_at_micros
        } else {
            let (_, batch) = self
                .query(&format!(
                    "SELECT committed_at FROM segment_versions WHERE segment = '{}' AND version = {version}",
                    segment.segment
                ))
                .await?;
            let column = as_type(&batch, 0, &DataType::Int64)?;
            column
                .as_primitive::<Int64Type>()
                .values()
                .first()
                .copied()
                .unwrap_or(0)
        };
        Ok(Response::new(stream_of(version_batches(
            &segment.segment,
            version,
            committed_at,
            &users,
        )?)))
    }

    type StreamChangesStream = BoxStream<UsersBatch>;

    async fn stream_changes(
        &self,
        request: Request<StreamChangesRequest>,
    ) -> Result<Response<Self::StreamChangesStream>, Status> {
        let request = request.into_inner();
        let segment = self.segment(&request.segment).await?;
        let (_, changes) = self
            .query(&format!(
                "SELECT user_id, user_key, change, version, CAST(changed_at AS BIGINT) AS changed_at \
                 FROM segment_changes('{}', {}) ORDER BY version, change, user_key",
                segment.segment, request.after_version
            ))
            .await?;
        let (_, versions) = self
            .query(&format!(
                "SELECT version, CAST(committed_at AS BIGINT) FROM segment_versions \
                 WHERE segment = '{}' AND version > {} ORDER BY version",
                segment.segment, request.after_version
            ))
            .await?;
        let numbers = as_type(&changes, 3, &DataType::Int64)?;
        let numbers = numbers.as_primitive::<Int64Type>();
        let change = as_type(&changes, 2, &DataType::Utf8)?;
        let users = RecordBatch::try_new(
            Arc::new(arrow::datatypes::Schema::new(vec![
                changes.schema().field(0).clone(),
                changes.schema().field(1).clone(),
                arrow::datatypes::Field::new("change", DataType::Utf8, false),
            ])),
            vec![
                Arc::clone(changes.column(0)),
                Arc::clone(changes.column(1)),
                change,
            ],
        )
        .map_err(|e| Status::internal(e.to_string()))?;
        let version_numbers = as_type(&versions, 0, &DataType::Int64)?;
        let committed = as_type(&versions, 1, &DataType::Int64)?;
        let mut messages = Vec::new();
        let mut start = 0;
        // Every version after the cursor gets at least one message, even one that changed nobody,
        // so the cursor always advances to the newest version.
        for row in 0..versions.num_rows() {
            let version = version_numbers.as_primitive::<Int64Type>().value(row);
            let committed_at = committed.as_primitive::<Int64Type>().value(row);
            let mut end = start;
            while end < numbers.len() && numbers.value(end) == version {
                end += 1;
            }
            messages.extend(version_batches(
                &segment.segment,
                version,
                committed_at,
                &users.slice(start, end - start),
            )?);
            start = end;
        }
        Ok(Response::new(stream_of(messages)))
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
