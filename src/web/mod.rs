//! The HTTP face of the box (axum): the staff UI, the JSON API under `/api/v1`, and the operations
//! endpoints (`/healthz`, `/readyz`, `/metrics`). Handlers are thin: they check who is calling,
//! then call into the domain modules through the database handle.

pub mod about;
pub mod api;
pub mod caller;
pub mod catalog;
pub mod error;
pub mod live;
pub mod openapi;
pub mod ops;
pub mod overview;
pub mod prices;
pub mod session;
pub mod support;
pub mod tls;
pub mod ui;
pub mod updates;
pub mod users;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, patch, post};
use axum::Router;
use parking_lot::Mutex;

use crate::broker::guard::BrokerShared;
use crate::broker::Publisher;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::db::Db;
use crate::ops::metrics::{HttpLabels, Metrics};

pub use error::ApiError;

/// Everything a handler may need; one reference count to clone (every extractor of every
/// request clones it, and one count instead of one per field kept that off the profile).
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl AppState {
    pub fn new(inner: AppStateInner) -> Self {
        AppState(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

pub struct AppStateInner {
    pub db: Db,
    pub clock: SharedClock,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub broker: Arc<BrokerShared>,
    pub publisher: Publisher,
    pub mqtt: Arc<crate::broker::Broker>,
    pub started: Instant,
    /// One-time code that lets the first admin be created from the browser.
    pub setup_code: Arc<Mutex<Option<String>>>,
    /// Failed sign-ins per (user name, client address): (count, window start ms).
    pub login_failures: Arc<Mutex<HashMap<String, (u32, i64)>>>,
    /// The link to HQ, as the sync client last saw it.
    pub sync: Arc<crate::sync::state::SyncState>,
    /// Devices whose state changed, for the live UI (`GET /api/v1/events`).
    pub device_changes: crate::devices::live::DeviceChanges,
    /// Bearer tokens verified in the last second (`auth::TokenCache`).
    pub tokens: Arc<crate::auth::TokenCache>,
    /// Parsed promotions for price lookups (`catalog::promo_cache`).
    pub promotions: Arc<crate::catalog::promo_cache::PromotionCache>,
    /// Price answers kept between lookups (`catalog::answer_cache`).
    pub price_answers: Arc<crate::catalog::answer_cache::AnswerCache>,
    /// Turns for argon2 work (`http.max_password_checks`); see [`AppStateInner::password_work`].
    pub password_checks: Arc<tokio::sync::Semaphore>,
    /// Ingest that cannot write, a task that ended (`ops::health`).
    pub health: Arc<crate::ops::health::Health>,
    /// Checkouts being recorded; an install does not start meanwhile (`updates::sale`).
    pub sales: crate::updates::sale::SaleGuard,
}

impl AppStateInner {
    pub fn now_ms(&self) -> i64 {
        self.clock.now().as_millisecond()
    }

    /// Runs password hashing (argon2: ~20 MB and tens of ms of CPU each) on a blocking thread,
    /// at most `http.max_password_checks` at a time, and never while holding a database
    /// connection or reader permit: callers read what they need first and write afterwards.
    pub async fn password_work<T, F>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        // Never closed, so this always yields a permit.
        let _turn = self.password_checks.acquire().await.ok();
        crate::db::run_blocking(f).await
    }

    pub fn session_ttl_ms(&self) -> i64 {
        self.config.http.session_minutes as i64 * 60_000
    }
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/setup", get(session::setup_status).post(session::setup))
        .route(
            "/session",
            get(session::current)
                .post(session::login)
                .delete(session::logout),
        )
        .route("/status", get(api::status))
        .route(
            "/devices",
            get(api::list_devices).post(api::provision_device),
        )
        .route(
            "/devices/{id}",
            get(api::device_detail).delete(api::remove_device),
        )
        .route("/devices/{id}/commands", post(api::send_command))
        .route("/catalog", get(catalog::search))
        .route("/catalog/barcode/{code}", get(catalog::by_barcode))
        .route("/catalog/{sku}", get(catalog::item))
        .route("/prices/{sku}", get(catalog::price))
        .route("/prices/{sku}/explain", get(prices::explain))
        .route("/prices/{sku}/timeline", get(prices::timeline))
        .route("/promotions", get(prices::promotions))
        .route("/overview", get(overview::overview))
        .route("/events", get(live::events))
        .route("/about", get(about::about))
        .route("/baskets/price", post(catalog::price_basket))
        .route("/checkouts", post(catalog::checkout))
        .route("/alerts", get(api::list_alerts))
        .route("/dead-letters", get(api::list_dead_letters))
        .route("/audit", get(api::list_audit))
        .route("/users", get(api::list_users).post(api::add_user))
        .route("/users/{name}", patch(users::change_user))
        .route("/users/{name}/password", post(users::reset_password))
        .route("/sync", get(support::sync_status))
        .route("/diag", get(support::diag))
        .route(
            "/tickets",
            get(support::list_tickets).post(support::open_ticket),
        )
        .route("/tickets/{id}", get(support::get_ticket))
        .route("/guides", get(support::list_guides))
        .route("/updates", get(updates::updates))
        .fallback(api::not_found);
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .nest("/api/v1", api)
        .fallback(ui::static_handler)
        .layer(middleware::from_fn_with_state(state.clone(), track_latency))
        .with_state(state)
}

/// Records every request in the latency histogram, labelled by route template (not raw path,
/// so ids do not explode the label set).
async fn track_latency(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = match *req.method() {
        Method::GET => Cow::Borrowed("GET"),
        Method::POST => Cow::Borrowed("POST"),
        Method::PATCH => Cow::Borrowed("PATCH"),
        Method::DELETE => Cow::Borrowed("DELETE"),
        Method::PUT => Cow::Borrowed("PUT"),
        Method::HEAD => Cow::Borrowed("HEAD"),
        Method::OPTIONS => Cow::Borrowed("OPTIONS"),
        // Any other token is a valid method to hyper; one label for all of them, or every
        // invented method would add a time series until restart.
        _ => Cow::Borrowed("other"),
    };
    let route = match req.extensions().get::<MatchedPath>() {
        Some(p) => Cow::Owned(p.as_str().to_string()),
        None if req.uri().path().starts_with("/api/") => Cow::Borrowed("/api/unknown"),
        None => Cow::Borrowed("/ui"),
    };
    let res = next.run(req).await;
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method,
            route,
            status: res.status().as_u16(),
        })
        .observe(start.elapsed().as_secs_f64());
    res
}
