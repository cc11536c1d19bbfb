//! The admin listener (`[admin] listen`): metrics, health, readiness, the running config and the
//! dashboard, on an address of its own, never on the public listeners.
//!
//! | path | answer |
//! | --- | --- |
//! | `/` | the dashboard: one page, no external assets, polling `/api/stats` |
//! | `/metrics` | every metric, Prometheus text format; OpenMetrics when `Accept` asks for it |
//! | `/healthz` | `200` while the process runs |
//! | `/readyz` | `200` when serving; `503` while shutting down, or while an upstream route has no healthy target |
//! | `/config` | the running config as JSON, secrets redacted |
//! | `/api/stats` | the dashboard's figures as JSON |
//! | `/debug/requests` | the newest sampled requests (one a second at most), layer by layer, as `strata explain --request` shows them, secret headers and query values redacted |
//!
//! Peers outside `allow` (when set) get a `403`; methods other than `GET` and `HEAD` a `405`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use strata::http::{Body, ConnectionInfo, Next, Request, Response, Service, Stack, response};
use strata::{Fact, Facts};

use crate::config::{Admin, redact_userinfo};
use crate::limits::ConnectionCount;
use crate::metrics::render::{self, Extra, Scrape};
use crate::server::LiveRouter;

/// What the admin endpoints read.
pub struct AdminState {
    /// The router being served (its routes, targets and config).
    pub live: Arc<LiveRouter>,
    /// Set when shutdown begins: readiness fails so that load balancers stop sending.
    pub draining: AtomicBool,
    /// The public listeners' open connections.
    pub connections: Arc<ConnectionCount>,
}

impl AdminState {
    /// The state of a gateway serving `live`, whose public listeners admit connections by
    /// `connections`.
    pub fn new(live: Arc<LiveRouter>, connections: Arc<ConnectionCount>) -> Arc<AdminState> {
        Arc::new(AdminState { live, draining: AtomicBool::new(false), connections })
    }

    fn scrape(&self) -> Scrape {
        let router = self.live.current();
        let (routes, targets) = router.scrape();
        let spans = router.tracer().map(|tracer| tracer.stats());
        let connections = Some(u64::try_from(self.connections.open()).unwrap_or(u64::MAX));
        Scrape { routes, targets, extra: Extra { spans, connections } }
    }
}

/// The admin service: the allow list, then the endpoints.
pub fn service(settings: &Admin, state: Arc<AdminState>) -> Service {
    let settings = Arc::new(settings.clone());
    let allow = strata::from_fn(move |req: Request, next: Next| {
        let settings = settings.clone();
        async move {
            let peer = req.extensions().get::<ConnectionInfo>().map(|c| c.peer.ip());
            if peer.is_some_and(|ip| settings.allows(ip)) {
                next.run(req).await
            } else {
                response::json_error(StatusCode::FORBIDDEN, "this address may not use the admin endpoints")
            }
        }
    })
    .with_kind("admin_allow")
    .with_facts(Facts::of(&[Fact::ReadsClientAddress, Fact::ShortCircuits]));
    Stack::new().with_named("admin_allow", allow).serve(move |req: Request| {
        let state = state.clone();
        async move { answer(&state, &req) }
    })
}

fn answer(state: &AdminState, req: &Request) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut res = response::json_error(StatusCode::METHOD_NOT_ALLOWED, "the admin endpoints are read-only");
        res.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return res;
    }
    match req.uri().path() {
        "/" => {
            let mut res = Response::new(Body::from(DASHBOARD));
            res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            res
        }
        "/metrics" => {
            let open_metrics = req
                .headers()
                .get_all(header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains("application/openmetrics-text"));
            let body = render::text(&state.scrape(), open_metrics);
            let mut res = Response::new(Body::from(body));
            let kind = if open_metrics { render::OPENMETRICS_TEXT } else { render::PROMETHEUS_TEXT };
            res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
            res
        }
        "/healthz" => response::text(StatusCode::OK, "ok\n"),
        "/readyz" => readiness(state),
        "/config" => json_response(StatusCode::OK, state.live.current().running_config()),
        "/api/stats" => json_response(StatusCode::OK, &render::json(&state.scrape())),
        "/debug/requests" => json_response(StatusCode::OK, &crate::explain_request::live_log().to_json()),
        _ => response::json_error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

/// `200` when the gateway serves and every upstream route has a healthy target; else `503`
/// with the reasons.
fn readiness(state: &AdminState) -> Response {
    let mut reasons = Vec::new();
    if state.draining.load(Ordering::Relaxed) {
        reasons.push("shutting down".to_string());
    }
    for route in state.live.current().routes_without_healthy_target() {
        reasons.push(format!("route {route}: no healthy upstream target"));
    }
    if reasons.is_empty() {
        json_response(StatusCode::OK, &json!({"ready": true}))
    } else {
        json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"ready": false, "reasons": reasons}))
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The dashboard page: self-contained, served from the binary.
const DASHBOARD: &str = include_str!("dashboard.html");

