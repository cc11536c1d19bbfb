use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use http_body::Body as _;

use super::*;
use crate::http::{BoxError, GeneratedError, Refusal, Stack};
use crate::middleware::test_support::{body_text, from_client, request};

const ADDRESS: &str = "http://auth.invalid:9091/verify";
const X_AUTH_USER: HeaderName = HeaderName::from_static("x-auth-user");
const X_AUTH_GROUPS: HeaderName = HeaderName::from_static("x-auth-groups");

/// The auth requests a test service received, without their (always empty) bodies.
type Seen = Arc<Mutex<Vec<http::Request<()>>>>;

/// An in-process auth service answering with `answer`, recording what it was asked.
fn service<F>(answer: F) -> (Arc<dyn HttpClient>, Seen)
where
    F: Fn(&http::Request<()>) -> http::Response<Body> + Send + Sync + 'static,
{
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let client = move |req: http::Request<Body>| {
        let (parts, body) = req.into_parts();
        assert!(body.is_end_stream(), "auth requests carry no body");
        let req = http::Request::from_parts(parts, ());
        let res = answer(&req);
        record.lock().unwrap().push(req);
        async move { Ok::<_, BoxError>(res) }
    };
    (Arc::new(client), seen)
}

/// Admits `Authorization: Bearer good` as alice (in the admin group), sends `Bearer login`
/// to a login page, and refuses everything else with a challenge.
fn token_service(req: &http::Request<()>) -> http::Response<Body> {
    let auth = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let res = http::Response::builder();
    match auth {
        Some(b"Bearer good") => res.header("x-auth-user", "alice").header("x-auth-groups", "admin"),
        Some(b"Bearer login") => res.status(StatusCode::FOUND).header(header::LOCATION, "/login"),
        _ => res
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, "Bearer realm=\"strata\"")
            .header(header::CONNECTION, "close, x-hop")
            .header("x-hop", "1")
            .header(header::CONTENT_TYPE, "text/html"),
    }
    .body(match auth {
        Some(b"Bearer good" | b"Bearer login") => Body::empty(),
        _ => Body::from("<h1>who are you?</h1>"),
    })
    .unwrap()
}

fn builder(client: Arc<dyn HttpClient>) -> ForwardAuthBuilder {
    ForwardAuth::builder().address(ADDRESS.parse().unwrap()).client(client)
}

/// An app that answers with the `x-auth-*` headers it received and the user, one per line.
fn app(auth: ForwardAuth) -> crate::http::Service {
    Stack::new().with(auth).serve(|req: Request| async move {
        let mut lines: Vec<String> = req
            .headers()
            .iter()
            .filter(|(name, _)| name.as_str().starts_with("x-auth-"))
            .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap()))
            .collect();
        let user = req.extensions().get::<AuthenticatedUser>().map(|u| u.0.to_string());
        lines.push(format!("user: {}", user.as_deref().unwrap_or("-")));
        response::text(StatusCode::OK, lines.join("\n"))
    })
}

fn bearer(token: &str, path: &str) -> Request {
    request("GET", path, &[("authorization", &format!("Bearer {token}"))])
}

#[tokio::test]
async fn the_auth_request_carries_the_chosen_headers_and_the_forwarded_facts() {
    let (client, seen) = service(token_service);
    let service = app(builder(client).build().unwrap());
    let req = request(
        "POST",
        "/orders/7?expand=items",
        &[
            ("host", "shop.example"),
            ("authorization", "Bearer good"),
            ("cookie", "session=1"),
            ("x-other", "not forwarded"),
            ("x-forwarded-uri", "/spoofed"),
        ],
    );
    let res = service.call(from_client(req, "203.0.113.7")).await;
    assert_eq!(res.status(), StatusCode::OK);

    let seen = seen.lock().unwrap();
    let asked = &seen[0];
    assert_eq!(asked.method(), Method::GET);
    assert_eq!(asked.uri(), ADDRESS);
    let h = asked.headers();
    assert_eq!(h["authorization"], "Bearer good");
    assert_eq!(h["cookie"], "session=1");
    assert_eq!(h["x-forwarded-method"], "POST");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example");
    assert_eq!(h.get_all("x-forwarded-uri").iter().collect::<Vec<_>>(), ["/orders/7?expand=items"]);
    assert_eq!(h["x-forwarded-for"], "203.0.113.7");
    assert!(h.get("x-other").is_none() && h.get(header::HOST).is_none());
}

