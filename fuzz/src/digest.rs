//! `digest_credentials`: [`Credentials::parse`] on arbitrary text, [`verify_response`] against
//! fixed HA1s, [`NonceIssuer::check`] on arbitrary nonces, and a round trip: credentials built
//! from fuzzer-chosen fields with an independently computed response must parse back to the same
//! fields and verify, and must stop verifying when anything covered by the hash changes.
//!
//! Round-trip input layout: byte 0 holds flags (see [`Style`]), the rest is split on `\n` into
//! username, realm, nonce, uri, cnonce, opaque and body (lossy UTF-8). A plain `Authorization`
//! value as input gives a username with everything else empty, which still has to work.

use huddle_sip::auth::{self, Algorithm, Credentials, NonceIssuer, NonceStatus, Qop};
use md5::Md5;
use sha2::{Digest, Sha256};

const REALM: &str = "example.test";
const PASSWORD: &str = "secret";
const NOW: u64 = 1_700_000_000;
const SECRET: [u8; 32] = [7; 32];
/// The salt of the one genuine nonce; its value is in corpus/digest_credentials/genuine-nonce.
const SALT: [u8; 16] = [42; 16];
const METHODS: [&str; 2] = ["REGISTER", "INVITE"];

/// Fuzz body of the `digest_credentials` target.
pub fn check_digest_credentials(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_arbitrary(&text, data);
    check_nonce(&text, REALM);
    check_nonce(text.trim(), REALM);
    check_round_trip(data);
}

/// The one nonce the fixed issuer hands out, for seeds that carry a genuine nonce.
pub fn genuine_nonce() -> String {
    NonceIssuer::new(SECRET).issue(NOW, REALM, SALT)
}

fn hash<D: Digest>(parts: &[&[u8]]) -> String {
    let mut d = D::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            d.update(b":");
        }
        d.update(part);
    }
    d.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn hash_for(alg: Algorithm, parts: &[&[u8]]) -> String {
    match alg {
        Algorithm::Md5 => hash::<Md5>(parts),
        Algorithm::Sha256 => hash::<Sha256>(parts),
    }
}

/// HA1 = H(username ":" realm ":" password), computed here and compared with the library's.
fn ha1(username: &str, realm: &str, alg: Algorithm) -> String {
    let ours = hash_for(
        alg,
        &[username.as_bytes(), realm.as_bytes(), PASSWORD.as_bytes()],
    );
    assert_eq!(
        ours,
        auth::ha1(username, realm, PASSWORD, alg),
        "auth::ha1 {alg}"
    );
    ours
}

fn check_arbitrary(text: &str, data: &[u8]) {
    let creds = match Credentials::parse(text) {
        Ok(c) => c,
        Err(e) => {
            let _ = (e.should_challenge(), e.to_string());
            return;
        }
    };
    assert_eq!(
        creds.qop().is_some(),
        creds.nc().is_some(),
        "nc exactly when qop"
    );
    if creds.qop().is_some() {
        assert!(creds.cnonce().is_some(), "cnonce whenever qop");
    }
    assert_eq!(
        creds.is_empty(),
        creds.nonce().is_empty() || creds.response().is_empty()
    );
    let _ = (
        creds.username(),
        creds.uri(),
        creds.opaque(),
        creds.algorithm().as_str(),
    );
    let alg = creds.algorithm();
    let right = ha1("alice", REALM, alg);
    let wrong = ha1("alice", REALM, other(alg));
    let hex_ok = creds.response().len() == alg.hex_len()
        && creds.response().bytes().all(|b| b.is_ascii_hexdigit());
    for method in METHODS {
        for body in [None, Some(data)] {
            let ok = auth::verify_response(&creds, method, &right, body);
            assert!(
                !ok || hex_ok,
                "verified a response that is not {} hex digits",
                alg.hex_len()
            );
            assert_eq!(
                auth::verify_response(&creds, method, &right.to_ascii_uppercase(), body),
                ok,
                "HA1 case matters"
            );
            assert!(
                !auth::verify_response(&creds, method, &wrong, body),
                "verified against an HA1 of the other algorithm"
            );
        }
    }
    check_nonce(creds.nonce(), creds.realm());
}

fn other(alg: Algorithm) -> Algorithm {
    match alg {
        Algorithm::Md5 => Algorithm::Sha256,
        Algorithm::Sha256 => Algorithm::Md5,
    }
}

