//! Catalog and pricing benchmark (issue "Local catalog, effective-dated prices, promotions and
//! basket pricing"). Not a test: it drives the real `storebox` release binary over loopback.
//!
//! `cargo bench --bench pricing` builds `storebox` itself (`cargo build --release --bin storebox`,
//! found in `$CARGO_TARGET_DIR/release` or `target/release`) unless `STOREBOX_BIN` names a binary.
//!
//! Phases, each bounded in time:
//! 1. generate a catalog (`BENCH_ITEMS`, 100000 items in 14 departments, 10 % sold by `kg`, one
//!    or two barcodes each), 10 price records per sku (past, current, future, some with an end)
//!    and `BENCH_PROMOS` (200) promotions of all four kinds, as a JSON-lines file of HQ events;
//! 2. import rate: `storebox import FILE` (wall clock of the process), against the reference of
//!    the same rows inserted with rusqlite into the same tables and indexes
//!    (`src/db/migrations/0003_catalog.sql`, `0006_price_lookup.sql` and
//!    `0008_promotion_times.sql`, one transaction, prepared statements, same pragmas);
//! 3. start `storebox serve` on that data dir with an admin bearer token; check a sample of
//!    `GET /api/v1/prices/{sku}` answers against prices computed here;
//! 4. price lookups: `BENCH_CLIENTS` (32) tasks, each with its own keep-alive HTTP/1.1 connection
//!    (hyper's client connection, the lightest maintained client: the load generator shares the
//!    server's cores, so every microsecond it spends is taken from the server), closed loop
//!    for `BENCH_DURATION_S` (10) on `GET /api/v1/prices/{random sku}`, and the same on
//!    `GET /healthz` (reference), in `BENCH_PAIRS` (5) alternating pairs of slices that add up
//!    to that duration each, then the lookups again with `BENCH_FEW_CLIENTS` (4, 0 = skip)
//!    clients as a diagnostic; then an open-loop phase at `BENCH_RATE` (10000) req/s, plus one at
//!    80 % of the measured closed-loop maximum if that maximum is below 110 % of the rate, and
//!    `/healthz` open loop at `BENCH_RATE` as the latency reference (the open loops run their
//!    clients on a runtime of `BENCH_RATE_CLIENT_THREADS` (1) threads of its own, the closed
//!    loops on `BENCH_CLIENT_THREADS` (2));
//! 5. basket pricing: `BENCH_BASKET_CLIENTS` (8) tasks posting `BENCH_BASKET_LINES` (50)-line
//!    baskets of random skus to `POST /api/v1/baskets/price`.
//!
//! `BENCH_DATA_DIR=DIR` keeps the imported data in DIR; later runs with the same DIR reuse it and
//! skip the import phases (for tuning the HTTP phases).
//!
//! Before the import and before the HTTP phases it waits (at most `BENCH_IDLE_WAIT_S`, 600 s) until
//! no other benchmark runs (`pgrep -f` for `bench ingest`, `release/deps/ingest-` and
//! `target/release/storebox serve`, other than its own server) and reports whether the machine was
//! otherwise idle. Every child process is stopped by a drop guard, also on error. Everything
//! listens on 127.0.0.1 only.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::params;
use serde_json::{json, Value};

const DAY_MS: i64 = 86_400_000;
const EACH_DEPARTMENTS: [&str; 10] = [
    "dairy",
    "bakery",
    "beverages",
    "frozen",
    "pantry",
    "snacks",
    "household",
    "personal-care",
    "pet",
    "baby",
];
const KG_DEPARTMENTS: [&str; 4] = ["produce", "deli", "meat", "cheese"];
const SCHEMA: &str = include_str!("../src/db/migrations/0003_catalog.sql");
const SCHEMA_LOOKUP: &str = include_str!("../src/db/migrations/0006_price_lookup.sql");
const SCHEMA_TIMES: &str = include_str!("../src/db/migrations/0008_promotion_times.sql");

// ---------------------------------------------------------------------------------------------
// Knobs

struct Knobs {
    items: usize,
    promos: usize,
    clients: usize,
    few_clients: usize,
    basket_clients: usize,
    basket_lines: usize,
    duration: Duration,
    warmup: Duration,
    rate: f64,
    rate_workers: usize,
    rate_threads: usize,
    pairs: usize,
    client_threads: usize,
    idle_wait: Duration,
    import_timeout: Duration,
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
            items: env_num("BENCH_ITEMS", 100_000)?,
            promos: env_num("BENCH_PROMOS", 200)?,
            clients: env_num("BENCH_CLIENTS", 32)?,
            few_clients: env_num("BENCH_FEW_CLIENTS", 4)?,
            basket_clients: env_num("BENCH_BASKET_CLIENTS", 8)?,
            basket_lines: env_num("BENCH_BASKET_LINES", 50)?,
            duration: Duration::from_secs(env_num("BENCH_DURATION_S", 10)?),
            warmup: Duration::from_secs(env_num("BENCH_WARMUP_S", 2)?),
            rate: env_num("BENCH_RATE", 10_000.0)?,
            rate_workers: env_num("BENCH_RATE_WORKERS", 64)?,
            client_threads: env_num("BENCH_CLIENT_THREADS", 2)?,
            rate_threads: env_num("BENCH_RATE_CLIENT_THREADS", 1)?,
            pairs: env_num("BENCH_PAIRS", 5)?,
            idle_wait: Duration::from_secs(env_num("BENCH_IDLE_WAIT_S", 600)?),
            import_timeout: Duration::from_secs(env_num("BENCH_IMPORT_TIMEOUT_S", 1800)?),
        };
        if !(100..=10_000_000).contains(&k.items) {
            bail!("BENCH_ITEMS must be 100..=10000000");
        }
        if k.clients == 0
            || k.basket_clients == 0
            || k.rate_workers == 0
            || k.client_threads == 0
            || k.rate_threads == 0
        {
            bail!("client counts must be at least 1");
        }
        if !(1..=1000).contains(&k.basket_lines) {
            bail!("BENCH_BASKET_LINES must be 1..=1000 (the API limit)");
        }
        if k.rate.is_nan() || k.rate < 1.0 || k.duration.is_zero() {
            bail!("BENCH_RATE must be ≥ 1 and BENCH_DURATION_S ≥ 1");
        }
        Ok(k)
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes and the machine

/// A child process stopped on drop: SIGTERM, up to 5 s to exit, then SIGKILL.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
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

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// CPU seconds (user + system) used so far by a process (`/proc/PID/stat`, 100 ticks/s).
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// A `/proc/PID/status` field in kB (`VmHWM`, `RssAnon`, `RssFile`, ...) of a live process, in MiB.
fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
}

