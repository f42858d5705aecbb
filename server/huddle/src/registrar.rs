//! The registrar and location service (RFC 3261 §10, RFC 5626): bindings of addresses-of-record
//! to the places a user can be reached.
//!
//! This module is sans-IO: it takes parsed REGISTER requests, where they came from and an
//! `Instant`, and returns what to answer and what changed; the core persists the changes and
//! drives expiry from [`Location::poll_timeout`].
//!
//! How bindings are told apart matters for browsers: every SIPml5 client on earth registers the
//! same `sip:alice@df7jal23ls0d.invalid` Contact, so a binding that arrived over a connection is
//! keyed by (Contact, connection), and two tabs stay two bindings. RFC 5626 clients (JsSIP) are
//! keyed by `+sip.instance` and `reg-id`. Datagram bindings follow RFC 3261: keyed by Contact.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use huddle_sip::headers::NameAddr;
use huddle_sip::message::HeaderName;
use huddle_sip::{syntax, Message};
use serde::{Deserialize, Serialize};

use crate::config::RegistrarConfig;
use crate::transport::{FlowId, Transport};

/// How to reach a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Over the connection the REGISTER came in on (WS, WSS, TCP, TLS).
    Flow {
        flow: FlowId,
        transport: Transport,
        remote: SocketAddr,
    },
    /// To the address the REGISTER came from (UDP), or a persisted stream binding after restart.
    Address {
        transport: Transport,
        addr: SocketAddr,
    },
}

impl Reach {
    /// The flow, if connection-bound.
    pub fn flow(&self) -> Option<FlowId> {
        match self {
            Reach::Flow { flow, .. } => Some(*flow),
            Reach::Address { .. } => None,
        }
    }
}

/// One binding.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The Contact URI (without `<>`).
    pub contact: String,
    /// The whole Contact header element as registered, echoed in 200 responses.
    pub contact_header: String,
    pub reach: Reach,
    pub instance: Option<String>,
    pub reg_id: Option<u32>,
    pub call_id: String,
    pub cseq: u32,
    pub expires_at: Instant,
    /// Wall-clock expiry, for persistence.
    pub expires_unix: u64,
    /// Registration order, to replace the oldest binding when an AOR is full.
    pub serial: u64,
}

impl Binding {
    /// Seconds left at `now`.
    pub fn remaining(&self, now: Instant) -> u32 {
        self.expires_at
            .saturating_duration_since(now)
            .as_secs()
            .try_into()
            .unwrap_or(u32::MAX)
    }

    fn same_key(&self, other: &Binding) -> bool {
        match (&self.instance, self.reg_id, &other.instance, other.reg_id) {
            (Some(a), Some(ra), Some(b), Some(rb)) => a == b && ra == rb,
            (Some(_), Some(_), _, _) | (_, _, Some(_), Some(_)) => false,
            _ => {
                self.contact == other.contact
                    && match (self.reach.flow(), other.reach.flow()) {
                        (Some(a), Some(b)) => a == b,
                        (None, None) => true,
                        _ => false,
                    }
            }
        }
    }

    /// The stored form, under `location/<aor>/…`. Every binding is written, so plugins can see
    /// who is registered and over which connection; a restart restores UDP and TCP bindings and
    /// drops WebSocket ones (their connection is gone).
    pub fn record(&self, aor: &str) -> BindingRecord {
        let (transport, addr, flow) = match self.reach {
            Reach::Address { transport, addr } => (transport, addr, None),
            Reach::Flow {
                flow,
                transport,
                remote,
            } => (transport, remote, Some(flow.get())),
        };
        BindingRecord {
            aor: aor.to_owned(),
            key: self.store_key(aor),
            contact: self.contact.clone(),
            contact_header: self.contact_header.clone(),
            transport: transport.name().to_owned(),
            addr: addr.to_string(),
            flow,
            instance: self.instance.clone(),
            reg_id: self.reg_id,
            call_id: self.call_id.clone(),
            cseq: self.cseq,
            expires_unix: self.expires_unix,
        }
    }

