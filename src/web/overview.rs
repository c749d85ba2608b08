//! The store at a glance, for the UI's first page (`GET /api/v1/overview`): the link to HQ,
//! devices online/offline/with alerts, today's checkouts and sales by hour (in the store's time
//! zone), and the price changes and promotions that start or end in the next 7 days.

use std::collections::HashSet;

use axum::extract::State;
use axum::Json;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use rusqlite::{params, Connection};
use serde::Serialize;

use super::caller::Caller;
use super::{ApiError, AppState};
use crate::auth::Role;
use crate::db::{ts_from_ms, DbResult};
use crate::sync::state::SyncStatus;

/// How far ahead the overview looks for price and promotion changes.
pub const UPCOMING_DAYS: i64 = 7;
/// Most price changes listed (the total is still counted).
pub const UPCOMING_MAX: usize = 200;

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeviceCounts {
    pub total: i64,
    pub online: i64,
    pub offline: i64,
    /// Devices with at least one open alert.
    pub with_alerts: i64,
    pub alerts_open: i64,
}

#[derive(Serialize, Clone, Default, utoipa::ToSchema)]
pub struct HourBucket {
    /// Local hour of day in the store's time zone, 0–23.
    pub hour: u8,
    pub checkouts: i64,
    /// Sales in minor units of the store currency.
    pub total: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SalesToday {
    /// The store's local date.
    pub date: String,
    pub currency: String,
    pub checkouts: i64,
    pub total: i64,
    /// 24 buckets, hour 0 to 23 (store-local; a repeated hour on a DST change day is merged).
    pub by_hour: Vec<HourBucket>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PriceChange {
    #[serde(skip)]
    pub at_ms: i64,
    pub at: String,
    pub sku: String,
    pub name: String,
    /// Effective price just before `at` (None: not priced before).
    pub from: Option<i64>,
    /// Effective price from `at` (None: no longer priced).
    pub to: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PromotionChange {
    #[serde(skip)]
    pub at_ms: i64,
    pub at: String,
    /// `starts` or `ends`
    pub change: String,
    pub id: String,
    pub name: String,
    pub kind: String,
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    pub department: Option<String>,
    pub skus: Vec<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Upcoming {
    pub from: String,
    pub to: String,
    /// Effective price changes, soonest first (at most 200).
    pub price_changes: Vec<PriceChange>,
    /// Skus with a price record starting or ending in the window (may exceed the list).
    pub price_skus_total: i64,
    pub promotions: Vec<PromotionChange>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Overview {
    pub now: String,
    pub store_id: String,
    pub store_name: String,
    pub timezone: String,
    pub currency: String,
    pub sync: SyncStatus,
    /// Set while device ingest cannot write (disk full, I/O error): devices are not acknowledged.
    pub ingest_failure: Option<crate::ops::health::IngestFailure>,
    pub devices: DeviceCounts,
    pub sales_today: SalesToday,
    pub upcoming: Upcoming,
}

/// Is the store healthy: HQ link, devices, today's sales, what changes soon.
#[utoipa::path(get, path = "/api/v1/overview", responses((status = 200, body = Overview), (status = 401)))]
pub async fn overview(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Overview>, ApiError> {
    caller.require(Role::Staff)?;
    let sync = super::support::sync_status_now(&state).await?;
    let now = state.clock.now();
    let tz = state.config.timezone();
    let currency = state.config.store.currency.clone();
    let cur = currency.clone();
    let (devices, sales_today, upcoming) = state
        .db
        .read(move |c| {
            Ok((
                device_counts(c)?,
                sales_today(c, now, &tz, cur)?,
                upcoming(c, now, UPCOMING_DAYS)?,
            ))
        })
        .await?;
    let cfg = &state.config;
    Ok(Json(Overview {
        now: now.to_string(),
        store_id: cfg.store.id.clone(),
        store_name: cfg.store.name.clone(),
        timezone: cfg.store.timezone.clone(),
        currency,
        sync,
        ingest_failure: state.health.ingest_failure(),
        devices,
        sales_today,
        upcoming,
    }))
}

fn device_counts(c: &Connection) -> DbResult<DeviceCounts> {
    Ok(c.query_row(
        "SELECT count(*), coalesce(sum(online), 0),
                (SELECT count(DISTINCT device_id) FROM alerts WHERE cleared_ms IS NULL
                   AND device_id IN (SELECT id FROM devices)),
                (SELECT count(*) FROM alerts WHERE cleared_ms IS NULL)
         FROM devices",
        [],
        |r| {
            let (total, online): (i64, i64) = (r.get(0)?, r.get(1)?);
            Ok(DeviceCounts {
                total,
                online,
                offline: total - online,
                with_alerts: r.get(2)?,
                alerts_open: r.get(3)?,
            })
        },
    )?)
}

/// The store-local day containing `now`: [start, next day's start).
pub fn local_day(now: Timestamp, tz: &TimeZone) -> (jiff::Zoned, Timestamp, Timestamp) {
    let z = now.to_zoned(tz.clone());
    let start = z.start_of_day().unwrap_or_else(|_| z.clone());
    let end = z
        .tomorrow()
        .and_then(|t| t.start_of_day())
        .map(|t| t.timestamp())
        .unwrap_or_else(|_| start.timestamp() + jiff::SignedDuration::from_hours(24));
    let start_ts = start.timestamp();
    (z, start_ts, end)
}

/// Today's checkouts: those recorded through `POST /api/v1/checkouts`, plus `checkout.completed`
/// events that lanes sent over MQTT (skipping an event whose `checkout_id` was also posted).
fn sales_today(
    c: &Connection,
    now: Timestamp,
    tz: &TimeZone,
    currency: String,
) -> DbResult<SalesToday> {
    let (z, start, end) = local_day(now, tz);
    let (start, end) = (start.as_millisecond(), end.as_millisecond());
    let mut by_hour: Vec<HourBucket> = (0..24)
        .map(|h| HourBucket {
            hour: h,
            ..Default::default()
        })
        .collect();
    let mut rows: Vec<(i64, i64)> = Vec::new();
    let mut stmt = c.prepare_cached(
        "SELECT created_ms, total FROM checkouts WHERE created_ms >= ?1 AND created_ms < ?2",
    )?;
    for r in stmt.query_map(params![start, end], |r| Ok((r.get(0)?, r.get(1)?)))? {
        rows.push(r?);
    }
    let mut stmt = c.prepare_cached(
        "SELECT received_ms, coalesce(json_extract(payload, '$.total'), 0), json_extract(payload, '$.checkout_id')
         FROM device_events WHERE type = 'checkout.completed' AND received_ms >= ?1 AND received_ms < ?2",
    )?;
    let posted: HashSet<String> = {
        let mut s = c.prepare_cached(
            "SELECT checkout_id FROM checkouts WHERE created_ms >= ?1 AND created_ms < ?2",
        )?;
        let ids = s
            .query_map(params![start - 86_400_000, end + 86_400_000], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        ids
    };
    for r in stmt.query_map(params![start, end], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1).unwrap_or(0),
            r.get::<_, Option<String>>(2).unwrap_or(None),
        ))
    })? {
        let (at, total, id) = r?;
        if id.is_some_and(|id| posted.contains(&id)) {
            continue;
        }
        rows.push((at, total));
    }
    let (mut count, mut sum) = (0, 0i64);
    for (at, total) in rows {
        let hour = ts_from_ms(at).to_zoned(tz.clone()).hour().clamp(0, 23) as usize;
        by_hour[hour].checkouts += 1;
        by_hour[hour].total = by_hour[hour].total.saturating_add(total);
        count += 1;
        sum = sum.saturating_add(total);
    }
    Ok(SalesToday {
        date: z.date().to_string(),
        currency,
        checkouts: count,
        total: sum,
        by_hour,
    })
}

/// Price changes and promotion starts/ends in `(now, now + days]`.
pub fn upcoming(c: &Connection, now: Timestamp, days: i64) -> DbResult<Upcoming> {
    let to = now + jiff::SignedDuration::from_hours(24 * days);
    let (from_ms, to_ms) = (now.as_millisecond(), to.as_millisecond());
    // Skus with a record boundary in the window, soonest boundary first.
    let mut stmt = c.prepare_cached(
        "SELECT sku, min(t) AS first FROM (
             SELECT sku, starts_ms AS t FROM prices WHERE starts_ms > ?1 AND starts_ms <= ?2
             UNION ALL
             SELECT sku, ends_ms AS t FROM prices WHERE ends_ms > ?1 AND ends_ms <= ?2)
         GROUP BY sku ORDER BY first, sku",
    )?;
    let skus: Vec<String> = stmt
        .query_map(params![from_ms, to_ms], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let price_skus_total = skus.len() as i64;
    let mut price_changes = Vec::new();
    for sku in skus.iter().take(UPCOMING_MAX) {
        let Some((_, records, _)) = crate::catalog::load(c, sku)? else {
            continue;
        };
        let name: String = c
            .query_row("SELECT name FROM items WHERE sku = ?1", [sku], |r| r.get(0))
            .unwrap_or_default();
        for t in crate::pricing::boundaries_between(&records, &[], now, to) {
            let before =
                crate::pricing::effective_price(&records, t - jiff::SignedDuration::from_millis(1))
                    .map(|r| r.price);
            let after = crate::pricing::effective_price(&records, t).map(|r| r.price);
            if before != after {
                price_changes.push(PriceChange {
                    at_ms: t.as_millisecond(),
                    at: t.to_string(),
                    sku: sku.clone(),
                    name: name.clone(),
                    from: before,
                    to: after,
                });
            }
        }
    }
    price_changes.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then(a.sku.cmp(&b.sku)));
    price_changes.truncate(UPCOMING_MAX);

    let mut stmt = c.prepare_cached(
        "SELECT id, name, kind, params, skus, department, starts_ms, ends_ms FROM promotions
         WHERE (starts_ms > ?1 AND starts_ms <= ?2) OR (ends_ms > ?1 AND ends_ms <= ?2)
         ORDER BY starts_ms LIMIT 500",
    )?;
    let mut promotions = Vec::new();
    let rows = stmt.query_map(params![from_ms, to_ms], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, Option<String>>(5)?,
            r.get::<_, i64>(6)?,
            r.get::<_, Option<i64>>(7)?,
        ))
    })?;
    for row in rows {
        let (id, name, kind, params_json, skus, department, starts, ends) = row?;
        let params: serde_json::Value = serde_json::from_str(&params_json).unwrap_or_default();
        let skus: Vec<String> = serde_json::from_str(&skus).unwrap_or_default();
        for (change, t) in [("starts", Some(starts)), ("ends", ends)] {
            if let Some(t) = t.filter(|t| *t > from_ms && *t <= to_ms) {
                promotions.push(PromotionChange {
                    at_ms: t,
                    at: ts_from_ms(t).to_string(),
                    change: change.into(),
                    id: id.clone(),
                    name: name.clone(),
                    kind: kind.clone(),
                    params: params.clone(),
                    department: department.clone(),
                    skus: skus.clone(),
                });
            }
        }
    }
    promotions.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then(a.id.cmp(&b.id)));
    Ok(Upcoming {
        from: now.to_string(),
        to: to.to_string(),
        price_changes,
        price_skus_total,
        promotions,
    })
}
