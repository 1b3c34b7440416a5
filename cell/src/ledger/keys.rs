//! Key layout of the ledger. Keys are ordered bytes; everything a user owns sits
//! under `[USERS][slot: u16 big-endian]`, so a slot is one contiguous key range
//! (what takeover and migration move), and inside it under the user id, so a user's
//! journal and orders are contiguous and scan in sequence order.
//!
//! ```text
//! 01 SS SS 'a' user 00                 account: balance, posting and order counters
//! 01 SS SS 'j' user 00 seq:u64         journal posting
//! 01 SS SS 'o' user 00 seq:u64         order
//! 01 SS SS 'r' user 00 request_id      idempotency record
//! 02 'a' account                       system account (merchant, external)
//! 02 'j' account 00 seq:u64            system account posting
//! 02 's' item                          stock received and sold by this cell
//! 02 'c' user 00 request_id            confirmed order, for sold-out replays
//! 02 'w' 00                            ownership: which cell writes here, at what epoch
//! 02 'm' item                          a leased item's name and price, at a cell
//! 02 'l' item 00 seq:u64               a lease (or return) as the cell recorded it
//! 02 'g' item                          global zone: an item's stock and global account
//! 02 'q' item 00 cell                  global zone: units a cell holds on lease
//! 02 'L' item 00 cell 00 seq:u64       global zone: a lease as the global zone recorded it
//! ```
//!
//! User ids and request ids never contain the 00 byte (`[A-Za-z0-9_-]`), so the
//! terminator keeps `alice` and `alice2` apart and ordered.

/// Namespace of slot-owned data.
pub const USERS: u8 = 0x01;
/// Namespace of cell-wide data.
pub const CELL: u8 = 0x02;

pub const ACCOUNT: u8 = b'a';
pub const JOURNAL: u8 = b'j';
pub const ORDER: u8 = b'o';
pub const REQUEST: u8 = b'r';
const STOCK: u8 = b's';
const CONFIRMED: u8 = b'c';
const OWNER: u8 = b'w';
const ITEM_META: u8 = b'm';
const LEASE: u8 = b'l';
const GZ_ITEM: u8 = b'g';
const GZ_QUOTA: u8 = b'q';
const GZ_LEASE: u8 = b'L';

/// The system account that receives order revenue.
pub const MERCHANT: &str = "merchant";
/// The system account money enters the cell from (deposits): its balance is minus
/// everything deposited.
pub const EXTERNAL: &str = "external";

/// `01 SS SS`: every key of `slot`.
pub fn slot_prefix(slot: u32) -> Vec<u8> {
    let [hi, lo] = (slot as u16).to_be_bytes();
    vec![USERS, hi, lo]
}

/// `01 SS SS tag user 00`.
pub fn user_prefix(slot: u32, tag: u8, user: &str) -> Vec<u8> {
    let mut key = slot_prefix(slot);
    key.reserve(user.len() + 10);
    key.push(tag);
    key.extend_from_slice(user.as_bytes());
    key.push(0);
    key
}

pub fn account(slot: u32, user: &str) -> Vec<u8> {
    user_prefix(slot, ACCOUNT, user)
}