#[tokio::test]
async fn a_configured_method_and_header_list_and_a_tls_connection_are_forwarded() {
    let (client, seen) = service(token_service);
    let auth = builder(client)
        .method(Method::HEAD)
        .auth_request_headers([HeaderName::from_static("x-api-key")])
        .build()
        .unwrap();
    let req = request("GET", "https://api.example/v1", &[("x-api-key", "k1"), ("authorization", "Bearer good")]);
    let mut req = from_client(req, "2001:db8::5");
    let info = *req.extensions().get::<ConnectionInfo>().unwrap();
    req.extensions_mut().insert(info.over_tls(true));
    let res = app(auth).call(req).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "without Authorization forwarded, the service refuses");
    let seen = seen.lock().unwrap();
    let h = seen[0].headers();
    assert_eq!(seen[0].method(), Method::HEAD);
    assert_eq!(h["x-api-key"], "k1");
    assert!(h.get("authorization").is_none());
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "api.example", "the authority when there is no Host");
    assert_eq!(h["x-forwarded-for"], "2001:db8::5");
}

#[tokio::test]
async fn an_admission_copies_the_listed_headers_and_sets_the_user() {
    let (client, _) = service(token_service);
    let auth = builder(client).auth_response_headers([X_AUTH_GROUPS]).user_header(X_AUTH_USER).build().unwrap();
    assert!(auth.facts().has(Fact::SetsUser));
    let res = app(auth).call(bearer("good", "/")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let user = res.extensions().get::<AuthenticatedUser>().map(|u| u.0.to_string());
    assert_eq!(user.as_deref(), Some("alice"), "the user is in the response for layers outside");
    assert_eq!(body_text(res).await, "x-auth-groups: admin\nx-auth-user: alice\nuser: alice");
}

#[tokio::test]
async fn client_sent_copies_of_the_response_headers_never_reach_the_app() {
    let (client, _) = service(|_req: &http::Request<()>| {
        // Admits without naming a user or a group.
        http::Response::new(Body::empty())
    });
    let auth = builder(client).auth_response_headers([X_AUTH_GROUPS]).user_header(X_AUTH_USER).build().unwrap();
    let req = request("GET", "/", &[("x-auth-user", "mallory"), ("x-auth-groups", "admin"), ("x-auth-groups", "root")]);
    let res = app(auth).call(req).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.extensions().get::<AuthenticatedUser>().is_none());
    assert_eq!(body_text(res).await, "user: -");
}

#[tokio::test]
async fn denials_go_to_the_client_as_the_service_made_them() {
    let (client, _) = service(token_service);
    let service = app(builder(client).user_header(X_AUTH_USER).build().unwrap());

    let res = service.call(bearer("wrong", "/")).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()[header::WWW_AUTHENTICATE], "Bearer realm=\"strata\"");
    assert_eq!(res.headers()[header::CONTENT_TYPE], "text/html");
    assert!(res.headers().get(header::CONNECTION).is_none() && res.headers().get("x-hop").is_none());
    assert!(res.extensions().get::<GeneratedError>().is_none(), "the service's own page, for errors to leave alone");
    assert_eq!(res.extensions().get::<Refusal>().unwrap().reason, "auth service answered 401");
    assert_eq!(body_text(res).await, "<h1>who are you?</h1>");

    let res = service.call(bearer("login", "/")).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(res.headers()[header::LOCATION], "/login");
}

#[tokio::test]
async fn a_denial_body_over_the_bound_is_dropped_but_the_denial_stands() {
    let (client, _) = service(|_req: &http::Request<()>| {
        let mut res = http::Response::new(Body::from(vec![b'x'; 100]));
        *res.status_mut() = StatusCode::FORBIDDEN;
        res
    });
    let res =
        app(builder(client).max_body_bytes(99).on_error(OnError::Allow).build().unwrap()).call(bearer("a", "/")).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(body_text(res).await, "");
}

