//! `strata::serve` with a real client on loopback.
