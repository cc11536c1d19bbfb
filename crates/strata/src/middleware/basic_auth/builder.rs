//! [`BasicAuthBuilder`]: the typed settings of a layer and the one function that validates them
//! ([`BasicAuthBuilder::build`]), which the gateway's config tables go through too.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::cache::CredentialCache;
use super::failures::{self, FailureLimit};
use super::hash::Verifier;
use super::htpasswd::{Entry, parse_htpasswd};
use super::pool::VerifyPool;
use super::{Account, BasicAuth};
use crate::middleware::ConfigError;

/// Refused so that a forwarded user name cannot change how the request is framed, routed or
/// authenticated upstream.
const UNFORWARDABLE: [HeaderName; 5] = [
    http::header::AUTHORIZATION,
    http::header::HOST,
    http::header::CONTENT_LENGTH,
    http::header::TRANSFER_ENCODING,
    http::header::CONNECTION,
];

/// The longest cache ttl: a day. Longer would mostly keep credentials alive in memory.
pub(super) const MAX_CACHE_TTL: Duration = Duration::from_secs(86_400);

/// The longest failure window: a day. Longer would mostly lock out clients who mistyped once.
pub(super) const MAX_FAILURE_WINDOW: Duration = Duration::from_secs(86_400);

/// The settings of a [`BasicAuth`] layer as typed values; [`build`](Self::build) validates them
/// (the gateway's `kind = "basic_auth"` tables go through it too, so both refuse the same things
/// with the same [`ConfigError::field`], named after the TOML key).
///
/// Start one with [`BasicAuth::builder`]. At least one user is required, from
/// [`user`](Self::user) or an [`htpasswd`](Self::htpasswd) file (a relative path resolves against
/// the current directory).
#[derive(Clone)]
pub struct BasicAuthBuilder {
    realm: String,
    users: BTreeMap<String, String>,
    htpasswd: Option<PathBuf>,
    allow_plaintext: bool,
    forward_user_header: Option<HeaderName>,
    strip_authorization: bool,
    cache_ttl: Duration,
    cache_capacity: usize,
    max_failures: u32,
    failure_window: Duration,
    verify_pool: Option<VerifyPool>,
}

impl Default for BasicAuthBuilder {
    /// The documented defaults, with no users yet.
    fn default() -> Self {
        BasicAuthBuilder {
            realm: "strata".to_string(),
            users: BTreeMap::new(),
            htpasswd: None,
            allow_plaintext: false,
            forward_user_header: None,
            strip_authorization: false,
            cache_ttl: Duration::from_secs(300),
            cache_capacity: 10_000,
            max_failures: 10,
            failure_window: Duration::from_secs(60),
            verify_pool: None,
        }
    }
}

// Written by hand rather than derived: `users` may hold plaintext passwords (with
// `allow_plaintext`), and a builder printed in a log must not leak them.
impl fmt::Debug for BasicAuthBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuthBuilder")
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
            .field("verify_pool", &self.verify_pool)
            .finish()
    }
}

