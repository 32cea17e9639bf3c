//! The engine's error type: every failure a caller can act on has its own variant,
//! so the server can map each to the right gRPC status in one place.

use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;
use deltalake::DeltaTableError;

/// Errors returned by the Cohort engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store URL or a configuration value is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// Input data failed validation; nothing was written.
    #[error("{source_name}: {message}")]
    InvalidInput {
        /// File name or other description of the input (e.g. "flight ingest").
        source_name: String,
        /// What is wrong, naming column and row where known.
        message: String,
    },

    /// A file could not be read or decoded.
    #[error("{path}: {message}")]
    Read { path: String, message: String },

    /// The SQL text is not a statement Cohort accepts (parse or semantic error).
    #[error("{0}")]
    InvalidStatement(String),

    /// The statement is valid SQL but Cohort does not support it.
    #[error("not supported: {0}")]
    Unsupported(String),

    /// The statement is larger or more complex than the configured limits allow.
    #[error("statement too complex: {0}")]
    LimitExceeded(String),

    /// Storage failed a commit and the log could not be read to see whether it landed anyway:
    /// the write may or may not be there.
    #[error(
        "commit outcome unknown: {0}. Check whether the data is there (e.g. count the rows) before retrying, or it may be written twice"
    )]
    CommitOutcomeUnknown(String),

    /// The store holds data Cohort did not write that way (a missing or mistyped column).
    #[error("the store holds unexpected data: {0}")]
    Corrupt(String),

    /// A request needs more of a bounded resource (decoded bytes, handles) than it may have.
    #[error("{0}")]
    ResourcesExhausted(String),

    /// The caller's role may not run this statement.
    #[error("permission denied: {0}")]
    PermissionDenied(String),

    /// A table named in a request does not exist.
    #[error("table not found: {0}")]
    TableNotFound(String),

    /// A query failed while planning or running.
    #[error("{}", datafusion_message(.0))]
    DataFusion(#[from] DataFusionError),

    /// The Delta Lake layer failed (storage, commit, log).
    #[error("storage: {0}")]
    Delta(#[from] DeltaTableError),

    #[error("{}", arrow_message(.0))]
    Arrow(#[from] arrow::error::ArrowError),

    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    pub(crate) fn invalid_input(
        source_name: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::InvalidInput {
            source_name: source_name.into(),
            message: message.into(),
        }
    }

    /// Whether the error was caused by the request (bad SQL, bad data) rather than the system.
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::Config(_)
            | Self::InvalidInput { .. }
            | Self::Read { .. }
            | Self::InvalidStatement(_)
            | Self::Unsupported(_)
            | Self::LimitExceeded(_)
            | Self::ResourcesExhausted(_)
            | Self::PermissionDenied(_)
            | Self::TableNotFound(_) => true,
            Self::DataFusion(e) => is_user_datafusion_error(e),
            Self::Delta(_)
            | Self::Arrow(_)
            | Self::Io(_)
            | Self::Corrupt(_)
            | Self::CommitOutcomeUnknown(_) => false,
        }
    }
}

/// A statement that does not parse, said as `syntax error: ...` on every endpoint.
pub(crate) fn syntax_error(error: impl std::fmt::Display) -> EngineError {
    let text = error.to_string();
    let text = text.strip_prefix("sql parser error: ").unwrap_or(&text);
    EngineError::InvalidStatement(one_line(&format!("syntax error: {text}")))
}

/// A parse failure reported by DataFusion's parser (its `SQL` error).
pub(crate) fn statement_error(error: DataFusionError) -> EngineError {
    EngineError::InvalidStatement(datafusion_message(&error))
}

/// DataFusion reports planning and SQL errors with distinct variants; those are the caller's.
pub fn is_user_datafusion_error(error: &DataFusionError) -> bool {
    match error.find_root() {
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_) => true,
        DataFusionError::ArrowError(e, _) => matches!(
            e.as_ref(),
            arrow::error::ArrowError::CastError(_)
                | arrow::error::ArrowError::DivideByZero
                | arrow::error::ArrowError::ParseError(_)
                | arrow::error::ArrowError::InvalidArgumentError(_)
        ),
        DataFusionError::Execution(_) => true,
        _ => false,
    }
}

/// What went wrong, in one line and the words of the root cause: DataFusion's wrapping
/// (`Error during planning: `, `Schema error: `, `SQL error: ParserError("...")`, contexts and
/// shared copies of one error) is what every client would otherwise show first.
pub fn datafusion_message(error: &DataFusionError) -> String {
    let text = match error.find_root() {
        DataFusionError::SQL(parser, _) => match parser.as_ref() {
            ParserError::ParserError(m) | ParserError::TokenizerError(m) => {
                format!("syntax error: {m}")
            }
            ParserError::RecursionLimitExceeded => {
                "syntax error: the statement nests too deeply".to_string()
            }
        },
        DataFusionError::Plan(m)
        | DataFusionError::Execution(m)
        | DataFusionError::Configuration(m) => m.clone(),
        DataFusionError::NotImplemented(m) => format!("not supported: {m}"),
        DataFusionError::ResourcesExhausted(m) => format!("resources exhausted: {m}"),
        DataFusionError::SchemaError(e, _) => e.to_string(),
        DataFusionError::ArrowError(e, _) => arrow_message(e),
        DataFusionError::External(e) => match e.downcast_ref::<EngineError>() {
            Some(engine) => engine.to_string(),
            None => e.to_string(),
        },
        other => other.strip_backtrace(),
    };
    one_line(&text)
}

/// An Arrow error without its category prefix (`Cast error: `, `Parser error: `, ...).
pub fn arrow_message(error: &arrow::error::ArrowError) -> String {
    use arrow::error::ArrowError as A;
    let text = match error {
        A::CastError(m)
        | A::ParseError(m)
        | A::InvalidArgumentError(m)
        | A::ComputeError(m)
        | A::ArithmeticOverflow(m)
        | A::CsvError(m)
        | A::JsonError(m)
        | A::SchemaError(m)
        | A::IpcError(m)
        | A::NotYetImplemented(m) => m.clone(),
        A::DivideByZero => "division by zero".to_string(),
        A::ExternalError(e) => e.to_string(),
        other => other.to_string(),
    };
    one_line(&text)
}

/// The parts of an error chain, outermost first, on one line joined by `: `, leaving out a part
/// an earlier one already says (wrappers often repeat their source's message).
pub fn distinct_causes(parts: impl IntoIterator<Item = String>) -> String {
    let mut kept: Vec<String> = Vec::new();
    for part in parts {
        let part = one_line(&part);
        if !part.is_empty() && !kept.iter().any(|earlier| earlier.contains(&part)) {
            kept.push(part);
        }
    }
    kept.join(": ")
}

/// `text` on one line: a log line, a status message and a terminal line each hold one error.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
