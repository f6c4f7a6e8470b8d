//! Settling a case: bringing shipments, exceptions and intents in line with the order and the
//! evidence. Every change to a case ends here, so the rules live in one place:
//!
//! - Planning: every open fulfillment-order quantity is either in a live shipment, dropped by a
//!   decision, or the subject of an unmapped-SKU exception. Quantities that went down in Shopify
//!   are taken out of shipments; new ones go to the supplier their SKU routes to.
//! - Messages: a shipment whose lines differ from the last revision sent gets a new revision (or
//!   a cancellation when nothing is left); a cancelled order asks every supplier that may have
//!   the shipment to stop, and quietly supersedes submissions never sent.
//! - Exceptions: one open exception per problem the evidence shows (`derive::conditions`) and
//!   per unmapped line; problems that went away close theirs. Opening places the Shopify hold,
//!   closing releases it, both as intents.

use std::collections::BTreeMap;

use super::derive::{self, LineState};
use super::effect::{Action, Effect, EffectState};
use super::model::{
    Actor, Closed, Decided, Decision, Evidence, EvidenceKind, Exception, ExceptionKind, HoldRecord,
    HoldState, LineRule, OrderCase, Shipment, ShipmentLine, Source, Subject,
};
use super::{Routes, WorkflowSettings, gate, progress};
use crate::order::{
    FulfillmentOrder, FulfillmentOrderLine, FulfillmentOrderStatus, LineItem, OrderMirror,
};
use crate::store::{Store, StoreError};
use crate::suppliers::{MessageBody, MessageLine, SupplierMessage};

/// What settling produced besides the case itself.
#[derive(Debug, Default)]
pub struct Changes {
    pub new_effects: Vec<Effect>,
    pub updated_effects: Vec<Effect>,
}

/// What settling needs besides the case.
pub struct Ctx<'a> {
    pub store: &'a Store,
    pub routes: &'a dyn Routes,
    pub settings: &'a WorkflowSettings,
    pub now_ms: i64,
}

impl Ctx<'_> {
    pub(super) fn evidence(&self, id: String, kind: EvidenceKind) -> Evidence {
        Evidence {
            id,
            at_ms: self.now_ms,
            recorded_ms: self.now_ms,
            actor: Actor::System,
            source: Source::Workflow,
            kind,
        }
    }

    pub(super) fn effect(
        &self,
        case: &OrderCase,
        key: String,
        stream: String,
        action: Action,
    ) -> Result<Effect, StoreError> {
        Ok(Effect {
            id: self.store.next_effect_id()?,
            key,
            stream,
            shop: case.shop.clone(),
            order_gid: case.order_gid.clone(),
            action,
            state: EffectState::Pending,
            attempts: 0,
            next_attempt_ms: self.now_ms,
            created_ms: self.now_ms,
            last_error: None,
            maybe_delivered: false,
        })
    }

    /// The intent of a message to a shipment's supplier, keyed `key`, on the shipment's stream
    /// so it never overtakes what was sent before it.
    pub(super) fn to_supplier(
        &self,
        case: &OrderCase,
        shipment: &Shipment,
        key: String,
        body: MessageBody,
    ) -> Result<Effect, StoreError> {
        let message = SupplierMessage {
            key: key.clone(),
            shipment_id: shipment.id.clone(),
            sent_at: self.timestamp(),
            body,
        };
        self.effect(
            case,
            key,
            shipment_stream(&shipment.id),
            Action::Supplier {
                supplier: shipment.supplier.clone(),
                message,
            },
        )
    }

    fn timestamp(&self) -> String {
        crate::order::Timestamp::from_unix_ms(self.now_ms).text
    }
}

/// How often an order with a tracking conflict looks at the other order again.
const CONFLICT_RECHECK_MS: i64 = 60 * 60 * 1000;

/// The stream a shipment's messages are sent in.
pub fn shipment_stream(shipment_id: &str) -> String {
    format!("shipment:{shipment_id}")
}

/// The stream a fulfillment order's holds are placed and released in.
pub fn hold_stream(fulfillment_order_id: &str) -> String {
    format!("fo:{fulfillment_order_id}")
}

/// Whether planning may add quantities of this fulfillment order to shipments.
fn plannable(status: &FulfillmentOrderStatus) -> bool {
    matches!(
        status,
        FulfillmentOrderStatus::Open
            | FulfillmentOrderStatus::InProgress
            | FulfillmentOrderStatus::OnHold
    )
}

/// Settles a case; `order` is the mirror, when the order is mirrored.
pub fn settle(
    case: &mut OrderCase,
    order: Option<&OrderMirror>,
    ctx: &Ctx<'_>,
) -> Result<Changes, StoreError> {
    let mut changes = Changes::default();
    let mut unmapped = None;
    // A mirror that did not fit in one query lacks lines or fulfillment orders: planning on it
    // would take what is missing for removed. It is planned again once it is whole.
    if order.is_some_and(|o| o.truncated) {
        tracing::warn!(shop = %case.shop, order = %case.order_name,
            "the mirrored order is incomplete; planning waits for a complete fetch");
    }
    // The placing time holds even on an incomplete mirror: the timers and progress use it.
    let placed_ms = placed(order);
    let order = order.filter(|o| !o.truncated);
    if let Some(order) = order {
        case.order_name = order.name.clone();
        if order.is_cancelled() {
            cancel_all(case, ctx, &mut changes)?;
            unmapped = Some(Vec::new());
        } else {
            unmapped = Some(plan_lines(case, order, ctx, &mut changes)?);
        }
        case.planned_at_ms = order.updated_at.unix_ms;
    }
    sync_revisions(case, ctx, &mut changes)?;
    let mut conditions: Vec<derive::Condition> =
        case.shipments.iter().flat_map(derive::conditions).collect();
    let mut timers: Option<i64> = None;
    for shipment in &case.shipments {
        let (timed, next) = progress::timers(shipment, placed_ms, ctx.now_ms, ctx.settings);
        conditions.extend(timed);
        timers = timers.into_iter().chain(next).min();
    }
    if let Some(order) = order {
        conditions.extend(fulfilled_outside(case, order));
        let missing = address_missing(case, order, &conditions, ctx)?;
        conditions.extend(missing);
    }
    match unmapped {
        Some(found) => conditions.extend(found),
        // Without the order, unmapped lines cannot be re-examined: those open stay open.
        None => conditions.extend(
            case.open_exceptions()
                .filter(|e| e.kind == ExceptionKind::UnmappedSku)
                .map(|e| derive::Condition {
                    kind: e.kind,
                    subject: e.subject.clone(),
                    summary: e.summary.clone(),
                }),
        ),
    }
    let mut conflicted = Vec::new();
    for conflict in tracking_conflicts(case, ctx)? {
        if !conflicted.contains(&conflict.shipment_id) {
            conflicted.push(conflict.shipment_id);
            conditions.push(conflict.condition);
        }
    }
    let cancelled = order.is_some_and(|o| o.is_cancelled());
    reconcile_exceptions(case, conditions, cancelled, ctx, &mut changes)?;
    if let Some(order) = order {
        withdraw_shut(case, order, ctx, &mut changes)?;
        write_back(case, order, ctx, &mut changes)?;
    }
    progress::report(case, placed_ms, ctx, &mut changes)?;
    // The timers' deadlines do not move while settling: what settling records (intents) is no
    // label, acceptance or fulfillment.
    case.wake_at_ms = progress::wake_at(case, timers);
    // A conflict also ends when the other order's shipment is cancelled or delivered, which
    // nothing announces here: look again within the hour.
    if !conflicted.is_empty() {
        let again = ctx.now_ms + CONFLICT_RECHECK_MS;
        case.wake_at_ms = Some(case.wake_at_ms.map_or(again, |at| at.min(again)));
    }
    Ok(changes)
}

