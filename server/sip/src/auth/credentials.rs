//! Parsing the value of an `Authorization` / `Proxy-Authorization` header (RFC 3261 §25.1
//! `credentials`, RFC 7616 §3.4) into borrowed [`Credentials`].

use std::borrow::Cow;
use std::fmt;

use super::algorithm::Algorithm;
use super::error::AuthError;

/// A digest parameter name, as carried by [`AuthError::DuplicateParam`] and
/// [`AuthError::MissingParam`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Param {
    /// `username`
    Username,
    /// `realm`
    Realm,
    /// `nonce`
    Nonce,
    /// `uri` (the digest-uri)
    Uri,
    /// `response`
    Response,
    /// `algorithm`
    Algorithm,
    /// `cnonce`
    Cnonce,
    /// `qop`
    Qop,
    /// `nc` (nonce count)
    Nc,
    /// `opaque`
    Opaque,
}

impl Param {
    /// The parameter name as written on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Username => "username",
            Self::Realm => "realm",
            Self::Nonce => "nonce",
            Self::Uri => "uri",
            Self::Response => "response",
            Self::Algorithm => "algorithm",
            Self::Cnonce => "cnonce",
            Self::Qop => "qop",
            Self::Nc => "nc",
            Self::Opaque => "opaque",
        }
    }

    #[cfg(test)]
    const ALL: [Param; 10] = [
        Self::Username,
        Self::Realm,
        Self::Nonce,
        Self::Uri,
        Self::Response,
        Self::Algorithm,
        Self::Cnonce,
        Self::Qop,
        Self::Nc,
        Self::Opaque,
    ];

    fn from_name(name: &[u8]) -> Option<Self> {
        // The lowercase spellings every client writes, compared as whole words (a byte-by-byte
        // case fold of every name was ~10% of a parse); any other case takes the fold below.
        match name {
            b"username" => return Some(Self::Username),
            b"realm" => return Some(Self::Realm),
            b"nonce" => return Some(Self::Nonce),
            b"uri" => return Some(Self::Uri),
            b"response" => return Some(Self::Response),
            b"algorithm" => return Some(Self::Algorithm),
            b"cnonce" => return Some(Self::Cnonce),
            b"qop" => return Some(Self::Qop),
            b"nc" => return Some(Self::Nc),
            b"opaque" => return Some(Self::Opaque),
            _ => {}
        }
        // By length first: at most two names share one, so one or two comparisons.
        let candidates: &[Param] = match name.len() {
            2 => &[Self::Nc],
            3 => &[Self::Uri, Self::Qop],
            5 => &[Self::Realm, Self::Nonce],
            6 => &[Self::Cnonce, Self::Opaque],
            8 => &[Self::Username, Self::Response],
            9 => &[Self::Algorithm],
            _ => &[],
        };
        candidates
            .iter()
            .copied()
            .find(|param| name.eq_ignore_ascii_case(param.as_str().as_bytes()))
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The quality of protection a client chose (RFC 7616 §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qop {
    /// `auth`: the response covers method and digest-uri. The only one we offer.
    Auth,
    /// `auth-int`: the response also covers the message body. Verified if a client uses it,
    /// never offered, because SIPml5 picks it whenever it is offered.
    AuthInt,
}

impl Qop {
    /// The token as written on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::AuthInt => "auth-int",
        }
    }
}

