//! The audit log: an append-only SQLite table of every staff action, price activation and sync
//! milestone, so a manager can answer "who did what, when" without reading server logs.

use rusqlite::{params, Connection};
use serde::Serialize;

use crate::db::{ts_from_ms, DbResult};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

pub fn record(
    conn: &Connection,
    at_ms: i64,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> DbResult<()> {
    conn.execute(
        "INSERT INTO audit (at_ms, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![at_ms, actor, action, target, detail],
    )?;
    Ok(())
}

/// Newest first; `before` pages backwards by id.
pub fn list(conn: &Connection, before: Option<i64>, limit: i64) -> DbResult<Vec<AuditEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, at_ms, actor, action, target, detail FROM audit
         WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![before.unwrap_or(i64::MAX), limit], |r| {
        Ok(AuditEntry {
            id: r.get(0)?,
            at: ts_from_ms(r.get(1)?).to_string(),
            actor: r.get(2)?,
            action: r.get(3)?,
            target: r.get(4)?,
            detail: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
