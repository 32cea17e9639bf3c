//! Configuration: one typed struct resolved from command-line flags, then `COHORT_*`
//! environment variables, then a TOML file (`--config`), then defaults, in that order.
//! The flag doc comments are the user documentation (`cohort --help`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use cohort_engine::ingest::FileFormat;
use cohort_engine::{EngineConfig, StatementLimits, TableKind};
use serde::Deserialize;

use crate::auth::{AuthConfig, Role};
use crate::limits::QueryLimits;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

/// Where the PostgreSQL endpoint listens unless told otherwise (PostgreSQL's port + 1, so a
/// local PostgreSQL keeps 5432).
pub const DEFAULT_PG_LISTEN: &str = "127.0.0.1:5433";

/// Cohort: a segmentation query engine over events and profiles in object storage.
#[derive(Debug, Parser)]
#[command(name = "cohort", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// TOML file with any of: data, memory_limit, spill_dir, target_partitions, listen, log,
    /// and the sections [auth], [tls], [limits] (see the README's SECURITY section).
    #[arg(long, env = "COHORT_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log filter, e.g. info, debug, cohort_server=debug. [default: info for serve, warn for
    /// the one-shot commands]
    #[arg(long, env = "COHORT_LOG", global = true, value_name = "FILTER")]
    pub log: Option<String>,
}

/// Where the store is and what its queries may use: the options of every command that opens
/// the store (not of `auth`, which never does).
#[derive(Debug, Default, Args)]
pub struct StoreArgs {
    /// Store location: a local directory or s3://bucket/prefix (S3 settings from AWS_* variables).
    /// [default: ./cohort-data]
    #[arg(long, env = "COHORT_DATA", value_name = "URL")]
    pub data: Option<String>,

    /// Memory all queries may use together (e.g. 4GiB, 512MiB, or "unlimited"); operators spill
    /// past it, what cannot spill fails. [default: 3/4 of the machine's or cgroup's memory]
    #[arg(long, env = "COHORT_MEMORY_LIMIT", value_name = "SIZE")]
    pub memory_limit: Option<String>,

    /// Directory for spill files. [default: the system temporary directory]
    #[arg(long, env = "COHORT_SPILL_DIR", value_name = "DIR")]
    pub spill_dir: Option<PathBuf>,

    /// Parallelism of one query. [default: number of cores]
    #[arg(long, env = "COHORT_TARGET_PARTITIONS", value_name = "N")]
    pub target_partitions: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Arrow Flight SQL server.
    Serve(ServeArgs),
    /// Load Parquet, CSV or NDJSON files into a table, all or nothing.
    Ingest(IngestArgs),
    /// Rewrite a table's fragmented files into few sorted ones (OPTIMIZE), in one commit.
    Optimize(OptimizeArgs),
    /// Run one SQL statement, on the store directly or against a server.
    Sql(SqlArgs),
    /// Write the reproducible demo data set.
    Demo(DemoArgs),
    /// Create credentials for the config file's [auth] section.
    #[command(subcommand)]
    Auth(AuthCommand),
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Read a password (asked for twice on a terminal, else from standard input) and print its
    /// [[auth.users]] entry.
    HashPassword {
        /// User name.
        #[arg(long)]
        user: String,
        /// reader (queries) or admin (also ingest, tags, segments).
        #[arg(long, default_value = "reader")]
        role: Role,
    },
    /// Generate an API token: prints the token once, and its [[auth.tokens]] entry.
    NewToken {
        /// A name for the token's holder, shown in logs.
        #[arg(long)]
        name: String,
        /// reader (queries) or admin (also ingest, tags, segments).
        #[arg(long, default_value = "reader")]
        role: Role,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Address to listen on. [default: 127.0.0.1:50051]
    #[arg(long, env = "COHORT_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<String>,

    /// Address of the PostgreSQL wire endpoint, or "off". [default: 127.0.0.1:5433]
    #[arg(long, env = "COHORT_PG_LISTEN", value_name = "HOST:PORT|off")]
    pub pg_listen: Option<String>,

    /// Fill an empty store with the demo data set before serving.
    #[arg(long, env = "COHORT_DEMO")]
    pub demo: bool,

    /// Serve on a non-loopback address without authentication. Anyone who can reach the port
    /// can then read and change all data.
    #[arg(long, env = "COHORT_INSECURE")]
    pub insecure: bool,

    /// PEM certificate chain: serve over TLS (needs --tls-key).
    #[arg(long, env = "COHORT_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "COHORT_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificates: clients must present a certificate signed by one of them.
    #[arg(long, env = "COHORT_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,

    /// Longest a statement may run, e.g. 30s, 5m; 0 for no limit. [default: 5m]
    #[arg(long, env = "COHORT_STATEMENT_TIMEOUT", value_name = "DURATION")]
    pub statement_timeout: Option<String>,

    /// Statements that may run at once; more wait in a queue. [default: 16]
    #[arg(long, env = "COHORT_MAX_CONCURRENT_QUERIES", value_name = "N")]
    pub max_concurrent_queries: Option<usize>,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Table to load into.
    #[arg(long, value_enum)]
    pub table: TableArg,

    /// Files to load (.parquet, .csv, .ndjson/.jsonl/.json, each optionally .gz); the format
    /// follows the extension. "-" reads standard input (needs --format).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// The input format, whatever the file names say.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<InputFormatArg>,
}

#[derive(Debug, Args)]
pub struct OptimizeArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Table to optimize.
    #[arg(long, value_enum)]
    pub table: TableArg,
}

