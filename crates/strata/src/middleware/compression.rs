//! `compression`: compresses response bodies with br, zstd or gzip, as the client's
//! `Accept-Encoding` allows and the server prefers.
//!
//! Bodies are compressed as they stream, one frame at a time, so memory stays bounded whatever the
//! body's size; `text/event-stream` bodies are flushed after every frame so each server-sent event
//! reaches the browser on its own. Responses that must not or need not be compressed (already
//! encoded, ranges, 204, small, media and archives, `no-transform`) pass through untouched.
//!
//! **Metadata matches the body a GET would get.** A HEAD response carries the headers of the GET
//! (RFC 9110 §9.3.2): `Vary: accept-encoding`, and when the GET would be compressed, its
//! `Content-Encoding`, weakened `ETag` and no `Content-Length`. A `304` carries the `ETag` and `Vary`
//! its `200` would have carried (RFC 9110 §15.4.5). A strong `ETag` names exact bytes, so a
//! compressed response's `"x"` becomes `W/"x"`; a client then revalidates with
//! `If-None-Match: W/"x"`, which an upstream comparing tags as plain strings would never match.
//! The strong form of each weak tag is therefore **added** to `If-None-Match` on the way in (`W/"x"`
//! → `W/"x", "x"`): `If-None-Match` compares weakly (RFC 9110 §13.1.2), so to a correct upstream the
//! two are the same tag, and an upstream whose own tags are weak still finds the one it issued.
//!
//! ```toml
//! [middleware.compression]
//! kind = "compression"
//! algorithms = ["br", "zstd", "gzip"]
//! level = "default"
//! min_size = 1024
//! ```
//!
//! See `docs/middleware/compression.md` for every option and rule.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::{BuildContext, ConfigError};
use crate::check::{Fact, Facts};
use crate::http::headers::{add_vary, is_ows, is_tchar, parse_qvalue};
use crate::http::{Body, BoxError, Next, Request, Response};
use crate::stack::Middleware;

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
    fn levels(self) -> LevelScale {
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

struct LevelScale {
    min: i32,
    max: i32,
    fastest: i32,
    default: i32,
    best: i32,
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
    fn get(&self, algorithm: Algorithm) -> Level {
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

/// The `compression` middleware. Build it with [`Compression::new`] from a [`CompressionConfig`], or
/// take [`Compression::default`].
///
/// ```
/// use strata::http::{Request, Response, Stack};
/// use strata::middleware::{BuildContext, Compression, CompressionConfig};
///
/// let gzip_only = Compression::new(
///     CompressionConfig { algorithms: vec![strata::middleware::compression::Algorithm::Gzip], ..Default::default() },
///     &BuildContext::default(),
/// )?;
/// let service = Stack::new()
///     .with(gzip_only)
///     .serve(|_req: Request| async { Response::new("hello".into()) });
/// # let _ = service;
/// # Ok::<(), strata::middleware::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Compression {
    /// The offered codings, most preferred first, each with its resolved level.
    algorithms: Box<[(Algorithm, i32)]>,
    min_size: u64,
    excluded: Box<[TypePattern]>,
}

/// One `content_types` entry, parsed once at build.
#[derive(Clone, Debug)]
struct TypePattern {
    /// `!type`: compress what earlier entries excluded.
    include: bool,
    /// Lowercase; without the trailing `*` when `prefix`.
    text: Box<str>,
    prefix: bool,
}

impl TypePattern {
    fn parse(entry: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::field("content_types", format!("`{entry}`: {why}"));
        let trimmed = entry.trim();
        let (include, rest) = match trimmed.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, trimmed),
        };
        let (text, prefix) = match rest.strip_suffix('*') {
            Some(text) => (text, true),
            None => (rest, false),
        };
        let Some((kind, subtype)) = text.split_once('/') else {
            return Err(bad("expected a media type such as `image/png`, `image/*` or `application/grpc*`"));
        };
        // `*` is a token character, but here it may only end the pattern.
        let valid = |s: &str| s.bytes().all(|b| is_tchar(b) && b != b'*');
        if kind.is_empty() || !valid(kind) || !valid(subtype) || (!prefix && subtype.is_empty()) {
            return Err(bad("expected `type/subtype`, with `*` allowed only at the end and no parameters"));
        }
        Ok(TypePattern { include, text: text.to_ascii_lowercase().into(), prefix })
    }

    /// Whether the pattern matches a media type essence (`type/subtype`, any case).
    fn matches(&self, essence: &str) -> bool {
        if self.prefix {
            essence.len() >= self.text.len()
                && essence.as_bytes()[..self.text.len()].eq_ignore_ascii_case(self.text.as_bytes())
        } else {
            essence.eq_ignore_ascii_case(&self.text)
        }
    }
}

impl Compression {
    /// Validates the config and resolves levels and content-type patterns once.
    pub fn new(config: CompressionConfig, _ctx: &BuildContext) -> Result<Self, ConfigError> {
        if config.algorithms.is_empty() {
            return Err(ConfigError::field("algorithms", "list at least one of \"br\", \"zstd\", \"gzip\""));
        }
        let mut algorithms = Vec::with_capacity(config.algorithms.len());
        for &algorithm in &config.algorithms {
            if algorithms.iter().any(|&(a, _)| a == algorithm) {
                return Err(ConfigError::field("algorithms", format!("\"{algorithm}\" is listed twice")));
            }
            let scale = algorithm.levels();
            let level = match config.level.get(algorithm) {
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
        let unused = match &config.level {
            Levels::PerAlgorithm(map) => map.keys().find(|a| !config.algorithms.contains(a)),
            Levels::All(_) => None,
        };
        if let Some(unused) = unused {
            return Err(ConfigError::field(
                "level",
                format!("a level is set for \"{unused}\", which is not in `algorithms`"),
            ));
        }
        let excluded = config.content_types.iter().map(|entry| TypePattern::parse(entry)).collect::<Result<_, _>>()?;
        Ok(Compression { algorithms: algorithms.into(), min_size: config.min_size, excluded })
    }

    /// The codings this layer offers, most preferred first, with their resolved numeric levels.
    pub fn algorithms(&self) -> impl Iterator<Item = (Algorithm, i32)> + '_ {
        self.algorithms.iter().copied()
    }

    fn excludes_type(&self, essence: &str) -> bool {
        // Last match wins, so `!image/svg+xml` after `image/*` re-includes SVG.
        self.excluded.iter().rev().find(|p| p.matches(essence)).is_some_and(|p| !p.include)
    }

    /// Whether the response could be compressed for some client: when this is false the coding
    /// does not depend on `Accept-Encoding`, so no `Vary` is added either.
    ///
    /// A HEAD response usually has no body to measure (an upstream sends none): its
    /// `Content-Length` header, which describes the GET's body, stands in for the body's length.
    fn eligible(&self, res: &Response, head: bool) -> bool {
        let status = res.status();
        if status.is_informational()
            || matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED | StatusCode::PARTIAL_CONTENT)
        {
            return false;
        }
        let headers = res.headers();
        if !self.may_transform(headers) || headers.contains_key(header::CONTENT_RANGE) {
            return false;
        }
        let body = res.body();
        let length = match (body.is_end_stream(), head) {
            (false, _) => body.size_hint().exact(),
            (true, true) => declared_length(headers),
            (true, false) => return false,
        };
        if length.is_some_and(|n| n < self.min_size) {
            return false;
        }
        // Without a type we cannot tell text from already-compressed bytes; a known length at
        // least lets `min_size` be honoured, so only those bodies are compressed.
        headers.contains_key(header::CONTENT_TYPE) || length.is_some()
    }

