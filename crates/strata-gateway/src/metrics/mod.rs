//! What the gateway counts, for `/metrics` and the dashboard of the admin listener.
//!
//! Every family and label is listed in `docs/metrics.md`; the names are a contract. Label values are
//! bounded by the config, never by traffic: a route is named by its hosts and prefix (never the
//! request's path), a method outside the common eight is `OTHER`, a status is its class (`2xx`).
//!
//! Metrics are on when the config has an `[admin]` listener to read them from. Recording is a few
//! relaxed atomic adds per request on the recording thread's own shard ([`instruments`]); the
//! per-layer times come from the stack's own timer ([`strata::Service::call_timed`]), which the
//! timing layer's `Server-Timing` reads too.
//!
//! Counters live in a process-wide [`Registry`] and are found again by name when a reload builds
//! the routes anew, so a reload does not reset them (a route whose layers changed starts afresh).

pub mod instruments;
pub mod render;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use http::{Method, StatusCode};
use strata::{LayerInfo, LayerTimer};

pub use instruments::{Counter, Counters, Gauge, Histogram, HistogramSnapshot};

/// The methods counted by name; any other is `OTHER`.
pub const METHODS: [&str; 8] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER"];
/// The status classes.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// What a rate limit decided: let the request through, refused it, or answered otherwise (its
/// store failed and it was set to fail closed).
pub const RATE_LIMIT_DECISIONS: [&str; 3] = ["allowed", "limited", "error"];
/// The layer kinds whose own 401s and 403s count as authentication failures.
pub const AUTH_KINDS: [&str; 3] = ["basic_auth", "jwt", "forward_auth"];
/// The kind whose decisions `strata_ratelimit_decisions_total` counts.
pub const RATE_LIMIT_KIND: &str = "rate_limit";
/// The name of the requests no route matched (and the ones the router refused).
pub const UNMATCHED: &str = "(unmatched)";

/// The index of `method` in [`METHODS`].
pub fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// The index of `status`'s class in [`STATUS_CLASSES`].
pub fn class_index(status: StatusCode) -> usize {
    usize::from(status.as_u16() / 100).clamp(1, 5) - 1
}

/// One layer of a route's onion (or its target, the last one), as measured.
pub struct LayerMetrics {
    /// The layer's name (`app` for the target).
    pub name: String,
    /// Its kind.
    pub kind: &'static str,
    /// Time spent in the layer itself, inner layers excluded: `strata_layer_duration_seconds`.
    pub duration: Histogram,
    /// The responses it gave by itself, without calling the layers inside it, by status class:
    /// `strata_layer_responses_total` (for the target: every response that reached it).
    pub answered: Counters<5>,
    /// For a rate limit: its decisions, shared by every route it is on.
    decisions: Option<Arc<Counters<3>>>,
    /// For an authentication layer: its failures, shared by every route it is on.
    auth_failures: Option<Arc<Counter>>,
}

/// What one route counts.
pub struct RouteMetrics {
    /// The route's name (hosts and prefix), or [`UNMATCHED`].
    pub name: String,
    /// Requests by method (rows of [`METHODS`]) and status class (columns of [`STATUS_CLASSES`]).
    pub requests: Counters<40>,
    /// Time to the response head, every layer included: `strata_request_duration_seconds`.
    pub duration: Histogram,
    /// The onion, outermost first, then the target.
    pub layers: Vec<LayerMetrics>,
}

impl RouteMetrics {
    /// Records one request whose response head is `status`, with the stack's timer.
    pub fn record(&self, method: usize, status: StatusCode, timer: &LayerTimer) {
        let shard = instruments::shard();
        let class = class_index(status);
        self.requests.add_on(shard, method * STATUS_CLASSES.len() + class, 1);
        self.duration.observe_on(shard, timer.total());
        let answered_by = timer.answered_by();
        for (i, (time, layer)) in timer.layers().zip(&self.layers).enumerate() {
            if time.entered.is_none() {
                break;
            }
            layer.duration.observe_on(shard, time.exclusive);
            let answered = answered_by == Some(i);
            if answered {
                layer.answered.add_on(shard, class, 1);
            }
            if let Some(decisions) = &layer.decisions {
                let decision = match (answered, status) {
                    (false, _) => 0,
                    (true, StatusCode::TOO_MANY_REQUESTS) => 1,
                    (true, _) => 2,
                };
                decisions.add_on(shard, decision, 1);
            }
            if let Some(failures) = &layer.auth_failures
                && answered
                && matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
            {
                failures.add_on(shard, 0, 1);
            }
        }
    }