/// The input formats `cohort ingest` reads; gzip-compressed input is recognised by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputFormatArg {
    /// Comma-separated values with a header row
    Csv,
    /// Newline-delimited JSON, one object per line
    Ndjson,
    /// Apache Parquet
    Parquet,
}

impl From<InputFormatArg> for FileFormat {
    fn from(format: InputFormatArg) -> Self {
        match format {
            InputFormatArg::Csv => FileFormat::Csv,
            InputFormatArg::Ndjson => FileFormat::NdJson,
            InputFormatArg::Parquet => FileFormat::Parquet,
        }
    }
}

/// The tables `cohort ingest` loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TableArg {
    /// Behaviour events: user_id, event, ts, and any properties
    Events,
    /// One row per user: user_id and any attributes; a later row for a user replaces it
    Profiles,
}

impl From<TableArg> for TableKind {
    fn from(table: TableArg) -> Self {
        match table {
            TableArg::Events => TableKind::Events,
            TableArg::Profiles => TableKind::Profiles,
        }
    }
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Send the statement to a running server (grpc://HOST:PORT) instead of opening the store.
    #[arg(long, env = "COHORT_CONNECT", value_name = "URL")]
    pub connect: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,

    /// API or session token for a server with authentication.
    #[arg(
        long,
        env = "COHORT_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// User name for a server with authentication (password from COHORT_PASSWORD, asked for
    /// on a terminal when that is not set).
    #[arg(long, env = "COHORT_USER", value_name = "NAME")]
    pub user: Option<String>,

    /// CA certificate (PEM) to verify a TLS server (grpc+tls://HOST:PORT) with.
    #[arg(long, env = "COHORT_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// Read the statements from FILE ("-" for standard input).
    #[arg(short = 'f', long, value_name = "FILE", conflicts_with = "sql")]
    pub file: Option<PathBuf>,

    /// Print how long each statement took.
    #[arg(long)]
    pub timing: bool,

    /// SQL statements, separated by ';'. Without them and without --file the statements come
    /// from standard input, or from an interactive shell when that is a terminal.
    pub sql: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// An aligned table for reading; cells over 100 characters are cut
    Table,
    /// CSV with a header row; lists and structs as their text
    Csv,
    /// Newline-delimited JSON: one object per row
    Json,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Number of users.
    #[arg(long, env = "COHORT_DEMO_USERS", default_value_t = 10_000, value_parser = parse_count)]
    pub users: usize,

    /// Number of events.
    #[arg(long, env = "COHORT_DEMO_EVENTS", default_value_t = 300_000, value_parser = parse_count)]
    pub events: usize,

    /// Add the demo data to a store that already holds data (a second run adds a second copy).
    #[arg(long)]
    pub force: bool,

    /// Random seed: the same seed writes the same data.
    #[arg(long, env = "COHORT_DEMO_SEED", default_value_t = 42)]
    pub seed: u64,
}

fn parse_count(value: &str) -> Result<usize, String> {
    match value.trim().replace('_', "").parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("expected a whole number".into()),
    }
}

/// Keys accepted in the `--config` TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data: Option<String>,
    pub memory_limit: Option<String>,
    pub spill_dir: Option<PathBuf>,
    pub target_partitions: Option<usize>,
    pub listen: Option<String>,
    pub pg_listen: Option<String>,
    pub log: Option<String>,
    #[serde(default)]
    pub auth: AuthConfig,
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// `[tls]`: serve over TLS.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA certificates that client certificates must chain to.
    pub client_ca: Option<PathBuf>,
    /// With client_ca: also accept clients without a certificate (they then need a password or
    /// token). [default: false]
    #[serde(default)]
    pub client_auth_optional: bool,
}

