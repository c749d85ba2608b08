//! The device ingest writer: one task that takes device messages and connection signals off the
//! broker guard's queue, in order, and commits them to SQLite in batches (group commit: while one
//! batch commits, the next accumulates). Business events are acknowledged to the device on
//! `devices/{id}/events/ack` only after their batch committed; a resent event id is stored once.
//!
//! Nothing taken off the queue is dropped: a batch that cannot be written (disk full, I/O error)
//! is kept and written again until it succeeds. Meanwhile the broker's connections read nothing
//! more (`BrokerShared::ingest_stalled`), so devices get no further acknowledgement, and the
//! failure is shown in `/readyz`, `/metrics` and the UI until a write succeeds again. A batch that
//! fails for a reason of its own data (a constraint) is written again item by item, each in a
//! savepoint, and an item that still fails is dead-lettered with the reason.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::json;

use super::payloads::{self, Parsed};
use crate::broker::guard::{BrokerShared, Inbound, IngestItem, Signal};
use crate::broker::Publisher;
use crate::db::{Db, DbError, DbResult};
use crate::ops::{audit, metrics::Metrics};
use crate::outbox::{self, Class};

/// Most items written in one transaction.
pub const MAX_BATCH: usize = 4096;

/// Answers a device's price request (`devices/{id}/price/request`) from the local catalog.
pub type PriceResponder = Arc<dyn Fn(&Connection, &str, i64) -> serde_json::Value + Send + Sync>;

pub struct IngestCtx {
    pub metrics: Arc<Metrics>,
    pub publisher: Publisher,
    pub dead_letter_keep: i64,
    pub price: PriceResponder,
    /// The broker's side of the queue: its byte count (released as the writer takes messages),
    /// its room signal and its stalled flag (back-pressure).
    pub broker: Arc<BrokerShared>,
    /// Where a failing write is shown (readiness, UI).
    pub health: Arc<crate::ops::health::Health>,
    pub clock: crate::clock::SharedClock,
    /// Told the ids of devices whose state changed, after their batch committed (live UI).
    pub changes: super::live::DeviceChanges,
}

#[derive(Default)]
struct Outcome {
    publishes: Vec<(String, String)>,
    acked: u64,
    duplicates: u64,
    telemetry: u64,
    invalid: Vec<&'static str>,
    /// Devices whose presence, status or alerts changed in this batch.
    changed: std::collections::BTreeSet<String>,
}

#[derive(Default)]
struct Agg {
    count: i64,
    sum: f64,
    min: f64,
    max: f64,
}

