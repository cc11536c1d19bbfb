//! Every verdict of the layer end to end: challenges, hashes and plaintext, the credential cache,
//! the failure limit per client, forwarding of the authenticated user, and config errors.

use super::builder::MAX_CACHE_TTL;
use super::hash::testing::{argon2_hash, bcrypt_hash, sha_hash};
use super::*;
use crate::http::{Service, Stack};
use crate::middleware::test_support;
#[cfg(feature = "config")]
use crate::middleware::{BuildContext, ConfigError, SharedResources};
use argon2::Algorithm;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT};
use std::path::PathBuf;
use std::time::Duration;

const CHALLENGE: &str = "Basic realm=\"strata\", charset=\"UTF-8\"";

/// What the endpoint saw, answered as headers so the tests can read it.
fn service(auth: BasicAuth) -> Service {
    Stack::new().with(auth).serve(app)
}

async fn app(req: Request) -> Response {
    let mut res = response::text(StatusCode::OK, "app");
    let h = res.headers_mut();
    if let Some(AuthenticatedUser(user)) = req.extensions().get::<AuthenticatedUser>() {
        h.insert("x-seen-user", HeaderValue::from_str(user).unwrap());
    }
    if let Some(v) = req.headers().get("x-forwarded-user") {
        h.insert("x-seen-forwarded", v.clone());
    }
    let authorization = req.headers().contains_key(header::AUTHORIZATION);
    h.insert("x-seen-authorization", HeaderValue::from_static(bool_str(authorization)));
    res
}

fn bool_str(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

fn request(authorization: Option<&str>) -> Request {
    test_support::request("GET", "/", authorization.map(|a| ("authorization", a)).as_slice())
}

async fn call(svc: &Service, authorization: Option<&str>) -> Response {
    svc.call(request(authorization)).await
}

fn assert_challenged(res: &Response) {
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()[header::WWW_AUTHENTICATE], CHALLENGE);
    assert_eq!(res.body().as_bytes(), Some(&b"Unauthorized\n"[..]));
    assert!(res.headers().get("x-seen-user").is_none(), "the app must not be reached");
}

fn auth_with(hash: String) -> BasicAuth {
    BasicAuth::builder().user("alice", hash).build().unwrap()
}

async fn accepts(hash: String, password: &str) -> bool {
    let svc = service(auth_with(hash));
    let res = call(&svc, Some(&basic("alice", password))).await;
    match res.status().as_u16() {
        200 => {
            assert_eq!(res.headers()["x-seen-user"], "alice");
            true
        }
        401 => {
            assert_challenged(&res);
            false
        }
        other => panic!("unexpected status {other}"),
    }
}

#[tokio::test]
async fn each_hash_format_accepts_the_right_password_only() {
    let hashes = [
        ("argon2id", argon2_hash(Algorithm::Argon2id, "s3cret")),
        ("argon2i", argon2_hash(Algorithm::Argon2i, "s3cret")),
        ("bcrypt $2b$", bcrypt_hash("s3cret")),
        ("bcrypt $2y$", bcrypt_hash("s3cret").replacen("$2b$", "$2y$", 1)),
        ("bcrypt $2a$", bcrypt_hash("s3cret").replacen("$2b$", "$2a$", 1)),
        ("{SHA}", sha_hash("s3cret")),
        ("apr1", "$apr1$abc$PZF73YJz5hJ9yyI.7OP.R.".to_string()),
    ];
    for (name, hash) in hashes {
        let password = if name == "apr1" { "secret" } else { "s3cret" };
        assert!(accepts(hash.clone(), password).await, "{name} should accept the right password");
        assert!(!accepts(hash.clone(), "wrong").await, "{name} should refuse a wrong password");
        assert!(!accepts(hash, "").await, "{name} should refuse an empty password");
    }
}

#[tokio::test]
async fn unknown_user_is_refused_after_a_dummy_verification_of_the_same_scheme() {
    let auth = BasicAuth::builder()
        .user("weak", sha_hash("x"))
        .user("alice", argon2_hash(Algorithm::Argon2id, "s3cret"))
        .build()
        .unwrap();
    // An argon2 dummy of alice's cost (m=64 × t=1); `hash.rs` checks it keeps the variant too.
    assert!(matches!(&*auth.dummy, Verifier::Argon2(_)) && auth.dummy.work() == (4, 64));
    let (auth, svc) = shared(auth);
    assert_challenged(&call(&svc, Some(&basic("mallory", "s3cret"))).await);
    assert_eq!(verifications(auth), 1, "the unknown user still cost a verification");
    assert_challenged(&call(&svc, Some(&basic("alice", "wrong"))).await);
    assert_eq!(verifications(auth), 2);
    assert_eq!(auth.cache.as_ref().unwrap().len(), 0, "failures are never cached");
}

