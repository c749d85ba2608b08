//! HQ sync end to end: real `storebox hq` and `storebox serve` processes on loopback.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{eventually, Device, Engine, Hq, StoreBox};

fn start_store(hq: &Hq, id: &str, token: &str, extra: &[(&str, &str)]) -> StoreBox {
    let mut env = hq.store_env(id, token);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    StoreBox::start_with(&refs)
}

/// Waits until the store's cursor reaches `seq`.
async fn synced_to(sb: &StoreBox, seq: i64, secs: u64) -> Value {
    eventually(secs, &format!("store cursor reaches {seq}"), || async {
        let (_, s) = sb.get("/api/v1/sync").await;
        (s["cursor"].as_i64().unwrap_or(-1) >= seq).then_some(s)
    })
    .await
}

fn item(sku: &str, name: &str) -> Value {
    json!({"type":"catalog.upsert","payload":{"sku":sku,"name":name,"unit":"each","department":"dairy"}})
}

fn price(id: &str, sku: &str, p: i64, starts: &str) -> Value {
    json!({"type":"price.set","payload":{"id":id,"sku":sku,"price":p,"starts_at":starts,"ends_at":null}})
}

async fn price_of(sb: &StoreBox, sku: &str) -> Option<i64> {
    let (s, v) = sb.get(&format!("/api/v1/prices/{sku}")).await;
    (s == 200).then(|| v["price"].as_i64()).flatten()
}

async fn price_authored_at_hq_is_served_by_the_online_store_within_2s(engine: Engine) {
    let hq = Hq::start_on(engine, &[]);
    let token = hq.add_store("s1", "pilot");
    let sb = start_store(&hq, "s1", &token, &[]);
    let status = synced_to(&sb, 0, 20).await;
    assert_eq!(status["configured"], true);

    let seq = hq
        .author(
            json!({"all":true}),
            json!([
                item("1001", "Whole milk 1 L"),
                price("pr-1001", "1001", 129, "2020-01-01T00:00:00Z")
            ]),
        )
        .await;
    synced_to(&sb, seq, 10).await;
    assert_eq!(price_of(&sb, "1001").await, Some(129));
    // A shelf label hears of each change: it takes effect on arrival, which no scheduled
    // boundary would announce.
    let pw = sb.add_device("label-1", "label");
    let mut label = Device::connect(sb.mqtt_port, "label-1", Some(&pw))
        .await
        .unwrap();
    label.subscribe("store/prices/changed").await;

    // The measured change: one price authored at HQ, served by the store.
    for (n, p) in [(1, 135), (2, 99)] {
        let start = Instant::now();
        hq.author(
            json!({"groups":["pilot"]}),
            json!([price("pr-1001", "1001", p, "2020-01-01T00:00:00Z")]),
        )
        .await;
        eventually(5, "new price served", || async {
            (price_of(&sb, "1001").await == Some(p)).then_some(())
        })
        .await;
        let took = start.elapsed();
        println!("price change {n} served by the store after {took:?}");
        assert!(took < Duration::from_secs(2), "took {took:?}");
        let msg = label
            .next_on("store/prices/changed", 5)
            .await
            .expect("the change is announced to labels");
        assert_eq!(msg["reason"], "update", "{msg}");
        assert_eq!(msg["skus"][0]["sku"], "1001", "{msg}");
        assert_eq!(msg["skus"][0]["price"], p, "{msg}");
    }
    // An event for another group does not reach this store.
    let seq = hq
        .author(
            json!({"groups":["canary"]}),
            json!([price("pr-1001", "1001", 1, "2020-01-01T00:00:00Z")]),
        )
        .await;
    synced_to(&sb, seq, 10).await;
    assert_eq!(price_of(&sb, "1001").await, Some(99));

    let (_, s) = sb.get("/api/v1/sync").await;
    assert_eq!(s["connected"], true, "{s}");
    assert!(s["last_success"].is_string(), "{s}");
    let m = crate::support::metrics(&sb).await;
    assert!(m.contains("storebox_sync_connected 1"), "{m}");
    // HQ's fleet view shows the store with its cursor.
    let (_, stores) = hq.get("/hq/v1/stores").await;
    let st = &stores["stores"][0];
    assert_eq!(st["id"], "s1");
    assert_eq!(st["group"], "pilot");
    // The fleet page shows nothing of the fleet without the admin token.
    let anonymous = reqwest::get(format!("{}/", hq.http)).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let page = anonymous.text().await.unwrap();
    assert!(!page.contains("s1"), "{page}");
    let page = reqwest::Client::new()
        .get(format!("{}/", hq.http))
        .bearer_auth(&hq.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("/assets/app.js"), "the console shell: {page}");
    let (_, fleet) = hq.get("/hq/v1/fleet").await;
    assert_eq!(fleet["stores"][0]["id"], "s1", "{fleet}");
    assert_eq!(fleet["stores"][0]["health"], "online", "{fleet}");
}

