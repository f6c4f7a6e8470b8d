//! The shapes earlier releases stored, kept so that this build reads what they wrote.
//!
//! postcard is not self-describing: a value can only be read with the exact type it was written
//! with, and `#[serde(default)]` does not help a field that is missing from the bytes. So each
//! record whose shape changed keeps a private copy of its old types here, only of the types whose
//! shape differs; everything nested that did not change is the current type, which reads the old
//! bytes as they are. The conversions destructure the old values and build the current ones field
//! by field without `..`, so that a type changing again fails to compile here instead of being
//! converted with a field silently left out.
//!
//! Version 1 is what the release at commit 75d1ced wrote. Version 2 added:
//! - `OrderCase::wake_at_ms` (read as `None`),
//! - `numbers` in `EvidenceKind::FulfillmentIntended` (recovered from the labels recorded before
//!   the intent, as version 1 chose them; see `numbers_sent_v1`),
//! - `TrackingEvent::evidence`, inside `EvidenceKind::Carrier` and in the `tracking_waiting`
//!   tree (read as empty: version 1 kept no evidence references with a scan).
//!
//! Variants appended to `EvidenceKind`, `ExceptionKind`, `Decision`, `MessageBody` and `Action`
//! did not change how the old variants are encoded (postcard writes a variant's index), so the
//! outbox's effects kept version 1 and nothing here covers them.

use std::collections::BTreeSet;

use serde::Deserialize;
#[cfg(test)]
use serde::Serialize;

use super::codec::{DecodeError, Record, decode_legacy};
use crate::order::Timestamp;
use crate::suppliers::{EventKind, SupplierEvent};
use crate::tracking::{Normalized, Provider, TrackingEvent};
use crate::workflow::model::{
    Actor, Evidence, EvidenceKind, Exception, LineRule, OrderCase, Shipment, ShipmentLine, Source,
};

/// Reads an order case stored at an older format version.
///
/// A case read at version 1 has no wake time, because version 1 had none. The store makes every
/// case without a wake entry due once when it first opens with the index
/// (`CaseTrees::wake_unindexed_once`), so the first timer pass settles it and indexes its real
/// wake time (a `WaitUntil` decision, a label the carrier has not accepted, tracking that may
/// stall).
pub(super) fn order_case(version: u8, bytes: &[u8]) -> Option<Result<OrderCase, DecodeError>> {
    match version {
        1 => Some(decode_legacy::<OrderCaseV1>(OrderCase::NAME, version, bytes).map(Into::into)),
        _ => None,
    }
}

/// Reads a waiting carrier event stored at an older format version.
pub(super) fn tracking_event(
    version: u8,
    bytes: &[u8],
) -> Option<Result<TrackingEvent, DecodeError>> {
    match version {
        1 => Some(
            decode_legacy::<TrackingEventV1>(TrackingEvent::NAME, version, bytes).map(Into::into),
        ),
        _ => None,
    }
}

/// `OrderCase` at version 1: no `wake_at_ms`, and shipments of version 1.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct OrderCaseV1 {
    shop: String,
    order_gid: String,
    order_name: String,
    shipments: Vec<ShipmentV1>,
    exceptions: Vec<Exception>,
    line_rules: Vec<(String, LineRule)>,
    tried: Vec<(String, String)>,
    planned_at_ms: i64,
}

/// `Shipment` at version 1: unchanged itself, but its evidence differs.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct ShipmentV1 {
    id: String,
    supplier: String,
    fulfillment_order_id: String,
    lines: Vec<ShipmentLine>,
    created_ms: i64,
    evidence: Vec<EvidenceV1>,
}

/// `Evidence` at version 1: unchanged itself, but its kind differs.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct EvidenceV1 {
    id: String,
    at_ms: i64,
    recorded_ms: i64,
    actor: Actor,
    source: Source,
    kind: EvidenceKindV1,
}

/// `EvidenceKind` at version 1, every variant in its version 1 order: postcard identifies a
/// variant by its index, so the order matters as much as the fields.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
enum EvidenceKindV1 {
    SubmissionIntended {
        revision: u32,
        key: String,
        lines: Vec<(String, i64)>,
    },
    SubmissionDelivered {
        revision: u32,
        supplier_ref: Option<String>,
    },
    SubmissionRefused {
        revision: u32,
        reason: String,
    },
    Supplier(SupplierEvent),
    LineChanged {
        line_item_id: String,
        quantity: i64,
        reason: String,
    },
    CancelRequested {
        reason: String,
    },
    SubstituteDecided {
        line_item_id: String,
        offer: String,
        approve: bool,
    },
    Abandoned {
        reason: String,
    },
    /// Version 1 carrier events had no `evidence`.
    Carrier(TrackingEventV1),
    DeviationApproved {
        check: String,
        reason: String,
    },
    /// Version 1 had no `numbers`.
    FulfillmentIntended {
        key: String,
        fulfillment_order_id: String,
        lines: Vec<(String, i64)>,
        parcels: Vec<String>,
    },
    FulfillmentCreated {
        key: String,
        fulfillment_id: String,
    },
    FulfillmentRefused {
        key: String,
        reason: String,
    },
    FulfillmentRefusalDecided {
        key: String,
        retry: bool,
    },
}

