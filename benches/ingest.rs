//! Device → durable SQLite ingest benchmark (issue "Store appliance core"). Not a test: it starts
//! the real `storebox serve` (release build) and a real `mosquitto`, drives both with the same
//! MQTT load generator over loopback and prints throughput and peak memory.
//!
//! `cargo bench --bench ingest` builds `storebox` itself (`cargo build --release --bin storebox`)
//! unless `STOREBOX_BIN` names a binary. It needs `mosquitto` installed (Debian: `apt-get install
//! mosquitto`); `MOSQUITTO_BIN` overrides the lookup. Knobs (environment): `BENCH_DEVICES` (20),
//! `BENCH_MESSAGES` (200000, total per phase), `BENCH_WINDOW` (100, unacknowledged messages per
//! client), `BENCH_RESEND_S` (5, event resend timeout), `BENCH_PHASE_TIMEOUT_S` (120), and for the
//! memory bound `BENCH_MEMORY_ROUNDS` (0), `BENCH_MEMORY_MESSAGES` (1000000),
//! `BENCH_RSS_LIMIT_MIB` (100).
//!
//! Phases: (a) business events against storebox, counted when `devices/{id}/events/ack` arrives
//! (sent after the SQLite commit); (b) telemetry against storebox, counted at PUBACK and then at
//! `storebox_telemetry_stored_total` on `/metrics` (the rate reported is *stored* per second, and
//! the QoS 1 messages PUBACKed but not stored, which must be 0); (c) the same telemetry load
//! against mosquitto configured like the box (password file, per-device ACL) with one QoS 1
//! `devices/+/telemetry` subscriber, counted at delivery; (d) peak RSS (VmHWM) of both.
//! Every phase is bounded and every child process is stopped by a drop guard, even on error.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use parking_lot::Mutex;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Packet, QoS, SubscribeReasonCode,
};
use tokio::sync::{Barrier, Semaphore};

const EVENT_TYPE: &str = "scale.weighed";
const TELEMETRY: &[u8] = br#"{"metrics":{"temp_c":3.9}}"#;

#[derive(Clone, Copy)]
struct Knobs {
    devices: usize,
    messages: u64,
    window: usize,
    resend_after: Duration,
    phase_timeout: Duration,
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow!("{name}={v:?} is not a valid number")),
        Err(_) => Ok(default),
    }
}

impl Knobs {
    fn from_env() -> anyhow::Result<Self> {
        let k = Knobs {
            devices: env_num("BENCH_DEVICES", 20)?,
            messages: env_num("BENCH_MESSAGES", 200_000)?,
            window: env_num("BENCH_WINDOW", 100)?,
            resend_after: Duration::from_secs(env_num("BENCH_RESEND_S", 5)?),
            phase_timeout: Duration::from_secs(env_num("BENCH_PHASE_TIMEOUT_S", 120)?),
        };
        if k.devices == 0 || k.devices > 999 || (k.messages as usize) < k.devices {
            bail!("need 1 ≤ BENCH_DEVICES ≤ 999 and BENCH_MESSAGES ≥ BENCH_DEVICES");
        }
        if !(1..=1000).contains(&k.window) {
            bail!("BENCH_WINDOW must be 1..=1000");
        }
        Ok(k)
    }

