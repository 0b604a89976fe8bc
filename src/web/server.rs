//! The accept loop: admits connections under the caps, serves each with
//! hyper's HTTP/1 server under a header-read deadline and an idle
//! deadline, and hands upgraded WebSockets on with their place still held.
//!
//! axum's own `serve` has no header timeout and no connection cap: one
//! client holding thousands of silent sockets would exhaust the daemon's
//! file descriptors. Here:
//!
//! - a connection over `max_connections_per_ip` from its address is
//!   closed at once (logged, rate-limited); one over `max_connections` in
//!   all takes the place of the connection that has waited longest without
//!   a complete request, which is closed (see [`ConnLimiter`]), or is
//!   closed at once when every open one is serving a request or is a
//!   WebSocket;
//! - a request head not complete within `header_timeout` closes the
//!   connection; hyper starts that clock whenever it waits for a head, so
//!   it also closes a keep-alive connection idle between requests;
//! - a connection on which nothing is read or written for `idle_timeout`
//!   (a stalled body, a client that stops reading) is dropped;
//! - the connection's [`ConnPermit`] lives inside its socket, so a socket
//!   upgraded to a WebSocket keeps its place until it closes;
//! - with `http.tls_cert`, every connection first completes a TLS handshake
//!   within the header deadline (a client speaking plain HTTP is closed).

use super::guard::{ConnHandle, ConnLimiter, ConnPermit, Refusal};
use crate::ratelimit::TokenBucket;
use axum::Router;
use hyper::body::Incoming;
use hyper::service::{service_fn, Service as _};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

/// Largest request head hyper buffers, bytes.
const MAX_HEAD: usize = 16 * 1024;

/// Which listener a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Listener {
    /// The page's own server: the page, its JSON, and `/mqtt`.
    Page,
    /// `broker.ws_listen`: only the WebSocket bridge, on any path.
    Bridge,
}

/// Put in each request's extensions by the accept loop.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer {
    pub addr: SocketAddr,
    pub listener: Listener,
}

/// Deadlines for one connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadlines {
    pub header: Duration,
    pub idle: Duration,
}

/// Logs refused connections, at most a few lines a minute, with a count of
/// the ones not logged.
#[derive(Debug)]
pub(crate) struct RefusalLog {
    bucket: Mutex<(TokenBucket, u64)>,
}

impl RefusalLog {
    pub fn new() -> Self {
        RefusalLog {
            // One line per 10 s on average, 3 at once.
            bucket: Mutex::new((TokenBucket::new(1, 3), 0)),
        }
    }

    /// Whether to log now (and how many were skipped since the last line).
    fn admit(&self, now_us: u64) -> Option<u64> {
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        // TokenBucket counts whole tokens per second; scale time by 1/10.
        if b.0.try_take(now_us / 10) {
            Some(std::mem::take(&mut b.1))
        } else {
            b.1 += 1;
            None
        }
    }

    fn refused(&self, peer: SocketAddr, why: Refusal, limiter: &ConnLimiter) {
        if let Some(skipped) = self.admit(crate::clock::monotonic_us()) {
            let (total, from_peer) = limiter.open(peer.ip());
            let why = match why {
                Refusal::Total => "http.max_connections reached",
                Refusal::PerAddress => "http.max_connections_per_ip reached",
            };
            warn!(%peer, open = total, open_from_peer = from_peer, not_logged = skipped,
                  "HTTP connection refused: {why}");
        }
    }
}

