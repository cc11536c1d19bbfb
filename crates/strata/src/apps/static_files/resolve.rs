//! From a request path to an open file inside the root, and nothing outside it.
//!
//! Two defences, each enough on its own for what it covers:
//!
//! 1. **The path** is decoded segment by segment (`%20` → space) and refused when a segment is
//!    `.` or `..`, or decodes to one containing `/`, `\` or NUL: whatever normalisation ran
//!    before (the gateway's, or none when the library is used on its own), no segment can climb.
//!    Hidden segments (`.env`, `.git`) are refused unless allowed; `.well-known` (RFC 8615) is
//!    always allowed.
//! 2. **Symbolic links** inside the root may point anywhere. After the file is opened, the path
//!    the kernel actually opened is read back from the descriptor (`/proc/self/fd/N`, one
//!    `readlink`) and must be under the root's canonical path. This checks what was opened, with
//!    no window between check and use, and costs one system call where a `canonicalize` of the
//!    request path costs one per path component (see `benches/static_files.rs`). Where
//!    `/proc` is missing (not Linux, or not mounted), the path is canonicalized instead.

use std::fs::{File, Metadata};
use std::io;
use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;

/// A request path, decoded into a path relative to the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Relative {
    /// The segments joined with the platform's separator; empty for the root itself.
    pub(super) path: PathBuf,
    /// Whether the request path ends with `/` (asks for a directory).
    pub(super) trailing_slash: bool,
    /// Whether the last segment has an extension (`app.js`, not `settings`).
    pub(super) has_extension: bool,
}

/// Why a request path was refused before any file was looked at. The reasons are for people
/// (`strata explain`), never shown to clients.
pub(super) type Refused = &'static str;

/// Decodes `path` (the part below the mount point, starting with `/` or empty).
pub(super) fn relative(path: &str, serve_hidden: bool) -> Result<Relative, Refused> {
    let mut relative = PathBuf::new();
    let mut last = "";
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        let decoded = percent_decode_str(segment).decode_utf8().map_err(|_| "path is not UTF-8 once decoded")?;
        if decoded == "." || decoded == ".." {
            return Err("path has a dot segment");
        }
        if decoded.contains(['/', '\\', '\0']) {
            return Err("path has an encoded slash, backslash or NUL");
        }
        if decoded.starts_with('.') && !serve_hidden && decoded != ".well-known" {
            return Err("path names a hidden file (serve_hidden is off)");
        }
        relative.push(&*decoded);
        last = segment;
    }
    Ok(Relative {
        path: relative,
        trailing_slash: path.ends_with('/'),
        has_extension: last.rfind('.').is_some_and(|dot| dot > 0),
    })
}

/// A file opened inside the root, with its metadata.
#[derive(Debug)]
pub(super) struct Opened {
    pub(super) file: File,
    pub(super) metadata: Metadata,
}

/// Why a file could not be served.
#[derive(Debug)]
pub(super) enum OpenError {
    /// Nothing there (or a path through a file).
    Missing,
    /// It resolves outside the root (through a symbolic link).
    Outside,
    /// The server may not read it.
    Forbidden,
    /// Anything else the file system said.
    Other(io::Error),
}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => OpenError::Missing,
            io::ErrorKind::PermissionDenied => OpenError::Forbidden,
            // ENAMETOOLONG: nothing a client can be served.
            io::ErrorKind::InvalidFilename => OpenError::Missing,
            // ELOOP: a symbolic link loop, or a link where none may be.
            _ if cfg!(target_os = "linux") && e.raw_os_error() == Some(40) => OpenError::Missing,
            _ => OpenError::Other(e),
        }
    }
}

/// Opens `root/relative` (`root` canonical), following symbolic links, and refuses it unless
/// what was opened lies under `root`.
pub(super) fn open_inside(root: &Path, relative: &Path) -> Result<Opened, OpenError> {
    let full = root.join(relative);
    let file = File::open(&full)?;
    if !opened_under(&file, &full, root)? {
        return Err(OpenError::Outside);
    }
    let metadata = file.metadata()?;
    Ok(Opened { file, metadata })
}

/// Whether the file behind `file` (opened from `full`) lies under `root`.
fn opened_under(file: &File, full: &Path, root: &Path) -> io::Result<bool> {
    let real = match opened_path(file) {
        Some(real) => real,
        None => full.canonicalize()?,
    };
    Ok(real.starts_with(root))
}

/// The path the kernel opened for `file`, from `/proc/self/fd` (Linux).
#[cfg(target_os = "linux")]
fn opened_path(file: &File) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()
}

#[cfg(not(target_os = "linux"))]
fn opened_path(_file: &File) -> Option<PathBuf> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(path: &str) -> Result<Relative, Refused> {
        relative(path, false)
    }

    #[test]
    fn paths_decode_into_segments_and_empty_ones_merge() {
        let r = rel("/css//site%20main.css").unwrap();
        assert_eq!(r.path, Path::new("css").join("site main.css"));
        assert!(!r.trailing_slash && r.has_extension);
        let r = rel("/docs/").unwrap();
        assert!(r.trailing_slash && !r.has_extension);
        assert_eq!(rel("").unwrap().path, PathBuf::new());
        assert!(!rel("/app/settings").unwrap().has_extension);
        assert!(rel("/.well-known/security.txt").is_ok());
    }

    #[test]
    fn dot_segments_slashes_nul_and_hidden_files_are_refused() {
        for bad in [
            "/..",
            "/a/../b",
            "/%2e%2e/x",
            "/.%2E/x",
            "/a/.",
            "/a%2fb",
            "/a%5Cb",
            "/a%00",
            "/.env",
            "/a/.git/config",
            "/%ff",
        ] {
            assert!(rel(bad).is_err(), "{bad}");
        }
        assert!(relative("/.env", true).is_ok());
        assert!(relative("/..", true).is_err());
    }

    #[test]
    fn a_symlink_out_of_the_root_is_refused_and_one_within_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("a.txt"), "a").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "s").unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("out.txt")).unwrap();
            std::os::unix::fs::symlink("a.txt", root.join("in.txt")).unwrap();
            std::os::unix::fs::symlink(dir.path(), root.join("up")).unwrap();
        }
        let root = root.canonicalize().unwrap();
        assert!(open_inside(&root, Path::new("a.txt")).is_ok());
        assert!(matches!(open_inside(&root, Path::new("nope.txt")), Err(OpenError::Missing)));
        assert!(matches!(open_inside(&root, Path::new("a.txt/x")), Err(OpenError::Missing)));
        #[cfg(unix)]
        {
            assert!(matches!(open_inside(&root, Path::new("out.txt")), Err(OpenError::Outside)));
            assert!(matches!(open_inside(&root, Path::new("up/secret.txt")), Err(OpenError::Outside)));
            assert!(open_inside(&root, Path::new("in.txt")).is_ok());
        }
    }
}
