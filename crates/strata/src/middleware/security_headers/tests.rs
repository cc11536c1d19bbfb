//! The preset, HSTS over HTTPS only, the app's own headers kept or overridden, each header turned
//! off, per-request nonces, build errors and the config table.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{StatusCode, header};

use super::*;
use crate::http::{Service, Stack, response};
use crate::middleware::test_support::{from_client, request};

/// What the app saw of the nonce: the extension and the request header.
type Seen = Arc<Mutex<Vec<(Option<String>, Option<String>)>>>;

/// An app that records the nonce it was given and answers 200, setting `x-frame-options:
/// SAMEORIGIN` itself on `/own`.
fn service(layer: SecurityHeaders) -> (Service, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let svc = Stack::new().with(layer).serve(move |req: Request| {
        let ext = req.extensions().get::<CspNonce>().map(|n| n.as_str().to_owned());
        let hdr = req.headers().get("x-csp-nonce").map(|v| v.to_str().unwrap().to_owned());
        record.lock().unwrap().push((ext, hdr));
        let own = req.uri().path() == "/own";
        async move {
            let mut res = response::text(StatusCode::OK, "app");
            if own {
                res.headers_mut().insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN"));
                res.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src *"));
            }
            res
        }
    });
    (svc, seen)
}

fn tls(req: Request) -> Request {
    let mut req = from_client(req, "203.0.113.7");
    let info = *req.extensions().get::<ConnectionInfo>().unwrap();
    req.extensions_mut().insert(info.over_tls(true));
    req
}

fn text<'a>(res: &'a Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn the_preset_decorates_every_response_and_sends_hsts_over_https_only() {
    let (svc, _) = service(SecurityHeaders::default());
    let res = svc.call(request("GET", "/", &[])).await;
    assert_eq!(text(&res, "x-content-type-options"), Some("nosniff"));
    assert_eq!(text(&res, "x-frame-options"), Some("DENY"));
    assert_eq!(text(&res, "referrer-policy"), Some("strict-origin-when-cross-origin"));
    assert_eq!(text(&res, "strict-transport-security"), None, "plain HTTP: RFC 6797 §7.2");
    assert_eq!(text(&res, "permissions-policy"), None);
    assert_eq!(text(&res, "content-security-policy"), None);
    let res = svc.call(from_client(request("GET", "/", &[]), "203.0.113.7")).await;
    assert_eq!(text(&res, "strict-transport-security"), None, "a plain connection");
    let res = svc.call(tls(request("GET", "/", &[]))).await;
    assert_eq!(text(&res, "strict-transport-security"), Some("max-age=31536000; includeSubDomains"));
    let res = svc.call(request("GET", "https://example.com/", &[])).await;
    assert_eq!(text(&res, "strict-transport-security"), Some("max-age=31536000; includeSubDomains"), "h2 :scheme");
}

#[tokio::test]
async fn responses_inner_layers_make_by_themselves_are_decorated_too() {
    let svc = Stack::new()
        .with(SecurityHeaders::default())
        .with(crate::http::from_fn(|_req, _next| async { response::status(StatusCode::UNAUTHORIZED) }))
        .serve(|_req: Request| async { response::status(StatusCode::OK) });
    let res = svc.call(request("GET", "/", &[])).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(text(&res, "x-content-type-options"), Some("nosniff"));
}

#[tokio::test]
async fn the_apps_own_headers_are_kept_unless_overridden() {
    let csp = "default-src 'self'";
    let (svc, _) = service(SecurityHeaders::builder().content_security_policy(csp).build().unwrap());
    let res = svc.call(request("GET", "/own", &[])).await;
    assert_eq!(text(&res, "x-frame-options"), Some("SAMEORIGIN"));
    assert_eq!(text(&res, "content-security-policy"), Some("default-src *"));
    assert_eq!(text(&res, "x-content-type-options"), Some("nosniff"), "what the app did not set is added");
    let (svc, _) =
        service(SecurityHeaders::builder().content_security_policy(csp).override_existing(true).build().unwrap());
    let res = svc.call(request("GET", "/own", &[])).await;
    assert_eq!(res.headers().get_all(header::X_FRAME_OPTIONS).iter().collect::<Vec<_>>(), ["DENY"]);
    assert_eq!(text(&res, "content-security-policy"), Some(csp));
}

