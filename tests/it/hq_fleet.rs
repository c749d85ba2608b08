//! HQ console's fleet view and store story end to end: a real `storebox hq` (SQLite, and two nodes
//! on PostgreSQL), a real `storebox serve` store syncing with it, a real MQTT device raising an
//! alert, a support user signed in with a cookie as a browser would be, and the live fleet stream
//! read as Server-Sent Events.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::hq_console::{add_user, browser, sign_in};
use crate::support::{eventually, Device, Engine, Hq, StoreBox};

/// Reads a Server-Sent Events stream into (event, data) pairs.
fn sse(resp: reqwest::Response) -> tokio::sync::mpsc::UnboundedReceiver<(String, String)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut body = resp.bytes_stream();
        let mut buf = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let mut event = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(e) = line.strip_prefix("event:") {
                        event = e.trim().to_string();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if !data.is_empty() && tx.send((event, data)).is_err() {
                    return;
                }
            }
        }
        let _ = tx.send(("closed".into(), String::new()));
    });
    rx
}

/// Waits (bounded) for a `fleet` event whose store `id` has `health`.
async fn stream_shows(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
    id: &str,
    health: &str,
    secs: u64,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let got = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no fleet event with {id} {health} within {secs} s"))
            .expect("stream task ended");
        assert_ne!(got.0, "closed", "the stream closed early");
        if got.0 != "fleet" {
            continue;
        }
        let v: Value = serde_json::from_str(&got.1).unwrap();
        let row = v["stores"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .cloned();
        if row.as_ref().is_some_and(|r| r["health"] == health) {
            return row.unwrap();
        }
    }
}

