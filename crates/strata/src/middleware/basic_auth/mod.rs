//! `basic_auth`: HTTP Basic authentication ([RFC 7617]) against password hashes.
//!
//! ```
//! use std::time::Duration;
//! use http::HeaderName;
//! use strata::middleware::basic_auth::BasicAuth;
//!
//! # fn main() -> Result<(), strata::middleware::ConfigError> {
//! let auth = BasicAuth::builder()
//!     .realm("admin area")
//!     // A `{SHA}` entry, as old htpasswd files hold; prefer argon2id (`strata hash-password`).
//!     .user("alice", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=")
//!     .forward_user_header(HeaderName::from_static("x-forwarded-user"))
//!     .strip_authorization(true)
//!     .cache_ttl(Duration::from_secs(60))
//!     .failure_window(Duration::from_secs(5 * 60))
//!     .build()?;
//! assert_eq!(auth.weak_hashes().len(), 1);
//! let stack = strata::http::Stack::new().with(auth);
//! # let _ = stack;
//! # Ok(())
//! # }
//! ```
//!
//! Users come from an inline table (`users`), an Apache-style `htpasswd` file, or both. A request
//! without valid credentials gets `401` with `WWW-Authenticate: Basic realm="…", charset="UTF-8"`
//! and never reaches inner layers. On success the user is put in the request's extensions as
//! [`AuthenticatedUser`] (for inner layers) and copied into the response's extensions (for an access
//! log outside), optionally forwarded upstream in a header, and `Authorization` is optionally
//! stripped.
//!
//! [`BasicAuthBuilder::build`] is where every setting is checked; the gateway's
//! `kind = "basic_auth"` tables reach it through [`BasicAuth::from_config`] (feature `config`),
//! which only turns their text into typed values. The module and its hash crates are the
//! `basic-auth` feature (on by default).
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
//!   async worker, that would stall every other connection on the thread. They run on the
//!   `strata-verify-N` threads of a [`VerifyPool`] (by default the layer's own: as many threads as
//!   cores, at most 4, started on the first slow check and ended with the layer) with a bounded
//!   queue: when more than 256 verifications are waiting, new ones get
//!   `503 Service Unavailable` + `Retry-After: 1` instead of growing memory and latency without
//!   limit (a password-guessing flood then costs a bounded amount of CPU). Each thread reuses one
//!   argon2 memory block array, so argon2 memory is `threads × m_cost` however many attempts come
//!   (see `pool.rs`); layers given one pool with [`BasicAuthBuilder::verify_pool`] share that
//!   bound, as the gateway's layers do. The cheap schemes (apr1, `{SHA}`, plaintext) are verified
//!   inline: handing them to a thread costs more than they do.
//! - **Failed attempts are limited per client.** After `max_failures` failures (default 10) within
//!   `failure_window` (default a minute) from one client address, its attempts get
//!   `429 Too Many Requests` + `Retry-After` without being verified, until the window that began at
//!   its first failure ends. Attempts are charged before they are verified and given back on
//!   success, so concurrent guesses are held to the limit too (see `failures.rs`). Attempts that
//!   carry the same credentials at the same time (a browser's parallel requests, a burst after a
//!   restart) share one verification and one charge: a burst with the right password is never
//!   refused, and one with the same wrong password is one failure.
//! - **A cache of verified credentials**, so a browser sending the same `Authorization` on every
//!   request does not pay a hash each time. It holds `HMAC-SHA256(key, user ":" password)` → expiry,
//!   where `key` is 32 random bytes drawn when the layer is built and never stored elsewhere. So the
//!   cache holds no plaintext, and an entry is useless without the key: a memory dump of the cache
//!   does not give an attacker a fast offline oracle to test guesses against (they would still have
//!   to attack the slow hashes). It is bounded (`cache_capacity`, default 10 000 entries, split in
//!   shards with one short-held lock each; expired then oldest entries are evicted) and entries
//!   expire after `cache_ttl` (default 5 minutes; zero disables the cache). Failed attempts are never
//!   cached. Rebuilding the layer (a config reload) starts a new, empty cache.
//! - **No user enumeration by timing.** A request for an unknown user is still verified, against a
//!   dummy hash made at build time with the same scheme and cost as the strongest hash configured,
//!   and then rejected: an unknown user costs what a known user with a wrong password costs. When
//!   users mix schemes (say bcrypt and `{SHA}`), the weaker users answer faster, which reveals
//!   their scheme but not whether a name exists among the strong ones. Digest comparisons are
//!   constant-time (`subtle`; the argon2 and bcrypt crates compare in constant time themselves).
//!
//! [RFC 7617]: https://www.rfc-editor.org/rfc/rfc7617

