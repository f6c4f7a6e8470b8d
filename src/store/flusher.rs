//! Group commit: one thread makes sled's writes durable for every waiter at once.
//!
//! sled's `flush_async` can deadlock when several tasks call it concurrently, and a flush per
//! request would cost one `fsync` per delivery. Instead every writer that needs durability sends
//! a request here and waits. The thread takes every request that is queued, runs one blocking
//! `flush`, and answers them all. A request is always sent after its writer's insert, and the
//! thread drains the queue before it flushes, so the flush covers every write it answers for.
//! Writes nobody waits for (cursors, redactions) are flushed by the same thread on a timer.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

pub(crate) type Waiter = oneshot::Sender<Result<(), String>>;

enum Request {
    Flush(Waiter),
    Stop,
}

/// Statistics of the group commit, for metrics and benchmarks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlushStats {
    /// How many `fsync` rounds ran.
    pub rounds: u64,
    /// How many waiters those rounds answered.
    pub waiters: u64,
}

pub(crate) struct Flusher {
    tx: mpsc::Sender<Request>,
    thread: Option<JoinHandle<()>>,
    stats: std::sync::Arc<std::sync::Mutex<FlushStats>>,
}

impl Flusher {
    /// Starts the flushing thread. With `interval` set, it also flushes on that period so that
    /// writes nobody waits for reach the disk too.
    pub(crate) fn start(db: sled::Db, interval: Option<Duration>) -> std::io::Result<Flusher> {
        let (tx, rx) = mpsc::channel::<Request>();
        let stats = std::sync::Arc::new(std::sync::Mutex::new(FlushStats::default()));
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("shipgate-flusher".into())
            .spawn(move || run(db, rx, interval, thread_stats))?;
        Ok(Flusher {
            tx,
            thread: Some(thread),
            stats,
        })
    }

    /// Asks for a flush that covers every write made before this call; `waiter` gets the result.
    pub(crate) fn request(&self, waiter: Waiter) -> Result<(), String> {
        self.tx
            .send(Request::Flush(waiter))
            .map_err(|_| "the store is closed".to_string())
    }

    pub(crate) fn stats(&self) -> FlushStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Flushes once more and stops the thread.
    pub(crate) fn stop(&mut self) {
        let _ = self.tx.send(Request::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(
    db: sled::Db,
    rx: mpsc::Receiver<Request>,
    interval: Option<Duration>,
    stats: std::sync::Arc<std::sync::Mutex<FlushStats>>,
) {
    let mut waiters: Vec<Waiter> = Vec::new();
    loop {
        let first = match interval {
            Some(period) => rx.recv_timeout(period),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let mut stop = false;
        match first {
            Ok(Request::Flush(w)) => waiters.push(w),
            Ok(Request::Stop) | Err(RecvTimeoutError::Disconnected) => stop = true,
            Err(RecvTimeoutError::Timeout) => {}
        }
        // Everything queued now was written before it was queued: one flush answers them all.
        while let Ok(request) = rx.try_recv() {
            match request {
                Request::Flush(w) => waiters.push(w),
                Request::Stop => stop = true,
            }
        }
        let result = db.flush().map(|_| ()).map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, "store flush failed");
        }
        {
            let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
            s.rounds += 1;
            s.waiters += waiters.len() as u64;
        }
        for w in waiters.drain(..) {
            let _ = w.send(result.clone());
        }
        if stop {
            return;
        }
    }
}
