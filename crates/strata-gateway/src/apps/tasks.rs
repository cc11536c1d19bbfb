//! `tasks`: an in-memory JSON tasks API.
//!
//! | Request                | Answer                                                        |
//! |------------------------|---------------------------------------------------------------|
//! | `GET /tasks`           | 200, a page of tasks as a JSON array ordered by id (see below) |
//! | `POST /tasks`          | 201, the new task, `Location: /tasks/{id}` (under the mount prefix); 507 when the list holds 10,000 tasks |
//! | `GET /tasks/{id}`      | 200 the task, or 404                                          |
//! | `PUT /tasks/{id}`      | 200 the replaced task (`title` required, `done` defaults to false), or 404 |
//! | `PATCH /tasks/{id}`    | 200 the updated task (`title` and/or `done`), or 404          |
//! | `DELETE /tasks/{id}`   | 204, or 404                                                   |
//!
//! A task is `{"id": 1, "title": "...", "done": false}`. Ids start at 1 and are never reused, even
//! after a delete, so a stale link can never point at a different task.
//!
//! `GET /tasks` answers one page: `?limit=N` tasks (1 to 1000, default 100), starting after the
//! task id `?cursor=ID` (default: from the first). The body stays a plain JSON array, so a client
//! that ignores paging still reads a valid list; when more tasks follow, a `Link` header (RFC 8288)
//! names the next page: `Link: </tasks?limit=100&cursor=100>; rel="next"`. The cursor is the last
//! id of the page, so tasks created or deleted meanwhile never shift a page (no task is skipped or
//! repeated). Pages bound each response: the whole list can be tens of megabytes of titles.
//!
//! Errors are JSON `{"error": "..."}` naming the problem:
//! - 400: a body that is not a JSON object, has wrong types, misses `title`, has unknown fields or
//!   `null` values, a title that is empty, only whitespace or longer than 1000 characters, a
//!   `PATCH` that sets nothing, or a `limit` or `cursor` that is not one number in range;
//! - 404: unknown path, unknown id, and an id that is not a plain decimal number or overflows `u64`
//!   (it cannot name a task, so the resource does not exist; a 400 would suggest the request could
//!   be fixed by changing its body);
//! - 405 with `Allow`: a known path with another method;
//! - 413: a body over 64 KiB;
//! - 415: a `Content-Type` other than `application/json` (parameters such as `charset` allowed). A
//!   body without `Content-Type` is read as JSON, so `curl -d` works as is.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use http::{HeaderValue, Method, StatusCode, header};
use serde::{Deserialize, Deserializer, Serialize};
use strata::http::{Request, Response, response};
use strata::{BoxFuture, Endpoint, Facts};

use super::{App, Rejection, method_not_allowed, not_found, parse_number, read_body};

/// The largest request body the app reads: tasks are small, so anything bigger is a mistake or abuse.
const BODY_LIMIT: usize = 64 * 1024;

/// The longest title accepted, in characters (not bytes, so every script gets the same limit).
const MAX_TITLE_CHARS: usize = 1000;

/// The most tasks the list holds. The list lives in memory, so without a bound any client could
/// grow the gateway's memory without limit; past it a create is refused with 507.
pub(crate) const MAX_TASKS: usize = 10_000;

/// Tasks per page of `GET /tasks` when the client gives no `limit`.
const DEFAULT_PAGE: usize = 100;

/// The largest `limit`: a page of at most ~4 MB (1000 titles of 1000 four-byte characters).
const MAX_PAGE: usize = 1000;

/// A fresh `tasks` app with an empty list, mounted at `mount` (`/` or a route's prefix such as
/// `/api`): the `Location` of a created task names the path the client sees.
pub(super) fn app(mount: &str) -> App {
    App {
        name: "tasks",
        description: "in-memory JSON tasks API: /tasks, /tasks/{id}",
        facts: Facts::NONE,
        endpoint: Arc::new(Tasks::mounted_at(mount)),
    }
}

/// One task, as stored and as sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
struct Task {
    id: u64,
    title: String,
    done: bool,
}

/// The body of `POST /tasks` and `PUT /tasks/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename = "task")]
struct NewTask {
    title: String,
    #[serde(default, deserialize_with = "not_null")]
    done: bool,
}

/// The body of `PATCH /tasks/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename = "task")]
struct TaskPatch {
    #[serde(default, deserialize_with = "present")]
    title: Option<String>,
    #[serde(default, deserialize_with = "present")]
    done: Option<bool>,
}

/// Reads a field that may be absent (then `None`) but never `null`.
///
/// Plain `Option` would read `{"title": null}` as "leave the title alone", silently accepting what
/// is almost certainly a client bug.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Reads a field with a default when absent, but rejects an explicit `null` (same reason as [`present`]).
fn not_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    T::deserialize(d)
}

#[derive(Debug)]
struct Store {
    /// The id the next task gets; only ever grows, so ids are never reused.
    next_id: u64,
    tasks: BTreeMap<u64, Task>,
}

