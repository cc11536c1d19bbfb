//! Puts the git revision the binary was built from into `STRATA_GIT_REVISION`, for `strata --version`.
//!
//! The revision is `git rev-parse --short HEAD`, with `-dirty` when the work tree differs from it.
//! Outside a checkout (a source tarball, a crates.io package), or without git, it is `unknown`: this
//! script never fails the build. Packagers building from a tarball can name the revision with the
//! `STRATA_GIT_REVISION` environment variable.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn main() {
    println!("cargo:rerun-if-env-changed=STRATA_GIT_REVISION");
    let revision = match std::env::var("STRATA_GIT_REVISION") {
        Ok(given) if !given.trim().is_empty() => given.trim().to_string(),
        _ => from_git().unwrap_or_else(|| "unknown".to_string()),
    };
    println!("cargo:rustc-env=STRATA_GIT_REVISION={revision}");
}

/// The revision from git, and the files whose change means it may have changed.
fn from_git() -> Option<String> {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    let git_dir = PathBuf::from(git(&manifest_dir, &["rev-parse", "--absolute-git-dir"])?);
    // Refs of a linked worktree live in the main repository's git directory.
    let common_dir = git(&manifest_dir, &["rev-parse", "--git-common-dir"])
        .and_then(|dir| manifest_dir.join(dir).canonicalize().ok())
        .unwrap_or_else(|| git_dir.clone());
    rerun_if_changed(&git_dir.join("HEAD"));
    let head = std::fs::read_to_string(git_dir.join("HEAD")).unwrap_or_default();
    if let Some(reference) = head.trim().strip_prefix("ref: ") {
        // A ref is a loose file until `git gc` packs it; a commit on a packed ref makes it loose
        // again, which changes its directory.
        let loose = common_dir.join(reference);
        match loose.parent() {
            Some(dir) if !loose.exists() => rerun_if_changed(dir),
            _ => rerun_if_changed(&loose),
        }
        rerun_if_changed(&common_dir.join("packed-refs"));
    }
    // Staging and committing change the index; edits to the sources are watched so that the
    // `-dirty` mark follows them (the binary is rebuilt for those edits anyway).
    rerun_if_changed(&git_dir.join("index"));
    if let Some(crates) = manifest_dir.parent() {
        rerun_if_changed(crates);
    }
    let revision = git(&manifest_dir, &["rev-parse", "--short", "HEAD"])?;
    // `git diff --quiet HEAD` exits 1 when tracked files differ from HEAD, staged or not.
    let dirty = Command::new("git")
        .args(["diff", "--quiet", "HEAD", "--"])
        .current_dir(&manifest_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.code() == Some(1));
    Some(if dirty { format!("{revision}-dirty") } else { revision })
}

/// Runs git in `dir`; its trimmed stdout when it succeeded with some output.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).current_dir(dir).stderr(Stdio::null()).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (output.status.success() && !text.is_empty()).then(|| text.to_string())
}

fn rerun_if_changed(path: &Path) {
    // Cargo counts a missing path as changed on every build, which would rebuild the crate each time.
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
