//! `cohort serve`: Flight SQL, the admin service, gRPC health and reflection on one port.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use arrow_flight::flight_service_server::FlightServiceServer;
use cohort_engine::Engine;
use cohort_engine::demo::DemoOptions;
use cohort_proto::v1::activation_service_server::ActivationServiceServer;
use cohort_proto::v1::admin_service_server::AdminServiceServer;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use cohort_engine::segments::scheduler::{Scheduler, SchedulerConfig, SystemClock};

use crate::activation::CohortActivationService;
use crate::admin::CohortAdminService;
use crate::auth::{AuthLayer, Authenticator};
use crate::config::Settings;
use crate::flight::CohortFlightSqlService;
use crate::limits::Governor;

/// Bulk ingest and parameter batches arrive as single gRPC messages; allow large ones.
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// How long requests in flight may take to finish after SIGTERM or Ctrl-C.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// How often the store is checked for segment versions other processes committed (for
/// Subscribe); this server's own runs are announced at once.
const SEGMENT_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

pub async fn serve(settings: Settings, demo: bool, progress: &dyn Fn(u64)) -> anyhow::Result<()> {
    let authenticator = Arc::new(Authenticator::new(&settings.auth).map_err(anyhow::Error::msg)?);
    check_exposure(&settings, authenticator.is_enabled())?;
    let tls = settings.tls.as_ref().map(tls_config).transpose()?;
    // Bound before the store is opened: an address in use fails before anything is created.
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let address: SocketAddr = listener.local_addr()?;
    let pg_listener = match settings.pg_listen {
        Some(pg_address) => Some(TcpListener::bind(pg_address).await.with_context(|| {
            format!(
                "cannot listen on {pg_address} for the PostgreSQL endpoint: pass \
                 --pg-listen HOST:PORT for another address, or --pg-listen off"
            )
        })?),
        None => None,
    };

    let engine = Arc::new(Engine::open(settings.engine.clone()).await?);
    if demo {
        if engine.store().is_empty().await? {
            tracing::info!("store is empty: writing the demo data set");
            let report = engine.write_demo(DemoOptions::default(), progress).await?;
            tracing::info!(
                events = report.events,
                profiles = report.profiles,
                "demo data written"
            );
        } else {
            tracing::info!("store already holds data: --demo leaves it as it is");
        }
    }

    // Runs that were going when the process last stopped will never finish.
    engine.fail_interrupted_runs().await?;

    let governor = Governor::new(settings.limits.clone());
    let flight = FlightServiceServer::new(CohortFlightSqlService::new(
        Arc::clone(&engine),
        Arc::clone(&authenticator),
        Arc::clone(&governor),
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let admin = AdminServiceServer::new(CohortAdminService::new(Arc::clone(&engine)));
    let activation = ActivationServiceServer::new(CohortActivationService::new(
        Arc::clone(&engine),
        Arc::clone(&governor),
    ));
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<FlightServiceServer<CohortFlightSqlService>>()
        .await;
    health_reporter
        .set_serving::<AdminServiceServer<CohortAdminService>>()
        .await;
    health_reporter
        .set_serving::<ActivationServiceServer<CohortActivationService>>()
        .await;
    // v1 and v1alpha: grpcio-reflection and older grpcurl ask only for v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(cohort_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let reflection = reflection().build_v1()?;

    let shutdown = CancellationToken::new();
    tokio::spawn(ShutdownSignals::install().wait(shutdown.clone()));
    let scheduler = tokio::spawn(
        Scheduler::new(
            Arc::clone(&engine),
            Arc::new(SystemClock),
            SchedulerConfig::default(),
            engine.scheduler_wake(),
        )
        .run(shutdown.clone()),
    );
    tokio::spawn({
        let (engine, stop) = (Arc::clone(&engine), shutdown.clone());
        async move {
            engine
                .watch_segment_versions(SEGMENT_WATCH_INTERVAL, stop)
                .await
        }
    });

    let scheme = if tls.is_some() { "grpc+tls" } else { "grpc" };
    tracing::info!(
        address = %address,
        store = %cohort_engine::store::redact(engine.store().root()),
        tls = tls.is_some(),
        auth = authenticator.is_enabled(),
        memory_limit = %engine
            .config()
            .memory_limit
            .map_or_else(|| "unlimited".to_string(), |bytes| format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)),
        "Cohort Flight SQL server listening"
    );
    // Scripts and tests read the bound address (useful with port 0) from this line.
    println!("cohort listening on {scheme}://{address}");
    if let Some(pg_listener) = pg_listener {
        let pg_address = pg_listener.local_addr()?;
        let pg_tls = settings
            .tls
            .as_ref()
            .map(crate::postgres::tls_acceptor)
            .transpose()?;
        let handlers = Arc::new(crate::postgres::Handlers::new(
            Arc::clone(&engine),
            Arc::clone(&authenticator),
            Arc::clone(&governor),
            pg_tls.is_some(),
        ));
        tracing::info!(address = %pg_address, tls = pg_tls.is_some(), "Cohort PostgreSQL endpoint listening");
        println!(
            "cohort postgres listening on postgres://{pg_address}/{}",
            crate::postgres::DATABASE
        );
        tokio::spawn(crate::postgres::serve(
            pg_listener,
            pg_tls,
            handlers,
            shutdown.clone(),
        ));
    }

    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .context("invalid TLS configuration")?;
    }
    let server = builder
        .layer(AuthLayer::new(authenticator))
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(flight)
        .add_service(admin)
        .add_service(activation)
        .serve_with_incoming_shutdown(
            without_delay(TcpListenerStream::new(listener)),
            shutdown.clone().cancelled_owned(),
        );
    // After a shutdown signal, requests in flight get a grace period; clients that keep idle
    // connections open must not hold the process forever.
    let drain_deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = server => result.context("server failed")?,
        () = drain_deadline => tracing::warn!(
            grace_secs = SHUTDOWN_GRACE.as_secs(),
            "connections still open after the grace period: closing them"
        ),
    }
    // Waits for segment runs in flight (bounded by the scheduler's grace period).
    if let Err(e) = scheduler.await {
        tracing::warn!(error = %e, "segment scheduler stopped abnormally");
    }
    tracing::info!("server stopped");
    Ok(())
}

