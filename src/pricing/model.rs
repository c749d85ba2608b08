//! Pricing data: items, price records, promotions, priced lines, errors and the wire payloads.
//!
//! Types that travel on the wire (API answers, sync payloads, stored JSON) derive serde with the field
//! names of docs/sync-protocol.md and docs/pricing.md. Promotions serialize in the wire shape, `"kind":"percent_off",
//! "params":{"percent":20}`, and are validated when deserialized.

use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::time::{parse_store_time, TimeError};
pub use crate::proto::catalog::{
    ParseUnitError, PriceSetPayload, PromoKind, PromotionError, PromotionPayload, Unit,
};

/// What pricing needs to know about a catalog item. Deserializes from a `catalog.upsert` payload
/// (other fields are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    #[serde(default)]
    pub department: Option<String>,
    pub unit: Unit,
}

/// One `price.set` record, with its times resolved to instants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceRecord {
    pub id: String,
    pub sku: String,
    /// Minor units per unit (`each`) or per kilogram (`kg`).
    pub price: i64,
    pub starts_at: Timestamp,
    /// Exclusive end; `None` = open-ended.
    #[serde(default)]
    pub ends_at: Option<Timestamp>,
    /// Arrival order (monotonically increasing, unique per store); breaks `starts_at` ties: the record
    /// received last wins.
    #[serde(default)]
    pub received: i64,
}

/// A promotion with its times resolved to instants. Serializes in the §4 shape (`kind` and `params`
/// at the top level) with RFC 3339 instants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promotion {
    pub id: String,
    pub name: String,
    #[serde(flatten)]
    pub kind: PromoKind,
    /// Targeted skus; the promotion applies to these and to every item of `department` (union).
    #[serde(default)]
    pub skus: Vec<String>,
    #[serde(default)]
    pub department: Option<String>,
    pub starts_at: Timestamp,
    /// Exclusive end; `None` = open-ended.
    #[serde(default)]
    pub ends_at: Option<Timestamp>,
}

/// One requested basket line: units, or grams for `kg` items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasketLine {
    pub sku: String,
    pub quantity: i64,
}

/// One priced line, as answered by `POST /api/v1/baskets/price`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedLine {
    pub sku: String,
    /// Units, or grams for `kg` items.
    pub quantity: i64,
    /// The effective price: per unit, or per kilogram for `kg` items.
    pub unit_price: i64,
    /// The line before discount.
    pub regular: i64,
    /// 0 ≤ discount ≤ regular.
    pub discount: i64,
    /// The promotion that gave the discount; `None` when no promotion discounts this line.
    pub promotion_id: Option<String>,
    /// regular − discount.
    pub total: i64,
}

/// A priced basket: lines in request order and their sums.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedBasket {
    pub lines: Vec<PricedLine>,
    pub regular: i64,
    pub discount: i64,
    pub total: i64,
}

/// `next_change` of `GET /api/v1/prices/{sku}`: when the effective price next changes and to what
/// (`None` = the sku becomes unpriced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextChange {
    pub at: Timestamp,
    pub price: Option<i64>,
}

/// The pricing part of `GET /api/v1/prices/{sku}?at=T` (the caller adds `currency`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceQuote {
    pub sku: String,
    pub price: i64,
    pub unit: Unit,
    pub price_id: String,
    /// Ids of the promotions active for this item at T, sorted.
    pub promotions: Vec<String>,
    pub next_change: Option<NextChange>,
}

/// Why something could not be priced or a payload could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error("unknown sku {sku:?}")]
    UnknownSku { sku: String },
    #[error("sku {sku:?} has no price at this time and cannot be sold")]
    NoPrice { sku: String },
    #[error("bad quantity {quantity} for sku {sku:?}: {reason}")]
    BadQuantity {
        sku: String,
        quantity: i64,
        reason: String,
    },
    #[error("bad price {price} for sku {sku:?}: prices must be 0 or more minor units")]
    BadPrice { sku: String, price: i64 },
    #[error("amount for sku {sku:?} does not fit in 64-bit minor units")]
    Overflow { sku: String },
    #[error("promotion {id:?}: {source}")]
    BadPromotion {
        id: String,
        #[source]
        source: PromotionError,
    },
    #[error("{field}: {source}")]
    BadTime {
        field: &'static str,
        #[source]
        source: TimeError,
    },
}

