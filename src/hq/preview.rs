//! The authoring preview (`POST /hq/v1/preview`): what a proposed authoring request would change in
//! each affected store, and when, in the store's own time zone — the week-ahead schedule. Pure
//! functions over what HQ knows (the store's snapshot state and the proposed events); nothing is
//! written. HQ does not use the store's pricing engine: the price rule of docs/pricing.md
//! ("latest `starts_at` wins, ties go to the record received last, `ends_at` exclusive") is small
//! enough to restate here and is tested on its own.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::proto::catalog::PriceSetPayload;
use crate::proto::time::{resolve_civil, StoreTime};
use crate::proto::HqBody;

/// How far ahead the schedule looks.
pub const HORIZON: SignedDuration = SignedDuration::from_hours(7 * 24);
/// At most this many skus per store are listed (the rest are counted in `skus_omitted`).
pub const MAX_SKUS: usize = 200;
/// At most this many price boundaries are listed per sku within the horizon.
pub const MAX_CHANGES: usize = 50;

/// The time zone a preview uses for a store: the one the store reported, else UTC (labelled).
#[derive(Debug, Clone)]
pub struct Zone {
    pub tz: TimeZone,
    pub name: String,
    /// False when HQ has no report of the store's zone and the preview falls back to UTC.
    pub known: bool,
}

impl Zone {
    /// The zone named `name` if HQ knows one and the tz database has it, else UTC (labelled).
    pub fn for_store(name: Option<&str>) -> Zone {
        match name.and_then(|n| TimeZone::get(n).ok().map(|tz| (n, tz))) {
            Some((n, tz)) => Zone {
                tz,
                name: n.to_string(),
                known: true,
            },
            None => Zone {
                tz: TimeZone::UTC,
                name: "UTC".into(),
                known: false,
            },
        }
    }
}

/// One point of a sku's schedule: from `at` (store-local, with offset) the price is `price`
/// (`None`: the sku has no price from then).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PriceStep {
    pub at: String,
    pub price: Option<i64>,
}

/// A sku touched by the proposal: its price now without and with it, and every change within the
/// horizon (with the proposal applied).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SkuSchedule {
    pub sku: String,
    pub price_now_before: Option<i64>,
    pub price_now: Option<i64>,
    pub changes: Vec<PriceStep>,
}

/// A promotion the proposal creates, changes or cancels, with its window in store-local time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromotionChange {
    pub id: String,
    /// `upsert` or `cancel`.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starts: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends: Option<String>,
    /// `active now`, `starts within the week`, `starts later`, `ended` or `cancelled`.
    pub when: &'static str,
}

/// What the proposal changes in one store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StorePreview {
    pub timezone: String,
    pub timezone_known: bool,
    /// The store-local time the schedule starts from.
    pub now: String,
    /// The store-local end of the horizon.
    pub until: String,
    pub skus: Vec<SkuSchedule>,
    pub skus_omitted: usize,
    pub promotions: Vec<PromotionChange>,
    /// `catalog.upsert` / `catalog.delete` skus, notices and other events, by type.
    pub catalog_upserts: Vec<String>,
    pub catalog_deletes: Vec<String>,
    pub notices: usize,
    pub other_events: usize,
}

/// A store time resolved in `zone` (None for text that does not parse, which validation refused).
fn resolve(s: &str, zone: &Zone) -> Option<Timestamp> {
    match StoreTime::parse(s).ok()? {
        StoreTime::Instant(t) => Some(t),
        StoreTime::Civil(dt) => resolve_civil(dt, &zone.tz).ok(),
    }
}

