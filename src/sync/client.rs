//! The store's side of the HQ link: three loops started by `storebox serve` when `[hq] url` is set.
//!
//! - **feed**: long-polls `GET /sync/v1/feed` and applies each batch with its cursor in one
//!   transaction (`sync::apply`); bootstraps from `GET /sync/v1/snapshot` with no cursor or on 410.
//! - **push**: sends the outbox to `POST /sync/v1/events` in seq order, business events before
//!   telemetry, and marks what HQ acknowledged as sent; drops (and counts) telemetry past its
//!   time-to-live or beyond the size cap.
//! - **rollup**: once per interval queues a `telemetry.rollup` of device telemetry and box figures.
//!
//! Every connection goes to the HQ URL; redirects are followed only to hosts on the allow-list.
//! Failures back off exponentially with jitter, capped at `hq.retry_max_secs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rusqlite::Connection;
use serde_json::{json, Value};

use crate::broker::Publisher;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::db::{ts_from_ms, Db, DbResult};
use crate::ops::metrics::Metrics;
use crate::outbox::{
    dropped_total, enforce_telemetry_limits, mark_sent, next_batch_after, After, Class,
    TELEMETRY_OUTBOX_MAX_ROWS,
};
use crate::proto::{self, FeedPage, PushAck, PushBatch, Snapshot, StoreReport};
use crate::sync::apply;
use crate::sync::state::SyncState;

#[derive(Clone)]
pub struct Ctx {
    pub db: Db,
    pub config: Arc<Config>,
    pub clock: SharedClock,
    pub state: Arc<SyncState>,
    pub metrics: Arc<Metrics>,
    pub publisher: Publisher,
    pub started: Instant,
}

/// The outbound allow-list: the HQ URL's host and `hq.allow_hosts`.
pub fn allowed_hosts(config: &Config) -> Vec<String> {
    let mut hosts: Vec<String> = config.hq.allow_hosts.clone();
    if let Ok(u) = reqwest::Url::parse(&config.hq.url) {
        if let Some(h) = u.host_str() {
            hosts.push(h.to_string());
        }
    }
    hosts
}

/// The HTTP client: rustls, gzip, timeouts, redirects only to allowed hosts.
pub fn http_client(config: &Config) -> reqwest::Result<reqwest::Client> {
    let allowed = allowed_hosts(config);
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        let host = attempt.url().host_str().unwrap_or("").to_string();
        if !allowed.iter().any(|h| h.eq_ignore_ascii_case(&host)) {
            let msg = format!(
                "redirect to {} refused: host {host:?} is not on the outbound allow-list (hq.url host and hq.allow_hosts)",
                attempt.url()
            );
            attempt.error(msg)
        } else if attempt.previous().len() >= 5 {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .redirect(policy)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(config.hq.poll_wait_secs + 30))
        .user_agent(format!("storebox/{}", crate::VERSION))
        .gzip(true)
        .build()
}

/// Handles of the running loops; [`Handles::stop`] ends them (at shutdown).
pub struct Handles(pub Vec<tokio::task::JoinHandle<()>>);

impl Handles {
    pub fn stop(self) {
        for h in self.0 {
            h.abort();
        }
    }
}

/// Starts the sync loops when an HQ URL is configured.
pub fn spawn(ctx: Ctx) -> Option<Handles> {
    if ctx.config.hq.url.is_empty() {
        return None;
    }
    let http = match http_client(&ctx.config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "sync: cannot build the HTTP client; sync disabled");
            return None;
        }
    };
    let base = ctx.config.hq.url.trim_end_matches('/').to_string();
    let link = Arc::new(Link { ctx, http, base });
    Some(Handles(vec![
        tokio::spawn(feed_loop(link.clone())),
        tokio::spawn(push_loop(link.clone())),
        tokio::spawn(rollup_loop(link)),
    ]))
}

struct Link {
    ctx: Ctx,
    http: reqwest::Client,
    base: String,
}

#[derive(Debug)]
enum SyncError {
    /// Transport failure or unexpected answer.
    Http(String),
    /// The feed cursor is older than HQ keeps.
    Gone,
    Db(crate::db::DbError),
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncError::Http(m) => f.write_str(m),
            SyncError::Gone => f.write_str("HQ no longer keeps events after our cursor (410)"),
            SyncError::Db(e) => write!(f, "database: {e}"),
        }
    }
}

