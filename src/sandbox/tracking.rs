//! The sandbox tracking provider: a loopback stand-in for AfterShip, so that the integration
//! tests and `shipgate demo` exercise carrier tracking end to end, false positives included.
//!
//! It holds parcels (tracking number and carrier slug) and their checkpoints. Each
//! [`SandboxTracker::push`] is an update, and queues a webhook in AfterShip's format carrying
//! the whole checkpoint list so far, as AfterShip does, signed with `aftership-hmac-sha256`.
//! Webhooks go to shipgate's `/webhooks/tracking/aftership` one at a time, each retried under its
//! `event_id` until shipgate answers it. The scripted sequences play the cases the acceptance
//! rule must get right (`../shared/tracking/FACTS.md`): a label alone, a real acceptance and
//! delivery, Cainiao's `GWMS_ACCEPT` tagged as an acceptance scan hours before the pickup, and
//! "USPS Awaiting Item" tagged in transit.
//!
//! Switches make it fail the ways real providers do: down (its API answers 503 and nothing is
//! sent until it is up), and out of order (queued webhooks go newest first, and each lists its
//! checkpoints newest first).
//!
//! Its small HTTP API mirrors AfterShip's for the daemon and the demo:
//! `POST /trackings` with `{"tracking":{"tracking_number":…,"slug":…}}` registers a parcel
//! (201; 400 with meta code 4003 when it exists), and `GET /trackings/{slug}/{number}` answers
//! `{"meta":{"code":200},"data":{"tracking":{…}}}` with the same tracking object the webhooks
//! carry (404, meta code 4004, when unknown). Any API key is accepted.

// Every public item here is documented; the lint keeps it that way.
#![warn(missing_docs)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::order::Timestamp;
use crate::sandbox::post::{Attempt, Backoff, attempt, client};
use crate::tracking::aftership;

const HOUR_MS: i64 = 3_600_000;

/// One carrier checkpoint as AfterShip reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// AfterShip's tag (`InTransit`).
    pub tag: String,
    /// AfterShip's subtag (`InTransit_002`).
    pub subtag: String,
    /// The carrier's own code (`OA`, `GWMS_ACCEPT`).
    pub raw_tag: Option<String>,
    /// The carrier's message.
    pub message: String,
    /// Where, as the carrier wrote it.
    pub location: Option<String>,
    /// When, as the carrier wrote it; the text is sent as it is.
    pub at: Timestamp,
}

impl Checkpoint {
    /// A checkpoint whose tag is its subtag's prefix (`InTransit_002` → `InTransit`).
    pub fn new(
        subtag: &str,
        raw_tag: Option<&str>,
        message: &str,
        location: Option<&str>,
        at_ms: i64,
    ) -> Checkpoint {
        Checkpoint {
            tag: subtag.split('_').next().unwrap_or(subtag).to_string(),
            subtag: subtag.to_string(),
            raw_tag: raw_tag.map(str::to_string),
            message: message.to_string(),
            location: location.map(str::to_string),
            at: Timestamp::from_unix_ms(at_ms),
        }
    }

    fn to_json(&self, slug: &str) -> Value {
        json!({
            "checkpoint_time": self.at.text,
            "slug": slug,
            "message": self.message,
            "raw_tag": self.raw_tag,
            "location": self.location,
            "tag": self.tag,
            "subtag": self.subtag,
            "subtag_message": self.subtag,
        })
    }
}

/// Why the tracker refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    /// The number was never registered.
    #[error("the sandbox tracker has no tracking number `{0}`; register it first")]
    UnknownNumber(String),
}

/// What became of the webhooks so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// Webhooks queued (one per push).
    pub queued: u64,
    /// Webhooks shipgate answered with a 2xx.
    pub sent: u64,
    /// Webhooks shipgate refused for good (a 4xx other than 408 and 429).
    pub refused: u64,
    /// POSTs made, retries included.
    pub attempts: u64,
}

/// A webhook shipgate refused for good; the tracker does not send it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedWebhook {
    /// The webhook's `event_id`.
    pub event_id: String,
    /// shipgate's status code.
    pub status: u16,
    /// The start of shipgate's answer.
    pub answer: String,
}

/// A queued webhook: its body is fixed when it is queued, as AfterShip's is.
#[derive(Debug, Clone)]
struct Webhook {
    event_id: String,
    body: Vec<u8>,
}

#[derive(Debug)]
struct Parcel {
    id: String,
    slug: String,
    checkpoints: Vec<Checkpoint>,
}

