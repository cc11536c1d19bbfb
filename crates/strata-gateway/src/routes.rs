//! The router and the onions a config declares.
//!
//! Each route is one flat onion: the server stack, then the route's stack, then its target. The router
//! picks the route first: the request's host picks a group of routes ([`crate::hosts`]: the most
//! specific `host` pattern it matches, else the routes without `host`), then the longest prefix in
//! that group wins, on path-segment boundaries (`/api` matches `/api` and `/api/x`, not `/apix`). A
//! request no route matches gets a 404 from the server stack alone, so it is still decorated by the
//! server's layers. Middleware instances are shared, so a server layer is one
//! instance across all routes. Flat onions let per-layer timing and `Next::remaining` see every layer.
//!
//! Before routing, the request target is checked once, and what was authorised is what is served:
//!
//! - **Host** (RFC 9112 §3.2, RFC 9110 §7.2): an HTTP/1.1 request needs exactly one valid `Host`
//!   (`uri-host[:port]`); an absolute-form target (`GET http://h/x`) names the host itself and
//!   replaces `Host`; over HTTP/2 a `Host` that disagrees with `:authority` is refused (RFC 9113
//!   §8.3.1).
//! - **Path**: normalised by the `[server]` [`PathPolicy`] (dot segments, escapes, slashes). Every
//!   layer, the route's prefix match and the upstream see the normalised path; a built-in app sees
//!   it without the route's prefix.
//! - **Path parameters**: a path whose route would change if `;` parameters were dropped from its
//!   segments (`/admin;x=1/secret` is `/admin/secret` to Tomcat and Spring, but would match `/`
//!   here) is refused.
//!
//! A refused request gets its `400` (or, for `escaped_slashes = "redirect"`, its `308`) from the
//! server stack, like the `404`, so it is logged and decorated. So does a plain-HTTP request under
//! `[server.tls] redirect_http`: its `308` to `https://` ([`Router::call_plain`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use http::uri::{PathAndQuery, Uri};
use http::{HeaderValue, StatusCode, header};
use strata::http::client_ip::TrustedProxies;
use strata::http::path::{Normalized, PathPolicy};
use strata::http::{NamedLayer, Refusal, Request, Response, Service, Stack, response};
use strata::middleware::BuildContext;
use strata::{BoxFuture, Diagnostic, Endpoint, Fact, Facts, LayerInfo};

use crate::apps;
use crate::config::{Balance, Config, ConfigErrors, ForwardedHeaders, HashOn, NameRef, Target};
use crate::explain_request::{LiveCapture, Redactor};
use crate::hosts::{HostPattern, HostTable, NO_HOST, check_host, request_authority, request_host, sni_matches_host};
use crate::metrics::RouteMetrics;
use crate::metrics::render::TargetState;
use crate::observe::{Dispatched, Watch};
use crate::proxy::Proxy;
use crate::registry;
use crate::tls_client::UpstreamTls;
use crate::trace::Tracer;
use crate::upstream::Upstreams;

/// What a route serves, as `explain` and `check` describe it.
#[derive(Clone, Debug)]
pub struct TargetInfo {
    /// `app tasks` or `upstream http://…`.
    pub description: String,
    /// What the target declares about itself (e.g. it streams server-sent events).
    pub facts: Facts,
    /// What is wrong with the target's own configuration (e.g. an upstream whose certificate is
    /// not verified), reported by `check` and logged at startup and reload.
    pub diagnostics: Vec<Diagnostic>,
}

/// One route as planned: its prefix, its own layers and its target.
#[derive(Clone, Debug)]
pub struct RoutePlan {
    /// The path prefix.
    pub prefix: String,
    /// The hosts it serves (empty: any host no other route names).
    pub hosts: Vec<HostPattern>,
    /// The route's own layers, outermost first (inside the server stack).
    pub layers: Vec<LayerInfo>,
    /// What it serves.
    pub target: TargetInfo,
    /// Whether the target is an upstream server (served by the proxy).
    pub is_upstream: bool,
}

impl RoutePlan {
    /// How logs, `check` and `explain` name the route: its prefix, after its hosts when it has
    /// some (`api.example.com/v1`, `a.test,*.b.test/`).
    pub fn name(&self) -> String {
        route_name(&self.hosts, &self.prefix)
    }
}

/// A route's name: its prefix, after its hosts when it has some.
fn route_name(hosts: &[HostPattern], prefix: &str) -> String {
    if hosts.is_empty() {
        return prefix.to_string();
    }
    let hosts: Vec<String> = hosts.iter().map(ToString::to_string).collect();
    format!("{}{prefix}", hosts.join(","))
}

