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
//!   limit (a password-guessing flood then costs a bounded amount of CPU). Each thread reuses one
//!   argon2 memory block array, so argon2 memory is `threads × m_cost` however many attempts come
//!   (see `pool.rs`). The cheap schemes (apr1, `{SHA}`, plaintext) are verified inline: handing
//!   them to a thread costs more than they do.
//! - **Failed attempts are limited per client.** After `max_failures` failures (default 10) within
//!   `failure_window` (default a minute) from one client address, its attempts get
//!   `429 Too Many Requests` + `Retry-After` without being verified, until the window that began at
//!   its first failure ends. Attempts are charged before they are verified and given back on
//!   success, so concurrent guesses are held to the limit too (see `failures.rs`).
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

mod cache;
mod failures;
mod hash;
mod htpasswd;
mod pool;

pub use hash::HashScheme;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT;
use futures_channel::oneshot;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde::Deserialize;

use self::cache::CredentialCache;
use self::failures::{Charge, FailureLimit, Refusal};
use self::hash::{Argon2Memory, Verifier};
use self::htpasswd::{Entry, parse_htpasswd};
use self::pool::{Job, Refused, pool};
use crate::check::{Diagnostic, Fact, Facts, Severity};
use crate::http::Refusal as Answered;
use crate::http::{AuthenticatedUser, ConnectionInfo, GeneratedError, Next, Request, Response, response};
use crate::middleware::{BuildContext, ConfigError, parse_duration};
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

/// The Basic authentication layer. Build it with [`BasicAuth::new`] or [`BasicAuth::builder`].
pub struct BasicAuth {
    accounts: HashMap<String, Account>,
    /// Verified for unknown users so that they cost what known users cost (see the module docs).
    dummy: Arc<Verifier>,
    challenge: HeaderValue,
    forward_user_header: Option<HeaderName>,
    strip_authorization: bool,
    cache: Option<CredentialCache>,
    /// `None` when `max_failures = 0`.
    failures: Option<FailureLimit>,
    /// Whether the missing client address of library use without a server was logged already.
    warned_no_client: AtomicBool,
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
            .field("failures", &self.failures.as_ref().map(|f| (f.max_failures(), f.window())))
            .finish()
    }
}

/// Refused so that a forwarded user name cannot change how the request is framed, routed or
/// authenticated upstream.
const UNFORWARDABLE: [&str; 5] = ["authorization", "host", "content-length", "transfer-encoding", "connection"];

/// The longest `cache_ttl_secs`: a day. Longer would mostly keep credentials alive in memory.
const MAX_CACHE_TTL_SECS: u64 = 86_400;

/// The longest `failure_window`: a day. Longer would mostly lock out clients who mistyped once.
const MAX_FAILURE_WINDOW: Duration = Duration::from_secs(86_400);

/// The settings [`BasicAuthConfig`] holds as text or seconds, as typed values.
struct Typed {
    cache_ttl: Duration,
    failure_window: Duration,
}

impl BasicAuth {
    /// Validates `config`, reads the htpasswd file (relative to `ctx.base_dir`), parses every hash
    /// and prepares the challenge header, the dummy hash and the cache.
    pub fn new(config: BasicAuthConfig, ctx: &BuildContext) -> Result<BasicAuth, ConfigError> {
        let cache_ttl = Duration::from_secs(config.cache_ttl_secs);
        let failure_window = parse_duration(&config.failure_window)
            .map_err(|why| ConfigError::field("failure_window", format!("{why}; the default is \"1m\"")))?;
        Self::build(config, ctx, Typed { cache_ttl, failure_window })
    }

    /// Starts a [`BasicAuthBuilder`] with the defaults of [`BasicAuthConfig`] and no users.
    pub fn builder() -> BasicAuthBuilder {
        BasicAuthBuilder::default()
    }

