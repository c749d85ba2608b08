//! The price scheduler: at every instant a price record or promotion starts or ends, publish
//! `store/prices/changed` with the affected skus and their new effective prices, and write an
//! audit entry — with or without HQ.
//!
//! It works on the interval (last evaluated, now]: every boundary in it is announced exactly once,
//! in order. The last evaluated instant is stored in SQLite, so after downtime the changes missed
//! meanwhile are announced at start (marked `catch_up`). A clock stepping forward (NTP, resume from
//! suspend) simply widens the interval; a clock stepping back never lowers the stored instant, so
//! nothing is announced twice.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::json;

use crate::db::{ts_from_ms, DbResult};
use crate::ops::audit;

/// One sku's new state at a boundary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SkuChange {
    pub sku: String,
    /// New effective price (None: no longer priced).
    pub price: Option<i64>,
    pub price_id: Option<String>,
    pub promotions: Vec<String>,
}

/// Everything that changed at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Boundary {
    pub at: String,
    pub at_ms: i64,
    pub changes: Vec<SkuChange>,
}

const META_KEY: &str = "scheduler_last_ms";

pub fn last_evaluated(conn: &Connection) -> DbResult<Option<i64>> {
    let v: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [META_KEY], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(v.and_then(|v| v.parse().ok()))
}

fn set_last(conn: &Connection, ms: i64) -> DbResult<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![META_KEY, ms.to_string()],
    )?;
    Ok(())
}

/// Every instant in `(?1, ?2]` at which a price record or a promotion starts or ends, with the
/// skus it reaches. Each part searches an index on its instants (migrations 0003, 0008): an idle
/// tick must not scan a table.
const BOUNDARIES: &str = "SELECT t, sku FROM (
            SELECT starts_ms AS t, sku FROM prices WHERE starts_ms > ?1 AND starts_ms <= ?2
            UNION SELECT ends_ms, sku FROM prices WHERE ends_ms > ?1 AND ends_ms <= ?2
            UNION SELECT p.starts_ms, ps.sku FROM promotions p JOIN promotion_skus ps ON ps.promotion_id = p.id
                  WHERE p.starts_ms > ?1 AND p.starts_ms <= ?2
            UNION SELECT p.ends_ms, ps.sku FROM promotions p JOIN promotion_skus ps ON ps.promotion_id = p.id
                  WHERE p.ends_ms > ?1 AND p.ends_ms <= ?2
            UNION SELECT p.starts_ms, i.sku FROM promotions p JOIN items i ON i.department = p.department
                  WHERE p.starts_ms > ?1 AND p.starts_ms <= ?2
            UNION SELECT p.ends_ms, i.sku FROM promotions p JOIN items i ON i.department = p.department
                  WHERE p.ends_ms > ?1 AND p.ends_ms <= ?2
         ) ORDER BY t, sku";

/// Boundary instants in (after, upto], each with the skus whose records or promotions start or end
/// there.
fn boundaries(conn: &Connection, after: i64, upto: i64) -> DbResult<Vec<(i64, Vec<String>)>> {
    let mut stmt = conn.prepare_cached(BOUNDARIES)?;
    let mut out: Vec<(i64, Vec<String>)> = Vec::new();
    for row in stmt.query_map(params![after, upto], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
    })? {
        let (t, sku) = row?;
        match out.last_mut() {
            Some((last_t, skus)) if *last_t == t => skus.push(sku),
            _ => out.push((t, vec![sku])),
        }
    }
    Ok(out)
}

/// The effective state of `sku` at `at_ms`.
fn state_at(conn: &Connection, sku: &str, at_ms: i64) -> DbResult<SkuChange> {
    let at = ts_from_ms(at_ms);
    let mut change = SkuChange {
        sku: sku.to_string(),
        price: None,
        price_id: None,
        promotions: Vec::new(),
    };
    if let Some((item, records, promos)) = super::load(conn, sku)? {
        if let Some(r) = crate::pricing::effective_price(&records, at) {
            change.price = Some(r.price);
            change.price_id = Some(r.id.clone());
        }
        change.promotions = crate::pricing::active_promotions(&promos, &item, at)
            .into_iter()
            .map(|p| p.id.clone())
            .collect();
    }
    Ok(change)
}

