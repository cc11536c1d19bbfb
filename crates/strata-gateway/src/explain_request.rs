//! `strata explain --request`: one request through a route's onion, in-process, layer by layer.
//!
//! The request is built from the command line, routed as [`Router::call`](crate::routes::Router::call)
//! would route it ([`Router::route_for`](crate::routes::Router::route_for)), and run through the onion with
//! [`Service::call_inspected`]: a [`Recorder`] keeps, for every layer, the request it received and
//! the response it returned, and the [`LayerTimer`] of the same call gives each layer's own time.
//! The [`Trace`] made of them says, outermost first, what each layer did: passed the request on
//! (with the request headers it changed on the way in and the response headers it changed on the
//! way out), answered by itself (with the [`Refusal`] reason it gave), or was never reached.
//!
//! Upstream routes are answered by [`EchoStub`] unless the upstreams are called for real: the proxy
//! still prepares the request as it would send it (path, `Host`, `Via`, `X-Forwarded-*`), and the
//! stub answers with what it received.
//!
//! Secret headers (`authorization`, `proxy-authorization`, `cookie`, `set-cookie` and the config's
//! `[server] secret_headers`) are shown as `[redacted]` everywhere, the stub's echo included.
//!
//! [`DebugLog`] keeps the newest traces of a live server, for an admin page.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use http_body_util::BodyExt as _;
use serde::Serialize;
use strata::http::{Body, ConnectionInfo, Refusal, Request, Response, Service, response};
use strata::{BoxFuture, Endpoint, Inspect, LayerTimer};

use crate::Gateway;

/// How many bytes of the final response's body a trace shows.
pub const BODY_PREVIEW_BYTES: usize = 2048;
/// How long the body preview waits for those bytes.
const BODY_PREVIEW_WAIT: Duration = Duration::from_secs(5);
/// What a secret header's value is shown as.
pub const REDACTED: &str = "[redacted]";
/// The address an explained request comes from.
pub const EXPLAIN_PEER: &str = "127.0.0.1:50000";

/// Which headers hold secrets, and how a header is shown.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// Secret headers besides the four every redactor knows.
    extra: Vec<HeaderName>,
}

impl Redactor {
    /// Redacts `authorization`, `proxy-authorization`, `cookie`, `set-cookie`, and `extra`.
    pub fn new(extra: Vec<HeaderName>) -> Redactor {
        Redactor { extra }
    }

    /// Whether `name`'s values are secrets.
    pub fn is_secret(&self, name: &HeaderName) -> bool {
        name == header::AUTHORIZATION
            || name == header::PROXY_AUTHORIZATION
            || name == header::COOKIE
            || name == header::SET_COOKIE
            || self.extra.contains(name)
    }

    /// `headers` as `(name, value)` pairs in their order, secrets redacted, values as text
    /// (non-UTF-8 bytes replaced).
    pub fn show(&self, headers: &HeaderMap) -> Vec<(String, String)> {
        headers.iter().map(|(name, value)| (name.to_string(), self.value(name, value))).collect()
    }

    fn value(&self, name: &HeaderName, value: &HeaderValue) -> String {
        if self.is_secret(name) { REDACTED.to_string() } else { String::from_utf8_lossy(value.as_bytes()).into_owned() }
    }

    /// Every value of `name` in `headers`, joined by `, ` (redacted when secret).
    fn joined(&self, headers: &HeaderMap, name: &HeaderName) -> String {
        let values: Vec<String> = headers.get_all(name).iter().map(|v| self.value(name, v)).collect();
        values.join(", ")
    }
}

/// How a layer changed a header map: what it added, changed (old then new value) and removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HeaderDiff {
    /// Headers present after but not before: `(name, value)`.
    pub added: Vec<(String, String)>,
    /// Headers present on both sides with other values: `(name, before, after)`.
    pub changed: Vec<(String, String, String)>,
    /// Headers present before but not after: `(name, value)`.
    pub removed: Vec<(String, String)>,
}

