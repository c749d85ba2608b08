//! A store's story: one timeline that merges, by time, what the store sent (checkouts rolled up
//! per hour, device alerts and status changes, telemetry rollups, tickets, release states,
//! quarantined HQ data), what HQ told it (authored events whose target included it, rollout
//! assignments) and sync milestones. This is what lets support relate what staff did with what
//! the box saw. The merge is a pure function ([`merge`]) over rows the storage reads
//! ([`Sources`]); `GET /hq/v1/stores/{id}/story` is bounded in window and items.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::{HqError, HqResult};
use super::server::HqState;
use super::storage::HqRole;
use crate::db::ts_from_ms;

/// Longest window one request may cover.
pub const MAX_WINDOW_MS: i64 = 31 * 24 * 3600 * 1000;
/// Window when `from` is not given: the day before `to`.
pub const DEFAULT_WINDOW_MS: i64 = 24 * 3600 * 1000;
/// Items per page at most (and by default).
pub const MAX_ITEMS: usize = 500;
pub const DEFAULT_ITEMS: usize = 200;
pub const HOUR_MS: i64 = 3600 * 1000;

/// The kinds of items, as `kinds=` names them.
pub const KINDS: &[&str] = &[
    "checkouts",
    "alert",
    "device",
    "telemetry",
    "ticket",
    "release",
    "quarantine",
    "authored",
    "rollout",
    "sync",
];

/// One event a store sent, as HQ received it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreRow {
    /// When it happened at the store (see [`at_ms`]).
    pub at_ms: i64,
    pub received_ms: i64,
    pub id: String,
    pub event_type: String,
    pub payload: Value,
    /// When the store recorded it (its own clock), as it sent it.
    pub at: String,
}

/// Slack allowed to a store clock ahead of HQ's.
pub const MAX_AHEAD_MS: i64 = 5 * 60 * 1000;

/// When a store event happened, for the story: the store's `at` (RFC 3339), unless it cannot be
/// read or lies more than [`MAX_AHEAD_MS`] after HQ received it (a store cannot send what has not
/// happened yet); then HQ's arrival time. Events sent late (a store offline for hours) so take
/// their place at the time they happened.
pub fn at_ms(at: &str, received_ms: i64) -> i64 {
    at.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
        .filter(|ms| *ms <= received_ms + MAX_AHEAD_MS)
        .unwrap_or(received_ms)
}

/// One event HQ authored for the store (directly, through its group or for all stores).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthoredRow {
    pub created_ms: i64,
    pub seq: i64,
    pub id: String,
    pub event_type: String,
    pub payload: Value,
    /// "all stores", "group pilot" or "this store".
    pub target: String,
}

/// What the storage reads for one store and window (each list in time order, bounded).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sources {
    pub group: String,
    pub registered_ms: i64,
    pub timezone: Option<String>,
    /// When HQ first received an event from the store.
    pub first_push_ms: Option<i64>,
    /// Store events other than checkouts and telemetry.
    pub events: Vec<StoreRow>,
    /// Checkouts per hour: (hour start ms, count).
    pub checkouts: Vec<(i64, i64)>,
    /// The last telemetry rollup of each hour: (received ms, payload).
    pub telemetry: Vec<(i64, Value)>,
    pub authored: Vec<AuthoredRow>,
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    /// When it happened, RFC 3339 UTC: at the store (its clock, see [`at_ms`]) for what it sent,
    /// at HQ for what HQ authored.
    pub at: String,
    #[serde(skip)]
    pub ms: i64,
    pub kind: &'static str,
    /// `store` (the store sent it), `hq` (HQ told the store) or `sync`.
    pub source: &'static str,
    pub title: String,
    /// A stable key: the event id, or a name for milestones and rollups.
    pub key: String,
    /// When HQ received what the store sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received_at: Option<String>,
    pub detail: Value,
}

