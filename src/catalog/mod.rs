//! The store's local copy of the catalog, effective-dated prices and promotions, in SQLite. It is
//! written only through [`Applier::apply`], which takes the HQ event types of the sync protocol
//! (`catalog.upsert`, `catalog.delete`, `price.set`, `price.cancel`, `promotion.upsert`,
//! `promotion.cancel`) — the same path for the HQ feed and for `storebox import` — and read with
//! [`load`] into the plain data the pricing engine works on.

pub mod answer_cache;
pub mod import;
pub mod promo_cache;
pub mod scheduler;

use rusqlite::{params, CachedStatement, Connection, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::db::{DbError, DbResult};
use crate::pricing::{
    Item, PriceRecord, PriceSetPayload, PromoKind, Promotion, PromotionPayload, Unit,
};

/// An HQ event as it travels (sync feed, import files): the wire shape of docs/sync-protocol.md.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HqEvent {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub payload: Value,
}

/// Event types this module applies.
pub const CATALOG_EVENT_TYPES: [&str; 6] = [
    "catalog.upsert",
    "catalog.delete",
    "price.set",
    "price.cancel",
    "promotion.upsert",
    "promotion.cancel",
];

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The event is malformed; the message names the field.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<rusqlite::Error> for ApplyError {
    fn from(e: rusqlite::Error) -> Self {
        ApplyError::Db(e.into())
    }
}

/// `catalog.upsert` payload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CatalogItem {
    pub sku: String,
    pub name: String,
    #[serde(default)]
    pub barcodes: Vec<String>,
    #[serde(default)]
    pub department: Option<String>,
    pub unit: Unit,
    #[serde(default)]
    pub attributes: serde_json::Map<String, Value>,
}

fn check_id(what: &str, id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "{what} {id:?} must be 1-128 characters without spaces or control characters"
        ));
    }
    Ok(())
}

fn parse_payload<'v, T: Deserialize<'v>>(
    event_type: &str,
    payload: &'v Value,
) -> Result<T, String> {
    // Fast path without path tracking; a payload that fails is parsed again to name the field.
    if let Ok(v) = T::deserialize(payload) {
        return Ok(v);
    }
    serde_path_to_error::deserialize(payload).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!(" at {path}")
        };
        format!("{event_type} payload{at}: {}", e.inner())
    })
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

#[derive(Deserialize)]
struct SkuOnly {
    sku: String,
}

/// A catalog event that passed every check ([`Applier::check`]). Writing it ([`Applier::write`])
/// can fail only with a database error, never half-way for a reason of the event itself: that is
/// why the HQ feed needs no savepoint per event to quarantine a bad one.
#[derive(Debug, Clone)]
pub enum Checked {
    Upsert(CatalogItem),
    Delete(String),
    /// The record; its `received` is assigned when written.
    PriceSet(PriceRecord),
    PriceCancel(String),
    PromotionUpsert(Promotion),
    PromotionCancel(String),
}

/// Applies HQ events inside one transaction; the caller commits (together with its cursor or the
/// rest of an import file) so that a batch is applied exactly once or not at all.
pub struct Applier<'t> {
    tx: &'t Transaction<'t>,
    tz: jiff::tz::TimeZone,
    now_ms: i64,
    /// Arrival counter for price ties, persisted in `meta` at [`Applier::finish`].
    received: i64,
    /// The statements of the frequent events, held for the whole batch instead of taken from and
    /// returned to the connection's statement cache (a hash of the SQL text) once per event.
    stmts: Stmts<'t>,
    /// [`bump_catalog_version`] ran in this transaction.
    version_bumped: bool,
    /// The time texts resolved last, with their instants: the prices of a feed batch mostly start
    /// (and end) at a few instants, and resolving one is a parse and a zone lookup.
    times: TimeMemo,
}

/// Marks the price answers a running box keeps in memory stale once the caller's transaction
/// commits (`answer_cache`; rolled back, the bump is too). [`Applier::write`] does it at the first
/// write of a transaction; anything else that changes items, barcodes or prices calls it itself.
pub fn bump_catalog_version(tx: &Connection) -> DbResult<()> {
    tx.prepare_cached(
        "UPDATE catalog_state SET catalog_version = catalog_version + 1 WHERE id = 1",
    )?
    .execute([])?;
    Ok(())
}

