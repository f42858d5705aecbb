//! Transaction handles given to the TU, and the matching keys of RFC 3261 §17.1.3 (client) and
//! §17.2.3 (server, with the RFC 2543 fallback).

use std::hash::{Hash, Hasher};

use crate::headers::{HeaderError, Via};
use crate::message::{Message, Method};

use super::TransactionError;

/// The RFC 3261 branch prefix (§8.1.1.7).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// True when a branch identifies an RFC 3261 transaction: the magic cookie followed by a
/// unique part. A bare `z9hG4bK` (RFC 4475 §3.2.1, `badbranch`) falls back to RFC 2543 matching.
pub fn is_rfc3261_branch(branch: &str) -> bool {
    branch.len() > MAGIC_COOKIE.len() && branch.starts_with(MAGIC_COOKIE)
}

/// Handle of a client transaction (a request this element sent). Never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey(pub(crate) u64);

/// Handle of a server transaction (a request this element received). Never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerKey(pub(crate) u64);

/// Either handle, for events and inputs that concern both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionKey {
    Client(ClientKey),
    Server(ServerKey),
}

impl From<ClientKey> for TransactionKey {
    fn from(k: ClientKey) -> Self {
        TransactionKey::Client(k)
    }
}

impl From<ServerKey> for TransactionKey {
    fn from(k: ServerKey) -> Self {
        TransactionKey::Server(k)
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "client#{}", self.0)
    }
}

impl std::fmt::Display for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "server#{}", self.0)
    }
}

impl std::fmt::Display for TransactionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransactionKey::Client(k) => k.fmt(f),
            TransactionKey::Server(k) => k.fmt(f),
        }
    }
}

/// RFC 3261 §17.1.3: a response matches a client transaction by the branch of its top Via and
/// the method of its CSeq.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ClientMatch {
    branch: Box<str>,
    method: Method,
}

impl ClientMatch {
    /// The key of a request the TU sends. The branch must be RFC 3261 style and the CSeq
    /// method must be the request's, or responses could never match.
    pub(crate) fn of_request(msg: &Message) -> Result<ClientMatch, TransactionError> {
        msg.method().ok_or(TransactionError::NotARequest)?;
        msg.top_via()?;
        let branch = msg.branch().ok_or(TransactionError::NoMagicCookie)?;
        Self::of_request_with_branch(msg, branch)
    }

    /// [`ClientMatch::of_request`] with the top Via's branch given by the TU that wrote it.
    pub(crate) fn of_request_with_branch(
        msg: &Message,
        branch: &str,
    ) -> Result<ClientMatch, TransactionError> {
        let method = msg.method().ok_or(TransactionError::NotARequest)?;
        if !is_rfc3261_branch(branch) {
            return Err(TransactionError::NoMagicCookie);
        }
        let cseq = msg.cseq()?;
        if &cseq.method != method {
            return Err(HeaderError::Invalid("CSeq").into());
        }
        Ok(ClientMatch {
            branch: branch.into(),
            method: method.clone(),
        })
    }

    /// The key a response is looked up with, borrowed from it; `None` when it has no usable
    /// Via branch or CSeq.
    pub(crate) fn of_response(msg: &Message) -> Option<ClientMatchRef<'_>> {
        let branch = msg.branch()?;
        let cseq = msg.cseq().ok()?;
        Some(ClientMatchRef {
            branch,
            method: cseq.method,
        })
    }

    /// True when a response with this borrowed key matches.
    pub(crate) fn matches(&self, key: &ClientMatchRef<'_>) -> bool {
        *self.branch == *key.branch && self.method == key.method
    }

    /// The same branch with another method (the CANCEL for an INVITE).
    pub(crate) fn with_method(&self, method: Method) -> ClientMatch {
        ClientMatch {
            branch: self.branch.clone(),
            method,
        }
    }
}

/// A [`ClientMatch`] borrowed from a response: looking a response up builds no key. It hashes
/// as the key does (a `Box<str>` hashes as the `str` it holds).
#[derive(Debug, Hash)]
pub(crate) struct ClientMatchRef<'a> {
    branch: &'a str,
    method: Method,
}

