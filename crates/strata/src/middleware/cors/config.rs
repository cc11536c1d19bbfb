//! The `kind = "cors"` table: its serde shape, and the conversion of its strings into the typed
//! values of a [`CorsBuilder`], which validates them.

use http::{HeaderName, HeaderValue, Method};
use serde::Deserialize;

use crate::middleware::{BuildContext, ConfigError, parse_duration};

use super::{Cors, CorsBuilder};

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
    #[serde(deserialize_with = "crate::middleware::one_or_many")]
    pub allow_origins: Vec<String>,
    /// Methods allowed on preflighted requests. Default: `["GET", "HEAD", "POST"]`. `"*"` mirrors
    /// the preflight's `Access-Control-Request-Method`.
    #[serde(default = "default_methods", deserialize_with = "crate::middleware::one_or_many")]
    pub allow_methods: Vec<String>,
    /// Request headers allowed on preflighted requests. Default: none beyond the CORS-safelisted
    /// ones. `"*"` mirrors the preflight's `Access-Control-Request-Headers`.
    #[serde(default, deserialize_with = "crate::middleware::one_or_many")]
    pub allow_headers: Vec<String>,
    /// Response headers scripts may read besides the safelisted ones. Default: none. `"*"` means
    /// all of them (non-credentialed requests only).
    #[serde(default, deserialize_with = "crate::middleware::one_or_many")]
    pub expose_headers: Vec<String>,
    /// Whether credentialed requests (cookies, HTTP auth) may read responses. Default: `false`.
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight answer, as a duration in whole seconds (`"10m"`).
    /// Default: unset (the browser's own default, 5 seconds in Chromium and Firefox).
    #[serde(default)]
    pub max_age: Option<String>,
    /// Whether preflights asking `Access-Control-Request-Private-Network: true` (a public page
    /// calling a private-network server) are allowed. Default: `false`.
    #[serde(default)]
    pub allow_private_network: bool,
}

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST"].map(String::from).to_vec()
}

impl Default for CorsConfig {
    /// The documented defaults, with no origin allowed yet: [`Cors::from_config`] requires at least one.
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

impl Cors {
    /// Builds the layer from a `kind = "cors"` table: converts its strings into typed values
    /// (`"*"` into "any" or "mirror") and validates them with [`CorsBuilder::build`].
    pub fn from_config(config: CorsConfig, _ctx: &BuildContext) -> Result<Cors, ConfigError> {
        let mut builder = CorsBuilder::default();
        for raw in &config.allow_origins {
            builder = match raw.as_str() {
                // Mixed with other entries, the builder reports the combination.
                "*" => builder.allow_any_origin(),
                _ => builder.allow_origin(HeaderValue::from_str(raw).map_err(|_| {
                    ConfigError::field(
                        "allow_origins",
                        format!("`{raw}` is not an origin: it contains a space, a control or a non-ASCII character"),
                    )
                })?),
            };
        }
        builder = match wildcard("allow_methods", &config.allow_methods)? {
            true => builder.mirror_request_methods(),
            false => builder.allow_methods(methods(&config.allow_methods)?),
        };
        builder = match wildcard("allow_headers", &config.allow_headers)? {
            true => builder.mirror_request_headers(),
            false => builder.allow_headers(header_names("allow_headers", &config.allow_headers)?),
        };
        builder = match wildcard("expose_headers", &config.expose_headers)? {
            true => builder.expose_all_headers(),
            false => builder.expose_headers(header_names("expose_headers", &config.expose_headers)?),
        };
        if let Some(max_age) = &config.max_age {
            builder = builder.max_age(parse_duration(max_age).map_err(|e| ConfigError::field("max_age", e))?);
        }
        builder.allow_credentials(config.allow_credentials).allow_private_network(config.allow_private_network).build()
    }
}

/// `Ok(true)` for `["*"]`; an error for `"*"` mixed with names.
fn wildcard(field: &'static str, list: &[String]) -> Result<bool, ConfigError> {
    match list.iter().any(|v| v == "*") {
        true if list.len() == 1 => Ok(true),
        true => Err(ConfigError::field(field, "`\"*\"` cannot be combined with other entries")),
        false => Ok(false),
    }
}

fn methods(list: &[String]) -> Result<Vec<Method>, ConfigError> {
    const STANDARD: [Method; 7] =
        [Method::DELETE, Method::GET, Method::HEAD, Method::OPTIONS, Method::PATCH, Method::POST, Method::PUT];
    list.iter()
        .map(|raw| {
            // Methods are case-sensitive, but browsers upper-case only the standard ones: accept
            // `put` for `PUT` rather than silently never matching.
            if let Some(standard) = STANDARD.iter().find(|s| s.as_str().eq_ignore_ascii_case(raw)) {
                return Ok(standard.clone());
            }
            Method::from_bytes(raw.as_bytes())
                .map_err(|_| ConfigError::field("allow_methods", format!("`{raw}` is not an HTTP method")))
        })
        .collect()
}

fn header_names(field: &'static str, list: &[String]) -> Result<Vec<HeaderName>, ConfigError> {
    list.iter()
        .map(|raw| {
            HeaderName::from_bytes(raw.trim().as_bytes())
                .map_err(|_| ConfigError::field(field, format!("`{raw}` is not a header name")))
        })
        .collect()
}
