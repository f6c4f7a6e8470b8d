//! What a shipment's evidence means: its current lines, the problems it shows, and its status.
//!
//! Invariant 6 lives here. Every function is pure and reads the evidence in one canonical order
//! (by the time it happened, then by id), never in the order it arrived, so the same evidence
//! gives the same answer however it trickled in. "Latest" always means latest by that order: a
//! confirmation that happened after a shortage supersedes it even if it arrived first.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{EvidenceKind, Exception, ExceptionKind, Shipment, Subject};
use crate::suppliers::EventKind;

/// A shipment's status (SPEC section 3), first that holds. The statuses after the carrier's
/// acceptance (ready, fulfilled, delivered) come with the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ShipmentStatus {
    Cancelled,
    Held,
    /// Fulfilled in Shopify and delivered, as the carrier says.
    Delivered,
    /// Fulfilled in Shopify (with tracking) for every quantity.
    Fulfilled,
    /// Every parcel was accepted by its carrier: the write-back to Shopify may go (the gate
    /// decides what exactly).
    Ready,
    AwaitingAcceptance,
    AwaitingLabel,
    AwaitingPacking,
    AwaitingCheck,
    AwaitingConfirmation,
    AwaitingSubmission,
}

impl ShipmentStatus {
    /// The status's name in the CLI and the API.
    pub fn name(self) -> &'static str {
        match self {
            ShipmentStatus::Cancelled => "cancelled",
            ShipmentStatus::Held => "held",
            ShipmentStatus::Ready => "ready",
            ShipmentStatus::Fulfilled => "fulfilled",
            ShipmentStatus::Delivered => "delivered",
            ShipmentStatus::AwaitingAcceptance => "awaiting_acceptance",
            ShipmentStatus::AwaitingLabel => "awaiting_label",
            ShipmentStatus::AwaitingPacking => "awaiting_packing",
            ShipmentStatus::AwaitingCheck => "awaiting_check",
            ShipmentStatus::AwaitingConfirmation => "awaiting_confirmation",
            ShipmentStatus::AwaitingSubmission => "awaiting_submission",
        }
    }
}

/// A problem the evidence shows; the workflow keeps one open exception per condition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Condition {
    pub kind: ExceptionKind,
    pub subject: Subject,
    pub summary: String,
}

/// The evidence in canonical order.
fn canonical(shipment: &Shipment) -> Vec<&super::model::Evidence> {
    let mut all: Vec<_> = shipment.evidence.iter().collect();
    all.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
    all
}

/// The shipment's current quantity per order line (line item id), in planned order. A line
/// changed to 0 is left out.
pub fn current_lines(shipment: &Shipment) -> Vec<(String, i64)> {
    let mut quantities: BTreeMap<&str, i64> = shipment
        .lines
        .iter()
        .map(|l| (l.line_item_id.as_str(), l.quantity))
        .collect();
    for e in canonical(shipment) {
        if let EvidenceKind::LineChanged {
            line_item_id,
            quantity,
            ..
        } = &e.kind
            && let Some(q) = quantities.get_mut(line_item_id.as_str())
        {
            *q = *quantity;
        }
    }
    shipment
        .lines
        .iter()
        .filter_map(|l| {
            let q = quantities[l.line_item_id.as_str()];
            (q > 0).then(|| (l.line_item_id.clone(), q))
        })
        .collect()
}

