//! Stock leases between cells and the global zone, as ledger writes on both sides.
//!
//! A cell records a lease before it asks (`Begin`: the next sequence number and the
//! units wanted, or a negative count for a return), the global zone applies it once
//! per (item, cell, seq) and answers the same to every retry (`Grant`), and the cell
//! records the answer (`Finish`). A crash anywhere leaves the pending lease in the
//! cell's ledger, which asks again under the same number: no unit is created or lost.

use http::StatusCode;
use serde_json::{Value, json};

use super::gz::state;
use super::records::{
    CellQuota, GlobalItem, ItemMeta, LeaseRecord, Pending, Stock, from_json, to_json,
};
use super::{Reply, keys};
use crate::store::{Snapshot, StoreError, Transaction};

/// A write to the stock records, through the group committer like users' writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StockWrite {
    /// At a cell: record that lease `stock.leases + 1` of `units` is being asked for
    /// (negative: units given back, taken off sale at once).
    Begin {
        item_id: String,
        meta: ItemMeta,
        units: i64,
    },
    /// At a cell: the global zone's answer to lease `seq`.
    Finish {
        item_id: String,
        seq: u64,
        units: i64,
    },
    /// At the global zone: lease `seq` of `cell`. A grant is capped by what is
    /// available and by a fair part of it, `available / cells` (at least
    /// `lease_min`), so chunks shrink as the stock runs low.
    Grant {
        item_id: String,
        cell: String,
        seq: u64,
        units: i64,
        cells: u64,
        lease_min: u64,
    },
    /// At the global zone: a new item, or the same settings again.
    Create {
        item_id: String,
        name: String,
        price: i64,
        stock: u64,
    },
    /// At the global zone: no more leases; cells give back what they hold.
    Close { item_id: String },
}

fn reply(status: StatusCode, body: &Value, applied: bool) -> Reply {
    Reply::new(status, body, applied)
}

fn refused(status: StatusCode, code: &str, message: String) -> Reply {
    let body = json!({"error": {"code": code, "message": message}});
    reply(status, &body, false)
}

async fn read_stock<T: Transaction>(txn: &mut T, item_id: &str) -> Result<Stock, StoreError> {
    match txn.get_for_update(&keys::stock(item_id)).await? {
        Some(bytes) => Stock::decode(&bytes),
        None => Ok(Stock::default()),
    }
}

async fn read_global_item<T: Transaction>(
    txn: &mut T,
    item_id: &str,
) -> Result<Option<GlobalItem>, StoreError> {
    match txn.get_for_update(&keys::gz::item(item_id)).await? {
        Some(bytes) => Ok(Some(from_json(&bytes, "global item")?)),
        None => Ok(None),
    }
}

fn unknown_item(item_id: &str) -> Reply {
    refused(
        StatusCode::NOT_FOUND,
        "unknown_item",
        format!("no item {item_id:?} in the global zone"),
    )
}

pub async fn apply<T: Transaction>(
    txn: &mut T,
    write: &StockWrite,
    now_ms: u64,
) -> Result<Reply, StoreError> {
    match write {
        StockWrite::Begin {
            item_id,
            meta,
            units,
        } => begin(txn, item_id, meta, *units).await,
        StockWrite::Finish {
            item_id,
            seq,
            units,
        } => finish(txn, item_id, *seq, *units, now_ms).await,
        StockWrite::Grant {
            item_id,
            cell,
            seq,
            units,
            cells,
            lease_min,
        } => {
            let fair = (*cells).max(1);
            grant(txn, item_id, cell, *seq, *units, (fair, *lease_min), now_ms).await
        }
        StockWrite::Create {
            item_id,
            name,
            price,
            stock,
        } => create(txn, item_id, name, *price, *stock).await,
        StockWrite::Close { item_id } => close(txn, item_id).await,
    }
}