/// Which kind of timeline item a store event type is.
pub fn store_kind(event_type: &str) -> &'static str {
    match event_type {
        "checkout.completed" => "checkouts",
        "device.alert" => "alert",
        "device.status" => "device",
        "telemetry.rollup" => "telemetry",
        "ticket.opened" => "ticket",
        "release.status" => "release",
        "sync.quarantined" => "quarantine",
        _ => "other",
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn store_title(kind: &str, p: &Value, event_type: &str) -> String {
    match kind {
        "alert" => {
            let verb = if s(p, "state") == "cleared" {
                "cleared"
            } else {
                "raised"
            };
            let msg = s(p, "message");
            format!(
                "Alert {} {verb} on {} ({}){}",
                s(p, "code"),
                s(p, "device"),
                if s(p, "severity").is_empty() {
                    "info"
                } else {
                    s(p, "severity")
                },
                if msg.is_empty() {
                    String::new()
                } else {
                    format!(": {msg}")
                }
            )
        }
        "device" => {
            let on = p.get("online").and_then(Value::as_bool).unwrap_or(false);
            let reason = s(p, "reason");
            format!(
                "Device {} went {}{}",
                s(p, "device"),
                if on { "online" } else { "offline" },
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({reason})")
                }
            )
        }
        "ticket" => format!("Ticket opened: {}", s(p, "subject")),
        "release" => {
            let v = s(p, "version");
            format!(
                "Release {}{}",
                if s(p, "state").is_empty() {
                    "status"
                } else {
                    s(p, "state")
                },
                if v.is_empty() {
                    String::new()
                } else {
                    format!(" (version {v})")
                }
            )
        }
        "quarantine" => {
            let why = s(p, "reason");
            format!(
                "HQ event {} ({}) refused by the store and quarantined{}",
                s(p, "id"),
                s(p, "type"),
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {why}")
                }
            )
        }
        _ => format!("Store event {event_type}"),
    }
}

fn authored_title(event_type: &str, p: &Value, target: &str) -> (&'static str, String) {
    let kind = if event_type.starts_with("release.") {
        "rollout"
    } else {
        "authored"
    };
    let what = match event_type {
        "price.set" => format!(
            "Price for {} set to {}{}",
            s(p, "sku"),
            p.get("price").map(|v| v.to_string()).unwrap_or_default(),
            match s(p, "starts_at") {
                "" => String::new(),
                f => format!(" from {f}"),
            }
        ),
        "price.cancel" => format!("Price {} cancelled", s(p, "id")),
        "catalog.upsert" => format!("Item {} ({}) updated", s(p, "sku"), s(p, "name")),
        "catalog.delete" => format!("Item {} removed", s(p, "sku")),
        "promotion.upsert" => format!("Promotion {} set", s(p, "name")),
        "promotion.cancel" => format!("Promotion {} cancelled", s(p, "id")),
        "notice.post" => format!("Notice: {}", s(p, "message")),
        "ticket.update" => format!("Support replied to ticket {}", s(p, "ticket_id")),
        "release.assign" => format!("Release {} assigned", s(p, "version")),
        "release.withdraw" => format!("Release {} withdrawn ({})", s(p, "version"), s(p, "reason")),
        other => format!("HQ sent {other}"),
    };
    (kind, format!("{what} — for {target}"))
}

/// Where a page of the story continues: after this (ms, key).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub ms: i64,
    pub key: String,
}

impl Cursor {
    pub fn parse(s: &str) -> Result<Cursor, String> {
        let (ms, key) = s
            .split_once(':')
            .ok_or_else(|| format!("cursor {s:?} is not MS:KEY (use next_cursor as given)"))?;
        let ms = ms
            .parse()
            .map_err(|_| format!("cursor {s:?}: {ms:?} is not a number"))?;
        Ok(Cursor {
            ms,
            key: key.to_string(),
        })
    }
}

