//! The layer end to end: bursts and `429`s with their fields, several limits, each key source and
//! missing-key rule, shadow mode, config errors, facts, and an unreachable Redis.

use super::*;
use crate::http::Stack;
use crate::middleware::rate_limit::gcra::ManualClock;
use crate::middleware::test_support::{from_client, request};

fn config(rate: &str) -> RateLimitConfig {
    RateLimitConfig { rate: Some(rate.into()), ..Default::default() }
}

fn service(limit: RateLimit) -> crate::http::Service {
    Stack::new().with(limit).serve(|_req: Request| async { crate::http::response::text(StatusCode::OK, "ok") })
}

fn from(ip: &str) -> Request {
    from_client(request("GET", "/", &[]), ip)
}

fn header<'a>(res: &'a Response, name: &str) -> &'a str {
    res.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test]
async fn admits_the_burst_then_answers_429_with_retry_after_and_fields() {
    let clock = Arc::new(ManualClock::at(1_000_000_000));
    let limit = RateLimit::with_clock(RateLimitConfig { burst: Some(3), ..config("60/min") }, clock.clone()).unwrap();
    let svc = service(limit);
    for r in [2, 1, 0] {
        let res = svc.call(from("10.0.0.1")).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "ratelimit-policy"), "\"default\";q=60;w=60");
        assert_eq!(header(&res, "ratelimit"), format!("\"default\";r={r};t={}", 3 - r));
    }
    let res = svc.call(from("10.0.0.1")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, "retry-after"), "1");
    assert_eq!(header(&res, "content-type"), "application/problem+json");
    assert_eq!(header(&res, "ratelimit"), "\"default\";r=0;t=3");
    assert!(res.extensions().get::<GeneratedError>().is_some());
    // Another client has its own bucket.
    assert_eq!(svc.call(from("10.0.0.2")).await.status(), StatusCode::OK);
    clock.advance(Duration::from_millis(1000));
    assert_eq!(svc.call(from("10.0.0.1")).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn several_limits_are_all_reported_and_enforced() {
    let c = RateLimitConfig {
        limits: vec![
            LimitConfig { rate: "10/s".into(), burst: None, name: None },
            LimitConfig { rate: "3/day".into(), burst: None, name: Some("daily".into()) },
        ],
        ..Default::default()
    };
    let svc = service(RateLimit::with_clock(c, Arc::new(ManualClock::at(1))).unwrap());
    let res = svc.call(from("10.0.0.1")).await;
    assert_eq!(header(&res, "ratelimit-policy"), "\"10/s\";q=10;w=1, \"daily\";q=3;w=86400");
    assert_eq!(header(&res, "ratelimit"), "\"10/s\";r=9;t=1, \"daily\";r=2;t=28800");
    let statuses: Vec<u16> = futures_util::future::join_all((0..4).map(|_| svc.call(from("10.0.0.1"))))
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(statuses, [200, 200, 429, 429]);
}

#[tokio::test]
async fn header_and_user_keys_with_each_missing_key_rule() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at(1));
    let mk = |key: &str, missing: MissingKey| {
        let c = RateLimitConfig { key: key.into(), missing_key: missing, burst: Some(1), ..config("1/h") };
        service(RateLimit::with_clock(c, clock.clone()).unwrap())
    };
    let with_key = |k: &str| {
        let mut r = from("10.0.0.1");
        r.headers_mut().insert("x-api-key", k.parse().unwrap());
        r
    };
    let svc = mk("header:x-api-key", MissingKey::ClientIp);
    assert_eq!(svc.call(with_key("a")).await.status(), StatusCode::OK);
    let res = svc.call(with_key("a")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // The key's kind, never its value (a header key may be a secret).
    let reason = res.extensions().get::<Refusal>().unwrap().reason.to_string();
    assert!(reason.starts_with("over the limit ") && reason.contains("(key: header x-api-key)"), "{reason}");
    assert_eq!(svc.call(with_key("b")).await.status(), StatusCode::OK, "another key, same address");
    assert_eq!(svc.call(from("10.0.0.1")).await.status(), StatusCode::OK, "no key: its address's bucket");
    assert_eq!(svc.call(from("10.0.0.1")).await.status(), StatusCode::TOO_MANY_REQUESTS);
    let svc = mk("header:x-api-key", MissingKey::Allow);
    for _ in 0..3 {
        assert_eq!(svc.call(from("10.0.0.1")).await.status(), StatusCode::OK);
    }
    let svc = mk("user", MissingKey::Deny);
    let res = svc.call(from("10.0.0.1")).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.extensions().get::<Refusal>().unwrap().reason.contains("missing_key = \"deny\""));
    let as_user = |u: &str| {
        let mut r = from("10.0.0.1");
        r.extensions_mut().insert(AuthenticatedUser(u.into()));
        r
    };
    assert_eq!(svc.call(as_user("alice")).await.status(), StatusCode::OK);
    assert_eq!(svc.call(as_user("alice")).await.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(svc.call(as_user("bob")).await.status(), StatusCode::OK);
    let svc = mk("global", MissingKey::Deny);
    assert_eq!(svc.call(from("10.0.0.1")).await.status(), StatusCode::OK);
    assert_eq!(svc.call(from("10.0.0.2")).await.status(), StatusCode::TOO_MANY_REQUESTS, "one bucket for all");
}