/// Digest credentials borrowed from one `Authorization` / `Proxy-Authorization` header value.
///
/// Values are unquoted; a quoted string is unescaped only when it contains a backslash, so the
/// usual header parses without allocating. Parameter names are matched ignoring case, in any
/// order; unknown parameters (`userhash`, `username*`, vendor extensions) are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials<'a> {
    username: Cow<'a, str>,
    realm: Cow<'a, str>,
    nonce: Cow<'a, str>,
    uri: Cow<'a, str>,
    response: Cow<'a, str>,
    algorithm: Algorithm,
    cnonce: Option<Cow<'a, str>>,
    // The response hash covers `qop` and `nc` exactly as the client wrote them, so keep the text.
    qop: Option<(Qop, &'a str)>,
    nc: Option<(u32, &'a str)>,
    opaque: Option<Cow<'a, str>>,
}

impl<'a> Credentials<'a> {
    /// Parses a header value: the text after `Authorization:` or `Proxy-Authorization:`.
    ///
    /// Linear LWS, including an obsolete line fold (CRLF followed by a space), is allowed around
    /// the scheme, names, `=` and commas; empty list elements are skipped. Values may be tokens or
    /// quoted strings whatever the RFC says for that parameter, because clients disagree. Errors
    /// are described on [`AuthError`]; this never panics.
    pub fn parse(value: &'a str) -> Result<Self, AuthError> {
        let mut cursor = Cursor {
            text: value,
            pos: 0,
        };
        cursor.skip_lws();
        if cursor.at_end() {
            return Err(AuthError::Empty);
        }
        let scheme = cursor.take_while(is_token);
        if scheme.is_empty() {
            return Err(AuthError::BadParamSyntax);
        }
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(AuthError::NotDigest);
        }
        if !cursor.at_end() && !cursor.peek().is_some_and(is_lws) {
            return Err(AuthError::BadParamSyntax);
        }

        let mut fields = Fields::default();
        loop {
            cursor.skip_lws();
            while cursor.peek() == Some(b',') {
                cursor.pos += 1;
                cursor.skip_lws();
            }
            if cursor.at_end() {
                break;
            }
            let name = cursor.take_bytes_while(is_token);
            if name.is_empty() {
                return Err(AuthError::BadParamSyntax);
            }
            cursor.skip_lws();
            if cursor.peek() != Some(b'=') {
                return Err(AuthError::BadParamSyntax);
            }
            cursor.pos += 1;
            cursor.skip_lws();
            let value = cursor.value()?;
            if let Some(param) = Param::from_name(name) {
                fields.set(param, value)?;
            }
            cursor.skip_lws();
            match cursor.peek() {
                None => break,
                Some(b',') => cursor.pos += 1,
                Some(_) => return Err(AuthError::BadParamSyntax),
            }
        }
        fields.finish()
    }

    /// `username`: the digest identity (SIPml5's `impi`), unescaped.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// `realm`, unescaped. The caller checks it is one of its own before anything else.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// `nonce`, unescaped: pass it to [`NonceIssuer::check`](super::NonceIssuer::check).
    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// `uri`, the digest-uri. It must name the Request-URI; comparing them is the caller's job
    /// because URI equality belongs to the message model.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// `response`, as sent (normally lowercase hex).
    pub fn response(&self) -> &str {
        &self.response
    }

    /// `algorithm`, [`Algorithm::Md5`] when absent. Pick the stored HA1 with it.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// `cnonce`, present whenever [`Self::qop`] is.
    pub fn cnonce(&self) -> Option<&str> {
        self.cnonce.as_deref()
    }

    /// `qop`; `None` means RFC 2069 compatibility mode (no cnonce, no nonce count).
    pub fn qop(&self) -> Option<Qop> {
        self.qop.map(|(qop, _)| qop)
    }

    /// `nc`, the nonce count. `Some` exactly when [`Self::qop`] is: without qop the count is
    /// meaningless (RFC 7616 §3.4), so a stray `nc` is ignored. Pass this to
    /// [`NonceCounts::accept`](super::NonceCounts::accept).
    pub fn nc(&self) -> Option<u32> {
        self.nc.map(|(nc, _)| nc)
    }

    /// `opaque`, echoed from the challenge.
    pub fn opaque(&self) -> Option<&str> {
        self.opaque.as_deref()
    }

    /// True for credentials that cannot answer any challenge: an empty `nonce` or `response`.
    ///
    /// SIPml5 with `enable_early_ims: false` (IMS style, 3GPP TS 24.229) opens with
    /// `Digest username="alice",realm="…",nonce="",uri="…",response=""` before it has seen a
    /// challenge. Such credentials are not an attack and not an error: ignore them and challenge,
    /// without `stale`.
    pub fn is_empty(&self) -> bool {
        self.nonce.is_empty() || self.response.is_empty()
    }

    /// The `qop` text as sent, for the response hash.
    pub(super) fn qop_text(&self) -> Option<&str> {
        self.qop.map(|(_, text)| text)
    }

    /// The `nc` text as sent, for the response hash.
    pub(super) fn nc_text(&self) -> Option<&str> {
        self.nc.map(|(_, text)| text)
    }
}

