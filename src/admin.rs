//! The admin API on its own listener: health, readiness, Prometheus metrics, and an endpoint for
//! each CLI command, behind a bearer token compared in constant time.
//!
//! `/healthz` and `/readyz` stay open so that a supervisor can probe them; everything else needs
//! `Authorization: Bearer <token>`. Without a configured token only the two probes answer.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use crate::config::Secret;
use crate::daemon::ShopSync;
use crate::health::{self, Heartbeats};
use crate::intake::IntakeCounters;
use crate::store::Store;
use crate::views;

/// Everything the admin routes read.
#[derive(Clone)]
pub struct AdminState {
    pub(crate) ready: Arc<AtomicBool>,
    pub(crate) heartbeats: Heartbeats,
    pub(crate) store: Store,
    pub(crate) counters: Arc<IntakeCounters>,
    pub(crate) shops: Arc<HashMap<String, ShopSync>>,
    pub(crate) shop_domains: Arc<Vec<String>>,
    pub(crate) token: Option<Secret>,
    /// The supplier workflow's operator surface, over the daemon's own workflow: decisions and
    /// events taken here share its per-order locks and wake its outbox sender at once.
    pub(crate) operations: views::Operations,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/orders", get(list_orders))
        .route("/api/order", get(show_order))
        .route("/api/shops/{shop}/sync", post(sync_shop))
        .route("/api/shops/{shop}/reconcile", post(reconcile_shop))
        .route("/api/exceptions", get(list_exceptions))
        .route("/api/exceptions/{id}", get(show_exception))
        .route("/api/exceptions/{id}/decide", post(decide_exception))
        .route("/api/suppliers/{supplier}/export", get(export_sheet))
        .route(
            "/api/suppliers/{supplier}/import",
            // A sheet may be as large as the importer accepts; a larger body is refused with
            // 413 before it is read.
            post(import_sheet).layer(axum::extract::DefaultBodyLimit::max(
                crate::suppliers::csv::MAX_SHEET_BYTES + 1,
            )),
        )
        .route("/api/suppliers/{supplier}/events", post(record_event))
        .route("/api/shipments/{id}", get(show_shipment))
        .route("/api/shipments/{id}/check", post(record_check))
        .route("/api/shipments/{id}/pack", post(record_packing))
        .route("/api/shipments/{id}/label", post(record_label))
        .route("/api/tracking/{number}/accept", post(accept_scan))
        .route("/api/outbox", get(list_outbox))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(protected)
        .with_state(state)
}

/// An error answer: a status and a one-line reason, as JSON.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "admin request failed in the store");
        ApiError(StatusCode::SERVICE_UNAVAILABLE, "store unavailable".into())
    }
}

impl From<views::OpError> for ApiError {
    fn from(e: views::OpError) -> Self {
        use views::OpError;
        match e {
            OpError::NotFound(text) => ApiError(StatusCode::NOT_FOUND, text),
            OpError::BadInput(text) => ApiError(StatusCode::BAD_REQUEST, text),
            OpError::Unfit(text) => ApiError(StatusCode::UNPROCESSABLE_ENTITY, text),
            OpError::Refused(refusal) => {
                ApiError(StatusCode::UNPROCESSABLE_ENTITY, refusal.to_string())
            }
            OpError::Store(e) => e.into(),
        }
    }
}

async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return closing(ApiError(
            StatusCode::FORBIDDEN,
            "the admin API is disabled: no [admin] token is configured".into(),
        ));
    };
    let presented = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant time, so the answer's timing does not reveal how much of a guess was right.
    if bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes())) {
        next.run(request).await
    } else {
        closing(ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token".into(),
        ))
    }
}

/// A refusal made before the request's body was read: hyper closes such a connection after
/// answering, and the header tells the client so, instead of letting it write its next request
/// into a closing connection.
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    response
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, String) {
    if !state.ready.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into());
    }
    let stale = state.heartbeats.stale(health::BEAT * 3);
    if stale.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        let names: Vec<&str> = stale.iter().map(|(n, _)| n.as_str()).collect();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("workers not beating: {}\n", names.join(", ")),
        )
    }
}

#[derive(Deserialize)]
struct ListQuery {
    shop: Option<String>,
    limit: Option<usize>,
}

fn shops_named(state: &AdminState, shop: Option<&str>) -> Result<Vec<String>, ApiError> {
    match shop {
        None => Ok(state.shop_domains.as_ref().clone()),
        Some(s) => {
            let s = s.to_ascii_lowercase();
            if state.shop_domains.contains(&s) {
                Ok(vec![s])
            } else {
                Err(ApiError(
                    StatusCode::NOT_FOUND,
                    format!("shop {s} is not configured"),
                ))
            }
        }
    }
}

