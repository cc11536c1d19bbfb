//! [`StaticFiles`]: files served from a directory, as the endpoint of a stack.
//!
//! ```
//! use strata::apps::StaticFiles;
//! use strata::http::{Body, Stack};
//!
//! let root = std::env::temp_dir().join(format!("strata-static-example-{}", std::process::id()));
//! std::fs::create_dir_all(&root)?;
//! std::fs::write(root.join("index.html"), "<h1>hello</h1>")?;
//!
//! let files = StaticFiles::builder(&root).mount_path("/assets").precompressed(true).build()?;
//! let service = Stack::new().serve(files);
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! let res = service.call(http::Request::get("/assets/").body(Body::empty())?).await;
//! assert_eq!(res.status(), 200);
//! assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # std::fs::remove_dir_all(&root)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What it answers (only `GET` and `HEAD`; other methods get `405` with `Allow: GET, HEAD`):
//!
//! - **Validators**: a strong `ETag` made of the file's size, modification time (nanoseconds) and
//!   inode, `"<size>-<mtime>-<inode>"` in hex (a precompressed sibling's tag is its own file's, with
//!   `-br`, `-zstd` or `-gzip` appended), and `Last-Modified`. A file replaced in place (a new
//!   inode) or touched gets a new tag; two servers sharing a directory over a network file system
//!   agree on it, two copies of a site on two disks do not.
//! - **Conditional requests** (RFC 9110 §13.2.2 order): `If-Match`, else `If-Unmodified-Since`
//!   (`412` when it fails); then `If-None-Match` (weak comparison), else `If-Modified-Since`
//!   (`304` when the client's copy is current).
//! - **Ranges**: `Range: bytes=a-b`, `a-` or `-n` on a `GET` → `206` with `Content-Range`; a range
//!   past the end → `416` with `Content-Range: bytes */<size>`; `If-Range` (an entity tag or the
//!   exact date) lets the range apply only to the version the client has. Several ranges are
//!   answered with the whole file (`200`), as RFC 9110 allows.
//! - **`Content-Type`** from the extension (text types with `charset=utf-8`); unknown extensions
//!   are `application/octet-stream`. `X-Content-Type-Options` is left to a response-headers layer.
//! - **Precompressed siblings** ([`StaticFilesBuilder::precompressed`]): `app.js.br`, `.zst`,
//!   `.gz`, chosen by `Accept-Encoding`'s weights, with `Content-Encoding` and
//!   `Vary: Accept-Encoding`. The uncompressed file must exist too: it names the type, and serves
//!   the clients that accept no coding.
//! - **Directories**: `index.html`, after a `308` from `/dir` to `/dir/`; never a listing (`404`).
//!   [`StaticFilesBuilder::spa_fallback`] serves one file for unknown extension-less paths.
//! - **Refused**: dot segments and encoded slashes in any spelling, hidden files (unless
//!   allowed), and symbolic links that resolve outside the root, all with a `404` that says
//!   nothing of why (the reason is in the response's [`Refusal`], for `strata explain`). See
//!   `resolve.rs` for how links are checked without a `canonicalize` per request.
//! - **Large files** stream in chunks ([`StaticFilesBuilder::chunk_size`], 128 KiB by default),
//!   one chunk in flight per response: memory does not grow with the file. Files up to one chunk
//!   are read at once.
//! - **Where the reads run** ([`FileIo`]): by default on the thread that serves the request, as
//!   nginx does without `aio threads`. A read from the page cache takes microseconds, while a hop
//!   to tokio's blocking pool and back costs two thread wake-ups: on a 4 KiB file that hop doubled
//!   the CPU per request, on a 1 MiB file (eight chunks, eight hops) it made it ten times nginx's.
//!   Files on a disk slow enough to stall a server thread (a network filesystem, a cold spinning
//!   disk) are better read with [`FileIo::BlockingPool`].
//!
//! Error responses (`404`, `405`, `412`, `416`) are marked [`GeneratedError`](crate::http::GeneratedError),
//! so an `errors` layer outside formats them.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use http::request::Parts;
use http::{HeaderValue, Method, StatusCode, header};

use crate::check::{Fact, Facts};
use crate::http::{Body, Refusal, Request, Response, response};
use crate::{BoxFuture, Endpoint};

