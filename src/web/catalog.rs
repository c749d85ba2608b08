//! Catalog and pricing API: product lookup, the effective price at an instant, basket pricing and
//! idempotent checkouts. Pricing itself is `crate::pricing`; this file loads the data and shapes
//! the answers of docs/api.md and docs/pricing.md.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::caller::Caller;
use super::error::{JsonBody, QueryParams};
use super::{ApiError, AppState};
use crate::auth::Role;
use crate::catalog::answer_cache::{self, AnswerCache};
use crate::catalog::promo_cache::PromotionCache;
use crate::catalog::{self, ItemView};
use crate::db::DbResult;
use crate::outbox::{self, Class};
use crate::pricing::{self, BasketLine, PricedBasket, PricingError};

fn pricing_error(e: PricingError, status: StatusCode) -> ApiError {
    let code = e.code();
    let status = match e {
        PricingError::BadQuantity { .. } | PricingError::BadTime { .. } => StatusCode::BAD_REQUEST,
        _ => status,
    };
    ApiError::new(status, code, e.to_string())
}

fn parse_at(state: &AppState, at: Option<&str>) -> Result<jiff::Timestamp, ApiError> {
    match at {
        None => Ok(state.clock.now()),
        Some(s) => parse_api_time(state, "at", s),
    }
}

/// A store time given to the API (`at`, `from`, `to`): exactly what the OpenAPI document's
/// pattern (`STORE_TIME_PATTERN`) allows — `YYYY-MM-DDTHH:MM:SS[.fraction][Z|±HH:MM]`, years
/// 1900-2199, offsets up to ±13:59, a real calendar date — read by `pricing::parse_store_time`
/// (an offset: that instant; none: store-local). Import files and the HQ feed are not held to
/// this shape.
pub(crate) fn parse_api_time(
    state: &AppState,
    field: &str,
    s: &str,
) -> Result<jiff::Timestamp, ApiError> {
    let bad = |why: String| ApiError::bad_request("bad_time", format!("{field}: {why}"));
    if !api_time_shape(s) {
        return Err(bad(format!(
            "{s:?} is not YYYY-MM-DDTHH:MM:SS with an optional fraction and Z or ±HH:MM (years 1900-2199)"
        )));
    }
    pricing::parse_store_time(s, &state.config.timezone()).map_err(|e| bad(e.to_string()))
}

/// The shape of [`parse_api_time`]'s input, without the calendar check (jiff does that).
pub(crate) fn api_time_shape(s: &str) -> bool {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let t = b.get(r)?;
        t.iter()
            .all(u8::is_ascii_digit)
            .then(|| t.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let fixed = b.len() >= 19
        && num(0..4).is_some_and(|y| (1900..=2199).contains(&y))
        && b[4] == b'-'
        && num(5..7).is_some()
        && b[7] == b'-'
        && num(8..10).is_some()
        && b[10] == b'T'
        && num(11..13).is_some_and(|h| h <= 23)
        && b[13] == b':'
        && num(14..16).is_some_and(|m| m <= 59)
        && b[16] == b':'
        && num(17..19).is_some_and(|s| s <= 59);
    if !fixed {
        return false;
    }
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') {
        let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&digits) {
            return false;
        }
        rest = &rest[1 + digits..];
    }
    match rest {
        [] | [b'Z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            let d = |c: &u8| c.is_ascii_digit();
            d(h1)
                && d(h2)
                && d(m1)
                && d(m2)
                && (*h1 == b'0' || (*h1 == b'1' && *h2 <= b'3'))
                && *m1 <= b'5'
        }
        _ => false,
    }
}

#[derive(Deserialize)]
pub struct SearchQuery {
    pub q: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SearchResult {
    pub items: Vec<ItemView>,
    /// Items whose name matches (exact sku/barcode hits come first and are not counted).
    pub total: i64,
}

/// Find products by name, sku or barcode.
#[utoipa::path(get, path = "/api/v1/catalog", params(("q" = Option<String>, Query), ("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query)),
    responses((status = 200, body = SearchResult)))]
pub async fn search(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<SearchQuery>,
) -> Result<Json<SearchResult>, ApiError> {
    caller.require(Role::Staff)?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let offset = q.offset.unwrap_or(0).max(0);
    let text = q.q.unwrap_or_default();
    let (items, total) = state
        .db
        .read(move |c| catalog::search(c, &text, limit, offset))
        .await?;
    Ok(Json(SearchResult { items, total }))
}

