//! The console's authoring, groups and rollout endpoints against a real `storebox hq` (and a real
//! `storebox serve` for delivery): a preview for a group lists exactly that group's stores with
//! the price change at the right store-local time, and publishing it afterwards reaches the store;
//! a CSV with a bad line 3 is refused naming line 3; an operator moves a store between groups and
//! support may not; an operator pauses and resumes a rollout through the endpoints the view uses.

use jiff::tz::TimeZone;
use serde_json::{json, Value};

use crate::hq_console::{add_user, browser, sign_in};
use crate::support::{eventually, Device, Engine, Hq, StoreBox};

/// A signed-in console user: cookie-keeping client and the session's CSRF token.
struct Session {
    c: reqwest::Client,
    csrf: String,
    base: String,
}

impl Session {
    async fn new(hq: &Hq, name: &str, role: &str) -> Session {
        let password = format!("{name}-password-123");
        add_user(hq, name, role, &password);
        let c = browser();
        let (s, v) = sign_in(hq, &c, name, &password).await;
        assert_eq!(s, 201, "{v}");
        Session {
            c,
            csrf: v["csrf"].as_str().unwrap().to_string(),
            base: hq.http.clone(),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .c
            .request(method, format!("{}{path}", self.base))
            .header("x-csrf-token", &self.csrf)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, body).await
    }
}

/// Tomorrow's date in `zone` as seen now, e.g. `2026-12-01`.
fn tomorrow_in(zone: &str) -> jiff::civil::Date {
    let tz = TimeZone::get(zone).unwrap();
    jiff::Timestamp::now()
        .to_zoned(tz)
        .date()
        .tomorrow()
        .unwrap()
}

