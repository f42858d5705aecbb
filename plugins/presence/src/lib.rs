//! `presence`: Huddle's presence agent, as a plugin.
//!
//! It answers PUBLISH for `Event: presence` (RFC 3903: SIP-ETag, SIP-If-Match refresh, modify
//! and remove, 412, Min-Expires) with PIDF bodies (RFC 3863), composes every device's
//! publication into one document per user, and serves SUBSCRIBE for `presence` (RFC 3856)
//! and `presence.winfo` (RFC 3857) with NOTIFYs sent in the subscription dialog over the
//! subscriber's route set, so they reach a browser over its own WebSocket connection. A user
//! who is registered and published nothing is `open`; when the last registration goes (a
//! WebSocket closing included) watchers hear `closed` at once.
//!
//! The protocol lives in [`core`], a state machine without I/O driven in virtual time by its
//! tests; this file is the glue to the host: claims, requests and responses, timers,
//! registration events and the store.
//!
//! # Claims
//!
//! `PUBLISH` (any Event: PUBLISH is ours alone, and a PUBLISH without Event — what SIPml5
//! sends unless the application adds `Event: presence` — gets `489 Bad Event` with
//! `Allow-Events: presence` from us rather than a confusing answer from the proxy), and
//! `SUBSCRIBE` with `Event: presence` or `Event: presence.winfo` only: a conference plugin
//! claims `SUBSCRIBE` with `Event: conference`, the messaging plugin `MESSAGE`. A SUBSCRIBE
//! without Event (SIPml5's default too) matches no claim; because claims name packages for
//! SUBSCRIBE, the host answers it `489 Bad Event - Missing Event Header` with
//! `Allow-Events: presence, presence.winfo` (and the other plugins' packages) instead of
//! proxying it to the presentity's devices.
//!
//! # Store layout (`plugin/presence/`)
//!
//! | key | value |
//! |---|---|
//! | `pub/<aor>/<id>` | a publication ([`core::PublicationRecord`], JSON) |
//! | `sub/<id>` | a subscription dialog ([`core::SubscriptionRecord`], JSON) |
//! | `policy/<aor>` | allow/deny lists ([`core::Lists`], JSON), written by administrators |
//! | `presence/<aor>` | the composed PIDF document of `<aor>` (`user@domain`): **other plugins read this** (namespace `plugin/presence`) |
//!
//! At start-up the plugin restores publications and subscriptions, reads who is registered
//! from `location`, and sends every subscription its current state: watchers keep getting
//! NOTIFYs across a restart without subscribing again.

pub mod core;
pub mod notify;
pub mod pidf;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use huddle_sdk::{
    BatchOp, Capabilities, Claim, Claims, Config, Host, Method, Plugin, RegistrationEvent, Request,
    Response, Result, StoreChange, TimerId, Transport, WatchId,
};

use crate::core::{Core, Incoming, Lists, Now, Output, Policy, Settings};

/// The `[plugins.config]` table. Every key has a default.
#[derive(Debug, huddle_sdk::serde::Deserialize)]
#[serde(crate = "huddle_sdk::serde", default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// The domain presentities belong to (the server's `sip.domain`): `sip:bob@<any local
    /// host>` is `bob@<domain>`. Unset: the Request-URI's host.
    pub domain: Option<String>,
    /// `"domain"`: every authenticated user of the domain may watch every other one;
    /// `"lists"`: only those on the presentity's allow list (`policy/<aor>` in the store).
    pub policy: String,
    /// Whether watchers the server did not authenticate (other domains) may subscribe.
    pub allow_unauthenticated_watchers: bool,
    /// Smallest non-zero Expires (423 with Min-Expires below it).
    pub min_expires: u32,
    /// Largest Expires granted.
    pub max_expires: u32,
    /// Expires when the request has none.
    pub default_expires: u32,
    /// Publications (devices) per user.
    pub max_publications_per_user: usize,
    /// Subscriptions one watcher may hold.
    pub max_subscriptions_per_user: usize,
    /// Watchers per presentity.
    pub max_watchers_per_user: usize,
    /// Largest PIDF body, bytes.
    pub max_body: usize,
    /// Largest composed document, bytes: beyond it the least relevant publications (closed
    /// before open, older before newer) are left out, so a NOTIFY always fits in a message.
    pub max_document: usize,
    /// Store writes are gathered for this long and written once per key (0: every change is
    /// written at once). Presence is soft state that clients refresh, so a crash may lose the
    /// last window of changes; a clean shutdown writes everything.
    pub write_behind_ms: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        let l = core::Limits::default();
        PresenceConfig {
            domain: None,
            policy: "domain".to_owned(),
            allow_unauthenticated_watchers: false,
            min_expires: l.min_expires,
            max_expires: l.max_expires,
            default_expires: l.default_expires,
            max_publications_per_user: l.max_publications_per_user,
            max_subscriptions_per_user: l.max_subscriptions_per_user,
            max_watchers_per_user: l.max_watchers_per_user,
            max_body: l.max_body,
            max_document: l.max_document,
            write_behind_ms: 100,
        }
    }
}

