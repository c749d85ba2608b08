//! The reference HQ's HTTP face: the sync endpoints stores call (`/sync/v1/…`, store bearer token),
//! the authoring and fleet API (`/hq/v1/…`, a console session or the admin bearer token) and the
//! console in the browser at `/` ([`super::web`]).

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::console::Caller;
use super::error::{HqError, HqResult};
use super::storage::HqRole;
use super::storage::{EventQuery, Storage, StoreIdent, TicketReply};
use crate::clock::SharedClock;
use crate::proto::{HqEvent, PushBatch, Target};
use axum::http::Method;

/// Largest push or authoring JSON body accepted (CSV imports are streamed to disk instead).
const MAX_JSON_BODY: usize = 64 << 20;

#[derive(Clone)]
pub struct HqState {
    pub storage: Storage,
    pub clock: SharedClock,
    pub admin_token_hash: Arc<String>,
    pub spool_dir: std::path::PathBuf,
    pub sign_in: Arc<super::console::SignInGuard>,
    // --- releases ---
    /// `[hq_server] release_public_keys`, parsed.
    pub release_keys: Arc<Vec<ed25519_dalek::VerifyingKey>>,
    pub max_release_bytes: u64,
    /// Wakes the rollout engine (after a `release.status` push or a rollout change).
    pub rollout_poke: Arc<tokio::sync::Notify>,
    pub fleet: Arc<super::fleet::FleetState>,
}

impl HqState {
    pub fn now_ms(&self) -> i64 {
        self.clock.now().as_millisecond()
    }
}

pub fn router(state: HqState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/sync/v1/feed", get(feed))
        .route("/sync/v1/snapshot", get(snapshot))
        .route("/sync/v1/events", post(push))
        .route("/hq/v1/events", post(author))
        .route("/hq/v1/import", post(import_csv))
        .route("/hq/v1/stores", get(stores))
        .route("/hq/v1/store-events", get(store_events))
        .route("/hq/v1/tickets", get(tickets))
        .route("/hq/v1/tickets/{id}/replies", post(reply))
        .route(
            "/hq/v1/session",
            post(super::console::sign_in).delete(super::console::sign_out),
        )
        .route("/hq/v1/me", get(super::console::me))
        .merge(super::release_api::routes())
        // --- console: shell, fleet, story ---
        .route("/", get(super::web::index))
        .route("/assets/{*path}", get(super::web::asset))
        .route("/hq/v1/fleet", get(super::fleet::fleet))
        .route("/hq/v1/fleet/stream", get(super::fleet::stream))
        .route("/hq/v1/stores/{id}/story", get(super::story::story))
        // --- console: authoring preview, groups ---
        .merge(super::author::routes())
        // --- support desk ---
        .merge(super::desk::routes())
        .with_state(state)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

pub(super) async fn require_store(state: &HqState, headers: &HeaderMap) -> HqResult<StoreIdent> {
    let Some(token) = bearer(headers) else {
        return Err(missing_token());
    };
    state
        .storage
        .store_by_token(token)
        .await?
        .ok_or(HqError::Unauthorized {
            code: "bad_token",
            message: "unknown store token",
        })
}

fn missing_token() -> HqError {
    HqError::Unauthorized {
        code: "unauthorized",
        message: "send a bearer token",
    }
}

/// The caller, if it holds one of `roles` (admin always does).
pub(super) async fn require(
    state: &HqState,
    method: &axum::http::Method,
    headers: &HeaderMap,
    roles: &[HqRole],
    what: &str,
) -> HqResult<Caller> {
    let c = super::console::caller(state, method, headers).await?;
    super::console::need(&c, roles, what)?;
    Ok(c)
}

/// JSON answer, gzip-compressed when the client accepts it and it is worth it.
pub(super) fn json_response(headers: &HeaderMap, v: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("gzip"));
    if gzip && body.len() > 1024 {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        if enc.write_all(&body).is_ok() {
            if let Ok(z) = enc.finish() {
                return (
                    [
                        (header::CONTENT_TYPE, "application/json"),
                        (header::CONTENT_ENCODING, "gzip"),
                    ],
                    z,
                )
                    .into_response();
            }
        }
    }
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Reads a JSON body (optionally `Content-Encoding: gzip`), bounded.
pub(super) async fn json_body<T: serde::de::DeserializeOwned>(req: Request) -> HqResult<T> {
    let gzip = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let bytes = axum::body::to_bytes(req.into_body(), MAX_JSON_BODY)
        .await
        .map_err(|e| HqError::invalid("bad_body", format!("cannot read body: {e}")))?;
    let data = if gzip {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .take(MAX_JSON_BODY as u64 * 4)
            .read_to_end(&mut out)
            .map_err(|e| HqError::invalid("bad_body", format!("bad gzip body: {e}")))?;
        out
    } else {
        bytes.to_vec()
    };
    // Fast path without path tracking; a body that fails is parsed again to name the place.
    if let Ok(v) = serde_json::from_slice(&data) {
        return Ok(v);
    }
    let de = &mut serde_json::Deserializer::from_slice(&data);
    serde_path_to_error::deserialize(de)
        .map_err(|e| HqError::invalid("bad_body", format!("body at {}: {}", e.path(), e.inner())))
}

#[derive(Deserialize)]
struct FeedQuery {
    #[serde(default)]
    after: i64,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    wait: Option<u64>,
}

async fn feed(
    State(state): State<HqState>,
    headers: HeaderMap,
    Query(q): Query<FeedQuery>,
) -> HqResult<Response> {
    let store = require_store(&state, &headers).await?;
    if q.after < 0 {
        return Err(HqError::invalid("bad_cursor", "after must be >= 0"));
    }
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let wait = Duration::from_secs(q.wait.unwrap_or(0).min(60));
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = state.storage.changes();
    state.storage.touch(&store.id, state.now_ms()).await?;
    loop {
        changes.borrow_and_update();
        let page = state.storage.feed(&store, q.after, limit).await?;
        if !page.events.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(json_response(&headers, &page));
        }
        // Nothing for this store yet: wait for events authored on any node, or the deadline.
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            return Ok(json_response(&headers, &page));
        }
    }
}

