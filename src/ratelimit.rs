//! A token bucket for request and offer rate limits, and a gate that
//! keeps a repeated log line to one per interval.

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
