//! Benchmark helpers: the queries the peer comparison runs, so the criterion benches and the
//! `peer_query` tool measure the same SQL, and what the measuring tools report.

/// A 4-step, one-hour funnel per user, then users per level.
pub const FUNNEL_SQL: &str = "SELECT level, count(*) AS users FROM (\
     SELECT user_id, window_funnel(3600, ts, event = 'page_view', event = 'add_to_cart', \
     event = 'checkout', event = 'purchase') AS level FROM events GROUP BY user_id) \
     GROUP BY level ORDER BY level";

/// 8-day retention of the first demo day's users: day 0, then each of the next 7 days, by UTC
/// calendar date (the same predicate as ClickHouse's `toDate(ts) = '...'` in the peer script).
pub fn retention_sql() -> String {
    let days: Vec<String> = (1..=8)
        .map(|d| format!("CAST(ts AS DATE) = DATE '2026-09-0{d}'"))
        .collect();
    format!(
        "SELECT sum_for_each(r) AS retained FROM (SELECT user_id, retention({}) AS r FROM events GROUP BY user_id)",
        days.join(", ")
    )
}

/// Peak resident memory of this process (Linux `VmHWM`), in MiB; 0 where unknown.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
