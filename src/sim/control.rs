//! The simulator's control API (docs/simulator.md): JSON over HTTP on loopback, one per
//! simulator. Tests, the demo and people steer the virtual devices with it and read their state.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::device::{Action, DeviceHandle, Refused};

#[derive(Clone)]
pub struct Ctl {
    pub devices: Arc<BTreeMap<String, DeviceHandle>>,
}

pub struct CtlError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl IntoResponse for CtlError {
    fn into_response(self) -> Response {
        let mut err = json!({"code": self.code, "message": self.message});
        if let Some(f) = self.field {
            err["field"] = json!(f);
        }
        (self.status, Json(json!({ "error": err }))).into_response()
    }
}

impl From<Refused> for CtlError {
    fn from(r: Refused) -> Self {
        CtlError {
            status: StatusCode::from_u16(r.status).unwrap_or(StatusCode::CONFLICT),
            code: r.code,
            message: r.message,
            field: None,
        }
    }
}

fn bad(field: &str, message: impl Into<String>) -> CtlError {
    CtlError {
        status: StatusCode::BAD_REQUEST,
        code: "bad_request",
        message: message.into(),
        field: Some(field.to_string()),
    }
}

/// Parses a JSON body; an empty body is `{}`. Errors name the field.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, CtlError> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    let mut de = serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        // serde names unknown and missing fields in its message rather than its path.
        let field = if path == "." {
            inner
                .split('`')
                .nth(1)
                .map(str::to_string)
                .unwrap_or_else(|| "body".into())
        } else {
            path
        };
        bad(&field, format!("field {field:?}: {inner}"))
    })
}

pub fn router(ctl: Ctl) -> Router {
    Router::new()
        .route("/devices", get(list))
        .route("/devices/{id}", get(one))
        .route("/devices/{id}/online", post(online))
        .route("/devices/{id}/offline", post(offline))
        .route("/devices/{id}/alerts", post(raise))
        .route("/devices/{id}/alerts/{code}/clear", post(clear))
        .route("/devices/{id}/reading", post(reading))
        .route("/devices/{id}/jam", post(jam))
        .route("/devices/{id}/burst", post(burst))
        .route("/devices/{id}/acking", post(acking))
        .route("/devices/{id}/slow", post(slow))
        .route("/devices/{id}/scan", post(scan))
        .route("/devices/{id}/checkout", post(checkout))
        .route("/devices/{id}/weigh", post(weigh))
        .route("/devices/{id}/door", post(door))
        .fallback(|| async {
            CtlError {
                status: StatusCode::NOT_FOUND,
                code: "not_found",
                message: "no such endpoint; see docs/simulator.md".into(),
                field: None,
            }
        })
        .with_state(ctl)
}

impl Ctl {
    fn device(&self, id: &str) -> Result<&DeviceHandle, CtlError> {
        self.devices.get(id).ok_or_else(|| CtlError {
            status: StatusCode::NOT_FOUND,
            code: "unknown_device",
            message: format!("no virtual device {id:?}"),
            field: None,
        })
    }

    async fn act(&self, id: &str, action: Action) -> Result<Json<Value>, CtlError> {
        Ok(Json(self.device(id)?.act(action).await?))
    }
}

async fn list(State(ctl): State<Ctl>) -> Json<Value> {
    let list: Vec<Value> = ctl
        .devices
        .values()
        .map(|d| {
            let s = d.state.lock();
            json!({
                "id": s.id, "kind": s.kind, "online": s.online, "connected": s.connected,
                "jammed": s.jammed, "acking": s.acking, "delay_ms": s.delay_ms,
                "open_alerts": s.alerts.keys().collect::<Vec<_>>(),
                "pending_events": s.pending_events.len(),
            })
        })
        .collect();
    Json(json!({ "devices": list }))
}

async fn one(State(ctl): State<Ctl>, Path(id): Path<String>) -> Result<Json<Value>, CtlError> {
    let d = ctl.device(&id)?;
    let s = d.state.lock();
    Ok(Json(serde_json::to_value(&*s).unwrap_or_default()))
}

