//! `redirect`: answers requests for moved paths, plain-HTTP requests and paths with the wrong
//! trailing slash with a redirect, without calling the layers inside it.
//!
//! ```
//! use http::StatusCode;
//! use strata::http::{Request, Response, Stack};
//! use strata::middleware::{PathRule, Redirect, TrailingSlash};
//!
//! let redirect = Redirect::builder()
//!     .rule(PathRule::regex(r"^/blog/(\d{4})/(.*)$", "/posts/$1-$2"))
//!     .rule_with_status(PathRule::prefix("/docs", "https://docs.example.com"), StatusCode::FOUND)
//!     .https(true)
//!     .trailing_slash(TrailingSlash::Add)
//!     .build()?;
//! let service = Stack::new().with(redirect).serve(|_req: Request| async { Response::new("here".into()) });
//! # let _ = service;
//! # Ok::<(), strata::middleware::ConfigError>(())
//! ```
//!
//! For each request, in order:
//!
//! 1. **Rules** ([`PathRule`]: a regex with `$1`/`${name}` groups, or a prefix) are tried in
//!    order against the path; the first that matches gives the `Location`. Each rule has the
//!    layer's status unless it has its own.
//! 2. Else the **trailing-slash policy** ([`TrailingSlash`]) may give one: `/a` → `/a/` (`Add`,
//!    except for a last segment with a `.`, a file) or `/a/` → `/a` (`Remove`).
//! 3. With [`https`](RedirectBuilder::https), a request that came over plain HTTP is sent to
//!    `https://HOST[:https_port]` followed by the path steps 1–2 chose, or its own: one redirect,
//!    not two. The host is the request's (`Host`, or the HTTP/2 authority) without its port. A
//!    rule's absolute target is used as written.
//!
//! The query is kept, unless a rule's target has its own. A relative target that equals the
//! request's own path and query (a rule that maps a path to itself) is not answered: the request
//! goes on rather than loop.
//!
//! # Decisions worth knowing
//!
//! - **`308 Permanent Redirect` by default.** Clients repeat the request with its method and body
//!   (a `301` or `302` turns a `POST` into a `GET` in browsers, and the form data is lost), and it
//!   is permanent, so search engines move their index and caches keep it. For a move that may be
//!   undone, give `302`/`307` — browsers cache a `301`/`308` until the user clears them.
//! - **No open redirect.** Targets are checked when the layer is built: a path starting with one
//!   `/`, or an absolute URL whose host is written out before any group. A group that would start
//!   the path with `//` or `/\` has those slashes merged into one. Targets hold URI characters
//!   only, and groups come from the request's path, which never holds a CR or LF.
//! - **Plain or TLS** is [`ConnectionInfo::secure`] (the layer declares
//!   [`Fact::ReadsClientAddress`] so that servers set it), else the request URI's scheme (HTTP/2).
//!   A request with neither is taken as plain: behind a proxy that terminates TLS, redirect to
//!   HTTPS there instead, or every request would be redirected.
//! - A plain-HTTP request without a usable host (no `Host`, or one with a user part) gets `400`:
//!   passing it on would serve over HTTP what was meant for HTTPS only.

use http::header::HOST;
use http::{HeaderValue, StatusCode, header};

use crate::check::{Fact, Facts};
use crate::http::{ConnectionInfo, Next, Refusal, Request, Response, response};
use crate::middleware::path_rule::CompiledRule;
use crate::stack::Middleware;

#[cfg(doc)]
use crate::middleware::PathRule;

mod builder;
#[cfg(feature = "config")]
mod config;
#[cfg(test)]
mod tests;

pub use builder::RedirectBuilder;
#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub use config::{RedirectConfig, RedirectRuleConfig};

/// What to do with a path's trailing slash when no rule matched it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "config", derive(serde::Deserialize), serde(rename_all = "lowercase"))]
pub enum TrailingSlash {
    /// Redirect `/a` to `/a/`, unless the last segment has a `.` (`/app.js`, `/v1.2`): a file.
    Add,
    /// Redirect `/a/` (and `/a//`) to `/a`. `/` stays.
    Remove,
    /// Leave paths as they are (the default).
    #[default]
    Ignore,
}

impl TrailingSlash {
    /// The path with the policy applied, when it changes.
    fn apply(self, path: &str) -> Option<String> {
        match self {
            TrailingSlash::Ignore => None,
            TrailingSlash::Add => {
                let last = &path[path.rfind('/').map_or(0, |i| i + 1)..];
                (!path.ends_with('/') && !last.contains('.')).then(|| format!("{path}/"))
            }
            TrailingSlash::Remove => {
                let trimmed = path.trim_end_matches('/');
                (trimmed.len() != path.len() && !trimmed.is_empty()).then(|| trimmed.to_string())
            }
        }
    }
}