/// The last few store times resolved in one zone ([`crate::pricing::parse_store_time`]).
#[derive(Default)]
struct TimeMemo {
    recent: [Option<(String, jiff::Timestamp)>; 4],
    next: usize,
}

impl TimeMemo {
    fn resolve(
        &mut self,
        s: &str,
        tz: &jiff::tz::TimeZone,
    ) -> Result<jiff::Timestamp, crate::pricing::TimeError> {
        if let Some((_, ts)) = self.recent.iter().flatten().find(|(t, _)| t == s) {
            return Ok(*ts);
        }
        let ts = crate::pricing::parse_store_time(s, tz)?;
        self.recent[self.next] = Some((s.to_owned(), ts));
        self.next = (self.next + 1) % self.recent.len();
        Ok(ts)
    }
}

#[derive(Default)]
struct Stmts<'t> {
    item_insert: Option<CachedStatement<'t>>,
    item_update: Option<CachedStatement<'t>>,
    barcodes_of: Option<CachedStatement<'t>>,
    barcode_delete: Option<CachedStatement<'t>>,
    barcode_insert: Option<CachedStatement<'t>>,
    price_sku: Option<CachedStatement<'t>>,
    price_insert: Option<CachedStatement<'t>>,
    price_replace: Option<CachedStatement<'t>>,
}

/// The statement in `slot`, prepared on first use.
fn held<'s, 't>(
    slot: &'s mut Option<CachedStatement<'t>>,
    tx: &'t Transaction<'t>,
    sql: &str,
) -> DbResult<&'s mut CachedStatement<'t>> {
    let stmt = match slot.take() {
        Some(s) => s,
        None => tx.prepare_cached(sql)?,
    };
    Ok(slot.insert(stmt))
}

