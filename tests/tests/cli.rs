//! The `cohort` command line: output formats, configuration sources, errors, `serve --demo`.

use std::process::Command;

use cohort_e2e::{TestServer, cohort_bin, first_csv_row, run_cli, run_cli_with_input};

/// `cohort ingest --table events FILE` into `store`.
fn ingest_events(store: &str, file: &std::path::Path) -> (bool, String, String) {
    run_cli(&[
        "ingest",
        "--data",
        store,
        "--table",
        "events",
        file.to_str().unwrap(),
    ])
}

fn store_arg(dir: &tempfile::TempDir) -> String {
    dir.path().join("store").to_string_lossy().into_owned()
}

#[test]
fn output_formats() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_arg(&dir);
    let (ok, out, err) = run_cli(&[
        "sql",
        "--data",
        &store,
        "--format",
        "json",
        "SELECT 1 AS a, 'x' AS b",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), r#"{"a":1,"b":"x"}"#);
    let (ok, out, _) = run_cli(&[
        "sql",
        "--data",
        &store,
        "--format",
        "csv",
        "SELECT 1 AS a, 'x' AS b",
    ]);
    assert!(ok);
    assert_eq!(out, "a,b\n1,x\n");
    let (ok, out, _) = run_cli(&["sql", "--data", &store, "SELECT 1 AS a"]);
    assert!(ok);
    assert!(out.contains("| a |") && out.contains("| 1 |"), "{out}");
    let (ok, out, _) = run_cli(&["sql", "--data", &store, "SELECT * FROM events"]);
    assert!(ok);
    assert!(
        out.starts_with("(0 rows; columns: user_id, event, ts, event_date, user_key, person_key)"),
        "{out}"
    );
    // Lists print as their text in CSV; an empty result still has its header.
    let csv = |sql: &str| {
        let (ok, out, err) = run_cli(&["sql", "--data", &store, "--format", "csv", sql]);
        assert!(ok, "{sql}: {err}");
        out
    };
    assert_eq!(
        csv("SELECT 1 AS a, make_array(1, 2) AS l"),
        "a,l\n1,\"[1, 2]\"\n"
    );
    assert_eq!(csv("SELECT user_id, event FROM events"), "user_id,event\n");
    // A wide cell is cut in the table, kept whole in CSV.
    let wide = "SELECT repeat('x', 500) AS w";
    let (ok, out, _) = run_cli(&["sql", "--data", &store, wide]);
    assert!(ok);
    assert!(
        out.contains(&format!("{}… (500 chars)", "x".repeat(100))),
        "{out}"
    );
    assert_eq!(csv(wide), format!("w\n{}\n", "x".repeat(500)));
    // EXPLAIN prints each plan on its own lines, indented under its kind.
    let (ok, out, _) = run_cli(&["sql", "--data", &store, "EXPLAIN SELECT 1"]);
    assert!(ok);
    assert!(out.starts_with("logical_plan:\n  "), "{out}");
    assert!(out.contains("\nphysical_plan:\n  "), "{out}");
}

#[test]
fn errors_are_one_line_and_a_failing_exit() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_arg(&dir);
    for (args, expected) in [
        (vec!["sql", "--data", &store, "SELEC 1"], "error: "),
        (
            vec!["sql", "--data", &store, "SELECT * FROM nowhere"],
            "nowhere",
        ),
        (
            vec![
                "ingest",
                "--data",
                &store,
                "--table",
                "events",
                "/nonexistent/file.csv",
            ],
            "/nonexistent/file.csv",
        ),
        (
            vec!["ingest", "--data", &store, "--table", "events", "data.xlsx"],
            "unknown file type",
        ),
        (
            vec!["sql", "--data", "ftp://host/x", "SELECT 1"],
            "unsupported data URL scheme 'ftp'",
        ),
        (
            vec!["sql", "--connect", "grpc://127.0.0.1:1", "SELECT 1"],
            "cannot connect",
        ),
        (
            vec!["serve", "--data", &store, "--memory-limit", "lots"],
            "invalid size",
        ),
    ] {
        let (ok, _, err) = run_cli(&args);
        assert!(!ok, "{args:?} should fail");
        assert!(err.contains(expected), "{args:?}: {err}");
        let lines: Vec<_> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?} printed more than one line: {err}");
    }
    // Usage errors come from the argument parser, which adds a pointer to --help.
    let (ok, _, err) = run_cli(&["ingest", "--data", &store, "--table", "sessions", "a.csv"]);
    assert!(!ok);
    assert!(
        err.starts_with("error: invalid value 'sessions' for '--table <TABLE>'"),
        "{err}"
    );
}

