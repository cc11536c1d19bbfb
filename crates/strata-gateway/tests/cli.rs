//! The `strata` commands other than serve: check, explain, hash-password, --version, --help.

mod common;

use common::{run, write_config};

const VALID: &str = r#"
[server]
listen = "127.0.0.1:8080"
stack = []

[[route]]
prefix = "/api"
app = "tasks"

[[route]]
prefix = "/"
app = "echo"
"#;

#[test]
fn check_accepts_a_valid_config_and_the_embedded_default() {
    let config = write_config(VALID);
    let out = run(&["check", "--config", config.path.to_str().unwrap()], "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("2 route(s), 0 error(s)"), "{stdout}");
    let out = run(&["check"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn check_rejects_a_broken_config_with_file_line_and_column() {
    let config = write_config(
        "[server]\nlisten = \"127.0.0.1:8080\"\nstack = [\"lgo\"]\n\n[[route]]\nprefix = \"/\"\napp = \"taks\"\n",
    );
    let file = config.path.to_str().unwrap();
    let out = run(&["check", "--config", file], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{file}:3:10: error: no middleware named `lgo`")), "{stderr}");
    assert!(stderr.contains(&format!("{file}:7:7: error: unknown app `taks`")), "{stderr}");
    assert!(stderr.contains("did you mean `tasks`?"), "{stderr}");
    assert!(stderr.contains("2 errors in the config"), "{stderr}");
}

#[test]
fn check_rejects_unknown_kinds_and_keys() {
    let config = write_config(
        "[middleware.x]\nkind = \"no_such_kind\"\n\n[[route]]\nprefix = \"/\"\napp = \"echo\"\nstak = []\n",
    );
    let file = config.path.to_str().unwrap();
    let out = run(&["check", "--config", file], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{file}:7:1: error: unknown field `stak`")), "{stderr}");
    assert!(stderr.contains("did you mean `stack`?"), "{stderr}");

    let config = write_config(
        "[middleware.x]\nkind = \"acess_log\"\n\n[[route]]\nprefix = \"/\"\napp = \"echo\"\nstack = [\"x\"]\n",
    );
    let file = config.path.to_str().unwrap();
    let out = run(&["check", "--config", file], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{file}:2:8: error: unknown middleware kind `acess_log`")), "{stderr}");
}

/// Runs `strata check` on `text`; its exit code and stderr.
fn check(text: &str) -> (Option<i32>, String, String) {
    let config = write_config(text);
    let file = config.path.to_str().unwrap().to_string();
    let out = run(&["check", "--config", &file], "");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned(), file)
}

#[test]
fn check_reports_type_errors_of_every_section_in_one_run() {
    let (code, stderr, file) = check(
        "[server]\nmax_header_bytes = -1\nstack = [\"limit\"]\n\n\
         [middleware.limit]\nkind = \"rate_limit\"\nrate = \"10/s\"\nburst = -5\n\n\
         [[route]]\nprefix = \"/\"\napp = \"echo\"\n",
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{file}:2:20: error: invalid value: integer `-1`")), "{stderr}");
    assert!(stderr.contains(&format!("{file}:8:9: error: invalid value: integer `-5`")), "{stderr}");
    assert!(stderr.contains("2 errors in the config"), "{stderr}");
    // The server section's other keys are still read and checked.
    let (code, stderr, file) =
        check("[server]\nmax_header_bytes = -1\nlisten = \"nowhere\"\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{file}:3:10: error: `listen = \"nowhere\"`")), "{stderr}");
}

#[test]
fn check_rejects_huge_durations_instead_of_serving_panics() {
    let (code, stderr, file) = check(
        "[server]\nshutdown_grace = \"99999999999999999h\"\n\n[[route]]\nprefix = \"/\"\n\
         upstream = \"http://127.0.0.1:9\"\ntimeout = \"99999999999999999999999h\"\n",
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}:2:18: error: `shutdown_grace`: `99999999999999999h`: expected a duration of at most 1h"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}:7:11: error: `timeout`: `99999999999999999999999h`: expected a duration of at most 24h"
        )),
        "{stderr}"
    );
}

#[test]
fn check_rejects_bad_upstream_urls_and_never_prints_a_password() {
    let (code, stderr, file) = check(
        "[[route]]\nprefix = \"/a\"\nupstream = \"http://admin:s3cret@127.0.0.1:8000/\"\n\
         [[route]]\nprefix = \"/b\"\nupstream = \"http://127.0.0.1:99999\"\n\
         [[route]]\nprefix = \"/c\"\nupstream = \"http://127.0.0.1:8000/#top\"\n\
         [[route]]\nprefix = \"/d\"\nupstream = \"unix:///run/app.sock\"\n",
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}:3:12: error: upstream `http://admin:***@127.0.0.1:8000/`: expected no user or password"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("3 | upstream = \"http://admin:***@127.0.0.1:8000/\""),
        "the source line is masked too: {stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:6:12: error: upstream `http://127.0.0.1:99999`: port `99999`")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:9:12: error: upstream `http://127.0.0.1:8000/#top`: expected no `#fragment`")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:12:12: error: upstream `unix:///run/app.sock`: scheme `unix`")),
        "{stderr}"
    );
    assert!(stderr.contains("4 errors in the config"), "{stderr}");
}