/// Other benchmark processes now running (pid and command line), ignoring `own` pids.
fn other_benchmarks(own: &[u32]) -> Vec<String> {
    let me = std::process::id();
    let mut found = Vec::new();
    for pattern in [
        "bench ingest",
        "release/deps/ingest-",
        "target/release/storebox serve",
    ] {
        let Ok(out) = Command::new("pgrep").args(["-a", "-f", pattern]).output() else {
            continue;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let pid: u32 = line
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            if pid != 0 && pid != me && !own.contains(&pid) {
                found.push(line.chars().take(120).collect());
            }
        }
    }
    found
}

/// Waits until no other benchmark runs, at most `max`. Returns a one-line account.
fn wait_for_quiet_machine(phase: &str, own: &[u32], max: Duration) -> String {
    let start = Instant::now();
    let mut announced = false;
    loop {
        let others = other_benchmarks(own);
        if others.is_empty() {
            let waited = start.elapsed().as_secs();
            let msg = format!(
                "{phase}: no other benchmark running (waited {waited} s; loadavg {})",
                loadavg()
            );
            eprintln!("bench: {msg}");
            return msg;
        }
        if start.elapsed() >= max {
            let msg = format!(
                "{phase}: NOT idle, other benchmark(s) still running after {} s: {} (loadavg {})",
                max.as_secs(),
                others.join(" | "),
                loadavg()
            );
            eprintln!("bench: {msg}");
            return msg;
        }
        if !announced {
            eprintln!(
                "bench: {phase}: waiting for other benchmark(s) to finish: {}",
                others.join(" | ")
            );
            announced = true;
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}

/// `STOREBOX_BIN`, or the binary built by `cargo build --release --bin storebox`.
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
    let status = Command::new(&cargo)
        .current_dir(&manifest_dir)
        .args(["build", "--release", "--bin", "storebox"])
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running {cargo} build --release"))?;
    if !status.success() {
        bail!("cargo build --release failed ({status})");
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| {
            if d.is_relative() {
                manifest_dir.join(d)
            } else {
                d
            }
        })
        .unwrap_or_else(|| manifest_dir.join("target"));
    for candidate in [
        target_dir.join("release/storebox"),
        manifest_dir.join("target/release/storebox"),
    ] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "built storebox not found in {}/release or target/release",
        target_dir.display()
    )
}

