//! The web pages: WebChat on the dialog listener, the admin console on the admin listener, and their
//! static files under `/assets/`. Everything is embedded in the binary (no Node at build time, no files
//! on disk at run time); both paths are public in the listeners' auth policies, the pages
//! authenticate their own API calls.
//!
//! Each file has a strong `ETag` (SHA-256 of its bytes) and `Cache-Control: no-cache`, so browsers
//! revalidate and get `304 Not Modified` until the binary changes. Pages carry their own strict
//! `Content-Security-Policy` (the security layer keeps a route's CSP): scripts and styles from this
//! origin only, no inline code, no third-party origins.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

/// The policy of both pages. `connect-src 'self'` also admits same-origin `ws:`/`wss:` (CSP Level 3).
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub const INDEX: &str = "/";
pub const PREFIX: &str = "/assets/";

/// Which listener serves a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Site {
    Chat,
    Admin,
    Both,
}

struct Asset {
    name: &'static str,
    content_type: &'static str,
    site: Site,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr, $site:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            site: $site,
            body: include_bytes!(concat!("../../assets/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";
const SVG: &str = "image/svg+xml";

static ASSETS: &[Asset] = &[
    asset!("webchat.html", HTML, Site::Chat),
    asset!("console.html", HTML, Site::Admin),
    asset!("base.css", CSS, Site::Both),
    asset!("webchat.css", CSS, Site::Chat),
    asset!("console.css", CSS, Site::Admin),
    asset!("i18n.js", JS, Site::Both),
    asset!("markdown.js", JS, Site::Both),
    asset!("util.js", JS, Site::Both),
    asset!("charts.js", JS, Site::Admin),
    asset!("console.js", JS, Site::Admin),
    asset!("webchat.js", JS, Site::Chat),
    asset!("icon.svg", SVG, Site::Both),
];

/// `"<sha256 prefix>"` per asset, in [`ASSETS`] order.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let digest = Sha256::digest(a.body);
            HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..16]))).expect("hex is ASCII")
        })
        .collect()
});

/// `GET /` (WebChat) and `GET /assets/{file}` for the dialog listener.
pub fn chat_router() -> Router<AppState> {
    Router::new()
        .route(INDEX, get(|h: HeaderMap| async move { page("webchat.html", &h) }))
        .route(
            "/assets/{file}",
            get(|Path(file): Path<String>, h: HeaderMap| async move { file_for(Site::Chat, &file, &h) }),
        )
}

/// `GET /` (the console) and `GET /assets/{file}` for the admin listener.
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route(INDEX, get(|h: HeaderMap| async move { page("console.html", &h) }))
        .route(
            "/assets/{file}",
            get(|Path(file): Path<String>, h: HeaderMap| async move { file_for(Site::Admin, &file, &h) }),
        )
}

fn find(name: &str) -> Option<(usize, &'static Asset)> {
    ASSETS.iter().enumerate().find(|(_, a)| a.name == name)
}

fn page(name: &str, headers: &HeaderMap) -> Response {
    let (i, asset) = find(name).expect("pages are embedded");
    let mut resp = respond(i, asset, headers);
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    resp
}

fn file_for(site: Site, name: &str, headers: &HeaderMap) -> Response {
    match find(name) {
        Some((i, asset)) if asset.site == site || asset.site == Site::Both => {
            let mut resp = respond(i, asset, headers);
            if asset.content_type == HTML {
                resp.headers_mut().insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(PAGE_CSP),
                );
            }
            resp
        }
        _ => ApiError::NotFound {
            param: Some("file"),
            message: format!("No asset named '{name}'."),
            code: "asset_not_found",
        }
        .into_response(),
    }
}

/// The body with `Content-Type`, `ETag` and `Cache-Control`, or `304` when `If-None-Match` matches.
fn respond(i: usize, asset: &'static Asset, headers: &HeaderMap) -> Response {
    let etag = ETAGS[i].clone();
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t.as_bytes() == etag.as_bytes());
    let common = [
        (header::ETAG, etag),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type))],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_match_extensions() {
        for a in ASSETS {
            let want = match a.name.rsplit('.').next() {
                Some("js") => JS,
                Some("css") => CSS,
                Some("html") => HTML,
                Some("svg") => SVG,
                other => panic!("unexpected extension {other:?}"),
            };
            assert_eq!(a.content_type, want, "{}", a.name);
        }
    }

    #[test]
    fn every_file_in_the_folder_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|a| a.name.to_owned()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }
}
