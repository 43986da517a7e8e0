//! Fuzz target `sigv4`: see `berth::fuzzing::sigv4`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| berth::fuzzing::sigv4(data));
