//! What the `jwt` layer costs per request: one `GET` with `Authorization: Bearer` through
//! `Stack::new().with(Jwt).serve(endpoint)`, response body read to its end, against the same
//! request through the empty stack.
//!
//! | case | token | key |
//! | --- | --- | --- |
//! | `jwt/hs256` | HS256, `sub` + `exp` | a 64-byte secret |
//! | `jwt/rs256` | RS256 (2048-bit), `sub` + `exp` | a PEM public key |
//! | `jwt/missing` | none: answered `401` by the layer | the HS256 layer |
//!
//! Run with `cargo bench -p strata-http --bench jwt`; `-- --test` runs every case once after
//! checking that each takes the intended path.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use strata::http::{Body, Request, Service, Stack, response};
use strata::middleware::jwt::{Algorithm, Jwt};
use tokio::runtime::Runtime;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const RSA_PUBLIC: &[u8] = include_bytes!("../src/middleware/jwt/testdata/rsa_public.pem");
const RSA_PRIVATE: &[u8] = include_bytes!("../src/middleware/jwt/testdata/rsa_private.pem");

fn token(alg: jsonwebtoken::Algorithm, key: &jsonwebtoken::EncodingKey) -> String {
    let claims = serde_json::json!({ "sub": "alice", "exp": jsonwebtoken::get_current_timestamp() + 24 * 3600 });
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, key).unwrap()
}

fn serve(stack: Stack) -> Service {
    stack.serve(|_req: Request| async { response::text(StatusCode::OK, "hello!\n") })
}

fn request(token: Option<&str>) -> Request {
    let mut req = Request::new(Body::empty());
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        req.headers_mut().insert(header::AUTHORIZATION, value);
    }
    req
}

async fn once(service: &Service, token: Option<&str>) -> StatusCode {
    let res = service.call(request(token)).await;
    let status = res.status();
    black_box(res.into_body().collect().await.unwrap());
    status
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let hs256 = serve(Stack::new().with(Jwt::builder().algorithm(Algorithm::HS256).secret(SECRET).build().unwrap()));
    let rs256 = serve(
        Stack::new().with(Jwt::builder().algorithm(Algorithm::RS256).public_key_pem(RSA_PUBLIC).build().unwrap()),
    );
    let baseline = serve(Stack::new());
    let hs_token = token(jsonwebtoken::Algorithm::HS256, &jsonwebtoken::EncodingKey::from_secret(SECRET));
    let rs_token =
        token(jsonwebtoken::Algorithm::RS256, &jsonwebtoken::EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap());

    // Each case on its intended path, or the figures mean nothing.
    rt.block_on(async {
        assert_eq!(once(&hs256, Some(&hs_token)).await, StatusCode::OK);
        assert_eq!(once(&rs256, Some(&rs_token)).await, StatusCode::OK);
        assert_eq!(once(&hs256, None).await, StatusCode::UNAUTHORIZED);
    });

    let mut group = c.benchmark_group("jwt");
    group.bench_function("baseline", |b| b.to_async(&rt).iter(|| once(&baseline, Some(&hs_token))));
    group.bench_function("hs256", |b| b.to_async(&rt).iter(|| once(&hs256, Some(&hs_token))));
    group.bench_function("rs256", |b| b.to_async(&rt).iter(|| once(&rs256, Some(&rs_token))));
    group.bench_function("missing", |b| b.to_async(&rt).iter(|| once(&hs256, None)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
