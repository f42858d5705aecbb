//! Starting and stopping a whole server: open the store, seed users, restore bindings, load
//! and start the plugins, bind the transports and run the core on the SIP thread (one
//! current-thread runtime for every socket task and the core, so a message is read, handled
//! and answered without a cross-thread wake-up), run the store writer, and shut everything
//! down in order (the core and transports first, then the plugins' threads, then the writer).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::config::Config;
use crate::core::Core;
use crate::plugins::Workers;
use crate::registrar::{BindingRecord, Change, Location};
use crate::store::{scan_pages, Namespace, Op, Record, Store};
use crate::transport::{generate_self_signed, TlsContext, Transport, Transports};
use crate::users::{load_users, UserRecord};

/// A running server.
#[derive(Debug)]
pub struct Running {
    /// The bound address of each transport (port 0 in the config becomes the real port).
    pub addrs: HashMap<Transport, SocketAddr>,
    shutdown: watch::Sender<bool>,
    /// The thread running the transports and the core (see [`start`]).
    sip: Option<std::thread::JoinHandle<()>>,
    plugins: Option<Workers>,
    writer: Option<std::thread::JoinHandle<()>>,
    media: Option<(crate::media::MediaEngine, crate::media::EngineTask)>,
    /// The admin HTTP API, when `[admin] listen` is set.
    admin: Option<crate::admin::AdminServer>,
    /// The demo page, when `[web] listen` is set.
    web: Option<crate::web::WebServer>,
    /// Run-time state; its webhook tasks stop with the server.
    ops: Arc<crate::admin::Ops>,
}

impl Running {
    /// Stops accepting, ends the core, flushes pending store writes.
    pub async fn shutdown(mut self) {
        if let Some(admin) = self.admin.take() {
            admin.stop();
        }
        if let Some(web) = self.web.take() {
            web.stop();
        }
        let _ = self.shutdown.send(true);
        if let Some(sip) = self.sip.take() {
            let _ = tokio::task::spawn_blocking(move || sip.join()).await;
        }
        // Media legs end before the plugins' threads stop, so each plugin hears of its own.
        if let Some((engine, task)) = self.media.take() {
            // A panic was logged when the driver panicked.
            let _ = engine.shutdown(task).await;
        }
        if let Some(plugins) = self.plugins.take() {
            let _ = tokio::task::spawn_blocking(move || plugins.stop()).await;
        }
        if let Some(writer) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
        self.ops.stop_webhooks();
    }

    /// The admin API's address, when it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.addr)
    }

    /// The demo page's address, when it is served.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web.as_ref().map(|w| w.addr)
    }

    /// The media engine's UDP address, when it runs.
    pub fn media_addr(&self) -> Option<SocketAddr> {
        self.media.as_ref().map(|(engine, _)| engine.local_addr())
    }

    /// Media legs alive.
    pub fn media_sessions(&self) -> usize {
        self.media
            .as_ref()
            .map_or(0, |(engine, _)| engine.sessions())
    }

    /// What the media engine's own SRTP contexts did (the forwarding fast path's keys), for tests.
    pub fn media_srtp_verify(&self) -> Option<crate::media::SrtpVerify> {
        self.media.as_ref().map(|(engine, _)| engine.srtp_verify())
    }

    /// What the media engine's fast egress did (packets it sealed, repairs), for tests.
    pub fn media_fast_egress(&self) -> Option<crate::media::FastEgress> {
        self.media.as_ref().map(|(engine, _)| engine.fast_egress())
    }

    /// What the media engine's fast ingress did (packets it opened, feedback it sent), for tests.
    pub fn media_fast_ingress(&self) -> Option<crate::media::FastIngress> {
        self.media.as_ref().map(|(engine, _)| engine.fast_ingress())
    }

    /// Debug builds: the media engine's fast egress leaves out every `n`-th packet it seals
    /// (its loss hook, `MediaEngine::drop_fast_egress_every`), for tests.
    #[cfg(debug_assertions)]
    pub fn media_drop_fast_egress_every(&self, n: u64) {
        if let Some((engine, _)) = self.media.as_ref() {
            engine.drop_fast_egress_every(n);
        }
    }

    /// The WebSocket URL clients should use, if a `ws:` listener exists.
    pub fn ws_url(&self) -> Option<String> {
        self.addrs.get(&Transport::Ws).map(|a| format!("ws://{a}"))
    }
}