    /// What the headers alone decide: not already encoded, no `no-transform`, a type not
    /// excluded (an absent type is decided by the caller).
    fn may_transform(&self, headers: &HeaderMap) -> bool {
        if headers.contains_key(header::CONTENT_ENCODING) {
            return false;
        }
        // RFC 9110 §7.7: an intermediary must not transform the content of a `no-transform` response.
        if headers.get_all(header::CACHE_CONTROL).iter().any(has_no_transform) {
            return false;
        }
        match headers.get(header::CONTENT_TYPE) {
            None => true,
            Some(value) => value.to_str().is_ok_and(|v| !self.excludes_type(media_essence(v))),
        }
    }

    /// A `304`: the `Vary` and `ETag` its `200` would have had (RFC 9110 §15.4.5).
    ///
    /// A `304` carries no body and rarely a type, so whether the `200` would have been compressed is
    /// judged from what it does carry (no `Content-Encoding`, no `no-transform`, a type not
    /// excluded) and this request's `Accept-Encoding`. One more witness decides the `ETag`: a client
    /// that revalidated with the strong tag itself (and not its weak form) holds the identity body,
    /// so it keeps that tag — say, one below `min_size`, which was never compressed.
    fn not_modified(&self, res: &mut Response, plan: &Plan) {
        if !self.may_transform(res.headers()) {
            return;
        }
        add_vary(res.headers_mut(), "accept-encoding");
        if plan.coding.is_none() {
            return;
        }
        let holds_identity = match (res.headers().get(header::ETAG), &plan.if_none_match) {
            (Some(etag), Some(sent)) => {
                let tags = entity_tags(sent.as_bytes());
                tags.clone().any(|(weak, tag)| !weak && tag == etag.as_bytes())
                    && !tags.clone().any(|(weak, tag)| weak && tag == etag.as_bytes())
            }
            _ => false,
        };
        if !holds_identity {
            weaken_etag(res.headers_mut());
        }
    }

    fn compress(&self, mut res: Response, plan: Plan) -> Response {
        if plan.range {
            return res;
        }
        if res.status() == StatusCode::NOT_MODIFIED {
            self.not_modified(&mut res, &plan);
            return res;
        }
        if !self.eligible(&res, plan.head) {
            return res;
        }
        // The coding chosen depends on Accept-Encoding even when the answer is "none".
        add_vary(res.headers_mut(), "accept-encoding");
        let Some((algorithm, level)) = plan.coding else {
            return res;
        };
        if plan.head {
            // The GET's headers without its body. The body goes too: hyper would announce a
            // body it knows the length of as the identity `Content-Length`.
            encoded_headers(res.headers_mut(), algorithm);
            *res.body_mut() = Body::empty();
            return res;
        }
        let event_stream = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| media_essence(v).eq_ignore_ascii_case("text/event-stream"));
        let encoder = match Encoder::new(algorithm, level) {
            Ok(encoder) => encoder,
            Err(error) => {
                tracing::warn!(
                    %error,
                    algorithm = algorithm.as_str(),
                    request_id = crate::http::RequestId::current().map(tracing::field::display),
                    "could not start a compressor; sent uncompressed"
                );
                return res;
            }
        };

        encoded_headers(res.headers_mut(), algorithm);

        let (parts, body) = res.into_parts();
        let body = CompressedBody {
            inner: body,
            encoder: Some(encoder),
            flush_every_frame: event_stream,
            unflushed: false,
            trailers: None,
        };
        Response::from_parts(parts, Body::wrap(body))
    }
}

impl Default for Compression {
    /// br, zstd, gzip at their default levels; 1 KiB minimum; the default exclusions.
    fn default() -> Self {
        Compression::new(CompressionConfig::default(), &BuildContext::default())
            .expect("the default compression config is valid")
    }
}

/// The headers of a body compressed with `algorithm`.
fn encoded_headers(headers: &mut HeaderMap, algorithm: Algorithm) {
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(algorithm.as_str()));
    // The compressed length is unknown until the end; byte ranges of the identity body no longer apply.
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    weaken_etag(headers);
}

/// What the request decided before it was handed on (the request itself is moved inward).
struct Plan {
    head: bool,
    range: bool,
    coding: Option<(Algorithm, i32)>,
    /// The client's `If-None-Match` as it sent it (a `304` needs to know which tag it holds).
    if_none_match: Option<HeaderValue>,
}

impl Middleware<Request, Response> for Compression {
    async fn handle(&self, mut req: Request, next: Next) -> Response {
        let if_none_match = req.headers().get(header::IF_NONE_MATCH).cloned();
        if let Some(sent) = &if_none_match
            && let Some(extended) = with_strong_forms(sent)
        {
            req.headers_mut().insert(header::IF_NONE_MATCH, extended);
        }
        let plan = Plan {
            head: req.method() == Method::HEAD,
            range: req.headers().contains_key(header::RANGE),
            coding: negotiate(req.headers(), &self.algorithms),
            if_none_match,
        };
        let res = next.run(req).await;
        self.compress(res, plan)
    }

    fn kind(&self) -> &'static str {
        "compression"
    }

    fn facts(&self) -> Facts {
        Facts::of(&[Fact::RewritesBody, Fact::FlushesEvents])
    }
}

// ---------------------------------------------------------------------------------------------
// Accept-Encoding (RFC 9110 §12.5.3)
// ---------------------------------------------------------------------------------------------

/// q-values in thousandths, as the client gave them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct AcceptEncoding {
    br: Option<u16>,
    zstd: Option<u16>,
    gzip: Option<u16>,
    identity: Option<u16>,
    any: Option<u16>,
}