mod body;
mod builder;
mod conditional;
#[cfg(feature = "config")]
mod config;
mod content_type;
mod resolve;
#[cfg(test)]
mod tests;

/// Where [`StaticFiles`] opens and reads files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FileIo {
    /// On the thread serving the request: no thread hop. For local disks, whose reads are
    /// page-cache hits or fast (the default).
    #[default]
    Inline,
    /// On tokio's blocking pool, so that a slow read never stalls the other requests of a server
    /// thread, at the price of two thread wake-ups per read.
    BlockingPool,
}

pub use builder::{DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, StaticFilesBuilder};
#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub use config::{FileIoConfig, StaticFilesConfig};

use conditional::{Coding, Precondition, Ranged, Validators};
use resolve::{OpenError, Opened, Relative};

/// Files served from a directory. See the [module docs](self).
///
/// Cheap to clone (the settings are shared); an [`Endpoint`] for [`Stack::serve`](crate::Stack::serve).
#[derive(Clone, Debug)]
pub struct StaticFiles {
    settings: Arc<Settings>,
}

#[derive(Debug)]
struct Settings {
    /// Canonical.
    root: PathBuf,
    /// `/` or a path without a trailing slash.
    mount_path: String,
    index: bool,
    spa_fallback: Option<PathBuf>,
    precompressed: bool,
    serve_hidden: bool,
    cache_control: Option<HeaderValue>,
    chunk_size: usize,
    file_io: FileIo,
}

impl StaticFiles {
    /// Starts building the files of the directory `root`.
    pub fn builder(root: impl AsRef<Path>) -> StaticFilesBuilder {
        StaticFilesBuilder::new(root.as_ref().to_path_buf())
    }

    /// The directory served, canonical.
    pub fn root(&self) -> &Path {
        &self.settings.root
    }

    /// What it declares for the ordering rules: its `404`s and `416`s are errors of its own making.
    pub fn facts(&self) -> Facts {
        Facts::of(&[Fact::CanFail])
    }

    /// Answers one request, synchronously: it opens and reads files, so it belongs on a thread
    /// that may block ([`Endpoint::call`] runs it on tokio's blocking pool).
    fn answer(&self, request: &Parts) -> Response {
        let settings = &*self.settings;
        let head = request.method == Method::HEAD;
        if request.method != Method::GET && !head {
            let mut res =
                response::generated_error(StatusCode::METHOD_NOT_ALLOWED, "Files can only be read, with GET or HEAD.");
            res.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return res;
        }
        let path = request.uri.path();
        let below = if settings.mount_path == "/" {
            path
        } else {
            match path.strip_prefix(settings.mount_path.as_str()) {
                // The mount point itself is its root directory, which `/` must end.
                Some("") => return settings.directory_redirect(request),
                Some(rest) if rest.starts_with('/') => rest,
                _ => return not_found("path is outside the mount path"),
            }
        };
        let relative = match resolve::relative(below, settings.serve_hidden) {
            Ok(relative) => relative,
            Err(reason) => return not_found(reason),
        };
        let (file_path, opened) = match settings.find(&relative) {
            Ok(found) => found,
            Err(Miss::Redirect) => return settings.directory_redirect(request),
            Err(Miss::Refused(reason)) => return not_found(reason),
            Err(Miss::Forbidden) => {
                return Refusal::mark(
                    response::generated_error(StatusCode::FORBIDDEN, "This file cannot be read."),
                    "the server may not read this file",
                );
            }
            Err(Miss::Failed(e)) => {
                tracing::warn!(error = %e, path = %relative.path.display(), "static file could not be opened");
                return response::generated_error(StatusCode::INTERNAL_SERVER_ERROR, "The file could not be read.");
            }
        };
        let content_type = content_type::for_path(&file_path);
        let (opened, coding) = match settings.precompressed {
            true => settings.sibling(&file_path, &request.headers).unwrap_or((opened, None)),
            false => (opened, None),
        };
        settings.serve(request, opened, content_type, coding, head)
    }
}

