//! libFuzzer entry point for `stream_framing`; the checks are `huddle_fuzz::check_stream_framing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| huddle_fuzz::check_stream_framing(data));
