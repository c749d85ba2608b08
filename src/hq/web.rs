//! HQ's console in the browser, embedded in the binary from `web/hq/` (rust-embed): `/` answers
//! the sign-in page to anyone not signed in (nothing of the fleet), the console shell to a signed-in
//! user; `/assets/…` the shell's scripts and styles, and `/assets/vendor/…` the vendored charting
//! library, embedded from the store UI's `web/vendor/` (one copy of it in the tree), and
//! `/assets/base.css`, the look both UIs share (`web/base.css`). Content types,
//! an ETag from each file's SHA-256, and a Content-Security-Policy that lets the page load nothing
//! from outside HQ.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

use super::server::HqState;
use super::storage::HqRole;

#[derive(RustEmbed)]
#[folder = "web/hq/"]
struct Console;

#[derive(RustEmbed)]
#[folder = "web/vendor/"]
struct Vendor;

/// The look shared with the store UI (`web/base.css`, one copy in the tree).
#[derive(RustEmbed)]
#[folder = "web/"]
#[include = "base.css"]
struct Shared;

/// No script, style, image or connection from anywhere but HQ itself; no framing.
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'";

fn serve(
    file: Option<rust_embed::EmbeddedFile>,
    name: &str,
    status: StatusCode,
    headers: &HeaderMap,
    immutable: bool,
) -> Response {
    let Some(file) = file else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let etag = format!("\"{}\"", hex::encode(file.metadata.sha256_hash()));
    if status == StatusCode::OK
        && headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    let text = mime.type_() == "text" || name.ends_with(".js");
    let content_type = mime.essence_str().to_string() + if text { "; charset=utf-8" } else { "" };
    let cache = if immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    (
        status,
        [
            (header::CONTENT_TYPE, content_type),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, cache.to_string()),
            (header::REFERRER_POLICY, "no-referrer".to_string()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (header::X_FRAME_OPTIONS, "DENY".to_string()),
            (header::CONTENT_SECURITY_POLICY, CSP.to_string()),
        ],
        file.data.into_owned(),
    )
        .into_response()
}

/// `GET /`: the console shell for signed-in staff (or the admin bearer token), else the sign-in
/// page (401), which shows nothing of the fleet.
pub async fn index(State(state): State<HqState>, headers: HeaderMap) -> Response {
    let signed_in = match super::console::caller(&state, &Method::GET, &headers).await {
        Ok(c) => {
            super::console::need(&c, &[HqRole::Operator, HqRole::Support], "the console").is_ok()
        }
        Err(_) => false,
    };
    let mut r = if signed_in {
        serve(
            Console::get("index.html"),
            "index.html",
            StatusCode::OK,
            &headers,
            false,
        )
    } else {
        sign_in_page(&headers)
    };
    // The same address answers two pages: caches must tell callers apart.
    r.headers_mut().insert(
        header::VARY,
        axum::http::HeaderValue::from_static("Cookie, Authorization"),
    );
    r
}

/// The sign-in page (401).
pub fn sign_in_page(headers: &HeaderMap) -> Response {
    serve(
        Console::get("signin.html"),
        "signin.html",
        StatusCode::UNAUTHORIZED,
        headers,
        false,
    )
}

/// `GET /assets/{*path}`: the console's files (no fleet data in them, so no sign-in needed).
pub async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    if let Some(v) = path.strip_prefix("vendor/") {
        // Vendored files carry their version in the name (web/vendor/README.md).
        return serve(Vendor::get(v), v, StatusCode::OK, &headers, true);
    }
    if path == "base.css" {
        return serve(Shared::get(&path), &path, StatusCode::OK, &headers, false);
    }
    if path.ends_with(".html") {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    serve(Console::get(&path), &path, StatusCode::OK, &headers, false)
}