/// `t` as the store's wall clock shows it, with the offset (e.g. `2026-03-29T03:00:00+02:00`).
pub fn local(t: Timestamp, zone: &Zone) -> String {
    t.to_zoned(zone.tz.clone())
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

/// A price record with its times resolved; `order` is arrival order (later wins a tie).
#[derive(Debug, Clone)]
struct Rec {
    id: String,
    sku: String,
    price: i64,
    start: Timestamp,
    end: Option<Timestamp>,
    order: usize,
}

fn effective(recs: &[&Rec], at: Timestamp) -> Option<i64> {
    recs.iter()
        .filter(|r| r.start <= at && r.end.is_none_or(|e| at < e))
        .max_by_key(|r| (r.start, r.order))
        .map(|r| r.price)
}

/// Applies price events in order: a `price.set` replaces a record with its id, `price.cancel`
/// removes it.
fn apply_prices(recs: &mut Vec<Rec>, bodies: &[HqBody], zone: &Zone) {
    for b in bodies {
        match b {
            HqBody::PriceSet(PriceSetPayload {
                id,
                sku,
                price,
                starts_at,
                ends_at,
            }) => {
                recs.retain(|r| &r.id != id);
                let Some(start) = resolve(starts_at, zone) else {
                    continue;
                };
                let end = ends_at.as_deref().and_then(|e| resolve(e, zone));
                let order = recs.iter().map(|r| r.order + 1).max().unwrap_or(0);
                recs.push(Rec {
                    id: id.clone(),
                    sku: sku.clone(),
                    price: *price,
                    start,
                    end,
                    order,
                });
            }
            HqBody::PriceCancel(r) => recs.retain(|x| x.id != r.id),
            _ => {}
        }
    }
}

/// The preview for one store: `current` is what the store already has from HQ (its snapshot, in
/// order), `proposed` the validated events of the request, `now` the instant to look from.
pub fn preview_store(
    now: Timestamp,
    zone: &Zone,
    current: &[HqBody],
    proposed: &[HqBody],
) -> StorePreview {
    let until = now + HORIZON;
    let mut before = Vec::new();
    apply_prices(&mut before, current, zone);
    let mut after = before.clone();
    apply_prices(&mut after, proposed, zone);

    // Skus the proposal touches: those it sets a price for, and those whose record it cancels.
    let mut touched: Vec<String> = Vec::new();
    for b in proposed {
        let sku = match b {
            HqBody::PriceSet(p) => Some(p.sku.clone()),
            HqBody::PriceCancel(r) => before.iter().find(|x| x.id == r.id).map(|x| x.sku.clone()),
            _ => None,
        };
        if let Some(s) = sku {
            if !touched.contains(&s) {
                touched.push(s);
            }
        }
    }
    let skus_omitted = touched.len().saturating_sub(MAX_SKUS);
    touched.truncate(MAX_SKUS);

    let skus = touched
        .into_iter()
        .map(|sku| {
            let old: Vec<&Rec> = before.iter().filter(|r| r.sku == sku).collect();
            let new: Vec<&Rec> = after.iter().filter(|r| r.sku == sku).collect();
            let price_now = effective(&new, now);
            let mut bounds: Vec<Timestamp> = new
                .iter()
                .flat_map(|r| [Some(r.start), r.end])
                .flatten()
                .filter(|t| *t > now && *t <= until)
                .collect();
            bounds.sort();
            bounds.dedup();
            let mut changes = Vec::new();
            let mut last = price_now;
            for t in bounds {
                let p = effective(&new, t);
                if p != last && changes.len() < MAX_CHANGES {
                    changes.push(PriceStep {
                        at: local(t, zone),
                        price: p,
                    });
                }
                last = p;
            }
            SkuSchedule {
                price_now_before: effective(&old, now),
                price_now,
                changes,
                sku,
            }
        })
        .collect();

    let mut out = StorePreview {
        timezone: zone.name.clone(),
        timezone_known: zone.known,
        now: local(now, zone),
        until: local(until, zone),
        skus,
        skus_omitted,
        promotions: Vec::new(),
        catalog_upserts: Vec::new(),
        catalog_deletes: Vec::new(),
        notices: 0,
        other_events: 0,
    };
    for b in proposed {
        match b {
            HqBody::PriceSet(_) | HqBody::PriceCancel(_) => {}
            HqBody::PromotionUpsert(p) => {
                let start = resolve(&p.starts_at, zone);
                let end = p.ends_at.as_deref().and_then(|e| resolve(e, zone));
                let when = match (start, end) {
                    (_, Some(e)) if e <= now => "ended",
                    (Some(s), _) if s <= now => "active now",
                    (Some(s), _) if s <= until => "starts within the week",
                    _ => "starts later",
                };
                out.promotions.push(PromotionChange {
                    id: p.id.clone(),
                    action: "upsert",
                    name: Some(p.name.clone()),
                    starts: start.map(|t| local(t, zone)),
                    ends: end.map(|t| local(t, zone)),
                    when,
                });
            }
            HqBody::PromotionCancel(r) => out.promotions.push(PromotionChange {
                id: r.id.clone(),
                action: "cancel",
                name: None,
                starts: None,
                ends: None,
                when: "cancelled",
            }),
            HqBody::CatalogUpsert(i) => out.catalog_upserts.push(i.sku.clone()),
            HqBody::CatalogDelete(s) => out.catalog_deletes.push(s.sku.clone()),
            HqBody::NoticePost(_) => out.notices += 1,
            _ => out.other_events += 1,
        }
    }
    out.catalog_upserts.truncate(MAX_SKUS);
    out.catalog_deletes.truncate(MAX_SKUS);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::events::IdRef;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn price(id: &str, sku: &str, p: i64, start: &str, end: Option<&str>) -> HqBody {
        HqBody::PriceSet(PriceSetPayload {
            id: id.into(),
            sku: sku.into(),
            price: p,
            starts_at: start.into(),
            ends_at: end.map(Into::into),
        })
    }

    #[test]
    fn civil_times_are_read_in_the_store_zone_and_shown_with_its_offset() {
        let berlin = Zone::for_store(Some("Europe/Berlin"));
        assert!(berlin.known);
        let now = ts("2026-11-30T10:00:00Z");
        let current = [price("base", "apple", 129, "2026-11-01T00:00:00Z", None)];
        let proposed = [price(
            "sale",
            "apple",
            99,
            "2026-12-02T08:00:00",
            Some("2026-12-04T20:00:00"),
        )];
        let p = preview_store(now, &berlin, &current, &proposed);
        assert_eq!(p.timezone, "Europe/Berlin");
        assert_eq!(p.now, "2026-11-30T11:00:00+01:00");
        assert_eq!(p.skus.len(), 1);
        let s = &p.skus[0];
        assert_eq!((s.price_now_before, s.price_now), (Some(129), Some(129)));
        assert_eq!(
            s.changes,
            vec![
                PriceStep {
                    at: "2026-12-02T08:00:00+01:00".into(),
                    price: Some(99)
                },
                PriceStep {
                    at: "2026-12-04T20:00:00+01:00".into(),
                    price: Some(129)
                },
            ]
        );
    }

    #[test]
    fn unknown_zone_falls_back_to_utc_and_says_so() {
        for name in [None, Some("Mars/Olympus")] {
            let z = Zone::for_store(name);
            assert!(!z.known);
            assert_eq!(z.name, "UTC");
        }
        let z = Zone::for_store(None);
        let p = preview_store(
            ts("2026-11-30T10:00:00Z"),
            &z,
            &[],
            &[price("a", "x", 5, "2026-12-01T06:00:00", None)],
        );
        assert!(!p.timezone_known);
        assert_eq!(p.skus[0].price_now, None);
        assert_eq!(p.skus[0].changes[0].at, "2026-12-01T06:00:00+00:00");
    }

    #[test]
    fn dst_change_inside_the_week_shifts_the_offset_and_gap_times_move_to_the_transition() {
        // Europe/Rome springs forward on 2026-03-29 at 02:00 → 03:00.
        let rome = Zone::for_store(Some("Europe/Rome"));
        let now = ts("2026-03-27T12:00:00Z");
        let proposed = [
            price("p1", "milk", 100, "2026-03-28T09:00:00", None),
            price("p2", "milk", 90, "2026-03-30T09:00:00", None),
            // In the gap: means the transition instant, shown as 03:00 summer time.
            price("p3", "bread", 250, "2026-03-29T02:30:00", None),
        ];
        let p = preview_store(now, &rome, &[], &proposed);
        let milk = &p.skus[0];
        assert_eq!(milk.sku, "milk");
        assert_eq!(milk.changes[0].at, "2026-03-28T09:00:00+01:00");
        assert_eq!(milk.changes[1].at, "2026-03-30T09:00:00+02:00");
        assert_eq!(milk.changes[1].price, Some(90));
        let bread = &p.skus[1];
        assert_eq!(bread.changes[0].at, "2026-03-29T03:00:00+02:00");
        // The horizon is 7 × 24 hours, shown in summer time.
        assert_eq!(p.until, "2026-04-03T14:00:00+02:00");
    }

    #[test]
    fn latest_start_wins_ties_go_to_the_later_record_and_cancel_removes() {
        let z = Zone::for_store(Some("UTC"));
        let now = ts("2026-11-30T00:00:00Z");
        let current = [
            price("a", "x", 100, "2026-11-01T00:00:00Z", None),
            price(
                "b",
                "x",
                80,
                "2026-11-20T00:00:00Z",
                Some("2026-12-02T00:00:00Z"),
            ),
        ];
        // Same start as "b": the proposal's record arrives later and wins the tie.
        let proposed = [price(
            "c",
            "x",
            70,
            "2026-11-20T00:00:00Z",
            Some("2026-12-01T00:00:00Z"),
        )];
        let p = preview_store(now, &z, &current, &proposed);
        let s = &p.skus[0];
        assert_eq!((s.price_now_before, s.price_now), (Some(80), Some(70)));
        let prices: Vec<_> = s.changes.iter().map(|c| c.price).collect();
        assert_eq!(prices, vec![Some(80), Some(100)]);

        let cancel = [HqBody::PriceCancel(IdRef { id: "a".into() })];
        let p = preview_store(now, &z, &current, &cancel);
        let s = &p.skus[0];
        assert_eq!(s.sku, "x");
        assert_eq!(s.price_now, Some(80));
        assert_eq!(s.changes[0].price, None, "after b ends nothing is left");
    }

    #[test]
    fn boundaries_beyond_the_week_are_not_listed_and_promotions_are_placed() {
        let z = Zone::for_store(Some("UTC"));
        let now = ts("2026-11-30T00:00:00Z");
        let proposed = [price("far", "x", 1, "2026-12-08T00:00:01Z", None)];
        let p = preview_store(now, &z, &[], &proposed);
        assert!(p.skus[0].changes.is_empty());
        let promo = |id: &str, start: &str| {
            HqBody::PromotionUpsert(crate::proto::catalog::PromotionPayload {
                id: id.into(),
                name: id.into(),
                kind: "percent_off".into(),
                params: serde_json::json!({"percent": 10}),
                skus: vec!["x".into()],
                department: None,
                starts_at: start.into(),
                ends_at: None,
            })
        };
        let p = preview_store(
            now,
            &z,
            &[],
            &[
                promo("a", "2026-11-29T00:00:00"),
                promo("b", "2026-12-03T00:00:00"),
                promo("c", "2026-12-20T00:00:00"),
            ],
        );
        let whens: Vec<_> = p.promotions.iter().map(|x| x.when).collect();
        assert_eq!(
            whens,
            vec!["active now", "starts within the week", "starts later"]
        );
    }
}
