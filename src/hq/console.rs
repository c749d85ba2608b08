//! Who is calling HQ's console and admin API, and what they may do. Staff sign in with a name and
//! password (`storebox hq user add`, argon2) and get a session cookie (HttpOnly, SameSite=Strict,
//! kept in HQ's storage so any node serves it); a write through a session must also carry the
//! session's CSRF token in `x-csrf-token`. Scripts keep using the admin bearer token. Store tokens
//! never reach these endpoints. Sign-in attempts are counted before the password is checked, and
//! argon2 work is bounded.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::json;

use super::error::{HqError, HqResult};
use super::server::HqState;
use super::storage::{HqRole, HqUser};

pub const COOKIE: &str = "sbhq_session";
/// How long a console session lasts.
pub const SESSION_MS: i64 = 8 * 3600 * 1000;
/// Failed sign-ins allowed per user name (and per client address) in [`WINDOW_MS`], counted before
/// the password is checked.
pub const MAX_FAILURES: u32 = 10;
pub const WINDOW_MS: i64 = 5 * 60 * 1000;
/// Password checks (argon2: ~20 MB and tens of ms each) running at once on one node.
pub const PASSWORD_CHECKS: usize = 2;
/// Entries the failure counter keeps at most (oldest windows are dropped first).
const MAX_TRACKED: usize = 10_000;

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: HqRole,
}

/// Sign-in failures per key (user name, client address) in the current window, and the bound on
/// concurrent password checks. Per node: several nodes multiply the allowance by their number.
pub struct SignInGuard {
    failures: Mutex<HashMap<String, (i64, u32)>>,
    checks: tokio::sync::Semaphore,
}

impl Default for SignInGuard {
    fn default() -> Self {
        SignInGuard {
            failures: Mutex::new(HashMap::new()),
            checks: tokio::sync::Semaphore::new(PASSWORD_CHECKS),
        }
    }
}

impl SignInGuard {
    /// Counts an attempt for each key before the password is checked; refuses when any key is
    /// over the limit.
    fn attempt(&self, keys: &[String], now_ms: i64) -> HqResult<()> {
        let mut f = self.failures.lock();
        if f.len() > MAX_TRACKED {
            f.retain(|_, (start, _)| now_ms - *start < WINDOW_MS);
        }
        for k in keys {
            let e = f.entry(k.clone()).or_insert((now_ms, 0));
            if now_ms - e.0 >= WINDOW_MS {
                *e = (now_ms, 0);
            }
            if e.1 >= MAX_FAILURES {
                return Err(HqError::TooManyAttempts(
                    "too many failed sign-ins; wait a few minutes".into(),
                ));
            }
            e.1 += 1;
        }
        Ok(())
    }

