//! The checks every connection and request to the page server passes, as
//! pure functions (no I/O, no clock reads) so each is unit-tested alone.
//!
//! - [`HostPolicy`]: the `Host` header must name this device (DNS
//!   rebinding: a page on `evil.example` whose name later resolves to the
//!   device's address still sends `Host: evil.example`).
//! - [`check_origin`]: a WebSocket upgrade or a `POST /claim` from a
//!   browser must come from the page's own origin or a configured one.
//! - [`ConnLimiter`]: at most so many connections in all and per address;
//!   when all are taken, the one waiting longest for a request makes room.
//! - [`ws_keepalive`]: when a quiet WebSocket is pinged, and when it is
//!   given up.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Longest `Host` or `Origin` value looked at; longer is refused.
const MAX_NAME: usize = 300;

/// The host names this device answers to. IP literals are always accepted
/// (see [`HostPolicy::check`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPolicy {
    names: Vec<String>,
}

impl HostPolicy {
    /// `localhost`, `device_id` and `<device_id>.local`, `machine` (the
    /// host name) and `<machine>.local`, and `extra` (`http.hosts`). Names
    /// compare without case and without a trailing dot.
    pub fn new(device_id: &str, machine: &str, extra: &[String]) -> HostPolicy {
        let mut names = vec!["localhost".to_owned()];
        for base in [device_id, machine] {
            let base = normalize_name(base);
            if base.is_empty() {
                continue;
            }
            let base = base.strip_suffix(".local").unwrap_or(&base).to_owned();
            names.push(format!("{base}.local"));
            names.push(base);
        }
        names.extend(extra.iter().map(|n| normalize_name(n)));
        names.retain(|n| !n.is_empty());
        names.sort();
        names.dedup();
        HostPolicy { names }
    }

    /// The accepted names (lower case, sorted).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether a request with this `Host` header may be served: an accepted
    /// name, or any IP literal, with any port.
    ///
    /// Any IP literal, not only this machine's addresses: a browser sends
    /// an IP literal only when the page's own URL has it, so the origin is
    /// that address and no rebinding happened; and the device's addresses
    /// change (DHCP, IPv6 privacy addresses, a NAT in front) where a list
    /// taken at start would go stale.
    pub fn check(&self, host: Option<&str>) -> Result<(), String> {
        let Some(raw) = host else {
            return Err("a Host header is required".into());
        };
        let Some((name, _port)) = split_host(raw) else {
            return Err(format!("malformed Host header {:?}", clip(raw)));
        };
        if is_ip_literal(&name) || self.names.contains(&name) {
            Ok(())
        } else {
            Err(format!(
                "this device does not answer to the name {name:?}; use its address, \
                 one of {}, or add the name to http.hosts",
                self.names.join(", ")
            ))
        }
    }
}

fn clip(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn normalize_name(n: &str) -> String {
    n.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn is_ip_literal(name: &str) -> bool {
    name.parse::<Ipv4Addr>().is_ok()
        || name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .is_some_and(|n| n.parse::<Ipv6Addr>().is_ok())
}

/// Splits a `Host` header value into a lower-case host (IPv6 in brackets,
/// in canonical form; no trailing dot) and its port, if any. `None` for
/// anything malformed.
pub fn split_host(raw: &str) -> Option<(String, Option<u16>)> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > MAX_NAME {
        return None;
    }
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = v6.parse().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{ip}]"), port)
    } else {
        let (h, p) = match raw.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (raw, None),
        };
        let h = normalize_name(h);
        let ok = !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !ok {
            return None;
        }
        (h, p)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok()?)
        }
        Some(_) => return None,
    };
    Some((host, port))
}

pub use crate::config::normalize_origin;

