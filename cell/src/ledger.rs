//! The ledger: accounts, double-entry postings, orders and idempotency records,
//! written once over the [`Transaction`] and [`Snapshot`] traits.
//!
//! Money is `i64` minor units with checked arithmetic. Every movement is two
//! postings that sum to zero: a deposit moves money from the cell's `external`
//! account to the user, a transfer from user to user, an order from the user to the
//! cell's `merchant` account (so no order needs another cell). User balances never go
//! negative; `external` is minus everything ever deposited.

mod audit;
pub mod gz;
pub mod hold;
pub mod keys;
mod lease;
mod money;
mod ownership;
mod queries;
mod records;

use http::StatusCode;
use serde::Serialize;
use serde_json::json;

pub use audit::{Audit, ItemAudit, audit};
pub use lease::{StockWrite, item_metas, stock};
use money::{Holder, Refusal};
pub use ownership::{check_owner, claim};
pub use queries::{balance, confirmed_orders, order_by_seq, page};
pub use records::{GlobalItem, ItemMeta, Order, Posting, PostingKind, Stock};
use records::{Outcome, to_json};

use crate::store::{Overlay, ScanOrder, Snapshot, StoreError, Transaction, prefix_range};

/// A write, as the committer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// A user's request.
    User(Request),
    /// A change to the stock records: leases at a cell, the global zone's books.
    Stock(StockWrite),
}

impl From<Request> for Write {
    fn from(request: Request) -> Self {
        Self::User(request)
    }
}

/// A user's write: validated, for a user this cell owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub user: String,
    pub slot: u32,
    pub request_id: String,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Deposit {
        amount: i64,
    },
    Transfer {
        to_user: String,
        to_slot: u32,
        amount: i64,
    },
    Order {
        item_id: String,
        quantity: u32,
        /// Price per unit when the order was placed.
        price: i64,
    },
}

impl Request {
    /// Identifies what was asked, so a reused request id with another body is caught.
    pub fn fingerprint(&self) -> u64 {
        let text = match &self.command {
            Command::Deposit { amount } => format!("deposit|{amount}"),
            Command::Transfer {
                to_user, amount, ..
            } => format!("transfer|{to_user}|{amount}"),
            Command::Order {
                item_id, quantity, ..
            } => format!("order|{item_id}|{quantity}"),
        };
        xxhash_rust::xxh3::xxh3_64(text.as_bytes())
    }
}

/// What a request's client is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Vec<u8>,
    /// The request's effects were applied by this very transaction (not a replay,
    /// not a refusal).
    pub applied: bool,
}

impl Reply {
    fn new(status: StatusCode, body: &impl Serialize, applied: bool) -> Self {
        Self {
            status,
            body: to_json(body),
            applied,
        }
    }
}

/// Applies one write inside the batch transaction `txn`. Only store failures are
/// errors: they fail the batch.
pub async fn apply<T: Transaction>(
    txn: &mut T,
    write: &Write,
    now_ms: u64,
) -> Result<Reply, StoreError> {
    match write {
        Write::User(request) => apply_request(txn, request, now_ms).await,
        Write::Stock(write) => lease::apply(txn, write, now_ms).await,
    }
}

/// The keys [`apply`] reads for `write`, known before applying it, so that a batch
/// reads them in one round trip ([`Transaction::read_ahead`]). Stock writes are
/// rare and read their records one by one.
pub fn reads(write: &Write) -> Vec<Vec<u8>> {
    let Write::User(request) = write else {
        return Vec::new();
    };
    let user = Holder::User(request.slot, &request.user);
    let outcome = keys::request(request.slot, &request.user, &request.request_id);
    match &request.command {
        Command::Deposit { .. } => vec![
            outcome,
            Holder::System(keys::EXTERNAL).account_key(),
            user.account_key(),
        ],
        Command::Transfer {
            to_user, to_slot, ..
        } => vec![
            outcome,
            user.account_key(),
            Holder::User(*to_slot, to_user).account_key(),
        ],
        Command::Order { item_id, .. } => vec![
            outcome,
            keys::stock(item_id),
            user.account_key(),
            Holder::System(keys::MERCHANT).account_key(),
        ],
    }
}

