//! `RunAggregateExec` gives the same answers as DataFusion's partial hash aggregation: every
//! aggregate kind it may replace, each integer key type, NULL keys, sorted, reverse-sorted and
//! shuffled input, tiny and large batches, one and several partitions, and under a memory limit
//! that forces it to hand groups on early.

mod common;

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, UInt64Array};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::pretty::pretty_format_batches;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const QUERY: &str = "SELECT k, count(*), count(v), sum(v), min(v), max(v), avg(v), \
    sum(v) FILTER (WHERE flag), max(e), retention(flag, v > 0, e = 'a'), \
    window_funnel(10, ts, e = 'a', e = 'b', e = 'c') \
    FROM t GROUP BY k ORDER BY k";

#[derive(Clone, Copy, Debug)]
enum Order {
    Ascending,
    /// Two ascending parts: keys ascend, then restart among keys already seen. The restart
    /// (at 2/5) falls inside a partition for 2, 3 and 4 partitions.
    AscendingTwice,
    Descending,
    Shuffled,
}

/// Rows with `groups` distinct keys (some NULL), in the given order.
fn data(seed: u64, rows: usize, groups: u64, key_type: &DataType, order: Order) -> RecordBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut keys: Vec<Option<u64>> = (0..rows)
        .map(|_| (rng.random_range(0..50) != 0).then(|| rng.random_range(0..groups)))
        .collect();
    match order {
        Order::Ascending => keys.sort(),
        Order::AscendingTwice => {
            let (first, second) = keys.split_at_mut(rows * 2 / 5);
            first.sort();
            second.sort();
        }
        Order::Descending => keys.sort_by(|a, b| b.cmp(a)),
        Order::Shuffled => keys.shuffle(&mut rng),
    }
    let keys: ArrayRef = Arc::new(UInt64Array::from(keys));
    let values = Int64Array::from_iter(
        (0..rows).map(|_| (rng.random_range(0..10) != 0).then(|| rng.random_range(-100..100))),
    );
    let flags = BooleanArray::from_iter((0..rows).map(|_| Some(rng.random_bool(0.5))));
    let events = StringArray::from_iter_values(
        (0..rows).map(|_| ["a", "b", "c", "x"][rng.random_range(0..4)]),
    );
    let times = Int64Array::from_iter_values((0..rows).map(|_| rng.random_range(0..40)));
    // The key is not the first column: the operators must not confuse the input's columns
    // with those of the partial states (where the key comes first).
    let schema = Schema::new(vec![
        Field::new("v", DataType::Int64, true),
        Field::new("flag", DataType::Boolean, true),
        Field::new("k", key_type.clone(), true),
        Field::new("e", DataType::Utf8, false),
        Field::new("ts", DataType::Int64, false),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(values),
            Arc::new(flags),
            cast(&keys, key_type).unwrap(),
            Arc::new(events),
            Arc::new(times),
        ],
    )
    .unwrap()
}

fn context(
    batch_size: usize,
    partitions: usize,
    runs: bool,
    memory: Option<usize>,
) -> SessionContext {
    let mut config = common::config(batch_size, partitions, false);
    // The final aggregation may spill under the memory test's limit; its merge buffer must fit.
    config.options_mut().execution.sort_spill_reservation_bytes = 256 << 10;
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(bytes) = memory {
        runtime = runtime.with_memory_limit(bytes, 1.0);
    }
    common::session(config, runtime.build_arc().unwrap(), runs)
}

/// The query's result, and the rows the run aggregation emitted (None if the plan has none),
/// and the rows `RunFinalExec` produced itself (None if absent, or if it let DataFusion's
/// operators run).
async fn answer(ctx: &SessionContext, sql: &str) -> (String, Option<usize>, Option<usize>) {
    let plan = plan_of(ctx, sql).await;
    let batches = collect(Arc::clone(&plan), ctx.task_ctx()).await.unwrap();
    let result = concat_batches(&plan.schema(), &batches).unwrap();
    (
        pretty_format_batches(&[result]).unwrap().to_string(),
        rows_of(&plan, "RunAggregateExec"),
        rows_of(&plan, "RunFinalExec"),
    )
}

