//! The global zone's records as it reports them: every item's state, and the
//! books that show no unit was created or lost.

use serde_json::{Value, json};

use super::keys;
use super::records::{CellQuota, GlobalItem, from_json};
use crate::gz::wire::ItemState;
use crate::store::{Snapshot, StoreError};

/// What the global zone answers about an item.
pub fn state(item_id: &str, item: &GlobalItem) -> ItemState {
    ItemState {
        item_id: item_id.to_owned(),
        name: item.name.clone(),
        price: item.price,
        stock: item.stock,
        available: item.available,
        closed: item.closed,
        cell: None,
        seq: None,
        units: None,
        recall: None,
    }
}

/// Every item of the global zone.
pub async fn items<S: Snapshot>(snapshot: &mut S) -> Result<Vec<ItemState>, StoreError> {
    let prefix = keys::gz::item_prefix();
    let mut items = Vec::new();
    for (key, value) in super::scan_all(snapshot, &prefix).await? {
        if let Some(id) = keys::key_suffix(&key, &prefix) {
            items.push(state(id, &from_json(&value, "global item")?));
        }
    }
    Ok(items)
}

/// The global zone's books: per item its stock, global account and each cell's
/// quota; `stock == available + sum of held` when no unit was created or lost.
pub async fn audit<S: Snapshot>(snapshot: &mut S) -> Result<Value, StoreError> {
    let mut audit = serde_json::Map::new();
    for item in items(snapshot).await? {
        let prefix = keys::gz::quota_prefix(&item.item_id);
        let mut cells = serde_json::Map::new();
        let mut held = 0u64;
        for (key, value) in super::scan_all(snapshot, &prefix).await? {
            let quota: CellQuota = from_json(&value, "quota")?;
            if let Some(cell) = keys::key_suffix(&key, &prefix) {
                held += quota.held;
                cells.insert(
                    cell.to_owned(),
                    json!({"held": quota.held, "leases": quota.leases}),
                );
            }
        }
        let mut entry = json!(item);
        entry["held_by_cells"] = json!(held);
        entry["cells"] = Value::Object(cells);
        audit.insert(item.item_id, entry);
    }
    Ok(Value::Object(audit))
}
