//! Row counts of data-changing statements, held from their FlightInfo (where they run) until
//! the client's DoGet fetches them. Bounded in time and in number: a client that runs writes
//! and never fetches their counts cannot grow server memory, it only loses the oldest counts
//! (the writes themselves have committed).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counts wait this long for their DoGet.
const HELD_RESULT_TTL: Duration = Duration::from_secs(600);

/// At most this many counts are held at once (a few MiB).
const MAX_HELD_RESULTS: usize = 100_000;

#[derive(Debug, Default)]
pub struct HeldCounts {
    inner: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    counts: HashMap<String, u64>,
    /// Ids in the order they were held; fetched ones stay until they reach the front.
    order: VecDeque<(Instant, String)>,
}

impl HeldCounts {
    pub fn hold(&self, id: String, rows: u64) {
        self.hold_at(id, rows, Instant::now(), MAX_HELD_RESULTS);
    }

    fn hold_at(&self, id: String, rows: u64, now: Instant, max: usize) {
        let mut held = self.inner.lock().expect("held counts lock");
        while let Some((at, _)) = held.order.front() {
            let expired = now.saturating_duration_since(*at) >= HELD_RESULT_TTL;
            if !expired && held.order.len() < max {
                break;
            }
            let (_, oldest) = held.order.pop_front().expect("front exists");
            held.counts.remove(&oldest);
        }
        held.order.push_back((now, id.clone()));
        held.counts.insert(id, rows);
    }

    /// The count held under `id`, once.
    pub fn take(&self, id: &str) -> Option<u64> {
        self.inner
            .lock()
            .expect("held counts lock")
            .counts
            .remove(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_is_fetched_once() {
        let held = HeldCounts::default();
        held.hold("a".into(), 7);
        assert_eq!(held.take("a"), Some(7));
        assert_eq!(held.take("a"), None);
    }

    #[test]
    fn the_oldest_counts_go_past_the_cap() {
        let held = HeldCounts::default();
        let now = Instant::now();
        for i in 0..5u64 {
            held.hold_at(i.to_string(), i, now, 3);
        }
        assert_eq!(held.take("0"), None);
        assert_eq!(held.take("1"), None);
        assert_eq!(held.take("4"), Some(4));
        assert!(held.inner.lock().unwrap().order.len() <= 3);
    }

    #[test]
    fn expired_counts_are_dropped() {
        let held = HeldCounts::default();
        let start = Instant::now();
        held.hold_at("old".into(), 1, start, 10);
        held.hold_at("new".into(), 2, start + HELD_RESULT_TTL, 10);
        assert_eq!(held.take("old"), None);
        assert_eq!(held.take("new"), Some(2));
    }
}