/// Whether a browser request with this `Origin` may open a WebSocket or
/// claim the device. Allowed: no `Origin` at all (see below); the page's
/// own origin, i.e. an `Origin` whose host is the request's `Host` and
/// whose port is `page_port` (or, when `None`, the `Host`'s port); and the
/// origins in `allowed` (already normalized, see [`normalize_origin`]).
///
/// A missing `Origin` is allowed: browsers always send one on WebSocket
/// handshakes and on POSTs, so a request without one comes from a program
/// (a command-line MQTT client, a script), which no web page can steer and
/// which could as well send any `Origin` it likes. `Origin: null` (a
/// sandboxed frame, a `file:` page) is a browser and is refused.
pub fn check_origin(
    origin: Option<&str>,
    host: Option<&str>,
    page_port: Option<u16>,
    allowed: &[String],
) -> Result<(), String> {
    let Some(origin) = origin else {
        return Ok(());
    };
    let refused = || {
        format!(
            "origin {:?} is not allowed: only the page's own origin, or one listed in http.allowed_origins",
            clip(origin)
        )
    };
    let Ok(norm) = normalize_origin(origin.trim()) else {
        return Err(refused());
    };
    if allowed.contains(&norm) {
        return Ok(());
    }
    // norm parses: it came out of Url::origin.
    let Ok(u) = url::Url::parse(&norm) else {
        return Err(refused());
    };
    let (Some(o_host), Some(o_port)) = (u.host_str(), u.port_or_known_default()) else {
        return Err(refused());
    };
    let o_host = match u.host() {
        Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
        _ => o_host.to_ascii_lowercase(),
    };
    let Some((h_host, h_port)) = host.and_then(split_host) else {
        return Err(refused());
    };
    // A Host without a port is the default port of the scheme the browser used.
    let want_port = page_port.or(h_port).unwrap_or(o_port);
    if o_host == h_host && o_port == want_port {
        Ok(())
    } else {
        Err(refused())
    }
}

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `http.max_connections` are open and every one of them is serving a
    /// request or is a WebSocket: none can make room.
    Total,
    /// `http.max_connections_per_ip` are open from this address.
    PerAddress,
}

/// One open connection, as the limiter knows it.
#[derive(Debug)]
struct Entry {
    ip: IpAddr,
    /// Since when it has been waiting for a complete request head (ms on
    /// the caller's clock): accepted then, or its last response sent then.
    waiting_since: u64,
    /// Requests whose head is complete and whose response is not yet out.
    busy: u32,
    /// Upgraded to a WebSocket: never evicted.
    upgraded: bool,
    /// Told when the connection is evicted; its task closes the socket.
    close: Arc<Notify>,
}

impl Entry {
    fn evictable(&self) -> bool {
        self.busy == 0 && !self.upgraded
    }
}

#[derive(Debug, Default)]
struct Counts {
    next_id: u64,
    per: HashMap<IpAddr, usize>,
    conns: HashMap<u64, Entry>,
}

impl Counts {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.conns.remove(&id)?;
        if let Some(n) = self.per.get_mut(&e.ip) {
            *n -= 1;
            if *n == 0 {
                self.per.remove(&e.ip);
            }
        }
        Some(e)
    }
}

/// The connection to close to make room: among those waiting for a
/// complete request (not serving one, not upgraded), the one waiting
/// longest; ties go to the older connection. `None` when none waits.
fn longest_waiting<'a>(conns: impl Iterator<Item = (&'a u64, &'a Entry)>) -> Option<u64> {
    conns
        .filter(|(_, e)| e.evictable())
        .min_by_key(|(id, e)| (e.waiting_since, **id))
        .map(|(id, _)| *id)
}

/// A connection closed to make room for a new one.
#[derive(Debug)]
pub struct Evicted {
    /// Its client's address.
    pub ip: IpAddr,
    /// How long it had waited without a complete request, ms.
    pub waited_ms: u64,
    close: Arc<Notify>,
}

impl Evicted {
    /// Tells the connection's task to close it.
    pub fn close(&self) {
        self.close.notify_one();
    }
}

/// A connection let in, and the one closed to make room for it, if any.
#[derive(Debug)]
pub struct Admission {
    pub permit: ConnPermit,
    pub evicted: Option<Evicted>,
}

