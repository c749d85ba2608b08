//! The envelopes of sync protocol v1 (docs/sync-protocol.md): feed pages, snapshots, push batches
//! and their answers, authoring targets.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// Protocol version, in every path (`/sync/v1/…`) and sent as the `x-storebox-protocol` header.
pub const VERSION: &str = "1";

/// One HQ event in the feed: its feed sequence number, unique id, type and payload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FeedEvent {
    pub seq: i64,
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub payload: Value,
    /// When HQ authored it (RFC 3339); used for the store's lag in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

/// `GET /sync/v1/feed` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FeedPage {
    pub events: Vec<FeedEvent>,
    /// The cursor to store with this batch and send as `after` next time.
    pub next: i64,
    /// HQ's newest sequence number (any target); `head - next` bounds the store's lag.
    #[serde(default)]
    pub head: i64,
}

/// `GET /sync/v1/snapshot` answer: the store's whole catalog state as events, and the cursor it
/// corresponds to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    pub cursor: i64,
    pub events: Vec<FeedEvent>,
}

/// One store event in a push.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreEvent {
    pub seq: i64,
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// `business` or `telemetry`.
    pub class: String,
    /// The payload as the JSON text the outbox holds: the store sends it and HQ stores it without
    /// parsing it into a tree and printing it again (byte for byte what the store recorded).
    pub payload: Box<RawValue>,
    /// When the store recorded it (RFC 3339).
    pub at: String,
}

/// What the store reports about itself with every push.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StoreReport {
    pub version: String,
    pub cursor: Option<i64>,
    pub lag_events: Option<i64>,
    pub lag_seconds: Option<f64>,
    pub outbox_business: i64,
    pub outbox_telemetry: i64,
    pub outbox_dropped: i64,
    // --- fleet health (HQ console); absent from older stores, so defaulted ---
    /// Devices the store knows, and how many of them are offline.
    #[serde(default)]
    pub devices_total: Option<i64>,
    #[serde(default)]
    pub devices_offline: Option<i64>,
    /// Open (not cleared) device alerts, and those of them of severity warning or critical.
    #[serde(default)]
    pub open_alerts: Option<i64>,
    #[serde(default)]
    pub open_alerts_warning: Option<i64>,
    /// The store's IANA time zone, so that HQ can show its times as the store lives them.
    #[serde(default)]
    pub timezone: Option<String>,
}

/// `POST /sync/v1/events` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushBatch {
    pub report: StoreReport,
    pub events: Vec<StoreEvent>,
}

/// `POST /sync/v1/events` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PushAck {
    /// The highest sequence number of this batch HQ now holds (all of the batch: it is stored in
    /// one transaction). The store marks the batch's events up to it as sent.
    pub acked: i64,
    /// The highest sequence number HQ holds from this store, over all pushes.
    pub held: i64,
    /// Events of the batch that were new.
    pub stored: u64,
    /// Events of the batch HQ already had (a retry after a lost answer).
    pub duplicates: u64,
}

impl StoreEvent {
    /// The payload parsed (HQ reads fields of a few event types, e.g. `ticket.opened`).
    pub fn payload_value(&self) -> Value {
        serde_json::from_str(self.payload.get()).unwrap_or(Value::Null)
    }
}

/// A stored payload text as a raw JSON value: as it is when it is valid JSON (always, for what
/// storebox itself enqueues), else as a JSON string holding the text.
pub fn raw_payload(text: &str) -> Box<RawValue> {
    match serde_json::from_str::<&RawValue>(text) {
        Ok(raw) => raw.to_owned(),
        // Serializing a &str cannot fail (the default would be `null`).
        Err(_) => serde_json::value::to_raw_value(text).unwrap_or_default(),
    }
}

/// Authoring target (`POST /hq/v1/events`): all stores, some groups, or some stores.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Target {
    All { all: bool },
    Groups { groups: Vec<String> },
    Stores { stores: Vec<String> },
}

impl Target {
    /// Parses the `target` query parameter of the CSV import: `all`, `group:NAME`, `store:ID`
    /// (several separated by commas, of one kind).
    pub fn parse_query(s: &str) -> Result<Target, String> {
        let s = s.trim();
        if s == "all" {
            return Ok(Target::All { all: true });
        }
        let mut groups = Vec::new();
        let mut stores = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if let Some(g) = part.strip_prefix("group:") {
                groups.push(g.to_string());
            } else if let Some(st) = part.strip_prefix("store:") {
                stores.push(st.to_string());
            } else {
                return Err(format!(
                    "target {part:?} must be `all`, `group:NAME` or `store:ID`"
                ));
            }
        }
        match (groups.is_empty(), stores.is_empty()) {
            (false, true) => Ok(Target::Groups { groups }),
            (true, false) => Ok(Target::Stores { stores }),
            (true, true) => Err("target is empty; use `all`, `group:NAME` or `store:ID`".into()),
            (false, false) => Err("target mixes groups and stores; send two requests".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_shapes() {
        let t: Target = serde_json::from_str(r#"{"all":true}"#).unwrap();
        assert_eq!(t, Target::All { all: true });
        let t: Target = serde_json::from_str(r#"{"groups":["pilot"]}"#).unwrap();
        assert_eq!(
            t,
            Target::Groups {
                groups: vec!["pilot".into()]
            }
        );
        assert_eq!(
            Target::parse_query("store:a,store:b").unwrap(),
            Target::Stores {
                stores: vec!["a".into(), "b".into()]
            }
        );
        assert!(Target::parse_query("group:a,store:b").is_err());
        assert!(Target::parse_query("everyone").is_err());
    }
}
