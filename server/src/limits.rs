//! Server-wide limits on running statements: how many run at once (the rest queue, then get
//! RESOURCE_EXHAUSTED), how long a query may take, how large one result may be, and
//! cancellation by `CancelFlightInfo`. Memory is bounded by the engine's spilling memory pool.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use arrow_flight::error::FlightError;
use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::Status;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryLimits {
    /// Longest a query may run, from admission to its last batch; `None` for no limit.
    pub statement_timeout: Option<Duration>,
    /// Statements running at once.
    pub max_concurrent_queries: usize,
    /// How long a statement waits for a slot before RESOURCE_EXHAUSTED.
    pub queue_timeout: Duration,
    /// Rows one result may have.
    pub max_result_rows: u64,
    /// Bytes (Arrow in-memory size) one result may have.
    pub max_result_bytes: u64,
    /// Bytes one bulk ingest (DoPut) may decode to; it is held in memory until committed.
    pub max_put_bytes: u64,
    /// How long a result stream waits for a client that reads nothing before it ends the
    /// stream and frees the statement's slot.
    pub stall_timeout: Duration,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            statement_timeout: Some(Duration::from_secs(300)),
            max_concurrent_queries: 16,
            queue_timeout: Duration::from_secs(30),
            max_result_rows: 100_000_000,
            max_result_bytes: 4 << 30,
            max_put_bytes: 2 << 30,
            stall_timeout: Duration::from_secs(60),
        }
    }
}

/// What a running query holds: its concurrency slot, deadline and cancellation.
pub struct Admitted {
    _slot: OwnedSemaphorePermit,
    deadline: Option<Instant>,
    cancelled: CancellationToken,
    registration: Option<(Arc<Governor>, String)>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some((governor, id)) = self.registration.take() {
            governor.running.lock().expect("lock poisoned").remove(&id);
        }
    }
}

impl Admitted {
    /// Runs `work` (e.g. planning) under the query's deadline and cancellation.
    pub async fn run<T>(&self, work: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
        let deadline = async {
            match self.deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = work => result,
            () = deadline => Err(timeout_status()),
            () = self.cancelled.cancelled() => Err(cancelled_status()),
        }
    }
}

fn timeout_status() -> Status {
    Status::deadline_exceeded(
        "statement timeout: the query ran longer than statement_timeout and was stopped",
    )
}

fn cancelled_status() -> Status {
    Status::cancelled("query cancelled by CancelFlightInfo")
}

/// Admission and tracking of running statements.
pub struct Governor {
    limits: QueryLimits,
    slots: Arc<Semaphore>,
    /// Queries running (by the query id in their ticket), for CancelFlightInfo.
    running: Mutex<HashMap<String, CancellationToken>>,
    /// Ids cancelled before their DoGet started: the DoGet must not run them.
    cancelled_early: Mutex<HashMap<String, Instant>>,
}

/// Cancellations of queries that have not started are remembered this long.
const EARLY_CANCEL_MEMORY: Duration = Duration::from_secs(600);

impl Governor {
    pub fn new(limits: QueryLimits) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(limits.max_concurrent_queries)),
            limits,
            running: Mutex::new(HashMap::new()),
            cancelled_early: Mutex::new(HashMap::new()),
        })
    }

    pub fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    /// Waits for a slot (up to the queue timeout). `query_id` registers the query for
    /// cancellation; `timed` applies the statement timeout (queries; writes run to completion
    /// so that a commit is never abandoned half way through a run's bookkeeping).
    pub async fn admit(
        self: &Arc<Self>,
        query_id: Option<&str>,
        timed: bool,
    ) -> Result<Admitted, Status> {
        if let Some(id) = query_id
            && self
                .cancelled_early
                .lock()
                .expect("lock poisoned")
                .remove(id)
                .is_some()
        {
            return Err(cancelled_status());
        }
        let permit = tokio::time::timeout(
            self.limits.queue_timeout,
            Arc::clone(&self.slots).acquire_owned(),
        )
        .await
        .map_err(|_| {
            Status::resource_exhausted(format!(
                "server busy: {} statements are running and none finished within {:?} \
                 (max_concurrent_queries, queue_timeout); retry later",
                self.limits.max_concurrent_queries, self.limits.queue_timeout
            ))
        })?
        .map_err(|_| Status::unavailable("server shutting down"))?;
        let cancelled = CancellationToken::new();
        let registration = query_id.map(|id| {
            self.running
                .lock()
                .expect("lock poisoned")
                .insert(id.to_string(), cancelled.clone());
            (Arc::clone(self), id.to_string())
        });
        Ok(Admitted {
            _slot: permit,
            deadline: self
                .limits
                .statement_timeout
                .filter(|_| timed)
                .map(|t| Instant::now() + t),
            cancelled,
            registration,
        })
    }

    /// Cancels the query `id`: running, it stops; not started yet, its DoGet is refused.
    /// Returns whether it was running.
    pub fn cancel(&self, id: &str) -> bool {
        if let Some(token) = self.running.lock().expect("lock poisoned").get(id) {
            token.cancel();
            return true;
        }
        let mut early = self.cancelled_early.lock().expect("lock poisoned");
        let now = Instant::now();
        early.retain(|_, at| now.duration_since(*at) < EARLY_CANCEL_MEMORY);
        early.insert(id.to_string(), now);
        false
    }

    /// Wraps a result stream: ends it with an error when the deadline passes, the query is
    /// cancelled, or the result grows past the row or byte limit. Dropping the stream (the
    /// client went away) drops the query's execution and frees its slot and memory.
    pub fn limit_stream<S>(&self, admitted: Admitted, inner: S) -> LimitedStream<S>
    where
        S: Stream<Item = Result<RecordBatch, FlightError>> + Send + Unpin,
    {
        let deadline: Pin<Box<dyn Future<Output = ()> + Send>> = match admitted.deadline {
            Some(at) => Box::pin(tokio::time::sleep_until(at.into())),
            None => Box::pin(std::future::pending()),
        };
        let cancelled = Box::pin(admitted.cancelled.clone().cancelled_owned());
        LimitedStream {
            inner,
            admitted: Some(admitted),
            deadline,
            cancelled,
            rows: 0,
            bytes: 0,
            max_rows: self.limits.max_result_rows,
            max_bytes: self.limits.max_result_bytes,
        }
    }
}