/// One product with its barcodes.
#[utoipa::path(get, path = "/api/v1/catalog/{sku}", params(("sku" = String, Path)), responses((status = 200, body = ItemView), (status = 404)))]
pub async fn item(
    State(state): State<AppState>,
    caller: Caller,
    Path(sku): Path<String>,
) -> Result<Json<ItemView>, ApiError> {
    caller.require(Role::Staff)?;
    let s = sku.clone();
    state
        .db
        .read(move |c| catalog::item_view(c, &s))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("unknown_sku", format!("no catalog item {sku:?}")))
}

/// Look a product up by barcode.
#[utoipa::path(get, path = "/api/v1/catalog/barcode/{code}", params(("code" = String, Path)), responses((status = 200, body = ItemView), (status = 404)))]
pub async fn by_barcode(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
) -> Result<Json<ItemView>, ApiError> {
    caller.require(Role::Staff)?;
    let c2 = code.clone();
    state
        .db
        .read(move |c| match catalog::sku_for_barcode(c, &c2)? {
            Some(sku) => catalog::item_view(c, &sku),
            None => Ok(None),
        })
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(
                "unknown_barcode",
                format!("no catalog item with barcode {code:?}"),
            )
        })
}

#[derive(Deserialize)]
pub struct AtQuery {
    pub at: Option<String>,
}

/// The price answer (docs/pricing.md) (HTTP, and devices' `devices/{id}/price/reply`).
#[derive(Debug, Serialize)]
pub struct PriceAnswer {
    pub sku: String,
    pub price: i64,
    pub currency: String,
    pub unit: pricing::Unit,
    pub price_id: String,
    /// Ids of the promotions active for this item at the instant, sorted.
    pub promotions: Vec<String>,
    pub next_change: Option<pricing::NextChange>,
}

/// The price answer of `sku` at `at` and the instant until which it holds
/// ([`pricing::next_boundary`]): the outer error is the database's (a server fault), the inner one
/// the pricing answer's.
fn compute_answer(
    conn: &rusqlite::Connection,
    promos: &PromotionCache,
    promotions_version: i64,
    sku: &str,
    at: jiff::Timestamp,
    currency: &str,
) -> DbResult<Result<(PriceAnswer, Option<jiff::Timestamp>), PricingError>> {
    let Some((item, records, promos)) =
        catalog::load_with_version(conn, sku, promos, promotions_version)?
    else {
        return Ok(Err(PricingError::UnknownSku { sku: sku.into() }));
    };
    Ok(pricing::quote(&item, &records, &promos, at).map(|q| {
        let answer = PriceAnswer {
            sku: q.sku,
            price: q.price,
            currency: currency.to_string(),
            unit: q.unit,
            price_id: q.price_id,
            promotions: q.promotions,
            next_change: q.next_change,
        };
        (answer, pricing::next_boundary(&records, &promos, at))
    }))
}

/// The answer kept in `answers` for `sku` at `at`, if it is still what the database says: the
/// versions are read in one statement, so they are those of the latest commit by any process
/// (see `catalog::answer_cache`).
pub fn kept_answer(
    conn: &rusqlite::Connection,
    answers: &AnswerCache,
    sku: &str,
    at: jiff::Timestamp,
) -> DbResult<Option<Bytes>> {
    let versions = answer_cache::versions(conn)?;
    Ok(answers.get(sku, versions, at.as_millisecond()))
}

/// The price answer as the JSON the API sends, computed and kept in `answers` with the versions
/// read in the same read transaction as the data.
pub fn fresh_answer_json(
    conn: &rusqlite::Connection,
    promos: &PromotionCache,
    answers: &AnswerCache,
    sku: &str,
    at: jiff::Timestamp,
    currency: &str,
) -> DbResult<Result<Bytes, PricingError>> {
    let versions = answer_cache::versions(conn)?;
    Ok(
        compute_answer(conn, promos, versions.promotions, sku, at, currency)?.map(
            |(answer, until)| {
                // Copied to an allocation of its exact size: it may be kept for days.
                let body = Bytes::copy_from_slice(
                    &serde_json::to_vec(&answer).expect("a price answer serializes"),
                );
                answers.put(
                    sku,
                    versions,
                    at.as_millisecond(),
                    until.map(|t| t.as_millisecond()),
                    body.clone(),
                );
                body
            },
        ),
    )
}

