//! The store's update state machine (DESIGN §7), pure. It exists so that the rules that keep a
//! store safe — install only inside the window, outside trading hours and with no sale in
//! flight; count an update only once probation passed; never retry a version that rolled back
//! (or that HQ withdrew before it was installed) until HQ sends a newer serial — live in one place that tests can drive with a controlled
//! clock, apart from the I/O (download, the root helper, probation checks) that will feed it.
//!
//! [`step`] takes the state, one [`Event`] and the [`Conditions`] at that moment, and returns the
//! next state, the [`Action`] to carry out and the `release.status` payload to send when the
//! state (or its reason) changed. The reported states are the wire's [`ReleaseState`]; [`State`]
//! adds only `Idle` (nothing assigned yet), which is never reported.
//!
//! The I/O around it: [`service`] (the supervised task of `storebox serve`: assignments, download,
//! verification, staging, the request to the root helper, probation), [`protocol`] (the files
//! exchanged with the root helper) and [`sale`] (the guard that keeps an install from starting
//! while a checkout is being recorded).

pub mod protocol;
pub mod sale;
pub mod service;

pub mod helper;

use jiff::civil::Time;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::proto::release::{ReleaseState, ReleaseStatus};

/// A release HQ assigned: its version, manifest serial and the rollout that assigned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub version: String,
    pub serial: u64,
    #[serde(default)]
    pub rollout: String,
}

/// The updater's state: `Idle` or one of the reported [`ReleaseState`]s ([`State::wire`],
/// `From<ReleaseState>`; both matches are exhaustive, so the two cannot drift apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Idle,
    Downloading,
    Staged,
    WaitingWindow,
    Installing,
    Probation,
    Committed,
    RolledBack,
    Refused,
    Failed,
}

impl State {
    /// The state as reported to HQ; `None` for `Idle`.
    pub fn wire(self) -> Option<ReleaseState> {
        Some(match self {
            State::Idle => return None,
            State::Downloading => ReleaseState::Downloading,
            State::Staged => ReleaseState::Staged,
            State::WaitingWindow => ReleaseState::WaitingWindow,
            State::Installing => ReleaseState::Installing,
            State::Probation => ReleaseState::Probation,
            State::Committed => ReleaseState::Committed,
            State::RolledBack => ReleaseState::RolledBack,
            State::Refused => ReleaseState::Refused,
            State::Failed => ReleaseState::Failed,
        })
    }
}

impl From<ReleaseState> for State {
    fn from(s: ReleaseState) -> State {
        match s {
            ReleaseState::Downloading => State::Downloading,
            ReleaseState::Staged => State::Staged,
            ReleaseState::WaitingWindow => State::WaitingWindow,
            ReleaseState::Installing => State::Installing,
            ReleaseState::Probation => State::Probation,
            ReleaseState::Committed => State::Committed,
            ReleaseState::RolledBack => State::RolledBack,
            ReleaseState::Refused => State::Refused,
            ReleaseState::Failed => State::Failed,
        }
    }
}

/// The `release.status` store event payload (the wire type).
pub type Status = ReleaseStatus;

/// A daily store-local time range `HH:MM-HH:MM`; it may wrap past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyRange {
    pub start: Time,
    pub end: Time,
}

impl std::str::FromStr for DailyRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("`{s}` is not HH:MM-HH:MM"))?;
        let t = |x: &str| {
            x.trim()
                .parse::<Time>()
                .map_err(|e| format!("`{s}` is not HH:MM-HH:MM: {e}"))
        };
        Ok(DailyRange {
            start: t(a)?,
            end: t(b)?,
        })
    }
}

impl DailyRange {
    pub fn contains(&self, t: Time) -> bool {
        if self.start <= self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

impl std::fmt::Display for DailyRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-{}",
            self.start.strftime("%H:%M"),
            self.end.strftime("%H:%M")
        )
    }
}

/// The world at the moment of a step.
#[derive(Debug, Clone)]
pub struct Conditions {
    pub now: Timestamp,
    pub time_zone: TimeZone,
    pub window: DailyRange,
    pub trading_hours: DailyRange,
    /// A checkout is being recorded right now.
    pub sale_in_flight: bool,
    /// The version this binary reports ([`crate::VERSION`]).
    pub running_version: String,
}