    /// The store key of this binding under `location/`: RFC 5626 bindings by instance and
    /// reg-id, connection-bound ones by Contact and connection (two SIPml5 tabs share a
    /// Contact), the rest by Contact.
    pub fn store_key(&self, aor: &str) -> String {
        match (&self.instance, self.reg_id, self.reach) {
            (Some(i), Some(r), _) => format!("{aor}/{i}#{r}"),
            (_, _, Reach::Flow { flow, .. }) => {
                format!("{aor}/{}@flow{}", self.contact, flow.get())
            }
            _ => format!("{aor}/{}", self.contact),
        }
    }
}

/// A binding as stored under `location/<aor>/<binding>` (versioned by the store's record
/// encoding).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BindingRecord {
    pub aor: String,
    /// Its own key under `location/` (records written before this field existed have none).
    #[serde(default)]
    pub key: String,
    pub contact: String,
    pub contact_header: String,
    pub transport: String,
    pub addr: String,
    /// The connection it is bound to, for connection-bound bindings (as in the flow token).
    #[serde(default)]
    pub flow: Option<u64>,
    pub instance: Option<String>,
    pub reg_id: Option<u32>,
    pub call_id: String,
    pub cseq: u32,
    pub expires_unix: u64,
}

/// A change the core persists.
// Changes are short-lived (batched to the store writer and dropped); boxing the record would
// add an allocation per Put for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Change {
    Put { key: String, record: BindingRecord },
    Delete { key: String },
}

/// The answer to a REGISTER.
#[derive(Debug)]
pub enum RegisterOutcome {
    /// 200 OK listing every current binding as `Contact` values.
    Ok { contacts: Vec<String> },
    /// Any other answer.
    Reject {
        status: u16,
        reason: &'static str,
        min_expires: Option<u32>,
    },
}

