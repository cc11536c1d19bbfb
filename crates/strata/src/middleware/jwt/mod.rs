//! `jwt`: bearer tokens ([RFC 6750]) that are JSON Web Tokens ([RFC 7519]), verified with a
//! secret, a public key or the keys an identity provider publishes (a JWKS URL).
//!
//! ```
//! use http::HeaderName;
//! use strata::http::{Request, Response, Stack};
//! use strata::middleware::jwt::{Algorithm, Jwt};
//!
//! # fn main() -> Result<(), strata::middleware::ConfigError> {
//! let jwt = Jwt::builder()
//!     .algorithm(Algorithm::HS256)
//!     .secret(b"a secret of at least thirty-two bytes!".to_vec())
//!     .issuer("https://login.example.com/")
//!     .audience("api")
//!     .forward_claim("sub", HeaderName::from_static("x-user"))
//!     .build()?;
//! let service = Stack::new().with(jwt).serve(|_req: Request| async { Response::new("hello".into()) });
//! # let _ = service;
//! # Ok(())
//! # }
//! ```
//!
//! The token comes from `Authorization: Bearer <token>` (the scheme in any case). A request
//! without one gets `401` with `WWW-Authenticate: Bearer realm="…"`; a token that does not verify
//! gets `401` with `WWW-Authenticate: Bearer realm="…", error="invalid_token",
//! error_description="…"`, a fixed sentence that never quotes the token. Both are marked
//! [`GeneratedError`], so an `errors` layer outside formats them. A verified token's `user_claim`
//! (default `sub`) becomes the [`AuthenticatedUser`] of the request (for a `rate_limit` keyed on
//! the user) and of the response (for an access log outside), and its `forward_claims` are copied
//! into request headers for the app or upstream, after any header of the same name the client sent
//! is removed.
//!
//! # Decisions worth knowing
//!
//! - **The accepted algorithms come from the configuration, never from the token.** A token whose
//!   `alg` is not configured is refused before any key is looked at, and each key is tied to its
//!   family: an HMAC secret verifies only `HS*` tokens, a public key only its own family. So the
//!   classic confusion (an `HS256` token "signed" with the RSA public key's bytes) and `alg: none`
//!   are refused whatever the token says. The token's embedded `jwk` and `jku` are ignored.
//! - **Claims.** `exp` is required and checked (unless `require_exp(false)`), `nbf` is checked
//!   when present, both with `leeway` (default 30 s) for clock skew. `iss` and `aud` are checked
//!   when configured, and then required. `aud` is not checked when no audience is configured:
//!   configure it whenever the identity provider serves more than one API.
//! - **JWKS.** The key set is fetched at the first request that needs it, then kept. A request
//!   that finds it older than `jwks_refresh` (default 5 min) starts a refresh in the background and
//!   goes on with the keys it has. A token whose `kid` is not in the set waits for one refresh,
//!   but at most one fetch starts per `jwks_min_refresh` (default 10 s) whatever the number of such
//!   tokens, so forged `kid`s cannot hammer the identity provider. Each fetch has a deadline
//!   (`jwks_timeout`, default 5 s). A refresh that fails keeps the keys already loaded.
//! - **No keys at all** (the JWKS never loaded: the provider is down or answers garbage) is
//!   `503 Service Unavailable` with `Retry-After`, not `401`: the token may well be valid, and a
//!   `401` would tell the client to throw it away. The reason is logged (the URL and the error,
//!   never a token).
//! - **A token without `kid`** is verified with the set's one key of the token's family; when the
//!   set has several, it is refused (which key would be a guess).
//! - `Authorization` is left in place for the app (it may need the token); it is never logged by
//!   this layer, and the reasons it gives for refusals never quote it.
//!
//! The crypto is [`jsonwebtoken`](https://docs.rs/jsonwebtoken) on its RustCrypto backend. The
//! module is the `jwt` feature (on by default), which brings the `client` feature for JWKS.
//!
//! [RFC 6750]: https://www.rfc-editor.org/rfc/rfc6750
//! [RFC 7519]: https://www.rfc-editor.org/rfc/rfc7519

mod builder;
#[cfg(feature = "config")]
mod config;
mod keys;
#[cfg(test)]
mod tests;

