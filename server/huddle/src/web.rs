//! The demo web page (`[web] listen`): the page a newcomer opens after `scripts/run.sh`, and the
//! small user-scoped API it needs besides SIP.
//!
//! It owns:
//!
//! * serving the page's files (`index.html`, `app.js`, `style.css` from `[web] root`, and the
//!   browser build of JsSIP as `/jssip.js`) and `/config.json` (domain, WebSocket port, room)
//!   to anyone: the page is public, so it has its own listener and never shares the admin
//!   API's, whose bearer-token rule stays as it is;
//! * `/config.json` also names the screen URI template (`screen_user`, e.g. `screen-{room}`) a
//!   loaded screen-share plugin publishes under `about` in its namespace, so the page presents
//!   where that plugin listens whatever it is configured with (null: no screen sharing);
//! * `/api/contacts`, `/api/history/{peer}` and `/api/presentation/{room}` (the running
//!   presentation of a room as the screen-share plugin records it, so the page knows when to
//!   watch), which answer only for a signed-in user (the first two for the caller's own account).
//!   They are authenticated with HTTP Digest (RFC 7616) against the same HA1 the registrar
//!   checks, so the browser proves the password it already gave JsSIP and nothing new is handed
//!   out: no admin token ever reaches a browser, and the password itself is never sent. Reading
//!   history over SIP instead would need a query method the messaging plugin does not have.
//!
//! The digest decision ([`DigestGate::check`]) is a pure function of the header, the clock and the
//! stored HA1; the handlers around it only read the store (on the blocking pool) and files.

use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context as _;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use huddle_sip::auth::{
    challenge, verify_response, Algorithm, Credentials, NonceCounts, NonceIssuer, NonceStatus,
};
use serde::Serialize;

use crate::admin::api::{self, HistoryQuery};
use crate::admin::AdminState;
use crate::config::Config;
use crate::plugins::services::PluginShared;
use crate::store::{scan_pages, Namespace, Record, Store};
use crate::users::UserRecord;

/// Nonces whose counts are remembered (replay protection); older ones are re-challenged.
const NONCE_TABLE: usize = 4096;

/// A running page server.
#[derive(Debug)]
pub struct WebServer {
    /// The bound address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl WebServer {
    /// Stops serving (open requests are dropped).
    pub fn stop(self) {
        self.task.abort();
    }
}

struct WebState {
    /// The admin API's read side, reused for history (never its routes or its token).
    reads: Arc<AdminState>,
    digest: DigestGate,
    counts: Mutex<NonceCounts>,
    ws_port: Option<u16>,
}

/// Issues and checks the digest nonces of the user-scoped API.
pub struct DigestGate {
    /// The realm users' HA1s are for (`[sip] realm`).
    pub realm: String,
    /// The algorithm challenged with (`[auth] algorithm`).
    pub algorithm: Algorithm,
    /// Mints and checks nonces.
    pub issuer: NonceIssuer,
}

impl std::fmt::Debug for DigestGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The issuer holds the nonce secret: never printed.
        f.debug_struct("DigestGate")
            .field("realm", &self.realm)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// What [`DigestGate::check`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum DigestOutcome {
    /// The request is the named user's.
    User(String),
    /// Answer 401 with this challenge; `stale` when only the nonce was too old or reused.
    Challenge { stale: bool },
}

