//! The store's update state machine (DESIGN §7), pure. It exists so that the rules that keep a
//! store safe — install only inside the window, outside trading hours and with no sale in
//! flight; count an update only once probation passed; never retry a version that rolled back
//! until HQ sends a newer serial — live in one place that tests can drive with a controlled
//! clock, apart from the I/O (download, the root helper, probation checks) that will feed it.
//!
//! [`step`] takes the state, one [`Event`] and the [`Conditions`] at that moment, and returns the
//! next state, the [`Action`] to carry out and the `release.status` payload to send when the
//! state (or its reason) changed.

pub mod helper;

use jiff::civil::Time;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// A release HQ assigned: its version and manifest serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub version: String,
    pub serial: u64,
}

/// States as reported in `release.status` (DESIGN §7); `Idle` is never reported.
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

/// The `release.status` store event payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub version: String,
    pub state: State,
    pub reason: String,
}

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
    /// The package and manifest are downloaded and verified.
    Downloaded,
    /// Download or verification failed; the check is in the reason.
    Rejected(String),
    /// Time passed (or a sale ended): re-check the window.
    Tick,
    /// The root helper installed the package and storebox restarted on it.
    Installed,
    ProbationPassed,
    /// Install or probation failed; the previous package and data were restored.
    ProbationFailed(String),
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Updater {
    pub state: State,
    pub release: Option<Release>,
    pub reason: String,
    pub last_committed_serial: Option<u64>,
    /// The last release that rolled back: not retried until a newer serial.
    pub rolled_back: Option<Release>,
}

impl Default for Updater {
    fn default() -> Self {
        Updater {
            state: State::Idle,
            release: None,
            reason: String::new(),
            last_committed_serial: None,
            rolled_back: None,
        }
    }
}

/// The next state, what to do, and the status to report when the state or reason changed.
pub fn step(u: &Updater, event: Event, c: &Conditions) -> (Updater, Action, Option<Status>) {
    let mut next = u.clone();
    let mut action = Action::None;
    let busy = matches!(u.state, State::Installing | State::Probation);
    match (u.state, event) {
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
            } else {
                None
            };
            match refuse {
                Some(reason) => {
                    next.state = State::Refused;
                    next.reason = reason;
                }
                None => {
                    next.state = State::Downloading;
                    next.reason = String::new();
                    action = Action::Download;
                }
            }
            next.release = Some(r);
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
            next.state = State::RolledBack;
            next.reason = reason;
            next.rolled_back = u.release.clone();
            action = Action::RollBack;
        }
        (State::Probation, Event::ProbationPassed) => {
            next.state = State::Committed;
            next.last_committed_serial = u.release.as_ref().map(|r| r.serial);
            action = Action::Commit;
        }
        _ => {}
    }
    let changed = next.state != u.state || next.reason != u.reason || next.release != u.release;
    let status = (changed && next.state != State::Idle).then(|| Status {
        version: next
            .release
            .as_ref()
            .map(|r| r.version.clone())
            .unwrap_or_default(),
        state: next.state,
        reason: next.reason.clone(),
    });
    (next, action, status)
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
        }
    }

    fn rel(v: &str, serial: u64) -> Release {
        Release {
            version: v.into(),
            serial,
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
        let states: Vec<State> = s.iter().map(|s| s.state).collect();
        assert_eq!(
            states,
            [State::Downloading, State::Staged, State::WaitingWindow]
        );
        assert!(s[2].reason.contains("install window 02:00-05:00"), "{s:?}");
        assert_eq!(s[0].version, "1.5.0");
        // Still waiting at 01:59 local; no repeated status for the same reason.
        let (u, a, s2) = run(u, vec![(Event::Tick, at("01:59:00"))]);
        assert!(a == Action::None && s2.is_empty());
        let (u, a, s3) = run(u, vec![(Event::Tick, at("02:00:00"))]);
        assert_eq!((u.state, a), (State::Installing, Action::Install));
        assert_eq!(s3[0].state, State::Installing);
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
        assert_eq!((u.state, a), (State::RolledBack, Action::RollBack));
        assert_eq!(s.last().unwrap().reason, "not ready in time");
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
    fn ranges_wrap_midnight() {
        let r: DailyRange = "22:00-03:00".parse().unwrap();
        assert!(r.contains(Time::constant(23, 0, 0, 0)));
        assert!(r.contains(Time::constant(2, 59, 0, 0)));
        assert!(!r.contains(Time::constant(3, 0, 0, 0)));
        assert!("2-3".parse::<DailyRange>().is_err());
    }
}
