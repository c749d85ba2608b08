//! The SQLite engine's support desk: the queue, one ticket, assignments, routing and teams.

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde_json::Value;

use crate::db::{ts_from_ms, DbResult};
use crate::hq::desk::{
    self, ChangeRow, DeskDetail, DeskQuery, DeskTicket, LastReply, Notification, ReplyRow, Route,
    Team,
};
use crate::hq::error::{HqError, HqResult};

const COLUMNS: &str = "t.id, t.store_id, t.subject, t.category, t.status, t.team, t.assignee, t.opened_ms,
    (SELECT author FROM ticket_replies r WHERE r.store_id = t.store_id AND r.ticket_id = t.id ORDER BY r.id DESC LIMIT 1),
    (SELECT at_ms FROM ticket_replies r WHERE r.store_id = t.store_id AND r.ticket_id = t.id ORDER BY r.id DESC LIMIT 1)";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeskTicket> {
    let opened_ms: i64 = r.get(7)?;
    let last_author: Option<String> = r.get(8)?;
    let last_at: Option<i64> = r.get(9)?;
    Ok(DeskTicket {
        id: r.get(0)?,
        store: r.get(1)?,
        subject: r.get(2)?,
        category: r.get(3)?,
        status: r.get(4)?,
        team: r.get(5)?,
        assignee: r.get(6)?,
        opened_ms,
        opened_at: ts_from_ms(opened_ms).to_string(),
        age_seconds: 0,
        last_reply: last_author.zip(last_at).map(|(author, at)| LastReply {
            author,
            at: ts_from_ms(at).to_string(),
        }),
    })
}

