//! The PostgreSQL engine's release registry and rollouts. Package bytes live in the database
//! (`release_chunks`, 1 MiB `bytea` rows keyed by sha256 and index) so that every HQ node can
//! serve every package; a rollout tick holds the rollout row (`SELECT … FOR UPDATE`) for its whole
//! transaction, so two nodes ticking at once never assign a store twice.

use deadpool_postgres::GenericClient;
use tokio::io::AsyncReadExt;

use super::{append, pg};
use crate::hq::error::{HqError, HqResult};
use crate::hq::releases::{
    self, parse_store_state, plan_tick, reported_state, store_state_str, ReleaseRow, RolloutRow,
    RolloutSpec, RolloutState, RolloutStoreRow, Tick, Withdrawal, CHUNK_BYTES,
};
use crate::hq::rollout::FleetStore;
use crate::proto::release::{Manifest, ReleaseState, ReleaseStatus};
use crate::proto::Target;

/// Advisory lock (transaction scope) that serializes release uploads.
pub const RELEASE_LOCK: i64 = 0x5342_5245_4c45_4153; // "SBRELEAS"

fn release_from(r: &tokio_postgres::Row) -> HqResult<ReleaseRow> {
    let manifest: Manifest = serde_json::from_str(r.get::<_, &str>(0))
        .map_err(|e| HqError::storage(format!("stored manifest: {e}")))?;
    Ok(ReleaseRow {
        manifest,
        uploaded_ms: r.get(1),
        uploaded_by: r.get(2),
    })
}

pub async fn get_release(c: &impl GenericClient, version: &str) -> HqResult<Option<ReleaseRow>> {
    c.query_opt(
        "SELECT manifest, uploaded_ms, uploaded_by FROM releases WHERE version = $1",
        &[&version],
    )
    .await
    .map_err(pg)?
    .as_ref()
    .map(release_from)
    .transpose()
}

pub async fn list_releases(c: &impl GenericClient) -> HqResult<Vec<ReleaseRow>> {
    c.query(
        "SELECT manifest, uploaded_ms, uploaded_by FROM releases ORDER BY uploaded_ms DESC, version",
        &[],
    )
    .await
    .map_err(pg)?
    .iter()
    .map(release_from)
    .collect()
}

