//! Compliance topics and uninstall, proven by scanning the whole store for planted values.

use serde_json::json;
use shipgate::sandbox::webhooks::{ShopifyDelivery, sample_order};

use crate::helpers::*;

const EMAIL: &str = "planted.customer@example.net";
const PHONE: &str = "+44 7700 900123";
const STREET: &str = "221B Planted Street";
const ORDER: u64 = 9_007_199_254_740_993; // 2^53 + 1: a float would turn it into another order.

async fn plant(app: &TestApp) {
    let mut body: serde_json::Value =
        serde_json::from_slice(&sample_order(ORDER, 7001, EMAIL, STREET)).unwrap();
    body["phone"] = json!(PHONE);
    let deliveries = [
        ShopifyDelivery::new(SHOP, "orders/create", "p1", body.to_string(), SECRET),
        ShopifyDelivery::new(SHOP, "orders/updated", "p2", body.to_string(), SECRET),
        // An order of another customer in the same shop stays untouched.
        ShopifyDelivery::new(
            SHOP,
            "orders/create",
            "p3",
            sample_order(77, 7002, "someone.else@example.net", "9 Other Way"),
            SECRET,
        ),
        // The same customer in another shop is that shop's business.
        ShopifyDelivery::new(
            OTHER_SHOP,
            "orders/create",
            "p4",
            body.to_string(),
            OTHER_SECRET,
        ),
    ];
    for d in &deliveries {
        assert_eq!(app.send(d).await.0, 200);
    }
}

fn hits(app: &TestApp, needle: &str) -> usize {
    app.daemon
        .store()
        .find_bytes(needle.as_bytes())
        .unwrap()
        .len()
}

/// What `find_bytes` finds of an erased shop: its state, kept as the tombstone that keeps it
/// stopped (the domain as the key, times as the value).
fn tombstone_only(shop: &str) -> Vec<(String, Vec<u8>)> {
    vec![("shops".to_string(), shop.as_bytes().to_vec())]
}

#[tokio::test]
async fn customers_redact_erases_the_customer_from_every_stored_value() {
    let app = spawn_app().await;
    plant(&app).await;
    assert!(hits(&app, EMAIL) >= 3);
    let request = json!({
        "shop_id": 1, "shop_domain": SHOP, "orders_to_redact": [ORDER],
        "customer": {"id": 7001, "email": EMAIL, "phone": PHONE}
    });
    let delivery =
        ShopifyDelivery::new(SHOP, "customers/redact", "r1", request.to_string(), SECRET);
    assert_eq!(app.send(&delivery).await.0, 200);
    app.daemon.wait_idle().await;

    // Only the other shop's copy may still hold them.
    for planted in [EMAIL, PHONE, STREET] {
        let left = app.daemon.store().find_bytes(planted.as_bytes()).unwrap();
        assert_eq!(left.len(), 1, "{planted} left in {left:?}");
    }
    assert_eq!(
        hits(&app, "someone.else@example.net"),
        1,
        "other customer kept"
    );
    // The order's non-personal facts survive for fulfilment.
    assert!(hits(&app, "MUG-BLUE-350") >= 3);
    assert!(hits(&app, &ORDER.to_string()) >= 2);
    // Replaying the request changes nothing and fails nothing.
    assert_eq!(app.send(&delivery).await.0, 200);
    app.daemon.stop().await.unwrap();
}

#[tokio::test]
async fn shop_redact_erases_everything_of_that_shop_only() {
    let app = spawn_app().await;
    plant(&app).await;
    app.daemon.wait_idle().await;
    let request = json!({"shop_id": 1, "shop_domain": SHOP});
    let delivery = ShopifyDelivery::new(SHOP, "shop/redact", "r2", request.to_string(), SECRET);
    assert_eq!(app.send(&delivery).await.0, 200);
    app.daemon.wait_idle().await;
    assert_eq!(
        app.daemon.store().find_bytes(SHOP.as_bytes()).unwrap(),
        tombstone_only(SHOP),
        "nothing of the shop is left but its tombstone"
    );
    assert_eq!(hits(&app, "someone.else@example.net"), 0);
    assert_eq!(hits(&app, EMAIL), 1, "the other shop keeps its copy");
    assert_eq!(app.daemon.store().delivery_count(), 1);
    app.daemon.stop().await.unwrap();
}

