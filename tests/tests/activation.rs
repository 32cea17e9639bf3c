//! `cohort.v1.ActivationService` end to end: a tonic client against the real server — list,
//! members, changes after a cursor (also after a server restart), and version notifications.

use std::collections::BTreeSet;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use cohort_e2e::{TestServer, run_cli};
use cohort_proto::v1::activation_service_client::ActivationServiceClient;
use cohort_proto::v1::{
    ListSegmentsRequest, StreamChangesRequest, StreamMembersRequest, SubscribeRequest, UsersBatch,
};
use futures::{StreamExt, TryStreamExt};
use tonic::transport::Channel;

const ABANDONERS: &str = "SELECT user_id FROM events GROUP BY user_id \
     HAVING bool_or(event = 'add_to_cart') AND NOT bool_or(event = 'purchase')";

fn sql(server: &TestServer, statement: &str) -> Vec<String> {
    let url = format!("grpc://{}", server.address);
    let (ok, out, err) = run_cli(&["sql", "--connect", &url, "--format", "csv", statement]);
    assert!(ok, "{statement}: {err}");
    out.lines().skip(1).map(str::to_string).collect()
}

fn decode(message: &UsersBatch) -> RecordBatch {
    let mut reader =
        arrow::ipc::reader::StreamReader::try_new(message.arrow_ipc.as_slice(), None).unwrap();
    let batch = reader.next().unwrap().unwrap();
    assert!(reader.next().is_none(), "one batch per message");
    batch
}

/// A server on `store` with the demo data and the `abandoners` segment (version 1).
fn demo_with_abandoners(store: &std::path::Path) -> TestServer {
    let server = TestServer::start(store, &["--demo"]);
    sql(
        &server,
        &format!("CREATE SEGMENT abandoners AS {ABANDONERS}"),
    );
    server
}

async fn client(server: &TestServer) -> ActivationServiceClient<Channel> {
    ActivationServiceClient::connect(server.url())
        .await
        .unwrap()
}

/// (user_id, change) of every change after `cursor`, and the versions delivered.
async fn changes_after(server: &TestServer, cursor: i64) -> (BTreeSet<(i64, String)>, Vec<i64>) {
    let mut stream = client(server)
        .await
        .stream_changes(StreamChangesRequest {
            segment: "abandoners".into(),
            after_version: cursor,
        })
        .await
        .unwrap()
        .into_inner();
    let (mut changes, mut completed) = (BTreeSet::new(), Vec::new());
    while let Some(message) = stream.next().await {
        let message = message.unwrap();
        let batch = decode(&message);
        let ids = batch.column(0).as_primitive::<Int64Type>();
        let kinds = batch.column(2).as_string::<i32>();
        for row in 0..batch.num_rows() {
            changes.insert((ids.value(row), kinds.value(row).to_string()));
        }
        if message.version_complete {
            completed.push(message.version);
        }
    }
    (changes, completed)
}

