//! The `kind = "errors"` table: its serde shape, and the conversion of its status keys and page
//! paths into the typed values of an [`ErrorsBuilder`](super::ErrorsBuilder).

use std::collections::BTreeMap;
use std::path::PathBuf;

use http::StatusCode;
use serde::Deserialize;

use super::{ErrorFormat, ErrorStatuses, Errors};
use crate::middleware::{BuildContext, ConfigError};

/// The `[middleware.NAME]` table of kind `"errors"`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErrorsConfig {
    /// `"server"` (default): format 5xx responses; `"all"`: 4xx and 5xx.
    pub statuses: ErrorStatuses,
    /// Also replace error bodies the application wrote itself. Default `false`: only empty bodies,
    /// strata's bare panic body and responses marked [`GeneratedError`](crate::http::GeneratedError)
    /// are replaced.
    pub replace_app_errors: bool,
    /// What `Accept: */*`, a missing or unparseable `Accept`, or an `Accept` that allows none of
    /// the formats gets: `"text"` (default) or `"json"`.
    pub default_format: ErrorFormat,
    /// HTML pages per status, e.g. `{ 404 = "errors/404.html" }`; paths are relative to the config
    /// file ([`BuildContext::base_dir`]). Read once when the stack is built, served to clients that
    /// accept `text/html`.
    pub pages: BTreeMap<String, PathBuf>,
}

impl Errors {
    /// Builds the layer from a `kind = "errors"` table: parses the status keys, resolves the page
    /// paths against [`BuildContext::base_dir`] and validates through [`Errors::builder`].
    pub fn from_config(config: ErrorsConfig, ctx: &BuildContext) -> Result<Self, ConfigError> {
        let mut builder = Errors::builder()
            .statuses(config.statuses)
            .replace_app_errors(config.replace_app_errors)
            .default_format(config.default_format);
        for (key, path) in &config.pages {
            builder = builder.page_file(page_status(key)?, ctx.resolve(path));
        }
        builder.build()
    }
}

fn page_status(key: &str) -> Result<StatusCode, ConfigError> {
    let status = key.trim().parse::<u16>().ok().and_then(|n| StatusCode::from_u16(n).ok());
    match status {
        Some(status) if status.is_client_error() || status.is_server_error() => Ok(status),
        _ => Err(ConfigError::field("pages", format!("`{key}` is not an error status: expected 400 to 599"))),
    }
}
