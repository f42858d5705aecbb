//! Listener specifications as written in the config: `"udp:127.0.0.1:5060"`, `"wss:[::]:8443"`.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Transport;

/// One listening socket: a transport and the address to bind (port 0 picks a free port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ListenSpec {
    /// The transport served on this socket.
    pub transport: Transport,
    /// The local address; IPv6 in brackets in the string form.
    pub addr: SocketAddr,
}

/// Why a listener string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseListenSpecError {
    /// No `transport:` prefix.
    #[error("expected `<transport>:<ip>:<port>`, e.g. `udp:0.0.0.0:5060`")]
    MissingTransport,
    /// The prefix is not one of udp, tcp, tls, ws, wss.
    #[error("unknown transport (expected udp, tcp, tls, ws or wss)")]
    UnknownTransport,
    /// The rest is not `ip:port` (`[ipv6]:port` for IPv6; host names are not resolved).
    #[error("expected an IP address and port such as `127.0.0.1:5060` or `[::1]:5060`")]
    InvalidAddress,
}

impl FromStr for ListenSpec {
    type Err = ParseListenSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (transport, addr) = s
            .trim()
            .split_once(':')
            .ok_or(ParseListenSpecError::MissingTransport)?;
        let transport = Transport::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(transport))
            .ok_or(ParseListenSpecError::UnknownTransport)?;
        let addr = addr
            .parse()
            .map_err(|_| ParseListenSpecError::InvalidAddress)?;
        Ok(Self { transport, addr })
    }
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport.name(), self.addr)
    }
}

impl TryFrom<String> for ListenSpec {
    type Error = ParseListenSpecError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ListenSpec> for String {
    fn from(spec: ListenSpec) -> Self {
        spec.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for (s, t, a) in [
            ("udp:127.0.0.1:5060", Transport::Udp, "127.0.0.1:5060"),
            ("TCP:0.0.0.0:5060", Transport::Tcp, "0.0.0.0:5060"),
            ("tls:[::1]:5061", Transport::Tls, "[::1]:5061"),
            ("ws:127.0.0.1:8080", Transport::Ws, "127.0.0.1:8080"),
            (" wss:[::]:0 ", Transport::Wss, "[::]:0"),
        ] {
            let spec: ListenSpec = s.parse().unwrap();
            assert_eq!(spec.transport, t);
            assert_eq!(spec.addr, a.parse::<SocketAddr>().unwrap());
            assert_eq!(spec.to_string().parse::<ListenSpec>().unwrap(), spec);
        }
        assert_eq!(
            "udp:[::1]:5060".parse::<ListenSpec>().unwrap().to_string(),
            "udp:[::1]:5060"
        );
    }

    #[test]
    fn rejects() {
        use ParseListenSpecError::*;
        for (s, e) in [
            ("127.0.0.1", MissingTransport),
            ("sctp:127.0.0.1:5060", UnknownTransport),
            ("udp:127.0.0.1", InvalidAddress),
            ("udp:localhost:5060", InvalidAddress),
            ("udp:::1:5060", InvalidAddress),
            ("udp:127.0.0.1:70000", InvalidAddress),
            ("", MissingTransport),
        ] {
            assert_eq!(s.parse::<ListenSpec>(), Err(e), "{s}");
        }
    }

    #[test]
    fn serde_as_string() {
        #[derive(Deserialize, Serialize)]
        struct C {
            listen: Vec<ListenSpec>,
        }
        let c: C = toml::from_str(r#"listen = ["udp:127.0.0.1:5060", "wss:[::1]:443"]"#).unwrap();
        assert_eq!(c.listen[1].transport, Transport::Wss);
        let back = toml::to_string(&c).unwrap();
        assert!(back.contains("\"wss:[::1]:443\""), "{back}");
        assert!(toml::from_str::<C>(r#"listen = ["bogus"]"#).is_err());
    }
}
