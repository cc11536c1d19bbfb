//! The layer end to end: ids reused, replaced and generated, trace contexts kept or started.

use super::*;
use crate::from_fn;
use crate::http::{Body, Service, Stack, response};
use crate::middleware::test_support::request;
use http::StatusCode;

/// What the app saw, handed back in the response's extensions.
#[derive(Clone)]
struct Seen {
    headers: HeaderMap,
    id: Option<AssignedId>,
    trace: Option<TraceContext>,
}

fn echo_app(req: Request) -> impl std::future::Future<Output = Response> + Send {
    let seen = Seen {
        headers: req.headers().clone(),
        id: req.extensions().get::<AssignedId>().cloned(),
        trace: req.extensions().get::<TraceContext>().copied(),
    };
    async move {
        let mut res = Response::new(Body::from("ok"));
        res.extensions_mut().insert(seen);
        res
    }
}

fn service(builder: RequestIdBuilder) -> Service {
    Stack::new().with(builder.build().unwrap()).serve(echo_app)
}

async fn call(service: &Service, headers: &[(&str, &str)]) -> (Response, Seen) {
    let res = service.call(request("GET", "/", headers)).await;
    let seen = res.extensions().get::<Seen>().cloned().expect("the app ran");
    (res, seen)
}

/// `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx` in lowercase hex, `y` one of `8 9 a b` (RFC 9562).
fn is_uuid_v4(value: &HeaderValue) -> bool {
    let text = value.as_bytes();
    let hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
    text.len() == 36
        && text.iter().enumerate().all(|(i, b)| if [8, 13, 18, 23].contains(&i) { *b == b'-' } else { hex(b) })
        && text[14] == b'4'
        && matches!(text[19], b'8' | b'9' | b'a' | b'b')
}

#[tokio::test]
async fn a_valid_incoming_id_is_reused_everywhere() {
    let svc = service(RequestId::builder());
    let id = "abc-123._~+/=:@XYZ";
    let (res, seen) = call(&svc, &[("x-request-id", id)]).await;
    assert_eq!(res.headers()["x-request-id"], id);
    assert_eq!(seen.headers["x-request-id"], id);
    assert_eq!(seen.id, Some(AssignedId(HeaderValue::from_static(id))));
    let longest = "a".repeat(128);
    let (res, _) = call(&svc, &[("x-request-id", &longest)]).await;
    assert_eq!(res.headers()["x-request-id"], longest.as_str());
}

#[tokio::test]
async fn inner_layers_see_the_id_as_the_current_one_until_the_response() {
    let svc = Stack::new().with(RequestId::default()).serve(|_req: Request| async move {
        let current = AssignedId::current().expect("set for the layers inside");
        response::text(StatusCode::OK, current.to_string())
    });
    let res = svc.call(request("GET", "/", &[])).await;
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let body = http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
    assert_eq!(body, id.as_bytes());
    assert_eq!(AssignedId::current(), None, "not outside the layer");
}

#[tokio::test]
async fn a_malformed_incoming_id_is_replaced_with_a_uuid() {
    let svc = service(RequestId::builder());
    let too_long = "a".repeat(129);
    for bad in ["", "has space", "semi;colon", "quote\"d", "per%cent", too_long.as_str()] {
        let (res, seen) = call(&svc, &[("x-request-id", bad)]).await;
        let id = &res.headers()["x-request-id"];
        assert!(is_uuid_v4(id), "{bad:?} was replaced by {id:?}");
        assert_eq!(&seen.headers["x-request-id"], id, "the app saw the replacement");
        assert_eq!(seen.headers.get_all("x-request-id").iter().count(), 1);
        assert_eq!(seen.id.as_ref().map(|i| &i.0), Some(id));
    }
    // Two ids are ambiguous: both go, one new id replaces them.
    let (res, seen) = call(&svc, &[("x-request-id", "one"), ("x-request-id", "two")]).await;
    assert!(is_uuid_v4(&res.headers()["x-request-id"]));
    assert_eq!(seen.headers.get_all("x-request-id").iter().count(), 1);
}

#[tokio::test]
async fn a_missing_id_is_generated_and_unique() {
    let svc = service(RequestId::builder());
    let (a, _) = call(&svc, &[]).await;
    let (b, _) = call(&svc, &[]).await;
    assert!(is_uuid_v4(&a.headers()["x-request-id"]));
    assert_ne!(a.headers()["x-request-id"], b.headers()["x-request-id"]);
}

