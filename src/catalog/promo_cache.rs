//! Parsed promotions kept in memory for price lookups. A store has hundreds of promotions and
//! they change only when HQ data is applied, yet every lookup used to query and parse those of
//! its sku and department again (the largest part of a lookup's database time). The cache is
//! checked against a version counter that database triggers bump on every write to
//! `promotions` or `promotion_skus` (migration 0006), read in the caller's read transaction: a
//! lookup never sees promotions older than the prices it reads, whichever process wrote them
//! (`storebox import`, the sync client, a restore).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::Connection;

use crate::db::DbResult;
use crate::pricing::{Item, Promotion};

/// All stored promotions, indexed by targeted sku and by department.
struct Index {
    version: i64,
    all: Vec<Promotion>,
    by_sku: HashMap<String, Vec<usize>>,
    by_department: HashMap<String, Vec<usize>>,
}

/// Shared by the HTTP handlers and the MQTT price replies of one box.
#[derive(Default)]
pub struct PromotionCache {
    index: Mutex<Option<Arc<Index>>>,
}

/// The promotions version the triggers maintain.
pub fn version(conn: &Connection) -> DbResult<i64> {
    Ok(conn
        .prepare_cached("SELECT promotions_version FROM catalog_state WHERE id = 1")?
        .query_row([], |r| r.get(0))?)
}

