//! A token bucket for request and offer rate limits, a gate that keeps a
//! repeated log line to one per interval, and a per-address limit on
//! failed credential checks.

use std::collections::HashMap;
use std::net::IpAddr;

/// A token bucket. Pure: time is an argument (any monotonic µs clock).
#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// Units gained per µs; a token costs `cost` units.
    rate_per_sec: u64,
    cost: u64,
    capacity: u64,
    tokens: u64,
    last_us: Option<u64>,
}

pub const MICRO: u64 = 1_000_000;

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `rate_per_sec`.
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        Self::with_cost(u64::from(rate_per_sec), MICRO, burst)
    }

    /// A full bucket of `burst` tokens refilled at `rate_per_minute`.
    pub fn per_minute(rate_per_minute: u32, burst: u32) -> Self {
        Self::with_cost(u64::from(rate_per_minute), 60 * MICRO, burst)
    }

    fn with_cost(rate: u64, cost: u64, burst: u32) -> Self {
        let capacity = u64::from(burst).saturating_mul(cost);
        TokenBucket {
            rate_per_sec: rate,
            cost,
            capacity,
            tokens: capacity,
            last_us: None,
        }
    }

    /// Takes one token if there is one. A clock going backwards adds none.
    pub fn try_take(&mut self, now_us: u64) -> bool {
        if let Some(last) = self.last_us {
            let gained = now_us
                .saturating_sub(last)
                .saturating_mul(self.rate_per_sec);
            self.tokens = self.tokens.saturating_add(gained).min(self.capacity);
        }
        self.last_us = Some(self.last_us.map_or(now_us, |last| last.max(now_us)));
        if self.tokens >= self.cost {
            self.tokens -= self.cost;
            true
        } else {
            false
        }
    }
}

/// Lets a repeated log line through at most once per `gap_us`, counting
/// the ones held back so the next line can say how many there were.
#[derive(Clone, Debug)]
pub struct LogGate {
    gap_us: u64,
    last_us: Option<u64>,
    held: u64,
}

impl LogGate {
    pub fn new(gap_us: u64) -> Self {
        LogGate {
            gap_us,
            last_us: None,
            held: 0,
        }
    }

    /// `Some(n)` when a line may be logged now, `n` being how many were
    /// held back since the last one; `None` to stay quiet.
    pub fn pass(&mut self, now_us: u64) -> Option<u64> {
        let due = self
            .last_us
            .is_none_or(|t| now_us.saturating_sub(t) >= self.gap_us);
        if !due {
            self.held += 1;
            return None;
        }
        self.last_us = Some(now_us);
        Some(std::mem::take(&mut self.held))
    }
}

/// Failed bearer checks per client address: after `max` failures within
/// `window_us`, further attempts from that address are refused (429)
/// until the window that began at its first failure ends. Pure: time is an
/// argument. IPv6 clients count per /64 (one host usually holds a whole
/// /64). At most `capacity` addresses are tracked; when full, expired ones
/// go first, then the one whose window began earliest.
#[derive(Clone, Debug)]
pub struct FailureLimiter {
    max: u32,
    window_us: u64,
    capacity: usize,
    /// Address (prefix) -> (window start, failures in it).
    seen: HashMap<IpAddr, (u64, u32)>,
}

/// Failures allowed per address and minute on bearer checks.
pub const BEARER_FAILURES_PER_MINUTE: u32 = 10;

impl Default for FailureLimiter {
    fn default() -> Self {
        FailureLimiter::new(BEARER_FAILURES_PER_MINUTE, 60 * MICRO, 4096)
    }
}