/// Parameters seen so far; `Some` twice is a duplicate.
#[derive(Default)]
struct Fields<'a> {
    username: Option<Cow<'a, str>>,
    realm: Option<Cow<'a, str>>,
    nonce: Option<Cow<'a, str>>,
    uri: Option<Cow<'a, str>>,
    response: Option<Cow<'a, str>>,
    algorithm: Option<Algorithm>,
    cnonce: Option<Cow<'a, str>>,
    qop: Option<(Qop, &'a str)>,
    nc: Option<(u32, &'a str)>,
    opaque: Option<Cow<'a, str>>,
}

impl<'a> Fields<'a> {
    fn set(&mut self, param: Param, value: Cow<'a, str>) -> Result<(), AuthError> {
        fn put<T>(slot: &mut Option<T>, param: Param, value: T) -> Result<(), AuthError> {
            if slot.is_some() {
                return Err(AuthError::DuplicateParam(param));
            }
            *slot = Some(value);
            Ok(())
        }
        match param {
            Param::Username => put(&mut self.username, param, value),
            Param::Realm => put(&mut self.realm, param, value),
            Param::Nonce => put(&mut self.nonce, param, value),
            Param::Uri => put(&mut self.uri, param, value),
            Param::Response => put(&mut self.response, param, value),
            Param::Cnonce => put(&mut self.cnonce, param, value),
            Param::Opaque => put(&mut self.opaque, param, value),
            Param::Algorithm => {
                if self.algorithm.is_some() {
                    return Err(AuthError::DuplicateParam(param));
                }
                put(&mut self.algorithm, param, Algorithm::parse(&value)?)
            }
            Param::Qop => {
                if self.qop.is_some() {
                    return Err(AuthError::DuplicateParam(param));
                }
                // An escaped qop is not one the client can have hashed meaningfully.
                let Cow::Borrowed(text) = value else {
                    return Err(AuthError::UnsupportedQop);
                };
                let qop = if text.eq_ignore_ascii_case("auth") {
                    Qop::Auth
                } else if text.eq_ignore_ascii_case("auth-int") {
                    Qop::AuthInt
                } else {
                    return Err(AuthError::UnsupportedQop);
                };
                put(&mut self.qop, param, (qop, text))
            }
            Param::Nc => {
                if self.nc.is_some() {
                    return Err(AuthError::DuplicateParam(param));
                }
                let Cow::Borrowed(text) = value else {
                    return Err(AuthError::InvalidNonceCount);
                };
                put(&mut self.nc, param, (parse_nc(text)?, text))
            }
        }
    }

    fn finish(self) -> Result<Credentials<'a>, AuthError> {
        let missing = AuthError::MissingParam;
        let qop = self.qop;
        let (cnonce, nc) = match qop {
            Some(_) => (
                Some(self.cnonce.ok_or(missing(Param::Cnonce))?),
                Some(self.nc.ok_or(missing(Param::Nc))?),
            ),
            None => (self.cnonce, None),
        };
        Ok(Credentials {
            username: self.username.ok_or(missing(Param::Username))?,
            realm: self.realm.ok_or(missing(Param::Realm))?,
            nonce: self.nonce.ok_or(missing(Param::Nonce))?,
            uri: self.uri.ok_or(missing(Param::Uri))?,
            response: self.response.ok_or(missing(Param::Response))?,
            algorithm: self.algorithm.unwrap_or_default(),
            cnonce,
            qop,
            nc,
            opaque: self.opaque,
        })
    }
}

/// `nc-value = 8LHEX` (RFC 7616 §3.4); any case and one to eight digits are tolerated.
fn parse_nc(text: &str) -> Result<u32, AuthError> {
    if text.is_empty() || text.len() > 8 {
        return Err(AuthError::InvalidNonceCount);
    }
    text.bytes().try_fold(0u32, |acc, c| {
        super::hex::digit(c)
            .map(|d| (acc << 4) | u32::from(d))
            .ok_or(AuthError::InvalidNonceCount)
    })
}

