//! The [`Router`]: from a request to the onion of its route. It checks how the request arrived (its
//! host, its path under the `[server]` path policy, `;` parameters that would change the route),
//! picks the route by host group and longest prefix, and answers refused and unmatched requests
//! with the server stack alone.

use std::borrow::Cow;
use std::sync::Arc;

use http::uri::{PathAndQuery, Uri};
use http::{HeaderValue, StatusCode, header};
use strata::http::client_ip::TrustedProxies;
use strata::http::path::{Normalized, PathPolicy};
use strata::http::{MatchedRoute, NamedLayer, Refusal, Request, Response, Service, response};
use strata::{BoxFuture, Endpoint, Facts, LayerInfo};

use crate::explain_request::{LiveCapture, Redactor};
use crate::hosts::{HostTable, NO_HOST, check_host, request_authority, request_host, sni_matches_host};
use crate::metrics::RouteMetrics;
use crate::metrics::render::TargetState;
use crate::observe::{Dispatched, Watch};
use crate::trace::Tracer;
use crate::upstream::Upstreams;

pub(super) struct RouteEntry {
    pub(super) prefix: String,
    // Its hosts and prefix, as logs and metrics name it.
    pub(super) name: String,
    pub(super) service: Service,
    // `None` when metrics are off.
    pub(super) metrics: Option<Arc<RouteMetrics>>,
    // The targets of an upstream route.
    pub(super) upstreams: Option<Arc<Upstreams>>,
    // Its name for the layers that read it from the request; `None` when none does, so the
    // other routes' requests skip the extension's allocation.
    pub(super) matched: Option<MatchedRoute>,
}

/// A service's layers as metrics name them: each layer, then the endpoint as `app`.
pub(super) fn onion_of(service: &Service) -> Vec<LayerInfo> {
    let mut layers: Vec<LayerInfo> = service.layers().iter().map(NamedLayer::info).collect();
    layers.push(LayerInfo { name: "app".into(), kind: "app", facts: Facts::NONE });
    layers
}

/// Dispatches each request to the onion of the route its host and longest matching prefix pick.
pub struct Router {
    // In config order; `groups` index them.
    pub(super) routes: Vec<RouteEntry>,
    // Which group a request's host belongs to.
    pub(super) hosts: HostTable,
    // Per group, its routes, longest prefix first, so the first match is the most specific one.
    // Without any `host` in the config, one group of every route.
    pub(super) groups: Vec<Vec<usize>>,
    // The server stack around `fallback`: the 404, and the answers to refused request targets.
    pub(super) not_found: Service,
    // The metrics of the requests `not_found` answers; `None` when metrics are off.
    pub(super) unmatched: Option<Arc<RouteMetrics>>,
    // How many layers of each route's onion are the server stack's (for `/debug/requests`).
    pub(super) server_layers: usize,
    // The headers `/debug/requests` shows as `[redacted]`.
    pub(super) redactor: Arc<Redactor>,
    // Every layer's and target's facts, computed once: the server asks for every connection.
    pub(super) facts: Facts,
    // The config's `trusted_proxies`: the client address is resolved with the same list the
    // proxies of this router trust, so a reload changes both at once.
    pub(super) trusted_proxies: Arc<TrustedProxies>,
    // `[server] merge_slashes` and `escaped_slashes`.
    pub(super) path_policy: PathPolicy,
    // `[server.tls]`: what new TLS handshakes use, so that a reload changes certificates.
    pub(super) tls: Option<Arc<rustls::ServerConfig>>,
    // `redirect_http = true`: the paths plain requests are still served on (`redirect_exempt`).
    pub(super) redirect_http: Option<Vec<String>>,
    // `[server.tls] strict_sni_host`: a TLS request's host must be its handshake's SNI.
    pub(super) strict_sni_host: bool,
    // The config this router was built from, as JSON with its secrets redacted (admin `/config`).
    pub(super) running_config: Arc<serde_json::Value>,
    // `[tracing]`: samples requests and exports their spans. Route indexes are `routes`'.
    pub(super) tracer: Option<Arc<Tracer>>,
}

