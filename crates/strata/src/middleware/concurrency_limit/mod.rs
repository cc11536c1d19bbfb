//! `concurrency_limit`: at most `max` requests in flight at once, globally or per key, with an
//! optional bounded queue; the others get `503 Service Unavailable` with `Retry-After`.
//!
//! ```
//! use std::time::Duration;
//!
//! use strata::http::{Request, Response, Stack};
//! use strata::middleware::ConcurrencyLimit;
//! use strata::middleware::key::Key;
//!
//! // At most 4 requests per client address at once; 8 more may wait up to 2 s for a turn.
//! let limit = ConcurrencyLimit::builder()
//!     .max(4)
//!     .key(Key::ClientIp)
//!     .queue(8)
//!     .max_wait(Duration::from_secs(2))
//!     .build()?;
//! let service = Stack::new().with(limit).serve(|_req: Request| async { Response::new("one of four".into()) });
//! # let _ = service;
//! # Ok::<(), strata::middleware::ConfigError>(())
//! ```
//!
//! - **In flight means until the response body ends.** A request holds its permit through the
//!   layers inside and the app, then through its response body: a streaming response (a download,
//!   server-sent events) counts for as long as it streams. The permit returns when the body ends or
//!   fails, or when it is dropped because the client went away.
//! - **The queue** (`queue`, default 0: none) lets that many requests per key wait for a permit, in
//!   the order they came, for at most `max_wait` (default 1 s). A request beyond the queue, or one
//!   that waited `max_wait`, gets the `503`. A client that disconnects while waiting leaves the
//!   queue.
//! - **The 503** carries `Retry-After` (`retry_after`, default 1 s), and is marked
//!   [`GeneratedError`] (an `errors` layer outside formats it) and [`Refusal`] (the reason says which
//!   of "no queue", "queue full" or "waited" applied).
//! - **Keys** are [`Key`]s, as `rate_limit`'s: [`Key::Global`] (the default: one count for every
//!   request, to protect an upstream), [`Key::ClientIp`], [`Key::Header`], [`Key::User`] or
//!   [`Key::custom`]. Each value gets its own `max` and its own queue. A request without a value
//!   follows [`MissingKey`]: counted by its client address (default), not limited, or refused
//!   with `403`.
//! - **Memory** is bounded by the requests themselves: a key's entry exists only while it has
//!   requests in flight or waiting, and is removed when its count returns to zero. Values are kept
//!   as keyed 64-bit hashes, never in clear.
//!
//! Put it inside `rate_limit` (the ordering rule `concurrency-limit-outside-rate-limit` says why):
//! requests over their rate should be refused before they take or wait for a permit.
//!
//! With the `config` feature, `ConcurrencyLimitConfig` is the gateway's `kind = "concurrency_limit"`
//! table (`max = 100`, `key = "client_ip"`, `queue = 50`, `max_wait = "2s"`) and
//! `ConcurrencyLimit::from_config` maps it onto the builder.

mod builder;
#[cfg(feature = "config")]
mod config;
mod permits;
#[cfg(test)]
mod tests;

pub use builder::{ConcurrencyLimitBuilder, DEFAULT_MAX_WAIT, DEFAULT_RETRY_AFTER};
#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub use config::ConcurrencyLimitConfig;

use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{HeaderValue, StatusCode, header};
use http_body::Body as _;

use self::permits::{PermitBody, Refused, Slots};
use crate::check::{Fact, Facts};
use crate::http::{
    AuthenticatedUser, Body, ConnectionInfo, GeneratedError, Next, Refusal, Request, Response, response,
};
use crate::middleware::describe_duration;
use crate::middleware::key::{Key, MissingKey};
use crate::stack::Middleware;

const BUSY_DETAIL: &str = "Too many requests are in progress: retry after the number of seconds in Retry-After.";
const BUSY_BODY: &str =
    "503 Service Unavailable\n\nToo many requests are in progress: retry after the number of seconds in Retry-After.\n";
const MISSING_KEY_DETAIL: &str = "This resource requires an identified client.";
const MISSING_KEY_BODY: &str = "403 Forbidden\n\nThis resource requires an identified client.\n";

/// The `concurrency_limit` middleware. See the [module docs](self).
#[derive(Debug)]
pub struct ConcurrencyLimit {
    max: usize,
    queue: usize,
    max_wait: Duration,
    retry_after: HeaderValue,
    key: Key,
    missing_key: MissingKey,
    slots: Slots,
    hasher: RandomState,
    warned_no_connection_info: AtomicBool,
}

