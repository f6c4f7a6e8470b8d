//! The sandbox Shopify: a loopback Admin GraphQL API that behaves like Shopify where shipgate
//! depends on it, deterministic given a seed.
//!
//! It answers the documents in `graphql/` (and any other document over the same fields) with
//! Shopify's authentication (static tokens and the client-credentials grant), cost calculation,
//! leaky-bucket throttling, search syntax and cursor pagination, fulfillment-order rules, holds,
//! bulk operations, and signed webhooks. Faults (throttling, 429, 5xx, lost responses, dropped,
//! duplicated and reordered webhooks) are switched on with [`Faults`]; every random choice comes
//! from [`SandboxConfig::seed`].
//!
//! In-process tests drive it through [`SandboxShopify`]'s methods; a separately running daemon or
//! a person with curl uses the JSON control API under `/_sandbox/` (see `server.rs`).
//!
//! Layout: `engine` parses documents, computes costs and projects objects onto selections;
//! `resolve` answers root fields and mutations; `model` holds the shop's data and rules;
//! `search` the `orders` search syntax and cursors; `bucket` the leaky bucket and the clock;
//! `webhooks` the delivery worker; `server` the HTTP routes; `sample` the order generator.

// Every public item here is documented; the lint keeps it that way.
#![warn(missing_docs)]

mod bucket;
mod engine;
mod model;
mod resolve;
mod sample;
mod search;
mod server;
#[cfg(test)]
mod tests;
mod webhooks;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use bucket::{Bucket, Clock};
use model::{FulfillmentSpec, Rng, State, Tracking, gid};

pub use sample::sample_orders;

/// A Shopify plan: it sets the size and restore rate of the cost bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Plan {
    /// Restores 100 points a second into a bucket of 2,000.
    #[default]
    Standard,
    /// Restores 200 points a second into a bucket of 4,000.
    Advanced,
    /// Restores 1,000 points a second into a bucket of 20,000.
    Plus,
    /// Restores 2,000 points a second into a bucket of 40,000.
    Enterprise,
}

impl Plan {
    /// Points restored per second.
    pub fn restore_rate(self) -> f64 {
        match self {
            Plan::Standard => 100.0,
            Plan::Advanced => 200.0,
            Plan::Plus => 1000.0,
            Plan::Enterprise => 2000.0,
        }
    }

    /// The bucket's size: 20 seconds of restoring, as observed on Shopify.
    pub fn bucket_size(self) -> f64 {
        self.restore_rate() * 20.0
    }

    /// The plan's name as `shop { plan { displayName } }` shows it.
    pub fn display_name(self) -> &'static str {
        match self {
            Plan::Standard => "Basic",
            Plan::Advanced => "Advanced",
            Plan::Plus => "Shopify Plus",
            Plan::Enterprise => "Commerce Components",
        }
    }
}

/// How the sandbox shop is set up.
#[derive(Clone)]
pub struct SandboxConfig {
    /// The shop's domain, e.g. `sandbox-store.myshopify.com` (the webhooks' shop header).
    pub shop: String,
    /// The plan, which sizes the cost bucket.
    pub plan: Plan,
    /// Tokens accepted in `X-Shopify-Access-Token` without a grant (legacy custom-app tokens).
    pub static_tokens: Vec<String>,
    /// The client id of the client-credentials grant.
    pub client_id: String,
    /// The client secret of the client-credentials grant.
    pub client_secret: String,
    /// How long granted tokens live (`expires_in`); Shopify's is 86,399 seconds.
    pub token_ttl: Duration,
    /// The key webhooks are signed with (the app's client secret).
    pub webhook_secret: Vec<u8>,
    /// Where webhooks go, e.g. `http://127.0.0.1:PORT/webhooks/shopify`; None sends none
    /// (subscriptions made with `webhookSubscriptionCreate` still get theirs).
    pub webhook_url: Option<String>,
    /// The seed of every random choice (faults, webhook ids, shuffling, tokens).
    pub seed: u64,
    /// Location names; lines name them by index. Empty means the two defaults.
    pub locations: Vec<String>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            shop: "sandbox-store.myshopify.com".into(),
            plan: Plan::Standard,
            static_tokens: vec!["shpat_sandbox_static_token".into()],
            client_id: "sandbox-client-id".into(),
            client_secret: "sandbox-client-secret".into(),
            token_ttl: Duration::from_secs(86_399),
            webhook_secret: b"sandbox-webhook-secret".to_vec(),
            webhook_url: None,
            seed: 0,
            locations: vec!["Shenzhen Warehouse".into(), "Los Angeles 3PL".into()],
        }
    }
}

