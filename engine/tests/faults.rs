//! Storage faults injected under ingest, tag refresh, segment runs and identity refresh: whatever fails, no
//! acknowledged row is lost, no row is duplicated, nothing half-written is visible, and the
//! error says what happened. Every check reads the store through a second engine without
//! faults, i.e. what a restarted server would see.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use cohort_engine::faults::{FaultPlan, FaultyObjectStore};
use cohort_engine::store::ObjectStoreLayer;
use cohort_engine::{Engine, EngineConfig, EngineError};

async fn faulty_engine(dir: &Path) -> (Engine, Arc<FaultPlan>) {
    let plan = FaultPlan::new();
    let wrapping = Arc::clone(&plan);
    let layer = ObjectStoreLayer(Arc::new(move |inner| {
        Arc::new(FaultyObjectStore::new(inner, Arc::clone(&wrapping))) as _
    }));
    let engine = Engine::open(EngineConfig {
        data: dir.to_string_lossy().into_owned(),
        object_store_layer: Some(layer),
        ..Default::default()
    })
    .await
    .unwrap();
    (engine, plan)
}

async fn clean_engine(dir: &Path) -> Engine {
    Engine::open(EngineConfig {
        data: dir.to_string_lossy().into_owned(),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn integers(engine: &Engine, sql: &str) -> Vec<i64> {
    let (_, batches) = engine.execute_collect(sql).await.unwrap();
    batches
        .iter()
        .flat_map(|b| {
            let column = b.column(0).as_primitive::<Int64Type>().clone();
            (0..column.len())
                .map(move |i| column.value(i))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `rows` events of new users from `first`, each with a distinct event name.
fn insert_events(first: i64, rows: i64) -> String {
    let values: Vec<String> = (first..first + rows)
        .map(|id| format!("({id}, 'e{id}', TIMESTAMP '2026-01-01 00:00:00')"))
        .collect();
    format!(
        "INSERT INTO events (user_id, event, ts) VALUES {}",
        values.join(", ")
    )
}

/// Rows visible after a restart, and how many are distinct.
async fn visible_events(dir: &Path) -> (i64, i64) {
    let engine = clean_engine(dir).await;
    let (_, batches) = engine
        .execute_collect("SELECT count(*) AS n, count(DISTINCT event) AS d FROM events")
        .await
        .unwrap();
    let value = |i: usize| batches[0].column(i).as_primitive::<Int64Type>().value(0);
    (value(0), value(1))
}

#[derive(Debug, Clone, Copy)]
enum PutFault {
    FailBefore,
    LoseAcknowledgement,
}

impl PutFault {
    fn arm(self, plan: &FaultPlan, n: u64) {
        match self {
            PutFault::FailBefore => plan.fail_put(n),
            PutFault::LoseAcknowledgement => plan.lose_put_acknowledgement(n),
        }
    }
}

/// Runs `statement` (a refresh) once for every put it makes, under each kind of put fault, with
/// one new user ingested before each run (numbered on from `users`), the first unfaulted run that
/// counts the puts included: a refresh that changes nothing may write less. `check` then gets
/// the fault, the put it hit, the statement's error if it failed, and the users ingested so far.
async fn refresh_under_each_failing_put(
    engine: &Engine,
    plan: &FaultPlan,
    statement: &str,
    mut users: i64,
    mut check: impl AsyncFnMut(PutFault, u64, Option<EngineError>, i64),
) {
    engine
        .execute(&insert_events(users, 1), None)
        .await
        .unwrap();
    users += 1;
    plan.reset();
    engine.execute(statement, None).await.unwrap();
    let puts = plan.puts();
    for fault in [PutFault::FailBefore, PutFault::LoseAcknowledgement] {
        for n in 1..=puts + 1 {
            plan.reset();
            engine
                .execute(&insert_events(users, 1), None)
                .await
                .unwrap();
            users += 1;
            fault.arm(plan, n);
            let result = engine.execute(statement, None).await;
            plan.reset();
            check(fault, n, result.err(), users).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_under_every_failing_put_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, plan) = faulty_engine(dir.path()).await;
    engine.execute(&insert_events(0, 10), None).await.unwrap();
    // How many puts one ingest makes (user keys, data file, commit).
    plan.reset();
    engine.execute(&insert_events(10, 10), None).await.unwrap();
    let puts = plan.puts();
    assert!(puts >= 3, "an ingest made only {puts} puts");
    let mut acknowledged = 20;
    let mut next_user = 20;
    let mut outcomes = Vec::new();
    for fault in [PutFault::FailBefore, PutFault::LoseAcknowledgement] {
        for n in 1..=puts + 1 {
            plan.reset();
            fault.arm(&plan, n);
            let result = engine.execute(&insert_events(next_user, 10), None).await;
            plan.reset();
            next_user += 10;
            match &result {
                Ok(_) => acknowledged += 10,
                Err(e) => assert!(e.to_string().contains("injected fault"), "{e}"),
            }
            outcomes.push((fault, n, result.is_ok()));
            let (rows, distinct) = visible_events(dir.path()).await;
            assert_eq!(
                rows, acknowledged,
                "{fault:?} on put {n}: visible rows differ from acknowledged ones ({outcomes:?})"
            );
            assert_eq!(distinct, rows, "{fault:?} on put {n}: duplicated rows");
        }
    }
    // Some faults must have failed the ingest, and a lost acknowledgement of the commit itself
    // must have been recognised as a success.
    assert!(outcomes.iter().any(|(_, _, ok)| !ok), "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .any(|(f, n, ok)| matches!(f, PutFault::LoseAcknowledgement) && *n == puts && *ok),
        "{outcomes:?}"
    );
    // And the engine that saw the faults still works.
    engine
        .execute(&insert_events(next_user, 10), None)
        .await
        .unwrap();
    assert_eq!(visible_events(dir.path()).await.0, acknowledged + 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_whose_outcome_cannot_be_checked_is_reported_as_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, plan) = faulty_engine(dir.path()).await;
    engine.execute(&insert_events(0, 10), None).await.unwrap();
    plan.reset();
    engine.execute(&insert_events(10, 10), None).await.unwrap();
    let commit_put = plan.puts();
    // The commit lands, its acknowledgement is lost, and the log cannot be read to check.
    plan.reset();
    plan.lose_put_acknowledgement(commit_put);
    plan.unavailable_after_lost_acknowledgement(1000);
    let err = engine
        .execute(&insert_events(20, 10), None)
        .await
        .err()
        .expect("the outcome cannot be known");
    assert!(matches!(err, EngineError::CommitOutcomeUnknown(_)), "{err}");
    assert!(err.to_string().contains("before retrying"), "{err}");
    plan.reset();
    // It did land: a client that retried on a plain failure would have duplicated it.
    assert_eq!(visible_events(dir.path()).await.0, 30);
}

#[tokio::test(flavor = "multi_thread")]
async fn unavailable_storage_and_slow_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, plan) = faulty_engine(dir.path()).await;
    engine.execute(&insert_events(0, 10), None).await.unwrap();

    // A burst of 503s: the ingest fails cleanly and names the cause; afterwards all is well.
    plan.unavailable(3);
    let err = engine
        .execute(&insert_events(10, 10), None)
        .await
        .err()
        .expect("ingest during an outage must fail");
    assert!(err.to_string().contains("503"), "{err}");
    plan.reset();
    assert_eq!(visible_events(dir.path()).await, (10, 10));
    engine.execute(&insert_events(10, 10), None).await.unwrap();

    // Queries fail clearly during an outage...
    plan.unavailable(1000);
    let failed = engine.execute_collect("SELECT count(*) FROM events").await;
    assert!(failed.is_err());
    plan.reset();

    // ...and are merely slower when reads are slow.
    plan.slow_reads(Duration::from_millis(20));
    assert_eq!(integers(&engine, "SELECT count(*) FROM events").await, [20]);
    plan.reset();
}

async fn tag_users(dir: &Path, tag: &str) -> i64 {
    integers(
        &clean_engine(dir).await,
        &format!("SELECT count(*) FROM audience('{tag}')"),
    )
    .await[0]
}

#[tokio::test(flavor = "multi_thread")]
async fn tag_refresh_under_failing_puts_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, plan) = faulty_engine(dir.path()).await;
    engine.execute(&insert_events(0, 5), None).await.unwrap();
    for tag in ["all_users", "early_users"] {
        let filter = if tag == "early_users" {
            "WHERE user_id < 3"
        } else {
            ""
        };
        engine
            .execute(
                &format!("CREATE TAG {tag} AS SELECT DISTINCT user_id FROM events {filter}"),
                None,
            )
            .await
            .unwrap();
    }
    // After the helper's first, unfaulted refresh: the 6 users.
    let mut refreshed = 6;
    refresh_under_each_failing_put(
        &engine,
        &plan,
        "REFRESH TAGS",
        5,
        async |fault, n, error, users| {
            match error {
                None => refreshed = users,
                Some(e) => assert!(e.to_string().contains("injected fault"), "{e}"),
            }
            // Both tags moved together or neither did.
            assert_eq!(
                tag_users(dir.path(), "all_users").await,
                refreshed,
                "{fault:?} on put {n}"
            );
            assert_eq!(tag_users(dir.path(), "early_users").await, 3);
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn segment_runs_under_failing_puts_keep_versions_whole_and_gapless() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, plan) = faulty_engine(dir.path()).await;
    engine.execute(&insert_events(0, 5), None).await.unwrap();
    engine
        .execute(
            "CREATE SEGMENT everyone AS SELECT DISTINCT user_id FROM events",
            None,
        )
        .await
        .unwrap();
    // After the helper's first, unfaulted refresh: version 2 with the 6 users.
    let mut versions = 2;
    let mut members = 6;
    refresh_under_each_failing_put(
        &engine,
        &plan,
        "REFRESH SEGMENT everyone",
        5,
        async |fault, n, error, users| {
            if error.is_none() {
                versions += 1;
                members = users;
            }
            let clean = clean_engine(dir.path()).await;
            let numbers = integers(
                &clean,
                "SELECT version FROM segment_versions WHERE segment = 'everyone' ORDER BY version",
            )
            .await;
            assert_eq!(
                numbers,
                (1..=versions).collect::<Vec<_>>(),
                "{fault:?} on put {n}: versions must be exactly those acknowledged"
            );
            assert_eq!(
                integers(&clean, "SELECT count(*) FROM segment_members('everyone')").await,
                [members],
                "{fault:?} on put {n}"
            );
            // Entered users of each version add up to the members: no diff lost or doubled.
            assert_eq!(
                integers(
                    &clean,
                    "SELECT count(*) FROM segment_changes('everyone', 0) WHERE change = 'entered'"
                )
                .await,
                [members]
            );
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_refresh_under_failing_puts_keeps_the_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, plan) = faulty_engine(dir.path()).await;
    engine.execute(&insert_events(0, 5), None).await.unwrap();
    engine
        .execute(
            "CREATE IDENTITY RULE crowd AS SELECT user_id, 'crowd' FROM events",
            None,
        )
        .await
        .unwrap();
    // After the helper's first, unfaulted refresh (version 1): users 0..=5 and 'crowd' are
    // one person, keyed by user 0.
    let mut version = 1;
    let mut stitched = 7;
    refresh_under_each_failing_put(
        &engine,
        &plan,
        "REFRESH IDENTITY",
        5,
        async |fault, n, error, users| {
            let clean = clean_engine(dir.path()).await;
            let now = integers(&clean, "SHOW IDENTITY").await[0];
            let joined = integers(
                &clean,
                "SELECT count(*) FROM identities WHERE person_key = 0",
            )
            .await[0];
            match error {
                None => {
                    assert_eq!(
                        now,
                        version + 1,
                        "{fault:?} on put {n}: versions are gapless"
                    );
                    assert_eq!(joined, users + 1, "{fault:?} on put {n}");
                }
                Some(e) => {
                    assert!(e.to_string().contains("injected fault"), "{e}");
                    assert_eq!(now, version, "{fault:?} on put {n}: the version stays");
                    assert_eq!(joined, stitched, "{fault:?} on put {n}: so do the persons");
                }
            }
            version = now;
            stitched = joined;
            // What SHOW IDENTITY reports is the refresh of the version that is current.
            let (_, shown) = clean.execute_collect("SHOW IDENTITY").await.unwrap();
            let identifiers = shown[0]
                .column_by_name("identifiers")
                .unwrap()
                .as_primitive::<Int64Type>()
                .value(0);
            assert_eq!(identifiers, stitched, "{fault:?} on put {n}");
        },
    )
    .await;
}
