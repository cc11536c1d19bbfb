//! The keys tokens are verified with: a secret, a public key, or a JWKS fetched, cached and
//! refreshed off the request path where it can be.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use http::{Uri, header};
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use serde_json::Value;

use super::{Algorithm, Family};
use crate::http::Body;
use crate::http::client::HttpClient;

/// The largest JWKS document read: real ones are a few kilobytes.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// A public key from a PEM file, with the family it verifies.
pub(super) struct PublicKey {
    pub(super) family: Family,
    pub(super) key: Arc<DecodingKey>,
}

/// Every key a layer has: each verifies only tokens of its own family.
pub(super) struct Keys {
    pub(super) hmac: Option<Arc<DecodingKey>>,
    pub(super) public: Option<PublicKey>,
    pub(super) jwks: Option<Jwks>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("secret", &self.hmac.as_ref().map(|_| "[redacted]"))
            .field("public_key", &self.public.as_ref().map(|k| k.family))
            .field("jwks_url", &self.jwks.as_ref().map(|j| j.shared.url.to_string()))
            .finish()
    }
}

/// Why no key was found for a token.
pub(super) enum KeyError {
    /// No key fits the token (an unknown `kid`): the token is refused, with the reason for `explain`.
    Unknown(String),
    /// No key set could be loaded at all; retry after that many seconds.
    Unavailable { retry_after: u64 },
}

impl Keys {
    /// The key a token signed with `alg` (and naming `kid`) is verified with.
    pub(super) async fn key_for(&self, alg: Algorithm, kid: Option<&str>) -> Result<Arc<DecodingKey>, KeyError> {
        if alg.is_hmac() {
            return self.hmac.clone().ok_or_else(|| KeyError::Unknown(format!("no secret for {alg}")));
        }
        if let Some(public) = &self.public {
            return match public.family == alg.family() {
                true => Ok(public.key.clone()),
                false => Err(KeyError::Unknown(format!("the public key does not verify {alg}"))),
            };
        }
        match &self.jwks {
            Some(jwks) => jwks.key_for(alg, kid).await,
            None => Err(KeyError::Unknown(format!("no key for {alg}"))),
        }
    }

    /// JWKS fetch attempts so far.
    pub(super) fn fetches(&self) -> u64 {
        self.jwks.as_ref().map_or(0, |j| j.shared.attempts.load(Ordering::Acquire))
    }
}

/// A JWKS endpoint's keys, fetched at first use and refreshed when stale or asked for an unknown
/// `kid`, at most once per `min_refresh`.
pub(super) struct Jwks {
    shared: Arc<Shared>,
}

struct Shared {
    url: Uri,
    client: Arc<dyn HttpClient>,
    refresh: Duration,
    min_refresh: Duration,
    timeout: Duration,
    /// The loaded keys: read on every request without a lock.
    set: ArcSwapOption<KeySet>,
    /// One fetch at a time; a request that waited on it learns from `attempts` whether a fetch
    /// ran meanwhile, and then does not fetch again.
    fetching: tokio::sync::Mutex<()>,
    attempts: AtomicU64,
    /// Milliseconds since `epoch` at the last fetch's start; `NEVER` before the first.
    last_attempt: AtomicU64,
    epoch: Instant,
    /// Whether a background refresh is under way, so a burst of requests starts one.
    refreshing: AtomicBool,
}

const NEVER: u64 = u64::MAX;

struct KeySet {
    keys: Vec<JwkKey>,
    loaded: Instant,
}

struct JwkKey {
    kid: Option<String>,
    family: Family,
    /// The key's own `alg`, when the JWKS names one: then it verifies only that algorithm.
    alg: Option<Algorithm>,
    key: Arc<DecodingKey>,
}

enum Lookup {
    Found(Arc<DecodingKey>),
    /// A token without `kid`, and several keys of its family.
    Ambiguous,
    NotFound,
}

impl KeySet {
    fn find(&self, alg: Algorithm, kid: Option<&str>) -> Lookup {
        let mut fitting = self.keys.iter().filter(|k| {
            k.family == alg.family() && k.alg.is_none_or(|a| a == alg) && (kid.is_none() || k.kid.as_deref() == kid)
        });
        match (fitting.next(), fitting.next()) {
            (Some(key), None) => Lookup::Found(key.key.clone()),
            (Some(_), Some(_)) if kid.is_none() => Lookup::Ambiguous,
            // Two keys with one kid: the first, as the JWKS lists them.
            (Some(key), Some(_)) => Lookup::Found(key.key.clone()),
            (None, _) => Lookup::NotFound,
        }
    }
}

impl Jwks {
    pub(super) fn new(
        url: Uri,
        client: Arc<dyn HttpClient>,
        refresh: Duration,
        min_refresh: Duration,
        timeout: Duration,
    ) -> Self {
        Jwks {
            shared: Arc::new(Shared {
                url,
                client,
                refresh,
                min_refresh,
                timeout,
                set: ArcSwapOption::empty(),
                fetching: tokio::sync::Mutex::new(()),
                attempts: AtomicU64::new(0),
                last_attempt: AtomicU64::new(NEVER),
                epoch: Instant::now(),
                refreshing: AtomicBool::new(false),
            }),
        }
    }

