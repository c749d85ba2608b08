//! The updates service: the supervised task of `storebox serve` that carries out what the pure
//! state machine ([`super::step`]) decides. Once a second it
//!
//! 1. reads the root helper's `result.json` (install done, failed, or rolled back),
//! 2. watches probation (no restart, no failed task, HQ reached, for `probation_seconds`),
//! 3. takes new `release.assign` and `release.withdraw` rows the sync feed stored in
//!    `sync_releases`, in feed order (a withdrawal refuses a release not yet installing and
//!    removes its staged files),
//! 4. downloads the assigned package from HQ (resumable: `<version>.deb.part` continued with
//!    `Range`), verifies it against the manifest and `[updates] public_key`, and stages it,
//! 5. ticks the window: inside it, outside trading hours and with no sale in flight it writes the
//!    install request for the root helper.
//!
//! Every state change is saved (`updates_state`, `updates_history`) with its `release.status`
//! outbox event in one transaction.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::protocol::{self, OutcomeKind, Request};
use super::sale::SaleGuard;
use super::{Action, Conditions, DailyRange, Event, Release, State, Status, Updater};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::db::{Db, DbResult};
use crate::ops::health::Health;
use crate::outbox::{self, Class};
use crate::proto::release::{
    parse_public_key, Manifest, PackageFacts, ReleaseAssign, ReleaseWithdraw,
};
use crate::proto::StoreEventType;
use crate::sync::state::SyncState;

/// How long the updater waits for the root helper to answer an install request before it
/// reports the install `failed` (and removes a request the helper never took).
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// State changes kept in `updates_history`.
pub const HISTORY_KEEP: i64 = 1000;
/// How often the service looks at files, assignments and the window.
pub const TICK: Duration = Duration::from_secs(1);

/// The version this process runs. Debug builds (those `cargo test` runs) read a test-only
/// override from `STOREBOX_TEST_RUNNING_VERSION`, with which the integration test's stand-in
/// installer "installs" a version by restarting the same binary; release and package builds do
/// not contain it (they report the build version, see build.rs).
pub fn running_version() -> String {
    #[cfg(debug_assertions)]
    if let Ok(v) = std::env::var("STOREBOX_TEST_RUNNING_VERSION") {
        if !v.is_empty() {
            return v;
        }
    }
    crate::VERSION.to_string()
}

pub use super::runs_version;

/// Probation of a version that was just installed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probation {
    pub started_ms: i64,
    /// Process starts seen while in probation; a second one means a crash or restart.
    pub starts: u32,
    /// One sync round-trip with HQ succeeded since probation started.
    pub hq_reached: bool,
}

/// What the updater keeps in the store database (`updates_state.data`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persisted {
    pub updater: Updater,
    /// The assignment being worked on (its manifest and package path).
    pub assign: Option<ReleaseAssign>,
    pub probation: Option<Probation>,
    /// When the install request was written.
    pub installing_since_ms: Option<i64>,
    /// When the rollback request was written (probation failed here).
    #[serde(default)]
    pub rollback_since_ms: Option<i64>,
}

pub fn load(c: &Connection) -> DbResult<Persisted> {
    let data: Option<String> = c
        .query_row("SELECT data FROM updates_state WHERE id = 1", [], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(match data {
        Some(d) => serde_json::from_str(&d).unwrap_or_else(|e| {
            tracing::error!(error = %e, "updates: saved state unreadable; starting idle");
            Persisted::default()
        }),
        None => Persisted::default(),
    })
}

/// Saves `p`, and with a status: its history row and its `release.status` outbox event.
pub fn save(c: &Connection, p: &Persisted, status: Option<&Status>, now_ms: i64) -> DbResult<()> {
    let data = serde_json::to_string(p).unwrap_or_default();
    c.execute(
        "INSERT INTO updates_state (id, data, updated_ms) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET data = excluded.data, updated_ms = excluded.updated_ms",
        params![data, now_ms],
    )?;
    if let Some(s) = status {
        let state = serde_json::to_value(s.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        c.execute(
            "INSERT INTO updates_history (at_ms, version, serial, rollout, state, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                now_ms,
                s.version,
                s.serial.map(|x| x as i64),
                s.rollout,
                state,
                s.reason
            ],
        )?;
        c.execute(
            "DELETE FROM updates_history WHERE id <= (SELECT max(id) FROM updates_history) - ?1",
            [HISTORY_KEEP],
        )?;
        outbox::enqueue(
            c,
            &outbox::new_id("release-status"),
            StoreEventType::ReleaseStatus,
            Class::Business,
            &serde_json::to_string(s).unwrap_or_default(),
            now_ms,
        )?;
        tracing::info!(version = %s.version, state = %state, reason = %s.reason, "update state changed");
    }
    Ok(())
}

/// One state change in the history.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub at: String,
    pub version: String,
    pub serial: Option<i64>,
    pub rollout: Option<String>,
    pub state: String,
    pub reason: String,
}

