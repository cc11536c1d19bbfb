//! The production middlewares, one file each, read top to bottom: config struct (serde, the same
//! fields as the gateway's TOML table) → constructor that validates and precomputes → `handle` →
//! unit tests.
//!
//! Every constructor has the shape `fn new(config: XConfig, ctx: &BuildContext) -> Result<X, ConfigError>`
//! so the gateway's registry of kinds is one line per kind.

use std::fmt;
use std::path::{Path, PathBuf};

pub mod compression;
pub use compression::{Compression, CompressionConfig};

pub mod errors;
pub use errors::{Errors, ErrorsConfig, GeneratedError};

pub mod cors;
pub use cors::{Cors, CorsBuilder, CorsConfig};
pub mod basic_auth;
pub use basic_auth::{BasicAuth, BasicAuthBuilder, BasicAuthConfig, HashScheme};

pub mod access_log;
pub mod request_id;
pub use access_log::{AccessLog, AccessLogConfig, LogFormat};
pub use request_id::{RequestId, RequestIdConfig, TraceContext, TraceContextMode};
pub mod timing;
pub use timing::{Timing, TimingConfig};
pub mod timeout;
pub use timeout::{Timeout, TimeoutConfig};
pub mod body_limit;
pub use body_limit::{BodyLimit, BodyLimitConfig};
pub mod rate_limit;
pub use rate_limit::{RateLimit, RateLimitConfig};

/// Parses a config duration: `"500ms"`, `"10s"`, `"2m"` or `"1h"` (a whole number and a unit).
/// Shared by every setting that takes one, so they all accept the same forms.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    use std::time::Duration;
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let expected = || format!("`{text}`: expected a duration such as \"500ms\", \"10s\", \"2m\" or \"1h\"");
    let n: u64 = number.parse().map_err(|_| expected())?;
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(n.saturating_mul(3600))),
        _ => Err(expected()),
    }
}

/// What a constructor may need besides its own config.
#[derive(Clone, Debug, Default)]
pub struct BuildContext {
    /// The directory relative paths in a config are resolved against (the config file's directory).
    pub base_dir: PathBuf,
}

impl BuildContext {
    /// Resolves a path from a config against [`BuildContext::base_dir`].
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() { path.to_path_buf() } else { self.base_dir.join(path) }
    }
}

/// A configuration a middleware's constructor rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The config field at fault, when one is (the gateway points at its line and column).
    pub field: Option<&'static str>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl ConfigError {
    /// An error about one field.
    pub fn field(field: &'static str, message: impl Into<String>) -> Self {
        ConfigError { field: Some(field), message: message.into() }
    }

    /// An error about the config as a whole.
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError { field: None, message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(f, "`{field}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}