/// A service that answers after `delay` (paused-time tests run it instantly).
fn slow_service(delay: Duration) -> Arc<dyn HttpClient> {
    Arc::new(move |_req: http::Request<Body>| async move {
        tokio::time::sleep(delay).await;
        Ok::<_, BoxError>(http::Response::new(Body::empty()))
    })
}

#[tokio::test(start_paused = true)]
async fn no_answer_within_the_timeout_is_a_503_by_default() {
    let auth = builder(slow_service(Duration::from_secs(6))).user_header(X_AUTH_USER).build().unwrap();
    let res = app(auth).call(bearer("good", "/")).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.extensions().get::<GeneratedError>().and_then(|g| g.detail()), Some(UNAVAILABLE));
    assert_eq!(res.extensions().get::<Refusal>().unwrap().reason, "auth service gave no answer within 5s");

    let auth = builder(slow_service(Duration::from_secs(1))).timeout(Duration::from_secs(2)).build().unwrap();
    assert_eq!(app(auth).call(bearer("good", "/")).await.status(), StatusCode::OK, "in time");
}

#[tokio::test(start_paused = true)]
async fn on_error_allow_lets_requests_through_without_a_user_or_spoofed_headers() {
    let auth = builder(slow_service(Duration::from_secs(60)))
        .timeout(Duration::from_millis(500))
        .user_header(X_AUTH_USER)
        .on_error(OnError::Allow)
        .build()
        .unwrap();
    let res = app(auth).call(request("GET", "/", &[("x-auth-user", "mallory")])).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_text(res).await, "user: -");
}

#[tokio::test]
async fn a_transport_error_follows_on_error_too() {
    let refused = || -> Arc<dyn HttpClient> {
        Arc::new(|_req: http::Request<Body>| async {
            Err::<http::Response<Body>, BoxError>("connection refused".into())
        })
    };
    let res = app(builder(refused()).build().unwrap()).call(bearer("good", "/")).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.extensions().get::<Refusal>().unwrap().reason, "auth service failed: connection refused");
    let res = app(builder(refused()).on_error(OnError::Allow).build().unwrap()).call(bearer("good", "/")).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn cached_admissions_skip_the_call_and_keep_their_headers() {
    let (client, seen) = service(token_service);
    let auth = builder(client)
        .auth_response_headers([X_AUTH_GROUPS])
        .user_header(X_AUTH_USER)
        .cache_ttl(Duration::from_secs(60))
        .build()
        .unwrap();
    let service = app(auth);
    let calls = || seen.lock().unwrap().len();

    for _ in 0..3 {
        let res = service.call(bearer("good", "/a")).await;
        assert_eq!(res.extensions().get::<AuthenticatedUser>().unwrap().0.as_ref(), "alice");
        assert_eq!(body_text(res).await, "x-auth-groups: admin\nx-auth-user: alice\nuser: alice");
    }
    assert_eq!(calls(), 1, "asked once, then admitted from the cache");
    // Another path, another credential: other auth requests, asked about.
    service.call(bearer("good", "/b")).await;
    assert_eq!(calls(), 2);
    service.call(bearer("other", "/a")).await;
    service.call(bearer("other", "/a")).await;
    assert_eq!(calls(), 4, "denials are not cached");
    // A spoofed header on a cached request is still removed.
    let req = request("GET", "/a", &[("authorization", "Bearer good"), ("x-auth-groups", "root")]);
    let res = service.call(req).await;
    assert_eq!(body_text(res).await, "x-auth-groups: admin\nx-auth-user: alice\nuser: alice");
    assert_eq!(calls(), 4);
}