/// RFC 3261 §17.2.3 server transaction identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServerMatch {
    /// Branch (with the magic cookie), sent-by and method; ACK is folded into INVITE.
    Branch {
        /// The branch, a space, and the sent-by host in lower case: one allocation per
        /// request instead of two.
        branch_host: Box<str>,
        /// Where the branch ends in `branch_host`.
        branch_len: u32,
        port: Option<u16>,
        method: Method,
    },
    /// The RFC 2543 fallback: Request-URI, To tag, From tag, Call-ID, CSeq number, top Via and
    /// method (ACK folded into INVITE). The To tag is that of the request; an ACK carries the
    /// tag of our response instead, which [`ServerMatch::for_ack`] accounts for.
    ///
    /// Boxed: it is rare (RFC 2543 clients) and more than twice the size of the branch form
    /// (112 bytes against 48), which every transaction's entry would otherwise be sized for.
    Rfc2543(Box<Rfc2543Match>),
}

/// Hashes what [`ServerMatchRef`] hashes for the same request: for the branch form the branch
/// (not the host, which the key holds in lower case and a request may not), port and method.
impl Hash for ServerMatch {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            ServerMatch::Branch {
                branch_host,
                branch_len,
                port,
                method,
            } => {
                branch_host
                    .get(..*branch_len as usize)
                    .unwrap_or_default()
                    .hash(state);
                port.hash(state);
                method.hash(state);
            }
            ServerMatch::Rfc2543(k) => k.hash(state),
        }
    }
}

/// The branch form of a [`ServerMatch`] borrowed from a request, for lookups that build no key
/// (ACKs, retransmissions, a CANCEL's INVITE). Equal to a key when [`ServerMatch::matches`]
/// says so, and then of the same hash.
#[derive(Debug)]
pub(crate) struct ServerMatchRef<'a> {
    branch: &'a str,
    /// As received; compared ignoring ASCII case.
    host: &'a str,
    port: Option<u16>,
    method: Method,
}

impl Hash for ServerMatchRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.branch.hash(state);
        self.port.hash(state);
        self.method.hash(state);
    }
}

impl ServerMatchRef<'_> {
    /// The key itself, to index a new transaction under: what [`ServerMatch::of_request`] makes
    /// of the same request.
    pub(crate) fn to_key(&self) -> ServerMatch {
        let mut key = String::with_capacity(self.branch.len() + 1 + self.host.len());
        key.push_str(self.branch);
        key.push(' ');
        key.push_str(self.host);
        key[self.branch.len() + 1..].make_ascii_lowercase();
        ServerMatch::Branch {
            branch_host: key.into_boxed_str(),
            // `ServerMatch::view` checked that it fits.
            branch_len: self.branch.len() as u32,
            port: self.port,
            method: self.method.clone(),
        }
    }

    /// The same identity with another method (a CANCEL looking for its INVITE).
    pub(crate) fn with_method(&self, method: Method) -> ServerMatchRef<'_> {
        ServerMatchRef {
            branch: self.branch,
            host: self.host,
            port: self.port,
            method,
        }
    }
}

/// The fields of [`ServerMatch::Rfc2543`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Rfc2543Match {
    uri: Box<str>,
    to_tag: Option<Box<str>>,
    from_tag: Option<Box<str>>,
    call_id: Box<str>,
    cseq: u32,
    via: Box<str>,
    method: Method,
}

/// Top Via in a canonical form for RFC 2543 comparison: protocol and transport upper case, host
/// lower case, parameters with white space removed.
fn canonical_via(via: &Via<'_>) -> Box<str> {
    let mut s = String::with_capacity(via.host.len() + via.params.len() + 16);
    s.push_str(&via.transport.to_ascii_uppercase());
    s.push(' ');
    s.push_str(&via.host.to_ascii_lowercase());
    if let Some(p) = via.port {
        s.push(':');
        s.push_str(&p.to_string());
    }
    for p in crate::syntax::params(via.params) {
        s.push(';');
        s.push_str(&p.name.to_ascii_lowercase());
        if let Some(v) = p.value {
            s.push('=');
            s.push_str(v);
        }
    }
    s.into_boxed_str()
}