impl PresenceConfig {
    fn settings(&self) -> Option<Settings> {
        let policy = match self.policy.as_str() {
            "domain" => Policy::Domain,
            "lists" => Policy::Lists,
            _ => return None,
        };
        if self.min_expires == 0 || self.min_expires > self.max_expires {
            return None;
        }
        Some(Settings {
            limits: core::Limits {
                min_expires: self.min_expires,
                max_expires: self.max_expires,
                default_expires: self
                    .default_expires
                    .clamp(self.min_expires, self.max_expires),
                max_publications_per_user: self.max_publications_per_user,
                max_subscriptions_per_user: self.max_subscriptions_per_user,
                max_watchers_per_user: self.max_watchers_per_user,
                max_body: self.max_body,
                max_document: self.max_document.max(self.max_body),
            },
            policy,
            domain: self.domain.clone(),
            allow_unauthenticated_watchers: self.allow_unauthenticated_watchers,
        })
    }
}

const PUB: &[u8] = b"pub/";
const SUB: &[u8] = b"sub/";
const POLICY: &[u8] = b"policy/";
const PRESENCE: &str = "presence/";
/// Timer tokens: the expiry timer and the write-behind flush.
const EXPIRY: u64 = 0;
const FLUSH: u64 = 1;
const RESEND: u64 = 2;
/// Store writes per batch (one durable commit); within the host's default limit of 1,024.
const FLUSH_BATCH: usize = 512;
/// How long NOTIFYs the host refused (too many requests in flight) wait before another try.
const RESEND_DELAY: Duration = Duration::from_millis(20);

/// The plugin instance.
#[derive(Debug)]
pub struct Presence {
    core: Core,
    /// The armed timer and the deadline it is for.
    timer: Option<(TimerId, Instant)>,
    policy_watch: Option<WatchId>,
    /// Store writes not yet made: key → value (`None`: delete), last write wins.
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Keys this plugin knows to be in the store: a key put and deleted within one
    /// write-behind window (a publish cycle, a short fetch) then costs no store call at all.
    in_store: HashSet<Vec<u8>>,
    write_behind: Duration,
    flush_timer: Option<TimerId>,
    resend_timer: Option<TimerId>,
}

fn now() -> Now {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    Now {
        mono: Instant::now(),
        unix_ms,
    }
}

