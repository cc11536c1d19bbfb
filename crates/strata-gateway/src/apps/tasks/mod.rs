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
//!   body without `Content-Type` is read as JSON. `curl -d` sends
//!   `application/x-www-form-urlencoded`, so it needs `-H 'content-type: application/json'` (or
//!   `curl --json`).

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
mod tests;
