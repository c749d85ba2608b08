//! Configuration: one typed struct built from layers (embedded defaults, then the TOML file, then
//! `STOREBOX_SECTION__KEY` environment variables, env winning), so that every command — `serve`,
//! `check-config`, the offline admin commands — sees the same settings and every mistake is reported
//! with the key, the value and what is allowed.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The newest config file format this build understands.
pub const CONFIG_VERSION: u32 = 1;

/// Environment variable prefix; `STOREBOX_MQTT__LISTEN=0.0.0.0:1883` sets `[mqtt] listen`.
pub const ENV_PREFIX: &str = "STOREBOX_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{origin}: {key}: {message}")]
    Key {
        origin: String,
        key: String,
        message: String,
    },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

fn key_error(origin: &str, key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        origin: origin.to_string(),
        key: key.to_string(),
        message: message.into(),
    }
}

/// A secret string whose `Debug` never shows the value.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Serializes redacted (the support bundle shows the config this way).
impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "<redacted>" })
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"<redacted>\"")
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Config format version; files without it are read as version 1.
    pub version: u32,
    pub store: StoreConfig,
    pub http: HttpConfig,
    pub mqtt: MqttConfig,
    pub hq: HqConfig,
    pub storage: StorageConfig,
    pub log: LogConfig,
    pub updates: UpdatesConfig,
    pub tls: TlsConfig,
    pub hq_server: HqServerConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: CONFIG_VERSION,
            store: StoreConfig::default(),
            http: HttpConfig::default(),
            mqtt: MqttConfig::default(),
            hq: HqConfig::default(),
            storage: StorageConfig::default(),
            log: LogConfig::default(),
            updates: UpdatesConfig::default(),
            tls: TlsConfig::default(),
            hq_server: HqServerConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub id: String,
    pub name: String,
    /// IANA time zone; store-local prices switch at this zone's wall-clock times.
    pub timezone: String,
    /// ISO 4217 code; money is integer minor units of it.
    pub currency: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            id: "store-local".into(),
            name: "Local store".into(),
            timezone: "UTC".into(),
            currency: "EUR".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Minutes a staff session stays valid without activity.
    pub session_minutes: u32,
    /// Seconds a client has to send a request's headers, and the longest a kept-alive connection
    /// waits for its next request.
    pub header_timeout_secs: u64,
    /// Seconds a connection may pass with no byte read or written before it is closed (server-sent
    /// event streams send a keep-alive every 15 s).
    pub idle_timeout_secs: u64,
    /// Open HTTP connections from one client address; more are closed at once.
    pub max_connections_per_client: usize,
    /// Open HTTP connections in all.
    pub max_connections: usize,
    /// Password hashes (argon2, ~20 MB and ~50 ms each) computed at the same time; sign-ins beyond
    /// wait for a turn.
    pub max_password_checks: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".parse().unwrap(),
            session_minutes: 480,
            header_timeout_secs: 10,
            idle_timeout_secs: 120,
            max_connections_per_client: 64,
            max_connections: 1024,
            max_password_checks: 2,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    pub listen: SocketAddr,
    pub max_payload_bytes: usize,
    pub max_connections: usize,
    /// Memory the broker may hold for in-flight device traffic, in MiB (see docs/operations.md).
    pub buffer_mb: usize,
    /// Messages a device may have unacknowledged in flight (QoS 1).
    pub max_inflight: usize,
    /// Device messages waiting to be written to SQLite before new ones are refused (events are
    /// then resent by the device, telemetry counted as dropped).
    pub ingest_queue: usize,
    /// Distinct subscription filters one device connection may hold.
    pub max_subscriptions: usize,
    /// QoS 2 messages one device connection may have received and not yet released (PUBREL).
    pub max_inflight_qos2: usize,
    /// MQTT over TLS for devices (usually `0.0.0.0:8883`), with the `[tls]` certificate; the
    /// plain `listen` stays for devices that cannot do TLS.
    pub tls_listen: Option<SocketAddr>,
    /// Business event types each device kind may send, replacing the default of the kinds named
    /// (`devices::registry::default_event_types`).
    pub event_types: HashMap<String, Vec<String>>,
}

