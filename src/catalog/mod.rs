//! The store's local copy of the catalog, effective-dated prices and promotions, in SQLite. It is
//! written only through [`Applier::apply`], which takes the HQ event types of the sync protocol
//! (`catalog.upsert`, `catalog.delete`, `price.set`, `price.cancel`, `promotion.upsert`,
//! `promotion.cancel`) — the same path for the HQ feed and for `storebox import` — and read with
//! [`load`] into the plain data the pricing engine works on.

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

/// An HQ event as it travels (sync feed, import files): DESIGN §4 wire shape.
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
}

#[derive(Default)]
struct Stmts<'t> {
    item_upsert: Option<CachedStatement<'t>>,
    barcodes_delete: Option<CachedStatement<'t>>,
    barcode_insert: Option<CachedStatement<'t>>,
    price_sku: Option<CachedStatement<'t>>,
    price_insert: Option<CachedStatement<'t>>,
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
    pub fn check(&self, event_type: &str, payload: &Value) -> Result<Checked, String> {
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
                let r = p
                    .to_record(&self.tz, 0)
                    .map_err(|e| format!("price.set {}: {e}", p.id))?;
                Ok(Checked::PriceSet(r))
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
        let tx = self.tx;
        match checked {
            Checked::Upsert(item) => {
                let st = &mut self.stmts;
                held(&mut st.item_upsert, tx,
                    "INSERT INTO items (sku, name, department, unit, attributes, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (sku) DO UPDATE SET name = excluded.name, department = excluded.department,
                       unit = excluded.unit, attributes = excluded.attributes, updated_ms = excluded.updated_ms",
                )?
                .execute(params![
                    item.sku,
                    item.name,
                    item.department,
                    item.unit.as_str(),
                    serde_json::to_string(&item.attributes).unwrap_or_else(|_| "{}".into()),
                    self.now_ms
                ])?;
                held(
                    &mut st.barcodes_delete,
                    tx,
                    "DELETE FROM barcodes WHERE sku = ?1",
                )?
                .execute([&item.sku])?;
                let ins = held(
                    &mut st.barcode_insert,
                    tx,
                    "INSERT OR REPLACE INTO barcodes (barcode, sku) VALUES (?1, ?2)",
                )?;
                for b in &item.barcodes {
                    ins.execute(params![b, item.sku])?;
                }
                Ok(vec![item.sku])
            }
            Checked::Delete(sku) => {
                tx.prepare_cached("DELETE FROM items WHERE sku = ?1")?
                    .execute([&sku])?;
                tx.prepare_cached("DELETE FROM barcodes WHERE sku = ?1")?
                    .execute([&sku])?;
                Ok(vec![sku])
            }
            Checked::PriceSet(mut r) => {
                self.received += 1;
                r.received = self.received;
                // A replaced record may have belonged to another sku: both change.
                let st = &mut self.stmts;
                let old_sku: Option<String> = held(
                    &mut st.price_sku,
                    tx,
                    "SELECT sku FROM prices WHERE id = ?1",
                )?
                .query_row([&r.id], |row| row.get(0))
                .optional()?;
                held(&mut st.price_insert, tx,
                    "INSERT OR REPLACE INTO prices (id, sku, price, starts_ms, ends_ms, received) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    r.id,
                    r.sku,
                    r.price,
                    r.starts_at.as_millisecond(),
                    r.ends_at.map(|t| t.as_millisecond()),
                    r.received
                ])?;
                let mut skus = vec![r.sku];
                skus.extend(old_sku.filter(|s| s != &skus[0]));
                Ok(skus)
            }
            Checked::PriceCancel(id) => {
                let sku: Option<String> = tx
                    .prepare_cached("DELETE FROM prices WHERE id = ?1 RETURNING sku")?
                    .query_row([&id], |r| r.get(0))
                    .optional()?;
                Ok(sku.into_iter().collect())
            }
            Checked::PromotionUpsert(promo) => {
                let mut skus = self.promotion_skus(&promo.id)?;
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
                skus.extend(self.promotion_skus(&promo.id)?);
                skus.sort();
                skus.dedup();
                Ok(skus)
            }
            Checked::PromotionCancel(id) => {
                let skus = self.promotion_skus(&id)?;
                self.delete_promotion(&id)?;
                Ok(skus)
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
    let Some((item, records)) = load_item(conn, sku)? else {
        return Ok(None);
    };
    let promotions = promos.for_item(conn, &item)?;
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
