//! Fuzz target `osv_record`: see `berth::fuzzing::osv_record`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| berth::fuzzing::osv_record(data));