#[test]
fn settings_come_from_env_and_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let from_env = dir.path().join("from-env");
    let output = Command::new(cohort_bin())
        .args([
            "sql",
            "INSERT INTO events (user_id, event, ts) VALUES (1, 'a', '2026-01-01T00:00:00Z')",
        ])
        .env("COHORT_DATA", &from_env)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(from_env.join("events/_delta_log").is_dir());

    let from_file = dir.path().join("from-file");
    let config = dir.path().join("cohort.toml");
    std::fs::write(
        &config,
        format!(
            "data = {:?}\nmemory_limit = \"256MiB\"\n",
            from_file.to_str().unwrap()
        ),
    )
    .unwrap();
    let (ok, _, err) = run_cli(&[
        "--config",
        config.to_str().unwrap(),
        "sql",
        "INSERT INTO profiles (user_id, plan) VALUES (1, 'pro')",
    ]);
    assert!(ok, "{err}");
    assert!(from_file.join("profiles/_delta_log").is_dir());

    std::fs::write(&config, "data_dir = \"typo\"\n").unwrap();
    let (ok, _, err) = run_cli(&["--config", config.to_str().unwrap(), "sql", "SELECT 1"]);
    assert!(!ok);
    assert!(err.contains("unknown field `data_dir`"), "{err}");
}

#[test]
fn demo_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let summary = "SELECT count(*), count(DISTINCT user_id), round(sum(revenue), 2), min(ts), max(ts) FROM events";
    let mut results = Vec::new();
    for name in ["a", "b"] {
        let store = dir.path().join(name);
        let (ok, out, err) = run_cli(&[
            "demo",
            "--data",
            store.to_str().unwrap(),
            "--users",
            "500",
            "--events",
            "20000",
            "--seed",
            "9",
        ]);
        assert!(ok, "{err}");
        assert_eq!(out.trim(), "demo data written: 20000 events, 500 profiles");
        results.push(first_csv_row(&store, summary));
    }
    assert_eq!(results[0], results[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_demo_fills_an_empty_store_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let count = |store: &std::path::Path| {
        first_csv_row(
            store,
            "SELECT (SELECT count(*) FROM events) AS e, (SELECT count(*) FROM profiles) AS p",
        )
    };
    let server = TestServer::start(&store, &["--demo"]);
    assert!(server.stop());
    assert_eq!(count(&store), "300000,10000");
    let server = TestServer::start(&store, &["--demo"]);
    assert!(server.stop());
    assert_eq!(
        count(&store),
        "300000,10000",
        "a store with data is left as it is"
    );
}

/// The same failure reads the same locally and through a server: the root cause in its own
/// words, on one line, without the layers it passed through (`Tonic error: code: ...`,
/// `SQL error: ParserError(...)`, a message repeated once per wrapper).
#[test]
fn errors_say_the_root_cause_the_same_way_locally_and_remotely() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let store_text = store.to_string_lossy().into_owned();
    let (ok, _, err) = run_cli(&[
        "demo",
        "--data",
        &store_text,
        "--users",
        "50",
        "--events",
        "500",
    ]);
    assert!(ok, "{err}");
    let (config, token) = cohort_e2e::auth::auth_config(dir.path(), "");
    let server = TestServer::start(&store, &["--config", config.to_str().unwrap()]);
    let url = server.url();
    let run = |args: &[&str], password: Option<&str>| {
        let mut command = Command::new(cohort_bin());
        command.args(args).env_remove("COHORT_PASSWORD");
        if let Some(password) = password {
            command.env("COHORT_PASSWORD", password);
        }
        let output = command.output().unwrap();
        assert!(!output.status.success(), "{args:?} should fail");
        String::from_utf8(output.stderr).unwrap()
    };
    for (sql, expected) in [
        (
            "SELEC 1",
            "error: syntax error: Expected: an SQL statement, found: SELEC at Line: 1, Column: 1\n",
        ),
        (
            "SELECT * FROM nowhere",
            "error: table 'cohort.public.nowhere' not found\n",
        ),
        (
            "SELECT window_funnel(INTERVAL '-1 hour', ts, event = 'a') FROM events",
            "error: window_funnel: the window must be positive, got an INTERVAL of -3600 seconds\n",
        ),
        (
            "SELECT CAST('x' AS INT)",
            "error: Cannot cast string 'x' to value of Int32 type\n",
        ),
    ] {
        let local = run(&["sql", "--data", &store_text, sql], None);
        assert_eq!(local, expected, "{sql}");
        let remote = run(&["sql", "--connect", &url, "--token", &token, sql], None);
        assert_eq!(remote, expected, "{sql}");
    }
    let unknown_column = run(
        &["sql", "--data", &store_text, "SELECT nocol FROM events"],
        None,
    );
    assert!(
        unknown_column.starts_with("error: No field named nocol. Valid fields are events.user_id,"),
        "{unknown_column}"
    );
    assert_eq!(unknown_column.lines().count(), 1, "{unknown_column}");
    assert_eq!(
        run(
            &["sql", "--connect", &url, "--user", "ada", "SELECT 1"],
            Some("wrong password")
        ),
        "error: authentication failed: the server did not accept user 'ada' with that password\n"
    );
    assert_eq!(
        run(
            &[
                "sql",
                "--connect",
                &url,
                "--token",
                "not-a-token",
                "SELECT 1"
            ],
            None
        ),
        "error: authentication failed: the server needs a valid --token, or --user with COHORT_PASSWORD\n"
    );
    let refused = run(
        &["sql", "--connect", "grpc://127.0.0.1:1", "SELECT 1"],
        None,
    );
    assert!(
        refused.starts_with(
            "error: cannot connect to grpc://127.0.0.1:1: transport error: tcp connect error:"
        ),
        "{refused}"
    );
    let reader = run(
        &[
            "sql",
            "--connect",
            &url,
            "--user",
            "rita",
            "CREATE TAG t AS SELECT user_id FROM profiles",
        ],
        Some(cohort_e2e::auth::READER_PASSWORD),
    );
    assert!(reader.starts_with("error: permission denied: "), "{reader}");
    server.stop();
}

