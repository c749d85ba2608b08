//! The OpenAPI document of `/api/v1`, generated from the handlers' annotations (utoipa) so it
//! cannot drift from the code.

use axum::Json;
use utoipa::OpenApi;

use super::{about, api, catalog, live, overview, prices, session, support, updates, users};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "storebox store API",
        description = "Store appliance API: devices, alerts, users, audit. Errors are {\"error\":{\"code\",\"message\"}}."
    ),
    paths(
        session::login,
        session::current,
        session::logout,
        session::setup_status,
        session::setup,
        api::status,
        api::list_devices,
        api::provision_device,
        api::device_detail,
        api::remove_device,
        api::send_command,
        api::list_alerts,
        api::list_dead_letters,
        api::list_audit,
        api::list_users,
        api::add_user,
        catalog::search,
        catalog::item,
        catalog::by_barcode,
        catalog::price,
        catalog::price_basket,
        catalog::checkout,
        support::sync_status,
        support::open_ticket,
        support::list_tickets,
        support::list_guides,
        support::get_ticket,
        support::diag,
        overview::overview,
        live::events,
        prices::explain,
        prices::timeline,
        prices::promotions,
        users::change_user,
        users::reset_password,
        about::about,
        updates::updates,
    ),
    components(schemas(crate::auth::Role, super::error::ErrorBody)),
    modifiers(&ErrorResponses)
)]
pub struct ApiDoc;

/// Operations anyone may call (no bearer token or session): they answer neither 401 nor 403.
const PUBLIC: &[(&str, &str)] = &[
    ("get", "/api/v1/setup"),
    ("post", "/api/v1/setup"),
    ("post", "/api/v1/session"),
];

/// Makes every operation's error answers explicit, in the one error shape
/// (`{"error":{"code","message"}}`, schema `ErrorBody`): 400 where a query string or a body can be
/// malformed, 401 (no or bad credentials) and 403 (role too low, or a session call without its
/// CSRF token) on every operation that needs a caller, and the body schema on every 4xx answer
/// an annotation lists without one.
struct ErrorResponses;

impl utoipa::Modify for ErrorResponses {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        // PATCH /users/{name} needs role or disabled (see users::UserChange).
        if let Some(RefOr::T(utoipa::openapi::schema::Schema::Object(o))) = doc
            .components
            .as_mut()
            .and_then(|c| c.schemas.get_mut("UserChange"))
        {
            o.min_properties = Some(1);
        }
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            let ops = [
                ("get", item.get.as_mut()),
                ("post", item.post.as_mut()),
                ("put", item.put.as_mut()),
                ("patch", item.patch.as_mut()),
                ("delete", item.delete.as_mut()),
            ];
            for (method, op) in ops {
                let Some(op) = op else { continue };
                let has_query = op.parameters.as_ref().is_some_and(|ps| {
                    ps.iter().any(|p| {
                        matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query)
                    })
                });
                let responses = &mut op.responses.responses;
                let listed: Vec<String> = responses.keys().cloned().collect();
                let mut add = |code: &str, why: &str| {
                    let slot = responses
                        .entry(code.to_string())
                        .or_insert_with(|| RefOr::T(error(why)));
                    if let RefOr::T(r) = slot {
                        if r.content.is_empty() {
                            *r = error(if r.description.is_empty() {
                                why
                            } else {
                                &r.description
                            });
                        }
                    }
                };
                if has_query || op.request_body.is_some() {
                    add(
                        "400",
                        "malformed query string or body, or a value out of range",
                    );
                }
                if !PUBLIC.contains(&(method, path.as_str())) {
                    add("401", "no valid session or bearer token");
                    add(
                        "403",
                        "the caller's role may not do this, or a session call lacks its CSRF token",
                    );
                }
                for code in listed.iter().filter(|c| c.starts_with('4')) {
                    add(code, "error");
                }
            }
        }
    }
}

pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