impl<'t> Applier<'t> {
    pub fn begin(tx: &'t Transaction<'t>, tz: jiff::tz::TimeZone, now_ms: i64) -> DbResult<Self> {
        let received: Option<String> = tx
            .query_row(
                "SELECT value FROM meta WHERE key = 'catalog_received'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(Applier {
            tx,
            tz,
            now_ms,
            received: received.and_then(|v| v.parse().ok()).unwrap_or(0),
            stmts: Stmts::default(),
            version_bumped: false,
            times: TimeMemo::default(),
        })
    }

    /// Applies one event; returns the skus whose price or promotions it may have changed.
    pub fn apply(&mut self, ev: &HqEvent) -> Result<Vec<String>, ApplyError> {
        let checked = self
            .check(&ev.event_type, &ev.payload)
            .map_err(ApplyError::Invalid)?;
        Ok(self.write(checked)?)
    }

    /// Parses and validates one event without touching the database; the error says why the
    /// event is invalid (naming the field).
    pub fn check(&mut self, event_type: &str, payload: &Value) -> Result<Checked, String> {
        match event_type {
            "catalog.upsert" => {
                let item: CatalogItem = parse_payload(event_type, payload)?;
                check_id("sku", &item.sku)?;
                if item.name.trim().is_empty() || item.name.chars().count() > 256 {
                    return Err(format!(
                        "catalog.upsert {}: name must be 1-256 characters",
                        item.sku
                    ));
                }
                for b in &item.barcodes {
                    check_id("barcode", b)?;
                }
                Ok(Checked::Upsert(item))
            }
            "catalog.delete" => {
                let SkuOnly { sku } = parse_payload(event_type, payload)?;
                Ok(Checked::Delete(sku))
            }
            "price.set" => {
                let p: PriceSetPayload = parse_payload(event_type, payload)?;
                check_id("price id", &p.id)?;
                check_id("sku", &p.sku)?;
                let (tz, times) = (&self.tz, &mut self.times);
                let (starts_at, ends_at) = p
                    .times(|s| times.resolve(s, tz))
                    .map_err(|e| format!("price.set {}: {e}", p.id))?;
                Ok(Checked::PriceSet(p.into_record(starts_at, ends_at, 0)))
            }
            "price.cancel" => {
                let IdOnly { id } = parse_payload(event_type, payload)?;
                Ok(Checked::PriceCancel(id))
            }
            "promotion.upsert" => {
                let p: PromotionPayload = parse_payload(event_type, payload)?;
                check_id("promotion id", &p.id)?;
                for s in &p.skus {
                    check_id("sku", s)?;
                }
                let promo = p
                    .to_promotion(&self.tz)
                    .map_err(|e| format!("promotion.upsert {}: {e}", p.id))?;
                Ok(Checked::PromotionUpsert(promo))
            }
            "promotion.cancel" => {
                let IdOnly { id } = parse_payload(event_type, payload)?;
                Ok(Checked::PromotionCancel(id))
            }
            other => Err(format!(
                "unknown event type {other:?}; expected one of {}",
                CATALOG_EVENT_TYPES.join(", ")
            )),
        }
    }

    /// Writes a checked event; returns the skus whose price or promotions it may have changed.
    pub fn write(&mut self, checked: Checked) -> DbResult<Vec<String>> {
        let mut skus = Vec::new();
        self.write_to(checked, &mut skus)?;
        Ok(skus)
    }

    /// [`Applier::write`] that appends the skus to `skus` (a batch collects them in one list).
    pub fn write_to(&mut self, checked: Checked, skus: &mut Vec<String>) -> DbResult<()> {
        let tx = self.tx;
        if !self.version_bumped {
            // Once per transaction, at its first write (an empty feed page or one of notices
            // only keeps the answers).
            bump_catalog_version(tx)?;
            self.version_bumped = true;
        }
        match checked {
            Checked::Upsert(item) => {
                let st = &mut self.stmts;
                let attributes: std::borrow::Cow<'static, str> = if item.attributes.is_empty() {
                    "{}".into()
                } else {
                    serde_json::to_string(&item.attributes)
                        .unwrap_or_else(|_| "{}".into())
                        .into()
                };
                let values = params![
                    item.sku,
                    item.name,
                    item.department,
                    item.unit.as_str(),
                    attributes.as_ref(),
                    self.now_ms
                ];
                // A new item (the bulk of a catch-up or a snapshot) is one insert, and it has no
                // barcodes yet: barcodes are written only with their item and deleted with it.
                let new = held(&mut st.item_insert, tx,
                    "INSERT INTO items (sku, name, department, unit, attributes, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (sku) DO NOTHING",
                )?
                .execute(values)?
                    == 1;
                let mut had: Vec<String> = Vec::new();
                if !new {
                    held(&mut st.item_update, tx,
                        "UPDATE items SET name = ?2, department = ?3, unit = ?4, attributes = ?5, updated_ms = ?6
                         WHERE sku = ?1",
                    )?
                    .execute(values)?;
                    // Only the barcodes that change are written: the ones dropped are deleted,
                    // the ones already on this item stay as they are.
                    had = held(
                        &mut st.barcodes_of,
                        tx,
                        "SELECT barcode FROM barcodes WHERE sku = ?1",
                    )?
                    .query_map([&item.sku], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                    let del = held(
                        &mut st.barcode_delete,
                        tx,
                        "DELETE FROM barcodes WHERE barcode = ?1 AND sku = ?2",
                    )?;
                    for b in had.iter().filter(|b| !item.barcodes.contains(b)) {
                        del.execute(params![b, item.sku])?;
                    }
                }
                let ins = held(
                    &mut st.barcode_insert,
                    tx,
                    "INSERT OR REPLACE INTO barcodes (barcode, sku) VALUES (?1, ?2)",
                )?;
                for b in item.barcodes.iter().filter(|b| !had.contains(b)) {
                    ins.execute(params![b, item.sku])?;
                }
                skus.push(item.sku);
                Ok(())
            }
            Checked::Delete(sku) => {
                tx.prepare_cached("DELETE FROM items WHERE sku = ?1")?
                    .execute([&sku])?;
                tx.prepare_cached("DELETE FROM barcodes WHERE sku = ?1")?
                    .execute([&sku])?;
                skus.push(sku);
                Ok(())
            }
            Checked::PriceSet(mut r) => {
                self.received += 1;
                r.received = self.received;
                let st = &mut self.stmts;
                let values = params![
                    r.id,
                    r.sku,
                    r.price,
                    r.starts_at.as_millisecond(),
                    r.ends_at.map(|t| t.as_millisecond()),
                    r.received
                ];
                // A new record, or one replaced on the same sku, is this one statement; a record
                // that moves to another sku is left alone here (no row changed) and replaced below,
                // after reading its old sku: both skus change.
                let written = held(&mut st.price_insert, tx,
                    "INSERT INTO prices (id, sku, price, starts_ms, ends_ms, received) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (id) DO UPDATE SET price = excluded.price, starts_ms = excluded.starts_ms,
                       ends_ms = excluded.ends_ms, received = excluded.received
                     WHERE prices.sku = excluded.sku",
                )?
                .execute(values)?;
                let mut old_sku: Option<String> = None;
                if written == 0 {
                    old_sku = held(
                        &mut st.price_sku,
                        tx,
                        "SELECT sku FROM prices WHERE id = ?1",
                    )?
                    .query_row([&r.id], |row| row.get(0))
                    .optional()?;
                    held(&mut st.price_replace, tx,
                        "INSERT OR REPLACE INTO prices (id, sku, price, starts_ms, ends_ms, received) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?
                    .execute(values)?;
                }
                let old_sku = old_sku.filter(|s| s != &r.sku);
                skus.push(r.sku);
                skus.extend(old_sku);
                Ok(())
            }
            Checked::PriceCancel(id) => {
                let sku: Option<String> = tx
                    .prepare_cached("DELETE FROM prices WHERE id = ?1 RETURNING sku")?
                    .query_row([&id], |r| r.get(0))
                    .optional()?;
                skus.extend(sku);
                Ok(())
            }
            Checked::PromotionUpsert(promo) => {
                let mut reached = self.promotion_skus(&promo.id)?;
                self.delete_promotion(&promo.id)?;
                self.received += 1;
                let (kind, params_json) = promo.kind.to_wire();
                tx.prepare_cached(
                    "INSERT INTO promotions (id, name, kind, params, skus, department, starts_ms, ends_ms, received)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![
                    promo.id,
                    promo.name,
                    kind,
                    params_json.to_string(),
                    serde_json::to_string(&promo.skus).unwrap_or_default(),
                    promo.department,
                    promo.starts_at.as_millisecond(),
                    promo.ends_at.map(|t| t.as_millisecond()),
                    self.received
                ])?;
                let mut ins = tx.prepare_cached(
                    "INSERT OR IGNORE INTO promotion_skus (sku, promotion_id) VALUES (?1, ?2)",
                )?;
                for s in &promo.skus {
                    ins.execute(params![s, promo.id])?;
                }
                reached.extend(self.promotion_skus(&promo.id)?);
                reached.sort();
                reached.dedup();
                skus.append(&mut reached);
                Ok(())
            }
            Checked::PromotionCancel(id) => {
                skus.append(&mut self.promotion_skus(&id)?);
                self.delete_promotion(&id)?;
                Ok(())
            }
        }
    }

    /// Skus a promotion reaches: its listed skus and every item of its department.
    fn promotion_skus(&self, id: &str) -> DbResult<Vec<String>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT sku FROM promotion_skus WHERE promotion_id = ?1
             UNION SELECT i.sku FROM items i JOIN promotions p ON p.department = i.department WHERE p.id = ?1",
        )?;
        let rows = stmt.query_map([id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn delete_promotion(&self, id: &str) -> DbResult<()> {
        self.tx
            .prepare_cached("DELETE FROM promotions WHERE id = ?1")?
            .execute([id])?;
        self.tx
            .prepare_cached("DELETE FROM promotion_skus WHERE promotion_id = ?1")?
            .execute([id])?;
        Ok(())
    }

    pub fn finish(self) -> DbResult<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES ('catalog_received', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute([self.received.to_string()])?;
        Ok(())
    }
}

/// A catalog item as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ItemView {
    pub sku: String,
    pub name: String,
    pub department: Option<String>,
    #[schema(value_type = String)]
    pub unit: Unit,
    pub barcodes: Vec<String>,
    #[schema(value_type = Object)]
    pub attributes: Value,
}