/// Creates `[[users]]` from the config that the store does not have yet, in one commit (one
/// commit per user made a config with thousands of users take half a minute to start).
pub fn seed_users(config: &Config, store: &dyn Store) -> anyhow::Result<()> {
    let existing = load_users(store)?;
    let mut ops = Vec::new();
    for user in &config.users {
        if !existing.contains_key(&user.name) {
            anyhow::ensure!(
                crate::users::valid_user_name(&user.name),
                "invalid user name {:?} in [[users]]",
                user.name
            );
            let record = UserRecord::new(&user.name, config.realm(), &user.password);
            ops.push(Op::put(
                Namespace::credentials().key(user.name.as_bytes()),
                Record::encode(&record)?,
            ));
        }
    }
    if !ops.is_empty() {
        store.apply_batch(ops)?;
    }
    Ok(())
}

/// Commits the registrar's write-back batches: the core sends one per `[registrar]
/// persist_interval_ms`, each changed binding once (see `registrar`'s module docs), and each
/// is one durable commit. Batches that queued during a commit (a slow disk, or an interval of
/// 0) go together into the next one, in order, so the last write of a key wins.
fn store_writer(store: Arc<dyn Store>, rx: std::sync::mpsc::Receiver<Vec<Change>>) {
    let ns = Namespace::location();
    while let Ok(mut changes) = rx.recv() {
        while let Ok(more) = rx.try_recv() {
            changes.extend(more);
        }
        let ops: Vec<Op> = changes
            .into_iter()
            .map(|change| match change {
                Change::Put { key, value } => Op::put(ns.key(key.as_bytes()), value),
                Change::Delete { key } => Op::delete(ns.key(key.as_bytes())),
            })
            .collect();
        if let Err(e) = store.apply_batch(ops) {
            tracing::error!(error = %e, "persisting bindings failed");
        }
    }
}

/// Starts a server with this configuration and store.
pub async fn start(config: Config, store: Arc<dyn Store>) -> anyhow::Result<Running> {
    let config = Arc::new(config);
    // Before anything starts: an exposed admin API without a token is a configuration error.
    crate::admin::check_exposure(&config.admin)?;
    seed_users(&config, store.as_ref())?;
    let users = load_users(store.as_ref())?;

    let mut location = Location::new();
    let now = Instant::now();
    for page in scan_pages(store.as_ref(), Namespace::location().prefix(), 1024) {
        for (_, value) in page? {
            match Record::decode::<BindingRecord>(&value) {
                Ok(record) => location.restore(record, now),
                Err(e) => tracing::warn!(error = %e, "unreadable binding skipped"),
            }
        }
    }
    // Expired and connection-bound records are deleted by the writer's first commit.
    let mut stale = Vec::new();
    location.take_changes(&mut stale);

    let mut transport_config = config.limits.transport.clone();
    transport_config.connections = config.ops.metrics.connections.clone();
    if let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) {
        if config.tls.self_signed && !(cert.exists() && key.exists()) {
            generate_self_signed(
                &[
                    config.sip.domain.clone(),
                    "localhost".into(),
                    "127.0.0.1".into(),
                ],
                cert,
                key,
            )
            .context("making a self-signed certificate")?;
        }
        transport_config.tls_cert = Some(cert.clone());
        transport_config.tls_key = Some(key.clone());
    }

    let (persist_tx, persist_rx) = std::sync::mpsc::channel();
    if !stale.is_empty() {
        let _ = persist_tx.send(stale);
    }
    let writer_store = store.clone();
    let writer = std::thread::Builder::new()
        .name("huddle-store".into())
        .spawn(move || store_writer(writer_store, persist_rx))
        .context("starting the store writer")?;

    // Plugins start before any socket is bound: a library that does not fit stops start-up
    // before the server is reachable. Loading and `init` block (library initialisers, store
    // I/O), so they run off the runtime's threads. (On an error below, dropping `persist_tx`
    // ends the writer.)
    // The media engine starts before the plugins: they are offered the media capability only
    // when it runs.
    let media = if config.media.enabled {
        let settings = config
            .media
            .settings()
            .map_err(|c| anyhow::anyhow!("[media] codecs: unknown codec {c:?}"))?;
        let listen = settings.listen;
        Some(
            crate::media::MediaEngine::start(settings)
                .await
                .with_context(|| format!("binding the media socket [media] listen = {listen}"))?,
        )
    } else {
        None
    };
    // Webhooks start before the plugins, which may raise events from `init` on.
    config.ops.start_webhooks(&config.webhooks);
    let engine = media.as_ref().map(|(engine, _)| engine.clone());
    let (plugins, workers) = {
        let plugin_config = config.clone();
        let store = store.clone();
        let runtime = tokio::runtime::Handle::current();
        let started = tokio::task::spawn_blocking(move || {
            crate::plugins::start(&plugin_config, store, runtime, engine)
        })
        .await
        .context("starting plugins")
        .and_then(|started| started.map_err(anyhow::Error::from));
        match started {
            Ok(started) => started,
            Err(e) => {
                // The media thread and its socket end with the failed start.
                if let Some((engine, task)) = media {
                    let _ = engine.shutdown(task).await;
                }
                config.ops.stop_webhooks();
                return Err(e);
            }
        }
    };

    // The transports and the core run on one thread of their own, on a current-thread
    // runtime ("huddle-sip"): a datagram or WebSocket message is read, handled and answered
    // without waking another thread, where a multi-threaded runtime spent a fifth of its CPU
    // on cross-thread wake-ups (futex, epoll) between the socket tasks and the core.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (shutdown, shutdown_rx) = watch::channel(false);
    let sip = SipThread {
        config: config.clone(),
        transport_config,
        users,
        location,
        persist: persist_tx,
        plugins,
    };
    let thread = std::thread::Builder::new()
        .name("huddle-sip".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(
                        anyhow::Error::from(e).context("starting the SIP runtime")
                    ));
                    return;
                }
            };
            runtime.block_on(sip.run(shutdown_rx, ready_tx));
        })
        .context("starting the SIP thread");
    let ready = match thread {
        Ok(thread) => match ready_rx.await {
            Ok(Ok(addrs)) => Ok((thread, addrs)),
            Ok(Err(e)) => Err((Some(thread), e)),
            Err(_) => Err((
                Some(thread),
                anyhow::anyhow!("the SIP thread ended during start-up"),
            )),
        },
        Err(e) => Err((None, e)),
    };
    // The admin API runs on this (main) runtime, never on the SIP thread.
    let ready = match ready {
        Ok((thread, addrs)) => {
            let engine = media.as_ref().map(|(engine, _)| engine.clone());
            let ws = addrs.get(&crate::transport::Transport::Ws).copied();
            let web = crate::web::start(config.clone(), store.clone(), workers.shared(), ws);
            match crate::admin::start(config.clone(), store.clone(), workers.shared(), engine).await
            {
                Ok(admin) => match web.await {
                    Ok(web) => Ok((thread, addrs, (admin, web))),
                    Err(e) => {
                        if let Some(admin) = admin {
                            admin.stop();
                        }
                        let _ = shutdown.send(true);
                        Err((Some(thread), e))
                    }
                },
                Err(e) => {
                    let _ = shutdown.send(true);
                    Err((Some(thread), e))
                }
            }
        }
        Err(e) => Err(e),
    };
    match ready {
        Ok((thread, addrs, (admin, web))) => Ok(Running {
            addrs,
            shutdown,
            sip: Some(thread),
            plugins: Some(workers),
            writer: Some(writer),
            media,
            admin,
            web,
            ops: config.ops.clone(),
        }),
        Err((thread, e)) => {
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(thread) = thread {
                    let _ = thread.join();
                }
                workers.stop();
            })
            .await;
            if let Some((engine, task)) = media {
                let _ = engine.shutdown(task).await;
            }
            config.ops.stop_webhooks();
            Err(e)
        }
    }
}

