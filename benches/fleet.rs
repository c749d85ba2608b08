//! Fleet benchmark (not a test): `cargo bench --bench fleet`. A fleet simulator that speaks the
//! real sync protocol over loopback HTTP to real `storebox hq` processes (the built binary):
//!
//! - N simulated stores each hold a feed long-poll (`wait=30`) open all the time, as stores do;
//! - (a) held: how many long-polls HQ holds at once while it still answers `/healthz` quickly;
//! - (b) ingest: every store pushes batches of checkouts (the store's push body: gzip'ed JSON)
//!   as fast as HQ acknowledges them, for a fixed time: store events stored per second;
//! - (c) latency: events authored at HQ once a second; for each, the time until every store's
//!   long-poll has returned it; p50/p99 over all (event, store) pairs.
//!
//! Run once on SQLite (one node) and once on PostgreSQL (two nodes behind no proxy: stores are
//! spread over both, authoring on the first). The reference in the same run is a raw PostgreSQL
//! insert of the same rows into a same-shaped table, in batches of the same size, through the same
//! driver (`tokio-postgres`, one `INSERT … SELECT unnest(…)` per batch, from as many concurrent
//! connections as HQ's pool).
//!
//! Knobs: `FLEET_STORES` (default 2000 on SQLite, 4000 on PostgreSQL), `FLEET_SECS` (ingest phase,
//! default 10), `FLEET_BATCH` (events per push, default 100), `FLEET_PUSHERS` (stores pushing at
//! once, default 64), `FLEET_ENGINES` (`sqlite,postgres`), `STOREBOX_TEST_PG` (admin URL as in the
//! tests).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_storebox");
const ADMIN: &str = "fleet-bench-admin";

fn env_n(key: &str, default: usize) -> usize {
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

fn start_node(dir: &std::path::Path, db_url: Option<&str>) -> Node {
    let mut cmd = Command::new(BIN);
    cmd.arg("hq")
        .env("STOREBOX_HQ_SERVER__LISTEN", "127.0.0.1:0")
        .env("STOREBOX_HQ_SERVER__DATA_DIR", dir)
        .env("STOREBOX_HQ_SERVER__ADMIN_TOKEN", ADMIN)
        .env("STOREBOX_LOG__LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(u) = db_url {
        cmd.env("STOREBOX_HQ_SERVER__DATABASE_URL", u);
    }
    let mut child = cmd.spawn().expect("spawn storebox hq");
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

fn register(dir: &std::path::Path, db_url: Option<&str>, n: usize) -> Vec<String> {
    // Through the library, as `storebox hq store add` does, without a process per store.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cfg = storebox::config::HqServerConfig {
            data_dir: dir.to_path_buf(),
            database_url: storebox::config::Secret::new(db_url.unwrap_or("")),
            ..Default::default()
        };
        let storage = storebox::hq::open_storage(&cfg).await.unwrap();
        let mut tokens = Vec::with_capacity(n);
        for i in 0..n {
            tokens.push(storage.add_store(&format!("s{i:05}"), "", 0).await.unwrap());
        }
        tokens
    })
}

fn gzip(v: &Value) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&serde_json::to_vec(v).unwrap()).unwrap();
    enc.finish().unwrap()
}

fn checkout(seq: i64) -> Value {
    json!({"seq": seq, "id": format!("checkout-{seq}"), "type": "checkout.completed",
           "class": "business", "at": "2026-11-30T10:00:00Z",
           "payload": {"checkout_id": format!("c-{seq}"), "lane": "lane-1", "total": 1234,
                       "lines": [{"sku": "1001", "quantity": 2, "unit_price": 129, "total": 258}]}})
}

