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
        // Candidates by first letter, then by length, before comparing text.
        let first = name.first().map_or(0, u8::to_ascii_lowercase);
        let candidates: &[(&str, HeaderName)] = match first {
            b'a' => &[
                ("authorization", Authorization),
                ("allow", Allow),
                ("accept", Accept),
                ("accept-contact", AcceptContact),
                ("allow-events", AllowEvents),
            ],
            b'c' => &[
                ("call-id", CallId),
                ("cseq", CSeq),
                ("content-length", ContentLength),
                ("contact", Contact),
                ("content-type", ContentType),
                ("content-encoding", ContentEncoding),
            ],
            b'd' => &[("date", Date)],
            b'e' => &[("expires", Expires), ("event", Event)],
            b'f' => &[("from", From)],
            b'm' => &[("max-forwards", MaxForwards), ("min-expires", MinExpires)],
            b'p' => &[
                ("proxy-authorization", ProxyAuthorization),
                ("proxy-authenticate", ProxyAuthenticate),
                ("proxy-require", ProxyRequire),
                ("path", Path),
            ],
            b'r' => &[
                ("route", Route),
                ("record-route", RecordRoute),
                ("require", Require),
                ("retry-after", RetryAfter),
                ("refer-to", ReferTo),
                ("referred-by", ReferredBy),
            ],
            b's' => &[
                ("supported", Supported),
                ("server", Server),
                ("sip-etag", SipEtag),
                ("sip-if-match", SipIfMatch),
                ("subscription-state", SubscriptionState),
                ("session-expires", SessionExpires),
                ("subject", Subject),
            ],
            b't' => &[("to", To)],
            b'u' => &[("user-agent", UserAgent), ("unsupported", Unsupported)],
            b'v' => &[("via", Via)],
            b'w' => &[("www-authenticate", WwwAuthenticate), ("warning", Warning)],
            _ => &[],
        };
        let candidates = candidates
            .iter()
            .filter(|(text, _)| text.len() == name.len());
        // Nearly every client writes the canonical form: a plain comparison first, case
        // folding (a visible share of a REGISTER's instructions) only for other spellings.
        if let Some((_, known)) = candidates
            .clone()
            .find(|(_, known)| known.as_str().as_bytes() == name)
        {
            return Some(known.clone());
        }
        candidates
            .into_iter()
            .find(|(text, _)| text.as_bytes().eq_ignore_ascii_case(name))
            .map(|(_, known)| known.clone())
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

    /// Compares with another name the way SIP does (compact forms and case folded).
    // Inlined, and known names compared by variant alone: every header lookup calls this once
    // per field of the message (about 50 lookups per REGISTER, bench/NOTES.md).
    #[inline]
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

    #[test]
    fn every_known_name_resolves_in_any_case() {
        let names = [
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
    }
}
