//! `rate_limit`: reject excess traffic early, per client, locally or shared through Redis.
//!
//! ```
//! use strata::middleware::rate_limit::{Key, MissingKey, Quota, RateLimit};
//!
//! let limit = RateLimit::builder()
//!     .quota(Quota::per_second(100).burst(200))
//!     .quota(Quota::per_day(100_000).named("daily"))
//!     .key(Key::Header(http::HeaderName::from_static("x-api-key")))
//!     .missing_key(MissingKey::Deny)
//!     .build()
//!     .expect("a valid rate limit");
//! let stack = strata::http::Stack::new().with(limit);
//! # let _ = stack;
//! ```
//!
//! Each request is checked against one or more [`Quota`]s (at most [`gcra::MAX_LIMITS`], e.g.
//! 10/s and 1000/day) with the [generic cell rate algorithm](gcra): a smooth token bucket of
//! `burst` requests refilled at the rate. A request over a quota gets `429 Too Many Requests` with
//! `Retry-After` and an `application/problem+json` body, marked [`GeneratedError`] so an `errors`
//! layer outside reformats it for the client's `Accept`. It never reaches inner layers and
//! consumes nothing.
//!
//! Every response — admitted or not — carries the quota fields of the IETF draft
//! [draft-ietf-httpapi-ratelimit-headers-10], as structured fields:
//!
//! ```text
//! RateLimit-Policy: "default";q=100;w=60
//! RateLimit: "default";r=42;t=12
//! ```
//!
//! `q` and `w` are the configured count and period in seconds; `r` is how many requests would be
//! admitted right now (at most `burst`); `t` is the number of seconds until the bucket is full again.
//!
//! # Keys
//!
//! - [`Key::ClientIp`] (default): the client address from [`ConnectionInfo`], which the gateway
//!   resolves through `[server] trusted_proxies` (see [`crate::http::client_ip`]).
//! - [`Key::Header`]: the value of a request header, e.g. an API key. Values are hashed before use
//!   (a keyed hash in memory, SHA-256 in Redis), so keys of any size cost the same and no secret is
//!   stored in clear.
//! - [`Key::User`]: the [`AuthenticatedUser`] an authentication layer outside this one set.
//! - [`Key::Global`]: one bucket for every request.
//! - [`Key::custom`]: a key computed by a closure (or any [`KeyExtractor`]), hashed like a header's.
//!
//! A request without the key's value (no such header, no authenticated user) follows
//! [`MissingKey`]: `ClientIp` (default: limited by its client address, in the same buckets
//! `Key::ClientIp` would use), `Allow` (not limited) or `Deny` (`403`).
//!
//! # Stores
//!
//! A store keeps the counts; any [`RateLimitStore`] can (see [`Backend::custom`]).
//!
//! - [`Backend::Memory`] (default): [`memory_store::MemoryStore`], sharded maps, idle keys evicted,
//!   bounded by `max_keys`. Each gateway instance limits on its own.
//! - `Backend::Redis` (feature `redis`, on by default): `RedisStore`, atomic Lua checks on Redis's
//!   clock (concurrent checks batched into one script call): instances sharing a Redis share the
//!   limit.
//!
//! When a shared store fails (Redis down, or slower than its timeout), [`OnStoreError`] decides:
//! `Local` (default: a local memory limiter with the same quotas takes over, so each instance still
//! limits on its own), `Allow` (fail open: requests pass, without quota fields) or `Deny` (`503`
//! with `Retry-After`). Redis is retried at most every `retry_after`; when it answers again,
//! limiting through it resumes.
//!
//! # Shadow mode
//!
//! `shadow(true)` checks and counts every request but never rejects: a would-be rejection is
//! counted ([`RateLimit::shadow_rejections`]) and logged (at most one line per second, with the
//! count), and the quota fields are not sent, so clients behave as if there were no limit.
//!
//! # Configuration
//!
//! With the `config` feature, [`RateLimitConfig`] is the gateway's `kind = "rate_limit"` table
//! (`rate = "100/s"`, `key = "header:x-api-key"`, `store = "redis://…"`, `store_timeout = "50ms"`),
//! and `RateLimit::from_config` maps it onto the builder.
//!
//! [draft-ietf-httpapi-ratelimit-headers-10]: https://datatracker.ietf.org/doc/draft-ietf-httpapi-ratelimit-headers/10/