async fn get_json(c: &reqwest::Client, url: String) -> (u16, Value) {
    let r = c.get(url).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn fleet_story_and_live_offline(engine: Engine) {
    let hq = Hq::start_on(
        engine,
        &[("STOREBOX_HQ_SERVER__OFFLINE_AFTER_SECONDS", "4")],
    );
    // On PostgreSQL the console talks to another node than the store: nothing node-local.
    let console_node = (engine == Engine::Postgres).then(|| hq.another_node());
    let console = console_node.as_ref().unwrap_or(&hq);
    let token = hq.add_store("s1", "pilot");
    add_user(&hq, "sam", "support", "support-password-1");

    let sam = browser();
    let (s, me) = sign_in(console, &sam, "sam", "support-password-1").await;
    assert_eq!(s, 201, "{me}");
    let csrf = me["csrf"].as_str().unwrap().to_string();

    // Never connected yet: offline, and said why.
    let (s, fleet) = get_json(&sam, format!("{}/hq/v1/fleet", console.http)).await;
    assert_eq!(s, 200, "{fleet}");
    assert_eq!(fleet["stores"][0]["health"], "offline", "{fleet}");
    assert_eq!(
        fleet["stores"][0]["reasons"][0], "never connected",
        "{fleet}"
    );
    let (_, some) = get_json(
        &sam,
        format!(
            "{}/hq/v1/fleet?group=pilot&health=offline&q=S1",
            console.http
        ),
    )
    .await;
    assert_eq!(some["stores"].as_array().unwrap().len(), 1, "{some}");
    let (_, none) = get_json(&sam, format!("{}/hq/v1/fleet?health=online", console.http)).await;
    assert_eq!(none["stores"], json!([]), "{none}");
    let (s, bad) = get_json(&sam, format!("{}/hq/v1/fleet?health=sleepy", console.http)).await;
    assert_eq!(
        (s, bad["error"]["code"].as_str()),
        (400, Some("bad_health")),
        "{bad}"
    );
    let (s, bad) = get_json(&sam, format!("{}/hq/v1/fleet?colour=red", console.http)).await;
    assert_eq!(
        (s, bad["error"]["code"].as_str()),
        (400, Some("bad_query")),
        "{bad}"
    );

    let stream = sam
        .get(format!("{}/hq/v1/fleet/stream", console.http))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(stream.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut events = sse(stream);
    stream_shows(&mut events, "s1", "offline", 10).await;

    let mut env = hq.store_env("s1", &token);
    env.push(("STOREBOX_HQ__POLL_WAIT_SECS".into(), "1".into()));
    env.push(("STOREBOX_STORE__TIMEZONE".into(), "Europe/Berlin".into()));
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut sb = StoreBox::start_with(&refs);

    // The store connects: the stream says online without a reload.
    let row = stream_shows(&mut events, "s1", "online", 30).await;
    assert_eq!(row["group"], "pilot", "{row}");

    // A device raises an alert at the store; then HQ authors a price for the store's group.
    let pw = sb.add_device("printer-1", "printer");
    let dev = Device::connect(sb.mqtt_port, "printer-1", Some(&pw))
        .await
        .unwrap();
    dev.publish("devices/printer-1/status", r#"{"online":true}"#)
        .await;
    dev.publish(
        "devices/printer-1/alerts",
        r#"{"code":"PAPER_OUT","severity":"warning","message":"Paper roll empty"}"#,
    )
    .await;
    let row = stream_shows(&mut events, "s1", "degraded", 30).await;
    assert_eq!(row["open_alerts"], 1, "{row}");
    assert_eq!(row["open_alerts_warning"], 1, "{row}");
    assert_eq!(row["devices_total"], 1, "{row}");
    assert_eq!(row["timezone"], "Europe/Berlin", "{row}");
    assert_eq!(row["reasons"], json!(["1 open alert"]), "{row}");
    hq.author(
        json!({"groups": ["pilot"]}),
        json!([
            {"type":"catalog.upsert","payload":{"sku":"1001","name":"Milk","unit":"each","department":"dairy"}},
            {"type":"price.set","payload":{"id":"pr-1001","sku":"1001","price":99,"starts_at":"2020-01-01T00:00:00Z","ends_at":null}}
        ]),
    )
    .await;

    // An event HQ's validation would refuse, written straight into its storage (as a faulty HQ
    // might send it): the store quarantines it and says so; the fleet and the story show it.
    hq.inject_raw_events(&[("bad-1", "price.teleport", r#"{}"#)]);
    let row = stream_shows(&mut events, "s1", "degraded", 30).await;
    let row = if row["quarantined_recent"] == 1 {
        row
    } else {
        let f = eventually(20, "quarantine in the fleet", || async {
            let (_, f) = get_json(&sam, format!("{}/hq/v1/fleet", console.http)).await;
            (f["stores"][0]["quarantined_recent"] == 1).then_some(f)
        })
        .await;
        f["stores"][0].clone()
    };
    assert_eq!(
        row["reasons"],
        json!(["1 open alert", "1 event quarantined (refused HQ data)"]),
        "{row}"
    );
    let (_, q) = get_json(
        &sam,
        format!("{}/hq/v1/stores/s1/story?kinds=quarantine", console.http),
    )
    .await;
    let title = q["items"][0]["title"].as_str().unwrap_or_default();
    assert!(
        title.starts_with("HQ event bad-1 (price.teleport) refused by the store and quarantined"),
        "{q}"
    );

    // The story: the alert, then the price, in that order; the store's zone is known.
    let url = format!(
        "{}/hq/v1/stores/s1/story?kinds=alert,authored,sync",
        console.http
    );
    let story = eventually(20, "alert and price in the story", || async {
        let (s, v) = get_json(&sam, url.clone()).await;
        assert_eq!(s, 200, "{v}");
        let kinds: Vec<&str> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["kind"].as_str())
            .collect();
        (kinds.contains(&"alert") && kinds.contains(&"authored")).then(|| v.clone())
    })
    .await;
    assert_eq!(story["timezone"], "Europe/Berlin", "{story}");
    let titles: Vec<&str> = story["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["title"].as_str().unwrap())
        .collect();
    let alert = titles
        .iter()
        .position(|t| t.starts_with("Alert PAPER_OUT raised on printer-1 (warning)"))
        .unwrap_or_else(|| panic!("{titles:?}"));
    let price = titles
        .iter()
        .position(|t| t.starts_with("Price for 1001 set to 99") && t.ends_with("for group pilot"))
        .unwrap_or_else(|| panic!("{titles:?}"));
    assert!(alert < price, "the alert came first: {titles:?}");
    assert_eq!(titles[0], "Store registered at HQ", "{titles:?}");
    // Filtering by kind leaves the others out; bad input is named.
    let (_, only) = get_json(
        &sam,
        format!("{}/hq/v1/stores/s1/story?kinds=alert", console.http),
    )
    .await;
    assert!(
        only["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["kind"] == "alert"),
        "{only}"
    );
    let (s, bad) = get_json(
        &sam,
        format!("{}/hq/v1/stores/s1/story?kinds=alert,gossip", console.http),
    )
    .await;
    assert_eq!(
        (s, bad["error"]["code"].as_str()),
        (400, Some("bad_kind")),
        "{bad}"
    );
    let (s, bad) = get_json(
        &sam,
        format!(
            "{}/hq/v1/stores/s1/story?from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z",
            console.http
        ),
    )
    .await;
    assert_eq!(
        (s, bad["error"]["code"].as_str()),
        (400, Some("bad_range")),
        "{bad}"
    );
    let (s, bad) = get_json(
        &sam,
        format!("{}/hq/v1/stores/s1/story?limit=lots", console.http),
    )
    .await;
    assert_eq!(
        (s, bad["error"]["code"].as_str()),
        (400, Some("bad_query")),
        "{bad}"
    );
    assert!(
        bad["error"]["message"].as_str().unwrap().contains("limit"),
        "names the parameter: {bad}"
    );
    let (s, bad) = get_json(
        &sam,
        format!("{}/hq/v1/stores/s1/story?limit=501", console.http),
    )
    .await;
    assert_eq!(
        (s, bad["error"]["code"].as_str()),
        (400, Some("bad_limit")),
        "{bad}"
    );
    let (s, _) = get_json(&sam, format!("{}/hq/v1/stores/nope/story", console.http)).await;
    assert_eq!(s, 404);

    // Support reads the fleet but may not author.
    let r = sam
        .post(format!("{}/hq/v1/events", console.http))
        .header("x-csrf-token", &csrf)
        .json(&json!({"target": {"all": true}, "events": [{"type": "notice.post", "payload": {"message": "hi"}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "support may not author");

    // The store stops: offline once the threshold passes, and the stream says so.
    drop(dev);
    sb.terminate();
    let stopped = std::time::Instant::now();
    let row = stream_shows(&mut events, "s1", "offline", 30).await;
    println!(
        "store stopped: offline on the live stream after {:?} (offline_after_seconds = 4)",
        stopped.elapsed()
    );
    assert!(
        row["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("not seen for"),
        "{row}"
    );
    let (_, fleet) = get_json(&sam, format!("{}/hq/v1/fleet", console.http)).await;
    assert_eq!(fleet["stores"][0]["health"], "offline", "{fleet}");
    assert_eq!(fleet["summary"]["offline"], 1, "{fleet}");

    // Signing out ends the stream.
    let r = sam
        .delete(format!("{}/hq/v1/session", console.http))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (ev, _) = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the stream ends after sign-out")
            .unwrap();
        if ev == "ended" {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_fleet_goes_offline_live_and_story_orders_alert_before_price() {
    fleet_story_and_live_offline(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_nodes_fleet_goes_offline_live_and_story_orders_alert_before_price() {
    fleet_story_and_live_offline(Engine::Postgres).await;
}

/// Live streams are bounded per user (and per node), and need a session or the admin token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_streams_are_bounded_per_user_and_need_sign_in() {
    let hq = Hq::start_with(&[("STOREBOX_HQ_SERVER__FLEET_STREAMS_PER_USER", "2")]);
    add_user(&hq, "sam", "support", "support-password-1");
    let anon = reqwest::Client::new();
    let r = anon
        .get(format!("{}/hq/v1/fleet/stream", hq.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let sam = browser();
    sign_in(&hq, &sam, "sam", "support-password-1").await;
    let url = format!("{}/hq/v1/fleet/stream", hq.http);
    let a = sam.get(&url).send().await.unwrap();
    let b = sam.get(&url).send().await.unwrap();
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let c = sam.get(&url).send().await.unwrap();
    assert_eq!(c.status(), 429);
    let msg: Value = c.json().await.unwrap();
    assert!(
        msg["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit 2"),
        "{msg}"
    );
    // A closed stream gives its slot back.
    drop(a);
    eventually(30, "slot given back", || async {
        let r = sam.get(&url).send().await.unwrap();
        (r.status() == 200).then_some(())
    })
    .await;
    drop(b);
}

/// Several streams share one reader per node, and an HQ that is asked to stop ends its live
/// streams at once instead of waiting for them (a browser tab would hold a graceful stop for the
/// stream's whole lifetime).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_streams_share_a_reader_and_end_when_hq_stops() {
    let mut hq = Hq::start();
    hq.add_store("s1", "");
    add_user(&hq, "sam", "support", "support-password-1");
    let sam = browser();
    sign_in(&hq, &sam, "sam", "support-password-1").await;
    let url = format!("{}/hq/v1/fleet/stream", hq.http);
    let mut streams = Vec::new();
    for _ in 0..3 {
        let r = sam.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        streams.push(sse(r));
    }
    // Each one gets the fleet, including one that joins after the reader has published it.
    for rx in &mut streams {
        stream_shows(rx, "s1", "offline", 10).await;
    }
    let (status, took) = hq.terminate(10);
    assert!(status.success(), "{status:?}");
    println!("HQ with 3 live fleet streams stopped in {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "stop waited for the streams: {took:?}"
    );
    for rx in &mut streams {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (ev, _) = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .expect("the stream closes when HQ stops")
                .unwrap();
            if ev == "closed" {
                break;
            }
        }
    }
}

/// An alert raised while HQ is down reaches HQ later; the story places it when it happened at the
/// store and says when it arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_sent_late_takes_its_place_in_the_story_when_it_happened() {
    let mut hq = Hq::start();
    let token = hq.add_store("s1", "");
    let mut env = hq.store_env("s1", &token);
    env.push(("STOREBOX_HQ__POLL_WAIT_SECS".into(), "1".into()));
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let sb = StoreBox::start_with(&refs);
    eventually(30, "the store connects", || async {
        let (_, f) = hq.get("/hq/v1/fleet").await;
        (f["stores"][0]["health"] == "online").then_some(())
    })
    .await;

    hq.kill9();
    let pw = sb.add_device("printer-1", "printer");
    let dev = Device::connect(sb.mqtt_port, "printer-1", Some(&pw))
        .await
        .unwrap();
    let raised = jiff::Timestamp::now();
    dev.publish(
        "devices/printer-1/alerts",
        r#"{"code":"PAPER_OUT","severity":"warning","message":"Paper roll empty"}"#,
    )
    .await;
    eventually(10, "the alert waits in the store's outbox", || async {
        let n: i64 = sb
            .db()
            .query_row(
                "SELECT count(*) FROM outbox WHERE type = 'device.alert'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        (n == 1).then_some(())
    })
    .await;
    // HQ stays down a while (the point of the test), then comes back on the same address.
    tokio::time::sleep(Duration::from_secs(3)).await;
    hq.launch();

    let item = eventually(30, "the alert in the story", || async {
        let (_, v) = hq.get("/hq/v1/stores/s1/story?kinds=alert").await;
        v["items"].as_array().and_then(|a| a.first().cloned())
    })
    .await;
    let at: jiff::Timestamp = item["at"].as_str().unwrap().parse().unwrap();
    let received: jiff::Timestamp = item["received_at"].as_str().unwrap().parse().unwrap();
    let skew = (at.as_millisecond() - raised.as_millisecond()).abs();
    assert!(
        skew < 2000,
        "placed when raised ({raised}), not {at}: {item}"
    );
    assert!(
        received.as_millisecond() - at.as_millisecond() >= 3000,
        "it reached HQ after HQ came back: {item}"
    );
}

/// The console's files: `/` is the sign-in page or the shell (never cached for the wrong caller),
/// scripts and the vendored chart library come from HQ with a CSP, pages are not served as assets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shell_and_assets() {
    let hq = Hq::start();
    add_user(&hq, "sam", "support", "support-password-1");
    let anon = reqwest::Client::new();
    let r = anon.get(format!("{}/", hq.http)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let h = r.headers().clone();
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .starts_with("default-src 'self'"));
    assert!(h["vary"].to_str().unwrap().contains("Cookie"));
    let body = r.text().await.unwrap();
    assert!(body.contains("/assets/signin.js") && !body.contains("/assets/app.js"));
    let sam = browser();
    sign_in(&hq, &sam, "sam", "support-password-1").await;
    let shell = sam.get(format!("{}/", hq.http)).send().await.unwrap();
    assert_eq!(shell.status(), 200);
    assert!(shell.text().await.unwrap().contains("/assets/app.js"));
    for (path, status, kind) in [
        ("/assets/app.js", 200, "text/javascript"),
        ("/assets/pages/fleet.js", 200, "text/javascript"),
        ("/assets/style.css", 200, "text/css"),
        ("/assets/base.css", 200, "text/css"),
        (
            "/assets/vendor/uPlot-1.6.32.iife.min.js",
            200,
            "text/javascript",
        ),
        ("/assets/index.html", 404, ""),
        ("/assets/../Cargo.toml", 404, ""),
        ("/assets/nope.js", 404, ""),
    ] {
        let r = anon.get(format!("{}{path}", hq.http)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        if status == 200 {
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            assert!(ct.starts_with(kind), "{path}: {ct}");
            let cache = r.headers()["cache-control"].to_str().unwrap().to_string();
            assert_eq!(
                cache.contains("immutable"),
                path.contains("/vendor/"),
                "{path}: {cache}"
            );
        }
    }
}

/// HQ's background tasks are watched: when the rollout engine, the desk notifier or the fleet
/// reader dies (the debug-build test hook panics it), the node stops within seconds, exits
/// non-zero so that systemd starts it again, and the log names the task once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_background_task_stops_hq_non_zero_naming_it() {
    for task in ["rollout-engine", "desk-notifier", "fleet-reader"] {
        let mut hq = Hq::start_with(&[("STOREBOX_TEST_KILL_TASK", task)]);
        // The fleet reader runs only while a live stream listens.
        let _stream = if task == "fleet-reader" {
            add_user(&hq, "sam", "support", "support-password-1");
            let sam = browser();
            sign_in(&hq, &sam, "sam", "support-password-1").await;
            let r = sam
                .get(format!("{}/hq/v1/fleet/stream", hq.http))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            Some(sse(r))
        } else {
            None
        };
        let (status, hq) = tokio::task::spawn_blocking(move || (hq.wait_exit(30), hq))
            .await
            .unwrap();
        let log = hq.stderr();
        let status =
            status.unwrap_or_else(|| panic!("{task}: HQ still runs 30 s later; log:\n{log}"));
        assert!(!status.success(), "{task}: exit {status:?}; log:\n{log}");
        assert_eq!(
            log.matches("HQ task ended; stopping").count(),
            1,
            "{task}: logged once; log:\n{log}"
        );
        assert!(
            log.contains(&format!("HQ task {task} panicked: test hook")),
            "{task}: the error names the task and the cause; log:\n{log}"
        );
    }
}
