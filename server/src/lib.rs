//! Usher's server: the organizer API and the sync endpoints gates talk to.
//!
//! Start it with [`build`] then [`App::run_until_stopped`]; tests bind port 0 and read
//! [`App::port`]. Storage is PostgreSQL when `DATABASE_URL` is set, else an embedded SQLite file.
//!
//! # Layout
//! Imports run downward only: `http` → `service` → `store` / `live` → `domain`. The admission
//! and merge rules themselves are pure functions in `sync_protocol`.
//! - [`http`]: the router, `/api/v1` and `/sync/v1` handlers, extractors, problem+json, OpenAPI,
//!   health and metrics.
//! - [`service`]: use cases (push and merge, online redeem, enrollment, tickets, users) and the
//!   unit of work.
//! - [`store`]: all SQL, over PostgreSQL or SQLite behind one [`store::Db`] handle.
//! - [`live`]: live fan-out to SSE clients, long polls and other server processes.
//! - [`domain`]: errors, roles and tokens, keys, event settings: no HTTP, no SQL.
//! - [`import`]: the streaming CSV participant parser.
//! - [`settings`]: flags/env ([`Settings`]), secrets masked.
//! - `testing`: fresh PostgreSQL databases for the tests and benchmarks of every crate.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{MatchedPath, Request};
use axum::http::HeaderName;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub mod domain;
pub mod http;
pub mod import;
pub mod live;
pub mod service;
pub mod settings;
pub mod store;
pub mod telemetry;
#[doc(hidden)]
pub mod testing;
pub mod tls;

pub use service::AppState;
pub use settings::Settings;
pub use store::Db;

/// A built server: database migrated, admin bootstrapped, listener bound.
pub struct App {
    listener: TcpListener,
    /// `Some` when the listener serves HTTPS (`--tls-cert`/`--tls-key`).
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    router: axum::Router,
    state: AppState,
    /// How often the alert evaluator runs.
    alert_tick: Duration,
    /// The one-time password of the admin created on this start, if any (also printed).
    pub initial_admin_password: Option<String>,
}

/// Connects the database (running migrations), loads or creates the master key, creates the
/// first admin when there are no users, and binds the listener.
pub async fn build(settings: Settings) -> anyhow::Result<App> {
    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            settings.data_dir.display()
        )
    })?;
    // Before anything else: a bad certificate or key stops the start with a message naming
    // the option, not after the database migrated.
    let tls = tls::from_settings(&settings)?;
    let master = domain::crypto::MasterKey::load(&settings)?;
    let db = Db::connect(&settings).await?;
    service::users::check_master_key(&db, &master).await?;
    // Rows written before personal data was encrypted: sealed once, in batches (idempotent).
    let sealed = store::personal::backfill(&db, master.personal()).await?;
    if sealed > 0 {
        tracing::info!(
            participants = sealed,
            "encrypted the personal data of existing participants"
        );
    }
    let initial_admin_password =
        service::users::bootstrap_admin(&db, &settings.admin_email).await?;
    if let Some(password) = &initial_admin_password {
        // Deliberately stdout and not the log: the password must not end up in log storage.
        println!(
            "\nCreated the first admin account.\n  e-mail:   {}\n  password: {password}\n\
             This password is shown only once; store it now.\n",
            settings.admin_email
        );
    }
    let mail = service::mail::Config::from_settings(&settings)?;
    let wallet = service::wallet::Config::from_settings(&settings)?;
    let state = AppState::with_wallet(
        db,
        master,
        service::webhooks::Config::from_settings(&settings),
        mail,
        wallet,
    );
    let router = app_router(state.clone());
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    Ok(App {
        listener,
        tls,
        router,
        state,
        alert_tick: Duration::from_millis(settings.alert_tick_ms),
        initial_admin_password,
    })
}

/// The router with its middleware: request ids, tracing spans named by route template,
/// metrics.
pub fn app_router(state: AppState) -> axum::Router {
    let x_request_id = HeaderName::from_static("x-request-id");
    http::ops::recorder();
    http::router(state)
        .layer(axum::middleware::from_fn(http::ops::track))
        .layer(
            tower::ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(
                    x_request_id.clone(),
                    MakeRequestUuid,
                ))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
                    let route = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map(MatchedPath::as_str)
                        .unwrap_or("unmatched");
                    let request_id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!(
                        "http",
                        method = %req.method(),
                        route,
                        request_id,
                    )
                }))
                .layer(PropagateRequestIdLayer::new(x_request_id)),
        )
}

impl App {
    /// The port actually bound (useful with port 0).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether the listener serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn db(&self) -> &Db {
        &self.state.db
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then drains in-flight requests and closes the pool.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let db = self.state.db.clone();
        let stopping = self.state.stopping.clone();
        tracing::info!(
            addr = %self.listener.local_addr()?,
            tls = self.tls.is_some(),
            "listening"
        );
        let webhooks = tokio::spawn(service::webhooks::run(self.state.clone()));
        let mail = tokio::spawn(service::mail::run(self.state.clone()));
        let alerts = tokio::spawn(service::alerts::run(self.state.clone(), self.alert_tick));
        let retention = tokio::spawn(service::retention::run(self.state.clone()));
        // Graceful shutdown waits for open connections; event streams and long polls would hold
        // it forever, so they end as soon as shutdown starts (`stopping`).
        let shutdown = async move {
            shutdown.await;
            tracing::info!("shutdown requested");
            stopping.cancel();
        };
        match self.tls {
            None => {
                axum::serve(
                    self.listener,
                    self.router
                        .into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(shutdown)
                .await
            }
            Some(config) => {
                axum::serve(
                    tls::TlsListener::new(self.listener, config)?,
                    tls::WithClientAddr(self.router),
                )
                .with_graceful_shutdown(shutdown)
                .await
            }
        }
        .context("server error")?;
        // The webhook worker stops claiming at once; attempts in flight finish (bounded by the
        // receiver timeout).
        tokio::time::timeout(Duration::from_secs(30), webhooks)
            .await
            .ok();
        tokio::time::timeout(Duration::from_secs(30), mail)
            .await
            .ok();
        tokio::time::timeout(Duration::from_secs(10), alerts)
            .await
            .ok();
        tokio::time::timeout(Duration::from_secs(30), retention)
            .await
            .ok();
        tokio::time::timeout(Duration::from_secs(5), db.close())
            .await
            .ok();
        tracing::info!("stopped");
        Ok(())
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown requested");
}

/// `server admin create`: creates a user from a script.
pub async fn admin_create(
    settings: &Settings,
    email: &str,
    password: &str,
    role: domain::auth::Role,
) -> anyhow::Result<()> {
    let db = Db::connect(settings).await?;
    service::users::create(&db, &domain::auth::Actor::system(), email, password, role)
        .await
        .map_err(|e| match e {
            domain::Error::Validation { detail, .. } => anyhow::anyhow!(detail),
            other => anyhow::anyhow!(other.to_string()),
        })?;
    db.close().await;
    Ok(())
}
