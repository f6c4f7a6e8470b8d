//! The order mirror: the latest state of every order, fetched from Shopify.
//!
//! Webhooks are only triggers (invariant 4): the processor turns each order delivery into a
//! coalescing trigger in the store, and the fetcher here takes pending triggers, fetches those
//! orders in batches through `nodes(ids:)`, and stores each state unless the stored one is newer.
//! A trigger is removed only if no delivery touched it while its order was being fetched, so a
//! change that raced the fetch is fetched again.
//!
//! Webhooks get lost, so a poller also scans each shop for orders changed since a stored
//! checkpoint (minus an overlap window) with the lean `OrderScan` query and triggers every order
//! whose mirror is missing or older. A shop whose webhooks never arrive converges by polling
//! alone.
//!
//! Neither task works for a shop that is stopped (the app uninstalled, or the shop erased after
//! that): its tokens are revoked. A reinstall sends no webhook, and only an order webhook would
//! otherwise show it, so the poller probes a stopped shop once per interval with a one-order
//! scan and resumes it when Shopify answers.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::health::{Heartbeats, supervised};
use crate::order::{ChangedOrder, Timestamp};
use crate::shopify::client::{ShopifyClient, ShopifyError};
use crate::shopify::convert::{self, Fetched};
use crate::shopify::ops::{OrderScan, OrdersByIds, order_scan, orders_by_ids};
use crate::store::{Applied, Store, StoreError};

/// Shopify's cap on the requested cost of one query.
const MAX_QUERY_COST: f64 = 1000.0;
/// Shopify's cap on `first` and on `nodes(ids:)`.
const MAX_PAGE: usize = 250;

/// How the mirror polls.
#[derive(Debug, Clone)]
pub struct MirrorSettings {
    /// Time between scans.
    pub poll_interval: Duration,
    /// How far before the checkpoint a scan starts.
    pub poll_overlap: Duration,
    /// How far back the first scan looks.
    pub initial_lookback: Duration,
}

impl MirrorError {
    /// Whether the failure can come from the orders asked for (a bad id, an answer about one
    /// order that cannot be read, a query too costly for these orders), as opposed to the whole
    /// shop (a refused token, a missing scope, a withdrawn API version), which no order of the
    /// batch is to blame for and which must not get orders parked.
    pub fn may_be_about_the_orders(&self) -> bool {
        match self {
            MirrorError::Convert(_) => true,
            MirrorError::Shopify(e) => matches!(
                e,
                ShopifyError::GraphQl { .. }
                    | ShopifyError::UserErrors { .. }
                    | ShopifyError::MaxCostExceeded { .. }
                    | ShopifyError::Decode { .. }
            ),
            MirrorError::Store(_) | MirrorError::Stopped | MirrorError::Uninstalled => false,
        }
    }
}

/// Why syncing failed.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(transparent)]
    Shopify(#[from] ShopifyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Shopify's answer could not be read: {0}")]
    Convert(#[from] convert::ConvertError),
    #[error("the mirror of this shop is not running")]
    Stopped,
    #[error("the app was uninstalled from this shop: it is not synced")]
    Uninstalled,
}

/// What one scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScanReport {
    /// Orders the scan saw changed since the checkpoint (minus the overlap).
    pub seen: usize,
    /// Of those, orders whose mirror was missing or older: triggered for fetching.
    pub triggered: usize,
    /// Pages read.
    pub pages: usize,
    /// The checkpoint after the scan.
    pub checkpoint: Option<String>,
    /// The orders triggered, for a caller that waits for exactly these to be fetched.
    #[serde(skip)]
    pub triggered_ids: Vec<String>,
}

/// What fetching a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchReport {
    /// Orders stored (new or newer).
    pub applied: usize,
    /// Fetched states older than the stored ones, dropped.
    pub stale: usize,
    /// Orders Shopify no longer returns (deleted or out of the app's reach).
    pub missing: usize,
}

/// A handle to one shop's mirror tasks.
#[derive(Clone)]
pub struct MirrorHandle {
    scan_now: mpsc::Sender<oneshot::Sender<Result<ScanReport, String>>>,
    /// The fetcher's failures so far and the last one's reason.
    failures: tokio::sync::watch::Receiver<(u64, String)>,
}