pub use builder::JwtBuilder;
#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub use config::JwtConfig;

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Map, Value};

use self::keys::{KeyError, Keys};
use crate::check::{Fact, Facts};
use crate::http::{AuthenticatedUser, GeneratedError, Next, Refusal, Request, Response, response};
use crate::stack::Middleware;

/// A signature algorithm a [`Jwt`] layer can accept. Which ones it accepts is its configuration's
/// choice, never the token's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// HMAC with SHA-256, with a shared secret of at least 32 bytes.
    HS256,
    /// HMAC with SHA-384, with a shared secret of at least 48 bytes.
    HS384,
    /// HMAC with SHA-512, with a shared secret of at least 64 bytes.
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256, with an RSA public key.
    RS256,
    /// ECDSA on P-256 with SHA-256, with an EC public key.
    ES256,
    /// Ed25519, with an Ed25519 public key.
    EdDSA,
}

impl Algorithm {
    /// Every algorithm, in the order error messages list them.
    pub const ALL: [Algorithm; 6] =
        [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512, Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

    /// The name a token's `alg` and the config use (`"RS256"`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
            Algorithm::RS256 => "RS256",
            Algorithm::ES256 => "ES256",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// The algorithm of that name (exact case, as in tokens), if strata supports it.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Whether it verifies with a shared secret (HS*) rather than a public key.
    pub fn is_hmac(self) -> bool {
        matches!(self, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
    }

    fn family(self) -> Family {
        match self {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Family::Hmac,
            Algorithm::RS256 => Family::Rsa,
            Algorithm::ES256 => Family::Ec,
            Algorithm::EdDSA => Family::Ed,
        }
    }

    fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::HS256 => jsonwebtoken::Algorithm::HS256,
            Algorithm::HS384 => jsonwebtoken::Algorithm::HS384,
            Algorithm::HS512 => jsonwebtoken::Algorithm::HS512,
            Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        }
    }

    fn from_jsonwebtoken(alg: jsonwebtoken::Algorithm) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.to_jsonwebtoken() == alg)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kind of key an algorithm verifies with: a key of one family never verifies another's tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

impl Family {
    fn describe(self) -> &'static str {
        match self {
            Family::Hmac => "an HMAC secret",
            Family::Rsa => "an RSA key",
            Family::Ec => "a P-256 EC key",
            Family::Ed => "an Ed25519 key",
        }
    }
}

/// The bearer-token layer (kind `jwt`). Build it with [`Jwt::builder`].
pub struct Jwt {
    /// The accepted algorithms, each with its precomputed claim checks.
    accepted: Vec<(Algorithm, Validation)>,
    keys: Keys,
    required_claims: Vec<String>,
    user_claim: String,
    /// Claim name → request header, in configuration order.
    forward_claims: Vec<(String, HeaderName)>,
    /// `Bearer realm="…"`, the challenge of a request without a token.
    challenge: HeaderValue,
    realm: String,
}

impl fmt::Debug for Jwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwt")
            .field("algorithms", &self.accepted.iter().map(|(a, _)| a.name()).collect::<Vec<_>>())
            .field("keys", &self.keys)
            .field("required_claims", &self.required_claims)
            .field("user_claim", &self.user_claim)
            .field("forward_claims", &self.forward_claims)
            .field("realm", &self.realm)
            .finish()
    }
}

/// Why a token was refused: the sentence clients read (in `error_description` and the problem's
/// detail) and the reason for `explain`, which may name configured values but never the token.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Invalid {
    description: &'static str,
    reason: String,
}

impl Invalid {
    fn new(description: &'static str, reason: impl Into<String>) -> Self {
        Invalid { description, reason: reason.into() }
    }
}

const MALFORMED: &str = "The access token is malformed.";
const BAD_ALGORITHM: &str = "The access token's algorithm is not accepted.";
const BAD_SIGNATURE: &str = "The access token's signature is invalid.";
const EXPIRED: &str = "The access token expired.";
const NOT_YET_VALID: &str = "The access token is not valid yet.";
const BAD_ISSUER: &str = "The access token's issuer is not accepted.";
const BAD_AUDIENCE: &str = "The access token's audience is not accepted.";
const MISSING_CLAIM: &str = "The access token lacks a required claim.";
const UNKNOWN_KEY: &str = "The access token was signed with an unknown key.";
const KEYS_UNAVAILABLE: &str = "The keys that verify access tokens are unavailable; retry shortly.";