async fn snapshot(State(state): State<HqState>, headers: HeaderMap) -> HqResult<Response> {
    let store = require_store(&state, &headers).await?;
    let snap = state.storage.snapshot(&store).await?;
    Ok(json_response(&headers, &snap))
}

async fn push(State(state): State<HqState>, req: Request) -> HqResult<Response> {
    let store = require_store(&state, req.headers()).await?;
    let headers = req.headers().clone();
    let batch: PushBatch = json_body(req).await?;
    for w in batch.events.windows(2) {
        if w[1].seq <= w[0].seq {
            return Err(HqError::invalid(
                "bad_order",
                format!(
                    "events must be in increasing seq order ({} after {})",
                    w[1].seq, w[0].seq
                ),
            ));
        }
    }
    let release_status = batch
        .events
        .iter()
        .any(|e| e.event_type == crate::proto::StoreEventType::ReleaseStatus.as_str());
    let ack = state
        .storage
        .ingest(&store.id, batch, state.now_ms())
        .await?;
    if release_status {
        state.rollout_poke.notify_one();
    }
    Ok(json_response(&headers, &ack))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorRequest {
    target: Target,
    events: Vec<HqEvent>,
}

async fn author(State(state): State<HqState>, req: Request) -> HqResult<Response> {
    require(
        &state,
        req.method(),
        req.headers(),
        &[HqRole::Operator],
        "authoring",
    )
    .await?;
    let r: AuthorRequest = json_body(req).await?;
    super::check_target_shape(&r.target)?;
    let events = super::validate_events(r.events)?;
    let seqs = state
        .storage
        .author(&r.target, events, state.now_ms())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"accepted": seqs.len(), "first_seq": seqs.first(), "last_seq": seqs.last()})),
    )
        .into_response())
}

#[derive(Deserialize)]
struct ImportQuery {
    target: String,
}

/// Largest CSV accepted by `/hq/v1/import` (about a million price rows).
const MAX_CSV_BODY: u64 = 128 << 20;

/// CSV bulk authoring: the body is streamed to a spool file (bounded), every row is validated
/// (pure: line-numbered errors, nothing applied on the first bad row), then all rows are appended
/// in one transaction: all or nothing.
async fn import_csv(
    State(state): State<HqState>,
    Query(q): Query<ImportQuery>,
    req: Request,
) -> HqResult<Response> {
    require(
        &state,
        req.method(),
        req.headers(),
        &[HqRole::Operator],
        "importing",
    )
    .await?;
    let target = Target::parse_query(&q.target).map_err(|m| HqError::invalid("bad_target", m))?;
    super::check_target_shape(&target)?;
    let spool = state
        .spool_dir
        .join(format!("import-{}.csv", uuid::Uuid::new_v4().simple()));
    let mut file = tokio::fs::File::create(&spool)
        .await
        .map_err(|e| HqError::storage(format!("cannot create {}: {e}", spool.display())))?;
    let mut stream = req.into_body().into_data_stream();
    let write_result: HqResult<()> = async {
        use tokio::io::AsyncWriteExt;
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| HqError::invalid("bad_body", format!("cannot read body: {e}")))?;
            total += chunk.len() as u64;
            if total > MAX_CSV_BODY {
                return Err(HqError::invalid(
                    "too_large",
                    format!("CSV body is larger than {MAX_CSV_BODY} bytes; split the file"),
                ));
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| HqError::storage(format!("import spool write: {e}")))?;
        }
        file.flush()
            .await
            .map_err(|e| HqError::storage(format!("import spool flush: {e}")))?;
        Ok(())
    }
    .await;
    drop(file);
    let parsed = match write_result {
        Ok(()) => {
            let spool2 = spool.clone();
            tokio::task::spawn_blocking(move || read_csv(&spool2))
                .await
                .map_err(HqError::storage)
                .and_then(|r| r)
        }
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_file(&spool).await;
    let events = parsed?;
    let n = events.len();
    let seqs = state
        .storage
        .author(&target, events, state.now_ms())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"accepted": n, "last_seq": seqs.last().copied().unwrap_or(0)})),
    )
        .into_response())
}

