//! User administration beyond listing and adding (admin only): change a user's role, disable or
//! re-enable them, and set a new password. Disabling or a new password ends the user's sessions.
//! The box never locks itself out: an admin cannot disable or demote themselves, and the last
//! enabled admin stays an enabled admin.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Deserialize;

use super::caller::Caller;
use super::error::JsonBody;
use super::{ApiError, AppState};
use crate::auth::{self, Role};
use crate::ops::audit;

/// At least one of the two (`minProperties: 1`, set in `openapi::ErrorResponses`: utoipa 5.5's
/// `min_properties` attribute writes `maxProperties`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    #[schema(nullable = false)]
    #[serde(default, deserialize_with = "present")]
    pub role: Option<Role>,
    #[schema(nullable = false)]
    #[serde(default, deserialize_with = "present")]
    pub disabled: Option<bool>,
}

/// A field that may be left out but not sent as `null` (as the schema says).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    /// At least 10 characters.
    #[schema(min_length = 10)]
    pub password: String,
}

fn enabled_admins(c: &Connection) -> rusqlite::Result<i64> {
    c.query_row(
        "SELECT count(*) FROM users WHERE role = 'admin' AND disabled = 0",
        [],
        |r| r.get(0),
    )
}

fn find(c: &Connection, name: &str) -> crate::db::DbResult<Option<auth::User>> {
    Ok(auth::list_users(c)?
        .into_iter()
        .find(|u| u.username == name))
}

/// Change a user's role or disable/enable them.
#[utoipa::path(patch, path = "/api/v1/users/{name}", params(("name" = String, Path)), request_body = UserChange,
    responses((status = 200, body = auth::User), (status = 400), (status = 403), (status = 404), (status = 409)))]
pub async fn change_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<UserChange>,
) -> Result<Json<auth::User>, ApiError> {
    caller.require(Role::Admin)?;
    if req.role.is_none() && req.disabled.is_none() {
        return Err(ApiError::bad_request(
            "invalid",
            "role or disabled: give at least one of them",
        ));
    }
    if name == caller.name
        && (req.disabled == Some(true) || req.role.is_some_and(|r| r != Role::Admin))
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "self_lockout",
            "you cannot disable yourself or remove your own admin role; ask another admin",
        ));
    }
    let now = state.now_ms();
    let actor = caller.name.clone();
    let user = state
        .db
        .write(move |c| {
            let tx = crate::db::immediate(c)?;
            let Some(before) = find(&tx, &name)? else {
                return Ok(Err(ApiError::not_found(
                    "unknown_user",
                    format!("no user {name:?}"),
                )));
            };
            if let Some(role) = req.role {
                tx.execute(
                    "UPDATE users SET role = ?2 WHERE username = ?1",
                    params![name, role.as_str()],
                )?;
            }
            if let Some(disabled) = req.disabled {
                tx.execute(
                    "UPDATE users SET disabled = ?2 WHERE username = ?1",
                    params![name, disabled],
                )?;
                if disabled {
                    tx.execute("DELETE FROM sessions WHERE username = ?1", [&name])?;
                }
            }
            if before.role == Role::Admin && !before.disabled && enabled_admins(&tx)? == 0 {
                return Ok(Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "last_admin",
                    "this is the last enabled admin; make another user admin first",
                )));
            }
            let mut detail = Vec::new();
            if let Some(r) = req.role {
                detail.push(format!("role={r}"));
            }
            if let Some(d) = req.disabled {
                detail.push(format!("disabled={d}"));
            }
            audit::record(&tx, now, &actor, "user.change", &name, &detail.join(" "))?;
            let after = find(&tx, &name)?;
            tx.commit()?;
            Ok(after.ok_or_else(|| ApiError::not_found("unknown_user", "user vanished")))
        })
        .await??;
    Ok(Json(user))
}

/// Set a new password for a user (their sessions end).
#[utoipa::path(post, path = "/api/v1/users/{name}/password", params(("name" = String, Path)), request_body = NewPassword,
    responses((status = 204), (status = 400), (status = 403), (status = 404)))]
pub async fn reset_password(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<NewPassword>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    auth::validate_password(&req.password)
        .map_err(|e| ApiError::bad_request("invalid", format!("password: {e}")))?;
    let now = state.now_ms();
    let pass = req.password;
    let hash = state
        .password_work(move || auth::hash_password(&pass))
        .await;
    state
        .db
        .write(move |c| {
            let exists: Option<i64> = c
                .query_row("SELECT 1 FROM users WHERE username = ?1", [&name], |r| {
                    r.get(0)
                })
                .optional()?;
            if exists.is_none() {
                return Ok(Err(ApiError::not_found(
                    "unknown_user",
                    format!("no user {name:?}"),
                )));
            }
            if let Err(e) = auth::set_password_hash(c, &name, &hash) {
                return Ok(Err(e.into()));
            }
            audit::record(c, now, &caller.name, "user.password_reset", &name, "")?;
            Ok(Ok(()))
        })
        .await??;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_may_leave_fields_out_but_not_send_null() {
        let c: UserChange = serde_json::from_str(r#"{"disabled":true}"#).unwrap();
        assert_eq!((c.role, c.disabled), (None, Some(true)));
        assert!(serde_json::from_str::<UserChange>(r#"{"role":"admin","disabled":null}"#).is_err());
    }
}
