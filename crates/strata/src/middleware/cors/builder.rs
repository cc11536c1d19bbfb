//! [`CorsBuilder`]: the typed values of a [`Cors`] layer, and the one function that validates them
//! and precomputes every header value.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, header};

use crate::middleware::{ConfigError, MAX_DURATION, describe_duration};

use super::lists::{header_list, method_list};
use super::origins::compile_origins;
use super::{Allowed, AllowedOrigins, Cors};

/// The methods allowed on preflighted requests (the setters of [`CorsBuilder`] name the cases).
#[derive(Clone, Debug, PartialEq, Eq)]
enum AllowMethods {
    /// Exactly these methods (`Access-Control-Allow-Methods` is precomputed from them).
    List(Vec<Method>),
    /// Whatever method a preflight asks for, mirrored from `Access-Control-Request-Method`.
    Mirror,
}

/// The request headers allowed on preflighted requests.
#[derive(Clone, Debug, PartialEq, Eq)]
enum AllowHeaders {
    /// Exactly these headers, beyond the CORS-safelisted ones.
    List(Vec<HeaderName>),
    /// Whatever headers a preflight asks for, mirrored from `Access-Control-Request-Headers`.
    Mirror,
}

/// The response headers scripts may read.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ExposeHeaders {
    /// These headers, beyond the CORS-safelisted ones.
    List(Vec<HeaderName>),
    /// Every header: a literal `*`, which browsers honour on requests without credentials only.
    Any,
}

/// The typed configuration of a [`Cors`] layer; [`CorsBuilder::build`] validates it, and the
/// gateway's `kind = "cors"` tables go through the same function.
///
/// Defaults: no origin (at least one is required), methods `GET, HEAD, POST`, no extra request or
/// exposed headers, no credentials, no `Access-Control-Max-Age`, no private-network access.
#[derive(Clone, Debug)]
pub struct CorsBuilder {
    any_origin: bool,
    origins: Vec<HeaderValue>,
    methods: AllowMethods,
    headers: AllowHeaders,
    expose_headers: ExposeHeaders,
    credentials: bool,
    max_age: Option<Duration>,
    private_network: bool,
}

impl Default for CorsBuilder {
    fn default() -> Self {
        CorsBuilder {
            any_origin: false,
            origins: Vec::new(),
            methods: AllowMethods::List(vec![Method::GET, Method::HEAD, Method::POST]),
            headers: AllowHeaders::List(Vec::new()),
            expose_headers: ExposeHeaders::List(Vec::new()),
            credentials: false,
            max_age: None,
            private_network: false,
        }
    }
}

impl CorsBuilder {
    /// Allows one more origin, as a browser sends it in `Origin`: an exact origin
    /// (`https://app.example.com`, `http://localhost:3000`), a subdomain pattern
    /// (`https://*.example.com`: one or more labels under `example.com`, same scheme and port), or
    /// `null`. Checked by [`CorsBuilder::build`].
    pub fn allow_origin(mut self, origin: HeaderValue) -> Self {
        self.origins.push(origin);
        self
    }

    /// Allows each of `origins` (added to those already allowed).
    pub fn allow_origins(mut self, origins: impl IntoIterator<Item = HeaderValue>) -> Self {
        self.origins.extend(origins);
        self
    }

    /// Allows any origin: a literal `*` without credentials. Not combinable with listed origins,
    /// nor with credentials.
    pub fn allow_any_origin(mut self) -> Self {
        self.any_origin = true;
        self
    }

