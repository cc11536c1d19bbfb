//! The layer end to end: bursts and `429`s with their fields, several limits, each key source and
//! missing-key rule, a custom key and a custom store, shadow mode, build errors (typed and from the
//! config table, naming the same fields), facts, and an unreachable Redis.

use std::collections::HashMap;
use std::sync::Mutex;

use super::*;
use crate::http::Stack;
#[cfg(feature = "config")]
use crate::middleware::BuildContext;
use crate::middleware::rate_limit::gcra::{Clock, MAX_LIMITS, ManualClock};
use crate::middleware::test_support::{from_client, request};

#[cfg(feature = "config")]
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
    let limit = RateLimit::builder().quota(Quota::per_minute(60).burst(3)).clock(clock.clone()).build().unwrap();
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
    let limit = RateLimit::builder()
        .quotas([Quota::per_second(10), Quota::per_day(3).named("daily")])
        .clock(Arc::new(ManualClock::at(1)))
        .build()
        .unwrap();
    let svc = service(limit);
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
    let mk = |key: Key, missing: MissingKey| {
        let limit = RateLimit::builder()
            .quota(Quota::per_hour(1).burst(1))
            .key(key)
            .missing_key(missing)
            .clock(clock.clone())
            .build()
            .unwrap();
        service(limit)
    };
    let api_key = || Key::Header(HeaderName::from_static("x-api-key"));
    let with_key = |k: &str| {
        let mut r = from("10.0.0.1");
        r.headers_mut().insert("x-api-key", k.parse().unwrap());
        r
    };
    let svc = mk(api_key(), MissingKey::ClientIp);
    assert_eq!(svc.call(with_key("a")).await.status(), StatusCode::OK);
    let res = svc.call(with_key("a")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // The key's kind, never its value (a header key may be a secret).
    let reason = res.extensions().get::<Refusal>().unwrap().reason.to_string();
    assert!(reason.starts_with("over the limit ") && reason.contains("(key: header x-api-key)"), "{reason}");
    assert_eq!(svc.call(with_key("b")).await.status(), StatusCode::OK, "another key, same address");
    assert_eq!(svc.call(from("10.0.0.1")).await.status(), StatusCode::OK, "no key: its address's bucket");
    assert_eq!(svc.call(from("10.0.0.1")).await.status(), StatusCode::TOO_MANY_REQUESTS);
    let svc = mk(api_key(), MissingKey::Allow);
    for _ in 0..3 {
        assert_eq!(svc.call(from("10.0.0.1")).await.status(), StatusCode::OK);
    }
    let svc = mk(Key::User, MissingKey::Deny);
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
    let svc = mk(Key::Global, MissingKey::Deny);
    assert_eq!(svc.call(from("10.0.0.1")).await.status(), StatusCode::OK);
    assert_eq!(svc.call(from("10.0.0.2")).await.status(), StatusCode::TOO_MANY_REQUESTS, "one bucket for all");
}

