//! The real server, queried with arrow-flight's `FlightSqlServiceClient`.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use arrow_flight::FlightInfo;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables, SqlInfo};
use cohort_e2e::{TestServer, run_cli};
use futures::TryStreamExt;
use tonic::transport::Channel;

async fn client(server: &TestServer) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightSqlServiceClient::new(channel)
}

async fn fetch(client: &mut FlightSqlServiceClient<Channel>, info: FlightInfo) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let stream = client.do_get(endpoint.ticket.unwrap()).await.unwrap();
        batches.extend(stream.try_collect::<Vec<_>>().await.unwrap());
    }
    batches
}

fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let array = b.column_by_name(column).unwrap().as_string::<i32>().clone();
            (0..array.len()).map(move |i| array.value(i).to_string())
        })
        .collect()
}

fn demo_store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = run_cli(&[
        "demo",
        "--data",
        dir.path().to_str().unwrap(),
        "--users",
        "300",
        "--events",
        "5000",
    ]);
    assert!(ok, "{err}");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_calls_describe_the_store() {
    let dir = demo_store();
    let server = TestServer::start(dir.path(), &[]);
    let mut client = client(&server).await;

    let info = client.get_catalogs().await.unwrap();
    let catalogs = fetch(&mut client, info).await;
    assert_eq!(strings(&catalogs, "catalog_name"), ["cohort"]);

    let info = client
        .get_db_schemas(CommandGetDbSchemas {
            catalog: Some("cohort".into()),
            db_schema_filter_pattern: None,
        })
        .await
        .unwrap();
    let schemas = strings(&fetch(&mut client, info).await, "db_schema_name");
    assert!(schemas.contains(&"public".to_string()), "{schemas:?}");

    // No catalog filter, with schemas: what BI tools send when browsing.
    let info = client
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: Some("public".into()),
            table_name_filter_pattern: None,
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let tables = fetch(&mut client, info).await;
    assert_eq!(
        strings(&tables, "table_name"),
        [
            "events",
            "identities",
            "identity_merges",
            "identity_refusals",
            "persons",
            "profiles",
            "segment_runs",
            "segment_versions",
            "segments",
            "tags",
            "traits",
            "user_keys"
        ]
    );
    let schema_bytes = tables[0]
        .column_by_name("table_schema")
        .unwrap()
        .as_binary::<i32>()
        .value(0)
        .to_vec();
    let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(&schema_bytes).unwrap();
    let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    for column in ["user_id", "event", "ts", "event_date", "revenue"] {
        assert!(names.contains(&column), "{names:?}");
    }

    let info = client.get_table_types().await.unwrap();
    assert!(strings(&fetch(&mut client, info).await, "table_type").contains(&"TABLE".to_string()));

    let info = client
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::SqlIdentifierQuoteChar,
        ])
        .await
        .unwrap();
    let sql_info = fetch(&mut client, info).await;
    assert_eq!(sql_info.iter().map(RecordBatch::num_rows).sum::<usize>(), 2);

    let info = client
        .get_xdbc_type_info(arrow_flight::sql::CommandGetXdbcTypeInfo { data_type: None })
        .await
        .unwrap();
    let types = strings(&fetch(&mut client, info).await, "type_name");
    assert!(
        types.contains(&"BIGINT".to_string()) && types.contains(&"VARCHAR".to_string()),
        "{types:?}"
    );

    let info = client
        .get_primary_keys(arrow_flight::sql::CommandGetPrimaryKeys {
            catalog: None,
            db_schema: None,
            table: "events".into(),
        })
        .await
        .unwrap();
    let keys = fetch(&mut client, info).await;
    assert_eq!(keys.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_errors_and_prepared_statements() {
    let dir = demo_store();
    let server = TestServer::start(dir.path(), &[]);
    let mut client = client(&server).await;

    let info = client
        .execute("SELECT count(*) AS n FROM events".into(), None)
        .await
        .unwrap();
    let announced = info.clone().try_decode_schema().unwrap();
    let batches = fetch(&mut client, info).await;
    assert_eq!(
        batches[0].schema().as_ref(),
        &announced,
        "DoGet schema equals FlightInfo schema"
    );
    assert_eq!(
        batches[0].column(0).as_primitive::<Int64Type>().value(0),
        5000
    );

    // String results arrive as plain Utf8 even where DataFusion computes views.
    let info = client
        .execute("SELECT event FROM events LIMIT 1".into(), None)
        .await
        .unwrap();
    assert_eq!(
        info.clone()
            .try_decode_schema()
            .unwrap()
            .field(0)
            .data_type(),
        &DataType::Utf8
    );

    let error = client
        .execute("SELEC nonsense".into(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("InvalidArgument") || error.contains("invalid"),
        "{error}"
    );
    let error = client
        .execute("SELECT * FROM no_such_table".into(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("no_such_table"), "{error}");
    // The server keeps serving after errors.
    let info = client
        .execute("SELECT 1 AS one".into(), None)
        .await
        .unwrap();
    assert_eq!(fetch(&mut client, info).await[0].num_rows(), 1);

    let mut prepared = client
        .prepare(
            "SELECT count(*) AS n FROM events WHERE user_id = ? AND event = ?".into(),
            None,
        )
        .await
        .unwrap();
    let parameters = prepared.parameter_schema().unwrap().clone();
    assert_eq!(parameters.fields().len(), 2);
    let values = RecordBatch::try_new(
        std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("$1", DataType::Int64, true),
            arrow::datatypes::Field::new("$2", DataType::Utf8, true),
        ])),
        vec![
            std::sync::Arc::new(arrow::array::Int64Array::from(vec![7])),
            std::sync::Arc::new(arrow::array::StringArray::from(vec!["signup"])),
        ],
    )
    .unwrap();
    prepared.set_parameters(values).unwrap();
    let info = prepared.execute().await.unwrap();
    let batches = fetch(&mut client, info).await;
    assert_eq!(
        batches[0].column(0).as_primitive::<Int64Type>().value(0),
        1,
        "every demo user signs up once"
    );
    prepared.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_run_on_both_paths_and_are_visible_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let mut client = client(&server).await;
    let rows = client
        .execute_update("INSERT INTO events (user_id, event, ts) VALUES (1, 'login', '2026-01-01T00:00:00Z'), (2, 'login', '2026-01-02T00:00:00Z')".into(), None)
        .await
        .unwrap();
    assert_eq!(rows, 2);
    // The same statement kind on the query path (what ADBC `execute` and JDBC `execute` send).
    let info = client
        .execute(
            "INSERT INTO events (user_id, event, ts) VALUES (3, 'login', '2026-01-03T00:00:00Z')"
                .into(),
            None,
        )
        .await
        .unwrap();
    let result = fetch(&mut client, info).await;
    assert_eq!(result[0].column(0).as_primitive::<Int64Type>().value(0), 1);
    let info = client
        .execute("SELECT count(*) FROM events".into(), None)
        .await
        .unwrap();
    assert_eq!(
        fetch(&mut client, info).await[0]
            .column(0)
            .as_primitive::<Int64Type>()
            .value(0),
        3
    );

    let error = client
        .execute_update(
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc'".into(),
            None,
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not supported"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_graceful_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let channel = Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let response = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "arrow.flight.protocol.FlightService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    drop(health);
    let started = std::time::Instant::now();
    assert!(server.stop(), "SIGTERM leads to a clean exit");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "idle connections do not delay shutdown"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prepared_insert_of_several_rows_is_one_commit() {
    use arrow::array::{Int64Array, StringArray};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("store"), &[]);
    let mut client = client(&server).await;
    let rows = |ts: [&str; 3]| {
        RecordBatch::try_from_iter([
            ("$1", Arc::new(Int64Array::from(vec![1, 2, 3])) as _),
            ("$2", Arc::new(StringArray::from(vec!["a", "b", "c"])) as _),
            ("$3", Arc::new(StringArray::from(ts.to_vec())) as _),
        ])
        .unwrap()
    };
    let count =
        |batches: Vec<RecordBatch>| batches[0].column(0).as_primitive::<Int64Type>().value(0);
    let sql = "INSERT INTO events (user_id, event, ts) VALUES (?, ?, ?)";
    // The third row is invalid: none of the three may land.
    let mut prepared = client.prepare(sql.into(), None).await.unwrap();
    prepared
        .set_parameters(rows([
            "2026-11-01T08:00:00Z",
            "2026-11-01T09:00:00Z",
            "soon",
        ]))
        .unwrap();
    let err = prepared.execute_update().await.unwrap_err();
    assert!(err.to_string().contains("soon"), "{err}");
    let info = client
        .execute("SELECT count(*) FROM events".into(), None)
        .await
        .unwrap();
    assert_eq!(count(fetch(&mut client, info).await), 0);
    // All valid: three rows in one commit (one new table version).
    let mut prepared = client.prepare(sql.into(), None).await.unwrap();
    prepared
        .set_parameters(rows([
            "2026-11-01T08:00:00Z",
            "2026-11-01T09:00:00Z",
            "2026-11-01T10:00:00Z",
        ]))
        .unwrap();
    assert_eq!(prepared.execute_update().await.unwrap(), 3);
    let info = client
        .execute("SELECT count(*) FROM events".into(), None)
        .await
        .unwrap();
    assert_eq!(count(fetch(&mut client, info).await), 3);
    assert!(server.stop());
    let log = std::fs::read_dir(dir.path().join("store/events/_delta_log"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    assert_eq!(log, 1, "three rows must be one commit");
}