/// `TrackingEvent` at version 1: no `evidence` after `normalized`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct TrackingEventV1 {
    provider: Provider,
    event_id: String,
    tracking_number: String,
    carrier: String,
    occurred_at: Timestamp,
    raw_text: String,
    raw_code: Option<String>,
    location: Option<String>,
    provider_code: Option<String>,
    acceptance_scan: bool,
    normalized: Normalized,
}

impl From<OrderCaseV1> for OrderCase {
    fn from(old: OrderCaseV1) -> OrderCase {
        let OrderCaseV1 {
            shop,
            order_gid,
            order_name,
            shipments,
            exceptions,
            line_rules,
            tried,
            planned_at_ms,
        } = old;
        OrderCase {
            shop,
            order_gid,
            order_name,
            shipments: shipments.into_iter().map(Into::into).collect(),
            exceptions,
            line_rules,
            tried,
            planned_at_ms,
            // See `order_case`: the next settle sets it.
            wake_at_ms: None,
        }
    }
}

impl From<ShipmentV1> for Shipment {
    fn from(old: ShipmentV1) -> Shipment {
        let ShipmentV1 {
            id,
            supplier,
            fulfillment_order_id,
            lines,
            created_ms,
            evidence: old_evidence,
        } = old;
        // Converted in order, because a fulfillment intent's numbers are recovered from the
        // evidence recorded before it.
        let mut evidence: Vec<Evidence> = Vec::with_capacity(old_evidence.len());
        for e in old_evidence {
            let current = e.upgrade(&evidence);
            evidence.push(current);
        }
        // Format 1 never posted carrier progress. What its fulfillments' parcels did before the
        // upgrade stays untold (months of old statuses would reach customers as news); what
        // they do after is posted.
        let until_ms = evidence
            .iter()
            .filter_map(|e| match &e.kind {
                EvidenceKind::Carrier(ev) => Some(ev.occurred_at.unix_ms),
                _ => None,
            })
            .chain(evidence.iter().map(|e| e.recorded_ms))
            .max();
        let created: Vec<(String, i64)> = evidence
            .iter()
            .filter_map(|e| match &e.kind {
                EvidenceKind::FulfillmentCreated { key, .. } => Some((key.clone(), e.recorded_ms)),
                _ => None,
            })
            .collect();
        for (key, recorded_ms) in created {
            evidence.push(Evidence {
                id: format!("{key}.progress-before-upgrade"),
                at_ms: recorded_ms,
                recorded_ms,
                actor: crate::workflow::model::Actor::System,
                source: crate::workflow::model::Source::Workflow,
                kind: EvidenceKind::ProgressSkipped {
                    key,
                    until_ms: until_ms.unwrap_or(recorded_ms),
                },
            });
        }
        Shipment {
            id,
            supplier,
            fulfillment_order_id,
            lines,
            created_ms,
            evidence,
        }
    }
}

impl EvidenceV1 {
    /// The current form of this evidence; `earlier` is the shipment's evidence recorded before
    /// it, already converted.
    fn upgrade(self, earlier: &[Evidence]) -> Evidence {
        let EvidenceV1 {
            id,
            at_ms,
            recorded_ms,
            actor,
            source,
            kind,
        } = self;
        Evidence {
            id,
            at_ms,
            recorded_ms,
            actor,
            source,
            kind: kind.upgrade(earlier),
        }
    }
}

