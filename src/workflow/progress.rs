//! After the label: what the carrier does with the parcel, and what Shopify hears of it.
//!
//! - Timers (SPEC §7): a current label the carrier has not accepted N business days after it
//!   was created is a no-carrier-movement exception; a fulfilled parcel whose tracking stood
//!   still for M business days is a tracking-stalled exception. Both are pure functions of the
//!   evidence and the clock, so `settle` re-derives them like every other condition, and the
//!   case's wake time makes sure it is settled when a deadline passes without news.
//! - Progress (SPEC §4): once Shopify has a fulfillment of ours, the carrier's acceptance is
//!   posted as `CARRIER_PICKED_UP` and each later change of status as its
//!   `FulfillmentEventStatus`, never label statuses. A parcel labelled anew after it was
//!   fulfilled has its number replaced with `fulfillmentTrackingInfoUpdate`, once the carrier
//!   accepted the new number (and, after a reshipment, once the new goods passed a check).
//!
//! Every post is an intent recorded as evidence in the same write as the outbox effect, so a
//! replay or a crash never posts twice, and the timeline shows what Shopify was told.

use std::collections::BTreeSet;

use super::WorkflowSettings;
use super::derive::{self, Condition};
use super::effect::Action;
use super::model::{Decided, Decision, EvidenceKind, ExceptionKind, OrderCase, Shipment, Subject};
use super::plan::{Changes, Ctx};
use crate::store::StoreError;
use crate::suppliers::EventKind;
use crate::tracking::acceptance::{business_deadline_ms, last_movement, latest};
use crate::tracking::{Normalized, TrackingEvent};

/// The stream a fulfillment's events and tracking updates are sent in, in order.
pub fn fulfillment_stream(fulfillment_key: &str) -> String {
    format!("fulfillment:{fulfillment_key}")
}

/// The Shopify `FulfillmentEventStatus` a carrier status after acceptance is posted as. None:
/// not progress (label information, pre-advice, a status nobody can map).
pub fn shopify_status(status: &Normalized) -> Option<&'static str> {
    use crate::tracking::ExceptionKind as K;
    match status {
        Normalized::InTransit => Some("IN_TRANSIT"),
        Normalized::OutForDelivery => Some("OUT_FOR_DELIVERY"),
        Normalized::AvailableForPickup => Some("READY_FOR_PICKUP"),
        Normalized::AttemptFailed => Some("ATTEMPTED_DELIVERY"),
        Normalized::Delivered => Some("DELIVERED"),
        Normalized::Exception(K::Delayed | K::Customs) => Some("DELAYED"),
        Normalized::Exception(
            K::Lost | K::Damaged | K::Refused | K::Address | K::Cancelled | K::Disposed,
        )
        | Normalized::Returning
        | Normalized::Returned => Some("FAILURE"),
        Normalized::Exception(K::Other)
        | Normalized::NotFound
        | Normalized::InfoReceived
        | Normalized::Expired
        | Normalized::Unknown(_) => None,
    }
}

/// One tracking number that is overdue, or waiting for the label the owner asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overdue {
    pub kind: ExceptionKind,
    pub number: String,
    pub carrier: String,
    /// When the clock started: the label, the last movement, or the last chase.
    pub since_ms: i64,
    /// The owner asked for a new label or a reshipment, and it has not come yet.
    pub awaiting_label: bool,
}

/// The latest follow-up the owner decided for a number after `after_ms`: its action and time.
/// Only the decisions of `kind`'s exception count: a new label asked for because of a tracking
/// conflict does not stop the no-movement clock.
fn follow_up(
    shipment: &Shipment,
    kind: ExceptionKind,
    number: &str,
    after_ms: i64,
) -> Option<(String, i64)> {
    let decisions = kind.decisions();
    shipment
        .evidence
        .iter()
        .filter_map(|e| match &e.kind {
            EvidenceKind::ParcelFollowUp {
                action,
                tracking_number,
            } if tracking_number == number
                && e.at_ms >= after_ms
                && decisions.contains(&action.as_str()) =>
            {
                Some((action.clone(), e.at_ms))
            }
            _ => None,
        })
        .max_by_key(|(_, at)| *at)
}

/// The fulfillments of ours Shopify has, with the parcels they carry.
struct Fulfilled {
    key: String,
    fulfillment_id: String,
    parcels: Vec<String>,
    /// The numbers Shopify shows (as created, or as last updated).
    numbers: Vec<String>,
}

