//! Sans-IO digest authentication: RFC 3261 §22 with RFC 7616 / RFC 8760 (MD5 and SHA-256, `qop=auth`).
//!
//! This module owns everything digest authentication can decide from header values, stored HA1s,
//! caller-supplied randomness and a caller-supplied clock: parsing `Authorization` /
//! `Proxy-Authorization` values ([`Credentials`]), checking responses ([`verify_response`]),
//! stateless nonces ([`NonceIssuer`]), nonce-count replay protection ([`NonceCounts`]) and the
//! `WWW-Authenticate` / `Proxy-Authenticate` value ([`challenge`]). It never reads the clock, never
//! draws random numbers and never sees a password after [`ha1`] has turned it into what a user
//! record stores.
//!
//! # One request, step by step
//!
//! The order matters and is the caller's job, because only the caller knows its user store, its
//! role (registrar → 401 `WWW-Authenticate`, proxy → 407 `Proxy-Authenticate`) and its
//! Request-URI model:
//!
//! 1. [`Credentials::parse`]. Errors say which response they lead to ([`AuthError::should_challenge`]):
//!    an unknown scheme or algorithm gets a challenge (RFC 4475 `regaut01`), broken syntax gets 400.
//! 2. [`Credentials::is_empty`] (SIPml5's IMS-style pre-challenge credentials) or a foreign realm:
//!    ignore them and challenge.
//! 3. [`NonceIssuer::check`]: [`NonceStatus::Invalid`] → fresh challenge.
//! 4. The digest `uri` must name the Request-URI (RFC 2617 §3.2.2.5, else 400); SIPml5 copies it.
//! 5. Look up the HA1 for `(username, algorithm)` and [`verify_response`]. Failure → fresh
//!    challenge (an unknown user and a wrong password must look the same).
//! 6. Only now may a [`NonceStatus::Stale`] nonce be answered with `stale=true`: RFC 7616 §3.3
//!    reserves `stale=true` for requests whose digest was right, and the client then retries
//!    silently instead of asking its user for a password.
//! 7. [`NonceCounts::accept`]: a replayed or non-increasing `nc` → challenge with `stale=true`, so a
//!    legitimate client that merely raced itself recovers (SIPml5 only accepts a second challenge
//!    for a realm when it is `stale=true`).
//!
//! ACK and CANCEL are never challenged (RFC 3261 §22.1); the caller skips them.
//!
//! ```
//! use huddle_sip::auth::{self, Algorithm, Credentials, NonceCounts, NonceIssuer, NonceStatus};
//!
//! #[derive(Debug, PartialEq)]
//! enum Outcome { Accept, Challenge { stale: bool }, BadRequest }
//!
//! fn authenticate(
//!     value: &str, method: &str, request_uri: &str, realm: &str, now: u64,
//!     issuer: &NonceIssuer, counts: &mut NonceCounts,
//!     lookup_ha1: impl Fn(&str, Algorithm) -> Option<String>,
//! ) -> Outcome {
//!     let fresh = Outcome::Challenge { stale: false };
//!     let creds = match Credentials::parse(value) {
//!         Ok(creds) => creds,
//!         Err(e) if e.should_challenge() => return fresh,
//!         Err(_) => return Outcome::BadRequest,
//!     };
//!     if creds.is_empty() || creds.realm() != realm {
//!         return fresh;
//!     }
//!     let status = issuer.check(creds.nonce(), realm, now);
//!     if status == NonceStatus::Invalid {
//!         return fresh;
//!     }
//!     if creds.uri() != request_uri {
//!         return Outcome::BadRequest;
//!     }
//!     let Some(ha1) = lookup_ha1(creds.username(), creds.algorithm()) else { return fresh };
//!     if !auth::verify_response(&creds, method, &ha1, None) {
//!         return fresh;
//!     }
//!     if status == NonceStatus::Stale || !counts.accept(creds.nonce(), creds.nc(), now) {
//!         return Outcome::Challenge { stale: true };
//!     }
//!     Outcome::Accept
//! }
//!
//! let realm = "example.test";
//! let now = 1_700_000_000;
//! let issuer = NonceIssuer::new([7; 32]);
//! let mut counts = NonceCounts::for_issuer(&issuer, 10_000);
//! let lookup = |user: &str, alg| (user == "alice").then(|| auth::ha1(user, realm, "secret", alg));
//!
//! // SIPml5 with `enable_early_ims: false` opens with empty credentials: challenge it.
//! let ims = r#"Digest username="alice",realm="example.test",nonce="",uri="sip:example.test",response="""#;
//! let outcome = authenticate(ims, "REGISTER", "sip:example.test", realm, now, &issuer, &mut counts, lookup);
//! assert_eq!(outcome, Outcome::Challenge { stale: false });
//!
//! // One challenge per realm, MD5 unless configured otherwise (SIPml5 only computes MD5).
//! let nonce = issuer.issue(now, realm, [42; 16]); // the salt comes from the caller's CSPRNG
//! let value = auth::challenge(realm, &nonce, Algorithm::Md5, false, None);
//! assert!(value.starts_with(r#"Digest realm="example.test",nonce=""#));
//! ```
//!
//! # Design choices
//!
//! * **Nonces are stateless**: `base64url(timestamp ‖ salt ‖ HMAC-SHA256(secret, timestamp ‖ salt ‖
//!   realm)[..16])`, see [`NonceIssuer`]. Any node holding the secret can check any nonce, and a
//!   flood of unauthenticated REGISTERs costs the server no memory.
//! * **Replay state is bounded**: [`NonceCounts`] is touched only after a response verified, keeps
//!   one small entry per nonce and drops the oldest when full.
//! * **Zero-copy parsing**: [`Credentials`] borrows from the header value and allocates only for a
//!   quoted string that contains a backslash escape. Verification hashes in place into stack
//!   buffers; the only allocations on the hot path are the nonce and challenge strings we send.
#![warn(missing_docs)]

mod algorithm;
mod challenge;
mod credentials;
mod error;
mod hex;
mod nonce;
mod replay;
mod response;

#[cfg(test)]
mod tests;

pub use algorithm::{ha1, Algorithm};
pub use challenge::{challenge, challenge_into};
pub use credentials::{Credentials, Param, Qop};
pub use error::AuthError;
pub use nonce::{NonceId, NonceIssuer, NonceStatus};
pub use replay::NonceCounts;
pub use response::{verify_response, verify_response_cached, Ha2Cache};
