//! Webhooks: JSON events POSTed to the URLs of `[webhooks]`, signed with HMAC-SHA256.
//!
//! It owns the event envelope, the signature, the per-URL queues and the delivery tasks.
//!
//! * **Raising** ([`Webhooks::emit`]) never waits: the SIP thread (registrations), plugin
//!   threads (`emit_event`, ABI 1.2) and the media path call it. The event is serialised once
//!   and offered to each URL's bounded queue with `try_send`; a full queue drops it for that
//!   URL, counted in `huddle_webhook_events_total{outcome="dropped"}` and logged (the first
//!   drop, then every 1000th), never a stall.
//! * **Delivering**: one tokio task per URL takes events in order and POSTs them one at a time
//!   over a kept-alive HTTP/1.1 connection (hyper's client: hyper, hyper-util and
//!   http-body-util are already in the tree under axum, so no new crates — reqwest would add a
//!   second HTTP stack and, by default, a TLS stack). A 2xx is delivered; anything else (no
//!   connection, a timeout, another status) is retried after `retry_initial_ms`, doubling up
//!   to `retry_max_ms`, until `retry_budget_secs` have passed since the first attempt; then
//!   the event is given up (`outcome="expired"`) and the next one goes. Order is kept per URL
//!   (head-of-line: a receiver that is down holds its own queue, nobody else's).
//! * **Signing** ([`signature`]): `Huddle-Signature: t=<unix seconds>,v1=<hex>` where `<hex>` is
//!   HMAC-SHA256 keyed with `secret` over `<t>.<body>` (the raw body bytes). A receiver
//!   recomputes it, compares in constant time and refuses a `t` far from its clock (replays).
//!   `Huddle-Event` carries the type and `Huddle-Delivery` the event id (the same on retries,
//!   so a receiver can drop duplicates).
//!
//! Only `http://` URLs: the server has no CA bundle to verify a webhook receiver's certificate
//! with; put a TLS-terminating proxy in front of a remote receiver.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper::client::conn::http1;
use hyper::Uri;
use serde::Deserialize;
use sha2::Sha256;
use tokio::sync::mpsc;

/// `[webhooks]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Where events go (`http://host:port/path`). Empty: no webhooks.
    pub urls: Vec<String>,
    /// The HMAC-SHA256 key; required when `urls` is not empty.
    pub secret: Option<String>,
    /// Only these event types (empty: all).
    pub events: Vec<String>,
    /// Events waiting per URL before new ones are dropped.
    pub queue_len: usize,
    /// One attempt's time limit.
    pub timeout_ms: u64,
    /// The first retry's delay; each retry doubles it up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    /// The longest delay between two attempts.
    pub retry_max_ms: u64,
    /// An event not delivered this long after its first attempt is given up.
    pub retry_budget_secs: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            urls: Vec::new(),
            secret: None,
            events: Vec::new(),
            queue_len: 10_000,
            timeout_ms: 5_000,
            retry_initial_ms: 200,
            retry_max_ms: 30_000,
            retry_budget_secs: 300,
        }
    }
}

/// What is wrong with `[webhooks]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigProblem {
    /// A URL that does not parse, or is not `http://host[:port]/...`.
    #[error("urls: {0:?} is not an http://host[:port]/path URL (https is not supported: put a TLS-terminating proxy in front)")]
    BadUrl(String),
    /// URLs without a secret.
    #[error("secret must be set (and not empty) when urls is not empty")]
    NoSecret,
    /// A bound out of range.
    #[error("queue_len must be 1..=1000000, timeout_ms and retry_initial_ms at least 1, retry_max_ms at least retry_initial_ms")]
    Bounds,
    /// An event type filter that no event could have.
    #[error("events: {0:?} is not an event type ([a-z0-9._-], 1 to 64 characters)")]
    BadEvent(String),
}

impl WebhooksConfig {
    /// Checks the section (called by `Config::from_toml`).
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        for url in &self.urls {
            target(url)?;
        }
        if !self.urls.is_empty() && self.secret.as_deref().is_none_or(str::is_empty) {
            return Err(ConfigProblem::NoSecret);
        }
        if !(1..=1_000_000).contains(&self.queue_len)
            || self.timeout_ms == 0
            || self.retry_initial_ms == 0
            || self.retry_max_ms < self.retry_initial_ms
        {
            return Err(ConfigProblem::Bounds);
        }
        if let Some(bad) = self
            .events
            .iter()
            .find(|e| !huddle_sdk::hosting::valid_event_kind(e))
        {
            return Err(ConfigProblem::BadEvent(bad.clone()));
        }
        Ok(())
    }
}

