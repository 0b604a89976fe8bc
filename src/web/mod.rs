//! The HTTP server for the viewer page.
//!
//! It serves the page's files, embedded in the binary (see `assets`), the
//! page's configuration as `GET /config.json`, `GET /healthz`, the STUN/TURN
//! servers with their credentials as `GET /ice.json` (to key holders),
//! `POST /claim` (pairing a new device), and MQTT over WebSocket at
//! `/mqtt`, bridged to the broker's TCP port (`ws_bridge`). The page does
//! everything else itself in the browser: it speaks MQTT and WebRTC to the
//! device (docs/protocol.md), so this server holds no state and sees no media.
//!
//! What it accepts (docs/viewer.md, "What the page server accepts"):
//! connections under the caps and deadlines of `server`; requests whose
//! `Host` names this device (`guard::HostPolicy`, against DNS rebinding);
//! WebSocket upgrades and claims from the page's own origin or a
//! configured one (`guard::check_origin`). Every other path is 404, a
//! method a path does not take is 405. Nothing here touches the file system.

pub mod assets;
pub mod bearer;
pub mod bye;
pub mod forwarded;
pub mod guard;
mod server;
pub mod static_page;
pub mod tls;
pub mod whep;
pub mod ws_bridge;

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use guard::{check_origin, normalize_origin, split_host, ConnLimiter, HostPolicy};
use serde::{Deserialize, Serialize};
use server::{Deadlines, Listener, Peer, RefusalLog};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};
use ws_bridge::WsTimeouts;

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
    /// `open` or `signed` (docs/protocol.md#authorization-protocol-version-2): whether the page asks
    /// for an access key. The device's presence has the last word.
    pub auth: String,
    /// STUN/TURN servers for the page's RTCPeerConnection, shaped like the
    /// browser's RTCIceServer. Given to [`serve`] whole; `/config.json`
    /// carries only those without a user name or credential (anyone who
    /// can load the page reads it), `/ice.json` all of them.
    #[serde(default)]
    pub ice_servers: Vec<PageIceServer>,
    /// Whether the device serves MQTT itself (its own broker), so the page
    /// knows the broker asks for a key.
    #[serde(default)]
    pub own_broker: bool,
    /// Whether `POST /claim` would hand out a key now. Set per request
    /// from [`Hooks::claimable`]; the value given to [`serve`] is ignored.
    #[serde(default)]
    pub claimable: bool,
    /// The origin of the relay's Janus API (`[relay]`), which the page's
    /// content security policy must let it call.
    #[serde(skip)]
    pub relay_origin: Option<String>,
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
            own_broker: false,
            claimable: false,
            relay_origin: None,
        }
    }
}

/// What `POST /claim` got from [`Hooks::claim`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// A key was made for the claimant: `pair` is `<id>.<secret>`, as in a
    /// pairing link. Answered 200 `{"pair": ...}`.
    Claimed {
        /// `<id>.<secret>`.
        pair: String,
    },
    /// The device cannot be claimed (any more). Answered 409.
    Closed,
    /// This claimant may not claim it (e.g. its address). Answered 403.
    Refused,
    /// The claim could not be recorded, so no key was handed out.
    /// Answered 503.
    Unavailable,
}

/// Checks an access key: `(key_id, password)` from
/// `Authorization: Bearer <key_id>:<password>`.
pub type KeyCheck = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;
/// Checks a WHEP/snapshot token; the key it belongs to.
pub type TokenCheck = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;
/// Claims the device for the client at this address.
pub type ClaimHandler = Arc<dyn Fn(IpAddr) -> ClaimOutcome + Send + Sync>;
/// Whether the device can be claimed now.
pub type ClaimableCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// Connection caps and deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most open connections, WebSockets included (`http.max_connections`).
    pub max_connections: usize,
    /// Most open connections from one address
    /// (`http.max_connections_per_ip`).
    pub max_connections_per_ip: usize,
    /// Time for a request head, and for the next one on a kept-alive
    /// connection. Default 10 s.
    pub header_timeout: Duration,
    /// A connection that moves no byte this long is closed (before any
    /// WebSocket upgrade). Default 30 s.
    pub idle_timeout: Duration,
    /// WebSocket keep-alive.
    pub ws: WsTimeouts,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 128,
            max_connections_per_ip: 16,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            ws: WsTimeouts::default(),
        }
    }
}

