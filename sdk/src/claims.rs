//! Routing claims: what a plugin declares at `init` that it handles, how a request is matched
//! against a claim, and when two claims conflict. Both sides use this module: a plugin builds
//! [`Claims`], the host matches requests with [`Claim::matches`] and refuses overlapping claims
//! of different plugins at start-up with [`Claim::overlaps`], so the semantics live in one place.
//!
//! A [`Claim`] has up to three fields; a request matches when it matches every field that is
//! set:
//!
//! * `method`: the SIP method, exact and case-sensitive (RFC 3261 §7.1). `REGISTER` belongs to
//!   the registrar, and `ACK` and `CANCEL` follow the transaction they belong to, so they cannot
//!   be claimed.
//! * `event`: the Event package (RFC 6665), compared ASCII case-insensitively, without
//!   parameters (`presence`, not `presence;id=1`). A request without an Event header does not
//!   match a claim that names one; when no claim takes it as it is but claims name packages
//!   for its method and Request-URI, the host answers it `489 Bad Event - Missing Event
//!   Header` with those packages in `Allow-Events` (RFC 6665 §8.2.1: Event is mandatory).
//! * `user`: a pattern for the Request-URI's user part as written (escapes are not decoded, and
//!   user parameters after a `;` are not part of it), case-sensitive, where `*` matches any run of characters (possibly empty): `echo`,
//!   `room-*`, `*-bot`. A Request-URI without a user part matches no user pattern.
//!
//! A claim may also be *open to guests* ([`Claim::open_to_guests`]): an out-of-dialog request it
//! matches is handed over without the digest challenge (407) the host otherwise sends callers
//! who name a local user in From, unless the request carries credentials anyway. The plugin
//! sees such a caller with no authenticated user (`RequestInfo::auth_user` is `None`) and
//! decides what a guest may do (a public conference room). Openness plays no part in matching
//! or in conflicts.
//!
//! Put a claimed user in the Contact of the dialogs a plugin creates, so that in-dialog
//! requests (BYE, re-INVITE, SUBSCRIBE refreshes) come back to it.

use std::fmt;

use huddle_sip::syntax;
use huddle_sip::uri::SipUri;
use huddle_sip::{HeaderName, Message};

use crate::error::Error;

/// The longest method or event package a claim accepts, in bytes.
pub const MAX_TOKEN_LEN: usize = 64;
/// The longest user pattern a claim accepts, in bytes.
pub const MAX_USER_PATTERN_LEN: usize = 256;

/// Why a claim was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimError {
    /// No field is set: the claim would take every request.
    #[error("a claim must name a method, an event package or a user pattern")]
    Empty,
    /// The method is not a SIP token of at most [`MAX_TOKEN_LEN`] bytes.
    #[error("the method is not a SIP token")]
    BadMethod,
    /// The method belongs to the host (REGISTER, ACK, CANCEL).
    #[error("the method {0} cannot be claimed")]
    ReservedMethod(&'static str),
    /// The event package is not a SIP token of at most [`MAX_TOKEN_LEN`] bytes.
    #[error("the event package is not a SIP token")]
    BadEvent,
    /// The user pattern is empty, too long, or contains white space, a control character, `@`,
    /// `:`, `<`, `>` or `"`.
    #[error("the user pattern is not a valid Request-URI user pattern")]
    BadUser,
}

impl From<ClaimError> for Error {
    fn from(e: ClaimError) -> Self {
        match e {
            ClaimError::ReservedMethod(_) => Error::PermissionDenied,
            _ => Error::InvalidArgument,
        }
    }
}

/// One claim. Build it with [`Claim::method`], [`Claim::event`] or [`Claim::user`] and narrow
/// it with the same-named `with_*` methods; [`Claim::validate`] checks it (the host refuses an
/// invalid claim).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Claim {
    method: Option<Box<str>>,
    event: Option<Box<str>>,
    user: Option<Box<str>>,
    guests: bool,
}

