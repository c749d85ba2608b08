//! The support desk on every engine: routing at ingest, queue filters, assignments and closing
//! recorded with who and when, routing and teams replaced whole.

use serde_json::json;

use super::tests::sqlite;
use super::*;
use crate::hq::desk::{DeskQuery, Route, Team};
use crate::hq::error::HqError;
use crate::proto::{StoreEvent, StoreReport};

async fn open_ticket(
    s: &dyn HqStorage,
    store: &str,
    seq: i64,
    id: &str,
    subject: &str,
    cat: &str,
    now_ms: i64,
) {
    let opened = StoreEvent {
        seq,
        id: format!("ev-{store}-{seq}"),
        event_type: "ticket.opened".into(),
        class: "business".into(),
        payload: crate::proto::raw_payload(
            &json!({"ticket_id": id, "subject": subject, "category": cat,
                    "diagnostics": {"version": "1.2.3"}})
            .to_string(),
        ),
        at: "2026-01-01T00:00:00Z".into(),
    };
    s.ingest(
        store,
        PushBatch {
            report: StoreReport::default(),
            events: vec![opened],
        },
        now_ms,
    )
    .await
    .unwrap();
}

fn q() -> DeskQuery {
    DeskQuery::default().checked().unwrap()
}

fn ids(list: &[crate::hq::desk::DeskTicket]) -> Vec<String> {
    list.iter()
        .map(|t| format!("{}/{}", t.store, t.id))
        .collect()
}