/// A request id seen before answers its first outcome (or 409 `request_id_reused`
/// for another body); a refusal is recorded as the outcome and leaves no other
/// trace; a success writes its postings and its outcome.
async fn apply_request<T: Transaction>(
    txn: &mut T,
    request: &Request,
    now_ms: u64,
) -> Result<Reply, StoreError> {
    let fingerprint = request.fingerprint();
    let outcome_key = keys::request(request.slot, &request.user, &request.request_id);
    if let Some(bytes) = txn.get(&outcome_key).await? {
        let first = Outcome::decode(&bytes)?;
        if first.fingerprint != fingerprint {
            let body = json!({"error": {
                "code": "request_id_reused",
                "message": format!("request_id {} was used for a different request", request.request_id),
            }});
            return Ok(Reply::new(StatusCode::CONFLICT, &body, false));
        }
        let status = StatusCode::from_u16(first.status)
            .map_err(|_| StoreError::Internal("corrupt request record status".to_owned()))?;
        return Ok(Reply {
            status,
            body: first.body,
            applied: false,
        });
    }
    let mut overlay = Overlay::new(txn);
    let decided = match &request.command {
        Command::Deposit { amount } => money::deposit(&mut overlay, request, *amount, now_ms).await,
        Command::Transfer {
            to_user,
            to_slot,
            amount,
        } => money::transfer(&mut overlay, request, to_user, *to_slot, *amount, now_ms).await,
        Command::Order {
            item_id,
            quantity,
            price,
        } => money::order(&mut overlay, request, item_id, *quantity, *price, now_ms).await,
    };
    let (reply, overlay) = match decided {
        Ok(body) => (Reply::new(StatusCode::CREATED, &body, true), Some(overlay)),
        Err(Refusal::Declined(status, body)) => (Reply::new(status, &body, false), None),
        Err(Refusal::Store(err)) => return Err(err),
    };
    let record = Outcome {
        fingerprint,
        status: reply.status.as_u16(),
        body: reply.body.clone(),
    };
    match overlay {
        Some(mut overlay) => {
            overlay.put(outcome_key, record.encode());
            overlay.apply().await?;
        }
        None => txn.put(outcome_key, record.encode()).await?,
    }
    Ok(reply)
}

/// Records an item's stock share the first time the cell sees the item; returns
/// the item's stock record.
pub async fn receive_stock<T: Transaction>(
    txn: &mut T,
    item_id: &str,
    share: u64,
) -> Result<Stock, StoreError> {
    let key = keys::stock(item_id);
    let stock = match txn.get_for_update(&key).await? {
        Some(bytes) => Stock::decode(&bytes)?,
        None => {
            let stock = Stock {
                received: share,
                ..Stock::default()
            };
            txn.put(key, stock.encode()).await?;
            stock
        }
    };
    Ok(stock)
}

/// Every key and value under `prefix`, read in pages.
pub(crate) async fn scan_all<S: Snapshot>(
    snapshot: &mut S,
    prefix: &[u8],
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
    let mut found = Vec::new();
    let mut range = prefix_range(prefix);
    loop {
        let page = snapshot
            .scan(range.clone(), SCAN_PAGE, ScanOrder::Ascending)
            .await?;
        let full = page.len() == SCAN_PAGE;
        if let Some((last, _)) = page.last() {
            range.start = successor(last);
        }
        found.extend(page);
        if !full {
            return Ok(found);
        }
    }
}

/// Keys read per scan call by the whole-ledger walks (audit, recovery).
pub(crate) const SCAN_PAGE: usize = 4096;

/// The smallest key after `key`.
pub(crate) fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}
