//! Versioned schema migrations, embedded in the binary and applied in order, one transaction
//! each. `PRAGMA user_version` records how many have run. Never edit a released migration: add one.

use rusqlite::Connection;

use super::{DbError, DbResult};

pub const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_core", include_str!("migrations/0001_core.sql")),
    (
        "0002_devices_ops",
        include_str!("migrations/0002_devices_ops.sql"),
    ),
    ("0003_catalog", include_str!("migrations/0003_catalog.sql")),
    ("0004_tickets", include_str!("migrations/0004_tickets.sql")),
    ("0005_sync", include_str!("migrations/0005_sync.sql")),
    (
        "0006_price_lookup",
        include_str!("migrations/0006_price_lookup.sql"),
    ),
    (
        "0007_catalog_version",
        include_str!("migrations/0007_catalog_version.sql"),
    ),
    (
        "0008_promotion_times",
        include_str!("migrations/0008_promotion_times.sql"),
    ),
    (
        "0009_support_guides",
        include_str!("migrations/0009_support_guides.sql"),
    ),
    ("0010_updates", include_str!("migrations/0010_updates.sql")),
    (
        "0011_release_withdraw",
        include_str!("migrations/0011_release_withdraw.sql"),
    ),
];

pub fn current_version(conn: &Connection) -> DbResult<i64> {
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

/// Applies migrations until `target` of them have run.
pub fn migrate(conn: &mut Connection, target: usize) -> DbResult<()> {
    migrate_list(conn, MIGRATIONS, target)
}

/// [`migrate`] over another list of migrations (the reference HQ has its own database).
pub fn migrate_list(
    conn: &mut Connection,
    list: &'static [(&'static str, &'static str)],
    target: usize,
) -> DbResult<()> {
    let found = current_version(conn)?;
    let known = list.len() as i64;
    if found > known {
        return Err(DbError::TooNew { found, known });
    }
    for (i, (name, sql)) in list.iter().enumerate().take(target) {
        let version = i as i64 + 1;
        if version <= found {
            continue;
        }
        let tx = crate::db::immediate(conn)?;
        tx.execute_batch(sql)
            .map_err(|source| DbError::Migration { name, source })?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!(migration = name, version, "database migrated");
    }
    Ok(())
}
