//! The chaos report: what the run did, what users saw, how fast the cluster reacted,
//! and the verdict; printed for people and written as JSON for CI and plots.

use std::collections::BTreeMap;

use serde::Serialize;

use super::check::{INVARIANTS, Violation};
use super::schedule::{Action, Step};
use super::workload::Failure;

/// A change of who serves a shard, as the router's `/admin/topology` showed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteChange {
    pub at_ms: u64,
    pub shard: usize,
    pub served_by: Option<usize>,
    pub epoch: Option<u64>,
}

/// A scheduled fault and what came of it.
#[derive(Debug, Clone, Serialize)]
pub struct Done {
    #[serde(flatten)]
    pub step: Step,
    /// The signalled pid, or why the step was skipped.
    pub outcome: String,
}

/// Reaction times to one fault of a cell.
#[derive(Debug, Clone, Serialize)]
pub struct Reaction {
    pub at_ms: u64,
    pub cell: String,
    pub action: Action,
    /// Fault to the router no longer routing the cell's shard to it.
    pub detection_ms: Option<u64>,
    /// Fault to the router routing the shard to the cell's standby.
    pub takeover_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub duration_ms: u64,
    pub schedule: Vec<Done>,
    /// Answers by outcome: `201`, `409 sold_out`, `503 cell_unavailable`, `none`.
    pub outcomes: BTreeMap<String, u64>,
    pub requests: u64,
    /// 5xx or no answer for users whose shard was not served by its own cell at the
    /// time (or was between a fault and its detection), and for everyone else.
    pub errors_faulted_shards: u64,
    pub errors_elsewhere: u64,
    /// The first of those (at most [`ELSEWHERE_SHOWN`]), to tell what they were.
    pub first_errors_elsewhere: Vec<Failure>,
    pub reactions: Vec<Reaction>,
    pub invariants: BTreeMap<&'static str, &'static str>,
    pub violations: Vec<Violation>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn print(&self) {
        println!(
            "ldc chaos: seed {}, {} ms of faults",
            self.seed, self.duration_ms
        );
        println!("requests: {}", self.requests);
        for (outcome, count) in &self.outcomes {
            println!("  {outcome:<28} {count}");
        }
        println!(
            "errors (5xx or no answer): {} for users of faulted shards, {} for everyone else",
            self.errors_faulted_shards, self.errors_elsewhere
        );
        for failure in &self.first_errors_elsewhere {
            println!(
                "  elsewhere: {:>7} ms shard {} {}",
                failure.at_ms, failure.shard, failure.outcome
            );
        }
        let median = |values: Vec<u64>| {
            let mut values = values;
            values.sort_unstable();
            values
                .get(values.len() / 2)
                .map_or("-".to_owned(), |v| format!("{v} ms"))
        };
        let detections: Vec<u64> = self
            .reactions
            .iter()
            .filter_map(|r| r.detection_ms)
            .collect();
        let takeovers: Vec<u64> = self
            .reactions
            .iter()
            .filter_map(|r| r.takeover_ms)
            .collect();
        println!(
            "detection: median {} of {} faults noticed; takeover by the standby: median {} of {}",
            median(detections.clone()),
            detections.len(),
            median(takeovers.clone()),
            takeovers.len()
        );
        for (invariant, verdict) in &self.invariants {
            println!("  {invariant:<26} {verdict}");
        }
        if let Some(first) = self.violations.first() {
            println!(
                "VIOLATED (seed {}): {} violations; first: {}: {}",
                self.seed,
                self.violations.len(),
                first.invariant,
                first.detail
            );
            println!("actions:");
            for done in &self.schedule {
                println!(
                    "  {:>7} ms {:<7} {:<6} {}",
                    done.step.at_ms, done.step.action, done.step.cell, done.outcome
                );
            }
        } else {
            println!("all invariants hold");
        }
    }
}

/// Verdict per invariant.
pub fn verdicts(violations: &[Violation]) -> BTreeMap<&'static str, &'static str> {
    INVARIANTS
        .iter()
        .map(|name| {
            let verdict = if violations.iter().any(|v| v.invariant == *name) {
                "VIOLATED"
            } else {
                "ok"
            };
            (*name, verdict)
        })
        .collect()
}

/// Intervals `[from, to)` in which each shard was disrupted: served by another cell
/// or by none, or between a fault of its cell and the router noticing.
pub fn disrupted(
    shards: usize,
    timeline: &[RouteChange],
    faults: &[(u64, usize)],
    end_ms: u64,
) -> Vec<Vec<(u64, u64)>> {
    let mut intervals = vec![Vec::new(); shards];
    let mut since: Vec<Option<u64>> = vec![None; shards];
    for change in timeline {
        let own = change.served_by == Some(change.shard);
        match (since[change.shard], own) {
            (None, false) => since[change.shard] = Some(change.at_ms),
            (Some(from), true) => {
                intervals[change.shard].push((from, change.at_ms));
                since[change.shard] = None;
            }
            _ => {}
        }
    }
    for (shard, from) in since.iter().enumerate() {
        if let Some(from) = from {
            intervals[shard].push((*from, end_ms));
        }
    }
    for &(at_ms, shard) in faults {
        let noticed = timeline
            .iter()
            .find(|c| c.shard == shard && c.at_ms >= at_ms && c.served_by != Some(shard))
            .map_or(at_ms + 1_000, |c| c.at_ms);
        intervals[shard].push((at_ms, noticed));
    }
    intervals
}

/// How many failures outside disrupted shards the report lists one by one.
pub const ELSEWHERE_SHOWN: usize = 20;

