//! The order mirror against the sandbox Shopify: convergence whatever happens to webhooks and
//! GraphQL calls, the cost budget, and token refresh.

use serde_json::Value;
use shipgate::order::{OrderMirror, Timestamp};
use shipgate::sandbox::shopify::{Faults, NewLine, NewOrder, OrderEdit, Plan, sample_orders};
use std::sync::atomic::Ordering;

use crate::helpers::*;

fn list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items.clone(),
        Value::Object(map) => {
            if let Some(Value::Array(nodes)) = map.get("nodes") {
                nodes.clone()
            } else if let Some(Value::Array(edges)) = map.get("edges") {
                edges.iter().map(|e| e["node"].clone()).collect()
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    }
}

fn ts(v: &Value) -> Option<i64> {
    v.as_str().map(|s| Timestamp::parse(s).unwrap().unix_ms)
}

/// Asserts that the mirror holds exactly what Shopify (the sandbox) holds for this order.
fn assert_mirrors(mirror: &OrderMirror, truth: &Value) {
    let id = &mirror.id;
    assert_eq!(
        mirror.updated_at.unix_ms,
        ts(&truth["updatedAt"]).unwrap(),
        "{id} updatedAt"
    );
    assert_eq!(
        mirror.cancelled_at.as_ref().map(|t| t.unix_ms),
        ts(&truth["cancelledAt"]),
        "{id} cancelledAt"
    );
    let lines = list(&truth["lineItems"]);
    assert_eq!(mirror.line_items.len(), lines.len(), "{id} line count");
    for (mine, theirs) in mirror.line_items.iter().zip(&lines) {
        assert_eq!(mine.id, theirs["id"].as_str().unwrap());
        assert_eq!(mine.sku.as_deref(), theirs["sku"].as_str(), "{id} sku");
        assert_eq!(
            mine.current_quantity,
            theirs["currentQuantity"].as_i64().unwrap(),
            "{id} qty"
        );
        assert_eq!(
            mine.unfulfilled_quantity,
            theirs["unfulfilledQuantity"].as_i64().unwrap(),
            "{id} unfulfilled"
        );
    }
    let fos = list(&truth["fulfillmentOrders"]);
    assert_eq!(mirror.fulfillment_orders.len(), fos.len(), "{id} FO count");
    for (mine, theirs) in mirror.fulfillment_orders.iter().zip(&fos) {
        assert_eq!(mine.id, theirs["id"].as_str().unwrap());
        assert_eq!(
            mine.status.as_shopify(),
            theirs["status"].as_str().unwrap(),
            "{id} FO status"
        );
        let lines = list(&theirs["lineItems"]);
        let remaining: Vec<i64> = lines
            .iter()
            .map(|l| l["remainingQuantity"].as_i64().unwrap())
            .collect();
        let mine_remaining: Vec<i64> = mine.lines.iter().map(|l| l.remaining_quantity).collect();
        assert_eq!(mine_remaining, remaining, "{id} FO remaining");
    }
    assert!(!mirror.truncated, "{id} fits in one query");
}

fn assert_converged(synced: &SyncedApp) {
    let shop = synced.sandbox.shop();
    let ids = synced.sandbox.order_ids();
    assert!(!ids.is_empty());
    for id in &ids {
        let truth = synced.sandbox.order_snapshot(id).unwrap();
        let mirror = synced
            .app
            .daemon
            .store()
            .order(shop, id)
            .unwrap()
            .unwrap_or_else(|| panic!("{id} missing from the mirror"));
        assert_mirrors(&mirror, &truth);
    }
    assert_eq!(synced.app.daemon.store().orders(shop).count(), ids.len());
}