/// The last `limit` state changes, newest first.
pub fn history(c: &Connection, limit: i64) -> DbResult<Vec<HistoryEntry>> {
    let mut stmt = c.prepare(
        "SELECT at_ms, version, serial, rollout, state, reason FROM updates_history
         ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |r| {
        Ok(HistoryEntry {
            at: crate::db::ts_from_ms(r.get(0)?).to_string(),
            version: r.get(1)?,
            serial: r.get(2)?,
            rollout: r.get(3)?,
            state: r.get(4)?,
            reason: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Why updates are off, or `None` when they are on (a valid key and not disabled).
pub fn off_reason(config: &Config) -> Option<String> {
    if !config.updates.enabled {
        Some("updates are off on this store ([updates] enabled = false)".into())
    } else if config.updates.public_key.trim().is_empty() {
        Some("updates are off on this store: no [updates] public_key is configured".into())
    } else {
        parse_public_key(&config.updates.public_key)
            .err()
            .map(|e| format!("updates are off on this store: [updates] public_key: {e}"))
    }
}

/// The store's window, trading hours and zone at `now` (sale in flight as given).
pub fn conditions(config: &Config, now: Timestamp, sale_in_flight: bool) -> Conditions {
    // Validated at load; the fallbacks keep a hand-built config from panicking.
    let range = |s: &str, fallback: &str| {
        s.parse::<DailyRange>()
            .or_else(|_| fallback.parse())
            .unwrap_or(DailyRange {
                start: jiff::civil::Time::midnight(),
                end: jiff::civil::Time::midnight(),
            })
    };
    Conditions {
        now,
        time_zone: config.timezone(),
        window: range(&config.updates.window, "02:00-05:00"),
        trading_hours: range(&config.updates.trading_hours, "07:00-22:00"),
        sale_in_flight,
        running_version: running_version(),
    }
}

/// A file name part made of the version (characters outside `[A-Za-z0-9.+~_-]` become `_`).
pub fn file_stem(version: &str) -> String {
    version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".+~_-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[derive(Clone)]
pub struct Ctx {
    pub db: Db,
    pub config: Arc<Config>,
    pub clock: SharedClock,
    pub sync: Arc<SyncState>,
    pub sales: SaleGuard,
    pub health: Arc<Health>,
}

#[derive(Debug, thiserror::Error)]
enum DownloadError {
    /// Worth retrying (network, HQ unavailable, local I/O).
    #[error("{0}")]
    Transient(String),
    /// The package can never match its manifest; names the check.
    #[error("{0}")]
    Refused(String),
}

struct Service {
    ctx: Ctx,
    dir: PathBuf,
    http: Option<reqwest::Client>,
    base: String,
    st: Persisted,
    /// Download attempts that failed in a row (for the back-off) and when to try again.
    failures: u32,
    retry_at: Option<tokio::time::Instant>,
    /// The package being downloaded was continued from a `.part` (by this process or an earlier
    /// one): a sha256 mismatch is then tried once more from byte 0 before it is refused, since a
    /// crash or power loss can leave a `.part` whose tail is not what HQ sent.
    resumed: bool,
}

/// Runs the updates service until the process stops.
pub async fn run(ctx: Ctx) {
    let mut svc = Service::new(ctx).await;
    if let Some(why) = off_reason(&svc.ctx.config) {
        tracing::info!("{why}");
    }
    svc.started().await;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        svc.tick().await;
    }
}

impl Service {
    async fn new(ctx: Ctx) -> Service {
        let dir = ctx.config.storage.data_dir.join("updates");
        let http = if ctx.config.hq.url.is_empty() {
            None
        } else {
            match crate::sync::client::http_client(&ctx.config) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "updates: cannot build the HTTP client; downloads off");
                    None
                }
            }
        };
        let base = ctx.config.hq.url.trim_end_matches('/').to_string();
        let st = match ctx.db.read(load).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "updates: cannot read the saved state; starting idle");
                Persisted::default()
            }
        };
        Service {
            ctx,
            dir,
            http,
            base,
            st,
            failures: 0,
            retry_at: None,
            resumed: false,
        }
    }

    fn now(&self) -> Timestamp {
        self.ctx.clock.now()
    }

    /// Saves the new state (and its status) and keeps it; a failed save keeps the old state in
    /// memory, so the change is tried again.
    async fn commit(&mut self, next: Persisted, status: Option<Status>) -> bool {
        let now_ms = self.now().as_millisecond();
        let saved = next.clone();
        let r = self
            .ctx
            .db
            .write(move |c| {
                let tx = crate::db::immediate(c)?;
                save(&tx, &saved, status.as_ref(), now_ms)?;
                tx.commit()?;
                Ok(())
            })
            .await;
        match r {
            Ok(()) => {
                self.st = next;
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "updates: cannot save the update state");
                false
            }
        }
    }

    /// Steps the machine with `event`; returns the action to carry out once saved.
    async fn step(&mut self, event: Event, edit: impl FnOnce(&mut Persisted)) -> Option<Action> {
        let sale = false;
        let c = conditions(&self.ctx.config, self.now(), sale);
        let (u, action, status) = super::step(&self.st.updater, event, &c);
        let mut next = self.st.clone();
        next.updater = u;
        edit(&mut next);
        self.commit(next, status).await.then_some(action)
    }

    /// At process start: a start while in probation is a restart during probation — unless the
    /// root helper already answered with `failed` or `rolled_back` (it rolled back a version that
    /// did not come up by itself), which [`Service::read_result`] takes next.
    async fn started(&mut self) {
        if self.st.updater.state != State::Probation || self.st.updater.rolling_back {
            return;
        }
        if let Ok(Some(o)) = protocol::read_outcome(&self.dir) {
            if o.outcome != OutcomeKind::Installed {
                return;
            }
        }
        let mut next = self.st.clone();
        let starts = next.probation.as_ref().map_or(0, |p| p.starts) + 1;
        if let Some(p) = next.probation.as_mut() {
            p.starts = starts;
        }
        if !self.commit(next, None).await {
            return;
        }
        if starts > 1 {
            self.fail_probation(format!(
                "storebox restarted during probation (start {starts})"
            ))
            .await;
        }
    }

    async fn tick(&mut self) {
        self.read_result().await;
        self.check_install_timeout().await;
        self.check_rollback_timeout().await;
        self.watch_probation().await;
        self.take_assignments().await;
        if self.st.updater.state == State::Downloading {
            self.download_and_verify().await;
        }
        if matches!(self.st.updater.state, State::Staged | State::WaitingWindow) {
            self.tick_window().await;
        }
    }

    async fn read_result(&mut self) {
        let outcome = match protocol::read_outcome(&self.dir) {
            Ok(Some(o)) => o,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "updates: the root helper's result is unreadable");
                return;
            }
        };
        let u = &self.st.updater;
        let current = u.release.as_ref().map(|r| r.version.as_str());
        if current != Some(outcome.version.as_str()) {
            tracing::warn!(version = %outcome.version, "updates: result.json is about another version than the assigned one; removed");
            self.remove_result();
            return;
        }
        let detail = |what: &str| {
            let mut s = what.to_string();
            if !outcome.reason.is_empty() {
                s.push_str(": ");
                s.push_str(&outcome.reason);
            }
            s
        };
        match (u.state, outcome.outcome) {
            (State::Installing, OutcomeKind::Installed) => {
                let running = running_version();
                if runs_version(&running, &outcome.version) {
                    let now_ms = self.now().as_millisecond();
                    self.step(Event::Installed, |p| {
                        p.installing_since_ms = None;
                        p.probation = Some(Probation {
                            started_ms: now_ms,
                            starts: 1,
                            hq_reached: false,
                        });
                    })
                    .await;
                } else {
                    self.fail_probation(format!(
                        "the root helper reported {} installed, but this process runs {running}",
                        outcome.version
                    ))
                    .await;
                }
            }
            (State::Installing, OutcomeKind::Failed) => {
                let reason = detail("the root helper could not install it");
                if self
                    .step(Event::InstallFailed(reason), |p| {
                        p.installing_since_ms = None
                    })
                    .await
                    .is_some()
                {
                    self.remove_result();
                }
            }
            (State::Installing | State::Probation | State::Failed, OutcomeKind::RolledBack) => {
                let reason = detail(&format!(
                    "the root helper restored {}",
                    if outcome.previous_version.is_empty() {
                        "the previous version"
                    } else {
                        &outcome.previous_version
                    }
                ));
                if self
                    .step(Event::RolledBack(reason), |p| {
                        p.installing_since_ms = None;
                        p.rollback_since_ms = None;
                        p.probation = None;
                    })
                    .await
                    .is_some()
                {
                    self.remove_result();
                }
            }
            // `installed` stays until probation ends (it is the proof of what was installed).
            (State::Probation, OutcomeKind::Installed) => {}
            (state, kind) => {
                tracing::warn!(
                    ?state,
                    ?kind,
                    "updates: result.json does not fit the current state; removed"
                );
                self.remove_result();
            }
        }
    }

    fn remove_result(&self) {
        if let Err(e) = protocol::remove(&self.dir, protocol::RESULT_FILE) {
            tracing::error!(error = %e, "updates: cannot remove result.json");
        }
    }

    async fn check_install_timeout(&mut self) {
        if self.st.updater.state != State::Installing {
            return;
        }
        let Some(since) = self.st.installing_since_ms else {
            return;
        };
        if self.now().as_millisecond() - since < INSTALL_TIMEOUT.as_millis() as i64 {
            return;
        }
        let _ = protocol::remove(&self.dir, protocol::REQUEST_FILE);
        let reason = format!(
            "the root helper did not answer the install request within {} minutes (is storebox-updater.path enabled?)",
            INSTALL_TIMEOUT.as_secs() / 60
        );
        self.step(Event::InstallFailed(reason), |p| {
            p.installing_since_ms = None
        })
        .await;
    }

    /// A rollback request the root helper has not answered within [`INSTALL_TIMEOUT`]: withdrawn,
    /// and the failure reported with what it means (the failed version still runs).
    async fn check_rollback_timeout(&mut self) {
        if !self.st.updater.rolling_back {
            return;
        }
        let now = self.now().as_millisecond();
        let Some(since) = self.st.rollback_since_ms else {
            // A state saved before this field existed: the wait starts now.
            let mut next = self.st.clone();
            next.rollback_since_ms = Some(now);
            self.commit(next, None).await;
            return;
        };
        if now - since < INSTALL_TIMEOUT.as_millis() as i64 {
            return;
        }
        let _ = protocol::remove(&self.dir, protocol::REQUEST_FILE);
        let reason = format!(
            "{}; the root helper did not answer the rollback request within {} minutes, so this version still runs (is storebox-updater.path enabled? see docs/releases.md)",
            self.st.updater.reason.trim_end_matches("; rollback requested"),
            INSTALL_TIMEOUT.as_secs() / 60
        );
        tracing::error!(reason, "updates: rollback not done");
        self.step(Event::RollbackUnanswered(reason), |p| {
            p.rollback_since_ms = None
        })
        .await;
    }

    async fn watch_probation(&mut self) {
        if self.st.updater.state != State::Probation || self.st.updater.rolling_back {
            return;
        }
        let Some(mut p) = self.st.probation.clone() else {
            self.fail_probation("probation lost its start time".into())
                .await;
            return;
        };
        if let Some(task) = self.ctx.health.failed_task() {
            self.fail_probation(format!("task {} failed: {}", task.task, task.cause))
                .await;
            return;
        }
        let now = self.now();
        if !p.hq_reached {
            let last = self.ctx.sync.snapshot().last_success;
            if last
                .and_then(|s| s.parse::<Timestamp>().ok())
                .is_some_and(|t| t.as_millisecond() >= p.started_ms)
            {
                p.hq_reached = true;
                let mut next = self.st.clone();
                next.probation = Some(p.clone());
                self.commit(next, None).await;
            }
        }
        let elapsed_ms = now.as_millisecond() - p.started_ms;
        if elapsed_ms < self.ctx.config.updates.probation_seconds as i64 * 1000 {
            return;
        }
        if !p.hq_reached {
            self.fail_probation(format!(
                "HQ was not reached within probation ({} s)",
                self.ctx.config.updates.probation_seconds
            ))
            .await;
            return;
        }
        if self
            .step(Event::ProbationPassed, |p| p.probation = None)
            .await
            .is_some()
        {
            self.remove_result();
            self.clean_files(None);
        }
    }

    /// Probation failed here: report it and ask the root helper to roll back.
    async fn fail_probation(&mut self, reason: String) {
        let version = self
            .st
            .updater
            .release
            .as_ref()
            .map(|r| r.version.clone())
            .unwrap_or_default();
        let full = reason.clone();
        let now_ms = self.now().as_millisecond();
        if self
            .step(Event::ProbationFailed(reason), |p| {
                p.probation = None;
                p.rollback_since_ms = Some(now_ms);
            })
            .await
            != Some(Action::RollBack)
        {
            return;
        }
        self.remove_result();
        let req = Request::Rollback {
            version,
            reason: full,
            requested_at: self.now(),
        };
        if let Err(e) = protocol::write_request(&self.dir, &req) {
            tracing::error!(error = %e, "updates: cannot write the rollback request");
        }
    }

    async fn take_assignments(&mut self) {
        let u = &self.st.updater;
        if matches!(u.state, State::Installing | State::Probation) || u.rolling_back {
            return;
        }
        let rows = self
            .ctx
            .db
            .read(|c| {
                let mut stmt = c.prepare(
                    "SELECT event_id, type, payload FROM sync_releases WHERE handled_ms IS NULL
                     ORDER BY received_ms, seq, event_id LIMIT 20",
                )?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await;
        let rows = match rows {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "updates: cannot read assignments");
                return;
            }
        };
        let mut withdrew = false;
        for (event_id, kind, payload) in rows {
            let now = self.now();
            let mut next = self.st.clone();
            let status = if kind == "withdraw" {
                let w = serde_json::from_str::<ReleaseWithdraw>(&payload)
                    .map_err(|e| e.to_string())
                    .and_then(|w| w.check().map(|()| w));
                match w {
                    Err(e) => {
                        tracing::warn!(event_id, error = %e, "updates: release.withdraw ignored");
                        None
                    }
                    Ok(w) => {
                        let c = conditions(&self.ctx.config, now, false);
                        let event = Event::Withdrawn {
                            version: w.version.clone(),
                            rollout: w.rollout.clone(),
                            reason: w.reason.clone(),
                        };
                        let (u, _, s) = super::step(&next.updater, event, &c);
                        if u.state == State::Refused && next.updater.state != State::Refused {
                            next.assign = None;
                            withdrew = true;
                        } else {
                            tracing::info!(
                                event_id,
                                version = %w.version,
                                rollout = %w.rollout,
                                state = ?next.updater.state,
                                "updates: release.withdraw is not about a release waiting to install; ignored"
                            );
                        }
                        next.updater = u;
                        s
                    }
                }
            } else {
                self.assignment(&event_id, &payload, now, &mut next)
            };
            let now_ms = now.as_millisecond();
            let saved = next.clone();
            let r = self
                .ctx
                .db
                .write(move |c| {
                    let tx = crate::db::immediate(c)?;
                    tx.execute(
                        "UPDATE sync_releases SET handled_ms = ?1 WHERE event_id = ?2",
                        params![now_ms, event_id],
                    )?;
                    save(&tx, &saved, status.as_ref(), now_ms)?;
                    tx.commit()?;
                    Ok(())
                })
                .await;
            match r {
                Ok(()) => {
                    self.st = next;
                    self.failures = 0;
                    self.retry_at = None;
                    self.resumed = false;
                }
                Err(e) => {
                    tracing::error!(error = %e, "updates: cannot save an assignment");
                    return;
                }
            }
        }
        if self.st.updater.state == State::Downloading {
            let keep = self.st.assign.as_ref().map(|a| file_stem(&a.version));
            self.clean_files(keep.as_deref());
        } else if withdrew && self.st.assign.is_none() {
            // The withdrawn release's package, partial download and manifest.
            self.clean_files(None);
        }
    }

    /// Steps the machine with one stored `release.assign` into `next`; the status to report.
    fn assignment(
        &self,
        event_id: &str,
        payload: &str,
        now: Timestamp,
        next: &mut Persisted,
    ) -> Option<Status> {
        let assign = serde_json::from_str::<ReleaseAssign>(payload)
            .map_err(|e| e.to_string())
            .and_then(|a| a.check().map(|()| a));
        match assign {
            Err(e) => {
                tracing::warn!(event_id, error = %e, "updates: release.assign ignored");
                None
            }
            Ok(a) => {
                let release = Release {
                    version: a.version.clone(),
                    serial: a.manifest.serial,
                    rollout: a.rollout.clone(),
                };
                if let Some(why) = off_reason(&self.ctx.config) {
                    let (u, s) = super::refuse(&next.updater, release, why);
                    next.updater = u;
                    next.assign = None;
                    s
                } else {
                    let c = conditions(&self.ctx.config, now, false);
                    let (u, action, s) = super::step(&next.updater, Event::Assigned(release), &c);
                    if action == Action::Download {
                        next.assign = Some(a);
                    } else if u.state == State::Refused {
                        next.assign = None;
                    }
                    next.updater = u;
                    s
                }
            }
        }
    }

    /// Removes packages, partial downloads and manifests in the updates directory except those
    /// of `keep` (disk holds at most one package).
    fn clean_files(&self, keep: Option<&str>) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name
                .strip_suffix(".deb.part")
                .or_else(|| name.strip_suffix(".deb"))
                .or_else(|| name.strip_suffix(".manifest.json"));
            if let Some(stem) = stem {
                if Some(stem) != keep {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    async fn download_and_verify(&mut self) {
        if self
            .retry_at
            .is_some_and(|t| tokio::time::Instant::now() < t)
        {
            return;
        }
        let Some(a) = self.st.assign.clone() else {
            self.step(
                Event::Rejected("the assignment was lost; waiting for a new one".into()),
                |_| {},
            )
            .await;
            return;
        };
        let stem = file_stem(&a.version);
        let part = self.dir.join(format!("{stem}.deb.part"));
        let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let before = len(&part);
        // The manifest first (signature, key, expiry, serial): nothing is downloaded for a
        // manifest the store's key did not sign, whatever size it claims.
        let r = match self.verify_manifest(&a) {
            Ok(()) => match self.download(&a, &part).await {
                Ok(()) => self.verify(&a, &part).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if matches!(r, Err(DownloadError::Transient(_))) && len(&part) > before {
            // It got further: resume at once rather than after a growing back-off (each request
            // is bounded by the sync client's timeout, a large package takes several).
            self.failures = 0;
        }
        match r {
            Ok(()) => {
                let deb = self.dir.join(format!("{stem}.deb"));
                let manifest = self.dir.join(format!("{stem}.manifest.json"));
                let staged = std::fs::rename(&part, &deb)
                    .map_err(|e| e.to_string())
                    .and_then(|()| {
                        let json = serde_json::to_vec_pretty(&a.manifest).unwrap_or_default();
                        protocol::write_atomic(&manifest, &json).map_err(|e| e.to_string())
                    });
                match staged {
                    Ok(()) => {
                        self.failures = 0;
                        self.step(Event::Downloaded, |_| {}).await;
                    }
                    Err(e) => self.retry_later(&format!("staging: {e}")),
                }
            }
            Err(DownloadError::Transient(e)) => self.retry_later(&e),
            Err(DownloadError::Refused(reason)) => {
                let _ = std::fs::remove_file(&part);
                if self.resumed && reason.contains("check `sha256` failed") {
                    self.resumed = false;
                    self.failures = 0;
                    self.retry_later(&format!(
                        "{reason} after a resumed download; downloading it again from byte 0"
                    ));
                    return;
                }
                self.step(Event::Rejected(reason), |p| p.assign = None)
                    .await;
            }
        }
    }

    fn retry_later(&mut self, error: &str) {
        let secs = if self.failures == 0 {
            1
        } else {
            (1u64 << self.failures.min(6)).min(60)
        };
        self.failures = self.failures.saturating_add(1);
        tracing::warn!(
            error,
            retry_in_secs = secs,
            "updates: download failed; will resume"
        );
        self.retry_at = Some(tokio::time::Instant::now() + Duration::from_secs(secs));
    }

    /// Continues `part` up to the manifest's size, from HQ only.
    async fn download(&mut self, a: &ReleaseAssign, part: &Path) -> Result<(), DownloadError> {
        let t = |e: String| DownloadError::Transient(e);
        let size = a.manifest.size;
        let Some(http) = &self.http else {
            return Err(t("no HQ is configured ([hq] url)".into()));
        };
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| t(format!("{}: {e}", self.dir.display())))?;
        let mut have = match tokio::fs::metadata(part).await {
            Ok(m) => m.len(),
            Err(_) => 0,
        };
        if have > size {
            have = 0;
        }
        if have > 0 {
            self.resumed = true;
        }
        if have == size {
            return Ok(());
        }
        // `check()` holds the path under /sync/v1/releases/: the request goes to HQ's URL only
        // (and redirects only to allow-listed hosts, see sync::client::http_client).
        let mut req = http
            .get(format!("{}{}", self.base, a.package))
            .bearer_auth(self.ctx.config.hq.token.expose())
            .header("x-storebox-protocol", crate::proto::VERSION)
            .header("x-storebox-store", &self.ctx.config.store.id)
            // Byte ranges count the package's own bytes: no content coding.
            .header(reqwest::header::ACCEPT_ENCODING, "identity");
        if have > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| t(format!("package request to HQ: {e}")))?;
        let status = resp.status();
        let append = match status.as_u16() {
            206 if have > 0 => {
                let range = resp
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !range.starts_with(&format!("bytes {have}-")) {
                    return Err(t(format!(
                        "HQ answered Content-Range {range:?} to a request from byte {have}"
                    )));
                }
                true
            }
            200 => false,
            _ => {
                return Err(t(format!(
                    "HQ answered {status} for the package {}",
                    a.package
                )))
            }
        };
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(part)
            .await
            .map_err(|e| t(format!("{}: {e}", part.display())))?;
        let mut written = if append { have } else { 0 };
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    let _ = file.flush().await;
                    return Err(t(format!(
                        "package download from HQ broke off at byte {written}: {e}"
                    )));
                }
            };
            if written + chunk.len() as u64 > size {
                return Err(DownloadError::Refused(format!(
                    "check `size` failed: HQ sent more than the manifest's {size} bytes"
                )));
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| t(format!("{}: {e}", part.display())))?;
            written += chunk.len() as u64;
        }
        file.sync_all()
            .await
            .map_err(|e| t(format!("{}: {e}", part.display())))?;
        if written < size {
            return Err(t(format!(
                "HQ ended the package at byte {written} of {size}"
            )));
        }
        Ok(())
    }

    /// Every manifest check that needs no package bytes (facts taken from the manifest itself).
    fn verify_manifest(&self, a: &ReleaseAssign) -> Result<(), DownloadError> {
        let key = parse_public_key(&self.ctx.config.updates.public_key)
            .map_err(|e| DownloadError::Refused(format!("[updates] public_key: {e}")))?;
        let facts = PackageFacts {
            size: a.manifest.size,
            sha256: a.manifest.sha256.clone(),
        };
        a.manifest
            .verify(
                &key,
                &facts,
                self.now(),
                self.st.updater.last_committed_serial,
            )
            .map_err(|r| DownloadError::Refused(r.to_string()))
    }

    async fn verify(&self, a: &ReleaseAssign, part: &Path) -> Result<(), DownloadError> {
        let key = match parse_public_key(&self.ctx.config.updates.public_key) {
            Ok(k) => k,
            Err(e) => return Err(DownloadError::Refused(format!("[updates] public_key: {e}"))),
        };
        let path = part.to_path_buf();
        let facts = crate::db::run_blocking(move || hash_file(&path))
            .await
            .map_err(|e| DownloadError::Transient(format!("{}: {e}", part.display())))?;
        let manifest: &Manifest = &a.manifest;
        manifest
            .verify(
                &key,
                &facts,
                self.now(),
                self.st.updater.last_committed_serial,
            )
            .map_err(|r| DownloadError::Refused(r.to_string()))
    }

    async fn tick_window(&mut self) {
        let now = self.now();
        // The sale guard is tried only when the window and trading hours allow an install; held,
        // its exclusive side keeps checkouts from starting until the request is written.
        let allowed = conditions(&self.ctx.config, now, false)
            .install_blocked()
            .is_none();
        let guard = if allowed {
            self.ctx.sales.try_exclusive()
        } else {
            None
        };
        let c = conditions(&self.ctx.config, now, allowed && guard.is_none());
        let (u, action, status) = super::step(&self.st.updater, Event::Tick, &c);
        let mut next = self.st.clone();
        next.updater = u;
        if action == Action::Install {
            next.installing_since_ms = Some(c.now.as_millisecond());
        }
        if next == self.st {
            return;
        }
        if !self.commit(next, status).await || action != Action::Install {
            return;
        }
        let (Some(a), Some(r)) = (self.st.assign.clone(), self.st.updater.release.clone()) else {
            return;
        };
        let stem = file_stem(&a.version);
        let req = Request::Install {
            version: r.version,
            serial: r.serial,
            rollout: r.rollout,
            package: absolute(&self.dir.join(format!("{stem}.deb"))),
            manifest: absolute(&self.dir.join(format!("{stem}.manifest.json"))),
            probation_seconds: self.ctx.config.updates.probation_seconds,
            requested_at: c.now,
        };
        let written = protocol::write_request(&self.dir, &req);
        drop(guard);
        if let Err(e) = written {
            self.step(
                Event::InstallFailed(format!("cannot write the install request: {e}")),
                |p| p.installing_since_ms = None,
            )
            .await;
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn hash_file(path: &Path) -> std::io::Result<PackageFacts> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok(PackageFacts {
        size,
        sha256: hex::encode(h.finalize()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock as _, ManualClock};
    use crate::updates::protocol::{read_request, RESULT_FILE};

    struct Fixture {
        _tmp: tempfile::TempDir,
        dir: PathBuf,
        db: Db,
        clock: Arc<ManualClock>,
        sync: Arc<SyncState>,
        sales: SaleGuard,
        config: Arc<Config>,
    }

    fn fixture(probation_seconds: u64) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.storage.data_dir = tmp.path().to_path_buf();
        config.updates.public_key = crate::proto::release::public_key_text(
            &ed25519_dalek::SigningKey::from_bytes(&[5; 32]).verifying_key(),
        );
        config.updates.probation_seconds = probation_seconds;
        let db = Db::open(&config.db_path()).unwrap();
        Fixture {
            dir: tmp.path().join("updates"),
            _tmp: tmp,
            db,
            clock: ManualClock::new("2026-12-01T12:00:00Z".parse().unwrap()),
            sync: Arc::new(SyncState::new("")),
            sales: SaleGuard::default(),
            config: Arc::new(config),
        }
    }

    impl Fixture {
        async fn service(&self) -> Service {
            let mut s = Service::new(Ctx {
                db: self.db.clone(),
                config: self.config.clone(),
                clock: self.clock.clone(),
                sync: self.sync.clone(),
                sales: self.sales.clone(),
                health: Arc::new(Health::default()),
            })
            .await;
            s.started().await;
            s
        }

        fn at(&self, t: &str) {
            self.clock.set(t.parse().unwrap());
        }

        /// The `release.status` events queued for HQ: (state, reason, rollout, serial).
        fn reported(&self) -> Vec<Value> {
            self.db
                .read_blocking(|c| {
                    let mut st = c.prepare(
                        "SELECT payload FROM outbox WHERE type = 'release.status' ORDER BY seq",
                    )?;
                    let rows = st
                        .query_map([], |r| r.get::<_, String>(0))?
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(rows
                        .iter()
                        .map(|p| serde_json::from_str(p).unwrap())
                        .collect())
                })
                .unwrap()
        }

        /// Saves a staged release of `version` as the updater's state.
        fn staged(&self, version: &str) {
            let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
            let pkg = b"package bytes".to_vec();
            let now: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
            let m = Manifest::sign(
                &key,
                "storebox",
                version,
                &PackageFacts::of_bytes(&pkg),
                "stable",
                40,
                now,
                now.checked_add(jiff::SignedDuration::from_hours(240))
                    .unwrap(),
            )
            .unwrap();
            std::fs::create_dir_all(&self.dir).unwrap();
            std::fs::write(self.dir.join(format!("{version}.deb")), &pkg).unwrap();
            let p = Persisted {
                updater: Updater {
                    state: State::Staged,
                    release: Some(Release {
                        version: version.into(),
                        serial: 40,
                        rollout: "r-9".into(),
                    }),
                    ..Updater::default()
                },
                assign: Some(ReleaseAssign {
                    version: version.into(),
                    rollout: "r-9".into(),
                    manifest: m,
                    package: format!("/sync/v1/releases/{version}/package"),
                }),
                ..Persisted::default()
            };
            self.db.write_blocking(|c| save(c, &p, None, 0)).unwrap();
        }

        fn write_result(&self, version: &str, outcome: &str) {
            std::fs::write(
                self.dir.join(RESULT_FILE),
                json!({"action": "install", "version": version, "outcome": outcome,
                    "reason": "", "previous_version": "0.0.1", "finished_at": "2026-12-01T02:31:00Z"})
                .to_string(),
            )
            .unwrap();
        }
    }

    use serde_json::{json, Value};

    #[tokio::test]
    async fn the_install_request_waits_for_the_window_and_for_the_sale_in_flight() {
        let f = fixture(300);
        f.staged("2.0.0");
        let mut svc = f.service().await;
        svc.tick().await;
        assert_eq!(svc.st.updater.state, State::WaitingWindow);
        assert!(read_request(&f.dir).unwrap().is_none());
        // Waiting writes nothing while nothing changes.
        let updated = |f: &Fixture| -> i64 {
            f.db.read_blocking(|c| {
                Ok(c.query_row("SELECT updated_ms FROM updates_state", [], |r| r.get(0))?)
            })
            .unwrap()
        };
        let before = updated(&f);
        f.clock.advance(jiff::SignedDuration::from_mins(5));
        svc.tick().await;
        assert_eq!(updated(&f), before);

        f.at("2026-12-02T02:30:00Z");
        let sale = f.sales.recording().await;
        svc.tick().await;
        assert_eq!(svc.st.updater.reason, "a sale is in flight");
        assert!(
            read_request(&f.dir).unwrap().is_none(),
            "no request during a sale"
        );
        drop(sale);
        svc.tick().await;
        assert_eq!(svc.st.updater.state, State::Installing);
        match read_request(&f.dir).unwrap() {
            Some(Request::Install {
                version,
                serial,
                rollout,
                package,
                probation_seconds,
                ..
            }) => {
                assert_eq!(
                    (version.as_str(), serial, rollout.as_str()),
                    ("2.0.0", 40, "r-9")
                );
                assert!(package.is_absolute() && package.ends_with("updates/2.0.0.deb"));
                assert_eq!(probation_seconds, 300);
            }
            other => panic!("{other:?}"),
        }
        let states: Vec<Value> = f.reported().iter().map(|e| e["state"].clone()).collect();
        assert_eq!(
            states,
            [
                json!("waiting_window"),
                json!("waiting_window"),
                json!("installing")
            ]
        );
        assert!(f
            .reported()
            .iter()
            .all(|e| e["rollout"] == "r-9" && e["serial"] == 40));

        // The helper never answers: after the install timeout the install is failed and the
        // request withdrawn.
        f.clock.advance(jiff::SignedDuration::from_mins(61));
        svc.tick().await;
        assert_eq!(svc.st.updater.state, State::Failed);
        assert!(svc.st.updater.reason.contains("did not answer"));
        assert!(read_request(&f.dir).unwrap().is_none());
    }

    #[test]
    fn the_running_binary_matches_its_debian_package_version() {
        assert!(runs_version("0.1.0", "0.1.0"));
        assert!(runs_version("0.1.0", "0.1.0-1"));
        assert!(runs_version("1.5.0", "2:1.5.0-3"));
        assert!(runs_version("1.5.0-rc1", "1.5.0-rc1-1"));
        assert!(!runs_version("0.1.0", "0.1.1-1"));
        assert!(!runs_version("0.1", "0.1.0-1"));
        assert!(!runs_version("1", "1.5.0"));
    }

    #[tokio::test]
    async fn a_helper_rollback_after_a_crash_in_probation_is_taken_without_a_second_request() {
        let f = fixture(60);
        f.staged(&running_version());
        f.at("2026-12-02T02:30:00Z");
        let mut svc = f.service().await;
        svc.tick().await;
        std::fs::remove_file(f.dir.join("request.json")).unwrap();
        f.write_result(&running_version(), "installed");
        svc.tick().await;
        assert_eq!(svc.st.updater.state, State::Probation);
        // The new version crash-looped; the helper rolled back by itself and starts the old one.
        f.write_result(&running_version(), "rolled_back");
        let mut svc = f.service().await;
        svc.tick().await;
        assert_eq!(svc.st.updater.state, State::RolledBack);
        assert!(
            read_request(&f.dir).unwrap().is_none(),
            "no rollback request"
        );
    }

    #[tokio::test]
    async fn a_manifest_of_another_key_is_refused_before_anything_is_downloaded() {
        let f = fixture(60);
        let now: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let other = ed25519_dalek::SigningKey::from_bytes(&[6; 32]);
        let facts = PackageFacts {
            size: 1 << 40,
            sha256: "0".repeat(64),
        };
        let m = Manifest::sign(
            &other,
            "storebox",
            "3.0.0",
            &facts,
            "stable",
            50,
            now,
            now.checked_add(jiff::SignedDuration::from_hours(240))
                .unwrap(),
        )
        .unwrap();
        let a = json!({"version": "3.0.0", "rollout": "r-5", "manifest": m,
            "package": "/sync/v1/releases/3.0.0/package"});
        f.db.write_blocking(|c| {
            c.execute(
                "INSERT INTO sync_releases (event_id, payload, received_ms) VALUES ('e2', ?1, 0)",
                [a.to_string()],
            )?;
            Ok(())
        })
        .unwrap();
        let mut svc = f.service().await;
        // This fixture has no HQ: a download would only be retried, never refused.
        svc.tick().await;
        svc.tick().await;
        assert_eq!(svc.st.updater.state, State::Refused);
        assert!(
            svc.st.updater.reason.contains("check `key_id` failed"),
            "{}",
            svc.st.updater.reason
        );
        assert!(!f.dir.join("3.0.0.deb.part").exists());
        let states: Vec<Value> = f.reported().iter().map(|e| e["state"].clone()).collect();
        assert_eq!(states, [json!("downloading"), json!("refused")]);
    }

    #[tokio::test]
    async fn the_staged_release_assigned_again_by_another_rollout_is_not_downloaded_again() {
        let f = fixture(60);
        f.staged("2.0.0");
        let mut svc = f.service().await;
        svc.tick().await;
        assert_eq!(svc.st.updater.state, State::WaitingWindow);
        let mut a = serde_json::to_value(svc.st.assign.as_ref().unwrap()).unwrap();
        a["rollout"] = json!("r-10");
        f.db.write_blocking(|c| {
            c.execute(
                "INSERT INTO sync_releases (event_id, payload, received_ms) VALUES ('e3', ?1, 0)",
                [a.to_string()],
            )?;
            Ok(())
        })
        .unwrap();
        svc.tick().await;
        assert_eq!(svc.st.updater.state, State::WaitingWindow);
        assert!(
            f.dir.join("2.0.0.deb").exists(),
            "the staged package is kept"
        );
        let last = f.reported().pop().unwrap();
        assert_eq!(
            (last["state"].as_str(), last["rollout"].as_str()),
            (Some("waiting_window"), Some("r-10"))
        );
        f.at("2026-12-02T02:30:00Z");
        svc.tick().await;
        assert!(matches!(
            read_request(&f.dir).unwrap(),
            Some(Request::Install { ref rollout, .. }) if rollout == "r-10"
        ));
    }

    #[tokio::test]
    async fn a_withdrawn_staged_release_is_refused_its_files_removed_and_never_installed() {
        let f = fixture(60);
        f.staged("2.0.0");
        std::fs::write(f.dir.join("2.0.0.manifest.json"), b"{}").unwrap();
        let mut svc = f.service().await;
        svc.tick().await;
        assert_eq!(svc.st.updater.state, State::WaitingWindow);
        let withdraw = |id: &str, rollout: &str, seq: i64| {
            let p = json!({"rollout": rollout, "version": "2.0.0", "reason": "failure threshold reached"});
            let id = id.to_string();
            f.db.write_blocking(move |c| {
                c.execute(
                    "INSERT INTO sync_releases (event_id, type, seq, payload, received_ms)
                     VALUES (?1, 'withdraw', ?2, ?3, 1)",
                    params![id, seq, p.to_string()],
                )?;
                Ok(())
            })
            .unwrap();
        };
        // Another rollout's withdrawal is ignored (and handled).
        withdraw("w1", "r-other", 5);
        svc.tick().await;
        assert_eq!(svc.st.updater.state, State::WaitingWindow);
        assert!(f.dir.join("2.0.0.deb").exists());
        withdraw("w2", "r-9", 6);
        svc.tick().await;
        assert_eq!(svc.st.updater.state, State::Refused);
        assert_eq!(
            svc.st.updater.reason,
            "withdrawn by HQ: failure threshold reached"
        );
        assert!(svc.st.assign.is_none());
        for f_ in ["2.0.0.deb", "2.0.0.manifest.json"] {
            assert!(!f.dir.join(f_).exists(), "{f_} is removed");
        }
        let last = f.reported().pop().unwrap();
        assert_eq!(
            (
                last["state"].as_str(),
                last["rollout"].as_str(),
                last["serial"].as_u64()
            ),
            (Some("refused"), Some("r-9"), Some(40))
        );
        let pending: i64 =
            f.db.read_blocking(|c| {
                Ok(c.query_row(
                    "SELECT count(*) FROM sync_releases WHERE handled_ms IS NULL",
                    [],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        assert_eq!(pending, 0);
        // The window opens: no install request.
        f.at("2026-12-02T02:30:00Z");
        svc.tick().await;
        assert_eq!(svc.st.updater.state, State::Refused);
        assert!(read_request(&f.dir).unwrap().is_none());
    }

    #[tokio::test]
    async fn with_updates_off_an_assignment_is_refused_and_reported_as_such() {
        let mut f = fixture(60);
        let mut cfg = (*f.config).clone();
        cfg.updates.public_key = String::new();
        f.config = Arc::new(cfg);
        let payload = crate::proto::release::tests::assign_json().to_string();
        f.db.write_blocking(|c| {
            c.execute(
                "INSERT INTO sync_releases (event_id, payload, received_ms) VALUES ('e1', ?1, 0)",
                [payload],
            )?;
            Ok(())
        })
        .unwrap();
        let mut svc = f.service().await;
        svc.tick().await;
        assert_eq!(svc.st.updater.state, State::Refused);
        let r = f.reported();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0]["state"], "refused");
        assert_eq!(r[0]["rollout"], "r-1");
        assert!(r[0]["reason"]
            .as_str()
            .unwrap()
            .contains("no [updates] public_key"));
        let handled: Option<i64> =
            f.db.read_blocking(|c| {
                Ok(c.query_row("SELECT handled_ms FROM sync_releases", [], |r| r.get(0))?)
            })
            .unwrap();
        assert!(handled.is_some());
        svc.tick().await;
        assert_eq!(f.reported().len(), 1, "taken once");
    }

    #[tokio::test]
    async fn probation_commits_after_its_time_once_hq_was_reached() {
        let f = fixture(60);
        f.staged(&running_version());
        f.at("2026-12-02T02:30:00Z");
        let mut svc = f.service().await;
        svc.tick().await;
        assert_eq!(svc.st.updater.state, State::Installing);
        std::fs::remove_file(f.dir.join("request.json")).unwrap();
        // The helper installed the version this process runs.
        f.write_result(&running_version(), "installed");
        svc.tick().await;
        assert_eq!(svc.st.updater.state, State::Probation);
        f.clock.advance(jiff::SignedDuration::from_secs(30));
        f.sync
            .update(|s| s.last_success = Some(f.clock.now().to_string()));
        svc.tick().await;
        assert_eq!(svc.st.updater.state, State::Probation, "not before 60 s");
        assert!(svc.st.probation.as_ref().unwrap().hq_reached);
        f.clock.advance(jiff::SignedDuration::from_secs(30));
        svc.tick().await;
        assert_eq!(svc.st.updater.state, State::Committed);
        assert_eq!(svc.st.updater.last_committed_serial, Some(40));
        assert!(!f.dir.join(RESULT_FILE).exists());
        assert!(!f.dir.join(format!("{}.deb", running_version())).exists());
    }

    #[tokio::test]
    async fn probation_without_hq_or_with_another_version_running_asks_for_a_rollback() {
        let f = fixture(60);
        f.staged("2.0.0");
        f.at("2026-12-02T02:30:00Z");
        let mut svc = f.service().await;
        svc.tick().await;
        std::fs::remove_file(f.dir.join("request.json")).unwrap();
        f.write_result("2.0.0", "installed");
        // This process does not run 2.0.0.
        svc.tick().await;
        assert_eq!(svc.st.updater.state, State::Failed);
        assert!(svc.st.updater.rolling_back);
        assert!(
            svc.st.updater.reason.contains("but this process runs"),
            "{}",
            svc.st.updater.reason
        );
        assert!(matches!(
            read_request(&f.dir).unwrap(),
            Some(Request::Rollback { ref version, .. }) if version == "2.0.0"
        ));
        // A second service start (the restored version) reads the helper's rolled_back.
        std::fs::remove_file(f.dir.join("request.json")).unwrap();
        std::fs::write(
            f.dir.join(RESULT_FILE),
            json!({"action": "rollback", "version": "2.0.0", "outcome": "rolled_back",
                "previous_version": "1.9.0", "finished_at": "2026-12-02T02:35:00Z"})
            .to_string(),
        )
        .unwrap();
        let mut svc = f.service().await;
        svc.tick().await;
        assert_eq!(svc.st.updater.state, State::RolledBack);
        assert!(svc.st.updater.reason.contains("restored 1.9.0"));
        assert!(!f.dir.join(RESULT_FILE).exists());
        let last: Vec<Value> = f
            .reported()
            .iter()
            .rev()
            .take(2)
            .map(|e| e["state"].clone())
            .collect();
        assert_eq!(last, [json!("rolled_back"), json!("failed")]);

        // A rollback request the helper never takes: after the timeout it is withdrawn, the
        // failure stands with what it means, and the updater takes assignments again.
        let f2 = fixture(60);
        f2.staged("2.0.0");
        f2.at("2026-12-02T02:30:00Z");
        let mut svc = f2.service().await;
        svc.tick().await;
        std::fs::remove_file(f2.dir.join("request.json")).unwrap();
        f2.write_result("2.0.0", "installed");
        svc.tick().await;
        assert!(svc.st.updater.rolling_back);
        f2.clock.advance(jiff::SignedDuration::from_mins(59));
        svc.tick().await;
        assert!(svc.st.updater.rolling_back, "still waiting at 59 minutes");
        assert!(read_request(&f2.dir).unwrap().is_some());
        f2.clock.advance(jiff::SignedDuration::from_mins(2));
        svc.tick().await;
        assert_eq!(
            (svc.st.updater.state, svc.st.updater.rolling_back),
            (State::Failed, false)
        );
        assert!(
            svc.st
                .updater
                .reason
                .contains("did not answer the rollback request")
                && svc.st.updater.reason.contains("this version still runs"),
            "{}",
            svc.st.updater.reason
        );
        assert!(
            read_request(&f2.dir).unwrap().is_none(),
            "request withdrawn"
        );
        let last = f2.reported().last().cloned().unwrap();
        assert_eq!(last["state"], "failed");
        assert!(last["reason"]
            .as_str()
            .unwrap()
            .contains("did not answer the rollback request"));

        // HQ never reached during probation fails it too.
        let f = fixture(60);
        f.staged(&running_version());
        f.at("2026-12-02T02:30:00Z");
        let mut svc = f.service().await;
        svc.tick().await;
        std::fs::remove_file(f.dir.join("request.json")).unwrap();
        f.write_result(&running_version(), "installed");
        svc.tick().await;
        assert_eq!(svc.st.updater.state, State::Probation);
        f.clock.advance(jiff::SignedDuration::from_secs(61));
        svc.tick().await;
        assert_eq!(svc.st.updater.state, State::Failed);
        assert!(svc.st.updater.reason.contains("HQ was not reached"));
    }
}
