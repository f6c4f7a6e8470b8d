use proptest::prelude::*;

use super::*;
use crate::order::Timestamp;
use crate::suppliers::{Day, PackedParcel, ParcelLine, SupplierEvent};
use crate::workflow::model::{Actor, Evidence, Shipment, ShipmentLine, Source};

const LINES: [&str; 2] = ["gid://shopify/LineItem/1", "gid://shopify/LineItem/2"];

/// The test shipment: two lines of one fulfillment order (the progress tests use it too).
pub(in crate::workflow) fn shipment() -> Shipment {
    Shipment {
        id: "SG-0000000001".into(),
        supplier: "acme".into(),
        fulfillment_order_id: "gid://shopify/FulfillmentOrder/1".into(),
        lines: vec![
            ShipmentLine {
                fulfillment_order_line_id: "gid://shopify/FulfillmentOrderLineItem/1".into(),
                line_item_id: LINES[0].into(),
                sku: "MUG-RED".into(),
                variant_title: None,
                quantity: 2,
            },
            ShipmentLine {
                fulfillment_order_line_id: "gid://shopify/FulfillmentOrderLineItem/2".into(),
                line_item_id: LINES[1].into(),
                sku: "TEE-M".into(),
                variant_title: None,
                quantity: 1,
            },
        ],
        created_ms: 0,
        evidence: Vec::new(),
    }
}

pub(in crate::workflow) fn supplier(id: &str, at_ms: i64, kind: EventKind) -> Evidence {
    Evidence {
        id: id.into(),
        at_ms,
        recorded_ms: at_ms,
        actor: Actor::Supplier("acme".into()),
        source: Source::Manual,
        kind: EvidenceKind::Supplier(SupplierEvent {
            id: id.into(),
            shipment_id: "SG-0000000001".into(),
            occurred_at: Timestamp::from_unix_ms(at_ms),
            kind,
        }),
    }
}

pub(in crate::workflow) fn own(id: &str, at_ms: i64, kind: EvidenceKind) -> Evidence {
    Evidence {
        id: id.into(),
        at_ms,
        recorded_ms: at_ms,
        actor: Actor::System,
        source: Source::Workflow,
        kind,
    }
}

/// Evidence for a generated history: an index into a catalogue of everything that can happen
/// to the test shipment, with a time. The catalogue is rich in conflicts on purpose: a short
/// and a confirmation of the same line, an offer and its decision, a cancel and its reply.
fn catalogue(choice: u8, at_ms: i64, n: usize) -> Evidence {
    let id = format!("e{n:03}");
    let line = LINES[(choice as usize / 16) % 2];
    match choice % 16 {
        0 => own(
            &id,
            at_ms,
            EvidenceKind::SubmissionDelivered {
                revision: 1,
                supplier_ref: None,
            },
        ),
        1 | 2 => supplier(
            &id,
            at_ms,
            EventKind::LineConfirmed {
                line_id: line.into(),
                sku: if line == LINES[0] { "MUG-RED" } else { "TEE-M" }.into(),
                variant: None,
                quantity: 2,
                cost: None,
                ship_by: None,
                hold_until: None,
            },
        ),
        3 => supplier(
            &id,
            at_ms,
            EventKind::LineShort {
                line_id: line.into(),
                quantity_short: 1,
                restock_date: Some(Day::parse("2026-12-01").unwrap()),
                reason: None,
            },
        ),
        4 => supplier(
            &id,
            at_ms,
            EventKind::SubstituteOffered {
                line_id: line.into(),
                offered_sku: "MUG-BLUE".into(),
                offered_variant: None,
                differences: "blue".into(),
                photos: vec![],
                price_change: None,
                expires_at: None,
            },
        ),
        5 => supplier(
            &id,
            at_ms,
            EventKind::CheckReported {
                check_json: r#"{"result":"pass"}"#.into(),
            },
        ),
        6 => supplier(
            &id,
            at_ms,
            EventKind::CheckReported {
                check_json: r#"{"result":"fail"}"#.into(),
            },
        ),
        7 => supplier(
            &id,
            at_ms,
            EventKind::Packed {
                parcels: vec![PackedParcel {
                    parcel_id: "P1".into(),
                    lines: LINES
                        .iter()
                        .map(|l| ParcelLine {
                            line_id: l.to_string(),
                            quantity: 2,
                        })
                        .collect(),
                    weight_grams: Some(500),
                    dimensions_cm: None,
                    photos: vec![],
                }],
            },
        ),
        8 => supplier(
            &id,
            at_ms,
            EventKind::LabelCreated {
                parcel_id: Some("P1".into()),
                carrier: "UPS".into(),
                tracking_number: "1Z1".into(),
                tracking_url: None,
            },
        ),
        9 => supplier(
            &id,
            at_ms,
            EventKind::Rejected {
                reason: "no".into(),
            },
        ),
        10 => own(
            &id,
            at_ms,
            EvidenceKind::CancelRequested {
                reason: "order cancelled".into(),
            },
        ),
        11 => supplier(&id, at_ms, EventKind::Cancelled { reason: None }),
        12 => own(
            &id,
            at_ms,
            EvidenceKind::LineChanged {
                line_item_id: line.into(),
                quantity: 1,
                reason: "edited".into(),
            },
        ),
        13 => own(
            &id,
            at_ms,
            EvidenceKind::LineChanged {
                line_item_id: line.into(),
                quantity: 0,
                reason: "rerouted".into(),
            },
        ),
        14 => supplier(
            &id,
            at_ms,
            EventKind::HandedOver {
                parcel_id: Some("P1".into()),
                carrier: None,
                tracking_number: None,
            },
        ),
        _ => supplier(
            &id,
            at_ms,
            EventKind::Received {
                supplier_ref: Some("PO-1".into()),
            },
        ),
    }
}