    /// Messages for client `i`: the total split as evenly as possible.
    fn share(&self, i: usize) -> u64 {
        let n = self.devices as u64;
        self.messages / n + u64::from((i as u64) < self.messages % n)
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// A child process stopped on drop: SIGTERM, up to 5 s to exit, then SIGKILL.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "bench: {} did not stop within 5 s of SIGTERM; killing",
            self.name
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `/proc/PID/status` memory field of a live process, in KiB.
fn proc_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Peak resident set size (VmHWM) of a live process, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    proc_kib(pid, "VmHWM")
}

/// Current anonymous and file-backed resident memory, for telling heap growth from page cache.
fn rss_split(pid: u32) -> String {
    format!(
        "RssAnon {} + RssFile {}",
        fmt_mib(proc_kib(pid, "RssAnon")),
        fmt_mib(proc_kib(pid, "RssFile"))
    )
}

fn machine_facts() -> (usize, String) {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    (nproc, model)
}

/// `STOREBOX_BIN`, or the binary produced by `cargo build --release --bin storebox`.
fn storebox_binary() -> anyhow::Result<PathBuf> {
    if let Ok(bin) = std::env::var("STOREBOX_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("STOREBOX_BIN={} is not a file", bin.display());
        }
        return Ok(bin);
    }
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("bench: building storebox (cargo build --release --bin storebox) ...");
    let out = Command::new(&cargo)
        .current_dir(&manifest_dir)
        .args([
            "build",
            "--release",
            "--bin",
            "storebox",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {cargo} build --release"))?;
    if !out.status.success() {
        bail!("cargo build --release failed ({})", out.status);
    }
    // The artifact message names the executable wherever the target dir is.
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "storebox" {
            if let Some(exe) = msg["executable"].as_str() {
                return Ok(PathBuf::from(exe));
            }
        }
    }
    let fallback = manifest_dir.join("target/release/storebox");
    if fallback.is_file() {
        return Ok(fallback);
    }
    bail!("cargo build --release did not report the storebox executable")
}

fn mosquitto_binary() -> anyhow::Result<PathBuf> {
    if let Ok(bin) = std::env::var("MOSQUITTO_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .map(PathBuf::from)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "mosquitto is not installed (needed as the baseline broker). Install it with \
                 `apt-get install mosquitto` (Debian/Ubuntu) or set MOSQUITTO_BIN"
            )
        })
}

fn data_dir_env(cmd: &mut Command, dir: &Path) {
    cmd.env("STOREBOX_STORAGE__DATA_DIR", dir)
        .env("STOREBOX_HTTP__LISTEN", "127.0.0.1:0")
        .env("STOREBOX_MQTT__LISTEN", "127.0.0.1:0");
}

/// `storebox device add ID --kind scale`, returning the printed password.
fn provision(bin: &Path, dir: &Path, id: &str) -> anyhow::Result<String> {
    let mut cmd = Command::new(bin);
    cmd.args(["device", "add", id, "--kind", "scale"]);
    data_dir_env(&mut cmd, dir);
    let out = cmd.output().context("running storebox device add")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "storebox device add {id} failed ({}): {}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("password:"))
        .map(|p| p.trim().to_string())
        .ok_or_else(|| anyhow!("no password line in `storebox device add` output: {stdout}"))
}

struct Storebox {
    proc: Proc,
    http: SocketAddr,
    mqtt: SocketAddr,
}

fn start_storebox(bin: &Path, dir: &Path) -> anyhow::Result<Storebox> {
    let log = dir.join("storebox-serve.log");
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?);
    data_dir_env(&mut cmd, dir);
    let child = cmd.spawn().context("starting storebox serve")?;
    let mut proc = Proc {
        name: "storebox",
        child,
        log,
    };
    let stdout = proc.child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Forward the ready line, then keep draining so the child never blocks on stdout.
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if line.starts_with("storebox ready") {
                let _ = tx.send(line);
                break;
            }
        }
        for _ in lines {}
    });
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => line,
        Err(_) => bail!(
            "storebox serve printed no ready line within 30 s (exit: {:?}); log tail:\n{}",
            proc.exited(),
            proc.log_tail()
        ),
    };
    let field = |key: &str| -> anyhow::Result<SocketAddr> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|url| url.split_once("://").map(|(_, a)| a.trim_end_matches('/')))
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| anyhow!("cannot read {key} address from ready line {line:?}"))
    };
    let http = field("http=")?;
    let mqtt = field("mqtt=")?;
    Ok(Storebox { proc, http, mqtt })
}

