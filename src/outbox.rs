//! The store → HQ outbox: every event meant for HQ is first committed here, in the same
//! transaction as the change that caused it (a checkout, a ticket, a device alert), with a store
//! sequence number and a unique id; the sync client reads batches from it in order and marks them
//! sent when HQ holds them (docs/sync-protocol.md). Business events are never dropped; telemetry is
//! a lower class with a time-to-live and a size cap. A module of its own so that the producers
//! (tickets, devices, checkouts) and the sync client depend on it and not on each other.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::db::{ts_from_ms, DbResult};
use crate::proto::{self, StoreEvent, StoreEventType};

/// Unsent telemetry rows kept at most in the outbox (besides the byte cap).
pub const TELEMETRY_OUTBOX_MAX_ROWS: i64 = 200_000;

const DROPPED_KEY: &str = "outbox_dropped";

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
    event_type: StoreEventType,
    class: Class,
    payload: &str,
    now_ms: i64,
) -> DbResult<bool> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR IGNORE INTO outbox (id, type, class, payload, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    Ok(stmt.execute(params![
        id,
        event_type.as_str(),
        class.as_str(),
        payload,
        now_ms
    ])? == 1)
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

/// The seqs a push run has already sent (or has in flight), per class: the next batch is read
/// after them.
#[derive(Debug, Default, Clone, Copy)]
pub struct After {
    pub business: i64,
    pub telemetry: i64,
}

impl After {
    pub fn passed(&mut self, class: Class, last: i64) {
        match class {
            Class::Business => self.business = last,
            Class::Telemetry => self.telemetry = last,
        }
    }
}

/// Marks a pushed batch's events up to `upto` as sent.
pub fn mark_sent(
    c: &mut Connection,
    class: Class,
    first: i64,
    upto: i64,
    now_ms: i64,
) -> DbResult<()> {
    c.prepare_cached(
        "UPDATE outbox SET sent_ms = ?1 WHERE class = ?2 AND sent_ms IS NULL AND seq BETWEEN ?3 AND ?4",
    )?
    .execute(params![now_ms, class.as_str(), first, upto])?;
    Ok(())
}

/// The next batch to push: the oldest unsent business events, or when there are none, the oldest
/// unsent telemetry.
pub fn next_batch(conn: &Connection, limit: i64) -> DbResult<Vec<StoreEvent>> {
    next_batch_after(conn, limit, After::default())
}

/// [`next_batch`] among the events after those a push run already has in flight.
pub fn next_batch_after(conn: &Connection, limit: i64, after: After) -> DbResult<Vec<StoreEvent>> {
    for (class, after) in [
        (Class::Business, after.business),
        (Class::Telemetry, after.telemetry),
    ] {
        let mut stmt = conn.prepare_cached(
            "SELECT seq, id, type, payload, created_ms FROM outbox
             WHERE class = ?1 AND sent_ms IS NULL AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt
            .query_map(params![class.as_str(), after, limit], |r| {
                let payload = r.get_ref(3)?.as_str()?;
                Ok(StoreEvent {
                    seq: r.get(0)?,
                    id: r.get(1)?,
                    event_type: r.get(2)?,
                    class: class.as_str().to_string(),
                    payload: proto::raw_payload(payload),
                    at: ts_from_ms(r.get(4)?).to_string(),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        if !rows.is_empty() {
            return Ok(rows);
        }
    }
    Ok(Vec::new())
}

pub fn dropped_total(conn: &Connection) -> DbResult<i64> {
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [DROPPED_KEY],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Deletes unsent telemetry older than `ttl_ms`, or beyond `cap_bytes` of payload or `max_rows`
/// rows (oldest first), and sent events older than a day; returns how many unsent were dropped
/// (also added to the persistent count). Business events are never touched unless sent.
pub fn enforce_telemetry_limits(
    conn: &mut Connection,
    now_ms: i64,
    ttl_ms: i64,
    cap_bytes: i64,
    max_rows: i64,
) -> DbResult<i64> {
    let tx = crate::db::immediate(conn)?;
    let old = tx.execute(
        "DELETE FROM outbox WHERE class = 'telemetry' AND sent_ms IS NULL AND created_ms < ?1",
        [now_ms - ttl_ms],
    )? as i64;
    let over = tx.execute(
        "DELETE FROM outbox WHERE seq IN (
            SELECT seq FROM (
              SELECT seq, sum(length(payload)) OVER w AS bytes, row_number() OVER w AS n
              FROM outbox WHERE class = 'telemetry' AND sent_ms IS NULL
              WINDOW w AS (ORDER BY seq DESC)
            ) WHERE bytes > ?1 OR n > ?2)",
        params![cap_bytes, max_rows],
    )? as i64;
    tx.execute(
        "DELETE FROM outbox WHERE sent_ms IS NOT NULL AND sent_ms < ?1",
        [now_ms - 86_400_000],
    )?;
    let dropped = old + over;
    if dropped > 0 {
        let total = dropped_total(&tx)? + dropped;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![DROPPED_KEY, total.to_string()],
        )?;
    }
    tx.commit()?;
    Ok(dropped)
}
