//! The outbox's two carrier-progress effects against the sandbox Shopify: a fulfillment event
//! (`fulfillmentEventCreate`) and a tracking update (`fulfillmentTrackingInfoUpdate`). Neither
//! mutation has an idempotency key, so after a lost answer or a crash the sender must read the
//! fulfillment back (`FulfillmentEvents`) and post only what is not there (invariant 2).
//!
//! The effects are written into the outbox directly, as the planner would write them: these tests
//! are about sending them, not about deciding when to.

use std::sync::Arc;
use std::time::Duration;

use shipgate::clock::Clock;
use shipgate::daemon::{Daemon, Options};
use shipgate::sandbox::harness::{LoopbackConfig, ShopAuth, ShopSpec};
use shipgate::sandbox::shopify::{Faults, NewLine, NewOrder, Plan, SandboxShopify};
use shipgate::shopify::client::{ClientSettings, ShopifyClient};
use shipgate::store::cases::CaseWrite;
use shipgate::workflow::effect::{Action, Effect, EffectState};
use shipgate::workflow::sender::{CrashPoint, SendError, Sender, SenderSettings};

use crate::helpers::{SANDBOX_WEBHOOK_SECRET, sandbox_config};

/// The number the fulfillment was created with, before any update.
const FIRST_NUMBER: &str = "9400111899223197428490";

/// An outbox sender (driven by the test, on a manual clock) over the daemon's store and
/// workflow, against a sandbox shop holding one order fulfilled once.
struct Bench {
    daemon: Daemon,
    sender: Sender,
    sandbox: SandboxShopify,
    clock: Clock,
    order: String,
    fulfillment: String,
    _dir: tempfile::TempDir,
}

impl Bench {
    async fn start() -> Bench {
        let sandbox = SandboxShopify::start(sandbox_config(Plan::Standard))
            .await
            .expect("sandbox starts");
        let dir = tempfile::tempdir().unwrap();
        let loopback = LoopbackConfig::new(vec![ShopSpec::synced(
            sandbox.shop(),
            &sandbox.base_url(),
            ShopAuth::Token("shpat_sandbox".into()),
            SANDBOX_WEBHOOK_SECRET,
        )]);
        let config = loopback.load(dir.path()).expect("config loads");
        let clock = Clock::manual(shipgate::delivery::now_ms() as i64);
        let options = Options {
            clock: clock.clone(),
            // Nothing but the test's own sender acts: no mirror, no planning, no outbox worker.
            mirror: false,
            processor: false,
            outbox: false,
            ..Options::default()
        };
        let daemon = Daemon::start(&config, options)
            .await
            .expect("daemon starts");
        // The daemon gives its sender a client only for the shops it mirrors; this one is the
        // same client, without the mirror's requests mixed into the sandbox's counters.
        let client = ShopifyClient::new(
            reqwest::Client::new(),
            &config.shops[0],
            ClientSettings {
                base_backoff: Duration::from_millis(5),
                max_backoff: Duration::from_millis(100),
                max_attempts: 12,
                ..ClientSettings::default()
            },
        );
        let sender = Sender::new(
            daemon.workflow().clone(),
            Default::default(),
            [(sandbox.shop().to_string(), client)].into(),
            SenderSettings::default(),
        );
        let order = sandbox.create_order(NewOrder {
            name: None,
            lines: vec![NewLine {
                sku: "MUG-RED".into(),
                quantity: 1,
                location: 0,
                variant_title: None,
            }],
            customer_email: None,
            shipping_address: None,
        });
        let fo = sandbox.fulfillment_order_ids(&order)[0].clone();
        let fulfillment = sandbox.fulfill_outside(&fo, FIRST_NUMBER).unwrap();
        Bench {
            daemon,
            sender,
            sandbox,
            clock,
            order,
            fulfillment,
            _dir: dir,
        }
    }