pub(crate) async fn desk_works(s: &dyn HqStorage) {
    s.add_store("s1", "north", 0).await.unwrap();
    s.add_store("s2", "south", 0).await.unwrap();
    s.put_desk_teams(vec![Team {
        name: "scales".into(),
        members: vec!["ann".into(), "bob".into()],
        on_call: Some("ann".into()),
        webhook_url: Some("http://127.0.0.1:9/hook".into()),
        email: None,
    }])
    .await
    .unwrap();
    s.put_desk_routing(vec![Route {
        category: "scale".into(),
        team: "scales".into(),
    }])
    .await
    .unwrap();
    assert_eq!(s.desk_teams().await.unwrap()[0].members, vec!["ann", "bob"]);
    open_ticket(s, "s1", 1, "t-1", "Scale shows Err 4", "scale", 1_000).await;
    open_ticket(s, "s2", 1, "t-1", "Printer jams", "printer", 2_000).await;
    open_ticket(s, "s2", 2, "t-2", "Unknown category", "toaster", 3_000).await;
    // The same ticket pushed again (a retried batch under a new seq) is not routed twice.
    open_ticket(s, "s1", 2, "t-1", "Scale shows Err 4", "scale", 4_000).await;

    let all = s.desk_tickets(&q()).await.unwrap();
    assert_eq!(
        ids(&all),
        vec!["s1/t-1", "s2/t-1", "s2/t-2"],
        "oldest open first"
    );
    assert_eq!(all[0].team.as_deref(), Some("scales"), "routed by category");
    assert_eq!(all[0].category, "scale");
    assert_eq!(all[1].team, None, "no rule for printer");
    assert_eq!(
        all[2].category, "other",
        "an unknown category is filed as other"
    );

    let f = |f: fn(&mut DeskQuery)| {
        let mut q = q();
        f(&mut q);
        q
    };
    let by = |q: DeskQuery| async move { ids(&s.desk_tickets(&q).await.unwrap()) };
    assert_eq!(
        by(f(|q| q.store = Some("s2".into()))).await,
        vec!["s2/t-1", "s2/t-2"]
    );
    assert_eq!(
        by(f(|q| q.category = Some("scale".into()))).await,
        vec!["s1/t-1"]
    );
    assert_eq!(
        by(f(|q| q.team = Some("scales".into()))).await,
        vec!["s1/t-1"]
    );
    assert_eq!(
        by(f(|q| q.q = Some("PRINTER".into()))).await,
        vec!["s2/t-1"]
    );
    assert_eq!(by(f(|q| q.limit = Some(1))).await, vec!["s1/t-1"]);
    assert_eq!(
        by(f(|q| {
            q.limit = Some(1);
            q.offset = Some(1)
        }))
        .await,
        vec!["s2/t-1"]
    );

    // Assigning needs the store when the id is ambiguous, and is recorded.
    let e = s
        .desk_assign(None, "t-1", Some("bob"), "ann", 5_000)
        .await
        .unwrap_err();
    assert!(matches!(e, HqError::Conflict(_)), "{e:?}");
    s.desk_assign(Some("s1"), "t-1", Some("bob"), "ann", 5_000)
        .await
        .unwrap();
    assert_eq!(
        by(f(|q| q.assignee = Some("bob".into()))).await,
        vec!["s1/t-1"]
    );
    assert_eq!(
        by(f(|q| q.assignee = Some("none".into()))).await,
        vec!["s2/t-1", "s2/t-2"]
    );
    assert!(matches!(
        s.desk_assign(Some("s9"), "t-1", None, "ann", 5_000).await,
        Err(HqError::NotFound { .. })
    ));

    // A reply, then closing (a reply with status closed): the queue and the record show both.
    let reply = |status: Option<&str>| TicketReply {
        event_id: crate::hq::new_event_id("reply"),
        author: "bob".into(),
        message: "Recalibrate it".into(),
        status: status.map(str::to_string),
    };
    s.reply(Some("s1"), "t-1", reply(None), 6_000)
        .await
        .unwrap();
    let t = &s
        .desk_tickets(&f(|q| q.store = Some("s1".into())))
        .await
        .unwrap()[0];
    assert_eq!(t.status, "answered");
    assert_eq!(t.last_reply.as_ref().unwrap().author, "bob");
    s.reply(Some("s1"), "t-1", reply(Some("closed")), 7_000)
        .await
        .unwrap();
    assert_eq!(
        by(f(|q| q.status = Some("closed".into()))).await,
        vec!["s1/t-1"]
    );
    assert_eq!(
        ids(&s.desk_tickets(&q()).await.unwrap()),
        vec!["s2/t-1", "s2/t-2", "s1/t-1"],
        "closed tickets sink to the end"
    );

    let d = s.desk_ticket(Some("s1"), "t-1").await.unwrap();
    assert_eq!(d.opened["diagnostics"]["version"], "1.2.3");
    assert_eq!(d.replies.len(), 2);
    let record: Vec<(&str, &str)> = d
        .changes
        .iter()
        .map(|c| (c.actor.as_str(), c.action.as_str()))
        .collect();
    assert_eq!(
        record,
        vec![
            ("routing", "routed"),
            ("ann", "assigned"),
            ("bob", "replied"),
            ("bob", "closed")
        ]
    );
    assert_eq!(d.changes[1].detail.as_deref(), Some("bob"));
    assert_eq!(d.changes[1].at, "1970-01-01T00:00:05Z");
    assert!(matches!(
        s.desk_ticket(None, "nope").await,
        Err(HqError::NotFound { .. })
    ));

    // Routing and teams are replaced whole.
    s.put_desk_routing(vec![]).await.unwrap();
    assert!(s.desk_routing().await.unwrap().is_empty());
    open_ticket(s, "s1", 3, "t-3", "Scale again", "scale", 8_000).await;
    let d = s.desk_ticket(Some("s1"), "t-3").await.unwrap();
    assert_eq!((d.ticket.team, d.changes.len()), (None, 0));
}