/// Counts the failures of disrupted shards and returns the rest, earliest first.
pub fn blast_radius(failures: &[Failure], intervals: &[Vec<(u64, u64)>]) -> (u64, Vec<Failure>) {
    let mut faulted = 0;
    let mut elsewhere = Vec::new();
    for failure in failures {
        // A failure is the disruption's when its request was in flight during
        // it: it may have left a request timeout (or two, with a retry) before
        // its answer. The timeline is the router's view, polled: intervals get a
        // second of slack at the end for that.
        let inside = [Some(failure.shard), failure.global_zone]
            .into_iter()
            .flatten()
            .flat_map(|shard| &intervals[shard])
            .any(|&(from, to)| failure.at_ms >= from && failure.sent_ms <= to + 1_000);
        if inside {
            faulted += 1;
        } else {
            elsewhere.push(failure.clone());
        }
    }
    elsewhere.sort_by_key(|f| f.at_ms);
    (faulted, elsewhere)
}

/// Detection and takeover times of each kill, restart and stop. A takeover counts
/// only if the standby serves the shard before its own cell does again, and before
/// the cell's next fault: a later takeover belongs to a later fault.
pub fn reactions(
    schedule: &[Done],
    cells: &[String],
    standbys: &[Option<usize>],
    timeline: &[RouteChange],
) -> Vec<Reaction> {
    schedule
        .iter()
        .filter(|d| d.step.action != Action::Cont && d.outcome.starts_with("pid"))
        .filter_map(|done| {
            let shard = cells.iter().position(|c| *c == done.step.cell)?;
            let at = done.step.at_ms;
            let next_fault = schedule
                .iter()
                .filter(|d| d.step.cell == done.step.cell && d.step.at_ms > at)
                .map(|d| d.step.at_ms)
                .min()
                .unwrap_or(u64::MAX);
            let after = timeline
                .iter()
                .filter(|c| c.shard == shard && c.at_ms >= at && c.at_ms < next_fault);
            let detection_ms = after
                .clone()
                .find(|c| c.served_by != Some(shard))
                .map(|c| c.at_ms - at);
            let takeover_ms = standbys[shard]
                .and_then(|standby| {
                    after
                        .clone()
                        .skip_while(|c| c.served_by == Some(shard))
                        .find(|c| c.served_by == Some(standby) || c.served_by == Some(shard))
                        .filter(|c| c.served_by == Some(standby))
                })
                .map(|c| c.at_ms - at);
            Some(Reaction {
                at_ms: at,
                cell: done.step.cell.clone(),
                action: done.step.action,
                detection_ms,
                takeover_ms,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_takeover_counts_for_a_fault_only_before_the_cell_is_back_and_its_next_fault() {
        let change = |at_ms, served_by| RouteChange {
            at_ms,
            shard: 1,
            served_by,
            epoch: None,
        };
        let kill = |at_ms| Done {
            step: Step {
                at_ms,
                action: Action::Kill,
                cell: "c2".to_owned(),
            },
            outcome: "pid 7".to_owned(),
        };
        let cells = ["c1".to_owned(), "c2".to_owned(), "c3".to_owned()];
        let standbys = [Some(1), Some(2), Some(0)];
        let timeline = [
            // Kill at 1,000: detected, taken over by c3 (index 2).
            change(1_010, None),
            change(1_600, Some(2)),
            change(2_500, Some(1)),
            // Kill at 5,000: detected, back on c2 before the standby could claim.
            change(5_010, None),
            change(5_400, Some(1)),
            // Kill at 9,000: taken over.
            change(9_020, None),
            change(9_700, Some(2)),
        ];
        let schedule = [kill(1_000), kill(5_000), kill(9_000)];
        let times: Vec<(Option<u64>, Option<u64>)> =
            reactions(&schedule, &cells, &standbys, &timeline)
                .iter()
                .map(|r| (r.detection_ms, r.takeover_ms))
                .collect();
        assert_eq!(
            times,
            [
                (Some(10), Some(600)),
                (Some(10), None),
                (Some(20), Some(700))
            ],
            "the second kill's reaction is not the third kill's takeover"
        );
    }

    #[test]
    fn errors_count_against_the_shard_only_while_it_is_disrupted() {
        let timeline = [
            RouteChange {
                at_ms: 1_000,
                shard: 1,
                served_by: None,
                epoch: None,
            },
            RouteChange {
                at_ms: 1_200,
                shard: 1,
                served_by: Some(2),
                epoch: Some(2),
            },
            RouteChange {
                at_ms: 3_000,
                shard: 1,
                served_by: Some(1),
                epoch: Some(3),
            },
        ];
        let intervals = disrupted(3, &timeline, &[(990, 1)], 10_000);
        let failure = |at_ms, shard| Failure {
            sent_ms: at_ms,
            at_ms,
            shard,
            global_zone: None,
            outcome: "none".to_owned(),
        };
        let waited_for = |at_ms, shard| Failure {
            global_zone: Some(1),
            outcome: "503 stock_unavailable".to_owned(),
            ..failure(at_ms, shard)
        };
        let failures = [
            failure(8_000, 1),
            failure(995, 1),
            failure(2_000, 1),
            failure(2_000, 0),
            waited_for(2_000, 0),
            waited_for(8_000, 0),
            // Sent while shard 1 was elsewhere, answered (a timeout) well after.
            Failure {
                sent_ms: 2_900,
                ..failure(4_500, 1)
            },
        ];
        let (faulted, elsewhere) = blast_radius(&failures, &intervals);
        assert_eq!(
            faulted, 4,
            "a stock_unavailable while the global zone moved"
        );
        let elsewhere: Vec<_> = elsewhere.iter().map(|f| (f.at_ms, f.shard)).collect();
        assert_eq!(
            elsewhere,
            [(2_000, 0), (8_000, 1), (8_000, 0)],
            "earliest first"
        );
    }
}
