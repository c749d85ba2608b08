//! Store times on the wire (DESIGN §5): an RFC 3339 instant with an offset, or a store-local civil
//! time without one. This module only reads the text; a store resolves a civil time in its own zone
//! (`pricing::time`), while HQ, which serves stores in many zones, checks the form alone.

use std::fmt;

use jiff::civil::DateTime;
use jiff::fmt::temporal::Pieces;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::Timestamp;

/// A store time that could not be parsed or resolved; names the input and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TimeError {
    /// The text that was given.
    pub input: String,
    /// Why it was rejected.
    pub reason: String,
}

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid store time {:?}: {}", self.input, self.reason)
    }
}

impl TimeError {
    pub fn new(input: &str, reason: impl Into<String>) -> Self {
        TimeError {
            input: input.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A store time as written: an instant, or a wall-clock time in the store's zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreTime {
    Instant(Timestamp),
    Civil(DateTime),
}

impl StoreTime {
    /// Reads `"2026-11-27T00:00:00Z"` / `"…+01:00"` as an instant and `"2026-11-27T00:00:00"` as a
    /// civil time. A date without a time of day and bracketed time zone annotations (`[Europe/Rome]`)
    /// are rejected.
    pub fn parse(s: &str) -> Result<StoreTime, TimeError> {
        let pieces = Pieces::parse(s)
            .map_err(|e| TimeError::new(s, format!("not an RFC 3339 date-time: {e}")))?;
        let Some(time) = pieces.time() else {
            return Err(TimeError::new(
                s,
                "has no time of day (expected e.g. 2026-11-27T00:00:00)",
            ));
        };
        if pieces.time_zone_annotation().is_some() {
            return Err(TimeError::new(
                s,
                "bracketed time zone annotations are not accepted; give an offset or a store-local time",
            ));
        }
        if pieces.offset().is_some() {
            return s
                .parse::<Timestamp>()
                .map(StoreTime::Instant)
                .map_err(|e| TimeError::new(s, format!("not a valid instant: {e}")));
        }
        Ok(StoreTime::Civil(pieces.date().to_datetime(time)))
    }
}

/// Resolves a store-local civil time to an instant (docs/pricing.md): a civil time in a DST gap
/// means the transition instant, one in a fold its first occurrence — the earliest instant at which
/// the wall clock reads `dt` or later. Pure, shared by the store's pricing and HQ's preview.
/// Fails only for civil times at the very edge of the supported range (years -9999 and 9999).
pub fn resolve_civil(dt: DateTime, tz: &TimeZone) -> Result<Timestamp, TimeError> {
    let out_of_range = |e: jiff::Error| {
        TimeError::new(&dt.to_string(), format!("out of the supported range: {e}"))
    };
    match tz.to_ambiguous_timestamp(dt).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).map_err(out_of_range),
        // First occurrence: the wall clock shows `dt` first under the offset in force before the fold.
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(dt).map_err(out_of_range),
        AmbiguousOffset::Gap { before, after } => {
            // `dt` read with the later offset is an instant before the transition, and read with the
            // earlier offset an instant at or after it; the transition lies in between.
            let lower = after.to_timestamp(dt).map_err(out_of_range)?;
            let upper = before.to_timestamp(dt).map_err(out_of_range)?;
            let transition = tz
                .following(lower)
                .next()
                .map(|t| t.timestamp())
                .filter(|t| *t > lower && *t <= upper);
            // Every real zone reports its transitions; `upper` is the fallback only for exotic data.
            Ok(transition.unwrap_or(upper))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_and_civil_times_are_told_apart_and_bad_forms_named() {
        assert!(matches!(
            StoreTime::parse("2026-11-27T00:00:00Z"),
            Ok(StoreTime::Instant(_))
        ));
        assert!(matches!(
            StoreTime::parse("2026-11-27T00:00:00"),
            Ok(StoreTime::Civil(_))
        ));
        for bad in ["tomorrow", "2026-11-27", "2026-11-27T00:00:00[Europe/Rome]"] {
            let e = StoreTime::parse(bad).unwrap_err();
            assert_eq!(e.input, bad);
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