/// The current revision of the submission: the highest one intended.
pub fn revision(shipment: &Shipment) -> u32 {
    shipment
        .evidence
        .iter()
        .filter_map(|e| match &e.kind {
            EvidenceKind::SubmissionIntended { revision, .. } => Some(*revision),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

fn has(shipment: &Shipment, test: impl Fn(&EvidenceKind) -> bool) -> bool {
    shipment.evidence.iter().any(|e| test(&e.kind))
}

fn supplier_cancelled(shipment: &Shipment) -> bool {
    has(
        shipment,
        |k| matches!(k, EvidenceKind::Supplier(ev) if matches!(ev.kind, EventKind::Cancelled { .. })),
    )
}

fn cancel_requested(shipment: &Shipment) -> bool {
    has(shipment, |k| {
        matches!(k, EvidenceKind::CancelRequested { .. })
    })
}

/// Whether the shipment is over without shipping: abandoned, cancelled by the supplier after we
/// asked, or with nothing left in it that a supplier was asked to stop (a stop that was asked
/// for stays open until the supplier confirms it).
pub fn is_cancelled(shipment: &Shipment) -> bool {
    has(shipment, |k| matches!(k, EvidenceKind::Abandoned { .. }))
        || (cancel_requested(shipment) && supplier_cancelled(shipment))
        || (current_lines(shipment).is_empty() && !cancel_requested(shipment))
}

/// Whether the supplier refused the shipment (its answer to the submission, or a rejection).
pub fn is_refused(shipment: &Shipment) -> bool {
    has(shipment, |k| {
        matches!(k, EvidenceKind::SubmissionRefused { .. })
            || matches!(k, EvidenceKind::Supplier(ev) if matches!(ev.kind, EventKind::Rejected { .. }))
    })
}

/// Whether the supplier has received a revision of the submission: it said so, or it reported
/// anything about the shipment (its answer to the submission may have been lost).
pub fn is_delivered_to_supplier(shipment: &Shipment) -> bool {
    has(shipment, |k| {
        matches!(
            k,
            EvidenceKind::SubmissionDelivered { .. } | EvidenceKind::Supplier(_)
        )
    })
}

/// The latest report about one line (confirmed, short or substitute), with its evidence id.
fn latest_line_report<'a>(
    shipment: &'a Shipment,
    line_item_id: &str,
) -> Option<(&'a str, &'a EventKind)> {
    canonical(shipment)
        .into_iter()
        .filter_map(|e| match &e.kind {
            EvidenceKind::Supplier(ev)
                if matches!(
                    ev.kind,
                    EventKind::LineConfirmed { .. }
                        | EventKind::LineShort { .. }
                        | EventKind::SubstituteOffered { .. }
                ) && ev.kind.line_ids().first() == Some(&line_item_id) =>
            {
                Some((e.id.as_str(), &ev.kind))
            }
            _ => None,
        })
        .next_back()
}

/// The substitute decision taken on an offer (by the offer's evidence id), if any.
fn substitute_decision(shipment: &Shipment, offer: &str) -> Option<bool> {
    shipment.evidence.iter().find_map(|e| match &e.kind {
        EvidenceKind::SubstituteDecided {
            offer: o, approve, ..
        } if o == offer => Some(*approve),
        _ => None,
    })
}

/// Whether a substitute SKU was approved for a line.
fn approved_substitute(shipment: &Shipment, line_item_id: &str, sku: &str) -> bool {
    shipment.evidence.iter().any(|e| match &e.kind {
        EvidenceKind::SubstituteDecided {
            line_item_id: l,
            offer,
            approve: true,
        } if l == line_item_id => shipment.evidence.iter().any(|o| {
            o.id == *offer
                && matches!(&o.kind, EvidenceKind::Supplier(ev) if matches!(&ev.kind,
                    EventKind::SubstituteOffered { offered_sku, .. } | EventKind::LineConfirmed { sku: offered_sku, .. }
                    if offered_sku.eq_ignore_ascii_case(sku)))
        }),
        _ => false,
    })
}

/// What a line's latest report means for shipping it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineState {
    /// Nothing reported yet.
    Unconfirmed,
    /// Confirmed for at least the current quantity, as ordered or an approved substitute.
    Confirmed,
    /// Confirmed for less than the current quantity.
    PartlyConfirmed { confirmed: i64, of: i64 },
    /// Short; the evidence id of the report.
    Short { report: String },
    /// Something else offered (explicitly, or a confirmation of another SKU), not yet decided.
    SubstituteOffered { report: String, offered_sku: String },
    /// The offer was answered; waiting for the supplier's next report.
    SubstituteAnswered,
}

/// The state of each current line, in planned order.
pub fn line_states(shipment: &Shipment) -> Vec<(String, LineState)> {
    current_lines(shipment)
        .into_iter()
        .map(|(line_item_id, quantity)| {
            let ordered_sku = shipment
                .lines
                .iter()
                .find(|l| l.line_item_id == line_item_id)
                .map(|l| l.sku.as_str())
                .unwrap_or_default();
            let state = match latest_line_report(shipment, &line_item_id) {
                None => LineState::Unconfirmed,
                Some((id, EventKind::LineShort { .. })) => LineState::Short {
                    report: id.to_string(),
                },
                Some((id, EventKind::SubstituteOffered { offered_sku, .. })) => {
                    match substitute_decision(shipment, id) {
                        Some(_) => LineState::SubstituteAnswered,
                        None => LineState::SubstituteOffered {
                            report: id.to_string(),
                            offered_sku: offered_sku.clone(),
                        },
                    }
                }
                Some((
                    id,
                    EventKind::LineConfirmed {
                        sku, quantity: q, ..
                    },
                )) => {
                    let right_goods = sku.eq_ignore_ascii_case(ordered_sku)
                        || approved_substitute(shipment, &line_item_id, sku);
                    if !right_goods {
                        match substitute_decision(shipment, id) {
                            Some(false) => LineState::SubstituteAnswered,
                            _ => LineState::SubstituteOffered {
                                report: id.to_string(),
                                offered_sku: sku.clone(),
                            },
                        }
                    } else if *q >= quantity {
                        LineState::Confirmed
                    } else {
                        LineState::PartlyConfirmed {
                            confirmed: *q,
                            of: quantity,
                        }
                    }
                }
                Some(_) => LineState::Unconfirmed,
            };
            (line_item_id, state)
        })
        .collect()
}

/// The problems the shipment's evidence shows, each as the exception it calls for.
pub fn conditions(shipment: &Shipment) -> Vec<Condition> {
    if is_cancelled(shipment) {
        return Vec::new();
    }
    let subject = |line: Option<&str>| Subject {
        fulfillment_order_id: shipment.fulfillment_order_id.clone(),
        shipment_id: Some(shipment.id.clone()),
        line_item_id: line.map(str::to_string),
    };
    let mut out = Vec::new();
    if let Some(reason) = canonical(shipment).into_iter().find_map(|e| match &e.kind {
        EvidenceKind::CancelRequested { reason } => Some(reason),
        _ => None,
    }) {
        // Once shipgate asked to cancel, only the supplier's confirmation (or an operator's
        // decision, recorded as `Abandoned`) ends it; other problems no longer matter.
        out.push(Condition {
            kind: ExceptionKind::CancelledAfterSubmission,
            subject: subject(None),
            summary: format!(
                "{} was asked to stop ({reason}); waiting for it to confirm",
                shipment.supplier
            ),
        });
        return out;
    }
    let rejection = canonical(shipment).into_iter().find_map(|e| match &e.kind {
        EvidenceKind::SubmissionRefused { reason, .. } => Some(reason.clone()),
        EvidenceKind::Supplier(ev) => match &ev.kind {
            EventKind::Rejected { reason } => Some(reason.clone()),
            EventKind::Cancelled { reason } => Some(format!(
                "the supplier cancelled on its own{}",
                reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            )),
            _ => None,
        },
        _ => None,
    });
    if let Some(reason) = rejection {
        out.push(Condition {
            kind: ExceptionKind::SupplierRejected,
            subject: subject(None),
            summary: format!("{} rejected the shipment: {reason}", shipment.supplier),
        });
        return out;
    }
    for (_, reason) in undecided_refusals(shipment) {
        out.push(Condition {
            kind: ExceptionKind::WriteBackRefused,
            subject: subject(None),
            summary: format!("Shopify refused the fulfillment: {reason}"),
        });
    }
    if let Some((_, reason)) = address_issue(shipment) {
        out.push(Condition {
            kind: ExceptionKind::AddressIssue,
            subject: subject(None),
            summary: format!(
                "{} cannot ship to the order's address: {reason}; correct it in Shopify, then \
                 decide correct_address, or cancel",
                shipment.supplier
            ),
        });
    }
    if failed_check(shipment).is_some() {
        out.push(Condition {
            kind: ExceptionKind::CheckFailed,
            subject: subject(None),
            summary: format!(
                "the physical check at {} failed: replace, repack, accept the deviation or cancel",
                shipment.supplier
            ),
        });
    }
    for (line, state) in line_states(shipment) {
        let sku = shipment
            .lines
            .iter()
            .find(|l| l.line_item_id == line)
            .map(|l| l.sku.clone())
            .unwrap_or_default();
        match state {
            LineState::Short { .. } => out.push(Condition {
                kind: ExceptionKind::Stockout,
                subject: subject(Some(&line)),
                summary: format!("{} is short of {sku}", shipment.supplier),
            }),
            // Confirming fewer than ordered is a shortage of the rest, whatever it is called.
            LineState::PartlyConfirmed { confirmed, of } => out.push(Condition {
                kind: ExceptionKind::Stockout,
                subject: subject(Some(&line)),
                summary: format!(
                    "{} confirmed only {confirmed} of {of} {sku}",
                    shipment.supplier
                ),
            }),
            LineState::SubstituteOffered { offered_sku, .. } => out.push(Condition {
                kind: ExceptionKind::SubstituteOffered,
                subject: subject(Some(&line)),
                summary: format!(
                    "{} offers {offered_sku} instead of {sku}",
                    shipment.supplier
                ),
            }),
            _ => {}
        }
    }
    out
}

/// The latest physical check the supplier reported (by when it happened): its evidence id and
/// whether it passed (`pass` or `pass_with_deviation`). Checks are validated at the door, so
/// only their result is read here.
fn latest_check(shipment: &Shipment) -> Option<(&str, bool)> {
    canonical(shipment)
        .into_iter()
        .filter_map(|e| match &e.kind {
            EvidenceKind::Supplier(ev) => match &ev.kind {
                EventKind::CheckReported { check_json } => {
                    let passed =
                        serde_json::from_str::<serde_json::Value>(check_json).is_ok_and(|v| {
                            matches!(
                                v.get("result").and_then(|r| r.as_str()),
                                Some("pass" | "pass_with_deviation")
                            )
                        });
                    Some((e.id.as_str(), passed))
                }
                _ => None,
            },
            _ => None,
        })
        .next_back()
}

/// The latest physical check the supplier reported, as its event.
pub fn latest_check_event(shipment: &Shipment) -> Option<&crate::suppliers::SupplierEvent> {
    let (id, _) = latest_check(shipment)?;
    shipment.evidence.iter().find_map(|e| match &e.kind {
        EvidenceKind::Supplier(ev) if e.id == id => Some(ev),
        _ => None,
    })
}

/// Whether the latest check failed and the owner accepted the deviation.
pub fn deviation_accepted(shipment: &Shipment) -> bool {
    latest_check(shipment).is_some_and(|(id, passed)| !passed && deviation_approved(shipment, id))
}

/// Whether the owner accepted a failed check as a deviation.
fn deviation_approved(shipment: &Shipment, check: &str) -> bool {
    has(
        shipment,
        |k| matches!(k, EvidenceKind::DeviationApproved { check: c, .. } if c == check),
    )
}

/// Whether the latest physical check passed, or failed and the owner approved the deviation.
fn check_passed(shipment: &Shipment) -> bool {
    latest_check(shipment).is_some_and(|(id, passed)| passed || deviation_approved(shipment, id))
}

/// The latest check, when it failed and nobody accepted the deviation: its evidence id.
pub fn failed_check(shipment: &Shipment) -> Option<&str> {
    latest_check(shipment)
        .filter(|(id, passed)| !passed && !deviation_approved(shipment, id))
        .map(|(id, _)| id)
}

/// The parcels as packed (the latest report of each), by parcel id: (line item id, quantity).
pub fn parcels(shipment: &Shipment) -> BTreeMap<String, Vec<(String, i64)>> {
    let mut parcels: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for e in canonical(shipment) {
        if let EvidenceKind::Supplier(ev) = &e.kind
            && let EventKind::Packed { parcels: packed } = &ev.kind
        {
            for p in packed {
                parcels.insert(
                    p.parcel_id.clone(),
                    p.lines
                        .iter()
                        .map(|l| (l.line_id.clone(), l.quantity))
                        .collect(),
                );
            }
        }
    }
    parcels
}

/// The current labels: (parcel id, carrier, tracking number, tracking URL). A label that names
/// no parcel is for the only parcel there is. A parcel labelled again (a new label, a
/// reshipment) carries only its latest label: the earlier number no longer counts for it.
pub fn labels(shipment: &Shipment) -> Vec<(Option<String>, String, String, Option<String>)> {
    let parcels = parcels(shipment);
    let only = (parcels.len() == 1)
        .then(|| parcels.keys().next().cloned())
        .flatten();
    let mut out: Vec<(Option<String>, String, String, Option<String>)> = Vec::new();
    for e in canonical(shipment) {
        if let EvidenceKind::Supplier(ev) = &e.kind
            && let EventKind::LabelCreated {
                parcel_id,
                carrier,
                tracking_number,
                tracking_url,
            } = &ev.kind
        {
            let parcel = parcel_id.clone().or_else(|| only.clone());
            // Only the same parcel's earlier label is replaced: several parcels may share one
            // number (one waybill for several boxes), and each still has it.
            if parcel.is_some() {
                out.retain(|(p, ..)| *p != parcel);
            } else {
                out.retain(|(p, _, n, _)| p.is_some() || n != tracking_number);
            }
            out.push((
                parcel,
                carrier.clone(),
                tracking_number.clone(),
                tracking_url.clone(),
            ));
        }
    }
    out
}

/// The tracking Shopify is given for some parcels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracking {
    /// The first label's carrier, as the supplier spelt it.
    pub company: Option<String>,
    pub numbers: Vec<String>,
    /// Shopify matches URLs to numbers by position: given only when every number has one.
    pub urls: Vec<String>,
}

