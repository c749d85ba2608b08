//! Catalog import and the pricing API on the real server: lookup, effective prices at instants,
//! basket pricing, idempotent checkouts, and the MQTT price request.

use serde_json::json;

use crate::support::*;

const EVENTS: &str = r#"{"id":"e-1","type":"catalog.upsert","payload":{"sku":"1001","name":"Whole milk 1 L","barcodes":["8001234567890"],"department":"dairy","unit":"each"}}
{"id":"e-2","type":"catalog.upsert","payload":{"sku":"2001","name":"Gala apples","barcodes":[],"department":"produce","unit":"kg"}}
{"id":"e-3","type":"catalog.upsert","payload":{"sku":"3001","name":"Unpriced novelty","department":"misc","unit":"each"}}
{"id":"e-4","type":"price.set","payload":{"id":"pr-1001-base","sku":"1001","price":129,"starts_at":"2026-11-01T00:00:00Z","ends_at":null}}
{"id":"e-5","type":"price.set","payload":{"id":"pr-1001-dec","sku":"1001","price":139,"starts_at":"2026-12-01T00:00:00","ends_at":null}}
{"id":"e-6","type":"price.set","payload":{"id":"pr-2001","sku":"2001","price":349,"starts_at":"2026-11-01T00:00:00Z"}}
{"id":"e-7","type":"promotion.upsert","payload":{"id":"promo-bf","name":"Black Friday dairy","kind":"percent_off","params":{"percent":20},"skus":[],"department":"dairy","starts_at":"2026-11-27T00:00:00","ends_at":"2026-11-30T00:00:00"}}
{"id":"e-8","type":"promotion.upsert","payload":{"id":"promo-3for2","name":"Milk 3 for 2","kind":"buy_x_get_y","params":{"buy":2,"get":1},"skus":["1001"],"starts_at":"2026-11-01T00:00:00Z","ends_at":null}}
"#;