mod builder;
mod cache;
#[cfg(feature = "config")]
mod config;
mod credentials;
mod failures;
mod hash;
mod htpasswd;
mod pool;
#[cfg(test)]
mod tests;

pub use builder::BasicAuthBuilder;
#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub use config::BasicAuthConfig;
pub use hash::HashScheme;
pub use pool::VerifyPool;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use futures_channel::oneshot;
use http::{HeaderName, HeaderValue, StatusCode, header};

use self::cache::CredentialCache;
use self::credentials::Decoded;
use self::failures::{Charge, FailureLimit, Refusal};
use self::hash::{Argon2Memory, Verifier};
use self::pool::{Job, Refused};
use crate::check::{Diagnostic, Fact, Facts, Severity};
use crate::http::Refusal as Answered;
use crate::http::{AuthenticatedUser, ConnectionInfo, GeneratedError, Next, Request, Response, response};
use crate::stack::Middleware;

/// The Basic authentication layer (kind `basic_auth`). Build it with [`BasicAuth::builder`].
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
    /// The threads slow hashes are verified on: the layer's own, or one shared with other layers.
    pool: VerifyPool,
    /// Whether the missing client address of library use without a server was logged already.
    warned_no_client: AtomicBool,
    /// Hash verifications run so far (real and dummy); the tests count re-hashing with it.
    verifications: AtomicU64,
    /// The credentials being verified now, by cache key, with the attempts waiting for the result.
    in_flight: InFlight,
}

/// Verifications under way, by credential cache key, each with the senders of the attempts that
/// carry the same credentials and wait for its result instead of verifying again.
type InFlight = std::sync::Mutex<HashMap<[u8; 32], Vec<oneshot::Sender<SharedVerdict>>>>;

/// What one verification tells the attempts that waited for it.
#[derive(Clone, Copy, Debug)]
enum SharedVerdict {
    Matched,
    Unauthorized(&'static str),
    Busy,
    Lost,
}

/// The attempt verifying some credentials for the others that carry them: it hands them its
/// verdict, or, when it ends without one (its client went away, or was refused before verifying),
/// lets them go to verify for themselves.
struct Verifying<'a> {
    in_flight: &'a InFlight,
    key: [u8; 32],
    /// Whether the entry was removed already: by then another attempt may have made a new one.
    removed: bool,
}

impl Verifying<'_> {
    fn publish(mut self, verdict: SharedVerdict) {
        for waiter in self.take() {
            let _ = waiter.send(verdict);
        }
    }

    fn take(&mut self) -> Vec<oneshot::Sender<SharedVerdict>> {
        if std::mem::replace(&mut self.removed, true) {
            return Vec::new();
        }
        let mut in_flight = self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        in_flight.remove(&self.key).unwrap_or_default()
    }
}

impl Drop for Verifying<'_> {
    fn drop(&mut self) {
        // Dropping the senders wakes the waiting attempts without a verdict.
        drop(self.take());
    }
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
            .field("verify_pool", &self.pool)
            .finish()
    }
}

