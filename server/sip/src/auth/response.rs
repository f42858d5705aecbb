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
    match creds.algorithm() {
        Algorithm::Md5 => verify::<Md5>(creds, method, ha1_hex, entity_body),
        Algorithm::Sha256 => verify::<Sha256>(creds, method, ha1_hex, entity_body),
    }
}

fn verify<D: Digest>(
    creds: &Credentials<'_>,
    method: &str,
    ha1_hex: &str,
    entity_body: Option<&[u8]>,
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
    let expected = expected::<D>(creds, method, ha1, entity_body);
    constant_time_eq(&expected, claimed)
}

/// `KD(HA1, nonce ":" nc ":" cnonce ":" qop ":" HA2)`, or `KD(HA1, nonce ":" HA2)` without qop.
fn expected<D: Digest>(
    creds: &Credentials<'_>,
    method: &str,
    ha1: &[u8],
    entity_body: Option<&[u8]>,
) -> Output<D> {
    let mut buf = [0u8; 2 * MAX_DIGEST];

    let mut ha2 = D::new();
    ha2.update(method.as_bytes());
    ha2.update(b":");
    ha2.update(creds.uri().as_bytes());
    if creds.qop() == Some(Qop::AuthInt) {
        let body = D::digest(entity_body.unwrap_or_default());
        ha2.update(b":");
        ha2.update(hex::encode_into(&body, &mut buf).as_bytes());
    }
    let ha2 = ha2.finalize();

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
    response.update(hex::encode_into(&ha2, &mut buf).as_bytes());
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
