//! Live device state for the staff UI, as Server-Sent Events (`GET /api/v1/events`).
//!
//! A stream starts with a `devices` event carrying the whole device list, then sends one `device`
//! event (the device's committed summary) each time the ingest writer or the API announces a
//! change (online/offline, status, alerts, commands acknowledged, provisioning), or
//! `device-removed` when it is gone. A browser that falls behind gets the whole list again. Each
//! stream ends after [`STREAM_LIFETIME`]; the browser's `EventSource` reconnects by itself, which
//! checks the session again, so an expired or ended session stops receiving updates. Streams
//! also end when the box shuts down, so they do not hold up the HTTP server's graceful stop.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::caller::Caller;
use super::{ApiError, AppState};
use crate::auth::Role;
use crate::devices::registry;

/// How long one stream lives before the browser must reconnect (and so re-authenticate).
pub const STREAM_LIFETIME: Duration = Duration::from_secs(300);

fn event(name: &str, data: &serde_json::Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

async fn full_list(state: &AppState) -> Event {
    match state.db.read(registry::list).await {
        Ok(mut list) => {
            super::api::mark_stale(state, &mut list);
            event("devices", &json!(list))
        }
        Err(e) => {
            tracing::error!(error = %e, "live: device list not read");
            event(
                "error",
                &json!({"message": "device list unavailable; retrying"}),
            )
        }
    }
}

/// Live device changes (Server-Sent Events): `devices` (full list, first), `device`,
/// `device-removed`.
#[utoipa::path(get, path = "/api/v1/events",
    responses((status = 200, description = "text/event-stream: `devices` (the full list, first and after a lag), `device` (one DeviceSummary), `device-removed` ({id})"), (status = 401)))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require(Role::Staff)?;
    // Subscribe before reading the list, so no change between the two is lost.
    let rx = state.device_changes.subscribe();
    let first = full_list(&state)
        .await
        .retry(Duration::from_secs(2))
        .id("0");
    let deadline = tokio::time::Instant::now() + STREAM_LIFETIME;
    let changes = stream::unfold((state, rx), move |(state, mut rx)| async move {
        let received = tokio::select! {
            r = tokio::time::timeout_at(deadline, rx.recv()) => r,
            _ = state.device_changes.closed() => return None,
        };
        let next = match received {
            Err(_) | Ok(Err(RecvError::Closed)) => return None,
            Ok(Ok(id)) => {
                let key: Arc<str> = id.clone();
                match state.db.read(move |c| registry::get(c, &key)).await {
                    Ok(Some(d)) => event("device", &json!(d)),
                    Ok(None) => event("device-removed", &json!({"id": &*id})),
                    Err(_) => full_list(&state).await,
                }
            }
            Ok(Err(RecvError::Lagged(_))) => full_list(&state).await,
        };
        Some((Ok(next), (state, rx)))
    });
    let stream = stream::once(async move { Ok(first) }).chain(changes.boxed());
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
