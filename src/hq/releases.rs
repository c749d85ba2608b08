//! HQ's side of releases (DESIGN §7): the registry's and the rollouts' stored shapes, the checks of
//! a rollout plan, what one rollout engine tick records (pure: [`plan_tick`] wraps
//! [`super::rollout::decide`]) and the background task that ticks every running rollout.
//!
//! The engines ([`super::storage`]) run a tick inside one transaction that holds the rollout
//! (SQLite: the one writer; PostgreSQL: `SELECT … FOR UPDATE` on the rollout row), so two HQ nodes
//! ticking the same rollout at once never assign a store twice: the second sees the first's rows.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::{HqError, HqResult};
use super::rollout::{self, Decision, FleetStore, Plan, Progress, StoreState, Wave};
use super::storage::{Authored, Storage};
use crate::clock::SharedClock;
use crate::db::ts_from_ms;
use crate::proto::release::{
    Manifest, ReleaseAssign, ReleaseState, ReleaseWithdraw, MAX_WITHDRAW_REASON,
    PACKAGE_PATH_PREFIX,
};
use crate::proto::wire::FeedEvent;
use crate::proto::HqBody;

/// Largest manifest part accepted on upload.
pub const MAX_MANIFEST_BYTES: usize = 16 << 10;
/// Size of one stored package chunk (PostgreSQL rows) and of one streamed read.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Waves in one rollout plan.
pub const MAX_WAVES: usize = 20;
/// Group names in one rollout plan, over all waves.
pub const MAX_PLAN_GROUPS: usize = 1000;

/// A registered release: the verified manifest and who uploaded it when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRow {
    pub manifest: Manifest,
    pub uploaded_ms: i64,
    pub uploaded_by: String,
}

impl ReleaseRow {
    pub fn view(&self) -> Value {
        let m = &self.manifest;
        json!({
            "name": m.name,
            "version": m.version,
            "serial": m.serial,
            "channel": m.channel,
            "size": m.size,
            "sha256": m.sha256,
            "expires_at": m.expires_at.to_string(),
            "key_id": m.key_id,
            "uploaded_at": ts_from_ms(self.uploaded_ms).to_string(),
            "uploaded_by": self.uploaded_by,
        })
    }
}

/// What storing an upload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutRelease {
    Created,
    /// The same version with the same sha256 was already registered (idempotent).
    Unchanged,
}

/// `POST /hq/v1/rollouts` body, and the plan as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    pub version: String,
    pub waves: Vec<Wave>,
    pub abort_failure_percent: u8,
    pub store_timeout_minutes: u32,
    #[serde(default)]
    pub urgent: bool,
}

