//! The codings `compression` offers and their levels: a name that means the same intent for every
//! algorithm, or a number on the algorithm's own scale.

use std::fmt;

/// A content coding `compression` can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "config", derive(serde::Deserialize), serde(rename_all = "lowercase"))]
pub enum Algorithm {
    /// Brotli (`br`).
    Br,
    /// Zstandard (`zstd`).
    Zstd,
    /// gzip (`gzip`; clients may also ask for it as `x-gzip`).
    Gzip,
}

impl Algorithm {
    /// The token used in `Accept-Encoding`, `Content-Encoding` and the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Br => "br",
            Algorithm::Zstd => "zstd",
            Algorithm::Gzip => "gzip",
        }
    }

    /// The levels a number may take for this algorithm, and what the named levels mean.
    ///
    /// zstd stops at 19: levels 20–22 use windows larger than the 8 MiB that HTTP's zstd coding
    /// allows (RFC 9659), which browsers refuse to decode.
    pub(super) fn levels(self) -> LevelScale {
        match self {
            Algorithm::Br => LevelScale { min: 0, max: 11, fastest: 1, default: 4, best: 11 },
            Algorithm::Zstd => LevelScale { min: 1, max: 19, fastest: 1, default: 3, best: 19 },
            Algorithm::Gzip => LevelScale { min: 1, max: 9, fastest: 1, default: 6, best: 9 },
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(super) struct LevelScale {
    pub(super) min: i32,
    pub(super) max: i32,
    pub(super) fastest: i32,
    pub(super) default: i32,
    pub(super) best: i32,
}

/// One compression level: a name that means the same intent for every algorithm, or a number on
/// the algorithm's own scale (br 0–11, zstd 1–19, gzip 1–9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Level {
    /// Level 1 of each algorithm: least CPU.
    Fastest,
    /// br 4, zstd 3, gzip 6: a good ratio at a CPU cost fit for responses made per request.
    #[default]
    Default,
    /// br 11, zstd 19, gzip 9: smallest output, much more CPU and (zstd) memory per response.
    Best,
    /// A number on the algorithm's own scale.
    Precise(i32),
}