impl Claim {
    /// Requests with this method.
    pub fn method(method: &str) -> Self {
        Claim::default().with_method(method)
    }

    /// Requests whose Event header names this package.
    pub fn event(package: &str) -> Self {
        Claim::default().with_event(package)
    }

    /// Requests whose Request-URI user matches this pattern.
    pub fn user(pattern: &str) -> Self {
        Claim::default().with_user(pattern)
    }

    /// Also requires this method.
    pub fn with_method(mut self, method: &str) -> Self {
        self.method = non_empty(method);
        self
    }

    /// Also requires this Event package.
    pub fn with_event(mut self, package: &str) -> Self {
        self.event = non_empty(package);
        self
    }

    /// Also requires the Request-URI user to match this pattern.
    pub fn with_user(mut self, pattern: &str) -> Self {
        self.user = non_empty(pattern);
        self
    }

    /// Also admits callers who did not authenticate (see the [module docs](self)).
    pub fn open_to_guests(mut self) -> Self {
        self.guests = true;
        self
    }

    /// Whether the claim admits callers who did not authenticate.
    pub fn admits_guests(&self) -> bool {
        self.guests
    }

    /// Builds a claim from its three fields as they cross the ABI (empty: any), validated.
    pub fn from_parts(method: &str, event: &str, user: &str) -> Result<Self, ClaimError> {
        let claim = Claim {
            method: non_empty(method),
            event: non_empty(event),
            user: non_empty(user),
            guests: false,
        };
        claim.validate()?;
        Ok(claim)
    }

    /// The method, if the claim names one.
    pub fn method_name(&self) -> Option<&str> {
        self.method.as_deref()
    }

    /// The Event package, if the claim names one.
    pub fn event_package(&self) -> Option<&str> {
        self.event.as_deref()
    }

    /// The user pattern, if the claim names one.
    pub fn user_pattern(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Checks the claim against the rules in the [module docs](self).
    pub fn validate(&self) -> Result<(), ClaimError> {
        if self.method.is_none() && self.event.is_none() && self.user.is_none() {
            return Err(ClaimError::Empty);
        }
        if let Some(m) = &self.method {
            if m.len() > MAX_TOKEN_LEN || !syntax::is_token(m) {
                return Err(ClaimError::BadMethod);
            }
            for reserved in ["REGISTER", "ACK", "CANCEL"] {
                if &**m == reserved {
                    return Err(ClaimError::ReservedMethod(reserved));
                }
            }
        }
        if let Some(e) = &self.event {
            if e.len() > MAX_TOKEN_LEN || !syntax::is_token(e) {
                return Err(ClaimError::BadEvent);
            }
        }
        if let Some(u) = &self.user {
            let bad = |c: char| {
                c.is_whitespace() || c.is_control() || matches!(c, '@' | ':' | '<' | '>' | '"')
            };
            if u.len() > MAX_USER_PATTERN_LEN || u.chars().any(bad) {
                return Err(ClaimError::BadUser);
            }
        }
        Ok(())
    }

    /// Whether a request with this method, Event package (without parameters) and Request-URI
    /// user matches the claim.
    pub fn matches(&self, method: &str, event: Option<&str>, user: Option<&str>) -> bool {
        let method_ok = self.method.as_deref().is_none_or(|m| m == method);
        let event_ok = match (self.event.as_deref(), event) {
            (None, _) => true,
            (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
            (Some(_), None) => false,
        };
        let user_ok = match (self.user.as_deref(), user) {
            (None, _) => true,
            (Some(pattern), Some(user)) => glob_match(pattern.as_bytes(), user.as_bytes()),
            (Some(_), None) => false,
        };
        method_ok && event_ok && user_ok
    }

    /// Whether a parsed request matches the claim (see [`RouteKey::of`]).
    pub fn matches_request(&self, request: &Message) -> bool {
        RouteKey::of(request).is_some_and(|k| self.matches(k.method, k.event, k.user))
    }

    /// Whether some request could match both claims: the host refuses to start when claims of
    /// two different plugins overlap. Two fields overlap when either is unset or they can match
    /// a common value (equal methods, equal packages ignoring case, user patterns with a common
    /// match).
    pub fn overlaps(&self, other: &Claim) -> bool {
        let method = match (&self.method, &other.method) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        let event = match (&self.event, &other.event) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => true,
        };
        let user = match (&self.user, &other.user) {
            (Some(a), Some(b)) => globs_intersect(a.as_bytes(), b.as_bytes()),
            _ => true,
        };
        method && event && user
    }
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut part = |f: &mut fmt::Formatter<'_>, name: &str, v: &Option<Box<str>>| {
            if let Some(v) = v {
                if !first {
                    f.write_str(" ")?;
                }
                first = false;
                write!(f, "{name}={v}")?;
            }
            Ok(())
        };
        part(f, "method", &self.method)?;
        part(f, "event", &self.event)?;
        part(f, "user", &self.user)?;
        if self.guests {
            f.write_str(" guests")?;
        }
        Ok(())
    }
}