/// Effective price of a sku at an instant (default now), active promotions, next scheduled change.
#[utoipa::path(get, path = "/api/v1/prices/{sku}", params(("sku" = String, Path), ("at" = Option<String>, Query, description = "RFC 3339 instant or store-local time (no offset); default now", pattern = r"^((19|2[01])[0-9]{2}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))|((19|2[01])(0[48]|[2468][048]|[13579][26])|2000)-02-29)T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9])?$")),
    responses((status = 200, description = "{sku, price, currency, unit, price_id, promotions, next_change}"), (status = 404, description = "unknown_sku or no_price")))]
pub async fn price(
    State(state): State<AppState>,
    caller: Caller,
    Path(sku): Path<String>,
    QueryParams(q): QueryParams<AtQuery>,
) -> Result<Response, ApiError> {
    caller.require(Role::Staff)?;
    let at = parse_at(&state, q.at.as_deref())?;
    let json = |body: Bytes| ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    // Both run on this worker: no query or one indexed read when the answer is kept, a few
    // (~30 µs) when it is computed, within tokio's guidance of at most 10–100 µs between awaits;
    // a hand-off to the blocking pool cost more than the query itself (docs/benchmarks.md).
    let answers = &state.price_answers;
    if answers.keeps_answers() {
        let versions = answers.versions_now(&state.db).await?;
        if let Some(body) = answers.get(&sku, versions, at.as_millisecond()) {
            return Ok(json(body));
        }
    }
    let currency = state.config.store.currency.clone();
    let promos = state.promotions.clone();
    let answers = state.price_answers.clone();
    let answer = state
        .db
        .read_inline(move |c| fresh_answer_json(c, &promos, &answers, &sku, at, &currency))
        .await?;
    answer
        .map(json)
        .map_err(|e| pricing_error(e, StatusCode::NOT_FOUND))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct BasketRequest {
    /// RFC 3339 instant or store-local time (no offset); default now.
    #[schema(
        nullable = false,
        pattern = r"^((19|2[01])[0-9]{2}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))|((19|2[01])(0[48]|[2468][048]|[13579][26])|2000)-02-29)T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9])?$"
    )]
    pub at: Option<String>,
    #[schema(min_items = 1, max_items = 1000)]
    pub lines: Vec<LineRequest>,
}

#[derive(Deserialize, Clone, utoipa::ToSchema)]
pub struct LineRequest {
    pub sku: String,
    /// Units, or grams for `kg` items.
    #[schema(minimum = 1)]
    #[serde(deserialize_with = "integer")]
    pub quantity: i64,
}

/// A JSON Schema `integer`: also `3.0` (a number with no fraction), as the schema allows.
fn integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(serde::de::Error::custom(format!(
            "invalid value: {n}, expected an integer"
        ))),
    }
}

fn basket_json(basket: &PricedBasket, at: jiff::Timestamp, currency: &str) -> Value {
    json!({
        "priced_at": at.to_string(), "currency": currency, "lines": basket.lines,
        "regular": basket.regular, "discount": basket.discount, "total": basket.total,
    })
}

fn price_lines(
    conn: &rusqlite::Connection,
    promos: &PromotionCache,
    lines: &[LineRequest],
    at: jiff::Timestamp,
) -> Result<PricedBasket, ApiError> {
    if lines.is_empty() || lines.len() > 1000 {
        return Err(ApiError::bad_request(
            "bad_basket",
            "a basket has 1 to 1000 lines",
        ));
    }
    let lines: Vec<BasketLine> = lines
        .iter()
        .map(|l| BasketLine {
            sku: l.sku.clone(),
            quantity: l.quantity,
        })
        .collect();
    let mut db_error = None;
    let result = pricing::price_basket(&lines, at, |sku| {
        match catalog::load_with(conn, sku, promos) {
            Ok(v) => v,
            Err(e) => {
                db_error = Some(e);
                None
            }
        }
    });
    if let Some(e) = db_error {
        return Err(e.into());
    }
    result.map_err(|e| pricing_error(e, StatusCode::UNPROCESSABLE_ENTITY))
}

/// Price a basket: per line the regular amount, the best single promotion, and totals.
#[utoipa::path(post, path = "/api/v1/baskets/price", request_body = BasketRequest,
    responses((status = 200, description = "{priced_at, currency, lines:[{sku,quantity,unit_price,regular,discount,promotion_id,total}], regular, discount, total}"), (status = 422)))]
