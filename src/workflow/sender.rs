//! The outbox sender: delivers recorded intents, each once (invariant 2).
//!
//! The send path, with the points where a crash is simulated in tests:
//!
//! 1. The intent is in the store (written with the case change that called for it).
//! 2. Under the case lock the effect is marked `maybe_delivered` with its attempt counted, and
//!    the store is flushed, which makes the intent and the mark durable together.
//!    [`CrashPoint::BeforeSend`]
//! 3. The request goes out. [`CrashPoint::AfterSend`] when the remote side took it.
//! 4. Under the case lock the outcome is recorded, with what it means for the case.
//!    [`CrashPoint::AfterRecord`]
//!
//! An effect found marked at step 2 (a crash, a timeout, a broken connection) is never simply
//! sent again: the remote state is read first (the supplier's lookup by idempotency key, the
//! fulfillment order's holds by handle, the order's fulfillments by tracking number, the
//! fulfillment's events by status and instant or its tracking numbers as a set), and only a
//! remote side that does not have it gets it.
//! Effects of one stream go out strictly in order; retries back off exponentially with jitter.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Workflow;
use super::effect::{Action, Effect, EffectState};
use crate::order::OrderMirror;
use crate::order::Timestamp;
use crate::shopify::client::{ShopifyClient, ShopifyError};
use crate::shopify::convert::{self, Fetched};
use crate::shopify::ops::{
    FulfillmentCreate, FulfillmentEventCreate, FulfillmentEvents, FulfillmentOrderHold,
    FulfillmentOrderReleaseHold, FulfillmentTrackingInfoUpdate, OrdersByIds, fulfillment_events,
    fulfillment_order_release_hold, orders_by_ids,
};
use crate::store::StoreError;
use crate::store::cases::CaseWrite;
use crate::suppliers::{LookupOutcome, MessageBody, SendOutcome, SupplierAdapter};

/// A named point of the send path where tests simulate a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashPoint {
    /// The attempt is marked and flushed; nothing was sent.
    BeforeSend,
    /// The remote side took the effect; the outcome is not recorded.
    AfterSend,
    /// The outcome is recorded.
    AfterRecord,
}

impl CrashPoint {
    /// Every point, for tests that try each.
    pub const ALL: [CrashPoint; 3] = [
        CrashPoint::BeforeSend,
        CrashPoint::AfterSend,
        CrashPoint::AfterRecord,
    ];
}

/// The sender stopped at a simulated crash: it wrote nothing after that point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("simulated crash at {0:?}")]
pub struct Crashed(pub CrashPoint);

/// Decides whether to crash at a point, for an effect (tests only).
pub type CrashHook = Arc<dyn Fn(CrashPoint, &Effect) -> bool + Send + Sync>;

/// Retry pacing.
#[derive(Debug, Clone)]
pub struct SenderSettings {
    /// The pause after the first failure; doubled per attempt.
    pub base_backoff: Duration,
    /// The longest pause.
    pub max_backoff: Duration,
}

impl Default for SenderSettings {
    fn default() -> Self {
        SenderSettings {
            base_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30 * 60),
        }
    }
}

/// How often a first submission held for an incomplete address looks again (no attempt is
/// counted, so this does not grow).
const ADDRESS_RECHECK_MS: i64 = 5 * 60 * 1000;

/// The pause before attempt `attempts + 1`: exponential, capped, with ±20% jitter so that many
/// effects failing together do not retry together.
pub fn backoff(settings: &SenderSettings, attempts: u32) -> Duration {
    let exp = settings
        .base_backoff
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(16));
    let capped = exp.min(settings.max_backoff);
    let jitter = rand::random_range(0.8..1.2);
    capped.mul_f64(jitter)
}

/// What a remote read found about an effect.
enum Remote {
    /// The remote side has it, under this reference (the supplier's, a hold id) if known.
    Has(Option<String>),
    /// It does not: sending is safe.
    HasNot,
    /// The remote side could not be asked.
    Unknown(String),
}

