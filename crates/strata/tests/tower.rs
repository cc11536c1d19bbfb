//! strata and tower both ways, with real axum and tower-http services over real connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use strata::http::{Body, Next, Request, Response, Stack};
use strata::middleware::{Cors, RequestId, Timing};
use strata::{Fact, Facts, from_fn};
use tower_http::set_header::SetResponseHeaderLayer;

const ORIGIN: &str = "https://app.example";

/// Serves `app` with `axum::serve` on a free loopback port until the test's runtime ends.
async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).no_proxy().build().unwrap()
}

fn strata_layers() -> Stack {
    let cors = Cors::builder()
        .allow_origin(HeaderValue::from_static(ORIGIN))
        .allow_methods([Method::GET, Method::POST])
        .build()
        .unwrap();
    Stack::new().with(RequestId::default()).with(cors)
}

#[tokio::test]
async fn an_axum_router_behind_a_strata_stack_gets_its_headers_and_keeps_content_length() {
    let app = axum::Router::new()
        .route("/hello", axum::routing::get(|| async { "hello, world" }))
        .layer(strata_layers().into_tower_layer());
    let addr = serve(app).await;
    let client = client();

    let res = client.get(format!("http://{addr}/hello")).header("origin", ORIGIN).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-request-id"), "{:?}", res.headers());
    assert_eq!(res.headers()["access-control-allow-origin"], ORIGIN);
    // A fixed-size body keeps its size through both bridges: hyper writes content-length, not chunks.
    assert_eq!(res.headers()[header::CONTENT_LENGTH], "12");
    assert!(!res.headers().contains_key(header::TRANSFER_ENCODING));
    assert_eq!(res.text().await.unwrap(), "hello, world");

    // A preflight is answered by strata's cors: the route has no OPTIONS handler.
    let res = client
        .request(Method::OPTIONS, format!("http://{addr}/hello"))
        .header("origin", ORIGIN)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(res.headers()["access-control-allow-origin"], ORIGIN);
    assert!(res.headers()["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    assert!(res.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn a_request_body_reaches_the_axum_handler_through_the_stack() {
    let app = axum::Router::new()
        .route("/echo", axum::routing::post(|body: String| async move { format!("got {body}") }))
        .layer(strata_layers().into_tower_layer());
    let addr = serve(app).await;
    let res = client().post(format!("http://{addr}/echo")).body("a body").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "got a body");
}

#[tokio::test]
async fn a_panicking_strata_layer_in_the_bridge_is_a_500_and_the_outer_axum_layers_still_run() {
    let boom = from_fn(|req: Request, next: Next| async move {
        if req.uri().path() == "/boom" {
            panic!("the layer broke");
        }
        next.run(req).await
    });
    let stack = Stack::new().with(RequestId::default()).with_named("boom", boom);
    let app = axum::Router::new()
        .route("/boom", axum::routing::get(|| async { "never" }))
        .layer(stack.into_tower_layer())
        .layer(SetResponseHeaderLayer::overriding(HeaderName::from_static("x-outer"), HeaderValue::from_static("ran")));
    let addr = serve(app).await;
    let res = client().get(format!("http://{addr}/boom")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(res.headers()["x-outer"], "ran", "the axum layer outside the bridge ran");
    assert!(res.headers().contains_key("x-request-id"), "the strata layer outside the panic ran");
}

async fn app(_req: Request) -> Response {
    Response::new(Body::from("hello"))
}

#[tokio::test]
async fn a_tower_http_layer_in_a_strata_stack_adds_its_header_and_is_named_and_timed() {
    let powered_by =
        SetResponseHeaderLayer::overriding(HeaderName::from_static("x-powered-by"), HeaderValue::from_static("strata"));
    let stack = Stack::new().with(Timing::default()).with_layer(strata::tower::layer("powered_by", powered_by));
    let infos = stack.infos();
    assert_eq!(
        infos.iter().map(|i| (i.name.as_str(), i.kind)).collect::<Vec<_>>(),
        [("timing", "timing"), ("powered_by", "tower")]
    );
    assert_eq!(infos[1].facts, Facts::NONE);

    let service = stack.serve(app);
    let res = service.call(Request::new(Body::empty())).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-powered-by"], "strata");
    let timing = res.headers()["server-timing"].to_str().unwrap();
    assert!(timing.contains("powered_by"), "{timing}");
    assert!(timing.contains("app"), "{timing}");
}

#[test]
fn a_tower_layer_declares_facts_when_told() {
    let noop = tower::layer::util::Identity::new();
    let layer = strata::tower::layer("noop", noop).with_facts(Facts::of(&[Fact::ShortCircuits]));
    assert_eq!(layer.info().facts, Facts::of(&[Fact::ShortCircuits]));
}

/// A tower service that fails every request with an error value.
#[derive(Clone)]
struct Failing;

impl tower::Service<Request> for Failing {
    type Response = Response;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Response, std::io::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request) -> Self::Future {
        std::future::ready(Err(std::io::Error::other("backend gone")))
    }
}

#[tokio::test]
async fn a_tower_layer_that_fails_with_an_error_is_a_500_the_outer_layers_see() {
    let failing = tower::layer::layer_fn(|_next: strata::tower::NextService| Failing);
    let service =
        Stack::new().with(RequestId::default()).with_layer(strata::tower::layer("failing", failing)).serve(app);
    let res = service.call(Request::new(Body::empty())).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(res.extensions().get::<strata::http::GeneratedError>().is_some());
    assert!(res.headers().contains_key("x-request-id"));
    let body = http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
    assert!(!String::from_utf8_lossy(&body).contains("backend gone"), "the error stays in the logs");
}

#[tokio::test]
async fn a_tower_layer_is_built_once_and_its_readiness_is_honoured() {
    // One concurrency permit, shared by every request only if the layer's service is built once.
    let limit = tower::limit::ConcurrencyLimitLayer::new(1);
    let (entered_tx, mut entered_rx) = tokio::sync::mpsc::channel::<()>(4);
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let hold = release.clone();
    let service = Stack::new().with_layer(strata::tower::layer("limit", limit)).serve(move |_req: Request| {
        let entered = entered_tx.clone();
        let hold = hold.clone();
        async move {
            entered.send(()).await.unwrap();
            hold.notified().await;
            Response::new(Body::from("done"))
        }
    });
    let first = tokio::spawn(service.call(Request::new(Body::empty())));
    tokio::time::timeout(Duration::from_secs(5), entered_rx.recv()).await.unwrap();
    let second = tokio::spawn(service.call(Request::new(Body::empty())));
    // The second request waits for the permit: it does not reach the app while the first holds it.
    assert!(tokio::time::timeout(Duration::from_millis(200), entered_rx.recv()).await.is_err());
    release.notify_one();
    assert_eq!(first.await.unwrap().status(), 200);
    tokio::time::timeout(Duration::from_secs(5), entered_rx.recv()).await.unwrap();
    release.notify_one();
    assert_eq!(second.await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_strata_service_is_a_tower_service() {
    use tower::ServiceExt;
    let service = Stack::new().with(RequestId::default()).serve(app);
    let res: Result<Response, Infallible> = service.oneshot(Request::new(Body::empty())).await;
    let res = res.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-request-id"));
}
