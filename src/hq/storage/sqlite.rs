//! The embedded SQLite engine of HQ's storage: one file (`hq.db` in `[hq_server] data_dir`), one
//! HQ process. The default: a chain that fits on one HQ machine needs nothing else. Plain functions
//! over a connection, wrapped by [`SqliteStorage`] for the [`HqStorage`] trait.

use std::path::Path;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde_json::{json, Value};

use super::{
    Authored, EventQuery, HqRole, HqSession, HqStorage, HqUser, StoreIdent, StoreView, TicketReply,
};
use crate::db::{ts_from_ms, Db, DbResult};
use crate::hq::error::{HqError, HqResult};
use crate::proto::{
    check_name, FeedEvent, FeedPage, PushAck, PushBatch, Snapshot, StoreEventType, Target,
};
use crate::secrets;

#[path = "sqlite_desk.rs"]
pub mod desk;
#[path = "sqlite_releases.rs"]
pub mod rel;
use crate::hq::releases::{
    PutRelease, ReleaseRow, RolloutRow, RolloutState, RolloutStoreRow, Tick,
};
use crate::hq::rollout::FleetStore;

pub const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_hq", include_str!("sqlite_migrations/0001_hq.sql")),
    (
        "0002_tickets_per_store",
        include_str!("sqlite_migrations/0002_tickets_per_store.sql"),
    ),
    (
        "0003_users",
        include_str!("sqlite_migrations/0003_users.sql"),
    ),
    (
        "0004_releases",
        include_str!("sqlite_migrations/0004_releases.sql"),
    ),
    (
        "0005_fleet",
        include_str!("sqlite_migrations/0005_fleet.sql"),
    ),
    // --- support desk ---
    ("0006_desk", include_str!("sqlite_migrations/0006_desk.sql")),
];

pub struct SqliteStorage {
    db: Db,
    retain_events: u64,
    head: tokio::sync::watch::Sender<i64>,
    /// `releases/` next to the database file: the kept release packages.
    releases_dir: std::path::PathBuf,
}

impl SqliteStorage {
    /// Opens (creating and migrating) the HQ database file at `path`.
    pub async fn open(path: &Path, retain_events: u64) -> HqResult<SqliteStorage> {
        let releases_dir = path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join("releases");
        let path = path.to_path_buf();
        let db = crate::db::run_blocking(move || Db::open_with(&path, MIGRATIONS)).await?;
        let now = db.read(head).await?;
        Ok(SqliteStorage {
            db,
            retain_events,
            head: tokio::sync::watch::channel(now).0,
            releases_dir,
        })
    }

    /// Runs `f` on the writer connection; its domain error passes through.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> HqResult<T> + Send + 'static,
    ) -> HqResult<T> {
        self.db.write(move |c| Ok(f(c))).await?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> HqResult<T> + Send + 'static,
    ) -> HqResult<T> {
        self.db.read(move |c| Ok(f(c))).await?
    }

    /// Flushes the WAL into the main file (at shutdown).
    pub async fn checkpoint(&self) {
        let _ = self
            .db
            .write(|c| Ok(c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?))
            .await;
    }
}

