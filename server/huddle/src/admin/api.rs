//! The admin API's routes, their JSON shapes and the OpenAPI document generated from them
//! (utoipa): `docs/openapi.json` is the checked-in copy, and a test fails when it is stale.
//!
//! Every route, `/metrics` and `/openapi.json` included, passes [`auth`] first. Errors are
//! JSON `{code, message}` ([`ApiError`]).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::AdminState;
use crate::metrics::Snapshot;
use crate::registrar::BindingRecord;
use crate::store::{scan_pages, Namespace, Record};

type Shared = State<Arc<AdminState>>;

/// The OpenAPI document of the admin API.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Huddle admin API",
        description = "Operating a Huddle server: health, registrations, presence, message history, conference rooms, plugins, drain and metrics. Every call needs `Authorization: Bearer <[admin] token>`. Errors are JSON `{code, message}`."
    ),
    paths(
        health, ready, registrations, user_registrations, presence, messages, plugins,
        plugin_admin, drain_start, drain_stop, rooms, room, room_lock, room_unlock,
        participant_mute, participant_unmute, participant_kick, room_layout, metrics
    ),
    components(schemas(
        ApiError, Health, Ready, Registration, UserRegistrations, Presence, Message,
        Conversation, Plugin, Drain, RoomSummary, RoomList, RoomDetail, Participant, LockState,
        MuteState, Kicked, LayoutChange
    )),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document as served at `/openapi.json` and checked in at `docs/openapi.json`.
pub fn openapi_json() -> String {
    let mut doc = ApiDoc::openapi();
    // The crate version would make the checked-in copy stale at every release.
    doc.info.version = "1".into();
    let mut text = doc
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// The routes, behind the bearer-token check.
pub(crate) fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/registrations", get(registrations))
        .route("/registrations/{user}", get(user_registrations))
        .route("/presence/{user}", get(presence))
        .route("/messages/{user}/{peer}", get(messages))
        .route("/plugins", get(plugins))
        .route("/drain", post(drain_start).delete(drain_stop))
        .route("/plugins/{name}/admin", post(plugin_admin))
        .route("/rooms", get(rooms))
        .route("/rooms/{room}", get(room))
        .route("/rooms/{room}/lock", post(room_lock).delete(room_unlock))
        .route("/rooms/{room}/layout", put(room_layout))
        .route(
            "/rooms/{room}/participants/{id}",
            axum::routing::delete(participant_kick),
        )
        .route(
            "/rooms/{room}/participants/{id}/mute",
            post(participant_mute).delete(participant_unmute),
        )
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

/// An error: an HTTP status with a JSON body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    /// A stable machine-readable code (`unauthorized`, `not_found`, `not_available`,
    /// `not_implemented`, `store_error`).
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    #[serde(skip)]
    status: u16,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            code: code.into(),
            message: message.into(),
            status: status.as_u16(),
        }
    }

    fn store(e: impl std::fmt::Display) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            format!("reading the store failed: {e}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(&self)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Compares without stopping at the first difference, so timing does not leak the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(state): Shared, request: Request, next: Next) -> Response {
    if let Some(token) = state
        .config
        .admin
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
    {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            Some(given) if same(given.as_bytes(), token.as_bytes()) => {}
            Some(_) => {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "wrong bearer token",
                )
                .into_response()
            }
            None => {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing Authorization: Bearer <token>",
                )
                .into_response()
            }
        }
    }
    next.run(request).await
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// Runs a blocking store read off the runtime's threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
}

/// The process is up.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
    /// The server version.
    pub version: String,
    /// Seconds since the admin API started.
    pub uptime_secs: u64,
}

#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, description = "The process is up", body = Health),
              (status = 401, description = "Missing or wrong token", body = ApiError)))]
async fn health(State(state): Shared) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_secs: state.started.elapsed().as_secs(),
    })
}

/// Whether the server takes new requests.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// True when SIP is up and the server is not draining.
    pub ready: bool,
    /// True while draining.
    pub draining: bool,
}

#[utoipa::path(get, path = "/ready", tag = "health",
    responses((status = 200, description = "Taking new requests", body = Ready),
              (status = 503, description = "Draining: not taking new requests", body = Ready)))]
