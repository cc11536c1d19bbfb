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

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use serde::Deserialize;

use crate::check::{Fact, Facts};
use crate::http::headers::add_vary;
use crate::http::{Next, Refusal, Request, Response, response};
use crate::middleware::{BuildContext, ConfigError};
use crate::stack::Middleware;

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

/// `scheme://*.suffix[:port]`: matches one or more DNS labels followed by `.suffix`.
#[derive(Clone, Debug)]
struct SubdomainPattern {
    scheme: String,
    /// Lowercase, with its leading dot: `.example.com`.
    dot_suffix: String,
    port: Option<u16>,
}

impl SubdomainPattern {
    fn matches(&self, origin: &str) -> bool {
        let Ok(o) = parse_origin(origin) else { return false };
        let host = o.host.as_bytes();
        let suffix = self.dot_suffix.as_bytes();
        // Longer than the suffix, so at least one label precedes it; `parse_origin` already
        // rejected empty labels (`a..example.com`, `.example.com`).
        o.scheme.eq_ignore_ascii_case(&self.scheme)
            && o.port_or_default() == self.port
            && host.len() > suffix.len()
            && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    }
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

// ---- building ---------------------------------------------------------------------------------

const ORIGIN_SHAPE: &str = "expected scheme://host[:port] with no path (https://app.example.com), a subdomain pattern (https://*.example.com), \"null\", or \"*\"";

fn compile_origins(list: &[String]) -> Result<AllowedOrigins, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::field(
            "allow_origins",
            "at least one origin is required, e.g. [\"https://app.example.com\"], or \"*\" for any",
        ));
    }
    if list.iter().any(|o| o == "*") {
        return if list.len() == 1 {
            Ok(AllowedOrigins::Any)
        } else {
            Err(ConfigError::field("allow_origins", "`\"*\"` allows every origin: it cannot be combined with others"))
        };
    }
    let mut exact = Vec::new();
    let mut patterns = Vec::new();
    for raw in list {
        if raw == "null" {
            exact.push(raw.clone());
            continue;
        }
        let bad =
            |why: &str| ConfigError::field("allow_origins", format!("`{raw}` is not an origin: {why}; {ORIGIN_SHAPE}"));
        if let Some((scheme, rest)) = raw.split_once("://")
            && let Some(suffix_and_port) = rest.strip_prefix("*.")
        {
            // Parse the pattern as if `*` were a label, then check the suffix on its own.
            let probe = format!("{scheme}://x.{suffix_and_port}");
            let o = parse_origin(&probe).map_err(bad)?;
            let suffix = &o.host[2..];
            let labels: Vec<&str> = suffix.split('.').collect();
            if labels.len() < 2 {
                return Err(bad(
                    "a subdomain pattern needs at least two labels after `*.` (`*.com` would match whole top-level domains)",
                ));
            }
            if labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_digit())) || o.host.starts_with('[') {
                return Err(bad("a subdomain pattern needs a domain name, not an IP address"));
            }
            patterns.push(SubdomainPattern {
                scheme: o.scheme.to_ascii_lowercase(),
                dot_suffix: format!(".{}", suffix.to_ascii_lowercase()),
                port: o.port_or_default(),
            });
            continue;
        }
        let o = parse_origin(raw).map_err(bad)?;
        exact.push(o.normalized());
    }
    Ok(AllowedOrigins::List { exact, patterns })
}

/// `Ok(true)` for `["*"]`; an error for `"*"` mixed with names.
fn wildcard(field: &'static str, list: &[String]) -> Result<bool, ConfigError> {
    match list.iter().any(|v| v == "*") {
        true if list.len() == 1 => Ok(true),
        true => Err(ConfigError::field(field, "`\"*\"` cannot be combined with other entries")),
        false => Ok(false),
    }
}

