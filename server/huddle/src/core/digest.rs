//! Digest authentication of requests: the glue between the sans-IO digest core
//! (`huddle_sip::auth`), the user records and the clock. One challenge per realm, in the
//! configured algorithm (SIPml5 answers every challenge header and only computes MD5).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::time::{SystemTime, UNIX_EPOCH};

use huddle_sip::auth::{
    challenge_into, verify_response_cached, Algorithm, Credentials, Ha2Cache, NonceCounts,
    NonceIssuer, NonceStatus,
};
use huddle_sip::message::HeaderName;
use huddle_sip::Message;

use crate::users::UserRecord;

/// The verdict on a request's credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'u> {
    /// Authenticated as this user (the name borrowed from the user records: the registrar
    /// writes it into its reused AOR buffer, so no copy is made per request).
    Accept(&'u str),
    /// Answer 401/407 with a challenge (`stale=true` when the digest was right but old).
    Challenge { stale: bool },
    /// Answer 400: credentials present but unusable.
    BadRequest(&'static str),
}

/// Per-server digest state.
#[derive(Debug)]
pub struct Digest {
    realm: String,
    issuer: NonceIssuer,
    counts: NonceCounts,
    salts: SaltPool,
    /// The challenge's text before the nonce and after it (without `stale`), written once:
    /// the realm's quoting cost more than the rest of a challenge (see [`challenge_parts`]).
    challenge_head: String,
    challenge_tail: String,
    /// The last request's HA2: refreshes and calls to one user hash the same one.
    ha2: Ha2Cache,
}

/// Nonce salts from the operating system's generator, fetched [`SaltPool::BATCH`] at a time:
/// a `getrandom` call per challenge was a system call per 401/407.
struct SaltPool {
    buf: Box<[u8]>,
    /// Bytes of `buf` already handed out.
    used: usize,
}

impl SaltPool {
    const SALT: usize = 16;
    const BATCH: usize = 256;

    fn new() -> Self {
        let len = Self::SALT * Self::BATCH;
        SaltPool {
            buf: vec![0; len].into_boxed_slice(),
            used: len,
        }
    }

    fn next(&mut self) -> [u8; Self::SALT] {
        if self.used == self.buf.len() {
            // The OS generator failing is not recoverable for a server that must issue nonces.
            getrandom::fill(&mut self.buf).expect("the operating system's random generator works");
            self.used = 0;
        }
        let mut salt = [0u8; Self::SALT];
        salt.copy_from_slice(&self.buf[self.used..self.used + Self::SALT]);
        // Each salt is handed out once; wipe it so the rest of the batch is all that is kept.
        self.buf[self.used..self.used + Self::SALT].fill(0);
        self.used += Self::SALT;
        salt
    }
}

impl std::fmt::Debug for SaltPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Unused salts are secret until they go out in a nonce.
        f.debug_struct("SaltPool")
            .field("used", &self.used)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS generator failing is not recoverable for a server that must issue nonces.
    getrandom::fill(&mut b).expect("the operating system's random generator works");
    b
}

/// What `challenge_into` writes around an empty nonce: `Digest realm="…",nonce="` and
/// `",algorithm=…,qop="auth"`. The quoted realm escapes every `"` it holds, so the text
/// `,nonce=""` occurs once, at the nonce.
fn challenge_parts(realm: &str, algorithm: Algorithm) -> (String, String) {
    let mut full = String::new();
    challenge_into(&mut full, realm, "", algorithm, false, None);
    const AT: &str = ",nonce=\"\"";
    let at = full.rfind(AT).map_or(full.len(), |i| i + AT.len() - 1);
    let tail = full.split_off(at);
    (full, tail)
}

impl Digest {
    /// New state with a random nonce secret.
    pub fn new(realm: &str, algorithm: Algorithm, nonce_lifetime_secs: u64) -> Digest {
        let (challenge_head, challenge_tail) = challenge_parts(realm, algorithm);
        Digest {
            realm: realm.to_owned(),
            issuer: NonceIssuer::new(random()).with_lifetime(nonce_lifetime_secs),
            counts: NonceCounts::new(100_000, nonce_lifetime_secs.max(60) * 2),
            salts: SaltPool::new(),
            challenge_head,
            challenge_tail,
            ha2: Ha2Cache::default(),
        }
    }

    /// The `WWW-Authenticate`/`Proxy-Authenticate` value for a fresh challenge, written into
    /// `out` (cleared first): the caller keeps one buffer for every challenge.
    pub fn challenge_into(&mut self, stale: bool, out: &mut String) {
        let salt = self.salts.next();
        // What `challenge_into` writes: our nonces are base64url, which quoting leaves as is.
        out.clear();
        out.push_str(&self.challenge_head);
        self.issuer.issue_into(unix_now(), &self.realm, salt, out);
        out.push_str(&self.challenge_tail);
        if stale {
            out.push_str(",stale=true");
        }
    }

