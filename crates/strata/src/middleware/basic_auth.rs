//! `basic_auth`: HTTP Basic authentication ([RFC 7617]) against password hashes.
//!
//! Users come from an inline table (`users`), an Apache-style `htpasswd` file, or both. A request
//! without valid credentials gets `401` with `WWW-Authenticate: Basic realm="…", charset="UTF-8"`
//! and never reaches inner layers. On success the user is put in the request's extensions as
//! [`AuthenticatedUser`] (for inner layers) and copied into the response's extensions (for an access
//! log outside), optionally forwarded upstream in a header, and `Authorization` is optionally
//! stripped.
//!
//! # Hashes
//!
//! `$argon2id$` / `$argon2i$` (PHC strings), bcrypt (`$2y$`, `$2b$`, `$2a$`), Apache `$apr1$`
//! (MD5-based) and `{SHA}` (unsalted SHA-1). The last two are accepted because existing htpasswd
//! files hold them, but they are cheap to brute-force: [`BasicAuth::weak_hashes`] lists them so
//! `strata check` can warn. Plaintext entries are refused unless `allow_plaintext = true` (and are
//! then weak too). Anything else is a build error naming the user.
//!
//! # Why the work is done where it is
//!
//! - **Off the executor.** Argon2 and bcrypt take tens of milliseconds of CPU by design. Run on an
//!   async worker, that would stall every other connection on the thread. They run on a small
//!   process-wide pool of `strata-verify-N` threads (at most 4, fewer on smaller machines) with a
//!   bounded queue: when more than 256 verifications are waiting, new ones get
//!   `503 Service Unavailable` + `Retry-After: 1` instead of growing memory and latency without
//!   limit (a password-guessing flood then costs a bounded amount of CPU). The cheap schemes
//!   (apr1, `{SHA}`, plaintext) are verified inline: handing them to a thread costs more than they do.
//! - **A cache of verified credentials**, so a browser sending the same `Authorization` on every
//!   request does not pay a hash each time. It holds `HMAC-SHA256(key, user ":" password)` → expiry,
//!   where `key` is 32 random bytes drawn when the layer is built and never stored elsewhere. So the
//!   cache holds no plaintext, and an entry is useless without the key: a memory dump of the cache
//!   does not give an attacker a fast offline oracle to test guesses against (they would still have
//!   to attack the slow hashes). It is bounded (`cache_capacity`, default 10 000 entries, split in
//!   shards with one short-held lock each; expired then oldest entries are evicted) and entries
//!   expire after `cache_ttl_secs` (default 300; `0` disables the cache). Failed attempts are never
//!   cached. Rebuilding the layer (a config reload) starts a new, empty cache.
//! - **No user enumeration by timing.** A request for an unknown user is still verified, against a
//!   dummy hash made at build time with the same scheme and cost as the strongest hash configured,
//!   and then rejected: an unknown user costs what a known user with a wrong password costs. When
//!   users mix schemes (say bcrypt and `{SHA}`), the weaker users answer faster, which reveals
//!   their scheme but not whether a name exists among the strong ones. Digest comparisons are
//!   constant-time (`subtle`; the argon2 and bcrypt crates compare in constant time themselves).
//!
//! ```
//! use strata::middleware::basic_auth::BasicAuth;
//!
//! # fn main() -> Result<(), strata::middleware::ConfigError> {
//! let auth = BasicAuth::builder()
//!     .realm("admin area")
//!     // A `{SHA}` entry, as old htpasswd files hold; prefer argon2id (`strata hash-password`).
//!     .user("alice", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=")
//!     .forward_user_header("x-forwarded-user")
//!     .strip_authorization(true)
//!     .build()?;
//! assert_eq!(auth.weak_hashes().len(), 1);
//! let stack = strata::http::Stack::new().with(auth);
//! # let _ = stack;
//! # Ok(())
//! # }
//! ```
//!
//! [RFC 7617]: https://www.rfc-editor.org/rfc/rfc7617

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT};
use futures_channel::oneshot;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use md5::{Digest, Md5};
use serde::Deserialize;
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::check::{Diagnostic, Fact, Facts, Severity};
use crate::http::{AuthenticatedUser, GeneratedError, Next, Request, Response, response};
use crate::middleware::{BuildContext, ConfigError};
use crate::stack::Middleware;

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
    /// How long, in seconds, a verified credential is remembered. Default: 300; `0` disables the
    /// cache; at most 86 400.
    #[serde(default = "default_cache_ttl_secs")]
    pub cache_ttl_secs: u64,
    /// How many verified credentials are remembered at most. Default: 10 000; `0` disables the cache.
    #[serde(default = "default_cache_capacity")]
    pub cache_capacity: usize,
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

impl Default for BasicAuthConfig {
    /// The documented defaults, with no users yet: [`BasicAuth::new`] requires at least one.
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
            .finish()
    }
}

/// The password hash scheme of a user's entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HashScheme {
    /// `$argon2id$`: the recommended scheme (`strata hash-password` makes these).
    Argon2id,
    /// `$argon2i$`.
    Argon2i,
    /// bcrypt: `$2y$`, `$2b$`, `$2a$`.
    Bcrypt,
    /// Apache's `$apr1$` (1 000 rounds of MD5): weak.
    Apr1,
    /// `{SHA}`: one unsalted SHA-1: weak.
    Sha1,
    /// A plaintext password (`allow_plaintext = true`): weak.
    Plaintext,
}

impl HashScheme {
    /// The scheme's usual name: `argon2id`, `argon2i`, `bcrypt`, `apr1`, `{SHA}`, `plaintext`.
    pub fn name(self) -> &'static str {
        match self {
            HashScheme::Argon2id => "argon2id",
            HashScheme::Argon2i => "argon2i",
            HashScheme::Bcrypt => "bcrypt",
            HashScheme::Apr1 => "apr1",
            HashScheme::Sha1 => "{SHA}",
            HashScheme::Plaintext => "plaintext",
        }
    }

    /// Whether passwords stored this way are cheap to brute-force from a stolen file.
    pub fn is_weak(self) -> bool {
        matches!(self, HashScheme::Apr1 | HashScheme::Sha1 | HashScheme::Plaintext)
    }
}

impl fmt::Display for HashScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The Basic authentication layer. Build it with [`BasicAuth::new`] or [`BasicAuth::builder`].
pub struct BasicAuth {
    accounts: HashMap<String, Account>,
    /// Verified for unknown users so that they cost what known users cost (see the module docs).
    dummy: Arc<Verifier>,
    challenge: HeaderValue,
    forward_user_header: Option<HeaderName>,
    strip_authorization: bool,
    cache: Option<CredentialCache>,
    /// Hash verifications run so far (real and dummy); the tests count re-hashing with it.
    verifications: AtomicU64,
}

struct Account {
    user: Arc<str>,
    verifier: Arc<Verifier>,
    scheme: HashScheme,
    /// The user name as a header value, when `forward_user_header` is set.
    forwarded: Option<HeaderValue>,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut users: Vec<&String> = self.accounts.keys().collect();
        users.sort();
        f.debug_struct("BasicAuth")
            .field("challenge", &self.challenge)
            .field("users", &users)
            .field("forward_user_header", &self.forward_user_header)
            .field("strip_authorization", &self.strip_authorization)
            .field("cache", &self.cache.as_ref().map(|c| (c.ttl, c.capacity())))
            .finish()
    }
}

/// Refused so that a forwarded user name cannot change how the request is framed, routed or
/// authenticated upstream.
const UNFORWARDABLE: [&str; 5] = ["authorization", "host", "content-length", "transfer-encoding", "connection"];

