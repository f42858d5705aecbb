//! Checking a digest `response` against a stored HA1 (RFC 7616 §3.4.1, RFC 2617 §3.2.2.1).

use md5::Md5;
use sha2::digest::{Digest, Output};
use sha2::Sha256;

use super::algorithm::Algorithm;
use super::credentials::{Credentials, Qop};
use super::hex;

/// The largest digest we verify (SHA-256), sizing every stack buffer below.
const MAX_DIGEST: usize = 32;

/// True when `creds.response()` is the response a client knowing `ha1_hex` would have sent.
///
/// * `method` is the request method (`REGISTER`, `INVITE`, …), compared as given.
/// * `ha1_hex` is the stored HA1 for `creds.username()`, `creds.realm()` and
///   `creds.algorithm()`, as produced by [`ha1`](super::ha1) (either hex case). An HA1 of the
///   wrong length — typically an MD5 HA1 offered for SHA-256 credentials — never verifies.
/// * `entity_body` is only read for `qop=auth-int`; `None` means an empty body.
///
/// Covers `qop=auth`, `qop=auth-int` and RFC 2069 mode (`qop` absent: no `cnonce`, no `nc`).
/// The final comparison runs in time independent of where the digests differ. Nonce freshness,
/// the digest-uri and the nonce count are separate checks (see the [module docs](super)).
pub fn verify_response(
    creds: &Credentials<'_>,
    method: &str,
    ha1_hex: &str,
    entity_body: Option<&[u8]>,
) -> bool {
    verify_response_cached(
        creds,
        method,
        ha1_hex,
        entity_body,
        &mut Ha2Cache::default(),
    )
}

/// The `HA2` (`H(method ":" digest-uri)`, RFC 7616 §3.4.3) of the last request verified
/// without `qop=auth-int`, in hex, with what it was computed from.
///
/// A registrar hashes the same `REGISTER:sip:<domain>` for every refresh, a proxy the same
/// `INVITE:sip:<callee>` for every call to one user: one MD5 block and its hex per request
/// (~0.9 k instructions) that [`verify_response_cached`] takes from here instead.
#[derive(Debug, Clone)]
pub struct Ha2Cache {
    algorithm: Option<Algorithm>,
    /// `method ":" digest-uri`, the text hashed.
    input: String,
    hex: [u8; 2 * MAX_DIGEST],
    len: usize,
}

impl Default for Ha2Cache {
    fn default() -> Self {
        Ha2Cache {
            algorithm: None,
            input: String::new(),
            hex: [0; 2 * MAX_DIGEST],
            len: 0,
        }
    }
}

impl Ha2Cache {
    /// The HA2 of `method ":" uri` under `D` (`algorithm`), from the cache when it holds it.
    fn get<D: Digest>(&mut self, algorithm: Algorithm, method: &str, uri: &str) -> &str {
        let input = self.input.as_bytes();
        let hit = self.algorithm == Some(algorithm)
            && input.len() == method.len() + 1 + uri.len()
            && input.starts_with(method.as_bytes())
            && input[method.len()] == b':'
            && input.ends_with(uri.as_bytes());
        if !hit {
            self.algorithm = None;
            self.input.clear();
            self.input.push_str(method);
            self.input.push(':');
            self.input.push_str(uri);
            let ha2 = D::digest(self.input.as_bytes());
            self.len = hex::encode_into(&ha2, &mut self.hex).len();
            self.algorithm = Some(algorithm);
        }
        // Only ASCII hex digits were written.
        std::str::from_utf8(&self.hex[..self.len]).unwrap_or_default()
    }
}

/// [`verify_response`] with the HA2 of `method` and the credentials' `uri` kept in `cache`
/// from one call to the next (the same verdict, computed with one hash less when the previous
/// request had the same method, digest-uri and algorithm).
pub fn verify_response_cached(
    creds: &Credentials<'_>,
    method: &str,
    ha1_hex: &str,
    entity_body: Option<&[u8]>,
    cache: &mut Ha2Cache,
) -> bool {
    match creds.algorithm() {
        Algorithm::Md5 => verify::<Md5>(creds, method, ha1_hex, entity_body, cache),
        Algorithm::Sha256 => verify::<Sha256>(creds, method, ha1_hex, entity_body, cache),
    }
}

fn verify<D: Digest>(
    creds: &Credentials<'_>,
    method: &str,
    ha1_hex: &str,
    entity_body: Option<&[u8]>,
    cache: &mut Ha2Cache,
) -> bool {
    let len = <D as Digest>::output_size();
    if len > MAX_DIGEST {
        return false;
    }
    let mut ha1 = [0u8; 2 * MAX_DIGEST];
    let ha1 = &mut ha1[..2 * len];
    if !hex::lowercase_into(ha1_hex, ha1) {
        return false;
    }
    // Decoding the client's hex leaks timing only about the client's own input.
    let mut claimed = [0u8; MAX_DIGEST];
    let claimed = &mut claimed[..len];
    if !hex::decode_into(creds.response(), claimed) {
        return false;
    }
    let expected = expected::<D>(creds, method, ha1, entity_body, cache);
    constant_time_eq(&expected, claimed)
}

/// `KD(HA1, nonce ":" nc ":" cnonce ":" qop ":" HA2)`, or `KD(HA1, nonce ":" HA2)` without qop.
fn expected<D: Digest>(
    creds: &Credentials<'_>,
    method: &str,
    ha1: &[u8],
    entity_body: Option<&[u8]>,
    cache: &mut Ha2Cache,
) -> Output<D> {
    let mut buf = [0u8; 2 * MAX_DIGEST];
    let ha2_hex = if creds.qop() == Some(Qop::AuthInt) {
        // The body is part of it: nothing to keep.
        let mut ha2 = D::new();
        ha2.update(method.as_bytes());
        ha2.update(b":");
        ha2.update(creds.uri().as_bytes());
        let body = D::digest(entity_body.unwrap_or_default());
        ha2.update(b":");
        ha2.update(hex::encode_into(&body, &mut buf).as_bytes());
        let ha2 = ha2.finalize();
        hex::encode_into(&ha2, &mut buf)
    } else {
        cache.get::<D>(creds.algorithm(), method, creds.uri())
    };

    let mut response = D::new();
    response.update(ha1);
    response.update(b":");
    response.update(creds.nonce().as_bytes());
    response.update(b":");
    if let (Some(nc), Some(cnonce), Some(qop)) = (creds.nc_text(), creds.cnonce(), creds.qop_text())
    {
        for part in [nc, cnonce, qop] {
            response.update(part.as_bytes());
            response.update(b":");
        }
    }
    response.update(ha2_hex.as_bytes());
    response.finalize()
}

/// Equality whose running time depends only on the lengths, which are public (fixed per
/// algorithm). `black_box` keeps the optimiser from turning the fold into an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
