//! Funnel state merging: the same answer however rows are split into batches and partitions,
//! and when partial aggregation is skipped (states built row by row with convert_to_state).
//! The reference is the level of each user's events computed in one pass.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, UInt8Type};
use cohort_sql_extensions::funnel::level::{self, Event, Mode};
use cohort_sql_extensions::funnel::parse_mode;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const STEPS: [&str; 4] = ["a", "b", "c", "d"];
const MODES: [&str; 10] = [
    "",
    "strict_deduplication",
    "strict_order",
    "strict_increase",
    "strict_once",
    "strict_order, allow_reentry",
    "strict_once, strict_increase, strict_deduplication",
    // Cohort's: condition 4 ('d') becomes an exclusion; steps in any order.
    "exclude(4:1-3)",
    "strict_increase, exclude(4:2-3)",
    "unordered",
];

fn data(seed: u64) -> (Vec<(i64, i64, String)>, RecordBatch) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rows: Vec<(i64, i64, String)> = (0..6000)
        .map(|_| {
            let user = rng.random_range(0..300);
            // Few distinct timestamps per user: many ties.
            let ts = rng.random_range(0..60);
            let event = ["a", "b", "c", "d", "x"][rng.random_range(0..5)].to_string();
            (user, ts, event)
        })
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("u", DataType::Int64, false),
        Field::new("ts", DataType::Int64, false),
        Field::new("e", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.2.clone()),
            )),
        ],
    )
    .unwrap();
    (rows, batch)
}

fn reference(rows: &[(i64, i64, String)], mode: Mode, window: i64) -> BTreeMap<i64, u8> {
    let mut per_user: BTreeMap<i64, Vec<Event>> = BTreeMap::new();
    let mut next_row: BTreeMap<i64, u32> = BTreeMap::new();
    for (user, ts, event) in rows {
        let row = next_row.entry(*user).or_default();
        let events = per_user.entry(*user).or_default();
        let mut any = false;
        for (i, step) in STEPS.iter().enumerate().rev() {
            if event == step {
                events.push(Event {
                    ts: *ts,
                    cond: i as u8 + 1,
                    row: *row,
                });
                any = true;
            }
        }
        if !any && mode.strict_order {
            events.push(Event {
                ts: *ts,
                cond: 0,
                row: *row,
            });
        }
        *row += 1;
    }
    per_user
        .into_iter()
        .map(|(user, mut events)| {
            let steps = (STEPS.len() - mode.exclusions.as_slice().len()) as u8;
            (
                user,
                level::evaluate(&mut events, steps, window, mode).level,
            )
        })
        .collect()
}

async fn run(
    batch: &RecordBatch,
    batch_size: usize,
    partitions: usize,
    skip_partial: bool,
    runs: bool,
    sql: &str,
) -> BTreeMap<i64, u8> {
    let config = common::config(batch_size, partitions, skip_partial);
    let ctx = common::session(config, Arc::default(), runs);
    // Several input partitions, so partial states really are merged.
    common::register_partitioned(&ctx, batch, partitions.max(2));
    let mut out = BTreeMap::new();
    for result in ctx.sql(sql).await.unwrap().collect().await.unwrap() {
        let users = result
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>();
        let levels = result.column(1).as_primitive::<UInt8Type>();
        for i in 0..result.num_rows() {
            out.insert(users.value(i), levels.value(i));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_do_not_depend_on_batching_partitioning_or_partial_aggregation() {
    let (rows, batch) = data(20261123);
    let inputs = common::arrival_orders(&batch);
    let mut compared = 0;
    for mode_text in MODES {
        let mode = parse_mode("window_funnel", mode_text).unwrap();
        for window in [1i64, 5, 30] {
            let expected = reference(&rows, mode, window);
            // `e = 'a', e = 'b', ...` runs as one packed condition mask; wrapped in coalesce
            // (the same truth values) the conditions are evaluated one by one.
            let sql = |packed: bool| {
                let conditions = STEPS
                    .iter()
                    .map(|s| match packed {
                        true => format!("e = '{s}'"),
                        false => format!("coalesce(e = '{s}', false)"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                format!(
                    "SELECT u, window_funnel({window}, '{mode_text}', ts, {conditions}) FROM t GROUP BY u"
                )
            };
            for (i, (batch_size, partitions, skip_partial, runs)) in [
                (1, 1, false, false),
                (7, 3, true, false),
                (64, 8, false, false),
                (8192, 2, true, false),
                (513, 5, true, false),
                (1, 2, false, true),
                (64, 8, false, true),
                (8192, 2, false, true),
            ]
            .into_iter()
            .enumerate()
            {
                let packed = i % 2 == 0;
                for (order, input) in &inputs {
                    let actual = run(
                        input,
                        batch_size,
                        partitions,
                        skip_partial,
                        runs,
                        &sql(packed),
                    )
                    .await;
                    assert_eq!(
                        actual, expected,
                        "mode '{mode_text}', window {window}, batch {batch_size}, partitions {partitions}, skip partial {skip_partial}, run aggregation {runs}, {order} input, packed conditions {packed}"
                    );
                    compared += 1;
                }
            }
        }
    }
    assert_eq!(compared, MODES.len() * 3 * 8 * 2);
}