/// Every message of a version's members, or the error the call ended with.
async fn members(
    server: &TestServer,
    segment: &str,
    version: Option<i64>,
) -> Result<Vec<UsersBatch>, tonic::Status> {
    client(server)
        .await
        .stream_members(StreamMembersRequest {
            segment: segment.into(),
            version,
        })
        .await?
        .into_inner()
        .try_collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_consumer_lists_pulls_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let server = demo_with_abandoners(&store);
    let expected: BTreeSet<i64> = sql(&server, ABANDONERS)
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();

    let listed = client(&server)
        .await
        .list_segments(ListSegmentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .segments;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].segment.as_str(),
            listed[0].version,
            listed[0].members
        ),
        ("abandoners", 1, expected.len() as i64)
    );

    // Arrow-native tools pull the same version with a plain Flight DoGet.
    let channel = Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut flight = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
    let ticket = arrow_flight::Ticket::new(listed[0].flight_ticket.clone());
    let batches: Vec<RecordBatch> = flight
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let via_flight: BTreeSet<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(via_flight, expected);

    let mut pulled = BTreeSet::new();
    for message in members(&server, "abandoners", None).await.unwrap() {
        let batch = decode(&message);
        pulled.extend(
            batch
                .column(0)
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .copied(),
        );
    }
    assert_eq!(pulled, expected);

    // A subscriber hears about the next version as soon as it commits.
    let mut notifications = client(&server)
        .await
        .subscribe(SubscribeRequest {
            segments: vec!["abandoners".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let buyers: Vec<i64> = expected.iter().take(2).copied().collect();
    sql(
        &server,
        &format!(
            "INSERT INTO events (user_id, event, ts) VALUES ({}, 'purchase', '2026-11-20T10:00:00Z'), ({}, 'purchase', '2026-11-20T10:00:00Z'), (90000001, 'add_to_cart', '2026-11-20T10:00:00Z')",
            buyers[0], buyers[1]
        ),
    );
    sql(&server, "REFRESH SEGMENT abandoners");
    let notified = tokio::time::timeout(std::time::Duration::from_secs(30), notifications.next())
        .await
        .expect("a notification")
        .unwrap()
        .unwrap();
    assert_eq!(
        (notified.version, notified.entered, notified.exited),
        (2, 1, 2)
    );

    // A consumer whose cursor is version 1 gets exactly version 2's changes.
    let wanted: BTreeSet<(i64, String)> = [
        (90000001, "entered".to_string()),
        (buyers[0], "exited".to_string()),
        (buyers[1], "exited".to_string()),
    ]
    .into();
    let (changes, completed) = changes_after(&server, 1).await;
    assert_eq!((changes, completed), (wanted.clone(), vec![2]));
    // Up to date: nothing more.
    assert_eq!(changes_after(&server, 2).await, (BTreeSet::new(), vec![]));

    // The same cursor after a server restart resumes identically.
    assert!(server.stop());
    let server = TestServer::start(&store, &[]);
    assert_eq!(changes_after(&server, 1).await, (wanted, vec![2]));
    let (all, versions) = changes_after(&server, 0).await;
    assert_eq!(versions, [1, 2]);
    assert_eq!(
        all.iter().filter(|(_, c)| c == "entered").count(),
        expected.len() + 1
    );

    let error = client(&server)
        .await
        .stream_changes(StreamChangesRequest {
            segment: "x'; DROP".into(),
            after_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    let error = members(&server, "nothing", None).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::NotFound);
    assert!(server.stop());
}

/// A segment larger than one message streams as several batches of at most 65,536 users, only
/// the last marked complete, and a version that changed nobody still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_streams_a_large_segment_in_batches() {
    const USERS: i64 = 150_000;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("store"), &[]);
    sql(
        &server,
        &format!(
            "INSERT INTO events (user_id, event, ts) SELECT value, 'signup', \
             TIMESTAMP '2026-11-20T10:00:00Z' FROM generate_series(1, {USERS})"
        ),
    );
    sql(
        &server,
        "CREATE SEGMENT everyone AS SELECT DISTINCT user_id FROM events",
    );
    sql(
        &server,
        &format!(
            "INSERT INTO events (user_id, event, ts) VALUES ({}, 'signup', '2026-11-21T10:00:00Z')",
            USERS + 1
        ),
    );
    sql(&server, "REFRESH SEGMENT everyone");

    let messages = members(&server, "everyone", Some(1)).await.unwrap();
    let sizes: Vec<usize> = messages.iter().map(|m| decode(m).num_rows()).collect();
    assert_eq!(sizes, [65_536, 65_536, 18_928]);
    let complete: Vec<bool> = messages.iter().map(|m| m.version_complete).collect();
    assert_eq!(complete, [false, false, true]);
    let mut ids = BTreeSet::new();
    for message in &messages {
        assert_eq!(message.version, 1);
        let batch = decode(message);
        ids.extend(
            batch
                .column(0)
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .copied(),
        );
    }
    assert_eq!(ids, (1..=USERS).collect());

    let messages: Vec<UsersBatch> = client(&server)
        .await
        .stream_changes(StreamChangesRequest {
            segment: "everyone".into(),
            after_version: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .try_collect()
        .await
        .unwrap();
    let summary: Vec<(i64, usize, bool)> = messages
        .iter()
        .map(|m| (m.version, decode(m).num_rows(), m.version_complete))
        .collect();
    assert_eq!(
        summary,
        [
            (1, 65_536, false),
            (1, 65_536, false),
            (1, 18_928, true),
            (2, 1, true)
        ]
    );

    let error = members(&server, "everyone", Some(7)).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::NotFound);
    assert!(server.stop());
}

/// Subscribe hears of versions whichever process commits them: a run on another server sharing
/// the store is announced too, and each version exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_hear_of_versions_committed_by_other_processes() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let watched = demo_with_abandoners(&store);
    let other = TestServer::start(&store, &[]);
    let mut notifications = client(&watched)
        .await
        .subscribe(SubscribeRequest { segments: vec![] })
        .await
        .unwrap()
        .into_inner();
    let mut next = async || {
        tokio::time::timeout(std::time::Duration::from_secs(20), notifications.next())
            .await
            .map(|n| n.unwrap().unwrap().version)
    };

    // Each run sees one more abandoner (a run that changes nothing commits no version).
    let mut abandoner = 90_000_000;
    let mut refresh = |server: &TestServer| {
        abandoner += 1;
        sql(
            server,
            &format!(
                "INSERT INTO events (user_id, event, ts) VALUES ({abandoner}, 'add_to_cart', '2026-11-20T10:00:00Z')"
            ),
        );
        sql(server, "REFRESH SEGMENT abandoners");
    };

    refresh(&other);
    assert_eq!(
        next().await,
        Ok(2),
        "a version committed by the other server"
    );
    refresh(&watched);
    assert_eq!(next().await, Ok(3), "a version committed by this server");
    refresh(&other);
    // Version 3 was announced by the run itself; the store watch must not repeat it.
    assert_eq!(next().await, Ok(4));
    assert!(other.stop());
    assert!(watched.stop());
}
