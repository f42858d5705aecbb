//! The host table of one plugin instance, in safe Rust: [`Services`] implements the SDK's
//! [`HostServices`]. Its methods run on whatever thread the plugin calls from (the instance's
//! own thread, or threads the plugin started) and never wait for the SIP core:
//!
//! * `respond` and `send_request` check what they can here (the transaction is open, the
//!   bytes parse, limits) and hand the message to the core through its bounded command
//!   channel (full: [`Error::Busy`]), held until the end of the batch when the call comes
//!   from the instance's own thread ([`Outbox`]);
//! * the store is called directly, through [`Scoped`] views: read-write `plugin/<name>/`,
//!   read-only `location/` and other plugins' `plugin/<other>/`; `user_exists` (ABI 1.5) says
//!   whether `credentials/<user>` is there, never its value, from the account names held in
//!   memory (`Accounts`) when the store's watches see every write, else by a store read;
//! * watches and timers are tokio tasks that put their events in the instance's mailbox;
//! * logs go to `tracing` with a `plugin` field;
//! * media calls go to the [`MediaEngine`] (when it runs: then, and only then, the instance is
//!   offered [`Capabilities::MEDIA`]); its events come back through [`PluginMedia`], which
//!   queues them in the mailbox like every other callback, except incoming RTP once the plugin
//!   registered an RTP sink (ABI 1.7): that is handed to the sink right there, on the media
//!   thread, with no queue and no hop to the instance's thread.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use huddle_sdk::hosting::{HostServices, RegisteredRtpSink};
use huddle_sdk::{
    BatchOp, Capabilities, Error, Level, MediaSessionId, Message, Method, OutgoingRtp, RequestId,
    Result, ScanPage, StoreChange, TimerId, TransactionId, WatchId,
};
use huddle_sip::message::{HeaderName, PartsError, RequestParts};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::AbortHandle;

use super::mailbox::{Job, Mailbox, MediaJob};
use super::outbox::Outbox;
use super::{HostCommand, SendControl, StatusAnswer};
use crate::media::{MediaEngine, MediaError, MediaEvents};
use crate::store::{
    scan_pages, Access, Namespace, Op, Scoped, Store, StoreError, Watch, WatchEvent, MAX_SCAN_PAGE,
};

/// Timers one instance may have armed at once.
pub(crate) const MAX_TIMERS: usize = 65_536;
/// Watches one instance may hold at once.
pub(crate) const MAX_WATCHES: usize = 1024;
/// Requests one instance may have in flight (sent, final response not yet delivered).
pub(crate) const MAX_IN_FLIGHT: usize = 4096;
/// Watch changes queued for one instance before the watch tasks stop reading (and the store
/// marks the watches lagged).
pub(crate) const WATCH_CREDIT: usize = 1024;

/// The capabilities every instance is offered: everything, media only when the engine runs.
pub(crate) fn host_capabilities(media: bool) -> Capabilities {
    // Events are always offered: without `[webhooks]` they are accepted and go nowhere. The
    // allocator lent (ABI 1.11) is this program's global one.
    let all = Capabilities::ALL
        .with(Capabilities::EVENTS)
        .with(Capabilities::HOST_ALLOCATOR);
    if media {
        all
    } else {
        all.without(Capabilities::MEDIA)
    }
}

/// Where a plugin's media legs send their events: its mailbox. RTP and RTCP are bounded by the
/// mailbox (a plugin that falls behind loses packets, as a congested network would); ready,
/// hang-up and bitrate events always queue. RTP goes to the plugin's RTP sink instead when it
/// registered one (ABI 1.7), called here on the media thread.
#[derive(Debug)]
pub(crate) struct PluginMedia {
    pub(crate) shared: Arc<PluginShared>,
}

impl MediaEvents for PluginMedia {
    fn ready(&self, session: u64) {
        self.shared
            .mailbox
            .push_media(MediaJob::Ready { session }, false);
    }

    fn rtp(&self, session: u64, mid: &str, packet: Vec<u8>) {
        {
            let sink = read(&self.shared.rtp_sink);
            if let Some(sink) = sink.as_ref() {
                // A disabled instance gets nothing more; its queue drops media too.
                if !self.shared.is_disabled() {
                    if let Err(Error::Panic) = sink.deliver(MediaSessionId(session), mid, &packet) {
                        self.shared.sink_panicked();
                    }
                }
                return;
            }
        }
        let job = MediaJob::Rtp {
            session,
            mid: mid.into(),
            packet,
        };
        self.shared.mailbox.push_media(job, true);
    }

    fn rtcp(&self, session: u64, packet: Vec<u8>) {
        self.shared
            .mailbox
            .push_media(MediaJob::Rtcp { session, packet }, true);
    }

    fn hangup(&self, session: u64, reason: huddle_sdk::HangupReason) {
        self.shared
            .mailbox
            .push_media(MediaJob::Hangup { session, reason }, false);
    }

    fn bitrate(&self, session: u64, bps: u64) {
        self.shared
            .mailbox
            .push_media(MediaJob::Bitrate { session, bps }, true);
    }
}

/// The SDK error for a media error. A refused offer carries the SIP answer the plugin sends.
fn media_error(e: MediaError) -> Error {
    match e {
        MediaError::NotFound => Error::NotFound,
        MediaError::Busy => Error::Busy,
        MediaError::Stopped => Error::BadState,
        MediaError::BadPacket => Error::InvalidArgument,
        MediaError::Sdp(crate::media::SdpError::TooManySessions) => Error::Busy,
        MediaError::Sdp(sdp) => Error::Sdp(Box::new(huddle_sdk::SdpRefusal {
            status: sdp.status(),
            reason: sdp.reason().to_owned(),
            warning: sdp.warning().map(str::to_owned),
        })),
    }
}

/// Accounts held in memory at most for `user_exists`; past this the store is read per call.
pub(crate) const MAX_KNOWN_ACCOUNTS: usize = 100_000;

/// The account names `user_exists` answers from (ABI 1.5): every `credentials/<name>` read
/// once, at the first call, then kept current by a watch on `credentials/`. The answer was a
/// redb read transaction per call (about 5.7 k instructions, one per message to a user with no
/// device); now it is a hash lookup after draining the watch.
///
/// Exact only where [`Store::watches_see_every_write`]: the server's own store handle is the
/// only writer (the redb file is opened by one process, so `huddle user add`/`remove` run with
/// the server stopped), and a write's watchers are notified before it returns. The watch is
/// drained before every answer, so an account written or removed before the call (`[[users]]`
/// at start-up, or a write through the handle the server shares) is answered as the store has
/// it. A store that cannot promise that is read per call, as before. A lagged or closed watch
/// drops the set and the next call reads everything again; that first read, and the one after a
/// lag, scan every account on the calling thread (the plugin's), about 10 ms for 10,000. More
/// than [`MAX_KNOWN_ACCOUNTS`] accounts: no set, the store is read per call from then on, for
/// the instance's life.
#[derive(Debug, Default)]
enum Accounts {
    /// Not read yet, or dropped (the watch lagged).
    #[default]
    Unread,
    Known {
        watch: Watch,
        names: HashSet<Box<[u8]>, foldhash::fast::RandomState>,
    },
    /// Too many to hold: read per call.
    TooMany,
}