fn storebox_cmd(bin: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env("STOREBOX_STORAGE__DATA_DIR", dir)
        .env("STOREBOX_HTTP__LISTEN", "127.0.0.1:0")
        .env("STOREBOX_MQTT__LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null());
    cmd
}

/// Runs a short storebox command; returns stdout.
fn storebox_run(bin: &Path, dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = storebox_cmd(bin, dir)
        .args(args)
        .output()
        .with_context(|| format!("running storebox {}", args.join(" ")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "storebox {} failed ({}): {stdout}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// `storebox serve` with its http base URL.
fn start_server(bin: &Path, dir: &Path) -> anyhow::Result<(Proc, String)> {
    let log = dir.join("serve-stderr.log");
    let child = storebox_cmd(bin, dir)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting storebox serve")?;
    let mut proc = Proc {
        name: "storebox serve",
        child,
    };
    let stdout = proc.child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
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
    let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) else {
        bail!(
            "storebox serve printed no ready line within 60 s (exit: {:?}); stderr:\n{}",
            proc.exited(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    let http = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .ok_or_else(|| anyhow!("no http= in ready line {line:?}"))?
        .trim_end_matches('/')
        .to_string();
    if !http.starts_with("http://127.0.0.1:") {
        bail!("storebox is not on 127.0.0.1: {line:?}");
    }
    Ok((proc, http))
}

// ---------------------------------------------------------------------------------------------
// Data set

struct Item {
    sku: String,
    name: String,
    department: Option<&'static str>,
    kg: bool,
    barcodes: Vec<String>,
    attributes: Value,
}

struct PriceRow {
    id: String,
    item: u32,
    price: i64,
    starts_ms: i64,
    ends_ms: Option<i64>,
}

struct Promo {
    id: String,
    name: String,
    kind: &'static str,
    params: Value,
    skus: Vec<String>,
    department: Option<&'static str>,
    starts_ms: i64,
    ends_ms: Option<i64>,
}

struct Dataset {
    items: Vec<Item>,
    prices: Vec<PriceRow>,
    promos: Vec<Promo>,
}

fn fmt_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Deterministic catalog, prices and promotions around `now_ms` (whole seconds). No record
/// starts or ends within a day of `now_ms`, so nothing changes while the benchmark runs.
fn generate(items_n: usize, promos_n: usize, now_ms: i64) -> Dataset {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let secs = |rng: &mut StdRng| rng.random_range(0..86_400i64) * 1000;
    let mut items = Vec::with_capacity(items_n);
    let mut barcode = 800_000_000_000u64;
    for i in 0..items_n {
        let kg = i % 10 == 3;
        let department = if i % 97 == 5 {
            None
        } else if kg {
            Some(KG_DEPARTMENTS[rng.random_range(0..KG_DEPARTMENTS.len())])
        } else {
            Some(EACH_DEPARTMENTS[rng.random_range(0..EACH_DEPARTMENTS.len())])
        };
        let n_codes = if kg {
            usize::from((i / 10) % 2 == 0)
        } else {
            1 + usize::from(i % 5 == 0)
        };
        let barcodes = (0..n_codes)
            .map(|_| {
                barcode += 1;
                format!("{barcode}0")
            })
            .collect();
        let attributes = if i % 4 == 0 {
            json!({"brand": format!("brand-{}", i % 311), "size": format!("{} g", 100 + i % 900)})
        } else {
            json!({})
        };
        items.push(Item {
            sku: (2_000_000 + i).to_string(),
            name: format!(
                "{} product {i} {}",
                department.unwrap_or("misc"),
                ["classic", "organic", "family pack", "light", "premium"][i % 5]
            ),
            department,
            kg,
            barcodes,
            attributes,
        });
    }

    let mut prices = Vec::with_capacity(items_n * 10);
    for (i, item) in items.iter().enumerate() {
        let base: i64 = if item.kg {
            rng.random_range(99..4_000)
        } else {
            rng.random_range(25..3_000)
        };
        let vary = |rng: &mut StdRng| (base * rng.random_range(80..=120i64) / 100).max(1);
        let d = |days: i64| now_ms + days * DAY_MS;
        // (starts, ends): four past open-ended steps, two past temporary ones, the current
        // price, a temporary one (current for 30 % of skus), and three future ones.
        let mut schedule: Vec<(i64, Option<i64>)> = vec![
            (d(-400) + secs(&mut rng), None),
            (d(-300) + secs(&mut rng), None),
            (d(-200) + secs(&mut rng), Some(d(-150))),
            (d(-120) + secs(&mut rng), None),
            (d(-60) + secs(&mut rng), Some(d(-45))),
            (d(-30) + secs(&mut rng), None),
        ];
        if i % 10 < 3 {
            schedule.push((
                d(-rng.random_range(2..7)) + secs(&mut rng),
                Some(d(rng.random_range(2..10))),
            ));
        } else {
            schedule.push((d(-20) + secs(&mut rng), Some(d(-10))));
        }
        schedule.push((d(rng.random_range(10..40)) + secs(&mut rng), None));
        let temp = d(rng.random_range(50..60)) + secs(&mut rng);
        schedule.push((temp, Some(temp + 7 * DAY_MS)));
        schedule.push((d(rng.random_range(90..200)) + secs(&mut rng), None));
        for (k, (starts_ms, ends_ms)) in schedule.into_iter().enumerate() {
            prices.push(PriceRow {
                id: format!("pr-{}-{k}", item.sku),
                item: i as u32,
                price: vary(&mut rng),
                starts_ms,
                ends_ms,
            });
        }
    }

    let kinds = ["percent_off", "amount_off", "multi_buy", "buy_x_get_y"];
    let all_departments: Vec<&'static str> = EACH_DEPARTMENTS
        .iter()
        .chain(KG_DEPARTMENTS.iter())
        .copied()
        .collect();
    let mut promos = Vec::with_capacity(promos_n);
    for p in 0..promos_n {
        let kind = kinds[p % 4];
        let params = match kind {
            "percent_off" => json!({"percent": rng.random_range(5..=40)}),
            "amount_off" => json!({"amount": rng.random_range(10..=150)}),
            "multi_buy" => {
                json!({"quantity": rng.random_range(2..=4), "price": rng.random_range(100..=900)})
            }
            _ => json!({"buy": rng.random_range(1..=3), "get": 1}),
        };
        let (skus, department) = if p % 10 == 0 {
            (
                Vec::new(),
                Some(all_departments[(p / 10) % all_departments.len()]),
            )
        } else {
            let n = rng.random_range(5..=60);
            let skus: HashSet<String> = (0..n)
                .map(|_| items[rng.random_range(0..items.len())].sku.clone())
                .collect();
            let mut skus: Vec<String> = skus.into_iter().collect();
            skus.sort();
            (skus, None)
        };
        let (starts_ms, ends_ms) = match p % 5 {
            0 => (now_ms - 60 * DAY_MS, Some(now_ms - 30 * DAY_MS)),
            4 => (
                now_ms + rng.random_range(15..40) * DAY_MS,
                Some(now_ms + 45 * DAY_MS),
            ),
            1 => (now_ms - rng.random_range(2..20) * DAY_MS, None),
            _ => (
                now_ms - rng.random_range(2..20) * DAY_MS,
                Some(now_ms + rng.random_range(3..30) * DAY_MS),
            ),
        };
        promos.push(Promo {
            id: format!("promo-{p:04}"),
            name: format!("{kind} promotion {p}"),
            kind,
            params,
            skus,
            department,
            starts_ms,
            ends_ms,
        });
    }
    Dataset {
        items,
        prices,
        promos,
    }
}

/// Writes the data set as HQ events (the wire shape of docs/sync-protocol.md), one per line; returns the count.
fn write_events(ds: &Dataset, path: &Path) -> anyhow::Result<u64> {
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut n = 0u64;
    let mut line =
        |w: &mut BufWriter<std::fs::File>, ty: &str, payload: Value| -> std::io::Result<()> {
            n += 1;
            let ev = json!({"id": format!("e-{n}"), "type": ty, "payload": payload});
            serde_json::to_writer(&mut *w, &ev)?;
            w.write_all(b"\n")
        };
    for it in &ds.items {
        line(
            &mut w,
            "catalog.upsert",
            json!({"sku": it.sku, "name": it.name, "barcodes": it.barcodes,
                   "department": it.department, "unit": if it.kg { "kg" } else { "each" },
                   "attributes": it.attributes}),
        )?;
    }
    for p in &ds.prices {
        line(
            &mut w,
            "price.set",
            json!({"id": p.id, "sku": ds.items[p.item as usize].sku, "price": p.price,
                   "starts_at": fmt_ms(p.starts_ms), "ends_at": p.ends_ms.map(fmt_ms)}),
        )?;
    }
    for p in &ds.promos {
        line(
            &mut w,
            "promotion.upsert",
            json!({"id": p.id, "name": p.name, "kind": p.kind, "params": p.params,
                   "skus": p.skus, "department": p.department,
                   "starts_at": fmt_ms(p.starts_ms), "ends_at": p.ends_ms.map(fmt_ms)}),
        )?;
    }
    w.flush()?;
    Ok(n)
}

/// The effective price (amount, id) of item `i` at `at_ms`, by the rule of docs/pricing.md.
fn expected_price(ds: &Dataset, i: usize, at_ms: i64) -> Option<(i64, &str)> {
    ds.prices[i * 10..i * 10 + 10]
        .iter()
        .enumerate()
        .filter(|(_, p)| p.starts_ms <= at_ms && p.ends_ms.is_none_or(|e| at_ms < e))
        .max_by_key(|(k, p)| (p.starts_ms, *k))
        .map(|(_, p)| (p.price, p.id.as_str()))
}

// ---------------------------------------------------------------------------------------------
// Import: storebox vs raw rusqlite

/// Reference: the same rows into the same tables and indexes, one transaction, prepared
/// statements, the writer pragmas storebox uses (WAL, synchronous=FULL).
fn reference_insert(ds: &Dataset, path: &Path, now_ms: i64) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(SCHEMA_LOOKUP)?;
    conn.execute_batch(SCHEMA_TIMES)?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut ins_item = tx.prepare(
            "INSERT INTO items (sku, name, department, unit, attributes, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut ins_code = tx.prepare("INSERT INTO barcodes (barcode, sku) VALUES (?1, ?2)")?;
        for it in &ds.items {
            ins_item.execute(params![
                it.sku,
                it.name,
                it.department,
                if it.kg { "kg" } else { "each" },
                it.attributes.to_string(),
                now_ms
            ])?;
            for b in &it.barcodes {
                ins_code.execute(params![b, it.sku])?;
            }
        }
        let mut ins_price = tx.prepare(
            "INSERT INTO prices (id, sku, price, starts_ms, ends_ms, received) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (n, p) in ds.prices.iter().enumerate() {
            ins_price.execute(params![
                p.id,
                ds.items[p.item as usize].sku,
                p.price,
                p.starts_ms,
                p.ends_ms,
                n as i64 + 1
            ])?;
        }
        let mut ins_promo = tx.prepare(
            "INSERT INTO promotions (id, name, kind, params, skus, department, starts_ms, ends_ms, received)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        let mut ins_psku =
            tx.prepare("INSERT INTO promotion_skus (sku, promotion_id) VALUES (?1, ?2)")?;
        for (n, p) in ds.promos.iter().enumerate() {
            ins_promo.execute(params![
                p.id,
                p.name,
                p.kind,
                p.params.to_string(),
                serde_json::to_string(&p.skus)?,
                p.department,
                p.starts_ms,
                p.ends_ms,
                (ds.prices.len() + n) as i64 + 1
            ])?;
            for s in &p.skus {
                ins_psku.execute(params![s, p.id])?;
            }
        }
    }
    tx.commit()?;
    Ok(start.elapsed())
}

/// Reading and parsing the event file only (into `serde_json::Value`), for the breakdown.
fn parse_only(path: &Path) -> anyhow::Result<(Duration, u64)> {
    let start = Instant::now();
    let r = BufReader::with_capacity(1 << 16, std::fs::File::open(path)?);
    let mut n = 0u64;
    for line in r.lines() {
        let v: Value = serde_json::from_str(&line?)?;
        n += u64::from(v.is_object());
    }
    Ok((start.elapsed(), n))
}

/// `storebox import FILE`, bounded by `timeout`; returns the wall clock and the stdout.
fn storebox_import(
    bin: &Path,
    dir: &Path,
    file: &Path,
    timeout: Duration,
) -> anyhow::Result<(Duration, String)> {
    let out_path = dir.join("import-stdout.log");
    let err_path = dir.join("import-stderr.log");
    let start = Instant::now();
    let child = storebox_cmd(bin, dir)
        .arg("import")
        .arg(file)
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()
        .context("starting storebox import")?;
    let mut proc = Proc {
        name: "storebox import",
        child,
    };
    let status = loop {
        if let Some(s) = proc.exited() {
            break s;
        }
        if start.elapsed() > timeout {
            bail!(
                "storebox import did not finish within {} s",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = start.elapsed();
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    if !status.success() {
        bail!(
            "storebox import failed ({status}): {stdout}{}",
            std::fs::read_to_string(&err_path).unwrap_or_default()
        );
    }
    Ok((took, stdout.trim().to_string()))
}

// ---------------------------------------------------------------------------------------------
// HTTP load

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Healthz,
    Price,
    Basket,
}

struct Shared {
    /// For the correctness sample (not measured).
    client: reqwest::Client,
    /// The server's address: measured phases use [`Conn`]s to it.
    addr: std::net::SocketAddr,
    auth: String,
    skus: Vec<String>,
    kg: Vec<bool>,
    basket_lines: usize,
}

#[derive(Default)]
struct Stats {
    /// Per-request latency (send → whole body received) of successful requests, µs.
    lat_us: Vec<u32>,
    /// Open-loop phases: how late each request was sent against its schedule, µs.
    lag_us: Vec<u32>,
    errors: u64,
    /// Open-loop phases: requests still unsent when the phase ended.
    unsent: u64,
    first_error: Option<String>,
    elapsed: Duration,
    server_cpu: f64,
    client_cpu: f64,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.lat_us.extend(other.lat_us);
        self.lag_us.extend(other.lag_us);
        self.errors += other.errors;
        self.unsent += other.unsent;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn ok(&self) -> usize {
        self.lat_us.len()
    }

    fn rate(&self) -> f64 {
        self.ok() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Adds a finished phase measured as one slice of a longer one: its counts, time and CPU.
    fn add_slice(&mut self, other: Stats) {
        self.elapsed += other.elapsed;
        self.server_cpu += other.server_cpu;
        self.client_cpu += other.client_cpu;
        self.merge(other);
    }

    fn finish(&mut self) {
        self.lat_us.sort_unstable();
        self.lag_us.sort_unstable();
    }
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 * p / 100.0).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx] as f64 / 1000.0
}

/// One keep-alive HTTP/1.1 connection of one load task (hyper's client connection: no pool, no
/// redirect or proxy logic, so the load generator takes as little of the shared CPU as it can).
/// Reconnects on the next request after an error.
#[derive(Default)]
struct Conn {
    send: Option<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>>,
}

impl Conn {
    async fn sender(
        &mut self,
        addr: std::net::SocketAddr,
    ) -> Result<
        &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
        String,
    > {
        if self.send.as_ref().is_none_or(|s| s.is_closed()) {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
            let (send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(conn);
            self.send = Some(send);
        }
        Ok(self.send.as_mut().expect("connected above"))
    }

    /// Sends `req` and reads the whole answer; the latency is send → last body byte.
    async fn request(
        &mut self,
        addr: std::net::SocketAddr,
        req: hyper::Request<http_body_util::Full<bytes::Bytes>>,
    ) -> Result<(Duration, hyper::StatusCode, bytes::Bytes), String> {
        use http_body_util::BodyExt;
        let send = self.sender(addr).await?;
        let t0 = Instant::now();
        let exchange = async {
            send.ready().await.map_err(|e| format!("ready: {e}"))?;
            let res = send
                .send_request(req)
                .await
                .map_err(|e| format!("send: {e}"))?;
            let status = res.status();
            let body = res
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        let r = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .unwrap_or_else(|_| Err("no answer within 10 s".into()));
        match r {
            Ok((status, body)) => Ok((t0.elapsed(), status, body)),
            Err(e) => {
                self.send = None;
                Err(e)
            }
        }
    }
}

async fn one_request(
    sh: &Shared,
    conn: &mut Conn,
    target: Target,
    rng: &mut StdRng,
) -> Result<Duration, String> {
    let builder = hyper::Request::builder().header(hyper::header::HOST, sh.addr.to_string());
    let req = match target {
        Target::Healthz => builder
            .uri("/healthz")
            .body(http_body_util::Full::default()),
        Target::Price => {
            let sku = &sh.skus[rng.random_range(0..sh.skus.len())];
            builder
                .uri(format!("/api/v1/prices/{sku}"))
                .header(hyper::header::AUTHORIZATION, &sh.auth)
                .body(http_body_util::Full::default())
        }
        Target::Basket => {
            let mut body = String::from("{\"lines\":[");
            for l in 0..sh.basket_lines {
                let i = rng.random_range(0..sh.skus.len());
                let qty: i64 = if sh.kg[i] {
                    rng.random_range(80..=2_500)
                } else if rng.random_range(0..4) == 0 {
                    rng.random_range(3..=8)
                } else {
                    rng.random_range(1..=2)
                };
                if l > 0 {
                    body.push(',');
                }
                let _ = write!(body, "{{\"sku\":\"{}\",\"quantity\":{qty}}}", sh.skus[i]);
            }
            body.push_str("]}");
            builder
                .method(hyper::Method::POST)
                .uri("/api/v1/baskets/price")
                .header(hyper::header::AUTHORIZATION, &sh.auth)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        }
    }
    .map_err(|e| format!("request: {e}"))?;
    let (took, status, body) = conn.request(sh.addr, req).await?;
    if status != hyper::StatusCode::OK {
        return Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ));
    }
    if target == Target::Basket && !body.starts_with(b"{") {
        return Err("basket answer is not an object".into());
    }
    if target == Target::Price && !body.starts_with(b"{\"sku\"") {
        return Err(format!(
            "price answer is not a price: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ));
    }
    Ok(took)
}

fn record(stats: &mut Stats, r: Result<Duration, String>) {
    match r {
        Ok(d) => stats
            .lat_us
            .push(d.as_micros().min(u32::MAX as u128) as u32),
        Err(e) => {
            stats.errors += 1;
            if stats.first_error.is_none() {
                stats.first_error = Some(e);
            }
        }
    }
}

/// `clients` tasks, each sending its next request as soon as the previous one is answered.
async fn closed_loop(
    sh: &Arc<Shared>,
    target: Target,
    clients: usize,
    duration: Duration,
    server_pid: u32,
) -> anyhow::Result<Stats> {
    let (s0, c0) = (cpu_seconds(&server_pid.to_string()), cpu_seconds("self"));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let sh = sh.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(1_000 + c as u64);
            let mut stats = Stats::default();
            let mut conn = Conn::default();
            while Instant::now() < deadline {
                let r = one_request(&sh, &mut conn, target, &mut rng).await;
                record(&mut stats, r);
            }
            stats
        }));
    }
    let mut all = Stats::default();
    let joined = tokio::time::timeout(duration + Duration::from_secs(30), async {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await);
        }
        out
    })
    .await
    .map_err(|_| anyhow!("closed-loop phase did not end within its duration + 30 s"))?;
    all.elapsed = start.elapsed();
    for s in joined {
        all.merge(s?);
    }
    all.server_cpu = cpu_seconds(&server_pid.to_string()) - s0;
    all.client_cpu = cpu_seconds("self") - c0;
    all.finish();
    Ok(all)
}

/// Open loop at `rate` req/s: request k is due at start + k / rate, and `workers` tasks take every
/// `workers`-th slot. A plain thread paces the slots: it sleeps to each due time with the OS's
/// sub-millisecond timer and hands the slot to its worker (tokio's timer has a 1 ms resolution: at
/// 10k req/s it released the requests in bursts of ~10 on each millisecond tick, and the latency
/// then measured the generator's own bursts as queueing). Latency is measured from the actual
/// send; the lateness against the schedule is recorded separately (it grows when the server or
/// the client cannot keep up). Nothing is sent after `duration`: what is still due then counts as
/// unsent.
async fn fixed_rate(
    sh: &Arc<Shared>,
    target: Target,
    rate: f64,
    workers: usize,
    duration: Duration,
    server_pid: u32,
) -> anyhow::Result<Stats> {
    let (s0, c0) = (cpu_seconds(&server_pid.to_string()), cpu_seconds("self"));
    let total = (rate * duration.as_secs_f64()) as u64;
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + duration;
    let mut slots = Vec::with_capacity(workers);
    let mut tasks = Vec::with_capacity(workers);
    for w in 0..workers {
        let sh = sh.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        slots.push(tx);
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(50_000 + w as u64);
            let mut stats = Stats::default();
            let mut conn = Conn::default();
            while let Some(due) = rx.recv().await {
                let now = Instant::now();
                if now >= end {
                    // Behind schedule at the end of the phase: never sent.
                    stats.unsent += 1;
                    continue;
                }
                let lag = now.saturating_duration_since(due);
                stats
                    .lag_us
                    .push(lag.as_micros().min(u32::MAX as u128) as u32);
                let r = one_request(&sh, &mut conn, target, &mut rng).await;
                record(&mut stats, r);
            }
            stats
        }));
    }
    let pacer = std::thread::spawn(move || {
        let mut handed = 0u64;
        for k in 0..total {
            let due = start + Duration::from_secs_f64(k as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if Instant::now() >= end || slots[(k % workers as u64) as usize].send(due).is_err() {
                break;
            }
            handed += 1;
        }
        // Dropping the senders ends the workers once they have drained their slots.
        handed
    });
    let mut all = Stats::default();
    let joined = tokio::time::timeout(duration + Duration::from_secs(30), async {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await);
        }
        out
    })
    .await
    .map_err(|_| anyhow!("fixed-rate phase did not end within its duration + 30 s"))?;
    all.elapsed = start.elapsed();
    for s in joined {
        all.merge(s?);
    }
    let handed = pacer
        .join()
        .map_err(|_| anyhow!("the pacing thread panicked"))?;
    // Slots the pacer never handed out (the phase ended first) are unsent too.
    all.unsent += total - handed;
    all.server_cpu = cpu_seconds(&server_pid.to_string()) - s0;
    all.client_cpu = cpu_seconds("self") - c0;
    all.finish();
    Ok(all)
}

