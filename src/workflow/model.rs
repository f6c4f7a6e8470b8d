//! The supplier workflow's records: per order, its shipments with their append-only evidence,
//! and its exceptions with their decisions and Shopify holds (SPEC section 3).
//!
//! Everything about one order lives in one [`OrderCase`], stored under one key, so that a change
//! and the outbound effects it causes are written together (invariant 2) and two changes to one
//! order cannot interleave.

use serde::{Deserialize, Serialize};

use crate::suppliers::{Day, SupplierEvent};

/// Who did something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    /// A supplier or agent, by its configured name.
    Supplier(String),
    /// A person using the CLI or the admin API (their name as given, or `operator`).
    Operator(String),
    /// shipgate itself (planning, timers, outbox results).
    System,
    /// Shopify (an order state seen in the mirror).
    Shopify,
    /// A carrier, as a tracking provider reported it (the provider's name).
    Carrier(String),
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::Supplier(name) => write!(f, "supplier {name}"),
            Actor::Operator(name) => write!(f, "operator {name}"),
            Actor::System => f.write_str("shipgate"),
            Actor::Shopify => f.write_str("Shopify"),
            Actor::Carrier(provider) => write!(f, "carrier (via {provider})"),
        }
    }
}

/// Where a record came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// A supplier webhook, by its delivery sequence number.
    SupplierWebhook { delivery_seq: u64 },
    /// A row of an imported CSV sheet.
    CsvImport { file: String },
    /// The CLI or the admin API.
    Manual,
    /// shipgate's own planning or timers.
    Workflow,
    /// The outcome of an outbound effect.
    Outbox { effect_id: u64 },
    /// A tracking provider's webhook, by its delivery sequence number.
    TrackingWebhook { delivery_seq: u64 },
}

/// One line of a shipment: a quantity of one fulfillment-order line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentLine {
    pub fulfillment_order_line_id: String,
    pub line_item_id: String,
    pub sku: String,
    pub variant_title: Option<String>,
    pub quantity: i64,
}

/// What an evidence record says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EvidenceKind {
    /// shipgate decided to send this revision of the shipment to the supplier.
    /// `lines` are the quantities per order line (line item id) this revision asks for.
    SubmissionIntended {
        revision: u32,
        key: String,
        lines: Vec<(String, i64)>,
    },
    /// The supplier has the submission (its answer, or a lookup after an unknown outcome).
    SubmissionDelivered {
        revision: u32,
        supplier_ref: Option<String>,
    },
    /// The supplier refused the submission for good.
    SubmissionRefused { revision: u32, reason: String },
    /// An event the supplier reported.
    Supplier(SupplierEvent),
    /// Lines taken out of the shipment (a decision, an edit, or a cancellation): they are not
    /// shipped by this supplier. `quantity` is how many of the line remain (0: all removed).
    LineChanged {
        line_item_id: String,
        quantity: i64,
        reason: String,
    },
    /// shipgate asked the supplier to stop.
    CancelRequested { reason: String },
    /// The owner's answer to an offered substitute, naming the offer's evidence id.
    SubstituteDecided {
        line_item_id: String,
        offer: String,
        approve: bool,
    },
    /// The shipment was given up without waiting for the supplier: intercepted or written off.
    Abandoned { reason: String },
    /// A carrier's tracking event for one of the shipment's tracking numbers, with its raw
    /// text, code, location and time.
    Carrier(crate::tracking::TrackingEvent),
    /// The owner accepted a failed check's deviation (naming the check's evidence id); the
    /// approver is the evidence's actor, the reason its text.
    DeviationApproved { check: String, reason: String },
    /// The gate opened for these quantities: a fulfillment is to be created in Shopify
    /// (fulfillment-order line id, quantity), with the tracking of these parcels.
    FulfillmentIntended {
        key: String,
        fulfillment_order_id: String,
        lines: Vec<(String, i64)>,
        parcels: Vec<String>,
        /// The tracking numbers the fulfillment is created with.
        #[serde(default)]
        numbers: Vec<String>,
    },
    /// Shopify has the fulfillment.
    FulfillmentCreated { key: String, fulfillment_id: String },
    /// Shopify refused the fulfillment for good (its message).
    FulfillmentRefused { key: String, reason: String },
    /// The owner's answer to a refused fulfillment: try again (`retry`), or leave those
    /// quantities to be handled by hand (`investigate`).
    FulfillmentRefusalDecided { key: String, retry: bool },
    /// A carrier event is to be posted on the Shopify fulfillment (`key` names the
    /// fulfillment's intent): `status` is the `FulfillmentEventStatus`, `happened_ms` the
    /// carrier's time, `event` the carrier evidence it comes from.
    ProgressIntended {
        key: String,
        fulfillment_id: String,
        status: String,
        happened_ms: i64,
        event: String,
    },
    /// The fulfillment's tracking is to become these numbers (a parcel was labelled anew).
    /// `key` is the update's own key; `fulfillment` the fulfillment intent's key.
    TrackingUpdateIntended {
        key: String,
        fulfillment: String,
        fulfillment_id: String,
        numbers: Vec<String>,
    },
    /// The owner's answer to a parcel that the carrier did not take or that stopped moving:
    /// `chase` or `customer_updated` restart its clock; `new_label` and `reship` wait for a new
    /// label of the parcel.
    ParcelFollowUp {
        action: String,
        tracking_number: String,
    },
    /// Carrier progress of the fulfillment `key` up to `until_ms` (carrier time) is not posted:
    /// the fulfillment predates progress posting (a store upgraded from format 1), and telling
    /// its customer months of history now would be noise.
    ProgressSkipped { key: String, until_ms: i64 },
    /// The fulfillment `key` was intended but never reached Shopify, and the gate closed before
    /// it went (an exception opened, the order was cancelled, the fulfillment order was held or
    /// closed): its outbox effect is superseded and its quantities no longer count as intended,
    /// so the gate lets them through again once it reopens.
    FulfillmentWithdrawn { key: String, reason: String },
    /// The owner's answer to an address issue: the address was corrected in Shopify, and the
    /// supplier is sent the shipment again with it. `issue` is the supplier event that reported
    /// the problem. (Last: variants are stored by their position, so new ones are only ever
    /// appended.)
    AddressCorrected { issue: String },
}

