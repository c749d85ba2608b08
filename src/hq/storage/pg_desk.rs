//! The PostgreSQL engine's support desk: the queue, one ticket, assignments, routing and teams.
//! Routing and team edits replace their table in one transaction.

use deadpool_postgres::GenericClient;
use serde_json::Value;

use super::pg;
use crate::db::ts_from_ms;
use crate::hq::desk::{
    self, ChangeRow, DeskDetail, DeskQuery, DeskTicket, LastReply, Notification, ReplyRow, Route,
    Team,
};
use crate::hq::error::{HqError, HqResult};

const COLUMNS: &str = "t.id, t.store_id, t.subject, t.category, t.status, t.team, t.assignee, t.opened_ms,
    (SELECT author FROM ticket_replies r WHERE r.store_id = t.store_id AND r.ticket_id = t.id ORDER BY r.id DESC LIMIT 1),
    (SELECT at_ms FROM ticket_replies r WHERE r.store_id = t.store_id AND r.ticket_id = t.id ORDER BY r.id DESC LIMIT 1)";

fn row(r: &tokio_postgres::Row) -> DeskTicket {
    let opened_ms: i64 = r.get(7);
    let last_author: Option<String> = r.get(8);
    let last_at: Option<i64> = r.get(9);
    DeskTicket {
        id: r.get(0),
        store: r.get(1),
        subject: r.get(2),
        category: r.get(3),
        status: r.get(4),
        team: r.get(5),
        assignee: r.get(6),
        opened_ms,
        opened_at: ts_from_ms(opened_ms).to_string(),
        age_seconds: 0,
        last_reply: last_author.zip(last_at).map(|(author, at)| LastReply {
            author,
            at: ts_from_ms(at).to_string(),
        }),
    }
}

pub async fn tickets(c: &impl GenericClient, q: &DeskQuery) -> HqResult<Vec<DeskTicket>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM tickets t
         WHERE ($1::text IS NULL OR t.status = $1) AND ($2::text IS NULL OR t.store_id = $2)
           AND ($3::text IS NULL OR t.category = $3) AND ($4::text IS NULL OR t.team = $4)
           AND ($5::text IS NULL OR ($5 = 'none' AND t.assignee IS NULL) OR t.assignee = $5)
           AND ($6::text IS NULL OR strpos(lower(t.subject), lower($6)) > 0
                OR strpos(lower(t.id), lower($6)) > 0)
         ORDER BY CASE t.status WHEN 'open' THEN 0 WHEN 'answered' THEN 1 ELSE 2 END,
                  t.opened_ms, t.store_id, t.id
         LIMIT $7 OFFSET $8"
    );
    let limit = q.limit.unwrap_or(50);
    let offset = q.offset.unwrap_or(0);
    let rows = c
        .query(
            &sql,
            &[
                &q.status,
                &q.store,
                &q.category,
                &q.team,
                &q.assignee,
                &q.q,
                &limit,
                &offset,
            ],
        )
        .await
        .map_err(pg)?;
    Ok(rows.iter().map(row).collect())
}

