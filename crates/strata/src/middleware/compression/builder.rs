//! [`CompressionBuilder`]: the typed settings of a [`Compression`] layer, and the one function that
//! validates them and resolves levels and content-type patterns.

use std::collections::BTreeMap;

use super::{Algorithm, Compression, Level, TypePattern};
use crate::middleware::ConfigError;

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

/// The settings of a [`Compression`] layer; [`CompressionBuilder::build`] validates them, and the
/// gateway's `kind = "compression"` tables go through the same function.
///
/// Defaults: br, zstd, gzip (in that order of preference) at [`Level::Default`], a 1024-byte
/// minimum, and [`DEFAULT_EXCLUDED_CONTENT_TYPES`].
#[derive(Clone, Debug)]
pub struct CompressionBuilder {
    algorithms: Vec<Algorithm>,
    level: Level,
    per_algorithm: BTreeMap<Algorithm, Level>,
    min_size: u64,
    content_types: Vec<String>,
}

impl Default for CompressionBuilder {
    fn default() -> Self {
        CompressionBuilder {
            algorithms: vec![Algorithm::Br, Algorithm::Zstd, Algorithm::Gzip],
            level: Level::Default,
            per_algorithm: BTreeMap::new(),
            min_size: 1024,
            content_types: DEFAULT_EXCLUDED_CONTENT_TYPES.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl CompressionBuilder {
    /// The codings to offer, most preferred first (replaces the default br, zstd, gzip).
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// The level of every algorithm without its own [`level_for`](Self::level_for).
    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    /// The level of one algorithm, which must be among the offered ones.
    pub fn level_for(mut self, algorithm: Algorithm, level: Level) -> Self {
        self.per_algorithm.insert(algorithm, level);
        self
    }

    /// Bodies whose exact length is known and below this many bytes are sent as they are.
    pub fn min_size(mut self, bytes: u64) -> Self {
        self.min_size = bytes;
        self
    }

    /// Replaces the excluded content types: `type/subtype`, `type/*` or `type/prefix*`; an entry
    /// starting with `!` compresses a type an earlier entry excluded, and the last entry that
    /// matches a response's type decides. Each entry is checked by [`build`](Self::build).
    pub fn content_types<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.content_types = patterns.into_iter().map(Into::into).collect();
        self
    }

    /// Validates the settings and resolves each algorithm's numeric level and the content-type
    /// patterns once. Each error names the TOML key at fault.
    pub fn build(self) -> Result<Compression, ConfigError> {
        if self.algorithms.is_empty() {
            return Err(ConfigError::field("algorithms", "list at least one of \"br\", \"zstd\", \"gzip\""));
        }
        let mut algorithms = Vec::with_capacity(self.algorithms.len());
        for &algorithm in &self.algorithms {
            if algorithms.iter().any(|&(a, _)| a == algorithm) {
                return Err(ConfigError::field("algorithms", format!("\"{algorithm}\" is listed twice")));
            }
            let scale = algorithm.levels();
            let level = match self.per_algorithm.get(&algorithm).copied().unwrap_or(self.level) {
                Level::Fastest => scale.fastest,
                Level::Default => scale.default,
                Level::Best => scale.best,
                Level::Precise(n) if (scale.min..=scale.max).contains(&n) => n,
                Level::Precise(n) => {
                    return Err(ConfigError::field(
                        "level",
                        format!("{algorithm} level {n} is out of range: expected {} to {}", scale.min, scale.max),
                    ));
                }
            };
            algorithms.push((algorithm, level));
        }
        // A level for an algorithm that is not offered is almost certainly a typo'd intent.
        if let Some(unused) = self.per_algorithm.keys().find(|a| !self.algorithms.contains(a)) {
            return Err(ConfigError::field(
                "level",
                format!("a level is set for \"{unused}\", which is not in `algorithms`"),
            ));
        }
        let excluded = self.content_types.iter().map(|entry| TypePattern::parse(entry)).collect::<Result<_, _>>()?;
        Ok(Compression { algorithms: algorithms.into(), min_size: self.min_size, excluded })
    }
}
