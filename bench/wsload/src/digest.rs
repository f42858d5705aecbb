//! Client side of SIP digest authentication as SIPml5 does it: MD5 only, `qop=auth` when offered
//! (RFC 2069 mode otherwise), `nc` counting up while the nonce stays the same, a new `cnonce` per
//! nonce, `opaque` echoed. The server side lives in `huddle_sip::auth`; a challenge parser is all
//! the client needs that it does not have.

use std::fmt::Write as _;

use md5::{Digest as _, Md5};

/// What a `WWW-Authenticate` / `Proxy-Authenticate` value asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    /// `qop` lists `auth`.
    pub qop_auth: bool,
    pub stale: bool,
}

/// Parses `Digest realm="…",nonce="…",…`; `None` for another scheme or a value without realm and
/// nonce. Never panics on odd input (it comes off the wire).
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim_start();
    let scheme_end = value.find(|c: char| c.is_ascii_whitespace())?;
    if !value[..scheme_end].eq_ignore_ascii_case("Digest") {
        return None;
    }
    let (mut realm, mut nonce, mut opaque) = (None, None, None);
    let (mut qop_auth, mut stale) = (false, false);
    let mut rest = &value[scheme_end..];
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        if rest.is_empty() {
            break;
        }
        let eq = rest.find('=')?;
        let name = rest[..eq].trim();
        rest = rest[eq + 1..].trim_start();
        let param;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            param = out;
            rest = &quoted[end?..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            param = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        match name.to_ascii_lowercase().as_str() {
            "realm" => realm = Some(param),
            "nonce" => nonce = Some(param),
            "opaque" => opaque = Some(param),
            "qop" => {
                qop_auth = param
                    .split(',')
                    .any(|q| q.trim().eq_ignore_ascii_case("auth"))
            }
            "stale" => stale = param.eq_ignore_ascii_case("true"),
            _ => {}
        }
    }
    Some(Challenge {
        realm: realm?,
        nonce: nonce.filter(|n| !n.is_empty())?,
        opaque,
        qop_auth,
        stale,
    })
}

/// Lower-case hex MD5 of the concatenated parts.
pub fn md5_hex(parts: &[&str]) -> String {
    let mut md5 = Md5::new();
    for part in parts {
        md5.update(part.as_bytes());
    }
    let mut out = String::with_capacity(32);
    for b in md5.finalize() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Credentials for one nonce, reused pre-emptively with `nc` + 1 on every later request.
#[derive(Debug)]
pub struct Auth {
    /// `Authorization` (after a 401) or `Proxy-Authorization` (after a 407).
    header: &'static str,
    username: String,
    challenge: Challenge,
    ha1: String,
    cnonce: String,
    nc: u32,
}

impl Auth {
    /// Credentials answering `challenge`; `proxy` picks the header (407 vs 401).
    pub fn new(
        challenge: Challenge,
        proxy: bool,
        username: &str,
        password: &str,
        cnonce: String,
    ) -> Auth {
        Auth {
            header: if proxy {
                "Proxy-Authorization"
            } else {
                "Authorization"
            },
            ha1: md5_hex(&[username, ":", &challenge.realm, ":", password]),
            username: username.to_owned(),
            challenge,
            cnonce,
            nc: 0,
        }
    }

    /// Appends the next credentials header line (`nc` + 1) for `method` `uri`.
    pub fn write_header(&mut self, out: &mut String, method: &str, uri: &str) {
        self.nc = self.nc.wrapping_add(1);
        let ch = &self.challenge;
        let ha2 = md5_hex(&[method, ":", uri]);
        let _ = write!(
            out,
            "{}: Digest username=\"{}\",realm=\"{}\",nonce=\"{}\",uri=\"{}\",response=\"",
            self.header, self.username, ch.realm, ch.nonce, uri
        );
        if ch.qop_auth {
            let nc = format!("{:08x}", self.nc);
            out.push_str(&md5_hex(&[
                &self.ha1,
                ":",
                &ch.nonce,
                ":",
                &nc,
                ":",
                &self.cnonce,
                ":auth:",
                &ha2,
            ]));
            let _ = write!(
                out,
                "\",algorithm=MD5,cnonce=\"{}\",qop=auth,nc={nc}",
                self.cnonce
            );
        } else {
            out.push_str(&md5_hex(&[&self.ha1, ":", &ch.nonce, ":", &ha2]));
            out.push_str("\",algorithm=MD5");
        }
        if let Some(opaque) = &ch.opaque {
            let _ = write!(out, ",opaque=\"{opaque}\"");
        }
        out.push_str("\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use huddle_sip::auth::{self, Algorithm, Credentials};

    #[test]
    fn parses_huddle_and_kamailio_challenges() {
        let ch = parse_challenge(
            r#"Digest realm="example.test",nonce="abc/=",algorithm=MD5,qop="auth",stale=true,opaque="o\"1""#,
        )
        .unwrap();
        assert_eq!(ch.realm, "example.test");
        assert_eq!(ch.nonce, "abc/=");
        assert_eq!(ch.opaque.as_deref(), Some("o\"1"));
        assert!(ch.qop_auth && ch.stale);
        // Kamailio: qop list, no algorithm.
        let ch =
            parse_challenge(r#"Digest realm="example.test", nonce="Zz9", qop="auth,auth-int""#)
                .unwrap();
        assert!(ch.qop_auth && !ch.stale && ch.opaque.is_none());
        assert_eq!(parse_challenge(r#"Basic realm="x""#), None);
        assert_eq!(parse_challenge(r#"Digest realm="x",nonce="#), None);
        assert_eq!(parse_challenge(r#"Digest realm="x,nonce="y"#), None);
        assert_eq!(parse_challenge("Digest"), None);
    }

    #[test]
    fn credentials_verify_with_the_server_code() {
        let ch = parse_challenge(r#"Digest realm="example.test",nonce="n1",qop="auth""#).unwrap();
        let mut auth = Auth::new(ch, true, "u0001", "u0001-pw", "c0ffee".into());
        let ha1 = auth::ha1("u0001", "example.test", "u0001-pw", Algorithm::Md5);
        for nc in 1..=2 {
            let mut line = String::new();
            auth.write_header(&mut line, "MESSAGE", "sip:u0002@example.test");
            let value = line
                .strip_prefix("Proxy-Authorization: ")
                .unwrap()
                .trim_end();
            let creds = Credentials::parse(value).unwrap();
            assert_eq!(creds.nc(), Some(nc));
            assert!(auth::verify_response(&creds, "MESSAGE", &ha1, None));
        }
    }
}