/// What a verified token gives the request.
struct Verified {
    user: Arc<str>,
    claims: Map<String, Value>,
}

enum Failure {
    Invalid(Invalid),
    /// No key could be loaded (a JWKS that never loaded), with the seconds to retry after.
    KeysUnavailable(u64),
}

impl Jwt {
    /// Starts a [`JwtBuilder`] with the defaults and no algorithm.
    pub fn builder() -> JwtBuilder {
        JwtBuilder::default()
    }

    /// The accepted algorithms, in configuration order.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        self.accepted.iter().map(|(a, _)| *a).collect()
    }

    /// How many times the JWKS was fetched (attempts, failed ones included); 0 without a JWKS URL.
    pub fn jwks_fetches(&self) -> u64 {
        self.keys.fetches()
    }

    async fn verify(&self, token: &str) -> Result<Verified, Failure> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Failure::Invalid(Invalid::new(MALFORMED, "bearer token with a malformed JOSE header")))?;
        let accepted = Algorithm::from_jsonwebtoken(header.alg)
            .and_then(|alg| self.accepted.iter().find(|(a, _)| *a == alg))
            .ok_or_else(|| {
                Failure::Invalid(Invalid::new(
                    BAD_ALGORITHM,
                    format!("bearer token signed with {:?}, not one of the configured algorithms", header.alg),
                ))
            })?;
        let (alg, validation) = (accepted.0, &accepted.1);
        let key: Arc<DecodingKey> = self.keys.key_for(alg, header.kid.as_deref()).await.map_err(|e| match e {
            KeyError::Unknown(why) => Failure::Invalid(Invalid::new(UNKNOWN_KEY, why)),
            KeyError::Unavailable { retry_after } => Failure::KeysUnavailable(retry_after),
        })?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, validation)
            .map_err(|e| Failure::Invalid(invalid(e.kind())))?;
        let claims = data.claims;
        if let Some(missing) = self.required_claims.iter().find(|c| claims.get(c.as_str()).is_none_or(Value::is_null)) {
            return Err(Failure::Invalid(Invalid::new(
                MISSING_CLAIM,
                format!("bearer token without claim `{missing}`"),
            )));
        }
        let user = match claims.get(&self.user_claim).and_then(claim_text) {
            Some(user) => Arc::from(user.as_str()),
            None => {
                let reason = format!("bearer token without a string or number `{}` (user_claim)", self.user_claim);
                return Err(Failure::Invalid(Invalid::new(MISSING_CLAIM, reason)));
            }
        };
        Ok(Verified { user, claims })
    }

    /// The `401` of a request without a bearer token.
    fn missing(&self) -> Response {
        let mut res = response::text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
        res.headers_mut().insert(header::WWW_AUTHENTICATE, self.challenge.clone());
        res.extensions_mut().insert(GeneratedError::with_detail("This resource needs a bearer token."));
        Refusal::mark(res, "no bearer token: no single `Authorization: Bearer` header")
    }

    /// The `401` of a token that did not verify (RFC 6750 §3.1 `invalid_token`).
    fn invalid(&self, invalid: Invalid) -> Response {
        let mut res = response::text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
        let challenge = format!(
            "Bearer realm=\"{}\", error=\"invalid_token\", error_description=\"{}\"",
            self.realm, invalid.description
        );
        // The realm was checked at build time and the descriptions are fixed ASCII sentences.
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        res.extensions_mut().insert(GeneratedError::with_detail(invalid.description));
        Refusal::mark(res, format!("invalid bearer token: {}", invalid.reason))
    }

    fn unavailable(&self, retry_after: u64) -> Response {
        let mut res = response::text(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n");
        res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
        res.extensions_mut().insert(GeneratedError::with_detail(KEYS_UNAVAILABLE));
        Refusal::mark(res, "the JWKS could not be loaded: no key to verify bearer tokens with")
    }
}