/// One evidence record: append-only, each with actor, time and source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Unique within the shipment: the supplier's event id, or one shipgate made up. Recording
    /// the same id twice is a no-op, which makes every replay harmless.
    pub id: String,
    /// When it happened (for supplier events: as the supplier says).
    pub at_ms: i64,
    /// When shipgate recorded it.
    pub recorded_ms: i64,
    pub actor: Actor,
    pub source: Source,
    pub kind: EvidenceKind,
}

/// The quantities of one fulfillment order that one supplier ships.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipment {
    /// `SG-0000000042`: given to the supplier, so it must be short and opaque.
    pub id: String,
    pub supplier: String,
    pub fulfillment_order_id: String,
    /// The lines as first planned. The current quantities follow from `LineChanged` evidence.
    pub lines: Vec<ShipmentLine>,
    pub created_ms: i64,
    pub evidence: Vec<Evidence>,
}

/// The kinds of exception (SPEC section 3.2) this build opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ExceptionKind {
    UnmappedSku,
    SupplierRejected,
    Stockout,
    SubstituteOffered,
    CancelledAfterSubmission,
    CheckFailed,
    WriteBackRefused,
    FulfilledOutside,
    NoCarrierMovement,
    TrackingStalled,
    TrackingConflict,
    /// The supplier cannot ship to the order's address. (Appended last: stored exceptions keep
    /// their variant positions.)
    AddressIssue,
}

impl ExceptionKind {
    /// Every kind, for listings and metrics.
    pub const ALL: [ExceptionKind; 12] = [
        ExceptionKind::UnmappedSku,
        ExceptionKind::SupplierRejected,
        ExceptionKind::Stockout,
        ExceptionKind::SubstituteOffered,
        ExceptionKind::CancelledAfterSubmission,
        ExceptionKind::CheckFailed,
        ExceptionKind::WriteBackRefused,
        ExceptionKind::FulfilledOutside,
        ExceptionKind::NoCarrierMovement,
        ExceptionKind::TrackingStalled,
        ExceptionKind::TrackingConflict,
        ExceptionKind::AddressIssue,
    ];