async fn list_orders(
    State(state): State<AdminState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<views::OrderSummary>>, ApiError> {
    let shops = shops_named(&state, q.shop.as_deref())?;
    Ok(Json(views::list_orders(
        &state.store,
        &shops,
        q.limit.unwrap_or(100),
    )?))
}

#[derive(Deserialize)]
struct ShowQuery {
    shop: Option<String>,
    order: String,
}

async fn show_order(
    State(state): State<AdminState>,
    Query(q): Query<ShowQuery>,
) -> Result<Json<views::OrderView>, ApiError> {
    for shop in shops_named(&state, q.shop.as_deref())? {
        if let Some(order) = views::show_order(&state.store, &shop, &q.order)? {
            return Ok(Json(order));
        }
    }
    Err(ApiError(
        StatusCode::NOT_FOUND,
        format!("no mirrored order {}", q.order),
    ))
}

/// How long a sync or reconciliation asked for through the API may take before the caller gets
/// an answer anyway (the work itself goes on in the daemon's workers).
const ADMIN_WAIT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

fn gave_up() -> ApiError {
    ApiError(
        StatusCode::GATEWAY_TIMEOUT,
        format!(
            "not finished within {} minutes; the daemon's workers go on, see /metrics and the log",
            ADMIN_WAIT.as_secs() / 60
        ),
    )
}

/// The client and mirror of a shop the daemon syncs.
fn synced_shop<'a>(state: &'a AdminState, shop: &str) -> Result<&'a ShopSync, ApiError> {
    state.shops.get(shop).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("{shop} is not synced (not configured, or no Admin API credentials)"),
        )
    })
}

async fn sync_shop(
    State(state): State<AdminState>,
    Path(shop): Path<String>,
) -> Result<Json<crate::mirror::ScanReport>, ApiError> {
    let shop = shop.to_ascii_lowercase();
    let sync = synced_shop(&state, &shop)?;
    let report = tokio::time::timeout(
        ADMIN_WAIT,
        crate::mirror::sync_now(&state.store, &sync.mirror, &shop),
    )
    .await
    .map_err(|_| gave_up())?
    .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, e))?;
    Ok(Json(report))
}

#[derive(Deserialize)]
struct ReconcileQuery {
    since: Option<String>,
    #[serde(default)]
    repair: bool,
    /// Stream NDJSON: `{"progress": "…"}` lines while it runs, then `{"report": …}` or
    /// `{"error": "…"}`. Without it the answer is the report alone, when it is done.
    #[serde(default)]
    progress: bool,
}

async fn reconcile_shop(
    State(state): State<AdminState>,
    Path(shop): Path<String>,
    Query(q): Query<ReconcileQuery>,
) -> Result<Response, ApiError> {
    let shop = shop.to_ascii_lowercase();
    let sync = synced_shop(&state, &shop)?;
    let since = match q.since.as_deref() {
        Some(text) => {
            crate::reconcile::parse_since(text).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?
        }
        None => crate::reconcile::default_since(),
    };
    let options = crate::reconcile::ReconcileOptions {
        since: Some(since),
        repair: q.repair,
        // Overdue write-backs are judged by the clock that stamped them.
        clock: state.operations.workflow().clock().clone(),
        ..Default::default()
    };
    if q.progress {
        return Ok(reconcile_streamed(state.clone(), sync.clone(), options));
    }
    let run =
        crate::reconcile::reconcile(&state.store, &sync.client, &sync.http, &options, &|_| {});
    let report = tokio::time::timeout(ADMIN_WAIT, run)
        .await
        .map_err(|_| gave_up())?
        .map_err(|e| match e {
            // Not Shopify failing: the shop is not installed, which the caller can fix.
            crate::reconcile::ReconcileError::Stopped(why) => ApiError(StatusCode::CONFLICT, why),
            e => ApiError(StatusCode::BAD_GATEWAY, e.to_string()),
        })?;
    Ok(Json(report).into_response())
}

