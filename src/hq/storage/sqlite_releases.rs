//! The SQLite engine's release registry and rollouts: plain functions over a connection or the
//! caller's transaction (the one writer is the rollout lock). Packages are files
//! `releases/<sha256>.deb` next to `hq.db`, written to a temp file, fsynced and renamed.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::hq::error::{HqError, HqResult};
use crate::hq::releases::{
    self, parse_store_state, plan_tick, reported_state, store_state_str, ReleaseRow, RolloutRow,
    RolloutSpec, RolloutState, RolloutStoreRow, Tick, Withdrawal,
};
use crate::hq::rollout::FleetStore;
use crate::proto::release::{Manifest, ReleaseState, ReleaseStatus};
use crate::proto::Target;

fn release_from(manifest: String, uploaded_ms: i64, uploaded_by: String) -> HqResult<ReleaseRow> {
    let manifest: Manifest = serde_json::from_str(&manifest)
        .map_err(|e| HqError::storage(format!("stored manifest: {e}")))?;
    Ok(ReleaseRow {
        manifest,
        uploaded_ms,
        uploaded_by,
    })
}

pub fn get_release(c: &Connection, version: &str) -> HqResult<Option<ReleaseRow>> {
    let r = c
        .query_row(
            "SELECT manifest, uploaded_ms, uploaded_by FROM releases WHERE version = ?1",
            [version],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    r.map(|(m, ms, by)| release_from(m, ms, by)).transpose()
}

pub fn list_releases(c: &Connection) -> HqResult<Vec<ReleaseRow>> {
    let mut stmt = c.prepare(
        "SELECT manifest, uploaded_ms, uploaded_by FROM releases ORDER BY uploaded_ms DESC, version",
    )?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<Vec<(String, i64, String)>, _>>()?;
    rows.into_iter()
        .map(|(m, ms, by)| release_from(m, ms, by))
        .collect()
}

pub fn insert_release(c: &Connection, r: &ReleaseRow) -> HqResult<()> {
    let m = &r.manifest;
    let text = serde_json::to_string(m).map_err(HqError::storage)?;
    c.execute(
        "INSERT INTO releases (version, name, serial, channel, size, sha256, manifest, uploaded_ms, uploaded_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            m.version,
            m.name,
            m.serial as i64,
            m.channel,
            m.size as i64,
            m.sha256,
            text,
            r.uploaded_ms,
            r.uploaded_by
        ],
    )?;
    Ok(())
}

/// Moves the temp file `from` to `dir/<sha256>.deb` durably (fsync file, rename, fsync dir).
pub fn keep_package(dir: &Path, sha256: &str, from: &Path) -> HqResult<()> {
    let io = |what: &str, e: std::io::Error| HqError::storage(format!("{what}: {e}"));
    std::fs::create_dir_all(dir).map_err(|e| io(&format!("creating {}", dir.display()), e))?;
    std::fs::File::open(from)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(&format!("fsync {}", from.display()), e))?;
    let to = package_file(dir, sha256);
    std::fs::rename(from, &to).map_err(|e| io(&format!("rename to {}", to.display()), e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(&format!("fsync {}", dir.display()), e))?;
    Ok(())
}

pub fn package_file(dir: &Path, sha256: &str) -> std::path::PathBuf {
    dir.join(format!("{sha256}.deb"))
}

/// Up to `len` bytes of a kept package from `offset`.
pub fn read_package(dir: &Path, sha256: &str, offset: u64, len: usize) -> HqResult<Vec<u8>> {
    let path = package_file(dir, sha256);
    let mut f = std::fs::File::open(&path)
        .map_err(|e| HqError::storage(format!("opening {}: {e}", path.display())))?;
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| HqError::storage(format!("seeking {}: {e}", path.display())))?;
    let mut buf = Vec::with_capacity(len.min(releases::CHUNK_BYTES));
    f.take(len as u64)
        .read_to_end(&mut buf)
        .map_err(|e| HqError::storage(format!("reading {}: {e}", path.display())))?;
    Ok(buf)
}

pub fn assigned(c: &Connection, store: &str, version: &str) -> HqResult<bool> {
    Ok(c.query_row(
        "SELECT 1 FROM rollout_stores rs JOIN rollouts r ON r.id = rs.rollout_id
         WHERE rs.store_id = ?1 AND r.version = ?2 LIMIT 1",
        [store, version],
        |_| Ok(()),
    )
    .optional()?
    .is_some())
}

const ROLLOUT_COLS: &str = "id, plan, state, reason, created_ms, updated_ms, created_by";