/// Parses and validates a spooled CSV (proto's CSV form; the same checks as the JSON API).
fn read_csv(path: &std::path::Path) -> HqResult<Vec<super::storage::Authored>> {
    let file = std::fs::File::open(path)
        .map_err(|e| HqError::storage(format!("cannot open {}: {e}", path.display())))?;
    let reader = std::io::BufReader::with_capacity(1 << 16, file);
    let mut out = Vec::new();
    crate::proto::csv_events(reader, |_, ev| {
        let body = ev.body()?;
        out.push(super::storage::Authored {
            id: super::new_event_id("hq"),
            body,
        });
        Ok(())
    })
    .map_err(|(line, m)| HqError::InvalidRow {
        line,
        message: format!("{m}; nothing was applied"),
    })?;
    if out.is_empty() {
        return Err(HqError::invalid("invalid_row", "the CSV has no rows"));
    }
    Ok(out)
}

pub(super) const READERS: &[HqRole] = &[HqRole::Operator, HqRole::Support];

async fn stores(State(state): State<HqState>, headers: HeaderMap) -> HqResult<Response> {
    require(&state, &Method::GET, &headers, READERS, "the fleet").await?;
    let list = state.storage.list_stores().await?;
    let head = state.storage.head().await?;
    Ok(
        Json(json!({"head": head, "stores": list, "engine": state.storage.engine()}))
            .into_response(),
    )
}

async fn store_events(
    State(state): State<HqState>,
    headers: HeaderMap,
    Query(q): Query<EventQuery>,
) -> HqResult<Response> {
    require(&state, &Method::GET, &headers, READERS, "store events").await?;
    let since_ms = match &q.since {
        None => None,
        Some(s) => Some(
            s.parse::<jiff::Timestamp>()
                .map_err(|e| {
                    HqError::invalid(
                        "bad_since",
                        format!("since {s:?} is not an RFC 3339 instant: {e}"),
                    )
                })?
                .as_millisecond(),
        ),
    };
    let events = state.storage.store_events(q, since_ms).await?;
    Ok(json_response(&headers, &json!({"events": events})))
}

async fn tickets(State(state): State<HqState>, headers: HeaderMap) -> HqResult<Response> {
    require(&state, &Method::GET, &headers, READERS, "tickets").await?;
    let list = state.storage.tickets().await?;
    Ok(Json(json!({"tickets": list})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyRequest {
    message: String,
    #[serde(default)]
    author: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyQuery {
    /// The store the ticket came from; needed only when two stores used the same ticket id.
    #[serde(default)]
    store: Option<String>,
}

/// A reply to a store's ticket: recorded at HQ and authored as `ticket.update` for that store.
async fn reply(
    State(state): State<HqState>,
    Path(ticket): Path<String>,
    Query(q): Query<ReplyQuery>,
    req: Request,
) -> HqResult<Response> {
    let caller = require(
        &state,
        req.method(),
        req.headers(),
        &[HqRole::Support],
        "replying to tickets",
    )
    .await?;
    let r: ReplyRequest = json_body(req).await?;
    let reply = TicketReply {
        event_id: super::new_event_id("reply"),
        author: r.author.unwrap_or_else(|| {
            if caller.role == HqRole::Admin && caller.name == "admin token" {
                "HQ support".into()
            } else {
                caller.name.clone()
            }
        }),
        message: r.message,
        status: r.status,
    };
    // Checked before anything is stored (the engine checks again inside its transaction).
    super::reply_event(&ticket, &reply)?;
    let seq = state
        .storage
        .reply(q.store.as_deref(), &ticket, reply, state.now_ms())
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"seq": seq}))).into_response())
}
