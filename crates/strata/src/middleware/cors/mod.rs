//! `cors`: Cross-Origin Resource Sharing, as the [Fetch standard] defines it.
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
//! - **`"*"` origin** without credentials is answered with a literal `*` (cacheable, no
//!   `Vary: Origin`). With `allow_credentials = true` it is a build error: browsers refuse a
//!   literal `*` on credentialed requests, and echoing every origin would let any site make
//!   credentialed calls.
//! - **`allow_methods = "*"` / `allow_headers = "*"` mirror** the preflight's
//!   `Access-Control-Request-Method` / `-Headers` rather than sending a literal `*`: a literal `*`
//!   is ignored on credentialed requests and never covers `Authorization`, a mirror works in every
//!   mode. Mirrored preflight responses carry `Vary` on the mirrored request header.
//! - **`expose_headers = "*"`** is sent as a literal `*` (all headers, for non-credentialed
//!   requests); with credentials it is a build error, because browsers would read it as a header
//!   named `*`. List the headers instead.
//! - The layer owns the CORS headers of responses from allowed origins: it *replaces* any an inner
//!   layer set, so a browser never sees two `Access-Control-Allow-Origin` values (which it rejects).
//!
//! ```
//! use strata::middleware::cors::Cors;
//!
//! let cors = Cors::builder()
//!     .allow_origin("https://app.example.com")
//!     .allow_origin("https://*.preview.example.com")
//!     .allow_methods(["GET", "POST", "DELETE"])
//!     .allow_headers(["content-type", "authorization"])
//!     .allow_credentials(true)
//!     .max_age(std::time::Duration::from_secs(600))
//!     .build()
//!     .expect("a valid CORS configuration");
//! let stack = strata::http::Stack::new().with(cors);
//! # let _ = stack;
//! ```
//!
//! [Fetch standard]: https://fetch.spec.whatwg.org/#http-cors-protocol

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use serde::Deserialize;

use crate::check::{Fact, Facts};
use crate::http::headers::add_vary;
use crate::http::{Next, Refusal, Request, Response, response};
use crate::middleware::{BuildContext, ConfigError};
use crate::stack::Middleware;

mod lists;
mod origins;
#[cfg(test)]
mod tests;

use lists::{compile_methods, header_list, mirror, wildcard};
use origins::{SubdomainPattern, compile_origins};

/// The request header (Private Network Access) a browser adds to a preflight towards a more
/// private network.
const REQUEST_PRIVATE_NETWORK: HeaderName = HeaderName::from_static("access-control-request-private-network");
/// The response header that allows it.
const ALLOW_PRIVATE_NETWORK: HeaderName = HeaderName::from_static("access-control-allow-private-network");

/// The configuration of a [`Cors`] layer: the fields of a `kind = "cors"` table.
///
/// Every list field also accepts a single string (`allow_methods = "*"`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed to read responses (required, at least one): exact origins
    /// (`"https://app.example.com"`, `"http://localhost:3000"`), subdomain patterns
    /// (`"https://*.example.com"`: one or more labels under `example.com`, same scheme and port),
    /// `"null"` (sandboxed frames, `file:` pages: only when listed), or `"*"` alone for any origin.
    #[serde(deserialize_with = "one_or_many")]
    pub allow_origins: Vec<String>,
    /// Methods allowed on preflighted requests. Default: `["GET", "HEAD", "POST"]`. `"*"` mirrors
    /// the preflight's `Access-Control-Request-Method`.
    #[serde(default = "default_methods", deserialize_with = "one_or_many")]
    pub allow_methods: Vec<String>,
    /// Request headers allowed on preflighted requests. Default: none beyond the CORS-safelisted
    /// ones. `"*"` mirrors the preflight's `Access-Control-Request-Headers`.
    #[serde(default, deserialize_with = "one_or_many")]
    pub allow_headers: Vec<String>,
    /// Response headers scripts may read besides the safelisted ones. Default: none. `"*"` means
    /// all of them (non-credentialed requests only).
    #[serde(default, deserialize_with = "one_or_many")]
    pub expose_headers: Vec<String>,
    /// Whether credentialed requests (cookies, HTTP auth) may read responses. Default: `false`.
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long, in seconds, browsers may cache a preflight answer. Default: unset (the browser's
    /// own default, 5 seconds in Chromium and Firefox).
    #[serde(default)]
    pub max_age: Option<u64>,
    /// Whether preflights asking `Access-Control-Request-Private-Network: true` (a public page
    /// calling a private-network server) are allowed. Default: `false`.
    #[serde(default)]
    pub allow_private_network: bool,
}

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST"].map(String::from).to_vec()
}

impl Default for CorsConfig {
    /// The documented defaults, with no origin allowed yet: [`Cors::new`] requires at least one.
    fn default() -> Self {
        CorsConfig {
            allow_origins: Vec::new(),
            allow_methods: default_methods(),
            allow_headers: Vec::new(),
            expose_headers: Vec::new(),
            allow_credentials: false,
            max_age: None,
            allow_private_network: false,
        }
    }
}

/// Accepts `"x"` as well as `["x", "y"]`, so `allow_headers = "*"` reads naturally in TOML.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct OneOrMany;

    impl<'de> serde::de::Visitor<'de> for OneOrMany {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a list of strings")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<String>, E> {
            Ok(vec![v.to_string()])
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(item) = seq.next_element::<String>()? {
                out.push(item);
            }
            Ok(out)
        }
    }

    deserializer.deserialize_any(OneOrMany)
}