pub struct LimitedStream<S> {
    inner: S,
    /// Released (slot and registration) as soon as the stream ends, not when it is dropped.
    admitted: Option<Admitted>,
    deadline: Pin<Box<dyn Future<Output = ()> + Send>>,
    cancelled: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    rows: u64,
    bytes: u64,
    max_rows: u64,
    max_bytes: u64,
}

impl<S> LimitedStream<S> {
    fn fail(&mut self, status: Status) -> Poll<Option<Result<RecordBatch, FlightError>>> {
        self.admitted = None;
        Poll::Ready(Some(Err(FlightError::Tonic(Box::new(status)))))
    }
}

impl<S> Stream for LimitedStream<S>
where
    S: Stream<Item = Result<RecordBatch, FlightError>> + Send + Unpin,
{
    type Item = Result<RecordBatch, FlightError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.admitted.is_none() {
            return Poll::Ready(None);
        }
        if this.cancelled.as_mut().poll(cx).is_ready() {
            return this.fail(cancelled_status());
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return this.fail(timeout_status());
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(batch))) => {
                this.rows += batch.num_rows() as u64;
                this.bytes += batch.get_array_memory_size() as u64;
                if this.rows > this.max_rows {
                    let max = this.max_rows;
                    return this.fail(Status::resource_exhausted(format!(
                        "result has more than {max} rows (max_result_rows): add a LIMIT or aggregate"
                    )));
                }
                if this.bytes > this.max_bytes {
                    let max = this.max_bytes;
                    return this.fail(Status::resource_exhausted(format!(
                        "result is larger than {max} bytes (max_result_bytes): add a LIMIT, select fewer columns or aggregate"
                    )));
                }
                Poll::Ready(Some(Ok(batch)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.admitted = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.admitted = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use futures::StreamExt;

    fn batch(rows: usize) -> RecordBatch {
        RecordBatch::try_from_iter([(
            "x",
            Arc::new(Int64Array::from_iter_values(0..rows as i64)) as _,
        )])
        .unwrap()
    }

    fn limits() -> QueryLimits {
        QueryLimits {
            statement_timeout: Some(Duration::from_millis(200)),
            max_concurrent_queries: 1,
            queue_timeout: Duration::from_millis(100),
            max_result_rows: 10,
            max_result_bytes: 1 << 20,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_full_server_queues_then_refuses() {
        let governor = Governor::new(limits());
        let first = governor.admit(None, true).await.unwrap();
        let status = governor.admit(None, true).await.err().unwrap();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        drop(first);
        governor.admit(None, true).await.unwrap();
    }

    #[tokio::test]
    async fn results_past_the_row_limit_end_with_an_error_and_free_the_slot() {
        let governor = Governor::new(limits());
        let admitted = governor.admit(None, true).await.unwrap();
        let stream = futures::stream::iter([Ok(batch(6)), Ok(batch(6)), Ok(batch(1))]);
        let items: Vec<_> = governor.limit_stream(admitted, stream).collect().await;
        assert_eq!(items.len(), 2);
        let Err(FlightError::Tonic(status)) = &items[1] else {
            panic!("expected an error")
        };
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        governor.admit(None, true).await.unwrap();
    }

    #[tokio::test]
    async fn slow_queries_hit_the_deadline_and_cancellation_stops_them() {
        let governor = Governor::new(limits());
        let admitted = governor.admit(Some("q1"), true).await.unwrap();
        let never = futures::stream::pending::<Result<RecordBatch, FlightError>>();
        let mut stream = governor.limit_stream(admitted, never);
        let Some(Err(FlightError::Tonic(status))) = stream.next().await else {
            panic!("expected the deadline")
        };
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        drop(stream);

        let admitted = governor.admit(Some("q2"), false).await.unwrap();
        let mut stream = governor.limit_stream(admitted, futures::stream::pending());
        assert!(governor.cancel("q2"));
        let Some(Err(FlightError::Tonic(status))) = stream.next().await else {
            panic!("expected cancellation")
        };
        assert_eq!(status.code(), tonic::Code::Cancelled);
        drop(stream);

        // Cancelled before it started: the DoGet is refused.
        assert!(!governor.cancel("q3"));
        let status = governor.admit(Some("q3"), true).await.err().unwrap();
        assert_eq!(status.code(), tonic::Code::Cancelled);
    }
}
