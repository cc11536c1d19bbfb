//! `cors`: Cross-Origin Resource Sharing, as the [Fetch standard] defines it.
//!
//! ```
//! use std::time::Duration;
//!
//! use http::{HeaderValue, Method, header};
//! use strata::middleware::cors::Cors;
//!
//! let cors = Cors::builder()
//!     .allow_origin(HeaderValue::from_static("https://app.example.com"))
//!     .allow_origin(HeaderValue::from_static("https://*.preview.example.com"))
//!     .allow_methods([Method::GET, Method::POST, Method::DELETE])
//!     .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
//!     .allow_credentials(true)
//!     .max_age(Duration::from_secs(600))
//!     .build()
//!     .expect("a valid CORS configuration");
//! let stack = strata::http::Stack::new().with(cors);
//! # let _ = stack;
//! ```
//!
//! A browser lets a script on one origin read a response from another only when the response says
//! so with `Access-Control-*` headers. For "non-simple" requests it first sends a *preflight*: an
//! `OPTIONS` request carrying `Origin` and `Access-Control-Request-Method` (and maybe
//! `Access-Control-Request-Headers`). This layer:
//!
//! - answers preflights itself (`204`), so they never reach inner layers: an authentication layer
//!   inside it would reject them, since browsers never send credentials on a preflight;
//! - decorates every other response that comes back from `next.run` — including a `401` or `429` an
//!   inner layer made and the `500` a panicking app turned into — so scripts can read errors too;
//! - sets `Vary` exactly when the response depends on a request header, so shared caches do not
//!   serve one origin's answer to another.
//!
//! # Decisions worth knowing
//!
//! - **A preflight from a disallowed origin gets `403 Forbidden` with no CORS headers.** Either a
//!   403 or a 204 without CORS headers makes the browser block the request; the 403 also fails the
//!   preflight on its status alone (the Fetch standard requires an ok status), and it is what shows
//!   up, distinctly, in access logs, metrics and the browser's network panel. A preflight from an
//!   allowed origin always gets the configured lists and the browser decides whether the requested
//!   method and headers fit, as the standard intends.
//! - **Any origin** (`allow_any_origin`, `"*"` in TOML) without credentials is answered with a
//!   literal `*` (cacheable, no `Vary: Origin`). With credentials it is a build error: browsers
//!   refuse a literal `*` on credentialed requests, and echoing every origin would let any site
//!   make credentialed calls.
//! - **Mirrored methods and headers** (`mirror_request_methods`, `mirror_request_headers`; `"*"`
//!   in TOML) echo the preflight's `Access-Control-Request-Method` / `-Headers` rather than
//!   sending a literal `*`: a literal `*` is ignored on credentialed requests and never covers
//!   `Authorization`, a mirror works in every mode. Mirrored preflight responses carry `Vary` on
//!   the mirrored request header.
//! - **All exposed headers** (`expose_all_headers`, `expose_headers = "*"`) are sent as a literal
//!   `*` (all headers, for non-credentialed requests); with credentials it is a build error,
//!   because browsers would read it as a header named `*`. List the headers instead.
//! - The layer owns the CORS headers of responses from allowed origins: it *replaces* any an inner
//!   layer set, so a browser never sees two `Access-Control-Allow-Origin` values (which it rejects).
//!
//! [Fetch standard]: https://fetch.spec.whatwg.org/#http-cors-protocol

use std::borrow::Cow;

use http::{HeaderName, HeaderValue, Method, StatusCode, header};

use crate::check::{Fact, Facts};
use crate::http::headers::add_vary;
use crate::http::{Next, Refusal, Request, Response, response};
use crate::stack::Middleware;

mod builder;
#[cfg(feature = "config")]
mod config;
mod lists;
mod origins;
#[cfg(test)]
mod tests;

pub use builder::CorsBuilder;
#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub use config::CorsConfig;
use lists::mirror;
use origins::SubdomainPattern;

/// The request header (Private Network Access) a browser adds to a preflight towards a more
/// private network.
const REQUEST_PRIVATE_NETWORK: HeaderName = HeaderName::from_static("access-control-request-private-network");
/// The response header that allows it.
const ALLOW_PRIVATE_NETWORK: HeaderName = HeaderName::from_static("access-control-allow-private-network");

/// The CORS layer. Build it with [`Cors::builder`] (or, with the `config` feature, `Cors::from_config`).
#[derive(Clone, Debug)]
pub struct Cors {
    origins: AllowedOrigins,
    methods: Allowed,
    headers: Allowed,
    expose_headers: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
    private_network: bool,
    /// Whether responses depend on the request's `Origin` (everything but a plain `*`).
    vary_origin: bool,
    /// The whole `Vary` of a preflight answer, precomputed.
    preflight_vary: Option<HeaderValue>,
}

#[derive(Clone, Debug)]
enum AllowedOrigins {
    Any,
    List { exact: Vec<String>, patterns: Vec<SubdomainPattern> },
}

/// A method or header list: a precomputed header value (`None` when empty), or a mirror of the
/// preflight's request header.
#[derive(Clone, Debug)]
enum Allowed {
    List(Option<HeaderValue>),
    Mirror,
}

