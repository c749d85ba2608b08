//! Topic authorization for devices, as plain functions: what a device with id `D` may publish,
//! subscribe to and leave as its will. rumqttd has no per-topic ACL, so the broker guard
//! (`guard.rs`) calls these on every decoded packet.
//!
//! A device may publish under its own `devices/D/` prefix (except the topics the box writes to it:
//! `commands`, `events/ack`, `price/reply`), never on `store/…` or another device's topics. It may
//! subscribe to its own `devices/D/commands`, `devices/D/events/ack`, `devices/D/price/reply` and to
//! the store-wide topics of the contract: `store/prices/changed`, `store/notice` or `store/#`, and
//! nothing else under `store/` (rumqttd keeps an in-memory log per distinct filter for as long as
//! it runs, so an open-ended filter set would let one device grow the box without bound). Its will,
//! if any, must be `devices/D/status`.

/// What a device publication is, once authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    Status,
    Telemetry,
    Events,
    Alerts,
    CommandAck,
    PriceRequest,
    /// Under the device's own prefix but not a topic of the contract: dead-lettered.
    Unknown,
}

impl TopicKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TopicKind::Status => "status",
            TopicKind::Telemetry => "telemetry",
            TopicKind::Events => "events",
            TopicKind::Alerts => "alerts",
            TopicKind::CommandAck => "command_ack",
            TopicKind::PriceRequest => "price_request",
            TopicKind::Unknown => "unknown",
        }
    }
}

/// Why a packet was refused; the text goes to logs, metrics and the dead-letter table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

/// Device ids are also MQTT client ids and topic levels: 1-64 of `[A-Za-z0-9._-]`, and not one of
/// the box's own reserved names.
pub fn valid_device_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !id.starts_with("storebox")
        && id != "."
        && id != ".."
}

/// Topics the box publishes to a device; a device may read them but never write them.
const BOX_TO_DEVICE: [&str; 3] = ["commands", "events/ack", "price/reply"];

pub fn authorize_publish(device: &str, topic: &str) -> Result<TopicKind, Denied> {
    let own = topic
        .strip_prefix("devices/")
        .and_then(|rest| rest.strip_prefix(device))
        .and_then(|rest| rest.strip_prefix('/'));
    let Some(sub) = own else {
        return Err(Denied(format!(
            "device {device} may not publish to {topic:?}: only under devices/{device}/"
        )));
    };
    if topic.contains(['+', '#']) {
        return Err(Denied(format!(
            "publish topic {topic:?} contains a wildcard"
        )));
    }
    if BOX_TO_DEVICE.contains(&sub) {
        return Err(Denied(format!(
            "device {device} may not publish to {topic:?}: the box writes that topic"
        )));
    }
    Ok(match sub {
        "status" => TopicKind::Status,
        "telemetry" => TopicKind::Telemetry,
        "events" => TopicKind::Events,
        "alerts" => TopicKind::Alerts,
        "commands/ack" => TopicKind::CommandAck,
        "price/request" => TopicKind::PriceRequest,
        _ => TopicKind::Unknown,
    })
}

/// Store-wide filters a device may subscribe to: the topics of DESIGN §2 and `store/#`.
pub const STORE_FILTERS: [&str; 3] = ["store/#", "store/prices/changed", "store/notice"];

/// Distinct filters a device can hold at most: its three own topics and the store filters.
pub const ALLOWED_FILTERS_PER_DEVICE: usize = BOX_TO_DEVICE.len() + STORE_FILTERS.len();

pub fn authorize_subscribe(device: &str, filter: &str) -> Result<(), Denied> {
    if STORE_FILTERS.contains(&filter) {
        return Ok(());
    }
    for sub in BOX_TO_DEVICE {
        if filter == format!("devices/{device}/{sub}") {
            return Ok(());
        }
    }
    Err(Denied(format!(
        "device {device} may not subscribe to {filter:?}: allowed are devices/{device}/commands, \
         devices/{device}/events/ack, devices/{device}/price/reply, store/prices/changed, \
         store/notice and store/#"
    )))
}