/// Counts open connections, in all and per client address, and knows
/// which of them wait for a request. A connection holds a [`ConnPermit`];
/// dropping it frees the place.
///
/// When all places are taken, a new connection takes the place of the one
/// that has waited longest without a complete request: a crowd of idle
/// sockets, from however many addresses, cannot keep the page from a
/// client that means to ask for it. Connections serving a request and
/// WebSockets are never evicted; when only those are left the new
/// connection is refused.
#[derive(Debug)]
pub struct ConnLimiter {
    max_total: usize,
    max_per: usize,
    counts: Mutex<Counts>,
}

impl ConnLimiter {
    /// At most `max_total` connections, `max_per` from one address.
    pub fn new(max_total: usize, max_per: usize) -> Arc<ConnLimiter> {
        Arc::new(ConnLimiter {
            max_total,
            max_per,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a connection from `ip` accepted at `now_ms`, if there is
    /// one, possibly made by evicting another (see [`ConnLimiter`]).
    /// IPv4-mapped IPv6 addresses count as their IPv4 address. Each IPv6
    /// address counts alone: a /64 is usually a whole LAN, not one host.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr, now_ms: u64) -> Result<Admission, Refusal> {
        let ip = ip.to_canonical();
        let mut c = self.lock();
        if c.per.get(&ip).copied().unwrap_or(0) >= self.max_per {
            return Err(Refusal::PerAddress);
        }
        let mut evicted = None;
        if c.conns.len() >= self.max_total {
            let victim = longest_waiting(c.conns.iter()).ok_or(Refusal::Total)?;
            let e = c.remove(victim).expect("the victim is open");
            evicted = Some(Evicted {
                ip: e.ip,
                waited_ms: now_ms.saturating_sub(e.waiting_since),
                close: e.close,
            });
        }
        let id = c.next_id;
        c.next_id += 1;
        let close = Arc::new(Notify::new());
        c.conns.insert(
            id,
            Entry {
                ip,
                waiting_since: now_ms,
                busy: 0,
                upgraded: false,
                close: close.clone(),
            },
        );
        *c.per.entry(ip).or_insert(0) += 1;
        let handle = ConnHandle {
            limiter: self.clone(),
            id,
        };
        Ok(Admission {
            permit: ConnPermit { handle, close },
            evicted,
        })
    }

    /// Open connections: in all, and from `ip`.
    pub fn open(&self, ip: IpAddr) -> (usize, usize) {
        let c = self.lock();
        (
            c.conns.len(),
            c.per.get(&ip.to_canonical()).copied().unwrap_or(0),
        )
    }
}

/// Tells the limiter what one connection is doing. Cheap to clone; does
/// nothing once the connection is closed or evicted.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    limiter: Arc<ConnLimiter>,
    id: u64,
}

impl ConnHandle {
    fn with(&self, f: impl FnOnce(&mut Entry)) {
        if let Some(e) = self.limiter.lock().conns.get_mut(&self.id) {
            f(e);
        }
    }

    /// A request head is complete: not evictable until its response is out.
    pub fn request_started(&self) {
        self.with(|e| e.busy += 1);
    }

    /// A response went out at `now_ms`; with none other in progress the
    /// connection waits for its next request from then.
    pub fn request_done(&self, now_ms: u64) {
        self.with(|e| {
            e.busy = e.busy.saturating_sub(1);
            if e.busy == 0 {
                e.waiting_since = now_ms;
            }
        });
    }

    /// The connection became a WebSocket: never evicted.
    pub fn upgraded(&self) {
        self.with(|e| e.upgraded = true);
    }
}

/// One admitted connection's place; freed on drop.
#[derive(Debug)]
pub struct ConnPermit {
    handle: ConnHandle,
    close: Arc<Notify>,
}

impl ConnPermit {
    /// For reporting what the connection does.
    pub fn handle(&self) -> ConnHandle {
        self.handle.clone()
    }