async fn seed_catalog(hq: &Hq, sb: &StoreBox) {
    let seq = hq
        .author(
            json!({"all":true}),
            json!([
                item("1001", "Milk"),
                price("pr-1001", "1001", 129, "2020-01-01T00:00:00Z")
            ]),
        )
        .await;
    synced_to(sb, seq, 20).await;
}

async fn hq_checkouts(hq: &Hq, store: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let (s, v) = hq
            .get(&format!("/hq/v1/store-events?store={store}&type=checkout.completed&after={after}&limit=5000"))
            .await;
        assert_eq!(s, 200, "{v}");
        let page = v["events"].as_array().cloned().unwrap_or_default();
        if page.is_empty() {
            return all;
        }
        after = page.last().unwrap()["rid"].as_i64().unwrap();
        all.extend(page);
    }
}

/// HQ is down while the store records 10,000 checkouts; HQ comes back, is killed with SIGKILL in
/// the middle of the ingest and comes back again: every checkout arrives exactly once, in order.
async fn ten_thousand_checkouts_recorded_while_hq_is_down_arrive_exactly_once_in_order(
    engine: Engine,
) {
    let mut hq = Hq::start_on(engine, &[]);
    let token = hq.add_store("s1", "");
    let sb = start_store(&hq, "s1", &token, &[("STOREBOX_HQ__BATCH_SIZE", "250")]);
    seed_catalog(&hq, &sb).await;
    hq.kill9();

    const N: usize = 10_000;
    let client = reqwest::Client::new();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let client = client.clone();
        let url = format!("{}/api/v1/checkouts", sb.http);
        let token = sb.token.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..N).step_by(8) {
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"checkout_id": format!("co-{i:05}"), "lane": "lane-1",
                                  "lines": [{"sku": "1001", "quantity": 1}], "payment": {"method": "card"}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "{N} checkouts recorded with HQ down in {:?}",
        start.elapsed()
    );
    let (_, s) = sb.get("/api/v1/sync").await;
    assert_eq!(s["outbox"]["business"].as_i64(), Some(N as i64), "{s}");
    assert_eq!(s["connected"], false, "{s}");
    assert!(s["last_error"].is_string(), "{s}");

    // HQ back; kill it again once part of the backlog has arrived.
    hq.launch();
    let held = eventually(30, "HQ holds part of the backlog", || async {
        let (_, v) = hq.get("/hq/v1/stores").await;
        let held = v["stores"][0]["held"].as_i64().unwrap_or(0);
        (held > 0).then_some(held)
    })
    .await;
    hq.kill9();
    println!("HQ killed with SIGKILL after holding up to seq {held}");
    assert!(
        held < N as i64,
        "HQ had everything before the kill: not mid-ingest"
    );
    hq.launch();
    let start = Instant::now();
    eventually(60, "all checkouts at HQ", || async {
        let (_, s) = sb.get("/api/v1/sync").await;
        (s["outbox"]["business"].as_i64() == Some(0)).then_some(())
    })
    .await;
    println!("backlog drained {:?} after HQ came back", start.elapsed());
    let events = hq_checkouts(&hq, "s1").await;
    assert_eq!(events.len(), N, "exactly once");
    let mut ids: Vec<String> = events
        .iter()
        .map(|e| e["payload"]["checkout_id"].as_str().unwrap().to_string())
        .collect();
    // In order: arrival order at HQ is the store's sequence order.
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "not in store order");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), N, "duplicates at HQ");
    let store_ids: i64 = sb
        .db()
        .query_row(
            "SELECT count(*) FROM outbox WHERE type = 'checkout.completed' AND sent_ms IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(store_ids, N as i64);
}

