//! Requests and response readers the middleware tests share, so each test file keeps only the
//! helpers that say something about its own layer.

use bytes::Bytes;
use http::header::AsHeaderName;
use http_body_util::BodyExt;

use crate::http::{Body, ConnectionInfo, Request, Response};

/// A request with an empty body: `method` to `uri`, carrying `headers` in order (a name given
/// twice is sent on two lines).
pub(crate) fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request {
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::empty()).expect("a valid test request")
}

/// `req` as if it arrived from `client` (an IP address) on a loopback listener: what the layers
/// that key on or log the client address read.
pub(crate) fn from_client(mut req: Request, client: &str) -> Request {
    let peer = std::net::SocketAddr::new(client.parse().expect("a client IP address"), 50_000);
    req.extensions_mut().insert(ConnectionInfo::new(peer, "127.0.0.1:8080".parse().unwrap()));
    req
}

/// A response header as text, `None` when it is absent.
pub(crate) fn header(res: &Response, name: impl AsHeaderName) -> Option<&str> {
    res.headers().get(name).map(|v| v.to_str().expect("a text header value"))
}

/// The whole response body.
pub(crate) async fn body_bytes(res: Response) -> Bytes {
    res.into_body().collect().await.expect("a body that does not fail").to_bytes()
}

/// The whole response body as UTF-8 text.
pub(crate) async fn body_text(res: Response) -> String {
    String::from_utf8(body_bytes(res).await.to_vec()).expect("a UTF-8 body")
}

#[test]
fn requests_carry_their_method_target_headers_and_client() {
    let req = from_client(request("HEAD", "/a?b=1", &[("accept", "text/html"), ("accept", "*/*")]), "203.0.113.7");
    assert_eq!(req.method(), http::Method::HEAD);
    assert_eq!(req.uri(), "/a?b=1");
    assert_eq!(req.headers().get_all("accept").iter().count(), 2);
    assert_eq!(
        req.extensions().get::<ConnectionInfo>().unwrap().client,
        "203.0.113.7".parse::<std::net::IpAddr>().unwrap()
    );
}
