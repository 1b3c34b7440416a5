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

/// Stock of one item at this cell: units received (its share) and units sold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stock {
    pub received: u64,
    pub sold: u64,
}

impl Stock {
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(16);
        bytes.extend_from_slice(&self.received.to_be_bytes());
        bytes.extend_from_slice(&self.sold.to_be_bytes());
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let field = |at| u64_at(bytes, at).ok_or_else(|| corrupt("stock"));
        Ok(Self {
            received: field(0)?,
            sold: field(8)?,
        })
    }
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
        };
        assert_eq!(Stock::decode(&stock.encode()), Ok(stock));
        let outcome = Outcome {
            fingerprint: 42,
            status: 201,
            body: b"{}".to_vec(),
        };
        assert_eq!(Outcome::decode(&outcome.encode()), Ok(outcome));
    }
}
