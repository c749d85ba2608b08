//! The behaviour every engine must have, run against each: SQLite always, PostgreSQL against the
//! server `scripts/test` starts (see [`pg_url`]); a missing PostgreSQL is a failure, not a skip.

use serde_json::{json, Value};

use super::*;
use crate::hq::error::HqError;
use crate::proto::{validate, HqEvent, StoreEvent, StoreReport, Target};

pub(crate) async fn sqlite() -> (tempfile::TempDir, Storage) {
    let dir = tempfile::tempdir().unwrap();
    let s = sqlite::SqliteStorage::open(&dir.path().join("hq.db"), 0)
        .await
        .unwrap();
    (dir, Arc::new(s))
}

pub(crate) fn ev(t: &str, payload: Value) -> Authored {
    Authored {
        id: crate::hq::new_event_id("t"),
        body: validate(t, &payload).unwrap(),
    }
}

fn item(sku: &str) -> Authored {
    ev(
        "catalog.upsert",
        json!({"sku": sku, "name": "X", "unit": "each"}),
    )
}

/// Feed targeting, paging, snapshots and retention with 410.
pub(crate) async fn feed_snapshot_and_retention(s: &dyn HqStorage) {
    s.add_store("s1", "north", 0).await.unwrap();
    let s1 = StoreIdent {
        id: "s1".into(),
        group: "north".into(),
    };
    let all = Target::All { all: true };
    s.author(&all, vec![item("1"), item("2")], 0).await.unwrap();
    s.author(
        &Target::Groups {
            groups: vec!["south".into()],
        },
        vec![item("3")],
        0,
    )
    .await
    .unwrap();
    s.author(
        &Target::Stores {
            stores: vec!["s1".into()],
        },
        vec![item("4")],
        0,
    )
    .await
    .unwrap();
    s.author(&all, vec![ev("catalog.delete", json!({"sku": "1"}))], 0)
        .await
        .unwrap();
    let page = s.feed(&s1, 0, 100).await.unwrap();
    let seqs: Vec<i64> = page.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 4, 5]);
    assert_eq!((page.next, page.head), (5, 5));
    let page = s.feed(&s1, 0, 2).await.unwrap();
    assert_eq!(page.next, 2, "a full page ends at its last event");
    let snap = s.snapshot(&s1).await.unwrap();
    let skus: Vec<&str> = snap
        .events
        .iter()
        .map(|e| e.payload["sku"].as_str().unwrap())
        .collect();
    assert_eq!((skus, snap.cursor), (vec!["2", "4"], 5));
    let unknown = s
        .author(
            &Target::Stores {
                stores: vec!["nope".into()],
            },
            vec![item("9")],
            0,
        )
        .await
        .unwrap_err();
    assert!(unknown.to_string().contains("nope"), "{unknown}");
    assert_eq!(s.head().await.unwrap(), 5, "a refused author adds nothing");
}

pub(crate) async fn retention(s: &dyn HqStorage) {
    s.add_store("s1", "", 0).await.unwrap();
    let s1 = StoreIdent {
        id: "s1".into(),
        group: String::new(),
    };
    let all = Target::All { all: true };
    for i in 0..5 {
        s.author(&all, vec![item(&i.to_string())], 0).await.unwrap();
    }
    match s.feed(&s1, 2, 10).await {
        Err(HqError::CursorGone { pruned_through, .. }) => assert_eq!(pruned_through, 3),
        other => panic!("expected 410, got {other:?}"),
    }
    assert_eq!(s.feed(&s1, 3, 10).await.unwrap().events.len(), 2);
    assert_eq!(
        s.snapshot(&s1).await.unwrap().events.len(),
        5,
        "snapshot survives pruning"
    );
}