/// What `/config` shows in place of a secret.
pub const REDACTED: &str = "[redacted]";

/// Keys whose values are secrets wherever they appear (a `users` table maps names to password
/// hashes: the names stay, the hashes go).
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "token", "credential", "private", "api_key", "apikey"].iter().any(|s| key.contains(s))
}

/// The config text as JSON with every secret redacted: password hashes, secrets and tokens, and the
/// passwords of URLs (`redis://:pw@host`). A text that does not parse (it did, to be served) is
/// `null`.
pub fn redacted_config(text: &str) -> Value {
    let Ok(table) = text.parse::<toml::Table>() else { return Value::Null };
    let mut value = serde_json::to_value(table).unwrap_or(Value::Null);
    redact(&mut value, None);
    value
}

fn redact(value: &mut Value, key: Option<&str>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if k == "users" {
                    // Every value of a users table is a password hash (or a plaintext password).
                    if let Value::Object(users) = v {
                        users.values_mut().for_each(|hash| *hash = Value::String(REDACTED.into()));
                        continue;
                    }
                }
                redact(v, Some(k));
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact(v, key)),
        Value::String(s) => {
            if key.is_some_and(is_secret_key) {
                *s = REDACTED.into();
            } else if let std::borrow::Cow::Owned(clean) = redact_userinfo(s) {
                *s = clean;
            }
        }
        _ => {
            if key.is_some_and(is_secret_key) {
                *value = Value::String(REDACTED.into());
            }
        }
    }
}

/// The warning `strata check` gives about an admin listener that any host can reach: one on a
/// non-loopback address without an `allow` list.
pub fn exposure_warning(admin: &Admin) -> Option<String> {
    if admin.listen.ip().is_loopback() || !admin.allow.is_empty() {
        return None;
    }
    Some(format!(
        "`[admin] listen = \"{}\"` is reachable from other hosts and has no `allow` list: anyone who can \
         reach it reads the metrics, the running config (secrets redacted) and the request traces.\n  \
         fix: listen on a loopback address (\"127.0.0.1:9901\"), or add `allow = [\"10.0.0.0/8\"]` with the \
         networks of your monitoring",
        admin.listen
    ))
}

/// Serves the admin endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    settings: &Admin,
    state: Arc<AdminState>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<bool> {
    // Its own modest limits: a scrape or a page is small, and the public listeners' settings are
    // for the traffic.
    let server = crate::config::Server {
        listen: settings.listen,
        max_connections: Some(256),
        shutdown_grace: std::time::Duration::from_secs(1),
        ..crate::config::Server::default()
    };
    crate::server::serve(listener, Arc::new(service(settings, state)), &server, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_url_passwords_are_redacted_and_the_rest_is_kept() {
        let text = r#"
[server]
listen = "127.0.0.1:8080"

[middleware.auth]
kind = "basic_auth"
users = { alice = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA" }

[middleware.limit]
kind = "rate_limit"
key = "client_ip"
store = "redis://:hunter2@127.0.0.1:6379/0"

[middleware.jwt]
kind = "jwt"
secret = "shh"
client_secret = "shh2"
"#;
        let json = redacted_config(text);
        let shown = json.to_string();
        for secret in ["argon2id", "hunter2", "shh"] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
        assert_eq!(json["middleware"]["auth"]["users"]["alice"], REDACTED);
        assert_eq!(json["middleware"]["limit"]["key"], "client_ip");
        assert_eq!(json["server"]["listen"], "127.0.0.1:8080");
        assert!(json["middleware"]["limit"]["store"].as_str().unwrap().contains("127.0.0.1:6379"));
    }
}
