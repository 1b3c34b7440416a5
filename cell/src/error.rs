//! Why a cell refused a request, or could not start.

use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum CellError {
    #[error("no user id: use /v1/users/{{user_id}}/... or the X-User-Id header")]
    MissingUserId,
    #[error("user id must match [A-Za-z0-9_-]{{1,64}}")]
    InvalidUserId,
    #[error("slot {slot} is owned by cell {owner} at epoch {epoch}, not by this cell")]
    WrongCell {
        slot: u32,
        owner: String,
        /// Where the owner listens, when this cell knows (not when it was started
        /// from a file whose addresses were still port 0).
        owner_address: Option<String>,
        epoch: u64,
    },
    #[error("no route for {0}")]
    NotFound(String),
    #[error("{0} is not allowed here")]
    MethodNotAllowed(String),
    #[error("cell {0} is not in the deploy file")]
    UnknownCell(String),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl CellError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingUserId | Self::InvalidUserId => StatusCode::BAD_REQUEST,
            Self::WrongCell { .. } => StatusCode::MISDIRECTED_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnknownCell(_) | Self::Metrics(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingUserId => "missing_user_id",
            Self::InvalidUserId => "invalid_user_id",
            Self::WrongCell { .. } => "wrong_cell",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::UnknownCell(_) => "unknown_cell",
            Self::Metrics(_) => "internal",
        }
    }
}
