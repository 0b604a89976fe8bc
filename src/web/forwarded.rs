//! The client's address behind a reverse proxy, for claims and the
//! bearer failure limit.
//!
//! `X-Forwarded-For`, `Forwarded` and `X-Real-IP` are believed only when
//! the connection comes from a proxy listed in `http.trusted_proxies`.
//! Then the client is the rightmost address in the chain that is not a
//! trusted proxy (the leftmost entries are whatever the client chose to
//! send). A request that carries one of these headers from any other
//! peer is refused where the address matters: an untrusted proxy in front
//! of the device hides the real client (every Internet client would look
//! local).

use axum::http::HeaderMap;
use std::net::IpAddr;

pub use crate::config::proxy_net::ProxyNet;

/// Why the client's address cannot be told.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ForwardedError {
    #[error("a forwarded-address header came from {0}, which is not in http.trusted_proxies")]
    UntrustedProxy(IpAddr),
    #[error("the forwarded-address header from a trusted proxy cannot be read")]
    Unreadable,
}

const HEADERS: [&str; 3] = ["forwarded", "x-forwarded-for", "x-real-ip"];

/// The client's address: `peer` itself without forwarded headers; the
/// rightmost untrusted address of the chain when `peer` is a trusted
/// proxy; an error when such a header comes from an untrusted peer.
pub fn client_address(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[ProxyNet],
) -> Result<IpAddr, ForwardedError> {
    let present = HEADERS.iter().any(|h| headers.contains_key(*h));
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !present {
        return Ok(peer);
    }
    if !is_trusted(peer) {
        return Err(ForwardedError::UntrustedProxy(peer));
    }
    let chain = chain(headers).ok_or(ForwardedError::Unreadable)?;
    // Walk from the nearest hop outwards; the first untrusted one is the client.
    let mut client = peer;
    for hop in chain.iter().rev() {
        client = *hop;
        if !is_trusted(*hop) {
            break;
        }
    }
    Ok(client)
}

/// The addresses a trusted proxy reported, client first: `Forwarded`'s
/// `for=` values, else `X-Forwarded-For`, else `X-Real-IP`. `None` when
/// one is not an address (`unknown`, obfuscated names) or there is none.
fn chain(headers: &HeaderMap) -> Option<Vec<IpAddr>> {
    let values = |name: &str| -> Option<Vec<String>> {
        let mut out = Vec::new();
        for v in headers.get_all(name) {
            out.extend(v.to_str().ok()?.split(',').map(|s| s.trim().to_owned()));
        }
        Some(out)
    };
    let items: Vec<String> = if headers.contains_key("forwarded") {
        values("forwarded")?
            .iter()
            .filter_map(|elem| {
                elem.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| v.trim().trim_matches('"').to_owned())
                })
            })
            .collect()
    } else if headers.contains_key("x-forwarded-for") {
        values("x-forwarded-for")?
    } else {
        values("x-real-ip")?
    };
    if items.is_empty() {
        return None;
    }
    items.iter().map(|s| parse_node(s)).collect()
}

/// `1.2.3.4`, `1.2.3.4:80`, `[2001:db8::1]`, `[2001:db8::1]:80`, `2001:db8::1`.
fn parse_node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    s.rsplit_once(':')?
        .0
        .parse::<std::net::Ipv4Addr>()
        .ok()
        .map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, v.parse().expect("header value"));
        }
        m
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn cidr_blocks() {
        let n = ProxyNet::parse("10.1.0.0/16").expect("ok");
        assert!(n.contains(ip("10.1.200.3")));
        assert!(n.contains(ip("::ffff:10.1.0.1")));
        assert!(!n.contains(ip("10.2.0.1")));
        assert!(!n.contains(ip("::1")));
        let one = ProxyNet::parse("127.0.0.1").expect("ok");
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6 = ProxyNet::parse("fd00::/8").expect("ok");
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(ProxyNet::parse("0.0.0.0/0")
            .expect("ok")
            .contains(ip("8.8.8.8")));
        for bad in ["", "10.0.0.0/33", "::/129", "host", "10.0.0.0/x"] {
            assert!(ProxyNet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn headers_count_only_from_trusted_proxies() {
        let proxy = ip("127.0.0.1");
        let trusted = [ProxyNet::parse("127.0.0.1").expect("ok")];
        let xff = h(&[("x-forwarded-for", "192.168.1.9")]);
        // No header: the peer is the client.
        assert_eq!(
            client_address(ip("192.168.1.9"), &h(&[]), &[]),
            Ok(ip("192.168.1.9"))
        );
        // A header from a peer nobody trusts: refused, whatever it says.
        for name in HEADERS {
            let m = h(&[(name, "192.168.1.9")]);
            assert_eq!(
                client_address(proxy, &m, &[]),
                Err(ForwardedError::UntrustedProxy(proxy)),
                "{name}"
            );
        }
        // A trusted proxy: the forwarded client.
        assert_eq!(client_address(proxy, &xff, &trusted), Ok(ip("192.168.1.9")));
        // The rightmost untrusted hop: a client cannot pose as local by
        // sending its own header first.
        let spoof = h(&[("x-forwarded-for", "192.168.1.9, 203.0.113.7")]);
        assert_eq!(
            client_address(proxy, &spoof, &trusted),
            Ok(ip("203.0.113.7"))
        );
        let two = [trusted[0], ProxyNet::parse("10.0.0.2").expect("ok")];
        let via = h(&[("x-forwarded-for", "203.0.113.7, 10.0.0.2")]);
        assert_eq!(client_address(proxy, &via, &two), Ok(ip("203.0.113.7")));
        let fwd = h(&[(
            "forwarded",
            "for=192.0.2.60;proto=http, for=\"[2001:db8::7]:4711\"",
        )]);
        assert_eq!(client_address(proxy, &fwd, &trusted), Ok(ip("2001:db8::7")));
        let real = h(&[("x-real-ip", "198.51.100.2")]);
        assert_eq!(
            client_address(proxy, &real, &trusted),
            Ok(ip("198.51.100.2"))
        );
        let port = h(&[("x-forwarded-for", "198.51.100.2:5000")]);
        assert_eq!(
            client_address(proxy, &port, &trusted),
            Ok(ip("198.51.100.2"))
        );
        for junk in ["unknown", "", "_hidden", "1.2.3.4, nonsense"] {
            let m = h(&[("x-forwarded-for", junk)]);
            assert_eq!(
                client_address(proxy, &m, &trusted),
                Err(ForwardedError::Unreadable),
                "{junk:?}"
            );
        }
    }
}
