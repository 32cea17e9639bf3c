//! The PostgreSQL endpoint through `tokio-postgres`, a client that speaks only the wire
//! protocol (no libpq): simple and extended protocol, binary results and parameters of the
//! types Cohort's columns and functions produce, the SQLSTATEs clients branch on, TLS.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use cohort_e2e::auth::{ADMIN_PASSWORD, READER_PASSWORD, auth_config};
use cohort_e2e::tls::pki;
use cohort_e2e::{TestServer, run_cli};
use rust_decimal::Decimal;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage};

/// A store with the demo data (200 users, 4,000 events).
fn demo_store(dir: &Path) -> std::path::PathBuf {
    let store = dir.join("store");
    let (ok, _, err) = run_cli(&[
        "demo",
        "--data",
        store.to_str().unwrap(),
        "--users",
        "200",
        "--events",
        "4000",
    ]);
    assert!(ok, "{err}");
    store
}

fn config(server: &TestServer, user: &str, password: Option<&str>, database: &str) -> Config {
    let address = server.pg_address.as_deref().expect("pg endpoint on");
    let (host, port) = address.rsplit_once(':').unwrap();
    let mut config = Config::new();
    config
        .host(host)
        .port(port.parse().unwrap())
        .user(user)
        .dbname(database)
        .connect_timeout(Duration::from_secs(10));
    if let Some(password) = password {
        config.password(password);
    }
    config
}

async fn connect_as(
    server: &TestServer,
    user: &str,
    password: Option<&str>,
    database: &str,
) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config(server, user, password, database)
        .connect(NoTls)
        .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn connect(server: &TestServer) -> Client {
    connect_as(server, "cohort", None, "cohort").await.unwrap()
}

/// The text of each data row's first column from the simple (text) protocol.
async fn simple_first_column(client: &Client, sql: &str) -> Vec<Option<String>> {
    client
        .simple_query(sql)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_string)),
            _ => None,
        })
        .collect()
}

