//! The PostgreSQL engine of HQ's storage (`[hq_server] database_url`): any number of stateless
//! `storebox hq` nodes on one database serve the same fleet. Nothing a store depends on lives in a
//! node: its token, its feed, its pushed events and its tickets are all in the database, so its
//! long-poll may land on any node.
//!
//! - **Feed order.** Publishing takes its seqs from the `head` counter row (`UPDATE … RETURNING`),
//!   which stays locked until the transaction commits, so publishers on every node are serialized
//!   and seqs become visible in order: when a reader sees `head = H`, every event up to `H` is
//!   committed. A reader serves only up to the `head` it read, so no event is ever skipped (a plain
//!   sequence would commit out of order and `seq > cursor` would skip the late one forever). A
//!   publisher killed mid-transaction leaves nothing: its rows and its counter update roll back
//!   together, and the next publisher takes the same seqs (no gap).
//! - **Wake-ups.** A publishing transaction sends `NOTIFY storebox_hq_feed` (delivered at commit);
//!   each node keeps one `LISTEN` connection and moves its local head, which its long-polls wait
//!   on, so waiting stores cost the database nothing. The head is also re-read every second, in
//!   case the listening connection was lost.
//! - **Migrations** are embedded and applied in order, each in its own transaction, under an
//!   advisory lock (several nodes may start at once).

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Pool};
use serde_json::{json, Value};
use tokio_postgres::NoTls;

use super::{
    Authored, EventQuery, HqRole, HqSession, HqStorage, HqUser, StoreIdent, StoreView, TicketReply,
};
use crate::db::ts_from_ms;
use crate::hq::error::{HqError, HqResult};
use crate::proto::{
    check_name, FeedEvent, FeedPage, PushAck, PushBatch, Snapshot, StoreEventType, Target,
};
use crate::secrets;

#[path = "pg_desk.rs"]
pub mod desk;
#[path = "pg_releases.rs"]
pub mod rel;
use crate::hq::releases::{
    PutRelease, ReleaseRow, RolloutRow, RolloutState, RolloutStoreRow, Tick,
};
use crate::hq::rollout::FleetStore;

pub const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_hq", include_str!("pg_migrations/0001_hq.sql")),
    ("0002_users", include_str!("pg_migrations/0002_users.sql")),
    (
        "0003_releases",
        include_str!("pg_migrations/0003_releases.sql"),
    ),
    ("0004_fleet", include_str!("pg_migrations/0004_fleet.sql")),
    // --- support desk ---
    ("0005_desk", include_str!("pg_migrations/0005_desk.sql")),
];

/// The notification channel publishers signal on.
const CHANNEL: &str = "storebox_hq_feed";
/// Advisory lock key taken while migrating.
const MIGRATION_LOCK: i64 = 0x5354_4f52_4542_4f58; // "STOREBOX"
/// How often a node re-reads the head without a notification.
const POLL_EVERY: Duration = Duration::from_secs(1);

fn pg(e: impl std::fmt::Display) -> HqError {
    HqError::storage(e)
}

pub struct PgStorage {
    pool: Pool,
    retain_events: u64,
    head: tokio::sync::watch::Sender<i64>,
    /// The LISTEN connection and the poller; ended when the storage is dropped.
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for PgStorage {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl PgStorage {
    /// Reads the feed head after this node authored events and moves the watched head forward
    /// (the LISTEN watcher would too, a moment later).
    async fn head_moved(&self) -> HqResult<()> {
        let h = read_head(&self.pool).await?;
        self.head.send_if_modified(|cur| {
            let moved = h > *cur;
            if moved {
                *cur = h;
            }
            moved
        });
        Ok(())
    }

    /// Connects, migrates the schema and starts watching the feed head.
    pub async fn connect(url: &str, retain_events: u64) -> HqResult<PgStorage> {
        let cfg = deadpool_postgres::Config {
            url: Some(url.to_string()),
            pool: Some(deadpool_postgres::PoolConfig::new(16)),
            ..Default::default()
        };
        let pool = cfg
            .create_pool(Some(deadpool_postgres::Runtime::Tokio1), NoTls)
            .map_err(|e| HqError::storage(format!("database_url: {e}")))?;
        migrate(&pool).await?;
        let now = read_head(&pool).await?;
        let head = tokio::sync::watch::channel(now).0;
        let watcher = tokio::spawn(watch_head(url.to_string(), pool.clone(), head.clone()));
        Ok(PgStorage {
            pool,
            retain_events,
            head,
            watcher,
        })
    }

    async fn client(&self) -> HqResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pg)
    }
}

async fn migrate(pool: &Pool) -> HqResult<()> {
    let mut c = pool.get().await.map_err(pg)?;
    c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg)?;
    let result = async {
        c.batch_execute(
            "CREATE TABLE IF NOT EXISTS hq_schema_migrations (
                 version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_ms BIGINT NOT NULL)",
        )
        .await
        .map_err(pg)?;
        let done: i64 = c
            .query_one(
                "SELECT coalesce(max(version), 0) FROM hq_schema_migrations",
                &[],
            )
            .await
            .map_err(pg)?
            .get(0);
        if done > MIGRATIONS.len() as i64 {
            return Err(HqError::storage(format!(
                "the HQ database has schema {done}; this storebox knows up to {}",
                MIGRATIONS.len()
            )));
        }
        for (i, (name, sql)) in MIGRATIONS.iter().enumerate() {
            let version = i as i64 + 1;
            if version <= done {
                continue;
            }
            let tx = c.transaction().await.map_err(pg)?;
            tx.batch_execute(sql)
                .await
                .map_err(|e| HqError::storage(format!("migration {name}: {e}")))?;
            tx.execute(
                "INSERT INTO hq_schema_migrations (version, name, applied_ms)
                 VALUES ($1, $2, (extract(epoch FROM now()) * 1000)::bigint)",
                &[&version, name],
            )
            .await
            .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
        }
        Ok(())
    }
    .await;
    let _ = c
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result
}