/// The longest `cache_ttl_secs`: a day. Longer would mostly keep credentials alive in memory.
const MAX_CACHE_TTL_SECS: u64 = 86_400;

impl BasicAuth {
    /// Validates `config`, reads the htpasswd file (relative to `ctx.base_dir`), parses every hash
    /// and prepares the challenge header, the dummy hash and the cache.
    pub fn new(config: BasicAuthConfig, ctx: &BuildContext) -> Result<BasicAuth, ConfigError> {
        let ttl = Duration::from_secs(config.cache_ttl_secs);
        Self::build(config, ctx, ttl)
    }

    /// Starts a [`BasicAuthBuilder`] with the defaults of [`BasicAuthConfig`] and no users.
    pub fn builder() -> BasicAuthBuilder {
        BasicAuthBuilder::default()
    }

    fn build(config: BasicAuthConfig, ctx: &BuildContext, ttl: Duration) -> Result<BasicAuth, ConfigError> {
        let challenge = challenge_value(&config.realm)?;
        if config.cache_ttl_secs > MAX_CACHE_TTL_SECS {
            return Err(ConfigError::field(
                "cache_ttl_secs",
                format!("at most {MAX_CACHE_TTL_SECS} seconds (a day); 0 disables the cache"),
            ));
        }
        let forward_user_header = match &config.forward_user_header {
            None => None,
            Some(raw) => {
                let name = HeaderName::from_bytes(raw.as_bytes())
                    .map_err(|_| ConfigError::field("forward_user_header", format!("`{raw}` is not a header name")))?;
                if UNFORWARDABLE.contains(&name.as_str()) {
                    return Err(ConfigError::field(
                        "forward_user_header",
                        format!(
                            "`{raw}` is a header the request depends on; pick a dedicated one such as x-forwarded-user"
                        ),
                    ));
                }
                Some(name)
            }
        };

        let mut entries: Vec<Entry> = config
            .users
            .iter()
            .map(|(user, hash)| Entry {
                user: user.clone(),
                hash: hash.clone(),
                field: "users",
                place: format!("user `{user}`"),
            })
            .collect();
        if let Some(path) = &config.htpasswd {
            let path = ctx.resolve(path);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::field("htpasswd", format!("cannot read `{}`: {e}", path.display())))?;
            entries.extend(parse_htpasswd(&text, &path.display().to_string())?);
        }
        let mut accounts = HashMap::with_capacity(entries.len());
        for Entry { user, hash, field, place } in entries {
            validate_user(&user).map_err(|why| ConfigError::field(field, format!("{place}: {why}")))?;
            let (verifier, scheme) = Verifier::parse(&hash, config.allow_plaintext)
                .map_err(|why| ConfigError::field(field, format!("{place}: {why}")))?;
            let forwarded = match forward_user_header {
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
        let dummy = Arc::new(dummy);

        let cache = match (ttl.is_zero(), config.cache_capacity) {
            (true, _) | (_, 0) => None,
            (false, capacity) => Some(CredentialCache::new(ttl, capacity)?),
        };

        Ok(BasicAuth {
            accounts,
            dummy,
            challenge,
            forward_user_header,
            strip_authorization: config.strip_authorization,
            cache,
            verifications: AtomicU64::new(0),
        })
    }

    /// The users whose entries are cheap to brute-force (`apr1`, `{SHA}`, plaintext), sorted by
    /// name, for `strata check` to warn about.
    pub fn weak_hashes(&self) -> Vec<(String, HashScheme)> {
        let mut weak: Vec<(String, HashScheme)> =
            self.accounts.values().filter(|a| a.scheme.is_weak()).map(|a| (a.user.to_string(), a.scheme)).collect();
        weak.sort_by(|a, b| a.0.cmp(&b.0));
        weak
    }

    /// The 401 every failure gets: the same bytes whatever went wrong, so a client learns nothing
    /// about why, and never an echo of what it sent.
    fn challenge(&self) -> Response {
        let mut res = response::text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
        res.headers_mut().insert(header::WWW_AUTHENTICATE, self.challenge.clone());
        res
    }

    /// The account, when `user` exists and this password was verified for it recently.
    fn cached(&self, user: &str, password: &str) -> Option<&Account> {
        let cache = self.cache.as_ref()?;
        let account = self.accounts.get(user)?;
        cache.contains(&cache.key(user, password)).then_some(account)
    }

    /// Verifies the password against the user's hash (or a dummy of the same cost for an unknown
    /// user), and remembers a match. The cache was checked already.
    async fn authenticate(&self, user: String, password: String) -> Result<&Account, Rejection> {
        let Some(account) = self.accounts.get(&user) else {
            // Spend what a known user would, then refuse whatever the dummy said.
            return match self.verify(&self.dummy, &password).await {
                Verdict::Busy => Err(Rejection::Busy),
                _ => Err(Rejection::Unauthorized),
            };
        };
        match self.verify(&account.verifier, &password).await {
            Verdict::Match => {
                if let Some(cache) = &self.cache {
                    cache.insert(cache.key(&user, &password));
                }
                Ok(account)
            }
            Verdict::Mismatch => Err(Rejection::Unauthorized),
            Verdict::Busy => Err(Rejection::Busy),
            Verdict::Lost => Err(Rejection::Lost(user)),
        }
    }

    async fn verify(&self, verifier: &Arc<Verifier>, password: &str) -> Verdict {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        if !verifier.is_slow() {
            return Verdict::from(verifier.verify(password.as_bytes()));
        }
        let Some(jobs) = &pool().jobs else {
            // No thread could be started: verifying here is slow, but refusing everyone is worse.
            return Verdict::from(verifier.verify(password.as_bytes()));
        };
        let (tx, rx) = oneshot::channel();
        let (verifier, password) = (verifier.clone(), password.to_owned());
        let job: Job = Box::new(move || {
            // The client may have gone while this waited in the queue: then skip the work.
            if !tx.is_canceled() {
                let _ = tx.send(verifier.verify(password.as_bytes()));
            }
        });
        match jobs.try_send(job) {
            Ok(()) => match rx.await {
                Ok(matched) => Verdict::from(matched),
                // The verifier panicked (the worker survives it): a bug, not the client's fault.
                Err(oneshot::Canceled) => Verdict::Lost,
            },
            Err(TrySendError::Full(_)) => Verdict::Busy,
            Err(TrySendError::Disconnected(_)) => Verdict::Lost,
        }
    }
}

enum Verdict {
    Match,
    Mismatch,
    Busy,
    Lost,
}

impl From<bool> for Verdict {
    fn from(matched: bool) -> Self {
        if matched { Verdict::Match } else { Verdict::Mismatch }
    }
}

enum Rejection {
    Unauthorized,
    Busy,
    /// The verification itself failed; the user name is for the log.
    Lost(String),
}

impl Middleware<Request, Response> for BasicAuth {
    async fn handle(&self, mut req: Request, next: Next) -> Response {
        // The common case, a credential verified before, is answered without an await; the
        // verification is boxed, so its large state does not weigh on every request's future.
        let (cached, pending) = {
            let Some(decoded) = Decoded::from_headers(req.headers()) else { return self.challenge() };
            let Some((user, password)) = decoded.split() else { return self.challenge() };
            match self.cached(user, password) {
                Some(account) => (Some(account), None),
                None => (None, Some((user.to_owned(), password.to_owned()))),
            }
        };
        let verified = match pending {
            Some((user, password)) => Some(Box::pin(self.authenticate(user, password)).await),
            None => None,
        };
        let account = match (cached, verified) {
            (Some(account), _) => account,
            (None, Some(verified)) => match verified {
                Ok(account) => account,
                Err(Rejection::Unauthorized) => return self.challenge(),
                Err(Rejection::Busy) => {
                    let mut res =
                        response::text(StatusCode::SERVICE_UNAVAILABLE, "Too many logins at once, retry shortly\n");
                    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    res.extensions_mut().insert(GeneratedError::with_detail("Too many logins at once; retry shortly."));
                    return res;
                }
                Err(Rejection::Lost(user)) => {
                    tracing::error!(user = %user, "password verification failed unexpectedly");
                    let mut res = response::text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n");
                    res.extensions_mut().insert(GeneratedError::new());
                    return res;
                }
            },
            (None, None) => return self.challenge(),
        };

        let who = AuthenticatedUser(account.user.clone());
        if self.strip_authorization {
            req.headers_mut().remove(header::AUTHORIZATION);
        }
        if let (Some(name), Some(value)) = (&self.forward_user_header, &account.forwarded) {
            // `insert` replaces every value the client may have sent under that name.
            req.headers_mut().insert(name.clone(), value.clone());
        }
        req.extensions_mut().insert(who.clone());
        let mut res = next.run(req).await;
        res.extensions_mut().insert(who);
        res
    }

