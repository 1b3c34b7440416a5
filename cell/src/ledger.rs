//! The ledger: accounts, double-entry postings, orders and idempotency records,
//! written once over the [`Transaction`] and [`Snapshot`] traits.
//!
//! Money is `i64` minor units with checked arithmetic. Every movement is two
//! postings that sum to zero: a deposit moves money from the cell's `external`
//! account to the user, a transfer from user to user, an order from the user to the
//! cell's `merchant` account (so no order needs another cell). User balances never go
//! negative; `external` is minus everything ever deposited.

pub mod hold;
pub mod keys;
mod lease;
mod records;

use std::collections::BTreeMap;

use http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};

pub use lease::{StockWrite, gz_audit, gz_item_json, gz_items, item_metas, stock};
use records::{Account, Outcome, Ownership, from_json, to_json};
pub use records::{GzItem, ItemMeta, Order, Posting, PostingKind, Stock};

use crate::store::{Order as ScanOrder, Overlay, Snapshot, StoreError, Transaction, prefix_range};

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

/// A refusal decided by the ledger (the request is fine, the accounts say no).
#[derive(Debug)]
enum Refusal {
    Store(StoreError),
    Declined(StatusCode, Value),
}

impl From<StoreError> for Refusal {
    fn from(err: StoreError) -> Self {
        Self::Store(err)
    }
}

fn declined(status: StatusCode, code: &str, message: String, extra: Value) -> Refusal {
    let mut error = json!({"code": code, "message": message});
    if let (Some(error), Value::Object(extra)) = (error.as_object_mut(), extra) {
        error.extend(extra);
    }
    Refusal::Declined(status, json!({ "error": error }))
}

fn insufficient_funds(balance: i64, required: i64) -> Refusal {
    declined(
        StatusCode::PAYMENT_REQUIRED,
        "insufficient_funds",
        format!("balance {balance} is less than {required}"),
        json!({"balance": balance, "required": required}),
    )
}

fn too_large(what: &str) -> Refusal {
    declined(
        StatusCode::UNPROCESSABLE_ENTITY,
        "amount_too_large",
        format!("{what} would overflow"),
        json!({}),
    )
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
        Command::Deposit { amount } => deposit(&mut overlay, request, *amount, now_ms).await,
        Command::Transfer {
            to_user,
            to_slot,
            amount,
        } => transfer(&mut overlay, request, to_user, *to_slot, *amount, now_ms).await,
        Command::Order {
            item_id,
            quantity,
            price,
        } => order(&mut overlay, request, item_id, *quantity, *price, now_ms).await,
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

/// Moves `amount` between two accounts with a posting on each side.
struct Movement<'a> {
    kind_out: PostingKind,
    kind_in: PostingKind,
    amount: i64,
    request_id: &'a str,
    order_id: Option<String>,
    at_ms: u64,
}

/// An account by where it lives: a user's (slot, id) or a system account.
#[derive(Clone, Copy)]
enum Holder<'a> {
    User(u32, &'a str),
    System(&'a str),
}

impl Holder<'_> {
    fn name(&self) -> &str {
        match self {
            Self::User(_, user) | Self::System(user) => user,
        }
    }

    fn account_key(&self) -> Vec<u8> {
        match self {
            Self::User(slot, user) => keys::account(*slot, user),
            Self::System(name) => keys::system_account(name),
        }
    }

    fn journal_key(&self, seq: u64) -> Vec<u8> {
        match self {
            Self::User(slot, user) => keys::journal(*slot, user, seq),
            Self::System(name) => keys::system_journal(name, seq),
        }
    }

    /// System accounts may go negative (`external`); users may not.
    fn may_go_negative(&self) -> bool {
        matches!(self, Self::System(_))
    }
}