impl RolloutSpec {
    /// The checks that need no database: the error names the field.
    pub fn check(&self) -> HqResult<()> {
        let bad = |m: String| Err(HqError::invalid("invalid_rollout", m));
        if self.version.is_empty() || self.version.len() > 128 {
            return bad("version must be 1-128 bytes".into());
        }
        if self.waves.is_empty() || self.waves.len() > MAX_WAVES {
            return bad(format!("waves must hold 1 to {MAX_WAVES} waves"));
        }
        let groups: usize = self.waves.iter().map(|w| w.groups.len()).sum();
        if groups > MAX_PLAN_GROUPS {
            return bad(format!(
                "waves name {groups} groups; at most {MAX_PLAN_GROUPS} in one plan"
            ));
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, w) in self.waves.iter().enumerate() {
            if w.all && !w.groups.is_empty() {
                return bad(format!(
                    "waves[{i}]: give either \"groups\" or \"all\": true, not both"
                ));
            }
            if !w.all && w.groups.is_empty() {
                return bad(format!(
                    "waves[{i}]: \"groups\" is empty (name groups, or set \"all\": true)"
                ));
            }
            for g in &w.groups {
                crate::proto::check_name("group", g)
                    .map_err(|m| HqError::invalid("invalid_rollout", format!("waves[{i}]: {m}")))?;
                if let Some(j) = seen.insert(g, i) {
                    return bad(format!("waves[{i}]: group {g:?} is already in waves[{j}]"));
                }
            }
            if w.min_success_percent > 100 {
                return bad(format!(
                    "waves[{i}].min_success_percent {} must be 0-100",
                    w.min_success_percent
                ));
            }
            if w.soak_minutes > 30 * 24 * 60 {
                return bad(format!(
                    "waves[{i}].soak_minutes {} must be at most 43200 (30 days)",
                    w.soak_minutes
                ));
            }
        }
        if self.abort_failure_percent > 100 {
            return bad(format!(
                "abort_failure_percent {} must be 0-100",
                self.abort_failure_percent
            ));
        }
        if !(1..=30 * 24 * 60).contains(&self.store_timeout_minutes) {
            return bad(format!(
                "store_timeout_minutes {} must be 1-43200 (30 days)",
                self.store_timeout_minutes
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    Running,
    Paused,
    Aborted,
    Completed,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Aborted => "aborted",
            RolloutState::Completed => "completed",
        }
    }
    pub fn parse(s: &str) -> HqResult<Self> {
        match s {
            "running" => Ok(RolloutState::Running),
            "paused" => Ok(RolloutState::Paused),
            "aborted" => Ok(RolloutState::Aborted),
            "completed" => Ok(RolloutState::Completed),
            other => Err(HqError::storage(format!("unknown rollout state {other:?}"))),
        }
    }
    /// Running or paused: the engine still ticks it.
    pub fn is_active(self) -> bool {
        matches!(self, RolloutState::Running | RolloutState::Paused)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutRow {
    pub id: String,
    pub spec: RolloutSpec,
    pub state: RolloutState,
    /// Why it was aborted or completed (empty otherwise).
    pub reason: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub created_by: String,
}

impl RolloutRow {
    pub fn plan(&self) -> Plan {
        Plan {
            version: self.spec.version.clone(),
            waves: self.spec.waves.clone(),
            abort_failure_percent: self.spec.abort_failure_percent,
            store_timeout_minutes: self.spec.store_timeout_minutes,
            urgent: self.spec.urgent,
            paused: self.state == RolloutState::Paused,
            aborted: self.state == RolloutState::Aborted,
        }
    }
}

/// One assigned store of a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutStoreRow {
    pub store: String,
    pub wave: i64,
    /// The version the store's last report was about (the rollout's until it reports).
    pub version: String,
    pub state: StoreState,
    /// `installing` reports received: how often the store tried to install this version.
    pub attempts: i64,
    pub reason: String,
    pub assigned_ms: i64,
    pub updated_ms: i64,
}

pub fn store_state_str(s: StoreState) -> &'static str {
    match s {
        StoreState::Assigned => "assigned",
        StoreState::Downloading => "downloading",
        StoreState::Staged => "staged",
        StoreState::WaitingWindow => "waiting_window",
        StoreState::Installing => "installing",
        StoreState::Probation => "probation",
        StoreState::Committed => "committed",
        StoreState::RolledBack => "rolled_back",
        StoreState::Refused => "refused",
        StoreState::Failed => "failed",
        StoreState::TimedOut => "timed_out",
    }
}

pub fn parse_store_state(s: &str) -> HqResult<StoreState> {
    serde_json::from_value(Value::String(s.to_string()))
        .map_err(|_| HqError::storage(format!("unknown rollout store state {s:?}")))
}

/// The store state a `release.status` report puts a store in.
pub fn reported_state(s: ReleaseState) -> StoreState {
    match s {
        ReleaseState::Downloading => StoreState::Downloading,
        ReleaseState::Staged => StoreState::Staged,
        ReleaseState::WaitingWindow => StoreState::WaitingWindow,
        ReleaseState::Installing => StoreState::Installing,
        ReleaseState::Probation => StoreState::Probation,
        ReleaseState::Committed => StoreState::Committed,
        ReleaseState::RolledBack => StoreState::RolledBack,
        ReleaseState::Refused => StoreState::Refused,
        ReleaseState::Failed => StoreState::Failed,
    }
}

/// An upload of a version already registered: the same bytes are fine, others a conflict.
pub fn same_release(old: &ReleaseRow, new: &Manifest) -> HqResult<PutRelease> {
    if old.manifest.sha256 == new.sha256 {
        Ok(PutRelease::Unchanged)
    } else {
        Err(HqError::Conflict(format!(
            "version {} is already registered with sha256 {}; this package's is {} (publish a new version instead)",
            new.version, old.manifest.sha256, new.sha256
        )))
    }
}

pub fn unknown_version(version: &str) -> HqError {
    HqError::invalid(
        "invalid_rollout",
        format!("version {version:?} is not a registered release (POST /hq/v1/releases first)"),
    )
}

pub fn unknown_rollout(id: &str) -> HqError {
    HqError::not_found("unknown_rollout", format!("no rollout {id:?}"))
}

/// Pause: running → paused; resume: paused → running; abort: running or paused → aborted.
pub fn check_transition(row: &RolloutRow, to: RolloutState) -> HqResult<()> {
    use RolloutState::*;
    let ok = matches!(
        (row.state, to),
        (Running, Paused) | (Paused, Running) | (Running | Paused, Aborted)
    );
    if ok {
        return Ok(());
    }
    let verb = match to {
        Paused => "pause",
        Running => "resume",
        Aborted => "abort",
        Completed => "complete",
    };
    Err(HqError::Conflict(format!(
        "rollout {} is {}; cannot {verb} it",
        row.id,
        row.state.as_str()
    )))
}

pub fn timeout_reason(row: &RolloutRow) -> String {
    format!(
        "no committed, rolled_back, refused or failed report within store_timeout_minutes ({}) of assignment",
        row.spec.store_timeout_minutes
    )
}

/// A store's reason text as kept (at most 1000 characters).
pub fn bounded_reason(reason: &str) -> String {
    reason.chars().take(1000).collect()
}

/// Where a store downloads a version's package.
pub fn package_path(version: &str) -> String {
    format!("{PACKAGE_PATH_PREFIX}{version}/package")
}

/// The `release.assign` event for the stores a tick assigns.
pub fn assign_event(rollout: &str, manifest: &Manifest) -> HqResult<Authored> {
    let a = ReleaseAssign {
        version: manifest.version.clone(),
        rollout: rollout.to_string(),
        manifest: manifest.clone(),
        package: package_path(&manifest.version),
    };
    a.check()
        .map_err(|m| HqError::storage(format!("release.assign for rollout {rollout}: {m}")))?;
    Ok(Authored {
        id: super::new_event_id("release"),
        body: HqBody::ReleaseAssign(a),
    })
}

/// Whether an aborted rollout withdraws its assignment from a store whose row is in `state`: the
/// store was assigned and has not reported `installing` yet (`assigned`, `downloading`, `staged`,
/// `waiting_window`), or it timed out on HQ's side without a final report (it may still be
/// waiting for its window). A store installing or in probation is past the point of no return
/// (its install's own health decides); committed, rolled back, refused and failed stores are done.
pub fn withdraws(state: StoreState) -> bool {
    matches!(
        state,
        StoreState::Assigned
            | StoreState::Downloading
            | StoreState::Staged
            | StoreState::WaitingWindow
            | StoreState::TimedOut
    )
}

/// What aborting a rollout authors: one `release.withdraw`, targeted at exactly `stores`.
#[derive(Debug, Clone)]
pub struct Withdrawal {
    pub stores: Vec<String>,
    pub event: Authored,
}

/// The withdrawal an abort of rollout `rollout` (of `version`, for `reason`) authors, given its
/// store rows as they were before the abort; None when no store is left to tell. Both engines
/// call it in the transaction that makes the rollout `aborted` (engine tick, operator abort,
/// superseding rollout), so the rollout state and the event commit together.
pub fn withdrawal(
    rollout: &str,
    version: &str,
    reason: &str,
    rows: &[RolloutStoreRow],
) -> HqResult<Option<Withdrawal>> {
    let stores: Vec<String> = rows
        .iter()
        .filter(|r| withdraws(r.state))
        .map(|r| r.store.clone())
        .collect();
    if stores.is_empty() {
        return Ok(None);
    }
    let mut cut = reason.len().min(MAX_WITHDRAW_REASON);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let w = ReleaseWithdraw {
        rollout: rollout.to_string(),
        version: version.to_string(),
        reason: reason[..cut].to_string(),
    };
    w.check()
        .map_err(|m| HqError::storage(format!("release.withdraw for rollout {rollout}: {m}")))?;
    Ok(Some(Withdrawal {
        stores,
        event: Authored {
            id: super::new_event_id("release"),
            body: HqBody::ReleaseWithdraw(w),
        },
    }))
}

/// The reason a rollout superseded by `by` is aborted with.
pub fn superseded_reason(by: &str) -> String {
    format!("superseded by rollout {by}")
}

/// The query (both engines; `?1`/`$1` the store) for a snapshot's pending assignment: the newest
/// row of a running or paused rollout that assigned the store and has no final report yet.
pub const PENDING_ASSIGN_SQL: &str = "SELECT r.id, rel.manifest FROM rollout_stores rs
     JOIN rollouts r ON r.id = rs.rollout_id JOIN releases rel ON rel.version = r.version
     WHERE rs.store_id = $1 AND r.state IN ('running', 'paused')
       AND rs.state NOT IN ('committed', 'rolled_back', 'refused', 'failed', 'timed_out')
     ORDER BY rs.assigned_ms DESC, r.id DESC LIMIT 1";

/// The `release.assign` a snapshot carries for a pending assignment (`PENDING_ASSIGN_SQL`), so that
/// a store rebuilding from the snapshot (a store installed after HQ assigned it, or one answered
/// 410) still gets it; placed at the snapshot's cursor. None if the stored manifest is unreadable.
pub fn snapshot_assign(rollout: &str, manifest: &str, cursor: i64) -> Option<FeedEvent> {
    let manifest: Manifest = serde_json::from_str(manifest).ok()?;
    let ev = assign_event(rollout, &manifest).ok()?;
    let (t, payload) = ev.body.to_wire();
    Some(FeedEvent {
        seq: cursor,
        id: format!("snapshot-release-{rollout}"),
        event_type: t.as_str().to_string(),
        payload,
        at: None,
    })
}

/// The query (both engines; `$1` the store) for a snapshot's withdrawal: the store's newest
/// assignment of any rollout with the rollout's id, version, state and reason, the row's state,
/// and whether the rollout was superseded by one of the same version (which withdraws nothing).
pub const NEWEST_ASSIGNMENT_SQL: &str = "SELECT r.id, r.version, r.state, r.reason, rs.state,
       EXISTS (SELECT 1 FROM rollouts n
               WHERE n.version = r.version AND r.reason = 'superseded by rollout ' || n.id)
     FROM rollout_stores rs JOIN rollouts r ON r.id = rs.rollout_id
     WHERE rs.store_id = $1
     ORDER BY rs.assigned_ms DESC, r.id DESC LIMIT 1";

/// One row of [`NEWEST_ASSIGNMENT_SQL`].
#[derive(Debug, Clone)]
pub struct NewestAssignment {
    pub rollout: String,
    pub version: String,
    pub rollout_state: String,
    pub reason: String,
    pub store_state: String,
    pub superseded_by_same_version: bool,
}

/// The `release.withdraw` a snapshot carries when the store's newest assignment is of an aborted
/// rollout that withdrew it and the store has not answered it (its row is still one an abort
/// withdraws): a store rebuilding from the snapshot after `retain_events` pruned the feed's
/// withdrawal still drops the staged release. Placed at the snapshot's cursor, id
/// `snapshot-withdraw-<rollout>`.
pub fn snapshot_withdraw(newest: &NewestAssignment, cursor: i64) -> Option<FeedEvent> {
    if newest.rollout_state != RolloutState::Aborted.as_str() || newest.superseded_by_same_version {
        return None;
    }
    let row = RolloutStoreRow {
        store: String::new(),
        wave: 0,
        version: newest.version.clone(),
        state: parse_store_state(&newest.store_state).ok()?,
        attempts: 0,
        reason: String::new(),
        assigned_ms: 0,
        updated_ms: 0,
    };
    let w = withdrawal(
        &newest.rollout,
        &newest.version,
        &newest.reason,
        std::slice::from_ref(&row),
    )
    .ok()??;
    let (t, payload) = w.event.body.to_wire();
    Some(FeedEvent {
        seq: cursor,
        id: format!("snapshot-withdraw-{}", newest.rollout),
        event_type: t.as_str().to_string(),
        payload,
        at: None,
    })
}

fn progress(rows: &[RolloutStoreRow]) -> HashMap<String, Progress> {
    rows.iter()
        .map(|r| {
            (
                r.store.clone(),
                Progress {
                    assigned_at: ts_from_ms(r.assigned_ms),
                    version: r.version.clone(),
                    state: r.state,
                    updated_at: ts_from_ms(r.updated_ms),
                },
            )
        })
        .collect()
}

/// The rollout's decision at `now` (read-only; the detail view shows it).
pub fn decision(
    row: &RolloutRow,
    fleet: &[FleetStore],
    rows: &[RolloutStoreRow],
    now: Timestamp,
) -> Decision {
    rollout::decide(&row.plan(), fleet, &progress(rows), now)
}

/// What one engine tick records for a rollout.
#[derive(Debug, Clone, Default)]
pub struct Tick {
    /// Stores to assign, with their wave index.
    pub assign: Vec<(String, i64)>,
    /// The event that tells them (one, targeted at exactly those stores).
    pub event: Option<Authored>,
    /// Stores to record as timed out.
    pub timed_out: Vec<String>,
    /// The rollout's new state and why, when it changes.
    pub new_state: Option<(RolloutState, String)>,
    /// When the tick aborts the rollout: the `release.withdraw` for its stores not yet installing.
    pub withdraw: Option<Withdrawal>,
}

impl Tick {
    /// Whether the tick authors an event (the feed head moves).
    pub fn authors(&self) -> bool {
        self.event.is_some() || self.withdraw.is_some()
    }
}

/// Runs [`rollout::decide`] for an active rollout and turns its answer into what to record.
pub fn plan_tick(
    row: &RolloutRow,
    manifest: &Manifest,
    fleet: &[FleetStore],
    rows: &[RolloutStoreRow],
    now: Timestamp,
) -> HqResult<Tick> {
    let plan = row.plan();
    let d = rollout::decide(&plan, fleet, &progress(rows), now);
    let mut t = Tick {
        timed_out: d.timed_out.clone(),
        ..Tick::default()
    };
    if let Some(why) = d.abort {
        if row.state != RolloutState::Aborted {
            t.withdraw = withdrawal(&row.id, &row.spec.version, &why, rows)?;
            t.new_state = Some((RolloutState::Aborted, why));
        }
        return Ok(t);
    }
    if !d.assign.is_empty() {
        let groups: HashMap<&str, &str> = fleet
            .iter()
            .map(|s| (s.id.as_str(), s.group.as_str()))
            .collect();
        t.assign = d
            .assign
            .iter()
            .map(|id| {
                let wave = groups
                    .get(id.as_str())
                    .and_then(|g| rollout::wave_of(&plan, g))
                    .unwrap_or(0);
                (id.clone(), wave as i64)
            })
            .collect();
        t.event = Some(assign_event(&row.id, manifest)?);
    }
    if d.finished && row.state == RolloutState::Running {
        t.new_state = Some((
            RolloutState::Completed,
            format!(
                "every wave passed: {} of {} assigned stores committed",
                d.counts.succeeded, d.counts.assigned
            ),
        ));
    }
    Ok(t)
}

/// The detail view of a rollout: plan, state, counts and, per wave, its stores.
pub fn rollout_view(
    row: &RolloutRow,
    fleet: &[FleetStore],
    rows: &[RolloutStoreRow],
    now: Timestamp,
) -> Value {
    let d = decision(row, fleet, rows, now);
    let waves: Vec<Value> = row
        .spec
        .waves
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let state = match d.current_wave {
                _ if d.finished => "passed",
                Some(c) if i < c => "passed",
                Some(c) if i == c && d.wave_complete => "soaking",
                Some(c) if i == c => "in_progress",
                _ => "pending",
            };
            let stores: Vec<Value> = rows
                .iter()
                .filter(|r| r.wave == i as i64)
                .map(|r| {
                    json!({
                        "store": r.store,
                        "state": store_state_str(r.state),
                        "version": r.version,
                        "attempts": r.attempts,
                        "reason": r.reason,
                        "assigned_at": ts_from_ms(r.assigned_ms).to_string(),
                        "updated_at": ts_from_ms(r.updated_ms).to_string(),
                    })
                })
                .collect();
            json!({
                "index": i,
                "groups": w.groups,
                "all": w.all,
                "min_success_percent": w.min_success_percent,
                "soak_minutes": w.soak_minutes,
                "state": state,
                "soak_ends_at": (d.current_wave == Some(i))
                    .then(|| d.soak_ends_at.map(|t| t.to_string()))
                    .flatten(),
                "stores": stores,
            })
        })
        .collect();
    let mut v = summary_view(row);
    v["counts"] = json!(d.counts);
    v["current_wave"] = json!(d.current_wave);
    v["waves"] = Value::Array(waves);
    v
}