    /// The requests of each status class, all methods together.
    pub fn by_class(&self) -> [u64; 5] {
        let all = self.requests.values();
        std::array::from_fn(|class| (0..METHODS.len()).map(|m| all[m * STATUS_CLASSES.len() + class]).sum())
    }

    fn same_layers(&self, layers: &[(String, &'static str)]) -> bool {
        self.layers.len() == layers.len()
            && self.layers.iter().zip(layers).all(|(l, (n, k))| l.name == *n && l.kind == *k)
    }
}

/// Every count of the process, kept across reloads.
pub struct Registry {
    routes: Mutex<BTreeMap<String, Arc<RouteMetrics>>>,
    rate_limits: Mutex<BTreeMap<String, Arc<Counters<3>>>>,
    auth_failures: Mutex<BTreeMap<String, Arc<Counter>>>,
    upstream_targets: Mutex<BTreeMap<(String, String), Arc<Counters<5>>>>,
    /// Requests between their arrival and their response head: `strata_requests_in_flight`.
    pub in_flight: Gauge,
    /// Config reloads that succeeded (0) and failed (1): `strata_config_reloads_total`.
    pub reloads: Counters<2>,
    /// When the last reload succeeded (seconds since the epoch; 0: none yet).
    pub last_reload: std::sync::atomic::AtomicU64,
    /// When the process started counting.
    pub started: SystemTime,
}

/// The process's registry.
pub fn global() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry {
        routes: Mutex::default(),
        rate_limits: Mutex::default(),
        auth_failures: Mutex::default(),
        upstream_targets: Mutex::default(),
        in_flight: Gauge::default(),
        reloads: Counters::default(),
        last_reload: std::sync::atomic::AtomicU64::new(0),
        started: SystemTime::now(),
    })
}

/// How `strata_upstream_requests_total` labels the end of one attempt on a target.
pub const UPSTREAM_OUTCOMES: [&str; 5] = ["success", "server_error", "connect_failure", "timeout", "broken"];