async fn ready(State(state): Shared) -> (StatusCode, Json<Ready>) {
    // The API starts after the SIP thread reported its listeners bound.
    let draining = state.config.ops.is_draining();
    let status = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(Ready {
            ready: !draining,
            draining,
        }),
    )
}

/// One binding of a user.
#[derive(Debug, Serialize, ToSchema)]
pub struct Registration {
    /// The address-of-record, `user@domain`.
    pub aor: String,
    /// The Contact URI.
    pub contact: String,
    /// The transport it registered over: `udp`, `tcp`, `tls`, `ws`, `wss`.
    pub transport: String,
    /// The remote address it registered from.
    pub addr: String,
    /// The connection (flow) it is bound to, for connection-bound bindings.
    pub flow: Option<u64>,
    /// RFC 5626 `+sip.instance`.
    pub instance: Option<String>,
    /// RFC 5626 `reg-id`.
    pub reg_id: Option<u32>,
    /// Seconds until it expires.
    pub expires_in_secs: u64,
}

/// The bindings of one user.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserRegistrations {
    /// The address-of-record, `user@domain`.
    pub aor: String,
    /// Its live bindings (empty: not registered).
    pub bindings: Vec<Registration>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Live bindings under `location/<prefix>`, read from the store (the registrar writes it
/// behind, so a change shows within about 100 ms).
fn read_bindings(state: &AdminState, aor_prefix: &str) -> Result<Vec<Registration>, ApiError> {
    let prefix = Namespace::location().key(aor_prefix.as_bytes());
    let now = unix_now();
    let mut out = Vec::new();
    for page in scan_pages(state.store.as_ref(), &prefix, 1024) {
        for (_, value) in page.map_err(ApiError::store)? {
            let Ok(r) = Record::decode::<BindingRecord>(&value) else {
                continue;
            };
            if r.expires_unix <= now {
                continue;
            }
            out.push(registration(r, now));
        }
    }
    Ok(out)
}

fn registration(r: BindingRecord, now: u64) -> Registration {
    Registration {
        expires_in_secs: r.expires_unix.saturating_sub(now),
        aor: r.aor,
        contact: r.contact,
        transport: r.transport,
        addr: r.addr,
        flow: r.flow,
        instance: r.instance,
        reg_id: r.reg_id,
    }
}

/// `alice` → `alice@<domain>`; `alice@domain` as given.
fn aor_of(state: &AdminState, user: &str) -> String {
    if user.contains('@') {
        user.to_ascii_lowercase()
    } else {
        format!("{user}@{}", state.config.sip.domain.to_ascii_lowercase())
    }
}

#[utoipa::path(get, path = "/registrations", tag = "registrations",
    responses((status = 200, description = "Every live binding", body = [Registration])))]
async fn registrations(State(state): Shared) -> Result<Json<Vec<Registration>>, ApiError> {
    blocking(move || read_bindings(&state, "")).await.map(Json)
}

#[utoipa::path(get, path = "/registrations/{user}", tag = "registrations",
    params(("user" = String, Path, description = "A user name, or `user@domain`")),
    responses((status = 200, description = "The user's live bindings", body = UserRegistrations)))]
async fn user_registrations(
    State(state): Shared,
    Path(user): Path<String>,
) -> Result<Json<UserRegistrations>, ApiError> {
    let aor = aor_of(&state, &user);
    let prefix = format!("{aor}/");
    let bindings = blocking(move || read_bindings(&state, &prefix)).await?;
    Ok(Json(UserRegistrations { aor, bindings }))
}

/// A user's composed presence.
#[derive(Debug, Serialize, ToSchema)]
pub struct Presence {
    /// The address-of-record, `user@domain`.
    pub aor: String,
    /// The composed PIDF document (RFC 3863), or null when the user published nothing.
    pub pidf: Option<String>,
}

/// The instance of a plugin that documents the keyspace the API reads.
fn plugin_instance(state: &AdminState, name: &str) -> Result<String, ApiError> {
    state
        .plugins
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.name.clone())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_available",
                format!("the {name} plugin is not loaded"),
            )
        })
}

#[utoipa::path(get, path = "/presence/{user}", tag = "presence",
    params(("user" = String, Path, description = "A user name, or `user@domain`")),
    responses((status = 200, description = "The composed PIDF from the presence plugin", body = Presence),
              (status = 404, description = "`not_available`: the presence plugin is not loaded", body = ApiError)))]