/// Only the genuine nonce, for its realm, is ever anything but `Invalid`.
fn check_nonce(nonce: &str, realm: &str) {
    let issuer = NonceIssuer::new(SECRET);
    let genuine = nonce == genuine_nonce() && realm == REALM;
    let lifetime = issuer.lifetime_secs();
    for (now, if_genuine) in [
        (NOW, NonceStatus::Valid),
        (NOW + lifetime, NonceStatus::Valid),
        (NOW + lifetime + 1, NonceStatus::Stale),
        (u64::MAX, NonceStatus::Stale),
        (NOW - issuer.max_skew_secs(), NonceStatus::Valid),
        (NOW - issuer.max_skew_secs() - 1, NonceStatus::Invalid),
        (0, NonceStatus::Invalid),
    ] {
        let want = if genuine {
            if_genuine
        } else {
            NonceStatus::Invalid
        };
        assert_eq!(
            issuer.check(nonce, realm, now),
            want,
            "nonce {nonce:?} realm {realm:?} at {now}"
        );
    }
}

/// How the round trip writes its credentials, from the flags byte.
#[derive(Debug, Clone, Copy)]
struct Style(u8);

impl Style {
    /// 0: RFC 2069 (no qop), 1: `qop=auth`, 2: `qop=auth-int`, 3: `qop="AUTH"`.
    fn qop(self) -> Option<(Qop, &'static str, bool)> {
        match self.0 & 0x03 {
            0 => None,
            1 => Some((Qop::Auth, "auth", false)),
            2 => Some((Qop::AuthInt, "auth-int", false)),
            _ => Some((Qop::Auth, "AUTH", true)),
        }
    }
    fn algorithm(self) -> Algorithm {
        if self.0 & 0x04 != 0 {
            Algorithm::Sha256
        } else {
            Algorithm::Md5
        }
    }
    /// Write `algorithm=` even for the MD5 default.
    fn explicit_algorithm(self) -> bool {
        self.0 & 0x08 != 0 || self.algorithm() == Algorithm::Sha256
    }
    /// Leave values unquoted where the grammar allows it.
    fn bare(self) -> bool {
        self.0 & 0x10 != 0
    }
    /// Folded, spaced separators and an uppercase nonce count instead of `,`.
    fn loose(self) -> bool {
        self.0 & 0x20 != 0
    }
    fn reversed(self) -> bool {
        self.0 & 0x40 != 0
    }
    /// Unknown parameters mixed in, which must be ignored.
    fn extras(self) -> bool {
        self.0 & 0x80 != 0
    }
}