/// Every input format reports a bad value as `FILE: [column 'x', ]row N: reason`, rows
/// counted from 1 after a CSV header, and nothing is written.
#[test]
fn ingest_errors_name_the_file_column_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        (
            "date.csv",
            "user_id,event,ts\n1,a,2026-05-01T10:00:00Z\n2,b,2026-13-45T10:00:00Z\n",
            "error: date.csv: column 'ts', row 2: cannot convert '2026-13-45T10:00:00Z' to a timestamp\n",
        ),
        (
            "wide.csv",
            "user_id,event,ts\n1,a,2026-05-01T10:00:00Z\n2,b,2026-05-01T10:00:00Z,x\n",
            "error: wide.csv: row 2: 4 fields where the header has 3\n",
        ),
        (
            "day.csv",
            "user_id,event,ts,day\n1,a,2026-05-01T10:00:00Z,2026-05-01\n2,b,2026-05-01T10:00:00Z,\n3,c,2026-05-01T10:00:00Z,2026-13-45\n",
            "error: day.csv: column 'day', row 3: cannot convert '2026-13-45' to Date32\n",
        ),
        (
            "broken.ndjson",
            "{\"user_id\":1,\"event\":\"a\",\"ts\":\"2026-05-01T10:00:00Z\"}\n{\"user_id\":2,\"event\":\"b\",\"ts\":\"2026-05-01T10:00:00Z\"\n",
            "error: broken.ndjson: row 2: not valid JSON: EOF while parsing an object (column 52)\n",
        ),
        (
            "array.json",
            "[{\"user_id\":1,\"event\":\"a\",\"ts\":\"2026-05-01T10:00:00Z\"}]\n",
            "error: array.json: holds a JSON array; Cohort reads newline-delimited JSON, one object per line (convert with: jq -c '.[]' FILE)\n",
        ),
    ];
    for (name, text, expected) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
        let output = Command::new(cohort_bin())
            .current_dir(dir.path())
            .args(["ingest", "--data", "store", "--table", "events", name])
            .env_remove("COHORT_DATA")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{name}");
        assert_eq!(String::from_utf8_lossy(&output.stderr), expected, "{name}");
    }
    assert!(
        !dir.path().join("store/events/_delta_log").exists(),
        "a failed ingest wrote a version"
    );
}

