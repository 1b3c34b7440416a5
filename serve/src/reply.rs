//! JSON responses, including the error shape every ldc endpoint uses:
//! `{"error": {"code": "...", "message": "..."}}`.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;
use serde_json::{Map, Value};

/// Body of every response ldc builds itself.
pub type Body = Full<Bytes>;

static JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A JSON response with `status`.
pub fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    // Our own response types serialize infallibly (no maps with non-string keys).
    let body = serde_json::to_vec(value).unwrap_or_default();
    json_bytes(status, Bytes::from(body))
}

/// A response with `status` and a body that is JSON already.
pub fn json_bytes(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, JSON.clone());
    response
}

/// An error response: `code` is a stable snake_case identifier for programs,
/// `message` a sentence for people; `extra` adds fields to the error object.
pub fn json_error(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
    extra: impl IntoIterator<Item = (&'static str, Value)>,
) -> Response<Body> {
    json_bytes(status, error_body(code, message, extra))
}

/// The body of [`json_error`], for an answer sent many times.
pub fn error_body(
    code: &str,
    message: impl Into<String>,
    extra: impl IntoIterator<Item = (&'static str, Value)>,
) -> Bytes {
    let mut error = Map::new();
    error.insert("code".to_owned(), Value::from(code));
    error.insert("message".to_owned(), Value::from(message.into()));
    for (key, value) in extra {
        error.insert(key.to_owned(), value);
    }
    let mut body = Map::new();
    body.insert("error".to_owned(), Value::Object(error));
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// An error and all its sources, `outer: inner: innermost`, for logs.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}
