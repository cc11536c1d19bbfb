//! `static` routes: the real binary serving a directory, driven by curl (ranges, conditional
//! requests, precompressed siblings, traversal attempts) and by a client that reads a 1 GiB file
//! to its end while the server's memory is watched.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Strata, peak_rss_kib, run, write_config};

/// A directory to serve, beside a file that must never be served.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let public = dir.path().join("public");
        std::fs::create_dir_all(public.join("docs")).unwrap();
        std::fs::write(public.join("hello.txt"), "hello, static world\n").unwrap();
        std::fs::write(public.join("app.js"), "console.log('plain');\n").unwrap();
        std::fs::write(public.join("app.js.br"), "BROTLI-BYTES").unwrap();
        std::fs::write(public.join("app.js.gz"), "GZIP-BYTES").unwrap();
        std::fs::write(public.join("index.html"), "<h1>app shell</h1>").unwrap();
        std::fs::write(public.join("docs/index.html"), "<h1>docs</h1>").unwrap();
        std::fs::write(public.join(".env"), "SECRET_IN_DOTFILE").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "SECRET_BESIDE_ROOT").unwrap();
        std::os::unix::fs::symlink("/etc", public.join("etc")).unwrap();
        Site { dir }
    }

    fn public(&self) -> PathBuf {
        self.dir.path().join("public")
    }
}

/// The gateway serving `site` at `/assets` with `options` added to the `static` table.
fn serve(site: &Site, options: &str) -> Strata {
    let root = site.public().display().to_string();
    Strata::start(Some(&format!("[[route]]\nprefix = \"/assets\"\nstatic = {{ root = \"{root}\"{options} }}\n")))
}

/// curl's answer: the status line and headers (lower-cased names), and the body.
struct Curled {
    head: String,
    body: Vec<u8>,
}

