//! Template parsing, the order of rules, every placeholder, values that render to nothing or to
//! invalid text, responses inner layers make, facts, and the config table.

use std::sync::{Arc, Mutex};

use http::{HeaderName, HeaderValue, StatusCode};

use super::template::{Captured, Rendered, Template};
use super::*;
use crate::http::{AssignedRequestId, MatchedRoute, Service, Stack, response};
use crate::middleware::test_support::{from_client, request};

fn h(name: &'static str) -> HeaderName {
    HeaderName::from_static(name)
}

/// The request headers the app saw, as `name: value` lines in order.
type Seen = Arc<Mutex<Vec<String>>>;

/// An app that records its request headers and answers 200 with `server: app` and `x-app: 1`,
/// or, on `/login`, 401 after marking the response with the user `alice` as an auth layer would.
fn service(layers: Stack) -> (Service, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let svc = layers.serve(move |req: Request| {
        let lines = req.headers().iter().map(|(n, v)| format!("{n}: {}", v.to_str().unwrap())).collect();
        *record.lock().unwrap() = lines;
        let login = req.uri().path() == "/login";
        async move {
            let mut res = response::text(StatusCode::OK, "app");
            res.headers_mut().insert("server", HeaderValue::from_static("app"));
            res.headers_mut().insert("x-app", HeaderValue::from_static("1"));
            if login {
                res.extensions_mut().insert(AuthenticatedUser("alice".into()));
            }
            res
        }
    });
    (svc, seen)
}

fn values(res: &Response, name: &str) -> Vec<String> {
    res.headers().get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
}

#[test]
fn templates_parse_into_literals_and_placeholders() {
    let t = Template::parse("{user}@{host} {{literal}").unwrap();
    assert!(t.uses().has(Placeholder::User) && t.uses().has(Placeholder::Host));
    assert!(!t.uses().has(Placeholder::Route));
    let req = request("GET", "/", &[("host", "example.com:8080")]);
    let captured = Captured::from_request(&req, t.uses());
    assert_eq!(
        t.render(&captured, Some("bob")),
        Rendered::Value(HeaderValue::from_static("bob@example.com:8080 {literal}"))
    );
    assert_eq!(
        Template::parse("a}b").unwrap().render(&Captured::default(), None),
        Rendered::Value(HeaderValue::from_static("a}b"))
    );
    assert!(
        Template::parse("{usr}").unwrap_err().contains("unknown placeholder `{usr}`, expected one of {request_id}")
    );
    assert!(Template::parse("x {user").unwrap_err().contains("without its `}`"));
    assert!(Template::parse("line\nbreak").unwrap_err().contains("not a valid header value"));
    assert!(Template::parse("").unwrap_err().contains("use `remove`"));
    assert_eq!(Template::parse("{user}").unwrap().render(&Captured::default(), None), Rendered::Empty);
}

#[tokio::test]
async fn request_rules_remove_then_set_then_append() {
    let layer = Headers::builder()
        .request_set(h("x-via"), "strata")
        .request_append(h("x-tag"), "b")
        .request_remove(h("x-debug"))
        .request_set(h("x-debug"), "set after remove")
        .build()
        .unwrap();
    assert_eq!(layer.facts(), Facts::NONE, "request rules with fixed values: nothing to declare");
    let (svc, seen) = service(Stack::new().with(layer));
    let req = request("GET", "/", &[("x-via", "client"), ("x-via", "client2"), ("x-tag", "a"), ("x-debug", "1")]);
    let res = svc.call(req).await;
    assert_eq!(values(&res, "server"), ["app"], "no response rules: untouched");
    let seen = seen.lock().unwrap().clone();
    assert!(seen.contains(&"x-via: strata".to_string()), "{seen:?}");
    assert!(!seen.iter().any(|l| l.contains("client")), "set replaces every client value: {seen:?}");
    assert!(seen.contains(&"x-tag: a".to_string()) && seen.contains(&"x-tag: b".to_string()), "{seen:?}");
    assert!(seen.contains(&"x-debug: set after remove".to_string()), "{seen:?}");
}

#[tokio::test]
async fn response_rules_decorate_app_responses_and_the_ones_inner_layers_make() {
    let layer = Headers::builder()
        .response_remove(h("server"))
        .response_set(h("x-app"), "2")
        .response_append(h("x-app"), "3")
        .response_set(h("x-frame"), "{method} {path}")
        .build()
        .unwrap();
    assert_eq!(layer.facts(), Facts::of(&[Fact::DecoratesResponses]));
    let (svc, _) = service(Stack::new().with(layer.clone()));
    let res = svc.call(request("DELETE", "/a/b?q=1", &[])).await;
    assert!(values(&res, "server").is_empty());
    assert_eq!(values(&res, "x-app"), ["2", "3"]);
    assert_eq!(values(&res, "x-frame"), ["DELETE /a/b"]);
    let (svc, _) = service(
        Stack::new()
            .with(layer)
            .with(crate::http::from_fn(|_req, _next| async { response::status(StatusCode::TOO_MANY_REQUESTS) })),
    );
    let res = svc.call(request("GET", "/", &[])).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(values(&res, "x-app"), ["2", "3"]);
}

