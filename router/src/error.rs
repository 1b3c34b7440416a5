//! Why the router answered a request itself instead of with a cell's response.

use http::StatusCode;
use ldc_serve::{BodyError, ChunkError, HeadError, Http1Error};

use crate::auth::{AuthError, Refusal};

/// A request the router could not (or would not) hand to a cell. The status, the
/// error code and whether a client may safely retry follow from the variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no user id: use /v1/users/{{user_id}}/... or the X-User-Id header")]
    MissingUserId,
    #[error("user id must match [A-Za-z0-9_-]{{1,64}}")]
    InvalidUserId,
    #[error("no route for {0}")]
    NotFound(String),
    #[error("{0} is not allowed here")]
    MethodNotAllowed(String),
    #[error("malformed request: {0}")]
    BadRequest(String),
    #[error("request head is larger than {0} bytes")]
    HeadTooLarge(usize),
    #[error("request has more than {0} header lines")]
    TooManyHeaders(usize),
    #[error("request body is larger than {0} bytes")]
    BodyTooLarge(u64),
    #[error("request body not received within {0} ms")]
    BodyTimeout(u64),
    #[error("cannot read the request body: {0}")]
    InvalidBody(String),
    #[error("cell {0} cannot be reached")]
    CellUnavailable(String),
    #[error("no healthy cell serves the slots of cell {0} now")]
    NoHolder(String),
    #[error("the slots of cell {0} are moving between cells; retry shortly")]
    ShardMoving(String),
    #[error("cell {0} refused the request before starting it; retry shortly")]
    CellBusy(String),
    #[error(
        "cell {0} had no free stream for {1} ms (all taken by requests in progress); the request was not sent"
    )]
    CellSaturated(String, u64),
    #[error("cell {0} failed while serving the request")]
    CellFailed(String),
    #[error("cell {0} did not answer within {1} ms")]
    CellTimeout(String, u64),
    #[error("{0}")]
    Unauthenticated(Refusal),
    #[error("the token is another user's")]
    UserMismatch,
}

impl RouteError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingUserId | Self::InvalidUserId | Self::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::HeadTooLarge(_) | Self::TooManyHeaders(_) => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::UserMismatch => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::InvalidBody(_) => StatusCode::BAD_REQUEST,
            Self::CellUnavailable(_)
            | Self::NoHolder(_)
            | Self::ShardMoving(_)
            | Self::CellBusy(_)
            | Self::CellSaturated(..) => StatusCode::SERVICE_UNAVAILABLE,
            Self::CellFailed(_) => StatusCode::BAD_GATEWAY,
            Self::CellTimeout(..) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingUserId => "missing_user_id",
            Self::InvalidUserId => "invalid_user_id",
            Self::BadRequest(_) => "bad_request",
            Self::HeadTooLarge(_) | Self::TooManyHeaders(_) => "head_too_large",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::BodyTooLarge(_) => "body_too_large",
            Self::BodyTimeout(_) => "body_timeout",
            Self::InvalidBody(_) => "invalid_body",
            Self::CellUnavailable(_) | Self::NoHolder(_) => "cell_unavailable",
            Self::ShardMoving(_) => "shard_moving",
            Self::CellBusy(_) | Self::CellSaturated(..) => "cell_busy",
            Self::CellFailed(_) => "cell_failed",
            Self::CellTimeout(..) => "cell_timeout",
            Self::Unauthenticated(refusal) => refusal.code(),
            Self::UserMismatch => "user_mismatch",
        }
    }

    /// Whether no cell applied the request, so that any request may be sent again
    /// (these answers carry `Retry-After`). After `CellFailed` or `CellTimeout` the
    /// cell may have applied it.
    pub fn retry_safe(&self) -> bool {
        matches!(
            self,
            Self::CellUnavailable(_)
                | Self::NoHolder(_)
                | Self::ShardMoving(_)
                | Self::CellBusy(_)
                | Self::CellSaturated(..)
        )
    }
}

/// Why a router could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot register the router's metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl From<Http1Error> for RouteError {
    fn from(error: Http1Error) -> Self {
        match error {
            Http1Error::Head(HeadError::TooLarge(max))
            | Http1Error::Chunked(ChunkError::TrailersTooLarge(max)) => Self::HeadTooLarge(max),
            Http1Error::Head(HeadError::TooManyHeaders(max)) => Self::TooManyHeaders(max),
            Http1Error::Head(error) => Self::BadRequest(error.to_string()),
            Http1Error::Chunked(ChunkError::TooLarge(max)) | Http1Error::BodyTooLarge(max) => {
                Self::BodyTooLarge(max)
            }
            Http1Error::Chunked(error) => Self::InvalidBody(error.to_string()),
            Http1Error::BodyTimeout(waited) => Self::BodyTimeout(waited.as_millis() as u64),
        }
    }
}

impl From<BodyError> for RouteError {
    fn from(error: BodyError) -> Self {
        match error {
            BodyError::TooLarge(max) => Self::BodyTooLarge(max),
            BodyError::Unreadable(cause) => Self::InvalidBody(cause),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// What a client is told: status, code and message.
    fn told(error: impl Into<RouteError>) -> (u16, &'static str, String) {
        let error = error.into();
        (error.status().as_u16(), error.code(), error.to_string())
    }

    #[test]
    fn unreadable_http1_requests_are_answered_by_where_they_broke() {
        let cases: [(Http1Error, (u16, &str, &str)); 8] = [
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
                Http1Error::BodyTooLarge(1024),
                (
                    413,
                    "body_too_large",
                    "request body is larger than 1024 bytes",
                ),
            ),
            (
                Http1Error::BodyTimeout(Duration::from_millis(1500)),
                (
                    408,
                    "body_timeout",
                    "request body not received within 1500 ms",
                ),
            ),
        ];
        for (error, (status, code, message)) in cases {
            assert_eq!(told(error), (status, code, message.to_owned()));
        }
    }

    #[test]
    fn unreadable_http2_bodies_are_answered_413_or_400() {
        assert_eq!(
            told(BodyError::TooLarge(1024)),
            (
                413,
                "body_too_large",
                "request body is larger than 1024 bytes".into()
            )
        );
        assert_eq!(
            told(BodyError::Unreadable("stream reset".into())),
            (
                400,
                "invalid_body",
                "cannot read the request body: stream reset".into()
            )
        );
    }
}
