//! Answers a browser's first connectivity check at once (docs/design.md,
//! pitfall 16).
//!
//! Browsers nominate on their very first check: Chromium's default
//! ("semi-aggressive") nomination puts USE-CANDIDATE on every check while
//! it has no selected pair. webrtc-rs 0.21's controlled agent answers a
//! nominating check only when the device's own check of that pair has
//! already succeeded; otherwise it sends its own check and neither answers
//! the browser's nor remembers the nomination. With a browser whose host
//! candidates are mDNS names (the default) the device learns the browser's
//! address from that very check, so its own check can never have succeeded
//! first: the browser's check goes unanswered, and the connection waits for
//! the browser's next check, 50-60 ms later.
//!
//! The fix sits at the device's UDP sockets, outside the ICE agent: a
//! nominating check whose answer has not gone out is kept, and when the
//! answer to the device's own check arrives from the same address, the kept
//! check is handed to the agent once more, right after that answer. The
//! pair has succeeded by then, so the agent selects it and answers the
//! browser's first check. Nothing is forged: the agent verifies the kept
//! check's MESSAGE-INTEGRITY again, as it did the first time.
//!
//! [`Replay`] decides (pure, with `now` passed in); [`ReplaySocket`] is the
//! socket wrapper and [`DeviceRuntime`] the tokio runtime that installs it.

use super::dtls_resend::{may_be_handshake, FlightResend};
use super::relay_flush::{in_driver, is_driver, FlushTimer};
use rtc::stun::attributes::ATTR_USE_CANDIDATE;
use rtc::stun::message::{
    is_stun_message, Message, TransactionId, BINDING_REQUEST, BINDING_SUCCESS,
};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tracing::debug;
use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, RecvMeta, Runtime,
    TokioRuntime, Transmit,
};

/// How many unanswered nominating checks a socket keeps (one per peer
/// address is the normal case).
const MAX_KEPT: usize = 8;
/// How long one is kept: the device's own check is answered within a
/// round trip, and a later answer no longer saves anything.
const KEEP_FOR: Duration = Duration::from_secs(2);
/// A STUN check is a few hundred bytes; anything larger is not kept.
const MAX_CHECK_BYTES: usize = 1200;

/// A nominating check the agent has not answered yet.
struct Kept {
    from: SocketAddr,
    id: TransactionId,
    bytes: Vec<u8>,
    at: Instant,
}

/// What one socket remembers: unanswered nominating checks, by sender.
#[derive(Default)]
pub struct Replay {
    kept: VecDeque<Kept>,
}

/// A STUN message of one of the two kinds this module looks at.
enum Stun {
    NominatingCheck(TransactionId),
    Success(TransactionId),
}

/// RFC 7983: STUN starts with 0-3; RTP, RTCP and DTLS never do. The one
/// test media packets pay: the sockets look no further for them.
fn may_be_stun(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| *b <= 3)
}

fn classify(datagram: &[u8]) -> Option<Stun> {
    if !may_be_stun(datagram) || !is_stun_message(datagram) {
        return None;
    }
    let mut m = Message::new();
    m.unmarshal_binary(datagram).ok()?;
    if m.typ == BINDING_REQUEST && m.contains(ATTR_USE_CANDIDATE) {
        Some(Stun::NominatingCheck(m.transaction_id))
    } else if m.typ == BINDING_SUCCESS {
        Some(Stun::Success(m.transaction_id))
    } else {
        None
    }
}