/// A claim as header text: strings as they are, numbers and booleans written out; `None` for
/// arrays, objects and null.
fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The one bearer token of the request: `None` without an `Authorization: Bearer` header,
/// `Some(Err)` for two `Authorization` headers or an empty token.
fn bearer_token(headers: &HeaderMap) -> Option<Result<&str, Invalid>> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    let text = value.to_str().ok()?.trim();
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    if values.next().is_some() {
        return Some(Err(Invalid::new(MALFORMED, "several Authorization headers")));
    }
    let token = rest.trim();
    if token.is_empty() || token.contains(' ') {
        return Some(Err(Invalid::new(MALFORMED, "an empty or space-separated bearer token")));
    }
    Some(Ok(token))
}

/// The client's sentence for a token `jsonwebtoken` refused, with the reason for `explain`.
fn invalid(kind: &ErrorKind) -> Invalid {
    match kind {
        ErrorKind::ExpiredSignature => Invalid::new(EXPIRED, "bearer token expired (exp, with leeway)"),
        ErrorKind::ImmatureSignature => Invalid::new(NOT_YET_VALID, "bearer token not valid yet (nbf, with leeway)"),
        ErrorKind::InvalidIssuer => Invalid::new(BAD_ISSUER, "bearer token issuer (iss) not in issuer"),
        ErrorKind::InvalidAudience => Invalid::new(BAD_AUDIENCE, "bearer token audience (aud) not in audience"),
        ErrorKind::MissingRequiredClaim(claim) => {
            Invalid::new(MISSING_CLAIM, format!("bearer token without claim `{}`", claim.escape_debug()))
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            Invalid::new(MALFORMED, format!("bearer token claim `{}` is not a NumericDate", claim.escape_debug()))
        }
        ErrorKind::InvalidSignature => Invalid::new(BAD_SIGNATURE, "bearer token signature does not verify"),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            Invalid::new(BAD_ALGORITHM, "bearer token algorithm does not fit the key")
        }
        ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidEddsaKey => {
            Invalid::new(BAD_SIGNATURE, "the key does not fit the bearer token's algorithm")
        }
        _ => Invalid::new(MALFORMED, "bearer token is not a well-formed JWS (base64url, JSON claims)"),
    }
}

impl Middleware<Request, Response> for Jwt {
    async fn handle(&self, mut req: Request, next: Next) -> Response {
        let verified = match bearer_token(req.headers()) {
            None => return self.missing(),
            Some(Err(invalid)) => return self.invalid(invalid),
            Some(Ok(token)) => Box::pin(self.verify(token)).await,
        };
        let verified = match verified {
            Ok(verified) => verified,
            Err(Failure::Invalid(invalid)) => return self.invalid(invalid),
            Err(Failure::KeysUnavailable(retry_after)) => return self.unavailable(retry_after),
        };
        let headers = req.headers_mut();
        for (claim, name) in &self.forward_claims {
            // Whatever the client sent under this name goes, whether or not the token has the claim.
            headers.remove(name);
            let value = verified.claims.get(claim).and_then(claim_text);
            if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                headers.insert(name.clone(), value);
            }
        }
        let who = AuthenticatedUser(verified.user);
        req.extensions_mut().insert(who.clone());
        let mut res = next.run(req).await;
        res.extensions_mut().insert(who);
        res
    }

    fn kind(&self) -> &'static str {
        "jwt"
    }

    fn facts(&self) -> Facts {
        Facts::of(&[Fact::ShortCircuits, Fact::CanFail, Fact::Authenticates, Fact::SetsUser])
    }
}

/// The claim checks of one algorithm: `jsonwebtoken` checks `exp`, `nbf`, `iss` and `aud`; the
/// layer checks the other required claims itself.
fn validation(alg: Algorithm, settings: &builder::ClaimSettings) -> Validation {
    let mut validation = Validation::new(alg.to_jsonwebtoken());
    validation.leeway = settings.leeway.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    let mut required: Vec<&str> = Vec::new();
    if settings.require_exp {
        required.push("exp");
    }
    if !settings.issuers.is_empty() {
        validation.set_issuer(&settings.issuers);
        required.push("iss");
    }
    if settings.audiences.is_empty() {
        validation.validate_aud = false;
    } else {
        validation.set_audience(&settings.audiences);
        required.push("aud");
    }
    validation.set_required_spec_claims(&required);
    validation
}