impl PromotionCache {
    /// The index of promotions version `v` (read by the caller in this read transaction).
    fn current(&self, conn: &Connection, v: i64) -> DbResult<Arc<Index>> {
        if let Some(ix) = self.index.lock().as_ref() {
            if ix.version == v {
                return Ok(ix.clone());
            }
        }
        let mut stmt = conn.prepare_cached(
            "SELECT id, name, kind, params, skus, department, starts_ms, ends_ms FROM promotions",
        )?;
        let all: Vec<Promotion> = stmt
            .query_map([], super::promotion_row)?
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        let mut by_sku: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_department: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, p) in all.iter().enumerate() {
            for s in &p.skus {
                let v = by_sku.entry(s.clone()).or_default();
                if v.last() != Some(&i) {
                    v.push(i);
                }
            }
            if let Some(d) = &p.department {
                by_department.entry(d.clone()).or_default().push(i);
            }
        }
        let ix = Arc::new(Index {
            version: v,
            all,
            by_sku,
            by_department,
        });
        // Another thread may have loaded a different version meanwhile; either is a valid
        // snapshot, and the next lookup compares again.
        *self.index.lock() = Some(ix.clone());
        Ok(ix)
    }

    /// The promotions that target `item` by sku or by department, as [`super::load`] returns
    /// them; each one's `skus` holds only `item.sku` (when it targets it), which is all the
    /// pricing engine looks at for this item. `version` is the promotions version the caller
    /// read in this read transaction.
    pub fn for_item_at(
        &self,
        conn: &Connection,
        item: &Item,
        version: i64,
    ) -> DbResult<Vec<Promotion>> {
        let ix = self.current(conn, version)?;
        let by_sku = ix.by_sku.get(&item.sku).map(Vec::as_slice).unwrap_or(&[]);
        let by_dept = item
            .department
            .as_ref()
            .and_then(|d| ix.by_department.get(d))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let mut picked: Vec<usize> = by_sku.iter().chain(by_dept).copied().collect();
        picked.sort_unstable();
        picked.dedup();
        Ok(picked
            .into_iter()
            .map(|i| {
                let p = &ix.all[i];
                Promotion {
                    id: p.id.clone(),
                    name: p.name.clone(),
                    kind: p.kind,
                    skus: if by_sku.contains(&i) {
                        vec![item.sku.clone()]
                    } else {
                        Vec::new()
                    },
                    department: p.department.clone(),
                    starts_at: p.starts_at,
                    ends_at: p.ends_at,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{apply_all, load, load_with, HqEvent};
    use crate::db::Db;
    use serde_json::json;

    fn ev(t: &str, payload: serde_json::Value) -> HqEvent {
        HqEvent {
            id: None,
            event_type: t.into(),
            payload,
        }
    }

    fn apply(db: &Db, events: &[HqEvent]) {
        db.write_blocking(|c| {
            apply_all(c, events, jiff::tz::TimeZone::UTC, 0)
                .map_err(|(i, e)| panic!("event {i}: {e}"))
                .unwrap();
            Ok(())
        })
        .unwrap();
    }

    /// (promotion id, its skus as the engine sees them for this item) from both read paths.
    fn both(
        db: &Db,
        cache: &PromotionCache,
        sku: &str,
    ) -> (Vec<(String, Vec<String>)>, Vec<String>) {
        db.read_blocking(|c| {
            let cached = load_with(c, sku, cache)?.unwrap().2;
            let stored = load(c, sku)?.unwrap().2;
            let targets = |p: &Promotion| -> Vec<String> {
                p.skus.iter().filter(|s| *s == sku).cloned().collect()
            };
            for (a, b) in cached.iter().zip(&stored) {
                assert_eq!(
                    (&a.id, &a.name, &a.kind, &a.department),
                    (&b.id, &b.name, &b.kind, &b.department)
                );
                assert_eq!((a.starts_at, a.ends_at), (b.starts_at, b.ends_at));
                assert_eq!(
                    targets(a),
                    targets(b),
                    "{} targets {sku} the same way",
                    a.id
                );
            }
            assert_eq!(
                cached.len(),
                stored.len(),
                "{sku}: same promotions both ways"
            );
            Ok((
                cached
                    .iter()
                    .map(|p| (p.id.clone(), p.skus.clone()))
                    .collect(),
                stored.iter().map(|p| p.id.clone()).collect(),
            ))
        })
        .unwrap()
    }

    #[test]
    fn cached_promotions_match_the_database_and_follow_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Db::open(&path).unwrap();
        let window = json!({"starts_at":"2026-11-27T00:00:00Z","ends_at":"2026-11-30T00:00:00Z"});
        let promo = |id: &str, skus: serde_json::Value, dept: serde_json::Value| {
            let mut p = json!({"id":id,"name":format!("promo {id}"),"kind":"percent_off",
                "params":{"percent":10},"skus":skus,"department":dept});
            p["starts_at"] = window["starts_at"].clone();
            p["ends_at"] = window["ends_at"].clone();
            ev("promotion.upsert", p)
        };
        apply(
            &db,
            &[
                ev(
                    "catalog.upsert",
                    json!({"sku":"1001","name":"Milk","department":"dairy","unit":"each"}),
                ),
                ev(
                    "catalog.upsert",
                    json!({"sku":"1002","name":"Bread","department":"bakery","unit":"each"}),
                ),
                ev(
                    "catalog.upsert",
                    json!({"sku":"1003","name":"Loose","unit":"kg"}),
                ),
                promo("a-dairy", json!([]), json!("dairy")),
                promo("b-both", json!(["1001", "1002"]), json!("dairy")),
                promo("c-bread", json!(["1002"]), json!(null)),
            ],
        );
        let cache = PromotionCache::default();
        let (milk, _) = both(&db, &cache, "1001");
        assert_eq!(
            milk,
            vec![
                ("a-dairy".to_string(), vec![]),
                ("b-both".to_string(), vec!["1001".to_string()]),
            ]
        );
        let (bread, _) = both(&db, &cache, "1002");
        assert_eq!(
            bread.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
            ["b-both", "c-bread"]
        );
        assert!(
            both(&db, &cache, "1003").0.is_empty(),
            "no department, no sku promotion"
        );

        // Another process (a second connection to the same file) cancels one promotion and
        // retargets another: the next lookup sees both changes.
        let other = Db::open(&path).unwrap();
        let v0 = db.read_blocking(version).unwrap();
        apply(
            &other,
            &[
                ev("promotion.cancel", json!({"id":"a-dairy"})),
                promo("c-bread", json!(["1001"]), json!(null)),
            ],
        );
        assert!(
            db.read_blocking(version).unwrap() > v0,
            "the triggers bumped the version"
        );
        let (milk, stored) = both(&db, &cache, "1001");
        assert_eq!(stored, ["b-both", "c-bread"]);
        assert_eq!(milk.len(), 2);
        let (bread, _) = both(&db, &cache, "1002");
        assert_eq!(
            bread.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
            ["b-both"]
        );
    }
}