#[test]
fn check_rejects_a_middleware_twice_in_one_onion() {
    let (code, stderr, file) = check(
        "[server]\nstack = [\"limit\"]\n\n[middleware.limit]\nkind = \"rate_limit\"\nrate = \"10/s\"\n\n\
         [[route]]\nprefix = \"/\"\napp = \"echo\"\nstack = [\"limit\"]\n",
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}:11:10: error: middleware `limit` is already in this onion: `[server] stack` at line 2, column 10"
        )),
        "{stderr}"
    );
    let (code, stderr, file) = check(
        "[middleware.limit]\nkind = \"rate_limit\"\nrate = \"10/s\"\n\n\
         [[route]]\nprefix = \"/\"\napp = \"echo\"\nstack = [\"limit\", \"limit\"]\n",
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}:8:19: error: middleware `limit` is already in this onion: this `stack` at line 8, column 10"
        )),
        "{stderr}"
    );
}

#[test]
fn check_reports_a_missing_file() {
    let out = run(&["check", "--config", "/nonexistent/strata.toml"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/strata.toml: error: cannot read the config"));
}

#[test]
fn explain_prints_each_route_with_its_target() {
    let config = write_config(VALID);
    let out = run(&["explain", "--config", config.path.to_str().unwrap()], "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let api = stdout.find("route /api").expect("route /api listed");
    let root = stdout.find("route /\n").expect("route / listed");
    assert!(api < root, "routes in file order: {stdout}");
    assert!(stdout[api..root].contains("-> ") && stdout[api..root].contains("app tasks"), "{stdout}");
    assert!(stdout[root..].contains("app echo  — streams server-sent events"), "{stdout}");
}

#[test]
fn hash_password_prints_a_verifiable_argon2id_hash() {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let out = run(&["hash-password"], "correct horse\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hash = String::from_utf8(out.stdout).unwrap();
    let hash = hash.trim();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let parsed = PasswordHash::new(hash).unwrap();
    assert!(argon2::Argon2::default().verify_password(b"correct horse", &parsed).is_ok());
    assert!(argon2::Argon2::default().verify_password(b"correct horse\n", &parsed).is_err());
    let empty = run(&["hash-password"], "");
    assert!(!empty.status.success());
}

#[test]
fn version_and_help() {
    let out = run(&["--version"], "");
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let revision = version
        .strip_prefix(&format!("strata {} (", env!("CARGO_PKG_VERSION")))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("`strata VERSION (REVISION)`: {version}"));
    // The revision of this checkout (its `-dirty` mark may have changed since the build), or
    // `unknown` where git cannot tell.
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(head) if std::env::var_os("STRATA_GIT_REVISION").is_none() => {
            assert!(revision == head || revision == format!("{head}-dirty"), "{revision} is not {head}");
        }
        _ => assert!(!revision.is_empty(), "{version}"),
    }
    for cmd in ["serve", "check", "explain", "hash-password", "init", "completions", "man"] {
        let out = run(&[cmd, "--help"], "");
        assert!(out.status.success(), "{cmd} --help");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: strata"), "{cmd} --help");
    }
}

#[test]
fn completions_for_each_shell_come_from_the_cli_definition() {
    let out = run(&["completions", "bash"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bash = String::from_utf8_lossy(&out.stdout);
    for word in ["serve", "check", "init", "hash-password", "--config", "--listen", "--watch", "complete -F"] {
        assert!(bash.contains(word), "bash completion lacks `{word}`");
    }
    let out = run(&["completions", "zsh"], "");
    let zsh = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && zsh.starts_with("#compdef strata"), "{zsh}");
    assert!(zsh.contains("--config") && zsh.contains("serve"), "{zsh}");
    let out = run(&["completions", "fish"], "");
    let fish = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && fish.contains("complete -c strata"), "{fish}");
    assert!(fish.contains("-l config") && fish.contains("serve"), "{fish}");
    let out = run(&["completions", "tcsh"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'tcsh'"));
}

#[test]
fn man_pages_for_strata_and_each_subcommand() {
    let out = run(&["man"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains(".TH strata 1"), "{page}");
    assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
    // roff escapes `-` as `\-`.
    for sub in ["serve", "check", "explain", "hash\\-password", "init", "completions", "man"] {
        assert!(page.contains(&format!("strata\\-{sub}(1)")), "the page lists `{sub}`: {page}");
    }
    let out = run(&["man", "serve"], "");
    let serve = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && serve.contains(".TH strata-serve 1"), "{serve}");
    assert!(serve.contains("\\fB\\-\\-config\\fR") && serve.contains("\\-\\-watch"), "{serve}");
    let out = run(&["man", "nope"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no subcommand `nope`"));
}

/// Runs `strata ARGS…` in `dir`.
fn run_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::strata_bin()).args(args).current_dir(dir).output().expect("run strata")
}

/// The password `strata init` printed: the indented line after the one announcing it.
fn printed_password(stdout: &str) -> String {
    let mut lines = stdout.lines().skip_while(|l| !l.contains("password (shown this once"));
    let password = lines.find(|l| !l.trim().is_empty() && !l.contains("password")).expect("a password line");
    password.trim().to_string()
}

#[test]
fn init_writes_a_starter_that_checks_without_warnings() {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(dir.path(), &["init"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let file = dir.path().join("strata.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("stack = [\"timing\", \"request_id\", \"log\", \"errors\", \"cors\", \"auth\"]"), "{text}");
    assert!(text.contains("upstream = \"http://127.0.0.1:8000\""), "{text}");
    // The password is printed, never written; the file holds a hash that verifies it.
    let password = printed_password(&stdout);
    assert!(password.len() >= 20 && password.chars().all(|c| c.is_ascii_alphanumeric()), "{password}");
    assert!(!text.contains(&password));
    let hash = text.split("admin = \"").nth(1).and_then(|rest| rest.split('"').next()).expect("admin's hash");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(argon2::Argon2::default().verify_password(password.as_bytes(), &PasswordHash::new(hash).unwrap()).is_ok());
    // Every setting is explained: each key line follows a comment or another key of its group.
    let mut previous = "";
    for line in text.lines() {
        if line.contains(" = ") && !line.starts_with('#') {
            assert!(previous.starts_with('#') || previous.contains(" = "), "`{line}` has no comment above it");
        }
        if !line.trim().is_empty() {
            previous = line;
        }
    }
    let check = run_in(dir.path(), &["check", "--strict", "--config", "strata.toml"]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{report}{}", String::from_utf8_lossy(&check.stderr));
    assert!(report.contains("1 route(s), 0 error(s), 0 warning(s)"), "{report}");
    // Each run draws its own password.
    let again = run_in(dir.path(), &["init", "--output", "other.toml"]);
    assert!(again.status.success());
    assert_ne!(printed_password(&String::from_utf8_lossy(&again.stdout)), password);
}

#[test]
fn init_for_the_tasks_app_serves_with_the_printed_password() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(dir.path(), &["init", "--app", "tasks", "--output", "tasks.toml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(dir.path().join("tasks.toml")).unwrap();
    assert!(text.contains("app = \"tasks\"") && !text.contains("upstream ="), "{text}");
    let check = run_in(dir.path(), &["check", "--strict", "--config", "tasks.toml"]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success() && report.contains("0 error(s), 0 warning(s)"), "{report}");
    let password = printed_password(&stdout);
    let strata = common::Strata::start(Some(&text));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = common::client();
        let anonymous = client.get(strata.url("/tasks")).send().await.unwrap();
        assert_eq!(anonymous.status(), 401);
        let wrong = client.get(strata.url("/tasks")).basic_auth("admin", Some("wrong")).send().await.unwrap();
        assert_eq!(wrong.status(), 401);
        let res = client.get(strata.url("/tasks")).basic_auth("admin", Some(&password)).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers().contains_key("x-request-id") && res.headers().contains_key("x-response-time"));
        // The starter's CORS origin gets its preflight answered before auth.
        let preflight = client
            .request(reqwest::Method::OPTIONS, strata.url("/tasks"))
            .header("origin", "http://localhost:3000")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert_eq!(preflight.status(), 204);
    });
    let out = run_in(dir.path(), &["init", "--app", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!dir.path().join("strata.toml").exists());
}

#[test]
fn init_never_overwrites_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strata.toml");
    std::fs::write(&file, "# mine\n").unwrap();
    for args in [&["init"][..], &["init", "--output", "strata.toml"], &["init", "--app", "tasks"]] {
        let out = run_in(dir.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("strata.toml already exists") && stderr.contains("never overwrites"), "{stderr}");
        assert!(out.stdout.is_empty(), "no password is printed for a file not written");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "# mine\n");
    }
    // A dangling symlink is not followed to create its target either.
    let link = dir.path().join("link.toml");
    std::os::unix::fs::symlink(dir.path().join("elsewhere.toml"), &link).unwrap();
    let out = run_in(dir.path(), &["init", "--output", "link.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!dir.path().join("elsewhere.toml").exists());
    // A directory that does not exist is an error naming the path.
    let out = run_in(dir.path(), &["init", "--output", "missing/strata.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot create missing/strata.toml"));
}