/// The outbox sender.
#[derive(Clone)]
pub struct Sender {
    workflow: Workflow,
    adapters: Arc<HashMap<String, Arc<dyn SupplierAdapter>>>,
    shops: Arc<HashMap<String, ShopifyClient>>,
    settings: SenderSettings,
    crash: Option<CrashHook>,
}

impl Sender {
    /// A sender for these suppliers' adapters and these shops' clients.
    pub fn new(
        workflow: Workflow,
        adapters: HashMap<String, Arc<dyn SupplierAdapter>>,
        shops: HashMap<String, ShopifyClient>,
        settings: SenderSettings,
    ) -> Sender {
        Sender {
            workflow,
            adapters: Arc::new(adapters),
            shops: Arc::new(shops),
            settings,
            crash: None,
        }
    }

    /// Simulates crashes where `hook` says so (tests only).
    #[doc(hidden)]
    pub fn with_crash_hook(mut self, hook: CrashHook) -> Sender {
        self.crash = Some(hook);
        self
    }

    fn crash_at(&self, point: CrashPoint, effect: &Effect) -> Result<(), Crashed> {
        match &self.crash {
            Some(hook) if hook(point, effect) => Err(Crashed(point)),
            _ => Ok(()),
        }
    }

    /// Runs until cancelled (or a simulated crash).
    pub async fn run(self, cancel: CancellationToken) -> Result<(), Crashed> {
        let mut failures = 0u32;
        loop {
            let written = self.workflow.store().effects_written();
            let next = match self.run_due().await {
                Ok(_) => {
                    failures = 0;
                    self.workflow.store().next_due_ms()
                }
                Err(SendError::Crashed(c)) => return Err(c),
                Err(SendError::Store(e)) => {
                    failures += 1;
                    let wait = Duration::from_millis(100 * 2u64.pow(failures.min(8)));
                    tracing::error!(error = %e, ?wait, "outbox sender: store error; retrying");
                    Ok(Some(
                        self.workflow.clock().now_ms() + wait.as_millis() as i64,
                    ))
                }
            };
            let next = next.unwrap_or_else(|e| {
                tracing::error!(error = %e, "outbox sender: cannot read the schedule");
                None
            });
            let clock = self.workflow.clock().clone();
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = written => {}
                _ = async {
                    match next {
                        Some(at) => clock.sleep_until(at).await,
                        None => {
                            clock.changed().await
                        }
                    }
                } => {}
            }
        }
    }

    /// Sends every effect due now, until none is; returns how many attempts were made.
    pub async fn run_due(&self) -> Result<usize, SendError> {
        let store = self.workflow.store();
        let mut attempts = 0;
        loop {
            let now = self.workflow.clock().now_ms();
            let due = store.due_effects(now, 64)?;
            if due.is_empty() {
                return Ok(attempts);
            }
            let mut progressed = false;
            for effect in due {
                if self.attempt(effect).await? {
                    attempts += 1;
                    progressed = true;
                }
            }
            if !progressed {
                return Ok(attempts);
            }
        }
    }

    /// One attempt at one effect; says whether anything happened.
    async fn attempt(&self, effect: Effect) -> Result<bool, SendError> {
        let store = self.workflow.store();
        let guard = self
            .workflow
            .lock_case(&effect.shop, &effect.order_gid)
            .await;
        let now = self.workflow.clock().now_ms();
        let Some(mut effect) = store.effect(effect.id)? else {
            return Ok(false);
        };
        if !effect.is_pending() {
            // The due index still named it: drop the stale entry, or the schedule would keep
            // pointing at the past and the sender would spin.
            store.drop_due(&effect)?;
            return Ok(false);
        }
        if effect.next_attempt_ms > now {
            return Ok(false);
        }
        // Only the first pending effect of a stream may go: a later one waits for its turn.
        let head = store.stream_head(&effect.stream)?;
        if head != Some(effect.id) {
            let head_effect = match head {
                Some(h) => store.effect(h)?,
                None => None,
            };
            // A stream entry left by an effect that is no longer pending blocks nobody.
            if let Some(stale) = head_effect.as_ref().filter(|e| !e.is_pending()) {
                store.drop_due(stale)?;
                return Ok(true);
            }
            let head_due = head_effect.map(|e| e.next_attempt_ms);
            let wait_until = head_due.unwrap_or(now).max(now);
            if wait_until > effect.next_attempt_ms {
                effect.next_attempt_ms = wait_until;
                store.write_case(CaseWrite {
                    updated_effects: vec![effect],
                    ..Default::default()
                })?;
                self.workflow.bump();
            }
            return Ok(false);
        }
        drop(guard);

        if effect.maybe_delivered {
            let remote = self.read_remote(&effect).await;
            let Some((_guard, mut current)) = self.relock(&effect).await? else {
                return Ok(false);
            };
            match remote {
                Remote::Has(reference) => {
                    tracing::info!(effect = %current.key, action = current.action.name(),
                        "found at the remote side after an unknown outcome; not sent again");
                    current.state = EffectState::Done {
                        at_ms: self.workflow.clock().now_ms(),
                        reference,
                        note: "found by a lookup after an unknown outcome".into(),
                    };
                    current.maybe_delivered = false;
                    self.record(&current)?;
                    return Ok(true);
                }
                Remote::Unknown(reason) => {
                    // A failed lookup counts as an attempt, so the pauses grow.
                    current.attempts += 1;
                    current.last_error = Some(format!("lookup failed: {reason}"));
                    current.next_attempt_ms = self.workflow.clock().now_ms()
                        + backoff(&self.settings, current.attempts).as_millis() as i64;
                    self.record(&current)?;
                    return Ok(true);
                }
                Remote::HasNot => {}
            }
        }

        // Mark, and make the mark durable before anything leaves.
        {
            let Some((_guard, mut current)) = self.relock(&effect).await? else {
                return Ok(false);
            };
            // A fulfillment goes only through a gate that is open now (invariant 3): settling
            // withdraws one that was never tried when the gate shuts, but one whose earlier
            // attempt did not arrive (read back just now, or refused as not delivered) is
            // withdrawn here, under the same lock, rather than sent.
            if let Action::CreateFulfillment { shipment_id, .. } = &current.action
                && let Some(shut) = self.workflow.fulfillment_shut(
                    &current.shop,
                    &current.order_gid,
                    shipment_id,
                )?
            {
                tracing::info!(effect = %current.key, reason = shut.reason(),
                    "the gate shut before the fulfillment went out; withdrawn");
                current.state = EffectState::Superseded {
                    at_ms: self.workflow.clock().now_ms(),
                    reason: shut.reason().to_string(),
                };
                current.maybe_delivered = false;
                self.record(&current)?;
                return Ok(true);
            }
            // A first submission waits, unmarked and without counting an attempt, while the
            // order has no address a carrier could use (an address issue is open meanwhile,
            // plan::address_missing): a cancellation can still supersede it, and it goes as soon
            // as the owner completes the address. Amendments go regardless: the supplier has
            // the address it was first sent.
            if let Action::Supplier { message, .. } = &current.action
                && let MessageBody::Submission { revision: 1, .. } = &message.body
                && let Some(why) = self.unusable_address(&current)?
            {
                current.last_error = Some(format!("{why}; waiting for the owner to complete it"));
                current.next_attempt_ms = self.workflow.clock().now_ms() + ADDRESS_RECHECK_MS;
                store.write_case(CaseWrite {
                    updated_effects: vec![current],
                    ..Default::default()
                })?;
                self.workflow.bump();
                return Ok(false);
            }
            current.maybe_delivered = true;
            current.attempts += 1;
            store.write_case(CaseWrite {
                updated_effects: vec![current.clone()],
                ..Default::default()
            })?;
            store.flush().await?;
            effect = current;
        }
        self.crash_at(CrashPoint::BeforeSend, &effect)?;

        let outcome = self.send(&effect).await;
        if matches!(outcome, SendOutcome::Accepted { .. }) {
            self.crash_at(CrashPoint::AfterSend, &effect)?;
        }

        let _guard = self
            .workflow
            .lock_case(&effect.shop, &effect.order_gid)
            .await;
        let Some(mut current) = store.effect(effect.id)? else {
            return Ok(true);
        };
        let now = self.workflow.clock().now_ms();
        match outcome {
            SendOutcome::Accepted { supplier_ref } => {
                current.state = EffectState::Done {
                    at_ms: now,
                    reference: supplier_ref,
                    note: "accepted".into(),
                };
                current.maybe_delivered = false;
                current.last_error = None;
            }
            SendOutcome::Refused { reason } => {
                tracing::warn!(effect = %current.key, action = current.action.name(), %reason,
                    "refused for good");
                current.state = EffectState::Failed { at_ms: now, reason };
                current.maybe_delivered = false;
            }
            SendOutcome::Retry {
                reason,
                maybe_delivered,
            } => {
                let wait = backoff(&self.settings, current.attempts);
                tracing::info!(effect = %current.key, action = current.action.name(), %reason,
                    attempts = current.attempts, wait_secs = wait.as_secs(), "will retry");
                current.last_error = Some(reason);
                current.maybe_delivered = maybe_delivered;
                current.next_attempt_ms = now + wait.as_millis() as i64;
            }
        }
        self.record(&current)?;
        self.crash_at(CrashPoint::AfterRecord, &current)?;
        Ok(true)
    }

    /// Takes the effect's case lock and reads the effect again: while it was unlocked, the
    /// workflow may have superseded it or another pass recorded it. None when it is no longer
    /// pending.
    async fn relock(
        &self,
        effect: &Effect,
    ) -> Result<Option<(tokio::sync::MutexGuard<'_, ()>, Effect)>, StoreError> {
        let guard = self
            .workflow
            .lock_case(&effect.shop, &effect.order_gid)
            .await;
        Ok(self
            .workflow
            .store()
            .effect(effect.id)?
            .filter(Effect::is_pending)
            .map(|current| (guard, current)))
    }

    fn record(&self, effect: &Effect) -> Result<(), StoreError> {
        let case = self
            .workflow
            .store()
            .case(&effect.shop, &effect.order_gid)?;
        self.workflow.record_outcome(effect, case)
    }

    /// Why the effect's order has no address a carrier could use, if it has none.
    fn unusable_address(&self, effect: &Effect) -> Result<Option<&'static str>, StoreError> {
        let order = self
            .workflow
            .store()
            .order(&effect.shop, &effect.order_gid)?;
        Ok(crate::order::Address::unusable(
            order.and_then(|o| o.shipping_address).as_ref(),
        ))
    }

    /// Sends one effect.
    async fn send(&self, effect: &Effect) -> SendOutcome {
        match &effect.action {
            Action::Supplier { supplier, message } => {
                let Some(adapter) = self.adapters.get(supplier) else {
                    return refused(format!("no supplier named {supplier} is configured"));
                };
                let mut message = message.clone();
                if let MessageBody::Submission { ship_to, .. } = &mut message.body {
                    // The address is read now, from the mirror, so that it is never copied
                    // into the outbox and an erasure reaches it.
                    match self.workflow.store().order(&effect.shop, &effect.order_gid) {
                        Ok(order) => {
                            *ship_to = order.and_then(|o| o.shipping_address).map(Box::new)
                        }
                        Err(e) => {
                            return SendOutcome::Retry {
                                reason: format!("cannot read the order: {e}"),
                                maybe_delivered: false,
                            };
                        }
                    }
                }
                adapter.send(&message).await
            }
            // Everything else goes to Shopify. An answer known before anything is sent (no
            // credentials, variables Shopify would refuse, nothing to release) comes back early.
            _ => self
                .send_to_shopify(effect)
                .await
                .unwrap_or_else(|early| early),
        }
    }

    /// Sends one Shopify effect; `Err` is an answer known before (or instead of) the call.
    async fn send_to_shopify(&self, effect: &Effect) -> Result<SendOutcome, SendOutcome> {
        let client = self.client(effect)?;
        Ok(match &effect.action {
            Action::Supplier { .. } => unreachable!("`send` sends supplier messages itself"),
            Action::PlaceHold {
                fulfillment_order_id,
                handle,
                reason,
                notes,
                ..
            } => {
                let mut variables =
                    convert::hold_variables(fulfillment_order_id, reason, notes, handle)
                        .map_err(refused)?;
                variables.fulfillment_hold.notify_merchant =
                    Some(self.workflow.settings().notify_merchant);
                match client.run::<FulfillmentOrderHold>(variables, 1).await {
                    Ok(data) => answered(
                        data.fulfillment_order_hold
                            .and_then(|p| p.fulfillment_hold)
                            .map(|hold| hold.id),
                        "hold",
                    ),
                    Err(ShopifyError::UserErrors { errors, .. })
                        if errors.iter().any(|e| {
                            e.code.as_deref() == Some("DUPLICATE_FULFILLMENT_HOLD_HANDLE")
                        }) =>
                    {
                        // Our handle is already there: the earlier attempt landed.
                        match self.find_hold(effect, fulfillment_order_id, handle).await {
                            Remote::Has(id) => SendOutcome::Accepted { supplier_ref: id },
                            Remote::HasNot | Remote::Unknown(_) => SendOutcome::Retry {
                                reason: "the hold exists but could not be read".into(),
                                maybe_delivered: true,
                            },
                        }
                    }
                    Err(e) => shopify_outcome(e),
                }
            }
            Action::CreateFulfillment {
                fulfillment_order_id,
                lines,
                tracking_company,
                tracking_numbers,
                tracking_urls,
                notify_customer,
                ..
            } => {
                let request = convert::FulfillmentRequest {
                    lines_by_fulfillment_order: vec![(fulfillment_order_id.clone(), lines.clone())],
                    notify_customer: *notify_customer,
                    tracking_company: tracking_company.clone(),
                    tracking_numbers: tracking_numbers.clone(),
                    tracking_urls: tracking_urls.clone(),
                    message: None,
                };
                let variables = convert::fulfillment_create_variables(&request);
                settled(
                    client.run::<FulfillmentCreate>(variables, 1).await,
                    |data| {
                        data.fulfillment_create
                            .and_then(|p| p.fulfillment)
                            .map(|x| x.id)
                    },
                    "fulfillment",
                )
            }
            Action::FulfillmentEvent {
                fulfillment_id,
                status,
                happened_at,
                message,
                ..
            } => {
                let variables = convert::fulfillment_event_variables(
                    fulfillment_id,
                    client.event_status(status),
                    happened_at,
                    message.as_deref(),
                )
                .map_err(refused)?;
                settled(
                    client.run::<FulfillmentEventCreate>(variables, 1).await,
                    |data| {
                        data.fulfillment_event_create
                            .and_then(|p| p.fulfillment_event)
                            .map(|x| x.id)
                    },
                    "fulfillment event",
                )
            }
            Action::UpdateTracking {
                fulfillment_id,
                tracking_company,
                tracking_numbers,
                tracking_urls,
                notify_customer,
                ..
            } => {
                let variables = convert::tracking_update_variables(
                    fulfillment_id,
                    tracking_company.as_deref(),
                    tracking_numbers,
                    tracking_urls,
                    *notify_customer,
                )
                .map_err(refused)?;
                settled(
                    client
                        .run::<FulfillmentTrackingInfoUpdate>(variables, 1)
                        .await,
                    |data| {
                        data.fulfillment_tracking_info_update
                            .and_then(|p| p.fulfillment)
                            .map(|x| x.id)
                    },
                    "fulfillment",
                )
            }
            Action::ReleaseHold {
                fulfillment_order_id,
                handle,
                ..
            } => {
                // Always read first: only a hold of ours that is still there is released, by
                // its id, so nobody else's hold is touched.
                let hold_id = match self.find_hold(effect, fulfillment_order_id, handle).await {
                    Remote::Has(Some(id)) => id,
                    Remote::HasNot | Remote::Has(None) => {
                        return Err(SendOutcome::Accepted { supplier_ref: None });
                    }
                    Remote::Unknown(reason) => {
                        return Err(SendOutcome::Retry {
                            reason,
                            maybe_delivered: false,
                        });
                    }
                };
                let variables = fulfillment_order_release_hold::Variables {
                    id: fulfillment_order_id.clone(),
                    hold_ids: vec![hold_id.clone()],
                };
                match client
                    .run::<FulfillmentOrderReleaseHold>(variables, 1)
                    .await
                {
                    Ok(_) => SendOutcome::Accepted {
                        supplier_ref: Some(format!("released {hold_id}")),
                    },
                    Err(e) => shopify_outcome(e),
                }
            }
        })
    }

    /// The Admin API client of the effect's shop; without credentials the effect can never be
    /// sent, which is a refusal, not a retry.
    fn client(&self, effect: &Effect) -> Result<&ShopifyClient, SendOutcome> {
        self.shops
            .get(&effect.shop)
            .ok_or_else(|| refused(format!("no Admin API credentials for {}", effect.shop)))
    }

    /// Reads whether the remote side has an effect whose outcome is unknown.
    async fn read_remote(&self, effect: &Effect) -> Remote {
        match &effect.action {
            Action::Supplier { supplier, message } => {
                // Without an adapter the send refuses for good; asking first would retry forever.
                let Some(adapter) = self.adapters.get(supplier) else {
                    return Remote::HasNot;
                };
                match adapter.lookup(&message.key).await {
                    LookupOutcome::Received { supplier_ref } => Remote::Has(supplier_ref),
                    LookupOutcome::NotReceived => Remote::HasNot,
                    LookupOutcome::Unknown { reason } => Remote::Unknown(reason),
                }
            }
            Action::PlaceHold {
                fulfillment_order_id,
                handle,
                ..
            } => self.find_hold(effect, fulfillment_order_id, handle).await,
            // A release always reads first anyway.
            Action::ReleaseHold { .. } => Remote::HasNot,
            // Shopify has no idempotency key for fulfillment events: ours is the one with the
            // same status at the same instant.
            Action::FulfillmentEvent {
                fulfillment_id,
                status,
                happened_at,
                ..
            } => {
                // A time that does not parse was never sent (the send refuses it first), so
                // there is nothing to find and the send will refuse it for good.
                let Ok(happened_at) = Timestamp::parse(happened_at) else {
                    return Remote::HasNot;
                };
                let status = match self.client(effect) {
                    Ok(client) => client.event_status(status),
                    Err(_) => status,
                };
                match self.read_fulfillment(effect, fulfillment_id).await {
                    Ok(Some(progress)) => progress
                        .find_event(status, &happened_at)
                        .map_or(Remote::HasNot, |e| Remote::Has(Some(e.id.clone()))),
                    Ok(None) => Remote::HasNot,
                    Err(e) => Remote::Unknown(e),
                }
            }
            // The update replaces the numbers, so it landed when the fulfillment carries exactly
            // ours. Sending it again would be harmless for Shopify's state, but the customer may
            // be notified a second time.
            Action::UpdateTracking {
                fulfillment_id,
                tracking_numbers,
                ..
            } => match self.read_fulfillment(effect, fulfillment_id).await {
                Ok(Some(progress)) if progress.has_tracking_numbers(tracking_numbers) => {
                    Remote::Has(Some(progress.id))
                }
                Ok(_) => Remote::HasNot,
                Err(e) => Remote::Unknown(e),
            },
            // Shopify has no idempotency key for fulfillments: ours is one carrying our
            // tracking numbers that is not already recorded as another of ours (a later
            // fulfillment of a parcel may carry a number an earlier one did).
            Action::CreateFulfillment {
                tracking_numbers, ..
            } => {
                let Some(client) = self.shops.get(&effect.shop) else {
                    return Remote::HasNot;
                };
                let ours = match self.workflow.store().case(&effect.shop, &effect.order_gid) {
                    Ok(case) => case.map(|c| known_fulfillments(&c)).unwrap_or_default(),
                    Err(e) => return Remote::Unknown(e.to_string()),
                };
                match fetch_order(client, &effect.shop, &effect.order_gid).await {
                    Ok(Some(order)) => {
                        find_fulfillment(&order.fulfillments, tracking_numbers, &ours)
                            .map_or(Remote::HasNot, |id| Remote::Has(Some(id)))
                    }
                    Ok(None) => Remote::HasNot,
                    Err(e) => Remote::Unknown(e),
                }
            }
        }
    }

    /// Reads a fulfillment's tracking numbers and newest events; none when Shopify has no such
    /// fulfillment, or when the shop has no credentials (the send then refuses for good, and
    /// asking first would retry forever).
    async fn read_fulfillment(
        &self,
        effect: &Effect,
        fulfillment_id: &str,
    ) -> Result<Option<convert::FulfillmentProgress>, String> {
        let Some(client) = self.shops.get(&effect.shop) else {
            return Ok(None);
        };
        let data = client
            .run::<FulfillmentEvents>(
                fulfillment_events::Variables {
                    id: fulfillment_id.to_string(),
                },
                1,
            )
            .await
            .map_err(|e| e.to_string())?;
        convert::fulfillment_progress(fulfillment_id, data).map_err(|e| e.to_string())
    }

    /// Fetches the order and looks for our hold (by handle) on the fulfillment order. The
    /// fresh state also goes into the mirror: it is the newest there is.
    async fn find_hold(&self, effect: &Effect, fulfillment_order_id: &str, handle: &str) -> Remote {
        let Some(client) = self.shops.get(&effect.shop) else {
            return Remote::HasNot;
        };
        let order = match fetch_order(client, &effect.shop, &effect.order_gid).await {
            Ok(Some(order)) => order,
            Ok(None) => return Remote::HasNot,
            Err(e) => return Remote::Unknown(e),
        };
        if let Err(e) = self.workflow.store().put_order(&order) {
            tracing::warn!(error = %e, "could not store the order fetched by the outbox");
        }
        let found = order
            .fulfillment_orders
            .iter()
            .filter(|fo| fo.id == fulfillment_order_id)
            .flat_map(|fo| &fo.holds)
            .find(|h| h.handle.as_deref() == Some(handle));
        match found {
            Some(hold) => Remote::Has(Some(hold.id.clone())),
            None => Remote::HasNot,
        }
    }
}