impl Accounts {
    /// Reads every account, watching `credentials/` from just before the scan (a write during
    /// the scan is seen by both; applying it again changes nothing).
    fn read(store: &dyn Store, max: usize) -> std::result::Result<Accounts, StoreError> {
        let prefix = Namespace::credentials().prefix().to_vec();
        let watch = store.watch_prefix(&prefix)?;
        let mut names = HashSet::default();
        for page in scan_pages(store, &prefix, MAX_SCAN_PAGE) {
            for (key, _) in page? {
                if names.len() == max {
                    return Ok(Accounts::TooMany);
                }
                names.insert(key[prefix.len()..].into());
            }
        }
        Ok(Accounts::Known { watch, names })
    }

    /// Applies the writes the watch has seen; `false` when the set can no longer be trusted
    /// (changes were dropped, or the store is gone).
    fn catch_up(&mut self, max: usize) -> bool {
        let Accounts::Known { watch, names } = self else {
            return false;
        };
        let skip = Namespace::credentials().prefix().len();
        while let Some(event) = watch.try_recv() {
            match event {
                WatchEvent::Change(change) => {
                    let name = change.key.get(skip..).unwrap_or_default();
                    if change.value.is_some() {
                        if names.len() >= max && !names.contains(name) {
                            return false;
                        }
                        names.insert(name.into());
                    } else {
                        names.remove(name);
                    }
                }
                WatchEvent::Lagged => return false,
            }
        }
        !watch.is_closed()
    }
}

/// A server transaction of this instance that has no final response yet.
#[derive(Debug)]
pub(crate) struct OpenTxn {
    pub(crate) call_id: String,
    pub(crate) cseq: u32,
    /// Out of dialog (no To tag): the plugin may retarget it (ABI 1.4).
    pub(crate) out_of_dialog: bool,
}

/// What the core, the instance's thread and its host table share.
#[derive(Debug)]
pub(crate) struct PluginShared {
    /// The instance name (logs, `plugin/<name>/`).
    pub(crate) name: String,
    pub(crate) mailbox: Mailbox,
    /// Commands on their way to the core, held while the instance's thread runs a batch.
    pub(crate) outbox: Outbox,
    /// Transactions handed to the plugin and not answered finally. The core adds and removes
    /// entries; `respond` removes one on its final response.
    pub(crate) open: Mutex<HashMap<u64, OpenTxn>>,
    /// Set when `on_panic = "disable"` took the instance out of service.
    pub(crate) disabled: std::sync::atomic::AtomicBool,
    pub(crate) in_flight: AtomicUsize,
    /// Panics caught at the boundary (admin API and metrics).
    pub(crate) panics: AtomicU64,
    pub(crate) timers: Mutex<HashMap<u64, AbortHandle>>,
    pub(crate) watches: Mutex<HashMap<u64, AbortHandle>>,
    pub(crate) watch_credit: Arc<Semaphore>,
    /// (ABI 1.7) The plugin's RTP sink: incoming RTP is handed to it on the media thread
    /// instead of the mailbox. A delivery holds the read side, so replacing it (the write side)
    /// waits until no delivery of the old one runs.
    pub(crate) rtp_sink: RwLock<Option<RegisteredRtpSink>>,
    /// `on_panic = "disable"`: what a panic in the RTP sink does (the instance's thread knows
    /// it for the other callbacks).
    pub(crate) disable_on_panic: AtomicBool,
}

// The maps under these locks are updated by single inserts and removes, so a panic elsewhere
// cannot leave them inconsistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The read side of the RTP sink's lock (nothing can be left half-written under it: the value
/// is replaced whole).
fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}

impl PluginShared {
    pub(crate) fn new(name: String, queue_len: usize) -> Self {
        PluginShared {
            name,
            mailbox: Mailbox::new(queue_len),
            outbox: Outbox::default(),
            open: Mutex::new(HashMap::new()),
            disabled: std::sync::atomic::AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            panics: AtomicU64::new(0),
            timers: Mutex::new(HashMap::new()),
            watches: Mutex::new(HashMap::new()),
            watch_credit: Arc::new(Semaphore::new(WATCH_CREDIT)),
            rtp_sink: RwLock::new(None),
            disable_on_panic: AtomicBool::new(false),
        }
    }

    /// Replaces the RTP sink (ABI 1.7); returns once no delivery of the old one runs, and
    /// drops it.
    pub(crate) fn set_rtp_sink(&self, sink: Option<RegisteredRtpSink>) {
        // The old one goes under the write lock: no delivery of it is running.
        *self
            .rtp_sink
            .write()
            .unwrap_or_else(PoisonError::into_inner) = sink;
    }

    /// The RTP sink panicked (caught in the plugin): counted and logged like a panic in a
    /// callback, and with `on_panic = "disable"` the instance goes out of service.
    fn sink_panicked(&self) {
        self.panics.fetch_add(1, Ordering::Relaxed);
        tracing::error!(plugin = %self.name, callback = "rtp_sink", "the plugin panicked (caught at the boundary)");
        if self.disable_on_panic.load(Ordering::Relaxed)
            && !self.disabled.swap(true, Ordering::Relaxed)
        {
            tracing::error!(
                plugin = %self.name,
                "plugin disabled after a panic (on_panic = \"disable\"); its requests are answered 503 until restart"
            );
        }
    }

    pub(crate) fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Relaxed)
    }

    /// Removes an open transaction; true if it was open (no final response sent yet).
    pub(crate) fn close_txn(&self, txn: u64) -> bool {
        lock(&self.open).remove(&txn).is_some()
    }

    /// Queues an admin request (ABI 1.2) for the instance's thread; the answer comes on the
    /// returned channel. `None` when the mailbox is closed or too many admin requests wait
    /// (the caller answers "busy").
    pub(crate) fn admin(
        &self,
        request: String,
    ) -> Option<tokio::sync::oneshot::Receiver<Result<Vec<u8>>>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.mailbox
            .push_admin(super::mailbox::Job::Admin { request, reply: tx })
            .then_some(rx)
    }

    /// Stops the mailbox and every timer and watch task.
    pub(crate) fn shut(&self) {
        self.mailbox.close();
        self.stop_tasks();
    }

    /// As [`PluginShared::shut`], but what is already queued is still handed to the plugin
    /// until `deadline` (a graceful stop).
    pub(crate) fn shut_after_queued(&self, deadline: std::time::Instant) {
        self.mailbox.close_after_queued(deadline);
        self.stop_tasks();
    }

    fn stop_tasks(&self) {
        self.watch_credit.close();
        for (_, task) in lock(&self.timers).drain() {
            task.abort();
        }
        for (_, task) in lock(&self.watches).drain() {
            task.abort();
        }
    }
}

/// The host table's implementation for one instance. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Services {
    index: usize,
    shared: Arc<PluginShared>,
    own: Scoped,
    store: Arc<dyn Store>,
    commands: mpsc::Sender<HostCommand>,
    runtime: tokio::runtime::Handle,
    max_message: usize,
    next_id: AtomicU64,
    media: Option<(MediaEngine, Arc<PluginMedia>)>,
    /// Where `emit_event` goes (the webhooks); `None`: events are accepted and dropped.
    ops: Option<Arc<crate::admin::Ops>>,
    /// `store_batch` limits: operations, bytes of keys and values (`[store]`).
    batch_limit: (usize, usize),
    /// What `user_exists` answers from.
    accounts: Mutex<Accounts>,
}

