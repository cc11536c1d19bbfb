//! Fuzz target `client_ip`: see [`strata_fuzz::client_ip_headers`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_fuzz::client_ip_headers(data));
