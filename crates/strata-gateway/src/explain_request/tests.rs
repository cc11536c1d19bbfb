use super::*;
use crate::routes::BuildOptions;
use strata::middleware::BuildContext;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
    }
    map
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[test]
fn a_diff_shows_what_was_added_changed_and_removed() {
    let before = headers(&[("host", "a"), ("x-keep", "1"), ("x-gone", "2"), ("vary", "accept")]);
    let after = headers(&[("host", "a"), ("x-keep", "1"), ("vary", "accept"), ("vary", "origin"), ("x-new", "3")]);
    let diff = HeaderDiff::between(&before, &after, &Redactor::default());
    assert_eq!(diff.added, pairs(&[("x-new", "3")]));
    assert_eq!(diff.changed, [("vary".to_string(), "accept".to_string(), "accept, origin".to_string())]);
    assert_eq!(diff.removed, pairs(&[("x-gone", "2")]));
    assert!(HeaderDiff::between(&before, &before, &Redactor::default()).is_empty());
}

#[test]
fn secrets_are_redacted_in_every_view() {
    let redactor = Redactor::new(vec![HeaderName::from_static("x-api-key")]);
    let secret = headers(&[
        ("authorization", "Basic YWxpY2U6czNjcmV0"),
        ("proxy-authorization", "Bearer t0ken"),
        ("cookie", "session=abc"),
        ("set-cookie", "session=abc"),
        ("x-api-key", "k3y"),
        ("x-visible", "shown"),
    ]);
    let shown = redactor.show(&secret);
    assert_eq!(shown.iter().filter(|(_, v)| v == REDACTED).count(), 5);
    assert!(shown.contains(&("x-visible".to_string(), "shown".to_string())));
    let changed = headers(&[("authorization", "Basic b3RoZXI="), ("x-api-key", "other")]);
    let diff = HeaderDiff::between(&secret, &changed, &redactor);
    let text = format!("{diff:?}");
    for leaked in ["YWxpY2U6czNjcmV0", "b3RoZXI=", "t0ken", "session=abc", "k3y", "other"] {
        assert!(!text.contains(leaked), "{leaked} leaked: {text}");
    }
    assert_eq!(diff.changed.len(), 2, "a changed secret still shows as changed: {text}");
}

fn trace_of(kind: &str, n: usize) -> Trace {
    Trace {
        request: RequestSummary { method: "GET".into(), target: format!("/{n}"), headers: Vec::new(), body_bytes: 0 },
        route: RouteChoice { name: None, why: kind.into() },
        upstreams: "stub",
        layers: Vec::new(),
        endpoint: EndpointTrace {
            name: "router".into(),
            reached: true,
            status: Some(404),
            reason: None,
            response_headers: None,
            upstream_request: None,
            time_us: None,
        },
        response: FinalResponse { status: 404, headers: Vec::new(), body: String::new(), body_truncated: false },
    }
}

