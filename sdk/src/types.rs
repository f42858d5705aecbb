//! Plain value types of the safe layer, shared by plugins and hosts: ids, capability bits, log
//! levels, transports, store and registration events. Each mirrors an ABI integer or struct and
//! converts from it without trusting it (unknown codes become an `Other` value, not UB).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::{BitOr, BitOrAssign};

use crate::abi;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw id as it crosses the ABI.
            pub fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A server transaction the plugin answers through `respond` (never 0).
    TransactionId
);
id_type!(
    /// A request the plugin sent; its responses carry this id (never 0).
    RequestId
);
id_type!(
    /// A one-shot timer (never 0).
    TimerId
);
id_type!(
    /// A prefix watch (never 0).
    WatchId
);
id_type!(
    /// A media session created by `media_answer` (never 0).
    MediaSessionId
);

/// A set of `HUDDLE_CAP_*` bits: what a plugin requires, or what a host provides.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(u64);

impl Capabilities {
    /// Nothing.
    pub const NONE: Capabilities = Capabilities(0);
    /// The key-value store in the plugin's own namespace.
    pub const STORE: Capabilities = Capabilities(abi::HUDDLE_CAP_STORE);
    /// Prefix watches.
    pub const STORE_WATCH: Capabilities = Capabilities(abi::HUDDLE_CAP_STORE_WATCH);
    /// Reading the `location` namespace.
    pub const LOCATION: Capabilities = Capabilities(abi::HUDDLE_CAP_LOCATION);
    /// Registration events.
    pub const REGISTRATION_EVENTS: Capabilities = Capabilities(abi::HUDDLE_CAP_REGISTRATION_EVENTS);
    /// Sending requests.
    pub const SEND_REQUEST: Capabilities = Capabilities(abi::HUDDLE_CAP_SEND_REQUEST);
    /// Timers.
    pub const TIMERS: Capabilities = Capabilities(abi::HUDDLE_CAP_TIMERS);
    /// The media engine.
    pub const MEDIA: Capabilities = Capabilities(abi::HUDDLE_CAP_MEDIA);
    /// (ABI 1.2) Raising webhook events ([`crate::Host::emit_event`]).
    pub const EVENTS: Capabilities = Capabilities(abi::HUDDLE_CAP_EVENTS);
    /// (ABI 1.11) The host lends its allocator ([`crate::HostAllocator`]).
    pub const HOST_ALLOCATOR: Capabilities = Capabilities(abi::HUDDLE_CAP_HOST_ALLOCATOR);
    /// Everything ABI 1.0 defines.
    pub const ALL: Capabilities = Capabilities(abi::HUDDLE_CAP_ALL_V1_0);

    /// From raw bits (unknown bits are kept: they are what a newer peer means).
    pub const fn from_bits(bits: u64) -> Self {
        Capabilities(bits)
    }

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Both sets (usable in `const` contexts, such as `export_plugin!`).
    pub const fn with(self, other: Capabilities) -> Self {
        Capabilities(self.0 | other.0)
    }

    /// This set without `other`.
    pub const fn without(self, other: Capabilities) -> Self {
        Capabilities(self.0 & !other.0)
    }

    /// Whether every bit of `other` is in this set.
    pub const fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    /// True for the empty set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for Capabilities {
    type Output = Capabilities;
    fn bitor(self, rhs: Self) -> Self {
        self.with(rhs)
    }
}

impl BitOrAssign for Capabilities {
    fn bitor_assign(&mut self, rhs: Self) {
        *self = self.with(rhs);
    }
}

/// Names the bits: `store|timers`, unknown bits as hex, `none` for the empty set.
impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("none");
        }
        let mut rest = self.0;
        let mut first = true;
        for (bit, name) in abi::CAPABILITY_NAMES {
            if rest & bit != 0 {
                if !first {
                    f.write_str("|")?;
                }
                first = false;
                f.write_str(name)?;
                rest &= !bit;
            }
        }
        if rest != 0 {
            if !first {
                f.write_str("|")?;
            }
            write!(f, "{rest:#x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Capabilities({self})")
    }
}

