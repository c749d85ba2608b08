//! Applying what HQ sends: a feed batch or a snapshot, in one SQLite transaction together with the
//! new cursor, so that every HQ event is applied exactly once and in order across crashes. Catalog,
//! price and promotion events go through [`crate::catalog::Applier`] (the same function as
//! `storebox import`). An event that fails validation is quarantined with its reason (and reported
//! to HQ as `sync.quarantined`), and the batch goes on with the next event: a catalog event is
//! checked completely before it writes anything ([`Applier::check`]), any other event is applied
//! inside a savepoint that is rolled back if it turns out invalid.

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde_json::{json, Value};

use crate::catalog::Applier;
use crate::db::DbResult;
use crate::outbox::{self, Class};
use crate::proto::{FeedEvent, HqBody};

const CURSOR_KEY: &str = "sync_cursor";

/// The feed cursor last committed (None: never synced; bootstrap from the snapshot).
pub fn cursor(conn: &Connection) -> DbResult<Option<i64>> {
    let v: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [CURSOR_KEY], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(v.and_then(|v| v.parse().ok()))
}

fn set_cursor(conn: &Connection, c: i64) -> DbResult<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![CURSOR_KEY, c.to_string()],
    )?;
    Ok(())
}

/// What one applied batch did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Applied {
    pub applied: u64,
    pub quarantined: u64,
    /// Events skipped because the cursor was already past them (a repeated answer).
    pub skipped: u64,
    /// `notice.post` messages to publish on `store/notice` once committed.
    pub notices: Vec<Value>,
    /// Skus whose price or promotions may have changed.
    pub skus: Vec<String>,
}

/// Applies one event that is not a catalog event (those take [`Applier::check`] and
/// [`Applier::write`]); `Ok(Err(reason))` means it cannot be applied (the caller rolls back its
/// savepoint and quarantines it).
fn apply_other(
    tx: &Transaction<'_>,
    ev: &FeedEvent,
    body: HqBody,
    now_ms: i64,
    out: &mut Applied,
) -> DbResult<Result<(), String>> {
    Ok(match body {
        HqBody::NoticePost(n) => {
            let mut n = serde_json::to_value(n).unwrap_or_default();
            n["id"] = json!(ev.id);
            out.notices.push(n);
            Ok(())
        }
        HqBody::TicketUpdate(u) => crate::tickets::apply_update(tx, &ev.id, &u, now_ms)?,
        HqBody::GuideUpsert(g) => {
            crate::tickets::guides::upsert(tx, &g, now_ms)?;
            Ok(())
        }
        HqBody::GuideDelete(r) => {
            crate::tickets::guides::delete(tx, &r.id)?;
            Ok(())
        }
        // For the updates task, which takes them in feed order (`seq`).
        HqBody::ReleaseAssign(_) | HqBody::ReleaseWithdraw(_) => {
            let kind = if matches!(body, HqBody::ReleaseWithdraw(_)) {
                "withdraw"
            } else {
                "assign"
            };
            tx.execute(
                "INSERT OR IGNORE INTO sync_releases (event_id, type, seq, payload, received_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![ev.id, kind, ev.seq, ev.payload.to_string(), now_ms],
            )?;
            Ok(())
        }
        catalog => Err(format!(
            "{} reached the non-catalog path",
            catalog.event_type()
        )),
    })
}