fn fulfilled(shipment: &Shipment) -> Vec<Fulfilled> {
    let mut out = Vec::new();
    for e in &shipment.evidence {
        let EvidenceKind::FulfillmentCreated {
            key,
            fulfillment_id,
        } = &e.kind
        else {
            continue;
        };
        let Some((parcels, numbers)) = shipment.evidence.iter().find_map(|i| match &i.kind {
            EvidenceKind::FulfillmentIntended {
                key: k,
                parcels,
                numbers,
                ..
            } if k == key => Some((parcels.clone(), numbers.clone())),
            _ => None,
        }) else {
            continue;
        };
        // The latest update that still stands (one refused and to be retried does not).
        let updated = shipment
            .evidence
            .iter()
            .filter_map(|u| match &u.kind {
                EvidenceKind::TrackingUpdateIntended {
                    key: update,
                    fulfillment,
                    numbers,
                    ..
                } if fulfillment == key && !retried(shipment, update) => Some(numbers.clone()),
                _ => None,
            })
            .next_back();
        out.push(Fulfilled {
            key: key.clone(),
            fulfillment_id: fulfillment_id.clone(),
            parcels,
            numbers: updated.unwrap_or(numbers),
        });
    }
    out
}

/// Whether Shopify refused an intent and the owner decided to try again.
fn retried(shipment: &Shipment, key: &str) -> bool {
    let refused = shipment
        .evidence
        .iter()
        .any(|e| matches!(&e.kind, EvidenceKind::FulfillmentRefused { key: k, .. } if k == key));
    refused
        && shipment.evidence.iter().any(|e| {
            matches!(&e.kind, EvidenceKind::FulfillmentRefusalDecided { key: k, retry: true } if k == key)
        })
}

/// Whether a refused intent still waits for the owner's decision.
fn refusal_undecided(shipment: &Shipment, key: &str) -> bool {
    derive::undecided_refusals(shipment)
        .iter()
        .any(|(k, _)| k == key)
}

/// The numbers that are overdue at `now_ms`, and the earliest deadline still ahead.
pub fn overdue(
    shipment: &Shipment,
    placed_ms: Option<i64>,
    now_ms: i64,
    settings: &WorkflowSettings,
) -> (Vec<Overdue>, Option<i64>) {
    if derive::is_cancelled(shipment) {
        return (Vec::new(), None);
    }
    let times = derive::label_times(shipment);
    let accepted: Vec<String> = derive::acceptances(shipment, placed_ms)
        .into_iter()
        .filter(|(_, a)| a.is_some())
        .map(|(n, _)| n)
        .collect();
    let fulfilled_parcels: BTreeSet<String> = fulfilled(shipment)
        .into_iter()
        .flat_map(|f| f.parcels)
        .collect();
    let mut out = Vec::new();
    let mut next: Option<i64> = None;
    let mut ahead = |at: i64| next = Some(next.map_or(at, |n: i64| n.min(at)));
    // Parcels sharing a waybill share its clock: each number once.
    let mut seen = BTreeSet::new();
    for (parcel, carrier, number, _) in derive::labels(shipment) {
        if !seen.insert(number.clone()) {
            continue;
        }
        let labelled = times.get(&number).copied().unwrap_or(shipment.created_ms);
        // The clock of a number starts at its label (not accepted yet) or its last movement
        // (fulfilled and not delivered); nothing else is timed.
        let (kind, start, days) = if !accepted.contains(&number) {
            (
                ExceptionKind::NoCarrierMovement,
                labelled,
                settings.no_acceptance_business_days,
            )
        } else if parcel
            .as_ref()
            .is_some_and(|p| fulfilled_parcels.contains(p))
        {
            let events = derive::carrier_events(shipment, &number);
            if latest(&events).is_some_and(|e| e.normalized.is_final()) {
                continue;
            }
            (
                ExceptionKind::TrackingStalled,
                last_movement(&events).map_or(labelled, |e| e.occurred_at.unix_ms),
                settings.stalled_business_days,
            )
        } else {
            // Accepted and not yet fulfilled: the gate's business, not a timer's.
            continue;
        };
        // A chase or a customer update starts the clock again; a new label or a reshipment
        // is waited for, untimed, until the parcel's label changes.
        let since = match follow_up(shipment, kind, &number, start) {
            // The owner gave the parcel up: nothing to wait for.
            Some((action, _)) if action == "cancel" => continue,
            Some((action, _)) if action == "new_label" || action == "reship" => {
                out.push(Overdue {
                    kind,
                    number,
                    carrier,
                    since_ms: start,
                    awaiting_label: true,
                });
                continue;
            }
            Some((_, at)) => at.max(start),
            None => start,
        };
        let deadline = business_deadline_ms(since, days);
        if now_ms >= deadline {
            out.push(Overdue {
                kind,
                number,
                carrier,
                since_ms: since,
                awaiting_label: false,
            });
        } else {
            ahead(deadline);
        }
    }
    (out, next)
}

