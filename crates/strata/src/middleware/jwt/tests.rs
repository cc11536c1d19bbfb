//! The `jwt` layer against tokens minted here with the test keys in `testdata/` (throw-away keys,
//! made for these tests only).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderName, StatusCode, Uri};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header, encode, get_current_timestamp};
use serde_json::{Value, json};

use super::*;
use crate::http::client::HttpClient;
use crate::http::{Body, BoxError, Service, Stack};
use crate::middleware::test_support::{body_text, header, request};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const RSA_PRIVATE: &[u8] = include_bytes!("testdata/rsa_private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("testdata/rsa_public.pem");
const RSA_OTHER_PRIVATE: &[u8] = include_bytes!("testdata/rsa_other_private.pem");
const EC_PRIVATE: &[u8] = include_bytes!("testdata/ec_private.pem");
const EC_PUBLIC: &[u8] = include_bytes!("testdata/ec_public.pem");
const EC_OTHER_PRIVATE: &[u8] = include_bytes!("testdata/ec_other_private.pem");
const EC_P384_PUBLIC: &[u8] = include_bytes!("testdata/ec_p384_public.pem");
const ED_PRIVATE: &[u8] = include_bytes!("testdata/ed_private.pem");
const ED_PUBLIC: &[u8] = include_bytes!("testdata/ed_public.pem");
const ED_OTHER_PRIVATE: &[u8] = include_bytes!("testdata/ed_other_private.pem");

fn encoding_key(alg: Algorithm, private: &[u8]) -> EncodingKey {
    match alg.family() {
        Family::Hmac => EncodingKey::from_secret(private),
        Family::Rsa => EncodingKey::from_rsa_pem(private).unwrap(),
        Family::Ec => EncodingKey::from_ec_pem(private).unwrap(),
        Family::Ed => EncodingKey::from_ed_pem(private).unwrap(),
    }
}

/// A token signed with `alg` and `private` (a secret or a PEM private key), with `kid` if given.
fn mint(alg: Algorithm, private: &[u8], kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg.to_jsonwebtoken());
    header.kid = kid.map(String::from);
    encode(&header, claims, &encoding_key(alg, private)).unwrap()
}

fn now() -> u64 {
    get_current_timestamp()
}

/// Claims that pass every default check: a user and an expiry an hour away.
fn fresh() -> Value {
    json!({ "sub": "alice", "exp": now() + 3600 })
}

/// A service whose app answers with the user it saw and the `x-user` header it received.
fn service(jwt: Jwt) -> Service {
    Stack::new().with(jwt).serve(|req: Request| async move {
        let user = req.extensions().get::<AuthenticatedUser>().map(|u| u.0.to_string()).unwrap_or_default();
        let forwarded: Vec<String> =
            req.headers().get_all("x-user").iter().map(|v| v.to_str().unwrap().to_string()).collect();
        let role = req.headers().get("x-role").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        response::text(StatusCode::OK, format!("{user}|{}|{role}", forwarded.join(",")))
    })
}

async fn call(service: &Service, token: &str) -> Response {
    service.call(request("GET", "/", &[("authorization", &format!("Bearer {token}"))])).await
}

/// The `error_description` of an `invalid_token` challenge.
fn description(res: &Response) -> String {
    let challenge = header(res, header::WWW_AUTHENTICATE).unwrap_or_default();
    assert!(challenge.starts_with("Bearer realm=\"strata\", error=\"invalid_token\""), "{challenge}");
    challenge.split("error_description=\"").nth(1).unwrap().trim_end_matches('"').to_string()
}

fn layer(alg: Algorithm, key: &[u8]) -> Jwt {
    let builder = Jwt::builder().algorithm(alg);
    match alg.is_hmac() {
        true => builder.secret(key.to_vec()),
        false => builder.public_key_pem(key.to_vec()),
    }
    .build()
    .unwrap()
}

