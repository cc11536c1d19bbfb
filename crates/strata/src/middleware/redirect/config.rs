//! The `kind = "redirect"` table: its serde shape, and the conversion into a [`RedirectBuilder`],
//! which validates it.

use http::StatusCode;
use serde::Deserialize;

use crate::middleware::path_rule::rule_from_parts;
use crate::middleware::{BuildContext, ConfigError};

use super::{Redirect, RedirectBuilder, TrailingSlash};

/// The configuration of a [`Redirect`] layer: the fields of a `kind = "redirect"` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectConfig {
    /// The rules, tried in order: `{ regex = "^/old/(.*)$", to = "/new/$1" }` or
    /// `{ prefix = "/docs", to = "/manual" }`, each with an optional `status`. Default: none.
    #[serde(default)]
    pub rules: Vec<RedirectRuleConfig>,
    /// The status of every redirect without its own: 301, 302, 307 or 308. Default: 308.
    #[serde(default)]
    pub status: Option<u16>,
    /// Whether requests that came over plain HTTP are redirected to HTTPS. Default: `false`.
    #[serde(default)]
    pub https: bool,
    /// The port HTTPS is served on, when not 443. Default: unset (443).
    #[serde(default)]
    pub https_port: Option<u16>,
    /// `"add"`, `"remove"` or `"ignore"` a trailing slash when no rule matched. Default: `"ignore"`.
    #[serde(default)]
    pub trailing_slash: TrailingSlash,
}

/// One entry of a redirect's `rules`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectRuleConfig {
    /// A regex over the path (give this or `prefix`).
    #[serde(default)]
    pub regex: Option<String>,
    /// A path prefix, matched on segment boundaries (give this or `regex`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// The target: a path or an absolute URL, with `$1` / `${name}` groups for a regex.
    pub to: String,
    /// This rule's status, rather than the layer's.
    #[serde(default)]
    pub status: Option<u16>,
}

impl Redirect {
    /// Builds the layer from a `kind = "redirect"` table through [`RedirectBuilder::build`].
    pub fn from_config(config: RedirectConfig, _ctx: &BuildContext) -> Result<Redirect, ConfigError> {
        let mut builder = RedirectBuilder::default().https(config.https).trailing_slash(config.trailing_slash);
        if let Some(status) = config.status {
            builder = builder.status(status_code("status", status)?);
        }
        if let Some(port) = config.https_port {
            builder = builder.https_port(port);
        }
        for (i, rule) in config.rules.into_iter().enumerate() {
            let path_rule = rule_from_parts(i + 1, rule.regex, rule.prefix, rule.to)?;
            builder = match rule.status {
                Some(status) => builder.rule_with_status(path_rule, status_code("rules", status)?),
                None => builder.rule(path_rule),
            };
        }
        builder.build()
    }
}

fn status_code(field: &'static str, status: u16) -> Result<StatusCode, ConfigError> {
    StatusCode::from_u16(status)
        .map_err(|_| ConfigError::field(field, format!("`{status}`: expected 301, 302, 307 or 308")))
}
