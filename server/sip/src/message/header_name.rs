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
        use HeaderName::*;
        if name.len() == 1 {
            return match name.as_bytes()[0].to_ascii_lowercase() {
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
                _ => Other(name.into()),
            };
        }
        const KNOWN: &[(&str, HeaderName)] = &[
            ("via", Via),
            ("from", From),
            ("to", To),
            ("call-id", CallId),
            ("cseq", CSeq),
            ("content-length", ContentLength),
            ("max-forwards", MaxForwards),
            ("contact", Contact),
            ("route", Route),
            ("record-route", RecordRoute),
            ("content-type", ContentType),
            ("expires", Expires),
            ("authorization", Authorization),
            ("proxy-authorization", ProxyAuthorization),
            ("www-authenticate", WwwAuthenticate),
            ("proxy-authenticate", ProxyAuthenticate),
            ("user-agent", UserAgent),
            ("supported", Supported),
            ("require", Require),
            ("proxy-require", ProxyRequire),
            ("unsupported", Unsupported),
            ("allow", Allow),
            ("accept", Accept),
            ("event", Event),
            ("min-expires", MinExpires),
            ("path", Path),
            ("server", Server),
            ("sip-etag", SipEtag),
            ("sip-if-match", SipIfMatch),
            ("subscription-state", SubscriptionState),
            ("date", Date),
            ("retry-after", RetryAfter),
            ("accept-contact", AcceptContact),
            ("allow-events", AllowEvents),
            ("content-encoding", ContentEncoding),
            ("refer-to", ReferTo),
            ("referred-by", ReferredBy),
            ("session-expires", SessionExpires),
            ("subject", Subject),
            ("warning", Warning),
        ];
        for (text, known) in KNOWN {
            if text.len() == name.len() && text.eq_ignore_ascii_case(name) {
                return known.clone();
            }
        }
        Other(name.into())
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
    pub fn matches(&self, other: &HeaderName) -> bool {
        match (self, other) {
            (HeaderName::Other(a), HeaderName::Other(b)) => a.eq_ignore_ascii_case(b),
            _ => self == other,
        }
    }
}

impl std::fmt::Display for HeaderName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