/// A request's key, or what to do without one.
enum Resolved {
    Key(u64),
    Unlimited,
    Deny,
}

impl ConcurrencyLimit {
    /// Starts a [`ConcurrencyLimitBuilder`]: global, no queue, and no `max` yet (one is required).
    pub fn builder() -> ConcurrencyLimitBuilder {
        ConcurrencyLimitBuilder::default()
    }

    /// The most requests in flight at once, per key.
    pub fn max(&self) -> usize {
        self.max
    }

    /// How many keys have requests in flight or waiting right now (0 for a global limit, which
    /// keeps no map): a key's entry is removed when its last request ends.
    pub fn tracked_keys(&self) -> usize {
        self.slots.keys()
    }

    /// How many requests hold a permit right now, over every key (waiting ones do not).
    pub fn in_flight(&self) -> usize {
        self.slots.in_flight(self.max)
    }

    fn resolve(&self, req: &Request) -> Resolved {
        let hashed = match &self.key {
            Key::Global => return Resolved::Key(0),
            Key::ClientIp => return Resolved::Key(self.ip_hash(req)),
            Key::Header(name) => req.headers().get(name).map(|v| self.hasher.hash_one((1u8, v.as_bytes()))),
            Key::User => {
                req.extensions().get::<AuthenticatedUser>().map(|u| self.hasher.hash_one((2u8, u.0.as_bytes())))
            }
            Key::Custom(extractor) => extractor.key(req).map(|v| self.hasher.hash_one((4u8, v.as_ref()))),
        };
        match (hashed, self.missing_key) {
            (Some(hash), _) => Resolved::Key(hash),
            (None, MissingKey::ClientIp) => Resolved::Key(self.ip_hash(req)),
            (None, MissingKey::Allow) => Resolved::Unlimited,
            (None, MissingKey::Deny) => Resolved::Deny,
        }
    }

    fn ip_hash(&self, req: &Request) -> u64 {
        let ip = match req.extensions().get::<ConnectionInfo>() {
            Some(c) => c.client.to_canonical(),
            None => {
                if !self.warned_no_connection_info.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "concurrency limit keyed on the client address, but requests carry no ConnectionInfo: every request shares one count"
                    );
                }
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            }
        };
        self.hasher.hash_one((0u8, ip))
    }

    fn busy(&self, refused: Refused) -> Response {
        let mut res = response::text(StatusCode::SERVICE_UNAVAILABLE, BUSY_BODY);
        res.headers_mut().insert(header::RETRY_AFTER, self.retry_after.clone());
        res.extensions_mut().insert(GeneratedError::with_detail(BUSY_DETAIL));
        let (max, key) = (self.max, self.key.describe());
        let reason = match refused {
            Refused::Full => format!("{max} requests in flight (key: {key}) and no queue"),
            Refused::QueueFull => {
                format!("{max} requests in flight and {} waiting (key: {key}): queue full", self.queue)
            }
            Refused::Waited => format!(
                "waited max_wait ({}) in the queue without a turn (key: {key}, max {max})",
                describe_duration(self.max_wait)
            ),
        };
        Refusal::mark(res, reason)
    }
}

impl Middleware<Request, Response> for ConcurrencyLimit {
    async fn handle(&self, req: Request, next: Next) -> Response {
        let key = match self.resolve(&req) {
            Resolved::Key(key) => key,
            Resolved::Unlimited => return next.run(req).await,
            Resolved::Deny => {
                let mut res = response::text(StatusCode::FORBIDDEN, MISSING_KEY_BODY);
                res.extensions_mut().insert(GeneratedError::with_detail(MISSING_KEY_DETAIL));
                return Refusal::mark(res, "the request has no concurrency-limit key and missing_key = \"deny\"");
            }
        };
        let permit = match self.slots.lease(key).acquire(self.queue, self.max_wait).await {
            Ok(permit) => permit,
            Err(refused) => return self.busy(refused),
        };
        let res = next.run(req).await;
        if res.body().is_end_stream() {
            // Nothing left to send: the permit returns now, without wrapping the body.
            return res;
        }
        res.map(|body| Body::wrap(PermitBody::new(body, permit)))
    }

    fn kind(&self) -> &'static str {
        "concurrency_limit"
    }

    fn facts(&self) -> Facts {
        // CanFail: its 503 (and 403) are errors an `errors` layer outside should format.
        Facts::of(&[Fact::ShortCircuits, Fact::CanFail, Fact::LimitsConcurrency])
            .union(self.key.facts(self.missing_key))
    }
}
