//! SIP and SIPS URIs (RFC 3261 §19.1), borrowed from message text.

use crate::headers::{parse_port, split_host_port};
use crate::syntax::{self, find_param, is_host_char};

/// The scheme of a URI Huddle can route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
}

/// Why a URI could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// Not `sip:` or `sips:` (answered `416 Unsupported URI Scheme` for a Request-URI).
    #[error("unsupported URI scheme")]
    UnsupportedScheme,
    /// A sip/sips URI that does not follow the grammar.
    #[error("malformed SIP URI")]
    Malformed,
}

/// A parsed `sip:`/`sips:` URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipUri<'a> {
    pub scheme: Scheme,
    /// The user part as written (may contain escapes and `;`).
    pub user: Option<&'a str>,
    /// Host (IPv6 with brackets).
    pub host: &'a str,
    pub port: Option<u16>,
    /// URI parameters starting at the first `;` (may be empty).
    pub params: &'a str,
    /// The `?headers` part without the `?`.
    pub headers: Option<&'a str>,
}

impl<'a> SipUri<'a> {
    /// Parses `uri`.
    pub fn parse(uri: &'a str) -> Result<SipUri<'a>, UriError> {
        match SipUri::parse_plain(uri) {
            Some(parsed) => Ok(parsed),
            None => SipUri::parse_general(uri),
        }
    }

    /// The usual URI in one pass: `sip:` or `sips:` in any case, an optional user of
    /// unreserved and escaped characters (no `:`, `;`, `?`) before `@`, a name or IPv4 host, an
    /// optional port, then plain parameters (`syntax::plain_param`), nothing else. `None` for
    /// anything else, which [`SipUri::parse_general`] reads: it reads these the same way (test
    /// `plain_uris_read_as_the_general_path`). Every byte here is one the general path's
    /// checks accept, and none is an `@` after the user's, nor a `?`.
    fn parse_plain(uri: &'a str) -> Option<SipUri<'a>> {
        let b = uri.as_bytes();
        // The lowercase scheme by a word compare first; any other case by the fold.
        let (scheme, start) = match b.get(..4)? {
            b"sip:" => (Scheme::Sip, 4),
            p if p.eq_ignore_ascii_case(b"sip:") => (Scheme::Sip, 4),
            _ => match b.get(..5)? {
                b"sips:" => (Scheme::Sips, 5),
                p if p.eq_ignore_ascii_case(b"sips:") => (Scheme::Sips, 5),
                _ => return None,
            },
        };
        let i = syntax::run_end(b, start, is_plain_user_char);
        let (user, host_start) = match b.get(i) {
            Some(b'@') if i > start => (Some(&uri[start..i]), i + 1),
            Some(b'@') => return None,
            _ => (None, start),
        };
        let mut i = syntax::run_end(b, host_start, is_host_char);
        if i == host_start {
            return None;
        }
        let host = &uri[host_start..i];
        let port = if b.get(i) == Some(&b':') {
            let digits = i + 1;
            i = syntax::run_end(b, digits, |c| c.is_ascii_digit());
            Some(parse_port(&uri[digits..i])?)
        } else {
            None
        };
        let params = &uri[i..];
        let mut rest = match b.get(i) {
            None => None,
            Some(b';') => Some(&params[1..]),
            Some(_) => return None,
        };
        while let Some(text) = rest {
            rest = syntax::plain_param(text)?.1;
        }
        Some(SipUri {
            scheme,
            user,
            host,
            port,
            params,
            headers: None,
        })
    }

    fn parse_general(uri: &'a str) -> Result<SipUri<'a>, UriError> {
        let (scheme_text, rest) = syntax::split_at_byte(uri, b':').ok_or(UriError::Malformed)?;
        let scheme = if scheme_text.eq_ignore_ascii_case("sip") {
            Scheme::Sip
        } else if scheme_text.eq_ignore_ascii_case("sips") {
            Scheme::Sips
        } else {
            return Err(UriError::UnsupportedScheme);
        };
        if rest
            .bytes()
            .any(|b| b <= b' ' || b == b'<' || b == b'>' || b == b'"')
        {
            return Err(UriError::Malformed);
        }
        // The user part may contain `?` and `;` but never a bare `@`, so the first `@` ends it;
        // only then does `?` start the headers (RFC 4475 §3.1.1.2).
        let (user, hostpart) = match syntax::find_byte(rest, b'@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        if user.is_some_and(str::is_empty) {
            return Err(UriError::Malformed);
        }
        let (hostpart, headers) = match syntax::split_at_byte(hostpart, b'?') {
            Some((r, h)) => (r, Some(h)),
            None => (hostpart, None),
        };
        let (hostport, params) = match syntax::find_byte(hostpart, b';') {
            Some(i) => (&hostpart[..i], &hostpart[i..]),
            None => (hostpart, ""),
        };
        let (host, port) = split_host_port(hostport).ok_or(UriError::Malformed)?;
        for p in syntax::params(params) {
            if p.name.is_empty() {
                return Err(UriError::Malformed);
            }
        }
        Ok(SipUri {
            scheme,
            user,
            host,
            port,
            params,
            headers,
        })
    }

    /// A URI parameter.
    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        find_param(self.params, name)
    }

    /// The `transport` parameter.
    pub fn transport(&self) -> Option<&'a str> {
        self.param("transport").flatten()
    }

    /// True when the URI carries `lr` (loose routing).
    pub fn is_loose_route(&self) -> bool {
        self.param("lr").is_some()
    }

    /// The user part without URI-parameters embedded in it, unescaped.
    pub fn user_unescaped(&self) -> Option<String> {
        self.user_decoded().map(std::borrow::Cow::into_owned)
    }

    /// [`Self::user_unescaped`] borrowed from the URI text when it has no `%` escape (the usual
    /// case), so comparing or looking up a user does not allocate.
    pub fn user_decoded(&self) -> Option<std::borrow::Cow<'a, str>> {
        self.user.map(|u| {
            let user = u.split(':').next().unwrap_or(u);
            if user.contains('%') {
                std::borrow::Cow::Owned(percent_decode(user))
            } else {
                std::borrow::Cow::Borrowed(user)
            }
        })
    }