    /// Writes an intent into the outbox, due now; returns its id.
    fn intend(&self, key: &str, action: Action) -> u64 {
        let store = self.daemon.store();
        let id = store.next_effect_id().unwrap();
        let now = self.clock.now_ms();
        store
            .write_case(CaseWrite {
                case: None,
                new_effects: vec![Effect {
                    id,
                    key: key.into(),
                    stream: format!("{}:progress", self.fulfillment),
                    shop: self.sandbox.shop().into(),
                    order_gid: self.order.clone(),
                    action,
                    state: EffectState::Pending,
                    attempts: 0,
                    next_attempt_ms: now,
                    created_ms: now,
                    last_error: None,
                    maybe_delivered: false,
                }],
                updated_effects: Vec::new(),
            })
            .unwrap();
        id
    }

    fn event(&self, status: &str, happened_at: &str) -> Action {
        Action::FulfillmentEvent {
            shipment_id: "SG-0000000001".into(),
            fulfillment_id: self.fulfillment.clone(),
            status: status.into(),
            happened_at: happened_at.into(),
            message: Some("Shenzhen sorting centre".into()),
        }
    }

    fn tracking_update(&self, numbers: &[&str]) -> Action {
        Action::UpdateTracking {
            shipment_id: "SG-0000000001".into(),
            fulfillment_id: self.fulfillment.clone(),
            tracking_company: Some("China Post".into()),
            tracking_numbers: numbers.iter().map(|n| n.to_string()).collect(),
            tracking_urls: Vec::new(),
            notify_customer: false,
        }
    }

    fn effect(&self, id: u64) -> Effect {
        self.daemon.store().effect(id).unwrap().expect("the effect")
    }

