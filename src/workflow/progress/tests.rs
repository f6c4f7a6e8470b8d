use proptest::prelude::*;

use super::*;
use crate::order::Timestamp;
use crate::suppliers::{PackedParcel, ParcelLine};
use crate::tracking::{ExceptionKind as CarrierException, Provider};
use crate::workflow::derive::tests::{own, shipment, supplier};
use crate::workflow::model::{Actor, Evidence, Source};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// Thursday 2025-11-20, 12:00 UTC.
const THURSDAY_NOON: i64 = 1_763_640_000_000;

fn packed_and_labelled(number: &str, at_ms: i64) -> Shipment {
    let mut s = shipment();
    s.record(supplier(
        "packed",
        at_ms,
        EventKind::Packed {
            parcels: vec![PackedParcel {
                parcel_id: "P1".into(),
                lines: vec![ParcelLine {
                    line_id: "gid://shopify/LineItem/1".into(),
                    quantity: 1,
                }],
                weight_grams: None,
                dimensions_cm: None,
                photos: Vec::new(),
            }],
        },
    ));
    s.record(label(number, at_ms, "label-1"));
    s
}

fn label(number: &str, at_ms: i64, id: &str) -> Evidence {
    supplier(
        id,
        at_ms,
        EventKind::LabelCreated {
            parcel_id: Some("P1".into()),
            carrier: "UPS".into(),
            tracking_number: number.into(),
            tracking_url: None,
        },
    )
}

fn scan(number: &str, id: &str, at_ms: i64, text: &str, status: Normalized) -> Evidence {
    Evidence {
        id: format!("tracking:{id}"),
        at_ms,
        recorded_ms: at_ms,
        actor: Actor::Carrier("aftership".into()),
        source: Source::Manual,
        kind: EvidenceKind::Carrier(TrackingEvent {
            provider: Provider::AfterShip,
            event_id: id.into(),
            tracking_number: number.into(),
            carrier: "ups".into(),
            occurred_at: Timestamp::from_unix_ms(at_ms),
            raw_text: text.into(),
            raw_code: None,
            location: Some("LOUISVILLE, KY".into()),
            provider_code: None,
            acceptance_scan: id.starts_with("accept"),
            normalized: status,
            evidence: Vec::new(),
        }),
    }
}

fn fulfilled_with(s: &mut Shipment, number: &str, at_ms: i64) {
    s.record(own(
        "f1.intended",
        at_ms,
        EvidenceKind::FulfillmentIntended {
            key: "SG-0000000001.f1".into(),
            fulfillment_order_id: s.fulfillment_order_id.clone(),
            lines: vec![("gid://shopify/FulfillmentOrderLineItem/1".into(), 1)],
            parcels: vec!["P1".into()],
            numbers: vec![number.into()],
        },
    ));
    s.record(own(
        "f1.outcome",
        at_ms,
        EvidenceKind::FulfillmentCreated {
            key: "SG-0000000001.f1".into(),
            fulfillment_id: "gid://shopify/Fulfillment/7".into(),
        },
    ));
}

fn settings() -> WorkflowSettings {
    WorkflowSettings::default()
}

#[test]
fn label_statuses_are_never_posted_as_progress() {
    for status in [
        Normalized::NotFound,
        Normalized::InfoReceived,
        Normalized::Expired,
        Normalized::Unknown("Whatever".into()),
        Normalized::Exception(CarrierException::Other),
    ] {
        assert_eq!(shopify_status(&status), None, "{status}");
    }
    assert_eq!(shopify_status(&Normalized::Delivered), Some("DELIVERED"));
    assert_eq!(
        shopify_status(&Normalized::AvailableForPickup),
        Some("READY_FOR_PICKUP")
    );
    assert_eq!(
        shopify_status(&Normalized::Exception(CarrierException::Customs)),
        Some("DELAYED")
    );
    assert_eq!(shopify_status(&Normalized::Returned), Some("FAILURE"));
}