/// A log level (`HUDDLE_LOG_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// An error.
    Error,
    /// A warning.
    Warn,
    /// Information.
    Info,
    /// Debugging detail.
    Debug,
    /// Tracing detail.
    Trace,
}

impl Level {
    /// The ABI code.
    pub fn code(self) -> u32 {
        match self {
            Level::Error => abi::HUDDLE_LOG_ERROR,
            Level::Warn => abi::HUDDLE_LOG_WARN,
            Level::Info => abi::HUDDLE_LOG_INFO,
            Level::Debug => abi::HUDDLE_LOG_DEBUG,
            Level::Trace => abi::HUDDLE_LOG_TRACE,
        }
    }

    /// From an ABI code; codes beyond the known ones log at the most detailed level.
    pub fn from_code(code: u32) -> Level {
        match code {
            0 | abi::HUDDLE_LOG_ERROR => Level::Error,
            abi::HUDDLE_LOG_WARN => Level::Warn,
            abi::HUDDLE_LOG_INFO => Level::Info,
            abi::HUDDLE_LOG_DEBUG => Level::Debug,
            _ => Level::Trace,
        }
    }
}

/// The transport a request arrived on (`HUDDLE_TRANSPORT_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS.
    Tls,
    /// WebSocket.
    Ws,
    /// Secure WebSocket.
    Wss,
    /// The host itself, or a transport this SDK does not know.
    Other,
}

impl Transport {
    /// The ABI code.
    pub fn code(self) -> u32 {
        match self {
            Transport::Udp => abi::HUDDLE_TRANSPORT_UDP,
            Transport::Tcp => abi::HUDDLE_TRANSPORT_TCP,
            Transport::Tls => abi::HUDDLE_TRANSPORT_TLS,
            Transport::Ws => abi::HUDDLE_TRANSPORT_WS,
            Transport::Wss => abi::HUDDLE_TRANSPORT_WSS,
            Transport::Other => abi::HUDDLE_TRANSPORT_OTHER,
        }
    }

    /// From an ABI code.
    pub fn from_code(code: u32) -> Transport {
        match code {
            abi::HUDDLE_TRANSPORT_UDP => Transport::Udp,
            abi::HUDDLE_TRANSPORT_TCP => Transport::Tcp,
            abi::HUDDLE_TRANSPORT_TLS => Transport::Tls,
            abi::HUDDLE_TRANSPORT_WS => Transport::Ws,
            abi::HUDDLE_TRANSPORT_WSS => Transport::Wss,
            _ => Transport::Other,
        }
    }
}

/// What the host knows about a request besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// The transport it arrived on.
    pub transport: Transport,
    /// Where it came from, when known.
    pub source: Option<SocketAddr>,
    /// The user the host authenticated, if any.
    pub auth_user: Option<String>,
    /// For a CANCEL: the INVITE transaction it cancels.
    pub related: Option<TransactionId>,
}

impl RequestInfo {
    /// A request from `source` over `transport`, not authenticated.
    pub fn new(transport: Transport, source: Option<SocketAddr>) -> Self {
        RequestInfo {
            transport,
            source,
            auth_user: None,
            related: None,
        }
    }

    /// The same, authenticated as `user`.
    pub fn authenticated(mut self, user: &str) -> Self {
        self.auth_user = Some(user.to_owned());
        self
    }

