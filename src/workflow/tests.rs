//! The workflow against a real store, with in-process adapters: planning, exceptions and their
//! decisions, holds as intents, and the send path under simulated crashes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::derive::{self, ShipmentStatus};
use super::effect::{Action, Effect, EffectState};
use super::model::{Actor, Decision, ExceptionKind, HoldState, OrderCase, Source};
use super::sender::{CrashPoint, Sender, SenderSettings};
use super::{Routes, Workflow, WorkflowSettings};
use crate::clock::Clock;
use crate::order::{
    Address, FulfillmentOrder, FulfillmentOrderLine, FulfillmentOrderStatus, Hold, LineItem,
    OrderMirror, Timestamp,
};
use crate::store::{Store, StoreOptions};
use crate::suppliers::{
    BoxFuture, Day, EventKind, LookupOutcome, SendOutcome, SupplierAdapter, SupplierEvent,
    SupplierMessage,
};

const SHOP: &str = "shop.myshopify.com";
const ORDER: &str = "gid://shopify/Order/1";
const FO: &str = "gid://shopify/FulfillmentOrder/1";
const START_MS: i64 = 1_764_000_000_000;

/// Routes by SKU prefix: `MUG-` to acme then bravo, `TEE-` to bravo; anything else nowhere.
struct TestRoutes;

impl Routes for TestRoutes {
    fn chain(&self, sku: Option<&str>) -> Vec<String> {
        match sku {
            Some(s) if s.starts_with("MUG-") => vec!["acme".into(), "bravo".into()],
            Some(s) if s.starts_with("TEE-") => vec!["bravo".into()],
            _ => Vec::new(),
        }
    }

    fn has_supplier(&self, name: &str) -> bool {
        ["acme", "bravo", "charlie"].contains(&name)
    }
}

/// A supplier that records what reaches it; `lose_answers` makes it keep a message but report
/// an unknown outcome (a lost response), `down` makes it unreachable.
#[derive(Default)]
struct FakeSupplier {
    received: Mutex<Vec<SupplierMessage>>,
    lose_answers: Mutex<usize>,
    down: Mutex<bool>,
}

impl FakeSupplier {
    fn received_keys(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|m| m.key.clone())
            .collect()
    }
}

impl SupplierAdapter for FakeSupplier {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn send<'a>(&'a self, message: &'a SupplierMessage) -> BoxFuture<'a, SendOutcome> {
        Box::pin(async move {
            if *self.down.lock().unwrap() {
                return SendOutcome::Retry {
                    reason: "connection refused".into(),
                    maybe_delivered: false,
                };
            }
            self.received.lock().unwrap().push(message.clone());
            let mut lose = self.lose_answers.lock().unwrap();
            if *lose > 0 {
                *lose -= 1;
                return SendOutcome::Retry {
                    reason: "timed out".into(),
                    maybe_delivered: true,
                };
            }
            SendOutcome::Accepted {
                supplier_ref: Some(format!("PO-{}", message.key)),
            }
        })
    }

    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, LookupOutcome> {
        Box::pin(async move {
            if *self.down.lock().unwrap() {
                return LookupOutcome::Unknown {
                    reason: "connection refused".into(),
                };
            }
            if self.received_keys().iter().any(|k| k == key) {
                LookupOutcome::Received {
                    supplier_ref: Some(format!("PO-{key}")),
                }
            } else {
                LookupOutcome::NotReceived
            }
        })
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    clock: Clock,
    workflow: Workflow,
    suppliers: HashMap<&'static str, Arc<FakeSupplier>>,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with_settings(WorkflowSettings::default())
    }

    fn with_settings(settings: WorkflowSettings) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let clock = Clock::manual(START_MS);
        let workflow = Workflow::new(store.clone(), clock.clone(), Arc::new(TestRoutes), settings);
        let suppliers = ["acme", "bravo", "charlie"]
            .into_iter()
            .map(|n| (n, Arc::new(FakeSupplier::default())))
            .collect();
        Fixture {
            _dir: dir,
            store,
            clock,
            workflow,
            suppliers,
        }
    }

    fn sender(&self) -> Sender {
        let adapters = self
            .suppliers
            .iter()
            .map(|(n, s)| (n.to_string(), s.clone() as Arc<dyn SupplierAdapter>))
            .collect();
        Sender::new(
            self.workflow.clone(),
            adapters,
            HashMap::new(),
            SenderSettings::default(),
        )
    }

    /// Stores an order state and plans it, as the mirror and the planner would.
    async fn put(&self, order: &OrderMirror) {
        self.store.put_order(order).unwrap();
        self.workflow.plan_pending().await.unwrap();
    }

    fn case(&self) -> OrderCase {
        self.store.case(SHOP, ORDER).unwrap().expect("a case")
    }

    fn open_kinds(&self) -> Vec<ExceptionKind> {
        let mut kinds: Vec<_> = self.case().open_exceptions().map(|e| e.kind).collect();
        kinds.sort();
        kinds
    }

    fn effects(&self) -> Vec<Effect> {
        self.store.effects().map(|e| e.unwrap()).collect()
    }

    fn pending_actions(&self) -> Vec<String> {
        self.effects()
            .into_iter()
            .filter(|e| e.is_pending())
            .map(|e| format!("{} {}", e.action.name(), e.key))
            .collect()
    }

    async fn event(&self, supplier: &str, shipment: &str, id: &str, at_s: i64, kind: EventKind) {
        let event = SupplierEvent {
            id: id.into(),
            shipment_id: shipment.into(),
            occurred_at: Timestamp::from_unix_ms(START_MS + at_s * 1000),
            kind,
        };
        self.workflow
            .apply_event(supplier, event, Source::Manual)
            .await
            .unwrap();
    }

    async fn decide(&self, exception: &str, decision: Decision) -> Result<(), String> {
        self.workflow
            .decide(exception, decision, Actor::Operator("ops".into()), None)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn exception_id(&self, kind: ExceptionKind) -> String {
        self.case()
            .open_exceptions()
            .find(|e| e.kind == kind)
            .unwrap_or_else(|| panic!("no open {kind:?} in {:?}", self.case().exceptions))
            .id
            .clone()
    }
}

fn line(n: u32, sku: Option<&str>, quantity: i64) -> (LineItem, FulfillmentOrderLine) {
    (
        LineItem {
            id: format!("gid://shopify/LineItem/{n}"),
            sku: sku.map(str::to_string),
            variant_id: None,
            variant_title: Some("Red".into()),
            quantity,
            current_quantity: quantity,
            unfulfilled_quantity: quantity,
            requires_shipping: true,
        },
        FulfillmentOrderLine {
            id: format!("gid://shopify/FulfillmentOrderLineItem/{n}"),
            line_item_id: format!("gid://shopify/LineItem/{n}"),
            total_quantity: quantity,
            remaining_quantity: quantity,
        },
    )
}

fn order(version: i64, lines: &[(LineItem, FulfillmentOrderLine)]) -> OrderMirror {
    OrderMirror {
        shop: SHOP.into(),
        id: ORDER.into(),
        name: "#1001".into(),
        created_at: Some(Timestamp::from_unix_ms(START_MS)),
        updated_at: Timestamp::from_unix_ms(START_MS + version * 1000),
        cancelled_at: None,
        cancel_reason: None,
        display_fulfillment_status: "UNFULFILLED".into(),
        shipping_address: Some(Address {
            name: Some("Ada Lovelace".into()),
            address1: Some("1 Example Street".into()),
            country_code: Some("GB".into()),
            ..Default::default()
        }),
        line_items: lines.iter().map(|(li, _)| li.clone()).collect(),
        fulfillment_orders: vec![FulfillmentOrder {
            id: FO.into(),
            status: FulfillmentOrderStatus::Open,
            updated_at: None,
            location_id: Some("gid://shopify/Location/1".into()),
            location_name: Some("Warehouse".into()),
            holds: Vec::new(),
            lines: lines.iter().map(|(_, l)| l.clone()).collect(),
        }],
        fulfillments: Vec::new(),
        truncated: false,
    }
}

fn confirmed(line_n: u32, sku: &str, quantity: i64) -> EventKind {
    EventKind::LineConfirmed {
        line_id: format!("gid://shopify/LineItem/{line_n}"),
        sku: sku.into(),
        variant: None,
        quantity,
        cost: None,
        ship_by: None,
        hold_until: None,
    }
}

fn short(line_n: u32) -> EventKind {
    EventKind::LineShort {
        line_id: format!("gid://shopify/LineItem/{line_n}"),
        quantity_short: 1,
        restock_date: Some(Day::parse("2026-12-01").unwrap()),
        reason: None,
    }
}

