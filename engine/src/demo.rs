//! A reproducible demo data set: the same seed always gives the same rows.
//!
//! Users sign up over the first weeks of a fixed 61-day window and come back with decaying
//! probability (so retention curves fall off), and each visit is a session of page views that
//! drops off step by step through add_to_cart -> checkout -> purchase (so funnels narrow).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use chrono::{TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::tables::{TableKind, UTC, timestamp_type};
use crate::{Engine, Result};

/// Size and seed of a demo data set.
#[derive(Debug, Clone, Copy)]
pub struct DemoOptions {
    pub users: usize,
    pub events: usize,
    pub seed: u64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            users: 10_000,
            events: 300_000,
            seed: 42,
        }
    }
}

/// What the demo wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoReport {
    pub events: u64,
    pub profiles: u64,
}

const DAYS: i64 = 61;
const MICROS_PER_DAY: i64 = 86_400_000_000;
const COUNTRIES: &[(&str, u32)] = &[
    ("US", 30),
    ("TW", 15),
    ("JP", 12),
    ("DE", 10),
    ("GB", 9),
    ("BR", 8),
    ("IN", 8),
    ("FR", 8),
];
const PLANS: &[(&str, u32)] = &[("free", 70), ("pro", 25), ("enterprise", 5)];
const DEVICES: &[(&str, u32)] = &[("web", 50), ("ios", 30), ("android", 20)];

fn window_start_micros() -> i64 {
    Utc.with_ymd_and_hms(2026, 9, 1, 0, 0, 0)
        .single()
        .expect("fixed date")
        .timestamp_micros()
}

fn pick<'a>(rng: &mut ChaCha8Rng, weighted: &[(&'a str, u32)]) -> &'a str {
    let total: u32 = weighted.iter().map(|(_, w)| w).sum();
    let mut roll = rng.random_range(0..total);
    for (value, weight) in weighted {
        if roll < *weight {
            return value;
        }
        roll -= weight;
    }
    weighted[weighted.len() - 1].0
}

struct User {
    signup_micros: i64,
    /// Mean days between visits; smaller is stickier.
    return_gap_days: f64,
    device: &'static str,
    revenue: f64,
}

struct EventColumns {
    user_id: Int64Builder,
    event: StringBuilder,
    ts: TimestampMicrosecondBuilder,
    session_id: Int64Builder,
    page: StringBuilder,
    device: StringBuilder,
    revenue: Float64Builder,
    len: usize,
}

impl EventColumns {
    fn new() -> Self {
        Self {
            user_id: Int64Builder::new(),
            event: StringBuilder::new(),
            ts: TimestampMicrosecondBuilder::new().with_timezone(UTC),
            session_id: Int64Builder::new(),
            page: StringBuilder::new(),
            device: StringBuilder::new(),
            revenue: Float64Builder::new(),
            len: 0,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        user: i64,
        event: &str,
        ts: i64,
        session: i64,
        page: &str,
        device: &str,
        revenue: Option<f64>,
    ) {
        self.user_id.append_value(user);
        self.event.append_value(event);
        self.ts.append_value(ts);
        self.session_id.append_value(session);
        self.page.append_value(page);
        self.device.append_value(device);
        self.revenue.append_option(revenue);
        self.len += 1;
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, false),
            Field::new("event", DataType::Utf8, false),
            Field::new("ts", timestamp_type(), false),
            Field::new("session_id", DataType::Int64, true),
            Field::new("page", DataType::Utf8, true),
            Field::new("device", DataType::Utf8, true),
            Field::new("revenue", DataType::Float64, true),
        ]))
    }

    fn finish(&mut self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.user_id.finish()),
            Arc::new(self.event.finish()),
            Arc::new(self.ts.finish()),
            Arc::new(self.session_id.finish()),
            Arc::new(self.page.finish()),
            Arc::new(self.device.finish()),
            Arc::new(self.revenue.finish()),
        ];
        self.len = 0;
        Ok(RecordBatch::try_new(Self::schema(), columns)?)
    }
}

