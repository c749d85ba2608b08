//! Who is calling: a staff session (cookie, with CSRF check on state-changing requests) or a bearer
//! API token. Handlers take a [`Caller`] and ask it for the role they need; the check is on the
//! server for every call, whatever the UI shows.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, Method};

use super::{ApiError, AppState};
use crate::auth::{self, sessions, Role};

#[derive(Debug, Clone)]
pub struct Caller {
    /// `alice`, or `token:lane-3` for API tokens.
    pub name: String,
    pub role: Role,
    /// CSRF token of the session (None for bearer tokens).
    pub csrf: Option<String>,
}

impl Caller {
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this needs the {role} role; you are signed in as {}",
                self.role
            )))
        }
    }
}

pub fn cookie_value(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or_else(ApiError::unauthorized)?
                .to_string();
            let now = state.now_ms();
            let (name, role) = match state.tokens.get(&token, now) {
                Some(found) => found,
                None => {
                    let check = token.clone();
                    let found = state.db.read(move |c| auth::check_token(c, &check)).await?;
                    let Some((name, role)) = found else {
                        state.tokens.forget(&token);
                        return Err(ApiError::unauthorized());
                    };
                    state.tokens.put(&token, &name, role, now);
                    (name, role)
                }
            };
            return Ok(Caller {
                name: format!("token:{name}"),
                role,
                csrf: None,
            });
        }
        let id = cookie_value(parts, sessions::COOKIE).ok_or_else(ApiError::unauthorized)?;
        let (now, ttl) = (state.now_ms(), state.session_ttl_ms());
        let lookup_id = id.clone();
        let (session, stale) = state
            .db
            .read(move |c| sessions::lookup(c, &lookup_id, now, ttl))
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        if stale {
            state
                .db
                .write(move |c| sessions::refresh(c, &id, now, ttl))
                .await?;
        }
        let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe {
            let sent = parts
                .headers
                .get(sessions::CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !auth::digest_eq(sent, &session.csrf) {
                return Err(ApiError::forbidden(
                    "missing or wrong X-CSRF-Token header for this session",
                ));
            }
        }
        Ok(Caller {
            name: session.username,
            role: session.role,
            csrf: Some(session.csrf),
        })
    }
}