/// The timers' conditions for a shipment: one exception per kind, naming every number in it.
/// Also the earliest deadline still ahead, for the case's wake time: both come from one pass
/// over the shipment's labels.
pub fn timers(
    shipment: &Shipment,
    placed_ms: Option<i64>,
    now_ms: i64,
    settings: &WorkflowSettings,
) -> (Vec<Condition>, Option<i64>) {
    let (overdue, next) = overdue(shipment, placed_ms, now_ms, settings);
    let mut out = Vec::new();
    for kind in [
        ExceptionKind::NoCarrierMovement,
        ExceptionKind::TrackingStalled,
    ] {
        let numbers: Vec<&Overdue> = overdue.iter().filter(|o| o.kind == kind).collect();
        if numbers.is_empty() {
            continue;
        }
        let parts: Vec<String> = numbers
            .iter()
            .map(|o| {
                let since = crate::order::Timestamp::from_unix_ms(o.since_ms).text;
                match (kind, o.awaiting_label) {
                    (_, true) => format!("{} ({}): waiting for the new label", o.number, o.carrier),
                    (ExceptionKind::NoCarrierMovement, false) => format!(
                        "{} ({}) labelled {since}, not accepted after {} business days",
                        o.number, o.carrier, settings.no_acceptance_business_days
                    ),
                    _ => format!(
                        "{} ({}) has not moved since {since} ({} business days)",
                        o.number, o.carrier, settings.stalled_business_days
                    ),
                }
            })
            .collect();
        let summary = match kind {
            ExceptionKind::NoCarrierMovement => {
                format!("no carrier movement: {}", parts.join("; "))
            }
            _ => format!("tracking stalled: {}", parts.join("; ")),
        };
        out.push(Condition {
            kind,
            subject: Subject {
                fulfillment_order_id: shipment.fulfillment_order_id.clone(),
                shipment_id: Some(shipment.id.clone()),
                line_item_id: None,
            },
            summary,
        });
    }
    (out, next)
}

/// When the case must be settled again without news: the earliest wait that runs out, or
/// `timers`, the earliest timer deadline of its shipments.
pub fn wake_at(case: &OrderCase, timers: Option<i64>) -> Option<i64> {
    case.open_exceptions()
        .filter_map(|e| match &e.decision {
            Some(Decided {
                decision: Decision::WaitUntil { day },
                ..
            }) => Some(day.start_ms()),
            _ => None,
        })
        .chain(timers)
        .min()
}

/// The numbers an exception's decision is about: those overdue (or awaiting a label) of its
/// kind on the shipment now.
pub fn numbers_of(
    shipment: &Shipment,
    placed_ms: Option<i64>,
    kind: ExceptionKind,
    now_ms: i64,
    settings: &WorkflowSettings,
) -> Vec<String> {
    overdue(shipment, placed_ms, now_ms, settings)
        .0
        .into_iter()
        .filter(|o| o.kind == kind)
        .map(|o| o.number)
        .collect()
}

/// Whether a check recorded after `after_ms` passed (or its failure was accepted).
fn checked_since(shipment: &Shipment, after_ms: i64) -> bool {
    let latest_check = shipment
        .evidence
        .iter()
        .filter(|e| {
            matches!(&e.kind, EvidenceKind::Supplier(ev) if matches!(ev.kind, EventKind::CheckReported { .. }))
        })
        .max_by_key(|e| (e.at_ms, e.id.clone()));
    latest_check.is_some_and(|c| c.at_ms >= after_ms)
        && !derive::passed_quantities(shipment).is_empty()
}

/// Posts what Shopify should hear about the shipment's fulfillments: new tracking numbers,
/// then carrier progress. Called by `settle` after the write-back.
pub fn report(
    case: &mut OrderCase,
    placed_ms: Option<i64>,
    ctx: &Ctx<'_>,
    changes: &mut Changes,
) -> Result<(), StoreError> {
    for index in 0..case.shipments.len() {
        update_tracking(case, index, placed_ms, ctx, changes)?;
        post_progress(case, index, placed_ms, ctx, changes)?;
    }
    Ok(())
}

