//! The sandbox's HTTP routes: the Admin GraphQL endpoint, the client-credentials grant, the
//! bulk-operation result files, and the JSON control API under `/_sandbox/`:
//!
//! | method | path | body → answer |
//! |---|---|---|
//! | GET | `/_sandbox/orders` | → `{"ids": [gid…]}` |
//! | POST | `/_sandbox/orders` | `NewOrder` → `{"id": gid}` |
//! | POST | `/_sandbox/orders/sample` | `{"n", "seed"}` → `{"ids": [gid…]}` |
//! | GET | `/_sandbox/orders/{id}` | → the order snapshot |
//! | GET | `/_sandbox/orders/{id}/fulfillments` | → `[fulfillment…]` |
//! | POST | `/_sandbox/orders/{id}/edit` | `OrderEdit` (`{"op": "set_quantity", …}`) → `{}` |
//! | POST | `/_sandbox/orders/{id}/cancel` | `{"reason"}` → `{}` |
//! | POST | `/_sandbox/orders/{id}/touch` | → `{}` |
//! | POST | `/_sandbox/fulfillment_orders/{id}/hold` | `{"reason"}` → `{"id": hold gid}` |
//! | POST | `/_sandbox/fulfillment_orders/{id}/release` | → `{}` |
//! | POST | `/_sandbox/fulfillment_orders/{id}/fulfill` | `{"tracking_number"}` → `{"id"}` |
//! | GET, PUT | `/_sandbox/faults` | `Faults` |
//! | GET, PUT | `/_sandbox/bucket` | `BucketState` (PUT sets `currently_available`) |
//! | GET | `/_sandbox/stats` | → `SandboxStats` |
//! | PUT | `/_sandbox/webhook_url` | `{"url": string or null}` |
//! | POST | `/_sandbox/webhooks/flush` | → `{}` once every queued webhook was attempted |
//! | POST | `/_sandbox/clock/advance` | `{"seconds"}` → `{}` |
//!
//! `{id}` is a gid (percent-encoded) or its number. Errors answer 400 or 404 with `{"error"}`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::engine::{self, OpKind};
use super::resolve::{self, Ctx};
use super::{
    BucketState, Faults, Inner, NewOrder, OrderEdit, SandboxError, SandboxShopify, Shared,
};

/// Queries above this many requested points are refused outright.
const MAX_QUERY_COST: u64 = 1000;
/// API versions served as asked; others are served by the oldest, as Shopify does.
const SUPPORTED_VERSIONS: [&str; 5] = ["2026-01", "2026-04", "2026-07", "2026-10", "unstable"];
const RATE_LIMIT_DOCS: &str = "https://shopify.dev/api/usage/rate-limits";

type Shop = State<Arc<Inner>>;

/// The router of every route above.
pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/admin/api/{version}/graphql.json", post(graphql))
        .route("/admin/oauth/access_token", post(access_token))
        .route("/_sandbox/bulk/{file}", get(bulk_file))
        .route("/_sandbox/orders", get(list_orders).post(create_order))
        .route("/_sandbox/orders/sample", post(sample))
        .route("/_sandbox/orders/{id}", get(snapshot))
        .route("/_sandbox/orders/{id}/fulfillments", get(fulfillments))
        .route("/_sandbox/orders/{id}/edit", post(edit))
        .route("/_sandbox/orders/{id}/cancel", post(cancel))
        .route("/_sandbox/orders/{id}/touch", post(touch))
        .route("/_sandbox/fulfillment_orders/{id}/hold", post(hold))
        .route("/_sandbox/fulfillment_orders/{id}/release", post(release))
        .route("/_sandbox/fulfillment_orders/{id}/fulfill", post(fulfill))
        .route("/_sandbox/faults", get(get_faults).put(put_faults))
        .route("/_sandbox/bucket", get(get_bucket).put(put_bucket))
        .route("/_sandbox/stats", get(stats))
        .route("/_sandbox/webhook_url", axum::routing::put(put_webhook_url))
        .route("/_sandbox/webhooks/flush", post(flush))
        .route("/_sandbox/clock/advance", post(advance))
        .with_state(inner)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        )],
        body.to_string(),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// GraphQL
// ---------------------------------------------------------------------------------------------

fn throttle_status(bucket: &BucketState) -> Value {
    // Shopify sends the maximum and rate as floats and the level as an integer: clients must
    // accept both.
    json!({
        "maximumAvailable": bucket.maximum_available,
        "currentlyAvailable": bucket.currently_available.floor() as i64,
        "restoreRate": bucket.restore_rate,
    })
}