#[tokio::test]
async fn customers_data_request_writes_a_private_export_and_keeps_no_contact_data() {
    use std::os::unix::fs::PermissionsExt as _;
    let app = spawn_app().await;
    plant(&app).await;
    let request = json!({
        "shop_id": 1, "shop_domain": SHOP, "orders_requested": [ORDER],
        "customer": {"id": 7001, "email": EMAIL, "phone": PHONE},
        "data_request": {"id": 4242}
    });
    let delivery = ShopifyDelivery::new(
        SHOP,
        "customers/data_request",
        "r3",
        request.to_string(),
        SECRET,
    );
    assert_eq!(app.send(&delivery).await.0, 200);
    app.daemon.wait_idle().await;
    let path = app
        .config
        .compliance
        .export_dir
        .join(SHOP)
        .join("data-request-4242.json");
    let export: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("export written")).unwrap();
    let held = export["held"].as_array().unwrap();
    assert_eq!(
        held.len(),
        2,
        "both deliveries of the order, not the other customer's"
    );
    assert!(export.to_string().contains(STREET));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The request itself no longer carries the phone number it arrived with (the order
    // deliveries still do: an export erases nothing).
    let seq = app
        .daemon
        .store()
        .delivery_seq(
            &shipgate::delivery::Origin::Shopify { shop: SHOP.into() },
            "r3",
        )
        .unwrap()
        .unwrap();
    let stored = app.daemon.store().delivery(seq).unwrap().unwrap();
    assert!(!String::from_utf8_lossy(&stored.body).contains(PHONE));
    app.daemon.stop().await.unwrap();
}

#[tokio::test]
async fn app_uninstalled_stops_work_but_keeps_receiving() {
    let app = spawn_app().await;
    let first = ShopifyDelivery::new(
        SHOP,
        "orders/create",
        "u1",
        sample_order(1, 7001, "a@example.net", "1 A St"),
        SECRET,
    );
    assert_eq!(app.send(&first).await.0, 200);
    app.daemon.wait_idle().await;
    assert_eq!(app.daemon.store().order_triggers(SHOP).unwrap().len(), 1);

    let uninstall = ShopifyDelivery::new(SHOP, "app/uninstalled", "u2", "{}", SECRET);
    assert_eq!(app.send(&uninstall).await.0, 200);
    let later = ShopifyDelivery::new(
        SHOP,
        "orders/updated",
        "u3",
        sample_order(2, 7001, "b@example.net", "2 B St"),
        SECRET,
    );
    assert_eq!(
        app.send(&later).await.0,
        200,
        "still stored: shop/redact may follow"
    );
    app.daemon.wait_idle().await;
    let state = app.daemon.store().shop_state(SHOP).unwrap().unwrap();
    assert!(state.uninstalled_at_ms.is_some());
    let triggers = app.daemon.store().order_triggers(SHOP).unwrap();
    assert_eq!(triggers.len(), 1, "no work started after the uninstall");
    // The other shop is unaffected.
    let other = ShopifyDelivery::new(
        OTHER_SHOP,
        "orders/create",
        "u4",
        sample_order(3, 7001, "c@example.net", "3 C St"),
        OTHER_SECRET,
    );
    assert_eq!(app.send(&other).await.0, 200);
    app.daemon.wait_idle().await;
    assert_eq!(
        app.daemon.store().order_triggers(OTHER_SHOP).unwrap().len(),
        1
    );
    app.daemon.stop().await.unwrap();
}

