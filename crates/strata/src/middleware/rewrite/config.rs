//! The `kind = "rewrite"` table: its serde shape, and the conversion into a [`RewriteBuilder`],
//! which validates it.

use serde::Deserialize;

use crate::middleware::path_rule::rule_from_parts;
use crate::middleware::{BuildContext, ConfigError};

use super::{Rewrite, RewriteBuilder};

/// The configuration of a [`Rewrite`] layer: the fields of a `kind = "rewrite"` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteConfig {
    /// The rules, tried in order (at least one): `{ regex = "^/old/(.*)$", to = "/new/$1" }` or
    /// `{ prefix = "/v1", to = "/api/v1" }`.
    #[serde(default)]
    pub rules: Vec<RewriteRuleConfig>,
}

/// One entry of a rewrite's `rules`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteRuleConfig {
    /// A regex over the path (give this or `prefix`).
    #[serde(default)]
    pub regex: Option<String>,
    /// A path prefix, matched on segment boundaries (give this or `regex`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// The new path, with `$1` / `${name}` groups for a regex, and an optional query.
    pub to: String,
}

impl Rewrite {
    /// Builds the layer from a `kind = "rewrite"` table through [`RewriteBuilder::build`].
    pub fn from_config(config: RewriteConfig, _ctx: &BuildContext) -> Result<Rewrite, ConfigError> {
        let mut builder = RewriteBuilder::default();
        for (i, rule) in config.rules.into_iter().enumerate() {
            builder = builder.rule(rule_from_parts(i + 1, rule.regex, rule.prefix, rule.to)?);
        }
        builder.build()
    }
}
