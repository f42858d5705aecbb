//! Header field names: the ones Huddle reads get an enum variant (compact forms folded in, per
//! RFC 3261 §7.3.3 and the IANA registry); everything else stays text.

/// A header field name. Unknown names are kept as written and compared case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderName {
    Accept,
    AcceptContact,
    Allow,
    AllowEvents,
    Authorization,
    CallId,
    Contact,
    ContentEncoding,
    ContentLength,
    ContentType,
    CSeq,
    Date,
    Event,
    Expires,
    From,
    MaxForwards,
    MinExpires,
    Path,
    ProxyAuthenticate,
    ProxyAuthorization,
    ProxyRequire,
    RecordRoute,
    ReferTo,
    ReferredBy,
    Require,
    RetryAfter,
    Route,
    Server,
    SessionExpires,
    SipEtag,
    SipIfMatch,
    Subject,
    SubscriptionState,
    Supported,
    To,
    Unsupported,
    UserAgent,
    Via,
    Warning,
    WwwAuthenticate,
    /// Any other header, as written in the message.
    Other(Box<str>),
}

impl HeaderName {
    /// Resolves a name as written on the wire (full or compact form, any case).
    pub fn parse(name: &str) -> HeaderName {
        HeaderName::known(name.as_bytes()).unwrap_or_else(|| HeaderName::Other(name.into()))
    }

    /// The known name written as `name` (full or compact form, any case), `None` for others.
    /// Takes bytes so that the parser need not check a name as UTF-8 first.
    pub(crate) fn known(name: &[u8]) -> Option<HeaderName> {
        use HeaderName::*;
        if name.len() == 1 {
            return Some(match name[0].to_ascii_lowercase() {
                b'a' => AcceptContact,
                b'b' => ReferredBy,
                b'c' => ContentType,
                b'e' => ContentEncoding,
                b'f' => From,
                b'i' => CallId,
                b'k' => Supported,
                b'l' => ContentLength,
                b'm' => Contact,
                b'o' => Event,
                b'r' => ReferTo,
                b's' => Subject,
                b't' => To,
                b'u' => AllowEvents,
                b'v' => Via,
                b'x' => SessionExpires,
                _ => return None,
            });
        }
        // By length and first letter (at most two names share both), then compared with
        // literals, which the compiler turns into a few word compares: this runs for every
        // header field of every message. Nearly every client writes the canonical form; case
        // folding only for other spellings.
        macro_rules! known {
            ($($text:literal => $name:ident),+) => {{
                $(if name == $text.as_bytes() {
                    return Some($name);
                })+
                $(if name.eq_ignore_ascii_case($text.as_bytes()) {
                    return Some($name);
                })+
                None
            }};
        }
        let first = name.first().map_or(0, u8::to_ascii_lowercase);
        match (name.len(), first) {
            (2, b't') => known!("To" => To),
            (3, b'v') => known!("Via" => Via),
            (4, b'c') => known!("CSeq" => CSeq),
            (4, b'd') => known!("Date" => Date),
            (4, b'f') => known!("From" => From),
            (4, b'p') => known!("Path" => Path),
            (5, b'a') => known!("Allow" => Allow),
            (5, b'e') => known!("Event" => Event),
            (5, b'r') => known!("Route" => Route),
            (6, b'a') => known!("Accept" => Accept),
            (6, b's') => known!("Server" => Server),
            (7, b'c') => known!("Call-ID" => CallId, "Contact" => Contact),
            (7, b'e') => known!("Expires" => Expires),
            (7, b'r') => known!("Require" => Require),
            (7, b's') => known!("Subject" => Subject),
            (7, b'w') => known!("Warning" => Warning),
            (8, b'r') => known!("Refer-To" => ReferTo),
            (8, b's') => known!("SIP-ETag" => SipEtag),
            (9, b's') => known!("Supported" => Supported),
            (10, b'u') => known!("User-Agent" => UserAgent),
            (11, b'm') => known!("Min-Expires" => MinExpires),
            (11, b'r') => known!("Referred-By" => ReferredBy, "Retry-After" => RetryAfter),
            (11, b'u') => known!("Unsupported" => Unsupported),
            (12, b'a') => known!("Allow-Events" => AllowEvents),
            (12, b'c') => known!("Content-Type" => ContentType),
            (12, b'm') => known!("Max-Forwards" => MaxForwards),
            (12, b'r') => known!("Record-Route" => RecordRoute),
            (12, b's') => known!("SIP-If-Match" => SipIfMatch),
            (13, b'a') => known!("Authorization" => Authorization),
            (13, b'p') => known!("Proxy-Require" => ProxyRequire),
            (14, b'a') => known!("Accept-Contact" => AcceptContact),
            (14, b'c') => known!("Content-Length" => ContentLength),
            (15, b's') => known!("Session-Expires" => SessionExpires),
            (16, b'c') => known!("Content-Encoding" => ContentEncoding),
            (16, b'w') => known!("WWW-Authenticate" => WwwAuthenticate),
            (18, b'p') => known!("Proxy-Authenticate" => ProxyAuthenticate),
            (18, b's') => known!("Subscription-State" => SubscriptionState),
            (19, b'p') => known!("Proxy-Authorization" => ProxyAuthorization),
            _ => None,
        }
    }

