//! Shopify's leaky bucket of cost points, one per shop, and the sandbox clock it runs on.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The sandbox's notion of now: tokio's clock (so a paused runtime pauses it) plus an offset
/// that tests move forward with `advance`, which works on any runtime and never sleeps.
#[derive(Debug)]
pub(crate) struct Clock {
    start: Instant,
    start_unix_ms: i64,
    offset: Mutex<Duration>,
}

impl Clock {
    /// A clock that reads the wall time now and then moves with tokio's clock.
    pub fn new() -> Clock {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Clock {
            start: Instant::now(),
            start_unix_ms: unix_ms,
            offset: Mutex::new(Duration::ZERO),
        }
    }

    /// The current instant, for the bucket and token expiry.
    pub fn now(&self) -> Instant {
        Instant::now() + *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Milliseconds since the Unix epoch, for timestamps.
    pub fn unix_ms(&self) -> i64 {
        self.start_unix_ms + self.now().duration_since(self.start).as_millis() as i64
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }
}

/// A leaky bucket: `available` points, refilled at `rate` per second up to `maximum`.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    pub maximum: f64,
    pub rate: f64,
    available: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(maximum: f64, rate: f64, now: Instant) -> Bucket {
        Bucket {
            maximum,
            rate,
            available: maximum,
            at: now,
        }
    }

    /// Adds what leaked back since the last look.
    fn refill(&mut self, now: Instant) {
        if now > self.at {
            let elapsed = now.duration_since(self.at).as_secs_f64();
            self.available = (self.available + elapsed * self.rate).min(self.maximum);
            self.at = now;
        }
    }

    /// The points available now.
    pub fn available(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.available
    }

    /// Takes `cost` points if that many are available; otherwise takes nothing and says no.
    pub fn try_take(&mut self, cost: f64, now: Instant) -> bool {
        self.refill(now);
        if cost > self.available {
            return false;
        }
        self.available -= cost;
        true
    }

    /// Gives back points (the difference between requested and actual cost).
    pub fn refund(&mut self, points: f64, now: Instant) {
        self.refill(now);
        self.available = (self.available + points).min(self.maximum);
    }

    /// Sets the level directly (tests drain or fill the bucket this way).
    pub fn set(&mut self, points: f64, now: Instant) {
        self.refill(now);
        self.available = points.clamp(0.0, self.maximum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_refuses_and_refills_with_time() {
        let clock = Clock::new();
        let mut b = Bucket::new(2000.0, 100.0, clock.now());
        assert!(b.try_take(1500.0, clock.now()));
        assert!(!b.try_take(600.0, clock.now()), "only ~500 left");
        assert!(b.available(clock.now()) < 510.0);
        clock.advance(Duration::from_secs(1));
        assert!(
            b.try_take(600.0, clock.now()),
            "100 points restored in a second"
        );
        b.refund(5000.0, clock.now());
        assert_eq!(b.available(clock.now()), 2000.0, "never above the maximum");
        clock.advance(Duration::from_secs(3600));
        assert_eq!(b.available(clock.now()), 2000.0);
    }
}
