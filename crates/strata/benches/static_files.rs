//! What serving a file costs per request, and what the symlink check costs.
//!
//! | case | request | answer |
//! | --- | --- | --- |
//! | `static/4k` | `GET /4k.txt` | `200`, 4 KiB read in the opening blocking call |
//! | `static/4k-304` | `GET /4k.txt` + the file's `If-None-Match` | `304`, no read |
//! | `static/4k-br` | `GET /4k.txt` + `Accept-Encoding: br` (precompressed on, a `.br` sibling) | `200`, the sibling |
//! | `static/1m` | `GET /1m.bin` | `200`, 1 MiB streamed in 128 KiB chunks |
//! | `static/404` | `GET /missing.txt` | `404` |
//! | `escape-check/open+proc-fd` | open a file 4 directories deep, read its path back from `/proc/self/fd` | |
//! | `escape-check/open+canonicalize` | open the same file, `canonicalize` its path | |
//! | `escape-check/open-only` | open the same file, no check: the floor | |
//!
//! The `static/*` cases run through `Stack::new().serve(files)` on a multi-threaded runtime (the
//! files are opened on its blocking pool, as when served), body read to its end. The
//! `escape-check` cases are the two ways `StaticFiles` could verify that a path does not leave
//! the root through a symbolic link: it uses the first, and falls back to the second without
//! `/proc`.
//!
//! Run with `cargo bench -p strata-http --bench static_files`.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use http::header;
use http_body_util::BodyExt;
use strata::apps::StaticFiles;
use strata::http::{Body, Request, Service, Stack};
use tokio::runtime::Runtime;

fn site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("4k.txt"), "x".repeat(4096)).unwrap();
    std::fs::write(dir.path().join("4k.txt.br"), "y".repeat(512)).unwrap();
    std::fs::write(dir.path().join("1m.bin"), vec![7u8; 1 << 20]).unwrap();
    let deep = dir.path().join("a/b/c/d");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("file.txt"), "deep").unwrap();
    dir
}

fn run(rt: &Runtime, service: &Service, req: impl Fn() -> Request) -> usize {
    rt.block_on(async {
        let res = service.call(req()).await;
        res.into_body().collect().await.unwrap().to_bytes().len()
    })
}

fn get(path: &str) -> http::request::Builder {
    http::Request::get(path)
}

fn bench(c: &mut Criterion) {
    let dir = site();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let service = Stack::new().serve(StaticFiles::builder(dir.path()).precompressed(true).build().unwrap());
    let etag = rt.block_on(service.call(get("/4k.txt").body(Body::empty()).unwrap())).headers()[header::ETAG].clone();

    let mut group = c.benchmark_group("static");
    group.bench_function("4k", |b| b.iter(|| run(&rt, &service, || get("/4k.txt").body(Body::empty()).unwrap())));
    group.bench_function("4k-304", |b| {
        b.iter(|| {
            run(&rt, &service, || {
                get("/4k.txt").header(header::IF_NONE_MATCH, etag.clone()).body(Body::empty()).unwrap()
            })
        })
    });
    group.bench_function("4k-br", |b| {
        b.iter(|| {
            run(&rt, &service, || get("/4k.txt").header(header::ACCEPT_ENCODING, "br").body(Body::empty()).unwrap())
        })
    });
    group.bench_function("1m", |b| b.iter(|| run(&rt, &service, || get("/1m.bin").body(Body::empty()).unwrap())));
    group.bench_function("404", |b| b.iter(|| run(&rt, &service, || get("/missing.txt").body(Body::empty()).unwrap())));
    group.finish();

    let root = dir.path().canonicalize().unwrap();
    let deep = root.join("a/b/c/d/file.txt");
    let mut group = c.benchmark_group("escape-check");
    group.bench_function("open+proc-fd", |b| {
        b.iter(|| {
            let file = std::fs::File::open(black_box(&deep)).unwrap();
            let real = proc_fd_path(&file).unwrap_or_else(|| deep.clone());
            black_box(real.starts_with(&root))
        })
    });
    group.bench_function("open+canonicalize", |b| {
        b.iter(|| {
            let file = std::fs::File::open(black_box(&deep)).unwrap();
            let real = black_box(&deep).canonicalize().unwrap();
            black_box((file, real.starts_with(&root)))
        })
    });
    group.bench_function("open-only", |b| {
        b.iter(|| black_box(std::fs::File::open(black_box(Path::new(&deep))).unwrap()))
    });
    group.finish();
}

#[cfg(target_os = "linux")]
fn proc_fd_path(file: &std::fs::File) -> Option<std::path::PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()
}

#[cfg(not(target_os = "linux"))]
fn proc_fd_path(_file: &std::fs::File) -> Option<std::path::PathBuf> {
    None
}

criterion_group!(benches, bench);
criterion_main!(benches);