async fn ticket_store(c: &impl GenericClient, store: Option<&str>, id: &str) -> HqResult<String> {
    let stores: Vec<String> = c
        .query(
            "SELECT store_id FROM tickets WHERE id = $1 AND ($2::text IS NULL OR store_id = $2)",
            &[&id, &store],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    crate::hq::one_ticket_store(stores, store, id)
}

pub async fn ticket(c: &impl GenericClient, store: Option<&str>, id: &str) -> HqResult<DeskDetail> {
    let store = ticket_store(c, store, id).await?;
    let sql =
        format!("SELECT {COLUMNS}, t.payload FROM tickets t WHERE t.store_id = $1 AND t.id = $2");
    let r = c
        .query_opt(&sql, &[&store, &id])
        .await
        .map_err(pg)?
        .ok_or_else(|| HqError::not_found("unknown_ticket", format!("no ticket {id:?}")))?;
    let t = row(&r);
    let opened = serde_json::from_str(r.get::<_, &str>(10)).unwrap_or(Value::Null);
    let replies = c
        .query(
            "SELECT event_id, author, message, status, at_ms FROM ticket_replies
             WHERE store_id = $1 AND ticket_id = $2 ORDER BY id",
            &[&store, &id],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| ReplyRow {
            event_id: r.get(0),
            author: r.get(1),
            message: r.get(2),
            status: r.get(3),
            at_ms: r.get(4),
        })
        .collect();
    let changes = c
        .query(
            "SELECT actor, action, detail, at_ms FROM ticket_changes
             WHERE store_id = $1 AND ticket_id = $2 ORDER BY id",
            &[&store, &id],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| ChangeRow {
            actor: r.get(0),
            action: r.get(1),
            detail: r.get(2),
            at_ms: r.get(3),
        })
        .collect();
    Ok(desk::detail(t, opened, replies, changes))
}

async fn record(
    c: &impl GenericClient,
    store: &str,
    id: &str,
    actor: &str,
    action: &str,
    detail: Option<&str>,
    now_ms: i64,
) -> HqResult<()> {
    c.execute(
        "INSERT INTO ticket_changes (store_id, ticket_id, actor, action, detail, at_ms)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[&store, &id, &actor, &action, &detail, &now_ms],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

pub async fn assign(
    c: &impl GenericClient,
    store: Option<&str>,
    id: &str,
    user: Option<&str>,
    actor: &str,
    now_ms: i64,
) -> HqResult<()> {
    let store = ticket_store(c, store, id).await?;
    c.execute(
        "UPDATE tickets SET assignee = $3 WHERE store_id = $1 AND id = $2",
        &[&store, &id, &user],
    )
    .await
    .map_err(pg)?;
    let (action, detail) = match user {
        Some(u) => ("assigned", Some(u)),
        None => ("unassigned", None),
    };
    record(c, &store, id, actor, action, detail, now_ms).await
}

/// A ticket HQ has just received: its category, and the team its category routes to (recorded).
pub async fn route_new(
    c: &impl GenericClient,
    store: &str,
    id: &str,
    payload: &Value,
    now_ms: i64,
) -> HqResult<()> {
    let category = desk::category_of(payload);
    let team: Option<String> = c
        .query_opt(
            "SELECT team FROM desk_routing WHERE category = $1",
            &[&category],
        )
        .await
        .map_err(pg)?
        .map(|r| r.get(0));
    c.execute(
        "UPDATE tickets SET category = $3, team = $4 WHERE store_id = $1 AND id = $2",
        &[&store, &id, &category, &team],
    )
    .await
    .map_err(pg)?;
    if let Some(team) = &team {
        let detail = format!("to team {team} (category {category})");
        record(c, store, id, "routing", "routed", Some(&detail), now_ms).await?;
        let hook = c
            .query_opt(
                "SELECT on_call, webhook_url, email FROM desk_teams WHERE name = $1",
                &[team],
            )
            .await
            .map_err(pg)?
            .map(|r| {
                (
                    r.get::<_, Option<String>>(0),
                    r.get::<_, Option<String>>(1),
                    r.get::<_, Option<String>>(2),
                )
            });
        if let Some((Some(on_call), url, email)) = hook {
            let subject = payload.get("subject").and_then(Value::as_str).unwrap_or("");
            let body = desk::notification_payload(store, id, category, subject, team, &on_call)
                .to_string();
            for (channel, target) in [("webhook", url), ("email", email)] {
                let Some(target) = target else { continue };
                c.execute(
                    "INSERT INTO desk_notifications (store_id, ticket_id, team, channel, target, payload, next_ms, created_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                    &[&store, &id, team, &channel, &target, &body, &now_ms],
                )
                .await
                .map_err(pg)?;
            }
        }
    }
    Ok(())
}

const NOTIFICATION_COLUMNS: &str = "id, store_id, ticket_id, team, channel, target, payload, state, attempts, next_ms, last_error, sent_ms, created_ms";

fn notification(r: &tokio_postgres::Row) -> Notification {
    let ts = |ms: Option<i64>| ms.map(|m| ts_from_ms(m).to_string());
    let state: String = r.get(7);
    let next: i64 = r.get(9);
    Notification {
        id: r.get(0),
        store: r.get(1),
        ticket: r.get(2),
        team: r.get(3),
        channel: r.get(4),
        target: r.get(5),
        payload: serde_json::from_str(r.get::<_, &str>(6)).unwrap_or(Value::Null),
        next_at: if state == "pending" {
            ts(Some(next))
        } else {
            None
        },
        state,
        attempts: r.get(8),
        last_error: r.get(10),
        sent_at: ts(r.get(11)),
        created_at: ts_from_ms(r.get(12)).to_string(),
    }
}

/// Leases due notifications; `FOR UPDATE SKIP LOCKED` lets several nodes claim at once without
/// waiting on each other or getting the same row, and the lease keeps a row from being claimed
/// again until its attempt is recorded (or the lease runs out: the sender died).
pub async fn claim(
    c: &impl GenericClient,
    now_ms: i64,
    lease_ms: i64,
    max: i64,
) -> HqResult<Vec<Notification>> {
    let until = now_ms + lease_ms;
    Ok(c.query(
        &format!(
            "UPDATE desk_notifications SET claimed_until_ms = $2 WHERE id IN (
                   SELECT id FROM desk_notifications
                   WHERE state = 'pending' AND next_ms <= $1
                     AND (claimed_until_ms IS NULL OR claimed_until_ms < $1)
                   ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
                 RETURNING {NOTIFICATION_COLUMNS}"
        ),
        &[&now_ms, &until, &max],
    )
    .await
    .map_err(pg)?
    .iter()
    .map(notification)
    .collect())
}

pub async fn finish(
    c: &impl GenericClient,
    id: i64,
    attempts: i64,
    outcome: &Result<(), String>,
    next_ms: Option<i64>,
    now_ms: i64,
) -> HqResult<()> {
    match outcome {
        Ok(()) => c
            .execute(
                "UPDATE desk_notifications SET state = 'sent', attempts = $2, sent_ms = $3,
                   claimed_until_ms = NULL WHERE id = $1",
                &[&id, &attempts, &now_ms],
            )
            .await
            .map_err(pg)?,
        Err(e) => c
            .execute(
                "UPDATE desk_notifications SET state = CASE WHEN $4::bigint IS NULL THEN 'failed' ELSE 'pending' END,
                   attempts = $2, last_error = $3, next_ms = coalesce($4, next_ms), claimed_until_ms = NULL
                 WHERE id = $1",
                &[&id, &attempts, e, &next_ms],
            )
            .await
            .map_err(pg)?,
    };
    Ok(())
}

pub async fn notifications(c: &impl GenericClient, limit: i64) -> HqResult<Vec<Notification>> {
    Ok(c.query(
        &format!("SELECT {NOTIFICATION_COLUMNS} FROM desk_notifications ORDER BY id DESC LIMIT $1"),
        &[&limit],
    )
    .await
    .map_err(pg)?
    .iter()
    .map(notification)
    .collect())
}

pub async fn routing(c: &impl GenericClient) -> HqResult<Vec<Route>> {
    Ok(c.query(
        "SELECT category, team FROM desk_routing ORDER BY category",
        &[],
    )
    .await
    .map_err(pg)?
    .iter()
    .map(|r| Route {
        category: r.get(0),
        team: r.get(1),
    })
    .collect())
}

pub async fn put_routing(c: &impl GenericClient, routes: &[Route]) -> HqResult<()> {
    c.execute("DELETE FROM desk_routing", &[])
        .await
        .map_err(pg)?;
    for r in routes {
        c.execute(
            "INSERT INTO desk_routing (category, team) VALUES ($1, $2)",
            &[&r.category, &r.team],
        )
        .await
        .map_err(pg)?;
    }
    Ok(())
}

pub async fn teams(c: &impl GenericClient) -> HqResult<Vec<Team>> {
    let rows = c
        .query(
            "SELECT name, members, on_call, webhook_url, email FROM desk_teams ORDER BY name",
            &[],
        )
        .await
        .map_err(pg)?;
    rows.iter()
        .map(|r| {
            let name: String = r.get(0);
            let members = serde_json::from_str(r.get::<_, &str>(1))
                .map_err(|e| HqError::storage(format!("team {name}: stored members: {e}")))?;
            Ok(Team {
                name,
                members,
                on_call: r.get(2),
                webhook_url: r.get(3),
                email: r.get(4),
            })
        })
        .collect()
}

pub async fn put_teams(c: &impl GenericClient, teams: &[Team]) -> HqResult<()> {
    c.execute("DELETE FROM desk_teams", &[]).await.map_err(pg)?;
    for t in teams {
        let members = serde_json::to_string(&t.members).map_err(HqError::storage)?;
        c.execute(
            "INSERT INTO desk_teams (name, members, on_call, webhook_url, email)
             VALUES ($1, $2, $3, $4, $5)",
            &[&t.name, &members, &t.on_call, &t.webhook_url, &t.email],
        )
        .await
        .map_err(pg)?;
    }
    Ok(())
}