impl BasicAuthBuilder {
    /// Sets the realm browsers show in their login prompt (default `"strata"`; printable ASCII).
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = realm.into();
        self
    }

    /// Adds a user with its password hash (argon2, bcrypt, `$apr1$`, `{SHA}`; or a plaintext
    /// password with [`allow_plaintext`](Self::allow_plaintext)).
    pub fn user(mut self, user: impl Into<String>, hash: impl Into<String>) -> Self {
        self.users.insert(user.into(), hash.into());
        self
    }

    /// Adds users and their password hashes, as [`user`](Self::user) does for one.
    pub fn users<U: Into<String>, H: Into<String>>(mut self, users: impl IntoIterator<Item = (U, H)>) -> Self {
        self.users.extend(users.into_iter().map(|(u, h)| (u.into(), h.into())));
        self
    }

    /// Reads more users from an htpasswd file (`user:hash` lines; `#` comments and blank lines
    /// skipped). A user defined twice, here or inline, is an error.
    pub fn htpasswd(mut self, path: impl Into<PathBuf>) -> Self {
        self.htpasswd = Some(path.into());
        self
    }

    /// Accepts entries that are not a recognised hash as plaintext passwords (default `false`:
    /// such an entry is a build error).
    pub fn allow_plaintext(mut self, allow: bool) -> Self {
        self.allow_plaintext = allow;
        self
    }

    /// Sets this request header to the authenticated user name for inner layers and the
    /// upstream, replacing any value the client sent. Headers the request depends on
    /// (`authorization`, `host`, `content-length`, `transfer-encoding`, `connection`) are refused.
    pub fn forward_user_header(mut self, name: HeaderName) -> Self {
        self.forward_user_header = Some(name);
        self
    }

    /// Removes `Authorization` before inner layers see the request (default `false`).
    pub fn strip_authorization(mut self, strip: bool) -> Self {
        self.strip_authorization = strip;
        self
    }

    /// How long a verified credential is remembered (default 5 minutes, at most a day;
    /// `Duration::ZERO` disables the cache).
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// How many verified credentials are remembered at most (default 10 000; `0` disables the cache).
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// How many failed attempts one client address may make within the
    /// [`failure_window`](Self::failure_window) before its further attempts get `429` without
    /// being verified (default 10; `0` disables the limit).
    pub fn max_failures(mut self, max: u32) -> Self {
        self.max_failures = max;
        self
    }

    /// The window failures are counted in, from a client's first failure (default a minute;
    /// from 1ms to a day).
    pub fn failure_window(mut self, window: Duration) -> Self {
        self.failure_window = window;
        self
    }

    /// The threads that verify slow hashes. Without one, the layer owns a
    /// [`VerifyPool::default`] of its own; give several layers clones of one pool to bound
    /// their CPU and argon2 memory together.
    pub fn verify_pool(mut self, pool: VerifyPool) -> Self {
        self.verify_pool = Some(pool);
        self
    }

    /// Validates the settings, reads the htpasswd file, parses every hash and prepares the
    /// challenge header, the dummy hash and the cache.
    pub fn build(self) -> Result<BasicAuth, ConfigError> {
        let challenge = challenge_value(&self.realm)?;
        if self.cache_ttl > MAX_CACHE_TTL {
            return Err(ConfigError::field("cache_ttl", "at most a day (\"24h\"); \"0s\" disables the cache"));
        }
        if self.failure_window.is_zero() || self.failure_window > MAX_FAILURE_WINDOW {
            return Err(ConfigError::field(
                "failure_window",
                "a window from 1ms to a day, such as \"1m\" (set max_failures = 0 to disable the limit)",
            ));
        }
        if let Some(name) = &self.forward_user_header
            && UNFORWARDABLE.contains(name)
        {
            return Err(ConfigError::field(
                "forward_user_header",
                format!("`{name}` is a header the request depends on; pick a dedicated one such as x-forwarded-user"),
            ));
        }

        let mut entries: Vec<Entry> = self
            .users
            .into_iter()
            .map(|(user, hash)| Entry { place: format!("user `{user}`"), user, hash, field: "users" })
            .collect();
        if let Some(path) = &self.htpasswd {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::field("htpasswd", format!("cannot read `{}`: {e}", path.display())))?;
            entries.extend(parse_htpasswd(&text, &path.display().to_string())?);
        }
        let mut accounts = HashMap::with_capacity(entries.len());
        for Entry { user, hash, field, place } in entries {
            validate_user(&user).map_err(|why| ConfigError::field(field, format!("{place}: {why}")))?;
            let (verifier, scheme) = Verifier::parse(&hash, self.allow_plaintext)
                .map_err(|why| ConfigError::field(field, format!("{place}: {why}")))?;
            let forwarded = match self.forward_user_header {
                // `validate_user` refused control characters, the only bytes a header value cannot hold.
                Some(_) => HeaderValue::from_bytes(user.as_bytes()).ok(),
                None => None,
            };
            if accounts.contains_key(&user) {
                return Err(ConfigError::field(field, format!("{place}: `{user}` is defined twice")));
            }
            let account = Account { user: Arc::from(user.as_str()), verifier: Arc::new(verifier), scheme, forwarded };
            accounts.insert(user, account);
        }

        let strongest = accounts.values().map(|a| &a.verifier).max_by_key(|v| v.work()).ok_or_else(|| {
            ConfigError::field("users", "at least one user is required (in `users` or an `htpasswd` file)")
        })?;
        let dummy = strongest
            .dummy_like()
            .map_err(|why| ConfigError::new(format!("cannot prepare the timing-equalizing dummy hash: {why}")))?;

        let cache = match (self.cache_ttl.is_zero(), self.cache_capacity) {
            (true, _) | (_, 0) => None,
            (false, capacity) => Some(CredentialCache::credentials(self.cache_ttl, capacity)?),
        };
        let failures = (self.max_failures > 0)
            .then(|| FailureLimit::new(self.max_failures, self.failure_window, failures::CAPACITY));

        Ok(BasicAuth {
            accounts,
            dummy: Arc::new(dummy),
            challenge,
            forward_user_header: self.forward_user_header,
            strip_authorization: self.strip_authorization,
            cache,
            failures,
            pool: self.verify_pool.unwrap_or_default(),
            warned_no_client: AtomicBool::new(false),
            verifications: AtomicU64::new(0),
            in_flight: Default::default(),
        })
    }
}

/// `Basic realm="…", charset="UTF-8"` with the realm as a quoted-string (RFC 9110 §5.6.4).
fn challenge_value(realm: &str) -> Result<HeaderValue, ConfigError> {
    if realm.is_empty() || !realm.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err(ConfigError::field("realm", "a non-empty realm of printable ASCII characters"));
    }
    let escaped = realm.replace('\\', "\\\\").replace('"', "\\\"");
    HeaderValue::from_str(&format!("Basic realm=\"{escaped}\", charset=\"UTF-8\""))
        .map_err(|_| ConfigError::field("realm", "a non-empty realm of printable ASCII characters"))
}

/// RFC 7617: a user-id cannot contain a colon or control characters.
fn validate_user(user: &str) -> Result<(), &'static str> {
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
