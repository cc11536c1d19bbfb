//! Header value templates: `"{user} via {route}"`, parsed once at build into literal and
//! placeholder segments, rendered per request from the values a [`Captured`] holds.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Uri, header};

use crate::http::{AssignedRequestId, AuthenticatedUser, ConnectionInfo, MatchedRoute, Request};

/// One value a template can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Placeholder {
    /// `{request_id}`: the id a `request_id` layer outside assigned.
    RequestId,
    /// `{client_ip}`: the client's address, resolved through trusted proxies.
    ClientIp,
    /// `{route}`: the route the router picked.
    Route,
    /// `{user}`: the authenticated user.
    User,
    /// `{method}`.
    Method,
    /// `{path}`: the request's path, without the query.
    Path,
    /// `{host}`: the `Host` header (or the URI's authority, HTTP/2), port included.
    Host,
}

impl Placeholder {
    const ALL: [(&'static str, Placeholder); 7] = [
        ("request_id", Placeholder::RequestId),
        ("client_ip", Placeholder::ClientIp),
        ("route", Placeholder::Route),
        ("user", Placeholder::User),
        ("method", Placeholder::Method),
        ("path", Placeholder::Path),
        ("host", Placeholder::Host),
    ];

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// The set of placeholders some templates use: what a request must be captured for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Uses(u8);

impl Uses {
    pub(super) fn has(self, p: Placeholder) -> bool {
        self.0 & p.bit() != 0
    }

    pub(super) fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub(super) fn union(self, other: Uses) -> Uses {
        Uses(self.0 | other.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Value(Placeholder),
}

/// A parsed header value template.
#[derive(Clone, Debug)]
pub(super) struct Template {
    segments: Vec<Segment>,
    /// The value itself, for a template without placeholders.
    fixed: Option<HeaderValue>,
    uses: Uses,
}

/// What rendering a template gave.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Rendered {
    /// A header value.
    Value(HeaderValue),
    /// Nothing: every placeholder was empty (no user, no request id) and there was no literal text.
    Empty,
    /// Text that is not a header value (a user name with a line break): the rule is skipped.
    Invalid,
}

impl Template {
    /// Parses `text`: `{name}` for a placeholder, `{{` for a literal `{` (a lone `}` is literal).
    /// The error says what is wrong, for the caller to prefix with the rule's key.
    pub(super) fn parse(text: &str) -> Result<Template, String> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            literal.push_str(&rest[..open]);
            rest = &rest[open + 1..];
            if let Some(after) = rest.strip_prefix('{') {
                literal.push('{');
                rest = after;
                continue;
            }
            let Some(close) = rest.find('}') else {
                return Err(format!("`{text}`: a `{{` without its `}}` (write `{{{{` for a literal brace)"));
            };
            let name = &rest[..close];
            let Some((_, placeholder)) = Placeholder::ALL.iter().find(|(n, _)| *n == name) else {
                let known: Vec<String> = Placeholder::ALL.iter().map(|(n, _)| format!("{{{n}}}")).collect();
                return Err(format!(
                    "`{text}`: unknown placeholder `{{{name}}}`, expected one of {} (or `{{{{` for a literal brace)",
                    known.join(", ")
                ));
            };
            if !literal.is_empty() {
                segments.push(Segment::Literal(std::mem::take(&mut literal)));
            }
            segments.push(Segment::Value(*placeholder));
            rest = &rest[close + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        for segment in &segments {
            if let Segment::Literal(text) = segment
                && HeaderValue::from_str(text).is_err()
            {
                return Err(format!(
                    "`{text}` is not a valid header value: it contains a line break, a control or a non-ASCII character"
                ));
            }
        }
        let uses = Uses(segments.iter().fold(0, |bits, s| match s {
            Segment::Value(p) => bits | p.bit(),
            Segment::Literal(_) => bits,
        }));
        let fixed = match segments.as_slice() {
            [] => return Err("an empty value: to take a header away, use `remove`".to_string()),
            [Segment::Literal(text)] => HeaderValue::from_str(text).ok(),
            _ => None,
        };
        Ok(Template { segments, fixed, uses })
    }

    /// The placeholders the template names.
    pub(super) fn uses(&self) -> Uses {
        self.uses
    }

    /// The value for one request; `user`, when given, is the user of a response (an
    /// authentication layer inside this one sets it there on the way out).
    pub(super) fn render(&self, values: &Captured, user: Option<&str>) -> Rendered {
        if let Some(fixed) = &self.fixed {
            return Rendered::Value(fixed.clone());
        }
        let mut text = String::with_capacity(64);
        for segment in &self.segments {
            match segment {
                Segment::Literal(literal) => text.push_str(literal),
                Segment::Value(p) => values.write(*p, user, &mut text),
            }
        }
        if text.is_empty() {
            return Rendered::Empty;
        }
        match HeaderValue::from_maybe_shared(Bytes::from(text)) {
            Ok(value) => Rendered::Value(value),
            Err(_) => Rendered::Invalid,
        }
    }
}

/// The values of one request that its templates name, taken before the request moves inward.
/// Each is cheap to keep: reference-counted text, a copied address, a method.
#[derive(Debug, Default)]
pub(super) struct Captured {
    request_id: Option<HeaderValue>,
    client_ip: Option<IpAddr>,
    route: Option<Arc<str>>,
    user: Option<Arc<str>>,
    method: Option<Method>,
    uri: Option<Uri>,
    host: Option<HeaderValue>,
}

impl Captured {
    /// The values of `req` that `uses` names.
    pub(super) fn from_request(req: &Request, uses: Uses) -> Captured {
        let ext = req.extensions();
        let mut out = Captured::default();
        if uses.has(Placeholder::RequestId) {
            out.request_id = ext.get::<AssignedRequestId>().map(|id| id.0.clone());
        }
        if uses.has(Placeholder::ClientIp) {
            out.client_ip = ext.get::<ConnectionInfo>().map(|c| c.client);
        }
        if uses.has(Placeholder::Route) {
            out.route = ext.get::<MatchedRoute>().map(|r| r.0.clone());
        }
        if uses.has(Placeholder::User) {
            out.user = ext.get::<AuthenticatedUser>().map(|u| u.0.clone());
        }
        if uses.has(Placeholder::Method) {
            out.method = Some(req.method().clone());
        }
        if uses.has(Placeholder::Path) {
            out.uri = Some(req.uri().clone());
        }
        if uses.has(Placeholder::Host) {
            out.host = req
                .headers()
                .get(header::HOST)
                .cloned()
                .or_else(|| req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
        }
        out
    }

    fn write(&self, p: Placeholder, user: Option<&str>, out: &mut String) {
        match p {
            Placeholder::RequestId => out.push_str(text_of(self.request_id.as_ref())),
            Placeholder::ClientIp => {
                if let Some(ip) = self.client_ip {
                    let _ = write!(out, "{ip}");
                }
            }
            Placeholder::Route => out.push_str(self.route.as_deref().unwrap_or("")),
            Placeholder::User => out.push_str(user.or(self.user.as_deref()).unwrap_or("")),
            Placeholder::Method => out.push_str(self.method.as_ref().map_or("", Method::as_str)),
            Placeholder::Path => out.push_str(self.uri.as_ref().map_or("", Uri::path)),
            Placeholder::Host => out.push_str(text_of(self.host.as_ref())),
        }
    }
}

/// A header value's text; bytes that are not UTF-8 text render as nothing.
fn text_of(value: Option<&HeaderValue>) -> &str {
    value.and_then(|v| v.to_str().ok()).unwrap_or("")
}