/// mosquitto configured like the box's broker: passwords (a password file, hashed by
/// `mosquitto_passwd -U`) and a per-device ACL (`devices/%u/#`), plus one subscriber that may read
/// every device's telemetry.
fn start_mosquitto(
    bin: &Path,
    dir: &Path,
    users: &[Cred],
    subscriber: &Cred,
) -> anyhow::Result<(Proc, SocketAddr)> {
    // Port 0 is not possible with mosquitto: reserve-and-release a port (acceptable here only).
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let conf = dir.join("mosquitto.conf");
    let passwords = dir.join("mosquitto.passwd");
    let acl = dir.join("mosquitto.acl");
    let mut lines = String::new();
    for c in users.iter().chain([subscriber]) {
        let p = c
            .password
            .as_deref()
            .context("mosquitto users need passwords")?;
        lines.push_str(&format!("{}:{p}\n", c.id));
    }
    std::fs::write(&passwords, lines)?;
    let passwd_bin = bin.with_file_name("mosquitto_passwd");
    let passwd_bin = if passwd_bin.exists() {
        passwd_bin
    } else {
        PathBuf::from("/usr/bin/mosquitto_passwd")
    };
    let out = Command::new(&passwd_bin)
        .arg("-U")
        .arg(&passwords)
        .output()
        .with_context(|| format!("running {}", passwd_bin.display()))?;
    if !out.status.success() {
        bail!(
            "mosquitto_passwd -U: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::write(
        &acl,
        format!(
            "user {}\ntopic read devices/+/telemetry\n\npattern readwrite devices/%u/#\n",
            subscriber.id
        ),
    )?;
    // Unlimited queue for the subscriber so that nothing is dropped, and the same in-flight
    // window per connection as storebox's default `mqtt.max_inflight`.
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\n\
             persistence false\nmax_inflight_messages 100\nmax_queued_messages 0\n\
             log_dest stderr\nlog_type error\nlog_type warning\n",
            passwords.display(),
            acl.display()
        ),
    )?;
    let log = dir.join("mosquitto.log");
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(dir.join("mosquitto.err"))?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut proc = Proc {
        name: "mosquitto",
        child,
        log: dir.join("mosquitto.err"),
    };
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok((proc, addr));
        }
        if let Some(status) = proc.exited() {
            bail!("mosquitto exited ({status}):\n{}", proc.log_tail());
        }
        if Instant::now() > deadline {
            bail!("mosquitto not listening on {addr} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Load generator

#[derive(Clone)]
struct Cred {
    id: String,
    password: Option<String>,
}

/// Shared progress of one phase: `done` counts toward `target`; `end` is when it got there.
struct Progress {
    target: u64,
    done: AtomicU64,
    end: Mutex<Option<Instant>>,
    duplicates: AtomicU64,
    resent: AtomicU64,
    errors: AtomicU64,
    reconnects: AtomicU64,
}

impl Progress {
    fn new(target: u64) -> Arc<Self> {
        Arc::new(Progress {
            target,
            done: AtomicU64::new(0),
            end: Mutex::new(None),
            duplicates: AtomicU64::new(0),
            resent: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
        })
    }

    fn add(&self, n: u64) {
        let before = self.done.fetch_add(n, Ordering::Relaxed);
        if before < self.target && before + n >= self.target {
            *self.end.lock() = Some(Instant::now());
        }
    }

    fn get(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
}

fn options(cred: &Cred, addr: SocketAddr, window: usize) -> MqttOptions {
    let mut o = MqttOptions::new(cred.id.clone(), addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30))
        .set_inflight(window.min(u16::MAX as usize) as u16)
        .set_clean_session(true);
    if let Some(p) = &cred.password {
        o.set_credentials(cred.id.clone(), p.clone());
    }
    o
}

/// `BENCH_NODELAY=1`: the load generator's sockets set TCP_NODELAY (default: rumqttc's default,
/// Nagle on, like most device stacks).
fn nodelay() -> bool {
    std::env::var("BENCH_NODELAY").is_ok_and(|v| v == "1")
}

/// Connects, optionally subscribes, and returns once the broker confirmed both.
async fn connect(
    cred: &Cred,
    addr: SocketAddr,
    window: usize,
    subscribe: Option<&str>,
) -> anyhow::Result<(AsyncClient, EventLoop)> {
    let (client, mut el) = AsyncClient::new(options(cred, addr, window), 10);
    if nodelay() {
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        el.set_network_options(net);
    }
    if let Some(filter) = subscribe {
        client.subscribe(filter, QoS::AtLeastOnce).await?;
    }
    let ready = async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) if subscribe.is_none() => return Ok(()),
                Ok(Event::Incoming(Packet::SubAck(s))) => {
                    if s.return_codes
                        .iter()
                        .any(|c| matches!(c, SubscribeReasonCode::Failure))
                    {
                        bail!("{}: subscription refused", cred.id);
                    }
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => bail!("{}: connecting to {addr}: {e}", cred.id),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), ready)
        .await
        .map_err(|_| anyhow!("{}: not connected within 30 s", cred.id))??;
    Ok((client, el))
}

