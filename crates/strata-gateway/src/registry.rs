//! The registry of middleware kinds: a kind's name → its config struct and constructor.
//!
//! Adding a kind is one line in the `kinds!` list below: the config table is deserialized into the
//! kind's config struct (unknown keys and wrong types are errors located at the key), then the
//! constructor validates it; a [`strata::middleware::ConfigError`] naming a field is located at that
//! field's key.

use serde::de::DeserializeOwned;
use strata::Middleware;
use strata::http::{NamedLayer, Request, Response};
use strata::middleware::{self as mw, BuildContext};
use toml::Spanned;
use toml::de::DeValue;

use crate::config::{ConfigError, MiddlewareDecl, Source, did_you_mean, from_table, from_value, quoted_list};

macro_rules! kinds {
    ($($kind:literal => $constructor:path),* $(,)?) => {
        /// The names of every kind, in the order `strata --help` and the docs list them.
        pub const KINDS: &[&str] = &[$($kind),*];

        fn build_kind(decl: MiddlewareDecl<'_>, source: Source<'_>, ctx: &BuildContext) -> Option<Result<NamedLayer, ConfigError>> {
            match decl.kind.as_str() {
                $($kind => Some(build(decl, source, ctx, $constructor)),)*
                _ => None,
            }
        }

        fn check_kind(decl: &MiddlewareDecl<'_>, source: Source<'_>, errors: &mut Vec<ConfigError>) -> bool {
            match decl.kind.as_str() {
                $($kind => {
                    check(decl, source, errors, $constructor);
                    true
                })*
                _ => false,
            }
        }
    };
}

kinds! {
    "request_id" => mw::RequestId::from_config,
    "access_log" => mw::AccessLog::from_config,
    "timing" => mw::Timing::from_config,
    "cors" => mw::Cors::from_config,
    "basic_auth" => mw::BasicAuth::from_config,
    "errors" => mw::Errors::from_config,
    "compression" => mw::Compression::from_config,
    "timeout" => mw::Timeout::from_config,
    "body_limit" => mw::BodyLimit::from_config,
    "rate_limit" => mw::RateLimit::from_config,
    "forward_auth" => mw::ForwardAuth::from_config,
    "redirect" => mw::Redirect::from_config,
    "rewrite" => mw::Rewrite::from_config,
    "security_headers" => mw::SecurityHeaders::from_config,
    "headers" => mw::Headers::from_config,
    "ip_filter" => mw::IpFilter::from_config,
    "concurrency_limit" => mw::ConcurrencyLimit::from_config,
    "jwt" => mw::Jwt::from_config,
}

/// Builds the layer a `[middleware.NAME]` table declares.
pub fn build_layer(
    decl: MiddlewareDecl<'_>,
    source: Source<'_>,
    ctx: &BuildContext,
) -> Result<NamedLayer, ConfigError> {
    let unknown = unknown_kind(&decl, source);
    build_kind(decl, source, ctx).unwrap_or(Err(unknown))
}

/// Checks a `[middleware.NAME]` table without building its layer: the kind is known, and every
/// key is one of its config's, with a value of the right type. Every error is pushed, so parsing
/// reports them beside the other sections' errors; the constructor's own checks run at build.
pub fn check_table(decl: &MiddlewareDecl<'_>, source: Source<'_>, errors: &mut Vec<ConfigError>) {
    if !check_kind(decl, source, errors) {
        errors.push(unknown_kind(decl, source));
    }
}

fn unknown_kind(decl: &MiddlewareDecl<'_>, source: Source<'_>) -> ConfigError {
    source.error(
        decl.kind_span.clone(),
        format!(
            "unknown middleware kind `{}`, expected one of {}{}",
            decl.kind,
            quoted_list(KINDS),
            did_you_mean(&decl.kind, KINDS)
        ),
    )
}

/// Deserializes the table into the constructor's config type, for its errors only.
fn check<C, M>(
    decl: &MiddlewareDecl<'_>,
    source: Source<'_>,
    errors: &mut Vec<ConfigError>,
    _constructor: fn(C, &BuildContext) -> Result<M, mw::ConfigError>,
) where
    C: DeserializeOwned,
{
    let _: Option<C> = from_table(source, decl.table.clone(), errors);
}

fn build<C, M>(
    decl: MiddlewareDecl<'_>,
    source: Source<'_>,
    ctx: &BuildContext,
    constructor: fn(C, &BuildContext) -> Result<M, mw::ConfigError>,
) -> Result<NamedLayer, ConfigError>
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
    Ok(NamedLayer::new(decl.name, middleware))
}

fn key_span(table: &Spanned<DeValue<'_>>, field: &str) -> Option<std::ops::Range<usize>> {
    table.get_ref().as_table()?.get_key_value(field).map(|(k, _)| k.span())
}
