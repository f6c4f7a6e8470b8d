//! Suppliers end to end: the real daemon against the sandbox Shopify and sandbox supplier
//! agents, with a manual clock for everything that waits (retries, stockout waits).

use std::time::Duration;

use serde_json::{Value, json};
use shipgate::clock::Clock;
use shipgate::daemon::{Daemon, Options};
use shipgate::sandbox::harness::{ShopAuth, SupplierSpec};
use shipgate::sandbox::shopify::{Faults, NewLine, NewOrder, OrderEdit, Plan, SandboxShopify};
use shipgate::sandbox::supplier::{AgentSettings, SandboxAgent};
use shipgate::suppliers::signature;
use shipgate::workflow::derive::{self, ShipmentStatus};
use shipgate::workflow::effect::EffectState;
use shipgate::workflow::model::{Actor, Decision, ExceptionKind, HoldState, OrderCase};

use crate::helpers::{SyncedApp, TestApp, sandbox_config, synced_loopback};

const ACME_SECRET: &[u8] = b"acme-agent-secret";
const BRAVO_SECRET: &[u8] = b"bravo-agent-secret";
const TRACKER_SECRET: &str = "aftership-webhook-secret";

/// The daemon with two agents (`acme` ships `MUG-*` with `bravo` as backup, `bravo` ships
/// `TEE-*`) and a manual supplier (`charlie`, `SAMPLE-*`).
struct Supplied {
    synced: SyncedApp,
    acme: SandboxAgent,
    bravo: SandboxAgent,
    tracker: shipgate::sandbox::tracking::SandboxTracker,
    clock: Clock,
}

async fn spawn_supplied() -> Supplied {
    spawn_supplied_with(true).await
}

