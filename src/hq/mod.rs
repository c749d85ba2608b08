//! The reference HQ (`storebox hq`): what a retailer's headquarters runs so that its stores have
//! someone to sync with — a registry of stores with per-store tokens, an authoring API whose events
//! are delivered to all stores, a group or one store through per-store feeds, idempotent ingest of
//! the events stores push, a fleet view and support tickets. It speaks exactly the protocol in
//! docs/sync-protocol.md and shares nothing with the store but that protocol ([`crate::proto`]),
//! so a retailer can replace it with its own implementation.
//!
//! - [`storage`]: the [`storage::HqStorage`] trait and its SQLite and PostgreSQL engines
//! - [`server`]: the HTTP face (sync endpoints for stores, authoring and fleet API)
//! - [`error`]: domain errors, mapped once to HTTP answers
//! - [`console`]: sign-in, sessions, roles; [`web`]: the console in the browser; [`fleet`]: health
//!   verdicts and the live fleet stream; [`story`]: one store's timeline
//! - [`releases`], [`release_api`], [`rollout`]: the release registry, package downloads and
//!   health-gated rollouts with their engine (docs/releases.md)
//! - [`tasks`]: the background tasks, watched (a dead one stops the node with an error)

pub mod console;
pub mod error;
pub mod release_api;
pub mod releases;
pub mod rollout;
pub mod server;
pub mod storage;
pub mod tasks;
// --- console: fleet, story, web shell ---
pub mod fleet;
pub mod story;
pub mod web;
// --- console: authoring preview, groups ---
pub mod author;
pub mod preview;
// --- support desk ---
pub mod desk;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use crate::clock::SharedClock;
use crate::config::HqServerConfig;
use crate::proto::{FeedEvent, FeedPage, HqBody, Target};
use error::{HqError, HqResult};
use storage::{Authored, Storage, TicketReply};

