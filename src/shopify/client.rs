//! The Admin GraphQL client: one per shop, sharing one reqwest client.
//!
//! Three things decide when a request goes out:
//!
//! - **The cost budget.** Shopify keeps a leaky bucket of cost points per app and shop and answers
//!   THROTTLED when a query asks for more points than the bucket holds. `Budget` mirrors the bucket
//!   from every response's `throttleStatus` (the server's numbers, not a guess), learns what each
//!   operation requests, and waits until the points are there before sending. governor alone
//!   could not do this: a token bucket cannot be refilled or corrected from the server's reading,
//!   and Shopify refunds the unused part of every request.
//! - **A request-rate cap** (governor) per shop, so a burst of cheap queries stays polite.
//! - **Retries.** THROTTLED and 429 wait as the server says; 5xx, `INTERNAL_SERVER_ERROR`,
//!   timeouts and connection failures back off exponentially with full jitter up to a cap.
//!   `MAX_COST_EXCEEDED`, `ACCESS_DENIED`, `userErrors`, 402 and 423 are permanent.
//!
//! Tokens are static, or come from the client-credentials grant and are refreshed before they
//! expire and once after a 401.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use graphql_client::GraphQLQuery;
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::config::{Secret, ShopConfig, ShopCredentials};

/// How the client retries and paces.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Attempts for transient failures (5xx, timeouts, connection errors) before giving up.
    pub max_attempts: u32,
    /// The first backoff; it doubles per attempt, with full jitter.
    pub base_backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
    /// How often a request may be throttled (THROTTLED or 429) before giving up.
    pub max_throttle_waits: u32,
    /// The timeout of one HTTP request.
    pub request_timeout: Duration,
    /// The cap on requests per second to this shop.
    pub requests_per_second: u32,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            max_attempts: 6,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            max_throttle_waits: 50,
            request_timeout: Duration::from_secs(30),
            requests_per_second: 4,
        }
    }
}

/// One `userErrors` entry of a mutation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct UserError {
    /// The input path Shopify blames, if any.
    #[serde(default)]
    pub field: Option<Vec<String>>,
    /// Shopify's message, kept verbatim.
    pub message: String,
    /// The error code, where the mutation has one.
    #[serde(default)]
    pub code: Option<String>,
}

/// Why a Shopify call failed. `is_permanent` tells whether retrying later can help.
#[derive(Debug, thiserror::Error)]
pub enum ShopifyError {
    #[error("{operation}: the query costs {requested} points, over Shopify's 1000-point maximum")]
    MaxCostExceeded { operation: String, requested: f64 },
    #[error("{operation}: access denied: {message}")]
    AccessDenied { operation: String, message: String },
    #[error("{operation}: the access token was refused (401)")]
    Unauthorized { operation: String },
    #[error("{operation}: Shopify refused the input: {}", user_errors_text(.errors))]
    UserErrors {
        operation: String,
        errors: Vec<UserError>,
    },
    #[error("{operation}: GraphQL error: {}", .messages.join("; "))]
    GraphQl {
        operation: String,
        messages: Vec<String>,
    },
    #[error("{operation}: the shop is unavailable (HTTP {status}: frozen or locked)")]
    ShopUnavailable { operation: String, status: u16 },
    #[error("{operation}: HTTP {status}: {body}")]
    Http {
        operation: String,
        status: u16,
        body: String,
    },
    #[error("{operation}: gave up after {attempts} attempts: {last}")]
    Exhausted {
        operation: String,
        attempts: u32,
        last: String,
    },
    #[error("{operation}: unexpected response: {reason}")]
    Decode { operation: String, reason: String },
    #[error(
        "{operation}: the outcome is unknown ({reason}); read Shopify's state before trying again"
    )]
    UnknownOutcome { operation: String, reason: String },
    #[error("access token grant failed: {0}")]
    Token(String),
    #[error("no Admin API credentials are configured for this shop")]
    NoCredentials,
}