/// [`fixed_rate`] on a runtime of its own with `threads` client threads (1: a current-thread
/// runtime), started on a thread of its own; the closed-loop runtime idles meanwhile. The open
/// loop measures latency on two cores shared with the server, so the generator should take as
/// little of them as it can: one thread keeps up with 10k req/s at ~0.5 core, two took ~0.65
/// (the p99 was the same within noise once the server's own 3 ms bursts were gone;
/// docs/benchmarks.md, `BENCH_RATE_CLIENT_THREADS=2`).
async fn fixed_rate_apart(
    sh: &Arc<Shared>,
    target: Target,
    rate: f64,
    workers: usize,
    threads: usize,
    duration: Duration,
    server_pid: u32,
) -> anyhow::Result<Stats> {
    let sh = sh.clone();
    let run = move || -> anyhow::Result<Stats> {
        let rt = if threads == 1 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()?
        };
        let stats = rt.block_on(fixed_rate(&sh, target, rate, workers, duration, server_pid));
        // Connection tasks still open end with the runtime.
        rt.shutdown_timeout(Duration::from_secs(1));
        stats
    };
    let handle = std::thread::Builder::new()
        .name("open-loop".into())
        .spawn(run)?;
    tokio::task::spawn_blocking(move || handle.join())
        .await?
        .map_err(|_| anyhow!("the open-loop thread panicked"))?
}

