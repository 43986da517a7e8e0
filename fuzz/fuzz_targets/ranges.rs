//! Fuzz target `ranges`: see `berth::fuzzing::ranges`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| berth::fuzzing::ranges(data));