async fn presence(
    State(state): Shared,
    Path(user): Path<String>,
) -> Result<Json<Presence>, ApiError> {
    let instance = plugin_instance(&state, "presence")?;
    let aor = aor_of(&state, &user);
    let key = format!("plugin/{instance}/presence/{aor}");
    let store = state.store.clone();
    let value = blocking(move || store.get(key.as_bytes()).map_err(ApiError::store)).await?;
    Ok(Json(Presence {
        aor,
        pidf: value.map(|v| String::from_utf8_lossy(&v).into_owned()),
    }))
}

/// One stored message (the messaging plugin's history record).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Message {
    /// Milliseconds since the Unix epoch when the server stored it.
    pub ts_ms: u64,
    /// The sender's URI.
    pub from: String,
    /// The recipient's URI.
    pub to: String,
    /// The Content-Type.
    #[serde(default)]
    pub content_type: String,
    /// The body as text, when it is UTF-8.
    #[serde(default)]
    pub text: Option<String>,
    /// The body in hex, when it is not.
    #[serde(default)]
    pub hex: Option<String>,
}

/// A conversation's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct Conversation {
    /// One side (`user@domain`).
    pub user: String,
    /// The other side (`user@domain`).
    pub peer: String,
    /// Messages both ways, oldest first.
    pub messages: Vec<Message>,
}

/// The messaging plugin's history entry, as stored (see `huddle messages list`).
#[derive(Debug, Deserialize)]
struct StoredEntry {
    ts_ms: u64,
    from: String,
    to: String,
    #[serde(default)]
    content_type: String,
    body: StoredBody,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredBody {
    Text(String),
    Hex(String),
}

/// `sip:alice@example.test` → `alice@example.test`.
fn bare(uri: &str) -> String {
    let uri = uri.trim().trim_start_matches('<').trim_end_matches('>');
    let uri = uri
        .strip_prefix("sips:")
        .or_else(|| uri.strip_prefix("sip:"))
        .unwrap_or(uri);
    uri.split([';', '?', '>'])
        .next()
        .unwrap_or(uri)
        .to_ascii_lowercase()
}

/// Query of `/messages/{user}/{peer}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct HistoryQuery {
    /// Only messages stored at or after this time (ms since the Unix epoch).
    #[serde(default)]
    pub since_ms: u64,
    /// At most this many (the newest are kept); default 1000, at most 10000.
    pub limit: Option<usize>,
}

#[utoipa::path(get, path = "/messages/{user}/{peer}", tag = "messages",
    params(("user" = String, Path, description = "One side: a user name or `user@domain`"),
           ("peer" = String, Path, description = "The other side"),
           HistoryQuery),
    responses((status = 200, description = "The conversation, oldest first", body = Conversation),
              (status = 404, description = "`not_available`: the messaging plugin is not loaded", body = ApiError)))]
pub(crate) async fn messages(
    State(state): Shared,
    Path((user, peer)): Path<(String, String)>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Conversation>, ApiError> {
    let instance = plugin_instance(&state, "messaging")?;
    let (user, peer) = (aor_of(&state, &user), aor_of(&state, &peer));
    let limit = q.limit.unwrap_or(1000).min(10_000);
    let (u, p) = (user.clone(), peer.clone());
    let store = state.store.clone();
    let messages = blocking(move || {
        let prefix = format!("plugin/{instance}/h/");
        let mut out = Vec::new();
        for page in scan_pages(store.as_ref(), prefix.as_bytes(), 1024) {
            for (_, value) in page.map_err(ApiError::store)? {
                let Ok(batch) = Record::decode::<Vec<StoredEntry>>(&value) else {
                    continue;
                };
                for e in batch {
                    let (from, to) = (bare(&e.from), bare(&e.to));
                    let ours = (from == u && to == p) || (from == p && to == u);
                    if ours && e.ts_ms >= q.since_ms {
                        let (text, hex) = match e.body {
                            StoredBody::Text(t) => (Some(t), None),
                            StoredBody::Hex(h) => (None, Some(h)),
                        };
                        out.push(Message {
                            ts_ms: e.ts_ms,
                            from: e.from,
                            to: e.to,
                            content_type: e.content_type,
                            text,
                            hex,
                        });
                        // Bounded memory: keep the newest `limit` (keys sort by time).
                        if out.len() > limit.saturating_mul(2) {
                            out.sort_by_key(|m| m.ts_ms);
                            out.drain(..out.len() - limit);
                        }
                    }
                }
            }
        }
        out.sort_by_key(|m| m.ts_ms);
        let extra = out.len().saturating_sub(limit);
        out.drain(..extra);
        Ok(out)
    })
    .await?;
    Ok(Json(Conversation {
        user,
        peer,
        messages,
    }))
}

/// A plugin instance's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct Plugin {
    /// The instance name (and store namespace `plugin/<name>/`).
    pub name: String,
    /// `running`, or `disabled` after a panic with `on_panic = "disable"`.
    pub state: String,
    /// Panics caught at the boundary since start.
    pub panics: u64,
    /// Requests waiting in its mailbox.
    pub queue_depth: u64,
}