/// Fetches one order's current state.
async fn fetch_order(
    client: &ShopifyClient,
    shop: &str,
    order_gid: &str,
) -> Result<Option<OrderMirror>, String> {
    let ids = vec![order_gid.to_string()];
    let data = client
        .run::<OrdersByIds>(orders_by_ids::Variables { ids: ids.clone() }, 1)
        .await
        .map_err(|e| e.to_string())?;
    match convert::orders_by_ids(shop, &ids, data)
        .map_err(|e| e.to_string())?
        .pop()
    {
        Some(Fetched::Order(order)) => Ok(Some(order)),
        _ => Ok(None),
    }
}

/// A permanent refusal, with its reason.
fn refused(reason: impl std::fmt::Display) -> SendOutcome {
    SendOutcome::Refused {
        reason: reason.to_string(),
    }
}

/// What a Shopify mutation's result means for the outbox: `made` reads the id of what it made
/// from the answer.
fn settled<T>(
    result: Result<T, ShopifyError>,
    made: impl FnOnce(T) -> Option<String>,
    what: &str,
) -> SendOutcome {
    match result {
        Ok(data) => answered(made(data), what),
        Err(e) => shopify_outcome(e),
    }
}

/// What a Shopify mutation's answer means when it carried no error: the id of what it made,
/// or (no object either) an answer that proves nothing, so the next attempt reads back first.
fn answered(id: Option<String>, what: &str) -> SendOutcome {
    match id {
        Some(id) => SendOutcome::Accepted {
            supplier_ref: Some(id),
        },
        None => SendOutcome::Retry {
            reason: format!("Shopify returned no {what}"),
            maybe_delivered: true,
        },
    }
}

