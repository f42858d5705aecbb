//! Stateless nonces: minted and checked with a server secret and the caller's clock, no table.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of a decoded nonce: timestamp (8) ‖ salt (16) ‖ truncated tag (16).
const RAW_LEN: usize = 8 + 16 + TAG_LEN;
/// HMAC-SHA256 truncated to its left half: 128 bits, the floor RFC 2104 §5 recommends, keeps the
/// nonce at 54 characters, and it travels in every authenticated request.
const TAG_LEN: usize = 16;
/// `RAW_LEN` bytes in unpadded base64url.
const ENCODED_LEN: usize = (RAW_LEN * 8).div_ceil(6);

/// What [`NonceIssuer::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NonceStatus {
    /// Ours, for this realm, and within its lifetime.
    Valid,
    /// Ours and for this realm, but older than the lifetime. If the response verifies, challenge
    /// again with `stale=true` so the client retries without asking its user (RFC 7616 §3.3).
    Stale,
    /// Not one of ours: forged, garbled, truncated, minted for another realm or with another
    /// secret, or dated in the future beyond the allowed clock skew. Challenge without `stale`.
    Invalid,
}

/// What tells one nonce of a [`NonceIssuer`] from every other: its tag, 128 bits of HMAC over
/// its time, salt and realm. [`NonceCounts::accept_id`](super::NonceCounts::accept_id) keys on
/// it, so a verified nonce is not hashed a second time to be remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NonceId(pub(super) [u8; TAG_LEN]);

/// Mints and checks stateless nonces.
///
/// A nonce is the unpadded base64url (RFC 4648 §5) encoding of 40 bytes:
///
/// ```text
/// timestamp: u64 big-endian unix seconds ‖ salt: [u8; 16] ‖ HMAC-SHA256(secret, timestamp ‖ salt ‖ realm)[..16]
/// ```
///
/// so 54 characters from `[A-Za-z0-9_-]`, safe in a quoted string and in any log. The tag binds the
/// nonce to its realm and issue time; checking needs no state, so every node sharing the secret
/// accepts every other node's nonces, and unauthenticated traffic costs no memory. The salt is
/// the caller's randomness (a CSPRNG), which keeps nonces unpredictable and distinct within one
/// second; the secret must be used for nothing else.
///
/// A nonce dated more than `max_skew` seconds ahead of `now_secs` is [`NonceStatus::Invalid`], not
/// stale: it was minted with our secret by a clock we disagree with (a stepped clock, a cluster
/// peer), an operational fault that a silent `stale=true` retry loop would hide.
#[derive(Clone)]
pub struct NonceIssuer {
    // Keyed once: cloning a keyed HMAC skips re-hashing the padded key on every nonce.
    mac: Hmac<Sha256>,
    lifetime_secs: u64,
    max_skew_secs: u64,
}

impl NonceIssuer {
    /// Default nonce lifetime: five minutes, as Kamailio's `nonce_expire`. Later requests get one
    /// `stale=true` round trip, which SIPml5 always accepts.
    pub const DEFAULT_LIFETIME_SECS: u64 = 300;
    /// Default tolerance for nonces dated in the future (clock steps, cluster peers).
    pub const DEFAULT_MAX_SKEW_SECS: u64 = 5;

    /// An issuer keyed with `secret`, which the caller draws from a CSPRNG at start-up (or shares
    /// across a cluster), with the default lifetime and skew.
    pub fn new(secret: [u8; 32]) -> Self {
        Self {
            mac: <Hmac<Sha256> as Mac>::new_from_slice(&secret)
                .expect("HMAC accepts keys of any length"),
            lifetime_secs: Self::DEFAULT_LIFETIME_SECS,
            max_skew_secs: Self::DEFAULT_MAX_SKEW_SECS,
        }
    }

    /// Sets how many seconds a nonce stays [`NonceStatus::Valid`].
    #[must_use]
    pub fn with_lifetime(mut self, secs: u64) -> Self {
        self.lifetime_secs = secs;
        self
    }

    /// Sets how many seconds in the future a nonce's timestamp may lie and still be accepted.
    #[must_use]
    pub fn with_max_skew(mut self, secs: u64) -> Self {
        self.max_skew_secs = secs;
        self
    }

    /// Seconds a nonce stays valid.
    pub fn lifetime_secs(&self) -> u64 {
        self.lifetime_secs
    }

    /// Seconds of future-dating tolerated.
    pub fn max_skew_secs(&self) -> u64 {
        self.max_skew_secs
    }

    /// Mints a nonce for `realm` at `now_secs` (unix seconds), using `salt` from the caller's
    /// random source. Put it in [`challenge`](super::challenge).
    pub fn issue(&self, now_secs: u64, realm: &str, salt: [u8; 16]) -> String {
        let mut out = String::with_capacity(ENCODED_LEN);
        self.issue_into(now_secs, realm, salt, &mut out);
        out
    }

