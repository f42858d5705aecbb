//! libFuzzer entry point for `parse_message`; the checks are `huddle_fuzz::check_parse_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| huddle_fuzz::check_parse_message(data));
