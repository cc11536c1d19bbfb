//! `headers`: rules that set, append and remove request headers (on the way in) and response
//! headers (on the way out), with values made from the request: `{user}`, `{route}`,
//! `{request_id}`, `{client_ip}`, `{method}`, `{path}`, `{host}`.
//!
//! ```
//! use http::HeaderName;
//! use strata::http::{Request, Response, Stack};
//! use strata::middleware::Headers;
//!
//! let headers = Headers::builder()
//!     .request_set(HeaderName::from_static("x-forwarded-user"), "{user}")
//!     .request_remove(HeaderName::from_static("x-debug"))
//!     .response_set(HeaderName::from_static("x-served-by"), "strata {route}")
//!     .response_remove(http::header::SERVER)
//!     .build()?;
//! let service = Stack::new().with(headers).serve(|_req: Request| async { Response::new("hello".into()) });
//! # let _ = service;
//! # Ok::<(), strata::middleware::ConfigError>(())
//! ```
//!
//! - **Order.** Each side applies its `remove` rules, then `set` (replacing every value the
//!   header had), then `append` (one more value). Request rules run before the layers inside see
//!   the request; response rules run on every response that comes back from them, including the
//!   `401`, `429` or `500` an inner layer made by itself.
//! - **Placeholders** are parsed once, when the layer is built; an unknown one is a build error
//!   naming the rule. `{{` writes a literal `{`. A placeholder with no value (no authenticated
//!   user, no request id) renders as nothing, and a value that renders as nothing at all is not
//!   sent: `set` then *removes* the header, so a client can never pass its own `x-forwarded-user`
//!   through a rule meant to carry the authenticated one.
//! - **Values that are not header values** (a user name with a line break, say) are skipped, the
//!   rest of the rules still applied: never a panic, never a broken header. The first one is
//!   logged, and [`Headers::skipped_values`] counts them all.
//! - **`{user}` in response rules** reads the user from the response (an authentication layer
//!   copies it there) and else from the request, so it works with the layer outside or inside the
//!   authentication layer; only request rules need the layer inside it, and only they make the
//!   layer declare [`Fact::ReadsUser`].
//! - **`{route}`** is the [`MatchedRoute`](crate::http::MatchedRoute) the gateway's router puts in
//!   the request; empty for requests no route matched.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use http::{HeaderMap, HeaderName, header};

use crate::check::{Fact, Facts};
use crate::http::{AuthenticatedUser, Next, Request, Response};
use crate::middleware::ConfigError;
use crate::stack::Middleware;

#[cfg(feature = "config")]
mod config;
mod template;
#[cfg(test)]
mod tests;

#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub use config::{HeaderRulesConfig, HeadersConfig};
use template::{Captured, Placeholder, Rendered, Template, Uses};

/// The `headers` layer. Build it with [`Headers::builder`] (or, with the `config` feature,
/// `Headers::from_config`).
#[derive(Clone, Debug)]
pub struct Headers {
    request: Rules,
    response: Rules,
    skipped: Arc<Skipped>,
}

/// The rules of one side, in the order they apply.
#[derive(Clone, Debug, Default)]
struct Rules {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, Template)>,
    append: Vec<(HeaderName, Template)>,
    uses: Uses,
}

/// Rendered values that were not header values.
#[derive(Debug, Default)]
struct Skipped {
    count: AtomicU64,
    logged: AtomicBool,
}

/// Which side of the onion a rule acts on (its TOML table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Request,
    Response,
}

impl Side {
    fn key(self) -> &'static str {
        match self {
            Side::Request => "request",
            Side::Response => "response",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Set,
    Append,
    Remove,
}

/// The typed rules of a [`Headers`] layer; [`HeadersBuilder::build`] parses and checks their
/// values, and the gateway's `kind = "headers"` tables go through the same function.
#[derive(Clone, Debug, Default)]
pub struct HeadersBuilder {
    rules: Vec<(Side, Action, HeaderName, String)>,
}

impl HeadersBuilder {
    fn rule(mut self, side: Side, action: Action, name: HeaderName, value: impl Into<String>) -> Self {
        self.rules.push((side, action, name, value.into()));
        self
    }

    /// Sets request header `name` to `template` (replacing what the client sent).
    pub fn request_set(self, name: HeaderName, template: impl Into<String>) -> Self {
        self.rule(Side::Request, Action::Set, name, template)
    }

    /// Adds one more value of request header `name`.
    pub fn request_append(self, name: HeaderName, template: impl Into<String>) -> Self {
        self.rule(Side::Request, Action::Append, name, template)
    }

    /// Removes request header `name`.
    pub fn request_remove(self, name: HeaderName) -> Self {
        self.rule(Side::Request, Action::Remove, name, "")
    }