async fn online(State(ctl): State<Ctl>, Path(id): Path<String>) -> Result<Json<Value>, CtlError> {
    ctl.act(&id, Action::Online).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OfflineBody {
    #[serde(default)]
    graceful: bool,
}

async fn offline(
    State(ctl): State<Ctl>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<Json<Value>, CtlError> {
    let OfflineBody { graceful } = body(&b)?;
    ctl.act(&id, Action::Offline { graceful }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RaiseBody {
    code: String,
    #[serde(default = "warning")]
    severity: String,
    #[serde(default)]
    message: String,
}

fn warning() -> String {
    "warning".into()
}

fn check_code(code: &str) -> Result<(), CtlError> {
    if code.is_empty()
        || code.len() > 64
        || !code
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(bad(
            "code",
            format!("code {code:?} must be 1-64 characters of UPPER_SNAKE_CASE"),
        ));
    }
    Ok(())
}

async fn raise(
    State(ctl): State<Ctl>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<Json<Value>, CtlError> {
    let r: RaiseBody = body(&b)?;
    check_code(&r.code)?;
    if !["info", "warning", "critical"].contains(&r.severity.as_str()) {
        return Err(bad(
            "severity",
            format!(
                "severity {:?} must be info, warning or critical",
                r.severity
            ),
        ));
    }
    let message = if r.message.is_empty() {
        format!("{} (simulated)", r.code)
    } else {
        r.message
    };
    ctl.act(
        &id,
        Action::Raise {
            code: r.code,
            severity: r.severity,
            message,
        },
    )
    .await
}

async fn clear(
    State(ctl): State<Ctl>,
    Path((id, code)): Path<(String, String)>,
) -> Result<Json<Value>, CtlError> {
    check_code(&code)?;
    ctl.act(&id, Action::Clear { code }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadingBody {
    metric: String,
    value: f64,
}

async fn reading(
    State(ctl): State<Ctl>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<Json<Value>, CtlError> {
    let r: ReadingBody = body(&b)?;
    if r.metric.is_empty() || r.metric.len() > 64 {
        return Err(bad("metric", "metric must be 1-64 characters"));
    }
    if !r.value.is_finite() {
        return Err(bad("value", "value must be a finite number"));
    }
    ctl.act(
        &id,
        Action::Reading {
            metric: r.metric,
            value: r.value,
        },
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OnBody {
    #[serde(default = "yes")]
    on: bool,
}

fn yes() -> bool {
    true
}

async fn jam(
    State(ctl): State<Ctl>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<Json<Value>, CtlError> {
    let OnBody { on } = body(&b)?;
    ctl.act(&id, Action::Jam(on)).await
}

async fn acking(
    State(ctl): State<Ctl>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<Json<Value>, CtlError> {
    let OnBody { on } = body(&b)?;
    ctl.act(&id, Action::Acking(on)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BurstBody {
    count: u32,
    #[serde(default = "telemetry")]
    what: String,
}

fn telemetry() -> String {
    "telemetry".into()
}

async fn burst(
    State(ctl): State<Ctl>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<Json<Value>, CtlError> {
    let r: BurstBody = body(&b)?;
    if r.count == 0 || r.count > 10_000 {
        return Err(bad("count", "count must be 1-10000"));
    }
    let events = match r.what.as_str() {
        "telemetry" => false,
        "events" => true,
        other => {
            return Err(bad(
                "what",
                format!("what {other:?} must be \"telemetry\" or \"events\""),
            ))
        }
    };
    ctl.act(
        &id,
        Action::Burst {
            count: r.count,
            events,
        },
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlowBody {
    delay_ms: u64,
}

async fn slow(
    State(ctl): State<Ctl>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<Json<Value>, CtlError> {
    let SlowBody { delay_ms } = body(&b)?;
    if delay_ms > 60_000 {
        return Err(bad("delay_ms", "delay_ms must be 0-60000"));
    }
    ctl.act(&id, Action::Slow(delay_ms)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanBody {
    sku: Option<String>,
    quantity: Option<i64>,
}

async fn scan(
    State(ctl): State<Ctl>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<Json<Value>, CtlError> {
    let ScanBody { sku, quantity } = body(&b)?;
    if quantity.is_some_and(|q| !(1..=1_000_000).contains(&q)) {
        return Err(bad(
            "quantity",
            "quantity must be 1-1000000 (units, or grams for kg items)",
        ));
    }
    ctl.act(&id, Action::Scan { sku, quantity }).await
}

async fn checkout(State(ctl): State<Ctl>, Path(id): Path<String>) -> Result<Json<Value>, CtlError> {
    ctl.act(&id, Action::Checkout).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeighBody {
    sku: Option<String>,
    grams: Option<i64>,
}

async fn weigh(
    State(ctl): State<Ctl>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<Json<Value>, CtlError> {
    let WeighBody { sku, grams } = body(&b)?;
    if grams.is_some_and(|g| !(1..=1_000_000).contains(&g)) {
        return Err(bad("grams", "grams must be 1-1000000"));
    }
    ctl.act(&id, Action::Weigh { sku, grams }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DoorBody {
    open: bool,
}

async fn door(
    State(ctl): State<Ctl>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<Json<Value>, CtlError> {
    let DoorBody { open } = body(&b)?;
    ctl.act(&id, Action::Door(open)).await
}
