//! Result streams produced on their own task, so that a consumer who stops reading cannot hold
//! a statement slot forever.
//!
//! A gRPC response stream is only polled while the client reads: when it stops (a stalled BI
//! tool, a consumer that opened `StreamMembers` and went to sleep), the statement's deadline and
//! cancellation, which are checked when the stream is polled, would never fire, and the slot
//! would stay taken. Here a task produces the items into a small channel; if the consumer
//! accepts nothing for `stall_timeout`, the task records an error, drops the producer (which
//! frees the slot and stops the query) and ends. The consumer receives what was buffered and
//! then that error, never a silently truncated result. A consumer that goes away stops the
//! producer at once, even while it is computing.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// Items in flight between the producer task and the consumer.
const BUFFERED: usize = 2;

/// The producer's end: sends with the stall timeout, records a failure for the consumer.
pub struct StreamOut<T> {
    sender: mpsc::Sender<T>,
    failure: Arc<Mutex<Option<Status>>>,
    stall_timeout: Duration,
}

impl<T: Send + 'static> StreamOut<T> {
    /// Sends `item`; an error when the consumer went away or stopped reading (then recorded).
    pub async fn send(&self, item: T) -> Result<(), Status> {
        tokio::select! {
            sent = self.sender.send(item) => {
                sent.map_err(|_| Status::cancelled("the consumer went away"))
            }
            () = tokio::time::sleep(self.stall_timeout) => {
                let status = Status::deadline_exceeded(format!(
                    "the client read nothing for {} s (stall_timeout): the stream was ended \
                     and its statement slot freed",
                    self.stall_timeout.as_secs_f64()
                ));
                tracing::info!(stall_secs = self.stall_timeout.as_secs_f64(), "result stream ended: the client stopped reading");
                self.fail(status.clone());
                Err(status)
            }
        }
    }

    /// Hands `status` to the consumer after the items already sent.
    pub fn fail(&self, status: Status) {
        self.failure
            .lock()
            .expect("lock poisoned")
            .get_or_insert(status);
    }

    /// Completes when the consumer has gone away.
    pub async fn closed(&self) {
        self.sender.closed().await
    }
}

/// Runs `producer` on its own task and returns the consumer's stream, which ends with the
/// producer's error, if any. `wrap_error` turns a status into the stream's error item.
pub fn spawn_producer<T, F, Fut>(
    stall_timeout: Duration,
    wrap_error: fn(Status) -> T,
    producer: F,
) -> BoxStream<'static, T>
where
    T: Send + 'static,
    F: FnOnce(StreamOut<T>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(BUFFERED);
    let failure = Arc::new(Mutex::new(None));
    let out = StreamOut {
        sender,
        failure: Arc::clone(&failure),
        stall_timeout,
    };
    tokio::spawn(async move {
        let failed = Arc::clone(&out.failure);
        if let Err(status) = producer(out).await {
            failed.lock().expect("lock poisoned").get_or_insert(status);
        }
    });
    let last = futures::stream::once(async move {
        failure
            .lock()
            .expect("lock poisoned")
            .take()
            .map(wrap_error)
    })
    .filter_map(futures::future::ready);
    ReceiverStream::new(receiver).chain(last).boxed()
}

/// Streams `items` from a producer task (see the module documentation); errors in `items`
/// end the stream as they are.
pub fn detach<T, E, S>(
    items: S,
    stall_timeout: Duration,
    wrap_error: fn(Status) -> Result<T, E>,
) -> BoxStream<'static, Result<T, E>>
where
    T: Send + 'static,
    E: Send + 'static,
    S: Stream<Item = Result<T, E>> + Send + Unpin + 'static,
{
    spawn_producer(stall_timeout, wrap_error, move |out| async move {
        let mut items = items;
        loop {
            let item = tokio::select! {
                item = items.next() => item,
                // Gone while the query computes: drop it now, not at its next batch.
                () = out.closed() => return Ok(()),
            };
            let Some(item) = item else {
                return Ok(());
            };
            let failed = item.is_err();
            if out.send(item).await.is_err() || failed {
                return Ok(());
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrap(status: Status) -> Result<u32, Status> {
        Err(status)
    }

    #[tokio::test]
    async fn a_consumer_that_stops_reading_frees_the_producer_and_then_sees_why() {
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        let items = async_stream_with_guard(futures::stream::iter((0..100u32).map(Ok)), dropped_tx);
        let mut stream = detach(items, Duration::from_millis(100), wrap);
        assert_eq!(stream.next().await.unwrap().unwrap(), 0);
        // Stop reading: within the stall timeout the producer ends and drops its source.
        tokio::time::timeout(Duration::from_secs(5), dropped_rx)
            .await
            .expect("producer dropped")
            .unwrap();
        let rest: Vec<_> = stream.collect().await;
        let Some(Err(status)) = rest.last() else {
            panic!("the stream must end with the stall error: {rest:?}")
        };
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(rest.len() <= BUFFERED + 2, "{}", rest.len());
    }

    #[tokio::test]
    async fn a_consumer_that_goes_away_stops_a_producer_that_is_still_computing() {
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        let pending = futures::stream::pending::<Result<u32, Status>>();
        let guarded = async_stream_with_guard(pending, dropped_tx);
        let stream = detach(guarded, Duration::from_secs(60), wrap);
        drop(stream);
        tokio::time::timeout(Duration::from_secs(5), dropped_rx)
            .await
            .expect("producer dropped")
            .unwrap();
    }

    fn async_stream_with_guard(
        inner: impl Stream<Item = Result<u32, Status>> + Send + Unpin + 'static,
        on_drop: tokio::sync::oneshot::Sender<()>,
    ) -> BoxStream<'static, Result<u32, Status>> {
        struct Guard(Option<tokio::sync::oneshot::Sender<()>>);
        impl Drop for Guard {
            fn drop(&mut self) {
                let _ = self.0.take().map(|s| s.send(()));
            }
        }
        let guard = Guard(Some(on_drop));
        inner
            .map(move |item| {
                let _ = &guard;
                item
            })
            .boxed()
    }

    #[tokio::test]
    async fn complete_results_pass_through_unchanged() {
        let items = futures::stream::iter((0..10u32).map(Ok));
        let got: Vec<u32> = detach(items, Duration::from_secs(1), wrap)
            .map(|r| r.unwrap())
            .collect()
            .await;
        assert_eq!(got, (0..10).collect::<Vec<_>>());
    }
}