    /// Replaces the allowed methods (default `GET, HEAD, POST`).
    pub fn allow_methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = AllowMethods::List(methods.into_iter().collect());
        self
    }

    /// Allows whatever method a preflight asks for.
    pub fn mirror_request_methods(mut self) -> Self {
        self.methods = AllowMethods::Mirror;
        self
    }

    /// Replaces the allowed request headers.
    pub fn allow_headers(mut self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        self.headers = AllowHeaders::List(headers.into_iter().collect());
        self
    }

    /// Allows whatever request headers a preflight asks for.
    pub fn mirror_request_headers(mut self) -> Self {
        self.headers = AllowHeaders::Mirror;
        self
    }

    /// Replaces the response headers scripts may read.
    pub fn expose_headers(mut self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        self.expose_headers = ExposeHeaders::List(headers.into_iter().collect());
        self
    }

    /// Lets scripts read every response header (a literal `*`; not combinable with credentials).
    pub fn expose_all_headers(mut self) -> Self {
        self.expose_headers = ExposeHeaders::Any;
        self
    }

    /// Whether credentialed requests (cookies, HTTP auth) may read responses.
    pub fn allow_credentials(mut self, allow: bool) -> Self {
        self.credentials = allow;
        self
    }

    /// How long browsers may cache a preflight answer: whole seconds, at most
    /// [`MAX_DURATION`]. Browsers cap it themselves (2 h in Chromium, 24 h in Firefox).
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Whether Private Network Access preflights are allowed.
    pub fn allow_private_network(mut self, allow: bool) -> Self {
        self.private_network = allow;
        self
    }

    /// Validates the values and precomputes every header value.
    ///
    /// Fails on an invalid or missing origin, any origin combined with listed ones, any origin or
    /// all exposed headers with credentials, an empty method list, and a `max_age` that is not
    /// whole seconds or is longer than [`MAX_DURATION`]. Each error names the TOML key at fault.
    pub fn build(self) -> Result<Cors, ConfigError> {
        let origins = compile_origins(self.any_origin, &self.origins)?;
        if self.credentials && matches!(origins, AllowedOrigins::Any) {
            return Err(ConfigError::field(
                "allow_origins",
                "`\"*\"` cannot be combined with allow_credentials = true: browsers refuse a wildcard on credentialed requests, and allowing every origin with credentials would let any site act as the user; list the allowed origins",
            ));
        }
        let methods = match &self.methods {
            AllowMethods::Mirror => Allowed::Mirror,
            AllowMethods::List(list) => Allowed::List(Some(method_list(list)?)),
        };
        let headers = match &self.headers {
            AllowHeaders::Mirror => Allowed::Mirror,
            AllowHeaders::List(list) => Allowed::List(header_list(list)),
        };
        let expose_headers = match &self.expose_headers {
            ExposeHeaders::Any if self.credentials => {
                return Err(ConfigError::field(
                    "expose_headers",
                    "`\"*\"` cannot be combined with allow_credentials = true: browsers read it as a header named `*` on credentialed requests; list the headers to expose",
                ));
            }
            ExposeHeaders::Any => Some(HeaderValue::from_static("*")),
            ExposeHeaders::List(list) => header_list(list),
        };
        let max_age = match self.max_age {
            None => None,
            Some(age) if age > MAX_DURATION => {
                return Err(ConfigError::field(
                    "max_age",
                    format!("expected a duration of at most {} (365 days)", describe_duration(MAX_DURATION)),
                ));
            }
            // `Access-Control-Max-Age` counts whole seconds: a fraction would be silently dropped.
            Some(age) if age.subsec_nanos() != 0 => {
                return Err(ConfigError::field(
                    "max_age",
                    format!("`{}`: Access-Control-Max-Age counts whole seconds", describe_duration(age)),
                ));
            }
            Some(age) => Some(HeaderValue::from(age.as_secs())),
        };

        let vary_origin = !matches!(origins, AllowedOrigins::Any) || self.credentials;
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
        if self.private_network {
            vary.push("access-control-request-private-network");
        }
        // Built from static header names, so the value is always valid.
        let preflight_vary = if vary.is_empty() { None } else { HeaderValue::from_str(&vary.join(", ")).ok() };

        Ok(Cors {
            origins,
            methods,
            headers,
            expose_headers,
            credentials: self.credentials,
            max_age,
            private_network: self.private_network,
            vary_origin,
            preflight_vary,
        })
    }
}