    /// The fulfillment's events in Shopify as (status, happenedAt), oldest first.
    fn shopify_events(&self) -> Vec<(String, String)> {
        let fulfillments = self.sandbox.fulfillments(&self.order);
        fulfillments[0]["events"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["status"].as_str().unwrap().to_string(),
                    e["happenedAt"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// The id Shopify gave the fulfillment's event at this position.
    fn shopify_event_id(&self, index: usize) -> String {
        let fulfillments = self.sandbox.fulfillments(&self.order);
        fulfillments[0]["events"]["nodes"][index]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The fulfillment's tracking numbers in Shopify.
    fn shopify_numbers(&self) -> Vec<String> {
        let fulfillments = self.sandbox.fulfillments(&self.order);
        fulfillments[0]["trackingInfo"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["number"].as_str().map(str::to_string))
            .collect()
    }

    /// How many requests of one operation reached Shopify.
    fn requests(&self, operation: &str) -> u64 {
        self.sandbox
            .stats()
            .per_operation
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// Runs the sender once over everything due now.
    async fn send_due(&self) {
        self.sender.run_due().await.unwrap();
    }

    /// Moves past the first retry's pause (30 s plus up to 20% jitter).
    fn past_first_retry(&self) {
        self.clock.advance(Duration::from_secs(60));
    }
}

fn done(effect: &Effect) -> (Option<String>, String) {
    match &effect.state {
        EffectState::Done {
            reference, note, ..
        } => (reference.clone(), note.clone()),
        other => panic!("not done: {other:?} ({effect:?})"),
    }
}

const LOOKED_UP: &str = "found by a lookup after an unknown outcome";

#[tokio::test]
async fn a_lost_event_answer_is_read_back_and_the_event_posted_once() {
    let b = Bench::start().await;
    let id = b.intend(
        "SG-0000000001.event.picked-up",
        b.event("CARRIER_PICKED_UP", "2026-11-25T10:00:00+08:00"),
    );
    // Shopify posts the event, but its answer is lost on the way.
    b.sandbox.set_faults(Faults {
        lost_response: 1.0,
        ..Faults::default()
    });
    b.send_due().await;
    let effect = b.effect(id);
    assert!(effect.is_pending() && effect.maybe_delivered, "{effect:?}");
    assert_eq!(
        b.shopify_events(),
        vec![("CARRIER_PICKED_UP".into(), "2026-11-25T02:00:00Z".into())]
    );

    b.sandbox.set_faults(Faults::default());
    b.past_first_retry();
    b.send_due().await;
    let (reference, note) = done(&b.effect(id));
    assert_eq!(note, LOOKED_UP);
    assert_eq!(reference, Some(b.shopify_event_id(0)));
    assert_eq!(b.shopify_events().len(), 1, "read back, not posted again");
    assert_eq!(b.requests("FulfillmentEventCreate"), 1);
    assert_eq!(b.requests("FulfillmentEvents"), 1);
}

/// The read-back tells our event from the fulfillment's others: the same status at another
/// instant is not ours, so an event that never reached Shopify is posted after the read-back.
#[tokio::test]
async fn an_event_that_never_arrived_is_posted_after_the_read_back() {
    let b = Bench::start().await;
    let earlier = b.intend(
        "SG-0000000001.event.transit-1",
        b.event("IN_TRANSIT", "2026-11-26T08:00:00Z"),
    );
    b.send_due().await;
    let (reference, note) = done(&b.effect(earlier));
    assert_eq!(note, "accepted");
    assert_eq!(reference, Some(b.shopify_event_id(0)));

    let id = b.intend(
        "SG-0000000001.event.transit-2",
        b.event("IN_TRANSIT", "2026-11-27T08:00:00Z"),
    );
    // A 5xx before Shopify executed anything: for a mutation the client cannot know that.
    b.sandbox.set_faults(Faults {
        http_5xx: 1.0,
        ..Faults::default()
    });
    b.send_due().await;
    let effect = b.effect(id);
    assert!(effect.is_pending() && effect.maybe_delivered, "{effect:?}");
    assert_eq!(b.shopify_events().len(), 1);

    b.sandbox.set_faults(Faults::default());
    b.past_first_retry();
    b.send_due().await;
    let (reference, note) = done(&b.effect(id));
    assert_eq!(note, "accepted", "not found, so sent");
    assert_eq!(
        b.shopify_events(),
        vec![
            ("IN_TRANSIT".into(), "2026-11-26T08:00:00Z".into()),
            ("IN_TRANSIT".into(), "2026-11-27T08:00:00Z".into()),
        ]
    );
    assert_eq!(reference, Some(b.shopify_event_id(1)));
}

#[tokio::test]
async fn a_lost_tracking_update_answer_is_read_back_and_applied_once() {
    let b = Bench::start().await;
    let id = b.intend(
        "SG-0000000001.tracking.2",
        b.tracking_update(&["LX000000002CN", "LX000000001CN"]),
    );
    b.sandbox.set_faults(Faults {
        lost_response: 1.0,
        ..Faults::default()
    });
    b.send_due().await;
    let effect = b.effect(id);
    assert!(effect.is_pending() && effect.maybe_delivered, "{effect:?}");
    assert_eq!(b.shopify_numbers(), vec!["LX000000002CN", "LX000000001CN"]);

    b.sandbox.set_faults(Faults::default());
    b.past_first_retry();
    b.send_due().await;
    let (reference, note) = done(&b.effect(id));
    assert_eq!(note, LOOKED_UP);
    assert_eq!(reference, Some(b.fulfillment.clone()));
    assert_eq!(
        b.requests("FulfillmentTrackingInfoUpdate"),
        1,
        "not sent again"
    );
    assert_eq!(b.shopify_numbers(), vec!["LX000000002CN", "LX000000001CN"]);
}

#[tokio::test]
async fn a_tracking_update_that_never_arrived_is_sent_after_the_read_back() {
    let b = Bench::start().await;
    let id = b.intend("SG-0000000001.tracking.2", b.tracking_update(&["LX1CN"]));
    b.sandbox.set_faults(Faults {
        http_5xx: 1.0,
        ..Faults::default()
    });
    b.send_due().await;
    assert!(b.effect(id).maybe_delivered);
    assert_eq!(
        b.shopify_numbers(),
        vec![FIRST_NUMBER],
        "nothing changed yet"
    );

    b.sandbox.set_faults(Faults::default());
    b.past_first_retry();
    b.send_due().await;
    let (reference, note) = done(&b.effect(id));
    assert_eq!(note, "accepted", "the old number is not ours, so sent");
    assert_eq!(reference, Some(b.fulfillment.clone()));
    assert_eq!(b.shopify_numbers(), vec!["LX1CN"]);
}

/// A status Shopify does not know is refused for good, before anything is sent.
#[tokio::test]
async fn an_unknown_event_status_is_refused_without_asking_shopify() {
    let b = Bench::start().await;
    let id = b.intend(
        "SG-0000000001.event.teleported",
        b.event("TELEPORTED", "2026-11-25T10:00:00Z"),
    );
    b.send_due().await;
    let effect = b.effect(id);
    let EffectState::Failed { reason, .. } = &effect.state else {
        panic!("{effect:?}");
    };
    assert!(
        reason.contains("unknown FulfillmentEventStatus `TELEPORTED`"),
        "{reason}"
    );
    assert_eq!(b.requests("FulfillmentEventCreate"), 0);
}

/// How the restarted sender learns the outcome after a crash at each point: before the send
/// the read-back finds nothing and it sends; after the send it finds ours; after the record
/// there is nothing left to do.
fn expected_note(point: CrashPoint) -> &'static str {
    match point {
        CrashPoint::BeforeSend | CrashPoint::AfterRecord => "accepted",
        CrashPoint::AfterSend => LOOKED_UP,
    }
}

/// Runs one effect through a sender that crashes at `point`, then through a restarted one;
/// returns the effect as it ends.
async fn crash_then_restart(b: &Bench, id: u64, point: CrashPoint) -> Effect {
    let crashing = b
        .sender
        .clone()
        .with_crash_hook(Arc::new(move |at, _| at == point));
    let crashed = crashing.run_due().await;
    assert!(
        matches!(&crashed, Err(SendError::Crashed(c)) if c.0 == point),
        "{point:?}: {crashed:?}"
    );
    // The restarted sender finds the effect marked (or done) and does not post it blindly.
    b.send_due().await;
    b.effect(id)
}

/// Invariant 2 for fulfillment events: a crash at any point of the send path, then a restarted
/// sender, leaves exactly one event in Shopify, known to shipgate by its id.
#[tokio::test]
async fn a_crash_at_any_point_while_posting_an_event_leaves_exactly_one_event() {
    for point in CrashPoint::ALL {
        let b = Bench::start().await;
        let id = b.intend(
            "SG-0000000001.event.delivered",
            b.event("DELIVERED", "2026-11-30T09:00:00Z"),
        );
        let effect = crash_then_restart(&b, id, point).await;
        let (reference, note) = done(&effect);
        assert_eq!(note, expected_note(point), "{point:?}");
        assert_eq!(
            b.shopify_events(),
            vec![("DELIVERED".into(), "2026-11-30T09:00:00Z".into())],
            "{point:?}"
        );
        assert_eq!(reference, Some(b.shopify_event_id(0)), "{point:?}");
        assert_eq!(b.requests("FulfillmentEventCreate"), 1, "{point:?}");
    }
}

/// Invariant 2 for tracking updates: a crash at any point, then a restart, sends the update
/// once and leaves the fulfillment with exactly our numbers.
#[tokio::test]
async fn a_crash_at_any_point_while_updating_tracking_sends_the_update_once() {
    for point in CrashPoint::ALL {
        let b = Bench::start().await;
        let id = b.intend(
            "SG-0000000001.tracking.2",
            b.tracking_update(&["LX000000001CN"]),
        );
        let effect = crash_then_restart(&b, id, point).await;
        let (reference, note) = done(&effect);
        assert_eq!(note, expected_note(point), "{point:?}");
        assert_eq!(reference, Some(b.fulfillment.clone()), "{point:?}");
        assert_eq!(b.shopify_numbers(), vec!["LX000000001CN"], "{point:?}");
        assert_eq!(b.requests("FulfillmentTrackingInfoUpdate"), 1, "{point:?}");
    }
}