/// The daemon's side of the page server: callbacks and options, so that
/// [`serve`] keeps a short signature. [`Hooks::default`] accepts no key,
/// is never claimable, and has the default limits: right for tests.
pub struct Hooks {
    /// Checks the bearer of `GET /ice.json` (not asked when the device is
    /// `open`).
    pub check_key: KeyCheck,
    /// Checks the WHEP and `/snapshot.jpg` bearer (not asked when open).
    pub check_token: TokenCheck,
    /// `http.trusted_proxies`: peers whose forwarded-address headers are
    /// believed; bad entries are logged and left out.
    pub trusted_proxies: Vec<String>,
    /// Runs `POST /claim` (on a blocking thread: it may write files).
    pub claim: ClaimHandler,
    /// Evaluated for every `/config.json`, as its `claimable`.
    pub claimable: ClaimableCheck,
    /// Caps and deadlines.
    pub limits: Limits,
    /// Origins, besides the page's own, that may open the WebSocket and
    /// claim (`http.allowed_origins`); normalized by [`serve`], bad ones
    /// are logged and left out.
    pub allowed_origins: Vec<String>,
    /// Names the device answers to besides its own (`http.hosts`).
    pub hosts: Vec<String>,
    /// An extra listener serving only the WebSocket bridge, on any path
    /// (`broker.ws_listen`), under the same guards and caps.
    pub ws_listener: Option<TcpListener>,
    /// WHEP at `/whep` (`crate::web::whep`); `None`: 404 there.
    pub whep: Option<Arc<crate::web::whep::Whep>>,
    /// Makes `GET /snapshot.jpg` (`None`: no video, answered 404).
    pub snapshot: Option<Arc<crate::snapshot::Snapshotter>>,
    /// Takes `POST /bye/{sid}` ([`bye`]); `None`: 404 there.
    pub bye: Option<bye::ByeSender>,
    /// Serve HTTPS (both listeners) with this configuration
    /// ([`tls::server_config`]); `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            check_key: Arc::new(|_, _| false),
            check_token: Arc::new(|_| None),
            trusted_proxies: Vec::new(),
            claim: Arc::new(|_| ClaimOutcome::Closed),
            claimable: Arc::new(|| false),
            limits: Limits::default(),
            allowed_origins: Vec::new(),
            hosts: Vec::new(),
            ws_listener: None,
            whep: None,
            snapshot: None,
            bye: None,
            tls: None,
        }
    }
}