#[tokio::test]
async fn no_store_answers_and_expired_entries_are_asked_again() {
    let (client, seen) = service(|_req: &http::Request<()>| {
        http::Response::builder().header(header::CACHE_CONTROL, "private, no-store").body(Body::empty()).unwrap()
    });
    let service = app(builder(client).cache_ttl(Duration::from_secs(60)).build().unwrap());
    service.call(bearer("good", "/")).await;
    service.call(bearer("good", "/")).await;
    assert_eq!(seen.lock().unwrap().len(), 2);

    let (client, seen) = service_counting();
    let service = app(builder(client).cache_ttl(Duration::from_millis(30)).build().unwrap());
    service.call(bearer("good", "/")).await;
    service.call(bearer("good", "/")).await;
    assert_eq!(seen.load(Ordering::Relaxed), 1);
    tokio::time::sleep(Duration::from_millis(60)).await;
    service.call(bearer("good", "/")).await;
    assert_eq!(seen.load(Ordering::Relaxed), 2, "asked again once the entry expired");
}

/// A service that admits everything and counts its calls.
fn service_counting() -> (Arc<dyn HttpClient>, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let client = move |_req: http::Request<Body>| {
        counter.fetch_add(1, Ordering::Relaxed);
        async { Ok::<_, BoxError>(http::Response::new(Body::empty())) }
    };
    (Arc::new(client), calls)
}

#[test]
fn the_cache_stays_bounded_and_its_keys_depend_on_the_layer() {
    let cache = VerdictCache::verdicts(Duration::from_secs(60), 4).unwrap();
    let other = VerdictCache::verdicts(Duration::from_secs(60), 4).unwrap();
    let names = [header::AUTHORIZATION];
    let key = |cache: &VerdictCache, token: &str| {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(token).unwrap());
        let asked = Asked { method: b"GET", proto: b"http", host: b"h", uri: b"/", client: None, headers: &headers };
        cache.key(&asked, &names)
    };
    for i in 0..100 {
        cache.insert(key(&cache, &format!("t{i}")), Arc::default());
    }
    assert!(cache.len() <= 4, "{}", cache.len());
    assert!(cache.get(&key(&cache, "t99")).is_some(), "the newest entry survives eviction");
    assert!(cache.get(&key(&cache, "t0")).is_none());
    assert_ne!(key(&cache, "t1"), key(&other, "t1"), "each layer keys its MACs with its own secret");
}

#[test]
fn build_errors_name_the_key_at_fault() {
    let field = |b: ForwardAuthBuilder| b.build().unwrap_err().field;
    let client = || service(token_service).0;
    assert_eq!(field(ForwardAuth::builder()), Some("address"));
    for bad in ["ftp://auth.invalid/", "/verify", "http://user:pw@auth.invalid/"] {
        assert_eq!(
            field(ForwardAuth::builder().address(bad.parse().unwrap()).client(client())),
            Some("address"),
            "{bad}"
        );
    }
    let https = ForwardAuth::builder().address("https://auth.invalid/".parse().unwrap());
    assert!(https.build().unwrap_err().message.contains("TLS-capable client"));
    assert!(ForwardAuth::builder().address("https://auth.invalid/".parse().unwrap()).client(client()).build().is_ok());
    for bad in [header::HOST, header::CONTENT_LENGTH, HeaderName::from_static("x-forwarded-for")] {
        assert_eq!(field(builder(client()).auth_request_headers([bad])), Some("auth_request_headers"));
    }
    assert_eq!(
        field(builder(client()).auth_response_headers([header::TRANSFER_ENCODING])),
        Some("auth_response_headers")
    );
    assert_eq!(field(builder(client()).user_header(header::CONNECTION)), Some("user_header"));
    assert_eq!(field(builder(client()).timeout(Duration::ZERO)), Some("timeout"));
    assert_eq!(field(builder(client()).timeout(Duration::MAX)), Some("timeout"));
    assert_eq!(field(builder(client()).max_body_bytes(builder::MAX_BODY_BYTES_LIMIT + 1)), Some("max_body_bytes"));
    assert_eq!(field(builder(client()).cache_ttl(Duration::MAX)), Some("cache_ttl"));
    let no_room = builder(client()).cache_ttl(Duration::from_secs(1)).cache_capacity(0);
    assert_eq!(field(no_room), Some("cache_capacity"));
    assert!(builder(client()).cache_capacity(0).build().is_ok(), "the capacity does not matter with the cache off");
}