#[tokio::test]
async fn each_header_can_be_turned_off_and_the_optional_ones_on() {
    let layer = SecurityHeaders::builder()
        .hsts(false)
        .content_type_options(false)
        .frame_options(FrameOptions::Off)
        .referrer_policy(None)
        .build()
        .unwrap();
    let (svc, _) = service(layer.clone());
    let res = svc.call(tls(request("GET", "/", &[]))).await;
    for name in ["strict-transport-security", "x-content-type-options", "x-frame-options", "referrer-policy"] {
        assert_eq!(text(&res, name), None, "{name}");
    }
    assert!(!layer.facts().has(Fact::ReadsClientAddress), "no HSTS: no need for the connection");
    assert!(layer.facts().has(Fact::DecoratesResponses));
    assert!(SecurityHeaders::default().facts().has(Fact::ReadsClientAddress));

    let layer = SecurityHeaders::builder()
        .frame_options(FrameOptions::SameOrigin)
        .referrer_policy(Some(ReferrerPolicy::NoReferrer))
        .permissions_policy(HeaderValue::from_static("camera=(), microphone=()"))
        .hsts_max_age(Duration::from_secs(2 * 365 * 86400))
        .hsts_preload(true)
        .content_security_policy("default-src 'none'")
        .csp_report_only(true)
        .build()
        .unwrap();
    let (svc, seen) = service(layer);
    let res = svc.call(tls(request("GET", "/", &[]))).await;
    assert_eq!(text(&res, "x-frame-options"), Some("SAMEORIGIN"));
    assert_eq!(text(&res, "referrer-policy"), Some("no-referrer"));
    assert_eq!(text(&res, "permissions-policy"), Some("camera=(), microphone=()"));
    assert_eq!(text(&res, "strict-transport-security"), Some("max-age=63072000; includeSubDomains; preload"));
    assert_eq!(text(&res, "content-security-policy-report-only"), Some("default-src 'none'"));
    assert_eq!(text(&res, "content-security-policy"), None);
    assert_eq!(seen.lock().unwrap()[0], (None, None), "a policy without {{nonce}} makes no nonce");
}