#[tokio::test]
async fn shadow_mode_counts_but_never_rejects_nor_advertises() {
    let limit = RateLimit::builder()
        .quota(Quota::per_hour(2))
        .shadow(true)
        .clock(Arc::new(ManualClock::at(1)))
        .build()
        .unwrap();
    let limit = Arc::new(limit);
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

#[cfg(feature = "config")]
#[test]
fn bad_configs_name_the_field() {
    let field = |c: RateLimitConfig| RateLimit::from_config(c, &BuildContext::default()).unwrap_err().field;
    assert_eq!(field(config("100/fortnight")), Some("rate"));
    assert_eq!(field(RateLimitConfig::default()), None);
    assert_eq!(field(RateLimitConfig { burst: Some(0), ..config("1/s") }), Some("burst"));
    assert_eq!(field(RateLimitConfig { key: "cookie:x".into(), ..config("1/s") }), Some("key"));
    assert_eq!(field(RateLimitConfig { store: "memcached://x".into(), ..config("1/s") }), Some("store"));
    assert_eq!(field(RateLimitConfig { store_timeout: "0s".into(), ..config("1/s") }), Some("store_timeout"));
    assert_eq!(field(RateLimitConfig { store_timeout: "11s".into(), ..config("1/s") }), Some("store_timeout"));
    assert_eq!(field(RateLimitConfig { store_timeout: "50".into(), ..config("1/s") }), Some("store_timeout"));
    assert_eq!(field(RateLimitConfig { store_retry: "5ms".into(), ..config("1/s") }), Some("store_retry"));
    assert_eq!(field(RateLimitConfig { store_retry: "61s".into(), ..config("1/s") }), Some("store_retry"));
    assert_eq!(field(RateLimitConfig { max_keys: 0, ..config("1/s") }), Some("max_keys"));
    let five = (0..5).map(|i| LimitConfig { rate: format!("{}/s", i + 1), burst: None, name: None }).collect();
    assert_eq!(field(RateLimitConfig { limits: five, ..Default::default() }), Some("limits"));
    let both =
        RateLimitConfig { limits: vec![LimitConfig { rate: "1/s".into(), burst: None, name: None }], ..config("1/s") };
    assert_eq!(field(both), Some("limits"));
    let one_bad_limit = vec![LimitConfig { rate: "1/s".into(), burst: Some(0), name: None }];
    assert_eq!(field(RateLimitConfig { limits: one_bad_limit, ..Default::default() }), Some("limits"));
    // The durations take the humantime forms.
    let c = RateLimitConfig { store_timeout: "1.5s".into(), store_retry: "1m".into(), ..config("1/s") };
    assert!(RateLimit::from_config(c, &BuildContext::default()).is_ok());
}

/// The typed builder refuses what the config table refuses, naming the same config keys.
#[test]
fn the_builder_rejects_what_the_config_rejects_with_the_same_fields() {
    let field = |b: RateLimitBuilder| b.build().unwrap_err().field;
    let one = |q: Quota| RateLimit::builder().quota(q);
    assert_eq!(field(RateLimit::builder()), None);
    assert_eq!(field(one(Quota::per_second(0))), Some("rate"));
    assert_eq!(field(one(Quota::new(1, Duration::from_millis(500)))), Some("rate"));
    assert_eq!(field(one(Quota::new(1, Duration::from_millis(1500)))), Some("rate"));
    assert_eq!(field(one(Quota::per_second(2_000_000))), Some("rate"), "sub-microsecond interval");
    assert_eq!(field(one(Quota::per_second(1).burst(0))), Some("burst"));
    assert_eq!(field(one(Quota::per_second(1).named("a\"b"))), Some("rate"));
    assert_eq!(field(one(Quota::per_second(1)).max_keys(0)), Some("max_keys"));
    let five = (1..=5).map(Quota::per_second);
    assert_eq!(field(RateLimit::builder().quotas(five)), Some("limits"));
    assert_eq!(field(RateLimit::builder().quotas([Quota::per_second(1), Quota::per_day(0)])), Some("limits"));
    let same_name = [Quota::per_second(1).named("x"), Quota::per_day(9).named("x")];
    assert_eq!(field(RateLimit::builder().quotas(same_name)), Some("limits"));
    #[cfg(feature = "redis")]
    {
        let redis = || redis_store::RedisStore::builder("redis://127.0.0.1:6379");
        assert_eq!(field(one(Quota::per_second(1)).store(redis().timeout(Duration::ZERO))), Some("store_timeout"));
        assert_eq!(
            field(one(Quota::per_second(1)).store(redis().timeout(Duration::from_secs(11)))),
            Some("store_timeout")
        );
        assert_eq!(
            field(one(Quota::per_second(1)).store(redis().retry_after(Duration::from_millis(9)))),
            Some("store_retry")
        );
        let bad_url = redis_store::RedisStore::builder("redis://:hunter2@[::1");
        let e = one(Quota::per_second(1)).store(bad_url).build().unwrap_err();
        assert_eq!(e.field, Some("store"));
        assert!(!e.message.contains("hunter2"), "credentials never shown: {}", e.message);
    }
}

#[cfg(feature = "config")]
#[test]
fn the_config_and_the_builder_make_the_same_policy() {
    let from_config = |c: RateLimitConfig| {
        let limit = RateLimit::from_config(c, &BuildContext::default()).unwrap();
        (limit.policy_header.clone(), limit.quota_tag.clone())
    };
    let typed = |b: RateLimitBuilder| {
        let limit = b.build().unwrap();
        (limit.policy_header.clone(), limit.quota_tag.clone())
    };
    assert_eq!(
        from_config(RateLimitConfig { burst: Some(200), ..config("100/s") }),
        typed(RateLimit::builder().quota(Quota::per_second(100).burst(200)))
    );
    let limits = vec![
        LimitConfig { rate: "10/s".into(), burst: Some(20), name: None },
        LimitConfig { rate: "1000/day".into(), burst: None, name: Some("daily".into()) },
    ];
    assert_eq!(
        from_config(RateLimitConfig { limits, ..Default::default() }),
        typed(RateLimit::builder().quotas([Quota::per_second(10).burst(20), Quota::per_day(1000).named("daily")]))
    );
}

#[tokio::test]
async fn a_custom_key_buckets_by_its_value_and_missing_keys_follow_the_rule() {
    // The tenant is the first path segment; `/` has none.
    let tenant =
        Key::custom(|req: &Request| req.uri().path().split('/').nth(1).filter(|s| !s.is_empty()).map(str::to_owned));
    let limit = RateLimit::builder()
        .quota(Quota::per_hour(1))
        .key(tenant)
        .missing_key(MissingKey::Deny)
        .clock(Arc::new(ManualClock::at(1)))
        .build()
        .unwrap();
    assert!(!limit.facts().has(Fact::KeysOnClientAddress));
    let svc = service(limit);
    let to = |path: &str| from_client(request("GET", path, &[]), "10.0.0.1");
    assert_eq!(svc.call(to("/acme/orders")).await.status(), StatusCode::OK);
    let res = svc.call(to("/acme/invoices")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "one bucket per tenant");
    let reason = res.extensions().get::<Refusal>().unwrap().reason.to_string();
    assert!(reason.contains("(key: custom)") && !reason.contains("acme"), "{reason}");
    assert_eq!(svc.call(to("/globex/orders")).await.status(), StatusCode::OK, "another tenant");
    assert_eq!(svc.call(to("/")).await.status(), StatusCode::FORBIDDEN, "no tenant: missing_key = deny");
}

/// A store of the test's own: TATs in a locked map on a manual clock, counting its checks, and
/// failing on demand.
struct CountingStore {
    tats: Mutex<HashMap<String, [u64; MAX_LIMITS]>>,
    clock: ManualClock,
    checks: AtomicU64,
    failing: AtomicBool,
}

impl RateLimitStore for CountingStore {
    fn check<'a>(&'a self, key: &StoreKey<'_>, quotas: &'a [Gcra]) -> CheckFuture<'a> {
        self.checks.fetch_add(1, Ordering::Relaxed);
        if self.failing.load(Ordering::Relaxed) {
            return Box::pin(std::future::ready(Err(StoreError::Timeout)));
        }
        let mut tats = self.tats.lock().unwrap();
        let outcome = gcra::check(quotas, tats.entry(key.name("test:")).or_default(), self.clock.now());
        Box::pin(std::future::ready(Ok(outcome)))
    }
}

