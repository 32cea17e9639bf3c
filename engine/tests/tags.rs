//! Tags across engine restarts and through their history, and stores written by an older
//! Cohort: what `.slt` cannot check because it depends on commit times or on the store's past.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::Int64Type;
use cohort_engine::tables::SystemTable;
use cohort_engine::{Engine, EngineConfig};

async fn open(dir: &std::path::Path) -> Engine {
    Engine::open(EngineConfig {
        data: dir.to_string_lossy().into_owned(),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn rows(engine: &Engine, sql: &str) -> RecordBatch {
    let (schema, batches) = engine.execute_collect(sql).await.unwrap();
    concat_batches(&schema, &batches).unwrap()
}

async fn count(engine: &Engine, sql: &str) -> i64 {
    rows(engine, sql)
        .await
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_survive_restart_and_keep_their_history() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    engine
        .execute_collect(
            "INSERT INTO events (user_id, event, ts) VALUES (1, 'buy', '2026-11-01T00:00:00Z'), (2, 'view', '2026-11-01T00:00:00Z')",
        )
        .await
        .unwrap();
    engine
        .execute_collect("CREATE TAG buyer AS SELECT user_id FROM events WHERE event = 'buy'")
        .await
        .unwrap();

    let shown = rows(&engine, "SHOW TAGS").await;
    let names: Vec<_> = shown
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        [
            "name",
            "kind",
            "members",
            "schedule",
            "values",
            "users",
            "refreshed_at",
            "query"
        ]
    );
    assert_eq!(shown.column(0).as_string::<i32>().value(0), "buyer");
    assert_eq!(shown.column(1).as_string::<i32>().value(0), "boolean");
    assert_eq!(shown.column(2).as_string::<i32>().value(0), "users");
    assert!(shown.column(3).is_null(0), "no schedule");
    assert!(shown.column(4).is_null(0), "a boolean tag has no values");
    assert_eq!(shown.column(5).as_primitive::<Int64Type>().value(0), 1);
    assert!(shown.column(6).is_valid(0));

    // Time travel needs commits at distinct milliseconds.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let before_second_refresh = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;

    let bitmaps = engine
        .store()
        .latest(SystemTable::TagBitmaps)
        .await
        .unwrap()
        .unwrap();
    let version_before = bitmaps.version().unwrap();
    engine
        .execute_collect(
            "INSERT INTO events (user_id, event, ts) VALUES (2, 'buy', '2026-11-02T00:00:00Z')",
        )
        .await
        .unwrap();
    engine.execute_collect("REFRESH TAGS").await.unwrap();
    let bitmaps = engine
        .store()
        .latest(SystemTable::TagBitmaps)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        bitmaps.version().unwrap(),
        version_before + 1,
        "a refresh is exactly one commit"
    );
    drop(engine);

    // A new process over the same store.
    let engine = open(dir.path()).await;
    assert_eq!(
        count(&engine, "SELECT count(*) FROM audience('buyer')").await,
        2
    );
    let then = before_second_refresh.to_rfc3339();
    assert_eq!(
        count(
            &engine,
            &format!("SELECT count(*) FROM audience('buyer', '{then}')")
        )
        .await,
        1,
        "the tag as it was before the second refresh"
    );
    assert_eq!(
        count(
            &engine,
            &format!(
                "SELECT bitmap_cardinality(audience_bitmap('buyer', TIMESTAMP '{}'))",
                before_second_refresh.format("%Y-%m-%d %H:%M:%S%.6f")
            )
        )
        .await,
        1
    );
    let error = engine
        .execute_collect("SELECT * FROM audience('buyer', '2000-01-01')")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("tag 'buyer' had not been refreshed yet at 2000-01-01"),
        "{error}"
    );
}

