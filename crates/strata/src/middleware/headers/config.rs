//! The `kind = "headers"` table: its serde shape, and the conversion of its header names into the
//! typed rules of a [`HeadersBuilder`](super::HeadersBuilder), which parses their values.

use std::collections::BTreeMap;

use http::HeaderName;
use serde::Deserialize;

use crate::middleware::{BuildContext, ConfigError};

use super::Headers;

/// The configuration of a [`Headers`] layer: the fields of a `kind = "headers"` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    /// The rules applied to requests, before the layers inside see them.
    #[serde(default)]
    pub request: HeaderRulesConfig,
    /// The rules applied to every response coming back from the layers inside.
    #[serde(default)]
    pub response: HeaderRulesConfig,
}

/// One side's rules: `[middleware.NAME.request]` or `[middleware.NAME.response]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRulesConfig {
    /// Header name → value template: replaces every value the header had.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Header name → value template: adds one more value.
    #[serde(default)]
    pub append: BTreeMap<String, String>,
    /// Header names to take away.
    #[serde(default)]
    pub remove: Vec<String>,
}

impl Headers {
    /// Builds the layer from a `kind = "headers"` table: converts its header names and goes
    /// through [`HeadersBuilder::build`](super::HeadersBuilder::build), which parses the templates.
    pub fn from_config(config: HeadersConfig, _ctx: &BuildContext) -> Result<Headers, ConfigError> {
        let mut b = Headers::builder();
        let sides: [(&'static str, HeaderRulesConfig); 2] =
            [("request", config.request), ("response", config.response)];
        for (key, rules) in sides {
            let name = |verb: &str, raw: &str| {
                HeaderName::from_bytes(raw.trim().as_bytes())
                    .map_err(|_| ConfigError::field(key, format!("{verb}: `{raw}` is not a header name")))
            };
            let request = key == "request";
            for raw in &rules.remove {
                let name = name("remove", raw)?;
                b = if request { b.request_remove(name) } else { b.response_remove(name) };
            }
            for (raw, value) in rules.set {
                let name = name("set", &raw)?;
                b = if request { b.request_set(name, value) } else { b.response_set(name, value) };
            }
            for (raw, value) in rules.append {
                let name = name("append", &raw)?;
                b = if request { b.request_append(name, value) } else { b.response_append(name, value) };
            }
        }
        b.build()
    }
}