impl From<crate::db::DbError> for SyncError {
    fn from(e: crate::db::DbError) -> Self {
        SyncError::Db(e)
    }
}

/// Most of an HQ error answer that is read (only its start is shown).
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Reads a response body, decoded (gzip), refusing it once it passes `limit` bytes: a small
/// compressed answer can expand to gigabytes, and a whole snapshot is held in memory to parse.
async fn read_limited(mut r: reqwest::Response, limit: usize) -> Result<Vec<u8>, SyncError> {
    let too_large = || {
        SyncError::Http(format!(
            "HQ answer larger than hq.max_response_mb ({} MiB) once decompressed; attempt abandoned",
            limit / (1024 * 1024)
        ))
    };
    if r.content_length().is_some_and(|n| n as usize > limit) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = r
        .chunk()
        .await
        .map_err(|e| SyncError::Http(format!("reading HQ's answer: {}", describe(&e))))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn describe(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

impl Link {
    fn now_ms(&self) -> i64 {
        self.ctx.clock.now().as_millisecond()
    }

    fn ok(&self) {
        let now = self.ctx.clock.now().to_string();
        self.ctx.state.update(|s| {
            s.connected = true;
            s.last_success = Some(now);
        });
        self.ctx.metrics.sync_connected.set(1);
    }

    fn failed(&self, what: &str, e: &SyncError) {
        let msg = format!("{what}: {e}");
        tracing::warn!(error = %msg, "sync with HQ failed; retrying with back-off");
        let now = self.ctx.clock.now().to_string();
        self.ctx.state.update(|s| {
            s.connected = false;
            s.last_error = Some(msg);
            s.last_error_at = Some(now);
        });
        self.ctx.metrics.sync_connected.set(0);
        self.ctx.metrics.sync_errors.inc();
    }

    async fn backoff(&self, attempt: &mut u32) {
        let max = self.ctx.config.hq.retry_max_secs * 1000;
        let j: f64 = rand::rng().random();
        let ms = backoff_ms(*attempt, 250, max, j);
        *attempt = attempt.saturating_add(1);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.ctx.config.hq.token.expose())
            .header("x-storebox-protocol", proto::VERSION)
            .header("x-storebox-store", &self.ctx.config.store.id)
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, SyncError> {
        let r = req
            .send()
            .await
            .map_err(|e| SyncError::Http(describe(&e)))?;
        let status = r.status();
        if status == reqwest::StatusCode::GONE {
            return Err(SyncError::Gone);
        }
        if !status.is_success() {
            let body = read_limited(r, ERROR_BODY_LIMIT).await.unwrap_or_default();
            let body: String = String::from_utf8_lossy(&body).chars().take(300).collect();
            let hint = match status.as_u16() {
                401 | 403 => " (HQ refused this store's token: check hq.token)",
                _ => "",
            };
            return Err(SyncError::Http(format!(
                "HQ answered {status}{hint}: {body}"
            )));
        }
        let limit = self.ctx.config.hq.max_response_mb * 1024 * 1024;
        let body = read_limited(r, limit).await?;
        serde_json::from_slice::<T>(&body)
            .map_err(|e| SyncError::Http(format!("bad answer from HQ: {e}")))
    }

    async fn bootstrap(&self) -> Result<(), SyncError> {
        let snap: Snapshot = self.send(self.get("/sync/v1/snapshot")).await?;
        let tz = self.ctx.config.timezone();
        let now = self.now_ms();
        let n = snap.events.len();
        let cursor = snap.cursor;
        let out = self
            .ctx
            .db
            .write(move |c| apply::apply_snapshot(c, &snap.events, snap.cursor, tz, now))
            .await?;
        tracing::info!(
            events = n,
            cursor,
            quarantined = out.quarantined,
            "sync: catalog rebuilt from HQ snapshot"
        );
        self.after_apply(&out, cursor, Some(0), Some(0.0));
        Ok(())
    }

    fn after_apply(&self, out: &apply::Applied, cursor: i64, lag: Option<i64>, lag_s: Option<f64>) {
        for n in &out.notices {
            self.ctx.publisher.publish("store/notice", n.to_string());
        }
        if !out.skus.is_empty() {
            self.announce_prices(out.skus.clone());
        }
        let m = &self.ctx.metrics;
        m.sync_events_applied.inc_by(out.applied);
        m.sync_quarantined.inc_by(out.quarantined);
        m.sync_cursor.set(cursor);
        if let Some(l) = lag {
            m.sync_lag_events.set(l);
        }
        let q = out.quarantined as i64;
        self.ctx.state.update(|s| {
            s.cursor = Some(cursor);
            s.lag_events = lag;
            s.lag_seconds = lag_s;
            s.quarantined += q;
        });
    }

    /// One feed request and its apply; `Ok(true)` when the page was empty.
    async fn feed_once(&self) -> Result<bool, SyncError> {
        let cursor = self.ctx.db.read(apply::cursor).await?;
        let Some(after) = cursor else {
            return self.bootstrap().await.map(|_| false);
        };
        let cfg = &self.ctx.config.hq;
        let req = self.get(&format!(
            "/sync/v1/feed?after={after}&limit={}&wait={}",
            cfg.feed_batch_size, cfg.poll_wait_secs
        ));
        let page: FeedPage = match self.send(req).await {
            Err(SyncError::Gone) => {
                tracing::warn!(
                    cursor = after,
                    "sync: HQ answered 410 for our cursor; rebuilding from the snapshot"
                );
                return self.bootstrap().await.map(|_| false);
            }
            other => other?,
        };
        if page.next < after {
            return Err(SyncError::Http(format!(
                "HQ answered next={} below our cursor {after}",
                page.next
            )));
        }
        let full = page.events.len() as u32 >= cfg.feed_batch_size;
        let empty = page.events.is_empty();
        let oldest_pending = if full {
            page.events.last().and_then(|e| e.at.clone())
        } else {
            None
        };
        let tz = self.ctx.config.timezone();
        let now = self.now_ms();
        let next = page.next;
        let events = page.events;
        let out = self
            .ctx
            .db
            .write(move |c| apply::apply_batch(c, &events, next, tz, now))
            .await?;
        let lag = (page.head - next).max(0);
        let lag_s = oldest_pending
            .and_then(|a| a.parse::<jiff::Timestamp>().ok())
            .map(|t| ((now - t.as_millisecond()).max(0)) as f64 / 1000.0)
            .unwrap_or(0.0);
        self.after_apply(&out, next, Some(lag), Some(lag_s));
        Ok(empty)
    }

    /// Reads (and encodes) the next batch to push after the given seqs, off the async threads.
    /// `depth`: the outbox depth if the caller knows it (else it is counted).
    async fn prepare(
        &self,
        after: After,
        depth: Option<(i64, i64)>,
    ) -> Result<Option<Prepared>, SyncError> {
        let limit = self.ctx.config.hq.batch_size as i64;
        let st = self.ctx.state.snapshot();
        let tz = self.ctx.config.store.timezone.clone();
        let (batch, depth, dropped) = self
            .ctx
            .db
            .read(move |c| prepare_batch(c, limit, after, depth, &st, &tz))
            .await?;
        self.ctx.metrics.set_outbox_depth(depth.0, depth.1);
        self.ctx.state.update(|s| {
            s.outbox.business = depth.0;
            s.outbox.telemetry = depth.1;
            s.outbox_dropped = dropped;
        });
        Ok(batch)
    }

    async fn post(&self, body: Vec<u8>) -> Result<PushAck, SyncError> {
        let req = self
            .http
            .post(format!("{}/sync/v1/events", self.base))
            .bearer_auth(self.ctx.config.hq.token.expose())
            .header("x-storebox-protocol", proto::VERSION)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(body);
        self.send(req).await
    }

    /// Pushes the outbox in batches until it is empty or `PUSH_RUN` has passed; `Ok(false)` when
    /// there was nothing to send.
    ///
    /// Batches are sent one at a time, each only after HQ acknowledged the one before (so HQ
    /// receives them in order even across failures), but the next batch is read and encoded
    /// while the request for the current one is in flight, and a batch is marked as sent while the
    /// next one is in flight. Marking is bookkeeping only: an acknowledged batch whose mark is lost
    /// (crash) is sent again and HQ deduplicates it on `(store, seq)`.
    async fn push_run(&self, enforce_limits: bool) -> Result<bool, SyncError> {
        let now = self.now_ms();
        let ttl_ms = self.ctx.config.hq.telemetry_ttl_secs as i64 * 1000;
        let cap = self.ctx.config.storage.outbox_max_mb as i64 * 1024 * 1024;
        let dropped = if enforce_limits {
            self.ctx
                .db
                .write(move |c| {
                    enforce_telemetry_limits(c, now, ttl_ms, cap, TELEMETRY_OUTBOX_MAX_ROWS)
                })
                .await?
        } else {
            0
        };
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "sync: unsent telemetry dropped (time-to-live or size cap)"
            );
            self.ctx.metrics.sync_outbox_dropped.inc_by(dropped as u64);
        }
        let started = Instant::now();
        let mut after = After::default();
        let Some(mut cur) = self.prepare(after, None).await? else {
            return Ok(false);
        };
        // Counting the unsent events reads the whole outbox index (from disk: each commit
        // invalidates a reader's page cache), so within a run it is counted at most once per
        // DEPTH_EVERY and otherwise derived from the count minus what was sent since.
        let mut counted = (Instant::now(), cur.depth);
        let mut marking: Option<MarkFuture> = None;
        loop {
            after.passed(cur.class, cur.last);
            let more = started.elapsed() < PUSH_RUN;
            let depth = (counted.0.elapsed() < DEPTH_EVERY).then(|| {
                let d = counted.1;
                match cur.class {
                    Class::Business => ((d.0 - cur.n as i64).max(0), d.1),
                    Class::Telemetry => (d.0, (d.1 - cur.n as i64).max(0)),
                }
            });
            let body = std::mem::take(&mut cur.body);
            let (ack, next, marked) = tokio::join!(
                self.post(body),
                async {
                    if more {
                        self.prepare(after, depth).await
                    } else {
                        Ok(None)
                    }
                },
                async {
                    match marking.take() {
                        Some(m) => m.await,
                        None => Ok(()),
                    }
                },
            );
            marked?;
            let ack = ack?;
            if ack.acked < cur.first {
                return Err(SyncError::Http(format!(
                    "HQ acknowledged seq {} but the batch started at {}",
                    ack.acked, cur.first
                )));
            }
            let upto = ack.acked.min(cur.last);
            let (db, class, first) = (self.ctx.db.clone(), cur.class, cur.first);
            let sent_ms = self.now_ms();
            marking = Some(Box::pin(async move {
                db.write(move |c| mark_sent(c, class, first, upto, sent_ms))
                    .await
                    .map_err(SyncError::from)
            }));
            self.ctx.metrics.sync_events_pushed.inc_by(cur.n as u64);
            self.ok();
            // A partial acknowledgement (not the reference HQ's): the rest is read again, in order.
            if upto < cur.last {
                break;
            }
            match next? {
                Some(n) => {
                    if depth.is_none() {
                        counted = (Instant::now(), n.depth);
                    } else {
                        counted.1 = n.depth;
                    }
                    cur = n;
                }
                None => break,
            }
        }
        if let Some(m) = marking {
            m.await?;
        }
        Ok(true)
    }
}