/// `date` at 08:00 on the wall clock of `zone`, written with its offset as the preview does.
fn eight_oclock(date: jiff::civil::Date, zone: &str) -> String {
    let tz = TimeZone::get(zone).unwrap();
    date.at(8, 0, 0, 0)
        .to_zoned(tz)
        .unwrap()
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn preview_for_a_group_lists_its_stores_in_local_time_then_publishing_reaches_the_store() {
    let hq = Hq::start_on(Engine::Sqlite, &[]);
    let t1 = hq.add_store("s1", "pilot");
    hq.add_store("s2", "pilot");
    hq.add_store("s3", "other");
    let mut env = hq.store_env("s1", &t1);
    env.push(("STOREBOX_HQ__POLL_WAIT_SECS".into(), "1".into()));
    env.push(("STOREBOX_STORE__TIMEZONE".into(), "Asia/Tokyo".into()));
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let sb = StoreBox::start_with(&refs);
    // HQ learns the store's zone from the report that comes with a push: a device's status.
    let pw = sb.add_device("printer-1", "printer");
    let dev = Device::connect(sb.mqtt_port, "printer-1", Some(&pw))
        .await
        .unwrap();
    dev.publish("devices/printer-1/status", r#"{"online":true}"#)
        .await;
    eventually(30, "s1 reports its time zone", || async {
        let (_, v) = hq.get("/hq/v1/fleet").await;
        let rows = v["stores"].as_array().cloned().unwrap_or_default();
        rows.iter()
            .any(|r| r["id"] == "s1" && r["timezone"] == "Asia/Tokyo")
            .then_some(())
    })
    .await;

    let olga = Session::new(&hq, "olga", "operator").await;
    let day = tomorrow_in("Asia/Tokyo");
    let body = json!({
        "target": {"groups": ["pilot"]},
        "events": [
            {"type": "catalog.upsert", "payload": {"sku": "1001", "name": "Milk", "unit": "each"}},
            {"type": "price.set", "payload": {"id": "pr-1001", "sku": "1001", "price": 99,
              "starts_at": format!("{day}T08:00:00")}}
        ]
    });
    let (s, v) = olga.post("/hq/v1/preview", body.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["per"], "store", "{v}");
    let ids: Vec<&str> = v["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["store"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["s1", "s2"], "exactly the pilot group: {v}");
    let s1 = &v["stores"][0]["preview"];
    assert_eq!(s1["timezone"], "Asia/Tokyo", "{s1}");
    assert_eq!(s1["timezone_known"], true, "{s1}");
    assert_eq!(s1["skus"][0]["sku"], "1001", "{s1}");
    assert_eq!(s1["skus"][0]["price_now"], Value::Null, "{s1}");
    assert_eq!(
        s1["skus"][0]["changes"],
        json!([{"at": eight_oclock(day, "Asia/Tokyo"), "price": 99}]),
        "{s1}"
    );
    assert_eq!(s1["catalog_upserts"], json!(["1001"]), "{s1}");
    // s2 never reported a zone: UTC, and the answer says so.
    let s2 = &v["stores"][1]["preview"];
    assert_eq!(s2["timezone"], "UTC", "{s2}");
    assert_eq!(s2["timezone_known"], false, "{s2}");
    assert_eq!(
        s2["skus"][0]["changes"][0]["at"],
        format!("{day}T08:00:00+00:00"),
        "{s2}"
    );

    // Nothing was written by the preview.
    let (_, stores) = hq.get("/hq/v1/stores").await;
    let head_before = stores["head"].as_i64().unwrap();
    assert_eq!(head_before, 0, "{stores}");

    // Same validation as authoring: a bad field is named.
    let (s, v) = olga
        .post(
            "/hq/v1/preview",
            json!({"target": {"groups": ["pilot"]}, "events": [
                {"type": "price.set", "payload": {"id": "p", "sku": "1001", "price": 5, "starts_at": "tomorrow"}}
            ]}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("events[0]"),
        "{v}"
    );

    // Publish: the price is in the store's own schedule (and the catalog item now).
    let (s, v) = olga.post("/hq/v1/events", body).await;
    assert_eq!(s, 201, "{v}");
    eventually(20, "the store has the item from HQ", || async {
        let (s, v) = sb.get("/api/v1/catalog/1001").await;
        (s == 200 && v["name"] == "Milk").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_with_a_bad_line_3_is_refused_naming_line_3_and_nothing_is_applied() {
    let hq = Hq::start_on(Engine::Sqlite, &[]);
    hq.add_store("s1", "pilot");
    let olga = Session::new(&hq, "olga", "operator").await;
    let csv = "id,sku,price,starts_at\npr-1,1001,129,2026-01-01T00:00:00\npr-2,1002,12.9,2026-01-01T00:00:00\n";
    let r = olga
        .c
        .post(format!("{}/hq/v1/import?target=group:pilot", hq.http))
        .header("x-csrf-token", &olga.csrf)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["line"], 3, "{v}");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.starts_with("line 3:") && m.contains("12.9"), "{v}");
    let (_, stores) = hq.get("/hq/v1/stores").await;
    assert_eq!(stores["head"], 0, "nothing applied: {stores}");
}

async fn group_moves(engine: Engine) {
    let hq = Hq::start_on(engine, &[]);
    hq.add_store("s1", "pilot");
    let olga = Session::new(&hq, "olga", "operator").await;
    let sam = Session::new(&hq, "sam", "support").await;

    let (s, v) = sam
        .send(
            reqwest::Method::PUT,
            "/hq/v1/stores/s1/group",
            json!({"group": "canary"}),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = olga
        .send(
            reqwest::Method::PUT,
            "/hq/v1/stores/s1/group",
            json!({"group": "canary"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, v) = hq.get("/hq/v1/stores").await;
    assert_eq!(v["stores"][0]["group"], "canary", "{v}");

    // A session without its CSRF token may not change anything.
    let r = olga
        .c
        .put(format!("{}/hq/v1/stores/s1/group", hq.http))
        .json(&json!({"group": "pilot"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Bad input is named.
    let (s, v) = olga
        .send(
            reqwest::Method::PUT,
            "/hq/v1/stores/nope/group",
            json!({"group": "x"}),
        )
        .await;
    assert_eq!(s, 404, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("nope"),
        "{v}"
    );
    let (s, v) = olga
        .send(
            reqwest::Method::PUT,
            "/hq/v1/stores/s1/group",
            json!({"group": "has space"}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (_, v) = hq.get("/hq/v1/stores").await;
    assert_eq!(v["stores"][0]["group"], "canary", "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_moves_a_store_between_groups_and_support_may_not_sqlite() {
    group_moves(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_moves_a_store_between_groups_and_support_may_not_postgres() {
    group_moves(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_preview_for_many_stores_is_answered_per_group_and_counts_them() {
    let hq = Hq::start_on(Engine::Sqlite, &[]);
    for i in 0..52 {
        hq.add_store(&format!("b{i:02}"), if i < 40 { "big" } else { "small" });
    }
    // An earlier price for every store: the preview starts from it.
    hq.author(
        json!({"all": true}),
        json!([{"type": "price.set", "payload": {"id": "base", "sku": "7", "price": 300,
                "starts_at": "2020-01-01T00:00:00Z"}}]),
    )
    .await;
    let (s, v) = hq
        .post(
            "/hq/v1/preview",
            json!({"target": {"all": true}, "events": [
                {"type": "price.cancel", "payload": {"id": "base"}}
            ]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["per"], "group", "{v}");
    assert_eq!(v["affected"], 52, "{v}");
    let groups: Vec<(String, i64)> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["group"].as_str().unwrap().to_string(),
                g["stores"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(groups, [("big".to_string(), 40), ("small".to_string(), 12)]);
    let sku = &v["groups"][0]["preview"]["skus"][0];
    assert_eq!(sku["price_now_before"], 300, "{v}");
    assert_eq!(sku["price_now"], Value::Null, "{v}");

    // Single stores: each once, per store; an unknown one is named.
    let cancel = json!([{"type": "price.cancel", "payload": {"id": "base"}}]);
    let (s, v) = hq
        .post(
            "/hq/v1/preview",
            json!({"target": {"stores": ["b41", "b03", "b41"]}, "events": cancel}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["per"], "store", "{v}");
    let ids: Vec<&str> = v["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["store"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["b41", "b03"], "{v}");
    assert_eq!(v["stores"][0]["group"], "small", "{v}");
    let (s, v) = hq
        .post(
            "/hq/v1/preview",
            json!({"target": {"stores": ["b01", "nowhere"]}, "events": cancel}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("nowhere"),
        "{v}"
    );

    // Cost: 40 stores (per-store answer) whose snapshots hold 2,000 prices each.
    let prices: Vec<Value> = (0..2000)
        .map(|i| {
            json!({"type": "price.set", "payload": {"id": format!("p{i}"), "sku": format!("s{i}"),
            "price": 100 + i, "starts_at": "2020-01-01T00:00:00Z"}})
        })
        .collect();
    hq.author(json!({"all": true}), Value::Array(prices)).await;
    let started = std::time::Instant::now();
    let (s, v) = hq
        .post(
            "/hq/v1/preview",
            json!({"target": {"stores": (0..40).map(|i| format!("b{i:02}")).collect::<Vec<_>>()},
                   "events": [{"type": "price.set", "payload": {"id": "p7", "sku": "s7", "price": 1,
                               "starts_at": "2020-01-01T00:00:00Z"}}]}),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["stores"].as_array().unwrap().len(), 40);
    assert_eq!(
        v["stores"][39]["preview"]["skus"][0]["price_now_before"],
        107
    );
    assert_eq!(v["stores"][39]["preview"]["skus"][0]["price_now"], 1);
    eprintln!("preview of 40 stores with 2,000 prices each: {took:?}");
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_pauses_and_resumes_a_rollout_through_the_console_endpoints() {
    let hq = crate::rollout::start_hq(Engine::Sqlite);
    // A pilot store that never answers keeps the first wave waiting (every wave's group needs a
    // registered store, or the plan is refused).
    hq.add_store("p1", "pilot");
    hq.add_store("c1", "canary");
    crate::rollout::publish(&hq, "2.0.0", 1).await;
    let olga = Session::new(&hq, "olga", "operator").await;
    let sam = Session::new(&hq, "sam", "support").await;
    let (s, v) = olga
        .post("/hq/v1/rollouts", crate::rollout::plan("2.0.0"))
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();

    let (s, v) = sam
        .post(&format!("/hq/v1/rollouts/{id}/pause"), json!({}))
        .await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = olga
        .post(&format!("/hq/v1/rollouts/{id}/pause"), json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    let r = olga
        .c
        .get(format!("{}/hq/v1/rollouts/{id}", hq.http))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["state"], "paused", "{v}");
    assert!(v["reason"].as_str().unwrap_or("").contains("olga"), "{v}");
    let (s, v) = olga
        .post(&format!("/hq/v1/rollouts/{id}/resume"), json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, v) = hq.get(&format!("/hq/v1/rollouts/{id}")).await;
    assert_eq!(v["state"], "running", "{v}");
    // Running again: the engine assigns the pilot store, which the view lists under wave 1.
    eventually(20, "p1 assigned in wave 1", || async {
        let (_, v) = hq.get(&format!("/hq/v1/rollouts/{id}")).await;
        (v["waves"][0]["stores"][0]["store"] == "p1").then_some(())
    })
    .await;
}