/// `outbox`: whether the daemon runs its own outbox sender (off for tests that drive one).
async fn spawn_supplied_with(outbox: bool) -> Supplied {
    let sandbox = SandboxShopify::start(sandbox_config(Plan::Standard))
        .await
        .expect("sandbox starts");
    let acme = SandboxAgent::start(AgentSettings {
        name: "acme".into(),
        secret: ACME_SECRET.to_vec(),
    })
    .await
    .unwrap();
    let bravo = SandboxAgent::start(AgentSettings {
        name: "bravo".into(),
        secret: BRAVO_SECRET.to_vec(),
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut loopback = synced_loopback(&sandbox, ShopAuth::Token("shpat_sandbox".into()));
    loopback.suppliers = vec![
        SupplierSpec {
            // Short, so that the slow-agent test waits one second, not twenty.
            request_timeout_secs: Some(1),
            ..SupplierSpec::http("acme", &acme.endpoint(), ACME_SECRET, &["MUG-*"])
                .with_backups(&["bravo"])
        },
        SupplierSpec::http("bravo", &bravo.endpoint(), BRAVO_SECRET, &["TEE-*"]),
        SupplierSpec::offline("charlie", "manual", &["SAMPLE-*"]),
    ];
    loopback.tracking = vec![("aftership".into(), TRACKER_SECRET.into())];
    let tracker = shipgate::sandbox::tracking::SandboxTracker::start(TRACKER_SECRET)
        .await
        .unwrap();
    let config = loopback.load(dir.path()).expect("config loads");
    let clock = Clock::manual(shipgate::delivery::now_ms() as i64);
    let options = Options {
        client: shipgate::shopify::client::ClientSettings {
            base_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(100),
            max_attempts: 12,
            ..Default::default()
        },
        clock: clock.clone(),
        outbox,
        ..Options::default()
    };
    let daemon = Daemon::start(&config, options)
        .await
        .expect("daemon starts");
    let base = format!("http://{}", daemon.public_addr());
    sandbox.set_webhook_url(Some(format!("{base}/webhooks/shopify")));
    acme.set_report_to(format!("{base}/webhooks/suppliers/acme"));
    bravo.set_report_to(format!("{base}/webhooks/suppliers/bravo"));
    tracker.set_report_to(format!("{base}/webhooks/tracking/aftership"));
    Supplied {
        synced: SyncedApp {
            app: TestApp {
                base,
                daemon,
                client: reqwest::Client::new(),
                config,
                _dir: dir,
            },
            sandbox,
        },
        acme,
        bravo,
        tracker,
        clock,
    }
}

fn new_order(lines: &[(&str, i64)]) -> NewOrder {
    NewOrder {
        name: None,
        lines: lines
            .iter()
            .map(|(sku, quantity)| NewLine {
                sku: sku.to_string(),
                quantity: *quantity,
                location: 0,
                variant_title: Some("Standard".into()),
            })
            .collect(),
        customer_email: Some("ada@example.com".into()),
        shipping_address: Some(json!({
            "name": "Ada Lovelace", "address1": "1 Example Street", "city": "London",
            "zip": "N1 1AA", "countryCodeV2": "GB"
        })),
    }
}

impl Supplied {
    fn daemon(&self) -> &Daemon {
        &self.synced.app.daemon
    }

    fn sandbox(&self) -> &SandboxShopify {
        &self.synced.sandbox
    }

    /// Lets every party act on what it has until nothing moves: Shopify's webhooks, the mirror,
    /// planning, the outbox at the current clock, and the agents' events.
    async fn settle(&self) {
        let settled = shipgate::sandbox::harness::settle(
            self.daemon(),
            self.sandbox(),
            &[&self.acme, &self.bravo],
            40,
        )
        .await
        .expect("settling");
        assert!(settled, "the system did not settle");
    }

    /// Records, as an operator, a whole passing check of one line of a shipment.
    async fn record_check(&self, shipment_id: &str, line: &str, sku: &str, quantity: i64) {
        let event = shipgate::sandbox::harness::check_event(
            "qc-1",
            shipment_id,
            &[(line, sku, quantity, quantity)],
            "pass",
        );
        self.daemon()
            .workflow()
            .record_event("acme", event, Actor::Operator("qc".into()))
            .await
            .unwrap();
    }

    fn case(&self, order: &str) -> OrderCase {
        self.daemon()
            .store()
            .case(self.sandbox().shop(), order)
            .unwrap()
            .expect("the order has a case")
    }

    fn open(&self, order: &str) -> Vec<ExceptionKind> {
        self.case(order).open_exceptions().map(|e| e.kind).collect()
    }

    fn statuses(&self, order: &str) -> Vec<(String, ShipmentStatus)> {
        let case = self.case(order);
        case.shipments
            .iter()
            .map(|s| {
                (
                    s.supplier.clone(),
                    derive::status(s, &case.exceptions, None),
                )
            })
            .collect()
    }

    fn holds(&self, order: &str) -> Vec<Value> {
        let snapshot = self.sandbox().order_snapshot(order).unwrap();
        snapshot["fulfillmentOrders"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|fo| fo["fulfillmentHolds"].as_array().unwrap().clone())
            .collect()
    }

    async fn decide(&self, order: &str, kind: ExceptionKind, decision: Decision) {
        let case = self.case(order);
        let id = case
            .open_exceptions()
            .find(|e| e.kind == kind)
            .unwrap_or_else(|| panic!("no open {kind:?}: {:?}", case.exceptions))
            .id
            .clone();
        self.daemon()
            .workflow()
            .decide(&id, decision, Actor::Operator("test".into()), None)
            .await
            .unwrap();
        self.settle().await;
    }
}

#[tokio::test]
async fn an_order_reaches_each_supplier_once_and_their_confirmations_come_back() {
    let s = spawn_supplied().await;
    let order = s
        .sandbox()
        .create_order(new_order(&[("MUG-RED", 2), ("TEE-M", 1)]));
    s.settle().await;
    let acme = s.acme.accepted_messages();
    assert_eq!(acme.len(), 1);
    assert_eq!(acme[0].kind, "submission");
    assert_eq!(acme[0].body["lines"][0]["sku"], "MUG-RED");
    assert_eq!(acme[0].body["lines"][0]["quantity"], 2);
    assert_eq!(acme[0].body["ship_to"]["name"], "Ada Lovelace");
    assert!(
        acme[0].body.get("customer_email").is_none(),
        "only what shipping needs"
    );
    assert_eq!(s.acme.posts_for(&acme[0].key), 1);
    assert_eq!(s.bravo.accepted_messages().len(), 1);
    let mut statuses = s.statuses(&order);
    statuses.sort();
    assert_eq!(
        statuses,
        vec![
            ("acme".into(), ShipmentStatus::AwaitingCheck),
            ("bravo".into(), ShipmentStatus::AwaitingCheck)
        ]
    );
    assert!(s.open(&order).is_empty());
    // Every event came through the signed webhook and was stored once.
    assert_eq!(s.acme.events_refused().len(), 0);
    assert!(s.holds(&order).is_empty());
}

#[tokio::test]
async fn a_stockout_is_held_in_shopify_until_rerouted_to_the_backup() {
    let s = spawn_supplied().await;
    s.acme.stockout("MUG-RED", None);
    let order = s.sandbox().create_order(new_order(&[("MUG-RED", 1)]));
    s.settle().await;
    assert_eq!(s.open(&order), vec![ExceptionKind::Stockout]);
    let holds = s.holds(&order);
    assert_eq!(holds.len(), 1, "{holds:?}");
    assert_eq!(holds[0]["reason"], "INVENTORY_OUT_OF_STOCK");
    let case = s.case(&order);
    let exception = case.open_exceptions().next().unwrap();
    assert_eq!(
        holds[0]["handle"].as_str(),
        Some(format!("shipgate-{}", exception.id).as_str())
    );
    assert!(matches!(
        exception.hold.as_ref().unwrap().state,
        HoldState::Placed { .. }
    ));
    // Reconciliation sees the hold as owned by the open exception: no drift.
    let shop = s.sandbox().shop();
    let report = shipgate::reconcile::reconcile(
        s.daemon().store(),
        &s.daemon().shop_sync(shop).unwrap().client,
        &reqwest::Client::new(),
        &shipgate::reconcile::ReconcileOptions::default(),
        &|_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.class("holds_without_exception").unwrap().count, 0);

    s.decide(
        &order,
        ExceptionKind::Stockout,
        Decision::Reroute { supplier: None },
    )
    .await;
    assert!(s.open(&order).is_empty());
    assert!(s.holds(&order).is_empty(), "the hold was released");
    let kinds: Vec<_> = s
        .acme
        .accepted_messages()
        .into_iter()
        .map(|m| m.kind)
        .collect();
    assert_eq!(kinds, vec!["submission", "cancellation"]);
    let bravo = s.bravo.accepted_messages();
    assert_eq!(bravo.len(), 1);
    assert_eq!(bravo[0].body["lines"][0]["sku"], "MUG-RED");
    let mut statuses = s.statuses(&order);
    statuses.sort();
    assert_eq!(
        statuses,
        vec![
            ("acme".into(), ShipmentStatus::Cancelled),
            ("bravo".into(), ShipmentStatus::AwaitingCheck)
        ]
    );
}

#[tokio::test]
async fn an_unmapped_sku_is_held_and_routed_by_hand_to_a_manual_supplier() {
    let s = spawn_supplied().await;
    let order = s.sandbox().create_order(new_order(&[("LAMP-9", 1)]));
    s.settle().await;
    assert_eq!(s.open(&order), vec![ExceptionKind::UnmappedSku]);
    assert_eq!(s.holds(&order)[0]["reason"], "OTHER");
    s.decide(
        &order,
        ExceptionKind::UnmappedSku,
        Decision::RouteTo {
            supplier: "charlie".into(),
        },
    )
    .await;
    assert!(s.open(&order).is_empty());
    assert!(s.holds(&order).is_empty());
    assert_eq!(
        s.statuses(&order),
        vec![("charlie".into(), ShipmentStatus::AwaitingConfirmation)]
    );
}

#[tokio::test]
async fn a_substitute_is_approved_and_a_rejection_rerouted() {
    let s = spawn_supplied().await;
    s.acme
        .substitute("MUG-RED", "MUG-CRIMSON", "crimson instead of red");
    let order = s.sandbox().create_order(new_order(&[("MUG-RED", 1)]));
    s.settle().await;
    assert_eq!(s.open(&order), vec![ExceptionKind::SubstituteOffered]);
    s.decide(
        &order,
        ExceptionKind::SubstituteOffered,
        Decision::ApproveSubstitute,
    )
    .await;
    assert!(s.open(&order).is_empty());
    let kinds: Vec<_> = s
        .acme
        .accepted_messages()
        .into_iter()
        .map(|m| m.kind)
        .collect();
    assert_eq!(kinds, vec!["submission", "decision"]);
    assert_eq!(
        s.statuses(&order),
        vec![("acme".into(), ShipmentStatus::AwaitingCheck)],
        "the approved substitute counts as confirmed"
    );
    assert!(s.holds(&order).is_empty());

    s.acme.clear_switches();
    s.acme.reject(Some("we no longer ship to GB".into()));
    let second = s.sandbox().create_order(new_order(&[("MUG-BLUE", 1)]));
    s.settle().await;
    assert_eq!(s.open(&second), vec![ExceptionKind::SupplierRejected]);
    s.decide(
        &second,
        ExceptionKind::SupplierRejected,
        Decision::Reroute { supplier: None },
    )
    .await;
    assert!(s.open(&second).is_empty());
    assert_eq!(s.bravo.accepted_messages().len(), 1);
}

#[tokio::test]
async fn a_cancellation_in_shopify_reaches_the_supplier_and_closes_on_its_answer() {
    let s = spawn_supplied().await;
    let order = s.sandbox().create_order(new_order(&[("MUG-RED", 1)]));
    s.settle().await;
    s.sandbox().cancel_order(&order, "CUSTOMER").unwrap();
    s.settle().await;
    let kinds: Vec<_> = s
        .acme
        .accepted_messages()
        .into_iter()
        .map(|m| m.kind)
        .collect();
    assert_eq!(kinds, vec!["submission", "cancellation"]);
    let case = s.case(&order);
    let exception = case
        .exceptions
        .iter()
        .find(|e| e.kind == ExceptionKind::CancelledAfterSubmission)
        .expect("the cancellation opened an exception");
    assert!(
        !exception.is_open(),
        "the supplier's `cancelled` event closed it: {exception:?}"
    );
    assert_eq!(
        s.statuses(&order),
        vec![("acme".into(), ShipmentStatus::Cancelled)]
    );
}

#[tokio::test]
async fn an_edit_in_shopify_reaches_the_supplier_as_a_revision() {
    let s = spawn_supplied().await;
    let order = s.sandbox().create_order(new_order(&[("MUG-RED", 3)]));
    s.settle().await;
    s.sandbox()
        .edit_order(
            &order,
            OrderEdit::SetQuantity {
                sku: "MUG-RED".into(),
                quantity: 1,
            },
        )
        .unwrap();
    s.settle().await;
    let messages = s.acme.accepted_messages();
    let kinds: Vec<_> = messages.iter().map(|m| m.kind.clone()).collect();
    assert_eq!(kinds, vec!["submission", "amendment"]);
    assert_eq!(messages[1].body["revision"], 2);
    assert_eq!(messages[1].body["lines"][0]["quantity"], 1);
    assert!(s.open(&order).is_empty());
}

#[tokio::test]
async fn a_supplier_down_for_a_day_gets_each_submission_once_when_it_returns() {
    let s = spawn_supplied().await;
    s.acme.set_down(true);
    let orders: Vec<String> = (0..3)
        .map(|_| s.sandbox().create_order(new_order(&[("MUG-RED", 1)])))
        .collect();
    s.settle().await;
    let workflow = s.daemon().workflow();
    // A simulated day in quarter hours: every due retry runs at each step.
    for _ in 0..96 {
        s.clock.advance(Duration::from_secs(15 * 60));
        workflow.wait_quiet().await.unwrap();
    }
    assert!(s.acme.accepted_messages().is_empty());
    let keys: Vec<String> = orders
        .iter()
        .map(|o| format!("{}.r1", s.case(o).shipments[0].id))
        .collect();
    for key in &keys {
        let posts = s.acme.posts_for(key);
        assert!(
            posts >= 24,
            "{key} was retried through the day: {posts} attempts"
        );
    }
    s.acme.set_down(false);
    // The longest pause is 30 minutes plus up to 20% jitter.
    s.clock.advance(Duration::from_secs(37 * 60));
    s.settle().await;
    let accepted = s.acme.accepted_messages();
    assert_eq!(accepted.len(), 3, "each submission arrived");
    assert_eq!(s.acme.duplicates(), 0, "and none twice");
    for order in &orders {
        assert_eq!(
            s.statuses(order),
            vec![("acme".into(), ShipmentStatus::AwaitingCheck)]
        );
    }
    let effects: Vec<_> = s.daemon().store().effects().map(|e| e.unwrap()).collect();
    assert!(
        effects
            .iter()
            .all(|e| matches!(e.state, EffectState::Done { .. }))
    );
}

#[tokio::test]
async fn a_lost_answer_is_looked_up_instead_of_sent_again() {
    let s = spawn_supplied().await;
    s.acme.drop_next_responses(1);
    let order = s.sandbox().create_order(new_order(&[("MUG-RED", 1)]));
    s.settle().await;
    let effect = s.daemon().store().effects().next().unwrap().unwrap();
    assert!(effect.is_pending() && effect.maybe_delivered, "{effect:?}");
    s.clock.advance(Duration::from_secs(60));
    s.settle().await;
    assert_eq!(s.acme.lookups(), 1);
    assert_eq!(s.acme.duplicates(), 0);
    assert_eq!(s.acme.posts_for(&effect.key), 1, "sent once");
    assert_eq!(
        s.statuses(&order),
        vec![("acme".into(), ShipmentStatus::AwaitingCheck)]
    );
}

#[tokio::test]
async fn supplier_events_are_verified_stored_once_and_checked_against_the_shipment() {
    let s = spawn_supplied().await;
    let order = s.sandbox().create_order(new_order(&[("MUG-RED", 1)]));
    s.settle().await;
    let shipment = s.case(&order).shipments[0].id.clone();
    let url = format!("{}/webhooks/suppliers/acme", s.synced.app.base);
    let client = &s.synced.app.client;
    let post = |body: String, secret: &'static [u8]| {
        let header = signature::sign(secret, signature::now_secs(), body.as_bytes());
        client
            .post(&url)
            .header("content-type", "application/json")
            .header("shipgate-signature", header)
            .body(body)
            .send()
    };
    let event = |id: &str, shipment: &str| {
        json!({"id": id, "type": "received", "shipment_id": shipment,
               "occurred_at": "2026-11-25T10:00:00Z"})
        .to_string()
    };
    let r = post(event("evt-x1", &shipment), BRAVO_SECRET)
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "signed with another supplier's secret");
    let r = post(event("evt-x2", "SG-9999999999"), ACME_SECRET)
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("unknown shipment SG-9999999999")
    );
    let r = post("{\"id\":\"e\"}".into(), ACME_SECRET).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("`shipment_id` is missing"));
    let r = post(event("evt-x3", &shipment), ACME_SECRET).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = post(event("evt-x3", &shipment), ACME_SECRET).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("duplicate"));
    s.settle().await;
    let evidence: Vec<_> = s.case(&order).shipments[0]
        .evidence
        .iter()
        .filter(|e| e.id == "supplier:evt-x3")
        .cloned()
        .collect();
    assert_eq!(evidence.len(), 1);
}

