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

/// Ready when the database answers, the broker accepts and the ingest queue is not backed up.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let db_ok = state
        .db
        .read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
        .await
        .is_ok();
    let queue = state.broker.queue_depth();
    let ingest_ok = queue < state.config.mqtt.ingest_queue;
    let broker_ok = state.mqtt.is_accepting();
    let ok = db_ok && ingest_ok && broker_ok;
    let body = json!({
        "ready": ok,
        "checks": {"database": db_ok, "broker": broker_ok, "ingest_queue": {"ok": ingest_ok, "depth": queue}},
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
