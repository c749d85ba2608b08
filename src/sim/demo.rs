//! `storebox demo`: a whole store on loopback in one command — the box, a sample catalog with a
//! price change and a promotion starting a couple of minutes after launch, a staff sign-in and a
//! dozen virtual devices of every kind — running until Ctrl-C.
//!
//! The steps are separate functions so the HQ can slot in (see [`run`]): start `storebox hq`,
//! register the store with it, and author the sample catalog through HQ instead of importing it.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::config::SimConfig;
use super::sample::{self, Sample, SampleOptions};
use super::Simulator;
use crate::app::{self, Running};
use crate::auth::{self, Role};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::db::Db;

/// Marks a directory as the demo's own, so it may be wiped at the next start.
const MARKER: &str = ".storebox-demo";

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where everything lives; removed and recreated at each start (only if it is empty or a
    /// previous demo's directory).
    pub dir: PathBuf,
    pub http: SocketAddr,
    pub mqtt: SocketAddr,
    pub control: SocketAddr,
    pub seed: u64,
    /// Minutes from launch to the scheduled price change and promotion.
    pub change_after_mins: i64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            dir: PathBuf::from("storebox-demo"),
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            mqtt: SocketAddr::from(([127, 0, 0, 1], 1883)),
            control: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: 42,
            change_after_mins: 2,
        }
    }
}

/// Facts the demo prints once it runs.
#[derive(Debug, Clone)]
pub struct DemoReady {
    pub ui: String,
    pub control: String,
    pub username: String,
    pub password: String,
    pub token: String,
    pub dir: PathBuf,
    pub devices: usize,
    pub sample: Sample,
}

/// Runs the demo until `shutdown` resolves; `on_ready` gets the addresses and sign-in.
pub async fn run<S, R>(
    opts: DemoOptions,
    clock: SharedClock,
    shutdown: S,
    on_ready: R,
) -> anyhow::Result<()>
where
    S: Future<Output = ()>,
    R: FnOnce(&DemoReady),
{
    let dir = prepare_dir(&opts.dir)?;
    // HQ (after the HQ branch is merged): start `storebox hq` here on loopback with its data in
    // `dir/hq`, add the store (`storebox hq store add demo-store`) and put the store token and
    // `[hq] url` into `store_config` below.
    let config = store_config(&opts, &dir);
    let sample = sample::generate(&SampleOptions {
        seed: opts.seed,
        now: clock.now(),
        change_after: jiff::SignedDuration::from_mins(opts.change_after_mins),
        ..SampleOptions::new(clock.now())
    });
    // HQ: author `sample.events` at HQ (`POST /hq/v1/events`, target the demo store) instead of
    // importing them here; the store then receives them through its feed.
    load_catalog(&config, &sample, &dir, &clock).await?;
    let (username, password, token) = create_access(&config, &clock).await?;

    let (stop_store, store_stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Running>();
    let store_clock = clock.clone();
    let store = tokio::spawn(async move {
        app::serve(
            config,
            store_clock,
            async {
                let _ = store_stopped.await;
            },
            move |r| {
                let _ = ready_tx.send(r);
            },
        )
        .await
    });
    let running = match ready_rx.await {
        Ok(r) => r,
        Err(_) => {
            return Err(store
                .await
                .context("store task")?
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("the store stopped before it was ready")))
        }
    };

    let sim = start_devices(&opts, &running, &token, &sample, clock.clone()).await;
    let sim = match sim {
        Ok(s) => s,
        Err(e) => {
            let _ = stop_store.send(());
            let _ = store.await;
            return Err(e);
        }
    };
    let ready = DemoReady {
        ui: format!("http://{}/", running.http),
        control: sim.control_url(),
        username,
        password,
        token,
        dir: dir.clone(),
        devices: sim.device_ids().len(),
        sample,
    };
    on_ready(&ready);

    shutdown.await;
    sim.shutdown().await;
    let _ = stop_store.send(());
    store.await.context("store task")??;
    Ok(())
}

/// Creates `dir`, or wipes it if a previous demo made it. Refuses a non-empty directory that is
/// not the demo's, so a typo cannot delete someone's data.
pub fn prepare_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_none();
        if !empty && !dir.join(MARKER).exists() {
            anyhow::bail!(
                "{} exists and is not a storebox demo directory; choose another with --dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        dir.join(MARKER),
        "made by `storebox demo`; removed and recreated at its next start\n",
    )?;
    Ok(std::fs::canonicalize(dir)?)
}

fn store_config(opts: &DemoOptions, dir: &Path) -> Config {
    let mut c = Config::default();
    c.store.id = "demo-store".into();
    c.store.name = "Demo store".into();
    c.http.listen = opts.http;
    c.mqtt.listen = opts.mqtt;
    c.storage.data_dir = dir.join("store");
    c
}

/// Writes the sample as `sample-catalog.jsonl` in the demo dir and imports it, exactly like
/// `storebox import`.
async fn load_catalog(
    config: &Config,
    sample: &Sample,
    dir: &Path,
    clock: &SharedClock,
) -> anyhow::Result<()> {
    let path = dir.join("sample-catalog.jsonl");
    sample
        .write_jsonl(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    std::fs::create_dir_all(&config.storage.data_dir)?;
    let db_path = config.db_path();
    let tz = config.timezone();
    let now = clock.now().as_millisecond();
    crate::db::run_blocking(move || {
        let db = Db::open(&db_path)?;
        let report =
            db.write_blocking(|c| Ok(crate::catalog::import::import_file(c, &path, tz, now)))??;
        tracing::info!(events = report.events, "demo catalog imported");
        Ok::<_, anyhow::Error>(())
    })
    .await
}

/// An admin user for the UI and a manager token for the virtual devices.
async fn create_access(
    config: &Config,
    clock: &SharedClock,
) -> anyhow::Result<(String, String, String)> {
    let db_path = config.db_path();
    let now = clock.now().as_millisecond();
    crate::db::run_blocking(move || {
        let db = Db::open(&db_path)?;
        let password = auth::generate_secret("")[..16].to_string();
        let token = db.write_blocking(|c| {
            let r = auth::add_user(c, "admin", &password, Role::Admin, now)
                .and_then(|_| auth::add_token(c, "demo-devices", Role::Manager, now));
            Ok(r)
        })??;
        Ok::<_, anyhow::Error>(("admin".to_string(), password, token))
    })
    .await
}

/// About a dozen devices of every kind; labels show the skus that change during the demo.
async fn start_devices(
    opts: &DemoOptions,
    running: &Running,
    token: &str,
    sample: &Sample,
    clock: SharedClock,
) -> anyhow::Result<Simulator> {
    let mut cfg = SimConfig {
        seed: opts.seed,
        prefix: "demo".into(),
        ..SimConfig::default()
    };
    cfg.target.http = format!("http://{}", running.http);
    cfg.target.mqtt = running.mqtt.to_string();
    cfg.target.token = Some(token.to_string());
    cfg.control.listen = opts.control;
    cfg.devices.lanes = 3;
    cfg.devices.scales = 2;
    cfg.devices.labels = 4;
    cfg.devices.fridges = 2;
    cfg.devices.printers = 2;
    cfg.rates.telemetry_ms = 10_000;
    cfg.rates.scan_ms = 3_000;
    cfg.rates.weigh_ms = 12_000;
    cfg.labels.skus = sample.label_skus();
    Simulator::start(cfg, clock).await
}