struct Phase {
    held: usize,
    healthz_ms: f64,
    ingest_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v.get(((v.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

async fn run_fleet(
    nodes: &[String],
    tokens: &[String],
    secs: u64,
    batch: usize,
    pushers: usize,
) -> Phase {
    let n = tokens.len();
    // One HTTP client per store: its own connection, as a real store has.
    let stop = Arc::new(tokio::sync::Notify::new());
    let held = Arc::new(AtomicU64::new(0));
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(i64, Instant)>();
    let mut pollers = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let url = nodes[i % nodes.len()].clone();
        let token = token.clone();
        let held = held.clone();
        let seen_tx = seen_tx.clone();
        pollers.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let mut cursor = 0i64;
            loop {
                held.fetch_add(1, Ordering::Relaxed);
                let r = client
                    .get(format!(
                        "{url}/sync/v1/feed?after={cursor}&limit=1000&wait=30"
                    ))
                    .bearer_auth(&token)
                    .send()
                    .await;
                held.fetch_sub(1, Ordering::Relaxed);
                let Ok(r) = r else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                let Ok(page) = r.json::<Value>().await else {
                    continue;
                };
                let now = Instant::now();
                for e in page["events"].as_array().into_iter().flatten() {
                    let _ = seen_tx.send((e["seq"].as_i64().unwrap_or(0), now));
                }
                cursor = page["next"].as_i64().unwrap_or(cursor);
            }
        }));
    }
    drop(seen_tx);
    // (a) wait until every store holds its long-poll.
    let t0 = Instant::now();
    while (held.load(Ordering::Relaxed) as usize) < n && t0.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held_now = held.load(Ordering::Relaxed) as usize;
    let probe = reqwest::Client::new();
    let mut hz = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        probe
            .get(format!("{}/healthz", nodes[0]))
            .send()
            .await
            .unwrap();
        hz.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let healthz_ms = percentile(&mut hz, 0.5);