impl Plugin for Presence {
    fn init(host: &Host, config: &Config, claims: &mut Claims) -> Result<Self> {
        let config: PresenceConfig = config.parse()?;
        let Some(settings) = config.settings() else {
            huddle_sdk::error!(
                host,
                "bad configuration: policy must be \"domain\" or \"lists\", 0 < min_expires <= max_expires"
            );
            return Err(huddle_sdk::Error::InvalidArgument);
        };
        claims.add(Claim::method("PUBLISH"));
        claims.add(Claim::method("SUBSCRIBE").with_event("presence"));
        claims.add(Claim::method("SUBSCRIBE").with_event("presence.winfo"));

        let salt = huddle_sdk::random_token(4);
        let mut core = Core::new(settings, &salt);
        let t = now();
        let store = host.store();
        let mut stale: Vec<Vec<u8>> = Vec::new();
        let mut in_store: HashSet<Vec<u8>> = HashSet::new();
        for (key, value) in store.scan_all(PUB)? {
            let ok = serde_json::from_slice(&value)
                .ok()
                .is_some_and(|rec| core.restore_publication(t, rec));
            if ok {
                in_store.insert(key);
            } else {
                stale.push(key);
            }
        }
        for (key, value) in store.scan_all(SUB)? {
            let ok = serde_json::from_slice(&value)
                .ok()
                .is_some_and(|rec| core.restore_subscription(t, rec));
            if ok {
                in_store.insert(key);
            } else {
                stale.push(key);
            }
        }
        for key in stale {
            store.delete(&key)?;
        }
        in_store.extend(
            store
                .scan_all(PRESENCE.as_bytes())?
                .into_iter()
                .map(|(key, _)| key),
        );
        for (key, value) in store.scan_all(POLICY)? {
            apply_policy(&mut core, t, &key, Some(&value));
        }
        let policy_watch = store.watch(POLICY).ok();
        // Who is registered now (bindings restored by the registrar produce no events).
        // Location keys are `<aor>/<binding>`.
        let mut counts: HashMap<String, u32> = HashMap::new();
        if let Ok(entries) = host.namespace("location").scan_all(b"") {
            for (key, _) in entries {
                let key = String::from_utf8_lossy(&key);
                if let Some((aor, _)) = key.rsplit_once('/') {
                    *counts.entry(aor.to_owned()).or_default() += 1;
                }
            }
        }
        for (aor, n) in counts {
            core.set_registered(&aor, n);
        }
        core.resume(t);
        let mut plugin = Presence {
            core,
            timer: None,
            policy_watch,
            pending: BTreeMap::new(),
            in_store,
            write_behind: Duration::from_millis(config.write_behind_ms),
            flush_timer: None,
            resend_timer: None,
        };
        plugin.drain(host);
        huddle_sdk::info!(
            host,
            "presence agent: {} subscriptions restored",
            plugin.core.subscription_count()
        );
        Ok(plugin)
    }

    fn handle_request(&mut self, host: &Host, request: Request) -> Result<()> {
        let t = now();
        let over_connection = !matches!(request.info().transport, Transport::Udp);
        let incoming = Incoming {
            msg: request.message(),
            auth_user: request.info().auth_user.as_deref(),
            over_connection,
            local_tag: request.local_tag(),
        };
        let reply = match request.method() {
            Method::Publish => self.core.publish(t, incoming),
            Method::Subscribe => self.core.subscribe(t, incoming),
            _ => {
                return host.respond(
                    request
                        .transaction()
                        .ok_or(huddle_sdk::Error::UnknownTransaction)?,
                    &request
                        .response(405, "Method Not Allowed")
                        .header("Allow", "PUBLISH, SUBSCRIBE")
                        .build(),
                )
            }
        };
        if let Some(txn) = request.transaction() {
            let mut b = request.response(reply.status, &reply.reason);
            for (name, value) in &reply.headers {
                b = b.header(name, value);
            }
            host.respond(txn, &b.build())?;
        }
        // The response first: the NOTIFYs it caused follow it.
        self.drain(host);
        Ok(())
    }

    fn handle_response(&mut self, host: &Host, response: Response) -> Result<()> {
        // NOTIFYs go out with `Huddle-Report: failures`: a failure is what arrives here (a host
        // without that support also hands over the 2xx, which need nothing).
        if !response.is_final() || response.status() < 300 {
            return Ok(());
        }
        let msg = response.message();
        let sub = msg
            .call_id()
            .zip(msg.from_header().ok().and_then(|f| f.tag()))
            .and_then(|(call_id, tag)| self.core.subscription_of(call_id, tag));
        if let Some(sub) = sub {
            huddle_sdk::debug!(
                host,
                "NOTIFY of subscription {sub} failed with {}: removing it",
                response.status()
            );
            self.core.notify_failed(now(), sub, response.status());
            self.drain(host);
        }
        Ok(())
    }

