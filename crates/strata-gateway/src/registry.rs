//! The registry of middleware kinds: a kind's name → its config struct and constructor.
//!
//! Adding a kind is one line in the `kinds!` list below: the config table is deserialized into the
//! kind's config struct (unknown keys and wrong types are errors located at the key), then the
//! constructor validates it; a [`strata::middleware::ConfigError`] naming a field is located at that
//! field's key.

use serde::de::DeserializeOwned;
use strata::Middleware;
use strata::http::{Layer, Request, Response};
use strata::middleware::{self as mw, BuildContext};
use toml::Spanned;
use toml::de::DeValue;

use crate::config::{ConfigError, MiddlewareDecl, Source, did_you_mean, from_value, quoted_list};

macro_rules! kinds {
    ($($kind:literal => $constructor:path),* $(,)?) => {
        /// The names of every kind, in the order `strata --help` and the docs list them.
        pub const KINDS: &[&str] = &[$($kind),*];

        fn build_kind(decl: MiddlewareDecl<'_>, source: Source<'_>, ctx: &BuildContext) -> Option<Result<Layer, ConfigError>> {
            match decl.kind.as_str() {
                $($kind => Some(build(decl, source, ctx, $constructor)),)*
                _ => None,
            }
        }
    };
}

kinds! {
    "request_id" => mw::RequestId::new,
    "access_log" => mw::AccessLog::new,
    "timing" => mw::Timing::new,
    "cors" => mw::Cors::new,
    "basic_auth" => mw::BasicAuth::new,
    "errors" => mw::Errors::new,
    "compression" => mw::Compression::new,
    "timeout" => mw::Timeout::new,
    "body_limit" => mw::BodyLimit::new,
    "rate_limit" => mw::RateLimit::new,
}

/// Builds the layer a `[middleware.NAME]` table declares.
pub fn build_layer(decl: MiddlewareDecl<'_>, source: Source<'_>, ctx: &BuildContext) -> Result<Layer, ConfigError> {
    let kind_span = decl.kind_span.clone();
    let kind = decl.kind.clone();
    build_kind(decl, source, ctx).unwrap_or_else(|| {
        Err(source.error(
            kind_span,
            format!(
                "unknown middleware kind `{kind}`, expected one of {}{}",
                quoted_list(KINDS),
                did_you_mean(&kind, KINDS)
            ),
        ))
    })
}

fn build<C, M>(
    decl: MiddlewareDecl<'_>,
    source: Source<'_>,
    ctx: &BuildContext,
    constructor: fn(C, &BuildContext) -> Result<M, mw::ConfigError>,
) -> Result<Layer, ConfigError>
where
    C: DeserializeOwned,
    M: Middleware<Request, Response>,
{
    let field_span = |field: &str| key_span(&decl.table, field).unwrap_or_else(|| decl.kind_span.clone());
    let config: C = from_value(source, decl.table.clone())?;
    let middleware = constructor(config, ctx).map_err(|e| {
        let span = e.field.map_or_else(|| decl.kind_span.clone(), field_span);
        source.error(span, format!("middleware `{}` ({}): {}", decl.name, decl.kind, e.message))
    })?;
    Ok(Layer::new(decl.name, middleware))
}

fn key_span(table: &Spanned<DeValue<'_>>, field: &str) -> Option<std::ops::Range<usize>> {
    table.get_ref().as_table()?.get_key_value(field).map(|(k, _)| k.span())
}