impl HeaderDiff {
    /// What turned `before` into `after`, secrets redacted (a changed secret shows as changed,
    /// both sides `[redacted]`). Names in the order they appear in `after`, then `before`.
    pub fn between(before: &HeaderMap, after: &HeaderMap, redactor: &Redactor) -> HeaderDiff {
        let mut diff = HeaderDiff::default();
        for name in after.keys() {
            if !before.contains_key(name) {
                diff.added.push((name.to_string(), redactor.joined(after, name)));
            } else if !before.get_all(name).iter().eq(after.get_all(name).iter()) {
                diff.changed.push((name.to_string(), redactor.joined(before, name), redactor.joined(after, name)));
            }
        }
        for name in before.keys() {
            if !after.contains_key(name) {
                diff.removed.push((name.to_string(), redactor.joined(before, name)));
            }
        }
        diff
    }

    /// Everything in `headers`, as added (what a layer that answered by itself made).
    pub fn all_added(headers: &HeaderMap, redactor: &Redactor) -> HeaderDiff {
        HeaderDiff::between(&HeaderMap::new(), headers, redactor)
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// A request as one layer received it.
#[derive(Clone, Debug)]
struct SeenRequest {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

/// A response as one layer returned it.
#[derive(Clone, Debug)]
struct SeenResponse {
    status: StatusCode,
    headers: HeaderMap,
    refusal: Option<Refusal>,
}

/// The [`Inspect`] hook of a traced request: a copy of what each position of the chain received
/// and returned (the headers, not the bodies).
#[derive(Debug)]
pub struct Recorder {
    requests: Mutex<Vec<Option<SeenRequest>>>,
    responses: Mutex<Vec<Option<SeenResponse>>>,
}

impl Recorder {
    /// A recorder for a chain of `layers` layers and its endpoint.
    pub fn new(layers: usize) -> Recorder {
        Recorder { requests: Mutex::new(vec![None; layers + 1]), responses: Mutex::new(vec![None; layers + 1]) }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Inspect<Request, Response> for Recorder {
    fn request(&self, layer: usize, req: &Request) {
        let seen = SeenRequest { method: req.method().clone(), uri: req.uri().clone(), headers: req.headers().clone() };
        if let Some(slot) = lock(&self.requests).get_mut(layer) {
            *slot = Some(seen);
        }
    }

    fn response(&self, layer: usize, res: &Response) {
        let seen = SeenResponse {
            status: res.status(),
            headers: res.headers().clone(),
            refusal: res.extensions().get::<Refusal>().cloned(),
        };
        if let Some(slot) = lock(&self.responses).get_mut(layer) {
            *slot = Some(seen);
        }
    }
}

/// What the upstream of a stubbed route received, recorded by [`EchoStub`].
#[derive(Clone, Debug, Serialize)]
pub struct UpstreamRequest {
    /// The method.
    pub method: String,
    /// The path and query the upstream is asked for.
    pub path: String,
    /// Its headers, secrets redacted, in order.
    pub headers: Vec<(String, String)>,
}

/// Answers in place of an upstream: `200` with a JSON echo of the request it got (method, path,
/// headers with secrets redacted), which it also keeps for the trace.
#[derive(Debug)]
pub struct EchoStub {
    redactor: Mutex<Redactor>,
    received: Mutex<Option<UpstreamRequest>>,
}

impl EchoStub {
    /// A stub that redacts the four well-known secret headers (see [`EchoStub::redact`]).
    pub fn new() -> EchoStub {
        EchoStub { redactor: Mutex::new(Redactor::default()), received: Mutex::new(None) }
    }

    /// Redacts with `redactor` from now on (the config's secret headers are known once it is
    /// loaded, after the stub was handed to the build).
    pub fn redact(&self, redactor: Redactor) {
        *lock(&self.redactor) = redactor;
    }

    /// The last request the stub answered, taken.
    pub fn take(&self) -> Option<UpstreamRequest> {
        lock(&self.received).take()
    }
}

impl Default for EchoStub {
    fn default() -> Self {
        EchoStub::new()
    }
}

impl Endpoint<Request, Response> for EchoStub {
    fn call(&self, req: Request) -> BoxFuture<Response> {
        let seen = UpstreamRequest {
            method: req.method().to_string(),
            path: req.uri().path_and_query().map_or("/", |pq| pq.as_str()).to_string(),
            headers: lock(&self.redactor).show(req.headers()),
        };
        let echo = serde_json::json!({
            "stub": "strata explain: the upstream was not called (--live calls it)",
            "method": seen.method,
            "path": seen.path,
            "headers": seen.headers,
        });
        *lock(&self.received) = Some(seen);
        let mut res = response::text(StatusCode::OK, format!("{echo}\n"));
        res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Box::pin(std::future::ready(res))
    }
}

/// How a layer's name and place are shown.
#[derive(Clone, Debug, Serialize)]
pub struct LayerLabel {
    /// The layer's name (the config's middleware name).
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// `"server"` or `"route"`.
    pub scope: &'static str,
}

/// What one layer did with the request.
#[derive(Clone, Debug, Serialize)]
pub struct LayerTrace {
    /// Position, from 1 (outermost).
    pub position: usize,
    /// Name, kind and scope.
    #[serde(flatten)]
    pub label: LayerLabel,
    /// `"passed on"`, `"answered"` or `"not reached"`.
    pub outcome: &'static str,
    /// The status of the response it returned (absent when not reached).
    pub status: Option<u16>,
    /// Why it answered by itself, when it said.
    pub reason: Option<String>,
    /// When it passed the request on with another method or target: `METHOD target`.
    pub passed_on_as: Option<String>,
    /// The request headers it changed on the way in (absent unless it passed the request on).
    pub request_headers: Option<HeaderDiff>,
    /// The response headers it changed on the way out (all of them when it answered).
    pub response_headers: Option<HeaderDiff>,
    /// Its own time, the layers inside it excluded, in microseconds.
    pub time_us: Option<f64>,
}

/// The endpoint of the chain: a route's target, or the router's own answer.
#[derive(Clone, Debug, Serialize)]
pub struct EndpointTrace {
    /// `app tasks`, `upstream http://…`, or `router` (no route, or a refused request).
    pub name: String,
    /// Whether the request reached it.
    pub reached: bool,
    /// The status it answered with.
    pub status: Option<u16>,
    /// Why, when the router answered by itself.
    pub reason: Option<String>,
    /// The headers of its answer.
    pub response_headers: Option<Vec<(String, String)>>,
    /// What the upstream received, when an echo stub stood in for it.
    pub upstream_request: Option<UpstreamRequest>,
    /// Its time, in microseconds.
    pub time_us: Option<f64>,
}

/// The request as given.
#[derive(Clone, Debug, Serialize)]
pub struct RequestSummary {
    /// The method.
    pub method: String,
    /// The request target.
    pub target: String,
    /// Its headers, secrets redacted.
    pub headers: Vec<(String, String)>,
    /// Its body's length.
    pub body_bytes: usize,
}

/// Which route the router picked, and why.
#[derive(Clone, Debug, Serialize)]
pub struct RouteChoice {
    /// The route's name (hosts and prefix); `None`: no route, the server stack answers.
    pub name: Option<String>,
    /// Why it was picked (or none was).
    pub why: String,
}

/// The response the client gets.
#[derive(Clone, Debug, Serialize)]
pub struct FinalResponse {
    /// Its status.
    pub status: u16,
    /// Its headers, secrets redacted.
    pub headers: Vec<(String, String)>,
    /// The first bytes of its body, as text (non-UTF-8 bytes replaced).
    pub body: String,
    /// Whether the body is longer than what is shown.
    pub body_truncated: bool,
}

/// One request's way through the onion, outermost layer first.
#[derive(Clone, Debug, Serialize)]
pub struct Trace {
    /// The request.
    pub request: RequestSummary,
    /// The route.
    pub route: RouteChoice,
    /// Whether upstreams were called (`"live"`) or an echo stub answered for them (`"stub"`).
    pub upstreams: &'static str,
    /// Every layer of the onion, outermost first.
    pub layers: Vec<LayerTrace>,
    /// The route's target (or the router's answer).
    pub endpoint: EndpointTrace,
    /// What the client gets.
    pub response: FinalResponse,
}

fn micros(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1000.0
}

/// The request `explain --request` sends, as given on the command line.
#[derive(Clone, Debug, Default)]
pub struct RequestSpec {
    /// `METHOD target`, e.g. `OPTIONS /api/tasks`; a bare target means `GET`.
    pub line: String,
    /// `Name: value` headers.
    pub headers: Vec<String>,
    /// The `Host` header (default: the `Host` among `headers`, else `localhost`).
    pub host: Option<String>,
    /// The body.
    pub data: Option<String>,
}

impl RequestSpec {
    /// The request, as the server would hand it to the router (from [`EXPLAIN_PEER`] to `local`).
    pub fn build(&self, local: SocketAddr) -> Result<Request, String> {
        let mut words = self.line.split_whitespace();
        let (method, target) = match (words.next(), words.next(), words.next()) {
            (Some(target), None, None) => ("GET", target),
            (Some(method), Some(target), None) => (method, target),
            _ => return Err(format!("--request `{}`: expected `METHOD TARGET`, e.g. `GET /api/tasks`", self.line)),
        };
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("--request: `{method}` is not an HTTP method"))?;
        let uri: Uri = target.parse().map_err(|e| format!("--request: `{target}` is not a request target: {e}"))?;
        let mut headers = HeaderMap::new();
        for line in &self.headers {
            let Some((name, value)) = line.split_once(':') else {
                return Err(format!("-H `{line}`: expected `Name: value`"));
            };
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("-H: `{}` is not a header name", name.trim()))?;
            let value = HeaderValue::from_str(value.trim())
                .map_err(|_| format!("-H: the value of `{name}` is not a valid header value"))?;
            headers.append(name, value);
        }
        match &self.host {
            Some(host) => {
                let host = HeaderValue::from_str(host).map_err(|_| format!("--host `{host}`: not a valid host"))?;
                headers.insert(header::HOST, host);
            }
            None if !headers.contains_key(header::HOST) => {
                headers.insert(header::HOST, HeaderValue::from_static("localhost"));
            }
            None => {}
        }
        let body = match &self.data {
            Some(data) => {
                if !headers.contains_key(header::CONTENT_LENGTH) {
                    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(data.len()));
                }
                Body::full(Bytes::from(data.clone()))
            }
            None => Body::empty(),
        };
        let mut req = Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        let peer: SocketAddr = EXPLAIN_PEER.parse().map_err(|e| format!("{e}"))?;
        req.extensions_mut().insert(ConnectionInfo::new(peer, local));
        Ok(req)
    }
}

/// Routes `req` with the gateway's router, runs it through the chosen onion and records what
/// each layer did. `stub`: the echo stub the gateway was built with (`None` when upstreams are
/// called for real).
pub async fn explain(gateway: &Gateway, mut req: Request, stub: Option<&EchoStub>, redactor: &Redactor) -> Trace {
    let body_bytes = req.body().as_bytes().map_or(0, <[u8]>::len);
    let request = RequestSummary {
        method: req.method().to_string(),
        target: req.uri().to_string(),
        headers: redactor.show(req.headers()),
        body_bytes,
    };
    let routed = gateway.router.route_for(&mut req);
    let server_layers = gateway.server_layers.len();
    let (route, endpoint_name) = match routed.route.and_then(|i| gateway.routes.get(i)) {
        Some(plan) => {
            let hosts = if plan.hosts.is_empty() {
                "routes without `host`".to_string()
            } else {
                let hosts: Vec<String> = plan.hosts.iter().map(ToString::to_string).collect();
                format!("host {}", hosts.join(", "))
            };
            let why = format!(
                "host {} → {hosts}; prefix {} is the longest matching {}",
                crate::hosts::request_authority(&req).unwrap_or("(none)"),
                plan.prefix,
                req.uri().path()
            );
            (RouteChoice { name: Some(plan.name()), why }, plan.target.description.clone())
        }
        None => {
            let why = format!(
                "no route for host {} and path {}: the server stack answers by itself",
                crate::hosts::request_authority(&req).unwrap_or("(none)"),
                req.uri().path()
            );
            (RouteChoice { name: None, why }, "router".to_string())
        }
    };
    let labels = layer_labels(routed.service, server_layers);
    let (res, recorder, timer) = run_recorded(routed.service, req).await;
    let response = preview(res, redactor).await;
    let upstream_request = stub.and_then(EchoStub::take);
    let mut trace =
        build_trace(request, route, labels, endpoint_name, &recorder, &timer, upstream_request, response, redactor);
    trace.upstreams = if stub.is_some() { "stub" } else { "live" };
    trace
}

/// How a trace names the layers of `service`, whose first `server_layers` are the server stack's.
fn layer_labels(service: &Service, server_layers: usize) -> Vec<LayerLabel> {
    service
        .layers()
        .iter()
        .enumerate()
        .map(|(i, l)| LayerLabel {
            name: l.name().to_string(),
            kind: l.kind().to_string(),
            scope: if i < server_layers { "server" } else { "route" },
        })
        .collect()
}

/// Runs `req` through `service` with a [`Recorder`].
async fn run_recorded(service: &Service, req: Request) -> (Response, Arc<Recorder>, LayerTimer) {
    let recorder = Arc::new(Recorder::new(service.layers().len()));
    let (run, timer) = service.call_inspected(req, recorder.clone());
    (run.await, recorder, timer)
}

/// The final response, with the first [`BODY_PREVIEW_BYTES`] of its body.
async fn preview(res: Response, redactor: &Redactor) -> FinalResponse {
    let (parts, mut body) = res.into_parts();
    let mut bytes = Vec::new();
    let mut truncated = false;
    let deadline = Instant::now() + BODY_PREVIEW_WAIT;
    while bytes.len() <= BODY_PREVIEW_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            Ok(None) => break,
            Ok(Some(Err(_))) | Err(_) => {
                truncated = true;
                break;
            }
        }
    }
    if bytes.len() > BODY_PREVIEW_BYTES {
        bytes.truncate(BODY_PREVIEW_BYTES);
        truncated = true;
    }
    FinalResponse {
        status: parts.status.as_u16(),
        headers: redactor.show(&parts.headers),
        body: String::from_utf8_lossy(&bytes).into_owned(),
        body_truncated: truncated,
    }
}

