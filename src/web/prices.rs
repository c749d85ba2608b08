//! Price questions staff ask, beyond the price answer of docs/pricing.md: *why* a product costs what it costs at
//! an instant (which price record is in effect and why the others are not, which promotions apply
//! and which one wins for a single unit), how its price will change over a period (timeline), and
//! which promotions run in a period (calendar). All of it is computed by `crate::pricing` from
//! the same records that price the lanes.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use rusqlite::params;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::caller::Caller;
use super::error::QueryParams;
use super::{ApiError, AppState};
use crate::auth::Role;
use crate::catalog;
use crate::db::ts_from_ms;
use crate::pricing::{self, Item, PriceRecord, Promotion, Unit};

/// Longest period a timeline or calendar request may cover.
pub const MAX_RANGE_DAYS: i64 = 400;

fn parse_time(
    state: &AppState,
    field: &str,
    v: Option<&str>,
) -> Result<Option<jiff::Timestamp>, ApiError> {
    match v {
        None => Ok(None),
        Some(s) => super::catalog::parse_api_time(state, field, s).map(Some),
    }
}

/// `from`/`to` of a range: defaults, order and length checked (422 `bad_range` naming the field:
/// each value is well-formed, together they are not a range this endpoint serves).
fn parse_range(
    state: &AppState,
    from: Option<&str>,
    to: Option<&str>,
    default_from: jiff::Timestamp,
    default_days: i64,
) -> Result<(jiff::Timestamp, jiff::Timestamp), ApiError> {
    let from = parse_time(state, "from", from)?.unwrap_or(default_from);
    let to = parse_time(state, "to", to)?
        .unwrap_or(from + jiff::SignedDuration::from_hours(24 * default_days));
    if to <= from {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_range",
            "to: must be after from",
        ));
    }
    if to.duration_since(from) > jiff::SignedDuration::from_hours(24 * MAX_RANGE_DAYS) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_range",
            format!("to: at most {MAX_RANGE_DAYS} days after from"),
        ));
    }
    Ok((from, to))
}

fn load(
    c: &rusqlite::Connection,
    sku: &str,
) -> Result<(Item, Vec<PriceRecord>, Vec<Promotion>, String), ApiError> {
    let Some((item, records, promos)) = catalog::load(c, sku)? else {
        return Err(ApiError::not_found(
            "unknown_sku",
            format!("no catalog item {sku:?}"),
        ));
    };
    let name: String = c
        .query_row("SELECT name FROM items WHERE sku = ?1", [sku], |r| r.get(0))
        .map_err(crate::db::DbError::from)?;
    Ok((item, records, promos, name))
}

