//! Rules, the query, the original URI, re-normalisation of rewritten paths, and config errors.

use super::*;
use crate::http::{GeneratedError, Service, Stack};
use crate::middleware::test_support::{body_text, request};

/// The layer in front of an app that answers with the URI it received, and the original one.
fn service(rewrite: Rewrite) -> Service {
    Stack::new().with(rewrite).serve(|req: Request| async move {
        let original = req.extensions().get::<OriginalUri>().map(|o| o.0.to_string()).unwrap_or_default();
        response::text(StatusCode::OK, format!("{} from {original}", req.uri()))
    })
}

fn build(b: impl FnOnce(RewriteBuilder) -> RewriteBuilder) -> Rewrite {
    b(Rewrite::builder()).build().expect("a valid rewrite")
}

async fn seen(svc: &Service, uri: &str) -> (u16, String) {
    let res = svc.call(request("GET", uri, &[])).await;
    (res.status().as_u16(), body_text(res).await)
}

#[tokio::test]
async fn the_app_receives_the_rewritten_path_with_the_query_kept() {
    let svc = service(build(|b| {
        b.rule(PathRule::regex(r"^/users/(?<id>\d+)$", "/api/users/${id}"))
            .rule(PathRule::regex(r"^/search/(.*)$", "/find?q=$1"))
            .rule(PathRule::prefix("/v1", "/api/v1"))
    }));
    assert_eq!(
        seen(&svc, "/users/42?fields=name").await,
        (200, "/api/users/42?fields=name from /users/42?fields=name".into())
    );
    assert_eq!(seen(&svc, "/search/rust?page=2").await, (200, "/find?q=rust from /search/rust?page=2".into()));
    assert_eq!(seen(&svc, "/v1/tasks").await, (200, "/api/v1/tasks from /v1/tasks".into()));
    assert_eq!(seen(&svc, "/v10").await, (200, "/v10 from ".into()), "untouched, no original recorded");
}

#[tokio::test]
async fn an_absolute_form_uri_keeps_its_scheme_and_authority() {
    let svc = service(build(|b| b.rule(PathRule::prefix("/a", "/b"))));
    let (_, body) = seen(&svc, "http://example.com/a/x?y=1").await;
    assert_eq!(body, "http://example.com/b/x?y=1 from http://example.com/a/x?y=1");
}

#[tokio::test]
async fn rewritten_paths_are_normalised_and_never_climb_above_the_root() {
    let svc = service(build(|b| {
        b.rule(PathRule::regex(r"^/up/([^/]*)$", "/base/.$1/secret"))
            .rule(PathRule::regex(r"^/dots/(.*)$", "/a/b/../c/./$1"))
            .rule(PathRule::regex(r"^/slashes/(.*)$", "/x/$1//y"))
            .rule(PathRule::regex(r"^/root/(.*)$", "/$1"))
    }));
    assert_eq!(seen(&svc, "/dots/d").await.1, "/a/c/d from /dots/d");
    assert_eq!(seen(&svc, "/slashes/z").await.1, "/x/z/y from /slashes/z");
    // `/base/` + `.` + `.` = `/base/../secret`: resolved inside the path.
    assert_eq!(seen(&svc, "/up/.").await.1, "/secret from /up/.");
    // `/` + `..` climbs above the root: refused, never sent.
    let res = svc.call(request("GET", "/root/..", &[])).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        res.extensions().get::<GeneratedError>().and_then(|g| g.detail()),
        Some("The path climbs above the root with '..'.")
    );
    let reason = res.extensions().get::<Refusal>().map(|r| r.reason.to_string()).unwrap_or_default();
    assert!(reason.starts_with("rewrite refused: the target of rule 4 (`^/root/(.*)$`)"), "{reason}");
    // A leading `//` would name a host to some upstreams.
    assert_eq!(seen(&svc, "/root//evil.example/x").await.1, "/evil.example/x from /root//evil.example/x");
    // Encoded slashes are data, as the server's policy let them through; `%2e%2e` is `..`.
    assert_eq!(seen(&svc, "/root/a%2Fb").await.1, "/a%2Fb from /root/a%2Fb");
    assert_eq!(seen(&svc, "/root/a/%2e%2e/b").await.1, "/b from /root/a/%2e%2e/b");
}

#[tokio::test]
async fn a_stricter_policy_refuses_what_it_refuses() {
    let svc = service(build(|b| b.rule(PathRule::regex("^/r/(.*)$", "/$1")).path_policy(PathPolicy::new())));
    assert_eq!(seen(&svc, "/r/a%2Fb").await.0, 400);
    let e = Rewrite::builder()
        .rule(PathRule::prefix("/a", "/b"))
        .path_policy(PathPolicy::new().escaped_slashes(EscapedSlashes::Redirect))
        .build()
        .unwrap_err();
    assert!(e.message.contains("cannot redirect"), "{e}");
}

#[tokio::test]
async fn the_outermost_original_is_kept() {
    let svc = Stack::new()
        .with(build(|b| b.rule(PathRule::prefix("/a", "/b"))))
        .with(build(|b| b.rule(PathRule::prefix("/b", "/c"))))
        .serve(|req: Request| async move {
            let original = req.extensions().get::<OriginalUri>().map(|o| o.0.to_string()).unwrap_or_default();
            response::text(StatusCode::OK, format!("{} from {original}", req.uri()))
        });
    assert_eq!(seen(&svc, "/a/x").await.1, "/c/x from /a/x");
}

#[test]
fn targets_are_paths_and_rules_are_required() {
    let e = Rewrite::builder().build().unwrap_err();
    assert_eq!(e, ConfigError::field("rules", "expected at least one rule"));
    let e = Rewrite::builder().rule(PathRule::prefix("/a", "https://elsewhere.example")).build().unwrap_err();
    assert_eq!(e.field, Some("rules"));
    assert!(e.message.contains("use a `redirect`"), "{e}");
    let e = Rewrite::builder().rule(PathRule::regex("^/a/(.*)$", "/b/$2")).build().unwrap_err();
    assert!(e.message.starts_with("rule 1 (`^/a/(.*)$`): `$2`: the pattern has 1 group(s)"), "{e}");
    let rewrite = build(|b| b.rule(PathRule::prefix("/a", "/b")));
    assert_eq!((rewrite.kind(), rewrite.facts()), ("rewrite", Facts::of(&[Fact::CanFail])));
}

#[cfg(feature = "config")]
#[test]
fn the_config_table_maps_onto_the_builder() {
    use crate::middleware::BuildContext;
    let parse = |text: &str| -> Result<Rewrite, ConfigError> {
        let config: RewriteConfig = toml::from_str(text).map_err(|e| ConfigError::new(e.to_string()))?;
        Rewrite::from_config(config, &BuildContext::default())
    };
    let rewrite =
        parse("rules = [{ regex = '^/old/(.*)$', to = '/new/$1' }, { prefix = '/v1', to = '/api/v1' }]").unwrap();
    assert_eq!(rewrite.rules.len(), 2);
    let e = parse("rules = [{ regex = '^/old/((', to = '/new' }]").unwrap_err();
    assert_eq!(e.field, Some("rules"));
    assert!(e.message.contains("not a valid regex"), "{e}");
    assert!(
        parse("rules = [{ prefix = '/a', to = '/b', status = 301 }]").unwrap_err().message.contains("unknown field")
    );
    assert_eq!(parse("").unwrap_err().field, Some("rules"));
}
