//! The gateway's `kind = "jwt"` table: its fields, their defaults, a `Debug` that never shows the
//! secret, and [`Jwt::from_config`], which turns its text into typed values for [`JwtBuilder`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use http::{HeaderName, Uri};
use serde::Deserialize;

use super::{Algorithm, Jwt, JwtBuilder};
use crate::middleware::{BuildContext, ConfigError, parse_duration, parse_duration_at_most};

/// The configuration of a [`Jwt`] layer: the fields of a `kind = "jwt"` table.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The accepted algorithms: `"HS256"`, `"HS384"`, `"HS512"`, `"RS256"`, `"ES256"`, `"EdDSA"`
    /// (one, or a list). Required.
    #[serde(deserialize_with = "crate::middleware::one_or_many")]
    pub algorithms: Vec<String>,
    /// The shared secret of `HS*` tokens, as text (its UTF-8 bytes), at least 32 bytes for HS256.
    #[serde(default)]
    pub secret: Option<String>,
    /// A PEM public key file (RSA, P-256 or Ed25519), relative to the config file's directory.
    #[serde(default)]
    pub public_key: Option<PathBuf>,
    /// The JWKS URL whose keys verify `RS256`, `ES256` and `EdDSA` tokens.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// How old the key set may grow before a request starts a background refresh. Default: `"5m"`.
    #[serde(default)]
    pub jwks_refresh: Option<String>,
    /// The least time between two JWKS fetches (unknown `kid`s wait for one). Default: `"10s"`.
    #[serde(default)]
    pub jwks_min_refresh: Option<String>,
    /// The deadline of one JWKS fetch. Default: `"5s"`, at most `"1m"`.
    #[serde(default)]
    pub jwks_timeout: Option<String>,
    /// The accepted `iss` (one, or a list). Default: not checked.
    #[serde(default, deserialize_with = "crate::middleware::one_or_many")]
    pub issuer: Vec<String>,
    /// The accepted `aud` (one, or a list). Default: not checked.
    #[serde(default, deserialize_with = "crate::middleware::one_or_many")]
    pub audience: Vec<String>,
    /// The clock skew allowed on `exp` and `nbf`. Default: `"30s"`, at most `"1h"`.
    #[serde(default)]
    pub leeway: Option<String>,
    /// Whether tokens without `exp` are refused. Default: `true`.
    #[serde(default)]
    pub require_exp: Option<bool>,
    /// Claims every token must carry. Default: none.
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// The claim naming the authenticated user. Default: `"sub"`.
    #[serde(default)]
    pub user_claim: Option<String>,
    /// Claim → request header (`{ sub = "x-user" }`); the client's own values are removed first.
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    /// The realm of `WWW-Authenticate`. Default: `"strata"`.
    #[serde(default)]
    pub realm: Option<String>,
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("algorithms", &self.algorithms)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("public_key", &self.public_key)
            .field("jwks_url", &self.jwks_url)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("required_claims", &self.required_claims)
            .field("user_claim", &self.user_claim)
            .field("forward_claims", &self.forward_claims)
            .field("realm", &self.realm)
            .finish()
    }
}

fn duration(field: &'static str, text: &Option<String>) -> Result<Option<std::time::Duration>, ConfigError> {
    text.as_deref().map(parse_duration).transpose().map_err(|e| ConfigError::field(field, e))
}

#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
impl Jwt {
    /// Builds the layer a `kind = "jwt"` table declares: parses algorithm names, durations, the
    /// URL and header names, reads the public key file (resolved against `ctx.base_dir`), takes
    /// `ctx.shared.http_client` for the JWKS when there is one, and validates the rest as
    /// [`JwtBuilder::build`] does.
    pub fn from_config(config: JwtConfig, ctx: &BuildContext) -> Result<Jwt, ConfigError> {
        let mut builder = JwtBuilder::default();
        for name in &config.algorithms {
            let alg = Algorithm::from_name(name).ok_or_else(|| {
                let hint = if name.eq_ignore_ascii_case("none") { " (unsigned tokens are never accepted)" } else { "" };
                let names: Vec<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
                ConfigError::field(
                    "algorithms",
                    format!("unknown algorithm `{name}`{hint}, expected one of {}", names.join(", ")),
                )
            })?;
            builder = builder.algorithm(alg);
        }
        if let Some(secret) = config.secret {
            builder = builder.secret(secret.into_bytes());
        }
        if let Some(path) = &config.public_key {
            let path = ctx.resolve(path);
            let pem = std::fs::read(&path)
                .map_err(|e| ConfigError::field("public_key", format!("cannot read {}: {e}", path.display())))?;
            builder = builder.public_key_pem(pem);
        }
        if let Some(url) = &config.jwks_url {
            let uri: Uri = url
                .parse()
                .map_err(|_| ConfigError::field("jwks_url", format!("`{url}`: expected an http:// or https:// URL")))?;
            builder = builder.jwks_url(uri);
        }
        if let Some(client) = &ctx.shared.http_client {
            builder = builder.client(client.clone());
        }
        if let Some(d) = duration("jwks_refresh", &config.jwks_refresh)? {
            builder = builder.jwks_refresh(d);
        }
        if let Some(d) = duration("jwks_min_refresh", &config.jwks_min_refresh)? {
            builder = builder.jwks_min_refresh(d);
        }
        if let Some(text) = &config.jwks_timeout {
            let d = parse_duration_at_most(text, super::builder::MAX_JWKS_TIMEOUT)
                .map_err(|e| ConfigError::field("jwks_timeout", e))?;
            builder = builder.jwks_timeout(d);
        }
        if let Some(text) = &config.leeway {
            let d = parse_duration_at_most(text, super::builder::MAX_LEEWAY)
                .map_err(|e| ConfigError::field("leeway", e))?;
            builder = builder.leeway(d);
        }
        for issuer in config.issuer {
            builder = builder.issuer(issuer);
        }
        for audience in config.audience {
            builder = builder.audience(audience);
        }
        if let Some(require) = config.require_exp {
            builder = builder.require_exp(require);
        }
        for claim in config.required_claims {
            builder = builder.required_claim(claim);
        }
        if let Some(claim) = config.user_claim {
            builder = builder.user_claim(claim);
        }
        for (claim, header) in config.forward_claims {
            let name = HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| ConfigError::field("forward_claims", format!("`{header}` is not a header name")))?;
            builder = builder.forward_claim(claim, name);
        }
        if let Some(realm) = config.realm {
            builder = builder.realm(realm);
        }
        builder.build()
    }
}
