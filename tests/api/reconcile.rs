//! Reconciliation against the sandbox Shopify with the real daemon running: every drift class
//! found with its count and examples, repair through the daemon's fetcher, the paged and the
//! bulk listing agreeing, and 100k orders through a bulk operation.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shipgate::order::Timestamp;
use shipgate::reconcile::ReconcileError;
use shipgate::reconcile::{
    CANCELLED_WITH_LIVE_SHIPMENTS, EXCEPTIONS_WITHOUT_HOLD, FULFILLMENTS_GONE_FROM_SHOPIFY,
    GATES_OPEN_NOT_WRITTEN_BACK, HOLDS_WITHOUT_EXCEPTION, MISSING_FROM_MIRROR, Progress,
    ReconcileOptions, ReconcileReport, STALE_IN_MIRROR, UNKNOWN_TO_SHOPIFY, WRITE_BACKS_OVERDUE,
    reconcile,
};
use shipgate::sandbox::shopify::{Plan, sample_orders};
use shipgate::shopify::convert::hold_variables;
use shipgate::shopify::ops::{
    BulkOperationRunQuery, FulfillmentOrderHold, bulk_operation_run_query,
};

use crate::helpers::*;

/// An order id the sandbox never hands out.
const GHOST_ORDER: &str = "gid://shopify/Order/999999999";

/// What `diverge` did to the shop, by drift class.
struct Divergence {
    missing: Vec<String>,
    stale: Vec<String>,
    held_fulfillment_order: String,
    /// The order of that fulfillment order.
    held_order: String,
    /// The `updatedAt` of the first order the mirror never heard of.
    first_missing_at: Timestamp,
}

/// Collects the progress reports of a run.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Progress>>>);

impl Recorder {
    fn callback(&self) -> impl Fn(Progress) + Send + Sync {
        let events = self.0.clone();
        move |p| events.lock().unwrap().push(p)
    }

    fn events(&self) -> Vec<Progress> {
        self.0.lock().unwrap().clone()
    }
}

async fn run(synced: &SyncedApp, options: &ReconcileOptions) -> (ReconcileReport, Vec<Progress>) {
    let shop = synced.sandbox.shop();
    let client = &synced.app.daemon.shop_sync(shop).unwrap().client;
    let recorder = Recorder::default();
    let report = reconcile(
        synced.app.daemon.store(),
        client,
        &reqwest::Client::new(),
        options,
        &recorder.callback(),
    )
    .await
    .expect("reconciliation runs");
    (report, recorder.events())
}

/// Waits until every webhook sent so far is processed and fetched, then scans once more.
async fn settle(synced: &SyncedApp) {
    synced.sandbox.flush_webhooks().await;
    synced.app.daemon.wait_idle().await;
    synced.sync().await.unwrap();
}

/// Turns webhooks off and lets the poller's first scan finish (it runs when the daemon starts,
/// and may otherwise mirror orders a test creates for the mirror to lack). The next scan is an
/// hour away.
async fn without_sync(synced: &SyncedApp) {
    synced.sandbox.set_webhook_url(None);
    synced.sync().await.unwrap();
}

/// Sorts ids as the report picks its examples: by number.
fn by_number(mut ids: Vec<String>) -> Vec<String> {
    ids.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
    ids
}

fn since_2020() -> Option<Timestamp> {
    Some(Timestamp::parse("2020-01-01T00:00:00Z").unwrap())
}

