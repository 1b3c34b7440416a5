//! Money moves: deposits, in-cell transfers and orders, each as two postings that
//! sum to zero, and the refusals the accounts decide (insufficient funds,
//! overflow, sold out).

use http::StatusCode;
use serde_json::{Value, json};

use super::Request;
use super::keys;
use super::records::{Account, Order, Outcome, Posting, PostingKind, Stock, to_json};
use crate::store::{Overlay, StoreError, Transaction};

/// A refusal decided by the ledger (the request is fine, the accounts say no).
#[derive(Debug)]
pub(super) enum Refusal {
    Store(StoreError),
    Declined(StatusCode, Value),
}

impl From<StoreError> for Refusal {
    fn from(err: StoreError) -> Self {
        Self::Store(err)
    }
}

pub(super) fn declined(status: StatusCode, code: &str, message: String, extra: Value) -> Refusal {
    let mut error = json!({"code": code, "message": message});
    if let (Some(error), Value::Object(extra)) = (error.as_object_mut(), extra) {
        error.extend(extra);
    }
    Refusal::Declined(status, json!({ "error": error }))
}

pub(super) fn insufficient_funds(balance: i64, required: i64) -> Refusal {
    declined(
        StatusCode::PAYMENT_REQUIRED,
        "insufficient_funds",
        format!("balance {balance} is less than {required}"),
        json!({"balance": balance, "required": required}),
    )
}

pub(super) fn too_large(what: &str) -> Refusal {
    declined(
        StatusCode::UNPROCESSABLE_ENTITY,
        "amount_too_large",
        format!("{what} would overflow"),
        json!({}),
    )
}

/// Moves `amount` between two accounts with a posting on each side.
pub(super) struct Movement<'a> {
    kind_out: PostingKind,
    kind_in: PostingKind,
    amount: i64,
    request_id: &'a str,
    order_id: Option<String>,
    at_ms: u64,
}

impl<'a> Movement<'a> {
    /// `amount` moved for `request`, posted as `kinds` (out, in), for no order.
    fn new(
        kinds: (PostingKind, PostingKind),
        amount: i64,
        request: &'a Request,
        at_ms: u64,
    ) -> Self {
        Self {
            kind_out: kinds.0,
            kind_in: kinds.1,
            amount,
            request_id: &request.request_id,
            order_id: None,
            at_ms,
        }
    }
}

/// An account by where it lives: a user's (slot, id) or a system account.
#[derive(Clone, Copy)]
pub(super) enum Holder<'a> {
    User(u32, &'a str),
    System(&'a str),
}

impl Holder<'_> {
    fn name(&self) -> &str {
        match self {
            Self::User(_, user) | Self::System(user) => user,
        }
    }

    pub(super) fn account_key(&self) -> Vec<u8> {
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
pub(super) async fn move_money<T: Transaction>(
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
    debug_assert!(movement.amount > 0, "a movement moves a positive amount");
    debug_assert_eq!(
        out.amount + into.amount,
        0,
        "a movement's postings sum to zero"
    );
    debug_assert!(
        payer.balance >= 0 || from.may_go_negative(),
        "a user's balance went negative"
    );
    debug_assert!(
        payee.balance >= 0 || to.may_go_negative(),
        "a user's balance went negative"
    );
    overlay.put(from.journal_key(out.seq), to_json(&out));
    overlay.put(to.journal_key(into.seq), to_json(&into));
    overlay.put(from_key, payer.encode());
    overlay.put(to_key, payee.encode());
    Ok((payer, payee))
}

pub(super) async fn deposit<T: Transaction>(
    overlay: &mut Overlay<'_, T>,
    request: &Request,
    amount: i64,
    at_ms: u64,
) -> Result<Value, Refusal> {
    let movement = Movement::new(
        (PostingKind::Deposit, PostingKind::Deposit),
        amount,
        request,
        at_ms,
    );
    let user = Holder::User(request.slot, &request.user);
    let (_, account) = move_money(overlay, Holder::System(keys::EXTERNAL), user, &movement).await?;
    Ok(json!({
        "user_id": request.user,
        "request_id": request.request_id,
        "amount": amount,
        "balance": account.balance,
    }))
}

pub(super) async fn transfer<T: Transaction>(
    overlay: &mut Overlay<'_, T>,
    request: &Request,
    to_user: &str,
    to_slot: u32,
    amount: i64,
    at_ms: u64,
) -> Result<Value, Refusal> {
    let movement = Movement::new(
        (PostingKind::TransferOut, PostingKind::TransferIn),
        amount,
        request,
        at_ms,
    );
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

pub(super) async fn order<T: Transaction>(
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
    debug_assert!(
        stock.sold + stock.returning() <= stock.received,
        "{item_id}: sold more than the cell holds"
    );
    let account_key = keys::account(request.slot, &request.user);
    let seq = Account::decode(overlay.get(&account_key).await?.as_deref())?.orders + 1;
    let order_id = format!("o{seq}");
    let movement = Movement {
        order_id: Some(order_id.clone()),
        ..Movement::new(
            (PostingKind::Order, PostingKind::Sale),
            amount,
            request,
            at_ms,
        )
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