impl Default for Store {
    fn default() -> Self {
        Store { next_id: 1, tasks: BTreeMap::new() }
    }
}

/// The endpoint: cloning shares the store, which is what the per-request futures need.
#[derive(Clone, Debug, Default)]
struct Tasks {
    store: Arc<RwLock<Store>>,
    /// What the client's paths start with before `/tasks`: empty at `/`, `/api` under that prefix.
    /// Known when the route is built, so locating a new task costs nothing per request.
    mount: Arc<str>,
}

impl Tasks {
    fn mounted_at(mount: &str) -> Tasks {
        Tasks { store: Arc::default(), mount: Arc::from(mount.trim_end_matches('/')) }
    }
}

impl Endpoint<Request, Response> for Tasks {
    fn call(&self, req: Request) -> BoxFuture<Response> {
        let tasks = self.clone();
        // All the work happens inside the future: the stack catches panics while polling it, not
        // while `call` builds it.
        Box::pin(async move { tasks.handle(req).await })
    }
}

/// Where a request points.
enum Target {
    Collection,
    Item(u64),
}

impl Tasks {
    async fn handle(&self, req: Request) -> Response {
        let path = req.uri().path().to_owned();
        let target = match path.as_str() {
            "/tasks" => Target::Collection,
            other => match other.strip_prefix("/tasks/") {
                Some(segment) if !segment.contains('/') => match parse_number(segment) {
                    Some(id) => Target::Item(id),
                    None => {
                        return response::json_error(
                            StatusCode::NOT_FOUND,
                            format!("no task with id `{segment}`: ids are positive whole numbers"),
                        );
                    }
                },
                _ => return not_found(&path),
            },
        };
        let method = req.method().clone();
        match (target, method) {
            (Target::Collection, Method::GET | Method::HEAD) => match Page::from_query(req.uri().query()) {
                Ok(page) => self.list(page),
                Err(message) => response::json_error(StatusCode::BAD_REQUEST, message),
            },
            (Target::Collection, Method::POST) => match read_json::<NewTask>(req).await {
                Ok(new) => self.create(new),
                Err(rejection) => rejection.into_response(),
            },
            (Target::Collection, m) => method_not_allowed(&m, &path, "GET, HEAD, POST"),
            (Target::Item(id), Method::GET | Method::HEAD) => match self.read().tasks.get(&id) {
                Some(task) => response::json(StatusCode::OK, task),
                None => no_such_task(id),
            },
            (Target::Item(id), Method::PUT) => match read_json::<NewTask>(req).await {
                Ok(new) => self.replace(id, new),
                Err(rejection) => rejection.into_response(),
            },
            (Target::Item(id), Method::PATCH) => match read_json::<TaskPatch>(req).await {
                Ok(patch) => self.update(id, patch),
                Err(rejection) => rejection.into_response(),
            },
            (Target::Item(id), Method::DELETE) => match self.write().tasks.remove(&id) {
                Some(_) => response::status(StatusCode::NO_CONTENT),
                None => no_such_task(id),
            },
            (Target::Item(_), m) => method_not_allowed(&m, &path, "GET, HEAD, PUT, PATCH, DELETE"),
        }
    }

    fn list(&self, page: Page) -> Response {
        // One task beyond the page tells whether a next page exists; only the page is copied.
        let mut tasks: Vec<Task> = {
            let store = self.read();
            let after = (std::ops::Bound::Excluded(page.cursor), std::ops::Bound::Unbounded);
            store.tasks.range(after).take(page.limit + 1).map(|(_, task)| task.clone()).collect()
        };
        let more = tasks.len() > page.limit;
        tasks.truncate(page.limit);
        let mut res = response::json(StatusCode::OK, &tasks);
        if let Some(last) = tasks.last().filter(|_| more) {
            let next = format!("<{}/tasks?limit={}&cursor={}>; rel=\"next\"", self.mount, page.limit, last.id);
            if let Ok(link) = HeaderValue::try_from(next) {
                res.headers_mut().insert(header::LINK, link);
            }
        }
        res
    }

    fn create(&self, new: NewTask) -> Response {
        if let Err(message) = check_title(&new.title) {
            return response::json_error(StatusCode::BAD_REQUEST, message);
        }
        let task = {
            let mut store = self.write();
            if store.tasks.len() >= MAX_TASKS {
                return response::json_error(
                    StatusCode::INSUFFICIENT_STORAGE,
                    format!("the task list is full ({MAX_TASKS} tasks): delete some first"),
                );
            }
            let id = store.next_id;
            let Some(next) = id.checked_add(1) else {
                // Unreachable in practice (2^64 creates), but reusing ids is the one thing not allowed.
                return response::json_error(StatusCode::INSUFFICIENT_STORAGE, "task ids are exhausted");
            };
            store.next_id = next;
            let task = Task { id, title: new.title, done: new.done };
            store.tasks.insert(id, task.clone());
            task
        };
        let mut res = response::json(StatusCode::CREATED, &task);
        if let Ok(location) = HeaderValue::try_from(format!("{}/tasks/{}", self.mount, task.id)) {
            res.headers_mut().insert(header::LOCATION, location);
        }
        res
    }

