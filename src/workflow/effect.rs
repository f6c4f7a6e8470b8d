//! Outbound effects: the outbox's records (invariant 2).
//!
//! An effect is stored as an intent, with its idempotency key, in the same write as the case
//! change that calls for it, and before anything is sent. Effects that share a stream (one
//! shipment's messages, one fulfillment order's holds) are sent in the order they were recorded,
//! so a cancellation can never overtake the submission it cancels.

use serde::{Deserialize, Serialize};

use crate::suppliers::SupplierMessage;

/// What an effect does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// A message to a supplier through its adapter.
    Supplier {
        supplier: String,
        message: SupplierMessage,
    },
    /// `fulfillmentOrderHold` for an exception.
    PlaceHold {
        fulfillment_order_id: String,
        handle: String,
        reason: String,
        notes: String,
        exception_id: String,
    },
    /// `fulfillmentOrderReleaseHold` of shipgate's own hold for an exception.
    ReleaseHold {
        fulfillment_order_id: String,
        handle: String,
        exception_id: String,
    },
    /// `fulfillmentCreate` for quantities the gate let through (one location per call).
    CreateFulfillment {
        shipment_id: String,
        fulfillment_order_id: String,
        lines: Vec<(String, i64)>,
        tracking_company: Option<String>,
        tracking_numbers: Vec<String>,
        tracking_urls: Vec<String>,
        notify_customer: bool,
    },
    /// `fulfillmentEventCreate`: the carrier's progress on a fulfillment shipgate created
    /// (acceptance as `CARRIER_PICKED_UP`, then `IN_TRANSIT`, `OUT_FOR_DELIVERY`, `DELIVERED`, …).
    FulfillmentEvent {
        shipment_id: String,
        fulfillment_id: String,
        /// A `FulfillmentEventStatus` name.
        status: String,
        /// When the carrier says it happened, RFC 3339.
        happened_at: String,
        /// The carrier's words and place, for the order's timeline.
        message: Option<String>,
    },
    /// `fulfillmentTrackingInfoUpdate`: a fulfilled parcel's tracking number changed (a new
    /// label, a reshipment); the fulfillment carries these numbers from now on.
    UpdateTracking {
        shipment_id: String,
        fulfillment_id: String,
        tracking_company: Option<String>,
        tracking_numbers: Vec<String>,
        tracking_urls: Vec<String>,
        notify_customer: bool,
    },
}

impl Action {
    /// A short name for listings and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Supplier { message, .. } => match message.kind() {
                "submission" => "supplier_submission",
                "amendment" => "supplier_amendment",
                "cancellation" => "supplier_cancellation",
                "check_decision" => "supplier_check_decision",
                "parcel_decision" => "supplier_parcel_decision",
                _ => "supplier_decision",
            },
            Action::PlaceHold { .. } => "shopify_hold",
            Action::ReleaseHold { .. } => "shopify_release_hold",
            Action::CreateFulfillment { .. } => "shopify_fulfillment",
            Action::FulfillmentEvent { .. } => "shopify_fulfillment_event",
            Action::UpdateTracking { .. } => "shopify_tracking_update",
        }
    }
}

/// Where an effect stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EffectState {
    /// To be sent at `next_attempt_ms` (when its turn in the stream comes).
    Pending,
    /// Done: the remote side has it. `reference` is what it named it (the supplier's order
    /// reference, Shopify's hold id); `note` says how we know (its answer, a lookup).
    Done {
        at_ms: i64,
        reference: Option<String>,
        note: String,
    },
    /// Refused for good; the workflow turned the refusal into an exception or a note.
    Failed { at_ms: i64, reason: String },
    /// No longer needed, and never sent (for example a submission cancelled before its turn).
    Superseded { at_ms: i64, reason: String },
}

/// One outbound effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effect {
    pub id: u64,
    /// The idempotency key: the same key is the same effect, recorded once.
    pub key: String,
    /// Effects of one stream are sent strictly in id order.
    pub stream: String,
    pub shop: String,
    pub order_gid: String,
    pub action: Action,
    pub state: EffectState,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub created_ms: i64,
    pub last_error: Option<String>,
    /// Set (and flushed) before every send and cleared only by a known outcome: when it is set,
    /// the remote side may have the effect, so the next attempt reads the remote state first.
    pub maybe_delivered: bool,
}

impl Effect {
    /// Whether the effect still has to be sent.
    pub fn is_pending(&self) -> bool {
        self.state == EffectState::Pending
    }
}
