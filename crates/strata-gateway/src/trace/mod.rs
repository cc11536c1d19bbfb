//! Request tracing: OpenTelemetry spans of each sampled request, exported over OTLP/HTTP.
//!
//! The router asks the [`Tracer`] about every request before the stack runs ([`Tracer::begin`]):
//!
//! - **Sampling** is parent-based: a valid incoming `traceparent` whose sampled flag is set is
//!   traced, one whose flag is clear is not; a request without one (or with an invalid one) is
//!   traced when its new trace id falls under `sample_ratio`, as OpenTelemetry's
//!   `TraceIdRatioBased` sampler decides. A request that brought no trace and is not sampled
//!   leaves with a new `traceparent` whose sampled flag is clear, so that the upstream does not
//!   sample a trace whose root the gateway never exported; one whose caller decided is left as it
//!   came.
//! - A traced request's `traceparent` is **rewritten before the stack runs** to name the span of
//!   its target (the upstream call, or the built-in app) as the parent, so that the upstream's
//!   spans are children of the gateway's. The `request_id` layer then finds a valid header and
//!   keeps it; an incoming `tracestate` is kept.
//!
//! When the response head is ready ([`Traced::finish`]), what was measured (the stack's
//! [`LayerTimer`], the status) goes into the exporter's bounded queue without waiting; the
//! exporter's task turns it into spans ([`spans`]) and POSTs them in batches ([`exporter`]).

pub mod exporter;
pub mod spans;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, Method, StatusCode, Uri, header};
use strata::LayerTimer;
use strata::http::{ConnectionInfo, Request, Response};
use strata::middleware::TraceContext;
use strata::middleware::request_id::{TRACEPARENT, TRACESTATE};

use crate::config::TraceSettings;
pub use exporter::{Exporter, flush_all};

/// What the spans of one route say about it, computed once when the router is built.
#[derive(Debug)]
pub struct RouteTrace {
    /// The route's name (`http.route`); `None` for requests no route matched.
    pub name: Option<String>,
    /// The kind of each layer of the route's onion, outermost first, then `"app"` for the target
    /// (the same order as [`LayerTimer::layers`]).
    pub kinds: Vec<&'static str>,
    /// For an upstream route, the upstream's host and port (`server.address`, `server.port` of
    /// the CLIENT span); `None` for a built-in app.
    pub upstream: Option<Upstream>,
}

/// The upstream an upstream route's CLIENT span names.
#[derive(Debug)]
pub struct Upstream {
    /// The target's host, when the route has one target (with several, which one served a
    /// request is not known to the trace).
    pub address: Option<String>,
    /// The target's port, when the route has one target.
    pub port: Option<u16>,
}

/// Decides which requests are traced and hands their measurements to the exporter. One per
/// router; the exporter behind it is shared by every router of the process that exports to the
/// same collector as the same service (see [`Exporter::shared`]).
#[derive(Debug)]
pub struct Tracer {
    // Requests whose trace id's random part is below this are sampled (when nothing upstream
    // decided): `sample_ratio` scaled to 2^63, as `TraceIdRatioBased` computes it.
    ratio_bound: u64,
    // `sample_ratio` is 0: skip even the random number.
    never: bool,
    // `sample_ratio` is 1.
    always: bool,
    // Per route index, then one more for the requests no route matched.
    routes: Vec<Arc<RouteTrace>>,
    exporter: Arc<Exporter>,
}

impl Tracer {
    /// A tracer for `settings`, whose route indexes are those of `routes` (the router's, in
    /// config order, then the entry of unmatched requests). Starts no task: see [`Tracer::start`].
    pub fn new(settings: &TraceSettings, routes: Vec<RouteTrace>) -> Tracer {
        let ratio = settings.sample_ratio.clamp(0.0, 1.0);
        Tracer {
            // The float-to-int cast saturates; 1.0 is handled by `always`.
            ratio_bound: (ratio * (1u64 << 63) as f64) as u64,
            never: ratio <= 0.0,
            always: ratio >= 1.0,
            routes: routes.into_iter().map(Arc::new).collect(),
            exporter: Exporter::shared(&settings.otlp_endpoint, &settings.service_name),
        }
    }

    /// Starts the exporter's task when it is not running yet (a reload to the same collector
    /// keeps the running one). Call it inside the runtime that serves the router.
    pub fn start(&self) {
        self.exporter.start();
    }

