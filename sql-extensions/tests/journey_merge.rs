//! Journey functions (lifecycle, active_periods, sequence_next_node, event_path): the same answer however
//! rows are split into batches and partitions, with partial aggregation skipped or not, with
//! and without the run aggregation. The references are written here, period by period, from
//! the raw rows, independently of the functions' own algorithms.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Row {
    user: i64,
    ts: Option<i64>,
    active: Option<bool>,
}

fn data(seed: u64) -> (Vec<Row>, RecordBatch) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rows: Vec<Row> = (0..5000)
        .map(|_| Row {
            user: rng.random_range(0..250),
            // Times on both sides of the report's start (0), with gaps and ties.
            ts: (rng.random_range(0..40) != 0).then(|| rng.random_range(-60..140)),
            active: match rng.random_range(0..10) {
                0 => None,
                1..=3 => Some(false),
                _ => Some(true),
            },
        })
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("u", DataType::Int64, false),
        Field::new("ts", DataType::Int64, true),
        Field::new("active", DataType::Boolean, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.user))),
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.ts))),
            Arc::new(BooleanArray::from_iter(rows.iter().map(|r| r.active))),
        ],
    )
    .unwrap();
    (rows, batch)
}

/// Each user's active periods of length `period` counted from 0 (floored, as date_bin).
fn active_periods_by_user(rows: &[Row], period: i64) -> BTreeMap<i64, BTreeSet<i64>> {
    let mut out: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
    for row in rows {
        let periods = out.entry(row.user).or_default();
        if let (Some(ts), Some(true)) = (row.ts, row.active) {
            periods.insert(ts.div_euclid(period));
        }
    }
    out
}

/// PostHog's statuses, decided for each reported period from its definitions.
fn lifecycle_reference(
    rows: &[Row],
    period: i64,
    periods: i64,
) -> BTreeMap<i64, Vec<(i64, String)>> {
    active_periods_by_user(rows, period)
        .into_iter()
        .map(|(user, active)| {
            let statuses = (0..periods)
                .filter_map(|k| {
                    let now = active.contains(&k);
                    let before = active.contains(&(k - 1));
                    let earlier = active.range(..k - 1).next().is_some();
                    let status = match (now, before, earlier) {
                        (true, false, false) => "new",
                        (true, true, _) => "returning",
                        (true, false, true) => "resurrecting",
                        (false, true, _) => "dormant",
                        (false, false, _) => return None,
                    };
                    Some((k * period, status.to_string()))
                })
                .collect();
            (user, statuses)
        })
        .collect()
}

/// The layouts every function is run in: (batch size, partitions, skip partial, runs).
const LAYOUTS: [(usize, usize, bool, bool); 6] = [
    (1, 1, false, false),
    (7, 3, true, false),
    (513, 5, true, false),
    (8192, 2, false, false),
    (1, 2, false, true),
    (64, 8, false, true),
];