/// Maps a Shopify error to what the outbox does next.
fn shopify_outcome(e: ShopifyError) -> SendOutcome {
    match e {
        ShopifyError::UnknownOutcome { .. } => SendOutcome::Retry {
            reason: e.to_string(),
            maybe_delivered: true,
        },
        e if e.is_permanent() => refused(e),
        e => SendOutcome::Retry {
            reason: e.to_string(),
            maybe_delivered: false,
        },
    }
}

/// Why a sender pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Crashed(#[from] Crashed),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The Shopify fulfillments already recorded as created by one of the case's intents.
fn known_fulfillments(case: &crate::workflow::model::OrderCase) -> Vec<String> {
    case.shipments
        .iter()
        .flat_map(|s| &s.evidence)
        .filter_map(|e| match &e.kind {
            crate::workflow::model::EvidenceKind::FulfillmentCreated { fulfillment_id, .. } => {
                Some(fulfillment_id.clone())
            }
            _ => None,
        })
        .collect()
}

/// The fulfillment an intent with `numbers` became, among those not recorded as another of
/// ours: the one carrying exactly these numbers, else one carrying any of them.
fn find_fulfillment(
    fulfillments: &[crate::order::Fulfillment],
    numbers: &[String],
    ours: &[String],
) -> Option<String> {
    let numbers_of = |f: &crate::order::Fulfillment| -> std::collections::BTreeSet<String> {
        f.tracking.iter().filter_map(|t| t.number.clone()).collect()
    };
    let wanted: std::collections::BTreeSet<String> = numbers.iter().cloned().collect();
    let candidates: Vec<&crate::order::Fulfillment> = fulfillments
        .iter()
        .filter(|f| !ours.contains(&f.id))
        .filter(|f| !numbers_of(f).is_disjoint(&wanted))
        .collect();
    candidates
        .iter()
        .find(|f| numbers_of(f) == wanted)
        .or_else(|| candidates.first())
        .map(|f| f.id.clone())
}