    /// Spans exported and spans dropped (queue full, or the collector failed) since the process
    /// started, by every exporter: counters that a reload does not reset.
    pub fn stats(&self) -> (u64, u64) {
        self.exporter.stats()
    }

    /// The sampling decision for `req`, routed to `route` (`None`: no route matched). When it
    /// is traced, rewrites its `traceparent` and returns what [`Traced::finish`] needs.
    pub fn begin(self: &Arc<Self>, req: &mut Request, route: Option<usize>) -> Option<Traced> {
        let mut values = req.headers().get_all(&TRACEPARENT).iter();
        // Two traceparents cannot both describe the caller: a repeated header is invalid.
        let incoming = match (values.next(), values.next()) {
            (Some(value), None) => TraceContext::parse(value.as_bytes()),
            _ => None,
        };
        let (trace_id, parent) = match incoming {
            Some(caller) if caller.sampled() => (caller.trace_id, Some(caller.parent_id)),
            Some(_) => return None,
            None => {
                let trace_id = fastrand::u128(1..).to_be_bytes();
                if self.never || (!self.always && random_part(&trace_id) >= self.ratio_bound) {
                    // The decision goes along: the new trace is marked not sampled, so that the
                    // upstream does not record a trace whose root the gateway never exported.
                    let unsampled =
                        TraceContext { version: 0, trace_id, parent_id: new_span_id(), flags: 0, started_here: true };
                    let headers = req.headers_mut();
                    headers.remove(&TRACESTATE);
                    headers.insert(TRACEPARENT, unsampled.to_header_value());
                    return None;
                }
                (trace_id, None)
            }
        };
        let started_wall = SystemTime::now();
        let started = Instant::now();
        let server_span = new_span_id();
        let target_span = new_span_id();
        let headers = req.headers_mut();
        let trace_state = if parent.is_some() {
            headers.get(&TRACESTATE).cloned()
        } else {
            // A tracestate belongs to the trace of a valid traceparent, which this request lacked.
            headers.remove(&TRACESTATE);
            None
        };
        let rewritten = TraceContext { version: 0, trace_id, parent_id: target_span, flags: 0x01, started_here: false };
        headers.insert(TRACEPARENT, rewritten.to_header_value());
        let route = route.and_then(|i| self.routes.get(i)).or(self.routes.last()).cloned()?;
        let request = RequestTrace {
            trace_id,
            parent,
            server_span,
            target_span,
            trace_state,
            started_wall,
            started,
            method: req.method().clone(),
            uri: req.uri().clone(),
            host: req.headers().get(header::HOST).cloned(),
            user_agent: req.headers().get(header::USER_AGENT).cloned(),
            client: req.extensions().get::<ConnectionInfo>().map(|c| c.client),
            route,
        };
        Some(Traced { tracer: self.clone(), request: Box::new(request) })
    }
}

/// A traced request on its way through the stack.
#[derive(Debug)]
pub struct Traced {
    tracer: Arc<Tracer>,
    request: Box<RequestTrace>,
}

impl Traced {
    /// Queues the request's spans for export, now that its response head is ready. Never waits:
    /// when the queue is full, the spans are dropped and counted.
    pub fn finish(self, timer: &LayerTimer, res: &Response) {
        let finished =
            Finished { request: *self.request, timer: timer.clone(), status: res.status(), ended: Instant::now() };
        self.tracer.exporter.queue(finished);
    }
}

/// What is known of a traced request when the stack starts running it.
#[derive(Debug)]
pub struct RequestTrace {
    trace_id: [u8; 16],
    // The caller's span: the parent of the SERVER span.
    parent: Option<[u8; 8]>,
    server_span: [u8; 8],
    // The span of the route's target, named as the parent in the rewritten `traceparent`.
    target_span: [u8; 8],
    trace_state: Option<HeaderValue>,
    // One wall-clock reading and the monotonic instant taken with it: every timestamp of the
    // request's spans is converted through this pair.
    started_wall: SystemTime,
    started: Instant,
    method: Method,
    uri: Uri,
    host: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    client: Option<IpAddr>,
    route: Arc<RouteTrace>,
}

/// A traced request whose response head is ready: what its spans are made of.
#[derive(Debug)]
pub struct Finished {
    request: RequestTrace,
    timer: LayerTimer,
    status: StatusCode,
    ended: Instant,
}

