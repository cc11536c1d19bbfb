//! The `kind = "forward_auth"` table: its serde shape, and the conversion of its strings into the
//! typed values of a [`ForwardAuthBuilder`], which validates them.

use http::{HeaderName, Method, Uri};
use serde::Deserialize;

use super::{ForwardAuth, ForwardAuthBuilder, OnError};
use crate::middleware::{BuildContext, ConfigError, parse_duration};

/// The configuration of a [`ForwardAuth`] layer: the fields of a `kind = "forward_auth"` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuthConfig {
    /// The auth service's URL, `http://` or `https://` (`"http://127.0.0.1:9091/verify"`). Required.
    pub address: String,
    /// The method of the auth requests. Default: `"GET"`.
    #[serde(default)]
    pub method: Option<String>,
    /// The client headers sent to the auth service. Default: `["authorization", "cookie"]`.
    #[serde(default)]
    pub auth_request_headers: Option<Vec<String>>,
    /// The headers copied from an admitting answer onto the request (client-sent ones of these
    /// names are removed first). Default: none.
    #[serde(default)]
    pub auth_response_headers: Vec<String>,
    /// The header of an admitting answer that names the authenticated user (copied too). Default:
    /// none (no user is set).
    #[serde(default)]
    pub user_header: Option<String>,
    /// How long the service has to answer (`"2s"`). Default: `"5s"`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// `"deny"` (answer 503) or `"allow"` (let the request through without a user) when the
    /// service gives no answer. Default: `"deny"`.
    #[serde(default)]
    pub on_error: OnError,
    /// The largest denial body passed on to the client, in bytes. Default: 65536.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// How long admissions are remembered (`"30s"`); `"0s"` turns the cache off. Default: `"0s"`.
    #[serde(default)]
    pub cache_ttl: Option<String>,
    /// How many admissions the cache holds at most. Default: 10000.
    #[serde(default)]
    pub cache_capacity: Option<usize>,
}

impl ForwardAuth {
    /// Builds the layer from a `kind = "forward_auth"` table: parses its URL, method, header names
    /// and durations, takes the context's shared [`HttpClient`](crate::http::client::HttpClient)
    /// when it has one, and validates everything with [`ForwardAuthBuilder::build`].
    pub fn from_config(config: ForwardAuthConfig, ctx: &BuildContext) -> Result<ForwardAuth, ConfigError> {
        let address: Uri = config.address.parse().map_err(|_| {
            ConfigError::field("address", format!("`{}`: expected an http:// or https:// URL", config.address))
        })?;
        let mut builder = ForwardAuthBuilder::default().address(address).on_error(config.on_error);
        if let Some(method) = &config.method {
            let method = Method::from_bytes(method.as_bytes())
                .map_err(|_| ConfigError::field("method", format!("`{method}` is not an HTTP method")))?;
            builder = builder.method(method);
        }
        if let Some(names) = &config.auth_request_headers {
            builder = builder.auth_request_headers(header_names("auth_request_headers", names)?);
        }
        builder = builder.auth_response_headers(header_names("auth_response_headers", &config.auth_response_headers)?);
        if let Some(name) = &config.user_header {
            builder = builder.user_header(header_name("user_header", name)?);
        }
        if let Some(timeout) = &config.timeout {
            builder = builder.timeout(parse_duration(timeout).map_err(|e| ConfigError::field("timeout", e))?);
        }
        if let Some(max) = config.max_body_bytes {
            builder = builder.max_body_bytes(max);
        }
        if let Some(ttl) = &config.cache_ttl {
            builder = builder.cache_ttl(parse_duration(ttl).map_err(|e| ConfigError::field("cache_ttl", e))?);
        }
        if let Some(capacity) = config.cache_capacity {
            builder = builder.cache_capacity(capacity);
        }
        if let Some(client) = &ctx.shared.http_client {
            builder = builder.client(client.clone());
        }
        builder.build()
    }
}

fn header_name(field: &'static str, raw: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(raw.trim().as_bytes())
        .map_err(|_| ConfigError::field(field, format!("`{raw}` is not a header name")))
}

fn header_names(field: &'static str, list: &[String]) -> Result<Vec<HeaderName>, ConfigError> {
    list.iter().map(|raw| header_name(field, raw)).collect()
}