impl Replay {
    /// A datagram arrived from `from`. Returns a kept check to hand to the
    /// agent right after this datagram, when this is the answer to the
    /// device's own check from the address whose nomination went unanswered.
    pub fn inbound(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> Option<Vec<u8>> {
        let stun = classify(datagram)?;
        self.kept
            .retain(|k| now.saturating_duration_since(k.at) < KEEP_FOR);
        match stun {
            Stun::NominatingCheck(id) => {
                if datagram.len() > MAX_CHECK_BYTES {
                    return None;
                }
                // The latest check from an address replaces an older one.
                self.kept.retain(|k| k.from != from);
                if self.kept.len() == MAX_KEPT {
                    self.kept.pop_front();
                }
                self.kept.push_back(Kept {
                    from,
                    id,
                    bytes: datagram.to_vec(),
                    at: now,
                });
                None
            }
            Stun::Success(_) => {
                let i = self.kept.iter().position(|k| k.from == from)?;
                self.kept.remove(i).map(|k| k.bytes)
            }
        }
    }

    /// A datagram is going to `to`: the agent's answer to a kept check
    /// means it needs no replay.
    pub fn outbound(&mut self, to: SocketAddr, datagram: &[u8]) {
        if self.kept.is_empty() {
            return;
        }
        if let Some(Stun::Success(id)) = classify(datagram) {
            self.kept.retain(|k| !(k.from == to && k.id == id));
        }
    }

    /// How many checks are kept (for tests).
    pub fn kept(&self) -> usize {
        self.kept.len()
    }
}

/// A datagram waiting to be handed to the agent.
struct Queued {
    from: SocketAddr,
    dst_ip: Option<IpAddr>,
    bytes: Vec<u8>,
}

#[derive(Default)]
struct State {
    replay: Replay,
    queued: VecDeque<Queued>,
    /// The device's last DTLS handshake flight per peer (`rtc::dtls_resend`).
    resend: FlightResend,
}

/// A UDP socket that hands the agent a kept nominating check again after
/// the answer to the device's own check (see the module's text).
pub struct ReplaySocket {
    inner: Arc<dyn AsyncUdpSocket>,
    /// Keep and replay nominating checks (the device, the controlled
    /// side); the viewer client only repeats DTLS flights.
    replay_checks: bool,
    state: Mutex<State>,
    /// Whether `state.queued` has anything, read without the lock on
    /// every receive (written under it).
    queued: AtomicBool,
}

impl ReplaySocket {
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, replay_checks: bool) -> ReplaySocket {
        ReplaySocket {
            inner,
            replay_checks,
            state: Mutex::new(State::default()),
            queued: AtomicBool::new(false),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends the device's last DTLS flight again when `seg` repeats the
    /// peer's last handshake message (`rtc::dtls_resend`). Best effort: a
    /// send that would block is dropped, as a lost datagram would be.
    fn resend_flight(
        &self,
        cx: &mut Context<'_>,
        st: &mut State,
        now: Instant,
        m: &RecvMeta,
        seg: &[u8],
    ) {
        if !may_be_handshake(seg) {
            return;
        }
        let again = st.resend.inbound(now, m.addr, seg);
        if !again.is_empty() {
            debug!(peer = %m.addr, datagrams = again.len(), "the peer repeated its DTLS flight: sending the device's again");
        }
        for d in &again {
            let t = Transmit {
                destination: m.addr,
                ecn: None,
                contents: d,
                segment_size: None,
                src_ip: m.dst_ip,
            };
            let _ = self.inner.poll_send(cx, &t);
        }
    }

    /// Fills `bufs`/`meta` from the queue; returns how many were filled.
    fn take_queued(
        &self,
        st: &mut State,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> usize {
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let Some(q) = st.queued.pop_front() else {
                break;
            };
            if q.bytes.len() > bufs[n].len() {
                continue; // cannot happen with the driver's buffers; dropped
            }
            bufs[n][..q.bytes.len()].copy_from_slice(&q.bytes);
            let mut m = RecvMeta::default();
            m.addr = q.from;
            m.len = q.bytes.len();
            m.stride = q.bytes.len();
            m.dst_ip = q.dst_ip;
            meta[n] = m;
            n += 1;
        }
        self.queued.store(!st.queued.is_empty(), Ordering::Release);
        n
    }
}

impl fmt::Debug for ReplaySocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplaySocket")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl AsyncUdpSocket for ReplaySocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_gso_segments(&self) -> usize {
        self.inner.max_gso_segments()
    }

