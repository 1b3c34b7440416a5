//! The verdict: the workload's record of every acknowledged reply against the
//! cluster's final state, invariant by invariant (docs/DESIGN.md, "Invariants").
//! Pure data in, a list of violations out, so a test can feed it doctored records
//! and see it fail.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use serde_json::Value;

/// A write the workload sent, with its definitive outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Write {
    pub user: String,
    pub request_id: String,
    pub kind: Kind,
    /// Status of the first definitive answer (2xx or 4xx).
    pub status: u16,
    /// `X-LDC-Cell` and `X-LDC-Epoch` of that answer: who applied it, at which epoch.
    pub cell: String,
    pub epoch: u64,
    /// The shard (the owning cell by placement) of the user.
    pub shard: String,
    /// `order_id` of a confirmed order.
    pub order_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Kind {
    Deposit {
        amount: i64,
    },
    Transfer {
        to_user: String,
        amount: i64,
    },
    Order {
        item: String,
        quantity: u32,
        amount: i64,
    },
}

/// What the cluster holds after the run, everything healed.
#[derive(Debug, Clone, Default)]
pub struct Final {
    pub balances: HashMap<String, i64>,
    /// Every order id each user has.
    pub orders: HashMap<String, BTreeSet<String>>,
    /// Each cell's `/admin/audit` answer, and the one from before the run (the
    /// cluster may have served other clients before).
    pub audits: BTreeMap<String, Value>,
    pub baseline: BTreeMap<String, Value>,
    /// Each item's total stock, from the deploy file.
    pub stock: BTreeMap<String, u64>,
}

/// One broken invariant and the first record that shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub invariant: &'static str,
    pub detail: String,
}

/// The invariants, in the order of docs/DESIGN.md, "Invariants".
pub const INVARIANTS: [&str; 7] = [
    "no_oversell",
    "no_lost_acknowledgement",
    "exactly_once",
    "money_conserved",
    "single_owner",
    "replays_match",
    "leases_accounted",
];