impl EvidenceKindV1 {
    fn upgrade(self, earlier: &[Evidence]) -> EvidenceKind {
        match self {
            EvidenceKindV1::SubmissionIntended {
                revision,
                key,
                lines,
            } => EvidenceKind::SubmissionIntended {
                revision,
                key,
                lines,
            },
            EvidenceKindV1::SubmissionDelivered {
                revision,
                supplier_ref,
            } => EvidenceKind::SubmissionDelivered {
                revision,
                supplier_ref,
            },
            EvidenceKindV1::SubmissionRefused { revision, reason } => {
                EvidenceKind::SubmissionRefused { revision, reason }
            }
            EvidenceKindV1::Supplier(event) => EvidenceKind::Supplier(event),
            EvidenceKindV1::LineChanged {
                line_item_id,
                quantity,
                reason,
            } => EvidenceKind::LineChanged {
                line_item_id,
                quantity,
                reason,
            },
            EvidenceKindV1::CancelRequested { reason } => EvidenceKind::CancelRequested { reason },
            EvidenceKindV1::SubstituteDecided {
                line_item_id,
                offer,
                approve,
            } => EvidenceKind::SubstituteDecided {
                line_item_id,
                offer,
                approve,
            },
            EvidenceKindV1::Abandoned { reason } => EvidenceKind::Abandoned { reason },
            EvidenceKindV1::Carrier(event) => EvidenceKind::Carrier(event.into()),
            EvidenceKindV1::DeviationApproved { check, reason } => {
                EvidenceKind::DeviationApproved { check, reason }
            }
            EvidenceKindV1::FulfillmentIntended {
                key,
                fulfillment_order_id,
                lines,
                parcels,
            } => {
                let numbers = numbers_sent_v1(earlier, &parcels);
                EvidenceKind::FulfillmentIntended {
                    key,
                    fulfillment_order_id,
                    lines,
                    parcels,
                    numbers,
                }
            }
            EvidenceKindV1::FulfillmentCreated {
                key,
                fulfillment_id,
            } => EvidenceKind::FulfillmentCreated {
                key,
                fulfillment_id,
            },
            EvidenceKindV1::FulfillmentRefused { key, reason } => {
                EvidenceKind::FulfillmentRefused { key, reason }
            }
            EvidenceKindV1::FulfillmentRefusalDecided { key, retry } => {
                EvidenceKind::FulfillmentRefusalDecided { key, retry }
            }
        }
    }
}

/// The tracking numbers a version 1 fulfillment intent created its fulfillment with, recovered
/// the way version 1 chose them (its `derive::labels` and `write_back`): every label in the
/// evidence recorded before the intent, in (time, id) order, whose parcel is one of the intent's;
/// a label naming no parcel belongs to the only parcel packed, if exactly one was. Evidence is
/// append-only, so what precedes the intent is exactly what version 1 saw when it recorded it.
///
/// Leaving them empty would not be harmless: the tracking update compares the numbers Shopify
/// shows (these) with the parcels' current labels, so every fulfillment version 1 created would
/// get a `fulfillmentTrackingInfoUpdate` with the numbers it already has (notifying the customer
/// when the shop asks for that), and no carrier progress would be posted for it.
fn numbers_sent_v1(earlier: &[Evidence], parcels: &[String]) -> Vec<String> {
    let mut canonical: Vec<&Evidence> = earlier.iter().collect();
    canonical.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
    let supplier_events = || {
        canonical.iter().filter_map(|e| match &e.kind {
            EvidenceKind::Supplier(event) => Some(&event.kind),
            _ => None,
        })
    };
    let packed: BTreeSet<&str> = supplier_events()
        .filter_map(|kind| match kind {
            EventKind::Packed { parcels } => Some(parcels),
            _ => None,
        })
        .flatten()
        .map(|p| p.parcel_id.as_str())
        .collect();
    let only = if packed.len() == 1 {
        packed.first().copied()
    } else {
        None
    };
    supplier_events()
        .filter_map(|kind| match kind {
            EventKind::LabelCreated {
                parcel_id,
                tracking_number,
                ..
            } => {
                let parcel = parcel_id.as_deref().or(only)?;
                parcels
                    .iter()
                    .any(|p| p == parcel)
                    .then(|| tracking_number.clone())
            }
            _ => None,
        })
        .collect()
}

