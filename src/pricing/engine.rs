//! The pricing rules (docs/pricing.md): effective price, active promotions, line and basket pricing, price changes.
//!
//! All functions are pure and take the instant as a parameter. Amounts are computed in `i128` and
//! checked back into `i64`, so no input can make them overflow or panic.

use jiff::Timestamp;

use super::model::{
    BasketLine, Item, NextChange, PriceQuote, PriceRecord, PricedBasket, PricedLine, PricingError,
    PromoKind, Promotion, Unit,
};

/// Largest accepted quantity of an `each` item on one line.
pub const MAX_EACH_QUANTITY: i64 = 1_000_000;
/// Largest accepted quantity of a `kg` item on one line, in grams (1000 t).
pub const MAX_GRAMS: i64 = 1_000_000_000;

/// Divides rounding to the nearest integer, .5 away from zero, in exact integer arithmetic.
///
/// `round_half_up_div(5, 2) == 3`, `round_half_up_div(-5, 2) == -3`, `round_half_up_div(7, 3) == 2`.
/// The one quotient that does not fit (`i64::MIN / -1`) saturates to `i64::MAX`.
///
/// # Panics
/// If `denominator` is 0, like integer division.
pub fn round_half_up_div(numerator: i64, denominator: i64) -> i64 {
    let q = div_round_half_up(i128::from(numerator), i128::from(denominator));
    i64::try_from(q).unwrap_or(i64::MAX)
}

/// [`round_half_up_div`] on `i128`; `d` must be non-zero and `n` not `i128::MIN`.
fn div_round_half_up(n: i128, d: i128) -> i128 {
    let q = n / d;
    let r = n % d;
    // |r| >= |d| - |r|  ⇔  2|r| >= |d|, written so it cannot overflow.
    if r != 0 && r.unsigned_abs() >= d.unsigned_abs() - r.unsigned_abs() {
        if (n < 0) == (d < 0) {
            q + 1
        } else {
            q - 1
        }
    } else {
        q
    }
}

fn is_active(starts_at: Timestamp, ends_at: Option<Timestamp>, at: Timestamp) -> bool {
    starts_at <= at && ends_at.is_none_or(|end| at < end)
}

/// Orders candidate records: later `starts_at` wins, then greater `received`, then (only for
/// duplicate arrival numbers, which a store never assigns) greater id and price, so the choice never
/// depends on input order.
fn record_rank(r: &PriceRecord) -> (Timestamp, i64, &str, i64) {
    (r.starts_at, r.received, r.id.as_str(), r.price)
}

fn pick_effective<'a>(
    records: impl IntoIterator<Item = &'a PriceRecord>,
    at: Timestamp,
) -> Option<&'a PriceRecord> {
    records
        .into_iter()
        .filter(|r| is_active(r.starts_at, r.ends_at, at))
        .max_by(|a, b| record_rank(a).cmp(&record_rank(b)))
}

/// Effective price (docs/pricing.md): among records with `starts_at <= at` and (`ends_at` none or
/// `at < ends_at`), the one with the latest `starts_at`; tie → the one with the greatest `received`.
/// `records` are all for one sku. A record with `ends_at <= starts_at` is never effective.
pub fn effective_price(records: &[PriceRecord], at: Timestamp) -> Option<&PriceRecord> {
    pick_effective(records, at)
}

/// Whether `promo` targets `item` (its sku is listed, or its department matches: union).
fn targets(promo: &Promotion, item: &Item) -> bool {
    promo.skus.contains(&item.sku)
        || (promo.department.is_some() && promo.department == item.department)
}

