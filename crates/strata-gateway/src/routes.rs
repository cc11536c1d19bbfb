//! The router and the onions a config declares.
//!
//! The server stack wraps the router (so a request that matches no route still gets a 404 decorated
//! by the server's layers); each route's stack wraps its target. Longest prefix wins, on path-segment
//! boundaries (`/api` matches `/api` and `/api/x`, not `/apix`).

use std::collections::HashMap;
use std::sync::Arc;

use http::StatusCode;
use http::uri::{PathAndQuery, Uri};
use strata::http::{Layer, Request, Response, Service, Stack, response};
use strata::middleware::BuildContext;
use strata::{BoxFuture, Diagnostic, Endpoint, Fact, Facts, LayerInfo};

use crate::apps;
use crate::config::{Config, ConfigErrors, NameRef, Target};
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

/// A built gateway: the service to serve and the plan it was built from.
pub struct Gateway {
    /// `[server]` settings.
    pub server: crate::config::Server,
    /// The server stack around the router: what the listener calls.
    pub service: Service,
    /// The server stack's layers, outermost first.
    pub server_layers: Vec<LayerInfo>,
    /// The routes, in file order.
    pub routes: Vec<RoutePlan>,
    /// Middlewares declared but used by no stack.
    pub unused: Vec<String>,
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

        let mut routes = Vec::new();
        let mut entries = Vec::new();
        for route in &config.routes {
            let stack = stack_of(&route.stack);
            let layer_infos = stack.infos();
            let (endpoint, target, is_upstream): (Arc<dyn Endpoint<Request, Response>>, TargetInfo, bool) =
                match &route.target {
                    Target::App(name) => {
                        let app = apps::by_name(name).ok_or_else(|| {
                            ConfigErrors(vec![source.error(route.target_span.clone(), format!("unknown app `{name}`"))])
                        })?;
                        (app.endpoint, TargetInfo { description: format!("app {name}"), facts: app.facts }, false)
                    }
                    Target::Upstream(uri) => (
                        Arc::new(UpstreamUnavailable),
                        // An upstream may fail and may stream events: rules must assume both.
                        TargetInfo {
                            description: format!("upstream {uri}"),
                            facts: Facts::of(&[Fact::CanFail, Fact::StreamsEvents]),
                        },
                        true,
                    ),
                };
            entries.push(RouteEntry {
                prefix: route.prefix.clone(),
                strip_prefix: !is_upstream && route.prefix != "/",
                service: stack.serve_arc(endpoint),
            });
            routes.push(RoutePlan { prefix: route.prefix.clone(), layers: layer_infos, target, is_upstream });
        }
        let server_stack = stack_of(&config.server.stack);
        let mut unused: Vec<String> = layers.keys().filter(|n| !used.contains(*n)).cloned().collect();
        unused.sort();
        // Longest prefix first, so the first match is the most specific one.
        entries.sort_by_key(|e| std::cmp::Reverse(e.prefix.len()));
        Ok(Gateway {
            server: config.server,
            server_layers: server_stack.infos(),
            service: server_stack.serve(Router { routes: entries }),
            routes,
            unused,
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

    /// The ordering diagnostics of every route, with the route's prefix.
    pub fn diagnostics(&self) -> Vec<(String, Diagnostic)> {
        self.routes
            .iter()
            .flat_map(|route| strata::check::check(&self.onion(route)).into_iter().map(|d| (route.prefix.clone(), d)))
            .collect()
    }
}

struct RouteEntry {
    prefix: String,
    strip_prefix: bool,
    service: Service,
}

/// Dispatches to the route with the longest matching prefix.
struct Router {
    routes: Vec<RouteEntry>,
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

impl Endpoint<Request, Response> for Router {
    fn call(&self, mut req: Request) -> BoxFuture<Response> {
        let Some(route) = self.routes.iter().find(|r| matches(&r.prefix, req.uri().path())) else {
            return Box::pin(async { response::json_error(StatusCode::NOT_FOUND, "no route matches this path") });
        };
        if route.strip_prefix
            && let Some(uri) = strip_prefix(req.uri(), &route.prefix)
        {
            *req.uri_mut() = uri;
        }
        Box::pin(route.service.call(req))
    }
}

/// Stands in for upstream routes until the proxy serves them; `serve` refuses such configs.
struct UpstreamUnavailable;

impl Endpoint<Request, Response> for UpstreamUnavailable {
    fn call(&self, _req: Request) -> BoxFuture<Response> {
        Box::pin(async { response::json_error(StatusCode::BAD_GATEWAY, "this route's upstream is not served") })
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