fn user_errors_text(errors: &[UserError]) -> String {
    errors
        .iter()
        .map(|e| match &e.field {
            Some(f) if !f.is_empty() => format!("{} ({})", e.message, f.join(".")),
            _ => e.message.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl ShopifyError {
    /// Whether the same call can never succeed as it is (retrying later is pointless).
    pub fn is_permanent(&self) -> bool {
        !matches!(
            self,
            ShopifyError::Exhausted { .. }
                | ShopifyError::Token(_)
                | ShopifyError::ShopUnavailable { .. }
                | ShopifyError::UnknownOutcome { .. }
        )
    }
}

/// Counters of what the client did, for metrics, tests and benchmarks.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// HTTP requests sent to the GraphQL endpoint.
    pub requests: AtomicU64,
    /// THROTTLED answers (HTTP 200).
    pub throttled: AtomicU64,
    /// 429 answers.
    pub http_429: AtomicU64,
    /// 5xx answers and `INTERNAL_SERVER_ERROR`s.
    pub server_errors: AtomicU64,
    /// Timeouts and connection failures.
    pub transport_errors: AtomicU64,
    /// Tokens obtained through the client-credentials grant.
    pub token_grants: AtomicU64,
    /// Points requested by answered queries.
    pub points_requested: AtomicU64,
    /// Points actually charged (after refunds).
    pub points_actual: AtomicU64,
    /// Milliseconds spent waiting for budget before sending.
    pub budget_wait_ms: AtomicU64,
}

/// A snapshot of the client's view of the shop's bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetView {
    /// The bucket's size.
    pub maximum: f64,
    /// Points available now, as projected from the last reading.
    pub available: f64,
    /// Points restored per second.
    pub restore_rate: f64,
}

struct BudgetState {
    known: bool,
    maximum: f64,
    available: f64,
    restore_rate: f64,
    at: Instant,
    reserved: f64,
    /// What each operation requested per unit (e.g. per order id), as last observed.
    per_unit: HashMap<&'static str, f64>,
}

impl BudgetState {
    fn projected(&self, now: Instant) -> f64 {
        let restored = self.restore_rate * now.saturating_duration_since(self.at).as_secs_f64();
        (self.available + restored).min(self.maximum) - self.reserved
    }
}

/// The client-side image of Shopify's leaky bucket for one shop.
struct Budget {
    state: std::sync::Mutex<BudgetState>,
}

/// Points held for a request in flight; given back when dropped.
struct Reservation<'a> {
    budget: &'a Budget,
    points: f64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut s = self.budget.lock();
        s.reserved = (s.reserved - self.points).max(0.0);
    }
}

