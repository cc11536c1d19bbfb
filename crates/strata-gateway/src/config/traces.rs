//! `[tracing]`: spans exported over OTLP/HTTP.

use http::Uri;
use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Source};

/// `[tracing]`: where spans go and how many requests are traced.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceSettings {
    /// The OTLP/HTTP collector, e.g. `http://127.0.0.1:4318` (spans are POSTed to `/v1/traces`).
    pub otlp_endpoint: Uri,
    /// The share of requests traced, from 0 to 1, when the request carries no sampling decision
    /// of its own (a `traceparent` whose sampled flag is set is always traced).
    pub sample_ratio: f64,
    /// The `service.name` resource attribute.
    pub service_name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TracingSection {
    otlp_endpoint: Spanned<String>,
    sample_ratio: Option<Spanned<f64>>,
    service_name: Option<Spanned<String>>,
}

pub(super) fn parse_tracing(
    source: Source<'_>,
    s: TracingSection,
    errors: &mut Vec<ConfigError>,
) -> Option<TraceSettings> {
    let endpoint = match s.otlp_endpoint.get_ref().parse::<Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => Some(uri),
        _ => {
            errors.push(source.error(
                s.otlp_endpoint.span(),
                format!(
                    "`otlp_endpoint = \"{}\"`: expected an http:// URL of an OTLP/HTTP collector, e.g. \
                     \"http://127.0.0.1:4318\"",
                    s.otlp_endpoint.get_ref()
                ),
            ));
            None
        }
    };
    let mut sample_ratio = 1.0;
    if let Some(ratio) = s.sample_ratio {
        if (0.0..=1.0).contains(ratio.get_ref()) {
            sample_ratio = *ratio.get_ref();
        } else {
            errors.push(source.error(ratio.span(), "`sample_ratio`: expected a number from 0 to 1, e.g. 0.1"));
        }
    }
    let service_name = s.service_name.map_or_else(|| "strata".to_string(), Spanned::into_inner);
    Some(TraceSettings { otlp_endpoint: endpoint?, sample_ratio, service_name })
}