impl MqttConfig {
    /// Whether a device of `kind` may send events of `event_type`.
    pub fn event_allowed(&self, kind: &str, event_type: &str) -> bool {
        match self.event_types.get(kind) {
            Some(types) => types.iter().any(|t| t == event_type),
            None => crate::devices::registry::default_event_types(kind).contains(&event_type),
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            listen: "127.0.0.1:1883".parse().unwrap(),
            max_payload_bytes: 65536,
            max_connections: 1000,
            buffer_mb: 16,
            max_inflight: 100,
            ingest_queue: 50_000,
            max_subscriptions: 8,
            max_inflight_qos2: 100,
            tls_listen: None,
            event_types: HashMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HqConfig {
    /// Base URL of HQ; empty means standalone (no sync).
    pub url: String,
    pub token: Secret,
    pub token_file: Option<PathBuf>,
    /// Extra hosts the store may open connections to (the HQ host is always allowed).
    pub allow_hosts: Vec<String>,
    /// How long one feed request may wait at HQ for new events (long-poll), in seconds.
    pub poll_wait_secs: u64,
    /// Upper bound of the retry back-off after a failed request, in seconds.
    pub retry_max_secs: u64,
    /// Events per outbox push.
    pub batch_size: u32,
    /// Events per feed request (HQ → store): a catch-up applies each page in one transaction, so
    /// larger pages mean fewer commits.
    pub feed_batch_size: u32,
    /// Unsent telemetry older than this is dropped (and counted), in seconds.
    pub telemetry_ttl_secs: u64,
    /// How often the box sends its `telemetry.rollup`, in seconds.
    pub rollup_interval_secs: u64,
    /// Largest HQ answer the store reads, decompressed, in MiB (a snapshot is parsed whole).
    pub max_response_mb: usize,
}

impl Default for HqConfig {
    fn default() -> Self {
        HqConfig {
            url: String::new(),
            token: Secret::default(),
            token_file: None,
            allow_hosts: Vec::new(),
            poll_wait_secs: 25,
            retry_max_secs: 60,
            batch_size: 1000,
            feed_batch_size: 5000,
            telemetry_ttl_secs: 86_400,
            rollup_interval_secs: 60,
            max_response_mb: 64,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub outbox_max_mb: u64,
    pub telemetry_keep_days: u32,
    /// Rejected device/HQ messages kept for staff and support (oldest removed first).
    pub dead_letter_keep: u32,
    /// Memory for price answers kept between lookups (`catalog::answer_cache`); 0 turns it off.
    pub price_cache_mb: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./storebox-data"),
            outbox_max_mb: 512,
            telemetry_keep_days: 7,
            dead_letter_keep: 10_000,
            price_cache_mb: 40,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Directory for daily-rotated log files; empty means `<data_dir>/logs`.
    pub dir: Option<PathBuf>,
    pub level: String,
    pub keep_days: u32,
    /// Log lines per second from any one place in the code; the rest are counted and reported
    /// as suppressed.
    pub max_lines_per_sec: u32,
    /// MiB of log lines written to the day's file; the rest of the day goes to stderr only.
    pub max_day_mb: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            dir: None,
            level: "info".into(),
            keep_days: 14,
            max_lines_per_sec: 50,
            max_day_mb: 100,
        }
    }
}

/// TLS for the staff UI/API (HTTPS on `http.listen`) and, with `mqtt.tls_listen`, for devices.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain (the box's certificate first).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the certificate.
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }
}

/// Self-update (docs/releases.md, "The store"). No `public_key`: updates are off.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpdatesConfig {
    /// The text of `release.pub` (`ed25519:<base64>`); packages must be signed with its key.
    pub public_key: String,
    /// `false` turns updates off even with a key (assignments are refused and reported).
    pub enabled: bool,
    /// Store-local `HH:MM-HH:MM` in which an install may start (may wrap past midnight).
    pub window: String,
    /// Store-local `HH:MM-HH:MM` in which no install starts.
    pub trading_hours: String,
    /// How long a new version must run healthy before it is committed.
    pub probation_seconds: u64,
}

