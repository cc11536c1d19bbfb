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
//! - **Path**: normalised by the `[server]` [`PathPolicy`](strata::http::path::PathPolicy) (dot segments, escapes, slashes). Every
//!   layer, the route's prefix match and the upstream see the normalised path; a built-in app sees
//!   it without the route's prefix.
//! - **Path parameters**: a path whose route would change if `;` parameters were dropped from its
//!   segments (`/admin;x=1/secret` is `/admin/secret` to Tomcat and Spring, but would match `/`
//!   here) is refused.
//!
//! A refused request gets its `400` (or, for `escaped_slashes = "redirect"`, its `308`) from the
//! server stack, like the `404`, so it is logged and decorated. So does a plain-HTTP request under
//! `[server.tls] redirect_http`: its `308` to `https://` ([`Router::call_plain`]).

use std::collections::HashMap;
use std::sync::Arc;

use strata::http::{NamedLayer, Request, Response, Stack};
use strata::middleware::BuildContext;
use strata::{Diagnostic, Endpoint, Fact, Facts, LayerInfo};

use crate::apps;
use crate::config::{Balance, Config, ConfigErrors, ForwardedHeaders, HashOn, NameRef, Target};
use crate::explain_request::Redactor;
use crate::hosts::{HostPattern, HostTable};
use crate::proxy::Proxy;
use crate::registry;
use crate::tls_client::UpstreamTls;
use crate::trace::Tracer;

mod router;
use router::{RouteEntry, StripPrefix, fallback, onion_of};
pub use router::{Routed, Router};

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
                Target::Static(target) => {
                    // Mounted at the route's prefix rather than behind `StripPrefix`: its directory
                    // redirects (`/assets` → `/assets/`) need the path the client asked for.
                    let built = strata::apps::StaticFiles::builder_from_config(target.config.clone(), ctx)
                        .and_then(|builder| builder.mount_path(route.prefix.clone()).build());
                    let files = match built {
                        Ok(files) => files,
                        Err(e) => {
                            let at =
                                e.field.map_or(route.target_span.clone(), |f| target.span_of(f, &route.target_span));
                            let key = e.field.map_or_else(|| "static".to_string(), |f| format!("static.{f}"));
                            errors.push(source.error(at, format!("`{key}`: {}", e.message)));
                            continue;
                        }
                    };
                    let description = format!("static {}", files.root().display());
                    let facts = files.facts();
                    (Arc::new(files), TargetInfo { description, facts, diagnostics: Vec::new() }, false)
                }
            };
            let mounted_itself = matches!(route.target, Target::Static(_));
            let endpoint: Arc<dyn Endpoint<Request, Response>> =
                if !is_upstream && !mounted_itself && route.prefix != "/" {
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
            // Only for stacks with a layer that reads it: other routes skip its cost.
            let matched =
                service.facts().has(Fact::ReadsRoute).then(|| strata::http::MatchedRoute(name.as_str().into()));
            entries.push(RouteEntry {
                prefix: route.prefix.clone(),
                name,
                service,
                metrics,
                upstreams: route_upstreams,
                matched,
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
