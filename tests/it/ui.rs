//! The APIs behind the staff UI (overview, live device events, price explanation and timeline,
//! promotions calendar, user administration, about) against the real binary, and the browser
//! tests in `tests/ui` (Node + Debian's Chromium + axe-core), run from here so that `cargo test`
//! runs them too.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::support::*;

fn token(sb: &StoreBox, name: &str, role: &str) -> String {
    let (s, out, err) = sb.cli(&["token", "add", name, "--role", role]);
    assert!(s.success(), "{out}{err}");
    out.lines().last().unwrap().trim().to_string()
}

async fn call(
    sb: &StoreBox,
    method: &str,
    path: &str,
    bearer: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = sb
        .client()
        .request(method.parse().unwrap(), format!("{}/api/v1{path}", sb.http))
        .bearer_auth(bearer);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn rfc(t: jiff::Timestamp) -> String {
    t.to_string()
}

fn import_relative(sb: &StoreBox) {
    let now = jiff::Timestamp::now();
    let d = |h: i64| rfc(now + jiff::SignedDuration::from_hours(h));
    let lines = [
        json!({"type":"catalog.upsert","payload":{"sku":"1001","name":"Whole milk 1 L","barcodes":["8001234567890"],"department":"dairy","unit":"each"}}),
        json!({"type":"price.set","payload":{"id":"pr-base","sku":"1001","price":129,"starts_at":d(-240),"ends_at":null}}),
        json!({"type":"price.set","payload":{"id":"pr-old","sku":"1001","price":119,"starts_at":d(-480),"ends_at":d(-300)}}),
        json!({"type":"price.set","payload":{"id":"pr-up","sku":"1001","price":139,"starts_at":d(72),"ends_at":null}}),
        json!({"type":"promotion.upsert","payload":{"id":"promo-pct","name":"Milk week","kind":"percent_off","params":{"percent":20},"skus":["1001"],"department":null,"starts_at":d(-24),"ends_at":d(48)}}),
        json!({"type":"promotion.upsert","payload":{"id":"promo-3for2","name":"3 for 2","kind":"buy_x_get_y","params":{"buy":2,"get":1},"skus":[],"department":"dairy","starts_at":d(-24),"ends_at":null}}),
        json!({"type":"promotion.upsert","payload":{"id":"promo-later","name":"Next month","kind":"amount_off","params":{"amount":10},"skus":["1001"],"department":null,"starts_at":d(24 * 20),"ends_at":d(24 * 25)}}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let path = sb.dir.join("ui-catalog.jsonl");
    std::fs::write(&path, text).unwrap();
    let (s, out, err) = sb.cli(&["import", path.to_str().unwrap()]);
    assert!(s.success(), "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_prices_explained_timeline_and_calendar() {
    let sb = StoreBox::start_with(&[("STOREBOX_STORE__TIMEZONE", "Europe/Rome")]);
    import_relative(&sb);
    let staff = token(&sb, "staffy", "staff");
    sb.add_device("lane-1", "lane");
    for (id, qty) in [("c-1", 2), ("c-2", 3)] {
        let (s, b) = call(&sb, "POST", "/checkouts", &staff, Some(json!({"checkout_id": id, "lane": "lane-1", "lines": [{"sku":"1001","quantity":qty}]}))).await;
        assert_eq!(s, 201, "{b}");
    }

    let (s, o) = call(&sb, "GET", "/overview", &staff, None).await;
    assert_eq!(s, 200, "{o}");
    // 2 × 129 − 20% = 206 (26 discount on 258 is 51.6 → 52); 3 for 2 beats 20% on the second.
    let (_, a) = call(
        &sb,
        "POST",
        "/baskets/price",
        &staff,
        Some(json!({"lines":[{"sku":"1001","quantity":2},{"sku":"1001","quantity":3}]})),
    )
    .await;
    assert_eq!(o["sales_today"]["checkouts"], 2);
    assert_eq!(o["sales_today"]["total"], a["total"]);
    let hours = o["sales_today"]["by_hour"].as_array().unwrap();
    assert_eq!(hours.len(), 24);
    let local_hour = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::get("Europe/Rome").unwrap())
        .hour() as usize;
    // A checkout posted right at an hour boundary may land in the next hour.
    let bucket = &hours[local_hour];
    let next = &hours[(local_hour + 1) % 24];
    assert!(
        bucket["total"] == a["total"] || next["checkouts"].as_i64().unwrap() > 0,
        "{hours:?}"
    );
    assert_eq!(o["sync"]["configured"], false);
    assert_eq!(o["devices"]["total"], 1);
    assert_eq!(o["devices"]["offline"], 1);
    let changes = o["upcoming"]["price_changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(
        (changes[0]["from"].as_i64(), changes[0]["to"].as_i64()),
        (Some(129), Some(139))
    );
    let promos: Vec<(String, String)> = o["upcoming"]["promotions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().into(),
                p["change"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(promos, vec![("promo-pct".to_string(), "ends".to_string())]);

    // Why this price: the record in effect, the others with their reason, the applied promotion.
    let (s, w) = call(&sb, "GET", "/prices/1001/explain", &staff, None).await;
    assert_eq!(s, 200, "{w}");
    assert_eq!(
        (w["price"].as_i64(), w["price_id"].as_str()),
        (Some(129), Some("pr-base"))
    );
    let states: Vec<(&str, &str)> = w["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        vec![
            ("pr-up", "not_started"),
            ("pr-base", "in_effect"),
            ("pr-old", "ended")
        ]
    );
    assert_eq!(w["one"]["total"], 103);
    assert_eq!(w["one"]["promotion_id"], "promo-pct");
    let by_id = |id: &str| {
        w["promotions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by_id("promo-pct")["applied"], true);
    assert_eq!(by_id("promo-3for2")["state"], "active");
    assert_eq!(by_id("promo-3for2")["targets"], "department");
    assert_eq!(by_id("promo-3for2")["discount_one"], 0);
    assert_eq!(by_id("promo-later")["state"], "not_started");
    // The same answer as the price endpoint at another instant.
    let at = rfc(jiff::Timestamp::now() + jiff::SignedDuration::from_hours(96));
    let (_, w4) = call(
        &sb,
        "GET",
        &format!("/prices/1001/explain?at={at}"),
        &staff,
        None,
    )
    .await;
    let (_, p4) = call(&sb, "GET", &format!("/prices/1001?at={at}"), &staff, None).await;
    assert_eq!(w4["price"], p4["price"]);
    assert_eq!(w4["price_id"], p4["price_id"]);
    assert_eq!(w4["one"]["total"], 139);

    // Timeline: now, the promotion's end, the price increase, the later promotion's start and end.
    let (s, t) = call(&sb, "GET", "/prices/1001/timeline", &staff, None).await;
    assert_eq!(s, 200, "{t}");
    let totals: Vec<Option<i64>> = t["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["one_total"].as_i64())
        .collect();
    assert_eq!(
        totals,
        vec![Some(103), Some(129), Some(139), Some(129), Some(139)]
    );

    // Calendar: promotions overlapping the period.
    let (s, c) = call(&sb, "GET", "/promotions", &staff, None).await;
    assert_eq!(s, 200, "{c}");
    let ids: Vec<&str> = c["promotions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["promo-3for2", "promo-pct", "promo-later"]);
    let from = rfc(jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 30));
    let (_, c2) = call(
        &sb,
        "GET",
        &format!("/promotions?from={from}"),
        &staff,
        None,
    )
    .await;
    let ids: Vec<&str> = c2["promotions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["promo-3for2"]);

    // Bad input: 400 naming the field (a malformed time), 422 `bad_range` (well-formed times
    // that are no range these endpoints serve); unknown sku: 404.
    for (path, field, status) in [
        ("/prices/1001/explain?at=tomorrow", "at:", 400),
        (
            "/prices/1001/timeline?from=2026-13-01T00:00:00",
            "from:",
            400,
        ),
        ("/prices/1001/explain?at=2026-12-01T00:00", "at:", 400),
        ("/promotions?from=", "from:", 400),
        (
            "/prices/1001/timeline?from=2026-12-02T00:00:00&to=2026-12-01T00:00:00",
            "to:",
            422,
        ),
        (
            "/promotions?from=2026-01-01T00:00:00Z&to=2028-01-01T00:00:00Z",
            "to:",
            422,
        ),
        ("/promotions?to=soon", "to:", 400),
    ] {
        let (s, e) = call(&sb, "GET", path, &staff, None).await;
        assert_eq!(s, status, "{path}: {e}");
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with(field), "{path}: {msg}");
    }
    let (s, e) = call(&sb, "GET", "/prices/nope/explain", &staff, None).await;
    assert_eq!((s, e["error"]["code"].as_str()), (404, Some("unknown_sku")));
    // Signed-out callers get nothing.
    let r = sb
        .client()
        .get(format!("{}/api/v1/overview", sb.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// Reads SSE events (name, data) from a streaming response until `want` matches, within `secs`.
async fn next_event(
    stream: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buf: &mut String,
    secs: u64,
    want: impl Fn(&str, &Value) -> bool,
) -> (String, Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut name = "message".to_string();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if data.is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&data).unwrap();
            if want(&name, &v) {
                return (name, v);
            }
        }
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(chunk))) => buf.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("no matching event within {secs} s: {other:?}; buffer {buf:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_device_events_follow_presence() {
    let mut sb = StoreBox::start();
    let staff = token(&sb, "viewer", "staff");
    let password = sb.add_device("scale-1", "scale");
    let r = sb
        .client()
        .get(format!("{}/api/v1/events", sb.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "events need a sign-in");
    let r = sb
        .client()
        .get(format!("{}/api/v1/events", sb.http))
        .bearer_auth(&staff)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut stream = r.bytes_stream();
    let mut buf = String::new();
    let (_, list) = next_event(&mut stream, &mut buf, 10, |n, _| n == "devices").await;
    assert_eq!(list[0]["id"], "scale-1");
    assert_eq!(list[0]["online"], false);

    let dev = Device::connect(sb.mqtt_port, "scale-1", Some(&password))
        .await
        .unwrap();
    let (_, d) = next_event(&mut stream, &mut buf, 10, |n, v| {
        n == "device" && v["online"] == true
    })
    .await;
    assert_eq!(d["id"], "scale-1");
    dev.publish(
        "devices/scale-1/alerts",
        r#"{"code":"LOW_BATTERY","severity":"warning","message":"12%"}"#,
    )
    .await;
    next_event(&mut stream, &mut buf, 10, |n, v| {
        n == "device" && v["open_alerts"] == 1
    })
    .await;
    dev.vanish();
    let (_, d) = next_event(&mut stream, &mut buf, 10, |n, v| {
        n == "device" && v["online"] == false
    })
    .await;
    assert_eq!(d["offline_reason"], "connection lost");

    // Provisioning and removal through the API are announced too.
    let (s, _) = sb
        .post("/api/v1/devices", json!({"id":"label-9","kind":"label"}))
        .await;
    assert_eq!(s, 201);
    next_event(&mut stream, &mut buf, 10, |n, v| {
        n == "device" && v["id"] == "label-9"
    })
    .await;
    let r = sb
        .client()
        .delete(format!("{}/api/v1/devices/label-9", sb.http))
        .bearer_auth(&sb.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    next_event(&mut stream, &mut buf, 10, |n, v| {
        n == "device-removed" && v["id"] == "label-9"
    })
    .await;
    // An open stream does not hold up shutdown: it ends, and the box stops at once.
    let (status, took) = sb.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_millis(1500),
        "stop took {took:?} with a live stream open"
    );
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream did not end");
}

async fn login(sb: &StoreBox, name: &str, password: &str) -> Option<(reqwest::Client, String)> {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let r = client
        .post(format!("{}/api/v1/session", sb.http))
        .json(&json!({"username": name, "password": password}))
        .send()
        .await
        .unwrap();
    if r.status() != 200 {
        return None;
    }
    let body: Value = r.json().await.unwrap();
    Some((client, body["csrf"].as_str().unwrap().to_string()))
}

fn add_user(sb: &StoreBox, name: &str, role: &str, password: &str) {
    let (s, out, err) = cli(
        &sb.dir,
        &["user", "add", name, "--role", role, "--password-stdin"],
        Some(&format!("{password}\n")),
    );
    assert!(s.success(), "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_admin_and_about_hide_secrets() {
    let sb = StoreBox::start_with(&[("STOREBOX_HQ__TOKEN", "very-secret-hq-token-123")]);
    add_user(&sb, "ada", "admin", "admin-pass-1234");
    add_user(&sb, "tom", "staff", "staff-pass-1234");
    let (ada, csrf) = login(&sb, "ada", "admin-pass-1234").await.unwrap();
    let (tom, tom_csrf) = login(&sb, "tom", "staff-pass-1234").await.unwrap();
    let url = |p: &str| format!("{}/api/v1{p}", sb.http);

    // Staff: 403 on every admin action, even with a valid CSRF token.
    let r = tom
        .patch(url("/users/ada"))
        .header("x-csrf-token", &tom_csrf)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = tom
        .post(url("/users/ada/password"))
        .header("x-csrf-token", &tom_csrf)
        .json(&json!({"password": "xxxxxxxxxxxxxx"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Admin without the CSRF header: 403.
    let r = ada
        .patch(url("/users/tom"))
        .json(&json!({"role": "manager"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Change role: effective at the next request of the user's session.
    let r = ada
        .patch(url("/users/tom"))
        .header("x-csrf-token", &csrf)
        .json(&json!({"role": "manager"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let u: Value = r.json().await.unwrap();
    assert_eq!(u["role"], "manager");
    assert_eq!(tom.get(url("/audit")).send().await.unwrap().status(), 200);

    // Bad bodies: 400 naming the field.
    for body in [json!({"role": "boss"}), json!({"colour": "red"}), json!({})] {
        let r = ada
            .patch(url("/users/tom"))
            .header("x-csrf-token", &csrf)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        let m = e["error"]["message"].as_str().unwrap().to_string();
        assert!(m.contains("role") || m.contains("colour"), "{m}");
    }
    let r = ada
        .post(url("/users/tom/password"))
        .header("x-csrf-token", &csrf)
        .json(&json!({"password": "short"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("password:"),
        "{e}"
    );
    let r = ada
        .patch(url("/users/nobody"))
        .header("x-csrf-token", &csrf)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // No self-lockout, and the last admin stays.
    let r = ada
        .patch(url("/users/ada"))
        .header("x-csrf-token", &csrf)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    add_user(&sb, "bob", "admin", "bob-admin-pass-1");
    let (bob, bob_csrf) = login(&sb, "bob", "bob-admin-pass-1").await.unwrap();
    let r = bob
        .patch(url("/users/ada"))
        .header("x-csrf-token", &bob_csrf)
        .json(&json!({"role": "staff"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = ada
        .patch(url("/users/bob"))
        .header("x-csrf-token", &csrf)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "ada is no longer admin");
    let (ada, csrf) = login(&sb, "ada", "admin-pass-1234").await.unwrap();
    let r = bob
        .patch(url("/users/ada"))
        .header("x-csrf-token", &bob_csrf)
        .json(&json!({"role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = ada
        .patch(url("/users/bob"))
        .header("x-csrf-token", &csrf)
        .json(&json!({"role": "staff"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = bob
        .patch(url("/users/ada"))
        .header("x-csrf-token", &bob_csrf)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "bob is staff now");

    // Disabling ends the user's sessions; a new password replaces the old one.
    let r = ada
        .patch(url("/users/tom"))
        .header("x-csrf-token", &csrf)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(tom.get(url("/status")).send().await.unwrap().status(), 401);
    assert!(login(&sb, "tom", "staff-pass-1234").await.is_none());
    let r = ada
        .patch(url("/users/tom"))
        .header("x-csrf-token", &csrf)
        .json(&json!({"disabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = ada
        .post(url("/users/tom/password"))
        .header("x-csrf-token", &csrf)
        .json(&json!({"password": "brand-new-pass-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(login(&sb, "tom", "staff-pass-1234").await.is_none());
    assert!(login(&sb, "tom", "brand-new-pass-1").await.is_some());
    let (_, audit) = sb.get("/api/v1/audit").await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"user.change") && actions.contains(&"user.password_reset"),
        "{actions:?}"
    );

    // About: configuration for admins only, secrets hidden; never the token itself.
    let a: Value = ada
        .get(url("/about"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a["config"]["hq"]["token"], "set (hidden)");
    assert_eq!(a["config"]["hq"]["url"], "none (standalone)");
    assert!(a["version"].as_str().is_some() && a["uptime_s"].as_u64().is_some());
    assert!(!a.to_string().contains("very-secret-hq-token-123"));
    let (tom, _) = login(&sb, "tom", "brand-new-pass-1").await.unwrap();
    let a: Value = tom
        .get(url("/about"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(a["config"].is_null(), "{a}");
    assert!(
        !sb.stderr().contains("very-secret-hq-token-123"),
        "token in the log"
    );
    assert!(
        !sb.stderr().contains("brand-new-pass-1"),
        "password in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_is_rate_limited_per_address_across_user_names() {
    let sb = StoreBox::start();
    add_user(&sb, "real", "staff", "real-pass-12345");
    let client = reqwest::Client::new();
    let attempt = |user: String, password: &'static str| {
        client
            .post(format!("{}/api/v1/session", sb.http))
            .json(&json!({"username": user, "password": password}))
            .send()
    };
    // Four tries each for five user names: under the per-user limit, 20 failures in all.
    for i in 0..20 {
        let r = attempt(format!("guess{}", i % 5), "wrong-password-1")
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "attempt {i}");
    }
    let r = attempt("real".into(), "real-pass-12345").await.unwrap();
    assert_eq!(
        r.status(),
        429,
        "password spraying from one address is not limited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_assets_types_caching_and_fallback() {
    let sb = StoreBox::start();
    let get = |p: &str| sb.client().get(format!("{}{p}", sb.http)).send();
    let r = get("/app.js").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("javascript"));
    assert_eq!(r.headers()["cache-control"], "no-cache");
    let r = get("/vendor/uPlot-1.6.32.iife.min.js").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    let r = get("/pages/devices.js").await.unwrap();
    assert_eq!(r.status(), 200);
    // Client-side routes get the app shell; missing files are 404.
    let r = get("/devices").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("<main id=\"view\""));
    assert_eq!(get("/missing.png").await.unwrap().status(), 404);
    // No page refers to another origin (the UI works without internet).
    for f in [
        "/",
        "/app.js",
        "/lib.js",
        "/pages/overview.js",
        "/pages/devices.js",
        "/pages/prices.js",
        "/pages/admin.js",
        "/style.css",
        "/base.css",
    ] {
        let text = get(f).await.unwrap().text().await.unwrap();
        assert!(
            !text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"),
            "{f} refers to another origin"
        );
    }
}
