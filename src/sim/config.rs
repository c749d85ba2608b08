//! Simulator configuration: a TOML file (`storebox simulate --file sim.toml`) and/or flags, flags
//! winning. Unknown keys are errors that name the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Everything `storebox simulate` needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Drives every random choice (items scanned, weights, readings); same seed, same run.
    pub seed: u64,
    /// Prefix of provisioned device ids: `{prefix}-lane-1`, `{prefix}-label-3`, …
    pub prefix: String,
    /// Firmware string the devices report in their status.
    pub firmware: String,
    #[serde(rename = "box")]
    pub target: BoxTarget,
    pub control: ControlConfig,
    pub devices: DeviceCounts,
    pub rates: Rates,
    pub labels: LabelConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            prefix: "sim".into(),
            firmware: "sim-1.0".into(),
            target: BoxTarget::default(),
            control: ControlConfig::default(),
            devices: DeviceCounts::default(),
            rates: Rates::default(),
            labels: LabelConfig::default(),
        }
    }
}

/// Where the box is and how the simulator gets device credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BoxTarget {
    /// Base URL of the box's HTTP API.
    pub http: String,
    /// The box's MQTT address (host:port).
    pub mqtt: String,
    /// Bearer token of role manager: provisions devices, and lanes use it to read the catalog
    /// and price baskets. Not needed with a credentials file (lanes then use `labels.skus` and
    /// MQTT price requests).
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Take device ids and passwords from this TOML file instead of provisioning them.
    pub credentials_file: Option<PathBuf>,
}

impl Default for BoxTarget {
    fn default() -> Self {
        BoxTarget {
            http: "http://127.0.0.1:8080".into(),
            mqtt: "127.0.0.1:1883".into(),
            token: None,
            token_file: None,
            credentials_file: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Loopback address of the control API; port 0 picks a free port (printed at start).
    pub listen: SocketAddr,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

/// How many devices of each kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceCounts {
    pub lanes: u32,
    pub scales: u32,
    pub labels: u32,
    pub fridges: u32,
    pub printers: u32,
}

impl Default for DeviceCounts {
    fn default() -> Self {
        DeviceCounts {
            lanes: 1,
            scales: 1,
            labels: 2,
            fridges: 1,
            printers: 1,
        }
    }
}

impl DeviceCounts {
    pub fn total(&self) -> u32 {
        self.lanes + self.scales + self.labels + self.fridges + self.printers
    }
}

/// Timings, in milliseconds. 0 disables an automatic behaviour (it can still be triggered through
/// the control API).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rates {
    /// Telemetry (battery, temperature, paper level) every this often.
    pub telemetry_ms: u64,
    /// A lane scans one item this often and checks out after `basket_items` items.
    pub scan_ms: u64,
    pub basket_items: u32,
    /// A scale weighs an item this often.
    pub weigh_ms: u64,
    /// An unacknowledged event is sent again after this long.
    pub resend_ms: u64,
    /// MQTT keepalive, seconds.
    pub keepalive_s: u64,
    /// Wait before reconnecting after a lost connection.
    pub reconnect_ms: u64,
    /// Lanes pause about this long between customers (0.3-1.7×, a quarter in a rush) and each
    /// customer's basket holds 1 to 2×`basket_items`−1 items. 0: the next basket starts at once
    /// and every basket holds `basket_items`.
    pub customer_gap_ms: u64,
    /// Every this often, the last `rush_ms` of the period are a rush at every lane: shorter
    /// pauses, bigger baskets. 0: no rush.
    pub rush_every_ms: u64,
    pub rush_ms: u64,
    /// Each fridge has a door left ajar about this often (0.5-1.5×; the first one sooner): it
    /// warms past 8 °C, raising `DOOR_OPEN` then `TEMP_HIGH`, until the door closes 12-20
    /// telemetry periods later. 0: never.
    pub fridge_incident_every_ms: u64,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            telemetry_ms: 15_000,
            scan_ms: 0,
            basket_items: 5,
            weigh_ms: 0,
            resend_ms: 3_000,
            keepalive_s: 30,
            reconnect_ms: 1_000,
            customer_gap_ms: 0,
            rush_every_ms: 0,
            rush_ms: 60_000,
            fridge_incident_every_ms: 0,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelConfig {
    /// Skus the labels show, assigned in turn (label 1 → first sku, …, wrapping). Empty: the first
    /// items of the box's catalog. Lanes without a token scan these too.
    pub skus: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SimConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

impl SimConfig {
    /// Reads a TOML file; unknown keys and bad values are errors naming the key.
    pub fn from_file(path: &Path) -> Result<SimConfig, SimConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| SimConfigError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn from_toml(text: &str) -> Result<SimConfig, String> {
        let de = toml::Deserializer::parse(text).map_err(|e| e.to_string())?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.inner().message().to_string();
            if path == "." {
                inner
            } else {
                format!("key {path}: {inner}")
            }
        })
    }

    /// Checks the values that types alone do not.
    pub fn validate(&self) -> Result<(), SimConfigError> {
        let bad = |key: &'static str, message: &str| {
            Err(SimConfigError::Invalid {
                key,
                message: message.into(),
            })
        };
        if !self.control.listen.ip().is_loopback() {
            return bad(
                "control.listen",
                "the control API listens on loopback only (127.0.0.1 or ::1)",
            );
        }
        if self.prefix.is_empty()
            || self.prefix.len() > 32
            || !self
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            || self.prefix.starts_with("storebox")
        {
            return bad(
                "prefix",
                "1-32 characters of A-Z a-z 0-9 . - _, not starting with \"storebox\"",
            );
        }
        if self.devices.total() > 1000 {
            return bad("devices", "at most 1000 devices in one simulator");
        }
        if self.rates.keepalive_s == 0 || self.rates.keepalive_s > 600 {
            return bad("rates.keepalive_s", "must be 1-600 (the box refuses 0)");
        }
        if self.rates.resend_ms < 100 {
            return bad("rates.resend_ms", "must be at least 100");
        }
        if self.rates.reconnect_ms < 50 {
            return bad("rates.reconnect_ms", "must be at least 50");
        }
        if self.rates.basket_items == 0 || self.rates.basket_items > 100 {
            return bad("rates.basket_items", "must be 1-100");
        }
        if self.target.mqtt.parse::<SocketAddr>().is_err() && !self.target.mqtt.contains(':') {
            return bad("box.mqtt", "must be host:port");
        }
        if !(self.target.http.starts_with("http://") || self.target.http.starts_with("https://")) {
            return bad("box.http", "must be an http:// or https:// URL");
        }
        if self.target.credentials_file.is_none()
            && self.target.token.is_none()
            && self.target.token_file.is_none()
        {
            return bad(
                "box.token",
                "a manager token (box.token / box.token_file / --token) is needed to provision devices, or give box.credentials_file",
            );
        }
        Ok(())
    }

