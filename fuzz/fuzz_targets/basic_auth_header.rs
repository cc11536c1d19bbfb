//! Fuzz target `basic_auth_header`: see [`strata_fuzz::basic_auth_header`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_fuzz::basic_auth_header(data));
