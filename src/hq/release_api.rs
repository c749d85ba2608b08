//! HQ's release endpoints (docs/api.md, docs/releases.md): the registry (`/hq/v1/releases`,
//! admin upload as `multipart/form-data`, verified against `release_public_keys`), package and
//! manifest downloads for assigned stores (`/sync/v1/releases/{version}/…`, store token, `Range`)
//! and rollouts (`/hq/v1/rollouts`).
//!
//! Bounds: the package part is streamed to a spool file while hashed, refused with 413 past
//! `max_release_bytes`; the manifest part is at most [`MAX_MANIFEST_BYTES`]; any other part is
//! refused; downloads stream [`CHUNK_BYTES`] at a time.

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::error::{HqError, HqResult};
use super::releases::{
    self, PutRelease, ReleaseRow, RolloutRow, RolloutSpec, RolloutState, CHUNK_BYTES,
    MAX_MANIFEST_BYTES,
};
use super::server::{json_body, json_response, require, require_store, HqState, READERS};
use super::storage::HqRole;
use crate::proto::release::{key_id, Manifest, PackageFacts};

pub fn routes() -> Router<HqState> {
    Router::new()
        .route(
            "/hq/v1/releases",
            get(list_releases)
                .post(upload)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/sync/v1/releases/{version}/package", get(package))
        .route("/sync/v1/releases/{version}/manifest", get(manifest))
        .route("/hq/v1/rollouts", get(list_rollouts).post(create_rollout))
        .route("/hq/v1/rollouts/{id}", get(show_rollout))
        .route("/hq/v1/rollouts/{id}/{action}", post(change_rollout))
}

/// Removes the spool file when dropped (the SQLite engine may have moved it already).
struct Spool(std::path::PathBuf);

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn bad_release(m: impl Into<String>) -> HqError {
    HqError::invalid("invalid_release", m)
}

/// `POST /hq/v1/releases` (admin): parts `package` and `manifest`.
async fn upload(State(state): State<HqState>, req: Request) -> HqResult<Response> {
    let caller = require(
        &state,
        req.method(),
        req.headers(),
        &[],
        "publishing releases",
    )
    .await?;
    let mut mp = Multipart::from_request(req, &state)
        .await
        .map_err(|e| HqError::invalid("bad_body", format!("expected multipart/form-data: {e}")))?;
    let spool = Spool(
        state
            .spool_dir
            .join(format!("release-{}.part", uuid::Uuid::new_v4().simple())),
    );
    let mut facts: Option<PackageFacts> = None;
    let mut manifest_text: Option<Vec<u8>> = None;
    let body_err = |e: axum::extract::multipart::MultipartError| {
        HqError::invalid("bad_body", format!("cannot read multipart body: {e}"))
    };
    while let Some(mut field) = mp.next_field().await.map_err(body_err)? {
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "package" if facts.is_none() => {
                let mut file = tokio::fs::File::create(&spool.0).await.map_err(|e| {
                    HqError::storage(format!("cannot create {}: {e}", spool.0.display()))
                })?;
                let mut hasher = Sha256::new();
                let mut size = 0u64;
                while let Some(chunk) = field.chunk().await.map_err(body_err)? {
                    size += chunk.len() as u64;
                    if size > state.max_release_bytes {
                        return Err(HqError::TooLarge(format!(
                            "part \"package\" is larger than hq_server.max_release_bytes ({} bytes)",
                            state.max_release_bytes
                        )));
                    }
                    hasher.update(&chunk);
                    file.write_all(&chunk)
                        .await
                        .map_err(|e| HqError::storage(format!("release spool write: {e}")))?;
                }
                file.flush()
                    .await
                    .map_err(|e| HqError::storage(format!("release spool flush: {e}")))?;
                facts = Some(PackageFacts {
                    size,
                    sha256: hex::encode(hasher.finalize()),
                });
            }
            "manifest" if manifest_text.is_none() => {
                let mut text = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(body_err)? {
                    if text.len() + chunk.len() > MAX_MANIFEST_BYTES {
                        return Err(bad_release(format!(
                            "part \"manifest\" is larger than {MAX_MANIFEST_BYTES} bytes"
                        )));
                    }
                    text.extend_from_slice(&chunk);
                }
                manifest_text = Some(text);
            }
            "package" | "manifest" => {
                return Err(HqError::invalid(
                    "bad_body",
                    format!("part {name:?} is given twice"),
                ))
            }
            other => {
                return Err(HqError::invalid(
                    "bad_body",
                    format!("unknown part {other:?}: send exactly \"package\" and \"manifest\""),
                ))
            }
        }
    }
    let (Some(facts), Some(text)) = (facts, manifest_text) else {
        return Err(HqError::invalid(
            "bad_body",
            "send both parts \"package\" and \"manifest\"",
        ));
    };
    let manifest: Manifest = {
        let de = &mut serde_json::Deserializer::from_slice(&text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            bad_release(format!(
                "check `manifest` failed: manifest at {}: {}",
                e.path(),
                e.inner()
            ))
        })?
    };
    let keys = &state.release_keys;
    let Some(first) = keys.first() else {
        return Err(bad_release(
            "HQ trusts no release key: set [hq_server] release_public_keys to the text of release.pub",
        ));
    };
    let key = keys
        .iter()
        .find(|k| key_id(k) == manifest.key_id)
        .unwrap_or(first);
    manifest
        .verify(key, &facts, state.clock.now(), None)
        .map_err(|r| bad_release(r.to_string()))?;
    let row = ReleaseRow {
        manifest,
        uploaded_ms: state.now_ms(),
        uploaded_by: caller.name.clone(),
    };
    let view = row.view();
    let status = match state.storage.put_release(row, &spool.0).await? {
        PutRelease::Created => StatusCode::CREATED,
        PutRelease::Unchanged => StatusCode::OK,
    };
    Ok((status, Json(view)).into_response())
}