impl Hooks {
    /// Takes the caps, allowed origins and host names from `[http]`.
    pub fn with_config(mut self, http: &crate::config::HttpConfig) -> Self {
        self.limits.max_connections = http.max_connections;
        self.limits.max_connections_per_ip = http.max_connections_per_ip;
        self.allowed_origins = http.allowed_origins.clone();
        self.hosts = http.hosts.clone();
        self.trusted_proxies = http.trusted_proxies.clone();
        self
    }
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("limits", &self.limits)
            .field("allowed_origins", &self.allowed_origins)
            .field("hosts", &self.hosts)
            .field("ws_listener", &self.ws_listener)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Whether the real viewer page is embedded in this binary (false: only a
/// placeholder saying how to build it).
pub fn page_built() -> bool {
    assets::page_built()
}

/// Longest `POST /claim` body read (and ignored), bytes.
const MAX_CLAIM_BODY: usize = 1024;
/// Longest key id or password looked at in an `/ice.json` bearer.
const MAX_BEARER_PART: usize = 256;

struct Site {
    /// `/config.json`, without credentialed ICE servers.
    page: PageConfig,
    /// `/ice.json`.
    ice_json: Vec<u8>,
    mqtt: Option<SocketAddr>,
    hosts: HostPolicy,
    origins: Vec<String>,
    /// The page listener's port, for the extra WebSocket listener's
    /// same-origin check.
    page_port: Option<u16>,
    check_key: KeyCheck,
    check_token: TokenCheck,
    /// Trusted proxies and the bearer failure limit.
    bearer: bearer::BearerGuard,
    claim: ClaimHandler,
    claimable: ClaimableCheck,
    ws: WsTimeouts,
    stop: watch::Receiver<bool>,
    whep: Option<Arc<crate::web::whep::Whep>>,
    snapshot: Option<Arc<crate::snapshot::Snapshotter>>,
    bye: Option<bye::ByeSender>,
}

#[derive(Serialize)]
struct IceJson<'a> {
    ice_servers: &'a [PageIceServer],
}

/// Serves the page on `listener` (and the WebSocket bridge on
/// `hooks.ws_listener`, if any) until `shutdown` resolves; then stops
/// accepting and lets open requests finish. `mqtt` is the broker's TCP
/// address for the bridge (a wildcard address means loopback); `None`:
/// `/mqtt` answers 503 (the page then uses `page.ws_url`).
pub async fn serve(
    listener: TcpListener,
    page: PageConfig,
    mqtt: Option<SocketAddr>,
    mut hooks: Hooks,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let ws = hooks.ws_listener.take();
    serve_listeners(Some(listener), ws, page, mqtt, hooks, shutdown).await
}

async fn serve_listeners(
    page_listener: Option<TcpListener>,
    ws_listener: Option<TcpListener>,
    mut page: PageConfig,
    mqtt: Option<SocketAddr>,
    hooks: Hooks,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let ice_json = serde_json::to_vec(&IceJson {
        ice_servers: &page.ice_servers,
    })
    .map_err(std::io::Error::other)?;
    page.ice_servers
        .retain(|s| s.username.is_none() && s.credential.is_none());
    let mut origins = Vec::new();
    for o in &hooks.allowed_origins {
        match normalize_origin(o) {
            Ok(n) => origins.push(n),
            Err(e) => warn!("http.allowed_origins: {e}; left out"),
        }
    }
    let mut trusted = Vec::new();
    for p in &hooks.trusted_proxies {
        match forwarded::ProxyNet::parse(p) {
            Ok(n) => trusted.push(n),
            Err(e) => warn!("http.trusted_proxies: {e}; left out"),
        }
    }
    let machine = crate::config::read_host_name().unwrap_or_default();
    let page_port = match &page_listener {
        Some(l) => Some(l.local_addr()?.port()),
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let site = Arc::new(Site {
        hosts: HostPolicy::new(&page.device_id, &machine, &hooks.hosts),
        page,
        ice_json,
        mqtt,
        origins,
        page_port,
        check_key: hooks.check_key,
        check_token: hooks.check_token,
        bearer: bearer::BearerGuard::new(trusted),
        claim: hooks.claim,
        claimable: hooks.claimable,
        ws: hooks.limits.ws,
        stop: stop_rx.clone(),
        whep: hooks.whep,
        snapshot: hooks.snapshot,
        bye: hooks.bye,
    });
    let app = axum::Router::new().fallback(handle).with_state(site);
    let l = hooks.limits;
    let limiter = ConnLimiter::new(l.max_connections.max(1), l.max_connections_per_ip.max(1));
    let log = Arc::new(RefusalLog::new());
    let deadlines = Deadlines {
        header: l.header_timeout,
        idle: l.idle_timeout,
    };
    let tls = hooks.tls.map(tokio_rustls::TlsAcceptor::from);
    let run = |listener: Option<TcpListener>, kind| {
        let (app, limiter, log, tls, stop) = (
            app.clone(),
            limiter.clone(),
            log.clone(),
            tls.clone(),
            stop_rx.clone(),
        );
        async move {
            match listener {
                Some(listener) => {
                    server::accept_loop(listener, kind, app, limiter, log, deadlines, tls, stop)
                        .await
                }
                None => Ok(()),
            }
        }
    };
    let loops = futures_util::future::try_join(
        run(page_listener, Listener::Page),
        run(ws_listener, Listener::Bridge),
    );
    tokio::select! {
        r = loops => r.map(|_| ()),
        _ = shutdown => {
            // Connections finish their request in flight; bridged
            // WebSockets close.
            let _ = stop_tx.send(true);
            Ok(())
        }
    }
}

// The page's scripts, styles and media come from the device itself. It
// may connect to its own origin ('self' covers ws:// and wss:// to the same
// host and port), to the broker's WebSocket when that is elsewhere, and to
// the relay's Janus; nowhere else.
fn csp(broker: Option<&str>, relay_origin: Option<&str>) -> String {
    let mut connect = String::from("'self'");
    for o in [broker, relay_origin].into_iter().flatten() {
        connect.push(' ');
        connect.push_str(o);
    }
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
         media-src 'self' blob: mediastream:; connect-src {connect}; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
}

/// The broker WebSocket's origin as a CSP source, port always written:
/// `page.ws_url`'s, or (own broker on its own port) the page's host on
/// `ws_port`, from the request's `Host` (already checked). A `ws://`
/// source also admits `wss://` to the same host and port. `None`: the
/// page's own origin, which 'self' covers.
fn broker_source(page: &PageConfig, host: Option<&str>) -> Option<String> {
    if let Some(url) = &page.ws_url {
        let u = url::Url::parse(url).ok()?;
        let h = match u.host()? {
            url::Host::Ipv6(ip) => format!("[{ip}]"),
            h => h.to_string(),
        };
        return Some(format!(
            "{}://{h}:{}",
            u.scheme(),
            u.port_or_known_default()?
        ));
    }
    let port = page.ws_port?;
    let (h, _) = split_host(host?)?;
    Some(format!("ws://{h}:{port}"))
}

/// The origin (`scheme://host[:port]`) of a URL, for the CSP.
pub fn origin_of(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    let origin = u.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

async fn handle(State(site): State<Arc<Site>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let peer = req.extensions().get::<Peer>().copied();
    let r = route(&site, peer, req).await;
    debug!(%method, path = %path, peer = ?peer.map(|p| p.addr), status = r.status().as_u16(), "http");
    r
}

/// Whether the Content-Type is `application/json` (parameters such as
/// `charset` allowed): what a form on another site cannot send without a
/// CORS preflight, which the device never grants.
fn is_json(headers: &HeaderMap) -> bool {
    header_str(headers, header::CONTENT_TYPE).is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    })
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn route(site: &Arc<Site>, peer: Option<Peer>, req: Request) -> Response {
    let host = header_str(req.headers(), header::HOST);
    if let Err(why) = site.hosts.check(host) {
        let status = if host.and_then(split_host).is_some() {
            StatusCode::MISDIRECTED_REQUEST
        } else {
            StatusCode::BAD_REQUEST
        };
        return plain_text(status, format!("{why}\n"));
    }
    if peer.is_some_and(|p| p.listener == Listener::Bridge) {
        // The extra listener's page is on the page server's port.
        return websocket(site, site.page_port, req).await;
    }
    let method = req.method().clone();
    match req.uri().path() {
        "/mqtt" if method == Method::GET => websocket(site, None, req).await,
        "/claim" if method == Method::POST => {
            let ip = peer.map(|p| p.addr.ip());
            claim(site, ip, req).await
        }
        "/snapshot.jpg" if method == Method::GET || method == Method::HEAD => {
            let ip = peer.map(|p| p.addr.ip());
            snapshot(site, ip, req.uri().query(), req.headers()).await
        }
        "/ice.json" if method == Method::GET || method == Method::HEAD => {
            ice(site, peer.map(|p| p.addr.ip()), req.headers())
        }
        "/claim" => not_allowed("POST"),
        p if p.starts_with("/bye/") => match (&site.bye, method == Method::POST) {
            (Some(tx), true) => bye::handle(tx, &site.origins, req).await,
            (Some(_), false) => not_allowed("POST"),
            (None, _) => plain(StatusCode::NOT_FOUND, "not found\n"),
        },
        p if p == "/whep" || p.starts_with("/whep/") => match &site.whep {
            Some(whep) => {
                let gate = crate::web::whep::http::Gate {
                    open: site.page.auth == "open",
                    check_token: &site.check_token,
                    bearer: &site.bearer,
                    peer: peer.map(|p| p.addr.ip()),
                    origins: &site.origins,
                    page_port: site.page_port,
                };
                crate::web::whep::http::handle(whep, gate, req).await
            }
            None => plain(StatusCode::NOT_FOUND, "not found\n"),
        },
        _ if method != Method::GET && method != Method::HEAD => not_allowed("GET, HEAD"),
        path => respond(site, path, req.headers()),
    }
}

fn not_allowed(allow: &'static str) -> Response {
    let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// A WebSocket upgrade to the MQTT bridge. `page_port`: see
/// [`check_origin`].
async fn websocket(site: &Arc<Site>, page_port: Option<u16>, req: Request) -> Response {
    let h = req.headers();
    let origin = header_str(h, header::ORIGIN);
    if let Err(why) = check_origin(
        origin,
        header_str(h, header::HOST),
        page_port,
        &site.origins,
    ) {
        return plain_text(StatusCode::FORBIDDEN, format!("{why}\n"));
    }
    let Some(target) = site.mqtt else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "this device bridges no MQTT broker here; the page uses http.ws_url\n",
        );
    };
    let (mut parts, _body) = req.into_parts();
    match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws_bridge::upgrade(ws, target, site.ws, site.stop.clone()),
        Err(rejection) => rejection.into_response(),
    }
}