    fn max_gro_segments(&self) -> usize {
        self.inner.max_gro_segments()
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        if transmit.segment_size.is_none() && may_be_stun(transmit.contents) {
            self.state()
                .replay
                .outbound(transmit.destination, transmit.contents);
        }
        if may_be_handshake(transmit.contents) {
            let stride = transmit
                .segment_size
                .unwrap_or(transmit.contents.len())
                .max(1);
            let mut st = self.state();
            for seg in transmit.contents.chunks(stride) {
                st.resend.outbound(transmit.destination, seg);
            }
        }
        self.inner.poll_send(cx, transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        if self.queued.load(Ordering::Acquire) {
            let n = self.take_queued(&mut self.state(), bufs, meta);
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
        }
        let n = match self.inner.poll_recv(cx, bufs, meta) {
            Poll::Ready(Ok(n)) => n,
            other => return other,
        };
        // Media (the common case) is neither STUN nor a DTLS handshake: no
        // lock, no clock.
        if !bufs.iter().zip(meta.iter()).take(n).any(|(b, m)| {
            let d = &b[..m.len.min(b.len())];
            may_be_stun(d) || may_be_handshake(d) || m.stride < m.len
        }) {
            return Poll::Ready(Ok(n));
        }
        let now = Instant::now();
        let mut st = self.state();
        for (buf, m) in bufs.iter().zip(meta.iter()).take(n) {
            let stride = m.stride.max(1);
            for seg in buf[..m.len.min(buf.len())].chunks(stride) {
                self.resend_flight(cx, &mut st, now, m, seg);
                if !self.replay_checks {
                    continue;
                }
                if let Some(bytes) = st.replay.inbound(now, m.addr, seg) {
                    debug!(peer = %m.addr, "answering the peer's first nominating check now that the device's own check succeeded");
                    st.queued.push_back(Queued {
                        from: m.addr,
                        dst_ip: m.dst_ip,
                        bytes,
                    });
                }
            }
        }
        let extra = self.take_queued(&mut st, &mut bufs[n..], &mut meta[n..]);
        if !st.queued.is_empty() {
            // Handed over at the next receive, which this wake-up asks for.
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(n + extra))
    }
}

/// webrtc-rs's tokio runtime, one per peer connection, with its fixes:
/// [`ReplaySocket`] around each UDP socket (nominating checks replayed on
/// the device, which browsers' first checks reach; the last DTLS flight
/// repeated on both sides, `rtc::dtls_resend`), and the driver's extra
/// passes after each wake-up that send TURN-relayed packets at once
/// (`rtc::relay_flush`, for connections with a TURN server).
#[derive(Debug, Default)]
pub struct DeviceRuntime {
    replay_checks: bool,
    flush: Option<Arc<Mutex<FlushTimer>>>,
}

impl DeviceRuntime {
    pub fn new(replay_checks: bool, flush_relayed: bool) -> DeviceRuntime {
        DeviceRuntime {
            replay_checks,
            flush: flush_relayed.then(Arc::default),
        }
    }