    /// Sets response header `name` to `template` (replacing what the app sent).
    pub fn response_set(self, name: HeaderName, template: impl Into<String>) -> Self {
        self.rule(Side::Response, Action::Set, name, template)
    }

    /// Adds one more value of response header `name`.
    pub fn response_append(self, name: HeaderName, template: impl Into<String>) -> Self {
        self.rule(Side::Response, Action::Append, name, template)
    }

    /// Removes response header `name`.
    pub fn response_remove(self, name: HeaderName) -> Self {
        self.rule(Side::Response, Action::Remove, name, "")
    }

    /// Parses every template and checks the rules.
    ///
    /// Fails when there is no rule, on an unknown placeholder, an unclosed `{`, literal text that
    /// is not a header value, an empty value (a removal is `remove`), and on setting
    /// `content-length` or `transfer-encoding`, which describe the body's framing. The error
    /// names the side's TOML key (`request` or `response`) and, in its message, the rule.
    pub fn build(self) -> Result<Headers, ConfigError> {
        if self.rules.is_empty() {
            return Err(ConfigError::new("expected at least one rule in `request` or `response`"));
        }
        let mut request = Rules::default();
        let mut response = Rules::default();
        for (side, action, name, value) in self.rules {
            let rules = if side == Side::Request { &mut request } else { &mut response };
            let verb = match action {
                Action::Set => "set",
                Action::Append => "append",
                Action::Remove => {
                    rules.remove.push(name);
                    continue;
                }
            };
            let at = |message: String| ConfigError::field(side.key(), format!("{verb}.\"{name}\": {message}"));
            if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
                return Err(at(
                    "describes the body's framing, which the server owns: a wrong value corrupts the connection"
                        .to_string(),
                ));
            }
            let template = Template::parse(&value).map_err(at)?;
            rules.uses = rules.uses.union(template.uses());
            match action {
                Action::Set => rules.set.push((name, template)),
                _ => rules.append.push((name, template)),
            }
        }
        Ok(Headers { request, response, skipped: Arc::default() })
    }
}

impl Rules {
    fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.append.is_empty()
    }

    fn apply(&self, headers: &mut HeaderMap, values: &Captured, user: Option<&str>, skipped: &Skipped) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, template) in &self.set {
            match template.render(values, user) {
                Rendered::Value(value) => {
                    headers.insert(name, value);
                }
                // Nothing to carry: the header goes, so no client-sent value passes for ours.
                Rendered::Empty => {
                    headers.remove(name);
                }
                Rendered::Invalid => skipped.record(name),
            }
        }
        for (name, template) in &self.append {
            match template.render(values, user) {
                Rendered::Value(value) => {
                    headers.append(name, value);
                }
                Rendered::Empty => {}
                Rendered::Invalid => skipped.record(name),
            }
        }
    }
}

impl Skipped {
    fn record(&self, name: &HeaderName) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if !self.logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                header = %name,
                "headers: a rule's value rendered to text that is not a header value (a line break or control character from the request); the rule was skipped, and later ones are only counted"
            );
        }
    }
}

impl Headers {
    /// Starts an empty [`HeadersBuilder`].
    pub fn builder() -> HeadersBuilder {
        HeadersBuilder::default()
    }

    /// How many rule values were skipped because they rendered to text that is not a header value.
    pub fn skipped_values(&self) -> u64 {
        self.skipped.count.load(Ordering::Relaxed)
    }
}

impl Middleware<Request, Response> for Headers {
    async fn handle(&self, mut req: Request, next: Next) -> Response {
        let uses = self.request.uses.union(self.response.uses);
        let values = if uses.is_empty() { Captured::default() } else { Captured::from_request(&req, uses) };
        self.request.apply(req.headers_mut(), &values, None, &self.skipped);
        let res = next.run(req).await;
        if self.response.is_empty() {
            return res;
        }
        let (mut parts, body) = res.into_parts();
        let user = parts.extensions.get::<AuthenticatedUser>().map(|u| &*u.0);
        self.response.apply(&mut parts.headers, &values, user, &self.skipped);
        Response::from_parts(parts, body)
    }

    fn kind(&self) -> &'static str {
        "headers"
    }

    fn facts(&self) -> Facts {
        let mut facts = Facts::NONE;
        if !self.response.is_empty() {
            facts = facts.with(Fact::DecoratesResponses);
        }
        let all = self.request.uses.union(self.response.uses);
        if all.has(Placeholder::RequestId) {
            facts = facts.with(Fact::ReadsRequestId);
        }
        if all.has(Placeholder::ClientIp) {
            facts = facts.with(Fact::ReadsClientAddress);
        }
        if all.has(Placeholder::Route) {
            facts = facts.with(Fact::ReadsRoute);
        }
        // Response rules also find the user in the response: only request rules need the
        // authentication layer outside.
        if self.request.uses.has(Placeholder::User) {
            facts = facts.with(Fact::ReadsUser);
        }
        facts
    }
}