fn unit_of(s: &str) -> Unit {
    s.parse().unwrap_or(Unit::Each)
}

pub fn item_view(conn: &Connection, sku: &str) -> DbResult<Option<ItemView>> {
    let row = conn
        .prepare_cached("SELECT sku, name, department, unit, attributes FROM items WHERE sku = ?1")?
        .query_row([sku], |r| {
            let unit: String = r.get(3)?;
            let attrs: String = r.get(4)?;
            Ok(ItemView {
                sku: r.get(0)?,
                name: r.get(1)?,
                department: r.get(2)?,
                unit: unit_of(&unit),
                barcodes: Vec::new(),
                attributes: serde_json::from_str(&attrs)
                    .unwrap_or(Value::Object(Default::default())),
            })
        })
        .optional()?;
    let Some(mut item) = row else { return Ok(None) };
    let mut stmt =
        conn.prepare_cached("SELECT barcode FROM barcodes WHERE sku = ?1 ORDER BY barcode")?;
    item.barcodes = stmt
        .query_map([sku], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(Some(item))
}

pub fn sku_for_barcode(conn: &Connection, barcode: &str) -> DbResult<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT sku FROM barcodes WHERE barcode = ?1")?
        .query_row([barcode], |r| r.get(0))
        .optional()?)
}

