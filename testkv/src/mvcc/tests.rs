//! Table-driven checks of the Percolator rules, and of the log.

use super::*;

/// A TSO at `ms` milliseconds (logical 0).
fn at(ms: u64) -> u64 {
    ms << 18
}

fn put(key: &[u8], value: &[u8]) -> Mutation {
    Mutation {
        key: key.to_vec(),
        op: Op::Put(value.to_vec()),
    }
}

fn prewrite(mvcc: &mut Mvcc, mutations: Vec<Mutation>, start_ts: u64) -> PrewriteOutcome {
    let primary = mutations[0].key.clone();
    mvcc.prewrite(&Prewrite {
        mutations,
        primary,
        start_ts,
        ttl: 100,
        ..Prewrite::default()
    })
}

fn committed(mvcc: &mut Mvcc, key: &[u8], value: &[u8], start_ts: u64, commit_ts: u64) {
    assert_eq!(
        prewrite(mvcc, vec![put(key, value)], start_ts),
        PrewriteOutcome::Locked { min_commit_ts: 0 }
    );
    mvcc.commit(&[key.to_vec()], start_ts, commit_ts)
        .expect("commit");
}

/// One step of a table-driven case, and what it must answer.
enum Step {
    Prewrite(&'static [u8], u64, fn(&PrewriteOutcome) -> bool),
    Commit(&'static [u8], u64, u64, fn(&Result<(), KeyError>) -> bool),
    Rollback(&'static [u8], u64, fn(&Result<(), KeyError>) -> bool),
    Get(
        &'static [u8],
        u64,
        fn(&Result<Option<Value>, KeyError>) -> bool,
    ),
}

fn run(name: &str, steps: &[Step]) {
    let mut mvcc = Mvcc::in_memory(Options::default());
    for (index, step) in steps.iter().enumerate() {
        let ok = match step {
            Step::Prewrite(key, start_ts, check) => {
                check(&prewrite(&mut mvcc, vec![put(key, b"v")], *start_ts))
            }
            Step::Commit(key, start_ts, commit_ts, check) => {
                check(&mvcc.commit(&[key.to_vec()], *start_ts, *commit_ts))
            }
            Step::Rollback(key, start_ts, check) => {
                check(&mvcc.rollback(&[key.to_vec()], *start_ts))
            }
            Step::Get(key, ts, check) => check(&mvcc.get(key, *ts)),
        };
        assert!(ok, "{name}: step {index} answered wrong");
    }
}

fn locked(outcome: &PrewriteOutcome) -> bool {
    matches!(outcome, PrewriteOutcome::Locked { .. })
}

#[test]
fn percolator_rules() {
    use Step::*;
    let cases: &[(&str, &[Step])] = &[
        (
            "a write committed after my start conflicts",
            &[
                Prewrite(b"k", 10, locked),
                Commit(b"k", 10, 20, |r| r.is_ok()),
                Prewrite(
                    b"k",
                    15,
                    |o| matches!(o, PrewriteOutcome::Failed(e) if matches!(e[..], [KeyError::WriteConflict { conflict_commit_ts: 20, .. }])),
                ),
                Prewrite(b"k", 25, locked),
            ],
        ),
        (
            "a key locked by another transaction is refused",
            &[
                Prewrite(b"k", 10, locked),
                Prewrite(
                    b"k",
                    12,
                    |o| matches!(o, PrewriteOutcome::Failed(e) if matches!(&e[..], [KeyError::Locked(l)] if l.start_ts == 10)),
                ),
                Prewrite(b"k", 10, locked),
            ],
        ),
        (
            "reads see committed data at or below their ts only",
            &[
                Prewrite(b"k", 10, locked),
                Get(b"k", 9, |r| r == &Ok(None)),
                Get(b"k", 11, |r| matches!(r, Err(KeyError::Locked(_)))),
                Commit(b"k", 10, 20, |r| r.is_ok()),
                Get(b"k", 19, |r| r == &Ok(None)),
                Get(b"k", 20, |r| r == &Ok(Some(b"v".to_vec()))),
            ],
        ),
        (
            "a rollback protects against a late prewrite and refuses the commit",
            &[
                Rollback(b"k", 10, |r| r.is_ok()),
                Prewrite(
                    b"k",
                    10,
                    |o| matches!(o, PrewriteOutcome::Failed(e) if matches!(e[..], [KeyError::Aborted(_)])),
                ),
                Commit(b"k", 10, 20, |r| matches!(r, Err(KeyError::Aborted(_)))),
            ],
        ),
        (
            "commit is idempotent, and a committed transaction cannot roll back",
            &[
                Prewrite(b"k", 10, locked),
                Commit(b"k", 10, 20, |r| r.is_ok()),
                Commit(b"k", 10, 20, |r| r.is_ok()),
                Rollback(b"k", 10, |r| matches!(r, Err(KeyError::Aborted(_)))),
            ],
        ),
        (
            "a commit without a lock is refused",
            &[Commit(b"k", 10, 20, |r| {
                matches!(r, Err(KeyError::LockNotFound { .. }))
            })],
        ),
    ];
    for (name, steps) in cases {
        run(name, steps);
    }
}

#[test]
fn an_expired_lock_is_rolled_back_by_check_txn_status_and_a_live_one_is_not() {
    let mut mvcc = Mvcc::in_memory(Options::default());
    let start = at(1_000);
    prewrite(&mut mvcc, vec![put(b"p", b"v"), put(b"s", b"v")], start);
    let check = |now| CheckTxnStatus {
        primary: b"p".to_vec(),
        lock_ts: start,
        caller_start_ts: now,
        current_ts: now,
        rollback_if_not_exist: false,
    };
    assert!(matches!(
        mvcc.check_txn_status(&check(at(1_050))),
        Ok(TxnStatus::Locked { ttl: 100, .. })
    ));
    assert_eq!(
        mvcc.check_txn_status(&check(at(1_100))),
        Ok(TxnStatus::RolledBack {
            action: RollbackAction::TtlExpireRollback
        })
    );
    assert_eq!(
        mvcc.check_txn_status(&check(at(1_200))),
        Ok(TxnStatus::RolledBack {
            action: RollbackAction::NoAction
        })
    );
    mvcc.resolve_lock(start, 0, &[b"s".to_vec()])
        .expect("resolve");
    assert!(
        mvcc.locks(b"", b"", u64::MAX).is_empty(),
        "the secondary was resolved too"
    );
    assert_eq!(mvcc.get(b"s", at(2_000)), Ok(None));
}

#[test]
fn a_committed_primary_lets_readers_commit_the_secondaries() {
    let mut mvcc = Mvcc::in_memory(Options::default());
    prewrite(&mut mvcc, vec![put(b"p", b"1"), put(b"s", b"2")], 10);
    mvcc.commit(&[b"p".to_vec()], 10, 20).expect("primary");
    let status = mvcc.check_txn_status(&CheckTxnStatus {
        primary: b"p".to_vec(),
        lock_ts: 10,
        current_ts: at(10_000),
        ..CheckTxnStatus::default()
    });
    assert_eq!(status, Ok(TxnStatus::Committed { commit_ts: 20 }));
    mvcc.resolve_lock(10, 20, &[b"s".to_vec()])
        .expect("resolve");
    assert_eq!(mvcc.get(b"s", 30), Ok(Some(b"2".to_vec())));
}

#[test]
fn a_missing_transaction_is_rolled_back_only_when_asked() {
    let mut mvcc = Mvcc::in_memory(Options::default());
    let mut check = CheckTxnStatus {
        primary: b"p".to_vec(),
        lock_ts: 10,
        current_ts: 50,
        ..CheckTxnStatus::default()
    };
    assert!(matches!(
        mvcc.check_txn_status(&check),
        Err(KeyError::TxnNotFound { .. })
    ));
    check.rollback_if_not_exist = true;
    assert_eq!(
        mvcc.check_txn_status(&check),
        Ok(TxnStatus::RolledBack {
            action: RollbackAction::LockNotExistRollback
        })
    );
    assert!(
        !locked(&prewrite(&mut mvcc, vec![put(b"p", b"late")], 10)),
        "the late prewrite is refused"
    );
}

#[test]
fn heartbeats_only_raise_the_ttl() {
    let mut mvcc = Mvcc::in_memory(Options::default());
    prewrite(&mut mvcc, vec![put(b"p", b"v")], 10);
    assert_eq!(mvcc.heartbeat(b"p", 10, 50), Ok(100));
    assert_eq!(mvcc.heartbeat(b"p", 10, 500), Ok(500));
    assert!(matches!(
        mvcc.heartbeat(b"p", 11, 500),
        Err(KeyError::TxnNotFound { .. })
    ));
}

#[test]
fn async_commit_and_one_pc_commit_above_every_read() {
    let mut mvcc = Mvcc::in_memory(Options::default());
    assert_eq!(mvcc.get(b"other", 500), Ok(None));
    let outcome = mvcc.prewrite(&Prewrite {
        mutations: vec![put(b"p", b"v"), put(b"s", b"v")],
        primary: b"p".to_vec(),
        start_ts: 100,
        ttl: 100,
        use_async_commit: true,
        secondaries: vec![b"s".to_vec()],
        ..Prewrite::default()
    });
    assert_eq!(outcome, PrewriteOutcome::Locked { min_commit_ts: 501 });
    assert_eq!(
        mvcc.get(b"p", 400),
        Ok(None),
        "a read below min_commit_ts ignores the lock"
    );
    let secondaries = mvcc
        .check_secondary_locks(&[b"s".to_vec()], 100)
        .expect("check");
    assert_eq!(secondaries.locks.len(), 1);
    assert!(matches!(
        mvcc.commit(&[b"p".to_vec()], 100, 300),
        Err(KeyError::CommitTsExpired {
            min_commit_ts: 501,
            ..
        })
    ));
    mvcc.commit(&[b"p".to_vec(), b"s".to_vec()], 100, 501)
        .expect("commit");

    let outcome = mvcc.prewrite(&Prewrite {
        mutations: vec![put(b"q", b"v")],
        primary: b"q".to_vec(),
        start_ts: 600,
        try_one_pc: true,
        ..Prewrite::default()
    });
    assert_eq!(outcome, PrewriteOutcome::OnePc { commit_ts: 601 });
    assert_eq!(mvcc.get(b"q", 601), Ok(Some(b"v".to_vec())));
    assert!(
        mvcc.locks(b"", b"", u64::MAX).is_empty(),
        "1PC leaves no lock"
    );
}

#[test]
fn a_secondary_without_a_lock_is_rolled_back_by_check_secondary_locks() {
    let mut mvcc = Mvcc::in_memory(Options::default());
    let found = mvcc
        .check_secondary_locks(&[b"s".to_vec()], 100)
        .expect("check");
    assert_eq!(
        found,
        SecondaryLocks {
            locks: Vec::new(),
            commit_ts: 0
        }
    );
    assert!(!locked(&prewrite(&mut mvcc, vec![put(b"s", b"late")], 100)));
}

#[test]
fn scans_skip_missing_keys_and_report_locks_in_both_directions() {
    let mut mvcc = Mvcc::in_memory(Options::default());
    for (n, key) in [b"a", b"b", b"c", b"d"].iter().enumerate() {
        committed(&mut mvcc, *key, *key, 10 + n as u64, 20);
    }
    prewrite(
        &mut mvcc,
        vec![Mutation {
            key: b"b".to_vec(),
            op: Op::Delete,
        }],
        30,
    );
    prewrite(&mut mvcc, vec![put(b"e", b"new")], 31);
    let keys = |found: Found| -> Vec<(Key, bool)> {
        found
            .into_iter()
            .map(|(key, value)| (key, value.is_ok()))
            .collect()
    };
    assert_eq!(
        keys(mvcc.scan(b"a", b"", 10, 40, false)),
        vec![
            (b"a".to_vec(), true),
            (b"b".to_vec(), false),
            (b"c".to_vec(), true),
            (b"d".to_vec(), true),
            (b"e".to_vec(), false)
        ]
    );
    assert_eq!(
        keys(mvcc.scan(b"a", b"d", 2, 25, true)),
        vec![(b"c".to_vec(), true), (b"b".to_vec(), true)]
    );
}

#[test]
fn without_locking_nothing_conflicts() {
    let mut mvcc = Mvcc::in_memory(Options { locking: false });
    prewrite(&mut mvcc, vec![put(b"k", b"one")], 10);
    assert!(locked(&prewrite(&mut mvcc, vec![put(b"k", b"two")], 11)));
    assert_eq!(mvcc.get(b"k", 50), Ok(None), "reads never see locks");
    mvcc.commit(&[b"k".to_vec()], 11, 20).expect("commit");
    mvcc.commit(&[b"k".to_vec()], 10, 21)
        .expect("the loser commits too");
    assert_eq!(
        mvcc.get(b"k", 50),
        Ok(Some(b"one".to_vec())),
        "an update was lost"
    );
}

#[test]
fn the_log_survives_a_reopen_and_a_torn_tail_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut mvcc = Mvcc::open(dir.path(), Options::default()).expect("open");
        committed(&mut mvcc, b"k", b"v", 10, 20);
        prewrite(&mut mvcc, vec![put(b"l", b"locked")], 30);
    }
    let log = dir.path().join("mvcc.log");
    let mut torn = std::fs::read(&log).expect("read");
    torn.extend_from_slice(b"[{\"Rollb");
    std::fs::write(&log, &torn).expect("write");
    let mut mvcc = Mvcc::open(dir.path(), Options::default()).expect("reopen");
    assert_eq!(mvcc.get(b"k", 25), Ok(Some(b"v".to_vec())));
    assert_eq!(
        mvcc.locks(b"", b"", u64::MAX).len(),
        1,
        "the lock is durable too"
    );
    committed(&mut mvcc, b"m", b"after", 40, 50);
    drop(mvcc);
    let mut mvcc = Mvcc::open(dir.path(), Options::default()).expect("reopen");
    assert_eq!(
        mvcc.get(b"m", 60),
        Ok(Some(b"after".to_vec())),
        "writes after the cut are kept"
    );

    let mut damaged = std::fs::read(&log).expect("read");
    damaged.splice(0..0, b"garbage\n".iter().copied());
    std::fs::write(&log, &damaged).expect("write");
    assert!(matches!(
        Mvcc::open(dir.path(), Options::default()),
        Err(OpenError::Corrupt { record: 0, .. })
    ));
}
