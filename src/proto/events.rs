//! The event types of sync protocol v1 as Rust types: the HQ → store events ([`HqEventType`], their
//! payloads parsed into [`HqBody`]) and the store → HQ events ([`StoreEventType`]). Parsing an event
//! is validating it: [`validate`] is the one function that says whether an HQ event is acceptable,
//! used by HQ when it is authored and by the store before it applies it (the store adds only what
//! needs its own time zone). No database, no I/O.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::catalog::{PriceSetPayload, PromoKind, PromotionPayload, Unit};
use super::time::StoreTime;

/// An HQ event as it travels in an authoring request, an import file (one per line) or, with a
/// sequence number, in the feed: DESIGN §4 wire shape. The payload stays JSON until
/// [`HqEvent::body`] parses it, so that one bad event can be named and quarantined without
/// failing the page it came in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HqEvent {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub payload: Value,
}

impl HqEvent {
    pub fn new(id: Option<String>, body: &HqBody) -> HqEvent {
        let (t, payload) = body.to_wire();
        HqEvent {
            id,
            event_type: t.as_str().to_string(),
            payload,
        }
    }

    /// The typed payload, fully validated ([`validate`]).
    pub fn body(&self) -> Result<HqBody, String> {
        validate(&self.event_type, &self.payload)
    }
}

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $wire)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire),+
                }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown event type {other:?}; expected one of {}",
                        [$($wire),+].join(", ")
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// HQ → store event types (DESIGN §4).
    HqEventType {
        CatalogUpsert = "catalog.upsert",
        CatalogDelete = "catalog.delete",
        PriceSet = "price.set",
        PriceCancel = "price.cancel",
        PromotionUpsert = "promotion.upsert",
        PromotionCancel = "promotion.cancel",
        NoticePost = "notice.post",
        TicketUpdate = "ticket.update",
        ReleaseAssign = "release.assign",
        ReleaseWithdraw = "release.withdraw",
        GuideUpsert = "guide.upsert",
        GuideDelete = "guide.delete",
    }
);

wire_enum!(
    /// Store → HQ event types. `sync.quarantined` reports an HQ event the store refused.
    StoreEventType {
        CheckoutCompleted = "checkout.completed",
        DeviceAlert = "device.alert",
        DeviceStatus = "device.status",
        TelemetryRollup = "telemetry.rollup",
        TicketOpened = "ticket.opened",
        ReleaseStatus = "release.status",
        SyncQuarantined = "sync.quarantined",
    }
);

impl HqEventType {
    /// Catalog, price and promotion events: the store's catalog state, kept by HQ for snapshots.
    pub fn is_catalog(self) -> bool {
        matches!(
            self,
            HqEventType::CatalogUpsert
                | HqEventType::CatalogDelete
                | HqEventType::PriceSet
                | HqEventType::PriceCancel
                | HqEventType::PromotionUpsert
                | HqEventType::PromotionCancel
        )
    }
}

/// `catalog.upsert` payload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CatalogItem {
    pub sku: String,
    pub name: String,
    #[serde(default)]
    pub barcodes: Vec<String>,
    #[serde(default)]
    pub department: Option<String>,
    pub unit: Unit,
    #[serde(default)]
    pub attributes: serde_json::Map<String, Value>,
}

/// `catalog.delete` payload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SkuRef {
    pub sku: String,
}

/// `price.cancel` / `promotion.cancel` payload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IdRef {
    pub id: String,
}

/// `notice.post` payload: a message for staff displays (`store/notice`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Notice {
    pub message: String,
    /// Other fields (e.g. `severity`) travel to the displays as they are.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

pub const NOTICE_MAX_BYTES: usize = 4096;

/// `ticket.update` payload: HQ's reply to a store's ticket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TicketUpdate {
    pub ticket_id: String,
    pub message: String,
    #[serde(default = "hq_author")]
    pub author: String,
    /// `open`, `answered` or `closed`; absent keeps the status (a reply alone makes it `answered`).
    #[serde(default)]
    pub status: Option<String>,
}

