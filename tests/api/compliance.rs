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
    assert!(
        app.daemon
            .store()
            .find_bytes(SHOP.as_bytes())
            .unwrap()
            .is_empty(),
        "nothing of the shop is left"
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