    /// The canonical full form, used when Huddle writes a header.
    pub fn as_str(&self) -> &str {
        use HeaderName::*;
        match self {
            Accept => "Accept",
            AcceptContact => "Accept-Contact",
            Allow => "Allow",
            AllowEvents => "Allow-Events",
            Authorization => "Authorization",
            CallId => "Call-ID",
            Contact => "Contact",
            ContentEncoding => "Content-Encoding",
            ContentLength => "Content-Length",
            ContentType => "Content-Type",
            CSeq => "CSeq",
            Date => "Date",
            Event => "Event",
            Expires => "Expires",
            From => "From",
            MaxForwards => "Max-Forwards",
            MinExpires => "Min-Expires",
            Path => "Path",
            ProxyAuthenticate => "Proxy-Authenticate",
            ProxyAuthorization => "Proxy-Authorization",
            ProxyRequire => "Proxy-Require",
            RecordRoute => "Record-Route",
            ReferTo => "Refer-To",
            ReferredBy => "Referred-By",
            Require => "Require",
            RetryAfter => "Retry-After",
            Route => "Route",
            Server => "Server",
            SessionExpires => "Session-Expires",
            SipEtag => "SIP-ETag",
            SipIfMatch => "SIP-If-Match",
            Subject => "Subject",
            SubscriptionState => "Subscription-State",
            Supported => "Supported",
            To => "To",
            Unsupported => "Unsupported",
            UserAgent => "User-Agent",
            Via => "Via",
            Warning => "Warning",
            WwwAuthenticate => "WWW-Authenticate",
            Other(name) => name,
        }
    }

    /// How many names have a variant of their own ([`HeaderName::slot`] is below it).
    pub(crate) const KNOWN: usize = 40;

    /// A number per known name, below [`HeaderName::KNOWN`], `None` for [`HeaderName::Other`]:
    /// [`crate::Message`] keeps where each known name's first field is by it.
    pub(crate) fn slot(&self) -> Option<usize> {
        use HeaderName::*;
        Some(match self {
            Accept => 0,
            AcceptContact => 1,
            Allow => 2,
            AllowEvents => 3,
            Authorization => 4,
            CallId => 5,
            Contact => 6,
            ContentEncoding => 7,
            ContentLength => 8,
            ContentType => 9,
            CSeq => 10,
            Date => 11,
            Event => 12,
            Expires => 13,
            From => 14,
            MaxForwards => 15,
            MinExpires => 16,
            Path => 17,
            ProxyAuthenticate => 18,
            ProxyAuthorization => 19,
            ProxyRequire => 20,
            RecordRoute => 21,
            ReferTo => 22,
            ReferredBy => 23,
            Require => 24,
            RetryAfter => 25,
            Route => 26,
            Server => 27,
            SessionExpires => 28,
            SipEtag => 29,
            SipIfMatch => 30,
            Subject => 31,
            SubscriptionState => 32,
            Supported => 33,
            To => 34,
            Unsupported => 35,
            UserAgent => 36,
            Via => 37,
            Warning => 38,
            WwwAuthenticate => 39,
            Other(_) => return None,
        })
    }

