//! The console's fleet view: every store with a health verdict a support person can read at a
//! glance (online, degraded, behind, offline). The verdict is one pure function of what the store
//! last reported and HQ's clock ([`verdict`]); the HTTP side answers the fleet as JSON
//! (`GET /hq/v1/fleet`) and as a live Server-Sent Events stream (`GET /hq/v1/fleet/stream`) that
//! re-reads the storage, so a stream on any HQ node sees what stores reported to any other node.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{json, Value};

use super::error::{HqError, HqResult};
use super::server::HqState;
use super::storage::{HqRole, StoreView};
use crate::config::HqServerConfig;

/// Health of one store, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Offline,
    Behind,
    Degraded,
    Online,
}

/// The thresholds of the verdict (`[hq_server]` config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    /// Not seen for longer than this: offline.
    pub offline_after_ms: i64,
    /// Feed lag (events not yet applied) above this: behind.
    pub behind_events: i64,
    /// Age of the oldest HQ event not yet applied above this: behind.
    pub behind_seconds: f64,
    /// Events waiting in the store's outbox above this: degraded (backlog).
    pub backlog_events: i64,
}

impl Rules {
    pub fn from_config(c: &HqServerConfig) -> Rules {
        Rules {
            offline_after_ms: c.offline_after_seconds.saturating_mul(1000) as i64,
            behind_events: c.behind_events as i64,
            behind_seconds: c.behind_seconds as f64,
            backlog_events: c.backlog_events as i64,
        }
    }
}

/// What the verdict is computed from: the store's last report as HQ keeps it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub last_seen_ms: Option<i64>,
    pub lag_events: Option<i64>,
    pub lag_seconds: Option<f64>,
    /// Outbox depth (business + telemetry) in the last report, and in the report before it.
    pub backlog: Option<i64>,
    pub backlog_prev: Option<i64>,
    pub devices_offline: Option<i64>,
    /// Open alerts of severity warning or critical.
    pub alerts_warning: Option<i64>,
    /// HQ events the store quarantined (refused) in the recent window.
    pub quarantined_recent: i64,
}

/// A verdict and the reasons for it, in words for the people reading the fleet page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub health: Health,
    pub reasons: Vec<String>,
}

/// The health rules, in order: **offline** when never seen or not seen for longer than
/// `offline_after`; else **behind** when the feed lag is above `behind_events` events or
/// `behind_seconds`; else **degraded** when devices are offline, alerts of severity warning or
/// above are open, the outbox backlog is above `backlog_events` or grew since the previous
/// report while above a tenth of it, or HQ data was quarantined recently; else **online**.
pub fn verdict(f: &Facts, rules: &Rules, now_ms: i64) -> Verdict {
    let Some(seen) = f.last_seen_ms else {
        return Verdict {
            health: Health::Offline,
            reasons: vec!["never connected".into()],
        };
    };
    let silent_ms = now_ms - seen;
    if silent_ms > rules.offline_after_ms {
        return Verdict {
            health: Health::Offline,
            reasons: vec![format!("not seen for {}", human_secs(silent_ms / 1000))],
        };
    }
    let mut behind = Vec::new();
    if let Some(n) = f.lag_events.filter(|n| *n > rules.behind_events) {
        behind.push(format!("{n} HQ events not applied yet"));
    }
    if let Some(s) = f.lag_seconds.filter(|s| *s > rules.behind_seconds) {
        behind.push(format!(
            "HQ data {} old not applied yet",
            human_secs(s as i64)
        ));
    }
    if !behind.is_empty() {
        return Verdict {
            health: Health::Behind,
            reasons: behind,
        };
    }
    let mut degraded = Vec::new();
    if let Some(n) = f.devices_offline.filter(|n| *n > 0) {
        degraded.push(plural(n, "device offline", "devices offline"));
    }
    if let Some(n) = f.alerts_warning.filter(|n| *n > 0) {
        degraded.push(plural(n, "open alert", "open alerts"));
    }
    if let Some(b) = f.backlog {
        let growing = f.backlog_prev.is_some_and(|p| b > p) && b * 10 > rules.backlog_events;
        if b > rules.backlog_events {
            degraded.push(format!("{b} events waiting to be sent to HQ"));
        } else if growing {
            degraded.push(format!("outbox backlog growing ({b} events)"));
        }
    }
    if f.quarantined_recent > 0 {
        degraded.push(format!(
            "{} quarantined (refused HQ data)",
            plural(f.quarantined_recent, "event", "events")
        ));
    }
    if !degraded.is_empty() {
        return Verdict {
            health: Health::Degraded,
            reasons: degraded,
        };
    }
    Verdict {
        health: Health::Online,
        reasons: Vec::new(),
    }
}