/// Runs a reconciliation and streams it as NDJSON (`{"progress": {…}, "text": "…"}` lines,
/// then `{"report": …}` or `{"error": "…"}`), so the CLI shows progress through the daemon as it
/// does on the store. Progress lines are best effort (one that finds the buffer full is
/// dropped: the next says more); the last line, the report or the error, is always sent.
fn reconcile_streamed(
    state: AdminState,
    sync: ShopSync,
    options: crate::reconcile::ReconcileOptions,
) -> Response {
    use http_body_util::channel::Channel;
    let (sender, body) = Channel::<bytes::Bytes>::new(64);
    let line = |value: serde_json::Value| {
        let mut text = value.to_string();
        text.push('\n');
        bytes::Bytes::from(text)
    };
    tokio::spawn(async move {
        let sender = std::sync::Mutex::new(sender);
        let progress = |p: crate::reconcile::Progress| {
            let text = p.to_string();
            let frame =
                hyper::body::Frame::data(line(serde_json::json!({ "progress": p, "text": text })));
            let _ = sender.lock().expect("not poisoned").try_send(frame);
        };
        let run = crate::reconcile::reconcile(
            &state.store,
            &sync.client,
            &sync.http,
            &options,
            &progress,
        );
        let last = match tokio::time::timeout(ADMIN_WAIT, run).await {
            Ok(Ok(report)) => serde_json::json!({ "report": report }),
            Ok(Err(e)) => serde_json::json!({ "error": e.to_string() }),
            Err(_) => serde_json::json!({ "error": gave_up().1 }),
        };
        let mut sender = sender.into_inner().expect("not poisoned");
        // The client may have gone; nothing is left to tell it.
        let _ = sender.send_data(line(last)).await;
    });
    (
        [(http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::new(body),
    )
        .into_response()
}

/// Reads a yes/no query parameter. An empty value counts as absent (as for every parameter
/// here), so a script that fills a URL template with empty values gets the defaults.
fn flag(name: &str, value: Option<&str>) -> Result<bool, ApiError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("" | "false" | "0" | "no") => Ok(false),
        Some("true" | "1" | "yes") => Ok(true),
        Some(other) => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("`{name}` must be true or false, not `{other}`"),
        )),
    }
}

/// A text parameter, with an empty value counting as absent.
fn given(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// Parameters are taken as text and checked here, so that a bad one is answered like every
/// other error: JSON naming the parameter.
#[derive(Deserialize)]
struct ExceptionsQuery {
    all: Option<String>,
    kind: Option<String>,
    shop: Option<String>,
}

async fn list_exceptions(
    State(state): State<AdminState>,
    Query(q): Query<ExceptionsQuery>,
) -> Result<Json<Vec<views::ExceptionRow>>, ApiError> {
    let filter = views::ExceptionFilter {
        all: flag("all", q.all.as_deref())?,
        kind: given(q.kind),
        shop: given(q.shop),
    };
    Ok(Json(state.operations.list_exceptions(&filter)?))
}

async fn show_exception(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<views::ExceptionDetail>, ApiError> {
    Ok(Json(state.operations.show_exception(&id)?))
}

/// Parses a JSON body; the error names what is wrong without echoing the body.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

async fn decide_exception(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<views::ExceptionDetail>, ApiError> {
    let request: views::DecideRequest = json_body(&body)?;
    Ok(Json(state.operations.decide(&id, &request).await?))
}

async fn export_sheet(
    State(state): State<AdminState>,
    Path(supplier): Path<String>,
) -> Result<Response, ApiError> {
    let sheet = state.operations.export(&supplier)?;
    Ok((
        [
            (http::header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            // The sheet holds customers' addresses: no cache may keep a copy.
            (http::header::CACHE_CONTROL, "no-store"),
        ],
        sheet,
    )
        .into_response())
}

#[derive(Deserialize)]
struct ImportQuery {
    file_name: Option<String>,
    by: Option<String>,
}

async fn import_sheet(
    State(state): State<AdminState>,
    Path(supplier): Path<String>,
    Query(q): Query<ImportQuery>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let file_name = given(q.file_name).ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "`file_name` is missing: name the sheet, e.g. ?file_name=sheet.csv".into(),
        )
    })?;
    match state
        .operations
        .import(&supplier, &file_name, &body, given(q.by).as_deref())
        .await
    {
        Ok(summary) => Ok(Json(summary).into_response()),
        // The problems go along as data too, so the CLI can print them exactly as it does
        // when it imports on the store directly.
        Err(views::OpError::Refused(refusal)) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({
                "error": refusal.to_string(),
                "file_name": refusal.file_name,
                "problems": refusal.problems,
            })),
        )
            .into_response()),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
struct EventQuery {
    by: Option<String>,
}

async fn record_event(
    State(state): State<AdminState>,
    Path(supplier): Path<String>,
    Query(q): Query<EventQuery>,
    body: axum::body::Bytes,
) -> Result<Json<views::EventRecorded>, ApiError> {
    Ok(Json(
        state
            .operations
            .record_event(&supplier, &body, given(q.by).as_deref())
            .await?,
    ))
}