/// A tracking number a live shipment of this order shares with a live shipment of another
/// order: a reused or mistyped label. The carrier's scans cannot say whose parcel moved, so
/// neither is fulfilled on them (SPEC §7) until one of them gets a new label. One entry per
/// shared number; every entry of a shipment carries the same condition.
pub(crate) struct Conflict {
    pub shipment_id: String,
    pub number: String,
    pub condition: derive::Condition,
}

pub(crate) fn tracking_conflicts(
    case: &OrderCase,
    ctx: &Ctx<'_>,
) -> Result<Vec<Conflict>, StoreError> {
    let mut out = Vec::new();
    // A delivered shipment's number may be recycled by the carrier: it conflicts with nothing.
    let live = |s: &Shipment| !derive::is_cancelled(s) && !derive::delivered(s);
    for shipment in case.shipments.iter().filter(|s| live(s)) {
        let mut found: Vec<(String, String)> = Vec::new();
        let given_up = derive::given_up(shipment);
        for (_, _, number, _) in derive::labels(shipment)
            .into_iter()
            .filter(|(_, _, n, _)| !given_up.contains(n))
        {
            for other_id in ctx.store.shipments_with_tracking_number(&number)? {
                if case.shipment(&other_id).is_some() {
                    continue;
                }
                let Some(other_case) = ctx.store.case_of(&other_id)? else {
                    continue;
                };
                let shared = other_case.shipment(&other_id).is_some_and(|other| {
                    live(other)
                        && !derive::given_up(other).contains(&number)
                        && derive::labels(other)
                            .iter()
                            .any(|(_, _, n, _)| *n == number)
                });
                if shared {
                    found.push((number.clone(), other_case.order_name.clone()));
                }
            }
        }
        if found.is_empty() {
            continue;
        }
        // Parcels sharing one waybill name the number once each; the summary names it once.
        found.sort();
        found.dedup();
        let list = |pick: fn(&(String, String)) -> &str| {
            let mut names: Vec<&str> = Vec::new();
            for name in found.iter().map(pick) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            names.join(", ")
        };
        let summary = format!(
            "tracking number {} is also on order {}: ask for a new label",
            list(|(n, _)| n),
            list(|(_, o)| o)
        );
        for (number, _) in &found {
            out.push(Conflict {
                shipment_id: shipment.id.clone(),
                number: number.clone(),
                condition: derive::Condition {
                    kind: ExceptionKind::TrackingConflict,
                    subject: Subject {
                        fulfillment_order_id: shipment.fulfillment_order_id.clone(),
                        shipment_id: Some(shipment.id.clone()),
                        line_item_id: None,
                    },
                    summary: summary.clone(),
                },
            });
        }
    }
    Ok(out)
}

/// Shipments still to be shipped whose order has no address a supplier can ship to: an
/// address issue found by shipgate itself (the sender holds their submissions meanwhile). It
/// closes by itself once the owner completes the address in Shopify; `cancel` gives up the
/// lines. A shipment the supplier already reported an address issue for keeps that one.
fn address_missing(
    case: &OrderCase,
    order: &OrderMirror,
    found: &[derive::Condition],
    ctx: &Ctx<'_>,
) -> Result<Vec<derive::Condition>, StoreError> {
    let Some(why) = crate::order::Address::unusable(order.shipping_address.as_ref()) else {
        return Ok(Vec::new());
    };
    // Only what no supplier may have yet: one that has the shipment has the address it was
    // sent (the mirror may lose it later, to an erasure), and a cancellation is its own
    // exception.
    let mut waiting = Vec::new();
    for s in &case.shipments {
        let asked_to_stop = s
            .evidence
            .iter()
            .any(|e| matches!(e.kind, EvidenceKind::CancelRequested { .. }));
        if !derive::is_cancelled(s) && !asked_to_stop && !may_have_reached(s, ctx)? {
            waiting.push(s);
        }
    }
    Ok(waiting
        .into_iter()
        .filter(|s| {
            !found.iter().any(|c| {
                c.kind == ExceptionKind::AddressIssue
                    && c.subject.shipment_id.as_deref() == Some(&s.id)
            })
        })
        .map(|s| derive::Condition {
            kind: ExceptionKind::AddressIssue,
            subject: Subject {
                fulfillment_order_id: s.fulfillment_order_id.clone(),
                shipment_id: Some(s.id.clone()),
                line_item_id: None,
            },
            summary: format!(
                "{why}: nothing goes to {} until it is completed in Shopify (the exception then \
                 closes by itself), or cancel",
                s.supplier
            ),
        })
        .collect())
}

/// Fulfillments in Shopify that shipgate did not make, on a fulfillment order that a live,
/// not yet fulfilled shipment of ours covers: someone fulfilled it by hand or with another app.
/// Writing back as well would fulfil it twice, so it is an exception instead.
fn fulfilled_outside(case: &OrderCase, order: &OrderMirror) -> Vec<derive::Condition> {
    let ours: Vec<&str> = case
        .shipments
        .iter()
        .flat_map(|s| &s.evidence)
        .filter_map(|e| match &e.kind {
            EvidenceKind::FulfillmentCreated { fulfillment_id, .. } => {
                Some(fulfillment_id.as_str())
            }
            _ => None,
        })
        .collect();
    // One of ours whose outcome is not recorded yet (its answer on the way, or lost) carries
    // our tracking numbers: that is how Shopify's copy is told apart, as the outbox does.
    let our_numbers: Vec<String> = case
        .shipments
        .iter()
        .flat_map(derive::labels)
        .map(|(_, _, number, _)| number)
        .collect();
    let outside: Vec<&str> = order
        .fulfillments
        .iter()
        .filter(|f| {
            !ours.contains(&f.id.as_str())
                && !f
                    .tracking
                    .iter()
                    .any(|t| t.number.as_ref().is_some_and(|n| our_numbers.contains(n)))
        })
        .map(|f| f.id.as_str())
        .collect();
    if outside.is_empty() {
        return Vec::new();
    }
    case.shipments
        .iter()
        .filter(|s| {
            !derive::is_cancelled(s)
                && !matches!(
                    derive::status(s, &[], placed(Some(order))),
                    derive::ShipmentStatus::Fulfilled | derive::ShipmentStatus::Delivered
                )
                && !s.evidence.iter().any(|e| {
                    matches!(&e.kind, EvidenceKind::Abandoned { reason } if reason.contains("fulfilled outside"))
                })
                // Covered by the fulfillment: Shopify no longer has the shipment's quantities open.
                && order
                    .fulfillment_orders
                    .iter()
                    .find(|f| f.id == s.fulfillment_order_id)
                    .is_none_or(|fo| {
                        s.lines.iter().all(|l| {
                            fo.lines
                                .iter()
                                .find(|fl| fl.id == l.fulfillment_order_line_id)
                                .is_none_or(|fl| fl.remaining_quantity == 0)
                        })
                    })
        })
        .map(|s| derive::Condition {
            kind: ExceptionKind::FulfilledOutside,
            subject: Subject {
                fulfillment_order_id: s.fulfillment_order_id.clone(),
                shipment_id: Some(s.id.clone()),
                line_item_id: None,
            },
            summary: format!(
                "Shopify shows the order fulfilled outside shipgate ({}) while {} still has the shipment",
                outside.join(", "),
                s.supplier
            ),
        })
        .collect()
}

