//! Fuzz target `ecr_request`: see `berth::fuzzing::ecr_request`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| berth::fuzzing::ecr_request(data));