/// Drives an event loop until aborted, handing each incoming packet to `on_packet`.
fn spawn_poller<F>(
    mut el: EventLoop,
    client: AsyncClient,
    resubscribe: Option<String>,
    progress: Arc<Progress>,
    mut on_packet: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut(Packet) + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    // A reconnect (the first ConnAck was consumed by `connect`).
                    progress.reconnects.fetch_add(1, Ordering::Relaxed);
                    if let Some(f) = &resubscribe {
                        let _ = client.try_subscribe(f.clone(), QoS::AtLeastOnce);
                    }
                }
                Ok(Event::Incoming(p)) => on_packet(p),
                Ok(Event::Outgoing(_)) => {}
                Err(_) => {
                    progress.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

/// Aborts the tasks on drop so an early return leaves nothing running.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

struct PhaseResult {
    label: String,
    count: u64,
    target: u64,
    secs: f64,
    complete: bool,
    note: String,
}

impl PhaseResult {
    fn rate(&self) -> f64 {
        self.count as f64 / self.secs.max(1e-9)
    }
}

/// Waits until `progress` reaches its target or `timeout` passes; returns (count, seconds, done).
async fn await_progress(
    progress: &Progress,
    start: Instant,
    timeout: Duration,
) -> (u64, f64, bool) {
    let deadline = start + timeout;
    while progress.get() < progress.target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let end = progress.end.lock().unwrap_or_else(Instant::now);
    let done = progress.get() >= progress.target;
    (progress.get(), (end - start).as_secs_f64(), done)
}

/// Phase (a): each client sends its share of business events (unique ids) with at most `window`
/// unacknowledged, resends ids not acknowledged within `resend_after`, and counts acks.
async fn events_phase(addr: SocketAddr, creds: &[Cred], k: Knobs) -> anyhow::Result<PhaseResult> {
    let progress = Progress::new(k.messages);
    let barrier = Arc::new(Barrier::new(creds.len() + 1));
    let mut tasks = Tasks(Vec::new());
    let mut clients = Vec::new();
    for (i, cred) in creds.iter().enumerate() {
        let ack_topic = format!("devices/{}/events/ack", cred.id);
        let (client, el) = connect(cred, addr, k.window, Some(&ack_topic)).await?;
        let pending: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let window = Arc::new(Semaphore::new(k.window));
        let (p, pend, win) = (progress.clone(), pending.clone(), window.clone());
        let topic = ack_topic.clone();
        tasks.0.push(spawn_poller(
            el,
            client.clone(),
            Some(ack_topic),
            progress.clone(),
            move |packet| {
                let Packet::Publish(msg) = packet else { return };
                if msg.topic != topic {
                    return;
                }
                let Ok(ack) = serde_json::from_slice::<serde_json::Value>(&msg.payload) else {
                    p.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let id = ack["id"].as_str().unwrap_or_default();
                match ack["status"].as_str() {
                    Some("stored") | Some("duplicate") => {
                        if ack["status"] == "duplicate" {
                            p.duplicates.fetch_add(1, Ordering::Relaxed);
                        }
                        if pend.lock().remove(id).is_some() {
                            win.add_permits(1);
                            p.add(1);
                        }
                    }
                    _ => {
                        eprintln!("bench: unexpected ack {ack}");
                        p.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            },
        ));
        let events_topic = format!("devices/{}/events", cred.id);
        let payload = |id: &str| {
            format!(r#"{{"id":"{id}","type":"{EVENT_TYPE}","sku":"1001","grams":250}}"#)
                .into_bytes()
        };
        // Resender: ids not acknowledged in time are published again with the same id.
        {
            let (client, pending, progress) = (client.clone(), pending.clone(), progress.clone());
            let topic = events_topic.clone();
            let resend_after = k.resend_after;
            tasks.0.push(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let due: Vec<String> = {
                        let mut map = pending.lock();
                        let now = Instant::now();
                        map.iter_mut()
                            .filter(|(_, sent)| now.duration_since(**sent) >= resend_after)
                            .map(|(id, sent)| {
                                *sent = now;
                                id.clone()
                            })
                            .collect()
                    };
                    for id in due {
                        progress.resent.fetch_add(1, Ordering::Relaxed);
                        let _ = client
                            .publish(&topic, QoS::AtLeastOnce, false, payload(&id))
                            .await;
                    }
                }
            }));
        }
        let (barrier, count, device) = (barrier.clone(), k.share(i), cred.id.clone());
        let publisher = client.clone();
        tasks.0.push(tokio::spawn(async move {
            barrier.wait().await;
            for seq in 0..count {
                let Ok(permit) = window.acquire().await else {
                    return;
                };
                permit.forget();
                let id = format!("{device}-{seq}");
                pending.lock().insert(id.clone(), Instant::now());
                if publisher
                    .publish(&events_topic, QoS::AtLeastOnce, false, payload(&id))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }));
        clients.push(client);
    }
    barrier.wait().await;
    let start = Instant::now();
    let (count, secs, complete) = await_progress(&progress, start, k.phase_timeout).await;
    for c in &clients {
        let _ = c.try_disconnect();
    }
    Ok(PhaseResult {
        label: "storebox: business events acked after commit".into(),
        count,
        target: k.messages,
        secs,
        complete,
        note: format!(
            "resent {}, duplicate acks {}, client errors {}, reconnects {}",
            progress.resent.load(Ordering::Relaxed),
            progress.duplicates.load(Ordering::Relaxed),
            progress.errors.load(Ordering::Relaxed),
            progress.reconnects.load(Ordering::Relaxed)
        ),
    })
}

/// Phases (b) and (c): each client publishes its share of telemetry at QoS 1 (at most `window`
/// unacknowledged); counts PUBACKs and, with `subscriber`, deliveries to one extra client
/// subscribed to `devices/+/telemetry`. Returns the PUBACK result, the delivery result and the
/// moment publishing started.
async fn telemetry_phase(
    broker: &str,
    addr: SocketAddr,
    creds: &[Cred],
    subscriber: Option<Cred>,
    k: Knobs,
) -> anyhow::Result<(PhaseResult, Option<PhaseResult>, Instant)> {
    let acked = Progress::new(k.messages);
    let delivered = Progress::new(k.messages);
    let mut tasks = Tasks(Vec::new());
    let mut clients = Vec::new();
    if let Some(sub) = &subscriber {
        let filter = "devices/+/telemetry";
        let (client, el) = connect(sub, addr, k.window, Some(filter)).await?;
        let d = delivered.clone();
        tasks.0.push(spawn_poller(
            el,
            client.clone(),
            Some(filter.into()),
            delivered.clone(),
            move |p| {
                if matches!(p, Packet::Publish(_)) {
                    d.add(1);
                }
            },
        ));
        clients.push(client);
    }
    let barrier = Arc::new(Barrier::new(creds.len() + 1));
    for (i, cred) in creds.iter().enumerate() {
        let (client, el) = connect(cred, addr, k.window, None).await?;
        let a = acked.clone();
        tasks.0.push(spawn_poller(
            el,
            client.clone(),
            None,
            acked.clone(),
            move |p| {
                if matches!(p, Packet::PubAck(_)) {
                    a.add(1);
                }
            },
        ));
        let (barrier, count, publisher) = (barrier.clone(), k.share(i), client.clone());
        let topic = format!("devices/{}/telemetry", cred.id);
        tasks.0.push(tokio::spawn(async move {
            barrier.wait().await;
            for _ in 0..count {
                // rumqttc holds at most `window` unacknowledged QoS 1 publishes; beyond that the
                // request channel fills and this await waits.
                if publisher
                    .publish(&topic, QoS::AtLeastOnce, false, TELEMETRY)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }));
        clients.push(client);
    }
    barrier.wait().await;
    let start = Instant::now();
    let (count, secs, complete) = await_progress(&acked, start, k.phase_timeout).await;
    let notes = |p: &Progress| {
        format!(
            "client errors {}, reconnects {}",
            p.errors.load(Ordering::Relaxed),
            p.reconnects.load(Ordering::Relaxed)
        )
    };
    let pub_result = PhaseResult {
        label: format!("{broker}: telemetry PUBACKed"),
        count,
        target: k.messages,
        secs,
        complete,
        note: notes(&acked),
    };
    let sub_result = if subscriber.is_some() {
        let (count, secs, complete) = await_progress(&delivered, start, k.phase_timeout).await;
        Some(PhaseResult {
            label: format!("{broker}: telemetry delivered to 1 subscriber"),
            count,
            target: k.messages,
            secs,
            complete,
            note: notes(&delivered),
        })
    } else {
        None
    };
    for c in &clients {
        let _ = c.try_disconnect();
    }
    Ok((pub_result, sub_result, start))
}

// ---------------------------------------------------------------------------------------------
// /metrics

/// `GET /metrics` over a plain TCP connection (no auth needed); returns the body.
async fn scrape(http: SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io = async {
        let mut s = tokio::net::TcpStream::connect(http).await?;
        s.write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .map_err(|_| anyhow!("GET /metrics timed out"))??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response from /metrics"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET /metrics: {}", head.lines().next().unwrap_or_default());
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || tail.len() < n {
                break;
            }
            out.push_str(&tail[..n]);
            rest = tail[n..].trim_start_matches("\r\n");
        }
        return Ok(out);
    }
    Ok(body.to_string())
}

/// Value of a metric line that starts with `name` (exactly, labels included), or 0.
fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix(name))
        .filter_map(|rest| rest.strip_prefix(' '))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

const STORED: &str = "storebox_telemetry_stored_total";
const DROPPED: &str = "storebox_ingest_dropped_total{kind=\"telemetry\"}";

/// Polls `/metrics` until the telemetry sent in this phase is stored (or counted as dropped).
async fn await_stored(
    http: SocketAddr,
    base: (u64, u64),
    start: Instant,
    k: Knobs,
) -> anyhow::Result<PhaseResult> {
    let deadline = start + k.phase_timeout;
    let mut last = (0, 0);
    let mut last_change = Instant::now();
    loop {
        let body = scrape(http).await?;
        let now = Instant::now();
        let stored = metric(&body, STORED) - base.0;
        let dropped = metric(&body, DROPPED) - base.1;
        if (stored, dropped) != last {
            last = (stored, dropped);
            last_change = now;
        }
        if stored + dropped >= k.messages || now > deadline {
            return Ok(PhaseResult {
                label: "storebox: telemetry stored (/metrics)".into(),
                count: stored,
                target: k.messages,
                secs: (last_change - start).as_secs_f64(),
                // The load is QoS 1: since back-pressure (issue 17) nothing PUBACKed may be dropped.
                complete: stored >= k.messages && dropped == 0,
                note: format!(
                    "dropped {dropped}{}; polled every 20 ms",
                    if dropped > 0 {
                        " (QoS 1: MUST be 0)"
                    } else {
                        ""
                    }
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------

/// One round of the memory-bound check.
struct MemoryRound {
    messages: u64,
    stored: u64,
    dropped: u64,
    secs: f64,
    rss_kib: Option<u64>,
    hwm_kib: Option<u64>,
    split: String,
}

/// The memory bound (issue "Store appliance core", docs/operations.md#memory):
/// `BENCH_MEMORY_ROUNDS` (default 0 = skip) rounds of `BENCH_MEMORY_MESSAGES` (default 1 000 000)
/// telemetry messages into the same running box; after each, once everything is stored, its
/// resident memory. `BENCH_RSS_LIMIT_MIB` (default 100) is the stated bound: a round whose peak
/// RSS exceeds it fails the bench.
async fn memory_rounds(
    sb: &Storebox,
    creds: &[Cred],
    k: Knobs,
) -> anyhow::Result<Vec<MemoryRound>> {
    let rounds: u32 = env_num("BENCH_MEMORY_ROUNDS", 0)?;
    let messages: u64 = env_num("BENCH_MEMORY_MESSAGES", 1_000_000)?;
    let mut out = Vec::new();
    for round in 1..=rounds {
        eprintln!("bench: memory round {round} of {rounds}, {messages} telemetry messages ...");
        let rk = Knobs {
            messages,
            phase_timeout: k.phase_timeout.max(Duration::from_secs(600)),
            ..k
        };
        let body = scrape(sb.http).await?;
        let base = (metric(&body, STORED), metric(&body, DROPPED));
        let (_, _, start) = telemetry_phase("storebox", sb.mqtt, creds, None, rk)
            .await
            .with_context(|| format!("storebox log tail:\n{}", sb.proc.log_tail()))?;
        let stored = await_stored(sb.http, base, start, rk).await?;
        let body = scrape(sb.http).await?;
        let dropped = metric(&body, DROPPED) - base.1;
        let pid = sb.proc.pid();
        out.push(MemoryRound {
            messages,
            stored: stored.count,
            dropped,
            secs: stored.secs,
            rss_kib: proc_kib(pid, "VmRSS"),
            hwm_kib: vm_hwm_kib(pid),
            split: rss_split(pid),
        });
    }
    Ok(out)
}

/// Prints the memory rounds; false if a peak exceeded `BENCH_RSS_LIMIT_MIB`.
fn print_memory_rounds(rounds: &[MemoryRound]) -> bool {
    if rounds.is_empty() {
        return true;
    }
    let limit_mib: u64 = env_num("BENCH_RSS_LIMIT_MIB", 100).unwrap_or(100);
    println!();
    println!("memory bound: telemetry rounds into one running storebox (limit {limit_mib} MiB)");
    println!(
        "{:<7} {:>10} {:>10} {:>9} {:>8} {:>12} {:>14}  split",
        "round", "messages", "stored", "dropped", "secs", "VmRSS", "VmHWM (peak)"
    );
    let mut ok = true;
    for (i, r) in rounds.iter().enumerate() {
        let over = r.hwm_kib.is_some_and(|k| k > limit_mib * 1024);
        ok &= !over;
        println!(
            "{:<7} {:>10} {:>10} {:>9} {:>8.1} {:>12} {:>14}  {}{}",
            i + 1,
            r.messages,
            r.stored,
            r.dropped,
            r.secs,
            fmt_mib(r.rss_kib),
            fmt_mib(r.hwm_kib),
            r.split,
            if over { "  OVER LIMIT" } else { "" }
        );
    }
    ok
}

fn fmt_mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

async fn run() -> anyhow::Result<bool> {
    let k = Knobs::from_env()?;
    let mosquitto = mosquitto_binary()?;
    let version = Command::new(&mosquitto)
        .arg("-h")
        .output()
        .map(|o| {
            let out = String::from_utf8_lossy(&o.stdout);
            out.lines().next().unwrap_or_default().trim().to_string()
        })
        .unwrap_or_default();
    let bin = storebox_binary()?;
    let dir = tempfile::Builder::new()
        .prefix("storebox-bench-")
        .tempdir()?;
    eprintln!(
        "bench: {} devices, {} messages per phase, window {}, data dir {}",
        k.devices,
        k.messages,
        k.window,
        dir.path().display()
    );

    let mut creds = Vec::with_capacity(k.devices);
    for i in 0..k.devices {
        let id = format!("bench-{i:03}");
        let password = provision(&bin, dir.path(), &id)?;
        creds.push(Cred {
            id,
            password: Some(password),
        });
    }
    let mut sb = start_storebox(&bin, dir.path())?;
    eprintln!("bench: storebox ready, http {} mqtt {}", sb.http, sb.mqtt);

    let mut results = Vec::new();
    eprintln!("bench: phase a, business events ...");
    let events = events_phase(sb.mqtt, &creds, k).await;
    let events = events.with_context(|| format!("storebox log tail:\n{}", sb.proc.log_tail()))?;
    let sb_rss_events = vm_hwm_kib(sb.proc.pid());
    let sb_split_events = rss_split(sb.proc.pid());
    eprintln!("bench: phase b, telemetry into storebox ...");
    let body = scrape(sb.http).await?;
    let base = (metric(&body, STORED), metric(&body, DROPPED));
    let (tel_ack, _, start) = telemetry_phase("storebox", sb.mqtt, &creds, None, k)
        .await
        .with_context(|| format!("storebox log tail:\n{}", sb.proc.log_tail()))?;
    let stored = await_stored(sb.http, base, start, k).await?;
    let sb_rss = vm_hwm_kib(sb.proc.pid());
    let sb_split = rss_split(sb.proc.pid());
    let memory = memory_rounds(&sb, &creds, k).await?;
    if let Some(status) = sb.proc.exited() {
        bail!(
            "storebox exited during the run ({status}):\n{}",
            sb.proc.log_tail()
        );
    }
    sb.proc.stop();
    drop(sb);
    // Durability check: what the stopped box left in its database file.
    let (rows_events, rows_telemetry) = {
        let db = rusqlite::Connection::open_with_flags(
            dir.path().join("storebox.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        let count = |sql: &str| db.query_row(sql, [], |r| r.get::<_, i64>(0));
        (
            count("SELECT count(*) FROM device_events WHERE device_id LIKE 'bench-%'")? as u64,
            count("SELECT count(*) FROM telemetry WHERE device_id LIKE 'bench-%'")? as u64,
        )
    };
    let stored_count = stored.count;
    let acked_not_stored = tel_ack.count.saturating_sub(stored_count);

    eprintln!("bench: phase c, the same telemetry load through mosquitto ...");
    let sub = Cred {
        id: "bench-subscriber".into(),
        password: Some("bench-subscriber-password".into()),
    };
    let (mut mq, mq_addr) = start_mosquitto(&mosquitto, dir.path(), &creds, &sub)?;
    let (mq_ack, mq_del, _) = telemetry_phase("mosquitto", mq_addr, &creds, Some(sub), k).await?;
    let mq_del = mq_del.expect("subscriber result");
    let mq_rss = vm_hwm_kib(mq.pid());
    let mq_split = rss_split(mq.pid());
    mq.stop();

    let (nproc, model) = machine_facts();
    let events_rate = events.rate();
    let stored_rate = stored.rate();
    let tel_ack_rate = tel_ack.rate();
    let baseline = mq_del.rate();
    results.extend([events, tel_ack, stored, mq_ack, mq_del]);

    println!();
    println!("storebox ingest benchmark");
    println!("machine: nproc {nproc}, {model}");
    println!("mosquitto: {version}");
    println!(
        "load: {} devices over loopback, {} messages per phase, QoS 1, window {} per client, \
         event resend after {} s",
        k.devices,
        k.messages,
        k.window,
        k.resend_after.as_secs()
    );
    println!();
    println!(
        "{:<50} {:>9} {:>8} {:>10}  notes",
        "phase", "count", "secs", "msg/s"
    );
    let mut all_complete = true;
    for r in &results {
        all_complete &= r.complete;
        println!(
            "{:<50} {:>9} {:>8.2} {:>10.0}  {}{}",
            r.label,
            r.count,
            r.secs,
            r.rate(),
            if r.complete {
                String::new()
            } else {
                format!("INCOMPLETE ({} of {}) ", r.count, r.target)
            },
            r.note
        );
    }
    println!();
    println!(
        "peak RSS (VmHWM): storebox {} (after phase a: {}), mosquitto {}",
        fmt_mib(sb_rss),
        fmt_mib(sb_rss_events),
        fmt_mib(mq_rss)
    );
    println!(
        "current RSS: storebox after phase a {sb_split_events}, at end {sb_split}; \
         mosquitto at end {mq_split}"
    );
    let memory_ok = print_memory_rounds(&memory);
    all_complete &= memory_ok;
    let expected_telemetry = stored_count + memory.iter().map(|r| r.stored).sum::<u64>();
    let rows_ok = rows_events == k.messages && rows_telemetry == expected_telemetry;
    all_complete &= rows_ok;
    println!(
        "SQLite after shutdown: {rows_events} device_events (expected {}), {rows_telemetry} \
         telemetry rows (expected {expected_telemetry}){}",
        k.messages,
        if rows_ok { "" } else { "  MISMATCH" }
    );
    println!(
        "telemetry PUBACKed but not stored: {acked_not_stored}{}",
        if acked_not_stored == 0 { "" } else { "  LOST" }
    );
    all_complete &= acked_not_stored == 0;
    println!("ratios to mosquitto plain routing ({baseline:.0} msg/s delivered):");
    for (name, rate) in [
        ("business events acked (durable)", events_rate),
        ("telemetry stored (durable)", stored_rate),
        ("telemetry PUBACKed", tel_ack_rate),
    ] {
        let ratio = rate / baseline.max(1e-9);
        println!(
            "  {name:<34} {ratio:>6.2}x  (aim ≥ 1.5x: {})",
            if ratio >= 1.5 { "met" } else { "not met" }
        );
    }
    Ok(all_complete)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench: some phases did not complete within their timeout (see INCOMPLETE)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