#[tokio::test]
async fn a_hold_whose_answer_was_lost_is_read_back_and_never_placed_twice() {
    let s = spawn_supplied().await;
    // Every mutation is executed by Shopify but its answer replaced by a 502.
    s.sandbox().set_faults(Faults {
        lost_response: 1.0,
        ..Faults::default()
    });
    let order = s.sandbox().create_order(new_order(&[("LAMP-9", 1)]));
    s.settle().await;
    assert_eq!(s.holds(&order).len(), 1, "Shopify placed the hold");
    let hold = |s: &Supplied| s.case(&order).exceptions[0].hold.clone().unwrap();
    assert_eq!(
        hold(&s).state,
        HoldState::Requested,
        "but shipgate does not know yet"
    );
    s.clock.advance(Duration::from_secs(60));
    s.settle().await;
    assert_eq!(s.holds(&order).len(), 1, "read back, not placed again");
    let HoldState::Placed { hold_id } = hold(&s).state else {
        panic!("{:?}", hold(&s));
    };
    assert!(
        hold_id.starts_with("gid://shopify/FulfillmentHold/"),
        "{hold_id}"
    );

    s.decide(
        &order,
        ExceptionKind::UnmappedSku,
        Decision::RouteTo {
            supplier: "charlie".into(),
        },
    )
    .await;
    assert!(s.holds(&order).is_empty(), "Shopify released it");
    s.clock.advance(Duration::from_secs(60));
    s.settle().await;
    assert_eq!(hold(&s).state, HoldState::Released);
    assert!(s.sandbox().stats().lost_responses >= 2);
    let effects: Vec<_> = s.daemon().store().effects().map(|e| e.unwrap()).collect();
    assert!(
        effects
            .iter()
            .all(|e| matches!(e.state, EffectState::Done { .. })),
        "{effects:?}"
    );
}

