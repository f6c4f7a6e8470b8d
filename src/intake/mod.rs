//! The public listener's routes: inbound webhooks, made durable before they are acknowledged.
//!
//! Invariant 1 lives here: a 2xx is only sent after [`Store::record_delivery`] returned, which is
//! after the flush that covers the delivery. Every failure before that point answers non-2xx so
//! the sender retries; nothing is parsed before the signature matched.
//!
//! Three kinds of sender post here: Shopify (`/webhooks/shopify`, [`shopify`]), suppliers
//! reporting events (`/webhooks/suppliers/{supplier}`, [`suppliers`]) and parcel tracking
//! providers (`/webhooks/tracking/{provider}`, [`tracking`]).

pub mod shopify;
pub mod suppliers;
#[cfg(test)]
mod test_support;
pub mod tracking;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::store::{Recorded, Store, StoreError};
use crate::suppliers::signature::SignatureError;
use shopify::Verifier;
use suppliers::{EventValidator, SupplierTable};
use tracking::TrackingTable;

/// Why a delivery was refused. The response names what is wrong without exposing internals.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("missing X-Shopify-Hmac-Sha256 header")]
    MissingSignature,
    #[error("signature does not match the body")]
    BadSignature,
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("invalid {0} header: {1}")]
    InvalidHeader(&'static str, &'static str),
    #[error("shop is not configured here")]
    UnknownShop,
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("body not received within {0:?}")]
    BodyTimeout(Duration),
    #[error("body could not be read")]
    BodyRead,
    #[error("storage unavailable, retry later")]
    Store(#[source] StoreError),
    #[error("no supplier of that name is configured")]
    UnknownSupplier,
    /// A supplier's `Shipgate-Signature` was refused; the text names why, never a digest.
    #[error("{0}")]
    SupplierSignature(SignatureError),
    /// The body of a supplier's delivery is not a valid event; the text names the field.
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// A valid event that does not fit a shipment of this supplier.
    #[error("event does not fit: {0}")]
    EventDoesNotFit(String),
    #[error("no tracking provider of that name is configured")]
    UnknownTrackingProvider,
    /// A tracking provider's signature was refused; the text names why, never a digest.
    #[error("{0}")]
    TrackingSignature(crate::tracking::SignatureError),
    /// The verified body of a tracking provider's delivery cannot be read; the text names the
    /// field.
    #[error("invalid tracking payload: {0}")]
    InvalidTrackingPayload(String),
}

impl IntakeError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            IntakeError::MissingSignature
            | IntakeError::BadSignature
            | IntakeError::UnknownShop
            | IntakeError::SupplierSignature(_)
            | IntakeError::TrackingSignature(_) => StatusCode::UNAUTHORIZED,
            IntakeError::MissingHeader(_)
            | IntakeError::InvalidHeader(..)
            | IntakeError::BodyRead
            | IntakeError::InvalidEvent(_)
            | IntakeError::InvalidTrackingPayload(_) => StatusCode::BAD_REQUEST,
            IntakeError::UnknownSupplier | IntakeError::UnknownTrackingProvider => {
                StatusCode::NOT_FOUND
            }
            IntakeError::EventDoesNotFit(_) => StatusCode::UNPROCESSABLE_ENTITY,
            IntakeError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            IntakeError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            IntakeError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            IntakeError::MissingSignature => "missing_signature",
            IntakeError::BadSignature => "bad_signature",
            IntakeError::MissingHeader(_) => "missing_header",
            IntakeError::InvalidHeader(..) => "invalid_header",
            IntakeError::UnknownShop => "unknown_shop",
            IntakeError::TooLarge(_) => "too_large",
            IntakeError::BodyTimeout(_) => "body_timeout",
            IntakeError::BodyRead => "body_read",
            IntakeError::Store(_) => "store_unavailable",
            IntakeError::UnknownSupplier => "unknown_supplier",
            IntakeError::SupplierSignature(e) => match e {
                SignatureError::Missing => "missing_signature",
                SignatureError::Malformed(_) => "malformed_signature",
                SignatureError::Stale(_) => "stale_signature",
                SignatureError::Mismatch => "bad_signature",
                SignatureError::NoSecret => "no_secret",
            },
            IntakeError::InvalidEvent(_) => "invalid_event",
            IntakeError::EventDoesNotFit(_) => "event_does_not_fit",
            IntakeError::UnknownTrackingProvider => "unknown_tracking_provider",
            IntakeError::TrackingSignature(e) => e.label(),
            IntakeError::InvalidTrackingPayload(_) => "invalid_payload",
        }
    }
}