/// The location service.
#[derive(Debug, Default)]
pub struct Location {
    bindings: HashMap<String, Vec<Binding>>,
    by_flow: HashMap<FlowId, Vec<String>>,
    expiries: BTreeMap<(Instant, u64), String>,
    serial: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Location {
    /// An empty location service.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every live binding of an AOR.
    pub fn lookup(&self, aor: &str, now: Instant) -> impl Iterator<Item = &Binding> {
        self.bindings
            .get(aor)
            .into_iter()
            .flatten()
            .filter(move |b| b.expires_at > now)
    }

    /// Number of AORs with bindings.
    pub fn aor_count(&self) -> usize {
        self.bindings.len()
    }

    /// Handles a REGISTER for `aor` that has passed authentication.
    pub fn register(
        &mut self,
        req: &Message,
        aor: &str,
        reach: Reach,
        now: Instant,
        cfg: &RegistrarConfig,
        changes: &mut Vec<Change>,
    ) -> RegisterOutcome {
        let reject = |status, reason| RegisterOutcome::Reject {
            status,
            reason,
            min_expires: None,
        };
        let Some(call_id) = req.call_id() else {
            return reject(400, "Bad Request - Missing Call-ID");
        };
        let Ok(cseq) = req.cseq() else {
            return reject(400, "Bad Request - Invalid CSeq");
        };
        let header_expires = match req.expires() {
            Some(Ok(e)) => Some(e),
            Some(Err(_)) => return reject(400, "Bad Request - Invalid Expires"),
            None => None,
        };
        let contacts: Vec<&str> = req.header_list(&HeaderName::Contact).collect();
        if contacts.contains(&"*") {
            if contacts.len() != 1 || header_expires != Some(0) {
                return reject(400, "Bad Request - Wildcard Contact Needs Expires 0");
            }
            for b in self.bindings.remove(aor).unwrap_or_default() {
                self.forget_index(aor, &b, changes);
            }
            return RegisterOutcome::Ok { contacts: vec![] };
        }
        let mut updates = Vec::with_capacity(contacts.len());
        for text in &contacts {
            let Ok(addr) = NameAddr::parse(text) else {
                return reject(400, "Bad Request - Malformed Contact");
            };
            let requested = match addr.param("expires") {
                Some(Some(v)) => match syntax::parse_u32(v) {
                    Some(n) => n,
                    None => return reject(400, "Bad Request - Invalid Contact expires"),
                },
                Some(None) => return reject(400, "Bad Request - Invalid Contact expires"),
                None => header_expires.unwrap_or(cfg.default_expires),
            };
            if requested != 0 && requested < cfg.min_expires {
                return RegisterOutcome::Reject {
                    status: 423,
                    reason: "Interval Too Brief",
                    min_expires: Some(cfg.min_expires),
                };
            }
            let expires = requested.min(cfg.max_expires);
            let instance = addr
                .param("+sip.instance")
                .flatten()
                .map(|v| syntax::unquote(v).into_owned());
            let reg_id = addr.param("reg-id").flatten().and_then(syntax::parse_u32);
            // Keep the header element without its expires parameter; the 200 adds the
            // remaining time.
            let mut contact_header = String::with_capacity(text.len());
            if addr.bracketed {
                if let Some(d) = addr.display {
                    contact_header.push_str(d);
                }
                contact_header.push('<');
                contact_header.push_str(addr.uri);
                contact_header.push('>');
            } else {
                contact_header.push('<');
                contact_header.push_str(addr.uri);
                contact_header.push('>');
            }
            for p in syntax::params(addr.params) {
                if p.name.eq_ignore_ascii_case("expires") {
                    continue;
                }
                contact_header.push(';');
                contact_header.push_str(p.name);
                if let Some(v) = p.value {
                    contact_header.push('=');
                    contact_header.push_str(v);
                }
            }
            self.serial += 1;
            updates.push((
                expires,
                Binding {
                    contact: addr.uri.to_owned(),
                    contact_header,
                    reach,
                    instance,
                    reg_id,
                    call_id: call_id.to_owned(),
                    cseq: cseq.seq,
                    expires_at: now + Duration::from_secs(u64::from(expires)),
                    expires_unix: unix_now() + u64::from(expires),
                    serial: self.serial,
                },
            ));
        }
        for (expires, binding) in updates {
            let list = self.bindings.entry(aor.to_owned()).or_default();
            if let Some(pos) = list.iter().position(|b| b.same_key(&binding)) {
                let old = &list[pos];
                // RFC 3261 §10.3 step 7: an out-of-order refresh within one Call-ID.
                if old.call_id == binding.call_id && binding.cseq <= old.cseq {
                    continue;
                }
                let old = list.remove(pos);
                self.forget_index(aor, &old, changes);
            }
            if expires == 0 {
                continue;
            }
            let list = self.bindings.entry(aor.to_owned()).or_default();
            if list.len() >= cfg.max_bindings_per_aor {
                if let Some((oldest, _)) = list.iter().enumerate().min_by_key(|(_, b)| b.serial) {
                    let old = list.remove(oldest);
                    self.forget_index(aor, &old, changes);
                }
            }
            self.insert(aor, binding, changes);
        }
        let contacts = self
            .lookup(aor, now)
            .map(|b| format!("{};expires={}", b.contact_header, b.remaining(now)))
            .collect();
        if self.bindings.get(aor).is_some_and(Vec::is_empty) {
            self.bindings.remove(aor);
        }
        RegisterOutcome::Ok { contacts }
    }

    fn insert(&mut self, aor: &str, binding: Binding, changes: &mut Vec<Change>) {
        if let Some(flow) = binding.reach.flow() {
            self.by_flow.entry(flow).or_default().push(aor.to_owned());
        }
        self.expiries
            .insert((binding.expires_at, binding.serial), aor.to_owned());
        let record = binding.record(aor);
        // A refresh replaces the binding under the same key: its Delete, just queued by
        // `forget_index`, would only be overwritten by this Put.
        if matches!(changes.last(), Some(Change::Delete { key }) if *key == record.key) {
            changes.pop();
        }
        changes.push(Change::Put {
            key: record.key.clone(),
            record,
        });
        self.bindings
            .entry(aor.to_owned())
            .or_default()
            .push(binding);
    }

    /// Drops the indexes of a binding already removed from its AOR's list.
    fn forget_index(&mut self, aor: &str, b: &Binding, changes: &mut Vec<Change>) {
        self.expiries.remove(&(b.expires_at, b.serial));
        if let Some(flow) = b.reach.flow() {
            if let Some(aors) = self.by_flow.get_mut(&flow) {
                if let Some(i) = aors.iter().position(|a| a == aor) {
                    aors.swap_remove(i);
                }
                if aors.is_empty() {
                    self.by_flow.remove(&flow);
                }
            }
        }
        changes.push(Change::Delete {
            key: b.store_key(aor),
        });
    }

    /// Removes every binding that lives on a connection that closed. Returns the AORs touched.
    pub fn remove_flow(&mut self, flow: FlowId, changes: &mut Vec<Change>) -> Vec<String> {
        let aors = self.by_flow.remove(&flow).unwrap_or_default();
        for aor in &aors {
            if let Some(list) = self.bindings.get_mut(aor) {
                let (gone, kept): (Vec<_>, Vec<_>) =
                    list.drain(..).partition(|b| b.reach.flow() == Some(flow));
                *list = kept;
                if list.is_empty() {
                    self.bindings.remove(aor);
                }
                for b in gone {
                    self.expiries.remove(&(b.expires_at, b.serial));
                    changes.push(Change::Delete {
                        key: b.store_key(aor),
                    });
                }
            }
        }
        aors
    }

    /// The next expiry deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiries.keys().next().map(|(t, _)| *t)
    }