    /// The name used in the CLI, the API and metrics.
    pub fn name(self) -> &'static str {
        match self {
            ExceptionKind::UnmappedSku => "unmapped_sku",
            ExceptionKind::SupplierRejected => "supplier_rejected",
            ExceptionKind::Stockout => "stockout",
            ExceptionKind::SubstituteOffered => "substitute_offered",
            ExceptionKind::CancelledAfterSubmission => "cancelled_after_submission",
            ExceptionKind::CheckFailed => "check_failed",
            ExceptionKind::WriteBackRefused => "write_back_refused",
            ExceptionKind::FulfilledOutside => "fulfilled_outside",
            ExceptionKind::NoCarrierMovement => "no_carrier_movement",
            ExceptionKind::TrackingStalled => "tracking_stalled",
            ExceptionKind::TrackingConflict => "tracking_conflict",
            ExceptionKind::AddressIssue => "address_issue",
        }
    }

    /// The Shopify `FulfillmentHoldReason` its hold is placed with, if it places one.
    pub fn hold_reason(self) -> Option<&'static str> {
        match self {
            ExceptionKind::UnmappedSku => Some("OTHER"),
            ExceptionKind::SupplierRejected => Some("OTHER"),
            ExceptionKind::Stockout => Some("INVENTORY_OUT_OF_STOCK"),
            ExceptionKind::SubstituteOffered => Some("OTHER"),
            ExceptionKind::CancelledAfterSubmission => None,
            ExceptionKind::CheckFailed => Some("OTHER"),
            ExceptionKind::AddressIssue => Some("INCORRECT_ADDRESS"),
            // Nothing is left to hold: the goods are labelled (or already fulfilled), and the
            // gate waits for the carrier anyway.
            ExceptionKind::WriteBackRefused
            | ExceptionKind::FulfilledOutside
            | ExceptionKind::NoCarrierMovement
            | ExceptionKind::TrackingStalled
            | ExceptionKind::TrackingConflict => None,
        }
    }

    /// The decisions an operator can take on it, by name.
    pub fn decisions(self) -> &'static [&'static str] {
        match self {
            ExceptionKind::UnmappedSku => &["route", "cancel"],
            ExceptionKind::SupplierRejected => &["reroute", "cancel"],
            ExceptionKind::Stockout => &["wait", "reroute", "cancel"],
            ExceptionKind::SubstituteOffered => &["approve", "reject"],
            ExceptionKind::CancelledAfterSubmission => &["intercepted", "accept_loss"],
            ExceptionKind::CheckFailed => &["replace", "repack", "approve_deviation", "cancel"],
            ExceptionKind::WriteBackRefused => &["retry", "investigate"],
            ExceptionKind::FulfilledOutside => &["acknowledge"],
            ExceptionKind::NoCarrierMovement => &["chase", "new_label", "cancel"],
            ExceptionKind::TrackingStalled => &["customer_updated", "reship"],
            ExceptionKind::TrackingConflict => &["new_label"],
            ExceptionKind::AddressIssue => &["correct_address", "cancel"],
        }
    }
}

/// What an exception is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Subject {
    pub fulfillment_order_id: String,
    pub shipment_id: Option<String>,
    pub line_item_id: Option<String>,
}

/// A decision an operator took (or shipgate recorded for them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// Unmapped SKU: ship these lines with this supplier.
    RouteTo {
        supplier: String,
    },
    /// Rejected or short: send the lines to this supplier, or the next backup.
    Reroute {
        supplier: Option<String>,
    },
    /// Short: wait for the supplier's restock until this day, then ask again.
    WaitUntil {
        day: Day,
    },
    /// Give up on the lines: shipgate will not ship them (the owner refunds in Shopify).
    Cancel,
    ApproveSubstitute,
    RejectSubstitute,
    /// Cancelled after submission: the parcel was stopped another way.
    Intercepted,
    /// Cancelled after submission: the goods are written off.
    AcceptLoss,
    /// Check failed: the supplier replaces the goods and checks again.
    Replace,
    /// Check failed: the supplier repacks and checks again.
    Repack,
    /// Check failed: ship anyway; the note says who approved it and why.
    ApproveDeviation,
    /// Write-back refused: try again (after fixing the cause in Shopify).
    Retry,
    /// Write-back refused: shipgate stops trying; the owner fulfils those quantities by hand.
    Investigate,
    /// Fulfilled outside shipgate: noted; shipgate writes nothing back for the shipment.
    Acknowledge,
    /// No carrier movement: the owner chases the carrier or supplier; the clock starts again.
    Chase,
    /// No carrier movement: the supplier makes a new label; shipgate waits for it.
    NewLabel,
    /// Tracking stalled: the customer was told; the clock starts again.
    CustomerUpdated,
    /// Tracking stalled: the supplier sends the goods again and reports the new label.
    Reship,
    /// Address issue: the owner corrected the address in Shopify; the supplier gets the
    /// shipment again with it. (Appended last: stored decisions keep their positions.)
    CorrectAddress,
}