/// The current tracking of these parcels.
pub fn tracking(shipment: &Shipment, parcels: &[String]) -> Tracking {
    let labels: Vec<_> = labels(shipment)
        .into_iter()
        .filter(|(p, ..)| p.as_ref().is_some_and(|p| parcels.contains(p)))
        .collect();
    // A number shared by several parcels is given once, with its URL once.
    let mut numbers: Vec<String> = Vec::new();
    let mut urls: Vec<String> = Vec::new();
    let mut every_url = true;
    for (_, _, number, url) in &labels {
        if numbers.contains(number) {
            continue;
        }
        numbers.push(number.clone());
        match url {
            Some(url) => urls.push(url.clone()),
            None => every_url = false,
        }
    }
    if !every_url {
        urls.clear();
    }
    Tracking {
        company: labels.first().map(|(_, carrier, ..)| carrier.clone()),
        urls,
        numbers,
    }
}

/// When the shipment's last parcel was delivered (the carrier's time), once every current label
/// was: its journey is over, and a later scan of one of its numbers is a reused label's.
pub fn delivered_at(shipment: &Shipment) -> Option<i64> {
    let given_up = given_up(shipment);
    let mut last: Option<i64> = None;
    for (_, _, number, _) in labels(shipment)
        .into_iter()
        .filter(|(_, _, n, _)| !given_up.contains(n))
    {
        let at = carrier_events(shipment, &number)
            .iter()
            .filter(|e| e.normalized == crate::tracking::Normalized::Delivered)
            .map(|e| e.occurred_at.unix_ms)
            .min()?;
        last = Some(last.map_or(at, |l| l.max(at)));
    }
    last
}

