//! `rate_limit`: reject excess traffic early, per client, locally or shared through Redis.
//!
//! Each request is checked against one or more quotas (`rate = "100/s"`, or `limits = [...]` for
//! several at once, e.g. 10/s and 1000/day) with the [generic cell rate algorithm](gcra): a smooth
//! token bucket of `burst` requests refilled at the rate. A request over a quota gets
//! `429 Too Many Requests` with `Retry-After` and an `application/problem+json` body, marked
//! [`GeneratedError`] so an `errors` layer outside reformats it for the client's `Accept`. It never
//! reaches inner layers and consumes nothing.
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
//! - `client_ip` (default): the client address from [`ConnectionInfo`], which the gateway resolves
//!   through `[server] trusted_proxies` (see [`crate::http::client_ip`]).
//! - `header:NAME`: the value of a request header, e.g. an API key. Values are hashed before use
//!   (a keyed hash in memory, SHA-256 in Redis), so keys of any size cost the same and no secret is
//!   stored in clear.
//! - `user`: the [`AuthenticatedUser`] an authentication layer outside this one set.
//! - `global`: one bucket for every request.
//!
//! A request without the key's value (no such header, no authenticated user) follows
//! `missing_key`: `"client_ip"` (default: limited by its client address, in the same buckets as
//! `key = "client_ip"` would use), `"allow"` (not limited) or `"deny"` (`403`).
//!
//! # Stores
//!
//! - `memory` (default): [`memory_store::MemoryStore`], sharded maps, idle keys evicted, bounded by
//!   `max_keys`. Each gateway instance limits on its own.
//! - `redis://host:port[/db]`: [`redis_store::RedisStore`], atomic Lua checks on Redis's clock
//!   (concurrent checks batched into one script call): instances sharing a Redis share the limit. When Redis fails (down, slow beyond
//!   `store_timeout_ms`), `on_store_error` decides: `"local"` (default: a local memory limiter with
//!   the same quotas takes over, so each instance still limits on its own), `"allow"` (fail open:
//!   requests pass, without quota fields) or `"deny"` (`503` with `Retry-After`). Redis is retried
//!   at most every `store_retry_ms`; when it answers again, limiting through it resumes.
//!
//! # Shadow mode
//!
//! `shadow = true` checks and counts every request but never rejects: a would-be rejection is
//! counted ([`RateLimit::shadow_rejections`]) and logged (at most one line per second, with the
//! count), and the quota fields are not sent, so clients behave as if there were no limit.
//!
//! ```
//! use strata::middleware::rate_limit::{RateLimit, RateLimitConfig};
//! use strata::middleware::BuildContext;
//!
//! let config = RateLimitConfig { rate: Some("100/s".into()), burst: Some(20), ..Default::default() };
//! let limit = RateLimit::new(config, &BuildContext::default()).expect("a valid rate limit");
//! let stack = strata::http::Stack::new().with(limit);
//! # let _ = stack;
//! ```
//!
//! [draft-ietf-httpapi-ratelimit-headers-10]: https://datatracker.ietf.org/doc/draft-ietf-httpapi-ratelimit-headers/10/

pub mod gcra;
pub mod memory_store;
pub mod redis_store;

mod config;
#[cfg(test)]
mod tests;

pub use config::{LimitConfig, MissingKey, OnStoreError, RateLimitConfig};

use std::fmt::Write as _;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};
use sha2::{Digest, Sha256};

use self::gcra::{Clock, Gcra, MAX_LIMITS, MonotonicClock, Outcome};
use self::memory_store::MemoryStore;
use self::redis_store::RedisStore;
use crate::check::{Diagnostic, Fact, Facts, Severity};
use crate::http::{AuthenticatedUser, Body, ConnectionInfo, GeneratedError, Next, Refusal, Request, Response};
use crate::middleware::{BuildContext, ConfigError};
use crate::stack::Middleware;

/// Where a bucket's key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum KeySource {
    ClientIp,
    Header(HeaderName),
    User,
    Global,
}