#[test]
fn demo_refuses_a_second_copy_and_bad_counts() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_arg(&dir);
    let demo = ["demo", "--data", &store, "--users", "20", "--events", "100"];
    let (ok, out, err) = run_cli(&demo);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "demo data written: 100 events, 20 profiles");
    let (ok, _, err) = run_cli(&demo);
    assert!(!ok);
    assert_eq!(
        err,
        format!(
            "error: the store at {store} already holds data, and the demo would add a second copy; pass --force to add it anyway, or --data DIR for a new store\n"
        )
    );
    assert_eq!(
        first_csv_row(
            dir.path().join("store").as_path(),
            "SELECT count(*) FROM events"
        ),
        "100"
    );
    let (ok, _, err) = run_cli(&[demo.as_slice(), &["--force"]].concat());
    assert!(ok, "{err}");
    assert_eq!(
        first_csv_row(
            dir.path().join("store").as_path(),
            "SELECT count(*) FROM events"
        ),
        "200"
    );
    let (ok, _, err) = run_cli(&["demo", "--data", &store, "--users", "0"]);
    assert!(!ok);
    assert!(
        err.starts_with("error: invalid value '0' for '--users <USERS>': must be at least 1"),
        "{err}"
    );
}

#[test]
fn ingest_of_one_row_and_of_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_arg(&dir);
    let one = dir.path().join("one.csv");
    std::fs::write(&one, "user_id,event,ts\n1,a,2026-05-01T10:00:00Z\n").unwrap();
    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, "user_id,event,ts\n").unwrap();
    let ingest = |file: &std::path::Path| ingest_events(&store, file);
    let (ok, out, err) = ingest(&one);
    assert!(ok, "{err}");
    assert_eq!(out, "1 row written to events (version 0)\n");
    let (ok, out, err) = ingest(&empty);
    assert!(ok, "{err}");
    assert_eq!(out, "no rows in the input: nothing written to events\n");
    // No empty version was committed: the next ingest is version 1.
    let (ok, out, err) = ingest(&one);
    assert!(ok, "{err}");
    assert_eq!(out, "1 row written to events (version 1)\n");
}

#[test]
fn serve_resolves_host_names_and_creates_nothing_when_it_cannot_bind() {
    let dir = tempfile::tempdir().unwrap();
    // Taken: serve must fail before it opens (and so creates) the store.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let store = dir.path().join("never");
    let (ok, _, err) = run_cli(&[
        "serve",
        "--data",
        store.to_str().unwrap(),
        "--listen",
        &format!("localhost:{port}"),
        "--pg-listen",
        "off",
    ]);
    assert!(!ok);
    assert!(err.starts_with("error: cannot listen on "), "{err}");
    assert!(err.contains(&format!(":{port}")), "{err}");
    assert!(
        !store.exists(),
        "a serve that could not bind created {}",
        store.display()
    );
    let (ok, _, err) = run_cli(&[
        "serve",
        "--data",
        store.to_str().unwrap(),
        "--listen",
        "localhost",
    ]);
    assert!(!ok);
    assert!(
        err.starts_with(
            "error: invalid listen 'localhost': expected HOST:PORT (e.g. 127.0.0.1:50051)"
        ),
        "{err}"
    );
    // A host name that resolves is served on.
    let server = TestServer::start(&store, &["--pg-listen", "localhost:0"]);
    let pg = server.pg_address.clone().expect("pg endpoint");
    assert!(
        pg.starts_with("127.0.0.1:") || pg.starts_with("[::1]:"),
        "{pg}"
    );
    server.stop();
}

