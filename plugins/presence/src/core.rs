//! The presence agent as a state machine without I/O: publications (RFC 3903), subscriptions
//! to `presence` and `presence.winfo` (RFC 6665, 3856, 3857), presence derived from
//! registrations, and the authorization policy.
//!
//! # Run loop
//!
//! Every input carries the time ([`Now`]: a monotonic instant for deadlines, wall-clock
//! milliseconds for what is stored); the core never reads a clock and never calls the host.
//! A request returns its [`Reply`] (status, reason, headers) at once; everything else it
//! caused — NOTIFYs, store writes, the composed document other plugins read — is queued as
//! [`Output`] and drained with [`Core::poll_output`]. [`Core::poll_timeout`] names the next
//! deadline (a publication or subscription expiring); call [`Core::handle_timeout`] then.
//!
//! # Invariants
//!
//! * Every state is bounded by [`Limits`]: publications per presentity, subscriptions per
//!   watcher, watchers per presentity, body size, expiry range.
//! * A watcher sees a presentity's composed document only if the policy allows it; anybody
//!   else — a denied watcher, a watcher of a user that does not exist — gets the document of an
//!   offline user, so a refusal never reveals more than "closed".
//! * What a watcher is sent is a function of state, so restoring the stored records after a
//!   restart and calling [`Core::resume`] brings every watcher up to date with one NOTIFY.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use huddle_sdk::sip::headers::NameAddr;
use huddle_sdk::sip::uri::SipUri;
use huddle_sdk::{Bytes, HeaderName, Message};

use crate::notify::NotifyTemplate;
use crate::pidf::{self, Parsed, PIDF_TYPE, WINFO_TYPE};

/// The current time, as every input carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// For deadlines.
    pub mono: Instant,
    /// Milliseconds since the Unix epoch, for stored expiry times (they must survive a
    /// restart, where `Instant`s mean nothing).
    pub unix_ms: u64,
}

impl Now {
    /// `by` later.
    pub fn after(self, by: Duration) -> Now {
        Now {
            mono: self.mono + by,
            unix_ms: self.unix_ms + u64::try_from(by.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// Bounds and timers, from the plugin's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Smallest non-zero Expires accepted (423 below it).
    pub min_expires: u32,
    /// Largest Expires granted (larger requests are shortened).
    pub max_expires: u32,
    /// Expires when a request has none.
    pub default_expires: u32,
    /// Publications one presentity may have (one per device, typically).
    pub max_publications_per_user: usize,
    /// Subscriptions one watcher may hold.
    pub max_subscriptions_per_user: usize,
    /// Watchers one presentity may have.
    pub max_watchers_per_user: usize,
    /// Largest PIDF body accepted (413 above it).
    pub max_body: usize,
    /// Largest composed document: the least relevant publications are left out beyond it.
    pub max_document: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_publications_per_user: 16,
            max_subscriptions_per_user: 256,
            max_watchers_per_user: 10_000,
            max_body: 16 * 1024,
            max_document: 48 * 1024,
        }
    }
}

/// Who may see whose presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Every authenticated user of the domain may watch every other one.
    Domain,
    /// Per presentity allow/deny lists ([`Lists`]); without an allow entry, nobody but the
    /// presentity itself.
    Lists,
}

/// One presentity's lists (stored under `policy/<aor>`). Deny wins over allow. Entries are
/// AORs (`alice@example.test`) or `*@example.test` for a whole domain.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    huddle_sdk::serde::Serialize,
    huddle_sdk::serde::Deserialize,
)]
#[serde(crate = "huddle_sdk::serde", default, deny_unknown_fields)]
pub struct Lists {
    /// Watchers who may see the presentity.
    pub allow: Vec<String>,
    /// Watchers who may not.
    pub deny: Vec<String>,
}

impl Lists {
    fn matches(list: &[String], watcher: &str) -> bool {
        let domain = watcher.rsplit_once('@').map(|(_, d)| d);
        list.iter()
            .any(|e| e == watcher || e.strip_prefix("*@").is_some_and(|d| Some(d) == domain))
    }
}

/// Everything the core is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Bounds and timers.
    pub limits: Limits,
    /// Authorization policy.
    pub policy: Policy,
    /// The domain presentities belong to: every local Request-URI (`sip:bob@127.0.0.1`,
    /// `sip:bob@example.test`) names `bob@<domain>`. `None`: the Request-URI's host.
    pub domain: Option<String>,
    /// Whether watchers the server did not authenticate (users of other domains) may
    /// subscribe; they are refused with 403 otherwise.
    pub allow_unauthenticated_watchers: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            limits: Limits::default(),
            policy: Policy::Domain,
            domain: None,
            allow_unauthenticated_watchers: false,
        }
    }
}

/// A request as the core sees it.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The parsed request.
    pub msg: &'a Message,
    /// The user the host authenticated (`None`: not a local user, or not challenged).
    pub auth_user: Option<&'a str>,
    /// Whether it came over a connection (WebSocket, TCP, TLS): such a publication or
    /// subscription cannot outlive its user's registrations (the connection carries both).
    pub over_connection: bool,
    /// The To tag of our response (and of the dialog a SUBSCRIBE creates).
    pub local_tag: &'a str,
}

/// The response to a request, for the glue to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Reason phrase, saying what was wrong for errors.
    pub reason: String,
    /// Extra headers (SIP-ETag, Expires, Min-Expires, Contact, Allow-Events, Accept).
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn new(status: u16, reason: impl Into<String>) -> Reply {
        Reply {
            status,
            reason: reason.into(),
            headers: Vec::new(),
        }
    }

    fn with(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    /// The value of an extra header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The event packages this agent serves.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    huddle_sdk::serde::Serialize,
    huddle_sdk::serde::Deserialize,
)]
#[serde(crate = "huddle_sdk::serde")]
pub enum Package {
    /// `presence` (RFC 3856).
    Presence,
    /// `presence.winfo` (RFC 3857).
    Winfo,
}