/// `POST /claim`: JSON only (a cross-site form cannot send it without a
/// CORS preflight, which is never granted), from an allowed origin; the
/// body is read up to [`MAX_CLAIM_BODY`] and ignored.
async fn claim(site: &Arc<Site>, ip: Option<IpAddr>, req: Request) -> Response {
    let h = req.headers();
    if !is_json(h) {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "POST /claim takes Content-Type: application/json\n",
        );
    }
    let origin = header_str(h, header::ORIGIN);
    if let Err(why) = check_origin(origin, header_str(h, header::HOST), None, &site.origins) {
        return plain_text(StatusCode::FORBIDDEN, format!("{why}\n"));
    }
    let Some(peer) = ip else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "no peer address\n");
    };
    // Behind a proxy the client is what a trusted proxy says; a forwarded
    // header from anyone else hides the client: no claim.
    let ip = match forwarded::client_address(peer, h, site.bearer.trusted()) {
        Ok(ip) => ip,
        Err(e) => {
            warn!(%peer, "claim refused: {e}");
            return plain_text(StatusCode::FORBIDDEN, format!("{e}\n"));
        }
    };
    let body = axum::body::to_bytes(req.into_body(), MAX_CLAIM_BODY);
    match tokio::time::timeout(Duration::from_secs(10), body).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"),
        Err(_) => return plain(StatusCode::REQUEST_TIMEOUT, "body too slow\n"),
    }
    let f = site.claim.clone();
    let outcome = match tokio::task::spawn_blocking(move || f(ip)).await {
        Ok(o) => o,
        Err(e) => {
            warn!("claim handler failed: {e}");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "claim failed\n");
        }
    };
    match outcome {
        ClaimOutcome::Claimed { pair } => {
            let body = serde_json::json!({ "pair": pair }).to_string();
            json_response(body.into_bytes())
        }
        ClaimOutcome::Closed => plain(StatusCode::CONFLICT, "this device cannot be claimed\n"),
        ClaimOutcome::Refused => plain(
            StatusCode::FORBIDDEN,
            "this address may not claim the device\n",
        ),
        ClaimOutcome::Unavailable => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the claim could not be recorded on the device, so no key was handed out; \
             check the device's state directory and try again\n",
        ),
    }
}

