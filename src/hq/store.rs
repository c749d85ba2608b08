//! The reference HQ's data: registered stores, the log of authored events (the feed), the current
//! catalog state per target (for snapshots), events received from stores, tickets. Plain functions
//! over a connection; the HTTP layer in `hq::server` calls them.

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;
use serde_json::{json, Value};

use crate::catalog::{Applier, HqEvent};
use crate::db::{ts_from_ms, DbResult};
use crate::sync::protocol::{
    FeedEvent, FeedPage, PushAck, PushBatch, Snapshot, Target, HQ_EVENT_TYPES,
};

pub const MIGRATIONS: &[(&str, &str)] = &[("0001_hq", include_str!("migrations/0001_hq.sql"))];

pub fn check_name(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "{what} {s:?} must be 1-64 characters of letters, digits, '-' or '_'"
        ));
    }
    Ok(())
}

/// Registers a store; returns its token (only its hash is kept).
pub fn add_store(
    conn: &Connection,
    id: &str,
    group: &str,
    now_ms: i64,
) -> DbResult<Result<String, String>> {
    if let Err(e) = check_name("store id", id) {
        return Ok(Err(e));
    }
    if !group.is_empty() {
        if let Err(e) = check_name("group", group) {
            return Ok(Err(e));
        }
    }
    let token = crate::auth::generate_secret("sbhq_");
    let n = conn.execute(
        "INSERT OR IGNORE INTO stores (id, grp, token_hash, created_ms) VALUES (?1, ?2, ?3, ?4)",
        params![id, group, crate::auth::hash_secret(&token), now_ms],
    )?;
    if n == 0 {
        return Ok(Err(format!("store {id:?} is already registered")));
    }
    Ok(Ok(token))
}

pub fn set_group(conn: &Connection, id: &str, group: &str) -> DbResult<Result<(), String>> {
    if !group.is_empty() {
        if let Err(e) = check_name("group", group) {
            return Ok(Err(e));
        }
    }
    let n = conn.execute(
        "UPDATE stores SET grp = ?2 WHERE id = ?1",
        params![id, group],
    )?;
    Ok(if n == 1 {
        Ok(())
    } else {
        Err(format!("no store {id:?}"))
    })
}

