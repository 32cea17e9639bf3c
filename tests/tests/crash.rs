//! A killed ingest never leaves a half-written table: Delta commits only after every data file
//! is written, so SIGKILL between the first data file and the commit must leave the table as it
//! was, and readable.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cohort_e2e::{cohort_bin, first_csv_row, run_cli};

fn count_events(store: &Path) -> u64 {
    first_csv_row(store, "SELECT count(*) AS n FROM events")
        .parse()
        .unwrap()
}

fn parquet_files(dir: &Path) -> usize {
    let mut count = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                count += parquet_files(&path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                count += 1;
            }
        }
    }
    count
}

#[test]
fn sigkill_during_ingest_leaves_table_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (ok, _, err) = run_cli(&[
        "demo",
        "--data",
        store.to_str().unwrap(),
        "--users",
        "100",
        "--events",
        "2000",
    ]);
    assert!(ok, "{err}");
    let before = count_events(&store);
    let files_before = parquet_files(&store.join("events"));

    // Many rows over many days: the writer produces one file per date partition before it
    // commits, which gives a window in which data files exist but no commit does.
    let rows = 1_500_000u64;
    let csv = dir.path().join("big.csv");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&csv).unwrap());
    writeln!(file, "user_id,event,ts,amount").unwrap();
    for i in 0..rows {
        let day = 1 + i % 28;
        let month = 1 + (i / 28) % 12;
        writeln!(
            file,
            "{},page_view,2025-{month:02}-{day:02}T{:02}:00:00Z,{}",
            i % 5000,
            i % 24,
            i % 97
        )
        .unwrap();
    }
    drop(file);

    let mut child = Command::new(cohort_bin())
        .args([
            "ingest",
            "--data",
            store.to_str().unwrap(),
            "--table",
            "events",
            csv.to_str().unwrap(),
        ])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let killed_mid_write = loop {
        if parquet_files(&store.join("events")) > files_before {
            child.kill().unwrap();
            break true;
        }
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success());
            break false;
        }
        assert!(
            Instant::now() < deadline,
            "ingest neither wrote nor finished"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = child.wait();

    let after = count_events(&store);
    assert!(
        after == before || after == before + rows,
        "partial commit visible: {before} rows before, {after} after, {rows} ingested"
    );
    assert!(
        killed_mid_write,
        "the ingest finished before any data file appeared: test proved nothing"
    );
    // The store stays writable after the crash.
    let (ok, _, err) = run_cli(&[
        "sql",
        "--data",
        store.to_str().unwrap(),
        "INSERT INTO events (user_id, event, ts) VALUES (1, 'login', '2026-01-01T00:00:00Z')",
    ]);
    assert!(ok, "{err}");
    assert_eq!(count_events(&store), after + 1);
}

/// SIGKILL of the server while a segment refresh is evaluating: after a restart the previous
/// version is intact and current, the run is recorded as failed, and a consumer's cursor resumes
/// exactly (no trace of the killed run in the changes).
#[test]
fn sigkill_during_segment_refresh_keeps_the_previous_version() {
    use cohort_e2e::TestServer;

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let server = TestServer::start(&store, &["--demo"]);
    let url = format!("grpc://{}", server.address);
    let sql = |url: &str, statement: &str| {
        let (ok, out, err) = run_cli(&["sql", "--connect", url, "--format", "csv", statement]);
        assert!(ok, "{statement}: {err}");
        out.lines().skip(1).map(str::to_string).collect::<Vec<_>>()
    };
    // Slow on purpose: counting 300M generated rows gives the kill a wide window mid-evaluation.
    sql(
        &url,
        "CREATE SEGMENT buyers AS SELECT DISTINCT user_id FROM events WHERE event = 'purchase' \
         AND (SELECT count(*) FROM range(300000000)) > 0",
    );
    let members_before = sql(
        &url,
        "SELECT user_id FROM segment_members('buyers') ORDER BY user_id",
    );
    assert!(!members_before.is_empty());
    let changes_before = sql(
        &url,
        "SELECT user_id, change, version FROM segment_changes('buyers', 0) ORDER BY user_id",
    );

    let refresh = Command::new(cohort_bin())
        .args(["sql", "--connect", &url, "REFRESH SEGMENT buyers"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the refresh never started");
        let running = sql(
            &url,
            "SELECT count(*) FROM segment_runs WHERE status = 'running'",
        );
        if running == ["1"] {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    server.kill();
    let mut refresh = refresh;
    let _ = refresh.wait();

    let server = TestServer::start(&store, &[]);
    let url = format!("grpc://{}", server.address);
    assert_eq!(
        sql(
            &url,
            "SELECT max(version) FROM segment_versions WHERE segment = 'buyers'"
        ),
        ["1"]
    );
    assert_eq!(
        sql(
            &url,
            "SELECT user_id FROM segment_members('buyers') ORDER BY user_id"
        ),
        members_before
    );
    assert_eq!(
        sql(
            &url,
            "SELECT user_id, change, version FROM segment_changes('buyers', 0) ORDER BY user_id"
        ),
        changes_before
    );
    assert_eq!(
        sql(
            &url,
            "SELECT trigger, status, error FROM segment_runs ORDER BY started_at"
        ),
        [
            "create,succeeded,",
            "manual,failed,interrupted: the server stopped during the run"
        ]
    );
    // The segment still refreshes normally.
    sql(
        &url,
        "INSERT INTO events (user_id, event, ts) VALUES (90000001, 'purchase', '2026-11-20T10:00:00Z')",
    );
    sql(&url, "REFRESH SEGMENT buyers");
    assert_eq!(
        sql(
            &url,
            "SELECT max(version) FROM segment_versions WHERE segment = 'buyers'"
        ),
        ["2"]
    );
    assert!(server.stop());
}
