//! `cohort sql --connect`: the same statement over Flight SQL to a running server.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::Endpoint;

pub async fn run_sql(url: &str, sql: &str) -> anyhow::Result<(SchemaRef, Vec<RecordBatch>)> {
    let address = url
        .strip_prefix("grpc://")
        .map(|rest| format!("http://{rest}"))
        .unwrap_or_else(|| url.to_string());
    let channel = Endpoint::from_shared(address.clone())
        .map_err(|e| anyhow::anyhow!("invalid server URL '{url}': {e}"))?
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {url}: {e}"))?;
    let mut client = FlightSqlServiceClient::new(channel);
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(flight_error)?;
    let schema = Arc::new(info.clone().try_decode_schema().map_err(flight_error)?);
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint
            .ticket
            .ok_or_else(|| anyhow::anyhow!("server returned an endpoint without a ticket"))?;
        let stream = client.do_get(ticket).await.map_err(flight_error)?;
        batches.extend(
            stream
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        );
    }
    Ok((schema, batches))
}

/// Shows the server's message, not the transport's wrapping of it.
fn flight_error(error: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!(
        "{}",
        error.to_string().trim_start_matches("External error: ")
    )
}
