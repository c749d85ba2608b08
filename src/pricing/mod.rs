//! Pricing: the one place that decides what an item costs at an instant.
//!
//! Every surface that shows or charges a price — `GET /api/v1/prices/{sku}`, basket pricing, checkouts,
//! the price replies sent to devices over MQTT and the scheduler that announces price changes — asks
//! this module, so the pricing rules of docs/pricing.md (effective price, promotions, rounding,
//! store-local times) are written down exactly once.
//!
//! The module is pure: plain functions over plain data, with no database, no I/O and no clock. The
//! instant to price at is always a parameter. That keeps it exhaustively testable (unit tests per rule,
//! property tests over random catalogs) and lets callers price "as of" any time — for a checkout, a
//! preview of next week's promotion, or catching up on changes missed while the box was off.
//!
//! * [`model`] — the data: items, price records, promotions, priced lines, errors, and the wire
//!   payloads (`price.set`, `promotion.upsert`) with their validation.
//! * [`time`] — store times: RFC 3339 instants or store-local civil times, with DST gaps and folds
//!   resolved deterministically.
//! * [`engine`] — the rules: effective price, active promotions, line and basket pricing, the next
//!   price change and the boundary instants the scheduler wakes at.
//!
//! The rules, the decisions on points the rules leave open and worked examples are in `docs/pricing.md`.
//! Money is `i64` minor units throughout; there are no floats anywhere in this module.

pub mod engine;
pub mod model;
pub mod time;

pub use engine::{
    active_promotions, boundaries_between, effective_price, next_boundary, next_price_change,
    price_basket, price_line, quote, round_half_up_div, MAX_EACH_QUANTITY, MAX_GRAMS,
};
pub use model::{
    BasketLine, Item, NextChange, ParseUnitError, PriceQuote, PriceRecord, PriceSetPayload,
    PricedBasket, PricedLine, PricingError, PromoKind, Promotion, PromotionError, PromotionPayload,
    Unit,
};
pub use time::{parse_store_time, resolve_civil, TimeError};