impl MirrorHandle {
    /// Waits until the fetcher has failed at least `n` times in all, and returns the last reason.
    pub async fn fetch_failures(&self, n: u64) -> String {
        let mut failures = self.failures.clone();
        match failures.wait_for(|(count, _)| *count >= n).await {
            Ok(state) => state.1.clone(),
            Err(_) => MirrorError::Stopped.to_string(),
        }
    }

    /// Runs a scan now (outside the schedule) and returns its report.
    pub async fn scan_now(&self) -> Result<ScanReport, String> {
        let (tx, rx) = oneshot::channel();
        self.scan_now
            .send(tx)
            .await
            .map_err(|_| MirrorError::Stopped.to_string())?;
        rx.await.map_err(|_| MirrorError::Stopped.to_string())?
    }
}

/// Brings a shop's mirror up to date now: waits until stored deliveries are processed, scans
/// Shopify for changed orders, and waits until every triggered order was fetched.
pub async fn sync_now(
    store: &Store,
    mirror: &MirrorHandle,
    shop: &str,
) -> Result<ScanReport, String> {
    store.inbox_empty().await;
    let mut failures = mirror.failures.clone();
    failures.mark_unchanged();
    let report = mirror.scan_now().await?;
    // The fetcher retries failed batches on its own; a caller waiting for the mirror to be
    // complete learns of the failure instead of waiting for the retry.
    tokio::select! {
        // Only what the scan found is waited for: on a busy shop, webhooks keep adding
        // triggers, and the queue as a whole may never be empty.
        _ = store.triggers_cleared(shop, &report.triggered_ids) => Ok(report),
        changed = failures.changed() => match changed {
            Ok(()) => Err(format!("fetching orders failed: {}", failures.borrow().1)),
            Err(_) => Err(MirrorError::Stopped.to_string()),
        },
    }
}

/// Starts the fetcher and the poller of one shop on `tasks`.
pub fn spawn(
    tasks: &tokio_util::task::TaskTracker,
    heartbeats: &Heartbeats,
    store: Store,
    client: ShopifyClient,
    settings: MirrorSettings,
    cancel: CancellationToken,
) -> MirrorHandle {
    let (scan_tx, scan_rx) = mpsc::channel(4);
    let (failures_tx, failures) = tokio::sync::watch::channel((0, String::new()));
    let shop = client.shop().to_string();
    tasks.spawn(supervised(
        heartbeats.register(format!("mirror fetcher {shop}")),
        fetcher(store.clone(), client.clone(), failures_tx, cancel.clone()),
    ));
    tasks.spawn(supervised(
        heartbeats.register(format!("mirror poller {shop}")),
        poller(store, client, settings, scan_rx, cancel),
    ));
    MirrorHandle {
        scan_now: scan_tx,
        failures,
    }
}

fn uninstalled(store: &Store, shop: &str) -> bool {
    store
        .shop_state(shop)
        .ok()
        .flatten()
        .is_some_and(|s| s.uninstalled_at_ms.is_some())
}