/// Accepts on `listener` until `stop` turns true; each admitted connection
/// is served by `app` in its own task, over TLS when `tls` is set.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn accept_loop(
    listener: TcpListener,
    kind: Listener,
    app: Router,
    limiter: Arc<ConnLimiter>,
    log: Arc<RefusalLog>,
    deadlines: Deadlines,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let service = TowerToHyperService::new(app);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return Ok(()),
            r = listener.accept() => r,
        };
        let (stream, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: wait instead of spinning; the
                // connection stays in the backlog.
                debug!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match limiter.try_acquire(addr.ip(), process_ms()) {
            Ok(admitted) => {
                if let Some(ev) = admitted.evicted {
                    debug!(peer = %addr, evicted = %ev.ip, waited_ms = ev.waited_ms,
                           "connection cap reached: closing the longest-waiting idle connection");
                    ev.close();
                }
                admitted.permit
            }
            Err(why) => {
                log.refused(addr, why, &limiter);
                // Dropping closes it at once.
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let peer = Peer {
            addr,
            listener: kind,
        };
        tokio::spawn(admitted(
            stream,
            permit,
            peer,
            service.clone(),
            deadlines,
            tls.clone(),
            stop.clone(),
        ));
    }
}

/// One admitted connection: the TLS handshake if any (under the header
/// deadline, and evictable like a connection waiting for its request),
/// then HTTP.
async fn admitted(
    stream: TcpStream,
    permit: ConnPermit,
    peer: Peer,
    service: TowerToHyperService<Router>,
    deadlines: Deadlines,
    tls: Option<TlsAcceptor>,
    stop: watch::Receiver<bool>,
) {
    let evicted = permit.close_signal();
    let handle = permit.handle();
    let io = Tracked::new(stream, permit);
    let activity = io.activity.clone();
    let conn = Conn {
        peer,
        handle,
        evicted,
        activity,
    };
    let Some(acceptor) = tls else {
        return serve_connection(io, conn, service, deadlines, stop).await;
    };
    let handshake = tokio::time::timeout(deadlines.header, acceptor.accept(io));
    let tls_io = tokio::select! {
        r = handshake => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                debug!(peer = %peer.addr, "TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                debug!(peer = %peer.addr, "TLS handshake not done in time; closing");
                return;
            }
        },
        _ = conn.evicted.notified() => {
            debug!(peer = %peer.addr, "connection in its TLS handshake closed to make room");
            return;
        }
    };
    serve_connection(tls_io, conn, service, deadlines, stop).await
}

/// What the connection's task keeps about it besides its socket.
struct Conn {
    peer: Peer,
    handle: ConnHandle,
    evicted: Arc<tokio::sync::Notify>,
    activity: Arc<Activity>,
}

async fn serve_connection<I>(
    io: I,
    conn: Conn,
    service: TowerToHyperService<Router>,
    deadlines: Deadlines,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Conn {
        peer,
        handle,
        evicted,
        activity,
    } = conn;
    let svc = service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(peer);
        let done = RequestInProgress::new(handle.clone());
        let answer = service.call(req);
        async move {
            let r = answer.await;
            if let Ok(resp) = &r {
                if resp.status() == hyper::StatusCode::SWITCHING_PROTOCOLS {
                    done.handle.upgraded();
                }
            }
            drop(done);
            r
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(deadlines.header)
        .max_buf_size(MAX_HEAD)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let check_every = (deadlines.idle / 4).max(Duration::from_millis(100));
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(peer = %peer.addr, "http connection: {e}");
                }
                return;
            }
            _ = evicted.notified() => {
                debug!(peer = %peer.addr, "idle connection closed to make room");
                return;
            }
            _ = tokio::time::sleep(check_every) => {
                if activity.quiet_for() >= deadlines.idle {
                    debug!(peer = %peer.addr, "http connection idle; closing");
                    return;
                }
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                // Finish the request in flight, take no other.
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Marks a connection busy from a complete request head until its answer
/// is ready (also when the answer is dropped half-way). No route streams a
/// long body, so "answer ready" stands for "response out".
struct RequestInProgress {
    handle: ConnHandle,
}

impl RequestInProgress {
    fn new(handle: ConnHandle) -> Self {
        handle.request_started();
        RequestInProgress { handle }
    }
}

impl Drop for RequestInProgress {
    fn drop(&mut self) {
        self.handle.request_done(process_ms());
    }
}

fn process_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// When a connection last moved a byte, in ms since the process epoch.
#[derive(Debug)]
pub(crate) struct Activity(AtomicU64);

impl Activity {
    fn touch(&self) {
        self.0.store(process_ms(), Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        Duration::from_millis(process_ms().saturating_sub(self.0.load(Ordering::Relaxed)))
    }
}

/// A TCP stream that records when it last moved a byte, and holds its
/// connection's place.
struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
    _permit: ConnPermit,
}

impl Tracked {
    fn new(stream: TcpStream, permit: ConnPermit) -> Self {
        let activity = Arc::new(Activity(AtomicU64::new(process_ms())));
        Tracked {
            stream,
            activity,
            _permit: permit,
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_logged_a_few_at_a_time() {
        let log = RefusalLog::new();
        let t0 = 1_000_000_000u64;
        assert_eq!(log.admit(t0), Some(0));
        assert_eq!(log.admit(t0), Some(0));
        assert_eq!(log.admit(t0), Some(0));
        for _ in 0..50 {
            assert_eq!(log.admit(t0), None);
        }
        // Ten seconds later one more line, counting the 50 not logged.
        assert_eq!(log.admit(t0 + 10_000_000), Some(50));
        assert_eq!(log.admit(t0 + 10_000_000), None);
    }
}