impl std::fmt::Debug for SandboxConfig {
    // Secrets stay out of debug output, as everywhere in shipgate.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("shop", &self.shop)
            .field("plan", &self.plan)
            .field("webhook_url", &self.webhook_url)
            .field("seed", &self.seed)
            .field("locations", &self.locations)
            .finish_non_exhaustive()
    }
}

/// Fault switches. Probabilities are 0.0..=1.0; everything defaults to off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Answer THROTTLED (HTTP 200) even with budget left.
    pub throttled: f64,
    /// Answer HTTP 429 with `Retry-After: 1`.
    pub http_429: f64,
    /// Answer 502, 503 or 500 (with an INTERNAL_SERVER_ERROR body) without executing.
    pub http_5xx: f64,
    /// Execute a mutation, then answer 502 as if the response was lost on the way: the outcome
    /// is unknown to the client although the effect happened.
    pub lost_response: f64,
    /// Drop a webhook delivery (never sent).
    pub webhook_drop: f64,
    /// Send a delivery twice with the same `X-Shopify-Webhook-Id`.
    pub webhook_duplicate: f64,
    /// Deliver the webhooks queued at the same time in shuffled order.
    pub webhook_reorder: bool,
}

/// The cost bucket as a client would read it from `throttleStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BucketState {
    /// The bucket's size.
    pub maximum_available: f64,
    /// Points available now.
    pub currently_available: f64,
    /// Points restored per second.
    pub restore_rate: f64,
}

/// Counters of what the sandbox saw and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SandboxStats {
    /// GraphQL requests received (all outcomes).
    pub requests: u64,
    /// THROTTLED answers because the bucket was short.
    pub throttled_natural: u64,
    /// THROTTLED answers forced by [`Faults::throttled`].
    pub throttled_forced: u64,
    /// 429 answers.
    pub http_429: u64,
    /// 5xx answers (lost responses included).
    pub http_5xx: u64,
    /// Mutations executed whose answer was replaced by a 502.
    pub lost_responses: u64,
    /// Requested points of executed requests.
    pub points_requested: u64,
    /// Actual points of executed requests (after the refund).
    pub points_actual: u64,
    /// MAX_COST_EXCEEDED answers.
    pub max_cost_exceeded: u64,
    /// 401 answers.
    pub unauthorized: u64,
    /// Tokens granted by the client-credentials grant.
    pub tokens_granted: u64,
    /// Webhook deliveries answered 2xx (duplicates included).
    pub webhooks_sent: u64,
    /// Webhook deliveries dropped by the fault switch.
    pub webhooks_dropped: u64,
    /// Webhook deliveries sent twice by the fault switch.
    pub webhooks_duplicated: u64,
    /// Webhook deliveries given up after every retry failed.
    pub webhooks_failed: u64,
    /// Webhook retries after a failed attempt.
    pub webhook_retries: u64,
    /// Requests per operation name (the first root field for anonymous operations).
    pub per_operation: BTreeMap<String, u64>,
}

/// An order to create.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewOrder {
    /// The order's name; default `#1001`, `#1002`, …
    #[serde(default)]
    pub name: Option<String>,
    /// Its lines (at least one).
    pub lines: Vec<NewLine>,
    /// The customer's email.
    #[serde(default)]
    pub customer_email: Option<String>,
    /// The shipping address in GraphQL field names (`name`, `address1`, `city`, `provinceCode`,
    /// `zip`, `countryCodeV2`, `phone`, …).
    #[serde(default)]
    pub shipping_address: Option<Value>,
}