    fn kind(&self) -> &'static str {
        "basic_auth"
    }

    fn facts(&self) -> Facts {
        // It can fail: a saturated verification pool answers 503, which `errors` should format.
        Facts::of(&[Fact::ShortCircuits, Fact::CanFail])
    }

    fn diagnostics(&self) -> Vec<Diagnostic> {
        self.weak_hashes()
            .into_iter()
            .map(|(user, scheme)| Diagnostic {
                severity: Severity::Warning,
                rule: "weak-password-hash",
                layer: String::new(),
                message: format!("user `{user}` has a {} password entry", scheme.name()),
                why: "a leaked config or htpasswd file with such entries is cracked in seconds; argon2id and bcrypt take years"
                    .to_string(),
                fix: "replace it with the output of `strata hash-password` (argon2id) or `htpasswd -B` (bcrypt)".to_string(),
            })
            .collect()
    }
}

/// A Rust-side way to write a [`BasicAuthConfig`]; [`BasicAuthBuilder::build`] validates it like
/// the gateway does (relative htpasswd paths resolve against the current directory).
#[derive(Clone, Debug, Default)]
pub struct BasicAuthBuilder {
    config: BasicAuthConfig,
    cache_ttl: Option<Duration>,
}

impl BasicAuthBuilder {
    /// Sets the realm (default `"strata"`).
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.config.realm = realm.into();
        self
    }

    /// Adds a user with its password hash.
    pub fn user(mut self, user: impl Into<String>, hash: impl Into<String>) -> Self {
        self.config.users.insert(user.into(), hash.into());
        self
    }

    /// Reads more users from an htpasswd file.
    pub fn htpasswd(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.htpasswd = Some(path.into());
        self
    }

    /// Accepts entries that are not a recognised hash as plaintext passwords.
    pub fn allow_plaintext(mut self, allow: bool) -> Self {
        self.config.allow_plaintext = allow;
        self
    }

    /// Puts the authenticated user name in this request header.
    pub fn forward_user_header(mut self, name: impl Into<String>) -> Self {
        self.config.forward_user_header = Some(name.into());
        self
    }

    /// Removes `Authorization` before inner layers see the request.
    pub fn strip_authorization(mut self, strip: bool) -> Self {
        self.config.strip_authorization = strip;
        self
    }

    /// How long a verified credential is remembered (`Duration::ZERO` disables the cache).
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.config.cache_ttl_secs = ttl.as_secs();
        self.cache_ttl = Some(ttl);
        self
    }

    /// How many verified credentials are remembered at most (`0` disables the cache).
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.config.cache_capacity = capacity;
        self
    }

    /// Validates and builds the layer, as [`BasicAuth::new`] does.
    pub fn build(self) -> Result<BasicAuth, ConfigError> {
        let ttl = self.cache_ttl.unwrap_or(Duration::from_secs(self.config.cache_ttl_secs));
        BasicAuth::build(self.config, &BuildContext::default(), ttl)
    }
}

// ---- configuration helpers -----------------------------------------------------------------------

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

/// One `user → hash` line of the config, before parsing.
struct Entry {
    user: String,
    hash: String,
    /// The config field it came from, for [`ConfigError::field`].
    field: &'static str,
    /// Where it was written (`user `x``, `path:line: user `x``), for error messages.
    place: String,
}

/// The entries of an htpasswd file, with `path:line` places for error messages.
fn parse_htpasswd(text: &str, path: &str) -> Result<Vec<Entry>, ConfigError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let place = format!("{path}:{}", i + 1);
        let Some((user, hash)) = line.split_once(':') else {
            return Err(ConfigError::field("htpasswd", format!("{place}: expected `user:hash`")));
        };
        out.push(Entry {
            user: user.to_string(),
            hash: hash.to_string(),
            field: "htpasswd",
            place: format!("{place}: user `{user}`"),
        });
    }
    Ok(out)
}

// ---- parsing the request -------------------------------------------------------------------------

/// The decoded `user:password` of a `Basic` `Authorization` header: on the stack when it fits (any
/// realistic credential), so the request path does not allocate for it.
enum Decoded {
    Inline([u8; Decoded::INLINE], usize),
    Heap(Vec<u8>),
}

impl Decoded {
    const INLINE: usize = 192;

    /// `None` for a header that is missing, repeated, of another scheme, or not base64. Never panics.
    fn from_headers(headers: &HeaderMap) -> Option<Decoded> {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        let value = value.as_bytes().trim_ascii();
        let split = value.iter().position(|b| *b == b' ')?;
        let (scheme, token) = value.split_at(split);
        if !scheme.eq_ignore_ascii_case(b"basic") {
            return None;
        }
        let token = token.trim_ascii();
        // Padding is optional in practice (some clients drop it); the alphabet is not.
        if base64::decoded_len_estimate(token.len()) <= Self::INLINE {
            let mut buf = [0u8; Self::INLINE];
            let len = STANDARD_PAD_INDIFFERENT.decode_slice(token, &mut buf).ok()?;
            Some(Decoded::Inline(buf, len))
        } else {
            STANDARD_PAD_INDIFFERENT.decode(token).ok().map(Decoded::Heap)
        }
    }

    /// The user and password, or `None` when they are not UTF-8 (we announce `charset="UTF-8"`),
    /// there is no colon, or the user is empty.
    fn split(&self) -> Option<(&str, &str)> {
        let bytes = match self {
            Decoded::Inline(buf, len) => buf.get(..*len)?,
            Decoded::Heap(vec) => vec,
        };
        let (user, password) = std::str::from_utf8(bytes).ok()?.split_once(':')?;
        (!user.is_empty()).then_some((user, password))
    }
}

// ---- hashes --------------------------------------------------------------------------------------

const EXPECTED_FORMATS: &str = "expected $argon2id$…, $argon2i$…, bcrypt ($2y$…, $2b$…, $2a$…), $apr1$… (Apache MD5) or {SHA}… (`strata hash-password` makes argon2id)";

/// A parsed, ready-to-check password entry.
enum Verifier {
    /// A PHC string, validated at build; re-parsing it per check costs nothing next to argon2.
    Argon2(String),
    /// A bcrypt hash string, validated at build.
    Bcrypt {
        hash: String,
        cost: u32,
    },
    Apr1 {
        salt: String,
        digest: [u8; 22],
    },
    Sha1([u8; 20]),
    /// SHA-256 of the password, so the comparison is constant-time whatever the lengths.
    Plain([u8; 32]),
}

