//! `storebox serve`: assembles the appliance — database, broker, device ingest, presence, HTTP —
//! runs it until the shutdown future resolves, then stops in order: no new connections, finish
//! HTTP requests, commit every queued device message, checkpoint the database. Tests and `demo`
//! call [`serve`] with port 0 and their own clock and shutdown future.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use parking_lot::Mutex;
use serde_json::json;

use crate::broker::{self, guard::BrokerShared};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::db::Db;
use crate::devices::{self, ingest};
use crate::ops::supervise::{self, Supervisor};
use crate::ops::{metrics::Metrics, systemd};
use crate::web::{self, AppState};

/// Where a started box listens.
#[derive(Debug, Clone, Copy)]
pub struct Running {
    pub http: SocketAddr,
    pub mqtt: SocketAddr,
    /// HTTP is served over TLS (`[tls]`).
    pub https: bool,
    /// MQTT over TLS (`mqtt.tls_listen`).
    pub mqtt_tls: Option<SocketAddr>,
}

/// Raw telemetry rows kept at most, whatever the age (protects the disk from a flood).
pub const TELEMETRY_MAX_ROWS: i64 = 5_000_000;

pub async fn serve<S, R>(
    config: Config,
    clock: SharedClock,
    shutdown: S,
    on_ready: R,
) -> anyhow::Result<()>
where
    S: Future<Output = ()>,
    R: FnOnce(Running),
{
    let config = Arc::new(config);
    let db_path = config.db_path();
    let db = crate::db::run_blocking(move || Db::open(&db_path)).await?;
    db.write(|c| devices::reset_presence(c)).await?;
    let metrics = Arc::new(Metrics::new());

    let (ingest_tx, ingest_rx) = flume::unbounded();
    let shared = BrokerShared::new(
        metrics.clone(),
        clock.clone(),
        config.mqtt.max_payload_bytes,
        ingest_tx,
        config.mqtt.ingest_queue,
        broker::ingest_bytes_cap(&config.mqtt),
    );
    let health = Arc::new(crate::ops::health::Health::default());
    let mut sup = Supervisor::new(health.clone(), metrics.clone());
    let watches = broker::Watches {
        router: sup.thread("mqtt-router"),
        publisher: sup.thread("mqtt-publisher"),
    };
    let mqtt = Arc::new(broker::start(&config.mqtt, shared.clone(), db.clone(), watches).await?);
    let publisher = mqtt.publisher.clone();
    if let Some(t) = mqtt.take_accept_task() {
        sup.watch("mqtt-listener", t);
    }
    if let Some(t) = mqtt.take_link_task() {
        sup.watch("mqtt-link", t);
    }
    for thread in ["mqtt-router", "mqtt-publisher"] {
        // Test hook only (debug builds): wake the thread once it is asked to end.
        let p = publisher.clone();
        tokio::spawn(async move {
            if supervise::kill_thread_after_delay(thread).await {
                p.publish("storebox-sink/test-hook", "");
            }
        });
    }

    let device_changes = devices::live::DeviceChanges::default();
    let promotions = Arc::new(crate::catalog::promo_cache::PromotionCache::default());
    let price_answers = Arc::new(crate::catalog::answer_cache::AnswerCache::new(
        config.storage.price_cache_mb * 1024 * 1024,
        metrics.price_cache_hits.clone(),
        metrics.price_cache_misses.clone(),
    ));
    let ctx = Arc::new(ingest::IngestCtx {
        broker: shared.clone(),
        health: health.clone(),
        clock: clock.clone(),
        changes: device_changes.clone(),
        metrics: metrics.clone(),
        publisher: publisher.clone(),
        dead_letter_keep: config.storage.dead_letter_keep as i64,
        price: {
            let currency = config.store.currency.clone();
            let promotions = promotions.clone();
            let answers = price_answers.clone();
            Arc::new(move |conn, sku, at_ms| {
                let at = crate::db::ts_from_ms(at_ms);
                // The same kept answers as HTTP lookups (`conn` is the ingest's transaction,
                // which writes no catalog data).
                let answer = match web::catalog::kept_answer(conn, &answers, sku, at) {
                    Ok(Some(body)) => Ok(Ok(body)),
                    Ok(None) => web::catalog::fresh_answer_json(
                        conn,
                        &promotions,
                        &answers,
                        sku,
                        at,
                        &currency,
                    ),
                    Err(e) => Err(e),
                };
                match answer {
                    Ok(Ok(body)) => {
                        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null)
                    }
                    Ok(Err(e)) => {
                        json!({"sku": sku, "error": {"code": e.code(), "message": e.to_string()}})
                    }
                    Err(e) => {
                        tracing::error!(sku, error = %e, "price lookup for a device failed");
                        json!({"sku": sku, "error": {"code": "internal", "message": "the box could not read its catalog; see its log"}})
                    }
                }
            })
        },
    });
    sup.spawn("ingest", ingest::run(ingest_rx, db.clone(), ctx));
    sup.watch("presence", devices::spawn_presence_monitor(shared.clone()));
    sup.spawn(
        "scheduler",
        price_scheduler(
            db.clone(),
            clock.clone(),
            publisher.clone(),
            config.store.currency.clone(),
        ),
    );
    sup.spawn(
        "retention",
        maintenance(
            db.clone(),
            clock.clone(),
            config.storage.telemetry_keep_days,
        ),
    );

    let sync_state = Arc::new(crate::sync::state::SyncState::new(&config.hq.url));
    let started = Instant::now();
    let sync_tasks = crate::sync::client::spawn(crate::sync::client::Ctx {
        db: db.clone(),
        config: config.clone(),
        clock: clock.clone(),
        state: sync_state.clone(),
        metrics: metrics.clone(),
        publisher: publisher.clone(),
        started,
    });
    if let Some(tasks) = sync_tasks {
        // In the order client::spawn starts them.
        for (name, task) in ["sync-feed", "sync-push", "sync-rollups"]
            .into_iter()
            .zip(tasks.0)
        {
            sup.watch(name, task);
        }
    }

    let sales = crate::updates::sale::SaleGuard::default();
    sup.spawn(
        "updates",
        crate::updates::service::run(crate::updates::service::Ctx {
            db: db.clone(),
            config: config.clone(),
            clock: clock.clone(),
            sync: sync_state.clone(),
            sales: sales.clone(),
            health: health.clone(),
        }),
    );

    let setup_code = Arc::new(Mutex::new(None));
    if db.read(crate::auth::user_count).await? == 0 {
        let code = crate::auth::generate_secret("")[..12].to_string();
        tracing::warn!(
            setup_code = %code,
            "no staff user exists yet: open the web UI and enter this one-time setup code to create the first admin, or run `storebox user add NAME --role admin`"
        );
        *setup_code.lock() = Some(code);
    }

    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("http.listen {}", config.http.listen))?;
    let http_addr = listener.local_addr()?;
    let state = AppState::new(web::AppStateInner {
        db: db.clone(),
        clock: clock.clone(),
        config: config.clone(),
        metrics: metrics.clone(),
        broker: shared.clone(),
        publisher,
        mqtt: mqtt.clone(),
        started,
        setup_code,
        login_failures: Arc::default(),
        sync: sync_state,
        device_changes: device_changes.clone(),
        tokens: Arc::default(),
        promotions,
        price_answers: price_answers.clone(),
        password_checks: Arc::new(tokio::sync::Semaphore::new(config.http.max_password_checks)),
        health: health.clone(),
        sales,
    });
    let live_changes = device_changes;
    let app = web::router(state);
    let https = web::tls::acceptor(&config.tls, &[b"http/1.1"])?;
    let (stop_http, stopped) = tokio::sync::oneshot::channel::<()>();
    let (http_done, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let refused_metrics = metrics.clone();
    let serve_http = crate::httpd::run(
        listener,
        app,
        crate::httpd::Limits::new(
            config.http.header_timeout_secs,
            config.http.idle_timeout_secs,
            config.http.max_connections_per_client,
            config.http.max_connections,
        ),
        https.clone(),
        Arc::new(move |kind| {
            crate::ops::metrics::Metrics::inc_kind(&refused_metrics.http_connections_refused, kind)
        }),
        async {
            let _ = stopped.await;
        },
    );
    sup.spawn("http", async move {
        serve_http.await;
        let _ = http_done.send(());
    });

    let mqtt_tls = match (
        config.mqtt.tls_listen,
        web::tls::acceptor(&config.tls, &[])?,
    ) {
        (Some(listen), Some(acceptor)) => Some(
            broker::tls::start(listen, acceptor, mqtt.addr, config.mqtt.max_connections)
                .await
                .with_context(|| format!("mqtt.tls_listen {listen}"))?,
        ),
        _ => None,
    };
    if let Some((addr, _)) = &mqtt_tls {
        tracing::info!("mqtt tls listening on {addr} (MQTT over TLS, same device rights)");
    }
    let running = Running {
        http: http_addr,
        mqtt: mqtt.addr,
        https: https.is_some(),
        mqtt_tls: mqtt_tls.as_ref().map(|(addr, _)| *addr),
    };
    tracing::info!(http = %running.http, mqtt = %running.mqtt, store = %config.store.id, "storebox ready");
    systemd::notify_ready();
    let watchdog_task = systemd::watchdog_interval()
        .map(|every| spawn_watchdog(every, db.clone(), mqtt.clone(), health.clone()));
    on_ready(running);

    tokio::pin!(shutdown);
    let failed = tokio::select! {
        () = &mut shutdown => None,
        f = sup.failed() => Some(f),
    };
    if failed.is_some() {
        // `/readyz` names the task meanwhile; the watchdog is no longer fed.
        tokio::time::sleep(FAILED_TASK_GRACE).await;
    }
    sup.stopping();

    // Orderly stop, bounded to well under systemd's 5 s budget.
    tracing::info!("storebox stopping");
    systemd::notify_stopping();
    mqtt.stop_accepting();
    if let Some((_, task)) = &mqtt_tls {
        task.abort();
    }
    live_changes.close();
    let _ = stop_http.send(());
    if tokio::time::timeout(Duration::from_secs(2), http_stopped)
        .await
        .is_err()
    {
        tracing::warn!("http: open requests did not finish within 2 s; closing them");
    }
    match tokio::time::timeout(Duration::from_secs(2), shared.flush()).await {
        Ok(Ok(())) => tracing::info!("device ingest flushed"),
        Ok(Err(_)) => tracing::warn!(
            queued = shared.queue_depth(),
            "device ingest writer is gone; unacked events will be resent by devices"
        ),
        Err(_) => tracing::warn!(
            queued = shared.queue_depth(),
            "device ingest not flushed within 2 s; unacked events will be resent by devices"
        ),
    }
    sup.abort_all();
    if let Some(t) = watchdog_task {
        t.abort();
    }
    let _ = db
        .write(|c| Ok(c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?))
        .await;
    tracing::info!("storebox stopped");
    match failed {
        Some((task, cause)) => Err(anyhow::anyhow!(
            "stopped because the task {task} {cause} (exit non-zero so that systemd restarts it)"
        )),
        None => Ok(()),
    }
}

