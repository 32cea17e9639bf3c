//! The one place where errors become gRPC statuses, with the log level each deserves:
//! the caller's mistakes are logged quietly, the server's own failures loudly.

use arrow::error::ArrowError;
use cohort_engine::EngineError;
use datafusion::error::DataFusionError;
use tonic::Status;

pub fn engine_status(error: EngineError) -> Status {
    let status = match &error {
        EngineError::Config(m) => Status::failed_precondition(m.clone()),
        EngineError::InvalidInput { .. }
        | EngineError::Read { .. }
        | EngineError::InvalidStatement(_) => Status::invalid_argument(error.to_string()),
        EngineError::Unsupported(_) => Status::unimplemented(error.to_string()),
        EngineError::TableNotFound(_) => Status::not_found(error.to_string()),
        EngineError::LimitExceeded(_) => Status::invalid_argument(error.to_string()),
        EngineError::PermissionDenied(_) => Status::permission_denied(error.to_string()),
        EngineError::ResourcesExhausted(_) => Status::resource_exhausted(error.to_string()),
        // Not UNAVAILABLE: clients retry that on their own, which is what must not happen.
        EngineError::CommitOutcomeUnknown(_) => Status::unknown(error.to_string()),
        EngineError::DataFusion(e) => return datafusion_status(e),
        EngineError::Delta(_)
        | EngineError::Arrow(_)
        | EngineError::Io(_)
        | EngineError::Corrupt(_) => Status::internal(error.to_string()),
    };
    log(&status);
    status
}

pub fn datafusion_status(error: &DataFusionError) -> Status {
    let root = error.find_root();
    let message = cohort_engine::error::datafusion_message(error);
    let status = match root {
        DataFusionError::Plan(m) if m.contains("not found") => Status::not_found(message),
        DataFusionError::SQL(..) | DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => {
            Status::invalid_argument(message)
        }
        DataFusionError::NotImplemented(_) => Status::unimplemented(message),
        DataFusionError::ResourcesExhausted(_) => Status::resource_exhausted(message),
        DataFusionError::Execution(_) => Status::invalid_argument(message),
        DataFusionError::ArrowError(e, _) => return arrow_status(e),
        _ if cohort_engine::error::is_user_datafusion_error(error) => {
            Status::invalid_argument(message)
        }
        _ => Status::internal(message),
    };
    log(&status);
    status
}

pub fn arrow_status(error: &ArrowError) -> Status {
    let status = match error {
        ArrowError::CastError(_)
        | ArrowError::ParseError(_)
        | ArrowError::InvalidArgumentError(_)
        | ArrowError::DivideByZero
        | ArrowError::SchemaError(_)
        | ArrowError::IpcError(_) => {
            Status::invalid_argument(cohort_engine::error::arrow_message(error))
        }
        _ => Status::internal(cohort_engine::error::arrow_message(error)),
    };
    log(&status);
    status
}

pub fn decode_status(what: &str, error: impl std::fmt::Display) -> Status {
    let status = Status::invalid_argument(format!("malformed {what}: {error}"));
    log(&status);
    status
}

fn log(status: &Status) {
    match status.code() {
        tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::DataLoss => {
            tracing::error!(code = ?status.code(), message = status.message(), "request failed")
        }
        _ => tracing::debug!(code = ?status.code(), message = status.message(), "request rejected"),
    }
}