/// Evaluates (last, now]: returns each boundary with its changes, records audit entries and moves
/// the stored instant forward (never back). On a database without a stored instant nothing is
/// announced: the box starts from the present.
pub fn evaluate(conn: &mut Connection, now_ms: i64) -> DbResult<Vec<Boundary>> {
    // Idle ticks only read: the stored instant moves when something is announced, so a crash
    // never re-announces, and an idle box does not write four times a second.
    let last = last_evaluated(conn)?;
    if let Some(last) = last {
        if now_ms <= last || boundaries(conn, last, now_ms)?.is_empty() {
            return Ok(Vec::new());
        }
    }
    let tx = crate::db::immediate(conn)?;
    let Some(last) = last_evaluated(&tx)? else {
        set_last(&tx, now_ms)?;
        tx.commit()?;
        return Ok(Vec::new());
    };
    if now_ms <= last {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (at_ms, skus) in boundaries(&tx, last, now_ms)? {
        let mut changes = Vec::with_capacity(skus.len());
        for sku in &skus {
            changes.push(state_at(&tx, sku, at_ms)?);
        }
        let at = ts_from_ms(at_ms).to_string();
        let detail = changes
            .iter()
            .map(|c| match c.price {
                Some(p) => format!(
                    "{}={p}{}",
                    c.sku,
                    if c.promotions.is_empty() {
                        String::new()
                    } else {
                        format!(" [{}]", c.promotions.join(","))
                    }
                ),
                None => format!("{}=unpriced", c.sku),
            })
            .collect::<Vec<_>>()
            .join("; ");
        audit::record(&tx, now_ms, "scheduler", "price.activated", &at, &detail)?;
        out.push(Boundary { at, at_ms, changes });
    }
    set_last(&tx, now_ms)?;
    tx.commit()?;
    Ok(out)
}

/// The effective state now of each of `skus`: for announcing data that took effect on arrival
/// (an HQ price whose start is already past), which crosses no boundary of its own.
pub fn current(conn: &Connection, skus: &[String], now_ms: i64) -> DbResult<Vec<SkuChange>> {
    skus.iter().map(|s| state_at(conn, s, now_ms)).collect()
}

/// The MQTT message announcing `changes` as they stand after HQ data was applied
/// (`"reason":"update"`; boundary messages carry no reason).
pub fn update_message(changes: &[SkuChange], now_ms: i64, currency: &str) -> String {
    json!({
        "at": ts_from_ms(now_ms).to_string(),
        "catch_up": false,
        "reason": "update",
        "currency": currency,
        "skus": changes,
    })
    .to_string()
}

/// The MQTT message for one boundary.
pub fn message(b: &Boundary, now_ms: i64, currency: &str) -> String {
    json!({
        "at": b.at,
        "catch_up": now_ms - b.at_ms > 5_000,
        "currency": currency,
        "skus": b.changes,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{apply_all, HqEvent};
    use crate::db::Db;

    fn ms(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    /// The tick's question reads indexes only: scanning the promotion skus (as before migration
    /// 0008) cost ~3 ms of CPU four times a second with 200 promotions.
    #[test]
    fn boundary_question_scans_no_table() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::db::migrations::migrate(&mut conn, crate::db::migrations::MIGRATIONS.len()).unwrap();
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {BOUNDARIES}"))
            .unwrap();
        let plan: Vec<String> = stmt
            .query_map(params![0, 1], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let scans: Vec<&String> = plan
            .iter()
            .filter(|l| l.starts_with("SCAN") && !l.starts_with("SCAN (subquery"))
            .collect();
        assert!(scans.is_empty(), "table scans in {plan:#?}");
        assert!(
            plan.iter().any(|l| l.contains("promotions_starts")),
            "{plan:#?}"
        );
    }

    fn ev(t: &str, payload: serde_json::Value) -> HqEvent {
        HqEvent {
            id: None,
            event_type: t.into(),
            payload,
        }
    }

    fn setup() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("s.db")).unwrap();
        let events = vec![
            ev(
                "catalog.upsert",
                json!({"sku":"1001","name":"Milk","department":"dairy","unit":"each"}),
            ),
            ev(
                "catalog.upsert",
                json!({"sku":"1002","name":"Yoghurt","department":"dairy","unit":"each"}),
            ),
            ev(
                "price.set",
                json!({"id":"p1","sku":"1001","price":129,"starts_at":"2026-11-01T00:00:00Z"}),
            ),
            ev(
                "price.set",
                json!({"id":"p2","sku":"1001","price":99,"starts_at":"2026-11-27T00:00:00","ends_at":"2026-11-30T00:00:00"}),
            ),
            ev(
                "price.set",
                json!({"id":"p3","sku":"1002","price":59,"starts_at":"2026-11-01T00:00:00Z"}),
            ),
            ev(
                "promotion.upsert",
                json!({"id":"bf","name":"BF","kind":"percent_off","params":{"percent":10},"department":"dairy","starts_at":"2026-11-27T00:00:00","ends_at":"2026-11-28T00:00:00"}),
            ),
        ];
        let tz = jiff::tz::TimeZone::get("Europe/Rome").unwrap();
        db.write_blocking(|c| {
            Ok(apply_all(c, &events, tz, 0)
                .map_err(|(i, e)| panic!("event {i}: {e}"))
                .unwrap())
        })
        .unwrap();
        (dir, db)
    }

    fn eval(db: &Db, now: &str) -> Vec<Boundary> {
        db.write_blocking(|c| evaluate(c, ms(now))).unwrap()
    }

    #[test]
    fn a_future_price_is_announced_once_at_its_instant() {
        let (_d, db) = setup();
        assert!(
            eval(&db, "2026-11-25T12:00:00Z").is_empty(),
            "first run starts from the present"
        );
        assert!(
            eval(&db, "2026-11-26T22:59:59.999Z").is_empty(),
            "not before its instant"
        );
        // Midnight in Rome = 23:00Z: the sale price and the promotion start together.
        let b = eval(&db, "2026-11-26T23:00:00.200Z");
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].at, "2026-11-26T23:00:00Z");
        let milk = b[0].changes.iter().find(|c| c.sku == "1001").unwrap();
        assert_eq!(
            (
                milk.price,
                milk.price_id.as_deref(),
                milk.promotions.clone()
            ),
            (Some(99), Some("p2"), vec!["bf".to_string()])
        );
        let yog = b[0].changes.iter().find(|c| c.sku == "1002").unwrap();
        assert_eq!(
            (yog.price, yog.promotions.clone()),
            (Some(59), vec!["bf".to_string()])
        );
        assert!(
            eval(&db, "2026-11-26T23:00:01Z").is_empty(),
            "announced once"
        );
        // The promotion ends at Rome midnight of the 28th: announced at its end.
        let b = eval(&db, "2026-11-27T23:00:00.100Z");
        assert_eq!(b.len(), 1);
        assert!(b[0].changes.iter().all(|c| c.promotions.is_empty()));
        let audit: i64 = db
            .read_blocking(|c| {
                Ok(c.query_row(
                    "SELECT count(*) FROM audit WHERE action = 'price.activated'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        assert_eq!(audit, 2);
    }

    #[test]
    fn missed_instants_are_announced_after_downtime_and_a_clock_step_back_repeats_nothing() {
        let (_d, db) = setup();
        eval(&db, "2026-11-25T12:00:00Z");
        // The box was off from the 25th to the 29th: both boundaries in between come out, in order.
        let b = eval(&db, "2026-11-29T08:00:00Z");
        assert_eq!(
            b.iter().map(|b| b.at.as_str()).collect::<Vec<_>>(),
            ["2026-11-26T23:00:00Z", "2026-11-27T23:00:00Z"]
        );
        let msg: serde_json::Value =
            serde_json::from_str(&message(&b[0], ms("2026-11-29T08:00:00Z"), "EUR")).unwrap();
        assert_eq!(msg["catch_up"], true);
        // NTP steps the clock back a day, then time moves on: nothing is announced again.
        assert!(eval(&db, "2026-11-28T08:00:00Z").is_empty());
        assert!(eval(&db, "2026-11-29T09:00:00Z").is_empty());
        // The sale price ends on the 30th (Rome midnight = 23:00Z on the 29th): milk back to 129.
        let b = eval(&db, "2026-11-29T23:00:00Z");
        assert_eq!(b.len(), 1);
        assert_eq!(
            b[0].changes,
            vec![SkuChange {
                sku: "1001".into(),
                price: Some(129),
                price_id: Some("p1".into()),
                promotions: vec![]
            }]
        );
    }
}