    /// [`NonceIssuer::issue`] appended to `out` (a buffer the caller reuses).
    pub fn issue_into(&self, now_secs: u64, realm: &str, salt: [u8; 16], out: &mut String) {
        let mut raw = [0u8; RAW_LEN];
        raw[..8].copy_from_slice(&now_secs.to_be_bytes());
        raw[8..24].copy_from_slice(&salt);
        let tag = self.tag(&raw[..24], realm).finalize().into_bytes();
        raw[24..].copy_from_slice(&tag[..TAG_LEN]);
        base64url_encode(&raw, out);
    }

    /// Classifies a nonce received in credentials for `realm` at `now_secs`.
    ///
    /// Runs in constant time with respect to the tag; never panics, whatever `nonce` holds.
    pub fn check(&self, nonce: &str, realm: &str, now_secs: u64) -> NonceStatus {
        self.check_id(nonce, realm, now_secs).0
    }

    /// [`NonceIssuer::check`], and the nonce's [`NonceId`] when it is ours (valid or stale;
    /// `None` exactly when the status is [`NonceStatus::Invalid`]).
    pub fn check_id(
        &self,
        nonce: &str,
        realm: &str,
        now_secs: u64,
    ) -> (NonceStatus, Option<NonceId>) {
        let mut raw = [0u8; RAW_LEN];
        if !base64url_decode(nonce.as_bytes(), &mut raw) {
            return (NonceStatus::Invalid, None);
        }
        if self
            .tag(&raw[..24], realm)
            .verify_truncated_left(&raw[24..])
            .is_err()
        {
            return (NonceStatus::Invalid, None);
        }
        let mut stamp = [0u8; 8];
        stamp.copy_from_slice(&raw[..8]);
        let issued = u64::from_be_bytes(stamp);
        if issued > now_secs.saturating_add(self.max_skew_secs) {
            return (NonceStatus::Invalid, None);
        }
        let status = if now_secs.saturating_sub(issued) > self.lifetime_secs {
            NonceStatus::Stale
        } else {
            NonceStatus::Valid
        };
        let mut id = [0u8; TAG_LEN];
        id.copy_from_slice(&raw[24..]);
        (status, Some(NonceId(id)))
    }

    fn tag(&self, stamp_and_salt: &[u8], realm: &str) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(stamp_and_salt);
        mac.update(realm.as_bytes());
        mac
    }
}