impl IntoResponse for IntakeError {
    fn into_response(self) -> Response {
        if let IntakeError::Store(e) = &self {
            // The detail goes to the operator's log, never to the sender.
            tracing::error!(error = %e, "delivery refused: store unavailable");
        }
        // A refusal may leave the request's body unread (a header check, a declared length
        // over the limit, a body cut off mid-way), and then the server closes the connection
        // after answering. Saying so keeps a client from writing its next request into a
        // connection that is being closed (a broken pipe on its side). Refusals are rare, so
        // closing after every one costs nothing worth keeping the rule finer for.
        (
            self.status(),
            [(http::header::CONNECTION, "close")],
            format!("{self}\n"),
        )
            .into_response()
    }
}

/// What the intake does with a verified delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntakeMode {
    /// Store and flush before answering: production.
    Durable,
    /// Verify and answer without storing: only to measure what durability costs.
    VerifyOnly,
}

/// Counters of the intake's answers.
#[derive(Debug, Default)]
pub struct IntakeCounters {
    /// Deliveries stored for the first time.
    pub accepted: AtomicU64,
    /// Repeated deliveries answered without a second record.
    pub duplicates: AtomicU64,
    /// Deliveries refused (any reason).
    pub refused: AtomicU64,
    /// Answers by (topic, result). The topic is only taken from verified deliveries; refusals
    /// before the signature matched count under `unverified`, so a stranger cannot invent labels.
    by_topic: std::sync::Mutex<std::collections::BTreeMap<(String, &'static str), u64>>,
}

impl IntakeCounters {
    fn record(&self, topic: &str, result: &'static str) {
        let mut map = self.by_topic.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((topic.to_string(), result)).or_default() += 1;
    }

