//! The server configuration (`huddle.toml`): what each key means is documented once, in
//! `config/huddle.toml`; this module gives the keys their types and defaults and checks them.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::transport::{ListenSpec, TransportConfig};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub sip: SipConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub timers: TimersConfig,
    #[serde(default)]
    pub registrar: RegistrarConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Users created at start when absent from the store (demo and test set-ups).
    #[serde(default)]
    pub users: Vec<SeedUser>,
    /// Plugin instances loaded at start, one `[[plugins]]` table each.
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
    /// The media engine (WebRTC legs for plugins).
    #[serde(default)]
    pub media: MediaConfig,
    /// The admin HTTP API and metrics.
    #[serde(default)]
    pub admin: AdminConfig,
    /// The demo web page and its user-scoped API (`crate::web`).
    #[serde(default)]
    pub web: WebConfig,
    /// Webhooks: signed JSON events POSTed to URLs.
    #[serde(default)]
    pub webhooks: crate::webhooks::WebhooksConfig,
    /// Run-time state shared by the core and the admin API (drain flag, metrics). Not read
    /// from the file; carried here because every part that needs it already holds the config.
    #[serde(skip)]
    pub ops: std::sync::Arc<crate::admin::Ops>,
}

/// `[admin]`: the admin HTTP API (`/health`, `/registrations`, `/metrics`, ...).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the API listens (`ip:port`; port 0 picks one). Absent: no admin API.
    pub listen: Option<std::net::SocketAddr>,
    /// The bearer token every call must carry (`Authorization: Bearer <token>`). Without
    /// one the API only starts on a loopback address.
    pub token: Option<String>,
}

/// `[web]`: the demo page served at `/` (no token: it is public), and the user-scoped API it
/// calls with the user's own SIP digest credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Where the page is served (`ip:port`; port 0 picks one). Absent: no page.
    pub listen: Option<std::net::SocketAddr>,
    /// The folder holding `index.html`, `app.js` and `style.css`.
    pub root: PathBuf,
    /// The browser build of JsSIP (made by `scripts/install-deps.sh`), served as `/jssip.js`.
    pub jssip: PathBuf,
    /// The room the page offers to join (`sip:<room>@<domain>`).
    pub room: String,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: None,
            root: PathBuf::from("web"),
            jssip: PathBuf::from("web/vendor/jssip.js"),
            room: "room-demo".to_owned(),
        }
    }
}

/// `[media]`: the WebRTC media engine plugins answer calls with.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Run the engine (plugins get the `media` capability only then).
    pub enabled: bool,
    /// The one UDP socket every media leg uses (`ip:port`; port 0 picks one).
    pub listen: std::net::SocketAddr,
    /// The address put in ICE candidates when it differs from the listen address (NAT 1:1).
    pub advertise: Option<std::net::IpAddr>,
    /// A leg whose ICE and DTLS have not completed this long after the answer is torn down and
    /// its plugin told (which ends the call).
    pub connect_timeout_secs: u64,
    /// A connected leg from which nothing arrives this long (no ICE consent check, no media)
    /// is torn down and its plugin told.
    pub idle_timeout_secs: u64,
    /// Media legs at most; more offers are answered 503.
    pub max_sessions: usize,
    /// Codecs the engine answers with, in order of preference: opus, g722, pcmu, pcma, vp8,
    /// h264, vp9, av1.
    pub codecs: Vec<String>,
    /// Send-side bandwidth estimation (transport-wide congestion control) with pacing; the
    /// estimates go to plugins (`media_bitrate`). REMB from peers is reported either way.
    pub bandwidth_estimation: bool,
    /// Forwarded streams of legs without bandwidth estimation are sealed and sent by the
    /// media driver itself, with its own NACK repair, instead of through str0m.
    pub fast_egress: bool,
    /// Inbound RTP of legs without bandwidth estimation is opened by the media driver itself,
    /// which then sends the feedback about it (transport-wide congestion control, NACK,
    /// receiver reports), instead of going through str0m.
    pub fast_ingress: bool,
    /// Datagrams of one turn to one destination with equal sizes (a frame's packets) go to the
    /// kernel as one send (UDP segmentation offload, Linux); off where the kernel refuses it.
    pub udp_gso: bool,
    /// The media socket's receive buffer, bytes (0: the kernel's default); at most
    /// [`MAX_MEDIA_RECV_BUFFER`]. The kernel caps it at `net.core.rmem_max`.
    pub udp_recv_buffer: usize,
}

