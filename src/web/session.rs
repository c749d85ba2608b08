//! Signing in and out, and first-run setup. Sign-in failures are rate limited per user name and
//! client address (5 per 5 minutes) and per client address (20 per 5 minutes, whatever the user
//! names); the first admin can be created with a one-time code printed in
//! the log, or offline with `storebox user add`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::caller::Caller;
use super::error::JsonBody;
use super::{ApiError, AppState};
use crate::auth::{self, sessions, Role};
use crate::ops::audit;

const MAX_FAILURES: u32 = 5;
/// Failed sign-ins from one address, whatever the user names (password spraying).
const MAX_FAILURES_PER_CLIENT: u32 = 20;
const FAILURE_WINDOW_MS: i64 = 5 * 60_000;

#[derive(Deserialize, utoipa::ToSchema)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionInfo {
    pub username: String,
    pub role: Role,
    /// Send this in the X-CSRF-Token header of every POST, PUT, PATCH and DELETE.
    pub csrf: String,
}

/// The session cookie; `Secure` when the box serves HTTPS (`[tls]`), so the browser never sends
/// it over plain HTTP.
fn session_cookie(id: &str, max_age_s: i64, secure: bool) -> String {
    format!(
        "{}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_s}{}",
        sessions::COOKIE,
        if secure { "; Secure" } else { "" }
    )
}

/// Sign in with user name and password; sets the session cookie.
#[utoipa::path(post, path = "/api/v1/session", request_body = LoginRequest,
    responses((status = 200, body = SessionInfo), (status = 401), (status = 429)))]
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Response, ApiError> {
    let now = state.now_ms();
    let key = format!("{}|{}", req.username, addr.ip());
    // The NUL prefix keeps it apart from the per-user keys (no real user name contains one).
    let client_key = format!("\0client|{}", addr.ip());
    // Every attempt is counted as a failure before its password is checked, and given back if it
    // succeeds: parallel wrong passwords cannot all pass the check while none has failed yet.
    {
        let mut failures = state.login_failures.lock();
        failures.retain(|_, (_, start)| now - *start < FAILURE_WINDOW_MS);
        if failures.get(&key).is_some_and(|(n, _)| *n >= MAX_FAILURES)
            || failures
                .get(&client_key)
                .is_some_and(|(n, _)| *n >= MAX_FAILURES_PER_CLIENT)
        {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                "too many failed sign-ins; wait 5 minutes and try again",
            ));
        }
        failures.entry(key.clone()).or_insert((0, now)).0 += 1;
        failures.entry(client_key.clone()).or_insert((0, now)).0 += 1;
    }
    let user = req.username.clone();
    let record = state.db.read(move |c| auth::login_record(c, &user)).await?;
    // The reader connection is back in the pool; hash with none held.
    let pass = req.password;
    let role = state
        .password_work(move || auth::verify_login(record, &pass))
        .await;
    let Some(role) = role else {
        tracing::warn!(user = ?req.username, client = %addr.ip(), "sign-in failed");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
            "wrong user name or password",
        ));
    };
    {
        let mut failures = state.login_failures.lock();
        failures.remove(&key);
        if let Some((n, _)) = failures.get_mut(&client_key) {
            *n = n.saturating_sub(1);
        }
    }
    let ttl = state.session_ttl_ms();
    let username = req.username.clone();
    let (id, csrf) = state
        .db
        .write(move |c| {
            let out = sessions::create(c, &username, now, ttl)?;
            audit::record(c, now, &username, "session.login", "", "")?;
            Ok(out)
        })
        .await?;
    let body = SessionInfo {
        username: req.username,
        role,
        csrf,
    };
    Ok((
        [(
            header::SET_COOKIE,
            session_cookie(&id, ttl / 1000, state.config.tls.enabled()),
        )],
        Json(body),
    )
        .into_response())
}

/// The signed-in user.
#[utoipa::path(get, path = "/api/v1/session", responses((status = 200, body = SessionInfo), (status = 401)))]
pub async fn current(caller: Caller) -> Result<Json<SessionInfo>, ApiError> {
    Ok(Json(SessionInfo {
        username: caller.name,
        role: caller.role,
        csrf: caller.csrf.unwrap_or_default(),
    }))
}

/// Sign out: the session ends on the server, the cookie is cleared.
#[utoipa::path(delete, path = "/api/v1/session", responses((status = 204)))]
pub async fn logout(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut parts = axum::http::Request::new(()).into_parts().0;
    parts.headers = headers;
    if let Some(id) = super::caller::cookie_value(&parts, sessions::COOKIE) {
        let now = state.now_ms();
        state
            .db
            .write(move |c| {
                sessions::delete(c, &id)?;
                audit::record(c, now, &caller.name, "session.logout", "", "")
            })
            .await?;
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            session_cookie("", 0, state.config.tls.enabled()),
        )],
    )
        .into_response())
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SetupStatus {
    /// True while no user exists: the UI then offers first-run setup.
    pub needed: bool,
}

#[utoipa::path(get, path = "/api/v1/setup", responses((status = 200, body = SetupStatus)))]
pub async fn setup_status(State(state): State<AppState>) -> Result<Json<SetupStatus>, ApiError> {
    let n = state.db.read(auth::user_count).await?;
    Ok(Json(SetupStatus { needed: n == 0 }))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct SetupRequest {
    /// The one-time code printed in the storebox log at start.
    pub code: String,
    #[schema(pattern = "^[A-Za-z0-9_.@-]{1,64}$")]
    pub username: String,
    /// At least 10 characters.
    #[schema(min_length = 10)]
    pub password: String,
}

/// First-run setup: creates the first admin with the one-time code from the log.
#[utoipa::path(post, path = "/api/v1/setup", request_body = SetupRequest,
    responses((status = 201), (status = 403), (status = 409)))]
pub async fn setup(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<SetupRequest>,
) -> Result<Response, ApiError> {
    let expected = state.setup_code.lock().clone();
    let Some(expected) = expected else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_set_up",
            "setup is done; sign in instead",
        ));
    };
    if !auth::digest_eq(req.code.trim(), &expected) {
        return Err(ApiError::forbidden(
            "wrong setup code; it is printed in the storebox log",
        ));
    }
    let now = state.now_ms();
    auth::validate_username(&req.username)
        .and_then(|_| auth::validate_password(&req.password))
        .map_err(ApiError::from)?;
    let pass = req.password;
    let hash = state
        .password_work(move || auth::hash_password(&pass))
        .await;
    let user = req.username.clone();
    state
        .db
        .write(move |c| {
            if auth::user_count(c)? > 0 {
                return Ok(Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "already_set_up",
                    "setup is done; sign in instead",
                )));
            }
            if let Err(e) = auth::add_user_hashed(c, &user, &hash, Role::Admin, now) {
                return Ok(Err(e.into()));
            }
            audit::record(
                c,
                now,
                &user,
                "setup.admin_created",
                &user,
                "first-run setup",
            )?;
            Ok(Ok(()))
        })
        .await??;
    *state.setup_code.lock() = None;
    Ok((
        StatusCode::CREATED,
        Json(json!({"username": req.username, "role": "admin"})),
    )
        .into_response())
}
