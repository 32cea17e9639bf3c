//! `cohort sql --connect`: the same statement over Flight SQL to a running server, and the
//! `cohort auth` helpers that create the credentials such a server checks.

use std::io::{IsTerminal, Read};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use arrow_flight::HandshakeRequest;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use futures::TryStreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use crate::config::{AuthCommand, SqlArgs};

/// A connection to a running server, kept for every statement of a script or shell.
pub struct RemoteClient {
    client: FlightSqlServiceClient<Channel>,
    /// A `grpc://` connection: HTTP/2 failures then often mean the server speaks TLS.
    plaintext: bool,
    /// Whether the server has answered a request (after which a failure is not about TLS).
    answered: bool,
}

impl RemoteClient {
    pub async fn connect(url: &str, args: &SqlArgs) -> anyhow::Result<Self> {
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
        let channel = endpoint.connect().await.map_err(|e| {
            let host = endpoint.uri().host().unwrap_or_default();
            match crate::tls::describe_connect_failure(&e, host) {
                Some(reason) => anyhow::anyhow!("cannot connect to {url}: {reason}"),
                // The reason (refused, unreachable, ...) is in the error's sources.
                None => anyhow::Error::new(e).context(format!("cannot connect to {url}")),
            }
        })?;
        let mut client = FlightSqlServiceClient::new(channel.clone());
        if let Some(token) = &args.token {
            client.set_token(token.clone());
        } else if let Some(user) = &args.user {
            let password = password(user)?;
            client.set_token(handshake(channel, user, &password, !tls).await?);
        }
        Ok(Self {
            client,
            plaintext: !tls,
            answered: false,
        })
    }

    fn failure(&self, error: &FlightError) -> anyhow::Error {
        let first_request = !self.answered;
        plaintext_hint(
            flight_error(error),
            flight_status(error),
            self.plaintext && first_request,
        )
    }

    pub async fn execute(&mut self, sql: &str) -> anyhow::Result<(SchemaRef, Vec<RecordBatch>)> {
        let info = self
            .client
            .execute(sql.to_string(), None)
            .await
            .map_err(|e| self.failure(&e))?;
        self.answered = true;
        let schema = Arc::new(info.clone().try_decode_schema().map_err(arrow_error)?);
        let mut batches = Vec::new();
        for endpoint in info.endpoint {
            let ticket = endpoint
                .ticket
                .ok_or_else(|| anyhow::anyhow!("server returned an endpoint without a ticket"))?;
            let stream = self
                .client
                .do_get(ticket)
                .await
                .map_err(|e| self.failure(&e))?;
            batches.extend(
                stream
                    .try_collect::<Vec<_>>()
                    .await
                    .map_err(|e| self.failure(&e))?,
            );
        }
        Ok((schema, batches))
    }
}

/// `--user`'s password: COHORT_PASSWORD, or asked for on the terminal (not echoed).
fn password(user: &str) -> anyhow::Result<String> {
    if let Ok(password) = std::env::var("COHORT_PASSWORD") {
        return Ok(password);
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "--user needs a password: set COHORT_PASSWORD (standard input is not a terminal \
             to ask on)"
        );
    }
    rpassword::prompt_password(format!("Password for {user}: "))
        .map_err(|e| anyhow::anyhow!("cannot read the password from the terminal: {e}"))
}

/// Basic authentication for a bearer token. arrow-flight's own handshake turns a refusal into
/// the text "Can't handshake", losing the status; this keeps it.
async fn handshake(
    channel: Channel,
    user: &str,
    password: &str,
    plaintext: bool,
) -> anyhow::Result<String> {
    let mut request = tonic::Request::new(futures::stream::iter([HandshakeRequest::default()]));
    let basic = format!(
        "Basic {}",
        BASE64_STANDARD.encode(format!("{user}:{password}"))
    );
    request.metadata_mut().insert(
        "authorization",
        basic
            .parse()
            .map_err(|_| anyhow::anyhow!("the user name cannot be sent in a header"))?,
    );
    let response = FlightServiceClient::new(channel)
        .handshake(request)
        .await
        .map_err(|status| match status.code() {
            Code::Unauthenticated => anyhow::anyhow!(
                "authentication failed: the server did not accept user '{user}' with that password"
            ),
            _ => plaintext_hint(status_error(&status), Some(&status), plaintext),
        })?;
    response
        .metadata()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("the server's handshake returned no bearer token"))
}

/// The server's message: its status travels inside arrow-flight's error types, whose text
/// adds `Tonic error: code: '...', message: "..."` around it.
/// A TLS server answers plain HTTP/2 with bytes tonic reports as a protocol error, a cancelled
/// operation or a bare transport error (whichever hyper sees first): none says why. Such statuses
/// are made by the client's transport and carry its error as their source; a server's never do.
fn plaintext_hint(error: anyhow::Error, status: Option<&Status>, plaintext: bool) -> anyhow::Error {
    let from_transport = status.is_some_and(|status| std::error::Error::source(status).is_some());
    if plaintext && from_transport {
        anyhow::anyhow!(
            "{error}: the server did not answer in plain HTTP/2; if it serves TLS, connect with grpc+tls://"
        )
    } else {
        error
    }
}

fn flight_status(error: &FlightError) -> Option<&Status> {
    match error {
        FlightError::Tonic(status) => Some(status),
        FlightError::ExternalError(inner) => inner.downcast_ref::<Status>(),
        _ => None,
    }
}

fn flight_error(error: &FlightError) -> anyhow::Error {
    if let Some(status) = flight_status(error) {
        return status_error(status);
    }
    match error {
        FlightError::Arrow(arrow) => anyhow::anyhow!(cohort_engine::error::arrow_message(arrow)),
        FlightError::ExternalError(inner) => anyhow::anyhow!("{inner}"),
        other => anyhow::anyhow!("{other}"),
    }
}

fn arrow_error(error: ArrowError) -> anyhow::Error {
    anyhow::anyhow!(cohort_engine::error::arrow_message(&error))
}

fn status_error(status: &Status) -> anyhow::Error {
    let message = cohort_engine::error::one_line(status.message());
    match status.code() {
        Code::Unauthenticated => anyhow::anyhow!(
            "authentication failed: the server needs a valid --token, or --user with COHORT_PASSWORD"
        ),
        Code::Unavailable => anyhow::anyhow!("the server is unavailable: {message}"),
        code if message.is_empty() => anyhow::anyhow!("{}", code.description()),
        _ => anyhow::anyhow!(message),
    }
}

/// `cohort auth ...`: prints config entries; the secrets themselves are never stored.
pub fn auth_command(command: AuthCommand) -> anyhow::Result<()> {
    match command {
        AuthCommand::HashPassword { user, role } => {
            let password = if std::io::stdin().is_terminal() {
                let prompt = |text: &str| {
                    rpassword::prompt_password(text).map_err(|e| {
                        anyhow::anyhow!("cannot read the password from the terminal: {e}")
                    })
                };
                let password = prompt(&format!("New password for {user}: "))?;
                if prompt("Repeat it: ")? != password {
                    anyhow::bail!("the two passwords differ");
                }
                password
            } else {
                let mut password = String::new();
                std::io::stdin().read_to_string(&mut password)?;
                password.trim_end_matches(['\r', '\n']).to_string()
            };
            let password = password.as_str();
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