#[derive(Debug, Default)]
struct TrackerState {
    parcels: BTreeMap<String, Parcel>,
    queue: VecDeque<Webhook>,
    out_of_order: bool,
    stats: TrackerStats,
    refusals: Vec<RefusedWebhook>,
}

impl TrackerState {
    /// The tracking object of a parcel, as the webhooks and the API carry it. In out-of-order
    /// mode the checkpoints are listed newest first, which AfterShip does not promise against.
    fn tracking_json(&self, number: &str, parcel: &Parcel) -> Value {
        let mut checkpoints: Vec<&Checkpoint> = parcel.checkpoints.iter().collect();
        checkpoints.sort_by_key(|c| c.at.unix_ms);
        if self.out_of_order {
            checkpoints.reverse();
        }
        let latest = parcel.checkpoints.iter().max_by_key(|c| c.at.unix_ms);
        json!({
            "id": parcel.id,
            "tracking_number": number,
            "slug": parcel.slug,
            "active": latest.is_none_or(|c| c.tag != "Delivered"),
            "tag": latest.map_or("Pending", |c| c.tag.as_str()),
            "subtag": latest.map_or("Pending_001", |c| c.subtag.as_str()),
            "checkpoints": checkpoints.iter().map(|c| c.to_json(&parcel.slug)).collect::<Vec<_>>(),
        })
    }
}

/// What the sender waits for before each attempt.
#[derive(Debug, Clone, Default)]
struct Readiness {
    down: bool,
    report_to: Option<String>,
}

/// The sender's progress, for `flush`.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// Webhooks answered (2xx or refused for good) so far.
    done: u64,
    /// The tracker stopped: nothing more will be answered, so nobody should wait.
    stopped: bool,
}

struct Inner {
    secret: Vec<u8>,
    state: Mutex<TrackerState>,
    readiness: watch::Sender<Readiness>,
    progress: watch::Sender<Progress>,
    /// Wakes the sender when a webhook is queued. It has a single waiter, so `notify_one`'s
    /// stored permit means a wake-up sent while it was busy is not lost.
    wake: Notify,
    cancel: CancellationToken,
}