    /// Checks the credentials of `req` in `header` (Authorization for the registrar,
    /// Proxy-Authorization for the proxy) against `users`.
    pub fn check<'u>(
        &mut self,
        req: &Message,
        header: &HeaderName,
        users: &'u HashMap<String, UserRecord, impl BuildHasher>,
        names_us: impl Fn(&str) -> bool,
    ) -> Verdict<'u> {
        let now = unix_now();
        let method = req.method().map(|m| m.as_str()).unwrap_or("");
        for value in req.header_values(header) {
            let creds = match Credentials::parse(value) {
                Ok(c) => c,
                Err(e) if e.should_challenge() => continue,
                Err(_) => return Verdict::BadRequest("Bad Request - Malformed Credentials"),
            };
            if creds.is_empty() || creds.realm() != self.realm {
                continue;
            }
            let (status, id) = self.issuer.check_id(creds.nonce(), &self.realm, now);
            let Some(id) = id else {
                return Verdict::Challenge { stale: false };
            };
            // RFC 2617 §3.2.2.5: the digest must be for this request's Request-URI. SIPp signs
            // `sip:<server address>` instead unless told `-auth_uri`; a URI naming this server
            // is accepted too, since it cannot be replayed anywhere else.
            if Some(creds.uri()) != req.request_uri() && !names_us(creds.uri()) {
                return Verdict::BadRequest("Bad Request - Digest URI Mismatch");
            }
            let Some(user) = users.get(creds.username()) else {
                return Verdict::Challenge { stale: false };
            };
            let body = Some(req.body());
            let ha1 = user.ha1(creds.algorithm());
            if !verify_response_cached(&creds, method, ha1, body, &mut self.ha2) {
                return Verdict::Challenge { stale: false };
            }
            if status == NonceStatus::Stale {
                return Verdict::Challenge { stale: true };
            }
            if !self.counts.accept_id(id, creds.nc(), now) {
                return Verdict::Challenge { stale: true };
            }
            return Verdict::Accept(&user.name);
        }
        Verdict::Challenge { stale: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salts_are_distinct_across_refills() {
        let mut pool = SaltPool::new();
        let salts: std::collections::HashSet<[u8; 16]> =
            (0..SaltPool::BATCH * 2 + 3).map(|_| pool.next()).collect();
        assert_eq!(salts.len(), SaltPool::BATCH * 2 + 3);
    }

    #[test]
    fn challenges_carry_distinct_nonces() {
        let mut digest = Digest::new("example.test", Algorithm::Md5, 300);
        let (mut a, mut b) = (String::new(), String::from("left over"));
        digest.challenge_into(false, &mut a);
        digest.challenge_into(true, &mut b);
        assert_ne!(a, b);
        assert!(
            a.starts_with("Digest realm=\"example.test\",nonce=\""),
            "{a}"
        );
        assert!(
            b.starts_with("Digest realm=\"example.test\",nonce=\""),
            "{b}"
        );
        assert!(b.ends_with(",stale=true"), "{b}");
        // The nonce in the challenge is one the issuer accepts.
        let nonce = &a["Digest realm=\"example.test\",nonce=\"".len()..];
        let nonce = &nonce[..nonce.find('"').unwrap()];
        assert_eq!(
            digest.issuer.check(nonce, "example.test", unix_now()),
            NonceStatus::Valid
        );
    }

    #[test]
    fn challenges_read_as_the_challenge_builder_writes_them() {
        for realm in [
            "example.test",
            "a\"b\\c",
            "tab\there",
            "ctl\u{1}x",
            ",nonce=\"\"",
            "x\\\",nonce=\"\"",
            "",
            "ü",
        ] {
            for algorithm in [Algorithm::Md5, Algorithm::Sha256] {
                let mut digest = Digest::new(realm, algorithm, 300);
                for stale in [false, true] {
                    let mut ours = String::from("left over");
                    digest.challenge_into(stale, &mut ours);
                    // The nonce is whatever sits between the head and the tail.
                    let nonce = &ours[digest.challenge_head.len()..][..ours.len()
                        - digest.challenge_head.len()
                        - digest.challenge_tail.len()
                        - if stale { ",stale=true".len() } else { 0 }];
                    assert_eq!(
                        digest.issuer.check(nonce, realm, unix_now()),
                        NonceStatus::Valid,
                        "{realm:?}"
                    );
                    let mut expected = String::new();
                    challenge_into(&mut expected, realm, nonce, algorithm, stale, None);
                    assert_eq!(ours, expected, "{realm:?} {stale}");
                }
            }
        }
    }
}