/// Refuses to expose the store to the network without authentication, or credentials to the
/// network without TLS, unless told to; for the Flight SQL and the PostgreSQL addresses alike.
fn check_exposure(settings: &Settings, auth_enabled: bool) -> anyhow::Result<()> {
    for address in std::iter::once(settings.listen).chain(settings.pg_listen) {
        check_address_exposure(settings, address, auth_enabled)?;
    }
    Ok(())
}

fn check_address_exposure(
    settings: &Settings,
    address: SocketAddr,
    auth_enabled: bool,
) -> anyhow::Result<()> {
    if address.ip().is_loopback() {
        return Ok(());
    }
    let tls = settings.tls.is_some();
    if auth_enabled && tls {
        return Ok(());
    }
    if settings.insecure {
        if auth_enabled {
            tracing::warn!(
                address = %address,
                "serving without TLS on a non-loopback address (--insecure): passwords and tokens travel in the clear unless a TLS proxy sits in front"
            );
        } else {
            tracing::warn!(
                address = %address,
                "serving without authentication on a non-loopback address (--insecure): anyone who can reach it can read and change all data"
            );
        }
        return Ok(());
    }
    if auth_enabled {
        anyhow::bail!(
            "refusing to listen on {address} without TLS: passwords and tokens would travel in the clear; \
             give --tls-cert and --tls-key (see the README's SECURITY section), listen on 127.0.0.1, \
             or pass --insecure (e.g. behind a TLS-terminating proxy)"
        )
    }
    anyhow::bail!(
        "refusing to listen on {address} without authentication: configure [auth] users or tokens \
         (see the README's SECURITY section), listen on 127.0.0.1, or pass --insecure"
    )
}

fn tls_config(
    config: &crate::config::TlsConfig,
) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).with_context(|| format!("cannot read TLS {what} {}", path.display()))
    };
    let certificate = read(&config.cert, "certificate")?;
    if let Some(problem) = crate::tls::server_certificate_problem(&certificate, &config.cert)? {
        // Only rustls-based clients refuse some of these (OpenSSL, Go and Java accept a CA
        // certificate as the server's): a warning, not a refusal to start.
        tracing::warn!("{problem}");
    }
    let identity = tonic::transport::Identity::from_pem(certificate, read(&config.key, "key")?);
    let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &config.client_ca {
        tls = tls
            .client_ca_root(tonic::transport::Certificate::from_pem(read(
                ca,
                "client CA",
            )?))
            .client_auth_optional(config.client_auth_optional);
    }
    Ok(tls)
}

/// Watches SIGTERM and Ctrl-C. Installed before the server announces its address: a signal
/// that arrives before the watch exists would kill the process instead of stopping it cleanly.
struct ShutdownSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let watch = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(signal) => Some(signal),
                Err(e) => {
                    tracing::warn!(error = %e, signal = name, "cannot watch the signal");
                    None
                }
            };
            Self {
                term: watch(SignalKind::terminate(), "SIGTERM"),
                interrupt: watch(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    async fn wait(self, shutdown: CancellationToken) {
        #[cfg(unix)]
        {
            async fn received(signal: Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = received(self.term) => {}
                () = received(self.interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down: finishing requests in flight");
        shutdown.cancel();
    }
}

/// Accepted connections with Nagle's algorithm off. tonic sets TCP_NODELAY only on listeners
/// it binds itself; on ours a small response (a FlightInfo, a one-row result) waited for the
/// client's delayed ACK, about 40 ms per message: a `SELECT 1` over ADBC took 95 ms, 5 of them
/// in the server.
fn without_delay(
    incoming: TcpListenerStream,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    incoming.map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}