    fn on_timer(&mut self, host: &Host, timer: TimerId, token: u64) -> Result<()> {
        if token == FLUSH {
            self.flush_timer = None;
            self.flush(host);
            return Ok(());
        }
        if token == RESEND {
            self.resend_timer = None;
            self.core.resend(now());
            self.drain(host);
            return Ok(());
        }
        if self.timer.is_some_and(|(id, _)| id == timer) {
            self.timer = None;
        }
        self.core.handle_timeout(now());
        self.drain(host);
        Ok(())
    }

    fn shutdown(&mut self, host: &Host) {
        self.flush(host);
    }

    fn on_registration(&mut self, host: &Host, event: RegistrationEvent) -> Result<()> {
        let aor = event.aor.strip_prefix("sip:").unwrap_or(&event.aor);
        self.core.registration(now(), aor, event.bindings);
        self.drain(host);
        Ok(())
    }

    fn on_store_change(&mut self, host: &Host, change: StoreChange) -> Result<()> {
        if Some(change.watch()) != self.policy_watch {
            return Ok(());
        }
        let t = now();
        match change {
            StoreChange::Put { key, value, .. } => {
                apply_policy(&mut self.core, t, &key, Some(&value))
            }
            StoreChange::Delete { key, .. } => apply_policy(&mut self.core, t, &key, None),
            StoreChange::Lagged { .. } => {
                for (key, value) in host.store().scan_all(POLICY)? {
                    apply_policy(&mut self.core, t, &key, Some(&value));
                }
            }
        }
        self.drain(host);
        Ok(())
    }
}

/// Applies a `policy/<aor>` entry; an unreadable one counts as absent (and is logged by the
/// caller's absence of effect: a typo must not open a presentity up, so `lists` mode still
/// denies everyone not allowed).
fn apply_policy(core: &mut Core, t: Now, key: &[u8], value: Option<&[u8]>) {
    let Some(aor) = key
        .strip_prefix(POLICY)
        .and_then(|a| std::str::from_utf8(a).ok())
    else {
        return;
    };
    let lists = value.and_then(|v| serde_json::from_slice::<Lists>(v).ok());
    core.set_lists(t, aor, lists);
}