/// How long one push run drains before the loop enforces the telemetry limits again.
const PUSH_RUN: Duration = Duration::from_secs(5);

/// How often a push run counts the outbox depth it reports (in between it is derived).
const DEPTH_EVERY: Duration = Duration::from_secs(1);

type MarkFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SyncError>> + Send>>;

/// A batch read from the outbox, encoded as the gzip'ed `POST /sync/v1/events` body.
pub struct Prepared {
    pub class: Class,
    pub first: i64,
    pub last: i64,
    pub n: usize,
    /// Outbox depth (business, telemetry) reported with the batch, before it is acknowledged.
    pub depth: (i64, i64),
    pub body: Vec<u8>,
}

/// Reads the next batch after `after` (business first, then telemetry) and encodes it with the
/// store's report; also answers the outbox depth (`depth`, or counted if None) and the telemetry
/// dropped so far.
pub fn prepare_batch(
    c: &Connection,
    limit: i64,
    after: After,
    depth: Option<(i64, i64)>,
    st: &crate::sync::state::SyncStatus,
    timezone: &str,
) -> DbResult<(Option<Prepared>, (i64, i64), i64)> {
    let events = next_batch_after(c, limit, after)?;
    let depth = match depth {
        Some(d) => d,
        None => crate::outbox::depth(c)?,
    };
    let dropped = dropped_total(c)?;
    let (Some(head), Some(tail)) = (events.first(), events.last()) else {
        return Ok((None, depth, dropped));
    };
    let class = if head.class == "telemetry" {
        Class::Telemetry
    } else {
        Class::Business
    };
    let (first, last, n) = (head.seq, tail.seq, events.len());
    let batch = PushBatch {
        report: StoreReport {
            version: crate::VERSION.to_string(),
            cursor: st.cursor,
            lag_events: st.lag_events,
            lag_seconds: st.lag_seconds,
            outbox_business: depth.0,
            outbox_telemetry: depth.1,
            outbox_dropped: dropped,
            ..fleet_report(c, timezone)?
        },
        events,
    };
    // Encoding can only fail on an I/O error of the in-memory writer, which does not happen.
    let body = gzip_json(&batch).unwrap_or_default();
    Ok((
        Some(Prepared {
            class,
            first,
            last,
            n,
            depth,
            body,
        }),
        depth,
        dropped,
    ))
}