fn hq_author() -> String {
    "HQ support".into()
}

pub const TICKET_STATUSES: [&str; 3] = ["open", "answered", "closed"];

pub use super::release::{ReleaseAssign, ReleaseWithdraw};

/// `guide.upsert` payload: a short support guide (Markdown) that HQ writes for device alert codes
/// and ticket categories; stores show it to staff next to a matching alert or ticket form.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Guide {
    pub id: String,
    pub title: String,
    /// CommonMark; raw HTML in it is shown as text, never rendered.
    pub body: String,
    /// Device alert codes (`device.alert` `code`) this guide is for.
    #[serde(default)]
    pub alert_codes: Vec<String>,
    /// Ticket categories ([`TICKET_CATEGORIES`]) this guide is for.
    #[serde(default)]
    pub ticket_categories: Vec<String>,
}

pub const GUIDE_MAX_BODY_BYTES: usize = 16 * 1024;
const GUIDE_MAX_KEYS: usize = 32;

/// What store staff pick when they open a ticket; HQ routes tickets by it.
pub const TICKET_CATEGORIES: [&str; 7] = [
    "pos", "scale", "printer", "fridge", "network", "prices", "other",
];

impl Guide {
    fn check(&self) -> Result<(), String> {
        check_id("guide id", &self.id)?;
        let e = |m: String| Err(format!("guide.upsert {}: {m}", self.id));
        if self.title.trim().is_empty() || self.title.chars().count() > 200 {
            return e("title must be 1-200 characters".into());
        }
        if self.body.trim().is_empty() || self.body.len() > GUIDE_MAX_BODY_BYTES {
            return e(format!("body must be 1-{GUIDE_MAX_BODY_BYTES} bytes"));
        }
        if self.alert_codes.is_empty() && self.ticket_categories.is_empty() {
            return e(
                "give alert_codes, ticket_categories or both: a guide for nothing is never shown"
                    .into(),
            );
        }
        if self.alert_codes.len() > GUIDE_MAX_KEYS || self.ticket_categories.len() > GUIDE_MAX_KEYS
        {
            return e(format!(
                "at most {GUIDE_MAX_KEYS} alert codes and {GUIDE_MAX_KEYS} categories"
            ));
        }
        for c in &self.alert_codes {
            check_id("alert code", c)?;
        }
        if let Some(c) = self
            .ticket_categories
            .iter()
            .find(|c| !TICKET_CATEGORIES.contains(&c.as_str()))
        {
            return e(format!(
                "ticket category {c:?} is not one of {}",
                TICKET_CATEGORIES.join(", ")
            ));
        }
        Ok(())
    }
}

/// An HQ event's payload, parsed and checked: one variant per [`HqEventType`].
#[derive(Debug, Clone, PartialEq)]
pub enum HqBody {
    CatalogUpsert(CatalogItem),
    CatalogDelete(SkuRef),
    PriceSet(PriceSetPayload),
    PriceCancel(IdRef),
    PromotionUpsert(PromotionPayload),
    PromotionCancel(IdRef),
    NoticePost(Notice),
    TicketUpdate(TicketUpdate),
    ReleaseAssign(ReleaseAssign),
    ReleaseWithdraw(ReleaseWithdraw),
    GuideUpsert(Guide),
    GuideDelete(IdRef),
}

/// Ids, skus and barcodes: 1-128 characters without spaces or control characters.
pub fn check_id(what: &str, id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "{what} {id:?} must be 1-128 characters without spaces or control characters"
        ));
    }
    Ok(())
}

/// Store ids and group names: 1-64 letters, digits, '-' or '_'.
pub fn check_name(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "{what} {s:?} must be 1-64 characters of letters, digits, '-' or '_'"
        ));
    }
    Ok(())
}