/// Creates orders, then edits, cancels and touches some of them.
fn churn(synced: &SyncedApp, n: usize) {
    let sandbox = &synced.sandbox;
    let ids: Vec<String> = sample_orders(n, 11)
        .into_iter()
        .map(|o| sandbox.create_order(o))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        match i % 6 {
            0 => {
                let snapshot = sandbox.order_snapshot(id).unwrap();
                let sku = list(&snapshot["lineItems"])[0]["sku"]
                    .as_str()
                    .unwrap()
                    .to_string();
                sandbox
                    .edit_order(id, OrderEdit::SetQuantity { sku, quantity: 3 })
                    .unwrap();
            }
            1 => sandbox.cancel_order(id, "CUSTOMER").unwrap(),
            2 => sandbox.touch_order(id).unwrap(),
            3 => sandbox
                .edit_order(
                    id,
                    OrderEdit::AddLine(NewLine {
                        sku: "CABLE-USBC-1M".into(),
                        quantity: 1,
                        location: 1,
                        variant_title: Some("1 m".into()),
                    }),
                )
                .unwrap(),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_as_delivered_converge_the_mirror() {
    let synced = spawn_synced(sandbox_config(Plan::Plus), TestAuth::StaticToken).await;
    churn(&synced, 24);
    synced.sandbox.flush_webhooks().await;
    synced.app.daemon.wait_idle().await;
    synced
        .app
        .daemon
        .store()
        .triggers_empty(synced.sandbox.shop())
        .await;
    assert_converged(&synced);
    synced.app.daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_duplicated_reordered_webhooks_and_failing_calls_still_converge() {
    let synced = spawn_synced(sandbox_config(Plan::Plus), TestAuth::StaticToken).await;
    synced.sandbox.set_faults(Faults {
        throttled: 0.1,
        http_5xx: 0.1,
        http_429: 0.0,
        webhook_drop: 0.2,
        webhook_duplicate: 0.2,
        webhook_reorder: true,
        ..Faults::default()
    });
    churn(&synced, 36);
    synced.sandbox.flush_webhooks().await;
    // Lost webhooks are found by the scan; every fetch that failed was retried.
    let report = synced.sync().await.expect("no permanent failure");
    assert!(report.seen >= 36, "{report:?}");
    assert_converged(&synced);
    let stats = synced.sandbox.stats();
    assert!(stats.webhooks_dropped > 0, "{stats:?}");
    assert!(stats.webhooks_duplicated > 0, "{stats:?}");
    assert!(stats.http_5xx + stats.throttled_forced > 0, "{stats:?}");
    synced.app.daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_alone_converges_a_shop_whose_webhooks_never_arrive() {
    let synced = spawn_synced(sandbox_config(Plan::Plus), TestAuth::StaticToken).await;
    synced.sandbox.set_webhook_url(None);
    churn(&synced, 18);
    let report = synced.sync().await.unwrap();
    assert_eq!(report.seen, 18);
    assert_converged(&synced);
    // A second scan finds nothing new to fetch.
    let again = synced.sync().await.unwrap();
    assert_eq!(again.triggered, 0, "{again:?}");
    synced.app.daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_keeps_throttling_rare_at_standard_plan_limits() {
    // The bound held: at most one THROTTLED answer per 100 requests, plus one while the first
    // answers teach the client what each operation costs.
    let synced = spawn_synced(sandbox_config(Plan::Standard), TestAuth::StaticToken).await;
    synced.sandbox.set_webhook_url(None);
    for order in sample_orders(80, 5) {
        synced.sandbox.create_order(order);
    }
    synced.sync().await.unwrap();
    assert_converged(&synced);
    let stats = synced.sandbox.stats();
    let bound = 1 + stats.requests / 100;
    assert!(
        stats.throttled_natural <= bound,
        "{} THROTTLED in {} requests (bound {bound})",
        stats.throttled_natural,
        stats.requests
    );
    synced.app.daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_is_refreshed_without_a_failed_sync() {
    let mut config = sandbox_config(Plan::Plus);
    config.token_ttl = std::time::Duration::from_secs(1);
    let synced = spawn_synced(config, TestAuth::ClientCredentials).await;
    synced.sandbox.set_webhook_url(None);
    let client = synced
        .app
        .daemon
        .shop_sync(synced.sandbox.shop())
        .unwrap()
        .client
        .clone();
    // Keep syncing until the first token has expired and a second one was granted; every
    // sync in between must succeed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut round = 0;
    while client.stats().token_grants.load(Ordering::Relaxed) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no refresh within 20 s"
        );
        synced.sandbox.create_order(NewOrder {
            name: None,
            lines: vec![NewLine {
                sku: format!("MUG-{round}"),
                quantity: 1,
                location: 0,
                variant_title: None,
            }],
            customer_email: None,
            shipping_address: None,
        });
        synced.sync().await.expect("sync succeeds");
        round += 1;
    }
    assert_converged(&synced);
    assert_eq!(
        synced.sandbox.stats().unauthorized,
        0,
        "no request went out with an expired token"
    );
    synced.app.daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_that_cannot_be_fetched_is_parked_and_holds_back_no_other() {
    let synced = spawn_synced(sandbox_config(Plan::Plus), TestAuth::StaticToken).await;
    let shop = synced.sandbox.shop().to_string();
    synced.sandbox.set_webhook_url(None);
    synced.app.daemon.sync_now(&shop).await.unwrap();
    let store = synced.app.daemon.store();
    // A trigger whose id Shopify refuses ("Invalid global id") fails every batch it is in.
    store
        .trigger_order(&shop, "gid://shopify/Order/not-a-number", None)
        .unwrap();
    store.triggers_empty(&shop).await;
    let parked = store.parked_orders(&shop).unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].0, "gid://shopify/Order/not-a-number");
    assert!(
        parked[0].1.reason.contains("Invalid global id"),
        "{:?}",
        parked[0].1
    );
    // The shop's other orders go on.
    let real = synced.sandbox.create_order(sample_orders(1, 3).remove(0));
    synced.app.daemon.sync_now(&shop).await.unwrap();
    assert!(
        store.order(&shop, &real).unwrap().is_some(),
        "the real order is mirrored"
    );
    synced.app.daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_parks_no_order_and_keeps_every_trigger() {
    let mut config = sandbox_config(Plan::Plus);
    // The sandbox knows another token than the one shipgate has: every call is a 401.
    config.static_tokens = vec!["shpat_rotated".into()];
    let synced = spawn_synced(config, TestAuth::StaticToken).await;
    let shop = synced.sandbox.shop().to_string();
    let store = synced.app.daemon.store();
    for n in 1..=5 {
        store
            .trigger_order(&shop, &format!("gid://shopify/Order/{n}"), None)
            .unwrap();
    }
    let mirror = &synced.app.daemon.shop_sync(&shop).unwrap().mirror;
    let reason = mirror.fetch_failures(2).await;
    assert!(reason.contains("401"), "{reason}");
    assert_eq!(
        store.parked_orders(&shop).unwrap().len(),
        0,
        "a shop-wide failure blames no order"
    );
    assert_eq!(
        store.order_triggers(&shop).unwrap().len(),
        5,
        "every trigger kept for later"
    );
    synced.app.daemon.stop().await.unwrap();
}