/// What the report tells HQ's fleet view about the devices and alerts (small tables: counted on
/// every batch).
fn fleet_report(c: &Connection, timezone: &str) -> DbResult<StoreReport> {
    let (total, offline): (i64, i64) = c
        .prepare_cached("SELECT count(*), coalesce(sum(online = 0), 0) FROM devices")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let (open, warning): (i64, i64) = c
        .prepare_cached(
            "SELECT count(*), coalesce(sum(severity IN ('warning', 'critical')), 0) FROM alerts
             WHERE cleared_ms IS NULL",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(StoreReport {
        devices_total: Some(total),
        devices_offline: Some(offline),
        open_alerts: Some(open),
        open_alerts_warning: Some(warning),
        timezone: (!timezone.is_empty()).then(|| timezone.to_string()),
        ..StoreReport::default()
    })
}

/// The whole body is serialized first and compressed in one call: serializing straight into the
/// encoder hands it every JSON token as a separate write, and flate2 zeroes its output buffer's
/// spare capacity on each (the profile of the drain showed half its CPU time in that memset).
fn gzip_json(v: &impl serde::Serialize) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let json = serde_json::to_vec(v)?;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(json.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(&json)?;
    enc.finish()
}

async fn feed_loop(link: Arc<Link>) {
    let mut attempt = 0u32;
    loop {
        let started = Instant::now();
        match link.feed_once().await {
            Ok(empty) => {
                attempt = 0;
                link.ok();
                // An HQ that does not long-poll answers an empty page at once: do not spin.
                if empty && started.elapsed() < Duration::from_millis(500) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            Err(e) => {
                link.failed("feed", &e);
                link.backoff(&mut attempt).await;
            }
        }
    }
}

async fn push_loop(link: Arc<Link>) {
    let mut attempt = 0u32;
    let mut last_limits: Option<Instant> = None;
    loop {
        // Telemetry limits are enforced every few seconds, not on every batch of a drain.
        let enforce = last_limits.is_none_or(|t| t.elapsed() >= Duration::from_secs(5));
        if enforce {
            last_limits = Some(Instant::now());
        }
        match link.push_run(enforce).await {
            Ok(true) => {
                attempt = 0;
                link.ok();
            }
            Ok(false) => {
                attempt = 0;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                link.failed("push", &e);
                link.backoff(&mut attempt).await;
            }
        }
    }
}

async fn rollup_loop(link: Arc<Link>) {
    let every = Duration::from_secs(link.ctx.config.hq.rollup_interval_secs);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = link.now_ms();
        let window_ms = every.as_millis() as i64;
        let st = link.ctx.state.snapshot();
        let uptime = link.ctx.started.elapsed().as_secs();
        let r = link
            .ctx
            .db
            .write(move |c| {
                let payload = rollup(c, now, window_ms, &st, uptime)?;
                let id = format!("rollup:{}", now / window_ms.max(1));
                crate::outbox::enqueue(
                    c,
                    &id,
                    crate::proto::StoreEventType::TelemetryRollup,
                    crate::outbox::Class::Telemetry,
                    &payload.to_string(),
                    now,
                )
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "sync: telemetry rollup failed");
        }
    }
}

