//! The strata gateway: reads a TOML file of named middlewares and routes, builds the same stacks the
//! library builds in code, and serves them in front of built-in apps or upstream servers.
//!
//! - [`config`]: TOML → typed config, with file:line:column errors.
//! - [`registry`]: middleware kind name → constructor.
//! - [`routes`]: the router (longest prefix wins) and the per-route onions.
//! - [`server`]: listeners, HTTP/1.1 and HTTP/2, limits, graceful shutdown.
//! - [`apps`]: the built-in apps (`tasks`, `echo`).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod apps;