impl Verifier {
    fn parse(hash: &str, allow_plaintext: bool) -> Result<(Verifier, HashScheme), String> {
        if hash.starts_with("$argon2") {
            let parsed =
                PasswordHash::new(hash).map_err(|e| format!("invalid argon2 hash ({e}); {EXPECTED_FORMATS}"))?;
            let scheme = match Algorithm::try_from(parsed.algorithm) {
                Ok(Algorithm::Argon2id) => HashScheme::Argon2id,
                Ok(Algorithm::Argon2i) => HashScheme::Argon2i,
                _ => return Err(format!("unsupported argon2 variant `{}`; {EXPECTED_FORMATS}", parsed.algorithm)),
            };
            Params::try_from(&parsed).map_err(|e| format!("invalid argon2 parameters ({e})"))?;
            if parsed.salt.is_none() || parsed.hash.is_none() {
                return Err(format!("the argon2 hash has no salt or no digest; {EXPECTED_FORMATS}"));
            }
            return Ok((Verifier::Argon2(hash.to_string()), scheme));
        }
        if ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) {
            let parts = bcrypt::HashParts::from_str(hash).map_err(|e| format!("invalid bcrypt hash ({e})"))?;
            return Ok((Verifier::Bcrypt { hash: hash.to_string(), cost: parts.get_cost() }, HashScheme::Bcrypt));
        }
        if let Some(rest) = hash.strip_prefix("$apr1$") {
            let (salt, digest) = rest.split_once('$').ok_or("invalid apr1 hash: expected $apr1$SALT$DIGEST")?;
            let digest: [u8; 22] = digest
                .as_bytes()
                .try_into()
                .ok()
                .filter(|d: &[u8; 22]| d.iter().all(|b| CRYPT_ALPHABET.contains(b)))
                .ok_or("invalid apr1 hash: the digest must be 22 characters of [./0-9A-Za-z]")?;
            if salt.is_empty() || salt.len() > 8 {
                return Err("invalid apr1 hash: the salt must be 1 to 8 characters".to_string());
            }
            return Ok((Verifier::Apr1 { salt: salt.to_string(), digest }, HashScheme::Apr1));
        }
        if let Some(b64) = hash.strip_prefix("{SHA}") {
            let digest = STANDARD
                .decode(b64)
                .ok()
                .and_then(|d| <[u8; 20]>::try_from(d).ok())
                .ok_or("invalid {SHA} hash: expected the base64 of a 20-byte SHA-1 digest")?;
            return Ok((Verifier::Sha1(digest), HashScheme::Sha1));
        }
        if hash.starts_with('$') || hash.starts_with('{') {
            let prefix =
                hash.char_indices().skip(1).find(|(_, c)| matches!(c, '$' | '}')).map_or(hash, |(i, _)| &hash[..=i]);
            return Err(format!("unsupported hash format `{prefix}…`; {EXPECTED_FORMATS}"));
        }
        if hash.is_empty() {
            return Err(format!("the password hash is empty; {EXPECTED_FORMATS}"));
        }
        // Never echo the entry: it is a password.
        if !allow_plaintext {
            return Err(format!(
                "the entry is not a recognised hash, so it looks like a plaintext password (or an unsupported crypt(3) DES hash); {EXPECTED_FORMATS}, or set allow_plaintext = true"
            ));
        }
        Ok((Verifier::Plain(Sha256::digest(hash.as_bytes()).into()), HashScheme::Plaintext))
    }

    fn verify(&self, password: &[u8]) -> bool {
        match self {
            Verifier::Argon2(phc) => {
                PasswordHash::new(phc).is_ok_and(|hash| Argon2::default().verify_password(password, &hash).is_ok())
            }
            // Truncates at 72 bytes like every bcrypt implementation; an error is a mismatch.
            Verifier::Bcrypt { hash, .. } => bcrypt::verify(password, hash).unwrap_or(false),
            Verifier::Apr1 { salt, digest } => apr1_digest(password, salt.as_bytes()).ct_eq(digest).into(),
            Verifier::Sha1(digest) => Sha1::digest(password).as_slice().ct_eq(digest).into(),
            Verifier::Plain(digest) => Sha256::digest(password).as_slice().ct_eq(digest).into(),
        }
    }

    /// Worth a thread hop: argon2 and bcrypt take milliseconds by design, the rest microseconds.
    fn is_slow(&self) -> bool {
        matches!(self, Verifier::Argon2(_) | Verifier::Bcrypt { .. })
    }

    /// Orders entries by how long they take to check: scheme first, then its cost parameters.
    fn work(&self) -> (u8, u64) {
        match self {
            Verifier::Argon2(phc) => {
                let cost = PasswordHash::new(phc)
                    .ok()
                    .and_then(|h| Params::try_from(&h).ok())
                    .map_or(0, |p| u64::from(p.m_cost()) * u64::from(p.t_cost()));
                (4, cost)
            }
            Verifier::Bcrypt { cost, .. } => (3, u64::from(*cost)),
            Verifier::Apr1 { .. } => (2, 0),
            Verifier::Sha1(_) => (1, 0),
            Verifier::Plain(_) => (0, 0),
        }
    }

    /// A verifier of the same scheme and cost for a random password nobody knows.
    fn dummy_like(&self) -> Result<Verifier, String> {
        let password: [u8; 16] = random()?;
        Ok(match self {
            Verifier::Argon2(phc) => {
                let template = PasswordHash::new(phc).map_err(|e| e.to_string())?;
                let params = Params::try_from(&template).map_err(|e| e.to_string())?;
                let salt = SaltString::encode_b64(&random::<16>()?).map_err(|e| e.to_string())?;
                let hash = Argon2::default()
                    .hash_password_customized(&password, Some(template.algorithm), template.version, params, &salt)
                    .map_err(|e| e.to_string())?;
                Verifier::Argon2(hash.to_string())
            }
            Verifier::Bcrypt { cost, .. } => {
                let hash = bcrypt::hash_with_salt(password, *cost, random()?).map_err(|e| e.to_string())?;
                Verifier::Bcrypt { hash: hash.to_string(), cost: *cost }
            }
            Verifier::Apr1 { .. } => {
                let salt: String = random::<8>()?.iter().map(|b| CRYPT_ALPHABET[usize::from(b % 64)] as char).collect();
                let digest = apr1_digest(&password, salt.as_bytes());
                Verifier::Apr1 { salt, digest }
            }
            Verifier::Sha1(_) => Verifier::Sha1(Sha1::digest(password).into()),
            Verifier::Plain(_) => Verifier::Plain(Sha256::digest(password).into()),
        })
    }
}

fn random<const N: usize>() -> Result<[u8; N], String> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| format!("the OS random source failed: {e}"))?;
    Ok(bytes)
}

