//! The reference HQ's HTTP face: the sync endpoints stores call (`/sync/v1/…`, store bearer token),
//! the authoring and fleet API (`/hq/v1/…`, admin bearer token) and a plain HTML fleet page at `/`.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::store::{self, EventQuery, FeedError, Validator};
use crate::catalog::HqEvent;
use crate::clock::SharedClock;
use crate::db::Db;
use crate::sync::protocol::{PushBatch, Target};
use crate::web::ApiError;

/// Largest push or authoring JSON body accepted (CSV imports are streamed to disk instead).
const MAX_JSON_BODY: usize = 64 << 20;

#[derive(Clone)]
pub struct HqState {
    pub db: Db,
    pub clock: SharedClock,
    pub admin_token_hash: Arc<String>,
    pub retain_events: u64,
    /// The newest authored seq; feed long-polls wait for it to change.
    pub head: Arc<tokio::sync::watch::Sender<i64>>,
    pub spool_dir: std::path::PathBuf,
}

impl HqState {
    fn now_ms(&self) -> i64 {
        self.clock.now().as_millisecond()
    }
}

pub fn router(state: HqState) -> Router {
    Router::new()
        .route("/", get(fleet_page))
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

async fn require_store(state: &HqState, headers: &HeaderMap) -> Result<(String, String), ApiError> {
    let Some(token) = bearer(headers).map(str::to_string) else {
        return Err(ApiError::unauthorized());
    };
    state
        .db
        .read(move |c| store::store_by_token(c, &token))
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "bad_token", "unknown store token"))
}

fn require_admin(state: &HqState, headers: &HeaderMap) -> Result<(), ApiError> {
    match bearer(headers) {
        Some(t) if crate::auth::hash_secret(t) == *state.admin_token_hash => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_token",
            "wrong admin token",
        )),
        None => Err(ApiError::unauthorized()),
    }
}