fn plugin_list(state: &AdminState) -> Vec<Plugin> {
    state
        .plugins
        .iter()
        .map(|p| Plugin {
            name: p.name.clone(),
            state: if p.disabled.load(Ordering::Relaxed) {
                "disabled"
            } else {
                "running"
            }
            .into(),
            panics: p.panics.load(Ordering::Relaxed),
            queue_depth: p.mailbox.waiting_requests() as u64,
        })
        .collect()
}

#[utoipa::path(get, path = "/plugins", tag = "plugins",
    responses((status = 200, description = "Every loaded plugin instance", body = [Plugin])))]
async fn plugins(State(state): Shared) -> Json<Vec<Plugin>> {
    Json(plugin_list(&state))
}

/// The drain state.
#[derive(Debug, Serialize, ToSchema)]
pub struct Drain {
    /// True while draining.
    pub draining: bool,
}

#[utoipa::path(post, path = "/drain", tag = "drain",
    description = "Stop taking new out-of-dialog requests and registrations: they are answered 503 with Retry-After. Transactions and dialogs in progress finish.",
    responses((status = 200, description = "Now draining", body = Drain)))]
async fn drain_start(State(state): Shared) -> Json<Drain> {
    state.config.ops.set_draining(true);
    tracing::warn!("draining: new requests and registrations are refused (admin API)");
    Json(Drain { draining: true })
}

#[utoipa::path(delete, path = "/drain", tag = "drain",
    responses((status = 200, description = "Taking new requests again", body = Drain)))]
async fn drain_stop(State(state): Shared) -> Json<Drain> {
    state.config.ops.set_draining(false);
    tracing::info!("drain ended: taking new requests again (admin API)");
    Json(Drain { draining: false })
}

/// How long the admin API waits for a plugin's answer.
const PLUGIN_ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Sends `command` to plugin instance `name` (ABI 1.2 `admin_request`, on the plugin's own
/// thread) and returns its JSON answer. A plugin's `{"error": {code, message}}` becomes an
/// [`ApiError`] with that code (`not_found` 404, `bad_request` 400, `conflict` 409,
/// `unsupported` 501, anything else 400).
async fn plugin_command(
    state: &AdminState,
    name: &str,
    command: serde_json::Value,
) -> Result<serde_json::Value, ApiError> {
    let shared = state
        .plugins
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_available",
                format!("no plugin instance named {name} is loaded"),
            )
        })?;
    let busy = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("plugin {name} has too many admin requests waiting, or is stopping"),
        )
    };
    let answer = shared.admin(command.to_string()).ok_or_else(busy)?;
    let answer = match tokio::time::timeout(PLUGIN_ANSWER_TIMEOUT, answer).await {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "plugin_timeout",
                format!("plugin {name} did not answer within {PLUGIN_ANSWER_TIMEOUT:?}"),
            ))
        }
        Ok(Err(_)) => return Err(busy()),
        Ok(Ok(answer)) => answer,
    };
    let bytes = match answer {
        Ok(bytes) => bytes,
        Err(huddle_sdk::Error::NotSupported) => {
            return Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "unsupported",
                format!(
                "plugin {name} takes no admin requests (built before plugin ABI 1.2, or has none)"
            ),
            ))
        }
        Err(huddle_sdk::Error::Busy) => return Err(busy()),
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "plugin_error",
                format!("plugin {name} failed the request: {e}"),
            ))
        }
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "plugin_error",
            format!("plugin {name} answered something that is not JSON: {e}"),
        )
    })?;
    if let Some(err) = value.get("error") {
        let code = err
            .get("code")
            .and_then(|c| c.as_str())
            .unwrap_or("bad_request");
        let message = err
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or("the plugin refused the request");
        let status = match code {
            "not_found" => StatusCode::NOT_FOUND,
            "conflict" => StatusCode::CONFLICT,
            "unsupported" => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::BAD_REQUEST,
        };
        return Err(ApiError::new(status, code, message));
    }
    Ok(value)
}

