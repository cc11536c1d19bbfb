//! A finished request as OTLP spans: one SERVER span, then one span per layer it entered, each the
//! parent of the next, as the onion nests them.
//!
//! Attributes follow OpenTelemetry's HTTP semantic conventions (`http.request.method`,
//! `http.route`, `url.path`, `http.response.status_code`, `server.address`, `user_agent.original`,
//! `client.address`); each layer's span has `strata.layer.kind`, and the one that answered by
//! itself `strata.layer.answered = true`. The target's span is a CLIENT span for an upstream
//! route (named after the method, with the upstream's `server.address`) and an INTERNAL one
//! named `app` for a built-in app.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span::SpanKind, status::StatusCode};

use super::{Finished, new_span_id};

/// Appends the spans of `finished` to `out`.
pub fn append(finished: &Finished, out: &mut Vec<Span>) {
    let request = &finished.request;
    let route = &request.route;
    let method = request.method.as_str();
    let trace_id = request.trace_id.to_vec();
    let trace_state = request.trace_state.as_ref().and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();

    let mut attributes = vec![
        text("http.request.method", method),
        text("url.path", request.uri.path()),
        int("http.response.status_code", i64::from(finished.status.as_u16())),
    ];
    if let Some(name) = &route.name {
        attributes.push(text("http.route", name));
    }
    let host = request.host.as_ref().and_then(|h| h.to_str().ok()).or(request.uri.host());
    if let Some(host) = host {
        attributes.push(text("server.address", host_without_port(host)));
    }
    if let Some(agent) = request.user_agent.as_ref().and_then(|v| v.to_str().ok()) {
        attributes.push(text("user_agent.original", agent));
    }
    if let Some(client) = request.client {
        attributes.push(text("client.address", &client.to_string()));
    }
    let server_error = finished.status.is_server_error();
    out.push(Span {
        trace_id: trace_id.clone(),
        span_id: request.server_span.to_vec(),
        trace_state: trace_state.clone(),
        parent_span_id: request.parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: match &route.name {
            Some(name) => format!("{method} {name}"),
            None => method.to_string(),
        },
        kind: SpanKind::Server as i32,
        start_time_unix_nano: finished.unix_nanos(request.started),
        end_time_unix_nano: finished.unix_nanos(finished.ended),
        attributes,
        status: server_error.then(|| Status { code: StatusCode::Error as i32, message: String::new() }),
        ..Default::default()
    });

    let origin = finished.timer.origin();
    let answered = finished.timer.answered_by();
    let layers: Vec<_> = finished.timer.layers().collect();
    let last = layers.len().saturating_sub(1);
    let mut parent = request.server_span;
    for (i, layer) in layers.iter().enumerate() {
        // The layers entered are the outer ones: once one was not, none inside it was.
        let Some(entered) = layer.entered else { break };
        let is_target = i == last;
        let span_id = if is_target { request.target_span } else { new_span_id() };
        let kind = route.kinds.get(i).copied().unwrap_or("app");
        let mut attributes = vec![text("strata.layer.kind", kind)];
        if answered == Some(i) && !is_target {
            attributes.push(boolean("strata.layer.answered", true));
        }
        let (name, span_kind) = match (&route.upstream, is_target) {
            (Some(upstream), true) => {
                attributes.push(text("http.request.method", method));
                if let Some(address) = &upstream.address {
                    attributes.push(text("server.address", address));
                }
                if let Some(port) = upstream.port {
                    attributes.push(int("server.port", i64::from(port)));
                }
                (method.to_string(), SpanKind::Client)
            }
            _ => (layer.name.to_string(), SpanKind::Internal),
        };
        let start = origin + entered;
        out.push(Span {
            trace_id: trace_id.clone(),
            span_id: span_id.to_vec(),
            trace_state: trace_state.clone(),
            parent_span_id: parent.to_vec(),
            name,
            kind: span_kind as i32,
            start_time_unix_nano: finished.unix_nanos(start),
            end_time_unix_nano: finished.unix_nanos(start + layer.inclusive),
            attributes,
            ..Default::default()
        });
        parent = span_id;
    }
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `::1`.
fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.split(':').next().unwrap_or(host)
}

fn text(key: &str, value: &str) -> KeyValue {
    attribute(key, any_value::Value::StringValue(value.to_string()))
}

fn int(key: &str, value: i64) -> KeyValue {
    attribute(key, any_value::Value::IntValue(value))
}

fn boolean(key: &str, value: bool) -> KeyValue {
    attribute(key, any_value::Value::BoolValue(value))
}

fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(host_without_port("example.com:8080"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:80"), "::1");
    }
}
