//! Price answers kept in memory, as the JSON the API sends. A lane asks for the same products again
//! and again, and an answer only changes when HQ data is applied or when one of the sku's price
//! records or promotions starts or ends; recomputing it each time (item, price records and
//! promotions read and priced, then serialized) was most of a lookup's cost above the HTTP work.
//!
//! An answer is served again only while both hold:
//! - the catalog and promotions versions in the database are those it was computed from.
//!   `catalog::Applier::write` bumps the catalog version once per transaction that writes HQ
//!   events and triggers bump the promotions version (migrations 0006, 0007), so a write by any
//!   process (the sync client, `storebox import`, a snapshot) is seen by the very next lookup.
//!   Reading the versions is a statement, which cost a kept lookup more than the rest of its
//!   handler; [`AnswerCache::versions_now`] reads them only when the database's commit stamp
//!   ([`crate::db::Db::commit_stamp`], one `pread` of the WAL-index header) moved since they
//!   were last read;
//! - the instant asked about lies in `[computed at, next boundary)`: the first `starts_at` or
//!   `ends_at` of the sku's records and promotions after the instant it was computed for
//!   ([`crate::pricing::next_boundary`]), so a scheduled change is never answered late, and a
//!   clock stepped back recomputes.
//!
//! The memory is bounded (`[storage] price_cache_mb`, weighed by the bytes of each answer);
//! quick_cache evicts by S3-FIFO, so the products lanes scan often stay.

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use quick_cache::sync::Cache;
use quick_cache::Weighter;
use rusqlite::Connection;

use crate::db::{CommitStamp, Db, DbResult};

/// The versions an answer was computed from (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    pub catalog: i64,
    pub promotions: i64,
}

/// Both versions, in one indexed read of the caller's transaction.
pub fn versions(conn: &Connection) -> DbResult<Versions> {
    Ok(conn
        .prepare_cached(
            "SELECT catalog_version, promotions_version FROM catalog_state WHERE id = 1",
        )?
        .query_row([], |r| {
            Ok(Versions {
                catalog: r.get(0)?,
                promotions: r.get(1)?,
            })
        })?)
}

#[derive(Clone)]
struct Entry {
    versions: Versions,
    from_ms: i64,
    /// `i64::MAX`: no boundary ahead (valid until the data changes).
    until_ms: i64,
    body: Bytes,
}

/// What a kept answer costs besides the bytes of its key and body: the entry and its hash slot,
/// the allocator's rounding and headers of the key and the body, the body's shared-buffer header.
/// Measured: the resident memory of a box grows ~330 bytes per ~165-byte answer kept
/// (docs/benchmarks.md), so the configured megabytes are what the process really spends.
const ENTRY_OVERHEAD: u64 = 176;

#[derive(Clone)]
struct ByBytes;

impl Weighter<String, Entry> for ByBytes {
    fn weight(&self, key: &String, val: &Entry) -> u64 {
        key.len() as u64 + val.body.len() as u64 + ENTRY_OVERHEAD
    }
}

/// Shared by every HTTP worker of one box.
pub struct AnswerCache {
    /// None when configured off (`price_cache_mb = 0`).
    cache: Option<Cache<String, Entry, ByBytes>>,
    /// Shared with `/metrics` (`storebox_price_cache_hits_total`, `…_misses_total`).
    hits: Counter,
    misses: Counter,
    /// The versions read by a statement started after this stamp was read: valid for as long as
    /// the database shows the same stamp.
    confirmed: parking_lot::Mutex<Option<(CommitStamp, Versions)>>,
}

/// Figures for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: u64,
    pub bytes: u64,
}

impl AnswerCache {
    /// A cache of at most `capacity_bytes` (0: keeps nothing, every lookup computes), counting
    /// its hits and misses in the given counters.
    pub fn new(capacity_bytes: u64, hits: Counter, misses: Counter) -> Self {
        let cache = (capacity_bytes > 0).then(|| {
            // Sized for answers of ~350 bytes with their key and bookkeeping.
            let items = (capacity_bytes / 350).max(16) as usize;
            Cache::with_weighter(items, capacity_bytes, ByBytes)
        });
        AnswerCache {
            cache,
            hits,
            misses,
            confirmed: parking_lot::Mutex::new(None),
        }
    }

    /// False when configured off: then no lookup needs the versions.
    pub fn keeps_answers(&self) -> bool {
        self.cache.is_some()
    }

    /// The catalog and promotions versions of the latest commit by any process: those read
    /// earlier while the commit stamp has not moved since, otherwise one statement (its stamp
    /// read first, so the pair kept never claims more than the statement saw).
    pub async fn versions_now(&self, db: &Db) -> DbResult<Versions> {
        let stamp = db.commit_stamp();
        if let Some(stamp) = stamp {
            if let Some((seen, v)) = *self.confirmed.lock() {
                if seen == stamp {
                    return Ok(v);
                }
            }
        }
        let v = db.read_one_inline(versions).await?;
        if let Some(stamp) = stamp {
            *self.confirmed.lock() = Some((stamp, v));
        }
        Ok(v)
    }

    /// The kept answer for `sku` at `at_ms`, if it was computed from `versions` and `at_ms` lies
    /// in its interval.
    pub fn get(&self, sku: &str, versions: Versions, at_ms: i64) -> Option<Bytes> {
        let hit = self.cache.as_ref().and_then(|c| c.get(sku)).and_then(|e| {
            (e.versions == versions && e.from_ms <= at_ms && at_ms < e.until_ms).then_some(e.body)
        });
        let counter = if hit.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.inc();
        hit
    }