/// The `redirect` middleware. Build it with [`Redirect::builder`]; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Redirect {
    rules: Vec<(CompiledRule, StatusCode)>,
    status: StatusCode,
    /// `Some(port)` when plain-HTTP requests go to HTTPS; the port `None` is 443.
    https: Option<Option<u16>>,
    trailing_slash: TrailingSlash,
}

/// What one request gets.
enum Decision {
    Pass,
    Redirect { status: StatusCode, location: HeaderValue, reason: String },
    Refuse(&'static str),
}

const NO_HOST: &str = "The request has no host to redirect it to over HTTPS.";
const UNREDIRECTABLE: &str = "The request's path cannot be redirected.";

impl Redirect {
    /// Starts a [`RedirectBuilder`]: no rules, status `308`, no HTTPS redirect, trailing slashes
    /// ignored.
    pub fn builder() -> RedirectBuilder {
        RedirectBuilder::default()
    }

    fn decide(&self, req: &Request) -> Decision {
        let path = req.uri().path();
        let to_https = self.https.filter(|_| !is_secure(req));
        let mut found = None;
        for (rule, status) in &self.rules {
            if let Some(target) = rule.apply(path) {
                found = Some((target, rule.is_absolute(), *status, rule.label().to_string()));
                break;
            }
        }
        if found.is_none()
            && let Some(target) = self.trailing_slash.apply(path)
        {
            let what = if target.len() > path.len() { "added" } else { "removed" };
            found = Some((target, false, self.status, format!("trailing slash {what}")));
        }
        if found.is_none() && to_https.is_some() {
            found = Some((path.to_string(), false, self.status, "to HTTPS".to_string()));
        }
        let Some((mut target, absolute, status, why)) = found else { return Decision::Pass };
        if !target.contains('?')
            && let Some(query) = req.uri().query()
        {
            target.push('?');
            target.push_str(query);
        }
        let location = match (absolute, to_https) {
            (true, _) => target,
            (false, Some(port)) => match https_origin(req, port) {
                Some(mut origin) => {
                    origin.push_str(&target);
                    origin
                }
                None => return Decision::Refuse(NO_HOST),
            },
            (false, None) => {
                if req.uri().path_and_query().is_some_and(|pq| pq.as_str() == target) {
                    return Decision::Pass;
                }
                target
            }
        };
        match HeaderValue::try_from(location) {
            Ok(location) => Decision::Redirect { status, location, reason: format!("redirected: {why}") },
            Err(_) => Decision::Refuse(UNREDIRECTABLE),
        }
    }
}

/// Whether the request came over TLS, as far as this server can tell.
fn is_secure(req: &Request) -> bool {
    match req.extensions().get::<ConnectionInfo>() {
        Some(info) => info.secure,
        None => req.uri().scheme() == Some(&http::uri::Scheme::HTTPS),
    }
}

/// `https://HOST[:port]` from the request's host, without its port; `None` without a usable one.
fn https_origin(req: &Request, port: Option<u16>) -> Option<String> {
    let raw = match req.headers().get(HOST) {
        Some(host) => host.as_bytes(),
        None => req.uri().authority()?.as_str().as_bytes(),
    };
    let authority = http::uri::Authority::try_from(raw).ok()?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return None;
    }
    let mut origin = String::with_capacity(authority.as_str().len() + 16);
    origin.push_str("https://");
    origin.push_str(authority.host());
    if let Some(port) = port.filter(|p| *p != 443) {
        origin.push(':');
        origin.push_str(&port.to_string());
    }
    Some(origin)
}

/// The body of a redirect (clients follow the `Location`; a person reading it sees the status).
fn redirect_body(status: StatusCode) -> &'static str {
    match status.as_u16() {
        301 => "301 Moved Permanently\n",
        302 => "302 Found\n",
        307 => "307 Temporary Redirect\n",
        _ => "308 Permanent Redirect\n",
    }
}

impl Middleware<Request, Response> for Redirect {
    async fn handle(&self, req: Request, next: Next) -> Response {
        match self.decide(&req) {
            Decision::Pass => next.run(req).await,
            Decision::Redirect { status, location, reason } => {
                let mut res = response::text(status, redirect_body(status));
                res.headers_mut().insert(header::LOCATION, location);
                Refusal::mark(res, reason)
            }
            Decision::Refuse(detail) => Refusal::mark(
                response::generated_error(StatusCode::BAD_REQUEST, detail),
                format!("redirect refused: {detail}"),
            ),
        }
    }

    fn kind(&self) -> &'static str {
        "redirect"
    }

    fn facts(&self) -> Facts {
        let facts = Facts::of(&[Fact::ShortCircuits, Fact::Redirects]);
        // Plain or TLS is in the ConnectionInfo, which servers set only for stacks that read it.
        if self.https.is_some() { facts.with(Fact::ReadsClientAddress) } else { facts }
    }
}