impl DigestGate {
    /// Decides whether `authorization` (the header value, if any) proves the password of a user for
    /// `method uri`. `ha1_of` returns the stored HA1 of a user name for the realm and algorithm, or
    /// `None` for an unknown user; `counts` remembers nonce counts (replays). Never panics.
    pub fn check(
        &self,
        authorization: Option<&str>,
        (method, uri): (&str, &str),
        now_secs: u64,
        counts: &mut NonceCounts,
        ha1_of: impl FnOnce(&str) -> Option<String>,
    ) -> DigestOutcome {
        let (realm, issuer) = (self.realm.as_str(), &self.issuer);
        let refuse = DigestOutcome::Challenge { stale: false };
        let Some(value) = authorization else {
            return refuse;
        };
        let Ok(creds) = Credentials::parse(value) else {
            return refuse;
        };
        // The digest covers the uri the client names; it must be this request's, or a response
        // captured for one resource would open another.
        if creds.realm() != realm || creds.uri() != uri {
            return refuse;
        }
        let nonce = issuer.check(creds.nonce(), realm, now_secs);
        if nonce == NonceStatus::Invalid {
            return refuse;
        }
        let Some(ha1) = ha1_of(creds.username()) else {
            return refuse;
        };
        if !verify_response(&creds, method, &ha1, None) {
            return refuse;
        }
        if nonce == NonceStatus::Stale || !counts.accept(creds.nonce(), creds.nc(), now_secs) {
            return DigestOutcome::Challenge { stale: true };
        }
        DigestOutcome::User(creds.username().to_owned())
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Binds `[web] listen` and serves the page on the current runtime; `None` when not
/// configured. `ws` is the bound `ws:` listener the page's JsSIP connects to.
pub(crate) async fn start(
    config: Arc<Config>,
    store: Arc<dyn Store>,
    plugins: Vec<Arc<PluginShared>>,
    ws: Option<SocketAddr>,
) -> anyhow::Result<Option<WebServer>> {
    let Some(listen) = config.web.listen else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the demo page [web] listen = {listen}"))?;
    let addr = listener.local_addr()?;
    let algorithm = Algorithm::parse(&config.auth.algorithm).unwrap_or(Algorithm::Md5);
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| anyhow::anyhow!("the operating system's random generator: {e}"))?;
    let issuer = NonceIssuer::new(secret).with_lifetime(config.auth.nonce_lifetime_secs);
    let counts = Mutex::new(NonceCounts::for_issuer(&issuer, NONCE_TABLE));
    let state = Arc::new(WebState {
        digest: DigestGate {
            realm: config.realm().to_owned(),
            algorithm,
            issuer,
        },
        counts,
        reads: Arc::new(AdminState {
            config,
            store,
            plugins,
            media: None,
            started: Instant::now(),
        }),
        ws_port: ws.map(|a| a.port()),
    });
    let app = router(state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the demo page server stopped");
        }
    });
    tracing::info!(url = %format!("http://{addr}/"), "demo page listening");
    Ok(Some(WebServer { addr, task }))
}

type Shared = State<Arc<WebState>>;

fn router(state: Arc<WebState>) -> Router {
    Router::new()
        .route("/", get(|s: Shared| page_file(s, "index.html")))
        .route("/app.js", get(|s: Shared| page_file(s, "app.js")))
        .route("/style.css", get(|s: Shared| page_file(s, "style.css")))
        .route("/jssip.js", get(jssip))
        .route("/config.json", get(page_config))
        .route("/api/contacts", get(contacts))
        .route("/api/history/{peer}", get(history))
        .route("/api/presentation/{room}", get(presentation))
        .fallback(|| async { text(StatusCode::NOT_FOUND, "not found\n".into()) })
        .with_state(state)
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn content_type(path: &FsPath) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// A file read at request time, so editing the page needs no rebuild.
async fn serve_file(path: PathBuf, missing_hint: &str) -> Response {
    let read = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || std::fs::read(path)).await
    };
    match read.unwrap_or_else(|e| Err(std::io::Error::other(e))) {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, content_type(&path)),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response(),
        Err(e) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{} cannot be read ({e}){missing_hint}\n", path.display()),
        ),
    }
}

async fn page_file(State(state): Shared, name: &'static str) -> Response {
    serve_file(state.reads.config.web.root.join(name), "; see [web] root").await
}

async fn jssip(State(state): Shared) -> Response {
    serve_file(
        state.reads.config.web.jssip.clone(),
        ": run scripts/install-deps.sh, which installs JsSIP from npm and builds it for browsers",
    )
    .await
}

/// What the page needs to reach this server.
#[derive(Debug, Serialize)]
struct PageConfig {
    domain: String,
    /// The `ws:` listener's port (the page uses its own host name), or null without one.
    ws_port: Option<u16>,
    room: String,
    /// The screen URI's user part with `{room}` (`screen-{room}`), or null without a
    /// screen-share plugin.
    screen_user: Option<String>,
}

async fn page_config(State(state): Shared) -> Json<PageConfig> {
    let reads = state.clone();
    let screen_user = tokio::task::spawn_blocking(move || {
        let about = plugin_value(&reads, "about")?;
        let about: serde_json::Value = serde_json::from_slice(&about).ok()?;
        about["screen_user"].as_str().map(str::to_owned)
    })
    .await
    .ok()
    .flatten();
    let config = &state.reads.config;
    Json(PageConfig {
        domain: config.sip.domain.clone(),
        ws_port: state.ws_port,
        room: config.web.room.clone(),
        screen_user,
    })
}

/// `key` in the namespace of the first plugin instance that has it: what plugins publish for
/// the page (the screen-share plugin's `about` and `presentations/<room>`). Blocking.
fn plugin_value(state: &WebState, key: &str) -> Option<Vec<u8>> {
    state.reads.plugins.iter().find_map(|p| {
        let ns = Namespace::plugin(&p.name).ok()?;
        state.reads.store.get(&ns.key(key.as_bytes())).ok()?
    })
}

