//! Why the router answered a request itself instead of with a cell's response.

use http::StatusCode;

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
    #[error("{method} is not allowed here (allowed: {allow})")]
    MethodNotAllowed { method: String, allow: &'static str },
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
            Self::MissingUserId | Self::InvalidUserId => StatusCode::BAD_REQUEST,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::UserMismatch => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
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
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
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
