//! The HTTP server for the viewer page.
//!
//! It serves the page's files, embedded in the binary (see `assets`), the
//! page's configuration as `GET /config.json`, and `GET /healthz`. The page
//! does everything else itself in the browser: it speaks MQTT over
//! WebSocket to the broker and WebRTC to the device (PROTOCOL.md), so this
//! server holds no state and sees no media.
//!
//! Every other path is 404, every method but GET and HEAD is 405. Nothing
//! here touches the file system.

pub mod assets;
pub mod ws_bridge;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;
use tracing::debug;

/// What the page needs to know, served as `/config.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageConfig {
    /// The device to show (`device_id`).
    pub device_id: String,
    /// The topic root (`mqtt.prefix`).
    pub prefix: String,
    /// The broker's MQTT-over-WebSocket URL as the browser must use it,
    /// e.g. `ws://broker.lan:9001/mqtt` (an external broker). `None`: the
    /// page connects to its own host name, on `ws_port` and `ws_path`.
    pub ws_url: Option<String>,
    /// The WebSocket port on the page's host (the embedded broker's), used
    /// when `ws_url` is `None`. `None` too: the page's own port.
    pub ws_port: Option<u16>,
    /// The WebSocket path used with `ws_port`, e.g. `/mqtt`.
    pub ws_path: String,
    /// `open` or `signed` (PROTOCOL.md section 5): whether the page asks
    /// for an access key. The device's presence has the last word.
    pub auth: String,
    /// STUN/TURN servers for the page's RTCPeerConnection, shaped like the
    /// browser's RTCIceServer. Anyone who can load the page reads these.
    #[serde(default)]
    pub ice_servers: Vec<PageIceServer>,
}

/// One STUN or TURN server, as the browser's `RTCIceServer`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageIceServer {
    /// `stun:`, `stuns:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl From<&crate::config::IceServer> for PageIceServer {
    fn from(s: &crate::config::IceServer) -> Self {
        PageIceServer {
            urls: s.urls.clone(),
            username: s.username.clone(),
            credential: s.credential.clone(),
        }
    }
}

impl Default for PageConfig {
    fn default() -> Self {
        PageConfig {
            device_id: String::new(),
            prefix: "campeer".into(),
            ws_url: None,
            ws_port: None,
            ws_path: "/mqtt".into(),
            auth: "open".into(),
            ice_servers: Vec::new(),
        }
    }
}

/// Whether the real viewer page is embedded in this binary (false: only a
/// placeholder saying how to build it).
pub fn page_built() -> bool {
    assets::page_built()
}

struct Site {
    config_json: Vec<u8>,
}

/// Serves the page on `listener` until `shutdown` resolves, then stops
/// accepting and lets open requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    page: PageConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let config_json = serde_json::to_vec(&page).map_err(std::io::Error::other)?;
    let site = Arc::new(Site { config_json });
    let app = axum::Router::new().fallback(handle).with_state(site);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

// The page's scripts, styles and media come from the device itself; the
// broker may be on another port or host, hence ws: and wss:.
const CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
                   media-src 'self' blob: mediastream:; connect-src 'self' ws: wss:; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

async fn handle(
    State(site): State<Arc<Site>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let r = respond(&site, &method, uri.path(), &headers);
    debug!(%method, path = uri.path(), status = r.status().as_u16(), "http");
    r
}

fn respond(site: &Site, method: &Method, path: &str, headers: &HeaderMap) -> Response {
    if method != Method::GET && method != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    // HEAD: hyper sends GET's headers, Content-Length included, and no body.
    match path {
        "/healthz" => {
            let mut r = plain(StatusCode::OK, "ok\n");
            no_store(&mut r);
            r
        }
        "/config.json" => {
            let mut r = Response::new(Body::from(site.config_json.clone()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            no_store(&mut r);
            common_headers(&mut r);
            r
        }
        _ => {
            let name = match path {
                "/" => "index.html",
                p => p.strip_prefix('/').unwrap_or(p),
            };
            match assets::find(name) {
                Some(a) => asset(a, headers),
                None => plain(StatusCode::NOT_FOUND, "not found\n"),
            }
        }
    }
}

fn asset(a: &'static assets::Asset, headers: &HeaderMap) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == a.etag || t.trim() == "*"));
    let mut r = if fresh {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Body::from(a.body));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(a.content_type),
        );
        r
    };
    let h = r.headers_mut();
    // Always revalidate: file names carry no hash, and a daemon upgrade
    // must never leave a browser on the old page. The ETag makes it cheap.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::ETAG, HeaderValue::from_static(a.etag));
    if a.content_type.starts_with("text/html") {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    common_headers(&mut r);
    r
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    common_headers(&mut r);
    r
}

fn no_store(r: &mut Response) {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn common_headers(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

#[cfg(test)]
mod tests;
