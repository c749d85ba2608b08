//! Support guides: short Markdown texts HQ writes for device alert codes and ticket categories
//! (`guide.upsert` / `guide.delete` in the feed), so that staff facing a warm fridge or a jammed
//! printer read what to try first right next to the alert, before they open a ticket. Guides are
//! state, like the catalog: a snapshot replaces them all.
//!
//! Rendering ([`crate::proto::guide_render`], shared with HQ's preview): CommonMark through pulldown-cmark; raw HTML in a guide is shown as text, never
//! rendered, and links keep only http(s)/mailto targets, so a guide cannot run script in the
//! staff UI whatever HQ sends.

use rusqlite::{params, Connection, Transaction};
use serde::Serialize;

use crate::db::DbResult;
use crate::proto::events::Guide;
use crate::proto::guide_render::render;

/// A guide as the staff UI shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GuideView {
    pub id: String,
    pub title: String,
    /// The body rendered to HTML (raw HTML in the source is escaped).
    pub body_html: String,
    pub alert_codes: Vec<String>,
    pub ticket_categories: Vec<String>,
    pub updated_at: String,
}

/// Most guides a store lists (HQ writes tens, not thousands).
pub const MAX_LISTED: i64 = 500;

/// Stores (or replaces) a guide from the feed.
pub fn upsert(tx: &Transaction<'_>, g: &Guide, now_ms: i64) -> DbResult<()> {
    tx.execute(
        "INSERT INTO guides (id, title, body, alert_codes, ticket_categories, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET title = excluded.title, body = excluded.body,
           alert_codes = excluded.alert_codes, ticket_categories = excluded.ticket_categories,
           updated_ms = excluded.updated_ms",
        params![
            g.id,
            g.title,
            g.body,
            serde_json::to_string(&g.alert_codes).unwrap_or_else(|_| "[]".into()),
            serde_json::to_string(&g.ticket_categories).unwrap_or_else(|_| "[]".into()),
            now_ms
        ],
    )?;
    Ok(())
}

pub fn delete(tx: &Transaction<'_>, id: &str) -> DbResult<()> {
    tx.execute("DELETE FROM guides WHERE id = ?1", [id])?;
    Ok(())
}

/// Every guide, by title.
pub fn list(conn: &Connection) -> DbResult<Vec<GuideView>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, title, body, alert_codes, ticket_categories, updated_ms FROM guides
         ORDER BY title, id LIMIT ?1",
    )?;
    let rows = stmt.query_map([MAX_LISTED], |r| {
        let list = |s: String| serde_json::from_str::<Vec<String>>(&s).unwrap_or_default();
        Ok(GuideView {
            id: r.get(0)?,
            title: r.get(1)?,
            body_html: render(&r.get::<_, String>(2)?),
            alert_codes: list(r.get(3)?),
            ticket_categories: list(r.get(4)?),
            updated_at: crate::db::ts_from_ms(r.get(5)?).to_string(),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_replace_delete() {
        let mut c = Connection::open_in_memory().unwrap();
        crate::db::migrations::migrate(&mut c, crate::db::migrations::MIGRATIONS.len()).unwrap();
        let tx = c.transaction().unwrap();
        let mut g = Guide {
            id: "g1".into(),
            title: "Fridge".into(),
            body: "Close *it*".into(),
            alert_codes: vec!["temp_high".into()],
            ticket_categories: vec![],
        };
        upsert(&tx, &g, 1).unwrap();
        g.title = "Fridge too warm".into();
        upsert(&tx, &g, 2).unwrap();
        tx.commit().unwrap();
        let l = list(&c).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].title, "Fridge too warm");
        assert_eq!(l[0].alert_codes, vec!["temp_high"]);
        assert!(l[0].body_html.contains("<em>it</em>"));
        let tx = c.transaction().unwrap();
        delete(&tx, "g1").unwrap();
        tx.commit().unwrap();
        assert!(list(&c).unwrap().is_empty());
    }
}