fn non_empty(s: &str) -> Option<Box<str>> {
    (!s.is_empty()).then(|| s.into())
}

/// The parts of a request that claims look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteKey<'a> {
    /// The method.
    pub method: &'a str,
    /// The Event package without parameters, if the request has an Event header.
    pub event: Option<&'a str>,
    /// The Request-URI's user part as written, if it has one.
    pub user: Option<&'a str>,
}

impl<'a> RouteKey<'a> {
    /// The route key of a request; `None` for a response. A Request-URI that is not a SIP URI
    /// has no user.
    pub fn of(request: &'a Message) -> Option<RouteKey<'a>> {
        let method = request.method()?.as_str();
        let event = request
            .header(&HeaderName::Event)
            .map(|v| syntax::trim_lws(v.split(';').next().unwrap_or(v)));
        let user = request
            .request_uri()
            .and_then(|u| SipUri::parse(u).ok())
            .and_then(|u| u.user)
            .map(|u| u.split(';').next().unwrap_or(u));
        Some(RouteKey {
            method,
            event,
            user,
        })
    }
}

/// The claims a plugin makes at `init`: add one per kind of request it handles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    list: Vec<Claim>,
}

impl Claims {
    /// No claims yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a claim.
    pub fn add(&mut self, claim: Claim) -> &mut Self {
        self.list.push(claim);
        self
    }

    /// The claims, in the order added.
    pub fn iter(&self) -> impl Iterator<Item = &Claim> {
        self.list.iter()
    }

