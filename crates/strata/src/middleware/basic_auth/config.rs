//! The gateway's `kind = "basic_auth"` table: its fields, their defaults, a `Debug` that never
//! shows a password, and [`BasicAuth::from_config`], which turns its text into typed values for
//! [`BasicAuthBuilder`](super::BasicAuthBuilder).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use http::HeaderName;
use serde::Deserialize;

use super::BasicAuth;
use crate::middleware::{BuildContext, ConfigError, parse_duration};

/// The configuration of a [`BasicAuth`] layer: the fields of a `kind = "basic_auth"` table.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// The protection space shown by browsers' login prompts. Default: `"strata"`. Printable ASCII.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Inline users: user name → password hash. Default: none.
    #[serde(default)]
    pub users: BTreeMap<String, String>,
    /// An htpasswd file (`user:hash` lines; `#` comments and blank lines skipped), relative to the
    /// config file's directory. Combined with `users`; a user defined twice is an error.
    #[serde(default)]
    pub htpasswd: Option<PathBuf>,
    /// Whether entries that are not a recognised hash are accepted as plaintext passwords.
    /// Default: `false` (such an entry is a build error).
    #[serde(default)]
    pub allow_plaintext: bool,
    /// A request header set to the authenticated user name for inner layers and the upstream
    /// (e.g. `"x-forwarded-user"`); any value the client sent in it is replaced. Default: none.
    #[serde(default)]
    pub forward_user_header: Option<String>,
    /// Whether `Authorization` is removed before inner layers and the upstream see the request.
    /// Default: `false`.
    #[serde(default)]
    pub strip_authorization: bool,
    /// How long a verified credential is remembered: a duration such as `"5m"` or `"30s"`.
    /// Default: `"5m"`; `"0s"` disables the cache; at most a day.
    #[serde(default = "default_cache_ttl")]
    pub cache_ttl: String,
    /// How many verified credentials are remembered at most. Default: 10 000; `0` disables the cache.
    #[serde(default = "default_cache_capacity")]
    pub cache_capacity: usize,
    /// How many failed attempts one client address may make within `failure_window` before its
    /// further attempts get `429` without being verified. Default: 10; `0` disables the limit.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    /// The window failures are counted in, from a client's first failure: a duration such as
    /// `"1m"`, `"30s"` or `"1h"`. Default: `"1m"`; at most a day.
    #[serde(default = "default_failure_window")]
    pub failure_window: String,
}

fn default_realm() -> String {
    "strata".to_string()
}

fn default_cache_ttl() -> String {
    "5m".to_string()
}

fn default_cache_capacity() -> usize {
    10_000
}

fn default_max_failures() -> u32 {
    10
}

fn default_failure_window() -> String {
    "1m".to_string()
}

impl Default for BasicAuthConfig {
    /// The documented defaults, with no users yet: [`BasicAuth::from_config`] requires at least one.
    fn default() -> Self {
        BasicAuthConfig {
            realm: default_realm(),
            users: BTreeMap::new(),
            htpasswd: None,
            allow_plaintext: false,
            forward_user_header: None,
            strip_authorization: false,
            cache_ttl: default_cache_ttl(),
            cache_capacity: default_cache_capacity(),
            max_failures: default_max_failures(),
            failure_window: default_failure_window(),
        }
    }
}

// Written by hand rather than derived: `users` may hold plaintext passwords (with
// `allow_plaintext`), and a config printed in a log must not leak them.
impl fmt::Debug for BasicAuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuthConfig")
            .field("realm", &self.realm)
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("htpasswd", &self.htpasswd)
            .field("allow_plaintext", &self.allow_plaintext)
            .field("forward_user_header", &self.forward_user_header)
            .field("strip_authorization", &self.strip_authorization)
            .field("cache_ttl", &self.cache_ttl)
            .field("cache_capacity", &self.cache_capacity)
            .field("max_failures", &self.max_failures)
            .field("failure_window", &self.failure_window)
            .finish()
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
impl BasicAuth {
    /// Builds the layer a `kind = "basic_auth"` table declares: parses the durations and the
    /// header name, resolves the htpasswd path against `ctx.base_dir`, takes `ctx.shared.verify_pool`
    /// when there is one, and validates the rest as [`BasicAuthBuilder::build`](super::BasicAuthBuilder::build) does.
    pub fn from_config(config: BasicAuthConfig, ctx: &BuildContext) -> Result<BasicAuth, ConfigError> {
        let cache_ttl = parse_duration(&config.cache_ttl).map_err(|why| {
            ConfigError::field("cache_ttl", format!("{why}; the default is \"5m\", \"0s\" disables the cache"))
        })?;
        let failure_window = parse_duration(&config.failure_window)
            .map_err(|why| ConfigError::field("failure_window", format!("{why}; the default is \"1m\"")))?;
        let mut builder = BasicAuth::builder()
            .realm(config.realm)
            .users(config.users)
            .allow_plaintext(config.allow_plaintext)
            .strip_authorization(config.strip_authorization)
            .cache_ttl(cache_ttl)
            .cache_capacity(config.cache_capacity)
            .max_failures(config.max_failures)
            .failure_window(failure_window);
        if let Some(raw) = &config.forward_user_header {
            let name = HeaderName::from_bytes(raw.as_bytes())
                .map_err(|_| ConfigError::field("forward_user_header", format!("`{raw}` is not a header name")))?;
            builder = builder.forward_user_header(name);
        }
        if let Some(path) = &config.htpasswd {
            builder = builder.htpasswd(ctx.resolve(path));
        }
        if let Some(pool) = &ctx.shared.verify_pool {
            builder = builder.verify_pool(pool.clone());
        }
        builder.build()
    }
}
