//! Test harness: runs the real `cohort` binary on a temporary store and a free port.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `cohort` binary cargo built beside this test executable (`target/<profile>/cohort`),
/// or the one named by `COHORT_BIN`.
pub fn cohort_bin() -> PathBuf {
    if let Ok(path) = std::env::var("COHORT_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join(format!("cohort{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} not found: build it with `cargo build -p cohort-server` or set COHORT_BIN",
        bin.display()
    );
    bin
}

/// Runs `cohort ARGS...` to completion, returning (success, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(cohort_bin())
        .args(args)
        .env_remove("COHORT_DATA")
        .output()
        .expect("run cohort");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `cohort ARGS...` with `input` on its standard input, returning (success, stdout, stderr).
pub fn run_cli_with_input(args: &[&str], input: impl AsRef<[u8]>) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(cohort_bin())
        .args(args)
        .env_remove("COHORT_DATA")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cohort");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input.as_ref()).expect("write stdin");
    drop(stdin);
    let output = child.wait_with_output().expect("wait for cohort");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs one statement on a store with `cohort sql --format csv` and returns its first data row.
pub fn first_csv_row(store: &Path, sql: &str) -> String {
    let (ok, out, err) = run_cli(&[
        "sql",
        "--data",
        store.to_str().expect("utf-8 path"),
        "--format",
        "csv",
        sql,
    ]);
    assert!(ok, "{sql}: {err}");
    out.lines()
        .nth(1)
        .unwrap_or_else(|| panic!("{sql}: no rows in {out:?}"))
        .to_string()
}

/// A running `cohort serve`; stopped with SIGTERM when dropped.
pub struct TestServer {
    child: Option<Child>,
    pub address: String,
    /// The PostgreSQL endpoint's `HOST:PORT`, unless started with `--pg-listen off`.
    pub pg_address: Option<String>,
}