    /// Notified when the connection is evicted.
    pub fn close_signal(&self) -> Arc<Notify> {
        self.close.clone()
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        // Already gone when it was evicted.
        self.handle.limiter.lock().remove(self.handle.id);
    }
}

/// What to do with a WebSocket that has been quiet for a while.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keepalive {
    /// Nothing: it spoke recently.
    Wait,
    /// Send a ping: a live browser answers with a pong.
    Ping,
    /// Close it: not even pings were answered.
    Close,
}

/// The decision, given how long ago the client last sent anything (a pong
/// counts): ping after `ping_after`, give up after `close_after`.
pub fn ws_keepalive(quiet_for: Duration, ping_after: Duration, close_after: Duration) -> Keepalive {
    if quiet_for >= close_after {
        Keepalive::Close
    } else if quiet_for >= ping_after {
        Keepalive::Ping
    } else {
        Keepalive::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HostPolicy {
        HostPolicy::new("cam1", "RaspberryPi", &["cam.example.org".into()])
    }

    #[test]
    fn the_device_names_and_ip_literals_pass() {
        let p = policy();
        for h in [
            "cam1",
            "CAM1:8080",
            "cam1.local",
            "cam1.local.:8080",
            "raspberrypi",
            "raspberrypi.local:80",
            "localhost:8080",
            "cam.example.org",
            "192.168.1.20",
            "10.0.0.1:8080",
            "[::1]:8080",
            "[fe80::1]",
            "[2001:DB8::1]",
        ] {
            assert_eq!(p.check(Some(h)), Ok(()), "{h}");
        }
    }

    #[test]
    fn foreign_and_malformed_hosts_are_refused() {
        let p = policy();
        for h in [
            "evil.example",
            "evil.example:8080",
            "cam1.evil.example",
            "localhost.evil.example",
            "cam2",
            "",
            "cam1:",
            "cam1:99999",
            "cam1:80x",
            "[::1",
            "[not-ip]:80",
            "[::1]x",
            "cam 1",
            "cam1/x",
            "user@cam1",
            "1.2.3.4.5",
        ] {
            assert!(p.check(Some(h)).is_err(), "{h:?} was accepted");
        }
        let e = p.check(None).unwrap_err();
        assert!(e.contains("Host header"), "{e}");
        let e = p.check(Some("evil.example")).unwrap_err();
        assert!(
            e.contains("evil.example") && e.contains("http.hosts"),
            "{e}"
        );
        assert!(p.check(Some(&"a".repeat(400))).is_err());
    }

    #[test]
    fn policy_names_are_normalized() {
        let p = HostPolicy::new("cam1", "cam1.local", &[" Cam.Example.ORG. ".into()]);
        assert_eq!(
            p.names(),
            ["cam.example.org", "cam1", "cam1.local", "localhost"]
        );
        // No host name known: still the device id and localhost.
        let p = HostPolicy::new("cam1", "", &[]);
        assert_eq!(p.names(), ["cam1", "cam1.local", "localhost"]);
    }

    #[test]
    fn split_host_forms() {
        assert_eq!(split_host("A.b:81"), Some(("a.b".into(), Some(81))));
        assert_eq!(split_host("[::0:1]"), Some(("[::1]".into(), None)));
        assert_eq!(split_host("[::1]:8080"), Some(("[::1]".into(), Some(8080))));
        assert_eq!(split_host("::1"), None);
    }

    #[test]
    fn origins_normalize() {
        assert_eq!(
            normalize_origin("https://HA.example:8123"),
            Ok("https://ha.example:8123".into())
        );
        assert_eq!(
            normalize_origin("https://ha.example:443/"),
            Ok("https://ha.example".into())
        );
        assert_eq!(
            normalize_origin("http://[::1]:8080"),
            Ok("http://[::1]:8080".into())
        );
        for bad in [
            "ha.example",
            "ftp://ha.example",
            "https://ha.example/path",
            "https://u:p@ha.example",
            "https://ha.example?x",
            "null",
            "",
        ] {
            assert!(normalize_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn same_origin_listed_and_missing_origins_pass() {
        let allowed = vec!["https://ha.example:8123".to_owned()];
        let ok = |o: Option<&str>, h: Option<&str>, pp: Option<u16>| {
            check_origin(o, h, pp, &allowed).is_ok()
        };
        // No Origin: not a browser.
        assert!(ok(None, Some("cam1:8080"), None));
        // The page's own origin.
        assert!(ok(Some("http://cam1:8080"), Some("cam1:8080"), None));
        assert!(ok(Some("http://CAM1:8080"), Some("cam1:8080"), None));
        assert!(ok(Some("http://10.0.0.5"), Some("10.0.0.5"), None));
        assert!(ok(Some("http://[::1]:8080"), Some("[::1]:8080"), None));
        // Behind a TLS proxy that keeps the Host without a port.
        assert!(ok(Some("https://cam.example"), Some("cam.example"), None));
        // The extra WebSocket listener: the page is on another port.
        assert!(ok(Some("http://cam1:8080"), Some("cam1:8083"), Some(8080)));
        // A listed origin, from anywhere.
        assert!(ok(Some("https://ha.example:8123"), Some("cam1:8080"), None));
        assert!(ok(Some("https://HA.example:8123"), Some("cam1:8080"), None));
    }

    #[test]
    fn foreign_origins_are_refused() {
        let allowed = vec!["https://ha.example:8123".to_owned()];
        let refused = |o: &str, h: Option<&str>, pp: Option<u16>| {
            check_origin(Some(o), h, pp, &allowed).is_err()
        };
        assert!(refused("http://evil.example", Some("cam1:8080"), None));
        assert!(refused("http://cam1:9999", Some("cam1:8080"), None));
        assert!(refused("http://cam1", Some("cam1:8080"), None));
        assert!(refused("https://ha.example", Some("cam1:8080"), None));
        assert!(refused("http://ha.example:8123", Some("cam1:8080"), None));
        assert!(refused("null", Some("cam1:8080"), None));
        assert!(refused("garbage", Some("cam1:8080"), None));
        assert!(refused("http://cam1:8080", None, None));
        assert!(refused("http://cam1:8083", Some("cam1:8083"), Some(8080)));
        let e = check_origin(Some("http://evil.example"), Some("cam1"), None, &[]).unwrap_err();
        assert!(
            e.contains("evil.example") && e.contains("http.allowed_origins"),
            "{e}"
        );
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn take(l: &Arc<ConnLimiter>, ip: IpAddr, now: u64) -> ConnPermit {
        let a = l.try_acquire(ip, now).unwrap();
        assert!(a.evicted.is_none());
        a.permit
    }

    #[test]
    fn connection_caps_in_all_and_per_address() {
        let l = ConnLimiter::new(4, 2);
        let (a, b, c) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"));
        let p1 = take(&l, a, 0);
        let p2 = take(&l, ip("::ffff:10.0.0.1"), 0);
        assert_eq!(l.try_acquire(a, 1).unwrap_err(), Refusal::PerAddress);
        assert_eq!(l.open(a), (2, 2));
        let p3 = take(&l, b, 0);
        let p4 = take(&l, b, 0);
        // All four serve a request: nothing can make room.
        for p in [&p1, &p2, &p3, &p4] {
            p.handle().request_started();
        }
        assert_eq!(l.try_acquire(c, 1).unwrap_err(), Refusal::Total);
        drop(p1);
        assert_eq!(l.open(a), (3, 1));
        let p5 = take(&l, c, 2);
        p5.handle().request_started();
        assert_eq!(l.open(c), (4, 1));
        assert_eq!(l.try_acquire(a, 3).unwrap_err(), Refusal::Total);
    }

    #[test]
    fn a_full_house_evicts_the_longest_waiting() {
        let l = ConnLimiter::new(3, 2);
        let (a, b, c) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"));
        let p_a = take(&l, a, 100);
        let p_b = take(&l, b, 50);
        let _p_b2 = take(&l, b, 200);
        let signal = p_b.close_signal();
        // b's first connection has waited longest (since 50).
        let got = l.try_acquire(c, 1000).unwrap();
        let ev = got.evicted.expect("room made");
        assert_eq!((ev.ip, ev.waited_ms), (b, 950));
        assert_eq!(l.open(b), (3, 1));
        ev.close();
        // The signal is kept until the connection's task looks.
        use futures_util::FutureExt as _;
        assert!(
            signal.notified().now_or_never().is_some(),
            "the evicted connection is told"
        );
        // Its permit dropping later frees nothing twice.
        drop(p_b);
        assert_eq!(l.open(b), (3, 1));
        // Next the one accepted at 100.
        let ev = l.try_acquire(c, 1001).unwrap().evicted.expect("room");
        assert_eq!(ev.ip, a);
        drop(p_a);
        // Left: b's second and c's first (the second was let go at once).
        assert_eq!(l.open(a), (2, 0));
        drop(got.permit);
    }

    #[test]
    fn requests_in_progress_and_websockets_are_not_evicted() {
        let l = ConnLimiter::new(3, 3);
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let busy = take(&l, a, 0);
        busy.handle().request_started();
        let ws = take(&l, a, 1);
        ws.handle().request_started();
        ws.handle().upgraded();
        let _waiting = take(&l, a, 5);
        let b1 = l.try_acquire(b, 10).unwrap();
        let ev = b1.evicted.as_ref().expect("room");
        assert_eq!((ev.ip, ev.waited_ms), (a, 5));
        b1.permit.handle().request_started();
        // Left: a request in progress, a WebSocket, b's request.
        assert_eq!(l.try_acquire(b, 12).unwrap_err(), Refusal::Total);
        // The first request answered at 20: it waits again from then.
        busy.handle().request_done(20);
        let ev = l.try_acquire(b, 30).unwrap().evicted.expect("room");
        assert_eq!((ev.ip, ev.waited_ms), (a, 10));
        drop(ws);
    }

    #[test]
    fn a_connection_done_with_its_request_waits_from_then() {
        let l = ConnLimiter::new(2, 2);
        let (a, b, c) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"));
        let old = take(&l, a, 0);
        let _young = take(&l, b, 10);
        old.handle().request_started();
        old.handle().request_done(50);
        // b's (waiting since 10) goes before a's keep-alive (since 50).
        let ev = l.try_acquire(c, 60).unwrap().evicted.expect("room");
        assert_eq!((ev.ip, ev.waited_ms), (b, 50));
    }

    #[test]
    fn the_per_address_cap_holds_even_with_room_to_make() {
        let l = ConnLimiter::new(2, 1);
        let a = ip("10.0.0.1");
        let _p = take(&l, a, 0);
        let _q = take(&l, ip("10.0.0.2"), 0);
        assert_eq!(l.try_acquire(a, 9).unwrap_err(), Refusal::PerAddress);
    }

    #[test]
    fn permits_free_their_place_and_forget_the_address() {
        let l = ConnLimiter::new(2, 1);
        let a = ip("::1");
        for t in 0..100 {
            let p = take(&l, a, t);
            drop(p);
        }
        assert_eq!(l.open(a), (0, 0));
        let c = l.counts.lock().unwrap();
        assert!(c.per.is_empty() && c.conns.is_empty());
    }

    #[test]
    fn keepalive_pings_then_closes() {
        let s = Duration::from_secs;
        assert_eq!(ws_keepalive(s(0), s(20), s(60)), Keepalive::Wait);
        assert_eq!(ws_keepalive(s(19), s(20), s(60)), Keepalive::Wait);
        assert_eq!(ws_keepalive(s(20), s(20), s(60)), Keepalive::Ping);
        assert_eq!(ws_keepalive(s(59), s(20), s(60)), Keepalive::Ping);
        assert_eq!(ws_keepalive(s(60), s(20), s(60)), Keepalive::Close);
        assert_eq!(ws_keepalive(s(3600), s(20), s(60)), Keepalive::Close);
    }
}