impl Package {
    fn parse(event: &str) -> Option<Package> {
        let name = event.split(';').next().unwrap_or(event).trim();
        if name.eq_ignore_ascii_case("presence") {
            Some(Package::Presence)
        } else if name.eq_ignore_ascii_case("presence.winfo") {
            Some(Package::Winfo)
        } else {
            None
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Package::Presence => PIDF_TYPE,
            Package::Winfo => WINFO_TYPE,
        }
    }
}

/// How far a restored subscription's CSeq jumps ahead of the stored one: more NOTIFYs than
/// any dialog gets between two refreshes.
const CSEQ_RESTART_GAP: u32 = 1 << 20;

/// Allow-Events for 489 answers.
const ALLOW_EVENTS: &str = "presence, presence.winfo";

/// A stored publication (key `pub/<aor>/<id>`).
#[derive(
    Debug, Clone, PartialEq, Eq, huddle_sdk::serde::Serialize, huddle_sdk::serde::Deserialize,
)]
#[serde(crate = "huddle_sdk::serde")]
pub struct PublicationRecord {
    /// The presentity, `user@domain`.
    pub aor: String,
    /// Stable id (the store key): refreshes and modifications overwrite one record.
    pub id: u64,
    /// The current entity tag.
    pub etag: String,
    /// The PIDF body.
    pub body: String,
    /// When it expires, Unix milliseconds.
    pub expires_at_ms: u64,
    /// Whether it came over a connection (see [`Incoming::over_connection`]).
    pub over_connection: bool,
    /// Order of publication, for "newest first".
    pub seq: u64,
}

/// A stored subscription (key `sub/<id>`): the dialog and what it watches.
#[derive(
    Debug, Clone, PartialEq, Eq, huddle_sdk::serde::Serialize, huddle_sdk::serde::Deserialize,
)]
#[serde(crate = "huddle_sdk::serde")]
pub struct SubscriptionRecord {
    /// Our id.
    pub id: u64,
    /// The package.
    pub package: Package,
    /// The presentity watched, `user@domain`.
    pub presentity: String,
    /// The watcher, `user@domain`.
    pub watcher: String,
    /// The Event header as the subscriber wrote it (with its `id` parameter).
    pub event: String,
    /// Dialog: Call-ID.
    pub call_id: String,
    /// Dialog: our tag.
    pub local_tag: String,
    /// Dialog: the subscriber's From header, tag included (our NOTIFY's To).
    pub remote: String,
    /// Dialog: the presentity URI as the subscriber wrote it (our NOTIFY's From).
    pub local_uri: String,
    /// Dialog: the subscriber's Contact URI (the NOTIFY's Request-URI).
    pub target: String,
    /// Dialog: the route set (the Record-Route values, in order).
    pub route: Vec<String>,
    /// Our Contact.
    pub contact: String,
    /// Our next CSeq.
    pub local_cseq: u32,
    /// The subscriber's last CSeq.
    pub remote_cseq: u32,
    /// When it expires, Unix milliseconds.
    pub expires_at_ms: u64,
    /// When it started, Unix milliseconds.
    pub started_ms: u64,
    /// Whether it came over a connection.
    pub over_connection: bool,
    /// Whether the presentity lets this watcher see it (decided at subscription time and on
    /// every policy change).
    pub allowed: bool,
}

/// A NOTIFY to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// The subscription it belongs to.
    pub subscription: u64,
    /// The Subscription-State value.
    pub state: String,
    /// The request, complete but for Via.
    pub bytes: Bytes,
    /// Where the body starts in `bytes`.
    body_at: usize,
}

impl Notify {
    /// The body.
    pub fn body(&self) -> &str {
        // Written from a `&str` at `body_at` (see `NotifyTemplate::request`).
        std::str::from_utf8(&self.bytes[self.body_at..]).unwrap_or_default()
    }

    /// Whether it ends the subscription.
    pub fn is_terminal(&self) -> bool {
        self.state.starts_with("terminated")
    }
}

/// What the core asks of the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a NOTIFY; report its final status with [`Core::notify_failed`] if it fails.
    Notify(Notify),
    /// Store a publication.
    SavePublication(PublicationRecord),
    /// Delete a publication.
    DeletePublication {
        /// Presentity.
        aor: String,
        /// Its id.
        id: u64,
    },
    /// Store a subscription.
    SaveSubscription(SubscriptionRecord),
    /// Delete a subscription.
    DeleteSubscription(u64),
    /// A presentity's composed document changed (`None`: nothing known any more). Other
    /// plugins read it from the store.
    Composed {
        /// Presentity.
        aor: String,
        /// The document.
        document: Option<String>,
    },
}

#[derive(Debug)]
struct Publication {
    id: u64,
    etag: String,
    body: String,
    parsed: Parsed,
    expires: Instant,
    over_connection: bool,
    seq: u64,
}

#[derive(Debug, Default)]
struct Presentity {
    pubs: Vec<Publication>,
    watchers: HashSet<u64>,
    winfo_version: u64,
}

#[derive(Debug)]
struct Subscription {
    rec: SubscriptionRecord,
    expires: Instant,
    /// The fixed part of its NOTIFYs (the dialog does not change).
    template: NotifyTemplate,
}