pub mod gcra;
pub mod memory_store;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis_store;

mod builder;
#[cfg(feature = "config")]
mod config;
mod store;
#[cfg(test)]
mod tests;

pub use builder::{
    Backend, CustomStore, DEFAULT_MAX_KEYS, Key, KeyExtractor, MissingKey, OnStoreError, Quota, RateLimitBuilder,
    STORE_RETRY_RANGE, STORE_TIMEOUT_RANGE,
};
#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub use config::{LimitConfig, RateLimitConfig};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis_store::{RedisStore, RedisStoreBuilder};
pub use store::{CheckFuture, RateLimitStore, StoreError, StoreKey};

use std::fmt::Write as _;
use std::hash::RandomState;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};

use self::gcra::{Gcra, Outcome};
use self::memory_store::MemoryStore;
use self::store::KeyValue;
use crate::check::{Diagnostic, Fact, Facts, Severity};
use crate::http::{AuthenticatedUser, Body, ConnectionInfo, GeneratedError, Next, Refusal, Request, Response};
use crate::stack::Middleware;

enum Store {
    Memory(MemoryStore),
    // Boxed: the Redis client is large and this variant is the rarer one.
    Shared(Box<StoreBacked>),
}

/// A store shared between instances, with what to do while it fails.
struct StoreBacked {
    shared: SharedStore,
    on_error: OnStoreError,
    fallback: MemoryStore,
    /// What the store is, for diagnostics (a Redis URL without its credentials).
    description: String,
}

enum SharedStore {
    // Called directly, not through the trait: no boxed future per check.
    #[cfg(feature = "redis")]
    Redis(RedisStore),
    Custom(Arc<dyn RateLimitStore>),
}

/// The `rate_limit` middleware (see the module docs).
pub struct RateLimit {
    quotas: Box<[Gcra]>,
    names: Box<[String]>,
    key: Key,
    missing_key: MissingKey,
    store: Store,
    /// The quotas as a shared store's keys carry them (see [`StoreKey::name`]).
    quota_tag: String,
    hasher: RandomState,
    policy_header: Option<HeaderValue>,
    shadow: bool,
    shadow_rejections: AtomicU64,
    last_shadow_log_ms: AtomicU64,
    origin: Instant,
    warned_no_connection_info: AtomicBool,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit").field("quotas", &self.quotas).field("key", &self.key).finish_non_exhaustive()
    }
}

impl RateLimit {
    /// The typed settings, with no quota yet: see [`RateLimitBuilder`].
    pub fn builder() -> RateLimitBuilder {
        RateLimitBuilder::default()
    }

    /// How many requests shadow mode let through that the limit would have rejected.
    pub fn shadow_rejections(&self) -> u64 {
        self.shadow_rejections.load(Ordering::Relaxed)
    }