impl Inner {
    /// Locks the state. A panic elsewhere (a failed assertion in a test's task) must not take
    /// the tracker down with it, so a poisoned lock is used as it is.
    fn state(&self) -> MutexGuard<'_, TrackerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running sandbox tracker. Cloning gives another handle to the same tracker; every method
/// takes `&self` and may be called from any task.
#[derive(Clone)]
pub struct SandboxTracker {
    inner: Arc<Inner>,
    base_url: String,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl SandboxTracker {
    /// Starts the tracker on `127.0.0.1:0` with its webhook sender; `secret` signs the webhooks
    /// (shipgate's `aftership` secret). Webhooks wait in the queue until
    /// [`SandboxTracker::set_report_to`] says where shipgate is.
    pub async fn start(secret: impl Into<Vec<u8>>) -> std::io::Result<SandboxTracker> {
        let secret = secret.into();
        if secret.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the sandbox tracker needs a non-empty webhook secret to sign with",
            ));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let inner = Arc::new(Inner {
            secret,
            state: Mutex::new(TrackerState::default()),
            readiness: watch::Sender::new(Readiness::default()),
            progress: watch::Sender::new(Progress::default()),
            wake: Notify::new(),
            cancel: CancellationToken::new(),
        });
        let app = api(inner.clone());
        let cancel = inner.cancel.clone();
        let server = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { cancel.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "sandbox tracker: the API stopped");
            }
        });
        let sender = tokio::spawn(send_webhooks(inner.clone()));
        Ok(SandboxTracker {
            inner,
            base_url,
            tasks: Arc::new(Mutex::new(vec![server, sender])),
        })
    }

    /// `http://127.0.0.1:PORT`: the base of the tracker's API (`/trackings`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Where webhooks go: shipgate's `http://…/webhooks/tracking/aftership`, known only once
    /// shipgate has started. Queued webhooks start going out when it is set.
    pub fn set_report_to(&self, url: impl Into<String>) {
        let url = url.into();
        self.inner
            .readiness
            .send_modify(|r| r.report_to = Some(url));
    }

    /// Down: the API answers 503 and no webhook is sent; queued webhooks stay queued until the
    /// tracker is up again.
    pub fn set_down(&self, down: bool) {
        self.inner.readiness.send_modify(|r| r.down = down);
    }

    /// Out of order: the next webhook sent is the newest queued rather than the oldest, and
    /// webhooks queued from now on list their checkpoints newest first. Checkpoints reach
    /// shipgate out of chronological order either way, as the facts warn they can.
    pub fn deliver_out_of_order(&self, on: bool) {
        self.inner.state().out_of_order = on;
    }

    /// Starts tracking `tracking_number` with the carrier `carrier_slug` (`usps`, `cainiao`).
    /// Registering a number again keeps its checkpoints and takes the new slug.
    pub fn register(&self, tracking_number: &str, carrier_slug: &str) {
        let mut state = self.inner.state();
        let next_id = state.parcels.len() + 1;
        state
            .parcels
            .entry(tracking_number.to_string())
            .and_modify(|p| p.slug = carrier_slug.to_string())
            .or_insert_with(|| Parcel {
                id: format!("sbx{next_id:020}"),
                slug: carrier_slug.to_string(),
                checkpoints: Vec::new(),
            });
    }

    /// Records a checkpoint and queues a webhook with the parcel's whole checkpoint list.
    pub fn push(&self, tracking_number: &str, checkpoint: Checkpoint) -> Result<(), TrackerError> {
        {
            let mut state = self.inner.state();
            let state = &mut *state;
            let parcel = state
                .parcels
                .get_mut(tracking_number)
                .ok_or_else(|| TrackerError::UnknownNumber(tracking_number.to_string()))?;
            let first_of_tag = !parcel.checkpoints.iter().any(|c| c.tag == checkpoint.tag);
            parcel.checkpoints.push(checkpoint);
            let parcel = &state.parcels[tracking_number];
            let event_id = uuid_v4();
            let body = json!({
                "event_id": event_id,
                "event": "tracking_update",
                "ts": crate::delivery::now_ms() / 1000,
                "is_tracking_first_tag": first_of_tag,
                "msg": state.tracking_json(tracking_number, parcel),
            });
            let body = serde_json::to_vec(&body).expect("a JSON value serializes");
            state.queue.push_back(Webhook { event_id, body });
            state.stats.queued += 1;
        }
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Pushes `checkpoints` one by one (one webhook each), registering the number first.
    fn play(
        &self,
        tracking_number: &str,
        carrier_slug: &str,
        checkpoints: Vec<Checkpoint>,
    ) -> Vec<Checkpoint> {
        self.register(tracking_number, carrier_slug);
        for checkpoint in &checkpoints {
            // Registered just above, so the number is known.
            let _ = self.push(tracking_number, checkpoint.clone());
        }
        checkpoints
    }

    /// A label and nothing else: "Shipping Label Created, USPS Awaiting Item" at `label_at_ms`,
    /// tagged `InfoReceived`. Not acceptance.
    pub fn label_only(
        &self,
        tracking_number: &str,
        carrier_slug: &str,
        label_at_ms: i64,
    ) -> Vec<Checkpoint> {
        self.play(tracking_number, carrier_slug, vec![label(label_at_ms)])
    }

    /// A parcel that goes all the way: label at `label_at_ms`, acceptance scan (`OA`,
    /// `InTransit_002`) 6 hours later, departure at 14 h, out for delivery at 50 h, delivered at
    /// 56 h. Acceptance is the second checkpoint.
    pub fn accept_and_deliver(
        &self,
        tracking_number: &str,
        carrier_slug: &str,
        label_at_ms: i64,
    ) -> Vec<Checkpoint> {
        let at = |hours: i64| label_at_ms + hours * HOUR_MS;
        self.play(
            tracking_number,
            carrier_slug,
            vec![
                label(label_at_ms),
                Checkpoint::new(
                    "InTransit_002",
                    Some("OA"),
                    "Accepted at USPS Origin Facility",
                    Some("ATLANTA, GA 30304"),
                    at(6),
                ),
                Checkpoint::new(
                    "InTransit_007",
                    Some("EF"),
                    "Departed USPS Regional Facility",
                    Some("ATLANTA GA DISTRIBUTION CENTER"),
                    at(14),
                ),
                Checkpoint::new(
                    "OutForDelivery_001",
                    Some("OF"),
                    "Out for Delivery",
                    Some("PORTLAND, OR 97201"),
                    at(50),
                ),
                Checkpoint::new(
                    "Delivered_001",
                    Some("01"),
                    "Delivered, In/At Mailbox",
                    Some("PORTLAND, OR 97201"),
                    at(56),
                ),
            ],
        )
    }

    /// Cainiao's warehouse event `GWMS_ACCEPT` ("Order received successfully") tagged
    /// `InTransit_002` one hour after `label_at_ms`, then the real pickup
    /// `PU_PICKUP_SUCCESS`, also `InTransit_002`, six hours after that. Acceptance is the
    /// pickup, never the warehouse event.
    pub fn gwms_false_positive(
        &self,
        tracking_number: &str,
        carrier_slug: &str,
        label_at_ms: i64,
    ) -> Vec<Checkpoint> {
        let at = |hours: i64| label_at_ms + hours * HOUR_MS;
        self.play(
            tracking_number,
            carrier_slug,
            vec![
                Checkpoint::new(
                    "InTransit_002",
                    Some("GWMS_ACCEPT"),
                    "Order received successfully",
                    Some("Shenzhen, CN"),
                    at(1),
                ),
                Checkpoint::new(
                    "InTransit_002",
                    Some("PU_PICKUP_SUCCESS"),
                    "Picked up by carrier",
                    Some("Shenzhen, CN"),
                    at(7),
                ),
            ],
        )
    }

    /// A label, then "Arrived at Shipping Partner Facility, USPS Awaiting Item" tagged
    /// `InTransit_001` three hours later: a consolidator has the parcel, USPS does not. Not
    /// acceptance.
    pub fn awaiting_item_false_positive(
        &self,
        tracking_number: &str,
        carrier_slug: &str,
        label_at_ms: i64,
    ) -> Vec<Checkpoint> {
        self.play(
            tracking_number,
            carrier_slug,
            vec![
                label(label_at_ms),
                Checkpoint::new(
                    "InTransit_001",
                    Some("PF"),
                    "Arrived at Shipping Partner Facility, USPS Awaiting Item",
                    Some("LOS ANGELES, CA 90001"),
                    label_at_ms + 3 * HOUR_MS,
                ),
            ],
        )
    }

    /// Resolves once every webhook queued before the call was answered by shipgate (with a 2xx,
    /// or refused for good: see [`SandboxTracker::refusals`]). Tests use it instead of sleeping.
    /// While the tracker is down, or before [`SandboxTracker::set_report_to`], nothing is sent,
    /// so it waits until both allow sending; after [`SandboxTracker::stop`] it resolves at once.
    pub async fn flush(&self) {
        let target = self.inner.state().stats.queued;
        let mut progress = self.inner.progress.subscribe();
        // The sender lives in `inner`, which this handle keeps alive, so the channel cannot close.
        let _ = progress.wait_for(|p| p.stopped || p.done >= target).await;
    }

    /// What became of the webhooks so far.
    pub fn stats(&self) -> TrackerStats {
        self.inner.state().stats
    }

    /// The webhooks shipgate refused for good, in the order they were refused.
    pub fn refusals(&self) -> Vec<RefusedWebhook> {
        self.inner.state().refusals.clone()
    }

    /// Stops the API (requests in progress finish) and the sender; webhooks still queued are
    /// not sent. Waits for both tasks.
    pub async fn stop(self) {
        self.inner.cancel.cancel();
        self.inner.progress.send_modify(|p| p.stopped = true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }
}

fn label(at_ms: i64) -> Checkpoint {
    Checkpoint::new(
        "InfoReceived_001",
        Some("GX"),
        "Shipping Label Created, USPS Awaiting Item",
        Some("ATLANTA, GA 30304"),
        at_ms,
    )
}

/// A random UUID v4, the form of AfterShip's `event_id`.
fn uuid_v4() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

// --- the API ------------------------------------------------------------------------------

fn api(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/trackings", post(create_tracking))
        .route("/trackings/{slug}/{number}", get(get_tracking))
        .with_state(inner)
}

fn meta(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        Json(json!({"meta": {"code": code, "message": message}, "data": {}})),
    )
        .into_response()
}