/// When the order was placed, in Unix ms, from the mirror: carrier events before it are not
/// the parcel's (derive::acceptances).
pub fn placed(order: Option<&OrderMirror>) -> Option<i64> {
    order.and_then(|o| o.created_at.as_ref()).map(|t| t.unix_ms)
}

/// What the gate sees of one shipment: the facts derived from its evidence and the mirror.
fn gate_input(case: &OrderCase, shipment: &Shipment, order: &OrderMirror) -> gate::GateInput {
    let current = derive::current_lines(shipment);
    let lines = shipment
        .lines
        .iter()
        .filter_map(|l| {
            current
                .iter()
                .find(|(id, _)| *id == l.line_item_id)
                .map(|(_, q)| gate::GateLine {
                    fulfillment_order_line_id: l.fulfillment_order_line_id.clone(),
                    line_item_id: l.line_item_id.clone(),
                    quantity: *q,
                })
        })
        .collect();
    let accepted: Vec<String> = derive::acceptances(shipment, placed(Some(order)))
        .into_iter()
        .filter(|(_, a)| a.is_some())
        .map(|(number, _)| number)
        .collect();
    let labels = derive::labels(shipment);
    let parcels = derive::parcels(shipment)
        .into_iter()
        .map(|(parcel_id, lines)| gate::GateParcel {
            accepted: labels.iter().any(|(p, _, number, _)| {
                p.as_deref() == Some(parcel_id.as_str()) && accepted.contains(number)
            }),
            parcel_id,
            lines,
        })
        .collect();
    let intended = derive::intended_fulfilments(shipment);
    let fulfilled = shipment
        .lines
        .iter()
        .filter_map(|l| {
            intended
                .get(&l.fulfillment_order_line_id)
                .map(|q| (l.line_item_id.clone(), *q))
        })
        .collect();
    let fulfillment_order = order
        .fulfillment_orders
        .iter()
        .find(|f| f.id == shipment.fulfillment_order_id)
        .map(|f| gate::GateFulfillmentOrder {
            id: f.id.clone(),
            location_id: f.location_id.clone(),
            open: matches!(
                f.status,
                FulfillmentOrderStatus::Open | FulfillmentOrderStatus::InProgress
            ),
            held: !f.holds.is_empty() || f.status == FulfillmentOrderStatus::OnHold,
            remaining: f
                .lines
                .iter()
                .map(|l| (l.id.clone(), l.remaining_quantity))
                .collect(),
        });
    gate::GateInput {
        lines,
        passed: derive::passed_quantities(shipment),
        parcels,
        fulfilled,
        fulfilled_parcels: derive::intended_parcels(shipment),
        open_exception: case
            .exceptions
            .iter()
            .any(|e| e.is_open() && e.subject.shipment_id.as_deref() == Some(&shipment.id)),
        order_cancelled: order.is_cancelled(),
        fulfillment_order,
    }
}

/// The shipments whose gate is open on the order as it stands, with what it would let through:
/// what `settle` would write back now. Reconciliation reads it to find cases that were not
/// settled since the mirror last changed; it changes nothing.
pub fn open_gates(case: &OrderCase, order: &OrderMirror) -> Vec<(String, gate::GateDecision)> {
    if order.truncated {
        return Vec::new();
    }
    case.shipments
        .iter()
        .filter(|s| !derive::is_cancelled(s))
        .filter_map(|s| {
            gate::fulfillable(&gate_input(case, s, order))
                .ok()
                .map(|d| (s.id.clone(), d))
        })
        .collect()
}

/// An intended fulfillment still waiting in the outbox goes out only while its gate stays open
/// (invariant 3): once an exception opened, the order was cancelled, or the fulfillment order
/// was held or closed, the intent is withdrawn. Its effect is superseded and its quantities stop
/// counting as intended, so the gate lets them through again when it reopens. An effect that
/// may have gone out already is left to the sender, which reads Shopify first and asks
/// `fulfillment_shut` again before it sends once more.
fn withdraw_shut(
    case: &mut OrderCase,
    order: &OrderMirror,
    ctx: &Ctx<'_>,
    changes: &mut Changes,
) -> Result<(), StoreError> {
    for index in 0..case.shipments.len() {
        let shipment = &case.shipments[index];
        let unsent = derive::unsent_intents(shipment);
        if unsent.is_empty() {
            continue;
        }
        let Some(shut) = gate::shut(&gate_input(case, shipment, order)) else {
            continue;
        };
        for key in unsent {
            let withdrawn = supersede_if_unsent(&key, shut.reason(), ctx, changes)?;
            if withdrawn {
                tracing::info!(shipment = %case.shipments[index].id, order = %case.order_name,
                    key = %key, reason = shut.reason(), "the gate closed: fulfillment withdrawn");
                case.shipments[index].record(ctx.evidence(
                    format!("{key}.withdrawn"),
                    EvidenceKind::FulfillmentWithdrawn {
                        key,
                        reason: shut.reason().to_string(),
                    },
                ));
            }
        }
    }
    Ok(())
}

/// Whether the gate of the shipment that intended fulfillment `key` is shut now, on the case
/// and mirror as stored: the sender asks before it sends one whose earlier attempt did not
/// arrive. None when it is open (or the shipment is unknown).
pub fn fulfillment_shut(
    case: &OrderCase,
    order: &OrderMirror,
    shipment_id: &str,
) -> Option<gate::Closed> {
    let shipment = case.shipments.iter().find(|s| s.id == shipment_id)?;
    gate::shut(&gate_input(case, shipment, order))
}