impl Registry {
    /// The metrics of the route `name` whose onion is `layers` (server and route layers, then the
    /// target as a layer named `app`): the ones it had before a reload when its layers are the same.
    pub fn route(&self, name: &str, layers: &[LayerInfo]) -> Arc<RouteMetrics> {
        let named: Vec<(String, &'static str)> = layers.iter().map(|l| (l.name.clone(), l.kind)).collect();
        let mut routes = self.routes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(existing) = routes.get(name).filter(|m| m.same_layers(&named)) {
            return existing.clone();
        }
        let metrics = Arc::new(RouteMetrics {
            name: name.to_string(),
            requests: Counters::default(),
            duration: Histogram::default(),
            layers: named
                .into_iter()
                .map(|(name, kind)| LayerMetrics {
                    decisions: (kind == RATE_LIMIT_KIND).then(|| self.rate_limit(&name)),
                    auth_failures: AUTH_KINDS.contains(&kind).then(|| self.auth_failure(&name)),
                    name,
                    kind,
                    duration: Histogram::default(),
                    answered: Counters::default(),
                })
                .collect(),
        });
        routes.insert(name.to_string(), metrics.clone());
        metrics
    }

    fn rate_limit(&self, layer: &str) -> Arc<Counters<3>> {
        let mut all = self.rate_limits.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        all.entry(layer.to_string()).or_default().clone()
    }

    fn auth_failure(&self, layer: &str) -> Arc<Counter> {
        let mut all = self.auth_failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        all.entry(layer.to_string()).or_default().clone()
    }

    /// The outcome counters ([`UPSTREAM_OUTCOMES`]) of `target` on `route`, kept across reloads.
    pub fn upstream_target(&self, route: &str, target: &str) -> Arc<Counters<5>> {
        let mut all = self.upstream_targets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        all.entry((route.to_string(), target.to_string())).or_default().clone()
    }

    /// Forgets the routes and targets not in `routes` (after a reload removed them), so that they
    /// are no longer reported.
    pub fn retain_routes(&self, routes: &[String]) {
        let keep = |name: &str| routes.iter().any(|r| r == name) || name == UNMATCHED;
        self.routes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|name, _| keep(name));
        self.upstream_targets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|(route, _), _| keep(route));
    }

    /// Each rate limit's decisions ([`RATE_LIMIT_DECISIONS`]), by layer name.
    pub fn rate_limit_decisions(&self) -> Vec<(String, [u64; 3])> {
        let all = self.rate_limits.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        all.iter().map(|(name, c)| (name.clone(), c.values())).collect()
    }

    /// Each authentication layer's failures, by layer name.
    pub fn auth_failure_counts(&self) -> Vec<(String, u64)> {
        let all = self.auth_failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        all.iter().map(|(name, c)| (name.clone(), c.get(0))).collect()
    }

    /// Counts a reload: `ok` when the new config is served.
    pub fn reloaded(&self, ok: bool) {
        self.reloads.increment(usize::from(!ok));
        if ok {
            let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            self.last_reload.store(now, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata::Facts;
    use strata::http::{Next, Request, Response, Stack, response};

    fn info(name: &str, kind: &'static str) -> LayerInfo {
        LayerInfo { name: name.into(), kind, facts: Facts::NONE }
    }

    #[test]
    fn a_route_keeps_its_counts_across_a_rebuild_unless_its_layers_change() {
        let registry = global();
        let layers = [info("log", "access_log"), info("app", "app")];
        let first = registry.route("test-keep/", &layers);
        first.requests.increment(0);
        let again = registry.route("test-keep/", &layers);
        assert!(Arc::ptr_eq(&first, &again));
        let changed = registry.route("test-keep/", &[info("auth", "basic_auth"), info("app", "app")]);
        assert!(!Arc::ptr_eq(&first, &changed));
        assert_eq!(changed.requests.get(0), 0);
    }

    #[tokio::test]
    async fn each_layer_is_timed_and_the_one_that_answered_is_counted() {
        let guard = strata::from_fn(|req: Request, next: Next| async move {
            if req.uri().path() == "/deny" {
                response::text(StatusCode::UNAUTHORIZED, "no")
            } else {
                next.run(req).await
            }
        })
        .with_kind("basic_auth");
        let limit = strata::from_fn(|req: Request, next: Next| next.run(req)).with_kind("rate_limit");
        let stack = Stack::new().with_named("test-limit", limit).with_named("test-guard", guard);
        let mut layers = stack.infos();
        layers.push(info("app", "app"));
        let service = stack.serve(|_req: Request| async { response::text(StatusCode::OK, "hi") });
        let metrics = global().route("test-answer/", &layers);

        for path in ["/ok", "/deny", "/deny"] {
            let req = http::Request::builder().uri(path).body(Default::default()).unwrap();
            let (run, timer) = service.call_timed(req);
            let res: Response = run.await;
            metrics.record(method_index(&Method::GET), res.status(), &timer);
        }
        assert_eq!(metrics.by_class(), [0, 1, 0, 2, 0]);
        let counts: Vec<u64> = metrics.layers.iter().map(|l| l.duration.snapshot().count()).collect();
        assert_eq!(counts, [3, 3, 1], "the app ran once");
        assert_eq!(metrics.layers[1].answered.values(), [0, 0, 0, 2, 0]);
        assert_eq!(metrics.layers[2].answered.values(), [0, 1, 0, 0, 0]);
        let decisions = global().rate_limit_decisions();
        assert!(decisions.contains(&("test-limit".to_string(), [3, 0, 0])), "{decisions:?}");
        let failures = global().auth_failure_counts();
        assert!(failures.contains(&("test-guard".to_string(), 2)), "{failures:?}");
    }
}