#[test]
fn a_label_is_overdue_after_three_business_days_not_three_days() {
    // Labelled on a Thursday: the weekend does not count, so the deadline is Tuesday noon.
    let s = packed_and_labelled("1ZTEST0001", THURSDAY_NOON);
    let (overdue_now, next) = overdue(&s, None, THURSDAY_NOON + 4 * DAY, &settings());
    assert!(overdue_now.is_empty(), "Monday is within the three");
    assert_eq!(next, Some(THURSDAY_NOON + 5 * DAY));
    let (late, next) = overdue(&s, None, THURSDAY_NOON + 5 * DAY, &settings());
    assert_eq!(next, None);
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].kind, ExceptionKind::NoCarrierMovement);
    assert_eq!(late[0].number, "1ZTEST0001");
    assert!(!late[0].awaiting_label);
}

#[test]
fn a_chase_starts_the_clock_again_and_a_new_label_is_waited_for() {
    let mut s = packed_and_labelled("1ZTEST0001", THURSDAY_NOON);
    let tuesday = THURSDAY_NOON + 5 * DAY;
    s.record(own(
        "chase",
        tuesday,
        EvidenceKind::ParcelFollowUp {
            action: "chase".into(),
            tracking_number: "1ZTEST0001".into(),
        },
    ));
    let (none, next) = overdue(&s, None, tuesday + HOUR, &settings());
    assert!(none.is_empty());
    assert_eq!(
        next,
        Some(tuesday + 3 * DAY),
        "Tuesday + 3 business days is Friday"
    );

    s.record(own(
        "new-label",
        tuesday + 3 * DAY,
        EvidenceKind::ParcelFollowUp {
            action: "new_label".into(),
            tracking_number: "1ZTEST0001".into(),
        },
    ));
    let (waiting, next) = overdue(&s, None, tuesday + 30 * DAY, &settings());
    assert_eq!(next, None);
    assert!(waiting[0].awaiting_label, "{waiting:?}");
    assert_eq!(timers(&s, None, tuesday + 30 * DAY, &settings()).0.len(), 1);

    // The new label replaces the number: its own clock starts.
    s.record(label("1ZTEST0002", tuesday + 31 * DAY, "label-2"));
    let (none, next) = overdue(&s, None, tuesday + 31 * DAY, &settings());
    assert!(none.is_empty(), "{none:?}");
    assert!(next.is_some());
    assert_eq!(derive::labels(&s).len(), 1, "one parcel, one current label");
}

#[test]
fn tracking_stalls_only_after_the_fulfillment_and_never_once_delivered() {
    let mut s = packed_and_labelled("1ZTEST0001", THURSDAY_NOON);
    s.record(scan(
        "1ZTEST0001",
        "accept-1",
        THURSDAY_NOON + HOUR,
        "Pickup Scan",
        Normalized::InTransit,
    ));
    // Accepted but not fulfilled: the gate's business, no timer.
    assert_eq!(
        overdue(&s, None, THURSDAY_NOON + 60 * DAY, &settings()),
        (vec![], None)
    );
    fulfilled_with(&mut s, "1ZTEST0001", THURSDAY_NOON + 2 * HOUR);
    let (stalled, _) = overdue(&s, None, THURSDAY_NOON + 60 * DAY, &settings());
    assert_eq!(stalled.len(), 1);
    assert_eq!(stalled[0].kind, ExceptionKind::TrackingStalled);
    // Five business days from Thursday 13:00 is the next Thursday 13:00.
    let (none, next) = overdue(&s, None, THURSDAY_NOON + 6 * DAY, &settings());
    assert!(none.is_empty());
    assert_eq!(next, Some(THURSDAY_NOON + HOUR + 7 * DAY));

    s.record(scan(
        "1ZTEST0001",
        "delivered-1",
        THURSDAY_NOON + 3 * DAY,
        "Delivered",
        Normalized::Delivered,
    ));
    assert_eq!(
        overdue(&s, None, THURSDAY_NOON + 60 * DAY, &settings()),
        (vec![], None)
    );
}