impl ServerMatch {
    /// The key of a received request. ACK gets the INVITE's method; for the RFC 2543 form its
    /// To tag is the request's own (see [`ServerMatch::for_ack`]).
    pub(crate) fn of_request(msg: &Message) -> Result<ServerMatch, TransactionError> {
        let method = msg.method().ok_or(TransactionError::NotARequest)?;
        let method = if *method == Method::Ack {
            Method::Invite
        } else {
            method.clone()
        };
        let via = msg.top_via()?;
        match msg.branch() {
            Some(branch) if is_rfc3261_branch(branch) && u32::try_from(branch.len()).is_ok() => {
                Ok(ServerMatchRef {
                    branch,
                    host: via.host,
                    port: via.port,
                    method,
                }
                .to_key())
            }
            _ => {
                let uri = msg.request_uri().ok_or(TransactionError::NotARequest)?;
                let cseq = msg.cseq()?;
                let call_id = msg.call_id().ok_or(HeaderError::Missing("Call-ID"))?;
                let from = msg.from_header()?;
                let to = msg.to_header()?;
                Ok(ServerMatch::Rfc2543(Box::new(Rfc2543Match {
                    uri: uri.into(),
                    to_tag: to.tag().map(Into::into),
                    from_tag: from.tag().map(Into::into),
                    call_id: call_id.into(),
                    cseq: cseq.seq,
                    via: canonical_via(&via),
                    method,
                })))
            }
        }
    }