#[async_trait]
impl HqStorage for SqliteStorage {
    fn engine(&self) -> &'static str {
        "sqlite"
    }

    async fn add_store(&self, id: &str, group: &str, now_ms: i64) -> HqResult<String> {
        let (id, group) = (id.to_string(), group.to_string());
        self.write(move |c| add_store(c, &id, &group, now_ms)).await
    }

    async fn set_group(&self, id: &str, group: &str) -> HqResult<()> {
        let (id, group) = (id.to_string(), group.to_string());
        self.write(move |c| set_group(c, &id, &group)).await
    }

    async fn list_stores(&self) -> HqResult<Vec<StoreView>> {
        self.read(|c| Ok(list_stores(c)?)).await
    }

    async fn store_by_token(&self, token: &str) -> HqResult<Option<StoreIdent>> {
        let hash = secrets::hash_secret(token);
        self.read(move |c| Ok(store_by_token_hash(c, &hash)?)).await
    }

    async fn touch(&self, store: &str, now_ms: i64) -> HqResult<()> {
        let store = store.to_string();
        self.write(move |c| Ok(touch(c, &store, now_ms)?)).await
    }

    async fn author(
        &self,
        target: &Target,
        events: Vec<Authored>,
        now_ms: i64,
    ) -> HqResult<Vec<i64>> {
        let target = target.clone();
        let retain = self.retain_events;
        let seqs = self
            .write(move |c| {
                check_target(c, &target)?;
                let tx = crate::db::immediate(c)?;
                let mut seqs = Vec::with_capacity(events.len());
                for ev in &events {
                    seqs.push(append(&tx, &target, ev, now_ms)?);
                }
                prune(&tx, retain)?;
                tx.commit()?;
                Ok(seqs)
            })
            .await?;
        if let Some(last) = seqs.last() {
            self.head.send_replace(*last);
        }
        Ok(seqs)
    }

    async fn head(&self) -> HqResult<i64> {
        self.read(|c| Ok(head(c)?)).await
    }

    async fn feed(&self, store: &StoreIdent, after: i64, limit: i64) -> HqResult<FeedPage> {
        let store = store.clone();
        self.read(move |c| feed(c, &store.id, &store.group, after, limit))
            .await
    }

    async fn snapshot(&self, store: &StoreIdent) -> HqResult<Snapshot> {
        let store = store.clone();
        self.read(move |c| Ok(snapshot(c, &store.id, &store.group)?))
            .await
    }

    fn changes(&self) -> tokio::sync::watch::Receiver<i64> {
        self.head.subscribe()
    }

    async fn ingest(&self, store: &str, batch: PushBatch, now_ms: i64) -> HqResult<PushAck> {
        let store = store.to_string();
        self.write(move |c| {
            let tx = crate::db::immediate(c)?;
            let ack = ingest(&tx, &store, &batch, now_ms)?;
            tx.commit()?;
            Ok(ack)
        })
        .await
    }

    async fn store_events(&self, q: EventQuery, since_ms: Option<i64>) -> HqResult<Vec<Value>> {
        self.read(move |c| Ok(store_events(c, &q, since_ms)?)).await
    }

    async fn tickets(&self) -> HqResult<Vec<Value>> {
        self.read(|c| Ok(tickets(c)?)).await
    }

    async fn reply(
        &self,
        store: Option<&str>,
        ticket: &str,
        reply: TicketReply,
        now_ms: i64,
    ) -> HqResult<i64> {
        let (store, ticket) = (store.map(str::to_string), ticket.to_string());
        let retain = self.retain_events;
        let seq = self
            .write(move |c| {
                let store_id = ticket_store(c, store.as_deref(), &ticket)?;
                let ev = crate::hq::reply_event(&ticket, &reply)?;
                let tx = crate::db::immediate(c)?;
                let target = Target::Stores {
                    stores: vec![store_id.clone()],
                };
                let seq = append(&tx, &target, &ev, now_ms)?;
                record_reply(&tx, &store_id, &ticket, &reply, now_ms)?;
                prune(&tx, retain)?;
                tx.commit()?;
                Ok(seq)
            })
            .await?;
        self.head.send_replace(seq);
        Ok(seq)
    }

    async fn add_user(&self, user: HqUser) -> HqResult<()> {
        self.write(move |c| {
            let n = c.execute(
                "INSERT OR IGNORE INTO hq_users (name, role, password_hash, created_ms) VALUES (?1, ?2, ?3, ?4)",
                params![user.name, user.role.as_str(), user.password_hash, user.created_ms],
            )?;
            if n == 0 {
                return Err(HqError::Conflict(format!("user {:?} exists", user.name)));
            }
            Ok(())
        })
        .await
    }

    async fn set_password(&self, name: &str, password_hash: &str) -> HqResult<()> {
        let (name, hash) = (name.to_string(), password_hash.to_string());
        self.write(move |c| {
            let tx = crate::db::immediate(c)?;
            let n = tx.execute(
                "UPDATE hq_users SET password_hash = ?2 WHERE name = ?1",
                params![name, hash],
            )?;
            if n == 0 {
                return Err(HqError::not_found(
                    "unknown_user",
                    format!("no user {name:?}"),
                ));
            }
            // A new password ends the user's sessions.
            tx.execute("DELETE FROM hq_sessions WHERE user_name = ?1", [&name])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn users(&self) -> HqResult<Vec<HqUser>> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT name, role, password_hash, created_ms FROM hq_users ORDER BY name",
            )?;
            let rows = stmt.query_map([], user_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn user(&self, name: &str) -> HqResult<Option<HqUser>> {
        let name = name.to_string();
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT name, role, password_hash, created_ms FROM hq_users WHERE name = ?1",
                [&name],
                user_row,
            )
            .optional()?)
        })
        .await
    }

    async fn create_session(
        &self,
        id_hash: &str,
        user: &str,
        csrf: &str,
        expires_ms: i64,
    ) -> HqResult<()> {
        let (id, user, csrf) = (id_hash.to_string(), user.to_string(), csrf.to_string());
        self.write(move |c| {
            c.execute(
                "INSERT INTO hq_sessions (id_hash, user_name, csrf, expires_ms) VALUES (?1, ?2, ?3, ?4)",
                params![id, user, csrf, expires_ms],
            )?;
            Ok(())
        })
        .await
    }

    async fn session(&self, id_hash: &str, now_ms: i64) -> HqResult<Option<HqSession>> {
        let id = id_hash.to_string();
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT s.user_name, u.role, s.csrf FROM hq_sessions s JOIN hq_users u ON u.name = s.user_name
                 WHERE s.id_hash = ?1 AND s.expires_ms > ?2",
                params![id, now_ms],
                |r| {
                    Ok(HqSession {
                        user: r.get(0)?,
                        role: r.get::<_, String>(1)?.parse().unwrap_or(HqRole::Support),
                        csrf: r.get(2)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    async fn delete_session(&self, id_hash: &str) -> HqResult<()> {
        let id = id_hash.to_string();
        self.write(move |c| {
            c.execute("DELETE FROM hq_sessions WHERE id_hash = ?1", [&id])?;
            Ok(())
        })
        .await
    }

    // --- releases and rollouts ---
    async fn put_release(&self, release: ReleaseRow, package: &Path) -> HqResult<PutRelease> {
        let (dir, package) = (self.releases_dir.clone(), package.to_path_buf());
        self.write(move |c| {
            let m = &release.manifest;
            if let Some(old) = rel::get_release(c, &m.version)? {
                return crate::hq::releases::same_release(&old, m);
            }
            // The file first: a row never names a package that is not on disk.
            rel::keep_package(&dir, &m.sha256, &package)?;
            rel::insert_release(c, &release)?;
            Ok(PutRelease::Created)
        })
        .await
    }

    async fn releases(&self) -> HqResult<Vec<ReleaseRow>> {
        self.read(rel::list_releases).await
    }

    async fn release(&self, version: &str) -> HqResult<Option<ReleaseRow>> {
        let version = version.to_string();
        self.read(move |c| rel::get_release(c, &version)).await
    }

    async fn package_chunk(&self, sha256: &str, offset: u64, len: usize) -> HqResult<Vec<u8>> {
        let (dir, sha) = (self.releases_dir.clone(), sha256.to_string());
        crate::db::run_blocking(move || rel::read_package(&dir, &sha, offset, len)).await
    }

    async fn assigned(&self, store: &str, version: &str) -> HqResult<bool> {
        let (store, version) = (store.to_string(), version.to_string());
        self.read(move |c| rel::assigned(c, &store, &version)).await
    }

    async fn create_rollout(&self, rollout: RolloutRow) -> HqResult<Vec<String>> {
        let retain = self.retain_events;
        let superseded = self
            .write(move |c| {
                let tx = crate::db::immediate(c)?;
                let superseded = rel::create_rollout(&tx, &rollout, retain)?;
                tx.commit()?;
                Ok(superseded)
            })
            .await?;
        if !superseded.is_empty() {
            // A superseded rollout may have authored its withdrawal.
            let h = self.read(|c| Ok(head(c)?)).await?;
            self.head.send_replace(h);
        }
        Ok(superseded)
    }

    async fn rollouts(&self) -> HqResult<Vec<RolloutRow>> {
        self.read(rel::list_rollouts).await
    }

    async fn rollout(
        &self,
        id: &str,
    ) -> HqResult<Option<(RolloutRow, Vec<RolloutStoreRow>, Vec<FleetStore>)>> {
        let id = id.to_string();
        self.read(move |c| {
            let Some(row) = rel::get_rollout(c, &id)? else {
                return Ok(None);
            };
            Ok(Some((row, rel::rollout_stores(c, &id)?, rel::fleet(c)?)))
        })
        .await
    }

    async fn set_rollout_state(
        &self,
        id: &str,
        to: RolloutState,
        reason: &str,
        now_ms: i64,
    ) -> HqResult<RolloutRow> {
        let (id, reason) = (id.to_string(), reason.to_string());
        let retain = self.retain_events;
        let row = self
            .write(move |c| {
                let tx = crate::db::immediate(c)?;
                let row = rel::set_state(&tx, &id, to, &reason, now_ms, retain)?;
                tx.commit()?;
                Ok(row)
            })
            .await?;
        if to == RolloutState::Aborted {
            // The abort may have authored its withdrawal.
            let h = self.read(|c| Ok(head(c)?)).await?;
            self.head.send_replace(h);
        }
        Ok(row)
    }

    async fn tick_rollout(&self, id: &str, now: jiff::Timestamp) -> HqResult<Tick> {
        let id = id.to_string();
        let retain = self.retain_events;
        let t = self
            .write(move |c| {
                let tx = crate::db::immediate(c)?;
                let t = rel::tick(&tx, &id, now, retain)?;
                tx.commit()?;
                Ok(t)
            })
            .await?;
        if t.authors() {
            let h = self.read(|c| Ok(head(c)?)).await?;
            self.head.send_replace(h);
        }
        Ok(t)
    }

    // --- console: fleet and story ---
    async fn fleet_extras(
        &self,
        checkouts_since_ms: i64,
        quarantined_since_ms: i64,
    ) -> HqResult<Vec<crate::hq::fleet::FleetExtra>> {
        self.read(move |c| Ok(fleet_extras(c, checkouts_since_ms, quarantined_since_ms)?))
            .await
    }

    async fn story_sources(
        &self,
        q: crate::hq::story::SourceQuery,
    ) -> HqResult<Option<crate::hq::story::Sources>> {
        self.read(move |c| Ok(story_sources(c, &q)?)).await
    }
    // --- support desk ---
    async fn desk_tickets(
        &self,
        q: &crate::hq::desk::DeskQuery,
    ) -> HqResult<Vec<crate::hq::desk::DeskTicket>> {
        let q = q.clone();
        self.read(move |c| Ok(desk::tickets(c, &q)?)).await
    }

    async fn desk_ticket(
        &self,
        store: Option<&str>,
        id: &str,
    ) -> HqResult<crate::hq::desk::DeskDetail> {
        let (store, id) = (store.map(str::to_string), id.to_string());
        self.read(move |c| desk::ticket(c, store.as_deref(), &id))
            .await
    }

    async fn desk_assign(
        &self,
        store: Option<&str>,
        id: &str,
        user: Option<&str>,
        actor: &str,
        now_ms: i64,
    ) -> HqResult<()> {
        let (store, id) = (store.map(str::to_string), id.to_string());
        let (user, actor) = (user.map(str::to_string), actor.to_string());
        self.write(move |c| {
            let tx = c.transaction()?;
            desk::assign(&tx, store.as_deref(), &id, user.as_deref(), &actor, now_ms)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn desk_routing(&self) -> HqResult<Vec<crate::hq::desk::Route>> {
        self.read(|c| Ok(desk::routing(c)?)).await
    }

    async fn put_desk_routing(&self, routes: Vec<crate::hq::desk::Route>) -> HqResult<()> {
        self.write(move |c| {
            let tx = c.transaction()?;
            desk::put_routing(&tx, &routes)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn desk_teams(&self) -> HqResult<Vec<crate::hq::desk::Team>> {
        self.read(desk::teams).await
    }

    async fn put_desk_teams(&self, teams: Vec<crate::hq::desk::Team>) -> HqResult<()> {
        self.write(move |c| {
            let tx = c.transaction()?;
            desk::put_teams(&tx, &teams)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn claim_notifications(
        &self,
        now_ms: i64,
        lease_ms: i64,
        max: i64,
    ) -> HqResult<Vec<crate::hq::desk::Notification>> {
        self.write(move |c| {
            let tx = c.transaction()?;
            let list = desk::claim(&tx, now_ms, lease_ms, max)?;
            tx.commit()?;
            Ok(list)
        })
        .await
    }

    async fn finish_notification(
        &self,
        id: i64,
        attempts: i64,
        outcome: Result<(), String>,
        next_ms: Option<i64>,
        now_ms: i64,
    ) -> HqResult<()> {
        self.write(move |c| Ok(desk::finish(c, id, attempts, &outcome, next_ms, now_ms)?))
            .await
    }

    async fn notifications(&self, limit: i64) -> HqResult<Vec<crate::hq::desk::Notification>> {
        self.read(move |c| Ok(desk::notifications(c, limit)?)).await
    }

    // --- support guides ---
    async fn guides(&self, limit: i64) -> HqResult<Vec<super::GuideRow>> {
        self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT kind, name, payload, seq FROM hq_state
                 WHERE key LIKE 'guide:%' AND live = 1 ORDER BY key, kind, name LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit], |r| {
                let payload: String = r.get(2)?;
                Ok(super::GuideRow {
                    kind: r.get(0)?,
                    name: r.get(1)?,
                    payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
                    seq: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HqUser> {
    Ok(HqUser {
        name: r.get(0)?,
        // The column's CHECK allows only the three roles.
        role: r.get::<_, String>(1)?.parse().unwrap_or(HqRole::Support),
        password_hash: r.get(2)?,
        created_ms: r.get(3)?,
    })
}

/// Registers a store; returns its token (only its hash is kept).
pub fn add_store(conn: &Connection, id: &str, group: &str, now_ms: i64) -> HqResult<String> {
    check_name("store id", id).map_err(|m| HqError::invalid("bad_store", m))?;
    if !group.is_empty() {
        check_name("group", group).map_err(|m| HqError::invalid("bad_group", m))?;
    }
    let token = secrets::generate_secret("sbhq_");
    let n = conn.execute(
        "INSERT OR IGNORE INTO stores (id, grp, token_hash, created_ms) VALUES (?1, ?2, ?3, ?4)",
        params![id, group, secrets::hash_secret(&token), now_ms],
    )?;
    if n == 0 {
        return Err(HqError::Conflict(format!(
            "store {id:?} is already registered"
        )));
    }
    Ok(token)
}

pub fn set_group(conn: &Connection, id: &str, group: &str) -> HqResult<()> {
    if !group.is_empty() {
        check_name("group", group).map_err(|m| HqError::invalid("bad_group", m))?;
    }
    let n = conn.execute(
        "UPDATE stores SET grp = ?2 WHERE id = ?1",
        params![id, group],
    )?;
    if n == 1 {
        Ok(())
    } else {
        Err(HqError::not_found(
            "unknown_store",
            format!("no store {id:?}"),
        ))
    }
}

fn store_by_token_hash(conn: &Connection, hash: &str) -> DbResult<Option<StoreIdent>> {
    Ok(conn
        .prepare_cached("SELECT id, grp FROM stores WHERE token_hash = ?1")?
        .query_row([hash], |r| {
            Ok(StoreIdent {
                id: r.get(0)?,
                group: r.get(1)?,
            })
        })
        .optional()?)
}

pub fn list_stores(conn: &Connection) -> DbResult<Vec<StoreView>> {
    let mut stmt = conn.prepare(
        "SELECT id, grp, last_seen_ms, version, cursor, lag_events, lag_seconds, outbox_business,
                outbox_telemetry, outbox_dropped, rollup, rollup_ms,
                (SELECT coalesce(max(seq), 0) FROM store_events e WHERE e.store_id = s.id)
         FROM stores s ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        let rollup: Option<String> = r.get(10)?;
        Ok(StoreView {
            id: r.get(0)?,
            group: r.get(1)?,
            last_seen: r
                .get::<_, Option<i64>>(2)?
                .map(|m| ts_from_ms(m).to_string()),
            version: r.get(3)?,
            cursor: r.get(4)?,
            lag_events: r.get(5)?,
            lag_seconds: r.get(6)?,
            outbox_business: r.get(7)?,
            outbox_telemetry: r.get(8)?,
            outbox_dropped: r.get(9)?,
            rollup: rollup.and_then(|s| serde_json::from_str(&s).ok()),
            rollup_at: r
                .get::<_, Option<i64>>(11)?
                .map(|m| ts_from_ms(m).to_string()),
            held: r.get(12)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The (kind, name) rows a target is stored as.
pub fn target_rows(target: &Target) -> Vec<(&'static str, &str)> {
    match target {
        Target::All { .. } => vec![("all", "")],
        Target::Groups { groups } => groups.iter().map(|g| ("group", g.as_str())).collect(),
        Target::Stores { stores } => stores.iter().map(|s| ("store", s.as_str())).collect(),
    }
}

/// Appends one validated event to the log for `target`; returns its seq.
pub fn append(tx: &Transaction<'_>, target: &Target, ev: &Authored, now_ms: i64) -> HqResult<i64> {
    let all = matches!(target, Target::All { .. });
    let (event_type, payload) = ev.body.to_wire();
    let payload = payload.to_string();
    let seq: i64 = tx
        .prepare_cached(
            "INSERT INTO hq_events (id, type, payload, all_stores, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO NOTHING RETURNING seq",
        )?
        .query_row(
            params![ev.id, event_type.as_str(), payload, all, now_ms],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| {
            HqError::Conflict(format!("an event with id {:?} already exists", ev.id))
        })?;
    let targets = target_rows(target);
    if !all {
        let mut ins = tx.prepare_cached(
            "INSERT OR IGNORE INTO hq_event_targets (seq, kind, name) VALUES (?1, ?2, ?3)",
        )?;
        for (k, n) in &targets {
            ins.execute(params![seq, k, n])?;
        }
    }
    if let Some((key, live)) = ev.body.state_key() {
        let mut up = tx.prepare_cached(
            "INSERT INTO hq_state (key, kind, name, seq, type, payload, live) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (key, kind, name) DO UPDATE SET seq = excluded.seq, type = excluded.type,
               payload = excluded.payload, live = excluded.live",
        )?;
        for (k, n) in &targets {
            up.execute(params![key, k, n, seq, event_type.as_str(), payload, live])?;
        }
    }
    Ok(seq)
}

/// Checks a target's shape (pure) and that every store it names is registered.
pub fn check_target(conn: &Connection, target: &Target) -> HqResult<()> {
    crate::hq::check_target_shape(target)?;
    if let Target::Stores { stores } = target {
        for s in stores {
            let known = conn
                .query_row("SELECT 1 FROM stores WHERE id = ?1", [s], |_| Ok(()))
                .optional()?
                .is_some();
            if !known {
                return Err(HqError::invalid(
                    "bad_target",
                    format!("target store {s:?} is not registered"),
                ));
            }
        }
    }
    Ok(())
}

/// Drops events older than the newest `retain` from the log; stores behind get 410.
pub fn prune(conn: &Connection, retain: u64) -> DbResult<()> {
    if retain == 0 {
        return Ok(());
    }
    let head = head(conn)?;
    let upto = head - retain as i64;
    if upto <= pruned_through(conn)? {
        return Ok(());
    }
    conn.execute("DELETE FROM hq_events WHERE seq <= ?1", [upto])?;
    conn.execute("DELETE FROM hq_event_targets WHERE seq <= ?1", [upto])?;
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('pruned_through', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [upto.to_string()],
    )?;
    Ok(())
}

pub fn pruned_through(conn: &Connection) -> DbResult<i64> {
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'pruned_through'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

pub fn head(conn: &Connection) -> DbResult<i64> {
    // sqlite_sequence survives deletes, so the head never goes back after pruning.
    let v: Option<i64> = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'hq_events'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.unwrap_or(0))
}

/// The events for a store after `after`, at most `limit`.
pub fn feed(
    conn: &Connection,
    store: &str,
    group: &str,
    after: i64,
    limit: i64,
) -> HqResult<FeedPage> {
    let head = head(conn)?;
    let pruned = pruned_through(conn)?;
    if after < pruned {
        return Err(HqError::CursorGone {
            after,
            pruned_through: pruned,
        });
    }
    let mut stmt = conn.prepare_cached(
        "SELECT seq, id, type, payload, created_ms FROM hq_events e
         WHERE seq > ?1 AND seq <= ?2 AND (all_stores = 1 OR seq IN (
             SELECT seq FROM hq_event_targets WHERE seq > ?1
               AND ((kind = 'group' AND name = ?3) OR (kind = 'store' AND name = ?4))))
         ORDER BY seq LIMIT ?5",
    )?;
    let events = stmt
        .query_map(params![after, head, group, store, limit], |r| {
            let payload: String = r.get(3)?;
            Ok(FeedEvent {
                seq: r.get(0)?,
                id: r.get(1)?,
                event_type: r.get(2)?,
                payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
                at: Some(ts_from_ms(r.get(4)?).to_string()),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(crate::hq::page(events, after, head, limit))
}

/// The store's current catalog state as events, and the cursor it corresponds to.
pub fn snapshot(conn: &Connection, store: &str, group: &str) -> DbResult<Snapshot> {
    let cursor = head(conn)?;
    let mut stmt = conn.prepare(
        "SELECT key, type, payload, live, max(seq) FROM hq_state
         WHERE kind = 'all' OR (kind = 'group' AND name = ?1) OR (kind = 'store' AND name = ?2)
         GROUP BY key",
    )?;
    let mut events: Vec<FeedEvent> = stmt
        .query_map(params![group, store], |r| {
            let payload: String = r.get(2)?;
            let live: bool = r.get(3)?;
            let seq: i64 = r.get(4)?;
            Ok(live.then(|| FeedEvent {
                seq,
                id: format!("snapshot-{seq}"),
                event_type: r.get::<_, String>(1).unwrap_or_default(),
                payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
                at: None,
            }))
        })?
        .filter_map(|r| r.transpose())
        .collect::<Result<_, _>>()?;
    events.sort_by_key(|e| e.seq);
    let pending: Option<(String, String)> = conn
        .query_row(crate::hq::releases::PENDING_ASSIGN_SQL, [store], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    if let Some((rollout, manifest)) = pending {
        events.extend(crate::hq::releases::snapshot_assign(
            &rollout, &manifest, cursor,
        ));
    }
    let newest = conn
        .query_row(crate::hq::releases::NEWEST_ASSIGNMENT_SQL, [store], |r| {
            Ok(crate::hq::releases::NewestAssignment {
                rollout: r.get(0)?,
                version: r.get(1)?,
                rollout_state: r.get(2)?,
                reason: r.get(3)?,
                store_state: r.get(4)?,
                superseded_by_same_version: r.get(5)?,
            })
        })
        .optional()?;
    if let Some(n) = newest {
        events.extend(crate::hq::releases::snapshot_withdraw(&n, cursor));
    }
    Ok(Snapshot { cursor, events })
}

/// Stores a pushed batch idempotently on (store, seq), in the caller's transaction.
pub fn ingest(
    tx: &Transaction<'_>,
    store: &str,
    batch: &PushBatch,
    now_ms: i64,
) -> DbResult<PushAck> {
    let mut stored = 0;
    let mut duplicates = 0;
    {
        let mut ins = tx.prepare_cached(
            "INSERT OR IGNORE INTO store_events (store_id, seq, id, type, class, payload, at, received_ms, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for ev in &batch.events {
            // Stored as the store sent it (valid JSON: the body parsed).
            let payload = ev.payload.get();
            let n = ins.execute(params![
                store,
                ev.seq,
                ev.id,
                ev.event_type,
                ev.class,
                payload,
                ev.at,
                now_ms,
                crate::hq::story::at_ms(&ev.at, now_ms)
            ])?;
            if n == 0 {
                duplicates += 1;
                continue;
            }
            stored += 1;
            match ev.event_type.parse::<StoreEventType>() {
                Ok(StoreEventType::TicketOpened) => {
                    let p = &ev.payload_value();
                    let id = p.get("ticket_id").and_then(Value::as_str).unwrap_or(&ev.id);
                    let subject = p.get("subject").and_then(Value::as_str).unwrap_or("");
                    let new = tx
                        .prepare_cached(
                            "INSERT OR IGNORE INTO tickets (id, store_id, subject, payload, opened_ms)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                        )?
                        .execute(params![id, store, subject, payload, now_ms])?;
                    if new == 1 {
                        desk::route_new(tx, store, id, p, now_ms)?;
                    }
                }
                Ok(StoreEventType::ReleaseStatus) => {
                    if let Ok(st) = serde_json::from_str(payload) {
                        rel::apply_status(tx, store, &st, now_ms)?;
                    }
                }
                Ok(StoreEventType::TelemetryRollup) => {
                    tx.prepare_cached(
                        "UPDATE stores SET rollup = ?2, rollup_ms = ?3 WHERE id = ?1
                           AND (rollup_ms IS NULL OR rollup_ms <= ?3)",
                    )?
                    .execute(params![store, payload, now_ms])?;
                }
                _ => {}
            }
        }
    }
    let r = &batch.report;
    record_fleet_report(tx, store, r)?;
    tx.prepare_cached(
        "UPDATE stores SET last_seen_ms = ?2, version = ?3, cursor = ?4, lag_events = ?5, lag_seconds = ?6,
           outbox_business = ?7, outbox_telemetry = ?8, outbox_dropped = ?9 WHERE id = ?1",
    )?
    .execute(params![
        store,
        now_ms,
        r.version,
        r.cursor,
        r.lag_events,
        r.lag_seconds,
        r.outbox_business,
        r.outbox_telemetry,
        r.outbox_dropped
    ])?;
    let held: i64 = tx.query_row(
        "SELECT coalesce(max(seq), 0) FROM store_events WHERE store_id = ?1",
        [store],
        |r| r.get(0),
    )?;
    let acked = batch.events.iter().map(|e| e.seq).max().unwrap_or(held);
    Ok(PushAck {
        acked,
        held,
        stored,
        duplicates,
    })
}

/// Marks a store as seen (feed requests).
pub fn touch(conn: &Connection, store: &str, now_ms: i64) -> DbResult<()> {
    conn.prepare_cached("UPDATE stores SET last_seen_ms = ?2 WHERE id = ?1")?
        .execute(params![store, now_ms])?;
    Ok(())
}

/// Received store events in arrival order.
pub fn store_events(
    conn: &Connection,
    q: &EventQuery,
    since_ms: Option<i64>,
) -> DbResult<Vec<Value>> {
    let limit = q.limit.unwrap_or(1000).clamp(1, 100_000);
    let mut stmt = conn.prepare_cached(
        "SELECT rid, store_id, seq, id, type, class, payload, at, received_ms FROM store_events
         WHERE rid > ?1 AND (?2 IS NULL OR store_id = ?2) AND (?3 IS NULL OR type = ?3)
           AND (?4 IS NULL OR received_ms >= ?4)
         ORDER BY rid LIMIT ?5",
    )?;
    let rows = stmt.query_map(
        params![q.after.unwrap_or(0), q.store, q.event_type, since_ms, limit],
        |r| {
            let payload: String = r.get(6)?;
            Ok(json!({
                "rid": r.get::<_, i64>(0)?,
                "store": r.get::<_, String>(1)?,
                "seq": r.get::<_, i64>(2)?,
                "id": r.get::<_, String>(3)?,
                "type": r.get::<_, String>(4)?,
                "class": r.get::<_, String>(5)?,
                "payload": serde_json::from_str::<Value>(&payload).unwrap_or(Value::Null),
                "at": r.get::<_, String>(7)?,
                "received_at": ts_from_ms(r.get(8)?).to_string(),
            }))
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn tickets(conn: &Connection) -> DbResult<Vec<Value>> {
    let mut stmt = conn.prepare(
        "SELECT id, store_id, subject, payload, status, opened_ms FROM tickets ORDER BY opened_ms DESC LIMIT 500",
    )?;
    let mut out: Vec<Value> = stmt
        .query_map([], |r| {
            let payload: String = r.get(3)?;
            Ok(json!({
                "id": r.get::<_, String>(0)?,
                "store": r.get::<_, String>(1)?,
                "subject": r.get::<_, String>(2)?,
                "opened": serde_json::from_str::<Value>(&payload).unwrap_or(Value::Null),
                "status": r.get::<_, String>(4)?,
                "received_at": ts_from_ms(r.get(5)?).to_string(),
            }))
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare(
        "SELECT event_id, author, message, status, at_ms FROM ticket_replies
         WHERE store_id = ?1 AND ticket_id = ?2 ORDER BY id",
    )?;
    for t in &mut out {
        let id = t["id"].as_str().unwrap_or("").to_string();
        let store = t["store"].as_str().unwrap_or("").to_string();
        let replies: Vec<Value> = stmt
            .query_map([&store, &id], |r| {
                Ok(json!({
                    "event_id": r.get::<_, String>(0)?,
                    "author": r.get::<_, String>(1)?,
                    "message": r.get::<_, String>(2)?,
                    "status": r.get::<_, Option<String>>(3)?,
                    "at": ts_from_ms(r.get(4)?).to_string(),
                }))
            })?
            .collect::<Result<_, _>>()?;
        t["replies"] = Value::Array(replies);
    }
    Ok(out)
}

/// The store a ticket came from: `store` itself if it has that ticket, else the only store with
/// such a ticket id (two stores with the same id must be told apart with `store`).
fn ticket_store(conn: &Connection, store: Option<&str>, id: &str) -> HqResult<String> {
    let stores: Vec<String> = conn
        .prepare("SELECT store_id FROM tickets WHERE id = ?1 AND (?2 IS NULL OR store_id = ?2)")?
        .query_map(params![id, store], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    crate::hq::one_ticket_store(stores, store, id)
}

fn record_reply(
    tx: &Transaction<'_>,
    store: &str,
    ticket: &str,
    reply: &TicketReply,
    now_ms: i64,
) -> DbResult<()> {
    tx.execute(
        "INSERT INTO ticket_replies (store_id, ticket_id, event_id, author, message, status, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            store,
            ticket,
            reply.event_id,
            reply.author,
            reply.message,
            reply.status,
            now_ms
        ],
    )?;
    tx.execute(
        "UPDATE tickets SET status = coalesce(?3, 'answered') WHERE store_id = ?1 AND id = ?2",
        params![store, ticket, reply.status],
    )?;
    Ok(())
}

// --- console: fleet and story ---

/// Keeps what the report says for the fleet view (before the report's outbox depth replaces the
/// previous one, which is kept as `outbox_prev`).
fn record_fleet_report(
    tx: &Transaction<'_>,
    store: &str,
    r: &crate::proto::StoreReport,
) -> DbResult<()> {
    tx.prepare_cached(
        "UPDATE stores SET outbox_prev = coalesce(outbox_business, 0) + coalesce(outbox_telemetry, 0),
           devices_total = ?2, devices_offline = ?3, open_alerts = ?4, open_alerts_warning = ?5,
           timezone = coalesce(?6, timezone)
         WHERE id = ?1",
    )?
    .execute(params![
        store,
        r.devices_total,
        r.devices_offline,
        r.open_alerts,
        r.open_alerts_warning,
        r.timezone
    ])?;
    Ok(())
}

pub fn fleet_extras(
    conn: &Connection,
    checkouts_since_ms: i64,
    quarantined_since_ms: i64,
) -> DbResult<Vec<crate::hq::fleet::FleetExtra>> {
    let mut stmt = conn.prepare_cached(
        "SELECT s.id, s.last_seen_ms, s.devices_total, s.devices_offline, s.open_alerts,
                s.open_alerts_warning, s.timezone, s.outbox_prev,
                (SELECT count(*) FROM store_events e WHERE e.store_id = s.id
                   AND e.type = 'checkout.completed' AND e.received_ms >= ?1),
                (SELECT count(*) FROM store_events e WHERE e.store_id = s.id
                   AND e.type = 'sync.quarantined' AND e.received_ms >= ?2),
                r.payload, r.received_ms
         FROM stores s LEFT JOIN store_events r ON r.rid = (
             SELECT max(rid) FROM store_events x WHERE x.store_id = s.id AND x.type = 'release.status')
         ORDER BY s.id",
    )?;
    let rows = stmt.query_map(params![checkouts_since_ms, quarantined_since_ms], |r| {
        let release: Option<String> = r.get(10)?;
        Ok(crate::hq::fleet::FleetExtra {
            id: r.get(0)?,
            last_seen_ms: r.get(1)?,
            devices_total: r.get(2)?,
            devices_offline: r.get(3)?,
            open_alerts: r.get(4)?,
            open_alerts_warning: r.get(5)?,
            timezone: r.get(6)?,
            outbox_prev: r.get(7)?,
            checkouts_last_hour: r.get(8)?,
            quarantined_recent: r.get(9)?,
            release: release.and_then(|p| serde_json::from_str(&p).ok()),
            release_at: r
                .get::<_, Option<i64>>(11)?
                .map(|m| ts_from_ms(m).to_string()),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn story_sources(
    conn: &Connection,
    q: &crate::hq::story::SourceQuery,
) -> DbResult<Option<crate::hq::story::Sources>> {
    use crate::hq::story::{AuthoredRow, Sources, StoreRow};
    let Some((group, registered_ms, timezone)) = conn
        .query_row(
            "SELECT grp, created_ms, timezone FROM stores WHERE id = ?1",
            [&q.store],
            |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?
    else {
        return Ok(None);
    };
    // The store's first event (lowest seq, by the (store, seq) key) came with its first push.
    let first_push_ms: Option<i64> = conn
        .query_row(
            "SELECT received_ms FROM store_events WHERE store_id = ?1 ORDER BY seq LIMIT 1",
            [&q.store],
            |r| r.get(0),
        )
        .optional()?;
    let window = params![q.store, q.from_ms, q.to_ms, q.limit];
    let events = conn
        .prepare_cached(
            "SELECT at_ms, id, type, payload, at, received_ms FROM store_events
             WHERE store_id = ?1 AND at_ms >= ?2 AND at_ms < ?3
               AND type NOT IN ('checkout.completed', 'telemetry.rollup')
             ORDER BY at_ms, rid LIMIT ?4",
        )?
        .query_map(window, |r| {
            let payload: String = r.get(3)?;
            Ok(StoreRow {
                at_ms: r.get(0)?,
                id: r.get(1)?,
                event_type: r.get(2)?,
                payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
                at: r.get(4)?,
                received_ms: r.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    // Hourly series: at most one row per hour of the (bounded) window.
    let checkouts = conn
        .prepare_cached(
            "SELECT (at_ms / 3600000) * 3600000 AS h, count(*) FROM store_events
             WHERE store_id = ?1 AND type = 'checkout.completed' AND at_ms >= ?2 AND at_ms < ?3
             GROUP BY h ORDER BY h",
        )?
        .query_map(params![q.store, q.from_ms, q.to_ms], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let telemetry = conn
        .prepare_cached(
            "SELECT at_ms, payload FROM store_events WHERE rid IN (
                 SELECT max(rid) FROM store_events
                 WHERE store_id = ?1 AND type = 'telemetry.rollup' AND at_ms >= ?2 AND at_ms < ?3
                 GROUP BY at_ms / 3600000)
             ORDER BY at_ms",
        )?
        .query_map(params![q.store, q.from_ms, q.to_ms], |r| {
            let payload: String = r.get(1)?;
            Ok((
                r.get(0)?,
                serde_json::from_str(&payload).unwrap_or(Value::Null),
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let authored = conn
        .prepare_cached(
            "SELECT e.seq, e.id, e.type, e.payload, e.created_ms, e.all_stores,
                    EXISTS (SELECT 1 FROM hq_event_targets t WHERE t.seq = e.seq AND t.kind = 'store' AND t.name = ?1)
             FROM hq_events e
             WHERE e.created_ms >= ?2 AND e.created_ms < ?3 AND (e.all_stores = 1 OR e.seq IN (
                 SELECT seq FROM hq_event_targets
                 WHERE (kind = 'store' AND name = ?1) OR (kind = 'group' AND name = ?5)))
             ORDER BY e.seq LIMIT ?4",
        )?
        .query_map(params![q.store, q.from_ms, q.to_ms, q.limit, group], |r| {
            let payload: String = r.get(3)?;
            let all: bool = r.get(5)?;
            let direct: bool = r.get(6)?;
            Ok(AuthoredRow {
                seq: r.get(0)?,
                id: r.get(1)?,
                event_type: r.get(2)?,
                payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
                created_ms: r.get(4)?,
                target: crate::hq::story::target_label(all, direct, &group),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Sources {
        group,
        registered_ms,
        timezone,
        first_push_ms,
        events,
        checkouts,
        telemetry,
        authored,
    }))
}
