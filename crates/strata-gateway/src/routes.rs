//! The router and the onions a config declares.
//!
//! Each route is one flat onion: the server stack, then the route's stack, then its target. The router
//! picks the route first (longest prefix wins, on path-segment boundaries: `/api` matches `/api` and
//! `/api/x`, not `/apix`) and a path no route matches gets a 404 from the server stack alone, so it is
//! still decorated by the server's layers. Middleware instances are shared, so a server layer is one
//! instance across all routes. Flat onions let per-layer timing and `Next::remaining` see every layer,
//! and every layer sees the path as the client sent it: only a built-in app sees it without the
//! route's prefix.

use std::collections::HashMap;
use std::sync::Arc;

use http::StatusCode;
use http::uri::{PathAndQuery, Uri};
use strata::http::client_ip::TrustedProxies;
use strata::http::{Layer, Request, Response, Service, Stack, response};
use strata::middleware::BuildContext;
use strata::{BoxFuture, Diagnostic, Endpoint, Fact, Facts, LayerInfo, Run};

use crate::apps;
use crate::config::{Config, ConfigErrors, ForwardedHeaders, NameRef, Target};
use crate::proxy::Proxy;
use crate::registry;

/// What a route serves, as `explain` and `check` describe it.
#[derive(Clone, Debug)]
pub struct TargetInfo {
    /// `app tasks` or `upstream http://…`.
    pub description: String,
    /// What the target declares about itself (e.g. it streams server-sent events).
    pub facts: Facts,
}

/// One route as planned: its prefix, its own layers and its target.
#[derive(Clone, Debug)]
pub struct RoutePlan {
    /// The path prefix.
    pub prefix: String,
    /// The route's own layers, outermost first (inside the server stack).
    pub layers: Vec<LayerInfo>,
    /// What it serves.
    pub target: TargetInfo,
    /// Whether the target is an upstream server (served by the proxy).
    pub is_upstream: bool,
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
}

impl Gateway {
    /// Builds every middleware once (a name used by several stacks is one shared instance), then the
    /// routes and the server stack. All errors are reported, not just the first.
    pub fn build(config: Config<'_>, ctx: &BuildContext) -> Result<Gateway, ConfigErrors> {
        let source = config.source;
        let mut errors = Vec::new();
        let mut layers: HashMap<String, Layer> = HashMap::new();
        for decl in config.middleware {
            let name = decl.name.clone();
            match registry::build_layer(decl, source, ctx) {
                Ok(layer) => {
                    layers.insert(name, layer);
                }
                Err(e) => errors.push(e),
            }
        }
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
        let not_found = server_stack.clone().serve(not_found);
        let mut facts = not_found.facts();
        let mut routes = Vec::new();
        let mut entries = Vec::new();
        for route in &config.routes {
            let stack = stack_of(&route.stack);
            let layer_infos = stack.infos();
            let (endpoint, target, is_upstream): (Arc<dyn Endpoint<Request, Response>>, TargetInfo, bool) = match &route
                .target
            {
                Target::App(name) => {
                    let app = apps::mounted(name, &route.prefix).ok_or_else(|| {
                        ConfigErrors(vec![source.error(route.target_span.clone(), format!("unknown app `{name}`"))])
                    })?;
                    (app.endpoint, TargetInfo { description: format!("app {name}"), facts: app.facts }, false)
                }
                Target::Upstream(uri) => {
                    // An upstream may fail and may stream events: rules must assume both.
                    let mut facts = Facts::of(&[Fact::CanFail, Fact::StreamsEvents]);
                    if route.proxy.forwarded != ForwardedHeaders::None {
                        // The forwarding headers carry the peer's address.
                        facts = facts.with(Fact::ReadsClientAddress);
                    }
                    (
                        Arc::new(Proxy::new(uri, &route.prefix, &route.proxy, config.server.trusted_proxies.clone())),
                        TargetInfo { description: format!("upstream {uri}"), facts },
                        true,
                    )
                }
            };
            let endpoint: Arc<dyn Endpoint<Request, Response>> = if !is_upstream && route.prefix != "/" {
                Arc::new(StripPrefix { prefix: route.prefix.clone(), inner: endpoint })
            } else {
                endpoint
            };
            let service = server_stack.clone().then(stack).serve_arc(endpoint);
            facts = facts.union(service.facts()).union(target.facts);
            entries.push(RouteEntry { prefix: route.prefix.clone(), service });
            routes.push(RoutePlan { prefix: route.prefix.clone(), layers: layer_infos, target, is_upstream });
        }
        let mut unused: Vec<String> = layers.keys().filter(|n| !used.contains(*n)).cloned().collect();
        unused.sort();
        let mut named: Vec<&Layer> = layers.values().collect();
        named.sort_by(|a, b| a.name().cmp(b.name()));
        let layer_diagnostics = named.iter().flat_map(|l| l.diagnostics().iter().cloned()).collect();
        // Longest prefix first, so the first match is the most specific one.
        entries.sort_by_key(|e| std::cmp::Reverse(e.prefix.len()));
        let trusted_proxies = config.server.trusted_proxies.clone();
        Ok(Gateway {
            server: config.server,
            server_layers: server_stack.infos(),
            router: Arc::new(Router { routes: entries, not_found, facts, trusted_proxies }),
            routes,
            unused,
            layer_diagnostics,
        })
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
        for (prefix, diagnostic) in self.diagnostics() {
            tracing::warn!(route = %prefix, "{}", diagnostic.to_string().replace('\n', " "));
        }
    }