impl AcceptEncoding {
    /// Parses every `Accept-Encoding` line; `None` when there is none or one does not parse.
    fn parse(headers: &HeaderMap) -> Option<Self> {
        let mut seen = false;
        let mut accept = AcceptEncoding::default();
        for value in headers.get_all(header::ACCEPT_ENCODING) {
            seen = true;
            let value = value.to_str().ok()?;
            for element in value.split(',') {
                let element = element.trim_matches(is_ows);
                if element.is_empty() {
                    continue; // RFC 9110 §5.6.1: empty list elements are allowed and ignored.
                }
                let mut params = element.split(';');
                let coding = params.next().unwrap_or_default().trim_matches(is_ows);
                if coding.is_empty() || !coding.bytes().all(is_tchar) {
                    return None;
                }
                let mut q = 1000;
                for param in params {
                    let param = param.trim_matches(is_ows);
                    if param.is_empty() {
                        continue;
                    }
                    let (name, value) = param.split_once('=')?;
                    if !name.trim_matches(is_ows).eq_ignore_ascii_case("q") {
                        return None; // Content codings take no parameters besides the weight.
                    }
                    q = parse_qvalue(value.trim_matches(is_ows))?;
                }
                let slot = if coding.eq_ignore_ascii_case("br") {
                    &mut accept.br
                } else if coding.eq_ignore_ascii_case("zstd") {
                    &mut accept.zstd
                } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                    &mut accept.gzip
                } else if coding.eq_ignore_ascii_case("identity") {
                    &mut accept.identity
                } else if coding == "*" {
                    &mut accept.any
                } else {
                    continue; // deflate, compress, …: valid, just not offered here.
                };
                // Listed twice (`gzip` and `x-gzip`): the more favourable weight counts.
                *slot = Some(slot.map_or(q, |old| old.max(q)));
            }
        }
        seen.then_some(accept)
    }

    fn q(&self, algorithm: Algorithm) -> u16 {
        let explicit = match algorithm {
            Algorithm::Br => self.br,
            Algorithm::Zstd => self.zstd,
            Algorithm::Gzip => self.gzip,
        };
        // `*` covers every coding the client did not name; unnamed and no `*` means not acceptable.
        explicit.or(self.any).unwrap_or(0)
    }
}

/// Picks the coding for a response: among the offered codings the client accepts (q > 0), those
/// with the client's highest q; among those, the one listed first in `algorithms`. `None` (send
/// identity) when the header is absent or unparseable, nothing offered is acceptable, or the client
/// weights `identity` (or `*`, which covers it) strictly higher than every acceptable coding.
fn negotiate(headers: &HeaderMap, algorithms: &[(Algorithm, i32)]) -> Option<(Algorithm, i32)> {
    let accept = AcceptEncoding::parse(headers)?;
    let mut best: Option<((Algorithm, i32), u16)> = None;
    for &(algorithm, level) in algorithms {
        let q = accept.q(algorithm);
        if q > 0 && best.is_none_or(|(_, best_q)| q > best_q) {
            best = Some(((algorithm, level), q));
        }
    }
    let (choice, q) = best?;
    let identity_q = accept.identity.or(accept.any).unwrap_or(0);
    if identity_q > q { None } else { Some(choice) }
}

/// `type/subtype` of a Content-Type value, without parameters or surrounding whitespace.
fn media_essence(value: &str) -> &str {
    value.split(';').next().unwrap_or_default().trim_matches(is_ows)
}

fn has_no_transform(value: &HeaderValue) -> bool {
    value.to_str().is_ok_and(|v| {
        v.split(',').any(|d| d.split('=').next().unwrap_or_default().trim().eq_ignore_ascii_case("no-transform"))
    })
}

/// `Content-Length` as a number, when there is exactly one valid value.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok()?.trim().parse().ok()
}

/// The entity tags of an `If-None-Match` value: (weak, the quoted tag with its quotes). Parsing stops
/// at the first element that is not an entity tag (`*` included: it needs no help).
///
/// Quotes are followed rather than splitting at commas: a comma may appear inside a tag.
fn entity_tags(value: &[u8]) -> impl Iterator<Item = (bool, &[u8])> + Clone {
    let mut rest = value;
    std::iter::from_fn(move || {
        let start = rest.iter().position(|&b| !(b == b',' || is_ows(b as char)))?;
        rest = &rest[start..];
        let weak = rest.starts_with(b"W/");
        let tag = if weak { &rest[2..] } else { rest };
        if tag.first() != Some(&b'"') {
            rest = &[];
            return None;
        }
        let end = tag[1..].iter().position(|&b| b == b'"')? + 2;
        rest = &tag[end..];
        Some((weak, &tag[..end]))
    })
}

/// `If-None-Match` with the strong form of each weak tag added after it, or `None` when it has no
/// weak tag lacking one (the usual case: nothing is allocated).
fn with_strong_forms(value: &HeaderValue) -> Option<HeaderValue> {
    let bytes = value.as_bytes();
    let tags = entity_tags(bytes);
    let missing = |tag: &[u8]| !tags.clone().any(|(weak, t)| !weak && t == tag);
    if !tags.clone().any(|(weak, tag)| weak && missing(tag)) {
        return None;
    }
    let mut out = bytes.to_vec();
    let mut added: Vec<&[u8]> = Vec::new();
    for (_, tag) in tags.clone().filter(|&(weak, tag)| weak && missing(tag)) {
        if !added.contains(&tag) {
            out.extend_from_slice(b", ");
            out.extend_from_slice(tag);
            added.push(tag);
        }
    }
    HeaderValue::from_bytes(&out).ok()
}

/// A strong validator names exact bytes, which compression changes: `"x"` becomes `W/"x"`.
fn weaken_etag(headers: &mut HeaderMap) {
    let Some(etag) = headers.get(header::ETAG) else { return };
    if !etag.as_bytes().starts_with(b"\"") {
        return;
    }
    let mut weak = Vec::with_capacity(etag.len() + 2);
    weak.extend_from_slice(b"W/");
    weak.extend_from_slice(etag.as_bytes());
    match HeaderValue::from_bytes(&weak) {
        Ok(weak) => {
            headers.insert(header::ETAG, weak);
        }
        // Better no validator than a strong one that lies about the bytes.
        Err(_) => {
            headers.remove(header::ETAG);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The streaming compressor
// ---------------------------------------------------------------------------------------------

/// One compressor writing into a `Vec` that is drained after every step, so what it holds is its
/// own window plus at most one frame's output.
enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    // Boxed: the brotli state is large and would bloat every variant.
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

/// Brotli's window: 1 MiB (lgwin 20) instead of the 4 MiB default bounds memory per response,
/// at almost no cost in ratio for typical response sizes.
const BROTLI_LGWIN: u32 = 20;
/// Brotli's internal output buffer.
const BROTLI_BUFFER: usize = 8 * 1024;

impl Encoder {
    fn new(algorithm: Algorithm, level: i32) -> std::io::Result<Self> {
        // Levels were range-checked at build, so the conversions below cannot fail in practice.
        Ok(match algorithm {
            Algorithm::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(level.clamp(1, 9) as u32),
            )),
            Algorithm::Br => Encoder::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER,
                level.clamp(0, 11) as u32,
                BROTLI_LGWIN,
            ))),
            Algorithm::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), level)?),
        })
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Br(e) => e.write_all(data),
            Encoder::Zstd(e) => e.write_all(data),
        }
    }

    /// Emits everything written so far as complete, decodable blocks.
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Br(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }

    /// Ends the stream (trailer, checksum) and returns the last bytes.
    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Br(e) => Ok(e.into_inner()),
            Encoder::Zstd(e) => e.finish(),
        }
    }

    /// The compressed bytes produced since the last call.
    fn take_output(&mut self) -> Vec<u8> {
        match self {
            Encoder::Gzip(e) => std::mem::take(e.get_mut()),
            Encoder::Br(e) => std::mem::take(e.get_mut()),
            Encoder::Zstd(e) => std::mem::take(e.get_mut()),
        }
    }
}

