//! Traces of sampled live requests, for the admin listener's `/debug/requests`.

use super::*;

/// One live request being traced for `/debug/requests`: what was seen of it on arrival, and the
/// recorder its layers report to.
pub struct LiveCapture {
    request: RequestSummary,
    route: Option<String>,
    labels: Vec<LayerLabel>,
    recorder: Arc<Recorder>,
    redactor: Arc<Redactor>,
}

impl LiveCapture {
    /// Starts tracing `req`, about to run through `service` (whose first `server_layers` layers are
    /// the server stack's) on the route `route` (`None`: the router answers by itself). Returns the
    /// capture and the [`Inspect`] hook to run the request with.
    pub fn start(
        req: &Request,
        service: &Service,
        server_layers: usize,
        route: Option<&str>,
        redactor: Arc<Redactor>,
    ) -> (LiveCapture, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::new(service.layers().len()));
        let request = RequestSummary {
            method: req.method().to_string(),
            target: without_query_values(req.uri()),
            headers: redactor.show(req.headers()),
            body_bytes: req.body().as_bytes().map_or(0, <[u8]>::len),
        };
        let labels = layer_labels(service, server_layers);
        let capture =
            LiveCapture { request, route: route.map(str::to_string), labels, recorder: recorder.clone(), redactor };
        (capture, recorder)
    }

    /// The trace of the request, once its response head `res` is ready (the body is not waited
    /// for: it may stream for long).
    pub fn finish(self, timer: &LayerTimer, res: &Response) -> Trace {
        let response = FinalResponse {
            status: res.status().as_u16(),
            headers: self.redactor.show(res.headers()),
            body: String::new(),
            body_truncated: !http_body::Body::is_end_stream(res.body()),
        };
        let why =
            if self.route.is_some() { "live request" } else { "live request: no route, the server stack answered" };
        let route = RouteChoice { name: self.route, why: why.to_string() };
        let endpoint = if route.name.is_some() { "target" } else { "router" };
        build_trace(
            self.request,
            route,
            self.labels,
            endpoint.to_string(),
            &self.recorder,
            timer,
            None,
            response,
            &self.redactor,
        )
    }
}

/// The traces of sampled live requests, served at the admin listener's `/debug/requests`.
pub fn live_log() -> &'static DebugLog {
    static LOG: std::sync::OnceLock<DebugLog> = std::sync::OnceLock::new();
    LOG.get_or_init(DebugLog::default)
}

/// The newest traces of a live server (for `/debug/requests`), with the sampling that decides
/// which requests are traced.
///
/// Bounded: it keeps the newest `capacity` traces. Sampling is one atomic per request: at most one
/// request per `interval` is traced, whatever the load.
#[derive(Debug)]
pub struct DebugLog {
    capacity: usize,
    traces: Mutex<VecDeque<serde_json::Value>>,
    interval_nanos: u64,
    origin: Instant,
    // When the last sampled request was, in nanoseconds after `origin`, plus one (0: never).
    last_sample: AtomicU64,
}

/// How many traces a [`DebugLog`] keeps by default.
pub const DEBUG_LOG_CAPACITY: usize = 50;

impl DebugLog {
    /// A log of the newest `capacity` traces, tracing at most one request per `interval`.
    pub fn new(capacity: usize, interval: Duration) -> DebugLog {
        DebugLog {
            capacity: capacity.max(1),
            traces: Mutex::new(VecDeque::with_capacity(capacity.max(1))),
            interval_nanos: u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX),
            origin: Instant::now(),
            last_sample: AtomicU64::new(0),
        }
    }

    /// Whether the request arriving `now` is traced: the first request, then the first one at
    /// least an interval after the last traced one. Lock-free; a race lets one request through.
    pub fn sample(&self, now: Instant) -> bool {
        let at =
            u64::try_from(now.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX).saturating_add(1);
        let last = self.last_sample.load(Ordering::Relaxed);
        if last != 0 && at.saturating_sub(last) < self.interval_nanos {
            return false;
        }
        self.last_sample.compare_exchange(last, at, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// Keeps `trace` (its secrets are already redacted), dropping the oldest one when full.
    pub fn push(&self, trace: &Trace) {
        let value = trace.to_json();
        let mut traces = lock(&self.traces);
        if traces.len() == self.capacity {
            traces.pop_front();
        }
        traces.push_back(value);
    }

    /// How many traces are kept.
    pub fn len(&self) -> usize {
        lock(&self.traces).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The traces kept, newest first, as one JSON array.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(lock(&self.traces).iter().rev().cloned().collect())
    }
}

impl Default for DebugLog {
    fn default() -> Self {
        DebugLog::new(DEBUG_LOG_CAPACITY, Duration::from_secs(1))
    }
}

/// `uri` as a live trace shows it: query values may be tokens or keys (`?api_key=…`), so only
/// their names are kept (`/search?q=[redacted]&page=[redacted]`). A request explained from the
/// command line shows its own query as given.
fn without_query_values(uri: &Uri) -> String {
    let path = uri.path();
    match uri.query() {
        None => path.to_string(),
        Some(query) => {
            let names: Vec<String> = query
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| format!("{}={REDACTED}", pair.split_once('=').map_or(pair, |(name, _)| name)))
                .collect();
            format!("{path}?{}", names.join("&"))
        }
    }
}

#[cfg(test)]
mod query_tests {
    use super::*;

    #[test]
    fn live_traces_keep_query_names_not_values() {
        let uri: Uri = "/search?q=secret-token&page=2&flag".parse().unwrap();
        assert_eq!(without_query_values(&uri), "/search?q=[redacted]&page=[redacted]&flag=[redacted]");
        assert_eq!(without_query_values(&"/plain".parse().unwrap()), "/plain");
    }
}