pub(crate) async fn ingest_is_idempotent(s: &dyn HqStorage) {
    let token = s.add_store("s1", "", 0).await.unwrap();
    assert_eq!(
        s.store_by_token(&token).await.unwrap().unwrap().id,
        "s1",
        "the token names its store"
    );
    assert!(s.store_by_token("sbhq_wrong").await.unwrap().is_none());
    let odd = r#"{"z":1.50,"a":["\u00e9","é"],"n":{"b":null,"a":1e3}}"#;
    let batch = PushBatch {
        report: StoreReport {
            version: "9.9.9".into(),
            ..Default::default()
        },
        events: (1..=3)
            .map(|seq| StoreEvent {
                seq,
                id: format!("e{seq}"),
                event_type: "checkout.completed".into(),
                class: "business".into(),
                payload: crate::proto::raw_payload(odd),
                at: "2026-01-01T00:00:00Z".into(),
            })
            .collect(),
    };
    for (stored, dup) in [(3, 0), (0, 3)] {
        let ack = s.ingest("s1", batch.clone(), 0).await.unwrap();
        assert_eq!(
            (ack.acked, ack.held, ack.stored, ack.duplicates),
            (3, 3, stored, dup)
        );
    }
    let got = s.store_events(EventQuery::default(), None).await.unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(
        got[0]["payload"],
        serde_json::from_str::<Value>(odd).unwrap(),
        "payload kept as sent"
    );
    let stores = s.list_stores().await.unwrap();
    assert_eq!(
        (stores[0].version.as_deref(), stores[0].held),
        (Some("9.9.9"), 3)
    );
}

/// Two stores may use the same ticket id: replies go to the right one.
pub(crate) async fn tickets_are_per_store(s: &dyn HqStorage) {
    for id in ["a", "b"] {
        s.add_store(id, "", 0).await.unwrap();
        let opened = StoreEvent {
            seq: 1,
            id: format!("ticket-{id}"),
            event_type: "ticket.opened".into(),
            class: "business".into(),
            payload: crate::proto::raw_payload(
                &json!({"ticket_id": "t-1", "subject": format!("from {id}")}).to_string(),
            ),
            at: "2026-01-01T00:00:00Z".into(),
        };
        s.ingest(
            id,
            PushBatch {
                report: StoreReport::default(),
                events: vec![opened],
            },
            0,
        )
        .await
        .unwrap();
    }
    let reply = || TicketReply {
        event_id: crate::hq::new_event_id("reply"),
        author: "Ann".into(),
        message: "On it".into(),
        status: None,
    };
    let e = s.reply(None, "t-1", reply(), 1).await.unwrap_err();
    assert!(matches!(e, HqError::Conflict(_)), "{e:?}");
    let seq = s.reply(Some("b"), "t-1", reply(), 1).await.unwrap();
    let b = StoreIdent {
        id: "b".into(),
        group: String::new(),
    };
    let a = StoreIdent {
        id: "a".into(),
        group: String::new(),
    };
    let page = s.feed(&b, seq - 1, 10).await.unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].event_type, "ticket.update");
    assert!(s.feed(&a, seq - 1, 10).await.unwrap().events.is_empty());
    let tickets = s.tickets().await.unwrap();
    let b_ticket = tickets.iter().find(|t| t["store"] == "b").unwrap();
    let a_ticket = tickets.iter().find(|t| t["store"] == "a").unwrap();
    assert_eq!(b_ticket["status"], "answered");
    assert_eq!(b_ticket["replies"].as_array().unwrap().len(), 1);
    assert_eq!(a_ticket["status"], "open");
    assert!(matches!(
        s.reply(Some("c"), "t-1", reply(), 1).await,
        Err(HqError::NotFound { .. })
    ));
    let _ = HqEvent::new(
        None,
        &validate(
            "release.assign",
            &crate::proto::release::tests::assign_json(),
        )
        .unwrap(),
    );
}

#[tokio::test]
async fn sqlite_feed_snapshot() {
    let (_d, s) = sqlite().await;
    feed_snapshot_and_retention(s.as_ref()).await;
}

#[tokio::test]
async fn sqlite_retention() {
    let dir = tempfile::tempdir().unwrap();
    let s = sqlite::SqliteStorage::open(&dir.path().join("hq.db"), 2)
        .await
        .unwrap();
    retention(&s).await;
}

#[tokio::test]
async fn sqlite_ingest() {
    let (_d, s) = sqlite().await;
    ingest_is_idempotent(s.as_ref()).await;
}

#[tokio::test]
async fn sqlite_tickets() {
    let (_d, s) = sqlite().await;
    tickets_are_per_store(s.as_ref()).await;
}

#[test]
fn migrating_an_old_hq_database_keys_its_tickets_by_store() {
    let mut c = rusqlite::Connection::open_in_memory().unwrap();
    crate::db::migrations::migrate_list(&mut c, sqlite::MIGRATIONS, 1).unwrap();
    c.execute_batch(
        "INSERT INTO tickets (id, store_id, subject, payload, opened_ms) VALUES ('t-1', 's1', 'x', '{}', 0);
         INSERT INTO ticket_replies (ticket_id, event_id, author, message, at_ms) VALUES ('t-1', 'e', 'a', 'm', 0);",
    )
    .unwrap();
    crate::db::migrations::migrate_list(&mut c, sqlite::MIGRATIONS, sqlite::MIGRATIONS.len())
        .unwrap();
    let t = sqlite::tickets(&c).unwrap();
    assert_eq!(
        (
            t[0]["store"].as_str(),
            t[0]["replies"].as_array().unwrap().len()
        ),
        (Some("s1"), 1)
    );
}