impl Finished {
    /// How many spans this request makes: the SERVER span and one per layer entered.
    pub fn span_count(&self) -> u64 {
        1 + self.timer.layers().filter(|l| l.entered.is_some()).count() as u64
    }

    /// `at` in nanoseconds since the Unix epoch, through the request's wall-clock reading.
    fn unix_nanos(&self, at: Instant) -> u64 {
        let wall = self.request.started_wall.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let at = match at.checked_duration_since(self.request.started) {
            Some(after) => wall.saturating_add(after),
            None => wall.saturating_sub(self.request.started.saturating_duration_since(at)),
        };
        u64::try_from(at.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The trace id's random part as `TraceIdRatioBased` reads it: its last 8 bytes, big-endian,
/// without the top bit.
fn random_part(trace_id: &[u8; 16]) -> u64 {
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    u64::from_be_bytes(low) >> 1
}

/// A new span id: random, never all zeros (an invalid id).
fn new_span_id() -> [u8; 8] {
    fastrand::u64(1..).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata::http::Body;

    fn tracer(ratio: f64) -> Arc<Tracer> {
        let settings = TraceSettings {
            otlp_endpoint: "http://127.0.0.1:9/".parse().unwrap(),
            sample_ratio: ratio,
            service_name: "unit".into(),
        };
        let route = RouteTrace { name: Some("/".into()), kinds: vec!["app"], upstream: None };
        Arc::new(Tracer::new(&settings, vec![route]))
    }

    fn request(traceparent: Option<&str>) -> Request {
        let mut req = Request::new(Body::empty());
        if let Some(value) = traceparent {
            req.headers_mut().insert(TRACEPARENT, HeaderValue::from_str(value).unwrap());
            req.headers_mut().insert(TRACESTATE, HeaderValue::from_static("k=v"));
        }
        req
    }

    const SAMPLED: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const NOT_SAMPLED: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";

    #[test]
    fn a_sampled_caller_is_traced_whatever_the_ratio() {
        let mut req = request(Some(SAMPLED));
        let traced = tracer(0.0).begin(&mut req, Some(0)).expect("traced");
        let header = TraceContext::parse(req.headers()[&TRACEPARENT].as_bytes()).unwrap();
        assert_eq!(header.trace_id_hex(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(header.parent_id, traced.request.target_span);
        assert!(header.sampled());
        assert_eq!(traced.request.parent, Some([0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31]));
        assert_eq!(req.headers()[&TRACESTATE], "k=v");
    }

    #[test]
    fn a_caller_that_did_not_sample_is_not_traced_nor_touched() {
        let mut req = request(Some(NOT_SAMPLED));
        assert!(tracer(1.0).begin(&mut req, Some(0)).is_none());
        assert_eq!(req.headers()[&TRACEPARENT], NOT_SAMPLED);
    }

    #[test]
    fn without_a_caller_the_ratio_decides() {
        let mut req = request(None);
        assert!(tracer(0.0).begin(&mut req, Some(0)).is_none());
        // Not sampled: the upstream is told so.
        let header = TraceContext::parse(req.headers()[&TRACEPARENT].as_bytes()).expect("a new trace");
        assert!(!header.sampled());
        let mut req = request(None);
        let traced = tracer(1.0).begin(&mut req, Some(0)).expect("traced");
        assert_eq!(traced.request.parent, None);
        assert!(TraceContext::parse(req.headers()[&TRACEPARENT].as_bytes()).is_some());
        let half = tracer(0.5);
        let sampled = (0..2000).filter(|_| half.begin(&mut request(None), Some(0)).is_some()).count();
        assert!((800..1200).contains(&sampled), "{sampled} of 2000 sampled at 0.5");
    }

    #[test]
    fn an_invalid_traceparent_starts_a_new_trace_without_its_tracestate() {
        let mut req = request(Some("00-zz-bad-01"));
        let traced = tracer(1.0).begin(&mut req, Some(0)).expect("traced");
        assert_eq!(traced.request.parent, None);
        assert!(req.headers().get(&TRACESTATE).is_none());
    }

    #[test]
    fn the_ratio_bound_reads_the_low_half_of_the_trace_id() {
        let mut id = [0u8; 16];
        id[8] = 0x80;
        assert_eq!(random_part(&id), 1 << 62);
        assert!(random_part(&[0xff; 16]) < u64::MAX);
    }
}