#[tokio::test]
async fn untrusted_incoming_ids_are_always_replaced() {
    let svc = service(RequestId::builder().trust_incoming(false));
    let (res, seen) = call(&svc, &[("x-request-id", "valid-id")]).await;
    assert!(is_uuid_v4(&res.headers()["x-request-id"]));
    assert_eq!(seen.headers["x-request-id"], res.headers()["x-request-id"]);
}

#[tokio::test]
async fn the_header_name_is_configurable() {
    let svc = service(RequestId::builder().header(HeaderName::from_static("x-correlation-id")));
    let (res, seen) = call(&svc, &[("x-correlation-id", "corr-1")]).await;
    assert_eq!(res.headers()["x-correlation-id"], "corr-1");
    assert_eq!(seen.headers["x-correlation-id"], "corr-1");
    assert!(res.headers().get("x-request-id").is_none());
}

#[test]
fn trace_context_headers_are_refused_as_the_id_header() {
    for bad in [TRACEPARENT, TRACESTATE] {
        let err = RequestId::builder().header(bad.clone()).build().unwrap_err();
        assert_eq!(err.field, Some("header"), "{bad:?}");
    }
    let layer = RequestId::default();
    assert_eq!((layer.header().as_str(), layer.kind()), ("x-request-id", "request_id"));
    assert!(layer.facts().has(Fact::SetsRequestId));
}

#[cfg(feature = "config")]
mod config {
    use super::*;
    use crate::middleware::BuildContext;

    fn from_config(config: RequestIdConfig) -> Result<RequestId, ConfigError> {
        RequestId::from_config(config, &BuildContext::default())
    }

    #[test]
    fn bad_header_names_are_config_errors() {
        // The typed builder refuses the trace context headers with the same field.
        for bad in ["", "has space", "x-id\n", "traceparent", "TraceState"] {
            let err = from_config(RequestIdConfig { header: bad.into(), ..Default::default() }).unwrap_err();
            assert_eq!(err.field, Some("header"), "{bad:?}");
        }
    }