/// What the SIP thread needs to bind the transports and run the core.
struct SipThread {
    config: Arc<Config>,
    transport_config: crate::transport::TransportConfig,
    users: HashMap<String, UserRecord>,
    location: Location,
    persist: std::sync::mpsc::Sender<Vec<Change>>,
    plugins: crate::plugins::CorePlugins,
}

impl SipThread {
    /// Binds, reports the bound addresses (or the error) on `ready`, runs the core until
    /// `shutdown`, then shuts the transports down.
    async fn run(
        self,
        shutdown: watch::Receiver<bool>,
        ready: tokio::sync::oneshot::Sender<anyhow::Result<HashMap<Transport, SocketAddr>>>,
    ) {
        let bound = Transports::bind_with_udp(
            &self.config.sip.listen,
            self.transport_config,
            TlsContext::default(),
        )
        .await
        .context("binding listeners");
        let (transports, handle, events, udp) = match bound {
            Ok(bound) => bound,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let mut addrs = HashMap::new();
        for spec in transports.local_addrs() {
            addrs.entry(spec.transport).or_insert(spec.addr);
        }
        let core = Core::new(
            self.config,
            handle,
            addrs.clone(),
            self.users,
            self.location,
            self.persist,
            self.plugins,
        );
        if ready.send(Ok(addrs)).is_err() {
            return;
        }
        // The core runs as a task of its own, not as this `block_on` future: a socket task
        // that wakes the `block_on` future makes the runtime poll the reactor once more
        // (`epoll_wait` with no timeout) before polling it, on every message; a woken task is
        // simply polled next.
        if let Err(e) = tokio::spawn(core.run(events, udp, shutdown)).await {
            if e.is_panic() {
                // As before the core was a task: a panic in it is not swallowed.
                std::panic::resume_unwind(e.into_panic());
            }
        }
        transports.shutdown().await;
    }
}