/// Stores the package file's chunks and the release row in the caller's transaction.
pub async fn insert_release(
    tx: &deadpool_postgres::Transaction<'_>,
    r: &ReleaseRow,
    package: &std::path::Path,
) -> HqResult<()> {
    let m = &r.manifest;
    let mut f = tokio::fs::File::open(package)
        .await
        .map_err(|e| HqError::storage(format!("opening {}: {e}", package.display())))?;
    let ins = tx
        .prepare_cached(
            "INSERT INTO release_chunks (sha256, idx, data) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .await
        .map_err(pg)?;
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut idx: i64 = 0;
    loop {
        let mut n = 0;
        while n < CHUNK_BYTES {
            let got = f
                .read(&mut buf[n..])
                .await
                .map_err(|e| HqError::storage(format!("reading {}: {e}", package.display())))?;
            if got == 0 {
                break;
            }
            n += got;
        }
        if n == 0 {
            break;
        }
        tx.execute(&ins, &[&m.sha256, &idx, &&buf[..n]])
            .await
            .map_err(pg)?;
        idx += 1;
        if n < CHUNK_BYTES {
            break;
        }
    }
    let text = serde_json::to_string(m).map_err(HqError::storage)?;
    tx.execute(
        "INSERT INTO releases (version, name, serial, channel, size, sha256, manifest, uploaded_ms, uploaded_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &m.version,
            &m.name,
            &(m.serial as i64),
            &m.channel,
            &(m.size as i64),
            &m.sha256,
            &text,
            &r.uploaded_ms,
            &r.uploaded_by,
        ],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// Up to `len` bytes of the package from `offset`, from the (at most two) chunks they span.
pub async fn read_package(
    c: &impl GenericClient,
    sha256: &str,
    offset: u64,
    len: usize,
) -> HqResult<Vec<u8>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let ch = CHUNK_BYTES as u64;
    let first = (offset / ch) as i64;
    let last = ((offset + len as u64 - 1) / ch) as i64;
    let rows = c
        .query(
            "SELECT idx, data FROM release_chunks WHERE sha256 = $1 AND idx BETWEEN $2 AND $3 ORDER BY idx",
            &[&sha256, &first, &last],
        )
        .await
        .map_err(pg)?;
    let mut out = Vec::with_capacity(len);
    for r in &rows {
        let idx: i64 = r.get(0);
        let data: &[u8] = r.get(1);
        let start = idx as u64 * ch;
        let from = offset.saturating_sub(start) as usize;
        if from >= data.len() {
            break;
        }
        let want = len - out.len();
        let to = (from + want).min(data.len());
        out.extend_from_slice(&data[from..to]);
        if out.len() == len {
            break;
        }
    }
    Ok(out)
}

pub async fn assigned(c: &impl GenericClient, store: &str, version: &str) -> HqResult<bool> {
    Ok(c.query_opt(
        "SELECT 1 FROM rollout_stores rs JOIN rollouts r ON r.id = rs.rollout_id
             WHERE rs.store_id = $1 AND r.version = $2 LIMIT 1",
        &[&store, &version],
    )
    .await
    .map_err(pg)?
    .is_some())
}

const ROLLOUT_COLS: &str = "id, plan, state, reason, created_ms, updated_ms, created_by";

fn rollout_from(r: &tokio_postgres::Row) -> HqResult<RolloutRow> {
    let id: String = r.get(0);
    let spec: RolloutSpec = serde_json::from_str(r.get::<_, &str>(1))
        .map_err(|e| HqError::storage(format!("stored plan of rollout {id}: {e}")))?;
    Ok(RolloutRow {
        id,
        spec,
        state: RolloutState::parse(r.get::<_, &str>(2))?,
        reason: r.get(3),
        created_ms: r.get(4),
        updated_ms: r.get(5),
        created_by: r.get(6),
    })
}

/// The rollout; `lock`: `FOR UPDATE`, held until the caller's transaction ends.
pub async fn get_rollout(
    c: &impl GenericClient,
    id: &str,
    lock: bool,
) -> HqResult<Option<RolloutRow>> {
    let sql = format!(
        "SELECT {ROLLOUT_COLS} FROM rollouts WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    c.query_opt(&sql, &[&id])
        .await
        .map_err(pg)?
        .as_ref()
        .map(rollout_from)
        .transpose()
}

pub async fn list_rollouts(c: &impl GenericClient) -> HqResult<Vec<RolloutRow>> {
    c.query(
        &format!("SELECT {ROLLOUT_COLS} FROM rollouts ORDER BY created_ms DESC, id DESC"),
        &[],
    )
    .await
    .map_err(pg)?
    .iter()
    .map(rollout_from)
    .collect()
}

pub async fn rollout_stores(c: &impl GenericClient, id: &str) -> HqResult<Vec<RolloutStoreRow>> {
    c.query(
        "SELECT store_id, wave, version, state, attempts, reason, assigned_ms, updated_ms
         FROM rollout_stores WHERE rollout_id = $1 ORDER BY wave, store_id",
        &[&id],
    )
    .await
    .map_err(pg)?
    .iter()
    .map(|r| {
        Ok(RolloutStoreRow {
            store: r.get(0),
            wave: r.get(1),
            version: r.get(2),
            state: parse_store_state(r.get::<_, &str>(3))?,
            attempts: r.get(4),
            reason: r.get(5),
            assigned_ms: r.get(6),
            updated_ms: r.get(7),
        })
    })
    .collect()
}

pub async fn fleet(c: &impl GenericClient) -> HqResult<Vec<FleetStore>> {
    Ok(c.query("SELECT id, grp FROM stores ORDER BY id", &[])
        .await
        .map_err(pg)?
        .iter()
        .map(|r| FleetStore {
            id: r.get(0),
            group: r.get(1),
        })
        .collect())
}

/// Authors a rollout's `release.withdraw` for exactly its stores (see [`releases::withdrawal`]).
async fn author_withdrawal(
    tx: &deadpool_postgres::Transaction<'_>,
    w: &Withdrawal,
    now_ms: i64,
    retain: u64,
) -> HqResult<()> {
    let target = Target::Stores {
        stores: w.stores.clone(),
    };
    append(tx, &target, std::slice::from_ref(&w.event), now_ms, retain).await?;
    Ok(())
}

/// The withdrawal of an active rollout being aborted now (its rows as they are before, the
/// rollout row held by the caller); true when an event was authored.
async fn withdraw(
    tx: &deadpool_postgres::Transaction<'_>,
    id: &str,
    version: &str,
    reason: &str,
    now_ms: i64,
    retain: u64,
) -> HqResult<bool> {
    let rows = rollout_stores(tx, id).await?;
    let Some(w) = releases::withdrawal(id, version, reason, &rows)? else {
        return Ok(false);
    };
    author_withdrawal(tx, &w, now_ms, retain).await?;
    Ok(true)
}

/// See the SQLite engine's `create_rollout`: supersedes every active rollout, withdrawing the
/// pending assignments of those of another version.
pub async fn create_rollout(
    tx: &deadpool_postgres::Transaction<'_>,
    row: &RolloutRow,
    retain: u64,
) -> HqResult<Vec<String>> {
    if get_release(tx, &row.spec.version).await?.is_none() {
        return Err(releases::unknown_version(&row.spec.version));
    }
    let active: Vec<(String, String)> = tx
        .query(
            "SELECT id, version FROM rollouts WHERE state IN ('running', 'paused') ORDER BY id FOR UPDATE",
            &[],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let reason = releases::superseded_reason(&row.id);
    for (old, version) in &active {
        tx.execute(
            "UPDATE rollouts SET state = 'aborted', reason = $2, updated_ms = $3 WHERE id = $1",
            &[old, &reason, &row.created_ms],
        )
        .await
        .map_err(pg)?;
        if *version != row.spec.version {
            withdraw(tx, old, version, &reason, row.created_ms, retain).await?;
        }
    }
    let plan = serde_json::to_string(&row.spec).map_err(HqError::storage)?;
    tx.execute(
        "INSERT INTO rollouts (id, version, plan, state, reason, created_ms, updated_ms, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &row.id,
            &row.spec.version,
            &plan,
            &row.state.as_str(),
            &row.reason,
            &row.created_ms,
            &row.updated_ms,
            &row.created_by,
        ],
    )
    .await
    .map_err(pg)?;
    Ok(active.into_iter().map(|(id, _)| id).collect())
}

/// Pause, resume or abort, holding the rollout row; an abort withdraws the rollout's pending
/// assignments in the same transaction.
pub async fn set_state(
    tx: &deadpool_postgres::Transaction<'_>,
    id: &str,
    to: RolloutState,
    reason: &str,
    now_ms: i64,
    retain: u64,
) -> HqResult<RolloutRow> {
    let row = get_rollout(tx, id, true)
        .await?
        .ok_or_else(|| releases::unknown_rollout(id))?;
    releases::check_transition(&row, to)?;
    tx.execute(
        "UPDATE rollouts SET state = $2, reason = $3, updated_ms = $4 WHERE id = $1",
        &[&id, &to.as_str(), &reason, &now_ms],
    )
    .await
    .map_err(pg)?;
    if to == RolloutState::Aborted {
        withdraw(tx, id, &row.spec.version, reason, now_ms, retain).await?;
    }
    get_rollout(tx, id, false)
        .await?
        .ok_or_else(|| releases::unknown_rollout(id))
}

/// One engine step in the caller's transaction, holding the rollout row.
pub async fn tick(
    tx: &deadpool_postgres::Transaction<'_>,
    id: &str,
    now: jiff::Timestamp,
    retain: u64,
) -> HqResult<Tick> {
    let now_ms = now.as_millisecond();
    let row = get_rollout(tx, id, true)
        .await?
        .ok_or_else(|| releases::unknown_rollout(id))?;
    if !row.state.is_active() {
        return Ok(Tick::default());
    }
    let release = get_release(tx, &row.spec.version)
        .await?
        .ok_or_else(|| releases::unknown_version(&row.spec.version))?;
    let t = plan_tick(
        &row,
        &release.manifest,
        &fleet(tx).await?,
        &rollout_stores(tx, id).await?,
        now,
    )?;
    if !t.timed_out.is_empty() {
        tx.execute(
            "UPDATE rollout_stores SET state = 'timed_out', reason = $3, updated_ms = $4
             WHERE rollout_id = $1 AND store_id = ANY($2)",
            &[&id, &t.timed_out, &releases::timeout_reason(&row), &now_ms],
        )
        .await
        .map_err(pg)?;
    }
    if let Some(ev) = &t.event {
        let stores: Vec<String> = t.assign.iter().map(|(s, _)| s.clone()).collect();
        let waves: Vec<i64> = t.assign.iter().map(|(_, w)| *w).collect();
        tx.execute(
            "INSERT INTO rollout_stores (rollout_id, store_id, wave, version, state, attempts, reason, assigned_ms, updated_ms)
             SELECT $1, s, w, $4, 'assigned', 0, '', $5, $5 FROM unnest($2::text[], $3::bigint[]) AS u(s, w)",
            &[&id, &stores, &waves, &row.spec.version, &now_ms],
        )
        .await
        .map_err(pg)?;
        append(
            tx,
            &Target::Stores { stores },
            std::slice::from_ref(ev),
            now_ms,
            retain,
        )
        .await?;
    }
    if let Some(w) = &t.withdraw {
        author_withdrawal(tx, w, now_ms, retain).await?;
    }
    if let Some((state, why)) = &t.new_state {
        tx.execute(
            "UPDATE rollouts SET state = $2, reason = $3, updated_ms = $4 WHERE id = $1",
            &[&id, &state.as_str(), why, &now_ms],
        )
        .await
        .map_err(pg)?;
    }
    Ok(t)
}

/// Records a store's `release.status` (see the SQLite engine's `apply_status`).
pub async fn apply_status(
    tx: &deadpool_postgres::Transaction<'_>,
    store: &str,
    st: &ReleaseStatus,
    now_ms: i64,
) -> HqResult<()> {
    let state = store_state_str(reported_state(st.state));
    let attempt = i64::from(st.state == ReleaseState::Installing);
    let reason = releases::bounded_reason(&st.reason);
    let rollout: Option<String> = match &st.rollout {
        Some(r) => Some(r.clone()),
        None => tx
            .query_opt(
                "SELECT rs.rollout_id FROM rollout_stores rs JOIN rollouts r ON r.id = rs.rollout_id
                 WHERE rs.store_id = $1 AND r.version = $2 ORDER BY r.created_ms DESC LIMIT 1",
                &[&store, &st.version],
            )
            .await
            .map_err(pg)?
            .map(|r| r.get(0)),
    };
    if let Some(r) = rollout {
        tx.execute(
            "UPDATE rollout_stores SET version = $3, state = $4, reason = $5, updated_ms = $6,
               attempts = attempts + $7 WHERE rollout_id = $1 AND store_id = $2",
            &[&r, &store, &st.version, &state, &reason, &now_ms, &attempt],
        )
        .await
        .map_err(pg)?;
    }
    Ok(())
}