pub async fn price_basket(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<BasketRequest>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Staff)?;
    let at = parse_at(&state, req.at.as_deref())?;
    let currency = state.config.store.currency.clone();
    let promos = state.promotions.clone();
    let basket = state
        .db
        .read(move |c| Ok(price_lines(c, &promos, &req.lines, at)))
        .await??;
    Ok(Json(basket_json(&basket, at, &currency)))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CheckoutRequest {
    #[schema(min_length = 1, max_length = 128)]
    pub checkout_id: String,
    #[schema(min_length = 1, max_length = 64)]
    pub lane: String,
    #[schema(min_items = 1, max_items = 1000)]
    pub lines: Vec<LineRequest>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub payment: Value,
}

/// Record a checkout: priced on the box, stored, queued for HQ. Idempotent on `checkout_id`.
#[utoipa::path(post, path = "/api/v1/checkouts", request_body = CheckoutRequest,
    responses((status = 201, description = "the priced checkout"), (status = 200, description = "the same checkout_id again: the stored result"), (status = 422)))]
pub async fn checkout(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<CheckoutRequest>,
) -> Result<Response, ApiError> {
    caller.require(Role::Staff)?;
    if req.checkout_id.is_empty()
        || req.checkout_id.chars().count() > 128
        || req.lane.is_empty()
        || req.lane.chars().count() > 64
    {
        return Err(ApiError::bad_request(
            "bad_checkout",
            "checkout_id (1-128 characters) and lane (1-64) are required",
        ));
    }
    let at = state.clock.now();
    let now = at.as_millisecond();
    let currency = state.config.store.currency.clone();
    let store = state.config.store.id.clone();
    let promos = state.promotions.clone();
    // A sale in flight: held until the checkout is committed (`updates::sale`).
    let _recording = state.sales.recording().await;
    let (created, body) = state
        .db
        .write(move |c| {
            let tx = crate::db::immediate(c)?;
            let existing: Option<String> = tx
                .query_row("SELECT result FROM checkouts WHERE checkout_id = ?1", [&req.checkout_id], |r| r.get(0))
                .optional()?;
            if let Some(result) = existing {
                return Ok(Ok((false, serde_json::from_str::<Value>(&result).unwrap_or(Value::Null))));
            }
            let basket = match price_lines(&tx, &promos, &req.lines, at) {
                Ok(b) => b,
                Err(e) => return Ok(Err(e)),
            };
            let mut body = basket_json(&basket, at, &currency);
            body["checkout_id"] = json!(req.checkout_id);
            body["lane"] = json!(req.lane);
            body["store"] = json!(store);
            body["payment"] = req.payment.clone();
            let text = body.to_string();
            tx.execute(
                "INSERT INTO checkouts (checkout_id, lane, result, total, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![req.checkout_id, req.lane, text, basket.total, now],
            )?;
            outbox::enqueue(&tx, &format!("checkout:{}", req.checkout_id), crate::proto::StoreEventType::CheckoutCompleted, Class::Business, &text, now)?;
            tx.commit()?;
            Ok(Ok((true, body)))
        })
        .await??;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(body)).into_response())
}

#[cfg(test)]
mod contract_tests {
    use super::*;

    #[test]
    fn api_times_have_the_documented_shape() {
        for ok in [
            "2026-11-27T00:00:00",
            "2026-11-27T00:00:00Z",
            "2026-11-27T23:59:59.123456789+13:59",
            "1900-01-01T00:00:00-01:00",
            "2199-12-31T12:00:00",
        ] {
            assert!(api_time_shape(ok), "{ok}");
        }
        for bad in [
            "",
            "tomorrow",
            "2026-11-27T00:00",
            "2026-11-27 00:00:00",
            "2026-11-27t00:00:00",
            "1899-12-31T00:00:00",
            "2200-01-01T00:00:00",
            "2026-11-27T24:00:00",
            "2026-11-27T00:00:00+14:00",
            "2026-11-27T00:00:00.",
            "2026-11-27T00:00:00.1234567890",
            "2026-11-27T00:00:00Z ",
            "2026-11-27T00:00:00[Europe/Rome]",
        ] {
            assert!(!api_time_shape(bad), "{bad}");
        }
    }

    #[test]
    fn quantities_are_json_schema_integers() {
        let line = |q: &str| {
            serde_json::from_str::<LineRequest>(&format!(r#"{{"sku":"1","quantity":{q}}}"#))
                .map(|l| l.quantity)
        };
        assert_eq!(line("3").unwrap(), 3);
        assert_eq!(line("41684.0").unwrap(), 41684);
        assert!(line("3.5").is_err());
        assert!(line("\"3\"").is_err());
    }
}
