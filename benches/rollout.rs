//! Rollout benchmark (not a test): `cargo bench --bench rollout`. A real `storebox hq` (the
//! release build, SQLite) and a simulated fleet of N stores in this process: tokio tasks that
//! speak the real sync protocol over loopback HTTP with real store tokens — each holds a feed
//! long-poll open; on `release.assign` it pushes `release.status` `downloading`, downloads the
//! whole package from HQ (streamed, length checked), pushes `staged`, `installing`, `probation`,
//! waits a short fake delay and pushes `committed` (or `rolled_back` for the bad version).
//!
//! - (a) an urgent 3-wave rollout (pilot 1 %, canary 10 %, then all): time from publishing
//!   (upload start) and from creating the rollout to 100 % committed (the rollout `completed`),
//!   HQ's CPU time (utime + stime from /proc/PID/stat) and its RSS (VmRSS, VmHWM) meanwhile;
//! - (b) a bad version whose pilot stores roll back: time from the first `rolled_back` push to the
//!   rollout `aborted`, and how many stores it had assigned.
//!
//! Knobs: `ROLLOUT_STORES` (1000), `ROLLOUT_PKG_KIB` (1024), `ROLLOUT_DELAY_MS` (fake install
//! plus probation time per store, 200), `ROLLOUT_TICK_SECONDS` (HQ's engine tick, 1).

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use jiff::{SignedDuration, Timestamp};
use parking_lot::Mutex;
use serde_json::{json, Value};
use storebox::proto::release::{public_key_text, Manifest, PackageFacts};

const BIN: &str = env!("CARGO_BIN_EXE_storebox");
const ADMIN: &str = "rollout-bench-admin";

fn env_n(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Node {
    child: Child,
    url: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_hq(dir: &std::path::Path, key: &str, tick: u64) -> Node {
    let mut child = Command::new(BIN)
        .arg("hq")
        .env("STOREBOX_HQ_SERVER__LISTEN", "127.0.0.1:0")
        .env("STOREBOX_HQ_SERVER__DATA_DIR", dir)
        .env("STOREBOX_HQ_SERVER__ADMIN_TOKEN", ADMIN)
        .env(
            "STOREBOX_HQ_SERVER__RELEASE_PUBLIC_KEYS",
            format!("[\"{key}\"]"),
        )
        .env("STOREBOX_HQ_SERVER__ROLLOUT_TICK_SECONDS", tick.to_string())
        .env("STOREBOX_LOG__LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn storebox hq");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .unwrap_or_else(|| panic!("hq did not start: {line:?}"))
        .to_string();
    Node { child, url }
}

/// Registers the fleet through the library (as `storebox hq store add` does): 1 % pilot,
/// 10 % canary, the rest without a group. Returns (id, token).
fn register(dir: &std::path::Path, n: usize) -> Vec<(String, String)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cfg = storebox::config::HqServerConfig {
            data_dir: dir.to_path_buf(),
            ..Default::default()
        };
        let storage = storebox::hq::open_storage(&cfg).await.unwrap();
        let pilot = (n / 100).max(1);
        let canary = (n / 10).max(1);
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let group = if i < pilot {
                "pilot"
            } else if i < pilot + canary {
                "canary"
            } else {
                ""
            };
            let id = format!("s{i:05}");
            let token = storage.add_store(&id, group, 0).await.unwrap();
            out.push((id, token));
        }
        out
    })
}

fn package(len: usize, seed: u32) -> Vec<u8> {
    let mut x: u32 = 0x2545_f491 ^ seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// CPU seconds (user + system) of a process so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses): state is field 3; utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

fn mem_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// The version whose pilot stores roll back.
    bad: Mutex<String>,
    first_failure: Mutex<Option<Instant>>,
    downloads: AtomicUsize,
    pushes: AtomicUsize,
}