async fn collect(
    batch: &RecordBatch,
    layout: (usize, usize, bool, bool),
    sql: &str,
) -> Vec<RecordBatch> {
    let (batch_size, partitions, skip_partial, runs) = layout;
    let ctx = common::session(
        common::config(batch_size, partitions, skip_partial),
        Arc::default(),
        runs,
    );
    common::register_partitioned(&ctx, batch, partitions.max(2));
    ctx.sql(sql).await.unwrap().collect().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_matches_its_definitions_in_every_layout() {
    let (rows, batch) = data(20261203);
    for (period, periods) in [(1, 100), (10, 12), (25, 3)] {
        let expected = lifecycle_reference(&rows, period, periods);
        let sql =
            format!("SELECT u, lifecycle({period}, {periods}, ts, active, 0) FROM t GROUP BY u");
        for layout in LAYOUTS {
            for (order, input) in common::arrival_orders(&batch) {
                let mut actual = BTreeMap::new();
                for result in collect(&input, layout, &sql).await {
                    let users = result.column(0).as_primitive::<Int64Type>();
                    let lists = result.column(1).as_list::<i32>();
                    for i in 0..result.num_rows() {
                        let entries = lists.value(i);
                        let entries = entries.as_struct();
                        let starts = entries.column(0).as_primitive::<Int64Type>();
                        let statuses = entries.column(1).as_string::<i32>();
                        let user: Vec<(i64, String)> = (0..entries.len())
                            .map(|j| (starts.value(j), statuses.value(j).to_string()))
                            .collect();
                        actual.insert(users.value(i), user);
                    }
                }
                assert_eq!(
                    actual, expected,
                    "period {period}, {periods} periods, layout {layout:?}, {order} input"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_periods_match_their_definition_in_every_layout() {
    let (rows, batch) = data(7);
    for period in [1, 9, 1000] {
        let expected: BTreeMap<i64, i64> = active_periods_by_user(&rows, period)
            .into_iter()
            .map(|(user, periods)| (user, periods.len() as i64))
            .collect();
        let sql = format!("SELECT u, active_periods({period}, ts, active) FROM t GROUP BY u");
        for layout in LAYOUTS {
            for (order, input) in common::arrival_orders(&batch) {
                let mut actual = BTreeMap::new();
                for result in collect(&input, layout, &sql).await {
                    let users = result.column(0).as_primitive::<Int64Type>();
                    let counts = result.column(1).as_primitive::<Int64Type>();
                    for i in 0..result.num_rows() {
                        actual.insert(users.value(i), counts.value(i));
                    }
                }
                assert_eq!(
                    actual, expected,
                    "period {period}, layout {layout:?}, {order} input"
                );
            }
        }
    }
}

/// ClickHouse's sequenceNextNode restated: the events sorted by (time, value, conditions), the
/// base chosen, the chain walked one event at a time.
fn next_node_reference(
    rows: &[ValueRow],
    forward: bool,
    base: &str,
    chain: &[&str],
) -> BTreeMap<i64, Option<String>> {
    let mut per_user: BTreeMap<i64, Vec<(i64, &str, bool)>> = BTreeMap::new();
    for &(user, ts, value, can_be_base) in rows {
        let events = per_user.entry(user).or_default();
        if let (Some(ts), Some(value)) = (ts, value) {
            events.push((ts, value, can_be_base));
        }
    }
    per_user
        .into_iter()
        .map(|(user, mut events)| {
            events.sort();
            let starts = |e: &(i64, &str, bool)| e.2 && chain.first() == Some(&e.1);
            let base_index = match base {
                "head" => events.first().filter(|e| e.2).map(|_| 0),
                "tail" => events.last().filter(|e| e.2).map(|_| events.len() - 1),
                "first_match" => events.iter().position(starts),
                _ => events.iter().rposition(starts),
            };
            let answer = base_index.and_then(|mut at| {
                for step in chain {
                    if events[at].1 != *step {
                        return None;
                    }
                    at = if forward {
                        Some(at + 1).filter(|&i| i < events.len())?
                    } else {
                        at.checked_sub(1)?
                    };
                }
                Some(events[at].1.to_string())
            });
            (user, answer)
        })
        .collect()
}

/// Rows (user, time, value, flag) with NULL times and values, ties and repeats, and their batch
/// (columns u, ts, e, b).
type ValueRow = (i64, Option<i64>, Option<&'static str>, bool);

fn value_rows(seed: u64) -> (Vec<ValueRow>, RecordBatch) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rows: Vec<ValueRow> = (0..4000)
        .map(|_| {
            (
                rng.random_range(0..300),
                (rng.random_range(0..30) != 0).then(|| rng.random_range(0..8)),
                ["a", "b", "c"].get(rng.random_range(0..4)).copied(),
                rng.random_range(0..4) != 0,
            )
        })
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("u", DataType::Int64, false),
        Field::new("ts", DataType::Int64, true),
        Field::new("e", DataType::Utf8, true),
        Field::new("b", DataType::Boolean, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))),
            Arc::new(arrow::array::StringArray::from_iter(
                rows.iter().map(|r| r.2),
            )),
            Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.3)))),
        ],
    )
    .unwrap();
    (rows, batch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_next_node_matches_its_definition_in_every_layout() {
    let (rows, batch) = value_rows(11);
    let inputs = common::arrival_orders(&batch);
    for (direction, base, chain) in [
        ("forward", "head", vec!["a", "b"]),
        ("forward", "first_match", vec!["b"]),
        ("forward", "last_match", vec!["c", "a"]),
        ("backward", "tail", vec![]),
        ("backward", "first_match", vec!["c", "b"]),
        ("backward", "last_match", vec!["a"]),
    ] {
        let expected = next_node_reference(&rows, direction == "forward", base, &chain);
        let answers = expected.values().filter(|a| a.is_some()).count();
        assert!(
            answers >= 10,
            "{direction} {base} {chain:?}: only {answers} answers"
        );
        let conditions: String = chain.iter().map(|s| format!(", e = '{s}'")).collect();
        let sql = format!(
            "SELECT u, sequence_next_node('{direction}', '{base}', ts, e, b{conditions}) FROM t GROUP BY u"
        );
        for layout in LAYOUTS {
            for (order, input) in &inputs {
                let mut actual = BTreeMap::new();
                for result in collect(input, layout, &sql).await {
                    let users = result.column(0).as_primitive::<Int64Type>();
                    let answers = result.column(1).as_string::<i32>();
                    for i in 0..result.num_rows() {
                        let answer = answers.is_valid(i).then(|| answers.value(i).to_string());
                        actual.insert(users.value(i), answer);
                    }
                }
                assert_eq!(actual, expected, "{sql}, layout {layout:?}, {order} input");
            }
        }
    }
}

/// The path as defined: each user's events sorted by (time, value, flag), from the first with the
/// flag (or the first), repeats dropped when deduplicating, cut at `max_steps`.
fn event_path_reference(
    rows: &[ValueRow],
    max_steps: usize,
    from_flag: bool,
    dedupe: bool,
) -> BTreeMap<i64, Vec<String>> {
    let mut per_user: BTreeMap<i64, Vec<(i64, &str, bool)>> = BTreeMap::new();
    for &(user, ts, value, flag) in rows {
        let events = per_user.entry(user).or_default();
        if let (Some(ts), Some(value)) = (ts, value) {
            events.push((ts, value, flag));
        }
    }
    per_user
        .into_iter()
        .map(|(user, mut events)| {
            events.sort();
            let start = if from_flag {
                events.iter().position(|e| e.2).unwrap_or(events.len())
            } else {
                0
            };
            let mut path: Vec<String> = Vec::new();
            for event in &events[start..] {
                if dedupe && path.last().map(String::as_str) == Some(event.1) {
                    continue;
                }
                path.push(event.1.to_string());
            }
            path.truncate(max_steps);
            (user, path)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_path_matches_its_definition_in_every_layout() {
    let (rows, batch) = value_rows(12);
    let inputs = common::arrival_orders(&batch);
    for (max_steps, from_flag, dedupe) in [(3, false, false), (50, true, false), (4, true, true)] {
        let expected = event_path_reference(&rows, max_steps, from_flag, dedupe);
        let start = if from_flag { ", b" } else { "" };
        let option = if dedupe { ", 'dedupe'" } else { "" };
        let sql =
            format!("SELECT u, event_path(ts, e, {max_steps}{start}{option}) FROM t GROUP BY u");
        for layout in LAYOUTS {
            for (order, input) in &inputs {
                let mut actual = BTreeMap::new();
                for result in collect(input, layout, &sql).await {
                    let users = result.column(0).as_primitive::<Int64Type>();
                    let paths = result.column(1).as_list::<i32>();
                    for i in 0..result.num_rows() {
                        let path = paths.value(i);
                        let path = path.as_string::<i32>();
                        let path = (0..path.len()).map(|k| path.value(k).to_string()).collect();
                        actual.insert(users.value(i), path);
                    }
                }
                assert_eq!(actual, expected, "{sql}, layout {layout:?}, {order} input");
            }
        }
    }
}

/// The default-mode funnel scan restated over each user's rows in (time, property, step)
/// order: per step the newest chain that reached it, a full chain ending the scan. The step is
/// `e`, the property `e` where the flag is set (else NULL). Returns the level and the property
/// of the attributed step (`Some(k)`: step k + 1; `None`: the last reached).
fn breakdown_reference(
    rows: &[ValueRow],
    window: i64,
    steps: &[&str],
    attributed: Option<usize>,
) -> BTreeMap<i64, (u8, Option<String>)> {
    /// An event: time, property, step.
    type Step<'a> = (i64, Option<&'a str>, &'a str);
    let mut per_user: BTreeMap<i64, Vec<Step>> = BTreeMap::new();
    for &(user, ts, value, flag) in rows {
        let Some(name) = value else { continue };
        let events = per_user.entry(user).or_default();
        if let Some(ts) = ts {
            events.push((ts, value.filter(|_| flag), name));
        }
    }
    per_user
        .into_iter()
        .map(|(user, mut events)| {
            events.sort();
            let mut matches: Vec<(i64, usize, usize)> = Vec::new();
            for (row, &(ts, _, name)) in events.iter().enumerate() {
                if let Some(k) = steps.iter().position(|step| *step == name) {
                    matches.push((ts, k, row));
                }
            }
            matches.sort();
            let mut chains: Vec<Option<Vec<(i64, usize)>>> = vec![None; steps.len()];
            for &(ts, k, row) in &matches {
                if k == 0 {
                    chains[0] = Some(vec![(ts, row)]);
                } else if let Some(previous) = chains[k - 1].clone()
                    && ts <= previous[0].0 + window
                {
                    let mut chain = previous;
                    chain.push((ts, row));
                    chains[k] = Some(chain);
                    if k + 1 == steps.len() {
                        break;
                    }
                }
            }
            let reached = chains.iter().rposition(Option::is_some);
            let level = reached.map_or(0, |k| k + 1) as u8;
            let value = reached.and_then(|k| {
                let chain = chains[k].as_ref().expect("reached");
                let (_, row) = match attributed {
                    Some(step) => chain.get(step)?,
                    None => chain.last()?,
                };
                events[*row].1.map(str::to_string)
            });
            (user, (level, value))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_funnel_breakdown_matches_its_definition_in_every_layout() {
    let (rows, batch) = value_rows(13);
    let inputs = common::arrival_orders(&batch);
    let steps = ["a", "b", "c"];
    for (attribution, attributed) in [
        ("first_touch", Some(0)),
        ("last_touch", None),
        ("step(2)", Some(1)),
    ] {
        let expected = breakdown_reference(&rows, 3, &steps, attributed);
        let converted = expected.values().filter(|(level, _)| *level == 3).count();
        assert!(
            converted >= 10,
            "{attribution}: only {converted} conversions"
        );
        let sql = format!(
            "SELECT u, window_funnel_breakdown(3, '{attribution}', ts, CASE WHEN b THEN e END, \
             e = 'a', e = 'b', e = 'c') FROM t WHERE e IS NOT NULL GROUP BY u"
        );
        for layout in LAYOUTS {
            for (order, input) in &inputs {
                let mut actual = BTreeMap::new();
                for result in collect(input, layout, &sql).await {
                    let users = result.column(0).as_primitive::<Int64Type>();
                    let outcome = result.column(1).as_struct();
                    let levels = outcome
                        .column(0)
                        .as_primitive::<arrow::datatypes::UInt8Type>();
                    let values = outcome.column(1).as_string::<i32>();
                    for i in 0..result.num_rows() {
                        let value = values.is_valid(i).then(|| values.value(i).to_string());
                        actual.insert(users.value(i), (levels.value(i), value));
                    }
                }
                assert_eq!(actual, expected, "{sql}, layout {layout:?}, {order} input");
            }
        }
    }
}