async fn list_releases(State(state): State<HqState>, headers: HeaderMap) -> HqResult<Response> {
    require(&state, &Method::GET, &headers, READERS, "releases").await?;
    let list: Vec<_> = state
        .storage
        .releases()
        .await?
        .iter()
        .map(ReleaseRow::view)
        .collect();
    Ok(json_response(&headers, &json!({"releases": list})))
}

/// The release `version` if a rollout assigned it to the calling store; 404 otherwise (the same
/// answer for an unknown version, so a store learns nothing of releases not meant for it).
async fn assigned_release(
    state: &HqState,
    headers: &HeaderMap,
    version: &str,
) -> HqResult<ReleaseRow> {
    let store = require_store(state, headers).await?;
    let none = || {
        HqError::not_found(
            "unknown_release",
            format!("no release {version:?} assigned to store {:?}", store.id),
        )
    };
    if !state.storage.assigned(&store.id, version).await? {
        return Err(none());
    }
    state.storage.release(version).await?.ok_or_else(none)
}

/// A parsed `Range` header: the inclusive byte span, or why it cannot be served.
#[derive(Debug, PartialEq, Eq)]
pub enum Range {
    Whole,
    Span(u64, u64),
    Unsatisfiable,
}

/// `bytes=N-`, `bytes=N-M` or `bytes=-N` (one range) against a package of `size` bytes.
pub fn parse_range(raw: Option<&str>, size: u64) -> Result<Range, String> {
    let Some(raw) = raw else {
        return Ok(Range::Whole);
    };
    let bad = || format!("Range {raw:?}: expected one range bytes=N-, bytes=N-M or bytes=-N");
    let spec = raw.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let num = |s: &str| s.trim().parse::<u64>().map_err(|_| bad());
    let (start, end) = match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, true) => return Err(bad()),
        (true, false) => {
            let n = num(b)?;
            if n == 0 || size == 0 {
                return Ok(Range::Unsatisfiable);
            }
            (size.saturating_sub(n), size - 1)
        }
        (false, true) => (num(a)?, size.saturating_sub(1)),
        (false, false) => {
            let (s, e) = (num(a)?, num(b)?);
            if e < s {
                return Err(bad());
            }
            (s, e.min(size.saturating_sub(1)))
        }
    };
    if size == 0 || start >= size {
        return Ok(Range::Unsatisfiable);
    }
    Ok(Range::Span(start, end))
}

