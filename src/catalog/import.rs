//! `storebox import FILE`: applies catalog, price and promotion events from a file in one
//! transaction — all or nothing. Formats:
//!
//! - JSON lines (`.jsonl`, `.ndjson`, `.json`): one HQ event per line, the wire shape of docs/sync-protocol.md
//!   `{"id":…,"type":"price.set","payload":{…}}`; blank lines are skipped.
//! - CSV (`.csv`) with a header row. Columns `sku,name,department,unit,barcodes` make
//!   `catalog.upsert` events (barcodes separated by `|`); columns `id,sku,price,starts_at,ends_at`
//!   make `price.set` events. Columns may come in any order; empty cells are absent values.
//!
//! The file is streamed (a million rows need no more memory than one), and the first bad row
//! rejects the file with its line number and the reason.

use std::io::BufRead;
use std::path::Path;

use rusqlite::Connection;

use super::Applier;
use crate::proto::{csv_events, HqEvent};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: line {line}: {message}")]
    Line {
        path: String,
        line: u64,
        message: String,
    },
    #[error("{path}: {message}")]
    File { path: String, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportReport {
    pub events: u64,
}

enum Format {
    JsonLines,
    Csv,
}

fn format_of(path: &Path) -> Option<Format> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "jsonl" | "ndjson" | "json" => Some(Format::JsonLines),
        "csv" => Some(Format::Csv),
        _ => None,
    }
}

/// Reads `path` and applies it in one transaction; nothing is applied if any row is bad.
pub fn import_file(
    conn: &mut Connection,
    path: &Path,
    tz: jiff::tz::TimeZone,
    now_ms: i64,
) -> Result<ImportReport, ImportError> {
    let shown = path.display().to_string();
    let file_err = |message: String| ImportError::File {
        path: shown.clone(),
        message,
    };
    let format = format_of(path)
        .ok_or_else(|| file_err("unknown format: use a .jsonl (events) or .csv file".into()))?;
    let file = std::fs::File::open(path).map_err(|e| file_err(format!("cannot open: {e}")))?;
    let reader = std::io::BufReader::with_capacity(1 << 16, file);
    let tx = crate::db::immediate(conn).map_err(|e| file_err(format!("database: {e}")))?;
    let mut applier =
        Applier::begin(&tx, tz, now_ms).map_err(|e| file_err(format!("database: {e}")))?;
    let mut events = 0u64;
    let line_err = |line: u64, message: String| ImportError::Line {
        path: shown.clone(),
        line,
        message,
    };
    match format {
        Format::JsonLines => {
            for (i, line) in reader.lines().enumerate() {
                let n = i as u64 + 1;
                let line = line.map_err(|e| line_err(n, format!("cannot read: {e}")))?;
                if line.trim().is_empty() {
                    continue;
                }
                let ev: HqEvent = serde_json::from_str(&line)
                    .map_err(|e| line_err(n, format!("not an event object: {e}")))?;
                applier.apply(&ev).map_err(|e| line_err(n, e.to_string()))?;
                events += 1;
            }
        }
        Format::Csv => {
            events = csv_events(reader, |_, ev| {
                applier.apply(&ev).map(|_| ()).map_err(|e| e.to_string())
            })
            .map_err(|(n, m)| line_err(n, m))?;
        }
    }
    applier
        .finish()
        .map_err(|e| file_err(format!("database: {e}")))?;
    tx.commit()
        .map_err(|e| file_err(format!("database: {e}")))?;
    Ok(ImportReport { events })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db")).unwrap();
        (dir, db)
    }

    fn count(db: &Db, table: &str) -> i64 {
        db.read_blocking(|c| {
            Ok(c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
        })
        .unwrap()
    }

    fn import(db: &Db, dir: &Path, name: &str, text: &str) -> Result<ImportReport, ImportError> {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        db.write_blocking(|c| Ok(import_file(c, &path, jiff::tz::TimeZone::UTC, 0)))
            .unwrap()
    }

    #[test]
    fn json_lines_apply_all_or_nothing() {
        let (dir, db) = db();
        let good = r#"{"id":"e-1","type":"catalog.upsert","payload":{"sku":"1001","name":"Whole milk 1 L","barcodes":["8001234567890"],"department":"dairy","unit":"each"}}
{"id":"e-2","type":"price.set","payload":{"id":"pr-1001-base","sku":"1001","price":129,"starts_at":"2026-11-01T00:00:00Z","ends_at":null}}

{"id":"e-3","type":"promotion.upsert","payload":{"id":"promo-bf","name":"Black Friday dairy","kind":"percent_off","params":{"percent":20},"skus":["1001"],"department":null,"starts_at":"2026-11-27T00:00:00","ends_at":"2026-11-30T00:00:00"}}
"#;
        assert_eq!(import(&db, dir.path(), "a.jsonl", good).unwrap().events, 3);
        assert_eq!(
            (
                count(&db, "items"),
                count(&db, "prices"),
                count(&db, "promotions")
            ),
            (1, 1, 1)
        );
        let bad = r#"{"type":"price.set","payload":{"id":"pr-2","sku":"1001","price":99,"starts_at":"2026-12-01T00:00:00Z"}}
{"type":"price.set","payload":{"id":"pr-3","sku":"1001","price":-5,"starts_at":"2026-12-01T00:00:00Z"}}
"#;
        let e = import(&db, dir.path(), "b.jsonl", bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("-5"), "{e}");
        assert_eq!(count(&db, "prices"), 1, "nothing of the bad file applied");
        let e = import(
            &db,
            dir.path(),
            "c.jsonl",
            "{\"type\":\"teleport\",\"payload\":{}}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("line 1") && e.contains("unknown event type"),
            "{e}"
        );
        let e = import(&db, dir.path(), "d.jsonl", "{\"type\":\"catalog.upsert\",\"payload\":{\"sku\":\"1\",\"name\":\"x\",\"unit\":\"litre\"}}\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("unit"), "{e}");
    }

    #[test]
    fn csv_catalog_and_prices() {
        let (dir, db) = db();
        let cat = "sku,name,department,unit,barcodes\n1001,Whole milk 1 L,dairy,each,8001234567890|8001234567891\n2001,Apples,produce,kg,\n";
        assert_eq!(import(&db, dir.path(), "items.csv", cat).unwrap().events, 2);
        assert_eq!(count(&db, "barcodes"), 2);
        let prices = "id,sku,price,starts_at,ends_at\np1,1001,129,2026-11-01T00:00:00Z,\np2,2001,349,2026-11-01T00:00:00,\n";
        assert_eq!(
            import(&db, dir.path(), "prices.csv", prices)
                .unwrap()
                .events,
            2
        );
        let bad = "id,sku,price,starts_at\np3,1001,1.29,2026-11-01T00:00:00Z\n";
        let e = import(&db, dir.path(), "bad.csv", bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("minor units"), "{e}");
        let bad = "id,sku,price,starts_at,colour\n";
        let e = import(&db, dir.path(), "bad2.csv", bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("colour"), "{e}");
        let bad = "id,sku,price,starts_at\np4,1001,100,tomorrow\n";
        let e = import(&db, dir.path(), "bad3.csv", bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("tomorrow"), "{e}");
        assert_eq!(count(&db, "prices"), 2);
    }
}
