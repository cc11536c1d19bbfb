//! Negotiation, every skip rule, HEAD and 304 metadata, entity tags, streaming and server-sent
//! events, and the configuration.

use super::*;
use crate::http::{BoxError, Stack, response};
use crate::middleware::test_support::{self, body_bytes, request};
use crate::stack::Service;
use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

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

fn with(build: impl FnOnce(CompressionBuilder) -> CompressionBuilder) -> Compression {
    build(Compression::builder()).build().unwrap()
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
    request("GET", "/", &[("accept-encoding", accept_encoding)])
}

fn encoding(res: &Response) -> Option<&str> {
    test_support::header(res, header::CONTENT_ENCODING)
}

fn chosen(accept_encoding: &str) -> Option<Algorithm> {
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(accept_encoding).unwrap());
    negotiate(&headers, &layer().algorithms).map(|(a, _)| a)
}

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
        let layer = with(|b| b.level(level));
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
    for garbage in [
        "gzip;q=abc",
        "gzip;q=1.5",
        "gzip;q=2",
        "gzip;q=.5",
        "gzip;q=0.1234",
        "gzip;level=9",
        "gz ip",
        "gzip;q",
        "gzip;q=0.5;level=9",
        "gzip;q=0.5;q=0.7",
    ] {
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
    let layer = with(|b| b.algorithms([Algorithm::Gzip, Algorithm::Br]));
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("br, gzip, zstd"));
    assert_eq!(negotiate(&headers, &layer.algorithms).map(|(a, _)| a), Some(Algorithm::Gzip));
    headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("zstd"));
    assert_eq!(negotiate(&headers, &layer.algorithms), None);
}

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
    let layer = with(|b| b.content_types(["text/*", "!text/html"]));
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

    let configured = with(|b| b.min_size(10));
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

fn builder_error(build: impl FnOnce(CompressionBuilder) -> CompressionBuilder) -> ConfigError {
    build(Compression::builder()).build().expect_err("invalid settings")
}

#[test]
fn the_builder_resolves_levels() {
    let levels = |c: Compression| c.algorithms().collect::<Vec<_>>();
    use Algorithm::*;
    assert_eq!(levels(Compression::default()), [(Br, 4), (Zstd, 3), (Gzip, 6)]);
    assert_eq!(levels(with(|b| b.level(Level::Best))), [(Br, 11), (Zstd, 19), (Gzip, 9)]);
    assert_eq!(
        levels(with(|b| b.level(Level::Best).level_for(Gzip, Level::Fastest))),
        [(Br, 11), (Zstd, 19), (Gzip, 1)]
    );
    assert_eq!(levels(with(|b| b.algorithms([Zstd]).level_for(Zstd, Level::Precise(19)))), [(Zstd, 19)]);
}

/// The builder rejects what the TOML table rejects, naming the same key.
#[test]
fn builder_mistakes_name_the_toml_key() {
    let field = |e: ConfigError| e.field.unwrap();
    use Algorithm::*;
    assert_eq!(field(builder_error(|b| b.algorithms([]))), "algorithms");
    assert_eq!(field(builder_error(|b| b.algorithms([Gzip, Gzip]))), "algorithms");
    let e = builder_error(|b| b.level(Level::Precise(10)));
    assert_eq!((e.field, e.message.as_str()), (Some("level"), "gzip level 10 is out of range: expected 1 to 9"));
    assert_eq!(field(builder_error(|b| b.level_for(Br, Level::Precise(12)))), "level");
    assert_eq!(field(builder_error(|b| b.level_for(Zstd, Level::Precise(0)))), "level");
    assert_eq!(field(builder_error(|b| b.algorithms([Gzip]).level_for(Br, Level::Fastest))), "level");
    for bad in ["images", "text/*html", "text/html; charset=utf-8", "*/plain", "!"] {
        let e = builder_error(|b| b.content_types(["text/plain", bad]));
        assert_eq!(e.field, Some("content_types"), "{bad}");
    }
    // The valid neighbours build.
    with(|b| b.level_for(Br, Level::Precise(0)).content_types(Vec::<String>::new()));
}

#[cfg(feature = "config")]
mod from_config {
    use super::*;
    use crate::middleware::BuildContext;

    fn from_toml(source: &str) -> Result<Compression, String> {
        let config: CompressionConfig = toml::from_str(source).map_err(|e| e.to_string())?;
        Compression::from_config(config, &BuildContext::default()).map_err(|e| e.to_string())
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
    fn config_errors_name_the_same_keys_as_the_builder() {
        let field = |source: &str| {
            let config: CompressionConfig = toml::from_str(source).unwrap();
            Compression::from_config(config, &BuildContext::default()).unwrap_err().field.unwrap()
        };
        assert_eq!(field("algorithms = []"), "algorithms");
        assert_eq!(field("level = 10"), "level");
        assert_eq!(field("algorithms = [\"gzip\"]\nlevel = { br = 1 }"), "level");
        assert_eq!(field("content_types = [\"images\"]"), "content_types");
    }
}

#[test]
fn the_default_layer_declares_its_facts() {
    let layer = Compression::default();
    assert_eq!(layer.kind(), "compression");
    assert!(layer.facts().has(Fact::RewritesBody) && layer.facts().has(Fact::FlushesEvents));
}