/// `GET /snapshot.jpg[?width=N]`: the latest frame as a JPEG, to holders
/// of a WHEP/snapshot token (`campeer keys token add`).
async fn snapshot(
    site: &Site,
    peer: Option<IpAddr>,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    use crate::snapshot::SnapshotError;
    if site.page.auth != "open" {
        let now = crate::clock::monotonic_us();
        if let Err(r) = site
            .bearer
            .check(peer, headers, now, |t| (site.check_token)(t))
        {
            return refused(
                r,
                "GET /snapshot.jpg needs Authorization: Bearer <token> (campeer keys token add)\n",
            );
        }
    }
    let Some(snap) = &site.snapshot else {
        return plain(StatusCode::NOT_FOUND, "this device has no video\n");
    };
    let mut width = None;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            // Checked against the frame's size by the snapshotter.
            "width" => match v.trim().parse::<u32>() {
                Ok(w) => width = Some(w),
                Err(_) => return plain(StatusCode::BAD_REQUEST, "width must be a whole number\n"),
            },
            _ => return plain(StatusCode::BAD_REQUEST, "the only parameter is width\n"),
        }
    }
    match snap.jpeg(width).await {
        Ok(s) => {
            let mut r = Response::new(Body::from(s.jpeg));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
            no_store(&mut r);
            common_headers(&mut r);
            r
        }
        Err(e @ SnapshotError::BadWidth { .. }) => {
            plain_text(StatusCode::BAD_REQUEST, format!("{e}\n"))
        }
        Err(e @ (SnapshotError::Busy | SnapshotError::NoFrame)) => {
            let mut r = plain_text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"));
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        Err(e) => {
            warn!("snapshot failed: {e}");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "snapshot failed\n")
        }
    }
}

