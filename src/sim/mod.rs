//! Virtual in-store devices (`storebox simulate`) and the one-command demo (`storebox demo`).
//!
//! Why it exists: features that involve devices — price changes reaching shelf labels, a printer
//! running out of paper, a lane losing its network mid-basket — must be testable, demonstrable and
//! rehearsable in a pilot store without real hardware. Each virtual device connects to the box like
//! a real one (its own credentials, docs/mqtt.md to the letter) and is steered through a small
//! control API on loopback (docs/simulator.md). The simulator uses only the box's public MQTT and
//! HTTP contract, never its internals, so what it proves holds for real devices too.
//!
//! - [`config`]: TOML file / flags (counts per kind, seed, rates)
//! - [`kinds`]: what each kind does, as plain functions (readings, thresholds, jams, commands)
//! - [`device`]: one device's MQTT session, state and task
//! - [`control`]: the control HTTP API
//! - [`cli`]: the `simulate` and `demo` commands
//! - [`boxapi`]: the box's HTTP API as the simulator uses it (provisioning, catalog, pricing)
//! - [`sample`]: a realistic sample catalog as HQ events (JSON lines)
//! - [`demo`]: `storebox demo`, a store with devices and a catalog in one process

pub mod boxapi;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod device;
pub mod kinds;
pub mod sample;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::clock::SharedClock;
use boxapi::{BoxApi, CatalogEntry};
use config::{CredentialsFile, SimConfig};
use device::{Action, DeviceHandle, Spec};
use kinds::Kind;

/// Catalog items a simulator reads from the box for lanes and scales.
const POOL_MAX: usize = 1000;

/// A running simulator: its devices and its control API.
pub struct Simulator {
    pub control: SocketAddr,
    devices: Arc<BTreeMap<String, DeviceHandle>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    server: tokio::task::JoinHandle<()>,
    stop_server: Option<tokio::sync::oneshot::Sender<()>>,
}

/// A device to run, before it is started.
struct Planned {
    id: String,
    kind: Kind,
    password: String,
    sku: Option<String>,
}

impl Simulator {
    /// Gets credentials (provisioning through the box's API, or from the credentials file),
    /// starts every device and the control API. Returns once the control API is bound; devices
    /// connect in the background.
    pub async fn start(cfg: SimConfig, clock: SharedClock) -> anyhow::Result<Simulator> {
        cfg.validate()?;
        let token = cfg.token()?;
        let api = BoxApi::new(&cfg.target.http, token);
        let (mqtt_host, mqtt_port) = split_host_port(&cfg.target.mqtt)
            .with_context(|| format!("box.mqtt {:?} must be host:port", cfg.target.mqtt))?;

        // Items for lanes, scales and labels.
        let mut pool: Vec<CatalogEntry> = if api.has_token() {
            api.catalog(POOL_MAX).await?
        } else {
            Vec::new()
        };
        for s in &cfg.labels.skus {
            if !pool.iter().any(|e| &e.sku == s) {
                pool.push(CatalogEntry {
                    sku: s.clone(),
                    name: String::new(),
                    department: None,
                    unit: "each".into(),
                });
            }
        }
        let label_skus: Vec<String> = if cfg.labels.skus.is_empty() {
            pool.iter().take(8).map(|e| e.sku.clone()).collect()
        } else {
            cfg.labels.skus.clone()
        };

        let mut planned = Vec::new();
        if let Some(path) = &cfg.target.credentials_file {
            let file = CredentialsFile::from_file(path)?;
            for (i, c) in file.devices.into_iter().enumerate() {
                let kind = Kind::parse(&c.kind).with_context(|| {
                    format!(
                        "{}: device[{i}].kind {:?} must be lane, scale, label, fridge or printer",
                        path.display(),
                        c.kind
                    )
                })?;
                planned.push(Planned {
                    id: c.id,
                    kind,
                    password: c.password,
                    sku: c.sku,
                });
            }
        } else {
            let counts = [
                (Kind::Lane, cfg.devices.lanes),
                (Kind::Scale, cfg.devices.scales),
                (Kind::Label, cfg.devices.labels),
                (Kind::Fridge, cfg.devices.fridges),
                (Kind::Printer, cfg.devices.printers),
            ];
            for (kind, n) in counts {
                for i in 1..=n {
                    let id = format!("{}-{}-{i}", cfg.prefix, kind.as_str());
                    let name = format!("virtual {} {i}", kind.as_str());
                    let password = api.provision(&id, kind.as_str(), &name).await?;
                    planned.push(Planned {
                        id,
                        kind,
                        password,
                        sku: None,
                    });
                }
            }
        }
        for (n, p) in planned
            .iter_mut()
            .filter(|p| p.kind == Kind::Label)
            .enumerate()
        {
            if p.sku.is_none() && !label_skus.is_empty() {
                p.sku = Some(label_skus[n % label_skus.len()].clone());
            }
        }

        let pool = Arc::new(pool);
        let run = format!("{:x}", clock.now().as_millisecond());
        let mut devices = BTreeMap::new();
        let mut tasks = Vec::new();
        for (i, p) in planned.into_iter().enumerate() {
            let (handle, task) = device::spawn(Spec {
                id: p.id.clone(),
                kind: p.kind,
                password: p.password,
                label_sku: p.sku,
                mqtt_host: mqtt_host.clone(),
                mqtt_port,
                firmware: cfg.firmware.clone(),
                rates: cfg.rates.clone(),
                seed: cfg
                    .seed
                    .wrapping_add((i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                run: run.clone(),
                api: api.clone(),
                pool: pool.clone(),
                clock: clock.clone(),
            });
            if devices.insert(p.id.clone(), handle).is_some() {
                anyhow::bail!("device id {:?} appears twice", p.id);
            }
            tasks.push(task);
        }
        let devices = Arc::new(devices);

        let listener = tokio::net::TcpListener::bind(cfg.control.listen)
            .await
            .with_context(|| format!("control.listen {}", cfg.control.listen))?;
        let control = listener.local_addr()?;
        let app = control::router(control::Ctl {
            devices: devices.clone(),
        });
        let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let r = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "simulator control API stopped");
            }
        });
        Ok(Simulator {
            control,
            devices,
            tasks,
            server,
            stop_server: Some(stop_server),
        })
    }

    /// `http://127.0.0.1:PORT` of the control API.
    pub fn control_url(&self) -> String {
        format!("http://{}", self.control)
    }

    pub fn device_ids(&self) -> Vec<String> {
        self.devices.keys().cloned().collect()
    }

    /// (connected, total) devices.
    pub fn connected(&self) -> (usize, usize) {
        let n = self
            .devices
            .values()
            .filter(|d| d.state.lock().connected)
            .count();
        (n, self.devices.len())
    }

    /// Disconnects every device cleanly (offline status, DISCONNECT) and stops the control API.
    pub async fn shutdown(mut self) {
        for d in self.devices.values() {
            let _ = tokio::time::timeout(Duration::from_secs(3), d.act(Action::Shutdown)).await;
        }
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        if let Some(s) = self.stop_server.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.server).await;
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.server.abort();
    }
}

fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_port() {
        assert_eq!(
            super::split_host_port("127.0.0.1:1883"),
            Some(("127.0.0.1".into(), 1883))
        );
        assert_eq!(super::split_host_port("1883"), None);
        assert_eq!(super::split_host_port("[::1]:9"), Some(("::1".into(), 9)));
    }
}
