//! JSON API handlers for devices, alerts, rejected messages, the audit log, users and the box's
//! status. Each one checks the caller's role, then does its work through the database handle.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::caller::Caller;
use super::error::{JsonBody, QueryParams};
use super::{ApiError, AppState};
use crate::auth::{self, Role};
use crate::devices::{self, registry};
use crate::ops::audit;

pub async fn not_found() -> ApiError {
    ApiError::not_found("no_route", "no such API endpoint; see /api/v1/openapi.json")
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Status {
    pub version: String,
    pub store_id: String,
    pub store_name: String,
    pub timezone: String,
    pub currency: String,
    pub uptime_s: u64,
    pub now: String,
    pub devices_total: i64,
    pub devices_online: i64,
    pub alerts_open: i64,
    pub mqtt_connections: usize,
    pub ingest_queue: usize,
    /// Set while device ingest cannot write (disk full, I/O error): devices are not acknowledged.
    pub ingest_failure: Option<crate::ops::health::IngestFailure>,
    pub outbox_business: i64,
    pub outbox_telemetry: i64,
    pub hq_configured: bool,
}

/// Is the store healthy: devices, alerts, queues.
#[utoipa::path(get, path = "/api/v1/status", responses((status = 200, body = Status)))]
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Status>, ApiError> {
    caller.require(Role::Staff)?;
    let (total, online, alerts, (ob, ot)) = state
        .db
        .read(|c| {
            let (total, online): (i64, i64) = c.query_row(
                "SELECT count(*), coalesce(sum(online), 0) FROM devices",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let alerts: i64 = c.query_row(
                "SELECT count(*) FROM alerts WHERE cleared_ms IS NULL",
                [],
                |r| r.get(0),
            )?;
            Ok((total, online, alerts, crate::outbox::depth(c)?))
        })
        .await?;
    let cfg = &state.config;
    Ok(Json(Status {
        version: crate::VERSION.to_string(),
        store_id: cfg.store.id.clone(),
        store_name: cfg.store.name.clone(),
        timezone: cfg.store.timezone.clone(),
        currency: cfg.store.currency.clone(),
        uptime_s: state.started.elapsed().as_secs(),
        now: state.clock.now().to_string(),
        devices_total: total,
        devices_online: online,
        alerts_open: alerts,
        mqtt_connections: state.broker.presence.live_count(),
        ingest_queue: state.broker.queue_depth(),
        ingest_failure: state.health.ingest_failure(),
        outbox_business: ob,
        outbox_telemetry: ot,
        hq_configured: !cfg.hq.url.is_empty(),
    }))
}

#[utoipa::path(get, path = "/api/v1/devices", responses((status = 200, body = [registry::DeviceSummary])))]
pub async fn list_devices(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<registry::DeviceSummary>>, ApiError> {
    caller.require(Role::Staff)?;
    let mut list = state.db.read(registry::list).await?;
    mark_stale(&state, &mut list);
    Ok(Json(list))
}

/// While device ingest cannot write, marks each device's presence as of the failure
/// (`stale_since`), for the list and the live stream.
pub fn mark_stale(state: &AppState, list: &mut [registry::DeviceSummary]) {
    if let Some(failure) = state.health.ingest_failure() {
        for d in list {
            d.stale_since = Some(failure.since.clone());
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ProvisionRequest {
    /// 1-64 letters, digits, '.', '-' or '_', not starting with "storebox".
    #[schema(pattern = r"^(?!storebox)(?!\.\.?$)[A-Za-z0-9._-]{1,64}$")]
    pub id: String,
    #[schema(pattern = "^(lane|scale|label|fridge|printer|kiosk|generic)$")]
    pub kind: String,
    #[serde(default)]
    pub name: String,
}

/// Provision a device: the password is in this answer only.
#[utoipa::path(post, path = "/api/v1/devices", request_body = ProvisionRequest,
    responses((status = 201, body = registry::Provisioned), (status = 400), (status = 409)))]
pub async fn provision_device(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<ProvisionRequest>,
) -> Result<Response, ApiError> {
    caller.require(Role::Manager)?;
    let now = state.now_ms();
    let provisioned = state
        .db
        .write(move |c| {
            let tx = crate::db::immediate(c)?;
            let p = match registry::add(&tx, &req.id, &req.kind, &req.name, now) {
                Ok(p) => p,
                Err(e) => return Ok(Err(e)),
            };
            audit::record(
                &tx,
                now,
                &caller.name,
                "device.provision",
                &p.id,
                &format!("kind={}", p.kind),
            )?;
            tx.commit()?;
            Ok(Ok(p))
        })
        .await??;
    state.device_changes.notify(&provisioned.id);
    // The bound port (the configured one may be 0: any free port).
    let mqtt = state.mqtt.addr;
    let mut body = serde_json::to_value(&provisioned).unwrap_or_default();
    body["mqtt"] =
        json!({"port": mqtt.port(), "client_id": provisioned.id, "username": provisioned.id});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Deserialize)]
pub struct DetailQuery {
    /// Hours of per-minute telemetry rollups (default 24, max 168).
    pub hours: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/devices/{id}", params(("id" = String, Path), ("hours" = Option<i64>, Query)),
    responses((status = 200, body = devices::DeviceDetail), (status = 404)))]
pub async fn device_detail(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<DetailQuery>,
) -> Result<Json<devices::DeviceDetail>, ApiError> {
    caller.require(Role::Staff)?;
    let now = state.now_ms();
    let hours = q.hours.unwrap_or(24).clamp(1, 168);
    let id2 = id.clone();
    state
        .db
        .read(move |c| devices::detail(c, &id2, now, hours))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("unknown_device", format!("device {id:?} not found")))
}

/// Remove a device: its credentials stop working and an open connection is closed.
#[utoipa::path(delete, path = "/api/v1/devices/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 404)))]
pub async fn remove_device(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Manager)?;
    let now = state.now_ms();
    let id2 = id.clone();
    state
        .db
        .write(move |c| {
            let tx = crate::db::immediate(c)?;
            if let Err(e) = registry::remove(&tx, &id2) {
                return Ok(Err(e));
            }
            audit::record(&tx, now, &caller.name, "device.remove", &id2, "")?;
            tx.commit()?;
            Ok(Ok(()))
        })
        .await??;
    state.broker.presence.revoke(&id);
    state.device_changes.notify(&id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CommandRequest {
    /// 1-64 letters, digits, '_', '-' or '.'.
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    pub name: String,
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub args: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    json!({})
}

/// Send a command; the device answers on devices/{id}/commands/ack and the answer shows in the
/// device's command list.
#[utoipa::path(post, path = "/api/v1/devices/{id}/commands", params(("id" = String, Path)), request_body = CommandRequest,
    responses((status = 202, body = devices::Command), (status = 404)))]