/// The mirror of a synced shop holds shipping addresses too: erasure and export reach it, and an
/// erased address does not come back with the next fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliance_reaches_the_order_mirror_and_erasure_sticks() {
    use shipgate::sandbox::shopify::{NewLine, NewOrder, Plan};
    let synced = spawn_synced(sandbox_config(Plan::Plus), TestAuth::StaticToken).await;
    let shop = synced.sandbox.shop().to_string();
    let street = "31 Mirror Planted Lane";
    let id = synced.sandbox.create_order(NewOrder {
        name: None,
        lines: vec![NewLine {
            sku: "LAMP-1".into(),
            quantity: 1,
            location: 0,
            variant_title: None,
        }],
        customer_email: Some("mirror.customer@example.net".into()),
        shipping_address: Some(
            json!({"name": "Mira Mirror", "address1": street, "city": "Leeds",
            "zip": "LS1 1AA", "countryCode": "GB"}),
        ),
    });
    synced.app.daemon.sync_now(&shop).await.unwrap();
    let store = synced.app.daemon.store();
    assert!(
        !store.find_bytes(street.as_bytes()).unwrap().is_empty(),
        "mirrored with its address"
    );
    let numeric = id.rsplit('/').next().unwrap().parse::<u64>().unwrap();
    let secret = SANDBOX_WEBHOOK_SECRET;

    let request = json!({"shop_id": 1, "shop_domain": shop, "orders_requested": [numeric],
        "customer": {"id": 1, "email": "mirror.customer@example.net"}, "data_request": {"id": 77}});
    let d = ShopifyDelivery::new(
        &shop,
        "customers/data_request",
        "c1",
        request.to_string(),
        secret,
    );
    assert_eq!(synced.app.send(&d).await.0, 200);
    synced.app.daemon.wait_idle().await;
    let export_dir = synced.app.config.compliance.export_dir.join(&shop);
    let export = std::fs::read_to_string(export_dir.join("data-request-77.json")).unwrap();
    assert!(
        export.contains(street),
        "the export includes the mirror's address"
    );

    let request = json!({"shop_id": 1, "shop_domain": shop, "orders_to_redact": [numeric],
        "customer": {"id": 1, "email": "mirror.customer@example.net"}});
    let d = ShopifyDelivery::new(&shop, "customers/redact", "c2", request.to_string(), secret);
    assert_eq!(synced.app.send(&d).await.0, 200);
    synced.app.daemon.wait_idle().await;
    assert!(
        store.find_bytes(street.as_bytes()).unwrap().is_empty(),
        "erased from the mirror"
    );
    // Shopify still has the address: the next fetch must not bring it back.
    synced.sandbox.touch_order(&id).unwrap();
    synced.app.daemon.sync_now(&shop).await.unwrap();
    let mirrored = store.order(&shop, &id).unwrap().unwrap();
    assert!(mirrored.shipping_address.is_none());
    // (The sandbox, unlike Shopify, keeps the address and sends it in later webhooks; only the
    // mirror is asked to forget it here.)
    let in_mirror: Vec<_> = store
        .find_bytes(street.as_bytes())
        .unwrap()
        .into_iter()
        .filter(|(tree, _)| tree == "orders")
        .collect();
    assert!(
        in_mirror.is_empty(),
        "still erased after a fetch: {in_mirror:?}"
    );

    // A shop/redact whose body names another shop erases nothing (the topic header is unsigned).
    let forged = json!({"shop_id": 2, "shop_domain": "someone-else.myshopify.com"});
    let d = ShopifyDelivery::new(&shop, "shop/redact", "c3", forged.to_string(), secret);
    assert_eq!(synced.app.send(&d).await.0, 200);
    synced.app.daemon.wait_idle().await;
    assert!(store.order(&shop, &id).unwrap().is_some());
    // The real one erases the mirror and the exports too.
    let real = json!({"shop_id": 1, "shop_domain": shop});
    let d = ShopifyDelivery::new(&shop, "shop/redact", "c4", real.to_string(), secret);
    assert_eq!(synced.app.send(&d).await.0, 200);
    synced.app.daemon.wait_idle().await;
    assert_eq!(
        store.find_bytes(shop.as_bytes()).unwrap(),
        tombstone_only(&shop)
    );
    assert!(!export_dir.exists(), "the shop's exports are gone");
    synced.app.daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_reinstall_resumes_work_and_a_late_uninstall_retry_does_not_stop_it_again() {
    let app = spawn_app().await;
    let at = |t: &str, d: ShopifyDelivery| ShopifyDelivery {
        triggered_at: t.to_string(),
        ..d
    };
    let uninstall = at(
        "2026-11-25T10:00:00Z",
        ShopifyDelivery::new(SHOP, "app/uninstalled", "r-u1", "{}", SECRET),
    );
    assert_eq!(app.send(&uninstall).await.0, 200);
    // An order webhook triggered an hour later: Shopify only sends those to an installed app.
    let order = at(
        "2026-11-25T11:00:00Z",
        ShopifyDelivery::new(
            SHOP,
            "orders/create",
            "r-o1",
            sample_order(5, 7001, "r@example.net", "5 R St"),
            SECRET,
        ),
    );
    assert_eq!(app.send(&order).await.0, 200);
    app.daemon.wait_idle().await;
    let state = app.daemon.store().shop_state(SHOP).unwrap().unwrap();
    assert_eq!(state.uninstalled_at_ms, None, "work resumed");
    assert_eq!(app.daemon.store().order_triggers(SHOP).unwrap().len(), 1);
    // Shopify retries the old uninstall (another delivery id, the same event time).
    let late = at(
        "2026-11-25T10:00:00Z",
        ShopifyDelivery::new(SHOP, "app/uninstalled", "r-u2", "{}", SECRET),
    );
    assert_eq!(app.send(&late).await.0, 200);
    app.daemon.wait_idle().await;
    let state = app.daemon.store().shop_state(SHOP).unwrap().unwrap();
    assert_eq!(
        state.uninstalled_at_ms, None,
        "an old uninstall does not stop a reinstalled shop"
    );
    app.daemon.stop().await.unwrap();
}

