//! Fuzz checks for `huddle-sip`: the bodies of the cargo-fuzz targets in `fuzz_targets/`, kept
//! as plain functions so that `cargo test` (tests/corpus.rs) runs the checked-in seed corpus
//! through them on stable Rust, without libFuzzer.
//!
//! Each check takes arbitrary bytes and returns normally whatever they are, including when the
//! library rejects them: rejecting is fine, panicking is not. Beyond "no panic" every check
//! asserts the library's own documented invariants and cross-checks one component against
//! another (parser against builders, chunked framing against one-shot framing, digest
//! verification against an independent computation), so the fuzzer finds logic bugs too.
//! An `assert!` failing here is a bug in `huddle-sip` unless the assertion itself is wrong.

mod digest;
mod framing;
mod message;

pub use digest::{check_digest_credentials, genuine_nonce};
pub use framing::check_stream_framing;
pub use message::check_parse_message;

/// A fuzz check: arbitrary bytes in, a panic out when an invariant fails.
pub type Check = fn(&[u8]);

/// Every check, by target name (also the name of its corpus directory).
pub const CHECKS: [(&str, Check); 3] = [
    ("parse_message", check_parse_message),
    ("stream_framing", check_stream_framing),
    ("digest_credentials", check_digest_credentials),
];