/// The largest `[media] udp_recv_buffer` accepted (the kernel takes an `int`, and doubles it).
pub const MAX_MEDIA_RECV_BUFFER: usize = 1 << 30;

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            enabled: true,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            connect_timeout_secs: 20,
            idle_timeout_secs: 15,
            max_sessions: 10_000,
            codecs: ["opus", "g722", "pcmu", "pcma", "vp8", "h264", "vp9", "av1"]
                .map(String::from)
                .to_vec(),
            bandwidth_estimation: false,
            fast_egress: true,
            fast_ingress: true,
            udp_gso: true,
            // As the SIP socket's (transport::UDP_RECV_BUFFER): the default 208 KB holds
            // ~1.4 ms of input at 500 echo legs (bench/NOTES.md, branch medload).
            udp_recv_buffer: 4 << 20,
        }
    }
}

impl MediaConfig {
    /// The engine's settings, or the first unknown codec name.
    pub fn settings(&self) -> Result<crate::media::EngineSettings, String> {
        let codecs = self
            .codecs
            .iter()
            .map(|c| crate::media::CodecName::parse(c).ok_or_else(|| c.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(crate::media::EngineSettings {
            listen: self.listen,
            advertise: self.advertise,
            connect_timeout: std::time::Duration::from_secs(self.connect_timeout_secs),
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout_secs),
            max_sessions: self.max_sessions,
            codecs,
            bandwidth_estimation: self.bandwidth_estimation,
            fast_egress: self.fast_egress,
            fast_ingress: self.fast_ingress,
            udp_gso: self.udp_gso,
            udp_recv_buffer: self.udp_recv_buffer,
        })
    }
}

/// `[sip]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    /// The SIP domain this server is registrar and proxy for.
    pub domain: String,
    /// Digest realm; defaults to the domain.
    #[serde(default)]
    pub realm: Option<String>,
    /// Listening sockets, e.g. `"udp:127.0.0.1:5060"`, `"ws:127.0.0.1:8080"`.
    pub listen: Vec<ListenSpec>,
    /// Extra host names and addresses that mean "this server" in URIs.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Forward requests for domains other than ours (an open relay when true).
    #[serde(default)]
    pub allow_foreign_domains: bool,
}

/// `[limits]`: transport limits plus the core's own.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LimitsConfig {
    #[serde(flatten)]
    pub transport: TransportConfig,
    /// Requests accepted per second from one IP address; the excess is answered 503.
    pub requests_per_second_per_ip: u32,
    /// Burst allowance on top of the per-second rate.
    pub request_burst_per_ip: u32,
    /// Concurrent transactions before new requests are answered 503.
    pub max_transactions: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            transport: TransportConfig::default(),
            requests_per_second_per_ip: 2000,
            request_burst_per_ip: 4000,
            max_transactions: 262_144,
        }
    }
}

/// `[timers]`: RFC 3261 T1, T2, T4 in milliseconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimersConfig {
    pub t1_ms: u64,
    pub t2_ms: u64,
    pub t4_ms: u64,
}

impl Default for TimersConfig {
    fn default() -> Self {
        TimersConfig {
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
        }
    }
}

/// `[registrar]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrarConfig {
    /// Shorter requested expiries are answered 423 with Min-Expires.
    pub min_expires: u32,
    /// Longer requested expiries are shortened to this.
    pub max_expires: u32,
    /// Expiry when the request names none.
    pub default_expires: u32,
    /// Bindings kept per address-of-record; the oldest is replaced beyond it.
    pub max_bindings_per_aor: usize,
    /// Binding changes are written to the store in one batch this often (milliseconds; at
    /// most [`MAX_PERSIST_INTERVAL_MS`]), each binding once as it then stands, however often
    /// it was refreshed in between; 0 writes at the end of every turn of the SIP core. A clean
    /// stop writes the last batch; a crash loses at most this interval of changes (and the
    /// batch being committed). Readers of `location/` (plugins, the admin API) see a change
    /// this much later.
    pub persist_interval_ms: u64,
}

