//! Console authoring helpers: the preview of an authoring request (`POST /hq/v1/preview`, see
//! [`super::preview`]) and moving a store to another group (`PUT /hq/v1/stores/{id}/group`).

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::error::{HqError, HqResult};
use super::preview::{preview_store, Zone};
use super::server::{json_body, json_response, require, HqState};
use super::storage::{HqRole, StoreIdent};
use crate::proto::{HqBody, HqEvent, Target};

/// Above this many affected stores the preview answers per (group, time zone) instead of per store.
pub const MAX_STORES_DETAILED: usize = 50;
/// At most this many groups are listed in a grouped preview.
pub const MAX_GROUPS: usize = 100;

pub fn routes() -> Router<HqState> {
    Router::new()
        .route("/hq/v1/preview", post(preview))
        .route("/hq/v1/stores/{id}/group", put(set_group))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupRequest {
    group: String,
}

/// `PUT /hq/v1/stores/{id}/group` `{"group": "pilot"}` (operator/admin; `""` = no group).
async fn set_group(
    State(state): State<HqState>,
    Path(id): Path<String>,
    req: Request,
) -> HqResult<Response> {
    require(
        &state,
        req.method(),
        req.headers(),
        &[HqRole::Operator],
        "moving stores between groups",
    )
    .await?;
    let r: GroupRequest = json_body(req).await?;
    state.storage.set_group(&id, r.group.trim()).await?;
    Ok(Json(json!({"id": id, "group": r.group.trim()})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewRequest {
    target: Target,
    events: Vec<HqEvent>,
}

/// `POST /hq/v1/preview`: the authoring body, validated exactly as `POST /hq/v1/events`, and what
/// it would change per affected store (or per group and zone when many stores are affected).
async fn preview(State(state): State<HqState>, req: Request) -> HqResult<Response> {
    require(
        &state,
        req.method(),
        req.headers(),
        &[HqRole::Operator],
        "previewing authored data",
    )
    .await?;
    let headers = req.headers().clone();
    let r: PreviewRequest = json_body(req).await?;
    super::check_target_shape(&r.target)?;
    let proposed: Vec<HqBody> = super::validate_events(r.events)?
        .into_iter()
        .map(|a| a.body)
        .collect();
    let stores = state.storage.list_stores().await?;
    let affected: Vec<(String, String)> = match &r.target {
        Target::All { .. } => stores
            .iter()
            .map(|s| (s.id.clone(), s.group.clone()))
            .collect(),
        Target::Groups { groups } => stores
            .iter()
            .filter(|s| groups.contains(&s.group))
            .map(|s| (s.id.clone(), s.group.clone()))
            .collect(),
        Target::Stores { stores: ids } => {
            let by_id: std::collections::HashMap<&str, &str> = stores
                .iter()
                .map(|s| (s.id.as_str(), s.group.as_str()))
                .collect();
            let mut seen = std::collections::HashSet::new();
            let mut out = Vec::new();
            for id in ids {
                let group = by_id.get(id.as_str()).ok_or_else(|| {
                    HqError::invalid("bad_target", format!("target names unknown store {id:?}"))
                })?;
                if seen.insert(id.as_str()) {
                    out.push((id.clone(), group.to_string()));
                }
            }
            out
        }
    };
    // Only the zones are used: counting "since now" keeps the counts' scans empty.
    let now_ms = state.now_ms();
    let zones: std::collections::HashMap<String, Option<String>> = state
        .storage
        .fleet_extras(now_ms, now_ms)
        .await?
        .into_iter()
        .map(|e| (e.id, e.timezone))
        .collect();
    let now = state.clock.now();
    let zone_of = |id: &str| Zone::for_store(zones.get(id).and_then(|z| z.as_deref()));

    async fn current(state: &HqState, id: &str, group: &str) -> HqResult<Vec<HqBody>> {
        let snap = state
            .storage
            .snapshot(&StoreIdent {
                id: id.to_string(),
                group: group.to_string(),
            })
            .await?;
        Ok(snap
            .events
            .iter()
            .filter_map(|e| HqBody::from_wire(&e.event_type, &e.payload).ok())
            .collect())
    }

    if affected.len() <= MAX_STORES_DETAILED {
        let mut out = Vec::new();
        for (id, group) in &affected {
            let cur = current(&state, id, group).await?;
            let p = preview_store(now, &zone_of(id), &cur, &proposed);
            out.push(json!({"store": id, "group": group, "preview": p}));
        }
        return Ok(json_response(
            &headers,
            &json!({"per": "store", "affected": affected.len(), "stores": out}),
        ));
    }
    // Many stores: one preview per (group, zone), computed for the first store of each.
    let mut keys: Vec<(String, String, Vec<String>)> = Vec::new();
    for (id, group) in &affected {
        let z = zone_of(id).name;
        match keys.iter_mut().find(|(g, zz, _)| g == group && *zz == z) {
            Some(k) => k.2.push(id.clone()),
            None => keys.push((group.clone(), z, vec![id.clone()])),
        }
    }
    let groups_omitted = keys.len().saturating_sub(MAX_GROUPS);
    keys.truncate(MAX_GROUPS);
    let mut out = Vec::new();
    for (group, _, ids) in &keys {
        let cur = current(&state, &ids[0], group).await?;
        let p = preview_store(now, &zone_of(&ids[0]), &cur, &proposed);
        out.push(
            json!({"group": group, "stores": ids.len(), "example_store": ids[0], "preview": p}),
        );
    }
    Ok(json_response(
        &headers,
        &json!({"per": "group", "affected": affected.len(), "groups": out, "groups_omitted": groups_omitted}),
    ))
}