async fn begin<T: Transaction>(
    txn: &mut T,
    item_id: &str,
    meta: &ItemMeta,
    units: i64,
) -> Result<Reply, StoreError> {
    let mut stock = read_stock(txn, item_id).await?;
    if let Some(pending) = stock.pending {
        // Finish that one first; answering it lets the caller do so.
        return Ok(reply(StatusCode::OK, &json!(pending), false));
    }
    if units < 0 && units.unsigned_abs() > stock.left() {
        return Ok(refused(
            StatusCode::CONFLICT,
            "not_enough_stock",
            format!(
                "cannot give back {} units of {item_id}: {} left",
                units.unsigned_abs(),
                stock.left()
            ),
        ));
    }
    let pending = Pending {
        seq: stock.leases + 1,
        units,
    };
    stock.pending = Some(pending);
    txn.put(keys::stock(item_id), stock.encode()).await?;
    txn.put(keys::item_meta(item_id), to_json(meta)).await?;
    Ok(reply(StatusCode::CREATED, &json!(pending), true))
}

async fn finish<T: Transaction>(
    txn: &mut T,
    item_id: &str,
    seq: u64,
    units: i64,
    now_ms: u64,
) -> Result<Reply, StoreError> {
    let mut stock = read_stock(txn, item_id).await?;
    let pending = match stock.pending {
        Some(pending) if pending.seq == seq => pending,
        None if stock.leases >= seq => {
            return Ok(reply(StatusCode::OK, &json!({"seq": seq}), false));
        }
        _ => {
            return Ok(refused(
                StatusCode::CONFLICT,
                "lease_mismatch",
                format!("lease {seq} of {item_id} is not the one pending here"),
            ));
        }
    };
    let fits = if pending.units < 0 {
        units == pending.units
    } else {
        (0..=pending.units).contains(&units)
    };
    if !fits {
        return Ok(refused(
            StatusCode::CONFLICT,
            "lease_mismatch",
            format!(
                "lease {seq} of {item_id} asked for {} units, answered {units}",
                pending.units
            ),
        ));
    }
    stock.received = stock.received.saturating_add_signed(units);
    stock.leases = seq;
    stock.pending = None;
    debug_assert!(
        stock.sold <= stock.received,
        "{item_id}: a return left the cell holding less than it sold"
    );
    txn.put(keys::stock(item_id), stock.encode()).await?;
    let record = LeaseRecord {
        item_id: item_id.to_owned(),
        cell: String::new(),
        seq,
        units,
        at_ms: now_ms,
    };
    txn.put(keys::lease(item_id, seq), to_json(&record)).await?;
    let body = json!({"seq": seq, "units": units, "received": stock.received});
    Ok(reply(StatusCode::CREATED, &body, true))
}

/// The units a grant gives: what was asked, within what is available and within a
/// fair part of it (`available / cells`, at least `lease_min`).
pub fn grant_size(asked: u64, available: u64, cells: u64, lease_min: u64) -> u64 {
    let fair = available.div_ceil(cells.max(1)).max(lease_min);
    asked.min(available).min(fair)
}

async fn grant<T: Transaction>(
    txn: &mut T,
    item_id: &str,
    cell: &str,
    seq: u64,
    units: i64,
    (cells, lease_min): (u64, u64),
    now_ms: u64,
) -> Result<Reply, StoreError> {
    let Some(mut item) = read_global_item(txn, item_id).await? else {
        return Ok(unknown_item(item_id));
    };
    let quota_key = keys::gz::quota(item_id, cell);
    let mut quota = match txn.get_for_update(&quota_key).await? {
        Some(bytes) => from_json::<CellQuota>(&bytes, "quota")?,
        None => CellQuota::default(),
    };
    let answer = |units: i64, item: &GlobalItem| {
        let mut body = state(item_id, item);
        body.cell = Some(cell.to_owned());
        body.seq = Some(seq);
        body.units = Some(units);
        json!(body)
    };
    if seq == quota.leases && seq > 0 {
        // 0: recorded before `asked` was kept; the replay is taken on trust.
        if quota.asked != 0 && quota.asked != units {
            return Ok(refused(
                StatusCode::CONFLICT,
                "lease_mismatch",
                format!(
                    "lease {seq} of {item_id} for cell {cell} asked for {} units, not {units}",
                    quota.asked
                ),
            ));
        }
        return Ok(reply(StatusCode::OK, &answer(quota.last, &item), false));
    }
    if seq != quota.leases + 1 {
        return Ok(refused(
            StatusCode::CONFLICT,
            "lease_out_of_order",
            format!(
                "cell {cell} asked for lease {seq} of {item_id}; the next is {}",
                quota.leases + 1
            ),
        ));
    }
    let asked = units;
    let units = if units >= 0 {
        let given = if item.closed {
            0
        } else {
            grant_size(units as u64, item.available, cells, lease_min)
        };
        item.available -= given;
        quota.held += given;
        given as i64
    } else {
        let back = units.unsigned_abs();
        if back > quota.held {
            return Ok(refused(
                StatusCode::CONFLICT,
                "return_exceeds_quota",
                format!(
                    "cell {cell} holds {} units of {item_id}, cannot give back {back}",
                    quota.held
                ),
            ));
        }
        item.available += back;
        quota.held -= back;
        units
    };
    quota.leases = seq;
    quota.asked = asked;
    quota.last = units;
    debug_assert!(
        item.available <= item.stock && quota.held <= item.stock,
        "{item_id}: the global zone accounts for more units than the item's stock"
    );
    let record = LeaseRecord {
        item_id: item_id.to_owned(),
        cell: cell.to_owned(),
        seq,
        units,
        at_ms: now_ms,
    };
    txn.put(keys::gz::lease(item_id, cell, seq), to_json(&record))
        .await?;
    txn.put(quota_key, to_json(&quota)).await?;
    txn.put(keys::gz::item(item_id), to_json(&item)).await?;
    Ok(reply(StatusCode::CREATED, &answer(units, &item), true))
}

