//! One simulated SIPml5 browser tab: a WebSocket connection (subprotocol `sip`, text frames), one
//! user, its registration and its MESSAGEs, driven by the stage `main` broadcasts. Every
//! outstanding request has a deadline, so each stage ends within the response timeout.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use huddle_sip::{HeaderName, Message, Method};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;

use crate::digest::{md5_hex, parse_challenge, Auth};

/// SIPml5's hard-coded Via and Contact host.
const INVALID_HOST: &str = "df7jal23ls0d.invalid";
/// Requests in flight on one connection before a send counts as failed ("backlog").
const MAX_PENDING: usize = 64;

type Ws = WebSocketStream<TcpStream>;

/// What every connection shares, fixed for the whole run.
#[derive(Debug)]
pub struct Settings {
    pub url: String,
    pub host_port: String,
    pub domain: String,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub expires: u32,
    /// MESSAGE load (else REGISTER refreshes).
    pub message_phase: bool,
    /// Remove each user's other bindings before registering it.
    pub clear_bindings: bool,
    /// Distinguishes this process's branches, tags and Call-IDs from an earlier run's.
    pub run_tag: String,
}

/// One connection's user and the user it sends MESSAGEs to.
#[derive(Debug)]
pub struct Identity {
    pub idx: usize,
    pub user: String,
    pub password: String,
    pub peer: String,
}

/// The stage `main` asks for. Connections react to every change.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// Registered, answering what arrives.
    Idle,
    /// Send one MESSAGE at `start` + idx × `spacing` (407 round included) so later ones carry
    /// credentials.
    Prime { start: Instant, spacing: Duration },
    /// Load: one request every `period`, the first at `start` + idx/`connections` of a period,
    /// none from `end` on.
    Run {
        id: u32,
        start: Instant,
        period: Duration,
        end: Instant,
        connections: usize,
    },
    /// Unregister, close the WebSocket and end the task.
    Close,
}

/// Per-run counters of one connection (merged by `main`).
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    /// Challenges answered during the run (a 401/407, `stale=true` or a new nonce).
    pub retries: u64,
    pub stale: u64,
    /// Send to final response of each successful operation, retry round included.
    pub latency_us: Vec<u32>,
    pub failures: BTreeMap<String, u64>,
}

impl Stats {
    pub fn merge(&mut self, other: Stats) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.failed += other.failed;
        self.retries += other.retries;
        self.stale += other.stale;
        self.latency_us.extend(other.latency_us);
        for (k, v) in other.failures {
            *self.failures.entry(k).or_default() += v;
        }
    }

    fn fail(&mut self, reason: &str) {
        self.failed += 1;
        *self.failures.entry(reason.to_owned()).or_default() += 1;
    }
}

/// What a connection tells `main`.
#[derive(Debug)]
pub enum Report {
    Setup(Result<(), String>),
    Primed(Result<(), String>),
    Ran(u32, Stats),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// `Contact: *` removal of the user's earlier bindings, before `Setup`.
    Clear,
    Setup,
    Prime,
    Load(u32),
    Unregister,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Register {
        expires: u32,
    },
    /// REGISTER `Contact: *` with `Expires: 0`.
    ClearBindings,
    Message {
        call_no: u64,
    },
}

#[derive(Debug)]
struct Pending {
    cseq: u32,
    kind: Kind,
    purpose: Purpose,
    first_sent: Instant,
    deadline: Instant,
    retried: bool,
}

#[derive(Debug)]
struct Run {
    id: u32,
    next: Option<Instant>,
    period: Duration,
    end: Instant,
    stats: Stats,
}

/// Opens the WebSocket like `new WebSocket(url, 'sip')`, bounded by the connect timeout.
async fn connect(cfg: &Settings) -> Result<Ws, String> {
    let mut request = cfg
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("bad url: {e}"))?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
    // Thousands of mostly idle connections: tungstenite's 128 KiB read buffer each would be
    // hundreds of MB; SIP messages here are < 2 KB. Each message goes out at once.
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0);
    let handshake = async {
        let tcp = TcpStream::connect(&cfg.host_port)
            .await
            .map_err(|e| format!("connect {}", e.kind()))?;
        let _ = tcp.set_nodelay(true);
        tokio_tungstenite::client_async_with_config(request, tcp, Some(config))
            .await
            .map_err(|e| format!("handshake {e}"))
    };
    let (ws, response) = timeout(cfg.connect_timeout, handshake)
        .await
        .map_err(|_| "connect timeout".to_owned())??;
    match response.headers().get("Sec-WebSocket-Protocol") {
        Some(v) if v.as_bytes().eq_ignore_ascii_case(b"sip") => Ok(ws),
        _ => Err("server did not select the sip subprotocol".to_owned()),
    }
}

