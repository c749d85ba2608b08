//! Prometheus metrics for the whole box, in one registry served at `/metrics`. Counters are updated
//! where things happen (broker guard, ingest, HTTP layer); gauges that mirror state (DB size,
//! connected devices) are refreshed when scraped.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Borrowed for the standard methods: no allocation per request.
    pub method: std::borrow::Cow<'static, str>,
    pub route: std::borrow::Cow<'static, str>,
    pub status: u16,
}

fn http_histogram() -> Histogram {
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    ])
}

pub struct Metrics {
    registry: Registry,
    pub mqtt_connected: Gauge,
    pub mqtt_connections_total: Counter,
    pub mqtt_auth_failures: Counter,
    pub mqtt_messages_in: Family<KindLabel, Counter>,
    pub mqtt_acl_denied: Family<KindLabel, Counter>,
    pub invalid_messages: Family<ReasonLabel, Counter>,
    pub ingest_dropped: Family<KindLabel, Counter>,
    /// HTTP connections closed at accept: `per_client` or `total` cap reached.
    pub http_connections_refused: Family<KindLabel, Counter>,
    pub ingest_queue_depth: Gauge,
    pub ingest_backpressure_waits: Counter,
    pub ingest_write_failures: Counter,
    pub ingest_write_stalled: Gauge,
    pub task_failed: Family<TaskLabel, Gauge>,
    pub events_acked: Counter,
    pub events_duplicate: Counter,
    pub telemetry_stored: Counter,
    pub devices_online: Gauge,
    pub devices_total: Gauge,
    pub alerts_open: Gauge,
    pub db_size_bytes: Gauge<u64, AtomicU64>,
    pub price_cache_hits: Counter,
    pub price_cache_misses: Counter,
    pub price_cache_entries: Gauge,
    pub price_cache_bytes: Gauge<u64, AtomicU64>,
    pub http_requests: Family<HttpLabels, Histogram, fn() -> Histogram>,
    pub sync_connected: Gauge,
    pub sync_cursor: Gauge,
    pub sync_lag_events: Gauge,
    pub sync_outbox_depth: Family<ClassLabel, Gauge>,
    pub sync_outbox_dropped: Counter,
    pub sync_quarantined: Counter,
    pub sync_events_applied: Counter,
    pub sync_events_pushed: Counter,
    pub sync_errors: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabel {
    pub task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    pub class: String,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("storebox");
        let m = Metrics {
            mqtt_connected: Gauge::default(),
            mqtt_connections_total: Counter::default(),
            mqtt_auth_failures: Counter::default(),
            mqtt_messages_in: Family::default(),
            mqtt_acl_denied: Family::default(),
            invalid_messages: Family::default(),
            ingest_dropped: Family::default(),
            http_connections_refused: Family::default(),
            ingest_queue_depth: Gauge::default(),
            ingest_backpressure_waits: Counter::default(),
            ingest_write_failures: Counter::default(),
            ingest_write_stalled: Gauge::default(),
            task_failed: Family::default(),
            events_acked: Counter::default(),
            events_duplicate: Counter::default(),
            telemetry_stored: Counter::default(),
            devices_online: Gauge::default(),
            devices_total: Gauge::default(),
            alerts_open: Gauge::default(),
            db_size_bytes: Gauge::default(),
            price_cache_hits: Counter::default(),
            price_cache_misses: Counter::default(),
            price_cache_entries: Gauge::default(),
            price_cache_bytes: Gauge::default(),
            http_requests: Family::new_with_constructor(http_histogram as fn() -> Histogram),
            sync_connected: Gauge::default(),
            sync_cursor: Gauge::default(),
            sync_lag_events: Gauge::default(),
            sync_outbox_depth: Family::default(),
            sync_outbox_dropped: Counter::default(),
            sync_quarantined: Counter::default(),
            sync_events_applied: Counter::default(),
            sync_events_pushed: Counter::default(),
            sync_errors: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "mqtt_connected_devices",
            "Device connections currently open",
            m.mqtt_connected.clone(),
        );
        registry.register(
            "mqtt_connections",
            "Device connections accepted",
            m.mqtt_connections_total.clone(),
        );
        registry.register(
            "mqtt_auth_failures",
            "MQTT logins refused (unknown device, wrong password, anonymous)",
            m.mqtt_auth_failures.clone(),
        );
        registry.register(
            "mqtt_messages_in",
            "Device messages received, by kind",
            m.mqtt_messages_in.clone(),
        );
        registry.register(
            "mqtt_acl_denied",
            "Publishes/subscriptions refused by topic authorization, by kind",
            m.mqtt_acl_denied.clone(),
        );
        registry.register(
            "invalid_messages",
            "Messages dead-lettered, by reason",
            m.invalid_messages.clone(),
        );
        registry.register(
            "ingest_dropped",
            "QoS 0 telemetry shed because the ingest queue was full (nothing acknowledged is dropped)",
            m.ingest_dropped.clone(),
        );
        registry.register(
            "http_connections_refused",
            "HTTP connections closed at accept because a connection cap was reached, by kind (per_client, total)",
            m.http_connections_refused.clone(),
        );
        registry.register(
            "ingest_queue_depth",
            "Device messages waiting to be written",
            m.ingest_queue_depth.clone(),
        );
        registry.register(
            "ingest_backpressure_waits",
            "Times a device connection stopped reading because the ingest queue was full",
            m.ingest_backpressure_waits.clone(),
        );
        registry.register(
            "ingest_write_failures",
            "Ingest batches that could not be written (retried; disk full, I/O error)",
            m.ingest_write_failures.clone(),
        );
        registry.register(
            "ingest_write_stalled",
            "1 while device ingest cannot write (disk full, I/O error): devices are not acknowledged",
            m.ingest_write_stalled.clone(),
        );
        registry.register(
            "task_failed",
            "1 for a long-running task that ended or panicked (the process then exits)",
            m.task_failed.clone(),
        );
        registry.register(
            "events_acked",
            "Business events committed and acknowledged to the device",
            m.events_acked.clone(),
        );
        registry.register(
            "events_duplicate",
            "Business events received again after being stored (acked, not stored twice)",
            m.events_duplicate.clone(),
        );
        registry.register(
            "telemetry_stored",
            "Telemetry messages stored",
            m.telemetry_stored.clone(),
        );
        registry.register(
            "devices_online",
            "Provisioned devices currently online",
            m.devices_online.clone(),
        );
        registry.register("devices", "Provisioned devices", m.devices_total.clone());
        registry.register(
            "alerts_open",
            "Device alerts raised and not cleared",
            m.alerts_open.clone(),
        );
        registry.register(
            "db_size_bytes",
            "SQLite database size including WAL",
            m.db_size_bytes.clone(),
        );
        registry.register(
            "price_cache_hits",
            "Price lookups answered from the answers kept in memory",
            m.price_cache_hits.clone(),
        );
        registry.register(
            "price_cache_misses",
            "Price lookups computed from the database (none kept, or stale)",
            m.price_cache_misses.clone(),
        );
        registry.register(
            "price_cache_entries",
            "Price answers kept in memory",
            m.price_cache_entries.clone(),
        );
        registry.register(
            "price_cache_bytes",
            "Memory the kept price answers are weighed at (bounded by storage.price_cache_mb)",
            m.price_cache_bytes.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            m.http_requests.clone(),
        );
        registry.register(
            "sync_connected",
            "1 when the last request to HQ succeeded",
            m.sync_connected.clone(),
        );
        registry.register(
            "sync_cursor",
            "Last HQ feed cursor applied",
            m.sync_cursor.clone(),
        );
        registry.register(
            "sync_lag_events",
            "HQ events known to exist after the cursor (upper bound)",
            m.sync_lag_events.clone(),
        );
        registry.register(
            "sync_outbox_depth",
            "Store events waiting to be sent to HQ, by class",
            m.sync_outbox_depth.clone(),
        );
        registry.register(
            "sync_outbox_dropped",
            "Unsent telemetry dropped (time-to-live or size cap)",
            m.sync_outbox_dropped.clone(),
        );
        registry.register(
            "sync_quarantined",
            "HQ events quarantined because they failed validation",
            m.sync_quarantined.clone(),
        );
        registry.register(
            "sync_events_applied",
            "HQ events applied",
            m.sync_events_applied.clone(),
        );
        registry.register(
            "sync_events_pushed",
            "Store events sent to HQ and acknowledged",
            m.sync_events_pushed.clone(),
        );
        registry.register(
            "sync_errors",
            "Failed requests to HQ",
            m.sync_errors.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn set_outbox_depth(&self, business: i64, telemetry: i64) {
        for (class, v) in [("business", business), ("telemetry", telemetry)] {
            self.sync_outbox_depth
                .get_or_create(&ClassLabel {
                    class: class.to_string(),
                })
                .set(v);
        }
    }

    pub fn inc_kind(family: &Family<KindLabel, Counter>, kind: &str) {
        family
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn invalid(&self, reason: &str) {
        self.invalid_messages
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