/// Merges the sources into one timeline in time order (ties by key), keeping only
/// `kinds` and items after `cursor`, at most `limit`. Answers the items and whether more follow.
pub fn merge(
    src: &Sources,
    from_ms: i64,
    kinds: &[&str],
    cursor: Option<&Cursor>,
    limit: usize,
) -> (Vec<Item>, bool) {
    let mut items = Vec::new();
    let want = |k: &str| kinds.contains(&k);
    if want("sync") {
        if src.registered_ms >= from_ms {
            items.push(item(
                src.registered_ms,
                "sync",
                "sync",
                "Store registered at HQ".into(),
                "registered".into(),
                None,
                json!({"group": src.group}),
            ));
        }
        if let Some(ms) = src.first_push_ms.filter(|ms| *ms >= from_ms) {
            items.push(item(
                ms,
                "sync",
                "sync",
                "First events received from the store".into(),
                "first-push".into(),
                None,
                json!({}),
            ));
        }
    }
    for e in &src.events {
        let kind = store_kind(&e.event_type);
        if !want(kind) {
            continue;
        }
        items.push(item(
            e.at_ms,
            kind,
            "store",
            store_title(kind, &e.payload, &e.event_type),
            e.id.clone(),
            Some(ts_from_ms(e.received_ms).to_string()),
            json!({"type": e.event_type, "payload": e.payload}),
        ));
    }
    if want("checkouts") {
        for (hour, n) in &src.checkouts {
            items.push(item(
                *hour,
                "checkouts",
                "store",
                format!(
                    "{n} checkout{} in this hour",
                    if *n == 1 { "" } else { "s" }
                ),
                format!("checkouts-{hour}"),
                None,
                json!({"count": n, "hour": ts_from_ms(*hour).to_string()}),
            ));
        }
    }
    if want("telemetry") {
        for (ms, p) in &src.telemetry {
            let b = p.get("box").cloned().unwrap_or(Value::Null);
            let n = |k: &str| b.get(k).and_then(Value::as_i64).unwrap_or(0);
            items.push(item(
                *ms,
                "telemetry",
                "store",
                format!(
                    "Telemetry: {} devices, {} offline, {} alerts open",
                    n("devices_total"),
                    n("devices_offline"),
                    n("alerts_open")
                ),
                format!("telemetry-{ms}"),
                None,
                json!({"box": b}),
            ));
        }
    }
    for a in &src.authored {
        let (kind, title) = authored_title(&a.event_type, &a.payload, &a.target);
        if !want(kind) {
            continue;
        }
        items.push(item(
            a.created_ms,
            kind,
            "hq",
            title,
            // By feed seq: events authored in one request keep their order.
            format!("hq-{:012}", a.seq),
            None,
            json!({"type": a.event_type, "id": a.id, "seq": a.seq, "target": a.target, "payload": a.payload}),
        ));
    }
    items.sort_by(|a, b| (a.ms, &a.key).cmp(&(b.ms, &b.key)));
    if let Some(c) = cursor {
        items.retain(|i| (i.ms, i.key.as_str()) > (c.ms, c.key.as_str()));
    }
    let more = items.len() > limit;
    items.truncate(limit);
    (items, more)
}

fn item(
    ms: i64,
    kind: &'static str,
    source: &'static str,
    title: String,
    key: String,
    received_at: Option<String>,
    detail: Value,
) -> Item {
    Item {
        at: ts_from_ms(ms).to_string(),
        ms,
        kind,
        source,
        title,
        key,
        received_at,
        detail,
    }
}

/// `GET /hq/v1/stores/{id}/story` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoryQuery {
    /// RFC 3339; default: a day before `to`.
    pub from: Option<String>,
    /// RFC 3339; default: now.
    pub to: Option<String>,
    /// Comma-separated kinds; default: all but telemetry.
    pub kinds: Option<String>,
    /// `next_cursor` of the page before.
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

/// The storage's read of one store's sources for `[from_ms, to_ms)`, each list at most `limit`.
#[derive(Debug, Clone)]
pub struct SourceQuery {
    pub store: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub limit: i64,
}

/// How an authored event reached the store, in words.
pub fn target_label(all: bool, direct: bool, group: &str) -> String {
    if all {
        "all stores".into()
    } else if direct {
        "this store".into()
    } else {
        format!("group {group}")
    }
}

fn instant(what: &str, s: &str) -> HqResult<i64> {
    Ok(s.parse::<jiff::Timestamp>()
        .map_err(|e| {
            HqError::invalid(
                "bad_range",
                format!("{what} {s:?} is not an RFC 3339 instant: {e}"),
            )
        })?
        .as_millisecond())
}

