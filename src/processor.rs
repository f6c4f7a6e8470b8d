//! Turns stored deliveries into work, in arrival order, after they were acknowledged.
//!
//! The intake only stores; this worker takes each delivery from the store's inbox, acts on it and
//! marks it done. Every action is idempotent, because a crash between acting and marking done
//! repeats the action on restart: order deliveries become coalescing per-order triggers (the order
//! mirror fetches the order itself, so webhooks are triggers, never truth), `app/uninstalled`
//! stops work for its shop, and the compliance topics erase or export what they name.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::compliance::{self, CustomerRequest};
use crate::delivery::{Delivery, Origin, now_ms};
use crate::store::{Store, StoreError};
use crate::suppliers::SupplierEvent;
use crate::workflow::model::Source;
use crate::workflow::{EventApplied, Workflow, WorkflowError};

/// How many deliveries one pass takes from the inbox.
const BATCH: usize = 256;

/// What the processor needs besides the store.
#[derive(Debug, Clone)]
pub struct ProcessorSettings {
    /// Where `customers/data_request` exports are written.
    pub export_dir: PathBuf,
    /// Where supplier events are applied (none: they are kept unprocessed).
    pub workflow: Option<Workflow>,
}

/// What became of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An order was queued to be (re)fetched.
    OrderTriggered { order_gid: String },
    /// Work for the shop was stopped (`app/uninstalled`).
    ShopStopped,
    /// A customer's data was erased from this many deliveries.
    CustomerRedacted { deliveries: usize },
    /// A customer's data was exported to this file.
    CustomerExported { path: PathBuf },
    /// Everything of the shop was erased.
    ShopErased { deliveries: usize },
    /// The shop is uninstalled: the delivery was kept but starts no work.
    SkippedUninstalled,
    /// The shop was erased (`shop/redact`) after this delivery was triggered: a late retry of
    /// data the erasure covers, so it is dropped as the erasure would have.
    DroppedErased,
    /// No work follows from this topic (yet); the delivery is kept.
    Kept,
    /// The payload could not be understood; it is kept for an operator to look at.
    Unreadable { reason: String },
    /// A supplier event was recorded as evidence of its shipment.
    SupplierEventRecorded { shipment_id: String },
    /// A supplier event that was already recorded (a replay after a crash).
    SupplierEventKnown { shipment_id: String },
    /// Carrier events recorded on this many shipments (0: no label carries the number yet;
    /// the events wait for the label).
    TrackingApplied { numbers: usize, recorded: usize },
}