#[tokio::test]
async fn an_order_is_split_by_supplier_and_each_shipment_is_submitted_once() {
    let f = Fixture::new();
    f.put(&order(
        1,
        &[line(1, Some("MUG-RED"), 2), line(2, Some("TEE-M"), 1)],
    ))
    .await;
    let case = f.case();
    assert_eq!(case.shipments.len(), 2);
    let by_supplier: HashMap<_, _> = case
        .shipments
        .iter()
        .map(|s| (s.supplier.as_str(), s))
        .collect();
    assert_eq!(by_supplier["acme"].lines[0].quantity, 2);
    assert_eq!(by_supplier["bravo"].lines[0].sku, "TEE-M");
    assert!(case.exceptions.is_empty());

    // Planning the same state again changes nothing and records no second intent.
    f.store.queue_plan(SHOP, ORDER).unwrap();
    f.workflow.plan_pending().await.unwrap();
    assert_eq!(f.case(), case);
    assert_eq!(f.effects().len(), 2);

    f.sender().run_due().await.unwrap();
    for (name, shipment) in by_supplier {
        let received = f.suppliers[name].received.lock().unwrap().clone();
        assert_eq!(received.len(), 1, "{name}");
        let crate::suppliers::MessageBody::Submission { ship_to, lines, .. } = &received[0].body
        else {
            panic!("{:?}", received[0]);
        };
        assert_eq!(
            ship_to.as_ref().and_then(|a| a.name.as_deref()),
            Some("Ada Lovelace"),
            "the address is read from the mirror when sending"
        );
        assert_eq!(lines.len(), 1);
        let after = f.case();
        let s = after.shipment(&shipment.id).unwrap();
        assert_eq!(
            derive::status(s, &after.exceptions, None),
            ShipmentStatus::AwaitingConfirmation
        );
    }
    // The intent carries no customer data: erasure needs to reach only the mirror.
    for effect in f.effects() {
        if let Action::Supplier { message, .. } = &effect.action
            && let crate::suppliers::MessageBody::Submission { ship_to, .. } = &message.body
        {
            assert!(ship_to.is_none());
        }
    }
}

