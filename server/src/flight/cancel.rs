//! The `CancelFlightInfo` action (what ADBC's cancel sends): stops the queries a FlightInfo's
//! tickets name, or keeps their DoGets from starting.

use arrow_flight::{Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus};
use prost::Message;
use tonic::Status;

use super::codec::ticket_handle;
use crate::limits::Governor;
use crate::status::decode_status;

/// Cohort's FlightInfos have one endpoint; a request naming more than this is not one of ours.
const MAX_ENDPOINTS: usize = 16;

/// Cancels what `action` names and returns the action's result body.
pub fn cancel_flight_info(governor: &Governor, action: Action) -> Result<bytes::Bytes, Status> {
    let cancel = CancelFlightInfoRequest::decode(action.body)
        .map_err(|e| decode_status("CancelFlightInfo request", e))?;
    let info = cancel
        .info
        .ok_or_else(|| Status::invalid_argument("CancelFlightInfo without a FlightInfo"))?;
    if info.endpoint.len() > MAX_ENDPOINTS {
        return Err(Status::invalid_argument(format!(
            "CancelFlightInfo names {} endpoints; Cohort's FlightInfos have at most {MAX_ENDPOINTS}",
            info.endpoint.len()
        )));
    }
    let mut query_ids = Vec::new();
    for endpoint in &info.endpoint {
        let Some(ticket) = &endpoint.ticket else {
            continue;
        };
        if let Some(handle) = ticket_handle(&ticket.ticket)?
            && !handle.query_id.is_empty()
        {
            query_ids.push(handle.query_id);
        }
    }
    let status = if query_ids.is_empty() {
        CancelStatus::NotCancellable
    } else {
        for id in &query_ids {
            let running = governor.cancel(id);
            tracing::info!(query_id = %id, running, "query cancelled");
        }
        CancelStatus::Cancelled
    };
    let result = CancelFlightInfoResult {
        status: status as i32,
    };
    Ok(result.encode_to_vec().into())
}