/// Why no file was found for a path.
enum Miss {
    /// A directory asked for without its trailing `/`, with `index` on.
    Redirect,
    /// Nothing to serve (missing, a directory without index, outside the root): a `404`.
    Refused(&'static str),
    /// The server may not read it: a `403`.
    Forbidden,
    /// The file system failed: a `500`.
    Failed(std::io::Error),
}

impl Settings {
    /// The file a request path names: the file itself, a directory's `index.html`, or the SPA
    /// fallback; with its path relative to the root.
    fn find(&self, relative: &Relative) -> Result<(PathBuf, Opened), Miss> {
        let missing = match resolve::open_inside(&self.root, &relative.path) {
            Ok(opened) if opened.metadata.is_file() => {
                if relative.trailing_slash {
                    // `/app.js/`: a file is not a directory.
                    return Err(Miss::Refused("path ends with `/` but names a file"));
                }
                return Ok((relative.path.clone(), opened));
            }
            Ok(opened) if opened.metadata.is_dir() => {
                if !self.index {
                    return Err(Miss::Refused("path names a directory (directory listings are never served)"));
                }
                if !relative.trailing_slash {
                    return Err(Miss::Redirect);
                }
                let index = relative.path.join("index.html");
                match resolve::open_inside(&self.root, &index) {
                    Ok(opened) if opened.metadata.is_file() => return Ok((index, opened)),
                    Ok(_) | Err(OpenError::Missing) => {
                        return Err(Miss::Refused("directory has no index.html (listings are never served)"));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(_) => return Err(Miss::Refused("path names neither a file nor a directory")),
            Err(OpenError::Missing) => "no file at this path",
            Err(e) => return Err(e.into()),
        };
        match &self.spa_fallback {
            Some(fallback) if !relative.has_extension => match resolve::open_inside(&self.root, fallback) {
                Ok(opened) if opened.metadata.is_file() => Ok((fallback.clone(), opened)),
                Ok(_) | Err(OpenError::Missing) => Err(Miss::Refused("the spa_fallback file is gone")),
                Err(e) => Err(e.into()),
            },
            _ => Err(Miss::Refused(missing)),
        }
    }

    /// The best precompressed sibling of `file` the request accepts, if one exists.
    fn sibling(&self, file: &Path, headers: &http::HeaderMap) -> Option<(Opened, Option<Coding>)> {
        conditional::accepted_codings(headers).into_iter().find_map(|coding| {
            let mut name = file.as_os_str().to_owned();
            name.push(coding.suffix());
            match resolve::open_inside(&self.root, Path::new(&name)) {
                Ok(opened) if opened.metadata.is_file() => Some((opened, Some(coding))),
                _ => None,
            }
        })
    }

    /// The response for an opened file: `200`, `206`, `304`, `412` or `416`.
    fn serve(
        &self,
        request: &Parts,
        opened: Opened,
        content_type: &'static str,
        coding: Option<Coding>,
        head: bool,
    ) -> Response {
        let Opened { file, metadata } = opened;
        let len = metadata.len();
        let modified = metadata.modified().ok();
        let validators =
            Validators { etag: entity_tag(&metadata, coding), modified: modified.and_then(conditional::whole_seconds) };
        let mut res = match validators.evaluate(&request.headers) {
            Precondition::Proceed => Response::new(Body::empty()),
            Precondition::NotModified => response::status(StatusCode::NOT_MODIFIED),
            Precondition::Failed => {
                return Refusal::mark(
                    response::generated_error(
                        StatusCode::PRECONDITION_FAILED,
                        "The file is not in the state the request's conditions require.",
                    ),
                    "a precondition (If-Match or If-Unmodified-Since) failed",
                );
            }
        };
        let headers = res.headers_mut();
        if let Ok(etag) = HeaderValue::from_str(&validators.etag) {
            headers.insert(header::ETAG, etag);
        }
        if let Some(modified) = validators.modified
            && let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(modified))
        {
            headers.insert(header::LAST_MODIFIED, date);
        }
        if let Some(cache_control) = &self.cache_control {
            headers.insert(header::CACHE_CONTROL, cache_control.clone());
        }
        if self.precompressed {
            crate::http::headers::add_vary(headers, "Accept-Encoding");
        }
        if res.status() == StatusCode::NOT_MODIFIED {
            return res;
        }
        let headers = res.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Some(coding) = coding {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding.token()));
        }
        // Ranges are defined for GET only (RFC 9110 §14.2); HEAD describes the whole file.
        let ranged = if head || !validators.range_applies(&request.headers) {
            Ranged::Whole
        } else {
            conditional::range(&request.headers, len)
        };
        let (start, count) = match ranged {
            Ranged::Whole => (0, len),
            Ranged::Part { start, end } => {
                *res.status_mut() = StatusCode::PARTIAL_CONTENT;
                let range = format!("bytes {start}-{end}/{len}");
                if let Ok(value) = HeaderValue::from_str(&range) {
                    res.headers_mut().insert(header::CONTENT_RANGE, value);
                }
                (start, end - start + 1)
            }
            Ranged::Unsatisfiable => {
                let mut res = Refusal::mark(
                    response::generated_error(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        "The requested range lies outside the file.",
                    ),
                    "Range starts past the end of the file",
                );
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    res.headers_mut().insert(header::CONTENT_RANGE, value);
                }
                return res;
            }
        };
        res.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(count));
        if head || count == 0 {
            return res;
        }
        match self.body(file, start, count) {
            Ok(body) => {
                *res.body_mut() = body;
                res
            }
            Err(e) => {
                tracing::warn!(error = %e, "static file could not be read");
                response::generated_error(StatusCode::INTERNAL_SERVER_ERROR, "The file could not be read.")
            }
        }
    }

    /// `count` bytes of `file` from `start`: read now when they fit in one chunk, else streamed.
    fn body(&self, mut file: File, start: u64, count: u64) -> std::io::Result<Body> {
        if start > 0 {
            file.seek(SeekFrom::Start(start))?;
        }
        if count <= self.chunk_size as u64 {
            let bytes = body::read_chunk(&mut file, count as usize)?;
            if (bytes.len() as u64) < count {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file became shorter"));
            }
            return Ok(Body::full(bytes));
        }
        Ok(Body::wrap(body::FileBody::new(file, count, self.chunk_size, self.file_io)))
    }

    /// `308` from a directory's path to the same path with `/` (and the query kept).
    fn directory_redirect(&self, request: &Parts) -> Response {
        if !self.index {
            return not_found("path names a directory (directory listings are never served)");
        }
        let mut location = format!("{}/", request.uri.path());
        if let Some(query) = request.uri.query() {
            location.push('?');
            location.push_str(query);
        }
        let mut res = response::status(StatusCode::PERMANENT_REDIRECT);
        if let Ok(value) = HeaderValue::from_str(&location) {
            res.headers_mut().insert(header::LOCATION, value);
        }
        res
    }
}

