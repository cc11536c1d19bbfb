//! strata's middlewares as tower layers in an axum app, against tower-http's equivalents, in the
//! same run: one request through an axum `Router` (one route), bare, behind strata's `request_id`
//! and `cors` (`Stack::into_tower_layer`), and behind tower-http's `SetRequestIdLayer` +
//! `PropagateRequestIdLayer` (UUID v4 ids, as strata's) and `CorsLayer` with the same policy.
//! Two requests: a cross-origin `GET` and a CORS preflight.
//!
//! strata's `request_id` also validates an incoming id and starts or continues a W3C
//! `traceparent`; tower-http's does neither, so the strata side does more work per request.
//!
//! Run with `cargo bench -p strata-http --bench axum`.

use std::hint::black_box;

use axum::body::Body as AxumBody;
use criterion::Criterion;
use http::{HeaderName, HeaderValue, Method, Request, header};
use strata::http::Stack;
use strata::middleware::{Cors, RequestId};
use tokio::runtime::Runtime;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::cors::CorsLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

const ORIGIN: &str = "https://app.example";

fn routes() -> axum::Router {
    axum::Router::new().route("/", axum::routing::get(|| async { "hello" }).put(|| async { "stored" }))
}

fn strata_app() -> axum::Router {
    let cors = Cors::builder()
        .allow_origin(HeaderValue::from_static(ORIGIN))
        .allow_methods([Method::GET, Method::PUT])
        .allow_headers([HeaderName::from_static("x-custom")])
        .expose_headers([HeaderName::from_static("x-request-id")])
        .build()
        .expect("a valid CORS policy");
    routes().layer(Stack::new().with(RequestId::default()).with(cors).into_tower_layer())
}

fn tower_http_app() -> axum::Router {
    let x_request_id = HeaderName::from_static("x-request-id");
    let cors = CorsLayer::new()
        .allow_origin(HeaderValue::from_static(ORIGIN))
        .allow_methods([Method::GET, Method::PUT])
        .allow_headers([HeaderName::from_static("x-custom")])
        .expose_headers([x_request_id.clone()]);
    routes().layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(x_request_id.clone(), MakeRequestUuid))
            .layer(PropagateRequestIdLayer::new(x_request_id))
            .layer(cors),
    )
}

fn get() -> Request<AxumBody> {
    Request::get("/").header(header::ORIGIN, ORIGIN).body(AxumBody::empty()).expect("a valid request")
}

fn preflight() -> Request<AxumBody> {
    Request::options("/")
        .header(header::ORIGIN, ORIGIN)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "PUT")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "x-custom")
        .body(AxumBody::empty())
        .expect("a valid request")
}

fn bench(c: &mut Criterion, rt: &Runtime) {
    let apps = [("axum_bare", routes()), ("strata_layers", strata_app()), ("tower_http_layers", tower_http_app())];
    // The same answers from both stacks, or the comparison means nothing.
    for (name, app) in &apps[1..] {
        let res = rt.block_on(app.clone().oneshot(get())).expect("infallible");
        assert_eq!(res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], ORIGIN, "{name}");
        assert!(res.headers().contains_key("x-request-id"), "{name}");
        let res = rt.block_on(app.clone().oneshot(preflight())).expect("infallible");
        assert!(res.status().is_success(), "{name}: {}", res.status());
        assert!(res.headers().contains_key(header::ACCESS_CONTROL_ALLOW_METHODS), "{name}");
    }
    for (request, make) in [("cors_get", get as fn() -> Request<AxumBody>), ("preflight", preflight)] {
        let mut group = c.benchmark_group(format!("axum/{request}"));
        for (name, app) in &apps {
            group.bench_function(*name, |b| {
                b.to_async(rt).iter(|| {
                    let app = app.clone();
                    async move { black_box(app.oneshot(make()).await) }
                })
            });
        }
        group.finish();
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("a tokio runtime");
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &rt);
    c.final_summary();
}