async fn fetcher(
    store: Store,
    client: ShopifyClient,
    failures: tokio::sync::watch::Sender<(u64, String)>,
    cancel: CancellationToken,
) {
    let shop = client.shop().to_string();
    let mut backoff = Duration::from_secs(1);
    loop {
        let added = store.triggers_added();
        let pending = match store.order_triggers(&shop) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(%shop, error = %e, "cannot read order triggers");
                Vec::new()
            }
        };
        if pending.is_empty() || uninstalled(&store, &shop) {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = added => continue,
            }
        }
        let mut failed = false;
        let mut batch_size = fitting_batch(&client);
        let mut rest = &pending[..];
        while !rest.is_empty() {
            let (batch, tail) = rest.split_at(batch_size.min(rest.len()));
            // Shutdown does not wait for Shopify: an interrupted fetch leaves its triggers in
            // place, to be fetched after the restart.
            let fetched = tokio::select! {
                _ = cancel.cancelled() => return,
                fetched = fetch_batch(&store, &client, batch) => fetched,
            };
            match fetched {
                Ok(report) => {
                    tracing::debug!(%shop, ?report, "orders mirrored");
                    rest = tail;
                    batch_size = fitting_batch(&client);
                    backoff = Duration::from_secs(1);
                }
                Err(e) if e.may_be_about_the_orders() && batch.len() > 1 => {
                    // One order may be the cause (or the cost was learned too optimistically):
                    // fetch this batch one order at a time to find it.
                    tracing::debug!(%shop, error = %e, "batch failed; fetching its orders one by one");
                    batch_size = 1;
                }
                Err(e) if e.may_be_about_the_orders() => {
                    // This order cannot be fetched as it is: park it (visible in metrics and the
                    // log) so it does not hold back the shop's other orders. A later scan that sees
                    // it changed tries again.
                    let (gid, _) = &batch[0];
                    tracing::error!(%shop, order = %gid, error = %e, "order parked: it cannot be fetched");
                    // Report first: parking wakes whoever waits for the trigger to clear, and
                    // that waiter must already see the failure it was waiting through.
                    failures.send_modify(|(n, reason)| {
                        *n += 1;
                        *reason = format!("order {gid} parked: {e}");
                    });
                    if let Err(store_error) = store.park_order(&shop, gid, &e.to_string()) {
                        tracing::error!(%shop, error = %store_error, "cannot park the order");
                        failed = true;
                        break;
                    }
                    rest = tail;
                    batch_size = fitting_batch(&client);
                }
                Err(e) => {
                    tracing::warn!(%shop, error = %e, retry_in = ?backoff, "fetching orders failed");
                    failures.send_modify(|(n, reason)| {
                        *n += 1;
                        *reason = e.to_string();
                    });
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(300));
        }
    }
}

/// As many orders per `nodes` query as fit under Shopify's cost cap, by the learned cost.
fn fitting_batch(client: &ShopifyClient) -> usize {
    match client.learned_cost("OrdersByIds") {
        Some(per_order) if per_order > 0.0 => {
            ((MAX_QUERY_COST / per_order).floor() as usize).clamp(1, MAX_PAGE)
        }
        // Until the first answer, one order at a time: it teaches the cost.
        _ => 1,
    }
}

/// Fetches one batch of triggered orders and stores what is newer.
pub async fn fetch_batch(
    store: &Store,
    client: &ShopifyClient,
    batch: &[(String, crate::store::OrderTrigger)],
) -> Result<FetchReport, MirrorError> {
    let shop = client.shop();
    let ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
    let data = client
        .run::<OrdersByIds>(
            orders_by_ids::Variables { ids: ids.clone() },
            ids.len() as u32,
        )
        .await?;
    let fetched = convert::orders_by_ids(shop, &ids, data)?;
    let mut report = FetchReport::default();
    for item in fetched {
        match item {
            Fetched::Order(order) => match store.put_order(&order)? {
                Applied::Inserted | Applied::Updated => report.applied += 1,
                Applied::Stale { .. } => report.stale += 1,
            },
            Fetched::Missing(id) => {
                tracing::info!(%shop, order = %id, "order no longer visible in Shopify");
                report.missing += 1;
            }
        }
    }
    store.flush().await?;
    for (id, seen) in batch {
        store.complete_trigger(shop, id, seen)?;
    }
    Ok(report)
}

async fn poller(
    store: Store,
    client: ShopifyClient,
    settings: MirrorSettings,
    mut scan_now: mpsc::Receiver<oneshot::Sender<Result<ScanReport, String>>>,
    cancel: CancellationToken,
) {
    let shop = client.shop().to_string();
    let mut reply: Option<oneshot::Sender<Result<ScanReport, String>>> = None;
    loop {
        // A stopped shop (uninstalled, or erased after that) is probed instead of scanned: a
        // reinstall sends no webhook, and a shop without order traffic would otherwise stay
        // stopped for good. One cheap call per interval; the scan follows as soon as it answers.
        let running = !uninstalled(&store, &shop) || {
            tokio::select! {
                _ = cancel.cancelled() => return,
                resumed = probe_reinstall(&store, &client) => resumed,
            }
        };
        if running || reply.is_some() {
            let result = if !running {
                Err(MirrorError::Uninstalled)
            } else {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    result = scan(&store, &client, &settings) => result,
                }
            };
            match &result {
                Ok(report) => tracing::debug!(%shop, ?report, "scan finished"),
                Err(e) => tracing::warn!(%shop, error = %e, "scan failed; the next one retries"),
            }
            if let Some(reply) = reply.take() {
                let _ = reply.send(result.map_err(|e| e.to_string()));
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(settings.poll_interval) => {}
            asked = scan_now.recv() => match asked {
                Some(tx) => reply = Some(tx),
                None => return,
            },
        }
    }
}

