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
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 600,
            max_bindings_per_aor: 16,
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
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("huddle.redb"),
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
    #[error("{path}: a tls: or wss: listener needs [tls] cert and key (or self_signed = true)")]
    TlsMissing { path: PathBuf },
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
        let needs_tls = config.sip.listen.iter().any(|l| l.transport.is_secure());
        if needs_tls
            && !config.tls.self_signed
            && (config.tls.cert.is_none() || config.tls.key.is_none())
        {
            return Err(ConfigError::TlsMissing { path });
        }
        Ok(config)
    }

    /// The digest realm.
    pub fn realm(&self) -> &str {
        self.sip.realm.as_deref().unwrap_or(&self.sip.domain)
    }
}
