//! The device message contract (docs/mqtt.md) as pure validation functions: each payload either
//! parses into a typed message or is refused with a reason that names the field, which is what
//! staff and support see in the dead-letter list.

use serde_json::{Map, Value};

use crate::broker::acl::TopicKind;

/// Business event types a device may send on `devices/{id}/events`.
pub const EVENT_TYPES: [&str; 9] = [
    "checkout.completed",
    "scale.weighed",
    "label.displayed",
    "door.opened",
    "door.closed",
    "receipt.printed",
    "lane.opened",
    "lane.closed",
    "basket.abandoned",
];

pub const SEVERITIES: [&str; 3] = ["info", "warning", "critical"];

pub const MAX_METRICS: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Status {
        online: bool,
        firmware: Option<String>,
        raw: String,
    },
    Telemetry {
        ts_ms: i64,
        metrics: Vec<(String, f64)>,
        raw: String,
    },
    Event {
        id: String,
        event_type: String,
        raw: String,
    },
    Alert {
        code: String,
        severity: String,
        message: String,
        cleared: bool,
    },
    CommandAck {
        id: String,
        ok: bool,
        message: Option<String>,
    },
    PriceRequest {
        req: String,
        sku: String,
    },
}

impl Parsed {
    /// Heap bytes this holds (counted against the ingest queue's byte cap with the payload).
    pub fn heap_bytes(&self) -> usize {
        match self {
            Parsed::Status { firmware, raw, .. } => {
                raw.len() + firmware.as_ref().map_or(0, String::len)
            }
            Parsed::Telemetry { metrics, raw, .. } => {
                raw.len() + metrics.iter().map(|(n, _)| n.len() + 32).sum::<usize>()
            }
            Parsed::Event {
                id,
                event_type,
                raw,
            } => id.len() + event_type.len() + raw.len(),
            Parsed::Alert {
                code,
                severity,
                message,
                ..
            } => code.len() + severity.len() + message.len(),
            Parsed::CommandAck { id, message, .. } => {
                id.len() + message.as_ref().map_or(0, String::len)
            }
            Parsed::PriceRequest { req, sku } => req.len() + sku.len(),
        }
    }
}

/// Why a payload was refused. `event_id` is set when the message was an event with a usable id,
/// so the device can be told to stop resending it.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub reason: String,
    pub code: &'static str,
    pub event_id: Option<String>,
}

fn invalid(code: &'static str, reason: impl Into<String>) -> Invalid {
    Invalid {
        reason: reason.into(),
        code,
        event_id: None,
    }
}

fn short_str(
    obj: &Map<String, Value>,
    field: &str,
    max: usize,
    required: bool,
) -> Result<Option<String>, Invalid> {
    match obj.get(field) {
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(invalid("schema", format!("field {field:?} is required"))),
        Some(Value::String(s)) if s.is_empty() && required => Err(invalid(
            "schema",
            format!("field {field:?} must not be empty"),
        )),
        Some(Value::String(s)) if s.chars().count() > max => Err(invalid(
            "schema",
            format!("field {field:?} is longer than {max} characters"),
        )),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(
            "schema",
            format!("field {field:?} must be a string, not {}", type_name(other)),
        )),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn object(payload: &[u8]) -> Result<Map<String, Value>, Invalid> {
    let text = std::str::from_utf8(payload)
        .map_err(|e| invalid("not_utf8", format!("payload is not UTF-8: {e}")))?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(invalid(
            "schema",
            format!("payload must be a JSON object, not {}", type_name(&other)),
        )),
        Err(e) => Err(invalid(
            "bad_json",
            format!("payload is not valid JSON: {e}"),
        )),
    }
}