async fn store_loop(
    client: reqwest::Client,
    hq: String,
    id: String,
    token: String,
    pilot: bool,
    delay: Duration,
    shared: Arc<Shared>,
) {
    let mut cursor = 0i64;
    let mut seq = 0i64;
    let mut done: HashSet<String> = HashSet::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let r = client
            .get(format!("{hq}/sync/v1/feed?after={cursor}&wait=5"))
            .bearer_auth(&token)
            .send()
            .await;
        let Ok(r) = r else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Ok(page) = r.json::<Value>().await else {
            continue;
        };
        cursor = page["next"].as_i64().unwrap_or(cursor);
        for ev in page["events"].as_array().into_iter().flatten() {
            if ev["type"] != "release.assign" {
                continue;
            }
            let a = &ev["payload"];
            let version = a["version"].as_str().unwrap_or("").to_string();
            let rollout = a["rollout"].as_str().unwrap_or("").to_string();
            if !done.insert(format!("{rollout}/{version}")) {
                continue;
            }
            let push = |state: &'static str, seq: i64| {
                let body = json!({
                    "report": {"version": "1.0.0", "cursor": cursor, "outbox_business": 0,
                               "outbox_telemetry": 0, "outbox_dropped": 0},
                    "events": [{"seq": seq, "id": format!("{id}-{seq}"), "type": "release.status",
                        "class": "business", "at": Timestamp::now().to_string(),
                        "payload": {"version": version, "state": state, "rollout": rollout,
                                    "reason": "simulated"}}],
                });
                let req = client
                    .post(format!("{hq}/sync/v1/events"))
                    .bearer_auth(&token)
                    .json(&body);
                let shared = shared.clone();
                async move {
                    for _ in 0..20 {
                        if let Ok(r) = req.try_clone().unwrap().send().await {
                            if r.status().is_success() {
                                shared.pushes.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    panic!("push refused 20 times");
                }
            };
            seq += 1;
            push("downloading", seq).await;
            let expected = a["manifest"]["size"].as_u64().unwrap_or(0);
            let mut got = 0u64;
            if let Ok(mut r) = client
                .get(format!("{hq}{}", a["package"].as_str().unwrap_or("")))
                .bearer_auth(&token)
                .send()
                .await
            {
                while let Ok(Some(chunk)) = r.chunk().await {
                    got += chunk.len() as u64;
                }
            }
            assert_eq!(got, expected, "{id}: downloaded {got} of {expected} bytes");
            shared.downloads.fetch_add(1, Ordering::Relaxed);
            for st in ["staged", "installing", "probation"] {
                seq += 1;
                push(st, seq).await;
            }
            tokio::time::sleep(delay).await;
            seq += 1;
            let bad = *shared.bad.lock() == version && pilot;
            if bad {
                shared.first_failure.lock().get_or_insert_with(Instant::now);
                push("rolled_back", seq).await;
            } else {
                push("committed", seq).await;
            }
        }
    }
}

async fn upload(client: &reqwest::Client, hq: &str, key: &SigningKey, version: &str, bytes: &[u8]) {
    let now = Timestamp::now();
    let m = Manifest::sign(
        key,
        "storebox",
        version,
        &PackageFacts::of_bytes(bytes),
        "stable",
        now.as_millisecond() as u64,
        now - SignedDuration::from_hours(1),
        now + SignedDuration::from_hours(24 * 30),
    )
    .unwrap();
    let form = reqwest::multipart::Form::new()
        .part("package", reqwest::multipart::Part::bytes(bytes.to_vec()))
        .part(
            "manifest",
            reqwest::multipart::Part::text(serde_json::to_string(&m).unwrap()),
        );
    let r = client
        .post(format!("{hq}/hq/v1/releases"))
        .bearer_auth(ADMIN)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
}

async fn start_rollout(client: &reqwest::Client, hq: &str, plan: Value) -> String {
    let r = client
        .post(format!("{hq}/hq/v1/rollouts"))
        .bearer_auth(ADMIN)
        .json(&plan)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn rollout(client: &reqwest::Client, hq: &str, id: &str) -> Value {
    client
        .get(format!("{hq}/hq/v1/rollouts/{id}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn plan(version: &str, urgent: bool, soak: u32, abort: u8) -> Value {
    json!({
        "version": version,
        "waves": [
            {"groups": ["pilot"], "min_success_percent": 100, "soak_minutes": soak},
            {"groups": ["canary"], "min_success_percent": 100, "soak_minutes": soak},
            {"all": true, "min_success_percent": 100, "soak_minutes": 0}
        ],
        "abort_failure_percent": abort,
        "store_timeout_minutes": 60,
        "urgent": urgent
    })
}

fn main() {
    let n = env_n("ROLLOUT_STORES", 1000) as usize;
    let pkg_kib = env_n("ROLLOUT_PKG_KIB", 1024) as usize;
    let delay = Duration::from_millis(env_n("ROLLOUT_DELAY_MS", 200));
    let tick = env_n("ROLLOUT_TICK_SECONDS", 1);
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[42; 32]);
    let stores = register(dir.path(), n);
    let node = start_hq(dir.path(), &public_key_text(&key.verifying_key()), tick);
    let pid = node.child.id();
    let hq = node.url.clone();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "rollout bench: {n} stores, package {pkg_kib} KiB, fake install+probation {delay:?}, tick {tick} s, load average {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(2 * n)
            .build()
            .unwrap();
        let shared = Arc::new(Shared::default());
        let pilot = (n / 100).max(1);
        let mut tasks = Vec::new();
        for (i, (id, token)) in stores.into_iter().enumerate() {
            tasks.push(tokio::spawn(store_loop(
                client.clone(),
                hq.clone(),
                id,
                token,
                i < pilot,
                delay,
                shared.clone(),
            )));
        }
        tokio::time::sleep(Duration::from_secs(2)).await; // every long-poll open

        // (a) urgent fix to everyone.
        let bytes = package(pkg_kib * 1024, 1);
        let (cpu0, t0) = (cpu_secs(pid), Instant::now());
        upload(&client, &hq, &key, "2.0.0", &bytes).await;
        let uploaded = t0.elapsed();
        let t1 = Instant::now();
        let id = start_rollout(&client, &hq, plan("2.0.0", true, 60, 5)).await;
        let mut peak_rss: f64 = 0.0;
        let v = loop {
            let v = rollout(&client, &hq, &id).await;
            peak_rss = peak_rss.max(mem_mib(pid, "VmRSS"));
            if v["state"] != "running" {
                break v;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let (all, from_rollout) = (t0.elapsed(), t1.elapsed());
        let cpu = cpu_secs(pid) - cpu0;
        assert_eq!(v["state"], "completed", "{v}");
        println!(
            "(a) urgent 3-wave rollout: {} of {n} committed; publish→100 % {:.1} s (upload {:.2} s, rollout {:.1} s); HQ CPU {:.1} s ({:.0} % of one core); HQ RSS peak {:.0} MiB, VmHWM {:.0} MiB; {} downloads, {} status pushes",
            v["counts"]["succeeded"],
            all.as_secs_f64(),
            uploaded.as_secs_f64(),
            from_rollout.as_secs_f64(),
            cpu,
            100.0 * cpu / all.as_secs_f64(),
            peak_rss,
            mem_mib(pid, "VmHWM"),
            shared.downloads.load(Ordering::Relaxed),
            shared.pushes.load(Ordering::Relaxed),
        );

        // (b) a bad version: pilot stores roll back.
        *shared.bad.lock() = "2.0.1".into();
        upload(&client, &hq, &key, "2.0.1", &package(pkg_kib * 1024, 2)).await;
        let id = start_rollout(&client, &hq, plan("2.0.1", false, 0, 5)).await;
        let v = loop {
            let v = rollout(&client, &hq, &id).await;
            if v["state"] != "running" {
                break v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let halted = Instant::now();
        let first = shared.first_failure.lock().expect("a pilot rolled back");
        // Let a few more ticks pass: nobody else may be assigned.
        tokio::time::sleep(Duration::from_secs(2 * tick + 1)).await;
        let after = rollout(&client, &hq, &id).await;
        println!(
            "(b) bad version: {}; first rolled_back → halted {:.0} ms; assigned {} of {n} (pilot {pilot}), still {} after {} more ticks; reason: {}",
            v["state"],
            halted.duration_since(first).as_secs_f64() * 1000.0,
            v["counts"]["assigned"],
            after["counts"]["assigned"],
            2,
            v["reason"]
        );
        shared.stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
    });
}