/// The running presentation of `room` (the screen-share plugin's record, JSON with
/// `screen_uri`), or 404.
async fn presentation(
    State(state): Shared,
    Path(room): Path<String>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
) -> Response {
    if let Err(challenge) = authenticate(&state, (headers, method, uri)).await {
        return challenge;
    }
    let reads = state.clone();
    let record =
        tokio::task::spawn_blocking(move || plugin_value(&reads, &format!("presentations/{room}")))
            .await
            .ok()
            .flatten();
    match record {
        Some(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({
                "code": "not_found",
                "message": "no presentation runs in this room",
            })),
        )
            .into_response(),
    }
}

/// What a request says about who sends it: the headers, the method and the target as sent.
type Asker = (HeaderMap, Method, Uri);

/// The caller's user name, or the 401 to send.
async fn authenticate(
    state: &Arc<WebState>,
    (headers, method, uri): Asker,
) -> Result<String, Response> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let uri = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    let method = method.as_str().to_owned();
    let state2 = state.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let gate = &state2.digest;
        let store = state2.reads.store.clone();
        let algorithm = gate.algorithm;
        let mut counts = state2.counts.lock().unwrap_or_else(|e| e.into_inner());
        gate.check(
            authorization.as_deref(),
            (method.as_str(), uri.as_str()),
            unix_now(),
            &mut counts,
            |user| {
                let value = store
                    .get(&Namespace::credentials().key(user.as_bytes()))
                    .ok()??;
                let record = Record::decode::<UserRecord>(&value).ok()?;
                Some(record.ha1(algorithm).to_owned())
            },
        )
    })
    .await
    .unwrap_or(DigestOutcome::Challenge { stale: false });
    match outcome {
        DigestOutcome::User(user) => Ok(user),
        DigestOutcome::Challenge { stale } => {
            let gate = &state.digest;
            let mut salt = [0u8; 16];
            let _ = getrandom::fill(&mut salt);
            let nonce = gate.issuer.issue(unix_now(), &gate.realm, salt);
            let value = challenge(&gate.realm, &nonce, gate.algorithm, stale, None);
            let mut response = (
                StatusCode::UNAUTHORIZED,
                Json(serde_json::json!({
                    "code": "unauthorized",
                    "message": "answer the Digest challenge with your SIP user name and password",
                })),
            )
                .into_response();
            if let Ok(value) = HeaderValue::from_str(&value) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
            Err(response)
        }
    }
}

/// The caller and the other users of the domain.
#[derive(Debug, Serialize)]
struct Contacts {
    user: String,
    contacts: Vec<String>,
}