fn parse_payload<'v, T: Deserialize<'v>>(
    event_type: HqEventType,
    payload: &'v Value,
) -> Result<T, String> {
    // Fast path without path tracking; a payload that fails is parsed again to name the field.
    if let Ok(v) = T::deserialize(payload) {
        return Ok(v);
    }
    serde_path_to_error::deserialize(payload).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!(" at {path}")
        };
        format!("{event_type} payload{at}: {}", e.inner())
    })
}

impl HqBody {
    /// Parses a payload of type `event_type` and checks everything about it that does not depend
    /// on a store's time zone: ids, names, barcodes, price, promotion kind and params, notice and
    /// ticket fields. Store times are checked by [`HqBody::check_times`]; [`validate`] does both.
    /// The error names the event type and the field.
    pub fn from_wire(event_type: &str, payload: &Value) -> Result<HqBody, String> {
        let t: HqEventType = event_type.parse()?;
        Ok(match t {
            HqEventType::CatalogUpsert => {
                let item: CatalogItem = parse_payload(t, payload)?;
                check_id("sku", &item.sku)?;
                if item.name.trim().is_empty() || item.name.chars().count() > 256 {
                    return Err(format!(
                        "catalog.upsert {}: name must be 1-256 characters",
                        item.sku
                    ));
                }
                for b in &item.barcodes {
                    check_id("barcode", b)?;
                }
                HqBody::CatalogUpsert(item)
            }
            HqEventType::CatalogDelete => HqBody::CatalogDelete(parse_payload(t, payload)?),
            HqEventType::PriceSet => {
                let p: PriceSetPayload = parse_payload(t, payload)?;
                check_id("price id", &p.id)?;
                check_id("sku", &p.sku)?;
                if p.price < 0 {
                    return Err(format!(
                        "price.set {}: price {} for sku {} is negative",
                        p.id, p.price, p.sku
                    ));
                }
                HqBody::PriceSet(p)
            }
            HqEventType::PriceCancel => HqBody::PriceCancel(parse_payload(t, payload)?),
            HqEventType::PromotionUpsert => {
                let p: PromotionPayload = parse_payload(t, payload)?;
                check_id("promotion id", &p.id)?;
                for s in &p.skus {
                    check_id("sku", s)?;
                }
                PromoKind::from_wire(&p.kind, &p.params)
                    .map_err(|e| format!("promotion.upsert {}: {e}", p.id))?;
                HqBody::PromotionUpsert(p)
            }
            HqEventType::PromotionCancel => HqBody::PromotionCancel(parse_payload(t, payload)?),
            HqEventType::NoticePost => {
                let n: Notice = parse_payload(t, payload).map_err(|_| notice_error())?;
                if n.message.trim().is_empty() || n.message.len() > NOTICE_MAX_BYTES {
                    return Err(notice_error());
                }
                HqBody::NoticePost(n)
            }
            HqEventType::TicketUpdate => {
                let u: TicketUpdate = parse_payload(t, payload)?;
                if let Some(s) = &u.status {
                    if !TICKET_STATUSES.contains(&s.as_str()) {
                        return Err(format!(
                            "ticket.update status: {s:?} is not one of open, answered, closed"
                        ));
                    }
                }
                if u.ticket_id.is_empty() {
                    return Err("ticket.update payload: \"ticket_id\" must not be empty".into());
                }
                HqBody::TicketUpdate(u)
            }
            HqEventType::ReleaseAssign => {
                let r: ReleaseAssign = parse_payload(t, payload)?;
                r.check()?;
                HqBody::ReleaseAssign(r)
            }
            HqEventType::ReleaseWithdraw => {
                let w: ReleaseWithdraw = parse_payload(t, payload)?;
                w.check()?;
                HqBody::ReleaseWithdraw(w)
            }
            HqEventType::GuideUpsert => {
                let g: Guide = parse_payload(t, payload)?;
                g.check()?;
                HqBody::GuideUpsert(g)
            }
            HqEventType::GuideDelete => {
                let r: IdRef = parse_payload(t, payload)?;
                check_id("guide id", &r.id)?;
                HqBody::GuideDelete(r)
            }
        })
    }

