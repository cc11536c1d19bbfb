//! The `kind = "compression"` table: the codings offered, their levels (named or numeric, for all
//! algorithms or per algorithm), the size threshold and the excluded content types, as the TOML
//! table spells them, fed to a [`CompressionBuilder`](super::CompressionBuilder).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::{Algorithm, Compression, DEFAULT_EXCLUDED_CONTENT_TYPES, Level};
use crate::middleware::{BuildContext, ConfigError};

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

impl Compression {
    /// Builds the layer from a `kind = "compression"` table, through [`Compression::builder`]'s
    /// validation.
    pub fn from_config(config: CompressionConfig, _ctx: &BuildContext) -> Result<Self, ConfigError> {
        let builder = Compression::builder()
            .algorithms(config.algorithms)
            .min_size(config.min_size)
            .content_types(config.content_types);
        match config.level {
            Levels::All(level) => builder.level(level),
            Levels::PerAlgorithm(map) => {
                map.into_iter().fold(builder, |b, (algorithm, level)| b.level_for(algorithm, level))
            }
        }
        .build()
    }
}