    #[test]
    fn config_defaults_and_unknown_fields() {
        let c: RequestIdConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(
            (c.header.as_str(), c.trust_incoming, c.trace_context),
            ("x-request-id", true, TraceContextMode::Propagate)
        );
        let c: RequestIdConfig = serde_json::from_str(r#"{"trace_context": "off", "trust_incoming": false}"#).unwrap();
        assert_eq!((c.trust_incoming, c.trace_context), (false, TraceContextMode::Off));
        let layer = from_config(c).unwrap();
        assert_eq!((layer.trust_incoming, layer.trace_context), (false, TraceContextMode::Off));
        assert!(serde_json::from_str::<RequestIdConfig>(r#"{"headr": "x"}"#).is_err());
        assert!(serde_json::from_str::<RequestIdConfig>(r#"{"trace_context": "on"}"#).is_err());
    }

    #[tokio::test]
    async fn the_header_name_from_config_is_case_insensitive() {
        let layer = from_config(RequestIdConfig { header: "X-Correlation-ID".into(), ..Default::default() }).unwrap();
        let svc = Stack::new().with(layer).serve(echo_app);
        let (res, _) = call(&svc, &[("x-correlation-id", "corr-1")]).await;
        assert_eq!(res.headers()["x-correlation-id"], "corr-1");
    }
}

#[tokio::test]
async fn a_custom_generator_makes_the_ids() {
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let made = counter.clone();
    let svc = service(RequestId::builder().generator(move || {
        let n = made.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("req-{n}")).unwrap()
    }));
    let (a, seen) = call(&svc, &[]).await;
    let (b, _) = call(&svc, &[("x-request-id", "bad id")]).await;
    assert_eq!(
        (&a.headers()["x-request-id"], &b.headers()["x-request-id"]),
        (&HeaderValue::from_static("req-0"), &HeaderValue::from_static("req-1"))
    );
    assert_eq!(seen.id.map(|id| id.0), Some(HeaderValue::from_static("req-0")));
    // A trusted incoming id does not call the generator.
    let (c, _) = call(&svc, &[("x-request-id", "theirs")]).await;
    assert_eq!((c.headers()["x-request-id"].to_str().unwrap(), counter.load(Ordering::Relaxed)), ("theirs", 2));
}

#[tokio::test]
async fn a_generator_as_a_trait_implementation() {
    struct Fixed;
    impl IdGenerator for Fixed {
        fn generate(&self) -> HeaderValue {
            HeaderValue::from_static("fixed-id")
        }
    }
    let (res, _) = call(&service(RequestId::builder().generator(Fixed)), &[]).await;
    assert_eq!(res.headers()["x-request-id"], "fixed-id");
    let (res, _) = call(&service(RequestId::builder().generator(UuidV4)), &[]).await;
    assert!(is_uuid_v4(&res.headers()["x-request-id"]));
}

#[tokio::test]
async fn an_invalid_generated_id_falls_back_to_a_uuid() {
    let too_long = "x".repeat(129);
    for bad in ["", "has space", "quote\"d", too_long.as_str()] {
        let value = HeaderValue::from_str(bad).unwrap();
        let svc = service(RequestId::builder().generator(move || value.clone()));
        for _ in 0..2 {
            let (res, seen) = call(&svc, &[]).await;
            let id = &res.headers()["x-request-id"];
            assert!(is_uuid_v4(id), "{bad:?} gave {id:?}");
            assert_eq!(seen.id.as_ref().map(|i| &i.0), Some(id));
        }
    }
}

#[test]
fn default_ids_are_uuid_v4_and_distinct() {
    let ids: std::collections::HashSet<_> = (0..500).map(|_| UuidV4.generate()).collect();
    assert_eq!(ids.len(), 500);
    assert!(ids.iter().all(is_uuid_v4), "{ids:?}");
    // Every free nibble takes more than one value across the ids (none stuck at zero).
    for i in (0..36).filter(|i| ![8, 13, 14, 18, 23].contains(i)) {
        let nibbles: std::collections::HashSet<u8> = ids.iter().map(|id| id.as_bytes()[i]).collect();
        assert!(nibbles.len() > 1, "position {i}");
    }
}

#[tokio::test]
async fn short_circuited_and_panicked_responses_carry_the_id() {
    let rid = || RequestId::builder().build().unwrap();
    let rejecting = Stack::new()
        .with(rid())
        .with(from_fn(|_req: Request, _next: Next| async { response::status(StatusCode::UNAUTHORIZED) }))
        .serve(echo_app);
    let res = rejecting.call(request("GET", "/", &[("x-request-id", "rejected-1")])).await;
    assert_eq!(
        (res.status(), &res.headers()["x-request-id"]),
        (StatusCode::UNAUTHORIZED, &HeaderValue::from_static("rejected-1"))
    );

    let panicking_layer = Stack::new()
        .with(rid())
        .with(from_fn(|_req: Request, _next: Next| async {
            if true {
                panic!("layer broke");
            }
            Response::new(Body::empty())
        }))
        .serve(echo_app);
    let res = panicking_layer.call(request("GET", "/", &[("x-request-id", "boom-1")])).await;
    assert_eq!(
        (res.status(), &res.headers()["x-request-id"]),
        (StatusCode::INTERNAL_SERVER_ERROR, &HeaderValue::from_static("boom-1"))
    );

    let panicking_app = Stack::new().with(rid()).serve(|_req: Request| async {
        if true {
            panic!("app broke");
        }
        Response::new(Body::empty())
    });
    let res = panicking_app.call(request("GET", "/", &[])).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(is_uuid_v4(&res.headers()["x-request-id"]));
}

#[tokio::test]
async fn an_inner_response_id_is_overridden_by_the_assigned_one() {
    let svc = Stack::new().with(RequestId::default()).serve(|_req: Request| async {
        let mut res = Response::new(Body::empty());
        res.headers_mut().insert("x-request-id", HeaderValue::from_static("from-the-app"));
        res
    });
    let res = svc.call(request("GET", "/", &[("x-request-id", "ours")])).await;
    assert_eq!(res.headers()["x-request-id"], "ours");
}

const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn traceparent_parsing_follows_the_spec() {
    let t = TraceContext::parse(VALID.as_bytes()).unwrap();
    assert_eq!(t.version, 0);
    assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(t.parent_id_hex(), "00f067aa0ba902b7");
    assert!(t.sampled() && !t.started_here);
    assert_eq!(t.to_header_value(), VALID);
    assert!(!TraceContext::parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().sampled());

    let invalid = [
        ("uppercase hex", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"),
        ("uppercase flags", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A"),
        ("version ff", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("zero trace id", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        ("zero parent id", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
        ("version 00 too long", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-"),
        ("version 00 with extra", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"),
        ("too short", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"),
        ("short trace id", "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01"),
        ("wrong separator", "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01"),
        ("non-hex", "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01"),
        ("non-hex version", "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("higher version, no dash after flags", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"),
        ("empty", ""),
    ];
    for (why, value) in invalid {
        assert_eq!(TraceContext::parse(value.as_bytes()), None, "{why}: {value}");
    }

    // A future version may add fields after the flags, behind a dash.
    let future =
        TraceContext::parse(b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds").unwrap();
    assert_eq!((future.version, future.trace_id_hex().as_str()), (0xcc, "4bf92f3577b34da6a3ce929d0e0e4736"));
    assert!(TraceContext::parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some());
}

#[test]
fn started_traces_are_valid_random_and_sampled() {
    let a = TraceContext::start();
    let b = TraceContext::start();
    assert!(a.started_here && a.sampled() && a.version == 0);
    assert_ne!(a.trace_id, b.trace_id);
    assert_ne!(a.parent_id, b.parent_id);
    let header = a.to_header_value();
    assert_eq!(header.len(), 55);
    let reparsed = TraceContext::parse(header.as_bytes()).unwrap();
    assert_eq!(reparsed, TraceContext { started_here: false, ..a });
    let expected = format!("{:02x}-{}-{}-{:02x}", a.version, a.trace_id_hex(), a.parent_id_hex(), a.flags);
    assert_eq!(header.to_str().unwrap(), expected);
    // Trace ids are random in every bit, unlike a UUID v4: the nibble where a UUID holds its
    // version (bits 76..80) is not always 4.
    assert!((0..64).map(|_| (random_u128() >> 76) & 0xf).any(|nibble| nibble != 4));
}

#[tokio::test]
async fn a_valid_traceparent_and_its_tracestate_pass_through() {
    let svc = service(RequestId::builder());
    let (_, seen) = call(
        &svc,
        &[("traceparent", VALID), ("tracestate", "congo=t61rcWkgMzE"), ("tracestate", "rojo=00f067aa0ba902b7")],
    )
    .await;
    assert_eq!(seen.headers["traceparent"], VALID);
    let states: Vec<_> = seen.headers.get_all("tracestate").iter().collect();
    assert_eq!(states, ["congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7"]);
    let trace = seen.trace.unwrap();
    assert_eq!((trace.trace_id_hex().as_str(), trace.started_here), ("4bf92f3577b34da6a3ce929d0e0e4736", false));

    let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later";
    let (_, seen) = call(&svc, &[("traceparent", future), ("tracestate", "a=b")]).await;
    assert_eq!(
        (&seen.headers["traceparent"], &seen.headers["tracestate"]),
        (&HeaderValue::from_static(future), &HeaderValue::from_static("a=b"))
    );
}

#[tokio::test]
async fn an_invalid_or_missing_traceparent_starts_a_new_trace_and_drops_tracestate() {
    let svc = service(RequestId::builder());
    let cases: [&[(&str, &str)]; 4] = [
        &[("traceparent", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), ("tracestate", "a=b")],
        &[("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"), ("tracestate", "a=b")],
        &[("tracestate", "a=b")],
        &[("traceparent", VALID), ("traceparent", VALID), ("tracestate", "a=b")],
    ];
    for headers in cases {
        let (_, seen) = call(&svc, headers).await;
        let trace = seen.trace.expect("a trace context extension");
        assert!(trace.started_here, "{headers:?}");
        assert_ne!(trace.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(seen.headers.get_all("traceparent").iter().count(), 1);
        assert_eq!(seen.headers["traceparent"], trace.to_header_value());
        assert!(seen.headers["traceparent"].to_str().unwrap().ends_with("-01"));
        assert!(seen.headers.get("tracestate").is_none(), "{headers:?}");
    }
}

#[tokio::test]
async fn trace_context_off_leaves_the_headers_alone() {
    let svc = service(RequestId::builder().trace_context(TraceContextMode::Off));
    let bad = "ff-not-a-trace";
    let (_, seen) = call(&svc, &[("traceparent", bad), ("tracestate", "a=b")]).await;
    assert_eq!(
        (&seen.headers["traceparent"], &seen.headers["tracestate"]),
        (&HeaderValue::from_static(bad), &HeaderValue::from_static("a=b"))
    );
    assert!(seen.trace.is_none());
    let (_, seen) = call(&svc, &[]).await;
    assert!(seen.headers.get("traceparent").is_none() && seen.trace.is_none());
}

#[test]
fn request_id_charset() {
    assert!(is_valid_request_id(b"A-z_0.9~+/=:@"));
    assert!(!is_valid_request_id(b""));
    assert!(!is_valid_request_id("é".as_bytes()));
    assert!(!is_valid_request_id(b"a\tb"));
    assert!(is_valid_request_id(&[b'x'; 128]) && !is_valid_request_id(&[b'x'; 129]));
}