fn compile_methods(list: &[String]) -> Result<Allowed, ConfigError> {
    if wildcard("allow_methods", list)? {
        return Ok(Allowed::Mirror);
    }
    if list.is_empty() {
        return Err(ConfigError::field("allow_methods", "at least one method, e.g. [\"GET\", \"POST\"], or \"*\""));
    }
    const STANDARD: [&str; 7] = ["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"];
    let mut names = Vec::with_capacity(list.len());
    for raw in list {
        // Methods are case-sensitive, but browsers upper-case only the standard ones: accept
        // `put` for `PUT` rather than silently never matching.
        let name = match STANDARD.iter().find(|s| s.eq_ignore_ascii_case(raw)) {
            Some(s) => (*s).to_string(),
            None => raw.clone(),
        };
        Method::from_bytes(name.as_bytes())
            .map_err(|_| ConfigError::field("allow_methods", format!("`{raw}` is not an HTTP method")))?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let value = HeaderValue::from_str(&names.join(", "))
        .map_err(|_| ConfigError::field("allow_methods", "methods must be HTTP tokens"))?;
    Ok(Allowed::List(Some(value)))
}

/// A comma-separated, lowercase header value of validated names, or `None` for an empty list.
fn header_list(field: &'static str, list: &[String]) -> Result<Option<HeaderValue>, ConfigError> {
    let mut names: Vec<HeaderName> = Vec::with_capacity(list.len());
    for raw in list {
        let name = HeaderName::from_bytes(raw.trim().as_bytes())
            .map_err(|_| ConfigError::field(field, format!("`{raw}` is not a header name")))?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        return Ok(None);
    }
    let joined = names.iter().map(HeaderName::as_str).collect::<Vec<_>>().join(", ");
    HeaderValue::from_str(&joined).map(Some).map_err(|_| ConfigError::field(field, "header names must be tokens"))
}

// ---- origins --------------------------------------------------------------------------------------

/// An origin split into its parts, borrowed from the text it was parsed from.
struct Origin<'a> {
    scheme: &'a str,
    host: &'a str,
    port: Option<u16>,
}

impl Origin<'_> {
    /// The port, with a scheme's default port folded into "none", as browsers serialize origins.
    fn port_or_default(&self) -> Option<u16> {
        let default = match self.scheme.to_ascii_lowercase().as_str() {
            "http" | "ws" => Some(80),
            "https" | "wss" => Some(443),
            _ => None,
        };
        self.port.filter(|p| Some(*p) != default)
    }

    /// The form a browser sends in `Origin`: lowercase, no default port.
    fn normalized(&self) -> String {
        let mut s = format!("{}://{}", self.scheme, self.host).to_ascii_lowercase();
        if let Some(port) = self.port_or_default() {
            s.push_str(&format!(":{port}"));
        }
        s
    }
}

/// Parses `scheme://host[:port]`; also used on request `Origin` values, so it never panics.
fn parse_origin(s: &str) -> Result<Origin<'_>, &'static str> {
    let (scheme, rest) = s.split_once("://").ok_or("no `://`")?;
    let mut chars = scheme.bytes();
    if !chars.next().is_some_and(|b| b.is_ascii_alphabetic())
        || !chars.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return Err("the scheme is not valid");
    }
    if rest.is_empty() {
        return Err("no host");
    }
    if let Some(b) = rest.bytes().find(|b| matches!(b, b'/' | b'?' | b'#' | b'@') || !b.is_ascii_graphic()) {
        return Err(match b {
            b'/' => "an origin has no path (not even a trailing `/`)",
            b'?' | b'#' => "an origin has no query or fragment",
            b'@' => "an origin has no user info",
            _ => "it contains a space, a control or a non-ASCII character",
        });
    }
    let (host, port) = if rest.starts_with('[') {
        let end = rest.find(']').ok_or("unclosed `[` in an IPv6 host")?;
        let (host, after) = rest.split_at(end + 1);
        if host[1..host.len() - 1].parse::<std::net::Ipv6Addr>().is_err() {
            return Err("not a valid IPv6 address");
        }
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or("unexpected text after the IPv6 host")?)),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err("the port must be a number from 1 to 65535"),
        },
    };
    if !host.starts_with('[') {
        let valid_label =
            |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !host.split('.').all(valid_label) {
            return Err("the host must be dot-separated labels of letters, digits, `-` or `_`");
        }
    }
    Ok(Origin { scheme, host, port })
}

// ---- headers --------------------------------------------------------------------------------------

