//! Who may do what: staff users (argon2-hashed passwords, roles), browser sessions, bearer API
//! tokens for lanes and scripts, and device credentials for the MQTT broker.
//!
//! Generated secrets (device passwords, API tokens, session ids) carry 192 bits of randomness, so
//! a fast SHA-256 hash at rest is enough and keeps device reconnect storms cheap; human-chosen
//! passwords get argon2.

use std::fmt;
use std::str::FromStr;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::db::{DbError, DbResult};

pub mod sessions;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Staff,
    Manager,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Staff => "staff",
            Role::Manager => "manager",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "staff" => Ok(Role::Staff),
            "manager" => Ok(Role::Manager),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?}: expected staff, manager or admin"
            )),
        }
    }
}

pub use crate::secrets::{digest_eq, generate_secret, hash_password, hash_secret, verify_password};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<rusqlite::Error> for AuthError {
    fn from(e: rusqlite::Error) -> Self {
        AuthError::Db(e.into())
    }
}

pub fn validate_username(name: &str) -> Result<(), AuthError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!(
            "user name {name:?} must be 1-64 characters of letters, digits, '-', '_', '.' or '@'"
        )))
    }
}

pub fn validate_password(password: &str) -> Result<(), AuthError> {
    if password.chars().count() < 10 {
        return Err(AuthError::Invalid(
            "password must be at least 10 characters".into(),
        ));
    }
    if password.len() > 1024 {
        return Err(AuthError::Invalid("password is too long".into()));
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct User {
    pub username: String,
    pub role: Role,
    pub created_at: String,
    pub disabled: bool,
}

pub fn user_count(conn: &Connection) -> DbResult<i64> {
    Ok(conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?)
}

pub fn add_user(
    conn: &Connection,
    username: &str,
    password: &str,
    role: Role,
    now_ms: i64,
) -> Result<(), AuthError> {
    validate_username(username)?;
    validate_password(password)?;
    add_user_hashed(conn, username, &hash_password(password), role, now_ms)
}

/// Adds a user whose password was already hashed (with [`hash_password`], outside any database
/// transaction: argon2 takes ~20 MB and tens of milliseconds).
pub fn add_user_hashed(
    conn: &Connection,
    username: &str,
    hash: &str,
    role: Role,
    now_ms: i64,
) -> Result<(), AuthError> {
    validate_username(username)?;
    let n = conn.execute(
        "INSERT OR IGNORE INTO users (username, password_hash, role, created_ms) VALUES (?1, ?2, ?3, ?4)",
        params![username, hash, role.as_str(), now_ms],
    )?;
    if n == 0 {
        return Err(AuthError::Exists(format!("user {username:?}")));
    }
    Ok(())
}

pub fn set_password(conn: &Connection, username: &str, password: &str) -> Result<(), AuthError> {
    validate_password(password)?;
    set_password_hash(conn, username, &hash_password(password))
}

/// Sets a password hashed beforehand (see [`add_user_hashed`]); the user's sessions end.
pub fn set_password_hash(conn: &Connection, username: &str, hash: &str) -> Result<(), AuthError> {
    let n = conn.execute(
        "UPDATE users SET password_hash = ?2 WHERE username = ?1",
        params![username, hash],
    )?;
    if n == 0 {
        return Err(AuthError::NotFound(format!("user {username:?}")));
    }
    conn.execute("DELETE FROM sessions WHERE username = ?1", [username])?;
    Ok(())
}

pub fn list_users(conn: &Connection) -> DbResult<Vec<User>> {
    let mut stmt =
        conn.prepare("SELECT username, role, created_ms, disabled FROM users ORDER BY username")?;
    let rows = stmt.query_map([], |r| {
        let role: String = r.get(1)?;
        Ok(User {
            username: r.get(0)?,
            role: role.parse().unwrap_or(Role::Staff),
            created_at: crate::db::ts_from_ms(r.get(2)?).to_string(),
            disabled: r.get::<_, i64>(3)? != 0,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Checks a user's password; `None` when the user is unknown, disabled or the password is wrong.
pub fn check_login(conn: &Connection, username: &str, password: &str) -> DbResult<Option<Role>> {
    Ok(verify_login(login_record(conn, username)?, password))
}

/// What a sign-in is checked against: (password hash, role, disabled), `None` for no such user.
/// Read it, release the connection, then hash with [`verify_login`].
pub type LoginRecord = Option<(String, String, i64)>;

pub fn login_record(conn: &Connection, username: &str) -> DbResult<LoginRecord> {
    Ok(conn
        .query_row(
            "SELECT password_hash, role, disabled FROM users WHERE username = ?1",
            [username],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?)
}

/// The argon2 half of [`check_login`]; needs no database.
pub fn verify_login(row: LoginRecord, password: &str) -> Option<Role> {
    match row {
        Some((hash, role, 0)) if verify_password(password, &hash) => role.parse().ok(),
        Some(_) => None,
        None => {
            // Same work as a real check, so timing does not reveal which user names exist.
            static DUMMY: std::sync::LazyLock<String> =
                std::sync::LazyLock::new(|| hash_password("storebox-timing-dummy"));
            let _ = verify_password(password, &DUMMY);
            None
        }
    }
}

/// Creates a bearer API token; returns the token, which is shown once and stored only hashed.
pub fn add_token(
    conn: &Connection,
    name: &str,
    role: Role,
    now_ms: i64,
) -> Result<String, AuthError> {
    validate_username(name).map_err(|_| {
        AuthError::Invalid(format!(
            "token name {name:?} must be 1-64 characters of letters, digits, '-', '_', '.' or '@'"
        ))
    })?;
    let token = generate_secret("sbx_");
    let n = conn.execute(
        "INSERT OR IGNORE INTO api_tokens (name, token_hash, role, created_ms) VALUES (?1, ?2, ?3, ?4)",
        params![name, hash_secret(&token), role.as_str(), now_ms],
    )?;
    if n == 0 {
        return Err(AuthError::Exists(format!("token {name:?}")));
    }
    Ok(token)
}

/// Resolves a bearer token to its name and role.
pub fn check_token(conn: &Connection, token: &str) -> DbResult<Option<(String, Role)>> {
    let row: Option<(String, String)> = conn
        .prepare_cached("SELECT name, role FROM api_tokens WHERE token_hash = ?1")?
        .query_row([hash_secret(token)], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(row.and_then(|(name, role)| role.parse().ok().map(|r| (name, r))))
}

/// How long a verified bearer token is trusted from memory before the database is asked again.
/// A token removed with `storebox token remove` (another process) stops working within this time.
pub const TOKEN_CACHE_MS: i64 = 1_000;

/// After this age the next request for a token re-verifies it against the database while all the
/// other requests keep using the cached entry (until [`TOKEN_CACHE_MS`]): a busy token is checked
/// by one request about twice a second, not by every request in flight when its entry expires.
pub const TOKEN_REFRESH_MS: i64 = TOKEN_CACHE_MS / 2;

/// Verified bearer tokens kept in memory for [`TOKEN_CACHE_MS`], so a busy lane asking prices many
/// times a second does not cost a database read per request for its token. Keyed by the token's
/// hash; unknown tokens are never cached (each attempt is checked against the database).
#[derive(Default)]
pub struct TokenCache {
    entries: parking_lot::Mutex<std::collections::HashMap<String, CachedToken>>,
}

struct CachedToken {
    name: String,
    role: Role,
    verified_ms: i64,
    /// A request is re-verifying this token (claimed after [`TOKEN_REFRESH_MS`]).
    refreshing: bool,
}

impl TokenCache {
    /// Most tokens kept; beyond it the cache is emptied (tokens are few: lanes, integrations).
    const MAX: usize = 4096;

    /// The cached name and role of `token` if it was verified at most [`TOKEN_CACHE_MS`] before
    /// `now_ms` (a clock that went backwards makes the entry stale). `None` also tells the first
    /// caller after [`TOKEN_REFRESH_MS`] to verify the token again (and [`TokenCache::put`] it).
    pub fn get(&self, token: &str, now_ms: i64) -> Option<(String, Role)> {
        let key = hash_secret(token);
        let mut entries = self.entries.lock();
        let e = entries.get_mut(&key)?;
        let age = now_ms - e.verified_ms;
        if !(0..=TOKEN_CACHE_MS).contains(&age) {
            return None;
        }
        if age > TOKEN_REFRESH_MS && !e.refreshing {
            e.refreshing = true;
            return None;
        }
        Some((e.name.clone(), e.role))
    }

    /// Remembers `token` as verified at `now_ms`.
    pub fn put(&self, token: &str, name: &str, role: Role, now_ms: i64) {
        let mut entries = self.entries.lock();
        if entries.len() >= Self::MAX {
            entries.clear();
        }
        entries.insert(
            hash_secret(token),
            CachedToken {
                name: name.to_string(),
                role,
                verified_ms: now_ms,
                refreshing: false,
            },
        );
    }

    /// Forgets `token` (it failed verification).
    pub fn forget(&self, token: &str) {
        self.entries.lock().remove(&hash_secret(token));
    }
}

pub fn remove_token(conn: &Connection, name: &str) -> Result<(), AuthError> {
    if conn.execute("DELETE FROM api_tokens WHERE name = ?1", [name])? == 0 {
        return Err(AuthError::NotFound(format!("token {name:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_cache_trusts_a_verified_token_for_one_second_only() {
        let cache = TokenCache::default();
        let lane = Some(("lane-1".to_string(), Role::Staff));
        assert_eq!(cache.get("sbt_a", 10_000), None, "nothing verified yet");
        cache.put("sbt_a", "lane-1", Role::Staff, 10_000);
        assert_eq!(cache.get("sbt_a", 10_000 + TOKEN_REFRESH_MS), lane);
        assert_eq!(cache.get("sbt_b", 10_000), None, "another token");
        assert_eq!(cache.get("sbt_a", 9_999), None, "clock stepped back");
        // Past the refresh age exactly one caller is told to verify again; the others go on
        // using the entry until it expires.
        assert_eq!(
            cache.get("sbt_a", 10_001 + TOKEN_REFRESH_MS),
            None,
            "refresh"
        );
        assert_eq!(cache.get("sbt_a", 10_002 + TOKEN_REFRESH_MS), lane);
        assert_eq!(cache.get("sbt_a", 10_000 + TOKEN_CACHE_MS), lane);
        assert_eq!(cache.get("sbt_a", 10_001 + TOKEN_CACHE_MS), None, "expired");
        assert_eq!(
            cache.get("sbt_a", 10_002 + TOKEN_CACHE_MS),
            None,
            "still expired"
        );
        // The refresh succeeded: trusted again from its time.
        cache.put("sbt_a", "lane-1", Role::Staff, 20_000);
        assert_eq!(cache.get("sbt_a", 20_000 + TOKEN_REFRESH_MS), lane);
        assert_eq!(
            cache.get("sbt_a", 20_001 + TOKEN_REFRESH_MS),
            None,
            "refresh"
        );
        // The refresh found the token removed.
        cache.forget("sbt_a");
        assert_eq!(
            cache.get("sbt_a", 20_002 + TOKEN_REFRESH_MS),
            None,
            "forgotten"
        );
    }

    #[test]
    fn password_roundtrip() {
        let h = hash_password("correct horse battery");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("wrong horse battery", &h));
    }

    #[test]
    fn secrets_are_unique_and_prefixed() {
        let a = generate_secret("sbx_");
        let b = generate_secret("sbx_");
        assert_ne!(a, b);
        assert!(a.starts_with("sbx_") && a.len() == 36);
        assert!(digest_eq(&hash_secret(&a), &hash_secret(&a)));
        assert!(!digest_eq(&hash_secret(&a), &hash_secret(&b)));
    }
}
