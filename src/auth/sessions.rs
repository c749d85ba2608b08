//! Browser sessions: a random id in an HttpOnly, SameSite=Strict cookie, stored hashed, with a
//! per-session CSRF token that state-changing requests must echo in the `X-CSRF-Token` header.

use rusqlite::{params, Connection, OptionalExtension};

use super::{generate_secret, hash_secret, Role};
use crate::db::DbResult;

pub const COOKIE: &str = "storebox_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

#[derive(Debug, Clone)]
pub struct Session {
    pub username: String,
    pub role: Role,
    pub csrf: String,
}

/// Creates a session; returns (cookie value, csrf token).
pub fn create(
    conn: &Connection,
    username: &str,
    now_ms: i64,
    ttl_ms: i64,
) -> DbResult<(String, String)> {
    let id = generate_secret("");
    let csrf = generate_secret("");
    conn.execute(
        "INSERT INTO sessions (token_hash, username, csrf, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![hash_secret(&id), username, csrf, now_ms, now_ms + ttl_ms],
    )?;
    conn.execute("DELETE FROM sessions WHERE expires_ms < ?1", [now_ms])?;
    Ok((id, csrf))
}

/// Looks a session up; a valid one has its expiry pushed forward (sliding expiry).
pub fn lookup(conn: &Connection, id: &str, now_ms: i64, ttl_ms: i64) -> DbResult<Option<Session>> {
    let hash = hash_secret(id);
    let row: Option<(String, String, String, i64)> = conn
        .query_row(
            "SELECT s.username, u.role, s.csrf, s.expires_ms FROM sessions s
             JOIN users u ON u.username = s.username
             WHERE s.token_hash = ?1 AND u.disabled = 0",
            [&hash],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((username, role, csrf, expires)) = row else {
        return Ok(None);
    };
    if expires <= now_ms {
        return Ok(None);
    }
    // Refresh at most once a minute to keep reads cheap.
    if expires - now_ms < ttl_ms - 60_000 {
        conn.execute(
            "UPDATE sessions SET expires_ms = ?2 WHERE token_hash = ?1",
            params![hash, now_ms + ttl_ms],
        )?;
    }
    Ok(role.parse().ok().map(|role| Session {
        username,
        role,
        csrf,
    }))
}

pub fn delete(conn: &Connection, id: &str) -> DbResult<()> {
    conn.execute(
        "DELETE FROM sessions WHERE token_hash = ?1",
        [hash_secret(id)],
    )?;
    Ok(())
}