/// Search by exact sku or barcode first, then by name (case-insensitive substring), paged.
pub fn search(
    conn: &Connection,
    q: &str,
    limit: i64,
    offset: i64,
) -> DbResult<(Vec<ItemView>, i64)> {
    let q = q.trim();
    let mut skus: Vec<String> = Vec::new();
    if !q.is_empty() && offset == 0 {
        if let Some(v) = item_view(conn, q)? {
            skus.push(v.sku);
        }
        if let Some(s) = sku_for_barcode(conn, q)? {
            if !skus.contains(&s) {
                skus.push(s);
            }
        }
    }
    let pattern = format!(
        "%{}%",
        q.replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    let total: i64 = conn.query_row(
        "SELECT count(*) FROM items WHERE name LIKE ?1 ESCAPE '\\'",
        [&pattern],
        |r| r.get(0),
    )?;
    let mut stmt = conn.prepare_cached(
        "SELECT sku FROM items WHERE name LIKE ?1 ESCAPE '\\' ORDER BY name COLLATE NOCASE, sku LIMIT ?2 OFFSET ?3",
    )?;
    for s in stmt.query_map(params![pattern, limit, offset], |r| r.get::<_, String>(0))? {
        let s = s?;
        if !skus.contains(&s) {
            skus.push(s);
        }
    }
    let mut items = Vec::with_capacity(skus.len());
    for s in skus.iter().take(limit as usize) {
        if let Some(v) = item_view(conn, s)? {
            items.push(v);
        }
    }
    Ok((items, total))
}

fn ts(ms: i64) -> jiff::Timestamp {
    crate::db::ts_from_ms(ms)
}

/// Everything the pricing engine needs about one sku: the item, its price records and the
/// promotions that target it by sku or department.
pub type PricingData = (Item, Vec<PriceRecord>, Vec<Promotion>);

/// A stored promotion; `None` if its kind or params no longer parse (skipped, never applied).
pub(crate) fn promotion_row(r: &rusqlite::Row) -> rusqlite::Result<Option<Promotion>> {
    let kind: String = r.get(2)?;
    let params_json: String = r.get(3)?;
    let skus: String = r.get(4)?;
    let Ok(params_v) = serde_json::from_str::<Value>(&params_json) else {
        return Ok(None);
    };
    let Ok(kind) = PromoKind::from_wire(&kind, &params_v) else {
        return Ok(None);
    };
    Ok(Some(Promotion {
        id: r.get(0)?,
        name: r.get(1)?,
        kind,
        skus: serde_json::from_str(&skus).unwrap_or_default(),
        department: r.get(5)?,
        starts_at: ts(r.get(6)?),
        ends_at: r.get::<_, Option<i64>>(7)?.map(ts),
    }))
}

/// The item and its price records (no promotions), in one statement: the item's row joined with
/// its records from the covering index `prices_by_sku` (one statement instead of two saves a
/// fifth of a lookup's database time).
fn load_item(conn: &Connection, sku: &str) -> DbResult<Option<(Item, Vec<PriceRecord>)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT i.department, i.unit, p.id, p.price, p.starts_ms, p.ends_ms, p.received
           FROM items i LEFT JOIN prices p ON p.sku = i.sku WHERE i.sku = ?1",
    )?;
    let mut rows = stmt.query([sku])?;
    let Some(first) = rows.next()? else {
        return Ok(None);
    };
    let unit: String = first.get(1)?;
    let item = Item {
        sku: sku.to_string(),
        department: first.get(0)?,
        unit: unit_of(&unit),
    };
    let record = |r: &rusqlite::Row| -> rusqlite::Result<Option<PriceRecord>> {
        let Some(id) = r.get::<_, Option<String>>(2)? else {
            return Ok(None); // the item has no price record (LEFT JOIN)
        };
        Ok(Some(PriceRecord {
            id,
            sku: sku.to_string(),
            price: r.get(3)?,
            starts_at: ts(r.get(4)?),
            ends_at: r.get::<_, Option<i64>>(5)?.map(ts),
            received: r.get(6)?,
        }))
    };
    let mut records: Vec<PriceRecord> = record(first)?.into_iter().collect();
    while let Some(r) = rows.next()? {
        records.extend(record(r)?);
    }
    Ok(Some((item, records)))
}

