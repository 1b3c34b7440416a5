//! Why a cell refused a request, or could not start. The status and the stable
//! error code follow from the variant; the message is for people.

use http::StatusCode;
use serde_json::Value;

use crate::store::StoreError;

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
    #[error("{method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed { method: String, allow: &'static str },
    #[error("{message}")]
    InvalidBody {
        /// The offending field, when one is to blame.
        field: Option<&'static str>,
        message: String,
    },
    #[error("{0}")]
    InvalidQuery(String),
    #[error("no item {0:?}")]
    UnknownItem(String),
    #[error("user has no order {0:?}")]
    UnknownOrder(String),
    #[error("{}", sold_out_message(.item, *.remaining))]
    SoldOut { item: String, remaining: u64 },
    #[error("the sale of {0} is closed")]
    SaleClosed(String),
    #[error("no stock of {0} at this cell yet: waiting for a lease from the global zone")]
    StockUnavailable(String),
    #[error("this cell does not serve the global zone now")]
    NotGlobalZone,
    #[error("{to_user} belongs to cell {owner}; transfers across cells are not supported yet")]
    CrossCell { to_user: String, owner: String },
    #[error("a transfer needs two different users")]
    SameUser,
    #[error("the ledger queue is full; retry shortly")]
    Overloaded,
    #[error("the ledger is unavailable: {0}")]
    Ledger(#[from] StoreError),
    #[error("cell {0} is not in the deploy file")]
    UnknownCell(String),
    #[error(
        "the deploy file asks for the {0} ledger, which this build leaves out: rebuild with `--features {0}`"
    )]
    BackendNotBuilt(&'static str),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A peer asked for what belongs to another cell than the one its
    /// certificate names (nor one it stands by for).
    #[error("{caller} may not act for cell {cell}")]
    PeerMismatch { caller: String, cell: String },
}

impl CellError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingUserId
            | Self::InvalidUserId
            | Self::InvalidBody { .. }
            | Self::InvalidQuery(_) => StatusCode::BAD_REQUEST,
            Self::WrongCell { .. } | Self::NotGlobalZone | Self::Ledger(StoreError::Fenced(_)) => {
                StatusCode::MISDIRECTED_REQUEST
            }
            Self::NotFound(_) | Self::UnknownItem(_) | Self::UnknownOrder(_) => {
                StatusCode::NOT_FOUND
            }
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::PeerMismatch { .. } => StatusCode::FORBIDDEN,
            Self::SoldOut { .. } | Self::SaleClosed(_) => StatusCode::CONFLICT,
            Self::CrossCell { .. } | Self::SameUser => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Ledger(StoreError::Internal(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Overloaded | Self::StockUnavailable(_) | Self::Ledger(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::UnknownCell(_) | Self::BackendNotBuilt(_) | Self::Metrics(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingUserId => "missing_user_id",
            Self::InvalidUserId => "invalid_user_id",
            Self::WrongCell { .. } => "wrong_cell",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::InvalidBody { .. } => "invalid_body",
            Self::InvalidQuery(_) => "invalid_query",
            Self::UnknownItem(_) => "unknown_item",
            Self::UnknownOrder(_) => "unknown_order",
            Self::SoldOut { .. } => "sold_out",
            Self::SaleClosed(_) => "sale_closed",
            Self::StockUnavailable(_) => "stock_unavailable",
            Self::NotGlobalZone => "not_global_zone",
            Self::CrossCell { .. } => "cross_cell_not_supported",
            Self::SameUser => "same_user",
            Self::Overloaded => "overloaded",
            Self::Ledger(StoreError::Internal(_)) => "ledger_failed",
            Self::Ledger(StoreError::Fenced(_)) => "fenced",
            Self::Ledger(_) => "ledger_unavailable",
            Self::UnknownCell(_) => "unknown_cell",
            Self::BackendNotBuilt(_) => "backend_not_built",
            Self::Metrics(_) => "internal",
            Self::PeerMismatch { .. } => "peer_mismatch",
        }
    }

    /// Fields beside `code` and `message` in the error object.
    pub fn details(&self) -> Vec<(&'static str, Value)> {
        match self {
            Self::WrongCell {
                slot,
                owner,
                owner_address,
                epoch,
            } => vec![
                ("owner", Value::from(owner.as_str())),
                ("owner_address", Value::from(owner_address.clone())),
                ("slot", Value::from(*slot)),
                ("epoch", Value::from(*epoch)),
            ],
            Self::InvalidBody {
                field: Some(field), ..
            } => vec![("field", Value::from(*field))],
            Self::SoldOut { item, remaining } => vec![
                ("item_id", Value::from(item.as_str())),
                ("remaining", Value::from(*remaining)),
            ],
            Self::SaleClosed(item) | Self::StockUnavailable(item) => {
                vec![("item_id", Value::from(item.as_str()))]
            }
            Self::CrossCell { owner, .. } => vec![("owner", Value::from(owner.as_str()))],
            _ => Vec::new(),
        }
    }

    /// The JSON error body: `code`, `message` and [`CellError::details`].
    pub fn body(&self) -> bytes::Bytes {
        ldc_serve::error_body(self.code(), self.to_string(), self.details())
    }

    /// Whether the client may send the same request again later: the cell is
    /// overloaded or its store unreachable, not broken.
    pub fn retry_safe(&self) -> bool {
        match self {
            Self::Overloaded | Self::StockUnavailable(_) => true,
            Self::Ledger(err) => !matches!(err, StoreError::Internal(_) | StoreError::Fenced(_)),
            _ => false,
        }
    }
}

fn sold_out_message(item: &str, remaining: u64) -> String {
    match remaining {
        0 => format!("{item} is sold out at this cell"),
        n => format!("only {n} of {item} left at this cell"),
    }
}