/// The promotions that apply to `item` at `at`, sorted by id: targeted by sku or department (union),
/// active (`starts_at <= at < ends_at`), of a kind that applies to the item's unit and with valid
/// params. This is the `promotions` list of `GET /prices` and the candidates for a line.
pub fn active_promotions<'a>(
    promos: &'a [Promotion],
    item: &Item,
    at: Timestamp,
) -> Vec<&'a Promotion> {
    let mut out: Vec<&Promotion> = promos
        .iter()
        .filter(|p| {
            targets(p, item)
                && is_active(p.starts_at, p.ends_at, at)
                && p.kind.applies_to_unit(item.unit)
                && p.kind.validate().is_ok()
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

fn check_quantity(sku: &str, unit: Unit, quantity: i64) -> Result<(), PricingError> {
    let bad = |reason: String| PricingError::BadQuantity {
        sku: sku.to_owned(),
        quantity,
        reason,
    };
    if quantity <= 0 {
        return Err(bad("must be greater than 0".into()));
    }
    let (max, what) = match unit {
        Unit::Each => (MAX_EACH_QUANTITY, "units"),
        Unit::Kg => (MAX_GRAMS, "grams"),
    };
    if quantity > max {
        return Err(bad(format!("at most {max} {what} per line")));
    }
    Ok(())
}

/// The discount `kind` gives on a line, before clamping to `[0, regular]`. Every factor is bounded
/// (quantity ≤ 10^9, prices and params ≤ 2^63), so `i128` cannot overflow.
fn discount(kind: &PromoKind, unit: Unit, unit_price: i128, quantity: i128, regular: i128) -> i128 {
    match (*kind, unit) {
        (PromoKind::PercentOff { percent }, _) => {
            div_round_half_up(regular * i128::from(percent), 100)
        }
        (PromoKind::AmountOff { amount }, Unit::Each) => {
            i128::from(amount).min(unit_price) * quantity
        }
        (PromoKind::MultiBuy { quantity: n, price }, Unit::Each) => {
            let n = i128::from(n);
            let group_regular = n * unit_price;
            let price = i128::from(price);
            if price < group_regular {
                (quantity / n) * (group_regular - price)
            } else {
                0
            }
        }
        (PromoKind::BuyXGetY { buy, get }, Unit::Each) => {
            let (x, y) = (i128::from(buy), i128::from(get));
            (quantity / (x + y)) * y * unit_price
        }
        // amount_off, multi_buy and buy_x_get_y do not apply to kg items.
        _ => 0,
    }
}

/// Prices one line. regular = unit_price × quantity (`each`) or
/// round_half_up(price_per_kg × grams / 1000) (`kg`). The line gets the single promotion with the
/// largest discount (tie → smallest promotion id; no stacking); a promotion whose discount is 0 is
/// not applied, so a line without a positive discount has `promotion_id: None`. Each discount is
/// capped at the line's regular amount, so the total is never negative.
///
/// `promos` are the candidates already known to target the item and be active (see
/// [`active_promotions`]); kinds that do not apply to the item's unit and invalid params are skipped.
pub fn price_line(
    item: &Item,
    unit_price: i64,
    quantity: i64,
    promos: &[&Promotion],
) -> Result<PricedLine, PricingError> {
    check_quantity(&item.sku, item.unit, quantity)?;
    if unit_price < 0 {
        return Err(PricingError::BadPrice {
            sku: item.sku.clone(),
            price: unit_price,
        });
    }
    let (p, q) = (i128::from(unit_price), i128::from(quantity));
    let regular = match item.unit {
        Unit::Each => p * q,
        Unit::Kg => div_round_half_up(p * q, 1000),
    };
    let overflow = || PricingError::Overflow {
        sku: item.sku.clone(),
    };
    let regular_i64 = i64::try_from(regular).map_err(|_| overflow())?;

    let mut best: Option<(i128, &Promotion)> = None;
    for promo in promos {
        if !promo.kind.applies_to_unit(item.unit) || promo.kind.validate().is_err() {
            continue;
        }
        let d = discount(&promo.kind, item.unit, p, q, regular).clamp(0, regular);
        if d == 0 {
            continue;
        }
        let better = match best {
            None => true,
            Some((bd, bp)) => d > bd || (d == bd && promo.id < bp.id),
        };
        if better {
            best = Some((d, promo));
        }
    }
    let (discount, promotion_id) = match best {
        // 0 <= d <= regular, which fits in i64.
        Some((d, promo)) => (
            i64::try_from(d).map_err(|_| overflow())?,
            Some(promo.id.clone()),
        ),
        None => (0, None),
    };
    Ok(PricedLine {
        sku: item.sku.clone(),
        quantity,
        unit_price,
        regular: regular_i64,
        discount,
        promotion_id,
        total: regular_i64 - discount,
    })
}

/// Prices a basket at `at`. `lookup(sku)` gives the item, its price records and the promotions that
/// may apply to it (the caller loads them from the DB; it is called once per line). Lines are
/// answered in the order given; the same sku on two lines is two lines, priced independently.
///
/// Per line, in this order: unknown sku → `UnknownSku`; bad quantity → `BadQuantity`; no effective
/// price → `NoPrice`. The first failing line fails the basket. Records whose sku differs from the
/// line's are ignored.
pub fn price_basket<F>(
    lines: &[BasketLine],
    at: Timestamp,
    mut lookup: F,
) -> Result<PricedBasket, PricingError>
where
    F: FnMut(&str) -> Option<(Item, Vec<PriceRecord>, Vec<Promotion>)>,
{
    let mut priced = Vec::with_capacity(lines.len());
    let (mut regular, mut discount, mut total) = (0i64, 0i64, 0i64);
    for line in lines {
        let (mut item, records, promos) =
            lookup(&line.sku).ok_or_else(|| PricingError::UnknownSku {
                sku: line.sku.clone(),
            })?;
        item.sku.clone_from(&line.sku);
        check_quantity(&line.sku, item.unit, line.quantity)?;
        let record =
            pick_effective(records.iter().filter(|r| r.sku == line.sku), at).ok_or_else(|| {
                PricingError::NoPrice {
                    sku: line.sku.clone(),
                }
            })?;
        let candidates = active_promotions(&promos, &item, at);
        let p = price_line(&item, record.price, line.quantity, &candidates)?;
        let overflow = || PricingError::Overflow {
            sku: line.sku.clone(),
        };
        regular = regular.checked_add(p.regular).ok_or_else(overflow)?;
        discount = discount.checked_add(p.discount).ok_or_else(overflow)?;
        total = total.checked_add(p.total).ok_or_else(overflow)?;
        priced.push(p);
    }
    Ok(PricedBasket {
        lines: priced,
        regular,
        discount,
        total,
    })
}

/// Next instant strictly after `after` at which the sku's effective price *amount* changes, with the
/// new amount (`None` = becomes unpriced); for `GET /prices` `next_change`. A boundary where another
/// record takes over at the same amount is not a change.
pub fn next_price_change(
    records: &[PriceRecord],
    after: Timestamp,
) -> Option<(Timestamp, Option<i64>)> {
    let current = effective_price(records, after).map(|r| r.price);
    // Between consecutive boundaries the set of active records is constant, so changes happen only
    // at boundaries.
    let mut candidates: Vec<Timestamp> = records
        .iter()
        .flat_map(|r| [Some(r.starts_at), r.ends_at])
        .flatten()
        .filter(|t| *t > after)
        .collect();
    candidates.sort_unstable();
    candidates.dedup();
    candidates.into_iter().find_map(|t| {
        let price = effective_price(records, t).map(|r| r.price);
        (price != current).then_some((t, price))
    })
}

/// All boundary instants (`starts_at` and `ends_at` of records and promotions) in `(from, to]`,
/// sorted and deduplicated: the instants at which the scheduler wakes to announce changes.
pub fn boundaries_between(
    records: &[PriceRecord],
    promos: &[Promotion],
    from: Timestamp,
    to: Timestamp,
) -> Vec<Timestamp> {
    let mut out: Vec<Timestamp> = records
        .iter()
        .flat_map(|r| [Some(r.starts_at), r.ends_at])
        .chain(promos.iter().flat_map(|p| [Some(p.starts_at), p.ends_at]))
        .flatten()
        .filter(|t| from < *t && *t <= to)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The first boundary (`starts_at` or `ends_at` of a record or promotion) strictly after `after`:
/// everything a price answer says (effective record, active promotions, next change) stays the same
/// from `after` until that instant, so an answer computed at `after` may be served until then.
pub fn next_boundary(
    records: &[PriceRecord],
    promos: &[Promotion],
    after: Timestamp,
) -> Option<Timestamp> {
    records
        .iter()
        .flat_map(|r| [Some(r.starts_at), r.ends_at])
        .chain(promos.iter().flat_map(|p| [Some(p.starts_at), p.ends_at]))
        .flatten()
        .filter(|t| *t > after)
        .min()
}

/// The pricing part of `GET /api/v1/prices/{sku}?at=T`: effective price, active promotion ids and
/// the next change. `NoPrice` when the sku has no effective price at `at`.
pub fn quote(
    item: &Item,
    records: &[PriceRecord],
    promos: &[Promotion],
    at: Timestamp,
) -> Result<PriceQuote, PricingError> {
    let record = effective_price(records, at).ok_or_else(|| PricingError::NoPrice {
        sku: item.sku.clone(),
    })?;
    Ok(PriceQuote {
        sku: item.sku.clone(),
        price: record.price,
        unit: item.unit,
        price_id: record.id.clone(),
        promotions: active_promotions(promos, item, at)
            .into_iter()
            .map(|p| p.id.clone())
            .collect(),
        next_change: next_price_change(records, at).map(|(at, price)| NextChange { at, price }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    fn each(sku: &str) -> Item {
        Item {
            sku: sku.into(),
            department: Some("dairy".into()),
            unit: Unit::Each,
        }
    }

    fn kg(sku: &str) -> Item {
        Item {
            sku: sku.into(),
            department: Some("produce".into()),
            unit: Unit::Kg,
        }
    }

    fn rec(id: &str, price: i64, starts: &str, ends: Option<&str>, received: i64) -> PriceRecord {
        PriceRecord {
            id: id.into(),
            sku: "1001".into(),
            price,
            starts_at: ts(starts),
            ends_at: ends.map(ts),
            received,
        }
    }

    fn promo(id: &str, kind: PromoKind) -> Promotion {
        Promotion {
            id: id.into(),
            name: id.into(),
            kind,
            skus: vec!["1001".into()],
            department: None,
            starts_at: ts("2026-01-01T00:00:00Z"),
            ends_at: None,
        }
    }

    fn line(item: &Item, price: i64, qty: i64, promos: &[Promotion]) -> PricedLine {
        let refs: Vec<&Promotion> = promos.iter().collect();
        price_line(item, price, qty, &refs).unwrap()
    }

    // ---- rounding ----

    #[test]
    fn round_half_up_div_rounds_half_away_from_zero() {
        assert_eq!(round_half_up_div(5, 2), 3);
        assert_eq!(round_half_up_div(-5, 2), -3);
        assert_eq!(round_half_up_div(5, -2), -3);
        assert_eq!(round_half_up_div(-5, -2), 3);
        assert_eq!(round_half_up_div(7, 3), 2);
        assert_eq!(round_half_up_div(8, 3), 3);
        assert_eq!(round_half_up_div(-7, 3), -2);
        assert_eq!(round_half_up_div(0, 7), 0);
        assert_eq!(round_half_up_div(1499, 1000), 1);
        assert_eq!(round_half_up_div(1500, 1000), 2);
        assert_eq!(round_half_up_div(i64::MAX, 1), i64::MAX);
        assert_eq!(round_half_up_div(i64::MIN, 1), i64::MIN);
        assert_eq!(round_half_up_div(i64::MIN, -1), i64::MAX);
        assert_eq!(round_half_up_div(i64::MAX, i64::MAX), 1);
        assert_eq!(round_half_up_div(i64::MAX, 2), i64::MAX / 2 + 1);
    }

    // ---- effective price ----

    #[test]
    fn effective_price_latest_start_wins() {
        // docs/pricing.md "Effective price" example.
        let records = [
            rec("base", 129, "2026-11-01T00:00:00Z", None, 1),
            rec(
                "bf",
                99,
                "2026-11-27T00:00:00Z",
                Some("2026-11-30T00:00:00Z"),
                2,
            ),
        ];
        let at = |s| effective_price(&records, ts(s)).map(|r| r.id.as_str());
        assert_eq!(at("2026-10-31T23:59:59Z"), None);
        assert_eq!(at("2026-11-01T00:00:00Z"), Some("base"));
        assert_eq!(at("2026-11-27T00:00:00Z"), Some("bf"));
        assert_eq!(at("2026-11-29T23:59:59Z"), Some("bf"));
        // ends_at is exclusive: the base price is back at 30 Nov 00:00.
        assert_eq!(at("2026-11-30T00:00:00Z"), Some("base"));
    }

    #[test]
    fn effective_price_tie_goes_to_last_received() {
        let records = [
            rec("late", 110, "2026-11-01T00:00:00Z", None, 9),
            rec("early", 100, "2026-11-01T00:00:00Z", None, 3),
        ];
        assert_eq!(
            effective_price(&records, ts("2026-11-02T00:00:00Z"))
                .unwrap()
                .id,
            "late"
        );
    }

    #[test]
    fn effective_price_empty_or_inverted_interval_is_never_effective() {
        let records = [
            rec("base", 129, "2026-11-01T00:00:00Z", None, 1),
            rec(
                "empty",
                1,
                "2026-11-05T00:00:00Z",
                Some("2026-11-05T00:00:00Z"),
                2,
            ),
            rec(
                "inverted",
                2,
                "2026-11-06T00:00:00Z",
                Some("2026-11-05T12:00:00Z"),
                3,
            ),
        ];
        for t in [
            "2026-11-05T00:00:00Z",
            "2026-11-05T12:00:00Z",
            "2026-11-06T00:00:00Z",
        ] {
            assert_eq!(effective_price(&records, ts(t)).unwrap().id, "base", "{t}");
        }
    }

    #[test]
    fn effective_price_none_when_all_ended() {
        let records = [rec(
            "p",
            129,
            "2026-11-01T00:00:00Z",
            Some("2026-11-02T00:00:00Z"),
            1,
        )];
        assert!(effective_price(&records, ts("2026-11-02T00:00:00Z")).is_none());
        assert!(effective_price(&[], ts("2026-11-02T00:00:00Z")).is_none());
    }

    #[test]
    fn effective_price_later_start_beats_later_received() {
        // A record that started later wins even if an older-starting record arrived after it.
        let records = [
            rec("newer-start", 120, "2026-11-10T00:00:00Z", None, 1),
            rec("older-start", 100, "2026-11-01T00:00:00Z", None, 2),
        ];
        assert_eq!(
            effective_price(&records, ts("2026-11-11T00:00:00Z"))
                .unwrap()
                .id,
            "newer-start"
        );
    }

    // ---- active promotions ----

    #[test]
    fn active_promotions_sku_or_department_union_and_window() {
        let mut by_sku = promo("a-sku", PromoKind::PercentOff { percent: 10 });
        by_sku.starts_at = ts("2026-11-27T00:00:00Z");
        by_sku.ends_at = Some(ts("2026-11-30T00:00:00Z"));
        let mut by_dept = promo("b-dept", PromoKind::AmountOff { amount: 5 });
        by_dept.skus.clear();
        by_dept.department = Some("dairy".into());
        let mut other_dept = promo("c-other", PromoKind::AmountOff { amount: 5 });
        other_dept.skus = vec!["2002".into()];
        other_dept.department = Some("bakery".into());
        let mut untargeted = promo("d-none", PromoKind::AmountOff { amount: 5 });
        untargeted.skus.clear();
        let promos = [other_dept, by_dept, by_sku, untargeted];
        let ids = |item: &Item, t: &str| -> Vec<String> {
            active_promotions(&promos, item, ts(t))
                .into_iter()
                .map(|p| p.id.clone())
                .collect()
        };
        assert_eq!(ids(&each("1001"), "2026-11-26T23:59:59Z"), ["b-dept"]);
        assert_eq!(
            ids(&each("1001"), "2026-11-27T00:00:00Z"),
            ["a-sku", "b-dept"]
        );
        assert_eq!(ids(&each("1001"), "2026-11-30T00:00:00Z"), ["b-dept"]);
        // An item with no department is matched by sku only: `department: None` never matches.
        let no_dept = Item {
            department: None,
            ..each("1001")
        };
        assert_eq!(ids(&no_dept, "2026-11-28T00:00:00Z"), ["a-sku"]);
        assert_eq!(
            ids(&each("2002"), "2026-11-28T00:00:00Z"),
            ["b-dept", "c-other"]
        );
    }

    #[test]
    fn active_promotions_skip_kinds_not_for_kg() {
        let mut promos = vec![
            promo("amount", PromoKind::AmountOff { amount: 5 }),
            promo(
                "multi",
                PromoKind::MultiBuy {
                    quantity: 2,
                    price: 1,
                },
            ),
            promo("bxgy", PromoKind::BuyXGetY { buy: 1, get: 1 }),
            promo("pct", PromoKind::PercentOff { percent: 10 }),
        ];
        for p in &mut promos {
            p.skus = vec!["apples".into()];
        }
        let got = active_promotions(&promos, &kg("apples"), ts("2026-06-01T00:00:00Z"));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, "pct");
    }

    // ---- line pricing: one test per rule ----

    #[test]
    fn regular_each_and_kg() {
        // docs/pricing.md "Weighed items": 1.49/kg × 1234 g = 183.866 → 184.
        let l = line(&kg("apples"), 149, 1234, &[]);
        assert_eq!((l.regular, l.discount, l.total), (184, 0, 184));
        assert_eq!(l.promotion_id, None);
        // Exactly .5 rounds up: 1.00/kg × 5 g = 0.5 → 1.
        assert_eq!(line(&kg("apples"), 100, 5, &[]).regular, 1);
        assert_eq!(line(&kg("apples"), 100, 4, &[]).regular, 0);
        let l = line(&each("1001"), 129, 3, &[]);
        assert_eq!((l.unit_price, l.regular, l.total), (129, 387, 387));
    }

    #[test]
    fn percent_off_each() {
        // docs/pricing.md "percent_off": 3 × 1.29 = 3.87, 20 % = 0.774 → 0.77.
        let l = line(
            &each("1001"),
            129,
            3,
            &[promo("bf", PromoKind::PercentOff { percent: 20 })],
        );
        assert_eq!((l.regular, l.discount, l.total), (387, 77, 310));
        assert_eq!(l.promotion_id.as_deref(), Some("bf"));
        // .5 rounds up: 25 % of 2 × 0.05 = 0.025 → 0.03.
        let l = line(
            &each("1001"),
            5,
            2,
            &[promo("p", PromoKind::PercentOff { percent: 25 })],
        );
        assert_eq!(l.discount, 3);
        // 100 % makes the line free.
        let l = line(
            &each("1001"),
            129,
            3,
            &[promo("p", PromoKind::PercentOff { percent: 100 })],
        );
        assert_eq!((l.discount, l.total), (387, 0));
    }

    #[test]
    fn percent_off_kg_rounds_the_rounded_regular() {
        // docs/pricing.md "Weighed items": 184 × 15 % = 27.6 → 28.
        let mut p = promo("p", PromoKind::PercentOff { percent: 15 });
        p.skus = vec!["apples".into()];
        let l = line(&kg("apples"), 149, 1234, &[p]);
        assert_eq!((l.regular, l.discount, l.total), (184, 28, 156));
    }

    #[test]
    fn amount_off_capped_at_unit_price() {
        // docs/pricing.md "amount_off": 0.30 off each of 4 × 1.29.
        let l = line(
            &each("1001"),
            129,
            4,
            &[promo("a", PromoKind::AmountOff { amount: 30 })],
        );
        assert_eq!((l.regular, l.discount, l.total), (516, 120, 396));
        // An amount above the unit price makes the item free, never negative.
        let l = line(
            &each("1001"),
            129,
            4,
            &[promo("a", PromoKind::AmountOff { amount: 500 })],
        );
        assert_eq!((l.discount, l.total), (516, 0));
    }

    #[test]
    fn amount_off_not_for_kg() {
        let mut p = promo("a", PromoKind::AmountOff { amount: 30 });
        p.skus = vec!["apples".into()];
        let l = line(&kg("apples"), 149, 1000, &[p]);
        assert_eq!((l.discount, l.promotion_id), (0, None));
    }

    #[test]
    fn multi_buy_full_groups_only() {
        // docs/pricing.md "multi_buy": 3 for 3.00 at 1.29, 7 units = 2 groups + 1.
        let p = promo(
            "m",
            PromoKind::MultiBuy {
                quantity: 3,
                price: 300,
            },
        );
        let l = line(&each("1001"), 129, 7, std::slice::from_ref(&p));
        assert_eq!((l.regular, l.discount, l.total), (903, 174, 729));
        // Fewer than N units: no group, no discount.
        let l = line(&each("1001"), 129, 2, &[p]);
        assert_eq!((l.discount, l.promotion_id), (0, None));
    }

    #[test]
    fn multi_buy_only_if_below_group_regular() {
        // 3 for 3.87 at 1.29 is not a saving (3 × 1.29 = 3.87): not applied.
        let l = line(
            &each("1001"),
            129,
            6,
            &[promo(
                "m",
                PromoKind::MultiBuy {
                    quantity: 3,
                    price: 387,
                },
            )],
        );
        assert_eq!((l.discount, l.promotion_id), (0, None));
        let l = line(
            &each("1001"),
            129,
            6,
            &[promo(
                "m",
                PromoKind::MultiBuy {
                    quantity: 3,
                    price: 500,
                },
            )],
        );
        assert_eq!((l.discount, l.total), (0, 774));
        // Price 0: the groups are free.
        let l = line(
            &each("1001"),
            129,
            6,
            &[promo(
                "m",
                PromoKind::MultiBuy {
                    quantity: 3,
                    price: 0,
                },
            )],
        );
        assert_eq!(l.total, 0);
    }

    #[test]
    fn buy_x_get_y_free_units_per_full_group() {
        // docs/pricing.md "buy_x_get_y": buy 2 get 1, 7 units = 2 groups of 3 → 2 free.
        let p = promo("b", PromoKind::BuyXGetY { buy: 2, get: 1 });
        let l = line(&each("1001"), 129, 7, std::slice::from_ref(&p));
        assert_eq!((l.regular, l.discount, l.total), (903, 258, 645));
        // 2 units: no full group of 3, no free unit.
        assert_eq!(line(&each("1001"), 129, 2, &[p]).discount, 0);
        let l = line(
            &each("1001"),
            129,
            4,
            &[promo("b", PromoKind::BuyXGetY { buy: 1, get: 1 })],
        );
        assert_eq!(l.discount, 258);
    }

    #[test]
    fn multi_buy_groups_do_not_span_lines() {
        // docs/pricing.md "multi_buy": the same sku on two lines is two lines; 2 + 2 units with
        // "3 for 3.00" make no full group on either line.
        let cat: HashMap<&str, _> = [(
            "1001",
            (
                each("1001"),
                vec![rec("base", 129, "2026-11-01T00:00:00Z", None, 1)],
                vec![promo(
                    "m",
                    PromoKind::MultiBuy {
                        quantity: 3,
                        price: 300,
                    },
                )],
            ),
        )]
        .into();
        let two = BasketLine {
            sku: "1001".into(),
            quantity: 2,
        };
        let b = price_basket(&[two.clone(), two], ts("2026-11-02T00:00:00Z"), |s| {
            cat.get(s).cloned()
        })
        .unwrap();
        assert_eq!((b.regular, b.discount, b.total), (516, 0, 516));
        let four = BasketLine {
            sku: "1001".into(),
            quantity: 4,
        };
        let b = price_basket(&[four], ts("2026-11-02T00:00:00Z"), |s| cat.get(s).cloned()).unwrap();
        assert_eq!((b.regular, b.discount, b.total), (516, 87, 429));
    }

    #[test]
    fn best_single_promotion_wins_no_stacking() {
        // docs/pricing.md "Choosing the promotion": 7 × 1.29.
        let promos = [
            promo("pct", PromoKind::PercentOff { percent: 20 }), // 181
            promo(
                "multi",
                PromoKind::MultiBuy {
                    quantity: 3,
                    price: 300,
                },
            ), // 174
            promo("bxgy", PromoKind::BuyXGetY { buy: 2, get: 1 }), // 258
        ];
        let l = line(&each("1001"), 129, 7, &promos);
        assert_eq!((l.discount, l.total), (258, 645));
        assert_eq!(l.promotion_id.as_deref(), Some("bxgy"));
    }

    #[test]
    fn tie_goes_to_smallest_promotion_id() {
        // 10 % of 10.00 = 1.00 = amount_off 1.00 on one unit.
        let promos = [
            promo("z-pct", PromoKind::PercentOff { percent: 10 }),
            promo("a-amount", PromoKind::AmountOff { amount: 100 }),
        ];
        let l = line(&each("1001"), 1000, 1, &promos);
        assert_eq!(
            (l.discount, l.promotion_id.as_deref()),
            (100, Some("a-amount"))
        );
        let reversed = [promos[1].clone(), promos[0].clone()];
        assert_eq!(line(&each("1001"), 1000, 1, &reversed), l);
    }

    #[test]
    fn zero_discount_promotion_is_not_applied() {
        // 10 % of 0.04 = 0.004 → 0: the line shows no promotion.
        let l = line(
            &each("1001"),
            4,
            1,
            &[promo("p", PromoKind::PercentOff { percent: 10 })],
        );
        assert_eq!((l.discount, l.promotion_id), (0, None));
        // Free item: nothing to discount.
        let l = line(
            &each("1001"),
            0,
            3,
            &[promo("a", PromoKind::AmountOff { amount: 10 })],
        );
        assert_eq!((l.regular, l.discount, l.promotion_id), (0, 0, None));
    }

    #[test]
    fn invalid_promotion_params_are_ignored() {
        let promos = [
            promo("bad", PromoKind::PercentOff { percent: 250 }),
            promo("neg", PromoKind::AmountOff { amount: -50 }),
        ];
        let l = line(&each("1001"), 129, 3, &promos);
        assert_eq!((l.discount, l.promotion_id), (0, None));
    }

    #[test]
    fn bad_quantities_are_rejected() {
        let err = |item: &Item, q: i64| price_line(item, 129, q, &[]).unwrap_err();
        for q in [0, -1, i64::MIN] {
            assert!(
                matches!(err(&each("1001"), q), PricingError::BadQuantity { quantity, .. } if quantity == q)
            );
        }
        assert!(matches!(
            err(&each("1001"), MAX_EACH_QUANTITY + 1),
            PricingError::BadQuantity { .. }
        ));
        assert!(price_line(&each("1001"), 129, MAX_EACH_QUANTITY, &[]).is_ok());
        assert!(matches!(
            err(&kg("apples"), MAX_GRAMS + 1),
            PricingError::BadQuantity { .. }
        ));
        assert!(price_line(&kg("apples"), 129, MAX_GRAMS, &[]).is_ok());
        assert_eq!(
            err(&each("1001"), 0).to_string(),
            "bad quantity 0 for sku \"1001\": must be greater than 0"
        );
        assert_eq!(
            err(&kg("apples"), MAX_GRAMS + 1).to_string(),
            "bad quantity 1000000001 for sku \"apples\": at most 1000000000 grams per line"
        );
    }

    #[test]
    fn huge_amounts_are_errors_not_panics() {
        let e = price_line(&each("1001"), i64::MAX, 2, &[]).unwrap_err();
        assert_eq!(e, PricingError::Overflow { sku: "1001".into() });
        // Fits exactly.
        let l = price_line(
            &each("1001"),
            i64::MAX,
            1,
            &[&promo("p", PromoKind::PercentOff { percent: 100 })],
        )
        .unwrap();
        assert_eq!((l.regular, l.discount, l.total), (i64::MAX, i64::MAX, 0));
        let l = price_line(&kg("x"), i64::MAX, 1000, &[]).unwrap();
        assert_eq!(l.regular, i64::MAX);
        let l = price_line(
            &each("1001"),
            i64::MAX,
            1,
            &[&promo(
                "m",
                PromoKind::MultiBuy {
                    quantity: u32::MAX,
                    price: 0,
                },
            )],
        )
        .unwrap();
        assert_eq!(l.discount, 0);
        assert_eq!(
            price_line(&each("1001"), -1, 1, &[]).unwrap_err(),
            PricingError::BadPrice {
                sku: "1001".into(),
                price: -1
            }
        );
        // Sums across lines are checked too.
        let lines = [
            BasketLine {
                sku: "1001".into(),
                quantity: 1,
            },
            BasketLine {
                sku: "1001".into(),
                quantity: 1,
            },
        ];
        let e = price_basket(&lines, ts("2026-11-02T00:00:00Z"), |_| {
            Some((
                each("1001"),
                vec![rec("p", i64::MAX, "2026-11-01T00:00:00Z", None, 1)],
                vec![],
            ))
        })
        .unwrap_err();
        assert_eq!(e.code(), "amount_overflow");
    }

    // ---- basket ----

    fn catalog() -> HashMap<String, (Item, Vec<PriceRecord>, Vec<Promotion>)> {
        let mut bf = promo("promo-bf", PromoKind::PercentOff { percent: 20 });
        bf.starts_at = ts("2026-11-26T23:00:00Z");
        bf.ends_at = Some(ts("2026-11-29T23:00:00Z"));
        let mut apples_price = rec("pr-apples", 249, "2026-11-01T00:00:00Z", None, 2);
        apples_price.sku = "apples".into();
        let mut produce = promo("promo-produce", PromoKind::PercentOff { percent: 10 });
        produce.skus.clear();
        produce.department = Some("produce".into());
        let mut m = HashMap::new();
        m.insert(
            "1001".to_string(),
            (
                each("1001"),
                vec![rec("pr-1001-base", 129, "2026-11-01T00:00:00Z", None, 1)],
                vec![bf],
            ),
        );
        m.insert(
            "apples".to_string(),
            (kg("apples"), vec![apples_price], vec![produce]),
        );
        m.insert("unpriced".to_string(), (each("unpriced"), vec![], vec![]));
        m
    }

    #[test]
    fn basket_black_friday_example() {
        // docs/pricing.md "A basket": milk during Black Friday (Rome 27 Nov 10:00 = 09:00Z) plus
        // apples, and milk again on a second line.
        let cat = catalog();
        let lines = [
            BasketLine {
                sku: "1001".into(),
                quantity: 3,
            },
            BasketLine {
                sku: "apples".into(),
                quantity: 1234,
            },
            BasketLine {
                sku: "1001".into(),
                quantity: 1,
            },
        ];
        let b = price_basket(&lines, ts("2026-11-27T09:00:00Z"), |s| cat.get(s).cloned()).unwrap();
        let got: Vec<_> = b
            .lines
            .iter()
            .map(|l| {
                (
                    l.sku.as_str(),
                    l.regular,
                    l.discount,
                    l.promotion_id.as_deref(),
                    l.total,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("1001", 387, 77, Some("promo-bf"), 310),
                ("apples", 307, 31, Some("promo-produce"), 276),
                ("1001", 129, 26, Some("promo-bf"), 103),
            ]
        );
        assert_eq!((b.regular, b.discount, b.total), (823, 134, 689));
        // After Black Friday (ends Rome 30 Nov 00:00 = 29 Nov 23:00Z) milk is back to regular.
        let b = price_basket(&lines, ts("2026-11-29T23:00:00Z"), |s| cat.get(s).cloned()).unwrap();
        assert_eq!(
            (b.lines[0].discount, b.lines[0].promotion_id.as_deref()),
            (0, None)
        );
    }

    #[test]
    fn basket_errors_in_order() {
        let cat = catalog();
        let at = ts("2026-11-27T09:00:00Z");
        let price = |sku: &str, q: i64| {
            price_basket(
                &[BasketLine {
                    sku: sku.into(),
                    quantity: q,
                }],
                at,
                |s| cat.get(s).cloned(),
            )
            .unwrap_err()
        };
        assert_eq!(
            price("nope", 0),
            PricingError::UnknownSku { sku: "nope".into() }
        );
        assert_eq!(
            price("unpriced", 1),
            PricingError::NoPrice {
                sku: "unpriced".into()
            }
        );
        assert_eq!(price("unpriced", 0).code(), "bad_quantity");
        assert_eq!(price("1001", -2).code(), "bad_quantity");
        // Before any price record starts the sku is unpriced.
        let e = price_basket(
            &[BasketLine {
                sku: "1001".into(),
                quantity: 1,
            }],
            ts("2026-10-01T00:00:00Z"),
            |s| cat.get(s).cloned(),
        )
        .unwrap_err();
        assert_eq!(e.code(), "no_price");
    }

    #[test]
    fn empty_basket_is_zero() {
        let b = price_basket(&[], ts("2026-11-27T09:00:00Z"), |_| None).unwrap();
        assert_eq!(
            (b.lines.len(), b.regular, b.discount, b.total),
            (0, 0, 0, 0)
        );
    }

    // ---- next change, boundaries, quote ----

    #[test]
    fn next_price_change_walks_the_schedule() {
        // docs/pricing.md "Next change".
        let records = [
            rec("base", 129, "2026-11-01T00:00:00Z", None, 1),
            rec(
                "bf",
                99,
                "2026-11-27T00:00:00Z",
                Some("2026-11-30T00:00:00Z"),
                2,
            ),
            rec("same", 129, "2026-12-01T00:00:00Z", None, 3),
            rec("rise", 139, "2027-01-01T00:00:00Z", None, 4),
        ];
        let next = |s| next_price_change(&records, ts(s));
        assert_eq!(
            next("2026-10-01T00:00:00Z"),
            Some((ts("2026-11-01T00:00:00Z"), Some(129)))
        );
        assert_eq!(
            next("2026-11-01T00:00:00Z"),
            Some((ts("2026-11-27T00:00:00Z"), Some(99)))
        );
        assert_eq!(
            next("2026-11-28T00:00:00Z"),
            Some((ts("2026-11-30T00:00:00Z"), Some(129)))
        );
        // "same" takes over at the same amount: not a change.
        assert_eq!(
            next("2026-11-30T00:00:00Z"),
            Some((ts("2027-01-01T00:00:00Z"), Some(139)))
        );
        assert_eq!(next("2027-01-01T00:00:00Z"), None);
        let ending = [rec(
            "p",
            129,
            "2026-11-01T00:00:00Z",
            Some("2026-11-02T00:00:00Z"),
            1,
        )];
        assert_eq!(
            next_price_change(&ending, ts("2026-11-01T12:00:00Z")),
            Some((ts("2026-11-02T00:00:00Z"), None))
        );
    }

    /// A base price, a Black Friday price (27th–30th) and a 10 % promotion from `promo_start` to
    /// December 1st.
    fn black_friday(promo_start: &str) -> ([PriceRecord; 2], Promotion) {
        let records = [
            rec("base", 129, "2026-11-01T00:00:00Z", None, 1),
            rec(
                "bf",
                99,
                "2026-11-27T00:00:00Z",
                Some("2026-11-30T00:00:00Z"),
                2,
            ),
        ];
        let mut p = promo("p", PromoKind::PercentOff { percent: 10 });
        p.starts_at = ts(promo_start);
        p.ends_at = Some(ts("2026-12-01T00:00:00Z"));
        (records, p)
    }

    #[test]
    fn boundaries_between_is_half_open_sorted_dedup() {
        let (records, p) = black_friday("2026-11-27T00:00:00Z");
        let got = boundaries_between(
            &records,
            &[p],
            ts("2026-11-01T00:00:00Z"),
            ts("2026-11-30T00:00:00Z"),
        );
        assert_eq!(
            got,
            [ts("2026-11-27T00:00:00Z"), ts("2026-11-30T00:00:00Z")]
        );
        let all = boundaries_between(
            &records,
            &[],
            ts("2026-10-31T00:00:00Z"),
            ts("2030-01-01T00:00:00Z"),
        );
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn next_boundary_covers_records_and_promotions() {
        let (records, p) = black_friday("2026-11-20T00:00:00Z");
        let promos = [p];
        let nb = |at: &str| next_boundary(&records, &promos, ts(at));
        // A promotion start is a boundary even though the price record does not change there.
        assert_eq!(nb("2026-11-10T00:00:00Z"), Some(ts("2026-11-20T00:00:00Z")));
        // Strictly after: at a boundary instant, the next one.
        assert_eq!(nb("2026-11-27T00:00:00Z"), Some(ts("2026-11-30T00:00:00Z")));
        assert_eq!(nb("2026-11-30T00:00:00Z"), Some(ts("2026-12-01T00:00:00Z")));
        // Nothing ahead: the answer holds until the data changes.
        assert_eq!(nb("2026-12-01T00:00:00Z"), None);
    }

    #[test]
    fn quote_for_get_prices() {
        let cat = catalog();
        let (item, records, promos) = &cat["1001"];
        let q = quote(item, records, promos, ts("2026-11-27T09:00:00Z")).unwrap();
        assert_eq!(
            serde_json::to_value(&q).unwrap(),
            serde_json::json!({"sku":"1001","price":129,"unit":"each","price_id":"pr-1001-base",
                "promotions":["promo-bf"],"next_change":null})
        );
        assert_eq!(
            quote(item, records, promos, ts("2026-10-01T00:00:00Z")).unwrap_err(),
            PricingError::NoPrice { sku: "1001".into() }
        );
    }

    // ---- properties ----

    const SKUS: [&str; 5] = ["s0", "s1", "s2", "s3", "s4"]; // s4 is not in the catalog

    fn t(hours: i64) -> Timestamp {
        ts("2026-11-01T00:00:00Z") + jiff::SignedDuration::from_hours(hours)
    }

    fn arb_kind() -> impl Strategy<Value = PromoKind> {
        prop_oneof![
            (1u32..=100).prop_map(|percent| PromoKind::PercentOff { percent }),
            (1i64..300).prop_map(|amount| PromoKind::AmountOff { amount }),
            (2u32..6, 0i64..1000)
                .prop_map(|(quantity, price)| PromoKind::MultiBuy { quantity, price }),
            (1u32..4, 1u32..4).prop_map(|(buy, get)| PromoKind::BuyXGetY { buy, get }),
        ]
    }

    fn arb_window() -> impl Strategy<Value = (Timestamp, Option<Timestamp>)> {
        (0i64..24, prop::option::of(0i64..24)).prop_map(|(s, e)| (t(s), e.map(t)))
    }

    fn arb_records(sku: &'static str) -> impl Strategy<Value = Vec<PriceRecord>> {
        prop::collection::vec((0i64..500, arb_window()), 0..5).prop_map(move |v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (price, (starts_at, ends_at)))| PriceRecord {
                    id: format!("{sku}-r{i}"),
                    sku: sku.into(),
                    price,
                    starts_at,
                    ends_at,
                    received: i as i64,
                })
                .collect()
        })
    }

    fn arb_promos() -> impl Strategy<Value = Vec<Promotion>> {
        prop::collection::vec(
            (
                arb_kind(),
                prop::collection::vec(prop::sample::select(SKUS.to_vec()), 0..3),
                prop::option::of(prop::sample::select(vec!["d0", "d1"])),
                arb_window(),
            ),
            0..6,
        )
        .prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (kind, skus, dept, (starts_at, ends_at)))| Promotion {
                    id: format!("p{i}"),
                    name: format!("promo {i}"),
                    kind,
                    skus: skus.into_iter().map(String::from).collect(),
                    department: dept.map(String::from),
                    starts_at,
                    ends_at,
                })
                .collect()
        })
    }

    type Catalog = HashMap<String, (Item, Vec<PriceRecord>, Vec<Promotion>)>;

    fn arb_catalog() -> impl Strategy<Value = Catalog> {
        let item = |sku: &'static str| {
            (
                prop::sample::select(vec![Unit::Each, Unit::Kg]),
                prop::option::of(prop::sample::select(vec!["d0", "d1"])),
                arb_records(sku),
                prop::bool::weighted(0.9),
            )
                .prop_map(move |(unit, dept, mut records, base)| {
                    // Mostly priced, so that most baskets price and the properties bite.
                    if base {
                        records.push(PriceRecord {
                            id: format!("{sku}-base"),
                            sku: sku.into(),
                            price: 150,
                            starts_at: t(0),
                            ends_at: None,
                            received: -1,
                        });
                    }
                    (
                        Item {
                            sku: sku.into(),
                            department: dept.map(String::from),
                            unit,
                        },
                        records,
                    )
                })
        };
        (item("s0"), item("s1"), item("s2"), item("s3"), arb_promos()).prop_map(
            |(a, b, c, d, promos)| {
                [a, b, c, d]
                    .into_iter()
                    .map(|(item, records)| (item.sku.clone(), (item, records, promos.clone())))
                    .collect()
            },
        )
    }

    fn arb_lines() -> impl Strategy<Value = Vec<BasketLine>> {
        prop::collection::vec(
            (
                prop_oneof![19 => prop::sample::select(SKUS[..4].to_vec()), 1 => Just(SKUS[4])],
                1i64..3000,
            )
                .prop_map(|(sku, quantity)| BasketLine {
                    sku: sku.into(),
                    quantity,
                }),
            0..8,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn basket_sums_and_bounds(cat in arb_catalog(), lines in arb_lines(), h in 0i64..26) {
            let r = price_basket(&lines, t(h), |s| cat.get(s).cloned());
            let Ok(b) = r else {
                return Ok(());
            };
            prop_assert_eq!(b.lines.len(), lines.len());
            prop_assert_eq!(b.total, b.lines.iter().map(|l| l.total).sum::<i64>());
            prop_assert_eq!(b.regular, b.lines.iter().map(|l| l.regular).sum::<i64>());
            prop_assert_eq!(b.discount, b.lines.iter().map(|l| l.discount).sum::<i64>());
            prop_assert!(0 <= b.discount && b.discount <= b.regular);
            prop_assert_eq!(b.total, b.regular - b.discount);
            for (l, req) in b.lines.iter().zip(&lines) {
                prop_assert_eq!(&l.sku, &req.sku);
                prop_assert_eq!(l.quantity, req.quantity);
                prop_assert!(0 <= l.discount && l.discount <= l.regular, "{:?}", l);
                prop_assert_eq!(l.total, l.regular - l.discount);
                prop_assert_eq!(l.promotion_id.is_some(), l.discount > 0);
            }
        }

        #[test]
        fn quote_holds_until_next_boundary(cat in arb_catalog(), minutes in 0i64..(26 * 60)) {
            let at = t(0) + jiff::SignedDuration::from_mins(minutes);
            for (item, records, promos) in cat.values() {
                let q = quote(item, records, promos, at);
                let until = next_boundary(records, promos, at)
                    .unwrap_or(at + jiff::SignedDuration::from_hours(24 * 400));
                let span = until.duration_since(at);
                for k in 1..=4 {
                    // Probes through the interval, the last one 1 ms before its end.
                    let probe = if k == 4 {
                        until - jiff::SignedDuration::from_millis(1)
                    } else {
                        at + span / 4 * k
                    };
                    prop_assert_eq!(&quote(item, records, promos, probe), &q, "at {} probe {}", at, probe);
                }
                // And at the boundary itself something may change: the answer is not reused there.
                prop_assert!(until > at);
            }
        }

        #[test]
        fn basket_independent_of_line_order(
            cat in arb_catalog(),
            (lines, perm) in arb_lines().prop_flat_map(|l| {
                let n = l.len();
                (Just(l), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
            }),
            h in 0i64..26,
        ) {
            let shuffled: Vec<BasketLine> = perm.iter().map(|&i| lines[i].clone()).collect();
            let a = price_basket(&lines, t(h), |s| cat.get(s).cloned());
            let b = price_basket(&shuffled, t(h), |s| cat.get(s).cloned());
            match (a, b) {
                (Ok(a), Ok(b)) => {
                    let expected: Vec<PricedLine> = perm.iter().map(|&i| a.lines[i].clone()).collect();
                    prop_assert_eq!(b.lines, expected);
                    prop_assert_eq!((a.regular, a.discount, a.total), (b.regular, b.discount, b.total));
                }
                (Err(_), Err(_)) => {}
                (a, b) => prop_assert!(false, "one order priced, the other failed: {:?} / {:?}", a, b),
            }
        }

        #[test]
        fn line_gets_the_best_single_promotion(
            kinds in prop::collection::vec(arb_kind(), 0..6),
            unit in prop::sample::select(vec![Unit::Each, Unit::Kg]),
            price in 0i64..2000,
            qty in 1i64..3000,
        ) {
            let item = Item { sku: "1001".into(), department: None, unit };
            let promos: Vec<Promotion> = kinds.into_iter().enumerate()
                .map(|(i, k)| promo(&format!("p{i}"), k)).collect();
            let refs: Vec<&Promotion> = promos.iter().collect();
            let l = price_line(&item, price, qty, &refs).unwrap();
            let alone: Vec<i64> = promos.iter()
                .map(|p| price_line(&item, price, qty, &[p]).unwrap().discount).collect();
            prop_assert_eq!(l.discount, alone.iter().copied().max().unwrap_or(0));
            if let Some(id) = &l.promotion_id {
                let first_best = promos.iter().zip(&alone).find(|(_, d)| **d == l.discount).unwrap().0;
                prop_assert_eq!(id, &first_best.id);
            }
        }

        #[test]
        fn effective_price_independent_of_record_order(
            records in arb_records("1001").prop_shuffle(),
            h in 0i64..26,
        ) {
            let mut sorted = records.clone();
            sorted.sort_by_key(|r| r.received);
            let a = effective_price(&records, t(h)).map(|r| r.id.clone());
            let b = effective_price(&sorted, t(h)).map(|r| r.id.clone());
            prop_assert_eq!(a, b);
        }

        #[test]
        fn next_price_change_matches_brute_force(records in arb_records("1001"), h in 0i64..26) {
            // Every boundary is on a whole hour, so checking whole hours finds every change.
            let price_at = |k: i64| effective_price(&records, t(k)).map(|r| r.price);
            let expected = (h + 1..30).find(|&k| price_at(k) != price_at(h)).map(|k| (t(k), price_at(k)));
            prop_assert_eq!(next_price_change(&records, t(h)), expected);
        }

        #[test]
        fn round_half_up_div_is_nearest_with_ties_away(n in any::<i64>(), d in any::<i64>().prop_filter("non-zero", |d| *d != 0)) {
            prop_assume!(!(n == i64::MIN && d == -1));
            let q = i128::from(round_half_up_div(n, d));
            let (n, d) = (i128::from(n), i128::from(d));
            let err2 = (2 * (n - q * d)).abs(); // 2|n/d - q| × |d|
            prop_assert!(err2 <= d.abs(), "not nearest: {} / {} -> {}", n, d, q);
            if err2 == d.abs() {
                // A tie: q is the one further from zero.
                prop_assert!(q.abs() * d.abs() > n.abs(), "tie not away from zero: {} / {} -> {}", n, d, q);
            }
        }
    }
}