impl From<OpenError> for Miss {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Missing => Miss::Refused("no file at this path"),
            OpenError::Outside => Miss::Refused("path resolves outside the root through a symbolic link"),
            OpenError::Forbidden => Miss::Forbidden,
            OpenError::Other(e) => Miss::Failed(e),
        }
    }
}

/// `"<size>-<mtime ns>-<inode>"` in hex, with the coding appended for a precompressed sibling.
fn entity_tag(metadata: &std::fs::Metadata, coding: Option<Coding>) -> String {
    let modified = metadata.modified().ok().and_then(|m| m.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(metadata);
    #[cfg(not(unix))]
    let inode = 0u64;
    match coding {
        Some(coding) => format!("\"{:x}-{modified:x}-{inode:x}-{}\"", metadata.len(), coding.token()),
        None => format!("\"{:x}-{modified:x}-{inode:x}\"", metadata.len()),
    }
}

/// The `404` for every path that has nothing to serve, whatever the reason: a client learns
/// nothing about what exists (a hidden file, a link out of the root) from it.
fn not_found(reason: &'static str) -> Response {
    Refusal::mark(response::generated_error(StatusCode::NOT_FOUND, "There is no file at this path."), reason)
}

impl Endpoint<Request, Response> for StaticFiles {
    fn call(&self, req: Request) -> BoxFuture<Response> {
        let files = self.clone();
        Box::pin(async move {
            let (parts, _body) = req.into_parts();
            if files.settings.file_io == FileIo::Inline {
                return files.answer(&parts);
            }
            // Opening, statting and reading block: off the async threads, all in one hop.
            match tokio::task::spawn_blocking(move || files.answer(&parts)).await {
                Ok(res) => res,
                Err(_) => response::generated_error(StatusCode::INTERNAL_SERVER_ERROR, "The file could not be read."),
            }
        })
    }
}
