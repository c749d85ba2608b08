//! `GET /api/v1/updates`: what the store's updater is doing (docs/releases.md, "The store") —
//! running and assigned version, state and reason, window, trading hours, the next moment an
//! install may start, and the last state changes. Read from the updater's saved state, so it shows
//! what survives a restart.

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::caller::Caller;
use super::{ApiError, AppState};
use crate::auth::Role;
use crate::updates::service::{self, HistoryEntry};

/// State changes shown (newest first).
pub const HISTORY_SHOWN: i64 = 20;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Assigned {
    pub version: String,
    /// The manifest serial.
    pub serial: u64,
    /// The rollout that assigned it.
    pub rollout: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Updates {
    /// Updates are on: `[updates] public_key` is set and valid, and `enabled` is not false.
    pub enabled: bool,
    /// Why updates are off (null when on).
    pub off_reason: Option<String>,
    /// The version this process runs.
    pub running_version: String,
    /// `idle` (nothing assigned yet) or a `release.status` state: downloading, staged,
    /// waiting_window, installing, probation, committed, rolled_back, refused, failed.
    pub state: String,
    pub reason: String,
    /// The release HQ assigned last (null when none).
    pub assigned: Option<Assigned>,
    pub last_committed_serial: Option<u64>,
    /// A rollback was requested and the root helper has not answered yet.
    pub rolling_back: bool,
    /// Store-local install window `HH:MM-HH:MM`.
    pub window: String,
    /// Store-local trading hours `HH:MM-HH:MM` (no install starts inside them).
    pub trading_hours: String,
    pub timezone: String,
    pub probation_seconds: u64,
    /// When probation started (null when not in probation).
    pub probation_started_at: Option<String>,
    /// The first moment (within two days) the window and trading hours allow an install; null
    /// when they never do. A sale in flight can still delay it.
    pub next_install_at: Option<String>,
    /// The last 20 state changes, newest first.
    pub history: Vec<HistoryEntry>,
}

/// The store's self-update: running/assigned version, state, window and history.
#[utoipa::path(get, path = "/api/v1/updates", responses((status = 200, body = Updates)))]
pub async fn updates(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Updates>, ApiError> {
    caller.require(Role::Staff)?;
    let (p, history) = state
        .db
        .read(|c| Ok((service::load(c)?, service::history(c, HISTORY_SHOWN)?)))
        .await?;
    let cfg = &state.config;
    let conditions = service::conditions(cfg, state.clock.now(), false);
    let u = &p.updater;
    let state_name = serde_json::to_value(u.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    Ok(Json(Updates {
        enabled: service::off_reason(cfg).is_none(),
        off_reason: service::off_reason(cfg),
        running_version: service::running_version(),
        state: state_name,
        reason: u.reason.clone(),
        assigned: u.release.as_ref().map(|r| Assigned {
            version: r.version.clone(),
            serial: r.serial,
            rollout: r.rollout.clone(),
        }),
        last_committed_serial: u.last_committed_serial,
        rolling_back: u.rolling_back,
        window: conditions.window.to_string(),
        trading_hours: conditions.trading_hours.to_string(),
        timezone: cfg.store.timezone.clone(),
        probation_seconds: cfg.updates.probation_seconds,
        probation_started_at: p
            .probation
            .as_ref()
            .map(|x| crate::db::ts_from_ms(x.started_ms).to_string()),
        next_install_at: crate::updates::next_install_at(&conditions).map(|t| t.to_string()),
        history,
    }))
}