// ---------------------------------------------------------------------------------------------
// Main

struct Row {
    name: String,
    stats: Stats,
    unit: &'static str,
}

fn row_line(r: &Row) -> String {
    let s = &r.stats;
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    format!(
        "| {} | {:.0} {}/s | {:.3} | {:.3} | {:.3} | {:.3} | {} | {:.2} / {:.2} |",
        r.name,
        s.rate(),
        r.unit,
        pct(&s.lat_us, 50.0),
        pct(&s.lat_us, 99.0),
        pct(&s.lat_us, 99.9),
        pct(&s.lat_us, 100.0),
        s.errors,
        s.server_cpu / secs,
        s.client_cpu / secs,
    )
}

/// The server's kept-answer counters (`storebox_price_cache_{hits,misses}_total`), read from
/// `/metrics` between phases (not measured).
async fn cache_counts(sh: &Shared) -> anyhow::Result<(f64, f64)> {
    let m = cache_metrics(sh).await?;
    Ok((m[0], m[1]))
}

/// Hits, misses, entries and bytes of the kept answers, from `/metrics`.
async fn cache_metrics(sh: &Shared) -> anyhow::Result<[f64; 4]> {
    let text = sh
        .client
        .get(format!("http://{}/metrics", sh.addr))
        .send()
        .await?
        .text()
        .await?;
    let get = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok([
        "storebox_price_cache_hits_total",
        "storebox_price_cache_misses_total",
        "storebox_price_cache_entries",
        "storebox_price_cache_bytes",
    ]
    .map(get))
}