/// The alphabet of crypt(3)-style base64.
const CRYPT_ALPHABET: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Apache's `$apr1$` digest: the FreeBSD MD5-crypt algorithm (Poul-Henning Kamp's) with the magic
/// `$apr1$`. No maintained crate implements it, so here it is, checked against Apache's and
/// OpenSSL's output in the tests. Returns the 22-character encoded digest.
fn apr1_digest(password: &[u8], salt: &[u8]) -> [u8; 22] {
    let salt = &salt[..salt.len().min(8)];
    let alternate = Md5::new().chain_update(password).chain_update(salt).chain_update(password).finalize();

    let mut ctx = Md5::new().chain_update(password).chain_update(b"$apr1$").chain_update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alternate[..n]);
        left -= n;
    }
    // The historical quirk: for each bit of the length, a zero byte or the password's first byte.
    let mut bits = password.len();
    while bits > 0 {
        if bits & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        bits >>= 1;
    }
    let mut digest: [u8; 16] = ctx.finalize().into();

    // 1 000 rounds, to slow down brute force (by 1990s standards).
    for round in 0..1000 {
        let mut ctx = Md5::new();
        if round & 1 == 1 {
            ctx.update(password);
        } else {
            ctx.update(digest);
        }
        if round % 3 != 0 {
            ctx.update(salt);
        }
        if round % 7 != 0 {
            ctx.update(password);
        }
        if round & 1 == 1 {
            ctx.update(digest);
        } else {
            ctx.update(password);
        }
        digest = ctx.finalize().into();
    }

    let mut out = [0u8; 22];
    let mut at = 0;
    let mut put = |mut v: u32, n: usize| {
        for _ in 0..n {
            out[at] = CRYPT_ALPHABET[(v & 0x3f) as usize];
            at += 1;
            v >>= 6;
        }
    };
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        put(u32::from(digest[a]) << 16 | u32::from(digest[b]) << 8 | u32::from(digest[c]), 4);
    }
    put(u32::from(digest[11]), 2);
    out
}

// ---- the cache of verified credentials -----------------------------------------------------------

/// Verified `(user, password)` pairs, as keyed MACs only (see the module docs for why).
struct CredentialCache {
    /// HMAC-SHA256 keyed once with a random key; cloned per lookup rather than re-keyed.
    mac: Hmac<Sha256>,
    shards: Box<[Shard]>,
    per_shard: usize,
    ttl: Duration,
}

/// One lock's worth of the cache: credential MAC → expiry.
type Shard = Mutex<HashMap<[u8; 32], Instant, BuildHasherDefault<MacHasher>>>;

/// Hashes a cache key by taking 8 of its bytes: keys are MAC outputs under a secret key, so they
/// are uniformly spread and nobody can aim for a collision, and hashing them again (SipHash over
/// 32 bytes) would cost more than the rest of the lookup. Bytes 8..16, since bytes 0..2 pick the
/// shard.
#[derive(Default)]
struct MacHasher(u64);

impl Hasher for MacHasher {
    fn write(&mut self, bytes: &[u8]) {
        // The key's bytes arrive in one call (after its length, which is always 32).
        if let Some(chunk) = bytes.get(8..16).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            self.0 = u64::from_le_bytes(chunk);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

const CACHE_SHARDS: usize = 16;

impl CredentialCache {
    fn new(ttl: Duration, capacity: usize) -> Result<CredentialCache, ConfigError> {
        let key: [u8; 32] = random().map_err(ConfigError::new)?;
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
            .map_err(|_| ConfigError::new("cannot key the credential cache"))?;
        let shards = capacity.clamp(1, CACHE_SHARDS);
        Ok(CredentialCache {
            mac,
            shards: (0..shards).map(|_| Mutex::new(HashMap::default())).collect(),
            per_shard: capacity.div_ceil(shards),
            ttl,
        })
    }

    fn capacity(&self) -> usize {
        self.per_shard * self.shards.len()
    }

    /// `user` cannot contain `:`, so `user ":" password` is unambiguous.
    fn key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(user.as_bytes());
        mac.update(b":");
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn shard(
        &self,
        key: &[u8; 32],
    ) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Instant, BuildHasherDefault<MacHasher>>> {
        // The key is a MAC output, so its first bytes are uniformly spread.
        let index = usize::from(u16::from_le_bytes([key[0], key[1]])) % self.shards.len();
        // A panic while holding a shard lock cannot leave the map inconsistent (no user code runs
        // under it), so a poisoned lock is still usable.
        self.shards[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn contains(&self, key: &[u8; 32]) -> bool {
        let now = Instant::now();
        let mut shard = self.shard(key);
        match shard.get(key) {
            Some(expires) if *expires > now => true,
            Some(_) => {
                shard.remove(key);
                false
            }
            None => false,
        }
    }

    fn insert(&self, key: [u8; 32]) {
        let now = Instant::now();
        let Some(expires) = now.checked_add(self.ttl) else { return };
        let mut shard = self.shard(&key);
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, expires| *expires > now);
            if shard.len() >= self.per_shard {
                // Only after a full hash verification, and over a shard of capacity / 16 entries.
                if let Some(oldest) = shard.iter().min_by_key(|(_, expires)| **expires).map(|(k, _)| *k) {
                    shard.remove(&oldest);
                }
            }
        }
        shard.insert(key, expires);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}

// ---- the verification threads --------------------------------------------------------------------

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Verifications waiting beyond this many are refused (503) rather than queued without bound.
const QUEUE_CAPACITY: usize = 256;
/// Enough to keep logins flowing without taking every core from the async runtime.
const MAX_WORKERS: usize = 4;

/// The process-wide verification threads, shared by every `BasicAuth` so that many routes with
/// their own layer still use a bounded amount of CPU.
struct VerifyPool {
    /// `None` when no thread could be started.
    jobs: Option<SyncSender<Job>>,
}

fn pool() -> &'static VerifyPool {
    static POOL: OnceLock<VerifyPool> = OnceLock::new();
    POOL.get_or_init(VerifyPool::start)
}

impl VerifyPool {
    fn start() -> VerifyPool {
        let workers = thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, MAX_WORKERS);
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE_CAPACITY);
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for i in 0..workers {
            let rx = rx.clone();
            let spawned = thread::Builder::new().name(format!("strata-verify-{i}")).spawn(move || {
                loop {
                    // The lock is held only while waiting for a job, never while verifying.
                    let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                    match next {
                        // A panicking verifier drops its reply channel (the request gets a 500);
                        // the thread lives on.
                        Ok(job) => drop(panic::catch_unwind(AssertUnwindSafe(job))),
                        Err(_) => return,
                    }
                }
            });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::warn!(error = %e, "could not start a password verification thread"),
            }
        }
        VerifyPool { jobs: (started > 0).then_some(tx) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Body, Service, Stack};
    use argon2::Version;

    const CHALLENGE: &str = "Basic realm=\"strata\", charset=\"UTF-8\"";

    /// A cheap argon2 hash (tests run unoptimised): same code path as production parameters.
    fn argon2_hash(algorithm: Algorithm, password: &str) -> String {
        let params = Params::new(64, 1, 1, None).unwrap();
        let salt = SaltString::encode_b64(b"saltsaltsaltsalt").unwrap();
        Argon2::new(algorithm, Version::V0x13, params).hash_password(password.as_bytes(), &salt).unwrap().to_string()
    }

    fn bcrypt_hash(password: &str) -> String {
        bcrypt::hash(password, 4).unwrap()
    }

    fn sha_hash(password: &str) -> String {
        format!("{{SHA}}{}", STANDARD.encode(Sha1::digest(password.as_bytes())))
    }

    /// What the endpoint saw, answered as headers so the tests can read it.
    fn service(auth: BasicAuth) -> Service {
        Stack::new().with(auth).serve(app)
    }

    async fn app(req: Request) -> Response {
        let mut res = response::text(StatusCode::OK, "app");
        let h = res.headers_mut();
        if let Some(AuthenticatedUser(user)) = req.extensions().get::<AuthenticatedUser>() {
            h.insert("x-seen-user", HeaderValue::from_str(user).unwrap());
        }
        if let Some(v) = req.headers().get("x-forwarded-user") {
            h.insert("x-seen-forwarded", v.clone());
        }
        let authorization = req.headers().contains_key(header::AUTHORIZATION);
        h.insert("x-seen-authorization", HeaderValue::from_static(bool_str(authorization)));
        res
    }

