//! Support tickets and the HQ sync status, as the staff UI and scripts see them.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

use super::caller::Caller;
use super::error::JsonBody;
use super::{ApiError, AppState};
use crate::auth::Role;
use crate::ops::audit;
use crate::sync::state::{OutboxDepth, SyncStatus};
use crate::tickets::{self, NewTicket, Ticket};

/// The sync status with the outbox depth read now.
pub async fn sync_status_now(state: &AppState) -> Result<SyncStatus, ApiError> {
    let ((business, telemetry), quarantined, dropped, cursor) = state
        .db
        .read(|c| {
            Ok((
                crate::outbox::depth(c)?,
                crate::sync::apply::quarantined(c)?,
                crate::outbox::dropped_total(c)?,
                crate::sync::apply::cursor(c)?,
            ))
        })
        .await?;
    let mut s = state.sync.snapshot();
    s.quarantined = quarantined;
    s.outbox_dropped = dropped;
    s.cursor = s.cursor.or(cursor);
    s.outbox = OutboxDepth {
        business,
        telemetry,
    };
    Ok(s)
}

/// The link to HQ: connected, cursor, lag, outbox backlog, last success and error.
#[utoipa::path(get, path = "/api/v1/sync", responses((status = 200, body = SyncStatus)))]
pub async fn sync_status(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<SyncStatus>, ApiError> {
    caller.require(Role::Staff)?;
    Ok(Json(sync_status_now(&state).await?))
}

/// What a ticket carries about the box: enough for support to see the state of the store at the
/// moment it was opened, and never a secret (no tokens, passwords or hashes; the HQ URL only).
async fn diagnostics(state: &AppState) -> Result<Value, ApiError> {
    let sync = sync_status_now(state).await?;
    let now = state.now_ms();
    let facts = state
        .db
        .read(move |c| {
            let (total, online): (i64, i64) = c.query_row(
                "SELECT count(*), coalesce(sum(online), 0) FROM devices",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let mut stmt = c.prepare(
                "SELECT id FROM devices WHERE online = 0 ORDER BY id LIMIT 50",
            )?;
            let offline: Vec<String> = stmt
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut stmt = c.prepare(
                "SELECT device_id, code, severity, message FROM alerts WHERE cleared_ms IS NULL
                 ORDER BY raised_ms DESC LIMIT 20",
            )?;
            let alerts: Vec<Value> = stmt
                .query_map([], |r| {
                    Ok(json!({"device": r.get::<_, String>(0)?, "code": r.get::<_, String>(1)?,
                              "severity": r.get::<_, String>(2)?, "message": r.get::<_, String>(3)?}))
                })?
                .collect::<Result<_, _>>()?;
            let mut stmt = c.prepare(
                "SELECT received_ms, coalesce(device_id, ''), topic, reason FROM dead_letters
                 WHERE received_ms > ?1 ORDER BY id DESC LIMIT 10",
            )?;
            let rejected: Vec<Value> = stmt
                .query_map([now - 86_400_000], |r| {
                    Ok(json!({"at": crate::db::ts_from_ms(r.get(0)?).to_string(),
                              "device": r.get::<_, String>(1)?, "topic": r.get::<_, String>(2)?,
                              "reason": r.get::<_, String>(3)?}))
                })?
                .collect::<Result<_, _>>()?;
            Ok(json!({
                "devices": {"total": total, "online": online, "offline": offline},
                "open_alerts": alerts,
                "recent_rejected_messages": rejected,
            }))
        })
        .await?;
    let cfg = &state.config;
    Ok(json!({
        "version": crate::VERSION,
        "store_id": cfg.store.id,
        "uptime_s": state.started.elapsed().as_secs(),
        "at": state.clock.now().to_string(),
        "timezone": cfg.store.timezone,
        "sync": {
            "configured": sync.configured,
            "hq_url": sync.hq_url,
            "connected": sync.connected,
            "cursor": sync.cursor,
            "lag_events": sync.lag_events,
            "outbox": sync.outbox,
            "last_success": sync.last_success,
            "last_error": sync.last_error,
        },
        "mqtt_connections": state.broker.presence.live_count(),
        "ingest_queue": state.broker.queue_depth(),
        "devices": facts["devices"],
        "open_alerts": facts["open_alerts"],
        "recent_rejected_messages": facts["recent_rejected_messages"],
    }))
}

/// The support bundle (`crate::ops::diag`) made now, with what only the running server knows: the
/// live link to HQ, MQTT connections, uptime.
pub async fn bundle_now(state: &AppState, made_by: &str) -> Result<Value, ApiError> {
    let sync = sync_status_now(state).await?;
    let live = json!({
        "uptime_s": state.started.elapsed().as_secs(),
        "sync": sync,
        "mqtt_connections": state.broker.presence.live_count(),
        "ingest_queue": state.broker.queue_depth(),
    });
    let config = state.config.clone();
    let now = state.clock.now();
    let made_by = made_by.to_string();
    Ok(state
        .db
        .read(move |c| {
            Ok(crate::ops::diag::bundle(
                &config,
                Ok(c),
                &made_by,
                now,
                Some(live),
            ))
        })
        .await?)
}

/// The support bundle: one JSON document for first-level support (version, config with secrets
/// redacted, sync, devices, alerts, database health, disk, recent logs, systemd state). It
/// carries no secret. The same document `storebox diag` writes.
#[utoipa::path(get, path = "/api/v1/diag",
    responses((status = 200, description = "the support bundle (JSON, attachment)", body = Object)))]