/// A decision on the first offer in the history, if the history has one.
fn with_decision(mut evidence: Vec<Evidence>, approve: Option<bool>) -> Vec<Evidence> {
    let offer = evidence.iter().find(|e| {
        matches!(&e.kind, EvidenceKind::Supplier(ev) if matches!(ev.kind, EventKind::SubstituteOffered { .. }))
    });
    if let (Some(offer), Some(approve)) = (offer, approve) {
        let EvidenceKind::Supplier(ev) = &offer.kind else {
            unreachable!()
        };
        let decision = own(
            "decision",
            offer.at_ms + 1,
            EvidenceKind::SubstituteDecided {
                line_item_id: ev.kind.line_ids()[0].to_string(),
                offer: offer.id.clone(),
                approve,
            },
        );
        evidence.push(decision);
    }
    evidence
}

fn history() -> impl Strategy<Value = Vec<Evidence>> {
    (
        prop::collection::vec((any::<u8>(), 0i64..20), 0..12),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(events, approve)| {
            let evidence = events
                .into_iter()
                .enumerate()
                .map(|(n, (choice, at))| catalogue(choice, 1_000 * at, n))
                .collect();
            with_decision(evidence, approve)
        })
}

fn derived(evidence: &[Evidence]) -> (ShipmentStatus, Vec<Condition>, Vec<(String, i64)>) {
    let mut s = shipment();
    for e in evidence {
        s.record(e.clone());
    }
    let mut conditions = conditions(&s);
    conditions.sort();
    (status(&s, &[], None), conditions, current_lines(&s))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Invariant 6: the same evidence in any arrival order gives the same status, the same
    /// problems and the same lines.
    #[test]
    fn the_same_evidence_in_any_order_gives_the_same_status(
        evidence in history(),
        seed in any::<u64>(),
    ) {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let expected = derived(&evidence);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for _ in 0..8 {
            let mut shuffled = evidence.clone();
            shuffled.shuffle(&mut rng);
            prop_assert_eq!(&derived(&shuffled), &expected);
        }
        let mut reversed = evidence.clone();
        reversed.reverse();
        prop_assert_eq!(derived(&reversed), expected);
    }
}

#[test]
fn a_later_confirmation_supersedes_an_earlier_shortage_whichever_arrives_first() {
    let short = catalogue(3, 1_000, 1);
    let confirmed = catalogue(1, 2_000, 2);
    for order in [
        vec![short.clone(), confirmed.clone()],
        vec![confirmed, short],
    ] {
        let mut s = shipment();
        for e in order {
            s.record(e);
        }
        assert!(conditions(&s).is_empty(), "{:?}", conditions(&s));
        assert_eq!(
            line_states(&s)[0].1,
            LineState::Confirmed,
            "the confirmation happened last"
        );
    }
}

#[test]
fn the_status_walks_the_ladder() {
    let mut s = shipment();
    assert_eq!(status(&s, &[], None), ShipmentStatus::AwaitingSubmission);
    s.record(catalogue(0, 1, 0));
    assert_eq!(status(&s, &[], None), ShipmentStatus::AwaitingConfirmation);
    s.record(catalogue(1, 2, 1));
    assert_eq!(
        status(&s, &[], None),
        ShipmentStatus::AwaitingConfirmation,
        "one of two lines"
    );
    s.record(catalogue(17, 3, 2));
    assert_eq!(status(&s, &[], None), ShipmentStatus::AwaitingCheck);
    s.record(catalogue(6, 4, 3));
    assert_eq!(
        status(&s, &[], None),
        ShipmentStatus::AwaitingCheck,
        "a failed check"
    );
    s.record(catalogue(5, 5, 4));
    assert_eq!(status(&s, &[], None), ShipmentStatus::AwaitingPacking);
    s.record(catalogue(7, 6, 5));
    assert_eq!(status(&s, &[], None), ShipmentStatus::AwaitingLabel);
    s.record(catalogue(14, 7, 6));
    assert_eq!(
        status(&s, &[], None),
        ShipmentStatus::AwaitingLabel,
        "a handover claim is not a label"
    );
    s.record(catalogue(8, 8, 7));
    assert_eq!(status(&s, &[], None), ShipmentStatus::AwaitingAcceptance);
}

#[test]
fn a_confirmation_of_another_sku_is_a_substitute_until_approved() {
    let mut s = shipment();
    let mut wrong = catalogue(1, 1_000, 1);
    if let EvidenceKind::Supplier(ev) = &mut wrong.kind
        && let EventKind::LineConfirmed { sku, .. } = &mut ev.kind
    {
        *sku = "MUG-BLUE".into();
    }
    s.record(wrong);
    let found = conditions(&s);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].kind, ExceptionKind::SubstituteOffered);
    assert!(found[0].summary.contains("MUG-BLUE instead of MUG-RED"));
    s.record(own(
        "d",
        2_000,
        EvidenceKind::SubstituteDecided {
            line_item_id: LINES[0].into(),
            offer: "e001".into(),
            approve: true,
        },
    ));
    assert!(conditions(&s).is_empty());
    assert_eq!(line_states(&s)[0].1, LineState::Confirmed);
}

#[test]
fn a_cancel_request_waits_for_the_supplier() {
    let mut s = shipment();
    s.record(catalogue(0, 1, 0));
    s.record(catalogue(10, 2, 1));
    let found = conditions(&s);
    assert_eq!(found[0].kind, ExceptionKind::CancelledAfterSubmission);
    s.record(catalogue(11, 3, 2));
    assert!(conditions(&s).is_empty());
    assert_eq!(status(&s, &[], None), ShipmentStatus::Cancelled);
}
