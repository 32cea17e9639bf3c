//! The shared runtime: a memory limit makes big operators spill into the configured directory
//! instead of failing or growing without bound.

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use cohort_engine::{Engine, EngineConfig, StatementOutcome};
use datafusion::execution::memory_pool::MemoryLimit;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use futures::StreamExt;

fn spill_count(plan: &dyn ExecutionPlan) -> usize {
    let own = plan.metrics().and_then(|m| m.spill_count()).unwrap_or(0);
    own + plan
        .children()
        .iter()
        .map(|c| spill_count(c.as_ref()))
        .sum::<usize>()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_and_spill_directory_apply_to_queries() {
    let dir = tempfile::tempdir().unwrap();
    let spill = dir.path().join("spill");
    let engine = Engine::open(EngineConfig {
        data: dir.path().join("store").to_string_lossy().into_owned(),
        memory_limit: Some(32 << 20),
        spill_dir: Some(spill.clone()),
        target_partitions: Some(2),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(
        matches!(engine.runtime().memory_pool.memory_limit(), MemoryLimit::Finite(n) if n == 32 << 20)
    );
    let spill_paths = engine.runtime().disk_manager.temp_dir_paths();
    assert!(
        !spill_paths.is_empty() && spill_paths.iter().all(|p| p.starts_with(&spill)),
        "{spill_paths:?}"
    );

    // A full sort of 6M rows (48 MB of values alone) needs more than 32 MiB: it completes only by spilling.
    let StatementOutcome::Query(df) = engine
        .execute(
            "SELECT value * 7 % 1000003 AS v FROM range(6000000) ORDER BY v",
            None,
        )
        .await
        .unwrap()
    else {
        panic!("a query")
    };
    let task = df.task_ctx();
    let plan = df.create_physical_plan().await.unwrap();
    let mut stream = execute_stream(Arc::clone(&plan), Arc::new(task)).unwrap();
    let (mut rows, mut last) = (0usize, i64::MIN);
    while let Some(batch) = stream.next().await {
        let batch = batch.unwrap();
        let values = batch.column(0).as_primitive::<Int64Type>();
        for v in values.values().iter() {
            assert!(*v >= last, "output is sorted");
            last = *v;
        }
        rows += batch.num_rows();
    }
    assert_eq!(rows, 6_000_000);
    assert!(spill_count(plan.as_ref()) > 0, "the sort spilled to disk");
    assert_eq!(
        engine
            .runtime()
            .disk_manager
            .spilling_progress()
            .current_bytes,
        0,
        "spill files are removed"
    );
}

#[tokio::test]
async fn zero_memory_limit_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let result = Engine::open(EngineConfig {
        data: dir.path().to_string_lossy().into_owned(),
        memory_limit: Some(0),
        ..Default::default()
    })
    .await;
    let Err(error) = result else {
        panic!("accepted a zero memory limit")
    };
    assert_eq!(
        error.to_string(),
        "invalid configuration: memory limit must be above zero"
    );
}

/// A query whose per-user states outgrow the memory pool still answers every user: the run
/// aggregation's final step gives up its states and DataFusion's spilling operators run over
/// the Delta scan again (which, read a second time without a fresh state, returned no rows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_past_the_memory_limit_still_give_every_group() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store").to_string_lossy().into_owned();
    let open = |memory_limit| {
        Engine::open(EngineConfig {
            data: data.clone(),
            memory_limit,
            target_partitions: Some(2),
            ..Default::default()
        })
    };
    let writer = open(None).await.unwrap();
    writer
        .execute(
            "INSERT INTO events (user_id, event, ts) SELECT value % 20000, \
             CASE value % 3 WHEN 0 THEN 'view' WHEN 1 THEN 'cart' ELSE 'buy' END, \
             to_timestamp_seconds(1788220800 + value) FROM range(400000)",
            None,
        )
        .await
        .unwrap();
    let sql = "SELECT count(*), CAST(sum(cardinality(p)) AS BIGINT) FROM \
               (SELECT user_id, event_path(ts, event, 5) AS p FROM events GROUP BY user_id)";
    for memory_limit in [None, Some(16 << 20)] {
        let engine = open(memory_limit).await.unwrap();
        let (_, batches) = engine.execute_collect(sql).await.unwrap();
        let groups = batches[0].column(0).as_primitive::<Int64Type>().value(0);
        let items = batches[0].column(1).as_primitive::<Int64Type>().value(0);
        assert_eq!(
            (groups, items),
            (20_000, 100_000),
            "memory limit {memory_limit:?}"
        );
    }
}

/// OPTIMIZE sorts a day of many ingests within the memory limit: one file per day afterwards,
/// in (user_id, ts) order, with every row and its key kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_sorts_fragmented_days_within_the_memory_limit() {
    use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use cohort_engine::TableKind;

    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineConfig {
        data: dir.path().join("store").to_string_lossy().into_owned(),
        memory_limit: Some(16 << 20),
        spill_dir: Some(dir.path().join("spill")),
        target_partitions: Some(1),
        ..Default::default()
    })
    .await
    .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("event", DataType::Utf8, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let day = 1_793_491_200_000_000i64; // 2026-11-01T00:00:00Z
    let (ingests, rows) = (4i64, 60_000i64);
    for ingest in 0..ingests {
        // Each ingest holds every user, at a later hour than the one before.
        let users: Vec<i64> = (0..rows).map(|i| (i * 7_919) % rows).collect();
        let ts: Vec<i64> = users
            .iter()
            .map(|u| day + ingest * 3_600_000_000 + u * 1_000)
            .collect();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(users)),
                Arc::new(StringArray::from(vec!["view"; rows as usize])),
                Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
            ],
        )
        .unwrap();
        engine
            .ingest_batches(TableKind::Events, "test", &schema, &[batch])
            .await
            .unwrap();
    }
    let keys_before = sum(&engine, "SELECT sum(user_key * (user_id + 1)) FROM events").await;

    let report = engine.optimize(TableKind::Events).await.unwrap();
    assert_eq!(
        (report.partitions, report.files_removed, report.files_added),
        (1, ingests as u64, 1),
        "{report:?}"
    );
    assert_eq!(report.rows, (ingests * rows) as u64);
    let table = engine
        .store()
        .latest(TableKind::Events)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(table.snapshot().unwrap().log_data().num_files(), 1);
    assert_eq!(
        sum(&engine, "SELECT sum(user_key * (user_id + 1)) FROM events").await,
        keys_before
    );

    // One file, one partition: the scan returns the file's order.
    let StatementOutcome::Query(df) = engine
        .execute("SELECT user_id, ts FROM events", None)
        .await
        .unwrap()
    else {
        panic!("a query")
    };
    let mut previous: Option<(i64, i64)> = None;
    let mut seen = 0;
    for batch in df.collect().await.unwrap() {
        let users = batch.column(0).as_primitive::<Int64Type>();
        let ts = batch
            .column(1)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        for i in 0..batch.num_rows() {
            let row = (users.value(i), ts.value(i));
            assert!(previous <= Some(row), "{previous:?} before {row:?}");
            previous = Some(row);
            seen += 1;
        }
    }
    assert_eq!(seen, ingests * rows);
    let again = engine.optimize(TableKind::Events).await.unwrap();
    assert_eq!((again.files_removed, again.version), (0, None));
}

async fn sum(engine: &Engine, sql: &str) -> i64 {
    let StatementOutcome::Query(df) = engine.execute(sql, None).await.unwrap() else {
        panic!("a query")
    };
    let batches = df.collect().await.unwrap();
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}