/// `[limits]`: what one statement and the server as a whole may use.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_sql_bytes: Option<String>,
    pub max_nesting: Option<usize>,
    pub max_operators: Option<usize>,
    pub max_depth: Option<usize>,
    pub statement_timeout: Option<String>,
    pub max_concurrent_queries: Option<usize>,
    pub queue_timeout: Option<String>,
    pub max_result_rows: Option<u64>,
    pub max_result_bytes: Option<String>,
    pub max_put_bytes: Option<String>,
    pub stall_timeout: Option<String>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
    }
}

/// Resolved settings shared by every command.
#[derive(Debug, Clone)]
pub struct Settings {
    pub engine: EngineConfig,
    pub listen: SocketAddr,
    /// The PostgreSQL endpoint's address; `None` when it is off.
    pub pg_listen: Option<SocketAddr>,
    pub log: String,
    pub auth: AuthConfig,
    pub tls: Option<TlsConfig>,
    pub limits: QueryLimits,
    pub insecure: bool,
}

fn duration(name: &str, text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid {name} '{text}': {e} (e.g. 30s, 5m, 1h)"))
}

/// `HOST:PORT` with HOST an address or a name (`localhost:50051`), resolved now: the first
/// address the name has is the one listened on.
fn socket_address(name: &str, text: &str, example: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    let invalid = |why: String| format!("invalid {name} '{text}': {why} (e.g. {example})");
    if text
        .rsplit_once(':')
        .is_none_or(|(_, port)| port.parse::<u16>().is_err())
    {
        return Err(invalid("expected HOST:PORT".into()));
    }
    std::net::ToSocketAddrs::to_socket_addrs(text)
        .map_err(|e| invalid(format!("cannot resolve the host: {e}")))?
        .next()
        .ok_or_else(|| invalid("the host has no address".into()))
}

impl Settings {
    /// `store` is `None` for the commands that never open the store.
    pub fn resolve(
        global: &GlobalArgs,
        store: Option<&StoreArgs>,
        serve: Option<&ServeArgs>,
    ) -> Result<Self, String> {
        let no_store = StoreArgs::default();
        let store = store.unwrap_or(&no_store);
        let file = match &global.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let listen = match serve.and_then(|s| s.listen.clone()).or(file.listen.clone()) {
            Some(text) => socket_address("listen", &text, "127.0.0.1:50051")?,
            None => DEFAULT_LISTEN.parse().expect("valid default address"),
        };
        let defaults = StatementLimits::default();
        let statement_limits = StatementLimits {
            max_sql_bytes: match &file.limits.max_sql_bytes {
                Some(size) => parse_size(size)?,
                None => defaults.max_sql_bytes,
            },
            max_nesting: file.limits.max_nesting.unwrap_or(defaults.max_nesting),
            max_operators: file.limits.max_operators.unwrap_or(defaults.max_operators),
            max_depth: file.limits.max_depth.unwrap_or(defaults.max_depth),
        };
        let query_defaults = QueryLimits::default();
        let statement_timeout = serve
            .and_then(|s| s.statement_timeout.clone())
            .or(file.limits.statement_timeout.clone());
        let limits = QueryLimits {
            statement_timeout: match statement_timeout {
                Some(text) => Some(duration("statement_timeout", &text)?).filter(|d| !d.is_zero()),
                None => query_defaults.statement_timeout,
            },
            max_concurrent_queries: serve
                .and_then(|s| s.max_concurrent_queries)
                .or(file.limits.max_concurrent_queries)
                .unwrap_or(query_defaults.max_concurrent_queries),
            queue_timeout: match &file.limits.queue_timeout {
                Some(text) => duration("queue_timeout", text)?,
                None => query_defaults.queue_timeout,
            },
            max_result_rows: file
                .limits
                .max_result_rows
                .unwrap_or(query_defaults.max_result_rows),
            max_result_bytes: match &file.limits.max_result_bytes {
                Some(size) => parse_size(size)? as u64,
                None => query_defaults.max_result_bytes,
            },
            max_put_bytes: match &file.limits.max_put_bytes {
                Some(size) => parse_size(size)? as u64,
                None => query_defaults.max_put_bytes,
            },
            stall_timeout: match &file.limits.stall_timeout {
                Some(text) => duration("stall_timeout", text)?,
                None => query_defaults.stall_timeout,
            },
        };
        if limits.max_concurrent_queries == 0 {
            return Err("max_concurrent_queries must be at least 1".into());
        }
        let mut tls = file.tls.clone();
        if let Some(serve) = serve {
            match (&serve.tls_cert, &serve.tls_key) {
                // The flags replace the certificate and key; client certificate settings the
                // file gives still apply unless a flag replaces them too (dropping them would
                // silently turn mutual TLS off).
                (Some(cert), Some(key)) => {
                    let from_file = tls.take();
                    tls = Some(TlsConfig {
                        cert: cert.clone(),
                        key: key.clone(),
                        client_ca: serve
                            .tls_client_ca
                            .clone()
                            .or_else(|| from_file.as_ref().and_then(|t| t.client_ca.clone())),
                        client_auth_optional: from_file
                            .as_ref()
                            .is_some_and(|t| t.client_auth_optional),
                    });
                }
                (None, None) => {
                    if let (Some(ca), Some(tls)) = (&serve.tls_client_ca, tls.as_mut()) {
                        tls.client_ca = Some(ca.clone());
                    }
                }
                _ => return Err("--tls-cert and --tls-key go together".into()),
            }
            if serve.tls_client_ca.is_some() && tls.is_none() {
                return Err("--tls-client-ca needs TLS: give --tls-cert and --tls-key".into());
            }
        }
        let pg_listen = match serve.and_then(|s| s.pg_listen.clone()).or(file.pg_listen) {
            Some(text) if text.trim().eq_ignore_ascii_case("off") => None,
            Some(text) => Some(socket_address("pg_listen", &text, "127.0.0.1:5433 or off")?),
            None => Some(DEFAULT_PG_LISTEN.parse().expect("valid default address")),
        };
        let memory_limit = match store.memory_limit.clone().or(file.memory_limit) {
            Some(text) if text.trim().eq_ignore_ascii_case("unlimited") => None,
            Some(text) => Some(parse_size(&text)?),
            None => crate::memory::default_memory_limit(),
        };
        Ok(Self {
            engine: EngineConfig {
                data: store
                    .data
                    .clone()
                    .or(file.data)
                    .unwrap_or_else(|| cohort_engine::DEFAULT_DATA.to_string()),
                memory_limit,
                spill_dir: store.spill_dir.clone().or(file.spill_dir),
                target_partitions: store.target_partitions.or(file.target_partitions),
                limits: statement_limits,
                object_store_layer: None,
            },
            pg_listen,
            listen,
            log: global
                .log
                .clone()
                .or(file.log)
                .unwrap_or_else(|| "info".to_string()),
            auth: file.auth,
            tls,
            limits,
            insecure: serve.is_some_and(|s| s.insecure),
        })
    }
}