    /// How many claims there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True when nothing was claimed.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

impl From<Vec<Claim>> for Claims {
    fn from(list: Vec<Claim>) -> Self {
        Claims { list }
    }
}

impl IntoIterator for Claims {
    type Item = Claim;
    type IntoIter = std::vec::IntoIter<Claim>;
    fn into_iter(self) -> Self::IntoIter {
        self.list.into_iter()
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of bytes. Linear in practice:
/// backtracking restarts only from the last `*`.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Whether some text matches both patterns. A search over pairs of positions: a `*` on either
/// side may match nothing, or absorb the next literal of the other side; two literals must be
/// equal. `O(len(a) * len(b))`.
pub fn globs_intersect(a: &[u8], b: &[u8]) -> bool {
    let width = b.len() + 1;
    let mut seen = vec![false; (a.len() + 1) * width];
    let mut stack = vec![(0usize, 0usize)];
    while let Some((i, j)) = stack.pop() {
        if std::mem::replace(&mut seen[i * width + j], true) {
            continue;
        }
        if i == a.len() && j == b.len() {
            return true;
        }
        let ai = a.get(i).copied();
        let bj = b.get(j).copied();
        if ai == Some(b'*') {
            stack.push((i + 1, j));
            if bj.is_some_and(|c| c != b'*') {
                stack.push((i, j + 1));
            }
        }
        if bj == Some(b'*') {
            stack.push((i, j + 1));
            if ai.is_some_and(|c| c != b'*') {
                stack.push((i + 1, j));
            }
        }
        if let (Some(x), Some(y)) = (ai, bj) {
            if x != b'*' && y != b'*' && x == y {
                stack.push((i + 1, j + 1));
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"echo", b"echo"));
        assert!(!glob_match(b"echo", b"echo2"));
        assert!(glob_match(b"room-*", b"room-"));
        assert!(glob_match(b"room-*", b"room-42"));
        assert!(!glob_match(b"room-*", b"roo"));
        assert!(glob_match(b"*-bot", b"chat-bot"));
        assert!(glob_match(b"a*b*c", b"aXXbYYc"));
        assert!(!glob_match(b"a*b*c", b"aXXbYY"));
        assert!(glob_match(b"*", b""));
    }

    #[test]
    fn intersections() {
        assert!(globs_intersect(b"echo", b"echo"));
        assert!(!globs_intersect(b"echo", b"echo2"));
        assert!(globs_intersect(b"room-*", b"room-1"));
        assert!(globs_intersect(b"room-*", b"*-1"));
        assert!(!globs_intersect(b"room-*", b"conf-*"));
        assert!(globs_intersect(b"a*", b"*b"));
        assert!(!globs_intersect(b"a*x", b"b*"));
        assert!(globs_intersect(b"*", b"anything"));
        assert!(!globs_intersect(b"ab", b"a*c"));
    }

    #[test]
    fn claims_match_and_overlap() {
        let echo = Claim::method("MESSAGE").with_user("echo");
        assert!(echo.matches("MESSAGE", None, Some("echo")));
        assert!(!echo.matches("MESSAGE", None, Some("alice")));
        assert!(!echo.matches("INVITE", None, Some("echo")));
        let presence = Claim::method("SUBSCRIBE").with_event("presence");
        assert!(presence.matches("SUBSCRIBE", Some("Presence"), Some("bob")));
        assert!(!presence.matches("SUBSCRIBE", None, Some("bob")));
        assert!(!echo.overlaps(&presence));
        assert!(echo.overlaps(&Claim::user("ec*")));
        assert!(!echo.overlaps(&Claim::method("MESSAGE").with_user("room-*")));
        assert_eq!(echo.to_string(), "method=MESSAGE user=echo");
    }

    #[test]
    fn validation() {
        assert_eq!(Claim::default().validate(), Err(ClaimError::Empty));
        assert_eq!(
            Claim::method("REGISTER").validate(),
            Err(ClaimError::ReservedMethod("REGISTER"))
        );
        assert_eq!(
            Claim::method("ME SSAGE").validate(),
            Err(ClaimError::BadMethod)
        );
        assert_eq!(Claim::user("a@b").validate(), Err(ClaimError::BadUser));
        assert_eq!(
            Claim::event("pres ence").validate(),
            Err(ClaimError::BadEvent)
        );
        assert!(Claim::from_parts("MESSAGE", "", "echo").is_ok());
    }

    #[test]
    fn route_key_of_a_request() {
        let msg = Message::parse(bytes::Bytes::from_static(
            b"SUBSCRIBE sip:bob;x=1@example.test SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@example.test>;tag=1\r\nTo: <sip:bob@example.test>\r\nCall-ID: c\r\nCSeq: 1 SUBSCRIBE\r\nEvent: presence;id=4\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        ))
        .unwrap();
        let key = RouteKey::of(&msg).unwrap();
        assert_eq!(key.method, "SUBSCRIBE");
        assert_eq!(key.event, Some("presence"));
        assert_eq!(key.user, Some("bob"));
        assert!(Claim::event("presence").matches_request(&msg));
    }
}