#[test]
fn the_facts_say_what_the_layer_does() {
    let auth = builder(service(token_service).0).build().unwrap();
    let facts = auth.facts();
    for fact in [Fact::ShortCircuits, Fact::CanFail, Fact::Authenticates, Fact::ReadsClientAddress] {
        assert!(facts.has(fact), "{fact:?}");
    }
    assert!(!facts.has(Fact::SetsUser), "no user without user_header");
    assert_eq!(auth.kind(), "forward_auth");
}

#[cfg(feature = "config")]
mod config {
    use super::*;
    use crate::middleware::{BuildContext, SharedResources};

    fn from_toml(text: &str, ctx: &BuildContext) -> Result<ForwardAuth, ConfigError> {
        ForwardAuth::from_config(toml::from_str(text).expect("a table of the right shape"), ctx)
    }

    use crate::middleware::ConfigError;

    #[test]
    fn a_table_maps_onto_the_builder() {
        let auth = from_toml(
            r#"
            address = "http://127.0.0.1:9091/verify"
            method = "POST"
            auth_request_headers = ["authorization", "x-api-key"]
            auth_response_headers = ["X-Auth-Groups"]
            user_header = "x-auth-user"
            timeout = "1500ms"
            on_error = "allow"
            max_body_bytes = 1024
            cache_ttl = "30s"
            cache_capacity = 100
            "#,
            &BuildContext::default(),
        )
        .unwrap();
        assert_eq!(auth.method, Method::POST);
        assert_eq!(&*auth.request_headers, [header::AUTHORIZATION, HeaderName::from_static("x-api-key")]);
        assert_eq!(&*auth.response_headers, [X_AUTH_GROUPS, X_AUTH_USER]);
        assert_eq!(auth.timeout, Duration::from_millis(1500));
        assert_eq!(auth.on_error, OnError::Allow);
        assert_eq!(auth.cache.as_ref().map(|c| c.ttl), Some(Duration::from_secs(30)));
        let defaults = from_toml("address = \"http://127.0.0.1:9091/\"", &BuildContext::default()).unwrap();
        assert_eq!(&*defaults.request_headers, [header::AUTHORIZATION, header::COOKIE]);
        assert_eq!((defaults.timeout, defaults.on_error), (Duration::from_secs(5), OnError::Deny));
        assert!(defaults.cache.is_none());
    }

    #[test]
    fn bad_values_name_their_key() {
        let ctx = BuildContext::default();
        let field = |text: &str| from_toml(text, &ctx).unwrap_err().field;
        assert_eq!(field("address = \"not a url\""), Some("address"));
        assert_eq!(field("address = \"https://auth.invalid/\""), Some("address"), "no https client in the context");
        let with = |extra: &str| format!("address = \"http://127.0.0.1:1/\"\n{extra}");
        assert_eq!(field(&with("method = \"GE T\"")), Some("method"));
        assert_eq!(field(&with("timeout = \"soon\"")), Some("timeout"));
        assert_eq!(field(&with("cache_ttl = \"-1s\"")), Some("cache_ttl"));
        assert_eq!(field(&with("user_header = \"x user\"")), Some("user_header"));
        assert_eq!(field(&with("auth_request_headers = [\"host\"]")), Some("auth_request_headers"));
        assert!(toml::from_str::<ForwardAuthConfig>(&with("on_error = \"maybe\"")).is_err());
        assert!(toml::from_str::<ForwardAuthConfig>(&with("adress = \"x\"")).is_err());
    }

    #[test]
    fn the_shared_client_is_used_and_speaks_https() {
        let (client, _) = service(token_service);
        let ctx =
            BuildContext { shared: SharedResources::default().with_http_client(client), ..BuildContext::default() };
        assert!(from_toml("address = \"https://auth.invalid/verify\"", &ctx).is_ok());
    }
}