#[allow(clippy::too_many_arguments)]
fn build_trace(
    request: RequestSummary,
    route: RouteChoice,
    labels: Vec<LayerLabel>,
    endpoint_name: String,
    recorder: &Recorder,
    timer: &LayerTimer,
    upstream_request: Option<UpstreamRequest>,
    response: FinalResponse,
    redactor: &Redactor,
) -> Trace {
    let requests = lock(&recorder.requests).clone();
    let responses = lock(&recorder.responses).clone();
    let times: Vec<Duration> = timer.layers().map(|t| t.exclusive).collect();
    let n = labels.len();
    let layers = labels
        .into_iter()
        .enumerate()
        .map(|(i, label)| {
            let received = requests[i].as_ref();
            let passed_on = requests[i + 1].as_ref();
            let returned = responses[i].as_ref();
            let got_back = responses[i + 1].as_ref();
            let outcome = match (received, passed_on) {
                (None, _) => "not reached",
                (Some(_), None) => "answered",
                (Some(_), Some(_)) => "passed on",
            };
            let passed_on_as = match (received, passed_on) {
                (Some(a), Some(b)) if a.method != b.method || a.uri != b.uri => Some(format!("{} {}", b.method, b.uri)),
                _ => None,
            };
            let request_headers = match (received, passed_on) {
                (Some(a), Some(b)) => Some(HeaderDiff::between(&a.headers, &b.headers, redactor)),
                _ => None,
            };
            let response_headers = match (returned, got_back) {
                (Some(mine), Some(inner)) if passed_on.is_some() => {
                    Some(HeaderDiff::between(&inner.headers, &mine.headers, redactor))
                }
                (Some(mine), _) => Some(HeaderDiff::all_added(&mine.headers, redactor)),
                _ => None,
            };
            // A reason belongs to the layer that set it: one passed up from inside is not this one's.
            let reason = returned.and_then(|r| r.refusal.as_ref()).filter(|_| outcome == "answered");
            LayerTrace {
                position: i + 1,
                label,
                outcome,
                status: returned.map(|r| r.status.as_u16()),
                reason: reason.map(|r| r.reason.to_string()),
                passed_on_as,
                request_headers,
                response_headers,
                time_us: received.and(times.get(i).copied().map(micros)),
            }
        })
        .collect();
    let reached = requests[n].is_some();
    let answer = responses[n].as_ref();
    let endpoint = EndpointTrace {
        name: endpoint_name,
        reached,
        status: answer.map(|r| r.status.as_u16()),
        reason: answer.and_then(|r| r.refusal.as_ref()).map(|r| r.reason.to_string()),
        response_headers: answer.map(|r| redactor.show(&r.headers)),
        upstream_request,
        time_us: if reached { times.get(n).copied().map(micros) } else { None },
    };
    Trace { request, route, upstreams: "live", layers, endpoint, response }
}

