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
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("strata {}", env!("CARGO_PKG_VERSION")));
    for cmd in ["serve", "check", "explain", "hash-password"] {
        let out = run(&[cmd, "--help"], "");
        assert!(out.status.success(), "{cmd} --help");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: strata"), "{cmd} --help");
    }
}
