//! Fuzz target `rate_and_duration`: see [`strata_fuzz::rate_and_duration`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_fuzz::rate_and_duration(data));
