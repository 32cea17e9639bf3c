//! Who gets in, what each role may do, TLS, and the query limits — against the real server,
//! with arrow-flight's Flight SQL client and our own generated clients.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandStatementIngest, TableDefinitionOptions};
use arrow_flight::{Action, CancelFlightInfoRequest};
use cohort_e2e::auth::{ADMIN_PASSWORD, READER_PASSWORD, auth_config};
use cohort_e2e::flight::{channel, code, fetch, first_integer, one_slot_server, query, rows};
use cohort_e2e::tls::{Pki, pki};
use cohort_e2e::{TestServer, cohort_bin};
use cohort_proto::v1::ListSegmentsRequest;
use cohort_proto::v1::activation_service_client::ActivationServiceClient;
use prost::Message;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

#[tokio::test(flavor = "multi_thread")]
async fn every_service_needs_credentials_and_roles_limit_what_callers_do() {
    let dir = tempfile::tempdir().unwrap();
    let (config, token) = auth_config(dir.path(), "");
    let server = TestServer::start(
        &dir.path().join("store"),
        &["--config", config.to_str().unwrap()],
    );
    let channel = channel(&server).await;

    // Nobody: refused on Flight SQL, on the activation service and on the admin service,
    // without saying why; health stays open for load balancers.
    let mut anonymous = FlightSqlServiceClient::new(channel.clone());
    let err = query(&mut anonymous, "SELECT 1").await.unwrap_err();
    assert_eq!(code(&err), Code::Unauthenticated, "{err}");
    let status = ActivationServiceClient::new(channel.clone())
        .list_segments(ListSegmentsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "unauthenticated");
    let status = cohort_proto::v1::admin_service_client::AdminServiceClient::new(channel.clone())
        .get_server_info(cohort_proto::v1::GetServerInfoRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(health.into_inner().status, 1, "SERVING");

    // Wrong password, unknown user, made-up token.
    let mut wrong = FlightSqlServiceClient::new(channel.clone());
    let err = wrong.handshake("ada", "wrong password").await.unwrap_err();
    assert!(err.to_string().contains("nauthenticated"), "{err}");
    assert!(wrong.handshake("mallory", ADMIN_PASSWORD).await.is_err());
    let mut guessed = FlightSqlServiceClient::new(channel.clone());
    guessed.set_token("cohort_guessed".into());
    assert_eq!(
        code(&query(&mut guessed, "SELECT 1").await.unwrap_err()),
        Code::Unauthenticated
    );

    // A reader (password handshake -> session token) queries, and is refused every change.
    let mut reader = FlightSqlServiceClient::new(channel.clone());
    reader.handshake("rita", READER_PASSWORD).await.unwrap();
    assert_eq!(rows(&query(&mut reader, "SELECT 1").await.unwrap()), 1);
    assert_eq!(rows(&query(&mut reader, "SHOW TAGS").await.unwrap()), 0);
    let insert = "INSERT INTO events (user_id, event, ts) VALUES (1, 'signup', TIMESTAMP '2026-01-01 00:00:00')";
    let err = reader
        .execute_update(insert.to_string(), None)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::PermissionDenied, "{err}");
    let err = query(
        &mut reader,
        "CREATE TAG buyers AS SELECT user_id FROM events",
    )
    .await
    .unwrap_err();
    assert_eq!(code(&err), Code::PermissionDenied, "{err}");
    let err = query(&mut reader, "REFRESH TAGS").await.unwrap_err();
    assert_eq!(code(&err), Code::PermissionDenied, "{err}");
    let err = query(&mut reader, "OPTIMIZE events").await.unwrap_err();
    assert_eq!(code(&err), Code::PermissionDenied, "{err}");
    let batch = RecordBatch::try_from_iter([
        (
            "user_id",
            std::sync::Arc::new(arrow::array::Int64Array::from(vec![1])) as _,
        ),
        (
            "event",
            std::sync::Arc::new(arrow::array::StringArray::from(vec!["signup"])) as _,
        ),
        (
            "ts",
            std::sync::Arc::new(
                arrow::array::TimestampMicrosecondArray::from(vec![1_767_225_600_000_000])
                    .with_timezone("UTC"),
            ) as _,
        ),
    ])
    .unwrap();
    let ingest = CommandStatementIngest {
        table_definition_options: Some(TableDefinitionOptions {
            if_not_exist: 0,
            if_exists: 2,
        }),
        table: "events".into(),
        schema: None,
        catalog: None,
        temporary: false,
        transaction_id: None,
        options: Default::default(),
    };
    let err = reader
        .execute_ingest(ingest.clone(), futures::stream::iter([Ok(batch.clone())]))
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::PermissionDenied, "{err}");

    // The API token is a reader too.
    let mut dashboards = FlightSqlServiceClient::new(channel.clone());
    dashboards.set_token(token);
    assert_eq!(rows(&query(&mut dashboards, "SELECT 1").await.unwrap()), 1);
    let err = dashboards
        .execute_update(insert.to_string(), None)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::PermissionDenied);

    // The admin may change data; what the reader was refused left nothing behind.
    let mut admin = FlightSqlServiceClient::new(channel.clone());
    admin.handshake("ada", ADMIN_PASSWORD).await.unwrap();
    let count = "SELECT count(*) AS n FROM events";
    assert_eq!(first_integer(&query(&mut admin, count).await.unwrap()), 0);
    assert_eq!(
        admin
            .execute_update(insert.to_string(), None)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        admin
            .execute_ingest(ingest, futures::stream::iter([Ok(batch)]))
            .await
            .unwrap(),
        1
    );
    assert_eq!(first_integer(&query(&mut reader, count).await.unwrap()), 2);
    assert!(server.stop());
}