async fn read_head(pool: &Pool) -> HqResult<i64> {
    let c = pool.get().await.map_err(pg)?;
    Ok(
        c.query_one("SELECT value FROM hq_meta WHERE key = 'head'", &[])
            .await
            .map_err(pg)?
            .get(0),
    )
}

/// Aborts a task when dropped, so that tasks spawned for a storage end with it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keeps `head` at the database's feed head: on every notification from any node, and every
/// second in any case. Reconnects the LISTEN connection when it is lost.
async fn watch_head(url: String, pool: Pool, head: tokio::sync::watch::Sender<i64>) {
    let (poke_tx, mut poke) = tokio::sync::mpsc::channel::<()>(1);
    let _listener = AbortOnDrop(tokio::spawn(async move {
        loop {
            if let Ok((client, mut conn)) = tokio_postgres::connect(&url, NoTls).await {
                let poke_tx = poke_tx.clone();
                let pump = AbortOnDrop(tokio::spawn(async move {
                    use futures_util::StreamExt;
                    let mut messages = futures_util::stream::poll_fn(|cx| conn.poll_message(cx));
                    while let Some(Ok(msg)) = messages.next().await {
                        if let tokio_postgres::AsyncMessage::Notification(_) = msg {
                            let _ = poke_tx.try_send(());
                        }
                    }
                }));
                if client
                    .batch_execute(&format!("LISTEN {CHANNEL}"))
                    .await
                    .is_ok()
                {
                    let mut pump = pump;
                    let _ = (&mut pump.0).await;
                }
            }
            tracing::warn!("HQ feed LISTEN connection lost; reconnecting (polling meanwhile)");
            tokio::time::sleep(POLL_EVERY).await;
        }
    }));
    loop {
        let _ = tokio::time::timeout(POLL_EVERY, poke.recv()).await;
        if let Ok(h) = read_head(&pool).await {
            head.send_if_modified(|cur| {
                let moved = h > *cur;
                if moved {
                    *cur = h;
                }
                moved
            });
        }
    }
}

fn target_rows(target: &Target) -> Vec<(&'static str, String)> {
    super::sqlite::target_rows(target)
        .into_iter()
        .map(|(k, n)| (k, n.to_string()))
        .collect()
}

fn store_view(r: &tokio_postgres::Row) -> StoreView {
    let rollup: Option<String> = r.get(10);
    StoreView {
        id: r.get(0),
        group: r.get(1),
        last_seen: r
            .get::<_, Option<i64>>(2)
            .map(|m| ts_from_ms(m).to_string()),
        version: r.get(3),
        cursor: r.get(4),
        lag_events: r.get(5),
        lag_seconds: r.get(6),
        outbox_business: r.get(7),
        outbox_telemetry: r.get(8),
        outbox_dropped: r.get(9),
        rollup: rollup.and_then(|s| serde_json::from_str(&s).ok()),
        rollup_at: r
            .get::<_, Option<i64>>(11)
            .map(|m| ts_from_ms(m).to_string()),
        held: r.get(12),
    }
}