#[tokio::test]
async fn a_custom_store_decides_and_its_failures_apply_on_store_error() {
    let store = Arc::new(CountingStore {
        tats: Mutex::default(),
        clock: ManualClock::at(1),
        checks: AtomicU64::new(0),
        failing: AtomicBool::new(false),
    });
    let limit = RateLimit::builder()
        .quota(Quota::per_hour(2))
        .store(Backend::custom(store.clone()))
        .on_store_error(OnStoreError::Deny)
        .build()
        .unwrap();
    let diagnostics = limit.diagnostics();
    assert!(diagnostics[0].message.contains("through a custom store; on_store_error = deny"), "{:?}", diagnostics);
    let svc = service(limit);
    let statuses: Vec<u16> = futures_util::future::join_all((0..3).map(|_| svc.call(from("10.0.0.1"))))
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(statuses, [200, 200, 429]);
    assert_eq!(store.checks.load(Ordering::Relaxed), 3);
    // The store's keys are named as Redis's are, under the prefix it chose.
    assert_eq!(store.tats.lock().unwrap().keys().collect::<Vec<_>>(), ["test:2/3600s;b2:ip:10.0.0.1"]);
    store.failing.store(true, Ordering::Relaxed);
    let res = svc.call(from("10.0.0.2")).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&res, "retry-after"), "1");
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn an_unreachable_redis_applies_on_store_error() {
    // A port nothing listens on: connecting fails at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let store = format!("redis://127.0.0.1:{port}");
    let mk = |mode| {
        let limit = RateLimit::builder()
            .quota(Quota::per_hour(1))
            .store(redis_store::RedisStore::builder(&store))
            .on_store_error(mode)
            .build()
            .unwrap();
        service(limit)
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

#[test]
fn facts_and_store_mode_diagnostics() {
    let ip = RateLimit::builder().quota(Quota::per_second(1)).build().unwrap();
    assert!(ip.facts().has(Fact::ShortCircuits) && ip.facts().has(Fact::KeysOnClientAddress));
    let global = RateLimit::builder().quota(Quota::per_second(1)).key(Key::Global).build().unwrap();
    assert!(!global.facts().has(Fact::ReadsClientAddress));
    assert!(global.diagnostics().is_empty());
    #[cfg(feature = "redis")]
    {
        let limit = RateLimit::builder()
            .quota(Quota::per_second(1))
            .store(redis_store::RedisStore::builder("redis://:hunter2@127.0.0.1:6379"))
            .on_store_error(OnStoreError::Deny)
            .build()
            .unwrap();
        let d = limit.diagnostics();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].severity, Severity::Note);
        assert!(d[0].message.contains("through Redis at redis://<credentials>@127.0.0.1:6379"), "{}", d[0].message);
        assert!(d[0].message.contains("on_store_error = deny"), "{}", d[0].message);
        assert!(!d[0].message.contains("hunter2"), "credentials never shown: {}", d[0].message);
    }
}

