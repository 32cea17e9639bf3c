//! `cohort sql --connect`: the same statement over Flight SQL to a running server, and the
//! `cohort auth` helpers that create the credentials such a server checks.

use std::io::Read;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::config::{AuthCommand, SqlArgs};

pub async fn run_sql(url: &str, args: &SqlArgs) -> anyhow::Result<(SchemaRef, Vec<RecordBatch>)> {
    let (address, tls) = if let Some(rest) = url.strip_prefix("grpc+tls://") {
        (format!("https://{rest}"), true)
    } else if let Some(rest) = url.strip_prefix("grpc://") {
        (format!("http://{rest}"), false)
    } else {
        (url.to_string(), url.starts_with("https://"))
    };
    let mut endpoint = Endpoint::from_shared(address.clone())
        .map_err(|e| anyhow::anyhow!("invalid server URL '{url}': {e}"))?;
    if tls {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &args.tls_ca {
            let pem = std::fs::read(ca)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", ca.display()))?;
            config = config.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| anyhow::anyhow!("TLS: {e}"))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {url}: {e}"))?;
    let mut client = FlightSqlServiceClient::new(channel);
    if let Some(token) = &args.token {
        client.set_token(token.clone());
    } else if let Some(user) = &args.user {
        let password = std::env::var("COHORT_PASSWORD").map_err(|_| {
            anyhow::anyhow!("--user needs the password in the COHORT_PASSWORD environment variable")
        })?;
        client
            .handshake(user, &password)
            .await
            .map_err(flight_error)?;
    }
    let info = client
        .execute(args.sql.clone(), None)
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

/// `cohort auth ...`: prints config entries; the secrets themselves are never stored.
pub fn auth_command(command: AuthCommand) -> anyhow::Result<()> {
    match command {
        AuthCommand::HashPassword { user, role } => {
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password)?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.len() < 8 {
                anyhow::bail!("refusing a password shorter than 8 characters");
            }
            let hash = crate::auth::hash_password(password).map_err(anyhow::Error::msg)?;
            println!(
                "[[auth.users]]\nname = {user:?}\nrole = \"{}\"\npassword_hash = {hash:?}",
                role.name()
            );
        }
        AuthCommand::NewToken { name, role } => {
            let (token, hash) = crate::auth::new_api_token();
            eprintln!("token (shown once; give it to the client as a bearer token): {token}");
            println!(
                "[[auth.tokens]]\nname = {name:?}\nrole = \"{}\"\ntoken_hash = {hash:?}",
                role.name()
            );
        }
    }
    Ok(())
}