type PriceRow = (String, String, i64, i64);

fn catalog_state(sb: &StoreBox) -> (Vec<(String, String)>, Vec<PriceRow>) {
    let c = sb.db();
    let items = c
        .prepare("SELECT sku, name FROM items ORDER BY sku")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let prices = c
        .prepare("SELECT id, sku, price, received FROM prices ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    (items, prices)
}

async fn import_csv(hq: &Hq, target: &str, csv: String) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/hq/v1/import?target={target}", hq.http))
        .bearer_auth(&hq.admin)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// A store killed with SIGKILL at random moments during a 50,000-event catch-up ends with the
/// same catalog and prices as a store that never crashed, and applied nothing twice (the
/// `received` arrival counter of every price record matches, which a repeated event would shift).
async fn store_killed_during_a_50k_event_catch_up_ends_equal_to_one_that_never_crashed(
    engine: Engine,
) {
    let hq = Hq::start_on(engine, &[]);
    let ta = hq.add_store("crashy", "");
    let tb = hq.add_store("steady", "");
    // Small pages, so that the catch-up takes many commits (and a kill lands in it) even on an
    // idle machine.
    let extra = [("STOREBOX_HQ__FEED_BATCH_SIZE", "100")];
    let mut a = start_store(&hq, "crashy", &ta, &extra);
    let b = start_store(&hq, "steady", &tb, &extra);
    synced_to(&a, 0, 20).await;
    synced_to(&b, 0, 20).await;
    a.kill9();

    // 20,000 items, 20,000 prices, then 10,000 replacements of half of those prices: 50,000 events.
    let mut items = String::from("sku,name,department,unit\n");
    let mut prices = String::from("id,sku,price,starts_at\n");
    let mut again = String::from("id,sku,price,starts_at\n");
    for i in 0..20_000 {
        items.push_str(&format!("{i},Item {i},d{},each\n", i % 7));
        prices.push_str(&format!("p{i},{i},{},2020-01-01T00:00:00Z\n", 100 + i));
        if i % 2 == 0 {
            again.push_str(&format!("p{i},{i},{},2020-01-01T00:00:00Z\n", 5 + i));
        }
    }
    let mut head = 0;
    for csv in [items, prices, again] {
        let (s, v) = import_csv(&hq, "all", csv).await;
        assert_eq!(s, 201, "{v}");
        head = v["last_seq"].as_i64().unwrap();
    }
    assert_eq!(head, 50_000);

    let seed: u64 = std::env::var("SYNC_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::random::<u32>() as u64);
    println!("SIGKILL schedule seed {seed} (rerun with SYNC_TEST_SEED={seed})");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let mut kills = Vec::new();
    for _ in 0..6 {
        a.launch();
        let wait = rand::Rng::random_range(&mut rng, 20..600u64);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let cursor: Option<String> = a
            .db()
            .query_row(
                "SELECT value FROM meta WHERE key = 'sync_cursor'",
                [],
                |r| r.get(0),
            )
            .ok();
        a.kill9();
        kills.push(cursor.unwrap_or_default());
    }
    println!("killed at cursors {kills:?}");
    a.launch();
    synced_to(&a, head, 120).await;
    synced_to(&b, head, 120).await;
    let (ia, pa) = catalog_state(&a);
    let (ib, pb) = catalog_state(&b);
    assert_eq!(ia.len(), 20_000);
    assert_eq!(pa.len(), 20_000);
    assert_eq!(ia, ib);
    assert!(
        pa == pb,
        "price records differ between the crashed and the steady store"
    );
    assert_eq!(price_of(&a, "4").await, Some(9));
    assert_eq!(price_of(&a, "5").await, Some(105));
    // Some kill must have hit the middle of the catch-up for the test to mean anything.
    assert!(
        kills
            .iter()
            .any(|c| c.parse::<i64>().is_ok_and(|c| c > 0 && c < head)),
        "no kill happened mid catch-up: {kills:?}"
    );
}

/// A new store bootstraps from the snapshot; a store whose cursor HQ no longer keeps gets 410 and
/// rebuilds from the snapshot.
async fn new_store_bootstraps_from_snapshot_and_a_stale_cursor_rebuilds_after_410(engine: Engine) {
    let hq = Hq::start_on(engine, &[("STOREBOX_HQ_SERVER__RETAIN_EVENTS", "5")]);
    let token = hq.add_store("late", "north");
    hq.author(
        json!({"all":true}),
        json!([
            item("1", "One"),
            item("2", "Two"),
            item("3", "Three"),
            price("p1", "1", 100, "2020-01-01T00:00:00Z"),
            price("p2", "2", 200, "2020-01-01T00:00:00Z"),
            price("p3", "3", 300, "2020-01-01T00:00:00Z")
        ]),
    )
    .await;
    hq.author(
        json!({"groups":["north"]}),
        json!([price("p2", "2", 222, "2020-01-01T00:00:00Z")]),
    )
    .await;
    hq.author(
        json!({"groups":["south"]}),
        json!([price("p3", "3", 333, "2020-01-01T00:00:00Z")]),
    )
    .await;
    let seq = hq
        .author(
            json!({"all":true}),
            json!([{"type":"price.cancel","payload":{"id":"p1"}}]),
        )
        .await;
    let mut sb = start_store(&hq, "late", &token, &[]);
    synced_to(&sb, seq, 20).await;
    assert_eq!(price_of(&sb, "1").await, None, "cancelled price absent");
    assert_eq!(price_of(&sb, "2").await, Some(222), "group price");
    assert_eq!(
        price_of(&sb, "3").await,
        Some(300),
        "other group's price not applied"
    );

    sb.kill9();
    // Far more events than HQ keeps.
    let mut evs = Vec::new();
    for i in 10..30 {
        evs.push(item(&i.to_string(), &format!("Item {i}")));
    }
    evs.push(json!({"type":"catalog.delete","payload":{"sku":"1"}}));
    evs.push(price("p2", "2", 250, "2020-01-01T00:00:00Z"));
    let seq = hq.author(json!({"all":true}), Value::Array(evs)).await;
    sb.launch();
    synced_to(&sb, seq, 20).await;
    let (items, _) = catalog_state(&sb);
    assert_eq!(items.len(), 22, "{items:?}");
    assert!(!items.iter().any(|(s, _)| s == "1"));
    assert_eq!(price_of(&sb, "2").await, Some(250));
    let snaps: i64 = sb
        .db()
        .query_row(
            "SELECT count(*) FROM audit WHERE action = 'sync.snapshot'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(snaps, 2, "bootstrap and rebuild after 410");
    assert!(sb.stderr().contains("410"), "the rebuild is logged");
}

/// Prices for the coming days delivered ahead, then HQ stopped: each activates at its instant.
/// (Near-future instants, seconds ahead, on the real clock: the store has no controllable clock
/// in a process test.)
async fn prices_delivered_ahead_activate_at_their_instant_with_hq_stopped(engine: Engine) {
    let mut hq = Hq::start_on(engine, &[]);
    let token = hq.add_store("s1", "");
    let sb = start_store(&hq, "s1", &token, &[]);
    synced_to(&sb, 0, 20).await;
    let pw = sb.add_device("label-1", "label");
    let now = jiff::Timestamp::now();
    let t1 = now + jiff::SignedDuration::from_secs(4);
    let t2 = now + jiff::SignedDuration::from_secs(6);
    let seq = hq
        .author(
            json!({"all":true}),
            json!([
                item("7", "Bread"),
                price("base", "7", 250, "2020-01-01T00:00:00Z"),
                price("mon", "7", 199, &t1.to_string()),
                price("tue", "7", 149, &t2.to_string())
            ]),
        )
        .await;
    synced_to(&sb, seq, 10).await;
    hq.kill9();
    let mut dev = Device::connect(sb.mqtt_port, "label-1", Some(&pw))
        .await
        .unwrap();
    dev.subscribe("store/prices/changed").await;
    assert_eq!(price_of(&sb, "7").await, Some(250));
    for (at, p) in [(t1, 199), (t2, 149)] {
        let msg = dev
            .next_on("store/prices/changed", 10)
            .await
            .expect("price change announced");
        let seen = jiff::Timestamp::now();
        assert!(seen >= at, "announced before its instant");
        assert!(
            seen.duration_since(at) < jiff::SignedDuration::from_millis(1500),
            "late: {seen} vs {at}"
        );
        assert!(msg.to_string().contains(&p.to_string()), "{msg}");
        assert_eq!(price_of(&sb, "7").await, Some(p));
    }
    let (_, s) = sb.get("/api/v1/sync").await;
    assert_eq!(s["connected"], false);
}

/// HQ data that fails validation is quarantined with its reason and reported to HQ; sync goes on.
/// HQ's own authoring refuses such events, so they are written straight into HQ's log here (as
/// another HQ implementation might send them).
async fn invalid_hq_events_are_quarantined_reported_and_sync_goes_on(engine: Engine) {
    let hq = Hq::start_on(engine, &[]);
    let token = hq.add_store("s1", "");
    let sb = start_store(&hq, "s1", &token, &[("STOREBOX_HQ__POLL_WAIT_SECS", "1")]);
    synced_to(&sb, 0, 20).await;

    // Authoring validates with the store's rules: nothing is accepted.
    let (s, v) = hq
        .post("/hq/v1/events", json!({"target":{"all":true},"events":[item("1","A"), price("p","1",-5,"2020-01-01T00:00:00Z")]}))
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("events[1]"),
        "{v}"
    );
    let (s, v) = import_csv(
        &hq,
        "all",
        "sku,name,unit\nA1,Apple,each\nA2,,each\n".into(),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("line 3"),
        "{v}"
    );
    let (_, stores) = hq.get("/hq/v1/stores").await;
    assert_eq!(stores["head"], 0, "nothing applied");

    // Events HQ's validation would refuse, written straight into its storage (as a faulty or
    // foreign HQ might send them).
    hq.inject_raw_events(&[
        (
            "bad-1",
            "price.set",
            r#"{"id":"p1","sku":"1","price":-5,"starts_at":"2020-01-01T00:00:00Z"}"#,
        ),
        ("bad-2", "price.teleport", r#"{}"#),
        ("bad-3", "catalog.upsert", r#"{"sku":"1"}"#),
        (
            "ok-4",
            "catalog.upsert",
            r#"{"sku":"9","name":"Nine","unit":"each"}"#,
        ),
    ]);
    synced_to(&sb, 4, 20).await;
    let (s, item9) = sb.get("/api/v1/catalog/9").await;
    assert_eq!(s, 200, "valid event after bad ones applied: {item9}");
    let (_, st) = sb.get("/api/v1/sync").await;
    assert_eq!(st["quarantined"], 3, "{st}");
    let reported = eventually(20, "quarantine reported to HQ", || async {
        let (_, v) = hq
            .get("/hq/v1/store-events?store=s1&type=sync.quarantined")
            .await;
        let e = v["events"].as_array().cloned().unwrap_or_default();
        (e.len() == 3).then_some(e)
    })
    .await;
    let reasons: Vec<String> = reported
        .iter()
        .map(|e| e["payload"]["reason"].to_string())
        .collect();
    assert!(reasons[1].contains("price.teleport"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("name")), "{reasons:?}");
}

/// A wrong token is refused by HQ and shown in the store's sync status; a redirect to a host off
/// the allow-list is refused and never contacted.
async fn wrong_token_and_redirect_off_the_allow_list_are_refused(engine: Engine) {
    let hq = Hq::start_on(engine, &[]);
    hq.add_store("s1", "");
    let sb = start_store(&hq, "s1", "not-the-token", &[]);
    let s = eventually(20, "token refusal shown", || async {
        let (_, s) = sb.get("/api/v1/sync").await;
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("401"))
            .then_some(s)
    })
    .await;
    assert_eq!(s["connected"], false, "{s}");
    let r = reqwest::Client::new()
        .get(format!("{}/sync/v1/feed?after=0", hq.http))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    drop(sb);

    // A "HQ" that redirects everything to another host (localhost is not 127.0.0.1).
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_port = elsewhere.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((_s, _)) = elsewhere.accept().await {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let redirector = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", redirector.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = redirector.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp = format!("HTTP/1.1 302 Found\r\nLocation: http://localhost:{other_port}/sync/v1/snapshot\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    let sb = StoreBox::start_with(&[
        ("STOREBOX_STORE__ID", "s1"),
        ("STOREBOX_HQ__URL", &url),
        ("STOREBOX_HQ__TOKEN", "t"),
        ("STOREBOX_HQ__RETRY_MAX_SECS", "1"),
    ]);
    let s = eventually(20, "redirect refusal shown", || async {
        let (_, s) = sb.get("/api/v1/sync").await;
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("refused"))
            .then_some(s)
    })
    .await;
    println!("{}", s["last_error"]);
    assert!(
        s["last_error"].as_str().unwrap().contains("allow-list"),
        "{s}"
    );
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the other host was contacted"
    );
}

