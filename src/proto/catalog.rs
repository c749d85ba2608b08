//! The catalog vocabulary of the wire (DESIGN §4): units, promotion kinds with their parameters, and
//! the payloads of `price.set` and `promotion.upsert` as they arrive, before a store resolves their
//! times in its own zone. Pure data and pure checks; the store's pricing engine computes with these
//! types and HQ validates with them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How an item is sold: by the piece, or by weight (quantities in grams, prices per kg).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Sold by the piece; quantities are units, prices per unit.
    Each,
    /// Sold by weight; quantities are grams, prices per kilogram.
    Kg,
}

impl Unit {
    /// The wire name: `"each"` or `"kg"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Each => "each",
            Unit::Kg => "kg",
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A unit name other than `each` or `kg`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown unit {0:?} (expected \"each\" or \"kg\")")]
pub struct ParseUnitError(pub String);

impl FromStr for Unit {
    type Err = ParseUnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "each" => Ok(Unit::Each),
            "kg" => Ok(Unit::Kg),
            other => Err(ParseUnitError(other.to_owned())),
        }
    }
}

/// The kind of a promotion and its parameters. Serializes as `{"kind":"…","params":{…}}` (flattened
/// into [`Promotion`]); deserializing validates like [`PromoKind::from_wire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "params", try_from = "PromoKindWire")]
pub enum PromoKind {
    /// `percent_off {percent}`: discount = round_half_up(line_regular × percent / 100). Both units.
    #[serde(rename = "percent_off")]
    PercentOff { percent: u32 },
    /// `amount_off {amount}`: discount = min(amount, unit_price) × quantity. `each` only.
    #[serde(rename = "amount_off")]
    AmountOff { amount: i64 },
    /// `multi_buy {quantity: N, price: P}`: each full group of N units costs P, if P is below the
    /// group's regular price. `each` only.
    #[serde(rename = "multi_buy")]
    MultiBuy { quantity: u32, price: i64 },
    /// `buy_x_get_y {buy: X, get: Y}`: for every full X+Y units, Y are free. `each` only.
    #[serde(rename = "buy_x_get_y")]
    BuyXGetY { buy: u32, get: u32 },
}

/// The unvalidated §4 form of a promotion kind: `"kind"` and `"params"`.
#[derive(Debug, Clone, Deserialize)]
struct PromoKindWire {
    kind: String,
    #[serde(default)]
    params: Value,
}

impl TryFrom<PromoKindWire> for PromoKind {
    type Error = PromotionError;
    fn try_from(w: PromoKindWire) -> Result<Self, Self::Error> {
        PromoKind::from_wire(&w.kind, &w.params)
    }
}

/// A promotion kind or its params that do not satisfy §4/§5; names the kind and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromotionError {
    #[error(
        "unknown promotion kind {kind:?} (expected percent_off, amount_off, multi_buy or buy_x_get_y)"
    )]
    UnknownKind { kind: String },
    #[error("{kind} params must be a JSON object, got {got}")]
    ParamsNotObject { kind: &'static str, got: String },
    #[error("{kind} params: missing field \"{field}\"")]
    MissingField {
        kind: &'static str,
        field: &'static str,
    },
    #[error("{kind} params: field \"{field}\" {reason}")]
    BadField {
        kind: &'static str,
        field: &'static str,
        reason: String,
    },
}