impl Trace {
    /// The trace as one JSON document.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The trace as text for a terminal, outermost layer first.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let r = &self.request;
        let _ = writeln!(out, "request: {} {}  (from {EXPLAIN_PEER}, {} body bytes)", r.method, r.target, r.body_bytes);
        for (name, value) in &r.headers {
            let _ = writeln!(out, "  {name}: {value}");
        }
        match &self.route.name {
            Some(name) => {
                let _ = writeln!(out, "route {name}: {}", self.route.why);
            }
            None => {
                let _ = writeln!(out, "no route: {}", self.route.why);
            }
        }
        if self.upstreams == "stub" {
            let _ = writeln!(out, "upstreams are not called: an echo stub answers for them (--live calls them)");
        }
        let _ =
            writeln!(out, "\nEach layer, outermost first: the request goes down the list, the response comes back up.");
        for layer in &self.layers {
            let what = match (layer.outcome, layer.status) {
                ("answered", Some(status)) => {
                    let reason = layer.reason.as_deref().map_or(String::new(), |r| format!(": {r}"));
                    format!("answered {} by itself{reason}", status_text(status))
                }
                ("passed on", Some(status)) => format!("passed it on; returned {}", status_text(status)),
                (outcome, _) => outcome.to_string(),
            };
            let time = layer.time_us.map_or(String::new(), |t| format!("  [{t:.1} µs]"));
            let _ = writeln!(
                out,
                "  {:>2}. {:<6} {:<16} ({}) {what}{time}",
                layer.position, layer.label.scope, layer.label.name, layer.label.kind
            );
            if let Some(target) = &layer.passed_on_as {
                let _ = writeln!(out, "        request   passed on as {target}");
            }
            if let Some(diff) = &layer.request_headers {
                render_diff(&mut out, "request ", diff);
            }
            if let Some(diff) = &layer.response_headers {
                render_diff(&mut out, "response", diff);
            }
        }
        let e = &self.endpoint;
        let what = match (e.reached, e.status) {
            (false, _) => "not reached".to_string(),
            (true, Some(status)) => {
                let reason = e.reason.as_deref().map_or(String::new(), |r| format!(": {r}"));
                format!("answered {}{reason}", status_text(status))
            }
            (true, None) => "reached".to_string(),
        };
        let time = e.time_us.map_or(String::new(), |t| format!("  [{t:.1} µs]"));
        let _ = writeln!(out, "      ->     {}  {what}{time}", e.name);
        if let Some(upstream) = &e.upstream_request {
            let _ = writeln!(out, "        the upstream would receive {} {}:", upstream.method, upstream.path);
            for (name, value) in &upstream.headers {
                let _ = writeln!(out, "          {name}: {value}");
            }
        }
        let res = &self.response;
        let _ = writeln!(out, "\nresponse: {}", status_text(res.status));
        for (name, value) in &res.headers {
            let _ = writeln!(out, "  {name}: {value}");
        }
        let more = if res.body_truncated { " (truncated)" } else { "" };
        let _ = writeln!(out, "body, first {} bytes{more}:", res.body.len());
        for line in res.body.lines() {
            // Control characters could move a terminal's cursor or colour what follows.
            let line: String = line
                .chars()
                .map(|c| if c.is_control() && c != '\t' { char::REPLACEMENT_CHARACTER } else { c })
                .collect();
            let _ = writeln!(out, "  {line}");
        }
        out
    }
}