/// A ticket opened at the store reaches HQ with its diagnostics; HQ's reply comes back. The box's
/// telemetry rollup reaches HQ's fleet view.
async fn ticket_round_trip_and_rollup_reach_hq(engine: Engine) {
    let hq = Hq::start_on(engine, &[]);
    let token = hq.add_store("s1", "");
    let sb = start_store(
        &hq,
        "s1",
        &token,
        &[("STOREBOX_HQ__ROLLUP_INTERVAL_SECS", "1")],
    );
    synced_to(&sb, 0, 20).await;
    let (s, t) = sb
        .post(
            "/api/v1/tickets",
            json!({"subject":"Scale 2 drifts","description":"reads 20 g heavy","category":"scale"}),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    let id = t["id"].as_str().unwrap().to_string();
    let ticket = eventually(20, "ticket at HQ", || async {
        let (_, v) = hq.get("/hq/v1/tickets").await;
        v["tickets"]
            .as_array()
            .and_then(|a| a.iter().find(|t| t["id"] == id.as_str()).cloned())
    })
    .await;
    assert_eq!(ticket["store"], "s1");
    assert_eq!(ticket["opened"]["category"], "scale", "{ticket}");
    let diag = ticket["opened"]["diagnostics"].to_string();
    assert!(
        diag.contains("\"version\"") && !diag.contains(&token),
        "{diag}"
    );
    let (s, v) = hq
        .post(
            &format!("/hq/v1/tickets/{id}/replies"),
            json!({"message":"Recalibrate, then reboot","status":"answered"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    eventually(10, "reply stored at the store", || async {
        let (_, t) = sb.get(&format!("/api/v1/tickets/{id}")).await;
        (t["replies"][0]["message"] == "Recalibrate, then reboot").then_some(())
    })
    .await;
    let rollup = eventually(20, "rollup at HQ", || async {
        let (_, v) = hq.get("/hq/v1/stores").await;
        let r = v["stores"][0]["rollup"].clone();
        (!r.is_null()).then_some(r)
    })
    .await;
    assert!(rollup["box"]["checkouts_per_minute"].is_i64(), "{rollup}");
    assert!(rollup["box"]["devices_offline"].is_i64(), "{rollup}");
}

/// A support guide HQ writes reaches an online store through the feed (rendered, raw HTML
/// escaped), a new store through the snapshot, and a deleted one disappears from both.
async fn support_guides_reach_stores_by_feed_and_snapshot(engine: Engine) {
    let hq = Hq::start_on(engine, &[]);
    let t1 = hq.add_store("s1", "");
    let sb = start_store(&hq, "s1", &t1, &[]);
    synced_to(&sb, 0, 20).await;
    let guide = json!({"id":"g-fridge","title":"Fridge too warm","body":"1. Close the door\n2. Call **facilities**\n<script>x()</script>","alert_codes":["temp_high"],"ticket_categories":["fridge"]});
    let seq = hq
        .author(
            json!({"all": true}),
            json!([{"type":"guide.upsert","payload":guide},
                   {"type":"guide.upsert","payload":{"id":"g-old","title":"Old","body":"x","alert_codes":["a"]}},
                   {"type":"guide.delete","payload":{"id":"g-old"}}]),
        )
        .await;
    synced_to(&sb, seq, 20).await;
    let check = |v: Value| {
        let g = v["guides"].as_array().cloned().unwrap_or_default();
        assert_eq!(g.len(), 1, "one guide, the deleted one gone: {v}");
        assert_eq!(g[0]["id"], "g-fridge");
        assert_eq!(g[0]["alert_codes"], json!(["temp_high"]));
        let html = g[0]["body_html"].as_str().unwrap();
        assert!(html.contains("<strong>facilities</strong>"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
    };
    let (s, v) = sb.get("/api/v1/guides").await;
    assert_eq!(s, 200);
    check(v);
    // HQ lists what is live: the fridge guide for all stores, not the withdrawn one.
    let (s, v) = hq.get("/hq/v1/guides").await;
    assert_eq!(s, 200, "{v}");
    let listed = v["guides"].as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), 1, "{v}");
    assert_eq!(listed[0]["id"], "g-fridge");
    assert_eq!(listed[0]["targets"], json!([{"all": true}]));
    // A store that starts later builds its state from the snapshot.
    let t2 = hq.add_store("s2", "");
    let sb2 = start_store(&hq, "s2", &t2, &[]);
    synced_to(&sb2, seq, 20).await;
    check(sb2.get("/api/v1/guides").await.1);
    let (_, q) = sb.get("/api/v1/sync").await;
    assert_eq!(q["quarantined"].as_i64().unwrap_or(0), 0, "{q}");
}

/// Every test above runs against HQ on each storage engine.
macro_rules! on_each_engine {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::Engine::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::Engine::Postgres).await
                }
            )*
        }
    };
}

on_each_engine!(
    price_authored_at_hq_is_served_by_the_online_store_within_2s,
    ten_thousand_checkouts_recorded_while_hq_is_down_arrive_exactly_once_in_order,
    store_killed_during_a_50k_event_catch_up_ends_equal_to_one_that_never_crashed,
    new_store_bootstraps_from_snapshot_and_a_stale_cursor_rebuilds_after_410,
    prices_delivered_ahead_activate_at_their_instant_with_hq_stopped,
    invalid_hq_events_are_quarantined_reported_and_sync_goes_on,
    wrong_token_and_redirect_off_the_allow_list_are_refused,
    ticket_round_trip_and_rollup_reach_hq,
    support_guides_reach_stores_by_feed_and_snapshot,
);
