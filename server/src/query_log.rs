//! One log line per statement, from every endpoint (Flight SQL, PostgreSQL, the update path),
//! when it ends however it ends: drained, failed (with its status code), or dropped because
//! the client went away.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tonic::Status;

/// The longest part of a statement's text a log line shows.
const SHOWN_SQL_CHARS: usize = 200;

pub struct QueryLog {
    id: String,
    user: String,
    start: Instant,
    rows: AtomicU64,
    /// The statement's text, quoted with its line breaks escaped: one statement, one line.
    sql: String,
    failure: OnceLock<(tonic::Code, String)>,
}

impl QueryLog {
    /// `query_id` is the client's, when it gave one to cancel by; else one is made up.
    pub fn start(query_id: Option<&str>, user: &str, sql: &str) -> Self {
        let id = query_id.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
        let mut shown: String = sql.chars().take(SHOWN_SQL_CHARS).collect();
        if shown.len() < sql.len() {
            shown.push('…');
        }
        let sql = format!("{shown:?}");
        tracing::debug!(query_id = %id, user, sql = %sql, "query started");
        Self {
            id,
            user: user.to_string(),
            start: Instant::now(),
            rows: AtomicU64::new(0),
            sql,
            failure: OnceLock::new(),
        }
    }

    pub fn add_rows(&self, rows: u64) {
        self.rows.fetch_add(rows, Ordering::Relaxed);
    }

    /// Records why the statement failed; the first failure is the one logged.
    pub fn failed(&self, status: &Status) {
        let _ = self.failure.get_or_init(|| {
            (
                status.code(),
                cohort_engine::error::one_line(status.message()),
            )
        });
    }

    /// Records how a statement that returns a count ended.
    pub fn ended(&self, result: &Result<u64, Status>) {
        match result {
            Ok(rows) => self.add_rows(*rows),
            Err(status) => self.failed(status),
        }
    }
}

impl Drop for QueryLog {
    fn drop(&mut self) {
        let duration_ms = self.start.elapsed().as_millis() as u64;
        let rows = self.rows.load(Ordering::Relaxed);
        let failure = self.failure.take();
        match failure {
            None => tracing::info!(
                query_id = %self.id,
                user = %self.user,
                duration_ms,
                rows,
                sql = %self.sql,
                "query finished"
            ),
            Some((code, error)) => tracing::warn!(
                query_id = %self.id,
                user = %self.user,
                duration_ms,
                rows,
                code = ?code,
                error = %format!("{error:?}"),
                sql = %self.sql,
                "query failed"
            ),
        }
    }
}