/// Invariant 2 for Shopify holds: a crash at any point of the send path, then a restarted
/// sender, leaves exactly one hold in Shopify, known to shipgate by its id.
#[tokio::test]
async fn a_crash_at_any_point_while_holding_leaves_exactly_one_hold() {
    use shipgate::workflow::sender::{CrashPoint, SendError};
    use std::sync::Arc;
    for point in CrashPoint::ALL {
        let s = spawn_supplied_with(false).await;
        let order = s.sandbox().create_order(new_order(&[("LAMP-9", 1)]));
        s.sandbox().flush_webhooks().await;
        s.daemon().wait_idle().await;
        s.synced.sync().await.unwrap();
        s.daemon().workflow().plan_pending().await.unwrap();
        assert_eq!(s.open(&order), vec![ExceptionKind::UnmappedSku]);

        let crashing = s
            .daemon()
            .sender()
            .clone()
            .with_crash_hook(Arc::new(move |at, _| at == point));
        let crashed = crashing.run_due().await;
        assert!(
            matches!(&crashed, Err(SendError::Crashed(c)) if c.0 == point),
            "{point:?}: {crashed:?}"
        );
        s.daemon().sender().run_due().await.unwrap();
        assert_eq!(s.holds(&order).len(), 1, "{point:?}");
        let case = s.case(&order);
        assert!(
            matches!(
                case.exceptions[0].hold.as_ref().unwrap().state,
                HoldState::Placed { .. }
            ),
            "{point:?}: {:?}",
            case.exceptions[0].hold
        );
    }
}

#[tokio::test]
async fn an_answer_slower_than_the_timeout_is_looked_up_not_sent_again() {
    let s = spawn_supplied().await;
    // The agent acts on the message at once but answers after the adapter gave up (1 s).
    s.acme.set_slow(Some(Duration::from_secs(3)));
    let order = s.sandbox().create_order(new_order(&[("MUG-RED", 1)]));
    s.settle().await;
    let effect = s.daemon().store().effects().next().unwrap().unwrap();
    assert!(effect.is_pending() && effect.maybe_delivered, "{effect:?}");
    assert!(
        effect
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("no answer within 1s"),
        "{effect:?}"
    );
    s.acme.set_slow(None);
    s.clock.advance(Duration::from_secs(60));
    s.settle().await;
    assert_eq!(s.acme.posts_for(&effect.key), 1, "sent once");
    assert_eq!(s.acme.lookups(), 1);
    assert_eq!(
        s.statuses(&order),
        vec![("acme".into(), ShipmentStatus::AwaitingCheck)]
    );
}