/// A fulfilled parcel labelled anew gets its number replaced in Shopify, once the carrier
/// accepted the new number, and, when the goods were reshipped, once a check passed after the
/// reshipment was asked for.
fn update_tracking(
    case: &mut OrderCase,
    index: usize,
    placed_ms: Option<i64>,
    ctx: &Ctx<'_>,
    changes: &mut Changes,
) -> Result<(), StoreError> {
    let shipment = &case.shipments[index];
    if derive::is_cancelled(shipment) {
        return Ok(());
    }
    let accepted: Vec<String> = derive::acceptances(shipment, placed_ms)
        .into_iter()
        .filter(|(_, a)| a.is_some())
        .map(|(n, _)| n)
        .collect();
    let mut intents = Vec::new();
    for f in fulfilled(shipment) {
        let tracking = derive::tracking(shipment, &f.parcels);
        let now: BTreeSet<&str> = tracking.numbers.iter().map(String::as_str).collect();
        let shown: BTreeSet<&str> = f.numbers.iter().map(String::as_str).collect();
        if now.is_empty() || now == shown || !now.iter().all(|n| accepted.iter().any(|a| a == n)) {
            continue;
        }
        let reshipped = f
            .numbers
            .iter()
            .filter_map(|n| follow_up(shipment, ExceptionKind::TrackingStalled, n, i64::MIN))
            .filter(|(action, _)| action == "reship")
            .map(|(_, at)| at)
            .max();
        if reshipped.is_some_and(|at| !checked_since(shipment, at)) {
            continue;
        }
        let earlier: Vec<String> = shipment
            .evidence
            .iter()
            .filter_map(|e| match &e.kind {
                EvidenceKind::TrackingUpdateIntended {
                    key, fulfillment, ..
                } if *fulfillment == f.key => Some(key.clone()),
                _ => None,
            })
            .collect();
        if earlier.iter().any(|k| refusal_undecided(shipment, k)) {
            continue;
        }
        intents.push((format!("{}.t{}", f.key, earlier.len() + 1), f, tracking));
    }
    for (key, f, tracking) in intents {
        let shipment_id = case.shipments[index].id.clone();
        tracing::info!(shipment = %shipment_id, fulfillment = %f.fulfillment_id, key = %key,
            "a fulfilled parcel has a new number: tracking update intended");
        case.shipments[index].record(ctx.evidence(
            format!("{key}.intended"),
            EvidenceKind::TrackingUpdateIntended {
                key: key.clone(),
                fulfillment: f.key.clone(),
                fulfillment_id: f.fulfillment_id.clone(),
                numbers: tracking.numbers.clone(),
            },
        ));
        let effect = ctx.effect(
            case,
            key,
            fulfillment_stream(&f.key),
            Action::UpdateTracking {
                shipment_id,
                fulfillment_id: f.fulfillment_id,
                tracking_company: tracking.company,
                tracking_urls: tracking.urls,
                tracking_numbers: tracking.numbers,
                notify_customer: ctx.settings.notify_customer,
            },
        )?;
        changes.new_effects.push(effect);
    }
    Ok(())
}

/// The statuses to post for a fulfillment, in carrier time: its acceptance, then each change
/// of status after it. (status, happened at, carrier evidence id, message).
fn progress_of(
    shipment: &Shipment,
    numbers: &[String],
    placed_ms: Option<i64>,
) -> Vec<(&'static str, i64, String, Option<String>)> {
    let message = |e: &TrackingEvent| {
        Some(match &e.location {
            Some(place) => format!("{} ({place})", e.raw_text),
            None => e.raw_text.clone(),
        })
    };
    let times = derive::label_times(shipment);
    let acceptance = numbers
        .iter()
        .filter_map(|n| {
            let events = derive::carrier_events(shipment, n);
            crate::tracking::acceptance::accepted_at(
                &events,
                times.get(n).copied(),
                placed_ms,
                false,
            )
        })
        .min_by_key(|a| a.event.occurred_at.unix_ms);
    let Some(acceptance) = acceptance else {
        return Vec::new();
    };
    let accepted_ms = acceptance.event.occurred_at.unix_ms;
    let mut out = vec![(
        "CARRIER_PICKED_UP",
        accepted_ms,
        acceptance.event.event_id.clone(),
        message(&acceptance.event),
    )];
    let mut events: Vec<TrackingEvent> = numbers
        .iter()
        .flat_map(|n| derive::carrier_events(shipment, n))
        // The accepting event itself stays in: when it is a later physical event (the
        // acceptance scan was skipped), its own status follows the pickup, delivered say.
        .filter(|e| e.occurred_at.unix_ms >= accepted_ms)
        .collect();
    events.sort_by(|a, b| {
        (a.occurred_at.unix_ms, &a.event_id).cmp(&(b.occurred_at.unix_ms, &b.event_id))
    });
    // With several parcels, the fulfillment is delivered when its last parcel is.
    let delivered_at = numbers
        .iter()
        .map(|n| {
            derive::carrier_events(shipment, n)
                .iter()
                .filter(|e| e.normalized == Normalized::Delivered)
                .map(|e| e.occurred_at.unix_ms)
                .min()
        })
        .collect::<Option<Vec<i64>>>()
        .and_then(|times| times.into_iter().max());
    let mut last = "CARRIER_PICKED_UP";
    for e in events {
        let Some(status) = shopify_status(&e.normalized) else {
            continue;
        };
        // The acceptance already told Shopify the parcel is on its way.
        if status == last || (last == "CARRIER_PICKED_UP" && status == "IN_TRANSIT") {
            continue;
        }
        if status == "DELIVERED" && delivered_at != Some(e.occurred_at.unix_ms) {
            continue;
        }
        last = status;
        out.push((
            status,
            e.occurred_at.unix_ms,
            e.event_id.clone(),
            message(&e),
        ));
        // Delivered is the end of the story.
        if status == "DELIVERED" {
            break;
        }
    }
    out
}

