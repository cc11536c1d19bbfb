//! Admission and refusal, the queue's order, bound and deadline, permits held by streaming bodies
//! and returned when they end or are dropped, per-key counts that are forgotten, and config errors.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_channel::mpsc;
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::Notify;

use super::*;
use crate::http::{BoxError, Service, Stack};
use crate::middleware::test_support::{body_text, from_client, header, request};

/// The layer, shared with the test so that it can read the counts while requests run.
struct Shared(Arc<ConcurrencyLimit>);

impl Middleware<Request, Response> for Shared {
    async fn handle(&self, req: Request, next: Next) -> Response {
        self.0.handle(req, next).await
    }
}

/// An app that answers `/hold` only once `release` is notified, and anything else at once with
/// the path as body, after writing the path to `seen`.
struct App {
    release: Arc<Notify>,
    seen: Arc<Mutex<Vec<String>>>,
}

fn service(limit: ConcurrencyLimit) -> (Service, Arc<ConcurrencyLimit>, App) {
    let limit = Arc::new(limit);
    let app = App { release: Arc::new(Notify::new()), seen: Arc::default() };
    let (release, seen) = (app.release.clone(), app.seen.clone());
    let svc = Stack::new().with(Shared(limit.clone())).serve(move |req: Request| {
        let (release, seen) = (release.clone(), seen.clone());
        async move {
            let path = req.uri().path().to_string();
            if path == "/hold" {
                release.notified().await;
            } else {
                seen.lock().unwrap().push(path.clone());
            }
            response::text(StatusCode::OK, path)
        }
    });
    (svc, limit, app)
}

fn limit(build: impl FnOnce(ConcurrencyLimitBuilder) -> ConcurrencyLimitBuilder) -> ConcurrencyLimit {
    build(ConcurrencyLimit::builder()).build().expect("a valid limit")
}

fn get(path: &str) -> Request {
    request("GET", path, &[])
}

fn reason(res: &Response) -> String {
    res.extensions().get::<Refusal>().map(|r| r.reason.to_string()).unwrap_or_default()
}

/// Lets spawned tasks run until they wait (on the app, the queue or a timer).
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// Starts `n` requests to `/hold`, each parked in the app once admitted.
fn hold(svc: &Service, n: usize) -> Vec<tokio::task::JoinHandle<Response>> {
    (0..n)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.call(get("/hold")).await })
        })
        .collect()
}

#[test]
fn settings_are_checked_at_their_key() {
    let field = |b: ConcurrencyLimitBuilder| b.build().unwrap_err().field;
    assert_eq!(field(ConcurrencyLimit::builder()), Some("max"), "max is required");
    assert_eq!(field(ConcurrencyLimit::builder().max(usize::MAX)), Some("max"));
    assert_eq!(field(ConcurrencyLimit::builder().max(1).max_wait(Duration::from_secs(1))), Some("max_wait"));
    assert_eq!(field(ConcurrencyLimit::builder().max(1).queue(1).max_wait(Duration::ZERO)), Some("max_wait"));
    assert_eq!(field(ConcurrencyLimit::builder().max(1).retry_after(Duration::from_millis(1500))), Some("retry_after"));
    assert_eq!(field(ConcurrencyLimit::builder().max(1).retry_after(Duration::ZERO)), Some("retry_after"));
    let built = limit(|b| b.max(3).queue(2));
    assert_eq!((built.max(), built.queue, built.max_wait), (3, 2, DEFAULT_MAX_WAIT));
}

#[cfg(feature = "config")]
#[test]
fn the_config_maps_onto_the_builder() {
    let ctx = crate::middleware::BuildContext::default();
    let from = |text: &str| ConcurrencyLimit::from_config(toml::from_str(text).expect("a table"), &ctx);
    let built =
        from("max = 5\nkey = \"header:x-tenant\"\nqueue = 3\nmax_wait = \"250ms\"\nretry_after = \"5s\"").unwrap();
    assert_eq!((built.max(), built.queue, built.max_wait), (5, 3, Duration::from_millis(250)));
    assert_eq!(built.retry_after, "5");
    assert!(matches!(built.key, Key::Header(ref name) if name == "x-tenant"));
    assert!(matches!(from("max = 5").unwrap().key, Key::Global), "global by default");
    assert_eq!(from("max = 0").unwrap_err().field, Some("max"));
    assert_eq!(from("max = 1\nkey = \"ip\"").unwrap_err().field, Some("key"));
    assert_eq!(from("max = 1\nqueue = 1\nmax_wait = \"soon\"").unwrap_err().field, Some("max_wait"));
    assert_eq!(from("max = 1\nmax_wait = \"1s\"").unwrap_err().field, Some("max_wait"));
    assert_eq!(from("max = 1\nretry_after = \"100ms\"").unwrap_err().field, Some("retry_after"));
    assert!(toml::from_str::<ConcurrencyLimitConfig>("max = 1\nlimit = 2").is_err(), "unknown keys are errors");
    assert!(toml::from_str::<ConcurrencyLimitConfig>("queue = 2").is_err(), "max is required");
}