impl Cors {
    /// Starts a [`CorsBuilder`] with the defaults and no origin.
    pub fn builder() -> CorsBuilder {
        CorsBuilder::default()
    }

    /// Whether `origin` (an `Origin` header value) may read responses.
    pub fn allows_origin(&self, origin: &HeaderValue) -> bool {
        let Ok(origin) = origin.to_str() else { return false };
        match &self.origins {
            AllowedOrigins::Any => true,
            AllowedOrigins::List { exact, patterns } => {
                exact.iter().any(|o| o.eq_ignore_ascii_case(origin)) || patterns.iter().any(|p| p.matches(origin))
            }
        }
    }

    /// The `Access-Control-Allow-Origin` value for an allowed origin.
    fn allow_origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        match self.origins {
            AllowedOrigins::Any if !self.credentials => HeaderValue::from_static("*"),
            // Echo the browser's own bytes: it compares them exactly.
            _ => origin.clone(),
        }
    }

    fn preflight(&self, req: &Request, origin: &HeaderValue) -> Response {
        if !self.allows_origin(origin) {
            let mut res = response::text(StatusCode::FORBIDDEN, "CORS preflight rejected: origin not allowed\n");
            if self.vary_origin {
                res.headers_mut().insert(header::VARY, HeaderValue::from_static("origin"));
            }
            let reason = format!(
                "preflight refused: origin {} not in allow_origins",
                String::from_utf8_lossy(origin.as_bytes())
            );
            return Refusal::mark(res, reason);
        }

        let mut res = response::status(StatusCode::NO_CONTENT);
        let h = res.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin_value(origin));
        if self.credentials {
            h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        match &self.methods {
            Allowed::List(Some(v)) => {
                h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v.clone());
            }
            Allowed::List(None) => {}
            Allowed::Mirror => {
                if let Some(v) = mirror(req.headers(), &header::ACCESS_CONTROL_REQUEST_METHOD) {
                    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
                }
            }
        }
        match &self.headers {
            Allowed::List(Some(v)) => {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
            }
            Allowed::List(None) => {}
            Allowed::Mirror => {
                if let Some(v) = mirror(req.headers(), &header::ACCESS_CONTROL_REQUEST_HEADERS) {
                    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
                }
            }
        }
        if let Some(v) = &self.max_age {
            h.insert(header::ACCESS_CONTROL_MAX_AGE, v.clone());
        }
        if self.private_network
            && req.headers().get(&REQUEST_PRIVATE_NETWORK).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
        {
            h.insert(ALLOW_PRIVATE_NETWORK, HeaderValue::from_static("true"));
        }
        if let Some(v) = &self.preflight_vary {
            h.insert(header::VARY, v.clone());
        }
        let reason = self.preflight_reason(req);
        Refusal::mark(res, reason)
    }

    /// Why a preflight from an allowed origin was answered, and whether the browser will go on:
    /// it checks the method against `Access-Control-Allow-Methods` itself.
    fn preflight_reason(&self, req: &Request) -> Cow<'static, str> {
        let requested =
            req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD).map(|m| String::from_utf8_lossy(m.as_bytes()));
        let requested = requested.as_deref().unwrap_or("");
        // GET, HEAD and POST are CORS-safelisted: a browser never needs them listed.
        let safelisted = ["GET", "HEAD", "POST"].contains(&requested);
        let listed = match &self.methods {
            Allowed::Mirror => true,
            Allowed::List(None) => false,
            Allowed::List(Some(v)) => {
                v.to_str().is_ok_and(|v| v.split(',').any(|m| m.trim() == requested || m.trim() == "*"))
            }
        };
        if safelisted || listed {
            // The usual answer, without an allocation.
            Cow::Borrowed("preflight answered: origin and method allowed")
        } else {
            Cow::Owned(format!(
                "preflight answered, but method {requested} is not in allow_methods: the browser will not send the request"
            ))
        }
    }

    fn decorate(&self, res: &mut Response, origin: Option<&HeaderValue>) {
        let h = res.headers_mut();
        // Also without an Origin: a cache must not hand this origin-less answer (which has no
        // Access-Control-Allow-Origin) to a cross-origin request later.
        if self.vary_origin {
            if h.contains_key(header::VARY) {
                add_vary(h, header::ORIGIN.as_str());
            } else {
                // The usual case, without the merge's parsing and allocations.
                h.insert(header::VARY, HeaderValue::from_static("origin"));
            }
        }
        let Some(origin) = origin.filter(|o| self.allows_origin(o)) else { return };
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin_value(origin));
        if self.credentials {
            h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        if let Some(v) = &self.expose_headers {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
    }
}

impl Middleware<Request, Response> for Cors {
    async fn handle(&self, req: Request, next: Next) -> Response {
        let origin = req.headers().get(header::ORIGIN).cloned();
        if let Some(origin) = &origin
            && req.method() == Method::OPTIONS
            && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return self.preflight(&req, origin);
        }
        // An OPTIONS without the preflight headers is an ordinary request and goes inward.
        let mut res = next.run(req).await;
        self.decorate(&mut res, origin.as_ref());
        res
    }

    fn kind(&self) -> &'static str {
        "cors"
    }

    fn facts(&self) -> Facts {
        Facts::of(&[Fact::AnswersPreflight, Fact::ShortCircuits])
    }
}
