//! The PostgreSQL wire endpoint, beside Flight SQL, so that psql, JDBC, SQLAlchemy and the BI
//! tools that speak PostgreSQL first (Superset, Metabase, Grafana, Tableau) connect unchanged.
//!
//! The protocol is `pgwire`'s; what happens on it is Cohort's: logins go through the same
//! [`Authenticator`] and throttle as Flight SQL ([`startup`]), every statement through the same
//! admission path and engine statement rules ([`query`]), results are encoded by `arrow-pg`,
//! and `pg_catalog` comes from `datafusion-pg-catalog` (in the engine's query sessions).

mod connections;
pub mod errors;
mod query;
pub mod session;
mod startup;
mod types;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use cohort_engine::{Dialect, Engine};
use pgwire::api::auth::StartupHandler;
use pgwire::api::cancel::CancelHandler;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::{ClientInfo, ErrorHandler, PgWireServerHandlers};
use pgwire::error::PgWireError;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::TlsConfig;
use crate::limits::Governor;
use crate::statements::Statements;
use connections::Connections;
use query::{Queries, QueryHandler};
use startup::Startup;

pub use startup::DATABASE;

/// PostgreSQL connections open at once; more are closed at once (each holds buffers and
/// possibly a statement slot).
pub const MAX_CONNECTIONS: usize = 512;

/// The handlers of every connection.
pub struct Handlers {
    startup: Arc<Startup>,
    queries: Arc<QueryHandler>,
    connections: Arc<Connections>,
}

impl Handlers {
    pub fn new(
        engine: Arc<Engine>,
        authenticator: Arc<Authenticator>,
        governor: Arc<Governor>,
        tls: bool,
    ) -> Self {
        let connections = Connections::new(Arc::clone(&governor));
        let statements = Statements::in_dialect(engine, governor, Dialect::Postgres);
        Self {
            startup: Arc::new(Startup::new(authenticator, connections.clone(), tls)),
            queries: Arc::new(QueryHandler::new(Arc::new(Queries::new(statements)))),
            connections: Arc::new(connections),
        }
    }
}

struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C: ClientInfo>(&self, client: &C, error: &mut PgWireError) {
        tracing::debug!(peer = %client.socket_addr(), %error, "PostgreSQL statement failed");
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.queries)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.queries)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.startup)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.connections)
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LogErrors)
    }
}

/// The TLS acceptor for `config` (the same certificate and client CA as Flight SQL).
pub fn tls_acceptor(config: &TlsConfig) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certificates = CertificateDer::pem_file_iter(&config.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read TLS certificate {}", config.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&config.key)
        .with_context(|| format!("cannot read TLS key {}", config.key.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let builder = match &config.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("cannot read TLS client CA {}", ca.display()))?
            {
                roots.add(certificate?)?;
            }
            let mut verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            if config.client_auth_optional {
                verifier = verifier.allow_unauthenticated();
            }
            builder.with_client_cert_verifier(verifier.build()?)
        }
    };
    let mut server = builder
        .with_single_cert(certificates, key)
        .context("TLS certificate and key do not match")?;
    server.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// Accepts PostgreSQL connections on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handlers: Arc<Handlers>,
    shutdown: CancellationToken,
) {
    let open = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return,
        };
        let (socket, peer): (_, SocketAddr) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "PostgreSQL accept failed");
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            tracing::warn!(%peer, "PostgreSQL connection refused: {MAX_CONNECTIONS} are open");
            continue;
        };
        let (tls, handlers) = (tls.clone(), Arc::clone(&handlers));
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = pgwire::tokio::process_socket(socket, tls, handlers).await {
                tracing::debug!(%peer, error = %e, "PostgreSQL connection ended with an error");
            }
        });
    }
}
