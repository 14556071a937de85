//! A rate per client IP: a token bucket for each [`client_net`] seen
//! recently. Used for handshakes (`handshake-rate-per-ip`: every session
//! costs memory until it expires, so a flood of handshakes from one address
//! would fill the node, and its session cap, for everyone) and for failed
//! API-key attempts (`api-key-failures-per-ip`: guessing keys).
//!
//! A bucket that has refilled holds no information, so [`PerIpRate::prune`]
//! (called by the sweeper) drops it: the map holds the addresses of the
//! last few seconds, not every address ever seen.

use std::collections::HashMap;
use std::net::IpAddr;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::limits::client_net;
use super::token_bucket::TokenBucket;

pub struct PerIpRate {
    /// Units per second (0: unlimited).
    rate: f64,
    /// Units at once, after a pause.
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
}

impl PerIpRate {
    /// `rate` a second, with bursts of `burst` (at least 1).
    pub fn new(rate: f64, burst: f64) -> Self {
        PerIpRate {
            rate,
            burst: burst.max(1.0),
            buckets: Mutex::default(),
        }
    }

    /// Whether `ip` has used up its rate for now (nothing is taken).
    pub fn is_exhausted(&self, ip: Option<std::net::IpAddr>, now: Instant) -> bool {
        let Some(ip) = ip else {
            return false;
        };
        let mut buckets = self.buckets.lock();
        buckets
            .get_mut(&client_net(ip))
            .is_some_and(|bucket| !bucket.holds(1.0, now))
    }

    /// Takes one unit for `ip`; false when its rate is exceeded. A
    /// request without an address (an embedder's, a test's) is not limited.
    pub fn try_take(&self, ip: Option<IpAddr>, now: Instant) -> bool {
        let Some(ip) = ip else {
            return true;
        };
        let mut buckets = self.buckets.lock();
        let bucket = match buckets.entry(client_net(ip)) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                // An impossible rate (0, negative) means no limit.
                let Some(bucket) = TokenBucket::new(self.rate, self.burst, now) else {
                    return true;
                };
                entry.insert(bucket)
            }
        };
        bucket.try_take(1.0, now)
    }

    /// Forgets the addresses whose bucket has refilled; shrinks the map
    /// after a flood so its memory returns.
    pub fn prune(&self, now: Instant) {
        let mut buckets = self.buckets.lock();
        buckets.retain(|_, bucket| !bucket.is_full(now));
        if buckets.capacity() > 64 && buckets.len() < buckets.capacity() / 4 {
            buckets.shrink_to_fit();
        }
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.buckets.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_then_the_rate_per_address_and_idle_addresses_are_forgotten() {
        let start = Instant::now();
        let rate = PerIpRate::new(10.0, 10.0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let taken = (0..50).filter(|_| rate.try_take(Some(a), start)).count();
        assert_eq!(taken, 10, "the burst");
        assert!(rate.try_take(Some(b), start), "another address has its own");
        assert!(rate.try_take(None, start), "no address: not limited");
        assert!(rate.try_take(Some(a), start + Duration::from_millis(100)));
        rate.prune(start + Duration::from_millis(200));
        assert_eq!(rate.len(), 1, "b has refilled, a has not");
        rate.prune(start + Duration::from_secs(2));
        assert!(rate.is_empty());
        assert!(
            PerIpRate::new(0.0, 0.0).try_take(Some(a), start),
            "0: unlimited"
        );
    }
}