    /// Bindings an AOR has (expired ones not yet removed by [`Location::expire`] included).
    pub fn binding_count(&self, aor: &str) -> usize {
        self.bindings.get(aor).map_or(0, Vec::len)
    }

    /// The `location/` keys of an AOR's bindings (as [`Location::binding_count`] counts them),
    /// sorted.
    pub fn binding_keys(&self, aor: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .bindings
            .get(aor)
            .into_iter()
            .flatten()
            .map(|b| b.store_key(aor))
            .collect();
        keys.sort_unstable();
        keys
    }

    /// Removes bindings that expired by `now`. Returns the AORs that lost bindings (once
    /// each).
    pub fn expire(&mut self, now: Instant, changes: &mut Vec<Change>) -> Vec<String> {
        let mut touched: Vec<String> = Vec::new();
        while let Some(entry) = self.expiries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((_, serial), aor) = entry.remove_entry();
            if let Some(list) = self.bindings.get_mut(&aor) {
                if let Some(pos) = list.iter().position(|b| b.serial == serial) {
                    let b = list.remove(pos);
                    if list.is_empty() {
                        self.bindings.remove(&aor);
                    }
                    self.forget_index(&aor, &b, changes);
                    if !touched.contains(&aor) {
                        touched.push(aor);
                    }
                }
            }
        }
        touched
    }

    /// Restores a persisted binding at start-up; expired records are reported for deletion.
    pub fn restore(&mut self, record: BindingRecord, now: Instant, changes: &mut Vec<Change>) {
        let left = record.expires_unix.saturating_sub(unix_now());
        let transport = Transport::from_token(&record.transport);
        let addr = record.addr.parse::<SocketAddr>().ok();
        let old_key = if record.key.is_empty() {
            match (&record.instance, record.reg_id) {
                (Some(i), Some(r)) => format!("{}/{i}#{r}", record.aor),
                _ => format!("{}/{}", record.aor, record.contact),
            }
        } else {
            record.key.clone()
        };
        let usable = transport.filter(|t| !t.is_websocket());
        let (Some(transport), Some(addr), true) = (usable, addr, left > 0) else {
            changes.push(Change::Delete { key: old_key });
            return;
        };
        self.serial += 1;
        let binding = Binding {
            contact: record.contact,
            contact_header: record.contact_header,
            reach: Reach::Address { transport, addr },
            instance: record.instance,
            reg_id: record.reg_id,
            call_id: record.call_id,
            cseq: record.cseq,
            expires_at: now + Duration::from_secs(left),
            expires_unix: record.expires_unix,
            serial: self.serial,
        };
        // A TCP binding comes back reachable by address, under that key.
        if binding.store_key(&record.aor) != old_key {
            changes.push(Change::Delete { key: old_key });
            self.insert(&record.aor, binding, changes);
        } else {
            let mut unchanged = Vec::new();
            self.insert(&record.aor, binding, &mut unchanged);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn register(call_id: &str, cseq: u32, contact: &str, expires: Option<u32>) -> Message {
        let expires = expires
            .map(|e| format!("Expires: {e}\r\n"))
            .unwrap_or_default();
        let text = format!(
            "REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK{call_id}{cseq};rport\r\n\
             From: <sip:alice@example.test>;tag=1\r\nTo: <sip:alice@example.test>\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\nContact: {contact}\r\n{expires}Content-Length: 0\r\n\r\n"
        );
        Message::parse(Bytes::from(text)).unwrap()
    }

    fn ws(flow: u64) -> Reach {
        Reach::Flow {
            flow: FlowId::from_raw(flow),
            transport: Transport::Ws,
            remote: "127.0.0.1:40000".parse().unwrap(),
        }
    }

    const SIPML5: &str = "\"alice\"<sip:alice@df7jal23ls0d.invalid;rtcweb-breaker=no;transport=ws>;expires=300;click2call=no";

    #[test]
    fn two_sipml5_tabs_stay_two_bindings_and_close_removes_one() {
        let cfg = RegistrarConfig::default();
        let mut loc = Location::new();
        let now = Instant::now();
        let mut changes = Vec::new();
        let aor = "alice@example.test";
        loc.register(
            &register("tab1", 1, SIPML5, None),
            aor,
            ws(1),
            now,
            &cfg,
            &mut changes,
        );
        loc.register(
            &register("tab2", 1, SIPML5, None),
            aor,
            ws(2),
            now,
            &cfg,
            &mut changes,
        );
        assert_eq!(loc.lookup(aor, now).count(), 2);
        // A refresh on tab 1 replaces its own binding only.
        loc.register(
            &register("tab1", 2, SIPML5, None),
            aor,
            ws(1),
            now,
            &cfg,
            &mut changes,
        );
        assert_eq!(loc.lookup(aor, now).count(), 2);
        loc.remove_flow(FlowId::from_raw(1), &mut changes);
        let left: Vec<_> = loc.lookup(aor, now).map(|b| b.call_id.clone()).collect();
        assert_eq!(left, vec!["tab2"]);
        // Every binding is in the store, each tab under its own key (Contact + connection).
        let puts: std::collections::HashSet<String> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Put { key, .. } => Some(key.clone()),
                Change::Delete { .. } => None,
            })
            .collect();
        assert_eq!(puts.len(), 2);
    }

    #[test]
    fn expiry_min_expires_wildcard_and_outbound_keys() {
        let cfg = RegistrarConfig::default();
        let mut loc = Location::new();
        let now = Instant::now();
        let mut changes = Vec::new();
        let aor = "alice@example.test";
        let out = loc.register(
            &register("c", 1, "<sip:a@h>", Some(10)),
            aor,
            ws(1),
            now,
            &cfg,
            &mut changes,
        );
        assert!(matches!(
            out,
            RegisterOutcome::Reject {
                status: 423,
                min_expires: Some(60),
                ..
            }
        ));
        let udp = Reach::Address {
            transport: Transport::Udp,
            addr: "127.0.0.1:5070".parse().unwrap(),
        };
        loc.register(
            &register("c", 2, "<sip:a@127.0.0.1:5070>", Some(120)),
            aor,
            udp,
            now,
            &cfg,
            &mut changes,
        );
        assert!(matches!(changes.as_slice(), [Change::Put { .. }]));
        let jssip =
            "<sip:x@y.invalid;transport=ws>;+sip.instance=\"<urn:uuid:1>\";reg-id=1;expires=600";
        loc.register(
            &register("j", 1, jssip, None),
            aor,
            ws(3),
            now,
            &cfg,
            &mut changes,
        );
        loc.register(
            &register("j2", 1, jssip, None),
            aor,
            ws(4),
            now,
            &cfg,
            &mut changes,
        );
        assert_eq!(
            loc.lookup(aor, now).count(),
            2,
            "same instance+reg-id replaces"
        );
        assert_eq!(loc.poll_timeout(), Some(now + Duration::from_secs(120)));
        loc.expire(now + Duration::from_secs(121), &mut changes);
        assert_eq!(loc.lookup(aor, now).count(), 1);
        let out = loc.register(
            &register("j2", 2, "*", Some(0)),
            aor,
            ws(4),
            now,
            &cfg,
            &mut changes,
        );
        assert!(matches!(out, RegisterOutcome::Ok { ref contacts } if contacts.is_empty()));
        assert_eq!(loc.lookup(aor, now).count(), 0);
    }
}