async fn plan_of(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
    ctx.sql(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap()
}

/// Whether `plan` contains an operator named `name`.
fn has_operator(plan: &Arc<dyn ExecutionPlan>, name: &str) -> bool {
    plan.name() == name || plan.children().into_iter().any(|c| has_operator(c, name))
}

fn rows_of(plan: &Arc<dyn ExecutionPlan>, name: &str) -> Option<usize> {
    if plan.name() == name {
        return plan.metrics().and_then(|m| m.output_rows());
    }
    plan.children().into_iter().find_map(|c| rows_of(c, name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_answers_as_hash_aggregation() {
    let mut cases = 0;
    for (seed, key_type) in [
        DataType::Int64,
        DataType::Int32,
        DataType::UInt64,
        DataType::Int8,
        DataType::UInt16,
    ]
    .iter()
    .enumerate()
    {
        for order in [
            Order::Ascending,
            Order::AscendingTwice,
            Order::Descending,
            Order::Shuffled,
        ] {
            let batch = data(seed as u64, 3000, 100, key_type, order);
            for (batch_size, partitions) in [(1, 2), (7, 3), (64, 2), (8192, 4)] {
                let expected = {
                    let ctx = context(batch_size, partitions, false, None);
                    common::register_partitioned(&ctx, &batch, partitions);
                    answer(&ctx, QUERY).await
                };
                let ctx = context(batch_size, partitions, true, None);
                common::register_partitioned(&ctx, &batch, partitions);
                let (actual, emitted, merged) = answer(&ctx, QUERY).await;
                let case =
                    format!("{key_type} {order:?} batch {batch_size} partitions {partitions}");
                assert!(emitted.is_some(), "{case}: no RunAggregateExec in the plan");
                assert!(
                    merged.is_some_and(|rows| rows > 0),
                    "{case}: RunFinalExec did not merge the states"
                );
                assert_eq!(actual, expected.0, "{case}");
                assert_eq!(expected.1, None);
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 5 * 4 * 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sorted_input_is_handed_on_in_pieces() {
    // 2,000 groups in ascending order with 64-row batches: emitted every 64 groups, so a group
    // split across two emissions is merged by the final aggregation.
    let batch = data(7, 20_000, 2_000, &DataType::Int64, Order::Ascending);
    let ctx = context(64, 2, true, None);
    common::register_partitioned(&ctx, &batch, 2);
    let (actual, emitted, _) = answer(&ctx, QUERY).await;
    let groups = 2_001; // keys 0..2000 and NULL
    let emitted = emitted.expect("run aggregation planned");
    assert!(
        emitted > groups,
        "{emitted} rows emitted: groups were never split"
    );
    let plain = context(64, 2, false, None);
    common::register_partitioned(&plain, &batch, 2);
    assert_eq!(actual, answer(&plain, QUERY).await.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_pressure_hands_groups_on_instead_of_failing() {
    // No ORDER BY: a sort under this limit can itself run out of memory, depending on which
    // partition gets there first. Rows are compared as sorted lines instead.
    let sql = "SELECT k, count(*), sum(v) FROM t GROUP BY k";
    let sorted_lines = |table: &str| {
        let mut lines: Vec<String> = table.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    let batch = data(11, 200_000, 100_000, &DataType::Int64, Order::Shuffled);
    let limited = context(8192, 2, true, Some(8 << 20));
    common::register_partitioned(&limited, &batch, 2);
    let (actual, emitted, merged) = answer(&limited, sql).await;
    assert!(has_operator(&plan_of(&limited, sql).await, "RunFinalExec"));
    assert_eq!(
        merged.unwrap_or(0),
        0,
        "the states outgrow the pool: DataFusion's final aggregation runs instead"
    );
    let emitted = emitted.expect("run aggregation planned");
    let groups = {
        let ctx = context(8192, 2, false, None);
        common::register_partitioned(&ctx, &batch, 2);
        let (expected, _, _) = answer(&ctx, sql).await;
        assert_eq!(sorted_lines(&actual), sorted_lines(&expected));
        expected.lines().count() - 4
    };
    assert!(
        emitted > groups,
        "{emitted} rows for {groups} groups: never emitted early"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_pool_with_room_for_the_states_keeps_the_run_final_aggregation() {
    let sql = "SELECT k, count(*), sum(v) FROM t GROUP BY k ORDER BY k";
    let batch = data(5, 20_000, 2_000, &DataType::Int64, Order::Ascending);
    let bounded = context(8192, 2, true, Some(256 << 20));
    common::register_partitioned(&bounded, &batch, 2);
    let (actual, _, merged) = answer(&bounded, sql).await;
    assert!(merged.is_some_and(|rows| rows > 0), "{merged:?}");
    let plain = context(8192, 2, false, None);
    common::register_partitioned(&plain, &batch, 2);
    assert_eq!(actual, answer(&plain, sql).await.0);
}

/// The run-numbered final aggregation keeps the hash partitioning it replaces: each output
/// partition holds exactly the groups DataFusion's repartitioning sends there, so a parent
/// relying on that partitioning (a partitioned join on the key) stays correct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_partitions_hold_the_groups_hash_repartitioning_sends_there() {
    let sql = "SELECT k, count(*), sum(v) FROM t GROUP BY k";
    for order in [Order::Ascending, Order::Shuffled] {
        let batch = data(5, 5000, 700, &DataType::Int64, order);
        let mut per_partition = Vec::new();
        for runs in [false, true] {
            let ctx = context(256, 3, runs, None);
            common::register_partitioned(&ctx, &batch, 3);
            let plan = plan_of(&ctx, sql).await;
            assert_eq!(has_operator(&plan, "RunFinalExec"), runs);
            assert_eq!(plan.properties().output_partitioning().partition_count(), 3);
            let mut partitions = Vec::new();
            for partition in 0..3 {
                let stream = plan.execute(partition, ctx.task_ctx()).unwrap();
                let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
                let rows = concat_batches(&plan.schema(), &batches).unwrap();
                let mut lines: Vec<String> = pretty_format_batches(&[rows])
                    .unwrap()
                    .to_string()
                    .lines()
                    .skip(3)
                    .map(str::to_string)
                    .collect();
                lines.sort();
                partitions.push(lines);
            }
            assert!(
                partitions.iter().all(|p| p.len() > 100),
                "{order:?}: {partitions:?}"
            );
            per_partition.push(partitions);
        }
        assert_eq!(per_partition[0], per_partition[1], "{order:?}");
    }
}

#[tokio::test]
async fn other_aggregations_keep_datafusions_operator() {
    let batch = data(3, 100, 10, &DataType::Int64, Order::Shuffled);
    let ctx = context(8192, 2, true, None);
    common::register_partitioned(&ctx, &batch, 2);
    for sql in [
        "SELECT e, count(*) FROM t GROUP BY e",
        "SELECT k, v, count(*) FROM t GROUP BY k, v",
        "SELECT k, array_agg(v ORDER BY ts) FROM t GROUP BY k",
        "SELECT count(*) FROM t",
    ] {
        let (_, emitted, _) = answer(&ctx, sql).await;
        assert_eq!(emitted, None, "{sql}");
    }
}
