//! HQ's storage, behind one trait with two engines: the embedded SQLite file (one HQ machine, the
//! default) and PostgreSQL (`[hq_server] database_url`: several stateless HQ nodes on one
//! database). The HTTP layer sees only [`HqStorage`]; transactions live inside each engine.
//!
//! The one rule both engines must keep for the feed: **a store never skips an event.** Feed
//! sequence numbers are handed out in commit order (SQLite has one writer; PostgreSQL takes them
//! from a counter row locked by the publishing transaction until it commits), so once a store has
//! read up to `seq`, no event at or below `seq` can still appear.

pub mod sqlite;

#[cfg(feature = "postgres")]
pub mod postgres;

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use super::error::HqResult;
use super::releases::{PutRelease, ReleaseRow, RolloutRow, RolloutState, RolloutStoreRow, Tick};
use super::rollout::FleetStore;
use crate::proto::{FeedPage, HqBody, PushAck, PushBatch, Snapshot, Target};

/// A registered store, as its bearer token identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreIdent {
    pub id: String,
    pub group: String,
}

/// One store in the fleet view: what it last reported and when.
#[derive(Debug, Clone, Serialize)]
pub struct StoreView {
    pub id: String,
    pub group: String,
    pub last_seen: Option<String>,
    pub version: Option<String>,
    pub cursor: Option<i64>,
    pub lag_events: Option<i64>,
    pub lag_seconds: Option<f64>,
    pub outbox_business: Option<i64>,
    pub outbox_telemetry: Option<i64>,
    pub outbox_dropped: Option<i64>,
    /// The latest `telemetry.rollup` payload received.
    pub rollup: Option<Value>,
    pub rollup_at: Option<String>,
    /// Highest store sequence number held.
    pub held: i64,
}

/// `GET /hq/v1/store-events` filters.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    pub store: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// RFC 3339: received at or after.
    pub since: Option<String>,
    /// Only events with an arrival number above this (paging).
    pub after: Option<i64>,
    pub limit: Option<i64>,
}

/// An event to author: its id (unique) and validated body.
#[derive(Debug, Clone)]
pub struct Authored {
    pub id: String,
    pub body: HqBody,
}

/// A support reply to a store's ticket.
#[derive(Debug, Clone)]
pub struct TicketReply {
    /// The id of the `ticket.update` event that carries it to the store.
    pub event_id: String,
    pub author: String,
    pub message: String,
    pub status: Option<String>,
}

/// What an HQ staff member may do: `admin` everything (users, tokens, releases), `operator`
/// author data, rollouts and store groups, `support` tickets and a read-only fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HqRole {
    Admin,
    Operator,
    Support,
}

impl HqRole {
    pub fn as_str(self) -> &'static str {
        match self {
            HqRole::Admin => "admin",
            HqRole::Operator => "operator",
            HqRole::Support => "support",
        }
    }
}

impl std::str::FromStr for HqRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "admin" => Ok(HqRole::Admin),
            "operator" => Ok(HqRole::Operator),
            "support" => Ok(HqRole::Support),
            other => Err(format!(
                "unknown role {other:?}: expected admin, operator or support"
            )),
        }
    }
}

/// A console user as stored.
#[derive(Debug, Clone)]
pub struct HqUser {
    pub name: String,
    pub role: HqRole,
    pub password_hash: String,
    pub created_ms: i64,
}

/// A signed-in session: whose, and the token its writes must carry (CSRF).
#[derive(Debug, Clone)]
pub struct HqSession {
    pub user: String,
    pub role: HqRole,
    pub csrf: String,
}