/// A line of a new order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewLine {
    /// The SKU.
    pub sku: String,
    /// The quantity ordered (at least 1).
    pub quantity: i64,
    /// The index of the location in [`SandboxConfig::locations`]: each distinct location gets
    /// one fulfillment order.
    #[serde(default)]
    pub location: usize,
    /// The variant's title, e.g. `Black / XL`.
    #[serde(default)]
    pub variant_title: Option<String>,
}

/// A change made to an order in the shop admin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OrderEdit {
    /// Sets the current quantity of the line with this SKU (not below what was fulfilled).
    SetQuantity {
        /// The line's SKU.
        sku: String,
        /// The new quantity.
        quantity: i64,
    },
    /// Adds a line.
    AddLine(NewLine),
}

/// Why a control operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    /// No order has this id.
    #[error("no order {0}")]
    UnknownOrder(String),
    /// No fulfillment order has this id.
    #[error("no fulfillment order {0}")]
    UnknownFulfillmentOrder(String),
    /// The change is not possible (the text says why).
    #[error("{0}")]
    Invalid(String),
}

/// The shared parts of the sandbox, behind one lock: every request and control call is short.
pub(crate) struct Shared {
    pub state: State,
    pub bucket: Bucket,
    pub faults: Faults,
    pub fault_rng: Rng,
    pub token_rng: Rng,
    pub tokens: HashMap<String, tokio::time::Instant>,
    pub stats: SandboxStats,
    pub webhook_url: Option<String>,
    /// Whether the app is installed: an uninstalled app's tokens are refused (401), it is
    /// granted none, and it is sent no webhooks.
    pub installed: bool,
}

/// What the server, the worker and the handle share.
pub(crate) struct Inner {
    pub shop: String,
    pub plan: Plan,
    pub static_tokens: Vec<String>,
    pub client_id: String,
    pub client_secret: String,
    pub token_ttl: Duration,
    pub webhook_secret: Vec<u8>,
    pub seed: u64,
    pub base_url: String,
    pub clock: Clock,
    pub queue: webhooks::Queue,
    shared: Mutex<Shared>,
}

impl Inner {
    /// Locks the shared parts. A panic elsewhere must not take the sandbox down with it, so a
    /// poisoned lock is used as it is.
    pub fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a change on the state and queues the webhooks it caused, under the lock so that
    /// webhooks are queued in the order of the changes.
    pub fn change<R>(&self, f: impl FnOnce(&mut Shared, i64) -> R) -> R {
        let now = self.clock.unix_ms();
        let mut shared = self.shared();
        shared.state.emitting = shared.installed
            && (shared.webhook_url.is_some() || !shared.state.subscriptions.is_empty());
        let result = f(&mut shared, now);
        self.queue_outbox(&mut shared);
        result
    }

    /// Queues what the state's outbox holds, for topics that have somewhere to go.
    pub fn queue_outbox(&self, shared: &mut Shared) {
        let outbox = std::mem::take(&mut shared.state.outbox);
        for out in outbox {
            let has_target = shared.webhook_url.is_some()
                || shared
                    .state
                    .subscriptions
                    .iter()
                    .any(|s| s.topic == out.topic);
            if has_target {
                self.queue.push(out.topic, out.body, out.at_ms);
            }
        }
    }

    /// The bucket's state now.
    pub fn bucket_state(&self, shared: &mut Shared) -> BucketState {
        BucketState {
            maximum_available: shared.bucket.maximum,
            currently_available: shared.bucket.available(self.clock.now()),
            restore_rate: shared.bucket.rate,
        }
    }
}