    /// Keeps `body`, computed from `versions` for the instant `from_ms`, valid until `until_ms`
    /// (the next boundary; None: none ahead).
    pub fn put(
        &self,
        sku: &str,
        versions: Versions,
        from_ms: i64,
        until_ms: Option<i64>,
        body: Bytes,
    ) {
        if let Some(c) = &self.cache {
            c.insert(
                sku.to_string(),
                Entry {
                    versions,
                    from_ms,
                    until_ms: until_ms.unwrap_or(i64::MAX),
                    body,
                },
            );
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.get(),
            misses: self.misses.get(),
            entries: self.cache.as_ref().map_or(0, |c| c.len() as u64),
            bytes: self.cache.as_ref().map_or(0, |c| c.weight()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: Versions = Versions {
        catalog: 1,
        promotions: 1,
    };

    #[test]
    fn served_only_with_the_same_versions_inside_the_interval() {
        let c = AnswerCache::new(1 << 20, Counter::default(), Counter::default());
        c.put(
            "1001",
            V1,
            1_000,
            Some(5_000),
            Bytes::from_static(b"{\"price\":129}"),
        );
        assert_eq!(
            c.get("1001", V1, 1_000).as_deref(),
            Some(&b"{\"price\":129}"[..])
        );
        assert!(c.get("1001", V1, 4_999).is_some());
        // At the boundary something may change; before the instant it was computed for, too.
        assert!(c.get("1001", V1, 5_000).is_none());
        assert!(c.get("1001", V1, 999).is_none());
        // Any write to the catalog or the promotions.
        let newer_catalog = Versions { catalog: 2, ..V1 };
        let newer_promos = Versions {
            promotions: 2,
            ..V1
        };
        assert!(c.get("1001", newer_catalog, 2_000).is_none());
        assert!(c.get("1001", newer_promos, 2_000).is_none());
        assert!(c.get("1002", V1, 2_000).is_none());
        // No boundary ahead: valid until the data changes.
        c.put("1002", V1, 1_000, None, Bytes::from_static(b"{}"));
        assert!(c.get("1002", V1, i64::MAX - 1).is_some());
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.entries), (3, 5, 2));
    }

    #[test]
    fn bounded_by_bytes_and_off_at_zero() {
        let c = AnswerCache::new(64 * 1024, Counter::default(), Counter::default());
        let body = Bytes::from(vec![b'x'; 200]);
        for i in 0..2_000 {
            c.put(&format!("{i}"), V1, 0, None, body.clone());
        }
        let s = c.stats();
        assert!(s.bytes <= 64 * 1024, "{s:?}");
        assert!(s.entries < 2_000 && s.entries > 100, "{s:?}");

        let off = AnswerCache::new(0, Counter::default(), Counter::default());
        off.put("1001", V1, 0, None, body);
        assert!(off.get("1001", V1, 1).is_none());
        assert_eq!(off.stats().entries, 0);
    }

    /// The versions a lookup uses are those of the latest commit, also when another connection
    /// (another process) wrote since they were last read, and also once nothing moves.
    #[tokio::test]
    async fn versions_now_follow_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        let db = Db::open(&path).unwrap();
        let c = AnswerCache::new(1 << 20, Counter::default(), Counter::default());
        let other = Connection::open(&path).unwrap();
        let mut last = c.versions_now(&db).await.unwrap();
        for i in 0..6 {
            let column = if i % 2 == 0 {
                "catalog_version"
            } else {
                "promotions_version"
            };
            other
                .execute(
                    &format!("UPDATE catalog_state SET {column} = {column} + 1"),
                    [],
                )
                .unwrap();
            let now = c.versions_now(&db).await.unwrap();
            assert_ne!(now, last, "write {i} not seen");
            assert_eq!(now, db.read_blocking(versions).unwrap());
            // Nothing written since: the same, twice (the second without a statement).
            assert_eq!(c.versions_now(&db).await.unwrap(), now);
            assert_eq!(c.versions_now(&db).await.unwrap(), now);
            last = now;
        }
    }

    #[test]
    fn versions_read_from_the_schema() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::db::migrations::migrate(&mut conn, crate::db::migrations::MIGRATIONS.len()).unwrap();
        let before = versions(&conn).unwrap();
        let tx = conn.transaction().unwrap();
        // A transaction that writes nothing (an empty feed page) keeps the answers.
        let applier = super::super::Applier::begin(&tx, jiff::tz::TimeZone::UTC, 0).unwrap();
        applier.finish().unwrap();
        assert_eq!(versions(&tx).unwrap(), before);
        let mut applier = super::super::Applier::begin(&tx, jiff::tz::TimeZone::UTC, 0).unwrap();
        let item = applier
            .check(
                crate::proto::validate(
                    "catalog.upsert",
                    &serde_json::json!({"sku": "1", "name": "Milk", "unit": "each"}),
                )
                .unwrap(),
            )
            .unwrap();
        applier.write(item).unwrap();
        applier.finish().unwrap();
        tx.execute(
            "INSERT INTO promotions (id, name, kind, params, skus, department, starts_ms, ends_ms, received)
             VALUES ('p', 'p', 'percent_off', '{\"percent\":10}', '[]', NULL, 0, NULL, 0)",
            [],
        )
        .unwrap();
        tx.commit().unwrap();
        let after = versions(&conn).unwrap();
        assert!(after.catalog > before.catalog, "{before:?} {after:?}");
        assert!(after.promotions > before.promotions, "{before:?} {after:?}");
    }
}
