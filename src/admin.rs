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
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/orders", get(list_orders))
        .route("/api/order", get(show_order))
        .route("/api/shops/{shop}/sync", post(sync_shop))
        .route("/api/shops/{shop}/reconcile", post(reconcile_shop))
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

async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return ApiError(
            StatusCode::FORBIDDEN,
            "the admin API is disabled: no [admin] token is configured".into(),
        )
        .into_response();
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
        ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token".into(),
        )
        .into_response()
    }
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
) -> Result<Json<crate::order::OrderMirror>, ApiError> {
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
}

async fn reconcile_shop(
    State(state): State<AdminState>,
    Path(shop): Path<String>,
    Query(q): Query<ReconcileQuery>,
) -> Result<Json<crate::reconcile::ReconcileReport>, ApiError> {
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
        ..Default::default()
    };
    let run =
        crate::reconcile::reconcile(&state.store, &sync.client, &sync.http, &options, &|_| {});
    let report = tokio::time::timeout(ADMIN_WAIT, run)
        .await
        .map_err(|_| gave_up())?
        .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, e.to_string()))?;
    Ok(Json(report))
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