/// Appends `events` for `target` in the caller's transaction, taking seqs from the counter row;
/// returns their seqs.
async fn append(
    tx: &deadpool_postgres::Transaction<'_>,
    target: &Target,
    events: &[Authored],
    now_ms: i64,
    retain: u64,
) -> HqResult<Vec<i64>> {
    let n = events.len() as i64;
    // Locks the counter row until commit: this is what orders publishers (module doc).
    let last: i64 = tx
        .query_one(
            "UPDATE hq_meta SET value = value + $1 WHERE key = 'head' RETURNING value",
            &[&n],
        )
        .await
        .map_err(pg)?
        .get(0);
    let first = last - n + 1;
    let all = matches!(target, Target::All { .. });
    let targets = target_rows(target);
    let ins = tx
        .prepare_cached(
            "INSERT INTO hq_events (seq, id, type, payload, all_stores, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
        )
        .await
        .map_err(pg)?;
    let ins_target = tx
        .prepare_cached(
            "INSERT INTO hq_event_targets (seq, kind, name) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .await
        .map_err(pg)?;
    let up_state = tx
        .prepare_cached(
            "INSERT INTO hq_state (key, kind, name, seq, type, payload, live) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (key, kind, name) DO UPDATE SET seq = excluded.seq, type = excluded.type,
               payload = excluded.payload, live = excluded.live",
        )
        .await
        .map_err(pg)?;
    let mut seqs = Vec::with_capacity(events.len());
    for (i, ev) in events.iter().enumerate() {
        let seq = first + i as i64;
        let (t, payload) = ev.body.to_wire();
        let payload = payload.to_string();
        let n = tx
            .execute(&ins, &[&seq, &ev.id, &t.as_str(), &payload, &all, &now_ms])
            .await
            .map_err(pg)?;
        if n == 0 {
            return Err(HqError::Conflict(format!(
                "an event with id {:?} already exists",
                ev.id
            )));
        }
        if !all {
            for (k, name) in &targets {
                tx.execute(&ins_target, &[&seq, k, name])
                    .await
                    .map_err(pg)?;
            }
        }
        if let Some((key, live)) = ev.body.state_key() {
            for (k, name) in &targets {
                tx.execute(
                    &up_state,
                    &[&key, k, name, &seq, &t.as_str(), &payload, &live],
                )
                .await
                .map_err(pg)?;
            }
        }
        seqs.push(seq);
    }
    if retain > 0 {
        let upto = last - retain as i64;
        let pruned: i64 = tx
            .query_one(
                "SELECT value FROM hq_meta WHERE key = 'pruned_through'",
                &[],
            )
            .await
            .map_err(pg)?
            .get(0);
        if upto > pruned {
            tx.execute("DELETE FROM hq_events WHERE seq <= $1", &[&upto])
                .await
                .map_err(pg)?;
            tx.execute("DELETE FROM hq_event_targets WHERE seq <= $1", &[&upto])
                .await
                .map_err(pg)?;
            tx.execute(
                "UPDATE hq_meta SET value = $1 WHERE key = 'pruned_through'",
                &[&upto],
            )
            .await
            .map_err(pg)?;
        }
    }
    // Delivered to every listening node when (and only if) this transaction commits.
    tx.batch_execute(&format!("NOTIFY {CHANNEL}"))
        .await
        .map_err(pg)?;
    Ok(seqs)
}

async fn check_target(c: &impl GenericClient, target: &Target) -> HqResult<()> {
    crate::hq::check_target_shape(target)?;
    if let Target::Stores { stores } = target {
        let known: Vec<String> = c
            .query("SELECT id FROM stores WHERE id = ANY($1)", &[stores])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if let Some(s) = stores.iter().find(|s| !known.contains(s)) {
            return Err(HqError::invalid(
                "bad_target",
                format!("target store {s:?} is not registered"),
            ));
        }
    }
    Ok(())
}

#[async_trait]
impl HqStorage for PgStorage {
    fn engine(&self) -> &'static str {
        "postgres"
    }

    async fn add_store(&self, id: &str, group: &str, now_ms: i64) -> HqResult<String> {
        check_name("store id", id).map_err(|m| HqError::invalid("bad_store", m))?;
        if !group.is_empty() {
            check_name("group", group).map_err(|m| HqError::invalid("bad_group", m))?;
        }
        let token = secrets::generate_secret("sbhq_");
        let n = self
            .client()
            .await?
            .execute(
                "INSERT INTO stores (id, grp, token_hash, created_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                &[&id, &group, &secrets::hash_secret(&token), &now_ms],
            )
            .await
            .map_err(pg)?;
        if n == 0 {
            return Err(HqError::Conflict(format!(
                "store {id:?} is already registered"
            )));
        }
        Ok(token)
    }

    async fn set_group(&self, id: &str, group: &str) -> HqResult<()> {
        if !group.is_empty() {
            check_name("group", group).map_err(|m| HqError::invalid("bad_group", m))?;
        }
        let n = self
            .client()
            .await?
            .execute("UPDATE stores SET grp = $2 WHERE id = $1", &[&id, &group])
            .await
            .map_err(pg)?;
        if n == 1 {
            Ok(())
        } else {
            Err(HqError::not_found(
                "unknown_store",
                format!("no store {id:?}"),
            ))
        }
    }

    async fn list_stores(&self) -> HqResult<Vec<StoreView>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, grp, last_seen_ms, version, cursor, lag_events, lag_seconds, outbox_business,
                        outbox_telemetry, outbox_dropped, rollup, rollup_ms,
                        (SELECT coalesce(max(seq), 0) FROM store_events e WHERE e.store_id = s.id)
                 FROM stores s ORDER BY id",
                &[],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(store_view).collect())
    }

    async fn store_by_token(&self, token: &str) -> HqResult<Option<StoreIdent>> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached("SELECT id, grp FROM stores WHERE token_hash = $1")
            .await
            .map_err(pg)?;
        Ok(c.query_opt(&stmt, &[&secrets::hash_secret(token)])
            .await
            .map_err(pg)?
            .map(|r| StoreIdent {
                id: r.get(0),
                group: r.get(1),
            }))
    }

    async fn touch(&self, store: &str, now_ms: i64) -> HqResult<()> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached("UPDATE stores SET last_seen_ms = $2 WHERE id = $1")
            .await
            .map_err(pg)?;
        c.execute(&stmt, &[&store, &now_ms]).await.map_err(pg)?;
        Ok(())
    }

    async fn author(
        &self,
        target: &Target,
        events: Vec<Authored>,
        now_ms: i64,
    ) -> HqResult<Vec<i64>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        check_target(&tx, target).await?;
        let seqs = append(&tx, target, &events, now_ms, self.retain_events).await?;
        tx.commit().await.map_err(pg)?;
        if let Some(last) = seqs.last() {
            self.head.send_if_modified(|h| {
                let moved = *last > *h;
                if moved {
                    *h = *last;
                }
                moved
            });
        }
        Ok(seqs)
    }

    async fn head(&self) -> HqResult<i64> {
        read_head(&self.pool).await
    }

    async fn feed(&self, store: &StoreIdent, after: i64, limit: i64) -> HqResult<FeedPage> {
        let mut c = self.client().await?;
        // One snapshot for the head and the events: every event up to the head read is committed
        // (module doc), so serving up to it skips nothing.
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg)?;
        let meta = tx
            .query(
                "SELECT key, value FROM hq_meta WHERE key IN ('head', 'pruned_through')",
                &[],
            )
            .await
            .map_err(pg)?;
        let get = |k: &str| {
            meta.iter()
                .find(|r| r.get::<_, &str>(0) == k)
                .map_or(0, |r| r.get::<_, i64>(1))
        };
        let (head, pruned) = (get("head"), get("pruned_through"));
        if after < pruned {
            return Err(HqError::CursorGone {
                after,
                pruned_through: pruned,
            });
        }
        let stmt = tx
            .prepare_cached(
                "SELECT seq, id, type, payload, created_ms FROM hq_events e
                 WHERE seq > $1 AND seq <= $2 AND (all_stores OR seq IN (
                     SELECT seq FROM hq_event_targets WHERE seq > $1
                       AND ((kind = 'group' AND name = $3) OR (kind = 'store' AND name = $4))))
                 ORDER BY seq LIMIT $5",
            )
            .await
            .map_err(pg)?;
        let rows = tx
            .query(&stmt, &[&after, &head, &store.group, &store.id, &limit])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        let events = rows
            .iter()
            .map(|r| FeedEvent {
                seq: r.get(0),
                id: r.get(1),
                event_type: r.get(2),
                payload: serde_json::from_str(r.get::<_, &str>(3)).unwrap_or(Value::Null),
                at: Some(ts_from_ms(r.get(4)).to_string()),
            })
            .collect();
        Ok(crate::hq::page(events, after, head, limit))
    }

    async fn snapshot(&self, store: &StoreIdent) -> HqResult<Snapshot> {
        let mut c = self.client().await?;
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg)?;
        let cursor: i64 = tx
            .query_one("SELECT value FROM hq_meta WHERE key = 'head'", &[])
            .await
            .map_err(pg)?
            .get(0);
        let rows = tx
            .query(
                "SELECT DISTINCT ON (key) key, type, payload, live, seq FROM hq_state
                 WHERE kind = 'all' OR (kind = 'group' AND name = $1) OR (kind = 'store' AND name = $2)
                 ORDER BY key, seq DESC",
                &[&store.group, &store.id],
            )
            .await
            .map_err(pg)?;
        let pending = tx
            .query_opt(crate::hq::releases::PENDING_ASSIGN_SQL, &[&store.id])
            .await
            .map_err(pg)?;
        let newest = tx
            .query_opt(crate::hq::releases::NEWEST_ASSIGNMENT_SQL, &[&store.id])
            .await
            .map_err(pg)?
            .map(|r| crate::hq::releases::NewestAssignment {
                rollout: r.get(0),
                version: r.get(1),
                rollout_state: r.get(2),
                reason: r.get(3),
                store_state: r.get(4),
                superseded_by_same_version: r.get(5),
            });
        tx.commit().await.map_err(pg)?;
        let mut events: Vec<FeedEvent> = rows
            .iter()
            .filter(|r| r.get::<_, bool>(3))
            .map(|r| {
                let seq: i64 = r.get(4);
                FeedEvent {
                    seq,
                    id: format!("snapshot-{seq}"),
                    event_type: r.get(1),
                    payload: serde_json::from_str(r.get::<_, &str>(2)).unwrap_or(Value::Null),
                    at: None,
                }
            })
            .collect();
        events.sort_by_key(|e| e.seq);
        if let Some(r) = pending {
            events.extend(crate::hq::releases::snapshot_assign(
                r.get(0),
                r.get(1),
                cursor,
            ));
        }
        if let Some(n) = newest {
            events.extend(crate::hq::releases::snapshot_withdraw(&n, cursor));
        }
        Ok(Snapshot { cursor, events })
    }

    fn changes(&self) -> tokio::sync::watch::Receiver<i64> {
        self.head.subscribe()
    }

    async fn ingest(&self, store: &str, batch: PushBatch, now_ms: i64) -> HqResult<PushAck> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let n = batch.events.len();
        let mut seqs = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        let mut classes = Vec::with_capacity(n);
        let mut payloads = Vec::with_capacity(n);
        let mut ats = Vec::with_capacity(n);
        let mut at_mss = Vec::with_capacity(n);
        for ev in &batch.events {
            at_mss.push(crate::hq::story::at_ms(&ev.at, now_ms));
            seqs.push(ev.seq);
            ids.push(ev.id.as_str());
            types.push(ev.event_type.as_str());
            classes.push(ev.class.as_str());
            payloads.push(ev.payload.get());
            ats.push(ev.at.as_str());
        }
        // One statement for the whole batch; the rows that were new come back.
        let stmt = tx
            .prepare_cached(
                "INSERT INTO store_events (store_id, seq, id, type, class, payload, at, at_ms, received_ms)
                 SELECT $1, * , $8 FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $9::bigint[])
                 ON CONFLICT (store_id, seq) DO NOTHING RETURNING seq",
            )
            .await
            .map_err(pg)?;
        let inserted: Vec<i64> = tx
            .query(
                &stmt,
                &[
                    &store, &seqs, &ids, &types, &classes, &payloads, &ats, &now_ms, &at_mss,
                ],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for ev in batch.events.iter().filter(|e| inserted.contains(&e.seq)) {
            match ev.event_type.parse::<StoreEventType>() {
                Ok(StoreEventType::TicketOpened) => {
                    let p = ev.payload_value();
                    let id = p.get("ticket_id").and_then(Value::as_str).unwrap_or(&ev.id);
                    let subject = p.get("subject").and_then(Value::as_str).unwrap_or("");
                    let new = tx
                        .execute(
                            "INSERT INTO tickets (id, store_id, subject, payload, opened_ms)
                             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                            &[&id, &store, &subject, &ev.payload.get(), &now_ms],
                        )
                        .await
                        .map_err(pg)?;
                    if new == 1 {
                        desk::route_new(&tx, store, id, &p, now_ms).await?;
                    }
                }
                Ok(StoreEventType::TelemetryRollup) => {
                    tx.execute(
                        "UPDATE stores SET rollup = $2, rollup_ms = $3 WHERE id = $1
                           AND (rollup_ms IS NULL OR rollup_ms <= $3)",
                        &[&store, &ev.payload.get(), &now_ms],
                    )
                    .await
                    .map_err(pg)?;
                }
                Ok(StoreEventType::ReleaseStatus) => {
                    if let Ok(st) = serde_json::from_str(ev.payload.get()) {
                        rel::apply_status(&tx, store, &st, now_ms).await?;
                    }
                }
                _ => {}
            }
        }
        let r = &batch.report;
        record_fleet_report(&tx, store, r).await?;
        let report = tx
            .prepare_cached(
                "UPDATE stores SET last_seen_ms = $2, version = $3, cursor = $4, lag_events = $5, lag_seconds = $6,
                   outbox_business = $7, outbox_telemetry = $8, outbox_dropped = $9 WHERE id = $1",
            )
            .await
            .map_err(pg)?;
        tx.execute(
            &report,
            &[
                &store,
                &now_ms,
                &r.version,
                &r.cursor,
                &r.lag_events,
                &r.lag_seconds,
                &r.outbox_business,
                &r.outbox_telemetry,
                &r.outbox_dropped,
            ],
        )
        .await
        .map_err(pg)?;
        let held_stmt = tx
            .prepare_cached("SELECT coalesce(max(seq), 0) FROM store_events WHERE store_id = $1")
            .await
            .map_err(pg)?;
        let held: i64 = tx
            .query_one(&held_stmt, &[&store])
            .await
            .map_err(pg)?
            .get(0);
        tx.commit().await.map_err(pg)?;
        let stored = inserted.len() as u64;
        Ok(PushAck {
            acked: seqs.iter().copied().max().unwrap_or(held),
            held,
            stored,
            duplicates: n as u64 - stored,
        })
    }

    async fn store_events(&self, q: EventQuery, since_ms: Option<i64>) -> HqResult<Vec<Value>> {
        let limit = q.limit.unwrap_or(1000).clamp(1, 100_000);
        let rows = self
            .client()
            .await?
            .query(
                "SELECT rid, store_id, seq, id, type, class, payload, at, received_ms FROM store_events
                 WHERE rid > $1 AND ($2::text IS NULL OR store_id = $2) AND ($3::text IS NULL OR type = $3)
                   AND ($4::bigint IS NULL OR received_ms >= $4)
                 ORDER BY rid LIMIT $5",
                &[
                    &q.after.unwrap_or(0),
                    &q.store,
                    &q.event_type,
                    &since_ms,
                    &limit,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| {
                json!({
                    "rid": r.get::<_, i64>(0),
                    "store": r.get::<_, String>(1),
                    "seq": r.get::<_, i64>(2),
                    "id": r.get::<_, String>(3),
                    "type": r.get::<_, String>(4),
                    "class": r.get::<_, String>(5),
                    "payload": serde_json::from_str::<Value>(r.get::<_, &str>(6)).unwrap_or(Value::Null),
                    "at": r.get::<_, String>(7),
                    "received_at": ts_from_ms(r.get(8)).to_string(),
                })
            })
            .collect())
    }

    async fn tickets(&self) -> HqResult<Vec<Value>> {
        let c = self.client().await?;
        let tickets = c
            .query(
                "SELECT id, store_id, subject, payload, status, opened_ms FROM tickets
                 ORDER BY opened_ms DESC LIMIT 500",
                &[],
            )
            .await
            .map_err(pg)?;
        let replies = c
            .prepare(
                "SELECT event_id, author, message, status, at_ms FROM ticket_replies
                 WHERE store_id = $1 AND ticket_id = $2 ORDER BY id",
            )
            .await
            .map_err(pg)?;
        let mut out = Vec::with_capacity(tickets.len());
        for t in &tickets {
            let (id, store): (String, String) = (t.get(0), t.get(1));
            let rs: Vec<Value> = c
                .query(&replies, &[&store, &id])
                .await
                .map_err(pg)?
                .iter()
                .map(|r| {
                    json!({
                        "event_id": r.get::<_, String>(0),
                        "author": r.get::<_, String>(1),
                        "message": r.get::<_, String>(2),
                        "status": r.get::<_, Option<String>>(3),
                        "at": ts_from_ms(r.get(4)).to_string(),
                    })
                })
                .collect();
            out.push(json!({
                "id": id,
                "store": store,
                "subject": t.get::<_, String>(2),
                "opened": serde_json::from_str::<Value>(t.get::<_, &str>(3)).unwrap_or(Value::Null),
                "status": t.get::<_, String>(4),
                "received_at": ts_from_ms(t.get(5)).to_string(),
                "replies": rs,
            }));
        }
        Ok(out)
    }

    async fn reply(
        &self,
        store: Option<&str>,
        ticket: &str,
        reply: TicketReply,
        now_ms: i64,
    ) -> HqResult<i64> {
        let mut c = self.client().await?;
        let stores: Vec<String> = c
            .query(
                "SELECT store_id FROM tickets WHERE id = $1 AND ($2::text IS NULL OR store_id = $2)",
                &[&ticket, &store],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let store_id = crate::hq::one_ticket_store(stores, store, ticket)?;
        let ev = crate::hq::reply_event(ticket, &reply)?;
        let target = Target::Stores {
            stores: vec![store_id.clone()],
        };
        let tx = c.transaction().await.map_err(pg)?;
        let seqs = append(&tx, &target, &[ev], now_ms, self.retain_events).await?;
        tx.execute(
            "INSERT INTO ticket_replies (store_id, ticket_id, event_id, author, message, status, at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &store_id,
                &ticket,
                &reply.event_id,
                &reply.author,
                &reply.message,
                &reply.status,
                &now_ms,
            ],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "UPDATE tickets SET status = coalesce($3, 'answered') WHERE store_id = $1 AND id = $2",
            &[&store_id, &ticket, &reply.status],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        let seq = seqs.last().copied().unwrap_or(0);
        self.head.send_if_modified(|h| {
            let moved = seq > *h;
            if moved {
                *h = seq;
            }
            moved
        });
        Ok(seq)
    }

    async fn add_user(&self, user: HqUser) -> HqResult<()> {
        let n = self
            .client()
            .await?
            .execute(
                "INSERT INTO hq_users (name, role, password_hash, created_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                &[&user.name, &user.role.as_str(), &user.password_hash, &user.created_ms],
            )
            .await
            .map_err(pg)?;
        if n == 0 {
            return Err(HqError::Conflict(format!("user {:?} exists", user.name)));
        }
        Ok(())
    }

    async fn set_password(&self, name: &str, password_hash: &str) -> HqResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let n = tx
            .execute(
                "UPDATE hq_users SET password_hash = $2 WHERE name = $1",
                &[&name, &password_hash],
            )
            .await
            .map_err(pg)?;
        if n == 0 {
            return Err(HqError::not_found(
                "unknown_user",
                format!("no user {name:?}"),
            ));
        }
        tx.execute("DELETE FROM hq_sessions WHERE user_name = $1", &[&name])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(())
    }

    async fn users(&self) -> HqResult<Vec<HqUser>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT name, role, password_hash, created_ms FROM hq_users ORDER BY name",
                &[],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(user_row).collect())
    }

    async fn user(&self, name: &str) -> HqResult<Option<HqUser>> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT name, role, password_hash, created_ms FROM hq_users WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(pg)?
            .as_ref()
            .map(user_row))
    }

    async fn create_session(
        &self,
        id_hash: &str,
        user: &str,
        csrf: &str,
        expires_ms: i64,
    ) -> HqResult<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO hq_sessions (id_hash, user_name, csrf, expires_ms) VALUES ($1, $2, $3, $4)",
                &[&id_hash, &user, &csrf, &expires_ms],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn session(&self, id_hash: &str, now_ms: i64) -> HqResult<Option<HqSession>> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT s.user_name, u.role, s.csrf FROM hq_sessions s JOIN hq_users u ON u.name = s.user_name
                 WHERE s.id_hash = $1 AND s.expires_ms > $2",
                &[&id_hash, &now_ms],
            )
            .await
            .map_err(pg)?
            .map(|r| HqSession {
                user: r.get(0),
                role: r.get::<_, &str>(1).parse().unwrap_or(HqRole::Support),
                csrf: r.get(2),
            }))
    }

    async fn delete_session(&self, id_hash: &str) -> HqResult<()> {
        self.client()
            .await?
            .execute("DELETE FROM hq_sessions WHERE id_hash = $1", &[&id_hash])
            .await
            .map_err(pg)?;
        Ok(())
    }

    // --- releases and rollouts ---
    async fn put_release(
        &self,
        release: ReleaseRow,
        package: &std::path::Path,
    ) -> HqResult<PutRelease> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&rel::RELEASE_LOCK])
            .await
            .map_err(pg)?;
        if let Some(old) = rel::get_release(&tx, &release.manifest.version).await? {
            return crate::hq::releases::same_release(&old, &release.manifest);
        }
        rel::insert_release(&tx, &release, package).await?;
        tx.commit().await.map_err(pg)?;
        Ok(PutRelease::Created)
    }

    async fn releases(&self) -> HqResult<Vec<ReleaseRow>> {
        rel::list_releases(&self.client().await?).await
    }

    async fn release(&self, version: &str) -> HqResult<Option<ReleaseRow>> {
        rel::get_release(&self.client().await?, version).await
    }

    async fn package_chunk(&self, sha256: &str, offset: u64, len: usize) -> HqResult<Vec<u8>> {
        rel::read_package(&self.client().await?, sha256, offset, len).await
    }

    async fn assigned(&self, store: &str, version: &str) -> HqResult<bool> {
        rel::assigned(&self.client().await?, store, version).await
    }

    async fn create_rollout(&self, rollout: RolloutRow) -> HqResult<Vec<String>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let superseded = rel::create_rollout(&tx, &rollout, self.retain_events).await?;
        tx.commit().await.map_err(pg)?;
        if !superseded.is_empty() {
            // A superseded rollout may have authored its withdrawal.
            self.head_moved().await?;
        }
        Ok(superseded)
    }

    async fn rollouts(&self) -> HqResult<Vec<RolloutRow>> {
        rel::list_rollouts(&self.client().await?).await
    }

    async fn rollout(
        &self,
        id: &str,
    ) -> HqResult<Option<(RolloutRow, Vec<RolloutStoreRow>, Vec<FleetStore>)>> {
        let mut c = self.client().await?;
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg)?;
        let Some(row) = rel::get_rollout(&tx, id, false).await? else {
            return Ok(None);
        };
        let stores = rel::rollout_stores(&tx, id).await?;
        let fleet = rel::fleet(&tx).await?;
        tx.commit().await.map_err(pg)?;
        Ok(Some((row, stores, fleet)))
    }

    async fn set_rollout_state(
        &self,
        id: &str,
        to: RolloutState,
        reason: &str,
        now_ms: i64,
    ) -> HqResult<RolloutRow> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let row = rel::set_state(&tx, id, to, reason, now_ms, self.retain_events).await?;
        tx.commit().await.map_err(pg)?;
        if to == RolloutState::Aborted {
            // The abort may have authored its withdrawal.
            self.head_moved().await?;
        }
        Ok(row)
    }

    async fn tick_rollout(&self, id: &str, now: jiff::Timestamp) -> HqResult<Tick> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        let t = rel::tick(&tx, id, now, self.retain_events).await?;
        tx.commit().await.map_err(pg)?;
        if t.authors() {
            self.head_moved().await?;
        }
        Ok(t)
    }

    // --- console: fleet and story ---
    async fn fleet_extras(
        &self,
        checkouts_since_ms: i64,
        quarantined_since_ms: i64,
    ) -> HqResult<Vec<crate::hq::fleet::FleetExtra>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT s.id, s.last_seen_ms, s.devices_total, s.devices_offline, s.open_alerts,
                        s.open_alerts_warning, s.timezone, s.outbox_prev,
                        (SELECT count(*) FROM store_events e WHERE e.store_id = s.id
                           AND e.type = 'checkout.completed' AND e.received_ms >= $1),
                        (SELECT count(*) FROM store_events e WHERE e.store_id = s.id
                           AND e.type = 'sync.quarantined' AND e.received_ms >= $2),
                        r.payload, r.received_ms
                 FROM stores s LEFT JOIN store_events r ON r.rid = (
                     SELECT max(rid) FROM store_events x WHERE x.store_id = s.id AND x.type = 'release.status')
                 ORDER BY s.id",
                &[&checkouts_since_ms, &quarantined_since_ms],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| crate::hq::fleet::FleetExtra {
                id: r.get(0),
                last_seen_ms: r.get(1),
                devices_total: r.get(2),
                devices_offline: r.get(3),
                open_alerts: r.get(4),
                open_alerts_warning: r.get(5),
                timezone: r.get(6),
                outbox_prev: r.get(7),
                checkouts_last_hour: r.get(8),
                quarantined_recent: r.get(9),
                release: r
                    .get::<_, Option<&str>>(10)
                    .and_then(|p| serde_json::from_str(p).ok()),
                release_at: r
                    .get::<_, Option<i64>>(11)
                    .map(|m| ts_from_ms(m).to_string()),
            })
            .collect())
    }

    async fn story_sources(
        &self,
        q: crate::hq::story::SourceQuery,
    ) -> HqResult<Option<crate::hq::story::Sources>> {
        use crate::hq::story::{AuthoredRow, Sources, StoreRow};
        let mut c = self.client().await?;
        // One snapshot for all the reads.
        let tx = c
            .build_transaction()
            .read_only(true)
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .start()
            .await
            .map_err(pg)?;
        let Some(store) = tx
            .query_opt(
                "SELECT grp, created_ms, timezone FROM stores WHERE id = $1",
                &[&q.store],
            )
            .await
            .map_err(pg)?
        else {
            return Ok(None);
        };
        let group: String = store.get(0);
        // The store's first event (lowest seq, by the (store, seq) key) came with its first push.
        let first_push_ms: Option<i64> = tx
            .query_opt(
                "SELECT received_ms FROM store_events WHERE store_id = $1 ORDER BY seq LIMIT 1",
                &[&q.store],
            )
            .await
            .map_err(pg)?
            .map(|r| r.get(0));
        let events = tx
            .query(
                "SELECT at_ms, id, type, payload, at, received_ms FROM store_events
                 WHERE store_id = $1 AND at_ms >= $2 AND at_ms < $3
                   AND type NOT IN ('checkout.completed', 'telemetry.rollup')
                 ORDER BY at_ms, rid LIMIT $4",
                &[&q.store, &q.from_ms, &q.to_ms, &q.limit],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| StoreRow {
                at_ms: r.get(0),
                id: r.get(1),
                event_type: r.get(2),
                payload: serde_json::from_str(r.get::<_, &str>(3)).unwrap_or(Value::Null),
                at: r.get(4),
                received_ms: r.get(5),
            })
            .collect();
        let checkouts = tx
            .query(
                "SELECT (at_ms / 3600000) * 3600000 AS h, count(*) FROM store_events
                 WHERE store_id = $1 AND type = 'checkout.completed' AND at_ms >= $2 AND at_ms < $3
                 GROUP BY h ORDER BY h",
                &[&q.store, &q.from_ms, &q.to_ms],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let telemetry = tx
            .query(
                "SELECT at_ms, payload FROM store_events WHERE rid IN (
                     SELECT max(rid) FROM store_events
                     WHERE store_id = $1 AND type = 'telemetry.rollup' AND at_ms >= $2 AND at_ms < $3
                     GROUP BY at_ms / 3600000)
                 ORDER BY at_ms",
                &[&q.store, &q.from_ms, &q.to_ms],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    serde_json::from_str(r.get::<_, &str>(1)).unwrap_or(Value::Null),
                )
            })
            .collect();
        let authored = tx
            .query(
                "SELECT e.seq, e.id, e.type, e.payload, e.created_ms, e.all_stores,
                        EXISTS (SELECT 1 FROM hq_event_targets t WHERE t.seq = e.seq AND t.kind = 'store' AND t.name = $1)
                 FROM hq_events e
                 WHERE e.created_ms >= $2 AND e.created_ms < $3 AND (e.all_stores OR e.seq IN (
                     SELECT seq FROM hq_event_targets
                     WHERE (kind = 'store' AND name = $1) OR (kind = 'group' AND name = $5)))
                 ORDER BY e.seq LIMIT $4",
                &[&q.store, &q.from_ms, &q.to_ms, &q.limit, &group],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| AuthoredRow {
                seq: r.get(0),
                id: r.get(1),
                event_type: r.get(2),
                payload: serde_json::from_str(r.get::<_, &str>(3)).unwrap_or(Value::Null),
                created_ms: r.get(4),
                target: crate::hq::story::target_label(r.get(5), r.get(6), &group),
            })
            .collect();
        tx.commit().await.map_err(pg)?;
        Ok(Some(Sources {
            registered_ms: store.get(1),
            timezone: store.get(2),
            group,
            first_push_ms,
            events,
            checkouts,
            telemetry,
            authored,
        }))
    }
    // --- support desk ---
    async fn desk_tickets(
        &self,
        q: &crate::hq::desk::DeskQuery,
    ) -> HqResult<Vec<crate::hq::desk::DeskTicket>> {
        desk::tickets(&self.client().await?, q).await
    }

    async fn desk_ticket(
        &self,
        store: Option<&str>,
        id: &str,
    ) -> HqResult<crate::hq::desk::DeskDetail> {
        desk::ticket(&self.client().await?, store, id).await
    }

    async fn desk_assign(
        &self,
        store: Option<&str>,
        id: &str,
        user: Option<&str>,
        actor: &str,
        now_ms: i64,
    ) -> HqResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        desk::assign(&tx, store, id, user, actor, now_ms).await?;
        tx.commit().await.map_err(pg)
    }

    async fn desk_routing(&self) -> HqResult<Vec<crate::hq::desk::Route>> {
        desk::routing(&self.client().await?).await
    }

    async fn put_desk_routing(&self, routes: Vec<crate::hq::desk::Route>) -> HqResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        desk::put_routing(&tx, &routes).await?;
        tx.commit().await.map_err(pg)
    }

    async fn desk_teams(&self) -> HqResult<Vec<crate::hq::desk::Team>> {
        desk::teams(&self.client().await?).await
    }

    async fn put_desk_teams(&self, teams: Vec<crate::hq::desk::Team>) -> HqResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        desk::put_teams(&tx, &teams).await?;
        tx.commit().await.map_err(pg)
    }

    async fn claim_notifications(
        &self,
        now_ms: i64,
        lease_ms: i64,
        max: i64,
    ) -> HqResult<Vec<crate::hq::desk::Notification>> {
        desk::claim(&self.client().await?, now_ms, lease_ms, max).await
    }

    async fn finish_notification(
        &self,
        id: i64,
        attempts: i64,
        outcome: Result<(), String>,
        next_ms: Option<i64>,
        now_ms: i64,
    ) -> HqResult<()> {
        desk::finish(
            &self.client().await?,
            id,
            attempts,
            &outcome,
            next_ms,
            now_ms,
        )
        .await
    }

    async fn notifications(&self, limit: i64) -> HqResult<Vec<crate::hq::desk::Notification>> {
        desk::notifications(&self.client().await?, limit).await
    }

    // --- support guides ---
    async fn guides(&self, limit: i64) -> HqResult<Vec<super::GuideRow>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT kind, name, payload, seq FROM hq_state
                 WHERE key LIKE 'guide:%' AND live ORDER BY key, kind, name LIMIT $1",
                &[&limit],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| super::GuideRow {
                kind: r.get(0),
                name: r.get(1),
                payload: serde_json::from_str(r.get::<_, &str>(2)).unwrap_or(Value::Null),
                seq: r.get(3),
            })
            .collect())
    }
}