/// The life of one connection: connect and register (holding a ramp-up permit), then follow
/// `stage` until [`Stage::Close`]. Reports go to `reports` (sized so a send never waits); the
/// task ends once closed, or right after a failed `Setup`. Returns true when the user was
/// registered and its unregistration was confirmed.
pub async fn run(
    id: Identity,
    cfg: Arc<Settings>,
    permit: OwnedSemaphorePermit,
    mut stage: watch::Receiver<Stage>,
    reports: mpsc::Sender<Report>,
) -> bool {
    let ws = match connect(&cfg).await {
        Ok(ws) => ws,
        Err(e) => {
            let _ = reports.send(Report::Setup(Err(e))).await;
            return false;
        }
    };
    let mut ua = Ua {
        reg_call_id: format!("r{}-{}@wsload", cfg.run_tag, id.idx),
        tag: format!("{}x{}", cfg.run_tag, id.idx),
        id,
        cfg,
        ws: Some(ws),
        reports,
        permit: Some(permit),
        cseq: 0,
        seq: 0,
        reg_auth: None,
        msg_auth: None,
        pending: Vec::new(),
        register_now: false,
        registered: false,
        unregistered: false,
        setup_failed: false,
        prime_at: None,
        run: None,
        closing: false,
    };
    if ua.cfg.clear_bindings {
        ua.send_new(Kind::ClearBindings, Purpose::Clear).await;
    } else {
        let expires = ua.cfg.expires;
        ua.send_new(Kind::Register { expires }, Purpose::Setup)
            .await;
    }
    loop {
        if ua.setup_failed || (ua.closing && ua.pending.is_empty()) {
            break;
        }
        let wake = [
            ua.pending.iter().map(|p| p.deadline).min(),
            ua.prime_at,
            ua.run.as_ref().and_then(|r| r.next),
        ]
        .into_iter()
        .flatten()
        .min();
        tokio::select! {
            changed = stage.changed(), if !ua.closing => {
                let next = match changed {
                    Ok(()) => stage.borrow_and_update().clone(),
                    Err(_) => Stage::Close,
                };
                ua.on_stage(next).await;
            }
            frame = next_frame(&mut ua.ws) => ua.on_frame(frame).await,
            () = sleep_opt(wake) => ua.on_timer().await,
        }
        if std::mem::take(&mut ua.register_now) {
            let expires = ua.cfg.expires;
            ua.send_new(Kind::Register { expires }, Purpose::Setup)
                .await;
        }
        ua.report_finished_run().await;
    }
    if let Some(mut ws) = ua.ws.take() {
        let _ = timeout(Duration::from_secs(1), ws.close(None)).await;
    }
    ua.unregistered
}