/// The reference quantity the UI explains: one unit, or one kilogram (1000 g) for `kg` items.
fn one(unit: Unit) -> i64 {
    match unit {
        Unit::Each => 1,
        Unit::Kg => 1000,
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RecordWhy {
    pub id: String,
    pub price: i64,
    pub starts_at: String,
    pub ends_at: Option<String>,
    /// `in_effect`, `overridden` (another record that started later, or arrived later, wins),
    /// `not_started`, `ended` or `never` (ends before it starts).
    pub state: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PromotionWhy {
    pub id: String,
    pub name: String,
    pub kind: String,
    #[schema(value_type = Object)]
    pub params: Value,
    pub starts_at: String,
    pub ends_at: Option<String>,
    /// `sku`, `department` or `sku_and_department`: how it reaches this product.
    pub targets: String,
    /// `active`, `not_started`, `ended` or `not_for_unit` (this kind does not apply to kg items).
    pub state: String,
    /// Discount it gives on one unit (one kg) at the instant; 0 for quantity deals.
    pub discount_one: i64,
    /// It is the promotion applied to one unit (one kg).
    pub applied: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OneUnit {
    /// 1 (units) or 1000 (grams).
    pub quantity: i64,
    pub regular: i64,
    pub discount: i64,
    pub total: i64,
    pub promotion_id: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PriceWhy {
    pub sku: String,
    pub name: String,
    pub department: Option<String>,
    #[schema(value_type = String)]
    pub unit: Unit,
    pub currency: String,
    pub at: String,
    /// The effective price (None: not priced at this instant, cannot be sold).
    pub price: Option<i64>,
    pub price_id: Option<String>,
    /// Every price record of the sku, the latest start first, each with why it is or is not used.
    pub records: Vec<RecordWhy>,
    /// Promotions that target the sku or its department, each with its state at the instant.
    pub promotions: Vec<PromotionWhy>,
    /// What one unit (one kg) costs at the instant, best promotion applied.
    pub one: Option<OneUnit>,
    #[schema(value_type = Option<Object>)]
    pub next_change: Option<Value>,
}

#[derive(Deserialize)]
pub struct AtQuery {
    pub at: Option<String>,
}

fn record_state(
    r: &PriceRecord,
    chosen: Option<&PriceRecord>,
    at: jiff::Timestamp,
) -> &'static str {
    if r.ends_at.is_some_and(|e| e <= r.starts_at) {
        "never"
    } else if chosen.is_some_and(|c| c.id == r.id) {
        "in_effect"
    } else if r.starts_at > at {
        "not_started"
    } else if r.ends_at.is_some_and(|e| e <= at) {
        "ended"
    } else {
        "overridden"
    }
}

/// Why a product costs what it costs at an instant: the price record in effect (and why the
/// others are not), the promotions that reach it and the one applied to a single unit.
#[utoipa::path(get, path = "/api/v1/prices/{sku}/explain", params(("sku" = String, Path), ("at" = Option<String>, Query, description = "RFC 3339 instant or store-local time (no offset); default now", pattern = r"^((19|2[01])[0-9]{2}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))|((19|2[01])(0[48]|[2468][048]|[13579][26])|2000)-02-29)T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9])?$")),
    responses((status = 200, body = PriceWhy), (status = 400), (status = 404)))]
pub async fn explain(
    State(state): State<AppState>,
    caller: Caller,
    Path(sku): Path<String>,
    QueryParams(q): QueryParams<AtQuery>,
) -> Result<Json<PriceWhy>, ApiError> {
    caller.require(Role::Staff)?;
    let at = parse_time(&state, "at", q.at.as_deref())?.unwrap_or_else(|| state.clock.now());
    let currency = state.config.store.currency.clone();
    let why = state
        .db
        .read(move |c| {
            let (item, mut records, promos, name) = match load(c, &sku) {
                Ok(v) => v,
                Err(e) => return Ok(Err(e)),
            };
            let department: Option<String> = item.department.clone();
            let chosen = pricing::effective_price(&records, at).cloned();
            let active = pricing::active_promotions(&promos, &item, at);
            let one_line = chosen
                .as_ref()
                .and_then(|r| pricing::price_line(&item, r.price, one(item.unit), &active).ok());
            let mut promo_why: Vec<PromotionWhy> = promos
                .iter()
                .map(|p| {
                    let by_sku = p.skus.contains(&item.sku);
                    let by_dept = p.department.is_some() && p.department == item.department;
                    let is_active = active.iter().any(|a| a.id == p.id);
                    let state = if is_active {
                        "active"
                    } else if p.starts_at > at {
                        "not_started"
                    } else if p.ends_at.is_some_and(|e| e <= at) {
                        "ended"
                    } else {
                        "not_for_unit"
                    };
                    let discount_one = match (&chosen, is_active) {
                        (Some(r), true) => {
                            pricing::price_line(&item, r.price, one(item.unit), &[p])
                                .map(|l| l.discount)
                                .unwrap_or(0)
                        }
                        _ => 0,
                    };
                    let (kind, params) = p.kind.to_wire();
                    PromotionWhy {
                        id: p.id.clone(),
                        name: p.name.clone(),
                        kind: kind.to_string(),
                        params,
                        starts_at: p.starts_at.to_string(),
                        ends_at: p.ends_at.map(|t| t.to_string()),
                        targets: match (by_sku, by_dept) {
                            (true, true) => "sku_and_department",
                            (false, true) => "department",
                            _ => "sku",
                        }
                        .into(),
                        state: state.into(),
                        discount_one,
                        applied: one_line
                            .as_ref()
                            .is_some_and(|l| l.promotion_id.as_deref() == Some(p.id.as_str())),
                    }
                })
                .collect();
            promo_why.sort_by(|a, b| a.starts_at.cmp(&b.starts_at).then(a.id.cmp(&b.id)));
            records.sort_by(|a, b| {
                b.starts_at
                    .cmp(&a.starts_at)
                    .then(b.received.cmp(&a.received))
            });
            let records_why = records
                .iter()
                .map(|r| RecordWhy {
                    id: r.id.clone(),
                    price: r.price,
                    starts_at: r.starts_at.to_string(),
                    ends_at: r.ends_at.map(|t| t.to_string()),
                    state: record_state(r, chosen.as_ref(), at).into(),
                })
                .collect();
            let next_change = pricing::next_price_change(&records, at)
                .map(|(t, p)| serde_json::json!({"at": t.to_string(), "price": p}));
            Ok(Ok(PriceWhy {
                sku: item.sku.clone(),
                name,
                department,
                unit: item.unit,
                currency,
                at: at.to_string(),
                price: chosen.as_ref().map(|r| r.price),
                price_id: chosen.as_ref().map(|r| r.id.clone()),
                records: records_why,
                promotions: promo_why,
                one: one_line.map(|l| OneUnit {
                    quantity: l.quantity,
                    regular: l.regular,
                    discount: l.discount,
                    total: l.total,
                    promotion_id: l.promotion_id,
                }),
                next_change,
            }))
        })
        .await??;
    Ok(Json(why))
}

#[derive(Deserialize)]
pub struct RangeQuery {
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TimelinePoint {
    pub at: String,
    /// Effective price from `at` (None: not priced).
    pub price: Option<i64>,
    pub price_id: Option<String>,
    /// Promotions active for this product from `at`.
    pub promotions: Vec<String>,
    /// One unit (one kg) with the best promotion applied.
    pub one_total: Option<i64>,
    pub promotion_id: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Timeline {
    pub sku: String,
    pub name: String,
    #[schema(value_type = String)]
    pub unit: Unit,
    pub currency: String,
    pub from: String,
    pub to: String,
    /// The state at `from`, then one point per instant in (from, to] where a price record or a
    /// promotion of this product starts or ends.
    pub points: Vec<TimelinePoint>,
}

/// How a product's price changes over a period (default: the next 30 days).
#[utoipa::path(get, path = "/api/v1/prices/{sku}/timeline", params(("sku" = String, Path), ("from" = Option<String>, Query, pattern = r"^((19|2[01])[0-9]{2}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))|((19|2[01])(0[48]|[2468][048]|[13579][26])|2000)-02-29)T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9])?$"), ("to" = Option<String>, Query, pattern = r"^((19|2[01])[0-9]{2}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))|((19|2[01])(0[48]|[2468][048]|[13579][26])|2000)-02-29)T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9])?$")),
    responses((status = 200, body = Timeline), (status = 400), (status = 404), (status = 422, description = "`bad_range`: `to` not after `from`, or more than 400 days after it")))]
pub async fn timeline(
    State(state): State<AppState>,
    caller: Caller,
    Path(sku): Path<String>,
    QueryParams(q): QueryParams<RangeQuery>,
) -> Result<Json<Timeline>, ApiError> {
    caller.require(Role::Staff)?;
    let (from, to) = parse_range(
        &state,
        q.from.as_deref(),
        q.to.as_deref(),
        state.clock.now(),
        30,
    )?;
    let currency = state.config.store.currency.clone();
    let tl = state
        .db
        .read(move |c| {
            let (item, records, promos, name) = match load(c, &sku) {
                Ok(v) => v,
                Err(e) => return Ok(Err(e)),
            };
            let point = |t: jiff::Timestamp| {
                let rec = pricing::effective_price(&records, t);
                let active = pricing::active_promotions(&promos, &item, t);
                let line = rec.and_then(|r| {
                    pricing::price_line(&item, r.price, one(item.unit), &active).ok()
                });
                TimelinePoint {
                    at: t.to_string(),
                    price: rec.map(|r| r.price),
                    price_id: rec.map(|r| r.id.clone()),
                    promotions: active.iter().map(|p| p.id.clone()).collect(),
                    one_total: line.as_ref().map(|l| l.total),
                    promotion_id: line.and_then(|l| l.promotion_id),
                }
            };
            let mut points = vec![point(from)];
            for t in pricing::boundaries_between(&records, &promos, from, to) {
                points.push(point(t));
            }
            Ok(Ok(Timeline {
                sku: item.sku.clone(),
                name,
                unit: item.unit,
                currency,
                from: from.to_string(),
                to: to.to_string(),
                points,
            }))
        })
        .await??;
    Ok(Json(tl))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CalendarEntry {
    pub id: String,
    pub name: String,
    pub kind: String,
    #[schema(value_type = Object)]
    pub params: Value,
    pub skus: Vec<String>,
    pub department: Option<String>,
    pub starts_at: String,
    pub ends_at: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Calendar {
    pub from: String,
    pub to: String,
    /// Promotions that run at some time in [from, to), by start (at most 1000).
    pub promotions: Vec<CalendarEntry>,
    pub truncated: bool,
}

/// The promotions calendar: promotions running at some time in [from, to) (default: from the
/// start of today, store time, for 35 days).
#[utoipa::path(get, path = "/api/v1/promotions", params(("from" = Option<String>, Query, pattern = r"^((19|2[01])[0-9]{2}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))|((19|2[01])(0[48]|[2468][048]|[13579][26])|2000)-02-29)T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9])?$"), ("to" = Option<String>, Query, pattern = r"^((19|2[01])[0-9]{2}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))|((19|2[01])(0[48]|[2468][048]|[13579][26])|2000)-02-29)T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9])?$")),
    responses((status = 200, body = Calendar), (status = 400), (status = 422, description = "`bad_range`: `to` not after `from`, or more than 400 days after it")))]
pub async fn promotions(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<RangeQuery>,
) -> Result<Json<Calendar>, ApiError> {
    caller.require(Role::Staff)?;
    let (_, today, _) = super::overview::local_day(state.clock.now(), &state.config.timezone());
    let (from, to) = parse_range(&state, q.from.as_deref(), q.to.as_deref(), today, 35)?;
    const LIMIT: usize = 1000;
    let mut promotions = state
        .db
        .read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, name, kind, params, skus, department, starts_ms, ends_ms FROM promotions
                 WHERE starts_ms < ?2 AND (ends_ms IS NULL OR ends_ms > ?1)
                 ORDER BY starts_ms, id LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![from.as_millisecond(), to.as_millisecond(), LIMIT as i64 + 1],
                |r| {
                    let params_json: String = r.get(3)?;
                    let skus: String = r.get(4)?;
                    Ok(CalendarEntry {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        kind: r.get(2)?,
                        params: serde_json::from_str(&params_json).unwrap_or_default(),
                        skus: serde_json::from_str(&skus).unwrap_or_default(),
                        department: r.get(5)?,
                        starts_at: ts_from_ms(r.get(6)?).to_string(),
                        ends_at: r
                            .get::<_, Option<i64>>(7)?
                            .map(|m| ts_from_ms(m).to_string()),
                    })
                },
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await?;
    let truncated = promotions.len() > LIMIT;
    promotions.truncate(LIMIT);
    Ok(Json(Calendar {
        from: from.to_string(),
        to: to.to_string(),
        promotions,
        truncated,
    }))
}
