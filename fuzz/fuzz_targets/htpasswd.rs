//! Fuzz target `htpasswd`: see [`strata_fuzz::htpasswd`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_fuzz::htpasswd(data));