enum Store {
    Memory(MemoryStore),
    // Boxed: the Redis client is large and this variant is the rarer one.
    Redis(Box<RedisBacked>),
}

struct RedisBacked {
    redis: RedisStore,
    on_error: OnStoreError,
    fallback: MemoryStore,
    url: String,
}

/// The `rate_limit` middleware (see the module docs).
pub struct RateLimit {
    quotas: Box<[Gcra]>,
    names: Box<[String]>,
    key: KeySource,
    missing_key: MissingKey,
    store: Store,
    key_prefix: String,
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
    /// Validates `config` and precomputes the quotas and header values. Redis is not contacted.
    pub fn new(config: RateLimitConfig, _ctx: &BuildContext) -> Result<RateLimit, ConfigError> {
        Self::with_clock(config, Arc::new(MonotonicClock::new()))
    }

    /// Like [`RateLimit::new`], with the memory store (and fallback) on `clock`: for tests.
    pub fn with_clock(config: RateLimitConfig, clock: Arc<dyn Clock>) -> Result<RateLimit, ConfigError> {
        let specs: Vec<(String, Option<u64>, Option<String>, &'static str)> = match (
            &config.rate,
            config.limits.is_empty(),
        ) {
            (Some(rate), true) => vec![(rate.clone(), config.burst, Some("default".into()), "rate")],
            (None, false) => {
                if config.burst.is_some() {
                    return Err(ConfigError::field("burst", "with `limits`, give each limit its own `burst`"));
                }
                config.limits.iter().map(|l| (l.rate.clone(), l.burst, l.name.clone(), "limits")).collect()
            }
            (Some(_), false) => {
                return Err(ConfigError::field(
                    "limits",
                    "give either `rate` (one quota) or `limits` (several), not both",
                ));
            }
            (None, true) => {
                return Err(ConfigError::new(
                    "a rate limit needs a quota: `rate = \"100/s\"` or `limits = [{ rate = \"10/s\" }, { rate = \"1000/day\" }]`",
                ));
            }
        };
        if specs.len() > MAX_LIMITS {
            return Err(ConfigError::field("limits", format!("at most {MAX_LIMITS} limits per layer")));
        }
        let mut quotas = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for (rate, burst, name, field) in specs {
            let (count, period) = gcra::parse_rate(&rate).map_err(|e| ConfigError::field(field, e))?;
            let burst_field = if field == "rate" { "burst" } else { "limits" };
            let quota = Gcra::new(count, period, burst.unwrap_or(count))
                .map_err(|e| ConfigError::field(burst_field, format!("`{rate}`: {e}")))?;
            let name = name.unwrap_or_else(|| rate.trim().to_string());
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' || b == b' ') {
                return Err(ConfigError::field(
                    field,
                    format!("policy name `{name}`: expected printable ASCII without quotes or backslashes"),
                ));
            }
            if names.contains(&name) {
                return Err(ConfigError::field(
                    field,
                    format!("two limits are named `{name}`: give them distinct `name`s"),
                ));
            }
            names.push(name);
            quotas.push(quota);
        }

        let key = parse_key(&config.key)?;
        if config.max_keys == 0 {
            return Err(ConfigError::field("max_keys", "expected at least 1"));
        }
        if !(1..=10_000).contains(&config.store_timeout_ms) {
            return Err(ConfigError::field("store_timeout_ms", "expected 1 to 10000 milliseconds"));
        }
        if !(10..=60_000).contains(&config.store_retry_ms) {
            return Err(ConfigError::field("store_retry_ms", "expected 10 to 60000 milliseconds"));
        }
        let store = if config.store == "memory" {
            Store::Memory(MemoryStore::new(config.max_keys, clock))
        } else if config.store.starts_with("redis://") || config.store.starts_with("rediss://") {
            // Redis works in whole microseconds: decide and report with the same rounded quotas.
            quotas = quotas.into_iter().map(Gcra::in_micros).collect();
            let redis = RedisStore::new(
                &config.store,
                &quotas,
                Duration::from_millis(config.store_timeout_ms),
                Duration::from_millis(config.store_retry_ms),
            )
            .map_err(|e| ConfigError::field("store", redact(&e)))?;
            Store::Redis(Box::new(RedisBacked {
                redis,
                on_error: config.on_store_error,
                fallback: MemoryStore::new(config.max_keys, clock),
                url: redact(&config.store),
            }))
        } else {
            return Err(ConfigError::field(
                "store",
                format!(
                    "`{}`: expected \"memory\" or a Redis URL such as \"redis://127.0.0.1:6379\"",
                    redact(&config.store)
                ),
            ));
        };

