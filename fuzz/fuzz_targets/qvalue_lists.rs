//! Fuzz target `qvalue_lists`: see [`strata_fuzz::qvalue_lists`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_fuzz::qvalue_lists(data));