/// The `telemetry.rollup` payload for the window ending at `now_ms`.
pub fn rollup(
    conn: &Connection,
    now_ms: i64,
    window_ms: i64,
    sync: &crate::sync::state::SyncStatus,
    uptime_s: u64,
) -> DbResult<Value> {
    let since = now_ms - window_ms.max(60_000);
    let mut stmt = conn.prepare_cached(
        "SELECT device_id, metric, sum(count), min(min), max(max), sum(sum) FROM telemetry_minute
         WHERE minute >= ?1 GROUP BY device_id, metric ORDER BY device_id, metric LIMIT 1000",
    )?;
    let devices: Vec<Value> = stmt
        .query_map([since - since.rem_euclid(60_000)], |r| {
            let count: i64 = r.get(2)?;
            let sum: f64 = r.get(5)?;
            Ok(
                json!({"device": r.get::<_, String>(0)?, "metric": r.get::<_, String>(1)?,
                "count": count, "min": r.get::<_, f64>(3)?, "max": r.get::<_, f64>(4)?,
                "avg": if count > 0 { sum / count as f64 } else { 0.0 }}),
            )
        })?
        .collect::<Result<_, _>>()?;
    let checkouts: i64 = conn.query_row(
        "SELECT count(*) FROM checkouts WHERE created_ms >= ?1",
        [now_ms - 60_000],
        |r| r.get(0),
    )?;
    let (total, offline): (i64, i64) = conn.query_row(
        "SELECT count(*), coalesce(sum(online = 0), 0) FROM devices",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let alerts: i64 = conn.query_row(
        "SELECT count(*) FROM alerts WHERE cleared_ms IS NULL",
        [],
        |r| r.get(0),
    )?;
    let (ob, ot) = crate::outbox::depth(conn)?;
    Ok(json!({
        "at": ts_from_ms(now_ms).to_string(),
        "window_s": window_ms / 1000,
        "box": {
            "version": crate::VERSION,
            "uptime_s": uptime_s,
            "checkouts_per_minute": checkouts,
            "devices_total": total,
            "devices_offline": offline,
            "alerts_open": alerts,
            "sync_lag_events": sync.lag_events,
            "sync_lag_seconds": sync.lag_seconds,
            "outbox_business": ob,
            "outbox_telemetry": ot,
        },
        "devices": devices,
    }))
}

/// How many skus one `store/prices/changed` update message carries at most.
const ANNOUNCE_CHUNK: usize = 500;

impl Link {
    /// Announces on `store/prices/changed` the current effective price and promotions of the skus
    /// an applied batch touched: a price or promotion from HQ whose start is already past takes
    /// effect on arrival and crosses no boundary the price scheduler would announce, so shelf
    /// labels learn it here (docs/mqtt.md). Runs after the commit, off the feed loop.
    fn announce_prices(&self, mut skus: Vec<String>) {
        skus.sort();
        skus.dedup();
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            let now = ctx.clock.now().as_millisecond();
            let currency = ctx.config.store.currency.clone();
            for chunk in skus.chunks(ANNOUNCE_CHUNK) {
                let chunk = chunk.to_vec();
                match ctx
                    .db
                    .read(move |c| crate::catalog::scheduler::current(c, &chunk, now))
                    .await
                {
                    Ok(changes) => ctx.publisher.publish(
                        "store/prices/changed",
                        crate::catalog::scheduler::update_message(&changes, now, &currency),
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, "sync: prices after an update not announced")
                    }
                }
            }
        });
    }
}

