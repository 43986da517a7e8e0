//! Fuzz target `iam_policy`: see `berth::fuzzing::iam_policy`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| berth::fuzzing::iam_policy(data));
