//! Worker heartbeats, readiness, and the systemd notifications built on them.
//!
//! Every long-running worker runs inside [`supervised`], which beats the worker's heartbeat while
//! the task is being polled. A worker blocked in a synchronous call (a deadlock, a stuck disk)
//! stops beating; the watchdog then stops pinging systemd, which restarts the service. A worker
//! that merely waits (for a webhook, for Shopify's budget) keeps beating, since waiting is normal.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often a supervised worker beats.
pub const BEAT: Duration = Duration::from_secs(2);

/// The heartbeats of all workers.
#[derive(Clone, Default)]
pub struct Heartbeats {
    last: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Heartbeats {
    /// Registers a worker under a name (beating once now).
    pub fn register(&self, name: impl Into<String>) -> Heartbeat {
        let name = name.into();
        self.lock().insert(name.clone(), Instant::now());
        Heartbeat {
            name,
            registry: self.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The workers that have not beaten within `max_age`, with how long ago they last did.
    pub fn stale(&self, max_age: Duration) -> Vec<(String, Duration)> {
        let now = Instant::now();
        let mut stale: Vec<(String, Duration)> = self
            .lock()
            .iter()
            .map(|(name, at)| (name.clone(), now.saturating_duration_since(*at)))
            .filter(|(_, age)| *age > max_age)
            .collect();
        stale.sort();
        stale
    }

    /// Whether no worker is registered.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// One worker's heartbeat. Dropping it unregisters the worker (a finished worker is not stale),
/// except while a panic unwinds: a worker that died must go stale, so that `/readyz` fails and the
/// watchdog stops being pinged.
pub struct Heartbeat {
    name: String,
    registry: Heartbeats,
}

impl Heartbeat {
    /// Records that the worker is alive now.
    pub fn beat(&self) {
        self.registry
            .lock()
            .insert(self.name.clone(), Instant::now());
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.registry.lock().remove(&self.name);
        }
    }
}

/// Runs a worker, beating its heartbeat every [`BEAT`] for as long as the task is polled.
pub async fn supervised<F: Future>(heartbeat: Heartbeat, worker: F) -> F::Output {
    tokio::pin!(worker);
    let mut tick = tokio::time::interval(BEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            out = &mut worker => return out,
            _ = tick.tick() => heartbeat.beat(),
        }
    }
}

/// Tells systemd (when it started us with `Type=notify`) that the daemon is ready.
pub fn notify_ready() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
}

/// Tells systemd that shutdown began.
pub fn notify_stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

/// Pings systemd's watchdog at half its interval, but only while every worker's heartbeat is
/// younger than the interval. Does nothing when systemd set no watchdog.
pub async fn watchdog(heartbeats: Heartbeats, cancel: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled().filter(|d| !d.is_zero()) else {
        return;
    };
    let mut tick = tokio::time::interval(interval / 2);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let stale = heartbeats.stale(interval);
        if stale.is_empty() {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        } else {
            tracing::error!(
                ?stale,
                "workers stopped beating: withholding the watchdog ping"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_polled_worker_beats_and_a_blocked_one_goes_stale() {
        let heartbeats = Heartbeats::default();
        let alive = heartbeats.register("waiting");
        let stuck = heartbeats.register("stuck");
        let waiting = tokio::spawn(supervised(
            alive,
            tokio::time::sleep(Duration::from_secs(60)),
        ));
        // "stuck" never beats again: its task is not polled (as a worker blocked in a sync call).
        tokio::time::sleep(Duration::from_secs(10)).await;
        let stale = heartbeats.stale(Duration::from_secs(5));
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].0, "stuck");
        drop(stuck);
        assert!(heartbeats.stale(Duration::from_secs(5)).is_empty());
        waiting.await.unwrap();
        assert!(heartbeats.is_empty(), "a finished worker unregisters");
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_panicked_goes_stale() {
        let heartbeats = Heartbeats::default();
        let dying = heartbeats.register("dying");
        let task = tokio::spawn(supervised(dying, async { panic!("worker bug") }));
        assert!(task.await.is_err());
        tokio::time::sleep(Duration::from_secs(10)).await;
        let stale = heartbeats.stale(Duration::from_secs(5));
        assert_eq!(stale.len(), 1, "a dead worker must not look finished");
    }
}