impl BasicAuth {
    /// Starts a [`BasicAuthBuilder`] with the defaults and no users.
    pub fn builder() -> BasicAuthBuilder {
        BasicAuthBuilder::default()
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

    /// The account, when `user` exists and this password was verified for it recently; otherwise
    /// the credentials' cache key (none without a cache), so a miss does not compute it again.
    fn cached(&self, user: &str, password: &str) -> Result<&Account, Option<[u8; 32]>> {
        let Some(cache) = &self.cache else { return Err(None) };
        let key = cache.key(user, password);
        match self.accounts.get(user) {
            Some(account) if cache.contains(&key) => Ok(account),
            _ => Err(Some(key)),
        }
    }

    /// Verifies credentials that were not in the cache, once for all the attempts that carry them
    /// at the same time: the first verifies (see [`BasicAuth::charge_and_check`]), the others wait
    /// for its verdict, are not charged and cost no verification. Without that, a burst of logins
    /// with the right password — a browser's parallel requests, many users behind one address after
    /// a restart — was charged as that many failures while it was verified, and past
    /// `max_failures` the right password was refused with a 429.
    ///
    /// `key` is the credentials' cache key, `None` without a cache.
    async fn authenticate(
        &self,
        user: String,
        password: String,
        client: Option<IpAddr>,
        key: Option<[u8; 32]>,
    ) -> Result<&Account, Rejection> {
        let Some(key) = key else { return self.charge_and_check(user, password, client, None).await };
        loop {
            let waiting = {
                let mut in_flight = self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match in_flight.entry(key) {
                    std::collections::hash_map::Entry::Occupied(mut verifying) => {
                        let (tx, rx) = oneshot::channel();
                        verifying.get_mut().push(tx);
                        rx
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(Vec::new());
                        break;
                    }
                }
            };
            // A refused client learns nothing about its password, not even from another's check.
            if let (Some(limit), Some(ip)) = (&self.failures, client)
                && let Err(refusal) = limit.check(ip, Instant::now())
            {
                return Err(Rejection::TooManyFailures(ip, refusal));
            }
            match waiting.await {
                Ok(SharedVerdict::Matched) => match self.accounts.get(&user) {
                    Some(account) => return Ok(account),
                    None => return Err(Rejection::Unauthorized(UNKNOWN_USER)),
                },
                Ok(SharedVerdict::Unauthorized(why)) => return Err(Rejection::Unauthorized(why)),
                Ok(SharedVerdict::Busy) => return Err(Rejection::Busy),
                Ok(SharedVerdict::Lost) => return Err(Rejection::Lost(user)),
                // The verifying attempt ended without a verdict: try again, maybe as the verifier.
                Err(oneshot::Canceled) => continue,
            }
        }
        let verifying = Verifying { in_flight: &self.in_flight, key, removed: false };
        let checked = self.charge_and_check(user, password, client, Some(key)).await;
        match &checked {
            Ok(_) => verifying.publish(SharedVerdict::Matched),
            Err(Rejection::Unauthorized(why)) => verifying.publish(SharedVerdict::Unauthorized(why)),
            Err(Rejection::Busy) => verifying.publish(SharedVerdict::Busy),
            Err(Rejection::Lost(_)) => verifying.publish(SharedVerdict::Lost),
            // This client's refusal is not the others': they verify for themselves.
            Err(Rejection::TooManyFailures(..)) => drop(verifying),
        }
        checked
    }

    /// Charges the attempt to the client (refusing it when the client used up its failures), then
    /// checks the password, and gives the charge back unless the password was wrong. `key` is the
    /// credentials' cache key, when there is a cache.
    async fn charge_and_check(
        &self,
        user: String,
        password: String,
        client: Option<IpAddr>,
        key: Option<[u8; 32]>,
    ) -> Result<&Account, Rejection> {
        let charge: Option<Charge> = match (&self.failures, client) {
            (Some(limit), Some(ip)) => {
                Some(limit.charge(ip, Instant::now()).map_err(|refusal| Rejection::TooManyFailures(ip, refusal))?)
            }
            _ => None,
        };
        let checked = self.check_password(user, password, key).await;
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
    /// user), and remembers a match under `key` (its cache key). The cache was checked already.
    async fn check_password(
        &self,
        user: String,
        password: String,
        key: Option<[u8; 32]>,
    ) -> Result<&Account, Rejection> {
        let Some(account) = self.accounts.get(&user) else {
            // Spend what a known user would, then refuse whatever the dummy said.
            return match self.verify(&self.dummy, &password).await {
                Verdict::Busy => Err(Rejection::Busy),
                _ => Err(Rejection::Unauthorized(UNKNOWN_USER)),
            };
        };
        match self.verify(&account.verifier, &password).await {
            Verdict::Match => {
                if let (Some(cache), Some(key)) = (&self.cache, key) {
                    cache.insert(key, ());
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
        match self.pool.submit(job) {
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
                request_id = crate::http::AssignedRequestId::current().map(tracing::field::display),
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
                Ok(account) => (Some(account), None),
                Err(key) => (None, Some((user.to_owned(), password.to_owned(), key))),
            }
        };
        if let (Some(_), Some(limit), Some(ip)) = (cached, &self.failures, client) {
            // A refused client learns nothing about its password, not even from the cache.
            if let Err(refusal) = limit.check(ip, Instant::now()) {
                return self.too_many_failures(ip, refusal);
            }
        }
        let verified = match pending {
            Some((user, password, key)) => Some(Box::pin(self.authenticate(user, password, client, key)).await),
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
                        request_id = crate::http::AssignedRequestId::current().map(tracing::field::display),
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
        let facts = Facts::of(&[Fact::ShortCircuits, Fact::CanFail, Fact::Authenticates, Fact::SetsUser]);
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