/// A plugin's answer in the shape the API documents.
fn shaped<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<Json<T>, ApiError> {
    serde_json::from_value(value).map(Json).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "plugin_error",
            format!("the plugin's answer does not have the documented shape: {e}"),
        )
    })
}

#[utoipa::path(post, path = "/plugins/{name}/admin", tag = "plugins",
    description = "Sends a JSON command to a plugin instance (plugin ABI 1.2 `admin_request`) and returns its JSON answer. The commands are the plugin's own; the conference plugin's are what `/rooms` uses. A plugin built before ABI 1.2 answers 501 `unsupported`.",
    params(("name" = String, Path, description = "The plugin instance name")),
    request_body(content = Object, description = "The command, a JSON object", content_type = "application/json"),
    responses((status = 200, description = "The plugin's answer", body = Object),
              (status = 400, description = "`bad_request`: not a JSON object, or refused by the plugin", body = ApiError),
              (status = 404, description = "`not_available`: no such plugin instance", body = ApiError),
              (status = 501, description = "`unsupported`: the plugin takes no admin requests", body = ApiError)))]
async fn plugin_admin(
    State(state): Shared,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let command: serde_json::Value = serde_json::from_slice(&body)
        .ok()
        .filter(serde_json::Value::is_object)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the body must be a JSON object",
            )
        })?;
    plugin_command(&state, &name, command).await.map(Json)
}

/// The conference plugin instance the rooms endpoints talk to.
const CONFERENCE: &str = "conference";

/// One live room.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RoomSummary {
    /// The room's name: `sip:<name>@<domain>`.
    pub name: String,
    /// Participants in it.
    pub participants: u64,
    /// True when new callers are refused (`403 Forbidden - Room Locked`).
    pub locked: bool,
    /// `grid` or `speaker`.
    pub layout: String,
    /// Made on demand (ends when empty) rather than configured.
    pub on_demand: bool,
}

/// The live rooms.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RoomList {
    /// Every room with participants.
    pub rooms: Vec<RoomSummary>,
}

/// One participant.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Participant {
    /// Names the participant in the mute and kick calls (their media session).
    pub id: u64,
    /// The member's user name, or `guest:<display name>`.
    pub entity: String,
    /// The name on their tile.
    pub display: String,
    /// Whether they send audio.
    pub audio: bool,
    /// Whether they send video.
    pub video: bool,
    /// Whether the admin muted them (nobody hears them).
    pub muted: bool,
}

/// A room and who is in it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RoomDetail {
    /// The room's name.
    pub room: String,
    /// True when new callers are refused.
    pub locked: bool,
    /// `grid` or `speaker`.
    pub layout: String,
    /// In join order.
    pub participants: Vec<Participant>,
}

/// A room's lock state after a change.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LockState {
    /// The room.
    pub room: String,
    /// True: new callers are refused.
    pub locked: bool,
}

/// A participant's mute state after a change.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MuteState {
    /// The room.
    pub room: String,
    /// The participant's id.
    pub participant: u64,
    /// True: nobody hears them.
    pub muted: bool,
}

/// A participant removed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Kicked {
    /// The room.
    pub room: String,
    /// The participant's id.
    pub participant: u64,
    /// Always true: their call was ended with a BYE.
    pub kicked: bool,
}

/// A layout, asked for or in effect.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LayoutChange {
    /// The room (ignored in a request).
    #[serde(default)]
    pub room: String,
    /// `grid` or `speaker`.
    pub layout: String,
}

#[utoipa::path(get, path = "/rooms", tag = "rooms",
    description = "The live conference rooms (from the `conference` plugin instance).",
    responses((status = 200, description = "Every room with participants", body = RoomList),
              (status = 404, description = "`not_available`: the conference plugin is not loaded", body = ApiError)))]