pub fn tickets(c: &Connection, q: &DeskQuery) -> DbResult<Vec<DeskTicket>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM tickets t
         WHERE (?1 IS NULL OR t.status = ?1) AND (?2 IS NULL OR t.store_id = ?2)
           AND (?3 IS NULL OR t.category = ?3) AND (?4 IS NULL OR t.team = ?4)
           AND (?5 IS NULL OR (?5 = 'none' AND t.assignee IS NULL) OR t.assignee = ?5)
           AND (?6 IS NULL OR instr(lower(t.subject), lower(?6)) > 0 OR instr(lower(t.id), lower(?6)) > 0)
         ORDER BY CASE t.status WHEN 'open' THEN 0 WHEN 'answered' THEN 1 ELSE 2 END,
                  t.opened_ms, t.store_id, t.id
         LIMIT ?7 OFFSET ?8"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![
            q.status,
            q.store,
            q.category,
            q.team,
            q.assignee,
            q.q,
            q.limit.unwrap_or(50),
            q.offset.unwrap_or(0)
        ],
        row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn ticket_store(c: &Connection, store: Option<&str>, id: &str) -> HqResult<String> {
    let stores: Vec<String> = c
        .prepare("SELECT store_id FROM tickets WHERE id = ?1 AND (?2 IS NULL OR store_id = ?2)")?
        .query_map(params![id, store], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    crate::hq::one_ticket_store(stores, store, id)
}

pub fn ticket(c: &Connection, store: Option<&str>, id: &str) -> HqResult<DeskDetail> {
    let store = ticket_store(c, store, id)?;
    let sql =
        format!("SELECT {COLUMNS}, t.payload FROM tickets t WHERE t.store_id = ?1 AND t.id = ?2");
    let (t, payload) = c
        .query_row(&sql, params![store, id], |r| {
            Ok((row(r)?, r.get::<_, String>(10)?))
        })
        .optional()?
        .ok_or_else(|| HqError::not_found("unknown_ticket", format!("no ticket {id:?}")))?;
    let replies = c
        .prepare(
            "SELECT event_id, author, message, status, at_ms FROM ticket_replies
             WHERE store_id = ?1 AND ticket_id = ?2 ORDER BY id",
        )?
        .query_map(params![store, id], |r| {
            Ok(ReplyRow {
                event_id: r.get(0)?,
                author: r.get(1)?,
                message: r.get(2)?,
                status: r.get(3)?,
                at_ms: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let changes = c
        .prepare(
            "SELECT actor, action, detail, at_ms FROM ticket_changes
             WHERE store_id = ?1 AND ticket_id = ?2 ORDER BY id",
        )?
        .query_map(params![store, id], |r| {
            Ok(ChangeRow {
                actor: r.get(0)?,
                action: r.get(1)?,
                detail: r.get(2)?,
                at_ms: r.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let opened = serde_json::from_str(&payload).unwrap_or(Value::Null);
    Ok(desk::detail(t, opened, replies, changes))
}

pub fn assign(
    tx: &Transaction<'_>,
    store: Option<&str>,
    id: &str,
    user: Option<&str>,
    actor: &str,
    now_ms: i64,
) -> HqResult<()> {
    let store = ticket_store(tx, store, id)?;
    tx.execute(
        "UPDATE tickets SET assignee = ?3 WHERE store_id = ?1 AND id = ?2",
        params![store, id, user],
    )?;
    let (action, detail) = match user {
        Some(u) => ("assigned", Some(u)),
        None => ("unassigned", None),
    };
    record(tx, &store, id, actor, action, detail, now_ms)?;
    Ok(())
}

fn record(
    tx: &Connection,
    store: &str,
    id: &str,
    actor: &str,
    action: &str,
    detail: Option<&str>,
    now_ms: i64,
) -> DbResult<()> {
    tx.prepare_cached(
        "INSERT INTO ticket_changes (store_id, ticket_id, actor, action, detail, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![store, id, actor, action, detail, now_ms])?;
    Ok(())
}

/// A ticket HQ has just received: its category, and the team its category routes to (recorded).
pub fn route_new(
    tx: &Transaction<'_>,
    store: &str,
    id: &str,
    payload: &Value,
    now_ms: i64,
) -> DbResult<()> {
    let category = desk::category_of(payload);
    let team: Option<String> = tx
        .prepare_cached("SELECT team FROM desk_routing WHERE category = ?1")?
        .query_row([category], |r| r.get(0))
        .optional()?;
    tx.prepare_cached(
        "UPDATE tickets SET category = ?3, team = ?4 WHERE store_id = ?1 AND id = ?2",
    )?
    .execute(params![store, id, category, team])?;
    if let Some(team) = &team {
        record(
            tx,
            store,
            id,
            "routing",
            "routed",
            Some(&format!("to team {team} (category {category})")),
            now_ms,
        )?;
        type Hook = (Option<String>, Option<String>, Option<String>);
        let hook: Option<Hook> = tx
            .prepare_cached("SELECT on_call, webhook_url, email FROM desk_teams WHERE name = ?1")?
            .query_row([team], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        if let Some((Some(on_call), url, email)) = hook {
            let subject = payload.get("subject").and_then(Value::as_str).unwrap_or("");
            let body = desk::notification_payload(store, id, category, subject, team, &on_call);
            for (channel, target) in [("webhook", url), ("email", email)] {
                let Some(target) = target else { continue };
                tx.execute(
                    "INSERT INTO desk_notifications (store_id, ticket_id, team, channel, target, payload, next_ms, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                    params![store, id, team, channel, target, body.to_string(), now_ms],
                )?;
            }
        }
    }
    Ok(())
}

fn notification(r: &rusqlite::Row<'_>) -> rusqlite::Result<Notification> {
    let ts = |ms: Option<i64>| ms.map(|m| ts_from_ms(m).to_string());
    let payload: String = r.get(6)?;
    let state: String = r.get(7)?;
    let next: Option<i64> = r.get(9)?;
    Ok(Notification {
        id: r.get(0)?,
        store: r.get(1)?,
        ticket: r.get(2)?,
        team: r.get(3)?,
        channel: r.get(4)?,
        target: r.get(5)?,
        payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
        next_at: if state == "pending" { ts(next) } else { None },
        state,
        attempts: r.get(8)?,
        last_error: r.get(10)?,
        sent_at: ts(r.get(11)?),
        created_at: ts_from_ms(r.get(12)?).to_string(),
    })
}

const NOTIFICATION_COLUMNS: &str = "id, store_id, ticket_id, team, channel, target, payload, state, attempts, next_ms, last_error, sent_ms, created_ms";

/// One writer: selecting and leasing in one transaction is enough for a single HQ process.
pub fn claim(
    tx: &Transaction<'_>,
    now_ms: i64,
    lease_ms: i64,
    max: i64,
) -> DbResult<Vec<Notification>> {
    let list: Vec<Notification> = tx
        .prepare(&format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM desk_notifications
             WHERE state = 'pending' AND next_ms <= ?1
               AND (claimed_until_ms IS NULL OR claimed_until_ms < ?1)
             ORDER BY id LIMIT ?2"
        ))?
        .query_map(params![now_ms, max], notification)?
        .collect::<Result<_, _>>()?;
    for n in &list {
        tx.execute(
            "UPDATE desk_notifications SET claimed_until_ms = ?2 WHERE id = ?1",
            params![n.id, now_ms + lease_ms],
        )?;
    }
    Ok(list)
}

pub fn finish(
    c: &Connection,
    id: i64,
    attempts: i64,
    outcome: &Result<(), String>,
    next_ms: Option<i64>,
    now_ms: i64,
) -> DbResult<()> {
    match outcome {
        Ok(()) => c.execute(
            "UPDATE desk_notifications SET state = 'sent', attempts = ?2, sent_ms = ?3,
               claimed_until_ms = NULL WHERE id = ?1",
            params![id, attempts, now_ms],
        )?,
        Err(e) => c.execute(
            "UPDATE desk_notifications SET state = CASE WHEN ?4 IS NULL THEN 'failed' ELSE 'pending' END,
               attempts = ?2, last_error = ?3, next_ms = coalesce(?4, next_ms), claimed_until_ms = NULL
             WHERE id = ?1",
            params![id, attempts, e, next_ms],
        )?,
    };
    Ok(())
}

pub fn notifications(c: &Connection, limit: i64) -> DbResult<Vec<Notification>> {
    Ok(c.prepare(&format!(
        "SELECT {NOTIFICATION_COLUMNS} FROM desk_notifications ORDER BY id DESC LIMIT ?1"
    ))?
    .query_map([limit], notification)?
    .collect::<Result<_, _>>()?)
}

pub fn routing(c: &Connection) -> DbResult<Vec<Route>> {
    let mut stmt = c.prepare("SELECT category, team FROM desk_routing ORDER BY category")?;
    let rows = stmt.query_map([], |r| {
        Ok(Route {
            category: r.get(0)?,
            team: r.get(1)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn put_routing(tx: &Transaction<'_>, routes: &[Route]) -> DbResult<()> {
    tx.execute("DELETE FROM desk_routing", [])?;
    for r in routes {
        tx.execute(
            "INSERT INTO desk_routing (category, team) VALUES (?1, ?2)",
            params![r.category, r.team],
        )?;
    }
    Ok(())
}

pub fn teams(c: &Connection) -> HqResult<Vec<Team>> {
    let mut stmt = c.prepare(
        "SELECT name, members, on_call, webhook_url, email FROM desk_teams ORDER BY name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<String>>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (name, members, on_call, webhook_url, email) = row?;
        let members = serde_json::from_str(&members)
            .map_err(|e| HqError::storage(format!("team {name}: stored members: {e}")))?;
        out.push(Team {
            name,
            members,
            on_call,
            webhook_url,
            email,
        });
    }
    Ok(out)
}

pub fn put_teams(tx: &Transaction<'_>, teams: &[Team]) -> HqResult<()> {
    tx.execute("DELETE FROM desk_teams", [])?;
    for t in teams {
        let members = serde_json::to_string(&t.members).map_err(HqError::storage)?;
        tx.execute(
            "INSERT INTO desk_teams (name, members, on_call, webhook_url, email) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![t.name, members, t.on_call, t.webhook_url, t.email],
        )?;
    }
    Ok(())
}
