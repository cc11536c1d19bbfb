//! `rewrite`: changes the path the layers inside it, and the app or upstream, receive; the client
//! is not told.
//!
//! ```
//! use strata::http::{Request, Response, Stack};
//! use strata::middleware::{PathRule, Rewrite};
//!
//! let rewrite = Rewrite::builder()
//!     .rule(PathRule::regex(r"^/users/(\d+)$", "/api/v2/users?id=$1"))
//!     .rule(PathRule::prefix("/v1", "/api/v1"))
//!     .build()?;
//! let service = Stack::new()
//!     .with(rewrite)
//!     .serve(|req: Request| async move { Response::new(req.uri().to_string().into()) });
//! # let _ = service;
//! # Ok::<(), strata::middleware::ConfigError>(())
//! ```
//!
//! The rules are [`PathRule`]s, as `redirect`'s: tried in order over the path, the first that
//! matches gives the new path (only one rule applies). The query is kept unless the target has
//! its own. The request URI's scheme and authority (HTTP/2) are kept, and the URI the request
//! arrived with is in its extensions as [`OriginalUri`] for the layers inside.
//!
//! # Decisions worth knowing
//!
//! - **The new path is normalised again**, with a [`PathPolicy`] (default: the strict one, but
//!   encoded slashes kept as data, since the server's policy already let them through): `.`/`..`
//!   segments that the rule's pieces form are resolved and repeated slashes merged, so a rewrite
//!   cannot aim the upstream at a path above the one it was built for. A result that climbs above
//!   the root, or otherwise cannot be normalised, is answered `400` (marked
//!   [`GeneratedError`](crate::http::GeneratedError), so an `errors` layer formats it). A leading
//!   `//` is always merged: it would name a host to some upstreams.
//! - **In the gateway, the route is chosen before any layer runs**: a rewrite changes what the
//!   route's target receives, never which route serves the request. With `strip_prefix` (or a
//!   built-in app, which sees paths below its route's prefix), the prefix is removed from the
//!   rewritten path when it still starts with it; a path moved out from under the prefix is sent
//!   whole.
//! - Facts: [`Fact::CanFail`] (the `400`), not [`Fact::ShortCircuits`]: it answers by itself only
//!   when a rule meets a path it cannot make a path of, which is a configuration mistake to fix.

use std::borrow::Cow;

use http::StatusCode;
use http::uri::{PathAndQuery, Uri};

use crate::check::{Fact, Facts};
use crate::http::path::{EscapedSlashes, Normalized, PathPolicy};
use crate::http::{Next, Refusal, Request, Response, response};
use crate::middleware::ConfigError;
use crate::middleware::path_rule::{CompiledRule, PathRule, Targets, keep_on_this_host};
use crate::stack::Middleware;

#[cfg(feature = "config")]
mod config;
#[cfg(test)]
mod tests;

#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub use config::{RewriteConfig, RewriteRuleConfig};

/// The request's URI before a [`Rewrite`] changed it, in the request's extensions (set by the
/// outermost rewrite that changed it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginalUri(pub Uri);

/// The `rewrite` middleware. Build it with [`Rewrite::builder`]; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Rewrite {
    rules: Vec<CompiledRule>,
    policy: PathPolicy,
}

/// The typed configuration of a [`Rewrite`] layer; [`RewriteBuilder::build`] validates it, and the
/// gateway's `kind = "rewrite"` tables go through the same function.
#[derive(Clone, Debug)]
pub struct RewriteBuilder {
    rules: Vec<PathRule>,
    policy: PathPolicy,
}

impl Default for RewriteBuilder {
    fn default() -> Self {
        RewriteBuilder { rules: Vec::new(), policy: PathPolicy::new().escaped_slashes(EscapedSlashes::Keep) }
    }
}

impl RewriteBuilder {
    /// Adds a rule, tried after those already added. Its target must be a path.
    pub fn rule(mut self, rule: PathRule) -> Self {
        self.rules.push(rule);
        self
    }

    /// How rewritten paths are normalised (default [`PathPolicy::new`] with
    /// [`EscapedSlashes::Keep`]). [`EscapedSlashes::Redirect`] is refused: a rewrite cannot send
    /// the client anywhere.
    pub fn path_policy(mut self, policy: PathPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Validates and compiles the rules: at least one, each with a valid regex (or prefix) and a
    /// path target. Errors name the TOML key `rules`, with the rule's number.
    pub fn build(self) -> Result<Rewrite, ConfigError> {
        if self.rules.is_empty() {
            return Err(ConfigError::field("rules", "expected at least one rule"));
        }
        if self.policy.escaped_slash_action() == EscapedSlashes::Redirect {
            return Err(ConfigError::new(
                "a rewrite's path policy cannot redirect escaped slashes: keep or reject them",
            ));
        }
        let rules = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| CompiledRule::compile(rule, i + 1, Targets::Paths))
            .collect::<Result<_, _>>()?;
        Ok(Rewrite { rules, policy: self.policy })
    }
}

impl Rewrite {
    /// Starts a [`RewriteBuilder`] with no rules (at least one is required).
    pub fn builder() -> RewriteBuilder {
        RewriteBuilder::default()
    }

    /// The rewritten URI, or why the target cannot be a path.
    fn rewritten(&self, uri: &Uri, target: &str) -> Result<Uri, &'static str> {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, uri.query()),
        };
        let mut path = match self.policy.normalize(path) {
            Ok(Normalized::Path(path)) => path.into_owned(),
            Ok(Normalized::Redirect(_)) => return Err(UNREWRITABLE),
            Err(e) => return Err(e.detail()),
        };
        // Without merged slashes, the policy keeps a leading `//`.
        keep_on_this_host(&mut path);
        if let Some(query) = query {
            path.push('?');
            path.push_str(query);
        }
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(PathAndQuery::try_from(path).map_err(|_| UNREWRITABLE)?);
        Uri::from_parts(parts).map_err(|_| UNREWRITABLE)
    }
}

const UNREWRITABLE: &str = "The request's path cannot be rewritten.";

impl Middleware<Request, Response> for Rewrite {
    async fn handle(&self, mut req: Request, next: Next) -> Response {
        let applied = self.rules.iter().find_map(|rule| rule.apply(req.uri().path()).map(|target| (rule, target)));
        if let Some((rule, target)) = applied {
            match self.rewritten(req.uri(), &target) {
                Ok(uri) => {
                    let original = std::mem::replace(req.uri_mut(), uri);
                    if req.extensions().get::<OriginalUri>().is_none() {
                        req.extensions_mut().insert(OriginalUri(original));
                    }
                }
                Err(detail) => {
                    let reason: Cow<'static, str> =
                        format!("rewrite refused: the target of {}: {detail}", rule.label()).into();
                    return Refusal::mark(response::generated_error(StatusCode::BAD_REQUEST, detail), reason);
                }
            }
        }
        next.run(req).await
    }

    fn kind(&self) -> &'static str {
        "rewrite"
    }

    fn facts(&self) -> Facts {
        Facts::of(&[Fact::CanFail])
    }
}
