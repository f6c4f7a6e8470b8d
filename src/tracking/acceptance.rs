//! The acceptance latch (SPEC §7) and "no movement" checks, as pure functions of the events.
//!
//! A tracking number proves nothing: labels are created, and numbers shared, before any carrier
//! has the parcel, and providers tag pre-carrier events as if they were scans. The rule here is
//! the facts' "sound rule": acceptance is the earliest event that is either an explicit
//! acceptance signal or a later physical carrier event (when the acceptance scan was skipped),
//! whose raw text is not pre-advice, whose time is plausible (not before the label was created,
//! less a day, nor before the order), and only while the number is on no other open order.
//!
//! The answer depends on the set of events, never on the order they arrived in: candidates are
//! ranked by their own time, ties broken by kind and id (invariant 6, status is derived).

use super::TrackingEvent;

/// Wording that announces a parcel rather than reports one (the facts' pre-advice list),
/// compared after [`fold`]: case, hyphens, underscores and repeated spaces do not matter.
pub const PRE_ADVICE_PHRASES: [&str; 7] = [
    "label created",
    "shipment information received",
    "pre-shipment",
    "awaiting item",
    "order received",
    "shipping partner facility",
    "item registered",
];

/// Carrier codes that are warehouse or label-system events, not scans: Cainiao's
/// `GWMS_ACCEPT` ("order received successfully") has been tagged `InTransit_002`.
pub const PRE_ADVICE_CODES: [&str; 1] = ["GWMS_ACCEPT"];

/// How long before the label's creation an event may be timed and still count. Carrier times
/// without an offset are read as UTC and may be up to 14 hours off, and clocks differ.
pub const LABEL_SLACK_MS: i64 = 24 * 3_600_000;

const DAY_MS: i64 = 24 * 3_600_000;

/// The event that set the latch, and why it counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acceptance {
    /// The accepting event, with its raw text, code, location and time as evidence.
    pub event: TrackingEvent,
    /// A sentence for the operator: what kind of signal it was and which earlier events were
    /// not counted and why.
    pub why: String,
}

/// Why one event can set the latch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Signal {
    /// The provider classified it as an acceptance scan and its words agree.
    AcceptanceScan,
    /// A physical carrier event (departure, arrival, customs, out for delivery, delivered, …):
    /// whoever scanned it held the parcel, so acceptance happened by then.
    PhysicalEvent,
}

/// Why one event cannot set the latch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAcceptance {
    /// Neither an acceptance scan nor a physical event (label information, an exception, …).
    NotPhysical,
    /// Its wording or code is pre-advice; the text names which.
    PreAdvice(String),
    /// Timed more than [`LABEL_SLACK_MS`] before the label was created.
    BeforeLabel,
    /// Timed before the order was placed.
    BeforeOrder,
}

impl std::fmt::Display for NotAcceptance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotAcceptance::NotPhysical => f.write_str("not a carrier scan"),
            NotAcceptance::PreAdvice(what) => write!(f, "pre-advice {what}"),
            NotAcceptance::BeforeLabel => f.write_str("timed more than a day before the label"),
            NotAcceptance::BeforeOrder => f.write_str("timed before the order"),
        }
    }
}

