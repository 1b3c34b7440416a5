//! Holds on a shard in a store every cell shares (TiKV), where no file lock tells a
//! standby that a cell died. Two records beside the ownership record carry it:
//!
//! - the *hold* (`02 'w' 01`): which cell serves the shard, at which epoch, until
//!   when (by the store's clock); renewed by whoever serves the shard, set to 0 when
//!   it hands the shard over;
//! - the *presence* (`02 'w' 02`): until when the shard's own cell says it runs;
//!   renewed by that cell's process from its start, whoever serves the shard.
//!
//! The hold decides who may claim the shard; it does not make writes safe. That is
//! the ownership record's job: every write batch checks it, so a cell whose hold ran
//! out while it was cut off still cannot commit once another claimed the shard.

use serde::{Deserialize, Serialize};

use super::keys;
use super::records::{Ownership, from_json, to_json};
use crate::store::{Snapshot, StoreError, Transaction};

/// Who serves a shard of a shared store, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub owner: String,
    pub epoch: u64,
    /// Milliseconds since the Unix epoch by the store's clock; 0 once handed over.
    pub until_ms: u64,
}

/// Until when the shard's own cell said it runs (0: never, or it stopped).
pub async fn present_until<S: Snapshot>(snapshot: &mut S) -> Result<u64, StoreError> {
    match snapshot.get(&keys::presence()).await? {
        Some(bytes) => from_json(&bytes, "presence"),
        None => Ok(0),
    }
}

/// Inside a claim: refuses while another cell's hold is live, else takes the hold
/// for `owner` at `epoch` until `until_ms`.
pub async fn take<T: Transaction>(
    txn: &mut T,
    owner: &str,
    epoch: u64,
    now_ms: u64,
    until_ms: u64,
) -> Result<(), StoreError> {
    if let Some(bytes) = txn.get_for_update(&keys::hold()).await? {
        let hold: Hold = from_json(&bytes, "hold")?;
        if hold.owner != owner && hold.until_ms > now_ms {
            return Err(StoreError::Held(format!(
                "cell {} holds the shard at epoch {} for {} ms more",
                hold.owner,
                hold.epoch,
                hold.until_ms - now_ms
            )));
        }
    }
    put(txn, owner, epoch, until_ms).await
}

/// Extends `owner`'s hold at `epoch` to `until_ms`; fenced once another cell claimed
/// the shard. Only the hold is written, so a renewal never conflicts with the
/// shard's write batches (they write the ownership record), only with a claim.
pub async fn renew<T: Transaction>(
    txn: &mut T,
    owner: &str,
    epoch: u64,
    until_ms: u64,
) -> Result<(), StoreError> {
    let ownership: Ownership = match txn.get(&keys::owner()).await? {
        Some(bytes) => from_json(&bytes, "ownership")?,
        None => {
            return Err(StoreError::Fenced(
                "the store has no ownership record".into(),
            ));
        }
    };
    if ownership.owner != owner || ownership.epoch != epoch {
        return Err(StoreError::Fenced(format!(
            "cell {} claimed the shard at epoch {}",
            ownership.owner, ownership.epoch
        )));
    }
    put(txn, owner, epoch, until_ms).await
}

async fn put<T: Transaction>(
    txn: &mut T,
    owner: &str,
    epoch: u64,
    until_ms: u64,
) -> Result<(), StoreError> {
    let hold = Hold {
        owner: owner.to_owned(),
        epoch,
        until_ms,
    };
    txn.put(keys::hold(), to_json(&hold)).await
}

/// Says the shard's own cell runs until `until_ms` (0: it stopped).
pub async fn announce<T: Transaction>(txn: &mut T, until_ms: u64) -> Result<(), StoreError> {
    txn.put(keys::presence(), to_json(&until_ms)).await
}
