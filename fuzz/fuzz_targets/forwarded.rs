//! Fuzz target `forwarded`: see `berth::fuzzing::forwarded`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| berth::fuzzing::forwarded(data));