/// "answers kept: N % hits" between two [`cache_counts`] readings.
fn hit_note(before: (f64, f64), after: (f64, f64)) -> String {
    let (h, m) = (after.0 - before.0, after.1 - before.1);
    format!(
        "kept answers {:.0} % hits",
        if h + m > 0.0 {
            h / (h + m) * 100.0
        } else {
            0.0
        }
    )
}

async fn http_phases(
    knobs: &Knobs,
    sh: Arc<Shared>,
    server_pid: u32,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    // Warm-up (connections, SQLite page cache), not recorded.
    eprintln!("bench: warm-up {} s", knobs.warmup.as_secs());
    closed_loop(&sh, Target::Price, knobs.clients, knobs.warmup, server_pid).await?;

    // Lookups and the `/healthz` reference in alternating slices (lookups first in the 1st, 3rd,
    // … pair, `/healthz` first in the others), so drift in what else the host runs weighs on both alike:
    // measured one after the other, `/healthz` alone varied 51k–75k req/s between runs of the
    // same build (docs/benchmarks.md).
    let pairs = knobs.pairs.max(1);
    let slice = knobs.duration / pairs as u32;
    eprintln!(
        "bench: price lookups and /healthz reference, closed loop, {} clients, {pairs} pairs of {:.1} s slices",
        knobs.clients,
        slice.as_secs_f64()
    );
    let c0 = cache_counts(&sh).await?;
    let mut price = Stats::default();
    let mut health = Stats::default();
    let mut pair_ratios = Vec::with_capacity(pairs);
    for pair in 0..pairs {
        let order = if pair % 2 == 0 {
            [Target::Price, Target::Healthz]
        } else {
            [Target::Healthz, Target::Price]
        };
        let mut rates = [0.0; 2];
        for target in order {
            let s = closed_loop(&sh, target, knobs.clients, slice, server_pid).await?;
            let i = usize::from(target == Target::Healthz);
            rates[i] = s.rate();
            if target == Target::Price {
                price.add_slice(s);
            } else {
                health.add_slice(s);
            }
        }
        pair_ratios.push(rates[0] / rates[1].max(1e-9) * 100.0);
    }
    price.finish();
    health.finish();
    let price_hits = hit_note(c0, cache_counts(&sh).await?);
    let ratio = price.rate() / health.rate().max(1e-9) * 100.0;
    pair_ratios.sort_by(f64::total_cmp);
    notes.push(format!(
        "lookup throughput = {ratio:.1} % of /healthz throughput over {pairs} alternating pairs of slices \
         (per pair {:.1}–{:.1} %, median {:.1} %) (aim ≥ 50 %: {})",
        pair_ratios[0],
        pair_ratios[pair_ratios.len() - 1],
        pair_ratios[pair_ratios.len() / 2],
        if ratio >= 50.0 { "met" } else { "NOT met" }
    ));
    let max_lookup = price.rate();
    // Diagnostic: the same closed loop with few clients (no more concurrent database reads than
    // the server keeps pooled reader connections).
    let few = if knobs.few_clients > 0 {
        eprintln!(
            "bench: price lookups, closed loop, {} clients",
            knobs.few_clients
        );
        let c0 = cache_counts(&sh).await?;
        let few = closed_loop(
            &sh,
            Target::Price,
            knobs.few_clients,
            knobs.duration,
            server_pid,
        )
        .await?;
        Some((few, hit_note(c0, cache_counts(&sh).await?)))
    } else {
        None
    };
    rows.push(Row {
        name: format!(
            "GET /api/v1/prices/{{sku}}, {} clients closed loop ({price_hits})",
            knobs.clients
        ),
        stats: price,
        unit: "req",
    });
    rows.push(Row {
        name: format!(
            "GET /healthz (reference), {} clients closed loop",
            knobs.clients
        ),
        stats: health,
        unit: "req",
    });
    if let Some((few, few_hits)) = few {
        rows.push(Row {
            name: format!(
                "GET /api/v1/prices/{{sku}}, {} clients closed loop ({few_hits})",
                knobs.few_clients
            ),
            stats: few,
            unit: "req",
        });
    }

    let mut rates = vec![knobs.rate];
    if max_lookup < knobs.rate * 1.1 {
        rates.push((max_lookup * 0.8).floor().max(1.0));
    }
    for rate in rates {
        eprintln!("bench: price lookups, open loop at {rate:.0} req/s");
        let c0 = cache_counts(&sh).await?;
        let s = fixed_rate_apart(
            &sh,
            Target::Price,
            rate,
            knobs.rate_workers,
            knobs.rate_threads,
            knobs.duration,
            server_pid,
        )
        .await?;
        let hits = hit_note(c0, cache_counts(&sh).await?);
        let achieved = s.rate();
        notes.push(format!(
            "open loop target {rate:.0} req/s: achieved {achieved:.0} req/s ({} due requests unsent at the end), \
             p50 {:.3} ms, p99 {:.3} ms, send lateness vs schedule p50 {:.3} ms / p99 {:.3} ms / max {:.1} ms \
             (aim p99 < 1 ms at 10k req/s: {})",
            s.unsent,
            pct(&s.lat_us, 50.0),
            pct(&s.lat_us, 99.0),
            pct(&s.lag_us, 50.0),
            pct(&s.lag_us, 99.0),
            pct(&s.lag_us, 100.0),
            // Kept up: at most 0.1 % of the slots unsent (the last few slots of a phase fall
            // after its end when the generator is a little late there) and ≥ 98 % of the rate.
            if rate >= 10_000.0
                && (s.unsent as f64) <= rate * knobs.duration.as_secs_f64() * 0.001
                && achieved >= rate * 0.98
                && pct(&s.lat_us, 99.0) < 1.0
            {
                "met"
            } else if rate >= 10_000.0 {
                "NOT met"
            } else {
                "n/a at this rate"
            }
        ));
        rows.push(Row {
            name: format!("GET /api/v1/prices/{{sku}}, open loop at {rate:.0} req/s ({hits})"),
            stats: s,
            unit: "req",
        });
    }

    // Reference for the latency aim: the same open loop on `/healthz`, which does no work. If
    // even it misses p99 < 1 ms at this rate, the machine (server and generator sharing its
    // cores) cannot show the aim, whatever the lookup costs.
    eprintln!(
        "bench: /healthz reference, open loop at {:.0} req/s",
        knobs.rate
    );
    let h = fixed_rate_apart(
        &sh,
        Target::Healthz,
        knobs.rate,
        knobs.rate_workers,
        knobs.rate_threads,
        knobs.duration,
        server_pid,
    )
    .await?;
    notes.push(format!(
        "reference: /healthz open loop at {:.0} req/s: achieved {:.0} req/s ({} unsent), p50 {:.3} ms, p99 {:.3} ms",
        knobs.rate,
        h.rate(),
        h.unsent,
        pct(&h.lat_us, 50.0),
        pct(&h.lat_us, 99.0),
    ));
    rows.push(Row {
        name: format!(
            "GET /healthz (reference), open loop at {:.0} req/s",
            knobs.rate
        ),
        stats: h,
        unit: "req",
    });

    eprintln!(
        "bench: basket pricing, {} lines, {} clients",
        knobs.basket_lines, knobs.basket_clients
    );
    closed_loop(
        &sh,
        Target::Basket,
        knobs.basket_clients,
        knobs.warmup,
        server_pid,
    )
    .await?;
    let baskets = closed_loop(
        &sh,
        Target::Basket,
        knobs.basket_clients,
        knobs.duration,
        server_pid,
    )
    .await?;
    notes.push(format!(
        "baskets: {:.0} lines priced/s",
        baskets.rate() * knobs.basket_lines as f64
    ));
    rows.push(Row {
        name: format!(
            "POST /api/v1/baskets/price, {} lines, {} clients closed loop",
            knobs.basket_lines, knobs.basket_clients
        ),
        stats: baskets,
        unit: "basket",
    });
    let [hits, misses, entries, bytes] = cache_metrics(&sh).await?;
    notes.push(format!(
        "kept price answers at the end: {entries:.0} entries weighed at {:.1} MiB \
         (storage.price_cache_mb bounds the weight); {hits:.0} hits / {misses:.0} misses in all",
        bytes / 1_048_576.0
    ));
    Ok(())
}