/// The numbers whose parcels the owner gave up (`cancel` on a parcel the carrier never took):
/// nothing more is expected of them.
pub fn given_up(shipment: &Shipment) -> std::collections::BTreeSet<String> {
    shipment
        .evidence
        .iter()
        .filter_map(|e| match &e.kind {
            EvidenceKind::ParcelFollowUp {
                action,
                tracking_number,
            } if action == "cancel" => Some(tracking_number.clone()),
            _ => None,
        })
        .collect()
}

/// Whether every current label of the shipment was delivered.
pub fn delivered(shipment: &Shipment) -> bool {
    delivered_at(shipment).is_some()
}

/// When each tracking number was first labelled (the supplier's time).
pub fn label_times(shipment: &Shipment) -> BTreeMap<String, i64> {
    let mut out: BTreeMap<String, i64> = BTreeMap::new();
    for e in &shipment.evidence {
        if let EvidenceKind::Supplier(ev) = &e.kind
            && let EventKind::LabelCreated {
                tracking_number, ..
            } = &ev.kind
        {
            let at = out.entry(tracking_number.clone()).or_insert(e.at_ms);
            *at = (*at).min(e.at_ms);
        }
    }
    out
}

/// The carrier events recorded for one tracking number that can be this shipment's, in the
/// order they were recorded: those timed more than a day before the number's first label here
/// are another parcel's (carriers recycle numbers, and providers resend the whole history).
pub fn carrier_events(shipment: &Shipment, number: &str) -> Vec<crate::tracking::TrackingEvent> {
    let since = label_times(shipment)
        .get(number)
        .map_or(i64::MIN, |at| at - DAY_MS);
    shipment
        .evidence
        .iter()
        .filter_map(|e| match &e.kind {
            EvidenceKind::Carrier(ev)
                if ev.tracking_number == number && ev.occurred_at.unix_ms >= since =>
            {
                Some(ev.clone())
            }
            _ => None,
        })
        .collect()
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Passed quantities per line item of the latest check, when it passed or its deviation was
/// accepted; empty otherwise.
pub fn passed_quantities(shipment: &Shipment) -> BTreeMap<String, i64> {
    let Some((id, passed)) = latest_check(shipment) else {
        return BTreeMap::new();
    };
    if !passed && !deviation_approved(shipment, id) {
        return BTreeMap::new();
    }
    let json = shipment.evidence.iter().find_map(|e| match &e.kind {
        EvidenceKind::Supplier(ev) if e.id == id => match &ev.kind {
            EventKind::CheckReported { check_json } => Some(check_json.clone()),
            _ => None,
        },
        _ => None,
    });
    let mut out = BTreeMap::new();
    if let Some(value) = json.and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok()) {
        for line in value["lines"].as_array().into_iter().flatten() {
            if let (Some(line_id), Some(q)) =
                (line["line_id"].as_str(), line["quantity_passed"].as_i64())
            {
                *out.entry(line_id.to_string()).or_insert(0) += q;
            }
        }
    }
    out
}