impl PricingError {
    /// A stable snake_case code for API errors (`{"error":{"code":…}}`).
    pub fn code(&self) -> &'static str {
        match self {
            PricingError::UnknownSku { .. } => "unknown_sku",
            PricingError::NoPrice { .. } => "no_price",
            PricingError::BadQuantity { .. } => "bad_quantity",
            PricingError::BadPrice { .. } => "bad_price",
            PricingError::Overflow { .. } => "amount_overflow",
            PricingError::BadPromotion { .. } => "bad_promotion",
            PricingError::BadTime { .. } => "bad_time",
        }
    }
}

fn store_time(field: &'static str, s: &str, tz: &TimeZone) -> Result<Timestamp, PricingError> {
    parse_store_time(s, tz).map_err(|source| PricingError::BadTime { field, source })
}

impl PriceSetPayload {
    /// Resolves the times in the store's zone and checks the price (>= 0). `received` is the arrival
    /// order the caller assigns. An `ends_at` at or before `starts_at` is accepted: the record is never
    /// effective.
    pub fn to_record(&self, tz: &TimeZone, received: i64) -> Result<PriceRecord, PricingError> {
        let (starts_at, ends_at) = self.times(|s| parse_store_time(s, tz))?;
        Ok(self.clone().into_record(starts_at, ends_at, received))
    }

    /// The checks of [`PriceSetPayload::to_record`]: the price (>= 0) and the times, each resolved
    /// by `resolve` ([`parse_store_time`] in the store's zone, or a memo of it), as
    /// `(starts_at, ends_at)`.
    pub fn times(
        &self,
        mut resolve: impl FnMut(&str) -> Result<Timestamp, TimeError>,
    ) -> Result<(Timestamp, Option<Timestamp>), PricingError> {
        if self.price < 0 {
            return Err(PricingError::BadPrice {
                sku: self.sku.clone(),
                price: self.price,
            });
        }
        let bad = |field| move |source| PricingError::BadTime { field, source };
        let starts_at = resolve(&self.starts_at).map_err(bad("starts_at"))?;
        let ends_at = match &self.ends_at {
            Some(s) => Some(resolve(s).map_err(bad("ends_at"))?),
            None => None,
        };
        Ok((starts_at, ends_at))
    }

    /// The record, with the times that [`PriceSetPayload::times`] resolved; takes the payload's
    /// strings instead of copying them.
    pub fn into_record(
        self,
        starts_at: Timestamp,
        ends_at: Option<Timestamp>,
        received: i64,
    ) -> PriceRecord {
        PriceRecord {
            id: self.id,
            sku: self.sku,
            price: self.price,
            starts_at,
            ends_at,
            received,
        }
    }
}