async fn next_frame(ws: &mut Option<Ws>) -> Option<Result<WsMessage, tungstenite::Error>> {
    match ws {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[derive(Debug)]
struct Ua {
    id: Identity,
    cfg: Arc<Settings>,
    ws: Option<Ws>,
    reports: mpsc::Sender<Report>,
    /// The registration's Call-ID and From tag, kept for refreshes as SIPml5 does.
    reg_call_id: String,
    tag: String,
    /// Ramp-up slot, released once the first registration is done.
    permit: Option<OwnedSemaphorePermit>,
    /// One CSeq space for every request of this connection, so a response finds its request by
    /// CSeq alone.
    cseq: u32,
    /// Branches, MESSAGE Call-IDs and cnonces.
    seq: u64,
    reg_auth: Option<Auth>,
    msg_auth: Option<Auth>,
    pending: Vec<Pending>,
    /// The bindings are cleared: send the real first REGISTER.
    register_now: bool,
    registered: bool,
    unregistered: bool,
    setup_failed: bool,
    prime_at: Option<Instant>,
    run: Option<Run>,
    closing: bool,
}

impl Ua {
    async fn on_stage(&mut self, stage: Stage) {
        match stage {
            Stage::Idle => {}
            Stage::Prime { start, spacing } => {
                self.prime_at = Some(start + spacing * self.id.idx as u32);
            }
            Stage::Run {
                id,
                start,
                period,
                end,
                connections,
            } => {
                let offset = period.as_secs_f64() * self.id.idx as f64 / connections.max(1) as f64;
                let first = start + Duration::from_secs_f64(offset);
                self.run = Some(Run {
                    id,
                    next: (first < end).then_some(first),
                    period,
                    end,
                    stats: Stats::default(),
                });
            }
            Stage::Close => {
                self.closing = true;
                self.prime_at = None;
                self.run = None;
                // Like SIPml5's stack.stop(): remove the binding before closing, so the next
                // run's registrations do not fork to a dead connection on a registrar that
                // keeps bindings after their connection closed.
                if self.registered && self.ws.is_some() {
                    self.send_new(Kind::Register { expires: 0 }, Purpose::Unregister)
                        .await;
                }
            }
        }
    }

    async fn on_timer(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].deadline <= now {
                let p = self.pending.swap_remove(i);
                self.finish(&p, Err("timeout".to_owned())).await;
            } else {
                i += 1;
            }
        }
        if self.prime_at.is_some_and(|at| at <= now) {
            self.prime_at = None;
            self.send_new(Kind::Message { call_no: 0 }, Purpose::Prime)
                .await;
        }
        // Open loop: sends that fell behind go out now rather than being skipped.
        while let Some(run) = &mut self.run {
            let Some(next) = run.next.filter(|&t| t <= now) else {
                break;
            };
            let after = next + run.period;
            run.next = (after < run.end).then_some(after);
            let id = run.id;
            let kind = if self.cfg.message_phase {
                Kind::Message { call_no: 0 }
            } else {
                Kind::Register {
                    expires: self.cfg.expires,
                }
            };
            self.send_new(kind, Purpose::Load(id)).await;
        }
    }

    /// Reports a run whose sends are over and whose requests all finished.
    async fn report_finished_run(&mut self) {
        let Some(run) = &self.run else { return };
        let id = run.id;
        if run.next.is_some() || self.pending.iter().any(|p| p.purpose == Purpose::Load(id)) {
            return;
        }
        if let Some(run) = self.run.take() {
            let _ = self.reports.send(Report::Ran(id, run.stats)).await;
        }
    }

    /// Starts a new operation: a request without a retry so far.
    async fn send_new(&mut self, mut kind: Kind, purpose: Purpose) {
        if let Purpose::Load(_) = purpose {
            let Some(run) = &mut self.run else { return };
            run.stats.sent += 1;
            if self.ws.is_none() {
                run.stats.fail("closed");
                return;
            }
            if self.pending.len() >= MAX_PENDING {
                run.stats.fail("backlog");
                return;
            }
        }
        if let Kind::Message { call_no } = &mut kind {
            self.seq += 1;
            *call_no = self.seq;
        }
        let now = Instant::now();
        let p = Pending {
            cseq: 0,
            kind,
            purpose,
            first_sent: now,
            deadline: now,
            retried: false,
        };
        self.transmit(p).await;
    }

    /// Sends (or re-sends, with a new CSeq and branch) the request of `p` and tracks it.
    async fn transmit(&mut self, mut p: Pending) {
        self.cseq = self.cseq.wrapping_add(1);
        self.seq += 1;
        p.cseq = self.cseq;
        let initial = p.purpose == Purpose::Setup && !p.retried;
        let mut buf = String::with_capacity(1024);
        let cfg = &self.cfg;
        let user = &self.id.user;
        match p.kind {
            Kind::Register { .. } | Kind::ClearBindings => {
                let uri = format!("sip:{}", cfg.domain);
                let contact = match p.kind {
                    Kind::Register { expires } => format!(
                        "Contact: <sip:{user}@{INVALID_HOST};transport=ws>;expires={expires}"
                    ),
                    _ => "Contact: *\r\nExpires: 0".to_owned(),
                };
                let _ = write!(
                    buf,
                    "REGISTER {uri} SIP/2.0\r\n\
                     Via: SIP/2.0/WS {INVALID_HOST};branch=z9hG4bK{}b{}x{};rport\r\n\
                     From: \"{user}\"<sip:{user}@{d}>;tag={}\r\n\
                     To: \"{user}\"<sip:{user}@{d}>\r\n\
                     {contact}\r\n\
                     Call-ID: {}\r\n\
                     CSeq: {} REGISTER\r\n\
                     Content-Length: 0\r\n\
                     Max-Forwards: 70\r\n\
                     User-Agent: wsload\r\n",
                    cfg.run_tag,
                    self.id.idx,
                    self.seq,
                    self.tag,
                    self.reg_call_id,
                    p.cseq,
                    d = cfg.domain,
                );
                if let Some(auth) = &mut self.reg_auth {
                    auth.write_header(&mut buf, "REGISTER", &uri);
                }
                if initial {
                    buf.push_str("Supported: path\r\n");
                }
                buf.push_str("\r\n");
            }
            Kind::Message { call_no } => {
                let peer = &self.id.peer;
                let uri = format!("sip:{peer}@{}", cfg.domain);
                let body = format!("hello {peer} {call_no:06}");
                let _ = write!(
                    buf,
                    "MESSAGE {uri} SIP/2.0\r\n\
                     Via: SIP/2.0/WS {INVALID_HOST};branch=z9hG4bK{}b{}x{};rport\r\n\
                     From: \"{user}\"<sip:{user}@{d}>;tag={}m{call_no}\r\n\
                     To: <{uri}>\r\n\
                     Call-ID: m{}-{}-{call_no}@wsload\r\n\
                     CSeq: {} MESSAGE\r\n\
                     Content-Type: text/plain;charset=utf-8\r\n\
                     Content-Length: {}\r\n\
                     Max-Forwards: 70\r\n\
                     User-Agent: wsload\r\n",
                    cfg.run_tag,
                    self.id.idx,
                    self.seq,
                    self.tag,
                    cfg.run_tag,
                    self.id.idx,
                    p.cseq,
                    body.len(),
                    d = cfg.domain,
                );
                if let Some(auth) = &mut self.msg_auth {
                    auth.write_header(&mut buf, "MESSAGE", &uri);
                }
                buf.push_str("\r\n");
                buf.push_str(&body);
            }
        }
        let sent = self.send_text(buf).await;
        if sent {
            p.deadline = Instant::now() + self.cfg.response_timeout;
            self.pending.push(p);
        } else {
            self.finish(&p, Err("closed".to_owned())).await;
        }
    }

    /// One SIP message in one text frame, as SIPml5 sends. False when the connection is gone.
    async fn send_text(&mut self, text: String) -> bool {
        let Some(ws) = &mut self.ws else {
            return false;
        };
        let frame = WsMessage::Text(text.into());
        if let Ok(Ok(())) = timeout(self.cfg.response_timeout, ws.send(frame)).await {
            return true;
        }
        self.connection_lost().await;
        false
    }

    async fn connection_lost(&mut self) {
        self.ws = None;
        for p in std::mem::take(&mut self.pending) {
            self.finish(&p, Err("closed".to_owned())).await;
        }
    }

    async fn on_frame(&mut self, frame: Option<Result<WsMessage, tungstenite::Error>>) {
        let data: Bytes = match frame {
            Some(Ok(WsMessage::Text(text))) => text.into(),
            Some(Ok(WsMessage::Binary(data))) => data,
            // tungstenite answers pings itself while reading.
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => return,
            Some(Ok(WsMessage::Close(_)) | Err(_)) | None => {
                self.connection_lost().await;
                return;
            }
        };
        let Ok(msg) = Message::parse(data) else {
            return;
        };
        if msg.is_request() {
            self.answer(&msg).await;
        } else {
            self.on_response(&msg).await;
        }
    }

    /// The receiving browser: 200 to MESSAGE (and OPTIONS), 501 to anything else but ACK.
    async fn answer(&mut self, req: &Message) {
        let (code, reason) = match req.method() {
            Some(Method::Ack) | None => return,
            Some(Method::Message | Method::Options) => (200, "OK"),
            Some(_) => (501, "Not Implemented"),
        };
        let mut out = String::with_capacity(512);
        let _ = write!(out, "SIP/2.0 {code} {reason}\r\n");
        for via in req.header_values(&HeaderName::Via) {
            let _ = write!(out, "Via: {via}\r\n");
        }
        if let Some(from) = req.header(&HeaderName::From) {
            let _ = write!(out, "From: {from}\r\n");
        }
        if let Some(to) = req.header(&HeaderName::To) {
            let has_tag = req.to_header().is_ok_and(|t| t.tag().is_some());
            if has_tag {
                let _ = write!(out, "To: {to}\r\n");
            } else {
                let _ = write!(out, "To: {to};tag={}r\r\n", self.tag);
            }
        }
        if let Some(call_id) = req.call_id() {
            let _ = write!(out, "Call-ID: {call_id}\r\n");
        }
        if let Some(cseq) = req.header(&HeaderName::CSeq) {
            let _ = write!(out, "CSeq: {cseq}\r\n");
        }
        out.push_str("Content-Length: 0\r\n\r\n");
        self.send_text(out).await;
    }

    async fn on_response(&mut self, resp: &Message) {
        let Some(status) = resp.status() else { return };
        if status < 200 {
            return;
        }
        let Ok(cseq) = resp.cseq() else { return };
        // A response to a request that already timed out (or to another run) is ignored.
        let Some(pos) = self.pending.iter().position(|p| p.cseq == cseq.seq) else {
            return;
        };
        let mut p = self.pending.swap_remove(pos);
        if (status == 401 || status == 407) && !p.retried {
            let name = if status == 401 {
                HeaderName::WwwAuthenticate
            } else {
                HeaderName::ProxyAuthenticate
            };
            if let Some(ch) = resp.header(&name).and_then(parse_challenge) {
                if let (Purpose::Load(_), Some(run)) = (p.purpose, &mut self.run) {
                    run.stats.retries += 1;
                    run.stats.stale += u64::from(ch.stale);
                }
                self.seq += 1;
                let cnonce = md5_hex(&[&self.cfg.run_tag, &self.tag, &self.seq.to_string()]);
                let auth = Auth::new(
                    ch,
                    status == 407,
                    &self.id.user,
                    &self.id.password,
                    cnonce[..16].to_owned(),
                );
                match p.kind {
                    Kind::Register { .. } | Kind::ClearBindings => self.reg_auth = Some(auth),
                    Kind::Message { .. } => self.msg_auth = Some(auth),
                }
                p.retried = true;
                self.transmit(p).await;
                return;
            }
        }
        let outcome = if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(status.to_string())
        };
        self.finish(&p, outcome).await;
    }

    /// The operation of `p` is over.
    async fn finish(&mut self, p: &Pending, outcome: Result<(), String>) {
        match p.purpose {
            // Sent from the event loop: sending from here would make `finish` recursive.
            Purpose::Clear if outcome.is_ok() => self.register_now = true,
            Purpose::Clear | Purpose::Setup => {
                self.registered = outcome.is_ok();
                self.setup_failed = outcome.is_err();
                self.permit = None;
                let what = if p.purpose == Purpose::Clear {
                    "clear"
                } else {
                    "register"
                };
                let outcome = outcome.map_err(|e| format!("{what} {e}"));
                let _ = self.reports.send(Report::Setup(outcome)).await;
            }
            Purpose::Prime => {
                let outcome = outcome.map_err(|e| format!("message {e}"));
                let _ = self.reports.send(Report::Primed(outcome)).await;
            }
            Purpose::Load(id) => {
                let Some(run) = self.run.as_mut().filter(|r| r.id == id) else {
                    return;
                };
                match outcome {
                    Ok(()) => {
                        run.stats.ok += 1;
                        let us = p.first_sent.elapsed().as_micros();
                        run.stats
                            .latency_us
                            .push(u32::try_from(us).unwrap_or(u32::MAX));
                    }
                    Err(reason) => run.stats.fail(&reason),
                }
            }
            Purpose::Unregister => {
                self.registered = false;
                self.unregistered = outcome.is_ok();
            }
        }
    }
}
