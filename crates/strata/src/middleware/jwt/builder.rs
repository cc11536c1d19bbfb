//! [`JwtBuilder`]: the typed settings of a [`Jwt`] layer, and [`JwtBuilder::build`], where every
//! one of them is checked.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};
use jsonwebtoken::DecodingKey;

use super::keys::{Jwks, Keys, PublicKey};
use super::{Algorithm, Family, Jwt, validation};
use crate::http::client::{HttpClient, PlainHttpClient};
use crate::middleware::ConfigError;

/// The largest accepted `leeway`: clocks further apart than this are a problem to fix, not to absorb.
pub const MAX_LEEWAY: Duration = Duration::from_secs(3600);
/// The longest accepted `jwks_timeout`.
pub const MAX_JWKS_TIMEOUT: Duration = Duration::from_secs(60);

/// The claim checks every algorithm shares.
#[derive(Clone, Debug)]
pub(super) struct ClaimSettings {
    pub(super) issuers: Vec<String>,
    pub(super) audiences: Vec<String>,
    pub(super) leeway: Duration,
    pub(super) require_exp: bool,
}

/// Builds a [`Jwt`] layer; [`JwtBuilder::build`] checks the whole configuration.
///
/// Defaults: no algorithm (at least one is required), no key, `leeway` 30 s, `exp` required,
/// `user_claim` `sub`, realm `"strata"`, JWKS refreshed when older than 5 minutes, at most one
/// fetch per 10 s, each within 5 s.
pub struct JwtBuilder {
    algorithms: Vec<Algorithm>,
    secret: Option<Vec<u8>>,
    public_key: Option<Vec<u8>>,
    jwks_url: Option<Uri>,
    client: Option<Arc<dyn HttpClient>>,
    jwks_refresh: Duration,
    jwks_min_refresh: Duration,
    jwks_timeout: Duration,
    claims: ClaimSettings,
    required_claims: Vec<String>,
    user_claim: String,
    forward_claims: Vec<(String, HeaderName)>,
    realm: String,
}

impl Default for JwtBuilder {
    fn default() -> Self {
        JwtBuilder {
            algorithms: Vec::new(),
            secret: None,
            public_key: None,
            jwks_url: None,
            client: None,
            jwks_refresh: Duration::from_secs(300),
            jwks_min_refresh: Duration::from_secs(10),
            jwks_timeout: Duration::from_secs(5),
            claims: ClaimSettings {
                issuers: Vec::new(),
                audiences: Vec::new(),
                leeway: Duration::from_secs(30),
                require_exp: true,
            },
            required_claims: Vec::new(),
            user_claim: "sub".to_string(),
            forward_claims: Vec::new(),
            realm: "strata".to_string(),
        }
    }
}

// By hand: the secret must never reach a log.
impl fmt::Debug for JwtBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtBuilder")
            .field("algorithms", &self.algorithms)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("public_key", &self.public_key.as_ref().map(|k| k.len()))
            .field("jwks_url", &self.jwks_url)
            .field("claims", &self.claims)
            .field("required_claims", &self.required_claims)
            .field("user_claim", &self.user_claim)
            .field("forward_claims", &self.forward_claims)
            .field("realm", &self.realm)
            .finish()
    }
}

impl JwtBuilder {
    /// Accepts tokens signed with `alg` (call once per algorithm).
    pub fn algorithm(mut self, alg: Algorithm) -> Self {
        if !self.algorithms.contains(&alg) {
            self.algorithms.push(alg);
        }
        self
    }

    /// Accepts tokens signed with any of `algs`.
    pub fn algorithms(self, algs: impl IntoIterator<Item = Algorithm>) -> Self {
        algs.into_iter().fold(self, JwtBuilder::algorithm)
    }

