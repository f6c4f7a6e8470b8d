//! Posting a signed webhook to shipgate the way a well-behaved sender does, shared by the sandbox
//! agent's event queue and the sandbox tracker's webhook queue: one attempt at a time, a 2xx
//! stores it, a 4xx other than 408 and 429 refuses it for good, and anything else is retried
//! after a pause that doubles up to half a second (sandbox time is compressed; tests wait for
//! the queues to drain, not for a schedule).

use std::time::Duration;

use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;

const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// How much of a refusal's answer is kept.
const ANSWER_PREVIEW: usize = 200;

/// What one attempt came to.
pub(crate) enum Attempt {
    Stored,
    Refused { status: u16, answer: String },
    Retry(String),
}

/// The HTTP client of a sandbox sender: short timeouts, since shipgate is on loopback.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default()
}

/// Posts `body` as JSON to `url` with the signature header `(name, value)`.
pub(crate) async fn attempt(
    client: &reqwest::Client,
    url: &str,
    signature: (&str, String),
    body: Vec<u8>,
) -> Attempt {
    let sent = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(signature.0, signature.1)
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

/// The pause between retries of the item at the head of a queue.
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff(FIRST_BACKOFF)
    }

    /// The pause the next wait takes.
    pub(crate) fn current(&self) -> Duration {
        self.0
    }

    /// Waits the current pause and doubles it; false when cancelled meanwhile.
    pub(crate) async fn wait(&mut self, cancel: &CancellationToken) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(self.0) => {}
            _ = cancel.cancelled() => return false,
        }
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        true
    }

    /// The item was answered: the next one starts with the first pause.
    pub(crate) fn reset(&mut self) {
        self.0 = FIRST_BACKOFF;
    }
}
