//! The staff UI, embedded in the binary from `web/` (rust-embed): correct content types, an ETag
//! from each file's SHA-256 so browsers revalidate cheaply, and `index.html` for client-side routes.

use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

/// `web/hq/` is HQ's console (src/hq/web.rs), not part of the store's UI.
#[derive(RustEmbed)]
#[folder = "web/"]
#[exclude = "hq/*"]
struct Assets;

pub async fn static_handler(uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().trim_start_matches('/');
    let (file, name) = match Assets::get(path) {
        Some(f) if !path.is_empty() => (f, path),
        // Client-side routes (no file extension) get the app shell.
        _ if path.is_empty() || !path.rsplit('/').next().unwrap_or("").contains('.') => {
            match Assets::get("index.html") {
                Some(f) => (f, "index.html"),
                None => return StatusCode::NOT_FOUND.into_response(),
            }
        }
        _ => return (StatusCode::NOT_FOUND, "not found\n").into_response(),
    };
    let etag = format!("\"{}\"", hex::encode(file.metadata.sha256_hash()));
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    // Vendored libraries carry their version in the file name (web/vendor/README.md), so they
    // may be cached for a year; the app's own files keep their names, so browsers revalidate
    // them (cheap with the ETag).
    let cache = if name.starts_with("vendor/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    (
        [
            (header::CONTENT_TYPE, mime.essence_str().to_string() + if mime.type_() == "text" || name.ends_with(".js") { "; charset=utf-8" } else { "" }),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, cache.to_string()),
            (header::REFERRER_POLICY, "no-referrer".to_string()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (header::CONTENT_SECURITY_POLICY, "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'".to_string()),
        ],
        file.data.into_owned(),
    )
        .into_response()
}