/// Runs a reconciliation of the sandbox shop, repairing or not.
async fn reconcile(s: &Supplied, repair: bool) -> shipgate::reconcile::ReconcileReport {
    let shop = s.sandbox().shop();
    shipgate::reconcile::reconcile(
        s.daemon().store(),
        &s.daemon().shop_sync(shop).unwrap().client,
        &reqwest::Client::new(),
        &shipgate::reconcile::ReconcileOptions {
            repair,
            ..Default::default()
        },
        &|_| {},
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn reconciliation_finds_an_exception_whose_hold_was_released_in_shopify() {
    let s = spawn_supplied().await;
    let order = s.sandbox().create_order(new_order(&[("LAMP-9", 1)]));
    s.settle().await;
    let fo = s.sandbox().fulfillment_order_ids(&order)[0].clone();
    s.sandbox().merchant_release(&fo).unwrap();
    s.settle().await;
    let report = reconcile(&s, true).await;
    let class = report.class("exceptions_without_hold").unwrap();
    assert_eq!(class.count, 1, "{report:?}");
    assert!(class.examples[0].contains("unmapped_sku"), "{class:?}");
    assert!(
        report
            .repairs
            .iter()
            .any(|r| r.starts_with("Left 1 open exception as it is")),
        "{:?}",
        report.repairs
    );
    // shipgate does not fight the merchant: no new hold.
    s.settle().await;
    assert!(s.holds(&order).is_empty());
}

#[tokio::test]
async fn reconciliation_stops_the_shipments_of_a_cancelled_order_that_planning_missed() {
    let s = spawn_supplied().await;
    let order = s.sandbox().create_order(new_order(&[("MUG-RED", 1)]));
    s.settle().await;
    let before = s.case(&order);
    s.sandbox().cancel_order(&order, "CUSTOMER").unwrap();
    s.settle().await;
    // Lose the planning that followed the cancellation, as a bug or a lost write would.
    s.daemon()
        .store()
        .write_case(shipgate::store::cases::CaseWrite {
            case: Some(&before),
            ..Default::default()
        })
        .unwrap();
    let report = reconcile(&s, true).await;
    assert_eq!(
        report.class("cancelled_with_live_shipments").unwrap().count,
        1,
        "{report:?}"
    );
    assert!(
        report
            .repairs
            .iter()
            .any(|r| r == "Planned 1 cancelled order again: their suppliers are asked to stop."),
        "{:?}",
        report.repairs
    );
    s.settle().await;
    let after = reconcile(&s, false).await;
    assert_eq!(
        after.class("cancelled_with_live_shipments").unwrap().count,
        0
    );
    // The cancellation had gone out already: its key is recorded, so it is not sent again.
    let kinds: Vec<_> = s
        .acme
        .accepted_messages()
        .into_iter()
        .map(|m| m.kind)
        .collect();
    assert_eq!(kinds, vec!["submission", "cancellation"]);
}

#[tokio::test]
async fn carrier_acceptance_makes_a_labelled_shipment_ready_and_false_positives_do_not() {
    let s = spawn_supplied().await;
    let accepted = s.sandbox().create_order(new_order(&[("MUG-RED", 1)]));
    let fooled = s.sandbox().create_order(new_order(&[("MUG-BLUE", 1)]));
    s.settle().await;
    let numbers: Vec<(String, String)> = [&accepted, &fooled]
        .iter()
        .map(|order| {
            let sg = s.case(order).shipments[0].id.clone();
            (
                sg.clone(),
                s.acme
                    .ship(&sg)
                    .expect("the agent ships a confirmed shipment"),
            )
        })
        .collect();
    s.settle().await;
    for (sg, _) in &numbers {
        let case = s.daemon().store().case_of(sg).unwrap().unwrap();
        let shipment = case.shipment(sg).unwrap();
        assert_eq!(
            derive::status(shipment, &case.exceptions, None),
            ShipmentStatus::AwaitingAcceptance,
            "a label and a handover claim are not acceptance"
        );
    }
    let label_ms = shipgate::delivery::now_ms() as i64;
    s.tracker.accept_and_deliver(&numbers[0].1, "ups", label_ms);
    s.tracker
        .gwms_false_positive(&numbers[1].1, "ups", label_ms);
    s.tracker.flush().await;
    s.daemon().wait_idle().await;
    let status = |sg: &str| {
        let case = s.daemon().store().case_of(sg).unwrap().unwrap();
        derive::status(case.shipment(sg).unwrap(), &case.exceptions, None)
    };
    assert_eq!(status(&numbers[0].0), ShipmentStatus::Ready);
    let case = s.daemon().store().case_of(&numbers[0].0).unwrap().unwrap();
    let carrier_events = case
        .shipment(&numbers[0].0)
        .unwrap()
        .evidence
        .iter()
        .filter(|e| matches!(e.kind, shipgate::workflow::model::EvidenceKind::Carrier(_)))
        .count();
    assert_eq!(
        carrier_events, 5,
        "every checkpoint is kept as evidence, once"
    );
    // GWMS_ACCEPT is a warehouse event, not the carrier's: the later pickup is.
    let acceptance = derive::acceptances(case.shipment(&numbers[0].0).unwrap(), None);
    assert!(acceptance[0].1.is_some());
    let fooled_case = s.daemon().store().case_of(&numbers[1].0).unwrap().unwrap();
    let fooled_acceptance = derive::acceptances(fooled_case.shipment(&numbers[1].0).unwrap(), None);
    let why = fooled_acceptance[0].1.as_ref().map(|a| a.why.clone());
    assert!(
        why.as_deref().is_none_or(|w| !w.contains("GWMS_ACCEPT (")),
        "{why:?}"
    );
}

/// The whole path: order, supplier, check, pack, label, the carrier's acceptance, and only then
/// a Shopify fulfillment with tracking; delivered at the end.
#[tokio::test]
async fn the_fulfillment_is_written_back_only_after_a_check_and_the_carriers_acceptance() {
    let s = spawn_supplied().await;
    let order = s.sandbox().create_order(new_order(&[("MUG-RED", 2)]));
    s.settle().await;
    let case = s.case(&order);
    let sg = case.shipments[0].id.clone();
    let line = case.shipments[0].lines[0].line_item_id.clone();
    // The agent packs and labels, the carrier has nothing yet: no fulfillment.
    let number = s.acme.ship(&sg).unwrap();
    s.settle().await;
    assert!(s.sandbox().fulfillments(&order).is_empty());

    // A whole, passing check recorded by the operator for the agent.
    s.record_check(&sg, &line, "MUG-RED", 2).await;
    s.settle().await;
    assert!(
        s.sandbox().fulfillments(&order).is_empty(),
        "checked and labelled, but no carrier scan yet"
    );

    s.tracker
        .accept_and_deliver(&number, "ups", shipgate::delivery::now_ms() as i64);
    s.carrier_reported().await;
    let fulfillments = s.sandbox().fulfillments(&order);
    assert_eq!(fulfillments.len(), 1, "{fulfillments:?}");
    let tracking = &fulfillments[0]["trackingInfo"];
    assert!(tracking.to_string().contains(&number), "{tracking}");
    assert_eq!(fulfillments[0]["origin"], "app");
    assert_eq!(
        s.statuses(&order),
        vec![("acme".into(), ShipmentStatus::Delivered)]
    );
    // Settling again writes nothing more back.
    s.settle().await;
    assert_eq!(s.sandbox().fulfillments(&order).len(), 1);
}

/// A fulfillment Shopify refuses (the merchant held the order meanwhile, and the mirror did not
/// know yet) opens an exception instead of being retried blindly; `retry` tries again.
#[tokio::test]
async fn a_refused_write_back_is_an_exception_and_retried_on_decision() {
    let s = spawn_supplied().await;
    let Shipped { order, number, .. } = s.shipped_and_checked("MUG-RED").await;

    // The merchant holds the order; shipgate does not hear of it before the carrier's scan.
    let fo = s.sandbox().fulfillment_order_ids(&order)[0].clone();
    s.sandbox().set_webhook_url(None);
    s.sandbox().merchant_hold(&fo, "OTHER").unwrap();
    s.tracker
        .accept_and_deliver(&number, "ups", shipgate::delivery::now_ms() as i64);
    s.tracker.flush().await;
    s.daemon().wait_idle().await;
    s.daemon().workflow().wait_quiet().await.unwrap();
    assert!(s.sandbox().fulfillments(&order).is_empty());
    assert_eq!(s.open(&order), vec![ExceptionKind::WriteBackRefused]);

    s.sandbox().merchant_release(&fo).unwrap();
    s.sandbox()
        .set_webhook_url(Some(format!("{}/webhooks/shopify", s.synced.app.base)));
    s.settle().await;
    assert!(
        s.sandbox().fulfillments(&order).is_empty(),
        "not retried blindly"
    );
    s.decide(&order, ExceptionKind::WriteBackRefused, Decision::Retry)
        .await;
    assert!(s.open(&order).is_empty());
    assert_eq!(s.sandbox().fulfillments(&order).len(), 1);
    assert_eq!(
        s.statuses(&order),
        vec![("acme".into(), ShipmentStatus::Delivered)]
    );
}

/// A fulfillment made in Shopify by hand while the supplier still has the shipment opens an
/// exception; shipgate does not fulfil it a second time.
#[tokio::test]
async fn a_fulfillment_made_outside_shipgate_is_an_exception_not_a_duplicate() {
    let s = spawn_supplied().await;
    let order = s.sandbox().create_order(new_order(&[("MUG-RED", 1)]));
    s.settle().await;
    let fo = s.sandbox().fulfillment_order_ids(&order)[0].clone();
    s.sandbox()
        .fulfill_outside(&fo, "9400111899223197428490")
        .unwrap();
    s.settle().await;
    assert_eq!(s.open(&order), vec![ExceptionKind::FulfilledOutside]);
    assert_eq!(s.sandbox().fulfillments(&order).len(), 1);
    s.decide(
        &order,
        ExceptionKind::FulfilledOutside,
        Decision::Acknowledge,
    )
    .await;
    assert!(s.open(&order).is_empty());
    assert_eq!(
        s.statuses(&order),
        vec![("acme".into(), ShipmentStatus::Cancelled)]
    );
    assert_eq!(s.sandbox().fulfillments(&order).len(), 1);
}

/// What [`Supplied::shipped_and_checked`] made.
struct Shipped {
    order: String,
    shipment: String,
    line: String,
    number: String,
}

/// The statuses Shopify shows on an order's fulfillments, in the order they were posted.
fn posted_statuses(fulfillment: &Value) -> Vec<String> {
    let events = &fulfillment["events"];
    events["nodes"]
        .as_array()
        .or_else(|| events.as_array())
        .into_iter()
        .flatten()
        .map(|e| e["status"].as_str().unwrap_or_default().to_string())
        .collect()
}

impl Supplied {
    /// An order of one unit of `sku`, shipped by its agent (packed and labelled) and checked
    /// by an operator: everything but the carrier.
    async fn shipped_and_checked(&self, sku: &str) -> Shipped {
        let order = self.sandbox().create_order(new_order(&[(sku, 1)]));
        self.settle().await;
        let case = self.case(&order);
        let shipment = case.shipments[0].id.clone();
        let line = case.shipments[0].lines[0].line_item_id.clone();
        let number = self.acme.ship(&shipment).unwrap();
        self.record_check(&shipment, &line, sku, 1).await;
        self.settle().await;
        Shipped {
            order,
            shipment,
            line,
            number,
        }
    }

    /// Records, as an operator, a label for a parcel of a shipment at the clock's time.
    async fn record_label(&self, shipment_id: &str, parcel: &str, number: &str, id: &str) {
        let event = shipgate::suppliers::SupplierEvent {
            id: id.into(),
            shipment_id: shipment_id.into(),
            occurred_at: shipgate::order::Timestamp::from_unix_ms(self.clock.now_ms()),
            kind: shipgate::suppliers::EventKind::LabelCreated {
                parcel_id: Some(parcel.into()),
                carrier: "UPS".into(),
                tracking_number: number.into(),
                tracking_url: None,
            },
        };
        self.daemon()
            .workflow()
            .record_event("acme", event, Actor::Operator("warehouse".into()))
            .await
            .unwrap();
    }

    /// The carrier's acceptance scan of a number at `at_ms`, through the tracker's webhook.
    async fn carrier_accepts(&self, number: &str, at_ms: i64) {
        use shipgate::sandbox::tracking::Checkpoint;
        self.tracker.register(number, "ups");
        self.tracker
            .push(
                number,
                Checkpoint::new(
                    "InTransit_002",
                    Some("OA"),
                    "Accepted at UPS Origin Facility",
                    Some("LOUISVILLE, KY"),
                    at_ms,
                ),
            )
            .unwrap();
        self.carrier_reported().await;
    }

    /// Lets the tracker's webhooks land and everything they cause settle.
    async fn carrier_reported(&self) {
        self.tracker.flush().await;
        self.daemon().wait_idle().await;
        self.settle().await;
    }

    /// Moves the clock on and lets the workflow's timers act.
    async fn days_pass(&self, days: u64) {
        self.clock.advance(Duration::from_secs(days * 24 * 3600));
        self.daemon().workflow().tick().await.unwrap();
        self.settle().await;
    }

    /// The parcel id of a shipment's only parcel.
    fn parcel(&self, order: &str) -> String {
        derive::parcels(&self.case(order).shipments[0])
            .into_keys()
            .next()
            .expect("a packed parcel")
    }
}

/// After the fulfillment, the carrier's progress reaches Shopify as fulfillment events: the
/// acceptance as CARRIER_PICKED_UP (the departure scan adds nothing new), then out for
/// delivery and delivered, each once however often the tracker repeats itself.
#[tokio::test]
async fn the_carriers_progress_reaches_shopify_as_fulfillment_events() {
    let s = spawn_supplied().await;
    let Shipped { order, number, .. } = s.shipped_and_checked("MUG-RED").await;
    s.tracker
        .accept_and_deliver(&number, "ups", s.clock.now_ms() - 12 * 3600 * 1000);
    s.carrier_reported().await;
    let fulfillments = s.sandbox().fulfillments(&order);
    assert_eq!(fulfillments.len(), 1, "{fulfillments:?}");
    assert_eq!(
        posted_statuses(&fulfillments[0]),
        ["CARRIER_PICKED_UP", "OUT_FOR_DELIVERY", "DELIVERED"],
        "{fulfillments:?}"
    );
    // Every intent was delivered, and settling again posts nothing more.
    s.settle().await;
    assert_eq!(
        posted_statuses(&s.sandbox().fulfillments(&order)[0]).len(),
        3
    );
    let effects: Vec<_> = s
        .daemon()
        .store()
        .effects()
        .map(Result::unwrap)
        .filter(|e| e.action.name() == "shopify_fulfillment_event")
        .collect();
    assert_eq!(effects.len(), 3);
    assert!(
        effects
            .iter()
            .all(|e| matches!(e.state, EffectState::Done { .. })),
        "{effects:?}"
    );
}

/// A label the carrier does not take within three business days opens an exception (no hold:
/// the gate waits for the carrier anyway). `chase` asks the agent and starts the clock again;
/// `new_label` keeps it open until the agent's new label, whose acceptance then fulfils the
/// order with the new number only.
#[tokio::test]
async fn a_label_the_carrier_never_takes_is_an_exception_until_a_new_label_is_accepted() {
    let s = spawn_supplied().await;
    let Shipped {
        order,
        shipment: sg,
        number: old,
        ..
    } = s.shipped_and_checked("MUG-RED").await;

    s.days_pass(1).await;
    assert!(s.open(&order).is_empty(), "one day is within the three");
    s.days_pass(5).await;
    assert_eq!(s.open(&order), vec![ExceptionKind::NoCarrierMovement]);
    assert!(
        s.holds(&order).is_empty(),
        "no hold for a label nobody took"
    );

    s.decide(&order, ExceptionKind::NoCarrierMovement, Decision::Chase)
        .await;
    assert!(s.open(&order).is_empty(), "chasing starts the clock again");
    let asked: Vec<_> = s
        .acme
        .accepted_messages()
        .into_iter()
        .filter(|m| m.kind == "parcel_decision")
        .collect();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].body["decision"], "chase", "{}", asked[0].body);
    assert_eq!(asked[0].body["tracking_number"], old.as_str());

    s.days_pass(6).await;
    assert_eq!(s.open(&order), vec![ExceptionKind::NoCarrierMovement]);
    s.decide(&order, ExceptionKind::NoCarrierMovement, Decision::NewLabel)
        .await;
    s.days_pass(6).await;
    assert_eq!(
        s.open(&order),
        vec![ExceptionKind::NoCarrierMovement],
        "open until the new label comes"
    );

    let parcel = s.parcel(&order);
    s.record_label(&sg, &parcel, "1ZNEWLABEL0001", "relabel-1")
        .await;
    s.settle().await;
    assert!(s.open(&order).is_empty());
    assert!(s.sandbox().fulfillments(&order).is_empty());
    s.carrier_accepts("1ZNEWLABEL0001", s.clock.now_ms()).await;
    let fulfillments = s.sandbox().fulfillments(&order);
    assert_eq!(fulfillments.len(), 1);
    let tracking = fulfillments[0]["trackingInfo"].to_string();
    assert!(tracking.contains("1ZNEWLABEL0001"), "{tracking}");
    assert!(
        !tracking.contains(&old),
        "the dead number is not sent: {tracking}"
    );
}