#[tokio::test]
async fn each_401_says_why_in_an_extension_never_with_the_password() {
    let auth = BasicAuth::builder().user("alice", sha_hash("s3cret")).build().unwrap();
    let svc = service(auth);
    let reason = |res: &Response| res.extensions().get::<Answered>().map(|r| r.reason.to_string());
    for (authorization, why) in [
        (None, NO_CREDENTIALS),
        (Some("Basic !!!".to_string()), NO_CREDENTIALS),
        (Some(format!("Basic {}", STANDARD_PAD_INDIFFERENT.encode("no-colon"))), MALFORMED),
        (Some(basic("mallory", "s3cret")), UNKNOWN_USER),
        (Some(basic("alice", "wrong-pw")), WRONG_PASSWORD),
    ] {
        let res = call(&svc, authorization.as_deref()).await;
        assert_challenged(&res);
        assert_eq!(reason(&res).as_deref(), Some(why), "{authorization:?}");
        assert!(res.headers().values().all(|v| !v.as_bytes().windows(4).any(|w| w == b"pw")));
    }
    assert_eq!(reason(&call(&svc, Some(&basic("alice", "s3cret"))).await), None, "passed on: no refusal");
}

/// Lets a test keep reading a layer's counters after putting it in a stack.
struct Shared(&'static BasicAuth);

impl Middleware<Request, Response> for Shared {
    fn handle(&self, req: Request, next: Next) -> impl std::future::Future<Output = Response> + Send {
        self.0.handle(req, next)
    }
}

/// The layer (leaked: tests only) and a service using it around the recording app.
fn shared(auth: BasicAuth) -> (&'static BasicAuth, Service) {
    let auth: &'static BasicAuth = Box::leak(Box::new(auth));
    (auth, Stack::new().with(Shared(auth)).serve(app))
}

fn verifications(auth: &BasicAuth) -> u64 {
    auth.verifications.load(Ordering::Relaxed)
}

#[tokio::test]
async fn malformed_headers_are_challenged() {
    let svc = service(auth_with(sha_hash("pw")));
    let cases = [
        None,
        Some(String::new()),
        Some("Basic".to_string()),
        Some("Basic ".to_string()),
        Some("Bearer abc".to_string()),
        Some("Digest username=\"alice\"".to_string()),
        Some("Basic !!!not-base64!!!".to_string()),
        Some(format!("Basic {}", STANDARD.encode("alice-no-colon"))),
        Some(format!("Basic {}", STANDARD.encode(":pw"))),
        Some(format!("Basic {}", STANDARD.encode(b"alice:\xff\xfe"))),
        Some(format!("Basic {} extra", STANDARD.encode("alice:pw"))),
        Some(format!("Basic{}", STANDARD.encode("alice:pw"))),
    ];
    for case in &cases {
        let res = call(&svc, case.as_deref()).await;
        assert_challenged(&res);
    }
    // Two Authorization headers: ambiguous, refused.
    let mut req = request(Some(&basic("alice", "pw")));
    req.headers_mut().append(header::AUTHORIZATION, HeaderValue::from_str(&basic("alice", "pw")).unwrap());
    assert_challenged(&svc.call(req).await);
    // A non-ASCII header value.
    let mut req = request(None);
    req.headers_mut().insert(header::AUTHORIZATION, HeaderValue::from_bytes(b"Basic \xc3\xa9").unwrap());
    assert_challenged(&svc.call(req).await);
}

#[tokio::test]
async fn scheme_is_case_insensitive_and_padding_optional() {
    let svc = service(auth_with(sha_hash("pw")));
    let token = STANDARD.encode("alice:pw");
    for header in [
        format!("basic {token}"),
        format!("BASIC {token}"),
        format!("bAsIc   {token}  "),
        format!("Basic {}", token.trim_end_matches('=')),
    ] {
        assert_eq!(call(&svc, Some(&header)).await.status(), 200, "{header}");
    }
}

#[tokio::test]
async fn passwords_may_contain_colons_and_unicode() {
    let svc = service(auth_with(sha_hash("pä:ss")));
    assert_eq!(call(&svc, Some(&basic("alice", "pä:ss"))).await.status(), 200);
}

#[tokio::test]
async fn credentials_of_every_length_are_decoded() {
    // Around the size decoded on the stack (192 bytes: "alice:" + the password) and far past it.
    for len in [0, 1, 185, 186, 187, 188, 189, 190, 4096] {
        let password = "p".repeat(len);
        let svc = service(auth_with(sha_hash(&password)));
        assert_eq!(call(&svc, Some(&basic("alice", &password))).await.status(), 200, "password of {len} bytes");
        let wrong = "q".repeat(len.max(1));
        assert_eq!(call(&svc, Some(&basic("alice", &wrong))).await.status(), 401, "wrong password of {len} bytes");
    }
}

#[test]
fn plaintext_is_refused_unless_allowed() {
    let e = BasicAuth::builder().user("bob", "hunter2").build().unwrap_err();
    assert_eq!(e.field, Some("users"));
    assert!(e.message.contains("`bob`") && e.message.contains("allow_plaintext"), "{e}");
    assert!(!e.message.contains("hunter2"), "never echo a password: {e}");

    let auth = BasicAuth::builder().user("bob", "hunter2").allow_plaintext(true).build().unwrap();
    assert_eq!(auth.weak_hashes(), [("bob".to_string(), HashScheme::Plaintext)]);
    let (verifier, _) = Verifier::parse("hunter2", true).unwrap();
    let verify = |pw: &[u8]| verifier.verify(pw, &mut Argon2Memory::new());
    assert!(verify(b"hunter2") && !verify(b"hunter") && !verify(b"hunter22"));
}

#[tokio::test]
async fn plaintext_allowed_authenticates() {
    let svc = service(BasicAuth::builder().user("bob", "hunter2").allow_plaintext(true).build().unwrap());
    assert_eq!(call(&svc, Some(&basic("bob", "hunter2"))).await.status(), 200);
    assert_challenged(&call(&svc, Some(&basic("bob", "hunter3"))).await);
}

#[test]
fn unknown_formats_name_the_user_and_the_formats() {
    for hash in [
        "$6$salt$abcdef",
        "{SSHA}abc",
        "$argon2d$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
        "$2x$04$abc",
        "$apr1$salt$short",
    ] {
        let e = BasicAuth::builder().user("carol", hash).allow_plaintext(true).build().unwrap_err();
        assert!(e.message.contains("`carol`"), "{hash}: {e}");
        assert!(e.message.contains("expected") || e.message.contains("invalid"), "{hash}: {e}");
    }
    let e = BasicAuth::builder().user("carol", "$6$salt$abcdef").build().unwrap_err();
    assert!(e.message.contains("$argon2id$") && e.message.contains("$apr1$") && e.message.contains("{SHA}"), "{e}");
}

#[test]
fn weak_hashes_are_listed() {
    let auth = BasicAuth::builder()
        .user("strong", bcrypt_hash("x"))
        .user("md5", "$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/")
        .user("sha", sha_hash("x"))
        .build()
        .unwrap();
    assert_eq!(auth.weak_hashes(), [("md5".to_string(), HashScheme::Apr1), ("sha".to_string(), HashScheme::Sha1)]);
}

#[tokio::test]
async fn a_cache_hit_skips_rehashing() {
    let (auth, svc) = shared(auth_with(argon2_hash(Algorithm::Argon2id, "s3cret")));
    for _ in 0..3 {
        assert_eq!(call(&svc, Some(&basic("alice", "s3cret"))).await.status(), 200);
    }
    assert_eq!(verifications(auth), 1, "verified once, then served from the cache");
    // A wrong password is a different key: verified (and refused) every time.
    for _ in 0..2 {
        assert_challenged(&call(&svc, Some(&basic("alice", "s3cre"))).await);
    }
    assert_eq!(verifications(auth), 3);
    assert_eq!(auth.cache.as_ref().unwrap().len(), 1);
}

#[tokio::test]
async fn the_cache_can_be_disabled() {
    for auth in [
        BasicAuth::builder().user("alice", sha_hash("pw")).cache_ttl(Duration::ZERO).build().unwrap(),
        BasicAuth::builder().user("alice", sha_hash("pw")).cache_capacity(0).build().unwrap(),
    ] {
        assert!(auth.cache.is_none());
        let (auth, svc) = shared(auth);
        call(&svc, Some(&basic("alice", "pw"))).await;
        call(&svc, Some(&basic("alice", "pw"))).await;
        assert_eq!(verifications(auth), 2);
    }
}

#[tokio::test]
async fn cached_credentials_expire() {
    let auth = BasicAuth::builder().user("alice", sha_hash("pw")).cache_ttl(Duration::from_millis(50)).build().unwrap();
    let (auth, svc) = shared(auth);
    call(&svc, Some(&basic("alice", "pw"))).await;
    call(&svc, Some(&basic("alice", "pw"))).await;
    assert_eq!(verifications(auth), 1);
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(call(&svc, Some(&basic("alice", "pw"))).await.status(), 200);
    assert_eq!(verifications(auth), 2, "expired: verified again");
}

#[tokio::test]
async fn the_user_reaches_inner_layers_and_the_response() {
    let svc = service(auth_with(sha_hash("pw")));
    let res = call(&svc, Some(&basic("alice", "pw"))).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-seen-user"], "alice");
    assert_eq!(res.extensions().get::<AuthenticatedUser>(), Some(&AuthenticatedUser(Arc::from("alice"))));
    assert_eq!(res.headers()["x-seen-authorization"], "yes", "kept by default");
    assert!(res.headers().get("x-seen-forwarded").is_none(), "not forwarded by default");
}

#[tokio::test]
async fn the_user_is_forwarded_and_authorization_stripped_when_asked() {
    let auth = BasicAuth::builder()
        .user("alice", sha_hash("pw"))
        .forward_user_header(HeaderName::from_static("x-forwarded-user"))
        .strip_authorization(true)
        .build()
        .unwrap();
    let svc = service(auth);
    let mut req = request(Some(&basic("alice", "pw")));
    req.headers_mut().insert("x-forwarded-user", HeaderValue::from_static("admin"));
    req.headers_mut().append("x-forwarded-user", HeaderValue::from_static("root"));
    let res = svc.call(req).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-seen-forwarded"], "alice", "the client's value is replaced");
    assert_eq!(res.headers()["x-seen-authorization"], "no");
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-basic-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[cfg(feature = "config")]
#[tokio::test]
async fn htpasswd_files_are_read_and_combined_with_inline_users() {
    let path = temp_file(
        "ok.htpasswd",
        &format!(
            "# team\r\n\r\nbob:{}\r\n   \n  # indented comment\ncarol:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/\n",
            bcrypt_hash("b0b")
        ),
    );
    let ctx = BuildContext { base_dir: path.parent().unwrap().to_path_buf(), ..Default::default() };
    let config = BasicAuthConfig {
        users: [("alice".to_string(), sha_hash("pw"))].into(),
        htpasswd: Some(PathBuf::from("ok.htpasswd")),
        ..Default::default()
    };
    let auth = BasicAuth::from_config(config, &ctx).unwrap();
    assert_eq!(auth.weak_hashes(), [("alice".to_string(), HashScheme::Sha1), ("carol".to_string(), HashScheme::Apr1)]);
    let svc = service(auth);
    for (user, pw) in [("alice", "pw"), ("bob", "b0b"), ("carol", "myPassword")] {
        let res = call(&svc, Some(&basic(user, pw))).await;
        assert_eq!(res.status(), 200, "{user}");
        assert_eq!(res.headers()["x-seen-user"], user);
    }
}

#[test]
fn htpasswd_errors() {
    let dup = temp_file("dup.htpasswd", &format!("alice:{}\n", sha_hash("x")));
    let e = BasicAuth::builder().user("alice", sha_hash("y")).htpasswd(&dup).build().unwrap_err();
    assert_eq!(e.field, Some("htpasswd"));
    assert!(e.message.contains("`alice`") && e.message.contains("twice") && e.message.contains(":1"), "{e}");

    let dup_in_file = temp_file("dup2.htpasswd", &format!("bob:{0}\n\nbob:{0}\n", sha_hash("x")));
    let e = BasicAuth::builder().htpasswd(&dup_in_file).build().unwrap_err();
    assert!(e.message.contains(":3") && e.message.contains("twice"), "{e}");

    let malformed = temp_file("bad.htpasswd", "# ok\nno-colon-here\n");
    let e = BasicAuth::builder().htpasswd(&malformed).build().unwrap_err();
    assert_eq!(e.field, Some("htpasswd"));
    assert!(e.message.contains(":2") && e.message.contains("user:hash"), "{e}");

    let plain = temp_file("plain.htpasswd", "dave:letmein\n");
    let e = BasicAuth::builder().htpasswd(&plain).build().unwrap_err();
    assert!(e.message.contains("`dave`") && !e.message.contains("letmein"), "{e}");

    let e = BasicAuth::builder().htpasswd("/nonexistent/strata/htpasswd").build().unwrap_err();
    assert_eq!(e.field, Some("htpasswd"));
    assert!(e.message.contains("/nonexistent/strata/htpasswd"), "{e}");

    let empty = temp_file("empty.htpasswd", "# nobody yet\n");
    assert_eq!(BasicAuth::builder().htpasswd(&empty).build().unwrap_err().field, Some("users"));
}

#[test]
fn user_names_are_validated() {
    for user in ["", "a:b", "tab\there"] {
        let e = BasicAuth::builder().user(user, sha_hash("x")).build().unwrap_err();
        assert_eq!(e.field, Some("users"), "{user:?}");
    }
    // Non-ASCII names work and can be forwarded (as UTF-8 bytes).
    BasicAuth::builder()
        .user("josé", sha_hash("x"))
        .forward_user_header(HeaderName::from_static("x-user"))
        .build()
        .unwrap();
}

#[test]
fn realm_is_quoted_escaped_and_validated() {
    let auth = BasicAuth::builder().realm(r#"Admin "area" \ 2"#).user("a", sha_hash("x")).build().unwrap();
    assert_eq!(auth.challenge, r#"Basic realm="Admin \"area\" \\ 2", charset="UTF-8""#);
    for bad in ["", "line\nbreak", "tab\t", "café"] {
        let e = BasicAuth::builder().realm(bad).user("a", sha_hash("x")).build().unwrap_err();
        assert_eq!(e.field, Some("realm"), "{bad:?}");
    }
}

/// A request from `client`, as the server sends it to the stack.
fn request_from(client: &str, authorization: &str) -> Request {
    test_support::from_client(request(Some(authorization)), client)
}

fn assert_refused(res: &Response, window_secs: u64) {
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=window_secs).contains(&retry), "Retry-After: {retry}");
    assert!(res.headers().get(header::WWW_AUTHENTICATE).is_none(), "not a challenge to retry now");
    assert!(res.extensions().get::<GeneratedError>().is_some(), "an `errors` layer may reformat it");
    assert!(res.headers().get("x-seen-user").is_none(), "the app must not be reached");
}

#[tokio::test]
async fn a_client_that_used_up_its_failures_is_refused_without_verifying() {
    let auth = BasicAuth::builder()
        .user("alice", argon2_hash(Algorithm::Argon2id, "s3cret"))
        .max_failures(3)
        .failure_window(Duration::from_secs(60))
        .build()
        .unwrap();
    let (auth, svc) = shared(auth);
    for i in 0..3 {
        assert_challenged(&svc.call(request_from("192.0.2.1", &basic("alice", &format!("guess{i}")))).await);
    }
    assert_eq!(verifications(auth), 3);
    // The fourth attempt, and even the right password, cost no verification now.
    assert_refused(&svc.call(request_from("192.0.2.1", &basic("alice", "guess3"))).await, 60);
    assert_refused(&svc.call(request_from("192.0.2.1", &basic("mallory", "x"))).await, 60);
    assert_refused(&svc.call(request_from("192.0.2.1", &basic("alice", "s3cret"))).await, 60);
    assert_eq!(verifications(auth), 3);
    // No credentials at all is still the plain challenge a browser needs to show its prompt.
    let mut bare = request_from("192.0.2.1", "x");
    bare.headers_mut().remove(header::AUTHORIZATION);
    assert_challenged(&svc.call(bare).await);

    // Another client is not affected, and its success does not reset the first one.
    let res = svc.call(request_from("192.0.2.2", &basic("alice", "s3cret"))).await;
    assert_eq!(res.status(), 200);
    assert_challenged(&svc.call(request_from("192.0.2.2", &basic("alice", "nope"))).await);
    assert_refused(&svc.call(request_from("192.0.2.1", &basic("alice", "s3cret"))).await, 60);
    // The second client's cached credential is answered from the cache, as before.
    let before = verifications(auth);
    assert_eq!(svc.call(request_from("192.0.2.2", &basic("alice", "s3cret"))).await.status(), 200);
    assert_eq!(verifications(auth), before);
}

#[tokio::test]
async fn successes_do_not_count_and_the_window_ends() {
    let auth = BasicAuth::builder()
        .user("alice", sha_hash("pw"))
        .max_failures(2)
        .failure_window(Duration::from_millis(200))
        .cache_ttl(Duration::ZERO)
        .build()
        .unwrap();
    let svc = service(auth);
    // Successes (verified each time: no cache) never count as failures.
    for _ in 0..5 {
        assert_eq!(svc.call(request_from("2001:db8::1", &basic("alice", "pw"))).await.status(), 200);
    }
    assert_challenged(&svc.call(request_from("2001:db8::1", &basic("alice", "a"))).await);
    assert_eq!(svc.call(request_from("2001:db8::1", &basic("alice", "pw"))).await.status(), 200);
    assert_challenged(&svc.call(request_from("2001:db8::1", &basic("alice", "b"))).await);
    // Same /64: the same client.
    assert_refused(&svc.call(request_from("2001:db8::2", &basic("alice", "pw"))).await, 1);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(svc.call(request_from("2001:db8::1", &basic("alice", "pw"))).await.status(), 200);
}

/// alice with an argon2id hash of `s3cret` (verified on `pool`'s threads), `max_failures` set.
fn argon2_alice(max_failures: u32, pool: VerifyPool) -> (&'static BasicAuth, Service) {
    shared(
        BasicAuth::builder()
            .user("alice", argon2_hash(Algorithm::Argon2id, "s3cret"))
            .max_failures(max_failures)
            .verify_pool(pool)
            .build()
            .unwrap(),
    )
}

/// A one-thread pool whose thread is held until the returned gate is dropped: verifications queue
/// behind it, so a test decides when they run. The tests' argon2 hashes take microseconds: without
/// the gate a verification may end before the attempts meant to wait for it have asked.
fn gated_pool() -> (VerifyPool, std::sync::mpsc::Sender<()>) {
    let pool = VerifyPool::new(std::num::NonZeroUsize::MIN);
    let (gate, held) = std::sync::mpsc::channel::<()>();
    pool.submit(Box::new(move |_| {
        // Returns when the gate is dropped.
        let _ = held.recv();
    }))
    .unwrap();
    (pool, gate)
}

/// `count` attempts at once as alice with `password` from `client` (argon2id, `max_failures` set),
/// the verification held until every attempt has asked; with their statuses.
async fn burst(
    max_failures: u32,
    client: &str,
    password: &str,
    count: usize,
) -> (&'static BasicAuth, Service, Vec<u16>) {
    let (pool, gate) = gated_pool();
    let (auth, svc) = argon2_alice(max_failures, pool);
    let statuses = {
        let mut attempts = std::pin::pin!(at_once(&svc, client, vec![password.to_string(); count]));
        assert!(futures_util::poll!(attempts.as_mut()).is_pending(), "all have asked; the check waits behind the gate");
        drop(gate);
        attempts.await
    };
    (auth, svc, statuses)
}

/// The statuses of `passwords` for alice sent at once from `client`.
async fn at_once(svc: &Service, client: &str, passwords: impl IntoIterator<Item = String>) -> Vec<u16> {
    let calls = passwords.into_iter().map(|password| svc.call(request_from(client, &basic("alice", &password))));
    futures_util::future::join_all(calls).await.iter().map(|r| r.status().as_u16()).collect()
}

#[tokio::test]
async fn concurrent_guesses_are_held_to_the_limit() {
    let (auth, svc) = argon2_alice(5, VerifyPool::default());
    let statuses = at_once(&svc, "198.51.100.7", (0..20).map(|i| format!("g{i}"))).await;
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 15, "{statuses:?}");
    assert_eq!(verifications(auth), 5);
}

#[tokio::test]
async fn a_burst_of_logins_with_the_right_password_is_verified_once_and_never_refused() {
    // More at once than `max_failures`, all uncached: each used to be charged while verified.
    let (auth, svc, statuses) = burst(5, "198.51.100.7", "s3cret", 20).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(verifications(auth), 1);
    // Nothing was left charged: five wrong guesses are still allowed, the sixth is refused.
    for i in 0..5 {
        assert_challenged(&svc.call(request_from("198.51.100.7", &basic("alice", &format!("g{i}")))).await);
    }
    assert_refused(&svc.call(request_from("198.51.100.7", &basic("alice", "g5"))).await, 60);
}

#[tokio::test]
async fn a_burst_of_the_same_wrong_password_is_one_failure() {
    let (auth, svc, statuses) = burst(3, "198.51.100.8", "wrong", 10).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(verifications(auth), 1);
    // One failure counted: two more guesses, then refused.
    for guess in ["a", "b"] {
        assert_challenged(&svc.call(request_from("198.51.100.8", &basic("alice", guess))).await);
    }
    assert_refused(&svc.call(request_from("198.51.100.8", &basic("alice", "c"))).await, 60);
    // Another client's burst of the same credentials is not refused for the first one's count.
    assert_eq!(svc.call(request_from("198.51.100.9", &basic("alice", "s3cret"))).await.status(), 200);
}

#[tokio::test]
async fn an_attempt_waiting_for_a_verification_that_is_abandoned_verifies_itself() {
    let (pool, gate) = gated_pool();
    let (auth, svc) = argon2_alice(5, pool);
    let mut first = Box::pin(svc.call(request_from("198.51.100.10", &basic("alice", "s3cret"))));
    let mut second = Box::pin(svc.call(request_from("198.51.100.10", &basic("alice", "s3cret"))));
    // The first starts verifying, the second waits for it; then the first's client goes away
    // before its queued check runs.
    assert!(futures_util::poll!(first.as_mut()).is_pending());
    assert!(futures_util::poll!(second.as_mut()).is_pending());
    assert_eq!(verifications(auth), 1);
    drop(first);
    drop(gate);
    let second =
        tokio::time::timeout(Duration::from_secs(30), second).await.expect("the waiting attempt was left waiting");
    assert_eq!(second.status(), 200);
    assert_eq!(verifications(auth), 2);
}

#[tokio::test]
async fn without_a_client_address_or_with_max_failures_0_nothing_is_limited() {
    let limited = BasicAuth::builder().user("alice", sha_hash("pw")).max_failures(1).build().unwrap();
    let unlimited = BasicAuth::builder().user("alice", sha_hash("pw")).max_failures(0).build().unwrap();
    assert!(unlimited.failures.is_none());
    let (limited, unlimited) = (service(limited), service(unlimited));
    for _ in 0..5 {
        assert_challenged(&call(&limited, Some(&basic("alice", "wrong"))).await);
        assert_challenged(&unlimited.call(request_from("192.0.2.1", &basic("alice", "wrong"))).await);
    }
}

#[test]
fn failure_settings_are_validated() {
    let base = || BasicAuth::builder().user("a", sha_hash("x"));
    for window in [Duration::ZERO, Duration::from_secs(86_401)] {
        let e = base().failure_window(window).build().unwrap_err();
        assert_eq!(e.field, Some("failure_window"), "{window:?}");
        assert!(e.message.contains("1m"), "says what is expected: {e}");
    }
    base().failure_window(Duration::from_secs(86_400)).build().unwrap();
    let auth = base().max_failures(4).failure_window(Duration::from_secs(90)).build().unwrap();
    let limit = auth.failures.as_ref().unwrap();
    assert_eq!((limit.max_failures(), limit.window()), (4, Duration::from_secs(90)));
    let defaults = auth_with(sha_hash("x"));
    let limit = defaults.failures.as_ref().unwrap();
    assert_eq!((limit.max_failures(), limit.window()), (10, Duration::from_secs(60)));
}

/// Builds from a TOML-shaped table, as the gateway does.
#[cfg(feature = "config")]
fn from_json(json: serde_json::Value) -> Result<BasicAuth, ConfigError> {
    let config: BasicAuthConfig = serde_json::from_value(json).unwrap();
    BasicAuth::from_config(config, &BuildContext::default())
}

#[cfg(feature = "config")]
#[test]
fn failure_settings_are_read_from_config() {
    for bad in ["", "10", "1 fortnight", "0s", "2d", "25h"] {
        let e = from_json(serde_json::json!({ "users": { "a": sha_hash("x") }, "failure_window": bad })).unwrap_err();
        assert_eq!(e.field, Some("failure_window"), "{bad:?}: {e}");
        assert!(e.message.contains("1m"), "says what is expected: {e}");
    }
    let auth =
        from_json(serde_json::json!({ "users": { "a": sha_hash("x") }, "max_failures": 4, "failure_window": "90s" }))
            .unwrap();
    let limit = auth.failures.as_ref().unwrap();
    assert_eq!((limit.max_failures(), limit.window()), (4, Duration::from_secs(90)));
}

#[cfg(feature = "config")]
#[test]
fn cache_ttl_is_a_duration_in_config_with_the_builder_bounds() {
    let users = || serde_json::json!({ "a": sha_hash("x") });
    let auth = from_json(serde_json::json!({ "users": users(), "cache_ttl": "1m30s" })).unwrap();
    assert_eq!(auth.cache.as_ref().unwrap().ttl, Duration::from_secs(90));
    let auth = from_json(serde_json::json!({ "users": users() })).unwrap();
    assert_eq!(auth.cache.as_ref().unwrap().ttl, Duration::from_secs(300), "the default is 5 minutes");
    assert!(from_json(serde_json::json!({ "users": users(), "cache_ttl": "0s" })).unwrap().cache.is_none());
    // Past a day: the same field as the builder's refusal.
    for bad in ["25h", "86401s", "300", "soon"] {
        let e = from_json(serde_json::json!({ "users": users(), "cache_ttl": bad })).unwrap_err();
        assert_eq!(e.field, Some("cache_ttl"), "{bad:?}: {e}");
    }
    from_json(serde_json::json!({ "users": users(), "cache_ttl": "24h" })).unwrap();
    // The old key is gone, not silently ignored.
    let old = serde_json::from_value::<BasicAuthConfig>(serde_json::json!({ "users": users(), "cache_ttl_secs": 300 }));
    assert!(old.unwrap_err().to_string().contains("unknown field"));
}

#[cfg(feature = "config")]
#[test]
fn forward_user_header_errors_name_the_same_field_in_config() {
    let users = || serde_json::json!({ "a": sha_hash("x") });
    for bad in ["not a header", "Authorization", "host", ""] {
        let e = from_json(serde_json::json!({ "users": users(), "forward_user_header": bad })).unwrap_err();
        assert_eq!(e.field, Some("forward_user_header"), "{bad:?}: {e}");
    }
    let auth = from_json(serde_json::json!({ "users": users(), "forward_user_header": "X-Forwarded-User" })).unwrap();
    assert_eq!(auth.forward_user_header, Some(HeaderName::from_static("x-forwarded-user")));
}

#[test]
fn other_config_errors() {
    let base = || BasicAuth::builder().user("a", sha_hash("x"));
    for name in
        [header::AUTHORIZATION, header::HOST, header::CONTENT_LENGTH, header::TRANSFER_ENCODING, header::CONNECTION]
    {
        assert_eq!(base().forward_user_header(name).build().unwrap_err().field, Some("forward_user_header"));
    }
    assert_eq!(
        base().cache_ttl(MAX_CACHE_TTL + Duration::from_millis(1)).build().unwrap_err().field,
        Some("cache_ttl")
    );
    base().cache_ttl(MAX_CACHE_TTL).build().unwrap();
    assert_eq!(BasicAuth::builder().build().unwrap_err().field, Some("users"));
}

#[test]
fn the_builder_debug_hides_hashes() {
    let builder = BasicAuth::builder().user("alice", "plain-secret").allow_plaintext(true);
    assert!(!format!("{builder:?}").contains("plain-secret"));
    assert!(format!("{builder:?}").contains("alice"));
}

#[cfg(feature = "config")]
#[test]
fn config_reads_from_toml_shaped_data_and_debug_hides_hashes() {
    let config: BasicAuthConfig = serde_json::from_value(serde_json::json!({
        "users": { "alice": "plain-secret" },
        "allow_plaintext": true,
        "forward_user_header": "x-forwarded-user",
    }))
    .unwrap();
    assert_eq!((config.realm.as_str(), config.cache_ttl.as_str(), config.cache_capacity), ("strata", "5m", 10_000));
    assert!(!config.strip_authorization && config.htpasswd.is_none());
    assert!(!format!("{config:?}").contains("plain-secret"));
    let auth = BasicAuth::from_config(config, &BuildContext::default()).unwrap();
    assert!(!format!("{auth:?}").contains("plain-secret"));
    let unknown = serde_json::from_value::<BasicAuthConfig>(serde_json::json!({ "user": {} }));
    assert!(unknown.unwrap_err().to_string().contains("unknown field"));
}

#[test]
fn kind_and_facts() {
    let auth = auth_with(sha_hash("x"));
    assert_eq!(Middleware::kind(&auth), "basic_auth");
    // Failures are counted per client address by default: the server must resolve it, and
    // `strata check` warns when an untrusted proxy would merge every client into one.
    assert_eq!(
        auth.facts(),
        Facts::of(&[
            Fact::ShortCircuits,
            Fact::CanFail,
            Fact::ReadsClientAddress,
            Fact::KeysOnClientAddress,
            Fact::Authenticates,
            Fact::SetsUser
        ])
    );
    let unlimited = BasicAuth::builder().user("alice", sha_hash("x")).max_failures(0).build().unwrap();
    assert_eq!(
        unlimited.facts(),
        Facts::of(&[Fact::ShortCircuits, Fact::CanFail, Fact::Authenticates, Fact::SetsUser])
    );
}

/// The id of the thread `auth`'s pool runs a job on.
async fn verifying_thread(auth: &BasicAuth) -> std::thread::ThreadId {
    let (tx, rx) = futures_channel::oneshot::channel();
    auth.pool
        .submit(Box::new(move |_| {
            let _ = tx.send(std::thread::current().id());
        }))
        .unwrap();
    rx.await.unwrap()
}

#[tokio::test]
async fn layers_share_verification_threads_only_when_given_the_same_pool() {
    let one_thread = || VerifyPool::new(std::num::NonZeroUsize::MIN);
    let layer = |pool: Option<VerifyPool>| {
        let builder = BasicAuth::builder().user("alice", argon2_hash(Algorithm::Argon2id, "pw"));
        match pool {
            Some(pool) => builder.verify_pool(pool),
            None => builder,
        }
        .build()
        .unwrap()
    };
    // Two stacks in one process, each with a layer of its own: separate threads.
    let (a, b) = (layer(Some(one_thread())), layer(Some(one_thread())));
    assert!(!a.pool.ptr_eq(&b.pool));
    assert_ne!(verifying_thread(&a).await, verifying_thread(&b).await);
    let (a, b) = (layer(None), layer(None));
    assert!(!a.pool.ptr_eq(&b.pool), "a layer built without a pool owns one");
    // Given the same pool, they share its one thread.
    let shared = one_thread();
    let (a, b) = (layer(Some(shared.clone())), layer(Some(shared)));
    assert!(a.pool.ptr_eq(&b.pool));
    assert_eq!(verifying_thread(&a).await, verifying_thread(&b).await);
    // And a slow hash is verified there, end to end.
    let svc = service(a);
    assert_eq!(call(&svc, Some(&basic("alice", "pw"))).await.status(), 200);
}

#[cfg(feature = "config")]
#[test]
fn config_layers_take_the_pool_of_their_build_context() {
    let config = || BasicAuthConfig { users: [("a".to_string(), sha_hash("x"))].into(), ..Default::default() };
    let shared = SharedResources::default().with_verify_pool(VerifyPool::default());
    let ctx = BuildContext { shared, ..Default::default() };
    let (a, b) = (BasicAuth::from_config(config(), &ctx).unwrap(), BasicAuth::from_config(config(), &ctx).unwrap());
    assert!(a.pool.ptr_eq(&b.pool) && a.pool.ptr_eq(ctx.shared.verify_pool.as_ref().unwrap()));
    let own = BasicAuth::from_config(config(), &BuildContext::default()).unwrap();
    assert!(!own.pool.ptr_eq(&a.pool));
}
