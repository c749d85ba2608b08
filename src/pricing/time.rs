//! Store times (docs/pricing.md): an RFC 3339 instant with an offset, or a store-local civil time without one.
//!
//! A civil time means that wall-clock time in the store's configured time zone. Two civil times need a
//! rule because the wall clock is not a one-to-one map of instants:
//!
//! * **Gap** (clocks jump forward; e.g. Europe/Rome 2026-03-29 02:00 → 03:00): a civil time inside the
//!   gap never happens. The rule says it means the first instant after the gap, which is the transition
//!   instant itself (`2026-03-29T02:30:00` in Rome → `2026-03-29T01:00:00Z`, shown as 03:00 local).
//! * **Fold** (clocks go back; e.g. Europe/Rome 2026-10-25 03:00 → 02:00): a civil time inside the fold
//!   happens twice. We take the **first** occurrence (`2026-10-25T02:30:00` in Rome →
//!   `2026-10-25T00:30:00Z`), so a promotion "from 02:30" starts as soon as the shelf clock first reads
//!   02:30 and one "until 02:30" ends then too.
//!
//! Both rules amount to: a civil time resolves to the earliest instant at which the store's wall clock
//! reads that time or later.

use jiff::tz::TimeZone;
use jiff::Timestamp;

pub use crate::proto::time::{resolve_civil, StoreTime, TimeError};

