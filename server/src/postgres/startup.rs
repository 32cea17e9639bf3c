//! Connection startup: the database name, then the password, checked by the same
//! [`Authenticator`] as Flight SQL (a configured user's password, or an API token given as the
//! password with any user name), under the same failed-login throttle.
//!
//! The password arrives in cleartext (PostgreSQL's `password` method): users' passwords are
//! stored as Argon2 hashes, from which no SCRAM verifier can be derived. When TLS is
//! configured every connection must use it (as on the Flight SQL port, which speaks only TLS
//! then), and `cohort serve` refuses to listen beyond loopback with `[auth]` but without TLS.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::{
    ClientInfo, METADATA_DATABASE, METADATA_USER, PgWireConnectionState, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::connections::Connections;
use super::errors::{fatal, sqlstate};
use super::session::SERVER_VERSION;
use crate::auth::{Authenticator, Principal};

/// The only database: the store's catalog.
pub const DATABASE: &str = cohort_engine::tables::CATALOG;

pub struct Startup {
    authenticator: Arc<Authenticator>,
    connections: Connections,
    parameters: DefaultServerParameterProvider,
    keys: RandomPidSecretKeyGenerator,
    /// Whether connections must use TLS (TLS is configured).
    require_tls: bool,
}

impl Startup {
    pub fn new(authenticator: Arc<Authenticator>, connections: Connections, tls: bool) -> Self {
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = SERVER_VERSION.to_string();
        parameters.is_superuser = false;
        parameters.time_zone = "UTC".to_string();
        Self {
            authenticator,
            connections,
            parameters,
            keys: RandomPidSecretKeyGenerator::default(),
            require_tls: tls,
        }
    }

    /// Logs `principal` in: its cancel key, its registration, then ReadyForQuery.
    async fn accept<C>(&self, client: &mut C, principal: Principal) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (pid, secret) = self.keys.generate(client);
        let registered = self.connections.register(pid, &secret);
        client.set_pid_and_secret_key(pid, secret);
        tracing::info!(
            principal = %principal.name,
            peer = %client.socket_addr(),
            tls = client.is_secure(),
            "PostgreSQL client connected"
        );
        client.session_extensions().insert(principal);
        client.session_extensions().insert(registered);
        finish_authentication(client, &self.parameters).await
    }
}

fn check_database<C: ClientInfo>(client: &C) -> PgWireResult<()> {
    match client.metadata().get(METADATA_DATABASE) {
        Some(database) if database != DATABASE => Err(fatal(
            sqlstate::INVALID_CATALOG_NAME,
            format!(
                "database \"{database}\" does not exist (Cohort serves one database, \"{DATABASE}\")"
            ),
        )),
        _ => Ok(()),
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                check_database(client)?;
                if self.require_tls && !client.is_secure() {
                    return Err(fatal(
                        sqlstate::INVALID_AUTHORIZATION,
                        "this server takes connections over TLS only: connect with sslmode=require",
                    ));
                }
                if !self.authenticator.is_enabled() {
                    return self.accept(client, Principal::anonymous()).await;
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::CleartextPassword,
                    ))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(password) => {
                let password = password.into_password()?;
                let user = client
                    .metadata()
                    .get(METADATA_USER)
                    .cloned()
                    .unwrap_or_default();
                let peer = client.socket_addr().ip();
                match self
                    .authenticator
                    .login(&user, &password.password, Some(peer))
                    .await
                {
                    Ok(Some(principal)) => return self.accept(client, principal).await,
                    Ok(None) => {
                        return Err(fatal(
                            sqlstate::INVALID_PASSWORD,
                            format!("password authentication failed for user \"{user}\""),
                        ));
                    }
                    Err(status) => {
                        return Err(fatal(sqlstate::TOO_MANY_CONNECTIONS, status.message()));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}