    async fn key_for(&self, alg: Algorithm, kid: Option<&str>) -> Result<Arc<DecodingKey>, KeyError> {
        let shared = &self.shared;
        let seen = shared.attempts.load(Ordering::Acquire);
        if let Some(set) = shared.set.load_full() {
            if set.loaded.elapsed() >= shared.refresh {
                shared.refresh_in_background();
            }
            match set.find(alg, kid) {
                Lookup::Found(key) => return Ok(key),
                Lookup::Ambiguous => return Err(ambiguous(alg)),
                Lookup::NotFound => {}
            }
            if !shared.may_fetch() {
                return Err(KeyError::Unknown(format!(
                    "no {alg} key with that kid in the JWKS, which was fetched less than jwks_min_refresh ago"
                )));
            }
        }
        shared.fetch_once(seen).await;
        match shared.set.load_full() {
            None => Err(KeyError::Unavailable { retry_after: shared.seconds_to_next_fetch() }),
            Some(set) => match set.find(alg, kid) {
                Lookup::Found(key) => Ok(key),
                Lookup::Ambiguous => Err(ambiguous(alg)),
                Lookup::NotFound => Err(KeyError::Unknown(format!("no {alg} key with that kid in the JWKS"))),
            },
        }
    }
}

fn ambiguous(alg: Algorithm) -> KeyError {
    KeyError::Unknown(format!("token without kid, and the JWKS has several {alg} keys"))
}

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(NEVER - 1)
    }

    fn may_fetch(&self) -> bool {
        let last = self.last_attempt.load(Ordering::Acquire);
        last == NEVER || self.now_ms().saturating_sub(last) >= millis(self.min_refresh)
    }

    /// Whole seconds (at least one) until `min_refresh` allows the next fetch.
    fn seconds_to_next_fetch(&self) -> u64 {
        let last = self.last_attempt.load(Ordering::Acquire);
        let next = if last == NEVER { 0 } else { (last + millis(self.min_refresh)).saturating_sub(self.now_ms()) };
        next.div_ceil(1000).max(1)
    }

    /// Starts a refresh on the runtime, unless one is under way or `min_refresh` forbids it.
    fn refresh_in_background(self: &Arc<Self>) {
        if !self.may_fetch() || self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.refreshing.store(false, Ordering::Release);
            return;
        };
        let shared = self.clone();
        runtime.spawn(async move {
            let seen = shared.attempts.load(Ordering::Acquire);
            shared.fetch_once(seen).await;
            shared.refreshing.store(false, Ordering::Release);
        });
    }

    /// Fetches the JWKS unless a fetch ran since `seen` attempts, or `min_refresh` forbids it.
    async fn fetch_once(&self, seen: u64) {
        let _one_at_a_time = self.fetching.lock().await;
        if self.attempts.load(Ordering::Acquire) != seen || !self.may_fetch() {
            return;
        }
        self.last_attempt.store(self.now_ms(), Ordering::Release);
        self.attempts.fetch_add(1, Ordering::AcqRel);
        let loaded = match tokio::time::timeout(self.timeout, self.load()).await {
            Ok(loaded) => loaded,
            Err(_) => Err(format!("no answer within jwks_timeout ({:?})", self.timeout)),
        };
        match loaded {
            Ok(keys) => {
                tracing::debug!(url = %self.url, keys = keys.len(), "JWKS loaded");
                self.set.store(Some(Arc::new(KeySet { keys, loaded: Instant::now() })));
            }
            Err(error) => {
                let kept = if self.set.load().is_some() { "keeping the keys loaded before" } else { "no keys yet" };
                tracing::warn!(url = %self.url, error = %error, "JWKS fetch failed; {kept}");
            }
        }
    }

    async fn load(&self) -> Result<Vec<JwkKey>, String> {
        let req = http::Request::get(self.url.clone())
            .header(header::ACCEPT, "application/jwk-set+json, application/json")
            .body(Body::empty())
            .map_err(|e| e.to_string())?;
        let res = self.client.send(req).await.map_err(|e| e.to_string())?;
        if !res.status().is_success() {
            return Err(format!("the endpoint answered {}", res.status()));
        }
        let body = res.into_body().collect_limited(MAX_JWKS_BYTES).await.map_err(|e| e.to_string())?;
        parse_jwks(&body)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(NEVER - 1)
}

/// The signing keys of a JWKS document that strata can use. Keys for encryption, of other curves
/// or algorithms, and symmetric (`oct`) keys are skipped: a published key set is public, so an
/// HMAC key in it would let anyone sign.
fn parse_jwks(body: &[u8]) -> Result<Vec<JwkKey>, String> {
    let document: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let Some(Value::Array(entries)) = document.get("keys") else {
        return Err("not a JWK set: no `keys` array".to_string());
    };
    let keys: Vec<JwkKey> = entries.iter().filter_map(usable_key).collect();
    if keys.is_empty() {
        return Err(format!("none of its {} keys is an RSA, P-256 or Ed25519 signing key", entries.len()));
    }
    Ok(keys)
}

fn usable_key(entry: &Value) -> Option<JwkKey> {
    if entry.get("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let alg = match entry.get("alg") {
        None => None,
        Some(Value::String(name)) => Some(Algorithm::from_name(name)?),
        Some(_) => return None,
    };
    let kid = match entry.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return None,
    };
    let jwk: Jwk = serde_json::from_value(entry.clone()).ok()?;
    let (family, key) = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => (Family::Rsa, DecodingKey::from_rsa_components(&rsa.n, &rsa.e).ok()?),
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            (Family::Ec, DecodingKey::from_ec_components(&ec.x, &ec.y).ok()?)
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            (Family::Ed, DecodingKey::from_ed_components(&okp.x).ok()?)
        }
        _ => return None,
    };
    if alg.is_some_and(|a| a.family() != family) {
        return None;
    }
    Some(JwkKey { kid, family, alg, key: Arc::new(key) })
}

#[cfg(test)]
pub(super) fn parse_jwks_for_test(body: &[u8]) -> Result<usize, String> {
    parse_jwks(body).map(|keys| keys.len())
}
