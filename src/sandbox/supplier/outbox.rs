//! Sending the agent's events to shipgate (docs/suppliers.md section 3): one task, in queue
//! order, each event signed afresh for every attempt and retried under the same id until shipgate
//! answers it, as section 3 asks of a real agent.
//!
//! An event leaves the queue only when it is answered: a 2xx stores it, a 4xx other than 408 and
//! 429 refuses it for good (kept in the stats). Anything else (no connection, a timeout, 408,
//! 429, 5xx) is retried after a short pause that doubles up to half a second: sandbox time is
//! compressed, and tests wait with `flush_events` rather than for a schedule.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;

use super::Inner;
use crate::suppliers::signature;

const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// How much of a refusal's answer is kept.
const ANSWER_PREVIEW: usize = 200;

enum Attempt {
    Stored,
    Refused { status: u16, answer: String },
    Retry(String),
}

async fn attempt(client: &reqwest::Client, url: &str, secret: &[u8], body: Vec<u8>) -> Attempt {
    let signature = signature::sign(secret, signature::now_secs(), &body);
    let sent = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(signature::HEADER, signature)
        .body(body)
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(e) => return Attempt::Retry(format!("no answer from {url}: {e}")),
    };
    let status = response.status();
    if status.is_success() {
        return Attempt::Stored;
    }
    let retriable = !status.is_client_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS;
    if retriable {
        return Attempt::Retry(format!("{url} answered {status}"));
    }
    let answer = response.text().await.unwrap_or_default();
    Attempt::Refused {
        status: status.as_u16(),
        answer: answer.chars().take(ANSWER_PREVIEW).collect(),
    }
}

/// The sender: runs until the agent stops.
pub(super) async fn run(inner: Arc<Inner>) {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let mut readiness = inner.readiness.subscribe();
    let mut backoff = FIRST_BACKOFF;
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
        let outcome = tokio::select! {
            outcome = attempt(&client, &url, &inner.secret, event.to_json()) => outcome,
            _ = inner.cancel.cancelled() => return,
        };
        let refused = match outcome {
            Attempt::Stored => None,
            Attempt::Refused { status, answer } => {
                tracing::warn!(event = %event.id, status, %answer, "sandbox agent: shipgate refused an event");
                Some((status, answer))
            }
            Attempt::Retry(reason) => {
                tracing::debug!(event = %event.id, %reason, ?backoff, "sandbox agent: event not stored; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = inner.cancel.cancelled() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = FIRST_BACKOFF;
        inner.state().answered(&event.id, refused);
        inner.progress.send_modify(|p| p.done += 1);
    }
}