/// Runs until `cancel` fires, processing the inbox as it fills.
pub async fn run(store: Store, settings: ProcessorSettings, cancel: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        // Register interest before looking, so a delivery stored in between still wakes us.
        let filled = store.inbox_filled();
        tokio::pin!(filled);
        match process_pending(&store, &settings).await {
            Ok(0) => {
                backoff = Duration::from_millis(100);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = &mut filled => {}
                }
            }
            Ok(_) => {
                backoff = Duration::from_millis(100);
                if cancel.is_cancelled() {
                    return;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, retry_in = ?backoff, "processing deliveries failed");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Processes what the inbox holds now; returns how many deliveries were handled.
pub async fn process_pending(
    store: &Store,
    settings: &ProcessorSettings,
) -> Result<usize, StoreError> {
    let mut handled = 0;
    loop {
        let batch = store.inbox(BATCH)?;
        if batch.is_empty() {
            return Ok(handled);
        }
        let mut done = Vec::with_capacity(batch.len());
        for (seq, delivery) in batch {
            // An earlier delivery of this batch (shop/redact) may have erased this one.
            if store.has_delivery(seq)? {
                let outcome = match &delivery.origin {
                    Origin::Supplier { supplier } => {
                        apply_supplier_event(settings, seq, supplier, &delivery).await
                    }
                    Origin::Shopify { .. } => process(store, settings, seq, &delivery),
                    Origin::Tracking { provider } => {
                        apply_tracking(settings, seq, provider, &delivery).await
                    }
                };
                let outcome = match outcome {
                    Ok(outcome) => outcome,
                    // A record this delivery needs cannot be read: retrying reads the same bytes,
                    // and would stop every shop's processing behind this one delivery.
                    Err(e @ StoreError::Corrupt { .. }) => Outcome::Unreadable {
                        reason: e.to_string(),
                    },
                    Err(e) => return Err(e),
                };
                log_outcome(seq, &delivery, &outcome);
            }
            done.push(seq);
        }
        // Erasures and state changes reach the disk before their deliveries count as done.
        store.flush().await?;
        for seq in done {
            store.inbox_done(seq)?;
            handled += 1;
        }
    }
}

fn log_outcome(seq: u64, delivery: &Delivery, outcome: &Outcome) {
    let shop = delivery.origin.sender();
    let topic = delivery.topic.as_str();
    match outcome {
        Outcome::Unreadable { reason } => {
            tracing::warn!(seq, shop, topic, reason, "delivery kept unprocessed")
        }
        Outcome::CustomerExported { path } => {
            tracing::info!(seq, shop, topic, path = %path.display(), "customer data exported")
        }
        other => tracing::debug!(seq, shop, topic, outcome = ?other, "delivery processed"),
    }
}

/// Applies a stored tracking-provider delivery: each carrier event to the shipments whose label
/// carries its number.
async fn apply_tracking(
    settings: &ProcessorSettings,
    seq: u64,
    provider: &str,
    delivery: &Delivery,
) -> Result<Outcome, StoreError> {
    let Some(workflow) = &settings.workflow else {
        return Ok(Outcome::Kept);
    };
    let Some(reader) = crate::tracking::WebhookProvider::from_name(provider) else {
        return Ok(Outcome::Unreadable {
            reason: format!("unknown tracking provider {provider}"),
        });
    };
    let parsed = match reader.parse(&delivery.body) {
        Ok(parsed) => parsed,
        Err(e) => return Ok(Outcome::Unreadable { reason: e.0 }),
    };
    let numbers = parsed
        .events
        .iter()
        .map(|e| e.tracking_number.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let mut recorded = 0;
    for event in parsed.events {
        recorded += workflow
            .apply_tracking(event, Source::TrackingWebhook { delivery_seq: seq })
            .await?;
    }
    Ok(Outcome::TrackingApplied { numbers, recorded })
}

/// Applies a stored supplier event to its shipment.
async fn apply_supplier_event(
    settings: &ProcessorSettings,
    seq: u64,
    supplier: &str,
    delivery: &Delivery,
) -> Result<Outcome, StoreError> {
    let Some(workflow) = &settings.workflow else {
        return Ok(Outcome::Kept);
    };
    let event = match SupplierEvent::from_json(&delivery.body) {
        Ok(event) => event,
        Err(e) => return Ok(Outcome::Unreadable { reason: e.0 }),
    };
    let shipment_id = event.shipment_id.clone();
    match workflow
        .apply_event(
            supplier,
            event,
            Source::SupplierWebhook { delivery_seq: seq },
        )
        .await
    {
        Ok(EventApplied::Recorded) => Ok(Outcome::SupplierEventRecorded { shipment_id }),
        Ok(EventApplied::AlreadyRecorded) => Ok(Outcome::SupplierEventKnown { shipment_id }),
        // The intake checked the event against the shipment; one that no longer fits (the
        // shop was erased meanwhile) is kept for an operator, not retried forever.
        Err(WorkflowError::Invalid(reason)) | Err(WorkflowError::NotFound(reason)) => {
            Ok(Outcome::Unreadable { reason })
        }
        Err(WorkflowError::Store(e)) => Err(e),
    }
}

/// Acts on one delivery.
pub fn process(
    store: &Store,
    settings: &ProcessorSettings,
    seq: u64,
    delivery: &Delivery,
) -> Result<Outcome, StoreError> {
    let shop = match &delivery.origin {
        Origin::Shopify { shop } => shop,
        // Supplier events are applied by the workflow, which is wired in with the suppliers.
        Origin::Supplier { .. } => return Ok(Outcome::Kept),
        // Carrier events are evidence of shipments, applied by the workflow above.
        Origin::Tracking { .. } => return Ok(Outcome::Kept),
    };
    let topic = delivery.topic.as_str();
    match topic {
        "shop/redact" => {
            // The topic header is not signed: only a body that is a shop/redact request for
            // this very shop may erase it.
            #[derive(Deserialize)]
            struct ShopRedact {
                shop_domain: String,
            }
            let request = match serde_json::from_slice::<ShopRedact>(&delivery.body) {
                Ok(r) => r,
                Err(e) => {
                    return Ok(Outcome::Unreadable {
                        reason: format!(
                            "not a shop/redact request ({})",
                            compliance::json_error_position(&e)
                        ),
                    });
                }
            };
            if let Err(e) = compliance::check_shop("shop/redact", Some(&request.shop_domain), shop)
            {
                return Ok(Outcome::Unreadable {
                    reason: e.to_string(),
                });
            }
            compliance::erase_exports(&settings.export_dir, shop);
            // The request's own time orders it against install signals, as an uninstall's does.
            let at = triggered_ms(delivery).unwrap_or_else(|| now_ms() as i64);
            let erased = store.erase_shop(shop, Some(seq), at.max(0) as u64)?;
            return Ok(Outcome::ShopErased {
                deliveries: erased.deliveries,
            });
        }
        "customers/redact" => {
            return Ok(
                match CustomerRequest::parse("customers/redact", &delivery.body)
                    .and_then(|r| r.check_shop("customers/redact", shop).map(|()| r))
                {
                    Ok(request) => {
                        match compliance::redact_customer(store, seq, &delivery.origin, &request) {
                            Ok(deliveries) => Outcome::CustomerRedacted { deliveries },
                            Err(compliance::ComplianceError::Store(e)) => return Err(e),
                            Err(e) => Outcome::Unreadable {
                                reason: e.to_string(),
                            },
                        }
                    }
                    Err(e) => Outcome::Unreadable {
                        reason: e.to_string(),
                    },
                },
            );
        }
        // A request already cut down to ids was handled before a crash repeated it: exporting
        // again from the cut-down request would overwrite the export with a poorer one.
        "customers/data_request" if delivery.redacted => return Ok(Outcome::Kept),
        "customers/data_request" => {
            return Ok(
                match CustomerRequest::parse("customers/data_request", &delivery.body)
                    .and_then(|r| r.check_shop("customers/data_request", shop).map(|()| r))
                {
                    Ok(request) => match compliance::export_customer(
                        store,
                        &settings.export_dir,
                        seq,
                        &delivery.origin,
                        &request,
                    ) {
                        Ok(path) => Outcome::CustomerExported { path },
                        Err(compliance::ComplianceError::Store(e)) => return Err(e),
                        Err(e) => Outcome::Unreadable {
                            reason: e.to_string(),
                        },
                    },
                    Err(e) => Outcome::Unreadable {
                        reason: e.to_string(),
                    },
                },
            );
        }
        "app/uninstalled" => {
            // Deliveries arrive out of order: a late retry of an old uninstall must not stop a
            // shop that was installed again since, nor wind the uninstall's time back (an order
            // webhook between the two would then look like a reinstall). The store applies both
            // rules atomically against the poller's probe.
            let at = triggered_ms(delivery)
                .unwrap_or_else(|| now_ms() as i64)
                .max(0) as u64;
            return Ok(if store.mark_uninstalled(shop, at)? {
                Outcome::ShopStopped
            } else {
                Outcome::Kept
            });
        }
        _ => {}
    }
    // Shopify retries a delivery for up to 48 hours, so one triggered before the erasure can
    // arrive after it: the erasure covers its data too. (Without the time, it is taken as old:
    // an erased shop sends nothing new until it is installed again, which an order webhook
    // triggered after the erasure shows.)
    if let Some(erased) = store.shop_state(shop)?.and_then(|s| s.erased_at_ms)
        && triggered_ms(delivery).is_none_or(|at| at <= erased as i64)
    {
        store.drop_delivery(seq)?;
        return Ok(Outcome::DroppedErased);
    }
    if let Some(state) = store.shop_state(shop)?
        && let Some(uninstalled) = state.uninstalled_at_ms
    {
        // Shopify sends an uninstalled app no order webhooks: one triggered after the uninstall
        // means the app was installed again, and work resumes.
        match triggered_ms(delivery) {
            Some(at) if at > uninstalled as i64 => {
                // Compare-and-swap: the probe may have resumed the shop meanwhile (fine), but
                // a newer uninstall recorded meanwhile keeps it stopped.
                if store.mark_reinstalled(shop, at as u64)? {
                    tracing::info!(%shop, "order webhook after the uninstall: the app was reinstalled; work resumes");
                } else if store.shop_state(shop)?.is_some_and(|s| s.is_stopped()) {
                    return Ok(Outcome::SkippedUninstalled);
                }
            }
            _ => return Ok(Outcome::SkippedUninstalled),
        }
    }

    if topic.starts_with("fulfillment_orders/") || topic.starts_with("fulfillments/") {
        let orders = orders_named(store, shop, &delivery.body)?;
        if orders.is_empty() {
            // Not mirrored yet: the order's own webhook or the next scan brings it in.
            return Ok(Outcome::Kept);
        }
        for order_gid in &orders {
            store.trigger_order(shop, order_gid, delivery.header("x-shopify-triggered-at"))?;
        }
        return Ok(Outcome::OrderTriggered {
            order_gid: orders.join(","),
        });
    }
    if topic.starts_with("orders/") {
        return Ok(match order_gid(&delivery.body) {
            Ok(order_gid) => {
                store.trigger_order(shop, &order_gid, delivery.header("x-shopify-triggered-at"))?;
                Outcome::OrderTriggered { order_gid }
            }
            Err(reason) => Outcome::Unreadable { reason },
        });
    }
    Ok(Outcome::Kept)
}

/// The orders a fulfillment or fulfillment-order payload concerns: order ids it names directly
/// (`order_id`, order gids) and the orders of the fulfillment orders it names (split, merge and
/// move payloads name several).
fn orders_named(store: &Store, shop: &str, body: &[u8]) -> Result<Vec<String>, StoreError> {
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(Vec::new());
    };
    let mut strings = Vec::new();
    collect_ids(&payload, &mut strings);
    let mut orders = Vec::new();
    for s in strings {
        // Customers type text too (notes, line item properties): only well-formed ids count.
        let order = if is_gid(&s, "Order") {
            Some(s)
        } else if is_gid(&s, "FulfillmentOrder") {
            store.order_of_fulfillment_order(shop, &s)?
        } else {
            None
        };
        if let Some(order) = order
            && !orders.contains(&order)
        {
            orders.push(order);
        }
    }
    Ok(orders)
}

/// When Shopify says the delivery's event happened (`X-Shopify-Triggered-At`), in Unix ms.
fn triggered_ms(delivery: &Delivery) -> Option<i64> {
    delivery
        .header("x-shopify-triggered-at")
        .and_then(|t| crate::order::Timestamp::parse(t).ok())
        .map(|t| t.unix_ms)
}

/// Whether `s` is a GraphQL id of this type: `gid://shopify/<kind>/<digits>`.
fn is_gid(s: &str, kind: &str) -> bool {
    s.strip_prefix("gid://shopify/")
        .and_then(|rest| rest.strip_prefix(kind))
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn collect_ids(value: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match value {
        Value::String(s) if s.starts_with("gid://shopify/") => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| collect_ids(v, out)),
        Value::Object(map) => {
            for (key, v) in map {
                if key == "order_id"
                    && let Some(id) = v.as_u64()
                {
                    out.push(format!("gid://shopify/Order/{id}"));
                }
                collect_ids(v, out);
            }
        }
        _ => {}
    }
}

/// The order's GraphQL id from an `orders/*` payload. Ids exceed 2^53, so they are read as u64
/// (or taken from `admin_graphql_api_id`), never through a float.
fn order_gid(body: &[u8]) -> Result<String, String> {
    #[derive(Deserialize)]
    struct OrderRef {
        id: Option<u64>,
        admin_graphql_api_id: Option<String>,
        /// `orders/edited` names its order inside the edit.
        order_edit: Option<EditRef>,
    }
    #[derive(Deserialize)]
    struct EditRef {
        order_id: Option<u64>,
    }
    let order: OrderRef = serde_json::from_slice(body).map_err(|e| {
        format!(
            "not an order payload ({})",
            crate::compliance::json_error_position(&e)
        )
    })?;
    let edited = order.order_edit.and_then(|e| e.order_id);
    match (order.admin_graphql_api_id, order.id.or(edited)) {
        (Some(gid), _) if is_gid(&gid, "Order") => Ok(gid),
        (_, Some(id)) => Ok(format!("gid://shopify/Order/{id}")),
        _ => {
            Err("order payload has neither id, admin_graphql_api_id nor order_edit.order_id".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_beyond_two_to_the_53_survive() {
        assert_eq!(
            order_gid(br#"{"id":820982911946154509}"#).unwrap(),
            "gid://shopify/Order/820982911946154509"
        );
        assert_eq!(
            order_gid(br#"{"id":1,"admin_graphql_api_id":"gid://shopify/Order/7"}"#).unwrap(),
            "gid://shopify/Order/7"
        );
        assert_eq!(
            order_gid(br#"{"order_edit":{"id":5,"order_id":820982911946154510}}"#).unwrap(),
            "gid://shopify/Order/820982911946154510"
        );
        assert!(order_gid(b"[]").is_err());
    }
}
