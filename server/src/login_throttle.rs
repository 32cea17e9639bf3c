//! Password checks under a flood of wrong logins.
//!
//! Argon2 is slow on purpose (tens of milliseconds of CPU per check), so every wrong password
//! a client sends costs the server real work: 48 clients sending `Basic mallory:wrong` in a loop
//! used to keep both cores hashing and left credentialed clients waiting seconds per query.
//! Three bounds keep the cost of failures small and the server responsive:
//! - at most [`ThrottleConfig::concurrent_checks`] checks run at once (the rest wait briefly,
//!   then are refused), so hashing never takes every core;
//! - a peer address with [`ThrottleConfig::peer_failures`] failures within
//!   [`ThrottleConfig::window`] is refused without hashing until the window ends;
//! - all peers together get [`ThrottleConfig::global_failures`] failures per window.
//!
//! Refusals are `RESOURCE_EXHAUSTED` with a retry hint; they say nothing about the credentials.
//! API and session tokens are SHA-256 lookups and never pass through here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tonic::Status;

#[derive(Debug, Clone)]
pub struct ThrottleConfig {
    /// Password checks running at once.
    pub concurrent_checks: usize,
    /// How long a login waits for a check to start before it is refused.
    pub queue_timeout: Duration,
    /// Failed logins one address may have per window.
    pub peer_failures: u32,
    /// Failed logins all addresses together may have per window.
    pub global_failures: u32,
    pub window: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            concurrent_checks: 2,
            queue_timeout: Duration::from_secs(2),
            peer_failures: 20,
            global_failures: 200,
            window: Duration::from_secs(60),
        }
    }
}

/// Addresses remembered at most; past this, windows that ended are dropped first.
const MAX_TRACKED_PEERS: usize = 100_000;

#[derive(Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

impl Window {
    fn current(&mut self, now: Instant, length: Duration) -> &mut Self {
        if now.duration_since(self.started) >= length {
            *self = Window {
                started: now,
                failures: 0,
            };
        }
        self
    }
}

pub struct LoginThrottle {
    config: ThrottleConfig,
    checks: Semaphore,
    peers: Mutex<HashMap<IpAddr, Window>>,
    global: Mutex<Window>,
}

impl LoginThrottle {
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            checks: Semaphore::new(config.concurrent_checks.max(1)),
            peers: Mutex::new(HashMap::new()),
            global: Mutex::new(Window {
                started: Instant::now(),
                failures: 0,
            }),
            config,
        }
    }

    fn refused(&self, why: &str) -> Status {
        Status::resource_exhausted(format!(
            "{why}; retry in {} s",
            self.config.window.as_secs().max(1)
        ))
    }

    /// Runs `check` (a password verification, true when it succeeded) unless `peer` or the
    /// server as a whole has failed too often, counting a failure against both.
    pub async fn check(
        &self,
        peer: Option<IpAddr>,
        check: impl FnOnce() -> bool + Send + 'static,
    ) -> Result<bool, Status> {
        let now = Instant::now();
        let window = self.config.window;
        if let Some(peer) = peer {
            let mut peers = self.peers.lock().expect("lock poisoned");
            if peers
                .get_mut(&peer)
                .is_some_and(|w| w.current(now, window).failures >= self.config.peer_failures)
            {
                return Err(self.refused("too many failed logins from this address"));
            }
        }
        if self
            .global
            .lock()
            .expect("lock poisoned")
            .current(now, window)
            .failures
            >= self.config.global_failures
        {
            return Err(self.refused("too many failed logins"));
        }
        let _permit = tokio::time::timeout(self.config.queue_timeout, self.checks.acquire())
            .await
            .map_err(|_| self.refused("too many logins in progress"))?
            .map_err(|_| Status::unavailable("server shutting down"))?;
        // Argon2 is CPU-heavy by design: keep it off the async workers.
        let verified = tokio::task::spawn_blocking(check)
            .await
            .map_err(|_| Status::internal("authentication task failed"))?;
        if !verified {
            self.record_failure(peer, Instant::now());
        }
        Ok(verified)
    }

    fn record_failure(&self, peer: Option<IpAddr>, now: Instant) {
        let window = self.config.window;
        self.global
            .lock()
            .expect("lock poisoned")
            .current(now, window)
            .failures += 1;
        let Some(peer) = peer else {
            return;
        };
        let mut peers = self.peers.lock().expect("lock poisoned");
        if peers.len() >= MAX_TRACKED_PEERS && !peers.contains_key(&peer) {
            peers.retain(|_, w| now.duration_since(w.started) < window);
            if peers.len() >= MAX_TRACKED_PEERS {
                // Still full: the global bound protects the server; this peer goes untracked.
                return;
            }
        }
        peers
            .entry(peer)
            .or_insert(Window {
                started: now,
                failures: 0,
            })
            .current(now, window)
            .failures += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> LoginThrottle {
        LoginThrottle::new(ThrottleConfig {
            concurrent_checks: 1,
            queue_timeout: Duration::from_millis(100),
            peer_failures: 3,
            global_failures: 5,
            window: Duration::from_millis(300),
        })
    }

    #[tokio::test]
    async fn a_peer_that_keeps_failing_is_refused_without_hashing_until_its_window_ends() {
        let throttle = throttle();
        let mallory: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(!throttle.check(Some(mallory), || false).await.unwrap());
        }
        let status = throttle
            .check(Some(mallory), || panic!("must not hash"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        // Others still get in.
        let ada: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(throttle.check(Some(ada), || true).await.unwrap());
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(!throttle.check(Some(mallory), || false).await.unwrap());
    }

    #[tokio::test]
    async fn failures_from_many_peers_hit_the_global_bound() {
        let throttle = throttle();
        for i in 0..5 {
            let peer: IpAddr = format!("10.0.1.{i}").parse().unwrap();
            assert!(!throttle.check(Some(peer), || false).await.unwrap());
        }
        let status = throttle.check(None, || true).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    }

    #[tokio::test]
    async fn checks_past_the_concurrency_bound_wait_then_are_refused() {
        let throttle = std::sync::Arc::new(throttle());
        let slow = {
            let throttle = std::sync::Arc::clone(&throttle);
            tokio::spawn(async move {
                throttle
                    .check(None, || {
                        std::thread::sleep(Duration::from_millis(400));
                        true
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let status = throttle.check(None, || true).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(slow.await.unwrap().unwrap());
    }
}