#[tokio::test]
async fn each_algorithm_accepts_its_key_and_refuses_another() {
    let other_secret = b"another secret of sixty-four bytes, quite unlike the first one!!";
    // (algorithm, key the layer verifies with, key that signs, a key that is not the right one)
    type Case<'a> = (Algorithm, &'a [u8], &'a [u8], &'a [u8]);
    let cases: [Case; 6] = [
        (Algorithm::HS256, SECRET, SECRET, other_secret),
        (Algorithm::HS384, SECRET, SECRET, other_secret),
        (Algorithm::HS512, SECRET, SECRET, other_secret),
        (Algorithm::RS256, RSA_PUBLIC, RSA_PRIVATE, RSA_OTHER_PRIVATE),
        (Algorithm::ES256, EC_PUBLIC, EC_PRIVATE, EC_OTHER_PRIVATE),
        (Algorithm::EdDSA, ED_PUBLIC, ED_PRIVATE, ED_OTHER_PRIVATE),
    ];
    for (alg, verify_with, sign_with, wrong) in cases {
        let service = service(layer(alg, verify_with));
        let res = call(&service, &mint(alg, sign_with, None, &fresh())).await;
        assert_eq!(res.status(), StatusCode::OK, "{alg}");
        assert_eq!(res.extensions().get::<AuthenticatedUser>().map(|u| &*u.0), Some("alice"), "{alg}");
        assert_eq!(body_text(res).await, "alice||", "{alg}");

        let res = call(&service, &mint(alg, wrong, None, &fresh())).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{alg} with the wrong key");
        assert_eq!(description(&res), BAD_SIGNATURE, "{alg}");
        assert_eq!(res.extensions().get::<GeneratedError>().and_then(|g| g.detail()), Some(BAD_SIGNATURE));
    }
}

#[tokio::test]
async fn a_missing_token_gets_the_bare_challenge_and_the_scheme_is_case_insensitive() {
    let service = service(layer(Algorithm::HS256, SECRET));
    for headers in [vec![], vec![("authorization", "Basic YWxpY2U6d29uZGVybGFuZA==")]] {
        let res = service.call(request("GET", "/", &headers)).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(header(&res, header::WWW_AUTHENTICATE), Some("Bearer realm=\"strata\""));
        assert!(res.extensions().get::<GeneratedError>().is_some());
    }
    let token = mint(Algorithm::HS256, SECRET, None, &fresh());
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let res = service.call(request("GET", "/", &[("authorization", &format!("{scheme} {token}"))])).await;
        assert_eq!(res.status(), StatusCode::OK, "{scheme}");
    }
    for broken in ["Bearer", "Bearer ", "Bearer a b", "Bearer not.a.token", "Bearer ..."] {
        let res = service.call(request("GET", "/", &[("authorization", broken)])).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{broken}");
        assert_eq!(description(&res), MALFORMED, "{broken}");
    }
    let auth = format!("Bearer {token}");
    let res = service.call(request("GET", "/", &[("authorization", &auth), ("authorization", &auth)])).await;
    assert_eq!(description(&res), MALFORMED, "two Authorization headers");
}

#[tokio::test]
async fn exp_and_nbf_are_checked_with_the_leeway() {
    let service = service(
        Jwt::builder().algorithm(Algorithm::HS256).secret(SECRET).leeway(Duration::from_secs(60)).build().unwrap(),
    );
    let token = |claims: Value| mint(Algorithm::HS256, SECRET, None, &claims);
    let cases = [
        (json!({ "sub": "a", "exp": now() - 120 }), Some(EXPIRED)),
        (json!({ "sub": "a", "exp": now() - 30 }), None),
        (json!({ "sub": "a", "exp": now() + 600, "nbf": now() + 120 }), Some(NOT_YET_VALID)),
        (json!({ "sub": "a", "exp": now() + 600, "nbf": now() + 30 }), None),
        (json!({ "sub": "a" }), Some(MISSING_CLAIM)),
        // Not a NumericDate: no usable `exp`.
        (json!({ "sub": "a", "exp": "tomorrow" }), Some(MISSING_CLAIM)),
    ];
    for (claims, refused) in cases {
        let res = call(&service, &token(claims.clone())).await;
        match refused {
            Some(why) => assert_eq!(description(&res), why, "{claims}"),
            None => assert_eq!(res.status(), StatusCode::OK, "{claims}"),
        }
    }
    let lenient = service_without_exp();
    assert_eq!(call(&lenient, &token(json!({ "sub": "a" }))).await.status(), StatusCode::OK);
    assert_eq!(description(&call(&lenient, &token(json!({ "sub": "a", "exp": now() - 120 }))).await), EXPIRED);
}

fn service_without_exp() -> Service {
    service(
        Jwt::builder()
            .algorithm(Algorithm::HS256)
            .secret(SECRET)
            .leeway(Duration::ZERO)
            .require_exp(false)
            .build()
            .unwrap(),
    )
}

