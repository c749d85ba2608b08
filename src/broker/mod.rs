//! The embedded MQTT broker (rumqttd 0.20) that the store's devices connect to, configured so that
//! its known weaknesses cannot hurt the store:
//!
//! - **Authentication and topic authorization** live in [`guard::Guard`], a protocol wrapper that
//!   sees every packet (rumqttd itself only has a connect-time callback and no per-topic ACL).
//! - **Bounded memory**: every device publication matches one of the pre-created filters
//!   `devices/#` / `store/#` (so no per-topic logs are created), and every filter's in-memory log is
//!   capped; see [`router_config`] and docs/operations.md for the arithmetic.
//! - **No lost events**: device messages are captured by the guard at decode time, not through a
//!   router subscription that can silently skip; business events are acknowledged only after the
//!   SQLite commit (docs/mqtt.md).
//! - **Port 0, readiness and shutdown**: rumqttd binds its own listener and has no ready signal or
//!   stop API. We reserve the address with a bound, non-listening `SO_REUSEADDR` socket (the
//!   kernel then hands that port to nobody else), let rumqttd bind it, and detect readiness when
//!   the port enters LISTEN (a second non-listening bind then fails). Stopping aborts the accept
//!   task, which closes the listener.

pub mod acl;
pub mod guard;
pub mod nodelay;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rumqttd::{ConnectionSettings, Router, RouterConfig, SegmentConfig, Server, ServerSettings};

use crate::config::MqttConfig;
use crate::db::Db;
use guard::{BrokerShared, Guard};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("mqtt.listen {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("mqtt broker did not start listening on {0} within 5 s")]
    NotReady(SocketAddr),
    #[error("mqtt broker stopped while starting: {0}")]
    Failed(String),
    #[error("mqtt broker local link: {0}")]
    Link(String),
}

/// Filters created at start, so that every allowed publication lands in an existing log and the
/// router never creates a log per published topic: `devices/#` catches the box's messages to
/// devices that have not subscribed, `store/#` the store-wide topics, and the sink the (emptied)
/// device uplink messages (see [`guard::SINK_TOPIC`]).
pub const INITIAL_FILTERS: [&str; 3] = ["devices/#", "store/#", "storebox-sink/#"];

/// Per-filter log segment for everything but `store/…`: each device subscription
/// (`devices/D/commands`, `…/events/ack`, `…/price/reply`), `devices/#` and the sink. The log holds
/// between one and two segments, and the smaller figure must still cover a device's whole window
/// of `mqtt.max_inflight` (100) event acks of ~80 bytes, or a device that reads its acks a little
/// late misses some and resends (measured: 4 KiB cost 1 % resends and half the event rate).
pub const SMALL_SEGMENT: usize = 16 * 1024;

