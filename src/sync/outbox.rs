//! The store → HQ outbox table: append inside the caller's transaction; business events are never
//! dropped, telemetry is a lower class with a time-to-live.

use rusqlite::{params, Connection};
use serde::Serialize;

use crate::db::DbResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Business,
    Telemetry,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Business => "business",
            Class::Telemetry => "telemetry",
        }
    }
}

/// Appends an event; an `id` already present is ignored (returns false), which makes producers
/// idempotent when they derive the id from their own key.
pub fn enqueue(
    conn: &Connection,
    id: &str,
    event_type: &str,
    class: Class,
    payload: &str,
    now_ms: i64,
) -> DbResult<bool> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR IGNORE INTO outbox (id, type, class, payload, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    Ok(stmt.execute(params![id, event_type, class.as_str(), payload, now_ms])? == 1)
}

/// Unsent events by class.
pub fn depth(conn: &Connection) -> DbResult<(i64, i64)> {
    // Two counts over the partial index of unsent events (`outbox_unsent`): a scan of the table
    // itself would also read every payload and every sent row still kept (the push reads the
    // depth with each batch; a table scan took a third of a drain's CPU time).
    Ok(conn
        .prepare_cached(
            "SELECT (SELECT count(*) FROM outbox WHERE class = 'business' AND sent_ms IS NULL),
                    (SELECT count(*) FROM outbox WHERE class = 'telemetry' AND sent_ms IS NULL)",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?)
}

pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}
