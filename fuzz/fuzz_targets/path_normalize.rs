//! Fuzz target `path_normalize`: see [`strata_fuzz::path_normalize`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_fuzz::path_normalize(data));