/// Router settings derived from `[mqtt]`. rumqttd keeps one in-memory log per subscription filter,
/// capped at `max_segment_count` segments of `max_segment_size` bytes of topic + payload; a custom
/// segment applies to every filter *matching* its pattern. Only `store/…` filters (price changes,
/// notices: large, shared by all devices) get a large window, `buffer_mb / 4` in all; every other
/// filter keeps at most 2 × [`SMALL_SEGMENT`]. Device uplink data never enters these logs (the guard
/// sinks it), so the total is bounded by configuration, not by traffic (docs/operations.md).
pub fn router_config(cfg: &MqttConfig) -> RouterConfig {
    let mb = 1024 * 1024;
    let mut custom = HashMap::new();
    custom.insert(
        "store/#".to_string(),
        SegmentConfig {
            max_segment_size: (cfg.buffer_mb * mb / 8).max(64 * 1024),
            max_segment_count: 2,
        },
    );
    RouterConfig {
        max_connections: cfg.max_connections + 8,
        max_outgoing_packet_count: 200,
        max_segment_size: SMALL_SEGMENT,
        max_segment_count: 2,
        custom_segment: Some(custom),
        initialized_filters: Some(INITIAL_FILTERS.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    }
}

/// Bytes of device messages that may wait in the ingest queue for SQLite: half of `buffer_mb`.
pub fn ingest_bytes_cap(cfg: &MqttConfig) -> usize {
    cfg.buffer_mb * 1024 * 1024 / 2
}

/// Most of the box's own messages handed to the router with one notification (see the
/// publisher thread in [`start`]).
pub const PUBLISH_BATCH: usize = 256;

/// Publishes from the box itself (acks, commands, price changes) through a local router link.
/// rumqttd's link send blocks on a bounded channel, so publishes go through a dedicated thread.
#[derive(Clone)]
pub struct Publisher {
    tx: flume::Sender<(String, bytes::Bytes)>,
}

impl Publisher {
    pub fn publish(&self, topic: impl Into<String>, payload: impl Into<bytes::Bytes>) {
        let _ = self.tx.send((topic.into(), payload.into()));
    }

    /// A publisher whose messages go nowhere but a channel, for unit tests of publishing code.
    pub fn channel() -> (Publisher, flume::Receiver<(String, bytes::Bytes)>) {
        let (tx, rx) = flume::unbounded();
        (Publisher { tx }, rx)
    }
}

pub struct Broker {
    pub addr: SocketAddr,
    pub publisher: Publisher,
    accept: tokio::task::AbortHandle,
    /// The listener task, taken once by the supervisor ([`Broker::take_accept_task`]).
    accept_task: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The task that drains the box's own router link, taken once by the supervisor.
    link_task: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// How the broker's threads report their end (supervision, `ops::supervise`).
pub struct Watches {
    pub router: crate::ops::supervise::ThreadWatch,
    pub publisher: crate::ops::supervise::ThreadWatch,
}

impl Broker {
    /// Stops accepting new device connections.
    pub fn stop_accepting(&self) {
        self.accept.abort();
    }

    /// True while the listener task runs.
    pub fn is_accepting(&self) -> bool {
        !self.accept.is_finished()
    }

    /// The device listener's task, for the supervisor (once).
    pub fn take_accept_task(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.accept_task.lock().take()
    }

    /// The task draining the box's router link, for the supervisor (once).
    pub fn take_link_task(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.link_task.lock().take()
    }
}

/// Runs the router on a thread of its own (rumqttd's `Router::spawn` hides its thread), so that
/// its end, by error or panic, is reported to the supervisor.
fn run_router(mut router: Router, watch: crate::ops::supervise::ThreadWatch) {
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loop {
        if watch.kill_requested() {
            panic!("test hook: mqtt router killed (STOREBOX_TEST_KILL_TASK)");
        }
        // One round at a time (upstream's `spawn` runs `run(0)`: the same rounds in a loop).
        if let Err(e) = router.run(1) {
            return format!("ended: {e}");
        }
    }));
    watch.ended(match run {
        Ok(cause) => cause,
        Err(p) => format!("panicked: {}", crate::ops::supervise::panic_message(&*p)),
    });
}

fn bind_probe(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    Ok(sock)
}

/// Raises the soft limit of open descriptors to the hard limit (systemd's default soft limit is
/// 1024, the hard one 524288). rumqttd's accept loop retries a failing `accept` at once and
/// forever, so reaching the limit turns it into a busy loop; with the hard limit the HTTP caps
/// (`http.max_connections`) and the broker's (`mqtt.max_connections`, 5 s to send CONNECT) keep
/// the process far below it.
fn raise_descriptor_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(soft, hard, error = %e, "could not raise the open-file limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not read the open-file limit"),
    }
}

/// Every [`REVOCATION_SWEEP`], closes the connections of devices no longer in the registry:
/// `storebox device remove` runs in another process and changes only the database.
fn spawn_revocation_sweep(shared: Arc<BrokerShared>, db: Db) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REVOCATION_SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let ids: Vec<Arc<str>> = shared
                .presence
                .live()
                .into_iter()
                .filter(|c| !c.revoked.load(std::sync::atomic::Ordering::Relaxed))
                .map(|c| c.device.clone())
                .collect();
            if ids.is_empty() {
                continue;
            }
            let gone = db
                .read(move |c| {
                    let mut st = c.prepare_cached("SELECT 1 FROM devices WHERE id = ?1")?;
                    let mut gone = Vec::new();
                    for id in ids {
                        if !st.exists([&*id])? {
                            gone.push(id);
                        }
                    }
                    Ok(gone)
                })
                .await;
            match gone {
                Ok(gone) => {
                    for id in gone {
                        tracing::info!(device = %id, "mqtt: device no longer registered; closing its connection");
                        shared.presence.revoke(&id);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "mqtt: revocation sweep could not read devices")
                }
            }
        }
    });
}