#[async_trait]
pub trait HqStorage: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn engine(&self) -> &'static str;

    /// Registers a store; returns its bearer token (only a hash of it is kept).
    async fn add_store(&self, id: &str, group: &str, now_ms: i64) -> HqResult<String>;
    async fn set_group(&self, id: &str, group: &str) -> HqResult<()>;
    async fn list_stores(&self) -> HqResult<Vec<StoreView>>;
    /// The store a bearer token belongs to.
    async fn store_by_token(&self, token: &str) -> HqResult<Option<StoreIdent>>;
    /// Marks a store as seen now (feed requests).
    async fn touch(&self, store: &str, now_ms: i64) -> HqResult<()>;

    /// Appends validated events for `target` in one transaction (all or none), prunes the log to
    /// the configured retention, and tells every node's long-polls; returns their feed seqs.
    /// Refuses a target naming an unregistered store.
    async fn author(
        &self,
        target: &Target,
        events: Vec<Authored>,
        now_ms: i64,
    ) -> HqResult<Vec<i64>>;
    /// The newest feed seq (any target).
    async fn head(&self) -> HqResult<i64>;
    /// The events for `store` after `after`, at most `limit`; [`super::error::HqError::CursorGone`]
    /// when `after` is older than the retained log.
    async fn feed(&self, store: &StoreIdent, after: i64, limit: i64) -> HqResult<FeedPage>;
    /// The store's current catalog state as events, and the cursor it corresponds to.
    async fn snapshot(&self, store: &StoreIdent) -> HqResult<Snapshot>;
    /// A head that moves whenever events are authored, on this node or (PostgreSQL) any other;
    /// feed long-polls wait on it.
    fn changes(&self) -> tokio::sync::watch::Receiver<i64>;

    /// Stores a pushed batch idempotently on (store, seq), with the store's report.
    async fn ingest(&self, store: &str, batch: PushBatch, now_ms: i64) -> HqResult<PushAck>;
    /// Received store events in arrival order.
    async fn store_events(&self, q: EventQuery, since_ms: Option<i64>) -> HqResult<Vec<Value>>;

    /// Tickets from all stores, newest first, with their replies.
    async fn tickets(&self) -> HqResult<Vec<Value>>;
    /// Records a reply to ticket `ticket` of `store` (None: the only store with such a ticket) and
    /// authors the `ticket.update` for that store in the same transaction; returns its seq.
    async fn reply(
        &self,
        store: Option<&str>,
        ticket: &str,
        reply: TicketReply,
        now_ms: i64,
    ) -> HqResult<i64>;

    /// Adds a console user (`Conflict` when the name is taken).
    async fn add_user(&self, user: HqUser) -> HqResult<()>;
    async fn set_password(&self, name: &str, password_hash: &str) -> HqResult<()>;
    async fn users(&self) -> HqResult<Vec<HqUser>>;
    async fn user(&self, name: &str) -> HqResult<Option<HqUser>>;
    async fn create_session(
        &self,
        id_hash: &str,
        user: &str,
        csrf: &str,
        expires_ms: i64,
    ) -> HqResult<()>;
    /// The live session with this id hash (none once expired or its user is gone).
    async fn session(&self, id_hash: &str, now_ms: i64) -> HqResult<Option<HqSession>>;
    async fn delete_session(&self, id_hash: &str) -> HqResult<()>;

    // --- releases and rollouts (src/hq/releases.rs) ---
    /// Registers a verified release whose package is the file `package` (the caller's temp file,
    /// which the engine may move): SQLite keeps it as `releases/<sha256>.deb` next to `hq.db`,
    /// PostgreSQL in `release_chunks` rows. `Conflict` when the version exists with other bytes.
    async fn put_release(
        &self,
        release: ReleaseRow,
        package: &std::path::Path,
    ) -> HqResult<PutRelease>;
    /// Every registered release, newest upload first.
    async fn releases(&self) -> HqResult<Vec<ReleaseRow>>;
    async fn release(&self, version: &str) -> HqResult<Option<ReleaseRow>>;
    /// Up to `len` bytes of the package with this sha256 from `offset` (fewer only at its end).
    async fn package_chunk(&self, sha256: &str, offset: u64, len: usize) -> HqResult<Vec<u8>>;
    /// Whether a rollout assigned `version` to `store` (who may download it).
    async fn assigned(&self, store: &str, version: &str) -> HqResult<bool>;
    /// Creates a running rollout of a registered release; every other active rollout is aborted
    /// as superseded (one active rollout at a time). Returns the superseded ids.
    async fn create_rollout(&self, rollout: RolloutRow) -> HqResult<Vec<String>>;
    /// Every rollout, newest first.
    async fn rollouts(&self) -> HqResult<Vec<RolloutRow>>;
    /// A rollout, its assigned stores and the fleet (id and group of every store).
    async fn rollout(
        &self,
        id: &str,
    ) -> HqResult<Option<(RolloutRow, Vec<RolloutStoreRow>, Vec<FleetStore>)>>;
    /// Pause (running → paused), resume (paused → running) or abort (active → aborted);
    /// `Conflict` for any other transition.
    async fn set_rollout_state(
        &self,
        id: &str,
        to: RolloutState,
        reason: &str,
        now_ms: i64,
    ) -> HqResult<RolloutRow>;
    /// One engine step for an active rollout, under the rollout's lock: decides
    /// ([`crate::hq::releases::plan_tick`]) and records timeouts, new assignments with their
    /// `release.assign` event (authored like every HQ event) and the rollout's new state.
    async fn tick_rollout(&self, id: &str, now: jiff::Timestamp) -> HqResult<Tick>;
    // --- console: fleet and story (src/hq/fleet.rs, src/hq/story.rs) ---
    /// Per store: devices, alerts and time zone from its last report, the outbox depth of the
    /// report before, `checkout.completed` received since `checkouts_since_ms`,
    /// `sync.quarantined` received since `quarantined_since_ms`, its last `release.status`.
    async fn fleet_extras(
        &self,
        checkouts_since_ms: i64,
        quarantined_since_ms: i64,
    ) -> HqResult<Vec<crate::hq::fleet::FleetExtra>>;
    /// One store's story sources for a window (None: no such store).
    async fn story_sources(
        &self,
        q: crate::hq::story::SourceQuery,
    ) -> HqResult<Option<crate::hq::story::Sources>>;
    // --- support desk (src/hq/desk.rs) ---
    /// The desk queue: tickets matching the (checked) filters, oldest open first within a status
    /// order open, answered, closed; at most `limit` from `offset`.
    async fn desk_tickets(
        &self,
        q: &crate::hq::desk::DeskQuery,
    ) -> HqResult<Vec<crate::hq::desk::DeskTicket>>;
    /// One ticket with its payload, replies and recorded changes (`NotFound`, or `Conflict` when
    /// the id is used by several stores and `store` is None).
    async fn desk_ticket(
        &self,
        store: Option<&str>,
        id: &str,
    ) -> HqResult<crate::hq::desk::DeskDetail>;
    /// Sets (or clears) a ticket's assignee and records who did it, when.
    async fn desk_assign(
        &self,
        store: Option<&str>,
        id: &str,
        user: Option<&str>,
        actor: &str,
        now_ms: i64,
    ) -> HqResult<()>;
    async fn desk_routing(&self) -> HqResult<Vec<crate::hq::desk::Route>>;
    /// Replaces every routing rule (checked by the caller).
    async fn put_desk_routing(&self, routes: Vec<crate::hq::desk::Route>) -> HqResult<()>;
    async fn desk_teams(&self) -> HqResult<Vec<crate::hq::desk::Team>>;
    /// Replaces every team (checked by the caller).
    async fn put_desk_teams(&self, teams: Vec<crate::hq::desk::Team>) -> HqResult<()>;
    /// Due pending notifications not leased by a sender, leased to the caller until
    /// `now_ms + lease_ms` (on PostgreSQL `FOR UPDATE SKIP LOCKED`: two nodes never get the same).
    async fn claim_notifications(
        &self,
        now_ms: i64,
        lease_ms: i64,
        max: i64,
    ) -> HqResult<Vec<crate::hq::desk::Notification>>;
    /// Records an attempt: sent, or failed with the error and the next attempt's time (None:
    /// given up, `failed`). Ends the lease.
    async fn finish_notification(
        &self,
        id: i64,
        attempts: i64,
        outcome: Result<(), String>,
        next_ms: Option<i64>,
        now_ms: i64,
    ) -> HqResult<()>;
    /// Notifications, newest first.
    async fn notifications(&self, limit: i64) -> HqResult<Vec<crate::hq::desk::Notification>>;

    // --- support guides ---
    /// The live support guides with each target they were published for (the `guide:` keys of
    /// the snapshot state), by id; at most `limit` rows.
    async fn guides(&self, limit: i64) -> HqResult<Vec<GuideRow>>;
}

/// One live guide for one target (`kind` all, group or store; `name` the group or store).
#[derive(Debug, Clone, PartialEq)]
pub struct GuideRow {
    pub payload: Value,
    pub kind: String,
    pub name: String,
    pub seq: i64,
}

pub type Storage = Arc<dyn HqStorage>;

#[cfg(test)]
mod tests;
// --- releases and rollouts ---
#[cfg(test)]
mod release_tests;
// --- support desk ---
#[cfg(test)]
mod desk_tests;