#[test]
fn sql_runs_scripts_from_the_command_line_a_file_and_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_arg(&dir);
    let script = dir.path().join("tour.sql");
    std::fs::write(
        &script,
        "-- two statements and a comment\nSELECT 'a;b' AS text;\n\nSELECT 1 + 1 AS two\n",
    )
    .unwrap();
    let csv = ["sql", "--data", &store, "--format", "csv"];

    let (ok, out, err) = run_cli(&[&csv[..], &["SELECT 1 AS one; SELECT 2 AS two"]].concat());
    assert!(ok, "{err}");
    assert_eq!(out, "one\n1\ntwo\n2\n");

    let file = script.to_str().unwrap();
    let (ok, out, err) = run_cli(&[&csv[..], &["-f", file]].concat());
    assert!(ok, "{err}");
    assert_eq!(out, "text\na;b\ntwo\n2\n");

    for args in [&csv[..], &[&csv[..], &["--file", "-"]].concat()] {
        let (ok, out, err) = run_cli_with_input(args, "SELECT 3 AS three;\nSELECT 4 AS four;");
        assert!(ok, "{err}");
        assert_eq!(out, "three\n3\nfour\n4\n");
    }

    // Tables are separated by a blank line; --timing goes to stderr, out of the results' way.
    let (ok, out, err) = run_cli(&[
        "sql",
        "--data",
        &store,
        "--timing",
        "SELECT 1 AS a; SELECT 2 AS b",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "+---+\n| a |\n+---+\n| 1 |\n+---+\n\n+---+\n| b |\n+---+\n| 2 |\n+---+\n"
    );
    assert_eq!(err.matches("Time: ").count(), 2, "{err}");

    // A failing statement stops the script and says which one it was.
    let broken = dir.path().join("broken.sql");
    std::fs::write(
        &broken,
        "SELECT 1 AS ok;\nSELECT * FROM nowhere;\nSELECT 3;\n",
    )
    .unwrap();
    let (ok, out, err) = run_cli(&[&csv[..], &["-f", broken.to_str().unwrap()]].concat());
    assert!(!ok);
    assert_eq!(out, "ok\n1\n");
    assert_eq!(
        err,
        format!(
            "error: {}, statement 2 (line 2): table 'cohort.public.nowhere' not found\n",
            broken.display()
        )
    );
    let (ok, _, err) = run_cli_with_input(&csv, "SELECT 1;\nSELEC 2;");
    assert!(!ok);
    assert!(
        err.starts_with(
            "error: statement 2 (line 2): syntax error: Expected: an SQL statement, found: SELEC"
        ),
        "{err}"
    );

    let (ok, _, err) = run_cli_with_input(&csv, "SELECT 'never closed");
    assert!(!ok);
    assert_eq!(
        err,
        "error: line 1, column 8: Unterminated string literal\n"
    );
    for (input, message) in [
        (
            "-- only a comment\n",
            "error: no SQL statement on standard input\n",
        ),
        ("", "error: no SQL statement on standard input\n"),
    ] {
        let (ok, _, err) = run_cli_with_input(&csv, input);
        assert!(!ok);
        assert_eq!(err, message);
    }
    let (ok, _, err) = run_cli(&[&csv[..], &["-f", "/no/such/file.sql"]].concat());
    assert!(!ok);
    assert_eq!(
        err,
        "error: cannot read /no/such/file.sql: No such file or directory (os error 2)\n"
    );
    let (ok, _, err) = run_cli(&[&csv[..], &["-f", file, "SELECT 1"]].concat());
    assert!(!ok);
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn optimize_merges_the_files_of_a_day_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_arg(&dir);
    let optimize = || run_cli(&["optimize", "--data", &store, "--table", "events"]);
    let (ok, out, err) = optimize();
    assert!(ok, "{err}");
    assert_eq!(out, "events: nothing to optimize\n");
    for (name, rows) in [
        (
            "a.csv",
            "2,view,2026-05-01T10:00:00Z\n1,view,2026-05-01T11:00:00Z\n",
        ),
        ("b.csv", "1,buy,2026-05-01T10:30:00Z\n"),
        ("c.csv", "3,view,2026-05-02T09:00:00Z\n"),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, format!("user_id,event,ts\n{rows}")).unwrap();
        let (ok, _, err) = ingest_events(&store, &file);
        assert!(ok, "{err}");
    }
    let (ok, out, err) = optimize();
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "events: 2 files in 1 day rewritten into 1 (3 rows, version 3)\n"
    );
    let (ok, out, err) = optimize();
    assert!(ok, "{err}");
    assert_eq!(out, "events: nothing to optimize\n");
    let (ok, out, err) = run_cli(&[
        "sql",
        "--data",
        &store,
        "--format",
        "csv",
        "SELECT user_id, event FROM events ORDER BY ts",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out, "user_id,event\n2,view\n1,buy\n1,view\n3,view\n");
}