#[cfg(test)]
mod tests {
    use super::find_fulfillment;
    use crate::order::{Fulfillment, Tracking};

    fn fulfillment(id: &str, numbers: &[&str]) -> Fulfillment {
        Fulfillment {
            id: id.into(),
            status: "SUCCESS".into(),
            created_at: None,
            tracking: numbers
                .iter()
                .map(|n| Tracking {
                    company: Some("UPS".into()),
                    number: Some(n.to_string()),
                    url: None,
                })
                .collect(),
        }
    }

    #[test]
    fn a_lost_answer_is_matched_to_the_fulfillment_it_made_not_to_an_earlier_one() {
        let f1 = fulfillment("gid://shopify/Fulfillment/1", &["1ZA"]);
        let f2 = fulfillment("gid://shopify/Fulfillment/2", &["1ZA", "1ZB"]);
        let ours = vec![f1.id.clone()];
        let wanted = ["1ZA".to_string(), "1ZB".to_string()];
        // The second intent's answer was lost: f1 shares a number, but it is already ours.
        assert_eq!(
            find_fulfillment(&[f1.clone(), f2.clone()], &wanted, &ours),
            Some(f2.id.clone())
        );
        // The second never arrived: f1 alone is no proof of it.
        assert_eq!(
            find_fulfillment(std::slice::from_ref(&f1), &wanted, &ours),
            None
        );
        // Of two unknown fulfillments, the one with exactly our numbers is ours.
        let partial = fulfillment("gid://shopify/Fulfillment/3", &["1ZB"]);
        assert_eq!(
            find_fulfillment(&[partial, f2.clone()], &wanted, &[]),
            Some(f2.id)
        );
    }
}