#[tokio::test]
async fn an_unmapped_sku_is_held_until_routed_by_hand() {
    let f = Fixture::new();
    f.put(&order(1, &[line(1, Some("LAMP-9"), 1)])).await;
    assert_eq!(f.open_kinds(), vec![ExceptionKind::UnmappedSku]);
    let ex = f.exception_id(ExceptionKind::UnmappedSku);
    let case = f.case();
    let exception = case.exception(&ex).unwrap();
    assert!(
        exception
            .summary
            .contains("no supplier route matches SKU LAMP-9")
    );
    let hold = exception.hold.as_ref().unwrap();
    assert_eq!(hold.reason, "OTHER");
    assert_eq!(hold.handle, format!("shipgate-{ex}"));
    assert_eq!(f.pending_actions(), vec![format!("shopify_hold {ex}.hold")]);

    let err = f
        .decide(&ex, Decision::ApproveSubstitute)
        .await
        .unwrap_err();
    assert!(err.contains("allows route, cancel; not approve"), "{err}");
    let err = f
        .decide(
            &ex,
            Decision::RouteTo {
                supplier: "nobody".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(err.contains("no supplier named \"nobody\""), "{err}");

    f.decide(
        &ex,
        Decision::RouteTo {
            supplier: "charlie".into(),
        },
    )
    .await
    .unwrap();
    let case = f.case();
    assert!(f.open_kinds().is_empty());
    let closed = case.exception(&ex).unwrap();
    assert_eq!(closed.closed.as_ref().unwrap().reason, "decided: route");
    assert_eq!(
        closed.closed.as_ref().unwrap().by,
        Actor::Operator("ops".into())
    );
    assert_eq!(case.shipments.len(), 1);
    assert_eq!(case.shipments[0].supplier, "charlie");
    // The hold was never sent, so it is not placed-then-released: it is superseded.
    let pending = f.pending_actions();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert!(pending[0].starts_with("supplier_submission"), "{pending:?}");
    assert_eq!(closed.hold.as_ref().unwrap().state, HoldState::Released);
    let hold = f
        .store
        .effect_by_key(&format!("{ex}.hold"))
        .unwrap()
        .unwrap();
    assert!(
        matches!(hold.state, EffectState::Superseded { .. }),
        "{hold:?}"
    );

    // Once a hold may have gone out, closing releases it instead.
    let f = Fixture::new();
    f.put(&order(1, &[line(1, Some("LAMP-9"), 1)])).await;
    let ex = f.exception_id(ExceptionKind::UnmappedSku);
    let mut hold = f
        .store
        .effect_by_key(&format!("{ex}.hold"))
        .unwrap()
        .unwrap();
    hold.maybe_delivered = true;
    f.store
        .write_case(crate::store::cases::CaseWrite {
            updated_effects: vec![hold],
            ..Default::default()
        })
        .unwrap();
    f.decide(
        &ex,
        Decision::RouteTo {
            supplier: "charlie".into(),
        },
    )
    .await
    .unwrap();
    assert!(
        f.pending_actions()
            .contains(&format!("shopify_release_hold {ex}.release")),
        "{:?}",
        f.pending_actions()
    );
}

#[tokio::test]
async fn cancelling_an_unmapped_line_drops_it_for_good() {
    let f = Fixture::new();
    f.put(&order(1, &[line(1, None, 1), line(2, Some("MUG-RED"), 1)]))
        .await;
    let ex = f.exception_id(ExceptionKind::UnmappedSku);
    assert!(
        f.case()
            .exception(&ex)
            .unwrap()
            .summary
            .contains("has no SKU")
    );
    f.decide(&ex, Decision::Cancel).await.unwrap();
    assert!(f.open_kinds().is_empty());
    // A later change of the order does not bring the dropped line back.
    f.put(&order(2, &[line(1, None, 1), line(2, Some("MUG-RED"), 1)]))
        .await;
    assert!(f.open_kinds().is_empty());
    assert_eq!(f.case().shipments.len(), 1);
}

#[tokio::test]
async fn a_stockout_is_held_and_rerouted_to_the_backup() {
    let f = Fixture::new();
    f.put(&order(1, &[line(1, Some("MUG-RED"), 2)])).await;
    f.sender().run_due().await.unwrap();
    let sg = f.case().shipments[0].id.clone();
    f.event("acme", &sg, "e1", 10, short(1)).await;
    assert_eq!(f.open_kinds(), vec![ExceptionKind::Stockout]);
    let ex = f.exception_id(ExceptionKind::Stockout);
    assert_eq!(
        f.case()
            .exception(&ex)
            .unwrap()
            .hold
            .as_ref()
            .unwrap()
            .reason,
        "INVENTORY_OUT_OF_STOCK"
    );
    assert_eq!(
        derive::status(f.case().shipment(&sg).unwrap(), &f.case().exceptions, None),
        ShipmentStatus::Held
    );
    // Another supplier's event for this shipment is not accepted.
    let err = f
        .workflow
        .validate_event(
            "bravo",
            &SupplierEvent {
                id: "x".into(),
                shipment_id: sg.clone(),
                occurred_at: Timestamp::from_unix_ms(START_MS),
                kind: short(1),
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("is not bravo's"), "{err}");

    f.decide(&ex, Decision::Reroute { supplier: None })
        .await
        .unwrap();
    let case = f.case();
    // The stockout is decided; acme, asked to stop, has yet to confirm it stopped.
    assert_eq!(
        f.open_kinds(),
        vec![ExceptionKind::CancelledAfterSubmission]
    );
    assert_eq!(case.shipments.len(), 2);
    assert_eq!(
        derive::status(case.shipment(&sg).unwrap(), &case.exceptions, None),
        ShipmentStatus::Held
    );
    assert_eq!(case.shipments[1].supplier, "bravo");
    // acme had the shipment: it is told to stop; bravo gets its own submission.
    let pending = f.pending_actions();
    assert!(
        pending.contains(&format!("supplier_cancellation {sg}.cancel")),
        "{pending:?}"
    );
    assert!(pending.contains(&format!("supplier_submission {}.r1", case.shipments[1].id)));
    f.sender().run_due().await.unwrap();
    assert_eq!(
        f.suppliers["acme"].received_keys(),
        vec![format!("{sg}.r1"), format!("{sg}.cancel")]
    );
    assert_eq!(f.suppliers["bravo"].received_keys().len(), 1);
    f.event("acme", &sg, "e9", 30, EventKind::Cancelled { reason: None })
        .await;
    assert!(f.open_kinds().is_empty());
    let case = f.case();
    assert_eq!(
        derive::status(case.shipment(&sg).unwrap(), &case.exceptions, None),
        ShipmentStatus::Cancelled
    );
    // The counters kept with the effects agree with a full scan.
    let mut scanned = [0u64; 4];
    for effect in f.effects() {
        scanned[match effect.state {
            EffectState::Pending => 0,
            EffectState::Done { .. } => 1,
            EffectState::Failed { .. } => 2,
            EffectState::Superseded { .. } => 3,
        }] += 1;
    }
    let counted = f.store.effect_counts().unwrap().map(|(_, n)| n);
    assert_eq!(counted, scanned);
    assert_eq!(scanned.iter().sum::<u64>(), f.effects().len() as u64);
}

#[tokio::test]
async fn a_wait_keeps_the_exception_until_its_day_then_asks_again() {
    let f = Fixture::new();
    f.put(&order(1, &[line(1, Some("MUG-RED"), 1)])).await;
    let sg = f.case().shipments[0].id.clone();
    f.event("acme", &sg, "e1", 10, short(1)).await;
    let ex = f.exception_id(ExceptionKind::Stockout);
    let err = f
        .decide(
            &ex,
            Decision::WaitUntil {
                day: Day::parse("2020-01-01").unwrap(),
            },
        )
        .await
        .unwrap_err();
    assert!(err.contains("is not in the future"), "{err}");
    // START_MS is 2025-11-24; wait two days.
    let day = Day::parse("2025-11-26").unwrap();
    f.decide(&ex, Decision::WaitUntil { day: day.clone() })
        .await
        .unwrap();
    assert_eq!(f.open_kinds(), vec![ExceptionKind::Stockout]);
    assert!(f.case().exception(&ex).unwrap().decision.is_some());
    assert_eq!(f.workflow.next_timer_ms().unwrap(), Some(day.start_ms()));

    f.clock.advance(Duration::from_secs(3 * 86_400));
    assert_eq!(f.workflow.tick().await.unwrap(), 1);
    let case = f.case();
    let exception = case.exception(&ex).unwrap();
    assert!(exception.is_open());
    assert!(
        exception.decision.is_none(),
        "the wait ran out: a new decision is needed"
    );
    assert_eq!(exception.past_decisions.len(), 1);

    // The supplier restocks: a confirmation after the shortage closes it and releases the hold.
    f.event("acme", &sg, "e2", 3 * 86_400, confirmed(1, "MUG-RED", 1))
        .await;
    assert!(f.open_kinds().is_empty());
    let case = f.case();
    let exception = case.exception(&ex).unwrap();
    assert!(
        exception
            .closed
            .as_ref()
            .unwrap()
            .reason
            .starts_with("resolved")
    );
    // Its hold was never sent (no Shopify here): superseded rather than placed and released.
    assert_eq!(exception.hold.as_ref().unwrap().state, HoldState::Released);
}

#[tokio::test]
async fn a_substitute_is_approved_through_the_supplier() {
    let f = Fixture::new();
    f.put(&order(1, &[line(1, Some("MUG-RED"), 1)])).await;
    let sg = f.case().shipments[0].id.clone();
    f.event(
        "acme",
        &sg,
        "e1",
        10,
        EventKind::SubstituteOffered {
            line_id: "gid://shopify/LineItem/1".into(),
            offered_sku: "MUG-BLUE".into(),
            offered_variant: None,
            differences: "blue".into(),
            photos: vec![],
            price_change: None,
            expires_at: None,
        },
    )
    .await;
    let ex = f.exception_id(ExceptionKind::SubstituteOffered);
    f.decide(&ex, Decision::ApproveSubstitute).await.unwrap();
    assert!(f.open_kinds().is_empty());
    let pending = f.pending_actions();
    assert!(
        pending
            .iter()
            .any(|p| p.starts_with("supplier_decision") && p.ends_with(".approve")),
        "{pending:?}"
    );
    // The supplier confirms the substitute: the line counts as confirmed.
    f.event("acme", &sg, "e2", 20, confirmed(1, "MUG-BLUE", 1))
        .await;
    assert!(f.open_kinds().is_empty());
    let case = f.case();
    assert_eq!(
        derive::status(case.shipment(&sg).unwrap(), &case.exceptions, None),
        ShipmentStatus::AwaitingCheck
    );
}

#[tokio::test]
async fn a_rejection_with_no_backup_left_becomes_unmapped() {
    let f = Fixture::new();
    f.put(&order(1, &[line(1, Some("TEE-M"), 1)])).await;
    let sg = f.case().shipments[0].id.clone();
    f.event(
        "bravo",
        &sg,
        "e1",
        10,
        EventKind::Rejected {
            reason: "no stock in region".into(),
        },
    )
    .await;
    let ex = f.exception_id(ExceptionKind::SupplierRejected);
    assert!(
        f.case()
            .exception(&ex)
            .unwrap()
            .summary
            .contains("no stock in region")
    );
    let err = f
        .decide(
            &ex,
            Decision::Reroute {
                supplier: Some("bravo".into()),
            },
        )
        .await
        .unwrap_err();
    assert!(err.contains("reroute to another supplier"), "{err}");
    f.decide(&ex, Decision::Reroute { supplier: None })
        .await
        .unwrap();
    assert_eq!(f.open_kinds(), vec![ExceptionKind::UnmappedSku]);
    let unmapped = f.exception_id(ExceptionKind::UnmappedSku);
    assert!(
        f.case()
            .exception(&unmapped)
            .unwrap()
            .summary
            .contains("no supplier left for SKU TEE-M (tried bravo)")
    );
}

#[tokio::test]
async fn a_cancellation_after_submission_goes_to_the_supplier_and_waits_for_its_answer() {
    let f = Fixture::new();
    f.put(&order(1, &[line(1, Some("MUG-RED"), 1)])).await;
    f.sender().run_due().await.unwrap();
    let sg = f.case().shipments[0].id.clone();
    let mut cancelled = order(2, &[line(1, Some("MUG-RED"), 1)]);
    cancelled.cancelled_at = Some(Timestamp::from_unix_ms(START_MS + 2000));
    f.put(&cancelled).await;
    assert_eq!(
        f.open_kinds(),
        vec![ExceptionKind::CancelledAfterSubmission]
    );
    let ex = f.exception_id(ExceptionKind::CancelledAfterSubmission);
    assert!(
        f.case().exception(&ex).unwrap().hold.is_none(),
        "a cancelled order gets no hold"
    );
    f.sender().run_due().await.unwrap();
    assert_eq!(
        f.suppliers["acme"].received_keys(),
        vec![format!("{sg}.r1"), format!("{sg}.cancel")]
    );
    f.event("acme", &sg, "e1", 30, EventKind::Cancelled { reason: None })
        .await;
    assert!(f.open_kinds().is_empty());
    let case = f.case();
    assert_eq!(
        derive::status(case.shipment(&sg).unwrap(), &case.exceptions, None),
        ShipmentStatus::Cancelled
    );
}

#[tokio::test]
async fn a_cancellation_before_anything_was_sent_sends_nothing() {
    let f = Fixture::new();
    f.put(&order(1, &[line(1, Some("MUG-RED"), 1)])).await;
    let mut cancelled = order(2, &[line(1, Some("MUG-RED"), 1)]);
    cancelled.cancelled_at = Some(Timestamp::from_unix_ms(START_MS + 2000));
    f.put(&cancelled).await;
    assert!(f.open_kinds().is_empty());
    f.sender().run_due().await.unwrap();
    assert!(f.suppliers["acme"].received_keys().is_empty());
    assert!(
        f.effects()
            .iter()
            .all(|e| matches!(e.state, EffectState::Superseded { .. }))
    );
}

#[tokio::test]
async fn an_edit_after_submission_sends_a_revision() {
    let f = Fixture::new();
    f.put(&order(1, &[line(1, Some("MUG-RED"), 3)])).await;
    f.sender().run_due().await.unwrap();
    let sg = f.case().shipments[0].id.clone();
    let (mut li, mut fol) = line(1, Some("MUG-RED"), 3);
    li.current_quantity = 1;
    fol.remaining_quantity = 1;
    f.put(&order(2, &[(li, fol), line(2, Some("MUG-BLUE"), 1)]))
        .await;
    f.sender().run_due().await.unwrap();
    let received = f.suppliers["acme"].received.lock().unwrap().clone();
    let keys: Vec<_> = received.iter().map(|m| m.key.clone()).collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
    let amendment = received
        .iter()
        .find(|m| m.key == format!("{sg}.r2"))
        .unwrap_or_else(|| panic!("no revision 2 in {keys:?}"));
    let crate::suppliers::MessageBody::Submission {
        lines, revision, ..
    } = &amendment.body
    else {
        panic!()
    };
    assert_eq!(*revision, 2);
    assert_eq!(lines[0].quantity, 1);
    assert_eq!(amendment.kind(), "amendment");
    // The added line is a new shipment with its own submission.
    assert_eq!(f.case().shipments.len(), 2);
}

#[tokio::test]
async fn a_fulfillment_order_held_by_someone_else_is_not_submitted() {
    let f = Fixture::new();
    let mut held = order(1, &[line(1, Some("MUG-RED"), 1)]);
    held.fulfillment_orders[0].holds.push(Hold {
        id: "gid://shopify/FulfillmentHold/9".into(),
        handle: None,
        reason: "HIGH_RISK_OF_FRAUD".into(),
        reason_notes: None,
        held_by_us: false,
    });
    held.fulfillment_orders[0].status = FulfillmentOrderStatus::OnHold;
    f.put(&held).await;
    assert!(f.store.case(SHOP, ORDER).unwrap().is_none());
    f.put(&order(2, &[line(1, Some("MUG-RED"), 1)])).await;
    assert_eq!(f.case().shipments.len(), 1);
}

#[tokio::test]
async fn orders_from_before_routing_began_are_mirrored_but_not_routed() {
    let f = Fixture::new();
    // The shop's routing starts at the first planning: START_MS on the manual clock.
    let mut old = order(1, &[line(1, Some("MUG-RED"), 1)]);
    old.created_at = Some(Timestamp::from_unix_ms(START_MS - 86_400_000));
    f.put(&old).await;
    assert!(
        f.store.case(SHOP, ORDER).unwrap().is_none(),
        "the backlog is left alone"
    );
    let mut later = old.clone();
    later.updated_at = Timestamp::from_unix_ms(START_MS + 5_000);
    f.put(&later).await;
    assert!(
        f.store.case(SHOP, ORDER).unwrap().is_none(),
        "an update does not change that"
    );

    // An owner who wants the backlog routed says from when.
    let f = Fixture::with_settings(WorkflowSettings {
        route_orders_created_after_ms: Some(START_MS - 2 * 86_400_000),
        ..WorkflowSettings::default()
    });
    f.put(&old).await;
    assert_eq!(f.case().shipments.len(), 1);
}

#[tokio::test]
async fn holds_are_not_placed_when_switched_off() {
    let f = Fixture::with_settings(WorkflowSettings {
        hold_on_exceptions: false,
        ..WorkflowSettings::default()
    });
    f.put(&order(1, &[line(1, Some("LAMP"), 1)])).await;
    assert_eq!(f.open_kinds(), vec![ExceptionKind::UnmappedSku]);
    assert!(f.case().exceptions[0].hold.is_none());
    assert!(f.effects().is_empty());
}

/// Invariant 2 under crashes: a crash at any point of the send path, then a restart, leaves
/// every submission delivered exactly once and recorded as delivered.
#[tokio::test]
async fn a_crash_at_any_point_of_the_send_path_neither_loses_nor_repeats_a_message() {
    for point in CrashPoint::ALL {
        let f = Fixture::new();
        f.put(&order(
            1,
            &[line(1, Some("MUG-RED"), 1), line(2, Some("TEE-M"), 1)],
        ))
        .await;
        let crashing = f
            .sender()
            .with_crash_hook(Arc::new(move |at, _| at == point));
        let crashed = crashing.run_due().await;
        assert!(
            matches!(&crashed, Err(super::sender::SendError::Crashed(c)) if c.0 == point),
            "{point:?}: {crashed:?}"
        );
        // The restarted sender finishes the job.
        f.sender().run_due().await.unwrap();
        for name in ["acme", "bravo"] {
            let keys = f.suppliers[name].received_keys();
            assert_eq!(keys.len(), 1, "{point:?}: {name} received {keys:?}");
        }
        for effect in f.effects() {
            assert!(
                matches!(effect.state, EffectState::Done { .. }),
                "{point:?}: {effect:?}"
            );
        }
        for shipment in f.case().shipments {
            assert!(derive::is_delivered_to_supplier(&shipment), "{point:?}");
        }
    }
}

#[tokio::test]
async fn a_lost_answer_is_looked_up_not_sent_again() {
    let f = Fixture::new();
    *f.suppliers["acme"].lose_answers.lock().unwrap() = 1;
    f.put(&order(1, &[line(1, Some("MUG-RED"), 1)])).await;
    f.sender().run_due().await.unwrap();
    let effect = f.effects().pop().unwrap();
    assert!(effect.is_pending() && effect.maybe_delivered);
    f.clock.advance(Duration::from_secs(60));
    f.sender().run_due().await.unwrap();
    assert_eq!(f.suppliers["acme"].received_keys().len(), 1);
    let effect = f.effects().pop().unwrap();
    assert!(matches!(
        effect.state,
        EffectState::Done { reference: Some(ref r), .. } if r.starts_with("PO-")
    ));
}

#[tokio::test]
async fn a_supplier_down_for_a_day_gets_each_message_once_when_it_returns() {
    let f = Fixture::new();
    *f.suppliers["acme"].down.lock().unwrap() = true;
    f.put(&order(1, &[line(1, Some("MUG-RED"), 1)])).await;
    let sender = f.sender();
    let mut attempts = 0;
    for _ in 0..(24 * 4) {
        attempts += sender.run_due().await.unwrap();
        f.clock.advance(Duration::from_secs(15 * 60));
    }
    assert!(attempts >= 24, "retried through the day: {attempts}");
    assert!(f.suppliers["acme"].received_keys().is_empty());
    let effect = f.effects().pop().unwrap();
    assert!(effect.is_pending());
    assert!(
        effect
            .last_error
            .as_deref()
            .unwrap()
            .contains("connection refused")
    );
    *f.suppliers["acme"].down.lock().unwrap() = false;
    // The longest pause is 30 minutes plus up to 20% jitter.
    f.clock.advance(Duration::from_secs(37 * 60));
    sender.run_due().await.unwrap();
    assert_eq!(f.suppliers["acme"].received_keys().len(), 1);
}

mod any_order {
    //! Invariant 6 through the whole workflow: the same supplier events, applied in any order
    //! through `apply_event`, leave the same status and the same open exceptions.

    use proptest::prelude::*;

    use super::*;

    fn pool(n: u8, at_s: i64) -> EventKind {
        match n % 10 {
            0 => EventKind::Received {
                supplier_ref: Some("PO-1".into()),
            },
            1 => confirmed(1, "MUG-RED", 2),
            2 => short(1),
            3 => confirmed(2, "MUG-BLUE", 1),
            4 => EventKind::SubstituteOffered {
                line_id: "gid://shopify/LineItem/2".into(),
                offered_sku: "MUG-NAVY".into(),
                offered_variant: None,
                differences: "navy".into(),
                photos: vec![],
                price_change: None,
                expires_at: None,
            },
            5 => EventKind::CheckReported {
                // A whole check of both lines, as the door requires (SPEC 3.1).
                check_json: serde_json::json!({
                    "inspector": {"name": "Li Wei", "organisation": "Acme Sourcing"},
                    "checked_at": Timestamp::from_unix_ms(START_MS + at_s * 1000).text,
                    "method": "every_unit",
                    "lines": [
                        {"line_id": "gid://shopify/LineItem/1", "found_sku": "MUG-RED",
                         "quantity_checked": 2, "quantity_passed": 2},
                        {"line_id": "gid://shopify/LineItem/2", "found_sku": "MUG-BLUE",
                         "quantity_checked": 1, "quantity_passed": 1}
                    ],
                    "result": "pass",
                    "disposition": "ship"
                })
                .to_string(),
            },
            6 => EventKind::Rejected {
                reason: "closed".into(),
            },
            7 => confirmed(1, "MUG-PINK", 2),
            8 => EventKind::LabelCreated {
                parcel_id: None,
                carrier: "UPS".into(),
                tracking_number: "1ZANYORDER01".into(),
                tracking_url: None,
            },
            _ => EventKind::Cancelled { reason: None },
        }
    }

    fn outcome(
        events: &[(String, i64, EventKind)],
    ) -> (ShipmentStatus, Vec<(ExceptionKind, Option<String>)>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let f = Fixture::new();
            f.put(&order(
                1,
                &[line(1, Some("MUG-RED"), 2), line(2, Some("MUG-BLUE"), 1)],
            ))
            .await;
            let sg = f.case().shipments[0].id.clone();
            for (id, at_s, kind) in events {
                f.event("acme", &sg, id, *at_s, kind.clone()).await;
            }
            let case = f.case();
            let mut open: Vec<_> = case
                .open_exceptions()
                .map(|e| (e.kind, e.subject.line_item_id.clone()))
                .collect();
            open.sort();
            (
                derive::status(&case.shipments[0], &case.exceptions, None),
                open,
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn the_same_events_in_any_order_leave_the_same_status_and_exceptions(
            picks in prop::collection::vec((any::<u8>(), 1i64..50), 1..8),
            seed in any::<u64>(),
        ) {
            use rand::SeedableRng;
            use rand::seq::SliceRandom;
            let events: Vec<(String, i64, EventKind)> = picks
                .iter()
                .enumerate()
                .map(|(i, (n, at))| (format!("evt-{i}"), *at, pool(*n, *at)))
                .collect();
            let expected = outcome(&events);
            let mut shuffled = events.clone();
            shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            prop_assert_eq!(outcome(&shuffled), expected.clone());
            shuffled.reverse();
            prop_assert_eq!(outcome(&shuffled), expected);
        }
    }
}

#[tokio::test]
async fn an_edit_after_confirmation_is_pending_for_an_offline_supplier_until_answered() {
    let f = Fixture::new();
    f.put(&order(1, &[line(1, Some("MUG-RED"), 3)])).await;
    let sg = f.case().shipments[0].id.clone();
    f.event("acme", &sg, "c1", 10, confirmed(1, "MUG-RED", 3))
        .await;
    assert!(f.workflow.pending_for("acme").unwrap().is_empty());
    f.clock.advance(Duration::from_secs(60));
    let (mut li, mut fol) = line(1, Some("MUG-RED"), 3);
    li.current_quantity = 1;
    fol.remaining_quantity = 1;
    f.put(&order(2, &[(li, fol)])).await;
    let pending = f.workflow.pending_for("acme").unwrap();
    assert_eq!(pending.len(), 1, "the new revision waits for the agent");
    assert_eq!(pending[0].lines[0].quantity, 1);
    f.clock.advance(Duration::from_secs(60));
    f.event("acme", &sg, "c2", 200, confirmed(1, "MUG-RED", 1))
        .await;
    assert!(f.workflow.pending_for("acme").unwrap().is_empty());
}

#[tokio::test]
async fn a_check_that_does_not_cover_the_shipment_is_refused_at_the_door() {
    let f = Fixture::new();
    f.put(&order(1, &[line(1, Some("MUG-RED"), 2)])).await;
    let sg = f.case().shipments[0].id.clone();
    let check = |passed: i64, result: &str| SupplierEvent {
        id: format!("chk-{passed}-{result}"),
        shipment_id: sg.clone(),
        occurred_at: Timestamp::from_unix_ms(START_MS),
        kind: EventKind::CheckReported {
            check_json: serde_json::json!({
                "inspector": {"name": "Li Wei"},
                "checked_at": Timestamp::from_unix_ms(START_MS).text,
                "method": "every_unit",
                "lines": [{"line_id": "gid://shopify/LineItem/1", "found_sku": "MUG-RED",
                           "quantity_checked": passed, "quantity_passed": passed}],
                "result": result,
                "disposition": "ship"
            })
            .to_string(),
        },
    };
    let err = f
        .workflow
        .validate_event("acme", &check(1, "pass"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 of 2 checked"), "{err}");
    let err = f
        .workflow
        .validate_event("acme", &check(2, "pass_with_deviation"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("deviation"), "{err}");
    f.workflow
        .validate_event("acme", &check(2, "pass"))
        .unwrap();
    f.workflow
        .apply_event("acme", check(2, "pass"), Source::Manual)
        .await
        .unwrap();
}

/// Packing is bounded by the latest passing check and labels must fit the packing, but what
/// has not arrived is not held against an event: a label for a parcel whose packing is still on
/// its way is taken, and a retry of a recorded packing is "already recorded" whatever came since.
#[tokio::test]
async fn packing_and_labels_are_checked_against_the_check_at_the_door() {
    use crate::sandbox::harness::check_event_at;
    use crate::suppliers::{PackedParcel, ParcelLine};
    let f = Fixture::new();
    f.put(&order(1, &[line(1, Some("MUG-RED"), 2)])).await;
    let sg = f.case().shipments[0].id.clone();
    let line_id = "gid://shopify/LineItem/1";
    let at = |s: i64| START_MS + s * 1000;
    let event = |id: &str, at_s: i64, kind: EventKind| SupplierEvent {
        id: id.into(),
        shipment_id: sg.clone(),
        occurred_at: Timestamp::from_unix_ms(at(at_s)),
        kind,
    };
    let packed = |parcel: &str, quantity: i64| EventKind::Packed {
        parcels: vec![PackedParcel {
            parcel_id: parcel.into(),
            lines: vec![ParcelLine {
                line_id: line_id.into(),
                quantity,
            }],
            weight_grams: Some(900),
            dimensions_cm: None,
            photos: Vec::new(),
        }],
    };
    let label = |parcel: &str, number: &str| EventKind::LabelCreated {
        parcel_id: Some(parcel.into()),
        carrier: "UPS".into(),
        tracking_number: number.into(),
        tracking_url: None,
    };
    let apply = async |event: SupplierEvent| {
        f.workflow
            .apply_event("acme", event, Source::Manual)
            .await
            .unwrap()
    };
    let refusal = |event: SupplierEvent| {
        f.workflow
            .validate_event("acme", &event)
            .unwrap_err()
            .to_string()
    };
    apply(check_event_at(
        "qc-1",
        &sg,
        &[(line_id, "MUG-RED", 2, 2)],
        "pass",
        at(10),
    ))
    .await;

    let err = refusal(event("pack-3", 20, packed("P1", 3)));
    assert!(err.contains("the packing of shipment"), "{err}");
    assert!(err.contains(line_id), "names the line: {err}");
    // P2's packing has not arrived: its label is taken as it is, but what a label says of
    // itself is checked all the same.
    f.workflow
        .validate_event("acme", &event("label-p2", 30, label("P2", "1ZPARCEL0002")))
        .unwrap();
    let err = refusal(event("label-p9", 30, label("P9", "1Z BAD")));
    assert!(err.contains("tracking_number"), "{err}");
    let pack = event("pack-2", 20, packed("P1", 2));
    let applied = apply(pack.clone()).await;
    assert_eq!(applied, super::EventApplied::Recorded);
    let err = refusal(event("label-bad", 25, label("P1", "1Z BAD")));
    assert!(err.contains("the label of shipment"), "{err}");

    // The order is cut to one unit and a re-check (timed before the packing) passes that one:
    // a new packing of two is refused now, but the retry of the recorded one is answered as
    // recorded, not refused.
    let (mut li, mut fol) = line(1, Some("MUG-RED"), 2);
    li.current_quantity = 1;
    fol.remaining_quantity = 1;
    f.put(&order(2, &[(li, fol)])).await;
    apply(check_event_at(
        "qc-2",
        &sg,
        &[(line_id, "MUG-RED", 1, 1)],
        "pass",
        at(15),
    ))
    .await;
    let err = refusal(event("pack-2-again", 20, packed("P1", 2)));
    assert!(err.contains("the packing of shipment"), "{err}");
    let applied = apply(pack).await;
    assert_eq!(applied, super::EventApplied::AlreadyRecorded);
}

#[tokio::test]
async fn a_spreadsheet_agent_confirms_and_checks_through_one_sheet() {
    let f = Fixture::new();
    f.put(&order(1, &[line(1, Some("MUG-RED"), 2)])).await;
    let sg = f.case().shipments[0].id.clone();
    let header = "shipment_id,event,line_id,sku,variant,quantity,date,parcel_id,carrier,\
                  tracking_number,tracking_url,weight_grams,note";
    let l1 = "gid://shopify/LineItem/1";
    let bad = format!(
        "{header}\n{sg},confirmed,{l1},MUG-RED,,2,,,,,,,\n{sg},check,{l1},MUG-RED,,1,,,,,,,pass\n"
    );
    let refused = f
        .workflow
        .import_sheet(
            "acme",
            "bad.csv",
            bad.as_bytes(),
            Actor::Operator("ops".into()),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("1 of 2 passed"), "{refused}");
    assert_eq!(
        f.case().shipments[0].evidence.len(),
        1,
        "nothing of a refused sheet is recorded"
    );
    let good = format!(
        "{header}\n{sg},confirmed,{l1},MUG-RED,,2,,,,,,,\n{sg},check,{l1},MUG-RED,,2,,,,,,,pass\n"
    );
    let report = f
        .workflow
        .import_sheet(
            "acme",
            "good.csv",
            good.as_bytes(),
            Actor::Operator("ops".into()),
        )
        .await
        .unwrap();
    assert_eq!(report.recorded, 2);
    let case = f.case();
    assert_eq!(
        derive::status(&case.shipments[0], &case.exceptions, None),
        ShipmentStatus::AwaitingPacking
    );
}

#[tokio::test]
async fn a_carrier_scan_before_the_label_waits_for_it() {
    use crate::tracking::{Normalized, Provider, TrackingEvent};
    let f = Fixture::new();
    f.put(&order(1, &[line(1, Some("MUG-RED"), 1)])).await;
    let sg = f.case().shipments[0].id.clone();
    let scan = TrackingEvent {
        provider: Provider::AfterShip,
        event_id: "aftership:scan-1".into(),
        tracking_number: "1ZEARLY0001".into(),
        carrier: "ups".into(),
        occurred_at: Timestamp::from_unix_ms(START_MS + 60_000),
        raw_text: "Pickup scan".into(),
        raw_code: Some("PU".into()),
        location: Some("Shenzhen".into()),
        provider_code: Some("InTransit_002".into()),
        acceptance_scan: true,
        normalized: Normalized::InTransit,
        evidence: Vec::new(),
    };
    let recorded = f
        .workflow
        .apply_tracking(scan.clone(), Source::Workflow)
        .await
        .unwrap();
    assert_eq!(recorded, 0, "no label carries the number yet");
    assert_eq!(f.store.waiting_tracking_count(), 1);
    f.event(
        "acme",
        &sg,
        "label-1",
        30,
        EventKind::LabelCreated {
            parcel_id: None,
            carrier: "UPS".into(),
            tracking_number: "1ZEARLY0001".into(),
            tracking_url: None,
        },
    )
    .await;
    assert_eq!(f.store.waiting_tracking_count(), 0);
    let case = f.case();
    let carrier: Vec<_> = case.shipments[0]
        .evidence
        .iter()
        .filter(|e| matches!(e.kind, super::model::EvidenceKind::Carrier(_)))
        .collect();
    assert_eq!(carrier.len(), 1, "the early scan is on the shipment now");
    assert!(derive::acceptances(&case.shipments[0], None)[0].1.is_some());
}

/// A whole check of the test order's one line (MUG-RED × 2), with this result.
fn check_of_line_1(id: &str, at_s: i64, passed: i64, result: &str) -> (String, i64, EventKind) {
    let mut check = serde_json::json!({
        "inspector": {"name": "Li Wei"},
        "checked_at": Timestamp::from_unix_ms(START_MS + at_s * 1000).text,
        "method": "every_unit",
        "lines": [{"line_id": "gid://shopify/LineItem/1", "found_sku": "MUG-RED",
                   "quantity_checked": 2, "quantity_passed": passed,
                   "defects": if passed < 2 {
                       serde_json::json!([{"class": "major", "count": 1, "note": "cracked handle"}])
                   } else { serde_json::json!([]) }}],
        "result": result,
        "disposition": if result == "fail" { "hold" } else { "ship" }
    });
    if result == "fail" {
        check["note"] = "one mug cracked".into();
    }
    (
        id.to_string(),
        at_s,
        EventKind::CheckReported {
            check_json: check.to_string(),
        },
    )
}

#[tokio::test]
async fn a_failed_check_holds_the_order_until_replaced_or_accepted() {
    let f = Fixture::new();
    f.put(&order(1, &[line(1, Some("MUG-RED"), 2)])).await;
    let sg = f.case().shipments[0].id.clone();
    f.event("acme", &sg, "c1", 10, confirmed(1, "MUG-RED", 2))
        .await;
    let (id, at, kind) = check_of_line_1("qc1", 20, 1, "fail");
    f.event("acme", &sg, &id, at, kind).await;
    assert_eq!(f.open_kinds(), vec![ExceptionKind::CheckFailed]);
    let ex = f.exception_id(ExceptionKind::CheckFailed);
    let case = f.case();
    assert_eq!(
        case.exception(&ex).unwrap().hold.as_ref().unwrap().reason,
        "OTHER"
    );
    assert_eq!(
        derive::status(&case.shipments[0], &case.exceptions, None),
        ShipmentStatus::Held
    );

    // Replacing keeps it open until a new check passes.
    f.decide(&ex, Decision::Replace).await.unwrap();
    assert_eq!(f.open_kinds(), vec![ExceptionKind::CheckFailed]);
    assert!(
        f.pending_actions()
            .iter()
            .any(|a| a == &format!("supplier_check_decision {ex}.replace")),
        "{:?}",
        f.pending_actions()
    );
    let (id, at, kind) = check_of_line_1("qc2", 40, 2, "pass");
    f.event("acme", &sg, &id, at, kind).await;
    assert!(f.open_kinds().is_empty());
    let case = f.case();
    assert_eq!(
        derive::status(&case.shipments[0], &case.exceptions, None),
        ShipmentStatus::AwaitingPacking
    );

    // Another failure, accepted as a deviation: it needs a reason.
    let (id, at, kind) = check_of_line_1("qc3", 60, 1, "fail");
    f.event("acme", &sg, &id, at, kind).await;
    let ex = f.exception_id(ExceptionKind::CheckFailed);
    let err = f.decide(&ex, Decision::ApproveDeviation).await.unwrap_err();
    assert!(err.contains("needs a note"), "{err}");
    f.workflow
        .decide(
            &ex,
            Decision::ApproveDeviation,
            Actor::Operator("mia".into()),
            Some("customer accepts a scuffed handle for a refund of 2 USD".into()),
        )
        .await
        .unwrap();
    assert!(f.open_kinds().is_empty());
    let case = f.case();
    assert_eq!(
        derive::status(&case.shipments[0], &case.exceptions, None),
        ShipmentStatus::AwaitingPacking
    );
}

/// A fixture three hours after one order of `quantity` MUG-RED was placed and acme confirmed
/// it (evidence dated later than the clock is refused, hence the hours); and its shipment.
async fn confirmed_order(quantity: i64) -> (Fixture, String) {
    let f = Fixture::new();
    f.put(&order(1, &[line(1, Some("MUG-RED"), quantity)]))
        .await;
    f.clock.advance(Duration::from_secs(3 * 3600));
    let sg = f.case().shipments[0].id.clone();
    f.event("acme", &sg, "c1", 10, confirmed(1, "MUG-RED", quantity))
        .await;
    (f, sg)
}

/// Packed in parcels (id, quantity of line 1), labelled with their numbers.
async fn pack_and_label(f: &Fixture, sg: &str, at_s: i64, parcels: &[(&str, i64, &str)]) {
    use crate::suppliers::{PackedParcel, ParcelLine};
    f.event(
        "acme",
        sg,
        &format!("pack-{at_s}"),
        at_s,
        EventKind::Packed {
            parcels: parcels
                .iter()
                .map(|(parcel, quantity, _)| PackedParcel {
                    parcel_id: parcel.to_string(),
                    lines: vec![ParcelLine {
                        line_id: "gid://shopify/LineItem/1".into(),
                        quantity: *quantity,
                    }],
                    weight_grams: Some(900),
                    dimensions_cm: None,
                    photos: Vec::new(),
                })
                .collect(),
        },
    )
    .await;
    for (parcel, _, number) in parcels {
        f.event(
            "acme",
            sg,
            &format!("label-{parcel}-{number}"),
            at_s + 1,
            EventKind::LabelCreated {
                parcel_id: Some(parcel.to_string()),
                carrier: "UPS".into(),
                tracking_number: number.to_string(),
                tracking_url: None,
            },
        )
        .await;
    }
}

/// The carrier's pickup scan of `number`, `at_s` seconds after the start.
async fn picked_up(f: &Fixture, number: &str, at_s: i64) {
    use crate::tracking::{Normalized, Provider, TrackingEvent};
    let scan = TrackingEvent {
        provider: Provider::AfterShip,
        event_id: format!("aftership:pickup-{number}"),
        tracking_number: number.into(),
        carrier: "ups".into(),
        occurred_at: Timestamp::from_unix_ms(START_MS + at_s * 1000),
        raw_text: "Pickup scan".into(),
        raw_code: Some("PU".into()),
        location: Some("Shenzhen".into()),
        provider_code: Some("InTransit_002".into()),
        acceptance_scan: true,
        normalized: Normalized::InTransit,
        evidence: Vec::new(),
    };
    f.workflow
        .apply_tracking(scan, Source::Workflow)
        .await
        .unwrap();
}

/// A fulfillment intent as the outbox holds it: key, tracking numbers, (line, quantity).
type Intent = (String, Vec<String>, Vec<(String, i64)>);

/// The fulfillment intents, in the order they were recorded.
fn intents(f: &Fixture) -> Vec<Intent> {
    f.effects()
        .into_iter()
        .filter_map(|e| match e.action {
            Action::CreateFulfillment {
                tracking_numbers,
                lines,
                ..
            } => Some((e.key, tracking_numbers, lines)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_fulfillment_not_yet_sent_is_withdrawn_when_the_gate_shuts_and_intended_again_when_it_reopens()
 {
    let (f, sg) = confirmed_order(2).await;
    let (id, at, kind) = check_of_line_1("qc1", 20, 2, "pass");
    f.event("acme", &sg, &id, at, kind).await;
    pack_and_label(&f, &sg, 30, &[("P1", 2, "1ZGOOD000001")]).await;
    picked_up(&f, "1ZGOOD000001", 3_600).await;
    let first = format!("{sg}.f1");
    let shopify = |f: &Fixture| -> Vec<String> {
        f.pending_actions()
            .into_iter()
            .filter(|a| a.starts_with("shopify_"))
            .collect()
    };
    assert_eq!(
        shopify(&f),
        vec![format!("shopify_fulfillment {first}")],
        "the gate opened; nothing was sent yet (no sender runs here)"
    );

    // A later check fails before the outbox sent the fulfillment: it must not go out.
    let (id, at, kind) = check_of_line_1("qc2", 3_700, 1, "fail");
    f.event("acme", &sg, &id, at, kind).await;
    assert_eq!(f.open_kinds(), vec![ExceptionKind::CheckFailed]);
    let withdrawn = f.store.effect_by_key(&first).unwrap().unwrap();
    assert!(
        matches!(&withdrawn.state, EffectState::Superseded { reason, .. } if reason.contains("exception")),
        "{:?}",
        withdrawn.state
    );
    let ex = f.exception_id(ExceptionKind::CheckFailed);
    assert_eq!(shopify(&f), vec![format!("shopify_hold {ex}.hold")]);
    let case = f.case();
    assert!(derive::withdrawn(&case.shipments[0], &first));
    assert!(derive::intended_fulfilments(&case.shipments[0]).is_empty());
    assert_eq!(
        derive::status(&case.shipments[0], &case.exceptions, None),
        ShipmentStatus::Held
    );

    // Replaced and checked again: the gate reopens, for both units, under a new key.
    f.decide(&ex, Decision::Replace).await.unwrap();
    let (id, at, kind) = check_of_line_1("qc3", 7_200, 2, "pass");
    f.event("acme", &sg, &id, at, kind).await;
    assert!(f.open_kinds().is_empty());
    assert_eq!(
        intents(&f),
        vec![
            (
                first,
                vec!["1ZGOOD000001".to_string()],
                vec![("gid://shopify/FulfillmentOrderLineItem/1".to_string(), 2)]
            ),
            (
                format!("{sg}.f2"),
                vec!["1ZGOOD000001".to_string()],
                vec![("gid://shopify/FulfillmentOrderLineItem/1".to_string(), 2)]
            ),
        ]
    );
}

#[tokio::test]
async fn a_fulfillment_not_yet_sent_is_withdrawn_when_the_order_is_cancelled() {
    let (f, sg) = confirmed_order(2).await;
    let (id, at, kind) = check_of_line_1("qc1", 20, 2, "pass");
    f.event("acme", &sg, &id, at, kind).await;
    pack_and_label(&f, &sg, 30, &[("P1", 2, "1ZGOOD000002")]).await;
    picked_up(&f, "1ZGOOD000002", 3_600).await;
    let mut cancelled = order(2, &[line(1, Some("MUG-RED"), 2)]);
    cancelled.cancelled_at = Some(Timestamp::from_unix_ms(START_MS + 4_000_000));
    f.put(&cancelled).await;
    let effect = f.store.effect_by_key(&format!("{sg}.f1")).unwrap().unwrap();
    assert!(
        matches!(&effect.state, EffectState::Superseded { reason, .. } if reason.contains("cancelled")),
        "{:?}",
        effect.state
    );
    assert!(
        !f.pending_actions()
            .iter()
            .any(|a| a.starts_with("shopify_fulfillment")),
        "{:?}",
        f.pending_actions()
    );
}

#[tokio::test]
async fn each_parcel_taken_by_the_carrier_is_fulfilled_with_its_own_number_once() {
    let (f, sg) = confirmed_order(2).await;
    let (id, at, kind) = check_of_line_1("qc1", 20, 2, "pass");
    f.event("acme", &sg, &id, at, kind).await;
    pack_and_label(
        &f,
        &sg,
        30,
        &[("P1", 1, "1ZBOX0000001"), ("P2", 1, "1ZBOX0000002")],
    )
    .await;
    picked_up(&f, "1ZBOX0000001", 3_600).await;
    picked_up(&f, "1ZBOX0000002", 7_200).await;
    let line = "gid://shopify/FulfillmentOrderLineItem/1".to_string();
    assert_eq!(
        intents(&f),
        vec![
            (
                format!("{sg}.f1"),
                vec!["1ZBOX0000001".to_string()],
                vec![(line.clone(), 1)]
            ),
            (
                format!("{sg}.f2"),
                vec!["1ZBOX0000002".to_string()],
                vec![(line, 1)]
            ),
        ],
        "the second fulfillment does not tell the customer the first parcel's number again"
    );
}

#[tokio::test]
async fn a_scan_from_before_the_order_was_placed_is_not_its_parcels_acceptance() {
    let (f, sg) = confirmed_order(2).await;
    let (id, at, kind) = check_of_line_1("qc1", 20, 2, "pass");
    f.event("acme", &sg, &id, at, kind).await;
    // A recycled number: the provider sends its old history, a pickup ten hours before this
    // order was placed (and so within the day's slack before the label).
    pack_and_label(&f, &sg, 3_600, &[("P1", 2, "1ZRECYCLED01")]).await;
    picked_up(&f, "1ZRECYCLED01", -10 * 3_600).await;
    let case = f.case();
    assert_eq!(
        derive::acceptances(&case.shipments[0], Some(START_MS))[0].1,
        None,
        "a scan before the order is no acceptance"
    );
    assert_eq!(
        derive::status(&case.shipments[0], &case.exceptions, Some(START_MS)),
        ShipmentStatus::AwaitingAcceptance
    );
    assert!(intents(&f).is_empty(), "{:?}", intents(&f));
    // The carrier's own pickup of this parcel opens the gate.
    picked_up(&f, "1ZRECYCLED02", 7_200).await;
    assert!(intents(&f).is_empty(), "another number proves nothing");
    let scan = |at_s: i64| crate::tracking::TrackingEvent {
        provider: crate::tracking::Provider::AfterShip,
        event_id: format!("aftership:second-pickup-{at_s}"),
        tracking_number: "1ZRECYCLED01".into(),
        carrier: "ups".into(),
        occurred_at: Timestamp::from_unix_ms(START_MS + at_s * 1000),
        raw_text: "Pickup scan".into(),
        raw_code: Some("PU".into()),
        location: Some("Shenzhen".into()),
        provider_code: Some("InTransit_002".into()),
        acceptance_scan: true,
        normalized: crate::tracking::Normalized::InTransit,
        evidence: Vec::new(),
    };
    f.workflow
        .apply_tracking(scan(7_300), Source::Workflow)
        .await
        .unwrap();
    assert_eq!(intents(&f).len(), 1);
}

#[tokio::test]
async fn a_conflict_names_a_shared_waybill_and_the_other_order_once() {
    let f = Fixture::new();
    f.put(&order(1, &[line(1, Some("MUG-RED"), 2)])).await;
    let mut other = order(1, &[line(1, Some("MUG-RED"), 1)]);
    other.id = "gid://shopify/Order/2".into();
    other.name = "#1002".into();
    other.fulfillment_orders[0].id = "gid://shopify/FulfillmentOrder/2".into();
    f.put(&other).await;
    f.clock.advance(Duration::from_secs(3 * 3600));
    let sg = f.case().shipments[0].id.clone();
    let other_sg = f.store.case(SHOP, &other.id).unwrap().unwrap().shipments[0]
        .id
        .clone();
    // Two parcels of the first order share one waybill, which the other order's label repeats.
    pack_and_label(
        &f,
        &sg,
        30,
        &[("P1", 1, "1ZSHARED0001"), ("P2", 1, "1ZSHARED0001")],
    )
    .await;
    f.event(
        "acme",
        &other_sg,
        "label-other",
        40,
        EventKind::LabelCreated {
            parcel_id: None,
            carrier: "UPS".into(),
            tracking_number: "1ZSHARED0001".into(),
            tracking_url: None,
        },
    )
    .await;
    f.workflow.plan_pending().await.unwrap();
    let conflict = f
        .case()
        .open_exceptions()
        .find(|e| e.kind == ExceptionKind::TrackingConflict)
        .cloned()
        .expect("a tracking conflict");
    assert_eq!(
        conflict.summary,
        "tracking number 1ZSHARED0001 is also on order #1002: ask for a new label"
    );
}

#[tokio::test]
async fn an_address_the_supplier_cannot_ship_to_is_held_until_corrected_and_sent_again() {
    let (f, sg) = confirmed_order(2).await;
    f.event(
        "acme",
        &sg,
        "addr-1",
        20,
        EventKind::AddressIssue {
            reason: "no street number; the carrier refuses the label".into(),
        },
    )
    .await;
    assert_eq!(f.open_kinds(), vec![ExceptionKind::AddressIssue]);
    let ex = f.exception_id(ExceptionKind::AddressIssue);
    let case = f.case();
    let exception = case.exception(&ex).unwrap();
    assert_eq!(exception.hold.as_ref().unwrap().reason, "INCORRECT_ADDRESS");
    assert!(
        exception.summary.contains("no street number"),
        "{}",
        exception.summary
    );
    assert_eq!(
        derive::status(&case.shipments[0], &case.exceptions, None),
        ShipmentStatus::Held
    );
    // Not a decision this exception allows.
    let err = f.decide(&ex, Decision::Replace).await.unwrap_err();
    assert!(err.contains("allows correct_address, cancel"), "{err}");

    // The owner corrects the address in Shopify, then says so: the supplier gets revision 2,
    // which carries the address as the mirror has it now, and the exception closes.
    let mut corrected = order(2, &[line(1, Some("MUG-RED"), 2)]);
    corrected.shipping_address.as_mut().unwrap().address1 = Some("12 Harbour Street".into());
    f.put(&corrected).await;
    assert_eq!(
        f.open_kinds(),
        vec![ExceptionKind::AddressIssue],
        "editing alone closes nothing"
    );
    f.decide(&ex, Decision::CorrectAddress).await.unwrap();
    assert!(f.open_kinds().is_empty());
    let case = f.case();
    let hold = case.exception(&ex).unwrap().hold.clone().unwrap();
    assert!(
        matches!(
            hold.state,
            HoldState::ReleaseRequested { .. } | HoldState::Released
        ),
        "{hold:?}"
    );
    let revisions: Vec<String> = f
        .effects()
        .into_iter()
        .filter(|e| e.key.starts_with(&format!("{sg}.r")))
        .map(|e| e.key)
        .collect();
    assert_eq!(revisions, vec![format!("{sg}.r1"), format!("{sg}.r2")]);
    // Deciding again is refused: the issue is answered.
    let err = f.decide(&ex, Decision::CorrectAddress).await.unwrap_err();
    assert!(err.contains("already closed"), "{err}");
}

#[tokio::test]
async fn an_address_issue_can_end_in_cancelling_the_shipment() {
    let (f, sg) = confirmed_order(1).await;
    f.event(
        "acme",
        &sg,
        "addr-1",
        20,
        EventKind::AddressIssue {
            reason: "PO boxes are not delivered".into(),
        },
    )
    .await;
    let ex = f.exception_id(ExceptionKind::AddressIssue);
    f.decide(&ex, Decision::Cancel).await.unwrap();
    assert!(
        f.pending_actions()
            .iter()
            .any(|a| a.starts_with("supplier_cancellation")),
        "{:?}",
        f.pending_actions()
    );
    assert!(
        !f.open_kinds().contains(&ExceptionKind::AddressIssue),
        "{:?}",
        f.open_kinds()
    );
}

#[tokio::test]
async fn a_fulfillment_whose_first_attempt_did_not_arrive_is_withdrawn_not_resent_once_the_gate_shut()
 {
    let (f, sg) = confirmed_order(2).await;
    let (id, at, kind) = check_of_line_1("qc1", 20, 2, "pass");
    f.event("acme", &sg, &id, at, kind).await;
    pack_and_label(&f, &sg, 30, &[("P1", 2, "1ZGOOD000009")]).await;
    picked_up(&f, "1ZGOOD000009", 3_600).await;
    let key = format!("{sg}.f1");
    // The first attempt timed out: it may have arrived, so settling leaves it to the sender.
    let mut first = f.store.effect_by_key(&key).unwrap().unwrap();
    first.maybe_delivered = true;
    first.attempts = 1;
    f.store
        .write_case(crate::store::cases::CaseWrite {
            updated_effects: vec![first],
            ..Default::default()
        })
        .unwrap();
    let (id, at, kind) = check_of_line_1("qc2", 3_700, 1, "fail");
    f.event("acme", &sg, &id, at, kind).await;
    assert!(f.store.effect_by_key(&key).unwrap().unwrap().is_pending());
    // The retry reads Shopify back (no client here: nothing found) and must not send it.
    f.sender().run_due().await.unwrap();
    let after = f.store.effect_by_key(&key).unwrap().unwrap();
    assert_eq!(
        after.attempts, 1,
        "sent through a shut gate: {:?}",
        after.state
    );
    assert!(
        matches!(&after.state, EffectState::Superseded { reason, .. } if reason.contains("exception")),
        "{:?}",
        after.state
    );
    let case = f.case();
    assert!(derive::withdrawn(&case.shipments[0], &key));
    assert!(derive::intended_fulfilments(&case.shipments[0]).is_empty());
}

#[tokio::test]
async fn one_correction_answers_every_earlier_address_report_and_a_stale_one_does_not_reopen_it() {
    let f = Fixture::new();
    f.put(&order(1, &[line(1, Some("MUG-RED"), 1)])).await;
    f.clock.advance(Duration::from_secs(3 * 3600));
    let sg = f.case().shipments[0].id.clone();
    let issue = |reason: &str| EventKind::AddressIssue {
        reason: reason.into(),
    };
    f.event("acme", &sg, "addr-1", 20, issue("no street number"))
        .await;
    f.event("acme", &sg, "addr-2", 30, issue("the zip does not match"))
        .await;
    let ex = f.exception_id(ExceptionKind::AddressIssue);
    f.decide(&ex, Decision::CorrectAddress).await.unwrap();
    assert!(f.open_kinds().is_empty(), "one decision answers both");
    // An old sheet row imported late: dated before the correction, it reopens nothing.
    f.event("acme", &sg, "addr-old-row", 25, issue("no street number"))
        .await;
    assert!(f.open_kinds().is_empty());
    // A new report after the correction is a new exception.
    f.event(
        "acme",
        &sg,
        "addr-3",
        3 * 3600 + 60,
        issue("still no street number"),
    )
    .await;
    assert_eq!(f.open_kinds(), vec![ExceptionKind::AddressIssue]);
    assert_ne!(f.exception_id(ExceptionKind::AddressIssue), ex);
}

#[tokio::test]
async fn an_address_issue_for_a_fulfilled_shipment_is_refused_at_the_door() {
    let f = Fixture::new();
    f.put(&order(1, &[line(1, Some("MUG-RED"), 2)])).await;
    f.clock.advance(Duration::from_secs(3 * 3600));
    let sg = f.case().shipments[0].id.clone();
    let mut case = f.case();
    case.shipments[0].record(crate::workflow::model::Evidence {
        id: format!("{sg}.f1.outcome"),
        at_ms: START_MS,
        recorded_ms: START_MS,
        actor: Actor::System,
        source: Source::Workflow,
        kind: crate::workflow::model::EvidenceKind::FulfillmentCreated {
            key: format!("{sg}.f1"),
            fulfillment_id: "gid://shopify/Fulfillment/1".into(),
        },
    });
    f.store
        .write_case(crate::store::cases::CaseWrite {
            case: Some(&case),
            ..Default::default()
        })
        .unwrap();
    let event = SupplierEvent {
        id: "addr-late".into(),
        shipment_id: sg.clone(),
        occurred_at: Timestamp::from_unix_ms(START_MS + 60_000),
        kind: EventKind::AddressIssue {
            reason: "returned to sender".into(),
        },
    };
    let refusal = f
        .workflow
        .validate_event("acme", &event)
        .unwrap_err()
        .to_string();
    assert!(refusal.contains("fulfilled already"), "{refusal}");
}

#[tokio::test]
async fn an_order_without_a_street_address_is_held_and_sent_to_no_supplier_until_completed() {
    let f = Fixture::new();
    let mut bare = order(1, &[line(1, Some("MUG-RED"), 1)]);
    bare.shipping_address.as_mut().unwrap().address1 = None;
    f.put(&bare).await;
    assert_eq!(f.open_kinds(), vec![ExceptionKind::AddressIssue]);
    let ex = f.exception_id(ExceptionKind::AddressIssue);
    let case = f.case();
    let exception = case.exception(&ex).unwrap();
    assert!(
        exception
            .summary
            .starts_with("the shipping address has no street line"),
        "{}",
        exception.summary
    );
    assert_eq!(exception.hold.as_ref().unwrap().reason, "INCORRECT_ADDRESS");
    // The submission waits: the supplier is never sent a shipment it cannot deliver.
    f.sender().run_due().await.unwrap();
    assert!(f.suppliers["acme"].received_keys().is_empty());
    let sg = case.shipments[0].id.clone();
    let submission = f.store.effect_by_key(&format!("{sg}.r1")).unwrap().unwrap();
    assert!(submission.is_pending());
    assert!(
        submission
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("no street line")),
        "{:?}",
        submission.last_error
    );
    // Deciding that the address is corrected while it is not is refused.
    let err = f.decide(&ex, Decision::CorrectAddress).await.unwrap_err();
    assert!(err.contains("correct it there first"), "{err}");

    // The owner completes it in Shopify: the exception closes by itself and the submission goes.
    f.put(&order(2, &[line(1, Some("MUG-RED"), 1)])).await;
    assert!(f.open_kinds().is_empty());
    f.clock.advance(Duration::from_secs(3600));
    f.sender().run_due().await.unwrap();
    assert_eq!(
        f.suppliers["acme"].received_keys(),
        vec![format!("{sg}.r1")]
    );
}

/// customers/redact strips the mirror's address for good (`Store::put_order`): a shipment the
/// supplier already has, with the address it was sent, is still written back, and amendments
/// still reach it.
#[tokio::test]
async fn a_shipment_the_supplier_has_is_not_held_when_the_mirror_loses_the_address() {
    let (f, sg) = confirmed_order(2).await;
    f.sender().run_due().await.unwrap();
    assert_eq!(
        f.suppliers["acme"].received_keys(),
        vec![format!("{sg}.r1")]
    );
    let (id, at, kind) = check_of_line_1("qc1", 20, 2, "pass");
    f.event("acme", &sg, &id, at, kind).await;
    pack_and_label(&f, &sg, 30, &[("P1", 2, "1ZGOOD000077")]).await;
    f.store.redact_order(SHOP, ORDER).unwrap();
    f.put(&order(2, &[line(1, Some("MUG-RED"), 2)])).await;
    assert!(
        f.store
            .order(SHOP, ORDER)
            .unwrap()
            .unwrap()
            .shipping_address
            .is_none()
    );
    picked_up(&f, "1ZGOOD000077", 3_600).await;
    assert!(f.open_kinds().is_empty(), "{:?}", f.open_kinds());
    assert_eq!(
        intents(&f).len(),
        1,
        "the parcel the carrier took is written back"
    );
}

#[tokio::test]
async fn an_amendment_reaches_a_supplier_that_has_the_address_after_the_mirror_lost_it() {
    let (f, sg) = confirmed_order(2).await;
    f.sender().run_due().await.unwrap();
    f.store.redact_order(SHOP, ORDER).unwrap();
    f.put(&order(2, &[line(1, Some("MUG-RED"), 1)])).await;
    f.sender().run_due().await.unwrap();
    assert_eq!(
        f.suppliers["acme"].received_keys(),
        vec![format!("{sg}.r1"), format!("{sg}.r2")]
    );
    assert!(f.open_kinds().is_empty(), "{:?}", f.open_kinds());
}

#[tokio::test]
async fn a_held_first_submission_counts_no_attempts_and_a_cancel_supersedes_it() {
    let f = Fixture::new();
    let mut bare = order(1, &[line(1, Some("MUG-RED"), 1)]);
    bare.shipping_address = None;
    f.put(&bare).await;
    let sg = f.case().shipments[0].id.clone();
    for _ in 0..4 {
        f.sender().run_due().await.unwrap();
        f.clock.advance(Duration::from_secs(3600));
    }
    let r1 = f.store.effect_by_key(&format!("{sg}.r1")).unwrap().unwrap();
    assert!(r1.is_pending() && !r1.maybe_delivered);
    assert_eq!(r1.attempts, 0, "holding is not trying");
    assert!(
        r1.last_error
            .as_deref()
            .is_some_and(|e| e.contains("no shipping address")),
        "{:?}",
        r1.last_error
    );
    let ex = f.exception_id(ExceptionKind::AddressIssue);
    f.decide(&ex, Decision::Cancel).await.unwrap();
    let r1 = f.store.effect_by_key(&format!("{sg}.r1")).unwrap().unwrap();
    assert!(
        matches!(r1.state, EffectState::Superseded { .. }),
        "{:?}",
        r1.state
    );
    f.sender().run_due().await.unwrap();
    assert!(
        f.suppliers["acme"].received_keys().is_empty(),
        "nothing reached the supplier, so nothing needs stopping there"
    );
    assert!(f.open_kinds().is_empty(), "{:?}", f.open_kinds());
}