    // (b) ingest: `pushers` stores at a time push batches back to back for `secs`.
    let stored = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut push_tasks = Vec::new();
    for p in 0..pushers.min(n) {
        let url = nodes[p % nodes.len()].clone();
        let stored = stored.clone();
        let my: Vec<String> = tokens.iter().skip(p).step_by(pushers).cloned().collect();
        push_tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut seqs = vec![0i64; my.len()];
            let mut k = 0;
            while Instant::now() < deadline {
                let i = k % my.len();
                k += 1;
                let events: Vec<Value> =
                    (1..=batch as i64).map(|j| checkout(seqs[i] + j)).collect();
                seqs[i] += batch as i64;
                let body = gzip(&json!({"report": {"version": "bench", "cursor": null,
                    "lag_events": null, "lag_seconds": null, "outbox_business": 0,
                    "outbox_telemetry": 0, "outbox_dropped": 0}, "events": events}));
                let r = client
                    .post(format!("{url}/sync/v1/events"))
                    .bearer_auth(&my[i])
                    .header("content-encoding", "gzip")
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "push refused");
                let ack: Value = r.json().await.unwrap();
                stored.fetch_add(ack["stored"].as_u64().unwrap_or(0), Ordering::Relaxed);
            }
        }));
    }
    for t in push_tasks {
        t.await.unwrap();
    }
    let ingest_per_s = stored.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();

    // (c) authoring → applied: 10 events, one a second, each to all stores.
    while seen_rx.try_recv().is_ok() {}
    let mut authored: Vec<(i64, Instant)> = Vec::new();
    for k in 0..10 {
        let t = Instant::now();
        let r: Value = probe
            .post(format!("{}/hq/v1/events", nodes[0]))
            .bearer_auth(ADMIN)
            .json(
                &json!({"target": {"all": true}, "events": [{"type": "notice.post",
                          "payload": {"message": format!("bench notice {k}")}}]}),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        authored.push((r["last_seq"].as_i64().unwrap(), t));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut lat = Vec::new();
    let want = authored.len() * n;
    let until = Instant::now() + Duration::from_secs(30);
    while lat.len() < want && Instant::now() < until {
        if let Ok(Some((seq, at))) =
            tokio::time::timeout(Duration::from_secs(1), seen_rx.recv()).await
        {
            if let Some((_, t)) = authored.iter().find(|(s, _)| *s == seq) {
                lat.push(at.duration_since(*t).as_secs_f64() * 1000.0);
            }
        }
    }
    assert_eq!(lat.len(), want, "every store received every authored event");
    stop.notify_waiters();
    for p in pollers {
        p.abort();
    }
    Phase {
        held: held_now,
        healthz_ms,
        ingest_per_s,
        p50_ms: percentile(&mut lat, 0.5),
        p99_ms: percentile(&mut lat, 0.99),
    }
}

/// Raw PostgreSQL: the same rows into a same-shaped table, same batch size, `conns` connections.
async fn raw_pg(admin_url: &str, secs: u64, batch: usize, conns: usize) -> f64 {
    let db = pg_create(admin_url).await;
    let url = db_url(admin_url, &db);
    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.batch_execute(
        "CREATE TABLE store_events (rid BIGSERIAL PRIMARY KEY, store_id TEXT NOT NULL, seq BIGINT NOT NULL,
           id TEXT NOT NULL, type TEXT NOT NULL, class TEXT NOT NULL, payload TEXT NOT NULL, at TEXT NOT NULL,
           received_ms BIGINT NOT NULL, UNIQUE (store_id, seq));
         CREATE INDEX ON store_events (type, received_ms); CREATE INDEX ON store_events (received_ms);",
    )
    .await
    .unwrap();
    let rows = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conns {
        let url = url.clone();
        let rows = rows.clone();
        tasks.push(tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            let stmt = c
                .prepare(
                    "INSERT INTO store_events (store_id, seq, id, type, class, payload, at, received_ms)
                     SELECT $1, *, 0 FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
                     ON CONFLICT (store_id, seq) DO NOTHING",
                )
                .await
                .unwrap();
            let store = format!("raw{w}");
            let mut next = 0i64;
            while Instant::now() < deadline {
                let evs: Vec<Value> = (1..=batch as i64).map(|j| checkout(next + j)).collect();
                next += batch as i64;
                let seqs: Vec<i64> = evs.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
                let ids: Vec<String> = evs.iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
                let types = vec!["checkout.completed"; batch];
                let classes = vec!["business"; batch];
                let payloads: Vec<String> = evs.iter().map(|e| e["payload"].to_string()).collect();
                let ats = vec!["2026-11-30T10:00:00Z"; batch];
                c.execute(&stmt, &[&store, &seqs, &ids, &types, &classes, &payloads, &ats])
                    .await
                    .unwrap();
                rows.fetch_add(batch as u64, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rate = rows.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    pg_drop(admin_url, &db).await;
    rate
}

fn db_url(admin: &str, db: &str) -> String {
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
    format!("{base}/{db}")
}

async fn pg_admin(admin_url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url}: {e}; run scripts/test once (it starts PostgreSQL and creates the role)"));
    tokio::spawn(conn);
    c
}

async fn pg_create(admin_url: &str) -> String {
    let name = format!("fleet_{}", std::process::id());
    let c = pg_admin(admin_url).await;
    let _ = c
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
    c.batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    name
}

async fn pg_drop(admin_url: &str, name: &str) {
    let _ = pg_admin(admin_url)
        .await
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
}

fn report(label: &str, p: &Phase, stores: usize) {
    println!(
        "{label}: {stores} stores; long-polls held {}; /healthz p50 {:.2} ms while held; \
         ingest {:.0} store events/s; authoring -> received by every store p50 {:.0} ms, p99 {:.0} ms",
        p.held, p.healthz_ms, p.ingest_per_s, p.p50_ms, p.p99_ms
    );
}

fn main() {
    let secs = env_n("FLEET_SECS", 10) as u64;
    let batch = env_n("FLEET_BATCH", 100);
    let pushers = env_n("FLEET_PUSHERS", 64);
    let engines = std::env::var("FLEET_ENGINES").unwrap_or_else(|_| "sqlite,postgres".into());
    let admin_url = std::env::var("STOREBOX_TEST_PG").unwrap_or_else(|_| {
        "postgres://storebox_test:storebox_test@127.0.0.1:5432/storebox_test".into()
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("fleet benchmark: ingest {secs} s, {batch} events per push, {pushers} pushing stores");
    if engines.contains("sqlite") {
        let n = env_n("FLEET_STORES", 2000);
        let dir = tempfile::tempdir().unwrap();
        let tokens = register(dir.path(), None, n);
        let node = start_node(dir.path(), None);
        let p = rt.block_on(run_fleet(
            std::slice::from_ref(&node.url),
            &tokens,
            secs,
            batch,
            pushers,
        ));
        report("SQLite, 1 node", &p, n);
    }
    if engines.contains("postgres") {
        let n = env_n("FLEET_STORES", 4000);
        let db = rt.block_on(pg_create(&admin_url));
        let url = db_url(&admin_url, &db);
        let dir_a = tempfile::tempdir().unwrap();
        let dir_b = tempfile::tempdir().unwrap();
        let tokens = register(dir_a.path(), Some(&url), n);
        let a = start_node(dir_a.path(), Some(&url));
        let b = start_node(dir_b.path(), Some(&url));
        let p = rt.block_on(run_fleet(
            &[a.url.clone(), b.url.clone()],
            &tokens,
            secs,
            batch,
            pushers,
        ));
        drop((a, b));
        rt.block_on(pg_drop(&admin_url, &db));
        // HQ's pool is 16 connections per node: the reference gets as many in all.
        let raw = rt.block_on(raw_pg(&admin_url, secs, batch, 32));
        report("PostgreSQL, 2 nodes", &p, n);
        println!(
            "raw PostgreSQL insert (same rows, batches of {batch}, 32 connections): {raw:.0} rows/s; \
             HQ ingest = {:.2}x raw",
            p.ingest_per_s / raw
        );
    }
}
