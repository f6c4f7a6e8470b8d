//! Tests of the sandbox Shopify over HTTP, with the exact documents shipgate sends (from
//! `graphql/`). Time never passes by sleeping: the sandbox clock is moved with
//! `advance_clock`, and webhooks are awaited with `flush_webhooks`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::*;

const ORDER_SCAN: &str = include_str!("../../../graphql/OrderScan.graphql");
const ORDERS_BY_IDS: &str = include_str!("../../../graphql/OrdersByIds.graphql");
const FULFILLMENT_CREATE: &str = include_str!("../../../graphql/FulfillmentCreate.graphql");
const FULFILLMENT_EVENT_CREATE: &str =
    include_str!("../../../graphql/FulfillmentEventCreate.graphql");
const FULFILLMENT_ORDER_HOLD: &str = include_str!("../../../graphql/FulfillmentOrderHold.graphql");
const FULFILLMENT_ORDER_RELEASE_HOLD: &str =
    include_str!("../../../graphql/FulfillmentOrderReleaseHold.graphql");
const FULFILLMENT_TRACKING_INFO_UPDATE: &str =
    include_str!("../../../graphql/FulfillmentTrackingInfoUpdate.graphql");
const BULK_OPERATION_RUN_QUERY: &str =
    include_str!("../../../graphql/BulkOperationRunQuery.graphql");
const BULK_OPERATION: &str = include_str!("../../../graphql/BulkOperation.graphql");
const WEBHOOK_SUBSCRIPTION_CREATE: &str =
    include_str!("../../../graphql/WebhookSubscriptionCreate.graphql");

const TOKEN: &str = "shpat_sandbox_static_token";

/// A running sandbox and a client that speaks to it as graphql_client does.
struct Harness {
    sandbox: SandboxShopify,
    http: reqwest::Client,
}

/// One answer: status, `Retry-After`, body.
struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: Value,
}

impl Harness {
    async fn start(config: SandboxConfig) -> Harness {
        Harness {
            sandbox: SandboxShopify::start(config).await.expect("sandbox starts"),
            http: reqwest::Client::new(),
        }
    }

    async fn default() -> Harness {
        Harness::start(SandboxConfig::default()).await
    }