/// Mirrors 8 orders, one of them held by shipgate, then, with webhooks off, creates 3 orders
/// the mirror never hears about, changes 3 mirrored ones, and puts a mirrored order into the
/// store that Shopify does not know.
async fn diverge(synced: &SyncedApp) -> Divergence {
    let sandbox = &synced.sandbox;
    let shop = sandbox.shop();
    let store = synced.app.daemon.store();
    let mirrored: Vec<String> = sample_orders(8, 3)
        .into_iter()
        .map(|o| sandbox.create_order(o))
        .collect();
    settle(synced).await;

    let held = sandbox.fulfillment_order_ids(&mirrored[0])[0].clone();
    let client = &synced.app.daemon.shop_sync(shop).unwrap().client;
    client
        .run::<FulfillmentOrderHold>(
            hold_variables(
                &held,
                "OTHER",
                "Waiting for the supplier",
                "shipgate-test-1",
            )
            .unwrap(),
            1,
        )
        .await
        .expect("the hold is placed");
    settle(synced).await;
    let mirror = store.order(shop, &mirrored[0]).unwrap().unwrap();
    assert!(
        mirror
            .fulfillment_orders
            .iter()
            .any(|fo| fo.id == held && fo.holds.iter().any(|h| h.held_by_us)),
        "the mirror has shipgate's hold"
    );

    sandbox.set_webhook_url(None);
    // Later changes get later timestamps without a sleep.
    sandbox.advance_clock(Duration::from_secs(10));
    let missing: Vec<String> = sample_orders(3, 4)
        .into_iter()
        .map(|o| sandbox.create_order(o))
        .collect();
    sandbox.touch_order(&mirrored[1]).unwrap();
    sandbox.touch_order(&mirrored[2]).unwrap();
    sandbox.cancel_order(&mirrored[3], "CUSTOMER").unwrap();
    let stale = mirrored[1..4].to_vec();

    let mut ghost = store.order(shop, &mirrored[4]).unwrap().unwrap();
    ghost.id = GHOST_ORDER.to_string();
    ghost.name = "#9999".to_string();
    ghost.fulfillment_orders.clear();
    store.put_order(&ghost).unwrap();
    store.flush().await.unwrap();

    let first_missing_at = Timestamp::parse(
        sandbox.order_snapshot(&missing[0]).unwrap()["updatedAt"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    Divergence {
        missing,
        stale,
        held_fulfillment_order: held,
        held_order: mirrored[0].clone(),
        first_missing_at,
    }
}

fn class<'a>(report: &'a ReconcileReport, name: &str) -> &'a shipgate::reconcile::DriftClass {
    report
        .class(name)
        .unwrap_or_else(|| panic!("no class {name} in {report:?}"))
}