impl Default for UpdatesConfig {
    fn default() -> Self {
        UpdatesConfig {
            public_key: String::new(),
            enabled: true,
            window: "02:00-05:00".into(),
            trading_hours: "07:00-22:00".into(),
            probation_seconds: 300,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HqServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub admin_token: Secret,
    pub admin_token_file: Option<PathBuf>,
    /// Authored events kept in the feed log (0: all). Stores whose cursor is older get 410 and
    /// rebuild from the snapshot.
    pub retain_events: u64,
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`: keep all HQ state in PostgreSQL (several HQ
    /// nodes may share it); empty: the SQLite file in `data_dir`.
    pub database_url: Secret,
    pub database_url_file: Option<PathBuf>,
    /// Seconds a client has to send a request's headers (and a kept-alive connection may wait
    /// for its next request).
    pub header_timeout_secs: u64,
    /// Seconds a connection may pass with no byte read or written; above the feed's longest
    /// long-poll (60 s).
    pub idle_timeout_secs: u64,
    /// Open connections from one address. High by default: a load balancer or a chain's NAT
    /// puts many stores behind one address.
    pub max_connections_per_client: usize,
    /// Open connections in all (each store holds one long-poll and one push at most).
    pub max_connections: usize,
    // --- releases ---
    /// Public keys (`ed25519:…`, the text of `release.pub`) uploaded releases must be signed
    /// with; several for key rotation. Empty: HQ refuses every release upload.
    pub release_public_keys: Vec<String>,
    /// Largest release package accepted by `POST /hq/v1/releases`.
    pub max_release_bytes: u64,
    /// Seconds between rollout engine ticks (it also ticks right after a `release.status` push
    /// and after every rollout change).
    pub rollout_tick_seconds: u64,
    // --- console fleet view (docs/hq.md) ---
    /// A store not seen (no feed request, no push) for longer than this is offline, in seconds.
    /// Stores long-poll every `hq.poll_wait_secs` (25 s by default), so keep it above that.
    pub offline_after_seconds: u64,
    /// Feed lag above this many events marks a store behind.
    pub behind_events: u64,
    /// Feed lag above this many seconds (age of the oldest HQ event not applied) marks it behind.
    pub behind_seconds: u64,
    /// Events waiting in a store's outbox above this mark it degraded.
    pub backlog_events: u64,
    /// Live fleet streams (`/hq/v1/fleet/stream`) one HQ node serves at once, and per user.
    pub fleet_streams: usize,
    pub fleet_streams_per_user: usize,
    // --- support desk notifications (docs/hq.md) ---
    /// HQ's address as staff open it (`https://hq.example/`); links in notifications start with
    /// it. Empty: links are paths on HQ.
    pub public_url: String,
    /// Delivery attempts of one notification before it is given up (recorded as failed).
    pub desk_notify_attempts: u32,
    /// Seconds before the first retry; each later retry waits twice as long.
    pub desk_retry_base_secs: u64,
    /// Seconds a webhook request may take (connect, send, status line).
    pub desk_webhook_timeout_secs: u64,
    /// SMTP server for desk e-mail (empty: e-mail notifications fail, recorded as such).
    pub smtp_host: String,
    pub smtp_port: u16,
    /// `none` (plain, for a relay on the same machine or a test), `starttls` or `tls`.
    pub smtp_tls: String,
    /// Sender address of desk e-mail.
    pub smtp_from: String,
    pub smtp_username: String,
    /// File holding the SMTP password (with `smtp_username`).
    pub smtp_password_file: Option<PathBuf>,
}

impl Default for HqServerConfig {
    fn default() -> Self {
        HqServerConfig {
            listen: "127.0.0.1:8090".parse().unwrap(),
            data_dir: PathBuf::from("./storebox-hq-data"),
            admin_token: Secret::default(),
            admin_token_file: None,
            retain_events: 0,
            database_url: Secret::default(),
            database_url_file: None,
            header_timeout_secs: 10,
            idle_timeout_secs: 120,
            max_connections_per_client: 4096,
            max_connections: 4096,
            release_public_keys: Vec::new(),
            max_release_bytes: 256 << 20,
            rollout_tick_seconds: 5,
            offline_after_seconds: 90,
            behind_events: 1000,
            behind_seconds: 600,
            backlog_events: 1000,
            fleet_streams: 64,
            fleet_streams_per_user: 4,
            public_url: String::new(),
            desk_notify_attempts: 8,
            desk_retry_base_secs: 30,
            desk_webhook_timeout_secs: 10,
            smtp_host: String::new(),
            smtp_port: 587,
            smtp_tls: "starttls".into(),
            smtp_from: String::new(),
            smtp_username: String::new(),
            smtp_password_file: None,
        }
    }
}

impl Config {
    /// Loads the config: defaults, then `file` (if given), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Same as [`Config::load`] with an explicit environment, for tests.
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (mut table, origin) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                let table: toml::Table =
                    toml::from_str(&text).map_err(|e| ConfigError::Syntax {
                        path: path.to_path_buf(),
                        message: e.message().to_string(),
                    })?;
                (table, path.display().to_string())
            }
            None => (toml::Table::new(), "built-in defaults".to_string()),
        };
        let mut from_env = Vec::new();
        for (var, value) in env {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let Some((section, key)) = rest.split_once("__") else {
                continue;
            };
            if section.is_empty() || key.is_empty() {
                return Err(ConfigError::Env {
                    var,
                    message: "expected STOREBOX_SECTION__KEY".into(),
                });
            }
            let section = section.to_ascii_lowercase();
            let key = key.to_ascii_lowercase();
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(section_table) = entry.as_table_mut() else {
                return Err(ConfigError::Env {
                    var,
                    message: format!("[{section}] is not a section"),
                });
            };
            section_table.insert(key.clone(), env_value(&value));
            from_env.push(format!("{section}.{key}"));
        }
        let origin_for = |key: &str| {
            if from_env.iter().any(|k| key.starts_with(k.as_str())) {
                "environment".to_string()
            } else {
                origin.clone()
            }
        };
        let value = toml::Value::Table(table);
        let mut config: Config = serde_path_to_error::deserialize(value.clone()).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.inner().to_string();
            // toml appends "in `key`"; we name the key ourselves, and the value given.
            let mut message = inner
                .split("\nin `")
                .next()
                .unwrap_or(&inner)
                .trim()
                .to_string();
            let given = key
                .split('.')
                .try_fold(&value, |v, k| v.get(k))
                .filter(|v| !v.is_table());
            if let Some(given) = given {
                message = format!("{message} (value: {given})");
            }
            let key = if key == "." {
                "(top level)".into()
            } else {
                key
            };
            key_error(&origin_for(&key), &key, message)
        })?;
        config.resolve_secrets()?;
        config.validate().map_err(|(key, msg)| {
            let origin = origin_for(&key);
            key_error(&origin, &key, msg)
        })?;
        Ok(config)
    }

    fn resolve_secrets(&mut self) -> Result<(), ConfigError> {
        fn read_secret(key: &str, path: &Path) -> Result<Secret, ConfigError> {
            let text = std::fs::read_to_string(path).map_err(|e| {
                key_error(
                    "config",
                    key,
                    format!("cannot read secret file {}: {e}", path.display()),
                )
            })?;
            let text = text.trim();
            if text.is_empty() {
                return Err(key_error(
                    "config",
                    key,
                    format!("secret file {} is empty", path.display()),
                ));
            }
            Ok(Secret::new(text))
        }
        if let Some(path) = &self.hq.token_file {
            self.hq.token = read_secret("hq.token_file", path)?;
        }
        if let Some(path) = &self.hq_server.admin_token_file {
            self.hq_server.admin_token = read_secret("hq_server.admin_token_file", path)?;
        }
        if let Some(path) = &self.hq_server.database_url_file {
            self.hq_server.database_url = read_secret("hq_server.database_url_file", path)?;
        }
        Ok(())
    }

    /// Checks values serde cannot: returns the key and what is allowed.
    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, msg: String| Err((key.to_string(), msg));
        let ranges: [(&str, u64, u64, u64); 15] = [
            ("log.max_day_mb", self.log.max_day_mb, 1, 100_000),
            (
                "hq.max_response_mb",
                self.hq.max_response_mb as u64,
                1,
                4096,
            ),
            (
                "mqtt.max_subscriptions",
                self.mqtt.max_subscriptions as u64,
                1,
                64,
            ),
            (
                "mqtt.max_inflight_qos2",
                self.mqtt.max_inflight_qos2 as u64,
                1,
                65535,
            ),
            (
                "http.header_timeout_secs",
                self.http.header_timeout_secs,
                1,
                300,
            ),
            (
                "http.idle_timeout_secs",
                self.http.idle_timeout_secs,
                2,
                86400,
            ),
            (
                "http.max_connections_per_client",
                self.http.max_connections_per_client as u64,
                1,
                100_000,
            ),
            (
                "http.max_connections",
                self.http.max_connections as u64,
                1,
                100_000,
            ),
            (
                "http.max_password_checks",
                self.http.max_password_checks as u64,
                1,
                64,
            ),
            (
                "log.max_lines_per_sec",
                self.log.max_lines_per_sec as u64,
                1,
                1_000_000,
            ),
            ("log.keep_days", self.log.keep_days as u64, 1, 3650),
            (
                "hq_server.header_timeout_secs",
                self.hq_server.header_timeout_secs,
                1,
                300,
            ),
            // Above the feed's longest long-poll, or every idle long-poll would be cut.
            (
                "hq_server.idle_timeout_secs",
                self.hq_server.idle_timeout_secs,
                61,
                86400,
            ),
            (
                "hq_server.max_connections_per_client",
                self.hq_server.max_connections_per_client as u64,
                1,
                1_000_000,
            ),
            (
                "hq_server.max_connections",
                self.hq_server.max_connections as u64,
                1,
                1_000_000,
            ),
        ];
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return bad(
                "tls.cert_file",
                "tls.cert_file and tls.key_file go together: give both or neither".into(),
            );
        }
        for (key, path) in [
            ("tls.cert_file", &self.tls.cert_file),
            ("tls.key_file", &self.tls.key_file),
        ] {
            if let Some(path) = path {
                if let Err(e) = std::fs::metadata(path) {
                    return bad(key, format!("cannot read {}: {e}", path.display()));
                }
            }
        }
        for (kind, types) in &self.mqtt.event_types {
            if !crate::devices::registry::KINDS.contains(&kind.as_str()) {
                return bad(
                    "mqtt.event_types",
                    format!(
                        "{kind:?} is not a device kind ({})",
                        crate::devices::registry::KINDS.join(", ")
                    ),
                );
            }
            if let Some(t) = types
                .iter()
                .find(|t| !crate::devices::payloads::EVENT_TYPES.contains(&t.as_str()))
            {
                return bad(
                    "mqtt.event_types",
                    format!(
                        "{kind}: {t:?} is not a device event type ({})",
                        crate::devices::payloads::EVENT_TYPES.join(", ")
                    ),
                );
            }
        }
        if self.mqtt.tls_listen.is_some() && !self.tls.enabled() {
            return bad(
                "mqtt.tls_listen",
                "needs a certificate: set tls.cert_file and tls.key_file".into(),
            );
        }
        for (key, v, lo, hi) in ranges {
            if !(lo..=hi).contains(&v) {
                return bad(key, format!("{v} must be between {lo} and {hi}"));
            }
        }
        if self.version == 0 || self.version > CONFIG_VERSION {
            return bad(
                "version",
                format!(
                    "{} is not supported; this storebox reads config versions 1 to {CONFIG_VERSION}",
                    self.version
                ),
            );
        }
        let id = &self.store.id;
        if id.is_empty()
            || id.len() > 64
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return bad(
                "store.id",
                format!("{id:?} must be 1-64 characters of letters, digits, '-' or '_'"),
            );
        }
        if jiff::tz::TimeZone::get(&self.store.timezone).is_err() {
            return bad(
                "store.timezone",
                format!(
                    "{:?} is not a known IANA time zone (for example \"Europe/Rome\")",
                    self.store.timezone
                ),
            );
        }
        let cur = &self.store.currency;
        if cur.len() != 3 || !cur.chars().all(|c| c.is_ascii_uppercase()) {
            return bad(
                "store.currency",
                format!("{cur:?} must be a three-letter ISO 4217 code such as \"EUR\""),
            );
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.mqtt.max_payload_bytes) {
            return bad(
                "mqtt.max_payload_bytes",
                format!(
                    "{} must be between 1024 and 16777216",
                    self.mqtt.max_payload_bytes
                ),
            );
        }
        if !(1..=100_000).contains(&self.mqtt.max_connections) {
            return bad(
                "mqtt.max_connections",
                format!("{} must be between 1 and 100000", self.mqtt.max_connections),
            );
        }
        if !(4..=4096).contains(&self.mqtt.buffer_mb) {
            return bad(
                "mqtt.buffer_mb",
                format!("{} must be between 4 and 4096", self.mqtt.buffer_mb),
            );
        }
        if !(1..=65535).contains(&self.mqtt.max_inflight) {
            return bad(
                "mqtt.max_inflight",
                format!("{} must be between 1 and 65535", self.mqtt.max_inflight),
            );
        }
        if !(100..=10_000_000).contains(&self.mqtt.ingest_queue) {
            return bad(
                "mqtt.ingest_queue",
                format!(
                    "{} must be between 100 and 10000000",
                    self.mqtt.ingest_queue
                ),
            );
        }
        if !(5..=7 * 24 * 60).contains(&self.http.session_minutes) {
            return bad(
                "http.session_minutes",
                format!("{} must be between 5 and 10080", self.http.session_minutes),
            );
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            return bad("storage.data_dir", "must not be empty".into());
        }
        if !(1..=3650).contains(&self.storage.telemetry_keep_days) {
            return bad(
                "storage.telemetry_keep_days",
                format!(
                    "{} must be between 1 and 3650",
                    self.storage.telemetry_keep_days
                ),
            );
        }
        if !(100..=10_000_000).contains(&self.storage.dead_letter_keep) {
            return bad(
                "storage.dead_letter_keep",
                format!(
                    "{} must be between 100 and 10000000",
                    self.storage.dead_letter_keep
                ),
            );
        }
        if self.storage.price_cache_mb > 4096 {
            return bad(
                "storage.price_cache_mb",
                format!(
                    "{} must be between 0 (off) and 4096",
                    self.storage.price_cache_mb
                ),
            );
        }
        if self.storage.outbox_max_mb == 0 {
            return bad("storage.outbox_max_mb", "must be at least 1".into());
        }
        const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
        if !LEVELS.contains(&self.log.level.as_str()) {
            return bad(
                "log.level",
                format!("{:?} must be one of {}", self.log.level, LEVELS.join(", ")),
            );
        }
        if !(1..=3650).contains(&self.log.keep_days) {
            return bad(
                "log.keep_days",
                format!("{} must be between 1 and 3650", self.log.keep_days),
            );
        }
        if !self.hq.url.is_empty() {
            let ok = (self.hq.url.starts_with("https://") || self.hq.url.starts_with("http://"))
                && self.hq.url.len() > "https://".len();
            if !ok {
                return bad(
                    "hq.url",
                    format!(
                        "{:?} must be an http:// or https:// URL, or empty for a standalone store",
                        self.hq.url
                    ),
                );
            }
            if self.hq.token.is_empty() {
                return bad(
                    "hq.token",
                    "hq.url is set, so a store token is required (hq.token or hq.token_file)"
                        .into(),
                );
            }
        }
        if !(1..=300).contains(&self.hq.poll_wait_secs) {
            return bad(
                "hq.poll_wait_secs",
                format!("{} must be between 1 and 300", self.hq.poll_wait_secs),
            );
        }
        if !(1..=3600).contains(&self.hq.retry_max_secs) {
            return bad(
                "hq.retry_max_secs",
                format!("{} must be between 1 and 3600", self.hq.retry_max_secs),
            );
        }
        if !(1..=10_000).contains(&self.hq.batch_size) {
            return bad(
                "hq.batch_size",
                format!("{} must be between 1 and 10000", self.hq.batch_size),
            );
        }
        if !(1..=10_000).contains(&self.hq.feed_batch_size) {
            return bad(
                "hq.feed_batch_size",
                format!("{} must be between 1 and 10000", self.hq.feed_batch_size),
            );
        }
        if !(60..=30 * 86_400).contains(&self.hq.telemetry_ttl_secs) {
            return bad(
                "hq.telemetry_ttl_secs",
                format!(
                    "{} must be between 60 and 2592000",
                    self.hq.telemetry_ttl_secs
                ),
            );
        }
        if !(1..=3600).contains(&self.hq.rollup_interval_secs) {
            return bad(
                "hq.rollup_interval_secs",
                format!(
                    "{} must be between 1 and 3600",
                    self.hq.rollup_interval_secs
                ),
            );
        }
        for h in &self.hq.allow_hosts {
            if h.is_empty() || h.contains(['/', ' ', ':']) {
                return bad(
                    "hq.allow_hosts",
                    format!("{h:?} must be a host name or address without scheme, port or path"),
                );
            }
        }
        // --- updates ---
        if !self.updates.public_key.trim().is_empty() {
            if let Err(e) = crate::proto::release::parse_public_key(&self.updates.public_key) {
                return bad(
                    "updates.public_key",
                    format!("{e} (give the one line of release.pub, or leave it empty to turn updates off)"),
                );
            }
        }
        for (key, value) in [
            ("updates.window", &self.updates.window),
            ("updates.trading_hours", &self.updates.trading_hours),
        ] {
            match value.parse::<crate::updates::DailyRange>() {
                Err(e) => return bad(key, format!("{e} (store-local, e.g. \"02:00-05:00\")")),
                Ok(r) if r.start == r.end && key == "updates.window" => {
                    return bad(
                        key,
                        format!("`{value}` is empty: no install could ever start"),
                    )
                }
                Ok(_) => {}
            }
        }
        if !(1..=86_400).contains(&self.updates.probation_seconds) {
            return bad(
                "updates.probation_seconds",
                format!(
                    "{} must be between 1 and 86400",
                    self.updates.probation_seconds
                ),
            );
        }
        // --- end updates ---
        // --- console fleet view ---
        if self.hq_server.offline_after_seconds == 0 {
            return bad(
                "hq_server.offline_after_seconds",
                "must be at least 1 (seconds without contact before a store counts as offline)"
                    .into(),
            );
        }
        if self.hq_server.fleet_streams == 0 || self.hq_server.fleet_streams_per_user == 0 {
            return bad(
                "hq_server.fleet_streams",
                "fleet_streams and fleet_streams_per_user must be at least 1".into(),
            );
        }
        let url = self.hq_server.database_url.expose();
        if !(url.is_empty() || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return bad(
                "hq_server.database_url",
                "must be a postgres://USER@HOST/DB URL (or empty for the SQLite file)".into(),
            );
        }
        // --- releases ---
        for (i, k) in self.hq_server.release_public_keys.iter().enumerate() {
            if let Err(m) = crate::proto::release::parse_public_key(k) {
                return bad(
                    "hq_server.release_public_keys",
                    format!("entry {i} ({k:?}): {m}"),
                );
            }
        }
        if !(1024..=(64u64 << 30)).contains(&self.hq_server.max_release_bytes) {
            return bad(
                "hq_server.max_release_bytes",
                format!(
                    "{} must be between 1024 and 68719476736",
                    self.hq_server.max_release_bytes
                ),
            );
        }
        if !(1..=3600).contains(&self.hq_server.rollout_tick_seconds) {
            return bad(
                "hq_server.rollout_tick_seconds",
                format!(
                    "{} must be between 1 and 3600",
                    self.hq_server.rollout_tick_seconds
                ),
            );
        }
        Ok(())
    }

    /// The store's time zone (validated at load).
    pub fn timezone(&self) -> jiff::tz::TimeZone {
        jiff::tz::TimeZone::get(&self.store.timezone).unwrap_or(jiff::tz::TimeZone::UTC)
    }

    pub fn db_path(&self) -> PathBuf {
        self.storage.data_dir.join("storebox.db")
    }

    pub fn log_dir(&self) -> PathBuf {
        self.log
            .dir
            .clone()
            .unwrap_or_else(|| self.storage.data_dir.join("logs"))
    }
}