    /// The ordering diagnostics of every route, with the route's prefix.
    pub fn diagnostics(&self) -> Vec<(String, Diagnostic)> {
        let deployment = self.server.deployment();
        self.routes
            .iter()
            .flat_map(|route| {
                let onion = self.onion(route);
                let mut found = strata::check::check(&onion);
                found.extend(strata::check::check_deployment(&onion, &deployment));
                found.into_iter().map(|d| (route.prefix.clone(), d))
            })
            .collect()
    }
}

struct RouteEntry {
    prefix: String,
    service: Service,
}

/// Dispatches each request to the onion of the route with the longest matching prefix.
pub struct Router {
    // Longest prefix first, so the first match is the most specific one.
    routes: Vec<RouteEntry>,
    not_found: Service,
    // Every layer's and target's facts, computed once: the server asks for every connection.
    facts: Facts,
    // The config's `trusted_proxies`: the client address is resolved with the same list the
    // proxies of this router trust, so a reload changes both at once.
    trusted_proxies: Arc<TrustedProxies>,
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

    /// Runs a request through its route's onion (or the server stack's 404).
    pub fn call(&self, req: Request) -> Run<Response> {
        let path = req.uri().path();
        let service = self.routes.iter().find(|r| matches(&r.prefix, path)).map_or(&self.not_found, |r| &r.service);
        service.call(req)
    }
}

async fn not_found(_req: Request) -> Response {
    response::json_error(StatusCode::NOT_FOUND, "no route matches this path")
}

fn matches(prefix: &str, path: &str) -> bool {
    prefix == "/" || (path.starts_with(prefix) && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/')))
}

/// `/api/tasks?x=1` under prefix `/api` → `/tasks?x=1`, keeping scheme and authority (HTTP/2).
fn strip_prefix(uri: &Uri, prefix: &str) -> Option<Uri> {
    let rest = &uri.path()[prefix.len()..];
    let path = if rest.is_empty() { "/" } else { rest };
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq).ok()?);
    Uri::from_parts(parts).ok()
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
    fn stripping_keeps_the_query_and_the_authority() {
        let uri: Uri = "http://h:1/api/tasks?x=1".parse().unwrap();
        assert_eq!(strip_prefix(&uri, "/api").unwrap().to_string(), "http://h:1/tasks?x=1");
        let uri: Uri = "/api".parse().unwrap();
        assert_eq!(strip_prefix(&uri, "/api").unwrap().to_string(), "/");
    }
}