/// Opens the storage `config` names: PostgreSQL when `database_url` is set, else the SQLite file
/// in `data_dir`.
pub async fn open_storage(config: &HqServerConfig) -> anyhow::Result<Storage> {
    if !config.database_url.is_empty() {
        #[cfg(feature = "postgres")]
        {
            let pg = storage::postgres::PgStorage::connect(
                config.database_url.expose(),
                config.retain_events,
            )
            .await
            .context("hq_server.database_url")?;
            return Ok(Arc::new(pg));
        }
        #[cfg(not(feature = "postgres"))]
        anyhow::bail!(
            "hq_server.database_url: this storebox was built without PostgreSQL support (cargo feature `postgres`)"
        );
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let path = config.data_dir.join("hq.db");
    let db = storage::sqlite::SqliteStorage::open(&path, config.retain_events)
        .await
        .with_context(|| format!("opening HQ database {}", path.display()))?;
    Ok(Arc::new(db))
}

/// Runs HQ on `storage` until `shutdown` resolves; `on_ready` gets the bound HTTP address.
pub async fn serve<S, R>(
    config: HqServerConfig,
    storage: Storage,
    clock: SharedClock,
    shutdown: S,
    on_ready: R,
) -> anyhow::Result<()>
where
    S: Future<Output = ()> + Send + 'static,
    R: FnOnce(SocketAddr),
{
    let admin = config.admin_token.expose().to_string();
    if admin.is_empty() {
        anyhow::bail!(
            "hq_server.admin_token: required for `storebox hq` (set hq_server.admin_token or hq_server.admin_token_file)"
        );
    }
    let spool_dir = config.data_dir.join("spool");
    std::fs::create_dir_all(&spool_dir)
        .with_context(|| format!("creating {}", spool_dir.display()))?;
    let (tasks, mut failures) = tasks::Tasks::new();
    let state = server::HqState {
        storage,
        clock,
        admin_token_hash: Arc::new(crate::secrets::hash_secret(&admin)),
        spool_dir,
        sign_in: console::guard(),
        release_keys: Arc::new(
            config
                .release_public_keys
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    crate::proto::release::parse_public_key(k).map_err(|m| {
                        anyhow::anyhow!("hq_server.release_public_keys entry {i}: {m}")
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
        ),
        max_release_bytes: config.max_release_bytes,
        rollout_poke: Arc::new(tokio::sync::Notify::new()),
        fleet: fleet::FleetState::new(&config, tasks.clone()),
    };
    let _engine = tasks.spawn_forever(
        "rollout-engine",
        releases::run_engine(
            state.storage.clone(),
            state.clock.clone(),
            state.rollout_poke.clone(),
            std::time::Duration::from_secs(config.rollout_tick_seconds.max(1)),
        ),
    );
    // --- support desk notifications ---
    let _notifier = tasks.spawn_forever(
        "desk-notifier",
        desk::run_notifier(
            state.storage.clone(),
            state.clock.clone(),
            desk::NotifierConfig {
                public_url: config.public_url.clone(),
                max_attempts: config.desk_notify_attempts.max(1),
                retry_base_secs: config.desk_retry_base_secs.max(1),
                webhook_timeout: std::time::Duration::from_secs(
                    config.desk_webhook_timeout_secs.clamp(1, 300),
                ),
                poll: std::time::Duration::from_secs(1),
                smtp: smtp_settings(&config)?,
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("hq_server.listen {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(http = %addr, engine = state.storage.engine(), "storebox hq ready");
    on_ready(addr);
    let limits = crate::httpd::Limits::new(
        config.header_timeout_secs,
        config.idle_timeout_secs,
        config.max_connections_per_client,
        config.max_connections,
    );
    // Live fleet streams end when the stop begins, so that the graceful stop does not wait on them.
    // A failed background task begins the stop too, and `serve` then returns its error.
    let fleet = state.fleet.clone();
    let failed = Arc::new(parking_lot::Mutex::new(None));
    let failed_in = failed.clone();
    let shutdown = async move {
        tokio::select! {
            () = shutdown => {}
            (task, cause) = failures.first() => {
                tracing::error!(task, cause, "HQ task ended; stopping so that the service manager starts HQ again");
                *failed_in.lock() = Some((task, cause));
            }
        }
        fleet.stop_streams();
    };
    crate::httpd::run(
        listener,
        server::router(state),
        limits,
        None,
        crate::httpd::log_refused("hq"),
        shutdown,
    )
    .await;
    let failed = failed.lock().take();
    match failed {
        Some((task, cause)) => anyhow::bail!("HQ task {task} {cause}"),
        None => Ok(()),
    }
}

/// `[hq_server] smtp_*`: None without `smtp_host`; the password read from its file.
fn smtp_settings(config: &HqServerConfig) -> anyhow::Result<Option<desk::SmtpSettings>> {
    if config.smtp_host.is_empty() {
        return Ok(None);
    }
    if !["none", "starttls", "tls"].contains(&config.smtp_tls.as_str()) {
        anyhow::bail!(
            "hq_server.smtp_tls: {:?} is not one of none, starttls, tls",
            config.smtp_tls
        );
    }
    if config.smtp_from.is_empty() {
        anyhow::bail!("hq_server.smtp_from: required with smtp_host (the sender address)");
    }
    let credentials = match (&config.smtp_username, &config.smtp_password_file) {
        (u, _) if u.is_empty() => None,
        (u, Some(f)) => {
            let p = std::fs::read_to_string(f)
                .with_context(|| format!("hq_server.smtp_password_file {}", f.display()))?;
            Some((u.clone(), p.trim_end_matches(['\r', '\n']).to_string()))
        }
        (_, None) => anyhow::bail!("hq_server.smtp_username: needs smtp_password_file"),
    };
    Ok(Some(desk::SmtpSettings {
        host: config.smtp_host.clone(),
        port: config.smtp_port,
        tls: config.smtp_tls.clone(),
        from: config.smtp_from.clone(),
        credentials,
    }))
}

/// The checks of a target that need no database: not empty, group names well formed.
pub fn check_target_shape(target: &Target) -> HqResult<()> {
    let bad = |m: String| Err(HqError::invalid("bad_target", m));
    match target {
        Target::All { all: true } => Ok(()),
        Target::All { all: false } => bad("target {\"all\": false} targets nobody".into()),
        Target::Groups { groups } if groups.is_empty() => bad("target groups is empty".into()),
        Target::Stores { stores } if stores.is_empty() => bad("target stores is empty".into()),
        Target::Groups { groups } => {
            for g in groups {
                crate::proto::check_name("group", g)
                    .map_err(|m| HqError::invalid("bad_target", m))?;
            }
            Ok(())
        }
        Target::Stores { .. } => Ok(()),
    }
}

/// A feed page from the events read after `after` with `head` the newest seq: a full page ends at
/// its last event, a short one at the head (nothing for this store in between).
pub fn page(events: Vec<FeedEvent>, after: i64, head: i64, limit: i64) -> FeedPage {
    let next = if events.len() as i64 >= limit {
        events.last().map_or(after, |e| e.seq)
    } else {
        head.max(after)
    };
    FeedPage { events, next, head }
}

/// The `ticket.update` event that carries a reply to a store.
pub fn reply_event(ticket: &str, reply: &TicketReply) -> HqResult<Authored> {
    let payload = serde_json::json!({
        "ticket_id": ticket,
        "message": reply.message,
        "author": reply.author,
        "status": reply.status,
    });
    let body = crate::proto::validate("ticket.update", &payload)
        .map_err(|m| HqError::invalid("invalid_reply", m))?;
    Ok(Authored {
        id: reply.event_id.clone(),
        body,
    })
}

/// The one store a ticket id belongs to, among `stores` found with it.
pub fn one_ticket_store(stores: Vec<String>, store: Option<&str>, id: &str) -> HqResult<String> {
    match stores.len() {
        0 => Err(HqError::not_found(
            "unknown_ticket",
            match store {
                Some(s) => format!("no ticket {id:?} from store {s:?}"),
                None => format!("no ticket {id:?}"),
            },
        )),
        1 => Ok(stores.into_iter().next().unwrap_or_default()),
        _ => Err(HqError::Conflict(format!(
            "ticket id {id:?} exists at several stores ({}); name the store (?store=ID)",
            stores.join(", ")
        ))),
    }
}

/// A new unique event id.
pub fn new_event_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Validates authored events (pure): the error names the index and the field.
pub fn validate_events(events: Vec<crate::proto::HqEvent>) -> HqResult<Vec<Authored>> {
    if events.is_empty() {
        return Err(HqError::invalid("invalid_event", "events is empty"));
    }
    events
        .into_iter()
        .enumerate()
        .map(|(i, ev)| {
            let body: HqBody = ev
                .body()
                .map_err(|m| HqError::invalid("invalid_event", format!("events[{i}]: {m}")))?;
            let id = match ev.id {
                Some(id) => {
                    crate::proto::check_id("event id", &id).map_err(|m| {
                        HqError::invalid("invalid_event", format!("events[{i}]: {m}"))
                    })?;
                    id
                }
                None => new_event_id("hq"),
            };
            Ok(Authored { id, body })
        })
        .collect()
}