fn journey() -> Vec<Evidence> {
    vec![
        scan(
            "1ZTEST0001",
            "info-1",
            THURSDAY_NOON,
            "Shipment information received",
            Normalized::InfoReceived,
        ),
        scan(
            "1ZTEST0001",
            "accept-1",
            THURSDAY_NOON + HOUR,
            "Pickup Scan",
            Normalized::InTransit,
        ),
        scan(
            "1ZTEST0001",
            "depart-1",
            THURSDAY_NOON + 5 * HOUR,
            "Departed Facility",
            Normalized::InTransit,
        ),
        scan(
            "1ZTEST0001",
            "customs-1",
            THURSDAY_NOON + DAY,
            "Held in customs",
            Normalized::Exception(CarrierException::Customs),
        ),
        scan(
            "1ZTEST0001",
            "arrive-1",
            THURSDAY_NOON + 2 * DAY,
            "Arrived at Facility",
            Normalized::InTransit,
        ),
        scan(
            "1ZTEST0001",
            "ofd-1",
            THURSDAY_NOON + 3 * DAY,
            "Out For Delivery",
            Normalized::OutForDelivery,
        ),
        scan(
            "1ZTEST0001",
            "delivered-1",
            THURSDAY_NOON + 3 * DAY + 5 * HOUR,
            "Delivered",
            Normalized::Delivered,
        ),
    ]
}

proptest! {
    /// Whatever order the carrier's checkpoints arrive in, Shopify is told the same story:
    /// the pickup, then each change of status, by the carrier's time.
    #[test]
    fn progress_is_the_same_in_any_arrival_order(order in Just(journey()).prop_shuffle()) {
        let mut s = packed_and_labelled("1ZTEST0001", THURSDAY_NOON);
        for e in order {
            s.record(e);
        }
        let statuses: Vec<&str> = progress_of(&s, &["1ZTEST0001".to_string()], None)
            .into_iter()
            .map(|(status, ..)| status)
            .collect();
        prop_assert_eq!(
            statuses,
            ["CARRIER_PICKED_UP", "DELAYED", "IN_TRANSIT", "OUT_FOR_DELIVERY", "DELIVERED"]
        );
    }
}

#[test]
fn nothing_is_posted_before_the_carrier_accepted() {
    let mut s = packed_and_labelled("1ZTEST0001", THURSDAY_NOON);
    s.record(scan(
        "1ZTEST0001",
        "info-1",
        THURSDAY_NOON,
        "Shipment information received",
        Normalized::InfoReceived,
    ));
    assert!(progress_of(&s, &["1ZTEST0001".to_string()], None).is_empty());
}

#[test]
fn parcels_sharing_one_waybill_each_keep_the_number_and_shopify_gets_it_once() {
    let mut s = packed_and_labelled("MASTER123", THURSDAY_NOON);
    s.record(supplier(
        "packed-2",
        THURSDAY_NOON,
        EventKind::Packed {
            parcels: vec![PackedParcel {
                parcel_id: "P2".into(),
                lines: vec![ParcelLine {
                    line_id: "gid://shopify/LineItem/2".into(),
                    quantity: 1,
                }],
                weight_grams: None,
                dimensions_cm: None,
                photos: Vec::new(),
            }],
        },
    ));
    s.record(supplier(
        "label-2",
        THURSDAY_NOON + 1,
        EventKind::LabelCreated {
            parcel_id: Some("P2".into()),
            carrier: "UPS".into(),
            tracking_number: "MASTER123".into(),
            tracking_url: None,
        },
    ));
    let parcels: Vec<Option<String>> = derive::labels(&s).into_iter().map(|l| l.0).collect();
    assert_eq!(parcels, [Some("P1".to_string()), Some("P2".to_string())]);
    let tracking = derive::tracking(&s, &["P1".to_string(), "P2".to_string()]);
    assert_eq!(tracking.numbers, ["MASTER123"]);
}

