//! libFuzzer entry point for `digest_credentials`; the checks are `huddle_fuzz::check_digest_credentials`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| huddle_fuzz::check_digest_credentials(data));