/// The write-back (invariant 3): for every shipment, what the gate lets through becomes a
/// `fulfillmentCreate` intent with the tracking of the accepted parcels. The intent is recorded
/// on the shipment too, so the same quantities never pass the gate twice.
fn write_back(
    case: &mut OrderCase,
    order: &OrderMirror,
    ctx: &Ctx<'_>,
    changes: &mut Changes,
) -> Result<(), StoreError> {
    for index in 0..case.shipments.len() {
        let shipment = &case.shipments[index];
        if derive::is_cancelled(shipment) {
            continue;
        }
        let Ok(decision) = gate::fulfillable(&gate_input(case, shipment, order)) else {
            continue;
        };
        let n = shipment
            .evidence
            .iter()
            .filter(|e| matches!(e.kind, EvidenceKind::FulfillmentIntended { .. }))
            .count()
            + 1;
        let key = format!("{}.f{n}", shipment.id);
        let tracking = derive::tracking(shipment, &decision.parcels);
        let shipment_id = shipment.id.clone();
        tracing::info!(shipment = %shipment_id, order = %case.order_name, key = %key,
            "the gate opened: fulfillment intended");
        case.shipments[index].record(ctx.evidence(
            format!("{key}.intended"),
            EvidenceKind::FulfillmentIntended {
                key: key.clone(),
                fulfillment_order_id: decision.fulfillment_order_id.clone(),
                lines: decision.lines.clone(),
                parcels: decision.parcels.clone(),
                numbers: tracking.numbers.clone(),
            },
        ));
        let effect = ctx.effect(
            case,
            key,
            hold_stream(&decision.fulfillment_order_id),
            Action::CreateFulfillment {
                shipment_id,
                fulfillment_order_id: decision.fulfillment_order_id,
                lines: decision.lines,
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

/// The live shipments carrying an order line: (shipment index, current quantity).
fn carried(case: &OrderCase, line_item_id: &str) -> Vec<(usize, i64)> {
    let mut out = Vec::new();
    for (i, shipment) in case.shipments.iter().enumerate() {
        if derive::is_cancelled(shipment) {
            continue;
        }
        if let Some((_, q)) = derive::current_lines(shipment)
            .into_iter()
            .find(|(l, _)| l == line_item_id)
        {
            out.push((i, q));
        }
    }
    out
}

/// How much of an order line decisions dropped and Shopify still counts: a drop stops counting
/// for the units the owner has since refunded (the line's current quantity fell).
fn dropped(case: &OrderCase, line_item_id: &str, current_quantity: i64) -> i64 {
    case.line_rules
        .iter()
        .filter(|(l, _)| l == line_item_id)
        .map(|(_, r)| match r {
            LineRule::Drop {
                quantity,
                current_at_decision,
            } => {
                let refunded = (current_at_decision - current_quantity).max(0);
                (quantity - refunded).max(0)
            }
            LineRule::RouteTo { .. } => 0,
        })
        .sum()
}

/// The supplier an operator routed the line to, unless that supplier has since been tried.
fn routed_to(case: &OrderCase, line_item_id: &str, tried: &[String]) -> Option<String> {
    case.line_rules.iter().rev().find_map(|(l, r)| match r {
        LineRule::RouteTo { supplier } if l == line_item_id && !tried.contains(supplier) => {
            Some(supplier.clone())
        }
        _ => None,
    })
}

fn tried(case: &OrderCase, line_item_id: &str) -> Vec<String> {
    case.tried
        .iter()
        .filter(|(l, _)| l == line_item_id)
        .map(|(_, s)| s.clone())
        .collect()
}

/// The quantity of an order line that Shopify still has open to fulfil, and the places it is
/// open at that planning may use (fulfillment orders not held by someone else).
fn open_quantity<'o>(
    order: &'o OrderMirror,
    line_item_id: &str,
) -> (i64, Vec<(&'o FulfillmentOrder, &'o FulfillmentOrderLine)>) {
    let mut total = 0;
    let mut usable = Vec::new();
    for fo in order
        .fulfillment_orders
        .iter()
        .filter(|f| plannable(&f.status))
    {
        for line in fo
            .lines
            .iter()
            .filter(|l| l.line_item_id == line_item_id && l.remaining_quantity > 0)
        {
            total += line.remaining_quantity;
            // Someone else's hold (a fraud check, a payment hold) means: do not ship yet.
            if !fo.holds.iter().any(|h| !h.held_by_us) {
                usable.push((fo, line));
            }
        }
    }
    (total, usable)
}

/// Plans the order's open quantities; returns the unmapped-SKU problems.
///
/// Quantities are kept per order line. Shipments shrink only when the line's current quantity
/// falls (an edit, a removal, a refund), newest shipment first; a fulfillment order closing
/// (fulfilled by hand, moved, merged) never cancels anything at a supplier. New shipments take
/// what Shopify still has open and no shipment or decision covers.
fn plan_lines(
    case: &mut OrderCase,
    order: &OrderMirror,
    ctx: &Ctx<'_>,
    changes: &mut Changes,
) -> Result<Vec<derive::Condition>, StoreError> {
    let mut unmapped = Vec::new();
    let mut new_shipments: BTreeMap<(String, String), Vec<ShipmentLine>> = BTreeMap::new();
    for item in order.line_items.iter().filter(|i| i.requires_shipping) {
        let current = item.current_quantity.max(0);
        let carriers = carried(case, &item.id);
        let mut in_shipments: i64 = carriers.iter().map(|(_, q)| q).sum();
        let mut excess = in_shipments - current;
        for (index, quantity) in carriers.iter().rev() {
            if excess <= 0 {
                break;
            }
            let cut = excess.min(*quantity);
            let id = case.shipments[*index].id.clone();
            let why = "quantity reduced in Shopify";
            reduce(case, &id, &item.id, quantity - cut, why, ctx);
            excess -= cut;
            in_shipments -= cut;
        }
        let (open, usable) = open_quantity(order, &item.id);
        let mut uncovered = open - in_shipments - dropped(case, &item.id, current);
        if uncovered <= 0 {
            continue;
        }
        if usable.is_empty() {
            // Held by someone else: nothing is planned, and an unmapped line stays as it is
            // rather than closing and reopening with the other app's hold.
            unmapped.extend(
                case.open_exceptions()
                    .filter(|e| {
                        e.kind == ExceptionKind::UnmappedSku
                            && e.subject.line_item_id.as_deref() == Some(item.id.as_str())
                    })
                    .map(|e| derive::Condition {
                        kind: e.kind,
                        subject: e.subject.clone(),
                        summary: e.summary.clone(),
                    }),
            );
            continue;
        }
        let sku = item.sku.clone().filter(|s| !s.trim().is_empty());
        let already = tried(case, &item.id);
        let supplier = routed_to(case, &item.id, &already).or_else(|| {
            ctx.routes
                .chain(sku.as_deref())
                .into_iter()
                .find(|s| !already.contains(s))
        });
        let Some(supplier) = supplier else {
            let summary = match (&sku, already.is_empty()) {
                (None, _) => format!("line {} has no SKU, so no supplier can be chosen", item.id),
                (Some(sku), true) => format!("no supplier route matches SKU {sku}"),
                (Some(sku), false) => format!(
                    "no supplier left for SKU {sku} (tried {})",
                    already.join(", ")
                ),
            };
            unmapped.push(derive::Condition {
                kind: ExceptionKind::UnmappedSku,
                subject: Subject {
                    fulfillment_order_id: usable[0].0.id.clone(),
                    shipment_id: None,
                    line_item_id: Some(item.id.clone()),
                },
                summary,
            });
            continue;
        };
        // The open quantity may sit on several fulfillment orders (a split): one shipment each.
        for (fo, fo_line) in usable {
            if uncovered <= 0 {
                break;
            }
            let quantity = uncovered.min(fo_line.remaining_quantity);
            uncovered -= quantity;
            new_shipments
                .entry((supplier.clone(), fo.id.clone()))
                .or_default()
                .push(ShipmentLine {
                    fulfillment_order_line_id: fo_line.id.clone(),
                    line_item_id: item.id.clone(),
                    sku: sku.clone().unwrap_or_default(),
                    variant_title: item.variant_title.clone(),
                    quantity,
                });
        }
    }
    for ((supplier, fo_id), lines) in new_shipments {
        let id = ctx.store.next_id("SG")?;
        let key = format!("{id}.r1");
        let quantities = lines
            .iter()
            .map(|l| (l.line_item_id.clone(), l.quantity))
            .collect();
        let mut shipment = Shipment {
            id: id.clone(),
            supplier: supplier.clone(),
            fulfillment_order_id: fo_id,
            lines,
            created_ms: ctx.now_ms,
            evidence: Vec::new(),
        };
        shipment.record(ctx.evidence(
            format!("{key}.intended"),
            EvidenceKind::SubmissionIntended {
                revision: 1,
                key: key.clone(),
                lines: quantities,
            },
        ));
        let body = submission(case, &shipment, 1);
        changes
            .new_effects
            .push(ctx.to_supplier(case, &shipment, key, body)?);
        case.shipments.push(shipment);
    }
    Ok(unmapped)
}

/// Sets a shipment line's quantity (evidence, so the history stays).
fn reduce(case: &mut OrderCase, shipment_id: &str, line: &str, to: i64, why: &str, ctx: &Ctx<'_>) {
    let Some(shipment) = case.shipment_mut(shipment_id) else {
        return;
    };
    let n = shipment.evidence.len();
    shipment.record(ctx.evidence(
        // Zero-padded, so that two changes in one millisecond sort in the order they were made.
        format!("change.{n:06}"),
        EvidenceKind::LineChanged {
            line_item_id: line.to_string(),
            quantity: to,
            reason: why.to_string(),
        },
    ));
}

/// The body of a submission for a revision: every planned line with its current quantity (0 for
/// lines taken out). The address is filled in when the message is sent, from the mirror, so
/// that customer data is never copied into the outbox and an erasure reaches it.
fn submission(case: &OrderCase, shipment: &Shipment, revision: u32) -> MessageBody {
    let current = derive::current_lines(shipment);
    MessageBody::Submission {
        revision,
        shop: case.shop.clone(),
        order_name: case.order_name.clone(),
        lines: shipment
            .lines
            .iter()
            .map(|l| MessageLine {
                line_id: l.line_item_id.clone(),
                sku: l.sku.clone(),
                variant_title: l.variant_title.clone(),
                quantity: current
                    .iter()
                    .find(|(id, _)| *id == l.line_item_id)
                    .map(|(_, q)| *q)
                    .unwrap_or(0),
            })
            .collect(),
        ship_to: None,
    }
}

/// Whether the supplier may have any revision of the shipment: delivered, or an attempt whose
/// outcome is unknown.
fn may_have_reached(shipment: &Shipment, ctx: &Ctx<'_>) -> Result<bool, StoreError> {
    if derive::is_delivered_to_supplier(shipment) {
        return Ok(true);
    }
    for revision in 1..=derive::revision(shipment) {
        if let Some(effect) = ctx
            .store
            .effect_by_key(&format!("{}.r{revision}", shipment.id))?
            && (effect.maybe_delivered || matches!(effect.state, EffectState::Done { .. }))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Supersedes every pending, never-attempted message of a shipment.
fn supersede_unsent(
    shipment: &Shipment,
    reason: &str,
    ctx: &Ctx<'_>,
    changes: &mut Changes,
) -> Result<(), StoreError> {
    for revision in 1..=derive::revision(shipment) {
        supersede_if_unsent(
            &format!("{}.r{revision}", shipment.id),
            reason,
            ctx,
            changes,
        )?;
    }
    Ok(())
}

/// Supersedes the effect `key` if it never left: recorded in this pass, or pending and not
/// marked. An attempt known not to have arrived (refused connection, 503) leaves the effect
/// unmarked: it is as unsent as one never tried. The sender marks under the case lock this runs
/// under, so a mark cannot slip in between. Says whether it superseded it.
fn supersede_if_unsent(
    key: &str,
    reason: &str,
    ctx: &Ctx<'_>,
    changes: &mut Changes,
) -> Result<bool, StoreError> {
    let superseded = EffectState::Superseded {
        at_ms: ctx.now_ms,
        reason: reason.to_string(),
    };
    if let Some(effect) = changes.new_effects.iter_mut().find(|e| e.key == key) {
        effect.state = superseded;
        return Ok(true);
    }
    match ctx.store.effect_by_key(key)? {
        Some(mut effect) if effect.is_pending() && !effect.maybe_delivered => {
            effect.state = superseded;
            changes.updated_effects.push(effect);
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Asks the supplier of a shipment to stop: the request as evidence, the message as an intent.
fn request_cancel(
    case: &mut OrderCase,
    index: usize,
    reason: &str,
    ctx: &Ctx<'_>,
    changes: &mut Changes,
) -> Result<(), StoreError> {
    // Revisions not sent yet need not go out before the stop.
    supersede_unsent(
        &case.shipments[index].clone(),
        "the supplier is asked to stop",
        ctx,
        changes,
    )?;
    let key = format!("{}.cancel", case.shipments[index].id);
    case.shipments[index].record(ctx.evidence(
        format!("{key}.requested"),
        EvidenceKind::CancelRequested {
            reason: reason.to_string(),
        },
    ));
    let body = MessageBody::Cancellation {
        reason: reason.to_string(),
    };
    changes
        .new_effects
        .push(ctx.to_supplier(case, &case.shipments[index], key, body)?);
    Ok(())
}

/// The order was cancelled in Shopify: stop every shipment.
fn cancel_all(
    case: &mut OrderCase,
    ctx: &Ctx<'_>,
    changes: &mut Changes,
) -> Result<(), StoreError> {
    for index in 0..case.shipments.len() {
        let shipment = case.shipments[index].clone();
        if derive::is_cancelled(&shipment)
            || shipment
                .evidence
                .iter()
                .any(|e| matches!(e.kind, EvidenceKind::CancelRequested { .. }))
        {
            continue;
        }
        if derive::is_refused(&shipment) {
            // The supplier refused it: there is nothing to stop and nobody to confirm.
            for (line, _) in derive::current_lines(&shipment) {
                reduce(
                    case,
                    &shipment.id,
                    &line,
                    0,
                    "order cancelled in Shopify",
                    ctx,
                );
            }
        } else if may_have_reached(&shipment, ctx)? {
            request_cancel(case, index, "order cancelled in Shopify", ctx, changes)?;
        } else {
            supersede_unsent(
                &shipment,
                "order cancelled before it was sent",
                ctx,
                changes,
            )?;
            for (line, _) in derive::current_lines(&shipment) {
                reduce(
                    case,
                    &shipment.id,
                    &line,
                    0,
                    "order cancelled before it was sent",
                    ctx,
                );
            }
        }
    }
    Ok(())
}

/// The lines the latest intended revision asked for.
fn last_intended(shipment: &Shipment) -> Option<(u32, Vec<(String, i64)>)> {
    shipment
        .evidence
        .iter()
        .filter_map(|e| match &e.kind {
            EvidenceKind::SubmissionIntended {
                revision, lines, ..
            } => Some((*revision, lines.clone())),
            _ => None,
        })
        .max_by_key(|(r, _)| *r)
}

/// Sends a new revision (or a cancellation) for every shipment whose lines changed since the
/// last revision.
fn sync_revisions(
    case: &mut OrderCase,
    ctx: &Ctx<'_>,
    changes: &mut Changes,
) -> Result<(), StoreError> {
    for index in 0..case.shipments.len() {
        let shipment = case.shipments[index].clone();
        let Some((revision, asked)) = last_intended(&shipment) else {
            continue;
        };
        let current = derive::current_lines(&shipment);
        if current == asked && !derive::readdressed(&shipment) {
            continue;
        }
        let refused = derive::is_refused(&shipment);
        let cancel_requested = shipment
            .evidence
            .iter()
            .any(|e| matches!(e.kind, EvidenceKind::CancelRequested { .. }));
        if cancel_requested {
            continue;
        }
        let reached = may_have_reached(&shipment, ctx)?;
        if current.is_empty() {
            // Nothing left to ship. A supplier that may have it is told to stop, unless it
            // refused the shipment anyway.
            supersede_unsent(&shipment, "no lines left", ctx, changes)?;
            if reached && !refused {
                let reason = "every line was removed or moved to another supplier";
                request_cancel(case, index, reason, ctx, changes)?;
            }
            continue;
        }
        if refused {
            continue;
        }
        if !reached {
            // The supplier never saw an earlier revision: that one need not go out at all.
            supersede_unsent(&shipment, "replaced by a newer revision", ctx, changes)?;
        }
        let next = revision + 1;
        let key = format!("{}.r{next}", shipment.id);
        case.shipments[index].record(ctx.evidence(
            format!("{key}.intended"),
            EvidenceKind::SubmissionIntended {
                revision: next,
                key: key.clone(),
                lines: current,
            },
        ));
        let body = submission(case, &case.shipments[index], next);
        changes
            .new_effects
            .push(ctx.to_supplier(case, &shipment, key, body)?);
    }
    Ok(())
}

/// Opens an exception per new problem and closes those whose problem went away.
fn reconcile_exceptions(
    case: &mut OrderCase,
    conditions: Vec<derive::Condition>,
    order_cancelled: bool,
    ctx: &Ctx<'_>,
    changes: &mut Changes,
) -> Result<(), StoreError> {
    // A wait that ran out while the problem remains asks for a new decision.
    for exception in case.exceptions.iter_mut().filter(|e| e.is_open()) {
        if let Some(Decided {
            decision: Decision::WaitUntil { day },
            ..
        }) = &exception.decision
            && ctx.now_ms >= day.start_ms()
        {
            let expired = exception.decision.take().expect("matched above");
            exception.past_decisions.push(expired);
        }
    }
    for condition in &conditions {
        let existing = case
            .exceptions
            .iter_mut()
            .find(|e| e.is_open() && e.kind == condition.kind && e.subject == condition.subject);
        if let Some(existing) = existing {
            existing.summary = condition.summary.clone();
            continue;
        }
        let id = ctx.store.next_id("EX")?;
        let hold = match condition.kind.hold_reason() {
            Some(reason) if ctx.settings.hold_on_exceptions && !order_cancelled => {
                let handle = format!("shipgate-{id}");
                let fo = condition.subject.fulfillment_order_id.clone();
                changes.new_effects.push(ctx.effect(
                    case,
                    format!("{id}.hold"),
                    hold_stream(&fo),
                    Action::PlaceHold {
                        fulfillment_order_id: fo.clone(),
                        handle: handle.clone(),
                        reason: reason.to_string(),
                        notes: format!("shipgate {id}: {}", condition.summary),
                        exception_id: id.clone(),
                    },
                )?);
                Some(HoldRecord {
                    fulfillment_order_id: fo,
                    handle,
                    reason: reason.to_string(),
                    state: HoldState::Requested,
                })
            }
            _ => None,
        };
        tracing::info!(shop = %case.shop, order = %case.order_name, exception = %id,
            kind = condition.kind.name(), "exception opened");
        case.exceptions.push(Exception {
            id,
            kind: condition.kind,
            subject: condition.subject.clone(),
            summary: condition.summary.clone(),
            opened_ms: ctx.now_ms,
            opened_by: Actor::System,
            decision: None,
            past_decisions: Vec::new(),
            closed: None,
            hold,
        });
    }
    let mut releases = Vec::new();
    for exception in case.exceptions.iter_mut().filter(|e| e.is_open()) {
        let holds = conditions
            .iter()
            .any(|c| c.kind == exception.kind && c.subject == exception.subject);
        if holds {
            continue;
        }
        let (by, reason) = match &exception.decision {
            Some(d) => (d.by.clone(), format!("decided: {}", d.decision.name())),
            None => (
                Actor::System,
                "resolved: the problem is gone (a later report or change in Shopify)".to_string(),
            ),
        };
        tracing::info!(shop = %case.shop, order = %case.order_name, exception = %exception.id,
            kind = exception.kind.name(), %reason, "exception closed");
        exception.closed = Some(Closed {
            at_ms: ctx.now_ms,
            by,
            reason,
        });
        if let Some(hold) = &mut exception.hold {
            let hold_id = match &hold.state {
                HoldState::Placed { hold_id } => Some(hold_id.clone()),
                _ => None,
            };
            // A hold never sent need not be placed and released (Shopify may tell the merchant
            // about both): it is superseded instead. One that may have gone out is released.
            if hold.state == HoldState::Requested {
                let key = format!("{}.hold", exception.id);
                let superseded = match changes.new_effects.iter_mut().find(|e| e.key == key) {
                    Some(effect) => {
                        effect.state = EffectState::Superseded {
                            at_ms: ctx.now_ms,
                            reason: "the exception closed first".into(),
                        };
                        true
                    }
                    None => match ctx.store.effect_by_key(&key)? {
                        Some(mut effect) if effect.is_pending() && !effect.maybe_delivered => {
                            effect.state = EffectState::Superseded {
                                at_ms: ctx.now_ms,
                                reason: "the exception closed first".into(),
                            };
                            changes.updated_effects.push(effect);
                            true
                        }
                        _ => false,
                    },
                };
                if superseded {
                    hold.state = HoldState::Released;
                    continue;
                }
            }
            if matches!(hold.state, HoldState::Requested | HoldState::Placed { .. }) {
                hold.state = HoldState::ReleaseRequested { hold_id };
                releases.push((
                    exception.id.clone(),
                    hold.fulfillment_order_id.clone(),
                    hold.handle.clone(),
                ));
            }
        }
    }
    for (exception_id, fo, handle) in releases {
        let effect = ctx.effect(
            case,
            format!("{exception_id}.release"),
            hold_stream(&fo),
            Action::ReleaseHold {
                fulfillment_order_id: fo,
                handle,
                exception_id,
            },
        )?;
        changes.new_effects.push(effect);
    }
    Ok(())
}

/// Applies an operator's decision to the case (before settling). Returns an error text that
/// names what is wrong when the decision does not fit.
pub fn apply_decision(
    case: &mut OrderCase,
    order: Option<&OrderMirror>,
    exception_id: &str,
    decided: Decided,
    ctx: &Ctx<'_>,
    changes: &mut Changes,
) -> Result<Result<(), String>, StoreError> {
    let Some(exception) = case.exception(exception_id).cloned() else {
        return Ok(Err(format!("no exception {exception_id}")));
    };
    if !exception.is_open() {
        return Ok(Err(format!("{exception_id} is already closed")));
    }
    let name = decided.decision.name();
    if !exception.kind.decisions().contains(&name) {
        let kind = exception.kind.name();
        let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        return Ok(Err(format!(
            "{article} {kind} exception allows {}; not {name}",
            exception.kind.decisions().join(", ")
        )));
    }
    let shipment = exception
        .subject
        .shipment_id
        .as_deref()
        .and_then(|id| case.shipment(id))
        .cloned();
    // The shipment lines the decision is about: the subject line, or every current line.
    let subject_lines: Vec<ShipmentLine> = match &shipment {
        Some(s) => {
            let current = derive::current_lines(s);
            s.lines
                .iter()
                .filter(|l| current.iter().any(|(id, _)| *id == l.line_item_id))
                .filter(|l| {
                    exception
                        .subject
                        .line_item_id
                        .as_ref()
                        .is_none_or(|subject| *subject == l.line_item_id)
                })
                .map(|l| {
                    let mut l = l.clone();
                    l.quantity = current
                        .iter()
                        .find(|(id, _)| *id == l.line_item_id)
                        .map(|(_, q)| *q)
                        .unwrap_or(0);
                    l
                })
                .collect()
        }
        None => Vec::new(),
    };
    let by_supplier = |supplier: &Option<String>| -> Result<(), String> {
        match supplier {
            Some(s) if !ctx.routes.has_supplier(s) => Err(format!("no supplier named {s:?}")),
            _ => Ok(()),
        }
    };
    match &decided.decision {
        Decision::RouteTo { supplier } => {
            if !ctx.routes.has_supplier(supplier) {
                return Ok(Err(format!("no supplier named {supplier:?}")));
            }
            let Some(item) = line_of(order, &exception.subject) else {
                return Ok(Err(format!(
                    "the line of {exception_id} is no longer in the order"
                )));
            };
            // An explicit choice also forgives an earlier failure of that supplier.
            case.tried
                .retain(|(l, s)| !(*l == item.id && s == supplier));
            case.line_rules.push((
                item.id.clone(),
                LineRule::RouteTo {
                    supplier: supplier.clone(),
                },
            ));
        }
        Decision::Cancel if exception.kind == ExceptionKind::UnmappedSku => {
            let Some(item) = line_of(order, &exception.subject) else {
                return Ok(Err(format!(
                    "the line of {exception_id} is no longer in the order"
                )));
            };
            let current = item.current_quantity.max(0);
            let (open_in_shopify, _) = open_quantity(order.expect("found the line"), &item.id);
            let open = open_in_shopify
                - carried(case, &item.id).iter().map(|(_, q)| q).sum::<i64>()
                - dropped(case, &item.id, current);
            case.line_rules.push((
                item.id.clone(),
                LineRule::Drop {
                    quantity: open.max(0),
                    current_at_decision: current,
                },
            ));
        }
        Decision::Reroute { .. } | Decision::Cancel if shipment.is_some() => {
            let shipment = shipment.as_ref().expect("matched above");
            if let Decision::Reroute { supplier } = &decided.decision {
                if let Err(e) = by_supplier(supplier) {
                    return Ok(Err(e));
                }
                if supplier.as_deref() == Some(shipment.supplier.as_str()) {
                    return Ok(Err(format!(
                        "{exception_id} is about {}: reroute to another supplier",
                        shipment.supplier
                    )));
                }
            }
            // A parcel the carrier never took is cancelled alone: units already fulfilled or
            // accepted in another parcel of the shipment stay where they are.
            let mut subject_lines = subject_lines.clone();
            if exception.kind == ExceptionKind::NoCarrierMovement {
                let stuck = progress::numbers_of(
                    shipment,
                    placed(order),
                    exception.kind,
                    ctx.now_ms,
                    ctx.settings,
                );
                // The timers stop watching these numbers: their parcels are given up.
                for number in &stuck {
                    record_decision(
                        case,
                        &shipment.id,
                        format!("{exception_id}.cancel.{number}.decided"),
                        &decided,
                        EvidenceKind::ParcelFollowUp {
                            action: "cancel".into(),
                            tracking_number: number.clone(),
                        },
                        ctx,
                    );
                }
                let parcels = derive::parcels(shipment);
                let stuck_parcels: Vec<&String> = derive::labels(shipment)
                    .iter()
                    .filter(|(_, _, n, _)| stuck.contains(n))
                    .filter_map(|(p, ..)| parcels.keys().find(|k| Some(*k) == p.as_ref()))
                    .collect();
                for line in &mut subject_lines {
                    line.quantity = stuck_parcels
                        .iter()
                        .flat_map(|p| &parcels[*p])
                        .filter(|(l, _)| *l == line.line_item_id)
                        .map(|(_, q)| *q)
                        .sum::<i64>()
                        .min(line.quantity);
                }
                subject_lines.retain(|l| l.quantity > 0);
                // A stuck label that names no packed parcel (its packing never came) says
                // nothing of which units it holds: every unit not yet fulfilled goes.
                if subject_lines.is_empty() {
                    let fulfilled = derive::intended_fulfilments(shipment);
                    let current = derive::current_lines(shipment);
                    subject_lines = shipment
                        .lines
                        .iter()
                        .filter_map(|l| {
                            let now = current
                                .iter()
                                .find(|(id, _)| *id == l.line_item_id)
                                .map_or(0, |(_, q)| *q);
                            let done = fulfilled
                                .get(&l.fulfillment_order_line_id)
                                .copied()
                                .unwrap_or(0);
                            let mut line = l.clone();
                            line.quantity = now - done;
                            (line.quantity > 0).then_some(line)
                        })
                        .collect();
                }
            }
            let current = derive::current_lines(shipment);
            for line in &subject_lines {
                case.tried
                    .push((line.line_item_id.clone(), shipment.supplier.clone()));
                match &decided.decision {
                    Decision::Reroute { supplier: Some(to) } => {
                        case.tried
                            .retain(|(l, s)| !(*l == line.line_item_id && s == to));
                        case.line_rules.push((
                            line.line_item_id.clone(),
                            LineRule::RouteTo {
                                supplier: to.clone(),
                            },
                        ))
                    }
                    Decision::Cancel => {
                        let current = order
                            .and_then(|o| o.line_items.iter().find(|i| i.id == line.line_item_id))
                            .map(|i| i.current_quantity.max(0))
                            .unwrap_or(line.quantity);
                        case.line_rules.push((
                            line.line_item_id.clone(),
                            LineRule::Drop {
                                quantity: line.quantity,
                                current_at_decision: current,
                            },
                        ))
                    }
                    _ => {}
                }
                let why = format!("decided: {name}");
                let left = current
                    .iter()
                    .find(|(id, _)| *id == line.line_item_id)
                    .map_or(0, |(_, q)| (q - line.quantity).max(0));
                reduce(case, &shipment.id, &line.line_item_id, left, &why, ctx);
            }
        }
        Decision::WaitUntil { day } => {
            if day.start_ms() <= ctx.now_ms {
                return Ok(Err(format!("{day} is not in the future")));
            }
        }
        Decision::ApproveSubstitute | Decision::RejectSubstitute => {
            let shipment = shipment
                .as_ref()
                .expect("substitute exceptions name a shipment");
            let line = exception.subject.line_item_id.clone().unwrap_or_default();
            let offer =
                derive::line_states(shipment)
                    .into_iter()
                    .find_map(|(l, state)| match state {
                        LineState::SubstituteOffered { report, .. } if l == line => Some(report),
                        _ => None,
                    });
            let Some(offer) = offer else {
                return Ok(Err(format!("{exception_id}: the offer is no longer open")));
            };
            let approve = decided.decision == Decision::ApproveSubstitute;
            let verb = if approve { "approve" } else { "reject" };
            // Keyed by the exception, not by the supplier's event id, which need not be safe in
            // a header.
            let key = format!("{exception_id}.{verb}");
            record_decision(
                case,
                &shipment.id,
                format!("{key}.decided"),
                &decided,
                EvidenceKind::SubstituteDecided {
                    line_item_id: line.clone(),
                    offer,
                    approve,
                },
                ctx,
            );
            let body = MessageBody::Decision {
                line_id: line,
                approve,
            };
            changes
                .new_effects
                .push(ctx.to_supplier(case, shipment, key, body)?);
        }
        Decision::Intercepted | Decision::AcceptLoss => {
            let shipment = shipment
                .as_ref()
                .expect("cancellation exceptions name a shipment");
            record_decision(
                case,
                &shipment.id,
                format!("{exception_id}.{name}"),
                &decided,
                EvidenceKind::Abandoned {
                    reason: format!("decided: {name}"),
                },
                ctx,
            );
        }
        Decision::Replace | Decision::Repack => {
            let shipment = shipment
                .as_ref()
                .expect("check-failed exceptions name a shipment");
            let key = format!("{exception_id}.{name}");
            let body = MessageBody::CheckDecision {
                action: name.to_string(),
            };
            // The exception stays open, decided, until a later check passes.
            changes
                .new_effects
                .push(ctx.to_supplier(case, shipment, key, body)?);
        }
        Decision::ApproveDeviation => {
            let shipment = shipment
                .as_ref()
                .expect("check-failed exceptions name a shipment");
            let Some(check) = derive::failed_check(shipment).map(str::to_string) else {
                return Ok(Err(format!(
                    "{exception_id}: the failed check is no longer the latest"
                )));
            };
            let Some(reason) = decided.note.clone().filter(|n| !n.trim().is_empty()) else {
                return Ok(Err(
                    "approving a deviation needs a note saying why (who approved it is recorded)"
                        .to_string(),
                ));
            };
            record_decision(
                case,
                &shipment.id,
                format!("{exception_id}.approve_deviation"),
                &decided,
                EvidenceKind::DeviationApproved { check, reason },
                ctx,
            );
        }
        Decision::Acknowledge => {
            let shipment = shipment
                .as_ref()
                .expect("fulfilled-outside exceptions name a shipment");
            record_decision(
                case,
                &shipment.id,
                format!("{exception_id}.acknowledge"),
                &decided,
                EvidenceKind::Abandoned {
                    reason: "fulfilled outside shipgate; acknowledged".into(),
                },
                ctx,
            );
        }
        Decision::Retry | Decision::Investigate => {
            let shipment = shipment
                .as_ref()
                .expect("write-back exceptions name a shipment");
            let Some((key, _)) = derive::undecided_refusals(shipment).into_iter().next() else {
                return Ok(Err(format!(
                    "{exception_id}: no refused fulfillment is waiting"
                )));
            };
            let retry = decided.decision == Decision::Retry;
            record_decision(
                case,
                &shipment.id,
                format!("{exception_id}.{name}"),
                &decided,
                EvidenceKind::FulfillmentRefusalDecided { key, retry },
                ctx,
            );
        }
        Decision::Chase | Decision::NewLabel | Decision::CustomerUpdated | Decision::Reship => {
            let shipment = shipment
                .as_ref()
                .expect("carrier exceptions name a shipment");
            let numbers = if exception.kind == ExceptionKind::TrackingConflict {
                tracking_conflicts(case, ctx)?
                    .into_iter()
                    .filter(|c| c.shipment_id == shipment.id)
                    .map(|c| c.number)
                    .collect()
            } else {
                progress::numbers_of(
                    shipment,
                    placed(order),
                    exception.kind,
                    ctx.now_ms,
                    ctx.settings,
                )
            };
            if numbers.is_empty() {
                return Ok(Err(format!(
                    "{exception_id}: no parcel of {} is overdue any more",
                    shipment.id
                )));
            }
            for number in numbers {
                let key = format!("{exception_id}.{name}.{number}");
                record_decision(
                    case,
                    &shipment.id,
                    format!("{key}.decided"),
                    &decided,
                    EvidenceKind::ParcelFollowUp {
                        // The kind tells the timers apart: a new label for a conflict is
                        // `new_number`, and does not pause the no-movement clock.
                        action: if exception.kind == ExceptionKind::TrackingConflict {
                            "new_number".to_string()
                        } else {
                            name.to_string()
                        },
                        tracking_number: number.clone(),
                    },
                    ctx,
                );
                // The customer was told by the owner: nothing for the supplier to do.
                if decided.decision == Decision::CustomerUpdated {
                    continue;
                }
                let body = MessageBody::ParcelDecision {
                    action: name.to_string(),
                    tracking_number: number,
                };
                changes
                    .new_effects
                    .push(ctx.to_supplier(case, shipment, key, body)?);
            }
        }
        Decision::Reroute { .. } | Decision::Cancel => {
            return Ok(Err(format!(
                "{exception_id} names no shipment to take lines from"
            )));
        }
        Decision::CorrectAddress => {
            let shipment = shipment.as_ref().expect("address issues name a shipment");
            // The supplier is sent the address the mirror holds: it must be one to ship to.
            if let Some(why) =
                crate::order::Address::unusable(order.and_then(|o| o.shipping_address.as_ref()))
            {
                return Ok(Err(format!(
                    "{exception_id}: {why} in Shopify yet; correct it there first"
                )));
            }
            let Some((issue, _)) = derive::address_issue(shipment) else {
                return Ok(Err(format!(
                    "{exception_id}: the address is complete now; the exception closes by itself"
                )));
            };
            record_decision(
                case,
                &shipment.id,
                format!("{exception_id}.correct_address"),
                &decided,
                EvidenceKind::AddressCorrected { issue },
                ctx,
            );
        }
    }
    if let Some(e) = case.exceptions.iter_mut().find(|e| e.id == exception_id) {
        e.decision = Some(decided);
    }
    Ok(Ok(()))
}

/// Records what an operator decided as evidence on the shipment, with the operator as actor.
fn record_decision(
    case: &mut OrderCase,
    shipment_id: &str,
    id: String,
    decided: &Decided,
    kind: EvidenceKind,
    ctx: &Ctx<'_>,
) {
    if let Some(shipment) = case.shipment_mut(shipment_id) {
        shipment.record(Evidence {
            id,
            at_ms: ctx.now_ms,
            recorded_ms: ctx.now_ms,
            actor: decided.by.clone(),
            source: Source::Manual,
            kind,
        });
    }
}

/// The order line an exception's subject names, in the mirror.
fn line_of<'o>(order: Option<&'o OrderMirror>, subject: &Subject) -> Option<&'o LineItem> {
    let wanted = subject.line_item_id.as_deref()?;
    order?.line_items.iter().find(|i| i.id == wanted)
}