fn cost_extension(requested: u64, actual: Option<u64>, bucket: &BucketState) -> Value {
    json!({
        "cost": {
            "requestedQueryCost": requested,
            "actualQueryCost": actual,
            "throttleStatus": throttle_status(bucket),
        }
    })
}

fn errors_response(errors: Vec<Value>, requested: u64, bucket: &BucketState) -> Response {
    json_response(
        StatusCode::OK,
        &json!({ "errors": errors, "extensions": cost_extension(requested, None, bucket) }),
    )
}

fn throttled(requested: u64, bucket: &BucketState) -> Response {
    errors_response(
        vec![json!({
            "message": "Throttled",
            "extensions": { "code": "THROTTLED", "documentation": RATE_LIMIT_DOCS },
        })],
        requested,
        bucket,
    )
}

fn with_version(mut response: Response, version: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(version) {
        response.headers_mut().insert("X-Shopify-API-Version", v);
    }
    response
}

/// Reads the request body: JSON `{query, variables, operationName}` or a raw document.
fn read_request(
    headers: &HeaderMap,
    body: &[u8],
) -> Option<(String, Map<String, Value>, Option<String>)> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("application/graphql") {
        return Some((String::from_utf8(body.to_vec()).ok()?, Map::new(), None));
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    let query = value.get("query")?.as_str()?.to_string();
    let variables = match value.get("variables") {
        Some(Value::Object(map)) => map.clone(),
        Some(Value::String(s)) if !s.is_empty() => serde_json::from_str(s).ok()?,
        _ => Map::new(),
    };
    let name = value
        .get("operationName")
        .and_then(Value::as_str)
        .map(str::to_string);
    Some((query, variables, name))
}

fn authorized(inner: &Inner, shared: &Shared, headers: &HeaderMap) -> bool {
    if !shared.installed {
        return false;
    }
    let Some(token) = headers
        .get("X-Shopify-Access-Token")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    inner.static_tokens.iter().any(|t| t == token)
        || shared
            .tokens
            .get(token)
            .is_some_and(|expiry| *expiry > inner.clock.now())
}

async fn graphql(
    State(inner): Shop,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let served = if SUPPORTED_VERSIONS.contains(&version.as_str()) {
        version.clone()
    } else {
        SUPPORTED_VERSIONS[0].to_string()
    };
    let (response, bulk_runs) = graphql_inner(&inner, &headers, &body);
    for id in bulk_runs {
        tokio::spawn(run_bulk(inner.clone(), id));
    }
    with_version(response, &served)
}