/// Parses `kinds=` (default: all but telemetry).
pub fn parse_kinds(s: Option<&str>) -> HqResult<Vec<&'static str>> {
    let Some(s) = s.filter(|s| !s.trim().is_empty()) else {
        return Ok(KINDS
            .iter()
            .copied()
            .filter(|k| *k != "telemetry")
            .collect());
    };
    s.split(',')
        .map(|k| {
            let k = k.trim();
            KINDS.iter().copied().find(|x| *x == k).ok_or_else(|| {
                HqError::invalid(
                    "bad_kind",
                    format!("kinds: {k:?} is not one of {}", KINDS.join(", ")),
                )
            })
        })
        .collect()
}

/// `GET /hq/v1/stores/{id}/story`.
pub async fn story(
    State(state): State<HqState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Result<Query<StoryQuery>, QueryRejection>,
) -> HqResult<Response> {
    let c = super::console::caller(&state, &Method::GET, &headers).await?;
    super::console::need(&c, &[HqRole::Operator, HqRole::Support], "a store's story")?;
    let Query(q) = q.map_err(|e| HqError::invalid("bad_query", e.body_text()))?;
    let now = state.now_ms();
    let to_ms = match &q.to {
        Some(t) => instant("to", t)?,
        None => now + 1,
    };
    let from_ms = match &q.from {
        Some(f) => instant("from", f)?,
        None => to_ms - DEFAULT_WINDOW_MS,
    };
    if from_ms >= to_ms {
        return Err(HqError::invalid("bad_range", "from must be before to"));
    }
    if to_ms - from_ms > MAX_WINDOW_MS {
        return Err(HqError::invalid(
            "bad_range",
            format!(
                "the window from {} to {} is longer than {} days; page with a shorter one",
                ts_from_ms(from_ms),
                ts_from_ms(to_ms),
                MAX_WINDOW_MS / 86_400_000
            ),
        ));
    }
    let limit = q.limit.unwrap_or(DEFAULT_ITEMS);
    if limit == 0 || limit > MAX_ITEMS {
        return Err(HqError::invalid(
            "bad_limit",
            format!("limit must be 1 to {MAX_ITEMS}"),
        ));
    }
    let kinds = parse_kinds(q.kinds.as_deref())?;
    let cursor = q
        .cursor
        .as_deref()
        .map(Cursor::parse)
        .transpose()
        .map_err(|m| HqError::invalid("bad_cursor", m))?;
    // Sources are read from the cursor's time on; each at most one more than a page.
    let read_from = cursor.as_ref().map_or(from_ms, |c| c.ms.max(from_ms));
    let src = state
        .storage
        .story_sources(SourceQuery {
            store: id.clone(),
            from_ms: read_from,
            to_ms,
            limit: limit as i64 + 1,
        })
        .await?
        .ok_or_else(|| HqError::not_found("unknown_store", format!("no store {id:?}")))?;
    let (items, more) = merge(&src, from_ms, &kinds, cursor.as_ref(), limit);
    let next = more
        .then(|| items.last().map(|i| format!("{}:{}", i.ms, i.key)))
        .flatten();
    let chart = json!({
        "checkouts": src.checkouts.iter().map(|(h, n)| json!([h / 1000, n])).collect::<Vec<_>>(),
        "telemetry": src.telemetry.iter().map(|(ms, p)| {
            let b = p.get("box").cloned().unwrap_or(Value::Null);
            json!([ms / 1000, b.get("devices_offline"), b.get("alerts_open"), b.get("checkouts_per_minute")])
        }).collect::<Vec<_>>(),
    });
    Ok(axum::Json(json!({
        "store": id,
        "group": src.group,
        "timezone": src.timezone,
        "from": ts_from_ms(from_ms).to_string(),
        "to": ts_from_ms(to_ms).to_string(),
        "kinds": kinds,
        "items": items,
        "next_cursor": next,
        "chart": chart,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ms: i64, id: &str, t: &str, p: Value) -> StoreRow {
        StoreRow {
            at_ms: ms,
            received_ms: ms + 5,
            id: id.into(),
            event_type: t.into(),
            payload: p,
            at: ts_from_ms(ms).to_string(),
        }
    }

    fn sources() -> Sources {
        Sources {
            group: "pilot".into(),
            registered_ms: 1_000,
            timezone: Some("Europe/Berlin".into()),
            first_push_ms: Some(5_000),
            events: vec![
                row(
                    10_000,
                    "alert-1",
                    "device.alert",
                    json!({"device": "lane-1", "code": "paper_low", "severity": "warning", "state": "raised", "message": "paper low"}),
                ),
                row(
                    30_000,
                    "status-1",
                    "device.status",
                    json!({"device": "lane-1", "online": false, "reason": "gone"}),
                ),
            ],
            checkouts: vec![(0, 3), (HOUR_MS, 1)],
            telemetry: vec![(
                20_000,
                json!({"box": {"devices_total": 2, "devices_offline": 0, "alerts_open": 1}}),
            )],
            authored: vec![AuthoredRow {
                created_ms: 20_000,
                seq: 7,
                id: "pr-1".into(),
                event_type: "price.set".into(),
                payload: json!({"sku": "1001", "price": 99, "starts_at": "2026-01-01T00:00:00Z"}),
                target: "group pilot".into(),
            }],
        }
    }

    #[test]
    fn merges_by_time_with_readable_titles() {
        let kinds = parse_kinds(None).unwrap();
        let (items, more) = merge(&sources(), 0, &kinds, None, 100);
        assert!(!more);
        let got: Vec<(i64, &str, &str)> = items.iter().map(|i| (i.ms, i.kind, i.source)).collect();
        assert_eq!(
            got,
            vec![
                (0, "checkouts", "store"),
                (1_000, "sync", "sync"),
                (5_000, "sync", "sync"),
                (10_000, "alert", "store"),
                (20_000, "authored", "hq"),
                (30_000, "device", "store"),
                (HOUR_MS, "checkouts", "store"),
            ],
            "telemetry is left out by default"
        );
        assert_eq!(
            items[3].title,
            "Alert paper_low raised on lane-1 (warning): paper low"
        );
        assert_eq!(
            items[4].title,
            "Price for 1001 set to 99 from 2026-01-01T00:00:00Z — for group pilot"
        );
        assert_eq!(items[5].title, "Device lane-1 went offline (gone)");
        assert_eq!(items[0].title, "3 checkouts in this hour");
        assert_eq!(
            items[3].received_at.as_deref(),
            Some("1970-01-01T00:00:10.005Z")
        );
    }

    #[test]
    fn the_store_clock_places_its_events_unless_unreadable_or_ahead() {
        let received = 1_764_500_000_000; // 2025-11-30T10:53:20Z
        assert_eq!(
            at_ms("2025-11-30T08:00:00Z", received),
            1_764_489_600_000,
            "sent late"
        );
        assert_eq!(
            at_ms("2025-11-30T10:57:00Z", received),
            1_764_500_220_000,
            "slightly ahead"
        );
        assert_eq!(
            at_ms("2025-11-30T11:00:00Z", received),
            received,
            "too far ahead"
        );
        assert_eq!(at_ms("yesterday", received), received, "unreadable");
    }

    #[test]
    fn filters_by_kind_and_window_start() {
        let kinds = parse_kinds(Some("alert,authored,telemetry,sync")).unwrap();
        let (items, _) = merge(&sources(), 2_000, &kinds, None, 100);
        let got: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            got,
            vec![
                "first-push",
                "alert-1",
                "hq-000000000007",
                "telemetry-20000"
            ],
            "registration before the window is left out; same-ms items by key"
        );
        assert!(parse_kinds(Some("alert,bogus")).is_err());
    }

    #[test]
    fn pages_with_a_cursor_without_repeating_or_skipping() {
        let kinds: Vec<&str> = KINDS.to_vec();
        let src = sources();
        let (all, _) = merge(&src, 0, &kinds, None, 100);
        let mut paged = Vec::new();
        let mut cursor = None;
        loop {
            let (page, more) = merge(&src, 0, &kinds, cursor.as_ref(), 2);
            assert!(page.len() <= 2);
            paged.extend(page.iter().map(|i| i.key.clone()));
            if !more {
                break;
            }
            let last = page.last().unwrap();
            cursor = Some(Cursor::parse(&format!("{}:{}", last.ms, last.key)).unwrap());
        }
        let keys: Vec<String> = all.iter().map(|i| i.key.clone()).collect();
        assert_eq!(paged, keys);
        assert!(Cursor::parse("nope").is_err());
    }
}
