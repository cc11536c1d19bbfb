//! HTTP as one instantiation of the core: [`Request`], [`Response`], [`Body`] and response helpers.

mod body;
pub mod headers;
pub mod response;

pub use body::{Body, BodyError, BoxError};

/// An HTTP request as strata's layers see it.
pub type Request = http::Request<Body>;
/// An HTTP response as strata's layers see it.
pub type Response = http::Response<Body>;
/// The rest of an HTTP stack, as seen from inside one layer.
pub type Next = crate::stack::Next<Request, Response>;
/// An HTTP stack.
pub type Stack = crate::stack::Stack<Request, Response>;
/// An HTTP stack wrapped around its endpoint.
pub type Service = crate::stack::Service<Request, Response>;
/// A named HTTP layer.
pub type Layer = crate::stack::Layer<Request, Response>;

impl crate::stack::FromPanic for Response {
    /// A bare 500: the panic message stays in the logs, never in the response.
    fn from_panic(_panic: &crate::stack::Panic<'_>) -> Self {
        response::text(http::StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n")
    }
}

/// Where a request came from: set by the server on every request it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The address of the TCP peer (a client, or a proxy in front of strata).
    pub peer: std::net::SocketAddr,
    /// The local address the connection was accepted on.
    pub local: std::net::SocketAddr,
}

/// The request id of the current request, set by the `request_id` middleware in the request's
/// extensions for inner layers, logs and upstreams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub http::HeaderValue);

/// The user an authentication layer verified, set in the request's extensions for inner layers
/// (logs, rate-limit keys, upstream headers). Also copied into the response's extensions so that
/// layers outside the authentication layer (an access log) can see it on the way out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthenticatedUser(pub std::sync::Arc<str>);
