//! Rollout wave logic (DESIGN §7), pure: given a plan, the stores of the fleet, what each
//! assigned store last reported and "now", decide which stores to assign next, whether the
//! current wave is complete and soaked, and whether the rollout aborts. No storage and no clock:
//! HQ's handlers load the inputs, call [`decide`] and record what it says.
//!
//! The rule that matters (hawkbit#3185): a store succeeded only when it reports `committed` for
//! the rollout's version, i.e. after probation. `rolled_back`, `refused`, `failed` and a store
//! silent past `store_timeout_minutes` all count as failures.

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// One wave: the stores of `groups` (or every store not in an earlier wave when `all`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wave {
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub all: bool,
    /// Percent of the wave's assigned stores that must be committed before the next wave opens.
    pub min_success_percent: u8,
    /// Minutes the wave must stay healthy after reaching `min_success_percent`.
    pub soak_minutes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub version: String,
    pub waves: Vec<Wave>,
    /// The rollout aborts once failures exceed this percent of the stores assigned so far.
    pub abort_failure_percent: u8,
    /// A store that has not reached a final state this long after assignment has failed.
    pub store_timeout_minutes: u32,
    /// Skips soak; never skips health (stores still have to commit).
    pub urgent: bool,
    pub paused: bool,
    pub aborted: bool,
}

/// A store's state as last reported (`release.status`), plus HQ's own `assigned`/`timed_out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreState {
    Assigned,
    Downloading,
    Staged,
    WaitingWindow,
    Installing,
    Probation,
    Committed,
    RolledBack,
    Refused,
    Failed,
    TimedOut,
}

impl StoreState {
    fn is_failure(self) -> bool {
        matches!(
            self,
            StoreState::RolledBack
                | StoreState::Refused
                | StoreState::Failed
                | StoreState::TimedOut
        )
    }
    fn is_final(self) -> bool {
        self == StoreState::Committed || self.is_failure()
    }
}

/// A store of the fleet and its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetStore {
    pub id: String,
    pub group: String,
}

/// What HQ knows of an assigned store in this rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub assigned_at: Timestamp,
    /// The version the store's last report was about.
    pub version: String,
    pub state: StoreState,
    /// When `state` was reported.
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub assigned: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub pending: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Stores to assign now (empty when paused or aborting).
    pub assign: Vec<String>,
    /// Stores past their timeout that HQ should record as `timed_out`.
    pub timed_out: Vec<String>,
    /// Index of the wave in progress; `None` once every wave passed.
    pub current_wave: Option<usize>,
    /// The current wave has `min_success_percent` of its assigned stores committed.
    pub wave_complete: bool,
    /// ... and has soaked (always true once complete when `urgent`).
    pub wave_soaked: bool,
    /// When the current wave's soak ends, once it is complete.
    pub soak_ends_at: Option<Timestamp>,
    /// Why the rollout aborts now (or was aborted); no store is assigned then.
    pub abort: Option<String>,
    /// Every wave passed.
    pub finished: bool,
    pub counts: Counts,
}

/// The wave a store belongs to: the first wave naming its group, else the first `all` wave.
pub fn wave_of(plan: &Plan, group: &str) -> Option<usize> {
    plan.waves
        .iter()
        .position(|w| w.groups.iter().any(|g| g == group))
        .or_else(|| plan.waves.iter().position(|w| w.all))
}

/// The outcome of one assigned store at `now`.
fn outcome(plan: &Plan, p: &Progress, now: Timestamp) -> StoreState {
    let state = if p.version == plan.version {
        p.state
    } else {
        // A report about another version says nothing about this one yet.
        StoreState::Assigned
    };
    let timeout = SignedDuration::from_mins(i64::from(plan.store_timeout_minutes));
    if !state.is_final() && now >= p.assigned_at.saturating_add(timeout).unwrap_or(now) {
        return StoreState::TimedOut;
    }
    state
}