/// A built gateway: the router to serve and the plan it was built from.
pub struct Gateway {
    /// `[server]` settings.
    pub server: crate::config::Server,
    /// What the listener calls for every request.
    pub router: Arc<Router>,
    /// The server stack's layers, outermost first.
    pub server_layers: Vec<LayerInfo>,
    /// The routes, in file order.
    pub routes: Vec<RoutePlan>,
    /// Middlewares declared but used by no stack.
    pub unused: Vec<String>,
    /// What the middlewares reported about their own configuration (e.g. weak password hashes),
    /// once per middleware whatever the number of stacks using it.
    pub layer_diagnostics: Vec<Diagnostic>,
    /// The targets of the routes with an active health check, held weakly: the router owns them.
    health_checked: Vec<std::sync::Weak<crate::upstream::Upstreams>>,
    /// `[server.tls]` certificates: files, names and expiry dates.
    pub tls_certificates: Vec<crate::tls::CertificateInfo>,
    /// `[admin]`: the admin listener, when configured.
    pub admin: Option<crate::config::Admin>,
    /// `[log]`: the runtime log's settings.
    pub log: crate::config::LogSettings,
    /// `[tracing]`: OTLP span export, when configured.
    pub tracing: Option<crate::config::TraceSettings>,
}

/// How [`Gateway::build_with`] departs from what the config says, for tools that run requests
/// through a gateway without serving it.
#[derive(Clone, Default)]
pub struct BuildOptions {
    /// Answers every upstream route's requests in its targets' place (the proxy still prepares
    /// each request as it would send it; see [`Proxy::answering_with`]).
    pub upstream_stub: Option<Arc<dyn Endpoint<Request, Response>>>,
}

impl Gateway {
    /// Builds every middleware once (a name used by several stacks is one shared instance), then the
    /// routes and the server stack. All errors are reported, not just the first.
    pub fn build(config: Config<'_>, ctx: &BuildContext) -> Result<Gateway, ConfigErrors> {
        Gateway::build_with(config, ctx, &BuildOptions::default())
    }