    fn driver(
        &self,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        if self.flush.is_some() {
            in_driver(future)
        } else {
            future
        }
    }
}

impl Runtime for DeviceRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        TokioRuntime.spawn(self.driver(future))
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        TokioRuntime.spawn_reactor(reactor_pool_size, self.driver(future))
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let inner = TokioRuntime.wrap_udp_socket(socket)?;
        Ok(Arc::new(ReplaySocket::new(inner, self.replay_checks)))
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        TokioRuntime.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        TokioRuntime.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        TokioRuntime.resolve_host(host)
    }

    fn now(&self) -> Instant {
        TokioRuntime.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let Some(timer) = self.flush.as_ref().filter(|_| is_driver()) else {
            return TokioRuntime.sleep(duration);
        };
        let (duration, follow_up) = timer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sleep_for(duration);
        let sleep = TokioRuntime.sleep(duration);
        let Some(n) = follow_up else {
            return sleep;
        };
        let timer = timer.clone();
        Box::pin(async move {
            sleep.await;
            timer.lock().unwrap_or_else(|p| p.into_inner()).fired(n);
        })
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        TokioRuntime.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        TokioRuntime.block_on(future)
    }

    fn name(&self) -> &'static str {
        "tokio (campeer: nominating checks answered at once, relayed packets sent at once)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::attributes::ATTR_PRIORITY;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 7], port))
    }

    fn message(typ: rtc::stun::message::MessageType, id: [u8; 12], nominate: bool) -> Vec<u8> {
        let mut m = Message::new();
        m.typ = typ;
        m.transaction_id = TransactionId(id);
        m.write_header();
        if nominate {
            m.add(ATTR_USE_CANDIDATE, &[]);
        }
        m.add(ATTR_PRIORITY, &[0, 0, 0, 1]);
        m.raw.clone()
    }

    fn check(id: u8) -> Vec<u8> {
        message(BINDING_REQUEST, [id; 12], true)
    }

    fn success(id: u8) -> Vec<u8> {
        message(BINDING_SUCCESS, [id; 12], false)
    }

    #[test]
    fn an_unanswered_nomination_is_replayed_once_after_the_devices_own_check_succeeds() {
        let t0 = Instant::now();
        let mut r = Replay::default();
        assert_eq!(r.inbound(t0, addr(1), &check(1)), None);
        assert_eq!(r.kept(), 1);
        // The answer to the device's own check, from the same address.
        let again = r.inbound(t0 + Duration::from_millis(2), addr(1), &success(9));
        assert_eq!(again, Some(check(1)));
        assert_eq!(r.kept(), 0);
        // A later answer (keepalives) replays nothing.
        assert_eq!(
            r.inbound(t0 + Duration::from_millis(900), addr(1), &success(10)),
            None
        );
    }

    #[test]
    fn a_nomination_the_agent_answered_is_forgotten() {
        let t0 = Instant::now();
        let mut r = Replay::default();
        r.inbound(t0, addr(1), &check(1));
        r.outbound(addr(1), &success(1));
        assert_eq!(r.kept(), 0);
        assert_eq!(r.inbound(t0, addr(1), &success(9)), None);
    }

    #[test]
    fn an_answer_to_another_address_or_transaction_keeps_it() {
        let t0 = Instant::now();
        let mut r = Replay::default();
        r.inbound(t0, addr(1), &check(1));
        r.outbound(addr(2), &success(1));
        r.outbound(addr(1), &success(2));
        assert_eq!(r.kept(), 1);
        assert_eq!(
            r.inbound(t0, addr(2), &success(9)),
            None,
            "another sender's answer"
        );
        assert_eq!(r.inbound(t0, addr(1), &success(9)), Some(check(1)));
    }

    #[test]
    fn checks_without_use_candidate_and_non_stun_are_ignored() {
        let t0 = Instant::now();
        let mut r = Replay::default();
        r.inbound(t0, addr(1), &message(BINDING_REQUEST, [1; 12], false));
        // DTLS (22), RTP (0x80), garbage, empty.
        for d in [&[22u8, 254, 253, 0][..], &[0x80, 96, 0, 1], &[0, 1, 0], &[]] {
            assert_eq!(r.inbound(t0, addr(1), d), None);
        }
        assert_eq!(r.kept(), 0);
        // A truncated STUN header is not a check either.
        let mut c = check(1);
        c.truncate(c.len() - 3);
        assert_eq!(r.inbound(t0, addr(1), &c), None);
        assert_eq!(r.kept(), 0);
    }

    #[test]
    fn kept_checks_expire_and_are_bounded() {
        let t0 = Instant::now();
        let mut r = Replay::default();
        r.inbound(t0, addr(1), &check(1));
        assert_eq!(
            r.inbound(t0 + KEEP_FOR, addr(1), &success(9)),
            None,
            "expired"
        );
        for p in 0..(MAX_KEPT as u16 + 5) {
            r.inbound(t0, addr(100 + p), &check(p as u8));
        }
        assert_eq!(r.kept(), MAX_KEPT);
        // The oldest went first; the newest is there.
        assert_eq!(r.inbound(t0, addr(100), &success(9)), None);
        let last = MAX_KEPT as u16 + 4;
        assert_eq!(
            r.inbound(t0, addr(100 + last), &success(9)),
            Some(check(last as u8))
        );
    }

    #[test]
    fn the_latest_check_from_an_address_replaces_the_earlier() {
        let t0 = Instant::now();
        let mut r = Replay::default();
        r.inbound(t0, addr(1), &check(1));
        r.inbound(t0, addr(1), &check(2));
        assert_eq!(r.kept(), 1);
        assert_eq!(r.inbound(t0, addr(1), &success(9)), Some(check(2)));
        let mut big = check(3);
        big.resize(MAX_CHECK_BYTES + 1, 0);
        assert_eq!(r.inbound(t0, addr(1), &big), None);
        assert_eq!(r.kept(), 0);
    }
}
