//! Why a set of digest credentials could not be used, and which SIP response that leads to.

use super::credentials::Param;

/// Why an `Authorization` / `Proxy-Authorization` value (or an `algorithm` value) was refused.
///
/// Every variant names the response it leads to. "Challenge" means 401 with `WWW-Authenticate`
/// from a registrar or UAS, 407 with `Proxy-Authenticate` from a proxy, carrying a fresh nonce and
/// `stale=false`; [`AuthError::should_challenge`] sorts the variants for the caller. The `Display`
/// text is short enough to serve as the reason phrase of a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The header value is empty or only whitespace. Leads to 400.
    #[error("Empty credentials")]
    Empty,
    /// The credentials use a scheme other than `Digest` (RFC 4475 §3.3.7 `regaut01`: a
    /// `NoOneKnowsThisScheme` value must be answered with a challenge, not an error). Leads to a
    /// challenge.
    #[error("Authorization scheme is not Digest")]
    NotDigest,
    /// A quoted string has no closing quote, or ends in a lone backslash. Leads to 400.
    #[error("Unterminated quoted string in credentials")]
    UnterminatedQuote,
    /// The parameter list is not `name=value` pairs separated by commas: a missing `=`, an empty
    /// name or value, stray characters between parameters. Leads to 400.
    #[error("Malformed digest parameter list")]
    BadParamSyntax,
    /// A digest parameter appears twice (RFC 7616 §3.4: each at most once). Leads to 400.
    #[error("Duplicate digest parameter {0}")]
    DuplicateParam(Param),
    /// A parameter RFC 3261 §22.4 / RFC 7616 §3.4 requires is absent: `username`, `realm`,
    /// `nonce`, `uri` and `response` always, `cnonce` and `nc` when `qop` is present. Leads to 400.
    #[error("Missing digest parameter {0}")]
    MissingParam(Param),
    /// `nc` is not one to eight hexadecimal digits. Leads to 400.
    #[error("Malformed digest nonce count")]
    InvalidNonceCount,
    /// `qop` is neither `auth` nor `auth-int`. The syntax may be fine but nothing can be verified,
    /// so this leads to a challenge, which offers `qop="auth"`.
    #[error("Unsupported digest qop")]
    UnsupportedQop,
    /// A registered algorithm this server does not verify: `MD5-sess`, `SHA-256-sess`,
    /// `SHA-512-256`, `SHA-512-256-sess`. Leads to a challenge naming the configured algorithm
    /// (RFC 7616 §3.7: the client then retries with an algorithm it was offered).
    #[error("Unsupported digest algorithm")]
    UnsupportedAlgorithm,
    /// An `algorithm` value no RFC defines. Leads to a challenge, like [`Self::UnsupportedAlgorithm`].
    #[error("Unknown digest algorithm")]
    UnknownAlgorithm,
}

impl AuthError {
    /// True when the right answer is a fresh challenge (401/407), false when it is 400 Bad Request.
    ///
    /// A challenge is the answer whenever the client might succeed by following it: it used a
    /// scheme, algorithm or qop it can replace with the one we offer. Malformed syntax will not
    /// improve with another round trip.
    pub fn should_challenge(self) -> bool {
        matches!(
            self,
            Self::NotDigest
                | Self::UnsupportedQop
                | Self::UnsupportedAlgorithm
                | Self::UnknownAlgorithm
        )
    }
}