    /// The source IP as text, as it crosses the ABI (empty when unknown). An IPv4 address is
    /// written digit by digit: `Display` went through the formatting machinery, ~1.4 k
    /// instructions for each answer a plugin built (the Via's `received`).
    pub fn source_ip_text(&self) -> String {
        match self.source.map(|s| s.ip()) {
            None => String::new(),
            Some(IpAddr::V4(v4)) => {
                let mut out = String::with_capacity(15);
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push('.');
                    }
                    if octet >= 100 {
                        out.push(char::from(b'0' + octet / 100));
                    }
                    if octet >= 10 {
                        out.push(char::from(b'0' + octet / 10 % 10));
                    }
                    out.push(char::from(b'0' + octet % 10));
                }
                out
            }
            Some(ip) => ip.to_string(),
        }
    }

    /// Parses the ABI's text form of the source address.
    pub(crate) fn parse_source(ip: &str, port: u32) -> Option<SocketAddr> {
        let ip: IpAddr = ip.trim_matches(['[', ']']).parse().ok()?;
        Some(SocketAddr::new(ip, u16::try_from(port).unwrap_or(0)))
    }
}

impl Default for RequestInfo {
    fn default() -> Self {
        RequestInfo::new(Transport::Other, None)
    }
}

/// (ABI 1.3) One write of [`crate::Store::apply_batch`], borrowing its key and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOp<'a> {
    /// Set `key` to `value`.
    Put {
        /// The key, relative to the own namespace.
        key: &'a [u8],
        /// The new value.
        value: &'a [u8],
    },
    /// Delete `key` (absent already is fine).
    Delete {
        /// The key, relative to the own namespace.
        key: &'a [u8],
    },
}

impl BatchOp<'_> {
    /// The key this op writes.
    pub fn key(&self) -> &[u8] {
        match self {
            BatchOp::Put { key, .. } | BatchOp::Delete { key } => key,
        }
    }

    /// Bytes of key and value, as the host counts them against its batch limit.
    pub fn byte_len(&self) -> usize {
        match self {
            BatchOp::Put { key, value } => key.len() + value.len(),
            BatchOp::Delete { key } => key.len(),
        }
    }
}

/// (ABI 1.7) One packet of [`crate::Host::send_rtp_batch`]: what [`crate::Host::send_rtp`]
/// takes, borrowed for the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutgoingRtp<'a> {
    /// The media session.
    pub session: MediaSessionId,
    /// The stream.
    pub mid: &'a str,
    /// One plain RTP packet (header and payload).
    pub packet: &'a [u8],
}

/// One page of a prefix scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// Keys (relative to the namespace) and values, in key order.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// Whether entries remain after the last one.
    pub more: bool,
}

impl ScanPage {
    /// The `start_after` that continues this scan; `None` when it is complete.
    pub fn resume_after(&self) -> Option<&[u8]> {
        if self.more {
            self.entries.last().map(|(k, _)| k.as_slice())
        } else {
            None
        }
    }
}

/// A change under a watched prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChange {
    /// `key` now holds `value`.
    Put {
        /// The watch that saw it.
        watch: WatchId,
        /// The key, relative to the watched namespace.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// `key` was deleted.
    Delete {
        /// The watch that saw it.
        watch: WatchId,
        /// The key, relative to the watched namespace.
        key: Vec<u8>,
    },
    /// Changes were dropped because the plugin fell behind: rescan the prefix.
    Lagged {
        /// The watch that lagged.
        watch: WatchId,
    },
}

impl StoreChange {
    /// The watch this change belongs to.
    pub fn watch(&self) -> WatchId {
        match self {
            StoreChange::Put { watch, .. }
            | StoreChange::Delete { watch, .. }
            | StoreChange::Lagged { watch } => *watch,
        }
    }

    /// The `HUDDLE_STORE_*` code.
    pub fn kind_code(&self) -> u32 {
        match self {
            StoreChange::Put { .. } => abi::HUDDLE_STORE_PUT,
            StoreChange::Delete { .. } => abi::HUDDLE_STORE_DELETE,
            StoreChange::Lagged { .. } => abi::HUDDLE_STORE_LAGGED,
        }
    }
}

/// What happened to an address-of-record's registrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegistrationKind {
    /// From no bindings to at least one.
    Online,
    /// The last binding went away.
    Offline,
    /// The bindings changed while online.
    Updated,
    /// A kind this SDK does not know (from a newer host).
    Other(u32),
}