/// `GET /sync/v1/releases/{version}/package` (store token; only for an assigned store).
async fn package(
    State(state): State<HqState>,
    Path(version): Path<String>,
    headers: HeaderMap,
) -> HqResult<Response> {
    let rel = assigned_release(&state, &headers, &version).await?;
    let size = rel.manifest.size;
    let raw = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let range = parse_range(raw, size).map_err(|m| HqError::invalid("bad_range", m))?;
    let (status, start, end) = match range {
        Range::Whole => (StatusCode::OK, 0, size),
        Range::Span(s, e) => (StatusCode::PARTIAL_CONTENT, s, e + 1),
        Range::Unsatisfiable => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
                Json(json!({"error": {"code": "range_not_satisfiable",
                    "message": format!("Range {:?} starts at or past the package's {size} bytes", raw.unwrap_or(""))}})),
            )
                .into_response())
        }
    };
    let storage = state.storage.clone();
    let sha = rel.manifest.sha256.clone();
    let stream = futures_util::stream::unfold((start, end), move |(off, end)| {
        let (storage, sha) = (storage.clone(), sha.clone());
        async move {
            if off >= end {
                return None;
            }
            let n = ((end - off) as usize).min(CHUNK_BYTES);
            match storage.package_chunk(&sha, off, n).await {
                Ok(b) if !b.is_empty() => {
                    let next = off + b.len() as u64;
                    Some((Ok(bytes::Bytes::from(b)), (next, end)))
                }
                Ok(_) => Some((
                    Err(std::io::Error::other(format!(
                        "package {sha} ends at {off}, before its {end} bytes"
                    ))),
                    (end, end),
                )),
                Err(e) => {
                    tracing::error!(error = %e, "reading release package");
                    Some((Err(std::io::Error::other(e.to_string())), (end, end)))
                }
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    let hv = |s: String| header::HeaderValue::from_str(&s).ok();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/vnd.debian.binary-package"),
    );
    h.insert(
        header::ACCEPT_RANGES,
        header::HeaderValue::from_static("bytes"),
    );
    if let Some(v) = hv((end - start).to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if let Some(v) = hv(format!("\"{}\"", rel.manifest.sha256)) {
        h.insert(header::ETAG, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Some(v) = hv(format!("bytes {start}-{}/{size}", end - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(resp)
}

/// `GET /sync/v1/releases/{version}/manifest` (store token; only for an assigned store).
async fn manifest(
    State(state): State<HqState>,
    Path(version): Path<String>,
    headers: HeaderMap,
) -> HqResult<Response> {
    let rel = assigned_release(&state, &headers, &version).await?;
    Ok(Json(rel.manifest).into_response())
}

async fn create_rollout(State(state): State<HqState>, req: Request) -> HqResult<Response> {
    let caller = require(
        &state,
        req.method(),
        req.headers(),
        &[HqRole::Operator],
        "starting rollouts",
    )
    .await?;
    let spec: RolloutSpec = json_body(req).await?;
    spec.check()?;
    // A wave whose groups have no store would pass at once, empty: a typo in "pilot" must not
    // send the release straight to the canaries.
    let groups: std::collections::HashSet<String> = state
        .storage
        .list_stores()
        .await?
        .into_iter()
        .map(|s| s.group)
        .collect();
    for (i, w) in spec.waves.iter().enumerate() {
        if let Some(g) = w.groups.iter().find(|g| !groups.contains(*g)) {
            return Err(HqError::invalid(
                "invalid_rollout",
                format!("waves[{i}]: group {g:?} has no registered store"),
            ));
        }
    }
    let now = state.now_ms();
    let row = RolloutRow {
        id: format!("r-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        spec,
        state: RolloutState::Running,
        reason: String::new(),
        created_ms: now,
        updated_ms: now,
        created_by: caller.name.clone(),
    };
    let superseded = state.storage.create_rollout(row.clone()).await?;
    state.rollout_poke.notify_one();
    let mut v = releases::summary_view(&row);
    v["superseded"] = json!(superseded);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

async fn list_rollouts(State(state): State<HqState>, headers: HeaderMap) -> HqResult<Response> {
    require(&state, &Method::GET, &headers, READERS, "rollouts").await?;
    let list: Vec<_> = state
        .storage
        .rollouts()
        .await?
        .iter()
        .map(releases::summary_view)
        .collect();
    Ok(json_response(&headers, &json!({"rollouts": list})))
}

async fn show_rollout(
    State(state): State<HqState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> HqResult<Response> {
    require(&state, &Method::GET, &headers, READERS, "rollouts").await?;
    let (row, stores, fleet) = state
        .storage
        .rollout(&id)
        .await?
        .ok_or_else(|| releases::unknown_rollout(&id))?;
    let v = releases::rollout_view(&row, &fleet, &stores, state.clock.now());
    Ok(json_response(&headers, &v))
}

/// `POST /hq/v1/rollouts/{id}/pause|resume|abort`.
async fn change_rollout(
    State(state): State<HqState>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> HqResult<Response> {
    let caller = require(
        &state,
        &Method::POST,
        &headers,
        &[HqRole::Operator],
        "changing rollouts",
    )
    .await?;
    let (to, reason) = match action.as_str() {
        "pause" => (RolloutState::Paused, format!("paused by {}", caller.name)),
        "resume" => (RolloutState::Running, String::new()),
        "abort" => (RolloutState::Aborted, format!("aborted by {}", caller.name)),
        other => {
            return Err(HqError::not_found(
                "unknown_action",
                format!("no rollout action {other:?}: use pause, resume or abort"),
            ))
        }
    };
    let row = state
        .storage
        .set_rollout_state(&id, to, &reason, state.now_ms())
        .await?;
    state.rollout_poke.notify_one();
    Ok(Json(releases::summary_view(&row)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ok(Range::Whole));
        assert_eq!(parse_range(Some("bytes=3-"), 10), Ok(Range::Span(3, 9)));
        assert_eq!(parse_range(Some("bytes=3-5"), 10), Ok(Range::Span(3, 5)));
        assert_eq!(parse_range(Some("bytes=3-99"), 10), Ok(Range::Span(3, 9)));
        assert_eq!(parse_range(Some("bytes=-4"), 10), Ok(Range::Span(6, 9)));
        assert_eq!(parse_range(Some("bytes=-40"), 10), Ok(Range::Span(0, 9)));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Ok(Range::Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=-0"), 10), Ok(Range::Unsatisfiable));
        for bad in [
            "bytes=5-3",
            "bytes=1-2,4-5",
            "items=1-",
            "bytes=-",
            "bytes=x-",
        ] {
            assert!(
                parse_range(Some(bad), 10).unwrap_err().contains("Range"),
                "{bad}"
            );
        }
    }
}
