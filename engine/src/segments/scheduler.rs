//! Runs scheduled segment refreshes.
//!
//! - Due times come from each segment's cron expression (`croner`). When a segment is due, one
//!   run starts; a run of the same segment that is still going makes the scheduler skip that due
//!   time (no overlapping runs).
//! - At most `max_concurrent` runs at once; each attempt is cut off after `timeout`; a failed
//!   attempt is retried with exponential backoff (`backon`) up to `retries` times. Every attempt
//!   is recorded in `segment_runs`.
//! - Missed runs: due times that passed while the server was down are run **once** at start-up
//!   (trigger `catch_up`), not once per missed time.
//! - Time comes from a [`Clock`], so tests drive schedules with [`ManualClock`] without sleeping.
//! - On shutdown no new run starts; runs still going after the grace period are dropped, which
//!   is safe: a version is one commit, and the dropped run is marked failed at the next start.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use croner::Cron;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Trigger, schedule};
use crate::error::{EngineError, Result};

#[async_trait]
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
    /// Returns once `now() >= deadline`.
    async fn sleep_until(&self, deadline: DateTime<Utc>);
}

pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn sleep_until(&self, deadline: DateTime<Utc>) {
        if let Ok(wait) = (deadline - Utc::now()).to_std() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// A clock that moves only when told to.
pub struct ManualClock {
    now: tokio::sync::watch::Sender<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: tokio::sync::watch::channel(start).0,
        }
    }

    pub fn advance(&self, by: chrono::Duration) {
        self.now.send_modify(|now| *now += by);
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.borrow()
    }

    async fn sleep_until(&self, deadline: DateTime<Utc>) {
        let mut changes = self.now.subscribe();
        let _ = changes.wait_for(|now| *now >= deadline).await;
    }
}

/// A refresh job as the scheduler sees it (a segment, or a tag; the name is opaque here).
#[derive(Debug, Clone)]
pub struct ScheduledJob {
    pub name: String,
    pub schedule: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// What the scheduler drives: the engine in production.
#[async_trait]
pub trait Jobs: Send + Sync + 'static {
    /// Every job, with its current schedule (read on each scheduler pass).
    async fn jobs(&self) -> Result<Vec<ScheduledJob>>;
    /// The due time of each job's last scheduled run, for jobs that had one. Asked only for jobs
    /// the scheduler has not seen yet: after that it keeps track itself.
    async fn last_scheduled(&self, jobs: &[String]) -> Result<HashMap<String, DateTime<Utc>>>;
    async fn run(&self, segment: &str, trigger: Trigger, scheduled_at: DateTime<Utc>)
    -> Result<()>;
}

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub max_concurrent: usize,
    pub timeout: Duration,
    pub retries: usize,
    pub backoff: Duration,
    /// How long running jobs may finish after shutdown.
    pub grace: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 2,
            timeout: Duration::from_secs(30 * 60),
            retries: 3,
            backoff: Duration::from_secs(30),
            grace: Duration::from_secs(10),
        }
    }
}

pub struct Scheduler<J: Jobs> {
    jobs: Arc<J>,
    clock: Arc<dyn Clock>,
    config: SchedulerConfig,
    wake: Arc<Notify>,
}

/// When nothing is due, definitions are re-read at least this often.
const IDLE_CHECK: chrono::Duration = chrono::Duration::seconds(60);