fn quarantine(tx: &Transaction<'_>, ev: &FeedEvent, reason: &str, now_ms: i64) -> DbResult<()> {
    tx.execute(
        "INSERT INTO sync_quarantine (seq, event_id, type, payload, reason, received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![ev.seq, ev.id, ev.event_type, ev.payload.to_string(), reason, now_ms],
    )?;
    let report = json!({"seq": ev.seq, "id": ev.id, "type": ev.event_type, "reason": reason});
    outbox::enqueue(
        tx,
        &format!("quarantine:{}:{}", ev.seq, ev.id),
        crate::proto::StoreEventType::SyncQuarantined,
        Class::Business,
        &report.to_string(),
        now_ms,
    )?;
    tracing::warn!(seq = ev.seq, id = %ev.id, r#type = %ev.event_type, reason, "HQ event quarantined");
    Ok(())
}

fn apply_events(
    tx: &Transaction<'_>,
    events: &[FeedEvent],
    after: i64,
    tz: jiff::tz::TimeZone,
    now_ms: i64,
) -> DbResult<Applied> {
    let mut out = Applied::default();
    let mut applier = Applier::begin(tx, tz, now_ms)?;
    for ev in events {
        if ev.seq <= after {
            out.skipped += 1;
            continue;
        }
        // Parsed and checked completely before anything is written, so a bad event leaves no
        // partial writes.
        let body = match HqBody::from_wire(&ev.event_type, &ev.payload) {
            Ok(b) => b,
            Err(reason) => {
                quarantine(tx, ev, &reason, now_ms)?;
                out.quarantined += 1;
                continue;
            }
        };
        if body.event_type().is_catalog() {
            // A catalog event is checked completely (times resolved) before it writes, so it
            // needs no savepoint (the bulk of a catch-up takes this path).
            match applier.check(body) {
                Ok(checked) => {
                    applier.write_to(checked, &mut out.skus)?;
                    out.applied += 1;
                }
                Err(reason) => {
                    quarantine(tx, ev, &reason, now_ms)?;
                    out.quarantined += 1;
                }
            }
            continue;
        }
        tx.execute_batch("SAVEPOINT hq_event")?;
        match apply_other(tx, ev, body, now_ms, &mut out) {
            Ok(Ok(())) => {
                tx.execute_batch("RELEASE hq_event")?;
                out.applied += 1;
            }
            Ok(Err(reason)) => {
                tx.execute_batch("ROLLBACK TO hq_event; RELEASE hq_event")?;
                quarantine(tx, ev, &reason, now_ms)?;
                out.quarantined += 1;
            }
            Err(e) => return Err(e),
        }
    }
    applier.finish()?;
    Ok(out)
}

/// Applies a feed batch and stores `next` as the cursor, in one transaction. Events at or below the
/// stored cursor are skipped (a repeated answer applies nothing twice).
pub fn apply_batch(
    conn: &mut Connection,
    events: &[FeedEvent],
    next: i64,
    tz: jiff::tz::TimeZone,
    now_ms: i64,
) -> DbResult<Applied> {
    let tx = crate::db::immediate(conn)?;
    let after = cursor(&tx)?.unwrap_or(0);
    let out = apply_events(&tx, events, after, tz, now_ms)?;
    if next > after {
        set_cursor(&tx, next)?;
    }
    tx.commit()?;
    Ok(out)
}

/// Replaces the whole catalog state (items, barcodes, prices, promotions, support guides) with a snapshot and
/// stores its cursor, in one transaction.
pub fn apply_snapshot(
    conn: &mut Connection,
    events: &[FeedEvent],
    snapshot_cursor: i64,
    tz: jiff::tz::TimeZone,
    now_ms: i64,
) -> DbResult<Applied> {
    let tx = crate::db::immediate(conn)?;
    tx.execute_batch(
        "DELETE FROM items; DELETE FROM barcodes; DELETE FROM prices; DELETE FROM promotions;
         DELETE FROM promotion_skus; DELETE FROM guides;",
    )?;
    crate::catalog::bump_catalog_version(&tx)?;
    let out = apply_events(&tx, events, i64::MIN, tz, now_ms)?;
    set_cursor(&tx, snapshot_cursor)?;
    crate::ops::audit::record(
        &tx,
        now_ms,
        "sync",
        "sync.snapshot",
        "",
        &format!("{} events, cursor {snapshot_cursor}", out.applied),
    )?;
    tx.commit()?;
    Ok(out)
}

/// Quarantined HQ events so far.
pub fn quarantined(conn: &Connection) -> DbResult<i64> {
    Ok(conn.query_row("SELECT count(*) FROM sync_quarantine", [], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        crate::db::migrations::migrate(&mut c, crate::db::migrations::MIGRATIONS.len()).unwrap();
        c
    }

    fn ev(seq: i64, t: &str, payload: Value) -> FeedEvent {
        FeedEvent {
            seq,
            id: format!("e{seq}"),
            event_type: t.into(),
            payload,
            at: None,
        }
    }

    #[test]
    fn batch_with_cursor_is_applied_once_and_bad_events_are_quarantined() {
        let mut c = db();
        let events = vec![
            ev(
                1,
                "catalog.upsert",
                json!({"sku":"1","name":"Milk","unit":"each"}),
            ),
            ev(
                2,
                "price.set",
                json!({"id":"p1","sku":"1","price":-5,"starts_at":"2026-01-01T00:00:00Z"}),
            ),
            ev(3, "bogus.type", json!({})),
            ev(
                4,
                "price.set",
                json!({"id":"p1","sku":"1","price":129,"starts_at":"2026-01-01T00:00:00Z"}),
            ),
        ];
        let tz = jiff::tz::TimeZone::UTC;
        let a = apply_batch(&mut c, &events, 4, tz.clone(), 0).unwrap();
        assert_eq!((a.applied, a.quarantined), (2, 2));
        assert_eq!(cursor(&c).unwrap(), Some(4));
        // The same answer again: nothing applied twice.
        let a = apply_batch(&mut c, &events, 4, tz, 0).unwrap();
        assert_eq!((a.applied, a.skipped), (0, 4));
        let price: i64 = c
            .query_row("SELECT price FROM prices WHERE id='p1'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(price, 129);
        assert_eq!(quarantined(&c).unwrap(), 2);
        let reported: i64 = c
            .query_row(
                "SELECT count(*) FROM outbox WHERE type='sync.quarantined'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(reported, 2);
    }

    #[test]
    fn a_bad_catalog_event_writes_nothing_and_the_batch_goes_on() {
        let mut c = db();
        let tz = jiff::tz::TimeZone::UTC;
        let events = vec![
            ev(
                1,
                "catalog.upsert",
                json!({"sku":"1","name":"Milk","unit":"each","barcodes":["b1"]}),
            ),
            // Valid up to its second barcode: neither the item nor its barcodes may change.
            ev(
                2,
                "catalog.upsert",
                json!({"sku":"1","name":"Changed","unit":"each","barcodes":["b2","bad code"]}),
            ),
            // Valid record, bad instant.
            ev(
                3,
                "price.set",
                json!({"id":"p1","sku":"1","price":100,"starts_at":"yesterday"}),
            ),
            ev(
                4,
                "price.set",
                json!({"id":"p2","sku":"1","price":129,"starts_at":"2026-01-01T00:00:00Z"}),
            ),
        ];
        let a = apply_batch(&mut c, &events, 4, tz, 0).unwrap();
        assert_eq!((a.applied, a.quarantined), (2, 2));
        let name: String = c
            .query_row("SELECT name FROM items WHERE sku='1'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(name, "Milk");
        let barcodes: Vec<String> = c
            .prepare("SELECT barcode FROM barcodes ORDER BY barcode")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(barcodes, vec!["b1".to_string()]);
        let prices: Vec<(String, i64)> = c
            .prepare("SELECT id, received FROM prices")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(prices, vec![("p2".to_string(), 1)]);
        let reasons: Vec<String> = c
            .prepare("SELECT reason FROM sync_quarantine ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(reasons[0].contains("barcode"), "{reasons:?}");
        assert!(reasons[1].contains("price.set"), "{reasons:?}");
        assert_eq!(cursor(&c).unwrap(), Some(4));
    }

    #[test]
    fn snapshot_replaces_the_catalog() {
        let mut c = db();
        let tz = jiff::tz::TimeZone::UTC;
        apply_batch(
            &mut c,
            &[ev(
                1,
                "catalog.upsert",
                json!({"sku":"old","name":"Old","unit":"each"}),
            )],
            1,
            tz.clone(),
            0,
        )
        .unwrap();
        apply_snapshot(
            &mut c,
            &[ev(
                7,
                "catalog.upsert",
                json!({"sku":"new","name":"New","unit":"each"}),
            )],
            9,
            tz,
            0,
        )
        .unwrap();
        let skus: Vec<String> = c
            .prepare("SELECT sku FROM items")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(skus, vec!["new".to_string()]);
        assert_eq!(cursor(&c).unwrap(), Some(9));

        // An empty snapshot (HQ's catalog is empty) empties the store's catalog, and the price
        // answers a running box keeps are stale after it; an empty feed page keeps them.
        let before = crate::catalog::answer_cache::versions(&c).unwrap();
        apply_batch(&mut c, &[], 9, jiff::tz::TimeZone::UTC, 0).unwrap();
        assert_eq!(crate::catalog::answer_cache::versions(&c).unwrap(), before);
        apply_snapshot(&mut c, &[], 10, jiff::tz::TimeZone::UTC, 0).unwrap();
        let after = crate::catalog::answer_cache::versions(&c).unwrap();
        assert!(after.catalog > before.catalog, "{before:?} {after:?}");
        let n: i64 = c
            .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }

    /// A pending `release.assign` in a snapshot reaches the updates task like one from the feed,
    /// once however often the same snapshot is applied.
    #[test]
    fn a_release_assign_in_a_snapshot_is_handed_to_the_updater_once() {
        let mut c = db();
        let tz = jiff::tz::TimeZone::UTC;
        let assign = ev(
            9,
            "release.assign",
            crate::proto::release::tests::assign_json(),
        );
        let mut assign = assign;
        assign.id = "snapshot-release-r1".into();
        for _ in 0..2 {
            apply_snapshot(&mut c, std::slice::from_ref(&assign), 9, tz.clone(), 0).unwrap();
        }
        let rows: Vec<String> = c
            .prepare("SELECT event_id FROM sync_releases WHERE handled_ms IS NULL")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, ["snapshot-release-r1"]);
    }

    /// `release.assign` and `release.withdraw` reach the updates task with their type and feed
    /// seq, so that it takes them in feed order.
    #[test]
    fn release_events_are_stored_with_their_type_and_seq() {
        let mut c = db();
        let tz = jiff::tz::TimeZone::UTC;
        let assign = ev(
            3,
            "release.assign",
            crate::proto::release::tests::assign_json(),
        );
        let withdraw = ev(
            4,
            "release.withdraw",
            serde_json::json!({"rollout": "r-1", "version": "1.2.3", "reason": "aborted"}),
        );
        let done = apply_batch(&mut c, &[assign, withdraw], 4, tz, 0).unwrap();
        assert_eq!((done.applied, done.quarantined), (2, 0));
        let rows: Vec<(String, i64)> = c
            .prepare("SELECT type, seq FROM sync_releases ORDER BY received_ms, seq, event_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, [("assign".into(), 3), ("withdraw".into(), 4)]);
    }
}