#[test]
fn a_fulfillment_of_several_parcels_is_delivered_when_its_last_parcel_is() {
    let mut s = packed_and_labelled("1ZTEST0001", THURSDAY_NOON);
    for (number, id, at, status) in [
        (
            "1ZTEST0001",
            "accept-1",
            THURSDAY_NOON + HOUR,
            Normalized::InTransit,
        ),
        (
            "1ZTEST0002",
            "accept-2",
            THURSDAY_NOON + HOUR,
            Normalized::InTransit,
        ),
        (
            "1ZTEST0001",
            "delivered-1",
            THURSDAY_NOON + DAY,
            Normalized::Delivered,
        ),
    ] {
        s.record(scan(number, id, at, "scan", status));
    }
    let numbers = ["1ZTEST0001".to_string(), "1ZTEST0002".to_string()];
    let statuses = |s: &Shipment| -> Vec<&'static str> {
        progress_of(s, &numbers, None)
            .into_iter()
            .map(|(status, ..)| status)
            .collect()
    };
    assert_eq!(
        statuses(&s),
        ["CARRIER_PICKED_UP"],
        "one box is still moving"
    );
    s.record(scan(
        "1ZTEST0002",
        "delivered-2",
        THURSDAY_NOON + 2 * DAY,
        "Delivered",
        Normalized::Delivered,
    ));
    s.record(scan(
        "1ZTEST0002",
        "late-scan",
        THURSDAY_NOON + 3 * DAY,
        "Arrived at facility",
        Normalized::InTransit,
    ));
    let progress = progress_of(&s, &numbers, None);
    assert_eq!(
        progress.iter().map(|(s, ..)| *s).collect::<Vec<_>>(),
        ["CARRIER_PICKED_UP", "DELIVERED"],
        "delivered at the last box, and nothing after"
    );
    assert_eq!(progress[1].1, THURSDAY_NOON + 2 * DAY);
}

#[test]
fn history_from_before_the_upgrade_is_not_posted_but_what_follows_is() {
    let mut s = packed_and_labelled("1ZTEST0001", THURSDAY_NOON);
    for e in journey().into_iter().take(3) {
        s.record(e);
    }
    fulfilled_with(&mut s, "1ZTEST0001", THURSDAY_NOON + 2 * HOUR);
    let f = &fulfilled(&s)[0];
    let statuses = |s: &Shipment| -> Vec<&'static str> {
        unposted(s, &fulfilled(s)[0], None)
            .1
            .into_iter()
            .map(|(status, ..)| status)
            .collect()
    };
    assert_eq!(statuses(&s), ["CARRIER_PICKED_UP"]);
    // An upgraded case: what the old format knew stays untold.
    s.record(own(
        "f1.skipped",
        THURSDAY_NOON + 2 * HOUR,
        EvidenceKind::ProgressSkipped {
            key: f.key.clone(),
            until_ms: THURSDAY_NOON + 5 * HOUR,
        },
    ));
    assert!(statuses(&s).is_empty());
    for e in journey().into_iter().skip(3) {
        s.record(e);
    }
    assert_eq!(
        statuses(&s),
        ["DELAYED", "IN_TRANSIT", "OUT_FOR_DELIVERY", "DELIVERED"],
        "what happens after the upgrade is news"
    );
}

#[test]
fn a_parcel_whose_first_scan_is_its_delivery_is_picked_up_and_delivered() {
    let mut s = packed_and_labelled("1ZTEST0001", THURSDAY_NOON);
    s.record(scan(
        "1ZTEST0001",
        "delivered-1",
        THURSDAY_NOON + DAY,
        "Delivered",
        Normalized::Delivered,
    ));
    let statuses: Vec<(&str, i64)> = progress_of(&s, &["1ZTEST0001".to_string()], None)
        .into_iter()
        .map(|(status, at, ..)| (status, at))
        .collect();
    assert_eq!(
        statuses,
        [
            ("CARRIER_PICKED_UP", THURSDAY_NOON + DAY),
            ("DELIVERED", THURSDAY_NOON + DAY)
        ]
    );
}