/// A delivery triggered now (the helper's default time is a fixed day in the past).
fn now_delivery(shop: &str, topic: &str, id: &str, body: String, secret: &[u8]) -> ShopifyDelivery {
    ShopifyDelivery {
        triggered_at: shipgate::order::Timestamp::from_unix_ms(shipgate::delivery::now_ms() as i64)
            .text,
        ..ShopifyDelivery::new(shop, topic, id, body, secret)
    }
}

fn lamp_order() -> shipgate::sandbox::shopify::NewOrder {
    use shipgate::sandbox::shopify::{NewLine, NewOrder};
    NewOrder {
        lines: vec![NewLine {
            sku: "LAMP-1".into(),
            quantity: 1,
            ..NewLine::default()
        }],
        ..NewOrder::default()
    }
}

/// Lets the sandbox's webhooks through the daemon and the mirror.
async fn settle(synced: &SyncedApp) {
    synced.sandbox.flush_webhooks().await;
    synced.app.daemon.wait_idle().await;
}

/// `shop/redact` erases the shop but keeps a tombstone: the poller, reconciliation and the
/// daily run leave the erased shop alone (no scan from the initial look-back against a revoked
/// token) until an order webhook after the erasure shows the app was installed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_shop_stays_stopped_until_it_is_installed_again() {
    use shipgate::sandbox::shopify::Plan;
    let synced = spawn_synced(sandbox_config(Plan::Plus), TestAuth::StaticToken).await;
    let shop = synced.sandbox.shop().to_string();
    let store = synced.app.daemon.store();
    let before = synced.sandbox.create_order(lamp_order());
    settle(&synced).await;
    synced.sync().await.unwrap();
    assert!(store.order(&shop, &before).unwrap().is_some());

    synced.sandbox.uninstall();
    settle(&synced).await;
    assert!(store.shop_state(&shop).unwrap().unwrap().is_stopped());
    let redact = now_delivery(
        &shop,
        "shop/redact",
        "erase-1",
        json!({"shop_id": 1, "shop_domain": shop}).to_string(),
        SANDBOX_WEBHOOK_SECRET,
    );
    assert_eq!(synced.app.send(&redact).await.0, 200);
    synced.app.daemon.wait_idle().await;
    assert!(store.order(&shop, &before).unwrap().is_none(), "erased");
    let state = store.shop_state(&shop).unwrap().expect("the tombstone");
    assert!(
        state.is_stopped() && state.erased_at_ms.is_some(),
        "{state:?}"
    );

    // Shopify retries an order webhook triggered before the erasure: its customer data is
    // covered by the erasure, so it is not kept.
    let late = ShopifyDelivery {
        triggered_at: shipgate::order::Timestamp::from_unix_ms(
            shipgate::delivery::now_ms() as i64 - 60 * 60 * 1000,
        )
        .text,
        ..ShopifyDelivery::new(
            &shop,
            "orders/create",
            "late-retry-1",
            sample_order(77, 9001, "late.retry@example.org", "9 Late Retry Road"),
            SANDBOX_WEBHOOK_SECRET,
        )
    };
    assert_eq!(synced.app.send(&late).await.0, 200);
    synced.app.daemon.wait_idle().await;
    let kept: Vec<String> = store
        .deliveries()
        .map(|d| String::from_utf8_lossy(&d.unwrap().1.body).into_owned())
        .filter(|body| body.contains("late.retry@example.org"))
        .collect();
    assert!(kept.is_empty(), "the late retry is not kept: {kept:?}");

    // The poller does not start over: asked to scan, it only probes, and the token is refused.
    let refused = synced.sandbox.stats().unauthorized;
    let err = synced
        .sync()
        .await
        .expect_err("an erased shop is not synced");
    assert!(err.to_string().contains("uninstalled"), "{err}");
    assert_eq!(
        synced.sandbox.stats().unauthorized,
        refused + 1,
        "one probe"
    );
    assert_eq!(store.poll_checkpoint(&shop).unwrap(), None, "no scan ran");
    // Reconciliation refuses, naming why.
    let client = &synced.app.daemon.shop_sync(&shop).unwrap().client;
    let err = shipgate::reconcile::reconcile(
        store,
        client,
        &reqwest::Client::new(),
        &shipgate::reconcile::ReconcileOptions::default(),
        &|_| {},
    )
    .await
    .expect_err("an erased shop is not reconciled");
    assert!(
        matches!(&err, shipgate::reconcile::ReconcileError::Stopped(why)
            if why.contains(&shop) && why.contains("was erased")),
        "{err}"
    );
    assert_eq!(
        synced.sandbox.stats().unauthorized,
        refused + 1,
        "nor asked"
    );
    // Through the admin API too: a conflict the operator can resolve, not a Shopify failure.
    let answer = reqwest::Client::new()
        .post(format!(
            "http://{}/api/shops/{shop}/reconcile",
            synced.app.daemon.admin_addr()
        ))
        .bearer_auth("loopback-admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 409);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("was erased"),
        "{body}"
    );

    // Installed again, the next order's webhook (triggered after the erasure) resumes work.
    synced.sandbox.reinstall();
    let after = synced.sandbox.create_order(lamp_order());
    settle(&synced).await;
    synced.sync().await.unwrap();
    assert!(store.order(&shop, &after).unwrap().is_some());
    let state = store.shop_state(&shop).unwrap().unwrap();
    assert!(!state.is_stopped(), "{state:?}");
    assert!(state.erased_at_ms.is_some(), "the erasure stays on record");
    synced.app.daemon.stop().await.unwrap();
}

