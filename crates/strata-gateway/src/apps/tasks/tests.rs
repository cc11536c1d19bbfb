use super::*;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use strata::http::Body;

fn tasks() -> Tasks {
    Tasks::default()
}

fn req(method: Method, uri: &str, body: &str) -> Request {
    let mut builder = http::Request::builder().method(method).uri(uri);
    if !body.is_empty() {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    builder.body(Body::from(body.to_string())).unwrap()
}

async fn send(app: &Tasks, req: Request) -> (StatusCode, http::HeaderMap, Value) {
    let res = Endpoint::call(app, req).await;
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    (parts.status, parts.headers, value)
}

async fn call(app: &Tasks, method: Method, uri: &str, body: &str) -> (StatusCode, Value) {
    let (status, _, value) = send(app, req(method, uri, body)).await;
    (status, value)
}

/// Asserts a 400 whose error message mentions `needle`.
async fn assert_rejected(app: &Tasks, method: Method, uri: &str, body: &str, needle: &str) {
    let (status, value) = call(app, method.clone(), uri, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {uri} {body}: {value}");
    let error = value["error"].as_str().unwrap_or_default();
    assert!(error.contains(needle), "{method} {uri} {body}: error {error:?} should mention {needle:?}");
}

#[tokio::test]
async fn location_names_the_path_the_client_sees_under_a_prefix() {
    for (mount, expected) in [("/api", "/api/tasks/1"), ("/api/v1/", "/api/v1/tasks/1"), ("/", "/tasks/1")] {
        let app = Tasks::mounted_at(mount);
        let (status, headers, _) = send(&app, req(Method::POST, "/tasks", r#"{"title":"x"}"#)).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(headers[header::LOCATION], expected, "mounted at {mount}");
    }
}

#[tokio::test]
async fn the_list_is_bounded_and_frees_room_on_delete() {
    let app = tasks();
    {
        let mut store = app.write();
        for id in 1..=MAX_TASKS as u64 {
            store.tasks.insert(id, Task { id, title: String::new(), done: false });
        }
        store.next_id = MAX_TASKS as u64 + 1;
    }
    let (status, value) = call(&app, Method::POST, "/tasks", r#"{"title":"one too many"}"#).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{value}");
    assert!(value["error"].as_str().unwrap().contains("full"), "{value}");
    assert_eq!(call(&app, Method::DELETE, "/tasks/1", "").await.0, StatusCode::NO_CONTENT);
    let (status, value) = call(&app, Method::POST, "/tasks", r#"{"title":"fits again"}"#).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(value["id"], MAX_TASKS as u64 + 1);
}

#[tokio::test]
async fn create_then_list_get_and_locate() {
    let app = tasks();
    assert_eq!(call(&app, Method::GET, "/tasks", "").await, (StatusCode::OK, json!([])));

    let (status, headers, body) = send(&app, req(Method::POST, "/tasks", r#"{"title":"write docs"}"#)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body, json!({"id": 1, "title": "write docs", "done": false}));
    assert_eq!(headers[header::LOCATION], "/tasks/1");
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");

    let (status, headers, body) = send(&app, req(Method::POST, "/tasks", r#"{"title":"ship", "done": true}"#)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body, json!({"id": 2, "title": "ship", "done": true}));
    assert_eq!(headers[header::LOCATION], "/tasks/2");

    assert_eq!(
        call(&app, Method::GET, "/tasks", "").await,
        (
            StatusCode::OK,
            json!([{"id": 1, "title": "write docs", "done": false}, {"id": 2, "title": "ship", "done": true}])
        )
    );
    assert_eq!(
        call(&app, Method::GET, "/tasks/2", "").await,
        (StatusCode::OK, json!({"id": 2, "title": "ship", "done": true}))
    );
    let (status, body) = call(&app, Method::GET, "/tasks/3", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "no task with id 3");
}

#[tokio::test]
async fn list_is_ordered_by_id_beyond_single_digits() {
    let app = tasks();
    for i in 1..=12 {
        call(&app, Method::POST, "/tasks", &format!(r#"{{"title":"t{i}"}}"#)).await;
    }
    let (_, body) = call(&app, Method::GET, "/tasks", "").await;
    let ids: Vec<u64> = body.as_array().unwrap().iter().map(|t| t["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, (1..=12).collect::<Vec<_>>());
}

#[tokio::test]
async fn put_replaces_the_whole_task() {
    let app = tasks();
    call(&app, Method::POST, "/tasks", r#"{"title":"a","done":true}"#).await;
    // `done` omitted from a full replace goes back to its default.
    assert_eq!(
        call(&app, Method::PUT, "/tasks/1", r#"{"title":"b"}"#).await,
        (StatusCode::OK, json!({"id": 1, "title": "b", "done": false}))
    );
    assert_eq!(
        call(&app, Method::PUT, "/tasks/1", r#"{"title":"c","done":true}"#).await,
        (StatusCode::OK, json!({"id": 1, "title": "c", "done": true}))
    );
    assert_eq!(call(&app, Method::GET, "/tasks/1", "").await.1, json!({"id": 1, "title": "c", "done": true}));
    let (status, body) = call(&app, Method::PUT, "/tasks/9", r#"{"title":"x"}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "no task with id 9");
    // A PUT never creates: the list still holds one task.
    assert_eq!(call(&app, Method::GET, "/tasks", "").await.1.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn patch_changes_only_the_given_fields() {
    let app = tasks();
    call(&app, Method::POST, "/tasks", r#"{"title":"a"}"#).await;
    assert_eq!(
        call(&app, Method::PATCH, "/tasks/1", r#"{"done":true}"#).await,
        (StatusCode::OK, json!({"id": 1, "title": "a", "done": true}))
    );
    assert_eq!(
        call(&app, Method::PATCH, "/tasks/1", r#"{"title":"b"}"#).await,
        (StatusCode::OK, json!({"id": 1, "title": "b", "done": true}))
    );
    assert_eq!(
        call(&app, Method::PATCH, "/tasks/1", r#"{"title":"c","done":false}"#).await,
        (StatusCode::OK, json!({"id": 1, "title": "c", "done": false}))
    );
    assert_eq!(call(&app, Method::PATCH, "/tasks/2", r#"{"done":true}"#).await.0, StatusCode::NOT_FOUND);
    assert_rejected(&app, Method::PATCH, "/tasks/1", "{}", "`title` and/or `done`").await;
    assert_rejected(&app, Method::PATCH, "/tasks/1", r#"{"title":"  "}"#, "empty").await;
    assert_rejected(&app, Method::PATCH, "/tasks/1", r#"{"title":null}"#, "null").await;
    assert_rejected(&app, Method::PATCH, "/tasks/1", r#"{"done":"yes"}"#, "expected a boolean").await;
    assert_rejected(&app, Method::PATCH, "/tasks/1", r#"{"id":5}"#, "unknown field `id`").await;
    // Rejected patches changed nothing.
    assert_eq!(call(&app, Method::GET, "/tasks/1", "").await.1, json!({"id": 1, "title": "c", "done": false}));
}

#[tokio::test]
async fn delete_removes_and_ids_are_never_reused() {
    let app = tasks();
    call(&app, Method::POST, "/tasks", r#"{"title":"a"}"#).await;
    call(&app, Method::POST, "/tasks", r#"{"title":"b"}"#).await;
    let (status, headers, body) = send(&app, req(Method::DELETE, "/tasks/2", "")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null);
    assert!(headers.get(header::CONTENT_TYPE).is_none());
    assert_eq!(call(&app, Method::GET, "/tasks/2", "").await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(&app, Method::DELETE, "/tasks/2", "").await.0, StatusCode::NOT_FOUND);
    // The highest id was deleted; the next task still gets a new one.
    let (status, body) = call(&app, Method::POST, "/tasks", r#"{"title":"c"}"#).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["id"], 3);
    call(&app, Method::DELETE, "/tasks/1", "").await;
    call(&app, Method::DELETE, "/tasks/3", "").await;
    assert_eq!(call(&app, Method::GET, "/tasks", "").await.1, json!([]));
    assert_eq!(call(&app, Method::POST, "/tasks", r#"{"title":"d"}"#).await.1["id"], 4);
}

#[tokio::test]
async fn invalid_bodies_are_rejected_with_the_problem_named() {
    let app = tasks();
    let post = |body: &'static str, needle: &'static str| {
        let app = app.clone();
        async move { assert_rejected(&app, Method::POST, "/tasks", body, needle).await }
    };
    post(r#"{"title": "a""#, "not valid JSON").await;
    post(r#"{"title": 'a'}"#, "not valid JSON").await;
    post("nonsense", "not valid JSON").await;
    post("", "empty").await;
    post("  \n", "empty").await;
    post(r#"["a", false]"#, "must be a JSON object").await;
    post(r#""a""#, "must be a JSON object").await;
    post("{}", "missing field `title`").await;
    post(r#"{"done": true}"#, "missing field `title`").await;
    post(r#"{"title": 5}"#, "invalid type: integer `5`, expected a string").await;
    post(r#"{"title": null}"#, "invalid type: null").await;
    post(r#"{"title": "a", "done": "no"}"#, "invalid type: string \"no\", expected a boolean").await;
    post(r#"{"title": "a", "done": null}"#, "invalid type: null").await;
    post(r#"{"title": "a", "priority": 1}"#, "unknown field `priority`").await;
    post(r#"{"title": "a", "id": 7}"#, "unknown field `id`").await;
    post(r#"{"title": "a", "title": "b"}"#, "duplicate field `title`").await;
    post(r#"{"title": ""}"#, "`title` must not be empty").await;
    post(r#"{"title": " \t\n "}"#, "`title` must not be empty").await;
    post(r#"{"title": "a"} trailing"#, "trailing characters").await;
    let long = format!(r#"{{"title": "{}"}}"#, "x".repeat(1001));
    assert_rejected(&app, Method::POST, "/tasks", &long, "1001 characters").await;
    // PUT shares the validation.
    call(&app, Method::POST, "/tasks", r#"{"title":"kept"}"#).await;
    assert_rejected(&app, Method::PUT, "/tasks/1", r#"{"done": true}"#, "missing field `title`").await;
    assert_rejected(&app, Method::PUT, "/tasks/1", r#"{"title": ""}"#, "empty").await;
    assert_rejected(&app, Method::PUT, "/tasks/1", &long, "limit is 1000").await;
    // Nothing invalid was stored, and no id was spent on a rejected request.
    assert_eq!(call(&app, Method::GET, "/tasks", "").await.1, json!([{"id": 1, "title": "kept", "done": false}]));
}

#[tokio::test]
async fn the_title_limit_counts_characters_not_bytes() {
    let app = tasks();
    // 1000 two-byte characters: 2000 bytes, but within the limit.
    let title = "é".repeat(1000);
    let (status, body) = call(&app, Method::POST, "/tasks", &json!({ "title": title }).to_string()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["title"], title);
    let too_long = json!({ "title": "é".repeat(1001) }).to_string();
    assert_rejected(&app, Method::POST, "/tasks", &too_long, "1001 characters").await;
}

#[tokio::test]
async fn content_type_must_be_json_when_present() {
    let app = tasks();
    let with_type = |content_type: &str| {
        http::Request::post("/tasks")
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(r#"{"title":"a"}"#))
            .unwrap()
    };
    for bad in ["text/plain", "application/x-www-form-urlencoded", "application/jsonx", "application/json-seq"] {
        let (status, _, body) = send(&app, with_type(bad)).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{bad}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("application/json") && error.contains(bad), "{error}");
    }
    for good in ["application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"] {
        assert_eq!(send(&app, with_type(good)).await.0, StatusCode::CREATED, "{good}");
    }
    // No Content-Type at all: read as JSON.
    let bare = http::Request::post("/tasks").body(Body::from(r#"{"title":"b"}"#)).unwrap();
    assert_eq!(send(&app, bare).await.0, StatusCode::CREATED);
    // PUT and PATCH check it too.
    let put = http::Request::put("/tasks/1")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(r#"{"title":"c"}"#))
        .unwrap();
    assert_eq!(send(&app, put).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let patch = http::Request::patch("/tasks/1")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(r#"{"done":true}"#))
        .unwrap();
    assert_eq!(send(&app, patch).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn bodies_over_64_kib_are_refused() {
    let app = tasks();
    // Valid JSON, so only the size can be the reason.
    let big = json!({ "title": "a", "pad": "x".repeat(BODY_LIMIT) }).to_string();
    let (status, body) = call(&app, Method::POST, "/tasks", &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body["error"].as_str().unwrap().contains("65536"), "{body}");
    // A streamed body is cut off at the limit as well.
    let chunks = (0..100)
        .map(|_| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from(vec![b' '; 1024]))));
    let streamed = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
    let req = http::Request::post("/tasks").body(Body::wrap(streamed)).unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(call(&app, Method::GET, "/tasks", "").await.1, json!([]));
}

#[tokio::test]
async fn unknown_paths_and_bad_ids_are_404() {
    let app = tasks();
    call(&app, Method::POST, "/tasks", r#"{"title":"a"}"#).await;
    for uri in ["/", "/task", "/tasksx", "/tasks/1/extra", "/other/tasks", "/tasks//1"] {
        let (status, body) = call(&app, Method::GET, uri, "").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert!(body["error"].as_str().unwrap().contains("no route"), "{uri}: {body}");
    }
    for uri in ["/tasks/abc", "/tasks/-1", "/tasks/+1", "/tasks/1.0", "/tasks/", "/tasks/99999999999999999999999"] {
        for method in [Method::GET, Method::PUT, Method::PATCH, Method::DELETE] {
            let (status, body) = call(&app, method.clone(), uri, r#"{"title":"x"}"#).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}");
            assert!(body["error"].as_str().unwrap().contains("no task with id"), "{uri}: {body}");
        }
    }
    assert_eq!(call(&app, Method::GET, "/tasks/0", "").await.0, StatusCode::NOT_FOUND);
    // Leading zeros name the same number, so the same task.
    assert_eq!(call(&app, Method::GET, "/tasks/001", "").await.0, StatusCode::OK);
    assert_eq!(call(&app, Method::GET, "/tasks?done=true", "").await.0, StatusCode::OK);
}

#[tokio::test]
async fn wrong_methods_are_405_with_allow() {
    let app = tasks();
    let cases = [
        (Method::DELETE, "/tasks", "GET, HEAD, POST"),
        (Method::PUT, "/tasks", "GET, HEAD, POST"),
        (Method::POST, "/tasks/1", "GET, HEAD, PUT, PATCH, DELETE"),
        (Method::OPTIONS, "/tasks/1", "GET, HEAD, PUT, PATCH, DELETE"),
    ];
    for (method, uri, allow) in cases {
        let (status, headers, body) = send(&app, req(method.clone(), uri, "")).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        assert_eq!(headers[header::ALLOW], allow);
        assert!(body["error"].as_str().unwrap().contains(method.as_str()), "{body}");
    }
    // HEAD is GET without a body (the server drops the body); the app answers it the same way.
    assert_eq!(call(&app, Method::HEAD, "/tasks", "").await.0, StatusCode::OK);
}

/// A store of tasks 1..=n with short titles.
fn filled(mount: &str, n: u64) -> Tasks {
    let app = Tasks::mounted_at(mount);
    let mut store = app.write();
    for id in 1..=n {
        store.tasks.insert(id, Task { id, title: format!("t{id}"), done: false });
    }
    store.next_id = n + 1;
    drop(store);
    app
}

fn ids(body: &Value) -> Vec<u64> {
    body.as_array().unwrap().iter().map(|t| t["id"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn the_list_is_paged_with_a_link_to_the_next_page() {
    let app = filled("/", 250);
    let (status, headers, body) = send(&app, req(Method::GET, "/tasks", "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&body), (1..=100).collect::<Vec<_>>(), "default page: the first 100");
    assert_eq!(headers[header::LINK], r#"</tasks?limit=100&cursor=100>; rel="next""#);

    // Following the links visits every task once, and the last page has no link.
    let mut seen = Vec::new();
    let mut next = Some("/tasks?limit=60".to_string());
    for _ in 0..10 {
        let Some(uri) = next.take() else { break };
        let (status, headers, body) = send(&app, req(Method::GET, &uri, "")).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        seen.extend(ids(&body));
        next = headers.get(header::LINK).map(|l| {
            let l = l.to_str().unwrap();
            l.strip_prefix('<').and_then(|l| l.strip_suffix(r#">; rel="next""#)).unwrap().to_string()
        });
    }
    assert_eq!(next, None, "the walk ended on a page without a next link");
    assert_eq!(seen, (1..=250).collect::<Vec<_>>());

    // A page that ends exactly at the last task has no next link.
    let (_, headers, body) = send(&app, req(Method::GET, "/tasks?cursor=200&limit=50", "")).await;
    assert_eq!(ids(&body), (201..=250).collect::<Vec<_>>());
    assert!(headers.get(header::LINK).is_none());
    // Past the end: an empty array, still 200.
    assert_eq!(call(&app, Method::GET, "/tasks?cursor=999", "").await, (StatusCode::OK, json!([])));
}

#[tokio::test]
async fn a_cursor_is_stable_when_tasks_come_and_go() {
    let app = filled("/api", 5);
    let (_, headers, body) = send(&app, req(Method::GET, "/tasks?limit=2", "")).await;
    assert_eq!(ids(&body), [1, 2]);
    assert_eq!(headers[header::LINK], r#"</api/tasks?limit=2&cursor=2>; rel="next""#, "under the mount prefix");
    // The first task is deleted before the next page is read: nothing is skipped.
    call(&app, Method::DELETE, "/tasks/1", "").await;
    call(&app, Method::DELETE, "/tasks/3", "").await;
    let (_, _, body) = send(&app, req(Method::GET, "/tasks?limit=2&cursor=2", "")).await;
    assert_eq!(ids(&body), [4, 5]);
}

#[tokio::test]
async fn the_largest_page_is_a_thousand_tasks() {
    let app = filled("/", MAX_TASKS as u64);
    let (_, headers, body) = send(&app, req(Method::GET, "/tasks?limit=1000", "")).await;
    assert_eq!(ids(&body).len(), MAX_PAGE);
    assert_eq!(headers[header::LINK], r#"</tasks?limit=1000&cursor=1000>; rel="next""#);
    let (_, headers, body) = send(&app, req(Method::GET, "/tasks?limit=1000&cursor=9000", "")).await;
    assert_eq!(ids(&body), (9001..=10_000).collect::<Vec<_>>());
    assert!(headers.get(header::LINK).is_none());
}

#[tokio::test]
async fn bad_limits_and_cursors_are_400_with_the_problem_named() {
    let app = filled("/", 3);
    for uri in ["/tasks?limit=0", "/tasks?limit=1001", "/tasks?limit=abc", "/tasks?limit=", "/tasks?limit=-1"] {
        assert_rejected(&app, Method::GET, uri, "", "`limit` must be a whole number from 1 to 1000").await;
    }
    assert_rejected(&app, Method::GET, "/tasks?limit=99999999999999999999999", "", "from 1 to 1000").await;
    for uri in ["/tasks?cursor=x", "/tasks?cursor=", "/tasks?cursor=1.5", "/tasks?cursor=99999999999999999999999"] {
        assert_rejected(&app, Method::GET, uri, "", "`cursor` must be a task id").await;
    }
    assert_rejected(&app, Method::GET, "/tasks?limit=1&limit=2", "", "`limit` is given more than once").await;
    assert_rejected(&app, Method::HEAD, "/tasks?cursor=no", "", "`cursor`").await;
    // A huge value is not echoed whole.
    let long = format!("/tasks?limit={}", "9".repeat(500));
    let (_, body) = call(&app, Method::GET, &long, "").await;
    assert!(body["error"].as_str().unwrap().len() < 200, "{body}");
    // Other parameters are ignored, as they were before paging.
    assert_eq!(ids(&call(&app, Method::GET, "/tasks?done=true&limit=2", "").await.1), [1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_get_distinct_ids() {
    let app = tasks();
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move { call(&app, Method::POST, "/tasks", &format!(r#"{{"title":"t{i}"}}"#)).await })
        })
        .collect();
    let mut ids = Vec::new();
    for h in handles {
        let (status, body) = h.await.unwrap();
        assert_eq!(status, StatusCode::CREATED);
        ids.push(body["id"].as_u64().unwrap());
    }
    ids.sort_unstable();
    assert_eq!(ids, (1..=50).collect::<Vec<_>>());
}
