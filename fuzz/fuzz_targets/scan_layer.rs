//! Fuzz target `scan_layer`: see `berth::fuzzing::scan_layer`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| berth::fuzzing::scan_layer(data));
