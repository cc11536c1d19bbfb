//! The configuration: the codings offered, their levels (named or numeric, for all algorithms or
//! per algorithm), the size threshold and the excluded content types, as the TOML table spells them.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// A content coding `compression` can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
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

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LevelVisitor)
    }
}

struct LevelVisitor;

impl Visitor<'_> for LevelVisitor {
    type Value = Level;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"fastest\", \"default\", \"best\" or an integer level")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Level, E> {
        match v {
            "fastest" => Ok(Level::Fastest),
            "default" => Ok(Level::Default),
            "best" => Ok(Level::Best),
            other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Level, E> {
        i32::try_from(v).map(Level::Precise).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Level, E> {
        i32::try_from(v).map(Level::Precise).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }
}

/// The `level` option: one level for every algorithm (`level = "best"`, `level = 5`) or one per
/// algorithm (`level = { br = 5, gzip = 9 }`; algorithms not named use [`Level::Default`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Levels {
    /// The same level for every algorithm.
    All(Level),
    /// A level per algorithm.
    PerAlgorithm(BTreeMap<Algorithm, Level>),
}

impl Default for Levels {
    fn default() -> Self {
        Levels::All(Level::Default)
    }
}

impl Levels {
    pub(super) fn get(&self, algorithm: Algorithm) -> Level {
        match self {
            Levels::All(level) => *level,
            Levels::PerAlgorithm(map) => map.get(&algorithm).copied().unwrap_or_default(),
        }
    }
}

impl<'de> Deserialize<'de> for Levels {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LevelsVisitor)
    }
}

struct LevelsVisitor;

impl<'de> Visitor<'de> for LevelsVisitor {
    type Value = Levels;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a level (\"fastest\", \"default\", \"best\", an integer) or a table of levels per algorithm")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Levels, E> {
        LevelVisitor.visit_str(v).map(Levels::All)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Levels, E> {
        LevelVisitor.visit_i64(v).map(Levels::All)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Levels, E> {
        LevelVisitor.visit_u64(v).map(Levels::All)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Levels, A::Error> {
        let mut levels = BTreeMap::new();
        while let Some((algorithm, level)) = map.next_entry::<Algorithm, Level>()? {
            if levels.insert(algorithm, level).is_some() {
                return Err(de::Error::custom(format_args!("level for `{algorithm}` given twice")));
            }
        }
        Ok(Levels::PerAlgorithm(levels))
    }
}

/// The `[middleware.NAME]` table of kind `"compression"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    /// The codings to offer, most preferred first. Default `["br", "zstd", "gzip"]`.
    pub algorithms: Vec<Algorithm>,
    /// The compression level, for all algorithms or per algorithm. Default `"default"`.
    pub level: Levels,
    /// Bodies whose exact length is known and below this many bytes are sent as they are. Default 1024.
    pub min_size: u64,
    /// Content types never compressed, as `type/subtype`, `type/*` or `type/prefix*`; an entry
    /// starting with `!` compresses a type an earlier entry excluded. The last entry that matches a
    /// response's type decides. Default: images (except SVG), audio, video, fonts, archives, gRPC.
    pub content_types: Vec<String>,
}

/// The default `content_types` exclusions: formats that are already compressed (or, for gRPC,
/// compress themselves), where a second pass costs CPU and saves nothing.
pub const DEFAULT_EXCLUDED_CONTENT_TYPES: &[&str] = &[
    "image/*",
    "!image/svg+xml",
    "audio/*",
    "video/*",
    "font/*",
    "application/font-woff",
    "application/font-woff2",
    "application/zip",
    "application/gzip",
    "application/x-gzip",
    "application/x-7z-compressed",
    "application/x-rar-compressed",
    "application/vnd.rar",
    "application/x-bzip2",
    "application/x-xz",
    "application/zstd",
    "application/grpc*",
];

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            algorithms: vec![Algorithm::Br, Algorithm::Zstd, Algorithm::Gzip],
            level: Levels::default(),
            min_size: 1024,
            content_types: DEFAULT_EXCLUDED_CONTENT_TYPES.iter().map(|s| s.to_string()).collect(),
        }
    }
}