#[tokio::test]
async fn at_most_max_in_flight_and_the_others_get_a_marked_503() {
    let (svc, limit, app) = service(limit(|b| b.max(2).retry_after(Duration::from_secs(3))));
    let held = hold(&svc, 2);
    settle().await;
    assert_eq!(limit.in_flight(), 2);
    let res = svc.call(get("/third")).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&res, header::RETRY_AFTER), Some("3"));
    assert_eq!(res.extensions().get::<GeneratedError>().and_then(|g| g.detail()), Some(BUSY_DETAIL));
    assert_eq!(reason(&res), "2 requests in flight (key: global) and no queue");
    assert!(app.seen.lock().unwrap().is_empty(), "the refused request never reached the app");

    app.release.notify_waiters();
    for h in held {
        assert_eq!(h.await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(limit.in_flight(), 0, "fixed-size bodies already read out: nothing is held");
    assert_eq!(svc.call(get("/after")).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn queued_requests_get_their_turn_in_order_and_the_queue_is_bounded() {
    let (svc, limit, app) = service(limit(|b| b.max(1).queue(3).max_wait(Duration::from_secs(30))));
    let held = hold(&svc, 1);
    settle().await;
    let mut queued = Vec::new();
    for name in ["/a", "/b", "/c"] {
        let svc = svc.clone();
        queued.push(tokio::spawn(async move { svc.call(get(name)).await }));
        // Each one joins the queue before the next is sent.
        settle().await;
    }
    let res = svc.call(get("/d")).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reason(&res), "1 requests in flight and 3 waiting (key: global): queue full");

    app.release.notify_waiters();
    // The held response's body holds its permit until it is read or dropped.
    for h in held {
        assert_eq!(body_text(h.await.unwrap()).await, "/hold");
    }
    for (h, name) in queued.into_iter().zip(["/a", "/b", "/c"]) {
        let res = h.await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body_text(res).await, name);
    }
    assert_eq!(*app.seen.lock().unwrap(), ["/a", "/b", "/c"], "first come, first served");
    assert_eq!(limit.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_queued_request_gives_up_after_max_wait() {
    let (svc, _limit, app) = service(limit(|b| b.max(1).queue(1).max_wait(Duration::from_millis(500))));
    let held = hold(&svc, 1);
    settle().await;
    let started = tokio::time::Instant::now();
    let res = svc.call(get("/late")).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(started.elapsed(), Duration::from_millis(500), "it waited exactly max_wait");
    assert_eq!(reason(&res), "waited max_wait (500ms) in the queue without a turn (key: global, max 1)");
    // It left the queue: the next one may wait again (and gets in once the first ends).
    let svc2 = svc.clone();
    let next = tokio::spawn(async move { svc2.call(get("/next")).await });
    settle().await;
    app.release.notify_waiters();
    for h in held {
        drop(h.await.unwrap());
    }
    assert_eq!(next.await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn a_request_dropped_while_queued_leaves_the_queue() {
    let (svc, _limit, app) = service(limit(|b| b.max(1).queue(1).max_wait(Duration::from_secs(30))));
    let held = hold(&svc, 1);
    settle().await;
    let svc2 = svc.clone();
    let waiting = tokio::spawn(async move { svc2.call(get("/gone")).await });
    settle().await;
    assert_eq!(reason(&svc.call(get("/full")).await), "1 requests in flight and 1 waiting (key: global): queue full");
    waiting.abort();
    let _ = waiting.await;
    let svc2 = svc.clone();
    let next = tokio::spawn(async move { svc2.call(get("/next")).await });
    settle().await;
    app.release.notify_waiters();
    for h in held {
        drop(h.await.unwrap());
    }
    assert_eq!(next.await.unwrap().status(), StatusCode::OK, "the dropped request's place was free");
    assert_eq!(*app.seen.lock().unwrap(), ["/next"]);
}

/// A service whose app answers with a streaming body fed by the returned sender.
fn streaming(limit: ConcurrencyLimit) -> (Service, Arc<ConcurrencyLimit>, Arc<Mutex<Vec<StreamSender>>>) {
    let limit = Arc::new(limit);
    let senders: Arc<Mutex<Vec<StreamSender>>> = Arc::default();
    let keep = senders.clone();
    let svc = Stack::new().with(Shared(limit.clone())).serve(move |_req: Request| {
        let (tx, rx) = mpsc::unbounded::<Result<Frame<Bytes>, BoxError>>();
        keep.lock().unwrap().push(tx);
        async move { Response::new(Body::wrap(http_body_util::StreamBody::new(rx))) }
    });
    (svc, limit, senders)
}

type StreamSender = mpsc::UnboundedSender<Result<Frame<Bytes>, BoxError>>;

#[tokio::test]
async fn a_streaming_body_holds_its_permit_until_it_ends() {
    let (svc, limit, senders) = streaming(limit(|b| b.max(1)));
    let res = svc.call(get("/stream")).await;
    assert_eq!(res.status(), StatusCode::OK, "the head is out, the body still streams");
    assert_eq!(limit.in_flight(), 1);
    assert_eq!(svc.call(get("/other")).await.status(), StatusCode::SERVICE_UNAVAILABLE);

    let tx = senders.lock().unwrap().pop().unwrap();
    tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"event\n")))).unwrap();
    let mut body = res.into_body();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "event\n");
    assert_eq!(limit.in_flight(), 1, "a frame is not the end");
    drop(tx);
    assert!(body.frame().await.is_none());
    assert_eq!(limit.in_flight(), 0, "the end of the body returns the permit");
    let res = svc.call(get("/again")).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_dropped_body_returns_its_permit() {
    let (svc, limit, senders) = streaming(limit(|b| b.max(1)));
    let res = svc.call(get("/stream")).await;
    assert_eq!(svc.call(get("/other")).await.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The client went away: the server drops the body unread, the sender is still open.
    drop(res);
    assert_eq!(limit.in_flight(), 0);
    assert_eq!(svc.call(get("/again")).await.status(), StatusCode::OK);
    drop(senders);
}

#[tokio::test]
async fn a_failing_body_returns_its_permit() {
    let (svc, limit, senders) = streaming(limit(|b| b.max(1)));
    let res = svc.call(get("/stream")).await;
    let tx = senders.lock().unwrap().pop().unwrap();
    tx.unbounded_send(Err("upstream reset".into())).unwrap();
    let mut body = res.into_body();
    assert!(body.frame().await.unwrap().is_err());
    assert_eq!(limit.in_flight(), 0, "a failed body is over");
}

#[tokio::test]
async fn the_body_keeps_its_size_so_content_length_survives() {
    let (svc, _limit, _app) = service(limit(|b| b.max(1)));
    let res = svc.call(get("/sized")).await;
    assert_eq!(http_body::Body::size_hint(res.body()).exact(), Some(6));
    assert_eq!(body_text(res).await, "/sized");
}

#[tokio::test]
async fn each_key_has_its_own_count_and_is_forgotten_at_zero() {
    let (svc, limit, app) = service(limit(|b| b.max(1).key(Key::ClientIp)));
    let svc2 = svc.clone();
    let a = tokio::spawn(async move { svc2.call(from_client(get("/hold"), "192.0.2.1")).await });
    settle().await;
    assert_eq!(limit.tracked_keys(), 1);
    let res = svc.call(from_client(get("/x"), "192.0.2.1")).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reason(&res), "1 requests in flight (key: client_ip) and no queue");
    assert_eq!(svc.call(from_client(get("/y"), "198.51.100.2")).await.status(), StatusCode::OK, "another client");
    assert_eq!(svc.call(from_client(get("/z"), "::ffff:198.51.100.2")).await.status(), StatusCode::OK);
    assert_eq!(limit.tracked_keys(), 1, "the finished client's entry is gone");
    app.release.notify_waiters();
    assert_eq!(a.await.unwrap().status(), StatusCode::OK);
    assert_eq!(limit.tracked_keys(), 0);

    // Many distinct clients, one after another: nothing accumulates.
    for i in 0..1000u32 {
        let client = std::net::Ipv4Addr::from(0x0A00_0000 | i).to_string();
        assert_eq!(svc.call(from_client(get("/n"), &client)).await.status(), StatusCode::OK);
    }
    assert_eq!(limit.tracked_keys(), 0);
}

#[tokio::test]
async fn a_missing_key_follows_missing_key() {
    let api_key = || Key::Header(http::HeaderName::from_static("x-api-key"));
    let (svc, _limit, _app) = service(limit(|b| b.max(1).key(api_key()).missing_key(MissingKey::Deny)));
    let res = svc.call(get("/anonymous")).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.extensions().get::<GeneratedError>().is_some());
    assert!(reason(&res).contains("missing_key = \"deny\""), "{}", reason(&res));
    assert_eq!(svc.call(request("GET", "/known", &[("x-api-key", "k1")])).await.status(), StatusCode::OK);

    let (svc, unkeyed, app) = service(limit(|b| b.max(1).key(api_key()).missing_key(MissingKey::Allow)));
    let held = hold(&svc, 3);
    settle().await;
    assert_eq!(unkeyed.in_flight(), 0, "requests without a key are not counted");
    app.release.notify_waiters();
    for h in held {
        assert_eq!(h.await.unwrap().status(), StatusCode::OK);
    }

    // Keyed by user: the user an authentication layer outside set.
    let (svc, by_user, app) = service(limit(|b| b.max(1).key(Key::User).missing_key(MissingKey::Deny)));
    let as_user = |path: &str, user: &str| {
        let mut req = get(path);
        req.extensions_mut().insert(AuthenticatedUser(user.into()));
        req
    };
    let svc2 = svc.clone();
    let alice = tokio::spawn(async move { svc2.call(as_user("/hold", "alice")).await });
    settle().await;
    assert_eq!(svc.call(as_user("/x", "alice")).await.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(svc.call(as_user("/x", "bob")).await.status(), StatusCode::OK);
    assert_eq!(by_user.tracked_keys(), 1);
    app.release.notify_waiters();
    assert_eq!(alice.await.unwrap().status(), StatusCode::OK);
}

#[test]
fn facts_follow_the_key() {
    let facts = |key: Key, missing: MissingKey| limit(|b| b.max(1).key(key).missing_key(missing)).facts();
    let global = facts(Key::Global, MissingKey::ClientIp);
    assert!(global.has(Fact::ShortCircuits) && global.has(Fact::CanFail) && global.has(Fact::LimitsConcurrency));
    assert!(!global.has(Fact::ReadsClientAddress) && !global.has(Fact::ReadsUser));
    let ip = facts(Key::ClientIp, MissingKey::Deny);
    assert!(ip.has(Fact::ReadsClientAddress) && ip.has(Fact::KeysOnClientAddress));
    let user = facts(Key::User, MissingKey::Deny);
    assert!(user.has(Fact::ReadsUser) && !user.has(Fact::ReadsClientAddress));
    let user_or_ip = facts(Key::User, MissingKey::ClientIp);
    assert!(user_or_ip.has(Fact::ReadsClientAddress) && !user_or_ip.has(Fact::KeysOnClientAddress));
}

#[test]
fn outside_a_rate_limit_is_reported() {
    // The existing ordering rule sees this layer through its facts.
    let info =
        |name: &str, kind: &'static str, facts: Facts| crate::stack::LayerInfo { name: name.into(), kind, facts };
    let layers = [
        info("limit", "concurrency_limit", limit(|b| b.max(1)).facts()),
        info("rate", "rate_limit", Facts::of(&[Fact::ShortCircuits, Fact::LimitsRate])),
    ];
    let found = crate::check::check(&layers);
    assert!(found.iter().any(|d| d.rule == "concurrency-limit-outside-rate-limit" && d.layer == "limit"), "{found:?}");
    let mut inside = layers.to_vec();
    inside.reverse();
    assert!(crate::check::check(&inside).iter().all(|d| d.rule != "concurrency-limit-outside-rate-limit"));
}