/// Longest pause between two attempts at a batch that could not be written.
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs until every sender of `rx` is gone.
pub async fn run(rx: flume::Receiver<IngestItem>, db: Db, ctx: Arc<IngestCtx>) {
    use std::sync::atomic::Ordering;
    // Flush markers are answered once everything signalled before them is written.
    let mut flushes = Vec::new();
    loop {
        // Signals held while the queue was full are written even if nothing else comes.
        let first = if ctx.broker.held_signals() > 0 {
            rx.try_recv().ok()
        } else {
            match rx.recv_async().await {
                Ok(item) => Some(item),
                Err(_) => break,
            }
        };
        let mut batch = Vec::with_capacity(64);
        let mut take = |next: IngestItem| match next {
            IngestItem::Flush(tx) => flushes.push(tx),
            other => {
                ctx.broker
                    .ingest_bytes
                    .fetch_sub(other.queued_bytes(), Ordering::Relaxed);
                batch.push(other)
            }
        };
        if let Some(item) = first {
            take(item);
        }
        let complete = ctx
            .broker
            .drain_queue_and_held(&rx, MAX_BATCH.saturating_sub(1), &mut take);
        ctx.metrics.ingest_queue_depth.set(rx.len() as i64);
        // Room again for the connections that wait (unless writes are failing).
        ctx.broker.ingest_room.notify_waiters();
        let mut careful = false;
        let mut pause = std::time::Duration::from_millis(50);
        loop {
            let c = ctx.clone();
            let (back, result) = db
                .write(move |conn| {
                    let r = write_batch(conn, &batch, &c, careful);
                    Ok((batch, r))
                })
                .await
                .expect("the closure returns Ok");
            batch = back;
            match result {
                Ok(out) => {
                    finish(&ctx, out);
                    if let Some(f) = ctx.health.ingest_recovered() {
                        tracing::warn!(since = %f.since, failed_batches = f.attempts, "device ingest: writing again; devices are acknowledged again");
                        ctx.metrics.ingest_write_stalled.set(0);
                        ctx.broker.ingest_stalled.store(false, Ordering::Relaxed);
                        ctx.broker.ingest_room.notify_waiters();
                    }
                    break;
                }
                Err(e) if !careful && !is_transient(&e) => {
                    tracing::warn!(error = %e, items = batch.len(), "device ingest: batch refused; writing it item by item");
                    careful = true;
                }
                Err(e) => {
                    ctx.metrics.ingest_write_failures.inc();
                    ctx.broker.ingest_stalled.store(true, Ordering::Relaxed);
                    ctx.metrics.ingest_write_stalled.set(1);
                    let code = if is_disk_full(&e) {
                        "disk_full"
                    } else {
                        "write_error"
                    };
                    if ctx
                        .health
                        .ingest_failed(ctx.clock.now().to_string(), code, e.to_string())
                    {
                        // Logged once per outage; the batch is kept and written again.
                        tracing::error!(error = %e, code, items = batch.len(), "device ingest: cannot write; devices are not acknowledged until it can (retrying)");
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_MAX);
                }
            }
        }
        if complete {
            for f in flushes.drain(..) {
                let _ = f.send(());
            }
        }
    }
    for f in flushes {
        let _ = f.send(());
    }
}

/// Publishes a written batch's replies and counts it.
fn finish(ctx: &IngestCtx, out: Outcome) {
    for (topic, payload) in out.publishes {
        ctx.publisher.publish(topic, payload);
    }
    ctx.metrics.events_acked.inc_by(out.acked);
    ctx.metrics.events_duplicate.inc_by(out.duplicates);
    ctx.metrics.telemetry_stored.inc_by(out.telemetry);
    for code in out.invalid {
        ctx.metrics.invalid(code);
    }
    for device in &out.changed {
        ctx.changes.notify(device);
    }
}

fn sqlite_code(e: &DbError) -> Option<rusqlite::ErrorCode> {
    match e {
        DbError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => Some(f.code),
        _ => None,
    }
}

fn is_disk_full(e: &DbError) -> bool {
    sqlite_code(e) == Some(rusqlite::ErrorCode::DiskFull)
}

/// Whether a failed batch may succeed as it is when tried again (the disk, the file or a lock),
/// as opposed to a refusal caused by one of its items (a constraint, a value SQLite rejects).
pub fn is_transient(e: &DbError) -> bool {
    use rusqlite::ErrorCode::*;
    !matches!(
        sqlite_code(e),
        None | Some(ConstraintViolation | TypeMismatch | TooBig | ApiMisuse | ParameterOutOfRange)
    )
}