        let mut key_prefix = config.key_prefix.clone();
        // The quotas are part of the key: two layers with different quotas never share a bucket.
        for (i, q) in quotas.iter().enumerate() {
            let sep = if i == 0 { "" } else { "+" };
            let _ = write!(key_prefix, "{sep}{}/{}s;b{}", q.count, q.period.as_secs(), q.burst);
        }
        key_prefix.push(':');

        let policy_header = if config.headers && !config.shadow {
            let text = names
                .iter()
                .zip(&quotas)
                .map(|(n, q)| format!("\"{n}\";q={};w={}", q.count, q.period.as_secs()))
                .collect::<Vec<_>>()
                .join(", ");
            Some(
                HeaderValue::from_str(&text)
                    .map_err(|_| ConfigError::field("limits", "policy names must be header-safe"))?,
            )
        } else {
            None
        };

        Ok(RateLimit {
            quotas: quotas.into_boxed_slice(),
            names: names.into_boxed_slice(),
            key,
            missing_key: config.missing_key,
            store,
            key_prefix,
            hasher: RandomState::new(),
            policy_header,
            shadow: config.shadow,
            shadow_rejections: AtomicU64::new(0),
            last_shadow_log_ms: AtomicU64::new(0),
            origin: Instant::now(),
            warned_no_connection_info: AtomicBool::new(false),
        })
    }

    /// How many requests shadow mode let through that the limit would have rejected.
    pub fn shadow_rejections(&self) -> u64 {
        self.shadow_rejections.load(Ordering::Relaxed)
    }

    /// The key of a request, or what to do without one.
    fn client_key<'r>(&self, req: &'r Request) -> Resolved<'r> {
        let value = match &self.key {
            KeySource::Global => return Resolved::Key(ClientKey::Global),
            KeySource::ClientIp => return Resolved::Key(ClientKey::Ip(self.client_ip(req))),
            KeySource::Header(name) => req.headers().get(name).map(|v| ClientKey::Header(v.as_bytes())),
            KeySource::User => req.extensions().get::<AuthenticatedUser>().map(|u| ClientKey::User(&u.0)),
        };
        match (value, self.missing_key) {
            (Some(key), _) => Resolved::Key(key),
            (None, MissingKey::ClientIp) => Resolved::Key(ClientKey::Ip(self.client_ip(req))),
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

    fn memory_key(&self, key: &ClientKey<'_>) -> u64 {
        match key {
            ClientKey::Ip(ip) => self.hasher.hash_one((0u8, ip)),
            ClientKey::Header(v) => self.hasher.hash_one((1u8, v)),
            ClientKey::User(u) => self.hasher.hash_one((2u8, u.as_bytes())),
            ClientKey::Global => self.hasher.hash_one(3u8),
        }
    }

    fn redis_key(&self, key: &ClientKey<'_>) -> String {
        let digest = |tag: &str, bytes: &[u8]| {
            let sum = Sha256::digest(bytes);
            let mut s = format!("{}{tag}:", self.key_prefix);
            for b in &sum[..16] {
                let _ = write!(s, "{b:02x}");
            }
            s
        };
        match key {
            ClientKey::Ip(ip) => {
                // Every request of an address-keyed limit builds this: no formatting machinery.
                let mut key = Vec::with_capacity(self.key_prefix.len() + 3 + 39);
                key.extend_from_slice(self.key_prefix.as_bytes());
                key.extend_from_slice(b"ip:");
                crate::http::client_ip::write_ip(&mut key, *ip);
                // ASCII appended to a `str`: always UTF-8.
                String::from_utf8(key).unwrap_or_default()
            }
            ClientKey::Header(v) => digest("h", v),
            ClientKey::User(u) => digest("u", u.as_bytes()),
            ClientKey::Global => format!("{}global", self.key_prefix),
        }
    }

    /// Checks one request against the store, applying `on_store_error` when Redis fails.
    async fn decide(&self, key: &ClientKey<'_>) -> Decision {
        match &self.store {
            Store::Memory(m) => Decision::Checked(m.check(self.memory_key(key), &self.quotas)),
            Store::Redis(r) => match r.redis.check(self.redis_key(key)).await {
                Ok(outcome) => Decision::Checked(outcome),
                Err(_) => match r.on_error {
                    OnStoreError::Local => Decision::Checked(r.fallback.check(self.memory_key(key), &self.quotas)),
                    OnStoreError::Allow => Decision::Unchecked,
                    OnStoreError::Deny => Decision::StoreDown,
                },
            },
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
        let key = match &self.key {
            KeySource::ClientIp => "client_ip".to_string(),
            KeySource::Header(name) => format!("header {name}"),
            KeySource::User => "user".to_string(),
            KeySource::Global => "global".to_string(),
        };
        format!("over the limit {} (key: {key}); retry after {retry}s", full.join(", "))
    }

    fn note_shadow_rejection(&self, key: &ClientKey<'_>) {
        let total = self.shadow_rejections.fetch_add(1, Ordering::Relaxed) + 1;
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
        let last = self.last_shadow_log_ms.load(Ordering::Relaxed);
        // One line per second at most, whatever the load: a log must not become the bottleneck.
        if (last == 0 || now.saturating_sub(last) >= 1000)
            && self.last_shadow_log_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            // Header and user keys may be secrets: only the address is logged.
            let client = match key {
                ClientKey::Ip(ip) => ip.to_string(),
                ClientKey::Header(_) => "<header key>".into(),
                ClientKey::User(_) => "<user key>".into(),
                ClientKey::Global => "<global>".into(),
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

fn parse_key(text: &str) -> Result<KeySource, ConfigError> {
    let expected = || {
        ConfigError::field(
            "key",
            format!(
                "`{text}`: expected \"client_ip\", \"user\", \"global\" or \"header:NAME\" (e.g. \"header:x-api-key\")"
            ),
        )
    };
    match text {
        "client_ip" => Ok(KeySource::ClientIp),
        "user" => Ok(KeySource::User),
        "global" => Ok(KeySource::Global),
        _ => {
            let name = text.strip_prefix("header:").ok_or_else(expected)?;
            HeaderName::from_bytes(name.trim().as_bytes()).map(KeySource::Header).map_err(|_| expected())
        }
    }
}

/// A Redis URL without its credentials, for messages and diagnostics.
fn redact(text: &str) -> String {
    match (text.find("://"), text.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://<credentials>@{}", &text[..scheme], &text[at + 1..]),
        _ => text.to_string(),
    }
}

enum ClientKey<'r> {
    Ip(IpAddr),
    Header(&'r [u8]),
    User(&'r str),
    Global,
}

enum Resolved<'r> {
    Key(ClientKey<'r>),
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
        let mut facts = Facts::of(&[Fact::ShortCircuits, Fact::CanFail]);
        if self.key == KeySource::ClientIp {
            facts = facts.with(Fact::ReadsClientAddress).with(Fact::KeysOnClientAddress);
        } else if self.missing_key == MissingKey::ClientIp && self.key != KeySource::Global {
            facts = facts.with(Fact::ReadsClientAddress);
        }
        facts
    }

    fn diagnostics(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        if let Store::Redis(r) = &self.store {
            let (on_error, url) = (r.on_error, &r.url);
            out.push(Diagnostic {
                severity: Severity::Note,
                rule: "rate-limit-store-error-mode",
                layer: String::new(),
                message: format!("shares its limits through Redis at {url}; on_store_error = {}", on_error.describe()),
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
