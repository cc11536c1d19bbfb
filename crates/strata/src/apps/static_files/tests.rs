use std::path::Path;

use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;

use super::*;
use crate::http::{GeneratedError, Stack};

/// A root with a few files, directories, a hidden file and a precompressed sibling.
fn site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("hello.txt"), "hello, world\n").unwrap();
    std::fs::write(root.join("index.html"), "<h1>home</h1>").unwrap();
    std::fs::write(root.join("app.js"), "console.log('plain')").unwrap();
    std::fs::write(root.join("app.js.br"), "BROTLI").unwrap();
    std::fs::write(root.join("app.js.gz"), "GZIP").unwrap();
    std::fs::write(root.join(".env"), "SECRET=1").unwrap();
    std::fs::create_dir(root.join("docs")).unwrap();
    std::fs::write(root.join("docs/index.html"), "<h1>docs</h1>").unwrap();
    std::fs::create_dir(root.join("empty")).unwrap();
    std::fs::create_dir(root.join(".well-known")).unwrap();
    std::fs::write(root.join(".well-known/security.txt"), "Contact: x").unwrap();
    dir
}

fn files(root: &Path) -> StaticFilesBuilder {
    StaticFiles::builder(root)
}

fn get(files: &StaticFiles, path: &str, headers: &[(&'static str, &str)]) -> Response {
    request(files, Method::GET, path, headers)
}

fn request(files: &StaticFiles, method: Method, path: &str, headers: &[(&'static str, &str)]) -> Response {
    let mut req = http::Request::builder().method(method).uri(path);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let (parts, _) = req.body(()).unwrap().into_parts();
    files.answer(&parts)
}

async fn text(res: Response) -> String {
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

fn reason(res: &Response) -> Option<String> {
    res.extensions().get::<Refusal>().map(|r| r.reason.to_string())
}

#[tokio::test]
async fn a_file_is_served_with_its_type_length_and_validators() {
    let dir = site();
    let files = files(dir.path()).build().unwrap();
    let res = get(&files, "/hello.txt", &[]);
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "text/plain; charset=utf-8");
    assert_eq!(res.headers()[header::CONTENT_LENGTH], "13");
    assert_eq!(res.headers()[header::ACCEPT_RANGES], "bytes");
    let etag = res.headers()[header::ETAG].to_str().unwrap().to_string();
    assert!(etag.starts_with("\"d-") && etag.ends_with('"'), "{etag}");
    assert!(res.headers().contains_key(header::LAST_MODIFIED));
    assert!(!res.headers().contains_key(header::VARY));
    assert_eq!(text(res).await, "hello, world\n");
}

#[tokio::test]
async fn head_describes_the_file_without_a_body() {
    let dir = site();
    let files = files(dir.path()).build().unwrap();
    let res = request(&files, Method::HEAD, "/hello.txt", &[("range", "bytes=0-1")]);
    assert_eq!(res.status(), StatusCode::OK, "HEAD ignores Range");
    assert_eq!(res.headers()[header::CONTENT_LENGTH], "13");
    assert_eq!(text(res).await, "");
    let res = request(&files, Method::POST, "/hello.txt", &[]);
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers()[header::ALLOW], "GET, HEAD");
    assert!(res.extensions().get::<GeneratedError>().is_some());
}

#[tokio::test]
async fn conditional_requests_answer_304_and_412() {
    let dir = site();
    let files = files(dir.path()).cache_control(HeaderValue::from_static("max-age=60")).build().unwrap();
    let first = get(&files, "/hello.txt", &[]);
    let etag = first.headers()[header::ETAG].to_str().unwrap().to_string();
    let modified = first.headers()[header::LAST_MODIFIED].to_str().unwrap().to_string();
    let res = get(&files, "/hello.txt", &[("if-none-match", &etag)]);
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(res.headers()[header::ETAG], etag.as_str());
    assert_eq!(res.headers()[header::CACHE_CONTROL], "max-age=60");
    assert!(!res.headers().contains_key(header::CONTENT_LENGTH));
    assert_eq!(text(res).await, "");
    assert_eq!(get(&files, "/hello.txt", &[("if-modified-since", &modified)]).status(), StatusCode::NOT_MODIFIED);
    // If-None-Match wins over If-Modified-Since.
    let both = [("if-none-match", "\"other\""), ("if-modified-since", modified.as_str())];
    assert_eq!(get(&files, "/hello.txt", &both).status(), StatusCode::OK);
    assert_eq!(get(&files, "/hello.txt", &[("if-match", "\"other\"")]).status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(get(&files, "/hello.txt", &[("if-match", &etag)]).status(), StatusCode::OK);
}

#[tokio::test]
async fn ranges_answer_206_416_and_respect_if_range() {
    let dir = site();
    let files = files(dir.path()).build().unwrap();
    let res = get(&files, "/hello.txt", &[("range", "bytes=0-4")]);
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.headers()[header::CONTENT_RANGE], "bytes 0-4/13");
    assert_eq!(res.headers()[header::CONTENT_LENGTH], "5");
    assert_eq!(text(res).await, "hello");
    let res = get(&files, "/hello.txt", &[("range", "bytes=-6")]);
    assert_eq!(res.headers()[header::CONTENT_RANGE], "bytes 7-12/13");
    assert_eq!(text(res).await, "world\n");
    let res = get(&files, "/hello.txt", &[("range", "bytes=7-")]);
    assert_eq!(text(res).await, "world\n");
    let res = get(&files, "/hello.txt", &[("range", "bytes=13-")]);
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(res.headers()[header::CONTENT_RANGE], "bytes */13");
    let res = get(&files, "/hello.txt", &[("range", "bytes=0-1,3-4")]);
    assert_eq!(res.status(), StatusCode::OK, "several ranges: the whole file");
    let res = get(&files, "/hello.txt", &[("range", "bytes=0-4"), ("if-range", "\"stale\"")]);
    assert_eq!(res.status(), StatusCode::OK, "If-Range for another version: the whole file");
    let etag = get(&files, "/hello.txt", &[]).headers()[header::ETAG].to_str().unwrap().to_string();
    let res = get(&files, "/hello.txt", &[("range", "bytes=0-4"), ("if-range", &etag)]);
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
}

#[tokio::test]
async fn precompressed_siblings_follow_accept_encoding_with_their_own_tags() {
    let dir = site();
    let files = files(dir.path()).precompressed(true).build().unwrap();
    let plain = get(&files, "/app.js", &[]);
    assert_eq!(plain.headers()[header::VARY], "Accept-Encoding");
    assert!(!plain.headers().contains_key(header::CONTENT_ENCODING));
    let br = get(&files, "/app.js", &[("accept-encoding", "gzip, br")]);
    assert_eq!(br.headers()[header::CONTENT_ENCODING], "br");
    assert_eq!(br.headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
    let br_tag = br.headers()[header::ETAG].to_str().unwrap().to_string();
    assert!(br_tag.ends_with("-br\""), "{br_tag}");
    assert_ne!(br_tag, plain.headers()[header::ETAG]);
    assert_eq!(text(br).await, "BROTLI");
    let gz = get(&files, "/app.js", &[("accept-encoding", "br;q=0.5, gzip")]);
    assert_eq!(gz.headers()[header::CONTENT_ENCODING], "gzip");
    assert_eq!(text(gz).await, "GZIP");
    // zstd is accepted but there is no .zst: the next accepted coding.
    let res = get(&files, "/app.js", &[("accept-encoding", "zstd, gzip;q=0.1")]);
    assert_eq!(res.headers()[header::CONTENT_ENCODING], "gzip");
    let res = get(&files, "/app.js", &[("accept-encoding", "br;q=0, gzip;q=0")]);
    assert_eq!(text(res).await, "console.log('plain')");
    // Off: the siblings are ordinary files, never chosen for the original's path.
    let off = self::files(dir.path()).build().unwrap();
    let res = get(&off, "/app.js", &[("accept-encoding", "br")]);
    assert!(!res.headers().contains_key(header::CONTENT_ENCODING));
}

#[tokio::test]
async fn directories_redirect_then_serve_their_index_and_are_never_listed() {
    let dir = site();
    let files = files(dir.path()).mount_path("/assets").build().unwrap();
    let res = get(&files, "/assets/docs?x=1", &[]);
    assert_eq!(res.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(res.headers()[header::LOCATION], "/assets/docs/?x=1");
    assert_eq!(get(&files, "/assets", &[]).headers()[header::LOCATION], "/assets/");
    assert_eq!(text(get(&files, "/assets/docs/", &[])).await, "<h1>docs</h1>");
    assert_eq!(text(get(&files, "/assets/", &[])).await, "<h1>home</h1>");
    assert_eq!(get(&files, "/assets/empty/", &[]).status(), StatusCode::NOT_FOUND);
    assert_eq!(get(&files, "/assetsx/hello.txt", &[]).status(), StatusCode::NOT_FOUND);
    assert_eq!(get(&files, "/hello.txt", &[]).status(), StatusCode::NOT_FOUND);
    assert_eq!(get(&files, "/assets/hello.txt/", &[]).status(), StatusCode::NOT_FOUND);
    let no_index = self::files(dir.path()).index(false).build().unwrap();
    assert_eq!(get(&no_index, "/docs/", &[]).status(), StatusCode::NOT_FOUND);
    assert_eq!(get(&no_index, "/docs", &[]).status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_spa_fallback_serves_extensionless_paths_only() {
    let dir = site();
    let files = files(dir.path()).spa_fallback("index.html").build().unwrap();
    let res = get(&files, "/app/settings", &[]);
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(text(res).await, "<h1>home</h1>");
    assert_eq!(get(&files, "/missing.js", &[]).status(), StatusCode::NOT_FOUND);
    assert_eq!(get(&files, "/.env", &[]).status(), StatusCode::NOT_FOUND, "refused paths never fall back");
}

#[tokio::test]
async fn traversal_hidden_files_and_escaping_links_are_404s_with_reasons() {
    let dir = site();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "secret").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
    let files = files(dir.path()).build().unwrap();
    for path in ["/../hello.txt", "/%2e%2e/hello.txt", "/docs/%2E%2E/%2e%2e/etc/passwd", "/a%2f..%2f..%2fetc", "/.env"]
    {
        let res = get(&files, path, &[]);
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(reason(&res).is_some(), "{path}");
    }
    #[cfg(unix)]
    {
        let res = get(&files, "/link/secret.txt", &[]);
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert_eq!(reason(&res).as_deref(), Some("path resolves outside the root through a symbolic link"));
    }
    assert_eq!(text(get(&files, "/.well-known/security.txt", &[])).await, "Contact: x");
    let hidden = self::files(dir.path()).serve_hidden(true).build().unwrap();
    assert_eq!(text(get(&hidden, "/.env", &[])).await, "SECRET=1");
}

#[tokio::test]
async fn large_files_stream_in_chunks_and_ranges_of_them_too() {
    for io in [FileIo::Inline, FileIo::BlockingPool] {
        large_file_streams_in_chunks(io).await;
    }
}

async fn large_file_streams_in_chunks(io: FileIo) {
    let dir = tempfile::tempdir().unwrap();
    let content: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("big.bin"), &content).unwrap();
    let files = StaticFiles::builder(dir.path()).chunk_size(MIN_CHUNK_SIZE).file_io(io).build().unwrap();
    let service = Stack::new().serve(files);
    let res = service.call(http::Request::get("/big.bin").body(Body::empty()).unwrap()).await;
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/octet-stream");
    let mut body = res.into_body();
    let mut received = Vec::new();
    let mut frames = 0;
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        assert!(data.len() <= MIN_CHUNK_SIZE);
        received.extend_from_slice(&data);
        frames += 1;
    }
    assert_eq!(received, content);
    assert_eq!(frames, 100_000usize.div_ceil(MIN_CHUNK_SIZE));
    let req = http::Request::get("/big.bin").header("range", "bytes=5000-60000").body(Body::empty()).unwrap();
    let res = service.call(req).await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), &content[5000..=60000]);
}

#[test]
fn bad_settings_are_errors_naming_their_field() {
    let dir = site();
    let field = |builder: StaticFilesBuilder| builder.build().unwrap_err().field;
    assert_eq!(field(StaticFiles::builder(dir.path().join("nope"))), Some("root"));
    assert_eq!(field(StaticFiles::builder(dir.path().join("hello.txt"))), Some("root"));
    assert_eq!(field(files(dir.path()).mount_path("assets")), Some("mount_path"));
    assert_eq!(field(files(dir.path()).spa_fallback("../x.html")), Some("spa_fallback"));
    assert_eq!(field(files(dir.path()).spa_fallback("missing.html")), Some("spa_fallback"));
    assert_eq!(field(files(dir.path()).spa_fallback("docs")), Some("spa_fallback"));
    assert_eq!(field(files(dir.path()).chunk_size(10)), Some("chunk_size"));
    assert_eq!(files(dir.path()).mount_path("/assets/").build().unwrap().settings.mount_path, "/assets");
}

#[cfg(feature = "config")]
#[test]
fn the_config_table_resolves_its_root_and_parses_its_header() {
    let dir = site();
    let ctx = crate::middleware::BuildContext { base_dir: dir.path().to_path_buf(), ..Default::default() };
    let config = StaticFilesConfig { cache_control: Some("public, max-age=60".into()), ..StaticFilesConfig::root(".") };
    let files = StaticFiles::from_config(config, &ctx).unwrap();
    assert_eq!(files.root(), dir.path().canonicalize().unwrap());
    let bad = StaticFilesConfig { cache_control: Some("a\nb".into()), ..StaticFilesConfig::root(".") };
    assert_eq!(StaticFiles::from_config(bad, &ctx).unwrap_err().field, Some("cache_control"));
    assert_eq!(StaticFiles::from_config(StaticFilesConfig::root(""), &ctx).unwrap_err().field, Some("root"));
}
