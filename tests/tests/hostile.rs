//! Single hostile requests against the real server: none may kill it, starve it or escape its
//! limits. Each case asserts a clear gRPC error and that `SELECT 1` answers right after.

use std::time::{Duration, Instant};

use arrow::array::{Int64Array, RecordBatch};
use arrow::ipc::writer::StreamWriter;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandStatementIngest, ProstMessageExt, TicketStatementQuery};
use arrow_flight::{
    Action, CancelFlightInfoRequest, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    Ticket,
};
use cohort_e2e::TestServer;
use cohort_e2e::flight::{channel, code, fetch, one_slot_server, query, rows};
use cohort_proto::v1::StatementHandle;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

async fn assert_alive(client: &mut FlightSqlServiceClient<Channel>) {
    let batches = query(client, "SELECT 1")
        .await
        .expect("the server answers SELECT 1");
    assert_eq!(rows(&batches), 1);
}

/// Statements whose trees are 20,000 to 120,000 levels deep, all under the 1 MiB size limit,
/// each built by a different operator.
fn deep_statements() -> Vec<(&'static str, String)> {
    let repeat = |unit: &str, n: usize| unit.repeat(n);
    let joined = |unit: &str, sep: &str, n: usize| vec![unit; n].join(sep);
    let chain: Vec<String> = (1..20_000)
        .map(|i| format!("c{i} AS (SELECT x FROM c{})", i - 1))
        .collect();
    let doubling: Vec<String> = (1..40)
        .map(|i| {
            format!(
                "c{i} AS (SELECT x FROM c{p} UNION ALL SELECT x FROM c{p})",
                p = i - 1
            )
        })
        .collect();
    vec![
        ("casts", format!("SELECT 1{}", repeat("::BIGINT", 120_000))),
        ("UNION ALL", joined("SELECT 1", " UNION ALL ", 40_000)),
        ("INTERSECT", joined("SELECT 1", " INTERSECT ", 40_000)),
        ("EXCEPT", joined("SELECT 1", " EXCEPT ", 40_000)),
        (
            "IS TRUE",
            format!(
                "SELECT count(*) FROM events WHERE (user_id = 1){}",
                repeat(" IS TRUE", 100_000)
            ),
        ),
        (
            "IS NOT NULL",
            format!("SELECT 1{}", repeat(" IS NOT NULL", 60_000)),
        ),
        ("LIKE", format!("SELECT 'a'{}", repeat(" LIKE 'a'", 80_000))),
        ("IN", format!("SELECT 1{}", repeat(" IN (1)", 80_000))),
        (
            "BETWEEN",
            format!("SELECT 1{}", repeat(" BETWEEN 0 AND 2", 40_000)),
        ),
        (
            "array types",
            format!("SELECT CAST(NULL AS INT{})", repeat("[]", 200_000)),
        ),
        (
            "index chain",
            format!("SELECT make_array(1){}", repeat("[1]", 150_000)),
        ),
        ("NOT", format!("SELECT {}true", repeat("NOT ", 150_000))),
        ("unary minus", format!("SELECT {}1", repeat("- ", 200_000))),
        (
            "nested CASE",
            format!(
                "SELECT {}1{}",
                repeat("CASE WHEN true THEN ", 30_000),
                repeat(" END", 30_000)
            ),
        ),
        (
            "comma joins",
            format!("SELECT 1 FROM {}", joined("events", ", ", 100_000)),
        ),
        (
            "JOIN chain",
            format!(
                "SELECT 1 FROM events{}",
                repeat(" CROSS JOIN events", 50_000)
            ),
        ),
        (
            "CTE chain",
            format!(
                "WITH c0 AS (SELECT 1 AS x), {} SELECT * FROM c19999",
                chain.join(", ")
            ),
        ),
        (
            "doubling CTEs",
            format!(
                "WITH c0 AS (SELECT 1 AS x), {} SELECT * FROM c39",
                doubling.join(", ")
            ),
        ),
        (
            "nested calls",
            format!("SELECT {}1{}", repeat("abs(", 30_000), repeat(")", 30_000)),
        ),
        (
            "subqueries",
            format!(
                "SELECT {}1{}",
                repeat("(SELECT ", 30_000),
                repeat(")", 30_000)
            ),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn deep_statements_are_refused_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("store"), &["--demo"]);
    let channel = channel(&server).await;
    let mut client = FlightSqlServiceClient::new(channel.clone());
    for (what, sql) in deep_statements() {
        assert!(sql.len() < 1 << 20, "{what}: {} bytes", sql.len());
        let started = Instant::now();
        // Query path.
        let err = query(&mut client, &sql).await.unwrap_err();
        assert!(matches!(code(&err), Code::InvalidArgument), "{what}: {err}");
        // Update path and prepared statements plan the same way.
        let err = client.execute_update(sql.clone(), None).await.unwrap_err();
        assert_eq!(code(&err), Code::InvalidArgument, "{what} (update): {err}");
        let err = client.prepare(sql.clone(), None).await.unwrap_err();
        assert_eq!(code(&err), Code::InvalidArgument, "{what} (prepare): {err}");
        assert_alive(&mut client).await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(60),
            "{what}: refused after {took:?}"
        );
    }
    // Chains the limits admit still run.
    let or_chain: Vec<String> = (0..450).map(|i| format!("user_id = {i}")).collect();
    let sql = format!(
        "SELECT count(*) FROM events WHERE {}",
        or_chain.join(" OR ")
    );
    assert_eq!(rows(&query(&mut client, &sql).await.unwrap()), 1);
    let casts = format!("SELECT 1{}", "::BIGINT".repeat(500));
    assert_eq!(rows(&query(&mut client, &casts).await.unwrap()), 1);
    assert!(server.stop());
}