#[tokio::test]
async fn issuer_and_audience_must_match_and_be_present_when_configured() {
    let jwt = Jwt::builder()
        .algorithm(Algorithm::HS256)
        .secret(SECRET)
        .issuer("https://idp.example")
        .issuer("https://idp2.example")
        .audience("api")
        .build()
        .unwrap();
    let service = service(jwt);
    let exp = now() + 600;
    let cases = [
        (json!({ "sub": "a", "exp": exp, "iss": "https://idp.example", "aud": "api" }), None),
        (json!({ "sub": "a", "exp": exp, "iss": "https://idp2.example", "aud": ["other", "api"] }), None),
        (json!({ "sub": "a", "exp": exp, "iss": "https://evil.example", "aud": "api" }), Some(BAD_ISSUER)),
        (json!({ "sub": "a", "exp": exp, "iss": "https://idp.example", "aud": "other" }), Some(BAD_AUDIENCE)),
        (json!({ "sub": "a", "exp": exp, "aud": "api" }), Some(MISSING_CLAIM)),
        (json!({ "sub": "a", "exp": exp, "iss": "https://idp.example" }), Some(MISSING_CLAIM)),
    ];
    for (claims, refused) in cases {
        let res = call(&service, &mint(Algorithm::HS256, SECRET, None, &claims)).await;
        match refused {
            Some(why) => assert_eq!(description(&res), why, "{claims}"),
            None => assert_eq!(res.status(), StatusCode::OK, "{claims}"),
        }
    }
    // Without a configured audience, `aud` is not checked.
    let open = service_without_exp();
    let claims = json!({ "sub": "a", "aud": "anything" });
    assert_eq!(call(&open, &mint(Algorithm::HS256, SECRET, None, &claims)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn required_claims_and_the_user_claim_must_be_present() {
    let jwt = Jwt::builder()
        .algorithm(Algorithm::HS256)
        .secret(SECRET)
        .required_claim("tenant")
        .user_claim("uid")
        .build()
        .unwrap();
    let service = service(jwt);
    let exp = now() + 600;
    let ok =
        call(&service, &mint(Algorithm::HS256, SECRET, None, &json!({ "uid": 42, "tenant": "t", "exp": exp }))).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(body_text(ok).await, "42||", "a numeric user claim names the user");
    for claims in [
        json!({ "uid": 42, "exp": exp }),
        json!({ "uid": 42, "tenant": null, "exp": exp }),
        json!({ "tenant": "t", "exp": exp }),
        json!({ "uid": ["a"], "tenant": "t", "exp": exp }),
    ] {
        let res = call(&service, &mint(Algorithm::HS256, SECRET, None, &claims)).await;
        assert_eq!(description(&res), MISSING_CLAIM, "{claims}");
        let reason = res.extensions().get::<Refusal>().unwrap().reason.to_string();
        assert!(reason.contains("tenant") || reason.contains("uid"), "{reason}");
    }
}

#[tokio::test]
async fn forwarded_claims_replace_the_headers_the_client_sent() {
    let jwt = Jwt::builder()
        .algorithm(Algorithm::HS256)
        .secret(SECRET)
        .forward_claim("sub", HeaderName::from_static("x-user"))
        .forward_claim("role", HeaderName::from_static("x-role"))
        .build()
        .unwrap();
    let service = service(jwt);
    let token = mint(Algorithm::HS256, SECRET, None, &fresh());
    let spoofed = [
        ("authorization", format!("Bearer {token}")),
        ("x-user", "admin".into()),
        ("x-user", "root".into()),
        ("x-role", "superuser".into()),
    ];
    let headers: Vec<(&str, &str)> = spoofed.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let res = service.call(request("GET", "/", &headers)).await;
    assert_eq!(res.status(), StatusCode::OK);
    // `sub` replaces both spoofed values; the token has no `role`, so the spoofed one is just removed.
    assert_eq!(body_text(res).await, "alice|alice|");
    let with_role = mint(Algorithm::HS256, SECRET, None, &json!({ "sub": "bob", "role": 7, "exp": now() + 60 }));
    assert_eq!(body_text(call(&service, &with_role).await).await, "bob|bob|7");
}

#[tokio::test]
async fn alg_none_is_refused() {
    let service = service(layer(Algorithm::HS256, SECRET));
    // `{"alg":"none","typ":"JWT"}` in base64url, before the claims of a real token and no signature.
    let real = mint(Algorithm::HS256, SECRET, None, &fresh());
    let claims = real.split('.').nth(1).unwrap();
    let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{claims}.");
    let res = call(&service, &unsigned).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(description(&res), MALFORMED);
    // The same claims with a real signature pass: it is the algorithm that is refused.
    assert_eq!(call(&service, &mint(Algorithm::HS256, SECRET, None, &fresh())).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_hs256_token_signed_with_the_rsa_public_key_is_refused() {
    // The classic confusion: the attacker knows the public key and uses its PEM bytes as an HMAC secret.
    let forged = mint(Algorithm::HS256, RSA_PUBLIC, None, &fresh());
    let rs256_only = service(layer(Algorithm::RS256, RSA_PUBLIC));
    let res = call(&rs256_only, &forged).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(description(&res), BAD_ALGORITHM);
    // Accepting HS256 too (with its own secret) does not make the public key a secret.
    let both = Jwt::builder()
        .algorithms([Algorithm::RS256, Algorithm::HS256])
        .public_key_pem(RSA_PUBLIC)
        .secret(SECRET)
        .build()
        .unwrap();
    let both = service(both);
    assert_eq!(description(&call(&both, &forged).await), BAD_SIGNATURE);
    assert_eq!(call(&both, &mint(Algorithm::RS256, RSA_PRIVATE, None, &fresh())).await.status(), StatusCode::OK);
}

#[test]
fn the_builder_refuses_what_cannot_work() {
    let err = |b: JwtBuilder| b.build().unwrap_err();
    assert_eq!(err(Jwt::builder()).field, Some("algorithms"));
    assert_eq!(err(Jwt::builder().algorithm(Algorithm::HS256)).field, Some("algorithms"));
    let short = err(Jwt::builder().algorithm(Algorithm::HS512).secret(&SECRET[..32]));
    assert_eq!(short.field, Some("secret"));
    assert!(short.message.contains("at least 64 bytes"), "{}", short.message);
    assert_eq!(err(Jwt::builder().algorithm(Algorithm::RS256)).field, Some("algorithms"));
    assert_eq!(err(Jwt::builder().algorithm(Algorithm::RS256).secret(SECRET)).field, Some("secret"));
    let private = err(Jwt::builder().algorithm(Algorithm::RS256).public_key_pem(RSA_PRIVATE));
    assert!(private.message.contains("private key"), "{}", private.message);
    let family = err(Jwt::builder().algorithm(Algorithm::RS256).public_key_pem(EC_PUBLIC));
    assert!(family.message.contains("RS256 needs an RSA key"), "{}", family.message);
    assert_eq!(
        err(Jwt::builder().algorithm(Algorithm::ES256).public_key_pem(EC_P384_PUBLIC)).field,
        Some("public_key")
    );
    assert_eq!(
        err(Jwt::builder().algorithm(Algorithm::ES256).public_key_pem(b"junk".to_vec())).field,
        Some("public_key")
    );
    let jwks = || Jwt::builder().algorithm(Algorithm::RS256).jwks_url(Uri::from_static("http://127.0.0.1:1/jwks"));
    assert_eq!(err(jwks().public_key_pem(RSA_PUBLIC)).field, Some("jwks_url"));
    assert_eq!(err(jwks().jwks_min_refresh(Duration::ZERO)).field, Some("jwks_min_refresh"));
    assert_eq!(err(jwks().jwks_timeout(Duration::from_secs(61))).field, Some("jwks_timeout"));
    assert_eq!(
        err(Jwt::builder().algorithm(Algorithm::RS256).jwks_url(Uri::from_static("/relative"))).field,
        Some("jwks_url")
    );
    assert_eq!(err(jwks().realm("a \"quoted\" realm")).field, Some("realm"));
    assert_eq!(err(jwks().leeway(Duration::from_secs(7200))).field, Some("leeway"));
    let twice = jwks()
        .forward_claim("sub", HeaderName::from_static("x-a"))
        .forward_claim("email", HeaderName::from_static("x-a"));
    assert_eq!(err(twice).field, Some("forward_claims"));
    assert_eq!(err(jwks().forward_claim("sub", header::AUTHORIZATION)).field, Some("forward_claims"));
    assert!(jwks().build().is_ok());
}

#[test]
fn a_built_layer_never_shows_its_secret() {
    let jwt = layer(Algorithm::HS256, SECRET);
    let shown = format!("{jwt:?} {:?}", Jwt::builder().secret(SECRET));
    assert!(!shown.contains("0123456789abcdef"), "{shown}");
}

/// A JWKS endpoint in memory: serves `keys` (changeable) and counts the requests it answers.
#[derive(Clone, Default)]
struct FakeIdp {
    jwks: Arc<Mutex<Option<String>>>,
    fetches: Arc<AtomicU64>,
}

impl FakeIdp {
    fn publish(&self, keys: &[(&str, Algorithm, &[u8])]) {
        let keys: Vec<Value> = keys
            .iter()
            .map(|(kid, alg, private)| {
                let jwk = Jwk::from_encoding_key(&encoding_key(*alg, private), alg.to_jsonwebtoken()).unwrap();
                let mut value = serde_json::to_value(jwk).unwrap();
                value["kid"] = json!(kid);
                value
            })
            .collect();
        *self.jwks.lock().unwrap() = Some(json!({ "keys": keys }).to_string());
    }

    fn client(&self) -> Arc<dyn HttpClient> {
        let idp = self.clone();
        Arc::new(move |_req: http::Request<Body>| {
            let idp = idp.clone();
            async move {
                idp.fetches.fetch_add(1, Ordering::SeqCst);
                match idp.jwks.lock().unwrap().clone() {
                    Some(body) => Ok::<_, BoxError>(http::Response::new(Body::from(body))),
                    None => Err("connection refused".into()),
                }
            }
        })
    }

    fn layer(&self, min_refresh: Duration) -> Jwt {
        Jwt::builder()
            .algorithms([Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA])
            .jwks_url(Uri::from_static("http://idp.test/jwks.json"))
            .client(self.client())
            .jwks_min_refresh(min_refresh)
            .build()
            .unwrap()
    }
}

#[tokio::test]
async fn jwks_keys_are_chosen_by_kid_and_loaded_once_for_concurrent_first_requests() {
    let idp = FakeIdp::default();
    idp.publish(&[
        ("r1", Algorithm::RS256, RSA_PRIVATE),
        ("e1", Algorithm::ES256, EC_PRIVATE),
        ("d1", Algorithm::EdDSA, ED_PRIVATE),
    ]);
    let service = service(idp.layer(Duration::from_secs(10)));
    let tokens = [
        mint(Algorithm::RS256, RSA_PRIVATE, Some("r1"), &fresh()),
        mint(Algorithm::ES256, EC_PRIVATE, Some("e1"), &fresh()),
        mint(Algorithm::EdDSA, ED_PRIVATE, Some("d1"), &fresh()),
        // Without kid: the set's one key of the family.
        mint(Algorithm::ES256, EC_PRIVATE, None, &fresh()),
    ];
    let calls = (0..12).map(|i| call(&service, &tokens[i % tokens.len()]));
    for res in futures_util::future::join_all(calls).await {
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 1, "one fetch served every concurrent first request");
    // A kid naming a key of another family does not lend that key.
    let res = call(&service, &mint(Algorithm::RS256, RSA_PRIVATE, Some("e1"), &fresh())).await;
    assert_eq!(description(&res), UNKNOWN_KEY);
}

#[tokio::test]
async fn forged_kids_cause_at_most_one_fetch_per_min_refresh() {
    let idp = FakeIdp::default();
    idp.publish(&[("r1", Algorithm::RS256, RSA_PRIVATE)]);
    let service = service(idp.layer(Duration::from_secs(10)));
    assert_eq!(
        call(&service, &mint(Algorithm::RS256, RSA_PRIVATE, Some("r1"), &fresh())).await.status(),
        StatusCode::OK
    );
    let forged = (0..50).map(|i| mint(Algorithm::RS256, RSA_OTHER_PRIVATE, Some(&format!("forged-{i}")), &fresh()));
    let forged: Vec<String> = forged.collect();
    let results = futures_util::future::join_all(forged.iter().map(|t| call(&service, t))).await;
    for res in &results {
        assert_eq!(description(res), UNKNOWN_KEY);
    }
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 1, "the first fetch was less than jwks_min_refresh ago");
}

#[tokio::test]
async fn a_rotated_key_is_found_after_one_refresh_and_the_old_one_is_gone() {
    let idp = FakeIdp::default();
    idp.publish(&[("old", Algorithm::RS256, RSA_PRIVATE)]);
    let service = service(idp.layer(Duration::from_secs(1)));
    let old = mint(Algorithm::RS256, RSA_PRIVATE, Some("old"), &fresh());
    let new = mint(Algorithm::RS256, RSA_OTHER_PRIVATE, Some("new"), &fresh());
    assert_eq!(call(&service, &old).await.status(), StatusCode::OK);
    idp.publish(&[("new", Algorithm::RS256, RSA_OTHER_PRIVATE)]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(call(&service, &new).await.status(), StatusCode::OK);
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 2);
    assert_eq!(description(&call(&service, &old).await), UNKNOWN_KEY);
    assert_eq!(call(&service, &new).await.status(), StatusCode::OK);
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 2, "the old kid did not trigger another fetch");
}

#[tokio::test]
async fn a_jwks_that_never_loads_is_a_503_and_is_not_fetched_again_at_once() {
    let idp = FakeIdp::default();
    let service = service(idp.layer(Duration::from_secs(10)));
    let token = mint(Algorithm::RS256, RSA_PRIVATE, Some("r1"), &fresh());
    for _ in 0..3 {
        let res = call(&service, &token).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let retry: u64 = header(&res, header::RETRY_AFTER).unwrap().parse().unwrap();
        assert!((1..=10).contains(&retry), "{retry}");
        assert_eq!(res.extensions().get::<GeneratedError>().and_then(|g| g.detail()), Some(KEYS_UNAVAILABLE));
    }
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 1);
}

#[test]
fn only_signing_keys_strata_can_use_are_taken_from_a_jwks() {
    let rsa = Jwk::from_encoding_key(&EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(), jsonwebtoken::Algorithm::RS256)
        .unwrap();
    let mut rsa = serde_json::to_value(rsa).unwrap();
    rsa["kid"] = json!("r");
    let mut enc = rsa.clone();
    enc["use"] = json!("enc");
    let mut ps = rsa.clone();
    ps["alg"] = json!("PS256");
    let mut lying = rsa.clone();
    lying["alg"] = json!("ES256");
    let oct = json!({ "kty": "oct", "k": "c2VjcmV0", "kid": "h" });
    let body = json!({ "keys": [rsa, enc, ps, lying, oct, { "kty": "weird" }] }).to_string();
    assert_eq!(keys::parse_jwks_for_test(body.as_bytes()), Ok(1));
    assert!(keys::parse_jwks_for_test(b"{\"keys\": [{\"kty\": \"oct\", \"k\": \"AA\"}]}").is_err());
    assert!(keys::parse_jwks_for_test(b"<html>").is_err());
}

#[cfg(feature = "config")]
#[test]
fn the_config_table_maps_onto_the_builder() {
    use crate::middleware::BuildContext;
    let dir = std::env::temp_dir().join(format!("strata-jwt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("key.pem"), RSA_PUBLIC).unwrap();
    let ctx = BuildContext { base_dir: dir.clone(), ..BuildContext::default() };
    let parse = |text: &str| toml::from_str::<JwtConfig>(text).unwrap();
    let jwt = Jwt::from_config(
        parse(
            "algorithms = \"RS256\"\npublic_key = \"key.pem\"\nleeway = \"1m\"\nforward_claims = { sub = \"x-user\" }",
        ),
        &ctx,
    )
    .unwrap();
    assert_eq!(jwt.algorithms(), [Algorithm::RS256]);
    let err =
        Jwt::from_config(parse("algorithms = [\"RS256\", \"none\"]\npublic_key = \"key.pem\""), &ctx).unwrap_err();
    assert_eq!(err.field, Some("algorithms"));
    assert!(err.message.contains("never accepted"), "{}", err.message);
    let err = Jwt::from_config(parse("algorithms = \"RS256\"\npublic_key = \"missing.pem\""), &ctx).unwrap_err();
    assert_eq!(err.field, Some("public_key"));
    let err = Jwt::from_config(parse("algorithms = \"HS256\"\nsecret = \"short\""), &ctx).unwrap_err();
    assert_eq!(err.field, Some("secret"));
    let err = Jwt::from_config(
        parse("algorithms = \"HS256\"\nsecret = \"0123456789abcdef0123456789abcdef\"\nleeway = \"2h\""),
        &ctx,
    )
    .unwrap_err();
    assert_eq!(err.field, Some("leeway"));
    assert!(toml::from_str::<JwtConfig>("algorithms = \"RS256\"\nsecrett = \"x\"").is_err());
    let _ = std::fs::remove_dir_all(dir);
}
