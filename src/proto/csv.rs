//! Catalog and price CSV (the bulk form of `catalog.upsert` and `price.set`): a header row names
//! the columns, each row becomes one HQ event. Read by the store's `storebox import` and by HQ's
//! bulk authoring, so that a file one accepts the other accepts too. Streamed: a million rows need
//! no more memory than one.

use serde_json::{json, Map, Value};

use super::events::HqEvent;

/// Reads a catalog or price CSV (header row: `sku,name,department,unit,barcodes` or
/// `id,sku,price,starts_at,ends_at`, columns in any order, empty cells absent) and hands each row to `each` as an
/// HQ event with its 1-based line number. Stops at the first bad row or the first `Err` from
/// `each`, returning its line and the reason. Used by `storebox import` and HQ's bulk import.
pub fn csv_events<R: std::io::Read>(
    reader: R,
    mut each: impl FnMut(u64, HqEvent) -> Result<(), String>,
) -> Result<u64, (u64, String)> {
    let line_err = |n: u64, m: String| (n, m);
    let mut events = 0u64;
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(reader);
    let headers = rdr
        .headers()
        .map_err(|e| line_err(1, format!("bad header: {e}")))?
        .clone();
    let cols: Vec<String> = headers.iter().map(|h| h.to_ascii_lowercase()).collect();
    let is_prices = cols.iter().any(|c| c == "price");
    let required: &[&str] = if is_prices {
        &["id", "sku", "price", "starts_at"]
    } else {
        &["sku", "name", "unit"]
    };
    for r in required {
        if !cols.iter().any(|c| c == r) {
            return Err(line_err(
                1,
                format!("missing column {r:?} (have: {})", cols.join(",")),
            ));
        }
    }
    let allowed: &[&str] = if is_prices {
        &["id", "sku", "price", "starts_at", "ends_at"]
    } else {
        &["sku", "name", "department", "unit", "barcodes"]
    };
    if let Some(c) = cols.iter().find(|c| !allowed.contains(&c.as_str())) {
        return Err(line_err(
            1,
            format!("unknown column {c:?}; allowed: {}", allowed.join(",")),
        ));
    }
    for record in rdr.records() {
        let record = record.map_err(|e| {
            let n = e.position().map_or(0, |p| p.line());
            line_err(n, format!("bad CSV row: {e}"))
        })?;
        let n = record.position().map_or(0, |p| p.line());
        let mut m = Map::new();
        for (c, v) in cols.iter().zip(record.iter()) {
            if !v.is_empty() {
                m.insert(c.clone(), Value::String(v.to_string()));
            }
        }
        let ev = if is_prices {
            let price_text = m.get("price").and_then(Value::as_str).unwrap_or("");
            let price: i64 = price_text
                    .parse()
                    .map_err(|_| line_err(n, format!("price {price_text:?} must be a whole number of minor units (e.g. 129 for 1.29)")))?;
            m.insert("price".into(), json!(price));
            HqEvent {
                id: None,
                event_type: "price.set".into(),
                payload: Value::Object(m),
            }
        } else {
            let barcodes: Vec<Value> = m
                .remove("barcodes")
                .and_then(|v| v.as_str().map(str::to_string))
                .map(|s| {
                    s.split('|')
                        .map(str::trim)
                        .filter(|b| !b.is_empty())
                        .map(|b| json!(b))
                        .collect()
                })
                .unwrap_or_default();
            m.insert("barcodes".into(), Value::Array(barcodes));
            HqEvent {
                id: None,
                event_type: "catalog.upsert".into(),
                payload: Value::Object(m),
            }
        };
        each(n, ev).map_err(|m| line_err(n, m))?;
        events += 1;
    }
    Ok(events)
}