impl Decision {
    /// Every decision's name, as `parse` takes them (the CLI offers these).
    pub const NAMES: [&'static str; 19] = [
        "route",
        "reroute",
        "wait",
        "cancel",
        "approve",
        "reject",
        "intercepted",
        "accept_loss",
        "replace",
        "repack",
        "approve_deviation",
        "retry",
        "investigate",
        "acknowledge",
        "chase",
        "new_label",
        "customer_updated",
        "reship",
        "correct_address",
    ];

    /// Builds a decision from its name and options, as the CLI and the admin API receive it:
    /// `route --supplier S`, `reroute [--supplier S]`, `wait --until YYYY-MM-DD`, and the other
    /// names of [`Decision::NAMES`] alone.
    pub fn parse(
        name: &str,
        supplier: Option<&str>,
        until: Option<&str>,
    ) -> Result<Decision, String> {
        let no_supplier = |d: Decision| match supplier {
            Some(_) => Err(format!("`{name}` takes no supplier")),
            None => Ok(d),
        };
        let decision = match name {
            "route" => Decision::RouteTo {
                supplier: supplier
                    .ok_or("`route` needs the supplier to route to")?
                    .to_string(),
            },
            "reroute" => Decision::Reroute {
                supplier: supplier.map(str::to_string),
            },
            "wait" => Decision::WaitUntil {
                day: Day::parse(until.ok_or("`wait` needs the day to wait until")?)?,
            },
            "cancel" => no_supplier(Decision::Cancel)?,
            "approve" => no_supplier(Decision::ApproveSubstitute)?,
            "reject" => no_supplier(Decision::RejectSubstitute)?,
            "intercepted" => no_supplier(Decision::Intercepted)?,
            "accept_loss" => no_supplier(Decision::AcceptLoss)?,
            "replace" => no_supplier(Decision::Replace)?,
            "repack" => no_supplier(Decision::Repack)?,
            "approve_deviation" => no_supplier(Decision::ApproveDeviation)?,
            "retry" => no_supplier(Decision::Retry)?,
            "investigate" => no_supplier(Decision::Investigate)?,
            "acknowledge" => no_supplier(Decision::Acknowledge)?,
            "chase" => no_supplier(Decision::Chase)?,
            "new_label" => no_supplier(Decision::NewLabel)?,
            "customer_updated" => no_supplier(Decision::CustomerUpdated)?,
            "reship" => no_supplier(Decision::Reship)?,
            "correct_address" => no_supplier(Decision::CorrectAddress)?,
            other => {
                return Err(format!(
                    "unknown decision `{other}` ({})",
                    Decision::NAMES.join(", ")
                ));
            }
        };
        if until.is_some() && name != "wait" {
            return Err(format!("`{name}` takes no day"));
        }
        Ok(decision)
    }

    /// The decision's name, as `ExceptionKind::decisions` lists it.
    pub fn name(&self) -> &'static str {
        match self {
            Decision::RouteTo { .. } => "route",
            Decision::Reroute { .. } => "reroute",
            Decision::WaitUntil { .. } => "wait",
            Decision::Cancel => "cancel",
            Decision::ApproveSubstitute => "approve",
            Decision::RejectSubstitute => "reject",
            Decision::Intercepted => "intercepted",
            Decision::AcceptLoss => "accept_loss",
            Decision::Replace => "replace",
            Decision::Repack => "repack",
            Decision::ApproveDeviation => "approve_deviation",
            Decision::Retry => "retry",
            Decision::Investigate => "investigate",
            Decision::Acknowledge => "acknowledge",
            Decision::Chase => "chase",
            Decision::NewLabel => "new_label",
            Decision::CustomerUpdated => "customer_updated",
            Decision::Reship => "reship",
            Decision::CorrectAddress => "correct_address",
        }
    }
}

/// A decision with who took it, when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decided {
    pub decision: Decision,
    pub by: Actor,
    pub at_ms: i64,
    pub note: Option<String>,
}

/// Where the Shopify hold of an exception stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldState {
    /// The hold is an outbox intent; not known to be placed yet.
    Requested,
    /// Shopify holds the fulfillment order under this hold id.
    Placed { hold_id: String },
    /// Shopify refused the hold (its message); the exception stays visible without it.
    Refused { reason: String },
    /// The release is an outbox intent.
    ReleaseRequested { hold_id: Option<String> },
    /// Released (or found already gone).
    Released,
}

/// The Shopify hold of an exception.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRecord {
    pub fulfillment_order_id: String,
    /// Stable per exception, so a retried hold cannot be placed twice.
    pub handle: String,
    pub reason: String,
    pub state: HoldState,
}

/// How an exception ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closed {
    pub at_ms: i64,
    pub by: Actor,
    pub reason: String,
}

