//! Why a request was refused before it reached its handler, and what the client
//! is told: one mapping for every listener of every process.

use std::time::Duration;

use http::{Response, StatusCode};

use super::chunked::ChunkError;
use super::parse::HeadError;
use crate::body::BodyError;
use crate::reply::{Body, json_error};

/// Why a request was refused before it reached its handler.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Head(#[from] HeadError),
    #[error(transparent)]
    Chunked(#[from] ChunkError),
    /// Declared or found larger than [`super::Http1Limits::max_body_bytes`].
    #[error("request body is larger than {0} bytes")]
    BodyTooLarge(u64),
    #[error("request body not received within {} ms", .0.as_millis())]
    BodyTimeout(Duration),
    /// An HTTP/2 body whose stream failed.
    #[error("cannot read the request body: {0}")]
    BodyUnreadable(String),
}

impl From<BodyError> for RequestError {
    fn from(error: BodyError) -> Self {
        match error {
            BodyError::TooLarge(max) => Self::BodyTooLarge(max),
            BodyError::Unreadable(cause) => Self::BodyUnreadable(cause),
        }
    }
}

impl RequestError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Head(HeadError::TooLarge(_) | HeadError::TooManyHeaders(_))
            | Self::Chunked(ChunkError::TrailersTooLarge(_)) => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Self::Chunked(ChunkError::TooLarge(_)) | Self::BodyTooLarge(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Head(_) | Self::Chunked(_) | Self::BodyUnreadable(_) => StatusCode::BAD_REQUEST,
        }
    }

    pub fn code(&self) -> &'static str {
        match self.status() {
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "head_too_large",
            StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            StatusCode::REQUEST_TIMEOUT => "body_timeout",
            _ if matches!(self, Self::Head(_)) => "bad_request",
            _ => "invalid_body",
        }
    }

    /// What the client is told: where the request broke.
    fn message(&self) -> String {
        match self {
            Self::Head(HeadError::TooLarge(_) | HeadError::TooManyHeaders(_))
            | Self::Chunked(ChunkError::TooLarge(_))
            | Self::BodyTooLarge(_)
            | Self::BodyTimeout(_)
            | Self::BodyUnreadable(_) => self.to_string(),
            Self::Chunked(ChunkError::TrailersTooLarge(max)) => {
                HeadError::TooLarge(*max).to_string()
            }
            Self::Head(error) => format!("malformed request: {error}"),
            Self::Chunked(error) => format!("cannot read the request body: {error}"),
        }
    }

    /// The JSON answer to this refusal.
    pub fn response(&self) -> Response<Body> {
        json_error(self.status(), self.code(), self.message(), [])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_requests_are_answered_by_where_they_broke() {
        let cases: [(RequestError, (u16, &str, &str)); 10] = [
            (
                HeadError::TooLarge(65536).into(),
                (
                    431,
                    "head_too_large",
                    "request head is larger than 65536 bytes",
                ),
            ),
            (
                HeadError::TooManyHeaders(100).into(),
                (
                    431,
                    "head_too_large",
                    "request has more than 100 header lines",
                ),
            ),
            (
                HeadError::LengthAndEncoding.into(),
                (
                    400,
                    "bad_request",
                    "malformed request: Transfer-Encoding and Content-Length together",
                ),
            ),
            (
                ChunkError::InvalidSize.into(),
                (
                    400,
                    "invalid_body",
                    "cannot read the request body: invalid chunk size",
                ),
            ),
            (
                ChunkError::TooLarge(1024).into(),
                (
                    413,
                    "body_too_large",
                    "request body is larger than 1024 bytes",
                ),
            ),
            (
                ChunkError::TrailersTooLarge(65536).into(),
                (
                    431,
                    "head_too_large",
                    "request head is larger than 65536 bytes",
                ),
            ),
            (
                RequestError::BodyTooLarge(1024),
                (
                    413,
                    "body_too_large",
                    "request body is larger than 1024 bytes",
                ),
            ),
            (
                RequestError::BodyTimeout(Duration::from_millis(1500)),
                (
                    408,
                    "body_timeout",
                    "request body not received within 1500 ms",
                ),
            ),
            (
                BodyError::TooLarge(1024).into(),
                (
                    413,
                    "body_too_large",
                    "request body is larger than 1024 bytes",
                ),
            ),
            (
                BodyError::Unreadable("stream reset".into()).into(),
                (
                    400,
                    "invalid_body",
                    "cannot read the request body: stream reset",
                ),
            ),
        ];
        for (error, (status, code, message)) in cases {
            assert_eq!(
                (error.status().as_u16(), error.code(), error.message()),
                (status, code, message.to_owned())
            );
            let response = error.response();
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers()["content-type"], "application/json");
        }
    }
}