pub fn authorize_will(device: &str, topic: &str) -> Result<(), Denied> {
    if topic == format!("devices/{device}/status") {
        Ok(())
    } else {
        Err(Denied(format!(
            "device {device} may not set a will on {topic:?}: only devices/{device}/status"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_topics_are_classified() {
        assert_eq!(
            authorize_publish("lane-1", "devices/lane-1/events"),
            Ok(TopicKind::Events)
        );
        assert_eq!(
            authorize_publish("lane-1", "devices/lane-1/status"),
            Ok(TopicKind::Status)
        );
        assert_eq!(
            authorize_publish("lane-1", "devices/lane-1/commands/ack"),
            Ok(TopicKind::CommandAck)
        );
        assert_eq!(
            authorize_publish("lane-1", "devices/lane-1/price/request"),
            Ok(TopicKind::PriceRequest)
        );
        assert_eq!(
            authorize_publish("lane-1", "devices/lane-1/whatever"),
            Ok(TopicKind::Unknown)
        );
    }

    #[test]
    fn spoofing_and_store_topics_are_denied() {
        assert!(authorize_publish("lane-1", "devices/lane-2/events").is_err());
        // prefix trick: lane-1 is a prefix of lane-10
        assert!(authorize_publish("lane-1", "devices/lane-10/events").is_err());
        assert!(authorize_publish("lane-1", "store/prices/changed").is_err());
        assert!(authorize_publish("lane-1", "devices/lane-1/commands").is_err());
        assert!(authorize_publish("lane-1", "devices/lane-1/events/ack").is_err());
        assert!(authorize_publish("lane-1", "devices/lane-1").is_err());
        assert!(authorize_publish("lane-1", "$SYS/x").is_err());
        // The router's sink for device uplinks can be neither written nor read by a device.
        let sink = crate::broker::guard::SINK_TOPIC;
        assert!(authorize_publish("lane-1", sink).is_err());
        assert!(authorize_subscribe("lane-1", sink).is_err());
        assert!(authorize_subscribe("lane-1", "storebox-sink/#").is_err());
        assert!(authorize_subscribe("lane-1", "#").is_err());
        assert!(authorize_subscribe("lane-1", "+/+").is_err());
    }

    #[test]
    fn subscriptions() {
        assert!(authorize_subscribe("lane-1", "devices/lane-1/commands").is_ok());
        assert!(authorize_subscribe("lane-1", "devices/lane-1/events/ack").is_ok());
        assert!(authorize_subscribe("lane-1", "store/#").is_ok());
        assert!(authorize_subscribe("lane-1", "store/prices/changed").is_ok());
        assert!(authorize_subscribe("lane-1", "devices/lane-2/commands").is_err());
        assert!(authorize_subscribe("lane-1", "devices/+/commands").is_err());
        assert!(authorize_subscribe("lane-1", "devices/lane-1/#").is_err());
        assert!(authorize_subscribe("lane-1", "#").is_err());
        assert!(authorize_subscribe("lane-1", "store/notice").is_ok());
        assert!(authorize_subscribe("lane-1", "store/").is_err());
        // Any other filter under store/ would get a log of its own in the router, forever.
        assert!(authorize_subscribe("lane-1", "store/y1").is_err());
        assert!(authorize_subscribe("lane-1", "store/prices/+").is_err());
        assert!(authorize_subscribe("lane-1", "store/prices/changed/x").is_err());
        assert!(authorize_subscribe("lane-1", "$share/g/store/#").is_err());
    }

    #[test]
    fn wills_and_ids() {
        assert!(authorize_will("lane-1", "devices/lane-1/status").is_ok());
        assert!(authorize_will("lane-1", "devices/lane-2/status").is_err());
        assert!(valid_device_id("fridge-3.b_2"));
        assert!(!valid_device_id("a/b"));
        assert!(!valid_device_id("a+b"));
        assert!(!valid_device_id(""));
        assert!(!valid_device_id("storebox-box"));
    }
}
