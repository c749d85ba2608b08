//! HQ as several stateless nodes on one PostgreSQL database: real `storebox hq` processes, a real
//! store, real HTTP. Feed correctness under concurrent publishers, wake-ups across nodes, and a
//! node killed mid-publish.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{eventually, Engine, Hq, StoreBox};

fn item(sku: &str) -> Value {
    json!({"type":"catalog.upsert","payload":{"sku":sku,"name":"Item","unit":"each"}})
}

/// Reads a store's feed as the store does (its token, long-poll) on `hq`.
async fn feed(hq: &Hq, token: &str, after: i64, wait: u64) -> Value {
    let r = reqwest::Client::new()
        .get(format!(
            "{}/sync/v1/feed?after={after}&limit=50&wait={wait}",
            hq.http
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_polling_node_a_gets_an_event_authored_on_node_b_within_2s() {
    let a = Hq::start_on(Engine::Postgres, &[]);
    let b = a.another_node();
    let token = a.add_store("s1", "");
    let sb = StoreBox::start_with(
        &a.store_env("s1", &token)
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
    );
    // The store is connected and idle in a long-poll on node A.
    eventually(20, "store connected to node A", || async {
        let (_, s) = sb.get("/api/v1/sync").await;
        (s["connected"] == true).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    b.author(json!({"all": true}), json!([item("from-b")]))
        .await;
    eventually(2, "the store has the item authored on node B", || async {
        let (s, _) = sb.get("/api/v1/catalog/from-b").await;
        (s == 200).then_some(())
    })
    .await;
    println!(
        "event authored on node B applied by a store polling node A after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_writers_on_two_nodes_and_a_live_reader_see_every_event_once_in_order() {
    let a = Hq::start_on(Engine::Postgres, &[]);
    let b = a.another_node();
    let token = a.add_store("s1", "g1");
    const WRITERS: usize = 8;
    const REQUESTS: usize = 25;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let url = if w % 2 == 0 {
            a.http.clone()
        } else {
            b.http.clone()
        };
        let admin = a.admin.clone();
        writers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut n = 0;
            for i in 0..REQUESTS {
                let target = match i % 3 {
                    0 => json!({"all": true}),
                    1 => json!({"groups": ["g1"]}),
                    _ => json!({"stores": ["s1"]}),
                };
                let events: Vec<Value> = (0..=i % 3)
                    .map(|k| item(&format!("w{w}-{i}-{k}")))
                    .collect();
                n += events.len();
                let r = client
                    .post(format!("{url}/hq/v1/events"))
                    .bearer_auth(&admin)
                    .json(&json!({"target": target, "events": events}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
            }
            n
        }));
    }
    // The live reader: a third client following the store's feed on node B while writers run.
    let mut seen: Vec<i64> = Vec::new();
    let mut skus = BTreeSet::new();
    let mut cursor = 0;
    let expected: usize = WRITERS * (0..REQUESTS).map(|i| 1 + i % 3).sum::<usize>();
    let deadline = Instant::now() + Duration::from_secs(90);
    while seen.len() < expected {
        assert!(
            Instant::now() < deadline,
            "reader stalled at {}",
            seen.len()
        );
        let page = feed(&b, &token, cursor, 1).await;
        for e in page["events"].as_array().unwrap() {
            seen.push(e["seq"].as_i64().unwrap());
            assert!(
                skus.insert(e["payload"]["sku"].as_str().unwrap().to_string()),
                "event delivered twice: {e}"
            );
        }
        cursor = page["next"].as_i64().unwrap();
    }
    let mut authored = 0;
    for w in writers {
        authored += w.await.unwrap();
    }
    assert_eq!(authored, expected);
    let want: Vec<i64> = (1..=expected as i64).collect();
    assert_eq!(
        seen, want,
        "every event exactly once, in order, none skipped"
    );
    let last = feed(&a, &token, cursor, 0).await;
    assert_eq!(last["events"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_publish_leaves_no_partial_event_and_no_gap() {
    let a = Hq::start_on(Engine::Postgres, &[]);
    let mut b = a.another_node();
    let token = a.add_store("s1", "");
    a.author(json!({"all": true}), json!([item("before")]))
        .await;
    // A large request to node B, killed while it runs.
    let big: Vec<Value> = (0..20_000).map(|i| item(&format!("big-{i}"))).collect();
    let url = b.http.clone();
    let admin = b.admin.clone();
    let req = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{url}/hq/v1/events"))
            .bearer_auth(admin)
            .json(&json!({"target": {"all": true}, "events": big}))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.kill9();
    let answered = req.await.unwrap();
    // Whatever B got to: the feed holds the whole batch or none of it.
    let (_, stores) = a.get("/hq/v1/stores").await;
    let head = stores["head"].as_i64().unwrap();
    println!(
        "node killed {} its publish committed",
        if head == 1 { "before" } else { "after" }
    );
    assert!(
        head == 1 || head == 20_001,
        "the killed publish is all or nothing (head {head}; answer {answered:?})"
    );
    a.author(json!({"all": true}), json!([item("after")])).await;
    let mut seqs = Vec::new();
    let mut cursor = 0;
    loop {
        let page = feed(&a, &token, cursor, 0).await;
        let events = page["events"].as_array().unwrap();
        if events.is_empty() {
            break;
        }
        seqs.extend(events.iter().map(|e| e["seq"].as_i64().unwrap()));
        cursor = page["next"].as_i64().unwrap();
    }
    let want: Vec<i64> = (1..=head + 1).collect();
    assert_eq!(seqs, want, "no gap after the killed publish");
}
