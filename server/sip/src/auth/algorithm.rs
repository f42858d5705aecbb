//! Digest algorithms (RFC 7616 §3.3, RFC 8760) and the HA1 a user record stores.

use std::fmt;
use std::str::FromStr;

use md5::Md5;
use sha2::digest::{Digest, Output};
use sha2::Sha256;

use super::error::AuthError;
use super::hex;

/// A digest algorithm this server can verify.
///
/// Only the two non-session algorithms SIP uses in practice. The `-sess` variants are refused with
/// [`AuthError::UnsupportedAlgorithm`] (few SIP clients implement them, and the client can answer
/// the algorithm we offered instead). The enum is exhaustive on purpose: adding one must break
/// every `match` that picks a stored HA1, so no user store silently lacks the new hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// `MD5` (RFC 2617, RFC 7616). The default when `algorithm` is absent, and the only one
    /// SIPml5 computes correctly, whatever the challenge said.
    #[default]
    Md5,
    /// `SHA-256` (RFC 7616, RFC 8760).
    Sha256,
}

impl Algorithm {
    /// Every supported algorithm: a user record keeps one HA1 for each.
    pub const ALL: [Algorithm; 2] = [Algorithm::Md5, Algorithm::Sha256];

    /// Parses an `algorithm` parameter value, ignoring ASCII case.
    ///
    /// An absent parameter means [`Algorithm::Md5`] (RFC 7616 §3.3), which is
    /// `Algorithm::default()`. `-sess` and `SHA-512-256` variants give
    /// [`AuthError::UnsupportedAlgorithm`], anything else [`AuthError::UnknownAlgorithm`].
    pub fn parse(value: &str) -> Result<Self, AuthError> {
        const UNSUPPORTED: [&str; 4] = [
            "MD5-sess",
            "SHA-256-sess",
            "SHA-512-256",
            "SHA-512-256-sess",
        ];
        if value.eq_ignore_ascii_case("MD5") {
            Ok(Self::Md5)
        } else if value.eq_ignore_ascii_case("SHA-256") {
            Ok(Self::Sha256)
        } else if UNSUPPORTED
            .iter()
            .any(|name| value.eq_ignore_ascii_case(name))
        {
            Err(AuthError::UnsupportedAlgorithm)
        } else {
            Err(AuthError::UnknownAlgorithm)
        }
    }

    /// The token as it appears on the wire: `MD5` or `SHA-256`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
        }
    }

    /// Length in hex digits of this algorithm's HA1 and response: 32 for MD5, 64 for SHA-256.
    /// Useful to validate stored HA1s when loading a user store.
    pub const fn hex_len(self) -> usize {
        match self {
            Self::Md5 => 32,
            Self::Sha256 => 64,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// `H(username ":" realm ":" password)` as lowercase hex (RFC 7616 §3.4.2), the value a user
/// record stores instead of the password, one per [`Algorithm`].
///
/// `username` and `realm` are the unquoted, unescaped values, exactly as the client will use them.
pub fn ha1(username: &str, realm: &str, password: &str, algorithm: Algorithm) -> String {
    let parts = [username.as_bytes(), realm.as_bytes(), password.as_bytes()];
    match algorithm {
        Algorithm::Md5 => hex::encode(&hash_joined::<Md5>(&parts)),
        Algorithm::Sha256 => hex::encode(&hash_joined::<Sha256>(&parts)),
    }
}

/// Hash of `parts` joined by `:`, without building the joined string.
pub(super) fn hash_joined<D: Digest>(parts: &[&[u8]]) -> Output<D> {
    let mut hasher = D::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update(b":");
        }
        hasher.update(part);
    }
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_is_case_insensitive_and_refuses_sess() {
        assert_eq!(Algorithm::parse("MD5"), Ok(Algorithm::Md5));
        assert_eq!(Algorithm::parse("md5"), Ok(Algorithm::Md5));
        assert_eq!(Algorithm::parse("SHA-256"), Ok(Algorithm::Sha256));
        assert_eq!("sha-256".parse::<Algorithm>(), Ok(Algorithm::Sha256));
        assert_eq!(
            Algorithm::parse("MD5-sess"),
            Err(AuthError::UnsupportedAlgorithm)
        );
        assert_eq!(
            Algorithm::parse("sha-256-SESS"),
            Err(AuthError::UnsupportedAlgorithm)
        );
        assert_eq!(
            Algorithm::parse("SHA-512-256"),
            Err(AuthError::UnsupportedAlgorithm)
        );
        assert_eq!(Algorithm::parse("SHA256"), Err(AuthError::UnknownAlgorithm));
        assert_eq!(Algorithm::parse(""), Err(AuthError::UnknownAlgorithm));
        assert_eq!(Algorithm::default(), Algorithm::Md5);
        for alg in Algorithm::ALL {
            assert_eq!(Algorithm::parse(alg.as_str()), Ok(alg));
            assert_eq!(alg.to_string(), alg.as_str());
        }
    }

    #[test]
    fn ha1_matches_rfc_examples() {
        // RFC 2617 §3.5 inputs; tests.rs checks this HA1 yields the RFC's response 6629fae4….
        assert_eq!(
            ha1(
                "Mufasa",
                "testrealm@host.com",
                "Circle Of Life",
                Algorithm::Md5
            ),
            "939e7578ed9e3c518a452acee763bce9"
        );
        for alg in Algorithm::ALL {
            assert_eq!(ha1("a", "b", "c", alg).len(), alg.hex_len());
        }
        assert_eq!(
            ha1("a", "b", "c", Algorithm::Sha256),
            hex::encode(&Sha256::digest(b"a:b:c"))
        );
    }
}