    /// The shared secret `HS*` tokens are verified with: its raw bytes, at least as long as the
    /// hash (32 bytes for HS256, 48 for HS384, 64 for HS512, as RFC 7518 §3.2 requires).
    pub fn secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// The public key (a PEM `PUBLIC KEY`, or `RSA PUBLIC KEY`) `RS256`, `ES256` or `EdDSA` tokens
    /// are verified with. Exclusive with [`JwtBuilder::jwks_url`].
    pub fn public_key_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.public_key = Some(pem.into());
        self
    }

    /// The JWKS endpoint (`https://login.example.com/.well-known/jwks.json`) whose keys verify
    /// `RS256`, `ES256` and `EdDSA` tokens, chosen by the token's `kid`. Exclusive with
    /// [`JwtBuilder::public_key_pem`].
    pub fn jwks_url(mut self, url: Uri) -> Self {
        self.jwks_url = Some(url);
        self
    }

    /// The client the JWKS is fetched with. Default: a [`PlainHttpClient`] (plain `http://` only);
    /// give a TLS-capable one for an `https://` JWKS URL (the gateway does).
    pub fn client(mut self, client: Arc<dyn HttpClient>) -> Self {
        self.client = Some(client);
        self
    }

    /// How old the key set may grow before a request starts a background refresh. Default: 5 min.
    pub fn jwks_refresh(mut self, every: Duration) -> Self {
        self.jwks_refresh = every;
        self
    }

    /// The least time between two JWKS fetches, however many unknown `kid`s arrive. Default: 10 s.
    pub fn jwks_min_refresh(mut self, at_least: Duration) -> Self {
        self.jwks_min_refresh = at_least;
        self
    }

    /// The deadline of one JWKS fetch, body included. Default: 5 s, at most a minute.
    pub fn jwks_timeout(mut self, timeout: Duration) -> Self {
        self.jwks_timeout = timeout;
        self
    }

    /// Accepts tokens whose `iss` is `issuer` (call once per accepted issuer). With one or more
    /// issuers, `iss` is required.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.claims.issuers.push(issuer.into());
        self
    }

    /// Accepts tokens whose `aud` is or contains `audience` (call once per accepted audience).
    /// With one or more, `aud` is required; with none, it is not checked.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.claims.audiences.push(audience.into());
        self
    }

    /// The clock skew allowed on `exp` and `nbf`, in whole seconds. Default: 30 s, at most 1 h.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.claims.leeway = leeway;
        self
    }

    /// Whether tokens without `exp` (which would never expire) are refused. Default: `true`.
    pub fn require_exp(mut self, require: bool) -> Self {
        self.claims.require_exp = require;
        self
    }

    /// A claim every token must carry (not `null`), besides `exp`, `iss` and `aud`.
    pub fn required_claim(mut self, claim: impl Into<String>) -> Self {
        self.required_claims.push(claim.into());
        self
    }

    /// The claim (a string or a number) that names the [`AuthenticatedUser`](crate::http::AuthenticatedUser).
    /// Default: `sub`. A token without it is refused.
    pub fn user_claim(mut self, claim: impl Into<String>) -> Self {
        self.user_claim = claim.into();
        self
    }

    /// Copies claim `claim` (a string, number or boolean) into request header `header` for the
    /// inner layers and the upstream. Any value the client sent in that header is removed first.
    pub fn forward_claim(mut self, claim: impl Into<String>, header: HeaderName) -> Self {
        self.forward_claims.push((claim.into(), header));
        self
    }

    /// The protection space named in `WWW-Authenticate`. Default: `"strata"`. Printable ASCII
    /// without `"` or `\`.
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = realm.into();
        self
    }

    /// Checks the configuration and builds the layer. Errors name the config key at fault.
    pub fn build(self) -> Result<Jwt, ConfigError> {
        if self.algorithms.is_empty() {
            return Err(ConfigError::field("algorithms", format!("expected at least one of {}", algorithm_names())));
        }
        let hmac = self.hmac_key()?;
        let public = self.public_key()?;
        let jwks = self.jwks(public.is_some())?;
        for alg in self.algorithms.iter().filter(|a| !a.is_hmac()) {
            match &public {
                Some(key) if key.family != alg.family() => {
                    return Err(ConfigError::field(
                        "public_key",
                        format!(
                            "the file holds {}, {alg} needs {} (serve keys of several kinds with jwks_url)",
                            key.family.describe(),
                            alg.family().describe()
                        ),
                    ));
                }
                None if jwks.is_none() => {
                    return Err(ConfigError::field("algorithms", format!("{alg} needs `public_key` or `jwks_url`")));
                }
                _ => {}
            }
        }
        if self.claims.leeway > MAX_LEEWAY {
            return Err(ConfigError::field("leeway", "expected at most 1h"));
        }
        if self.claims.issuers.iter().any(String::is_empty) {
            return Err(ConfigError::field("issuer", "expected non-empty issuers"));
        }
        if self.claims.audiences.iter().any(String::is_empty) {
            return Err(ConfigError::field("audience", "expected non-empty audiences"));
        }
        if self.required_claims.iter().any(String::is_empty) {
            return Err(ConfigError::field("required_claims", "expected non-empty claim names"));
        }
        if self.user_claim.is_empty() {
            return Err(ConfigError::field("user_claim", "expected a claim name, such as \"sub\""));
        }
        for (i, (claim, header)) in self.forward_claims.iter().enumerate() {
            if claim.is_empty() {
                return Err(ConfigError::field("forward_claims", "expected non-empty claim names"));
            }
            if self.forward_claims[..i].iter().any(|(_, h)| h == header) {
                return Err(ConfigError::field(
                    "forward_claims",
                    format!("two claims are forwarded in header `{header}`: one header carries one claim"),
                ));
            }
            if [http::header::AUTHORIZATION, http::header::HOST, http::header::CONTENT_LENGTH].contains(header) {
                return Err(ConfigError::field(
                    "forward_claims",
                    format!("`{header}` is not a header to overwrite with a claim"),
                ));
            }
        }
        let challenge = realm_challenge(&self.realm)?;
        let accepted = self.algorithms.iter().map(|&alg| (alg, validation(alg, &self.claims))).collect();
        Ok(Jwt {
            accepted,
            keys: Keys { hmac, public, jwks },
            required_claims: self.required_claims,
            user_claim: self.user_claim,
            forward_claims: self.forward_claims,
            challenge,
            realm: self.realm,
        })
    }

    fn hmac_key(&self) -> Result<Option<Arc<DecodingKey>>, ConfigError> {
        let hmac: Vec<Algorithm> = self.algorithms.iter().copied().filter(|a| a.is_hmac()).collect();
        match (&self.secret, hmac.is_empty()) {
            (None, false) => Err(ConfigError::field("algorithms", format!("{} needs a `secret`", hmac[0]))),
            (Some(_), true) => Err(ConfigError::field(
                "secret",
                "a secret verifies only HS256, HS384 and HS512 tokens, and none is in `algorithms`",
            )),
            (None, true) => Ok(None),
            (Some(secret), false) => {
                for alg in hmac {
                    let least = match alg {
                        Algorithm::HS384 => 48,
                        Algorithm::HS512 => 64,
                        _ => 32,
                    };
                    if secret.len() < least {
                        return Err(ConfigError::field(
                            "secret",
                            format!(
                                "expected at least {least} bytes for {alg} (RFC 7518 §3.2), found {}",
                                secret.len()
                            ),
                        ));
                    }
                }
                Ok(Some(Arc::new(DecodingKey::from_secret(secret))))
            }
        }
    }

    fn public_key(&self) -> Result<Option<PublicKey>, ConfigError> {
        let Some(pem) = &self.public_key else { return Ok(None) };
        if self.algorithms.iter().all(|a| a.is_hmac()) {
            return Err(ConfigError::field(
                "public_key",
                "a public key verifies only RS256, ES256 and EdDSA tokens, and none is in `algorithms`",
            ));
        }
        if self.jwks_url.is_some() {
            return Err(ConfigError::field("jwks_url", "expected either `public_key` or `jwks_url`, not both"));
        }
        let text = String::from_utf8_lossy(pem);
        if text.contains("PRIVATE KEY") {
            return Err(ConfigError::field(
                "public_key",
                "the file holds a private key: give the public key only (`openssl pkey -in KEY -pubout`)",
            ));
        }
        let key = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            PublicKey { family: Family::Rsa, key: Arc::new(key) }
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            // An uncompressed P-256 point is 65 bytes; P-384 and others are not supported.
            if key.try_get_as_bytes().map(<[u8]>::len) != Ok(65) {
                return Err(ConfigError::field("public_key", "the EC key is not on P-256 (ES256 is)"));
            }
            PublicKey { family: Family::Ec, key: Arc::new(key) }
        } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            PublicKey { family: Family::Ed, key: Arc::new(key) }
        } else {
            return Err(ConfigError::field(
                "public_key",
                "expected a PEM public key (`-----BEGIN PUBLIC KEY-----`): RSA, P-256 EC or Ed25519",
            ));
        };
        Ok(Some(key))
    }

    fn jwks(&self, has_public_key: bool) -> Result<Option<Jwks>, ConfigError> {
        let Some(url) = &self.jwks_url else { return Ok(None) };
        if has_public_key {
            return Err(ConfigError::field("jwks_url", "expected either `public_key` or `jwks_url`, not both"));
        }
        if self.algorithms.iter().all(|a| a.is_hmac()) {
            return Err(ConfigError::field(
                "jwks_url",
                "JWKS keys verify only RS256, ES256 and EdDSA tokens, and none is in `algorithms`",
            ));
        }
        let scheme_ok = matches!(url.scheme_str(), Some("http" | "https"));
        if !scheme_ok || url.host().is_none() {
            return Err(ConfigError::field("jwks_url", format!("`{url}`: expected an http:// or https:// URL")));
        }
        if self.jwks_min_refresh < Duration::from_secs(1) {
            return Err(ConfigError::field(
                "jwks_min_refresh",
                "expected at least 1s: it is what stops forged key ids from hammering the identity provider",
            ));
        }
        if self.jwks_refresh < self.jwks_min_refresh {
            return Err(ConfigError::field("jwks_refresh", "expected at least `jwks_min_refresh`"));
        }
        if self.jwks_timeout.is_zero() || self.jwks_timeout > MAX_JWKS_TIMEOUT {
            return Err(ConfigError::field("jwks_timeout", "expected more than 0s and at most 1m"));
        }
        let client = self.client.clone().unwrap_or_else(|| Arc::new(PlainHttpClient::new()));
        Ok(Some(Jwks::new(url.clone(), client, self.jwks_refresh, self.jwks_min_refresh, self.jwks_timeout)))
    }
}

fn algorithm_names() -> String {
    Algorithm::ALL.iter().map(|a| a.name()).collect::<Vec<_>>().join(", ")
}

/// `Bearer realm="…"`, for a realm that is printable ASCII without `"` or `\`.
fn realm_challenge(realm: &str) -> Result<HeaderValue, ConfigError> {
    let printable = realm.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    if realm.is_empty() || !printable {
        return Err(ConfigError::field("realm", "expected printable ASCII without `\"` or `\\`"));
    }
    HeaderValue::from_str(&format!("Bearer realm=\"{realm}\""))
        .map_err(|_| ConfigError::field("realm", "expected printable ASCII without `\"` or `\\`"))
}