fn dead_letter(
    tx: &Connection,
    at_ms: i64,
    device: &str,
    topic: &str,
    reason: &str,
    payload: &[u8],
    size: usize,
) -> DbResult<()> {
    let keep = &payload[..payload
        .len()
        .min(crate::broker::guard::DEAD_LETTER_KEEP_BYTES)];
    tx.prepare_cached(
        "INSERT INTO dead_letters (received_ms, source, device_id, topic, reason, payload, payload_size)
         VALUES (?1, 'mqtt', ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![at_ms, device, topic, reason, keep, size as i64])?;
    Ok(())
}

/// Writes one batch in one transaction. `careful`: each item in a savepoint of its own, and an item
/// that fails is rolled back and dead-lettered with the reason instead of failing the batch.
fn write_batch(
    conn: &mut Connection,
    batch: &[IngestItem],
    ctx: &IngestCtx,
    careful: bool,
) -> DbResult<Outcome> {
    let mut tx = crate::db::immediate(conn)?;
    let mut out = Outcome::default();
    let mut minutes: HashMap<(Arc<str>, String, i64), Agg> = HashMap::new();
    let mut last_seen: HashMap<Arc<str>, i64> = HashMap::new();
    let mut dead = 0usize;
    for item in batch {
        if !careful {
            write_item(
                &tx,
                item,
                ctx,
                &mut out,
                &mut minutes,
                &mut last_seen,
                &mut dead,
            )?;
            continue;
        }
        let sp = tx.savepoint()?;
        match write_item(
            &sp,
            item,
            ctx,
            &mut out,
            &mut minutes,
            &mut last_seen,
            &mut dead,
        ) {
            Ok(()) => sp.commit()?,
            Err(e) if is_transient(&e) => return Err(e),
            Err(e) => {
                drop(sp); // rolls the item back
                let (device, topic) = origin(item);
                tracing::error!(device, topic, error = %e, "device ingest: item could not be stored; dead-lettered");
                let payload = match item {
                    IngestItem::Message(m) => &m.payload[..],
                    _ => b"",
                };
                dead_letter(
                    &tx,
                    ctx.clock.now().as_millisecond(),
                    device,
                    &topic,
                    &format!("could not be stored: {e}"),
                    payload,
                    payload.len(),
                )?;
                dead += 1;
                out.invalid.push("not_stored");
            }
        }
    }
    finish_batch(&tx, minutes, last_seen, dead, ctx)?;
    tx.commit()?;
    Ok(out)
}

/// Writes one queued item (its telemetry counted into `minutes`, its device into `last_seen`).
fn write_item(
    tx: &Connection,
    item: &IngestItem,
    ctx: &IngestCtx,
    out: &mut Outcome,
    minutes: &mut HashMap<(Arc<str>, String, i64), Agg>,
    last_seen: &mut HashMap<Arc<str>, i64>,
    dead: &mut usize,
) -> DbResult<()> {
    {
        match item {
            IngestItem::Message(m) => {
                let seen = last_seen.entry(m.device.clone()).or_insert(m.received_ms);
                *seen = (*seen).max(m.received_ms);
                // Events come parsed from the connection; everything else is parsed here.
                let parsed_here;
                let parsed = match &m.parsed {
                    Some(p) => p,
                    None => {
                        parsed_here = payloads::parse(m.kind, &m.payload, m.received_ms);
                        &parsed_here
                    }
                };
                match parsed {
                    Ok(parsed) => apply(tx, m, parsed, ctx, out, minutes)?,
                    Err(invalid) => {
                        let topic = String::from_utf8_lossy(&m.topic);
                        dead_letter(
                            tx,
                            m.received_ms,
                            &m.device,
                            &topic,
                            &invalid.reason,
                            &m.payload,
                            m.payload.len(),
                        )?;
                        *dead += 1;
                        out.invalid.push(invalid.code);
                        if let Some(id) = &invalid.event_id {
                            out.publishes.push((
                                format!("devices/{}/events/ack", m.device),
                                json!({"id": id, "status": "rejected", "reason": invalid.reason})
                                    .to_string(),
                            ));
                        }
                    }
                }
            }
            IngestItem::Rejected {
                device,
                topic,
                reason,
                payload,
                size,
                received_ms,
            } => {
                dead_letter(tx, *received_ms, device, topic, reason, payload, *size)?;
                *dead += 1;
                out.invalid.push(if reason.starts_with("payload of") {
                    "oversize"
                } else {
                    "unknown_topic"
                });
            }
            IngestItem::Signal(signal) => apply_signal(tx, signal, out, dead)?,
            IngestItem::Flush(_) => {} // answered by `run`
        }
    }
    Ok(())
}

/// The batch's minute rollups, last-seen times and dead-letter trim.
fn finish_batch(
    tx: &Connection,
    minutes: HashMap<(Arc<str>, String, i64), Agg>,
    last_seen: HashMap<Arc<str>, i64>,
    dead: usize,
    ctx: &IngestCtx,
) -> DbResult<()> {
    {
        let mut up = tx.prepare_cached(
            "INSERT INTO telemetry_minute (device_id, metric, minute, count, sum, min, max)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (device_id, metric, minute) DO UPDATE SET
               count = count + excluded.count, sum = sum + excluded.sum,
               min = min(min, excluded.min), max = max(max, excluded.max)",
        )?;
        for ((device, metric, minute), a) in minutes {
            up.execute(params![
                &*device, metric, minute, a.count, a.sum, a.min, a.max
            ])?;
        }
        let mut seen = tx.prepare_cached(
            "UPDATE devices SET last_seen_ms = max(coalesce(last_seen_ms, 0), ?2) WHERE id = ?1",
        )?;
        for (device, at) in last_seen {
            seen.execute(params![&*device, at])?;
        }
    }
    if dead > 0 {
        tx.execute(
            "DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - ?1",
            [ctx.dead_letter_keep],
        )?;
    }
    Ok(())
}

fn apply(
    tx: &Connection,
    m: &Inbound,
    parsed: &Parsed,
    ctx: &IngestCtx,
    out: &mut Outcome,
    minutes: &mut HashMap<(Arc<str>, String, i64), Agg>,
) -> DbResult<()> {
    let device = &*m.device;
    match parsed {
        Parsed::Telemetry {
            ts_ms,
            metrics,
            raw,
        } => {
            tx.prepare_cached(
                "INSERT INTO telemetry (device_id, ts_ms, metrics) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![device, ts_ms, raw])?;
            let minute = ts_ms.div_euclid(60_000) * 60_000;
            for (name, v) in metrics {
                let a = minutes
                    .entry((m.device.clone(), name.clone(), minute))
                    .or_insert(Agg {
                        count: 0,
                        sum: 0.0,
                        min: f64::INFINITY,
                        max: f64::NEG_INFINITY,
                    });
                a.count += 1;
                a.sum += v;
                a.min = a.min.min(*v);
                a.max = a.max.max(*v);
            }
            out.telemetry += 1;
        }
        Parsed::Event {
            id,
            event_type,
            raw,
        } => {
            let stored = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO device_events (device_id, event_id, type, payload, received_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![device, id, event_type, raw, m.received_ms])?
                == 1;
            if stored {
                if event_type == "checkout.completed" {
                    let payload = format!(r#"{{"device":{},"event":{raw}}}"#, json!(device));
                    outbox::enqueue(
                        tx,
                        &format!("evt:{device}:{id}"),
                        crate::proto::StoreEventType::CheckoutCompleted,
                        Class::Business,
                        &payload,
                        m.received_ms,
                    )?;
                }
                out.acked += 1;
            } else {
                out.duplicates += 1;
            }
            // The same JSON as json!({"id", "status"}), without building a map per event.
            let id_json = serde_json::to_string(id).unwrap_or_default();
            let status = if stored { "stored" } else { "duplicate" };
            out.publishes.push((
                format!("devices/{device}/events/ack"),
                format!(r#"{{"id":{id_json},"status":"{status}"}}"#),
            ));
        }
        Parsed::Status {
            online,
            firmware,
            raw,
        } => {
            let was: Option<i64> = tx
                .query_row("SELECT online FROM devices WHERE id = ?1", [device], |r| {
                    r.get(0)
                })
                .optional()?;
            tx.prepare_cached(
                "UPDATE devices SET online = ?2, firmware = coalesce(?3, firmware), status_json = ?4,
                   offline_reason = CASE WHEN ?2 THEN NULL ELSE 'device reported offline' END
                 WHERE id = ?1",
            )?
            .execute(params![device, online, firmware, raw])?;
            if was.is_some() {
                out.changed.insert(device.to_string());
            }
            if was.is_some_and(|w| (w != 0) != *online) {
                status_event(
                    tx,
                    device,
                    *online,
                    if *online {
                        None
                    } else {
                        Some("device reported offline")
                    },
                    m.received_ms,
                )?;
            }
        }
        Parsed::Alert {
            code,
            severity,
            message,
            cleared,
        } => {
            let open: Option<i64> = tx
                .query_row(
                    "SELECT id FROM alerts WHERE device_id = ?1 AND code = ?2 AND cleared_ms IS NULL",
                    params![device, code],
                    |r| r.get(0),
                )
                .optional()?;
            let changed = match (cleared, open) {
                (true, Some(id)) => {
                    tx.execute(
                        "UPDATE alerts SET cleared_ms = ?2 WHERE id = ?1",
                        params![id, m.received_ms],
                    )?;
                    true
                }
                (true, None) => false,
                (false, Some(id)) => {
                    tx.execute(
                        "UPDATE alerts SET severity = ?2, message = ?3 WHERE id = ?1",
                        params![id, severity, message],
                    )?;
                    false
                }
                (false, None) => {
                    tx.execute(
                        "INSERT INTO alerts (device_id, code, severity, message, raised_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![device, code, severity, message, m.received_ms],
                    )?;
                    true
                }
            };
            if changed {
                out.changed.insert(device.to_string());
                let payload = json!({
                    "device": device, "code": code, "severity": severity, "message": message,
                    "state": if *cleared { "cleared" } else { "raised" },
                    "at": crate::db::ts_from_ms(m.received_ms).to_string(),
                });
                outbox::enqueue(
                    tx,
                    &outbox::new_id("alert"),
                    crate::proto::StoreEventType::DeviceAlert,
                    Class::Business,
                    &payload.to_string(),
                    m.received_ms,
                )?;
            }
        }
        Parsed::CommandAck { id, ok, message } => {
            let n = tx
                .prepare_cached(
                    "UPDATE commands SET acked_ms = ?3, ok = ?4, result = ?5
                     WHERE id = ?1 AND device_id = ?2 AND acked_ms IS NULL",
                )?
                .execute(params![id, device, m.received_ms, ok, message])?;
            if n > 0 {
                out.changed.insert(device.to_string());
            }
            if n == 0 {
                let topic = String::from_utf8_lossy(&m.topic);
                dead_letter(
                    tx,
                    m.received_ms,
                    device,
                    &topic,
                    &format!("ack for unknown or already acknowledged command {id:?}"),
                    &m.payload,
                    m.payload.len(),
                )?;
                out.invalid.push("unknown_command");
            }
        }
        Parsed::PriceRequest { req, sku } => {
            let mut reply = (ctx.price)(tx, sku, m.received_ms);
            if let Some(obj) = reply.as_object_mut() {
                obj.insert("req".into(), json!(req));
            }
            out.publishes
                .push((format!("devices/{device}/price/reply"), reply.to_string()));
        }
    }
    Ok(())
}

fn status_event(
    tx: &Connection,
    device: &str,
    online: bool,
    reason: Option<&str>,
    at_ms: i64,
) -> DbResult<()> {
    let payload = json!({
        "device": device, "online": online, "reason": reason,
        "at": crate::db::ts_from_ms(at_ms).to_string(),
    });
    outbox::enqueue(
        tx,
        &outbox::new_id("status"),
        crate::proto::StoreEventType::DeviceStatus,
        Class::Business,
        &payload.to_string(),
        at_ms,
    )?;
    Ok(())
}

fn set_online(
    tx: &Connection,
    device: &str,
    online: bool,
    reason: Option<&str>,
    at_ms: i64,
) -> DbResult<bool> {
    let was: Option<i64> = tx
        .query_row("SELECT online FROM devices WHERE id = ?1", [device], |r| {
            r.get(0)
        })
        .optional()?;
    let Some(was) = was else { return Ok(false) };
    tx.execute(
        "UPDATE devices SET online = ?2, offline_reason = ?3, last_seen_ms = max(coalesce(last_seen_ms, 0), ?4) WHERE id = ?1",
        params![device, online, reason, at_ms],
    )?;
    let changed = (was != 0) != online;
    if changed {
        status_event(tx, device, online, reason, at_ms)?;
    }
    Ok(changed)
}

/// The device and topic an item is about, for a dead letter.
fn origin(item: &IngestItem) -> (&str, String) {
    match item {
        IngestItem::Message(m) => (&m.device, String::from_utf8_lossy(&m.topic).into_owned()),
        IngestItem::Rejected { device, topic, .. } => (device, topic.clone()),
        IngestItem::Signal(s) => match s {
            Signal::Connected { device, .. }
            | Signal::Disconnected { device, .. }
            | Signal::Silent { device, .. }
            | Signal::Resumed { device, .. } => (device, "(connection signal)".into()),
            Signal::Denied { device, topic, .. } => (device, topic.clone()),
        },
        IngestItem::Flush(_) => ("", String::new()),
    }
}

fn apply_signal(
    tx: &Connection,
    signal: &Signal,
    out: &mut Outcome,
    dead: &mut usize,
) -> DbResult<()> {
    match signal {
        Signal::Connected { device, at_ms, .. } => {
            if set_online(tx, device, true, None, *at_ms)? {
                out.changed.insert(device.to_string());
            }
            // Commands sent while the device was away (last hour) are sent again.
            let mut stmt = tx.prepare_cached(
                "SELECT id, name, args FROM commands
                 WHERE device_id = ?1 AND acked_ms IS NULL AND sent_ms > ?2 ORDER BY sent_ms",
            )?;
            let rows = stmt.query_map(params![&**device, at_ms - 3_600_000], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            for row in rows {
                let (id, name, args) = row?;
                let args: serde_json::Value = serde_json::from_str(&args).unwrap_or(json!({}));
                out.publishes.push((
                    format!("devices/{device}/commands"),
                    json!({"id": id, "name": name, "args": args}).to_string(),
                ));
            }
        }
        Signal::Disconnected {
            device,
            clean,
            will,
            at_ms,
            ..
        } => {
            let reason = if *clean {
                "disconnected"
            } else {
                "connection lost"
            };
            if set_online(tx, device, false, Some(reason), *at_ms)? {
                out.changed.insert(device.to_string());
            }
            if let Some(will) = will {
                if let Ok(Parsed::Status { raw, .. }) =
                    payloads::parse(crate::broker::acl::TopicKind::Status, will, *at_ms)
                {
                    tx.execute(
                        "UPDATE devices SET status_json = ?2 WHERE id = ?1",
                        params![&**device, raw],
                    )?;
                }
            }
        }
        Signal::Silent {
            device,
            after_s,
            at_ms,
            ..
        } => {
            let reason = format!("no message for {after_s} s (twice the keepalive)");
            if set_online(tx, device, false, Some(&reason), *at_ms)? {
                out.changed.insert(device.to_string());
            }
        }
        Signal::Resumed { device, at_ms, .. } => {
            if !device.is_empty() && set_online(tx, device, true, None, *at_ms)? {
                out.changed.insert(device.to_string());
            }
        }
        Signal::Denied {
            device,
            action,
            topic,
            reason,
            at_ms,
        } => {
            dead_letter(
                tx,
                *at_ms,
                device,
                topic,
                &format!("not authorized ({action}): {reason}"),
                b"",
                0,
            )?;
            *dead += 1;
            out.invalid.push("not_authorized");
            audit::record(
                tx,
                *at_ms,
                &format!("device:{device}"),
                "mqtt.denied",
                topic,
                reason,
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::acl::TopicKind;
    use bytes::Bytes;

    fn telemetry(device: &str, n: i64) -> IngestItem {
        IngestItem::Message(Inbound::new(
            Arc::from(device),
            TopicKind::Telemetry,
            Bytes::from(format!("devices/{device}/telemetry")),
            Bytes::from(format!(r#"{{"metrics":{{"n":{n}}}}}"#)),
            1_000 + n,
        ))
    }

    /// A batch that SQLite refuses because of one item is written again item by item: the other
    /// items are stored, the refused one is dead-lettered with the reason, nothing is retried forever.
    #[tokio::test]
    async fn an_item_refused_by_sqlite_is_dead_lettered_and_the_rest_of_its_batch_stored() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db")).unwrap();
        db.write(|c| {
            c.execute_batch(
                "CREATE TRIGGER poison BEFORE INSERT ON telemetry WHEN NEW.device_id = 'poison'
                 BEGIN SELECT RAISE(ABORT, 'poisoned row'); END;",
            )?;
            Ok(())
        })
        .await
        .unwrap();
        let metrics = Arc::new(Metrics::new());
        let (tx, rx) = flume::unbounded();
        let broker = BrokerShared::new(
            metrics.clone(),
            crate::clock::system(),
            4096,
            tx.clone(),
            100,
            1 << 20,
        );
        let ctx = Arc::new(IngestCtx {
            metrics: metrics.clone(),
            publisher: crate::broker::Publisher::channel().0,
            dead_letter_keep: 100,
            price: Arc::new(|_, _, _| serde_json::Value::Null),
            broker: broker.clone(),
            health: Arc::default(),
            clock: crate::clock::system(),
            changes: Default::default(),
        });
        let writer = tokio::spawn(run(rx, db.clone(), ctx.clone()));
        for item in [telemetry("a", 1), telemetry("poison", 2), telemetry("b", 3)] {
            tx.send(item).unwrap();
        }
        tokio::time::timeout(std::time::Duration::from_secs(10), broker.flush())
            .await
            .expect("flushed")
            .unwrap();
        let (rows, dead): (i64, String) = db
            .read(|c| {
                Ok(c.query_row(
                    "SELECT (SELECT count(*) FROM telemetry),
                            (SELECT group_concat(device_id || ': ' || reason) FROM dead_letters)",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?)
            })
            .await
            .unwrap();
        assert_eq!(rows, 2);
        assert!(
            dead.starts_with("poison: could not be stored:") && dead.contains("poisoned row"),
            "{dead}"
        );
        assert!(ctx.health.ingest_failure().is_none(), "not a write failure");
        writer.abort();
    }

    /// While the writer cannot take more (its queue full: here it is not running yet, as in a long
    /// stall), connection signals are held coalesced, not queued: 20 000 connects and disconnects
    /// of three devices take three entries and 1 000 refused client ids at most
    /// `MAX_HELD_DENIED`. Once the writer runs, the messages queued before are written, then each
    /// device's latest state; a flush queued meanwhile is answered only after the held signals.
    #[tokio::test]
    async fn signals_held_during_a_stall_are_bounded_and_coalesced_to_the_latest_per_device() {
        use crate::broker::guard::MAX_HELD_DENIED;
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db")).unwrap();
        db.write(|c| {
            for d in ["a", "b", "c"] {
                c.execute(
                    "INSERT INTO devices (id, secret_hash, created_ms) VALUES (?1, 'x', 0)",
                    [d],
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();
        let metrics = Arc::new(Metrics::new());
        let (tx, rx) = flume::unbounded();
        let cap = 10;
        let broker = BrokerShared::new(
            metrics.clone(),
            crate::clock::system(),
            4096,
            tx.clone(),
            cap,
            1 << 20,
        );
        for n in 0..cap as i64 {
            let item = telemetry("a", n);
            broker
                .ingest_bytes
                .fetch_add(item.queued_bytes(), std::sync::atomic::Ordering::Relaxed);
            tx.send(item).unwrap();
        }
        let dev = |d: &str| Arc::<str>::from(d);
        for i in 0..10_000 {
            for d in ["a", "b", "c"] {
                broker.signal(Signal::Connected {
                    device: dev(d),
                    conn: i,
                    keepalive_s: 30,
                    protocol: 4,
                    at_ms: 2_000 + i as i64,
                });
                broker.signal(Signal::Disconnected {
                    device: dev(d),
                    conn: i,
                    clean: d == "b",
                    will: None,
                    at_ms: 2_000 + i as i64,
                });
            }
        }
        broker.signal(Signal::Connected {
            device: dev("a"),
            conn: 10_000,
            keepalive_s: 30,
            protocol: 4,
            at_ms: 20_000,
        });
        broker.signal(Signal::Silent {
            device: dev("c"),
            conn: 9_999,
            after_s: 60,
            at_ms: 20_000,
        });
        let denied = |id: String| Signal::Denied {
            device: Arc::from(id),
            action: "will",
            topic: "devices/other/status".into(),
            reason: "foreign topic".into(),
            at_ms: 20_000,
        };
        for _ in 0..5 {
            broker.signal(denied("repeat".into()));
        }
        for i in 0..1_000 {
            broker.signal(denied(format!("id{i}")));
        }
        assert_eq!(rx.len(), cap, "no signal was queued past the cap");
        assert_eq!(broker.held_signals(), 3 + MAX_HELD_DENIED);
        let dropped = metrics
            .ingest_dropped
            .get_or_create(&crate::ops::metrics::KindLabel {
                kind: "denied".into(),
            })
            .get();
        assert_eq!(dropped, 1_000 - (MAX_HELD_DENIED as u64 - 1));

        let flushed = broker.flush();
        let ctx = Arc::new(IngestCtx {
            metrics: metrics.clone(),
            publisher: crate::broker::Publisher::channel().0,
            dead_letter_keep: 100_000,
            price: Arc::new(|_, _, _| serde_json::Value::Null),
            broker: broker.clone(),
            health: Arc::default(),
            clock: crate::clock::system(),
            changes: Default::default(),
        });
        let writer = tokio::spawn(run(rx, db.clone(), ctx));
        tokio::time::timeout(std::time::Duration::from_secs(10), flushed)
            .await
            .expect("flushed")
            .unwrap();
        assert_eq!(broker.held_signals(), 0);
        let (states, rows, letters, repeat): (String, i64, i64, String) = db
            .read(|c| {
                Ok(c.query_row(
                    "SELECT (SELECT group_concat(id || '=' || online || ':' || coalesce(offline_reason, '-'), ' ')
                               FROM (SELECT * FROM devices ORDER BY id)),
                            (SELECT count(*) FROM telemetry),
                            (SELECT count(*) FROM dead_letters),
                            (SELECT reason FROM dead_letters WHERE device_id = 'repeat')",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )?)
            })
            .await
            .unwrap();
        assert_eq!(
            states,
            "a=1:- b=0:disconnected c=0:no message for 60 s (twice the keepalive)"
        );
        assert_eq!(rows, cap as i64);
        assert_eq!(letters, MAX_HELD_DENIED as i64);
        assert!(
            repeat.ends_with("(the last of 5 refusals while the ingest queue was full)"),
            "{repeat}"
        );
        writer.abort();
    }

    #[test]
    fn disk_and_lock_errors_are_retried_data_errors_are_not() {
        let sqlite = |code: i32| {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
        };
        assert!(is_transient(&sqlite(rusqlite::ffi::SQLITE_FULL)));
        assert!(is_disk_full(&sqlite(rusqlite::ffi::SQLITE_FULL)));
        assert!(is_transient(&sqlite(rusqlite::ffi::SQLITE_IOERR)));
        assert!(is_transient(&sqlite(rusqlite::ffi::SQLITE_BUSY)));
        assert!(!is_transient(&sqlite(rusqlite::ffi::SQLITE_CONSTRAINT)));
        assert!(!is_transient(&DbError::NotFound));
    }
}