impl Presence {
    /// Carries out everything the core asked for, then re-arms the timer.
    fn drain(&mut self, host: &Host) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Notify(n) => match host.send_request(&n.bytes) {
                    Ok(_) => {}
                    // The host holds too many of our requests: try again shortly with the
                    // state of then (a final NOTIFY is not retried: its subscription is gone).
                    Err(huddle_sdk::Error::Busy) if !n.is_terminal() => {
                        self.core.notify_unsent(n.subscription);
                    }
                    Err(e) => huddle_sdk::warn!(
                        host,
                        "NOTIFY of subscription {} not sent: {e}",
                        n.subscription
                    ),
                },
                Output::SavePublication(rec) => {
                    let key = pub_key(&rec.aor, rec.id);
                    self.write(key, serde_json::to_vec(&rec).ok());
                }
                Output::DeletePublication { aor, id } => self.write(pub_key(&aor, id), None),
                Output::SaveSubscription(rec) => {
                    self.write(sub_key(rec.id), serde_json::to_vec(&rec).ok());
                }
                Output::DeleteSubscription(id) => self.write(sub_key(id), None),
                Output::Composed { aor, document } => self.write(
                    format!("{PRESENCE}{aor}").into_bytes(),
                    document.map(String::into_bytes),
                ),
            }
        }
        if self.core.has_unsent() && self.resend_timer.is_none() {
            match host.set_timer(RESEND_DELAY, RESEND) {
                Ok(id) => self.resend_timer = Some(id),
                Err(e) => huddle_sdk::warn!(host, "cannot arm the NOTIFY retry timer: {e}"),
            }
        }
        if self.write_behind.is_zero() {
            self.flush(host);
        } else if !self.pending.is_empty() && self.flush_timer.is_none() {
            match host.set_timer(self.write_behind, FLUSH) {
                Ok(id) => self.flush_timer = Some(id),
                Err(e) => {
                    huddle_sdk::warn!(host, "cannot arm the write-behind timer ({e}): writing now");
                    self.flush(host);
                }
            }
        }
        self.arm(host);
    }

    fn write(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        if value.is_none() && !self.in_store.contains(&key) {
            // Never written: forget the pending put instead of deleting an absent key.
            self.pending.remove(&key);
            return;
        }
        self.pending.insert(key, value);
    }

    /// Makes the pending store writes: one durable commit per [`FLUSH_BATCH`] keys (a fan-out
    /// or a write-behind window of publish cycles used to cost a commit, and an fdatasync,
    /// per key). A host that refuses the batch (over its `[store]` limits, or before ABI 1.3)
    /// gets the writes one by one.
    fn flush(&mut self, host: &Host) {
        if self.pending.is_empty() {
            return;
        }
        let store = host.store();
        let pending: Vec<(Vec<u8>, Option<Vec<u8>>)> =
            std::mem::take(&mut self.pending).into_iter().collect();
        for chunk in pending.chunks(FLUSH_BATCH) {
            let ops: Vec<BatchOp<'_>> = chunk
                .iter()
                .map(|(key, value)| match value {
                    Some(value) => BatchOp::Put { key, value },
                    None => BatchOp::Delete { key },
                })
                .collect();
            match store.apply_batch(&ops) {
                Ok(()) => {
                    for (key, value) in chunk {
                        self.stored(key, value.is_some());
                    }
                }
                Err(huddle_sdk::Error::TooLarge | huddle_sdk::Error::NotSupported) => {
                    for (key, value) in chunk {
                        self.write_one(host, key, value.as_deref());
                    }
                }
                Err(e) => {
                    huddle_sdk::warn!(host, "store batch of {} writes failed: {e}", chunk.len())
                }
            }
        }
    }

    /// One store write, outside a batch.
    fn write_one(&mut self, host: &Host, key: &[u8], value: Option<&[u8]>) {
        let store = host.store();
        let result = match value {
            Some(v) => store.put(key, v),
            None => store.delete(key).map(|_| ()),
        };
        match result {
            Ok(()) => self.stored(key, value.is_some()),
            Err(e) => huddle_sdk::warn!(
                host,
                "store write of {} failed: {e}",
                String::from_utf8_lossy(key)
            ),
        }
    }

    /// Records that `key` is (`present`) or is not in the store.
    fn stored(&mut self, key: &[u8], present: bool) {
        if present {
            if !self.in_store.contains(key) {
                self.in_store.insert(key.to_vec());
            }
        } else {
            self.in_store.remove(key);
        }
    }

    /// Keeps one host timer at or before the core's next deadline. A timer armed for an
    /// earlier deadline that went away (a publication removed) is kept: it fires, finds
    /// nothing due and re-arms. Moving it on every change cost a timer cancelled and one set
    /// (two wake-ups of the host's timer thread) per PUBLISH.
    fn arm(&mut self, host: &Host) {
        let Some(at) = self.core.poll_timeout() else {
            return;
        };
        if let Some((id, armed)) = self.timer {
            if armed <= at {
                return;
            }
            let _ = host.cancel_timer(id);
            self.timer = None;
        }
        // Rounded up to the host's millisecond resolution, so the timer never fires just
        // before the deadline and spins.
        let delay = at.saturating_duration_since(Instant::now()) + Duration::from_millis(1);
        match host.set_timer(delay, EXPIRY) {
            Ok(id) => self.timer = Some((id, at)),
            Err(e) => huddle_sdk::warn!(host, "cannot arm the expiry timer: {e}"),
        }
    }
}

fn pub_key(aor: &str, id: u64) -> Vec<u8> {
    format!("pub/{aor}/{id:020}").into_bytes()
}

fn sub_key(id: u64) -> Vec<u8> {
    format!("sub/{id:020}").into_bytes()
}

// Its allocations go to the host's allocator (ABI 1.11; the system's on an older host), as the
// messaging plugin's: the crate's rlib is linked only by its own tests.
huddle_sdk::use_host_allocator!();

huddle_sdk::export_plugin!(
    Presence,
    "presence",
    env!("CARGO_PKG_VERSION"),
    Capabilities::SEND_REQUEST
        .with(Capabilities::STORE)
        .with(Capabilities::STORE_WATCH)
        .with(Capabilities::TIMERS)
        .with(Capabilities::LOCATION)
        .with(Capabilities::REGISTRATION_EVENTS)
);

#[cfg(test)]
mod tests;