#[cfg(all(feature = "redis", feature = "config"))]
#[test]
fn redis_keys_take_the_documented_form() {
    let c = RateLimitConfig { store: "redis://127.0.0.1:1".into(), burst: Some(200), ..config("100/s") };
    let limit = RateLimit::from_config(c, &BuildContext::default()).unwrap();
    let Store::Shared(shared) = &limit.store else { panic!("a Redis store") };
    let SharedStore::Redis(redis) = &shared.shared else { panic!("a Redis store") };
    let key = |value: KeyValue<'_>| limit.store_key(&value).name(redis.key_prefix());
    assert_eq!(key(KeyValue::Ip("203.0.113.9".parse().unwrap())), "strata:rate_limit:100/1s;b200:ip:203.0.113.9");
    assert_eq!(key(KeyValue::Ip("10.0.100.255".parse().unwrap())), "strata:rate_limit:100/1s;b200:ip:10.0.100.255");
    assert_eq!(key(KeyValue::Ip("2001:db8::1".parse().unwrap())), "strata:rate_limit:100/1s;b200:ip:2001:db8::1");
    assert_eq!(key(KeyValue::Global), "strata:rate_limit:100/1s;b200:global");
    let header = key(KeyValue::Header(b"secret-api-key"));
    assert!(header.strip_prefix("strata:rate_limit:100/1s;b200:h:").is_some_and(|hex| hex.len() == 32), "{header}");
}