impl PromotionPayload {
    /// Validates the kind and params and resolves the times in the store's zone. A promotion with no
    /// skus and no department, or with `ends_at` at or before `starts_at`, is accepted and never
    /// applies.
    pub fn to_promotion(&self, tz: &TimeZone) -> Result<Promotion, PricingError> {
        let kind = PromoKind::from_wire(&self.kind, &self.params).map_err(|source| {
            PricingError::BadPromotion {
                id: self.id.clone(),
                source,
            }
        })?;
        Ok(Promotion {
            id: self.id.clone(),
            name: self.name.clone(),
            kind,
            skus: self.skus.clone(),
            department: self.department.clone(),
            starts_at: store_time("starts_at", &self.starts_at, tz)?,
            ends_at: match &self.ends_at {
                Some(s) => Some(store_time("ends_at", s, tz)?),
                None => None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use serde_json::Value;

    fn rome() -> TimeZone {
        TimeZone::get("Europe/Rome").expect("system tzdb")
    }

    #[test]
    fn unit_wire_names() {
        assert_eq!(serde_json::to_value(Unit::Each).unwrap(), json!("each"));
        assert_eq!(serde_json::to_value(Unit::Kg).unwrap(), json!("kg"));
        assert_eq!(
            serde_json::from_value::<Unit>(json!("kg")).unwrap(),
            Unit::Kg
        );
        assert!(serde_json::from_value::<Unit>(json!("KG")).is_err());
        assert_eq!("each".parse::<Unit>().unwrap(), Unit::Each);
        assert_eq!(
            "lb".parse::<Unit>().unwrap_err().to_string(),
            "unknown unit \"lb\" (expected \"each\" or \"kg\")"
        );
    }

    #[test]
    fn item_from_catalog_upsert_payload() {
        let item: Item = serde_json::from_value(json!({"sku":"1001","name":"Whole milk 1 L",
            "barcodes":["8001234567890"],"department":"dairy","unit":"each"}))
        .unwrap();
        assert_eq!(
            item,
            Item {
                sku: "1001".into(),
                department: Some("dairy".into()),
                unit: Unit::Each
            }
        );
    }

    #[test]
    fn promo_kind_from_wire_all_kinds() {
        assert_eq!(
            PromoKind::from_wire("percent_off", &json!({"percent":20})).unwrap(),
            PromoKind::PercentOff { percent: 20 }
        );
        assert_eq!(
            PromoKind::from_wire("amount_off", &json!({"amount":50})).unwrap(),
            PromoKind::AmountOff { amount: 50 }
        );
        assert_eq!(
            PromoKind::from_wire("multi_buy", &json!({"quantity":3,"price":200})).unwrap(),
            PromoKind::MultiBuy {
                quantity: 3,
                price: 200
            }
        );
        assert_eq!(
            PromoKind::from_wire("buy_x_get_y", &json!({"buy":2,"get":1,"note":"extra ok"}))
                .unwrap(),
            PromoKind::BuyXGetY { buy: 2, get: 1 }
        );
        for k in [
            PromoKind::PercentOff { percent: 100 },
            PromoKind::AmountOff { amount: 1 },
            PromoKind::MultiBuy {
                quantity: 2,
                price: 0,
            },
            PromoKind::BuyXGetY { buy: 1, get: 1 },
        ] {
            let (name, params) = k.to_wire();
            assert_eq!(PromoKind::from_wire(name, &params).unwrap(), k);
        }
    }

    #[test]
    fn promo_kind_validation_names_the_field() {
        let err = |kind: &str, params: Value| {
            PromoKind::from_wire(kind, &params).unwrap_err().to_string()
        };
        assert_eq!(
            err("percent_off", json!({"percent":0})),
            "percent_off params: field \"percent\" must be an integer from 1 to 100, got 0"
        );
        assert!(err("percent_off", json!({"percent":101})).contains("\"percent\""));
        assert!(err("percent_off", json!({"percent":-5})).contains("\"percent\""));
        assert!(err("percent_off", json!({"percent":20.5})).contains("must be an integer"));
        assert!(err("percent_off", json!({"percent":"20"})).contains("must be an integer"));
        assert_eq!(
            err("percent_off", json!({})),
            "percent_off params: missing field \"percent\""
        );
        assert_eq!(
            err("percent_off", json!(20)),
            "percent_off params must be a JSON object, got 20"
        );
        assert!(
            err("amount_off", json!({"amount":0})).contains("\"amount\" must be greater than 0")
        );
        assert!(err("multi_buy", json!({"quantity":1,"price":100})).contains("\"quantity\""));
        assert!(err("multi_buy", json!({"quantity":2,"price":-1})).contains("\"price\""));
        assert!(err("multi_buy", json!({"quantity":2})).contains("missing field \"price\""));
        assert!(err("buy_x_get_y", json!({"buy":0,"get":1})).contains("\"buy\""));
        assert!(err("buy_x_get_y", json!({"buy":2,"get":0})).contains("\"get\""));
        assert!(err("buy_x_get_y", json!({"buy":2,"get":null})).contains("missing field \"get\""));
        assert_eq!(
            err("bogo", json!({})),
            "unknown promotion kind \"bogo\" (expected percent_off, amount_off, multi_buy or buy_x_get_y)"
        );
    }

    #[test]
    fn promotion_payload_from_design_example() {
        // The `promo-bf` example of docs/pricing.md: civil times in the store's zone.
        let payload: PromotionPayload = serde_json::from_value(json!({"id":"promo-bf",
            "name":"Black Friday dairy","kind":"percent_off","params":{"percent":20},"skus":["1001"],
            "department":null,"starts_at":"2026-11-27T00:00:00","ends_at":"2026-11-30T00:00:00"}))
        .unwrap();
        let promo = payload.to_promotion(&rome()).unwrap();
        assert_eq!(promo.kind, PromoKind::PercentOff { percent: 20 });
        assert_eq!(promo.starts_at, "2026-11-26T23:00:00Z".parse().unwrap());
        assert_eq!(promo.ends_at, Some("2026-11-29T23:00:00Z".parse().unwrap()));
        assert_eq!(promo.skus, vec!["1001".to_string()]);
        assert_eq!(promo.department, None);

        // Stored form: wire shape with instants, and it round-trips.
        let v = serde_json::to_value(&promo).unwrap();
        assert_eq!(v["kind"], json!("percent_off"));
        assert_eq!(v["params"], json!({"percent":20}));
        assert_eq!(v["starts_at"], json!("2026-11-26T23:00:00Z"));
        let back: Promotion = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, promo);

        // Deserializing a Promotion validates the params.
        let mut bad = v;
        bad["params"] = json!({"percent":0});
        let e = serde_json::from_value::<Promotion>(bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"percent\""), "{e}");
    }

    #[test]
    fn promotion_payload_errors_name_id_and_field() {
        let mut p = PromotionPayload {
            id: "p1".into(),
            name: "x".into(),
            kind: "multi_buy".into(),
            params: json!({"quantity":1,"price":100}),
            skus: vec![],
            department: Some("dairy".into()),
            starts_at: "2026-11-27T00:00:00".into(),
            ends_at: None,
        };
        let e = p.to_promotion(&rome()).unwrap_err();
        assert_eq!(e.code(), "bad_promotion");
        assert_eq!(
            e.to_string(),
            "promotion \"p1\": multi_buy params: field \"quantity\" must be at least 2, got 1"
        );
        p.params = json!({"quantity":2,"price":100});
        p.ends_at = Some("soon".into());
        let e = p.to_promotion(&rome()).unwrap_err();
        assert_eq!(e.code(), "bad_time");
        assert!(
            e.to_string()
                .starts_with("ends_at: invalid store time \"soon\""),
            "{e}"
        );
    }

    #[test]
    fn price_set_payload_from_design_example() {
        // The `pr-1001-base` example of docs/sync-protocol.md.
        let payload: PriceSetPayload = serde_json::from_value(json!({"id":"pr-1001-base",
            "sku":"1001","price":129,"starts_at":"2026-11-01T00:00:00Z","ends_at":null}))
        .unwrap();
        let rec = payload.to_record(&rome(), 7).unwrap();
        assert_eq!(
            rec,
            PriceRecord {
                id: "pr-1001-base".into(),
                sku: "1001".into(),
                price: 129,
                starts_at: "2026-11-01T00:00:00Z".parse().unwrap(),
                ends_at: None,
                received: 7,
            }
        );
        let neg = PriceSetPayload {
            price: -1,
            ..payload
        };
        assert_eq!(
            neg.to_record(&rome(), 8).unwrap_err(),
            PricingError::BadPrice {
                sku: "1001".into(),
                price: -1
            }
        );
    }

    #[test]
    fn priced_line_wire_shape() {
        let line = PricedLine {
            sku: "1001".into(),
            quantity: 3,
            unit_price: 129,
            regular: 387,
            discount: 77,
            promotion_id: Some("promo-bf".into()),
            total: 310,
        };
        assert_eq!(
            serde_json::to_value(&line).unwrap(),
            json!({"sku":"1001","quantity":3,"unit_price":129,"regular":387,"discount":77,
                "promotion_id":"promo-bf","total":310})
        );
    }

    #[test]
    fn error_messages_and_codes() {
        let e = PricingError::BadQuantity {
            sku: "1001".into(),
            quantity: 0,
            reason: "must be greater than 0".into(),
        };
        assert_eq!(
            e.to_string(),
            "bad quantity 0 for sku \"1001\": must be greater than 0"
        );
        assert_eq!(e.code(), "bad_quantity");
        assert_eq!(PricingError::NoPrice { sku: "9".into() }.code(), "no_price");
        assert_eq!(
            PricingError::UnknownSku { sku: "9".into() }.code(),
            "unknown_sku"
        );
    }
}
