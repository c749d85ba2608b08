//! The command-line faces of the simulator: `storebox simulate` and `storebox demo` (flags,
//! runtime, what they print, Ctrl-C).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::config::SimConfig;
use super::demo::{self, DemoOptions};
use super::Simulator;

/// `storebox simulate`: flags override the file.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Simulator config file (TOML, see docs/simulator.md).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// The box's HTTP base URL [default: http://127.0.0.1:8080].
    #[arg(long)]
    pub box_url: Option<String>,
    /// The box's MQTT address host:port [default: 127.0.0.1:1883].
    #[arg(long)]
    pub mqtt: Option<String>,
    /// Manager bearer token (`storebox token add NAME --role manager`).
    #[arg(long, env = "STOREBOX_SIM_TOKEN")]
    pub token: Option<String>,
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Device credentials file instead of provisioning through the API.
    #[arg(long)]
    pub credentials: Option<PathBuf>,
    #[arg(long)]
    pub lanes: Option<u32>,
    #[arg(long)]
    pub scales: Option<u32>,
    #[arg(long)]
    pub labels: Option<u32>,
    #[arg(long)]
    pub fridges: Option<u32>,
    #[arg(long)]
    pub printers: Option<u32>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Device id prefix [default: sim].
    #[arg(long)]
    pub prefix: Option<String>,
    /// Control API address (loopback) [default: 127.0.0.1:0].
    #[arg(long)]
    pub control: Option<SocketAddr>,
    #[arg(long)]
    pub telemetry_ms: Option<u64>,
    /// Lanes scan an item this often (0: only on command).
    #[arg(long)]
    pub scan_ms: Option<u64>,
    /// Scales weigh an item this often (0: only on command).
    #[arg(long)]
    pub weigh_ms: Option<u64>,
    #[arg(long)]
    pub resend_ms: Option<u64>,
    /// A sku for the labels (repeat for several).
    #[arg(long = "label-sku")]
    pub label_skus: Vec<String>,
}

impl SimulateArgs {
    pub fn config(&self) -> anyhow::Result<SimConfig> {
        let mut c = match &self.file {
            Some(p) => SimConfig::from_file(p)?,
            None => SimConfig::default(),
        };
        macro_rules! set {
            ($field:expr, $flag:expr) => {
                if let Some(v) = $flag.clone() {
                    $field = v;
                }
            };
        }
        set!(c.target.http, self.box_url);
        set!(c.target.mqtt, self.mqtt);
        if self.token.is_some() {
            c.target.token = self.token.clone();
        }
        if self.token_file.is_some() {
            c.target.token_file = self.token_file.clone();
        }
        if self.credentials.is_some() {
            c.target.credentials_file = self.credentials.clone();
        }
        set!(c.devices.lanes, self.lanes);
        set!(c.devices.scales, self.scales);
        set!(c.devices.labels, self.labels);
        set!(c.devices.fridges, self.fridges);
        set!(c.devices.printers, self.printers);
        set!(c.seed, self.seed);
        set!(c.prefix, self.prefix);
        set!(c.control.listen, self.control);
        set!(c.rates.telemetry_ms, self.telemetry_ms);
        set!(c.rates.scan_ms, self.scan_ms);
        set!(c.rates.weigh_ms, self.weigh_ms);
        set!(c.rates.resend_ms, self.resend_ms);
        if !self.label_skus.is_empty() {
            c.labels.skus = self.label_skus.clone();
        }
        c.validate()?;
        Ok(c)
    }
}

/// `storebox demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo keeps its data; removed and recreated at each start.
    #[arg(long, default_value = "storebox-demo")]
    pub dir: PathBuf,
    /// Web UI and API address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// MQTT address for the virtual devices.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mqtt: SocketAddr,
    /// Address of the demo's reference HQ (`storebox hq`).
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub hq: SocketAddr,
    /// Control API of the virtual devices.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub control: SocketAddr,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Minutes until the scheduled price change and promotion.
    #[arg(long, default_value_t = 2)]
    pub change_after_mins: i64,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("storebox-sim")
        .build()?)
}

/// Resolves at SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when this is called, not
/// when first polled, so a signal right after the ready line is not missed.
fn interrupted() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let cfg = args.config()?;
    crate::ops::logging::init_stderr("warn");
    let rt = runtime()?;
    rt.block_on(async {
        let stop = interrupted();
        let sim = Simulator::start(cfg, crate::clock::system())
            .await
            .context("starting the simulator")?;
        say(&format!(
            "storebox simulate ready control={} devices={}",
            sim.control_url(),
            sim.device_ids().len()
        ));
        for id in sim.device_ids() {
            say(&format!("  {id}"));
        }
        stop.await;
        sim.shutdown().await;
        Ok::<_, anyhow::Error>(())
    })?;
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    Ok(())
}

pub fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let opts = DemoOptions {
        dir: args.dir,
        http: args.http,
        mqtt: args.mqtt,
        hq: args.hq,
        control: args.control,
        seed: args.seed,
        change_after_mins: args.change_after_mins,
    };
    // rumqttd reports every ordinary disconnect at error level; the demo keeps the terminal for
    // what the user needs (STOREBOX_LOG=… shows everything).
    crate::ops::logging::init_stderr("warn,rumqttd::server=off");
    let rt = runtime()?;
    let stop = {
        let _in_runtime = rt.enter();
        interrupted()
    };
    rt.block_on(demo::run(
        opts,
        crate::clock::system(),
        stop,
        |r| {
            let s = &r.sample;
            let money = |m: i64| format!("{}.{:02}", m / 100, m % 100);
            say(&format!(
                "storebox demo ready ui={} control={} token={} hq={} hq_token={} data={}",
                r.ui,
                r.control,
                r.token,
                r.hq,
                r.hq_admin_token,
                r.dir.display()
            ));
            say(&format!(
                "  Web UI:   {}  (sign in as {} / {})",
                r.ui, r.username, r.password
            ));
            say(&format!("  API:      bearer token {} (role manager)", r.token));
            say(&format!(
                "  HQ:       {}  (store demo-store, group pilot; admin token {}; docs/hq.md)",
                r.hq, r.hq_admin_token
            ));
            say(&format!(
                "  HQ console: {}/  (sign in as {} / {}; role admin)",
                r.hq, r.hq_user, r.hq_password
            ));
            say(&format!(
                "  Devices:  {} virtual devices; control API {} (docs/simulator.md)",
                r.devices, r.control
            ));
            say(&format!(
                "  Catalog:  {} items in {} departments; at {} sku {} drops from {} to {} and promotion {} starts on {}",
                s.items,
                s.departments.len(),
                s.change_at,
                s.changing_sku,
                money(s.price_before),
                money(s.price_after),
                s.flash_promotion,
                s.flash_skus.join(", ")
            ));
            say(&format!(
                "  Data:     {} (store/ and hq/ databases, sample-catalog.jsonl; wiped at the next demo start)",
                r.dir.display()
            ));
            say("Press Ctrl-C to stop.");
        },
    ))?;
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    Ok(())
}