impl<J: Jobs> Scheduler<J> {
    pub fn new(
        jobs: Arc<J>,
        clock: Arc<dyn Clock>,
        config: SchedulerConfig,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            jobs,
            clock,
            config,
            wake,
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let started = self.clock.now();
        let permits = Arc::new(Semaphore::new(self.config.max_concurrent.max(1)));
        let running: Arc<Mutex<HashSet<String>>> = Arc::default();
        let mut tasks = JoinSet::new();
        let mut last_due: HashMap<String, DateTime<Utc>> = HashMap::new();
        loop {
            let now = self.clock.now();
            let mut next_wake = now + IDLE_CHECK;
            let jobs = match self.jobs.jobs().await {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler could not read the jobs");
                    Vec::new()
                }
            };
            let names: HashSet<&str> = jobs.iter().map(|s| s.name.as_str()).collect();
            last_due.retain(|name, _| names.contains(name.as_str()));
            let unseen: Vec<String> = jobs
                .iter()
                .filter(|s| s.schedule.is_some() && !last_due.contains_key(&s.name))
                .map(|s| s.name.clone())
                .collect();
            // `None` when the history could not be read: unseen jobs wait for the next pass rather
            // than being scheduled from their creation time (which could fake a missed run).
            let last_scheduled = if unseen.is_empty() {
                Some(HashMap::new())
            } else {
                match self.jobs.last_scheduled(&unseen).await {
                    Ok(last) => Some(last),
                    Err(e) => {
                        tracing::warn!(error = %e, "scheduler could not read the run history");
                        None
                    }
                }
            };
            for job in &jobs {
                let Some(cron) = job
                    .schedule
                    .as_deref()
                    .and_then(|s| schedule::parse(s).ok())
                else {
                    last_due.remove(&job.name);
                    continue;
                };
                let since = match (last_due.get(&job.name), &last_scheduled) {
                    (Some(since), _) => *since,
                    (None, Some(last)) => {
                        let since = last.get(&job.name).copied().unwrap_or(job.created_at);
                        last_due.insert(job.name.clone(), since);
                        since
                    }
                    (None, None) => continue,
                };
                if let Some(next) = schedule::next_after(&cron, now) {
                    next_wake = next_wake.min(next);
                }
                let Some(due) = newest_due(&cron, since, now) else {
                    continue;
                };
                last_due.insert(job.name.clone(), due);
                if !running
                    .lock()
                    .expect("not poisoned")
                    .insert(job.name.clone())
                {
                    tracing::warn!(job = %job.name, due = %due,
                        "previous run still going: skipping this due time");
                    continue;
                }
                let trigger = if due < started {
                    Trigger::CatchUp
                } else {
                    Trigger::Schedule
                };
                tasks.spawn(self.job(job.name.clone(), trigger, due, &permits, &running));
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {}
                () = self.clock.sleep_until(next_wake) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        let grace = tokio::time::sleep(self.config.grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                joined = tasks.join_next() => if joined.is_none() { break },
                () = &mut grace => {
                    tracing::warn!(runs = tasks.len(), "stopping job runs still going after the grace period");
                    tasks.abort_all();
                    break;
                }
            }
        }
    }

    fn job(
        &self,
        segment: String,
        trigger: Trigger,
        due: DateTime<Utc>,
        permits: &Arc<Semaphore>,
        running: &Arc<Mutex<HashSet<String>>>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let (jobs, clock, config) = (
            Arc::clone(&self.jobs),
            Arc::clone(&self.clock),
            self.config.clone(),
        );
        let (permits, running) = (Arc::clone(permits), Arc::clone(running));
        async move {
            let _permit = permits.acquire_owned().await;
            let attempt = {
                let (jobs, clock, segment, timeout) = (
                    Arc::clone(&jobs),
                    Arc::clone(&clock),
                    segment.clone(),
                    config.timeout,
                );
                move || -> Pin<Box<dyn Future<Output = Result<()>> + Send>> {
                    let (jobs, clock, segment) =
                        (Arc::clone(&jobs), Arc::clone(&clock), segment.clone());
                    Box::pin(async move {
                        let deadline = clock.now()
                            + chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
                        tokio::select! {
                            result = jobs.run(&segment, trigger, due) => result,
                            () = clock.sleep_until(deadline) => Err(EngineError::InvalidStatement(format!(
                                "segment '{segment}': run timed out after {timeout:?}"
                            ))),
                        }
                    })
                }
            };
            let sleeper = {
                let clock = Arc::clone(&clock);
                move |wait: Duration| {
                    let clock = Arc::clone(&clock);
                    async move {
                        let until = clock.now()
                            + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
                        clock.sleep_until(until).await;
                    }
                }
            };
            let retried: Pin<Box<dyn Future<Output = Result<()>> + Send>> = Box::pin(attempt
                .retry(
                    ExponentialBuilder::default()
                        .with_min_delay(config.backoff)
                        .with_max_times(config.retries),
                )
                .sleep(sleeper)
                .notify(|e: &EngineError, wait: Duration| {
                    tracing::warn!(segment = %segment, error = %e, retry_in = ?wait, "segment run failed; retrying");
                }));
            let result = retried.await;
            if let Err(e) = result {
                tracing::error!(segment = %segment, error = %e, "segment run failed after retries");
            }
            running.lock().expect("not poisoned").remove(&segment);
        }
    }
}

