//! Wall-clock time for scheduling, replaceable by a manual clock in tests.
//!
//! Retry backoffs, stockout waits and acceptance deadlines span hours or days. Tests cannot wait
//! that long and must not sleep to synchronize, so everything that schedules by time reads this
//! clock and waits on [`Clock::changed`] besides its timer: a test advances a manual clock and
//! the waiting task wakes at once. Signatures and HTTP timeouts keep using real time.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// A shared clock: the system's, or a manual one that only moves when told to.
#[derive(Clone)]
pub struct Clock {
    inner: Arc<Inner>,
}

enum Inner {
    System,
    Manual {
        now_ms: AtomicI64,
        changed: watch::Sender<i64>,
    },
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.inner {
            Inner::System => f.write_str("Clock::System"),
            Inner::Manual { now_ms, .. } => {
                write!(f, "Clock::Manual({})", now_ms.load(Ordering::SeqCst))
            }
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock {
            inner: Arc::new(Inner::System),
        }
    }

    /// A manual clock starting at `start_ms` (Unix milliseconds).
    pub fn manual(start_ms: i64) -> Clock {
        let (changed, _) = watch::channel(start_ms);
        Clock {
            inner: Arc::new(Inner::Manual {
                now_ms: AtomicI64::new(start_ms),
                changed,
            }),
        }
    }

    /// Now, in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        match &*self.inner {
            Inner::System => crate::delivery::now_ms() as i64,
            Inner::Manual { now_ms, .. } => now_ms.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock forward and wakes every task waiting on it. A system clock cannot
    /// be moved: the call is refused loudly, since a test that thinks it moved time would
    /// otherwise wait forever.
    pub fn advance(&self, by: Duration) {
        match &*self.inner {
            Inner::System => panic!("the system clock cannot be advanced"),
            Inner::Manual { now_ms, changed } => {
                let now = now_ms.fetch_add(by.as_millis() as i64, Ordering::SeqCst)
                    + by.as_millis() as i64;
                changed.send_replace(now);
            }
        }
    }

    /// Resolves when a manual clock was advanced; never for the system clock.
    pub async fn changed(&self) {
        match &*self.inner {
            Inner::System => std::future::pending().await,
            Inner::Manual { changed, .. } => {
                let mut rx = changed.subscribe();
                // A receiver starts having seen the current value; the next send wakes it.
                let _ = rx.changed().await;
            }
        }
    }

    /// Waits until `at_ms` on this clock, or until a manual clock moves (the caller then looks
    /// again at what is due).
    pub async fn sleep_until(&self, at_ms: i64) {
        // Subscribe before reading the time, so an advance in between still wakes us.
        let mut rx = match &*self.inner {
            Inner::System => None,
            Inner::Manual { changed, .. } => Some(changed.subscribe()),
        };
        let wait = (at_ms - self.now_ms()).max(0) as u64;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = async {
                match rx.as_mut() {
                    Some(rx) => { let _ = rx.changed().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_its_sleepers() {
        let clock = Clock::manual(1_000);
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move {
                while clock.now_ms() < 3_600_000 {
                    clock.sleep_until(3_600_000).await;
                }
                clock.now_ms()
            }
        });
        // The sleeper may not have subscribed yet; advancing in steps until it finishes
        // covers both orders without sleeping.
        while !sleeper.is_finished() {
            clock.advance(Duration::from_secs(1800));
            tokio::task::yield_now().await;
        }
        assert!(sleeper.await.unwrap() >= 3_600_000);
    }
}
