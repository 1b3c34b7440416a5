//! Value encodings: fixed-width big-endian for the hot records (accounts, stock,
//! idempotency headers), JSON for postings and orders, which people read.

use serde::{Deserialize, Serialize};

use crate::store::StoreError;

fn corrupt(what: &str) -> StoreError {
    StoreError::Internal(format!("corrupt {what} record"))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// An account: its balance in minor units and the counters that number its
/// postings and orders.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Account {
    pub balance: i64,
    pub postings: u64,
    pub orders: u64,
}

impl Account {
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(24);
        bytes.extend_from_slice(&self.balance.to_be_bytes());
        bytes.extend_from_slice(&self.postings.to_be_bytes());
        bytes.extend_from_slice(&self.orders.to_be_bytes());
        bytes
    }

    pub fn decode(bytes: Option<&[u8]>) -> Result<Self, StoreError> {
        let Some(bytes) = bytes else {
            return Ok(Self::default());
        };
        let field = |at| u64_at(bytes, at).ok_or_else(|| corrupt("account"));
        Ok(Self {
            balance: field(0)? as i64,
            postings: field(8)?,
            orders: field(16)?,
        })
    }
}

/// Stock of one item at this cell: units received (its static share, or leased
/// from the global zone net of returns), units sold, and its lease counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stock {
    pub received: u64,
    pub sold: u64,
    /// Sequence number of the last finished lease.
    pub leases: u64,
    /// The lease asked for and not finished yet (at most one per item).
    pub pending: Option<Pending>,
}

/// A lease the cell recorded before asking the global zone, so that after a crash
/// it asks again under the same sequence number and gets the same answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pending {
    pub seq: u64,
    /// Units asked for; negative for a return of unused units.
    pub units: i64,
}

impl Stock {
    /// Units being returned: not to be sold, not given back yet.
    pub fn returning(&self) -> u64 {
        self.pending.map_or(0, |p| (-p.units).max(0) as u64)
    }

    /// Units this cell may still sell by the ledger.
    pub fn left(&self) -> u64 {
        self.received
            .saturating_sub(self.sold)
            .saturating_sub(self.returning())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(40);
        let (seq, units) = self.pending.map_or((0, 0), |p| (p.seq, p.units));
        for field in [self.received, self.sold, self.leases, seq, units as u64] {
            bytes.extend_from_slice(&field.to_be_bytes());
        }
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let field = |at| u64_at(bytes, at).ok_or_else(|| corrupt("stock"));
        // Records written before leases existed are 16 bytes.
        let lease_field = |at| if bytes.len() > 16 { field(at) } else { Ok(0) };
        let seq = lease_field(24)?;
        Ok(Self {
            received: field(0)?,
            sold: field(8)?,
            leases: lease_field(16)?,
            pending: (seq != 0).then(|| Pending {
                seq,
                units: lease_field(32).unwrap_or(0) as i64,
            }),
        })
    }
}

/// A leased item's name and price at a cell, so the cell can sell its units after a
/// restart while the global zone is out of reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemMeta {
    pub name: String,
    pub price: i64,
}

/// An item in the global zone: its stock, and its global account (units no cell
/// holds). `stock == available + ` every cell's quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalItem {
    pub name: String,
    pub price: i64,
    pub stock: u64,
    pub available: u64,
    pub closed: bool,
}

/// A cell's quota account of one item in the global zone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellQuota {
    /// Units the cell holds: leased minus returned.
    pub held: u64,
    /// Sequence number of the cell's last lease applied here.
    pub leases: u64,
    /// Units of that lease (negative for a return), for replays.
    pub last: i64,
    /// Units the cell asked for in that lease: a replay must ask the same.
    #[serde(default)]
    pub asked: i64,
}

/// One lease or return, recorded under the same (item, cell, seq) on both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub item_id: String,
    pub cell: String,
    pub seq: u64,
    pub units: i64,
    pub at_ms: u64,
}

/// The first outcome of a request id: a fingerprint of the request it answered,
/// and the status and body to answer every retry with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub fingerprint: u64,
    pub status: u16,
    pub body: Vec<u8>,
}

impl Outcome {
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(10 + self.body.len());
        bytes.extend_from_slice(&self.fingerprint.to_be_bytes());
        bytes.extend_from_slice(&self.status.to_be_bytes());
        bytes.extend_from_slice(&self.body);
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let fingerprint = u64_at(bytes, 0).ok_or_else(|| corrupt("request"))?;
        let status = bytes
            .get(8..10)
            .map(|s| u16::from_be_bytes([s[0], s[1]]))
            .ok_or_else(|| corrupt("request"))?;
        Ok(Self {
            fingerprint,
            status,
            body: bytes[10..].to_vec(),
        })
    }
}

/// One side of a double-entry transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub seq: u64,
    pub kind: PostingKind,
    /// Signed: money in is positive, money out negative. The two postings of one
    /// transfer sum to zero.
    pub amount: i64,
    /// Balance after this posting.
    pub balance: i64,
    /// The other account of the transfer.
    pub counterparty: String,
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    pub at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PostingKind {
    Deposit,
    TransferOut,
    TransferIn,
    Order,
    Sale,
}

/// A confirmed order, as stored and as answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub item_id: String,
    pub quantity: u32,
    pub amount: i64,
    pub status: String,
    pub request_id: String,
    pub at_ms: u64,
}

/// Who writes this store's slots, and at which epoch. Every takeover and every
/// restart writes a higher epoch; every write transaction checks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ownership {
    pub owner: String,
    pub epoch: u64,
}

pub fn to_json(value: &impl Serialize) -> Vec<u8> {
    // Our records are plain structs of strings and integers: serializing cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

pub fn from_json<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|_| corrupt(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_width_records_round_trip() {
        let account = Account {
            balance: -5,
            postings: 7,
            orders: u64::MAX,
        };
        assert_eq!(Account::decode(Some(&account.encode())), Ok(account));
        assert_eq!(Account::decode(None), Ok(Account::default()));
        assert!(Account::decode(Some(&[1, 2, 3])).is_err());
        let stock = Stock {
            received: 10,
            sold: 3,
            leases: 4,
            pending: Some(Pending { seq: 5, units: -7 }),
        };
        assert_eq!(Stock::decode(&stock.encode()), Ok(stock));
        assert_eq!(stock.left(), 0, "returning units are not for sale");
        let static_share = Stock {
            received: 10,
            sold: 3,
            leases: 0,
            pending: None,
        };
        assert_eq!(
            Stock::decode(&static_share.encode()[..16]),
            Ok(static_share)
        );
        let outcome = Outcome {
            fingerprint: 42,
            status: 201,
            body: b"{}".to_vec(),
        };
        assert_eq!(Outcome::decode(&outcome.encode()), Ok(outcome));
    }
}