async fn show_shipment(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<views::ShipmentDetail>, ApiError> {
    Ok(Json(state.operations.show_shipment(&id)?))
}

async fn record_check(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<views::EvidenceRecorded>, ApiError> {
    let request: views::CheckRequest = json_body(&body)?;
    Ok(Json(state.operations.record_check(&id, &request).await?))
}

async fn record_packing(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<views::EvidenceRecorded>, ApiError> {
    let request: views::PackRequest = json_body(&body)?;
    Ok(Json(state.operations.record_packing(&id, &request).await?))
}

async fn record_label(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<views::EvidenceRecorded>, ApiError> {
    let request: views::LabelRequest = json_body(&body)?;
    Ok(Json(state.operations.record_label(&id, &request).await?))
}

/// A manual acceptance: 200 when recorded on the shipments whose label carries the number,
/// 202 when no label carries it yet and it waits for one.
async fn accept_scan(
    State(state): State<AdminState>,
    Path(number): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: views::AcceptRequest = json_body(&body)?;
    let recorded = state.operations.accept_scan(&number, &request).await?;
    let status = if recorded.result == "waiting" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(recorded)).into_response())
}

#[derive(Deserialize)]
struct OutboxQuery {
    failed: Option<String>,
    limit: Option<String>,
}

async fn list_outbox(
    State(state): State<AdminState>,
    Query(q): Query<OutboxQuery>,
) -> Result<Json<Vec<views::EffectRow>>, ApiError> {
    let failed = flag("failed", q.failed.as_deref())?;
    let limit = match given(q.limit).as_deref() {
        None => 100,
        Some(text) => text.parse().map_err(|_| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("`limit` must be a whole number, not `{text}`"),
            )
        })?,
    };
    Ok(Json(state.operations.outbox(failed, limit)?))
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let mut out = String::new();
    let counters = &state.counters;
    family(
        &mut out,
        "shipgate_webhook_deliveries_total",
        "counter",
        "Inbound webhook deliveries by topic and result.",
    );
    for ((topic, result), n) in counters.by_topic() {
        let _ = writeln!(
            out,
            "shipgate_webhook_deliveries_total{{topic=\"{}\",result=\"{result}\"}} {n}",
            escape(&topic)
        );
    }
    family(
        &mut out,
        "shipgate_inbox_depth",
        "gauge",
        "Stored deliveries not yet processed.",
    );
    let _ = writeln!(out, "shipgate_inbox_depth {}", state.store.inbox_len());
    family(
        &mut out,
        "shipgate_store_flushes_total",
        "counter",
        "Group-commit flushes of the store.",
    );
    let flush = state.store.flush_stats();
    let _ = writeln!(out, "shipgate_store_flushes_total {}", flush.rounds);
    family(
        &mut out,
        "shipgate_store_flush_waiters_total",
        "counter",
        "Durable writes answered by those flushes.",
    );
    let _ = writeln!(out, "shipgate_store_flush_waiters_total {}", flush.waiters);
    // Prometheus wants each family's samples together, after its HELP and TYPE lines.
    type PerShop = fn(&Store, &str) -> usize;
    let per_shop: [(&str, &str, PerShop); 3] = [
        (
            "shipgate_orders_mirrored",
            "Orders in the mirror, by shop.",
            |store, shop| store.order_count_of(shop),
        ),
        (
            "shipgate_order_triggers_pending",
            "Orders waiting to be fetched, by shop.",
            |store, shop| store.pending_trigger_count(shop),
        ),
        (
            "shipgate_orders_parked",
            "Orders that could not be fetched and were set aside, by shop.",
            |store, shop| store.parked_count(shop),
        ),
    ];
    for (name, help, read) in per_shop {
        family(&mut out, name, "gauge", help);
        for shop in state.shop_domains.iter() {
            let _ = writeln!(
                out,
                "{name}{{shop=\"{}\"}} {}",
                escape(shop),
                read(&state.store, shop)
            );
        }
    }
    let mut shops: Vec<(&String, &ShopSync)> = state.shops.iter().collect();
    shops.sort_by_key(|(s, _)| *s);
    for (name, help, read) in [
        (
            "shipgate_shopify_requests_total",
            "GraphQL requests sent.",
            0,
        ),
        ("shipgate_shopify_throttled_total", "THROTTLED answers.", 1),
        ("shipgate_shopify_http_429_total", "HTTP 429 answers.", 2),
        (
            "shipgate_shopify_server_errors_total",
            "5xx and INTERNAL_SERVER_ERROR answers.",
            3,
        ),
        (
            "shipgate_shopify_points_actual_total",
            "Cost points charged after refunds.",
            4,
        ),
        (
            "shipgate_shopify_token_grants_total",
            "Access tokens obtained by the client-credentials grant.",
            5,
        ),
    ] {
        family(&mut out, name, "counter", help);
        for (shop, sync) in &shops {
            let s = sync.client.stats();
            let value = [
                &s.requests,
                &s.throttled,
                &s.http_429,
                &s.server_errors,
                &s.points_actual,
                &s.token_grants,
            ][read]
                .load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{shop=\"{}\"}} {value}", escape(shop));
        }
    }
    for (name, help, maximum) in [
        (
            "shipgate_shopify_budget_available",
            "Cost points available in Shopify's bucket, as last read.",
            false,
        ),
        (
            "shipgate_shopify_budget_maximum",
            "Size of Shopify's bucket.",
            true,
        ),
    ] {
        family(&mut out, name, "gauge", help);
        for (shop, sync) in &shops {
            if let Some(b) = sync.client.budget() {
                let value = if maximum { b.maximum } else { b.available };
                let _ = writeln!(out, "{name}{{shop=\"{}\"}} {value:.0}", escape(shop));
            }
        }
    }
    workflow_metrics(&mut out, &state.store);
    family(
        &mut out,
        "shipgate_workers_stale",
        "gauge",
        "Workers whose heartbeat is older than three beats.",
    );
    let _ = writeln!(
        out,
        "shipgate_workers_stale {}",
        state.heartbeats.stale(health::BEAT * 3).len()
    );
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// The Shopify effects (`Action::name`) that always have a `shipgate_write_backs` series, 0
/// included, so that an alert on one never sees it vanish; other `shopify_` actions appear once
/// the outbox has held one.
const WRITE_BACK_ACTIONS: [&str; 5] = [
    "shopify_fulfillment",
    "shopify_fulfillment_event",
    "shopify_tracking_update",
    "shopify_hold",
    "shopify_release_hold",
];

/// The supplier workflow's gauges. Every kind and every state is written, 0 included, so that
/// an alert on a series never sees it vanish. A store that cannot be read leaves the samples out
/// (the family stays, so a scrape still shows the metric exists) and logs why.
fn workflow_metrics(out: &mut String, store: &Store) {
    use crate::workflow::model::ExceptionKind;
    family(
        out,
        "shipgate_exceptions_open",
        "gauge",
        "Open exceptions, by kind.",
    );
    match store.cases_with_open_exceptions() {
        Ok(cases) => {
            for kind in ExceptionKind::ALL {
                let n = cases
                    .iter()
                    .flat_map(|c| c.open_exceptions())
                    .filter(|e| e.kind == kind)
                    .count();
                let _ = writeln!(
                    out,
                    "shipgate_exceptions_open{{kind=\"{}\"}} {n}",
                    kind.name()
                );
            }
        }
        Err(e) => tracing::error!(error = %e, "metrics: cannot count open exceptions"),
    }
    family(
        out,
        "shipgate_outbox_effects",
        "gauge",
        "Outbound effects, by state.",
    );
    match store.effect_counts() {
        Ok(counts) => {
            for (state, n) in counts {
                let _ = writeln!(out, "shipgate_outbox_effects{{state=\"{state}\"}} {n}");
            }
        }
        Err(e) => tracing::error!(error = %e, "metrics: cannot count outbox effects"),
    }
    family(
        out,
        "shipgate_write_backs",
        "gauge",
        "Effects written back to Shopify (fulfillments, their events and tracking updates, holds, releases), by action and state.",
    );
    match store.effect_counts_by_action() {
        Ok(counts) => {
            let mut actions: Vec<&str> = WRITE_BACK_ACTIONS.to_vec();
            for (action, _) in &counts {
                if action.starts_with("shopify_") && !actions.contains(&action.as_str()) {
                    actions.push(action);
                }
            }
            for action in actions {
                let states = counts
                    .iter()
                    .find(|(a, _)| a == action)
                    .map(|(_, states)| *states);
                for state in ["pending", "done", "failed", "superseded"] {
                    let n = states
                        .and_then(|s| s.iter().find(|(name, _)| *name == state).map(|(_, n)| *n))
                        .unwrap_or(0);
                    let _ = writeln!(
                        out,
                        "shipgate_write_backs{{action=\"{}\",state=\"{state}\"}} {n}",
                        escape(action)
                    );
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "metrics: cannot count write-backs"),
    }
    family(
        out,
        "shipgate_plan_queue_depth",
        "gauge",
        "Orders whose mirror changed and that wait to be planned.",
    );
    let _ = writeln!(out, "shipgate_plan_queue_depth {}", store.plan_queue_len());
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escapes a Prometheus label value.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
