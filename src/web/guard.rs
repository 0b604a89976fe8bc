//! The checks every connection and request to the page server passes, as
//! pure functions (no I/O, no clock reads) so each is unit-tested alone.
//!
//! - [`HostPolicy`]: the `Host` header must name this device (DNS
//!   rebinding: a page on `evil.example` whose name later resolves to the
//!   device's address still sends `Host: evil.example`).
//! - [`check_origin`]: a WebSocket upgrade or a `POST /claim` from a
//!   browser must come from the page's own origin or a configured one.
//! - [`ConnLimiter`]: at most so many connections in all and per address.
//! - [`ws_keepalive`]: when a quiet WebSocket is pinged, and when it is
//!   given up.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// `http.max_connections` are open.
    Total,
    /// `http.max_connections_per_ip` are open from this address.
    PerAddress,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per: HashMap<IpAddr, usize>,
}

/// Counts open connections, in all and per client address. A connection
/// holds a [`ConnPermit`]; dropping it frees the place.
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

    /// A place for a connection from `ip`, if there is one. IPv4-mapped
    /// IPv6 addresses count as their IPv4 address. Each IPv6 address counts
    /// alone: a /64 is usually a whole LAN, not one host.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnPermit, Refusal> {
        let ip = ip.to_canonical();
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= self.max_total {
            return Err(Refusal::Total);
        }
        let n = c.per.entry(ip).or_insert(0);
        if *n >= self.max_per {
            return Err(Refusal::PerAddress);
        }
        *n += 1;
        c.total += 1;
        Ok(ConnPermit {
            limiter: self.clone(),
            ip,
        })
    }

    /// Open connections: in all, and from `ip`.
    pub fn open(&self, ip: IpAddr) -> (usize, usize) {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        (c.total, c.per.get(&ip.to_canonical()).copied().unwrap_or(0))
    }
}

/// One admitted connection's place; freed on drop.
#[derive(Debug)]
pub struct ConnPermit {
    limiter: Arc<ConnLimiter>,
    ip: IpAddr,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut c = self
            .limiter
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per.remove(&self.ip);
            }
        }
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

    #[test]
    fn connection_caps_in_all_and_per_address() {
        let l = ConnLimiter::new(4, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a_mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let p1 = l.try_acquire(a).unwrap();
        let _p2 = l.try_acquire(a_mapped).unwrap();
        assert_eq!(l.try_acquire(a).unwrap_err(), Refusal::PerAddress);
        assert_eq!(l.open(a), (2, 2));
        let _p3 = l.try_acquire(b).unwrap();
        let _p4 = l.try_acquire(b).unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        assert_eq!(l.try_acquire(c).unwrap_err(), Refusal::Total);
        drop(p1);
        assert_eq!(l.open(a), (3, 1));
        let _p5 = l.try_acquire(c).unwrap();
        assert_eq!(l.open(c), (4, 1));
        assert_eq!(l.try_acquire(a).unwrap_err(), Refusal::Total);
    }

    #[test]
    fn permits_free_their_place_and_forget_the_address() {
        let l = ConnLimiter::new(2, 1);
        let a: IpAddr = "::1".parse().unwrap();
        for _ in 0..100 {
            let p = l.try_acquire(a).unwrap();
            drop(p);
        }
        assert_eq!(l.open(a), (0, 0));
        assert!(l.counts.lock().unwrap().per.is_empty());
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