/// Tracking that stands still for five business days after the fulfillment opens an exception.
/// `reship` keeps it open until the agent's new label for the parcel; once a check passed after
/// the reshipment and the carrier accepted the new number, Shopify's fulfillment gets the new
/// number through `fulfillmentTrackingInfoUpdate`, and the new pickup is posted.
#[tokio::test]
async fn stalled_tracking_is_an_exception_and_a_reshipment_updates_the_tracking() {
    let s = spawn_supplied().await;
    let Shipped {
        order,
        shipment: sg,
        line,
        number: old,
    } = s.shipped_and_checked("MUG-RED").await;
    s.carrier_accepts(&old, s.clock.now_ms()).await;
    assert_eq!(s.sandbox().fulfillments(&order).len(), 1);
    assert_eq!(
        s.statuses(&order),
        vec![("acme".into(), ShipmentStatus::Fulfilled)]
    );

    s.days_pass(2).await;
    assert!(s.open(&order).is_empty());
    s.days_pass(6).await;
    assert_eq!(s.open(&order), vec![ExceptionKind::TrackingStalled]);
    s.decide(&order, ExceptionKind::TrackingStalled, Decision::Reship)
        .await;
    assert_eq!(s.open(&order), vec![ExceptionKind::TrackingStalled]);
    assert!(
        s.acme
            .accepted_messages()
            .iter()
            .any(|m| m.kind == "parcel_decision" && m.body["decision"] == "reship"),
        "the agent is asked to reship"
    );

    // The new goods are labelled and taken by the carrier, but not checked yet: Shopify keeps
    // the old number.
    s.clock.advance(Duration::from_secs(3600));
    let parcel = s.parcel(&order);
    s.record_label(&sg, &parcel, "1ZRESHIP00001", "reship-label")
        .await;
    s.carrier_accepts("1ZRESHIP00001", s.clock.now_ms()).await;
    assert!(s.open(&order).is_empty(), "the new label ends the wait");
    let tracking = s.sandbox().fulfillments(&order)[0]["trackingInfo"].to_string();
    assert!(tracking.contains(&old), "{tracking}");

    let event = shipgate::sandbox::harness::check_event_at(
        "qc-reship",
        &sg,
        &[(&line, "MUG-RED", 1, 1)],
        "pass",
        s.clock.now_ms(),
    );
    s.daemon()
        .workflow()
        .record_event("acme", event, Actor::Operator("qc".into()))
        .await
        .unwrap();
    s.settle().await;
    let fulfillments = s.sandbox().fulfillments(&order);
    assert_eq!(fulfillments.len(), 1, "updated, not fulfilled again");
    let tracking = fulfillments[0]["trackingInfo"].to_string();
    assert!(tracking.contains("1ZRESHIP00001"), "{tracking}");
    assert!(!tracking.contains(&old), "{tracking}");
    assert_eq!(
        posted_statuses(&fulfillments[0]),
        ["CARRIER_PICKED_UP", "CARRIER_PICKED_UP"],
        "the first pickup, then the reshipment's"
    );
}

