//! The targets of an upstream route: each with its own keep-alive [`Pool`], its requests in
//! progress and its health, and the route's way of picking one (`balance`), its retry budget and
//! its active health check ([`health`]).
//!
//! # Health
//!
//! A target is used unless it is *ejected* or *down*:
//!
//! - **Ejected** (passive health, from real traffic): `eject_after` failures in a row — a refused
//!   or failed connection, an exchange cut before the response head, a timeout, a `5xx` answer —
//!   take it out for `eject_for`, twice as long for each ejection in a row (up to five minutes, or
//!   `eject_for` when longer), after which it gets traffic again. A success resets the count, and
//!   the first success after an ejection resets the back-off. Like Envoy's outlier detection
//!   (`consecutive_5xx`, `base_ejection_time`) and nginx's `max_fails` / `fail_timeout`.
//! - **Down** (active health): `unhealthy_threshold` failed checks in a row; back after
//!   `healthy_threshold` passed checks in a row, which also end an ejection (as Envoy's
//!   `successful_active_health_check_uneject_host`).
//!
//! A route with one target is never ejected nor taken down (as nginx ignores `max_fails` for a
//! lone server): there is nothing else to send to, and failing fast with a `503` would only hide
//! the `502`/`504` that says what went wrong, and turn away the first request after a recovery.
//! When every target of a larger route is out, requests get a `503` with `Retry-After`.

mod balance;
mod budget;
pub mod health;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::HeaderValue;
use http::uri::{Authority, PathAndQuery, Uri};
use strata::http::{ConnectionInfo, Request};

use crate::config::{Balance, HashOn, MAX_EJECTION, ProxyOptions, UpstreamOptions, UpstreamTarget};
use crate::pool::Pool;
use crate::tls_client::UpstreamTls;
use balance::RoundRobin;
use budget::RetryBudget;

/// One server of a route, with its connections and its health.
pub struct Backend {
    /// The URL as configured.
    pub url: Uri,
    /// Its share of the traffic.
    pub weight: u32,
    /// `host:port`, as logs name it.
    pub authority: Authority,
    /// `host:port` to connect to (IPv6 without brackets).
    pub(crate) addr: String,
    /// The URL's path without its trailing slash (`""` for none): prepended to every path.
    pub(crate) base_path: String,
    /// The `Host` sent when the client's is not.
    pub(crate) host: HeaderValue,
    /// HTTP/1.1 keep-alive connections (none for HTTP/2 upstreams).
    pub(crate) pool: Option<Arc<Pool>>,
    /// How an `https://` target is spoken to (`None` for `http://`): the health check's too.
    pub(crate) tls: Option<Arc<UpstreamTls>>,
    /// Whether it speaks HTTP/2 (the route's `http2`), which the health check speaks too.
    pub(crate) http2: bool,
    /// Hashed URL: its identity for rendezvous hashing.
    id: u64,
    in_flight: AtomicUsize,
    failures: AtomicU32,
    /// Milliseconds since [`Upstreams::start`] until which it is ejected; 0 when it is not.
    ejected_until: AtomicU64,
    /// Ejections in a row (reset by a success after the last one).
    ejections: AtomicU32,
    /// What the active health check says (true until it says otherwise).
    up: AtomicBool,
    /// Attempts by [`Outcome`], kept across reloads: `strata_upstream_requests_total`.
    pub(crate) outcomes: Arc<crate::metrics::Counters<5>>,
}

/// How one attempt on a target ended, as `strata_upstream_requests_total` counts it (in the order
/// of [`crate::metrics::UPSTREAM_OUTCOMES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response below 500.
    Success = 0,
    /// A `5xx` response.
    ServerError = 1,
    /// No connection could be made.
    ConnectFailure = 2,
    /// No response head within `timeout`.
    Timeout = 3,
    /// The exchange broke before the response head.
    Broken = 4,
}