    fn build(config: BasicAuthConfig, ctx: &BuildContext, typed: Typed) -> Result<BasicAuth, ConfigError> {
        let Typed { cache_ttl: ttl, failure_window } = typed;
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
        if failure_window.is_zero() || failure_window > MAX_FAILURE_WINDOW {
            return Err(ConfigError::field(
                "failure_window",
                "a window from 1ms to a day, such as \"1m\" (set max_failures = 0 to disable the limit)",
            ));
        }
        let failures = (config.max_failures > 0)
            .then(|| FailureLimit::new(config.max_failures, failure_window, failures::CAPACITY));

        Ok(BasicAuth {
            accounts,
            dummy,
            challenge,
            forward_user_header,
            strip_authorization: config.strip_authorization,
            cache,
            failures,
            warned_no_client: AtomicBool::new(false),
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
    /// `why` is for `explain` (a response extension): it names what failed, never what was sent.
    fn challenge(&self, why: &'static str) -> Response {
        let mut res = response::text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
        res.headers_mut().insert(header::WWW_AUTHENTICATE, self.challenge.clone());
        Answered::mark(res, why)
    }

    /// The account, when `user` exists and this password was verified for it recently.
    fn cached(&self, user: &str, password: &str) -> Option<&Account> {
        let cache = self.cache.as_ref()?;
        let account = self.accounts.get(user)?;
        cache.contains(&cache.key(user, password)).then_some(account)
    }

    /// Charges the attempt to the client (refusing it when the client used up its failures), then
    /// checks the password, and gives the charge back unless the password was wrong.
    async fn authenticate(
        &self,
        user: String,
        password: String,
        client: Option<IpAddr>,
    ) -> Result<&Account, Rejection> {
        let charge: Option<Charge> = match (&self.failures, client) {
            (Some(limit), Some(ip)) => {
                Some(limit.charge(ip, Instant::now()).map_err(|refusal| Rejection::TooManyFailures(ip, refusal))?)
            }
            _ => None,
        };
        let checked = self.check_password(user, password).await;
        // A client that goes away mid-check keeps its charge: it cannot escape the count by
        // hanging up. A busy pool or a verifier bug is not the client's failure.
        if let (Some(limit), Some(charge)) = (&self.failures, charge)
            && !matches!(checked, Err(Rejection::Unauthorized(_)))
        {
            limit.refund(charge);
        }
        checked
    }

    /// Verifies the password against the user's hash (or a dummy of the same cost for an unknown
    /// user), and remembers a match. The cache was checked already.
    async fn check_password(&self, user: String, password: String) -> Result<&Account, Rejection> {
        let Some(account) = self.accounts.get(&user) else {
            // Spend what a known user would, then refuse whatever the dummy said.
            return match self.verify(&self.dummy, &password).await {
                Verdict::Busy => Err(Rejection::Busy),
                _ => Err(Rejection::Unauthorized(UNKNOWN_USER)),
            };
        };
        match self.verify(&account.verifier, &password).await {
            Verdict::Match => {
                if let Some(cache) = &self.cache {
                    cache.insert(cache.key(&user, &password));
                }
                Ok(account)
            }
            Verdict::Mismatch => Err(Rejection::Unauthorized(WRONG_PASSWORD)),
            Verdict::Busy => Err(Rejection::Busy),
            Verdict::Lost => Err(Rejection::Lost(user)),
        }
    }

    async fn verify(&self, verifier: &Arc<Verifier>, password: &str) -> Verdict {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        if !verifier.is_slow() {
            // The cheap schemes never touch the argon2 memory: an empty one allocates nothing.
            return Verdict::from(verifier.verify(password.as_bytes(), &mut Argon2Memory::new()));
        }
        let (tx, rx) = oneshot::channel();
        let (job_verifier, job_password) = (verifier.clone(), password.to_owned());
        let job: Job = Box::new(move |memory: &mut Argon2Memory| {
            // The client may have gone while this waited in the queue: then skip the work.
            if !tx.is_canceled() {
                let _ = tx.send(job_verifier.verify(job_password.as_bytes(), memory));
            }
        });
        match pool().submit(job) {
            Ok(()) => match rx.await {
                Ok(matched) => Verdict::from(matched),
                // The verifier panicked (the worker survives it): a bug, not the client's fault.
                Err(oneshot::Canceled) => Verdict::Lost,
            },
            Err(Refused::Full) => Verdict::Busy,
            // No thread could be started: verifying here is slow, but refusing everyone is worse.
            Err(Refused::NoThreads) => Verdict::from(verifier.verify(password.as_bytes(), &mut Argon2Memory::new())),
        }
    }

    /// The client address failures are counted under, when the limit is on and the server said
    /// who the client is.
    fn client(&self, req: &Request) -> Option<IpAddr> {
        self.failures.as_ref()?;
        match req.extensions().get::<ConnectionInfo>() {
            Some(info) => Some(info.client),
            None => {
                if !self.warned_no_client.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "basic_auth limits failed logins per client, but requests carry no ConnectionInfo: failures are not limited"
                    );
                }
                None
            }
        }
    }

    /// The 429 a client that used up its failures gets, without its password being checked.
    fn too_many_failures(&self, client: IpAddr, refusal: Refusal) -> Response {
        // Whole seconds, rounded up: `Retry-After: 0` would invite an immediate retry.
        let secs = refusal.retry_after.as_secs() + u64::from(refusal.retry_after.subsec_nanos() > 0);
        let secs = secs.max(1);
        if refusal.first {
            // Once per client and window, so a flood of refusals does not become a flood of logs.
            tracing::warn!(
                client = %client,
                retry_after_secs = secs,
                request_id = crate::http::RequestId::current().map(tracing::field::display),
                "too many failed logins from one client; refusing its attempts until its window ends"
            );
        }
        let mut res = response::text(StatusCode::TOO_MANY_REQUESTS, "Too many failed logins, retry later\n");
        res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        res.extensions_mut().insert(GeneratedError::with_detail("Too many failed logins; retry later."));
        Answered::mark(res, format!("too many failed logins from {client}; refused for {secs}s"))
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

/// Why a `401` was answered, for `explain` (never sent to the client).
const NO_CREDENTIALS: &str = "no credentials: no single `Authorization: Basic` header with a base64 token";
const MALFORMED: &str = "malformed credentials: the token is not `user:password`";
const UNKNOWN_USER: &str = "unknown user";
const WRONG_PASSWORD: &str = "wrong password";

enum Rejection {
    /// With the reason for `explain`.
    Unauthorized(&'static str),
    /// The client used up its failures; its address is for the log.
    TooManyFailures(IpAddr, Refusal),
    Busy,
    /// The verification itself failed; the user name is for the log.
    Lost(String),
}

impl Middleware<Request, Response> for BasicAuth {
    async fn handle(&self, mut req: Request, next: Next) -> Response {
        // The common case, a credential verified before, is answered without an await; the
        // verification is boxed, so its large state does not weigh on every request's future.
        let client = self.client(&req);
        let (cached, pending) = {
            let Some(decoded) = Decoded::from_headers(req.headers()) else { return self.challenge(NO_CREDENTIALS) };
            let Some((user, password)) = decoded.split() else { return self.challenge(MALFORMED) };
            match self.cached(user, password) {
                Some(account) => (Some(account), None),
                None => (None, Some((user.to_owned(), password.to_owned()))),
            }
        };
        if let (Some(_), Some(limit), Some(ip)) = (cached, &self.failures, client) {
            // A refused client learns nothing about its password, not even from the cache.
            if let Err(refusal) = limit.check(ip, Instant::now()) {
                return self.too_many_failures(ip, refusal);
            }
        }
        let verified = match pending {
            Some((user, password)) => Some(Box::pin(self.authenticate(user, password, client)).await),
            None => None,
        };
        let account = match (cached, verified) {
            (Some(account), _) => account,
            (None, Some(verified)) => match verified {
                Ok(account) => account,
                Err(Rejection::Unauthorized(why)) => return self.challenge(why),
                Err(Rejection::TooManyFailures(ip, refusal)) => return self.too_many_failures(ip, refusal),
                Err(Rejection::Busy) => {
                    let mut res =
                        response::text(StatusCode::SERVICE_UNAVAILABLE, "Too many logins at once, retry shortly\n");
                    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    res.extensions_mut().insert(GeneratedError::with_detail("Too many logins at once; retry shortly."));
                    return Answered::mark(res, "too many password verifications queued");
                }
                Err(Rejection::Lost(user)) => {
                    tracing::error!(
                        user = %user,
                        request_id = crate::http::RequestId::current().map(tracing::field::display),
                        "password verification failed unexpectedly"
                    );
                    let mut res = response::text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n");
                    res.extensions_mut().insert(GeneratedError::new());
                    return res;
                }
            },
            (None, None) => return self.challenge(NO_CREDENTIALS),
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
        // It can fail: a saturated verification pool answers 503 and the failure limit 429, which
        // `errors` should format.
        let facts = Facts::of(&[Fact::ShortCircuits, Fact::CanFail]);
        match self.failures {
            // Counting failures per address merges clients whose address is wrong (a proxy that is
            // not trusted): one of them could then lock everyone out.
            Some(_) => facts.with(Fact::ReadsClientAddress).with(Fact::KeysOnClientAddress),
            None => facts,
        }
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
    failure_window: Option<Duration>,
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

    /// How many failed attempts one client address may make within the
    /// [`failure_window`](Self::failure_window) before its further attempts get `429` without
    /// being verified (default 10; `0` disables the limit).
    pub fn max_failures(mut self, max: u32) -> Self {
        self.config.max_failures = max;
        self
    }

    /// The window failures are counted in, from a client's first failure (default a minute; at
    /// most a day).
    pub fn failure_window(mut self, window: Duration) -> Self {
        self.failure_window = Some(window);
        self
    }

    /// Validates and builds the layer, as [`BasicAuth::new`] does.
    pub fn build(self) -> Result<BasicAuth, ConfigError> {
        let cache_ttl = self.cache_ttl.unwrap_or(Duration::from_secs(self.config.cache_ttl_secs));
        let failure_window = match self.failure_window {
            Some(window) => window,
            None => {
                parse_duration(&self.config.failure_window).map_err(|why| ConfigError::field("failure_window", why))?
            }
        };
        BasicAuth::build(self.config, &BuildContext::default(), Typed { cache_ttl, failure_window })
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

#[cfg(test)]
mod tests {
    use super::hash::testing::{argon2_hash, bcrypt_hash, sha_hash};
    use super::*;
    use crate::http::{Body, Service, Stack};
    use argon2::Algorithm;
    use base64::engine::general_purpose::STANDARD;

    const CHALLENGE: &str = "Basic realm=\"strata\", charset=\"UTF-8\"";

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

    #[tokio::test]
    async fn unknown_user_is_refused_after_a_dummy_verification_of_the_same_scheme() {
        let auth = BasicAuth::builder()
            .user("weak", sha_hash("x"))
            .user("alice", argon2_hash(Algorithm::Argon2id, "s3cret"))
            .build()
            .unwrap();
        // An argon2 dummy of alice's cost (m=64 × t=1); `hash.rs` checks it keeps the variant too.
        assert!(matches!(&*auth.dummy, Verifier::Argon2(_)) && auth.dummy.work() == (4, 64));
        let (auth, svc) = shared(auth);
        assert_challenged(&call(&svc, Some(&basic("mallory", "s3cret"))).await);
        assert_eq!(verifications(auth), 1, "the unknown user still cost a verification");
        assert_challenged(&call(&svc, Some(&basic("alice", "wrong"))).await);
        assert_eq!(verifications(auth), 2);
        assert_eq!(auth.cache.as_ref().unwrap().len(), 0, "failures are never cached");
    }

    #[tokio::test]
    async fn each_401_says_why_in_an_extension_never_with_the_password() {
        let auth = BasicAuth::builder().user("alice", sha_hash("s3cret")).build().unwrap();
        let svc = service(auth);
        let reason = |res: &Response| res.extensions().get::<Answered>().map(|r| r.reason.to_string());
        for (authorization, why) in [
            (None, NO_CREDENTIALS),
            (Some("Basic !!!".to_string()), NO_CREDENTIALS),
            (Some(format!("Basic {}", STANDARD_PAD_INDIFFERENT.encode("no-colon"))), MALFORMED),
            (Some(basic("mallory", "s3cret")), UNKNOWN_USER),
            (Some(basic("alice", "wrong-pw")), WRONG_PASSWORD),
        ] {
            let res = call(&svc, authorization.as_deref()).await;
            assert_challenged(&res);
            assert_eq!(reason(&res).as_deref(), Some(why), "{authorization:?}");
            assert!(res.headers().values().all(|v| !v.as_bytes().windows(4).any(|w| w == b"pw")));
        }
        assert_eq!(reason(&call(&svc, Some(&basic("alice", "s3cret"))).await), None, "passed on: no refusal");
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
        let verify = |pw: &[u8]| verifier.verify(pw, &mut Argon2Memory::new());
        assert!(verify(b"hunter2") && !verify(b"hunter") && !verify(b"hunter22"));
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

    /// A request from `client`, as the server sends it to the stack.
    fn request_from(client: &str, authorization: &str) -> Request {
        let mut req = request(Some(authorization));
        let peer = std::net::SocketAddr::new(client.parse().unwrap(), 50_000);
        req.extensions_mut().insert(ConnectionInfo::new(peer, "127.0.0.1:8080".parse().unwrap()));
        req
    }

    fn assert_refused(res: &Response, window_secs: u64) {
        assert_eq!(res.status(), 429);
        let retry: u64 = res.headers()[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
        assert!((1..=window_secs).contains(&retry), "Retry-After: {retry}");
        assert!(res.headers().get(header::WWW_AUTHENTICATE).is_none(), "not a challenge to retry now");
        assert!(res.extensions().get::<GeneratedError>().is_some(), "an `errors` layer may reformat it");
        assert!(res.headers().get("x-seen-user").is_none(), "the app must not be reached");
    }

    #[tokio::test]
    async fn a_client_that_used_up_its_failures_is_refused_without_verifying() {
        let auth = BasicAuth::builder()
            .user("alice", argon2_hash(Algorithm::Argon2id, "s3cret"))
            .max_failures(3)
            .failure_window(Duration::from_secs(60))
            .build()
            .unwrap();
        let (auth, svc) = shared(auth);
        for i in 0..3 {
            assert_challenged(&svc.call(request_from("192.0.2.1", &basic("alice", &format!("guess{i}")))).await);
        }
        assert_eq!(verifications(auth), 3);
        // The fourth attempt, and even the right password, cost no verification now.
        assert_refused(&svc.call(request_from("192.0.2.1", &basic("alice", "guess3"))).await, 60);
        assert_refused(&svc.call(request_from("192.0.2.1", &basic("mallory", "x"))).await, 60);
        assert_refused(&svc.call(request_from("192.0.2.1", &basic("alice", "s3cret"))).await, 60);
        assert_eq!(verifications(auth), 3);
        // No credentials at all is still the plain challenge a browser needs to show its prompt.
        let mut bare = request_from("192.0.2.1", "x");
        bare.headers_mut().remove(header::AUTHORIZATION);
        assert_challenged(&svc.call(bare).await);

        // Another client is not affected, and its success does not reset the first one.
        let res = svc.call(request_from("192.0.2.2", &basic("alice", "s3cret"))).await;
        assert_eq!(res.status(), 200);
        assert_challenged(&svc.call(request_from("192.0.2.2", &basic("alice", "nope"))).await);
        assert_refused(&svc.call(request_from("192.0.2.1", &basic("alice", "s3cret"))).await, 60);
        // The second client's cached credential is answered from the cache, as before.
        let before = verifications(auth);
        assert_eq!(svc.call(request_from("192.0.2.2", &basic("alice", "s3cret"))).await.status(), 200);
        assert_eq!(verifications(auth), before);
    }

    #[tokio::test]
    async fn successes_do_not_count_and_the_window_ends() {
        let auth = BasicAuth::builder()
            .user("alice", sha_hash("pw"))
            .max_failures(2)
            .failure_window(Duration::from_millis(200))
            .cache_ttl(Duration::ZERO)
            .build()
            .unwrap();
        let svc = service(auth);
        // Successes (verified each time: no cache) never count as failures.
        for _ in 0..5 {
            assert_eq!(svc.call(request_from("2001:db8::1", &basic("alice", "pw"))).await.status(), 200);
        }
        assert_challenged(&svc.call(request_from("2001:db8::1", &basic("alice", "a"))).await);
        assert_eq!(svc.call(request_from("2001:db8::1", &basic("alice", "pw"))).await.status(), 200);
        assert_challenged(&svc.call(request_from("2001:db8::1", &basic("alice", "b"))).await);
        // Same /64: the same client.
        assert_refused(&svc.call(request_from("2001:db8::2", &basic("alice", "pw"))).await, 1);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(svc.call(request_from("2001:db8::1", &basic("alice", "pw"))).await.status(), 200);
    }

    #[tokio::test]
    async fn concurrent_guesses_are_held_to_the_limit() {
        let auth = BasicAuth::builder()
            .user("alice", argon2_hash(Algorithm::Argon2id, "s3cret"))
            .max_failures(5)
            .build()
            .unwrap();
        let (auth, svc) = shared(auth);
        let calls = (0..20).map(|i| svc.call(request_from("198.51.100.7", &basic("alice", &format!("g{i}")))));
        let statuses: Vec<u16> =
            futures_util::future::join_all(calls).await.iter().map(|r| r.status().as_u16()).collect();
        assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 5, "{statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 15, "{statuses:?}");
        assert_eq!(verifications(auth), 5);
    }

    #[tokio::test]
    async fn without_a_client_address_or_with_max_failures_0_nothing_is_limited() {
        let limited = BasicAuth::builder().user("alice", sha_hash("pw")).max_failures(1).build().unwrap();
        let unlimited = BasicAuth::builder().user("alice", sha_hash("pw")).max_failures(0).build().unwrap();
        assert!(unlimited.failures.is_none());
        let (limited, unlimited) = (service(limited), service(unlimited));
        for _ in 0..5 {
            assert_challenged(&call(&limited, Some(&basic("alice", "wrong"))).await);
            assert_challenged(&unlimited.call(request_from("192.0.2.1", &basic("alice", "wrong"))).await);
        }
    }

    #[test]
    fn failure_settings_are_validated_and_read_from_config() {
        let base = || BasicAuth::builder().user("a", sha_hash("x"));
        for window in [Duration::ZERO, Duration::from_secs(86_401)] {
            assert_eq!(base().failure_window(window).build().unwrap_err().field, Some("failure_window"), "{window:?}");
        }
        base().failure_window(Duration::from_secs(86_400)).build().unwrap();
        let from = |json: serde_json::Value| {
            let config: BasicAuthConfig = serde_json::from_value(json).unwrap();
            BasicAuth::new(config, &BuildContext::default())
        };
        for bad in ["", "10", "1 minute", "0s", "2d", "25h"] {
            let e = from(serde_json::json!({ "users": { "a": sha_hash("x") }, "failure_window": bad })).unwrap_err();
            assert_eq!(e.field, Some("failure_window"), "{bad:?}: {e}");
            assert!(e.message.contains("1m"), "says what is expected: {e}");
        }
        let auth =
            from(serde_json::json!({ "users": { "a": sha_hash("x") }, "max_failures": 4, "failure_window": "90s" }))
                .unwrap();
        let limit = auth.failures.as_ref().unwrap();
        assert_eq!((limit.max_failures(), limit.window()), (4, Duration::from_secs(90)));
        let defaults = auth_with(sha_hash("x"));
        let limit = defaults.failures.as_ref().unwrap();
        assert_eq!((limit.max_failures(), limit.window()), (10, Duration::from_secs(60)));
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
        // Failures are counted per client address by default: the server must resolve it, and
        // `strata check` warns when an untrusted proxy would merge every client into one.
        assert_eq!(
            auth.facts(),
            Facts::of(&[Fact::ShortCircuits, Fact::CanFail, Fact::ReadsClientAddress, Fact::KeysOnClientAddress])
        );
        let unlimited = BasicAuth::builder().user("alice", sha_hash("x")).max_failures(0).build().unwrap();
        assert_eq!(unlimited.facts(), Facts::of(&[Fact::ShortCircuits, Fact::CanFail]));
    }
}