/// The request header's values joined with `, ` (a header may arrive on several lines).
fn mirror(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut joined = first.as_bytes().to_vec();
    for v in values {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(v.as_bytes());
    }
    HeaderValue::from_bytes(&joined).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Body, Service, Stack};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An app that counts its calls and answers 200 "app".
    fn service(cors: Cors) -> (Service, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let svc = Stack::new().with(cors).serve(move |_req: Request| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                response::text(StatusCode::OK, "app")
            }
        });
        (svc, calls)
    }

    fn cors(build: impl FnOnce(CorsBuilder) -> CorsBuilder) -> Cors {
        build(Cors::builder()).build().expect("valid config")
    }

    fn get(origin: Option<&str>) -> Request {
        let mut b = http::Request::builder().method(Method::GET).uri("/api");
        if let Some(o) = origin {
            b = b.header(header::ORIGIN, o);
        }
        b.body(Body::empty()).unwrap()
    }

    fn preflight(origin: &str, method: &str, headers: Option<&str>) -> Request {
        let mut b = http::Request::builder()
            .method(Method::OPTIONS)
            .uri("/api")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, method);
        if let Some(h) = headers {
            b = b.header(header::ACCESS_CONTROL_REQUEST_HEADERS, h);
        }
        b.body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn a_preflight_says_why_it_was_answered() {
        let (svc, _) = service(cors(|b| b.allow_origin("https://app.example.com").allow_methods(["GET", "PUT"])));
        let reason =
            |res: &Response| res.extensions().get::<Refusal>().map(|r| r.reason.to_string()).unwrap_or_default();
        let res = svc.call(preflight("https://evil.example", "PUT", None)).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert_eq!(reason(&res), "preflight refused: origin https://evil.example not in allow_origins");
        let res = svc.call(preflight("https://app.example.com", "PUT", None)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_eq!(reason(&res), "preflight answered: origin and method allowed");
        let res = svc.call(preflight("https://app.example.com", "DELETE", None)).await;
        assert!(reason(&res).contains("method DELETE is not in allow_methods"), "{}", reason(&res));
        // Passed on: no reason, and nothing of it in the headers.
        let res = svc.call(get(Some("https://app.example.com"))).await;
        assert!(res.extensions().get::<Refusal>().is_none());
    }

    fn header(res: &Response, name: impl http::header::AsHeaderName) -> Option<&str> {
        res.headers().get(name).map(|v| v.to_str().unwrap())
    }

    fn allowed(c: &Cors, origin: &str) -> bool {
        c.allows_origin(&HeaderValue::from_str(origin).unwrap())
    }

    #[test]
    fn exact_origins_match_exactly() {
        let c = cors(|b| b.allow_origins(["https://app.example.com", "http://localhost:3000"]));
        assert!(allowed(&c, "https://app.example.com"));
        assert!(allowed(&c, "http://localhost:3000"));
        assert!(!allowed(&c, "http://app.example.com"), "scheme differs");
        assert!(!allowed(&c, "https://app.example.com:8443"), "port differs");
        assert!(!allowed(&c, "http://localhost:3001"));
        assert!(!allowed(&c, "https://app.example.com.evil.com"));
        assert!(!allowed(&c, "null"), "null only when listed");
    }

    #[test]
    fn configured_default_ports_and_case_are_normalized() {
        let c = cors(|b| b.allow_origin("HTTPS://App.Example.com:443"));
        assert!(allowed(&c, "https://app.example.com"));
    }

    #[test]
    fn subdomain_patterns_match_labels_under_the_domain_only() {
        let c = cors(|b| b.allow_origin("https://*.example.com"));
        assert!(allowed(&c, "https://a.example.com"));
        assert!(allowed(&c, "https://a.b.example.com"));
        assert!(!allowed(&c, "https://example.com"), "needs at least one label");
        assert!(!allowed(&c, "https://example.com.evil.com"), "evil suffix");
        assert!(!allowed(&c, "https://a.example.com.evil.com"), "evil suffix");
        assert!(!allowed(&c, "https://evilexample.com"), "no dot before the domain");
        assert!(!allowed(&c, "https://.example.com"), "empty label");
        assert!(!allowed(&c, "http://a.example.com"), "scheme differs");
        assert!(!allowed(&c, "https://a.example.com:8443"), "port differs");
        assert!(!allowed(&c, "https://a.example.com/"), "origins have no path");
        assert!(!allowed(&c, "null"));

        let with_port = cors(|b| b.allow_origin("http://*.local.test:8080"));
        assert!(allowed(&with_port, "http://api.local.test:8080"));
        assert!(!allowed(&with_port, "http://api.local.test"));
    }

    #[test]
    fn null_origin_is_allowed_only_when_listed() {
        let c = cors(|b| b.allow_origins(["null", "https://a.example"]));
        assert!(allowed(&c, "null"));
    }

    #[tokio::test]
    async fn wildcard_without_credentials_sends_a_literal_star_and_no_vary() {
        let (svc, _) = service(cors(|b| b.allow_any_origin().expose_headers(["x-total"])));
        let res = svc.call(get(Some("https://anything.example"))).await;
        assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
        assert_eq!(header(&res, header::ACCESS_CONTROL_EXPOSE_HEADERS), Some("x-total"));
        assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
        assert_eq!(header(&res, header::VARY), None);
    }

    #[tokio::test]
    async fn actual_request_from_allowed_origin_gets_its_origin_back_and_vary() {
        let (svc, calls) =
            service(cors(|b| b.allow_origin("https://a.example").allow_credentials(true).expose_headers(["X-Total"])));
        let res = svc.call(get(Some("https://a.example"))).await;
        assert_eq!(res.status(), 200);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("https://a.example"));
        assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), Some("true"));
        assert_eq!(header(&res, header::ACCESS_CONTROL_EXPOSE_HEADERS), Some("x-total"));
        assert_eq!(header(&res, header::VARY), Some("origin"));
    }

    #[tokio::test]
    async fn disallowed_and_missing_origins_get_no_cors_headers_but_vary() {
        let (svc, calls) = service(cors(|b| b.allow_origin("https://a.example")));
        for origin in [Some("https://b.example"), None] {
            let res = svc.call(get(origin)).await;
            assert_eq!(res.status(), 200, "the app still answers: the browser does the blocking");
            assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN), None);
            assert_eq!(header(&res, header::VARY), Some("origin"));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn preflight_is_answered_without_reaching_the_app() {
        let c = cors(|b| {
            b.allow_origin("https://a.example")
                .allow_methods(["GET", "put", "DELETE"])
                .allow_headers(["Content-Type", "x-api-key"])
                .max_age(Duration::from_secs(600))
        });
        let (svc, calls) = service(c);
        let res = svc.call(preflight("https://a.example", "PUT", Some("content-type"))).await;
        assert_eq!(res.status(), 204);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("https://a.example"));
        assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_METHODS), Some("GET, PUT, DELETE"));
        assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_HEADERS), Some("content-type, x-api-key"));
        assert_eq!(header(&res, header::ACCESS_CONTROL_MAX_AGE), Some("600"));
        assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
        assert_eq!(header(&res, header::VARY), Some("origin"));
        assert_eq!(header(&res, ALLOW_PRIVATE_NETWORK), None);
    }

    #[tokio::test]
    async fn default_methods_are_get_head_post() {
        let (svc, _) = service(cors(|b| b.allow_origin("https://a.example")));
        let res = svc.call(preflight("https://a.example", "POST", None)).await;
        assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_METHODS), Some("GET, HEAD, POST"));
        assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_HEADERS), None);
    }

    #[tokio::test]
    async fn disallowed_preflight_is_forbidden_without_cors_headers() {
        let (svc, calls) = service(cors(|b| b.allow_origin("https://a.example")));
        let res = svc.call(preflight("https://evil.example", "PUT", None)).await;
        assert_eq!(res.status(), 403);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert!(res.headers().keys().all(|k| !k.as_str().starts_with("access-control-")), "{:?}", res.headers());
        assert_eq!(header(&res, header::VARY), Some("origin"));
    }

    #[tokio::test]
    async fn options_without_preflight_headers_reaches_the_app() {
        let (svc, calls) = service(cors(|b| b.allow_origin("https://a.example")));
        let plain = http::Request::builder().method(Method::OPTIONS).uri("/api").body(Body::empty()).unwrap();
        assert_eq!(svc.call(plain).await.status(), 200);
        let origin_only = http::Request::builder()
            .method(Method::OPTIONS)
            .uri("/api")
            .header(header::ORIGIN, "https://a.example")
            .body(Body::empty())
            .unwrap();
        let res = svc.call(origin_only).await;
        assert_eq!(res.status(), 200);
        assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("https://a.example"));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn credentials_on_preflight() {
        let (svc, _) = service(cors(|b| b.allow_origin("https://*.example.com").allow_credentials(true)));
        let res = svc.call(preflight("https://app.example.com", "POST", None)).await;
        assert_eq!(res.status(), 204);
        assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("https://app.example.com"));
        assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), Some("true"));
    }

    #[tokio::test]
    async fn mirrored_methods_and_headers_vary_on_the_request_headers() {
        let c = cors(|b| b.allow_origin("https://a.example").mirror_request_methods().mirror_request_headers());
        let (svc, _) = service(c);
        let mut req = preflight("https://a.example", "PATCH", Some("x-one, authorization"));
        req.headers_mut().append(header::ACCESS_CONTROL_REQUEST_HEADERS, HeaderValue::from_static("x-two"));
        let res = svc.call(req).await;
        assert_eq!(res.status(), 204);
        assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_METHODS), Some("PATCH"));
        assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_HEADERS), Some("x-one, authorization, x-two"));
        assert_eq!(
            header(&res, header::VARY),
            Some("origin, access-control-request-method, access-control-request-headers")
        );

        // No headers requested: nothing to mirror.
        let res = svc.call(preflight("https://a.example", "GET", None)).await;
        assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_HEADERS), None);
    }

    #[tokio::test]
    async fn mirrored_headers_work_with_credentials() {
        let c = cors(|b| b.allow_origin("https://a.example").mirror_request_headers().allow_credentials(true));
        let (svc, _) = service(c);
        let res = svc.call(preflight("https://a.example", "GET", Some("authorization"))).await;
        assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_HEADERS), Some("authorization"));
        assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), Some("true"));
    }

    #[tokio::test]
    async fn private_network_preflights() {
        let pna = |allow: bool| {
            let (svc, _) = service(cors(|b| b.allow_origin("https://a.example").allow_private_network(allow)));
            let mut req = preflight("https://a.example", "GET", None);
            req.headers_mut().insert(REQUEST_PRIVATE_NETWORK, HeaderValue::from_static("true"));
            svc.call(req)
        };
        let res = pna(true).await;
        assert_eq!(header(&res, ALLOW_PRIVATE_NETWORK), Some("true"));
        assert_eq!(header(&res, header::VARY), Some("origin, access-control-request-private-network"));
        assert_eq!(header(&pna(false).await, ALLOW_PRIVATE_NETWORK), None);

        // Allowed, but this preflight did not ask.
        let (svc, _) = service(cors(|b| b.allow_origin("https://a.example").allow_private_network(true)));
        let res = svc.call(preflight("https://a.example", "GET", None)).await;
        assert_eq!(header(&res, ALLOW_PRIVATE_NETWORK), None);
    }

    #[test]
    fn vary_is_merged_without_duplicates() {
        let merged = |existing: &[&str]| {
            let mut h = HeaderMap::new();
            for v in existing {
                h.append(header::VARY, HeaderValue::from_str(v).unwrap());
            }
            add_vary(&mut h, "origin");
            h.get_all(header::VARY).iter().map(|v| v.to_str().unwrap().to_string()).collect::<Vec<_>>()
        };
        assert_eq!(merged(&[]), ["origin"]);
        assert_eq!(merged(&["Accept-Encoding"]), ["Accept-Encoding, origin"]);
        assert_eq!(merged(&["accept-encoding", "cookie"]), ["accept-encoding, cookie, origin"]);
        assert_eq!(merged(&["Accept-Encoding, Origin"]), ["Accept-Encoding, Origin"], "already there");
        assert_eq!(merged(&["accept-encoding", " ORIGIN "]), ["accept-encoding", " ORIGIN "], "left alone");
        assert_eq!(merged(&["*"]), ["*"]);
        assert_eq!(merged(&["cookie, *"]), ["cookie, *"]);
        assert_eq!(merged(&[""]), ["origin"]);
    }

    #[tokio::test]
    async fn vary_from_the_app_is_kept() {
        let svc = Stack::new().with(cors(|b| b.allow_origin("https://a.example"))).serve(|_req: Request| async {
            let mut res = response::text(StatusCode::OK, "app");
            res.headers_mut().insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
            res
        });
        let res = svc.call(get(Some("https://a.example"))).await;
        assert_eq!(header(&res, header::VARY), Some("Accept-Encoding, origin"));
    }

    #[tokio::test]
    async fn inner_short_circuits_and_panics_still_get_cors_headers() {
        let c = cors(|b| b.allow_origin("https://a.example").allow_credentials(true));
        let rejecting = Stack::new()
            .with(c.clone())
            .with(crate::from_fn(|_req: Request, _next: Next| async { response::text(StatusCode::UNAUTHORIZED, "no") }))
            .serve(|_req: Request| async { response::text(StatusCode::OK, "unreachable") });
        let res = rejecting.call(get(Some("https://a.example"))).await;
        assert_eq!(res.status(), 401);
        assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("https://a.example"));
        assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), Some("true"));

        let panicking = Stack::new().with(c).serve(|_req: Request| async {
            if true {
                panic!("the app broke");
            }
            response::status(StatusCode::OK)
        });
        let res = panicking.call(get(Some("https://a.example"))).await;
        assert_eq!(res.status(), 500);
        assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("https://a.example"));
        assert_eq!(header(&res, header::VARY), Some("origin"));
    }

    #[tokio::test]
    async fn an_inner_allow_origin_is_replaced_not_duplicated() {
        let svc = Stack::new().with(cors(|b| b.allow_origin("https://a.example"))).serve(|_req: Request| async {
            let mut res = response::status(StatusCode::OK);
            res.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            res
        });
        let res = svc.call(get(Some("https://a.example"))).await;
        let values: Vec<_> = res.headers().get_all(header::ACCESS_CONTROL_ALLOW_ORIGIN).iter().collect();
        assert_eq!(values, ["https://a.example"]);
    }

    fn config_error(build: impl FnOnce(CorsBuilder) -> CorsBuilder) -> ConfigError {
        build(Cors::builder()).build().expect_err("an invalid config")
    }

    #[test]
    fn config_errors() {
        let field = |e: ConfigError| e.field.unwrap();
        assert_eq!(field(config_error(|b| b)), "allow_origins");
        assert_eq!(field(config_error(|b| b.allow_any_origin().allow_credentials(true))), "allow_origins");
        assert_eq!(field(config_error(|b| b.allow_origins(["*", "https://a.example"]))), "allow_origins");
        for bad in [
            "https://a.example/",
            "https://a.example/path",
            "a.example",
            "https://",
            "https://a.example:0",
            "https://a.example:99999",
            "https://a.example:port",
            "https://user@a.example",
            "https://a..example",
            "https://a example",
            "https://*.com",
            "https://*.1.2.3",
            "https://a.*.example.com",
            "1http://a.example",
        ] {
            let e = config_error(|b| b.allow_origin(bad));
            assert_eq!(e.field, Some("allow_origins"), "{bad}");
            assert!(e.message.contains(bad), "{bad}: {e}");
        }
        assert_eq!(
            field(config_error(|b| b.allow_origin("https://a.example").allow_methods(["GE T"]))),
            "allow_methods"
        );
        assert_eq!(
            field(config_error(|b| b.allow_origin("https://a.example").allow_methods(Vec::<String>::new()))),
            "allow_methods"
        );
        assert_eq!(
            field(config_error(|b| b.allow_origin("https://a.example").allow_headers(["bad header"]))),
            "allow_headers"
        );
        assert_eq!(
            field(config_error(|b| b.allow_origin("https://a.example").allow_headers(["*", "x"]))),
            "allow_headers"
        );
        assert_eq!(
            field(config_error(|b| b.allow_origin("https://a.example").expose_headers(["*"]).allow_credentials(true))),
            "expose_headers"
        );
        // The valid neighbours of those errors build.
        cors(|b| b.allow_origin("https://a.example").expose_headers(["*"]));
        cors(|b| b.allow_origin("http://[::1]:8080").allow_origin("http://127.0.0.1:3000"));
        cors(|b| b.allow_origin("capacitor://localhost"));
    }

    #[test]
    fn config_reads_from_toml_shaped_data() {
        let config: CorsConfig = serde_json::from_value(serde_json::json!({
            "allow_origins": ["https://a.example", "https://*.b.example"],
            "allow_headers": "*",
            "max_age": 60,
        }))
        .unwrap();
        assert_eq!(config.allow_methods, ["GET", "HEAD", "POST"]);
        assert_eq!(config.allow_headers, ["*"]);
        let c = Cors::new(config, &BuildContext::default()).unwrap();
        assert!(matches!(c.headers, Allowed::Mirror));
        let unknown =
            serde_json::from_value::<CorsConfig>(serde_json::json!({"allow_origins": "*", "allow_origin": "*"}));
        assert!(unknown.unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn kind_and_facts() {
        let c = cors(|b| b.allow_any_origin());
        assert_eq!(Middleware::kind(&c), "cors");
        assert!(c.facts().has(Fact::AnswersPreflight) && c.facts().has(Fact::ShortCircuits));
    }
}