#[tokio::test]
async fn a_fresh_nonce_per_request_matches_the_policy_the_extension_and_the_header() {
    let layer = SecurityHeaders::builder()
        .content_security_policy("script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'")
        .build()
        .unwrap();
    let (svc, seen) = service(layer);
    let mut nonces = Vec::new();
    for _ in 0..3 {
        // A client's own value never reaches the app.
        let res = svc.call(request("GET", "/", &[("x-csp-nonce", "chosen-by-the-client")])).await;
        let (ext, hdr) = seen.lock().unwrap().last().cloned().unwrap();
        let nonce = ext.expect("the extension");
        assert_eq!(hdr.as_deref(), Some(nonce.as_str()), "the header carries the same nonce");
        assert_eq!(nonce.len(), 24);
        assert!(nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'), "{nonce}");
        let expected = format!("script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'");
        assert_eq!(text(&res, "content-security-policy"), Some(expected.as_str()));
        assert!(res.headers().get("x-csp-nonce").is_none(), "the nonce header goes inward only");
        nonces.push(nonce);
    }
    nonces.sort();
    nonces.dedup();
    assert_eq!(nonces.len(), 3, "a different nonce each time");

    let layer = SecurityHeaders::builder().content_security_policy("script-src 'nonce-{nonce}'").nonce_header(None);
    let (svc, seen) = service(layer.build().unwrap());
    svc.call(request("GET", "/", &[("x-csp-nonce", "from-the-client")])).await;
    let (ext, hdr) = seen.lock().unwrap()[0].clone();
    assert!(ext.is_some());
    assert_eq!(hdr.as_deref(), Some("from-the-client"), "without a nonce header, the layer leaves it alone");
}

#[test]
fn base64_is_standard_base64() {
    assert_eq!(base64(b"Man"), "TWFu");
    assert_eq!(base64(&[0xfb, 0xff, 0xbf]), "+/+/");
    assert_eq!(base64(&[0; 6]), "AAAAAAAA");
}

#[test]
fn bad_values_are_build_errors_naming_their_key() {
    let err = |b: SecurityHeadersBuilder| b.build().unwrap_err();
    let e = err(SecurityHeaders::builder().hsts_max_age(Duration::from_secs(2 * 365 * 86400 + 1)));
    assert_eq!(e.field, Some("hsts_max_age"));
    assert_eq!(err(SecurityHeaders::builder().hsts_max_age(Duration::from_millis(1500))).field, Some("hsts_max_age"));
    let e = err(SecurityHeaders::builder().hsts_preload(true).hsts_include_subdomains(false));
    assert!(e.message.contains("includeSubDomains") || e.message.contains("include_subdomains"), "{e}");
    let e = err(SecurityHeaders::builder().hsts_preload(true).hsts_max_age(Duration::from_secs(86400)));
    assert_eq!(e.field, Some("hsts_preload"));
    assert_eq!(err(SecurityHeaders::builder().content_security_policy("  ")).field, Some("content_security_policy"));
    let e = err(SecurityHeaders::builder().content_security_policy("default-src 'self'\r\nx-injected: 1"));
    assert_eq!(e.field, Some("content_security_policy"));
    // HSTS off: its values are not checked, nor sent.
    assert!(SecurityHeaders::builder().hsts(false).hsts_max_age(Duration::MAX).build().is_ok());
    assert_eq!(
        SecurityHeaders::builder().hsts_max_age(Duration::ZERO).build().unwrap().hsts_value().unwrap(),
        "max-age=0; includeSubDomains"
    );
}

#[cfg(feature = "config")]
#[test]
fn the_config_table_maps_onto_the_builder() {
    let from = |toml_text: &str| -> Result<SecurityHeaders, crate::middleware::ConfigError> {
        let config: SecurityHeadersConfig = toml::from_str(toml_text).expect("a valid table");
        SecurityHeaders::from_config(config, &crate::middleware::BuildContext::default())
    };
    let layer = from("").unwrap();
    assert_eq!(layer.hsts_value().unwrap(), "max-age=31536000; includeSubDomains");
    let layer = from("hsts_max_age = \"730d\"\nhsts_preload = true\nframe_options = \"sameorigin\"\noverride = true\nnonce_header = \"\"\ncontent_security_policy = \"script-src 'nonce-{nonce}'\"").unwrap();
    assert_eq!(layer.hsts_value().unwrap(), "max-age=63072000; includeSubDomains; preload");
    assert!(layer.overwrite);
    assert_eq!(layer.nonce_policy.as_ref().unwrap().request_header, None);
    assert!(from("hsts = false").unwrap().hsts_value().is_none());
    let field = |t: &str| from(t).unwrap_err().field;
    assert_eq!(field("hsts_max_age = \"731d\""), Some("hsts_max_age"));
    assert_eq!(field("hsts_max_age = \"a year\""), Some("hsts_max_age"));
    assert_eq!(field("frame_options = \"ALLOW-FROM x\""), Some("frame_options"));
    assert_eq!(field("referrer_policy = \"strict\""), Some("referrer_policy"));
    assert_eq!(field("permissions_policy = \"\""), Some("permissions_policy"));
    assert_eq!(field("nonce_header = \"x nonce\""), Some("nonce_header"));
    assert_eq!(from("referrer_policy = \"off\"").unwrap().fixed.len(), 2);
    assert!(toml::from_str::<SecurityHeadersConfig>("hsts_maxage = \"1d\"").is_err(), "unknown keys");
}