    fn replace(&self, id: u64, new: NewTask) -> Response {
        if let Err(message) = check_title(&new.title) {
            return response::json_error(StatusCode::BAD_REQUEST, message);
        }
        let mut store = self.write();
        match store.tasks.get_mut(&id) {
            Some(task) => {
                *task = Task { id, title: new.title, done: new.done };
                response::json(StatusCode::OK, task)
            }
            None => no_such_task(id),
        }
    }

    fn update(&self, id: u64, patch: TaskPatch) -> Response {
        if patch.title.is_none() && patch.done.is_none() {
            return response::json_error(StatusCode::BAD_REQUEST, "PATCH must set `title` and/or `done`");
        }
        if let Some(Err(message)) = patch.title.as_deref().map(check_title) {
            return response::json_error(StatusCode::BAD_REQUEST, message);
        }
        let mut store = self.write();
        match store.tasks.get_mut(&id) {
            Some(task) => {
                if let Some(title) = patch.title {
                    task.title = title;
                }
                if let Some(done) = patch.done {
                    task.done = done;
                }
                response::json(StatusCode::OK, task)
            }
            None => no_such_task(id),
        }
    }

    // A panic while the lock is held cannot leave the map half-updated (every critical section is a
    // single insert, remove or assignment), so a poisoned lock is still safe to use.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Store> {
        self.store.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Which page of the list `GET /tasks` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Page {
    /// At most this many tasks.
    limit: usize,
    /// Those with an id above this one (0: from the first, as ids start at 1).
    cursor: u64,
}

impl Page {
    /// Reads `limit` and `cursor` from the query; other parameters are ignored, as before paging.
    fn from_query(query: Option<&str>) -> Result<Page, String> {
        let mut limit = None;
        let mut cursor = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match name {
                "limit" => &mut limit,
                "cursor" => &mut cursor,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(format!("`{name}` is given more than once; give it once"));
            }
        }
        let limit = match limit {
            None => DEFAULT_PAGE,
            Some(text) => match parse_number(text) {
                Some(n @ 1..) if n <= MAX_PAGE as u64 => n as usize,
                _ => {
                    return Err(format!(
                        "`limit` must be a whole number from 1 to {MAX_PAGE}, got `{}`",
                        shorten(text)
                    ));
                }
            },
        };
        let cursor = match cursor {
            None => 0,
            Some(text) => parse_number(text).ok_or_else(|| {
                format!(
                    "`cursor` must be a task id (from the `Link: rel=\"next\"` of the previous page), got `{}`",
                    shorten(text)
                )
            })?,
        };
        Ok(Page { limit, cursor })
    }
}

/// A query value as echoed in an error: at most 32 characters, so a huge one is not sent back.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(32) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

fn no_such_task(id: u64) -> Response {
    response::json_error(StatusCode::NOT_FOUND, format!("no task with id {id}"))
}

fn check_title(title: &str) -> Result<(), String> {
    if title.trim().is_empty() {
        return Err("`title` must not be empty or only whitespace".to_string());
    }
    let chars = title.chars().count();
    if chars > MAX_TITLE_CHARS {
        return Err(format!("`title` is {chars} characters long; the limit is {MAX_TITLE_CHARS}"));
    }
    Ok(())
}

/// Checks the content type, reads the body within the limit and parses it as a JSON object.
///
/// Shared by every handler that takes a body, so they all report the same problems the same way.
async fn read_json<T: for<'de> Deserialize<'de>>(req: Request) -> Result<T, Rejection> {
    if let Some(value) = req.headers().get(header::CONTENT_TYPE).filter(|v| !is_json(v)) {
        let shown = String::from_utf8_lossy(value.as_bytes());
        return Err(Rejection::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be application/json, got `{shown}`"),
        ));
    }
    let bytes = read_body(req.into_body(), BODY_LIMIT).await?;
    // serde would also read a struct from a JSON array (`["title", true]`), which no client means.
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(Rejection::bad_request(
                r#"request body is empty; expected a JSON object such as {"title": "..."}"#,
            ));
        }
        Some(b'{') => {}
        Some(_) => {
            return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
                Err(e) => Rejection::bad_request(format!("request body is not valid JSON: {e}")),
                Ok(_) => Rejection::bad_request("request body must be a JSON object"),
            });
        }
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        let what = if e.is_data() { "invalid task" } else { "request body is not valid JSON" };
        Rejection::bad_request(format!("{what}: {e}"))
    })
}

/// `application/json`, in any case, with or without parameters (`; charset=utf-8`).
fn is_json(value: &HeaderValue) -> bool {
    let Ok(value) = value.to_str() else { return false };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

#[cfg(test)]
mod tests {
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

        let (status, headers, body) =
            send(&app, req(Method::POST, "/tasks", r#"{"title":"ship", "done": true}"#)).await;
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
}
