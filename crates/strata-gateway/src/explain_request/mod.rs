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

mod live;
mod redact;
mod stub;

pub use live::{DEBUG_LOG_CAPACITY, DebugLog, LiveCapture, live_log};
pub use redact::{HeaderDiff, Redactor};
pub use stub::{EchoStub, UpstreamRequest};

/// How many bytes of the final response's body a trace shows.
pub const BODY_PREVIEW_BYTES: usize = 2048;
/// How long the body preview waits for those bytes.
const BODY_PREVIEW_WAIT: Duration = Duration::from_secs(5);
/// What a secret header's value is shown as.
pub const REDACTED: &str = "[redacted]";
/// The address an explained request comes from.
pub const EXPLAIN_PEER: &str = "127.0.0.1:50000";

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

#[cfg(test)]
mod tests;