pub fn journal(slot: u32, user: &str, seq: u64) -> Vec<u8> {
    let mut key = user_prefix(slot, JOURNAL, user);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub fn order(slot: u32, user: &str, seq: u64) -> Vec<u8> {
    let mut key = user_prefix(slot, ORDER, user);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub fn request(slot: u32, user: &str, request_id: &str) -> Vec<u8> {
    let mut key = user_prefix(slot, REQUEST, user);
    key.extend_from_slice(request_id.as_bytes());
    key
}

pub fn system_account(name: &str) -> Vec<u8> {
    let mut key = vec![CELL, ACCOUNT];
    key.extend_from_slice(name.as_bytes());
    key
}

pub fn system_journal(name: &str, seq: u64) -> Vec<u8> {
    let mut key = vec![CELL, JOURNAL];
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub fn stock(item: &str) -> Vec<u8> {
    let mut key = vec![CELL, STOCK];
    key.extend_from_slice(item.as_bytes());
    key
}

pub fn owner() -> Vec<u8> {
    vec![CELL, OWNER, 0]
}

/// Shared stores only: who serves the shard until when (see `ledger::hold`).
pub fn hold() -> Vec<u8> {
    vec![CELL, OWNER, 1]
}

/// Shared stores only: until when the shard's own cell runs.
pub fn presence() -> Vec<u8> {
    vec![CELL, OWNER, 2]
}

pub fn confirmed_prefix() -> Vec<u8> {
    vec![CELL, CONFIRMED]
}

pub fn confirmed(user: &str, request_id: &str) -> Vec<u8> {
    let mut key = confirmed_prefix();
    key.extend_from_slice(user.as_bytes());
    key.push(0);
    key.extend_from_slice(request_id.as_bytes());
    key
}

/// `02 tag a 00 b 00 ...`: a cell-wide key of zero-terminated parts.
fn cell_key(tag: u8, parts: &[&str]) -> Vec<u8> {
    let mut key = vec![CELL, tag];
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(part.as_bytes());
    }
    key
}

fn with_seq(mut key: Vec<u8>, seq: u64) -> Vec<u8> {
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub fn item_meta(item: &str) -> Vec<u8> {
    cell_key(ITEM_META, &[item])
}

pub fn item_meta_prefix() -> Vec<u8> {
    vec![CELL, ITEM_META]
}

pub fn lease(item: &str, seq: u64) -> Vec<u8> {
    with_seq(cell_key(LEASE, &[item]), seq)
}

/// The global zone's keys: its items, each cell's quota of them, and the leases.
pub mod gz {
    use super::{CELL, GZ_ITEM, GZ_LEASE, GZ_QUOTA, cell_key, with_seq};

    pub fn item(item: &str) -> Vec<u8> {
        cell_key(GZ_ITEM, &[item])
    }

    pub fn item_prefix() -> Vec<u8> {
        vec![CELL, GZ_ITEM]
    }

    pub fn quota(item: &str, cell: &str) -> Vec<u8> {
        cell_key(GZ_QUOTA, &[item, cell])
    }

    /// `02 'q' item 00`: every cell's quota of `item`.
    pub fn quota_prefix(item: &str) -> Vec<u8> {
        let mut key = cell_key(GZ_QUOTA, &[item]);
        key.push(0);
        key
    }

    pub fn lease(item: &str, cell: &str, seq: u64) -> Vec<u8> {
        with_seq(cell_key(GZ_LEASE, &[item, cell]), seq)
    }
}

/// The last zero-terminated part of a cell-wide key under `prefix`.
pub fn key_suffix<'k>(key: &'k [u8], prefix: &[u8]) -> Option<&'k str> {
    std::str::from_utf8(key.strip_prefix(prefix)?).ok()
}

/// Splits a `confirmed` key back into user and request id.
pub fn parse_confirmed(key: &[u8]) -> Option<(String, String)> {
    let rest = key.strip_prefix(&confirmed_prefix()[..])?;
    let split = rest.iter().position(|b| *b == 0)?;
    let user = std::str::from_utf8(&rest[..split]).ok()?;
    let request_id = std::str::from_utf8(&rest[split + 1..]).ok()?;
    Some((user.to_owned(), request_id.to_owned()))
}

/// The trailing big-endian sequence number of a journal or order key.
pub fn trailing_seq(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The slot, tag and user id of a key in the users namespace.
pub fn parse_user_key(key: &[u8]) -> Option<(u32, u8, &str)> {
    let (&[ns, hi, lo, tag], rest) = key.split_first_chunk::<4>()?;
    if ns != USERS {
        return None;
    }
    let end = rest.iter().position(|b| *b == 0)?;
    let user = std::str::from_utf8(&rest[..end]).ok()?;
    Some((u32::from(u16::from_be_bytes([hi, lo])), tag, user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_one_contiguous_range_in_slot_order() {
        let mut keys = [
            account(2, "bob"),
            journal(1, "zed", 9),
            request(1, "amy", "r1"),
            order(65_535, "x", 1),
            account(256, "a"),
            journal(1, "alice", 2),
            journal(1, "alice", 10),
        ];
        keys.sort();
        let slots: Vec<u32> = keys
            .iter()
            .map(|k| parse_user_key(k).expect("user key").0)
            .collect();
        assert_eq!(slots, [1, 1, 1, 1, 2, 256, 65_535]);
        let prefix = slot_prefix(1);
        assert!(keys[..4].iter().all(|k| k.starts_with(&prefix)));
    }

    #[test]
    fn sequences_order_numerically_and_users_do_not_interleave() {
        assert!(journal(7, "alice", 2) < journal(7, "alice", 10));
        assert!(journal(7, "alice", u64::MAX) < journal(7, "alice2", 0));
        assert!(!journal(7, "alice2", 0).starts_with(&user_prefix(7, JOURNAL, "alice")));
        assert_eq!(trailing_seq(&order(3, "u", 42)), Some(42));
    }

    #[test]
    fn confirmed_keys_round_trip() {
        let key = confirmed("user-1", "req_9");
        assert_eq!(
            parse_confirmed(&key),
            Some(("user-1".to_owned(), "req_9".to_owned()))
        );
        assert!(key.starts_with(&confirmed_prefix()));
        assert!(!stock("x").starts_with(&confirmed_prefix()));
    }

    #[test]
    fn global_zone_keys_keep_items_and_cells_apart() {
        assert!(!gz::quota("hot2", "a1").starts_with(&gz::quota_prefix("hot")));
        assert!(gz::quota("hot", "a1").starts_with(&gz::quota_prefix("hot")));
        assert_eq!(
            key_suffix(&gz::quota("hot", "a-1"), &gz::quota_prefix("hot")),
            Some("a-1")
        );
        assert_eq!(
            key_suffix(&gz::item("hot"), &gz::item_prefix()),
            Some("hot")
        );
        assert!(lease("hot", 2) < lease("hot", 10));
        assert!(gz::lease("hot", "a1", u64::MAX) < gz::lease("hot", "a10", 0));
        assert!(!item_meta("x").starts_with(&gz::item_prefix()));
    }
}