/// The PostgreSQL server the tests use: `STOREBOX_TEST_PG` (an URL whose role may create
/// databases), by default the one `scripts/test` sets up on this machine. Each test gets a fresh
/// database of its own, dropped at the end.
#[cfg(feature = "postgres")]
pub(crate) mod pgtest {
    pub const DEFAULT_URL: &str =
        "postgres://storebox_test:storebox_test@127.0.0.1:5432/storebox_test";

    pub struct TestDb {
        pub url: String,
        admin: String,
        name: String,
    }

    fn admin_url() -> String {
        std::env::var("STOREBOX_TEST_PG").unwrap_or_else(|_| DEFAULT_URL.to_string())
    }

    pub async fn admin() -> tokio_postgres::Client {
        let url = admin_url();
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is needed for the HQ tests and is not reachable at {url}: {e}; \
                     run scripts/test (it installs and starts it) or set STOREBOX_TEST_PG"
                )
            });
        tokio::spawn(conn);
        c
    }

    impl TestDb {
        pub async fn new() -> TestDb {
            let admin_url = admin_url();
            let name = format!("hqtest_{}", uuid::Uuid::new_v4().simple());
            admin()
                .await
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
            let base = admin_url
                .rsplit_once('/')
                .map_or(admin_url.as_str(), |(b, _)| b);
            TestDb {
                url: format!("{base}/{name}"),
                admin: admin_url.clone(),
                name,
            }
        }
    }

    /// Drops the database (connections still open are ended). Tests run on a multi-thread runtime
    /// so that the storage's tasks, aborted when it was dropped, finish meanwhile.
    impl Drop for TestDb {
        fn drop(&mut self) {
            let (admin, name) = (self.admin.clone(), self.name.clone());
            // A thread of its own: Drop may run inside or outside a runtime.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok((c, conn)) =
                        tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
                    {
                        tokio::spawn(conn);
                        let _ = c
                            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .await;
                    }
                })
            })
            .join();
        }
    }
}

#[cfg(feature = "postgres")]
mod pg {
    use super::pgtest::TestDb;
    use super::*;
    use crate::hq::storage::postgres::PgStorage;