pub async fn diag(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Role::Manager)?;
    let bundle = bundle_now(&state, &format!("web ({})", caller.name)).await?;
    let name = format!(
        "storebox-diag-{}-{}.json",
        state.config.store.id,
        state.clock.now().strftime("%Y%m%dT%H%M%SZ")
    )
    .replace(
        |c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)),
        "_",
    );
    let body = serde_json::to_string_pretty(&bundle).unwrap_or_default();
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/json".to_string(),
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (axum::http::header::CACHE_CONTROL, "no-store".to_string()),
        ],
        body,
    )
        .into_response())
}

/// Open a support ticket; it goes to HQ with a diagnostic summary of the box, and the whole
/// support bundle when `attach_bundle` is true.
#[utoipa::path(post, path = "/api/v1/tickets", request_body = NewTicket,
    responses((status = 201, body = Ticket), (status = 400), (status = 404, description = "`unknown_device`: no such device is provisioned")))]
pub async fn open_ticket(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<NewTicket>,
) -> Result<Response, ApiError> {
    caller.require(Role::Staff)?;
    let mut diagnostics = diagnostics(&state).await?;
    if req.attach_bundle {
        diagnostics["bundle"] = bundle_now(&state, &format!("ticket ({})", caller.name)).await?;
    }
    let now = state.now_ms();
    let ticket = state
        .db
        .write(move |c| {
            let tx = crate::db::immediate(c)?;
            if let Err(m) = tickets::validate(&tx, &req)? {
                return Ok(Err(m));
            }
            let t = tickets::open(&tx, &req, &caller.name, diagnostics, now)?;
            audit::record(&tx, now, &caller.name, "ticket.open", &t.id, &t.subject)?;
            tx.commit()?;
            Ok(Ok(t))
        })
        .await?
        .map_err(|e| match e {
            tickets::Invalid::Field(m) => ApiError::bad_request("invalid", m),
            tickets::Invalid::UnknownDevice(m) => ApiError::not_found("unknown_device", m),
        })?;
    Ok((StatusCode::CREATED, Json(ticket)).into_response())
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct GuideList {
    pub guides: Vec<crate::tickets::guides::GuideView>,
}

/// Support guides HQ sent (at most 500, by title), each for device alert codes and ticket
/// categories; the staff UI shows one next to a matching alert and on the ticket form.
#[utoipa::path(get, path = "/api/v1/guides", responses((status = 200, body = GuideList)))]
pub async fn list_guides(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<GuideList>, ApiError> {
    caller.require(Role::Staff)?;
    let guides = state.db.read(crate::tickets::guides::list).await?;
    Ok(Json(GuideList { guides }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TicketList {
    pub tickets: Vec<Ticket>,
}

/// Support tickets, newest first, with HQ's replies.
#[utoipa::path(get, path = "/api/v1/tickets", responses((status = 200, body = TicketList)))]
pub async fn list_tickets(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<TicketList>, ApiError> {
    caller.require(Role::Staff)?;
    let tickets = state.db.read(|c| tickets::list(c, 200)).await?;
    Ok(Json(TicketList { tickets }))
}

#[utoipa::path(get, path = "/api/v1/tickets/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Ticket), (status = 404)))]
pub async fn get_ticket(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Ticket>, ApiError> {
    caller.require(Role::Staff)?;
    let id2 = id.clone();
    state
        .db
        .read(move |c| tickets::get(c, &id2))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("unknown_ticket", format!("ticket {id:?} not found")))
}