/// Generates the demo events and profiles in memory. `progress` gets the number of events so far.
pub fn generate(
    options: DemoOptions,
    progress: &dyn Fn(u64),
) -> Result<(RecordBatch, RecordBatch)> {
    let users_n = options.users.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let start = window_start_micros();
    let mut users: Vec<User> = (0..users_n)
        .map(|_| User {
            signup_micros: start + (rng.random_range(0.0..45.0) * MICROS_PER_DAY as f64) as i64,
            return_gap_days: 1.0 + rng.random::<f64>().powi(2) * 20.0,
            device: pick(&mut rng, DEVICES),
            revenue: 0.0,
        })
        .collect();
    let end = start + DAYS * MICROS_PER_DAY;

    let mut columns = EventColumns::new();
    let mut batches = Vec::new();
    let mut written = 0usize;
    let mut session_id = 0i64;
    let mut next_user = 0usize;
    // Each user's next visit time; every user first visits at sign-up.
    let mut next_visit: Vec<i64> = users.iter().map(|u| u.signup_micros).collect();
    let mut signed_up = vec![false; users_n];
    while written < options.events {
        // Round-robin over users keeps the data set spread out; a user past the window rests.
        let uid = next_user;
        next_user = (next_user + 1) % users_n;
        if next_visit[uid] >= end {
            if next_visit.iter().all(|&t| t >= end) {
                // Everyone is out of the window: start a new cycle of visits inside it.
                for (t, u) in next_visit.iter_mut().zip(&users) {
                    *t = u.signup_micros
                        + (rng.random_range(0.0..2.0) * MICROS_PER_DAY as f64) as i64;
                }
            }
            continue;
        }
        let user = &mut users[uid];
        let user_id = uid as i64 + 1;
        let mut t = next_visit[uid];
        session_id += 1;
        let mut emit =
            |columns: &mut EventColumns, name: &str, ts: i64, page: &str, revenue: Option<f64>| {
                if written < options.events {
                    columns.push(user_id, name, ts, session_id, page, user.device, revenue);
                    written += 1;
                }
            };
        if !signed_up[uid] {
            signed_up[uid] = true;
            emit(&mut columns, "signup", t, "/signup", None);
            t += rng.random_range(5..60) * 1_000_000;
        } else if rng.random_bool(0.6) {
            emit(&mut columns, "login", t, "/login", None);
            t += rng.random_range(2..30) * 1_000_000;
        }
        for _ in 0..rng.random_range(1..=5) {
            let page = format!("/product/{}", rng.random_range(1..200));
            emit(&mut columns, "page_view", t, &page, None);
            t += rng.random_range(10..120) * 1_000_000;
        }
        if rng.random_bool(0.35) {
            emit(&mut columns, "add_to_cart", t, "/cart", None);
            t += rng.random_range(20..600) * 1_000_000;
            if rng.random_bool(0.55) {
                emit(&mut columns, "checkout", t, "/checkout", None);
                t += rng.random_range(30..900) * 1_000_000;
                if rng.random_bool(0.65) {
                    let amount = (rng.random_range(5.0..300.0_f64) * 100.0).round() / 100.0;
                    user.revenue += amount;
                    emit(&mut columns, "purchase", t, "/checkout/done", Some(amount));
                }
            }
        }
        let gap_days = -user.return_gap_days * (1.0 - rng.random::<f64>()).ln();
        next_visit[uid] = t + (gap_days * MICROS_PER_DAY as f64) as i64;
        if columns.len >= 65_536 {
            batches.push(columns.finish()?);
            progress(written as u64);
        }
    }
    batches.push(columns.finish()?);
    progress(written as u64);
    let events = arrow::compute::concat_batches(&EventColumns::schema(), &batches)?;
    let profiles = profiles(&mut rng, &users)?;
    Ok((events, profiles))
}

fn profiles(rng: &mut ChaCha8Rng, users: &[User]) -> Result<RecordBatch> {
    let mut user_id = Int64Builder::new();
    let mut country = StringBuilder::new();
    let mut plan = StringBuilder::new();
    let mut age = Int64Builder::new();
    let mut ltv = Float64Builder::new();
    let mut signup_at = TimestampMicrosecondBuilder::new().with_timezone(UTC);
    let mut tags = ListBuilder::new(StringBuilder::new());
    for (i, user) in users.iter().enumerate() {
        user_id.append_value(i as i64 + 1);
        country.append_value(pick(rng, COUNTRIES));
        let user_plan = pick(rng, PLANS);
        plan.append_value(user_plan);
        age.append_value(rng.random_range(18..70));
        ltv.append_value((user.revenue * 100.0).round() / 100.0);
        signup_at.append_value(user.signup_micros);
        let values = tags.values();
        if rng.random_bool(0.4) {
            values.append_value("newsletter");
        }
        if user.revenue > 500.0 {
            values.append_value("vip");
        }
        if user.device != "web" {
            values.append_value("mobile_first");
        }
        if user.return_gap_days > 15.0 {
            values.append_value("churn_risk");
        }
        if user_plan != "free" {
            values.append_value("paying");
        }
        tags.append(true);
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("country", DataType::Utf8, true),
        Field::new("plan", DataType::Utf8, true),
        Field::new("age", DataType::Int64, true),
        Field::new("ltv", DataType::Float64, true),
        Field::new("signup_at", timestamp_type(), true),
        Field::new(
            "tags",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
    ]));
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(user_id.finish()),
            Arc::new(country.finish()),
            Arc::new(plan.finish()),
            Arc::new(age.finish()),
            Arc::new(ltv.finish()),
            Arc::new(signup_at.finish()),
            Arc::new(tags.finish()),
        ],
    )?)
}

impl Engine {
    /// Generates the demo data set and writes it (events, then profiles), one commit each.
    pub async fn write_demo(
        &self,
        options: DemoOptions,
        progress: &dyn Fn(u64),
    ) -> Result<DemoReport> {
        let (events, profiles) = generate(options, progress)?;
        let events_report = self
            .ingest_batches(TableKind::Events, "demo", &events.schema(), &[events])
            .await?;
        let profiles_report = self
            .ingest_batches(TableKind::Profiles, "demo", &profiles.schema(), &[profiles])
            .await?;
        Ok(DemoReport {
            events: events_report.rows,
            profiles: profiles_report.rows,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_data() {
        let options = DemoOptions {
            users: 50,
            events: 2_000,
            seed: 7,
        };
        let (a, pa) = generate(options, &|_| {}).unwrap();
        let (b, pb) = generate(options, &|_| {}).unwrap();
        assert_eq!(a, b);
        assert_eq!(pa, pb);
        assert_eq!(a.num_rows(), 2_000);
        assert_eq!(pa.num_rows(), 50);
        let other = generate(DemoOptions { seed: 8, ..options }, &|_| {})
            .unwrap()
            .0;
        assert_ne!(a, other);
    }
}
