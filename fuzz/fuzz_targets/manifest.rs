//! Fuzz target `manifest`: see `berth::fuzzing::manifest`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| berth::fuzzing::manifest(data));