impl Router {
    /// Every fact a layer or target of any route declares.
    pub fn facts(&self) -> Facts {
        self.facts
    }

    /// The proxies whose forwarding headers this router's config trusts.
    pub fn trusted_proxies(&self) -> &TrustedProxies {
        &self.trusted_proxies
    }

    /// The TLS configuration new handshakes on the TLS listener use (`[server.tls]`).
    pub fn tls_config(&self) -> Option<&Arc<rustls::ServerConfig>> {
        self.tls.as_ref()
    }

    /// Where [`Router::call`] would send `req`, without calling it: the host checks and the path
    /// policy are applied to `req` as they would be (a refused request is marked for the server
    /// stack's answer), then the route is picked. The plain-HTTP redirect and the SNI check of
    /// [`Router::call_plain`] and [`Router::call_tls`] are left out: they depend on the connection.
    pub fn route_for(&self, req: &mut Request) -> Routed<'_> {
        let routed = self.prepare(req).and_then(|()| match self.group(req) {
            Some(group) => self.route(&self.groups[group], req.uri().path()),
            None => Ok(None),
        });
        match routed {
            Ok(Some(index)) => {
                if let Some(matched) = &self.routes[index].matched {
                    req.extensions_mut().insert(matched.clone());
                }
                Routed { route: Some(index), service: &self.routes[index].service }
            }
            Ok(None) => Routed { route: None, service: &self.not_found },
            Err(refused) => {
                req.extensions_mut().insert(refused);
                Routed { route: None, service: &self.not_found }
            }
        }
    }

    /// Checks the request's host and normalises its path, then runs it through its route's onion
    /// (or the server stack's 404, or the server stack's answer to a refused target).
    pub fn call(&self, req: Request) -> Dispatched {
        self.dispatch(req, Arrival::Unchecked)
    }

    /// [`Router::call`] for a request that came over plain HTTP while HTTPS is served on
    /// `https_port`: with `redirect_http`, it is answered `308` to its `https://` URL unless its
    /// path starts with a `redirect_exempt` prefix.
    pub fn call_plain(&self, req: Request, https_port: Option<u16>) -> Dispatched {
        match https_port.filter(|_| self.redirect_http.is_some()) {
            Some(port) => self.dispatch(req, Arrival::Redirected(port)),
            None => self.dispatch(req, Arrival::Unchecked),
        }
    }

    /// [`Router::call`] for a request that came over TLS, whose handshake named `server_name`
    /// (SNI): with `strict_sni_host`, a request for another host is answered `421 Misdirected
    /// Request` (RFC 9110 §15.5.20), so that a client certificate accepted for one host is not
    /// used for another on the same connection. A client answered `421` opens a new connection
    /// (browsers do so by themselves when they coalesced two hosts onto one).
    pub fn call_tls(&self, req: Request, server_name: Option<&str>) -> Dispatched {
        if self.strict_sni_host {
            self.dispatch(req, Arrival::Tls(server_name))
        } else {
            self.dispatch(req, Arrival::Unchecked)
        }
    }

    fn dispatch(&self, mut req: Request, arrival: Arrival<'_>) -> Dispatched {
        let routed = self
            .prepare(&mut req)
            .and_then(|()| match arrival {
                Arrival::Unchecked => Ok(()),
                Arrival::Redirected(port) => self.redirect_to_https(&req, port),
                Arrival::Tls(server_name) => {
                    if sni_matches_host(&req, server_name) {
                        Ok(())
                    } else {
                        Err(Refused::Misdirected)
                    }
                }
            })
            .and_then(|()| match self.group(&req) {
                Some(group) => self.route(&self.groups[group], req.uri().path()),
                None => Ok(None),
            });
        let (service, metrics, route) = match routed {
            Ok(Some(index)) => (&self.routes[index].service, &self.routes[index].metrics, Some(index)),
            Ok(None) => (&self.not_found, &self.unmatched, None),
            Err(refused) => {
                req.extensions_mut().insert(refused);
                (&self.not_found, &self.unmatched, None)
            }
        };
        if let Some(matched) = route.and_then(|index| self.routes[index].matched.as_ref()) {
            req.extensions_mut().insert(matched.clone());
        }
        // Before the stack runs: a traced request's `traceparent` is rewritten here.
        let trace = self.tracer.as_ref().and_then(|tracer| tracer.begin(&mut req, route));
        if metrics.is_none() && trace.is_none() {
            return Dispatched::plain(service.call(req));
        }
        let method = crate::metrics::method_index(req.method());
        // With the admin listener, at most one request a second is also recorded layer by layer
        // for `/debug/requests`.
        if metrics.is_some() && crate::explain_request::live_log().sample(std::time::Instant::now()) {
            let name = route.map(|i| self.routes[i].name.as_str());
            let (capture, recorder) =
                LiveCapture::start(&req, service, self.server_layers, name, self.redactor.clone());
            let (run, timer) = service.call_inspected(req, recorder);
            return Dispatched::watched(run, Watch::start(metrics.clone(), timer, method, trace).with_capture(capture));
        }
        let (run, timer) = service.call_timed(req);
        Dispatched::watched(run, Watch::start(metrics.clone(), timer, method, trace))
    }

    /// What a scrape of the metrics reports about this router: its routes' metrics (in config
    /// order, then the unmatched requests) and its upstream targets. Empty when metrics are off.
    pub fn scrape(&self) -> (Vec<Arc<RouteMetrics>>, Vec<TargetState>) {
        let routes = self.routes.iter().chain(std::iter::empty()).filter_map(|r| r.metrics.clone());
        let routes: Vec<Arc<RouteMetrics>> = routes.chain(self.unmatched.clone()).collect();
        let targets = self
            .routes
            .iter()
            .filter_map(|r| r.upstreams.as_ref().map(|u| (r, u)))
            .flat_map(|(r, upstreams)| {
                upstreams.targets.iter().enumerate().map(move |(i, t)| TargetState {
                    route: r.name.clone(),
                    target: t.url.to_string(),
                    up: upstreams.is_healthy(i),
                    outcomes: t.outcomes.values(),
                })
            })
            .collect();
        (routes, targets)
    }

    /// `[tracing]`'s tracer, when tracing is on.
    pub fn tracer(&self) -> Option<&Arc<Tracer>> {
        self.tracer.as_ref()
    }

    /// The config this router was built from, as JSON, secrets redacted.
    pub fn running_config(&self) -> &Arc<serde_json::Value> {
        &self.running_config
    }

    /// The names of the routes, in config order.
    pub fn route_names(&self) -> Vec<String> {
        self.routes.iter().map(|r| r.name.clone()).collect()
    }

    /// The upstream routes with no healthy target (readiness fails while there is one).
    pub fn routes_without_healthy_target(&self) -> Vec<String> {
        self.routes
            .iter()
            .filter_map(|r| r.upstreams.as_ref().map(|u| (r, u)))
            .filter(|(_, u)| !(0..u.targets.len()).any(|i| u.is_healthy(i)))
            .map(|(r, _)| r.name.clone())
            .collect()
    }

    /// The host checks, then the path policy; the request leaves with its normalised path (and,
    /// for an absolute-form target, the target's authority as its `Host`).
    fn prepare(&self, req: &mut Request) -> Result<(), Refused> {
        check_host(req).map_err(Refused::BadRequest)?;
        let path = match self.path_policy.normalize(req.uri().path()) {
            Ok(Normalized::Path(Cow::Borrowed(_))) => return Ok(()),
            Ok(Normalized::Path(Cow::Owned(path))) => path,
            Ok(Normalized::Redirect(path)) => {
                let location = match req.uri().query() {
                    Some(query) => format!("{path}?{query}"),
                    None => path,
                };
                return Err(HeaderValue::try_from(location).map_or(Refused::BadRequest(UNROUTABLE), Refused::Redirect));
            }
            Err(e) => return Err(Refused::BadRequest(e.detail())),
        };
        *req.uri_mut() = with_path(req.uri(), &path).ok_or(Refused::BadRequest(UNROUTABLE))?;
        Ok(())
    }

    /// `Err(Refused::Redirect)` to `https://HOST[:port]/path?query` (the host without its port, the
    /// port left out when 443), unless the path is exempt. Runs after [`Router::prepare`]: the host
    /// is valid and the path normalised.
    fn redirect_to_https(&self, req: &Request, port: u16) -> Result<(), Refused> {
        let path = req.uri().path();
        if self.redirect_http.as_ref().is_none_or(|exempt| exempt.iter().any(|p| path.starts_with(p.as_str()))) {
            return Ok(());
        }
        // `prepare` let only ASCII `host[:port]` values through: the text is the whole value.
        let host = request_authority(req).ok_or(Refused::BadRequest(NO_HOST))?;
        let host = match host.find(']') {
            Some(end) => &host[..=end],
            None => host.split(':').next().unwrap_or(host),
        };
        let mut location = Vec::with_capacity(host.len() + path.len() + 16);
        location.extend_from_slice(b"https://");
        location.extend_from_slice(host.as_bytes());
        if port != 443 {
            location.extend_from_slice(format!(":{port}").as_bytes());
        }
        location.extend_from_slice(req.uri().path_and_query().map_or(path, |pq| pq.as_str()).as_bytes());
        Err(HeaderValue::from_bytes(&location).map_or(Refused::BadRequest(UNROUTABLE), Refused::Redirect))
    }

    /// The group of routes the request's host picks: the one group when no route names a host.
    /// The host is `Host` (checked by [`Router::prepare`]), else the URI's authority (HTTP/2).
    fn group(&self, req: &Request) -> Option<usize> {
        if self.hosts.is_empty() {
            return Some(0).filter(|_| !self.groups.is_empty());
        }
        let host = request_authority(req).map(request_host);
        self.hosts.group(host.as_deref())
    }

    /// The index of the route of `group` that `path` belongs to. Paths with `;` parameters must
    /// belong to the same route with and without them: servers that drop parameters (Tomcat,
    /// Spring) would otherwise serve a route's path on another route's authority.
    fn route(&self, group: &[usize], path: &str) -> Result<Option<usize>, Refused> {
        let find = |path: &str| group.iter().copied().find(|&i| matches(&self.routes[i].prefix, path));
        let found = find(path);
        if path.contains(';') {
            // Dropping `;x` can leave an empty segment (`/;x/admin` → `//admin`), which those
            // servers merge whatever this policy says.
            let plain = without_parameters(path);
            let same = match self.path_policy.merge_slashes(true).normalize(&plain) {
                Ok(Normalized::Path(plain)) => find(&plain) == found,
                _ => false,
            };
            if !same {
                return Err(Refused::BadRequest(PARAMETERS_CHANGE_ROUTE));
            }
        }
        Ok(found)
    }
}