/// Parses store times (docs/pricing.md): RFC 3339 with offset (`"2026-11-27T00:00:00Z"`, `"…+01:00"`) → that
/// instant; civil time without offset (`"2026-11-27T00:00:00"`) → that wall-clock time in `tz`.
///
/// A civil time in a DST gap means the first instant after the gap (the transition instant itself).
/// A civil time in a DST fold (it occurs twice) means its first occurrence. A date without a time of
/// day and bracketed time zone annotations (`[Europe/Rome]`) are rejected.
pub fn parse_store_time(s: &str, tz: &TimeZone) -> Result<Timestamp, TimeError> {
    match StoreTime::parse(s)? {
        StoreTime::Instant(t) => Ok(t),
        StoreTime::Civil(dt) => resolve_civil(dt, tz).map_err(|e| TimeError::new(s, e.reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::tz::AmbiguousOffset;
    use proptest::prelude::*;

    fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).expect("system tzdb (/usr/share/zoneinfo) has this zone")
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    #[test]
    fn rfc3339_with_offset_is_that_instant() {
        let rome = tz("Europe/Rome");
        assert_eq!(
            parse_store_time("2026-11-27T00:00:00Z", &rome).unwrap(),
            ts("2026-11-27T00:00:00Z")
        );
        assert_eq!(
            parse_store_time("2026-11-27T00:00:00+01:00", &rome).unwrap(),
            ts("2026-11-26T23:00:00Z")
        );
        // The zone is irrelevant when an offset is given.
        assert_eq!(
            parse_store_time("2026-11-27T00:00:00-05:00", &tz("America/New_York")).unwrap(),
            parse_store_time("2026-11-27T00:00:00-05:00", &rome).unwrap()
        );
    }

    #[test]
    fn civil_time_is_wall_clock_in_store_zone() {
        // Winter in Rome is UTC+1 (docs/pricing.md "Store times", example 1).
        assert_eq!(
            parse_store_time("2026-11-27T00:00:00", &tz("Europe/Rome")).unwrap(),
            ts("2026-11-26T23:00:00Z")
        );
        // Summer in Rome is UTC+2.
        assert_eq!(
            parse_store_time("2026-07-01T12:00:00", &tz("Europe/Rome")).unwrap(),
            ts("2026-07-01T10:00:00Z")
        );
        assert_eq!(
            parse_store_time("2026-11-27T00:00:00", &tz("America/New_York")).unwrap(),
            ts("2026-11-27T05:00:00Z")
        );
        assert_eq!(
            parse_store_time("2026-11-27T00:00:00", &TimeZone::UTC).unwrap(),
            ts("2026-11-27T00:00:00Z")
        );
    }

    #[test]
    fn rome_gap_resolves_to_transition_instant() {
        let rome = tz("Europe/Rome");
        // 02:00 → 03:00 on 2026-03-29; the transition is at 01:00Z.
        for civil in [
            "2026-03-29T02:00:00",
            "2026-03-29T02:30:00",
            "2026-03-29T02:59:59",
        ] {
            assert_eq!(
                parse_store_time(civil, &rome).unwrap(),
                ts("2026-03-29T01:00:00Z"),
                "{civil}"
            );
        }
        // Either side of the gap is ordinary.
        assert_eq!(
            parse_store_time("2026-03-29T01:59:59", &rome).unwrap(),
            ts("2026-03-29T00:59:59Z")
        );
        assert_eq!(
            parse_store_time("2026-03-29T03:00:00", &rome).unwrap(),
            ts("2026-03-29T01:00:00Z")
        );
    }

    #[test]
    fn rome_fold_resolves_to_first_occurrence() {
        let rome = tz("Europe/Rome");
        // 03:00 CEST → 02:00 CET on 2026-10-25 (at 01:00Z): 02:00–02:59:59 happen twice.
        assert_eq!(
            parse_store_time("2026-10-25T02:30:00", &rome).unwrap(),
            ts("2026-10-25T00:30:00Z")
        );
        assert_eq!(
            parse_store_time("2026-10-25T02:00:00", &rome).unwrap(),
            ts("2026-10-25T00:00:00Z")
        );
        // The second occurrence is reachable with an explicit offset.
        assert_eq!(
            parse_store_time("2026-10-25T02:30:00+01:00", &rome).unwrap(),
            ts("2026-10-25T01:30:00Z")
        );
        assert_eq!(
            parse_store_time("2026-10-25T03:00:00", &rome).unwrap(),
            ts("2026-10-25T02:00:00Z")
        );
    }

    #[test]
    fn new_york_gap_resolves_to_transition_instant() {
        let ny = tz("America/New_York");
        // 02:00 EST → 03:00 EDT on 2026-03-08, at 07:00Z.
        assert_eq!(
            parse_store_time("2026-03-08T02:30:00", &ny).unwrap(),
            ts("2026-03-08T07:00:00Z")
        );
        assert_eq!(
            parse_store_time("2026-03-08T01:59:59", &ny).unwrap(),
            ts("2026-03-08T06:59:59Z")
        );
    }

    #[test]
    fn new_york_fold_resolves_to_first_occurrence() {
        let ny = tz("America/New_York");
        // 02:00 EDT → 01:00 EST on 2026-11-01, at 06:00Z: 01:00–01:59:59 happen twice.
        assert_eq!(
            parse_store_time("2026-11-01T01:30:00", &ny).unwrap(),
            ts("2026-11-01T05:30:00Z")
        );
        assert_eq!(
            parse_store_time("2026-11-01T01:30:00-05:00", &ny).unwrap(),
            ts("2026-11-01T06:30:00Z")
        );
    }

    #[test]
    fn rejects_bad_input_naming_it() {
        let rome = tz("Europe/Rome");
        for bad in [
            "",
            "tomorrow",
            "2026-11-27",
            "2026-13-01T00:00:00",
            "2026-11-27T25:00:00",
            "2026-11-27T00:00:00[Europe/Rome]",
            "2026-11-27T00:00:00+01:00[Europe/Rome]",
            "2026-11-27T00:00:00 trailing",
        ] {
            let err = parse_store_time(bad, &rome).unwrap_err();
            assert_eq!(err.input, bad);
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("invalid store time {bad:?}: ")),
                "{msg}"
            );
        }
    }

    proptest! {
        /// Any civil second of 2026 resolves to the earliest instant at which the wall clock reads that
        /// time or later: the clock reads >= it at the result and < it one second before.
        #[test]
        fn civil_resolves_to_earliest_instant_at_or_after(
            zone in prop::sample::select(vec!["Europe/Rome", "America/New_York", "UTC", "Australia/Lord_Howe"]),
            secs in 0i64..(365 * 86_400),
        ) {
            let zone = tz(zone);
            let dt = jiff::civil::date(2026, 1, 1).at(0, 0, 0, 0)
                + jiff::SignedDuration::from_secs(secs);
            let got = parse_store_time(&dt.to_string(), &zone).unwrap();
            let at = got.to_zoned(zone.clone()).datetime();
            let before = (got - jiff::SignedDuration::from_secs(1)).to_zoned(zone.clone()).datetime();
            prop_assert!(at >= dt, "{dt} -> {got} reads {at}");
            prop_assert!(before < dt, "{dt} -> {got}, one second earlier reads {before}");
            if at != dt {
                let in_gap = matches!(zone.to_ambiguous_timestamp(dt).offset(), AmbiguousOffset::Gap { .. });
                prop_assert!(in_gap, "{dt} -> {got} reads {at} outside a gap");
            }
        }
    }
}
