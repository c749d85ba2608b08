//! The OpenAPI document of `/api/v1`, generated from the handlers' annotations (utoipa) so it
//! cannot drift from the code.

use axum::Json;
use utoipa::OpenApi;

use super::{about, api, catalog, live, overview, prices, session, support, users};

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
    ),
    components(schemas(crate::auth::Role))
)]
pub struct ApiDoc;

pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