/// Parses sizes such as `512MiB`, `4GiB`, `2GB` or a plain number of bytes.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid size '{text}': expected e.g. 512MiB or 4GiB"))?;
    let multiplier: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024.0_f64.powi(4),
        other => return Err(format!("invalid size unit '{other}' in '{text}'")),
    };
    Ok((number * multiplier) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_size("4GiB"), Ok(4 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }

    #[test]
    fn flags_win_over_file_and_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cohort.toml");
        std::fs::write(
            &path,
            "data = \"/from/file\"\nmemory_limit = \"1GiB\"\nlisten = \"0.0.0.0:9000\"\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "cohort",
            "--config",
            path.to_str().unwrap(),
            "serve",
            "--data",
            "/from/flag",
        ])
        .unwrap();
        let Command::Serve(serve) = &cli.command else {
            panic!()
        };
        let settings = Settings::resolve(&cli.global, Some(&serve.store), Some(serve)).unwrap();
        assert_eq!(settings.engine.data, "/from/flag");
        assert_eq!(settings.engine.memory_limit, Some(1 << 30));
        assert_eq!(settings.listen.to_string(), "0.0.0.0:9000");
        assert!(settings.log.starts_with("info"));
    }

    #[test]
    fn memory_limit_defaults_to_a_share_of_the_machine_and_can_be_lifted() {
        let memory_limit = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap();
            let Command::Sql(sql) = &cli.command else {
                panic!()
            };
            Settings::resolve(&cli.global, Some(&sql.store), None)
                .unwrap()
                .engine
                .memory_limit
        };
        let unlimited = ["cohort", "sql", "--memory-limit", "unlimited", "SELECT 1"];
        assert_eq!(memory_limit(&unlimited), None);
        let sized = ["cohort", "sql", "--memory-limit", "512MiB", "SELECT 1"];
        assert_eq!(memory_limit(&sized), Some(512 << 20));
        if std::env::var_os("COHORT_MEMORY_LIMIT").is_none() {
            let default = memory_limit(&["cohort", "sql", "SELECT 1"]);
            assert_eq!(default, crate::memory::default_memory_limit());
            assert!(default.is_some());
        }
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "dta = \"typo\"\n").unwrap();
        let err = FileConfig::load(&path).unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
    }
}