    /// The branch form of a received request's key, borrowed; `None` when the request has no
    /// such key ([`ServerMatch::of_request`] then makes the RFC 2543 form, or fails).
    pub(crate) fn view(msg: &Message) -> Option<ServerMatchRef<'_>> {
        let method = match msg.method()? {
            Method::Ack => Method::Invite,
            m => m.clone(),
        };
        let via = msg.top_via().ok()?;
        let branch = msg
            .branch()
            .filter(|b| is_rfc3261_branch(b) && u32::try_from(b.len()).is_ok())?;
        Some(ServerMatchRef {
            branch,
            host: via.host,
            port: via.port,
            method,
        })
    }

    /// True when a request with this borrowed key matches.
    pub(crate) fn matches(&self, key: &ServerMatchRef<'_>) -> bool {
        match self {
            ServerMatch::Branch {
                branch_host,
                branch_len,
                port,
                method,
            } => {
                let Some((branch, host)) = branch_host.split_at_checked(*branch_len as usize)
                else {
                    return false;
                };
                branch == key.branch
                    && *port == key.port
                    && *method == key.method
                    // The host after the space, already in lower case.
                    && host.get(1..).is_some_and(|h| h.eq_ignore_ascii_case(key.host))
            }
            ServerMatch::Rfc2543(_) => false,
        }
    }

    /// True for the RFC 2543 form.
    pub(crate) fn is_rfc2543(&self) -> bool {
        matches!(self, ServerMatch::Rfc2543(_))
    }

    /// The same identity with another method (a CANCEL looking for its INVITE, RFC 3261 §9.2).
    pub(crate) fn with_method(&self, method: Method) -> ServerMatch {
        let mut k = self.clone();
        match &mut k {
            ServerMatch::Branch { method: m, .. } => *m = method,
            ServerMatch::Rfc2543(k) => k.method = method,
        }
        k
    }

    /// For an RFC 2543 ACK: the key of an INVITE that carried no To tag, so the ACK's tag must
    /// be checked against our final response's instead. `None` for the branch form and for an
    /// ACK without To tag.
    pub(crate) fn for_ack(&self) -> Option<ServerMatch> {
        match self {
            ServerMatch::Rfc2543(k) if k.to_tag.is_some() => {
                let mut k = k.clone();
                k.to_tag = None;
                Some(ServerMatch::Rfc2543(k))
            }
            _ => None,
        }
    }

    /// The To tag carried in the key (RFC 2543 form only).
    pub(crate) fn to_tag(&self) -> Option<&str> {
        match self {
            ServerMatch::Rfc2543(k) => k.to_tag.as_deref(),
            ServerMatch::Branch { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use bytes::Bytes;

    use super::*;

    fn msg(text: &str) -> Message {
        Message::parse(Bytes::from(text.replace('\n', "\r\n"))).unwrap()
    }

    const INVITE: &str = "INVITE sip:b@h SIP/2.0\nVia: SIP/2.0/UDP Client.Example:5070;branch=z9hG4bK-1\nFrom: <sip:a@h>;tag=f\nTo: <sip:b@h>\nCall-ID: c\nCSeq: 7 INVITE\nContent-Length: 0\n\n";

    #[test]
    fn borrowed_server_keys_match_and_hash_as_the_built_ones() {
        let hasher = foldhash::fast::RandomState::default();
        let invite = msg(INVITE);
        let key = ServerMatch::of_request(&invite).unwrap();
        let same = [
            INVITE.to_owned(),
            // The ACK of a non-2xx final, with the host in another case.
            INVITE
                .replace("INVITE sip", "ACK sip")
                .replace("7 INVITE", "7 ACK")
                .replace("Client.Example", "client.EXAMPLE"),
        ];
        for text in &same {
            let m = msg(text);
            let view = ServerMatch::view(&m).unwrap();
            assert!(key.matches(&view), "{text}");
            assert_eq!(hasher.hash_one(&key), hasher.hash_one(&view), "{text}");
            assert_eq!(ServerMatch::of_request(&m).unwrap(), key);
        }
        let other = [
            INVITE.replace("branch=z9hG4bK-1", "branch=z9hG4bK-2"),
            INVITE.replace("Client.Example:5070", "Client.Example:5071"),
            INVITE.replace("Client.Example:5070", "Client.Example"),
            INVITE.replace("Client.Example", "client.example.org"),
            INVITE
                .replace("INVITE sip", "BYE sip")
                .replace("7 INVITE", "7 BYE"),
        ];
        for text in &other {
            let m = msg(text);
            let view = ServerMatch::view(&m).unwrap();
            assert!(!key.matches(&view), "{text}");
            assert_ne!(ServerMatch::of_request(&m).unwrap(), key);
        }
        let cancel = msg(&INVITE
            .replace("INVITE sip", "CANCEL sip")
            .replace("7 INVITE", "7 CANCEL"));
        let view = ServerMatch::view(&cancel).unwrap();
        assert!(!key.matches(&view));
        let for_invite = view.with_method(Method::Invite);
        assert!(key.matches(&for_invite));
        assert_eq!(hasher.hash_one(&key), hasher.hash_one(&for_invite));
        // No RFC 3261 branch: no borrowed form, the RFC 2543 key instead.
        for branch in ["branch=z9hG4bK", "branch=1234"] {
            let m = msg(&INVITE.replace("branch=z9hG4bK-1", branch));
            assert!(ServerMatch::view(&m).is_none());
            assert!(ServerMatch::of_request(&m).unwrap().is_rfc2543());
        }
    }

    #[test]
    fn borrowed_client_keys_match_and_hash_as_the_built_ones() {
        let hasher = foldhash::fast::RandomState::default();
        let key = ClientMatch::of_request(&msg(INVITE)).unwrap();
        let ok = msg("SIP/2.0 180 Ringing\nVia: SIP/2.0/UDP Client.Example:5070;branch=z9hG4bK-1\nFrom: <sip:a@h>;tag=f\nTo: <sip:b@h>;tag=t\nCall-ID: c\nCSeq: 7 INVITE\nContent-Length: 0\n\n");
        let view = ClientMatch::of_response(&ok).unwrap();
        assert!(key.matches(&view));
        assert_eq!(hasher.hash_one(&key), hasher.hash_one(&view));
        for (from, to) in [("z9hG4bK-1", "z9hG4bK-2"), ("7 INVITE", "7 CANCEL")] {
            let text = std::str::from_utf8(ok.raw()).unwrap().replace(from, to);
            let m = Message::parse(Bytes::from(text)).unwrap();
            assert!(!key.matches(&ClientMatch::of_response(&m).unwrap()));
        }
    }
}
