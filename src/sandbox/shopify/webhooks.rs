//! Delivering the sandbox shop's webhooks: a queue filled under the state lock (so deliveries
//! keep the order of the changes that caused them) and one background worker that signs each
//! delivery as Shopify does, applies the fault switches and retries failures a few times.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::Inner;
use super::model::{Rng, fmt_ms};
use crate::sandbox::webhooks::ShopifyDelivery;

/// Attempts per delivery: the first and three retries, like Shopify's retries compressed
/// from hours into milliseconds.
const ATTEMPTS: u32 = 4;
/// The first retry's wait; each later one doubles it.
const FIRST_BACKOFF: Duration = Duration::from_millis(20);

/// One webhook to deliver to every target of its topic.
#[derive(Debug)]
pub(crate) struct Job {
    seq: u64,
    topic: String,
    body: Vec<u8>,
    triggered_at: String,
    /// Shared by every delivery of this change (duplicates and other subscriptions alike).
    event_id: String,
}

struct Sender {
    next_seq: u64,
    tx: mpsc::UnboundedSender<Job>,
    rng: Rng,
}

/// The queue between changes and the worker, and the worker's progress for `flush`.
pub(crate) struct Queue {
    sender: Mutex<Sender>,
    done: watch::Sender<u64>,
}

impl Queue {
    /// A queue and the receiving end for the worker.
    pub fn new(seed: u64) -> (Queue, mpsc::UnboundedReceiver<Job>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (done, _) = watch::channel(0);
        (
            Queue {
                sender: Mutex::new(Sender {
                    next_seq: 0,
                    tx,
                    rng: Rng::new(seed, 3),
                }),
                done,
            },
            rx,
        )
    }

    /// Queues a webhook. Called with the state lock held, so sequence order is change order.
    pub fn push(&self, topic: String, body: Vec<u8>, at_ms: i64) {
        let mut s = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        s.next_seq += 1;
        let job = Job {
            seq: s.next_seq,
            topic,
            body,
            triggered_at: fmt_ms(at_ms),
            event_id: s.rng.uuid(),
        };
        if s.tx.send(job).is_err() {
            // The worker stopped: count the job as attempted so that flush does not wait for it.
            let seq = s.next_seq;
            self.done.send_modify(|d| *d = (*d).max(seq));
        }
    }

    /// Resolves once every webhook queued before the call was attempted.
    pub async fn flush(&self) {
        let target = self
            .sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next_seq;
        let mut rx = self.done.subscribe();
        let _ = rx.wait_for(|done| *done >= target).await;
    }
}

/// The worker: takes everything queued, shuffles it if asked, and delivers it in turn.
pub(crate) async fn run(
    inner: Arc<Inner>,
    mut rx: mpsc::UnboundedReceiver<Job>,
    cancel: CancellationToken,
) {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let mut rng = Rng::new(inner.seed, 5);
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => break,
            job = rx.recv() => match job {
                Some(job) => job,
                None => break,
            },
        };
        let mut batch = vec![first];
        while let Ok(job) = rx.try_recv() {
            batch.push(job);
        }
        let last = batch.iter().map(|j| j.seq).max().unwrap_or(0);
        if inner.shared().faults.webhook_reorder {
            rng.shuffle(&mut batch);
        }
        for job in &batch {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = deliver(&inner, &client, job, &mut rng) => {}
            }
        }
        // Every job up to `last` was in this batch or an earlier one (the channel is FIFO).
        inner.queue.done.send_modify(|d| *d = (*d).max(last));
    }
    inner.queue.done.send_modify(|d| *d = u64::MAX);
}

async fn deliver(inner: &Inner, client: &reqwest::Client, job: &Job, rng: &mut Rng) {
    let (targets, faults) = {
        let shared = inner.shared();
        let mut targets: Vec<String> = shared.webhook_url.iter().cloned().collect();
        for s in shared
            .state
            .subscriptions
            .iter()
            .filter(|s| s.topic == job.topic)
        {
            if !targets.contains(&s.uri) {
                targets.push(s.uri.clone());
            }
        }
        (targets, shared.faults.clone())
    };
    for url in targets {
        // Draw every choice whatever the switches say, so the sequence depends only on the seed.
        let dropped = rng.chance(faults.webhook_drop);
        let duplicated = rng.chance(faults.webhook_duplicate);
        let webhook_id = rng.uuid();
        if dropped {
            inner.shared().stats.webhooks_dropped += 1;
            continue;
        }
        let delivery = ShopifyDelivery::new(
            &inner.shop,
            &job.topic,
            &webhook_id,
            job.body.clone(),
            &inner.webhook_secret,
        );
        send(inner, client, &url, &delivery, job).await;
        if duplicated {
            inner.shared().stats.webhooks_duplicated += 1;
            // A duplicate is the same delivery again: same X-Shopify-Webhook-Id, same body.
            send(inner, client, &url, &delivery, job).await;
        }
    }
}

async fn send(
    inner: &Inner,
    client: &reqwest::Client,
    url: &str,
    delivery: &ShopifyDelivery,
    job: &Job,
) {
    let (headers, body) = delivery.wire();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            inner.shared().stats.webhook_retries += 1;
            tokio::time::sleep(FIRST_BACKOFF * 2u32.pow(attempt - 1)).await;
        }
        let mut request = client.post(url).body(body.clone());
        for (name, value) in &headers {
            let value = match *name {
                "X-Shopify-Triggered-At" => job.triggered_at.clone(),
                "X-Shopify-Event-Id" => job.event_id.clone(),
                _ => value.clone(),
            };
            request = request.header(*name, value);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => {
                inner.shared().stats.webhooks_sent += 1;
                return;
            }
            Ok(response) => {
                tracing::debug!(status = %response.status(), topic = %job.topic, "sandbox webhook refused")
            }
            Err(e) => {
                tracing::debug!(error = %e, topic = %job.topic, "sandbox webhook not delivered")
            }
        }
    }
    inner.shared().stats.webhooks_failed += 1;
}