/// A reinstall sends no webhook: a shop without order traffic is noticed by the poller's probe,
/// which resumes work as soon as Shopify answers again; an uninstall retried late by Shopify
/// (triggered before the probe) does not stop it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reinstall_without_order_traffic_is_noticed_by_the_pollers_probe() {
    use shipgate::sandbox::shopify::Plan;
    let synced = spawn_synced(sandbox_config(Plan::Plus), TestAuth::StaticToken).await;
    let shop = synced.sandbox.shop().to_string();
    let store = synced.app.daemon.store();
    synced.sandbox.uninstall();
    settle(&synced).await;
    let uninstalled = store.shop_state(&shop).unwrap().unwrap();
    assert!(uninstalled.is_stopped());

    // Shopify sends an uninstalled app nothing; this order reaches shipgate only by a scan.
    let quiet = synced.sandbox.create_order(lamp_order());
    settle(&synced).await;
    let err = synced.sync().await.expect_err("still uninstalled");
    assert!(err.to_string().contains("uninstalled"), "{err}");
    assert!(store.order(&shop, &quiet).unwrap().is_none());

    synced.sandbox.reinstall();
    let report = synced
        .sync()
        .await
        .expect("the probe answers and the scan runs");
    assert!(report.triggered_ids.contains(&quiet), "{report:?}");
    assert!(store.order(&shop, &quiet).unwrap().is_some());
    let state = store.shop_state(&shop).unwrap().unwrap();
    assert!(!state.is_stopped(), "{state:?}");
    let reinstalled = state.reinstalled_at_ms.expect("the probe's time");
    assert!(reinstalled > uninstalled.uninstalled_at_ms.unwrap());

    let late = ShopifyDelivery {
        triggered_at: shipgate::order::Timestamp::from_unix_ms(reinstalled as i64 - 1).text,
        ..ShopifyDelivery::new(
            &shop,
            "app/uninstalled",
            "late-1",
            "{}",
            SANDBOX_WEBHOOK_SECRET,
        )
    };
    assert_eq!(synced.app.send(&late).await.0, 200);
    synced.app.daemon.wait_idle().await;
    assert!(!store.shop_state(&shop).unwrap().unwrap().is_stopped());
    synced.app.daemon.stop().await.unwrap();
}
