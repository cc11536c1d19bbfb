//! The strata gateway: reads a TOML file of named middlewares and routes, builds the same stacks the
//! library builds in code, and serves them in front of built-in apps or upstream servers.
//!
//! - [`config`]: TOML → typed config, with file:line:column errors.
//! - [`explain_request`]: one request through a route's onion, layer by layer (`strata explain
//!   --request`), and the debug log of sampled traces.
//! - [`registry`]: middleware kind name → constructor.
//! - [`routes`]: the router (longest prefix wins) and the per-route onions; [`hosts`]: routing by host.
//! - [`proxy`]: the reverse proxy behind `upstream` routes; [`upstream`]: a route's targets, how
//!   one is picked, their health and the retry budget; [`pool`]: their HTTP/1.1 connections.
//! - [`server`]: the gateway's listeners on the library's server ([`strata::server`]: HTTP/1.1 and
//!   HTTP/2, the connection timeouts and cap, graceful shutdown), TLS, hot reload; [`limits`]: the
//!   process's open-file limit the default connection cap follows.
//! - [`tls`]: TLS termination: certificates picked by SNI, the rustls configuration.
//! - [`apps`]: the built-in apps (`tasks`, `echo`).
//! - [`runtime_log`]: the gateway's own log on stderr (`[log]`, `RUST_LOG`), reloadable.
//! - [`systemd`]: readiness, reload and stop notifications for `Type=notify` units.
//! - [`tls_client`]: TLS to `https://` upstreams (trust, verified name, connectors).
//! - [`trace`]: OpenTelemetry spans of sampled requests, exported over OTLP/HTTP.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod apps;
pub mod config;
pub mod explain_request;
pub mod hosts;
pub mod limits;
pub mod metrics;
pub mod observe;
pub mod pool;
pub mod proxy;
pub mod registry;
pub mod routes;
pub mod runtime_log;
pub mod server;
pub mod systemd;
pub mod tls;
pub mod tls_client;
pub mod trace;
pub mod upstream;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use strata::middleware::{BuildContext, LogOutputs, SharedResources, VerifyPool};

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
/// Its access logs get outputs of their own.
pub fn load(path: Option<&Path>) -> Result<Gateway, LoadError> {
    load_with_log(path, &LogOutputs::new()).map(|(gateway, _)| gateway)
}

/// [`load`], with the config's `[log]` section (which the gateway itself does not keep), opening
/// the access logs' outputs through `log_outputs` (a server passes the same registry at every
/// reload, so a file keeps one output).
pub fn load_with_log(
    path: Option<&Path>,
    log_outputs: &LogOutputs,
) -> Result<(Gateway, config::LogSettings), LoadError> {
    let file = ConfigFile::read(path)?;
    let config = file.parse()?;
    let log = config.log.clone();
    Ok((file.build(config, log_outputs)?, log))
}

/// A config's text, read but not parsed: [`load`] in steps, for a caller that acts between
/// parsing and building (the binary installs its runtime log as `[log]` says before the
/// middlewares, which may log, are built).
pub struct ConfigFile {
    /// The name used in messages: the path, or `<embedded default>`.
    pub name: String,
    /// The TOML text.
    pub text: String,
    /// The directory relative paths in the config start from.
    pub base_dir: PathBuf,
}

impl ConfigFile {
    /// Reads `path`, or takes [`DEFAULT_CONFIG`] when it is `None`.
    pub fn read(path: Option<&Path>) -> Result<ConfigFile, LoadError> {
        Ok(match path {
            Some(path) => ConfigFile {
                text: std::fs::read_to_string(path).map_err(|e| LoadError::Read(path.to_path_buf(), e))?,
                name: path.display().to_string(),
                base_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            },
            None => ConfigFile {
                name: "<embedded default>".to_string(),
                text: DEFAULT_CONFIG.to_string(),
                base_dir: PathBuf::new(),
            },
        })
    }

    /// Parses and checks the text (every section, every reference).
    pub fn parse(&self) -> Result<config::Config<'_>, LoadError> {
        config::Config::parse(&self.name, &self.text, apps::NAMES).map_err(LoadError::Invalid)
    }

    /// Builds the middlewares, routes and listeners' settings of a config [`ConfigFile::parse`] made,
    /// opening the access logs' outputs through `log_outputs`.
    pub fn build(&self, config: config::Config<'_>, log_outputs: &LogOutputs) -> Result<Gateway, LoadError> {
        Gateway::build(config, &build_context(&self.base_dir, log_outputs)).map_err(LoadError::Invalid)
    }
}

/// What the middlewares of a config in `base_dir` are built with.
///
/// Every `basic_auth` layer of the process, on every route and after every reload, verifies slow
/// hashes on the same [`VerifyPool`]: its threads bound the CPU and argon2 memory of all of them
/// together (a reload builds new layers while the old ones finish their requests; two pools would
/// double the bound). Its threads start on the first slow verification, so a config without
/// `basic_auth` costs none. Access logs open their outputs through `log_outputs`, which the server
/// keeps for its life, so that layers and reloads writing one file share one output.
pub fn build_context(base_dir: &Path, log_outputs: &LogOutputs) -> BuildContext {
    static VERIFY_POOL: OnceLock<VerifyPool> = OnceLock::new();
    BuildContext {
        base_dir: base_dir.to_path_buf(),
        shared: SharedResources::default()
            .with_verify_pool(VERIFY_POOL.get_or_init(VerifyPool::default).clone())
            .with_log_outputs(log_outputs.clone())
            .with_http_client(tls_client::services_client()),
    }
}

/// [`load`], building with `options` (see [`Gateway::build_with`]).
pub fn load_with(path: Option<&Path>, options: &routes::BuildOptions) -> Result<Gateway, LoadError> {
    let file = ConfigFile::read(path)?;
    let config = file.parse()?;
    Gateway::build_with(config, &build_context(&file.base_dir, &LogOutputs::new()), options).map_err(LoadError::Invalid)
}