fn unavailable(inner: &Inner) -> Option<Response> {
    inner.readiness.borrow().down.then(|| {
        meta(
            StatusCode::SERVICE_UNAVAILABLE,
            503,
            "The sandbox tracker is down.",
        )
    })
}

async fn create_tracking(State(inner): State<Arc<Inner>>, body: axum::body::Bytes) -> Response {
    if let Some(down) = unavailable(&inner) {
        return down;
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => return meta(StatusCode::BAD_REQUEST, 4001, &format!("Invalid JSON: {e}")),
    };
    let field = |name: &str| {
        request["tracking"][name]
            .as_str()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let (Some(number), Some(slug)) = (field("tracking_number"), field("slug")) else {
        return meta(
            StatusCode::BAD_REQUEST,
            4002,
            "`tracking.tracking_number` and `tracking.slug` are required.",
        );
    };
    let mut state = inner.state();
    if state.parcels.contains_key(&number) {
        return meta(StatusCode::BAD_REQUEST, 4003, "Tracking already exists.");
    }
    let id = format!("sbx{:020}", state.parcels.len() + 1);
    let parcel = Parcel {
        id,
        slug,
        checkpoints: Vec::new(),
    };
    let tracking = state.tracking_json(&number, &parcel);
    state.parcels.insert(number, parcel);
    (
        StatusCode::CREATED,
        Json(json!({"meta": {"code": 201}, "data": {"tracking": tracking}})),
    )
        .into_response()
}

async fn get_tracking(
    State(inner): State<Arc<Inner>>,
    Path((slug, number)): Path<(String, String)>,
) -> Response {
    if let Some(down) = unavailable(&inner) {
        return down;
    }
    let state = inner.state();
    match state.parcels.get(&number).filter(|p| p.slug == slug) {
        Some(parcel) => Json(json!({
            "meta": {"code": 200},
            "data": {"tracking": state.tracking_json(&number, parcel)},
        }))
        .into_response(),
        None => meta(StatusCode::NOT_FOUND, 4004, "Tracking does not exist."),
    }
}

// --- the sender ---------------------------------------------------------------------------

/// Sends queued webhooks one at a time until the tracker stops. A webhook leaves the queue only
/// when it is answered: a 2xx, or a 4xx other than 408 and 429 (refused for good, kept in the
/// stats). Anything else is retried after a pause that doubles up to half a second: sandbox time
/// is compressed, and tests wait with `flush` rather than for a schedule.
async fn send_webhooks(inner: Arc<Inner>) {
    let client = client();
    let mut readiness = inner.readiness.subscribe();
    let mut backoff = Backoff::new();
    loop {
        let next = {
            let state = inner.state();
            if state.out_of_order {
                state.queue.back().cloned()
            } else {
                state.queue.front().cloned()
            }
        };
        let Some(webhook) = next else {
            tokio::select! {
                _ = inner.wake.notified() => continue,
                _ = inner.cancel.cancelled() => return,
            }
        };
        // Checked before every attempt, retries included, so that going down holds the queue.
        let url = tokio::select! {
            ready = readiness.wait_for(|r| !r.down && r.report_to.is_some()) => match ready {
                Ok(ready) => ready.report_to.clone().unwrap_or_default(),
                Err(_) => return,
            },
            _ = inner.cancel.cancelled() => return,
        };
        inner.state().stats.attempts += 1;
        // AfterShip signs the body alone, so every attempt carries the same signature.
        let header = aftership::sign(&inner.secret, &webhook.body);
        let outcome = tokio::select! {
            outcome = attempt(&client, &url, (aftership::HEADER, header), webhook.body.clone()) => outcome,
            _ = inner.cancel.cancelled() => return,
        };
        let refused = match outcome {
            Attempt::Stored => None,
            Attempt::Refused { status, answer } => {
                tracing::warn!(event_id = %webhook.event_id, status, %answer,
                    "sandbox tracker: shipgate refused a webhook");
                Some(RefusedWebhook {
                    event_id: webhook.event_id.clone(),
                    status,
                    answer,
                })
            }
            Attempt::Retry(reason) => {
                tracing::debug!(event_id = %webhook.event_id, %reason, pause = ?backoff.current(),
                    "sandbox tracker: webhook not stored; retrying");
                if !backoff.wait(&inner.cancel).await {
                    return;
                }
                continue;
            }
        };
        backoff.reset();
        {
            let mut state = inner.state();
            state.queue.retain(|w| w.event_id != webhook.event_id);
            match refused {
                None => state.stats.sent += 1,
                Some(refusal) => {
                    state.stats.refused += 1;
                    state.refusals.push(refusal);
                }
            }
        }
        inner.progress.send_modify(|p| p.done += 1);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reqwest::StatusCode as ClientStatus;

    use std::collections::VecDeque;

    use axum::body::Bytes;
    use axum::http::HeaderMap;

    use super::*;
    use crate::tracking::acceptance::accepted_at;
    use crate::tracking::{ParsedWebhook, TrackingEvent};

    const SECRET: &[u8] = b"sandbox-aftership-secret";
    /// Bounds every wait, so that a bug fails the test instead of hanging it.
    const PATIENCE: Duration = Duration::from_secs(10);
    /// 2026-11-24T12:00:00Z, a label's creation.
    const LABEL_MS: i64 = 1_795_521_600_000;

    /// What the stand-in for shipgate saw.
    #[derive(Default)]
    struct Received {
        /// Webhooks verified and parsed, once per event id, in arrival order.
        stored: Mutex<Vec<ParsedWebhook>>,
        /// The event id of every attempt, retries included.
        attempts: Mutex<Vec<String>>,
        /// Statuses to answer to the next attempts before any check, to play a failing shipgate.
        script: Mutex<VecDeque<u16>>,
    }

    /// A stand-in for shipgate's `POST /webhooks/tracking/aftership`: it verifies each
    /// signature with shipgate's own `aftership::verify`, reads the body with shipgate's own
    /// parser, and stores each `event_id` once.
    async fn webhook(
        State((received, secret)): State<(Arc<Received>, Vec<u8>)>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let id = aftership::parse(&body)
            .map(|p| p.delivery_id)
            .unwrap_or_default();
        received.attempts.lock().unwrap().push(id);
        if let Some(status) = received.script.lock().unwrap().pop_front() {
            return (StatusCode::from_u16(status).unwrap(), "scripted answer").into_response();
        }
        let header = headers.get(aftership::HEADER).and_then(|v| v.to_str().ok());
        if let Err(e) = aftership::verify(header, &body, [secret.as_slice()]) {
            return (StatusCode::UNAUTHORIZED, e.to_string()).into_response();
        }
        let parsed = match aftership::parse(&body) {
            Ok(parsed) => parsed,
            Err(e) => return (StatusCode::BAD_REQUEST, e.0).into_response(),
        };
        let mut stored = received.stored.lock().unwrap();
        if !stored.iter().any(|p| p.delivery_id == parsed.delivery_id) {
            stored.push(parsed);
        }
        Json(json!({"stored": true})).into_response()
    }

    struct Shipgate {
        url: String,
        received: Arc<Received>,
    }

    impl Shipgate {
        async fn start(secret: &[u8]) -> Shipgate {
            let received = Arc::new(Received::default());
            let app = Router::new()
                .route("/webhooks/tracking/aftership", post(webhook))
                .with_state((received.clone(), secret.to_vec()));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!(
                "http://{}/webhooks/tracking/aftership",
                listener.local_addr().unwrap()
            );
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            Shipgate { url, received }
        }

        fn stored(&self) -> Vec<ParsedWebhook> {
            self.received.stored.lock().unwrap().clone()
        }
    }

    async fn tracker_for(shipgate: &Shipgate) -> SandboxTracker {
        let tracker = SandboxTracker::start(SECRET).await.unwrap();
        tracker.set_report_to(shipgate.url.clone());
        tracker
    }

    async fn flush(tracker: &SandboxTracker) {
        tokio::time::timeout(PATIENCE, tracker.flush())
            .await
            .expect("every webhook answered");
    }

    /// Every event of the last webhook about `number`, which lists them all.
    fn last_events(stored: &[ParsedWebhook], number: &str) -> Vec<TrackingEvent> {
        stored
            .iter()
            .rev()
            .find(|p| p.tracking_number == number)
            .map(|p| p.events.clone())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn each_update_sends_the_whole_signed_checkpoint_list() {
        let shipgate = Shipgate::start(SECRET).await;
        let tracker = tracker_for(&shipgate).await;
        let pushed = tracker.accept_and_deliver("9400100000000000000001", "usps", LABEL_MS);
        flush(&tracker).await;
        let stored = shipgate.stored();
        assert_eq!(stored.len(), 5, "one webhook per update");
        for (i, webhook) in stored.iter().enumerate() {
            assert_eq!(webhook.kind, "tracking_update");
            assert_eq!(webhook.carrier, "usps");
            assert_eq!(webhook.events.len(), i + 1, "the whole list so far");
            assert_eq!(webhook.delivery_id.len(), 36, "a UUID");
        }
        let events = last_events(&stored, "9400100000000000000001");
        // The events carry the carrier's words as pushed.
        assert_eq!(events[1].raw_text, pushed[1].message);
        assert_eq!(events[1].raw_code.as_deref(), Some("OA"));
        assert_eq!(events[1].location.as_deref(), Some("ATLANTA, GA 30304"));
        assert_eq!(events[1].occurred_at.unix_ms, LABEL_MS + 6 * HOUR_MS);
        // The same checkpoint is the same event in every webhook that lists it.
        assert_eq!(stored[1].events[1].event_id, events[1].event_id);
        let acceptance = accepted_at(&events, Some(LABEL_MS), None, false).unwrap();
        assert_eq!(acceptance.event.raw_code.as_deref(), Some("OA"));
        assert_eq!(
            tracker.stats(),
            TrackerStats {
                queued: 5,
                sent: 5,
                refused: 0,
                attempts: 5
            }
        );
        tracker.stop().await;
    }

    #[tokio::test]
    async fn the_false_positives_are_not_acceptance() {
        let shipgate = Shipgate::start(SECRET).await;
        let tracker = tracker_for(&shipgate).await;
        tracker.label_only("LABEL1", "usps", LABEL_MS);
        tracker.awaiting_item_false_positive("AWAIT1", "usps", LABEL_MS);
        tracker.gwms_false_positive("LP00000000001", "cainiao", LABEL_MS);
        flush(&tracker).await;
        let stored = shipgate.stored();
        let accept =
            |number: &str| accepted_at(&last_events(&stored, number), Some(LABEL_MS), None, false);
        assert_eq!(accept("LABEL1"), None);
        assert_eq!(accept("AWAIT1"), None);
        let gwms = last_events(&stored, "LP00000000001");
        assert_eq!(gwms.len(), 2);
        assert!(
            gwms.iter().all(|e| e.acceptance_scan),
            "both tagged InTransit_002"
        );
        let acceptance = accept("LP00000000001").unwrap();
        assert_eq!(
            acceptance.event.raw_code.as_deref(),
            Some("PU_PICKUP_SUCCESS")
        );
        assert_eq!(acceptance.event.carrier, "cainiao");
        tracker.stop().await;
    }

    #[tokio::test]
    async fn out_of_order_delivery_gives_the_same_acceptance() {
        let shipgate = Shipgate::start(SECRET).await;
        let tracker = SandboxTracker::start(SECRET).await.unwrap();
        tracker.deliver_out_of_order(true);
        tracker.accept_and_deliver("9400100000000000000002", "usps", LABEL_MS);
        // Queued before shipgate was known: sent newest first once it is.
        tracker.set_report_to(shipgate.url.clone());
        flush(&tracker).await;
        let stored = shipgate.stored();
        let counts: Vec<usize> = stored.iter().map(|p| p.events.len()).collect();
        assert_eq!(counts, vec![5, 4, 3, 2, 1], "newest webhook first");
        let times: Vec<i64> = stored[0]
            .events
            .iter()
            .map(|e| e.occurred_at.unix_ms)
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] > w[1]),
            "checkpoints newest first: {times:?}"
        );
        for webhook in &stored {
            let acceptance = accepted_at(&webhook.events, Some(LABEL_MS), None, false);
            if webhook.events.len() >= 2 {
                assert_eq!(acceptance.unwrap().event.raw_code.as_deref(), Some("OA"));
            } else {
                assert_eq!(acceptance, None, "the label alone");
            }
        }
        tracker.stop().await;
    }

    #[tokio::test]
    async fn a_down_tracker_holds_its_webhooks_until_it_is_up() {
        let shipgate = Shipgate::start(SECRET).await;
        let tracker = tracker_for(&shipgate).await;
        tracker.set_down(true);
        tracker.label_only("LABEL2", "usps", LABEL_MS);
        // Bounds a check that nothing happens: no webhook leaves while down.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), tracker.flush())
                .await
                .is_err()
        );
        assert!(shipgate.received.attempts.lock().unwrap().is_empty());
        let api = reqwest::get(format!("{}/trackings/usps/LABEL2", tracker.base_url()))
            .await
            .unwrap();
        assert_eq!(api.status(), ClientStatus::SERVICE_UNAVAILABLE);
        tracker.set_down(false);
        flush(&tracker).await;
        assert_eq!(shipgate.stored().len(), 1);
        tracker.stop().await;
    }

    #[tokio::test]
    async fn unanswered_webhooks_are_retried_under_the_same_event_id() {
        let shipgate = Shipgate::start(SECRET).await;
        shipgate
            .received
            .script
            .lock()
            .unwrap()
            .extend([503, 429, 408]);
        let tracker = tracker_for(&shipgate).await;
        tracker.label_only("LABEL3", "usps", LABEL_MS);
        flush(&tracker).await;
        let attempts = shipgate.received.attempts.lock().unwrap().clone();
        assert_eq!(attempts.len(), 4);
        assert!(attempts.iter().all(|id| *id == attempts[0]), "{attempts:?}");
        assert_eq!(shipgate.stored().len(), 1);
        let stats = tracker.stats();
        assert_eq!((stats.sent, stats.refused, stats.attempts), (1, 0, 4));
        tracker.stop().await;
    }

    #[tokio::test]
    async fn a_refused_webhook_is_given_up_and_flush_still_resolves() {
        // shipgate knows another secret: every signature is refused with a 401.
        let shipgate = Shipgate::start(b"another-secret").await;
        let tracker = tracker_for(&shipgate).await;
        tracker.label_only("LABEL4", "usps", LABEL_MS);
        tracker.label_only("LABEL5", "usps", LABEL_MS);
        flush(&tracker).await;
        let stats = tracker.stats();
        assert_eq!((stats.sent, stats.refused, stats.attempts), (0, 2, 2));
        let refusals = tracker.refusals();
        assert_eq!(refusals[0].status, 401);
        assert!(
            refusals[0]
                .answer
                .contains("signature does not match the body"),
            "{refusals:?}"
        );
        tracker.stop().await;
    }

    #[tokio::test]
    async fn the_api_registers_and_shows_trackings() {
        let tracker = SandboxTracker::start(SECRET).await.unwrap();
        let client = reqwest::Client::new();
        let create = |number: &str| {
            client
                .post(format!("{}/trackings", tracker.base_url()))
                .json(&json!({"tracking": {"tracking_number": number, "slug": "usps"}}))
                .send()
        };
        let created = create("9400100000000000000003").await.unwrap();
        assert_eq!(created.status(), ClientStatus::CREATED);
        let again = create("9400100000000000000003").await.unwrap();
        assert_eq!(again.status(), ClientStatus::BAD_REQUEST);
        let again: Value = again.json().await.unwrap();
        assert_eq!(again["meta"]["code"], 4003);
        tracker
            .push(
                "9400100000000000000003",
                Checkpoint::new(
                    "InTransit_002",
                    Some("OA"),
                    "Accepted at USPS Origin Facility",
                    None,
                    LABEL_MS,
                ),
            )
            .unwrap();
        let shown: Value = client
            .get(format!(
                "{}/trackings/usps/9400100000000000000003",
                tracker.base_url()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let tracking = &shown["data"]["tracking"];
        assert_eq!(tracking["tag"], "InTransit");
        assert_eq!(tracking["checkpoints"][0]["raw_tag"], "OA");
        let missing = client
            .get(format!("{}/trackings/usps/NOPE", tracker.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), ClientStatus::NOT_FOUND);
        assert_eq!(
            tracker.push("NOPE", label(LABEL_MS)),
            Err(TrackerError::UnknownNumber("NOPE".into()))
        );
        tracker.stop().await;
    }

    #[tokio::test]
    async fn shipgates_intake_stores_what_the_tracker_sends() {
        use crate::delivery::Origin;
        use crate::intake::{Intake, IntakeCounters, IntakeMode, IntakeSettings};
        use crate::store::{Store, StoreOptions};

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let router = Intake::new(
            store.clone(),
            [],
            IntakeSettings {
                body_limit: 256 * 1024,
                body_read_timeout: Duration::from_secs(5),
                mode: IntakeMode::Durable,
            },
            Arc::new(IntakeCounters::default()),
        )
        .with_tracking([("aftership".to_string(), vec![SECRET.to_vec()])])
        .router();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/webhooks/tracking/aftership",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

        let tracker = SandboxTracker::start(SECRET).await.unwrap();
        tracker.set_report_to(url);
        tracker.gwms_false_positive("LP00000000002", "cainiao", LABEL_MS);
        flush(&tracker).await;
        assert_eq!(tracker.stats().sent, 2);
        assert_eq!(
            store.delivery_count(),
            2,
            "each webhook stored before its 200"
        );
        let origin = Origin::Tracking {
            provider: "aftership".into(),
        };
        let inbox = store.inbox(10).unwrap();
        assert_eq!(inbox.len(), 2);
        for (_, delivery) in inbox {
            assert_eq!(delivery.origin, origin);
            assert_eq!(delivery.topic, "tracking/aftership");
            let header = delivery.header(aftership::HEADER);
            aftership::verify(header, &delivery.body, [SECRET]).unwrap();
        }
        tracker.stop().await;
    }
}