/// A tracking number that turns up on two open orders (a reused label) stops both: the
/// carrier's scans cannot say whose parcel moved. A new label for one ends the conflict for
/// both, and each is fulfilled with its own number.
#[tokio::test]
async fn a_number_on_two_open_orders_stops_both_until_one_gets_a_new_label() {
    let s = spawn_supplied().await;
    let first = s.sandbox().create_order(new_order(&[("MUG-RED", 1)]));
    let second = s.sandbox().create_order(new_order(&[("MUG-BLUE", 1)]));
    s.settle().await;
    let mut shipments = Vec::new();
    for (order, sku) in [(&first, "MUG-RED"), (&second, "MUG-BLUE")] {
        let case = s.case(order);
        let sg = case.shipments[0].id.clone();
        let line = case.shipments[0].lines[0].line_item_id.clone();
        s.acme.ship(&sg).unwrap();
        s.record_check(&sg, &line, sku, 1).await;
        shipments.push(sg);
    }
    s.settle().await;
    let shared = derive::labels(&s.case(&first).shipments[0])[0].2.clone();
    // An hour later (the agents' labels carry the wall clock's time), the second parcel's
    // label is replaced with the first one's number.
    s.clock.advance(Duration::from_secs(3600));
    let parcel = s.parcel(&second);
    s.record_label(&shipments[1], &parcel, &shared, "reused-label")
        .await;
    s.settle().await;
    assert_eq!(s.open(&first), vec![ExceptionKind::TrackingConflict]);
    assert_eq!(s.open(&second), vec![ExceptionKind::TrackingConflict]);
    let summary = s.case(&second).exceptions[0].summary.clone();
    assert!(summary.contains(&shared), "{summary}");

    s.carrier_accepts(&shared, s.clock.now_ms()).await;
    assert!(s.sandbox().fulfillments(&first).is_empty());
    assert!(s.sandbox().fulfillments(&second).is_empty());

    s.decide(&second, ExceptionKind::TrackingConflict, Decision::NewLabel)
        .await;
    assert_eq!(s.open(&second), vec![ExceptionKind::TrackingConflict]);
    assert!(
        s.acme
            .accepted_messages()
            .iter()
            .any(|m| m.kind == "parcel_decision" && m.body["tracking_number"] == shared.as_str()),
        "the agent is asked for a new label"
    );
    s.clock.advance(Duration::from_secs(600));
    s.record_label(&shipments[1], &parcel, "1ZFRESH000002", "fresh-label")
        .await;
    s.settle().await;
    assert!(s.open(&second).is_empty());
    assert!(
        s.open(&first).is_empty(),
        "the other order is planned again"
    );
    assert_eq!(s.sandbox().fulfillments(&first).len(), 1);
    s.carrier_accepts("1ZFRESH000002", s.clock.now_ms()).await;
    let tracking = s.sandbox().fulfillments(&second)[0]["trackingInfo"].to_string();
    assert!(tracking.contains("1ZFRESH000002"), "{tracking}");
}

/// A number reused after its first parcel was delivered (carriers recycle them) belongs to the
/// new parcel only: the delivered order hears nothing more and is not held, and the new order
/// is fulfilled on the new parcel's own acceptance, even when the scan came before its label.
#[tokio::test]
async fn a_number_reused_after_delivery_belongs_to_the_new_parcel_only() {
    let s = spawn_supplied().await;
    let Shipped {
        order: first,
        number,
        ..
    } = s.shipped_and_checked("MUG-RED").await;
    s.tracker
        .accept_and_deliver(&number, "ups", s.clock.now_ms() - 12 * 3600 * 1000);
    s.carrier_reported().await;
    assert_eq!(
        s.statuses(&first),
        vec![("acme".into(), ShipmentStatus::Delivered)]
    );
    let told = posted_statuses(&s.sandbox().fulfillments(&first)[0]);

    let Shipped {
        order: second,
        shipment,
        ..
    } = s.shipped_and_checked("MUG-BLUE").await;
    s.days_pass(3).await;
    // The carrier's pickup of the new parcel comes before its label reaches shipgate: only the
    // delivered order has the number then, and the scan must wait for the new label.
    s.carrier_accepts(&number, s.clock.now_ms()).await;
    assert!(s.sandbox().fulfillments(&second).is_empty());
    let parcel = s.parcel(&second);
    s.record_label(&shipment, &parcel, &number, "recycled-label")
        .await;
    s.settle().await;
    assert!(s.open(&first).is_empty(), "{:?}", s.case(&first).exceptions);
    assert!(
        s.open(&second).is_empty(),
        "{:?}",
        s.case(&second).exceptions
    );
    assert_eq!(
        posted_statuses(&s.sandbox().fulfillments(&first)[0]),
        told,
        "the delivered order's customer hears nothing of the new parcel"
    );
    let fulfillments = s.sandbox().fulfillments(&second);
    assert_eq!(fulfillments.len(), 1);
    assert!(
        fulfillments[0]["trackingInfo"]
            .to_string()
            .contains(&number)
    );
}

/// A conflict also ends when the other order goes away: cancelled in Shopify and its parcel
/// intercepted, the order that kept the number looks again within the hour and is freed.
#[tokio::test]
async fn a_conflict_ends_when_the_other_order_is_cancelled() {
    let s = spawn_supplied().await;
    let first = s.shipped_and_checked("MUG-RED").await;
    let second = s.shipped_and_checked("MUG-BLUE").await;
    s.clock.advance(Duration::from_secs(3600));
    let parcel = s.parcel(&second.order);
    s.record_label(&second.shipment, &parcel, &first.number, "reused-label")
        .await;
    s.settle().await;
    assert_eq!(s.open(&first.order), vec![ExceptionKind::TrackingConflict]);

    s.sandbox().cancel_order(&second.order, "CUSTOMER").unwrap();
    s.settle().await;
    // The parcel had left: the owner had it stopped at the carrier.
    s.decide(
        &second.order,
        ExceptionKind::CancelledAfterSubmission,
        Decision::Intercepted,
    )
    .await;
    assert_eq!(
        s.statuses(&second.order),
        vec![("acme".into(), ShipmentStatus::Cancelled)]
    );
    assert_eq!(
        s.open(&first.order),
        vec![ExceptionKind::TrackingConflict],
        "nothing told the first order yet"
    );
    s.clock.advance(Duration::from_secs(2 * 3600));
    s.daemon().workflow().tick().await.unwrap();
    s.settle().await;
    assert!(s.open(&first.order).is_empty());
    s.carrier_accepts(&first.number, s.clock.now_ms()).await;
    assert_eq!(s.sandbox().fulfillments(&first.order).len(), 1);
}

