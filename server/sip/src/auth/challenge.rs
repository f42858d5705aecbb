//! The `WWW-Authenticate` / `Proxy-Authenticate` value (RFC 3261 §22.1, RFC 7616 §3.3).

use super::algorithm::Algorithm;

/// Builds a challenge value:
/// `Digest realm="…",nonce="…",algorithm=MD5,qop="auth"`, then `,stale=true` when `stale`, then
/// `,opaque="…"` when given.
///
/// Send **one** challenge per realm. RFC 8760 would allow one per algorithm, but SIPml5 answers
/// every challenge header it receives and computes only MD5, so a SHA-256 challenge next to the
/// MD5 one makes it send a wrong answer too. `algorithm` is therefore a configuration choice,
/// MD5 by default. Only `qop="auth"` is offered: SIPml5 switches to `auth-int` whenever it is
/// listed, which would make every response depend on the body.
///
/// `realm` and `opaque` come from configuration; `"` and `\` are escaped, and control characters
/// other than tab (which no quoted string can carry) become spaces, so a bad configuration can
/// never inject a header line. Validate realms at load time so clients hash the realm you meant.
pub fn challenge(
    realm: &str,
    nonce: &str,
    algorithm: Algorithm,
    stale: bool,
    opaque: Option<&str>,
) -> String {
    let mut out =
        String::with_capacity(64 + realm.len() + nonce.len() + opaque.map_or(0, |o| o.len() + 10));
    challenge_into(&mut out, realm, nonce, algorithm, stale, opaque);
    out
}

/// [`challenge`] written into `out` (cleared first), a buffer the caller reuses.
pub fn challenge_into(
    out: &mut String,
    realm: &str,
    nonce: &str,
    algorithm: Algorithm,
    stale: bool,
    opaque: Option<&str>,
) {
    out.clear();
    out.push_str("Digest realm=\"");
    push_quoted(out, realm);
    out.push_str("\",nonce=\"");
    push_quoted(out, nonce);
    out.push_str("\",algorithm=");
    out.push_str(algorithm.as_str());
    out.push_str(",qop=\"auth\"");
    if stale {
        out.push_str(",stale=true");
    }
    if let Some(opaque) = opaque {
        out.push_str(",opaque=\"");
        push_quoted(out, opaque);
        out.push('"');
    }
}

fn push_quoted(out: &mut String, value: &str) {
    // Realms and nonces nearly always need no escape: copied whole.
    if !value
        .bytes()
        .any(|b| b == b'"' || b == b'\\' || b.is_ascii_control())
    {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\t' => out.push(c),
            c if c.is_ascii_control() => out.push(' '),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_challenge() {
        assert_eq!(
            challenge("example.test", "abc", Algorithm::Md5, false, None),
            r#"Digest realm="example.test",nonce="abc",algorithm=MD5,qop="auth""#
        );
    }

    #[test]
    fn stale_sha256_with_opaque() {
        assert_eq!(
            challenge("r", "n", Algorithm::Sha256, true, Some("o-1")),
            r#"Digest realm="r",nonce="n",algorithm=SHA-256,qop="auth",stale=true,opaque="o-1""#
        );
    }

    #[test]
    fn challenge_into_replaces_what_the_buffer_held() {
        let mut out = String::from("left over");
        challenge_into(&mut out, "r", "n", Algorithm::Md5, true, Some("o"));
        assert_eq!(out, challenge("r", "n", Algorithm::Md5, true, Some("o")));
        challenge_into(&mut out, "a\tb", "m", Algorithm::Sha256, false, None);
        assert_eq!(
            out,
            r#"Digest realm="a	b",nonce="m",algorithm=SHA-256,qop="auth""#
        );
    }

    #[test]
    fn escapes_and_cannot_inject_lines() {
        let value = challenge(
            "a\"b\\c\r\nX-Evil: 1",
            "n",
            Algorithm::Md5,
            false,
            Some("\u{0}é"),
        );
        assert_eq!(
            value,
            r#"Digest realm="a\"b\\c  X-Evil: 1",nonce="n",algorithm=MD5,qop="auth",opaque=" é""#
        );
        assert!(!value.contains(['\r', '\n']));
    }
}