/// Everything the engine needs about `sku`, promotions read from the database (see
/// [`load_with`] for lookups, which take them from the in-memory cache).
pub fn load(conn: &Connection, sku: &str) -> DbResult<Option<PricingData>> {
    let Some((item, records)) = load_item(conn, sku)? else {
        return Ok(None);
    };
    // Two indexed lookups joined by UNION (which also drops a promotion found both ways); an OR
    // here made SQLite test every promotion against the sku index on each lookup.
    let mut stmt = conn.prepare_cached(
        "SELECT p.id, p.name, p.kind, p.params, p.skus, p.department, p.starts_ms, p.ends_ms
           FROM promotion_skus s JOIN promotions p ON p.id = s.promotion_id WHERE s.sku = ?1
         UNION
         SELECT id, name, kind, params, skus, department, starts_ms, ends_ms
           FROM promotions WHERE department IS NOT NULL AND department = ?2",
    )?;
    let promos = stmt
        .query_map(params![sku, item.department], promotion_row)?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    Ok(Some((item, records, promos)))
}

/// [`load`] with the promotions taken from `promos` (checked against the database's promotions
/// version in the same read), for price lookups and baskets.
pub fn load_with(
    conn: &Connection,
    sku: &str,
    promos: &promo_cache::PromotionCache,
) -> DbResult<Option<PricingData>> {
    load_with_version(conn, sku, promos, promo_cache::version(conn)?)
}

/// [`load_with`] when the caller has read the promotions version in this read transaction.
pub fn load_with_version(
    conn: &Connection,
    sku: &str,
    promos: &promo_cache::PromotionCache,
    promotions_version: i64,
) -> DbResult<Option<PricingData>> {
    let Some((item, records)) = load_item(conn, sku)? else {
        return Ok(None);
    };
    let promotions = promos.for_item_at(conn, &item, promotions_version)?;
    Ok(Some((item, records, promotions)))
}

