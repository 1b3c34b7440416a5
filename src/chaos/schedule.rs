//! The fault schedule: a pure function of the seed, the run's length, the action
//! weights and the cells, so that a seed names one schedule forever. Its random
//! numbers come from our own SplitMix64, not from a crate whose algorithm a version
//! bump could change.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// SplitMix64 (Steele, Lea, Flood 2014): 64 bits of state, one add and a mix per number.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`), without modulo bias worth speaking of for our `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// A fault the schedule can inject into a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// SIGKILL: a crash; `ldc up` restarts the cell after its backoff.
    Kill,
    /// SIGTERM: a clean stop, then `ldc up` restarts the cell.
    Restart,
    /// SIGSTOP: a gray failure, a process that hangs but holds its ports and locks.
    Stop,
    /// SIGCONT of a stopped cell.
    Cont,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Kill, Action::Restart, Action::Stop, Action::Cont];

    pub fn name(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Restart => "restart",
            Self::Stop => "stop",
            Self::Cont => "cont",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Relative weights of the actions, as `kill=3,restart=4,stop=1,cont=2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weights(Vec<(Action, u32)>);

impl Default for Weights {
    fn default() -> Self {
        Self(vec![
            (Action::Kill, 3),
            (Action::Restart, 4),
            (Action::Stop, 1),
            (Action::Cont, 2),
        ])
    }
}

impl std::str::FromStr for Weights {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut weights = Vec::new();
        for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
            let (name, weight) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?}: expected action=weight"))?;
            let action = Action::ALL
                .into_iter()
                .find(|a| a.name() == name.trim())
                .ok_or_else(|| format!("{name:?}: actions are kill, restart, stop, cont"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("{pair:?}: the weight must be a whole number"))?;
            if weights.iter().any(|(a, _)| *a == action) {
                return Err(format!("{name:?} is given twice"));
            }
            weights.push((action, weight));
        }
        if !weights.iter().any(|(a, w)| *w > 0 && *a != Action::Cont) {
            return Err("at least one of kill, restart, stop needs a weight above 0".to_owned());
        }
        Ok(Self(weights))
    }
}

/// One scheduled fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Time since the start of the run.
    pub at_ms: u64,
    pub action: Action,
    pub cell: String,
}

/// Longest a cell stays stopped before the schedule continues it by itself: a gray
/// failure that never heals would only measure the timeout.
pub const MAX_STOPPED: Duration = Duration::from_secs(5);

/// The faults of a run of `duration` over `cells`, one every `gap` on average
/// (uniform between half and one and a half of it), drawn by `weights`. The first
/// fault comes after one gap, so the workload has warmed up; a stopped cell is
/// continued within [`MAX_STOPPED`]; a kill, restart or stop targets a cell that is
/// not stopped, a cont one that is (an action with no such target is drawn again).
pub fn plan(
    seed: u64,
    duration: Duration,
    gap: Duration,
    weights: &Weights,
    cells: &[String],
) -> Vec<Step> {
    let mut rng = Rng::new(seed);
    let total: u64 = weights.0.iter().map(|(_, w)| u64::from(*w)).sum();
    let gap_ms = gap.as_millis().max(1) as u64;
    let end_ms = duration.as_millis() as u64;
    let mut stopped: Vec<(String, u64)> = Vec::new();
    let mut steps = Vec::new();
    let mut at_ms = gap_ms;
    while at_ms < end_ms && !cells.is_empty() {
        // Continue cells stopped for too long, in the order they were stopped.
        while let Some(pos) = stopped
            .iter()
            .position(|(_, since)| at_ms - since >= MAX_STOPPED.as_millis() as u64)
        {
            let (cell, since) = stopped.remove(pos);
            steps.push(Step {
                at_ms: since + MAX_STOPPED.as_millis() as u64,
                action: Action::Cont,
                cell,
            });
        }
        let action = draw(
            &mut rng,
            weights,
            total,
            !stopped.is_empty(),
            stopped.len() < cells.len(),
        );
        let cell = match action {
            Action::Cont => stopped.remove(rng.below(stopped.len() as u64) as usize).0,
            _ => {
                let running: Vec<&String> = cells
                    .iter()
                    .filter(|c| !stopped.iter().any(|(s, _)| s == *c))
                    .collect();
                running[rng.below(running.len() as u64) as usize].clone()
            }
        };
        match action {
            Action::Stop => stopped.push((cell.clone(), at_ms)),
            // SIGKILL ends a stopped process too; none is the target here.
            Action::Kill | Action::Restart | Action::Cont => {}
        }
        steps.push(Step {
            at_ms,
            action,
            cell,
        });
        at_ms += gap_ms / 2 + rng.below(gap_ms + 1);
    }
    steps.sort_by_key(|s| s.at_ms);
    steps
}

/// Draws an action whose target exists: `cont` needs a stopped cell, the others a
/// running one.
fn draw(
    rng: &mut Rng,
    weights: &Weights,
    total: u64,
    any_stopped: bool,
    any_running: bool,
) -> Action {
    loop {
        let mut pick = rng.below(total.max(1));
        let mut chosen = Action::Kill;
        for (action, weight) in &weights.0 {
            if pick < u64::from(*weight) {
                chosen = *action;
                break;
            }
            pick -= u64::from(*weight);
        }
        let possible = match chosen {
            Action::Cont => any_stopped,
            _ => any_running,
        };
        if possible {
            return chosen;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells() -> Vec<String> {
        ["c1", "c2", "c3"].map(String::from).to_vec()
    }

    fn plan_of(seed: u64) -> Vec<Step> {
        plan(
            seed,
            Duration::from_secs(60),
            Duration::from_millis(1500),
            &Weights::default(),
            &cells(),
        )
    }

    #[test]
    fn the_rng_is_pinned() {
        // SplitMix64's published first outputs for seed 0; a change here changes
        // every schedule users have recorded.
        let mut rng = Rng::new(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn a_seed_names_one_schedule() {
        assert_eq!(plan_of(42), plan_of(42));
        assert_ne!(plan_of(42), plan_of(43));
        let steps = plan_of(42);
        assert!(steps.len() >= 20, "{} steps in 60 s", steps.len());
        assert!(steps.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    }

    #[test]
    fn every_stop_is_continued_in_time_and_conts_follow_stops() {
        for seed in 0..200 {
            let mut stopped: Vec<(&str, u64)> = Vec::new();
            for step in &plan_of(seed) {
                match step.action {
                    Action::Stop => {
                        assert!(
                            !stopped.iter().any(|(c, _)| *c == step.cell),
                            "seed {seed}: {step:?} of a stopped cell"
                        );
                        stopped.push((&step.cell, step.at_ms));
                    }
                    Action::Cont => {
                        let pos = stopped
                            .iter()
                            .position(|(c, _)| *c == step.cell)
                            .unwrap_or_else(|| panic!("seed {seed}: {step:?} of a running cell"));
                        let (_, since) = stopped.remove(pos);
                        assert!(step.at_ms - since <= MAX_STOPPED.as_millis() as u64);
                    }
                    Action::Kill | Action::Restart => {
                        assert!(
                            !stopped.iter().any(|(c, _)| *c == step.cell),
                            "seed {seed}: {step:?} of a stopped cell"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn weights_parse_and_refuse_nonsense() {
        let weights: Weights = "kill=1,stop=0".parse().expect("valid");
        let steps = plan(
            7,
            Duration::from_secs(30),
            Duration::from_millis(500),
            &weights,
            &cells(),
        );
        assert!(steps.iter().all(|s| s.action == Action::Kill));
        assert!("kill=x".parse::<Weights>().is_err());
        assert!("boom=1".parse::<Weights>().is_err());
        assert!("cont=3".parse::<Weights>().is_err());
        assert!("kill=1,kill=2".parse::<Weights>().is_err());
    }
}