impl Services {
    pub(crate) fn new(
        index: usize,
        shared: Arc<PluginShared>,
        store: Arc<dyn Store>,
        commands: mpsc::Sender<HostCommand>,
        runtime: tokio::runtime::Handle,
        max_message: usize,
        media: Option<MediaEngine>,
    ) -> std::result::Result<Self, StoreError> {
        let own = Scoped::new(
            store.clone(),
            Namespace::plugin(&shared.name)?,
            Access::ReadWrite,
        );
        Ok(Services {
            index,
            own,
            store,
            commands,
            runtime,
            max_message,
            next_id: AtomicU64::new(1),
            media: media.map(|engine| {
                let events = Arc::new(PluginMedia {
                    shared: shared.clone(),
                });
                (engine, events)
            }),
            shared,
            ops: None,
            batch_limit: (
                crate::config::StoreConfig::default().plugin_batch_max_ops,
                crate::config::StoreConfig::default().plugin_batch_max_bytes,
            ),
            accounts: Mutex::new(Accounts::Unread),
        })
    }

    /// Limits `store_batch` to `max_ops` operations and `max_bytes` of keys and values.
    pub(crate) fn with_batch_limit(mut self, max_ops: usize, max_bytes: usize) -> Self {
        self.batch_limit = (max_ops, max_bytes);
        self
    }

    /// Sends this instance's events (`emit_event`) to the webhooks of `ops`.
    pub(crate) fn with_ops(mut self, ops: Arc<crate::admin::Ops>) -> Self {
        self.ops = Some(ops);
        self
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The view a namespace name stands for: `""` the own one (read-write), `location` and
    /// `plugin/<other>` read-only; anything else (`credentials`) is refused.
    fn view(&self, ns: &str) -> Result<Scoped> {
        if ns.is_empty() {
            return Ok(self.own.clone());
        }
        let namespace = match ns.trim_end_matches('/') {
            "location" => Namespace::location(),
            other => match other.strip_prefix("plugin/").map(Namespace::plugin) {
                Some(Ok(namespace)) => namespace,
                _ => return Err(Error::PermissionDenied),
            },
        };
        Ok(Scoped::new(self.store.clone(), namespace, Access::ReadOnly))
    }

    fn store_error(&self, e: StoreError) -> Error {
        match e {
            StoreError::KeyTooLarge { .. } | StoreError::ValueTooLarge { .. } => Error::TooLarge,
            StoreError::ReadOnly { .. } => Error::PermissionDenied,
            other => {
                tracing::error!(plugin = %self.shared.name, error = %other, "store call failed");
                Error::Internal
            }
        }
    }

    fn command(&self, command: HostCommand) -> Result<()> {
        self.shared.outbox.send(&self.commands, command)
    }

    fn parse(&self, bytes: &[u8]) -> Result<Message> {
        if bytes.len() > self.max_message {
            return Err(Error::TooLarge);
        }
        Message::parse(Bytes::copy_from_slice(bytes)).map_err(|e| {
            tracing::warn!(plugin = %self.shared.name, error = %e, "plugin sent bytes that are not a SIP message");
            Error::InvalidArgument
        })
    }

    /// Checks a request the plugin gave (as bytes or parts) and hands it to the core. `built`:
    /// written by [`Message::from_parts`], which checked already that it has no Via, a Call-ID
    /// and a CSeq naming its method.
    fn send_message(
        &self,
        message: Message,
        built: bool,
        control: Option<SendControl>,
    ) -> Result<RequestId> {
        let Some(method) = message.method() else {
            return Err(self.refuse("send_request: the bytes are a response, not a request"));
        };
        if matches!(method, Method::Ack | Method::Cancel) {
            return Err(self.refuse(
                "send_request: ACK and CANCEL are not sent through send_request (no response \
                 would come)",
            ));
        }
        if !built && message.header(&HeaderName::Via).is_some() {
            return Err(self.refuse("send_request: the request has a Via; the host adds its own"));
        }
        let complete = (built
            || message.call_id().is_some() && message.cseq().is_ok_and(|c| &c.method == method))
            && message.from_header().is_ok()
            && message.to_header().is_ok();
        if !complete {
            return Err(self.refuse(
                "send_request: the request needs From, To, Call-ID and a CSeq naming its method",
            ));
        }
        if self.shared.in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            return Err(Error::Busy);
        }
        let id = RequestId(self.id());
        self.command(HostCommand::Send {
            plugin: self.index,
            id,
            request: message,
            control,
        })?;
        self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }

    /// Whether `credentials/<user>` is in the store (a read transaction).
    fn account_in_store(&self, user: &str) -> Result<bool> {
        self.store
            .get(&Namespace::credentials().key(user.as_bytes()))
            .map(|record| record.is_some())
            .map_err(|e| self.store_error(e))
    }

    fn refuse(&self, why: &str) -> Error {
        tracing::warn!(plugin = %self.shared.name, "{why}");
        Error::InvalidArgument
    }
}

impl HostServices for Services {
    fn capabilities(&self) -> Capabilities {
        host_capabilities(self.media.is_some())
    }

    fn emit_event(&self, kind: &str, details: &str) -> Result<()> {
        let Some(ops) = self.ops.as_ref().filter(|o| o.webhooks_on()) else {
            return Ok(());
        };
        // The body is spliced into the envelope as is: it must be one JSON object.
        match serde_json::from_str::<serde_json::Value>(details) {
            Ok(v) if v.is_object() => {}
            _ => return Err(Error::InvalidArgument),
        }
        ops.event(kind, &self.shared.name, details);
        Ok(())
    }

    fn event_wanted(&self, kind: &str) -> Result<bool> {
        Ok(self.ops.as_ref().is_some_and(|o| o.event_taken(kind)))
    }

    fn log(&self, level: Level, message: &str) {
        let plugin = self.shared.name.as_str();
        match level {
            Level::Error => tracing::error!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Trace => tracing::trace!(plugin, "{message}"),
        }
    }

    fn respond(&self, txn: TransactionId, response: &[u8]) -> Result<()> {
        let message = self.parse(response)?;
        let Some(status) = message.status() else {
            return Err(self.refuse("respond: the bytes are a request, not a response"));
        };
        let mut open = lock(&self.shared.open);
        let Some(entry) = open.get(&txn.0) else {
            return Err(Error::UnknownTransaction);
        };
        let same = message.call_id() == Some(entry.call_id.as_str())
            && message.cseq().ok().map(|c| c.seq) == Some(entry.cseq);
        if !same {
            drop(open);
            return Err(
                self.refuse("respond: the response's Call-ID and CSeq are not the request's")
            );
        }
        let removed = (status >= 200).then(|| open.remove(&txn.0)).flatten();
        drop(open);
        let sent = self.command(HostCommand::Respond {
            plugin: self.index,
            txn: txn.0,
            response: message,
        });
        if sent.is_err() {
            // Not handed over: the transaction is still the plugin's to answer.
            if let Some(entry) = removed {
                lock(&self.shared.open).insert(txn.0, entry);
            }
        }
        sent
    }

    fn respond_status(
        &self,
        txn: TransactionId,
        status: u16,
        reason: &str,
        headers: &[(&str, &str)],
    ) -> Result<()> {
        let text = reason.len()
            + headers
                .iter()
                .map(|(name, value)| name.len() + value.len() + 4)
                .sum::<usize>();
        if text > self.max_message {
            return Err(Error::TooLarge);
        }
        // Made before the lock: the open map is shared with the core's thread.
        let answer = StatusAnswer::new(status, reason, headers);
        // Final: taken from the plugin now, as `respond` does for a final response.
        let Some(entry) = lock(&self.shared.open).remove(&txn.0) else {
            return Err(Error::UnknownTransaction);
        };
        let sent = self.command(HostCommand::Answer {
            plugin: self.index,
            txn: txn.0,
            answer,
        });
        if sent.is_err() {
            // Not handed over: the transaction is still the plugin's to answer.
            lock(&self.shared.open).insert(txn.0, entry);
        }
        sent
    }