/// Of two parcels, the carrier took one: its unit is fulfilled at once, and when the other is
/// still not taken three business days later, `cancel` drops only that parcel's unit. The
/// supplier is told the shipment now holds one unit, not none.
#[tokio::test]
async fn cancelling_a_parcel_the_carrier_never_took_leaves_the_other_parcel_alone() {
    use shipgate::suppliers::{EventKind, PackedParcel, ParcelLine, SupplierEvent};
    let s = spawn_supplied().await;
    let order = s.sandbox().create_order(new_order(&[("MUG-RED", 2)]));
    s.settle().await;
    let case = s.case(&order);
    let sg = case.shipments[0].id.clone();
    let line = case.shipments[0].lines[0].line_item_id.clone();
    s.record_check(&sg, &line, "MUG-RED", 2).await;
    s.clock.advance(Duration::from_secs(3600));
    let at = shipgate::order::Timestamp::from_unix_ms(s.clock.now_ms());
    let parcel = |id: &str| PackedParcel {
        parcel_id: id.into(),
        lines: vec![ParcelLine {
            line_id: line.clone(),
            quantity: 1,
        }],
        weight_grams: Some(500),
        dimensions_cm: None,
        photos: Vec::new(),
    };
    let mut events = vec![SupplierEvent {
        id: "two-parcels".into(),
        shipment_id: sg.clone(),
        occurred_at: at.clone(),
        kind: EventKind::Packed {
            parcels: vec![parcel("P1"), parcel("P2")],
        },
    }];
    for (p, number) in [("P1", "1ZTAKEN00001"), ("P2", "1ZSTUCK00002")] {
        events.push(SupplierEvent {
            id: format!("label-{p}"),
            shipment_id: sg.clone(),
            occurred_at: at.clone(),
            kind: EventKind::LabelCreated {
                parcel_id: Some(p.into()),
                carrier: "UPS".into(),
                tracking_number: number.into(),
                tracking_url: None,
            },
        });
    }
    for event in events {
        s.daemon()
            .workflow()
            .record_event("acme", event, Actor::Operator("warehouse".into()))
            .await
            .unwrap();
    }
    s.carrier_accepts("1ZTAKEN00001", s.clock.now_ms()).await;
    let fulfillments = s.sandbox().fulfillments(&order);
    assert_eq!(fulfillments.len(), 1, "the accepted parcel is fulfilled");
    assert_eq!(fulfillments[0]["totalQuantity"], 1);

    s.days_pass(6).await;
    assert_eq!(s.open(&order), vec![ExceptionKind::NoCarrierMovement]);
    s.decide(&order, ExceptionKind::NoCarrierMovement, Decision::Cancel)
        .await;
    assert!(s.open(&order).is_empty());
    let case = s.case(&order);
    assert_eq!(
        derive::current_lines(&case.shipments[0]),
        vec![(line.clone(), 1)],
        "only the stuck parcel's unit is taken out"
    );
    assert_eq!(
        s.statuses(&order),
        vec![("acme".into(), ShipmentStatus::Fulfilled)]
    );
    let last = s.acme.accepted_messages().pop().unwrap();
    assert_eq!(last.kind, "amendment", "{}", last.body);
    assert_eq!(last.body["lines"][0]["quantity"], 1, "{}", last.body);
    assert_eq!(s.sandbox().fulfillments(&order).len(), 1);

    // The parcel kept is delivered: so is the shipment, the given-up label notwithstanding.
    s.tracker
        .push(
            "1ZTAKEN00001",
            shipgate::sandbox::tracking::Checkpoint::new(
                "Delivered_001",
                Some("01"),
                "Delivered",
                Some("PORTLAND, OR"),
                s.clock.now_ms(),
            ),
        )
        .unwrap();
    s.carrier_reported().await;
    assert_eq!(
        s.statuses(&order),
        vec![("acme".into(), ShipmentStatus::Delivered)]
    );
}

/// A label whose parcel's packing never came says nothing of which units it holds: cancelling
/// it gives up every unit not yet fulfilled, and the supplier is told to stop.
#[tokio::test]
async fn cancelling_a_stuck_label_without_packing_gives_up_the_unfulfilled_units() {
    let s = spawn_supplied().await;
    let order = s.sandbox().create_order(new_order(&[("MUG-RED", 1)]));
    s.settle().await;
    let case = s.case(&order);
    let sg = case.shipments[0].id.clone();
    let line = case.shipments[0].lines[0].line_item_id.clone();
    s.record_check(&sg, &line, "MUG-RED", 1).await;
    s.clock.advance(Duration::from_secs(3600));
    s.record_label(&sg, "PX", "1ZNOPACK0001", "label-before-packing")
        .await;
    s.days_pass(6).await;
    assert_eq!(s.open(&order), vec![ExceptionKind::NoCarrierMovement]);
    s.decide(&order, ExceptionKind::NoCarrierMovement, Decision::Cancel)
        .await;
    assert!(s.open(&order).is_empty());
    assert!(
        derive::current_lines(&s.case(&order).shipments[0]).is_empty(),
        "nothing of {line} is left to ship"
    );
    assert!(
        s.acme
            .accepted_messages()
            .iter()
            .any(|m| m.kind == "cancellation"),
        "the supplier is told to stop"
    );
}

#[tokio::test]
async fn an_address_the_agent_cannot_ship_to_is_held_until_corrected_in_shopify() {
    let s = spawn_supplied().await;
    s.acme.refuse_addresses_containing("PO Box");
    let mut new = new_order(&[("MUG-RED", 1)]);
    new.shipping_address = Some(json!({
        "name": "Ada Lovelace", "address1": "PO Box 12", "city": "London",
        "zip": "N1 1AA", "countryCodeV2": "GB"
    }));
    let order = s.sandbox().create_order(new);
    s.settle().await;
    assert_eq!(s.open(&order), vec![ExceptionKind::AddressIssue]);
    let holds = s.holds(&order);
    assert_eq!(holds.len(), 1, "{holds:?}");
    assert_eq!(holds[0]["reason"], "INCORRECT_ADDRESS");
    let summary = s
        .case(&order)
        .open_exceptions()
        .next()
        .unwrap()
        .summary
        .clone();
    assert!(summary.contains("\"PO Box\""), "{summary}");

    // The owner corrects the address in Shopify, which alone closes nothing, then says so.
    s.sandbox()
        .set_shipping_address(
            &order,
            json!({
                "name": "Ada Lovelace", "address1": "12 Harbour Street", "city": "London",
                "zip": "N1 1AA", "countryCodeV2": "GB"
            }),
        )
        .unwrap();
    s.settle().await;
    assert_eq!(s.open(&order), vec![ExceptionKind::AddressIssue]);
    s.decide(
        &order,
        ExceptionKind::AddressIssue,
        Decision::CorrectAddress,
    )
    .await;
    assert!(s.open(&order).is_empty());
    assert!(s.holds(&order).is_empty(), "the hold was released");
    let messages = s.acme.accepted_messages();
    let kinds: Vec<&str> = messages.iter().map(|m| m.kind.as_str()).collect();
    assert_eq!(kinds, vec!["submission", "amendment"]);
    assert_eq!(
        messages[1].body["ship_to"]["address1"], "12 Harbour Street",
        "the amendment carries the corrected address"
    );
    assert_eq!(
        s.statuses(&order),
        vec![("acme".into(), ShipmentStatus::AwaitingCheck)]
    );
}