fn plural(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn human_secs(s: i64) -> String {
    match s {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

/// What the storage adds to [`StoreView`] for the fleet page.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetExtra {
    /// The store (already in [`StoreView`]).
    #[serde(skip)]
    pub id: String,
    #[serde(skip)]
    pub last_seen_ms: Option<i64>,
    pub devices_total: Option<i64>,
    pub devices_offline: Option<i64>,
    pub open_alerts: Option<i64>,
    pub open_alerts_warning: Option<i64>,
    pub timezone: Option<String>,
    #[serde(skip)]
    pub outbox_prev: Option<i64>,
    /// `checkout.completed` events received in the last hour.
    pub checkouts_last_hour: i64,
    /// `sync.quarantined` events received in the last 24 hours.
    pub quarantined_recent: i64,
    /// The payload of the last `release.status` the store sent, and when HQ received it.
    pub release: Option<Value>,
    pub release_at: Option<String>,
}

/// How far back "recent" quarantines count for the verdict.
pub const QUARANTINE_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// One row of the fleet page.
#[derive(Debug, Clone, Serialize)]
pub struct FleetRow {
    #[serde(flatten)]
    pub store: StoreView,
    #[serde(flatten)]
    pub extra: FleetExtra,
    pub health: Health,
    pub reasons: Vec<String>,
}

/// The fleet with verdicts, worst first then by id.
pub fn rows(
    stores: Vec<StoreView>,
    extras: Vec<FleetExtra>,
    rules: &Rules,
    now_ms: i64,
) -> Vec<FleetRow> {
    let mut extras: HashMap<String, FleetExtra> =
        extras.into_iter().map(|e| (e.id.clone(), e)).collect();
    let mut out: Vec<FleetRow> = stores
        .into_iter()
        .map(|s| {
            let extra = extras.remove(&s.id).unwrap_or_else(|| FleetExtra {
                id: s.id.clone(),
                ..FleetExtra::default()
            });
            let backlog = match (s.outbox_business, s.outbox_telemetry) {
                (None, None) => None,
                (b, t) => Some(b.unwrap_or(0) + t.unwrap_or(0)),
            };
            let facts = Facts {
                last_seen_ms: extra.last_seen_ms,
                lag_events: s.lag_events,
                lag_seconds: s.lag_seconds,
                backlog,
                backlog_prev: extra.outbox_prev,
                devices_offline: extra.devices_offline,
                alerts_warning: extra.open_alerts_warning,
                quarantined_recent: extra.quarantined_recent,
            };
            let v = verdict(&facts, rules, now_ms);
            FleetRow {
                store: s,
                extra,
                health: v.health,
                reasons: v.reasons,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        a.health
            .cmp(&b.health)
            .then_with(|| a.store.id.cmp(&b.store.id))
    });
    out
}

/// Counts of each verdict, for the page's summary line.
pub fn summary(rows: &[FleetRow]) -> Value {
    let n = |h: Health| rows.iter().filter(|r| r.health == h).count();
    json!({
        "total": rows.len(),
        "online": n(Health::Online),
        "degraded": n(Health::Degraded),
        "behind": n(Health::Behind),
        "offline": n(Health::Offline),
    })
}

/// The fleet JSON both the endpoint and the stream send.
pub async fn fleet_json(state: &HqState) -> HqResult<Value> {
    let now = state.now_ms();
    let stores = state.storage.list_stores().await?;
    let extras = state
        .storage
        .fleet_extras(now - 3600 * 1000, now - QUARANTINE_WINDOW_MS)
        .await?;
    let rows = rows(stores, extras, &state.fleet.rules, now);
    Ok(json!({
        "at": crate::db::ts_from_ms(now).to_string(),
        "summary": summary(&rows),
        "offline_after_seconds": state.fleet.rules.offline_after_ms / 1000,
        "stores": rows,
    }))
}

const READERS: &[HqRole] = &[HqRole::Operator, HqRole::Support];

/// `GET /hq/v1/fleet` filters (all optional): the group, the verdict, and text found in the
/// store id, group or version.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetQuery {
    pub group: Option<String>,
    pub health: Option<String>,
    pub q: Option<String>,
}

/// Keeps the rows of `fleet` (the JSON of [`fleet_json`]) that match `q`; the summary still
/// counts the whole fleet.
pub fn filter(fleet: &mut Value, q: &FleetQuery) -> HqResult<()> {
    let health = match q.health.as_deref().filter(|h| !h.is_empty()) {
        None => None,
        Some(h @ ("online" | "degraded" | "behind" | "offline")) => Some(h.to_string()),
        Some(other) => {
            return Err(HqError::invalid(
                "bad_health",
                format!("health {other:?} is not one of online, degraded, behind, offline"),
            ))
        }
    };
    let text = q.q.as_deref().unwrap_or("").trim().to_lowercase();
    let group = q.group.as_deref().filter(|g| !g.is_empty());
    if let Some(rows) = fleet.get_mut("stores").and_then(Value::as_array_mut) {
        let field = |r: &Value, k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        rows.retain(|r| {
            group.is_none_or(|g| field(r, "group") == g)
                && health.as_deref().is_none_or(|h| field(r, "health") == h)
                && (text.is_empty()
                    || ["id", "group", "version"]
                        .iter()
                        .any(|k| field(r, k).to_lowercase().contains(&text)))
        });
    }
    Ok(())
}

/// `GET /hq/v1/fleet?group=&health=&q=`: every store (or those matching) with its verdict.
pub async fn fleet(
    State(state): State<HqState>,
    headers: HeaderMap,
    q: Result<axum::extract::Query<FleetQuery>, axum::extract::rejection::QueryRejection>,
) -> HqResult<Response> {
    let c = super::console::caller(&state, &Method::GET, &headers).await?;
    super::console::need(&c, READERS, "the fleet")?;
    let axum::extract::Query(q) = q.map_err(|e| HqError::invalid("bad_query", e.body_text()))?;
    let mut v = fleet_json(&state).await?;
    filter(&mut v, &q)?;
    Ok(axum::Json(v).into_response())
}

/// Per-node state of the fleet view: its rules, the bound on live streams, and the one reader
/// that re-reads the fleet for all of this node's streams.
pub struct FleetState {
    pub rules: Rules,
    max_streams: usize,
    max_per_user: usize,
    open: Mutex<HashMap<String, usize>>,
    /// The latest fleet JSON (text), published by the reader; whether the reader runs.
    latest: tokio::sync::watch::Sender<Option<Arc<str>>>,
    reader: Mutex<bool>,
    /// Set when the node shuts down: streams end so that the graceful stop does not wait for them.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Starts the reader as a watched task (its panic stops the node).
    tasks: super::tasks::Tasks,
}

impl FleetState {
    pub fn new(config: &HqServerConfig, tasks: super::tasks::Tasks) -> Arc<FleetState> {
        Arc::new(FleetState {
            rules: Rules::from_config(config),
            max_streams: config.fleet_streams,
            max_per_user: config.fleet_streams_per_user,
            open: Mutex::new(HashMap::new()),
            latest: tokio::sync::watch::channel(None).0,
            reader: Mutex::new(false),
            stopping: tokio::sync::watch::channel(false).0,
            tasks,
        })
    }

    /// Ends every live stream of this node (at shutdown).
    pub fn stop_streams(&self) {
        self.stopping.send_replace(true);
    }

    /// Subscribes to the fleet as this node's reader publishes it, starting the reader if it is
    /// not running. The reader re-reads the storage every [`STREAM_REFRESH`] (and at once when
    /// events are authored on any node) and publishes only a fleet that changed; it stops when no
    /// stream listens any more. One reader per node, whatever the number of streams.
    fn subscribe(&self, state: &HqState) -> tokio::sync::watch::Receiver<Option<Arc<str>>> {
        let mut running = self.reader.lock();
        let rx = self.latest.subscribe();
        if !*running {
            *running = true;
            self.tasks
                .spawn_may_finish("fleet-reader", read_fleet(state.clone()))
                .detach();
        }
        rx
    }

    /// Takes a stream slot for `user`, or says why not.
    fn open_stream(self: &Arc<Self>, user: &str) -> HqResult<StreamSlot> {
        let mut open = self.open.lock();
        let total: usize = open.values().sum();
        if total >= self.max_streams {
            return Err(HqError::TooManyAttempts(format!(
                "this HQ node already serves {total} live fleet streams (limit {}); try again later",
                self.max_streams
            )));
        }
        let mine = open.entry(user.to_string()).or_insert(0);
        if *mine >= self.max_per_user {
            return Err(HqError::TooManyAttempts(format!(
                "{user} already has {mine} live fleet streams open on this node (limit {}); close a tab",
                self.max_per_user
            )));
        }
        *mine += 1;
        Ok(StreamSlot {
            fleet: self.clone(),
            user: user.to_string(),
        })
    }

    /// Live streams now open on this node.
    pub fn streams(&self) -> usize {
        self.open.lock().values().sum()
    }
}

/// A stream's slot, given back when the stream ends.
struct StreamSlot {
    fleet: Arc<FleetState>,
    user: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.fleet.open.lock();
        if let Some(n) = open.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

/// How often a stream re-reads the fleet (stores report to any node; verdicts age with time).
pub const STREAM_REFRESH: Duration = Duration::from_secs(2);
/// How long one stream lives before the browser reconnects (and so signs in again, in effect).
pub const STREAM_LIFETIME: Duration = Duration::from_secs(600);
/// Comment lines keep idle connections (and proxies) open.
pub const STREAM_HEARTBEAT: Duration = Duration::from_secs(15);

/// This node's fleet reader (see [`FleetState::subscribe`]).
async fn read_fleet(state: HqState) {
    let fleet = state.fleet.clone();
    let mut changes = state.storage.changes();
    let mut last: Option<String> = None;
    loop {
        {
            let mut running = fleet.reader.lock();
            if fleet.latest.receiver_count() == 0 {
                *running = false;
                fleet.latest.send_replace(None);
                return;
            }
        }
        match fleet_json(&state).await {
            Ok(mut v) => {
                // "at" changes every round; only a change of the rest is news.
                let at = v.get_mut("at").map(Value::take);
                let text = v.to_string();
                if last.as_deref() != Some(text.as_str()) {
                    last = Some(text);
                    if let (Some(at), Some(o)) = (at, v.as_object_mut()) {
                        o.insert("at".into(), at);
                    }
                    fleet.latest.send_replace(Some(Arc::from(v.to_string())));
                }
            }
            Err(e) => tracing::warn!(error = %e, "fleet stream: re-read failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(STREAM_REFRESH) => {}
            _ = changes.changed() => {}
        }
    }
}

struct Streaming {
    state: HqState,
    headers: HeaderMap,
    fleet: tokio::sync::watch::Receiver<Option<Arc<str>>>,
    stopping: tokio::sync::watch::Receiver<bool>,
    deadline: tokio::time::Instant,
    done: bool,
    _slot: StreamSlot,
}

/// `GET /hq/v1/fleet/stream`: Server-Sent Events. A `fleet` event (the same JSON as
/// `GET /hq/v1/fleet`) first and whenever it changes (this node's reader re-reads it every
/// [`STREAM_REFRESH`]); an `ended` event when the session ends (sign-out, expiry; checked every
/// [`STREAM_REFRESH`]) and the stream closes; the stream also closes after [`STREAM_LIFETIME`].
/// At most `fleet_streams` streams per node and `fleet_streams_per_user` per user (429 beyond).
pub async fn stream(
    State(state): State<HqState>,
    headers: HeaderMap,
) -> HqResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let c = super::console::caller(&state, &Method::GET, &headers).await?;
    super::console::need(&c, READERS, "the fleet")?;
    let slot = state.fleet.open_stream(&c.name)?;
    let mut fleet = state.fleet.subscribe(&state);
    // What the reader last published is news to this stream (when there is nothing yet, the
    // first publication is).
    fleet.mark_changed();
    let s = Streaming {
        stopping: state.fleet.stopping.subscribe(),
        deadline: tokio::time::Instant::now() + STREAM_LIFETIME,
        state,
        headers,
        fleet,
        done: false,
        _slot: slot,
    };
    let events = stream::unfold(s, |mut s| async move {
        loop {
            if s.done || *s.stopping.borrow() {
                return None;
            }
            let changed = tokio::select! {
                r = s.fleet.changed() => r.is_ok(),
                _ = tokio::time::sleep(STREAM_REFRESH) => false,
                _ = s.stopping.changed() => return None,
            };
            if tokio::time::Instant::now() >= s.deadline {
                return None;
            }
            // The session is checked on every round: a signed-out or expired session ends it.
            if super::console::caller(&s.state, &Method::GET, &s.headers)
                .await
                .is_err()
            {
                s.done = true;
                let ev = Event::default()
                    .event("ended")
                    .data(json!({"reason": "signed out or session expired"}).to_string());
                return Some((Ok(ev), s));
            }
            if !changed {
                continue;
            }
            let latest = s.fleet.borrow_and_update().clone();
            if let Some(text) = latest {
                let ev = Event::default().event("fleet").data(&*text);
                return Some((Ok(ev), s));
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(STREAM_HEARTBEAT)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    const RULES: Rules = Rules {
        offline_after_ms: 90_000,
        behind_events: 1000,
        behind_seconds: 600.0,
        backlog_events: 1000,
    };

    fn seen(clock: &ManualClock) -> Facts {
        Facts {
            last_seen_ms: Some(clock.now().as_millisecond()),
            lag_events: Some(0),
            lag_seconds: Some(0.0),
            backlog: Some(3),
            backlog_prev: Some(5),
            devices_offline: Some(0),
            alerts_warning: Some(0),
            quarantined_recent: 0,
        }
    }

    #[test]
    fn never_seen_is_offline() {
        let v = verdict(&Facts::default(), &RULES, 0);
        assert_eq!(v.health, Health::Offline);
        assert_eq!(v.reasons, vec!["never connected"]);
    }

    #[test]
    fn online_until_the_offline_threshold_passes_on_the_clock() {
        let clock = ManualClock::new("2026-11-30T10:00:00Z".parse().unwrap());
        let f = seen(&clock);
        let now = |c: &ManualClock| c.now().as_millisecond();
        assert_eq!(verdict(&f, &RULES, now(&clock)).health, Health::Online);
        clock.advance(jiff::SignedDuration::from_secs(90));
        assert_eq!(
            verdict(&f, &RULES, now(&clock)).health,
            Health::Online,
            "exactly at the threshold is still online"
        );
        clock.advance(jiff::SignedDuration::from_secs(1));
        let v = verdict(&f, &RULES, now(&clock));
        assert_eq!(v.health, Health::Offline);
        assert_eq!(v.reasons, vec!["not seen for 91 s"]);
        clock.advance(jiff::SignedDuration::from_secs(3 * 86_400));
        assert_eq!(
            verdict(&f, &RULES, now(&clock)).reasons,
            vec!["not seen for 3 days"]
        );
    }

    #[test]
    fn behind_on_events_or_seconds_and_before_degraded() {
        let clock = ManualClock::new("2026-11-30T10:00:00Z".parse().unwrap());
        let now = clock.now().as_millisecond();
        let mut f = seen(&clock);
        f.lag_events = Some(1001);
        f.devices_offline = Some(2);
        let v = verdict(&f, &RULES, now);
        assert_eq!(v.health, Health::Behind);
        assert_eq!(v.reasons, vec!["1001 HQ events not applied yet"]);
        f.lag_events = Some(1000);
        f.lag_seconds = Some(601.0);
        let v = verdict(&f, &RULES, now);
        assert_eq!(v.health, Health::Behind);
        assert_eq!(v.reasons, vec!["HQ data 10 min old not applied yet"]);
        // Offline wins over behind.
        clock.advance(jiff::SignedDuration::from_secs(100));
        assert_eq!(
            verdict(&f, &RULES, clock.now().as_millisecond()).health,
            Health::Offline
        );
    }

    #[test]
    fn degraded_names_every_reason() {
        let clock = ManualClock::new("2026-11-30T10:00:00Z".parse().unwrap());
        let now = clock.now().as_millisecond();
        let mut f = seen(&clock);
        f.devices_offline = Some(1);
        f.alerts_warning = Some(2);
        f.quarantined_recent = 1;
        let v = verdict(&f, &RULES, now);
        assert_eq!(v.health, Health::Degraded);
        assert_eq!(
            v.reasons,
            vec![
                "1 device offline",
                "2 open alerts",
                "1 event quarantined (refused HQ data)"
            ]
        );
    }

    #[test]
    fn backlog_over_the_limit_or_growing_is_degraded_small_growth_is_not() {
        let clock = ManualClock::new("2026-11-30T10:00:00Z".parse().unwrap());
        let now = clock.now().as_millisecond();
        let mut f = seen(&clock);
        f.backlog = Some(50);
        f.backlog_prev = Some(10);
        assert_eq!(
            verdict(&f, &RULES, now).health,
            Health::Online,
            "a few events more than last time is normal traffic"
        );
        f.backlog = Some(400);
        f.backlog_prev = Some(300);
        let v = verdict(&f, &RULES, now);
        assert_eq!(v.health, Health::Degraded);
        assert_eq!(v.reasons, vec!["outbox backlog growing (400 events)"]);
        f.backlog_prev = Some(500);
        assert_eq!(verdict(&f, &RULES, now).health, Health::Online, "draining");
        f.backlog = Some(1500);
        f.backlog_prev = Some(2000);
        assert_eq!(
            verdict(&f, &RULES, now).reasons,
            vec!["1500 events waiting to be sent to HQ"]
        );
    }

    #[test]
    fn streams_are_bounded_per_node_and_per_user_and_slots_come_back() {
        let config = HqServerConfig {
            fleet_streams: 3,
            fleet_streams_per_user: 2,
            ..HqServerConfig::default()
        };
        let f = FleetState::new(&config, crate::hq::tasks::Tasks::new().0);
        let a1 = f.open_stream("alice").unwrap();
        let _a2 = f.open_stream("alice").unwrap();
        let e = f.open_stream("alice").err().unwrap().to_string();
        assert!(
            e.contains("alice already has 2") && e.contains("limit 2"),
            "{e}"
        );
        let _b1 = f.open_stream("bob").unwrap();
        let e = f.open_stream("bob").err().unwrap().to_string();
        assert!(
            e.contains("already serves 3") && e.contains("limit 3"),
            "{e}"
        );
        assert_eq!(f.streams(), 3);
        drop(a1);
        assert_eq!(f.streams(), 2);
        let _b2 = f.open_stream("bob").unwrap();
    }

    fn view(id: &str, outbox: Option<i64>) -> StoreView {
        StoreView {
            id: id.into(),
            group: String::new(),
            last_seen: None,
            version: None,
            cursor: None,
            lag_events: None,
            lag_seconds: None,
            outbox_business: outbox,
            outbox_telemetry: None,
            outbox_dropped: None,
            rollup: None,
            rollup_at: None,
            held: 0,
        }
    }

    #[test]
    fn rows_sort_worst_first_and_summary_counts() {
        let now = 1_000_000_000;
        let extra = |id: &str, seen: Option<i64>, off: i64| FleetExtra {
            id: id.into(),
            last_seen_ms: seen,
            devices_offline: Some(off),
            ..FleetExtra::default()
        };
        let r = rows(
            vec![view("a", Some(0)), view("b", Some(0)), view("c", None)],
            vec![
                extra("a", Some(now), 0),
                extra("b", Some(now), 3),
                extra("c", None, 0),
            ],
            &RULES,
            now,
        );
        let ids: Vec<_> = r.iter().map(|r| (r.store.id.as_str(), r.health)).collect();
        assert_eq!(
            ids,
            vec![
                ("c", Health::Offline),
                ("b", Health::Degraded),
                ("a", Health::Online)
            ]
        );
        assert_eq!(
            summary(&r),
            json!({"total": 3, "online": 1, "degraded": 1, "behind": 0, "offline": 1})
        );
        let mut all = json!({"summary": summary(&r), "stores": r});
        let q = |group: &str, health: &str, q: &str| FleetQuery {
            group: Some(group.into()),
            health: Some(health.into()),
            q: Some(q.into()),
        };
        let ids = |v: &Value| -> Vec<String> {
            v["stores"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_string())
                .collect()
        };
        let mut one = all.clone();
        filter(&mut one, &q("", "degraded", "")).unwrap();
        assert_eq!(ids(&one), ["b"]);
        assert_eq!(
            one["summary"]["total"], 3,
            "the summary counts the whole fleet"
        );
        let mut none = all.clone();
        filter(&mut none, &q("north", "", "")).unwrap();
        assert!(ids(&none).is_empty());
        filter(&mut all, &q("", "", "A")).unwrap();
        assert_eq!(ids(&all), ["a"], "text search ignores case");
        let e = filter(&mut json!({}), &q("", "sleepy", "")).unwrap_err();
        assert!(e.to_string().contains("\"sleepy\" is not one of"), "{e}");
        let j = serde_json::to_value(&r[1]).unwrap();
        assert_eq!(j["id"], "b");
        assert_eq!(j["health"], "degraded");
        assert_eq!(j["devices_offline"], 3);
    }
}