    /// Checks the form of every store time in the payload (instants or store-local civil times).
    pub fn check_times(&self) -> Result<(), String> {
        let (id, starts, ends, what) = match self {
            HqBody::PriceSet(p) => (&p.id, &p.starts_at, &p.ends_at, "price.set"),
            HqBody::PromotionUpsert(p) => (&p.id, &p.starts_at, &p.ends_at, "promotion.upsert"),
            _ => return Ok(()),
        };
        let check = |field: &str, s: &str| {
            StoreTime::parse(s)
                .map(|_| ())
                .map_err(|e| format!("{what} {id}: {field}: {e}"))
        };
        check("starts_at", starts)?;
        if let Some(e) = ends {
            check("ends_at", e)?;
        }
        Ok(())
    }

    pub fn event_type(&self) -> HqEventType {
        match self {
            HqBody::CatalogUpsert(_) => HqEventType::CatalogUpsert,
            HqBody::CatalogDelete(_) => HqEventType::CatalogDelete,
            HqBody::PriceSet(_) => HqEventType::PriceSet,
            HqBody::PriceCancel(_) => HqEventType::PriceCancel,
            HqBody::PromotionUpsert(_) => HqEventType::PromotionUpsert,
            HqBody::PromotionCancel(_) => HqEventType::PromotionCancel,
            HqBody::NoticePost(_) => HqEventType::NoticePost,
            HqBody::TicketUpdate(_) => HqEventType::TicketUpdate,
            HqBody::ReleaseAssign(_) => HqEventType::ReleaseAssign,
            HqBody::ReleaseWithdraw(_) => HqEventType::ReleaseWithdraw,
            HqBody::GuideUpsert(_) => HqEventType::GuideUpsert,
            HqBody::GuideDelete(_) => HqEventType::GuideDelete,
        }
    }

    /// The wire form: type and payload.
    pub fn to_wire(&self) -> (HqEventType, Value) {
        let v = match self {
            HqBody::CatalogUpsert(p) => serde_json::to_value(p),
            HqBody::CatalogDelete(p) => serde_json::to_value(p),
            HqBody::PriceSet(p) => serde_json::to_value(p),
            HqBody::PriceCancel(p) => serde_json::to_value(p),
            HqBody::PromotionUpsert(p) => serde_json::to_value(p),
            HqBody::PromotionCancel(p) => serde_json::to_value(p),
            HqBody::NoticePost(p) => serde_json::to_value(p),
            HqBody::TicketUpdate(p) => serde_json::to_value(p),
            HqBody::ReleaseAssign(p) => serde_json::to_value(p),
            HqBody::ReleaseWithdraw(p) => serde_json::to_value(p),
            HqBody::GuideUpsert(p) => serde_json::to_value(p),
            HqBody::GuideDelete(p) => serde_json::to_value(p),
        };
        // These types serialize to JSON objects without fallible parts.
        (self.event_type(), v.unwrap_or(Value::Null))
    }

    /// The key of the catalog record an event writes or removes, and whether it leaves the record
    /// live (HQ keeps the latest event per key for snapshots); `None` for non-catalog events.
    pub fn state_key(&self) -> Option<(String, bool)> {
        Some(match self {
            HqBody::CatalogUpsert(p) => (format!("item:{}", p.sku), true),
            HqBody::CatalogDelete(p) => (format!("item:{}", p.sku), false),
            HqBody::PriceSet(p) => (format!("price:{}", p.id), true),
            HqBody::PriceCancel(p) => (format!("price:{}", p.id), false),
            HqBody::PromotionUpsert(p) => (format!("promo:{}", p.id), true),
            HqBody::PromotionCancel(p) => (format!("promo:{}", p.id), false),
            HqBody::GuideUpsert(g) => (format!("guide:{}", g.id), true),
            HqBody::GuideDelete(p) => (format!("guide:{}", p.id), false),
            _ => return None,
        })
    }
}

