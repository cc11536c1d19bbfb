//! The configuration: the fields of a `kind = "basic_auth"` table, their defaults, a `Debug` that
//! never shows a password, and the checks of the realm and user names.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use http::HeaderValue;
use serde::Deserialize;

use crate::middleware::ConfigError;

/// The configuration of a [`BasicAuth`](super::BasicAuth) layer: the fields of a `kind = "basic_auth"` table.
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
    /// How long, in seconds, a verified credential is remembered. Default: 300; `0` disables the
    /// cache; at most 86 400.
    #[serde(default = "default_cache_ttl_secs")]
    pub cache_ttl_secs: u64,
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

fn default_cache_ttl_secs() -> u64 {
    300
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
    /// The documented defaults, with no users yet: [`BasicAuth::new`](super::BasicAuth::new) requires at least one.
    fn default() -> Self {
        BasicAuthConfig {
            realm: default_realm(),
            users: BTreeMap::new(),
            htpasswd: None,
            allow_plaintext: false,
            forward_user_header: None,
            strip_authorization: false,
            cache_ttl_secs: default_cache_ttl_secs(),
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
            .field("cache_ttl_secs", &self.cache_ttl_secs)
            .field("cache_capacity", &self.cache_capacity)
            .field("max_failures", &self.max_failures)
            .field("failure_window", &self.failure_window)
            .finish()
    }
}

/// `Basic realm="…", charset="UTF-8"` with the realm as a quoted-string (RFC 9110 §5.6.4).
pub(super) fn challenge_value(realm: &str) -> Result<HeaderValue, ConfigError> {
    if realm.is_empty() || !realm.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err(ConfigError::field("realm", "a non-empty realm of printable ASCII characters"));
    }
    let escaped = realm.replace('\\', "\\\\").replace('"', "\\\"");
    HeaderValue::from_str(&format!("Basic realm=\"{escaped}\", charset=\"UTF-8\""))
        .map_err(|_| ConfigError::field("realm", "a non-empty realm of printable ASCII characters"))
}

/// RFC 7617: a user-id cannot contain a colon or control characters.
pub(super) fn validate_user(user: &str) -> Result<(), &'static str> {
    if user.is_empty() {
        Err("the user name is empty")
    } else if user.contains(':') {
        Err("a user name cannot contain `:` (Basic credentials are `user:password`)")
    } else if user.chars().any(char::is_control) {
        Err("a user name cannot contain control characters")
    } else {
        Ok(())
    }
}