fn client_prefix(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

impl FailureLimiter {
    pub fn new(max: u32, window_us: u64, capacity: usize) -> Self {
        FailureLimiter {
            max: max.max(1),
            window_us: window_us.max(1),
            capacity: capacity.max(1),
            seen: HashMap::new(),
        }
    }

    /// `Err(seconds to wait)` when `ip` has used up its failures at `now_us`.
    pub fn check(&self, ip: IpAddr, now_us: u64) -> Result<(), u64> {
        match self.seen.get(&client_prefix(ip)) {
            Some(&(start, n)) if n >= self.max && now_us < start + self.window_us => {
                Err((start + self.window_us - now_us).div_ceil(MICRO).max(1))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed check from `ip` at `now_us`.
    pub fn fail(&mut self, ip: IpAddr, now_us: u64) {
        let ip = client_prefix(ip);
        if !self.seen.contains_key(&ip) && self.seen.len() >= self.capacity {
            let window = self.window_us;
            self.seen
                .retain(|_, &mut (start, _)| now_us < start + window);
            if self.seen.len() >= self.capacity {
                if let Some(oldest) = self.seen.iter().min_by_key(|(_, v)| v.0).map(|(k, _)| *k) {
                    self.seen.remove(&oldest);
                }
            }
        }
        let e = self.seen.entry(ip).or_insert((now_us, 0));
        if now_us >= e.0 + self.window_us {
            *e = (now_us, 0);
        }
        e.1 = e.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_minute_buckets_refill_by_the_minute() {
        let mut b = TokenBucket::per_minute(10, 2);
        assert!(b.try_take(0) && b.try_take(0));
        assert!(!b.try_take(5_999_999)); // 0.99 token after 5.99 s
        assert!(b.try_take(6_000_000)); // one token per 6 s
        assert!(!b.try_take(6_000_000));
    }

    #[test]
    fn log_gate_lets_one_line_per_gap_and_counts_the_rest() {
        let mut g = LogGate::new(MICRO);
        assert_eq!(g.pass(0), Some(0));
        assert_eq!(g.pass(10), None);
        assert_eq!(g.pass(999_999), None);
        assert_eq!(g.pass(1_000_000), Some(2));
        assert_eq!(g.pass(1_500_000), None);
        assert_eq!(g.pass(5_000_000), Some(1));
    }

    #[test]
    fn failures_are_limited_per_address_in_simulated_time() {
        let a: IpAddr = "192.168.1.5".parse().expect("ip");
        let b: IpAddr = "192.168.1.6".parse().expect("ip");
        let mut l = FailureLimiter::new(10, 60 * MICRO, 8);
        for i in 0..10 {
            assert_eq!(l.check(a, i * MICRO), Ok(()), "failure {i} still allowed");
            l.fail(a, i * MICRO);
        }
        assert_eq!(
            l.check(a, 10 * MICRO),
            Err(50),
            "wait until the minute is over"
        );
        assert_eq!(l.check(a, 59 * MICRO + 1), Err(1));
        assert_eq!(
            l.check(b, 10 * MICRO),
            Ok(()),
            "another address is not held up"
        );
        assert_eq!(l.check(a, 60 * MICRO), Ok(()), "a new minute");
        l.fail(a, 60 * MICRO);
        assert_eq!(l.check(a, 61 * MICRO), Ok(()), "the count started again");
    }

    #[test]
    fn ipv6_counts_per_64_and_the_table_is_bounded() {
        let mut l = FailureLimiter::new(2, 60 * MICRO, 3);
        let x: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let y: IpAddr = "2001:db8:1:2::ffff".parse().expect("ip");
        l.fail(x, 0);
        l.fail(y, 0);
        assert!(l.check(x, 1).is_err(), "same /64: same count");
        for (i, ip) in ["10.0.0.1", "10.0.0.2", "10.0.0.3"].iter().enumerate() {
            l.fail(ip.parse().expect("ip"), 10 + i as u64);
        }
        assert!(l.seen.len() <= 3);
        assert!(l.check(x, 20).is_ok(), "the oldest entry made room");
    }

    #[test]
    fn burst_then_rate() {
        let mut b = TokenBucket::new(2, 3);
        assert!((0..3).all(|_| b.try_take(0)));
        assert!(!b.try_take(0));
        assert!(!b.try_take(400_000)); // 0.8 token
        assert!(b.try_take(500_000)); // 1.0 token
        assert!(!b.try_take(500_000));
        // A clock going backwards gives nothing.
        assert!(!b.try_take(100));
    }
}
