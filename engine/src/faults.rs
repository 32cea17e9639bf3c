//! An object store wrapper that injects storage faults, for reliability tests and drills:
//! the Nth put fails, a put succeeds but its acknowledgement is lost (a timeout after the
//! write), bursts of 503s, and slow reads. Plug it in with [`crate::EngineConfig::object_store_layer`].

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

/// What to break next; shared between a test and the stores it wraps.
#[derive(Debug, Default)]
pub struct FaultPlan {
    state: Mutex<PlanState>,
}

#[derive(Debug, Default)]
struct PlanState {
    /// Puts seen since the last [`FaultPlan::reset`] (counted from 1).
    puts: u64,
    fail_put: Option<u64>,
    lose_put_acknowledgement: Option<u64>,
    /// Calls that fail as unavailable once an acknowledgement has been lost.
    unavailable_after_lost_acknowledgement: u32,
    unavailable_calls: u32,
    read_delay: Duration,
}

enum PutFault {
    None,
    FailBefore,
    LoseAcknowledgement,
}

impl FaultPlan {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PlanState> {
        self.state.lock().expect("lock poisoned")
    }

    /// Clears every fault and the put counter.
    pub fn reset(&self) {
        *self.state() = PlanState::default();
    }

    /// Puts seen since the last reset.
    pub fn puts(&self) -> u64 {
        self.state().puts
    }

    /// The `n`th put from now (1-based) fails before anything is written.
    pub fn fail_put(&self, n: u64) {
        let mut state = self.state();
        state.fail_put = Some(state.puts + n);
    }

    /// The `n`th put from now is written, then reported as timed out.
    pub fn lose_put_acknowledgement(&self, n: u64) {
        let mut state = self.state();
        state.lose_put_acknowledgement = Some(state.puts + n);
    }

    /// Once the armed acknowledgement is lost, the next `calls` calls fail as unavailable:
    /// the writer cannot even read the log to see whether its commit landed.
    pub fn unavailable_after_lost_acknowledgement(&self, calls: u32) {
        self.state().unavailable_after_lost_acknowledgement = calls;
    }

    /// The next `calls` calls of any kind fail as HTTP 503 would.
    pub fn unavailable(&self, calls: u32) {
        self.state().unavailable_calls = calls;
    }

    /// Every read waits `delay` first.
    pub fn slow_reads(&self, delay: Duration) {
        self.state().read_delay = delay;
    }

    /// A stream that fails at once if the store is "unavailable" now, else `None`.
    fn unavailable_stream<T: Send + 'static>(
        &self,
    ) -> Option<BoxStream<'static, object_store::Result<T>>> {
        let error = self.check_available().err()?;
        Some(futures::stream::once(async move { Err(error) }).boxed())
    }

    fn check_available(&self) -> object_store::Result<()> {
        let mut state = self.state();
        if state.unavailable_calls > 0 {
            state.unavailable_calls -= 1;
            return Err(injected("503 Service Unavailable: slow down"));
        }
        Ok(())
    }

    fn next_put(&self) -> PutFault {
        let mut state = self.state();
        state.puts += 1;
        if state.fail_put == Some(state.puts) {
            PutFault::FailBefore
        } else if state.lose_put_acknowledgement == Some(state.puts) {
            state.unavailable_calls = state.unavailable_after_lost_acknowledgement;
            PutFault::LoseAcknowledgement
        } else {
            PutFault::None
        }
    }

    async fn before_read(&self) -> object_store::Result<()> {
        self.check_available()?;
        let delay = self.state().read_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(())
    }
}

fn injected(message: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "fault injection",
        source: format!("injected fault: {message}").into(),
    }
}

/// Wraps `inner`, consulting `plan` before every call.
pub struct FaultyObjectStore {
    inner: Arc<dyn ObjectStore>,
    plan: Arc<FaultPlan>,
}

impl FaultyObjectStore {
    pub fn new(inner: Arc<dyn ObjectStore>, plan: Arc<FaultPlan>) -> Self {
        Self { inner, plan }
    }
}

impl fmt::Debug for FaultyObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyObjectStore({})", self.inner)
    }
}

impl fmt::Display for FaultyObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyObjectStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyObjectStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.plan.check_available()?;
        match self.plan.next_put() {
            PutFault::FailBefore => Err(injected("put failed")),
            PutFault::LoseAcknowledgement => {
                self.inner.put_opts(location, payload, opts).await?;
                Err(injected("timed out waiting for the put's response"))
            }
            PutFault::None => self.inner.put_opts(location, payload, opts).await,
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.plan.check_available()?;
        match self.plan.next_put() {
            PutFault::None | PutFault::LoseAcknowledgement => {
                self.inner.put_multipart_opts(location, opts).await
            }
            PutFault::FailBefore => Err(injected("multipart upload failed")),
        }
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.plan.before_read().await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.plan.before_read().await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.plan
            .unavailable_stream()
            .unwrap_or_else(|| self.inner.delete_stream(locations))
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.plan
            .unavailable_stream()
            .unwrap_or_else(|| self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.plan
            .unavailable_stream()
            .unwrap_or_else(|| self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.plan.check_available()?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.plan.check_available()?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.plan.check_available()?;
        self.inner.rename_opts(from, to, options).await
    }
}
