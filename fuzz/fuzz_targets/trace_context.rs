//! Fuzz target `trace_context`: see [`strata_fuzz::trace_context`] for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_fuzz::trace_context(data));
