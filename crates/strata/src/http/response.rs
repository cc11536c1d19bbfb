//! Small constructors for the responses layers and apps make.

use http::{HeaderValue, StatusCode, header};

use super::{Body, GeneratedError, Response};

/// A `text/plain; charset=utf-8` response.
pub fn text(status: StatusCode, body: impl Into<Body>) -> Response {
    with_type(status, "text/plain; charset=utf-8", body)
}

/// An `application/json` response from any serializable value.
pub fn json<T: serde_core::Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    // Serializing plain data (maps, strings, numbers) cannot fail; fall back to a 500 if a
    // caller's custom Serialize impl does.
    match serde_json::to_vec(value) {
        Ok(bytes) => with_type(status, "application/json", bytes),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n"),
    }
}

/// A JSON error body `{"error": message}` with the given status.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    json(status, &serde_json::json!({ "error": message.into() }))
}

/// A response with the given status, content type and body.
pub fn with_type(status: StatusCode, content_type: &'static str, body: impl Into<Body>) -> Response {
    let mut res = Response::new(body.into());
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// An error strata made itself (a proxy's 502, a timeout's 504), in plain text —
/// `504 Gateway Timeout`, a blank line, then `detail` — and marked [`GeneratedError`] with `detail`,
/// so an `errors` layer outside reformats it for the client's `Accept`. `detail` is a fixed sentence
/// written for clients, never text built from a request or an error value.
pub fn generated_error(status: StatusCode, detail: &'static str) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    let mut res = text(status, format!("{} {reason}\n\n{detail}\n", status.as_u16()));
    res.extensions_mut().insert(GeneratedError::with_detail(detail));
    res
}

/// An empty response with the given status.
pub fn status(status: StatusCode) -> Response {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = status;
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_set_status_and_type() {
        let r = json_error(StatusCode::BAD_REQUEST, "missing field `title`");
        assert_eq!(r.status(), 400);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(r.body().as_bytes().unwrap(), br#"{"error":"missing field `title`"}"#);
        assert_eq!(text(StatusCode::OK, "hi").headers()[header::CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(status(StatusCode::NO_CONTENT).status(), 204);
    }

    #[test]
    fn generated_errors_carry_their_detail_in_text_and_in_the_marker() {
        let r = generated_error(StatusCode::BAD_GATEWAY, "The upstream server did not answer.");
        assert_eq!(r.status(), 502);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(r.body().as_bytes().unwrap(), b"502 Bad Gateway\n\nThe upstream server did not answer.\n");
        assert_eq!(
            r.extensions().get::<GeneratedError>().and_then(|g| g.detail()),
            Some("The upstream server did not answer.")
        );
    }
}
