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

fn session_cookie(id: &str, max_age_s: i64) -> String {
    format!(
        "{}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_s}",
        sessions::COOKIE
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
    }
    let (user, pass) = (req.username.clone(), req.password);
    let role = state
        .db
        .read(move |c| auth::check_login(c, &user, &pass))
        .await?;
    let Some(role) = role else {
        let mut failures = state.login_failures.lock();
        failures.entry(key).or_insert((0, now)).0 += 1;
        failures.entry(client_key).or_insert((0, now)).0 += 1;
        tracing::warn!(user = %req.username, client = %addr.ip(), "sign-in failed");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
            "wrong user name or password",
        ));
    };
    state.login_failures.lock().remove(&key);
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
        [(header::SET_COOKIE, session_cookie(&id, ttl / 1000))],
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
        [(header::SET_COOKIE, session_cookie("", 0))],
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
    let (user, pass) = (req.username.clone(), req.password);
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
            if let Err(e) = auth::add_user(c, &user, &pass, Role::Admin, now) {
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