/// Environment values are read as TOML values when they parse as one (numbers, booleans, arrays),
/// otherwise as plain strings, so `STOREBOX_MQTT__LISTEN=0.0.0.0:1883` needs no quoting.
fn env_value(raw: &str) -> toml::Value {
    let wrapped = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&wrapped) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("storebox.toml");
        std::fs::write(&path, text).unwrap();
        Config::load_with_env(
            Some(&path),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_need_no_file() {
        let c = Config::load_with_env(None, Vec::new()).unwrap();
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.mqtt.listen.to_string(), "127.0.0.1:1883");
        assert_eq!(c.storage.data_dir, PathBuf::from("./storebox-data"));
        assert!(c.hq.url.is_empty());
    }

    #[test]
    fn env_overrides_file() {
        let c = load_str(
            "[mqtt]\nlisten = \"0.0.0.0:1883\"\n",
            &[("STOREBOX_MQTT__LISTEN", "127.0.0.1:2883")],
        )
        .unwrap();
        assert_eq!(c.mqtt.listen.to_string(), "127.0.0.1:2883");
        let c = load_str("", &[("STOREBOX_MQTT__MAX_PAYLOAD_BYTES", "2048")]).unwrap();
        assert_eq!(c.mqtt.max_payload_bytes, 2048);
    }

    #[test]
    fn updates_section_is_validated_with_the_key_named() {
        let c = load_str("", &[]).unwrap();
        assert_eq!(
            (c.updates.window.as_str(), c.updates.trading_hours.as_str()),
            ("02:00-05:00", "07:00-22:00")
        );
        assert_eq!(c.updates.probation_seconds, 300);
        assert!(c.updates.enabled && c.updates.public_key.is_empty());
        for (text, key, says) in [
            (
                "[updates]\npublic_key = \"abc\"\n",
                "updates.public_key",
                "ed25519:",
            ),
            (
                "[updates]\nwindow = \"2-5\"\n",
                "updates.window",
                "HH:MM-HH:MM",
            ),
            (
                "[updates]\ntrading_hours = \"07:00\"\n",
                "updates.trading_hours",
                "HH:MM-HH:MM",
            ),
            (
                "[updates]\nprobation_seconds = 0\n",
                "updates.probation_seconds",
                "between 1 and 86400",
            ),
            (
                "[updates]\nwindow = \"03:00-03:00\"\n",
                "updates.window",
                "is empty",
            ),
        ] {
            let e = load_str(text, &[]).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(says), "{text}: {e}");
        }
        let key = crate::proto::release::public_key_text(
            &ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key(),
        );
        let c = load_str(
            "",
            &[
                ("STOREBOX_UPDATES__PUBLIC_KEY", &key),
                ("STOREBOX_UPDATES__WINDOW", "23:00-04:00"),
            ],
        )
        .unwrap();
        assert_eq!(c.updates.window, "23:00-04:00");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = load_str("[mqtt]\nlisen = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("mqtt"), "{e}");
        assert!(e.contains("lisen"), "{e}");
    }

    #[test]
    fn release_public_keys_are_checked_by_entry() {
        let good = crate::proto::release::public_key_text(
            &ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key(),
        );
        let c = load_str(
            &format!("[hq_server]\nrelease_public_keys = [\"{good}\"]\n"),
            &[],
        )
        .unwrap();
        assert_eq!(c.hq_server.release_public_keys.len(), 1);
        assert_eq!(c.hq_server.max_release_bytes, 256 << 20);
        let e = load_str(
            &format!("[hq_server]\nrelease_public_keys = [\"{good}\", \"ssh-ed25519 AAAA\"]\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("hq_server.release_public_keys") && e.contains("entry 1"),
            "{e}"
        );
        let e = load_str("[hq_server]\nmax_release_bytes = 10\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("hq_server.max_release_bytes"), "{e}");
    }

    #[test]
    fn bad_value_names_key_and_value() {
        let e = load_str("[mqtt]\nlisten = \"nowhere\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mqtt.listen") && e.contains("\"nowhere\""),
            "{e}"
        );
        assert!(!e.contains("in `"), "{e}");
        let e = load_str("[store]\ntimezone = \"Mars/Olympus\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("store.timezone") && e.contains("Mars/Olympus"),
            "{e}"
        );
        let e = load_str("", &[("STOREBOX_LOG__LEVEL", "loud")])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("environment: log.level") && e.contains("loud"),
            "{e}"
        );
    }

    #[test]
    fn feed_page_size_is_checked_and_separate_from_the_push_batch() {
        let c = Config::load_with_env(None, Vec::new()).unwrap();
        assert_eq!((c.hq.batch_size, c.hq.feed_batch_size), (1000, 5000));
        let c = load_str("[hq]\nfeed_batch_size = 10000\n", &[]).unwrap();
        assert_eq!((c.hq.batch_size, c.hq.feed_batch_size), (1000, 10_000));
        let c = load_str("", &[("STOREBOX_HQ__FEED_BATCH_SIZE", "500")]).unwrap();
        assert_eq!(c.hq.feed_batch_size, 500);
        for bad in ["0", "10001"] {
            let e = load_str(&format!("[hq]\nfeed_batch_size = {bad}\n"), &[])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("hq.feed_batch_size") && e.contains("between 1 and 10000"),
                "{e}"
            );
        }
    }

    #[test]
    fn price_cache_size_is_checked() {
        let c = Config::load_with_env(None, Vec::new()).unwrap();
        assert_eq!(c.storage.price_cache_mb, 40);
        let c = load_str("[storage]\nprice_cache_mb = 0\n", &[]).unwrap();
        assert_eq!(c.storage.price_cache_mb, 0);
        let e = load_str("[storage]\nprice_cache_mb = 5000\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("storage.price_cache_mb") && e.contains("between 0 (off) and 4096"),
            "{e}"
        );
    }

    #[test]
    fn secret_files_are_read_and_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("hq.token");
        std::fs::write(&token, "s3cret-token\n").unwrap();
        let c = load_str(
            &format!(
                "[hq]\nurl = \"http://127.0.0.1:1\"\ntoken_file = \"{}\"\n",
                token.display()
            ),
            &[],
        )
        .unwrap();
        assert_eq!(c.hq.token.expose(), "s3cret-token");
        assert!(!format!("{c:?}").contains("s3cret"));
        let e = load_str("[hq]\ntoken_file = \"/nonexistent/x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("hq.token_file") && e.contains("/nonexistent/x"),
            "{e}"
        );
    }
}