    /// A successful sign-in gives its attempt back.
    fn succeeded(&self, keys: &[String]) {
        let mut f = self.failures.lock();
        for k in keys {
            if let Some(e) = f.get_mut(k) {
                e.1 = e.1.saturating_sub(1);
            }
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// The caller: the admin bearer token (role admin) or a session (with its CSRF token on writes).
pub async fn caller(state: &HqState, method: &Method, headers: &HeaderMap) -> HqResult<Caller> {
    if let Some(t) = bearer(headers) {
        let hash = crate::secrets::hash_secret(t);
        if crate::secrets::digest_eq(&hash, &state.admin_token_hash) {
            return Ok(Caller {
                name: "admin token".into(),
                role: HqRole::Admin,
            });
        }
        return Err(HqError::Unauthorized {
            code: "bad_token",
            message: "wrong admin token",
        });
    }
    let Some(id) = cookie(headers) else {
        return Err(HqError::Unauthorized {
            code: "unauthorized",
            message: "sign in or send a bearer token",
        });
    };
    let session = state
        .storage
        .session(&crate::secrets::hash_secret(id), state.now_ms())
        .await?
        .ok_or(HqError::Unauthorized {
            code: "session_expired",
            message: "the session has ended; sign in again",
        })?;
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let sent = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !crate::secrets::digest_eq(sent, &session.csrf) {
            return Err(HqError::Forbidden(
                "a change through a session needs its x-csrf-token header".into(),
            ));
        }
    }
    Ok(Caller {
        name: session.user,
        role: session.role,
    })
}

/// Refuses a caller whose role is not among `roles` (admin may do everything).
pub fn need(caller: &Caller, roles: &[HqRole], what: &str) -> HqResult<()> {
    if caller.role == HqRole::Admin || roles.contains(&caller.role) {
        Ok(())
    } else {
        Err(HqError::Forbidden(format!(
            "{what} needs the role {}; {} is {}",
            roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(" or "),
            caller.name,
            caller.role.as_str()
        )))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    name: String,
    password: String,
}

/// `POST /hq/v1/session`: signs in; sets the session cookie and answers the CSRF token.
pub async fn sign_in(
    State(state): State<HqState>,
    ConnectInfo(addr): ConnectInfo<std::net::SocketAddr>,
    Json(r): Json<SignIn>,
) -> HqResult<Response> {
    let now = state.now_ms();
    let keys = [format!("user:{}", r.name), format!("addr:{}", addr.ip())];
    state.sign_in.attempt(&keys, now)?;
    let user = state.storage.user(&r.name).await?;
    let ok = {
        let _turn = state.sign_in.checks.acquire().await.ok();
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        let password = r.password.clone();
        // Hashing also for an unknown name, so that timing does not tell which names exist.
        tokio::task::spawn_blocking(move || match hash {
            Some(h) => crate::secrets::verify_password(&password, &h),
            None => {
                let _ = crate::secrets::hash_password(&password);
                false
            }
        })
        .await
        .unwrap_or(false)
    };
    let Some(user) = user.filter(|_| ok) else {
        tracing::warn!(user = %r.name.escape_debug(), %addr, "HQ sign-in failed");
        return Err(HqError::Unauthorized {
            code: "bad_credentials",
            message: "wrong name or password",
        });
    };
    state.sign_in.succeeded(&keys);
    let id = crate::secrets::generate_secret("");
    let csrf = crate::secrets::generate_secret("");
    state
        .storage
        .create_session(
            &crate::secrets::hash_secret(&id),
            &user.name,
            &csrf,
            now + SESSION_MS,
        )
        .await?;
    tracing::info!(user = %user.name.escape_debug(), role = user.role.as_str(), "HQ sign-in");
    Ok((
        StatusCode::CREATED,
        [(
            header::SET_COOKIE,
            format!(
                "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
                SESSION_MS / 1000
            ),
        )],
        Json(json!({"user": user.name, "role": user.role, "csrf": csrf})),
    )
        .into_response())
}

/// `DELETE /hq/v1/session`: signs out.
pub async fn sign_out(State(state): State<HqState>, headers: HeaderMap) -> HqResult<Response> {
    if let Some(id) = cookie(&headers) {
        state
            .storage
            .delete_session(&crate::secrets::hash_secret(id))
            .await?;
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
        )],
    )
        .into_response())
}

/// `GET /hq/v1/me`: who is signed in (and the CSRF token again, for a reloaded page).
pub async fn me(State(state): State<HqState>, headers: HeaderMap) -> HqResult<Response> {
    let c = caller(&state, &Method::GET, &headers).await?;
    let csrf = match cookie(&headers) {
        Some(id) => state
            .storage
            .session(&crate::secrets::hash_secret(id), state.now_ms())
            .await?
            .map(|s| s.csrf),
        None => None,
    };
    Ok(Json(json!({"user": c.name, "role": c.role, "csrf": csrf})).into_response())
}

/// Adds a console user (CLI); the password is hashed here.
pub fn new_user(name: &str, role: HqRole, password: &str, now_ms: i64) -> HqResult<HqUser> {
    crate::proto::check_name("user name", name).map_err(|m| HqError::invalid("bad_user", m))?;
    if password.chars().count() < 12 {
        return Err(HqError::invalid(
            "weak_password",
            "the password must have at least 12 characters",
        ));
    }
    Ok(HqUser {
        name: name.to_string(),
        role,
        password_hash: crate::secrets::hash_password(password),
        created_ms: now_ms,
    })
}

/// Shared state for the guard, built once per node.
pub fn guard() -> Arc<SignInGuard> {
    Arc::new(SignInGuard::default())
}
