//! Provisioned devices and their credentials: the list of who may connect to the broker. Passwords
//! are generated here, shown once, and stored as SHA-256 digests.

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::auth::{digest_eq, generate_secret, hash_secret};
use crate::broker::acl::valid_device_id;
use crate::db::{ts_from_ms, Db, DbResult};

pub const KINDS: [&str; 7] = [
    "lane", "scale", "label", "fridge", "printer", "kiosk", "generic",
];

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(String),
    #[error("device {0:?} already exists")]
    Exists(String),
    #[error("device {0:?} not found")]
    NotFound(String),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
}

impl From<rusqlite::Error> for RegistryError {
    fn from(e: rusqlite::Error) -> Self {
        RegistryError::Db(e.into())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceSummary {
    pub id: String,
    pub kind: String,
    pub name: String,
    pub online: bool,
    pub firmware: Option<String>,
    pub last_seen: Option<String>,
    pub offline_reason: Option<String>,
    pub open_alerts: i64,
    pub created_at: String,
    /// Set (in `GET /api/v1/devices`) while device ingest cannot write (disk full, I/O error):
    /// the time writing stopped. `online`, `last_seen`, `offline_reason` and `firmware` are then as
    /// of that time, not now; `/api/v1/status` `ingest_failure` says why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_since: Option<String>,
}

/// What provisioning returns: the only time the password is visible.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Provisioned {
    pub id: String,
    pub kind: String,
    pub username: String,
    pub password: String,
}

pub fn add(
    conn: &Connection,
    id: &str,
    kind: &str,
    name: &str,
    now_ms: i64,
) -> Result<Provisioned, RegistryError> {
    if !valid_device_id(id) {
        return Err(RegistryError::Invalid(format!(
            "device id {id:?} must be 1-64 characters of letters, digits, '.', '-' or '_' and not start with \"storebox\""
        )));
    }
    if !KINDS.contains(&kind) {
        return Err(RegistryError::Invalid(format!(
            "device kind {kind:?} must be one of {}",
            KINDS.join(", ")
        )));
    }
    if name.chars().count() > 128 {
        return Err(RegistryError::Invalid(
            "device name is longer than 128 characters".into(),
        ));
    }
    let password = generate_secret("dev_");
    let n = conn.execute(
        "INSERT OR IGNORE INTO devices (id, kind, name, secret_hash, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, kind, name, hash_secret(&password), now_ms],
    )?;
    if n == 0 {
        return Err(RegistryError::Exists(id.to_string()));
    }
    Ok(Provisioned {
        id: id.to_string(),
        kind: kind.to_string(),
        username: id.to_string(),
        password,
    })
}

pub fn remove(conn: &Connection, id: &str) -> Result<(), RegistryError> {
    if conn.execute("DELETE FROM devices WHERE id = ?1", [id])? == 0 {
        return Err(RegistryError::NotFound(id.to_string()));
    }
    Ok(())
}

const SUMMARY_SQL: &str = "SELECT d.id, d.kind, d.name, d.online, d.firmware, d.last_seen_ms, d.offline_reason,
        (SELECT count(*) FROM alerts a WHERE a.device_id = d.id AND a.cleared_ms IS NULL), d.created_ms
     FROM devices d";

fn summary_row(r: &rusqlite::Row) -> rusqlite::Result<DeviceSummary> {
    Ok(DeviceSummary {
        id: r.get(0)?,
        kind: r.get(1)?,
        name: r.get(2)?,
        online: r.get::<_, i64>(3)? != 0,
        firmware: r.get(4)?,
        last_seen: r
            .get::<_, Option<i64>>(5)?
            .map(|m| ts_from_ms(m).to_string()),
        offline_reason: r.get(6)?,
        open_alerts: r.get(7)?,
        created_at: ts_from_ms(r.get(8)?).to_string(),
        stale_since: None,
    })
}

pub fn list(conn: &Connection) -> DbResult<Vec<DeviceSummary>> {
    let mut stmt = conn.prepare_cached(&format!("{SUMMARY_SQL} ORDER BY d.id"))?;
    let rows = stmt.query_map([], summary_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn get(conn: &Connection, id: &str) -> DbResult<Option<DeviceSummary>> {
    let mut stmt = conn.prepare_cached(&format!("{SUMMARY_SQL} WHERE d.id = ?1"))?;
    Ok(stmt.query_row([id], summary_row).optional()?)
}

/// Checks a device's MQTT password against the stored digest (off the async executor).
pub async fn check_secret(db: &Db, id: &str, password: &str) -> bool {
    check_login(db, id, password).await.is_some()
}

/// The device's kind when `password` is its secret; `None` for an unknown device or a wrong one.
pub async fn check_login(db: &Db, id: &str, password: &str) -> Option<String> {
    let id = id.to_string();
    let given = hash_secret(password);
    db.read(move |conn| {
        let stored: Option<(String, String)> = conn
            .query_row(
                "SELECT secret_hash, kind FROM devices WHERE id = ?1",
                [&id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(stored.and_then(|(s, kind)| digest_eq(&s, &given).then_some(kind)))
    })
    .await
    .ok()
    .flatten()
}

/// Business event types a device of `kind` may send by default (`mqtt.event_types` changes them
/// per kind): a fridge reports doors, not checkouts.
pub fn default_event_types(kind: &str) -> &'static [&'static str] {
    match kind {
        "lane" => &[
            "checkout.completed",
            "lane.opened",
            "lane.closed",
            "basket.abandoned",
            "receipt.printed",
        ],
        "kiosk" => &["checkout.completed", "basket.abandoned", "receipt.printed"],
        "scale" => &["scale.weighed"],
        "label" => &["label.displayed"],
        "fridge" => &["door.opened", "door.closed"],
        "printer" => &["receipt.printed"],
        _ => &crate::devices::payloads::EVENT_TYPES,
    }
}