    fn retarget(&self, txn: TransactionId, uri: &str) -> Result<()> {
        if huddle_sip::uri::SipUri::parse(uri).is_err() {
            return Err(self.refuse("retarget: the target is not a sip: or sips: URI"));
        }
        let mut open = lock(&self.shared.open);
        match open.get(&txn.0) {
            None => return Err(Error::UnknownTransaction),
            Some(entry) if !entry.out_of_dialog => return Err(Error::BadState),
            Some(_) => {}
        }
        // Taken from the plugin now: a response it sends after this is refused.
        let entry = open.remove(&txn.0);
        drop(open);
        let sent = self.command(HostCommand::Retarget {
            plugin: self.index,
            txn: txn.0,
            uri: uri.to_owned(),
        });
        if sent.is_err() {
            // Not handed over: the transaction is still the plugin's to answer.
            if let Some(entry) = entry {
                lock(&self.shared.open).insert(txn.0, entry);
            }
        }
        sent
    }

    fn send_request(&self, request: &[u8]) -> Result<RequestId> {
        let message = self.parse(request)?;
        self.send_message(message, false, None)
    }

    fn send_request_parts(&self, parts: &RequestParts<'_>) -> Result<RequestId> {
        // Written once with the offsets recorded: the checks the parser's reading stands for
        // here are `from_parts`'s (tokens, no line breaks, the mandatory fields once, the
        // CSeq's method), and the rest are the byte form's, below. The control fields are
        // taken out as they go by (checked as every field is), so the core neither looks them
        // up nor writes the request again without them: it adds its Via to the fields as
        // they are (`Message::relayed`).
        let mut control = SendControl::default();
        let message = Message::from_parts_leaving_out(parts, self.max_message, |name, value| {
            control.take(name, value)
        })
        .map_err(|e| {
            tracing::warn!(plugin = %self.shared.name, error = %e, "send_request_parts refused");
            match e {
                PartsError::TooLarge(_) | PartsError::TooManyHeaders(_) => Error::TooLarge,
                _ => Error::InvalidArgument,
            }
        })?;
        self.send_message(message, true, Some(control))
    }

    fn store_get(&self, ns: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.view(ns)?.get(key).map_err(|e| self.store_error(e))
    }

    fn user_exists(&self, user: &str) -> Result<bool> {
        // Accounts are written by `huddle user add` and `[[users]]` under names that pass this
        // check; anything else is no account, and never a key elsewhere in `credentials/`.
        if !crate::users::valid_user_name(user) {
            return Ok(false);
        }
        if !self.store.watches_see_every_write() {
            return self.account_in_store(user);
        }
        let mut accounts = self.accounts.lock().unwrap_or_else(|poisoned| {
            // A panic while the watch was drained may have lost a change: read again.
            let mut accounts = poisoned.into_inner();
            *accounts = Accounts::Unread;
            accounts
        });
        if !accounts.catch_up(MAX_KNOWN_ACCOUNTS) && !matches!(*accounts, Accounts::TooMany) {
            // Unread until read whole: a failed read leaves nothing stale behind.
            *accounts = Accounts::Unread;
            let mut read = Accounts::read(self.store.as_ref(), MAX_KNOWN_ACCOUNTS)
                .map_err(|e| self.store_error(e))?;
            // What was written while the scan ran (a delete of a name the scan had passed
            // already) is on the watch: applied before the set answers anything.
            if read.catch_up(MAX_KNOWN_ACCOUNTS) || matches!(read, Accounts::TooMany) {
                *accounts = read;
            }
        }
        if let Accounts::Known { names, .. } = &*accounts {
            return Ok(names.contains(user.as_bytes()));
        }
        drop(accounts);
        self.account_in_store(user)
    }