/// What the owner decided about a refused fulfillment (None: not yet).
fn refusal_decision(shipment: &Shipment, key: &str) -> Option<bool> {
    shipment.evidence.iter().find_map(|e| match &e.kind {
        EvidenceKind::FulfillmentRefusalDecided { key: k, retry } if k == key => Some(*retry),
        _ => None,
    })
}

fn refused(shipment: &Shipment, key: &str) -> bool {
    has(
        shipment,
        |k| matches!(k, EvidenceKind::FulfillmentRefused { key: k2, .. } if k2 == key),
    )
}

/// The supplier's latest address issue that no correction answers: (its event id, reason). A
/// correction answers every issue recorded before it, so two reports are answered at once. A
/// report recorded after it counts only when the supplier dated it after the latest report the
/// correction answered: an old sheet row imported late reopens nothing. (Supplier times are
/// compared with supplier times only, never with shipgate's clock.)
pub fn address_issue(shipment: &Shipment) -> Option<(String, String)> {
    let issue = |e: &super::model::Evidence| match &e.kind {
        EvidenceKind::Supplier(ev) => match &ev.kind {
            EventKind::AddressIssue { reason } => {
                Some((ev.id.clone(), reason.clone(), ev.occurred_at.unix_ms))
            }
            _ => None,
        },
        _ => None,
    };
    let corrected_at = shipment
        .evidence
        .iter()
        .rposition(|e| matches!(e.kind, EvidenceKind::AddressCorrected { .. }));
    let (answered, after) = match corrected_at {
        Some(at) => shipment.evidence.split_at(at),
        None => (&shipment.evidence[..0], &shipment.evidence[..]),
    };
    let answered_until = answered.iter().filter_map(issue).map(|(_, _, at)| at).max();
    after
        .iter()
        .rev()
        .filter_map(issue)
        .find(|(_, _, at)| answered_until.is_none_or(|until| *at > until))
        .map(|(id, reason, _)| (id, reason))
}

