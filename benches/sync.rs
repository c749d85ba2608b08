//! Sync benchmark (not a test): `cargo bench --bench sync` (release build).
//!
//! 1. Catch-up: N HQ events (half `catalog.upsert`, half `price.set`) applied through the store's
//!    feed apply (`sync::apply::apply_batch`, pages of `[hq] feed_batch_size` events with the cursor,
//!    as the client does),
//!    against a raw SQLite batched insert of the same rows into the same tables, in the same run
//!    (batch by batch in turn with the apply, each side timed on its own, the order within each
//!    pair alternating).
//! 2. Outbox drain: M business events queued at a store, then the real store (`app::serve`) pushes
//!    them to a real reference HQ (`hq::serve`) over loopback HTTP; events/s until HQ holds all.
//!
//! `SYNC_BENCH_EVENTS` (default 1000000) and `SYNC_BENCH_DRAIN` (default 200000) set N and M;
//! `SYNC_BENCH_BATCH` (default: the default `[hq] feed_batch_size`, 5000) the events per feed
//! batch (and per raw transaction).

use std::time::{Duration, Instant};

use serde_json::json;
use storebox::db::Db;
use storebox::proto::FeedEvent;

fn env_n(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn events(n: usize) -> Vec<FeedEvent> {
    let half = n / 2;
    let mut v = Vec::with_capacity(n);
    for i in 0..half {
        v.push(FeedEvent {
            seq: (i + 1) as i64,
            id: format!("e{i}"),
            event_type: "catalog.upsert".into(),
            payload: json!({"sku": format!("{i}"), "name": format!("Item {i}"), "department": format!("d{}", i % 20), "unit": "each", "barcodes": [format!("80{i:011}")]}),
            at: None,
        });
    }
    for i in 0..(n - half) {
        v.push(FeedEvent {
            seq: (half + i + 1) as i64,
            id: format!("p{i}"),
            event_type: "price.set".into(),
            payload: json!({"id": format!("pr-{i}"), "sku": format!("{i}"), "price": 100 + (i % 900) as i64, "starts_at": "2026-01-01T00:00:00Z", "ends_at": null}),
            at: None,
        });
    }
    v
}

fn catch_up(n: usize, batch: usize) -> (f64, f64) {
    let evs = events(n);
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("store.db")).unwrap();
    // Raw baseline: the same rows, prepared INSERTs, as many per transaction, same pragmas. Each
    // feed batch and the raw transaction of the same rows run as a pair, and each side's time is
    // summed, so that both see the same moments of a shared, noisy machine. The order within the
    // pair alternates: whichever side runs first in a pair was measured up to a fifth slower (it
    // re-reads more pages), so a fixed order would bias the ratio.
    let db2 = Db::open(&dir.path().join("raw.db")).unwrap();
    let apply = |chunk: &[FeedEvent]| {
        let next = chunk.last().unwrap().seq;
        let start = Instant::now();
        db.write_blocking(|c| {
            storebox::sync::apply::apply_batch(c, chunk, next, jiff::tz::TimeZone::UTC, 0)
        })
        .unwrap();
        start.elapsed()
    };
    let raw = |chunk: &[FeedEvent]| {
        let start = Instant::now();
        db2.write_blocking(|c| {
            let tx = storebox::db::immediate(c)?;
            {
                let mut item = tx.prepare_cached(
                    "INSERT OR REPLACE INTO items (sku, name, department, unit, attributes, updated_ms) VALUES (?1, ?2, ?3, 'each', '{}', 0)",
                )?;
                let mut bc =
                    tx.prepare_cached("INSERT OR REPLACE INTO barcodes (barcode, sku) VALUES (?1, ?2)")?;
                let mut price = tx.prepare_cached(
                    "INSERT OR REPLACE INTO prices (id, sku, price, starts_ms, ends_ms, received) VALUES (?1, ?2, ?3, ?4, NULL, ?5)",
                )?;
                for e in chunk {
                    let p = &e.payload;
                    if e.event_type == "catalog.upsert" {
                        let sku = p["sku"].as_str().unwrap();
                        item.execute(rusqlite::params![sku, p["name"].as_str(), p["department"].as_str()])?;
                        bc.execute(rusqlite::params![p["barcodes"][0].as_str(), sku])?;
                    } else {
                        price.execute(rusqlite::params![
                            p["id"].as_str(),
                            p["sku"].as_str(),
                            p["price"].as_i64(),
                            1_767_225_600_000i64,
                            e.seq
                        ])?;
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })
        .unwrap();
        start.elapsed()
    };
    let (mut t_apply, mut t_raw) = (Duration::ZERO, Duration::ZERO);
    for (i, chunk) in evs.chunks(batch).enumerate() {
        if i % 2 == 0 {
            t_apply += apply(chunk);
            t_raw += raw(chunk);
        } else {
            t_raw += raw(chunk);
            t_apply += apply(chunk);
        }
    }
    let applied = n as f64 / t_apply.as_secs_f64();
    let raw = n as f64 / t_raw.as_secs_f64();
    (applied, raw)
}

async fn drain(m: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let hq_dir = dir.path().join("hq");
    let store_dir = dir.path().join("store");
    let env = |extra: Vec<(&str, String)>| {
        let mut v: Vec<(String, String)> = vec![
            (
                "STOREBOX_HQ_SERVER__DATA_DIR".into(),
                hq_dir.display().to_string(),
            ),
            ("STOREBOX_HQ_SERVER__LISTEN".into(), "127.0.0.1:0".into()),
            (
                "STOREBOX_HQ_SERVER__ADMIN_TOKEN".into(),
                "bench-admin".into(),
            ),
            (
                "STOREBOX_STORAGE__DATA_DIR".into(),
                store_dir.display().to_string(),
            ),
            ("STOREBOX_HTTP__LISTEN".into(), "127.0.0.1:0".into()),
            ("STOREBOX_MQTT__LISTEN".into(), "127.0.0.1:0".into()),
            ("STOREBOX_STORE__ID".into(), "bench".into()),
        ];
        v.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
        storebox::config::Config::load_with_env(None, v).unwrap()
    };
    let hq_config = env(vec![]);
    let hq_storage = storebox::hq::open_storage(&hq_config.hq_server)
        .await
        .unwrap();
    let token = hq_storage.add_store("bench", "", 0).await.unwrap();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let (stop_hq, hq_stopped) = tokio::sync::oneshot::channel::<()>();
    let hq_task = tokio::spawn(storebox::hq::serve(
        hq_config.hq_server,
        hq_storage.clone(),
        storebox::clock::system(),
        async {
            let _ = hq_stopped.await;
        },
        move |a| {
            let _ = addr_tx.send(a);
        },
    ));
    let hq_addr = addr_rx.await.unwrap();

    // The backlog: M checkouts queued while HQ was unreachable.
    let store_config = env(vec![
        ("STOREBOX_HQ__URL", format!("http://{hq_addr}")),
        ("STOREBOX_HQ__TOKEN", token),
    ]);
    let store_db = Db::open(&store_config.db_path()).unwrap();
    store_db
        .write_blocking(|c| {
            let tx = storebox::db::immediate(c)?;
            for i in 0..m {
                let payload =
                    json!({"checkout_id": format!("co-{i}"), "lane": "lane-1", "total": 129,
                    "lines": [{"sku": "1001", "quantity": 1, "unit_price": 129, "total": 129}]})
                    .to_string();
                storebox::outbox::enqueue(
                    &tx,
                    &format!("checkout:co-{i}"),
                    storebox::proto::StoreEventType::CheckoutCompleted,
                    storebox::outbox::Class::Business,
                    &payload,
                    0,
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .unwrap();
    drop(store_db);

    let (stop_store, store_stopped) = tokio::sync::oneshot::channel::<()>();
    let start = Instant::now();
    let store_task = tokio::spawn(storebox::app::serve(
        store_config,
        storebox::clock::system(),
        async {
            let _ = store_stopped.await;
        },
        |_| {},
    ));
    loop {
        let held: i64 = hq_storage
            .list_stores()
            .await
            .unwrap()
            .iter()
            .find(|s| s.id == "bench")
            .map_or(0, |s| s.held);
        if held >= m as i64 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "drain did not finish"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rate = m as f64 / start.elapsed().as_secs_f64();
    let _ = stop_store.send(());
    let _ = stop_hq.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), store_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), hq_task).await;
    rate
}

fn main() {
    let n = env_n("SYNC_BENCH_EVENTS", 1_000_000);
    let m = env_n("SYNC_BENCH_DRAIN", 200_000);
    println!("sync benchmark: {n} HQ events applied, {m} store events drained");
    let batch = env_n(
        "SYNC_BENCH_BATCH",
        storebox::config::HqConfig::default().feed_batch_size as usize,
    );
    let (applied, raw) = catch_up(n, batch);
    println!(
        "catch-up apply (feed batches of {batch} + cursor): {applied:>10.0} events/s\n\
         raw SQLite batched insert of the same rows:     {raw:>10.0} rows/s  (apply = {:.0}% of raw)",
        applied / raw * 100.0
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let rate = rt.block_on(drain(m));
    println!("outbox drain store -> HQ over loopback HTTP:    {rate:>10.0} events/s");
    rt.shutdown_timeout(Duration::from_millis(200));
}