/// A running sandbox Shopify. Cloning gives another handle to the same shop.
#[derive(Clone)]
pub struct SandboxShopify {
    inner: Arc<Inner>,
    cancel: CancellationToken,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl SandboxShopify {
    /// Starts the sandbox on `127.0.0.1:0` with its webhook worker.
    pub async fn start(config: SandboxConfig) -> anyhow::Result<SandboxShopify> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let locations = if config.locations.is_empty() {
            SandboxConfig::default().locations
        } else {
            config.locations.clone()
        };
        let clock = Clock::new();
        let (queue, rx) = webhooks::Queue::new(config.seed);
        let inner = Arc::new(Inner {
            shop: config.shop.clone(),
            plan: config.plan,
            static_tokens: config.static_tokens.clone(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            token_ttl: config.token_ttl,
            webhook_secret: config.webhook_secret.clone(),
            seed: config.seed,
            base_url,
            shared: Mutex::new(Shared {
                state: State::new(&config.shop, &locations),
                bucket: Bucket::new(
                    config.plan.bucket_size(),
                    config.plan.restore_rate(),
                    clock.now(),
                ),
                faults: Faults::default(),
                fault_rng: Rng::new(config.seed, 1),
                token_rng: Rng::new(config.seed, 2),
                tokens: HashMap::new(),
                stats: SandboxStats::default(),
                webhook_url: config.webhook_url.clone(),
                installed: true,
            }),
            clock,
            queue,
        });
        let cancel = CancellationToken::new();
        let worker = tokio::spawn(webhooks::run(inner.clone(), rx, cancel.clone()));
        let router = server::router(inner.clone());
        let settings = crate::http::HttpSettings {
            header_read_timeout: Duration::from_secs(10),
            grace: Duration::from_secs(1),
        };
        let server_cancel = cancel.clone();
        let server = tokio::spawn(async move {
            crate::http::serve(listener, router, settings, server_cancel).await;
        });
        Ok(SandboxShopify {
            inner,
            cancel,
            tasks: Arc::new(Mutex::new(vec![worker, server])),
        })
    }

    /// `http://127.0.0.1:PORT`: shipgate's `admin_base_url`. GraphQL is at
    /// `{base}/admin/api/{version}/graphql.json`, the token grant at
    /// `{base}/admin/oauth/access_token`, the control API under `{base}/_sandbox/`.
    pub fn base_url(&self) -> String {
        self.inner.base_url.clone()
    }

    /// The GraphQL endpoint for an API version.
    pub fn graphql_url(&self, version: &str) -> String {
        format!("{}/admin/api/{version}/graphql.json", self.inner.base_url)
    }

    /// The shop's domain.
    pub fn shop(&self) -> &str {
        &self.inner.shop
    }

    /// Switches faults on or off.
    pub fn set_faults(&self, faults: Faults) {
        self.inner.shared().faults = faults;
    }

    /// Changes where webhooks go (None: nowhere).
    pub fn set_webhook_url(&self, url: Option<String>) {
        self.inner.shared().webhook_url = url;
    }

    /// Creates an order; returns its gid and emits orders/create. Panics on an order the shop
    /// cannot hold (no lines, a location index out of range, a quantity below 1): that is a
    /// mistake in the test, not a condition to handle. [`Self::try_create_order`] returns it.
    pub fn create_order(&self, order: NewOrder) -> String {
        self.try_create_order(order)
            .unwrap_or_else(|e| panic!("sandbox create_order: {e}"))
    }

    /// Creates an order, or says why it cannot.
    pub fn try_create_order(&self, order: NewOrder) -> Result<String, SandboxError> {
        self.inner
            .change(|s, now| s.state.create_order(&order, now))
            .map(|id| gid("Order", id))
    }

    fn order_num(&self, shared: &Shared, id: &str) -> Result<u64, SandboxError> {
        shared
            .state
            .order_id(id)
            .ok_or_else(|| SandboxError::UnknownOrder(id.to_string()))
    }

    /// Edits an order as the merchant would; emits orders/edited and orders/updated.
    pub fn edit_order(&self, id: &str, edit: OrderEdit) -> Result<(), SandboxError> {
        self.inner.change(|s, now| {
            let n = self.order_num(s, id)?;
            s.state.edit_order(n, &edit, now)
        })
    }

    /// Cancels an order (`reason` is an `OrderCancelReason` name); emits orders/cancelled and
    /// orders/updated. Its open fulfillment orders close and nothing remains to fulfil.
    pub fn cancel_order(&self, id: &str, reason: &str) -> Result<(), SandboxError> {
        self.inner.change(|s, now| {
            let n = self.order_num(s, id)?;
            s.state.cancel_order(n, reason, now)
        })
    }

    /// Replaces the order's shipping address (its JSON as `NewOrder::shipping_address` takes
    /// it), as the owner does in the admin; bumps updatedAt and emits orders/updated.
    pub fn set_shipping_address(
        &self,
        id: &str,
        address: serde_json::Value,
    ) -> Result<(), SandboxError> {
        self.inner.change(|s, now| {
            let n = self.order_num(s, id)?;
            s.state.set_shipping_address(n, address, now)
        })
    }

    /// Changes the order's note, which bumps updatedAt; emits orders/updated.
    pub fn touch_order(&self, id: &str) -> Result<(), SandboxError> {
        self.inner.change(|s, now| {
            let n = self.order_num(s, id)?;
            s.state.touch_order(n, now)
        })
    }

    /// Places a hold as the merchant (`heldByRequestingApp: false`, no handle); returns the
    /// hold's gid.
    pub fn merchant_hold(
        &self,
        fulfillment_order_id: &str,
        reason: &str,
    ) -> Result<String, SandboxError> {
        if !model::HOLD_REASONS.contains(&reason) {
            return Err(SandboxError::Invalid(format!(
                "{reason} is not a FulfillmentHoldReason"
            )));
        }
        self.inner.change(|s, now| {
            s.state
                .place_hold(
                    fulfillment_order_id,
                    reason,
                    Some("Held by the merchant".into()),
                    None,
                    false,
                    now,
                )
                .map(|(_, hold)| gid("FulfillmentHold", hold))
                .map_err(|e| fo_error(fulfillment_order_id, e))
        })
    }

    /// Releases every hold on a fulfillment order as the merchant would.
    pub fn merchant_release(&self, fulfillment_order_id: &str) -> Result<(), SandboxError> {
        self.inner.change(|s, now| {
            s.state
                .release_holds(fulfillment_order_id, None, false, now)
                .map(|_| ())
                .map_err(|e| fo_error(fulfillment_order_id, e))
        })
    }

    /// Fulfils everything that remains on a fulfillment order as another app or the merchant
    /// would (not through shipgate); returns the fulfillment's gid.
    pub fn fulfill_outside(
        &self,
        fulfillment_order_id: &str,
        tracking_number: &str,
    ) -> Result<String, SandboxError> {
        let spec = FulfillmentSpec {
            groups: vec![(fulfillment_order_id.to_string(), None)],
            tracking: vec![Tracking {
                company: Some("USPS".into()),
                number: Some(tracking_number.to_string()),
                url: model::tracking_url(Some("USPS"), tracking_number),
            }],
            notify_customer: false,
            message: None,
            by_app: false,
        };
        self.inner.change(|s, now| {
            s.state
                .create_fulfillment(&spec, now)
                .map(|id| gid("Fulfillment", id))
                .map_err(|e| fo_error(fulfillment_order_id, e))
        })
    }

    /// Uninstalls the app as the merchant would: `app/uninstalled` is sent, every token the
    /// app holds is refused from now on (401), and no webhook is sent until [`Self::reinstall`].
    pub fn uninstall(&self) {
        let shop = self.inner.shop.clone();
        self.inner.change(|s, now| {
            s.state.app_uninstalled(&shop, now);
            s.installed = false;
            s.tokens.clear();
        });
    }

    /// Installs the app again. Like a reinstall without order traffic, it sends no webhook:
    /// the app only notices because its Admin API calls are answered again. (The static tokens
    /// of the configuration are accepted again; a real reinstall issues a new one.)
    pub fn reinstall(&self) {
        self.inner.shared().installed = true;
    }

    /// Cancels a fulfillment as the merchant would in the admin: it stays on the order as
    /// CANCELLED and its quantities are open to fulfil again.
    pub fn cancel_fulfillment(&self, fulfillment_id: &str) -> Result<(), SandboxError> {
        self.inner.change(|s, now| {
            s.state
                .cancel_fulfillment(fulfillment_id, now)
                .map_err(|e| SandboxError::Invalid(e.message))
        })
    }

    /// The whole order in GraphQL field names (connections as `{"nodes": [...]}`), as the
    /// resolvers see it: for comparing with shipgate's mirror.
    pub fn order_snapshot(&self, id: &str) -> Option<Value> {
        let shared = self.inner.shared();
        let n = shared.state.order_id(id)?;
        Some(engine::render_plain(
            &shared.state.order_json(&shared.state.orders[&n]),
        ))
    }

    /// Every order's gid, oldest first.
    pub fn order_ids(&self) -> Vec<String> {
        self.inner
            .shared()
            .state
            .orders
            .keys()
            .map(|id| gid("Order", *id))
            .collect()
    }

    /// The gids of an order's fulfillment orders, in creation order.
    pub fn fulfillment_order_ids(&self, order_id: &str) -> Vec<String> {
        let shared = self.inner.shared();
        shared
            .state
            .order_id(order_id)
            .map(|n| {
                shared.state.orders[&n]
                    .fos
                    .iter()
                    .map(|fo| gid("FulfillmentOrder", fo.id))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The cost bucket now.
    pub fn bucket(&self) -> BucketState {
        let mut shared = self.inner.shared();
        self.inner.bucket_state(&mut shared)
    }

    /// Sets the points available now (0 drains the bucket), for tests of throttling.
    pub fn set_bucket_available(&self, points: f64) {
        let now = self.inner.clock.now();
        self.inner.shared().bucket.set(points, now);
    }

    /// Moves the sandbox clock forward: the bucket refills, granted tokens age, and later
    /// changes get later timestamps. Tests use this instead of sleeping; it also composes
    /// with a paused tokio clock where `test-util` is enabled.
    pub fn advance_clock(&self, by: Duration) {
        self.inner.clock.advance(by);
    }

    /// The counters.
    pub fn stats(&self) -> SandboxStats {
        self.inner.shared().stats.clone()
    }

    /// Resolves once every webhook queued so far was attempted (delivered, dropped or given up).
    pub async fn flush_webhooks(&self) {
        self.inner.queue.flush().await;
    }

    /// The fulfillments of an order in GraphQL field names (tracking, events, line items), each
    /// with `"origin": "app"` (made through the API) or `"outside"`, and the `notifyCustomer`
    /// and `message` it was created with.
    pub fn fulfillments(&self, order_id: &str) -> Vec<Value> {
        let shared = self.inner.shared();
        let Some(n) = shared.state.order_id(order_id) else {
            return Vec::new();
        };
        let order = &shared.state.orders[&n];
        order
            .fulfillments
            .iter()
            .map(|f| {
                let mut v = engine::render_plain(&shared.state.fulfillment_json(order, f));
                v["origin"] = Value::from(if f.by_app { "app" } else { "outside" });
                v["notifyCustomer"] = Value::from(f.notify_customer);
                v["message"] = f.message.clone().map_or(Value::Null, Value::from);
                v
            })
            .collect()
    }

    /// The webhook subscriptions made through `webhookSubscriptionCreate`, as (topic, uri).
    pub fn webhook_subscriptions(&self) -> Vec<(String, String)> {
        self.inner
            .shared()
            .state
            .subscriptions
            .iter()
            .map(|s| (s.topic.clone(), s.uri.clone()))
            .collect()
    }

    /// Stops the server and the webhook worker and waits for both.
    pub async fn stop(self) {
        self.cancel.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }
}

fn fo_error(fo: &str, e: model::UserError) -> SandboxError {
    if e.code == Some("FULFILLMENT_ORDER_NOT_FOUND") || e.message.contains("does not exist") {
        SandboxError::UnknownFulfillmentOrder(fo.to_string())
    } else {
        SandboxError::Invalid(e.message)
    }
}