fn sqlstate(error: &tokio_postgres::Error) -> SqlState {
    error
        .code()
        .cloned()
        .unwrap_or_else(|| panic!("no SQLSTATE in {error:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn simple_and_extended_protocol_agree_on_binary_types() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&demo_store(dir.path()), &[]);
    let client = connect(&server).await;

    // int8: the extended protocol (binary results) and the simple one (text) agree.
    let count: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 4000);
    assert_eq!(
        simple_first_column(&client, "SELECT count(*) FROM events").await,
        vec![Some("4000".to_string())]
    );

    // Parameters of several types, typed by the server's describe.
    let statement = client
        .prepare("SELECT count(*) FROM events WHERE event = $1 AND user_id > $2")
        .await
        .unwrap();
    assert_eq!(statement.params(), &[Type::TEXT, Type::INT8]);
    let bound: i64 = client
        .query_one(&statement, &[&"page_view", &10_i64])
        .await
        .unwrap()
        .get(0);
    let literal = simple_first_column(
        &client,
        "SELECT count(*) FROM events WHERE event = 'page_view' AND user_id > 10",
    )
    .await;
    assert_eq!(literal, vec![Some(bound.to_string())]);
    assert!(bound > 0);

    // timestamptz out and back in as a parameter; date.
    let row = client
        .query_one(
            "SELECT min(ts) AS first_seen, CAST(min(ts) AS DATE) AS first_day FROM events",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.columns()[0].type_(), &Type::TIMESTAMPTZ);
    assert_eq!(row.columns()[1].type_(), &Type::DATE);
    let first_seen: DateTime<Utc> = row.get(0);
    let first_day: NaiveDate = row.get(1);
    assert_eq!(first_day, first_seen.date_naive());
    let at_first: i64 = client
        .query_one("SELECT count(*) FROM events WHERE ts = $1", &[&first_seen])
        .await
        .unwrap()
        .get(0);
    assert!(at_first >= 1, "the binary timestamp did not round-trip");

    // bytea: a bitmap audience, sent back as a parameter.
    let row = client
        .query_one(
            "SELECT bitmap_agg(user_id) AS audience, count(DISTINCT user_id) AS users FROM events",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.columns()[0].type_(), &Type::BYTEA);
    let audience: Vec<u8> = row.get(0);
    let users: i64 = row.get(1);
    assert!(!audience.is_empty());
    let cardinality: i64 = client
        .query_one("SELECT bitmap_cardinality($1::bytea)", &[&audience])
        .await
        .unwrap()
        .get(0);
    assert_eq!(cardinality, users);

    // int2[]: retention's per-step flags, against the simple protocol's text form.
    let retention = "SELECT user_id, retention(event = 'signup', event = 'login') AS r \
                     FROM events GROUP BY user_id ORDER BY user_id LIMIT 20";
    let rows = client.query(retention, &[]).await.unwrap();
    assert_eq!(rows.len(), 20);
    assert_eq!(rows[0].columns()[1].type_(), &Type::INT2_ARRAY);
    let texts: Vec<String> = client
        .simple_query(retention)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => row.get(1).map(str::to_string),
            _ => None,
        })
        .collect();
    for (row, text) in rows.iter().zip(&texts) {
        let flags: Vec<i16> = row.get(1);
        let as_text = format!(
            "{{{}}}",
            flags
                .iter()
                .map(i16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(&as_text, text);
        assert!(flags.iter().all(|flag| *flag == 0 || *flag == 1));
    }

    // numeric: UInt64 has no PostgreSQL integer wide enough.
    let row = client
        .query_one(
            "SELECT arrow_cast('18446744073709551615', 'UInt64') AS widest",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.columns()[0].type_(), &Type::NUMERIC);
    let widest: Decimal = row.get(0);
    assert_eq!(widest, Decimal::from(u64::MAX));

    // Several statements in one simple query, each answered in turn.
    let messages = client
        .simple_query("SELECT 1 AS one; SELECT 'two' AS two")
        .await
        .unwrap();
    let values: Vec<String> = messages
        .iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(values, ["1", "two"]);
    assert!(server.stop());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prepared_statement_reads_the_newest_table_version() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&demo_store(dir.path()), &[]);
    let client = connect(&server).await;
    let counted = client
        .prepare("SELECT count(*) FROM events WHERE event = $1")
        .await
        .unwrap();
    let before: i64 = client
        .query_one(&counted, &[&"from_rust"])
        .await
        .unwrap()
        .get(0);
    assert_eq!(before, 0);
    let inserted = client
        .execute(
            "INSERT INTO events (user_id, event, ts) VALUES ($1, 'from_rust', TIMESTAMP '2026-10-01 00:00:00')",
            &[&900_001_i64],
        )
        .await
        .unwrap();
    assert_eq!(inserted, 1);
    let after: i64 = client
        .query_one(&counted, &[&"from_rust"])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        after, 1,
        "the prepared statement answered from a stale plan"
    );
    assert!(server.stop());
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_carry_sqlstates_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let (auth, token) = auth_config(dir.path(), "");
    let server = TestServer::start(
        &demo_store(dir.path()),
        &[
            "--config",
            auth.to_str().unwrap(),
            "--max-concurrent-queries",
            "1",
        ],
    );

    // 28P01 for a wrong password and for an unknown user alike: nothing tells them apart.
    let wrong = connect_as(&server, "ada", Some("wrong"), "cohort")
        .await
        .unwrap_err();
    let unknown = connect_as(&server, "mallory", Some(ADMIN_PASSWORD), "cohort")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&wrong), SqlState::INVALID_PASSWORD);
    assert_eq!(sqlstate(&unknown), SqlState::INVALID_PASSWORD);
    assert_eq!(
        wrong.as_db_error().unwrap().message(),
        unknown
            .as_db_error()
            .unwrap()
            .message()
            .replace("mallory", "ada")
    );

    // 3D000 for another database.
    let elsewhere = connect_as(&server, "ada", Some(ADMIN_PASSWORD), "analytics")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&elsewhere), SqlState::INVALID_CATALOG_NAME);

    // 42501: a reader, by password or by API token, reads but cannot write.
    for (user, password) in [("rita", READER_PASSWORD), ("anyone", token.as_str())] {
        let reader = connect_as(&server, user, Some(password), "cohort")
            .await
            .unwrap();
        let users: i64 = reader
            .query_one("SELECT count(*) FROM profiles", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(users, 200);
        let refused = reader
            .execute(
                "INSERT INTO events (user_id, event, ts) VALUES (1, 'x', TIMESTAMP '2026-10-01 00:00:00')",
                &[],
            )
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&refused), SqlState::INSUFFICIENT_PRIVILEGE);
        let refused = reader
            .simple_query("CREATE TAG pg_reader_tag AS SELECT user_id FROM profiles")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&refused), SqlState::INSUFFICIENT_PRIVILEGE);
    }

    // 42601, then the same connection answers.
    let admin = connect_as(&server, "ada", Some(ADMIN_PASSWORD), "cohort")
        .await
        .unwrap();
    let syntax = admin.simple_query("SELEC 1").await.unwrap_err();
    assert_eq!(sqlstate(&syntax), SqlState::SYNTAX_ERROR);
    let syntax = admin.prepare("SELECT 1 +").await.unwrap_err();
    assert_eq!(sqlstate(&syntax), SqlState::SYNTAX_ERROR);
    let one: i64 = admin
        .query_one("SELECT 1::bigint", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(one, 1);

    // 57014: a cancel request stops the running query and frees the only slot.
    let cancel = admin.cancel_token();
    let slow = tokio::spawn(async move {
        admin
            .query("SELECT sum(value % 7) FROM range(200000000000)", &[])
            .await
            .map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    cancel.cancel_query(NoTls).await.unwrap();
    let cancelled = tokio::time::timeout(Duration::from_secs(20), slow)
        .await
        .expect("cancel did not stop the query")
        .unwrap()
        .unwrap_err();
    assert_eq!(
        sqlstate(&cancelled),
        SqlState::QUERY_CANCELED,
        "{:?}",
        cancelled.as_db_error()
    );
    let again = connect_as(&server, "ada", Some(ADMIN_PASSWORD), "cohort")
        .await
        .unwrap();
    let count: i64 = again
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 4000);
    assert!(server.stop(), "the server did not shut down cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_the_servers_certificate() {
    cohort_server::cli::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let files = pki.write_files(dir.path());
    let (cert, key) = (files.server_cert, files.server_key);
    let server = TestServer::start(
        &dir.path().join("store"),
        &["--tls-cert", &cert, "--tls-key", &key],
    );

    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls::pki_types::pem::PemObject::from_pem_slice(pki.ca.as_bytes()).unwrap();
    roots.add(ca).unwrap();
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut verified = config(&server, "cohort", None, "cohort");
    verified
        .host("localhost")
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let (client, connection) = verified
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let answer: i64 = client
        .query_one("SELECT 41::bigint + 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(answer, 42);

    // Without TLS the endpoint says no, as the Flight SQL port (TLS only) does.
    let plain = connect_as(&server, "cohort", None, "cohort")
        .await
        .map(|_| ())
        .expect_err("a plain connection got in");
    assert_eq!(
        sqlstate(&plain),
        SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    );
    let message = plain.as_db_error().unwrap().message();
    assert!(message.contains("TLS only"), "{message}");
    assert!(server.stop());
}