/// Seconds a device connection may wait in the kernel for its first bytes before rumqttd accepts
/// it (TCP_DEFER_ACCEPT), and how many may wait (the kernel caps it at `net.core.somaxconn`).
pub const DEFER_ACCEPT_SECS: i32 = 5;
pub const LISTEN_BACKLOG: i32 = 4096;

/// How often the broker looks for removed devices that are still connected.
pub const REVOCATION_SWEEP: Duration = Duration::from_millis(400);

/// Starts the router, the device listener and the box's own link.
pub async fn start(
    cfg: &MqttConfig,
    shared: Arc<BrokerShared>,
    db: Db,
    watches: Watches,
) -> Result<Broker, BrokerError> {
    let reservation = bind_probe(cfg.listen).map_err(|source| BrokerError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let addr = reservation
        .local_addr()
        .map_err(|source| BrokerError::Bind {
            addr: cfg.listen,
            source,
        })?;

    raise_descriptor_limit();
    let _ = shared.mqtt_config.set(cfg.clone());
    shared
        .limits
        .max_subscriptions
        .store(cfg.max_subscriptions, std::sync::atomic::Ordering::Relaxed);
    shared
        .limits
        .max_inflight_qos2
        .store(cfg.max_inflight_qos2, std::sync::atomic::Ordering::Relaxed);
    let router = Router::new(0, router_config(cfg));
    let router_tx = router.link();
    let router_watch = watches.router;
    std::thread::Builder::new()
        .name("mqtt-router".into())
        .spawn(move || run_router(router, router_watch))
        .map_err(|e| BrokerError::Link(e.to_string()))?;
    // Closes device connections on request (`guard::Presence::revoke`). rumqttd has no API to
    // drop a connection, but its router drops the older of two connections with one client id:
    // a local link under the device's id takes its place (the device's TCP connection is closed)
    // and disconnects at once.
    let (kick_tx, kick_rx) = flume::unbounded::<Arc<str>>();
    shared.presence.set_kicker(kick_tx);
    let kick_router = router_tx.clone();
    tokio::spawn(async move {
        while let Ok(device) = kick_rx.recv_async().await {
            let router = kick_router.clone();
            let id = device.clone();
            let built = tokio::task::spawn_blocking(move || {
                rumqttd::local::LinkBuilder::new(&id, router)
                    .clean_session(true)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .await;
            match built {
                Ok(Ok((mut tx, rx, _ack))) => {
                    let bye = rumqttd::protocol::Disconnect {
                        reason_code: rumqttd::protocol::DisconnectReasonCode::NormalDisconnection,
                    };
                    let _ = tx
                        .send(rumqttd::protocol::Packet::Disconnect(bye, None))
                        .await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    drop(rx);
                    tracing::info!(device = %device, "mqtt: closed the connection of a removed device");
                }
                Ok(Err(e)) => {
                    tracing::warn!(device = %device, error = %e, "mqtt: could not close the connection of a removed device; it closes at its next packet")
                }
                Err(e) => tracing::warn!(device = %device, error = %e, "mqtt: kicker failed"),
            }
        }
    });
    spawn_revocation_sweep(shared.clone(), db.clone());

    let auth_shared = shared.clone();
    let mut connections = ConnectionSettings {
        connection_timeout_ms: 5000,
        // Hard protocol cap: payloads above max_payload_bytes but below this are dead-lettered and
        // the connection kept; above it the connection is closed to protect memory.
        max_payload_size: cfg.max_payload_bytes.saturating_mul(4).max(64 * 1024),
        max_inflight_count: cfg.max_inflight,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let auth_db = db.clone();
    connections.set_auth_handler(move |client_id: String, username: String, password: String| {
        let shared = auth_shared.clone();
        let db = auth_db.clone();
        // Synchronously, before the first await: see `guard::take_connecting`.
        let pending = guard::take_connecting(&client_id);
        async move {
            let kind = if client_id == username && acl::valid_device_id(&username) {
                crate::devices::registry::check_login(&db, &username, &password).await
            } else {
                None
            };
            if kind.is_none() {
                tracing::warn!(client_id = ?client_id, username = ?username, "mqtt: login refused");
            }
            let ok = kind.is_some();
            shared.authenticated(pending, kind);
            ok
        }
    });
    let settings = ServerSettings {
        name: "devices".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections,
    };
    let mut server = Server::new(settings, router_tx.clone(), Guard::new(shared.clone()));
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel();
    let accept = tokio::spawn(async move {
        let result = server.start(rumqttd::LinkType::Remote).await;
        let _ = failed_tx.send(format!("{result:?}"));
    });

    // Ready once the port is in LISTEN: a second non-listening bind then fails.
    let mut failed_rx = failed_rx;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(msg) = failed_rx.try_recv() {
            return Err(BrokerError::Failed(msg));
        }
        match bind_probe(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => break,
            _ => {}
        }
        if tokio::time::Instant::now() > deadline {
            accept.abort();
            return Err(BrokerError::NotReady(addr));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(reservation);
    match nodelay::set_on_listener(addr) {
        Ok(true) => tracing::debug!(%addr, "mqtt: TCP_NODELAY set for device connections"),
        Ok(false) => {
            tracing::warn!(%addr, "mqtt: listener not found; device sockets keep Nagle's algorithm (slower event acks)")
        }
        Err(e) => {
            tracing::warn!(%addr, error = %e, "mqtt: could not set TCP_NODELAY; event acks may be slower")
        }
    }

    match nodelay::find_listener(addr) {
        Ok(Some(fd)) => {
            if let Err(e) = nodelay::defer_accept(fd, DEFER_ACCEPT_SECS, LISTEN_BACKLOG) {
                tracing::warn!(%addr, error = %e, "mqtt: could not defer accepting silent connections");
            }
        }
        Ok(None) => {
            tracing::warn!(%addr, "mqtt: listener not found; silent connections take descriptors")
        }
        Err(e) => {
            tracing::warn!(%addr, error = %e, "mqtt: listener not found; silent connections take descriptors")
        }
    }

    let (mut link_tx, mut link_rx, _ack) =
        rumqttd::local::LinkBuilder::new("storebox-box", router_tx)
            .dynamic_filters(true)
            .build()
            .map_err(|e| BrokerError::Link(e.to_string()))?;
    let (tx, rx) = flume::unbounded::<(String, bytes::Bytes)>();
    let publisher = Publisher { tx };
    let _ = shared.publisher.set(publisher.clone());
    let watch = watches.publisher;
    std::thread::Builder::new()
        .name("mqtt-publisher".into())
        .spawn(move || {
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                while let Ok(first) = rx.recv() {
                    if watch.kill_requested() {
                        panic!("test hook: mqtt publisher killed (STOREBOX_TEST_KILL_TASK)");
                    }
                    // Everything queued goes to the router at once (a batch's acks), so that the
                    // router appends it in one pass and wakes each device's connection once.
                    let more = rx.try_iter().take(PUBLISH_BATCH - 1);
                    if let Err(e) = link_tx.publish_all(std::iter::once(first).chain(more)) {
                        return format!("router link closed: {e}");
                    }
                }
                "ended: every publisher dropped".to_string()
            }));
            watch.ended(match run {
                Ok(cause) => cause,
                Err(p) => format!("panicked: {}", crate::ops::supervise::panic_message(&*p)),
            });
        })
        .map_err(|e| BrokerError::Link(e.to_string()))?;
    // The link subscribes to nothing, but the router may still notify it; drain and answer. If
    // this task ended, the router would stop serving the box's link (acks, commands): supervised
    // as `mqtt-link` ([`Broker::take_link_task`]).
    let link_task = tokio::spawn(async move {
        loop {
            match link_rx.next().await {
                Ok(Some(rumqttd::Notification::Unschedule)) => {
                    if link_rx.wake().await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });

    tracing::info!(%addr, "mqtt broker listening (MQTT 3.1.1 and 5)");
    Ok(Broker {
        addr,
        publisher,
        accept: accept.abort_handle(),
        accept_task: parking_lot::Mutex::new(Some(accept)),
        link_task: parking_lot::Mutex::new(Some(link_task)),
    })
}