/// An IPC stream of one Int64 batch whose record batch message claims `body` bytes.
fn parameters_claiming(body: i64) -> Vec<u8> {
    let batch =
        RecordBatch::try_from_iter([("$1", std::sync::Arc::new(Int64Array::from(vec![7])) as _)])
            .unwrap();
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, &batch.schema()).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
    drop(writer);
    // The batch's real body is one 8-byte value padded to 8: find the message's bodyLength.
    let mut rest = &out[..];
    let mut offset = 0;
    loop {
        let length = u32::from_le_bytes(rest[4..8].try_into().unwrap()) as usize;
        let message = arrow::ipc::root_as_message(&rest[8..8 + length]).unwrap();
        if message.header_type() == arrow::ipc::MessageHeader::RecordBatch {
            let real = message.bodyLength().to_le_bytes();
            let header = offset + 8..offset + 8 + length;
            let at: Vec<usize> = header.clone().filter(|&i| out[i..i + 8] == real).collect();
            // The body length and the values buffer's length are both 8; bodyLength is the
            // Message table's field, written after the header's buffers.
            let at = *at.last().expect("bodyLength in the message");
            out[at..at + 8].copy_from_slice(&body.to_le_bytes());
            return out;
        }
        let step = 8 + length + message.bodyLength() as usize;
        offset += step;
        rest = &rest[step..];
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn decoders_check_claimed_lengths_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("store"), &[]);
    let channel = channel(&server).await;
    let mut client = FlightSqlServiceClient::new(channel.clone());

    // A ticket whose handle's parameters claim a 2^62-byte body.
    let handle = StatementHandle {
        sql: "SELECT $1".into(),
        parameters_ipc: parameters_claiming(1 << 62),
        ..Default::default()
    };
    let ticket = TicketStatementQuery {
        statement_handle: handle.encode_to_vec().into(),
    };
    let err = client
        .do_get(Ticket::new(ticket.as_any().encode_to_vec()))
        .await
        .map(|_| ())
        .and(Err::<(), _>(
            arrow_flight::error::FlightError::ProtocolError("accepted".into()),
        ))
        .unwrap_err();
    let status_code = code(&err);
    assert_eq!(status_code, Code::InvalidArgument, "{err}");
    assert!(err.to_string().contains("body"), "{err}");
    // The same parameters with their real length run.
    let handle = StatementHandle {
        sql: "SELECT $1".into(),
        parameters_ipc: parameters_claiming(8),
        ..Default::default()
    };
    let ticket = TicketStatementQuery {
        statement_handle: handle.encode_to_vec().into(),
    };
    let batches: Vec<RecordBatch> = client
        .do_get(Ticket::new(ticket.as_any().encode_to_vec()))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(rows(&batches), 1);

    // Bulk ingest whose compressed buffer claims 2^40 uncompressed bytes.
    let ingest = CommandStatementIngest {
        table: "events".into(),
        ..Default::default()
    };
    let descriptor = FlightDescriptor::new_cmd(ingest.as_any().encode_to_vec());
    let messages = compressed_put_claiming(descriptor, 1 << 40);
    let status = put_status(&channel, messages).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");

    // CancelFlightInfo naming a million endpoints is refused at once.
    let ticket = arrow_flight::sql::CommandStatementQuery::default()
        .as_any()
        .encode_to_vec();
    let mut info = FlightInfo::new();
    for _ in 0..1_000_000 {
        info = info.with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket.clone())));
    }
    let request = CancelFlightInfoRequest { info: Some(info) };
    let started = Instant::now();
    let err = FlightServiceClient::new(channel.clone())
        .max_encoding_message_size(usize::MAX)
        .do_action(Action::new("CancelFlightInfo", request.encode_to_vec()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_alive(&mut client).await;
    assert!(server.stop());
}

/// A DoPut of one LZ4-compressed Int64 batch whose values buffer claims `claimed` bytes.
fn compressed_put_claiming(descriptor: FlightDescriptor, claimed: i64) -> Vec<FlightData> {
    use arrow_flight::encode::FlightDataEncoderBuilder;
    let values: Int64Array = (0..1000).collect();
    let batch =
        RecordBatch::try_from_iter([("user_id", std::sync::Arc::new(values) as _)]).unwrap();
    let options = arrow::ipc::writer::IpcWriteOptions::default()
        .try_with_compression(Some(arrow::ipc::CompressionType::LZ4_FRAME))
        .unwrap();
    let encoder = FlightDataEncoderBuilder::new()
        .with_options(options)
        .with_flight_descriptor(Some(descriptor))
        .build(futures::stream::iter([Ok(batch)]));
    let mut messages: Vec<FlightData> = futures::executor::block_on(encoder.try_collect()).unwrap();
    let last = messages.last_mut().unwrap();
    let mut body = last.data_body.to_vec();
    // Each compressed buffer starts with its uncompressed length: 8000 for the values.
    let real = 8000i64.to_le_bytes();
    let at = (0..body.len() - 8)
        .find(|&i| body[i..i + 8] == real)
        .expect("the values buffer's length prefix");
    body[at..at + 8].copy_from_slice(&claimed.to_le_bytes());
    last.data_body = body.into();
    messages
}

async fn put_status(channel: &Channel, messages: Vec<FlightData>) -> tonic::Status {
    match FlightServiceClient::new(channel.clone())
        .do_put(futures::stream::iter(messages))
        .await
    {
        Err(status) => status,
        Ok(response) => response
            .into_inner()
            .message()
            .await
            .expect_err("the put must fail"),
    }
}

/// A query that runs for minutes unless something stops it.
const SLOW_QUERY: &str = "SELECT sum(value % 7) FROM range(200000000000)";

#[tokio::test(flavor = "multi_thread")]
async fn the_update_path_takes_a_slot_and_the_statement_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = one_slot_server(dir.path(), "queue_timeout = \"300ms\"", "3s");
    let mut client = FlightSqlServiceClient::new(channel(&server).await);
    let mut other = FlightSqlServiceClient::new(channel(&server).await);
    let started = Instant::now();
    let slow = tokio::spawn(async move { client.execute_update(SLOW_QUERY.into(), None).await });
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The update holds the one slot: another statement waits 300 ms and is refused.
    let err = query(&mut other, "SELECT 1").await.unwrap_err();
    assert_eq!(code(&err), Code::ResourceExhausted, "{err}");
    let err = slow.await.unwrap().unwrap_err();
    assert_eq!(code(&err), Code::DeadlineExceeded, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_alive(&mut other).await;
    // A prepared query run as an update too.
    let mut prepared = other.prepare(SLOW_QUERY.into(), None).await.unwrap();
    let started = Instant::now();
    let err = prepared.execute_update().await.unwrap_err();
    assert_eq!(code(&err), Code::DeadlineExceeded, "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_alive(&mut other).await;
    let info = other.execute("SELECT 2".into(), None).await.unwrap();
    assert_eq!(rows(&fetch(&mut other, info).await.unwrap()), 1);
    assert!(server.stop());
}

/// `mallory:wrong` in base64.
const MALLORY_WRONG_BASE64: &str = "bWFsbG9yeTp3cm9uZw==";

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_login_flood_leaves_credentialed_clients_served() {
    let dir = tempfile::tempdir().unwrap();
    let (config, token) = cohort_e2e::auth::auth_config(dir.path(), "");
    let server = TestServer::start(
        &dir.path().join("store"),
        &["--config", config.to_str().unwrap()],
    );
    let channel = channel(&server).await;
    let flood_until = Instant::now() + Duration::from_secs(8);
    let mut flooders = Vec::new();
    for _ in 0..48 {
        // 48 clients, each on its own connection.
        let channel = cohort_e2e::flight::channel(&server).await;
        flooders.push(tokio::spawn(async move {
            let mut codes = std::collections::BTreeMap::<String, usize>::new();
            while Instant::now() < flood_until {
                // What a Flight SQL driver sends to log in: Basic credentials on a handshake.
                let mut request = tonic::Request::new(futures::stream::iter([
                    arrow_flight::HandshakeRequest::default(),
                ]));
                request.metadata_mut().insert(
                    "authorization",
                    format!("Basic {MALLORY_WRONG_BASE64}").parse().unwrap(),
                );
                let status = FlightServiceClient::new(channel.clone())
                    .handshake(request)
                    .await
                    .unwrap_err();
                *codes.entry(format!("{:?}", status.code())).or_default() += 1;
            }
            codes
        }));
    }
    let mut client = FlightSqlServiceClient::new(channel.clone());
    client.set_header("authorization", format!("Bearer {token}"));
    let mut latencies = Vec::new();
    tokio::time::sleep(Duration::from_millis(300)).await;
    while Instant::now() < flood_until {
        let started = Instant::now();
        assert_alive(&mut client).await;
        latencies.push(started.elapsed());
    }
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for flooder in flooders {
        for (code, n) in flooder.await.unwrap() {
            *seen.entry(code).or_default() += n;
        }
    }
    latencies.sort();
    let p95 = latencies[latencies.len() * 95 / 100];
    eprintln!(
        "during the flood: {} queries, p95 {p95:?}, max {:?}; flood answers {seen:?}",
        latencies.len(),
        latencies.last().unwrap()
    );
    // Generous bounds for a loaded 2-core machine: before the throttle, 5 queries in 8 s.
    assert!(latencies.len() >= 20, "{} queries", latencies.len());
    assert!(p95 < Duration::from_secs(2), "p95 {p95:?}");
    assert!(
        seen.keys()
            .all(|c| c == "Unauthenticated" || c == "ResourceExhausted"),
        "{seen:?}"
    );
    assert!(seen.contains_key("ResourceExhausted"), "{seen:?}");
    assert!(server.stop());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let server = one_slot_server(
        dir.path(),
        "queue_timeout = \"20s\"\nstall_timeout = \"1s\"",
        "0",
    );
    let mut reader = FlightSqlServiceClient::new(channel(&server).await);
    // A result far larger than the transport's buffers; the client takes one batch and sleeps.
    let info = reader
        .execute(
            "SELECT value, value * 2 AS twice FROM range(200000000)".into(),
            None,
        )
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = reader.do_get(ticket).await.unwrap();
    let first = stream.try_next().await.unwrap().unwrap();
    assert!(first.num_rows() > 0);
    // With one slot and no statement timeout, this runs only if the stalled stream let go.
    let mut other = FlightSqlServiceClient::new(channel(&server).await);
    let started = Instant::now();
    assert_alive(&mut other).await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // The stalled client, reading again, gets what was buffered and then the reason.
    let err = loop {
        match stream.try_next().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("a stalled result must not end as if complete"),
            Err(err) => break err,
        }
    };
    assert_eq!(code(&err), Code::DeadlineExceeded, "{err}");
    assert!(err.to_string().contains("stall_timeout"), "{err}");
    assert!(server.stop());
}

#[tokio::test(flavor = "multi_thread")]
async fn functions_asked_for_huge_outputs_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("store"), &[]);
    let mut client = FlightSqlServiceClient::new(channel(&server).await);
    for sql in [
        "SELECT range(0, 5000000000)",
        "SELECT generate_series(1, 5000000000)",
        "SELECT array_repeat(1, 5000000000)",
        "SELECT repeat('x', 10000000000)",
        "SELECT lpad('x', 10000000000)",
        "SELECT cardinality(range(0, v)) FROM (VALUES (3000000000)) AS t(v)",
    ] {
        let err = query(&mut client, sql).await.unwrap_err();
        assert_eq!(code(&err), Code::ResourceExhausted, "{sql}: {err}");
        assert_alive(&mut client).await;
    }
    assert!(server.stop());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_that_sends_nothing_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let server = one_slot_server(
        dir.path(),
        "queue_timeout = \"20s\"\nstall_timeout = \"1s\"",
        "0",
    );
    let channel = channel(&server).await;
    let ingest = CommandStatementIngest {
        table: "events".into(),
        ..Default::default()
    };
    let descriptor = FlightDescriptor::new_cmd(ingest.as_any().encode_to_vec());
    // The descriptor, then silence: the stream stays open and sends no batch.
    let first = FlightData::new().with_descriptor(descriptor);
    let silent = futures::stream::iter([first]).chain(futures::stream::pending());
    let started = Instant::now();
    let upload = tokio::spawn({
        let channel = channel.clone();
        async move {
            match FlightServiceClient::new(channel).do_put(silent).await {
                Err(status) => status,
                Ok(response) => response.into_inner().message().await.unwrap_err(),
            }
        }
    });
    // With one slot, this runs only once the silent upload has given its slot up.
    let mut other = FlightSqlServiceClient::new(channel);
    assert_alive(&mut other).await;
    let status = upload.await.unwrap();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    assert!(status.message().contains("stall_timeout"), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(server.stop());
}
