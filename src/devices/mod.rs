//! The store's devices: who they are (registry), what they say (ingest of status, telemetry, events,
//! alerts, command acks), whether they are alive (presence), and what the box tells them
//! (commands). Everything here is reachable from the HTTP API and the UI.

pub mod ingest;
pub mod live;
pub mod payloads;
pub mod registry;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::json;

use crate::broker::guard::{BrokerShared, Signal};
use crate::db::{ts_from_ms, DbResult};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TelemetryPoint {
    pub ts: String,
    #[schema(value_type = Object)]
    pub metrics: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MinutePoint {
    pub minute: String,
    pub metric: String,
    pub count: i64,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Alert {
    pub id: i64,
    pub device_id: String,
    pub code: String,
    pub severity: String,
    pub message: String,
    pub raised_at: String,
    pub cleared_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Command {
    pub id: String,
    pub device_id: String,
    pub name: String,
    #[schema(value_type = Object)]
    pub args: serde_json::Value,
    pub sent_at: String,
    pub sent_by: String,
    pub acked_at: Option<String>,
    pub ok: Option<bool>,
    pub result: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    pub id: i64,
    pub received_at: String,
    pub source: String,
    pub device_id: Option<String>,
    pub topic: String,
    pub reason: String,
    /// The payload as text (lossy UTF-8), at most 4 KiB of it.
    pub payload: String,
    pub payload_size: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeviceDetail {
    #[serde(flatten)]
    pub device: registry::DeviceSummary,
    #[schema(value_type = Option<Object>)]
    pub status: Option<serde_json::Value>,
    pub telemetry: Vec<TelemetryPoint>,
    pub telemetry_minutes: Vec<MinutePoint>,
    pub alerts: Vec<Alert>,
    pub commands: Vec<Command>,
    pub dead_letters: Vec<DeadLetter>,
}

fn alert_row(r: &rusqlite::Row) -> rusqlite::Result<Alert> {
    Ok(Alert {
        id: r.get(0)?,
        device_id: r.get(1)?,
        code: r.get(2)?,
        severity: r.get(3)?,
        message: r.get(4)?,
        raised_at: ts_from_ms(r.get(5)?).to_string(),
        cleared_at: r
            .get::<_, Option<i64>>(6)?
            .map(|m| ts_from_ms(m).to_string()),
    })
}

const ALERT_COLS: &str = "id, device_id, code, severity, message, raised_ms, cleared_ms";

pub fn alerts(
    conn: &Connection,
    device: Option<&str>,
    open_only: bool,
    limit: i64,
) -> DbResult<Vec<Alert>> {
    let sql = format!(
        "SELECT {ALERT_COLS} FROM alerts WHERE (?1 IS NULL OR device_id = ?1) AND (?2 = 0 OR cleared_ms IS NULL)
         ORDER BY id DESC LIMIT ?3"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![device, open_only, limit], alert_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn dead_letters(
    conn: &Connection,
    device: Option<&str>,
    limit: i64,
) -> DbResult<Vec<DeadLetter>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, received_ms, source, device_id, topic, reason, payload, payload_size FROM dead_letters
         WHERE (?1 IS NULL OR device_id = ?1) ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![device, limit], |r| {
        let payload: Vec<u8> = r.get(6)?;
        Ok(DeadLetter {
            id: r.get(0)?,
            received_at: ts_from_ms(r.get(1)?).to_string(),
            source: r.get(2)?,
            device_id: r.get(3)?,
            topic: r.get(4)?,
            reason: r.get(5)?,
            payload: String::from_utf8_lossy(&payload).into_owned(),
            payload_size: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn commands(conn: &Connection, device: &str, limit: i64) -> DbResult<Vec<Command>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, device_id, name, args, sent_ms, sent_by, acked_ms, ok, result FROM commands
         WHERE device_id = ?1 ORDER BY sent_ms DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![device, limit], |r| {
        let args: String = r.get(3)?;
        Ok(Command {
            id: r.get(0)?,
            device_id: r.get(1)?,
            name: r.get(2)?,
            args: serde_json::from_str(&args).unwrap_or(json!({})),
            sent_at: ts_from_ms(r.get(4)?).to_string(),
            sent_by: r.get(5)?,
            acked_at: r
                .get::<_, Option<i64>>(6)?
                .map(|m| ts_from_ms(m).to_string()),
            ok: r.get::<_, Option<i64>>(7)?.map(|v| v != 0),
            result: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A device with its recent telemetry (raw, newest 100; per-minute rollups of the last `hours`),
/// alerts, commands and rejected messages.
pub fn detail(
    conn: &Connection,
    id: &str,
    now_ms: i64,
    hours: i64,
) -> DbResult<Option<DeviceDetail>> {
    let Some(device) = registry::get(conn, id)? else {
        return Ok(None);
    };
    let status: Option<String> = conn
        .query_row("SELECT status_json FROM devices WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?
        .flatten();
    let mut stmt = conn.prepare_cached(
        "SELECT ts_ms, metrics FROM telemetry WHERE device_id = ?1 ORDER BY ts_ms DESC LIMIT 100",
    )?;
    let telemetry = stmt
        .query_map([id], |r| {
            let m: String = r.get(1)?;
            Ok(TelemetryPoint {
                ts: ts_from_ms(r.get(0)?).to_string(),
                metrics: serde_json::from_str(&m).unwrap_or(json!({})),
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT minute, metric, count, sum, min, max FROM telemetry_minute
         WHERE device_id = ?1 AND minute >= ?2 ORDER BY minute, metric",
    )?;
    let telemetry_minutes = stmt
        .query_map(params![id, now_ms - hours * 3_600_000], |r| {
            let count: i64 = r.get(2)?;
            let sum: f64 = r.get(3)?;
            Ok(MinutePoint {
                minute: ts_from_ms(r.get(0)?).to_string(),
                metric: r.get(1)?,
                count,
                avg: if count > 0 { sum / count as f64 } else { 0.0 },
                min: r.get(4)?,
                max: r.get(5)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some(DeviceDetail {
        device,
        status: status.and_then(|s| serde_json::from_str(&s).ok()),
        telemetry,
        telemetry_minutes,
        alerts: alerts(conn, Some(id), false, 50)?,
        commands: commands(conn, id, 50)?,
        dead_letters: dead_letters(conn, Some(id), 50)?,
    }))
}

/// Records a command and returns the message to publish on `devices/{id}/commands`.
pub fn record_command(
    conn: &Connection,
    device: &str,
    name: &str,
    args: &serde_json::Value,
    actor: &str,
    now_ms: i64,
) -> Result<Command, registry::RegistryError> {
    if registry::get(conn, device)?.is_none() {
        return Err(registry::RegistryError::NotFound(device.to_string()));
    }
    let ok_name = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok_name {
        return Err(registry::RegistryError::Invalid(format!(
            "command name {name:?} must be 1-64 characters of letters, digits, '_', '-' or '.'"
        )));
    }
    if !args.is_object() {
        return Err(registry::RegistryError::Invalid(
            "command args must be a JSON object".into(),
        ));
    }
    let id = crate::outbox::new_id("cmd");
    conn.execute(
        "INSERT INTO commands (id, device_id, name, args, sent_ms, sent_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![id, device, name, args.to_string(), now_ms, actor],
    )?;
    Ok(Command {
        id,
        device_id: device.to_string(),
        name: name.to_string(),
        args: args.clone(),
        sent_at: ts_from_ms(now_ms).to_string(),
        sent_by: actor.to_string(),
        acked_at: None,
        ok: None,
        result: None,
    })
}

/// Marks every device offline at start: no connection survives a restart.
pub fn reset_presence(conn: &Connection) -> DbResult<()> {
    conn.execute(
        "UPDATE devices SET online = 0, offline_reason = 'storebox restarted' WHERE online = 1",
        [],
    )?;
    Ok(())
}

/// Watches live connections: one that sends nothing (not even PINGREQ) for twice its keepalive
/// is reported offline; it comes back online at its next packet.
pub fn spawn_presence_monitor(shared: Arc<BrokerShared>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let now = shared.clock.now().as_millisecond();
            for c in shared.presence.live() {
                let limit_ms = 2 * c.keepalive_s as i64 * 1000;
                let idle = now - c.last_seen_ms.load(Ordering::Relaxed);
                if idle > limit_ms {
                    if !c.silent.swap(true, Ordering::Relaxed) {
                        shared.signal(Signal::Silent {
                            device: c.device.clone(),
                            conn: c.conn,
                            after_s: (limit_ms / 1000) as u64,
                            at_ms: now,
                        });
                    }
                } else if c.silent.swap(false, Ordering::Relaxed) {
                    shared.signal(Signal::Resumed {
                        device: c.device.clone(),
                        conn: c.conn,
                        at_ms: now,
                    });
                }
            }
        }
    })
}