/// A rollout in the list.
pub fn summary_view(row: &RolloutRow) -> Value {
    json!({
        "id": row.id,
        "version": row.spec.version,
        "state": row.state.as_str(),
        "reason": row.reason,
        "plan": row.spec,
        "created_at": ts_from_ms(row.created_ms).to_string(),
        "updated_at": ts_from_ms(row.updated_ms).to_string(),
        "created_by": row.created_by,
    })
}

/// Ticks every active rollout once; returns how many stores were assigned.
pub async fn tick_all(storage: &Storage, now: Timestamp) -> HqResult<usize> {
    let mut assigned = 0;
    for r in storage.rollouts().await? {
        if r.state.is_active() {
            assigned += storage.tick_rollout(&r.id, now).await?.assign.len();
        }
    }
    Ok(assigned)
}

/// The rollout engine: ticks every `every`, and at once when poked (a `release.status` push or a
/// rollout change on this node). Errors are logged and retried at the next tick.
pub async fn run_engine(
    storage: Storage,
    clock: SharedClock,
    poke: Arc<tokio::sync::Notify>,
    every: Duration,
) {
    loop {
        if let Err(e) = tick_all(&storage, clock.now()).await {
            tracing::warn!(error = %e, "rollout engine tick failed; retrying at the next tick");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = poke.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RolloutSpec {
        serde_json::from_value(json!({
            "version": "1.5.0",
            "waves": [{"groups": ["pilot"], "min_success_percent": 100, "soak_minutes": 60},
                      {"all": true, "min_success_percent": 90, "soak_minutes": 0}],
            "abort_failure_percent": 10, "store_timeout_minutes": 240
        }))
        .unwrap()
    }

    fn refused(edit: impl Fn(&mut RolloutSpec), needle: &str) {
        let mut s = spec();
        edit(&mut s);
        match s.check() {
            Err(HqError::Invalid {
                code: "invalid_rollout",
                message,
            }) => assert!(message.contains(needle), "{needle}: {message}"),
            other => panic!("{needle}: {other:?}"),
        }
    }

    #[test]
    fn rollout_plans_are_checked_naming_the_field() {
        spec().check().unwrap();
        assert!(!spec().urgent, "urgent defaults to false");
        refused(|s| s.waves.clear(), "waves");
        refused(|s| s.waves[0].groups.clear(), "waves[0]");
        refused(|s| s.waves[1].groups = vec!["x".into()], "waves[1]");
        refused(|s| s.waves[0].groups = vec!["bad name".into()], "waves[0]");
        refused(
            |s| s.waves[1] = s.waves[0].clone(),
            "group \"pilot\" is already in waves[0]",
        );
        refused(
            |s| s.waves[1].min_success_percent = 101,
            "waves[1].min_success_percent",
        );
        refused(|s| s.abort_failure_percent = 150, "abort_failure_percent");
        refused(|s| s.store_timeout_minutes = 0, "store_timeout_minutes");
        refused(
            |s| s.waves[0].soak_minutes = 50_000,
            "waves[0].soak_minutes",
        );
        refused(
            |s| s.waves[0].groups = (0..1001).map(|i| format!("g{i}")).collect(),
            "1001 groups",
        );
        let unknown = serde_json::from_value::<RolloutSpec>(json!({
            "version": "1", "waves": [], "abort_failure_percent": 1,
            "store_timeout_minutes": 1, "paused": true
        }));
        assert!(unknown.unwrap_err().to_string().contains("paused"));
    }
}