    /// The key of a request, or what to do without one.
    fn client_key<'r>(&self, req: &'r Request) -> Resolved<'r> {
        let value = match &self.key {
            Key::Global => return Resolved::Key(KeyValue::Global),
            Key::ClientIp => return Resolved::Key(KeyValue::Ip(self.client_ip(req))),
            Key::Header(name) => req.headers().get(name).map(|v| KeyValue::Header(v.as_bytes())),
            Key::User => req.extensions().get::<AuthenticatedUser>().map(|u| KeyValue::User(&u.0)),
            Key::Custom(extractor) => extractor.key(req).map(KeyValue::Custom),
        };
        match (value, self.missing_key) {
            (Some(key), _) => Resolved::Key(key),
            (None, MissingKey::ClientIp) => Resolved::Key(KeyValue::Ip(self.client_ip(req))),
            (None, MissingKey::Allow) => Resolved::Unlimited,
            (None, MissingKey::Deny) => Resolved::Deny,
        }
    }

    fn client_ip(&self, req: &Request) -> IpAddr {
        match req.extensions().get::<ConnectionInfo>() {
            Some(c) => c.client,
            None => {
                if !self.warned_no_connection_info.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "rate limit keyed on the client address, but requests carry no ConnectionInfo: every request shares one bucket"
                    );
                }
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            }
        }
    }

    fn store_key<'k>(&'k self, value: &'k KeyValue<'k>) -> StoreKey<'k> {
        StoreKey::new(value, &self.hasher, &self.quota_tag)
    }

    /// Checks one request against the store, applying `on_store_error` when a shared store fails.
    async fn decide(&self, value: &KeyValue<'_>) -> Decision {
        let key = self.store_key(value);
        match &self.store {
            Store::Memory(m) => Decision::Checked(m.check(key.hash(), &self.quotas)),
            Store::Shared(s) => {
                let checked = match &s.shared {
                    #[cfg(feature = "redis")]
                    SharedStore::Redis(redis) => redis.check_name(key.name(redis.key_prefix())).await,
                    SharedStore::Custom(store) => store.check(&key, &self.quotas).await,
                };
                match checked {
                    Ok(outcome) => Decision::Checked(outcome),
                    Err(_) => match s.on_error {
                        OnStoreError::Local => Decision::Checked(s.fallback.check(key.hash(), &self.quotas)),
                        OnStoreError::Allow => Decision::Unchecked,
                        OnStoreError::Deny => Decision::StoreDown,
                    },
                }
            }
        }
    }

    fn quota_fields(&self, outcome: &Outcome, headers: &mut http::HeaderMap) {
        let Some(policy) = &self.policy_header else { return };
        let mut text = String::with_capacity(32 * self.quotas.len());
        for (i, (name, status)) in self.names.iter().zip(outcome.statuses()).enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let _ = write!(text, "{sep}\"{name}\";r={};t={}", status.remaining, ceil_secs(status.until_full));
        }
        headers.insert(HeaderName::from_static("ratelimit-policy"), policy.clone());
        // The string's buffer becomes the header's bytes: validated, not copied.
        if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(text)) {
            headers.insert(HeaderName::from_static("ratelimit"), v);
        }
    }

    fn too_many_requests(&self, outcome: &Outcome) -> Response {
        let retry = ceil_secs(outcome.retry_after).max(1);
        let mut res = problem(StatusCode::TOO_MANY_REQUESTS, TOO_MANY_DETAIL);
        res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry));
        self.quota_fields(outcome, res.headers_mut());
        Refusal::mark(res, self.over_limit_reason(outcome, retry))
    }

    /// Which limits the request's key used up, and what the key is (its kind: a header's or a
    /// user's key may be a secret).
    fn over_limit_reason(&self, outcome: &Outcome, retry: u64) -> String {
        let full: Vec<&str> = self
            .names
            .iter()
            .zip(outcome.statuses())
            .filter(|(_, status)| status.remaining == 0)
            .map(|(name, _)| name.as_str())
            .collect();
        format!("over the limit {} (key: {}); retry after {retry}s", full.join(", "), self.key.describe())
    }

    fn note_shadow_rejection(&self, key: &KeyValue<'_>) {
        let total = self.shadow_rejections.fetch_add(1, Ordering::Relaxed) + 1;
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
        let last = self.last_shadow_log_ms.load(Ordering::Relaxed);
        // One line per second at most, whatever the load: a log must not become the bottleneck.
        if (last == 0 || now.saturating_sub(last) >= 1000)
            && self.last_shadow_log_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            // Header, user and custom keys may be secrets: only the address is logged.
            let client = match key {
                KeyValue::Ip(ip) => ip.to_string(),
                KeyValue::Header(_) => "<header key>".into(),
                KeyValue::User(_) => "<user key>".into(),
                KeyValue::Custom(_) => "<custom key>".into(),
                KeyValue::Global => "<global>".into(),
            };
            tracing::warn!(
                client = %client,
                shadow_rejections = total,
                request_id = crate::http::AssignedRequestId::current().map(tracing::field::display),
                "rate limit (shadow): would have rejected a request"
            );
        }
    }
}