/// The presence agent.
#[derive(Debug)]
pub struct Core {
    settings: Settings,
    presentities: HashMap<String, Presentity>,
    subs: HashMap<u64, Subscription>,
    /// (Call-ID, our tag) → subscription.
    dialogs: HashMap<(String, String), u64>,
    /// watcher → number of subscriptions it holds.
    per_watcher: HashMap<String, usize>,
    /// Registered AORs and their binding counts.
    registered: HashMap<String, u32>,
    lists: HashMap<String, Lists>,
    /// The composed document last announced per presentity.
    composed: HashMap<String, String>,
    /// Deadlines → what expires then.
    deadlines: BTreeMap<(Instant, u64), Expiry>,
    /// Subscriptions whose latest NOTIFY could not be handed to the host (it was busy):
    /// [`Core::resend`] sends them their state as it is then.
    unsent: std::collections::BTreeSet<u64>,
    next_id: u64,
    next_seq: u64,
    next_etag: u64,
    etag_salt: String,
    out: VecDeque<Output>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expiry {
    Publication { aor: String, etag: String },
    Subscription(u64),
}

fn reason_bad(what: &str) -> String {
    format!("Bad Request - {what}")
}

fn expires_header(msg: &Message) -> Result<Option<u32>, Reply> {
    match msg.header(&HeaderName::Expires) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(|n| Some(u32::try_from(n).unwrap_or(u32::MAX)))
            .map_err(|_| Reply::new(400, reason_bad("Invalid Expires"))),
    }
}

/// Deadline keys: publications and subscriptions share one ordered map.
fn pub_key(seq: u64) -> u64 {
    seq << 1
}