#[test]
fn the_debug_log_keeps_the_newest_traces_newest_first() {
    let log = DebugLog::new(3, Duration::from_secs(1));
    assert!(log.is_empty());
    for n in 0..5 {
        log.push(&trace_of("t", n));
    }
    assert_eq!(log.len(), 3);
    let targets: Vec<String> = log
        .to_json()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["request"]["target"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(targets, ["/4", "/3", "/2"]);
}

#[test]
fn sampling_lets_at_most_one_request_per_interval_through() {
    let log = DebugLog::new(3, Duration::from_secs(1));
    let start = Instant::now();
    assert!(log.sample(start), "the first request is sampled");
    assert!(!log.sample(start + Duration::from_millis(10)));
    assert!(!log.sample(start + Duration::from_millis(999)));
    assert!(log.sample(start + Duration::from_millis(1001)));
    assert!(!log.sample(start + Duration::from_millis(1500)));
    assert!(log.sample(start + Duration::from_secs(5)));
}

fn gateway(text: &str, stub: &Arc<EchoStub>) -> Gateway {
    let config = crate::config::Config::parse("test.toml", text, crate::apps::NAMES).unwrap();
    let options = BuildOptions { upstream_stub: Some(stub.clone() as Arc<dyn Endpoint<Request, Response>>) };
    Gateway::build_with(config, &BuildContext::default(), &options).unwrap()
}

const CONFIG: &str = r#"
[server]
stack = ["request_id"]
secret_headers = ["x-api-key"]

[middleware.request_id]
kind = "request_id"

[middleware.cors]
kind = "cors"
allow_origins = ["https://app.example.com"]

[[route]]
prefix = "/api"
stack = ["cors"]
upstream = "http://127.0.0.1:9"
"#;

fn request(spec: RequestSpec) -> Request {
    spec.build("127.0.0.1:8080".parse().unwrap()).unwrap()
}

#[tokio::test]
async fn a_trace_follows_the_request_down_and_the_response_up() {
    let stub = Arc::new(EchoStub::new());
    let gateway = gateway(CONFIG, &stub);
    let redactor = Redactor::new(gateway.server.secret_headers.clone());
    stub.redact(redactor.clone());
    let spec = RequestSpec {
        line: "GET /api/tasks".into(),
        headers: vec!["Origin: https://app.example.com".into(), "X-Api-Key: k3y-s3cret".into()],
        ..RequestSpec::default()
    };
    let trace = explain(&gateway, request(spec), Some(&stub), &redactor).await;
    assert_eq!(trace.route.name.as_deref(), Some("/api"));
    let names: Vec<&str> = trace.layers.iter().map(|l| l.label.name.as_str()).collect();
    assert_eq!(names, ["request_id", "cors"]);
    assert!(trace.layers.iter().all(|l| l.outcome == "passed on" && l.time_us.is_some()));
    let added_in = &trace.layers[0].request_headers.as_ref().unwrap().added;
    assert!(added_in.iter().any(|(n, _)| n == "x-request-id"), "{added_in:?}");
    let added_out = &trace.layers[1].response_headers.as_ref().unwrap().added;
    assert!(added_out.contains(&("access-control-allow-origin".into(), "https://app.example.com".into())));
    let upstream = trace.endpoint.upstream_request.as_ref().unwrap();
    assert!(upstream.headers.iter().any(|(n, v)| n == "x-forwarded-for" && v == "127.0.0.1"));
    assert_eq!(trace.response.status, 200);
    let everything = format!("{}{}", trace.render(), trace.to_json());
    assert!(!everything.contains("k3y-s3cret"), "{everything}");
    assert!(everything.contains(REDACTED));
}

#[tokio::test]
async fn a_request_no_route_matches_shows_the_server_stacks_404() {
    let stub = Arc::new(EchoStub::new());
    let gateway = gateway(CONFIG, &stub);
    let spec = RequestSpec { line: "/elsewhere".into(), ..RequestSpec::default() };
    let trace = explain(&gateway, request(spec), Some(&stub), &Redactor::default()).await;
    assert_eq!(trace.route.name, None);
    assert_eq!(trace.layers.len(), 1, "the server stack alone");
    assert_eq!((trace.endpoint.name.as_str(), trace.endpoint.status), ("router", Some(404)));
    assert_eq!(trace.endpoint.reason.as_deref(), Some("no route matches"));
    assert!(stub.take().is_none(), "no upstream was asked");
}

#[test]
fn request_lines_and_headers_are_checked() {
    let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let spec = |line: &str, headers: &[&str]| RequestSpec {
        line: line.into(),
        headers: headers.iter().map(|h| h.to_string()).collect(),
        ..RequestSpec::default()
    };
    let req = spec("PUT /x?y=1", &["X-A: 1", "X-A: 2"]).build(local).unwrap();
    assert_eq!((req.method().as_str(), req.uri().to_string()), ("PUT", "/x?y=1".to_string()));
    assert_eq!(req.headers().get_all("x-a").iter().count(), 2);
    assert_eq!(req.headers()["host"], "localhost");
    assert!(spec("GET /x extra", &[]).build(local).unwrap_err().contains("expected `METHOD TARGET`"));
    assert!(spec("GET /x", &["no colon"]).build(local).unwrap_err().contains("expected `Name: value`"));
    let with_body = RequestSpec { data: Some("abc".into()), host: Some("h.test".into()), ..spec("POST /", &[]) };
    let req = with_body.build(local).unwrap();
    assert_eq!(
        (req.headers()["content-length"].to_str().unwrap(), req.headers()["host"].to_str().unwrap()),
        ("3", "h.test")
    );
}