/// Backoff for retries: exponential from `base_ms`, capped at `max_ms`, with full jitter (a random
/// delay between half and all of the exponential step), so that many stores coming back after an
/// HQ outage do not all retry at the same instant.
pub fn backoff_ms(attempt: u32, base_ms: u64, max_ms: u64, jitter: f64) -> u64 {
    let step = base_ms.saturating_mul(1u64 << attempt.min(20)).min(max_ms);
    let j = jitter.clamp(0.0, 1.0);
    (step as f64 * (0.5 + 0.5 * j)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff_ms(0, 500, 60_000, 1.0), 500);
        assert_eq!(backoff_ms(3, 500, 60_000, 1.0), 4000);
        assert_eq!(backoff_ms(30, 500, 60_000, 1.0), 60_000);
        assert_eq!(backoff_ms(30, 500, 60_000, 0.0), 30_000);
    }

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        crate::db::migrations::migrate(&mut c, crate::db::migrations::MIGRATIONS.len()).unwrap();
        c
    }

    fn gunzip(body: &[u8]) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// What the store enqueued is what HQ stores, byte for byte: key order, number spelling and
    /// escapes survive (no parse-and-print on either side); a text that is not JSON travels as a
    /// JSON string.
    #[test]
    fn payloads_reach_hq_byte_exact() {
        use crate::outbox::enqueue;
        let c = db();
        let odd = r#"{"z":1.50,"a":["\u00e9","é"],"n":{"b":null,"a":1e3}}"#;
        enqueue(
            &c,
            "b1",
            crate::proto::StoreEventType::CheckoutCompleted,
            Class::Business,
            odd,
            0,
        )
        .unwrap();
        enqueue(
            &c,
            "b2",
            crate::proto::StoreEventType::CheckoutCompleted,
            Class::Business,
            "not json",
            0,
        )
        .unwrap();
        let st = crate::sync::state::SyncStatus::default();
        let (batch, depth, _) = prepare_batch(&c, 10, After::default(), None, &st, "UTC").unwrap();
        let batch = batch.unwrap();
        assert_eq!((batch.first, batch.last, batch.n, depth), (1, 2, 2, (2, 0)));
        let body: PushBatch = serde_json::from_slice(&gunzip(&batch.body)).unwrap();
        // HQ stores each payload as this text (its own tests check that side).
        let stored: Vec<&str> = body.events.iter().map(|e| e.payload.get()).collect();
        assert_eq!(stored, vec![odd, "\"not json\""]);
    }

    /// While a batch is in flight the next one is read after it, business before telemetry.
    #[test]
    fn the_next_batch_is_read_after_the_one_in_flight() {
        use crate::outbox::enqueue;
        let c = db();
        for i in 0..5 {
            enqueue(
                &c,
                &format!("b{i}"),
                crate::proto::StoreEventType::CheckoutCompleted,
                Class::Business,
                "{}",
                0,
            )
            .unwrap();
            enqueue(
                &c,
                &format!("t{i}"),
                crate::proto::StoreEventType::TelemetryRollup,
                Class::Telemetry,
                "{}",
                0,
            )
            .unwrap();
        }
        let seqs = |after: After| -> Vec<(i64, String)> {
            next_batch_after(&c, 2, after)
                .unwrap()
                .into_iter()
                .map(|e| (e.seq, e.class))
                .collect()
        };
        let b = |s: i64| (s, "business".to_string());
        let t = |s: i64| (s, "telemetry".to_string());
        assert_eq!(seqs(After::default()), vec![b(1), b(3)]);
        let mut after = After::default();
        after.passed(Class::Business, 3);
        assert_eq!(seqs(after), vec![b(5), b(7)]);
        after.passed(Class::Business, 9);
        assert_eq!(seqs(after), vec![t(2), t(4)]);
        after.passed(Class::Telemetry, 4);
        assert_eq!(seqs(after), vec![t(6), t(8)]);
    }

    #[test]
    fn business_first_and_telemetry_limits_never_touch_business() {
        let mut c = db();
        use crate::outbox::{enqueue, Class};
        for i in 0..10 {
            enqueue(
                &c,
                &format!("t{i}"),
                crate::proto::StoreEventType::TelemetryRollup,
                Class::Telemetry,
                "{}",
                i,
            )
            .unwrap();
        }
        enqueue(
            &c,
            "b1",
            crate::proto::StoreEventType::CheckoutCompleted,
            Class::Business,
            "{}",
            0,
        )
        .unwrap();
        let b = crate::outbox::next_batch(&c, 100).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].id, "b1");
        // TTL: the 3 oldest telemetry rows are past it; cap: keep at most 5 rows.
        let dropped = enforce_telemetry_limits(&mut c, 10, 7, 1 << 20, 5).unwrap();
        assert_eq!(dropped, 5);
        assert_eq!(dropped_total(&c).unwrap(), 5);
        let (bus, tel) = crate::outbox::depth(&c).unwrap();
        assert_eq!((bus, tel), (1, 5));
    }
}