/// Debits `from` and credits `to`, writing both postings; returns both accounts
/// after the move.
async fn move_money<T: Transaction>(
    overlay: &mut Overlay<'_, T>,
    from: Holder<'_>,
    to: Holder<'_>,
    movement: &Movement<'_>,
) -> Result<(Account, Account), Refusal> {
    let from_key = from.account_key();
    let to_key = to.account_key();
    let mut payer = Account::decode(overlay.get_for_update(&from_key).await?.as_deref())?;
    let balance = payer
        .balance
        .checked_sub(movement.amount)
        .ok_or_else(|| too_large("the debit"))?;
    if balance < 0 && !from.may_go_negative() {
        return Err(insufficient_funds(payer.balance, movement.amount));
    }
    payer.balance = balance;
    payer.postings += 1;
    let mut payee = Account::decode(overlay.get_for_update(&to_key).await?.as_deref())?;
    payee.balance = payee
        .balance
        .checked_add(movement.amount)
        .filter(|b| *b <= ldc_topology::MAX_MONEY as i64)
        .ok_or_else(|| too_large("the balance"))?;
    payee.postings += 1;
    let posting = |kind, amount, balance, seq, counterparty: &str| Posting {
        seq,
        kind,
        amount,
        balance,
        counterparty: counterparty.to_owned(),
        request_id: movement.request_id.to_owned(),
        order_id: movement.order_id.clone(),
        at_ms: movement.at_ms,
    };
    let out = posting(
        movement.kind_out,
        -movement.amount,
        payer.balance,
        payer.postings,
        to.name(),
    );
    let into = posting(
        movement.kind_in,
        movement.amount,
        payee.balance,
        payee.postings,
        from.name(),
    );
    overlay.put(from.journal_key(out.seq), to_json(&out));
    overlay.put(to.journal_key(into.seq), to_json(&into));
    overlay.put(from_key, payer.encode());
    overlay.put(to_key, payee.encode());
    Ok((payer, payee))
}

async fn deposit<T: Transaction>(
    overlay: &mut Overlay<'_, T>,
    request: &Request,
    amount: i64,
    at_ms: u64,
) -> Result<Value, Refusal> {
    let movement = Movement {
        kind_out: PostingKind::Deposit,
        kind_in: PostingKind::Deposit,
        amount,
        request_id: &request.request_id,
        order_id: None,
        at_ms,
    };
    let user = Holder::User(request.slot, &request.user);
    let (_, account) = move_money(overlay, Holder::System(keys::EXTERNAL), user, &movement).await?;
    Ok(json!({
        "user_id": request.user,
        "request_id": request.request_id,
        "amount": amount,
        "balance": account.balance,
    }))
}

async fn transfer<T: Transaction>(
    overlay: &mut Overlay<'_, T>,
    request: &Request,
    to_user: &str,
    to_slot: u32,
    amount: i64,
    at_ms: u64,
) -> Result<Value, Refusal> {
    let movement = Movement {
        kind_out: PostingKind::TransferOut,
        kind_in: PostingKind::TransferIn,
        amount,
        request_id: &request.request_id,
        order_id: None,
        at_ms,
    };
    let from = Holder::User(request.slot, &request.user);
    let to = Holder::User(to_slot, to_user);
    let (account, _) = move_money(overlay, from, to, &movement).await?;
    Ok(json!({
        "user_id": request.user,
        "to_user": to_user,
        "request_id": request.request_id,
        "amount": amount,
        "balance": account.balance,
    }))
}

async fn order<T: Transaction>(
    overlay: &mut Overlay<'_, T>,
    request: &Request,
    item_id: &str,
    quantity: u32,
    price: i64,
    at_ms: u64,
) -> Result<Value, Refusal> {
    let amount = price
        .checked_mul(i64::from(quantity))
        .filter(|a| *a <= ldc_topology::MAX_MONEY as i64)
        .ok_or_else(|| too_large("the order amount"))?;
    // The stock cache already reserved the units; this is the durable guard that
    // makes overselling impossible even if the cache were wrong.
    let stock_key = keys::stock(item_id);
    let mut stock = match overlay.get_for_update(&stock_key).await? {
        Some(bytes) => Stock::decode(&bytes)?,
        None => Stock::default(),
    };
    if u64::from(quantity) > stock.left() {
        return Err(declined(
            StatusCode::CONFLICT,
            "sold_out",
            format!("{item_id} is sold out at this cell"),
            json!({"item_id": item_id}),
        ));
    }
    stock.sold += u64::from(quantity);
    let account_key = keys::account(request.slot, &request.user);
    let seq = Account::decode(overlay.get(&account_key).await?.as_deref())?.orders + 1;
    let order_id = format!("o{seq}");
    let movement = Movement {
        kind_out: PostingKind::Order,
        kind_in: PostingKind::Sale,
        amount,
        request_id: &request.request_id,
        order_id: Some(order_id.clone()),
        at_ms,
    };
    let user = Holder::User(request.slot, &request.user);
    let (mut account, _) =
        move_money(overlay, user, Holder::System(keys::MERCHANT), &movement).await?;
    account.orders = seq;
    overlay.put(account_key, account.encode());
    let order = Order {
        order_id: order_id.clone(),
        item_id: item_id.to_owned(),
        quantity,
        amount,
        status: "confirmed".to_owned(),
        request_id: request.request_id.clone(),
        at_ms,
    };
    overlay.put(
        keys::order(request.slot, &request.user, seq),
        to_json(&order),
    );
    overlay.put(stock_key, stock.encode());
    let reply = json!({
        "order_id": order_id,
        "item_id": item_id,
        "quantity": quantity,
        "amount": amount,
        "status": "confirmed",
    });
    let confirmed = Outcome {
        fingerprint: request.fingerprint(),
        status: StatusCode::CREATED.as_u16(),
        body: to_json(&reply),
    };
    overlay.put(
        keys::confirmed(&request.user, &request.request_id),
        confirmed.encode(),
    );
    Ok(reply)
}