#[test]
fn help_lists_table_names_and_auth_takes_no_store_options() {
    let (ok, out, _) = run_cli(&["ingest", "--help"]);
    assert!(ok);
    assert!(
        out.contains("- events:") && out.contains("- profiles:"),
        "{out}"
    );
    for command in ["hash-password", "new-token"] {
        let (ok, out, _) = run_cli(&["auth", command, "--help"]);
        assert!(ok);
        for option in [
            "--data",
            "--memory-limit",
            "--spill-dir",
            "--target-partitions",
        ] {
            assert!(
                !out.contains(option),
                "auth {command} offers {option}:\n{out}"
            );
        }
    }
    let (ok, _, err) = run_cli(&["ingest", "--table", "event", "x.csv"]);
    assert!(!ok);
    assert!(err.contains("possible values: events, profiles"), "{err}");
}

#[test]
fn a_new_table_starts_with_its_base_columns_and_event_date_must_match_ts() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_arg(&dir);
    // NDJSON keys arrive in any order; the schema inferred from them is alphabetical.
    let events = dir.path().join("events.ndjson");
    std::fs::write(
        &events,
        "{\"zeta\": 1, \"ts\": \"2026-01-01T10:00:00Z\", \"event\": \"a\", \"alpha\": \"x\", \"user_id\": \"u1\"}\n",
    )
    .unwrap();
    let ingest = |file: &std::path::Path| ingest_events(&store, file);
    let csv = |sql: &str| {
        let (ok, out, err) = run_cli(&["sql", "--data", &store, "--format", "csv", sql]);
        assert!(ok, "{sql}: {err}");
        out
    };
    let (ok, _, err) = ingest(&events);
    assert!(ok, "{err}");
    let out = csv("SELECT * FROM events");
    assert_eq!(
        out.lines().next().unwrap(),
        "user_id,event,ts,event_date,user_key,person_key,alpha,zeta"
    );
    // A later property joins at the end; the base columns stay first (the Delta log itself puts
    // the partition column event_date behind the others when a write adds a column).
    let later = dir.path().join("later.csv");
    std::fs::write(
        &later,
        "user_id,event,ts,campaign\nu3,c,2026-01-02T10:00:00Z,autumn\n",
    )
    .unwrap();
    let (ok, _, err) = ingest(&later);
    assert!(ok, "{err}");
    let out = csv("SELECT * FROM events ORDER BY user_id");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "user_id,event,ts,event_date,user_key,person_key,alpha,zeta,campaign",
            "u1,a,2026-01-01T10:00:00Z,2026-01-01,0,0,x,1,",
            "u3,c,2026-01-02T10:00:00Z,2026-01-02,1,1,,,autumn",
        ]
    );
    let out = csv("SELECT campaign, event_date, user_id FROM events WHERE user_key = 1");
    assert_eq!(out, "campaign,event_date,user_id\nautumn,2026-01-02,u3\n");

    let dated = dir.path().join("dated.csv");
    std::fs::write(
        &dated,
        "user_id,event,ts,event_date\nu2,b,2026-01-01T23:30:00Z,2026-01-01\nu2,b,2026-01-01T23:30:00-02:00,2026-01-01\n",
    )
    .unwrap();
    let (ok, _, err) = ingest(&dated);
    assert!(!ok);
    assert_eq!(
        err,
        format!(
            "error: {}: column 'event_date', row 2: 2026-01-01 is not the UTC date of ts \
             2026-01-02T01:30:00Z (2026-01-02); leave event_date out and Cohort derives it\n",
            dated.display()
        )
    );
    std::fs::write(
        &dated,
        "user_id,event,ts,event_date\nu2,b,2026-01-01T23:30:00Z,2026-01-01\n",
    )
    .unwrap();
    let (ok, out, err) = ingest(&dated);
    assert!(ok, "{err}");
    assert_eq!(out, "1 row written to events (version 2)\n");
}