fn counts(report: &ReconcileReport) -> Vec<(&str, usize)> {
    report
        .classes
        .iter()
        .map(|c| (c.name.as_ref(), c.count))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_drift_class_is_found_and_repair_fixes_the_repairable_ones() {
    let synced = spawn_synced(sandbox_config(Plan::Plus), TestAuth::StaticToken).await;
    let d = diverge(&synced).await;
    let options = ReconcileOptions {
        since: since_2020(),
        ..ReconcileOptions::default()
    };

    let (report, progress) = run(&synced, &options).await;
    assert!(!report.via_bulk, "{report:?}");
    assert_eq!(report.shopify_orders, 11);
    assert_eq!(report.mirrored_orders, 9, "8 orders and the ghost");
    assert_eq!(
        counts(&report),
        vec![
            (MISSING_FROM_MIRROR, 3),
            (STALE_IN_MIRROR, 3),
            (UNKNOWN_TO_SHOPIFY, 1),
            (HOLDS_WITHOUT_EXCEPTION, 1),
            (EXCEPTIONS_WITHOUT_HOLD, 0),
            (CANCELLED_WITH_LIVE_SHIPMENTS, 0),
            (GATES_OPEN_NOT_WRITTEN_BACK, 0),
            (WRITE_BACKS_OVERDUE, 0),
            (FULFILLMENTS_GONE_FROM_SHOPIFY, 0),
        ]
    );
    assert_eq!(report.drift(), 8);
    assert_eq!(
        class(&report, MISSING_FROM_MIRROR).examples,
        by_number(d.missing.clone())
    );
    assert_eq!(
        class(&report, STALE_IN_MIRROR).examples,
        by_number(d.stale.clone())
    );
    assert_eq!(
        class(&report, UNKNOWN_TO_SHOPIFY).examples,
        vec![GHOST_ORDER]
    );
    let hold = &class(&report, HOLDS_WITHOUT_EXCEPTION).examples;
    assert_eq!(hold.len(), 1);
    assert!(
        hold[0].starts_with(&format!("{} (order #", d.held_fulfillment_order))
            && hold[0].ends_with("hold shipgate-test-1)"),
        "{hold:?}"
    );
    assert!(report.repairs.is_empty(), "nothing repaired without repair");
    assert!(
        progress.iter().any(|p| matches!(
            p,
            Progress::Listing {
                pages: 1,
                orders: 11
            }
        )),
        "{progress:?}"
    );
    assert_eq!(
        progress.last(),
        Some(&Progress::Comparing {
            done: 11 + 1,
            total: 11 + 1
        }),
        "every order of both sides was compared"
    );
    let text = report.to_text();
    assert!(
        text.lines().any(|l| l
            .split_whitespace()
            .take(2)
            .eq(["missing_from_mirror", "3"])),
        "missing_from_mirror 3 in\n{text}"
    );
    for expected in [GHOST_ORDER, &d.held_fulfillment_order] {
        assert!(text.contains(expected), "{expected} in\n{text}");
    }

    let repaired = run(
        &synced,
        &ReconcileOptions {
            repair: true,
            ..options.clone()
        },
    )
    .await
    .0;
    assert_eq!(counts(&repaired), counts(&report), "repair reports first");
    assert_eq!(
        repaired.repairs,
        vec![
            "Triggered a fetch of 3 orders missing from the mirror and 3 stale ones: all 6 are \
             now mirrored at Shopify's state."
                .to_string(),
            "Left 1 order unknown to Shopify in the mirror: shipgate never deletes an order on a \
             guess; look it up in the Shopify admin."
                .to_string(),
            "Asked the outbox to release 1 shipgate hold that no open exception owns (see \
             `shipgate outbox list`)."
                .to_string(),
        ]
    );
    let store = synced.app.daemon.store();
    for id in d.missing.iter().chain(&d.stale) {
        let truth = synced.sandbox.order_snapshot(id).unwrap();
        let mirror = store.order(synced.sandbox.shop(), id).unwrap().unwrap();
        assert_eq!(
            mirror.updated_at.unix_ms,
            Timestamp::parse(truth["updatedAt"].as_str().unwrap())
                .unwrap()
                .unix_ms,
            "{id}"
        );
    }
    assert!(
        store
            .order(synced.sandbox.shop(), &d.stale[2])
            .unwrap()
            .unwrap()
            .is_cancelled()
    );

    // The release goes out through the outbox (run here too, so the test does not depend on
    // when the daemon's sender wakes); the scan then brings it to the mirror.
    synced.app.daemon.sender().run_due().await.unwrap();
    settle(&synced).await;
    let after = run(&synced, &options).await.0;
    assert_eq!(
        counts(&after),
        vec![
            (MISSING_FROM_MIRROR, 0),
            (STALE_IN_MIRROR, 0),
            (UNKNOWN_TO_SHOPIFY, 1),
            (HOLDS_WITHOUT_EXCEPTION, 0),
            (EXCEPTIONS_WITHOUT_HOLD, 0),
            (CANCELLED_WITH_LIVE_SHIPMENTS, 0),
            (GATES_OPEN_NOT_WRITTEN_BACK, 0),
            (WRITE_BACKS_OVERDUE, 0),
            (FULFILLMENTS_GONE_FROM_SHOPIFY, 0),
        ]
    );
    assert!(
        synced
            .sandbox
            .order_snapshot(&d.held_order)
            .is_some_and(|o| o["fulfillmentOrders"]["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|fo| fo["fulfillmentHolds"] == serde_json::json!([]))),
        "the stray hold was released in Shopify"
    );
    assert_eq!(after.mirrored_orders, 12);
    // Nothing left to fetch: a repair now only says what it leaves alone.
    let again = run(
        &synced,
        &ReconcileOptions {
            repair: true,
            ..options
        },
    )
    .await
    .0;
    assert_eq!(again.repairs.len(), 1, "{:?}", again.repairs);
    assert!(again.repairs[0].starts_with("Left 1 order unknown to Shopify"));
    synced.app.daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_bulk_operations_find_the_same_drift() {
    let synced = spawn_synced(sandbox_config(Plan::Plus), TestAuth::StaticToken).await;
    let d = diverge(&synced).await;

    let paged = ReconcileOptions {
        since: since_2020(),
        ..ReconcileOptions::default()
    };
    let bulk = ReconcileOptions {
        bulk_threshold: 0,
        ..paged.clone()
    };
    let (by_pages, _) = run(&synced, &paged).await;
    let (by_bulk, progress) = run(&synced, &bulk).await;
    assert!(!by_pages.via_bulk);
    assert!(by_bulk.via_bulk);
    assert_eq!(by_bulk.classes, by_pages.classes);
    assert_eq!(by_bulk.shopify_orders, by_pages.shopify_orders);
    assert_eq!(by_bulk.mirrored_orders, by_pages.mirrored_orders);
    assert_eq!(by_bulk.drift(), 8);
    assert!(
        matches!(progress.first(), Some(Progress::BulkStarted { id }) if id.starts_with("gid://shopify/BulkOperation/")),
        "{progress:?}"
    );
    assert!(progress.contains(&Progress::BulkDownloaded { lines: 11 }));
    assert!(
        progress.iter().any(
            |p| matches!(p, Progress::BulkPolled { status, objects: 11 } if status == "COMPLETED")
        ),
        "{progress:?}"
    );
    assert!(
        !progress
            .iter()
            .any(|p| matches!(p, Progress::Listing { .. })),
        "no pages read"
    );

    // Without a window, every order is listed, by bulk operation.
    let everything = run(&synced, &ReconcileOptions::default()).await.0;
    assert!(everything.via_bulk);
    assert_eq!(everything.since, None);
    assert_eq!(everything.classes, by_pages.classes);

    // A window that starts with the orders the mirror never heard of leaves out the ghost and
    // the orders that did not change; both listings still agree.
    let recent = ReconcileOptions {
        since: Some(d.first_missing_at.clone()),
        ..ReconcileOptions::default()
    };
    let (recent_pages, recent_bulk) = (
        run(&synced, &recent).await.0,
        run(
            &synced,
            &ReconcileOptions {
                bulk_threshold: 0,
                ..recent.clone()
            },
        )
        .await
        .0,
    );
    assert_eq!(
        counts(&recent_pages),
        vec![
            (MISSING_FROM_MIRROR, 3),
            (STALE_IN_MIRROR, 3),
            (UNKNOWN_TO_SHOPIFY, 0),
            (HOLDS_WITHOUT_EXCEPTION, 1),
            (EXCEPTIONS_WITHOUT_HOLD, 0),
            (CANCELLED_WITH_LIVE_SHIPMENTS, 0),
            (GATES_OPEN_NOT_WRITTEN_BACK, 0),
            (WRITE_BACKS_OVERDUE, 0),
            (FULFILLMENTS_GONE_FROM_SHOPIFY, 0),
        ]
    );
    assert_eq!(recent_pages.shopify_orders, 6);
    assert_eq!(recent_pages.mirrored_orders, 0);
    assert_eq!(recent_bulk.classes, recent_pages.classes);
    assert!(!recent_pages.via_bulk && recent_bulk.via_bulk);
    synced.app.daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_thousand_orders_go_through_a_bulk_operation() {
    const ORDERS: usize = 100_000;
    let synced = spawn_synced(sandbox_config(Plan::Plus), TestAuth::StaticToken).await;
    // No webhooks and no scans: the mirror stays empty, and the daemon is not flooded.
    without_sync(&synced).await;
    let started = Instant::now();
    for order in sample_orders(ORDERS, 5) {
        synced.sandbox.create_order(order);
    }
    let created = started.elapsed();

    let started = Instant::now();
    let (report, progress) = run(&synced, &ReconcileOptions::default()).await;
    let reconciled = started.elapsed();
    eprintln!(
        "100k orders: created in {:.1} s, reconciled in {:.1} s",
        created.as_secs_f64(),
        reconciled.as_secs_f64()
    );

    assert!(report.via_bulk);
    assert_eq!(report.shopify_orders, ORDERS);
    assert_eq!(report.mirrored_orders, 0);
    let missing = class(&report, MISSING_FROM_MIRROR);
    assert_eq!(missing.count, ORDERS);
    assert_eq!(missing.examples.len(), 5);
    assert_eq!(
        missing.examples,
        by_number(synced.sandbox.order_ids())[..5].to_vec()
    );
    assert_eq!(report.drift(), ORDERS);
    assert!(
        progress
            .iter()
            .any(|p| matches!(p, Progress::BulkStarted { .. }))
    );
    assert!(progress.contains(&Progress::BulkDownloaded { lines: ORDERS }));
    assert!(progress.contains(&Progress::Comparing {
        done: ORDERS,
        total: ORDERS
    }));
    synced.app.daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_shop_reconciles_clean_and_a_refused_bulk_operation_is_an_error() {
    let synced = spawn_synced(sandbox_config(Plan::Plus), TestAuth::StaticToken).await;
    let (report, progress) = run(&synced, &ReconcileOptions::default()).await;
    assert!(report.via_bulk);
    assert_eq!((report.shopify_orders, report.mirrored_orders), (0, 0));
    assert_eq!(report.drift(), 0);
    assert_eq!(report.classes.len(), 9, "every class, also with 0");
    assert!(progress.contains(&Progress::BulkDownloaded { lines: 0 }));
    assert!(report.to_text().contains("No drift."));

    // Shopify runs at most five bulk queries per app and shop at once: a sixth is refused with
    // userErrors, which is the operation failing, not the call.
    let shop = synced.sandbox.shop();
    let client = &synced.app.daemon.shop_sync(shop).unwrap().client;
    for _ in 0..5 {
        client
            .run::<BulkOperationRunQuery>(
                bulk_operation_run_query::Variables {
                    query: "{ orders { edges { node { id } } } }".into(),
                },
                1,
            )
            .await
            .expect("a bulk query starts");
    }
    let err = reconcile(
        synced.app.daemon.store(),
        client,
        &reqwest::Client::new(),
        &ReconcileOptions::default(),
        &|_| {},
    )
    .await
    .expect_err("a sixth bulk query is refused");
    assert!(
        matches!(&err, ReconcileError::Bulk(why) if why.contains("maximum of 5")),
        "{err}"
    );
    synced.app.daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_give_way_to_a_bulk_operation_when_the_window_outgrows_the_threshold() {
    let synced = spawn_synced(sandbox_config(Plan::Plus), TestAuth::StaticToken).await;
    without_sync(&synced).await;
    for order in sample_orders(300, 6) {
        synced.sandbox.create_order(order);
    }
    // The empty mirror promises a small window; the pages show otherwise after the second.
    let (report, progress) = run(
        &synced,
        &ReconcileOptions {
            since: since_2020(),
            bulk_threshold: 260,
            ..ReconcileOptions::default()
        },
    )
    .await;
    assert!(report.via_bulk);
    assert_eq!(report.shopify_orders, 300);
    assert_eq!(class(&report, MISSING_FROM_MIRROR).count, 300);
    let listing: Vec<&Progress> = progress
        .iter()
        .filter(|p| matches!(p, Progress::Listing { .. }))
        .collect();
    assert_eq!(
        listing,
        vec![
            &Progress::Listing {
                pages: 1,
                orders: 250
            },
            &Progress::Listing {
                pages: 2,
                orders: 300
            },
        ]
    );
    assert!(progress.contains(&Progress::BulkDownloaded { lines: 300 }));
    synced.app.daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_run_keeps_its_schedule_across_restarts() {
    use shipgate::daemon::{Daemon, Options};
    use shipgate::sandbox::harness::{LoopbackConfig, ShopAuth, ShopSpec};
    use shipgate::sandbox::shopify::{Plan, SandboxShopify};
    use shipgate::store::{Store, StoreOptions};
    let sandbox = SandboxShopify::start(sandbox_config(Plan::Plus))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut loopback = LoopbackConfig::new(vec![ShopSpec::synced(
        sandbox.shop(),
        &sandbox.base_url(),
        ShopAuth::Token("shpat_sandbox".into()),
        b"x",
    )]);
    loopback.extra_sections = "[sync]\nreconcile_interval_hours = 1".into();
    let config = loopback.load(dir.path()).unwrap();
    // The previous daemon reconciled an hour ago, less a second: the run is due in a second,
    // not in an hour from this start.
    let hour_ago = shipgate::delivery::now_ms() - 3_600_000 + 1_000;
    {
        let store = Store::open(&config.store.path, &StoreOptions::default()).unwrap();
        store
            .set_last_reconciled_ms(sandbox.shop(), hour_ago)
            .unwrap();
        store.flush().await.unwrap();
        store.close();
    }
    // sled's I/O threads let go of the file lock shortly after the handle above is dropped,
    // without telling anyone (a restarted daemon is a new process and never sees this).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let daemon = loop {
        match Daemon::start(&config, Options::default()).await {
            Ok(daemon) => break daemon,
            Err(e)
                if format!("{e:#}").contains("in use") && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{e:#}"),
        }
    };
    let store = daemon.store().clone();
    let shop = sandbox.shop().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // Observing a timer from outside: check the recorded time until it moves (bounded).
    loop {
        let last = store.last_reconciled_ms(&shop).unwrap().unwrap();
        if last > hour_ago {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the due run did not happen"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    daemon.stop().await.unwrap();
}

/// The daemon with a `manual` supplier for `SAMPLE-*`, on a manual clock, with neither the
/// processor (and so the planner) nor the outbox sender running: the test plans and sends
/// itself, which is how it can leave a case unsettled after the mirror moved on, as a planner
/// that was down or a lost plan request would.
async fn spawn_unplanned() -> (SyncedApp, shipgate::clock::Clock) {
    use shipgate::daemon::{Daemon, Options};
    use shipgate::sandbox::harness::{ShopAuth, SupplierSpec};
    use shipgate::sandbox::shopify::SandboxShopify;
    let sandbox = SandboxShopify::start(sandbox_config(Plan::Plus))
        .await
        .expect("sandbox starts");
    let dir = tempfile::tempdir().unwrap();
    let mut loopback = synced_loopback(&sandbox, ShopAuth::Token("shpat_sandbox".into()));
    loopback.suppliers = vec![SupplierSpec::offline("charlie", "manual", &["SAMPLE-*"])];
    let config = loopback.load(dir.path()).expect("config loads");
    let clock = shipgate::clock::Clock::manual(shipgate::delivery::now_ms() as i64);
    let daemon = Daemon::start(
        &config,
        Options {
            processor: false,
            outbox: false,
            clock: clock.clone(),
            ..Options::default()
        },
    )
    .await
    .expect("daemon starts");
    // No webhooks: the mirror moves only when the test scans.
    sandbox.set_webhook_url(None);
    let synced = SyncedApp {
        app: TestApp {
            base: format!("http://{}", daemon.public_addr()),
            daemon,
            client: reqwest::Client::new(),
            config,
            _dir: dir,
        },
        sandbox,
    };
    (synced, clock)
}

/// Scans the shop with the daemon's poller and waits until its fetcher fetched what the scan
/// triggered. (`SyncedApp::sync` also waits for the processor, which is off here.)
async fn scan(synced: &SyncedApp) {
    let shop = synced.sandbox.shop();
    let report = synced
        .app
        .daemon
        .shop_sync(shop)
        .unwrap()
        .mirror
        .scan_now()
        .await
        .expect("the scan runs");
    synced
        .app
        .daemon
        .store()
        .triggers_cleared(shop, &report.triggered_ids)
        .await;
}

/// A supplier event as an operator records it for the manual supplier.
async fn record(synced: &SyncedApp, json: serde_json::Value) {
    let event = shipgate::suppliers::SupplierEvent::from_json(json.to_string().as_bytes())
        .expect("a valid supplier event");
    synced
        .app
        .daemon
        .workflow()
        .record_event(
            "charlie",
            event,
            shipgate::workflow::model::Actor::Operator("qc".into()),
        )
        .await
        .expect("the event is recorded");
}

fn intents(case: &shipgate::workflow::model::OrderCase) -> usize {
    case.shipments
        .iter()
        .flat_map(|s| &s.evidence)
        .filter(|e| {
            matches!(
                e.kind,
                shipgate::workflow::model::EvidenceKind::FulfillmentIntended { .. }
            )
        })
        .count()
}

/// The write-back classes: a shipment whose gate opened while its case was not settled is
/// found and its repair leads to the fulfillment in Shopify; an intent the outbox has not sent
/// an hour later is reported; a fulfillment cancelled in Shopify is reported with what it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_left_open_is_written_back_on_repair_and_lost_write_backs_are_reported() {
    use shipgate::order::Timestamp;
    use shipgate::sandbox::shopify::{NewLine, NewOrder};
    let (synced, clock) = spawn_unplanned().await;
    let daemon = &synced.app.daemon;
    let store = daemon.store();
    let shop = synced.sandbox.shop().to_string();
    let workflow = daemon.workflow();
    let order = synced.sandbox.create_order(NewOrder {
        lines: vec![NewLine {
            sku: "SAMPLE-1".into(),
            quantity: 2,
            ..NewLine::default()
        }],
        shipping_address: Some(serde_json::json!({
            "name": "Ada Lovelace", "address1": "1 Example Street", "city": "London",
            "zip": "N1 1AA", "countryCodeV2": "GB"
        })),
        ..NewOrder::default()
    });
    scan(&synced).await;
    workflow.plan_pending().await.unwrap();
    daemon.sender().run_due().await.unwrap();

    // The merchant holds the order, and the mirror knows: the gate stays closed while the
    // supplier's whole physical work and the carrier's pickup are recorded.
    let fo = synced.sandbox.fulfillment_order_ids(&order)[0].clone();
    synced.sandbox.merchant_hold(&fo, "OTHER").unwrap();
    scan(&synced).await;
    workflow.plan_pending().await.unwrap();
    let case = store
        .case(&shop, &order)
        .unwrap()
        .expect("the order has a case");
    let sg = case.shipments[0].id.clone();
    let line = case.shipments[0].lines[0].line_item_id.clone();
    let at = |offset_s: i64| Timestamp::from_unix_ms(clock.now_ms() + offset_s * 1000).text;
    record(
        &synced,
        serde_json::json!({"id": "c-1", "type": "line_confirmed", "shipment_id": sg,
            "occurred_at": at(-300), "line_id": line, "sku": "SAMPLE-1", "quantity": 2}),
    )
    .await;
    workflow
        .record_event(
            "charlie",
            shipgate::sandbox::harness::check_event(
                "qc-1",
                &sg,
                &[(&line, "SAMPLE-1", 2, 2)],
                "pass",
            ),
            shipgate::workflow::model::Actor::Operator("qc".into()),
        )
        .await
        .unwrap();
    record(
        &synced,
        serde_json::json!({"id": "p-1", "type": "packed", "shipment_id": sg,
            "occurred_at": at(-200), "parcels": [{"parcel_id": "P1",
            "lines": [{"line_id": line, "quantity": 2}], "weight_grams": 800}]}),
    )
    .await;
    let number = "1Z999AA10123456784";
    record(
        &synced,
        serde_json::json!({"id": "l-1", "type": "label_created", "shipment_id": sg,
            "occurred_at": at(-100), "parcel_id": "P1", "carrier": "UPS",
            "tracking_number": number}),
    )
    .await;
    clock.advance(Duration::from_secs(600));
    let pickup = shipgate::tracking::TrackingEvent {
        provider: shipgate::tracking::Provider::AfterShip,
        event_id: "pickup-1".into(),
        tracking_number: number.into(),
        carrier: "ups".into(),
        occurred_at: Timestamp::from_unix_ms(clock.now_ms() - 60_000),
        raw_text: "Picked up by the carrier".into(),
        raw_code: Some("OR".into()),
        location: Some("Shenzhen, CN".into()),
        provider_code: Some("InTransit_002".into()),
        acceptance_scan: true,
        normalized: shipgate::tracking::Normalized::InTransit,
        evidence: Vec::new(),
    };
    let recorded = workflow
        .apply_tracking(pickup, shipgate::workflow::model::Source::Manual)
        .await
        .unwrap();
    assert_eq!(recorded, 1, "the pickup is recorded on the shipment");
    let case = store.case(&shop, &order).unwrap().unwrap();
    assert_eq!(
        shipgate::workflow::derive::status(&case.shipments[0], &case.exceptions, None),
        shipgate::workflow::derive::ShipmentStatus::Ready,
        "checked, packed, labelled and accepted: only the merchant's hold keeps it back"
    );
    assert_eq!(intents(&case), 0, "held: nothing intended");

    // The merchant releases the hold; the mirror learns of it, but the plan request that
    // follows is lost, so the case is never settled against the released order.
    synced.sandbox.merchant_release(&fo).unwrap();
    scan(&synced).await;
    for request in store.plan_queue(100).unwrap() {
        store.planned(&request).unwrap();
    }
    let options = ReconcileOptions {
        since: since_2020(),
        clock: clock.clone(),
        ..ReconcileOptions::default()
    };
    let (report, _) = run(&synced, &options).await;
    assert_eq!(report.drift(), 1, "{:?}", counts(&report));
    let open = class(&report, GATES_OPEN_NOT_WRITTEN_BACK);
    assert_eq!(open.count, 1);
    assert!(
        open.examples[0].starts_with(&format!("{sg} (order #"))
            && open.examples[0].contains(&order)
            && open.examples[0].contains(&format!("lets 2 units through at {fo}")),
        "{:?}",
        open.examples
    );
    let text = report.to_text();
    assert!(
        text.lines().any(|l| l
            .split_whitespace()
            .take(2)
            .eq([GATES_OPEN_NOT_WRITTEN_BACK, "1"])),
        "{text}"
    );

    let repaired = run(
        &synced,
        &ReconcileOptions {
            repair: true,
            ..options.clone()
        },
    )
    .await
    .0;
    assert_eq!(
        repaired.repairs,
        vec![
            "Planned 1 order again, for 1 shipment whose gate is open but not written back: the \
             planner records the fulfillment intents and the outbox sends them."
                .to_string()
        ]
    );
    // What the daemon's planner does with the request the repair queued.
    assert_eq!(workflow.plan_pending().await.unwrap(), 1);
    assert_eq!(intents(&store.case(&shop, &order).unwrap().unwrap()), 1);
    assert!(
        synced.sandbox.fulfillments(&order).is_empty(),
        "intended, not sent yet"
    );

    // Intended and settled: no open gate any more. Within the hour the pending intent is the
    // outbox's ordinary work; two hours later it is overdue.
    assert_eq!(run(&synced, &options).await.0.drift(), 0);
    clock.advance(Duration::from_secs(2 * 3600));
    let late = run(&synced, &options).await.0;
    assert_eq!(late.drift(), 1, "{:?}", counts(&late));
    let overdue = class(&late, WRITE_BACKS_OVERDUE);
    assert_eq!(overdue.count, 1);
    assert!(
        overdue.examples[0].starts_with(&format!("{sg}.f1 (order #"))
            && overdue.examples[0].contains(": pending since "),
        "{:?}",
        overdue.examples
    );
    let left = run(
        &synced,
        &ReconcileOptions {
            repair: true,
            ..options.clone()
        },
    )
    .await
    .0;
    assert!(
        left.repairs[0].starts_with("Left 1 overdue fulfillment write-back to the outbox"),
        "{:?}",
        left.repairs
    );

    // The outbox sends it: exactly one fulfillment, with the label's tracking.
    daemon.sender().run_due().await.unwrap();
    let fulfillments = synced.sandbox.fulfillments(&order);
    assert_eq!(fulfillments.len(), 1, "{fulfillments:?}");
    assert!(fulfillments[0]["trackingInfo"].to_string().contains(number));
    scan(&synced).await;
    workflow.plan_pending().await.unwrap();
    assert_eq!(run(&synced, &options).await.0.drift(), 0);

    // The merchant cancels shipgate's fulfillment in Shopify: shipgate reports it and does not
    // fulfil again on its own.
    let fulfillment = fulfillments[0]["id"].as_str().unwrap().to_string();
    synced.sandbox.cancel_fulfillment(&fulfillment).unwrap();
    scan(&synced).await;
    workflow.plan_pending().await.unwrap();
    let gone_report = run(
        &synced,
        &ReconcileOptions {
            repair: true,
            ..options.clone()
        },
    )
    .await
    .0;
    assert_eq!(gone_report.drift(), 1, "{:?}", counts(&gone_report));
    let gone = class(&gone_report, FULFILLMENTS_GONE_FROM_SHOPIFY);
    assert_eq!(
        gone.examples,
        vec![format!(
            "{fulfillment} (order {}, {sg}): shipgate created it, but in Shopify it is CANCELLED there",
            store.order(&shop, &order).unwrap().unwrap().name
        )]
    );
    assert!(
        gone_report.repairs[0].starts_with("Left 1 fulfillment gone from Shopify as it is"),
        "{:?}",
        gone_report.repairs
    );
    workflow.plan_pending().await.unwrap();
    daemon.sender().run_due().await.unwrap();
    assert_eq!(
        synced.sandbox.fulfillments(&order).len(),
        1,
        "not fulfilled again"
    );
    synced.app.daemon.stop().await.unwrap();
}