    fn store_put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.own.put(key, value).map_err(|e| self.store_error(e))
    }

    fn store_delete(&self, key: &[u8]) -> Result<bool> {
        self.own.delete(key).map_err(|e| self.store_error(e))
    }

    fn store_batch(&self, ops: &[BatchOp<'_>]) -> Result<()> {
        let (max_ops, max_bytes) = self.batch_limit;
        let bytes: usize = ops.iter().map(BatchOp::byte_len).sum();
        if ops.len() > max_ops || bytes > max_bytes {
            tracing::warn!(
                plugin = %self.shared.name,
                ops = ops.len(),
                bytes,
                "store_batch refused: over [store] plugin_batch_max_ops = {max_ops} or \
                 plugin_batch_max_bytes = {max_bytes}"
            );
            return Err(Error::TooLarge);
        }
        let ops = ops
            .iter()
            .map(|op| match op {
                BatchOp::Put { key, value } => Op::put(*key, *value),
                BatchOp::Delete { key } => Op::delete(*key),
            })
            .collect();
        self.own.apply_batch(ops).map_err(|e| self.store_error(e))
    }

    fn store_compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<std::result::Result<(), Option<Vec<u8>>>> {
        match self.own.compare_and_swap(key, expected, new) {
            Ok(Ok(())) => Ok(Ok(())),
            Ok(Err(conflict)) => Ok(Err(conflict.current)),
            Err(e) => Err(self.store_error(e)),
        }
    }

    fn store_scan(
        &self,
        ns: &str,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<ScanPage> {
        let limit = if limit == 0 {
            MAX_SCAN_PAGE
        } else {
            limit.min(MAX_SCAN_PAGE)
        };
        let page = self
            .view(ns)?
            .scan_prefix(prefix, start_after, limit)
            .map_err(|e| self.store_error(e))?;
        Ok(ScanPage {
            entries: page.entries,
            more: page.more,
        })
    }

    fn store_watch(&self, ns: &str, prefix: &[u8]) -> Result<WatchId> {
        let view = self.view(ns)?;
        let mut watches = lock(&self.shared.watches);
        if watches.len() >= MAX_WATCHES {
            return Err(Error::Busy);
        }
        let mut watch = view.watch_prefix(prefix).map_err(|e| self.store_error(e))?;
        let id = WatchId(self.id());
        let shared = self.shared.clone();
        let task = self.runtime.spawn(async move {
            while let Some(event) = watch.recv().await {
                // One credit per queued change: a plugin that falls behind stops this task
                // reading, the store's bounded watch channel fills, and the plugin gets
                // `Lagged` instead of unbounded memory.
                let Ok(permit) = shared.watch_credit.acquire().await else {
                    break;
                };
                permit.forget();
                let change = match event {
                    WatchEvent::Change(c) => match c.value {
                        Some(value) => StoreChange::Put {
                            watch: id,
                            key: c.key,
                            value,
                        },
                        None => StoreChange::Delete {
                            watch: id,
                            key: c.key,
                        },
                    },
                    WatchEvent::Lagged => StoreChange::Lagged { watch: id },
                };
                if !shared.mailbox.push(Job::StoreChange(change)) {
                    break;
                }
            }
        });
        watches.insert(id.0, task.abort_handle());
        Ok(id)
    }

    fn store_unwatch(&self, watch: WatchId) -> Result<()> {
        let task = lock(&self.shared.watches)
            .remove(&watch.0)
            .ok_or(Error::NotFound)?;
        task.abort();
        Ok(())
    }

    fn set_timer(&self, delay: Duration, token: u64) -> Result<TimerId> {
        let mut timers = lock(&self.shared.timers);
        if timers.len() >= MAX_TIMERS {
            return Err(Error::Busy);
        }
        let id = TimerId(self.id());
        let shared = self.shared.clone();
        let task = self.runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            // Whoever removes the entry first wins: this task (fired) or cancel_timer.
            if lock(&shared.timers).remove(&id.0).is_some() {
                shared.mailbox.push(Job::Timer { id, token });
            }
        });
        // Inserted before the lock is released, so the task cannot look for it too early.
        timers.insert(id.0, task.abort_handle());
        Ok(id)
    }

    fn cancel_timer(&self, timer: TimerId) -> Result<()> {
        let task = lock(&self.shared.timers)
            .remove(&timer.0)
            .ok_or(Error::NotFound)?;
        task.abort();
        Ok(())
    }

    fn media_answer(
        &self,
        session: Option<MediaSessionId>,
        offer: &[u8],
    ) -> Result<(MediaSessionId, Vec<u8>)> {
        let (engine, events) = self.media.as_ref().ok_or(Error::NotSupported)?;
        let (id, answer) = engine
            .answer(self.index, events.clone(), session.map(|s| s.0), offer)
            .map_err(media_error)?;
        Ok((MediaSessionId(id), answer.into_bytes()))
    }

    fn media_send_rtp(&self, session: MediaSessionId, mid: &str, packet: &[u8]) -> Result<()> {
        let (engine, _) = self.media.as_ref().ok_or(Error::NotSupported)?;
        engine
            .send_rtp(self.index, session.0, mid, packet)
            .map_err(media_error)
    }

    fn media_send_rtcp(&self, session: MediaSessionId, packet: &[u8]) -> Result<()> {
        let (engine, _) = self.media.as_ref().ok_or(Error::NotSupported)?;
        engine
            .send_rtcp(self.index, session.0, packet)
            .map_err(media_error)
    }

    fn media_request_keyframe(&self, session: MediaSessionId, mid: &str) -> Result<()> {
        let (engine, _) = self.media.as_ref().ok_or(Error::NotSupported)?;
        engine
            .request_keyframe(self.index, session.0, mid)
            .map_err(media_error)
    }

    fn media_forward(
        &self,
        src: MediaSessionId,
        src_mid: &str,
        dst: MediaSessionId,
        dst_mid: &str,
    ) -> Result<()> {
        let (engine, _) = self.media.as_ref().ok_or(Error::NotSupported)?;
        engine
            .forward(self.index, src.0, src_mid, dst.0, dst_mid)
            .map_err(media_error)
    }

    fn media_tap(&self, session: MediaSessionId, mid: &str, on: bool) -> Result<()> {
        let (engine, events) = self.media.as_ref().ok_or(Error::NotSupported)?;
        engine
            .tap(self.index, events.clone(), session.0, mid, on)
            .map_err(media_error)
    }

    fn media_close(&self, session: MediaSessionId) -> Result<()> {
        let (engine, _) = self.media.as_ref().ok_or(Error::NotSupported)?;
        engine.close(self.index, session.0).map_err(media_error)
    }

    fn media_rtp_sink(&self, sink: Option<RegisteredRtpSink>) -> Result<()> {
        self.media.as_ref().ok_or(Error::NotSupported)?;
        self.shared.set_rtp_sink(sink);
        Ok(())
    }

    fn media_send_rtp_batch(&self, packets: &[OutgoingRtp<'_>]) -> Result<()> {
        let (engine, _) = self.media.as_ref().ok_or(Error::NotSupported)?;
        let batch: Vec<(u64, &str, &[u8])> = packets
            .iter()
            .map(|p| (p.session.0, p.mid, p.packet))
            .collect();
        engine
            .send_rtp_batch(self.index, &batch)
            .map_err(media_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn services(name: &str, store: Arc<dyn Store>) -> (Services, mpsc::Receiver<HostCommand>) {
        let (tx, rx) = mpsc::channel(4);
        let shared = Arc::new(PluginShared::new(name.into(), 4));
        let s = Services::new(
            0,
            shared,
            store,
            tx,
            tokio::runtime::Handle::current(),
            65_535,
            None,
        )
        .unwrap();
        (s, rx)
    }

    #[tokio::test]
    async fn an_event_is_wanted_only_when_a_webhook_takes_its_kind() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (kit, _rx) = services("kit", store.clone());
        assert_eq!(kit.event_wanted("message.stored"), Ok(false), "no ops");
        let ops = Arc::new(crate::admin::Ops::default());
        let kit = kit.with_ops(ops.clone());
        assert_eq!(kit.event_wanted("message.stored"), Ok(false), "no webhooks");
        ops.start_webhooks(&crate::webhooks::WebhooksConfig {
            // Nothing listens there; nothing is raised here either.
            urls: vec!["http://127.0.0.1:9/hook".into()],
            secret: Some("s".into()),
            events: vec!["message.delivered".into()],
            ..Default::default()
        });
        assert_eq!(kit.event_wanted("message.delivered"), Ok(true));
        assert_eq!(
            kit.event_wanted("message.stored"),
            Ok(false),
            "filtered out"
        );
        ops.stop_webhooks();
    }

    #[tokio::test]
    async fn namespaces_are_confined() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        store.put(b"location/alice@x/1", b"b").unwrap();
        store.put(b"credentials/alice", b"secret").unwrap();
        let (kit, _rx) = services("kit", store.clone());
        let (other, _rx2) = services("other", store.clone());
        kit.store_put(b"k", b"v").unwrap();
        kit.store_put(b"../location/evil", b"v").unwrap();
        assert_eq!(
            store.get(b"plugin/kit/k").unwrap().as_deref(),
            Some(&b"v"[..])
        );
        assert_eq!(store.get(b"location/evil").unwrap(), None);
        assert_eq!(
            kit.store_get("location", b"alice@x/1").unwrap().as_deref(),
            Some(&b"b"[..])
        );
        assert_eq!(
            other.store_get("plugin/kit", b"k").unwrap().as_deref(),
            Some(&b"v"[..])
        );
        assert_eq!(
            kit.store_get("credentials", b"alice"),
            Err(Error::PermissionDenied)
        );
        assert_eq!(
            kit.store_get("plugin/../x", b"a"),
            Err(Error::PermissionDenied)
        );
        let page = kit.store_scan("", b"", None, 0).unwrap();
        assert_eq!(page.entries.len(), 2);
        assert_eq!(
            kit.store_compare_and_swap(b"k", Some(b"nope"), Some(b"w")),
            Ok(Err(Some(b"v".to_vec())))
        );
    }

    #[tokio::test]
    async fn user_exists_reads_the_accounts_as_they_are_now_and_nothing_else() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (kit, _rx) = services("kit", store.clone());
        assert_eq!(kit.user_exists("bob"), Ok(false));
        crate::users::put_user(
            store.as_ref(),
            &crate::users::UserRecord::new("bob", "example.test", "pw"),
        )
        .unwrap();
        assert_eq!(kit.user_exists("bob"), Ok(true));
        assert_eq!(kit.user_exists("bo"), Ok(false));
        // Names no account can have are not looked up (no path out of `credentials/`).
        store.put(b"credentials/a/b", b"x").unwrap();
        assert_eq!(kit.user_exists("a/b"), Ok(false));
        assert_eq!(kit.user_exists(""), Ok(false));
        assert!(crate::users::remove_user(store.as_ref(), "bob").unwrap());
        assert_eq!(kit.user_exists("bob"), Ok(false));
    }

    /// A store that counts its reads, says what `watches_see_every_write` is set to, and can
    /// write to itself while a scan is under way (before answering scan page `n`, from 1).
    struct Probe {
        inner: MemoryStore,
        every_write: bool,
        gets: AtomicUsize,
        scans: AtomicUsize,
        #[allow(clippy::type_complexity)]
        during_scan: Mutex<Option<(usize, Box<dyn FnOnce(&MemoryStore) + Send>)>>,
    }

    impl std::fmt::Debug for Probe {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Probe").finish_non_exhaustive()
        }
    }

    impl Probe {
        fn new(every_write: bool) -> Self {
            Probe {
                inner: MemoryStore::new(),
                every_write,
                gets: AtomicUsize::new(0),
                scans: AtomicUsize::new(0),
                during_scan: Mutex::new(None),
            }
        }
    }

    impl Store for Probe {
        fn get(&self, key: &[u8]) -> crate::store::Result<Option<Vec<u8>>> {
            self.gets.fetch_add(1, Ordering::Relaxed);
            self.inner.get(key)
        }
        fn put(&self, key: &[u8], value: &[u8]) -> crate::store::Result<()> {
            self.inner.put(key, value)
        }
        fn delete(&self, key: &[u8]) -> crate::store::Result<bool> {
            self.inner.delete(key)
        }
        fn compare_and_swap(
            &self,
            key: &[u8],
            expected: Option<&[u8]>,
            new: Option<&[u8]>,
        ) -> crate::store::Result<std::result::Result<(), crate::store::CasConflict>> {
            self.inner.compare_and_swap(key, expected, new)
        }
        fn scan_prefix(
            &self,
            prefix: &[u8],
            start_after: Option<&[u8]>,
            limit: usize,
        ) -> crate::store::Result<crate::store::ScanPage> {
            let n = self.scans.fetch_add(1, Ordering::Relaxed) + 1;
            let mut during = lock(&self.during_scan);
            if during.as_ref().is_some_and(|(at, _)| *at == n) {
                if let Some((_, write)) = during.take() {
                    write(&self.inner);
                }
            }
            drop(during);
            self.inner.scan_prefix(prefix, start_after, limit)
        }
        fn apply_batch(&self, ops: Vec<Op>) -> crate::store::Result<()> {
            self.inner.apply_batch(ops)
        }
        fn watch_prefix(&self, prefix: &[u8]) -> crate::store::Result<Watch> {
            self.inner.watch_prefix(prefix)
        }
        fn watch_count(&self) -> usize {
            self.inner.watch_count()
        }
        fn watches_see_every_write(&self) -> bool {
            self.every_write
        }
    }

    fn account(name: &str) -> Op {
        Op::put(Namespace::credentials().key(name.as_bytes()), "x")
    }

    #[tokio::test]
    async fn user_exists_reads_the_store_per_call_only_where_watches_may_miss_writes() {
        for every_write in [true, false] {
            let probe = Arc::new(Probe::new(every_write));
            let store: Arc<dyn Store> = probe.clone();
            store.apply_batch(vec![account("bob")]).unwrap();
            let (kit, _rx) = services("kit", store.clone());
            for _ in 0..5 {
                assert_eq!(kit.user_exists("bob"), Ok(true));
                assert_eq!(kit.user_exists("carol"), Ok(false));
            }
            store.apply_batch(vec![account("carol")]).unwrap();
            store.delete(b"credentials/bob").unwrap();
            assert_eq!(kit.user_exists("bob"), Ok(false));
            assert_eq!(kit.user_exists("carol"), Ok(true));
            let gets = probe.gets.load(Ordering::Relaxed);
            if every_write {
                assert_eq!(gets, 0, "answered from the set, read once by a scan");
            } else {
                assert_eq!(gets, 12, "one store read per call");
                assert_eq!(probe.scans.load(Ordering::Relaxed), 0);
            }
        }
    }

    #[tokio::test]
    async fn writes_while_the_accounts_are_read_are_followed() {
        // Written before the first page is answered, and between two pages (a delete of an
        // account the first page had, a put past both).
        let page = MAX_SCAN_PAGE;
        for (at, accounts) in [(1, 3), (2, page + 5)] {
            let probe = Arc::new(Probe::new(true));
            let store: Arc<dyn Store> = probe.clone();
            store
                .apply_batch(
                    (0..accounts)
                        .map(|i| account(&format!("u{i:05}")))
                        .collect(),
                )
                .unwrap();
            *lock(&probe.during_scan) = Some((
                at,
                Box::new(|inner: &MemoryStore| {
                    inner.delete(b"credentials/u00000").unwrap();
                    inner.put(b"credentials/zed", b"x").unwrap();
                    inner.put(b"credentials/u00001", b"y").unwrap();
                }),
            ));
            let (kit, _rx) = services("kit", store.clone());
            assert_eq!(kit.user_exists("u00000"), Ok(false), "scan page {at}");
            assert_eq!(kit.user_exists("zed"), Ok(true), "scan page {at}");
            assert_eq!(kit.user_exists("u00001"), Ok(true), "scan page {at}");
            let last = format!("u{:05}", accounts - 1);
            assert_eq!(kit.user_exists(&last), Ok(true), "scan page {at}");
            assert!(probe.scans.load(Ordering::Relaxed) >= at);
            assert_eq!(probe.gets.load(Ordering::Relaxed), 0);
        }
    }

    #[tokio::test]
    async fn user_exists_stays_right_when_its_watch_lags_and_past_the_accounts_it_holds() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (kit, _rx) = services("kit", store.clone());
        assert_eq!(kit.user_exists("u0"), Ok(false));
        // More writes than the watch holds before the next call: it lags, the set is read again.
        let ops = (0..crate::store::DEFAULT_WATCH_CAPACITY + 10)
            .map(|i| {
                Op::put(
                    Namespace::credentials().key(format!("u{i}").as_bytes()),
                    "x",
                )
            })
            .collect();
        store.apply_batch(ops).unwrap();
        assert_eq!(kit.user_exists("u0"), Ok(true));
        let last = crate::store::DEFAULT_WATCH_CAPACITY + 9;
        assert_eq!(kit.user_exists(&format!("u{last}")), Ok(true));
        assert_eq!(kit.user_exists(&format!("u{}", last + 1)), Ok(false));
        store.delete(b"credentials/u7").unwrap();
        assert_eq!(kit.user_exists("u7"), Ok(false));
        assert_eq!(kit.user_exists("u8"), Ok(true));

        // Past its limit the set is not kept: the store answers each call.
        let mut few = Accounts::read(store.as_ref(), 3).unwrap();
        assert!(matches!(few, Accounts::TooMany));
        assert!(!few.catch_up(3));
        let mut some = Accounts::read(store.as_ref(), 5000).unwrap();
        assert!(some.catch_up(5000));
        store.put(b"credentials/new", b"x").unwrap();
        assert!(some.catch_up(5000));
        store.put(b"credentials/newer", b"x").unwrap();
        assert!(
            !some.catch_up(1),
            "a set that would grow past its limit is given up"
        );
    }

    #[tokio::test]
    async fn a_batch_commits_in_the_own_namespace_within_its_limits() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        store.put(b"plugin/kit/old", b"x").unwrap();
        let (kit, _rx) = services("kit", store.clone());
        let kit = kit.with_batch_limit(3, 64);
        kit.store_batch(&[
            BatchOp::Put {
                key: b"a",
                value: b"1",
            },
            BatchOp::Delete { key: b"old" },
            BatchOp::Delete {
                key: b"never-there",
            },
        ])
        .unwrap();
        assert_eq!(
            store.get(b"plugin/kit/a").unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(store.get(b"plugin/kit/old").unwrap(), None);
        // Four ops, or more than 64 bytes: refused whole, nothing written.
        let four = [BatchOp::Delete { key: b"a" }; 4];
        assert_eq!(kit.store_batch(&four), Err(Error::TooLarge));
        let big = [BatchOp::Put {
            key: b"b",
            value: &[0; 64],
        }];
        assert_eq!(kit.store_batch(&big), Err(Error::TooLarge));
        assert_eq!(
            store.get(b"plugin/kit/a").unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(store.get(b"plugin/kit/b").unwrap(), None);
    }

    #[tokio::test]
    async fn respond_needs_an_open_transaction_with_the_same_call() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (s, mut rx) = services("kit", store);
        let resp = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c1\r\nCSeq: 4 MESSAGE\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            s.respond(TransactionId(7), resp),
            Err(Error::UnknownTransaction)
        );
        lock(&s.shared.open).insert(
            7,
            OpenTxn {
                call_id: "c2".into(),
                cseq: 4,
                out_of_dialog: true,
            },
        );
        assert_eq!(
            s.respond(TransactionId(7), resp),
            Err(Error::InvalidArgument)
        );
        lock(&s.shared.open).get_mut(&7).unwrap().call_id = "c1".into();
        s.respond(TransactionId(7), resp).unwrap();
        assert!(matches!(
            rx.try_recv(),
            Ok(HostCommand::Respond { txn: 7, .. })
        ));
        assert_eq!(
            s.respond(TransactionId(7), resp),
            Err(Error::UnknownTransaction),
            "finished"
        );
    }

    #[tokio::test]
    async fn respond_status_takes_an_open_transaction_once_and_gives_it_back_when_refused() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (s, mut rx) = services("kit", store);
        let open = || OpenTxn {
            call_id: "c1".into(),
            cseq: 4,
            out_of_dialog: true,
        };
        assert_eq!(
            s.respond_status(TransactionId(7), 202, "Accepted", &[]),
            Err(Error::UnknownTransaction)
        );
        lock(&s.shared.open).insert(7, open());
        let long = "x".repeat(70_000);
        assert_eq!(
            s.respond_status(TransactionId(7), 202, &long, &[]),
            Err(Error::TooLarge),
            "more text than a message may hold"
        );
        s.respond_status(TransactionId(7), 202, "Accepted", &[("Expires", "60")])
            .unwrap();
        match rx.try_recv() {
            Ok(HostCommand::Answer {
                plugin: 0,
                txn: 7,
                answer,
            }) => answer.with_parts(|status, reason, fields| {
                assert_eq!(status, 202);
                assert_eq!(reason, "Accepted");
                assert_eq!(fields, [("Expires", "60")]);
            }),
            other => panic!("expected the answer, got {other:?}"),
        }
        assert_eq!(
            s.respond_status(TransactionId(7), 202, "Accepted", &[]),
            Err(Error::UnknownTransaction),
            "finished"
        );

        // The core's channel full: refused as busy, and the transaction is still the plugin's.
        lock(&s.shared.open).insert(8, open());
        let mut filled = 0;
        while s.respond_status(TransactionId(8), 200, "OK", &[]).is_ok() {
            filled += 1;
            lock(&s.shared.open).insert(8, open());
        }
        assert_eq!(filled, 4, "the channel's capacity");
        assert_eq!(
            s.respond_status(TransactionId(8), 200, "OK", &[]),
            Err(Error::Busy)
        );
        assert!(lock(&s.shared.open).contains_key(&8));
        // Many fields, past the stack's few, reach the core in order.
        while rx.try_recv().is_ok() {}
        let fields: Vec<(String, String)> =
            (0..9).map(|i| (format!("X-F{i}"), i.to_string())).collect();
        let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (&**n, &**v)).collect();
        s.respond_status(TransactionId(8), 480, "", &fields)
            .unwrap();
        match rx.try_recv() {
            Ok(HostCommand::Answer { answer, .. }) => answer.with_parts(|status, reason, got| {
                assert_eq!((status, reason), (480, ""));
                assert_eq!(got, &fields[..]);
            }),
            other => panic!("expected the answer, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn retarget_takes_an_open_out_of_dialog_transaction_once() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (s, mut rx) = services("kit", store);
        let open = |out_of_dialog| OpenTxn {
            call_id: "c1".into(),
            cseq: 1,
            out_of_dialog,
        };
        let uri = "sip:screen-team@example.test";
        assert_eq!(
            s.retarget(TransactionId(3), uri),
            Err(Error::UnknownTransaction)
        );
        lock(&s.shared.open).insert(3, open(true));
        assert_eq!(
            s.retarget(TransactionId(3), "tel:+15550100"),
            Err(Error::InvalidArgument)
        );
        assert_eq!(
            s.retarget(TransactionId(3), "not a uri"),
            Err(Error::InvalidArgument)
        );
        s.retarget(TransactionId(3), uri).unwrap();
        assert!(matches!(
            rx.try_recv(),
            Ok(HostCommand::Retarget { txn: 3, uri: u, .. }) if u == uri
        ));
        assert_eq!(
            s.retarget(TransactionId(3), uri),
            Err(Error::UnknownTransaction),
            "the transaction is not the plugin's any more"
        );
        let ok = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            s.respond(TransactionId(3), ok),
            Err(Error::UnknownTransaction),
            "nor may it answer it"
        );
        lock(&s.shared.open).insert(4, open(false));
        assert_eq!(
            s.retarget(TransactionId(4), uri),
            Err(Error::BadState),
            "in-dialog requests stay"
        );
    }

    #[tokio::test]
    async fn timers_fire_once_and_cancel() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (s, _rx) = services("kit", store);
        let t1 = s.set_timer(Duration::from_millis(1), 5).unwrap();
        let t2 = s.set_timer(Duration::from_secs(60), 6).unwrap();
        s.cancel_timer(t2).unwrap();
        assert_eq!(s.cancel_timer(t2), Err(Error::NotFound));
        let shared = s.shared.clone();
        let job = tokio::task::spawn_blocking(move || shared.mailbox.next())
            .await
            .unwrap();
        assert!(matches!(job, Some(Job::Timer { id, token: 5 }) if id == t1));
        assert_eq!(s.cancel_timer(t1), Err(Error::NotFound), "fired");
    }

    #[tokio::test]
    async fn send_request_checks_the_message() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (s, mut rx) = services("kit", store);
        let good = huddle_sdk::NewRequest::new(Method::Message, "sip:alice@example.test")
            .from("<sip:kit@example.test>")
            .body("text/plain", b"hi")
            .build();
        let id = s.send_request(&good).unwrap();
        assert!(matches!(rx.try_recv(), Ok(HostCommand::Send { id: i, .. }) if i == id));
        let with_via = String::from_utf8(good.to_vec()).unwrap().replacen(
            "\r\n",
            "\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n",
            1,
        );
        assert_eq!(
            s.send_request(with_via.as_bytes()),
            Err(Error::InvalidArgument)
        );
        assert_eq!(s.send_request(b"garbage"), Err(Error::InvalidArgument));
    }

    #[tokio::test]
    async fn parts_are_sent_as_the_same_request_and_refused_as_bytes_are_and_more() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (s, mut rx) = services("kit", store);
        let request = huddle_sdk::NewRequest::new(Method::Message, "sip:alice@example.test")
            .from("<sip:kit@example.test>;tag=k1")
            .call_id("c1@example.test")
            .header("Huddle-Answer", "4")
            .body("text/plain", b"hi");
        let id = request.with_parts(|p| s.send_request_parts(p)).unwrap();
        match rx.try_recv() {
            Ok(HostCommand::Send {
                id: i,
                request: m,
                control: Some(control),
                ..
            }) => {
                assert_eq!(i, id);
                // The bytes' request, less the control field, which came as the command's.
                let bytes = Message::parse(request.clone().build()).unwrap();
                assert_eq!(SendControl::of(&bytes), control);
                assert_eq!(control.answer, Some(4));
                let dropped = huddle_sip::build::Forward::new(&bytes)
                    .drop_header(HeaderName::parse("Huddle-Answer"))
                    .build();
                assert_eq!(m.raw(), &dropped);
                assert_eq!(m.header(&HeaderName::parse("Huddle-Answer")), None);
            }
            other => panic!("{other:?}"),
        }
        // Bytes keep their control fields for the core to read and drop.
        s.send_request(&request.clone().build()).unwrap();
        assert!(matches!(
            rx.try_recv(),
            Ok(HostCommand::Send { control: None, request: m, .. })
                if m.header(&HeaderName::parse("Huddle-Answer")) == Some("4")
        ));
        let fields = [
            ("From", "<sip:kit@example.test>;tag=k1"),
            ("To", "<sip:alice@example.test>"),
            ("Call-ID", "c2"),
            ("CSeq", "1 MESSAGE"),
        ];
        fn parts<'a>(method: &'a str, headers: &'a [(&'a str, &'a str)]) -> RequestParts<'a> {
            RequestParts {
                method,
                uri: "sip:alice@example.test",
                headers,
                body: b"",
            }
        }
        assert!(s.send_request_parts(&parts("MESSAGE", &fields)).is_ok());
        assert!(rx.try_recv().is_ok());
        // What the byte form refuses after parsing: ACK and CANCEL, a From or To that is no
        // name-addr.
        for method in ["ACK", "CANCEL"] {
            let mut f = fields;
            f[3].1 = if method == "ACK" { "1 ACK" } else { "1 CANCEL" };
            assert_eq!(
                s.send_request_parts(&parts(method, &f)),
                Err(Error::InvalidArgument)
            );
        }
        let mut f = fields;
        f[0].1 = "<sip:kit@example.test";
        assert_eq!(
            s.send_request_parts(&parts("MESSAGE", &f)),
            Err(Error::InvalidArgument)
        );
        // What only parts can get wrong: a value with a line break, a Via, a field twice.
        let mut f = fields.to_vec();
        f.push(("Subject", "x\r\nVia: SIP/2.0/UDP 192.0.2.1"));
        assert_eq!(
            s.send_request_parts(&parts("MESSAGE", &f)),
            Err(Error::InvalidArgument)
        );
        let mut f = fields.to_vec();
        f.push(("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx"));
        assert_eq!(
            s.send_request_parts(&parts("MESSAGE", &f)),
            Err(Error::InvalidArgument)
        );
        let mut f = fields.to_vec();
        f.push(("i", "again"));
        assert_eq!(
            s.send_request_parts(&parts("MESSAGE", &f)),
            Err(Error::InvalidArgument)
        );
        // A control field is checked as every field is, and counts towards the limits.
        let mut f = fields.to_vec();
        f.push((
            "Huddle-Binding",
            "alice@example.test/1\r\nVia: SIP/2.0/UDP 192.0.2.1",
        ));
        assert_eq!(
            s.send_request_parts(&parts("MESSAGE", &f)),
            Err(Error::InvalidArgument)
        );
        let mut f = fields.to_vec();
        f.extend(std::iter::repeat_n(("Huddle-Report", "failures"), 256));
        assert_eq!(
            s.send_request_parts(&parts("MESSAGE", &f)),
            Err(Error::TooLarge)
        );
        let big = "x".repeat(70_000);
        let mut f = fields.to_vec();
        f.push(("Subject", &big));
        assert_eq!(
            s.send_request_parts(&parts("MESSAGE", &f)),
            Err(Error::TooLarge)
        );
        assert!(rx.try_recv().is_err(), "nothing refused was sent");
    }

    /// A plugin whose RTP sink (ABI 1.7) counts packets and panics on `boom`.
    struct Sinky;

    static SUNK: AtomicUsize = AtomicUsize::new(0);

    struct CountingSink;

    impl huddle_sdk::RtpSink for CountingSink {
        fn incoming_rtp(&self, _: MediaSessionId, _: &str, packet: &[u8]) {
            assert_ne!(packet, b"boom", "sink boom");
            SUNK.fetch_add(1, Ordering::Relaxed);
        }
    }

    impl huddle_sdk::Plugin for Sinky {
        fn init(
            host: &huddle_sdk::Host,
            _: &huddle_sdk::Config,
            _: &mut huddle_sdk::Claims,
        ) -> Result<Self> {
            host.set_rtp_sink(Some(Arc::new(CountingSink)))?;
            Ok(Sinky)
        }

        fn handle_request(&mut self, _: &huddle_sdk::Host, _: huddle_sdk::Request) -> Result<()> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn rtp_goes_to_the_sink_where_it_arrives_and_a_panic_there_disables_the_instance() {
        let (engine, task) = crate::media::MediaEngine::start(crate::media::EngineSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            advertise: None,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            max_sessions: 8,
            codecs: vec![crate::media::CodecName::Vp8],
            bandwidth_estimation: false,
            fast_egress: false,
            fast_ingress: false,
            udp_gso: true,
            udp_recv_buffer: 0,
        })
        .await
        .unwrap();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (tx, _rx) = mpsc::channel(4);
        let shared = Arc::new(PluginShared::new("sinky".into(), 4));
        shared.disable_on_panic.store(true, Ordering::Relaxed);
        let services = Services::new(
            0,
            shared.clone(),
            store,
            tx,
            tokio::runtime::Handle::current(),
            65_535,
            Some(engine.clone()),
        )
        .unwrap();
        let entry = huddle_sdk::plugin_entry!(Sinky, "sinky", "1", huddle_sdk::Capabilities::MEDIA);
        let instance =
            huddle_sdk::hosting::PluginInstance::start(&entry, Arc::new(services), "").unwrap();
        // What the media engine calls for an incoming packet, on its own thread.
        let media = PluginMedia {
            shared: shared.clone(),
        };
        media.rtp(7, "0", b"\x80one".to_vec());
        media.rtp(7, "1", b"\x80two".to_vec());
        assert_eq!(
            SUNK.load(Ordering::Relaxed),
            2,
            "delivered where they arrived"
        );
        // A panic is caught in the plugin, counted here, and (on_panic = "disable") takes the
        // instance out of service: its sink gets nothing more.
        media.rtp(7, "0", b"boom".to_vec());
        assert_eq!(shared.panics.load(Ordering::Relaxed), 1);
        assert!(shared.is_disabled());
        media.rtp(7, "0", b"\x80three".to_vec());
        assert_eq!(SUNK.load(Ordering::Relaxed), 2);
        // Without a sink (what the instance's thread does before `destroy`), packets queue
        // again; nothing the sink took was queued.
        shared.set_rtp_sink(None);
        media.rtp(7, "0", b"\x80queued".to_vec());
        let mailbox = shared.clone();
        let job = tokio::task::spawn_blocking(move || mailbox.mailbox.next())
            .await
            .unwrap();
        assert!(
            matches!(&job, Some(Job::Media { job: MediaJob::Rtp { packet, .. }, .. }) if packet == b"\x80queued"),
            "{job:?}"
        );
        drop(instance);
        engine.shutdown(task).await.unwrap();
    }
}