/// The newest due time after `since` and at or before `now`.
fn newest_due(cron: &Cron, since: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let first = schedule::next_after(cron, since)?;
    if first > now {
        return None;
    }
    Some(
        cron.find_previous_occurrence(&now, true)
            .ok()
            .filter(|t| *t >= first)
            .unwrap_or(first),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// Segments with fixed definitions; records every attempt, and fails or blocks on request.
    #[derive(Default)]
    struct FakeJobs {
        segments: Mutex<Vec<(ScheduledJob, Option<DateTime<Utc>>)>>,
        attempts: Mutex<Vec<(String, Trigger, DateTime<Utc>)>>,
        failures_left: Mutex<usize>,
        /// While set, runs wait for it to be notified.
        gate: Option<Arc<Notify>>,
        in_flight: Mutex<usize>,
        most_in_flight: Mutex<usize>,
    }

    #[async_trait]
    impl Jobs for FakeJobs {
        async fn jobs(&self) -> Result<Vec<ScheduledJob>> {
            Ok(self
                .segments
                .lock()
                .unwrap()
                .iter()
                .map(|(job, _)| job.clone())
                .collect())
        }

        async fn last_scheduled(&self, jobs: &[String]) -> Result<HashMap<String, DateTime<Utc>>> {
            Ok(self
                .segments
                .lock()
                .unwrap()
                .iter()
                .filter(|(job, _)| jobs.contains(&job.name))
                .filter_map(|(job, last)| Some((job.name.clone(), (*last)?)))
                .collect())
        }

        async fn run(&self, segment: &str, trigger: Trigger, at: DateTime<Utc>) -> Result<()> {
            self.attempts
                .lock()
                .unwrap()
                .push((segment.to_string(), trigger, at));
            {
                let mut in_flight = self.in_flight.lock().unwrap();
                *in_flight += 1;
                let mut most = self.most_in_flight.lock().unwrap();
                *most = (*most).max(*in_flight);
            }
            if let Some(gate) = &self.gate {
                gate.notified().await;
            }
            *self.in_flight.lock().unwrap() -= 1;
            let mut failures = self.failures_left.lock().unwrap();
            if *failures > 0 {
                *failures -= 1;
                return Err(EngineError::InvalidStatement("boom".into()));
            }
            Ok(())
        }
    }

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, h, m, 0).unwrap()
    }

    fn segment(
        name: &str,
        schedule: &str,
        last: Option<DateTime<Utc>>,
    ) -> (ScheduledJob, Option<DateTime<Utc>>) {
        let job = ScheduledJob {
            name: name.into(),
            schedule: Some(schedule.into()),
            created_at: t(0, 0),
        };
        (job, last)
    }

    struct Running {
        clock: Arc<ManualClock>,
        jobs: Arc<FakeJobs>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    fn start(jobs: FakeJobs, now: DateTime<Utc>, config: SchedulerConfig) -> Running {
        let clock = Arc::new(ManualClock::new(now));
        let jobs = Arc::new(jobs);
        let shutdown = CancellationToken::new();
        let scheduler = Scheduler::new(Arc::clone(&jobs), clock.clone(), config, Arc::default());
        let task = tokio::spawn(scheduler.run(shutdown.clone()));
        Running {
            clock,
            jobs,
            shutdown,
            task,
        }
    }

    /// Lets spawned tasks run until nothing changes (no wall-clock waiting on the schedule).
    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    fn attempts(running: &Running) -> Vec<(String, Trigger, DateTime<Utc>)> {
        running.jobs.attempts.lock().unwrap().clone()
    }

    fn quick() -> SchedulerConfig {
        SchedulerConfig {
            retries: 0,
            grace: Duration::from_millis(100),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn runs_at_each_due_time_and_not_before() {
        let jobs = FakeJobs::default();
        jobs.segments
            .lock()
            .unwrap()
            .push(segment("s", "*/10 * * * *", Some(t(0, 0))));
        let running = start(jobs, t(0, 5), quick());
        settle().await;
        assert!(attempts(&running).is_empty(), "nothing due before 00:10");
        running.clock.advance(chrono::Duration::minutes(5));
        settle().await;
        assert_eq!(
            attempts(&running),
            [("s".into(), Trigger::Schedule, t(0, 10))]
        );
        running.clock.advance(chrono::Duration::minutes(15));
        settle().await;
        assert_eq!(attempts(&running).len(), 2);
        assert_eq!(attempts(&running)[1].2, t(0, 20));
        running.shutdown.cancel();
        running.task.await.unwrap();
    }

    #[tokio::test]
    async fn missed_runs_are_caught_up_once_at_start() {
        let jobs = FakeJobs::default();
        jobs.segments
            .lock()
            .unwrap()
            .push(segment("s", "0 * * * *", Some(t(0, 0))));
        // Down from 00:00 to 03:30: three hourly runs missed, one catch-up run.
        let running = start(jobs, t(3, 30), quick());
        settle().await;
        assert_eq!(
            attempts(&running),
            [("s".into(), Trigger::CatchUp, t(3, 0))]
        );
        running.shutdown.cancel();
        running.task.await.unwrap();
    }

    #[tokio::test]
    async fn a_slow_run_is_not_overlapped_and_concurrency_is_bounded() {
        let gate = Arc::new(Notify::new());
        let jobs = FakeJobs {
            gate: Some(Arc::clone(&gate)),
            ..Default::default()
        };
        {
            let mut segments = jobs.segments.lock().unwrap();
            for name in ["a", "b", "c"] {
                segments.push(segment(name, "* * * * *", Some(t(0, 0))));
            }
        }
        let config = SchedulerConfig {
            max_concurrent: 2,
            ..quick()
        };
        let running = start(jobs, t(0, 0), config);
        running.clock.advance(chrono::Duration::minutes(1));
        settle().await;
        running.clock.advance(chrono::Duration::minutes(1));
        settle().await;
        // Three segments due twice while blocked: each started once, two at a time.
        assert_eq!(*running.jobs.most_in_flight.lock().unwrap(), 2);
        assert_eq!(attempts(&running).len(), 2);
        gate.notify_waiters();
        settle().await;
        assert_eq!(
            attempts(&running).len(),
            3,
            "the third ran once a slot was free"
        );
        gate.notify_waiters();
        settle().await;
        running.shutdown.cancel();
        running.task.await.unwrap();
    }

    #[tokio::test]
    async fn failures_are_retried_with_backoff_and_timeouts_cut_runs_off() {
        let jobs = FakeJobs {
            failures_left: Mutex::new(2),
            ..Default::default()
        };
        jobs.segments
            .lock()
            .unwrap()
            .push(segment("s", "0 * * * *", Some(t(0, 0))));
        let config = SchedulerConfig {
            retries: 3,
            backoff: Duration::from_secs(30),
            ..quick()
        };
        let running = start(jobs, t(0, 59), config);
        running.clock.advance(chrono::Duration::minutes(1));
        settle().await;
        assert_eq!(attempts(&running).len(), 1);
        // The retry waits for the backoff on the scheduler's clock.
        for _ in 0..8 {
            running.clock.advance(chrono::Duration::seconds(30));
            settle().await;
        }
        assert_eq!(attempts(&running).len(), 3, "two failures, then success");
        running.shutdown.cancel();
        running.task.await.unwrap();

        let gate = Arc::new(Notify::new());
        let jobs = FakeJobs {
            gate: Some(gate),
            ..Default::default()
        };
        jobs.segments
            .lock()
            .unwrap()
            .push(segment("s", "0 * * * *", Some(t(0, 0))));
        let config = SchedulerConfig {
            timeout: Duration::from_secs(600),
            ..quick()
        };
        let running = start(jobs, t(0, 59), config);
        running.clock.advance(chrono::Duration::minutes(1));
        settle().await;
        assert_eq!(*running.jobs.in_flight.lock().unwrap(), 1);
        running.clock.advance(chrono::Duration::minutes(11));
        settle().await;
        // The hung attempt was dropped at the timeout: the next due time may run again.
        running.clock.advance(chrono::Duration::minutes(50));
        settle().await;
        assert_eq!(attempts(&running).len(), 2);
        running.shutdown.cancel();
        running.task.await.unwrap();
    }
}
