//! Per-source request rate limiting (a token bucket per IP address), bounded in memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets keyed by source address.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    /// Keyed by peers' addresses: a hasher seeded at random per process (as the transaction
    /// layer's maps), cheaper than SipHash per request.
    buckets: HashMap<IpAddr, Bucket, foldhash::fast::RandomState>,
    max_tracked: usize,
}

impl RateLimiter {
    /// `rate` requests per second with `burst` on top; at most `max_tracked` sources remembered.
    pub fn new(rate: u32, burst: u32, max_tracked: usize) -> Self {
        RateLimiter {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(rate).max(1)),
            buckets: HashMap::default(),
            max_tracked: max_tracked.max(16),
        }
    }

    /// Takes one token for `ip`; `false` means over the limit.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.buckets.len() >= self.max_tracked && !self.buckets.contains_key(&ip) {
            // Full buckets are the same as no bucket, so forgetting them loses nothing.
            let (rate, burst) = (self.rate, self.burst);
            self.buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
            });
            if self.buckets.len() >= self.max_tracked {
                return false;
            }
        }
        let bucket = self.buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn refills_over_time() {
        let mut r = RateLimiter::new(10, 10, 100);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        assert!((0..10).all(|_| r.allow(ip, t0)));
        assert!(!r.allow(ip, t0));
        assert!(r.allow(ip, t0 + Duration::from_millis(150)));
    }
}