/// Where one URL's events go.
#[derive(Debug, Clone)]
struct Target {
    uri: Uri,
    host: String,
    port: u16,
}

fn target(url: &str) -> Result<Target, ConfigProblem> {
    let bad = || ConfigProblem::BadUrl(url.to_owned());
    let uri: Uri = url.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("http") {
        return Err(bad());
    }
    let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(bad)?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(80);
    Ok(Target { uri, host, port })
}

/// The `Huddle-Signature` header value of `body` sent at `t` (unix seconds):
/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &[u8], t: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts any key");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    format!("t={t},v1={hex}")
}

/// One event, serialised once for every URL.
#[derive(Debug)]
struct Event {
    id: u64,
    kind: String,
    body: Bytes,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The running webhooks: the queues' senders and the delivery tasks.
#[derive(Debug)]
pub struct Webhooks {
    sinks: Vec<(String, mpsc::Sender<Arc<Event>>)>,
    filter: Vec<String>,
    next_id: AtomicU64,
    dropped: AtomicU64,
    ops: Arc<crate::admin::Ops>,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Webhooks {
    /// Starts one delivery task per URL on the current runtime. `None` without URLs.
    pub fn start(config: &WebhooksConfig, ops: Arc<crate::admin::Ops>) -> Option<Webhooks> {
        if config.urls.is_empty() {
            return None;
        }
        let secret: Arc<[u8]> = config
            .secret
            .clone()
            .unwrap_or_default()
            .into_bytes()
            .into();
        let mut sinks = Vec::new();
        let mut tasks = Vec::new();
        for url in &config.urls {
            // Checked by `validate` when the config was read.
            let Ok(target) = target(url) else { continue };
            let (tx, rx) = mpsc::channel(config.queue_len);
            let delivery = Delivery {
                target,
                secret: secret.clone(),
                timeout: Duration::from_millis(config.timeout_ms),
                initial: Duration::from_millis(config.retry_initial_ms),
                max: Duration::from_millis(config.retry_max_ms),
                budget: Duration::from_secs(config.retry_budget_secs),
                ops: ops.clone(),
                sender: None,
            };
            tasks.push(tokio::spawn(delivery.run(rx)).abort_handle());
            sinks.push((url.clone(), tx));
        }
        tracing::info!(urls = %config.urls.join(", "), "webhooks on");
        Some(Webhooks {
            sinks,
            filter: config.events.clone(),
            next_id: AtomicU64::new(1),
            dropped: AtomicU64::new(0),
            ops,
            tasks: Mutex::new(tasks),
        })
    }

    /// Whether an event of `kind` goes anywhere (`[webhooks] events` empty, or naming it):
    /// what plugins ask before building an event's details (`event_wanted`, ABI 1.8).
    pub fn takes(&self, kind: &str) -> bool {
        self.filter.is_empty() || self.filter.iter().any(|f| f == kind)
    }

    /// Queues event `kind` from `source` (`huddle`, or a plugin instance's name) with
    /// `data` (a JSON object as text, already checked or built by us). Never waits.
    pub fn emit(&self, kind: &str, source: &str, data: &str) {
        if !self.takes(kind) {
            return;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = format!(
            "{{\"id\":{id},\"type\":{},\"ts_ms\":{},\"source\":{},\"data\":{data}}}",
            serde_json::Value::from(kind),
            unix_ms(),
            serde_json::Value::from(source),
        );
        let event = Arc::new(Event {
            id,
            kind: kind.to_owned(),
            body: Bytes::from(body),
        });
        for (url, sink) in &self.sinks {
            if sink.try_send(event.clone()).is_err() {
                self.ops.metrics.webhook_outcome(WebhookOutcome::Dropped);
                let n = self.dropped.fetch_add(1, Ordering::Relaxed);
                if n.is_multiple_of(1000) {
                    tracing::warn!(url, kind, dropped = n + 1, "webhook event dropped: the queue for this URL is full (receiver slow or down)");
                }
            }
        }
    }

    /// Stops the delivery tasks (events still queued are lost).
    pub fn stop(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
    }
}

/// What became of an event at one URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// A 2xx came back.
    Delivered,
    /// The queue was full when it was raised.
    Dropped,
    /// Not delivered within the retry budget.
    Expired,
}

/// One URL's delivery loop.
struct Delivery {
    target: Target,
    secret: Arc<[u8]>,
    timeout: Duration,
    initial: Duration,
    max: Duration,
    budget: Duration,
    ops: Arc<crate::admin::Ops>,
    /// The kept-alive connection, when one is open.
    sender: Option<http1::SendRequest<Full<Bytes>>>,
}

impl Delivery {
    async fn run(mut self, mut rx: mpsc::Receiver<Arc<Event>>) {
        while let Some(event) = rx.recv().await {
            let first = tokio::time::Instant::now();
            let mut delay = self.initial;
            loop {
                let outcome = tokio::time::timeout(self.timeout, self.attempt(&event)).await;
                let failure = match outcome {
                    Ok(Ok(())) => {
                        self.ops.metrics.webhook_outcome(WebhookOutcome::Delivered);
                        break;
                    }
                    Ok(Err(why)) => why,
                    Err(_) => format!("no answer within {:?}", self.timeout),
                };
                // A failed or timed-out exchange leaves the connection in an unknown state.
                self.sender = None;
                self.ops.metrics.webhook_retry();
                let spent = first.elapsed();
                if spent + delay > self.budget {
                    self.ops.metrics.webhook_outcome(WebhookOutcome::Expired);
                    tracing::warn!(url = %self.target.uri, id = event.id, kind = %event.kind, error = %failure, "webhook event given up: retry budget spent");
                    break;
                }
                tracing::debug!(url = %self.target.uri, id = event.id, error = %failure, retry_in = ?delay, "webhook attempt failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(self.max);
            }
        }
    }

    /// One POST; `Err` says why it did not count as delivered.
    async fn attempt(&mut self, event: &Event) -> Result<(), String> {
        // A kept-alive connection is reused until the receiver closes it.
        let usable = self.sender.as_ref().is_some_and(|s| !s.is_closed());
        if !usable {
            self.sender = Some(self.connect().await?);
        }
        let sender = self.sender.as_mut().ok_or("no connection")?;
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let path = self
            .target
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let host = match self.target.port {
            80 => self.target.host.clone(),
            port => format!("{}:{port}", self.target.host),
        };
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header("Huddle-Event", event.kind.as_str())
            .header("Huddle-Delivery", event.id.to_string())
            .header("Huddle-Signature", signature(&self.secret, t, &event.body))
            .body(Full::new(event.body.clone()))
            .map_err(|e| e.to_string())?;
        sender.ready().await.map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        // Read the body to the end so the connection can carry the next event.
        let _ = http_body_util::BodyExt::collect(response.into_body()).await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    }

    async fn connect(&self) -> Result<http1::SendRequest<Full<Bytes>>, String> {
        let stream = tokio::net::TcpStream::connect((self.target.host.as_str(), self.target.port))
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Any change to t, body or key changes it.
        let a = signature(b"key", 1_700_000_000, b"{\"id\":1}");
        assert!(a.starts_with("t=1700000000,v1="), "{a}");
        assert_eq!(a.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(a, signature(b"key", 1_700_000_001, b"{\"id\":1}"));
        assert_ne!(a, signature(b"key", 1_700_000_000, b"{\"id\":2}"));
        assert_ne!(a, signature(b"other", 1_700_000_000, b"{\"id\":1}"));
    }

    #[test]
    fn signature_matches_a_known_hmac() {
        // HMAC-SHA256("Jefe", "1.x"), computed independently with
        // `printf '1.x' | openssl dgst -sha256 -hmac Jefe`.
        assert_eq!(
            signature(b"Jefe", 1, b"x"),
            "t=1,v1=2f7ccbd0f043456ad29514b2d24a8aa345ec6673a5db1b44e91c8ac99d1841e3"
        );
    }

    #[test]
    fn config_is_checked() {
        let ok = WebhooksConfig {
            urls: vec!["http://127.0.0.1:9000/hook".into()],
            secret: Some("s".into()),
            ..WebhooksConfig::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        let https = WebhooksConfig {
            urls: vec!["https://example.test/hook".into()],
            ..ok.clone()
        };
        assert!(matches!(https.validate(), Err(ConfigProblem::BadUrl(_))));
        let no_secret = WebhooksConfig {
            secret: None,
            ..ok.clone()
        };
        assert_eq!(no_secret.validate(), Err(ConfigProblem::NoSecret));
        let bad_event = WebhooksConfig {
            events: vec!["Room Created".into()],
            ..ok.clone()
        };
        assert!(matches!(
            bad_event.validate(),
            Err(ConfigProblem::BadEvent(_))
        ));
        let zero = WebhooksConfig { queue_len: 0, ..ok };
        assert_eq!(zero.validate(), Err(ConfigProblem::Bounds));
        assert_eq!(WebhooksConfig::default().validate(), Ok(()));
    }
}
