//! The `kind = "security_headers"` table: its serde shape, and the conversion of its strings into
//! the typed values of a [`SecurityHeadersBuilder`], which validates them.

use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::middleware::{BuildContext, ConfigError, describe_duration};

use super::builder::MAX_HSTS_MAX_AGE;
use super::{FrameOptions, ReferrerPolicy, SecurityHeaders, SecurityHeadersBuilder};

/// The configuration of a [`SecurityHeaders`] layer: the fields of a `kind = "security_headers"`
/// table. Every field is optional; an empty table is the preset.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityHeadersConfig {
    /// Replace headers the app already set. Default: `false`.
    #[serde(default, rename = "override")]
    pub override_existing: bool,
    /// Send `Strict-Transport-Security` on HTTPS requests. Default: `true`.
    #[serde(default)]
    pub hsts: Option<bool>,
    /// HSTS `max-age`, a duration in whole seconds (`"365d"`), at most 730 days. Default: `"365d"`.
    #[serde(default)]
    pub hsts_max_age: Option<String>,
    /// HSTS `includeSubDomains`. Default: `true`.
    #[serde(default)]
    pub hsts_include_subdomains: Option<bool>,
    /// HSTS `preload`. Default: `false`.
    #[serde(default)]
    pub hsts_preload: bool,
    /// Send `X-Content-Type-Options: nosniff`. Default: `true`.
    #[serde(default)]
    pub content_type_options: Option<bool>,
    /// `X-Frame-Options`: `"DENY"`, `"SAMEORIGIN"` or `"off"`. Default: `"DENY"`.
    #[serde(default)]
    pub frame_options: Option<String>,
    /// `Referrer-Policy`: one of its eight tokens, or `"off"`. Default:
    /// `"strict-origin-when-cross-origin"`.
    #[serde(default)]
    pub referrer_policy: Option<String>,
    /// `Permissions-Policy`, sent as written. Default: none.
    #[serde(default)]
    pub permissions_policy: Option<String>,
    /// The Content Security Policy; `{nonce}` is replaced by a fresh nonce per request. Default: none.
    #[serde(default)]
    pub content_security_policy: Option<String>,
    /// Send the policy as `Content-Security-Policy-Report-Only`. Default: `false`.
    #[serde(default)]
    pub csp_report_only: bool,
    /// The request header that carries the nonce to the app or upstream; `""` for none. Default:
    /// `"x-csp-nonce"`.
    #[serde(default)]
    pub nonce_header: Option<String>,
}

impl SecurityHeaders {
    /// Builds the layer from a `kind = "security_headers"` table: converts its strings into typed
    /// values and validates them with [`SecurityHeadersBuilder::build`].
    pub fn from_config(config: SecurityHeadersConfig, _ctx: &BuildContext) -> Result<SecurityHeaders, ConfigError> {
        let mut b = SecurityHeadersBuilder::default()
            .override_existing(config.override_existing)
            .hsts_preload(config.hsts_preload)
            .csp_report_only(config.csp_report_only);
        if let Some(on) = config.hsts {
            b = b.hsts(on);
        }
        if let Some(text) = &config.hsts_max_age {
            b = b.hsts_max_age(parse_max_age(text).map_err(|e| ConfigError::field("hsts_max_age", e))?);
        }
        if let Some(on) = config.hsts_include_subdomains {
            b = b.hsts_include_subdomains(on);
        }
        if let Some(on) = config.content_type_options {
            b = b.content_type_options(on);
        }
        if let Some(text) = &config.frame_options {
            let options = match text.trim().to_ascii_lowercase().as_str() {
                "deny" => FrameOptions::Deny,
                "sameorigin" => FrameOptions::SameOrigin,
                "off" => FrameOptions::Off,
                _ => {
                    return Err(ConfigError::field(
                        "frame_options",
                        format!("`{text}`: expected \"DENY\", \"SAMEORIGIN\" or \"off\""),
                    ));
                }
            };
            b = b.frame_options(options);
        }
        if let Some(text) = &config.referrer_policy {
            let policy = match text.trim() {
                "off" => None,
                token => Some(ReferrerPolicy::from_token(token).ok_or_else(|| {
                    let tokens: Vec<&str> = ReferrerPolicy::ALL.iter().map(|p| p.as_str()).collect();
                    ConfigError::field(
                        "referrer_policy",
                        format!("`{text}`: expected one of {}, or \"off\"", tokens.join(", ")),
                    )
                })?),
            };
            b = b.referrer_policy(policy);
        }
        if let Some(text) = &config.permissions_policy {
            let value = HeaderValue::from_str(text.trim()).ok().filter(|v| !v.is_empty()).ok_or_else(|| {
                ConfigError::field(
                    "permissions_policy",
                    "expected a policy such as \"camera=(), microphone=()\": not empty, no line break, control or non-ASCII character",
                )
            })?;
            b = b.permissions_policy(value);
        }
        if let Some(policy) = config.content_security_policy {
            b = b.content_security_policy(policy);
        }
        if let Some(text) = &config.nonce_header {
            let name = match text.trim() {
                "" => None,
                name => Some(
                    HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| ConfigError::field("nonce_header", format!("`{text}` is not a header name")))?,
                ),
            };
            b = b.nonce_header(name);
        }
        b.build()
    }
}

/// An HSTS `max-age` in the humantime forms, up to two years: past the one-year bound of
/// [`parse_duration`](crate::middleware::parse_duration), because two years is what the preload
/// list recommends.
fn parse_max_age(text: &str) -> Result<Duration, String> {
    let too_long =
        || format!("`{text}`: expected a duration of at most {} (730 days)", describe_duration(MAX_HSTS_MAX_AGE));
    match humantime::parse_duration(text.trim()) {
        Ok(age) if age <= MAX_HSTS_MAX_AGE => Ok(age),
        Ok(_) | Err(humantime::DurationError::NumberOverflow) => Err(too_long()),
        Err(_) => Err(format!("`{text}`: expected a duration such as \"365d\", \"180d\" or \"0s\"")),
    }
}