impl RegistrationKind {
    /// The `HUDDLE_REG_*` code.
    pub fn code(self) -> u32 {
        match self {
            RegistrationKind::Online => abi::HUDDLE_REG_ONLINE,
            RegistrationKind::Offline => abi::HUDDLE_REG_OFFLINE,
            RegistrationKind::Updated => abi::HUDDLE_REG_UPDATED,
            RegistrationKind::Other(c) => c,
        }
    }

    /// From a `HUDDLE_REG_*` code.
    pub fn from_code(code: u32) -> Self {
        match code {
            abi::HUDDLE_REG_ONLINE => RegistrationKind::Online,
            abi::HUDDLE_REG_OFFLINE => RegistrationKind::Offline,
            abi::HUDDLE_REG_UPDATED => RegistrationKind::Updated,
            c => RegistrationKind::Other(c),
        }
    }
}

/// A registration event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationEvent {
    /// What happened.
    pub kind: RegistrationKind,
    /// The address-of-record (`sip:alice@example.com`).
    pub aor: String,
    /// How many bindings it has now.
    pub bindings: u32,
    /// The keys (under `location/`) of its bindings now, so a plugin that tracks devices learns
    /// of a new one in order with the requests that follow it (the `location/` store itself is
    /// written behind, up to its window later). Empty from hosts before ABI 1.2.
    pub binding_keys: Vec<String>,
}

/// Why a media session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HangupReason {
    /// Ended normally (BYE, remote close, `media_close`).
    Normal,
    /// ICE or DTLS failed.
    Transport,
    /// The host is shutting down.
    Shutdown,
    /// A reason this SDK does not know.
    Other(u32),
}

impl HangupReason {
    /// The `HUDDLE_HANGUP_*` code.
    pub fn code(self) -> u32 {
        match self {
            HangupReason::Normal => abi::HUDDLE_HANGUP_NORMAL,
            HangupReason::Transport => abi::HUDDLE_HANGUP_TRANSPORT,
            HangupReason::Shutdown => abi::HUDDLE_HANGUP_SHUTDOWN,
            HangupReason::Other(c) => c,
        }
    }

    /// From a `HUDDLE_HANGUP_*` code.
    pub fn from_code(code: u32) -> Self {
        match code {
            abi::HUDDLE_HANGUP_NORMAL => HangupReason::Normal,
            abi::HUDDLE_HANGUP_TRANSPORT => HangupReason::Transport,
            abi::HUDDLE_HANGUP_SHUTDOWN => HangupReason::Shutdown,
            c => HangupReason::Other(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names() {
        assert_eq!(Capabilities::NONE.to_string(), "none");
        assert_eq!(
            (Capabilities::STORE | Capabilities::TIMERS).to_string(),
            "store|timers"
        );
        assert_eq!(
            Capabilities::from_bits(abi::HUDDLE_CAP_MEDIA | 1 << 40).to_string(),
            "media|0x10000000000"
        );
        assert!(Capabilities::ALL.contains(Capabilities::MEDIA));
    }

    #[test]
    fn source_ip_text_is_what_display_writes() {
        // Every octet value in every position.
        let mut ips: Vec<IpAddr> = (0..=255u8)
            .flat_map(|o| [[o, 1, 2, 3], [4, o, 5, 6], [7, 8, o, 9], [10, 11, 12, o]])
            .map(IpAddr::from)
            .collect();
        ips.push("2001:db8::1".parse().unwrap());
        ips.push("::ffff:192.0.2.1".parse().unwrap());
        for ip in ips {
            let info = RequestInfo::new(Transport::Udp, Some(SocketAddr::new(ip, 5060)));
            assert_eq!(info.source_ip_text(), ip.to_string());
        }
        assert_eq!(RequestInfo::new(Transport::Udp, None).source_ip_text(), "");
    }

    #[test]
    fn source_text() {
        assert_eq!(
            RequestInfo::parse_source("2001:db8::1", 5060),
            Some("[2001:db8::1]:5060".parse().unwrap())
        );
        assert_eq!(RequestInfo::parse_source("", 5060), None);
    }
}
