//! A token bucket for request and offer rate limits.

/// A token bucket. Pure: time is an argument (any monotonic µs clock).
#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// Micro-tokens gained per µs, i.e. tokens per second.
    rate_per_sec: u64,
    capacity: u64,
    tokens: u64,
    last_us: Option<u64>,
}

pub const MICRO: u64 = 1_000_000;

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `rate_per_sec`.
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        let capacity = u64::from(burst).saturating_mul(MICRO);
        TokenBucket {
            rate_per_sec: u64::from(rate_per_sec),
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
        if self.tokens >= MICRO {
            self.tokens -= MICRO;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
