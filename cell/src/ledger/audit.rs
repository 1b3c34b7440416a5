//! A cell's books recomputed from every record: what the invariant checks and the
//! `/admin/audit` route compare.

use std::collections::BTreeMap;

use serde::Serialize;

use super::records::{Account, Order, Stock, from_json};
use super::{SCAN_PAGE, keys, successor};
use crate::store::{ScanOrder, Snapshot, StoreError, prefix_range};

/// A cell's books, recomputed from every record: what the invariant checks compare.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Audit {
    pub accounts: u64,
    pub sum_of_user_balances: i64,
    pub negative_balances: u64,
    pub merchant_balance: i64,
    /// Everything ever deposited (minus the external account's balance).
    pub deposits: i64,
    /// Sum of all balances, users and system accounts: zero when money is conserved.
    pub net: i64,
    pub orders: u64,
    pub order_revenue: i64,
    /// Per item: units received, sold by the stock record, and sold by summing orders.
    pub items: BTreeMap<String, ItemAudit>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ItemAudit {
    pub received: u64,
    pub sold: u64,
    pub sold_by_orders: u64,
    pub remaining: u64,
    /// Leases finished with the global zone (0 with static shares).
    pub leases: u64,
    /// Whether a lease or return is recorded but not answered yet.
    pub lease_pending: bool,
}

/// Walks the whole ledger in pages.
pub async fn audit<S: Snapshot>(snapshot: &mut S, items: &[String]) -> Result<Audit, StoreError> {
    let mut audit = Audit::default();
    for item in items {
        let stock = match snapshot.get(&keys::stock(item)).await? {
            Some(bytes) => Stock::decode(&bytes)?,
            None => Stock::default(),
        };
        audit.items.insert(
            item.clone(),
            ItemAudit {
                received: stock.received,
                sold: stock.sold,
                sold_by_orders: 0,
                remaining: stock.left(),
                leases: stock.leases,
                lease_pending: stock.pending.is_some(),
            },
        );
    }
    let mut range = prefix_range(&[keys::USERS]);
    loop {
        let page = snapshot
            .scan(range.clone(), SCAN_PAGE, ScanOrder::Ascending)
            .await?;
        for (key, value) in &page {
            match keys::parse_user_key(key) {
                Some((_, keys::ACCOUNT, _)) => {
                    let account = Account::decode(Some(value))?;
                    audit.accounts += 1;
                    audit.sum_of_user_balances += account.balance;
                    audit.negative_balances += u64::from(account.balance < 0);
                }
                Some((_, keys::ORDER, _)) => {
                    let order: Order = from_json(value, "order")?;
                    audit.orders += 1;
                    audit.order_revenue += order.amount;
                    let item = audit.items.entry(order.item_id).or_default();
                    item.sold_by_orders += u64::from(order.quantity);
                }
                _ => {}
            }
        }
        match page.last() {
            Some((last, _)) if page.len() == SCAN_PAGE => range.start = successor(last),
            _ => break,
        }
    }
    let system = |name| keys::system_account(name);
    let merchant = snapshot.get(&system(keys::MERCHANT)).await?;
    let external = snapshot.get(&system(keys::EXTERNAL)).await?;
    audit.merchant_balance = Account::decode(merchant.as_deref())?.balance;
    let external = Account::decode(external.as_deref())?.balance;
    audit.deposits = -external;
    audit.net = audit.sum_of_user_balances + audit.merchant_balance + external;
    Ok(audit)
}