async fn contacts(State(state): Shared, headers: HeaderMap, method: Method, uri: Uri) -> Response {
    let user = match authenticate(&state, (headers, method, uri)).await {
        Ok(user) => user,
        Err(challenge) => return challenge,
    };
    let store = state.reads.store.clone();
    let me = user.clone();
    let names = tokio::task::spawn_blocking(move || {
        let mut names = Vec::new();
        for page in scan_pages(store.as_ref(), Namespace::credentials().prefix(), 1024) {
            for (_, value) in page? {
                if let Ok(record) = Record::decode::<UserRecord>(&value) {
                    if record.name != me {
                        names.push(record.name);
                    }
                }
            }
        }
        names.sort();
        Ok::<_, crate::store::StoreError>(names)
    })
    .await;
    match names {
        Ok(Ok(contacts)) => Json(Contacts { user, contacts }).into_response(),
        Ok(Err(e)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading users: {e}\n"),
        ),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// The caller's conversation with `peer` (the admin API's history read, scoped to the caller).
async fn history(
    State(state): Shared,
    Path(peer): Path<String>,
    Query(query): Query<HistoryQuery>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
) -> Response {
    let user = match authenticate(&state, (headers, method, uri)).await {
        Ok(user) => user,
        Err(challenge) => return challenge,
    };
    api::messages(State(state.reads.clone()), Path((user, peer)), Query(query))
        .await
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use huddle_sip::auth::ha1;

    const REALM: &str = "example.test";

    fn new_gate() -> (DigestGate, NonceCounts) {
        let issuer = NonceIssuer::new([7; 32]);
        let counts = NonceCounts::for_issuer(&issuer, 16);
        let gate = DigestGate {
            realm: REALM.into(),
            algorithm: Algorithm::Md5,
            issuer,
        };
        (gate, counts)
    }

    /// The header a browser computes (the page does this with JsSIP's MD5).
    fn answer(user: &str, password: &str, nonce: &str, uri: &str, nc: u32) -> String {
        let ha1 = ha1(user, REALM, password, Algorithm::Md5);
        let md5 = |s: String| {
            use md5::Digest as _;
            md5::Md5::digest(s.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let ha2 = md5(format!("GET:{uri}"));
        let nc = format!("{nc:08x}");
        let response = md5(format!("{ha1}:{nonce}:{nc}:abc:auth:{ha2}"));
        format!(
            "Digest username=\"{user}\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{uri}\", \
             response=\"{response}\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"abc\""
        )
    }

    fn alice(user: &str) -> Option<String> {
        (user == "alice").then(|| ha1("alice", REALM, "alice-pw", Algorithm::Md5))
    }

    #[test]
    fn right_password_for_this_uri_is_the_user() {
        let (gate, mut counts) = new_gate();
        let nonce = gate.issuer.issue(1000, REALM, [1; 16]);
        let h = answer("alice", "alice-pw", &nonce, "/api/contacts", 1);
        let outcome = gate.check(Some(&h), ("GET", "/api/contacts"), 1001, &mut counts, alice);
        assert_eq!(outcome, DigestOutcome::User("alice".into()));
    }

    #[test]
    fn wrong_password_other_uri_unknown_user_or_no_header_are_challenged() {
        let (gate, mut counts) = new_gate();
        let nonce = gate.issuer.issue(1000, REALM, [1; 16]);
        let refused = DigestOutcome::Challenge { stale: false };
        let wrong = answer("alice", "nope", &nonce, "/api/contacts", 1);
        let other_uri = answer("alice", "alice-pw", &nonce, "/api/history/bob", 1);
        let unknown = answer("mallory", "x", &nonce, "/api/contacts", 1);
        for h in [Some(wrong.as_str()), Some(&other_uri), Some(&unknown), None] {
            let outcome = gate.check(h, ("GET", "/api/contacts"), 1001, &mut counts, alice);
            assert_eq!(outcome, refused, "{h:?}");
        }
        for garbage in [
            "",
            "Basic YWxpY2U6eA==",
            "Digest ,,,=",
            "Digest username=\"a",
        ] {
            let outcome = gate.check(Some(garbage), ("GET", "/"), 1001, &mut counts, alice);
            assert_eq!(outcome, refused, "{garbage:?}");
        }
    }

    #[test]
    fn replayed_or_old_nonce_is_challenged_stale() {
        let (gate, mut counts) = new_gate();
        let nonce = gate.issuer.issue(1000, REALM, [1; 16]);
        let h = answer("alice", "alice-pw", &nonce, "/api/contacts", 1);
        let run = |counts: &mut NonceCounts, now| {
            gate.check(Some(&h), ("GET", "/api/contacts"), now, counts, alice)
        };
        assert_eq!(run(&mut counts, 1001), DigestOutcome::User("alice".into()));
        assert_eq!(
            run(&mut counts, 1002),
            DigestOutcome::Challenge { stale: true }
        );
        let (_, mut fresh) = new_gate();
        let late = 1000 + gate.issuer.lifetime_secs() + 1;
        assert_eq!(
            run(&mut fresh, late),
            DigestOutcome::Challenge { stale: true }
        );
    }

    #[test]
    fn config_checks_the_room_and_keeps_the_page_off_the_admin_listener() {
        let base = "[sip]\ndomain = \"example.test\"\nlisten = [\"udp:127.0.0.1:0\"]\n";
        let parse = |extra: &str| Config::from_toml(&format!("{base}{extra}"), FsPath::new("t"));
        let config = parse("").unwrap();
        assert_eq!(config.web.listen, None);
        assert_eq!(config.web.room, "room-demo");
        let config = parse("[web]\nlisten = \"127.0.0.1:8000\"\nroom = \"team\"\n").unwrap();
        assert_eq!(
            config.web.listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 8000)))
        );
        assert!(parse("[web]\nroom = \"a b\"\n")
            .unwrap_err()
            .to_string()
            .contains("[web] room"));
        assert!(parse(
            "[web]\nlisten = \"127.0.0.1:9090\"\n[admin]\nlisten = \"127.0.0.1:9090\"\n"
        )
        .unwrap_err()
        .to_string()
        .contains("must differ"));
        // Port 0 on both means two free ports, as tests use.
        parse("[web]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n").unwrap();
        assert!(parse("[web]\nbogus = 1\n").is_err());
    }
}