/// The statuses of a fulfillment not posted yet, and how many were: those already intended are
/// left out, and so is what happened before the last one posted or before a `ProgressSkipped`
/// marker (history from before progress was posted).
#[allow(clippy::type_complexity)]
fn unposted(
    shipment: &Shipment,
    f: &Fulfilled,
    placed_ms: Option<i64>,
) -> (usize, Vec<(&'static str, i64, String, Option<String>)>) {
    let posted: Vec<(String, i64)> = shipment
        .evidence
        .iter()
        .filter_map(|e| match &e.kind {
            EvidenceKind::ProgressIntended {
                key,
                status,
                happened_ms,
                ..
            } if key.starts_with(&format!("{}.e", f.key)) => Some((status.clone(), *happened_ms)),
            _ => None,
        })
        .collect();
    // The marker's instant is already history: only what happened after it is news.
    let skipped = shipment.evidence.iter().filter_map(|e| match &e.kind {
        EvidenceKind::ProgressSkipped { key, until_ms } if *key == f.key => Some(until_ms + 1),
        _ => None,
    });
    let mut last_ms = posted
        .iter()
        .map(|(_, at)| *at)
        .chain(skipped)
        .max()
        .unwrap_or(i64::MIN);
    let mut out = Vec::new();
    for (status, at, event, message) in progress_of(shipment, &f.numbers, placed_ms) {
        if posted.iter().any(|(s, a)| s == status && *a == at) || at < last_ms {
            continue;
        }
        last_ms = at;
        out.push((status, at, event, message));
    }
    (posted.len(), out)
}

/// Posts each status of a fulfillment's parcels not posted yet. A status that turns up late
/// with a time before the last one posted is left out: Shopify would show the parcel going
/// back.
fn post_progress(
    case: &mut OrderCase,
    index: usize,
    placed_ms: Option<i64>,
    ctx: &Ctx<'_>,
    changes: &mut Changes,
) -> Result<(), StoreError> {
    let shipment = &case.shipments[index];
    let mut intents = Vec::new();
    for f in fulfilled(shipment) {
        let (already, statuses) = unposted(shipment, &f, placed_ms);
        for (n, (status, at, event, message)) in (already + 1..).zip(statuses) {
            intents.push((
                format!("{}.e{n}", f.key),
                f.key.clone(),
                f.fulfillment_id.clone(),
                status,
                at,
                event,
                message,
            ));
        }
    }
    for (key, fulfillment_key, fulfillment_id, status, at, event, message) in intents {
        let shipment_id = case.shipments[index].id.clone();
        case.shipments[index].record(ctx.evidence(
            format!("{key}.intended"),
            EvidenceKind::ProgressIntended {
                key: key.clone(),
                fulfillment_id: fulfillment_id.clone(),
                status: status.to_string(),
                happened_ms: at,
                event,
            },
        ));
        let effect = ctx.effect(
            case,
            key,
            fulfillment_stream(&fulfillment_key),
            Action::FulfillmentEvent {
                shipment_id,
                fulfillment_id,
                status: status.to_string(),
                happened_at: crate::order::Timestamp::from_unix_ms(at).text,
                message,
            },
        )?;
        changes.new_effects.push(effect);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