    /// Compares with another name the way SIP does (compact forms and case folded).
    // Inlined, and known names compared by variant alone: every header lookup calls this once
    // per field of the message (about 50 lookups per REGISTER, bench/NOTES.md).
    #[inline(always)]
    pub fn matches(&self, other: &HeaderName) -> bool {
        match (self, other) {
            (HeaderName::Other(a), HeaderName::Other(b)) => a.eq_ignore_ascii_case(b),
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

impl std::fmt::Display for HeaderName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::HeaderName;

    const KNOWN_NAMES: [&str; HeaderName::KNOWN] = [
        "Accept",
        "Accept-Contact",
        "Allow",
        "Allow-Events",
        "Authorization",
        "Call-ID",
        "Contact",
        "Content-Encoding",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Date",
        "Event",
        "Expires",
        "From",
        "Max-Forwards",
        "Min-Expires",
        "Path",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Require",
        "Record-Route",
        "Refer-To",
        "Referred-By",
        "Require",
        "Retry-After",
        "Route",
        "Server",
        "Session-Expires",
        "SIP-ETag",
        "SIP-If-Match",
        "Subject",
        "Subscription-State",
        "Supported",
        "To",
        "Unsupported",
        "User-Agent",
        "Via",
        "Warning",
        "WWW-Authenticate",
    ];

    #[test]
    fn every_name_known_accepts_is_a_token() {
        // `Message::from_parts` checks only the names `known` does not accept to be tokens.
        let mut accepted = 0;
        let spellings = KNOWN_NAMES.iter().flat_map(|n| {
            [
                n.to_string(),
                n.to_ascii_lowercase(),
                n.to_ascii_uppercase(),
            ]
        });
        let compact = (0..=255u8).map(|c| String::from_utf8_lossy(&[c]).into_owned());
        for name in spellings.chain(compact) {
            let bytes = name.as_bytes();
            for at in 0..bytes.len() {
                for b in 0..=255u8 {
                    let mut mutated = bytes.to_vec();
                    mutated[at] = b;
                    if HeaderName::known(&mutated).is_some() {
                        accepted += 1;
                        let text = std::str::from_utf8(&mutated).unwrap();
                        assert!(crate::syntax::is_token(text), "{mutated:?}");
                    }
                }
            }
        }
        assert!(accepted > 3 * HeaderName::KNOWN, "{accepted}");
    }

    #[test]
    fn known_names_have_slots_of_their_own() {
        let mut seen = [false; HeaderName::KNOWN];
        // Full names and every compact form.
        let compact = (b'a'..=b'z').map(|c| char::from(c).to_string());
        let all: Vec<String> = KNOWN_NAMES
            .iter()
            .map(|s| s.to_string())
            .chain(compact)
            .collect();
        for written in &all {
            let name = HeaderName::parse(written);
            let Some(slot) = name.slot() else {
                assert!(matches!(name, HeaderName::Other(_)), "{written}");
                continue;
            };
            assert!(slot < HeaderName::KNOWN, "{written}");
            seen[slot] = true;
            // The same slot as every name it matches, and none that it does not.
            for other in KNOWN_NAMES.iter().map(|w| HeaderName::parse(w)) {
                assert_eq!(
                    other.slot() == Some(slot),
                    other.matches(&name),
                    "{written}"
                );
            }
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(HeaderName::parse("X-Via").slot(), None);
    }

    #[test]
    fn every_known_name_resolves_in_any_case() {
        let names = KNOWN_NAMES;
        for name in names {
            for written in [
                name.to_owned(),
                name.to_ascii_lowercase(),
                name.to_ascii_uppercase(),
            ] {
                let parsed = HeaderName::parse(&written);
                assert!(!matches!(parsed, HeaderName::Other(_)), "{written}");
                assert_eq!(parsed.as_str(), name);
            }
        }
        assert_eq!(HeaderName::parse(""), HeaderName::Other("".into()));
        assert_eq!(
            HeaderName::parse("X-Via"),
            HeaderName::Other("X-Via".into())
        );
        assert_eq!(HeaderName::parse("v"), HeaderName::Via);
        // Near misses (one byte changed, one more or one less) are other names, unless they
        // spell a known name: the lookup by length and first letter finds exactly the names
        // a comparison with every known name finds.
        let mut written: Vec<String> = Vec::new();
        for name in names {
            let lower = name.to_ascii_lowercase();
            written.push(format!("{lower}s"));
            written.push(format!("x{lower}"));
            written.push(lower[1..].to_owned());
            written.push(lower[..lower.len() - 1].to_owned());
            for i in 0..lower.len() {
                for c in ['a', 'c', 'e', 'r', 's', '-', 'Z'] {
                    let mut w = lower.clone().into_bytes();
                    w[i] = c as u8;
                    written.push(String::from_utf8(w).unwrap());
                }
            }
        }
        // (One-letter names are the compact forms, checked above.)
        for w in written.into_iter().filter(|w| w.len() > 1) {
            let expected = names
                .iter()
                .find(|n| n.eq_ignore_ascii_case(&w))
                .map_or_else(
                    || HeaderName::Other(w.as_str().into()),
                    |n| HeaderName::parse(n),
                );
            assert_eq!(HeaderName::parse(&w), expected, "{w}");
        }
    }
}