#[tokio::test]
async fn placeholders_take_their_values_from_the_request_and_the_response() {
    let layer = Headers::builder()
        .request_set(h("x-who"), "{user}|{client_ip}|{request_id}|{route}|{host}")
        .response_set(h("x-who"), "{user}|{route}")
        .build()
        .unwrap();
    assert_eq!(
        layer.facts(),
        Facts::of(&[
            Fact::DecoratesResponses,
            Fact::ReadsRequestId,
            Fact::ReadsClientAddress,
            Fact::ReadsUser,
            Fact::ReadsRoute
        ])
    );
    let (svc, seen) = service(Stack::new().with(layer));
    let mut req = from_client(request("GET", "http://h2.example/x", &[]), "203.0.113.7");
    req.extensions_mut().insert(AuthenticatedUser("bob".into()));
    req.extensions_mut().insert(AssignedRequestId(HeaderValue::from_static("id-1")));
    req.extensions_mut().insert(MatchedRoute("/api".into()));
    let res = svc.call(req).await;
    assert!(seen.lock().unwrap().contains(&"x-who: bob|203.0.113.7|id-1|/api|h2.example".to_string()));
    assert_eq!(values(&res, "x-who"), ["bob|/api"]);
    // The response's user (set by an authentication layer inside) wins over the request's none.
    let res = svc.call(request("GET", "/login", &[])).await;
    assert_eq!(values(&res, "x-who"), ["alice|"]);
}

#[tokio::test]
async fn a_value_that_renders_to_nothing_removes_what_the_client_sent() {
    let layer = Headers::builder()
        .request_set(h("x-forwarded-user"), "{user}")
        .request_append(h("x-route"), "{route}")
        .build()
        .unwrap();
    let (svc, seen) = service(Stack::new().with(layer));
    svc.call(request("GET", "/", &[("x-forwarded-user", "admin"), ("x-route", "kept")])).await;
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.iter().any(|l| l.starts_with("x-forwarded-user")), "a spoofed user never passes: {seen:?}");
    assert_eq!(seen.iter().filter(|l| l.starts_with("x-route")).collect::<Vec<_>>(), ["x-route: kept"]);
}

#[tokio::test]
async fn values_that_are_not_header_values_are_skipped_and_counted() {
    let layer = Headers::builder()
        .request_set(h("x-user"), "{user}")
        .request_set(h("x-other"), "fine")
        .response_append(h("x-user"), "u={user}")
        .build()
        .unwrap();
    let (svc, seen) = service(Stack::new().with(layer.clone()));
    for _ in 0..2 {
        let mut req = request("GET", "/", &[]);
        req.extensions_mut().insert(AuthenticatedUser("evil\r\nx-injected: 1".into()));
        let res = svc.call(req).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(values(&res, "x-user").is_empty());
        assert!(values(&res, "x-injected").is_empty());
    }
    assert!(seen.lock().unwrap().contains(&"x-other: fine".to_string()), "the other rules still apply");
    assert!(!seen.lock().unwrap().iter().any(|l| l.starts_with("x-user")));
    assert_eq!(layer.skipped_values(), 4, "two rules, two requests");
}

#[test]
fn bad_rules_are_build_errors_naming_the_side() {
    assert_eq!(Headers::builder().build().unwrap_err().field, None);
    let e = Headers::builder().response_set(h("x-a"), "{nope}").build().unwrap_err();
    assert_eq!(e.field, Some("response"));
    assert!(e.message.starts_with("set.\"x-a\": `{nope}`: unknown placeholder"), "{e}");
    let e = Headers::builder().request_append(h("content-length"), "1").build().unwrap_err();
    assert_eq!(e.field, Some("request"));
    assert!(e.message.contains("framing"), "{e}");
}

#[cfg(feature = "config")]
#[test]
fn the_config_table_maps_onto_the_builder() {
    let from = |text: &str| -> Result<Headers, ConfigError> {
        let config: HeadersConfig = toml::from_str(text).expect("a valid table");
        Headers::from_config(config, &crate::middleware::BuildContext::default())
    };
    let layer = from("[request]\nset = { \"X-User\" = \"{user}\" }\nremove = [\"x-debug\"]\n[response]\nappend = { \"x-id\" = \"{request_id}\" }").unwrap();
    assert_eq!(layer.request.set[0].0, "x-user");
    assert_eq!(layer.request.remove, [h("x-debug")]);
    assert_eq!(layer.response.append.len(), 1);
    let e = from("[response]\nremove = [\"bad name\"]").unwrap_err();
    assert_eq!((e.field, e.message.as_str()), (Some("response"), "remove: `bad name` is not a header name"));
    assert_eq!(from("[request]\nset = { x = \"{host\" }").unwrap_err().field, Some("request"));
    assert!(from("").is_err(), "no rule at all");
    assert!(toml::from_str::<HeadersConfig>("[request]\nreplace = {}").is_err(), "unknown keys");
}