impl fmt::Debug for NonceIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The keyed HMAC state is as good as the secret: never print it.
        f.debug_struct("NonceIssuer")
            .field("lifetime_secs", &self.lifetime_secs)
            .field("max_skew_secs", &self.max_skew_secs)
            .finish_non_exhaustive()
    }
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Each byte's base64url value, `INVALID` for bytes outside the alphabet: the decoder ORs the
/// values of a group together and tests the high bit once instead of branching per character.
const INVALID: u8 = 0x80;
const BASE64URL_VALUES: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        table[BASE64URL[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Characters encoded per pass: the output goes through a stack buffer and into `out` with one
/// `push_str` (a `push` per character costs a capacity check and a UTF-8 length each).
const ENCODE_CHUNK: usize = 48;

fn base64url_encode(input: &[u8], out: &mut String) {
    let sym = |v: u32| BASE64URL[(v & 0x3f) as usize];
    for part in input.chunks(ENCODE_CHUNK) {
        let mut buf = [0u8; ENCODE_CHUNK / 3 * 4];
        let mut groups = part.chunks_exact(3);
        let mut written = 0;
        for (g, o) in (&mut groups).zip(buf.chunks_exact_mut(4)) {
            let n = (u32::from(g[0]) << 16) | (u32::from(g[1]) << 8) | u32::from(g[2]);
            o.copy_from_slice(&[sym(n >> 18), sym(n >> 12), sym(n >> 6), sym(n)]);
            written += 4;
        }
        let tail = match *groups.remainder() {
            [a] => {
                let n = u32::from(a) << 16;
                [sym(n >> 18), sym(n >> 12), 0, 0, 2]
            }
            [a, b] => {
                let n = (u32::from(a) << 16) | (u32::from(b) << 8);
                [sym(n >> 18), sym(n >> 12), sym(n >> 6), 0, 3]
            }
            _ => [0; 5],
        };
        out.push_str(std::str::from_utf8(&buf[..written]).expect("base64url alphabet is ASCII"));
        out.push_str(
            std::str::from_utf8(&tail[..usize::from(tail[4])])
                .expect("base64url alphabet is ASCII"),
        );
    }
}

/// Decodes exactly `out.len()` bytes. Only the canonical encoding is accepted (unused low bits
/// zero, no padding), so each nonce has one spelling and one entry in
/// [`NonceCounts`](super::NonceCounts).
fn base64url_decode(input: &[u8], out: &mut [u8]) -> bool {
    if input.len() != (out.len() * 8).div_ceil(6) {
        return false;
    }
    let value = |c: u8| BASE64URL_VALUES[usize::from(c)];
    let mut bad = 0u8;
    let mut groups = input.chunks_exact(4);
    let mut slots = out.chunks_exact_mut(3);
    for (g, o) in (&mut groups).zip(&mut slots) {
        let (a, b, c, d) = (value(g[0]), value(g[1]), value(g[2]), value(g[3]));
        bad |= a | b | c | d;
        let n = (u32::from(a) << 18) | (u32::from(b) << 12) | (u32::from(c) << 6) | u32::from(d);
        o.copy_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
    }
    // The lengths match, so what is left is one byte from two characters or two from three;
    // the bits past the last byte must be zero.
    match (groups.remainder(), slots.into_remainder()) {
        ([], []) => {}
        (&[a, b], [x]) => {
            let (a, b) = (value(a), value(b));
            bad |= a | b;
            *x = (a << 2) | (b >> 4);
            if b & 0x0f != 0 {
                return false;
            }
        }
        (&[a, b, c], [x, y]) => {
            let (a, b, c) = (value(a), value(b), value(c));
            bad |= a | b | c;
            *x = (a << 2) | (b >> 4);
            *y = (b << 4) | (c >> 2);
            if c & 0x03 != 0 {
                return false;
            }
        }
        _ => return false,
    }
    bad & INVALID == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn issuer() -> NonceIssuer {
        NonceIssuer::new([9; 32])
            .with_lifetime(300)
            .with_max_skew(5)
    }

    #[test]
    fn issue_into_appends_the_nonce_issue_returns() {
        let issuer = NonceIssuer::new([7; 32]);
        let mut out = String::from("x");
        issuer.issue_into(NOW, "example.test", [3; 16], &mut out);
        assert_eq!(
            out,
            format!("x{}", issuer.issue(NOW, "example.test", [3; 16]))
        );
        assert_eq!(
            issuer.check(&out[1..], "example.test", NOW),
            NonceStatus::Valid
        );
    }

    /// The character-at-a-time coder the table-driven one replaced, kept as the reference.
    fn reference_encode(input: &[u8]) -> String {
        let mut out = String::new();
        for chunk in input.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(char::from(BASE64URL[((n >> (18 - 6 * i)) & 0x3f) as usize]));
            }
        }
        out
    }

    fn reference_decode(input: &[u8], out: &mut [u8]) -> bool {
        if input.len() != (out.len() * 8).div_ceil(6) {
            return false;
        }
        let (mut acc, mut bits, mut written) = (0u32, 0u32, 0);
        for &c in input {
            let Some(i) = BASE64URL.iter().position(|&a| a == c) else {
                return false;
            };
            acc = (acc << 6) | i as u32;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                let Some(slot) = out.get_mut(written) else {
                    return false;
                };
                *slot = (acc >> bits) as u8;
                written += 1;
                acc &= (1 << bits) - 1;
            }
        }
        written == out.len() && acc == 0
    }

    #[test]
    fn the_table_coder_agrees_with_the_reference() {
        let mut seed = 0x9e37_79b9_u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for len in (0..=100).chain([RAW_LEN]) {
            let input: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let mut ours = String::from("x");
            base64url_encode(&input, &mut ours);
            assert_eq!(ours[1..], reference_encode(&input), "{len}");

            // The encoding itself, and every byte value at every position of it, decoded
            // into buffers of the right length and one byte either side.
            let good = reference_encode(&input).into_bytes();
            let mut inputs = vec![good.clone(), good[..good.len().saturating_sub(1)].to_vec()];
            let mut longer = good.clone();
            longer.push(b'A');
            inputs.push(longer);
            for at in 0..good.len().min(12) {
                for byte in 0..=255u8 {
                    let mut mutated = good.clone();
                    mutated[at] = byte;
                    inputs.push(mutated);
                }
            }
            if let Some(last) = good.len().checked_sub(1) {
                for byte in 0..=255u8 {
                    let mut mutated = good.clone();
                    mutated[last] = byte;
                    inputs.push(mutated);
                }
            }
            for text in &inputs {
                for out_len in [len.saturating_sub(1), len, len + 1] {
                    let (mut a, mut b) = (vec![0u8; out_len], vec![0u8; out_len]);
                    let (ok_a, ok_b) = (
                        base64url_decode(text, &mut a),
                        reference_decode(text, &mut b),
                    );
                    assert_eq!(ok_a, ok_b, "{text:?} into {out_len}");
                    if ok_a {
                        assert_eq!(a, b, "{text:?}");
                    }
                }
            }
            let mut back = vec![0u8; len];
            assert!(base64url_decode(&good, &mut back));
            assert_eq!(back, input);
        }
    }

    #[test]
    fn base64url_round_trips_and_is_canonical() {
        for len in 0..8usize {
            let input: Vec<u8> = (0..len).map(|i| (i * 37 + 200) as u8).collect();
            let mut s = String::new();
            base64url_encode(&input, &mut s);
            assert_eq!(s.len(), (len * 8).div_ceil(6));
            let mut back = vec![0u8; len];
            assert!(base64url_decode(s.as_bytes(), &mut back), "{s}");
            assert_eq!(back, input);
        }
        let mut one = [0u8; 1];
        assert!(base64url_decode(b"_w", &mut one));
        assert_eq!(one, [0xff]);
        assert!(!base64url_decode(b"__", &mut one), "non-zero padding bits");
        assert!(!base64url_decode(b"_w=", &mut one));
        assert!(!base64url_decode(b"+w", &mut one));
    }

    #[test]
    fn fresh_nonce_is_valid_and_well_formed() {
        let issuer = issuer();
        let nonce = issuer.issue(NOW, "example.test", [1; 16]);
        assert_eq!(nonce.len(), ENCODED_LEN);
        assert_eq!(ENCODED_LEN, 54);
        assert!(nonce
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(
            issuer.check(&nonce, "example.test", NOW),
            NonceStatus::Valid
        );
        assert_eq!(
            issuer.check(&nonce, "example.test", NOW + 300),
            NonceStatus::Valid
        );
        assert_ne!(
            nonce,
            issuer.issue(NOW, "example.test", [2; 16]),
            "salt makes nonces distinct"
        );
    }

    #[test]
    fn old_nonce_is_stale() {
        let issuer = issuer();
        let nonce = issuer.issue(NOW, "example.test", [1; 16]);
        assert_eq!(
            issuer.check(&nonce, "example.test", NOW + 301),
            NonceStatus::Stale
        );
        assert_eq!(
            issuer.check(&nonce, "example.test", u64::MAX),
            NonceStatus::Stale
        );
    }

    #[test]
    fn future_nonce_is_invalid_beyond_skew() {
        let issuer = issuer();
        let nonce = issuer.issue(NOW + 5, "example.test", [1; 16]);
        assert_eq!(
            issuer.check(&nonce, "example.test", NOW),
            NonceStatus::Valid
        );
        let nonce = issuer.issue(NOW + 6, "example.test", [1; 16]);
        assert_eq!(
            issuer.check(&nonce, "example.test", NOW),
            NonceStatus::Invalid
        );
        let nonce = issuer.issue(u64::MAX, "example.test", [1; 16]);
        assert_eq!(
            issuer.check(&nonce, "example.test", NOW),
            NonceStatus::Invalid
        );
        assert_eq!(
            issuer.check(&nonce, "example.test", u64::MAX),
            NonceStatus::Valid
        );
    }

    #[test]
    fn forged_or_foreign_nonce_is_invalid() {
        let issuer = issuer();
        let nonce = issuer.issue(NOW, "example.test", [1; 16]);
        assert_eq!(
            issuer.check(&nonce, "other.test", NOW),
            NonceStatus::Invalid
        );
        let other = NonceIssuer::new([8; 32]);
        assert_eq!(
            other.check(&nonce, "example.test", NOW),
            NonceStatus::Invalid
        );
        // Flip every character in turn: the tag catches each change.
        for i in 0..nonce.len() {
            let mut forged = nonce.clone().into_bytes();
            forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
            let forged = String::from_utf8(forged).unwrap();
            assert_eq!(
                issuer.check(&forged, "example.test", NOW),
                NonceStatus::Invalid,
                "{i}"
            );
        }
        // Re-date a genuine nonce without re-tagging it.
        let mut raw = [0u8; RAW_LEN];
        assert!(base64url_decode(nonce.as_bytes(), &mut raw));
        raw[..8].copy_from_slice(&(NOW + 100).to_be_bytes());
        let mut redated = String::new();
        base64url_encode(&raw, &mut redated);
        assert_eq!(
            issuer.check(&redated, "example.test", NOW + 350),
            NonceStatus::Invalid
        );
        for garbage in [
            "",
            "x",
            &nonce[..53],
            &format!("{nonce}A"),
            &"A".repeat(54),
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        ] {
            assert_eq!(
                issuer.check(garbage, "example.test", NOW),
                NonceStatus::Invalid
            );
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let shown = format!("{:?}", issuer());
        assert_eq!(
            shown,
            "NonceIssuer { lifetime_secs: 300, max_skew_secs: 5, .. }"
        );
    }
}
