//! Sending the agent's events to shipgate (docs/suppliers.md section 3): one task, in queue
//! order, each event signed afresh for every attempt and retried under the same id until shipgate
//! answers it, as section 3 asks of a real agent.
//!
//! An event leaves the queue only when it is answered: a 2xx stores it, a 4xx other than 408 and
//! 429 refuses it for good (kept in the stats). Anything else (no connection, a timeout, 408,
//! 429, 5xx) is retried after a short pause that doubles up to half a second: sandbox time is
//! compressed, and tests wait with `flush_events` rather than for a schedule.

use std::sync::Arc;

use super::Inner;
use crate::sandbox::post::{Attempt, Backoff, attempt, client};
use crate::suppliers::signature;

/// The sender: runs until the agent stops.
pub(super) async fn run(inner: Arc<Inner>) {
    let client = client();
    let mut readiness = inner.readiness.subscribe();
    let mut backoff = Backoff::new();
    loop {
        let next = inner.state().next_to_send();
        let Some(event) = next else {
            tokio::select! {
                _ = inner.wake.notified() => continue,
                _ = inner.cancel.cancelled() => return,
            }
        };
        // Checked before every attempt, retries included, so that going down holds the queue
        // (an attempt already under way when the switch flips still finishes).
        let url = tokio::select! {
            ready = readiness.wait_for(|r| !r.down && r.report_to.is_some()) => match ready {
                Ok(ready) => ready.report_to.clone().unwrap_or_default(),
                Err(_) => return,
            },
            _ = inner.cancel.cancelled() => return,
        };
        // Signed afresh for every attempt: the signature carries its time.
        let body = event.to_json();
        let header = signature::sign(&inner.secret, signature::now_secs(), &body);
        let outcome = tokio::select! {
            outcome = attempt(&client, &url, (signature::HEADER, header), body) => outcome,
            _ = inner.cancel.cancelled() => return,
        };
        let refused = match outcome {
            Attempt::Stored => None,
            Attempt::Refused { status, answer } => {
                tracing::warn!(event = %event.id, status, %answer, "sandbox agent: shipgate refused an event");
                Some((status, answer))
            }
            Attempt::Retry(reason) => {
                tracing::debug!(event = %event.id, %reason, pause = ?backoff.current(),
                    "sandbox agent: event not stored; retrying");
                if !backoff.wait(&inner.cancel).await {
                    return;
                }
                continue;
            }
        };
        backoff.reset();
        inner.state().answered(&event.id, refused);
        inner.progress.send_modify(|p| p.done += 1);
    }
}