fn run() -> anyhow::Result<()> {
    let knobs = Knobs::from_env()?;
    let (nproc, model) = machine_facts();
    let bin = storebox_binary()?;
    eprintln!("bench: storebox binary {}", bin.display());
    let tmp = tempfile::Builder::new()
        .prefix("storebox-pricing-bench")
        .tempdir()?;
    // BENCH_DATA_DIR keeps the imported data for later runs of the HTTP phases (tuning):
    // the first run imports into it; later runs regenerate the same data set in memory from the
    // saved instant, skip the import and reference phases, and start the server on it.
    let keep = std::env::var_os("BENCH_DATA_DIR").map(PathBuf::from);
    let data = match &keep {
        Some(k) => k.join("data"),
        None => tmp.path().join("data"),
    };
    let saved_now = keep
        .as_ref()
        .and_then(|k| std::fs::read_to_string(k.join("bench-now-ms")).ok())
        .and_then(|s| s.trim().parse::<i64>().ok());
    std::fs::create_dir_all(&data)?;
    let mut notes: Vec<String> = Vec::new();
    let mut quiet: Vec<String> = Vec::new();

    // 1. Data set.
    let now_ms = saved_now.unwrap_or(jiff::Timestamp::now().as_second() * 1000);
    let t = Instant::now();
    let ds = generate(knobs.items, knobs.promos, now_ms);
    let file = tmp.path().join("catalog.jsonl");
    let events = write_events(&ds, &file)?;
    let file_mb = std::fs::metadata(&file)?.len() as f64 / 1e6;
    eprintln!(
        "bench: generated {} items, {} price records, {} promotions = {events} events ({file_mb:.0} MB) in {:.1} s",
        ds.items.len(),
        ds.prices.len(),
        ds.promos.len(),
        t.elapsed().as_secs_f64()
    );

    // 2. Import: storebox, then the reference, then parsing alone (skipped when reusing).
    let imported = if saved_now.is_some() {
        eprintln!("bench: reusing the import in {}", data.display());
        notes.push(format!(
            "import phases skipped: data reused from BENCH_DATA_DIR ({})",
            data.display()
        ));
        None
    } else {
        quiet.push(wait_for_quiet_machine("import", &[], knobs.idle_wait));
        let (import_took, import_out) = storebox_import(&bin, &data, &file, knobs.import_timeout)?;
        if !import_out.contains(&format!("imported {events} events")) {
            bail!("unexpected import output: {import_out:?}");
        }
        eprintln!("bench: storebox import: {:.1} s", import_took.as_secs_f64());
        let ref_took = reference_insert(&ds, &tmp.path().join("reference.db"), now_ms)?;
        eprintln!("bench: rusqlite reference: {:.1} s", ref_took.as_secs_f64());
        let (parse_took, parsed) = parse_only(&file)?;
        if parsed != events {
            bail!("parsed {parsed} events, wrote {events}");
        }
        let _ = std::fs::remove_file(tmp.path().join("reference.db"));
        let _ = std::fs::remove_file(tmp.path().join("reference.db-wal"));
        if let Some(k) = &keep {
            std::fs::write(k.join("bench-now-ms"), now_ms.to_string())?;
        }
        Some((import_took, ref_took, parse_took))
    };
    let db_mb = ["storebox.db", "storebox.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(data.join(f)).ok())
        .map(|m| m.len())
        .sum::<u64>() as f64
        / 1e6;

    // 3. Server and token.
    let token_name = format!("bench-{}", std::process::id());
    let token_out = storebox_run(
        &bin,
        &data,
        &["token", "add", &token_name, "--role", "admin"],
    )?;
    let token = token_out
        .lines()
        .last()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| anyhow!("no token in `storebox token add` output"))?
        .to_string();
    let (mut server, base) = start_server(&bin, &data)?;
    let server_pid = server.pid();
    eprintln!("bench: storebox serve at {base} (pid {server_pid})");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(knobs.client_threads)
        .enable_all()
        .build()?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .no_gzip()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(120))
        .timeout(Duration::from_secs(10))
        .build()?;
    let addr = base
        .trim_start_matches("http://")
        .parse()
        .with_context(|| format!("server address in {base}"))?;
    let sh = Arc::new(Shared {
        client,
        addr,
        auth: format!("Bearer {token}"),
        skus: ds.items.iter().map(|i| i.sku.clone()).collect(),
        kg: ds.items.iter().map(|i| i.kg).collect(),
        basket_lines: knobs.basket_lines,
    });

    // Correctness sample: the server's effective prices match the rule applied here.
    let checked = rt.block_on(async {
        let mut rng = StdRng::seed_from_u64(7);
        let at = jiff::Timestamp::now().as_millisecond();
        let mut n = 0;
        for _ in 0..200 {
            let i = rng.random_range(0..ds.items.len());
            let url = format!("{base}/api/v1/prices/{}", ds.items[i].sku);
            let v: Value = sh
                .client
                .get(&url)
                .header(reqwest::header::AUTHORIZATION, &sh.auth)
                .send()
                .await?
                .json()
                .await?;
            let want = expected_price(&ds, i, at);
            let got = (v["price"].as_i64(), v["price_id"].as_str());
            if want.map(|(p, id)| (Some(p), Some(id))) != Some(got) {
                bail!("price of {} is {v}, expected {want:?}", ds.items[i].sku);
            }
            n += 1;
        }
        anyhow::Ok(n)
    })?;
    eprintln!("bench: {checked} sampled prices match the expected effective price");

    // 4 and 5. HTTP phases.
    quiet.push(wait_for_quiet_machine(
        "HTTP phases",
        &[server_pid],
        knobs.idle_wait,
    ));
    let mut rows = Vec::new();
    rt.block_on(http_phases(
        &knobs,
        sh.clone(),
        server_pid,
        &mut rows,
        &mut notes,
    ))?;
    quiet.push(wait_for_quiet_machine(
        "after HTTP phases",
        &[server_pid],
        Duration::ZERO,
    ));
    let server_mem = ["VmHWM", "RssAnon", "RssFile"].map(|f| status_mib(server_pid, f));
    server.stop();
    drop(rt);

    // Results.
    let mut out = String::new();
    let _ = writeln!(out, "\n## storebox pricing benchmark");
    let _ = writeln!(
        out,
        "machine: {nproc} CPUs, {model}; loadavg now {}",
        loadavg()
    );
    for q in &quiet {
        let _ = writeln!(out, "quiet check: {q}");
    }
    let _ = writeln!(
        out,
        "data: {} items ({} kg), {} price records, {} promotions = {events} events, {file_mb:.0} MB JSONL; database after import {db_mb:.0} MB",
        ds.items.len(),
        ds.items.iter().filter(|i| i.kg).count(),
        ds.prices.len(),
        ds.promos.len()
    );
    if let Some((import_took, ref_took, parse_took)) = imported {
        let ev_rate = events as f64 / import_took.as_secs_f64();
        let ref_rate = events as f64 / ref_took.as_secs_f64();
        let _ = writeln!(out, "\n| import | time | events/s |\n|---|---|---|");
        let _ = writeln!(
            out,
            "| `storebox import` (process wall clock) | {:.1} s | {ev_rate:.0} |",
            import_took.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "| rusqlite reference: same rows, same tables and indexes, one transaction | {:.1} s | {ref_rate:.0} |",
            ref_took.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "| reading + parsing the file only (serde_json::Value) | {:.1} s | {:.0} |",
            parse_took.as_secs_f64(),
            events as f64 / parse_took.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "storebox import rate = {:.1} % of the reference ({:.2}x its time)",
            ev_rate / ref_rate * 100.0,
            import_took.as_secs_f64() / ref_took.as_secs_f64()
        );
    }
    let _ = writeln!(
        out,
        "\n| HTTP phase ({} s each) | throughput | p50 ms | p99 ms | p99.9 ms | max ms | errors | CPU cores server / client |\n|---|---|---|---|---|---|---|---|",
        knobs.duration.as_secs()
    );
    for r in &rows {
        let _ = writeln!(out, "{}", row_line(r));
    }
    for n in &notes {
        let _ = writeln!(out, "- {n}");
    }
    if let [Some(hwm), Some(anon), Some(file)] = server_mem {
        // Readers map the database file (`mmap_size`): those pages are the kernel's page cache of
        // the file (RssFile), the process's own memory is RssAnon.
        let _ = writeln!(
            out,
            "- storebox serve peak RSS (VmHWM): {hwm:.0} MiB; at the end RssAnon {anon:.0} MiB (own memory), RssFile {file:.0} MiB (mapped database file and binary)"
        );
    }
    for r in &rows {
        if let Some(e) = &r.stats.first_error {
            let _ = writeln!(out, "- first error in \"{}\": {e}", r.name);
        }
    }
    println!("{out}");
    if rows.iter().any(|r| r.stats.errors > 0) {
        bail!("some requests failed (see the errors column)");
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
