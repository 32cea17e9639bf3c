//! Errors as PostgreSQL clients expect them: an SQLSTATE a driver can act on, the same
//! message Flight SQL clients get.
//!
//! Statements go through the same admission path as Flight SQL, whose errors are gRPC
//! statuses; each status code maps to the SQLSTATE class PostgreSQL uses for that situation,
//! refined by what the message says for the common planning errors (unknown table or column,
//! syntax).

use pgwire::error::{ErrorInfo, PgWireError};
use tonic::{Code, Status};

/// SQLSTATEs Cohort sends.
pub mod sqlstate {
    pub const SYNTAX_ERROR: &str = "42601";
    pub const UNDEFINED_TABLE: &str = "42P01";
    pub const UNDEFINED_COLUMN: &str = "42703";
    pub const UNDEFINED_FUNCTION: &str = "42883";
    pub const UNDEFINED_OBJECT: &str = "42704";
    pub const DUPLICATE_OBJECT: &str = "42710";
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    pub const INVALID_CATALOG_NAME: &str = "3D000";
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const QUERY_CANCELED: &str = "57014";
    pub const STATEMENT_TOO_COMPLEX: &str = "54001";
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    pub const INSUFFICIENT_RESOURCES: &str = "53000";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    pub const DATA_EXCEPTION: &str = "22000";
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
    pub const SERIALIZATION_FAILURE: &str = "40001";
    pub const INTERNAL_ERROR: &str = "XX000";
    pub const SYSTEM_ERROR: &str = "58000";
}

/// An `ERROR` with `code` and `message`.
pub fn error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        message.into(),
    )))
}

/// A `FATAL` error (the connection ends).
pub fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        code.to_string(),
        message.into(),
    )))
}

/// The PostgreSQL error for a statement's gRPC status.
pub fn status_error(status: &Status) -> PgWireError {
    error(sqlstate_of(status), status.message())
}

fn sqlstate_of(status: &Status) -> &'static str {
    let message = status.message();
    match status.code() {
        Code::InvalidArgument => invalid_argument_sqlstate(message),
        Code::NotFound => {
            if mentions_table(message) {
                sqlstate::UNDEFINED_TABLE
            } else {
                sqlstate::UNDEFINED_OBJECT
            }
        }
        Code::AlreadyExists => sqlstate::DUPLICATE_OBJECT,
        Code::PermissionDenied => sqlstate::INSUFFICIENT_PRIVILEGE,
        Code::Unauthenticated => sqlstate::INVALID_AUTHORIZATION,
        Code::ResourceExhausted => sqlstate::INSUFFICIENT_RESOURCES,
        Code::DeadlineExceeded | Code::Cancelled => sqlstate::QUERY_CANCELED,
        Code::Unimplemented => sqlstate::FEATURE_NOT_SUPPORTED,
        Code::FailedPrecondition => sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
        Code::Aborted => sqlstate::SERIALIZATION_FAILURE,
        Code::OutOfRange => sqlstate::DATA_EXCEPTION,
        Code::Unavailable => sqlstate::SYSTEM_ERROR,
        Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => sqlstate::INTERNAL_ERROR,
    }
}

fn invalid_argument_sqlstate(message: &str) -> &'static str {
    let lower = message.to_ascii_lowercase();
    if lower.contains("max_depth")
        || lower.contains("max_nesting")
        || lower.contains("max_operators")
        || lower.contains("common table expressions")
        || lower.contains("plan nodes")
    {
        sqlstate::STATEMENT_TOO_COMPLEX
    } else if lower.contains("max_sql_bytes") || lower.contains("bytes long") {
        sqlstate::PROGRAM_LIMIT_EXCEEDED
    } else if lower.starts_with("syntax error") || lower.contains("sql parser error") {
        sqlstate::SYNTAX_ERROR
    } else if mentions_table(message) && lower.contains("not found") {
        sqlstate::UNDEFINED_TABLE
    } else if lower.contains("no field named")
        || lower.contains("column") && lower.contains("not found")
    {
        sqlstate::UNDEFINED_COLUMN
    } else if lower.contains("invalid function") || lower.contains("no function matches") {
        sqlstate::UNDEFINED_FUNCTION
    } else if lower.contains("cohort runs queries") || lower.contains("not supported") {
        sqlstate::FEATURE_NOT_SUPPORTED
    } else {
        sqlstate::SYNTAX_ERROR
    }
}

fn mentions_table(message: &str) -> bool {
    message.to_ascii_lowercase().contains("table")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(status: Status) -> String {
        match status_error(&status) {
            PgWireError::UserError(info) => info.code,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn statuses_map_to_the_sqlstates_drivers_act_on() {
        let cases = [
            (Status::permission_denied("needs the admin role"), "42501"),
            (Status::deadline_exceeded("statement timeout"), "57014"),
            (Status::cancelled("cancelled"), "57014"),
            (Status::resource_exhausted("queue full"), "53000"),
            (
                Status::invalid_argument(
                    "Error during planning: table 'cohort.public.nope' not found",
                ),
                "42P01",
            ),
            (
                Status::invalid_argument("Schema error: No field named nope."),
                "42703",
            ),
            (
                Status::invalid_argument("sql parser error: Expected: an expression, found: EOF"),
                "42601",
            ),
            (
                Status::invalid_argument("statement nests more than 1200 levels deep (max_depth)"),
                "54001",
            ),
            (Status::internal("boom"), "XX000"),
        ];
        for (status, expected) in cases {
            let message = status.message().to_string();
            assert_eq!(code(status), expected, "{message}");
        }
    }
}