/// The longest `[registrar] persist_interval_ms`: a minute, Kamailio's usrloc
/// `timer_interval` default for the same write-back.
pub const MAX_PERSIST_INTERVAL_MS: u64 = 60_000;

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 600,
            max_bindings_per_aor: 16,
            persist_interval_ms: 1000,
        }
    }
}

/// `[auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Digest algorithm offered: "MD5" (what SIPml5 can compute) or "SHA-256".
    pub algorithm: String,
    /// Nonce lifetime; an older nonce is answered with a fresh challenge and `stale=true`.
    pub nonce_lifetime_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            algorithm: "MD5".into(),
            nonce_lifetime_secs: 3600,
        }
    }
}

/// `[tls]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain for `tls:` and `wss:` listeners.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// Make a self-signed pair at these paths when they do not exist (local use only).
    pub self_signed: bool,
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The redb file; relative paths are relative to the config file.
    pub path: PathBuf,
    /// The most operations one plugin `store_batch` call may carry (ABI 1.3).
    pub plugin_batch_max_ops: usize,
    /// The most bytes (keys and values) one plugin `store_batch` call may carry.
    pub plugin_batch_max_bytes: usize,
}

/// The largest `[store] plugin_batch_max_ops` accepted.
pub const MAX_PLUGIN_BATCH_OPS: usize = 65_536;
/// The largest `[store] plugin_batch_max_bytes` accepted (the store's own cap on one value is
/// 4 MiB; a batch may hold several).
pub const MAX_PLUGIN_BATCH_BYTES: usize = 256 * 1024 * 1024;

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("huddle.redb"),
            plugin_batch_max_ops: 1024,
            plugin_batch_max_bytes: 16 * 1024 * 1024,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// "human" or "json".
    pub format: String,
    /// A tracing filter such as "info" or "huddle=debug".
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "human".into(),
            level: "info".into(),
        }
    }
}

/// A `[[users]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedUser {
    pub name: String,
    pub password: String,
}

/// A `[[plugins]]` entry: one plugin instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The instance's name: its logs are tagged with it and its store namespace is
    /// `plugin/<name>/`. Defaults to the name the plugin gives itself.
    #[serde(default)]
    pub name: Option<String>,
    /// The shared library; relative paths are relative to the config file.
    pub path: PathBuf,
    /// Passed to the plugin's `init` as TOML text.
    #[serde(default)]
    pub config: toml::Table,
    /// What a panicking callback does to the instance.
    #[serde(default)]
    pub on_panic: OnPanic,
    /// Requests waiting for the plugin beyond the one it is handling; more are answered 503.
    #[serde(default = "default_queue_len")]
    pub queue_len: usize,
    /// Replaces the claims the plugin makes at `init` when present (`[]`: no requests).
    #[serde(default)]
    pub claims: Option<Vec<ClaimConfig>>,
}

fn default_queue_len() -> usize {
    1024
}

/// The largest `queue_len` accepted.
pub const MAX_PLUGIN_QUEUE_LEN: usize = 1 << 20;

/// `on_panic` of a `[[plugins]]` entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnPanic {
    /// Answer the request 500, log, and keep calling the plugin.
    #[default]
    Keep,
    /// Answer the request 500, log, and never call the plugin again: requests it claimed are
    /// answered 503 until the server restarts.
    Disable,
}

/// One entry of a `claims` list: the parts a request must match (at least one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimConfig {
    /// The SIP method, exact (`MESSAGE`).
    #[serde(default)]
    pub method: Option<String>,
    /// The Event package, case-insensitive (`presence`).
    #[serde(default)]
    pub event: Option<String>,
    /// The Request-URI user pattern, `*` matching any run of characters (`room-*`).
    #[serde(default)]
    pub user: Option<String>,
    /// Requests it matches are handed over without a digest challenge (a public room).
    #[serde(default)]
    pub guests: bool,
}