pub fn parse(kind: TopicKind, payload: &[u8], received_ms: i64) -> Result<Parsed, Invalid> {
    let obj = object(payload)?;
    match kind {
        TopicKind::Status => {
            let online = match obj.get("online") {
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    return Err(invalid(
                        "schema",
                        format!(
                            "field \"online\" must be a boolean, not {}",
                            type_name(other)
                        ),
                    ))
                }
                None => return Err(invalid("schema", "field \"online\" is required")),
            };
            let firmware = short_str(&obj, "firmware", 64, false)?;
            Ok(Parsed::Status {
                online,
                firmware,
                raw: Value::Object(obj).to_string(),
            })
        }
        TopicKind::Telemetry => {
            let ts_ms = match obj.get("ts") {
                None | Some(Value::Null) => received_ms,
                Some(Value::String(s)) => s
                    .parse::<jiff::Timestamp>()
                    .map_err(|e| {
                        invalid(
                            "schema",
                            format!("field \"ts\" {s:?} is not an RFC 3339 time: {e}"),
                        )
                    })?
                    .as_millisecond(),
                Some(other) => {
                    return Err(invalid(
                        "schema",
                        format!(
                            "field \"ts\" must be an RFC 3339 string, not {}",
                            type_name(other)
                        ),
                    ))
                }
            };
            let Some(Value::Object(m)) = obj.get("metrics") else {
                return Err(invalid(
                    "schema",
                    "field \"metrics\" must be an object of numbers",
                ));
            };
            if m.is_empty() || m.len() > MAX_METRICS {
                return Err(invalid(
                    "schema",
                    format!("\"metrics\" must have 1 to {MAX_METRICS} entries"),
                ));
            }
            let mut metrics = Vec::with_capacity(m.len());
            for (name, v) in m {
                if name.is_empty() || name.len() > 64 {
                    return Err(invalid(
                        "schema",
                        format!("metric name {name:?} must be 1-64 characters"),
                    ));
                }
                match v.as_f64() {
                    Some(x) if x.is_finite() => metrics.push((name.clone(), x)),
                    _ => {
                        return Err(invalid(
                            "schema",
                            format!("metric {name:?} must be a number, not {}", type_name(v)),
                        ))
                    }
                }
            }
            Ok(Parsed::Telemetry {
                ts_ms,
                metrics,
                raw: Value::Object(m.clone()).to_string(),
            })
        }
        TopicKind::Events => {
            let id = short_str(&obj, "id", 128, true)?.unwrap_or_default();
            let with_id = |mut e: Invalid| {
                e.event_id = Some(id.clone());
                e
            };
            let event_type = short_str(&obj, "type", 64, true)
                .map_err(with_id)?
                .unwrap_or_default();
            if !EVENT_TYPES.contains(&event_type.as_str()) {
                return Err(with_id(invalid(
                    "unknown_type",
                    format!(
                        "unknown event type {event_type:?}; known types: {}",
                        EVENT_TYPES.join(", ")
                    ),
                )));
            }
            check_event_body(&event_type, &obj).map_err(with_id)?;
            Ok(Parsed::Event {
                id,
                event_type,
                raw: Value::Object(obj).to_string(),
            })
        }
        TopicKind::Alerts => {
            let code = short_str(&obj, "code", 64, true)?.unwrap_or_default();
            if !code
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                return Err(invalid(
                    "schema",
                    format!("alert code {code:?} must be UPPER_SNAKE_CASE"),
                ));
            }
            let state = short_str(&obj, "state", 16, false)?;
            let cleared = match state.as_deref() {
                None | Some("raised") => false,
                Some("cleared") => true,
                Some(other) => {
                    return Err(invalid(
                        "schema",
                        format!("field \"state\" {other:?} must be \"raised\" or \"cleared\""),
                    ))
                }
            };
            let severity =
                short_str(&obj, "severity", 16, !cleared)?.unwrap_or_else(|| "info".into());
            if !SEVERITIES.contains(&severity.as_str()) {
                return Err(invalid(
                    "schema",
                    format!(
                        "field \"severity\" {severity:?} must be one of {}",
                        SEVERITIES.join(", ")
                    ),
                ));
            }
            let message = short_str(&obj, "message", 1024, false)?.unwrap_or_default();
            Ok(Parsed::Alert {
                code,
                severity,
                message,
                cleared,
            })
        }
        TopicKind::CommandAck => {
            let id = short_str(&obj, "id", 128, true)?.unwrap_or_default();
            let ok = match obj.get("ok") {
                Some(Value::Bool(b)) => *b,
                _ => return Err(invalid("schema", "field \"ok\" must be a boolean")),
            };
            let message = short_str(&obj, "message", 1024, false)?;
            Ok(Parsed::CommandAck { id, ok, message })
        }
        TopicKind::PriceRequest => {
            let req = short_str(&obj, "req", 128, true)?.unwrap_or_default();
            let sku = short_str(&obj, "sku", 64, true)?.unwrap_or_default();
            Ok(Parsed::PriceRequest { req, sku })
        }
        TopicKind::Unknown => Err(invalid("unknown_topic", "unknown topic")),
    }
}

