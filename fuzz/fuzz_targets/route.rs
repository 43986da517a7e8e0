//! Fuzz target `route`: see `berth::fuzzing::route`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| berth::fuzzing::route(data));