    /// The bearer token, read from `token_file` if given.
    pub fn token(&self) -> Result<Option<String>, SimConfigError> {
        if let Some(t) = &self.target.token {
            return Ok(Some(t.trim().to_string()));
        }
        if let Some(p) = &self.target.token_file {
            let t = std::fs::read_to_string(p).map_err(|source| SimConfigError::Read {
                path: p.display().to_string(),
                source,
            })?;
            return Ok(Some(t.trim().to_string()));
        }
        Ok(None)
    }
}

/// A credentials file: `[[device]]` tables with `id`, `kind`, `password` and, for labels, an
/// optional `sku`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsFile {
    #[serde(default, rename = "device")]
    pub devices: Vec<Credential>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    pub id: String,
    pub kind: String,
    pub password: String,
    #[serde(default)]
    pub sku: Option<String>,
}

impl CredentialsFile {
    pub fn from_file(path: &Path) -> Result<CredentialsFile, SimConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let de = toml::Deserializer::parse(&text).map_err(|e| SimConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        serde_path_to_error::deserialize(de).map_err(|e| SimConfigError::Parse {
            path: path.display().to_string(),
            message: format!("key {}: {}", e.path(), e.inner().message()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_overrides_defaults_and_unknown_keys_are_named() {
        let c = SimConfig::from_toml(
            "seed = 7\n[devices]\nlanes = 3\n[rates]\nresend_ms = 500\n[box]\ntoken = \"t\"\n",
        )
        .unwrap();
        assert_eq!((c.seed, c.devices.lanes, c.devices.labels), (7, 3, 2));
        assert_eq!(c.rates.resend_ms, 500);
        c.validate().unwrap();

        let e = SimConfig::from_toml("[devices]\nlanez = 3\n").unwrap_err();
        assert!(e.contains("lanez") && e.contains("devices"), "{e}");
        let e = SimConfig::from_toml("[rates]\nresend_ms = \"fast\"\n").unwrap_err();
        assert!(e.contains("rates.resend_ms"), "{e}");
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = SimConfig::default();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("box.token"), "{e}");
        c.target.token = Some("t".into());
        c.control.listen = "0.0.0.0:0".parse().unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("control.listen"), "{e}");
    }
}
