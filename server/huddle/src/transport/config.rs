//! Transport limits and timers. Durations are written in the config as seconds
//! (`ws_ping_interval_secs = 25`, fractions allowed) and held as [`Duration`]s.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Limits and timers for every transport. `Default` gives the documented defaults; serde fills
/// missing keys from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TransportConfig {
    /// Largest SIP message accepted, headers plus body, on any transport (default 65535).
    /// Larger stream messages close the connection; larger datagrams are dropped.
    pub max_message_size: usize,
    /// Most simultaneous stream connections, inbound and outbound (default 10000).
    pub max_connections: usize,
    /// Most simultaneous inbound connections from one IP address (default 256; an office
    /// behind one NAT is many browsers).
    pub max_connections_per_ip: usize,
    /// How often the server pings each WebSocket peer (default 25 s; SIPml5 sends no
    /// keep-alives, so server pings are its only liveness check).
    #[serde(rename = "ws_ping_interval_secs", with = "secs")]
    pub ws_ping_interval: Duration,
    /// How long a WebSocket peer may take to answer a ping before it is closed (default 10 s).
    #[serde(rename = "ws_pong_timeout_secs", with = "secs")]
    pub ws_pong_timeout: Duration,
    /// A TCP/TLS connection with no traffic either way for this long is closed (default
    /// 600 s; RFC 5626 clients ping every 95-120 s).
    #[serde(rename = "tcp_idle_timeout_secs", with = "secs")]
    pub tcp_idle_timeout: Duration,
    /// Bound on a TLS or WebSocket handshake, or an outbound connect (default 10 s).
    #[serde(rename = "handshake_timeout_secs", with = "secs")]
    pub handshake_timeout: Duration,
    /// Bound on writing one message to a peer; a peer that does not read is closed (default 10 s).
    #[serde(rename = "write_timeout_secs", with = "secs")]
    pub write_timeout: Duration,
    /// Messages queued per connection before `send` reports `QueueFull` (default 128).
    pub write_queue_len: usize,
    /// Events queued towards the core before reading pauses (default 1024).
    pub event_queue_len: usize,
    /// PEM certificate chain for TLS and WSS listeners.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS and WSS listeners.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Open-connection gauges for `/metrics` (run-time state, not read from the file).
    #[serde(skip)]
    pub connections: crate::metrics::ConnectionGauges,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            max_message_size: 65_535,
            max_connections: 10_000,
            max_connections_per_ip: 256,
            ws_ping_interval: Duration::from_secs(25),
            ws_pong_timeout: Duration::from_secs(10),
            tcp_idle_timeout: Duration::from_secs(600),
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            write_queue_len: 128,
            event_queue_len: 1024,
            tls_cert: None,
            tls_key: None,
            connections: Default::default(),
        }
    }
}

/// A transport setting out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_message_size` below 1024 or above 16 MiB.
    #[error("max_message_size must be between 1024 and 16777216 bytes")]
    MessageSize,
    /// A count that must be at least 1 (and fit a semaphore).
    #[error("{0} must be at least 1")]
    ZeroCount(&'static str),
    /// A duration that must be positive.
    #[error("{0} must be greater than zero")]
    ZeroDuration(&'static str),
}

impl TransportConfig {
    /// Checks ranges; [`Transports::bind`](super::Transports::bind) calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1024..=16 << 20).contains(&self.max_message_size) {
            return Err(ConfigError::MessageSize);
        }
        for (name, n) in [
            ("max_connections", self.max_connections),
            ("max_connections_per_ip", self.max_connections_per_ip),
            ("write_queue_len", self.write_queue_len),
            ("event_queue_len", self.event_queue_len),
        ] {
            if n == 0 {
                return Err(ConfigError::ZeroCount(name));
            }
        }
        for (name, d) in [
            ("ws_ping_interval_secs", self.ws_ping_interval),
            ("ws_pong_timeout_secs", self.ws_pong_timeout),
            ("tcp_idle_timeout_secs", self.tcp_idle_timeout),
            ("handshake_timeout_secs", self.handshake_timeout),
            ("write_timeout_secs", self.write_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        Ok(())
    }
}

/// Durations as (possibly fractional) seconds.
mod secs {
    use std::time::Duration;

    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if d.subsec_nanos() == 0 {
            s.serialize_u64(d.as_secs())
        } else {
            s.serialize_f64(d.as_secs_f64())
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs)
            .map_err(|_| D::Error::custom("expected a non-negative number of seconds"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_seconds() {
        let c: TransportConfig = toml::from_str("").unwrap();
        assert_eq!(c, TransportConfig::default());
        c.validate().unwrap();
        let c: TransportConfig = toml::from_str(
            "ws_ping_interval_secs = 5\nws_pong_timeout_secs = 0.5\nmax_connections = 3",
        )
        .unwrap();
        assert_eq!(c.ws_ping_interval, Duration::from_secs(5));
        assert_eq!(c.ws_pong_timeout, Duration::from_millis(500));
        assert_eq!(c.max_connections, 3);
        let back: TransportConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(toml::from_str::<TransportConfig>("ws_ping_interval_secs = -1").is_err());
    }

    #[test]
    fn validation() {
        let mut c = TransportConfig {
            max_message_size: 100,
            ..Default::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::MessageSize));
        c.max_message_size = 4096;
        c.ws_pong_timeout = Duration::ZERO;
        assert_eq!(
            c.validate(),
            Err(ConfigError::ZeroDuration("ws_pong_timeout_secs"))
        );
        c.ws_pong_timeout = Duration::from_secs(1);
        c.max_connections_per_ip = 0;
        assert_eq!(
            c.validate(),
            Err(ConfigError::ZeroCount("max_connections_per_ip"))
        );
    }
}