impl ClaimConfig {
    /// The claim, validated by the SDK's rules.
    pub fn to_claim(&self) -> Result<huddle_sdk::Claim, huddle_sdk::claims::ClaimError> {
        huddle_sdk::Claim::from_parts(
            self.method.as_deref().unwrap_or(""),
            self.event.as_deref().unwrap_or(""),
            self.user.as_deref().unwrap_or(""),
        )
        .map(|c| if self.guests { c.open_to_guests() } else { c })
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{path}: [limits]: {source}")]
    Limits {
        path: PathBuf,
        source: crate::transport::ConfigError,
    },
    #[error("{path}: [sip] listen is empty")]
    NoListeners { path: PathBuf },
    #[error("{path}: [auth] algorithm must be \"MD5\" or \"SHA-256\"")]
    Algorithm { path: PathBuf },
    #[error("{path}: [registrar] needs min_expires <= default_expires <= max_expires")]
    Expires { path: PathBuf },
    #[error("{path}: [registrar] persist_interval_ms must be at most {MAX_PERSIST_INTERVAL_MS}")]
    PersistInterval { path: PathBuf },
    #[error("{path}: a tls: or wss: listener needs [tls] cert and key (or self_signed = true)")]
    TlsMissing { path: PathBuf },
    #[error("{path}: [[plugins]] entry {}: queue_len must be between 1 and {max}", index + 1)]
    PluginQueueLen {
        path: PathBuf,
        index: usize,
        max: usize,
    },
    #[error("{path}: [[plugins]] entry {}: name {name:?}: {source}", index + 1)]
    PluginName {
        path: PathBuf,
        index: usize,
        name: String,
        source: crate::store::StoreError,
    },
    #[error("{path}: [[plugins]] entry {}: claims: {source}", index + 1)]
    PluginClaim {
        path: PathBuf,
        index: usize,
        source: huddle_sdk::claims::ClaimError,
    },
    #[error("{path}: [media] codecs: unknown codec {name:?} (known: opus, g722, pcmu, pcma, vp8, h264, vp9, av1)")]
    MediaCodec { path: PathBuf, name: String },
    #[error(
        "{path}: [media] connect_timeout_secs, idle_timeout_secs and max_sessions must be at least 1, udp_recv_buffer at most 1073741824"
    )]
    MediaLimits { path: PathBuf },
    #[error("{path}: [web] room {room:?} must be 1-64 letters, digits, '-', '_' or '.'")]
    WebRoom { path: PathBuf, room: String },
    #[error(
        "{path}: [web] listen and [admin] listen must differ: the page is public, the API is not"
    )]
    WebOnAdmin { path: PathBuf },
    #[error("{}: [webhooks] {source}", path.display())]
    Webhooks {
        path: PathBuf,
        source: crate::webhooks::ConfigProblem,
    },
    #[error(
        "{path}: [store] plugin_batch_max_ops must be 1-{MAX_PLUGIN_BATCH_OPS} and plugin_batch_max_bytes 1-{MAX_PLUGIN_BATCH_BYTES}"
    )]
    StoreBatch { path: PathBuf },
    #[error("{path}: [[plugins]] entry {}: name {name:?} is used by another entry", index + 1)]
    PluginDuplicate {
        path: PathBuf,
        index: usize,
        name: String,
    },
}