fn notice_error() -> String {
    format!("notice.post payload: \"message\" must be a string of 1-{NOTICE_MAX_BYTES} bytes")
}

/// Whether an HQ event is acceptable: what HQ accepts, every store can apply (a store refuses
/// only what this refuses, and quarantines it). The error names the type and the field.
pub fn validate(event_type: &str, payload: &Value) -> Result<HqBody, String> {
    let body = HqBody::from_wire(event_type, payload)?;
    body.check_times()?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_type_round_trips_through_its_wire_name() {
        for t in HqEventType::ALL {
            assert_eq!(t.as_str().parse::<HqEventType>().unwrap(), *t);
        }
        for t in StoreEventType::ALL {
            assert_eq!(t.as_str().parse::<StoreEventType>().unwrap(), *t);
        }
        let e = "teleport".parse::<HqEventType>().unwrap_err();
        assert!(e.contains("teleport") && e.contains("price.set"), "{e}");
    }

    #[test]
    fn validation_names_the_field_and_accepts_the_design_examples() {
        let ok = [
            (
                "catalog.upsert",
                json!({"sku":"1001","name":"Whole milk 1 L","barcodes":["8001234567890"],"department":"dairy","unit":"each"}),
            ),
            (
                "price.set",
                json!({"id":"pr-1001-base","sku":"1001","price":129,"starts_at":"2026-11-01T00:00:00Z","ends_at":null}),
            ),
            (
                "promotion.upsert",
                json!({"id":"promo-bf","name":"Black Friday dairy","kind":"percent_off","params":{"percent":20},"skus":["1001"],"department":null,"starts_at":"2026-11-27T00:00:00","ends_at":"2026-11-30T00:00:00"}),
            ),
            ("price.cancel", json!({"id":"pr-1001-base"})),
            (
                "notice.post",
                json!({"message":"Inventory tonight","severity":"info"}),
            ),
            (
                "ticket.update",
                json!({"ticket_id":"t-1","message":"On it","status":"answered"}),
            ),
            (
                "release.assign",
                super::super::release::tests::assign_json(),
            ),
            (
                "release.withdraw",
                json!({"rollout":"r-1","version":"1.2.3","reason":"failure threshold reached"}),
            ),
        ];
        for (t, p) in ok {
            let body = validate(t, &p).unwrap_or_else(|e| panic!("{t}: {e}"));
            let (wt, wp) = body.to_wire();
            assert_eq!(wt.as_str(), t);
            assert_eq!(validate(t, &wp).unwrap(), body, "{t} round-trips");
        }
        let bad = [
            (
                "price.set",
                json!({"id":"p","sku":"1","price":-5,"starts_at":"2026-11-01T00:00:00Z"}),
                "-5",
            ),
            (
                "price.set",
                json!({"id":"p","sku":"1","price":5,"starts_at":"tomorrow"}),
                "tomorrow",
            ),
            (
                "catalog.upsert",
                json!({"sku":"1","name":"x","unit":"litre"}),
                "unit",
            ),
            (
                "catalog.upsert",
                json!({"sku":"a b","name":"x","unit":"each"}),
                "sku",
            ),
            (
                "promotion.upsert",
                json!({"id":"p","name":"x","kind":"percent_off","params":{"percent":150},"starts_at":"2026-11-01T00:00:00"}),
                "percent",
            ),
            ("notice.post", json!({"message":""}), "message"),
            (
                "ticket.update",
                json!({"ticket_id":"t","message":"m","status":"lost"}),
                "lost",
            ),
            (
                "release.assign",
                json!({"version":"0.2.0"}),
                "missing field",
            ),
            (
                "release.withdraw",
                json!({"rollout":"","version":"1.2.3"}),
                "rollout",
            ),
            ("teleport", json!({}), "unknown event type"),
        ];
        for (t, p, needle) in bad {
            let e = validate(t, &p).unwrap_err();
            assert!(e.contains(needle), "{t}: {e:?} should name {needle:?}");
        }
    }
}
