//! `Authorization: Bearer ...` checks on the page server (WHEP,
//! `/snapshot.jpg`, `/ice.json`), with one limit on failures per client
//! address shared by all three: after
//! [`crate::ratelimit::BEARER_FAILURES_PER_MINUTE`] wrong tokens in a
//! minute an address gets 429 with `Retry-After` until the minute is over,
//! whatever it sends.

use super::forwarded::{client_address, ProxyNet};
use crate::ratelimit::FailureLimiter;
use axum::http::{header, HeaderMap};
use std::net::IpAddr;
use std::sync::Mutex;
use tracing::info;

/// Longest bearer token looked at, bytes.
const MAX_TOKEN: usize = 600;

/// Why a bearer was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BearerRefusal {
    /// No `Authorization: Bearer` header (not counted as a failure).
    Missing,
    /// A token that is not valid (counted).
    Wrong,
    /// Too many failures from this address: wait this many seconds.
    TooMany(u64),
}

/// The trusted proxies (to tell the client's address) and the failure
/// counts.
#[derive(Debug, Default)]
pub struct BearerGuard {
    trusted: Vec<ProxyNet>,
    failures: Mutex<FailureLimiter>,
}

impl BearerGuard {
    pub fn new(trusted: Vec<ProxyNet>) -> Self {
        BearerGuard {
            trusted,
            failures: Mutex::new(FailureLimiter::default()),
        }
    }

    pub fn trusted(&self) -> &[ProxyNet] {
        &self.trusted
    }

    /// Checks the request's bearer token with `verify` unless the client
    /// has used up its failures. The client is the forwarded address when
    /// the peer is a trusted proxy, else the peer.
    pub fn check<T>(
        &self,
        peer: Option<IpAddr>,
        headers: &HeaderMap,
        now_us: u64,
        verify: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, BearerRefusal> {
        let client = peer.map(|p| client_address(p, headers, &self.trusted).unwrap_or(p));
        let mut failures = match self.failures.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(c) = client {
            failures.check(c, now_us).map_err(BearerRefusal::TooMany)?;
        }
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .ok_or(BearerRefusal::Missing)?;
        match verify(token) {
            Some(v) => Ok(v),
            None => {
                if let Some(c) = client {
                    failures.fail(c, now_us);
                    if failures.check(c, now_us).is_err() {
                        info!(client = %c, "too many wrong bearer tokens; refusing this address for a minute");
                    }
                }
                Err(BearerRefusal::Wrong)
            }
        }
    }
}

/// The token of `Bearer <token>`; `None` for another scheme, an empty or
/// oversized token.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= MAX_TOKEN)
        .then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().expect("value"));
        h
    }

    #[test]
    fn wrong_tokens_are_limited_per_client_and_right_ones_pass() {
        let g = BearerGuard::new(Vec::new());
        let a = Some("192.168.1.7".parse().expect("ip"));
        let b = Some("192.168.1.8".parse().expect("ip"));
        let ok = |t: &str| (t == "good").then_some(());
        assert_eq!(
            g.check(a, &HeaderMap::new(), 0, ok),
            Err(BearerRefusal::Missing)
        );
        assert_eq!(
            g.check(a, &auth("Basic good"), 0, ok),
            Err(BearerRefusal::Missing)
        );
        assert_eq!(g.check(a, &auth("Bearer good"), 0, ok), Ok(()));
        for _ in 0..10 {
            assert_eq!(
                g.check(a, &auth("Bearer bad"), 1, ok),
                Err(BearerRefusal::Wrong)
            );
        }
        // Now even the right token waits: guessing gains nothing.
        assert_eq!(
            g.check(a, &auth("Bearer good"), 2_000_000, ok),
            Err(BearerRefusal::TooMany(59))
        );
        assert_eq!(g.check(b, &auth("Bearer good"), 2_000_000, ok), Ok(()));
        assert_eq!(g.check(a, &auth("Bearer good"), 61_000_000, ok), Ok(()));
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token("Bearer abc.def"), Some("abc.def"));
        assert_eq!(bearer_token("bearer  k:p "), Some("k:p"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token(&format!("Bearer {}", "x".repeat(700))), None);
    }
}