/// Asks Shopify whether the app is answered again for a stopped shop, with the cheapest
/// authenticated query there is (one page of at most one order changed from now on). An answer
/// means the app was installed again: the shop is marked reinstalled as of the moment the probe
/// was sent, so an uninstall that happened later still wins (`Store::mark_reinstalled`).
/// A refused token is the expected answer while the app is uninstalled; any other failure leaves
/// the shop stopped until the next probe. Returns whether the shop runs again.
async fn probe_reinstall(store: &Store, client: &ShopifyClient) -> bool {
    let shop = client.shop();
    let sent_ms = crate::delivery::now_ms();
    let query = format!(
        "updated_at:>='{}'",
        Timestamp::from_unix_ms(sent_ms as i64).text
    );
    let answer = client
        .run::<OrderScan>(
            order_scan::Variables {
                first: 1,
                after: None,
                query,
            },
            1,
        )
        .await;
    match answer {
        Ok(_) => {}
        Err(ShopifyError::Unauthorized { .. }) => {
            tracing::debug!(%shop, "the app is still uninstalled (token refused)");
            return false;
        }
        Err(e) => {
            tracing::warn!(%shop, error = %e, "probing an uninstalled shop failed; the next interval tries again");
            return false;
        }
    }
    let resumed = store
        .mark_reinstalled(shop, sent_ms)
        .map_err(MirrorError::from);
    let flushed = match &resumed {
        Ok(_) => store.flush().await.map_err(MirrorError::from),
        Err(_) => Ok(()),
    };
    match (resumed, flushed) {
        (Ok(true), Ok(())) => {
            tracing::info!(%shop, "the uninstalled app answers again: it was reinstalled; work resumes");
            true
        }
        (Ok(false), Ok(())) => !uninstalled(store, shop),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(%shop, error = %e, "cannot record the reinstall");
            false
        }
    }
}

/// Scans the shop for orders changed since the checkpoint and triggers those the mirror lacks.
pub async fn scan(
    store: &Store,
    client: &ShopifyClient,
    settings: &MirrorSettings,
) -> Result<ScanReport, MirrorError> {
    let shop = client.shop();
    let now_ms = crate::delivery::now_ms() as i64;
    let checkpoint = store.poll_checkpoint(shop)?.unwrap_or_else(|| {
        Timestamp::from_unix_ms(now_ms - settings.initial_lookback.as_millis() as i64)
    });
    let since =
        Timestamp::from_unix_ms(checkpoint.unix_ms - settings.poll_overlap.as_millis() as i64);
    let query = format!("updated_at:>='{}'", since.text);
    let mut report = ScanReport::default();
    let mut newest = checkpoint.clone();
    let mut after = None;
    loop {
        let data = client
            .run::<OrderScan>(
                order_scan::Variables {
                    first: MAX_PAGE as i64,
                    after: after.clone(),
                    query: query.clone(),
                },
                1,
            )
            .await?;
        let page = convert::order_scan(data)?;
        report.pages += 1;
        for ChangedOrder { id, updated_at } in &page.orders {
            report.seen += 1;
            let stale = match store.order(shop, id)? {
                None => true,
                Some(stored) => stored.updated_at < *updated_at,
            };
            if stale {
                store.trigger_order(shop, id, Some(&updated_at.text))?;
                report.triggered += 1;
                report.triggered_ids.push(id.clone());
            }
            if *updated_at > newest {
                newest = updated_at.clone();
            }
        }
        // The scan is sorted by updatedAt, so every order changed before the newest one seen
        // has been seen: the checkpoint may move after each page. A scan that stops early (an
        // error, Shopify's 25,000-object pagination limit) resumes from here, not from scratch.
        store.set_poll_checkpoint(shop, &newest)?;
        if !page.has_next_page || page.end_cursor.is_none() {
            break;
        }
        after = page.end_cursor;
    }
    store.flush().await?;
    report.checkpoint = Some(newest.text);
    Ok(report)
}
