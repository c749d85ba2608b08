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

/// Looks a session up (read-only). Returns the session and whether its expiry should be pushed
/// forward with [`refresh`] (sliding expiry, at most once a minute, so most requests never write).
pub fn lookup(
    conn: &Connection,
    id: &str,
    now_ms: i64,
    ttl_ms: i64,
) -> DbResult<Option<(Session, bool)>> {
    let row: Option<(String, String, String, i64)> = conn
        .prepare_cached(
            "SELECT s.username, u.role, s.csrf, s.expires_ms FROM sessions s
             JOIN users u ON u.username = s.username
             WHERE s.token_hash = ?1 AND u.disabled = 0",
        )?
        .query_row([hash_secret(id)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    let Some((username, role, csrf, expires)) = row else {
        return Ok(None);
    };
    if expires <= now_ms {
        return Ok(None);
    }
    let stale = expires - now_ms < ttl_ms - 60_000;
    Ok(role.parse().ok().map(|role| {
        (
            Session {
                username,
                role,
                csrf,
            },
            stale,
        )
    }))
}

/// Pushes a session's expiry to `now + ttl`.
pub fn refresh(conn: &Connection, id: &str, now_ms: i64, ttl_ms: i64) -> DbResult<()> {
    conn.execute(
        "UPDATE sessions SET expires_ms = ?2 WHERE token_hash = ?1",
        params![hash_secret(id), now_ms + ttl_ms],
    )?;
    Ok(())
}

pub fn delete(conn: &Connection, id: &str) -> DbResult<()> {
    conn.execute(
        "DELETE FROM sessions WHERE token_hash = ?1",
        [hash_secret(id)],
    )?;
    Ok(())
}