impl Curled {
    fn status(&self) -> u16 {
        self.head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line")
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `curl --path-as-is` (the path is sent exactly as written, `..` included) with `args`.
fn curl(strata: &Strata, path: &str, args: &[&str]) -> Curled {
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("head");
    let out = Command::new("curl")
        .args(["-s", "--path-as-is", "--max-time", "20", "-D"])
        .arg(&head)
        .args(args)
        .arg(strata.url(path))
        .output()
        .expect("curl runs (apt-get install curl)");
    assert!(out.status.success(), "curl {path}: {}", String::from_utf8_lossy(&out.stderr));
    let head = std::fs::read_to_string(&head).unwrap();
    Curled { head, body: out.stdout }
}

#[test]
fn curl_gets_files_ranges_304s_and_the_br_sibling() {
    let site = Site::new();
    let strata = serve(&site, ", precompressed = true, cache_control = \"public, max-age=60\"");

    let full = curl(&strata, "/assets/hello.txt", &[]);
    assert_eq!(full.status(), 200, "{}", full.head);
    assert_eq!(full.text(), "hello, static world\n");
    assert_eq!(full.header("content-type").as_deref(), Some("text/plain; charset=utf-8"));
    assert_eq!(full.header("content-length").as_deref(), Some("20"));
    assert_eq!(full.header("cache-control").as_deref(), Some("public, max-age=60"));
    assert_eq!(full.header("vary").as_deref(), Some("Accept-Encoding"));
    let etag = full.header("etag").expect("an ETag");
    assert!(etag.starts_with('"') && !etag.starts_with("W/"), "a strong tag: {etag}");
    let modified = full.header("last-modified").expect("Last-Modified");

    let part = curl(&strata, "/assets/hello.txt", &["-r", "7-12"]);
    assert_eq!(part.status(), 206, "{}", part.head);
    assert_eq!(part.header("content-range").as_deref(), Some("bytes 7-12/20"));
    assert_eq!(part.text(), "static");
    let tail = curl(&strata, "/assets/hello.txt", &["-r", "-6"]);
    assert_eq!(tail.text(), "world\n");
    let past = curl(&strata, "/assets/hello.txt", &["-r", "100-"]);
    assert_eq!(past.status(), 416);
    assert_eq!(past.header("content-range").as_deref(), Some("bytes */20"));
    let stale = curl(&strata, "/assets/hello.txt", &["-r", "0-4", "-H", "If-Range: \"stale\""]);
    assert_eq!((stale.status(), stale.body.len()), (200, 20), "If-Range for another version: the whole file");

    let not_modified = curl(&strata, "/assets/hello.txt", &["-H", &format!("If-None-Match: {etag}")]);
    assert_eq!(not_modified.status(), 304, "{}", not_modified.head);
    assert!(not_modified.body.is_empty());
    assert_eq!(not_modified.header("etag"), Some(etag.clone()));
    let since = curl(&strata, "/assets/hello.txt", &["-H", &format!("If-Modified-Since: {modified}")]);
    assert_eq!(since.status(), 304);
    let changed = curl(&strata, "/assets/hello.txt", &["-H", "If-None-Match: \"other\""]);
    assert_eq!(changed.status(), 200);

    let head = curl(&strata, "/assets/hello.txt", &["-I"]);
    assert_eq!((head.status(), head.header("content-length").as_deref()), (200, Some("20")));
    // With `-I`, curl prints the head on stdout too: nothing else may follow it.
    assert!(!head.text().contains("hello"), "HEAD sent a body: {}", head.text());

    let br = curl(&strata, "/assets/app.js", &["-H", "Accept-Encoding: gzip, br"]);
    assert_eq!(br.header("content-encoding").as_deref(), Some("br"), "{}", br.head);
    assert_eq!(br.text(), "BROTLI-BYTES");
    assert_eq!(br.header("content-type").as_deref(), Some("text/javascript; charset=utf-8"));
    let gz = curl(&strata, "/assets/app.js", &["-H", "Accept-Encoding: br;q=0.1, gzip"]);
    assert_eq!(gz.text(), "GZIP-BYTES");
    let plain = curl(&strata, "/assets/app.js", &[]);
    assert_eq!(plain.text(), "console.log('plain');\n");
    assert!(plain.header("content-encoding").is_none());
    let tags = [br.header("etag"), gz.header("etag"), plain.header("etag")];
    assert!(tags[0] != tags[1] && tags[1] != tags[2] && tags[0] != tags[2], "one tag per encoding: {tags:?}");
    let br_again = curl(
        &strata,
        "/assets/app.js",
        &["-H", "Accept-Encoding: br", "-H", &format!("If-None-Match: {}", tags[0].clone().unwrap())],
    );
    assert_eq!(br_again.status(), 304);
    let plain_with_br_tag =
        curl(&strata, "/assets/app.js", &["-H", &format!("If-None-Match: {}", tags[0].clone().unwrap())]);
    assert_eq!(plain_with_br_tag.status(), 200, "the br tag does not validate the plain file");
}

#[test]
fn traversal_hidden_files_and_a_symlink_to_etc_are_refused() {
    let site = Site::new();
    let strata = serve(&site, "");
    assert_eq!(curl(&strata, "/assets/hello.txt", &[]).status(), 200);
    for path in [
        "/assets/../Cargo.toml",
        "/assets/../secret.txt",
        "/assets/%2e%2e/secret.txt",
        "/assets/%2E%2E/%2e%2e/etc/passwd",
        "/assets/..%2fsecret.txt",
        "/assets/etc/passwd",
        "/assets/etc/hostname",
        "/assets/.env",
        "/assets/docs/../../secret.txt",
    ] {
        let res = curl(&strata, path, &[]);
        assert!(matches!(res.status(), 400 | 403 | 404), "{path}: {}", res.head);
        let text = res.text();
        assert!(!text.contains("SECRET") && !text.contains("root:"), "{path} leaked: {text}");
    }
}

#[test]
fn directories_redirect_to_their_index_and_the_spa_fallback_serves_app_paths() {
    let site = Site::new();
    let strata = serve(&site, ", spa_fallback = \"index.html\"");
    let moved = curl(&strata, "/assets/docs?v=1", &[]);
    assert_eq!(moved.status(), 308);
    assert_eq!(moved.header("location").as_deref(), Some("/assets/docs/?v=1"));
    assert_eq!(curl(&strata, "/assets", &[]).header("location").as_deref(), Some("/assets/"));
    assert_eq!(curl(&strata, "/assets/docs/", &[]).text(), "<h1>docs</h1>");
    let followed = curl(&strata, "/assets/docs", &["-L"]);
    assert_eq!(followed.text(), "<h1>docs</h1>");
    let app = curl(&strata, "/assets/settings/profile", &[]);
    assert_eq!((app.status(), app.text().as_str()), (200, "<h1>app shell</h1>"));
    assert_eq!(curl(&strata, "/assets/missing.js", &[]).status(), 404, "a path with an extension never falls back");
    assert_eq!(curl(&strata, "/assets/hello.txt", &["-X", "POST"]).status(), 405);
}

#[test]
fn a_1_gib_sparse_file_streams_to_the_end_with_flat_memory() {
    let site = Site::new();
    const SIZE: u64 = 1 << 30;
    let big = std::fs::File::create(site.public().join("big.bin")).unwrap();
    big.set_len(SIZE).unwrap();
    drop(big);
    let strata = serve(&site, "");
    let pid = strata.child.id();
    // Warm up: the runtime's threads, the blocking pool and the allocator reach their working size.
    for _ in 0..3 {
        assert_eq!(curl(&strata, "/assets/big.bin", &["-r", "0-1048575", "-o", "/dev/null"]).status(), 206);
    }
    let before = peak_rss_kib(pid);
    let started = Instant::now();
    let out = Command::new("curl")
        .args(["-s", "--max-time", "300", "-o", "/dev/null", "-w", "%{http_code} %{size_download}"])
        .arg(strata.url("/assets/big.bin"))
        .output()
        .unwrap();
    let written = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(written, format!("200 {SIZE}"), "the whole file arrived");
    let after = peak_rss_kib(pid);
    let growth_mib = after.saturating_sub(before) / 1024;
    eprintln!("1 GiB in {:?}; peak RSS {before} KiB → {after} KiB", started.elapsed());
    assert!(growth_mib < 64, "peak RSS grew by {growth_mib} MiB while streaming 1 GiB");
    assert!(started.elapsed() < Duration::from_secs(300));
}

#[test]
fn strata_check_locates_bad_static_values() {
    let site = Site::new();
    let root = site.public().display().to_string();
    let cases = [
        (
            format!("[[route]]\nprefix = \"/\"\nstatic = {{ root = \"{root}\", indx = true }}\n"),
            "3:",
            "unknown field `indx`",
        ),
        (
            format!("[[route]]\nprefix = \"/\"\nstatic = {{ root = \"{root}\", spa_fallback = \"nope.html\" }}\n"),
            // The column of `spa_fallback`: after `static = { root = "…", `.
            &*format!(":3:{}:", "static = { root = \"".len() + root.len() + "\", ".len() + 1),
            "`static.spa_fallback`: `nope.html`: no such file",
        ),
        ("[[route]]\nprefix = \"/\"\nstatic = \"./no-such-dir\"\n".to_string(), ":3:10:", "`static.root`"),
        ("[[route]]\nprefix = \"/\"\nstatic = 3\n".to_string(), ":3:10:", "`static` must be a directory"),
        ("[[route]]\nprefix = \"/\"\napp = \"echo\"\nstatic = \".\"\n".to_string(), ":4:10:", "one target"),
        (
            format!("[[route]]\nprefix = \"/\"\nstatic = \"{root}\"\ntimeout = \"1s\"\n"),
            ":4:11:",
            "`timeout` is an option of upstream routes",
        ),
    ];
    for (text, at, message) in cases {
        let config = write_config(&text);
        let file = config.path.to_str().unwrap();
        let out = run(&["check", "--config", file], "");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}\n{stderr}");
        assert!(
            stderr.contains(file) && stderr.contains(at) && stderr.contains(message),
            "{text}\nwanted {at} {message}\n{stderr}"
        );
    }
}