/// How many input frames may be swallowed without output before yielding to the executor, so a
/// fast source of tiny frames cannot hog the thread.
const FRAMES_PER_POLL: usize = 64;

/// A response body compressed frame by frame.
struct CompressedBody {
    inner: Body,
    /// `None` once the stream is finished (or failed).
    encoder: Option<Encoder>,
    /// Flush after every frame (`text/event-stream`): each event must reach the client on its own.
    flush_every_frame: bool,
    /// Input was written since the last flush; flushed when the source goes quiet.
    unflushed: bool,
    /// Trailers from the source, sent after the last compressed bytes.
    trailers: Option<HeaderMap>,
}

fn data_frame(bytes: Vec<u8>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    Poll::Ready(Some(Ok(Frame::data(Bytes::from(bytes)))))
}

impl CompressedBody {
    /// Finishes the encoder; returns the final bytes, if any.
    fn finish(&mut self) -> Result<Vec<u8>, BoxError> {
        match self.encoder.take() {
            Some(encoder) => encoder.finish().map_err(Into::into),
            None => Ok(Vec::new()),
        }
    }

    fn fail(&mut self, error: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.encoder = None;
        self.trailers = None;
        Poll::Ready(Some(Err(error.into())))
    }
}

impl http_body::Body for CompressedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut quiet_frames = 0;
        loop {
            let Some(encoder) = this.encoder.as_mut() else {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => {
                    // The source is idle: whatever the compressor holds goes out now rather than
                    // waiting for more input that may take a long time to come.
                    if this.unflushed {
                        this.unflushed = false;
                        if let Err(e) = encoder.flush() {
                            return this.fail(e);
                        }
                        let out = encoder.take_output();
                        if !out.is_empty() {
                            return data_frame(out);
                        }
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Some(Err(e))) => return this.fail(e),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if data.is_empty() {
                            continue;
                        }
                        let step = encoder
                            .write(&data)
                            .and_then(|()| if this.flush_every_frame { encoder.flush() } else { Ok(()) });
                        if let Err(e) = step {
                            return this.fail(e);
                        }
                        this.unflushed = !this.flush_every_frame;
                        let out = encoder.take_output();
                        if !out.is_empty() {
                            return data_frame(out);
                        }
                        quiet_frames += 1;
                        if quiet_frames >= FRAMES_PER_POLL {
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            // Trailers end the body: finish now, send them after the last bytes.
                            this.trailers = Some(trailers);
                            match this.finish() {
                                Ok(out) if !out.is_empty() => return data_frame(out),
                                Ok(_) => {}
                                Err(e) => return this.fail(e),
                            }
                        }
                    }
                },
                Poll::Ready(None) => match this.finish() {
                    Ok(out) if !out.is_empty() => return data_frame(out),
                    Ok(_) => return Poll::Ready(None),
                    Err(e) => return this.fail(e),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Stack, response};
    use crate::stack::Service;
    use http_body_util::BodyExt;
    use std::io::Read;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    // ----- helpers -------------------------------------------------------------------------------

    fn text(n: usize) -> String {
        // Compressible but not trivially so: words from a small vocabulary in a pseudo-random order.
        const WORDS: &[&str] = &["strata", "onion", "layer", "request", "response", "body", "frame", "event"];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut out = String::with_capacity(n + 16);
        while out.len() < n {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            out.push_str(WORDS[(seed >> 33) as usize % WORDS.len()]);
            out.push(' ');
        }
        out.truncate(n);
        out
    }

    fn decode(algorithm: &str, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match algorithm {
            "gzip" => {
                flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
            }
            "br" => {
                brotli::Decompressor::new(bytes, 4096).read_to_end(&mut out).unwrap();
            }
            "zstd" => out = zstd::decode_all(bytes).unwrap(),
            other => panic!("unknown coding {other}"),
        }
        out
    }

    /// Decodes a stream piece by piece, so a test can see what is decodable so far.
    enum Incremental {
        Gzip(flate2::write::GzDecoder<Vec<u8>>),
        Br(Box<brotli::DecompressorWriter<Vec<u8>>>),
        Zstd(zstd::stream::write::Decoder<'static, Vec<u8>>),
    }

    impl Incremental {
        fn new(algorithm: &str) -> Self {
            match algorithm {
                "gzip" => Incremental::Gzip(flate2::write::GzDecoder::new(Vec::new())),
                "br" => Incremental::Br(Box::new(brotli::DecompressorWriter::new(Vec::new(), 4096))),
                "zstd" => Incremental::Zstd(zstd::stream::write::Decoder::new(Vec::new()).unwrap()),
                other => panic!("unknown coding {other}"),
            }
        }

        /// Feeds compressed bytes; returns everything decoded so far.
        fn feed(&mut self, bytes: &[u8]) -> String {
            let out = match self {
                Incremental::Gzip(d) => {
                    d.write_all(bytes).unwrap();
                    d.flush().unwrap();
                    d.get_ref()
                }
                Incremental::Br(d) => {
                    d.write_all(bytes).unwrap();
                    d.flush().unwrap();
                    d.get_ref()
                }
                Incremental::Zstd(d) => {
                    d.write_all(bytes).unwrap();
                    d.flush().unwrap();
                    d.get_ref()
                }
            };
            String::from_utf8(out.clone()).unwrap()
        }
    }

    /// A streaming body fed from a channel: the test decides when each frame exists.
    struct Channel(tokio::sync::mpsc::Receiver<Bytes>);

    impl http_body::Body for Channel {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    /// A streaming body that makes `count` chunks on demand and counts how many it has made.
    struct Produce {
        left: usize,
        chunk: Bytes,
        made: Arc<AtomicUsize>,
    }

    impl http_body::Body for Produce {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            self.left -= 1;
            self.made.fetch_add(1, Ordering::SeqCst);
            Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
        }
    }

    async fn next_data(body: &mut Body) -> Bytes {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.expect("a frame in time");
        frame.expect("a frame").expect("no error").into_data().expect("a data frame")
    }

    fn layer() -> Compression {
        Compression::default()
    }

    fn with(config: CompressionConfig) -> Compression {
        Compression::new(config, &BuildContext::default()).unwrap()
    }

    fn serve(layer: Compression, make: impl Fn() -> Response + Send + Sync + 'static) -> Service<Request, Response> {
        Stack::new().with(layer).serve(move |_req: Request| {
            let res = make();
            async move { res }
        })
    }

    fn typed(content_type: &'static str, body: impl Into<Body>) -> Response {
        let mut res = Response::new(body.into());
        res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        res
    }

    fn get(accept_encoding: &'static str) -> Request {
        http::Request::builder().uri("/").header(header::ACCEPT_ENCODING, accept_encoding).body(Body::empty()).unwrap()
    }

    fn encoding(res: &Response) -> Option<&str> {
        res.headers().get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap())
    }

    async fn body_bytes(res: Response) -> Bytes {
        res.into_body().collect().await.unwrap().to_bytes()
    }

    fn chosen(accept_encoding: &str) -> Option<Algorithm> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(accept_encoding).unwrap());
        negotiate(&headers, &layer().algorithms).map(|(a, _)| a)
    }

    // ----- round trips ---------------------------------------------------------------------------

    #[tokio::test]
    async fn each_algorithm_round_trips() {
        let original = text(50_000);
        for algorithm in ["br", "zstd", "gzip"] {
            let body = original.clone();
            let service = serve(layer(), move || typed("text/html; charset=utf-8", body.clone()));
            let res = service.call(get(algorithm)).await;
            assert_eq!(encoding(&res), Some(algorithm));
            assert!(res.headers().get(header::CONTENT_LENGTH).is_none());
            let compressed = body_bytes(res).await;
            assert!(compressed.len() < original.len() / 2, "{algorithm}: {} bytes", compressed.len());
            assert_eq!(decode(algorithm, &compressed), original.as_bytes(), "{algorithm}");
        }
    }

    #[tokio::test]
    async fn every_level_form_builds_and_round_trips() {
        let original = text(10_000);
        for level in [Level::Fastest, Level::Default, Level::Best, Level::Precise(2)] {
            let layer = with(CompressionConfig { level: Levels::All(level), ..Default::default() });
            for algorithm in ["br", "zstd", "gzip"] {
                let body = original.clone();
                let service = serve(layer.clone(), move || typed("text/plain", body.clone()));
                let res = service.call(get(algorithm)).await;
                assert_eq!(encoding(&res), Some(algorithm));
                assert_eq!(decode(algorithm, &body_bytes(res).await), original.as_bytes(), "{algorithm} {level:?}");
            }
        }
    }

    #[tokio::test]
    async fn trailers_follow_the_compressed_bytes() {
        let original = text(4096);
        let body = original.clone();
        let service = serve(layer(), move || {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-checksum", HeaderValue::from_static("abc"));
            let stream = http_body_util::StreamBody::new(futures_util::stream::iter([
                Ok::<_, BoxError>(Frame::data(Bytes::from(body.clone()))),
                Ok(Frame::trailers(trailers)),
            ]));
            typed("text/plain", Body::wrap(stream))
        });
        let collected = service.call(get("gzip")).await.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-checksum"], "abc");
        assert_eq!(decode("gzip", &collected.to_bytes()), original.as_bytes());
    }

    // ----- negotiation -------------------------------------------------------------------------

    #[test]
    fn negotiation_follows_q_values_then_server_preference() {
        use Algorithm::*;
        // The client's highest q wins, whatever the server prefers.
        assert_eq!(chosen("gzip, br;q=0.9"), Some(Gzip));
        assert_eq!(chosen("br;q=0.1, zstd;q=0.2, gzip;q=0.3"), Some(Gzip));
        // Ties go to the server's order (br, zstd, gzip by default).
        assert_eq!(chosen("gzip, deflate, br, zstd"), Some(Br));
        assert_eq!(chosen("gzip;q=0.5, zstd;q=0.5"), Some(Zstd));
        // `*` covers what is not named; q=0 means "not acceptable".
        assert_eq!(chosen("gzip;q=0, *"), Some(Br));
        assert_eq!(chosen("br;q=0, *;q=0.5"), Some(Zstd));
        assert_eq!(chosen("br;q=0, zstd;q=0, *"), Some(Gzip));
        assert_eq!(chosen("*"), Some(Br));
        assert_eq!(chosen("*;q=0"), None);
        // x-gzip is gzip; tokens are case-insensitive; whitespace is optional whitespace.
        assert_eq!(chosen("x-gzip"), Some(Gzip));
        assert_eq!(chosen("X-GZIP;Q=1"), Some(Gzip));
        assert_eq!(chosen(" GZip \t; q=0.8 ,  deflate "), Some(Gzip));
        assert_eq!(chosen("gzip;q=1.000"), Some(Gzip));
        assert_eq!(chosen("gzip;q=0.001"), Some(Gzip));
        assert_eq!(chosen("gzip,,, ,"), Some(Gzip));
        // Nothing acceptable offered.
        assert_eq!(chosen("deflate, compress"), None);
        assert_eq!(chosen("identity;q=0"), None);
        assert_eq!(chosen("gzip;q=0"), None);
        assert_eq!(chosen(""), None);
        // identity weighted strictly above every coding wins; a tie goes to compression.
        assert_eq!(chosen("identity, gzip;q=0.5"), None);
        assert_eq!(chosen("identity;q=0.5, gzip;q=0.5"), Some(Gzip));
        assert_eq!(chosen("identity;q=0, gzip"), Some(Gzip));
        // Garbage: unparseable headers mean identity.
        for garbage in
            ["gzip;q=abc", "gzip;q=1.5", "gzip;q=2", "gzip;q=.5", "gzip;q=0.1234", "gzip;level=9", "gz ip", "gzip;q"]
        {
            assert_eq!(chosen(garbage), None, "{garbage}");
        }
        // No header at all: identity.
        assert_eq!(negotiate(&HeaderMap::new(), &layer().algorithms), None);
    }

    #[test]
    fn every_accept_encoding_line_counts() {
        let mut headers = HeaderMap::new();
        headers.append(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip;q=0.5"));
        headers.append(header::ACCEPT_ENCODING, HeaderValue::from_static("zstd"));
        assert_eq!(negotiate(&headers, &layer().algorithms).map(|(a, _)| a), Some(Algorithm::Zstd));
    }

    #[test]
    fn the_configured_order_is_the_server_preference() {
        let layer = with(CompressionConfig { algorithms: vec![Algorithm::Gzip, Algorithm::Br], ..Default::default() });
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("br, gzip, zstd"));
        assert_eq!(negotiate(&headers, &layer.algorithms).map(|(a, _)| a), Some(Algorithm::Gzip));
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("zstd"));
        assert_eq!(negotiate(&headers, &layer.algorithms), None);
    }

    #[test]
    fn qvalues_parse_strictly() {
        assert_eq!(parse_qvalue("0"), Some(0));
        assert_eq!(parse_qvalue("0."), Some(0));
        assert_eq!(parse_qvalue("0.5"), Some(500));
        assert_eq!(parse_qvalue("0.25"), Some(250));
        assert_eq!(parse_qvalue("0.125"), Some(125));
        assert_eq!(parse_qvalue("1"), Some(1000));
        assert_eq!(parse_qvalue("1.00"), Some(1000));
        for bad in ["", ".5", "1.001", "2", "0.1234", "-0", "0.5x", "01", " 1"] {
            assert_eq!(parse_qvalue(bad), None, "{bad}");
        }
    }

    // ----- skip rules --------------------------------------------------------------------------

    async fn respond(layer: Compression, req: Request, make: fn() -> Response) -> Response {
        serve(layer, make).call(req).await
    }

    #[tokio::test]
    async fn skips_responses_already_encoded() {
        let res = respond(layer(), get("gzip"), || {
            let mut res = typed("text/plain", text(4096));
            res.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
            res
        })
        .await;
        assert_eq!(encoding(&res), Some("br"));
        assert_eq!(body_bytes(res).await, text(4096));
    }

    fn head(accept_encoding: &'static str) -> Request {
        let mut req = get(accept_encoding);
        *req.method_mut() = Method::HEAD;
        req
    }

    /// A response with no body whose headers describe a GET's (what an upstream answers to HEAD).
    fn described(content_type: &'static str, length: &'static str) -> Response {
        let mut res = typed(content_type, Body::empty());
        let headers = res.headers_mut();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static(length));
        headers.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        res
    }

    #[tokio::test]
    async fn head_responses_carry_the_headers_the_get_would() {
        // An app that makes the GET's body for HEAD too (the server drops it)…
        let res = respond(layer(), head("gzip"), || typed("text/plain", text(4096))).await;
        assert_eq!(encoding(&res), Some("gzip"));
        assert_eq!(res.headers()[header::VARY], "accept-encoding");
        assert!(res.body().is_end_stream(), "no body, so the server cannot announce the identity length");
        // …and an upstream that sends only the headers: its Content-Length stands for the body.
        let res = respond(layer(), head("br"), || described("text/plain", "4096")).await;
        assert_eq!(encoding(&res), Some("br"));
        assert_eq!(res.headers()[header::VARY], "accept-encoding");
        assert_eq!(res.headers()[header::ETAG], "W/\"v1\"");
        assert!(res.headers().get(header::CONTENT_LENGTH).is_none());
        assert!(res.headers().get(header::ACCEPT_RANGES).is_none());
        // What the GET would not compress, HEAD does not claim either.
        let identity = respond(layer(), head("identity"), || described("text/plain", "4096")).await;
        assert_eq!(encoding(&identity), None);
        assert_eq!(identity.headers()[header::VARY], "accept-encoding");
        assert_eq!(identity.headers()[header::CONTENT_LENGTH], "4096");
        assert_eq!(identity.headers()[header::ETAG], "\"v1\"");
        let small = respond(layer(), head("br"), || described("text/plain", "100")).await;
        assert_eq!(encoding(&small), None);
        assert!(small.headers().get(header::VARY).is_none(), "below min_size: the GET does not vary either");
        let image = respond(layer(), head("br"), || described("image/png", "4096")).await;
        assert!(encoding(&image).is_none() && image.headers().get(header::VARY).is_none());
    }

    /// A `304` as an upstream sends it: the validator, no body, often no type.
    fn not_modified() -> Response {
        let mut res = Response::new(Body::empty());
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        res.headers_mut().insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        res
    }

    fn revalidate(accept_encoding: &'static str, if_none_match: &'static str) -> Request {
        let mut req = get(accept_encoding);
        req.headers_mut().insert(header::IF_NONE_MATCH, HeaderValue::from_static(if_none_match));
        req
    }

    #[tokio::test]
    async fn not_modified_carries_the_vary_and_etag_of_the_200() {
        // The client holds the compressed 200 (W/"v1"): the 304 confirms that very tag.
        let res = respond(layer(), revalidate("br", "W/\"v1\""), not_modified).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(res.headers()[header::ETAG], "W/\"v1\"");
        assert_eq!(res.headers()[header::VARY], "accept-encoding");
        assert!(encoding(&res).is_none(), "a 304 has no content to encode");
        // Without a validator in the request (a cache asking for the entity anew), the same.
        let res = respond(layer(), get("gzip"), not_modified).await;
        assert_eq!(res.headers()[header::ETAG], "W/\"v1\"");
        // A client revalidating the strong tag holds the identity body: it keeps its tag.
        let res = respond(layer(), revalidate("br", "\"v1\""), not_modified).await;
        assert_eq!(res.headers()[header::ETAG], "\"v1\"");
        assert_eq!(res.headers()[header::VARY], "accept-encoding");
        // No acceptable coding: the 200 would be identity, with its strong tag.
        let res = respond(layer(), revalidate("identity", "W/\"v1\""), not_modified).await;
        assert_eq!(res.headers()[header::ETAG], "\"v1\"");
        assert_eq!(res.headers()[header::VARY], "accept-encoding");
        // What the 200 would not have been compressed for, the 304 does not claim.
        for (name, value) in [
            (header::CONTENT_ENCODING, "gzip"),
            (header::CACHE_CONTROL, "no-transform"),
            (header::CONTENT_TYPE, "image/png"),
        ] {
            let service = serve(layer(), move || {
                let mut res = not_modified();
                res.headers_mut().insert(name.clone(), HeaderValue::from_static(value));
                res
            });
            let res = service.call(revalidate("br", "W/\"v1\"")).await;
            assert_eq!(res.headers()[header::ETAG], "\"v1\"", "{value}");
            assert!(res.headers().get(header::VARY).is_none(), "{value}");
        }
    }

    #[tokio::test]
    async fn weak_tags_reach_the_inner_layers_with_their_strong_forms() {
        let service = Stack::new().with(layer()).serve(|req: Request| async move {
            let seen = req.headers().get(header::IF_NONE_MATCH).map(|v| v.to_str().unwrap().to_string());
            response::text(StatusCode::OK, seen.unwrap_or_default())
        });
        let seen = |if_none_match: &'static str| {
            let service = service.clone();
            async move { body_bytes(service.call(revalidate("identity", if_none_match)).await).await }
        };
        assert_eq!(seen("W/\"v1\"").await, "W/\"v1\", \"v1\"");
        assert_eq!(seen("\"a\", W/\"b,c\" ,W/\"b,c\"").await, "\"a\", W/\"b,c\" ,W/\"b,c\", \"b,c\"");
        // Nothing to add: passed as sent.
        assert_eq!(seen("W/\"v1\", \"v1\"").await, "W/\"v1\", \"v1\"");
        assert_eq!(seen("\"v1\"").await, "\"v1\"");
        assert_eq!(seen("*").await, "*");
        // Tags after something that is not a tag are left alone rather than guessed at.
        assert_eq!(seen("junk, W/\"v1\"").await, "junk, W/\"v1\"");
    }

    #[test]
    fn entity_tags_follow_quotes_not_commas() {
        let tags: Vec<(bool, &[u8])> = entity_tags(b" W/\"a,b\",\"c\" , W/\"\"").collect();
        assert_eq!(tags, [(true, &b"\"a,b\""[..]), (false, b"\"c\""), (true, b"\"\"")]);
        assert_eq!(entity_tags(b"W/\"unterminated").count(), 0);
    }

    #[tokio::test]
    async fn skips_bodyless_and_partial_statuses() {
        for status in [StatusCode::NO_CONTENT, StatusCode::PARTIAL_CONTENT] {
            let service = serve(layer(), move || {
                let mut res = typed("text/plain", text(4096));
                *res.status_mut() = status;
                res
            });
            let res = service.call(get("gzip")).await;
            assert_eq!(encoding(&res), None, "{status}");
            assert!(res.headers().get(header::VARY).is_none(), "{status}");
        }
    }

    #[tokio::test]
    async fn skips_range_requests_and_content_ranges() {
        let mut req = get("gzip");
        req.headers_mut().insert(header::RANGE, HeaderValue::from_static("bytes=0-99"));
        let res = respond(layer(), req, || typed("text/plain", text(4096))).await;
        assert_eq!(encoding(&res), None);

        let res = respond(layer(), get("gzip"), || {
            let mut res = typed("text/plain", text(4096));
            res.headers_mut().insert(header::CONTENT_RANGE, HeaderValue::from_static("bytes 0-4095/8192"));
            res
        })
        .await;
        assert_eq!(encoding(&res), None);
    }

    #[tokio::test]
    async fn skips_no_transform() {
        let res = respond(layer(), get("gzip"), || {
            let mut res = typed("text/plain", text(4096));
            res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, No-Transform"));
            res
        })
        .await;
        assert_eq!(encoding(&res), None);
    }

    #[tokio::test]
    async fn skips_excluded_content_types_by_default() {
        for content_type in [
            "image/png",
            "IMAGE/JPEG",
            "video/mp4",
            "audio/ogg",
            "font/woff2",
            "application/zip",
            "application/gzip",
            "application/x-7z-compressed",
            "application/x-rar-compressed",
            "application/x-bzip2",
            "application/zstd",
            "application/grpc",
            "application/grpc+proto",
        ] {
            let service = serve(layer(), move || typed(content_type, text(4096)));
            let res = service.call(get("gzip")).await;
            assert_eq!(encoding(&res), None, "{content_type}");
            assert!(res.headers().get(header::VARY).is_none(), "{content_type}");
        }
        for content_type in ["image/svg+xml", "text/html; charset=utf-8", "application/json", "text/css"] {
            let service = serve(layer(), move || typed(content_type, text(4096)));
            assert_eq!(encoding(&service.call(get("gzip")).await), Some("gzip"), "{content_type}");
        }
    }

    #[tokio::test]
    async fn content_type_exclusions_are_configurable() {
        let config =
            CompressionConfig { content_types: vec!["text/*".into(), "!text/html".into()], ..Default::default() };
        let layer = with(config);
        for (content_type, compressed) in [("text/plain", false), ("text/html", true), ("image/png", true)] {
            let service = serve(layer.clone(), move || typed(content_type, text(4096)));
            let res = service.call(get("gzip")).await;
            assert_eq!(encoding(&res) == Some("gzip"), compressed, "{content_type}");
        }
    }

    #[tokio::test]
    async fn min_size_applies_to_known_lengths_only() {
        let exactly = serve(layer(), || typed("text/plain", text(1024)));
        assert_eq!(encoding(&exactly.call(get("gzip")).await), Some("gzip"));

        let below = serve(layer(), || typed("text/plain", text(1023)));
        let res = below.call(get("gzip")).await;
        assert_eq!(encoding(&res), None);
        assert!(res.headers().get(header::VARY).is_none(), "a small body never depends on Accept-Encoding");

        let empty = serve(layer(), || typed("text/plain", Body::empty()));
        assert_eq!(encoding(&empty.call(get("gzip")).await), None);

        // A stream of unknown length may grow past any size: compressed.
        let streamed = serve(layer(), || {
            let stream = http_body_util::StreamBody::new(futures_util::stream::iter([Ok::<_, BoxError>(Frame::data(
                Bytes::from_static(b"tiny"),
            ))]));
            typed("text/plain", Body::wrap(stream))
        });
        let res = streamed.call(get("gzip")).await;
        assert_eq!(encoding(&res), Some("gzip"));
        assert_eq!(decode("gzip", &body_bytes(res).await), b"tiny");

        let configured = with(CompressionConfig { min_size: 10, ..Default::default() });
        let service = serve(configured, || typed("text/plain", text(10)));
        assert_eq!(encoding(&service.call(get("gzip")).await), Some("gzip"));
    }

    #[tokio::test]
    async fn missing_content_type_needs_a_known_length() {
        let known = serve(layer(), || Response::new(text(4096).into()));
        assert_eq!(encoding(&known.call(get("gzip")).await), Some("gzip"));
        let unknown = serve(layer(), || {
            let stream = http_body_util::StreamBody::new(futures_util::stream::iter([Ok::<_, BoxError>(Frame::data(
                Bytes::from(text(4096)),
            ))]));
            Response::new(Body::wrap(stream))
        });
        assert_eq!(encoding(&unknown.call(get("gzip")).await), None);
    }

    // ----- headers -----------------------------------------------------------------------------

    #[tokio::test]
    async fn vary_is_merged_without_duplicates() {
        let service = serve(layer(), || {
            let mut res = typed("text/plain", text(4096));
            res.headers_mut().append(header::VARY, HeaderValue::from_static("Origin"));
            res.headers_mut().append(header::VARY, HeaderValue::from_static("Accept, origin"));
            res
        });
        let res = service.call(get("gzip")).await;
        assert_eq!(res.headers().get_all(header::VARY).iter().collect::<Vec<_>>(), ["Origin, Accept, accept-encoding"]);

        let already = serve(layer(), || {
            let mut res = typed("text/plain", text(4096));
            res.headers_mut().insert(header::VARY, HeaderValue::from_static("Accept-Encoding, Cookie"));
            res
        });
        let res = already.call(get("gzip")).await;
        assert_eq!(res.headers().get_all(header::VARY).iter().collect::<Vec<_>>(), ["Accept-Encoding, Cookie"]);

        let star = serve(layer(), || {
            let mut res = typed("text/plain", text(4096));
            res.headers_mut().insert(header::VARY, HeaderValue::from_static("*"));
            res
        });
        let res = star.call(get("gzip")).await;
        assert_eq!(res.headers().get_all(header::VARY).iter().collect::<Vec<_>>(), ["*"]);
    }

    #[tokio::test]
    async fn vary_is_set_when_negotiation_chose_identity() {
        let service = serve(layer(), || typed("text/plain", text(4096)));
        let no_header = http::Request::builder().uri("/").body(Body::empty()).unwrap();
        for req in [no_header, get("identity"), get("deflate")] {
            let res = service.call(req).await;
            assert_eq!(encoding(&res), None);
            assert_eq!(res.headers()[header::VARY], "accept-encoding");
        }
    }

    #[tokio::test]
    async fn validators_and_ranges_follow_the_new_bytes() {
        let service = serve(layer(), || {
            let mut res = typed("text/plain", text(4096));
            let headers = res.headers_mut();
            headers.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
            headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("4096"));
            res
        });
        let res = service.call(get("br")).await;
        assert_eq!(res.headers()[header::ETAG], "W/\"v1\"");
        assert!(res.headers().get(header::ACCEPT_RANGES).is_none());
        assert!(res.headers().get(header::CONTENT_LENGTH).is_none());

        let weak = serve(layer(), || {
            let mut res = typed("text/plain", text(4096));
            res.headers_mut().insert(header::ETAG, HeaderValue::from_static("W/\"v1\""));
            res
        });
        assert_eq!(weak.call(get("br")).await.headers()[header::ETAG], "W/\"v1\"");

        // Not compressed: the validator is left alone.
        let identity = serve(layer(), || {
            let mut res = typed("text/plain", text(4096));
            res.headers_mut().insert(header::ETAG, HeaderValue::from_static("\"v1\""));
            res
        });
        assert_eq!(identity.call(get("identity")).await.headers()[header::ETAG], "\"v1\"");
    }

    // ----- streaming ---------------------------------------------------------------------------

    #[tokio::test]
    async fn server_sent_events_come_out_one_decodable_frame_per_event() {
        for algorithm in ["br", "zstd", "gzip"] {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let body = std::sync::Mutex::new(Some(rx));
            let service = serve(layer(), move || {
                let rx = body.lock().unwrap().take().unwrap();
                typed("text/event-stream", Body::wrap(Channel(rx)))
            });
            tokio::spawn(async move {
                tx.send(Bytes::from_static(b"data: first\n\n")).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
                tx.send(Bytes::from_static(b"data: second\n\n")).await.unwrap();
            });
            let res = service.call(get(algorithm)).await;
            assert_eq!(encoding(&res), Some(algorithm));
            let mut body = res.into_body();
            let mut decoder = Incremental::new(algorithm);
            let first = next_data(&mut body).await;
            assert_eq!(decoder.feed(&first), "data: first\n\n", "{algorithm}");
            let second = next_data(&mut body).await;
            assert_eq!(decoder.feed(&second), "data: first\n\ndata: second\n\n", "{algorithm}");
            // What is left is the end of the stream only.
            let rest = body.collect().await.unwrap().to_bytes();
            assert_eq!(decoder.feed(&rest), "data: first\n\ndata: second\n\n", "{algorithm}");
        }
    }

    #[tokio::test]
    async fn server_sent_events_ready_together_still_flush_separately() {
        // Both events are ready at once, so only the per-frame flush (not the flush when the source
        // goes quiet) can keep them apart.
        let service = serve(layer(), || {
            let stream = http_body_util::StreamBody::new(futures_util::stream::iter([
                Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"data: one\n\n"))),
                Ok(Frame::data(Bytes::from_static(b"data: two\n\n"))),
            ]));
            typed("text/event-stream; charset=utf-8", Body::wrap(stream))
        });
        let mut body = service.call(get("gzip")).await.into_body();
        let mut decoder = Incremental::new("gzip");
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(decoder.feed(&first), "data: one\n\n");
        let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(decoder.feed(&second), "data: one\n\ndata: two\n\n");
    }

    #[tokio::test]
    async fn a_quiet_source_does_not_hold_data_in_the_compressor() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let body = std::sync::Mutex::new(Some(rx));
        let service = serve(layer(), move || {
            let rx = body.lock().unwrap().take().unwrap();
            typed("application/x-ndjson", Body::wrap(Channel(rx)))
        });
        tx.send(Bytes::from_static(b"{\"n\":1}\n")).await.unwrap();
        let mut body = service.call(get("zstd")).await.into_body();
        let mut decoder = Incremental::new("zstd");
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.unwrap().unwrap().unwrap();
        // The sender is still open: the line came out because the source went quiet.
        assert_eq!(decoder.feed(&frame.into_data().unwrap()), "{\"n\":1}\n");
        drop(tx);
    }

    #[tokio::test]
    async fn a_large_stream_is_compressed_as_it_arrives() {
        const CHUNKS: usize = 64;
        const CHUNK: usize = 64 * 1024;
        let made = Arc::new(AtomicUsize::new(0));
        let chunk = Bytes::from(text(CHUNK));
        let counter = made.clone();
        let service = serve(layer(), move || {
            typed("text/plain", Body::wrap(Produce { left: CHUNKS, chunk: chunk.clone(), made: counter.clone() }))
        });
        let mut body = service.call(get("gzip")).await.into_body();
        let mut first_output_after = None;
        let mut largest = 0;
        let mut compressed = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            first_output_after.get_or_insert(made.load(Ordering::SeqCst));
            largest = largest.max(data.len());
            compressed.extend_from_slice(&data);
        }
        let first_output_after = first_output_after.unwrap();
        assert!(first_output_after < CHUNKS / 4, "first output only after {first_output_after} of {CHUNKS} chunks");
        assert!(largest < 4 * CHUNK, "an output frame of {largest} bytes");
        let decoded = decode("gzip", &compressed);
        assert_eq!(decoded.len(), CHUNKS * CHUNK);
        let expected = text(CHUNK);
        assert!(decoded.chunks(CHUNK).all(|c| c == expected.as_bytes()));
    }

    // ----- config --------------------------------------------------------------------------------

    fn from_toml(source: &str) -> Result<Compression, String> {
        let config: CompressionConfig = toml::from_str(source).map_err(|e| e.to_string())?;
        Compression::new(config, &BuildContext::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn config_reads_every_level_form() {
        let levels = |c: Compression| c.algorithms().collect::<Vec<_>>();
        use Algorithm::*;
        assert_eq!(levels(from_toml("").unwrap()), [(Br, 4), (Zstd, 3), (Gzip, 6)]);
        assert_eq!(levels(from_toml("level = \"best\"").unwrap()), [(Br, 11), (Zstd, 19), (Gzip, 9)]);
        assert_eq!(levels(from_toml("level = \"fastest\"").unwrap()), [(Br, 1), (Zstd, 1), (Gzip, 1)]);
        assert_eq!(levels(from_toml("level = 5").unwrap()), [(Br, 5), (Zstd, 5), (Gzip, 5)]);
        assert_eq!(
            levels(from_toml("algorithms = [\"gzip\", \"br\"]\nlevel = { br = 11, gzip = \"fastest\" }").unwrap()),
            [(Gzip, 1), (Br, 11)]
        );
        assert_eq!(
            levels(from_toml("algorithms = [\"zstd\"]\nmin_size = 0\ncontent_types = []").unwrap()),
            [(Zstd, 3)]
        );
    }

    #[test]
    fn config_mistakes_are_reported() {
        let err = |source: &str| from_toml(source).err().unwrap_or_else(|| panic!("accepted: {source}"));
        assert!(err("algorithms = []").contains("at least one"));
        assert!(err("algorithms = [\"gzip\", \"gzip\"]").contains("listed twice"));
        assert!(err("algorithms = [\"deflate\"]").contains("unknown variant"));
        assert!(err("level = 10").contains("gzip level 10 is out of range"));
        assert!(err("level = 20").contains("out of range"));
        assert!(err("level = \"max\"").contains("\"fastest\", \"default\", \"best\""));
        assert!(err("level = { deflate = 1 }").contains("unknown variant"));
        assert!(err("algorithms = [\"gzip\"]\nlevel = { br = 1 }").contains("not in `algorithms`"));
        assert!(err("content_types = [\"images\"]").contains("`images`"));
        assert!(err("content_types = [\"text/*html\"]").contains("`text/*html`"));
        assert!(err("content_types = [\"text/html; charset=utf-8\"]").contains("no parameters"));
        assert!(err("min_sise = 10").contains("unknown field"));
    }

    #[test]
    fn the_default_layer_declares_its_facts() {
        let layer = Compression::default();
        assert_eq!(layer.kind(), "compression");
        assert!(layer.facts().has(Fact::RewritesBody) && layer.facts().has(Fact::FlushesEvents));
    }
}
