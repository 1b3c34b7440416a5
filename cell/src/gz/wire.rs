//! The global zone's wire shapes, written once for both sides: what cells send
//! (polls, leases) and what the global zone answers.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Path cells poll for the global zone's items.
pub const ITEMS_PATH: &str = "/v1/gz/items";
/// Path cells lease and give back units at.
pub const LEASES_PATH: &str = "/v1/gz/leases";

/// An item as the global zone reports it: in a poll (with `recall`), in a lease
/// answer (with `cell`, `seq` and `units`), and in admin answers and audits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemState {
    pub item_id: String,
    pub name: String,
    pub price: i64,
    pub stock: u64,
    /// Units in the global account: leased to no cell.
    pub available: u64,
    pub closed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Units of the lease: granted (positive), given back (negative) or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<i64>,
    /// In a poll: another cell ran out and nothing is left to lease; a cell
    /// holding units it does not sell gives them back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recall: Option<bool>,
}

/// The answer to a poll.
#[derive(Debug, Serialize, Deserialize)]
pub struct Items {
    pub items: Vec<ItemState>,
}

/// A lease (positive `units`) or a return (negative) of `cell`, numbered per
/// (item, cell): the global zone applies each `seq` once and answers every retry
/// the same.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    pub item_id: String,
    pub cell: String,
    pub seq: u64,
    pub units: i64,
}

/// How long after a cell found an item's global account empty polls recall idle
/// units: a few polls, so every cell sees it once.
pub fn recall_window(poll_ms: u64) -> Duration {
    Duration::from_millis(poll_ms.saturating_mul(4))
}