/// Applies a list of events in one transaction: all or nothing. The error names the 1-based index.
pub fn apply_all(
    conn: &mut Connection,
    events: &[HqEvent],
    tz: jiff::tz::TimeZone,
    now_ms: i64,
) -> Result<usize, (usize, ApplyError)> {
    let tx = crate::db::immediate(conn).map_err(|e| (0, e.into()))?;
    {
        let mut applier = Applier::begin(&tx, tz, now_ms).map_err(|e| (0, e.into()))?;
        for (i, ev) in events.iter().enumerate() {
            applier.apply(ev).map_err(|e| (i + 1, e))?;
        }
        applier.finish().map_err(|e| (0, e.into()))?;
    }
    tx.commit().map_err(|e| (0, e.into()))?;
    Ok(events.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        crate::db::migrations::migrate(&mut c, crate::db::migrations::MIGRATIONS.len()).unwrap();
        c
    }

    /// Applies each event in its own transaction and returns the skus each one reported.
    fn apply(c: &mut Connection, events: &[(&str, Value)]) -> Vec<Vec<String>> {
        let tx = crate::db::immediate(c).unwrap();
        let mut out = Vec::new();
        {
            let mut a = Applier::begin(&tx, jiff::tz::TimeZone::UTC, 7).unwrap();
            for (t, p) in events {
                let ev = HqEvent {
                    id: None,
                    event_type: t.to_string(),
                    payload: p.clone(),
                };
                out.push(a.apply(&ev).unwrap());
            }
            a.finish().unwrap();
        }
        tx.commit().unwrap();
        out
    }

    fn rows<A: rusqlite::types::FromSql, B: rusqlite::types::FromSql>(
        c: &Connection,
        sql: &str,
    ) -> Vec<(A, B)> {
        c.prepare(sql)
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn barcodes(c: &Connection) -> Vec<(String, String)> {
        rows(c, "SELECT barcode, sku FROM barcodes ORDER BY barcode")
    }

    fn upsert(sku: &str, name: &str, barcodes: &[&str]) -> (&'static str, Value) {
        (
            "catalog.upsert",
            json!({"sku": sku, "name": name, "unit": "each", "department": "d", "barcodes": barcodes}),
        )
    }

    #[test]
    fn upserts_of_an_existing_item_keep_add_drop_and_move_barcodes() {
        let mut c = db();
        apply(
            &mut c,
            &[upsert("1", "Milk", &["a", "b"]), upsert("2", "Tea", &["t"])],
        );
        assert_eq!(
            barcodes(&c),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "1".into()),
                ("t".into(), "2".into())
            ]
        );
        // Item 1 keeps "b", drops "a", gains "c" and takes "t" from item 2; the same barcode
        // listed twice is harmless.
        let skus = apply(
            &mut c,
            &[(
                "catalog.upsert",
                json!({"sku": "1", "name": "Whole milk", "unit": "kg", "barcodes": ["b", "c", "t", "c"],
                       "attributes": {"fat": 3.5}}),
            )],
        );
        assert_eq!(skus, vec![vec!["1".to_string()]]);
        assert_eq!(
            barcodes(&c),
            vec![
                ("b".into(), "1".into()),
                ("c".into(), "1".into()),
                ("t".into(), "1".into())
            ]
        );
        let item = item_view(&c, "1").unwrap().unwrap();
        assert_eq!(
            (item.name.as_str(), item.department, item.unit.as_str()),
            ("Whole milk", None, "kg")
        );
        assert_eq!(item.attributes, json!({"fat": 3.5}));
        // No barcodes at all: all dropped; a deleted and re-created item starts without any.
        apply(&mut c, &[upsert("1", "Whole milk", &[])]);
        assert_eq!(barcodes(&c), vec![]);
        apply(
            &mut c,
            &[
                upsert("2", "Tea", &["t2"]),
                ("catalog.delete", json!({"sku": "2"})),
                upsert("2", "Green tea", &["g"]),
            ],
        );
        assert_eq!(barcodes(&c), vec![("g".into(), "2".into())]);
    }

    fn price(id: &str, sku: &str, price: i64) -> (&'static str, Value) {
        (
            "price.set",
            json!({"id": id, "sku": sku, "price": price, "starts_at": "2026-01-01T00:00:00Z"}),
        )
    }

    #[test]
    fn remembered_times_resolve_like_fresh_ones() {
        // More distinct texts than the memo holds, each seen twice, and one the memo never keeps.
        let texts: Vec<String> = (1..=6)
            .map(|d| format!("2026-01-0{d}T00:00:00Z"))
            .chain(["2026-01-01T01:00:00+01:00".to_string()])
            .collect();
        let mut c = db();
        let events: Vec<(&str, Value)> = texts
            .iter()
            .chain(&texts)
            .enumerate()
            .map(|(i, t)| {
                (
                    "price.set",
                    json!({"id": format!("p{i}"), "sku": "A", "price": 1, "starts_at": t, "ends_at": t}),
                )
            })
            .collect();
        apply(&mut c, &events);
        let got: Vec<(i64, i64)> = rows(
            &c,
            "SELECT starts_ms, ends_ms FROM prices ORDER BY received",
        );
        let want: Vec<(i64, i64)> = texts
            .iter()
            .chain(&texts)
            .map(|t| {
                let ms = crate::pricing::parse_store_time(t, &jiff::tz::TimeZone::UTC)
                    .unwrap()
                    .as_millisecond();
                (ms, ms)
            })
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_price_record_replaced_on_its_sku_or_moved_to_another_reports_every_changed_sku() {
        let mut c = db();
        let skus = apply(
            &mut c,
            &[
                price("p1", "A", 100),
                price("p1", "A", 120),
                price("p1", "B", 130),
                price("p2", "B", 90),
            ],
        );
        assert_eq!(
            skus,
            vec![
                vec!["A".to_string()],
                vec!["A".to_string()],
                vec!["B".to_string(), "A".to_string()],
                vec!["B".to_string()],
            ]
        );
        let prices: Vec<(String, String, i64, i64)> = c
            .prepare("SELECT id, sku, price, received FROM prices ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            prices,
            vec![
                ("p1".to_string(), "B".to_string(), 130, 3),
                ("p2".to_string(), "B".to_string(), 90, 4)
            ]
        );
        // Nothing of the record stays under its old sku.
        let on_a: i64 = c
            .query_row("SELECT count(*) FROM prices WHERE sku = 'A'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(on_a, 0);
        // A later batch continues the arrival counter.
        apply(&mut c, &[price("p2", "B", 95)]);
        let received: i64 = c
            .query_row("SELECT received FROM prices WHERE id = 'p2'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(received, 5);
    }
}