/// RFC 3261 §25.1 `token` characters, one table lookup per byte.
fn is_token(c: u8) -> bool {
    const TOKEN: [bool; 256] = {
        let mut table = [false; 256];
        let mut c = 0;
        while c < 256 {
            let b = c as u8;
            table[c] = b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
                );
            c += 1;
        }
        table
    };
    TOKEN[usize::from(c)]
}

/// Whitespace that may appear in LWS. CR and LF only ever arrive as part of a fold, since the
/// message parser split header lines already.
fn is_lws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// Characters of an unquoted value. Wider than `token` so that clients which forget to quote a
/// `uri` or `cnonce` (`:`, `/`, `@`, `=`) still parse; the digest decides whether they are right.
fn is_bare_value(c: u8) -> bool {
    c.is_ascii_graphic() && c != b',' && c != b'"'
}

struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_lws(&mut self) {
        while self.peek().is_some_and(is_lws) {
            self.pos += 1;
        }
    }

    /// Consumes ASCII bytes matching `pred`; always stops on a char boundary since `pred` only
    /// accepts ASCII.
    fn take_while(&mut self, pred: fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(pred) {
            self.pos += 1;
        }
        self.text.get(start..self.pos).unwrap_or_default()
    }

    /// [`Cursor::take_while`] as bytes, for names (compared, never kept as text).
    fn take_bytes_while(&mut self, pred: fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(pred) {
            self.pos += 1;
        }
        self.text
            .as_bytes()
            .get(start..self.pos)
            .unwrap_or_default()
    }

    /// A quoted string (unescaped) or a bare value.
    fn value(&mut self) -> Result<Cow<'a, str>, AuthError> {
        if self.peek() != Some(b'"') {
            let bare = self.take_while(is_bare_value);
            if bare.is_empty() {
                return Err(AuthError::BadParamSyntax);
            }
            return Ok(Cow::Borrowed(bare));
        }
        let bytes = self.text.as_bytes();
        let start = self.pos + 1;
        let mut i = start;
        let mut escaped = false;
        // `"` and `\` are ASCII and never occur inside a multi-byte UTF-8 sequence, so scanning
        // bytes is safe and every index we slice at is a char boundary. memchr jumps over the
        // ordinary bytes between them (a nonce, a response hash).
        loop {
            let Some(at) = bytes
                .get(i..)
                .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
            else {
                return Err(AuthError::UnterminatedQuote);
            };
            i += at;
            if bytes[i] == b'"' {
                break;
            }
            if i + 1 >= bytes.len() {
                return Err(AuthError::UnterminatedQuote);
            }
            escaped = true;
            i += 2;
        }
        self.pos = i + 1;
        let raw = self.text.get(start..i).ok_or(AuthError::BadParamSyntax)?;
        if !escaped {
            return Ok(Cow::Borrowed(raw));
        }
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                out.extend(chars.next());
            } else {
                out.push(c);
            }
        }
        Ok(Cow::Owned(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parameter_name_is_known_in_any_case_and_no_other() {
        for param in Param::ALL {
            let name = param.as_str();
            assert_eq!(Param::from_name(name.as_bytes()), Some(param));
            assert_eq!(
                Param::from_name(name.to_ascii_uppercase().as_bytes()),
                Some(param)
            );
            let capitalized = format!("{}{}", name[..1].to_ascii_uppercase(), &name[1..]);
            assert_eq!(Param::from_name(capitalized.as_bytes()), Some(param));
            assert_eq!(Param::from_name(format!("{name}x").as_bytes()), None);
            assert_eq!(
                Param::from_name(format!("z{}", &name[1..]).as_bytes()),
                None
            );
        }
        for other in ["", "userhash", "username*", "stale", "domain", "n"] {
            assert_eq!(Param::from_name(other.as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn token_characters_are_rfc_3261s() {
        let expected: Vec<u8> = (0u8..=255)
            .filter(|c| c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(c))
            .collect();
        let ours: Vec<u8> = (0u8..=255).filter(|&c| is_token(c)).collect();
        assert_eq!(ours, expected);
    }

    const SIPML5: &str = "Digest username=\"alice\",realm=\"example.test\",nonce=\"abc\",uri=\"sip:example.test\",response=\"b63d\",algorithm=MD5,cnonce=\"8511\",qop=auth,nc=00000001";

    #[test]
    fn parses_sipml5_shape_without_allocating() {
        let c = Credentials::parse(SIPML5).unwrap();
        assert_eq!(c.username(), "alice");
        assert_eq!(c.realm(), "example.test");
        assert_eq!(c.nonce(), "abc");
        assert_eq!(c.uri(), "sip:example.test");
        assert_eq!(c.response(), "b63d");
        assert_eq!(c.algorithm(), Algorithm::Md5);
        assert_eq!(c.cnonce(), Some("8511"));
        assert_eq!(c.qop(), Some(Qop::Auth));
        assert_eq!(c.nc(), Some(1));
        assert_eq!(c.nc_text(), Some("00000001"));
        assert_eq!(c.opaque(), None);
        assert!(!c.is_empty());
        assert!(matches!(c.username, Cow::Borrowed(_)));
        assert!(matches!(c.uri, Cow::Borrowed(_)));
    }

    #[test]
    fn tolerates_lws_folding_order_case_and_unknown_params() {
        let v =
            "  dIgEsT\r\n  NC = 0000000a ,\tQop=\"auth\" , Response=\"ff\",\r\n uri=\"sip:x\" ,,\
                 userhash=false, realm=\"r\",nonce=\"n\" , username = \"bob\" ,cnonce=c0, \
                 x-vendor=\"a,b=c\", ";
        let c = Credentials::parse(v).unwrap();
        assert_eq!(c.username(), "bob");
        assert_eq!(c.nc(), Some(10));
        assert_eq!(c.nc_text(), Some("0000000a"));
        assert_eq!(c.qop_text(), Some("auth"));
        assert_eq!(c.cnonce(), Some("c0"));
        assert_eq!(c.uri(), "sip:x");
    }

    #[test]
    fn unescapes_quoted_pairs() {
        let v = r#"Digest username="al\"ice\\",realm="ré\alm",nonce="n",uri="u",response="r""#;
        let c = Credentials::parse(v).unwrap();
        assert_eq!(c.username(), "al\"ice\\");
        assert_eq!(c.realm(), "réalm");
        assert!(matches!(c.username, Cow::Owned(_)));
        assert!(matches!(c.nonce, Cow::Borrowed(_)));
    }

    #[test]
    fn quoted_values_read_the_same_at_any_length() {
        // Escapes and the closing quote anywhere in short and long values.
        for len in 0..60 {
            for at in 0..=len {
                let (a, b) = ("a".repeat(at), "é".repeat(len - at));
                let v = format!(
                    r#"Digest username="{a}\"{b}",realm="r",nonce="{b}{a}",uri="u",response="r""#
                );
                let c = Credentials::parse(&v).unwrap();
                assert_eq!(c.username(), format!("{a}\"{b}"), "{v}");
                assert_eq!(c.nonce(), format!("{b}{a}"), "{v}");
                let open =
                    format!(r#"Digest username="u",realm="r",nonce="n",uri="u",response="{a}{b}"#);
                assert_eq!(Credentials::parse(&open), Err(AuthError::UnterminatedQuote));
                let trailing = format!("{open}\\");
                assert_eq!(
                    Credentials::parse(&trailing),
                    Err(AuthError::UnterminatedQuote)
                );
            }
        }
    }

    #[test]
    fn other_scheme_asks_for_a_challenge() {
        // RFC 4475 §3.3.7 regaut01.
        let err = Credentials::parse("NoOneKnowsThisScheme opaque-data=here").unwrap_err();
        assert_eq!(err, AuthError::NotDigest);
        assert!(err.should_challenge());
        assert_eq!(
            Credentials::parse("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
            Err(AuthError::NotDigest)
        );
        assert_eq!(
            Credentials::parse("Digestive x=y"),
            Err(AuthError::NotDigest)
        );
    }

    #[test]
    fn ims_empty_credentials_parse_and_are_empty() {
        let v = r#"Digest username="alice",realm="example.test",nonce="",uri="sip:example.test",response="""#;
        let c = Credentials::parse(v).unwrap();
        assert!(c.is_empty());
        assert_eq!(c.qop(), None);
        assert_eq!(c.nc(), None);
    }

    #[test]
    fn errors_are_precise() {
        use AuthError::*;
        let base = r#"username="a",realm="r",nonce="n",uri="u",response="x""#;
        let cases: &[(String, AuthError)] = &[
            (String::new(), Empty),
            (" \r\n ".into(), Empty),
            ("\"Digest\" a=b".into(), BadParamSyntax),
            ("Digest,username=\"a\"".into(), BadParamSyntax),
            (
                format!("Digest {base},username=\"b\""),
                DuplicateParam(Param::Username),
            ),
            (
                format!("Digest {base},NC=1,nc=2,qop=auth,cnonce=c"),
                DuplicateParam(Param::Nc),
            ),
            (
                format!("Digest {base},algorithm=MD5,Algorithm=MD5"),
                DuplicateParam(Param::Algorithm),
            ),
            (
                format!("Digest {base},qop=auth,qop=auth"),
                DuplicateParam(Param::Qop),
            ),
            (
                "Digest realm=\"r\",nonce=\"n\",uri=\"u\",response=\"x\"".into(),
                MissingParam(Param::Username),
            ),
            (
                "Digest username=\"a\",realm=\"r\",nonce=\"n\",uri=\"u\"".into(),
                MissingParam(Param::Response),
            ),
            ("Digest".into(), MissingParam(Param::Username)),
            (
                format!("Digest {base},qop=auth,nc=1"),
                MissingParam(Param::Cnonce),
            ),
            (
                format!("Digest {base},qop=auth,cnonce=c"),
                MissingParam(Param::Nc),
            ),
            (
                format!("Digest {base},qop=auth,cnonce=c,nc=123456789"),
                InvalidNonceCount,
            ),
            (
                format!("Digest {base},qop=auth,cnonce=c,nc=+1"),
                InvalidNonceCount,
            ),
            (
                format!("Digest {base},qop=auth,cnonce=c,nc=\"1\\1\""),
                InvalidNonceCount,
            ),
            (
                format!("Digest {base},qop=auth-conf,cnonce=c,nc=1"),
                UnsupportedQop,
            ),
            (
                format!("Digest {base},qop=\"auth,auth-int\",cnonce=c,nc=1"),
                UnsupportedQop,
            ),
            (
                format!("Digest {base},algorithm=MD5-sess"),
                UnsupportedAlgorithm,
            ),
            (
                format!("Digest {base},algorithm=\"SHA-256-sess\""),
                UnsupportedAlgorithm,
            ),
            (format!("Digest {base},algorithm=ROT13"), UnknownAlgorithm),
            (format!("Digest {base},opaque=\"r"), UnterminatedQuote),
            (format!("Digest {base},opaque=\"r\\"), UnterminatedQuote),
            (format!("Digest {base},opaque="), BadParamSyntax),
            (format!("Digest {base},opaque"), BadParamSyntax),
            (format!("Digest {base} opaque=x"), BadParamSyntax),
            (format!("Digest {base},=x"), BadParamSyntax),
            (format!("Digest {base},opaque=\"a\"b"), BadParamSyntax),
            (format!("Digest {base},opaque=é"), BadParamSyntax),
        ];
        for (value, want) in cases {
            assert_eq!(Credentials::parse(value).as_ref(), Err(want), "{value:?}");
            assert_eq!(
                want.should_challenge(),
                matches!(
                    want,
                    NotDigest | UnsupportedQop | UnsupportedAlgorithm | UnknownAlgorithm
                )
            );
        }
    }

    #[test]
    fn qop_absent_ignores_nc_and_reads_sha256() {
        let v = r#"Digest username="a",realm="r",nonce="n",uri="u",response="x",nc=00000001,algorithm=sha-256"#;
        let c = Credentials::parse(v).unwrap();
        assert_eq!(c.nc(), None);
        assert_eq!(c.algorithm(), Algorithm::Sha256);
    }
}