/// How long `/readyz` names a failed task before the process stops.
pub const FAILED_TASK_GRACE: Duration = Duration::from_millis(1500);

/// Announces price and promotion boundaries on `store/prices/changed` within a second of their
/// instant (4 evaluations per second; see `catalog::scheduler`).
async fn price_scheduler(
    db: Db,
    clock: SharedClock,
    publisher: broker::Publisher,
    currency: String,
) {
    {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = clock.now().as_millisecond();
            match db
                .write(move |c| crate::catalog::scheduler::evaluate(c, now))
                .await
            {
                Ok(boundaries) => {
                    for b in boundaries {
                        tracing::info!(at = %b.at, skus = b.changes.len(), "prices changed");
                        publisher.publish(
                            "store/prices/changed",
                            crate::catalog::scheduler::message(&b, now, &currency),
                        );
                    }
                }
                Err(e) => tracing::error!(error = %e, "price scheduler: evaluation failed"),
            }
        }
    }
}

/// Telemetry retention: raw rows and minute rollups older than `keep_days`, and raw rows beyond
/// [`TELEMETRY_MAX_ROWS`], are deleted at start and every 10 minutes.
async fn maintenance(db: Db, clock: SharedClock, keep_days: u32) {
    {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        loop {
            tick.tick().await;
            let cutoff = clock.now().as_millisecond() - keep_days as i64 * 86_400_000;
            let r = db
                .write(move |c| {
                    let a = c.execute("DELETE FROM telemetry WHERE ts_ms < ?1", [cutoff])?;
                    let b =
                        c.execute("DELETE FROM telemetry_minute WHERE minute < ?1", [cutoff])?;
                    let d = c.execute(
                        "DELETE FROM telemetry WHERE id <= (SELECT max(id) FROM telemetry) - ?1",
                        [TELEMETRY_MAX_ROWS],
                    )?;
                    Ok(a + b + d)
                })
                .await;
            match r {
                Ok(n) if n > 0 => tracing::info!(rows = n, "telemetry retention: old rows removed"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "telemetry retention failed"),
            }
        }
    }
}

/// Pings the systemd watchdog while the database answers and the broker accepts; if either stops,
/// the pings stop and systemd restarts the service.
fn spawn_watchdog(
    every: Duration,
    db: Db,
    mqtt: Arc<broker::Broker>,
    health: Arc<crate::ops::health::Health>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every / 2);
        loop {
            tick.tick().await;
            let db_ok = tokio::time::timeout(
                every / 4,
                db.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?)),
            )
            .await
            .is_ok_and(|r| r.is_ok());
            let task = health.failed_task();
            if db_ok && mqtt.is_accepting() && task.is_none() {
                systemd::notify_watchdog();
            } else {
                tracing::error!(
                    db_ok,
                    broker_ok = mqtt.is_accepting(),
                    failed_task = task.as_ref().map(|t| t.task),
                    "health check failed; withholding watchdog ping"
                );
            }
        }
    })
}