fn user_row(r: &tokio_postgres::Row) -> HqUser {
    HqUser {
        name: r.get(0),
        // The column's CHECK allows only the three roles.
        role: r.get::<_, &str>(1).parse().unwrap_or(HqRole::Support),
        password_hash: r.get(2),
        created_ms: r.get(3),
    }
}

// --- console: fleet and story ---

/// Keeps what the report says for the fleet view (before the report's outbox depth replaces the
/// previous one, which is kept as `outbox_prev`).
async fn record_fleet_report(
    tx: &deadpool_postgres::Transaction<'_>,
    store: &str,
    r: &crate::proto::StoreReport,
) -> HqResult<()> {
    let stmt = tx
        .prepare_cached(
            "UPDATE stores SET outbox_prev = coalesce(outbox_business, 0) + coalesce(outbox_telemetry, 0),
               devices_total = $2, devices_offline = $3, open_alerts = $4, open_alerts_warning = $5,
               timezone = coalesce($6, timezone)
             WHERE id = $1",
        )
        .await
        .map_err(pg)?;
    tx.execute(
        &stmt,
        &[
            &store,
            &r.devices_total,
            &r.devices_offline,
            &r.open_alerts,
            &r.open_alerts_warning,
            &r.timezone,
        ],
    )
    .await
    .map_err(pg)?;
    Ok(())
}