    /// [`Gateway::build`], with `options`.
    pub fn build_with(
        config: Config<'_>,
        ctx: &BuildContext,
        build_options: &BuildOptions,
    ) -> Result<Gateway, ConfigErrors> {
        let source = config.source;
        let running_config = Arc::new(crate::admin::redacted_config(source.text));
        let mut errors = Vec::new();
        let mut layers: HashMap<String, NamedLayer> = HashMap::new();
        for decl in config.middleware {
            let name = decl.name.clone();
            match registry::build_layer(decl, source, ctx) {
                Ok(layer) => {
                    layers.insert(name, layer);
                }
                Err(e) => errors.push(e),
            }
        }
        let tls = match &config.server.tls {
            Some(settings) => crate::tls::build(settings, config.server.http2, source, &ctx.base_dir)
                .map_err(|e| errors.extend(e))
                .ok(),
            None => None,
        };
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let mut used = std::collections::HashSet::new();
        let mut stack_of = |refs: &[NameRef]| {
            refs.iter().fold(Stack::new(), |stack, r| {
                used.insert(r.name.clone());
                // Parsing already rejected references to undefined names.
                match layers.get(&r.name) {
                    Some(layer) => stack.with_layer(layer.clone()),
                    None => stack,
                }
            })
        };

        let server_stack = stack_of(&config.server.stack);
        let not_found = server_stack.clone().serve(fallback);
        // Metrics are kept when something can read them.
        let observe = config.admin.is_some();
        let unmatched =
            observe.then(|| crate::metrics::global().route(crate::metrics::UNMATCHED, &onion_of(&not_found)));
        let mut facts = not_found.facts();
        let mut routes = Vec::new();
        let mut entries = Vec::new();
        let mut upstreams = Vec::new();
        // Per route (in `entries` order), what its spans say about it; only with `[tracing]`.
        let mut route_traces = Vec::new();
        for route in &config.routes {
            let stack = stack_of(&route.stack);
            let layer_infos = stack.infos();
            let mut route_upstreams = None;
            let mut traced_upstream = None;
            let (endpoint, target, is_upstream): (Arc<dyn Endpoint<Request, Response>>, TargetInfo, bool) = match &route
                .target
            {
                Target::App(name) => {
                    let app = apps::mounted(name, &route.prefix).ok_or_else(|| {
                        ConfigErrors(vec![source.error(route.target_span.clone(), format!("unknown app `{name}`"))])
                    })?;
                    (
                        app.endpoint,
                        TargetInfo { description: format!("app {name}"), facts: app.facts, diagnostics: Vec::new() },
                        false,
                    )
                }
                Target::Upstream(targets) => {
                    // An upstream may fail and may stream events: rules must assume both.
                    let mut facts = Facts::of(&[Fact::CanFail, Fact::StreamsEvents]);
                    if route.proxy.forwarded != ForwardedHeaders::None
                        || route.upstream.balance == Balance::Hash(HashOn::ClientIp)
                    {
                        // The forwarding headers carry the peer's address; the hash, the client's.
                        facts = facts.with(Fact::ReadsClientAddress);
                    }
                    // Each `https://` target's TLS (its host is the name verified, unless
                    // `tls_server_name` says otherwise); `None` for `http://` ones.
                    let options = &route.proxy.tls;
                    let tls: Result<Vec<Option<Arc<UpstreamTls>>>, String> = targets
                        .iter()
                        .map(|t| {
                            if t.url.scheme() != Some(&http::uri::Scheme::HTTPS) {
                                return Ok(None);
                            }
                            let host = t.url.host().unwrap_or_default();
                            UpstreamTls::new(host, options, &ctx.base_dir, route.proxy.http2).map(|b| Some(Arc::new(b)))
                        })
                        .collect();
                    let tls = match tls {
                        Ok(tls) => tls,
                        Err(message) => {
                            let at =
                                options.ca_file.as_ref().map_or(route.target_span.clone(), |(_, span)| span.clone());
                            errors.push(source.error(at, message));
                            continue;
                        }
                    };
                    let secure = tls.iter().any(Option::is_some);
                    let proxy = Proxy::new(
                        targets,
                        &route.prefix,
                        &route_name(&route.hosts, &route.prefix),
                        &route.proxy,
                        &route.upstream,
                        config.server.trusted_proxies.clone(),
                        tls,
                    );
                    let description = proxy.upstreams().describe();
                    let mut diagnostics = Vec::new();
                    if secure && options.insecure_skip_verify {
                        diagnostics.push(insecure_upstream(&description));
                    }
                    if proxy.upstreams().options.health_check.is_some() {
                        upstreams.push(Arc::downgrade(proxy.upstreams()));
                    }
                    let proxy = match &build_options.upstream_stub {
                        Some(stub) => proxy.answering_with(stub.clone()),
                        None => proxy,
                    };
                    route_upstreams = Some(proxy.upstreams().clone());
                    traced_upstream = Some(match targets.as_slice() {
                        [only] => crate::trace::Upstream {
                            address: only.url.host().map(str::to_string),
                            port: only
                                .url
                                .port_u16()
                                .or(Some(if only.url.scheme() == Some(&http::uri::Scheme::HTTPS) { 443 } else { 80 })),
                        },
                        _ => crate::trace::Upstream { address: None, port: None },
                    });
                    (Arc::new(proxy), TargetInfo { description, facts, diagnostics }, true)
                }
            };
            let endpoint: Arc<dyn Endpoint<Request, Response>> = if !is_upstream && route.prefix != "/" {
                Arc::new(StripPrefix { prefix: route.prefix.clone(), inner: endpoint })
            } else {
                endpoint
            };
            let service = server_stack.clone().then(stack).serve_arc(endpoint);
            facts = facts.union(service.facts()).union(target.facts);
            let name = route_name(&route.hosts, &route.prefix);
            let metrics = observe.then(|| crate::metrics::global().route(&name, &onion_of(&service)));
            if config.tracing.is_some() {
                route_traces.push(crate::trace::RouteTrace {
                    name: Some(name.clone()),
                    kinds: onion_of(&service).iter().map(|l| l.kind).collect(),
                    upstream: traced_upstream,
                });
            }
            entries.push(RouteEntry {
                prefix: route.prefix.clone(),
                name,
                service,
                metrics,
                upstreams: route_upstreams,
            });
            routes.push(RoutePlan {
                prefix: route.prefix.clone(),
                hosts: route.hosts.clone(),
                layers: layer_infos,
                target,
                is_upstream,
            });
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let mut unused: Vec<String> = layers.keys().filter(|n| !used.contains(*n)).cloned().collect();
        unused.sort();
        let mut named: Vec<&NamedLayer> = layers.values().collect();
        named.sort_by(|a, b| a.name().cmp(b.name()));
        let layer_diagnostics = named.iter().flat_map(|l| l.diagnostics().iter().cloned()).collect();
        let (hosts, mut groups) = HostTable::build(config.routes.iter().map(|r| r.hosts.as_slice()));
        for group in &mut groups {
            // Longest prefix first, so the first match is the most specific one.
            group.sort_by_key(|&i| std::cmp::Reverse(entries[i].prefix.len()));
        }
        let trusted_proxies = config.server.trusted_proxies.clone();
        let redactor = Arc::new(Redactor::new(config.server.secret_headers.clone()));
        let path_policy = config.server.path_policy;
        let redirect_http = config.server.tls.as_ref().filter(|t| t.redirect_http).map(|t| t.redirect_exempt.clone());
        let strict_sni_host = config.server.tls.as_ref().is_some_and(|t| t.strict_sni_host);
        let tracer = config.tracing.as_ref().map(|settings| {
            // The last entry is for the requests no route matched (the server stack's answers).
            route_traces.push(crate::trace::RouteTrace {
                name: None,
                kinds: onion_of(&not_found).iter().map(|l| l.kind).collect(),
                upstream: None,
            });
            Arc::new(Tracer::new(settings, route_traces))
        });
        let (tls, tls_certificates) = match tls {
            Some(setup) => (Some(setup.server_config), setup.certificates),
            None => (None, Vec::new()),
        };
        Ok(Gateway {
            server: config.server,
            server_layers: server_stack.infos(),
            router: Arc::new(Router {
                routes: entries,
                unmatched,
                server_layers: server_stack.layers().len(),
                redactor,
                hosts,
                groups,
                not_found,
                facts,
                trusted_proxies,
                path_policy,
                tls,
                redirect_http,
                strict_sni_host,
                running_config,
                tracer,
            }),
            routes,
            unused,
            layer_diagnostics,
            health_checked: upstreams,
            tls_certificates,
            admin: config.admin,
            log: config.log,
            tracing: config.tracing,
        })
    }

    /// Starts what runs beside the requests: the active health checks of the routes that have one.
    /// Call it inside the runtime that serves this gateway, before it serves; a gateway that is
    /// only checked or explained is never started, and starts nothing. The tasks hold their routes
    /// weakly and end once the router is dropped (by a reload).
    pub fn start(&self) {
        if let Some(tracer) = &self.router.tracer {
            tracer.start();
        }
        for upstreams in self.health_checked.iter().filter_map(std::sync::Weak::upgrade) {
            crate::upstream::health::start(&upstreams);
        }
    }

    /// The whole onion of one route, outermost first: server layers, route layers, then the target
    /// as a pseudo-layer of kind `"app"` (so ordering rules can see what it does).
    pub fn onion(&self, route: &RoutePlan) -> Vec<LayerInfo> {
        let mut all = self.server_layers.clone();
        all.extend(route.layers.iter().cloned());
        all.push(LayerInfo { name: route.target.description.clone(), kind: "app", facts: route.target.facts });
        all
    }

    /// Logs what `check` would warn about: each layer's own configuration problems, then each
    /// route's ordering problems (at startup and after every reload).
    pub fn log_warnings(&self) {
        for diagnostic in &self.layer_diagnostics {
            // A note (a mode in force) is information, not a warning.
            if diagnostic.severity == strata::Severity::Note {
                tracing::info!("{}", diagnostic.to_string().replace('\n', " "));
            } else {
                tracing::warn!("{}", diagnostic.to_string().replace('\n', " "));
            }
        }
        for (prefix, diagnostic) in self.target_diagnostics().into_iter().chain(self.diagnostics()) {
            tracing::warn!(route = %prefix, "{}", diagnostic.to_string().replace('\n', " "));
        }
        for warning in self.tls_certificates.iter().filter_map(|c| c.expiry_warning(std::time::SystemTime::now())) {
            tracing::warn!("{warning}");
        }
        if let Some(warning) = self.admin.as_ref().and_then(crate::admin::exposure_warning) {
            tracing::warn!("{}", warning.replace('\n', " "));
        }
    }

    /// What the routes' targets reported about their own configuration (e.g. an upstream whose
    /// certificate is not verified), with the route's [name](RoutePlan::name).
    pub fn target_diagnostics(&self) -> Vec<(String, Diagnostic)> {
        self.routes
            .iter()
            .flat_map(|route| route.target.diagnostics.iter().map(move |d| (route.name(), d.clone())))
            .collect()
    }

    /// The ordering diagnostics of every route, with the route's [name](RoutePlan::name).
    pub fn diagnostics(&self) -> Vec<(String, Diagnostic)> {
        let deployment = self.server.deployment();
        self.routes
            .iter()
            .flat_map(|route| {
                let onion = self.onion(route);
                let mut found = strata::check::check(&onion);
                found.extend(strata::check::check_deployment(&onion, &deployment));
                let name = route.name();
                found.into_iter().map(move |d| (name.clone(), d))
            })
            .collect()
    }
}

/// The warning about an upstream whose certificate is not verified (`insecure_skip_verify`).
fn insecure_upstream(target: &str) -> Diagnostic {
    Diagnostic {
        severity: strata::Severity::Warning,
        rule: "insecure-upstream-tls",
        layer: target.to_string(),
        message: format!("`insecure_skip_verify = true`: the certificate of `{target}` is NOT VERIFIED"),
        why: "anyone between the gateway and the upstream can pose as it, and read or change every request \
              and response (passwords, tokens and cookies included)"
            .to_string(),
        fix: "remove `insecure_skip_verify` and set `tls_ca_file` to the CA that issued the upstream's \
              certificate (and `tls_server_name` to a name it covers, if the URL's host is not one)"
            .to_string(),
    }
}

struct RouteEntry {
    prefix: String,
    // Its hosts and prefix, as logs and metrics name it.
    name: String,
    service: Service,
    // `None` when metrics are off.
    metrics: Option<Arc<RouteMetrics>>,
    // The targets of an upstream route.
    upstreams: Option<Arc<Upstreams>>,
}

/// A service's layers as metrics name them: each layer, then the endpoint as `app`.
fn onion_of(service: &Service) -> Vec<LayerInfo> {
    let mut layers: Vec<LayerInfo> = service.layers().iter().map(NamedLayer::info).collect();
    layers.push(LayerInfo { name: "app".into(), kind: "app", facts: Facts::NONE });
    layers
}

/// Dispatches each request to the onion of the route its host and longest matching prefix pick.
pub struct Router {
    // In config order; `groups` index them.
    routes: Vec<RouteEntry>,
    // Which group a request's host belongs to.
    hosts: HostTable,
    // Per group, its routes, longest prefix first, so the first match is the most specific one.
    // Without any `host` in the config, one group of every route.
    groups: Vec<Vec<usize>>,
    // The server stack around `fallback`: the 404, and the answers to refused request targets.
    not_found: Service,
    // The metrics of the requests `not_found` answers; `None` when metrics are off.
    unmatched: Option<Arc<RouteMetrics>>,
    // How many layers of each route's onion are the server stack's (for `/debug/requests`).
    server_layers: usize,
    // The headers `/debug/requests` shows as `[redacted]`.
    redactor: Arc<Redactor>,
    // Every layer's and target's facts, computed once: the server asks for every connection.
    facts: Facts,
    // The config's `trusted_proxies`: the client address is resolved with the same list the
    // proxies of this router trust, so a reload changes both at once.
    trusted_proxies: Arc<TrustedProxies>,
    // `[server] merge_slashes` and `escaped_slashes`.
    path_policy: PathPolicy,
    // `[server.tls]`: what new TLS handshakes use, so that a reload changes certificates.
    tls: Option<Arc<rustls::ServerConfig>>,
    // `redirect_http = true`: the paths plain requests are still served on (`redirect_exempt`).
    redirect_http: Option<Vec<String>>,
    // `[server.tls] strict_sni_host`: a TLS request's host must be its handshake's SNI.
    strict_sni_host: bool,
    // The config this router was built from, as JSON with its secrets redacted (admin `/config`).
    running_config: Arc<serde_json::Value>,
    // `[tracing]`: samples requests and exports their spans. Route indexes are `routes`'.
    tracer: Option<Arc<Tracer>>,
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
            Ok(Some(index)) => Routed { route: Some(index), service: &self.routes[index].service },
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
    /// The route's position in [`Gateway::routes`] (config order); `None`: the server stack
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
async fn fallback(req: Request) -> Response {
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
fn strip_prefix(uri: &Uri, prefix: &str) -> Option<Uri> {
    let rest = &uri.path()[prefix.len()..];
    with_path(uri, if rest.is_empty() { "/" } else { rest })
}

/// Shows a built-in app the path below its route's prefix (`/api/tasks` → `/tasks`).
struct StripPrefix {
    prefix: String,
    inner: Arc<dyn Endpoint<Request, Response>>,
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
    }
}