impl PromoKind {
    /// The §4 kind name.
    pub fn name(&self) -> &'static str {
        match self {
            PromoKind::PercentOff { .. } => "percent_off",
            PromoKind::AmountOff { .. } => "amount_off",
            PromoKind::MultiBuy { .. } => "multi_buy",
            PromoKind::BuyXGetY { .. } => "buy_x_get_y",
        }
    }

    /// Whether this kind can discount an item sold in `unit`: `percent_off` applies to both units,
    /// the others to `each` items only.
    pub fn applies_to_unit(&self, unit: Unit) -> bool {
        matches!(self, PromoKind::PercentOff { .. }) || unit == Unit::Each
    }

    /// Builds a kind from the §4 wire form, e.g. `("percent_off", {"percent":20})`, validating the
    /// params: percent 1..=100, amount > 0, multi_buy quantity >= 2 and price >= 0, buy >= 1, get >= 1.
    /// Extra fields in `params` are ignored.
    pub fn from_wire(kind: &str, params: &Value) -> Result<PromoKind, PromotionError> {
        let k = match kind {
            "percent_off" => PromoKind::PercentOff {
                percent: u32_field("percent_off", params, "percent")?,
            },
            "amount_off" => PromoKind::AmountOff {
                amount: int_field("amount_off", params, "amount")?,
            },
            "multi_buy" => PromoKind::MultiBuy {
                quantity: u32_field("multi_buy", params, "quantity")?,
                price: int_field("multi_buy", params, "price")?,
            },
            "buy_x_get_y" => PromoKind::BuyXGetY {
                buy: u32_field("buy_x_get_y", params, "buy")?,
                get: u32_field("buy_x_get_y", params, "get")?,
            },
            other => {
                return Err(PromotionError::UnknownKind {
                    kind: other.to_owned(),
                })
            }
        };
        k.validate()?;
        Ok(k)
    }

    /// The §4 wire form: kind name and params object.
    pub fn to_wire(&self) -> (&'static str, Value) {
        let params = match *self {
            PromoKind::PercentOff { percent } => serde_json::json!({ "percent": percent }),
            PromoKind::AmountOff { amount } => serde_json::json!({ "amount": amount }),
            PromoKind::MultiBuy { quantity, price } => {
                serde_json::json!({ "quantity": quantity, "price": price })
            }
            PromoKind::BuyXGetY { buy, get } => serde_json::json!({ "buy": buy, "get": get }),
        };
        (self.name(), params)
    }

    /// Checks the parameter ranges (the fields are public, so a value built in code may be invalid;
    /// the engine never applies an invalid promotion).
    pub fn validate(&self) -> Result<(), PromotionError> {
        let bad = |field: &'static str, reason: String| PromotionError::BadField {
            kind: self.name(),
            field,
            reason,
        };
        match *self {
            PromoKind::PercentOff { percent } if !(1..=100).contains(&percent) => Err(bad(
                "percent",
                format!("must be an integer from 1 to 100, got {percent}"),
            )),
            PromoKind::AmountOff { amount } if amount <= 0 => Err(bad(
                "amount",
                format!("must be greater than 0, got {amount}"),
            )),
            PromoKind::MultiBuy { quantity, .. } if quantity < 2 => Err(bad(
                "quantity",
                format!("must be at least 2, got {quantity}"),
            )),
            PromoKind::MultiBuy { price, .. } if price < 0 => {
                Err(bad("price", format!("must be 0 or more, got {price}")))
            }
            PromoKind::BuyXGetY { buy, .. } if buy < 1 => {
                Err(bad("buy", format!("must be at least 1, got {buy}")))
            }
            PromoKind::BuyXGetY { get, .. } if get < 1 => {
                Err(bad("get", format!("must be at least 1, got {get}")))
            }
            _ => Ok(()),
        }
    }
}

fn int_field(
    kind: &'static str,
    params: &Value,
    field: &'static str,
) -> Result<i64, PromotionError> {
    let Value::Object(map) = params else {
        return Err(PromotionError::ParamsNotObject {
            kind,
            got: params.to_string(),
        });
    };
    match map.get(field) {
        None | Some(Value::Null) => Err(PromotionError::MissingField { kind, field }),
        Some(v) => v.as_i64().ok_or_else(|| PromotionError::BadField {
            kind,
            field,
            reason: format!("must be an integer, got {v}"),
        }),
    }
}

fn u32_field(
    kind: &'static str,
    params: &Value,
    field: &'static str,
) -> Result<u32, PromotionError> {
    let n = int_field(kind, params, field)?;
    u32::try_from(n).map_err(|_| PromotionError::BadField {
        kind,
        field,
        reason: format!("must be a non-negative integer below 2^32, got {n}"),
    })
}

/// The §4 `price.set` payload as it arrives (times not yet resolved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceSetPayload {
    pub id: String,
    pub sku: String,
    pub price: i64,
    pub starts_at: String,
    #[serde(default)]
    pub ends_at: Option<String>,
}

/// The §4 `promotion.upsert` payload as it arrives (kind unvalidated, times not yet resolved).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromotionPayload {
    pub id: String,
    pub name: String,
    pub kind: String,
    #[serde(default)]
    pub params: Value,
    #[serde(default)]
    pub skus: Vec<String>,
    #[serde(default)]
    pub department: Option<String>,
    pub starts_at: String,
    #[serde(default)]
    pub ends_at: Option<String>,
}