impl Config {
    /// Reads, parses and checks a configuration file; relative paths in it are resolved
    /// against the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::from_toml(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut config.store.path);
        if let Some(p) = config.tls.cert.as_mut() {
            resolve(p);
        }
        if let Some(p) = config.tls.key.as_mut() {
            resolve(p);
        }
        for plugin in &mut config.plugins {
            resolve(&mut plugin.path);
        }
        resolve(&mut config.web.root);
        resolve(&mut config.web.jssip);
        Ok(config)
    }

    /// Parses and checks configuration text; `path` is only used in error messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        let path = path.to_owned();
        config
            .limits
            .transport
            .validate()
            .map_err(|source| ConfigError::Limits {
                path: path.clone(),
                source,
            })?;
        if config.sip.listen.is_empty() {
            return Err(ConfigError::NoListeners { path });
        }
        if huddle_sip::auth::Algorithm::parse(&config.auth.algorithm).is_err() {
            return Err(ConfigError::Algorithm { path });
        }
        let r = &config.registrar;
        if !(r.min_expires <= r.default_expires && r.default_expires <= r.max_expires) {
            return Err(ConfigError::Expires { path });
        }
        if r.persist_interval_ms > MAX_PERSIST_INTERVAL_MS {
            return Err(ConfigError::PersistInterval { path });
        }
        let needs_tls = config.sip.listen.iter().any(|l| l.transport.is_secure());
        if needs_tls
            && !config.tls.self_signed
            && (config.tls.cert.is_none() || config.tls.key.is_none())
        {
            return Err(ConfigError::TlsMissing { path });
        }
        let store = &config.store;
        if !(1..=MAX_PLUGIN_BATCH_OPS).contains(&store.plugin_batch_max_ops)
            || !(1..=MAX_PLUGIN_BATCH_BYTES).contains(&store.plugin_batch_max_bytes)
        {
            return Err(ConfigError::StoreBatch { path });
        }
        check_plugins(&config.plugins, &path)?;
        if let Err(name) = config.media.settings() {
            return Err(ConfigError::MediaCodec { path, name });
        }
        if config.media.connect_timeout_secs == 0
            || config.media.idle_timeout_secs == 0
            || config.media.max_sessions == 0
            || config.media.udp_recv_buffer > MAX_MEDIA_RECV_BUFFER
        {
            return Err(ConfigError::MediaLimits { path });
        }
        let room = &config.web.room;
        if room.is_empty()
            || room.len() > 64
            || !room
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            let room = room.clone();
            return Err(ConfigError::WebRoom { path, room });
        }
        // Port 0 on both is two different free ports.
        if config.web.listen.is_some_and(|a| a.port() != 0)
            && config.web.listen == config.admin.listen
        {
            return Err(ConfigError::WebOnAdmin { path });
        }
        if let Err(source) = config.webhooks.validate() {
            return Err(ConfigError::Webhooks { path, source });
        }
        Ok(config)
    }

    /// The digest realm.
    pub fn realm(&self) -> &str {
        self.sip.realm.as_deref().unwrap_or(&self.sip.domain)
    }
}