/// The answer to a refused bearer: 401 (with `text`), or 429 with
/// `Retry-After` after too many failures.
pub(crate) fn refused(why: bearer::BearerRefusal, text: &'static str) -> Response {
    if let bearer::BearerRefusal::TooMany(secs) = why {
        let mut r = plain(
            StatusCode::TOO_MANY_REQUESTS,
            "too many wrong tokens from this address; try again later\n",
        );
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let mut r = plain(StatusCode::UNAUTHORIZED, text);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"campeer\""),
    );
    r
}

/// `GET /ice.json`: every ICE server, credentials included, to a key
/// holder (`Authorization: Bearer <key_id>:<password>`, the key's MQTT
/// password, which the page holds anyway), or to anyone when the device
/// is open. Failures count against the same limit as WHEP's.
fn ice(site: &Site, peer: Option<IpAddr>, headers: &HeaderMap) -> Response {
    if site.page.auth != "open" {
        let now = crate::clock::monotonic_us();
        let verify = |t: &str| {
            key_password(t)
                .is_some_and(|(id, pw)| (site.check_key)(id, pw))
                .then_some(())
        };
        if let Err(r) = site.bearer.check(peer, headers, now, verify) {
            return refused(
                r,
                "GET /ice.json needs Authorization: Bearer <key_id>:<password>\n",
            );
        }
    }
    json_response(site.ice_json.clone())
}

/// `(key_id, password)` out of a `<key_id>:<password>` bearer token;
/// `None` for anything else or anything oversized.
fn key_password(token: &str) -> Option<(&str, &str)> {
    let (id, password) = token.split_once(':')?;
    let ok = |s: &str| !s.is_empty() && s.len() <= MAX_BEARER_PART;
    (ok(id) && ok(password)).then_some((id, password))
}

fn json_response(body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    no_store(&mut r);
    common_headers(&mut r);
    r
}

fn respond(site: &Site, path: &str, headers: &HeaderMap) -> Response {
    // HEAD: hyper sends GET's headers, Content-Length included, and no body.
    match path {
        "/healthz" => {
            let mut r = plain(StatusCode::OK, "ok\n");
            no_store(&mut r);
            r
        }
        "/config.json" => {
            let mut page = site.page.clone();
            page.claimable = (site.claimable)();
            match serde_json::to_vec(&page) {
                Ok(body) => json_response(body),
                Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "config.json\n"),
            }
        }
        _ => {
            let name = match path {
                "/" => "index.html",
                p => p.strip_prefix('/').unwrap_or(p),
            };
            match assets::find(name) {
                Some(a) => {
                    let broker = broker_source(&site.page, header_str(headers, header::HOST));
                    let policy = csp(broker.as_deref(), site.page.relay_origin.as_deref());
                    asset(a, headers, &policy)
                }
                None => plain(StatusCode::NOT_FOUND, "not found\n"),
            }
        }
    }
}

fn asset(a: &'static assets::Asset, headers: &HeaderMap, csp: &str) -> Response {
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
        if let Ok(v) = HeaderValue::from_str(csp) {
            h.insert(header::CONTENT_SECURITY_POLICY, v);
        }
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

fn plain_text(status: StatusCode, text: String) -> Response {
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