fn status_text(status: u16) -> String {
    let reason = StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    format!("{status} {reason}").trim_end().to_string()
}

fn render_diff(out: &mut String, what: &str, diff: &HeaderDiff) {
    for (name, value) in &diff.added {
        let _ = writeln!(out, "        {what}  + {name}: {value}");
    }
    for (name, before, after) in &diff.changed {
        let _ = writeln!(out, "        {what}  ~ {name}: {before} -> {after}");
    }
    for (name, value) in &diff.removed {
        let _ = writeln!(out, "        {what}  - {name}: {value}");
    }
}

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
            target: req.uri().to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::BuildOptions;
    use strata::middleware::BuildContext;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn a_diff_shows_what_was_added_changed_and_removed() {
        let before = headers(&[("host", "a"), ("x-keep", "1"), ("x-gone", "2"), ("vary", "accept")]);
        let after = headers(&[("host", "a"), ("x-keep", "1"), ("vary", "accept"), ("vary", "origin"), ("x-new", "3")]);
        let diff = HeaderDiff::between(&before, &after, &Redactor::default());
        assert_eq!(diff.added, pairs(&[("x-new", "3")]));
        assert_eq!(diff.changed, [("vary".to_string(), "accept".to_string(), "accept, origin".to_string())]);
        assert_eq!(diff.removed, pairs(&[("x-gone", "2")]));
        assert!(HeaderDiff::between(&before, &before, &Redactor::default()).is_empty());
    }

    #[test]
    fn secrets_are_redacted_in_every_view() {
        let redactor = Redactor::new(vec![HeaderName::from_static("x-api-key")]);
        let secret = headers(&[
            ("authorization", "Basic YWxpY2U6czNjcmV0"),
            ("proxy-authorization", "Bearer t0ken"),
            ("cookie", "session=abc"),
            ("set-cookie", "session=abc"),
            ("x-api-key", "k3y"),
            ("x-visible", "shown"),
        ]);
        let shown = redactor.show(&secret);
        assert_eq!(shown.iter().filter(|(_, v)| v == REDACTED).count(), 5);
        assert!(shown.contains(&("x-visible".to_string(), "shown".to_string())));
        let changed = headers(&[("authorization", "Basic b3RoZXI="), ("x-api-key", "other")]);
        let diff = HeaderDiff::between(&secret, &changed, &redactor);
        let text = format!("{diff:?}");
        for leaked in ["YWxpY2U6czNjcmV0", "b3RoZXI=", "t0ken", "session=abc", "k3y", "other"] {
            assert!(!text.contains(leaked), "{leaked} leaked: {text}");
        }
        assert_eq!(diff.changed.len(), 2, "a changed secret still shows as changed: {text}");
    }

    fn trace_of(kind: &str, n: usize) -> Trace {
        Trace {
            request: RequestSummary {
                method: "GET".into(),
                target: format!("/{n}"),
                headers: Vec::new(),
                body_bytes: 0,
            },
            route: RouteChoice { name: None, why: kind.into() },
            upstreams: "stub",
            layers: Vec::new(),
            endpoint: EndpointTrace {
                name: "router".into(),
                reached: true,
                status: Some(404),
                reason: None,
                response_headers: None,
                upstream_request: None,
                time_us: None,
            },
            response: FinalResponse { status: 404, headers: Vec::new(), body: String::new(), body_truncated: false },
        }
    }

    #[test]
    fn the_debug_log_keeps_the_newest_traces_newest_first() {
        let log = DebugLog::new(3, Duration::from_secs(1));
        assert!(log.is_empty());
        for n in 0..5 {
            log.push(&trace_of("t", n));
        }
        assert_eq!(log.len(), 3);
        let targets: Vec<String> = log
            .to_json()
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["request"]["target"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(targets, ["/4", "/3", "/2"]);
    }

    #[test]
    fn sampling_lets_at_most_one_request_per_interval_through() {
        let log = DebugLog::new(3, Duration::from_secs(1));
        let start = Instant::now();
        assert!(log.sample(start), "the first request is sampled");
        assert!(!log.sample(start + Duration::from_millis(10)));
        assert!(!log.sample(start + Duration::from_millis(999)));
        assert!(log.sample(start + Duration::from_millis(1001)));
        assert!(!log.sample(start + Duration::from_millis(1500)));
        assert!(log.sample(start + Duration::from_secs(5)));
    }

    fn gateway(text: &str, stub: &Arc<EchoStub>) -> Gateway {
        let config = crate::config::Config::parse("test.toml", text, crate::apps::NAMES).unwrap();
        let options = BuildOptions { upstream_stub: Some(stub.clone() as Arc<dyn Endpoint<Request, Response>>) };
        Gateway::build_with(config, &BuildContext::default(), &options).unwrap()
    }

    const CONFIG: &str = r#"
[server]
stack = ["request_id"]
secret_headers = ["x-api-key"]

[middleware.request_id]
kind = "request_id"

[middleware.cors]
kind = "cors"
allow_origins = ["https://app.example.com"]

[[route]]
prefix = "/api"
stack = ["cors"]
upstream = "http://127.0.0.1:9"
"#;

    fn request(spec: RequestSpec) -> Request {
        spec.build("127.0.0.1:8080".parse().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_trace_follows_the_request_down_and_the_response_up() {
        let stub = Arc::new(EchoStub::new());
        let gateway = gateway(CONFIG, &stub);
        let redactor = Redactor::new(gateway.server.secret_headers.clone());
        stub.redact(redactor.clone());
        let spec = RequestSpec {
            line: "GET /api/tasks".into(),
            headers: vec!["Origin: https://app.example.com".into(), "X-Api-Key: k3y-s3cret".into()],
            ..RequestSpec::default()
        };
        let trace = explain(&gateway, request(spec), Some(&stub), &redactor).await;
        assert_eq!(trace.route.name.as_deref(), Some("/api"));
        let names: Vec<&str> = trace.layers.iter().map(|l| l.label.name.as_str()).collect();
        assert_eq!(names, ["request_id", "cors"]);
        assert!(trace.layers.iter().all(|l| l.outcome == "passed on" && l.time_us.is_some()));
        let added_in = &trace.layers[0].request_headers.as_ref().unwrap().added;
        assert!(added_in.iter().any(|(n, _)| n == "x-request-id"), "{added_in:?}");
        let added_out = &trace.layers[1].response_headers.as_ref().unwrap().added;
        assert!(added_out.contains(&("access-control-allow-origin".into(), "https://app.example.com".into())));
        let upstream = trace.endpoint.upstream_request.as_ref().unwrap();
        assert!(upstream.headers.iter().any(|(n, v)| n == "x-forwarded-for" && v == "127.0.0.1"));
        assert_eq!(trace.response.status, 200);
        let everything = format!("{}{}", trace.render(), trace.to_json());
        assert!(!everything.contains("k3y-s3cret"), "{everything}");
        assert!(everything.contains(REDACTED));
    }

    #[tokio::test]
    async fn a_request_no_route_matches_shows_the_server_stacks_404() {
        let stub = Arc::new(EchoStub::new());
        let gateway = gateway(CONFIG, &stub);
        let spec = RequestSpec { line: "/elsewhere".into(), ..RequestSpec::default() };
        let trace = explain(&gateway, request(spec), Some(&stub), &Redactor::default()).await;
        assert_eq!(trace.route.name, None);
        assert_eq!(trace.layers.len(), 1, "the server stack alone");
        assert_eq!((trace.endpoint.name.as_str(), trace.endpoint.status), ("router", Some(404)));
        assert_eq!(trace.endpoint.reason.as_deref(), Some("no route matches"));
        assert!(stub.take().is_none(), "no upstream was asked");
    }

    #[test]
    fn request_lines_and_headers_are_checked() {
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let spec = |line: &str, headers: &[&str]| RequestSpec {
            line: line.into(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            ..RequestSpec::default()
        };
        let req = spec("PUT /x?y=1", &["X-A: 1", "X-A: 2"]).build(local).unwrap();
        assert_eq!((req.method().as_str(), req.uri().to_string()), ("PUT", "/x?y=1".to_string()));
        assert_eq!(req.headers().get_all("x-a").iter().count(), 2);
        assert_eq!(req.headers()["host"], "localhost");
        assert!(spec("GET /x extra", &[]).build(local).unwrap_err().contains("expected `METHOD TARGET`"));
        assert!(spec("GET /x", &["no colon"]).build(local).unwrap_err().contains("expected `Name: value`"));
        let with_body = RequestSpec { data: Some("abc".into()), host: Some("h.test".into()), ..spec("POST /", &[]) };
        let req = with_body.build(local).unwrap();
        assert_eq!(
            (req.headers()["content-length"].to_str().unwrap(), req.headers()["host"].to_str().unwrap()),
            ("3", "h.test")
        );
    }
}