fn sub_key(id: u64) -> u64 {
    (id << 1) | 1
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Core {
    /// A core with no state. `etag_salt` makes entity tags unique across restarts (give it a
    /// few random characters).
    pub fn new(settings: Settings, etag_salt: &str) -> Core {
        Core {
            settings,
            presentities: HashMap::new(),
            subs: HashMap::new(),
            dialogs: HashMap::new(),
            per_watcher: HashMap::new(),
            registered: HashMap::new(),
            lists: HashMap::new(),
            composed: HashMap::new(),
            deadlines: BTreeMap::new(),
            unsent: std::collections::BTreeSet::new(),
            next_id: 1,
            next_seq: 1,
            next_etag: 1,
            etag_salt: etag_salt.to_owned(),
            out: VecDeque::new(),
        }
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.keys().next().map(|(t, _)| *t)
    }

    /// The composed document of a presentity as watchers who may see it get it.
    pub fn document(&self, aor: &str) -> String {
        self.compose(aor)
    }

    /// How many subscriptions exist (all packages).
    pub fn subscription_count(&self) -> usize {
        self.subs.len()
    }

    /// How many publications a presentity has.
    pub fn publication_count(&self, aor: &str) -> usize {
        self.presentities.get(aor).map_or(0, |p| p.pubs.len())
    }

    /// The `user@domain` a URI names (the configured domain replacing any local host).
    pub fn aor_of(&self, uri: &str) -> Option<String> {
        let u = SipUri::parse(uri).ok()?;
        let user = u.user_unescaped()?;
        let host = match &self.settings.domain {
            Some(d) => d.to_ascii_lowercase(),
            None => u.host.to_ascii_lowercase(),
        };
        Some(format!("{user}@{host}"))
    }

    /// The `user@host` of a watcher's From URI (hosts are not rewritten: a watcher may be
    /// foreign).
    fn watcher_of(&self, uri: &str, auth_user: Option<&str>) -> Option<String> {
        if let (Some(user), Some(domain)) = (auth_user, &self.settings.domain) {
            return Some(format!("{user}@{}", domain.to_ascii_lowercase()));
        }
        SipUri::parse(uri).ok().map(|u| u.aor())
    }

    // ---------------------------------------------------------------- publications

    /// A PUBLISH (RFC 3903 §6).
    pub fn publish(&mut self, now: Now, req: Incoming<'_>) -> Reply {
        let msg = req.msg;
        match msg.header(&HeaderName::Event).and_then(Package::parse) {
            Some(Package::Presence) => {}
            Some(Package::Winfo) | None => {
                let reason = if msg.header(&HeaderName::Event).is_none() {
                    // SIPml5 sends none unless the application adds `Event: presence`.
                    "Bad Event - Missing Event Header"
                } else {
                    "Bad Event"
                };
                return Reply::new(489, reason).with("Allow-Events", "presence");
            }
        }
        let Some(aor) = msg.request_uri().and_then(|u| self.aor_of(u)) else {
            return Reply::new(404, "Not Found - No User In Request-URI");
        };
        let owner = aor.split('@').next().unwrap_or("");
        if req.auth_user != Some(owner) {
            return Reply::new(403, "Forbidden - Only The Presentity May Publish");
        }
        let expires = match expires_header(msg) {
            Ok(e) => e,
            Err(r) => return r,
        };
        let if_match = msg.header(&HeaderName::SipIfMatch).map(str::trim);
        let body = msg.body();
        if body.len() > self.settings.limits.max_body {
            return Reply::new(413, "Request Entity Too Large - PIDF Body Over Limit");
        }
        let parsed = if body.is_empty() {
            None
        } else {
            match msg.content_type().map(str::to_ascii_lowercase) {
                Some(t) if t == PIDF_TYPE => {}
                _ => {
                    return Reply::new(415, "Unsupported Media Type - Only PIDF")
                        .with("Accept", PIDF_TYPE)
                }
            }
            match pidf::parse(body) {
                Ok(p) => Some((p, String::from_utf8_lossy(body).into_owned())),
                Err(e) => return Reply::new(400, e.reason()),
            }
        };

        let Some(etag) = if_match else {
            // Initial publication: a body is required, Expires 0 makes no sense.
            let Some((parsed, body)) = parsed else {
                return Reply::new(400, reason_bad("Initial PUBLISH Without Body"));
            };
            if expires == Some(0) {
                return Reply::new(400, reason_bad("Expires 0 Without SIP-If-Match"));
            }
            let expires = match self.grant(expires) {
                Ok(e) => e,
                Err(r) => return r,
            };
            let count = self.publication_count(&aor);
            if count >= self.settings.limits.max_publications_per_user {
                return Reply::new(403, "Forbidden - Too Many Publications");
            }
            let etag = self.new_etag();
            let seq = self.seq();
            let publication = Publication {
                id: seq,
                etag: etag.clone(),
                body,
                parsed,
                expires: now.mono + Duration::from_secs(expires.into()),
                over_connection: req.over_connection,
                seq,
            };
            self.insert_publication(now, &aor, publication);
            self.changed(now, &aor);
            return Reply::new(200, "OK")
                .with("SIP-ETag", etag)
                .with("Expires", expires.to_string());
        };

        // Refresh, modify or remove an existing publication.
        let Some(index) = self
            .presentities
            .get(&aor)
            .and_then(|p| p.pubs.iter().position(|x| x.etag == etag))
        else {
            return Reply::new(412, "Conditional Request Failed");
        };
        if expires == Some(0) {
            self.remove_publication(&aor, index);
            self.changed(now, &aor);
            return Reply::new(200, "OK").with("Expires", "0");
        }
        let expires = match self.grant(expires) {
            Ok(e) => e,
            Err(r) => return r,
        };
        let new_etag = self.new_etag();
        let seq = self.seq();
        let Some(p) = self.presentities.get_mut(&aor) else {
            return Reply::new(412, "Conditional Request Failed");
        };
        let mut publication = p.pubs.remove(index);
        let old_deadline = (publication.expires, pub_key(publication.id));
        self.deadlines.remove(&old_deadline);
        let modified = parsed.is_some();
        if let Some((parsed, body)) = parsed {
            publication.parsed = parsed;
            publication.body = body;
            publication.seq = seq;
        }
        publication.etag.clone_from(&new_etag);
        publication.expires = now.mono + Duration::from_secs(expires.into());
        publication.over_connection = req.over_connection;
        self.insert_publication(now, &aor, publication);
        if modified {
            self.changed(now, &aor);
        }
        Reply::new(200, "OK")
            .with("SIP-ETag", new_etag)
            .with("Expires", expires.to_string())
    }

    fn grant(&self, requested: Option<u32>) -> Result<u32, Reply> {
        let l = &self.settings.limits;
        let e = requested.unwrap_or(l.default_expires);
        if e < l.min_expires {
            return Err(Reply::new(423, "Interval Too Brief")
                .with("Min-Expires", l.min_expires.to_string()));
        }
        Ok(e.min(l.max_expires))
    }

    fn new_etag(&mut self) -> String {
        self.next_etag += 1;
        format!("{}{:x}", self.etag_salt, self.next_etag)
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn insert_publication(&mut self, now: Now, aor: &str, p: Publication) {
        self.deadlines.insert(
            (p.expires, pub_key(p.id)),
            Expiry::Publication {
                aor: aor.to_owned(),
                etag: p.etag.clone(),
            },
        );
        self.out
            .push_back(Output::SavePublication(PublicationRecord {
                aor: aor.to_owned(),
                id: p.id,
                etag: p.etag.clone(),
                body: p.body.clone(),
                expires_at_ms: now.unix_ms + ms(p.expires.saturating_duration_since(now.mono)),
                over_connection: p.over_connection,
                seq: p.seq,
            }));
        self.presentities
            .entry(aor.to_owned())
            .or_default()
            .pubs
            .push(p);
    }

    fn remove_publication(&mut self, aor: &str, index: usize) {
        let Some(p) = self.presentities.get_mut(aor) else {
            return;
        };
        if index >= p.pubs.len() {
            return;
        }
        let publication = p.pubs.remove(index);
        self.deadlines
            .remove(&(publication.expires, pub_key(publication.id)));
        self.out.push_back(Output::DeletePublication {
            aor: aor.to_owned(),
            id: publication.id,
        });
        self.forget_if_empty(aor);
    }

    fn forget_if_empty(&mut self, aor: &str) {
        if self
            .presentities
            .get(aor)
            .is_some_and(|p| p.pubs.is_empty() && p.watchers.is_empty())
        {
            self.presentities.remove(aor);
        }
    }

    /// The document watchers allowed to see `aor` get.
    fn compose(&self, aor: &str) -> String {
        let entity = format!("sip:{aor}");
        let pubs = self
            .presentities
            .get(aor)
            .map(|p| &p.pubs[..])
            .unwrap_or(&[]);
        if pubs.is_empty() {
            return pidf::basic(&entity, self.registered.contains_key(aor));
        }
        let mut order: Vec<&Publication> = pubs.iter().collect();
        // Open devices first, newest first: simple clients read only the first tuple.
        order.sort_by(|a, b| b.parsed.open.cmp(&a.parsed.open).then(b.seq.cmp(&a.seq)));
        // Bounded: the most relevant publications that fit in `max_document` bytes (a NOTIFY
        // must fit in one message; a user with many busy devices must not make it fail).
        let mut budget = self.settings.limits.max_document;
        let fitting = order.iter().enumerate().take_while(|(i, p)| {
            let size = p.parsed.len_hint();
            // The first one always goes in: it is itself within max_body.
            let fits = *i == 0 || size <= budget;
            budget = budget.saturating_sub(size);
            fits
        });
        pidf::compose(&entity, fitting.map(|(_, p)| &p.parsed))
    }

    /// Something about `aor`'s presence may have changed: announce the composed document
    /// and notify its watchers if it did.
    fn changed(&mut self, now: Now, aor: &str) {
        let doc = self.compose(aor);
        let known = self.registered.contains_key(aor) || self.publication_count(aor) > 0;
        if known {
            if self.composed.get(aor) == Some(&doc) {
                return;
            }
            self.composed.insert(aor.to_owned(), doc.clone());
            self.out.push_back(Output::Composed {
                aor: aor.to_owned(),
                document: Some(doc),
            });
        } else if self.composed.remove(aor).is_some() {
            self.out.push_back(Output::Composed {
                aor: aor.to_owned(),
                document: None,
            });
        } else {
            return;
        }
        let watchers: Vec<u64> = self
            .presentities
            .get(aor)
            .map(|p| p.watchers.iter().copied().collect())
            .unwrap_or_default();
        let mut ids: Vec<u64> = watchers
            .into_iter()
            .filter(|id| {
                self.subs
                    .get(id)
                    .is_some_and(|s| s.rec.package == Package::Presence && s.rec.allowed)
            })
            .collect();
        ids.sort_unstable();
        for id in ids {
            self.notify(now, id, None);
        }
    }

    // ---------------------------------------------------------------- subscriptions

    /// A SUBSCRIBE, initial or in-dialog (RFC 6665 §4.2).
    pub fn subscribe(&mut self, now: Now, req: Incoming<'_>) -> Reply {
        let msg = req.msg;
        let event = msg.header(&HeaderName::Event).map(str::trim);
        let Some(package) = event.and_then(Package::parse) else {
            let reason = if event.is_none() {
                "Bad Event - Missing Event Header"
            } else {
                "Bad Event"
            };
            return Reply::new(489, reason).with("Allow-Events", ALLOW_EVENTS);
        };
        let event = event.unwrap_or("presence").to_owned();
        let expires = match expires_header(msg) {
            Ok(e) => e,
            Err(r) => return r,
        };
        let (Some(call_id), Ok(cseq), Ok(from), Ok(to)) = (
            msg.call_id(),
            msg.cseq(),
            msg.from_header(),
            msg.to_header(),
        ) else {
            return Reply::new(400, reason_bad("Missing Dialog Headers"));
        };
        if let Some(tag) = to.tag() {
            return self.resubscribe(now, call_id, tag, cseq.seq, package, expires);
        }
        if from.tag().is_none() {
            return Reply::new(400, reason_bad("From Without Tag"));
        }
        if let Some(r) = self.check_accept(msg, package) {
            return r;
        }
        let Some(target) = msg
            .header(&HeaderName::Contact)
            .and_then(|c| NameAddr::parse(c).ok())
            .map(|c| c.uri.to_owned())
            .filter(|u| SipUri::parse(u).is_ok())
        else {
            return Reply::new(400, reason_bad("Missing Or Invalid Contact"));
        };
        let Some(presentity) = msg.request_uri().and_then(|u| self.aor_of(u)) else {
            return Reply::new(404, "Not Found - No User In Request-URI");
        };
        if req.auth_user.is_none() && !self.settings.allow_unauthenticated_watchers {
            return Reply::new(403, "Forbidden - Watcher Not Authenticated");
        }
        let Some(watcher) = self.watcher_of(from.uri, req.auth_user) else {
            return Reply::new(400, reason_bad("Invalid From URI"));
        };
        if package == Package::Winfo && watcher != presentity {
            // Only the presentity learns who watches it.
            return Reply::new(403, "Forbidden - Watcher Info Is For The Presentity Only");
        }
        let granted = match expires {
            Some(0) => 0,
            e => match self.grant(e) {
                Ok(e) => e,
                Err(r) => return r,
            },
        };
        let allowed = self.allowed(&presentity, &watcher);
        let local_uri = to.uri.to_owned();
        let contact = format!("<{}>", contact_uri(msg));
        let route: Vec<String> = msg
            .header_list(&HeaderName::RecordRoute)
            .map(str::to_owned)
            .collect();
        let mut rec = SubscriptionRecord {
            id: 0,
            package,
            presentity: presentity.clone(),
            watcher: watcher.clone(),
            event,
            call_id: call_id.to_owned(),
            local_tag: req.local_tag.to_owned(),
            remote: msg.header(&HeaderName::From).unwrap_or("").to_owned(),
            local_uri,
            target,
            route,
            contact: contact.clone(),
            local_cseq: 1,
            remote_cseq: cseq.seq,
            expires_at_ms: now.unix_ms + u64::from(granted) * 1000,
            started_ms: now.unix_ms,
            over_connection: req.over_connection,
            allowed,
        };
        let mut ok = Reply::new(200, "OK")
            .with("Expires", granted.to_string())
            .with("Contact", contact);
        // RFC 3261 §12.1.1: the 2xx to a dialog-creating request carries the Record-Route set,
        // so the subscriber's in-dialog requests come back through (and to) this server.
        for r in &rec.route {
            ok = ok.with("Record-Route", r.clone());
        }
        if granted == 0 {
            // A fetch (RFC 6665 §4.4.3): the current state, once, and no subscription.
            let template = NotifyTemplate::new(&rec);
            let n = self.notify_of(&rec, &template, "terminated;reason=timeout".to_owned());
            self.out.push_back(Output::Notify(n));
            return ok;
        }
        if self.per_watcher.get(&watcher).copied().unwrap_or(0)
            >= self.settings.limits.max_subscriptions_per_user
        {
            return Reply::new(403, "Forbidden - Too Many Subscriptions");
        }
        if self
            .presentities
            .get(&presentity)
            .is_some_and(|p| p.watchers.len() >= self.settings.limits.max_watchers_per_user)
        {
            return Reply::new(403, "Forbidden - Too Many Watchers");
        }
        let id = self.next_id;
        self.next_id += 1;
        rec.id = id;
        self.add_subscription(rec, now.mono + Duration::from_secs(granted.into()));
        self.notify(now, id, None);
        self.save(id);
        self.winfo_changed(now, &presentity);
        ok
    }

    fn check_accept(&self, msg: &Message, package: Package) -> Option<Reply> {
        let want = package.content_type();
        let mut any = false;
        for a in msg.header_list(&HeaderName::Accept) {
            let t = a.split(';').next().unwrap_or(a).trim().to_ascii_lowercase();
            if t.is_empty() {
                continue;
            }
            any = true;
            if t == want || t == "*/*" || t == "application/*" {
                return None;
            }
        }
        any.then(|| {
            Reply::new(406, "Not Acceptable - Body Would Be ".to_owned() + want)
                .with("Accept", want)
        })
    }

    fn add_subscription(&mut self, rec: SubscriptionRecord, expires: Instant) {
        let id = rec.id;
        self.dialogs
            .insert((rec.call_id.clone(), rec.local_tag.clone()), id);
        *self.per_watcher.entry(rec.watcher.clone()).or_default() += 1;
        self.presentities
            .entry(rec.presentity.clone())
            .or_default()
            .watchers
            .insert(id);
        self.deadlines
            .insert((expires, sub_key(id)), Expiry::Subscription(id));
        self.next_id = self.next_id.max(id + 1);
        let template = NotifyTemplate::new(&rec);
        self.subs.insert(
            id,
            Subscription {
                rec,
                expires,
                template,
            },
        );
    }

    fn resubscribe(
        &mut self,
        now: Now,
        call_id: &str,
        tag: &str,
        cseq: u32,
        package: Package,
        expires: Option<u32>,
    ) -> Reply {
        let Some(&id) = self.dialogs.get(&(call_id.to_owned(), tag.to_owned())) else {
            // Also SIPml5's second unsubscribe.
            return Reply::new(481, "Subscription Does Not Exist");
        };
        let Some(sub) = self.subs.get(&id) else {
            return Reply::new(481, "Subscription Does Not Exist");
        };
        if sub.rec.package != package {
            return Reply::new(489, "Bad Event - Not This Dialog's Package")
                .with("Allow-Events", ALLOW_EVENTS);
        }
        if cseq <= sub.rec.remote_cseq {
            return Reply::new(500, "Server Internal Error - CSeq Out Of Order");
        }
        let contact = sub.rec.contact.clone();
        let granted = match expires {
            Some(0) => 0,
            e => match self.grant(e) {
                Ok(e) => e,
                Err(r) => return r,
            },
        };
        if granted == 0 {
            self.terminate(now, id, "terminated;reason=timeout");
        } else if let Some(sub) = self.subs.get_mut(&id) {
            sub.rec.remote_cseq = cseq;
            self.deadlines.remove(&(sub.expires, sub_key(id)));
            sub.expires = now.mono + Duration::from_secs(granted.into());
            sub.rec.expires_at_ms = now.unix_ms + u64::from(granted) * 1000;
            self.deadlines
                .insert((sub.expires, sub_key(id)), Expiry::Subscription(id));
            // RFC 6665 §4.2.1.2: a refresh is answered with a NOTIFY of the current state.
            self.notify(now, id, None);
            self.save(id);
        }
        Reply::new(200, "OK")
            .with("Expires", granted.to_string())
            .with("Contact", contact)
    }

    /// Whether `watcher` may see `presentity`.
    fn allowed(&self, presentity: &str, watcher: &str) -> bool {
        if presentity == watcher {
            return true;
        }
        let lists = self.lists.get(presentity);
        if lists.is_some_and(|l| Lists::matches(&l.deny, watcher)) {
            return false;
        }
        match self.settings.policy {
            Policy::Domain => {
                let dom = |a: &str| a.rsplit_once('@').map(|(_, d)| d.to_owned());
                dom(presentity) == dom(watcher)
                    || lists.is_some_and(|l| Lists::matches(&l.allow, watcher))
            }
            Policy::Lists => lists.is_some_and(|l| Lists::matches(&l.allow, watcher)),
        }
    }

    /// The body a subscription gets now.
    fn body_for(&self, rec: &SubscriptionRecord) -> Cow<'_, str> {
        match rec.package {
            // The document last announced (kept by `changed`), so a change with a thousand
            // watchers composes once, not once per watcher, and copies it only into each
            // NOTIFY.
            Package::Presence if rec.allowed => match self.composed.get(&rec.presentity) {
                Some(doc) => Cow::Borrowed(doc),
                None => Cow::Owned(self.compose(&rec.presentity)),
            },
            // Polite blocking: exactly what an offline (or unknown) user looks like.
            Package::Presence => Cow::Owned(pidf::basic(&format!("sip:{}", rec.presentity), false)),
            Package::Winfo => Cow::Owned(self.winfo_doc(&rec.presentity, rec.id)),
        }
    }

    /// The next NOTIFY of `rec`'s dialog (its CSeq is `rec.local_cseq`; the caller counts it).
    fn notify_of(
        &self,
        rec: &SubscriptionRecord,
        template: &NotifyTemplate,
        state: String,
    ) -> Notify {
        let body = self.body_for(rec);
        let (bytes, body_at) =
            template.request(rec.local_cseq, &state, rec.package.content_type(), &body);
        Notify {
            subscription: rec.id,
            state,
            bytes,
            body_at,
        }
    }

    fn winfo_doc(&self, aor: &str, _for_sub: u64) -> String {
        let Some(p) = self.presentities.get(aor) else {
            return pidf::watcherinfo(&format!("sip:{aor}"), 0, &[]);
        };
        let mut ids: Vec<u64> = p.watchers.iter().copied().collect();
        ids.sort_unstable();
        let entries: Vec<pidf::WatcherEntry> = ids
            .iter()
            .filter_map(|id| self.subs.get(id))
            .filter(|s| s.rec.package == Package::Presence)
            .map(|s| pidf::WatcherEntry {
                id: s.rec.id.to_string(),
                uri: format!("sip:{}", s.rec.watcher),
                status: if s.rec.allowed {
                    "active"
                } else {
                    "terminated"
                },
                event: if s.rec.allowed {
                    "subscribe"
                } else {
                    "rejected"
                },
                duration: 0,
            })
            .collect();
        pidf::watcherinfo(&format!("sip:{aor}"), p.winfo_version, &entries)
    }

    /// Sends the current state to subscription `id` (`terminal`: with that final state).
    fn notify(&mut self, now: Now, id: u64, terminal: Option<&str>) {
        let Some(sub) = self.subs.get(&id) else {
            return;
        };
        let state = match terminal {
            Some(s) => s.to_owned(),
            None => format!(
                "active;expires={}",
                sub.expires
                    .saturating_duration_since(now.mono)
                    .as_secs()
                    .max(1)
            ),
        };
        let n = self.notify_of(&sub.rec, &sub.template, state);
        if let Some(sub) = self.subs.get_mut(&id) {
            sub.rec.local_cseq = next_cseq(sub.rec.local_cseq);
        }
        self.out.push_back(Output::Notify(n));
    }

    /// Stores subscription `id` (on creation, refresh, policy change, resume: not for every
    /// NOTIFY, see [`Core::restore_subscription`]).
    fn save(&mut self, id: u64) {
        if let Some(sub) = self.subs.get(&id) {
            self.out
                .push_back(Output::SaveSubscription(sub.rec.clone()));
        }
    }

    /// The watcher list of `aor` changed: NOTIFY its winfo subscribers.
    fn winfo_changed(&mut self, now: Now, aor: &str) {
        let Some(p) = self.presentities.get_mut(aor) else {
            return;
        };
        p.winfo_version += 1;
        let mut ids: Vec<u64> = p
            .watchers
            .iter()
            .copied()
            .filter(|id| {
                self.subs
                    .get(id)
                    .is_some_and(|s| s.rec.package == Package::Winfo)
            })
            .collect();
        ids.sort_unstable();
        for id in ids {
            self.notify(now, id, None);
        }
    }

    /// Ends subscription `id` with a final NOTIFY of `state`.
    fn terminate(&mut self, now: Now, id: u64, state: &str) {
        self.notify(now, id, Some(state));
        self.drop_subscription(now, id);
    }

    /// Forgets subscription `id` without telling the subscriber.
    fn drop_subscription(&mut self, now: Now, id: u64) {
        let Some(sub) = self.subs.remove(&id) else {
            return;
        };
        self.unsent.remove(&id);
        self.deadlines.remove(&(sub.expires, sub_key(id)));
        self.dialogs
            .remove(&(sub.rec.call_id.clone(), sub.rec.local_tag.clone()));
        if let Some(n) = self.per_watcher.get_mut(&sub.rec.watcher) {
            *n -= 1;
            if *n == 0 {
                self.per_watcher.remove(&sub.rec.watcher);
            }
        }
        if let Some(p) = self.presentities.get_mut(&sub.rec.presentity) {
            p.watchers.remove(&id);
        }
        self.out.push_back(Output::DeleteSubscription(id));
        if sub.rec.package == Package::Presence {
            self.winfo_changed(now, &sub.rec.presentity);
        }
        self.forget_if_empty(&sub.rec.presentity);
    }

    /// The NOTIFY of subscription `id` could not be sent (the host is at its limit of requests
    /// in flight): it is sent again, with the state of that moment, by [`Core::resend`].
    /// Nothing is lost: a NOTIFY carries the full state, so the latest one is all a watcher
    /// needs.
    pub fn notify_unsent(&mut self, id: u64) {
        if self.subs.contains_key(&id) {
            self.unsent.insert(id);
        }
    }

    /// Whether NOTIFYs wait for [`Core::resend`].
    pub fn has_unsent(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// Sends the current state to every subscription whose NOTIFY could not be sent.
    pub fn resend(&mut self, now: Now) {
        for id in std::mem::take(&mut self.unsent) {
            self.notify(now, id, None);
        }
    }

    /// The subscription whose dialog is `call_id` with our tag `local_tag` (the From tag of
    /// the NOTIFYs we send, so a NOTIFY's response names its subscription).
    pub fn subscription_of(&self, call_id: &str, local_tag: &str) -> Option<u64> {
        self.dialogs
            .get(&(call_id.to_owned(), local_tag.to_owned()))
            .copied()
    }

    /// A NOTIFY of subscription `id` failed with `status` (a 481, or the host's 408/480 when
    /// the subscriber's connection is gone): RFC 6665 §4.2.2 removes the subscription.
    pub fn notify_failed(&mut self, now: Now, id: u64, status: u16) {
        if status >= 300 {
            self.drop_subscription(now, id);
        }
    }

    // ---------------------------------------------------------------- registrations

    /// `aor` (`user@domain`, without `sip:`) now has `bindings` registrations.
    ///
    /// Online without publications shows `open`; the last binding going shows `closed` at
    /// once and drops what the user's connections carried: publications made over them, and
    /// the user's own subscriptions made over them (a browser that reconnects subscribes
    /// anew; its old dialogs would be duplicate watchers). When the count only drops, the
    /// user's connection subscriptions get a NOTIFY of the current state: those whose
    /// connection is gone fail, and [`Core::notify_failed`] removes them.
    pub fn registration(&mut self, now: Now, aor: &str, bindings: u32) {
        let before = self.registered.get(aor).copied().unwrap_or(0);
        if bindings == 0 {
            self.registered.remove(aor);
            let gone: Vec<usize> = self
                .presentities
                .get(aor)
                .map(|p| {
                    (0..p.pubs.len())
                        .filter(|&i| p.pubs[i].over_connection)
                        .collect()
                })
                .unwrap_or_default();
            for i in gone.into_iter().rev() {
                self.remove_publication(aor, i);
            }
            let mine: Vec<u64> = self.connection_subs_of(aor);
            for id in mine {
                self.drop_subscription(now, id);
            }
        } else {
            self.registered.insert(aor.to_owned(), bindings);
            if bindings < before {
                for id in self.connection_subs_of(aor) {
                    self.notify(now, id, None);
                }
            }
        }
        self.changed(now, aor);
    }

    fn connection_subs_of(&self, watcher: &str) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .subs
            .values()
            .filter(|s| s.rec.over_connection && s.rec.watcher == watcher)
            .map(|s| s.rec.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Registrations known at start-up (no NOTIFYs; [`Core::resume`] sends them).
    pub fn set_registered(&mut self, aor: &str, bindings: u32) {
        if bindings > 0 {
            self.registered.insert(aor.to_owned(), bindings);
        }
    }

    // ---------------------------------------------------------------- policy

    /// `aor`'s allow/deny lists changed (`None`: removed). Watchers whose permission changed
    /// get a NOTIFY.
    pub fn set_lists(&mut self, now: Now, aor: &str, lists: Option<Lists>) {
        match lists {
            Some(l) => self.lists.insert(aor.to_owned(), l),
            None => self.lists.remove(aor),
        };
        let ids: Vec<u64> = self
            .presentities
            .get(aor)
            .map(|p| {
                let mut v: Vec<u64> = p.watchers.iter().copied().collect();
                v.sort_unstable();
                v
            })
            .unwrap_or_default();
        let mut any = false;
        for id in ids {
            let Some(sub) = self.subs.get(&id) else {
                continue;
            };
            if sub.rec.package != Package::Presence {
                continue;
            }
            let allowed = self.allowed(aor, &sub.rec.watcher);
            if let Some(sub) = self.subs.get_mut(&id) {
                if sub.rec.allowed != allowed {
                    sub.rec.allowed = allowed;
                    any = true;
                    self.notify(now, id, None);
                    self.save(id);
                }
            }
        }
        if any {
            self.winfo_changed(now, aor);
        }
    }

    // ---------------------------------------------------------------- time

    /// Expires what is due at `now`: publications (the composition changes) and
    /// subscriptions (a final NOTIFY `terminated;reason=timeout`).
    pub fn handle_timeout(&mut self, now: Now) {
        while let Some(entry) = self.deadlines.first_entry() {
            if entry.key().0 > now.mono {
                break;
            }
            let what = entry.remove();
            match what {
                Expiry::Publication { aor, etag } => {
                    let index = self
                        .presentities
                        .get(&aor)
                        .and_then(|p| p.pubs.iter().position(|x| x.etag == etag));
                    if let Some(i) = index {
                        self.remove_publication(&aor, i);
                        self.changed(now, &aor);
                    }
                }
                Expiry::Subscription(id) => self.terminate(now, id, "terminated;reason=timeout"),
            }
        }
    }

    // ---------------------------------------------------------------- restart

    /// Restores a stored publication; false (and nothing kept) if it has expired or does not
    /// parse any more.
    pub fn restore_publication(&mut self, now: Now, rec: PublicationRecord) -> bool {
        if rec.expires_at_ms <= now.unix_ms {
            return false;
        }
        let Ok(parsed) = pidf::parse(rec.body.as_bytes()) else {
            return false;
        };
        let expires = now.mono + Duration::from_millis(rec.expires_at_ms - now.unix_ms);
        self.next_seq = self.next_seq.max(rec.seq.max(rec.id) + 1);
        let p = Publication {
            id: rec.id,
            etag: rec.etag,
            body: rec.body,
            parsed,
            expires,
            over_connection: rec.over_connection,
            seq: rec.seq,
        };
        self.deadlines.insert(
            (p.expires, pub_key(p.id)),
            Expiry::Publication {
                aor: rec.aor.clone(),
                etag: p.etag.clone(),
            },
        );
        self.presentities.entry(rec.aor).or_default().pubs.push(p);
        true
    }

    /// Restores a stored subscription; false if it has expired.
    pub fn restore_subscription(&mut self, now: Now, mut rec: SubscriptionRecord) -> bool {
        if rec.expires_at_ms <= now.unix_ms || self.subs.contains_key(&rec.id) {
            return false;
        }
        // The stored CSeq is only written when the subscription is created or refreshed, not
        // for every NOTIFY (that would be one store write per NOTIFY); jumping ahead keeps the
        // dialog's CSeq increasing (RFC 3261 §12.2.1.1) across a restart.
        rec.local_cseq = (rec.local_cseq.wrapping_add(CSEQ_RESTART_GAP) & 0x7fff_ffff).max(1);
        let expires = now.mono + Duration::from_millis(rec.expires_at_ms - now.unix_ms);
        self.add_subscription(rec, expires);
        true
    }

    /// After restoring: announce every presentity's document and send every subscription
    /// its current state (the server may have missed changes while it was down).
    pub fn resume(&mut self, now: Now) {
        let mut aors: Vec<String> = self
            .presentities
            .keys()
            .chain(self.registered.keys())
            .cloned()
            .collect();
        aors.sort_unstable();
        aors.dedup();
        for aor in aors {
            let known = self.registered.contains_key(&aor) || self.publication_count(&aor) > 0;
            if known {
                let doc = self.compose(&aor);
                self.composed.insert(aor.clone(), doc.clone());
                self.out.push_back(Output::Composed {
                    aor,
                    document: Some(doc),
                });
            }
        }
        let mut ids: Vec<u64> = self.subs.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.notify(now, id, None);
            self.save(id);
        }
    }
}

/// Our Contact for a dialog: the presentity's user at the host the subscriber addressed, so
/// in-dialog requests come back to this server (and, by the claims, to this plugin).
fn contact_uri(msg: &Message) -> String {
    let ruri = msg.request_uri().unwrap_or("");
    match SipUri::parse(ruri) {
        Ok(u) => {
            let user = u.user.map(|u| format!("{u}@")).unwrap_or_default();
            let port = u.port.map(|p| format!(":{p}")).unwrap_or_default();
            let transport = u
                .transport()
                .map(|t| format!(";transport={t}"))
                .unwrap_or_default();
            format!("sip:{user}{}{port}{transport}", u.host)
        }
        Err(_) => ruri.to_owned(),
    }
}

/// The CSeq after `cseq` (never 0).
fn next_cseq(cseq: u32) -> u32 {
    cseq.wrapping_add(1).max(1)
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