    /// Answers by topic and result, for metrics.
    pub fn by_topic(&self) -> Vec<((String, &'static str), u64)> {
        let map = self.by_topic.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// Everything the webhook routes need.
#[derive(Clone)]
pub struct Intake {
    inner: Arc<IntakeInner>,
    /// Kept apart from `inner` so that [`Intake::with_suppliers`] can replace it on an intake
    /// that was already cloned.
    suppliers: Arc<SupplierTable>,
    /// The tracking providers and their secrets, replaced by [`Intake::with_tracking`] for the
    /// same reason.
    tracking: Arc<TrackingTable>,
}

struct IntakeInner {
    store: Store,
    shops: HashMap<String, Verifier>,
    body_limit: usize,
    body_read_timeout: Duration,
    mode: IntakeMode,
    counters: Arc<IntakeCounters>,
}

/// The settings of the intake.
#[derive(Debug, Clone)]
pub struct IntakeSettings {
    /// The largest body accepted.
    pub body_limit: usize,
    /// How long a client may take to send the body.
    pub body_read_timeout: Duration,
    /// Durable, or verification only.
    pub mode: IntakeMode,
}

impl Intake {
    /// An intake for these shops (domain and verifier).
    pub fn new(
        store: Store,
        shops: impl IntoIterator<Item = (String, Verifier)>,
        settings: IntakeSettings,
        counters: Arc<IntakeCounters>,
    ) -> Intake {
        Intake {
            inner: Arc::new(IntakeInner {
                store,
                shops: shops
                    .into_iter()
                    .map(|(d, v)| (d.to_ascii_lowercase(), v))
                    .collect(),
                body_limit: settings.body_limit,
                body_read_timeout: settings.body_read_timeout,
                mode: settings.mode,
                counters,
            }),
            suppliers: Arc::new(SupplierTable::default()),
            tracking: Arc::new(TrackingTable::default()),
        }
    }

    /// The same intake, also receiving events from these suppliers (configured name and
    /// secrets, current first) on `/webhooks/suppliers/{supplier}`. `validator` is asked whether
    /// a verified, well-formed event fits a shipment of the named supplier; its error text is
    /// sent back to the supplier with the 422, so it must name the problem and nothing private.
    /// Without this call no supplier is configured and every supplier delivery answers 404.
    pub fn with_suppliers(
        mut self,
        suppliers: impl IntoIterator<Item = (String, Vec<Vec<u8>>)>,
        validator: EventValidator,
    ) -> Intake {
        self.suppliers = Arc::new(SupplierTable::new(suppliers, validator));
        self
    }

    /// The same intake, also receiving carrier events from these tracking providers (name as in
    /// [`crate::tracking::WEBHOOK_PROVIDERS`], and secrets, current first) on
    /// `/webhooks/tracking/{provider}`. A provider listed with no secret is refused whatever it
    /// sends (401), and one not listed answers 404, as does a name this build has no parser for
    /// (it is logged here, once). Without this call every tracking delivery answers 404.
    pub fn with_tracking(
        mut self,
        providers: impl IntoIterator<Item = (String, Vec<Vec<u8>>)>,
    ) -> Intake {
        self.tracking = Arc::new(TrackingTable::new(providers));
        self
    }

    /// The public routes.
    pub fn router(self) -> Router {
        Router::new()
            .route("/webhooks/shopify", post(shopify_webhook))
            .route(
                "/webhooks/suppliers/{supplier}",
                post(suppliers::supplier_webhook),
            )
            .route(
                "/webhooks/tracking/{provider}",
                post(tracking::tracking_webhook),
            )
            // The limit is enforced by `read_body`, which knows the configured value.
            .layer(DefaultBodyLimit::disable())
            .with_state(self)
    }

    async fn receive_shopify(&self, request: Request) -> Result<StatusCode, IntakeError> {
        let inner = &self.inner;
        let headers = shopify::read_headers(request.headers())?;
        let verifier = inner
            .shops
            .get(&headers.shop)
            .ok_or(IntakeError::UnknownShop)?;
        let body = self.read_limited_body(request).await?;
        let verified = verifier.verify(headers, body)?;
        if inner.mode == IntakeMode::VerifyOnly {
            return Ok(StatusCode::OK);
        }
        let delivery = verified.delivery();
        let recorded = match inner.store.record_delivery(delivery).await {
            Ok(r) => r,
            Err(e) => {
                inner.counters.record(&delivery.topic, "store_unavailable");
                return Err(IntakeError::Store(e));
            }
        };
        match recorded {
            Recorded::New(seq) => {
                inner.counters.record(&delivery.topic, "accepted");
                inner.counters.accepted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(seq, shop = delivery.origin.sender(), topic = %delivery.topic,
                    webhook_id = %delivery.id, "delivery stored");
            }
            Recorded::Duplicate(seq) => {
                inner.counters.record(&delivery.topic, "duplicate");
                inner.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                tracing::info!(seq, shop = delivery.origin.sender(), topic = %delivery.topic,
                    webhook_id = %delivery.id, "duplicate delivery acknowledged");
            }
        }
        Ok(StatusCode::OK)
    }
}

impl Intake {
    /// The body of `request`, refused as too large as soon as its declared length says so
    /// (before reading anything), or while reading when it turns out to be.
    async fn read_limited_body(&self, request: Request) -> Result<Vec<u8>, IntakeError> {
        let inner = &self.inner;
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > inner.body_limit as u64) {
            return Err(IntakeError::TooLarge(inner.body_limit));
        }
        read_body(
            request.into_body(),
            inner.body_limit,
            inner.body_read_timeout,
        )
        .await
    }
}

async fn shopify_webhook(State(intake): State<Intake>, request: Request) -> Response {
    match intake.receive_shopify(request).await {
        Ok(status) => status.into_response(),
        Err(e) => {
            intake
                .inner
                .counters
                .refused
                .fetch_add(1, Ordering::Relaxed);
            if !matches!(e, IntakeError::Store(_)) {
                intake.inner.counters.record("unverified", e.label());
                tracing::info!(reason = e.label(), "delivery refused: {e}");
            }
            e.into_response()
        }
    }
}

/// What a verified delivery of a signed JSON webhook (a supplier's, a tracking provider's)
/// became.
pub(crate) enum Answer {
    Stored,
    Duplicate,
    /// Verified and readable, but not stored: [`IntakeMode::VerifyOnly`], for measurements only.
    NotStored,
}

/// A supplier's or carrier's delivery whose signature was verified and whose body was read.
pub(crate) struct Verified {
    pub(crate) origin: crate::delivery::Origin,
    /// The sender's delivery id, the deduplication key.
    pub(crate) id: String,
    pub(crate) topic: String,
    /// The signature header as received: (name, value), kept with the delivery.
    pub(crate) signature: (&'static str, Option<String>),
    pub(crate) body: Vec<u8>,
}

/// Stores a verified supplier or carrier delivery and says how to answer (invariant 1): the
/// answer waits for `record_delivery`, which returns once the record is flushed, and a store
/// failure is a refusal (503), so a 2xx always means the delivery is on disk. `what` names the
/// delivery in the log.
pub(crate) async fn store_verified(
    intake: &Intake,
    verified: Verified,
    what: &str,
) -> Result<(String, Answer), Refusal> {
    if intake.inner.mode == IntakeMode::VerifyOnly {
        return Ok((verified.topic, Answer::NotStored));
    }
    let (name, value) = verified.signature;
    let delivery = crate::delivery::Delivery {
        origin: verified.origin,
        id: verified.id,
        topic: verified.topic,
        received_at_ms: crate::delivery::now_ms(),
        headers: value.map(|v| (name.to_string(), v)).into_iter().collect(),
        body: verified.body,
        redacted: false,
    };
    let recorded = intake
        .inner
        .store
        .record_delivery(&delivery)
        .await
        .map_err(|e| Refusal {
            error: IntakeError::Store(e),
            topic: Some(delivery.topic.clone()),
        })?;
    let sender = delivery.origin.sender();
    match recorded {
        Recorded::New(seq) => {
            tracing::debug!(seq, sender, topic = %delivery.topic, id = %delivery.id,
                "{what} stored");
            Ok((delivery.topic, Answer::Stored))
        }
        Recorded::Duplicate(seq) => {
            tracing::info!(seq, sender, topic = %delivery.topic, id = %delivery.id,
                "duplicate {what} acknowledged");
            Ok((delivery.topic, Answer::Duplicate))
        }
    }
}

/// A refusal, with the topic it counts under once the sender was verified.
pub(crate) struct Refusal {
    pub(crate) error: IntakeError,
    pub(crate) topic: Option<String>,
}

impl From<IntakeError> for Refusal {
    fn from(error: IntakeError) -> Self {
        Refusal { error, topic: None }
    }
}

/// Counts and answers the outcome of a signed JSON webhook: `{"stored":true}`,
/// `{"duplicate":true}` or the refusal. `sender` names the kind of sender in the log.
pub(crate) fn json_answer(
    intake: &Intake,
    sender: &str,
    outcome: Result<(String, Answer), Refusal>,
) -> Response {
    let counters = &intake.inner.counters;
    match outcome {
        Ok((topic, answer)) => {
            let body = match answer {
                Answer::Stored => {
                    counters.record(&topic, "accepted");
                    counters.accepted.fetch_add(1, Ordering::Relaxed);
                    serde_json::json!({ "stored": true })
                }
                Answer::Duplicate => {
                    counters.record(&topic, "duplicate");
                    counters.duplicates.fetch_add(1, Ordering::Relaxed);
                    serde_json::json!({ "duplicate": true })
                }
                Answer::NotStored => serde_json::json!({ "stored": false }),
            };
            axum::Json(body).into_response()
        }
        Err(Refusal { error, topic }) => {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            // Until the signature matched, the topic is unknown and any name in the request is
            // a stranger's; such refusals all count under `unverified`.
            counters.record(topic.as_deref().unwrap_or("unverified"), error.label());
            if !matches!(error, IntakeError::Store(_)) {
                tracing::info!(reason = error.label(), "{sender} delivery refused: {error}");
            }
            error.into_response()
        }
    }
}

/// Reads the whole body, refusing it as soon as it exceeds `limit` (a declared length over the
/// limit is refused before reading anything) or takes longer than `timeout`.
async fn read_body(body: Body, limit: usize, timeout: Duration) -> Result<Vec<u8>, IntakeError> {
    let limited = Limited::new(body, limit);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(IntakeError::BodyTimeout(timeout)),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(IntakeError::TooLarge(limit)),
        Ok(Err(_)) => Err(IntakeError::BodyRead),
        Ok(Ok(collected)) => Ok(collected.to_bytes().to_vec()),
    }
}
