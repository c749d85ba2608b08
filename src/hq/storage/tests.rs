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
        &validate("release.assign", &json!({"version": "1"})).unwrap(),
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