async fn rooms(State(state): Shared) -> Result<Json<RoomList>, ApiError> {
    shaped(plugin_command(&state, CONFERENCE, serde_json::json!({"command": "list"})).await?)
}

#[utoipa::path(get, path = "/rooms/{room}", tag = "rooms",
    params(("room" = String, Path, description = "The room's name (user part of its URI)")),
    responses((status = 200, description = "The room and its participants", body = RoomDetail),
              (status = 404, description = "`not_found`: no live room of that name", body = ApiError)))]
async fn room(
    State(state): Shared,
    Path(room): Path<String>,
) -> Result<Json<RoomDetail>, ApiError> {
    shaped(
        plugin_command(
            &state,
            CONFERENCE,
            serde_json::json!({"command": "participants", "room": room}),
        )
        .await?,
    )
}

async fn lock(state: &AdminState, room: String, locked: bool) -> Result<Json<LockState>, ApiError> {
    shaped(
        plugin_command(
            state,
            CONFERENCE,
            serde_json::json!({"command": "lock", "room": room, "locked": locked}),
        )
        .await?,
    )
}

#[utoipa::path(post, path = "/rooms/{room}/lock", tag = "rooms",
    description = "Locks a live room: new callers get `403 Forbidden - Room Locked`; those inside stay. A room that ends is unlocked.",
    params(("room" = String, Path, description = "The room's name")),
    responses((status = 200, description = "Locked", body = LockState),
              (status = 404, description = "`not_found`: no live room of that name", body = ApiError)))]
async fn room_lock(
    State(state): Shared,
    Path(room): Path<String>,
) -> Result<Json<LockState>, ApiError> {
    lock(&state, room, true).await
}

#[utoipa::path(delete, path = "/rooms/{room}/lock", tag = "rooms",
    params(("room" = String, Path, description = "The room's name")),
    responses((status = 200, description = "Unlocked", body = LockState),
              (status = 404, description = "`not_found`: no live room of that name", body = ApiError)))]
async fn room_unlock(
    State(state): Shared,
    Path(room): Path<String>,
) -> Result<Json<LockState>, ApiError> {
    lock(&state, room, false).await
}

async fn mute(
    state: &AdminState,
    room: String,
    id: u64,
    muted: bool,
) -> Result<Json<MuteState>, ApiError> {
    shaped(
        plugin_command(
            state,
            CONFERENCE,
            serde_json::json!({"command": "mute", "room": room, "participant": id, "muted": muted}),
        )
        .await?,
    )
}

#[utoipa::path(post, path = "/rooms/{room}/participants/{id}/mute", tag = "rooms",
    description = "Mutes a participant: their audio is dropped before the mixer, so nobody hears them.",
    params(("room" = String, Path, description = "The room's name"),
           ("id" = u64, Path, description = "The participant's id (from `GET /rooms/{room}`)")),
    responses((status = 200, description = "Muted", body = MuteState),
              (status = 404, description = "`not_found`: no such room or participant", body = ApiError)))]
async fn participant_mute(
    State(state): Shared,
    Path((room, id)): Path<(String, u64)>,
) -> Result<Json<MuteState>, ApiError> {
    mute(&state, room, id, true).await
}

#[utoipa::path(delete, path = "/rooms/{room}/participants/{id}/mute", tag = "rooms",
    params(("room" = String, Path, description = "The room's name"),
           ("id" = u64, Path, description = "The participant's id")),
    responses((status = 200, description = "Unmuted", body = MuteState),
              (status = 404, description = "`not_found`: no such room or participant", body = ApiError)))]
async fn participant_unmute(
    State(state): Shared,
    Path((room, id)): Path<(String, u64)>,
) -> Result<Json<MuteState>, ApiError> {
    mute(&state, room, id, false).await
}

#[utoipa::path(delete, path = "/rooms/{room}/participants/{id}", tag = "rooms",
    description = "Removes a participant: the room ends their call with a BYE.",
    params(("room" = String, Path, description = "The room's name"),
           ("id" = u64, Path, description = "The participant's id")),
    responses((status = 200, description = "Removed", body = Kicked),
              (status = 404, description = "`not_found`: no such room or participant", body = ApiError)))]