/// A routed ticket's webhook notification: claimed by exactly one of two claimers (two nodes on
/// PostgreSQL), a failure recorded and retried later, then sent; given up after the last attempt.
pub(crate) async fn notifications_are_claimed_once(a: &dyn HqStorage, b: &dyn HqStorage) {
    a.add_store("s1", "", 0).await.unwrap();
    a.put_desk_teams(vec![
        Team {
            name: "scales".into(),
            members: vec!["ann".into()],
            on_call: Some("ann".into()),
            webhook_url: Some("http://127.0.0.1:9/hook".into()),
            email: None,
        },
        Team {
            name: "quiet".into(),
            members: vec![],
            on_call: None,
            webhook_url: Some("http://127.0.0.1:9/nobody".into()),
            email: None,
        },
    ])
    .await
    .unwrap();
    a.put_desk_routing(vec![
        Route {
            category: "scale".into(),
            team: "scales".into(),
        },
        Route {
            category: "fridge".into(),
            team: "quiet".into(),
        },
    ])
    .await
    .unwrap();
    open_ticket(a, "s1", 1, "t-1", "Scale shows Err 4", "scale", 1_000).await;
    open_ticket(a, "s1", 2, "t-2", "Fridge warm", "fridge", 1_000).await;
    let all = a.notifications(100).await.unwrap();
    assert_eq!(all.len(), 1, "no on-call member, no notification: {all:?}");
    assert_eq!(all[0].payload["ticket"], "t-1");
    assert_eq!(all[0].payload["url"], "/#/desk/s1/t-1");
    assert_eq!((all[0].state.as_str(), all[0].attempts), ("pending", 0));

    // Many claim rounds at once from both: the notification is handed out once.
    let mut claims = Vec::new();
    for i in 0..8 {
        let s = if i % 2 == 0 { a } else { b };
        claims.push(s.claim_notifications(2_000, 60_000, 10));
    }
    let got: usize = futures_util::future::join_all(claims)
        .await
        .into_iter()
        .map(|r| r.unwrap().len())
        .sum();
    assert_eq!(got, 1, "claimed exactly once");
    assert!(
        b.claim_notifications(3_000, 60_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );

    let id = all[0].id;
    b.finish_notification(
        id,
        1,
        Err("the webhook answered 500".into()),
        Some(30_000),
        3_000,
    )
    .await
    .unwrap();
    assert!(
        a.claim_notifications(29_999, 60_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    let n = a.claim_notifications(30_000, 60_000, 10).await.unwrap();
    assert_eq!((n.len(), n[0].attempts), (1, 1));
    a.finish_notification(id, 2, Ok(()), None, 31_000)
        .await
        .unwrap();
    let n = &b.notifications(10).await.unwrap()[0];
    assert_eq!((n.state.as_str(), n.attempts), ("sent", 2));
    assert_eq!(n.last_error.as_deref(), Some("the webhook answered 500"));
    assert_eq!(n.sent_at.as_deref(), Some("1970-01-01T00:00:31Z"));
    assert!(a
        .claim_notifications(99_000, 60_000, 10)
        .await
        .unwrap()
        .is_empty());

    // The last attempt failing gives it up.
    open_ticket(a, "s1", 3, "t-3", "Scale again", "scale", 40_000).await;
    let n = a.claim_notifications(40_000, 60_000, 10).await.unwrap();
    a.finish_notification(n[0].id, 8, Err("refused".into()), None, 41_000)
        .await
        .unwrap();
    let n = &a.notifications(1).await.unwrap()[0];
    assert_eq!((n.state.as_str(), n.next_at.as_deref()), ("failed", None));
    assert!(a
        .claim_notifications(1 << 40, 60_000, 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn sqlite_notifications() {
    let (_d, s) = sqlite().await;
    notifications_are_claimed_once(s.as_ref(), s.as_ref()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_notifications_two_nodes() {
    let db = super::tests::pgtest::TestDb::new().await;
    let a = postgres::PgStorage::connect(&db.url, 0).await.unwrap();
    let b = postgres::PgStorage::connect(&db.url, 0).await.unwrap();
    notifications_are_claimed_once(&a, &b).await;
}

#[tokio::test]
async fn sqlite_desk() {
    let (_d, s) = sqlite().await;
    desk_works(s.as_ref()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_desk() {
    let db = super::tests::pgtest::TestDb::new().await;
    let s = postgres::PgStorage::connect(&db.url, 0).await.unwrap();
    desk_works(&s).await;
}
