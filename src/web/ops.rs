//! Liveness, readiness and Prometheus metrics endpoints (no sign-in: they reveal no store data).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::AppState;

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the database answers, the broker accepts, device ingest can write and every
/// long-running task runs. A failed task is named (`failed_task`); the process exits seconds later.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let db_ok = state
        .db
        .read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
        .await
        .is_ok();
    let queue = state.broker.queue_depth();
    let failure = state.health.ingest_failure();
    let ingest_ok = failure.is_none();
    let broker_ok = state.mqtt.is_accepting();
    let task = state.health.failed_task();
    let ok = db_ok && ingest_ok && broker_ok && task.is_none();
    let body = json!({
        "ready": ok,
        "checks": {
            "database": db_ok,
            "broker": broker_ok,
            "ingest": {"ok": ingest_ok, "depth": queue, "failure": failure},
            "tasks": {"ok": task.is_none(), "failed_task": task.as_ref().map(|t| t.task), "cause": task.as_ref().map(|t| &t.cause)},
        },
    });
    (
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(body),
    )
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let m = &state.metrics;
    m.db_size_bytes.set(state.db.size_bytes());
    m.ingest_queue_depth.set(state.broker.queue_depth() as i64);
    let answers = state.price_answers.stats();
    m.price_cache_entries.set(answers.entries as i64);
    m.price_cache_bytes.set(answers.bytes);
    if let Ok((total, online, alerts)) = state
        .db
        .read(|c| {
            Ok(c.query_row(
                "SELECT (SELECT count(*) FROM devices), (SELECT coalesce(sum(online),0) FROM devices),
                        (SELECT count(*) FROM alerts WHERE cleared_ms IS NULL)",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)),
            )?)
        })
        .await
    {
        m.devices_total.set(total);
        m.devices_online.set(online);
        m.alerts_open.set(alerts);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}