async fn participant_kick(
    State(state): Shared,
    Path((room, id)): Path<(String, u64)>,
) -> Result<Json<Kicked>, ApiError> {
    shaped(
        plugin_command(
            &state,
            CONFERENCE,
            serde_json::json!({"command": "kick", "room": room, "participant": id}),
        )
        .await?,
    )
}

#[utoipa::path(put, path = "/rooms/{room}/layout", tag = "rooms",
    description = "Changes the composite's layout until the room ends.",
    params(("room" = String, Path, description = "The room's name")),
    request_body(content = LayoutChange, description = "`{\"layout\": \"grid\" | \"speaker\"}`", content_type = "application/json"),
    responses((status = 200, description = "In effect", body = LayoutChange),
              (status = 400, description = "`bad_request`: not a known layout", body = ApiError),
              (status = 404, description = "`not_found`: no live room of that name", body = ApiError)))]
async fn room_layout(
    State(state): Shared,
    Path(room): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<LayoutChange>, ApiError> {
    let asked: LayoutChange = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("expected {{\"layout\": \"grid\" | \"speaker\"}}: {e}"),
        )
    })?;
    shaped(
        plugin_command(
            &state,
            CONFERENCE,
            serde_json::json!({"command": "layout", "room": room, "layout": asked.layout}),
        )
        .await?,
    )
}

/// Values for the gauges, read from their owners.
fn snapshot(state: &AdminState) -> Result<Snapshot, ApiError> {
    let bindings = read_bindings(state, "")?;
    let users: BTreeMap<&str, ()> = bindings.iter().map(|b| (b.aor.as_str(), ())).collect();
    Ok(Snapshot {
        registrations: bindings.len() as u64,
        registered_users: users.len() as u64,
        plugins: plugin_list(state)
            .into_iter()
            .map(|p| (p.name, p.queue_depth, p.panics, p.state == "disabled"))
            .collect(),
        media_legs: state.media.as_ref().map(|m| m.sessions() as u64),
        draining: state.config.ops.is_draining(),
        media: state.media.as_ref().map(|m| m.totals()),
        rooms: room_totals(state)?,
        transports: crate::transport::Transport::ALL
            .iter()
            .map(|t| t.name())
            .collect(),
    })
}

/// Participants and mixer CPU per live room, from the conference plugin's documented keyspace
/// (`plugin/conference/rooms/<room>` and `stats/<room>`, see `plugins/conference`); `None`
/// without the plugin.
fn room_totals(state: &AdminState) -> Result<Option<crate::metrics::RoomTotals>, ApiError> {
    let Some(instance) = state.plugins.iter().find(|p| p.name == CONFERENCE) else {
        return Ok(None);
    };
    #[derive(Deserialize)]
    struct RoomRecord {
        room: String,
        participants: Vec<serde_json::Value>,
    }
    let prefix = format!("plugin/{}/rooms/", instance.name);
    let mut rooms = Vec::new();
    for page in scan_pages(state.store.as_ref(), prefix.as_bytes(), 1024) {
        for (_, value) in page.map_err(ApiError::store)? {
            if let Ok(r) = serde_json::from_slice::<RoomRecord>(&value) {
                rooms.push((r.room, r.participants.len() as u64));
            }
        }
    }
    #[derive(Deserialize)]
    struct StatsRecord {
        room: String,
        mixer_cpu_seconds: f64,
    }
    let prefix = format!("plugin/{}/stats/", instance.name);
    let mut mixer_cpu_seconds = Vec::new();
    for page in scan_pages(state.store.as_ref(), prefix.as_bytes(), 1024) {
        for (_, value) in page.map_err(ApiError::store)? {
            if let Ok(r) = serde_json::from_slice::<StatsRecord>(&value) {
                mixer_cpu_seconds.push((r.room, r.mixer_cpu_seconds));
            }
        }
    }
    Ok(Some(crate::metrics::RoomTotals {
        rooms,
        mixer_cpu_seconds,
    }))
}

#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain", body = String)))]
async fn metrics(State(state): Shared) -> Result<Response, ApiError> {
    let text = blocking(move || {
        let snap = snapshot(&state)?;
        Ok(state.config.ops.metrics.render(&snap))
    })
    .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        openapi_json(),
    )
        .into_response()
}