/// Checks `writes` (every request id resolved to its first definitive outcome) and
/// `replays` (requests sent again whose answer differed from the first, as
/// `(user, request_id, detail)`) against `state`.
pub fn check(
    writes: &[Write],
    replays: &[(String, String, String)],
    state: &Final,
) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut violate = |invariant: &'static str, detail: String| {
        violations.push(Violation { invariant, detail });
    };

    // What the acknowledged writes say every balance must be.
    let mut expected: BTreeMap<&str, i64> = BTreeMap::new();
    let mut confirmed: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut sold: BTreeMap<&str, u64> = BTreeMap::new();
    let mut deposited = 0i64;
    for write in writes.iter().filter(|w| (200..300).contains(&w.status)) {
        match &write.kind {
            Kind::Deposit { amount } => {
                *expected.entry(&write.user).or_default() += amount;
                deposited += amount;
            }
            Kind::Transfer { to_user, amount } => {
                *expected.entry(&write.user).or_default() -= amount;
                *expected.entry(to_user).or_default() += amount;
            }
            Kind::Order {
                item,
                quantity,
                amount,
            } => {
                *expected.entry(&write.user).or_default() -= amount;
                *sold.entry(item).or_default() += u64::from(*quantity);
                if let Some(id) = &write.order_id {
                    confirmed.entry(&write.user).or_default().insert(id);
                }
            }
        }
    }

    // 1. No oversell: per item, what all cells' ledgers sold is within the stock and
    // is what their orders add up to, and what buyers were told.
    // A number in a cell's audit from before the run, by JSON pointer; 0 if absent.
    let before = |cell: &str, pointer: &str| {
        state
            .baseline
            .get(cell)
            .and_then(|audit| audit.pointer(pointer))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    for (item, stock) in &state.stock {
        let mut by_ledgers = 0u64;
        let mut during_run = 0i64;
        for (cell, audit) in &state.audits {
            let entry = &audit["ledger"]["items"][item];
            let (sold_here, by_orders) = (
                entry["sold"].as_u64().unwrap_or(0),
                entry["sold_by_orders"].as_u64().unwrap_or(0),
            );
            if sold_here != by_orders {
                violate(
                    "no_oversell",
                    format!(
                        "{cell}: {item}: the stock record says {sold_here} sold, its orders {by_orders}"
                    ),
                );
            }
            by_ledgers += sold_here;
            during_run += sold_here as i64 - before(cell, &format!("/ledger/items/{item}/sold"));
        }
        if by_ledgers > *stock {
            violate(
                "no_oversell",
                format!("{item}: {by_ledgers} units sold of a stock of {stock}"),
            );
        }
        let acknowledged = sold.get(item.as_str()).copied().unwrap_or(0) as i64;
        if acknowledged != during_run {
            violate(
                "no_lost_acknowledgement",
                format!(
                    "{item}: buyers were told of {acknowledged} units, the ledgers sold {during_run} during the run"
                ),
            );
        }
    }

    // With a global zone: every unit is in the global account or held by a cell, and
    // each cell holds by its ledger what the global zone says it holds (a lease the
    // cell recorded and has not finished may be applied on the global side only).
    for audit in state.audits.values() {
        let Some(items) = audit["global_zone"].as_object() else {
            continue;
        };
        for (item, books) in items {
            let number = |v: &Value| v.as_u64().unwrap_or(0);
            let (stock, available, held) = (
                number(&books["stock"]),
                number(&books["available"]),
                number(&books["held_by_cells"]),
            );
            if stock != available + held {
                violate(
                    "leases_accounted",
                    format!(
                        "{item}: stock {stock} != {available} available + {held} held by cells"
                    ),
                );
            }
            for (cell, quota) in books["cells"].as_object().into_iter().flatten() {
                let entry = &state.audits.get(cell).map(|a| &a["ledger"]["items"][item]);
                let Some(entry) = entry else { continue };
                let (received, leases) = (number(&entry["received"]), number(&entry["leases"]));
                let (gz_held, gz_leases) = (number(&quota["held"]), number(&quota["leases"]));
                let pending = entry["lease_pending"].as_bool().unwrap_or(false);
                let agrees = if pending {
                    gz_leases == leases || gz_leases == leases + 1
                } else {
                    gz_leases == leases && gz_held == received
                };
                if !agrees {
                    violate(
                        "leases_accounted",
                        format!(
                            "{cell}: {item}: its ledger has {received} units from {leases} leases \
                             (pending: {pending}), the global zone {gz_held} from {gz_leases}"
                        ),
                    );
                }
            }
        }
    }

    // 2. and 3. Every balance is what the acknowledged writes make it (a lost write
    // leaves it short, a write applied twice off), and every confirmed order is
    // there once.
    let users: BTreeSet<&str> = expected
        .keys()
        .copied()
        .chain(state.balances.keys().map(String::as_str))
        .collect();
    for user in users {
        let want = expected.get(user).copied().unwrap_or(0);
        let have = state.balances.get(user).copied();
        if have != Some(want) {
            let first = writes
                .iter()
                .find(|w| w.user == user && (200..300).contains(&w.status));
            let invariant = if have.unwrap_or(0) < want {
                "no_lost_acknowledgement"
            } else {
                "exactly_once"
            };
            violate(
                invariant,
                format!(
                    "{user}: balance {} but the acknowledged writes make it {want}; first of them: {}",
                    have.map_or("missing".to_owned(), |b| b.to_string()),
                    first.map_or("none".to_owned(), |w| serde_json::to_string(w)
                        .unwrap_or_default()),
                ),
            );
        }
        let told = confirmed.get(user).cloned().unwrap_or_default();
        let held: BTreeSet<&str> = state
            .orders
            .get(user)
            .map(|o| o.iter().map(String::as_str).collect())
            .unwrap_or_default();
        if let Some(missing) = told.difference(&held).next() {
            violate(
                "no_lost_acknowledgement",
                format!("{user}: confirmed order {missing} is not in the ledger"),
            );
        }
        if let Some(extra) = held.difference(&told).next() {
            violate(
                "exactly_once",
                format!("{user}: order {extra} in the ledger was never confirmed to the client"),
            );
        }
    }

    // 4. Money is conserved at every cell, no balance is negative, and deposits add up.
    let mut in_ledgers = 0i64;
    for (cell, audit) in &state.audits {
        let ledger = &audit["ledger"];
        if ledger["net"].as_i64() != Some(0) {
            violate(
                "money_conserved",
                format!("{cell}: the balances sum to {} instead of 0", ledger["net"]),
            );
        }
        if ledger["negative_balances"].as_u64() != Some(0) {
            violate(
                "money_conserved",
                format!("{cell}: {} negative balances", ledger["negative_balances"]),
            );
        }
        in_ledgers += ledger["deposits"].as_i64().unwrap_or(0) - before(cell, "/ledger/deposits");
    }
    if in_ledgers != deposited {
        violate(
            "money_conserved",
            format!(
                "the ledgers took {in_ledgers} of deposits during the run, clients were told of {deposited}"
            ),
        );
    }

    // 5. Single owner: one cell per shard and epoch among acknowledged writes.
    let mut owners: BTreeMap<(&str, u64), &Write> = BTreeMap::new();
    for write in writes.iter().filter(|w| (200..300).contains(&w.status)) {
        match owners.get(&(write.shard.as_str(), write.epoch)) {
            Some(first) if first.cell != write.cell => violate(
                "single_owner",
                format!(
                    "shard {} at epoch {}: writes confirmed by {} ({}) and {} ({})",
                    write.shard,
                    write.epoch,
                    first.cell,
                    first.request_id,
                    write.cell,
                    write.request_id
                ),
            ),
            Some(_) => {}
            None => {
                owners.insert((&write.shard, write.epoch), write);
            }
        }
    }

    // 6. A request sent again answers its first outcome.
    for (user, request_id, detail) in replays {
        violate("replays_match", format!("{user} {request_id}: {detail}"));
    }
    violations
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn write(user: &str, id: &str, kind: Kind, cell: &str, epoch: u64) -> Write {
        let order_id = matches!(kind, Kind::Order { .. }).then(|| format!("o-{id}"));
        Write {
            user: user.to_owned(),
            request_id: id.to_owned(),
            kind,
            status: 201,
            cell: cell.to_owned(),
            epoch,
            shard: "c1".to_owned(),
            order_id,
        }
    }

    /// A consistent run: alice deposits 100, pays 30 to bob, buys one unit for 10.
    fn run() -> (Vec<Write>, Final) {
        let writes = vec![
            write("alice", "d1", Kind::Deposit { amount: 100 }, "c1", 1),
            write(
                "alice",
                "t1",
                Kind::Transfer {
                    to_user: "bob".into(),
                    amount: 30,
                },
                "c1",
                1,
            ),
            write(
                "alice",
                "o1",
                Kind::Order {
                    item: "hot".into(),
                    quantity: 1,
                    amount: 10,
                },
                "c1",
                1,
            ),
        ];
        let state = Final {
            balances: HashMap::from([("alice".into(), 60), ("bob".into(), 30)]),
            orders: HashMap::from([("alice".into(), BTreeSet::from(["o-o1".to_owned()]))]),
            audits: BTreeMap::from([(
                "c1".into(),
                json!({"ledger": {"net": 0, "negative_balances": 0, "deposits": 100,
                    "items": {"hot": {"sold": 1, "sold_by_orders": 1}}}}),
            )]),
            stock: BTreeMap::from([("hot".into(), 1)]),
            baseline: BTreeMap::new(),
        };
        (writes, state)
    }

    fn broken(writes: &[Write], state: &Final) -> BTreeSet<&'static str> {
        check(writes, &[], state)
            .iter()
            .map(|v| v.invariant)
            .collect()
    }

    #[test]
    fn a_consistent_run_passes() {
        let (writes, state) = run();
        assert_eq!(check(&writes, &[], &state), []);
    }

    #[test]
    fn an_acknowledged_order_missing_from_the_ledger_fails() {
        let (writes, mut state) = run();
        state.orders.clear();
        *state.balances.get_mut("alice").expect("alice") += 10;
        state.audits.get_mut("c1").expect("c1")["ledger"]["items"]["hot"] =
            json!({"sold": 0, "sold_by_orders": 0});
        assert!(broken(&writes, &state).contains("no_lost_acknowledgement"));
    }

    #[test]
    fn a_unit_sold_twice_fails() {
        let (mut writes, mut state) = run();
        writes.push(write(
            "bob",
            "o2",
            Kind::Order {
                item: "hot".into(),
                quantity: 1,
                amount: 10,
            },
            "c1",
            1,
        ));
        state.balances.insert("bob".into(), 20);
        state
            .orders
            .insert("bob".into(), BTreeSet::from(["o-o2".to_owned()]));
        state.audits.get_mut("c1").expect("c1")["ledger"]["items"]["hot"] =
            json!({"sold": 2, "sold_by_orders": 2});
        assert!(broken(&writes, &state).contains("no_oversell"));
    }

    #[test]
    fn a_write_applied_twice_fails() {
        let (writes, mut state) = run();
        *state.balances.get_mut("bob").expect("bob") += 30;
        assert!(broken(&writes, &state).contains("exactly_once"));
    }

    #[test]
    fn money_from_nowhere_fails() {
        let (writes, mut state) = run();
        state.audits.get_mut("c1").expect("c1")["ledger"]["net"] = json!(5);
        assert!(broken(&writes, &state).contains("money_conserved"));
    }

    #[test]
    fn two_cells_writing_one_shard_at_one_epoch_fails() {
        let (mut writes, state) = run();
        writes[1].cell = "c2".into();
        assert!(broken(&writes, &state).contains("single_owner"));
        let (mut writes, state) = run();
        writes[1].cell = "c2".into();
        writes[1].epoch = 2;
        assert!(
            !broken(&writes, &state).contains("single_owner"),
            "a takeover raises the epoch"
        );
    }

    #[test]
    fn a_lease_recorded_on_one_side_only_fails() {
        let (writes, mut state) = run();
        let c1 = state.audits.get_mut("c1").expect("c1");
        c1["ledger"]["items"]["hot"]["received"] = json!(5);
        c1["ledger"]["items"]["hot"]["leases"] = json!(1);
        c1["global_zone"] = json!({"hot": {"stock": 10, "available": 5, "held_by_cells": 5,
            "cells": {"c1": {"held": 5, "leases": 1}}}});
        assert!(!broken(&writes, &state).contains("leases_accounted"));
        let c1 = state.audits.get_mut("c1").expect("c1");
        c1["global_zone"]["hot"]["cells"]["c1"] = json!({"held": 9, "leases": 2});
        c1["global_zone"]["hot"]["held_by_cells"] = json!(9);
        c1["global_zone"]["hot"]["available"] = json!(1);
        assert!(broken(&writes, &state).contains("leases_accounted"));
        state.audits.get_mut("c1").expect("c1")["global_zone"]["hot"]["available"] = json!(0);
        let problems = check(&writes, &[], &state);
        assert!(
            problems
                .iter()
                .any(|v| v.detail.contains("stock 10 != 0 available"))
        );
    }

    #[test]
    fn a_replay_with_another_answer_fails() {
        let (writes, state) = run();
        let replays = [(
            "alice".to_owned(),
            "d1".to_owned(),
            "201 then 409".to_owned(),
        )];
        assert_eq!(
            check(&writes, &replays, &state)[0].invariant,
            "replays_match"
        );
    }
}