/// Segment definitions written before splits existed (no `split`/`seed` columns) still read,
/// and the first split segment adds the columns to the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_segments_join_definitions_written_before_splits() {
    use std::sync::Arc;

    use arrow::array::{StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::prelude::{col, lit};

    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    engine
        .execute_collect(
            "INSERT INTO events (user_id, event, ts) VALUES (1, 'buy', '2026-11-01T00:00:00Z'), (2, 'view', '2026-11-01T00:00:00Z')",
        )
        .await
        .unwrap();
    let old_schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("query", DataType::Utf8, false),
        Field::new("schedule", DataType::Utf8, true),
        Field::new(
            "created_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let legacy = RecordBatch::try_new(
        Arc::clone(&old_schema),
        vec![
            Arc::new(StringArray::from(vec!["legacy"])),
            Arc::new(StringArray::from(vec![
                "SELECT DISTINCT user_id FROM events",
            ])),
            Arc::new(StringArray::from(vec![None::<&str>])),
            Arc::new(TimestampMicrosecondArray::from(vec![0]).with_timezone("UTC")),
        ],
    )
    .unwrap();
    engine
        .store()
        .replace_where(
            SystemTable::SegmentDefinitions,
            old_schema,
            col("name").eq(lit("legacy")),
            legacy,
        )
        .await
        .unwrap();
    let definitions = engine.segment_definitions().await.unwrap();
    assert_eq!(definitions.len(), 1);
    assert_eq!(definitions[0].split, None);

    engine
        .execute_collect(
            "CREATE SEGMENT arms SPLIT (a 50, b 50) AS SELECT DISTINCT user_id FROM events",
        )
        .await
        .unwrap();
    engine
        .execute_collect("REFRESH SEGMENT legacy")
        .await
        .unwrap();
    let definitions = engine.segment_definitions().await.unwrap();
    assert_eq!(definitions.len(), 2);
    let arms = definitions.iter().find(|d| d.name == "arms").unwrap();
    let split = arms.split.as_ref().unwrap();
    assert_eq!(
        (split.groups.as_str(), split.seed.as_str()),
        ("a 50, b 50", "arms")
    );
    assert_eq!(
        definitions
            .iter()
            .find(|d| d.name == "legacy")
            .unwrap()
            .split,
        None
    );
    assert_eq!(
        count(
            &engine,
            "SELECT count(*) FROM segment_members('arms') WHERE split_group IN ('a', 'b')"
        )
        .await,
        2
    );
    assert_eq!(
        count(&engine, "SELECT count(*) FROM segment_members('legacy')").await,
        2
    );
}

/// Profiles written before Cohort kept when each attribute was written still merge into
/// persons: their values rank below any value written since, and among themselves by user key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persons_merge_profiles_written_before_write_times() {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use cohort_engine::tables::TableKind;
    use deltalake::protocol::SaveMode;

    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    engine
        .execute_collect(
            "INSERT INTO events (user_id, event, ts, login_of) VALUES ('a', 'view', '2026-11-01T00:00:00Z', NULL), ('b', 'login', '2026-11-01T00:01:00Z', 'a')",
        )
        .await
        .unwrap();
    let legacy = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Utf8, true),
            Field::new("user_key", DataType::Int64, true),
            Field::new("plan", DataType::Utf8, true),
            Field::new("country", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(StringArray::from(vec!["a", "b"])),
            Arc::new(Int64Array::from(vec![0, 1])),
            Arc::new(StringArray::from(vec![Some("free"), Some("pro")])),
            Arc::new(StringArray::from(vec![Some("SE"), None])),
        ],
    )
    .unwrap();
    engine
        .store()
        .fresh_handle(TableKind::Profiles)
        .await
        .unwrap()
        .write(vec![legacy])
        .with_save_mode(SaveMode::Append)
        .await
        .unwrap();
    engine
        .execute_collect(
            "CREATE IDENTITY RULE login AS SELECT login_of, user_id FROM events WHERE event = 'login'",
        )
        .await
        .unwrap();
    engine.execute_collect("REFRESH IDENTITY").await.unwrap();
    let person = "SELECT plan || '/' || coalesce(country, '-') FROM persons WHERE person_key = 0";
    let text = |batch: RecordBatch| {
        arrow::compute::cast(batch.column(0), &DataType::Utf8)
            .unwrap()
            .as_string::<i32>()
            .value(0)
            .to_string()
    };
    // Both plans undated: b's (the larger key) wins; only a has a country.
    assert_eq!(text(rows(&engine, person).await), "pro/SE");

    engine
        .execute_collect("INSERT INTO profiles (user_id, plan) VALUES ('a', 'team')")
        .await
        .unwrap();
    assert_eq!(text(rows(&engine, person).await), "team/SE");
    assert_eq!(
        count(&engine, "SELECT count(*) FROM persons").await,
        1,
        "a and b are one person"
    );
}