fn quote(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn value(v: &str, style: Style) -> String {
    let bare_ok = !v.is_empty()
        && v.bytes()
            .all(|c| c.is_ascii_graphic() && c != b',' && c != b'"');
    if style.bare() && bare_ok {
        v.to_owned()
    } else {
        quote(v)
    }
}

fn check_round_trip(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let style = Style(flags);
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.splitn(7, '\n');
    let mut next = || parts.next().unwrap_or("");
    let (username, realm, nonce, uri, cnonce, opaque) =
        (next(), next(), next(), next(), next(), next());
    let body = next().as_bytes();
    let method = METHODS[usize::from(flags.count_ones() % 2 == 1)];
    let alg = style.algorithm();
    let nc = rest.iter().fold(1u32, |acc, &b| {
        acc.wrapping_mul(31).wrapping_add(u32::from(b))
    });
    let nc_text = if style.loose() {
        format!("{nc:08X}")
    } else {
        format!("{nc:08x}")
    };

    let ha1 = ha1(username, realm, alg);
    let ha2 = match style.qop() {
        Some((Qop::AuthInt, ..)) => {
            let body_hash = hash_for(alg, &[body]);
            hash_for(
                alg,
                &[method.as_bytes(), uri.as_bytes(), body_hash.as_bytes()],
            )
        }
        _ => hash_for(alg, &[method.as_bytes(), uri.as_bytes()]),
    };
    let response = match style.qop() {
        Some((_, qop_text, _)) => hash_for(
            alg,
            &[
                ha1.as_bytes(),
                nonce.as_bytes(),
                nc_text.as_bytes(),
                cnonce.as_bytes(),
                qop_text.as_bytes(),
                ha2.as_bytes(),
            ],
        ),
        None => hash_for(alg, &[ha1.as_bytes(), nonce.as_bytes(), ha2.as_bytes()]),
    };

    let header = write_header(
        style,
        &Fields {
            username,
            realm,
            nonce,
            uri,
            response: &response,
            cnonce,
            opaque,
            nc_text: &nc_text,
        },
    );
    let creds = Credentials::parse(&header)
        .unwrap_or_else(|e| panic!("well-formed credentials rejected ({e}): {header:?}"));
    assert_eq!(creds.username(), username, "{header:?}");
    assert_eq!(creds.realm(), realm, "{header:?}");
    assert_eq!(creds.nonce(), nonce, "{header:?}");
    assert_eq!(creds.uri(), uri, "{header:?}");
    assert_eq!(creds.response(), response, "{header:?}");
    assert_eq!(creds.algorithm(), alg, "{header:?}");
    assert_eq!(
        creds.opaque(),
        (!opaque.is_empty()).then_some(opaque),
        "{header:?}"
    );
    assert_eq!(creds.qop(), style.qop().map(|(q, ..)| q), "{header:?}");
    if style.qop().is_some() {
        assert_eq!(creds.nc(), Some(nc), "{header:?}");
        assert_eq!(creds.cnonce(), Some(cnonce), "{header:?}");
    } else {
        assert_eq!((creds.nc(), creds.cnonce()), (None, None), "{header:?}");
    }
    assert_eq!(creds.is_empty(), nonce.is_empty(), "{header:?}");

    let verify = |method: &str, ha1: &str, body: &[u8]| {
        auth::verify_response(&creds, method, ha1, Some(body))
    };
    assert!(
        verify(method, &ha1, body),
        "right response refused: {header:?}"
    );
    assert!(
        verify(method, &ha1.to_ascii_uppercase(), body),
        "uppercase HA1 refused"
    );
    assert!(!verify("BYE", &ha1, body), "verified with another method");
    let wrong_ha1 = ha1_of_other_password(username, realm, alg);
    assert!(
        !verify(method, &wrong_ha1, body),
        "verified with a wrong password"
    );
    let mut longer = body.to_vec();
    longer.push(b'x');
    let int = style.qop().is_some_and(|(q, ..)| q == Qop::AuthInt);
    assert_eq!(
        verify(method, &ha1, &longer),
        !int,
        "body coverage must follow qop"
    );
    if body.is_empty() {
        assert!(
            auth::verify_response(&creds, method, &ha1, None),
            "None is an empty body"
        );
    }

    // The same header with one response digit changed must fail.
    let flipped: String = response
        .char_indices()
        .map(|(i, c)| {
            if i == 0 {
                if c == '0' {
                    '1'
                } else {
                    '0'
                }
            } else {
                c
            }
        })
        .collect();
    let tampered = write_header(
        style,
        &Fields {
            username,
            realm,
            nonce,
            uri,
            response: &flipped,
            cnonce,
            opaque,
            nc_text: &nc_text,
        },
    );
    if let Ok(c) = Credentials::parse(&tampered) {
        assert!(
            !auth::verify_response(&c, method, &ha1, Some(body)),
            "tampered response verified"
        );
    }
    check_nonce(creds.nonce(), creds.realm());
}

struct Fields<'a> {
    username: &'a str,
    realm: &'a str,
    nonce: &'a str,
    uri: &'a str,
    response: &'a str,
    cnonce: &'a str,
    opaque: &'a str,
    nc_text: &'a str,
}

/// An `Authorization` value for `f`, written as `style` says.
fn write_header(style: Style, f: &Fields<'_>) -> String {
    let mut params = vec![
        format!("username={}", quote(f.username)),
        format!("realm={}", quote(f.realm)),
        format!("nonce={}", value(f.nonce, style)),
        format!("uri={}", value(f.uri, style)),
        format!("response={}", quote(f.response)),
    ];
    if style.explicit_algorithm() {
        let alg = style.algorithm().as_str();
        let name = if style.loose() {
            alg.to_ascii_lowercase()
        } else {
            alg.to_owned()
        };
        params.push(format!("algorithm={name}"));
    }
    if let Some((_, qop_text, quoted)) = style.qop() {
        params.push(format!(
            "qop={}",
            if quoted {
                quote(qop_text)
            } else {
                qop_text.to_owned()
            }
        ));
        params.push(format!("nc={}", f.nc_text));
        params.push(format!("cnonce={}", value(f.cnonce, style)));
    }
    if !f.opaque.is_empty() {
        params.push(format!("opaque={}", quote(f.opaque)));
    }
    if style.extras() {
        params.insert(1, "userhash=false".to_owned());
        params.push("x-vendor=\"a,b=c\"".to_owned());
    }
    if style.reversed() {
        params.reverse();
    }
    if style.loose() {
        format!("  digest\r\n  {} ,, ", params.join(" ,\r\n\t"))
    } else {
        format!("Digest {}", params.join(","))
    }
}

fn ha1_of_other_password(username: &str, realm: &str, alg: Algorithm) -> String {
    hash_for(
        alg,
        &[username.as_bytes(), realm.as_bytes(), b"not the password"],
    )
}