#[tokio::test]
async fn shadow_mode_counts_but_never_rejects_nor_advertises() {
    let c = RateLimitConfig { shadow: true, burst: Some(2), ..config("2/h") };
    let limit = Arc::new(RateLimit::with_clock(c, Arc::new(ManualClock::at(1))).unwrap());
    let inner = limit.clone();
    let svc = Stack::new()
        .with(crate::from_fn(move |req: Request, next: Next| {
            let inner = inner.clone();
            async move { inner.handle(req, next).await }
        }))
        .serve(|_req: Request| async { crate::http::response::text(StatusCode::OK, "ok") });
    for _ in 0..5 {
        let res = svc.call(from("10.0.0.1")).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().get("ratelimit").is_none());
    }
    assert_eq!(limit.shadow_rejections(), 3);
}

#[test]
fn bad_configs_name_the_field() {
    let field = |c: RateLimitConfig| RateLimit::new(c, &BuildContext::default()).unwrap_err().field;
    assert_eq!(field(config("100/fortnight")), Some("rate"));
    assert_eq!(field(RateLimitConfig::default()), None);
    assert_eq!(field(RateLimitConfig { burst: Some(0), ..config("1/s") }), Some("burst"));
    assert_eq!(field(RateLimitConfig { key: "cookie:x".into(), ..config("1/s") }), Some("key"));
    assert_eq!(field(RateLimitConfig { store: "memcached://x".into(), ..config("1/s") }), Some("store"));
    assert_eq!(field(RateLimitConfig { store_timeout_ms: 0, ..config("1/s") }), Some("store_timeout_ms"));
    let five = (0..5).map(|i| LimitConfig { rate: format!("{}/s", i + 1), burst: None, name: None }).collect();
    assert_eq!(field(RateLimitConfig { limits: five, ..Default::default() }), Some("limits"));
    let both =
        RateLimitConfig { limits: vec![LimitConfig { rate: "1/s".into(), burst: None, name: None }], ..config("1/s") };
    assert_eq!(field(both), Some("limits"));
}

#[test]
fn facts_and_store_mode_diagnostics() {
    let ctx = BuildContext::default();
    let ip = RateLimit::new(config("1/s"), &ctx).unwrap();
    assert!(ip.facts().has(Fact::ShortCircuits) && ip.facts().has(Fact::KeysOnClientAddress));
    let global = RateLimit::new(RateLimitConfig { key: "global".into(), ..config("1/s") }, &ctx).unwrap();
    assert!(!global.facts().has(Fact::ReadsClientAddress));
    assert!(global.diagnostics().is_empty());
    let c = RateLimitConfig {
        store: "redis://:hunter2@127.0.0.1:6379".into(),
        on_store_error: OnStoreError::Deny,
        ..config("1/s")
    };
    let d = RateLimit::new(c, &ctx).unwrap().diagnostics();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].severity, Severity::Note);
    assert!(d[0].message.contains("on_store_error = deny"), "{}", d[0].message);
    assert!(!d[0].message.contains("hunter2"), "credentials never shown: {}", d[0].message);
}

#[test]
fn redis_keys_take_the_documented_form() {
    let c = RateLimitConfig { store: "redis://127.0.0.1:1".into(), burst: Some(200), ..config("100/s") };
    let limit = RateLimit::new(c, &BuildContext::default()).unwrap();
    let key = |ip: &str| limit.redis_key(&ClientKey::Ip(ip.parse().unwrap()));
    assert_eq!(key("203.0.113.9"), "strata:rate_limit:100/1s;b200:ip:203.0.113.9");
    assert_eq!(key("10.0.100.255"), "strata:rate_limit:100/1s;b200:ip:10.0.100.255");
    assert_eq!(key("2001:db8::1"), "strata:rate_limit:100/1s;b200:ip:2001:db8::1");
    assert_eq!(limit.redis_key(&ClientKey::Global), "strata:rate_limit:100/1s;b200:global");
}

#[tokio::test]
async fn an_unreachable_redis_applies_on_store_error() {
    // A port nothing listens on: connecting fails at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let store = format!("redis://127.0.0.1:{port}");
    let mk = |mode| {
        let c = RateLimitConfig { store: store.clone(), on_store_error: mode, burst: Some(1), ..config("1/h") };
        service(RateLimit::new(c, &BuildContext::default()).unwrap())
    };
    let svc = mk(OnStoreError::Deny);
    let res = svc.call(from("10.0.0.1")).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&res, "retry-after"), "1");
    let svc = mk(OnStoreError::Allow);
    for _ in 0..3 {
        let res = svc.call(from("10.0.0.1")).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().get("ratelimit").is_none());
    }
    let svc = mk(OnStoreError::Local);
    assert_eq!(svc.call(from("10.0.0.1")).await.status(), StatusCode::OK);
    assert_eq!(svc.call(from("10.0.0.1")).await.status(), StatusCode::TOO_MANY_REQUESTS);
}