/// A typed, visible problem with the decisions it allows (invariant 5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exception {
    /// `EX-0000000007`.
    pub id: String,
    pub kind: ExceptionKind,
    pub subject: Subject,
    /// What is wrong, in a sentence an owner understands.
    pub summary: String,
    pub opened_ms: i64,
    pub opened_by: Actor,
    /// The decision taken, if any. A `WaitUntil` keeps the exception open until its day.
    pub decision: Option<Decided>,
    /// Decisions that ran out (a wait whose day came while the problem remained).
    pub past_decisions: Vec<Decided>,
    pub closed: Option<Closed>,
    pub hold: Option<HoldRecord>,
}

impl Exception {
    /// Whether it still stops its subject.
    pub fn is_open(&self) -> bool {
        self.closed.is_none()
    }
}

/// An order-level choice that planning must respect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LineRule {
    /// Route this order line to this supplier whatever the SKU rules say (unless it was tried).
    RouteTo { supplier: String },
    /// Do not ship this quantity of the line (cancelled by decision). `current_at_decision` is
    /// the line's current quantity when it was decided: once the owner refunds (Shopify's
    /// quantity falls), the refunded units no longer need dropping.
    Drop {
        quantity: i64,
        current_at_decision: i64,
    },
}

/// Everything the workflow knows about one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCase {
    pub shop: String,
    pub order_gid: String,
    pub order_name: String,
    pub shipments: Vec<Shipment>,
    pub exceptions: Vec<Exception>,
    /// Per order line (line item id), rules from decisions, in the order they were taken.
    /// Keyed by the order line, not the fulfillment-order line: those change when Shopify
    /// splits, moves or merges fulfillment orders.
    pub line_rules: Vec<(String, LineRule)>,
    /// Per order line (line item id), the suppliers already tried (rejected, short, rerouted).
    pub tried: Vec<(String, String)>,
    /// The order's `updatedAt` this case was last planned against.
    pub planned_at_ms: i64,
    /// When the case must be settled again even if nothing arrives: the earliest deadline of
    /// a wait, of a label the carrier has not accepted, or of tracking that may stall. Set by
    /// every settle; the store indexes it so the timers never scan every case.
    #[serde(default)]
    pub wake_at_ms: Option<i64>,
}

impl OrderCase {
    /// An empty case for an order.
    pub fn new(shop: &str, order_gid: &str, order_name: &str) -> OrderCase {
        OrderCase {
            shop: shop.to_string(),
            order_gid: order_gid.to_string(),
            order_name: order_name.to_string(),
            shipments: Vec::new(),
            exceptions: Vec::new(),
            line_rules: Vec::new(),
            tried: Vec::new(),
            planned_at_ms: 0,
            wake_at_ms: None,
        }
    }

    /// A shipment by id.
    pub fn shipment(&self, id: &str) -> Option<&Shipment> {
        self.shipments.iter().find(|s| s.id == id)
    }

    /// A shipment by id, to append evidence.
    pub fn shipment_mut(&mut self, id: &str) -> Option<&mut Shipment> {
        self.shipments.iter_mut().find(|s| s.id == id)
    }

    /// An exception by id.
    pub fn exception(&self, id: &str) -> Option<&Exception> {
        self.exceptions.iter().find(|e| e.id == id)
    }

    /// The open exceptions.
    pub fn open_exceptions(&self) -> impl Iterator<Item = &Exception> {
        self.exceptions.iter().filter(|e| e.is_open())
    }
}

impl Shipment {
    /// Appends evidence unless a record with the same id is already there; says whether it
    /// was new.
    pub fn record(&mut self, evidence: Evidence) -> bool {
        if self.evidence.iter().any(|e| e.id == evidence.id) {
            return false;
        }
        self.evidence.push(evidence);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CLI offers `Decision::NAMES`: each must parse back to itself, and every decision an
    /// exception kind allows must be among them, or the CLI would refuse a valid decision.
    #[test]
    fn every_decision_name_parses_and_covers_what_each_kind_allows() {
        for name in Decision::NAMES {
            let supplier = (name == "route").then_some("acme");
            let until = (name == "wait").then_some("2026-12-01");
            let decision =
                Decision::parse(name, supplier, until).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(decision.name(), name);
        }
        for kind in ExceptionKind::ALL {
            for decision in kind.decisions() {
                assert!(
                    Decision::NAMES.contains(decision),
                    "{} allows {decision}, which the CLI does not offer",
                    kind.name()
                );
            }
        }
    }
}
