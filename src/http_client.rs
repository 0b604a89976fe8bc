//! One HTTP/1.1 exchange on a fresh connection, for the few places the
//! daemon and `campeer view` are HTTP clients: WHEP (`campeer view
//! --whep`) and the Janus API (`relay`). Plain `http://` only; responses are
//! bounded in size and time.

use anyhow::{bail, Context};
use axum::body::Body;
use hyper::{Method, Request, StatusCode};
use std::time::Duration;
use tracing::debug;

/// What came back.
pub struct Response {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

/// A request to send.
pub struct Exchange<'a> {
    pub method: Method,
    pub url: &'a url::Url,
    pub bearer: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub body: String,
    /// Largest response body read, bytes.
    pub max_body: usize,
    /// The whole exchange, connecting included.
    pub timeout: Duration,
}

impl<'a> Exchange<'a> {
    /// A `method` request to `url` with no body, 64 KiB and 10 s limits.
    pub fn new(method: Method, url: &'a url::Url) -> Self {
        Exchange {
            method,
            url,
            bearer: None,
            content_type: None,
            body: String::new(),
            max_body: 64 * 1024,
            timeout: Duration::from_secs(10),
        }
    }

    /// Sends it and reads the whole response.
    pub async fn send(self) -> anyhow::Result<Response> {
        let what = format!("{} {}", self.method, self.url);
        let limit = self.timeout;
        tokio::time::timeout(limit, self.send_now())
            .await
            .with_context(|| format!("{what}: no response within {} s", limit.as_secs()))?
            .with_context(|| what)
    }

    async fn send_now(self) -> anyhow::Result<Response> {
        let url = self.url;
        if url.scheme() != "http" {
            bail!("only http:// URLs are supported here, not {}", url.scheme());
        }
        let host = url.host_str().context("the URL has no host")?;
        let port = url.port_or_known_default().unwrap_or(80);
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .with_context(|| format!("connecting to {host}:{port}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        let conn = tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!("HTTP connection: {e}");
            }
        });
        let host_header = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let mut req = Request::builder()
            .method(self.method)
            .uri(target)
            .header(hyper::header::HOST, host_header);
        if let Some(t) = self.bearer {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(ct) = self.content_type {
            req = req.header(hyper::header::CONTENT_TYPE, ct);
        }
        let resp = sender
            .send_request(req.body(Body::from(self.body))?)
            .await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(Body::new(resp.into_body()), self.max_body).await?;
        conn.abort();
        Ok(Response {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }
}
