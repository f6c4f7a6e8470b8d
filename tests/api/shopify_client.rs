//! The GraphQL client against a scripted server: each answer Shopify can give, and what the client
//! makes of it (retry, wait, or a typed permanent error).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use shipgate::config::Config;
use shipgate::shopify::client::{ClientSettings, ShopifyClient, ShopifyError};
use shipgate::shopify::ops::{OrderScan, order_scan};
use std::sync::atomic::Ordering;

/// One scripted answer: status, extra headers, JSON body.
type Answer = (u16, Vec<(&'static str, String)>, Value);

#[derive(Clone)]
struct Script {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    seen_tokens: Arc<Mutex<Vec<String>>>,
    grants: Arc<Mutex<u32>>,
}

async fn graphql(State(s): State<Script>, headers: axum::http::HeaderMap) -> Response {
    let token = headers
        .get("x-shopify-access-token")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    s.seen_tokens.lock().unwrap().push(token);
    let (status, extra, body) = s
        .answers
        .lock()
        .unwrap()
        .pop_front()
        .expect("the client sent more requests than scripted");
    let mut response = (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
    for (k, v) in extra {
        response.headers_mut().insert(k, v.parse().unwrap());
    }
    response
}

async fn grant(State(s): State<Script>) -> axum::Json<Value> {
    let mut n = s.grants.lock().unwrap();
    *n += 1;
    axum::Json(
        json!({"access_token": format!("granted-{n}"), "scope": "read_orders", "expires_in": 86399}),
    )
}

fn cost(requested: f64, available: f64) -> Value {
    json!({"cost": {"requestedQueryCost": requested, "actualQueryCost": requested,
        "throttleStatus": {"maximumAvailable": 2000.0, "currentlyAvailable": available, "restoreRate": 100.0}}})
}

fn ok_page() -> Value {
    json!({"data": {"orders": {"pageInfo": {"hasNextPage": false, "endCursor": null},
        "nodes": [{"id": "gid://shopify/Order/9007199254740993", "updatedAt": "2026-11-25T10:00:00Z"}]}},
        "extensions": cost(252.0, 1748.0)})
}

async fn client_for(answers: Vec<Answer>, grant_auth: bool) -> (ShopifyClient, Script) {
    let script = Script {
        answers: Arc::new(Mutex::new(answers.into())),
        seen_tokens: Arc::default(),
        grants: Arc::default(),
    };
    let app = Router::new()
        .route("/admin/api/2026-10/graphql.json", post(graphql))
        .route("/admin/oauth/access_token", post(grant))
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let auth = if grant_auth {
        "client_id = \"id\"\nclient_secret = { value = \"secret\" }"
    } else {
        "access_token = { value = \"shpat_static\" }"
    };
    let text = format!(
        r#"
[store]
path = "store"
[[shops]]
domain = "scripted.myshopify.com"
admin_base_url = "http://{addr}"
{auth}
webhook_secrets = [{{ value = "x" }}]
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml_str(&text, dir.path()).unwrap().config;
    let settings = ClientSettings {
        base_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        max_attempts: 4,
        requests_per_second: 1000,
        ..ClientSettings::default()
    };
    (
        ShopifyClient::new(reqwest::Client::new(), &config.shops[0], settings),
        script,
    )
}

async fn scan(client: &ShopifyClient) -> Result<order_scan::ResponseData, ShopifyError> {
    client
        .run::<OrderScan>(
            order_scan::Variables {
                first: 250,
                after: None,
                query: "updated_at:>='2026-11-01T00:00:00Z'".into(),
            },
            1,
        )
        .await
}

fn throttled() -> Value {
    json!({"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
        "extensions": {"cost": {"requestedQueryCost": 252.0, "actualQueryCost": null,
        "throttleStatus": {"maximumAvailable": 2000.0, "currentlyAvailable": 250.0, "restoreRate": 100.0}}}})
}

#[tokio::test]
async fn throttled_429_and_5xx_are_retried_until_the_answer_comes() {
    let (client, script) = client_for(
        vec![
            (200, vec![], throttled()),
            (429, vec![("retry-after", "0".into())], json!({"errors": "Throttled"})),
            (503, vec![], json!({})),
            (
                200,
                vec![],
                json!({"errors": [{"message": "Internal error", "extensions": {"code": "INTERNAL_SERVER_ERROR"}}]}),
            ),
            (200, vec![], ok_page()),
        ],
        false,
    )
    .await;
    let data = scan(&client).await.expect("retried to success");
    assert_eq!(
        data.orders.nodes[0].id, "gid://shopify/Order/9007199254740993",
        "ids above 2^53 intact"
    );
    let stats = client.stats();
    assert_eq!(stats.requests.load(Ordering::Relaxed), 5);
    assert_eq!(stats.throttled.load(Ordering::Relaxed), 1);
    assert_eq!(stats.http_429.load(Ordering::Relaxed), 1);
    assert_eq!(stats.server_errors.load(Ordering::Relaxed), 2);
    assert!(script.answers.lock().unwrap().is_empty());
    // The budget now follows the server's last reading.
    let budget = client.budget().unwrap();
    assert_eq!(budget.maximum, 2000.0);
    assert_eq!(client.learned_cost("OrderScan"), Some(252.0));
}

#[tokio::test]
async fn permanent_errors_are_typed_and_not_retried() {
    let cases = [
        (
            json!({"errors": [{"message": "Query cost is 1502, which exceeds the single query max cost limit (1000).",
                "extensions": {"code": "MAX_COST_EXCEEDED", "cost": 1502}}],
                "extensions": {"cost": {"requestedQueryCost": 1502.0, "actualQueryCost": null}}}),
            "MaxCostExceeded",
        ),
        (
            json!({"errors": [{"message": "Access denied for orders field. Required access: `read_orders` access scope.",
                "extensions": {"code": "ACCESS_DENIED"}}]}),
            "AccessDenied",
        ),
        (
            json!({"data": {"orders": null, "x": {"userErrors": [{"field": ["id"], "message": "Fulfillment order does not exist."}]}}}),
            "UserErrors",
        ),
    ];
    for (body, expected) in cases {
        let (client, _) = client_for(vec![(200, vec![], body)], false).await;
        let err = scan(&client).await.unwrap_err();
        assert!(format!("{err:?}").starts_with(expected), "{err:?}");
        assert!(err.is_permanent());
        assert_eq!(
            client.stats().requests.load(Ordering::Relaxed),
            1,
            "{expected}"
        );
    }
    let (client, _) = client_for(vec![(402, vec![], json!({}))], false).await;
    assert!(matches!(
        scan(&client).await,
        Err(ShopifyError::ShopUnavailable { status: 402, .. })
    ));
}

#[tokio::test]
async fn transient_failures_give_up_after_the_attempt_cap() {
    let (client, _) = client_for(vec![(502, vec![], json!({})); 4], false).await;
    let err = scan(&client).await.unwrap_err();
    assert!(
        matches!(err, ShopifyError::Exhausted { attempts: 4, .. }),
        "{err}"
    );
    assert!(!err.is_permanent());
}

#[tokio::test]
async fn a_granted_token_is_fetched_once_and_renewed_once_after_a_401() {
    let (client, script) = client_for(
        vec![
            (200, vec![], ok_page()),
            (
                401,
                vec![],
                json!({"errors": "[API] Invalid API key or access token"}),
            ),
            (200, vec![], ok_page()),
            (
                401,
                vec![],
                json!({"errors": "[API] Invalid API key or access token"}),
            ),
            (
                401,
                vec![],
                json!({"errors": "[API] Invalid API key or access token"}),
            ),
        ],
        true,
    )
    .await;
    scan(&client).await.unwrap();
    scan(&client).await.expect("a 401 renews the token once");
    let err = scan(&client).await.unwrap_err();
    assert!(matches!(err, ShopifyError::Unauthorized { .. }), "{err}");
    let tokens = script.seen_tokens.lock().unwrap().clone();
    assert_eq!(
        tokens,
        [
            "granted-1",
            "granted-1",
            "granted-2",
            "granted-2",
            "granted-3"
        ]
    );
}

#[tokio::test]
async fn a_mutation_without_an_answer_is_an_unknown_outcome_not_a_blind_retry() {
    use shipgate::shopify::convert::hold_variables;
    use shipgate::shopify::ops::FulfillmentOrderHold;
    let held = json!({"data": {"fulfillmentOrderHold": {
        "fulfillmentHold": {"id": "gid://shopify/FulfillmentHold/1", "handle": "exc-1", "reason": "OTHER"},
        "fulfillmentOrder": {"id": "gid://shopify/FulfillmentOrder/1", "status": "ON_HOLD"},
        "userErrors": []}}, "extensions": cost(10.0, 1990.0)});
    let vars = || {
        hold_variables(
            "gid://shopify/FulfillmentOrder/1",
            "OTHER",
            "check failed",
            "exc-1",
        )
        .unwrap()
    };
    // A 503 may come after the hold was placed: the client must not send it again.
    let (client, script) = client_for(
        vec![(503, vec![], json!({})), (200, vec![], held.clone())],
        false,
    )
    .await;
    let err = client
        .run::<FulfillmentOrderHold>(vars(), 1)
        .await
        .unwrap_err();
    assert!(matches!(err, ShopifyError::UnknownOutcome { .. }), "{err}");
    assert!(!err.is_permanent());
    assert_eq!(script.answers.lock().unwrap().len(), 1, "sent once");
    // THROTTLED means it did not run: waiting and sending again is safe.
    let (client, _) =
        client_for(vec![(200, vec![], throttled()), (200, vec![], held)], false).await;
    let data = client.run::<FulfillmentOrderHold>(vars(), 1).await.unwrap();
    assert!(data.fulfillment_order_hold.is_some());
}
