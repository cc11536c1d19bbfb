//! [`StaticFilesBuilder`]: typed settings, checked once in [`StaticFilesBuilder::build`].

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use http::HeaderValue;

use super::resolve::{OpenError, open_inside};
use super::{FileIo, Settings, StaticFiles};
use crate::middleware::ConfigError;

/// The default size of each read of a large file: large enough that a 1 GiB file is 8192 reads,
/// small enough that a thousand concurrent downloads hold 128 MiB.
pub const DEFAULT_CHUNK_SIZE: usize = 128 * 1024;
/// The smallest read [`StaticFilesBuilder::chunk_size`] accepts (one page).
pub const MIN_CHUNK_SIZE: usize = 4 * 1024;
/// The largest read [`StaticFilesBuilder::chunk_size`] accepts.
pub const MAX_CHUNK_SIZE: usize = 8 * 1024 * 1024;

/// Builds a [`StaticFiles`]; see [`StaticFiles::builder`].
#[derive(Clone, Debug)]
pub struct StaticFilesBuilder {
    root: PathBuf,
    mount_path: String,
    index: bool,
    spa_fallback: Option<PathBuf>,
    precompressed: bool,
    serve_hidden: bool,
    cache_control: Option<HeaderValue>,
    chunk_size: usize,
    file_io: FileIo,
}

impl StaticFilesBuilder {
    pub(super) fn new(root: PathBuf) -> Self {
        StaticFilesBuilder {
            root,
            mount_path: "/".to_string(),
            index: true,
            spa_fallback: None,
            precompressed: false,
            serve_hidden: false,
            cache_control: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            file_io: FileIo::default(),
        }
    }

    /// The path the files are served under (default `/`): `/assets` serves `root/app.js` at
    /// `/assets/app.js`, and answers paths outside `/assets` with 404. Set it rather than strip the
    /// prefix before the request reaches the files, so that directory redirects (`/assets` →
    /// `/assets/`) point where the client can follow.
    pub fn mount_path(mut self, path: impl Into<String>) -> Self {
        self.mount_path = path.into();
        self
    }

    /// Whether a directory is served by its `index.html` (default `true`): `/docs/` serves
    /// `docs/index.html`, and `/docs` is redirected (`308`) to `/docs/` so relative links in the
    /// page resolve. Off, a directory is a 404. Directories are never listed.
    pub fn index(mut self, index: bool) -> Self {
        self.index = index;
        self
    }

    /// A file (relative to the root, e.g. `index.html`) served with `200` for a path that has no
    /// file, for single-page apps that route in the browser (`/app/settings` → the app's
    /// `index.html`). Only for paths whose last segment has no extension: a missing `/app.js` or
    /// `/logo.png` stays a 404 instead of being answered with HTML the browser cannot use.
    pub fn spa_fallback(mut self, file: impl Into<PathBuf>) -> Self {
        self.spa_fallback = Some(file.into());
        self
    }

    /// Whether precompressed siblings are served (default `false`): for `app.js`, the first of
    /// `app.js.br`, `app.js.zst`, `app.js.gz` that exists and the client's `Accept-Encoding`
    /// accepts (its weights first, then that order), with `Content-Encoding` and its own entity tag.
    /// Every response then carries `Vary: Accept-Encoding`.
    pub fn precompressed(mut self, precompressed: bool) -> Self {
        self.precompressed = precompressed;
        self
    }

    /// Whether files and directories whose name starts with `.` are served (default `false`: a
    /// 404, so `.git/` or `.env` left in the root stay private). `.well-known` is always served.
    pub fn serve_hidden(mut self, serve_hidden: bool) -> Self {
        self.serve_hidden = serve_hidden;
        self
    }

    /// A `Cache-Control` header for every file served (and its `304`s); none by default, which
    /// leaves caches to revalidate with the entity tag.
    pub fn cache_control(mut self, value: HeaderValue) -> Self {
        self.cache_control = Some(value);
        self
    }

    /// The size of each read of a file larger than one read (default [`DEFAULT_CHUNK_SIZE`]),
    /// between [`MIN_CHUNK_SIZE`] and [`MAX_CHUNK_SIZE`]. Files up to this size are read at once.
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = bytes;
        self
    }

    /// Where files are opened and read (default [`FileIo::Inline`]).
    pub fn file_io(mut self, io: FileIo) -> Self {
        self.file_io = io;
        self
    }

    /// Checks the settings: the root is an existing directory (its canonical path is kept, so a
    /// symbolic link to it may be replaced later without effect), the mount path a plain absolute
    /// path, the fallback a file inside the root, the chunk size within bounds.
    pub fn build(self) -> Result<StaticFiles, ConfigError> {
        let root = self
            .root
            .canonicalize()
            .map_err(|e| ConfigError::field("root", format!("`{}`: {e}", self.root.display())))?;
        if !root.is_dir() {
            return Err(ConfigError::field("root", format!("`{}`: expected a directory", self.root.display())));
        }
        let mount = &self.mount_path;
        if !mount.starts_with('/') || mount.contains(['?', '#']) || mount.contains("//") {
            return Err(ConfigError::field(
                "mount_path",
                format!("`{mount}`: expected an absolute path such as \"/assets\""),
            ));
        }
        let mount_path = match mount.trim_end_matches('/') {
            "" => "/".to_string(),
            trimmed => trimmed.to_string(),
        };
        if let Some(fallback) = &self.spa_fallback {
            let plain =
                !fallback.as_os_str().is_empty() && fallback.components().all(|c| matches!(c, Component::Normal(_)));
            if !plain {
                return Err(ConfigError::field(
                    "spa_fallback",
                    format!("`{}`: expected a file path relative to the root, without `..`", fallback.display()),
                ));
            }
            check_fallback(&root, fallback)?;
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(ConfigError::field(
                "chunk_size",
                format!("{}: expected between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} bytes", self.chunk_size),
            ));
        }
        Ok(StaticFiles {
            settings: Arc::new(Settings {
                root,
                mount_path,
                index: self.index,
                spa_fallback: self.spa_fallback,
                precompressed: self.precompressed,
                serve_hidden: self.serve_hidden,
                cache_control: self.cache_control,
                chunk_size: self.chunk_size,
                file_io: self.file_io,
            }),
        })
    }
}

/// The fallback must be a readable file inside the root now: a typo is found at load time, not
/// by the first visitor of a deep link.
fn check_fallback(root: &Path, fallback: &Path) -> Result<(), ConfigError> {
    let shown = fallback.display();
    match open_inside(root, fallback) {
        Ok(opened) if opened.metadata.is_file() => Ok(()),
        Ok(_) => Err(ConfigError::field("spa_fallback", format!("`{shown}`: expected a file, found a directory"))),
        Err(OpenError::Outside) => {
            Err(ConfigError::field("spa_fallback", format!("`{shown}`: resolves outside the root")))
        }
        Err(OpenError::Missing) => {
            Err(ConfigError::field("spa_fallback", format!("`{shown}`: no such file in `{}`", root.display())))
        }
        Err(OpenError::Forbidden) => Err(ConfigError::field("spa_fallback", format!("`{shown}`: permission denied"))),
        Err(OpenError::Other(e)) => Err(ConfigError::field("spa_fallback", format!("`{shown}`: {e}"))),
    }
}
