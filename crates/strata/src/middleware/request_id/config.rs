//! The gateway's `kind = "request_id"` table and [`RequestId::from_config`], which turns its text
//! into typed values for [`RequestIdBuilder`](super::RequestIdBuilder).

use http::HeaderName;
use serde::Deserialize;

use super::{RequestId, TraceContextMode};
use crate::middleware::{BuildContext, ConfigError};

/// The `[middleware.NAME]` table of kind `request_id`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestIdConfig {
    /// The header that carries the id, on the request and on the response. Default `x-request-id`.
    pub header: String,
    /// Whether a well-formed incoming id is reused. When false every request gets a new id (use it
    /// when clients are untrusted and ids must be unique). Default `true`.
    pub trust_incoming: bool,
    /// What to do with W3C Trace Context headers. Default [`TraceContextMode::Propagate`].
    pub trace_context: TraceContextMode,
}

impl Default for RequestIdConfig {
    fn default() -> Self {
        RequestIdConfig {
            header: "x-request-id".to_string(),
            trust_incoming: true,
            trace_context: TraceContextMode::Propagate,
        }
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
impl RequestId {
    /// Builds the layer a `kind = "request_id"` table declares: parses the header name, then
    /// validates as [`RequestIdBuilder::build`](super::RequestIdBuilder::build) does (ids are UUID v4).
    pub fn from_config(config: RequestIdConfig, _ctx: &BuildContext) -> Result<RequestId, ConfigError> {
        let header = HeaderName::from_bytes(config.header.as_bytes()).map_err(|_| {
            ConfigError::field(
                "header",
                format!(
                    "`{}` is not a valid header name: expected letters, digits and `-`, e.g. \"x-request-id\"",
                    config.header
                ),
            )
        })?;
        RequestId::builder()
            .header(header)
            .trust_incoming(config.trust_incoming)
            .trace_context(config.trace_context)
            .build()
    }
}