    async fn post_with(
        &self,
        token: Option<&str>,
        document: &str,
        name: &str,
        variables: Value,
    ) -> Answer {
        let mut request = self
            .http
            .post(self.sandbox.graphql_url("2026-10"))
            .json(&json!({ "query": document, "variables": variables, "operationName": name }));
        if let Some(token) = token {
            request = request.header("X-Shopify-Access-Token", token);
        }
        let response = request.send().await.expect("sandbox answers");
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            retry_after,
            body,
        }
    }

    /// Sends a document with the static token; expects HTTP 200.
    async fn gql(&self, document: &str, name: &str, variables: Value) -> Value {
        let answer = self.post_with(Some(TOKEN), document, name, variables).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answer.body
    }

    /// Sends a document and expects data without errors.
    async fn data(&self, document: &str, name: &str, variables: Value) -> Value {
        let body = self.gql(document, name, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    fn order(&self, lines: &[(&str, i64, usize)]) -> String {
        self.sandbox.create_order(NewOrder {
            name: None,
            lines: lines
                .iter()
                .map(|(sku, quantity, location)| NewLine {
                    sku: sku.to_string(),
                    quantity: *quantity,
                    location: *location,
                    variant_title: None,
                })
                .collect(),
            customer_email: Some("buyer@example.org".into()),
            shipping_address: Some(json!({ "name": "Ada Lovelace", "address1": "12 Row", "city": "London", "zip": "N1", "countryCodeV2": "GB" })),
        })
    }

    async fn order_by_id(&self, id: &str) -> Value {
        self.data(ORDERS_BY_IDS, "OrdersByIds", json!({ "ids": [id] }))
            .await["nodes"][0]
            .clone()
    }
}

fn cost(body: &Value) -> (u64, Option<u64>) {
    let c = &body["extensions"]["cost"];
    (
        c["requestedQueryCost"].as_u64().unwrap(),
        c["actualQueryCost"].as_u64(),
    )
}

fn fo_ids(order: &Value) -> Vec<String> {
    order["fulfillmentOrders"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|fo| fo["id"].as_str().unwrap().to_string())
        .collect()
}

fn fo_lines(order: &Value, fo: usize) -> Vec<(String, i64, i64)> {
    order["fulfillmentOrders"]["nodes"][fo]["lineItems"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["id"].as_str().unwrap().to_string(),
                l["totalQuantity"].as_i64().unwrap(),
                l["remainingQuantity"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn user_errors(payload: &Value) -> Vec<String> {
    payload["userErrors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn graphql_requires_a_valid_token() {
    let h = Harness::start(SandboxConfig {
        token_ttl: Duration::from_secs(60),
        ..SandboxConfig::default()
    })
    .await;
    let vars = json!({ "first": 1, "query": "" });
    for token in [None, Some("shpat_wrong")] {
        let a = h
            .post_with(token, ORDER_SCAN, "OrderScan", vars.clone())
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            a.body,
            json!({ "errors": "[API] Invalid API key or access token (unrecognized login or wrong password)" })
        );
    }
    assert_eq!(
        h.post_with(Some(TOKEN), ORDER_SCAN, "OrderScan", vars.clone())
            .await
            .status,
        StatusCode::OK
    );

    // The client-credentials grant, form-encoded as Shopify takes it.
    let url = format!("{}/admin/oauth/access_token", h.sandbox.base_url());
    let wrong = h
        .http
        .post(&url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&client_id=sandbox-client-id&client_secret=nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        wrong.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );
    let granted: Value = h
        .http
        .post(&url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&client_id=sandbox-client-id&client_secret=sandbox-client-secret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(granted["expires_in"], 60);
    assert!(granted["scope"].as_str().unwrap().contains("read_orders"));
    let token = granted["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        h.post_with(Some(&token), ORDER_SCAN, "OrderScan", vars.clone())
            .await
            .status,
        StatusCode::OK
    );

    // Expiry follows the sandbox clock.
    h.sandbox.advance_clock(Duration::from_secs(59));
    assert_eq!(
        h.post_with(Some(&token), ORDER_SCAN, "OrderScan", vars.clone())
            .await
            .status,
        StatusCode::OK
    );
    h.sandbox.advance_clock(Duration::from_secs(2));
    assert_eq!(
        h.post_with(Some(&token), ORDER_SCAN, "OrderScan", vars.clone())
            .await
            .status,
        StatusCode::UNAUTHORIZED,
        "expired"
    );
    let stats = h.sandbox.stats();
    assert_eq!(stats.unauthorized, 3);
    assert_eq!(stats.tokens_granted, 1);
    h.sandbox.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Execution, projection, cost
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn order_scan_costs_two_plus_first_and_refunds_to_what_was_returned() {
    let h = Harness::default().await;
    for _ in 0..3 {
        h.order(&[("MUG", 1, 0)]);
    }
    let body = h
        .gql(
            ORDER_SCAN,
            "OrderScan",
            json!({ "first": 250, "query": "status:any" }),
        )
        .await;
    assert_eq!(cost(&body), (252, Some(5)));
    let nodes = body["data"]["orders"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert_eq!(
        nodes[0].as_object().unwrap().len(),
        2,
        "only id and updatedAt: {}",
        nodes[0]
    );
    assert_eq!(body["data"]["orders"]["pageInfo"]["hasNextPage"], false);
    let throttle = &body["extensions"]["cost"]["throttleStatus"];
    assert_eq!(throttle["maximumAvailable"], 2000.0);
    assert_eq!(throttle["restoreRate"], 100.0);
    assert!(throttle["currentlyAvailable"].as_i64().unwrap() >= 1995);
    let stats = h.sandbox.stats();
    assert_eq!((stats.points_requested, stats.points_actual), (252, 5));
    // An unsupported version is served by the oldest supported one, and the header says so.
    let response = h
        .http
        .post(format!(
            "{}/admin/api/2024-01/graphql.json",
            h.sandbox.base_url()
        ))
        .header("X-Shopify-Access-Token", TOKEN)
        .json(&json!({ "query": "{ shop { myshopifyDomain } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-shopify-api-version"], "2026-01");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["data"]["shop"]["myshopifyDomain"],
        "sandbox-store.myshopify.com"
    );
    assert_eq!(cost(&body), (1, Some(1)));
    assert_eq!(stats.per_operation["OrderScan"], 1);
    h.sandbox.stop().await;
}

#[tokio::test]
async fn orders_by_ids_projects_the_whole_mirror_and_costs_468_per_id() {
    let h = Harness::default().await;
    let id = h.order(&[("MUG-BLUE", 2, 0), ("LAMP", 1, 0), ("CAM", 1, 1)]);
    let body = h
        .gql(
            ORDERS_BY_IDS,
            "OrdersByIds",
            json!({ "ids": [id, "gid://shopify/Order/1"] }),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    // 2 ids × (1 order + 1 address + 52 line items + 282 fulfillment orders + 132 fulfillments).
    // Actual: order 1 + address 1 + lineItems (2 + 3 × 2) + fulfillmentOrders (2 + 9 + 7) +
    // fulfillments 2 = 30; the unknown id costs nothing.
    assert_eq!(cost(&body), (936, Some(30)));
    let nodes = body["data"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    assert!(nodes[1].is_null(), "unknown ids answer null in place");
    let order = &nodes[0];
    assert_eq!(order["__typename"], "Order");
    assert_eq!(order["id"], id);
    assert_eq!(order["name"], "#1001");
    assert_eq!(order["displayFulfillmentStatus"], "UNFULFILLED");
    assert_eq!(order["cancelledAt"], Value::Null);
    assert_eq!(order["shippingAddress"]["countryCodeV2"], "GB");
    assert_eq!(order["shippingAddress"]["provinceCode"], Value::Null);
    assert_eq!(
        order["lineItems"]["pageInfo"],
        json!({ "hasNextPage": false })
    );
    let line = &order["lineItems"]["nodes"][0];
    assert_eq!(line["sku"], "MUG-BLUE");
    assert_eq!(line["quantity"], 2);
    assert_eq!(line["currentQuantity"], 2);
    assert_eq!(line["unfulfilledQuantity"], 2);
    assert_eq!(line["requiresShipping"], true);
    assert_eq!(line["variant"]["sku"], "MUG-BLUE");
    let fos = order["fulfillmentOrders"]["nodes"].as_array().unwrap();
    assert_eq!(fos.len(), 2, "one fulfillment order per location");
    assert_eq!(fos[0]["status"], "OPEN");
    assert_eq!(fos[0]["assignedLocation"]["name"], "Shenzhen Warehouse");
    assert_eq!(fos[1]["assignedLocation"]["name"], "Los Angeles 3PL");
    assert!(
        fos[0]["assignedLocation"]["location"]["id"]
            .as_str()
            .unwrap()
            .starts_with("gid://shopify/Location/")
    );
    assert_eq!(fos[0]["fulfillmentHolds"], json!([]));
    assert_eq!(fo_lines(order, 0).len(), 2);
    assert_eq!(fo_lines(order, 1)[0].1, 1);
    assert_eq!(
        fos[0]["lineItems"]["nodes"][0]["lineItem"]["id"],
        order["lineItems"]["nodes"][0]["id"]
    );
    assert_eq!(order["fulfillments"], json!([]));
    // Ids exceed 2^53, so a float parse would corrupt them.
    let n: u64 = id.rsplit('/').next().unwrap().parse().unwrap();
    assert!(n > 1 << 53);

    // Three ids would request 1404 points: refused before anything runs.
    let body = h
        .gql(ORDERS_BY_IDS, "OrdersByIds", json!({ "ids": [id, id, id] }))
        .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "MAX_COST_EXCEEDED");
    assert_eq!(body["errors"][0]["extensions"]["cost"], 1404);
    assert!(body.get("data").is_none());
    assert_eq!(cost(&body), (1404, None));
    assert_eq!(h.sandbox.stats().max_cost_exceeded, 1);
    h.sandbox.stop().await;
}

#[tokio::test]
async fn projection_handles_aliases_fragments_edges_and_typename() {
    let h = Harness::default().await;
    let id = h.order(&[("A", 1, 0), ("B", 2, 0), ("C", 3, 0)]);
    let doc = r#"
        query Q($id: ID!) {
          first: order(id: $id) { ...Parts }
          node(id: $id) { __typename id ... on FulfillmentOrder { status } }
        }
        fragment Parts on Order {
          ref: id
          lineItems(first: 2) {
            edges { cursor node { sku q: quantity } }
            pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
          }
        }"#;
    let body = h.gql(doc, "Q", json!({ "id": id })).await;
    assert!(body.get("errors").is_none(), "{body}");
    let order = &body["data"]["first"];
    assert_eq!(order["ref"], id);
    let edges = order["lineItems"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 2);
    assert_eq!(edges[1]["node"], json!({ "sku": "B", "q": 2 }));
    let page = &order["lineItems"]["pageInfo"];
    assert_eq!(page["hasNextPage"], true);
    assert_eq!(page["hasPreviousPage"], false);
    assert_eq!(page["endCursor"], edges[1]["cursor"]);
    assert_eq!(
        body["data"]["node"],
        json!({ "__typename": "Order", "id": id })
    );
    // Requested: order 1 + lineItems (2 + 2 × 1); node 1. Actual the same.
    assert_eq!(cost(&body), (6, Some(6)));

    // The next page through the cursor.
    let doc2 = r#"query R($id: ID!, $after: String) { order(id: $id) { lineItems(first: 2, after: $after) { nodes { sku } pageInfo { hasNextPage hasPreviousPage } } } }"#;
    let body = h
        .gql(doc2, "R", json!({ "id": id, "after": page["endCursor"] }))
        .await;
    assert_eq!(
        body["data"]["order"]["lineItems"],
        json!({ "nodes": [{ "sku": "C" }], "pageInfo": { "hasNextPage": false, "hasPreviousPage": true } })
    );
    h.sandbox.stop().await;
}

#[tokio::test]
async fn unknown_fields_and_bad_documents_are_graphql_errors_that_cost_nothing() {
    let h = Harness::default().await;
    let body = h
        .gql("{ customers(first: 1) { nodes { id } } }", "", json!({}))
        .await;
    assert_eq!(
        body["errors"][0]["message"],
        "Field 'customers' doesn't exist on type 'QueryRoot'"
    );
    assert!(body.get("data").is_none());
    let body = h
        .gql(
            "query Q { orders(first: 1) { nodes { id colour } } }",
            "Q",
            json!({}),
        )
        .await;
    assert_eq!(
        body["errors"][0]["message"],
        "Field 'colour' doesn't exist on type 'Order'"
    );
    let body = h
        .gql("mutation M { fulfillmentCreate(fulfillment: {lineItemsByFulfillmentOrder: []}) { userErrors { code } } }", "M", json!({}))
        .await;
    assert_eq!(
        body["errors"][0]["message"],
        "Field 'code' doesn't exist on type 'UserError'"
    );
    let body = h
        .gql("query { orders(first: 1) { nodes { id }", "", json!({}))
        .await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("syntax error")
    );
    let body = h
        .gql("query Q { orders { nodes { id } } }", "Q", json!({}))
        .await;
    assert_eq!(
        body["errors"][0]["message"],
        "you must provide one of first or last"
    );
    let body = h.gql(ORDERS_BY_IDS, "OrdersByIds", json!({})).await;
    assert_eq!(
        body["errors"][0]["message"],
        "Variable $ids of type [ID!]! was provided invalid value"
    );
    assert_eq!(
        h.sandbox.stats().points_requested,
        0,
        "nothing was executed"
    );
    assert!(h.sandbox.bucket().currently_available >= 2000.0);
    h.sandbox.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The bucket and the faults
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_drained_bucket_throttles_until_it_refills() {
    let h = Harness::default().await;
    for _ in 0..250 {
        h.order(&[("MUG", 1, 0)]);
    }
    let vars = json!({ "first": 250, "query": "" });
    // Each full page really costs 252 points: the 2000-point bucket runs dry on the 8th, or the
    // 9th if the test ran slowly enough for 16 points to leak back meanwhile.
    let mut served = 0;
    let throttled = loop {
        let body = h.gql(ORDER_SCAN, "OrderScan", vars.clone()).await;
        if body.get("errors").is_some() {
            break body;
        }
        assert_eq!(cost(&body), (252, Some(252)));
        served += 1;
        assert!(served < 9, "the bucket never ran dry");
    };
    assert!((7..=8).contains(&served), "{served}");
    assert_eq!(
        throttled["errors"],
        json!([{ "message": "Throttled", "extensions": { "code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits" } }])
    );
    assert!(throttled.get("data").is_none());
    assert_eq!(cost(&throttled), (252, None));
    let left = throttled["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"]
        .as_i64()
        .unwrap();
    assert!(left < 252, "{left}");
    // The client waits (252 - left) / 100 seconds; the sandbox clock moves instead of sleeping.
    h.sandbox.advance_clock(Duration::from_millis(2530));
    assert!(
        h.gql(ORDER_SCAN, "OrderScan", vars.clone())
            .await
            .get("data")
            .is_some()
    );
    let stats = h.sandbox.stats();
    assert_eq!(stats.throttled_natural, 1);

    // The bucket can also be set directly.
    h.sandbox.set_bucket_available(0.0);
    assert!(
        h.gql(ORDER_SCAN, "OrderScan", vars.clone())
            .await
            .get("errors")
            .is_some()
    );
    h.sandbox.advance_clock(Duration::from_secs(3));
    let bucket = h.sandbox.bucket();
    // Three seconds' worth, plus what the real clock restored meanwhile (a loaded machine can
    // take tens of milliseconds between the two calls).
    assert!(
        (300.0..320.0).contains(&bucket.currently_available),
        "{bucket:?}"
    );
    assert!(
        h.gql(ORDER_SCAN, "OrderScan", vars.clone())
            .await
            .get("data")
            .is_some()
    );
    h.sandbox.advance_clock(Duration::from_secs(3600));
    assert_eq!(
        h.sandbox.bucket().currently_available,
        2000.0,
        "never above the maximum"
    );
    h.sandbox.stop().await;
}

#[tokio::test]
async fn plans_size_the_bucket() {
    for (plan, max, rate) in [
        (Plan::Standard, 2000.0, 100.0),
        (Plan::Advanced, 4000.0, 200.0),
        (Plan::Plus, 20000.0, 1000.0),
        (Plan::Enterprise, 40000.0, 2000.0),
    ] {
        let h = Harness::start(SandboxConfig {
            plan,
            ..SandboxConfig::default()
        })
        .await;
        let body = h
            .gql(ORDER_SCAN, "OrderScan", json!({ "first": 1, "query": "" }))
            .await;
        let status = &body["extensions"]["cost"]["throttleStatus"];
        assert_eq!(
            (
                status["maximumAvailable"].as_f64(),
                status["restoreRate"].as_f64()
            ),
            (Some(max), Some(rate))
        );
        h.sandbox.stop().await;
    }
}

#[tokio::test]
async fn fault_switches_answer_as_shopify_does_and_are_counted() {
    let h = Harness::default().await;
    let vars = json!({ "first": 10, "query": "" });
    h.sandbox.set_faults(Faults {
        throttled: 1.0,
        ..Faults::default()
    });
    let body = h.gql(ORDER_SCAN, "OrderScan", vars.clone()).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "THROTTLED");
    assert!(
        body["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"]
            .as_i64()
            .unwrap()
            >= 1999,
        "with budget left"
    );

    h.sandbox.set_faults(Faults {
        http_429: 1.0,
        ..Faults::default()
    });
    let a = h
        .post_with(Some(TOKEN), ORDER_SCAN, "OrderScan", vars.clone())
        .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.retry_after.as_deref(), Some("1"));

    h.sandbox.set_faults(Faults {
        http_5xx: 1.0,
        ..Faults::default()
    });
    for _ in 0..6 {
        let a = h
            .post_with(Some(TOKEN), ORDER_SCAN, "OrderScan", vars.clone())
            .await;
        assert!(a.status.is_server_error(), "{}", a.status);
        if a.status == StatusCode::INTERNAL_SERVER_ERROR {
            assert_eq!(
                a.body["errors"][0]["extensions"]["code"],
                "INTERNAL_SERVER_ERROR"
            );
        }
    }

    // A lost response: the mutation happened although the client saw a 502.
    let id = h.order(&[("MUG", 1, 0)]);
    let fo = h.sandbox.fulfillment_order_ids(&id)[0].clone();
    h.sandbox.set_faults(Faults {
        lost_response: 1.0,
        ..Faults::default()
    });
    let a = h
        .post_with(
            Some(TOKEN),
            FULFILLMENT_CREATE,
            "FulfillmentCreate",
            json!({ "fulfillment": { "lineItemsByFulfillmentOrder": [{ "fulfillmentOrderId": fo }] } }),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert_eq!(h.sandbox.fulfillments(&id).len(), 1, "the effect happened");
    h.sandbox.set_faults(Faults::default());
    assert!(
        h.gql(ORDER_SCAN, "OrderScan", vars.clone())
            .await
            .get("data")
            .is_some()
    );

    let stats = h.sandbox.stats();
    assert_eq!(stats.throttled_forced, 1);
    assert_eq!(stats.http_429, 1);
    assert_eq!(stats.http_5xx, 7);
    assert_eq!(stats.lost_responses, 1);
    h.sandbox.stop().await;
}

#[tokio::test]
async fn the_same_seed_gives_the_same_faults() {
    async fn run(seed: u64) -> Vec<u16> {
        let h = Harness::start(SandboxConfig {
            seed,
            ..SandboxConfig::default()
        })
        .await;
        h.sandbox.set_faults(Faults {
            http_5xx: 0.3,
            http_429: 0.3,
            ..Faults::default()
        });
        let mut statuses = Vec::new();
        for _ in 0..30 {
            let a = h
                .post_with(
                    Some(TOKEN),
                    ORDER_SCAN,
                    "OrderScan",
                    json!({ "first": 1, "query": "" }),
                )
                .await;
            statuses.push(a.status.as_u16());
        }
        h.sandbox.stop().await;
        statuses
    }
    let a = run(42).await;
    assert_eq!(a, run(42).await);
    assert_ne!(a, run(43).await);
    assert!(
        a.contains(&200) && a.contains(&429) && a.iter().any(|s| *s >= 500),
        "{a:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Search and pagination
// ---------------------------------------------------------------------------------------------

async fn scan(
    h: &Harness,
    query: &str,
    mut between_pages: impl FnMut(usize),
) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut page = 0;
    loop {
        let data = h
            .data(
                ORDER_SCAN,
                "OrderScan",
                json!({ "first": 250, "after": after, "query": query }),
            )
            .await;
        for node in data["orders"]["nodes"].as_array().unwrap() {
            seen.push((
                node["id"].as_str().unwrap().to_string(),
                node["updatedAt"].as_str().unwrap().to_string(),
            ));
        }
        if data["orders"]["pageInfo"]["hasNextPage"] != true {
            return seen;
        }
        after = data["orders"]["pageInfo"]["endCursor"]
            .as_str()
            .map(str::to_string);
        page += 1;
        between_pages(page);
    }
}

#[tokio::test]
async fn paging_600_orders_from_a_checkpoint_yields_each_once_in_updated_order() {
    let h = Harness::default().await;
    let mut ids = Vec::new();
    for i in 0..650 {
        if i % 40 == 0 {
            h.sandbox.advance_clock(Duration::from_secs(1));
        }
        ids.push(h.order(&[("MUG", 1, 0)]));
    }
    // The first 50 orders lie before the checkpoint.
    let checkpoint = h.sandbox.order_snapshot(&ids[50]).unwrap()["updatedAt"]
        .as_str()
        .unwrap()
        .to_string();
    // Touch a few older orders so updatedAt order differs from creation order.
    h.sandbox.advance_clock(Duration::from_secs(5));
    for id in [&ids[60], &ids[70], &ids[640]] {
        h.sandbox.touch_order(id).unwrap();
    }
    let query = format!("updated_at:>='{checkpoint}'");
    let seen = scan(&h, &query, |_| {}).await;
    let expected: usize = ids
        .iter()
        .filter(|id| {
            h.sandbox.order_snapshot(id).unwrap()["updatedAt"]
                .as_str()
                .unwrap()
                >= checkpoint.as_str()
        })
        .count();
    assert!(expected >= 600, "{expected}");
    assert_eq!(seen.len(), expected);
    let mut unique: Vec<&String> = seen.iter().map(|(id, _)| id).collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "each order exactly once");
    assert!(
        seen.windows(2).all(|w| w[0].1 <= w[1].1),
        "in updatedAt order"
    );
    assert_eq!(
        seen.last().unwrap().0,
        ids[640],
        "the touched orders come last"
    );
    assert_eq!(h.sandbox.stats().per_operation["OrderScan"], 3);

    // An order changed while a scan pages moves behind the cursor and is found again later in
    // the scan; one not yet reached is found once, at its new place.
    let (early, late) = (seen[10].0.clone(), seen[400].0.clone());
    let again = scan(&h, &query, |page| {
        if page == 1 {
            h.sandbox.advance_clock(Duration::from_secs(1));
            h.sandbox.touch_order(&early).unwrap();
            h.sandbox.touch_order(&late).unwrap();
        }
    })
    .await;
    assert_eq!(again.iter().filter(|(id, _)| *id == early).count(), 2);
    assert_eq!(again.iter().filter(|(id, _)| *id == late).count(), 1);
    assert_eq!(again.len(), seen.len() + 1);
    h.sandbox.stop().await;
}

#[tokio::test]
async fn search_filters_sorts_and_reverses() {
    let h = Harness::default().await;
    let a = h.order(&[("A", 1, 0)]);
    h.sandbox.advance_clock(Duration::from_secs(10));
    let b = h.order(&[("B", 1, 0)]);
    h.sandbox.advance_clock(Duration::from_secs(10));
    let c = h.order(&[("C", 1, 0)]);
    h.sandbox.advance_clock(Duration::from_secs(1));
    h.sandbox.cancel_order(&b, "CUSTOMER").unwrap();
    let b_created = h.sandbox.order_snapshot(&b).unwrap()["createdAt"]
        .as_str()
        .unwrap()
        .to_string();
    let ids = |data: &Value| -> Vec<String> {
        data["orders"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_string())
            .collect()
    };
    let q = "query Q($q: String, $key: OrderSortKeys, $rev: Boolean) { orders(first: 10, query: $q, sortKey: $key, reverse: $rev) { nodes { id } } }";
    let run = |query: String, key: &'static str, rev: bool| {
        let h = &h;
        async move {
            ids(&h
                .data(q, "Q", json!({ "q": query, "key": key, "rev": rev }))
                .await)
        }
    };
    assert_eq!(
        run(format!("created_at:>'{b_created}'"), "ID", false).await,
        vec![c.clone()]
    );
    assert_eq!(
        run(format!("created_at:<=\"{b_created}\""), "ID", false).await,
        vec![a.clone(), b.clone()]
    );
    assert_eq!(
        run(String::new(), "UPDATED_AT", false).await,
        vec![a.clone(), c.clone(), b.clone()]
    );
    assert_eq!(
        run(String::new(), "UPDATED_AT", true).await,
        vec![b.clone(), c.clone(), a.clone()]
    );
    assert_eq!(
        run("status:cancelled".into(), "ID", false).await,
        vec![b.clone()]
    );
    assert_eq!(
        run("status:open".into(), "CREATED_AT", true).await,
        vec![c.clone(), a.clone()]
    );
    // Terms Shopify does not know are ignored, with a warning under extensions.search.
    let body = h
        .gql(q, "Q", json!({ "q": "colour:red", "key": "ID" }))
        .await;
    assert_eq!(ids(&body["data"]).len(), 3);
    assert_eq!(
        body["extensions"]["search"][0]["warnings"][0]["field"],
        "colour"
    );
    h.sandbox.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Fulfillment
// ---------------------------------------------------------------------------------------------

async fn fulfil(h: &Harness, groups: Value, tracking: Value) -> (Value, Value) {
    let body = h
        .gql(
            FULFILLMENT_CREATE,
            "FulfillmentCreate",
            json!({ "fulfillment": { "lineItemsByFulfillmentOrder": groups, "notifyCustomer": true, "trackingInfo": tracking }, "message": null }),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    (body["data"]["fulfillmentCreate"].clone(), body)
}

#[tokio::test]
async fn fulfillment_create_partial_then_full() {
    let h = Harness::default().await;
    let id = h.order(&[("MUG", 3, 0), ("LAMP", 1, 0)]);
    let order = h.order_by_id(&id).await;
    let fo = fo_ids(&order)[0].clone();
    let lines = fo_lines(&order, 0);
    let before = order["updatedAt"].as_str().unwrap().to_string();

    let (payload, body) = fulfil(
        &h,
        json!([{ "fulfillmentOrderId": fo, "fulfillmentOrderLineItems": [{ "id": lines[0].0, "quantity": 2 }] }]),
        json!({ "company": "4PX", "number": "4PX123" }),
    )
    .await;
    assert_eq!(user_errors(&payload), Vec::<String>::new());
    assert_eq!(cost(&body), (17, Some(14)));
    let f = &payload["fulfillment"];
    assert_eq!(f["status"], "SUCCESS");
    assert_eq!(
        f["trackingInfo"],
        json!([{ "company": "4PX", "number": "4PX123", "url": "https://track.4px.com/#/result/0/4PX123" }])
    );
    let order = h.order_by_id(&id).await;
    assert_eq!(order["displayFulfillmentStatus"], "PARTIALLY_FULFILLED");
    assert!(
        order["updatedAt"].as_str().unwrap() > before.as_str(),
        "updatedAt moved"
    );
    assert_eq!(
        order["fulfillmentOrders"]["nodes"][0]["status"],
        "IN_PROGRESS"
    );
    let after: Vec<(i64, i64)> = fo_lines(&order, 0).iter().map(|l| (l.1, l.2)).collect();
    assert_eq!(after, vec![(3, 1), (1, 1)]);
    assert_eq!(order["lineItems"]["nodes"][0]["unfulfilledQuantity"], 1);
    assert_eq!(
        order["fulfillments"][0]["trackingInfo"][0]["number"],
        "4PX123"
    );

    // More than remains is refused; so is zero.
    for quantity in [2, 0] {
        let (payload, _) = fulfil(
            &h,
            json!([{ "fulfillmentOrderId": fo, "fulfillmentOrderLineItems": [{ "id": lines[0].0, "quantity": quantity }] }]),
            json!(null),
        )
        .await;
        assert_eq!(
            user_errors(&payload),
            vec!["Invalid fulfillment order line item quantity requested."]
        );
        assert_eq!(payload["fulfillment"], Value::Null);
    }

    // Omitted line items mean everything that remains.
    let (payload, _) = fulfil(
        &h,
        json!([{ "fulfillmentOrderId": fo }]),
        json!({ "company": "Yanwen", "numbers": ["YW1", "YW2"], "urls": ["https://track.yw56.com.cn/en/querydel?nums=YW1"] }),
    )
    .await;
    assert_eq!(user_errors(&payload), Vec::<String>::new());
    let tracking = payload["fulfillment"]["trackingInfo"].as_array().unwrap();
    assert_eq!(tracking.len(), 2);
    assert_eq!(
        tracking[1]["url"],
        Value::Null,
        "an unknown carrier without a URL has none"
    );
    let order = h.order_by_id(&id).await;
    assert_eq!(order["displayFulfillmentStatus"], "FULFILLED");
    assert_eq!(order["fulfillmentOrders"]["nodes"][0]["status"], "CLOSED");
    assert!(fo_lines(&order, 0).iter().all(|l| l.2 == 0));
    assert_eq!(order["fulfillments"].as_array().unwrap().len(), 2);

    // A closed fulfillment order cannot be fulfilled again.
    let (payload, _) = fulfil(&h, json!([{ "fulfillmentOrderId": fo }]), json!(null)).await;
    assert_eq!(
        user_errors(&payload),
        vec![format!(
            "Fulfillment order {fo} has an unfulfillable status= closed."
        )]
    );
    let made = h.sandbox.fulfillments(&id);
    assert_eq!(made.len(), 2);
    assert_eq!(made[0]["origin"], "app");
    assert_eq!(made[0]["notifyCustomer"], true);
    h.sandbox.stop().await;
}

#[tokio::test]
async fn one_fulfillment_covers_one_order_at_one_location_and_nothing_on_hold() {
    let h = Harness::default().await;
    let id = h.order(&[("MUG", 1, 0), ("CAM", 1, 1)]);
    let other = h.order(&[("MUG", 1, 0)]);
    let order = h.order_by_id(&id).await;
    let fos = fo_ids(&order);
    let other_fo = h.sandbox.fulfillment_order_ids(&other)[0].clone();

    let (payload, _) = fulfil(
        &h,
        json!([{ "fulfillmentOrderId": fos[0] }, { "fulfillmentOrderId": fos[1] }]),
        json!(null),
    )
    .await;
    assert_eq!(
        user_errors(&payload),
        vec!["All fulfillment orders must belong to the same location."]
    );
    let (payload, _) = fulfil(
        &h,
        json!([{ "fulfillmentOrderId": fos[0] }, { "fulfillmentOrderId": other_fo }]),
        json!(null),
    )
    .await;
    assert_eq!(
        user_errors(&payload),
        vec!["All fulfillment orders must belong to the same order."]
    );
    let (payload, _) = fulfil(
        &h,
        json!([{ "fulfillmentOrderId": "gid://shopify/FulfillmentOrder/5" }]),
        json!(null),
    )
    .await;
    assert_eq!(
        user_errors(&payload),
        vec!["Fulfillment order does not exist."]
    );

    h.sandbox
        .merchant_hold(&fos[0], "INCORRECT_ADDRESS")
        .unwrap();
    let (payload, _) = fulfil(&h, json!([{ "fulfillmentOrderId": fos[0] }]), json!(null)).await;
    assert_eq!(
        user_errors(&payload),
        vec![format!(
            "Fulfillment order {} has an unfulfillable status= on_hold.",
            fos[0]
        )]
    );
    let order = h.order_by_id(&id).await;
    assert_eq!(order["displayFulfillmentStatus"], "ON_HOLD");
    assert_eq!(
        order["fulfillments"],
        json!([]),
        "nothing was fulfilled by the refused calls"
    );

    // The other location is still free to fulfil.
    let (payload, _) = fulfil(&h, json!([{ "fulfillmentOrderId": fos[1] }]), json!(null)).await;
    assert_eq!(user_errors(&payload), Vec::<String>::new());
    h.sandbox.stop().await;
}

async fn hold(h: &Harness, fo: &str, handle: &str) -> Value {
    let body = h
        .gql(
            FULFILLMENT_ORDER_HOLD,
            "FulfillmentOrderHold",
            json!({ "id": fo, "fulfillmentHold": { "reason": "INVENTORY_OUT_OF_STOCK", "reasonNotes": "short", "notifyMerchant": false, "handle": handle } }),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    body["data"]["fulfillmentOrderHold"].clone()
}

async fn release(h: &Harness, fo: &str, hold_ids: Value) -> Value {
    let body = h
        .gql(
            FULFILLMENT_ORDER_RELEASE_HOLD,
            "FulfillmentOrderReleaseHold",
            json!({ "id": fo, "holdIds": hold_ids }),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    body["data"]["fulfillmentOrderReleaseHold"].clone()
}

#[tokio::test]
async fn holds_are_unique_per_handle_and_only_the_apps_own_are_released() {
    let h = Harness::default().await;
    let id = h.order(&[("MUG", 1, 0)]);
    let fo = h.sandbox.fulfillment_order_ids(&id)[0].clone();

    let first = hold(&h, &fo, "exception-17").await;
    assert_eq!(first["userErrors"], json!([]));
    assert_eq!(
        first["fulfillmentOrder"],
        json!({ "id": fo, "status": "ON_HOLD" })
    );
    assert_eq!(first["fulfillmentHold"]["handle"], "exception-17");
    assert_eq!(first["fulfillmentHold"]["reason"], "INVENTORY_OUT_OF_STOCK");
    let app_hold = first["fulfillmentHold"]["id"].as_str().unwrap().to_string();

    // The same handle again is refused (Shopify's documented behaviour) and adds nothing.
    let again = hold(&h, &fo, "exception-17").await;
    assert_eq!(
        again["userErrors"][0]["code"],
        "DUPLICATE_FULFILLMENT_HOLD_HANDLE"
    );
    assert_eq!(again["fulfillmentHold"], Value::Null);
    let order = h.order_by_id(&id).await;
    let holds = &order["fulfillmentOrders"]["nodes"][0]["fulfillmentHolds"];
    assert_eq!(holds.as_array().unwrap().len(), 1);
    assert_eq!(holds[0]["heldByRequestingApp"], true);
    assert_eq!(holds[0]["reasonNotes"], "short");

    // The merchant holds too; shipgate may not release that one.
    let merchant = h.sandbox.merchant_hold(&fo, "HIGH_RISK_OF_FRAUD").unwrap();
    let refused = release(&h, &fo, json!([merchant, app_hold])).await;
    assert_eq!(refused["userErrors"][0]["code"], "INVALID_ACCESS");
    assert_eq!(refused["fulfillmentOrder"], Value::Null);
    let order = h.order_by_id(&id).await;
    assert_eq!(
        order["fulfillmentOrders"]["nodes"][0]["fulfillmentHolds"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Releasing its own leaves the merchant's hold: still on hold.
    let released = release(&h, &fo, json!([app_hold])).await;
    assert_eq!(released["userErrors"], json!([]));
    assert_eq!(released["fulfillmentOrder"]["status"], "ON_HOLD");
    let order = h.order_by_id(&id).await;
    let holds = &order["fulfillmentOrders"]["nodes"][0]["fulfillmentHolds"];
    assert_eq!(holds.as_array().unwrap().len(), 1);
    assert_eq!(holds[0]["heldByRequestingApp"], false);
    assert_eq!(holds[0]["handle"], "");

    // Once the merchant releases, the order is OPEN again and the handle is free again.
    h.sandbox.merchant_release(&fo).unwrap();
    assert_eq!(
        h.order_by_id(&id).await["fulfillmentOrders"]["nodes"][0]["status"],
        "OPEN"
    );
    let third = hold(&h, &fo, "exception-17").await;
    assert_eq!(third["userErrors"], json!([]));
    h.sandbox.stop().await;
}

#[tokio::test]
async fn a_partly_fulfilled_order_returns_to_in_progress_when_released() {
    let h = Harness::default().await;
    let id = h.order(&[("MUG", 2, 0)]);
    let order = h.order_by_id(&id).await;
    let fo = fo_ids(&order)[0].clone();
    let line = fo_lines(&order, 0)[0].0.clone();
    fulfil(&h, json!([{ "fulfillmentOrderId": fo, "fulfillmentOrderLineItems": [{ "id": line, "quantity": 1 }] }]), json!(null)).await;
    let held = hold(&h, &fo, "h").await;
    let released = release(&h, &fo, json!([held["fulfillmentHold"]["id"]])).await;
    assert_eq!(released["fulfillmentOrder"]["status"], "IN_PROGRESS");
    h.sandbox.stop().await;
}

#[tokio::test]
async fn events_and_tracking_updates_change_the_fulfillment() {
    let h = Harness::default().await;
    let id = h.order(&[("MUG", 1, 0)]);
    let fo = h.sandbox.fulfillment_order_ids(&id)[0].clone();
    let (payload, _) = fulfil(
        &h,
        json!([{ "fulfillmentOrderId": fo }]),
        json!({ "company": "USPS", "number": "9400100000000000000000" }),
    )
    .await;
    let fulfillment = payload["fulfillment"]["id"].as_str().unwrap().to_string();

    let body = h
        .gql(
            FULFILLMENT_EVENT_CREATE,
            "FulfillmentEventCreate",
            json!({ "fulfillmentEvent": { "fulfillmentId": fulfillment, "status": "CARRIER_PICKED_UP", "happenedAt": "2026-11-25T10:00:00Z" } }),
        )
        .await;
    assert_eq!(cost(&body), (12, Some(11)));
    let event = &body["data"]["fulfillmentEventCreate"]["fulfillmentEvent"];
    assert_eq!(event["status"], "CARRIER_PICKED_UP");
    assert_eq!(event["happenedAt"], "2026-11-25T10:00:00Z");
    let body = h
        .gql(
            FULFILLMENT_EVENT_CREATE,
            "FulfillmentEventCreate",
            json!({ "fulfillmentEvent": { "fulfillmentId": "gid://shopify/Fulfillment/1", "status": "DELIVERED" } }),
        )
        .await;
    assert_eq!(
        user_errors(&body["data"]["fulfillmentEventCreate"]),
        vec!["Fulfillment does not exist."]
    );
    let body = h
        .gql(
            FULFILLMENT_EVENT_CREATE,
            "FulfillmentEventCreate",
            json!({ "fulfillmentEvent": { "fulfillmentId": fulfillment, "status": "TELEPORTED" } }),
        )
        .await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("TELEPORTED"),
        "{body}"
    );

    let body = h
        .gql(
            FULFILLMENT_TRACKING_INFO_UPDATE,
            "FulfillmentTrackingInfoUpdate",
            json!({ "fulfillmentId": fulfillment, "trackingInfoInput": { "company": "UPS", "number": "1Z999" }, "notifyCustomer": false }),
        )
        .await;
    assert_eq!(cost(&body), (17, Some(14)));
    assert_eq!(
        body["data"]["fulfillmentTrackingInfoUpdate"]["fulfillment"]["trackingInfo"][0]["number"],
        "1Z999"
    );
    let made = h.sandbox.fulfillments(&id);
    assert_eq!(made[0]["trackingInfo"][0]["company"], "UPS");
    assert_eq!(made[0]["events"]["nodes"][0]["status"], "CARRIER_PICKED_UP");
    assert_eq!(made[0]["displayStatus"], "IN_TRANSIT");
    h.sandbox.stop().await;
}

#[tokio::test]
async fn costs_of_the_remaining_operations() {
    let h = Harness::default().await;
    let id = h.order(&[("MUG", 1, 0)]);
    let fo = h.sandbox.fulfillment_order_ids(&id)[0].clone();
    let body = h
        .gql(
            FULFILLMENT_ORDER_HOLD,
            "FulfillmentOrderHold",
            json!({ "id": fo, "fulfillmentHold": { "reason": "OTHER", "handle": "x" } }),
        )
        .await;
    assert_eq!(cost(&body), (13, Some(12)));
    let hold = body["data"]["fulfillmentOrderHold"]["fulfillmentHold"]["id"].clone();
    let body = h
        .gql(
            FULFILLMENT_ORDER_RELEASE_HOLD,
            "FulfillmentOrderReleaseHold",
            json!({ "id": fo, "holdIds": [hold] }),
        )
        .await;
    assert_eq!(cost(&body), (12, Some(11)));
    let body = h
        .gql(
            WEBHOOK_SUBSCRIPTION_CREATE,
            "WebhookSubscriptionCreate",
            json!({ "topic": "ORDERS_UPDATED", "webhookSubscription": { "uri": "https://example.org/webhooks/shopify", "format": "JSON" } }),
        )
        .await;
    assert_eq!(cost(&body), (12, Some(11)));
    assert_eq!(
        body["data"]["webhookSubscriptionCreate"]["webhookSubscription"]["topic"],
        "ORDERS_UPDATED"
    );
    let body = h
        .gql(
            WEBHOOK_SUBSCRIPTION_CREATE,
            "WebhookSubscriptionCreate",
            json!({ "topic": "ORDERS_UPDATED", "webhookSubscription": { "uri": "https://example.org/webhooks/shopify" } }),
        )
        .await;
    assert_eq!(
        user_errors(&body["data"]["webhookSubscriptionCreate"]),
        vec!["Address for this topic has already been taken"]
    );
    assert_eq!(
        h.sandbox.webhook_subscriptions(),
        vec![(
            "orders/updated".to_string(),
            "https://example.org/webhooks/shopify".to_string()
        )]
    );
    let body = h
        .gql(
            BULK_OPERATION_RUN_QUERY,
            "BulkOperationRunQuery",
            json!({ "query": "{ orders { edges { node { id } } } }" }),
        )
        .await;
    assert_eq!(cost(&body), (12, Some(11)));
    let op = body["data"]["bulkOperationRunQuery"]["bulkOperation"]["id"].clone();
    let body = h
        .gql(BULK_OPERATION, "BulkOperation", json!({ "id": op }))
        .await;
    assert_eq!(cost(&body), (1, Some(1)));
    h.sandbox.stop().await;
}

#[tokio::test]
async fn cancelling_and_editing_change_quantities_and_fulfillment_orders() {
    let h = Harness::default().await;
    let id = h.order(&[("MUG", 3, 0), ("CAM", 1, 1)]);
    h.sandbox
        .edit_order(
            &id,
            OrderEdit::SetQuantity {
                sku: "MUG".into(),
                quantity: 2,
            },
        )
        .unwrap();
    h.sandbox
        .edit_order(
            &id,
            OrderEdit::AddLine(NewLine {
                sku: "LAMP".into(),
                quantity: 1,
                location: 0,
                variant_title: Some("Red".into()),
            }),
        )
        .unwrap();
    let order = h.order_by_id(&id).await;
    let mug = &order["lineItems"]["nodes"][0];
    assert_eq!(
        (
            mug["quantity"].as_i64(),
            mug["currentQuantity"].as_i64(),
            mug["unfulfilledQuantity"].as_i64()
        ),
        (Some(3), Some(2), Some(2))
    );
    let lines: Vec<(i64, i64)> = fo_lines(&order, 0).iter().map(|l| (l.1, l.2)).collect();
    assert_eq!(
        lines,
        vec![(2, 2), (1, 1)],
        "the new line joined the open fulfillment order"
    );
    assert!(
        h.sandbox
            .edit_order(
                &id,
                OrderEdit::SetQuantity {
                    sku: "NOPE".into(),
                    quantity: 1
                }
            )
            .is_err()
    );

    let before = order["updatedAt"].as_str().unwrap().to_string();
    h.sandbox.cancel_order(&id, "INVENTORY").unwrap();
    let order = h.order_by_id(&id).await;
    assert_eq!(order["cancelReason"], "INVENTORY");
    assert!(order["cancelledAt"].is_string());
    assert!(order["updatedAt"].as_str().unwrap() > before.as_str());
    for fo in order["fulfillmentOrders"]["nodes"].as_array().unwrap() {
        assert_eq!(fo["status"], "CLOSED");
        assert!(
            fo["lineItems"]["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|l| l["remainingQuantity"] == 0)
        );
    }
    assert!(
        order["lineItems"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["unfulfilledQuantity"] == 0)
    );
    assert_eq!(
        h.sandbox.cancel_order(&id, "INVENTORY").unwrap_err(),
        SandboxError::Invalid(format!(
            "{} is cancelled already",
            order["name"].as_str().unwrap()
        ))
    );
    assert!(matches!(
        h.sandbox.touch_order("gid://shopify/Order/3"),
        Err(SandboxError::UnknownOrder(_))
    ));
    h.sandbox.stop().await;
}

#[tokio::test]
async fn successive_changes_get_strictly_later_updated_at() {
    let h = Harness::default().await;
    let id = h.order(&[("MUG", 1, 0)]);
    let mut last = h.sandbox.order_snapshot(&id).unwrap()["updatedAt"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..5 {
        h.sandbox.touch_order(&id).unwrap();
        let now = h.sandbox.order_snapshot(&id).unwrap()["updatedAt"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(now > last, "{now} after {last}");
        assert!(
            now.ends_with('Z') && now.len() == 20,
            "second precision: {now}"
        );
        last = now;
    }
    h.sandbox.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Bulk operations
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn bulk_operations_write_jsonl_with_parent_ids() {
    let h = Harness::default().await;
    let a = h.order(&[("MUG", 1, 0), ("CAM", 2, 1)]);
    let b = h.order(&[("LAMP", 1, 0)]);
    let inner = r#"{ orders(query: "status:any") { edges { node { id updatedAt
        lineItems { edges { node { id sku quantity } } }
        fulfillmentOrders { edges { node { id status } } } } } } }"#;
    let body = h
        .data(
            BULK_OPERATION_RUN_QUERY,
            "BulkOperationRunQuery",
            json!({ "query": inner }),
        )
        .await;
    let run = &body["bulkOperationRunQuery"];
    assert_eq!(run["userErrors"], json!([]));
    assert_eq!(run["bulkOperation"]["status"], "CREATED");
    let op = run["bulkOperation"]["id"].as_str().unwrap().to_string();

    let poll = h
        .data(BULK_OPERATION, "BulkOperation", json!({ "id": op }))
        .await;
    assert_eq!(poll["bulkOperation"]["status"], "RUNNING");
    assert_eq!(poll["bulkOperation"]["url"], Value::Null);
    let poll = h
        .data(BULK_OPERATION, "BulkOperation", json!({ "id": op }))
        .await;
    let done = &poll["bulkOperation"];
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(
        done["objectCount"], "8",
        "2 orders, 3 line items, 3 fulfillment orders: {done}"
    );
    assert!(done["completedAt"].is_string());

    // The URL works without the access token, like Shopify's signed storage URL.
    let text = reqwest::get(done["url"].as_str().unwrap())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8);
    assert_eq!(lines[0]["id"], a);
    assert!(lines[0].get("__parentId").is_none());
    assert!(
        lines[0].get("lineItems").is_none(),
        "nested connections are lines of their own"
    );
    assert_eq!(lines[1]["sku"], "MUG");
    assert_eq!(lines[1]["__parentId"], a);
    assert_eq!(lines[2]["__parentId"], a);
    assert_eq!(lines[3]["status"], "OPEN");
    assert_eq!(lines[3]["__parentId"], a);
    assert_eq!(lines[5]["id"], b);
    assert!(lines[6..].iter().all(|l| l["__parentId"] == b));

    // Invalid queries and a sixth concurrent operation are refused as user errors.
    let body = h
        .data(
            BULK_OPERATION_RUN_QUERY,
            "BulkOperationRunQuery",
            json!({ "query": "{ orders { edges { node { id colour } } } }" }),
        )
        .await;
    assert_eq!(
        body["bulkOperationRunQuery"]["userErrors"][0]["code"],
        "INVALID"
    );
    for i in 0..6 {
        let body = h
            .data(
                BULK_OPERATION_RUN_QUERY,
                "BulkOperationRunQuery",
                json!({ "query": "{ orders { nodes { id } } }" }),
            )
            .await;
        let errors = &body["bulkOperationRunQuery"]["userErrors"];
        if i < 5 {
            assert_eq!(errors, &json!([]));
        } else {
            assert_eq!(errors[0]["code"], "LIMIT_REACHED");
        }
    }
    // Operations nobody polls complete on their own after a while.
    h.sandbox.advance_clock(Duration::from_secs(2));
    let body = h
        .data(
            BULK_OPERATION_RUN_QUERY,
            "BulkOperationRunQuery",
            json!({ "query": "{ orders { nodes { id } } }" }),
        )
        .await;
    assert_eq!(body["bulkOperationRunQuery"]["userErrors"], json!([]));
    let current = h
        .data(
            "{ currentBulkOperation { status objectCount } }",
            "",
            json!({}),
        )
        .await;
    assert_eq!(current["currentBulkOperation"]["status"], "RUNNING");
    h.sandbox.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------------------------

/// What a receiver got: headers (lowercased names) and the raw body.
#[derive(Debug, Clone)]
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A tiny webhook receiver on port 0 that answers `fail_first` requests with 503, then 200.
async fn receiver(fail_first: usize) -> (String, Arc<Mutex<Vec<Received>>>) {
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let failures = Arc::new(Mutex::new(fail_first));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/shopify", listener.local_addr().unwrap());
    let store = got.clone();
    let app = axum::Router::new().route(
        "/webhooks/shopify",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let store = store.clone();
                let failures = failures.clone();
                async move {
                    let mut left = failures.lock().unwrap();
                    if *left > 0 {
                        *left -= 1;
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    store.lock().unwrap().push(Received {
                        headers: headers
                            .iter()
                            .map(|(n, v)| {
                                (n.as_str().to_string(), v.to_str().unwrap_or("").to_string())
                            })
                            .collect(),
                        body: body.to_vec(),
                    });
                    StatusCode::OK
                }
            },
        ),
    );
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, got)
}

#[tokio::test]
async fn webhooks_are_signed_as_shopify_signs_them() {
    let (url, got) = receiver(0).await;
    let h = Harness::start(SandboxConfig {
        webhook_url: Some(url),
        webhook_secret: b"app-secret".to_vec(),
        ..SandboxConfig::default()
    })
    .await;
    let id = h.order(&[("MUG", 2, 0)]);
    h.sandbox.touch_order(&id).unwrap();
    h.sandbox.flush_webhooks().await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    for r in &got {
        assert_eq!(
            r.header("x-shopify-hmac-sha256"),
            crate::intake::shopify::sign(b"app-secret", &r.body),
            "signed over the raw bytes"
        );
        assert_eq!(
            r.header("x-shopify-shop-domain"),
            "sandbox-store.myshopify.com"
        );
        assert_eq!(r.header("x-shopify-api-version"), "2026-10");
        assert!(r.header("x-shopify-triggered-at").ends_with('Z'));
        assert_eq!(r.header("x-shopify-webhook-id").len(), 36);
    }
    assert_ne!(
        got[0].header("x-shopify-webhook-id"),
        got[1].header("x-shopify-webhook-id")
    );
    assert_eq!(got[0].header("x-shopify-topic"), "orders/create");
    assert_eq!(got[1].header("x-shopify-topic"), "orders/updated");
    let body = got[0].json();
    assert_eq!(body["admin_graphql_api_id"], id);
    assert_eq!(
        format!("gid://shopify/Order/{}", body["id"].as_u64().unwrap()),
        id
    );
    let line = &body["line_items"][0];
    assert_eq!(
        (
            line["sku"].as_str(),
            line["quantity"].as_i64(),
            line["current_quantity"].as_i64(),
            line["fulfillable_quantity"].as_i64()
        ),
        (Some("MUG"), Some(2), Some(2), Some(2))
    );
    assert!(line["variant_id"].as_u64().is_some());
    assert_eq!(line["requires_shipping"], true);
    assert!(
        body["updated_at"].as_str().unwrap().ends_with("-05:00"),
        "REST times are in the shop's zone"
    );
    assert!(got[1].json()["updated_at"].as_str() > body["updated_at"].as_str());
    assert!(
        String::from_utf8_lossy(&got[0].body).contains("\\/"),
        "'/' escaped as Shopify does"
    );
    assert_eq!(h.sandbox.stats().webhooks_sent, 2);
    h.sandbox.stop().await;
}

#[tokio::test]
async fn webhook_faults_drop_duplicate_and_retry() {
    let (url, got) = receiver(2).await;
    let h = Harness::start(SandboxConfig {
        webhook_url: Some(url.clone()),
        ..SandboxConfig::default()
    })
    .await;
    // Two 503s first: the delivery is retried and arrives.
    let id = h.order(&[("MUG", 1, 0)]);
    h.sandbox.flush_webhooks().await;
    assert_eq!(got.lock().unwrap().len(), 1);
    assert_eq!(h.sandbox.stats().webhook_retries, 2);

    h.sandbox.set_faults(Faults {
        webhook_drop: 1.0,
        ..Faults::default()
    });
    for _ in 0..3 {
        h.sandbox.touch_order(&id).unwrap();
    }
    h.sandbox.flush_webhooks().await;
    assert_eq!(got.lock().unwrap().len(), 1, "dropped");
    assert_eq!(h.sandbox.stats().webhooks_dropped, 3);

    h.sandbox.set_faults(Faults {
        webhook_duplicate: 1.0,
        ..Faults::default()
    });
    h.sandbox.touch_order(&id).unwrap();
    h.sandbox.flush_webhooks().await;
    {
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[1].header("x-shopify-webhook-id"),
            got[2].header("x-shopify-webhook-id"),
            "a duplicate repeats the id"
        );
        assert_eq!(got[1].body, got[2].body);
    }
    assert_eq!(h.sandbox.stats().webhooks_duplicated, 1);

    // Reordering shuffles what was queued together.
    h.sandbox.set_faults(Faults {
        webhook_reorder: true,
        ..Faults::default()
    });
    let ids: Vec<String> = (0..20).map(|_| h.order(&[("MUG", 1, 0)])).collect();
    h.sandbox.flush_webhooks().await;
    let order: Vec<String> = got.lock().unwrap()[3..]
        .iter()
        .map(|r| {
            r.json()["admin_graphql_api_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(order.len(), 20);
    assert_ne!(order, ids, "shuffled");
    let mut sorted = order.clone();
    sorted.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(sorted, expected, "every one delivered once");

    // A receiver that is gone: retried, then given up and counted.
    h.sandbox.set_faults(Faults::default());
    h.sandbox
        .set_webhook_url(Some("http://127.0.0.1:9/webhooks/shopify".into()));
    h.sandbox.touch_order(&id).unwrap();
    h.sandbox.flush_webhooks().await;
    assert_eq!(h.sandbox.stats().webhooks_failed, 1);
    h.sandbox.stop().await;
}

#[tokio::test]
async fn fulfillment_webhooks_and_subscriptions() {
    let (url, got) = receiver(0).await;
    let h = Harness::default().await;
    // No webhook_url: only what a subscription asks for is sent.
    let body = h
        .data(
            WEBHOOK_SUBSCRIPTION_CREATE,
            "WebhookSubscriptionCreate",
            json!({ "topic": "ORDERS_FULFILLED", "webhookSubscription": { "uri": url, "format": "JSON" } }),
        )
        .await;
    assert_eq!(body["webhookSubscriptionCreate"]["userErrors"], json!([]));
    let id = h.order(&[("MUG", 1, 0)]);
    let fo = h.sandbox.fulfillment_order_ids(&id)[0].clone();
    fulfil(&h, json!([{ "fulfillmentOrderId": fo }]), json!(null)).await;
    h.sandbox.flush_webhooks().await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("x-shopify-topic"), "orders/fulfilled");
    assert_eq!(got[0].json()["fulfillment_status"], "fulfilled");
    assert_eq!(got[0].json()["line_items"][0]["fulfillable_quantity"], 0);
    h.sandbox.stop().await;
}

#[tokio::test]
async fn orders_edited_carries_the_edit_not_the_order() {
    let (url, got) = receiver(0).await;
    let h = Harness::start(SandboxConfig {
        webhook_url: Some(url),
        ..SandboxConfig::default()
    })
    .await;
    let id = h.order(&[("MUG", 1, 0)]);
    h.sandbox
        .edit_order(
            &id,
            OrderEdit::SetQuantity {
                sku: "MUG".into(),
                quantity: 3,
            },
        )
        .unwrap();
    h.sandbox.flush_webhooks().await;
    let got = got.lock().unwrap().clone();
    let topics: Vec<&str> = got.iter().map(|r| r.header("x-shopify-topic")).collect();
    assert_eq!(
        topics,
        vec!["orders/create", "orders/edited", "orders/updated"]
    );
    let edit = got[1].json();
    assert_eq!(
        format!(
            "gid://shopify/Order/{}",
            edit["order_edit"]["order_id"].as_u64().unwrap()
        ),
        id
    );
    assert_eq!(edit["order_edit"]["line_items"]["additions"][0]["delta"], 2);
    assert_eq!(got[2].json()["line_items"][0]["current_quantity"], 3);
    h.sandbox.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The control API
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_control_api_drives_the_shop_over_http() {
    let h = Harness::default().await;
    let base = format!("{}/_sandbox", h.sandbox.base_url());
    let c = &h.http;
    let created: Value = c
        .post(format!("{base}/orders"))
        .json(&json!({ "lines": [{ "sku": "MUG", "quantity": 2 }, { "sku": "CAM", "quantity": 1, "location": 1 }] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let number = id.rsplit('/').next().unwrap().to_string();
    let snapshot: Value = c
        .get(format!("{base}/orders/{number}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(snapshot["lineItems"]["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(snapshot, h.sandbox.order_snapshot(&id).unwrap());

    let r = c
        .post(format!("{base}/orders/{number}/edit"))
        .json(&json!({ "op": "set_quantity", "sku": "MUG", "quantity": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let fo = h.sandbox.fulfillment_order_ids(&id)[0].clone();
    let fo_number = fo.rsplit('/').next().unwrap().to_string();
    let held: Value = c
        .post(format!("{base}/fulfillment_orders/{fo_number}/hold"))
        .json(&json!({ "reason": "OTHER" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        held["id"]
            .as_str()
            .unwrap()
            .starts_with("gid://shopify/FulfillmentHold/")
    );
    assert_eq!(
        c.post(format!("{base}/fulfillment_orders/{fo_number}/release"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let fulfilled: Value = c
        .post(format!("{base}/fulfillment_orders/{fo_number}/fulfill"))
        .json(&json!({ "tracking_number": "9400" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        fulfilled["id"]
            .as_str()
            .unwrap()
            .starts_with("gid://shopify/Fulfillment/")
    );
    let made: Value = c
        .get(format!("{base}/orders/{number}/fulfillments"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(made[0]["origin"], "outside");
    assert_eq!(
        c.post(format!("{base}/orders/{number}/touch"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let r = c
        .post(format!("{base}/orders/{number}/cancel"))
        .json(&json!({ "reason": "NOT_A_REASON" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        c.post(format!("{base}/orders/1/touch"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );

    let sampled: Value = c
        .post(format!("{base}/orders/sample"))
        .json(&json!({ "n": 5, "seed": 1 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sampled["ids"].as_array().unwrap().len(), 5);
    let all: Value = c
        .get(format!("{base}/orders"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["ids"].as_array().unwrap().len(), 6);

    let r = c
        .put(format!("{base}/faults"))
        .json(&json!({ "http_429": 1.0 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let faults: Value = c
        .get(format!("{base}/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(faults["http_429"], 1.0);
    assert_eq!(
        h.post_with(
            Some(TOKEN),
            ORDER_SCAN,
            "OrderScan",
            json!({ "first": 1, "query": "" })
        )
        .await
        .status,
        StatusCode::TOO_MANY_REQUESTS
    );
    c.put(format!("{base}/faults"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();

    let bucket: Value = c
        .put(format!("{base}/bucket"))
        .json(&json!({ "currently_available": 10 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        (10.0..11.0).contains(&bucket["currently_available"].as_f64().unwrap()),
        "{bucket}"
    );
    c.post(format!("{base}/clock/advance"))
        .json(&json!({ "seconds": 1.0 }))
        .send()
        .await
        .unwrap();
    let bucket: Value = c
        .get(format!("{base}/bucket"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(bucket["currently_available"].as_f64().unwrap() >= 110.0);
    let stats: Value = c
        .get(format!("{base}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["http_429"], 1);
    assert_eq!(
        c.put(format!("{base}/webhook_url"))
            .json(&json!({ "url": null }))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        c.post(format!("{base}/webhooks/flush"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    h.sandbox.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Scale
// ---------------------------------------------------------------------------------------------

/// The benchmarks' scale: 100k orders, scanned and exported in bulk, while the shop keeps
/// answering. Slow in debug builds: `cargo test --release --lib sandbox -- --ignored`.
#[tokio::test]
#[ignore]
async fn a_bulk_run_over_100k_orders_keeps_the_shop_responsive() {
    let h = Harness::start(SandboxConfig {
        plan: Plan::Enterprise,
        ..SandboxConfig::default()
    })
    .await;
    let orders = sample_orders(100_000, 1);
    let expected_lines: usize = orders
        .iter()
        .map(|o| {
            let locations: std::collections::BTreeSet<usize> =
                o.lines.iter().map(|l| l.location).collect();
            1 + o.lines.len() + locations.len()
        })
        .sum();
    for order in orders {
        h.sandbox.create_order(order);
    }
    let inner = r#"{ orders { edges { node { id updatedAt
        lineItems { edges { node { id sku quantity } } }
        fulfillmentOrders { edges { node { id status } } } } } } }"#;
    let body = h
        .data(
            BULK_OPERATION_RUN_QUERY,
            "BulkOperationRunQuery",
            json!({ "query": inner }),
        )
        .await;
    let op = body["bulkOperationRunQuery"]["bulkOperation"]["id"].clone();
    let mut slowest = Duration::ZERO;
    let done = loop {
        let started = std::time::Instant::now();
        h.data(
            ORDER_SCAN,
            "OrderScan",
            json!({ "first": 250, "query": "" }),
        )
        .await;
        slowest = slowest.max(started.elapsed());
        let poll = h
            .data(BULK_OPERATION, "BulkOperation", json!({ "id": op }))
            .await;
        if poll["bulkOperation"]["status"] == "COMPLETED" {
            break poll["bulkOperation"].clone();
        }
    };
    assert_eq!(done["objectCount"], expected_lines.to_string());
    let text = reqwest::get(done["url"].as_str().unwrap())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text.lines().count(), expected_lines);
    assert!(
        slowest < Duration::from_secs(1),
        "a scan waited {slowest:?} behind the bulk run"
    );
    h.sandbox.stop().await;
}

/// The outbox's read-back after a lost answer (`graphql/FulfillmentEvents.graphql`): the newest
/// events first by the time they happened (not the order they were posted in), cut by `first`,
/// and the tracking numbers an update put in place of the old ones.
#[tokio::test]
async fn fulfillment_events_reads_the_newest_events_and_the_current_numbers() {
    const FULFILLMENT_EVENTS: &str = include_str!("../../../graphql/FulfillmentEvents.graphql");
    let h = Harness::default().await;
    let id = h.order(&[("MUG", 1, 0)]);
    let fo = h.sandbox.fulfillment_order_ids(&id)[0].clone();
    let (payload, _) = fulfil(
        &h,
        json!([{ "fulfillmentOrderId": fo }]),
        json!({ "company": "USPS", "number": "9400100000000000000000" }),
    )
    .await;
    let fulfillment = payload["fulfillment"]["id"].as_str().unwrap().to_string();
    // Posted out of order: the pickup arrives after the transit scan.
    for (status, at) in [
        ("IN_TRANSIT", "2026-11-26T08:00:00Z"),
        ("CARRIER_PICKED_UP", "2026-11-25T10:00:00+08:00"),
        ("DELIVERED", "2026-11-30T09:00:00Z"),
    ] {
        h.data(
            FULFILLMENT_EVENT_CREATE,
            "FulfillmentEventCreate",
            json!({ "fulfillmentEvent": { "fulfillmentId": fulfillment, "status": status, "happenedAt": at } }),
        )
        .await;
    }
    h.data(
        FULFILLMENT_TRACKING_INFO_UPDATE,
        "FulfillmentTrackingInfoUpdate",
        json!({ "fulfillmentId": fulfillment, "trackingInfoInput": { "company": "China Post", "numbers": ["LX2CN", "LX1CN"] }, "notifyCustomer": false }),
    )
    .await;

    let data = h
        .data(
            FULFILLMENT_EVENTS,
            "FulfillmentEvents",
            json!({ "id": fulfillment }),
        )
        .await;
    let node = &data["nodes"][0];
    assert_eq!(node["__typename"], "Fulfillment");
    assert_eq!(
        node["trackingInfo"],
        json!([{ "number": "LX2CN" }, { "number": "LX1CN" }]),
        "replaced, not added to"
    );
    let listed: Vec<(&str, &str)> = node["events"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["status"].as_str().unwrap(),
                e["happenedAt"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            ("DELIVERED", "2026-11-30T09:00:00Z"),
            ("IN_TRANSIT", "2026-11-26T08:00:00Z"),
            ("CARRIER_PICKED_UP", "2026-11-25T02:00:00Z"),
        ]
    );

    // `first` cuts the reversed list: the newest ones stay.
    let newest = h
        .data(
            "query Newest($id: ID!) { nodes(ids: [$id]) { ... on Fulfillment { events(first: 2, reverse: true) { nodes { status } pageInfo { hasNextPage } } } } }",
            "Newest",
            json!({ "id": fulfillment }),
        )
        .await;
    assert_eq!(
        newest["nodes"][0]["events"],
        json!({ "nodes": [{ "status": "DELIVERED" }, { "status": "IN_TRANSIT" }], "pageInfo": { "hasNextPage": true } })
    );
    // Without `reverse`, the oldest first.
    let oldest = h
        .data(
            "query Oldest($id: ID!) { nodes(ids: [$id]) { ... on Fulfillment { events(first: 1) { nodes { status } } } } }",
            "Oldest",
            json!({ "id": fulfillment }),
        )
        .await;
    assert_eq!(
        oldest["nodes"][0]["events"]["nodes"],
        json!([{ "status": "CARRIER_PICKED_UP" }])
    );
    h.sandbox.stop().await;
}
