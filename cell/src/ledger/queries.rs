//! Reads of a user's books and of the orders a restart needs: balance, pages of
//! postings and orders, one order, every confirmed order.

use serde_json::Value;

use super::records::{Account, Outcome, from_json};
use super::{keys, scan_all};
use crate::store::{ScanOrder, Snapshot, StoreError, prefix_range};

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