    /// `user@host` with the user unescaped and the host lowercased: the address-of-record key.
    pub fn aor(&self) -> String {
        let host = self.host.to_ascii_lowercase();
        match self.user_unescaped() {
            Some(user) => format!("{user}@{host}"),
            None => host,
        }
    }
}

/// User characters of [`SipUri::parse_plain`]: RFC 3261 `unreserved`, `%` of `escaped`, and
/// the `user-unreserved` ones but `;` and `?`.
fn is_plain_user_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_'
                | b'.'
                | b'!'
                | b'~'
                | b'*'
                | b'\''
                | b'('
                | b')'
                | b'%'
                | b'&'
                | b'='
                | b'+'
                | b'$'
                | b','
                | b'/'
        )
}

/// Resolves `%XX` escapes; invalid escapes are kept as written.
pub fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_uris_read_as_the_general_path() {
        let inputs = crate::syntax::tests::mutations(&[
            "sip:user17@huddle.test",
            "SIPS:alice@127.0.0.1:5061;transport=tls;lr",
            "sip:huddle.test:5060;maddr=[::1]",
            "sip:a.b-c_d@h;x",
            "sip:user;par=u%40example.net@example.com?h=v",
            "sips:[::1]:5061;lr",
            "tel:+1",
        ]);
        let mut plain = 0;
        for s in &inputs {
            if let Some(uri) = SipUri::parse_plain(s) {
                plain += 1;
                assert_eq!(Ok(uri), SipUri::parse_general(s), "{s:?}");
            }
        }
        assert!(plain > inputs.len() / 4, "{plain} of {}", inputs.len());
    }

    #[test]
    fn parses_common_uris() {
        let u =
            SipUri::parse("sip:alice@df7jal23ls0d.invalid;rtcweb-breaker=no;transport=ws").unwrap();
        assert_eq!(u.user, Some("alice"));
        assert_eq!(u.host, "df7jal23ls0d.invalid");
        assert_eq!(u.transport(), Some("ws"));
        let u = SipUri::parse("sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.host, "example.com");
        let u = SipUri::parse("sips:[::1]:5061;lr").unwrap();
        assert_eq!(
            (u.host, u.port, u.is_loose_route()),
            ("[::1]", Some(5061), true)
        );
        assert_eq!(
            SipUri::parse("tel:+1").unwrap_err(),
            UriError::UnsupportedScheme
        );
        assert_eq!(
            SipUri::parse("sip:null-%00-null@example.com")
                .unwrap()
                .aor(),
            "null-\0-null@example.com"
        );
        assert!(SipUri::parse("sip:a@b c").is_err());
    }
}