const TOO_MANY_DETAIL: &str = "Too many requests: retry after the number of seconds in Retry-After.";
const STORE_DOWN_DETAIL: &str = "The rate limiter is unavailable; retry shortly.";
const MISSING_KEY_DETAIL: &str = "This resource requires an identified client.";

/// A problem+json response marked [`GeneratedError`] (fixed text only).
fn problem(status: StatusCode, detail: &'static str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let body =
        serde_json::json!({ "type": "about:blank", "title": title, "status": status.as_u16(), "detail": detail });
    let mut res = Response::new(Body::from(Bytes::from(body.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    res.extensions_mut().insert(GeneratedError::with_detail(detail));
    res
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A Redis URL without its credentials, for messages and diagnostics.
#[cfg_attr(not(any(feature = "redis", feature = "config")), allow(dead_code))]
fn redact(text: &str) -> String {
    match (text.find("://"), text.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://<credentials>@{}", &text[..scheme], &text[at + 1..]),
        _ => text.to_string(),
    }
}

enum Resolved<'r> {
    Key(KeyValue<'r>),
    Unlimited,
    Deny,
}

enum Decision {
    Checked(Outcome),
    /// The store failed and `on_store_error = "allow"`.
    Unchecked,
    /// The store failed and `on_store_error = "deny"`.
    StoreDown,
}

impl Middleware<Request, Response> for RateLimit {
    async fn handle(&self, req: Request, next: Next) -> Response {
        let key = match self.client_key(&req) {
            Resolved::Key(key) => key,
            Resolved::Unlimited => return next.run(req).await,
            Resolved::Deny => {
                return Refusal::mark(
                    problem(StatusCode::FORBIDDEN, MISSING_KEY_DETAIL),
                    "the request has no rate-limit key and missing_key = \"deny\"",
                );
            }
        };
        let outcome = match self.decide(&key).await {
            Decision::Checked(outcome) => outcome,
            Decision::Unchecked => return next.run(req).await,
            Decision::StoreDown => {
                let mut res = problem(StatusCode::SERVICE_UNAVAILABLE, STORE_DOWN_DETAIL);
                res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return Refusal::mark(res, "the rate-limit store is unreachable and on_store_error = \"deny\"");
            }
        };
        if !outcome.allowed {
            if !self.shadow {
                return self.too_many_requests(&outcome);
            }
            self.note_shadow_rejection(&key);
        }
        let mut res = next.run(req).await;
        self.quota_fields(&outcome, res.headers_mut());
        res
    }

    fn kind(&self) -> &'static str {
        "rate_limit"
    }

    fn facts(&self) -> Facts {
        // CanFail: its 429 (and a Redis-less 503) are errors `errors` should format.
        Facts::of(&[Fact::ShortCircuits, Fact::CanFail, Fact::LimitsRate]).union(self.key.facts(self.missing_key))
    }

    fn diagnostics(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        if let Store::Shared(s) = &self.store {
            let (on_error, store) = (s.on_error, &s.description);
            out.push(Diagnostic {
                severity: Severity::Note,
                rule: "rate-limit-store-error-mode",
                layer: String::new(),
                message: format!("shares its limits through {store}; on_store_error = {}", on_error.describe()),
                why: "a shared store can fail; this is what the layer does until it answers again".into(),
                fix: "set `on_store_error` to \"local\", \"allow\" or \"deny\" to choose".into(),
            });
        }
        if self.shadow {
            out.push(Diagnostic {
                severity: Severity::Note,
                rule: "rate-limit-shadow",
                layer: String::new(),
                message: "shadow mode: counts and logs would-be rejections, never rejects".into(),
                why: "shadow mode measures a limit before enforcing it".into(),
                fix: "remove `shadow = true` to enforce the limit".into(),
            });
        }
        out
    }
}
