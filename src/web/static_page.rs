//! `campeer serve-page`: the embedded viewer page alone, for a machine the
//! viewers can reach (a small cloud VM), when the device's own page server
//! is out of their reach (docs/viewer.md, "A page hosted anywhere").
//!
//! It serves only the page's static files, with the daemon's headers and
//! caps (the same accept loop), and a content security policy whose
//! `connect-src` names the page's own origin and the broker's: the page
//! gets its device and broker from its pairing link and talks to nothing
//! else. No config.json, no ice.json, no claim, no WebSocket bridge: the
//! device's page server is not involved at all.

use super::server::{self, Deadlines, Listener, Peer, RefusalLog};
use super::{asset, assets, csp, not_allowed, plain, ConnLimiter, Limits};
use crate::cli::ServePageArgs;
use anyhow::{bail, Context};
use axum::extract::{Request, State};
use axum::http::Method;
use axum::http::StatusCode;
use axum::response::Response;
use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// The broker's WebSocket URL as a CSP source: `scheme://host:port`, the
/// port always written (a `ws:` source also admits `wss:` to the same host
/// and port). `None` for anything but a `ws:`/`wss:` URL with a host.
pub fn broker_csp_source(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    if u.scheme() != "ws" && u.scheme() != "wss" {
        return None;
    }
    let host = match u.host()? {
        url::Host::Ipv6(ip) => format!("[{ip}]"),
        h => h.to_string(),
    };
    Some(format!(
        "{}://{host}:{}",
        u.scheme(),
        u.port_or_known_default()?
    ))
}

/// The policy the page needs on a host of its own, for a broker at
/// `broker_source` ([`broker_csp_source`]): what `serve-page` sends, and
/// what docs/viewer.md tells static hosts to send.
pub fn page_csp(broker_source: &str) -> String {
    csp(Some(broker_source), None)
}

/// Serves the page's files on `listener` (over TLS with `tls`) until
/// `shutdown` resolves, with `policy` as the pages' CSP.
pub async fn serve_page(
    listener: TcpListener,
    policy: String,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(Arc::new(policy));
    let l = Limits::default();
    let limiter = ConnLimiter::new(l.max_connections, l.max_connections_per_ip);
    let deadlines = Deadlines {
        header: l.header_timeout,
        idle: l.idle_timeout,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let log = Arc::new(RefusalLog::new());
    let accept = server::accept_loop(
        listener,
        Listener::Page,
        app,
        limiter,
        log,
        deadlines,
        tls,
        stop_rx,
    );
    tokio::select! {
        r = accept => r,
        _ = shutdown => {
            let _ = stop_tx.send(true);
            Ok(())
        }
    }
}

async fn handle(State(policy): State<Arc<String>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let r = if method != Method::GET && method != Method::HEAD {
        not_allowed("GET, HEAD")
    } else {
        let name = match path.as_str() {
            "/" => "index.html",
            p => p.strip_prefix('/').unwrap_or(p),
        };
        match assets::find(name) {
            Some(a) => asset(a, req.headers(), &policy),
            None => plain(StatusCode::NOT_FOUND, "not found\n"),
        }
    };
    let peer = req.extensions().get::<Peer>().map(|p| p.addr);
    debug!(%method, %path, ?peer, status = r.status().as_u16(), "serve-page");
    r
}

/// `campeer serve-page`: serves until `shutdown` resolves.
pub async fn command(
    args: &ServePageArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ExitCode> {
    let Some(source) = broker_csp_source(&args.broker) else {
        bail!(
            "--broker {:?}: give the broker's ws:// or wss:// URL as the browsers reach it",
            args.broker
        );
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(super::tls::server_config(cert, key)?),
        _ => None,
    };
    if tls.is_some() && source.starts_with("ws:") {
        bail!("--broker {source} is plain ws:, which an https: page may not open: use wss://");
    }
    if !assets::page_built() {
        warn!("this binary embeds only a placeholder page (scripts/build-web.sh, then rebuild)");
    }
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("--listen {}", args.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let policy = page_csp(&source);
    info!("serving the viewer page at {scheme}://{addr}/ for the broker {source}");
    info!("its Content-Security-Policy: {policy}");
    serve_page(listener, policy, tls, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_source_always_names_its_port() {
        let s = |u| broker_csp_source(u);
        assert_eq!(
            s("wss://broker.example.org/mqtt").as_deref(),
            Some("wss://broker.example.org:443")
        );
        assert_eq!(
            s("wss://broker.example.org:8884/mqtt").as_deref(),
            Some("wss://broker.example.org:8884")
        );
        assert_eq!(s("ws://[::1]:9001/").as_deref(), Some("ws://[::1]:9001"));
        assert_eq!(s("https://broker.example.org/"), None);
        assert_eq!(s("not a url"), None);
    }

    #[test]
    fn the_policy_lets_the_page_reach_only_itself_and_the_broker() {
        let p = page_csp("wss://broker.example.org:8884");
        assert!(
            p.contains("connect-src 'self' wss://broker.example.org:8884;"),
            "{p}"
        );
        assert!(p.contains("script-src 'self';") && p.contains("frame-ancestors 'none'"));
    }

    /// Status line and headers of one request over a real socket.
    async fn head_of(addr: std::net::SocketAddr, method: &str, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        let read = s.read_to_end(&mut buf);
        tokio::time::timeout(std::time::Duration::from_secs(5), read)
            .await
            .expect("in time")
            .expect("read");
        let text = String::from_utf8_lossy(&buf).into_owned();
        text.split("\r\n\r\n").next().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn it_serves_the_page_and_nothing_else() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let policy = page_csp("wss://broker.example.org:8884");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_page(listener, policy.clone(), None, async {
            let _ = rx.await;
        }));
        let index = head_of(addr, "GET", "/").await;
        assert!(index.starts_with("HTTP/1.1 200"), "{index}");
        let lower = index.to_ascii_lowercase();
        assert!(
            lower.contains(&format!(
                "content-security-policy: {}",
                policy.to_ascii_lowercase()
            )),
            "{index}"
        );
        assert!(lower.contains("x-content-type-options: nosniff"), "{index}");
        assert!(lower.contains("referrer-policy: no-referrer"), "{index}");
        // Whatever the embedded page is (the real one or the placeholder),
        // the device's own paths are not here.
        for path in ["/config.json", "/ice.json", "/mqtt", "/healthz", "/claim"] {
            let r = head_of(addr, "GET", path).await;
            assert!(r.starts_with("HTTP/1.1 404"), "{path}: {r}");
        }
        let post = head_of(addr, "POST", "/claim").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        let _ = tx.send(());
        server.await.expect("join").expect("served");
    }
}