/// Where the router sends one request ([`Router::route_for`]).
pub struct Routed<'a> {
    /// The route's position in [`Gateway::routes`](super::Gateway::routes) (config order); `None`: the server stack
    /// answers by itself (no route matches, or the request was refused before routing).
    pub route: Option<usize>,
    /// The onion that answers: the route's, or the server stack around the router's own answers.
    pub service: &'a Service,
}

const UNROUTABLE: &str = "The request's path cannot be routed.";
const PARAMETERS_CHANGE_ROUTE: &str = "The path's ';' parameters change which route it belongs to.";
const MISDIRECTED: &str = "The request's host is not the one its TLS connection was made for: connect again for it.";

/// What the router checks about how a request arrived, before routing it.
#[derive(Clone, Copy)]
enum Arrival<'a> {
    /// Nothing.
    Unchecked,
    /// Plain HTTP under `redirect_http`: it goes to HTTPS on this port.
    Redirected(u16),
    /// TLS under `strict_sni_host`, with the handshake's server name.
    Tls(Option<&'a str>),
}

/// Why the router answers a request itself, in the request's extensions for [`fallback`].
#[derive(Clone, Debug)]
enum Refused {
    /// `400`, with a fixed sentence for the client.
    BadRequest(&'static str),
    /// `308` to this location (the normalised path and the query).
    Redirect(HeaderValue),
    /// `421`: the host is not the one the TLS connection was made for.
    Misdirected,
}

/// The endpoint of the server stack alone: a refused request's answer, or the 404. Each says why
/// in a [`Refusal`] (for `explain`, never sent).
pub(super) async fn fallback(req: Request) -> Response {
    match req.extensions().get::<Refused>() {
        None => {
            Refusal::mark(response::json_error(StatusCode::NOT_FOUND, "no route matches this path"), "no route matches")
        }
        Some(Refused::BadRequest(detail)) => Refusal::mark(
            response::generated_error(StatusCode::BAD_REQUEST, detail),
            format!("request refused before routing: {detail}"),
        ),
        Some(Refused::Misdirected) => Refusal::mark(
            response::generated_error(StatusCode::MISDIRECTED_REQUEST, MISDIRECTED),
            "the host is not the TLS connection's (strict_sni_host)",
        ),
        Some(Refused::Redirect(location)) => {
            let mut res = response::text(StatusCode::PERMANENT_REDIRECT, "308 Permanent Redirect\n");
            res.headers_mut().insert(header::LOCATION, location.clone());
            Refusal::mark(
                res,
                "redirected: to HTTPS (redirect_http), or to the normalised path (escaped_slashes = \"redirect\")",
            )
        }
    }
}

fn matches(prefix: &str, path: &str) -> bool {
    prefix == "/" || (path.starts_with(prefix) && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/')))
}

/// `/a;x=1/b;y/c` → `/a/b/c`: each segment without its `;` parameters.
fn without_parameters(path: &str) -> String {
    path.split('/')
        .map(|segment| segment.split_once(';').map_or(segment, |(kept, _)| kept))
        .collect::<Vec<_>>()
        .join("/")
}

/// `uri` with its path replaced, keeping the query, the scheme and the authority.
fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq).ok()?);
    Uri::from_parts(parts).ok()
}