/// Whether the address was corrected after the last revision was intended: the supplier must
/// be sent the shipment again, with the address as the mirror now has it.
pub fn readdressed(shipment: &Shipment) -> bool {
    let last =
        |pick: fn(&EvidenceKind) -> bool| shipment.evidence.iter().rposition(|e| pick(&e.kind));
    match (
        last(|k| matches!(k, EvidenceKind::AddressCorrected { .. })),
        last(|k| matches!(k, EvidenceKind::SubmissionIntended { .. })),
    ) {
        (Some(corrected), Some(submitted)) => corrected > submitted,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Whether the intended fulfillment `key` was withdrawn before it reached Shopify.
pub fn withdrawn(shipment: &Shipment, key: &str) -> bool {
    has(
        shipment,
        |k| matches!(k, EvidenceKind::FulfillmentWithdrawn { key: k2, .. } if k2 == key),
    )
}

/// The intended fulfillments not yet created in Shopify, refused or withdrawn: those whose
/// effect may still be waiting in the outbox.
pub fn unsent_intents(shipment: &Shipment) -> Vec<String> {
    shipment
        .evidence
        .iter()
        .filter_map(|e| match &e.kind {
            EvidenceKind::FulfillmentIntended { key, .. }
                if !refused(shipment, key)
                    && !withdrawn(shipment, key)
                    && !has(shipment, |k| {
                        matches!(k, EvidenceKind::FulfillmentCreated { key: k2, .. } if k2 == key)
                    }) =>
            {
                Some(key.clone())
            }
            _ => None,
        })
        .collect()
}

/// The refused fulfillments nobody decided about yet: (key, Shopify's reason).
pub fn undecided_refusals(shipment: &Shipment) -> Vec<(String, String)> {
    shipment
        .evidence
        .iter()
        .filter_map(|e| match &e.kind {
            EvidenceKind::FulfillmentRefused { key, reason }
                if refusal_decision(shipment, key).is_none() =>
            {
                Some((key.clone(), reason.clone()))
            }
            _ => None,
        })
        .collect()
}

/// Quantities per fulfillment-order line that the gate already let through (intended). A
/// refused intent stops counting once the owner decided to retry it; one left to be handled by
/// hand keeps counting, so the gate does not open for it again. A withdrawn intent never
/// counts.
pub fn intended_fulfilments(shipment: &Shipment) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for e in &shipment.evidence {
        if let EvidenceKind::FulfillmentIntended { lines, key, .. } = &e.kind {
            if withdrawn(shipment, key)
                || (refused(shipment, key) && refusal_decision(shipment, key) != Some(false))
            {
                continue;
            }
            for (fol, q) in lines {
                *out.entry(fol.clone()).or_insert(0) += q;
            }
        }
    }
    out
}

/// The parcels whose tracking the intended fulfillments that count (as in
/// `intended_fulfilments`) carry.
pub fn intended_parcels(shipment: &Shipment) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in &shipment.evidence {
        if let EvidenceKind::FulfillmentIntended { parcels, key, .. } = &e.kind {
            if withdrawn(shipment, key)
                || (refused(shipment, key) && refusal_decision(shipment, key) != Some(false))
            {
                continue;
            }
            out.extend(parcels.iter().cloned());
        }
    }
    out
}

