//! One log line per query when its result stream ends, however it ends (drained, failed, or
//! dropped because the client went away).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub struct QueryLog {
    id: uuid::Uuid,
    start: Instant,
    rows: AtomicU64,
    sql: String,
}

impl QueryLog {
    pub fn start(sql: &str) -> Self {
        let id = uuid::Uuid::new_v4();
        let shown: String = sql.chars().take(200).collect();
        tracing::debug!(query_id = %id, sql = %shown, "query started");
        Self {
            id,
            start: Instant::now(),
            rows: AtomicU64::new(0),
            sql: shown,
        }
    }

    pub fn add_rows(&self, rows: usize) {
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
    }
}

impl Drop for QueryLog {
    fn drop(&mut self) {
        tracing::info!(
            query_id = %self.id,
            duration_ms = self.start.elapsed().as_millis() as u64,
            rows = self.rows.load(Ordering::Relaxed),
            sql = %self.sql,
            "query finished"
        );
    }
}
