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
    /// The demo's reference HQ.
    pub hq: SocketAddr,
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
            hq: SocketAddr::from(([127, 0, 0, 1], 8090)),
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
    /// The HQ's URL and admin token (authoring and fleet API, docs/hq.md).
    pub hq: String,
    pub hq_admin_token: String,
    /// The HQ console's sign-in (an `admin` user created at demo start).
    pub hq_user: String,
    pub hq_password: String,
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
    let sample = sample::generate(&SampleOptions {
        seed: opts.seed,
        now: clock.now(),
        change_after: jiff::SignedDuration::from_mins(opts.change_after_mins),
        ..SampleOptions::new(clock.now())
    });
    // The HQ first: the store is registered with it and gets the sample catalog through its feed,
    // exactly as a store of a chain does.
    let hq = start_hq(&opts, &dir, &clock).await?;
    let mut config = store_config(&opts, &dir);
    config.hq.url = hq.url.clone();
    config.hq.token = crate::config::Secret::new(hq.store_token.clone());
    // Also kept as a file, for `storebox import` by hand.
    let path = dir.join("sample-catalog.jsonl");
    sample
        .write_jsonl(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    author_at_hq(&hq, &sample).await?;
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

    wait_for_catch_up(&running, &token).await?;
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
        hq: hq.url.clone(),
        hq_admin_token: hq.admin_token.clone(),
        hq_user: hq.user.clone(),
        hq_password: hq.password.clone(),
        dir: dir.clone(),
        devices: sim.device_ids().len(),
        sample,
    };
    on_ready(&ready);

    shutdown.await;
    sim.shutdown().await;
    let _ = stop_store.send(());
    store.await.context("store task")??;
    let _ = hq.stop.send(());
    hq.task.await.context("hq task")??;
    Ok(())
}

/// The demo's running HQ.
struct DemoHq {
    url: String,
    admin_token: String,
    store_token: String,
    user: String,
    password: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Starts the reference HQ in this process with its data in `dir/hq`, and registers the demo store
/// (group `pilot`).
async fn start_hq(opts: &DemoOptions, dir: &Path, clock: &SharedClock) -> anyhow::Result<DemoHq> {
    let mut config = crate::config::HqServerConfig {
        listen: opts.hq,
        data_dir: dir.join("hq"),
        ..Default::default()
    };
    let admin_token = auth::generate_secret("sbhqa_");
    config.admin_token = crate::config::Secret::new(admin_token.clone());
    let now = clock.now().as_millisecond();
    let storage = crate::hq::open_storage(&config).await?;
    let store_token = storage.add_store(STORE_ID, "pilot", now).await?;
    // A console sign-in for the HQ (role admin: sees and may do everything there).
    let user = "hq-admin".to_string();
    let password = auth::generate_secret("")[..16].to_string();
    let hq_user =
        crate::hq::console::new_user(&user, crate::hq::storage::HqRole::Admin, &password, now)?;
    storage.add_user(hq_user).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let hq_clock = clock.clone();
    let task = tokio::spawn(async move {
        crate::hq::serve(
            config,
            storage,
            hq_clock,
            async {
                let _ = stopped.await;
            },
            move |addr| {
                let _ = ready_tx.send(addr);
            },
        )
        .await
    });
    let addr = match ready_rx.await {
        Ok(a) => a,
        Err(_) => {
            return Err(task
                .await
                .context("hq task")?
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("the HQ stopped before it was ready")))
        }
    };
    Ok(DemoHq {
        url: format!("http://{addr}"),
        admin_token,
        store_token,
        user,
        password,
        stop,
        task,
    })
}

/// Authors the sample catalog at HQ for the demo store, in batches (`POST /hq/v1/events`).
async fn author_at_hq(hq: &DemoHq, sample: &Sample) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    for chunk in sample.events.chunks(1000) {
        let events: Vec<serde_json::Value> = chunk
            .iter()
            .map(|e| serde_json::json!({"type": e.event_type, "payload": e.payload}))
            .collect();
        let r = http
            .post(format!("{}/hq/v1/events", hq.url))
            .bearer_auth(&hq.admin_token)
            .json(&serde_json::json!({"target": {"stores": [STORE_ID]}, "events": events}))
            .send()
            .await
            .context("authoring the sample catalog at HQ")?;
        if !r.status().is_success() {
            let status = r.status();
            anyhow::bail!(
                "HQ refused the sample catalog ({status}): {}",
                r.text().await.unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// Waits (at most 60 s) until the store has applied everything HQ has for it, so the virtual
/// devices start with the whole catalog priced.
async fn wait_for_catch_up(running: &Running, token: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status: Option<serde_json::Value> = async {
            http.get(format!("http://{}/api/v1/sync", running.http))
                .bearer_auth(token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()
        }
        .await;
        if let Some(s) = status {
            if s["connected"] == true && s["cursor"].as_i64().is_some() && s["lag_events"] == 0 {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("the demo store did not receive the catalog from HQ within 60 s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
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

/// The demo store's id, at the box and at HQ.
const STORE_ID: &str = "demo-store";

fn store_config(opts: &DemoOptions, dir: &Path) -> Config {
    let mut c = Config::default();
    c.store.id = STORE_ID.into();
    c.store.name = "Demo store".into();
    c.http.listen = opts.http;
    c.mqtt.listen = opts.mqtt;
    c.storage.data_dir = dir.join("store");
    c
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
    // A store at work: a cashier scans an item every 2-3 s, customers come every half minute
    // or so at each of the three lanes (a few baskets a minute in all), with a rush in the last
    // minute of every four; a fridge door is left ajar every ten minutes or so (the first within
    // a few), raising DOOR_OPEN, then TEMP_HIGH until it is closed.
    cfg.rates.scan_ms = 2_500;
    cfg.rates.basket_items = 6;
    cfg.rates.customer_gap_ms = 25_000;
    cfg.rates.rush_every_ms = 240_000;
    cfg.rates.rush_ms = 60_000;
    cfg.rates.fridge_incident_every_ms = 600_000;
    cfg.rates.weigh_ms = 12_000;
    cfg.labels.skus = sample.label_skus();
    Simulator::start(cfg, clock).await
}