/// Parcels by id (the latest report of each), and whether they cover every current line.
fn packing(shipment: &Shipment) -> (Vec<String>, bool) {
    let mut parcels: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for e in canonical(shipment) {
        if let EvidenceKind::Supplier(ev) = &e.kind
            && let EventKind::Packed { parcels: packed } = &ev.kind
        {
            for p in packed {
                parcels.insert(
                    p.parcel_id.clone(),
                    p.lines
                        .iter()
                        .map(|l| (l.line_id.clone(), l.quantity))
                        .collect(),
                );
            }
        }
    }
    let covered = current_lines(shipment).iter().all(|(line, quantity)| {
        let packed: i64 = parcels
            .values()
            .flatten()
            .filter(|(l, _)| l == line)
            .map(|(_, q)| q)
            .sum();
        packed >= *quantity
    });
    (parcels.into_keys().collect(), covered)
}

/// The carrier's acceptance of each currently labelled tracking number: (number, accepted), by
/// the latch rule of `tracking::acceptance` over the carrier events recorded for that number.
///
/// `placed_ms` is when the order was placed (Shopify's `createdAt`): no event before it is the
/// parcel's (a recycled number's old history). None when the mirror does not say.
pub fn acceptances(
    shipment: &Shipment,
    placed_ms: Option<i64>,
) -> Vec<(String, Option<crate::tracking::acceptance::Acceptance>)> {
    let times = label_times(shipment);
    labels(shipment)
        .into_iter()
        .map(|(_, _, number, _)| {
            let events = carrier_events(shipment, &number);
            let label_ms = times.get(&number).copied();
            let accepted =
                crate::tracking::acceptance::accepted_at(&events, label_ms, placed_ms, false);
            (number, accepted)
        })
        .collect()
}