impl From<TrackingEventV1> for TrackingEvent {
    fn from(old: TrackingEventV1) -> TrackingEvent {
        let TrackingEventV1 {
            provider,
            event_id,
            tracking_number,
            carrier,
            occurred_at,
            raw_text,
            raw_code,
            location,
            provider_code,
            acceptance_scan,
            normalized,
        } = old;
        TrackingEvent {
            provider,
            event_id,
            tracking_number,
            carrier,
            occurred_at,
            raw_text,
            raw_code,
            location,
            provider_code,
            acceptance_scan,
            normalized,
            // Version 1 kept no evidence references with a scan, so there is none to carry over.
            evidence: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec::{composite_key, decode, encode};
    use crate::store::{Store, StoreOptions};
    use crate::suppliers::{Day, PackedParcel, ParcelLine};
    use crate::tracking::ExceptionKind as CarrierException;
    use crate::workflow::model::{
        Closed, Decided, Decision, ExceptionKind, HoldRecord, HoldState, Subject,
    };

    fn at(unix_ms: i64, text: &str) -> Timestamp {
        Timestamp {
            unix_ms,
            text: text.into(),
        }
    }

    /// Bytes as version 1 stored them: its version byte, then the postcard encoding.
    fn v1_bytes<T: Serialize>(value: &T) -> Vec<u8> {
        let mut bytes = vec![1u8];
        bytes.extend(postcard::to_stdvec(value).unwrap());
        bytes
    }

    fn supplier_event(id: &str, at_ms: i64, kind: EventKind) -> SupplierEvent {
        SupplierEvent {
            id: id.into(),
            shipment_id: "SG-0000000001".into(),
            occurred_at: at(at_ms, "2026-03-01T10:00:00+01:00"),
            kind,
        }
    }

    fn packed(parcels: &[&str]) -> EventKind {
        EventKind::Packed {
            parcels: parcels
                .iter()
                .map(|p| PackedParcel {
                    parcel_id: p.to_string(),
                    lines: vec![ParcelLine {
                        line_id: "gid://shopify/LineItem/1".into(),
                        quantity: 1,
                    }],
                    weight_grams: Some(420),
                    dimensions_cm: Some([30, 20, 10]),
                    photos: vec!["https://photos.example/p.jpg".into()],
                })
                .collect(),
        }
    }

    fn label(parcel: Option<&str>, number: &str) -> EventKind {
        EventKind::LabelCreated {
            parcel_id: parcel.map(str::to_string),
            carrier: "usps".into(),
            tracking_number: number.into(),
            tracking_url: Some(format!("https://track.example/{number}")),
        }
    }

    fn carrier_v1(number: &str) -> TrackingEventV1 {
        TrackingEventV1 {
            provider: Provider::AfterShip,
            event_id: format!("aftership:{number}:1"),
            tracking_number: number.into(),
            carrier: "usps".into(),
            occurred_at: at(1_700_000_300_000, "2023-11-14T23:18:20-05:00"),
            raw_text: "Accepted at USPS Origin Facility".into(),
            raw_code: Some("OA".into()),
            location: Some("Reno, NV".into()),
            provider_code: Some("InTransit_002".into()),
            acceptance_scan: true,
            normalized: Normalized::Exception(CarrierException::Customs),
        }
    }

    /// The same event as `carrier_v1`, written out again in the current shape.
    fn carrier_current(number: &str) -> TrackingEvent {
        TrackingEvent {
            provider: Provider::AfterShip,
            event_id: format!("aftership:{number}:1"),
            tracking_number: number.into(),
            carrier: "usps".into(),
            occurred_at: at(1_700_000_300_000, "2023-11-14T23:18:20-05:00"),
            raw_text: "Accepted at USPS Origin Facility".into(),
            raw_code: Some("OA".into()),
            location: Some("Reno, NV".into()),
            provider_code: Some("InTransit_002".into()),
            acceptance_scan: true,
            normalized: Normalized::Exception(CarrierException::Customs),
            evidence: Vec::new(),
        }
    }

    /// Every version 1 evidence kind with what it must read as now, in the order a shipment
    /// could have recorded them: packed into two parcels, both labelled, the gate opened for the
    /// first, and the first relabelled after the intent (a label the intent never saw).
    fn evidence_pairs() -> Vec<(i64, EvidenceKindV1, EvidenceKind)> {
        let lines = vec![("gid://shopify/LineItem/1".to_string(), 2)];
        let supplier = |id: &str, at_ms: i64, kind: EventKind| {
            (
                at_ms,
                EvidenceKindV1::Supplier(supplier_event(id, at_ms, kind.clone())),
                EvidenceKind::Supplier(supplier_event(id, at_ms, kind)),
            )
        };
        vec![
            (
                10,
                EvidenceKindV1::SubmissionIntended {
                    revision: 1,
                    key: "SG-0000000001.r1".into(),
                    lines: lines.clone(),
                },
                EvidenceKind::SubmissionIntended {
                    revision: 1,
                    key: "SG-0000000001.r1".into(),
                    lines: lines.clone(),
                },
            ),
            (
                20,
                EvidenceKindV1::SubmissionDelivered {
                    revision: 1,
                    supplier_ref: Some("PO-77".into()),
                },
                EvidenceKind::SubmissionDelivered {
                    revision: 1,
                    supplier_ref: Some("PO-77".into()),
                },
            ),
            (
                21,
                EvidenceKindV1::SubmissionRefused {
                    revision: 2,
                    reason: "closed on Sundays".into(),
                },
                EvidenceKind::SubmissionRefused {
                    revision: 2,
                    reason: "closed on Sundays".into(),
                },
            ),
            (
                30,
                EvidenceKindV1::LineChanged {
                    line_item_id: "gid://shopify/LineItem/2".into(),
                    quantity: 0,
                    reason: "cancelled by decision".into(),
                },
                EvidenceKind::LineChanged {
                    line_item_id: "gid://shopify/LineItem/2".into(),
                    quantity: 0,
                    reason: "cancelled by decision".into(),
                },
            ),
            (
                31,
                EvidenceKindV1::SubstituteDecided {
                    line_item_id: "gid://shopify/LineItem/1".into(),
                    offer: "ev-offer".into(),
                    approve: true,
                },
                EvidenceKind::SubstituteDecided {
                    line_item_id: "gid://shopify/LineItem/1".into(),
                    offer: "ev-offer".into(),
                    approve: true,
                },
            ),
            (
                32,
                EvidenceKindV1::DeviationApproved {
                    check: "ev-check".into(),
                    reason: "colour is close enough".into(),
                },
                EvidenceKind::DeviationApproved {
                    check: "ev-check".into(),
                    reason: "colour is close enough".into(),
                },
            ),
            supplier("packed", 40, packed(&["P1", "P2"])),
            supplier("label-1", 50, label(Some("P1"), "T1")),
            supplier("label-2", 51, label(Some("P2"), "T2")),
            (
                60,
                EvidenceKindV1::Carrier(carrier_v1("T1")),
                EvidenceKind::Carrier(carrier_current("T1")),
            ),
            (
                70,
                EvidenceKindV1::FulfillmentIntended {
                    key: "SG-0000000001.f1".into(),
                    fulfillment_order_id: "gid://shopify/FulfillmentOrder/9".into(),
                    lines: vec![("gid://shopify/FulfillmentOrderLineItem/3".into(), 1)],
                    parcels: vec!["P1".into()],
                },
                EvidenceKind::FulfillmentIntended {
                    key: "SG-0000000001.f1".into(),
                    fulfillment_order_id: "gid://shopify/FulfillmentOrder/9".into(),
                    lines: vec![("gid://shopify/FulfillmentOrderLineItem/3".into(), 1)],
                    parcels: vec!["P1".into()],
                    // P1's label before the intent; not P2's, not P1's later one.
                    numbers: vec!["T1".into()],
                },
            ),
            (
                80,
                EvidenceKindV1::FulfillmentRefused {
                    key: "SG-0000000001.f1".into(),
                    reason: "fulfillment order is on hold".into(),
                },
                EvidenceKind::FulfillmentRefused {
                    key: "SG-0000000001.f1".into(),
                    reason: "fulfillment order is on hold".into(),
                },
            ),
            (
                81,
                EvidenceKindV1::FulfillmentRefusalDecided {
                    key: "SG-0000000001.f1".into(),
                    retry: true,
                },
                EvidenceKind::FulfillmentRefusalDecided {
                    key: "SG-0000000001.f1".into(),
                    retry: true,
                },
            ),
            (
                82,
                EvidenceKindV1::FulfillmentCreated {
                    key: "SG-0000000001.f1".into(),
                    fulfillment_id: "gid://shopify/Fulfillment/5".into(),
                },
                EvidenceKind::FulfillmentCreated {
                    key: "SG-0000000001.f1".into(),
                    fulfillment_id: "gid://shopify/Fulfillment/5".into(),
                },
            ),
            // Recorded after the intent but dated before it: version 1 did not see it then,
            // so it must not count even though it sorts earlier.
            supplier("label-1-again", 45, label(Some("P1"), "T3")),
            (
                90,
                EvidenceKindV1::CancelRequested {
                    reason: "order cancelled".into(),
                },
                EvidenceKind::CancelRequested {
                    reason: "order cancelled".into(),
                },
            ),
            (
                91,
                EvidenceKindV1::Abandoned {
                    reason: "intercepted".into(),
                },
                EvidenceKind::Abandoned {
                    reason: "intercepted".into(),
                },
            ),
        ]
    }

    fn shipment_line() -> ShipmentLine {
        ShipmentLine {
            fulfillment_order_line_id: "gid://shopify/FulfillmentOrderLineItem/3".into(),
            line_item_id: "gid://shopify/LineItem/1".into(),
            sku: "MUG-RED".into(),
            variant_title: Some("Red".into()),
            quantity: 2,
        }
    }

    fn exceptions() -> Vec<Exception> {
        let decided = |decision: Decision, at_ms: i64| Decided {
            decision,
            by: Actor::Operator("ana".into()),
            at_ms,
            note: Some("asked the supplier".into()),
        };
        vec![
            Exception {
                id: "EX-0000000001".into(),
                kind: ExceptionKind::Stockout,
                subject: Subject {
                    fulfillment_order_id: "gid://shopify/FulfillmentOrder/9".into(),
                    shipment_id: Some("SG-0000000001".into()),
                    line_item_id: Some("gid://shopify/LineItem/1".into()),
                },
                summary: "The supplier is short of 2 red mugs.".into(),
                opened_ms: 100,
                opened_by: Actor::Supplier("acme".into()),
                decision: Some(decided(
                    Decision::WaitUntil {
                        day: Day::parse("2026-04-01").unwrap(),
                    },
                    110,
                )),
                past_decisions: vec![decided(Decision::Reroute { supplier: None }, 105)],
                closed: None,
                hold: Some(HoldRecord {
                    fulfillment_order_id: "gid://shopify/FulfillmentOrder/9".into(),
                    handle: "shipgate-EX-0000000001".into(),
                    reason: "INVENTORY_OUT_OF_STOCK".into(),
                    state: HoldState::Placed {
                        hold_id: "gid://shopify/FulfillmentHold/4".into(),
                    },
                }),
            },
            Exception {
                id: "EX-0000000002".into(),
                kind: ExceptionKind::WriteBackRefused,
                subject: Subject {
                    fulfillment_order_id: "gid://shopify/FulfillmentOrder/9".into(),
                    shipment_id: Some("SG-0000000001".into()),
                    line_item_id: None,
                },
                summary: "Shopify refused the fulfillment.".into(),
                opened_ms: 120,
                opened_by: Actor::System,
                decision: Some(decided(Decision::Retry, 130)),
                past_decisions: Vec::new(),
                closed: Some(Closed {
                    at_ms: 140,
                    by: Actor::Shopify,
                    reason: "fulfilled".into(),
                }),
                hold: Some(HoldRecord {
                    fulfillment_order_id: "gid://shopify/FulfillmentOrder/9".into(),
                    handle: "shipgate-EX-0000000002".into(),
                    reason: "OTHER".into(),
                    state: HoldState::ReleaseRequested { hold_id: None },
                }),
            },
        ]
    }

    fn line_rules() -> Vec<(String, LineRule)> {
        vec![
            (
                "gid://shopify/LineItem/1".into(),
                LineRule::RouteTo {
                    supplier: "acme".into(),
                },
            ),
            (
                "gid://shopify/LineItem/2".into(),
                LineRule::Drop {
                    quantity: 1,
                    current_at_decision: 3,
                },
            ),
        ]
    }

    /// A version 1 case and what it must read as now. The second shipment has one parcel and a
    /// label that names none, which version 1 gave to that parcel.
    fn cases() -> (OrderCaseV1, OrderCase) {
        let source = |i: usize| match i % 3 {
            0 => Source::SupplierWebhook {
                delivery_seq: i as u64,
            },
            1 => Source::Outbox {
                effect_id: i as u64,
            },
            _ => Source::TrackingWebhook {
                delivery_seq: i as u64,
            },
        };
        let (mut old_evidence, mut new_evidence) = (Vec::new(), Vec::new());
        for (i, (at_ms, old, new)) in evidence_pairs().into_iter().enumerate() {
            old_evidence.push(EvidenceV1 {
                id: format!("ev-{i}"),
                at_ms,
                recorded_ms: 1000 + i as i64,
                actor: Actor::Carrier("aftership".into()),
                source: source(i),
                kind: old,
            });
            new_evidence.push(Evidence {
                id: format!("ev-{i}"),
                at_ms,
                recorded_ms: 1000 + i as i64,
                actor: Actor::Carrier("aftership".into()),
                source: source(i),
                kind: new,
            });
        }
        // Carrier history from before the upgrade is not posted as news: the fulfillment
        // carries a marker up to the latest time the old case knew.
        let created_at = new_evidence
            .iter()
            .find_map(|e| match &e.kind {
                EvidenceKind::FulfillmentCreated { .. } => Some(e.recorded_ms),
                _ => None,
            })
            .expect("the fixture has a created fulfillment");
        let latest_known = new_evidence
            .iter()
            .filter_map(|e| match &e.kind {
                EvidenceKind::Carrier(ev) => Some(ev.occurred_at.unix_ms),
                _ => None,
            })
            .chain(new_evidence.iter().map(|e| e.recorded_ms))
            .max()
            .unwrap();
        new_evidence.push(Evidence {
            id: "SG-0000000001.f1.progress-before-upgrade".into(),
            at_ms: created_at,
            recorded_ms: created_at,
            actor: Actor::System,
            source: Source::Workflow,
            kind: EvidenceKind::ProgressSkipped {
                key: "SG-0000000001.f1".into(),
                until_ms: latest_known,
            },
        });
        let single_old = vec![
            EvidenceV1 {
                id: "b-packed".into(),
                at_ms: 5,
                recorded_ms: 5,
                actor: Actor::Supplier("beta".into()),
                source: Source::CsvImport {
                    file: "beta.csv".into(),
                },
                kind: EvidenceKindV1::Supplier(supplier_event("b-packed", 5, packed(&["PB"]))),
            },
            EvidenceV1 {
                id: "b-label".into(),
                at_ms: 6,
                recorded_ms: 6,
                actor: Actor::Supplier("beta".into()),
                source: Source::Manual,
                kind: EvidenceKindV1::Supplier(supplier_event("b-label", 6, label(None, "TB"))),
            },
            EvidenceV1 {
                id: "b-intended".into(),
                at_ms: 7,
                recorded_ms: 7,
                actor: Actor::System,
                source: Source::Workflow,
                kind: EvidenceKindV1::FulfillmentIntended {
                    key: "SG-0000000002.f1".into(),
                    fulfillment_order_id: "gid://shopify/FulfillmentOrder/10".into(),
                    lines: vec![("gid://shopify/FulfillmentOrderLineItem/4".into(), 1)],
                    parcels: vec!["PB".into()],
                },
            },
        ];
        let single_new = vec![
            Evidence {
                id: "b-packed".into(),
                at_ms: 5,
                recorded_ms: 5,
                actor: Actor::Supplier("beta".into()),
                source: Source::CsvImport {
                    file: "beta.csv".into(),
                },
                kind: EvidenceKind::Supplier(supplier_event("b-packed", 5, packed(&["PB"]))),
            },
            Evidence {
                id: "b-label".into(),
                at_ms: 6,
                recorded_ms: 6,
                actor: Actor::Supplier("beta".into()),
                source: Source::Manual,
                kind: EvidenceKind::Supplier(supplier_event("b-label", 6, label(None, "TB"))),
            },
            Evidence {
                id: "b-intended".into(),
                at_ms: 7,
                recorded_ms: 7,
                actor: Actor::System,
                source: Source::Workflow,
                kind: EvidenceKind::FulfillmentIntended {
                    key: "SG-0000000002.f1".into(),
                    fulfillment_order_id: "gid://shopify/FulfillmentOrder/10".into(),
                    lines: vec![("gid://shopify/FulfillmentOrderLineItem/4".into(), 1)],
                    parcels: vec!["PB".into()],
                    numbers: vec!["TB".into()],
                },
            },
        ];
        let old = OrderCaseV1 {
            shop: "a.myshopify.com".into(),
            order_gid: "gid://shopify/Order/1".into(),
            order_name: "#1001".into(),
            shipments: vec![
                ShipmentV1 {
                    id: "SG-0000000001".into(),
                    supplier: "acme".into(),
                    fulfillment_order_id: "gid://shopify/FulfillmentOrder/9".into(),
                    lines: vec![shipment_line()],
                    created_ms: 3,
                    evidence: old_evidence,
                },
                ShipmentV1 {
                    id: "SG-0000000002".into(),
                    supplier: "beta".into(),
                    fulfillment_order_id: "gid://shopify/FulfillmentOrder/10".into(),
                    lines: Vec::new(),
                    created_ms: 4,
                    evidence: single_old,
                },
            ],
            exceptions: exceptions(),
            line_rules: line_rules(),
            tried: vec![("gid://shopify/LineItem/1".into(), "zeta".into())],
            planned_at_ms: 1_700_000_000_000,
        };
        let new = OrderCase {
            shop: "a.myshopify.com".into(),
            order_gid: "gid://shopify/Order/1".into(),
            order_name: "#1001".into(),
            shipments: vec![
                Shipment {
                    id: "SG-0000000001".into(),
                    supplier: "acme".into(),
                    fulfillment_order_id: "gid://shopify/FulfillmentOrder/9".into(),
                    lines: vec![shipment_line()],
                    created_ms: 3,
                    evidence: new_evidence,
                },
                Shipment {
                    id: "SG-0000000002".into(),
                    supplier: "beta".into(),
                    fulfillment_order_id: "gid://shopify/FulfillmentOrder/10".into(),
                    lines: Vec::new(),
                    created_ms: 4,
                    evidence: single_new,
                },
            ],
            exceptions: exceptions(),
            line_rules: line_rules(),
            tried: vec![("gid://shopify/LineItem/1".into(), "zeta".into())],
            planned_at_ms: 1_700_000_000_000,
            wake_at_ms: None,
        };
        (old, new)
    }

    /// Every `Timestamp` text in a case: `Timestamp` compares only its instant, and the text is
    /// kept as evidence, so it is checked on its own.
    fn timestamp_texts(case: &OrderCase) -> Vec<String> {
        let mut out = Vec::new();
        for e in case.shipments.iter().flat_map(|s| &s.evidence) {
            match &e.kind {
                EvidenceKind::Supplier(event) => out.push(event.occurred_at.text.clone()),
                EvidenceKind::Carrier(event) => out.push(event.occurred_at.text.clone()),
                _ => {}
            }
        }
        out
    }

    #[test]
    fn a_version_1_case_is_read_with_every_field() {
        let (old, expected) = cases();
        // Every version 1 evidence kind is covered, so a variant out of place would show.
        assert_eq!(
            old.shipments[0].evidence.len(),
            evidence_pairs().len(),
            "the fixture lost an evidence kind"
        );
        let bytes = v1_bytes(&old);
        let case = decode::<OrderCase>(&bytes).unwrap();
        assert_eq!(case, expected);
        assert_eq!(timestamp_texts(&case), timestamp_texts(&expected));
        assert_eq!(case.wake_at_ms, None);
        // Written again, it is a version 2 value that reads back unchanged.
        let again = encode(&case);
        assert_eq!(again[0], 2);
        assert_eq!(decode::<OrderCase>(&again).unwrap(), expected);
    }

    #[test]
    fn a_version_1_waiting_carrier_event_is_read_with_every_field() {
        let bytes = v1_bytes(&carrier_v1("9400111899223344556677"));
        let event = decode::<TrackingEvent>(&bytes).unwrap();
        assert_eq!(event, carrier_current("9400111899223344556677"));
        assert_eq!(event.occurred_at.text, "2023-11-14T23:18:20-05:00");
        assert!(event.evidence.is_empty());
        let again = encode(&event);
        assert_eq!(again[0], 2);
        assert_eq!(decode::<TrackingEvent>(&again).unwrap(), event);
    }

    #[test]
    fn the_store_reads_version_1_values_from_its_trees() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let (old, expected) = cases();
        let db = &store.inner.db;
        db.open_tree("cases")
            .unwrap()
            .insert(composite_key(&[&old.shop, &old.order_gid]), v1_bytes(&old))
            .unwrap();
        let waiting = carrier_v1("LZ123");
        db.open_tree("tracking_waiting")
            .unwrap()
            .insert(
                composite_key(&[&waiting.tracking_number, &waiting.event_id]),
                v1_bytes(&waiting),
            )
            .unwrap();
        assert_eq!(
            store
                .case("a.myshopify.com", "gid://shopify/Order/1")
                .unwrap(),
            Some(expected)
        );
        assert_eq!(
            store.waiting_tracking("LZ123").unwrap(),
            vec![carrier_current("LZ123")]
        );
    }

    #[test]
    fn versions_this_build_cannot_read_are_refused() {
        let (old, _) = cases();
        let case = v1_bytes(&old);
        let event = v1_bytes(&carrier_v1("T1"));
        // A newer build's shape cannot be guessed; version 0 was never written.
        for version in [0u8, 3, u8::MAX] {
            let mut bytes = case.clone();
            bytes[0] = version;
            match decode::<OrderCase>(&bytes) {
                Err(DecodeError::Version {
                    found, expected, ..
                }) => assert_eq!((found, expected), (version, 2)),
                other => panic!("case at version {version}: {other:?}"),
            }
            let mut bytes = event.clone();
            bytes[0] = version;
            match decode::<TrackingEvent>(&bytes) {
                Err(DecodeError::Version {
                    found, expected, ..
                }) => assert_eq!((found, expected), (version, 2)),
                other => panic!("carrier event at version {version}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_current_value_labelled_version_1_is_refused_not_misread() {
        let (_, mut case) = cases();
        case.wake_at_ms = Some(1_700_000_000_000);
        let mut bytes = encode(&case);
        bytes[0] = 1;
        assert!(decode::<OrderCase>(&bytes).is_err());
        let mut event = carrier_current("T1");
        event.evidence = vec![format!("sha256:{}", "ab".repeat(32))];
        let mut bytes = encode(&event);
        bytes[0] = 1;
        assert!(matches!(
            decode::<TrackingEvent>(&bytes),
            Err(DecodeError::Trailing { version: 1, .. })
        ));
    }
}
