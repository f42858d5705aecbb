//! A webhook receiver for tests: a small axum server on loopback that records every POST
//! (the `Huddle-*` headers and the raw body) and checks signatures with its own HMAC-SHA256,
//! so a test proves what a real receiver would see.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::mpsc;

/// One event as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// `Huddle-Signature`.
    pub signature: String,
    /// `Huddle-Event`.
    pub kind_header: String,
    /// The parsed body.
    pub body: serde_json::Value,
    /// The raw body.
    pub raw: Vec<u8>,
}

impl Received {
    /// The event's `type`.
    pub fn kind(&self) -> &str {
        self.body["type"].as_str().unwrap_or("")
    }

    /// Whether `Huddle-Signature: t=..,v1=..` is HMAC-SHA256(secret, "<t>.<raw body>").
    pub fn signed_with(&self, secret: &str) -> bool {
        let mut t = None;
        let mut v1 = None;
        for part in self.signature.split(',') {
            match part.split_once('=') {
                Some(("t", v)) => t = Some(v.to_owned()),
                Some(("v1", v)) => v1 = Some(v.to_owned()),
                _ => {}
            }
        }
        let (Some(t), Some(v1)) = (t, v1) else {
            return false;
        };
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key");
        mac.update(t.as_bytes());
        mac.update(b".");
        mac.update(&self.raw);
        let Ok(given) = (0..v1.len() / 2)
            .map(|i| u8::from_str_radix(v1.get(2 * i..2 * i + 2).unwrap_or("zz"), 16))
            .collect::<Result<Vec<u8>, _>>()
        else {
            return false;
        };
        // Constant-time comparison, as a receiver should.
        mac.verify_slice(&given).is_ok()
    }
}

/// A running receiver.
#[derive(Debug)]
pub struct Receiver {
    /// Where it listens; the webhook URL is `http://{addr}/hook`.
    pub addr: SocketAddr,
    events: mpsc::UnboundedReceiver<Received>,
    task: tokio::task::JoinHandle<()>,
}

async fn hook(
    State(tx): State<mpsc::UnboundedSender<Received>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let Ok(parsed) = serde_json::from_slice(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let _ = tx.send(Received {
        signature: header("huddle-signature"),
        kind_header: header("huddle-event"),
        body: parsed,
        raw: body.to_vec(),
    });
    StatusCode::NO_CONTENT
}

impl Receiver {
    /// Listens on `addr` (port 0: any).
    pub async fn start(addr: SocketAddr) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("the receiver binds");
        let addr = listener.local_addr().expect("bound");
        let (tx, events) = mpsc::unbounded_channel();
        let app = Router::new().route("/hook", post(hook)).with_state(tx);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, events, task }
    }

    /// The webhook URL.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The next event, within `limit`; panics naming `what` otherwise.
    pub async fn next(&mut self, what: &str, limit: Duration) -> Received {
        tokio::time::timeout(limit, self.events.recv())
            .await
            .unwrap_or_else(|_| panic!("no webhook event ({what}) within {limit:?}"))
            .expect("the receiver runs")
    }

    /// The next event whose type is `kind` (others before it are returned too, in order).
    pub async fn until(&mut self, kind: &str, limit: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let ev = self.next(kind, left).await;
            let done = ev.kind() == kind;
            seen.push(ev);
            if done {
                return seen;
            }
        }
    }

    /// Stops listening.
    pub fn stop(self) {
        self.task.abort();
    }
}