impl Conditions {
    /// `None` when installing may start now, else why not.
    pub fn install_blocked(&self) -> Option<String> {
        let local = self.now.to_zoned(self.time_zone.clone()).time();
        if !self.window.contains(local) {
            Some(format!("outside the install window {}", self.window))
        } else if self.trading_hours.contains(local) {
            Some(format!("inside trading hours {}", self.trading_hours))
        } else if self.sale_in_flight {
            Some("a sale is in flight".into())
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// HQ assigned a release (`release.assign`).
    Assigned(Release),
    /// HQ withdrew the assignment of `version` by `rollout` (`release.withdraw`: the rollout was
    /// aborted). Taken only before the install starts.
    Withdrawn {
        version: String,
        rollout: String,
        reason: String,
    },
    /// The package and manifest are downloaded and verified.
    Downloaded,
    /// Download or verification failed; the check is in the reason.
    Rejected(String),
    /// Time passed (or a sale ended): re-check the window.
    Tick,
    /// The root helper installed the package and storebox restarted on it.
    Installed,
    ProbationPassed,
    /// A probation check failed in this process: a rollback is to be requested.
    ProbationFailed(String),
    /// The root helper could not install (or did not act in time) and kept the running version.
    InstallFailed(String),
    /// The root helper restored the previous package and data.
    RolledBack(String),
    /// The root helper did not take the rollback request in time: the failed version still runs.
    RollbackUnanswered(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    None,
    Download,
    Stage,
    Install,
    StartProbation,
    Commit,
    RollBack,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Updater {
    pub state: State,
    pub release: Option<Release>,
    pub reason: String,
    pub last_committed_serial: Option<u64>,
    /// The last release that rolled back: not retried until a newer serial.
    pub rolled_back: Option<Release>,
    /// Probation failed and a rollback was requested; waiting for the root helper.
    #[serde(default)]
    pub rolling_back: bool,
    /// The last release HQ withdrew before it was installed: its serial is not taken again
    /// (another one is: a newer fix, or an older version the store has not committed past).
    #[serde(default)]
    pub withdrawn: Option<Release>,
}

impl Default for Updater {
    fn default() -> Self {
        Updater {
            state: State::Idle,
            release: None,
            reason: String::new(),
            last_committed_serial: None,
            rolled_back: None,
            rolling_back: false,
            withdrawn: None,
        }
    }
}

/// Whether a binary reporting `running` is the package version `package` (a Debian version,
/// `[epoch:]upstream[-revision]`): equal, or equal to its upstream part. cargo-deb names the
/// package `0.1.0-1` for a binary that reports `0.1.0`.
pub fn runs_version(running: &str, package: &str) -> bool {
    if running == package {
        return true;
    }
    let no_epoch = package.split_once(':').map_or(package, |(_, v)| v);
    let upstream = no_epoch.rsplit_once('-').map_or(no_epoch, |(u, _)| u);
    running == no_epoch || running == upstream
}

/// The next state, what to do, and the status to report when the state or reason changed.
pub fn step(u: &Updater, event: Event, c: &Conditions) -> (Updater, Action, Option<Status>) {
    let mut next = u.clone();
    let mut action = Action::None;
    let busy = matches!(u.state, State::Installing | State::Probation) || u.rolling_back;
    match (u.state, event) {
        // The release already being worked on (or committed, or refused) assigned again, e.g. by
        // a new rollout: nothing restarts; the current state is reported again for it.
        (state, Event::Assigned(r))
            if !matches!(state, State::RolledBack | State::Failed)
                && u.release
                    .as_ref()
                    .is_some_and(|c| c.version == r.version && c.serial == r.serial) =>
        {
            next.release = Some(r);
            return (next.clone(), Action::None, current_status(&next));
        }
        (_, Event::Assigned(r)) if !busy => {
            let refuse = if u.last_committed_serial.is_some_and(|s| r.serial <= s) {
                Some(format!(
                    "serial {} is not above the last committed {}",
                    r.serial,
                    u.last_committed_serial.unwrap_or(0)
                ))
            } else if u.rolled_back.as_ref().is_some_and(|b| r.serial <= b.serial) {
                Some(format!(
                    "version {} rolled back here; waiting for a newer serial",
                    u.rolled_back
                        .as_ref()
                        .map(|b| b.version.as_str())
                        .unwrap_or("")
                ))
            } else if u.withdrawn.as_ref().is_some_and(|w| r.serial == w.serial) {
                Some(format!(
                    "version {} was withdrawn by HQ here; waiting for a newer serial",
                    u.withdrawn
                        .as_ref()
                        .map(|w| w.version.as_str())
                        .unwrap_or("")
                ))
            } else {
                None
            };
            match refuse {
                Some(reason) => {
                    next.state = State::Refused;
                    next.reason = reason;
                }
                // Assigned the version it already runs (installed by apt, or by an earlier
                // rollout that a new one superseded): nothing to install, and HQ must not wait
                // for it until the store times out.
                None if runs_version(&c.running_version, &r.version) => {
                    next.state = State::Committed;
                    next.reason = "already running this version".into();
                    next.last_committed_serial = Some(
                        u.last_committed_serial
                            .map_or(r.serial, |s| s.max(r.serial)),
                    );
                }
                None => {
                    next.state = State::Downloading;
                    next.reason = String::new();
                    action = Action::Download;
                }
            }
            next.release = Some(r);
        }
        // Withdrawn before the install started: refused, and that serial is never taken again
        // (like a rolled-back one); the service removes the staged files. Once installing, or
        // for another release, a withdrawal changes nothing.
        (
            State::Downloading | State::Staged | State::WaitingWindow,
            Event::Withdrawn {
                version,
                rollout,
                reason,
            },
        ) if u
            .release
            .as_ref()
            .is_some_and(|r| r.version == version && r.rollout == rollout) =>
        {
            next.state = State::Refused;
            next.reason = format!("withdrawn by HQ: {reason}");
            next.withdrawn = u.release.clone();
        }
        (State::Downloading, Event::Downloaded) => {
            next.state = State::Staged;
            next.reason = String::new();
            action = Action::Stage;
        }
        (State::Downloading, Event::Rejected(reason)) => {
            next.state = State::Refused;
            next.reason = reason;
        }
        (State::Staged | State::WaitingWindow, Event::Tick) => match c.install_blocked() {
            Some(reason) => {
                next.state = State::WaitingWindow;
                next.reason = reason;
            }
            None => {
                next.state = State::Installing;
                next.reason = String::new();
                action = Action::Install;
            }
        },
        (State::Installing, Event::Installed) => {
            next.state = State::Probation;
            action = Action::StartProbation;
        }
        (State::Installing | State::Probation, Event::ProbationFailed(reason)) => {
            // Reported as `failed` at once (HQ counts it); `rolled_back` follows once the root
            // helper restored the previous version.
            next.state = State::Failed;
            next.reason = format!("probation failed: {reason}; rollback requested");
            next.rolled_back = u.release.clone();
            next.rolling_back = true;
            action = Action::RollBack;
        }
        (State::Installing, Event::InstallFailed(reason)) => {
            next.state = State::Failed;
            next.reason = reason;
            next.rolled_back = u.release.clone();
        }
        (State::Installing | State::Probation | State::Failed, Event::RolledBack(reason))
            if u.state != State::Failed || u.rolling_back =>
        {
            next.state = State::RolledBack;
            next.reason = reason;
            next.rolled_back = u.release.clone();
            next.rolling_back = false;
        }
        // Waiting for a rollback that does not come would block every later assignment (a fixed
        // version included): the failure stands, with the reason, and the updater is free again.
        (State::Failed, Event::RollbackUnanswered(reason)) if u.rolling_back => {
            next.reason = reason;
            next.rolling_back = false;
        }
        (State::Probation, Event::ProbationPassed) => {
            next.state = State::Committed;
            next.last_committed_serial = u.release.as_ref().map(|r| r.serial);
            action = Action::Commit;
        }
        _ => {}
    }
    let status = status_change(u, &next);
    (next, action, status)
}

/// An assignment refused without looking at it (updates are off on this store).
pub fn refuse(u: &Updater, r: Release, reason: String) -> (Updater, Option<Status>) {
    let mut next = u.clone();
    next.state = State::Refused;
    next.reason = reason;
    next.release = Some(r);
    let status = status_change(u, &next);
    (next, status)
}

/// The `release.status` to report when going from `u` to `next`: when the state, reason or
/// release changed, and never for `Idle`.
pub fn status_change(u: &Updater, next: &Updater) -> Option<Status> {
    let changed = next.state != u.state || next.reason != u.reason || next.release != u.release;
    if changed {
        current_status(next)
    } else {
        None
    }
}

/// The updater's state as a `release.status` (none while `Idle`).
pub fn current_status(next: &Updater) -> Option<Status> {
    next.state.wire().map(|state| Status {
        version: next
            .release
            .as_ref()
            .map(|r| r.version.clone())
            .unwrap_or_default(),
        state,
        reason: next.reason.clone(),
        rollout: next
            .release
            .as_ref()
            .map(|r| r.rollout.clone())
            .filter(|r| !r.is_empty()),
        serial: next.release.as_ref().map(|r| r.serial),
    })
}

/// The first minute from `c.now` (within two days) at which [`Conditions::install_blocked`]
/// would allow an install, ignoring sales in flight; `None` when the window and trading hours
/// never allow one.
pub fn next_install_at(c: &Conditions) -> Option<Timestamp> {
    let mut probe = c.clone();
    probe.sale_in_flight = false;
    let start = c.now.as_second();
    (0..=2 * 24 * 60).find_map(|m| {
        let t = if m == 0 {
            c.now
        } else {
            Timestamp::from_second(start - start.rem_euclid(60) + m * 60).ok()?
        };
        probe.now = t;
        probe.install_blocked().is_none().then_some(t)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(local: &str) -> Conditions {
        let tz = TimeZone::get("Europe/Rome").unwrap();
        let now = format!("2026-12-01T{local}")
            .parse::<jiff::civil::DateTime>()
            .unwrap()
            .to_zoned(tz.clone())
            .unwrap()
            .timestamp();
        Conditions {
            now,
            time_zone: tz,
            window: "02:00-05:00".parse().unwrap(),
            trading_hours: "07:00-22:00".parse().unwrap(),
            sale_in_flight: false,
            running_version: "0.1.0".into(),
        }
    }

    fn rel(v: &str, serial: u64) -> Release {
        Release {
            version: v.into(),
            serial,
            rollout: "r-1".into(),
        }
    }

    /// Runs events from idle; returns the updater, the last action and every status.
    fn run(u: Updater, events: Vec<(Event, Conditions)>) -> (Updater, Action, Vec<Status>) {
        let mut u = u;
        let mut last = Action::None;
        let mut statuses = Vec::new();
        for (e, c) in events {
            let (n, a, s) = step(&u, e, &c);
            u = n;
            last = a;
            statuses.extend(s);
        }
        (u, last, statuses)
    }

    #[test]
    fn downloads_any_time_installs_only_in_the_window_and_commits_after_probation() {
        let (u, a, s) = run(
            Updater::default(),
            vec![
                (Event::Assigned(rel("1.5.0", 10)), at("14:00:00")),
                (Event::Downloaded, at("14:05:00")),
                (Event::Tick, at("14:06:00")),
            ],
        );
        assert_eq!(u.state, State::WaitingWindow);
        assert_eq!(a, Action::None);
        let states: Vec<ReleaseState> = s.iter().map(|s| s.state).collect();
        assert_eq!(
            states,
            [
                ReleaseState::Downloading,
                ReleaseState::Staged,
                ReleaseState::WaitingWindow
            ]
        );
        assert_eq!(
            (s[0].rollout.as_deref(), s[0].serial),
            (Some("r-1"), Some(10))
        );
        assert!(s[2].reason.contains("install window 02:00-05:00"), "{s:?}");
        assert_eq!(s[0].version, "1.5.0");
        // Still waiting at 01:59 local; no repeated status for the same reason.
        let (u, a, s2) = run(u, vec![(Event::Tick, at("01:59:00"))]);
        assert!(a == Action::None && s2.is_empty());
        let (u, a, s3) = run(u, vec![(Event::Tick, at("02:00:00"))]);
        assert_eq!((u.state, a), (State::Installing, Action::Install));
        assert_eq!(s3[0].state, ReleaseState::Installing);
        let (u, a, _) = run(
            u,
            vec![
                (Event::Installed, at("02:03:00")),
                (Event::ProbationPassed, at("02:10:00")),
            ],
        );
        assert_eq!((u.state, a), (State::Committed, Action::Commit));
        assert_eq!(u.last_committed_serial, Some(10));
    }

    #[test]
    fn a_version_already_running_is_committed_at_once() {
        // The package of the running 0.1.0 binary is 0.1.0-1 (cargo-deb's revision).
        let (u, a, s) = run(
            Updater::default(),
            vec![(Event::Assigned(rel("0.1.0-1", 7)), at("14:00:00"))],
        );
        assert_eq!((u.state, a), (State::Committed, Action::None));
        assert_eq!(u.last_committed_serial, Some(7));
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].state, ReleaseState::Committed);
        assert_eq!(s[0].reason, "already running this version");
        // Another version is still downloaded as usual.
        let (u, a, _) = run(u, vec![(Event::Assigned(rel("0.2.0", 8)), at("14:01:00"))]);
        assert_eq!((u.state, a), (State::Downloading, Action::Download));
    }

    #[test]
    fn trading_hours_and_a_sale_in_flight_block_install() {
        let mut late = at("03:00:00");
        late.trading_hours = "02:30-23:00".parse().unwrap();
        let staged = Updater {
            state: State::Staged,
            release: Some(rel("1.5.0", 10)),
            ..Updater::default()
        };
        let (u, _, s) = step(&staged, Event::Tick, &late);
        assert_eq!(u.state, State::WaitingWindow);
        assert!(s.unwrap().reason.contains("trading hours"));
        let mut sale = at("03:00:00");
        sale.sale_in_flight = true;
        let (u, a, s) = step(&u, Event::Tick, &sale);
        assert_eq!((u.state, a), (State::WaitingWindow, Action::None));
        assert_eq!(s.unwrap().reason, "a sale is in flight");
        let (u, a, _) = step(&u, Event::Tick, &at("03:00:01"));
        assert_eq!((u.state, a), (State::Installing, Action::Install));
    }

    #[test]
    fn a_rolled_back_version_is_not_retried_until_a_newer_serial() {
        let (u, a, s) = run(
            Updater::default(),
            vec![
                (Event::Assigned(rel("1.6.0", 20)), at("01:00:00")),
                (Event::Downloaded, at("01:01:00")),
                (Event::Tick, at("02:01:00")),
                (Event::Installed, at("02:02:00")),
                (
                    Event::ProbationFailed("not ready in time".into()),
                    at("02:05:00"),
                ),
            ],
        );
        assert_eq!((u.state, a), (State::Failed, Action::RollBack));
        assert!(u.rolling_back);
        assert_eq!(
            s.last().unwrap().reason,
            "probation failed: not ready in time; rollback requested"
        );
        // Nothing else starts while the rollback is pending.
        let (same, a, none) = step(&u, Event::Assigned(rel("1.6.1", 21)), &at("02:05:30"));
        assert_eq!((&same, a, none), (&u, Action::None, None));
        let (u, a, s) = step(
            &u,
            Event::RolledBack("restored 1.5.0".into()),
            &at("02:06:00"),
        );
        assert_eq!((u.state, a), (State::RolledBack, Action::None));
        assert_eq!(s.unwrap().state, ReleaseState::RolledBack);
        let (u2, a, s) = step(&u, Event::Assigned(rel("1.6.0", 20)), &at("02:06:00"));
        assert_eq!((u2.state, a), (State::Refused, Action::None));
        assert!(s.unwrap().reason.contains("rolled back"));
        let (u3, a, _) = step(&u2, Event::Assigned(rel("1.6.1", 21)), &at("02:07:00"));
        assert_eq!((u3.state, a), (State::Downloading, Action::Download));
    }

    #[test]
    fn a_serial_not_above_the_last_committed_and_a_bad_download_are_refused() {
        let u = Updater {
            state: State::Committed,
            last_committed_serial: Some(30),
            ..Updater::default()
        };
        let (u2, _, s) = step(&u, Event::Assigned(rel("1.4.0", 30)), &at("12:00:00"));
        assert_eq!(u2.state, State::Refused);
        assert!(s.unwrap().reason.contains("not above"));
        let (u3, _, _) = step(&u, Event::Assigned(rel("1.7.0", 31)), &at("12:00:00"));
        let (u4, a, s) = step(
            &u3,
            Event::Rejected("check `sha256` failed".into()),
            &at("12:01:00"),
        );
        assert_eq!((u4.state, a), (State::Refused, Action::None));
        assert!(s.unwrap().reason.contains("sha256"));
    }

    #[test]
    fn an_assignment_waits_while_installing() {
        let u = Updater {
            state: State::Installing,
            release: Some(rel("1.5.0", 10)),
            ..Updater::default()
        };
        let (u2, a, s) = step(&u, Event::Assigned(rel("1.6.0", 11)), &at("02:30:00"));
        assert_eq!((u2, a, s), (u, Action::None, None));
    }

    #[test]
    fn the_same_release_assigned_again_restarts_nothing_and_reports_the_state_again() {
        let mut u = Updater {
            state: State::WaitingWindow,
            release: Some(rel("1.5.0", 10)),
            reason: "outside the install window 02:00-05:00".into(),
            ..Updater::default()
        };
        let mut again = rel("1.5.0", 10);
        again.rollout = "r-2".into();
        let (n, a, s) = step(&u, Event::Assigned(again.clone()), &at("14:00:00"));
        assert_eq!((n.state, a), (State::WaitingWindow, Action::None));
        let s = s.unwrap();
        assert_eq!(
            (s.state, s.rollout.as_deref(), s.serial),
            (ReleaseState::WaitingWindow, Some("r-2"), Some(10))
        );
        // Committed: reported committed again, not refused for its own serial.
        u.state = State::Committed;
        u.last_committed_serial = Some(10);
        let (n, _, s) = step(&u, Event::Assigned(again.clone()), &at("14:00:00"));
        assert_eq!(
            (n.state, s.unwrap().state),
            (State::Committed, ReleaseState::Committed)
        );
        // Installing: reported again, nothing else.
        u.state = State::Installing;
        let (n, a, s) = step(&u, Event::Assigned(again), &at("14:00:00"));
        assert_eq!(
            (n.state, a, s.unwrap().state),
            (State::Installing, Action::None, ReleaseState::Installing)
        );
    }

    fn withdrawn(v: &str, rollout: &str) -> Event {
        Event::Withdrawn {
            version: v.into(),
            rollout: rollout.into(),
            reason: "failure threshold reached".into(),
        }
    }

    #[test]
    fn a_withdrawn_release_is_refused_before_install_and_its_serial_never_taken_again() {
        // Assigned in the afternoon, staged, waiting for the night window.
        let (u, _, _) = run(
            Updater::default(),
            vec![
                (Event::Assigned(rel("1.6.0", 20)), at("14:00:00")),
                (Event::Downloaded, at("14:05:00")),
                (Event::Tick, at("14:06:00")),
            ],
        );
        assert_eq!(u.state, State::WaitingWindow);
        // A withdrawal for another rollout or version changes nothing.
        for other in [withdrawn("1.6.0", "r-9"), withdrawn("1.5.0", "r-1")] {
            let (n, a, s) = step(&u, other, &at("15:00:00"));
            assert_eq!((&n, a, s), (&u, Action::None, None));
        }
        let (u, a, s) = step(&u, withdrawn("1.6.0", "r-1"), &at("15:00:00"));
        assert_eq!((u.state, a), (State::Refused, Action::None));
        let s = s.unwrap();
        assert_eq!(
            (s.state, s.version.as_str(), s.rollout.as_deref(), s.serial),
            (ReleaseState::Refused, "1.6.0", Some("r-1"), Some(20))
        );
        assert_eq!(s.reason, "withdrawn by HQ: failure threshold reached");
        // The window opens: nothing is installed.
        let (u, a, s) = step(&u, Event::Tick, &at("02:30:00"));
        assert_eq!((u.state, a, s), (State::Refused, Action::None, None));
        // The same serial assigned again (another rollout): still refused, reported again.
        let mut again = rel("1.6.0", 20);
        again.rollout = "r-2".into();
        let (u2, a, s) = step(&u, Event::Assigned(again), &at("02:31:00"));
        assert_eq!((u2.state, a), (State::Refused, Action::None));
        assert_eq!(s.unwrap().state, ReleaseState::Refused);
        // An older version not committed here yet is taken (HQ rolls out the last good one);
        // once another release was worked on, the withdrawn serial is still refused...
        let (u3, a, _) = step(&u, Event::Assigned(rel("1.5.9", 19)), &at("02:32:00"));
        assert_eq!((u3.state, a), (State::Downloading, Action::Download));
        let (u3, _, _) = step(
            &u3,
            Event::Rejected("check `sha256` failed".into()),
            &at("02:33:00"),
        );
        let (u4, a, s) = step(&u3, Event::Assigned(rel("1.6.0", 20)), &at("02:34:00"));
        assert_eq!((u4.state, a), (State::Refused, Action::None));
        assert!(s.unwrap().reason.contains("withdrawn by HQ"), "{u4:?}");
        // ...and a newer serial is taken.
        let (u5, a, _) = step(&u3, Event::Assigned(rel("1.6.1", 21)), &at("02:35:00"));
        assert_eq!((u5.state, a), (State::Downloading, Action::Download));
    }

    #[test]
    fn a_withdrawal_while_downloading_refuses_and_one_after_the_install_started_is_ignored() {
        let (u, _, _) = run(
            Updater::default(),
            vec![(Event::Assigned(rel("1.6.0", 20)), at("14:00:00"))],
        );
        assert_eq!(u.state, State::Downloading);
        let (n, _, s) = step(&u, withdrawn("1.6.0", "r-1"), &at("14:00:30"));
        assert_eq!(n.state, State::Refused);
        assert!(s.unwrap().reason.starts_with("withdrawn by HQ: "));
        // The download finishing afterwards stages nothing.
        let (n2, a, s) = step(&n, Event::Downloaded, &at("14:01:00"));
        assert_eq!((n2, a, s), (n, Action::None, None));
        // Installing or in probation: its own health decides.
        for state in [State::Installing, State::Probation] {
            let busy = Updater {
                state,
                release: Some(rel("1.6.0", 20)),
                ..Updater::default()
            };
            let (n, a, s) = step(&busy, withdrawn("1.6.0", "r-1"), &at("02:10:00"));
            assert_eq!((n, a, s), (busy, Action::None, None));
        }
        // Committed, idle: nothing to withdraw.
        let done = Updater {
            state: State::Committed,
            release: Some(rel("1.6.0", 20)),
            last_committed_serial: Some(20),
            ..Updater::default()
        };
        let (n, _, s) = step(&done, withdrawn("1.6.0", "r-1"), &at("03:00:00"));
        assert_eq!((n, s), (done, None));
        let (n, _, s) = step(
            &Updater::default(),
            withdrawn("1.6.0", "r-1"),
            &at("03:00:00"),
        );
        assert_eq!((n, s), (Updater::default(), None));
    }

    #[test]
    fn a_failed_install_is_final_and_not_retried() {
        let u = Updater {
            state: State::Installing,
            release: Some(rel("1.6.0", 20)),
            ..Updater::default()
        };
        let (u, a, s) = step(&u, Event::InstallFailed("dpkg: x".into()), &at("02:10:00"));
        assert_eq!((u.state, a), (State::Failed, Action::None));
        assert_eq!(s.unwrap().state, ReleaseState::Failed);
        // A stray rolled_back result does not move a failed install that asked for no rollback.
        let (u2, _, s) = step(&u, Event::RolledBack("x".into()), &at("02:11:00"));
        assert_eq!((u2.state, s), (State::Failed, None));
        let (u3, _, _) = step(&u, Event::Assigned(rel("1.6.0", 20)), &at("02:12:00"));
        assert_eq!(u3.state, State::Refused);
    }

    #[test]
    fn states_map_to_the_wire_both_ways() {
        for s in [
            State::Downloading,
            State::Staged,
            State::WaitingWindow,
            State::Installing,
            State::Probation,
            State::Committed,
            State::RolledBack,
            State::Refused,
            State::Failed,
        ] {
            let w = s.wire().unwrap();
            assert_eq!(State::from(w), s);
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::to_value(w).unwrap()
            );
        }
        assert_eq!(State::Idle.wire(), None);
    }

    #[test]
    fn the_next_install_time_is_the_window_opening_outside_trading_hours() {
        let expect = |local: &str| {
            format!("2026-12-02T{local}")
                .parse::<jiff::civil::DateTime>()
                .unwrap()
                .to_zoned(TimeZone::get("Europe/Rome").unwrap())
                .unwrap()
                .timestamp()
        };
        let c = at("14:00:00");
        assert_eq!(next_install_at(&c), Some(expect("02:00:00")));
        let inside = at("03:00:30");
        assert_eq!(next_install_at(&inside), Some(inside.now));
        let mut never = at("14:00:00");
        never.trading_hours = "00:00-23:59".parse().unwrap();
        never.window = "01:00-05:00".parse().unwrap();
        assert_eq!(next_install_at(&never), None);
    }

    #[test]
    fn ranges_wrap_midnight() {
        let r: DailyRange = "22:00-03:00".parse().unwrap();
        assert!(r.contains(Time::constant(23, 0, 0, 0)));
        assert!(r.contains(Time::constant(2, 59, 0, 0)));
        assert!(!r.contains(Time::constant(3, 0, 0, 0)));
        assert!("2-3".parse::<DailyRange>().is_err());
    }
}