#[test]
fn ingest_reads_gzip_and_standard_input() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let store = store_arg(&dir);
    let csv = "user_id,event,ts\n1,a,2026-01-01T00:00:00Z\n2,b,2026-01-02T00:00:00Z\n";
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(csv.as_bytes()).unwrap();
    let compressed = gzip.finish().unwrap();
    let file = dir.path().join("events.csv.gz");
    std::fs::write(&file, &compressed).unwrap();
    let ingest = ["ingest", "--data", &store, "--table", "events"];

    let (ok, out, err) = run_cli(&[&ingest[..], &[file.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    assert_eq!(out, "2 rows written to events (version 0)\n");
    let stdin = [&ingest[..], &["--format", "csv", "-"]].concat();
    let (ok, out, err) = run_cli_with_input(&stdin, csv);
    assert!(ok, "{err}");
    assert_eq!(out, "2 rows written to events (version 1)\n");
    // Compressed standard input is recognised by its first bytes.
    let (ok, out, err) = run_cli_with_input(&stdin, &compressed);
    assert!(ok, "{err}");
    assert_eq!(out, "2 rows written to events (version 2)\n");
    let count = first_csv_row(&dir.path().join("store"), "SELECT count(*) FROM events");
    assert_eq!(count, "6");

    let (ok, _, err) = run_cli_with_input(&[&ingest[..], &["-"]].concat(), csv);
    assert!(!ok);
    assert_eq!(
        err,
        "error: standard input: give its format (--format csv, ndjson or parquet): standard \
         input has no file name to tell it by\n"
    );
    let (ok, _, err) = run_cli_with_input(&stdin, "user_id,event,ts\n1,a,soon\n");
    assert!(!ok);
    assert_eq!(
        err,
        "error: standard input: column 'ts', row 1: cannot convert 'soon' to a timestamp\n"
    );
    let fake = dir.path().join("fake.csv.gz");
    std::fs::write(&fake, csv).unwrap();
    let (ok, _, err) = run_cli(&[&ingest[..], &[fake.to_str().unwrap()]].concat());
    assert!(!ok);
    assert_eq!(
        err,
        format!(
            "error: {}: is named .gz but is not gzip-compressed\n",
            fake.display()
        )
    );
    let truncated = dir.path().join("cut.csv.gz");
    std::fs::write(&truncated, &compressed[..compressed.len() / 2]).unwrap();
    let (ok, _, err) = run_cli(&[&ingest[..], &[truncated.to_str().unwrap()]].concat());
    assert!(!ok);
    assert!(err.contains("cannot decompress it as gzip"), "{err}");
}

/// Every statement leaves one log line when it ends, from either endpoint: its text quoted
/// with line breaks escaped, and a failure with its status code and error.
#[test]
fn the_query_log_has_one_line_per_statement_with_failures_and_their_codes() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let store = store_arg(&dir);
    let log_path = dir.path().join("server.log");
    let mut server = Command::new(cohort_bin())
        .args([
            "serve",
            "--data",
            &store,
            "--listen",
            "127.0.0.1:0",
            "--pg-listen",
            "off",
        ])
        .args(["--log", "info"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("server reports its address").unwrap();
        if let Some(address) = line.strip_prefix("cohort listening on ") {
            break address.to_string();
        }
    };
    let sql = |statement: &str| run_cli(&["sql", "--connect", &url, "--format", "csv", statement]);
    assert!(sql("SELECT 1 AS a\nUNION ALL\nSELECT 2").0);
    assert!(!sql("SELECT * FROM missing_table").0);
    assert!(!sql("SELECT 1/0 AS broken").0);
    assert!(sql("INSERT INTO events VALUES (1, 'signup', '2026-05-01T00:00:00Z')").0);
    server.kill().unwrap();
    server.wait().unwrap();

    let log = std::fs::read_to_string(&log_path).unwrap();
    let statements: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("query finished") || line.contains("query failed"))
        .collect();
    assert_eq!(statements.len(), 4, "{log}");
    assert!(
        statements[0].contains("query finished")
            && statements[0].contains("rows=2")
            && statements[0].contains(r#"sql="SELECT 1 AS a\nUNION ALL\nSELECT 2""#),
        "{}",
        statements[0]
    );
    assert!(
        statements[1].contains("query failed")
            && statements[1].contains("code=NotFound")
            && statements[1].contains("missing_table"),
        "{}",
        statements[1]
    );
    assert!(
        statements[2].contains("query failed")
            && statements[2].contains("code=InvalidArgument")
            && statements[2].contains(r#"error="division by zero""#),
        "{}",
        statements[2]
    );
    assert!(
        statements[3].contains("query finished") && statements[3].contains("rows=1"),
        "{}",
        statements[3]
    );
}