/// The CORS layer. Build it with [`Cors::new`] (from a [`CorsConfig`]) or [`Cors::builder`].
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
    /// Validates `config` and precomputes every header value.
    ///
    /// Fails on an invalid or missing origin, `"*"` mixed with other entries, `"*"` origins or
    /// exposed headers with `allow_credentials`, and invalid method or header names.
    pub fn new(config: CorsConfig, _ctx: &BuildContext) -> Result<Cors, ConfigError> {
        let origins = compile_origins(&config.allow_origins)?;
        if config.allow_credentials && matches!(origins, AllowedOrigins::Any) {
            return Err(ConfigError::field(
                "allow_origins",
                "`\"*\"` cannot be combined with allow_credentials = true: browsers refuse a wildcard on credentialed requests, and allowing every origin with credentials would let any site act as the user; list the allowed origins",
            ));
        }

        let methods = compile_methods(&config.allow_methods)?;
        let headers = match wildcard("allow_headers", &config.allow_headers)? {
            true => Allowed::Mirror,
            false => Allowed::List(header_list("allow_headers", &config.allow_headers)?),
        };
        let expose_headers = match wildcard("expose_headers", &config.expose_headers)? {
            true if config.allow_credentials => {
                return Err(ConfigError::field(
                    "expose_headers",
                    "`\"*\"` cannot be combined with allow_credentials = true: browsers read it as a header named `*` on credentialed requests; list the headers to expose",
                ));
            }
            true => Some(HeaderValue::from_static("*")),
            false => header_list("expose_headers", &config.expose_headers)?,
        };
        let max_age = config.max_age.map(HeaderValue::from);

        let vary_origin = !matches!(origins, AllowedOrigins::Any) || config.allow_credentials;
        let mut vary: Vec<&str> = Vec::new();
        if vary_origin {
            vary.push(header::ORIGIN.as_str());
        }
        if matches!(methods, Allowed::Mirror) {
            vary.push(header::ACCESS_CONTROL_REQUEST_METHOD.as_str());
        }
        if matches!(headers, Allowed::Mirror) {
            vary.push(header::ACCESS_CONTROL_REQUEST_HEADERS.as_str());
        }
        if config.allow_private_network {
            vary.push("access-control-request-private-network");
        }
        // Built from static header names, so the value is always valid.
        let preflight_vary = if vary.is_empty() { None } else { HeaderValue::from_str(&vary.join(", ")).ok() };

        Ok(Cors {
            origins,
            methods,
            headers,
            expose_headers,
            credentials: config.allow_credentials,
            max_age,
            private_network: config.allow_private_network,
            vary_origin,
            preflight_vary,
        })
    }

    /// Starts a [`CorsBuilder`] with the defaults of [`CorsConfig`] and no origin.
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

/// A Rust-side way to write a [`CorsConfig`]; [`CorsBuilder::build`] validates it like the
/// gateway does.
#[derive(Clone, Debug, Default)]
pub struct CorsBuilder {
    config: CorsConfig,
}

impl CorsBuilder {
    /// Allows one more origin: exact, a `https://*.example.com` pattern, `"null"`, or `"*"`.
    pub fn allow_origin(mut self, origin: impl Into<String>) -> Self {
        self.config.allow_origins.push(origin.into());
        self
    }

    /// Allows each of `origins` (added to those already allowed).
    pub fn allow_origins<I: IntoIterator<Item = S>, S: Into<String>>(mut self, origins: I) -> Self {
        self.config.allow_origins.extend(origins.into_iter().map(Into::into));
        self
    }

    /// Allows any origin (a literal `*`; not combinable with credentials).
    pub fn allow_any_origin(self) -> Self {
        self.allow_origin("*")
    }

    /// Replaces the allowed methods (default `GET, HEAD, POST`).
    pub fn allow_methods<I: IntoIterator<Item = S>, S: Into<String>>(mut self, methods: I) -> Self {
        self.config.allow_methods = methods.into_iter().map(Into::into).collect();
        self
    }

    /// Allows whatever method a preflight asks for.
    pub fn mirror_request_methods(self) -> Self {
        self.allow_methods(["*"])
    }

    /// Replaces the allowed request headers.
    pub fn allow_headers<I: IntoIterator<Item = S>, S: Into<String>>(mut self, headers: I) -> Self {
        self.config.allow_headers = headers.into_iter().map(Into::into).collect();
        self
    }

    /// Allows whatever request headers a preflight asks for.
    pub fn mirror_request_headers(self) -> Self {
        self.allow_headers(["*"])
    }

    /// Replaces the response headers scripts may read.
    pub fn expose_headers<I: IntoIterator<Item = S>, S: Into<String>>(mut self, headers: I) -> Self {
        self.config.expose_headers = headers.into_iter().map(Into::into).collect();
        self
    }

    /// Whether credentialed requests may read responses.
    pub fn allow_credentials(mut self, allow: bool) -> Self {
        self.config.allow_credentials = allow;
        self
    }

    /// How long browsers may cache a preflight answer (whole seconds).
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.config.max_age = Some(max_age.as_secs());
        self
    }

    /// Whether Private Network Access preflights are allowed.
    pub fn allow_private_network(mut self, allow: bool) -> Self {
        self.config.allow_private_network = allow;
        self
    }

    /// The configuration written so far.
    pub fn config(&self) -> &CorsConfig {
        &self.config
    }

    /// Validates and builds the layer, exactly as [`Cors::new`] does.
    pub fn build(self) -> Result<Cors, ConfigError> {
        Cors::new(self.config, &BuildContext::default())
    }
}
