//! The admin HTTP API (axum, on `[admin] listen`, never on a SIP port) and what it shares
//! with the SIP core.
//!
//! It owns:
//!
//! * [`Ops`]: the run-time state the core reads on its hot path without locks — the drain
//!   flag and the [`Metrics`] counters — reached through `Config::ops`.
//! * [`start`]: binding the listener on the main runtime and serving the routes of
//!   [`api`]. It refuses a non-loopback address when no bearer token is configured.
//!
//! The API never talks to the SIP thread: registrations are read from the store's
//! `location/` keyspace (the registrar writes it behind, within about 100 ms), presence and
//! message history from the plugins' documented keyspaces, plugin state from the atomics the
//! plugin host keeps. Store reads block, so they run on the blocking pool.

pub mod api;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;

use crate::config::Config;
use crate::media::MediaEngine;
use crate::metrics::Metrics;
use crate::plugins::services::PluginShared;
use crate::store::Store;

/// State shared by the core (which reads it per request) and the admin API (which sets it).
#[derive(Debug, Default)]
pub struct Ops {
    draining: AtomicBool,
    /// The process's counters.
    pub metrics: Metrics,
    /// The webhooks, once started (`[webhooks] urls` set).
    webhooks: std::sync::OnceLock<crate::webhooks::Webhooks>,
}

impl Ops {
    /// True while the server drains: new out-of-dialog requests and registrations get 503.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts (true) or ends (false) draining.
    pub fn set_draining(&self, on: bool) {
        self.draining.store(on, Ordering::Relaxed);
    }

    /// Starts the webhooks of `config` on the current runtime (once; later calls do nothing).
    pub fn start_webhooks(self: &Arc<Self>, config: &crate::webhooks::WebhooksConfig) {
        if self.webhooks.get().is_none() {
            if let Some(w) = crate::webhooks::Webhooks::start(config, self.clone()) {
                let _ = self.webhooks.set(w);
            }
        }
    }

    /// Stops the webhooks' delivery tasks.
    pub fn stop_webhooks(&self) {
        if let Some(w) = self.webhooks.get() {
            w.stop();
        }
    }

    /// Whether events go anywhere (callers skip building them otherwise).
    pub fn webhooks_on(&self) -> bool {
        self.webhooks.get().is_some()
    }

    /// Whether an event of `kind` raised now goes anywhere (webhooks on and taking it).
    pub fn event_taken(&self, kind: &str) -> bool {
        self.webhooks.get().is_some_and(|w| w.takes(kind))
    }

    /// Raises webhook event `kind` from `source` with `data` (a JSON object as text). Never
    /// waits; a no-op without webhooks.
    pub fn event(&self, kind: &str, source: &str, data: &str) {
        if let Some(w) = self.webhooks.get() {
            w.emit(kind, source, data);
        }
    }
}

/// What the handlers read.
#[derive(Debug)]
pub(crate) struct AdminState {
    pub(crate) config: Arc<Config>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) plugins: Vec<Arc<PluginShared>>,
    pub(crate) media: Option<MediaEngine>,
    pub(crate) started: Instant,
}

/// A running admin API.
#[derive(Debug)]
pub struct AdminServer {
    /// The bound address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Stops serving (open requests are dropped).
    pub fn stop(self) {
        self.task.abort();
    }
}

/// Why the admin API would be unsafe to start, if it would be.
pub fn check_exposure(config: &crate::config::AdminConfig) -> anyhow::Result<()> {
    if let Some(addr) = config.listen {
        let no_token = config.token.as_deref().is_none_or(str::is_empty);
        anyhow::ensure!(
            !no_token || addr.ip().is_loopback(),
            "[admin] listen = {addr} is not a loopback address and [admin] token is not set: \
             refusing to serve the admin API unauthenticated"
        );
    }
    Ok(())
}

/// Binds `[admin] listen` and serves the API on the current (main) runtime. `None` when no
/// address is configured.
pub(crate) async fn start(
    config: Arc<Config>,
    store: Arc<dyn Store>,
    plugins: Vec<Arc<PluginShared>>,
    media: Option<MediaEngine>,
) -> anyhow::Result<Option<AdminServer>> {
    let Some(listen) = config.admin.listen else {
        return Ok(None);
    };
    check_exposure(&config.admin)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the admin API [admin] listen = {listen}"))?;
    let addr = listener.local_addr()?;
    let state = Arc::new(AdminState {
        config,
        store,
        plugins,
        media,
        started: Instant::now(),
    });
    let app = api::router(state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the admin API stopped");
        }
    });
    tracing::info!(%addr, "admin API listening");
    Ok(Some(AdminServer { addr, task }))
}
