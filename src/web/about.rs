//! About the box (`GET /api/v1/about`): version, uptime, store, and — for admins — a summary of
//! the configuration in force. Secrets are never shown: a secret key says only whether it is set.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

use super::caller::Caller;
use super::{ApiError, AppState};
use crate::auth::Role;
use crate::config::{Config, Secret};

#[derive(Serialize, utoipa::ToSchema)]
pub struct About {
    pub version: String,
    pub uptime_s: u64,
    /// When the box started (by its clock).
    pub started_at: String,
    pub now: String,
    pub store_id: String,
    pub store_name: String,
    pub timezone: String,
    pub currency: String,
    /// The configuration in force, secrets hidden; only for admins (null otherwise).
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
}

fn secret(s: &Secret) -> Value {
    json!(if s.is_empty() {
        "not set"
    } else {
        "set (hidden)"
    })
}

/// The configuration as admins see it: every store-side key, secrets replaced by "set (hidden)".
pub fn config_summary(c: &Config) -> Value {
    json!({
        "version": c.version,
        "store": {"id": c.store.id, "name": c.store.name, "timezone": c.store.timezone, "currency": c.store.currency},
        "http": {"listen": c.http.listen.to_string(), "session_minutes": c.http.session_minutes},
        "mqtt": {
            "listen": c.mqtt.listen.to_string(), "max_payload_bytes": c.mqtt.max_payload_bytes,
            "max_connections": c.mqtt.max_connections, "buffer_mb": c.mqtt.buffer_mb,
            "max_inflight": c.mqtt.max_inflight, "ingest_queue": c.mqtt.ingest_queue,
        },
        "hq": {
            "url": if c.hq.url.is_empty() { Value::from("none (standalone)") } else { Value::from(c.hq.url.clone()) },
            "token": secret(&c.hq.token),
            "token_file": c.hq.token_file.as_ref().map(|p| p.display().to_string()),
            "allow_hosts": c.hq.allow_hosts,
        },
        "storage": {
            "data_dir": c.storage.data_dir.display().to_string(), "outbox_max_mb": c.storage.outbox_max_mb,
            "telemetry_keep_days": c.storage.telemetry_keep_days, "dead_letter_keep": c.storage.dead_letter_keep,
        },
        "log": {"dir": c.log_dir().display().to_string(), "level": c.log.level, "keep_days": c.log.keep_days},
        "updates": {
            "public_key": if c.updates.public_key.is_empty() { "not set" } else { c.updates.public_key.as_str() },
            "enabled": c.updates.enabled, "window": c.updates.window,
            "trading_hours": c.updates.trading_hours, "probation_seconds": c.updates.probation_seconds,
        },
    })
}

/// Version, uptime and store; the configuration summary for admins.
#[utoipa::path(get, path = "/api/v1/about", responses((status = 200, body = About), (status = 401)))]
pub async fn about(State(state): State<AppState>, caller: Caller) -> Result<Json<About>, ApiError> {
    caller.require(Role::Staff)?;
    let now = state.clock.now();
    let up = state.started.elapsed();
    let started = now
        .checked_sub(jiff::SignedDuration::try_from(up).unwrap_or_default())
        .unwrap_or(now);
    let cfg = &state.config;
    Ok(Json(About {
        version: crate::VERSION.to_string(),
        uptime_s: up.as_secs(),
        started_at: started.to_string(),
        now: now.to_string(),
        store_id: cfg.store.id.clone(),
        store_name: cfg.store.name.clone(),
        timezone: cfg.store.timezone.clone(),
        currency: cfg.store.currency.clone(),
        config: (caller.role >= Role::Admin).then(|| config_summary(cfg)),
    }))
}