fn import(sb: &StoreBox, name: &str, text: &str) -> (bool, String) {
    let path = sb.dir.join(name);
    std::fs::write(&path, text).unwrap();
    let (s, out, err) = sb.cli(&["import", path.to_str().unwrap()]);
    (s.success(), format!("{out}{err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_lookup_and_prices() {
    // Store in Rome: "2026-11-27T00:00:00" means midnight in Rome (23:00Z the day before).
    let sb = StoreBox::start_with(&[("STOREBOX_STORE__TIMEZONE", "Europe/Rome")]);
    let (ok, out) = import(&sb, "catalog.jsonl", EVENTS);
    assert!(ok, "{out}");
    assert!(out.contains("imported 8 events"), "{out}");

    // A bad file is rejected whole, naming the line.
    let (ok, out) = import(&sb, "bad.jsonl", "{\"type\":\"price.set\",\"payload\":{\"id\":\"p9\",\"sku\":\"1001\",\"price\":1,\"starts_at\":\"2026-11-01T00:00:00Z\"}}\n{\"type\":\"price.set\",\"payload\":{\"id\":\"p10\",\"sku\":\"1001\"}}\n");
    assert!(
        !ok && out.contains("line 2") && out.contains("price"),
        "{out}"
    );
    let n: i64 = sb
        .db()
        .query_row("SELECT count(*) FROM prices WHERE id = 'p9'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(n, 0, "nothing of a rejected file is applied");

    let (s, found) = sb.get("/api/v1/catalog?q=milk").await;
    assert_eq!(s, 200);
    assert_eq!(found["items"][0]["sku"], "1001");
    let (_, by_code) = sb.get("/api/v1/catalog/barcode/8001234567890").await;
    assert_eq!(by_code["sku"], "1001");
    let (_, by_sku_search) = sb.get("/api/v1/catalog?q=8001234567890").await;
    assert_eq!(by_sku_search["items"][0]["sku"], "1001");
    let (s, e) = sb.get("/api/v1/catalog/9999").await;
    assert_eq!((s, e["error"]["code"].as_str()), (404, Some("unknown_sku")));

    // Before Black Friday: base price, 3-for-2 active, next change at Rome midnight Dec 1.
    let (s, p) = sb.get("/api/v1/prices/1001?at=2026-11-26T12:00:00Z").await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["price"], 129);
    assert_eq!(p["currency"], "EUR");
    assert_eq!(p["price_id"], "pr-1001-base");
    assert_eq!(p["promotions"], json!(["promo-3for2"]));
    assert_eq!(p["next_change"]["at"], "2026-11-30T23:00:00Z");
    assert_eq!(p["next_change"]["price"], 139);
    // Black Friday starts at midnight Rome time = 23:00Z on the 26th.
    let (_, p) = sb.get("/api/v1/prices/1001?at=2026-11-26T22:59:59Z").await;
    assert_eq!(p["promotions"], json!(["promo-3for2"]));
    let (_, p) = sb.get("/api/v1/prices/1001?at=2026-11-26T23:00:00Z").await;
    assert_eq!(p["promotions"], json!(["promo-3for2", "promo-bf"]));
    // Store-local `at` works too.
    let (_, p) = sb.get("/api/v1/prices/1001?at=2026-12-01T00:00:00").await;
    assert_eq!(
        (p["price"].as_i64(), p["price_id"].as_str()),
        (Some(139), Some("pr-1001-dec"))
    );
    let (s, e) = sb.get("/api/v1/prices/3001").await;
    assert_eq!((s, e["error"]["code"].as_str()), (404, Some("no_price")));
    let (s, e) = sb.get("/api/v1/prices/nope").await;
    assert_eq!((s, e["error"]["code"].as_str()), (404, Some("unknown_sku")));
    let (s, e) = sb.get("/api/v1/prices/1001?at=yesterday").await;
    assert_eq!((s, e["error"]["code"].as_str()), (400, Some("bad_time")));
}

/// A `storebox_…` sample from the /metrics text (0 when absent).
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_price_answers_never_outlive_a_write_or_a_boundary() {
    let sb = StoreBox::start();
    let (ok, out) = import(&sb, "catalog.jsonl", EVENTS);
    assert!(ok, "{out}");
    let at = "/api/v1/prices/1001?at=2026-11-20T12:00:00Z";
    let (s, first) = sb.get(at).await;
    assert_eq!((s, first["price"].as_i64()), (200, Some(129)), "{first}");
    let before = metrics(&sb).await;
    let (_, again) = sb.get(at).await;
    assert_eq!(again, first);
    let after = metrics(&sb).await;
    let hits = "storebox_price_cache_hits_total";
    assert_eq!(sample(&after, hits) - sample(&before, hits), 1.0, "{after}");
    assert!(
        sample(&after, "storebox_price_cache_entries") >= 1.0,
        "{after}"
    );

    // Another process (`storebox import`) writes a price: the very next lookup sees it.
    let (ok, out) = import(
        &sb,
        "flash.jsonl",
        r#"{"id":"e-9","type":"price.set","payload":{"id":"pr-1001-flash","sku":"1001","price":99,"starts_at":"2026-11-20T00:00:00Z","ends_at":"2026-11-21T00:00:00Z"}}
"#,
    );
    assert!(ok, "{out}");
    let (_, p) = sb.get(at).await;
    assert_eq!(
        (p["price"].as_i64(), p["price_id"].as_str()),
        (Some(99), Some("pr-1001-flash")),
        "{p}"
    );
    // Kept from 12:00 on; at 23:59:59.999 still the flash price, at its end the base price again.
    let (_, p) = sb
        .get("/api/v1/prices/1001?at=2026-11-20T23:59:59.999Z")
        .await;
    assert_eq!(p["price"], 99, "{p}");
    let (_, p) = sb.get("/api/v1/prices/1001?at=2026-11-21T00:00:00Z").await;
    assert_eq!(p["price"], 129, "{p}");
    // An earlier instant than the one an answer was kept for is computed again (a clock stepped
    // back), not answered from it.
    let (_, p) = sb.get("/api/v1/prices/1001?at=2026-11-19T12:00:00Z").await;
    assert_eq!(p["price"], 129, "{p}");

    // A change to promotions only.
    let (ok, out) = import(
        &sb,
        "cancel.jsonl",
        r#"{"id":"e-10","type":"promotion.cancel","payload":{"id":"promo-3for2"}}
"#,
    );
    assert!(ok, "{out}");
    let (_, p) = sb.get(at).await;
    assert_eq!(p["promotions"], json!([]), "{p}");
    // The answer is the same JSON as computed, with its content type.
    let r = sb
        .client()
        .get(format!("{}{at}", sb.http))
        .bearer_auth(&sb.token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baskets_checkouts_and_device_price_requests() {
    let sb = StoreBox::start_with(&[("STOREBOX_STORE__TIMEZONE", "Europe/Rome")]);
    let (ok, out) = import(&sb, "catalog.jsonl", EVENTS);
    assert!(ok, "{out}");

    // During Black Friday: 3 milks: 3-for-2 saves 129, 20% saves round(387*0.2)=77 → 3-for-2 wins.
    // 1 milk: only 20% applies (3-for-2 needs 3) → 26 off (25.8 rounds half up to 26).
    // 750 g apples at 3.49/kg: round(349*750/1000) = round(261.75) = 262.
    let body = json!({"at":"2026-11-28T10:00:00","lines":[{"sku":"1001","quantity":3},{"sku":"1001","quantity":1},{"sku":"2001","quantity":750}]});
    let (s, b) = sb.post("/api/v1/baskets/price", body).await;
    assert_eq!(s, 200, "{b}");
    let l = &b["lines"];
    assert_eq!(
        (
            l[0]["regular"].as_i64(),
            l[0]["discount"].as_i64(),
            l[0]["promotion_id"].as_str()
        ),
        (Some(387), Some(129), Some("promo-3for2"))
    );
    assert_eq!(
        (
            l[1]["regular"].as_i64(),
            l[1]["discount"].as_i64(),
            l[1]["promotion_id"].as_str()
        ),
        (Some(129), Some(26), Some("promo-bf"))
    );
    assert_eq!(
        (
            l[2]["regular"].as_i64(),
            l[2]["discount"].as_i64(),
            l[2]["total"].as_i64()
        ),
        (Some(262), Some(0), Some(262))
    );
    assert_eq!(
        (
            b["regular"].as_i64(),
            b["discount"].as_i64(),
            b["total"].as_i64()
        ),
        (Some(778), Some(155), Some(623))
    );

    let (s, e) = sb
        .post(
            "/api/v1/baskets/price",
            json!({"lines":[{"sku":"1001","quantity":0}]}),
        )
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (400, Some("bad_quantity"))
    );
    let (s, e) = sb
        .post(
            "/api/v1/baskets/price",
            json!({"lines":[{"sku":"3001","quantity":1}]}),
        )
        .await;
    assert_eq!((s, e["error"]["code"].as_str()), (422, Some("no_price")));
    let (s, e) = sb
        .post("/api/v1/baskets/price", json!({"lines":"milk"}))
        .await;
    assert_eq!((s, e["error"]["code"].as_str()), (400, Some("bad_body")));

    // Checkouts are idempotent on checkout_id.
    let co = json!({"checkout_id":"lane2-0001","lane":"lane-2","lines":[{"sku":"1001","quantity":2}],"payment":{"method":"card"}});
    let (s1, first) = sb.post("/api/v1/checkouts", co.clone()).await;
    let (s2, again) = sb.post("/api/v1/checkouts", co).await;
    assert_eq!((s1, s2), (201, 200), "{first}");
    assert_eq!(first, again);
    assert_eq!(first["total"], 258);
    let db = sb.db();
    let rows: i64 = db
        .query_row("SELECT count(*) FROM checkouts", [], |r| r.get(0))
        .unwrap();
    let queued: i64 = db
        .query_row(
            "SELECT count(*) FROM outbox WHERE type = 'checkout.completed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!((rows, queued), (1, 1));

    // A device asks for a price over MQTT.
    let pw = sb.add_device("label-7", "label");
    let mut dev = Device::connect(sb.mqtt_port, "label-7", Some(&pw))
        .await
        .unwrap();
    dev.subscribe("devices/label-7/price/reply").await;
    dev.publish(
        "devices/label-7/price/request",
        r#"{"req":"r-1","sku":"2001"}"#,
    )
    .await;
    let reply = dev
        .next_on("devices/label-7/price/reply", 5)
        .await
        .expect("price reply");
    assert_eq!(
        (
            reply["req"].as_str(),
            reply["sku"].as_str(),
            reply["price"].as_i64(),
            reply["unit"].as_str()
        ),
        (Some("r-1"), Some("2001"), Some(349), Some("kg"))
    );
    dev.publish(
        "devices/label-7/price/request",
        r#"{"req":"r-2","sku":"nope"}"#,
    )
    .await;
    let reply = dev
        .next_on("devices/label-7/price/reply", 5)
        .await
        .expect("error reply");
    assert_eq!(
        (reply["req"].as_str(), reply["error"]["code"].as_str()),
        (Some("r-2"), Some("unknown_sku"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_starting_soon_is_announced_to_devices() {
    let sb = StoreBox::start();
    let starts = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(2))
        .unwrap()
        .round(jiff::Unit::Second)
        .unwrap();
    let events = format!(
        "{}\n{}\n{}\n",
        r#"{"type":"catalog.upsert","payload":{"sku":"5001","name":"Bread","unit":"each"}}"#,
        r#"{"type":"price.set","payload":{"id":"b1","sku":"5001","price":200,"starts_at":"2026-01-01T00:00:00Z"}}"#,
        json!({"type":"price.set","payload":{"id":"b2","sku":"5001","price":150,"starts_at":starts.to_string()}}),
    );
    let (ok, out) = import(&sb, "soon.jsonl", &events);
    assert!(ok, "{out}");
    let pw = sb.add_device("label-1", "label");
    let mut dev = Device::connect(sb.mqtt_port, "label-1", Some(&pw))
        .await
        .unwrap();
    dev.subscribe("store/prices/changed").await;
    let msg = dev
        .next_on("store/prices/changed", 10)
        .await
        .expect("price change announced");
    assert_eq!(msg["at"], starts.to_string());
    assert_eq!(msg["skus"][0]["sku"], "5001");
    assert_eq!(msg["skus"][0]["price"], 150);
    assert_eq!(msg["catch_up"], false);
    let (_, audit) = sb.get("/api/v1/audit").await;
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "price.activated"));
}