/// Makes `owner` the writer of this store's slots at an epoch above every earlier
/// owner's (and at least `base`, the deploy file's epoch), and returns that epoch.
/// Run by a cell opening its own store and by a standby taking one over.
pub async fn claim<T: Transaction>(txn: &mut T, owner: &str, base: u64) -> Result<u64, StoreError> {
    let key = keys::owner();
    let epoch = match txn.get_for_update(&key).await? {
        Some(bytes) => from_json::<Ownership>(&bytes, "ownership")?
            .epoch
            .saturating_add(1)
            .max(base),
        None => base,
    };
    let record = Ownership {
        owner: owner.to_owned(),
        epoch,
    };
    txn.put(key, to_json(&record)).await?;
    Ok(epoch)
}

/// The fence every write transaction passes first: fails with
/// [`StoreError::Fenced`] unless `owner` still holds the store at `epoch`. The record
/// is written back unchanged, so a claim committed by another cell after this
/// transaction began makes its commit conflict (TiKV checks write sets, not reads).
pub async fn check_owner<T: Transaction>(
    txn: &mut T,
    owner: &str,
    epoch: u64,
) -> Result<(), StoreError> {
    let key = keys::owner();
    let bytes = txn
        .get_for_update(&key)
        .await?
        .ok_or_else(|| StoreError::Fenced("the store has no ownership record".to_owned()))?;
    let record: Ownership = from_json(&bytes, "ownership")?;
    if record.owner != owner || record.epoch != epoch {
        return Err(StoreError::Fenced(format!(
            "cell {} holds these slots at epoch {}, not {owner} at epoch {epoch}",
            record.owner, record.epoch
        )));
    }
    txn.put(key, bytes).await
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

/// Every confirmed order's (user, request id) and its recorded outcome, for the
/// stock cache's sold-out replays. Bounded by the stock this cell ever sold.
pub async fn confirmed_orders<S: Snapshot>(
    snapshot: &mut S,
) -> Result<Vec<((String, String), (u64, Vec<u8>))>, StoreError> {
    let mut found = Vec::new();
    for (key, value) in scan_all(snapshot, &keys::confirmed_prefix()).await? {
        let outcome = Outcome::decode(&value)?;
        if let Some(ids) = keys::parse_confirmed(&key) {
            found.push((ids, (outcome.fingerprint, outcome.body)));
        }
    }
    Ok(found)
}

/// Every key and value under `prefix`, read in pages.
async fn scan_all<S: Snapshot>(
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
const SCAN_PAGE: usize = 4096;

/// The smallest key after `key`.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

pub async fn balance<S: Snapshot>(
    snapshot: &mut S,
    slot: u32,
    user: &str,
) -> Result<i64, StoreError> {
    let bytes = snapshot.get(&keys::account(slot, user)).await?;
    Ok(Account::decode(bytes.as_deref())?.balance)
}

/// A page of a user's postings or orders, newest first: entries with a sequence
/// number below `before` (all when `None`), at most `limit`.
pub async fn page<S: Snapshot>(
    snapshot: &mut S,
    slot: u32,
    user: &str,
    tag: u8,
    before: Option<u64>,
    limit: usize,
) -> Result<(Vec<Value>, Option<u64>), StoreError> {
    let prefix = keys::user_prefix(slot, tag, user);
    let mut range = prefix_range(&prefix);
    if let Some(before) = before {
        let mut end = prefix.clone();
        end.extend_from_slice(&before.to_be_bytes());
        range.end = end;
    }
    let pairs = snapshot
        .scan(range, limit + 1, ScanOrder::Descending)
        .await?;
    let more = pairs.len() > limit;
    let mut entries = Vec::with_capacity(limit.min(pairs.len()));
    let mut last_seq = None;
    for (key, value) in pairs.into_iter().take(limit) {
        last_seq = keys::trailing_seq(&key);
        entries.push(from_json::<Value>(&value, "journal or order")?);
    }
    Ok((entries, if more { last_seq } else { None }))
}

pub async fn order_by_seq<S: Snapshot>(
    snapshot: &mut S,
    slot: u32,
    user: &str,
    seq: u64,
) -> Result<Option<Value>, StoreError> {
    match snapshot.get(&keys::order(slot, user, seq)).await? {
        Some(bytes) => Ok(Some(from_json(&bytes, "order")?)),
        None => Ok(None),
    }
}

/// A cell's books, recomputed from every record: what the invariant checks compare.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Audit {
    pub accounts: u64,
    pub sum_of_user_balances: i64,
    pub negative_balances: u64,
    pub merchant_balance: i64,
    /// Everything ever deposited (minus the external account's balance).
    pub deposits: i64,
    /// Sum of all balances, users and system accounts: zero when money is conserved.
    pub net: i64,
    pub orders: u64,
    pub order_revenue: i64,
    /// Per item: units received, sold by the stock record, and sold by summing orders.
    pub items: BTreeMap<String, ItemAudit>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ItemAudit {
    pub received: u64,
    pub sold: u64,
    pub sold_by_orders: u64,
    pub remaining: u64,
    /// Leases finished with the global zone (0 with static shares).
    pub leases: u64,
    /// Whether a lease or return is recorded but not answered yet.
    pub lease_pending: bool,
}

/// Walks the whole ledger in pages.
pub async fn audit<S: Snapshot>(snapshot: &mut S, items: &[String]) -> Result<Audit, StoreError> {
    let mut audit = Audit::default();
    for item in items {
        let stock = match snapshot.get(&keys::stock(item)).await? {
            Some(bytes) => Stock::decode(&bytes)?,
            None => Stock::default(),
        };
        audit.items.insert(
            item.clone(),
            ItemAudit {
                received: stock.received,
                sold: stock.sold,
                sold_by_orders: 0,
                remaining: stock.left(),
                leases: stock.leases,
                lease_pending: stock.pending.is_some(),
            },
        );
    }
    let mut range = prefix_range(&[keys::USERS]);
    loop {
        let page = snapshot
            .scan(range.clone(), SCAN_PAGE, ScanOrder::Ascending)
            .await?;
        for (key, value) in &page {
            match keys::parse_user_key(key) {
                Some((_, keys::ACCOUNT, _)) => {
                    let account = Account::decode(Some(value))?;
                    audit.accounts += 1;
                    audit.sum_of_user_balances += account.balance;
                    audit.negative_balances += u64::from(account.balance < 0);
                }
                Some((_, keys::ORDER, _)) => {
                    let order: Order = from_json(value, "order")?;
                    audit.orders += 1;
                    audit.order_revenue += order.amount;
                    let item = audit.items.entry(order.item_id).or_default();
                    item.sold_by_orders += u64::from(order.quantity);
                }
                _ => {}
            }
        }
        match page.last() {
            Some((last, _)) if page.len() == SCAN_PAGE => range.start = successor(last),
            _ => break,
        }
    }
    let system = |name| keys::system_account(name);
    let merchant = snapshot.get(&system(keys::MERCHANT)).await?;
    let external = snapshot.get(&system(keys::EXTERNAL)).await?;
    audit.merchant_balance = Account::decode(merchant.as_deref())?.balance;
    let external = Account::decode(external.as_deref())?.balance;
    audit.deposits = -external;
    audit.net = audit.sum_of_user_balances + audit.merchant_balance + external;
    Ok(audit)
}