    fn bool_str(b: bool) -> &'static str {
        if b { "yes" } else { "no" }
    }

    fn basic(user: &str, password: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
    }

    fn request(authorization: Option<&str>) -> Request {
        let mut b = http::Request::builder().uri("/");
        if let Some(a) = authorization {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(Body::empty()).unwrap()
    }

    async fn call(svc: &Service, authorization: Option<&str>) -> Response {
        svc.call(request(authorization)).await
    }

    fn assert_challenged(res: &Response) {
        assert_eq!(res.status(), 401);
        assert_eq!(res.headers()[header::WWW_AUTHENTICATE], CHALLENGE);
        assert_eq!(res.body().as_bytes(), Some(&b"Unauthorized\n"[..]));
        assert!(res.headers().get("x-seen-user").is_none(), "the app must not be reached");
    }

    fn auth_with(hash: String) -> BasicAuth {
        BasicAuth::builder().user("alice", hash).build().unwrap()
    }

    async fn accepts(hash: String, password: &str) -> bool {
        let svc = service(auth_with(hash));
        let res = call(&svc, Some(&basic("alice", password))).await;
        match res.status().as_u16() {
            200 => {
                assert_eq!(res.headers()["x-seen-user"], "alice");
                true
            }
            401 => {
                assert_challenged(&res);
                false
            }
            other => panic!("unexpected status {other}"),
        }
    }

    #[tokio::test]
    async fn each_hash_format_accepts_the_right_password_only() {
        let hashes = [
            ("argon2id", argon2_hash(Algorithm::Argon2id, "s3cret")),
            ("argon2i", argon2_hash(Algorithm::Argon2i, "s3cret")),
            ("bcrypt $2b$", bcrypt_hash("s3cret")),
            ("bcrypt $2y$", bcrypt_hash("s3cret").replacen("$2b$", "$2y$", 1)),
            ("bcrypt $2a$", bcrypt_hash("s3cret").replacen("$2b$", "$2a$", 1)),
            ("{SHA}", sha_hash("s3cret")),
            ("apr1", "$apr1$abc$PZF73YJz5hJ9yyI.7OP.R.".to_string()),
        ];
        for (name, hash) in hashes {
            let password = if name == "apr1" { "secret" } else { "s3cret" };
            assert!(accepts(hash.clone(), password).await, "{name} should accept the right password");
            assert!(!accepts(hash.clone(), "wrong").await, "{name} should refuse a wrong password");
            assert!(!accepts(hash, "").await, "{name} should refuse an empty password");
        }
    }

    #[test]
    fn schemes_are_recognised() {
        let scheme = |hash: String| Verifier::parse(&hash, false).map(|(_, s)| s).unwrap();
        assert_eq!(scheme(argon2_hash(Algorithm::Argon2id, "x")), HashScheme::Argon2id);
        assert_eq!(scheme(argon2_hash(Algorithm::Argon2i, "x")), HashScheme::Argon2i);
        assert_eq!(scheme(bcrypt_hash("x")), HashScheme::Bcrypt);
        assert_eq!(scheme(sha_hash("x")), HashScheme::Sha1);
        assert_eq!(scheme("$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/".into()), HashScheme::Apr1);
    }

    #[test]
    fn apr1_matches_apache_and_openssl_vectors() {
        // `htpasswd -nbm` / `openssl passwd -apr1 -salt SALT PASSWORD` outputs.
        let vectors = [
            ("myPassword", "r31.....", "HqJZimcKQFAMYayBlzkrA/"),
            ("", "saltsalt", "a8ml/vK5HEjiZ5oypDWA7/"),
            ("secret", "abc", "PZF73YJz5hJ9yyI.7OP.R."),
            ("pässwörd:with:colons", "x", "H6Eoq3NVDAePPo6GanQIA0"),
            ("a much longer password that spans several md5 blocks!", "12345678", "IwDOG6ipjywl8tEBYM.qD0"),
        ];
        for (password, salt, expected) in vectors {
            let digest = apr1_digest(password.as_bytes(), salt.as_bytes());
            assert_eq!(std::str::from_utf8(&digest).unwrap(), expected, "password {password:?}");
            let (verifier, _) = Verifier::parse(&format!("$apr1${salt}${expected}"), false).unwrap();
            assert!(verifier.verify(password.as_bytes()));
            assert!(!verifier.verify(b"nope"));
        }
    }

    #[test]
    fn sha_matches_the_known_vector() {
        let (verifier, scheme) = Verifier::parse("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", false).unwrap();
        assert_eq!(scheme, HashScheme::Sha1);
        assert!(verifier.verify(b"password"));
        assert!(!verifier.verify(b"Password"));
    }

    #[tokio::test]
    async fn unknown_user_is_refused_after_a_dummy_verification_of_the_same_scheme() {
        let auth = BasicAuth::builder()
            .user("weak", sha_hash("x"))
            .user("alice", argon2_hash(Algorithm::Argon2id, "s3cret"))
            .build()
            .unwrap();
        assert!(matches!(&*auth.dummy, Verifier::Argon2(phc) if phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$")));
        let (auth, svc) = shared(auth);
        assert_challenged(&call(&svc, Some(&basic("mallory", "s3cret"))).await);
        assert_eq!(verifications(auth), 1, "the unknown user still cost a verification");
        assert_challenged(&call(&svc, Some(&basic("alice", "wrong"))).await);
        assert_eq!(verifications(auth), 2);
        assert_eq!(auth.cache.as_ref().unwrap().len(), 0, "failures are never cached");
    }

    /// Lets a test keep reading a layer's counters after putting it in a stack.
    struct Shared(&'static BasicAuth);

    impl Middleware<Request, Response> for Shared {
        fn handle(&self, req: Request, next: Next) -> impl std::future::Future<Output = Response> + Send {
            self.0.handle(req, next)
        }
    }

    /// The layer (leaked: tests only) and a service using it around the recording app.
    fn shared(auth: BasicAuth) -> (&'static BasicAuth, Service) {
        let auth: &'static BasicAuth = Box::leak(Box::new(auth));
        (auth, Stack::new().with(Shared(auth)).serve(app))
    }

    fn verifications(auth: &BasicAuth) -> u64 {
        auth.verifications.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn malformed_headers_are_challenged() {
        let svc = service(auth_with(sha_hash("pw")));
        let cases = [
            None,
            Some(String::new()),
            Some("Basic".to_string()),
            Some("Basic ".to_string()),
            Some("Bearer abc".to_string()),
            Some("Digest username=\"alice\"".to_string()),
            Some("Basic !!!not-base64!!!".to_string()),
            Some(format!("Basic {}", STANDARD.encode("alice-no-colon"))),
            Some(format!("Basic {}", STANDARD.encode(":pw"))),
            Some(format!("Basic {}", STANDARD.encode(b"alice:\xff\xfe"))),
            Some(format!("Basic {} extra", STANDARD.encode("alice:pw"))),
            Some(format!("Basic{}", STANDARD.encode("alice:pw"))),
        ];
        for case in &cases {
            let res = call(&svc, case.as_deref()).await;
            assert_challenged(&res);
        }
        // Two Authorization headers: ambiguous, refused.
        let mut req = request(Some(&basic("alice", "pw")));
        req.headers_mut().append(header::AUTHORIZATION, HeaderValue::from_str(&basic("alice", "pw")).unwrap());
        assert_challenged(&svc.call(req).await);
        // A non-ASCII header value.
        let mut req = request(None);
        req.headers_mut().insert(header::AUTHORIZATION, HeaderValue::from_bytes(b"Basic \xc3\xa9").unwrap());
        assert_challenged(&svc.call(req).await);
    }

    #[tokio::test]
    async fn scheme_is_case_insensitive_and_padding_optional() {
        let svc = service(auth_with(sha_hash("pw")));
        let token = STANDARD.encode("alice:pw");
        for header in [
            format!("basic {token}"),
            format!("BASIC {token}"),
            format!("bAsIc   {token}  "),
            format!("Basic {}", token.trim_end_matches('=')),
        ] {
            assert_eq!(call(&svc, Some(&header)).await.status(), 200, "{header}");
        }
    }

    #[tokio::test]
    async fn passwords_may_contain_colons_and_unicode() {
        let svc = service(auth_with(sha_hash("pä:ss")));
        assert_eq!(call(&svc, Some(&basic("alice", "pä:ss"))).await.status(), 200);
    }

    #[tokio::test]
    async fn credentials_of_every_length_are_decoded() {
        // Around the size decoded on the stack (192 bytes: "alice:" + the password) and far past it.
        for len in [0, 1, 185, 186, 187, 188, 189, 190, 4096] {
            let password = "p".repeat(len);
            let svc = service(auth_with(sha_hash(&password)));
            assert_eq!(call(&svc, Some(&basic("alice", &password))).await.status(), 200, "password of {len} bytes");
            let wrong = "q".repeat(len.max(1));
            assert_eq!(call(&svc, Some(&basic("alice", &wrong))).await.status(), 401, "wrong password of {len} bytes");
        }
    }

    #[test]
    fn plaintext_is_refused_unless_allowed() {
        let e = BasicAuth::builder().user("bob", "hunter2").build().unwrap_err();
        assert_eq!(e.field, Some("users"));
        assert!(e.message.contains("`bob`") && e.message.contains("allow_plaintext"), "{e}");
        assert!(!e.message.contains("hunter2"), "never echo a password: {e}");

        let auth = BasicAuth::builder().user("bob", "hunter2").allow_plaintext(true).build().unwrap();
        assert_eq!(auth.weak_hashes(), [("bob".to_string(), HashScheme::Plaintext)]);
        let (verifier, _) = Verifier::parse("hunter2", true).unwrap();
        assert!(verifier.verify(b"hunter2") && !verifier.verify(b"hunter") && !verifier.verify(b"hunter22"));
    }

    #[tokio::test]
    async fn plaintext_allowed_authenticates() {
        let svc = service(BasicAuth::builder().user("bob", "hunter2").allow_plaintext(true).build().unwrap());
        assert_eq!(call(&svc, Some(&basic("bob", "hunter2"))).await.status(), 200);
        assert_challenged(&call(&svc, Some(&basic("bob", "hunter3"))).await);
    }

    #[test]
    fn unknown_formats_name_the_user_and_the_formats() {
        for hash in [
            "$6$salt$abcdef",
            "{SSHA}abc",
            "$argon2d$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
            "$2x$04$abc",
            "$apr1$salt$short",
        ] {
            let e = BasicAuth::builder().user("carol", hash).allow_plaintext(true).build().unwrap_err();
            assert!(e.message.contains("`carol`"), "{hash}: {e}");
            assert!(e.message.contains("expected") || e.message.contains("invalid"), "{hash}: {e}");
        }
        let e = BasicAuth::builder().user("carol", "$6$salt$abcdef").build().unwrap_err();
        assert!(e.message.contains("$argon2id$") && e.message.contains("$apr1$") && e.message.contains("{SHA}"), "{e}");
    }

    #[test]
    fn weak_hashes_are_listed() {
        let auth = BasicAuth::builder()
            .user("strong", bcrypt_hash("x"))
            .user("md5", "$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/")
            .user("sha", sha_hash("x"))
            .build()
            .unwrap();
        assert_eq!(auth.weak_hashes(), [("md5".to_string(), HashScheme::Apr1), ("sha".to_string(), HashScheme::Sha1)]);
    }

    #[tokio::test]
    async fn a_cache_hit_skips_rehashing() {
        let (auth, svc) = shared(auth_with(argon2_hash(Algorithm::Argon2id, "s3cret")));
        for _ in 0..3 {
            assert_eq!(call(&svc, Some(&basic("alice", "s3cret"))).await.status(), 200);
        }
        assert_eq!(verifications(auth), 1, "verified once, then served from the cache");
        // A wrong password is a different key: verified (and refused) every time.
        for _ in 0..2 {
            assert_challenged(&call(&svc, Some(&basic("alice", "s3cre"))).await);
        }
        assert_eq!(verifications(auth), 3);
        assert_eq!(auth.cache.as_ref().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn the_cache_can_be_disabled() {
        for auth in [
            BasicAuth::builder().user("alice", sha_hash("pw")).cache_ttl(Duration::ZERO).build().unwrap(),
            BasicAuth::builder().user("alice", sha_hash("pw")).cache_capacity(0).build().unwrap(),
            BasicAuth::new(
                BasicAuthConfig {
                    users: [("alice".to_string(), sha_hash("pw"))].into(),
                    cache_ttl_secs: 0,
                    ..Default::default()
                },
                &BuildContext::default(),
            )
            .unwrap(),
        ] {
            assert!(auth.cache.is_none());
            let (auth, svc) = shared(auth);
            call(&svc, Some(&basic("alice", "pw"))).await;
            call(&svc, Some(&basic("alice", "pw"))).await;
            assert_eq!(verifications(auth), 2);
        }
    }

    #[tokio::test]
    async fn cached_credentials_expire() {
        let auth =
            BasicAuth::builder().user("alice", sha_hash("pw")).cache_ttl(Duration::from_millis(50)).build().unwrap();
        let (auth, svc) = shared(auth);
        call(&svc, Some(&basic("alice", "pw"))).await;
        call(&svc, Some(&basic("alice", "pw"))).await;
        assert_eq!(verifications(auth), 1);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(call(&svc, Some(&basic("alice", "pw"))).await.status(), 200);
        assert_eq!(verifications(auth), 2, "expired: verified again");
    }

    #[test]
    fn the_cache_stays_bounded_and_keeps_no_plaintext() {
        let cache = CredentialCache::new(Duration::from_secs(60), 4).unwrap();
        for i in 0..100 {
            cache.insert(cache.key("alice", &format!("pw{i}")));
        }
        assert!(cache.len() <= 4, "{}", cache.len());
        let newest = cache.key("alice", "pw99");
        assert!(cache.contains(&newest), "the newest entry survives eviction");
        assert!(!cache.contains(&cache.key("alice", "pw0")));
        // Keyed by a per-instance random key: another cache derives other keys.
        let other = CredentialCache::new(Duration::from_secs(60), 4).unwrap();
        assert_ne!(other.key("alice", "pw99"), newest);
        assert_ne!(cache.key("alice", "pw99")[..], Sha256::digest(b"alice:pw99")[..]);

        let big = CredentialCache::new(Duration::from_secs(60), 10_000).unwrap();
        assert_eq!(big.shards.len(), CACHE_SHARDS);
        assert!(big.capacity() >= 10_000 && big.capacity() < 10_000 + CACHE_SHARDS);
    }

    #[tokio::test]
    async fn the_user_reaches_inner_layers_and_the_response() {
        let svc = service(auth_with(sha_hash("pw")));
        let res = call(&svc, Some(&basic("alice", "pw"))).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-seen-user"], "alice");
        assert_eq!(res.extensions().get::<AuthenticatedUser>(), Some(&AuthenticatedUser(Arc::from("alice"))));
        assert_eq!(res.headers()["x-seen-authorization"], "yes", "kept by default");
        assert!(res.headers().get("x-seen-forwarded").is_none(), "not forwarded by default");
    }

    #[tokio::test]
    async fn the_user_is_forwarded_and_authorization_stripped_when_asked() {
        let auth = BasicAuth::builder()
            .user("alice", sha_hash("pw"))
            .forward_user_header("X-Forwarded-User")
            .strip_authorization(true)
            .build()
            .unwrap();
        let svc = service(auth);
        let mut req = request(Some(&basic("alice", "pw")));
        req.headers_mut().insert("x-forwarded-user", HeaderValue::from_static("admin"));
        req.headers_mut().append("x-forwarded-user", HeaderValue::from_static("root"));
        let res = svc.call(req).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-seen-forwarded"], "alice", "the client's value is replaced");
        assert_eq!(res.headers()["x-seen-authorization"], "no");
    }

    #[tokio::test]
    async fn slow_hashes_are_verified_off_the_calling_thread() {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(thread::current().name().map(str::to_string));
        });
        pool().jobs.as_ref().unwrap().try_send(job).map_err(|_| "queue full").unwrap();
        let name = rx.await.unwrap().unwrap();
        assert!(name.starts_with("strata-verify-"), "{name}");
        assert!(Verifier::parse(&bcrypt_hash("x"), false).unwrap().0.is_slow());
        assert!(!Verifier::parse(&sha_hash("x"), false).unwrap().0.is_slow());
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("strata-basic-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[tokio::test]
    async fn htpasswd_files_are_read_and_combined_with_inline_users() {
        let path = temp_file(
            "ok.htpasswd",
            &format!(
                "# team\r\n\r\nbob:{}\r\n   \n  # indented comment\ncarol:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/\n",
                bcrypt_hash("b0b")
            ),
        );
        let ctx = BuildContext { base_dir: path.parent().unwrap().to_path_buf() };
        let config = BasicAuthConfig {
            users: [("alice".to_string(), sha_hash("pw"))].into(),
            htpasswd: Some(PathBuf::from("ok.htpasswd")),
            ..Default::default()
        };
        let auth = BasicAuth::new(config, &ctx).unwrap();
        assert_eq!(
            auth.weak_hashes(),
            [("alice".to_string(), HashScheme::Sha1), ("carol".to_string(), HashScheme::Apr1)]
        );
        let svc = service(auth);
        for (user, pw) in [("alice", "pw"), ("bob", "b0b"), ("carol", "myPassword")] {
            let res = call(&svc, Some(&basic(user, pw))).await;
            assert_eq!(res.status(), 200, "{user}");
            assert_eq!(res.headers()["x-seen-user"], user);
        }
    }

    #[test]
    fn htpasswd_errors() {
        let dup = temp_file("dup.htpasswd", &format!("alice:{}\n", sha_hash("x")));
        let e = BasicAuth::builder().user("alice", sha_hash("y")).htpasswd(&dup).build().unwrap_err();
        assert_eq!(e.field, Some("htpasswd"));
        assert!(e.message.contains("`alice`") && e.message.contains("twice") && e.message.contains(":1"), "{e}");

        let dup_in_file = temp_file("dup2.htpasswd", &format!("bob:{0}\n\nbob:{0}\n", sha_hash("x")));
        let e = BasicAuth::builder().htpasswd(&dup_in_file).build().unwrap_err();
        assert!(e.message.contains(":3") && e.message.contains("twice"), "{e}");

        let malformed = temp_file("bad.htpasswd", "# ok\nno-colon-here\n");
        let e = BasicAuth::builder().htpasswd(&malformed).build().unwrap_err();
        assert_eq!(e.field, Some("htpasswd"));
        assert!(e.message.contains(":2") && e.message.contains("user:hash"), "{e}");

        let plain = temp_file("plain.htpasswd", "dave:letmein\n");
        let e = BasicAuth::builder().htpasswd(&plain).build().unwrap_err();
        assert!(e.message.contains("`dave`") && !e.message.contains("letmein"), "{e}");

        let e = BasicAuth::builder().htpasswd("/nonexistent/strata/htpasswd").build().unwrap_err();
        assert_eq!(e.field, Some("htpasswd"));
        assert!(e.message.contains("/nonexistent/strata/htpasswd"), "{e}");

        let empty = temp_file("empty.htpasswd", "# nobody yet\n");
        assert_eq!(BasicAuth::builder().htpasswd(&empty).build().unwrap_err().field, Some("users"));
    }

    #[test]
    fn user_names_are_validated() {
        for user in ["", "a:b", "tab\there"] {
            let e = BasicAuth::builder().user(user, sha_hash("x")).build().unwrap_err();
            assert_eq!(e.field, Some("users"), "{user:?}");
        }
        // Non-ASCII names work and can be forwarded (as UTF-8 bytes).
        BasicAuth::builder().user("josé", sha_hash("x")).forward_user_header("x-user").build().unwrap();
    }

    #[test]
    fn realm_is_quoted_escaped_and_validated() {
        let auth = BasicAuth::builder().realm(r#"Admin "area" \ 2"#).user("a", sha_hash("x")).build().unwrap();
        assert_eq!(auth.challenge, r#"Basic realm="Admin \"area\" \\ 2", charset="UTF-8""#);
        for bad in ["", "line\nbreak", "tab\t", "café"] {
            let e = BasicAuth::builder().realm(bad).user("a", sha_hash("x")).build().unwrap_err();
            assert_eq!(e.field, Some("realm"), "{bad:?}");
        }
    }

    #[test]
    fn other_config_errors() {
        let base = || BasicAuth::builder().user("a", sha_hash("x"));
        assert_eq!(base().forward_user_header("not a header").build().unwrap_err().field, Some("forward_user_header"));
        assert_eq!(base().forward_user_header("Authorization").build().unwrap_err().field, Some("forward_user_header"));
        assert_eq!(
            base().cache_ttl(Duration::from_secs(MAX_CACHE_TTL_SECS + 1)).build().unwrap_err().field,
            Some("cache_ttl_secs")
        );
        assert_eq!(BasicAuth::builder().build().unwrap_err().field, Some("users"));
    }

    #[test]
    fn config_reads_from_toml_shaped_data_and_debug_hides_hashes() {
        let config: BasicAuthConfig = serde_json::from_value(serde_json::json!({
            "users": { "alice": "plain-secret" },
            "allow_plaintext": true,
            "forward_user_header": "x-forwarded-user",
        }))
        .unwrap();
        assert_eq!((config.realm.as_str(), config.cache_ttl_secs, config.cache_capacity), ("strata", 300, 10_000));
        assert!(!config.strip_authorization && config.htpasswd.is_none());
        assert!(!format!("{config:?}").contains("plain-secret"));
        let auth = BasicAuth::new(config, &BuildContext::default()).unwrap();
        assert!(!format!("{auth:?}").contains("plain-secret"));
        let unknown = serde_json::from_value::<BasicAuthConfig>(serde_json::json!({ "user": {} }));
        assert!(unknown.unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn kind_and_facts() {
        let auth = auth_with(sha_hash("x"));
        assert_eq!(Middleware::kind(&auth), "basic_auth");
        assert_eq!(auth.facts(), Facts::of(&[Fact::ShortCircuits, Fact::CanFail]));
    }
}