pub fn decide(
    plan: &Plan,
    fleet: &[FleetStore],
    progress: &HashMap<String, Progress>,
    now: Timestamp,
) -> Decision {
    let mut d = Decision::default();
    let mut members: Vec<Vec<&FleetStore>> = vec![Vec::new(); plan.waves.len()];
    for s in fleet {
        if let Some(w) = wave_of(plan, &s.group) {
            members[w].push(s);
        }
    }
    // Failures over every store assigned so far decide abort.
    for (id, p) in progress {
        let o = outcome(plan, p, now);
        d.counts.assigned += 1;
        if o == StoreState::Committed {
            d.counts.succeeded += 1;
        } else if o.is_failure() {
            d.counts.failed += 1;
            if o == StoreState::TimedOut && p.state != StoreState::TimedOut {
                d.timed_out.push(id.clone());
            }
        } else {
            d.counts.pending += 1;
        }
    }
    d.timed_out.sort();
    if plan.aborted {
        d.abort = Some("aborted by an operator".into());
    } else if d.counts.assigned > 0
        && d.counts.failed * 100 > usize::from(plan.abort_failure_percent) * d.counts.assigned
    {
        d.abort = Some(format!(
            "{} of {} assigned stores failed, above abort_failure_percent {}",
            d.counts.failed, d.counts.assigned, plan.abort_failure_percent
        ));
    }
    let may_assign = !plan.paused && d.abort.is_none();

    for (i, wave) in plan.waves.iter().enumerate() {
        let (assigned, unassigned): (Vec<&FleetStore>, Vec<&FleetStore>) = members[i]
            .iter()
            .partition(|s| progress.contains_key(&s.id));
        if may_assign {
            d.assign.extend(unassigned.iter().map(|s| s.id.clone()));
        }
        if assigned.is_empty() && !unassigned.is_empty() {
            // This wave opens now (or would, were the rollout not paused).
            d.current_wave = Some(i);
            return d;
        }
        // Commit times of the wave's succeeded stores, earliest first.
        let mut committed: Vec<Timestamp> = assigned
            .iter()
            .filter_map(|s| {
                let p = &progress[&s.id];
                (outcome(plan, p, now) == StoreState::Committed).then_some(p.updated_at)
            })
            .collect();
        committed.sort();
        // The number of commits needed: ceil(min% × assigned).
        let needed = (usize::from(wave.min_success_percent) * assigned.len()).div_ceil(100);
        let complete = committed.len() >= needed;
        let soak = if plan.urgent {
            SignedDuration::ZERO
        } else {
            SignedDuration::from_mins(i64::from(wave.soak_minutes))
        };
        let reached_at = match needed {
            0 => None,
            n => committed.get(n - 1).copied(),
        };
        let soak_ends_at = reached_at.map(|t| t.saturating_add(soak).unwrap_or(t));
        let soaked = complete && soak_ends_at.is_none_or(|end| now >= end);
        if !soaked {
            d.current_wave = Some(i);
            d.wave_complete = complete;
            d.wave_soaked = false;
            d.soak_ends_at = soak_ends_at.filter(|_| complete);
            return d;
        }
    }
    d.finished = true;
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(min: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + min * 60).unwrap()
    }

    fn fleet() -> Vec<FleetStore> {
        let mut f = vec![FleetStore {
            id: "p1".into(),
            group: "pilot".into(),
        }];
        for i in 1..=4 {
            f.push(FleetStore {
                id: format!("c{i}"),
                group: "canary".into(),
            });
        }
        for i in 1..=10 {
            f.push(FleetStore {
                id: format!("s{i:02}"),
                group: String::new(),
            });
        }
        f
    }

    fn plan() -> Plan {
        let wave = |groups: &[&str], all, pct, soak| Wave {
            groups: groups.iter().map(|g| g.to_string()).collect(),
            all,
            min_success_percent: pct,
            soak_minutes: soak,
        };
        Plan {
            version: "1.5.0".into(),
            waves: vec![
                wave(&["pilot"], false, 100, 60),
                wave(&["canary"], false, 75, 30),
                wave(&[], true, 90, 0),
            ],
            abort_failure_percent: 20,
            store_timeout_minutes: 240,
            urgent: false,
            paused: false,
            aborted: false,
        }
    }

    struct Sim {
        progress: HashMap<String, Progress>,
    }

    impl Sim {
        fn new() -> Self {
            Sim {
                progress: HashMap::new(),
            }
        }
        fn step(&mut self, plan: &Plan, now: Timestamp) -> Decision {
            let d = decide(plan, &fleet(), &self.progress, now);
            for id in &d.assign {
                self.progress.insert(
                    id.clone(),
                    Progress {
                        assigned_at: now,
                        version: plan.version.clone(),
                        state: StoreState::Assigned,
                        updated_at: now,
                    },
                );
            }
            d
        }
        fn report(&mut self, id: &str, state: StoreState, now: Timestamp) {
            let p = self.progress.get_mut(id).unwrap();
            p.state = state;
            p.updated_at = now;
        }
    }

    #[test]
    fn waves_advance_only_as_stores_commit_and_soak() {
        let plan = plan();
        let mut sim = Sim::new();
        let d = sim.step(&plan, t(0));
        assert_eq!(d.assign, ["p1"]);
        assert_eq!(d.current_wave, Some(0));
        // Installing and probation are not success.
        sim.report("p1", StoreState::Probation, t(10));
        let d = sim.step(&plan, t(11));
        assert!(d.assign.is_empty() && !d.wave_complete);
        sim.report("p1", StoreState::Committed, t(20));
        let d = sim.step(&plan, t(21));
        assert!(d.assign.is_empty() && d.wave_complete && !d.wave_soaked);
        assert_eq!(d.soak_ends_at, Some(t(80)));
        let d = sim.step(&plan, t(79));
        assert!(d.assign.is_empty());
        let d = sim.step(&plan, t(80));
        assert_eq!(d.assign, ["c1", "c2", "c3", "c4"]);
        assert_eq!(d.current_wave, Some(1));
        // 3 of 4 canaries (75 %) committed, one still installing: complete, then soak 30.
        for id in ["c1", "c2", "c3"] {
            sim.report(id, StoreState::Committed, t(100));
        }
        sim.report("c4", StoreState::Installing, t(100));
        let d = sim.step(&plan, t(101));
        assert!(d.wave_complete && d.assign.is_empty());
        let d = sim.step(&plan, t(130));
        assert_eq!(d.assign.len(), 10);
        assert_eq!(d.current_wave, Some(2));
        for i in 1..=10 {
            sim.report(&format!("s{i:02}"), StoreState::Committed, t(140));
        }
        let d = sim.step(&plan, t(141));
        assert!(d.finished && d.abort.is_none());
        assert_eq!(d.counts.succeeded, 14);
    }

    #[test]
    fn committed_for_another_version_is_not_success() {
        let plan = plan();
        let mut sim = Sim::new();
        sim.step(&plan, t(0));
        sim.progress.get_mut("p1").unwrap().version = "1.4.0".into();
        sim.report("p1", StoreState::Committed, t(5));
        let d = sim.step(&plan, t(500));
        assert!(!d.wave_complete && d.assign.is_empty());
    }

    #[test]
    fn rollout_aborts_when_failures_pass_the_threshold() {
        let mut plan = plan();
        plan.waves[0].soak_minutes = 0;
        let mut sim = Sim::new();
        sim.step(&plan, t(0));
        sim.report("p1", StoreState::Committed, t(1));
        sim.step(&plan, t(2)); // canaries assigned
                               // 1 failure of 5 assigned = 20 %: not above 20.
        sim.report("c1", StoreState::RolledBack, t(3));
        let d = sim.step(&plan, t(4));
        assert!(d.abort.is_none(), "{d:?}");
        // 2 of 5 = 40 %: abort; even once the wave would otherwise be complete, nobody else.
        sim.report("c2", StoreState::Failed, t(5));
        sim.report("c3", StoreState::Committed, t(5));
        sim.report("c4", StoreState::Committed, t(5));
        let d = sim.step(&plan, t(600));
        assert!(d.abort.is_some() && d.assign.is_empty(), "{d:?}");
        assert_eq!(d.counts.failed, 2);
    }

    #[test]
    fn a_silent_store_times_out_and_counts_as_failed() {
        let plan = plan();
        let mut sim = Sim::new();
        sim.step(&plan, t(0));
        sim.report("p1", StoreState::Downloading, t(1));
        let d = sim.step(&plan, t(239));
        assert!(d.timed_out.is_empty() && d.abort.is_none());
        let d = sim.step(&plan, t(240));
        assert_eq!(d.timed_out, ["p1"]);
        assert_eq!(d.counts.failed, 1);
        assert!(d.abort.is_some() && d.assign.is_empty());
        // Once recorded, it is not reported as newly timed out again.
        sim.report("p1", StoreState::TimedOut, t(240));
        let d = sim.step(&plan, t(241));
        assert!(d.timed_out.is_empty() && d.counts.failed == 1);
    }

    #[test]
    fn urgent_skips_soak_but_never_health() {
        let mut plan = plan();
        plan.urgent = true;
        let mut sim = Sim::new();
        sim.step(&plan, t(0));
        sim.report("p1", StoreState::Probation, t(1));
        let d = sim.step(&plan, t(2));
        assert!(d.assign.is_empty(), "probation is not health");
        sim.report("p1", StoreState::Committed, t(3));
        let d = sim.step(&plan, t(3));
        assert_eq!(d.assign.len(), 4, "no soak when urgent");
    }

    #[test]
    fn pause_stops_assignment_and_resume_continues() {
        let mut plan = plan();
        plan.paused = true;
        let mut sim = Sim::new();
        let d = sim.step(&plan, t(0));
        assert!(d.assign.is_empty() && d.current_wave == Some(0));
        plan.paused = false;
        assert_eq!(sim.step(&plan, t(1)).assign, ["p1"]);
        plan.aborted = true;
        sim.report("p1", StoreState::Committed, t(2));
        let d = sim.step(&plan, t(500));
        assert!(d.assign.is_empty() && d.abort.is_some());
    }
}