fn check_event_body(event_type: &str, obj: &Map<String, Value>) -> Result<(), Invalid> {
    let int_field = |name: &str, min: i64| -> Result<(), Invalid> {
        match obj.get(name).and_then(Value::as_i64) {
            Some(v) if v >= min => Ok(()),
            _ => Err(invalid(
                "schema",
                format!("{event_type}: field {name:?} must be an integer >= {min}"),
            )),
        }
    };
    match event_type {
        "checkout.completed" => {
            if !obj.get("lines").is_some_and(Value::is_array) {
                return Err(invalid(
                    "schema",
                    "checkout.completed: field \"lines\" must be an array",
                ));
            }
            int_field("total", 0)
        }
        "scale.weighed" => {
            short_str(obj, "sku", 64, true)?;
            int_field("grams", 1)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_messages_parse() {
        let p = parse(
            TopicKind::Status,
            br#"{"online":true,"firmware":"1.2.0"}"#,
            0,
        )
        .unwrap();
        assert!(
            matches!(p, Parsed::Status { online: true, firmware: Some(ref f), .. } if f == "1.2.0")
        );
        let p = parse(
            TopicKind::Telemetry,
            br#"{"ts":"2026-11-25T10:00:00Z","metrics":{"temp_c":3.9}}"#,
            0,
        )
        .unwrap();
        assert!(
            matches!(
                p,
                Parsed::Telemetry {
                    ts_ms: 1795600800000,
                    ..
                }
            ),
            "{p:?}"
        );
        let p = parse(
            TopicKind::Events,
            br#"{"id":"e1","type":"scale.weighed","sku":"1001","grams":250}"#,
            0,
        )
        .unwrap();
        assert!(matches!(p, Parsed::Event { ref id, .. } if id == "e1"));
        let p = parse(
            TopicKind::Alerts,
            br#"{"code":"PAPER_OUT","severity":"warning"}"#,
            0,
        )
        .unwrap();
        assert!(matches!(p, Parsed::Alert { cleared: false, .. }));
        let p = parse(
            TopicKind::Alerts,
            br#"{"code":"PAPER_OUT","state":"cleared"}"#,
            0,
        )
        .unwrap();
        assert!(matches!(p, Parsed::Alert { cleared: true, .. }));
    }

    #[test]
    fn bad_messages_name_the_problem() {
        let e = parse(TopicKind::Telemetry, b"{not json", 0).unwrap_err();
        assert_eq!(e.code, "bad_json");
        let e = parse(TopicKind::Telemetry, br#"{"metrics":{"temp_c":"cold"}}"#, 0).unwrap_err();
        assert!(e.reason.contains("temp_c"), "{}", e.reason);
        let e = parse(TopicKind::Events, br#"{"id":"e9","type":"teleport"}"#, 0).unwrap_err();
        assert_eq!(
            (e.code, e.event_id.as_deref()),
            ("unknown_type", Some("e9"))
        );
        let e = parse(TopicKind::Events, br#"{"type":"scale.weighed"}"#, 0).unwrap_err();
        assert!(e.reason.contains("\"id\""));
        let e = parse(
            TopicKind::Events,
            br#"{"id":"e2","type":"scale.weighed","sku":"1"}"#,
            0,
        )
        .unwrap_err();
        assert!(e.reason.contains("grams") && e.event_id.is_some());
        let e = parse(
            TopicKind::Alerts,
            br#"{"code":"paper out","severity":"warning"}"#,
            0,
        )
        .unwrap_err();
        assert!(e.reason.contains("UPPER_SNAKE_CASE"));
        let e = parse(TopicKind::Status, b"[1,2]", 0).unwrap_err();
        assert!(e.reason.contains("an array"));
        let e = parse(TopicKind::Status, &[0xff, 0xfe], 0).unwrap_err();
        assert_eq!(e.code, "not_utf8");
    }
}