/// Lowercase, with hyphens and underscores as spaces and runs of spaces as one.
fn fold(text: &str) -> String {
    text.to_lowercase()
        .replace(['-', '_'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The pre-advice phrase or code an event carries, if any (in its raw text or raw code).
pub fn pre_advice(event: &TrackingEvent) -> Option<String> {
    let text = fold(&event.raw_text);
    let code = event.raw_code.as_deref().map(fold).unwrap_or_default();
    for phrase in PRE_ADVICE_PHRASES {
        if text.contains(&fold(phrase)) {
            return Some(format!("\"{phrase}\""));
        }
    }
    for pre in PRE_ADVICE_CODES {
        let pre_folded = fold(pre);
        if code == pre_folded || text.contains(&pre_folded) {
            return Some(format!("`{pre}`"));
        }
    }
    None
}

/// Judges one event on its own against the rule (the other-open-order condition concerns the
/// number, not the event, and is [`accepted_at`]'s).
pub fn judge(
    event: &TrackingEvent,
    label_created_ms: Option<i64>,
    order_created_ms: Option<i64>,
) -> Result<Signal, NotAcceptance> {
    let signal = if event.acceptance_scan {
        Signal::AcceptanceScan
    } else if event.normalized.is_physical() {
        Signal::PhysicalEvent
    } else {
        return Err(NotAcceptance::NotPhysical);
    };
    if let Some(what) = pre_advice(event) {
        return Err(NotAcceptance::PreAdvice(what));
    }
    let at = event.occurred_at.unix_ms;
    if label_created_ms.is_some_and(|label| at < label.saturating_sub(LABEL_SLACK_MS)) {
        return Err(NotAcceptance::BeforeLabel);
    }
    if order_created_ms.is_some_and(|order| at < order) {
        return Err(NotAcceptance::BeforeOrder);
    }
    Ok(signal)
}

/// The order events are ranked in: by their own time, then acceptance scans before other
/// physical events at the same instant, then by id, so that any arrival order gives one answer.
fn rank(event: &TrackingEvent, signal: Option<Signal>) -> (i64, Option<Signal>, &str) {
    (event.occurred_at.unix_ms, signal, &event.event_id)
}

fn describe(event: &TrackingEvent) -> String {
    let mut text = format!("`{}`", event.raw_text);
    if let Some(code) = &event.raw_code {
        text.push_str(&format!(" ({code})"));
    }
    text
}

/// The acceptance latch: the earliest event (by its own time, whatever the arrival order) that
/// is an explicit acceptance scan or a physical carrier event, is not pre-advice, is not timed
/// before the label's creation less a day nor before the order, and never while the number is
/// on another open order. `None` while nothing qualifies.
pub fn accepted_at(
    events: &[TrackingEvent],
    label_created_ms: Option<i64>,
    order_created_ms: Option<i64>,
    number_on_other_open_order: bool,
) -> Option<Acceptance> {
    // A number shared with another open order proves nothing about this parcel: the conflict
    // is an exception for the owner, and no event counts until it is resolved.
    if number_on_other_open_order {
        return None;
    }
    let judged: Vec<(&TrackingEvent, Result<Signal, NotAcceptance>)> = events
        .iter()
        .map(|e| (e, judge(e, label_created_ms, order_created_ms)))
        .collect();
    let (event, signal) = judged
        .iter()
        .filter_map(|(e, verdict)| verdict.as_ref().ok().map(|s| (*e, *s)))
        .min_by(|(a, sa), (b, sb)| rank(a, Some(*sa)).cmp(&rank(b, Some(*sb))))?;

    let kind = match signal {
        Signal::AcceptanceScan => match &event.provider_code {
            Some(code) => format!("acceptance scan ({} {code})", event.provider),
            None => format!("acceptance scan ({})", event.provider),
        },
        Signal::PhysicalEvent => format!(
            "no acceptance scan; first physical carrier event ({})",
            event.normalized
        ),
    };
    let mut why = format!("{kind}: {} at {}", describe(event), event.occurred_at.text);
    if let Some(location) = &event.location {
        why.push_str(&format!(" in {location}"));
    }
    // The earlier events that were passed over, in time order, so that the operator sees what
    // the latch refused to believe (a label, a warehouse event, a scan timed before the order).
    let mut passed_over: Vec<(&TrackingEvent, &NotAcceptance)> = judged
        .iter()
        .filter_map(|(e, verdict)| verdict.as_ref().err().map(|r| (*e, r)))
        .filter(|(e, _)| rank(e, None) < rank(event, None))
        .filter(|(_, reason)| **reason != NotAcceptance::NotPhysical)
        .collect();
    passed_over.sort_by(|(a, _), (b, _)| rank(a, None).cmp(&rank(b, None)));
    passed_over.dedup_by(|(a, _), (b, _)| a.event_id == b.event_id);
    if !passed_over.is_empty() {
        let listed: Vec<String> = passed_over
            .iter()
            .take(3)
            .map(|(e, reason)| format!("{} at {}: {reason}", describe(e), e.occurred_at.text))
            .collect();
        why.push_str(&format!("; not counted before it: {}", listed.join("; ")));
        if passed_over.len() > 3 {
            why.push_str(&format!(" (and {} more)", passed_over.len() - 3));
        }
    }
    Some(Acceptance {
        event: event.clone(),
        why,
    })
}

/// The latest event by its own time (ties by id): the parcel's current state as far as the
/// carrier said.
pub fn latest(events: &[TrackingEvent]) -> Option<&TrackingEvent> {
    events
        .iter()
        .max_by(|a, b| rank(a, None).cmp(&rank(b, None)))
}

/// The latest event that shows the parcel moving: a physical event or an acceptance scan that
/// is not pre-advice. Label information and pre-advice are not movement.
pub fn last_movement(events: &[TrackingEvent]) -> Option<&TrackingEvent> {
    events
        .iter()
        .filter(|e| (e.acceptance_scan || e.normalized.is_physical()) && pre_advice(e).is_none())
        .max_by(|a, b| rank(a, None).cmp(&rank(b, None)))
}

/// "No movement": the parcel moved once, is not delivered or returned, and its last movement
/// is at least `after_ms` before `now_ms`. A parcel that never moved is not stalled but
/// unaccepted, which the workflow checks against the label's time ([`business_deadline_ms`]).
pub fn is_stalled(events: &[TrackingEvent], now_ms: i64, after_ms: i64) -> bool {
    if latest(events).is_some_and(|e| e.normalized.is_final()) {
        return false;
    }
    last_movement(events).is_some_and(|e| now_ms - e.occurred_at.unix_ms >= after_ms)
}

/// The instant `business_days` working days (Monday to Friday, in UTC) after `start_ms`: the
/// deadline of "no acceptance N business days after the label" (SPEC §7, default 3). A start on
/// a weekend counts from the next Monday.
pub fn business_deadline_ms(start_ms: i64, business_days: u32) -> i64 {
    let mut at = start_ms;
    let mut left = business_days;
    while left > 0 {
        at += DAY_MS;
        if is_weekday(at) {
            left -= 1;
        }
    }
    // A start on Saturday plus one business day is Monday at the same hour: the loop above
    // already skips Sunday, so nothing else is needed.
    at
}

fn is_weekday(ms: i64) -> bool {
    use time::Weekday;
    let day = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .map(|t| t.weekday())
        .unwrap_or(Weekday::Monday);
    !matches!(day, Weekday::Saturday | Weekday::Sunday)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::tracking::{ExceptionKind, Normalized, Provider, event_id, parse_carrier_time};

    fn ms(text: &str) -> i64 {
        parse_carrier_time(text).unwrap().unix_ms
    }

    struct Spec {
        provider: Provider,
        at: &'static str,
        text: &'static str,
        code: Option<&'static str>,
        provider_code: &'static str,
        scan: bool,
        normalized: Normalized,
    }

    fn event(spec: Spec) -> TrackingEvent {
        let occurred_at = parse_carrier_time(spec.at).unwrap();
        TrackingEvent {
            provider: spec.provider,
            event_id: event_id(
                spec.provider,
                "LX1",
                occurred_at.unix_ms,
                spec.code,
                spec.text,
                None,
            ),
            tracking_number: "LX1".into(),
            carrier: "usps".into(),
            occurred_at,
            raw_text: spec.text.into(),
            raw_code: spec.code.map(str::to_string),
            location: None,
            provider_code: Some(spec.provider_code.into()),
            acceptance_scan: spec.scan,
            normalized: spec.normalized,
            evidence: Vec::new(),
        }
    }

    /// An AfterShip checkpoint tagged with `subtag` (its tag is the subtag's prefix).
    fn aftership(
        at: &'static str,
        text: &'static str,
        code: &'static str,
        subtag: &'static str,
    ) -> TrackingEvent {
        event(Spec {
            provider: Provider::AfterShip,
            at,
            text,
            code: Some(code),
            provider_code: subtag,
            scan: subtag == "InTransit_002",
            normalized: crate::tracking::aftership::normalize(None, Some(subtag)),
        })
    }

    const LABEL: &str = "2026-11-24T12:00:00Z";
    const ORDER: &str = "2026-11-23T08:00:00Z";

    fn accept(events: &[TrackingEvent]) -> Option<Acceptance> {
        accepted_at(events, Some(ms(LABEL)), Some(ms(ORDER)), false)
    }

    #[test]
    fn an_acceptance_scan_sets_the_latch() {
        let label = aftership(
            "2026-11-24T12:05:00Z",
            "Shipping Label Created, USPS Awaiting Item",
            "GX",
            "InfoReceived_001",
        );
        let accepted = aftership(
            "2026-11-25T14:14:00Z",
            "Accepted at USPS Origin Facility",
            "OA",
            "InTransit_002",
        );
        let departed = aftership(
            "2026-11-25T22:00:00Z",
            "Departed USPS Facility",
            "EF",
            "InTransit_007",
        );
        let acceptance = accept(&[departed, label, accepted.clone()]).unwrap();
        assert_eq!(acceptance.event, accepted);
        assert_eq!(
            acceptance.why,
            "acceptance scan (aftership InTransit_002): `Accepted at USPS Origin Facility` (OA) at 2026-11-25T14:14:00Z"
        );
    }

    #[test]
    fn a_label_alone_is_not_acceptance() {
        let label = aftership(
            "2026-11-24T12:05:00Z",
            "Label Created",
            "MA",
            "InfoReceived_001",
        );
        assert_eq!(accept(&[label]), None);
        // Even tagged in transit, a label is a label.
        let mislabelled = aftership(
            "2026-11-24T12:05:00Z",
            "Shipping label created",
            "MA",
            "InTransit_001",
        );
        assert_eq!(accept(&[mislabelled]), None);
        assert_eq!(accept(&[]), None);
    }

    #[test]
    fn usps_awaiting_item_tagged_in_transit_is_not_acceptance() {
        let awaiting = aftership(
            "2026-11-24T15:00:00Z",
            "Arrived at Shipping Partner Facility, USPS Awaiting Item",
            "PF",
            "InTransit_001",
        );
        assert_eq!(accept(std::slice::from_ref(&awaiting)), None);
        let accepted = aftership(
            "2026-11-26T09:00:00Z",
            "USPS in possession of item",
            "03",
            "InTransit_002",
        );
        let acceptance = accept(&[awaiting, accepted.clone()]).unwrap();
        assert_eq!(acceptance.event, accepted);
        assert!(acceptance.why.contains("not counted before it: `Arrived at Shipping Partner Facility, USPS Awaiting Item` (PF) at 2026-11-24T15:00:00Z: pre-advice \"awaiting item\""), "{}", acceptance.why);
    }

    #[test]
    fn cainiao_gwms_accept_is_not_acceptance_the_pickup_hours_later_is() {
        let gwms = aftership(
            "2026-11-25T01:00:00Z",
            "Order received successfully",
            "GWMS_ACCEPT",
            "InTransit_002",
        );
        let pickup = aftership(
            "2026-11-25T07:30:00Z",
            "Picked up by carrier",
            "PU_PICKUP_SUCCESS",
            "InTransit_002",
        );
        assert_eq!(accept(std::slice::from_ref(&gwms)), None);
        let acceptance = accept(&[gwms.clone(), pickup.clone()]).unwrap();
        assert_eq!(acceptance.event, pickup);
        assert!(
            acceptance.why.contains("pre-advice \"order received\""),
            "{}",
            acceptance.why
        );
        // The code alone gives it away, whatever the text says.
        let quiet = aftership(
            "2026-11-25T01:00:00Z",
            "Processing",
            "GWMS_ACCEPT",
            "InTransit_002",
        );
        assert_eq!(accept(&[quiet]), None);
    }

    #[test]
    fn a_physical_event_counts_when_the_acceptance_scan_was_skipped() {
        let info = aftership(
            "2026-11-24T13:00:00Z",
            "Shipment information received",
            "IR",
            "InfoReceived_001",
        );
        let departed = aftership(
            "2026-11-25T22:00:00Z",
            "Departed Shipping Facility",
            "EF",
            "InTransit_007",
        );
        let delivered = aftership(
            "2026-11-28T16:00:00Z",
            "Delivered, In/At Mailbox",
            "01",
            "Delivered_001",
        );
        let acceptance = accept(&[delivered, departed.clone(), info]).unwrap();
        assert_eq!(acceptance.event, departed);
        assert_eq!(
            acceptance.why,
            "no acceptance scan; first physical carrier event (InTransit): `Departed Shipping Facility` (EF) at 2026-11-25T22:00:00Z"
        );
    }

    #[test]
    fn an_event_timed_before_the_label_or_the_order_does_not_count() {
        // A recycled number: a scan from months ago belongs to another parcel.
        let old = aftership(
            "2026-08-01T10:00:00Z",
            "Accepted at USPS Origin Facility",
            "OA",
            "InTransit_002",
        );
        assert_eq!(accept(std::slice::from_ref(&old)), None);
        // Within the day of slack before the label: a carrier clock or a local time read as UTC.
        let early = aftership(
            "2026-11-24T01:00:00Z",
            "Accepted at USPS Origin Facility",
            "OA",
            "InTransit_002",
        );
        assert_eq!(accept(std::slice::from_ref(&early)).unwrap().event, early);
        // Without a known label, the order still bounds it.
        let before_order = aftership(
            "2026-11-23T07:00:00Z",
            "Accepted at USPS Origin Facility",
            "OA",
            "InTransit_002",
        );
        assert_eq!(
            accepted_at(
                std::slice::from_ref(&before_order),
                None,
                Some(ms(ORDER)),
                false
            ),
            None
        );
        let real = aftership(
            "2026-11-25T14:14:00Z",
            "Accepted at USPS Origin Facility",
            "OA",
            "InTransit_002",
        );
        let acceptance = accept(&[old, real.clone()]).unwrap();
        assert_eq!(acceptance.event, real);
        assert!(
            acceptance
                .why
                .contains("timed more than a day before the label"),
            "{}",
            acceptance.why
        );
    }

    #[test]
    fn a_number_on_another_open_order_never_sets_the_latch() {
        let accepted = aftership(
            "2026-11-25T14:14:00Z",
            "Accepted at USPS Origin Facility",
            "OA",
            "InTransit_002",
        );
        assert_eq!(
            accepted_at(&[accepted], Some(ms(LABEL)), Some(ms(ORDER)), true),
            None
        );
    }

    #[test]
    fn seventeen_track_pickups_are_acceptance_scans() {
        let picked = event(Spec {
            provider: Provider::SeventeenTrack,
            at: "2026-11-25T06:20:00Z",
            text: "Picked up",
            code: Some("InTransit_PickedUp"),
            provider_code: "InTransit_PickedUp",
            scan: true,
            normalized: Normalized::InTransit,
        });
        assert_eq!(accept(std::slice::from_ref(&picked)).unwrap().event, picked);
    }

    #[test]
    fn exceptions_and_returns_alone_are_not_acceptance() {
        let lost = event(Spec {
            provider: Provider::AfterShip,
            at: "2026-11-26T10:00:00Z",
            text: "Shipment lost",
            code: None,
            provider_code: "Exception_013",
            scan: false,
            normalized: Normalized::Exception(ExceptionKind::Lost),
        });
        assert_eq!(accept(&[lost]), None);
    }

    #[test]
    fn stalls_are_measured_from_the_last_movement() {
        let hour = 3_600_000;
        let label = aftership(
            "2026-11-24T12:05:00Z",
            "Label Created",
            "MA",
            "InfoReceived_001",
        );
        let accepted = aftership(
            "2026-11-25T14:00:00Z",
            "Accepted at USPS Origin Facility",
            "OA",
            "InTransit_002",
        );
        let delivered = aftership("2026-11-27T14:00:00Z", "Delivered", "01", "Delivered_001");
        let after = 72 * hour;
        assert!(
            !is_stalled(
                std::slice::from_ref(&label),
                ms(LABEL) + 30 * 24 * hour,
                after
            ),
            "never moved: unaccepted, not stalled"
        );
        let events = [label.clone(), accepted.clone()];
        assert!(!is_stalled(&events, ms("2026-11-28T13:59:00Z"), after));
        assert!(is_stalled(&events, ms("2026-11-28T14:00:00Z"), after));
        assert_eq!(last_movement(&events), Some(&accepted));
        let done = [label, accepted, delivered.clone()];
        assert!(!is_stalled(&done, ms("2026-12-30T00:00:00Z"), after));
        assert_eq!(latest(&done), Some(&delivered));
    }

    #[test]
    fn business_deadlines_skip_weekends() {
        // 2026-11-25 is a Wednesday.
        let wednesday = ms("2026-11-25T10:00:00Z");
        assert_eq!(
            business_deadline_ms(wednesday, 3),
            ms("2026-11-30T10:00:00Z")
        );
        assert_eq!(business_deadline_ms(wednesday, 0), wednesday);
        let saturday = ms("2026-11-28T10:00:00Z");
        assert_eq!(
            business_deadline_ms(saturday, 1),
            ms("2026-11-30T10:00:00Z")
        );
        let friday = ms("2026-11-27T10:00:00Z");
        assert_eq!(business_deadline_ms(friday, 7), ms("2026-12-08T10:00:00Z"));
    }

    /// The pool the property test draws histories from: the known false positives, real scans,
    /// and events around the label and order times.
    fn pool() -> Vec<TrackingEvent> {
        vec![
            aftership(
                "2026-11-24T12:05:00Z",
                "Shipping Label Created, USPS Awaiting Item",
                "GX",
                "InfoReceived_001",
            ),
            aftership(
                "2026-11-24T15:00:00Z",
                "Arrived at Shipping Partner Facility, USPS Awaiting Item",
                "PF",
                "InTransit_001",
            ),
            aftership(
                "2026-11-25T01:00:00Z",
                "Order received successfully",
                "GWMS_ACCEPT",
                "InTransit_002",
            ),
            aftership(
                "2026-11-25T07:30:00Z",
                "Picked up by carrier",
                "PU_PICKUP_SUCCESS",
                "InTransit_002",
            ),
            aftership(
                "2026-11-25T07:30:00Z",
                "Departed facility",
                "EF",
                "InTransit_007",
            ),
            aftership(
                "2026-11-25T14:14:00Z",
                "Accepted at USPS Origin Facility",
                "OA",
                "InTransit_002",
            ),
            aftership(
                "2026-11-26T03:00:00Z",
                "Arrived at hub",
                "AR",
                "InTransit_003",
            ),
            aftership(
                "2026-11-27T09:00:00Z",
                "Out for delivery",
                "OF",
                "OutForDelivery_001",
            ),
            aftership("2026-11-27T15:00:00Z", "Delivered", "01", "Delivered_001"),
            aftership(
                "2026-08-01T10:00:00Z",
                "Accepted at USPS Origin Facility",
                "OA",
                "InTransit_002",
            ),
            aftership(
                "2026-11-23T07:59:00Z",
                "Departed facility",
                "EF",
                "InTransit_007",
            ),
            event(Spec {
                provider: Provider::AfterShip,
                at: "2026-11-26T10:00:00Z",
                text: "Customs clearance delayed",
                code: None,
                provider_code: "Exception_004",
                scan: false,
                normalized: Normalized::Exception(ExceptionKind::Customs),
            }),
        ]
    }

    /// The latch computed the slow, obvious way: every qualifying event, the earliest.
    fn by_definition(events: &[TrackingEvent]) -> Option<i64> {
        events
            .iter()
            .filter(|e| judge(e, Some(ms(LABEL)), Some(ms(ORDER))).is_ok())
            .map(|e| e.occurred_at.unix_ms)
            .min()
    }

    fn history() -> impl Strategy<Value = (Vec<TrackingEvent>, Vec<TrackingEvent>)> {
        let pool = pool();
        proptest::sample::subsequence(pool.clone(), 0..=pool.len())
            .prop_flat_map(|events| (Just(events.clone()), Just(events).prop_shuffle()))
    }

    proptest! {
        #[test]
        fn checkpoints_in_any_arrival_order_give_the_same_acceptance((events, shuffled) in history()) {
            let a = accept(&events);
            let b = accept(&shuffled);
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(a.map(|a| a.event.occurred_at.unix_ms), by_definition(&events));
            // Repeated deliveries of the same checkpoints change nothing either.
            let doubled: Vec<TrackingEvent> = shuffled.iter().chain(events.iter()).cloned().collect();
            prop_assert_eq!(accept(&doubled), accept(&events));
            prop_assert_eq!(latest(&events).map(|e| e.event_id.clone()), latest(&shuffled).map(|e| e.event_id.clone()));
        }
    }
}
