//! Fuzz target `cors_origin`: see [`strata_fuzz::cors_origin`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_fuzz::cors_origin(data));