/// `/api/tasks?x=1` under prefix `/api` → `/tasks?x=1`, keeping scheme and authority (HTTP/2).
/// `None` for a path no longer under the prefix: a `rewrite` in the route moved it.
fn strip_prefix(uri: &Uri, prefix: &str) -> Option<Uri> {
    let rest = uri.path().strip_prefix(prefix).filter(|rest| rest.is_empty() || rest.starts_with('/'))?;
    with_path(uri, if rest.is_empty() { "/" } else { rest })
}

/// Shows a built-in app the path below its route's prefix (`/api/tasks` → `/tasks`).
pub(super) struct StripPrefix {
    pub(super) prefix: String,
    pub(super) inner: Arc<dyn Endpoint<Request, Response>>,
}

impl Endpoint<Request, Response> for StripPrefix {
    fn call(&self, mut req: Request) -> BoxFuture<Response> {
        if let Some(uri) = strip_prefix(req.uri(), &self.prefix) {
            *req.uri_mut() = uri;
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(matches("/", "/anything"));
        assert!(matches("/api", "/api"));
        assert!(matches("/api", "/api/tasks"));
        assert!(!matches("/api", "/apix"));
        assert!(!matches("/api", "/"));
    }

    #[test]
    fn parameters_are_dropped_segment_by_segment() {
        assert_eq!(without_parameters("/admin;x=1/secret"), "/admin/secret");
        assert_eq!(without_parameters("/a;b;c/d;/e"), "/a/d/e");
        assert_eq!(without_parameters("/plain"), "/plain");
    }

    #[test]
    fn stripping_keeps_the_query_and_the_authority() {
        let uri: Uri = "http://h:1/api/tasks?x=1".parse().unwrap();
        assert_eq!(strip_prefix(&uri, "/api").unwrap().to_string(), "http://h:1/tasks?x=1");
        let uri: Uri = "/api".parse().unwrap();
        assert_eq!(strip_prefix(&uri, "/api").unwrap().to_string(), "/");
        // A path a rewrite moved out from under the prefix is left whole, never cut mid-segment.
        for moved in ["/v2", "/apix/y", "/a"] {
            assert!(strip_prefix(&moved.parse().unwrap(), "/api").is_none(), "{moved}");
        }
    }
}