/// Starts `cohort serve` with `args`: `None` (and the server is stopped) if it started
/// listening, else its exit status and standard error.
fn serve_outcome(args: &[&str]) -> Option<(bool, String)> {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let pg_listen: &[&str] = if args.contains(&"--pg-listen") {
        &[]
    } else {
        &["--pg-listen", "127.0.0.1:0"]
    };
    let mut child = Command::new(cohort_bin())
        .arg("serve")
        .arg("--data")
        .arg(dir.path())
        .args(pg_listen)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let listened = stdout
        .lines()
        .map_while(Result::ok)
        .any(|line| line.starts_with("cohort listening on"));
    if listened {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    }
    let output = child.wait_with_output().unwrap();
    Some((
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[test]
fn a_network_address_needs_auth_or_an_explicit_insecure_flag() {
    let (ok, stderr) = serve_outcome(&["--listen", "0.0.0.0:0"]).expect("must refuse to start");
    assert!(!ok);
    assert!(stderr.contains("refusing to listen"), "{stderr}");
    assert!(
        serve_outcome(&["--listen", "0.0.0.0:0", "--insecure"]).is_none(),
        "--insecure must start"
    );
    // The PostgreSQL endpoint follows the same rule.
    let (ok, stderr) = serve_outcome(&["--listen", "127.0.0.1:0", "--pg-listen", "0.0.0.0:0"])
        .expect("must refuse to start");
    assert!(
        !ok && stderr.contains("refusing to listen on 0.0.0.0"),
        "{stderr}"
    );
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = auth_config(dir.path(), "");
    // Auth without TLS would send passwords and tokens in the clear.
    let (ok, stderr) = serve_outcome(&[
        "--listen",
        "0.0.0.0:0",
        "--config",
        config.to_str().unwrap(),
    ])
    .expect("auth without TLS must refuse to start");
    assert!(!ok && stderr.contains("without TLS"), "{stderr}");
    assert!(
        serve_outcome(&[
            "--listen",
            "0.0.0.0:0",
            "--config",
            config.to_str().unwrap(),
            "--insecure"
        ])
        .is_none(),
        "auth without TLS starts with --insecure"
    );
    let pki = pki();
    let files = pki.write_files(dir.path());
    let (cert, key) = (files.server_cert, files.server_key);
    assert!(
        serve_outcome(&[
            "--listen",
            "0.0.0.0:0",
            "--config",
            config.to_str().unwrap(),
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ])
        .is_none(),
        "with auth and TLS it must start"
    );
    // A config mistake in [auth] stops start-up with a pointer to the fix.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[auth.users]]\nname = \"ada\"\nrole = \"admin\"\npassword_hash = \"hunter2\"\n",
    )
    .unwrap();
    let (ok, stderr) = serve_outcome(&["--config", bad.to_str().unwrap()]).unwrap();
    assert!(!ok && stderr.contains("hash-password"), "{stderr}");
}

/// A query that runs for minutes unless something stops it.
const SLOW_QUERY: &str = "SELECT sum(value % 7) FROM range(100000000000)";

#[tokio::test(flavor = "multi_thread")]
async fn statement_limits_keep_the_server_alive_and_answering() {
    let dir = tempfile::tempdir().unwrap();
    let server = one_slot_server(
        dir.path(),
        "max_result_rows = 1000\nqueue_timeout = \"300ms\"",
        "3s",
    );
    let mut client = FlightSqlServiceClient::new(channel(&server).await);

    // A 20,000-term OR chain used to overflow a worker's stack and abort the process.
    let chain: Vec<String> = (0..20_000).map(|i| format!("user_id = {i}")).collect();
    let sql = format!("SELECT count(*) FROM events WHERE {}", chain.join(" OR "));
    let err = query(&mut client, &sql).await.unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument);
    assert!(err.to_string().contains("max_operators"), "{err}");
    let deep = format!("SELECT {}1{}", "(".repeat(500), ")".repeat(500));
    let err = query(&mut client, &deep).await.unwrap_err();
    assert!(err.to_string().contains("max_nesting"), "{err}");
    assert_eq!(rows(&query(&mut client, "SELECT 1").await.unwrap()), 1);

    // Refused statements: files and settings stay out of reach.
    for sql in [
        "SELECT * FROM '/etc/passwd'",
        "CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '/etc/passwd'",
        "COPY (SELECT 1) TO '/tmp/cohort-copy.csv'",
        "SET datafusion.runtime.memory_limit = '100G'",
    ] {
        let err = query(&mut client, sql).await.unwrap_err();
        assert_ne!(code(&err), Code::Ok, "{sql}");
        assert!(!Path::new("/tmp/cohort-copy.csv").exists());
    }

    // Too many rows: the stream ends with RESOURCE_EXHAUSTED.
    let err = query(&mut client, "SELECT * FROM range(5000)")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::ResourceExhausted, "{err}");
    assert!(err.to_string().contains("max_result_rows"), "{err}");

    // One slot: while a slow query holds it, another waits 300 ms and is refused; the slow one
    // is stopped by the statement timeout, and then the slot is free again.
    let slow_client = FlightSqlServiceClient::new(channel(&server).await);
    let started = Instant::now();
    let slow = tokio::spawn(async move {
        let mut slow_client = slow_client;
        query(&mut slow_client, SLOW_QUERY).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let err = query(&mut client, "SELECT 1").await.unwrap_err();
    assert_eq!(code(&err), Code::ResourceExhausted, "{err}");
    let err = slow.await.unwrap().unwrap_err();
    assert_eq!(code(&err), Code::DeadlineExceeded, "{err}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "timeout took {took:?}");
    assert_eq!(rows(&query(&mut client, "SELECT 1").await.unwrap()), 1);
    assert!(server.stop());
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_flight_info_and_disconnects_stop_queries() {
    let dir = tempfile::tempdir().unwrap();
    let server = one_slot_server(dir.path(), "queue_timeout = \"20s\"", "0");
    let mut client = FlightSqlServiceClient::new(channel(&server).await);

    // CancelFlightInfo stops a running query; its DoGet ends with CANCELLED.
    let info = client.execute(SLOW_QUERY.to_string(), None).await.unwrap();
    let mut runner = FlightSqlServiceClient::new(channel(&server).await);
    let running_info = info.clone();
    let running = tokio::spawn(async move { fetch(&mut runner, running_info).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let request = CancelFlightInfoRequest { info: Some(info) };
    let mut results = client
        .do_action(Action::new("CancelFlightInfo", request.encode_to_vec()))
        .await
        .unwrap();
    let result = results.message().await.unwrap().unwrap();
    let cancel = arrow_flight::CancelFlightInfoResult::decode(result.body).unwrap();
    assert_eq!(cancel.status, arrow_flight::CancelStatus::Cancelled as i32);
    let err = running.await.unwrap().unwrap_err();
    assert_eq!(code(&err), Code::Cancelled, "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // A FlightInfo cancelled before its DoGet never runs.
    let info = client.execute(SLOW_QUERY.to_string(), None).await.unwrap();
    let request = CancelFlightInfoRequest {
        info: Some(info.clone()),
    };
    client
        .do_action(Action::new("CancelFlightInfo", request.encode_to_vec()))
        .await
        .unwrap();
    assert_eq!(
        code(&fetch(&mut client, info).await.unwrap_err()),
        Code::Cancelled
    );

    // A client that goes away mid-query frees its slot: with one slot and no timeout, the next
    // query could only run if the abandoned one was stopped.
    let mut leaver = FlightSqlServiceClient::new(channel(&server).await);
    let abandoned = tokio::spawn(async move { query(&mut leaver, SLOW_QUERY).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    abandoned.abort();
    let _ = abandoned.await;
    let started = Instant::now();
    assert_eq!(rows(&query(&mut client, "SELECT 1").await.unwrap()), 1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "slot freed after {:?}",
        started.elapsed()
    );
    assert!(server.stop());
}

async fn tls_channel(address: &str, pki: &Pki, with_client_cert: bool) -> Result<Channel, String> {
    let port = address.rsplit(':').next().unwrap();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    if with_client_cert {
        tls = tls.identity(Identity::from_pem(&pki.client_cert, &pki.client_key));
    }
    Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_and_client_certificates() {
    cohort_server::cli::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let files = pki.write_files(dir.path());
    let (cert, key, ca) = (files.server_cert, files.server_key, files.ca);

    let server = TestServer::start(
        &dir.path().join("store"),
        &["--tls-cert", &cert, "--tls-key", &key],
    );
    let mut client =
        FlightSqlServiceClient::new(tls_channel(&server.address, &pki, false).await.unwrap());
    assert_eq!(rows(&query(&mut client, "SELECT 1").await.unwrap()), 1);
    // Plain text against a TLS port gets nowhere.
    let plain = Channel::from_shared(server.url()).unwrap().connect().await;
    if let Ok(plain) = plain {
        let mut plain = FlightSqlServiceClient::new(plain);
        assert!(query(&mut plain, "SELECT 1").await.is_err());
    }
    // The CLI speaks TLS too.
    let (ok, out, err) = cohort_e2e::run_cli(&[
        "sql",
        "--connect",
        &format!(
            "grpc+tls://localhost:{}",
            server.address.rsplit(':').next().unwrap()
        ),
        "--tls-ca",
        &ca,
        "--format",
        "csv",
        "SELECT 41 + 1 AS answer",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("42"), "{out}");
    assert!(server.stop());

    // Mutual TLS: without a certificate signed by the client CA there is no connection.
    let server = TestServer::start(
        &dir.path().join("store"),
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
        ],
    );
    let refused = match tls_channel(&server.address, &pki, false).await {
        Err(_) => true,
        Ok(channel) => query(&mut FlightSqlServiceClient::new(channel), "SELECT 1")
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate got in");
    let mut client =
        FlightSqlServiceClient::new(tls_channel(&server.address, &pki, true).await.unwrap());
    assert_eq!(rows(&query(&mut client, "SELECT 1").await.unwrap()), 1);
    assert!(server.stop());
}

/// Certificate mistakes are named with their fix, by the CLI and when the server loads one.
#[test]
fn tls_failures_say_what_is_wrong_with_the_certificate() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let write = |name: &str, text: &str| cohort_e2e::tls::write_pem(dir.path(), name, text);
    // What `openssl req -x509` makes by default: a self-signed certificate marked CA:TRUE.
    let mut params = CertificateParams::new(vec!["localhost".into()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let self_signed_key = KeyPair::generate().unwrap();
    let self_signed = params.self_signed(&self_signed_key).unwrap();
    let (ca_cert, ca_key) = (
        write("self.pem", &self_signed.pem()),
        write("self.key", &self_signed_key.serialize_pem()),
    );
    let mut params = CertificateParams::new(vec!["localhost".into()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let expired = params.self_signed(&KeyPair::generate().unwrap()).unwrap();

    let problem = |pem: &str, name: &str| {
        cohort_server::tls::server_certificate_problem(pem.as_bytes(), Path::new(name)).unwrap()
    };
    const CA_AS_SERVER: &str = "is a CA certificate (basicConstraints CA:TRUE) used as the server's own \
        certificate, which TLS clients built on rustls (cohort sql, Rust gRPC clients) refuse; issue a \
        server certificate signed by that CA and serve that one (README: TLS, a certificate recipe)";
    assert_eq!(
        problem(&self_signed.pem(), "self.pem").as_deref(),
        Some(format!("self.pem {CA_AS_SERVER}").as_str())
    );
    assert_eq!(
        problem(&expired.pem(), "old.pem").as_deref(),
        Some("old.pem expired at 2021-01-01 00:00:00 UTC")
    );
    assert_eq!(problem(&pki.server_cert, "server.pem"), None);
    assert_eq!(
        problem(&format!("{}{}", pki.server_cert, pki.ca), "chain.pem"),
        None
    );
    let empty = cohort_server::tls::server_certificate_problem(b"", Path::new("empty.pem"));
    assert_eq!(
        empty.unwrap_err().to_string(),
        "TLS certificate empty.pem holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    );

    let sql = |url: &str, ca: Option<&str>| {
        let mut args = vec!["sql", "--connect", url];
        if let Some(ca) = ca {
            args.extend(["--tls-ca", ca]);
        }
        args.push("SELECT 1");
        let (ok, _, err) = cohort_e2e::run_cli(&args);
        assert!(!ok);
        err.trim().to_string()
    };
    let server = TestServer::start(
        &dir.path().join("store"),
        &["--tls-cert", &ca_cert, "--tls-key", &ca_key],
    );
    let port = server.address.rsplit(':').next().unwrap().to_string();
    let url = format!("grpc+tls://localhost:{port}");
    assert_eq!(
        sql(&url, Some(&ca_cert)),
        format!("error: cannot connect to {url}: the server's certificate {CA_AS_SERVER}")
    );
    assert!(server.stop());

    let files = pki.write_files(dir.path());
    let (cert, key, ca) = (files.server_cert, files.server_key, files.ca);
    let server = TestServer::start(
        &dir.path().join("store"),
        &["--tls-cert", &cert, "--tls-key", &key],
    );
    let port = server.address.rsplit(':').next().unwrap().to_string();
    let url = format!("grpc+tls://localhost:{port}");
    assert_eq!(
        sql(&url, None),
        format!(
            "error: cannot connect to {url}: the server's certificate is not signed by a CA this \
             client trusts: pass that CA (or the server's self-signed certificate) with --tls-ca FILE"
        )
    );
    let by_address = format!("grpc+tls://127.0.0.1:{port}");
    assert_eq!(
        sql(&by_address, Some(&ca)),
        format!(
            "error: cannot connect to {by_address}: the server's certificate is not valid for the \
             name 127.0.0.1 (it is for localhost): connect with one of those names, or \
             issue a certificate whose subjectAltName lists 127.0.0.1"
        )
    );
    let plain = format!("grpc://127.0.0.1:{port}");
    assert!(
        sql(&plain, None).ends_with(
            "the server did not answer in plain HTTP/2; if it serves TLS, connect with grpc+tls://"
        ),
        "{}",
        sql(&plain, None)
    );
    assert!(server.stop());

    // And the other way round: TLS to a server that speaks plain HTTP/2.
    let server = TestServer::start(&dir.path().join("store"), &[]);
    let port = server.address.rsplit(':').next().unwrap().to_string();
    let url = format!("grpc+tls://localhost:{port}");
    assert_eq!(
        sql(&url, Some(&ca)),
        format!(
            "error: cannot connect to {url}: the server at localhost did not answer in TLS \
             (received corrupt message of type InvalidContentType): is it serving without TLS? \
             then connect with grpc://"
        )
    );
    assert!(server.stop());
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_input_is_an_error_not_a_crash() {
    use arrow_flight::flight_service_client::FlightServiceClient;
    use arrow_flight::sql::ProstMessageExt;
    use arrow_flight::{FlightData, FlightDescriptor};

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("store"), &[]);
    let channel = channel(&server).await;

    // Bulk ingest whose "Arrow IPC" is garbage, then a truncated schema message.
    let ingest = CommandStatementIngest {
        table: "events".into(),
        ..Default::default()
    };
    let descriptor = FlightDescriptor::new_cmd(ingest.as_any().encode_to_vec());
    for (header, body) in [
        (vec![0xde, 0xad, 0xbe, 0xef], vec![1, 2, 3]),
        (vec![0xff; 64], Vec::new()),
    ] {
        let messages = vec![
            FlightData {
                flight_descriptor: Some(descriptor.clone()),
                data_header: header.into(),
                data_body: body.into(),
                ..Default::default()
            },
            FlightData {
                data_header: vec![0x10, 0, 0, 0, 0x0c].into(),
                ..Default::default()
            },
        ];
        let result = FlightServiceClient::new(channel.clone())
            .do_put(futures::stream::iter(messages))
            .await;
        let status = match result {
            Err(status) => status,
            Ok(response) => response
                .into_inner()
                .message()
                .await
                .expect_err("garbage ingest must fail"),
        };
        assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    }

    // Invalid bitmaps, patterns and tag expressions from SQL.
    let mut client = FlightSqlServiceClient::new(channel.clone());
    for sql in [
        "SELECT bitmap_count(X'deadbeef')",
        "SELECT sequence_match('(?1', ts, event = 'a') FROM events",
        "SELECT * FROM audience('((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((a))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))')",
        "CREATE SEGMENT s SCHEDULE 'every tuesday' AS SELECT 1 AS user_id",
    ] {
        let err = query(&mut client, sql).await.unwrap_err();
        assert_eq!(code(&err), Code::InvalidArgument, "{sql}: {err}");
    }
    assert_eq!(rows(&query(&mut client, "SELECT 1").await.unwrap()), 1);
    assert!(server.stop());
}
