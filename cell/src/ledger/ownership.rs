//! Who writes a store's slots: the ownership record, raised to a new epoch by every
//! claim and checked by every write batch.

use super::keys;
use super::records::{Ownership, from_json, to_json};
use crate::store::{StoreError, Transaction};

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