async fn create<T: Transaction>(
    txn: &mut T,
    item_id: &str,
    name: &str,
    price: i64,
    stock: u64,
) -> Result<Reply, StoreError> {
    if let Some(item) = read_global_item(txn, item_id).await? {
        if (item.name.as_str(), item.price, item.stock) == (name, price, stock) {
            return Ok(reply(StatusCode::OK, &json!(state(item_id, &item)), false));
        }
        let mut body = json!({"error": {
            "code": "item_exists",
            "message": format!("item {item_id:?} exists with other settings"),
        }});
        body["error"]["item"] = json!(state(item_id, &item));
        return Ok(reply(StatusCode::CONFLICT, &body, false));
    }
    let item = GlobalItem {
        name: name.to_owned(),
        price,
        stock,
        available: stock,
        closed: false,
    };
    txn.put(keys::gz::item(item_id), to_json(&item)).await?;
    Ok(reply(
        StatusCode::CREATED,
        &json!(state(item_id, &item)),
        true,
    ))
}

async fn close<T: Transaction>(txn: &mut T, item_id: &str) -> Result<Reply, StoreError> {
    let Some(mut item) = read_global_item(txn, item_id).await? else {
        return Ok(unknown_item(item_id));
    };
    let applied = !item.closed;
    item.closed = true;
    txn.put(keys::gz::item(item_id), to_json(&item)).await?;
    Ok(reply(
        StatusCode::OK,
        &json!(state(item_id, &item)),
        applied,
    ))
}

/// Items a cell leased, with their names and prices, for a restart without the
/// global zone.
pub async fn item_metas<S: Snapshot>(
    snapshot: &mut S,
) -> Result<Vec<(String, ItemMeta)>, StoreError> {
    let prefix = keys::item_meta_prefix();
    let mut items = Vec::new();
    for (key, value) in super::scan_all(snapshot, &prefix).await? {
        if let Some(id) = keys::key_suffix(&key, &prefix) {
            items.push((id.to_owned(), from_json(&value, "item")?));
        }
    }
    Ok(items)
}

/// An item's stock record at this cell.
pub async fn stock<S: Snapshot>(snapshot: &mut S, item_id: &str) -> Result<Stock, StoreError> {
    match snapshot.get(&keys::stock(item_id)).await? {
        Some(bytes) => Stock::decode(&bytes),
        None => Ok(Stock::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_shrink_as_the_stock_runs_low() {
        assert_eq!(
            grant_size(500, 10_000, 4, 10),
            500,
            "plenty: what was asked"
        );
        assert_eq!(
            grant_size(500, 1_000, 4, 10),
            250,
            "a fair part of what is left"
        );
        assert_eq!(grant_size(500, 20, 4, 10), 10, "never below lease_min");
        assert_eq!(grant_size(500, 3, 4, 10), 3, "never above what is left");
        assert_eq!(grant_size(500, 0, 4, 10), 0);
    }
}