fn rollout_from(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<(String, String, String, String, i64, i64, String)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

type RawRollout = (String, String, String, String, i64, i64, String);

fn rollout_parse(raw: RawRollout) -> HqResult<RolloutRow> {
    let (id, plan, state, reason, created_ms, updated_ms, created_by) = raw;
    let spec: RolloutSpec = serde_json::from_str(&plan)
        .map_err(|e| HqError::storage(format!("stored plan of rollout {id}: {e}")))?;
    Ok(RolloutRow {
        id,
        spec,
        state: RolloutState::parse(&state)?,
        reason,
        created_ms,
        updated_ms,
        created_by,
    })
}

pub fn get_rollout(c: &Connection, id: &str) -> HqResult<Option<RolloutRow>> {
    let raw = c
        .query_row(
            &format!("SELECT {ROLLOUT_COLS} FROM rollouts WHERE id = ?1"),
            [id],
            rollout_from,
        )
        .optional()?;
    raw.map(rollout_parse).transpose()
}

pub fn list_rollouts(c: &Connection) -> HqResult<Vec<RolloutRow>> {
    let mut stmt = c.prepare(&format!(
        "SELECT {ROLLOUT_COLS} FROM rollouts ORDER BY created_ms DESC, id DESC"
    ))?;
    let raws = stmt
        .query_map([], rollout_from)?
        .collect::<Result<Vec<_>, _>>()?;
    raws.into_iter().map(rollout_parse).collect()
}

pub fn rollout_stores(c: &Connection, id: &str) -> HqResult<Vec<RolloutStoreRow>> {
    let mut stmt = c.prepare_cached(
        "SELECT store_id, wave, version, state, attempts, reason, assigned_ms, updated_ms
         FROM rollout_stores WHERE rollout_id = ?1 ORDER BY wave, store_id",
    )?;
    let raws = stmt
        .query_map([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, i64>(7)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    raws.into_iter()
        .map(|(store, wave, version, state, attempts, reason, a, u)| {
            Ok(RolloutStoreRow {
                store,
                wave,
                version,
                state: parse_store_state(&state)?,
                attempts,
                reason,
                assigned_ms: a,
                updated_ms: u,
            })
        })
        .collect()
}

pub fn fleet(c: &Connection) -> HqResult<Vec<FleetStore>> {
    let mut stmt = c.prepare_cached("SELECT id, grp FROM stores ORDER BY id")?;
    let rows = stmt
        .query_map([], |r| {
            Ok(FleetStore {
                id: r.get(0)?,
                group: r.get(1)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Authors a rollout's `release.withdraw` for exactly its stores (see [`releases::withdrawal`]).
fn author_withdrawal(
    tx: &Transaction<'_>,
    w: &Withdrawal,
    now_ms: i64,
    retain: u64,
) -> HqResult<()> {
    let target = Target::Stores {
        stores: w.stores.clone(),
    };
    super::append(tx, &target, &w.event, now_ms)?;
    super::prune(tx, retain)?;
    Ok(())
}

/// The withdrawal of an active rollout being aborted now (its rows as they are before); true
/// when an event was authored.
fn withdraw(
    tx: &Transaction<'_>,
    id: &str,
    version: &str,
    reason: &str,
    now_ms: i64,
    retain: u64,
) -> HqResult<bool> {
    let Some(w) = releases::withdrawal(id, version, reason, &rollout_stores(tx, id)?)? else {
        return Ok(false);
    };
    author_withdrawal(tx, &w, now_ms, retain)?;
    Ok(true)
}

/// Creates the rollout and aborts every active one as superseded; a superseded rollout of another
/// version withdraws its pending assignments (one of the same version does not: the new rollout
/// assigns that version again). Returns the superseded ids.
pub fn create_rollout(
    tx: &Transaction<'_>,
    row: &RolloutRow,
    retain: u64,
) -> HqResult<Vec<String>> {
    if get_release(tx, &row.spec.version)?.is_none() {
        return Err(releases::unknown_version(&row.spec.version));
    }
    let mut stmt = tx.prepare(
        "SELECT id, version FROM rollouts WHERE state IN ('running', 'paused') ORDER BY id",
    )?;
    let active = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let reason = releases::superseded_reason(&row.id);
    for (old, version) in &active {
        tx.execute(
            "UPDATE rollouts SET state = 'aborted', reason = ?2, updated_ms = ?3 WHERE id = ?1",
            params![old, reason, row.created_ms],
        )?;
        if *version != row.spec.version {
            withdraw(tx, old, version, &reason, row.created_ms, retain)?;
        }
    }
    let plan = serde_json::to_string(&row.spec).map_err(HqError::storage)?;
    tx.execute(
        "INSERT INTO rollouts (id, version, plan, state, reason, created_ms, updated_ms, created_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            row.id,
            row.spec.version,
            plan,
            row.state.as_str(),
            row.reason,
            row.created_ms,
            row.updated_ms,
            row.created_by
        ],
    )?;
    Ok(active.into_iter().map(|(id, _)| id).collect())
}

/// Pause, resume or abort; an abort withdraws the rollout's pending assignments in the same
/// transaction.
pub fn set_state(
    tx: &Transaction<'_>,
    id: &str,
    to: RolloutState,
    reason: &str,
    now_ms: i64,
    retain: u64,
) -> HqResult<RolloutRow> {
    let row = get_rollout(tx, id)?.ok_or_else(|| releases::unknown_rollout(id))?;
    releases::check_transition(&row, to)?;
    tx.execute(
        "UPDATE rollouts SET state = ?2, reason = ?3, updated_ms = ?4 WHERE id = ?1",
        params![id, to.as_str(), reason, now_ms],
    )?;
    if to == RolloutState::Aborted {
        withdraw(tx, id, &row.spec.version, reason, now_ms, retain)?;
    }
    get_rollout(tx, id)?.ok_or_else(|| releases::unknown_rollout(id))
}

/// One engine step in the caller's (immediate) transaction; `append` authors the event.
pub fn tick(tx: &Transaction<'_>, id: &str, now: jiff::Timestamp, retain: u64) -> HqResult<Tick> {
    let now_ms = now.as_millisecond();
    let row = get_rollout(tx, id)?.ok_or_else(|| releases::unknown_rollout(id))?;
    if !row.state.is_active() {
        return Ok(Tick::default());
    }
    let release = get_release(tx, &row.spec.version)?
        .ok_or_else(|| releases::unknown_version(&row.spec.version))?;
    let t = plan_tick(
        &row,
        &release.manifest,
        &fleet(tx)?,
        &rollout_stores(tx, id)?,
        now,
    )?;
    for s in &t.timed_out {
        tx.execute(
            "UPDATE rollout_stores SET state = 'timed_out', reason = ?3, updated_ms = ?4
             WHERE rollout_id = ?1 AND store_id = ?2",
            params![id, s, releases::timeout_reason(&row), now_ms],
        )?;
    }
    if let Some(ev) = &t.event {
        let mut ins = tx.prepare_cached(
            "INSERT INTO rollout_stores (rollout_id, store_id, wave, version, state, attempts, reason, assigned_ms, updated_ms)
             VALUES (?1, ?2, ?3, ?4, 'assigned', 0, '', ?5, ?5)",
        )?;
        for (store, wave) in &t.assign {
            ins.execute(params![id, store, wave, row.spec.version, now_ms])?;
        }
        let target = Target::Stores {
            stores: t.assign.iter().map(|(s, _)| s.clone()).collect(),
        };
        super::append(tx, &target, ev, now_ms)?;
        super::prune(tx, retain)?;
    }
    if let Some(w) = &t.withdraw {
        author_withdrawal(tx, w, now_ms, retain)?;
    }
    if let Some((state, why)) = &t.new_state {
        tx.execute(
            "UPDATE rollouts SET state = ?2, reason = ?3, updated_ms = ?4 WHERE id = ?1",
            params![id, state.as_str(), why, now_ms],
        )?;
    }
    Ok(t)
}

/// Records a store's `release.status` on its row of the rollout it names (else the newest
/// rollout of that version that assigned it); a report about no assignment changes nothing.
pub fn apply_status(
    tx: &Transaction<'_>,
    store: &str,
    st: &ReleaseStatus,
    now_ms: i64,
) -> crate::db::DbResult<()> {
    let state = store_state_str(reported_state(st.state));
    let attempt = i64::from(st.state == ReleaseState::Installing);
    let reason = releases::bounded_reason(&st.reason);
    let rollout: Option<String> = match &st.rollout {
        Some(r) => Some(r.clone()),
        None => tx
            .query_row(
                "SELECT rs.rollout_id FROM rollout_stores rs JOIN rollouts r ON r.id = rs.rollout_id
                 WHERE rs.store_id = ?1 AND r.version = ?2 ORDER BY r.created_ms DESC LIMIT 1",
                [store, st.version.as_str()],
                |r| r.get(0),
            )
            .optional()?,
    };
    if let Some(r) = rollout {
        tx.prepare_cached(
            "UPDATE rollout_stores SET version = ?3, state = ?4, reason = ?5, updated_ms = ?6,
               attempts = attempts + ?7 WHERE rollout_id = ?1 AND store_id = ?2",
        )?
        .execute(params![
            r, store, st.version, state, reason, now_ms, attempt
        ])?;
    }
    Ok(())
}