/// The store a bearer token belongs to: (id, group).
pub fn store_by_token(conn: &Connection, token: &str) -> DbResult<Option<(String, String)>> {
    Ok(conn
        .prepare_cached("SELECT id, grp FROM stores WHERE token_hash = ?1")?
        .query_row([crate::auth::hash_secret(token)], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?)
}

#[derive(Debug, Clone, Serialize)]
pub struct StoreView {
    pub id: String,
    pub group: String,
    pub last_seen: Option<String>,
    pub version: Option<String>,
    pub cursor: Option<i64>,
    pub lag_events: Option<i64>,
    pub lag_seconds: Option<f64>,
    pub outbox_business: Option<i64>,
    pub outbox_telemetry: Option<i64>,
    pub outbox_dropped: Option<i64>,
    /// The latest `telemetry.rollup` payload received.
    pub rollup: Option<Value>,
    pub rollup_at: Option<String>,
    /// Highest store sequence number held.
    pub held: i64,
}

pub fn list_stores(conn: &Connection) -> DbResult<Vec<StoreView>> {
    let mut stmt = conn.prepare(
        "SELECT id, grp, last_seen_ms, version, cursor, lag_events, lag_seconds, outbox_business,
                outbox_telemetry, outbox_dropped, rollup, rollup_ms,
                (SELECT coalesce(max(seq), 0) FROM store_events e WHERE e.store_id = s.id)
         FROM stores s ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        let rollup: Option<String> = r.get(10)?;
        Ok(StoreView {
            id: r.get(0)?,
            group: r.get(1)?,
            last_seen: r
                .get::<_, Option<i64>>(2)?
                .map(|m| ts_from_ms(m).to_string()),
            version: r.get(3)?,
            cursor: r.get(4)?,
            lag_events: r.get(5)?,
            lag_seconds: r.get(6)?,
            outbox_business: r.get(7)?,
            outbox_telemetry: r.get(8)?,
            outbox_dropped: r.get(9)?,
            rollup: rollup.and_then(|s| serde_json::from_str(&s).ok()),
            rollup_at: r
                .get::<_, Option<i64>>(11)?
                .map(|m| ts_from_ms(m).to_string()),
            held: r.get(12)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Validates HQ events with the store's own apply function, against a scratch copy of the store
/// schema that is never committed: what HQ accepts, a store can apply.
pub struct Validator {
    conn: Connection,
}

impl Validator {
    pub fn new() -> DbResult<Validator> {
        // "" = a private temporary database on disk: a 100k-row import does not sit in memory.
        let mut conn = Connection::open("")?;
        crate::db::migrations::migrate(&mut conn, crate::db::migrations::MIGRATIONS.len())?;
        Ok(Validator { conn })
    }

    /// Runs `f` with the store's applier on the scratch schema; everything is rolled back.
    pub fn with<T>(&mut self, f: impl FnOnce(&mut Applier<'_>) -> T) -> DbResult<T> {
        let tx = self.conn.transaction()?;
        let out = {
            let mut applier = Applier::begin(&tx, jiff::tz::TimeZone::UTC, 0)?;
            f(&mut applier)
        };
        tx.rollback()?;
        Ok(out)
    }
}

/// The checks a store makes before applying an HQ event (shared by HQ authoring and the store's
/// feed apply, which quarantines what fails).
pub fn validate_event(applier: &mut Applier<'_>, ev: &HqEvent) -> Result<(), String> {
    match ev.event_type.as_str() {
        t if crate::catalog::CATALOG_EVENT_TYPES.contains(&t) => {
            applier.apply(ev).map(|_| ()).map_err(|e| e.to_string())
        }
        "notice.post" => crate::sync::apply::notice_message(&ev.payload).map(|_| ()),
        "ticket.update" => {
            serde_json::from_value::<crate::tickets::TicketUpdate>(ev.payload.clone())
                .map(|_| ())
                .map_err(|e| format!("ticket.update payload: {e}"))
        }
        "release.assign" => match ev.payload.get("version").and_then(Value::as_str) {
            Some(v) if !v.is_empty() => Ok(()),
            _ => Err("release.assign payload: \"version\" must be a non-empty string".into()),
        },
        other => Err(format!(
            "unknown event type {other:?}; expected one of {}",
            HQ_EVENT_TYPES.join(", ")
        )),
    }
}

/// The snapshot key of a catalog event and whether it leaves the record live.
fn state_key(ev: &HqEvent) -> Option<(String, bool)> {
    let p = &ev.payload;
    let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    Some(match ev.event_type.as_str() {
        "catalog.upsert" => (format!("item:{}", s("sku")), true),
        "catalog.delete" => (format!("item:{}", s("sku")), false),
        "price.set" => (format!("price:{}", s("id")), true),
        "price.cancel" => (format!("price:{}", s("id")), false),
        "promotion.upsert" => (format!("promo:{}", s("id")), true),
        "promotion.cancel" => (format!("promo:{}", s("id")), false),
        _ => return None,
    })
}

/// Appends one validated event to the log for `target`; returns its seq.
pub fn append(tx: &Transaction<'_>, target: &Target, ev: &HqEvent, now_ms: i64) -> DbResult<i64> {
    let id = ev
        .id
        .clone()
        .unwrap_or_else(|| crate::sync::outbox::new_id("hq"));
    let all = matches!(target, Target::All { .. });
    let payload = ev.payload.to_string();
    let seq: i64 = tx
        .prepare_cached(
            "INSERT INTO hq_events (id, type, payload, all_stores, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             RETURNING seq",
        )?
        .query_row(params![id, ev.event_type, payload, all, now_ms], |r| r.get(0))?;
    let targets: Vec<(&str, &str)> = match target {
        Target::All { .. } => vec![("all", "")],
        Target::Groups { groups } => groups.iter().map(|g| ("group", g.as_str())).collect(),
        Target::Stores { stores } => stores.iter().map(|s| ("store", s.as_str())).collect(),
    };
    if !all {
        let mut ins = tx.prepare_cached(
            "INSERT OR IGNORE INTO hq_event_targets (seq, kind, name) VALUES (?1, ?2, ?3)",
        )?;
        for (k, n) in &targets {
            ins.execute(params![seq, k, n])?;
        }
    }
    if let Some((key, live)) = state_key(ev) {
        let mut up = tx.prepare_cached(
            "INSERT INTO hq_state (key, kind, name, seq, type, payload, live) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (key, kind, name) DO UPDATE SET seq = excluded.seq, type = excluded.type,
               payload = excluded.payload, live = excluded.live",
        )?;
        for (k, n) in &targets {
            up.execute(params![key, k, n, seq, ev.event_type, payload, live])?;
        }
    }
    Ok(seq)
}

pub fn check_target(conn: &Connection, target: &Target) -> DbResult<Result<(), String>> {
    match target {
        Target::All { all: true } => Ok(Ok(())),
        Target::All { all: false } => Ok(Err("target {\"all\": false} targets nobody".into())),
        Target::Groups { groups } if groups.is_empty() => Ok(Err("target groups is empty".into())),
        Target::Stores { stores } if stores.is_empty() => Ok(Err("target stores is empty".into())),
        Target::Groups { groups } => {
            for g in groups {
                if let Err(e) = check_name("group", g) {
                    return Ok(Err(e));
                }
            }
            Ok(Ok(()))
        }
        Target::Stores { stores } => {
            for s in stores {
                let known: bool = conn
                    .query_row("SELECT 1 FROM stores WHERE id = ?1", [s], |_| Ok(true))
                    .optional()?
                    .unwrap_or(false);
                if !known {
                    return Ok(Err(format!("target store {s:?} is not registered")));
                }
            }
            Ok(Ok(()))
        }
    }
}

/// Drops events older than the newest `retain` from the log; stores behind get 410.
pub fn prune(conn: &Connection, retain: u64) -> DbResult<()> {
    if retain == 0 {
        return Ok(());
    }
    let head = head(conn)?;
    let upto = head - retain as i64;
    if upto <= pruned_through(conn)? {
        return Ok(());
    }
    conn.execute("DELETE FROM hq_events WHERE seq <= ?1", [upto])?;
    conn.execute("DELETE FROM hq_event_targets WHERE seq <= ?1", [upto])?;
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('pruned_through', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [upto.to_string()],
    )?;
    Ok(())
}

pub fn pruned_through(conn: &Connection) -> DbResult<i64> {
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'pruned_through'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

pub fn head(conn: &Connection) -> DbResult<i64> {
    // sqlite_sequence survives deletes, so the head never goes back after pruning.
    let v: Option<i64> = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'hq_events'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.unwrap_or(0))
}

/// Why a feed request cannot be answered.
pub enum FeedError {
    /// The cursor is older than the log HQ keeps: rebuild from the snapshot.
    Gone { pruned_through: i64 },
}

/// The events for a store after `after`, at most `limit`.
pub fn feed(
    conn: &Connection,
    store: &str,
    group: &str,
    after: i64,
    limit: i64,
) -> DbResult<Result<FeedPage, FeedError>> {
    let head = head(conn)?;
    let pruned = pruned_through(conn)?;
    if after < pruned {
        return Ok(Err(FeedError::Gone {
            pruned_through: pruned,
        }));
    }
    let mut stmt = conn.prepare_cached(
        "SELECT seq, id, type, payload, created_ms FROM hq_events e
         WHERE seq > ?1 AND seq <= ?2 AND (all_stores = 1 OR seq IN (
             SELECT seq FROM hq_event_targets WHERE seq > ?1
               AND ((kind = 'group' AND name = ?3) OR (kind = 'store' AND name = ?4))))
         ORDER BY seq LIMIT ?5",
    )?;
    let events = stmt
        .query_map(params![after, head, group, store, limit], |r| {
            let payload: String = r.get(3)?;
            Ok(FeedEvent {
                seq: r.get(0)?,
                id: r.get(1)?,
                event_type: r.get(2)?,
                payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
                at: Some(ts_from_ms(r.get(4)?).to_string()),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let next = if events.len() as i64 >= limit {
        events.last().map_or(after, |e| e.seq)
    } else {
        head.max(after)
    };
    Ok(Ok(FeedPage { events, next, head }))
}

/// The store's current catalog state as events, and the cursor it corresponds to.
pub fn snapshot(conn: &Connection, store: &str, group: &str) -> DbResult<Snapshot> {
    let cursor = head(conn)?;
    let mut stmt = conn.prepare(
        "SELECT key, type, payload, live, max(seq) FROM hq_state
         WHERE kind = 'all' OR (kind = 'group' AND name = ?1) OR (kind = 'store' AND name = ?2)
         GROUP BY key",
    )?;
    let mut events: Vec<FeedEvent> = stmt
        .query_map(params![group, store], |r| {
            let payload: String = r.get(2)?;
            let live: bool = r.get(3)?;
            let seq: i64 = r.get(4)?;
            Ok(live.then(|| FeedEvent {
                seq,
                id: format!("snapshot-{seq}"),
                event_type: r.get::<_, String>(1).unwrap_or_default(),
                payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
                at: None,
            }))
        })?
        .filter_map(|r| r.transpose())
        .collect::<Result<_, _>>()?;
    events.sort_by_key(|e| e.seq);
    Ok(Snapshot { cursor, events })
}

/// Stores a pushed batch idempotently on (store, seq), in the caller's transaction.
pub fn ingest(
    tx: &Transaction<'_>,
    store: &str,
    batch: &PushBatch,
    now_ms: i64,
) -> DbResult<PushAck> {
    let mut stored = 0;
    let mut duplicates = 0;
    {
        let mut ins = tx.prepare_cached(
            "INSERT OR IGNORE INTO store_events (store_id, seq, id, type, class, payload, at, received_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for ev in &batch.events {
            // Stored as the store sent it (valid JSON: the body parsed).
            let payload = ev.payload.get();
            let n = ins.execute(params![
                store,
                ev.seq,
                ev.id,
                ev.event_type,
                ev.class,
                payload,
                ev.at,
                now_ms
            ])?;
            if n == 0 {
                duplicates += 1;
                continue;
            }
            stored += 1;
            match ev.event_type.as_str() {
                "ticket.opened" => {
                    let p = &ev.payload_value();
                    let id = p.get("ticket_id").and_then(Value::as_str).unwrap_or(&ev.id);
                    let subject = p.get("subject").and_then(Value::as_str).unwrap_or("");
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO tickets (id, store_id, subject, payload, opened_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![id, store, subject, payload, now_ms])?;
                }
                "telemetry.rollup" => {
                    tx.prepare_cached(
                        "UPDATE stores SET rollup = ?2, rollup_ms = ?3 WHERE id = ?1
                           AND (rollup_ms IS NULL OR rollup_ms <= ?3)",
                    )?
                    .execute(params![store, payload, now_ms])?;
                }
                _ => {}
            }
        }
    }
    let r = &batch.report;
    tx.prepare_cached(
        "UPDATE stores SET last_seen_ms = ?2, version = ?3, cursor = ?4, lag_events = ?5, lag_seconds = ?6,
           outbox_business = ?7, outbox_telemetry = ?8, outbox_dropped = ?9 WHERE id = ?1",
    )?
    .execute(params![
        store,
        now_ms,
        r.version,
        r.cursor,
        r.lag_events,
        r.lag_seconds,
        r.outbox_business,
        r.outbox_telemetry,
        r.outbox_dropped
    ])?;
    let held: i64 = tx.query_row(
        "SELECT coalesce(max(seq), 0) FROM store_events WHERE store_id = ?1",
        [store],
        |r| r.get(0),
    )?;
    let acked = batch.events.iter().map(|e| e.seq).max().unwrap_or(held);
    Ok(PushAck {
        acked,
        held,
        stored,
        duplicates,
    })
}

/// Marks a store as seen (feed requests).
pub fn touch(conn: &Connection, store: &str, now_ms: i64) -> DbResult<()> {
    conn.prepare_cached("UPDATE stores SET last_seen_ms = ?2 WHERE id = ?1")?
        .execute(params![store, now_ms])?;
    Ok(())
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct EventQuery {
    pub store: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// RFC 3339: received at or after.
    pub since: Option<String>,
    /// Only events with an arrival number above this (paging).
    pub after: Option<i64>,
    pub limit: Option<i64>,
}

/// Received store events in arrival order.
pub fn store_events(
    conn: &Connection,
    q: &EventQuery,
    since_ms: Option<i64>,
) -> DbResult<Vec<Value>> {
    let limit = q.limit.unwrap_or(1000).clamp(1, 100_000);
    let mut stmt = conn.prepare_cached(
        "SELECT rid, store_id, seq, id, type, class, payload, at, received_ms FROM store_events
         WHERE rid > ?1 AND (?2 IS NULL OR store_id = ?2) AND (?3 IS NULL OR type = ?3)
           AND (?4 IS NULL OR received_ms >= ?4)
         ORDER BY rid LIMIT ?5",
    )?;
    let rows = stmt.query_map(
        params![q.after.unwrap_or(0), q.store, q.event_type, since_ms, limit],
        |r| {
            let payload: String = r.get(6)?;
            Ok(json!({
                "rid": r.get::<_, i64>(0)?,
                "store": r.get::<_, String>(1)?,
                "seq": r.get::<_, i64>(2)?,
                "id": r.get::<_, String>(3)?,
                "type": r.get::<_, String>(4)?,
                "class": r.get::<_, String>(5)?,
                "payload": serde_json::from_str::<Value>(&payload).unwrap_or(Value::Null),
                "at": r.get::<_, String>(7)?,
                "received_at": ts_from_ms(r.get(8)?).to_string(),
            }))
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn tickets(conn: &Connection) -> DbResult<Vec<Value>> {
    let mut stmt = conn.prepare(
        "SELECT id, store_id, subject, payload, status, opened_ms FROM tickets ORDER BY opened_ms DESC LIMIT 500",
    )?;
    let mut out: Vec<Value> = stmt
        .query_map([], |r| {
            let payload: String = r.get(3)?;
            Ok(json!({
                "id": r.get::<_, String>(0)?,
                "store": r.get::<_, String>(1)?,
                "subject": r.get::<_, String>(2)?,
                "opened": serde_json::from_str::<Value>(&payload).unwrap_or(Value::Null),
                "status": r.get::<_, String>(4)?,
                "received_at": ts_from_ms(r.get(5)?).to_string(),
            }))
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare(
        "SELECT event_id, author, message, status, at_ms FROM ticket_replies WHERE ticket_id = ?1 ORDER BY id",
    )?;
    for t in &mut out {
        let id = t["id"].as_str().unwrap_or("").to_string();
        let replies: Vec<Value> = stmt
            .query_map([&id], |r| {
                Ok(json!({
                    "event_id": r.get::<_, String>(0)?,
                    "author": r.get::<_, String>(1)?,
                    "message": r.get::<_, String>(2)?,
                    "status": r.get::<_, Option<String>>(3)?,
                    "at": ts_from_ms(r.get(4)?).to_string(),
                }))
            })?
            .collect::<Result<_, _>>()?;
        t["replies"] = Value::Array(replies);
    }
    Ok(out)
}

/// The store a ticket came from.
pub fn ticket_store(conn: &Connection, id: &str) -> DbResult<Option<String>> {
    Ok(conn
        .query_row("SELECT store_id FROM tickets WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?)
}

#[allow(clippy::too_many_arguments)]
pub fn record_reply(
    tx: &Transaction<'_>,
    ticket: &str,
    event_id: &str,
    author: &str,
    message: &str,
    status: Option<&str>,
    now_ms: i64,
) -> DbResult<()> {
    tx.execute(
        "INSERT INTO ticket_replies (ticket_id, event_id, author, message, status, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![ticket, event_id, author, message, status, now_ms],
    )?;
    tx.execute(
        "UPDATE tickets SET status = coalesce(?2, 'answered') WHERE id = ?1",
        params![ticket, status],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::protocol::{StoreEvent, StoreReport};

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        crate::db::migrations::migrate_list(&mut c, MIGRATIONS, MIGRATIONS.len()).unwrap();
        c
    }

    fn ev(t: &str, payload: Value) -> HqEvent {
        HqEvent {
            id: None,
            event_type: t.into(),
            payload,
        }
    }

    fn author(c: &mut Connection, target: Target, events: &[HqEvent]) {
        let tx = crate::db::immediate(c).unwrap();
        for e in events {
            append(&tx, &target, e, 0).unwrap();
        }
        tx.commit().unwrap();
    }

    #[test]
    fn feed_follows_targets_snapshot_keeps_live_state_and_retention_answers_gone() {
        let mut c = db();
        add_store(&c, "s1", "north", 0).unwrap().unwrap();
        let item = |sku: &str| {
            ev(
                "catalog.upsert",
                json!({"sku": sku, "name": "X", "unit": "each"}),
            )
        };
        author(&mut c, Target::All { all: true }, &[item("1"), item("2")]);
        author(
            &mut c,
            Target::Groups {
                groups: vec!["south".into()],
            },
            &[item("3")],
        );
        author(
            &mut c,
            Target::Stores {
                stores: vec!["s1".into()],
            },
            &[item("4")],
        );
        author(
            &mut c,
            Target::All { all: true },
            &[ev("catalog.delete", json!({"sku": "1"}))],
        );
        let Ok(page) = feed(&c, "s1", "north", 0, 100).unwrap() else {
            panic!()
        };
        let seqs: Vec<i64> = page.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 4, 5]);
        assert_eq!((page.next, page.head), (5, 5));
        let Ok(page) = feed(&c, "s1", "north", 0, 2).unwrap() else {
            panic!()
        };
        assert_eq!(page.next, 2, "a full page ends at its last event");
        let snap = snapshot(&c, "s1", "north").unwrap();
        let skus: Vec<&str> = snap
            .events
            .iter()
            .map(|e| e.payload["sku"].as_str().unwrap())
            .collect();
        assert_eq!((skus, snap.cursor), (vec!["2", "4"], 5));
        prune(&c, 2).unwrap();
        assert!(matches!(
            feed(&c, "s1", "north", 2, 10).unwrap(),
            Err(FeedError::Gone { .. })
        ));
        assert!(feed(&c, "s1", "north", 3, 10).unwrap().is_ok());
        assert_eq!(
            snapshot(&c, "s1", "north").unwrap().events.len(),
            2,
            "snapshot survives pruning"
        );
    }

    #[test]
    fn ingest_is_idempotent_on_store_and_seq() {
        let mut c = db();
        add_store(&c, "s1", "", 0).unwrap().unwrap();
        let batch = PushBatch {
            report: StoreReport::default(),
            events: (1..=3)
                .map(|seq| StoreEvent {
                    seq,
                    id: format!("e{seq}"),
                    event_type: "checkout.completed".into(),
                    class: "business".into(),
                    payload: crate::sync::protocol::raw_payload("{}"),
                    at: "2026-01-01T00:00:00Z".into(),
                })
                .collect(),
        };
        for (stored, dup) in [(3, 0), (0, 3)] {
            let tx = crate::db::immediate(&mut c).unwrap();
            let ack = ingest(&tx, "s1", &batch, 0).unwrap();
            tx.commit().unwrap();
            assert_eq!(
                (ack.acked, ack.held, ack.stored, ack.duplicates),
                (3, 3, stored, dup)
            );
        }
    }
}
