//! Fuzz target `lifecycle_policy`: see `berth::fuzzing::lifecycle_policy`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| berth::fuzzing::lifecycle_policy(data));
