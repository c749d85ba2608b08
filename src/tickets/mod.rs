//! Support tickets: when something in the store is wrong, staff open a ticket here; it is stored
//! locally, then queued for HQ as `ticket.opened` (in the same transaction) with a diagnostic
//! summary of the box, so support sees the store's state at the moment of the report. HQ answers
//! with `ticket.update` events, which [`apply_update`] stores as replies.

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::db::DbResult;
use crate::outbox;

pub mod guides;
pub use crate::proto::events::TicketUpdate;

pub const SUBJECT_MAX: usize = 200;

fn other() -> String {
    "other".into()
}
pub const DESCRIPTION_MAX: usize = 5000;

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTicket {
    /// One line: what is wrong (1–200 characters, not only spaces).
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub subject: String,
    /// What happened, what was tried (1–5000 characters, not only spaces).
    #[schema(min_length = 1, max_length = 5000, pattern = r"\S")]
    pub description: String,
    /// The device concerned, if any (must be a provisioned device).
    #[serde(default)]
    pub device_id: Option<String>,
    /// What the ticket is about; HQ routes tickets to a team by it. Default `other`.
    #[serde(default = "other")]
    #[schema(value_type = String, example = "fridge", pattern = "^(pos|scale|printer|fridge|network|prices|other)$")]
    pub category: String,
    /// Attach the whole support bundle (`GET /api/v1/diag`) to the ticket's diagnostics, under
    /// `bundle`. It carries no secret.
    #[serde(default)]
    pub attach_bundle: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Reply {
    pub at: String,
    pub author: String,
    pub message: String,
    /// The ticket status HQ set with this reply, if it changed it.
    pub status: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Ticket {
    pub id: String,
    pub subject: String,
    pub description: String,
    pub device_id: Option<String>,
    /// pos, scale, printer, fridge, network, prices or other
    pub category: String,
    /// open, answered or closed
    pub status: String,
    pub opened_at: String,
    pub opened_by: String,
    pub updated_at: String,
    /// What the box attached when the ticket was opened (secrets redacted).
    #[schema(value_type = Object)]
    pub diagnostics: Value,
    pub replies: Vec<Reply>,
}

/// What is wrong with a new ticket; the message names the field.
#[derive(Debug, Clone, PartialEq)]
pub enum Invalid {
    Field(String),
    UnknownDevice(String),
}

/// White space as the OpenAPI document's `\S` pattern means it (ECMAScript's `\s`): a text
/// made only of these is empty.
fn blank(s: &str) -> bool {
    s.chars().all(|c| {
        matches!(
            c,
            '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
                ..='\u{200a}'
                    | '\u{2028}'
                    | '\u{2029}'
                    | '\u{202f}'
                    | '\u{205f}'
                    | '\u{3000}'
                    | '\u{feff}'
        )
    })
}

/// Checks a new ticket.
pub fn validate(conn: &Connection, t: &NewTicket) -> DbResult<Result<(), Invalid>> {
    let field = |m: String| Ok(Err(Invalid::Field(m)));
    // As the OpenAPI schema says: at most this many characters as sent, not only white space.
    if blank(&t.subject) || t.subject.chars().count() > SUBJECT_MAX {
        return field(format!("subject: must be 1 to {SUBJECT_MAX} characters"));
    }
    if blank(&t.description) || t.description.chars().count() > DESCRIPTION_MAX {
        return field(format!(
            "description: must be 1 to {DESCRIPTION_MAX} characters"
        ));
    }
    if !crate::proto::events::TICKET_CATEGORIES.contains(&t.category.as_str()) {
        return field(format!(
            "category: {:?} is not one of {}",
            t.category,
            crate::proto::events::TICKET_CATEGORIES.join(", ")
        ));
    }
    if let Some(d) = &t.device_id {
        let known: bool = conn
            .query_row("SELECT 1 FROM devices WHERE id = ?1", [d], |_| Ok(true))
            .optional()?
            .unwrap_or(false);
        if !known {
            return Ok(Err(Invalid::UnknownDevice(format!(
                "device_id: no device {d:?} is provisioned"
            ))));
        }
    }
    Ok(Ok(()))
}

fn iso(ms: i64) -> String {
    crate::db::ts_from_ms(ms).to_string()
}

/// Stores a validated ticket and queues `ticket.opened` for HQ in the caller's transaction.
pub fn open(
    conn: &Connection,
    t: &NewTicket,
    opened_by: &str,
    diagnostics: Value,
    now_ms: i64,
) -> DbResult<Ticket> {
    let id = outbox::new_id("tk");
    let ticket = Ticket {
        id: id.clone(),
        subject: t.subject.trim().to_string(),
        description: t.description.trim().to_string(),
        device_id: t.device_id.clone(),
        category: t.category.clone(),
        status: "open".into(),
        opened_at: iso(now_ms),
        opened_by: opened_by.to_string(),
        updated_at: iso(now_ms),
        diagnostics,
        replies: Vec::new(),
    };
    conn.execute(
        "INSERT INTO tickets (id, subject, description, device_id, status, opened_ms, opened_by, diagnostics, updated_ms, category)
         VALUES (?1, ?2, ?3, ?4, 'open', ?5, ?6, ?7, ?5, ?8)",
        params![
            id,
            ticket.subject,
            ticket.description,
            ticket.device_id,
            now_ms,
            opened_by,
            ticket.diagnostics.to_string(),
            ticket.category
        ],
    )?;
    let payload = serde_json::json!({
        "ticket_id": ticket.id,
        "subject": ticket.subject,
        "description": ticket.description,
        "device_id": ticket.device_id,
        "category": ticket.category,
        "opened_at": ticket.opened_at,
        "opened_by": ticket.opened_by,
        "diagnostics": ticket.diagnostics,
    });
    outbox::enqueue(
        conn,
        &format!("ticket-{id}"),
        crate::proto::StoreEventType::TicketOpened,
        outbox::Class::Business,
        &payload.to_string(),
        now_ms,
    )?;
    Ok(ticket)
}

fn replies(conn: &Connection, ticket_id: &str) -> DbResult<Vec<Reply>> {
    let mut stmt = conn.prepare_cached(
        "SELECT at_ms, author, message, status FROM ticket_replies WHERE ticket_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([ticket_id], |r| {
        Ok(Reply {
            at: iso(r.get(0)?),
            author: r.get(1)?,
            message: r.get(2)?,
            status: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn row_to_ticket(r: &rusqlite::Row<'_>) -> rusqlite::Result<Ticket> {
    let diagnostics: String = r.get(7)?;
    Ok(Ticket {
        id: r.get(0)?,
        subject: r.get(1)?,
        description: r.get(2)?,
        device_id: r.get(3)?,
        category: r.get(9)?,
        status: r.get(4)?,
        opened_at: iso(r.get(5)?),
        opened_by: r.get(6)?,
        diagnostics: serde_json::from_str(&diagnostics).unwrap_or(Value::Null),
        updated_at: iso(r.get(8)?),
        replies: Vec::new(),
    })
}

const COLUMNS: &str =
    "id, subject, description, device_id, status, opened_ms, opened_by, diagnostics, updated_ms, category";

/// Tickets, newest first, with their replies.
pub fn list(conn: &Connection, limit: i64) -> DbResult<Vec<Ticket>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM tickets ORDER BY opened_ms DESC, id LIMIT ?1"
    ))?;
    let mut tickets = stmt
        .query_map([limit], row_to_ticket)?
        .collect::<Result<Vec<_>, _>>()?;
    for t in &mut tickets {
        t.replies = replies(conn, &t.id)?;
    }
    Ok(tickets)
}

pub fn get(conn: &Connection, id: &str) -> DbResult<Option<Ticket>> {
    let t = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM tickets WHERE id = ?1"),
            [id],
            row_to_ticket,
        )
        .optional()?;
    match t {
        Some(mut t) => {
            t.replies = replies(conn, &t.id)?;
            Ok(Some(t))
        }
        None => Ok(None),
    }
}

/// Applies an HQ `ticket.update` (already validated, [`crate::proto::validate`]) carried by event
/// `event_id`. Idempotent on the event id. `Err` says why this store cannot apply it (the event is
/// then quarantined by the caller).
pub fn apply_update(
    conn: &Connection,
    event_id: &str,
    u: &TicketUpdate,
    now_ms: i64,
) -> DbResult<Result<(), String>> {
    let exists: bool = conn
        .query_row(
            "SELECT 1 FROM tickets WHERE id = ?1",
            [&u.ticket_id],
            |_| Ok(true),
        )
        .optional()?
        .unwrap_or(false);
    if !exists {
        return Ok(Err(format!(
            "ticket.update ticket_id: no ticket {:?} at this store",
            u.ticket_id
        )));
    }
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO ticket_replies (ticket_id, event_id, at_ms, author, message, status)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![u.ticket_id, event_id, now_ms, u.author, u.message, u.status],
    )?;
    if inserted == 1 {
        let status = u.status.clone().unwrap_or_else(|| "answered".into());
        conn.execute(
            "UPDATE tickets SET status = ?2, updated_ms = ?3 WHERE id = ?1",
            params![u.ticket_id, status, now_ms],
        )?;
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        crate::db::migrations::migrate(&mut c, crate::db::migrations::MIGRATIONS.len()).unwrap();
        c.execute(
            "INSERT INTO devices (id, kind, secret_hash, created_ms) VALUES ('printer-1', 'printer', 'x', 0)",
            [],
        )
        .unwrap();
        c
    }

    fn new(subject: &str, device: Option<&str>) -> NewTicket {
        NewTicket {
            subject: subject.into(),
            description: "Paper jams on every receipt".into(),
            device_id: device.map(String::from),
            category: "printer".into(),
            attach_bundle: false,
        }
    }

    #[test]
    fn validation_names_the_field() {
        let c = db();
        let field = |r: Result<(), Invalid>| match r {
            Err(Invalid::Field(m)) => m,
            other => panic!("{other:?}"),
        };
        let e = field(validate(&c, &new("  ", None)).unwrap());
        assert!(e.starts_with("subject:"), "{e}");
        // White space as the schema's \S means it: U+0085 is not (ECMAScript), U+FEFF is.
        assert!(validate(&c, &new("\u{85}", None)).unwrap().is_ok());
        assert!(validate(&c, &new("\u{feff}\u{3000}", None))
            .unwrap()
            .is_err());
        let e = validate(&c, &new("x", Some("lane-9"))).unwrap();
        assert!(
            matches!(&e, Err(Invalid::UnknownDevice(m)) if m.starts_with("device_id:") && m.contains("lane-9")),
            "{e:?}"
        );
        let mut t = new("x", None);
        t.description = "d".repeat(DESCRIPTION_MAX + 1);
        assert!(field(validate(&c, &t).unwrap()).starts_with("description:"));
        let mut t = new("x", None);
        t.category = "coffee".into();
        let e = field(validate(&c, &t).unwrap());
        assert!(e.starts_with("category:") && e.contains("coffee"), "{e}");
        assert!(validate(&c, &new("Printer", Some("printer-1")))
            .unwrap()
            .is_ok());
    }

    #[test]
    fn opening_queues_ticket_opened_and_replies_apply_once() {
        let c = db();
        let t = open(
            &c,
            &new("Printer jams", Some("printer-1")),
            "maria",
            serde_json::json!({"version": "x"}),
            1_000,
        )
        .unwrap();
        let (ty, payload): (String, String) = c
            .query_row("SELECT type, payload FROM outbox", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(ty, "ticket.opened");
        let p: Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(p["ticket_id"], t.id.as_str());
        assert_eq!(p["diagnostics"]["version"], "x");

        let upd = |v: Value| match crate::proto::validate("ticket.update", &v).unwrap() {
            crate::proto::HqBody::TicketUpdate(u) => u,
            other => panic!("{other:?}"),
        };
        let reply =
            upd(serde_json::json!({"ticket_id": t.id, "message": "Technician comes at 3 pm"}));
        for _ in 0..2 {
            apply_update(&c, "hq-ev-7", &reply, 2_000).unwrap().unwrap();
        }
        let got = get(&c, &t.id).unwrap().unwrap();
        assert_eq!(
            got.replies.len(),
            1,
            "the same event applied twice adds one reply"
        );
        assert_eq!(got.status, "answered");
        assert_eq!(got.replies[0].message, "Technician comes at 3 pm");

        let close =
            upd(serde_json::json!({"ticket_id": t.id, "message": "Fixed", "status": "closed"}));
        apply_update(&c, "hq-ev-8", &close, 3_000).unwrap().unwrap();
        assert_eq!(list(&c, 10).unwrap()[0].status, "closed");

        let e = apply_update(
            &c,
            "hq-ev-9",
            &upd(serde_json::json!({"ticket_id": "nope", "message": "x"})),
            0,
        )
        .unwrap()
        .unwrap_err();
        assert!(e.contains("ticket_id") && e.contains("nope"), "{e}");
        let e = crate::proto::validate(
            "ticket.update",
            &serde_json::json!({"ticket_id": t.id, "message": "x", "status": "done"}),
        )
        .unwrap_err();
        assert!(e.contains("status"), "{e}");
    }
}
