//! The onion over HTTP types: order, short-circuits, and panics turned into 500s that outer layers
//! still decorate.

use std::sync::{Arc, Mutex};

use http::{HeaderValue, StatusCode};
use strata::http::{Body, Next, Request, Response, response};
use strata::{Middleware, Stack, from_fn};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

fn request(path: &str) -> Request {
    http::Request::builder().uri(path).body(Body::empty()).unwrap()
}

/// A layer that adds `x-layer-NAME: seen` to every response that passes it.
fn mark(name: &'static str) -> impl Middleware<Request, Response> {
    let header = http::HeaderName::try_from(format!("x-layer-{name}")).unwrap();
    from_fn(move |req: Request, next: Next| {
        let header = header.clone();
        async move {
            let mut res = next.run(req).await;
            res.headers_mut().insert(header, HeaderValue::from_static("seen"));
            res
        }
    })
}

#[test]
fn a_panicking_app_yields_a_500_that_carries_the_outer_headers() {
    let service = Stack::new().with(mark("outer")).serve(|_req: Request| async {
        if true {
            panic!("secret detail: db password is hunter2");
        }
        Response::new(Body::empty())
    });
    let res = block_on(service.call(request("/")));
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(res.headers()["x-layer-outer"], "seen");
    let body = res.body().as_bytes().unwrap();
    assert!(!String::from_utf8_lossy(body).contains("hunter2"), "the panic message never reaches the client");
}

#[test]
fn a_panicking_middle_layer_is_a_500_for_the_layers_outside_it_only() {
    let inner_ran = Arc::new(Mutex::new(false));
    let flag = inner_ran.clone();
    let service = Stack::new()
        .with(mark("outer"))
        .with(from_fn(|_req: Request, _next: Next| async move {
            if true {
                panic!("middle layer bug");
            }
            Response::new(Body::empty())
        }))
        .with(mark("inner"))
        .serve(move |_req: Request| {
            let flag = flag.clone();
            async move {
                *flag.lock().unwrap() = true;
                response::text(StatusCode::OK, "ok")
            }
        });
    let res = block_on(service.call(request("/")));
    assert_eq!(res.status(), 500);
    assert_eq!(res.headers()["x-layer-outer"], "seen");
    assert!(res.headers().get("x-layer-inner").is_none());
    assert!(!*inner_ran.lock().unwrap());
}

#[test]
fn requests_go_in_outermost_first_and_responses_come_back_innermost_first() {
    let trail = Arc::new(Mutex::new(Vec::new()));
    let layer = |name: &'static str| {
        let trail = trail.clone();
        from_fn(move |req: Request, next: Next| {
            let trail = trail.clone();
            async move {
                trail.lock().unwrap().push(format!("{name}>"));
                let res = next.run(req).await;
                trail.lock().unwrap().push(format!("<{name}"));
                res
            }
        })
    };
    let app_trail = trail.clone();
    let service = Stack::new().with(layer("A")).with(layer("B")).with(layer("C")).serve(move |_req: Request| {
        let trail = app_trail.clone();
        async move {
            trail.lock().unwrap().push("app".to_string());
            Response::new(Body::empty())
        }
    });
    block_on(service.call(request("/")));
    assert_eq!(*trail.lock().unwrap(), ["A>", "B>", "C>", "app", "<C", "<B", "<A"]);
}

#[test]
fn a_short_circuit_answers_for_the_inner_layers_and_outer_layers_decorate_it() {
    let service = Stack::new()
        .with(mark("outer"))
        .with(from_fn(|req: Request, next: Next| async move {
            if req.headers().contains_key("authorization") {
                next.run(req).await
            } else {
                response::text(StatusCode::UNAUTHORIZED, "no")
            }
        }))
        .with(mark("inner"))
        .serve(|_req: Request| async { response::text(StatusCode::OK, "ok") });
    let res = block_on(service.call(request("/")));
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["x-layer-outer"], "seen");
    assert!(res.headers().get("x-layer-inner").is_none());
    let mut authed = request("/");
    authed.headers_mut().insert("authorization", HeaderValue::from_static("x"));
    let res = block_on(service.call(authed));
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-layer-inner"], "seen");
}