impl TestServer {
    /// Starts a server on `data` listening on free loopback ports (Flight SQL and, unless
    /// `extra_args` says otherwise, PostgreSQL).
    pub fn start(data: &Path, extra_args: &[&str]) -> Self {
        let pg_listen = extra_args
            .iter()
            .position(|arg| *arg == "--pg-listen")
            .and_then(|at| extra_args.get(at + 1))
            .copied();
        let mut command = Command::new(cohort_bin());
        command.arg("serve").arg("--data").arg(data).args([
            "--listen",
            "127.0.0.1:0",
            "--log",
            "warn",
        ]);
        if pg_listen.is_none() {
            command.args(["--pg-listen", "127.0.0.1:0"]);
        }
        let mut child = command
            .args(extra_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start cohort serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(120);
        let expect_pg = pg_listen != Some("off");
        let (mut address, mut pg_address) = (None, None);
        while address.is_none() || (expect_pg && pg_address.is_none()) {
            assert!(
                Instant::now() < deadline,
                "server did not report its addresses"
            );
            let Some(Ok(line)) = lines.next() else {
                panic!("server exited before listening: {:?}", child.wait());
            };
            if let Some(flight) = line
                .strip_prefix("cohort listening on grpc://")
                .or_else(|| line.strip_prefix("cohort listening on grpc+tls://"))
            {
                address = Some(flight.trim().to_string());
            } else if let Some(url) = line.strip_prefix("cohort postgres listening on postgres://")
            {
                pg_address = url.trim().split('/').next().map(str::to_string);
            }
        }
        let address = address.expect("the loop ends once the address is known");
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child: Some(child),
            address,
            pg_address,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Sends SIGTERM and waits for the process, returning whether it exited successfully.
    pub fn stop(mut self) -> bool {
        self.terminate()
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Flight SQL helpers shared by the end-to-end suites.
pub mod flight {
    use std::path::Path;

    use arrow::array::RecordBatch;
    use arrow_flight::FlightInfo;
    use arrow_flight::error::FlightError;
    use arrow_flight::sql::client::FlightSqlServiceClient;
    use futures::TryStreamExt;
    use tonic::Code;
    use tonic::transport::Channel;

    use super::TestServer;

    pub async fn channel(server: &TestServer) -> Channel {
        Channel::from_shared(server.url())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub fn code(error: &FlightError) -> Code {
        match error {
            FlightError::Tonic(status) => status.code(),
            other => panic!("not a gRPC status: {other}"),
        }
    }

    pub async fn fetch(
        client: &mut FlightSqlServiceClient<Channel>,
        info: FlightInfo,
    ) -> Result<Vec<RecordBatch>, FlightError> {
        let mut batches = Vec::new();
        for endpoint in info.endpoint {
            let stream = client.do_get(endpoint.ticket.unwrap()).await?;
            batches.extend(stream.try_collect::<Vec<_>>().await?);
        }
        Ok(batches)
    }

    pub async fn query(
        client: &mut FlightSqlServiceClient<Channel>,
        sql: &str,
    ) -> Result<Vec<RecordBatch>, FlightError> {
        let info = client.execute(sql.to_string(), None).await?;
        fetch(client, info).await
    }

    pub fn first_integer(batches: &[RecordBatch]) -> i64 {
        use arrow::array::AsArray;
        batches[0]
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0)
    }

    pub fn rows(batches: &[RecordBatch]) -> usize {
        batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// A server that runs one statement at a time, with `limits` as its config file's `[limits]`
    /// section and `--statement-timeout statement_timeout`.
    pub fn one_slot_server(dir: &Path, limits: &str, statement_timeout: &str) -> TestServer {
        let config = dir.join("limits.toml");
        std::fs::write(&config, format!("[limits]\n{limits}\n")).unwrap();
        TestServer::start(
            &dir.join("store"),
            &[
                "--config",
                config.to_str().unwrap(),
                "--max-concurrent-queries",
                "1",
                "--statement-timeout",
                statement_timeout,
            ],
        )
    }
}

/// Config files with `[auth]` for the suites that log in.
pub mod auth {
    use std::path::{Path, PathBuf};

    /// A config file with an admin user `ada`, a reader user `rita` and a reader API token, and
    /// `extra` appended; returns its path and the token.
    pub const ADMIN_PASSWORD: &str = "correct horse battery";
    pub const READER_PASSWORD: &str = "reader password 1";

    pub fn auth_config(dir: &Path, extra: &str) -> (PathBuf, String) {
        let (token, token_hash) = cohort_server::auth::new_api_token();
        let admin = cohort_server::auth::hash_password(ADMIN_PASSWORD).unwrap();
        let reader = cohort_server::auth::hash_password(READER_PASSWORD).unwrap();
        let text = format!(
            r#"
    [[auth.users]]
    name = "ada"
    role = "admin"
    password_hash = "{admin}"

    [[auth.users]]
    name = "rita"
    role = "reader"
    password_hash = "{reader}"

    [[auth.tokens]]
    name = "dashboards"
    role = "reader"
    token_hash = "{token_hash}"
    {extra}
    "#
        );
        let path = dir.join("cohort.toml");
        std::fs::write(&path, text).unwrap();
        (path, token)
    }
}

/// A throwaway certificate authority with a server certificate for `localhost` and a client
/// certificate, for the TLS suites.
pub mod tls {
    pub struct Pki {
        pub ca: String,
        pub server_cert: String,
        pub server_key: String,
        pub client_cert: String,
        pub client_key: String,
    }

    /// Paths of the PEM files [`Pki::write_files`] writes.
    pub struct PkiFiles {
        pub server_cert: String,
        pub server_key: String,
        pub ca: String,
    }

    /// Writes `text` to `dir/name` and returns the path as a string (for a command line).
    pub fn write_pem(dir: &std::path::Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }

    impl Pki {
        /// The server's certificate and key and the CA, as `server.pem`, `server.key`, `ca.pem`.
        pub fn write_files(&self, dir: &std::path::Path) -> PkiFiles {
            PkiFiles {
                server_cert: write_pem(dir, "server.pem", &self.server_cert),
                server_key: write_pem(dir, "server.key", &self.server_key),
                ca: write_pem(dir, "ca.pem", &self.ca),
            }
        }
    }

    pub fn pki() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(vec!["localhost".into()]);
        let (client_cert, client_key) = leaf(vec!["cohort-client".into()]);
        Pki {
            ca: ca.pem(),
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }
}