impl Budget {
    fn new() -> Budget {
        Budget {
            state: std::sync::Mutex::new(BudgetState {
                known: false,
                maximum: 0.0,
                available: 0.0,
                restore_rate: 0.0,
                at: Instant::now(),
                reserved: 0.0,
                per_unit: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the points the operation is expected to request are available, and holds
    /// them. Before the first answer nothing is known, and the request goes out to learn.
    async fn reserve(&self, operation: &'static str, units: u32) -> (Reservation<'_>, Duration) {
        let started = Instant::now();
        loop {
            let wait = {
                let mut s = self.lock();
                let estimate = s
                    .per_unit
                    .get(operation)
                    .map(|c| c * units.max(1) as f64)
                    .unwrap_or(0.0)
                    // A request bigger than the bucket can still run once the bucket is full.
                    .min(if s.known { s.maximum } else { f64::MAX });
                let projected = s.projected(Instant::now());
                if !s.known || projected >= estimate {
                    s.reserved += estimate;
                    return (
                        Reservation {
                            budget: self,
                            points: estimate,
                        },
                        started.elapsed(),
                    );
                }
                Duration::try_from_secs_f64((estimate - projected) / s.restore_rate.max(1.0))
                    .unwrap_or(Duration::from_secs(60))
                    .min(Duration::from_secs(60))
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes the server's reading of the bucket and what the operation requested.
    fn observe(&self, operation: &'static str, units: u32, cost: &Cost) {
        let mut s = self.lock();
        if let Some(status) = &cost.throttle_status {
            s.known = true;
            s.maximum = status.maximum_available;
            s.available = status.currently_available;
            s.restore_rate = status.restore_rate;
            s.at = Instant::now();
        }
        if let Some(requested) = cost.requested_query_cost {
            s.per_unit
                .insert(operation, requested / units.max(1) as f64);
        }
    }

    /// How long until `requested` points are back, per the last reading. `own` is what the
    /// asking request holds itself: it is given back before the retry, so it is not missing.
    fn wait_for(&self, requested: f64, own: f64) -> Duration {
        let s = self.lock();
        if !s.known || s.restore_rate <= 0.0 {
            return Duration::from_secs(1);
        }
        let missing = (requested.min(s.maximum) - s.projected(Instant::now()) - own).max(0.0);
        Duration::try_from_secs_f64(missing / s.restore_rate)
            .unwrap_or(Duration::from_secs(60))
            .min(Duration::from_secs(60))
            + Duration::from_millis(10)
    }

    fn view(&self) -> Option<BudgetView> {
        let s = self.lock();
        s.known.then(|| BudgetView {
            maximum: s.maximum,
            available: s.projected(Instant::now()) + s.reserved,
            restore_rate: s.restore_rate,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Cost {
    requested_query_cost: Option<f64>,
    actual_query_cost: Option<f64>,
    throttle_status: Option<ThrottleStatus>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ThrottleStatus {
    maximum_available: f64,
    currently_available: f64,
    restore_rate: f64,
}

enum Auth {
    None,
    Static(Secret),
    Grant {
        client_id: String,
        client_secret: Secret,
        token_url: String,
        cached: tokio::sync::Mutex<Option<GrantedToken>>,
    },
}

struct GrantedToken {
    token: secrecy::SecretString,
    refresh_at: Instant,
}

#[derive(Deserialize)]
struct GrantResponse {
    access_token: String,
    expires_in: u64,
}

/// A shop's Admin GraphQL client. Cheap to clone.
#[derive(Clone)]
pub struct ShopifyClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    shop: String,
    api_version: String,
    endpoint: String,
    auth: Auth,
    budget: Budget,
    limiter: governor::DefaultDirectRateLimiter,
    settings: ClientSettings,
    stats: ClientStats,
}

/// What a transient failure looked like, for the final error.
enum Attempt {
    Retry(String),
    Wait(Duration, String),
}

impl ShopifyClient {
    /// A client for one configured shop.
    pub fn new(
        http: reqwest::Client,
        shop: &ShopConfig,
        settings: ClientSettings,
    ) -> ShopifyClient {
        let auth = match &shop.credentials {
            ShopCredentials::None => Auth::None,
            ShopCredentials::AccessToken(token) => Auth::Static(token.clone()),
            ShopCredentials::ClientCredentials {
                client_id,
                client_secret,
            } => Auth::Grant {
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
                token_url: shop.oauth_token_url(),
                cached: tokio::sync::Mutex::new(None),
            },
        };
        let rate = NonZeroU32::new(settings.requests_per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        ShopifyClient {
            inner: Arc::new(Inner {
                http,
                shop: shop.domain.clone(),
                api_version: shop.api_version.clone(),
                endpoint: shop.graphql_endpoint.clone(),
                auth,
                budget: Budget::new(),
                limiter: governor::RateLimiter::direct(governor::Quota::per_second(rate)),
                settings,
                stats: ClientStats::default(),
            }),
        }
    }

    /// The shop this client talks to.
    pub fn shop(&self) -> &str {
        &self.inner.shop
    }

    /// The Admin API version the shop is configured for (`2026-10`).
    pub fn api_version(&self) -> &str {
        &self.inner.api_version
    }

    /// The name a `FulfillmentEventStatus` has in this client's API version: the carrier's
    /// pickup is `CARRIER_PICKED_UP` from 2025-10 on, and `IN_TRANSIT` before it existed.
    pub fn event_status<'a>(&self, status: &'a str) -> &'a str {
        super::convert::event_status_for(self.api_version(), status)
    }

    /// What the client did so far.
    pub fn stats(&self) -> &ClientStats {
        &self.inner.stats
    }

    /// The bucket as last read from the server (None before the first answer).
    pub fn budget(&self) -> Option<BudgetView> {
        self.inner.budget.view()
    }

    /// What the operation is expected to request per unit, as learned.
    pub fn learned_cost(&self, operation: &str) -> Option<f64> {
        self.inner.budget.lock().per_unit.get(operation).copied()
    }

    /// Runs one operation. `units` scales the learned cost for operations whose cost grows with
    /// their input (the number of ids of a `nodes` query); use 1 otherwise.
    pub async fn run<Q: GraphQLQuery>(
        &self,
        variables: Q::Variables,
        units: u32,
    ) -> Result<Q::ResponseData, ShopifyError> {
        let body = Q::build_query(variables);
        let operation = body.operation_name;
        let mutation = is_mutation(body.query);
        let payload = serde_json::to_vec(&body).map_err(|e| ShopifyError::Decode {
            operation: operation.to_string(),
            reason: format!("cannot encode the variables: {e}"),
        })?;
        let data = self.send(operation, units, mutation, payload).await?;
        serde_json::from_value(data).map_err(|e| ShopifyError::Decode {
            operation: operation.to_string(),
            reason: e.to_string(),
        })
    }

    async fn send(
        &self,
        operation: &'static str,
        units: u32,
        mutation: bool,
        payload: Vec<u8>,
    ) -> Result<Value, ShopifyError> {
        let inner = &self.inner;
        let settings = &inner.settings;
        let mut failures = 0u32;
        let mut throttles = 0u32;
        let mut refreshed = false;
        loop {
            let (reservation, waited) = inner.budget.reserve(operation, units).await;
            inner
                .stats
                .budget_wait_ms
                .fetch_add(waited.as_millis() as u64, Ordering::Relaxed);
            inner.limiter.until_ready().await;
            let token = self.token(operation).await?;
            inner.stats.requests.fetch_add(1, Ordering::Relaxed);
            let response = inner
                .http
                .post(&inner.endpoint)
                .header("X-Shopify-Access-Token", token.as_str())
                .header(http::header::CONTENT_TYPE, "application/json")
                .timeout(settings.request_timeout)
                .body(payload.clone())
                .send()
                .await;
            let own = reservation.points;
            let outcome = match response {
                // Not even connected: nothing reached Shopify, so any operation may be retried.
                Err(e) if e.is_connect() => {
                    inner.stats.transport_errors.fetch_add(1, Ordering::Relaxed);
                    Attempt::Retry(format!("cannot connect: {e}"))
                }
                Err(e) => {
                    inner.stats.transport_errors.fetch_add(1, Ordering::Relaxed);
                    Attempt::Retry(format!("request failed: {e}"))
                }
                Ok(response) => match self.answer(operation, units, own, response).await {
                    Ok(data) => return Ok(data),
                    Err(Answer::Fatal(e)) => return Err(e),
                    Err(Answer::Unauthorized) => {
                        if !refreshed && matches!(inner.auth, Auth::Grant { .. }) {
                            // The token may have been revoked or expired early: fetch a new one
                            // once, and fail if that one is refused too.
                            refreshed = true;
                            self.forget_token(&token).await;
                            continue;
                        }
                        return Err(ShopifyError::Unauthorized {
                            operation: operation.to_string(),
                        });
                    }
                    Err(Answer::Transient(what)) => Attempt::Retry(what),
                    Err(Answer::Throttled(wait, what)) => Attempt::Wait(wait, what),
                },
            };
            drop(reservation);
            match outcome {
                Attempt::Wait(wait, what) => {
                    throttles += 1;
                    if throttles > settings.max_throttle_waits {
                        return Err(ShopifyError::Exhausted {
                            operation: operation.to_string(),
                            attempts: throttles,
                            last: what,
                        });
                    }
                    tracing::debug!(shop = %inner.shop, operation, ?wait, "throttled: {what}");
                    tokio::time::sleep(wait).await;
                }
                // A mutation may have taken effect although no answer came (a timeout, a 5xx, a
                // broken connection): sending it again could fulfil twice. The caller reads
                // Shopify's state first (invariant 2).
                Attempt::Retry(what) if mutation && !what.starts_with("cannot connect") => {
                    return Err(ShopifyError::UnknownOutcome {
                        operation: operation.to_string(),
                        reason: what,
                    });
                }
                Attempt::Retry(what) => {
                    failures += 1;
                    if failures >= settings.max_attempts {
                        return Err(ShopifyError::Exhausted {
                            operation: operation.to_string(),
                            attempts: failures,
                            last: what,
                        });
                    }
                    let wait = backoff(settings, failures);
                    tracing::debug!(shop = %inner.shop, operation, attempt = failures, ?wait, "retrying: {what}");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn answer(
        &self,
        operation: &'static str,
        units: u32,
        own: f64,
        response: reqwest::Response,
    ) -> Result<Value, Answer> {
        let inner = &self.inner;
        let status = response.status().as_u16();
        let fatal = |e| Answer::Fatal(e);
        match status {
            200 => {}
            401 => return Err(Answer::Unauthorized),
            402 | 423 => {
                return Err(fatal(ShopifyError::ShopUnavailable {
                    operation: operation.to_string(),
                    status,
                }));
            }
            429 => {
                inner.stats.http_429.fetch_add(1, Ordering::Relaxed);
                let wait = response
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|s| s.is_finite())
                    .and_then(|s| Duration::try_from_secs_f64(s.clamp(0.0, 60.0)).ok())
                    .unwrap_or(Duration::from_secs(1));
                return Err(Answer::Throttled(wait, "HTTP 429".into()));
            }
            500..=599 => {
                inner.stats.server_errors.fetch_add(1, Ordering::Relaxed);
                return Err(Answer::Transient(format!("HTTP {status}")));
            }
            _ => {
                let body = response.text().await.unwrap_or_default();
                return Err(fatal(ShopifyError::Http {
                    operation: operation.to_string(),
                    status,
                    body: body.chars().take(300).collect(),
                }));
            }
        }
        let body: Value = match response.json().await {
            Ok(v) => v,
            Err(e) => {
                inner.stats.transport_errors.fetch_add(1, Ordering::Relaxed);
                return Err(Answer::Transient(format!("body not readable: {e}")));
            }
        };
        let cost = body
            .pointer("/extensions/cost")
            .and_then(|c| serde_json::from_value::<Cost>(c.clone()).ok());
        if let Some(cost) = &cost {
            inner.budget.observe(operation, units, cost);
            if let Some(r) = cost.requested_query_cost {
                inner
                    .stats
                    .points_requested
                    .fetch_add(r as u64, Ordering::Relaxed);
            }
            if let Some(a) = cost.actual_query_cost {
                inner
                    .stats
                    .points_actual
                    .fetch_add(a as u64, Ordering::Relaxed);
            }
        }
        if let Some(errors) = body.get("errors").and_then(Value::as_array) {
            let code = |e: &Value| {
                e.pointer("/extensions/code")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let messages: Vec<String> = errors
                .iter()
                .map(|e| {
                    e.get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("(no message)")
                        .to_string()
                })
                .collect();
            let codes: Vec<String> = errors.iter().map(code).collect();
            let requested = cost
                .as_ref()
                .and_then(|c| c.requested_query_cost)
                .unwrap_or(0.0);
            if codes.iter().any(|c| c == "THROTTLED") {
                inner.stats.throttled.fetch_add(1, Ordering::Relaxed);
                return Err(Answer::Throttled(
                    inner.budget.wait_for(requested, own),
                    "THROTTLED".into(),
                ));
            }
            if codes.iter().any(|c| c == "MAX_COST_EXCEEDED") {
                return Err(fatal(ShopifyError::MaxCostExceeded {
                    operation: operation.to_string(),
                    requested,
                }));
            }
            if codes.iter().any(|c| c == "ACCESS_DENIED") {
                return Err(fatal(ShopifyError::AccessDenied {
                    operation: operation.to_string(),
                    message: messages.join("; "),
                }));
            }
            if codes.iter().any(|c| c == "INTERNAL_SERVER_ERROR") {
                inner.stats.server_errors.fetch_add(1, Ordering::Relaxed);
                return Err(Answer::Transient(messages.join("; ")));
            }
            return Err(fatal(ShopifyError::GraphQl {
                operation: operation.to_string(),
                messages,
            }));
        }
        let data = body.get("data").cloned().unwrap_or(Value::Null);
        if let Some(errors) = user_errors(&data) {
            return Err(fatal(ShopifyError::UserErrors {
                operation: operation.to_string(),
                errors,
            }));
        }
        Ok(data)
    }

    /// The access token to send, granting or refreshing one when needed.
    async fn token(&self, operation: &'static str) -> Result<String, ShopifyError> {
        use secrecy::ExposeSecret as _;
        match &self.inner.auth {
            Auth::None => {
                let _ = operation;
                Err(ShopifyError::NoCredentials)
            }
            Auth::Static(secret) => Ok(secret.expose().to_string()),
            Auth::Grant {
                client_id,
                client_secret,
                token_url,
                cached,
            } => {
                let mut cached = cached.lock().await;
                if let Some(t) = cached.as_ref()
                    && Instant::now() < t.refresh_at
                {
                    return Ok(t.token.expose_secret().to_string());
                }
                let granted = self.grant(client_id, client_secret, token_url).await?;
                let token = granted.token.expose_secret().to_string();
                *cached = Some(granted);
                Ok(token)
            }
        }
    }

    /// Drops the cached token if it is still the one that was refused: another request may
    /// already have replaced it, and throwing away the new one would only cost another grant.
    async fn forget_token(&self, refused: &str) {
        use secrecy::ExposeSecret as _;
        if let Auth::Grant { cached, .. } = &self.inner.auth {
            let mut cached = cached.lock().await;
            if cached
                .as_ref()
                .is_some_and(|t| t.token.expose_secret() == refused)
            {
                *cached = None;
            }
        }
    }

    async fn grant(
        &self,
        client_id: &str,
        client_secret: &Secret,
        token_url: &str,
    ) -> Result<GrantedToken, ShopifyError> {
        let settings = &self.inner.settings;
        let mut failures = 0;
        loop {
            let response = self
                .inner
                .http
                .post(token_url)
                .timeout(settings.request_timeout)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id),
                    ("client_secret", client_secret.expose()),
                ])
                .send()
                .await;
            let failure = match response {
                Ok(r) if r.status().is_success() => {
                    let granted: GrantResponse = r
                        .json()
                        .await
                        .map_err(|e| ShopifyError::Token(format!("unreadable answer: {e}")))?;
                    self.inner
                        .stats
                        .token_grants
                        .fetch_add(1, Ordering::Relaxed);
                    let ttl = Duration::from_secs(granted.expires_in);
                    // Refresh with a tenth of the lifetime (at most five minutes) to spare, so a
                    // token never expires between the check and the request.
                    let margin = (ttl / 10).min(Duration::from_secs(300));
                    return Ok(GrantedToken {
                        token: granted.access_token.into(),
                        refresh_at: Instant::now() + ttl.saturating_sub(margin),
                    });
                }
                Ok(r) if r.status().is_server_error() => format!("HTTP {}", r.status()),
                Ok(r) => {
                    // Wrong client id or secret: retrying will not fix it.
                    return Err(ShopifyError::Token(format!(
                        "the token endpoint answered HTTP {}",
                        r.status()
                    )));
                }
                Err(e) => format!("request failed: {e}"),
            };
            failures += 1;
            if failures >= settings.max_attempts {
                return Err(ShopifyError::Token(failure));
            }
            tokio::time::sleep(backoff(settings, failures)).await;
        }
    }
}

enum Answer {
    Fatal(ShopifyError),
    Unauthorized,
    Transient(String),
    Throttled(Duration, String),
}

/// Whether a GraphQL document's operation is a mutation (comments before it are skipped).
fn is_mutation(document: &str) -> bool {
    document
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .is_some_and(|l| l.starts_with("mutation"))
}

/// Exponential backoff with full jitter: a random wait up to `base * 2^attempt`, capped.
fn backoff(settings: &ClientSettings, attempt: u32) -> Duration {
    let ceiling = settings
        .base_backoff
        .saturating_mul(1u32 << attempt.min(16))
        .min(settings.max_backoff);
    let millis = ceiling.as_millis() as u64;
    Duration::from_millis(rand::random_range(millis / 4..=millis.max(1)))
}

/// The `userErrors` of every root field of a mutation's data, if any is non-empty.
fn user_errors(data: &Value) -> Option<Vec<UserError>> {
    let mut found = Vec::new();
    for root in data.as_object()?.values() {
        if let Some(errors) = root.get("userErrors").and_then(Value::as_array) {
            for e in errors {
                if let Ok(e) = serde_json::from_value::<UserError>(e.clone()) {
                    found.push(e);
                }
            }
        }
    }
    (!found.is_empty()).then_some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mutation_document_is_recognised_as_one() {
        // The guard against re-sending a mutation whose answer was lost rests on this.
        let mut seen = 0;
        for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/graphql")).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            if path.file_name().unwrap() == "schema.graphql" {
                continue;
            }
            let declares_mutation = text
                .lines()
                .any(|l| l.trim_start().starts_with("mutation "));
            assert_eq!(is_mutation(&text), declares_mutation, "{}", path.display());
            seen += 1;
        }
        assert_eq!(seen, 11);
    }

    #[test]
    fn backoff_grows_and_stays_under_the_cap() {
        let settings = ClientSettings::default();
        for attempt in 1..20 {
            let wait = backoff(&settings, attempt);
            assert!(wait <= settings.max_backoff);
        }
        assert!(backoff(&settings, 1) <= Duration::from_millis(400));
    }

    #[test]
    fn user_errors_are_found_in_any_root_field() {
        let data = serde_json::json!({
            "fulfillmentCreate": {"fulfillment": null, "userErrors": [
                {"field": ["fulfillment", "lineItemsByFulfillmentOrder"], "message": "Invalid fulfillment order line item quantity requested."}
            ]}
        });
        let errors = user_errors(&data).unwrap();
        assert_eq!(errors.len(), 1);
        assert!(user_errors_text(&errors).contains("Invalid fulfillment order line item quantity"));
        assert!(user_errors(&serde_json::json!({"x": {"userErrors": []}})).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_waits_for_learned_costs_and_follows_the_server() {
        let budget = Budget::new();
        // Unknown: the first request goes out at once to learn.
        let (r, waited) = budget.reserve("Q", 1).await;
        assert_eq!(waited, Duration::ZERO);
        drop(r);
        budget.observe(
            "Q",
            2,
            &Cost {
                requested_query_cost: Some(700.0),
                actual_query_cost: Some(40.0),
                throttle_status: Some(ThrottleStatus {
                    maximum_available: 2000.0,
                    currently_available: 100.0,
                    restore_rate: 100.0,
                }),
            },
        );
        // 350 per unit learned; two units need 700 points, 600 are missing: six seconds.
        let (_r, waited) = budget.reserve("Q", 2).await;
        assert!(
            (waited.as_secs_f64() - 6.0).abs() < 0.1,
            "waited {waited:?}"
        );
        // The reservation holds the points: a second request waits for its own.
        assert!(budget.view().unwrap().available >= 699.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_request_does_not_wait_for_its_own_reservation() {
        let budget = Budget::new();
        let cost = |available| Cost {
            requested_query_cost: Some(700.0),
            actual_query_cost: None,
            throttle_status: Some(ThrottleStatus {
                maximum_available: 2000.0,
                currently_available: available,
                restore_rate: 100.0,
            }),
        };
        budget.observe("Q", 1, &cost(2000.0));
        let (reservation, _) = budget.reserve("Q", 1).await;
        // The server disagrees: only 100 points left. 600 are missing: six seconds, not
        // thirteen (the request's own 700 points are given back before it retries).
        budget.observe("Q", 1, &cost(100.0));
        let wait = budget.wait_for(700.0, reservation.points);
        assert!((wait.as_secs_f64() - 6.0).abs() < 0.1, "waited {wait:?}");
    }
}