/// What can be checked of `[[plugins]]` without loading anything: queue lengths, names that
/// can name a store namespace and are unique, claims that are valid. (Instance names taken
/// from the libraries themselves are checked again when they are loaded.)
fn check_plugins(plugins: &[PluginConfig], path: &Path) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for (index, plugin) in plugins.iter().enumerate() {
        if !(1..=MAX_PLUGIN_QUEUE_LEN).contains(&plugin.queue_len) {
            return Err(ConfigError::PluginQueueLen {
                path: path.to_owned(),
                index,
                max: MAX_PLUGIN_QUEUE_LEN,
            });
        }
        if let Some(name) = &plugin.name {
            if let Err(source) = crate::store::Namespace::plugin(name) {
                return Err(ConfigError::PluginName {
                    path: path.to_owned(),
                    index,
                    name: name.clone(),
                    source,
                });
            }
            if !seen.insert(name.as_str()) {
                return Err(ConfigError::PluginDuplicate {
                    path: path.to_owned(),
                    index,
                    name: name.clone(),
                });
            }
        }
        for claim in plugin.claims.iter().flatten() {
            if let Err(source) = claim.to_claim() {
                return Err(ConfigError::PluginClaim {
                    path: path.to_owned(),
                    index,
                    source,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[sip]\ndomain = \"example.test\"\nlisten = [\"udp:127.0.0.1:0\"]\n";

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::from_toml(&format!("{BASE}{extra}"), Path::new("t.toml"))
    }

    #[test]
    fn the_media_receive_buffer_defaults_to_4_mib_and_is_bounded() {
        let settings = parse("").unwrap().media.settings().unwrap();
        assert_eq!(settings.udp_recv_buffer, 4 << 20);
        let off = parse("[media]\nudp_recv_buffer = 0\n").unwrap();
        assert_eq!(off.media.settings().unwrap().udp_recv_buffer, 0);
        let max = format!("[media]\nudp_recv_buffer = {MAX_MEDIA_RECV_BUFFER}\n");
        assert!(parse(&max).is_ok());
        let over = format!("[media]\nudp_recv_buffer = {}\n", MAX_MEDIA_RECV_BUFFER + 1);
        assert!(matches!(parse(&over), Err(ConfigError::MediaLimits { .. })));
    }

    #[test]
    fn plugin_tables_parse_with_defaults() {
        let config = parse(
            "[[plugins]]\npath = \"libecho.so\"\n\n[[plugins]]\nname = \"kit\"\npath = \"/x/libkit.so\"\n\
             on_panic = \"disable\"\nqueue_len = 8\nclaims = [{ method = \"MESSAGE\", user = \"echo\" }]\n\
             [plugins.config]\nuser = \"echo\"\nnested = { a = 1 }\n",
        )
        .unwrap();
        let [first, second] = config.plugins.as_slice() else {
            panic!("two plugins")
        };
        assert_eq!(first.name, None);
        assert_eq!(first.on_panic, OnPanic::Keep);
        assert_eq!(first.queue_len, 1024);
        assert!(first.config.is_empty() && first.claims.is_none());
        assert_eq!(second.on_panic, OnPanic::Disable);
        assert_eq!(second.queue_len, 8);
        assert_eq!(
            second.claims.as_ref().unwrap()[0].to_claim().unwrap(),
            huddle_sdk::Claim::method("MESSAGE").with_user("echo")
        );
        assert_eq!(second.config["user"].as_str(), Some("echo"));
    }

    #[test]
    fn bad_plugin_tables_are_refused() {
        for (extra, needle) in [
            ("[[plugins]]\npath = \"a\"\nqueue_len = 0\n", "queue_len"),
            ("[[plugins]]\nname = \"a/b\"\npath = \"a\"\n", "name \"a/b\""),
            (
                "[[plugins]]\nname = \"a\"\npath = \"a\"\n[[plugins]]\nname = \"a\"\npath = \"b\"\n",
                "used by another entry",
            ),
            (
                "[[plugins]]\npath = \"a\"\nclaims = [{ method = \"REGISTER\" }]\n",
                "REGISTER cannot be claimed",
            ),
            ("[[plugins]]\npath = \"a\"\nclaims = [{}]\n", "must name a method"),
            ("[[plugins]]\npath = \"a\"\nqueue = 3\n", "unknown field"),
        ] {
            let err = parse(extra).unwrap_err().to_string();
            assert!(err.contains(needle), "{extra}: {err}");
        }
    }

    #[test]
    fn plugin_batch_limits_are_checked() {
        let ok = parse("").unwrap();
        assert_eq!(ok.store.plugin_batch_max_ops, 1024);
        let ok = parse("[store]\nplugin_batch_max_ops = 7\n").unwrap();
        assert_eq!(ok.store.plugin_batch_max_ops, 7);
        for bad in ["plugin_batch_max_ops = 0", "plugin_batch_max_bytes = 0"] {
            let err = parse(&format!("[store]\n{bad}\n")).unwrap_err().to_string();
            assert!(err.contains("plugin_batch_max_ops must be"), "{bad}: {err}");
        }
    }

    #[test]
    fn plugin_paths_are_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("huddle.toml");
        std::fs::write(
            &file,
            format!("{BASE}[[plugins]]\npath = \"../lib/libecho.so\"\n"),
        )
        .unwrap();
        let config = Config::load(&file).unwrap();
        assert_eq!(config.plugins[0].path, dir.path().join("../lib/libecho.so"));
    }

    #[test]
    fn the_shipped_config_and_its_plugin_example_parse() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/huddle.toml");
        let text = std::fs::read_to_string(&shipped).unwrap();
        Config::from_toml(&text, &shipped).unwrap();
        // The commented `[[plugins]]` example, uncommented, is a valid entry too.
        let example: String = text
            .lines()
            .skip_while(|l| !l.starts_with("# [[plugins]]"))
            .take_while(|l| l.starts_with('#'))
            .filter(|l| !l.starts_with("# #"))
            .map(|l| format!("{}\n", l.trim_start_matches('#').trim_start()))
            .collect();
        assert!(example.contains("[[plugins]]"), "{example}");
        let config = parse(&example).unwrap();
        assert_eq!(config.plugins.len(), 1);
    }
}