/// Finishes a bulk operation's run in chunks, letting other requests in between.
async fn run_bulk(inner: Arc<Inner>, id: u64) {
    loop {
        let now_ms = inner.clock.unix_ms();
        if resolve::bulk_step(&mut inner.shared().state, id, now_ms) {
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// Answers a GraphQL request; also returns the bulk operations to run on in the background.
fn graphql_inner(inner: &Inner, headers: &HeaderMap, body: &[u8]) -> (Response, Vec<u64>) {
    let response = graphql_locked(inner, headers, body);
    let started = std::mem::take(&mut inner.shared().state.bulk_started);
    (response, started)
}

fn graphql_locked(inner: &Inner, headers: &HeaderMap, body: &[u8]) -> Response {
    let now = inner.clock.now();
    let now_ms = inner.clock.unix_ms();
    let mut guard = inner.shared();
    let shared = &mut *guard;
    shared.stats.requests += 1;
    if !authorized(inner, shared, headers) {
        shared.stats.unauthorized += 1;
        return json_response(
            StatusCode::UNAUTHORIZED,
            &json!({ "errors": "[API] Invalid API key or access token (unrecognized login or wrong password)" }),
        );
    }
    // Every request draws the same number of times, so the fault sequence depends on the seed
    // and the number of requests only, not on which faults are switched on.
    let draws = [
        shared.fault_rng.unit(),
        shared.fault_rng.unit(),
        shared.fault_rng.unit(),
        shared.fault_rng.unit(),
        shared.fault_rng.unit(),
    ];
    let faults = shared.faults.clone();
    if draws[0] < faults.http_5xx {
        shared.stats.http_5xx += 1;
        return server_error(draws[4]);
    }
    if draws[1] < faults.http_429 {
        shared.stats.http_429 += 1;
        let mut response = json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({ "errors": "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service." }),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    let Some((query, variables, operation_name)) = read_request(headers, body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({ "errors": { "query": "Required parameter missing or invalid" } }),
        );
    };
    let bucket = inner.bucket_state(shared);
    let op = match engine::prepare(&query, &variables, operation_name.as_deref()) {
        Ok(op) => op,
        Err(errors) => return errors_response(errors, 0, &bucket),
    };
    let op_name = op
        .name
        .clone()
        .or_else(|| op.root_fields().first().map(|f| f.name.clone()))
        .unwrap_or_else(|| "anonymous".into());
    *shared.stats.per_operation.entry(op_name).or_default() += 1;
    let requested = engine::requested_cost(&op);
    let errors = resolve::validate(&op);
    if !errors.is_empty() {
        return errors_response(errors, requested, &bucket);
    }
    if requested > MAX_QUERY_COST {
        shared.stats.max_cost_exceeded += 1;
        return errors_response(
            vec![json!({
                "message": format!(
                    "Query cost is {requested}, which exceeds the single query max cost limit ({MAX_QUERY_COST}).\n\nSee {RATE_LIMIT_DOCS} for more information on how the\ncost of a query is calculated.\n\nTo query larger amounts of data with fewer limits, bulk operations should be used instead.\nSee https://shopify.dev/tutorials/perform-bulk-operations-with-admin-api for usage details.\n"
                ),
                "extensions": {
                    "code": "MAX_COST_EXCEEDED",
                    "cost": requested,
                    "maxCost": MAX_QUERY_COST,
                    "documentation": RATE_LIMIT_DOCS,
                },
            })],
            requested,
            &bucket,
        );
    }
    if draws[2] < faults.throttled {
        shared.stats.throttled_forced += 1;
        return throttled(requested, &bucket);
    }
    if !shared.bucket.try_take(requested as f64, now) {
        shared.stats.throttled_natural += 1;
        return throttled(requested, &bucket);
    }
    let ctx = Ctx {
        now_ms,
        base_url: &inner.base_url,
        plan_name: inner.plan.display_name(),
    };
    shared.state.emitting = shared.webhook_url.is_some() || !shared.state.subscriptions.is_empty();
    let executed = resolve::execute(&mut shared.state, &op, &ctx);
    inner.queue_outbox(shared);
    let actual = executed.actual_cost.min(requested);
    shared.bucket.refund((requested - actual) as f64, now);
    shared.stats.points_requested += requested;
    shared.stats.points_actual += actual;
    if op.kind == OpKind::Mutation && draws[3] < faults.lost_response {
        // The effect happened; only the answer is lost.
        shared.stats.http_5xx += 1;
        shared.stats.lost_responses += 1;
        return (StatusCode::BAD_GATEWAY, "502 Bad Gateway").into_response();
    }
    let bucket = inner.bucket_state(shared);
    let mut extensions = cost_extension(requested, Some(actual), &bucket);
    if !executed.search.is_empty() {
        extensions["search"] = Value::Array(executed.search);
    }
    let mut out = Map::new();
    if !executed.errors.is_empty() {
        out.insert("errors".into(), Value::Array(executed.errors));
    }
    if let Some(data) = executed.data {
        out.insert("data".into(), data);
    }
    out.insert("extensions".into(), extensions);
    json_response(StatusCode::OK, &Value::Object(out))
}

/// One of the 5xx answers Shopify's edge gives.
fn server_error(draw: f64) -> Response {
    if draw < 1.0 / 3.0 {
        (StatusCode::BAD_GATEWAY, "502 Bad Gateway").into_response()
    } else if draw < 2.0 / 3.0 {
        (StatusCode::SERVICE_UNAVAILABLE, "503 Service Unavailable").into_response()
    } else {
        // The request id comes from the same draw, so a 500 draws no more than a 502 does.
        let request_id = format!("{:016x}", draw.to_bits());
        json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({
                "errors": [{
                    "message": format!("Internal error. Looks like something went wrong on our end.\nRequest ID: {request_id} (include this in support requests)."),
                    "extensions": { "code": "INTERNAL_SERVER_ERROR", "requestId": request_id },
                }]
            }),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Client-credentials grant
// ---------------------------------------------------------------------------------------------

/// Decodes `application/x-www-form-urlencoded`.
fn form_decode(body: &[u8]) -> Vec<(String, String)> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    fn decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push(high * 16 + low);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                },
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

async fn access_token(State(inner): Shop, headers: HeaderMap, body: Bytes) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let params: Vec<(String, String)> = if is_json {
        serde_json::from_slice::<Map<String, Value>>(&body)
            .map(|m| {
                m.into_iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        form_decode(&body)
    };
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if get("grant_type") != Some("client_credentials") {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({ "error": "unsupported_grant_type", "error_description": "The authorization grant type is not supported by the authorization server." }),
        );
    }
    if get("client_id") != Some(inner.client_id.as_str())
        || get("client_secret") != Some(inner.client_secret.as_str())
    {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({
                "error": "invalid_client",
                "error_description": "Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method.",
            }),
        );
    }
    if !inner.shared().installed {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({
                "error": "invalid_request",
                "error_description": "The app is not installed on this shop.",
            }),
        );
    }
    let expiry = inner.clock.now() + inner.token_ttl;
    let token = {
        let mut shared = inner.shared();
        let token = format!("shpat_{}", shared.token_rng.hex(32));
        shared.tokens.insert(token.clone(), expiry);
        shared.stats.tokens_granted += 1;
        token
    };
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": token,
            "scope": "read_orders,read_merchant_managed_fulfillment_orders,write_merchant_managed_fulfillment_orders",
            "expires_in": inner.token_ttl.as_secs(),
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// Bulk results and the control API
// ---------------------------------------------------------------------------------------------

/// Serves a completed bulk operation's JSONL. Like Shopify's signed storage URL it needs no
/// access token.
async fn bulk_file(State(inner): Shop, Path(file): Path<String>) -> Response {
    let Some(id) = file
        .strip_suffix(".jsonl")
        .and_then(|n| n.parse::<u64>().ok())
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let result = resolve::bulk_result(&inner.shared().state, id);
    match result {
        Some(bytes) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/jsonl"),
            )],
            bytes.as_ref().clone(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn handle(inner: &Arc<Inner>) -> SandboxShopify {
    SandboxShopify {
        inner: inner.clone(),
        cancel: tokio_util::sync::CancellationToken::new(),
        tasks: Default::default(),
    }
}

fn error_response(e: SandboxError) -> Response {
    let status = match e {
        SandboxError::UnknownOrder(_) | SandboxError::UnknownFulfillmentOrder(_) => {
            StatusCode::NOT_FOUND
        }
        SandboxError::Invalid(_) => StatusCode::BAD_REQUEST,
    };
    json_response(status, &json!({ "error": e.to_string() }))
}

fn bad_request(message: impl std::fmt::Display) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({ "error": message.to_string() }),
    )
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

fn order_gid(id: &str) -> String {
    if id.starts_with("gid://") {
        id.to_string()
    } else {
        format!("gid://shopify/Order/{id}")
    }
}

fn fo_gid(id: &str) -> String {
    if id.starts_with("gid://") {
        id.to_string()
    } else {
        format!("gid://shopify/FulfillmentOrder/{id}")
    }
}

fn ok_empty() -> Response {
    json_response(StatusCode::OK, &json!({}))
}

async fn list_orders(State(inner): Shop) -> Response {
    json_response(
        StatusCode::OK,
        &json!({ "ids": handle(&inner).order_ids() }),
    )
}

async fn create_order(State(inner): Shop, body: Bytes) -> Response {
    let order: NewOrder = match parse_body(&body) {
        Ok(o) => o,
        Err(e) => return bad_request(e),
    };
    match handle(&inner).try_create_order(order) {
        Ok(id) => json_response(StatusCode::OK, &json!({ "id": id })),
        Err(e) => error_response(e),
    }
}

#[derive(Deserialize)]
struct SampleRequest {
    n: usize,
    #[serde(default)]
    seed: u64,
}

async fn sample(State(inner): Shop, body: Bytes) -> Response {
    let request: SampleRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    let h = handle(&inner);
    let mut ids = Vec::with_capacity(request.n);
    for order in super::sample_orders(request.n, request.seed) {
        match h.try_create_order(order) {
            Ok(id) => ids.push(id),
            Err(e) => return error_response(e),
        }
    }
    json_response(StatusCode::OK, &json!({ "ids": ids }))
}

async fn snapshot(State(inner): Shop, Path(id): Path<String>) -> Response {
    match handle(&inner).order_snapshot(&order_gid(&id)) {
        Some(order) => json_response(StatusCode::OK, &order),
        None => error_response(SandboxError::UnknownOrder(id)),
    }
}

async fn fulfillments(State(inner): Shop, Path(id): Path<String>) -> Response {
    let id = order_gid(&id);
    let h = handle(&inner);
    if h.order_snapshot(&id).is_none() {
        return error_response(SandboxError::UnknownOrder(id));
    }
    json_response(StatusCode::OK, &Value::Array(h.fulfillments(&id)))
}

async fn edit(State(inner): Shop, Path(id): Path<String>, body: Bytes) -> Response {
    let edit: OrderEdit = match parse_body(&body) {
        Ok(e) => e,
        Err(e) => return bad_request(e),
    };
    match handle(&inner).edit_order(&order_gid(&id), edit) {
        Ok(()) => ok_empty(),
        Err(e) => error_response(e),
    }
}

#[derive(Deserialize)]
struct Reason {
    reason: String,
}

async fn cancel(State(inner): Shop, Path(id): Path<String>, body: Bytes) -> Response {
    let Reason { reason } = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    match handle(&inner).cancel_order(&order_gid(&id), &reason) {
        Ok(()) => ok_empty(),
        Err(e) => error_response(e),
    }
}

async fn touch(State(inner): Shop, Path(id): Path<String>) -> Response {
    match handle(&inner).touch_order(&order_gid(&id)) {
        Ok(()) => ok_empty(),
        Err(e) => error_response(e),
    }
}

async fn hold(State(inner): Shop, Path(id): Path<String>, body: Bytes) -> Response {
    let Reason { reason } = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    match handle(&inner).merchant_hold(&fo_gid(&id), &reason) {
        Ok(hold) => json_response(StatusCode::OK, &json!({ "id": hold })),
        Err(e) => error_response(e),
    }
}

async fn release(State(inner): Shop, Path(id): Path<String>) -> Response {
    match handle(&inner).merchant_release(&fo_gid(&id)) {
        Ok(()) => ok_empty(),
        Err(e) => error_response(e),
    }
}

#[derive(Deserialize)]
struct FulfillRequest {
    tracking_number: String,
}

async fn fulfill(State(inner): Shop, Path(id): Path<String>, body: Bytes) -> Response {
    let FulfillRequest { tracking_number } = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    match handle(&inner).fulfill_outside(&fo_gid(&id), &tracking_number) {
        Ok(f) => json_response(StatusCode::OK, &json!({ "id": f })),
        Err(e) => error_response(e),
    }
}

async fn get_faults(State(inner): Shop) -> Response {
    let faults = inner.shared().faults.clone();
    json_response(StatusCode::OK, &json!(faults))
}

async fn put_faults(State(inner): Shop, body: Bytes) -> Response {
    let faults: Faults = match parse_body(&body) {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    handle(&inner).set_faults(faults);
    ok_empty()
}

async fn get_bucket(State(inner): Shop) -> Response {
    json_response(StatusCode::OK, &json!(handle(&inner).bucket()))
}

#[derive(Deserialize)]
struct BucketLevel {
    currently_available: f64,
}

async fn put_bucket(State(inner): Shop, body: Bytes) -> Response {
    let BucketLevel {
        currently_available,
    } = match parse_body(&body) {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    handle(&inner).set_bucket_available(currently_available);
    json_response(StatusCode::OK, &json!(handle(&inner).bucket()))
}

async fn stats(State(inner): Shop) -> Response {
    json_response(StatusCode::OK, &json!(handle(&inner).stats()))
}

#[derive(Deserialize)]
struct WebhookUrl {
    url: Option<String>,
}

async fn put_webhook_url(State(inner): Shop, body: Bytes) -> Response {
    let WebhookUrl { url } = match parse_body(&body) {
        Ok(u) => u,
        Err(e) => return bad_request(e),
    };
    handle(&inner).set_webhook_url(url);
    ok_empty()
}

async fn flush(State(inner): Shop) -> Response {
    inner.queue.flush().await;
    ok_empty()
}

#[derive(Deserialize)]
struct Advance {
    seconds: f64,
}

async fn advance(State(inner): Shop, body: Bytes) -> Response {
    let Advance { seconds } = match parse_body(&body) {
        Ok(a) => a,
        Err(e) => return bad_request(e),
    };
    if !(seconds.is_finite() && seconds >= 0.0) {
        return bad_request("seconds must be a non-negative number");
    }
    inner.clock.advance(Duration::from_secs_f64(seconds));
    ok_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_decode() {
        let pairs =
            form_decode(b"grant_type=client_credentials&client_id=a%2Bb&client_secret=c+d%");
        assert_eq!(
            pairs,
            vec![
                ("grant_type".into(), "client_credentials".into()),
                ("client_id".into(), "a+b".into()),
                ("client_secret".into(), "c d%".into()),
            ]
        );
    }
}