pub async fn send_command(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<CommandRequest>,
) -> Result<Response, ApiError> {
    caller.require(Role::Manager)?;
    let now = state.now_ms();
    let command = state
        .db
        .write(move |c| {
            let tx = crate::db::immediate(c)?;
            let cmd =
                match devices::record_command(&tx, &id, &req.name, &req.args, &caller.name, now) {
                    Ok(cmd) => cmd,
                    Err(e) => return Ok(Err(e)),
                };
            audit::record(
                &tx,
                now,
                &caller.name,
                "device.command",
                &id,
                &format!("{} {}", cmd.name, cmd.args),
            )?;
            tx.commit()?;
            Ok(Ok(cmd))
        })
        .await??;
    state.publisher.publish(
        format!("devices/{}/commands", command.device_id),
        json!({"id": command.id, "name": command.name, "args": command.args}).to_string(),
    );
    Ok((StatusCode::ACCEPTED, Json(command)).into_response())
}

#[derive(Deserialize)]
pub struct ListQuery {
    pub device: Option<String>,
    pub open: Option<bool>,
    pub limit: Option<i64>,
    pub before: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/alerts", params(("device" = Option<String>, Query), ("open" = Option<bool>, Query), ("limit" = Option<i64>, Query)),
    responses((status = 200, body = [devices::Alert])))]
pub async fn list_alerts(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Vec<devices::Alert>>, ApiError> {
    caller.require(Role::Staff)?;
    let limit = q.limit.unwrap_or(200).clamp(1, 1000);
    Ok(Json(
        state
            .db
            .read(move |c| devices::alerts(c, q.device.as_deref(), q.open.unwrap_or(false), limit))
            .await?,
    ))
}

/// Messages the box refused (bad JSON, unknown type, oversize, not authorized), newest first.
#[utoipa::path(get, path = "/api/v1/dead-letters", params(("device" = Option<String>, Query), ("limit" = Option<i64>, Query)),
    responses((status = 200, body = [devices::DeadLetter])))]
pub async fn list_dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Vec<devices::DeadLetter>>, ApiError> {
    caller.require(Role::Staff)?;
    let limit = q.limit.unwrap_or(200).clamp(1, 1000);
    Ok(Json(
        state
            .db
            .read(move |c| devices::dead_letters(c, q.device.as_deref(), limit))
            .await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/audit", params(("before" = Option<i64>, Query), ("limit" = Option<i64>, Query)),
    responses((status = 200, body = [audit::AuditEntry])))]
pub async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Vec<audit::AuditEntry>>, ApiError> {
    caller.require(Role::Manager)?;
    let limit = q.limit.unwrap_or(200).clamp(1, 1000);
    Ok(Json(
        state
            .db
            .read(move |c| audit::list(c, q.before, limit))
            .await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/users", responses((status = 200, body = [auth::User])))]
pub async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<auth::User>>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(Json(state.db.read(auth::list_users).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct NewUser {
    #[schema(pattern = "^[A-Za-z0-9_.@-]{1,64}$")]
    pub username: String,
    /// At least 10 characters.
    #[schema(min_length = 10)]
    pub password: String,
    pub role: Role,
}

#[utoipa::path(post, path = "/api/v1/users", request_body = NewUser, responses((status = 201, body = auth::User), (status = 409)))]
pub async fn add_user(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<NewUser>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let now = state.now_ms();
    let user = auth::User {
        username: req.username.clone(),
        role: req.role,
        created_at: state.clock.now().to_string(),
        disabled: false,
    };
    auth::validate_username(&req.username)
        .and_then(|_| auth::validate_password(&req.password))
        .map_err(ApiError::from)?;
    let pass = req.password;
    let hash = state
        .password_work(move || auth::hash_password(&pass))
        .await;
    state
        .db
        .write(move |c| {
            if let Err(e) = auth::add_user_hashed(c, &req.username, &hash, req.role, now) {
                return Ok(Err(e));
            }
            audit::record(
                c,
                now,
                &caller.name,
                "user.add",
                &req.username,
                req.role.as_str(),
            )?;
            Ok(Ok(()))
        })
        .await??;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}