    async fn open(db: &TestDb, retain: u64) -> PgStorage {
        PgStorage::connect(&db.url, retain).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pg_feed_snapshot() {
        let db = TestDb::new().await;
        feed_snapshot_and_retention(&open(&db, 0).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pg_retention() {
        let db = TestDb::new().await;
        retention(&open(&db, 2).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pg_ingest() {
        let db = TestDb::new().await;
        ingest_is_idempotent(&open(&db, 0).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pg_tickets() {
        let db = TestDb::new().await;
        tickets_are_per_store(&open(&db, 0).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_nodes_migrate_at_once_and_see_each_others_events() {
        let db = TestDb::new().await;
        let (a, b) = tokio::join!(open(&db, 0), open(&db, 0));
        a.add_store("s1", "", 0).await.unwrap();
        let mut changes = b.changes();
        let seqs = a
            .author(&Target::All { all: true }, vec![item("1")], 0)
            .await
            .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(2), async {
            while *changes.borrow_and_update() < seqs[0] {
                changes.changed().await.unwrap();
            }
        })
        .await
        .expect("node b learns of node a's event within 2 s");
    }

    /// 8 writers on 2 nodes author while a reader follows one store's feed: every event arrives
    /// exactly once, in seq order, none skipped although transactions commit out of order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_publishers_on_two_nodes_never_make_a_reader_skip() {
        let db = TestDb::new().await;
        let nodes = [Arc::new(open(&db, 0).await), Arc::new(open(&db, 0).await)];
        nodes[0].add_store("s1", "g", 0).await.unwrap();
        const WRITERS: usize = 8;
        const EACH: usize = 40;
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let node = nodes[w % 2].clone();
            writers.push(tokio::spawn(async move {
                for i in 0..EACH {
                    // Batches of 1-3 events, to all, the group or the store: all reach s1.
                    let target = match i % 3 {
                        0 => Target::All { all: true },
                        1 => Target::Groups {
                            groups: vec!["g".into()],
                        },
                        _ => Target::Stores {
                            stores: vec!["s1".into()],
                        },
                    };
                    let n = 1 + (i % 3);
                    let events = (0..n).map(|k| item(&format!("w{w}-{i}-{k}"))).collect();
                    node.author(&target, events, 0).await.unwrap();
                }
            }));
        }
        let expected: usize = WRITERS * (0..EACH).map(|i| 1 + (i % 3)).sum::<usize>();
        let reader = nodes[1].clone();
        let s1 = StoreIdent {
            id: "s1".into(),
            group: "g".into(),
        };
        let mut seen = Vec::new();
        let mut cursor = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while seen.len() < expected {
            assert!(
                std::time::Instant::now() < deadline,
                "reader stalled at {}",
                seen.len()
            );
            let page = reader.feed(&s1, cursor, 7).await.unwrap();
            for e in &page.events {
                seen.push(e.seq);
            }
            cursor = page.next;
        }
        for w in writers {
            w.await.unwrap();
        }
        let page = reader.feed(&s1, cursor, 1000).await.unwrap();
        assert!(page.events.is_empty(), "nothing beyond the expected events");
        let want: Vec<i64> = (1..=expected as i64).collect();
        assert_eq!(seen, want, "every event once, in order, no gap");
    }
}

// --- console: fleet and story ---

fn store_event(seq: i64, t: &str, payload: Value) -> StoreEvent {
    StoreEvent {
        seq,
        id: format!("e{seq}"),
        event_type: t.into(),
        class: "business".into(),
        payload: crate::proto::raw_payload(&payload.to_string()),
        at: "2026-01-01T00:00:00Z".into(),
    }
}

/// What the fleet view and the story read: the report's device and alert counts, the previous
/// outbox depth, checkouts of the last hour, recent quarantines, the last release state; the story
/// of one store with what HQ authored for it (directly, its group, all) and nothing for others.
pub(crate) async fn fleet_and_story(s: &dyn HqStorage) {
    const H: i64 = 3_600_000;
    s.add_store("s1", "pilot", 0).await.unwrap();
    s.add_store("s2", "north", 0).await.unwrap();
    let report = |outbox: i64| StoreReport {
        version: "1.0.0".into(),
        outbox_business: outbox,
        devices_total: Some(3),
        devices_offline: Some(1),
        open_alerts: Some(2),
        open_alerts_warning: Some(1),
        timezone: Some("Europe/Rome".into()),
        ..Default::default()
    };
    let push = |seq: i64, t: &str, p: Value, outbox: i64| PushBatch {
        report: report(outbox),
        events: vec![store_event(seq, t, p)],
    };
    s.ingest("s1", push(1, "checkout.completed", json!({}), 5), H)
        .await
        .unwrap();
    s.ingest(
        "s1",
        push(
            2,
            "device.alert",
            json!({"device": "lane-1", "code": "JAM", "severity": "warning", "state": "raised"}),
            7,
        ),
        2 * H,
    )
    .await
    .unwrap();
    s.author(
        &Target::Groups {
            groups: vec!["pilot".into()],
        },
        vec![ev("notice.post", json!({"message": "hello pilot"}))],
        2 * H + 10,
    )
    .await
    .unwrap();
    s.author(
        &Target::Groups {
            groups: vec!["north".into()],
        },
        vec![ev("notice.post", json!({"message": "not for s1"}))],
        2 * H + 20,
    )
    .await
    .unwrap();
    s.ingest(
        "s1",
        push(
            3,
            "release.status",
            json!({"state": "committed", "version": "1.1.0"}),
            9,
        ),
        2 * H + 30,
    )
    .await
    .unwrap();
    s.ingest(
        "s1",
        push(4, "checkout.completed", json!({}), 9),
        2 * H + 40,
    )
    .await
    .unwrap();
    s.ingest(
        "s1",
        push(5, "sync.quarantined", json!({"reason": "bad"}), 9),
        2 * H + 50,
    )
    .await
    .unwrap();

    // Sent late: it happened at 00:30 by the store's clock, and takes its place there.
    let mut late = store_event(
        6,
        "device.status",
        json!({"device": "lane-1", "online": false}),
    );
    late.at = "1970-01-01T00:30:00Z".into();
    s.ingest(
        "s1",
        PushBatch {
            report: report(9),
            events: vec![late],
        },
        2 * H + 60,
    )
    .await
    .unwrap();

    let extras = s.fleet_extras(2 * H, 2 * H).await.unwrap();
    let e1 = extras.iter().find(|e| e.id == "s1").unwrap();
    assert_eq!(
        (
            e1.devices_total,
            e1.devices_offline,
            e1.open_alerts,
            e1.open_alerts_warning
        ),
        (Some(3), Some(1), Some(2), Some(1))
    );
    assert_eq!(e1.timezone.as_deref(), Some("Europe/Rome"));
    assert_eq!(
        e1.outbox_prev,
        Some(9),
        "the depth of the report before the last"
    );
    assert_eq!(e1.checkouts_last_hour, 1, "one checkout since 2 h");
    assert_eq!(e1.quarantined_recent, 1);
    assert_eq!(e1.release.as_ref().unwrap()["state"], "committed");
    assert_eq!(e1.last_seen_ms, Some(2 * H + 60));
    let e2 = extras.iter().find(|e| e.id == "s2").unwrap();
    assert_eq!(
        (e2.last_seen_ms, e2.devices_total, e2.checkouts_last_hour),
        (None, None, 0)
    );

    let q = |from_ms, to_ms| crate::hq::story::SourceQuery {
        store: "s1".into(),
        from_ms,
        to_ms,
        limit: 100,
    };
    let src = s.story_sources(q(0, 3 * H)).await.unwrap().unwrap();
    assert_eq!((src.group.as_str(), src.registered_ms), ("pilot", 0));
    assert_eq!(src.first_push_ms, Some(H));
    let types: Vec<&str> = src.events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "device.status",
            "device.alert",
            "release.status",
            "sync.quarantined"
        ],
        "in the store's time"
    );
    assert_eq!(
        (src.events[0].at_ms, src.events[0].received_ms),
        (H / 2, 2 * H + 60)
    );
    assert_eq!(src.checkouts, vec![(H, 1), (2 * H, 1)]);
    assert_eq!(src.authored.len(), 1, "{:?}", src.authored);
    assert_eq!(src.authored[0].target, "group pilot");
    assert_eq!(src.authored[0].payload["message"], "hello pilot");
    // The window bounds every source.
    let later = s
        .story_sources(q(2 * H + 15, 3 * H))
        .await
        .unwrap()
        .unwrap();
    assert!(later.authored.is_empty());
    assert_eq!(later.events.len(), 2);
    assert_eq!(later.checkouts, vec![(2 * H, 1)]);
    assert!(s
        .story_sources(crate::hq::story::SourceQuery {
            store: "nope".into(),
            ..q(0, H)
        })
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn sqlite_fleet_and_story() {
    let (_d, s) = sqlite().await;
    fleet_and_story(s.as_ref()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_fleet_and_story() {
    let db = pgtest::TestDb::new().await;
    let s = postgres::PgStorage::connect(&db.url, 0).await.unwrap();
    fleet_and_story(&s).await;
}

/// The figure behind the fleet stream's re-read every 2 s: 1000 stores, each with a report and
/// 20 events (checkouts, an alert, a release state), read with their extras.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_fleet_of_a_thousand_stores_reads_quickly() {
    let (_d, s) = sqlite().await;
    let now = 10 * 3_600_000;
    for i in 0..1000 {
        let id = format!("s{i:04}");
        s.add_store(&id, "north", 0).await.unwrap();
        let events = (1..=20)
            .map(|seq| {
                let t = match seq {
                    1 => "device.alert",
                    2 => "release.status",
                    _ => "checkout.completed",
                };
                store_event(seq, t, json!({"state": "committed"}))
            })
            .collect();
        let batch = PushBatch {
            report: StoreReport {
                devices_total: Some(10),
                ..Default::default()
            },
            events,
        };
        s.ingest(&id, batch, now).await.unwrap();
    }
    let mut best = std::time::Duration::MAX;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let stores = s.list_stores().await.unwrap();
        let extras = s.fleet_extras(now - 3_600_000, now).await.unwrap();
        best = best.min(t.elapsed());
        assert_eq!((stores.len(), extras.len()), (1000, 1000));
        assert!(extras.iter().all(|e| e.checkouts_last_hour == 18));
    }
    println!("fleet of 1000 stores (20,000 events) read in {best:?}");
    assert!(best < std::time::Duration::from_secs(2), "{best:?}");
}