impl Backend {
    /// The path and query sent to this target for `forwarded` (the client's, less any stripped
    /// prefix): its base path first.
    pub(crate) fn path_for(&self, forwarded: &PathAndQuery) -> Option<PathAndQuery> {
        if self.base_path.is_empty() && forwarded.as_str().starts_with('/') {
            return Some(forwarded.clone());
        }
        let mut pq = String::with_capacity(self.base_path.len() + forwarded.as_str().len() + 1);
        pq.push_str(&self.base_path);
        if !forwarded.as_str().starts_with('/') {
            pq.push('/');
        }
        pq.push_str(forwarded.as_str());
        PathAndQuery::try_from(pq).ok()
    }
}

/// The targets of one route and how requests are shared among them.
pub struct Upstreams {
    /// The route's name (its hosts and prefix), for logs.
    pub(crate) route: Box<str>,
    /// In the order written.
    pub targets: Vec<Backend>,
    /// How a target is picked.
    pub options: UpstreamOptions,
    round_robin: RoundRobin,
    ids: Box<[u64]>,
    weights: Box<[u32]>,
    budget: RetryBudget,
    start: Instant,
}

/// Requests in progress on a target, counted for `least_requests` until dropped (with the
/// response body, so a long download counts for as long as it lasts).
pub(crate) struct InFlight {
    upstreams: Arc<Upstreams>,
    index: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.upstreams.targets[self.index].in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Upstreams {
    /// The targets of the route named `name` in logs (its hosts and prefix), each with a pool
    /// (HTTP/1.1) built from `proxy`'s timeouts. Building starts nothing: see [`health::start`].
    ///
    /// `tls` holds, per target, how an `https://` one is spoken to (`None` for `http://`).
    pub fn new(
        targets: &[UpstreamTarget],
        name: &str,
        proxy: &ProxyOptions,
        options: &UpstreamOptions,
        tls: Vec<Option<Arc<UpstreamTls>>>,
    ) -> Upstreams {
        let backends: Vec<Backend> = targets
            .iter()
            .zip(tls.into_iter().chain(std::iter::repeat(None)))
            .map(|(t, tls)| {
                let url = &t.url;
                let default_port = if url.scheme() == Some(&http::uri::Scheme::HTTPS) { 443 } else { 80 };
                let port = url.port_u16().unwrap_or(default_port);
                let host = url.host().unwrap_or("127.0.0.1");
                let addr = format!("{}:{port}", host.trim_start_matches('[').trim_end_matches(']'));
                let authority = url.authority().cloned().unwrap_or_else(|| Authority::from_static("127.0.0.1"));
                let pool = (!proxy.http2).then(|| {
                    Pool::with_tls(addr.clone(), tls.clone(), name.into(), proxy.connect_timeout, proxy.idle_timeout)
                });
                Backend {
                    host: HeaderValue::from_str(authority.as_str()).unwrap_or(HeaderValue::from_static("localhost")),
                    id: balance::stable_hash(url.to_string().as_bytes()),
                    url: url.clone(),
                    weight: t.weight,
                    authority,
                    addr,
                    base_path: url.path().trim_end_matches('/').to_string(),
                    pool,
                    tls,
                    http2: proxy.http2,
                    in_flight: AtomicUsize::new(0),
                    failures: AtomicU32::new(0),
                    ejected_until: AtomicU64::new(0),
                    ejections: AtomicU32::new(0),
                    up: AtomicBool::new(true),
                    outcomes: crate::metrics::global().upstream_target(name, &url.to_string()),
                }
            })
            .collect();
        let weights: Box<[u32]> = backends.iter().map(|b| b.weight).collect();
        Upstreams {
            route: name.into(),
            round_robin: RoundRobin::new(&weights),
            ids: backends.iter().map(|b| b.id).collect(),
            weights,
            targets: backends,
            options: options.clone(),
            budget: RetryBudget::new(),
            start: Instant::now(),
        }
    }

    /// How `explain` and the start-up banner show the targets: the URL alone for one, else the
    /// balance and each URL with its weight.
    pub fn describe(&self) -> String {
        if let [only] = self.targets.as_slice() {
            return format!("upstream {}", only.url);
        }
        let balance = match &self.options.balance {
            Balance::RoundRobin => "round_robin".to_string(),
            Balance::LeastRequests => "least_requests".to_string(),
            Balance::Hash(HashOn::ClientIp) => "hash on client_ip".to_string(),
            Balance::Hash(HashOn::Header(name)) => format!("hash on header:{name}"),
        };
        let targets: Vec<String> = self.targets.iter().map(|t| format!("{} (weight {})", t.url, t.weight)).collect();
        format!("upstream {balance} [{}]", targets.join(", "))
    }

    /// Whether a request may be sent again to another target: more than one target, and retries on.
    pub(crate) fn retries_possible(&self) -> bool {
        self.targets.len() > 1 && self.options.retries > 0
    }

    /// The key `balance = "hash"` places this request by; `None` for the other balances and for
    /// a request without the header hashed on (it goes round robin).
    pub(crate) fn hash_key(&self, req: &Request) -> Option<u64> {
        match &self.options.balance {
            Balance::Hash(HashOn::ClientIp) => {
                let ip = req.extensions().get::<ConnectionInfo>()?.client;
                Some(match ip {
                    std::net::IpAddr::V4(v4) => balance::stable_hash(&v4.octets()),
                    std::net::IpAddr::V6(v6) => balance::stable_hash(&v6.octets()),
                })
            }
            Balance::Hash(HashOn::Header(name)) => Some(balance::stable_hash(req.headers().get(name)?.as_bytes())),
            _ => None,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// Whether target `i` takes requests: not ejected and not down (always, for a lone target).
    fn usable(&self, i: usize, now_ms: &std::cell::OnceCell<u64>) -> bool {
        let target = &self.targets[i];
        if self.targets.len() == 1 {
            return true;
        }
        if !target.up.load(Ordering::Relaxed) {
            return false;
        }
        let until = target.ejected_until.load(Ordering::Relaxed);
        // The clock is read only when some target is ejected.
        until == 0 || *now_ms.get_or_init(|| self.now_ms()) >= until
    }

    /// A target for a request with `key`, not among `tried` (a bit per target index); `None`
    /// when every untried target is out.
    pub(crate) fn pick(&self, key: Option<u64>, tried: u64) -> Option<usize> {
        let now = std::cell::OnceCell::new();
        let usable = |i: usize| tried & (1 << i) == 0 && self.usable(i, &now);
        if let [_] = self.targets.as_slice() {
            return usable(0).then_some(0);
        }
        match (&self.options.balance, key) {
            (Balance::Hash(_), Some(key)) => balance::rendezvous(key, &self.ids, &self.weights, usable),
            (Balance::LeastRequests, _) => balance::least_requests(self.targets.len(), usable, |i| {
                (self.targets[i].in_flight.load(Ordering::Relaxed), self.weights[i])
            }),
            _ => self.round_robin.next(usable),
        }
    }

    /// Counts a request in progress on `index` when the balance needs to know.
    pub(crate) fn begin(self: &Arc<Self>, index: usize) -> Option<InFlight> {
        if self.options.balance != Balance::LeastRequests {
            return None;
        }
        self.targets[index].in_flight.fetch_add(1, Ordering::Relaxed);
        Some(InFlight { upstreams: self.clone(), index })
    }

    /// Counts a request for the retry budget.
    pub(crate) fn record_request(&self) {
        self.budget.record_request();
    }

    /// Whether one more retry fits in the route's budget (then counted).
    pub(crate) fn try_retry(&self) -> bool {
        self.budget.try_retry()
    }

    /// How long a client should wait when every target is out: until the first ejection ends or
    /// the next health check, at least a second.
    pub(crate) fn retry_after(&self) -> Duration {
        let now = self.now_ms();
        let ejection_left = self
            .targets
            .iter()
            .map(|t| t.ejected_until.load(Ordering::Relaxed))
            .filter(|&until| until > now)
            .map(|until| Duration::from_millis(until - now))
            .min();
        let check = self.options.health_check.as_ref().map(|h| h.interval);
        let wait = match (ejection_left, check) {
            (Some(e), Some(c)) => e.min(c),
            (e, c) => e.or(c).unwrap_or(Duration::from_secs(1)),
        };
        wait.max(Duration::from_secs(1))
    }

    /// A good answer from `index`: its count of failures in a row starts again.
    pub(crate) fn succeeded(&self, index: usize) {
        let target = &self.targets[index];
        target.outcomes.increment(Outcome::Success as usize);
        // Loads first: on the usual path nothing is written, so targets' counters are not
        // bounced between cores by every request.
        if target.failures.load(Ordering::Relaxed) != 0 {
            target.failures.store(0, Ordering::Relaxed);
        }
        if target.ejections.load(Ordering::Relaxed) != 0 && target.ejections.swap(0, Ordering::Relaxed) != 0 {
            target.ejected_until.store(0, Ordering::Relaxed);
            tracing::info!(route = %self.route, upstream = %target.authority, "upstream answers again after its ejection");
        }
    }

    /// A failure of `index`; the `eject_after`-th in a row ejects it (never a lone target).
    pub(crate) fn failed(&self, index: usize, outcome: Outcome) {
        self.targets[index].outcomes.increment(outcome as usize);
        let eject_after = self.options.eject_after;
        if eject_after == 0 || self.targets.len() == 1 {
            return;
        }
        let target = &self.targets[index];
        // Requests sent before the ejection that fail after it say nothing new: counted, they
        // would eject it again at once, doubling the back-off.
        let until = target.ejected_until.load(Ordering::Relaxed);
        if until != 0 && until > self.now_ms() {
            return;
        }
        // Exactly one failure reaches the threshold, however many arrive at once.
        if target.failures.fetch_add(1, Ordering::Relaxed) + 1 != eject_after {
            return;
        }
        target.failures.store(0, Ordering::Relaxed);
        let in_a_row = target.ejections.fetch_add(1, Ordering::Relaxed);
        let longest = MAX_EJECTION.max(self.options.eject_for);
        let period = self.options.eject_for.saturating_mul(1 << in_a_row.min(20)).min(longest);
        let until = self.now_ms().saturating_add(u64::try_from(period.as_millis()).unwrap_or(u64::MAX));
        target.ejected_until.store(until, Ordering::Relaxed);
        tracing::warn!(
            route = %self.route,
            upstream = %target.authority,
            failures = eject_after,
            ejected_for = ?period,
            "upstream ejected after failures in a row"
        );
    }

    /// What the active health check found: logged once per change.
    /// Whether target `index` is healthy: neither ejected nor down by its health check. A lone
    /// target gets traffic either way, but is reported as it is.
    pub fn is_healthy(&self, index: usize) -> bool {
        let target = &self.targets[index];
        let until = target.ejected_until.load(Ordering::Relaxed);
        target.up.load(Ordering::Relaxed) && (until == 0 || self.now_ms() >= until)
    }

    /// The route's name, as logs and metrics show it.
    pub fn route(&self) -> &str {
        &self.route
    }

    pub(crate) fn set_up(&self, index: usize, up: bool) {
        let target = &self.targets[index];
        if target.up.swap(up, Ordering::Relaxed) == up {
            return;
        }
        if up {
            tracing::info!(route = %self.route, upstream = %target.authority, "upstream passed its health checks: back in rotation");
        } else {
            tracing::warn!(route = %self.route, upstream = %target.authority, "upstream failed its health checks: taken out of rotation");
        }
    }

    /// Ends an ejection early (passed health checks say the target is back).
    pub(crate) fn uneject(&self, index: usize) {
        let target = &self.targets[index];
        if target.ejected_until.swap(0, Ordering::Relaxed) > self.now_ms() {
            target.ejections.store(0, Ordering::Relaxed);
            tracing::info!(route = %self.route, upstream = %target.authority, "upstream passed its health checks: ejection ended");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstreams(n: usize, options: UpstreamOptions) -> Upstreams {
        let targets: Vec<UpstreamTarget> = (0..n)
            .map(|i| UpstreamTarget { url: format!("http://127.0.0.1:{}", 9000 + i).parse().unwrap(), weight: 1 })
            .collect();
        Upstreams::new(&targets, "/", &ProxyOptions::default(), &options, Vec::new())
    }

    #[test]
    fn failures_in_a_row_eject_and_a_success_resets_the_count() {
        let up = upstreams(2, UpstreamOptions { eject_after: 3, ..Default::default() });
        up.failed(0, Outcome::Broken);
        up.failed(0, Outcome::Broken);
        up.succeeded(0);
        up.failed(0, Outcome::Broken);
        up.failed(0, Outcome::Broken);
        assert!((0..10).all(|_| up.pick(None, 0).is_some()));
        assert!((0..4).map(|_| up.pick(None, 0).unwrap()).any(|i| i == 0), "not ejected: the success reset the count");
        up.failed(0, Outcome::Broken);
        assert!((0..10).all(|_| up.pick(None, 0) == Some(1)), "the third in a row ejects it");
        assert!(up.retry_after() >= Duration::from_secs(9));
        up.failed(1, Outcome::Broken);
        up.failed(1, Outcome::Broken);
        up.failed(1, Outcome::Broken);
        assert_eq!(up.pick(None, 0), None, "everything is out");
    }

    #[test]
    fn ejections_in_a_row_double_up_to_the_cap() {
        let up =
            upstreams(2, UpstreamOptions { eject_after: 1, eject_for: Duration::from_secs(100), ..Default::default() });
        let left =
            |up: &Upstreams| Duration::from_millis(up.targets[0].ejected_until.load(Ordering::Relaxed) - up.now_ms());
        // As if the ejection had run its course before the next failure.
        let expire = |up: &Upstreams| up.targets[0].ejected_until.store(1, Ordering::Relaxed);
        up.failed(0, Outcome::Broken);
        assert!(left(&up) > Duration::from_secs(99));
        up.failed(0, Outcome::Broken);
        assert!(left(&up) <= Duration::from_secs(100), "a failure while ejected changes nothing");
        expire(&up);
        up.failed(0, Outcome::Broken);
        assert!(left(&up) > Duration::from_secs(199));
        expire(&up);
        up.failed(0, Outcome::Broken);
        assert!(left(&up) > Duration::from_secs(299) && left(&up) <= MAX_EJECTION, "capped at five minutes");
        up.succeeded(0);
        assert_eq!(up.targets[0].ejected_until.load(Ordering::Relaxed), 0);
        up.failed(0, Outcome::Broken);
        assert!(left(&up) <= Duration::from_secs(100), "a success ended the run of ejections");
    }

    #[test]
    fn a_lone_target_is_never_out() {
        let up = upstreams(1, UpstreamOptions { eject_after: 1, ..Default::default() });
        up.failed(0, Outcome::Broken);
        up.set_up(0, false);
        assert_eq!(up.pick(None, 0), Some(0));
        assert!(!up.retries_possible());
    }

    #[test]
    fn retries_skip_the_targets_already_tried() {
        let up = upstreams(3, UpstreamOptions::default());
        let first = up.pick(None, 0).unwrap();
        let second = up.pick(None, 1 << first).unwrap();
        assert_ne!(first, second);
        let third = up.pick(None, (1 << first) | (1 << second)).unwrap();
        assert!(third != first && third != second);
        assert_eq!(up.pick(None, 0b111), None);
    }

    #[test]
    fn a_target_down_by_health_checks_is_skipped() {
        let up = upstreams(2, UpstreamOptions::default());
        up.set_up(1, false);
        assert!((0..10).all(|_| up.pick(None, 0) == Some(0)));
        up.set_up(1, true);
        assert!((0..10).any(|_| up.pick(None, 0) == Some(1)));
    }
}
