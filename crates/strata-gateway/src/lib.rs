//! The strata gateway: reads a TOML file of named middlewares and routes, builds the same stacks the
//! library builds in code, and serves them in front of built-in apps or upstream servers.
//!
//! - [`config`]: TOML → typed config, with file:line:column errors.
//! - [`registry`]: middleware kind name → constructor.
//! - [`routes`]: the router (longest prefix wins) and the per-route onions; [`hosts`]: routing by host.
//! - [`proxy`]: the reverse proxy behind `upstream` routes; [`upstream`]: a route's targets, how
//!   one is picked, their health and the retry budget; [`pool`]: their HTTP/1.1 connections.
//! - [`server`]: listeners, HTTP/1.1 and HTTP/2, graceful shutdown, hot reload; [`limits`]: the
//!   connection timeouts and the connection cap.
//! - [`tls`]: TLS termination: certificates picked by SNI, the rustls configuration.
//! - [`apps`]: the built-in apps (`tasks`, `echo`).
//! - [`systemd`]: readiness, reload and stop notifications for `Type=notify` units.
//! - [`tls_client`]: TLS to `https://` upstreams (trust, verified name, connectors).
//! - [`trace`]: OpenTelemetry spans of sampled requests, exported over OTLP/HTTP.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod apps;
pub mod config;
pub mod hosts;
pub mod limits;
pub mod metrics;
pub mod observe;
pub mod pool;
pub mod proxy;
pub mod registry;
pub mod routes;
pub mod server;
pub mod systemd;
pub mod tls;
pub mod tls_client;
pub mod trace;
pub mod upstream;

use std::fmt;
use std::path::{Path, PathBuf};

use strata::middleware::BuildContext;

pub use routes::Gateway;

/// The config `strata serve` uses when given none.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// Why a config could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// The file could not be read.
    Read(PathBuf, std::io::Error),
    /// The file was read but is invalid.
    Invalid(config::ConfigErrors),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Read(path, e) => write!(f, "{}: error: cannot read the config: {e}", path.display()),
            LoadError::Invalid(errors) => errors.fmt(f),
        }
    }
}

impl std::error::Error for LoadError {}

/// Loads and builds a gateway from a config file, or from [`DEFAULT_CONFIG`] when `path` is `None`.
pub fn load(path: Option<&Path>) -> Result<Gateway, LoadError> {
    let (file, text, base_dir) = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| LoadError::Read(path.to_path_buf(), e))?;
            let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
            (path.display().to_string(), text, base)
        }
        None => ("<embedded default>".to_string(), DEFAULT_CONFIG.to_string(), PathBuf::new()),
    };
    let config = config::Config::parse(&file, &text, apps::NAMES).map_err(LoadError::Invalid)?;
    Gateway::build(config, &BuildContext { base_dir }).map_err(LoadError::Invalid)
}