/// JSON answer, gzip-compressed when the client accepts it and it is worth it.
fn json_response(headers: &HeaderMap, v: &impl serde::Serialize) -> Response {
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
async fn json_body<T: serde::de::DeserializeOwned>(req: Request) -> Result<T, ApiError> {
    let gzip = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let bytes = axum::body::to_bytes(req.into_body(), MAX_JSON_BODY)
        .await
        .map_err(|e| ApiError::bad_request("bad_body", format!("cannot read body: {e}")))?;
    let data = if gzip {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .take(MAX_JSON_BODY as u64 * 4)
            .read_to_end(&mut out)
            .map_err(|e| ApiError::bad_request("bad_body", format!("bad gzip body: {e}")))?;
        out
    } else {
        bytes.to_vec()
    };
    // Fast path without path tracking; a body that fails is parsed again to name the place.
    if let Ok(v) = serde_json::from_slice(&data) {
        return Ok(v);
    }
    let de = &mut serde_json::Deserializer::from_slice(&data);
    serde_path_to_error::deserialize(de).map_err(|e| {
        ApiError::bad_request("bad_body", format!("body at {}: {}", e.path(), e.inner()))
    })
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
) -> Result<Response, ApiError> {
    let (id, group) = require_store(&state, &headers).await?;
    if q.after < 0 {
        return Err(ApiError::bad_request("bad_cursor", "after must be >= 0"));
    }
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let wait = Duration::from_secs(q.wait.unwrap_or(0).min(60));
    let deadline = tokio::time::Instant::now() + wait;
    let mut head_rx = state.head.subscribe();
    let now = state.now_ms();
    {
        let id = id.clone();
        state.db.write(move |c| store::touch(c, &id, now)).await?;
    }
    loop {
        head_rx.borrow_and_update();
        let (id2, group2) = (id.clone(), group.clone());
        let after = q.after;
        let page = state
            .db
            .read(move |c| store::feed(c, &id2, &group2, after, limit))
            .await?;
        match page {
            Err(FeedError::Gone { pruned_through }) => {
                return Err(ApiError::new(
                    StatusCode::GONE,
                    "cursor_gone",
                    format!(
                        "cursor {after} is older than the feed HQ keeps (events up to {pruned_through} were pruned); rebuild from /sync/v1/snapshot"
                    ),
                ))
            }
            Ok(page) => {
                if !page.events.is_empty() || tokio::time::Instant::now() >= deadline {
                    return Ok(json_response(&headers, &page));
                }
                // Nothing for this store yet: wait for new events or the deadline.
                if tokio::time::timeout_at(deadline, head_rx.changed())
                    .await
                    .is_err()
                {
                    return Ok(json_response(&headers, &page));
                }
            }
        }
    }
}

async fn snapshot(State(state): State<HqState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (id, group) = require_store(&state, &headers).await?;
    let snap = state
        .db
        .read(move |c| store::snapshot(c, &id, &group))
        .await?;
    Ok(json_response(&headers, &snap))
}

async fn push(State(state): State<HqState>, req: Request) -> Result<Response, ApiError> {
    let (id, _) = require_store(&state, req.headers()).await?;
    let headers = req.headers().clone();
    let batch: PushBatch = json_body(req).await?;
    for w in batch.events.windows(2) {
        if w[1].seq <= w[0].seq {
            return Err(ApiError::bad_request(
                "bad_order",
                format!(
                    "events must be in increasing seq order ({} after {})",
                    w[1].seq, w[0].seq
                ),
            ));
        }
    }
    let now = state.now_ms();
    let ack = state
        .db
        .write(move |c| {
            let tx = crate::db::immediate(c)?;
            let ack = store::ingest(&tx, &id, &batch, now)?;
            tx.commit()?;
            Ok(ack)
        })
        .await?;
    Ok(json_response(&headers, &ack))
}

#[derive(Deserialize)]
struct AuthorRequest {
    target: Target,
    events: Vec<HqEvent>,
}

fn bad_event(index: usize, msg: String) -> ApiError {
    ApiError::bad_request("invalid_event", format!("events[{index}]: {msg}"))
}

async fn author(State(state): State<HqState>, req: Request) -> Result<Response, ApiError> {
    require_admin(&state, req.headers())?;
    let r: AuthorRequest = json_body(req).await?;
    if r.events.is_empty() {
        return Err(ApiError::bad_request("invalid_event", "events is empty"));
    }
    let now = state.now_ms();
    let retain = state.retain_events;
    let result = state
        .db
        .write(move |c| {
            if let Err(m) = store::check_target(c, &r.target)? {
                return Ok(Err(ApiError::bad_request("bad_target", m)));
            }
            let mut v = Validator::new()?;
            let checked = v.with(|applier| {
                for (i, ev) in r.events.iter().enumerate() {
                    store::validate_event(applier, ev).map_err(|m| (i, m))?;
                }
                Ok::<_, (usize, String)>(())
            })?;
            if let Err((i, m)) = checked {
                return Ok(Err(bad_event(i, m)));
            }
            let tx = crate::db::immediate(c)?;
            let mut seqs = Vec::with_capacity(r.events.len());
            for ev in &r.events {
                seqs.push(store::append(&tx, &r.target, ev, now)?);
            }
            store::prune(&tx, retain)?;
            tx.commit()?;
            Ok(Ok(seqs))
        })
        .await??;
    let head = result.last().copied().unwrap_or(0);
    state.head.send_replace(head);
    Ok((
        StatusCode::CREATED,
        Json(json!({"accepted": result.len(), "first_seq": result.first(), "last_seq": head})),
    )
        .into_response())
}

#[derive(Deserialize)]
struct ImportQuery {
    target: String,
}

/// CSV bulk authoring: the body is streamed to a spool file (constant memory), then every row is
/// validated and appended in one transaction: all or nothing.
async fn import_csv(
    State(state): State<HqState>,
    Query(q): Query<ImportQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    require_admin(&state, req.headers())?;
    let target =
        Target::parse_query(&q.target).map_err(|m| ApiError::bad_request("bad_target", m))?;
    let spool = state
        .spool_dir
        .join(format!("import-{}.csv", uuid::Uuid::new_v4().simple()));
    let mut file = tokio::fs::File::create(&spool).await.map_err(|e| {
        tracing::error!(error = %e, path = %spool.display(), "cannot create import spool file");
        ApiError::internal()
    })?;
    let mut stream = req.into_body().into_data_stream();
    let write_result: Result<(), ApiError> = async {
        use tokio::io::AsyncWriteExt;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::bad_request("bad_body", format!("cannot read body: {e}")))?;
            file.write_all(&chunk).await.map_err(|e| {
                tracing::error!(error = %e, "import spool write failed");
                ApiError::internal()
            })?;
        }
        file.flush().await.map_err(|_| ApiError::internal())?;
        Ok(())
    }
    .await;
    drop(file);
    if let Err(e) = write_result {
        let _ = tokio::fs::remove_file(&spool).await;
        return Err(e);
    }
    let now = state.now_ms();
    let retain = state.retain_events;
    let spool2 = spool.clone();
    let result = state
        .db
        .write(move |c| {
            if let Err(m) = store::check_target(c, &target)? {
                return Ok(Err(ApiError::bad_request("bad_target", m)));
            }
            let file = std::fs::File::open(&spool2).map_err(|e| crate::db::DbError::Open {
                path: spool2.clone(),
                source: rusqlite::Error::InvalidPath(format!("{e}").into()),
            })?;
            let reader = std::io::BufReader::with_capacity(1 << 16, file);
            let mut v = Validator::new()?;
            let tx = crate::db::immediate(c)?;
            let mut last = 0i64;
            let mut db_err = None;
            let outcome = v.with(|applier| {
                crate::catalog::import::csv_events(reader, |_, ev| {
                    store::validate_event(applier, &ev)?;
                    match store::append(&tx, &target, &ev, now) {
                        Ok(seq) => {
                            last = seq;
                            Ok(())
                        }
                        Err(e) => {
                            db_err = Some(e);
                            Err("database error".into())
                        }
                    }
                })
            })?;
            if let Some(e) = db_err {
                return Err(e);
            }
            match outcome {
                Err((line, m)) => Ok(Err(ApiError::bad_request(
                    "invalid_row",
                    format!("line {line}: {m}; nothing was applied"),
                ))),
                Ok(n) => {
                    store::prune(&tx, retain)?;
                    tx.commit()?;
                    Ok(Ok((n, last)))
                }
            }
        })
        .await;
    let _ = tokio::fs::remove_file(&spool).await;
    let (n, last) = result??;
    if last > 0 {
        state.head.send_replace(last);
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({"accepted": n, "last_seq": last})),
    )
        .into_response())
}

