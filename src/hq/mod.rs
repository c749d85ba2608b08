//! The reference HQ (`storebox hq`): what a retailer's headquarters runs so that its stores have
//! someone to sync with — a registry of stores with per-store tokens, an authoring API whose events
//! are delivered to all stores, a group or one store through per-store feeds, idempotent ingest of
//! the events stores push, a fleet view and support tickets. It speaks exactly the protocol in
//! docs/sync-protocol.md, so a retailer can replace it with its own implementation.

pub mod server;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::db::Db;

pub fn db_path(config: &Config) -> std::path::PathBuf {
    config.hq_server.data_dir.join("hq.db")
}

pub fn open_db(config: &Config) -> anyhow::Result<Db> {
    let path = db_path(config);
    Db::open_with(&path, store::MIGRATIONS)
        .with_context(|| format!("opening HQ database {}", path.display()))
}

/// Runs HQ until `shutdown` resolves; `on_ready` gets the bound HTTP address.
pub async fn serve<S, R>(
    config: Config,
    clock: SharedClock,
    shutdown: S,
    on_ready: R,
) -> anyhow::Result<()>
where
    S: Future<Output = ()> + Send + 'static,
    R: FnOnce(SocketAddr),
{
    let admin = config.hq_server.admin_token.expose().to_string();
    if admin.is_empty() {
        anyhow::bail!(
            "hq_server.admin_token: required for `storebox hq` (set hq_server.admin_token or hq_server.admin_token_file)"
        );
    }
    let cfg = config.clone();
    let db = crate::db::run_blocking(move || open_db(&cfg)).await?;
    let head = db.read(store::head).await?;
    let spool_dir = config.hq_server.data_dir.join("spool");
    std::fs::create_dir_all(&spool_dir)
        .with_context(|| format!("creating {}", spool_dir.display()))?;
    let state = server::HqState {
        db: db.clone(),
        clock,
        admin_token_hash: Arc::new(crate::auth::hash_secret(&admin)),
        retain_events: config.hq_server.retain_events,
        head: Arc::new(tokio::sync::watch::channel(head).0),
        spool_dir,
    };
    let listener = tokio::net::TcpListener::bind(config.hq_server.listen)
        .await
        .with_context(|| format!("hq_server.listen {}", config.hq_server.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(http = %addr, "storebox hq ready");
    on_ready(addr);
    axum::serve(listener, server::router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    let _ = db
        .write(|c| Ok(c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?))
        .await;
    Ok(())
}
