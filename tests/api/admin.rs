//! The admin API: the token guards everything but the probes, and metrics say what happened.

use shipgate::sandbox::webhooks::{ShopifyDelivery, sample_order};

use crate::helpers::*;

#[tokio::test]
async fn everything_but_the_probes_needs_the_bearer_token() {
    let app = spawn_app().await;
    let admin = format!("http://{}", app.daemon.admin_addr());
    let client = reqwest::Client::new();
    for probe in ["/healthz", "/readyz"] {
        let r = client.get(format!("{admin}{probe}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{probe}");
    }
    for path in ["/metrics", "/api/orders"] {
        let none = client.get(format!("{admin}{path}")).send().await.unwrap();
        assert_eq!(none.status().as_u16(), 401, "{path} without a token");
        let wrong = client
            .get(format!("{admin}{path}"))
            .bearer_auth("test-admin-tokem")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status().as_u16(), 401, "{path} with a wrong token");
        // Refused before any body is read, so the connection closes and the answer says so.
        assert_eq!(
            wrong.headers().get("connection").map(|v| v.as_bytes()),
            Some(&b"close"[..]),
            "{path}"
        );
        let body: serde_json::Value = wrong.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("bearer token"));
        let right = client
            .get(format!("{admin}{path}"))
            .bearer_auth("test-admin-token")
            .send()
            .await
            .unwrap();
        assert_eq!(right.status().as_u16(), 200, "{path} with the token");
    }
    app.daemon.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_count_deliveries_by_topic_and_result() {
    let app = spawn_app().await;
    let order = sample_order(1, 7001, "m@example.net", "1 Metric Rd");
    let good = ShopifyDelivery::new(SHOP, "orders/create", "m1", order.clone(), SECRET);
    assert_eq!(app.send(&good).await.0, 200);
    assert_eq!(app.send(&good).await.0, 200);
    let bad = ShopifyDelivery::new(SHOP, "orders/create", "m2", order, b"wrong");
    assert_eq!(app.send(&bad).await.0, 401);
    app.daemon.wait_idle().await;
    let text = reqwest::Client::new()
        .get(format!("http://{}/metrics", app.daemon.admin_addr()))
        .bearer_auth("test-admin-token")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "shipgate_webhook_deliveries_total{topic=\"orders/create\",result=\"accepted\"} 1",
        "shipgate_webhook_deliveries_total{topic=\"orders/create\",result=\"duplicate\"} 1",
        "shipgate_webhook_deliveries_total{topic=\"unverified\",result=\"bad_signature\"} 1",
        "shipgate_inbox_depth 0",
        "shipgate_workers_stale 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from:\n{text}"
        );
    }
    assert!(text.contains("# TYPE shipgate_store_flushes_total counter"));
    app.daemon.stop().await.unwrap();
}