async fn stores(State(state): State<HqState>, headers: HeaderMap) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    let list = state.db.read(store::list_stores).await?;
    let head = state.db.read(store::head).await?;
    Ok(Json(json!({"head": head, "stores": list})).into_response())
}

async fn store_events(
    State(state): State<HqState>,
    headers: HeaderMap,
    Query(q): Query<EventQuery>,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    let since_ms = match &q.since {
        None => None,
        Some(s) => Some(
            s.parse::<jiff::Timestamp>()
                .map_err(|e| {
                    ApiError::bad_request(
                        "bad_since",
                        format!("since {s:?} is not an RFC 3339 instant: {e}"),
                    )
                })?
                .as_millisecond(),
        ),
    };
    let events = state
        .db
        .read(move |c| store::store_events(c, &q, since_ms))
        .await?;
    Ok(json_response(&headers, &json!({"events": events})))
}

async fn tickets(State(state): State<HqState>, headers: HeaderMap) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    let list = state.db.read(store::tickets).await?;
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

/// A reply to a store's ticket: recorded at HQ and authored as `ticket.update` for that store.
async fn reply(
    State(state): State<HqState>,
    Path(ticket): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    require_admin(&state, req.headers())?;
    let r: ReplyRequest = json_body(req).await?;
    let now = state.now_ms();
    let retain = state.retain_events;
    let seq = state
        .db
        .write(move |c| {
            let Some(store_id) = store::ticket_store(c, &ticket)? else {
                return Ok(Err(ApiError::not_found(
                    "unknown_ticket",
                    format!("no ticket {ticket:?}"),
                )));
            };
            let mut payload = json!({"ticket_id": ticket, "message": r.message});
            if let Some(a) = &r.author {
                payload["author"] = json!(a);
            }
            if let Some(s) = &r.status {
                payload["status"] = json!(s);
            }
            let ev = HqEvent {
                id: Some(crate::sync::outbox::new_id("reply")),
                event_type: "ticket.update".into(),
                payload,
            };
            let mut v = Validator::new()?;
            if let Err(m) = v.with(|a| store::validate_event(a, &ev))? {
                return Ok(Err(ApiError::bad_request("invalid_reply", m)));
            }
            let tx = crate::db::immediate(c)?;
            let target = Target::Stores {
                stores: vec![store_id],
            };
            let seq = store::append(&tx, &target, &ev, now)?;
            store::record_reply(
                &tx,
                &ticket,
                ev.id.as_deref().unwrap_or(""),
                r.author.as_deref().unwrap_or("HQ support"),
                &r.message,
                r.status.as_deref(),
                now,
            )?;
            store::prune(&tx, retain)?;
            tx.commit()?;
            Ok(Ok(seq))
        })
        .await??;
    state.head.send_replace(seq);
    Ok((StatusCode::CREATED, Json(json!({"seq": seq}))).into_response())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A plain page listing stores and their sync state (no login: it shows no secrets; bind HQ to a
/// trusted address or put it behind the retailer's proxy).
async fn fleet_page(State(state): State<HqState>) -> Result<Response, ApiError> {
    let list = state.db.read(store::list_stores).await?;
    let head = state.db.read(store::head).await?;
    let mut rows = String::new();
    for s in &list {
        let opt = |v: Option<String>| v.map(|v| esc(&v)).unwrap_or_else(|| "—".into());
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td></tr>\n",
            esc(&s.id),
            esc(&s.group),
            opt(s.last_seen.clone()),
            opt(s.version.clone()),
            opt(s.cursor.map(|c| c.to_string())),
            opt(s.lag_events.map(|c| c.to_string())),
            opt(s.outbox_business.map(|c| c.to_string())),
            opt(s.outbox_telemetry.map(|c| c.to_string())),
            s.held,
        ));
    }
    Ok(Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>storebox HQ</title>\
         <style>body{{font-family:sans-serif}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}}</style></head>\
         <body><h1>storebox HQ</h1><p>Feed head: {head}. {} stores.</p>\
         <table><tr><th>store</th><th>group</th><th>last seen</th><th>version</th><th>cursor</th><th>lag (events)</th>\
         <th>outbox business/telemetry</th><th>events held</th></tr>\n{rows}</table></body></html>",
        list.len()
    ))
    .into_response())
}