/// Whether every parcel has a label.
fn labelled(shipment: &Shipment, parcels: &[String]) -> bool {
    let mut named = Vec::new();
    let mut unnamed = 0usize;
    for e in &shipment.evidence {
        if let EvidenceKind::Supplier(ev) = &e.kind
            && let EventKind::LabelCreated { parcel_id, .. } = &ev.kind
        {
            match parcel_id {
                Some(p) => named.push(p.as_str()),
                None => unnamed += 1,
            }
        }
    }
    let missing = parcels
        .iter()
        .filter(|p| !named.contains(&p.as_str()))
        .count();
    !parcels.is_empty() && missing <= unnamed
}

/// The shipment's status: a function of its evidence and the open exceptions about it.
///
/// `placed_ms` is when the order was placed, as for [`acceptances`].
pub fn status(
    shipment: &Shipment,
    exceptions: &[Exception],
    placed_ms: Option<i64>,
) -> ShipmentStatus {
    if is_cancelled(shipment) {
        return ShipmentStatus::Cancelled;
    }
    if exceptions
        .iter()
        .any(|e| e.is_open() && e.subject.shipment_id.as_deref() == Some(&shipment.id))
    {
        return ShipmentStatus::Held;
    }
    // Intents that count: not refused, or refused and left to be fulfilled by hand.
    let intended: Vec<&str> = shipment
        .evidence
        .iter()
        .filter_map(|e| match &e.kind {
            EvidenceKind::FulfillmentIntended { key, .. }
                if !withdrawn(shipment, key)
                    && (!refused(shipment, key)
                        || refusal_decision(shipment, key) == Some(false)) =>
            {
                Some(key.as_str())
            }
            _ => None,
        })
        .collect();
    let created = |key: &str| {
        refused(shipment, key)
            || has(
                shipment,
                |k| matches!(k, EvidenceKind::FulfillmentCreated { key: k2, .. } if k2 == key),
            )
    };
    if !intended.is_empty() && intended.iter().all(|k| created(k)) {
        let done = intended_fulfilments(shipment);
        let all = shipment.lines.iter().all(|l| {
            let current = current_lines(shipment)
                .iter()
                .find(|(id, _)| *id == l.line_item_id)
                .map(|(_, q)| *q)
                .unwrap_or(0);
            done.get(&l.fulfillment_order_line_id).copied().unwrap_or(0) >= current
        });
        if all {
            return if delivered(shipment) {
                ShipmentStatus::Delivered
            } else {
                ShipmentStatus::Fulfilled
            };
        }
    }
    let (parcels, packed) = packing(shipment);
    if packed && labelled(shipment, &parcels) {
        let accepted = acceptances(shipment, placed_ms);
        if !accepted.is_empty() && accepted.iter().all(|(_, a)| a.is_some()) {
            return ShipmentStatus::Ready;
        }
        return ShipmentStatus::AwaitingAcceptance;
    }
    if packed {
        return ShipmentStatus::AwaitingLabel;
    }
    if check_passed(shipment) {
        return ShipmentStatus::AwaitingPacking;
    }
    if line_states(shipment)
        .iter()
        .all(|(_, s)| *s == LineState::Confirmed)
    {
        return ShipmentStatus::AwaitingCheck;
    }
    if is_delivered_to_supplier(shipment) {
        return ShipmentStatus::AwaitingConfirmation;
    }
    ShipmentStatus::AwaitingSubmission
}

#[cfg(test)]
pub(super) mod tests;
