//! Reconciliation (SPEC section 5): compares what Shopify holds for one shop with the order
//! mirror, reports every drift class with a count and a few examples, and with `repair` fixes
//! what can be fixed safely.
//!
//! The classes: orders missing from the mirror, stale mirror entries, mirrored orders Shopify does
//! not return, shipgate holds without an open exception and open exceptions without their hold,
//! cancelled orders with live shipments, and the write-back classes (gates open with nothing
//! intended, intents the outbox has not sent an hour later, fulfillments of ours that Shopify no
//! longer shows). A shop that is stopped (the app uninstalled, or the shop erased) is not
//! reconciled: its tokens are revoked, and the poller's probe notices the reinstall.
//!
//! How it runs:
//!
//! 1. One pass over the shop's mirror keeps only `(id, updatedAt)` of the orders in the window
//!    and the shipgate holds, so 100k orders cost a few megabytes, not 100k full mirrors.
//! 2. Shopify's side is listed with the lean `OrderScan` pages for small windows, or with a bulk
//!    operation whose JSONL result is streamed line by line for large ones (`since` is None, or
//!    the mirror, or the pages read so far, hold more orders than `bulk_threshold`).
//! 3. Every order found on one side only, or older in the mirror, is checked once more against
//!    the store, since the daemon keeps fetching while reconciliation lists: an order mirrored
//!    meanwhile is not drift.
//! 4. The shop's cases are read against their mirrored orders for the workflow's classes; the
//!    orders found missing or stale are left out, since their mirror is not Shopify's state.
//! 5. `repair` triggers the missing and stale orders, exactly as the poller does, and waits until
//!    the daemon's fetcher has fetched them; it releases stray holds through the outbox and queues
//!    the orders whose case must be settled again. Nothing is ever deleted, released or
//!    fulfilled on a guess.

use std::borrow::Cow;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::order::{ChangedOrder, Timestamp};
use crate::shopify::client::{ShopifyClient, ShopifyError};
use crate::shopify::convert::{self, ConvertError};
use crate::shopify::ops::{
    BulkOperation, BulkOperationRunQuery, OrderScan, bulk_operation, bulk_operation_run_query,
    order_scan,
};
use crate::store::{Store, StoreError};

/// The default number of examples per drift class.
pub const DEFAULT_EXAMPLES: usize = 5;
/// The default window size (in mirrored orders) above which Shopify is listed by bulk operation.
pub const DEFAULT_BULK_THRESHOLD: usize = 10_000;

/// The name of the class of orders Shopify has in the window and the mirror lacks.
pub const MISSING_FROM_MIRROR: &str = "missing_from_mirror";
/// The name of the class of mirrored orders older than Shopify's state.
pub const STALE_IN_MIRROR: &str = "stale_in_mirror";
/// The name of the class of mirrored orders in the window that Shopify does not return.
pub const UNKNOWN_TO_SHOPIFY: &str = "unknown_to_shopify";
/// The name of the class of shipgate holds that have no open exception.
pub const HOLDS_WITHOUT_EXCEPTION: &str = "holds_without_exception";
/// The name of the class of open exceptions whose Shopify hold is gone.
pub const EXCEPTIONS_WITHOUT_HOLD: &str = "exceptions_without_hold";
/// The name of the class of orders cancelled in Shopify whose shipments were not stopped.
pub const CANCELLED_WITH_LIVE_SHIPMENTS: &str = "cancelled_with_live_shipments";
/// The name of the class of shipments whose gate is open on Shopify's state with no
/// fulfillment intent recorded for what it lets through.
pub const GATES_OPEN_NOT_WRITTEN_BACK: &str = "gates_open_not_written_back";
/// The name of the class of fulfillment intents whose outbox effect is still pending (or
/// failed, or missing) long after it was recorded.
pub const WRITE_BACKS_OVERDUE: &str = "write_backs_overdue";
/// The name of the class of fulfillments shipgate recorded as created that Shopify no longer
/// shows on the order.
pub const FULFILLMENTS_GONE_FROM_SHOPIFY: &str = "fulfillments_gone_from_shopify";

/// Shopify's cap on `first`.
const PAGE_SIZE: usize = 250;
/// The first wait between two polls of a bulk operation; it grows by half per poll.
const BULK_POLL_FIRST: Duration = Duration::from_millis(200);
/// The longest wait between two polls of a bulk operation.
const BULK_POLL_MAX: Duration = Duration::from_secs(5);
/// How long the download of a bulk result may go without receiving a byte.
const DOWNLOAD_STALL: Duration = Duration::from_secs(60);
/// Attempts at downloading a bulk result when the transfer fails.
const DOWNLOAD_ATTEMPTS: u32 = 3;
/// The longest line a bulk result may hold. The lines asked for are under a hundred bytes, so a
/// longer one means a wrong file, which must not grow the buffer without bound.
const MAX_LINE_BYTES: usize = 1 << 20;
/// How long the fetcher may go without fetching a single repaired order before `repair` stops
/// waiting for it (the triggers stay, and the daemon keeps working through them).
const FETCH_STALL: Duration = Duration::from_secs(120);
/// How many orders pass between two progress reports of the long passes.
const PROGRESS_EVERY: usize = 10_000;
/// How long a fulfillment intent may wait in the outbox before it counts as overdue. The
/// sender tries a due effect within seconds and backs off to minutes, so an hour means it keeps
/// failing (Shopify unreachable, a token refused) or nothing is sending at all.
pub const WRITE_BACK_OVERDUE_AFTER: Duration = Duration::from_secs(3600);

/// What to reconcile and how.
#[derive(Debug, Clone)]
pub struct ReconcileOptions {
    /// Only orders updated at or after this instant (rounded down to the second, as Shopify's
    /// search compares); None compares every order.
    pub since: Option<Timestamp>,
    /// Whether to repair what can be repaired safely, and wait until it is.
    pub repair: bool,
    /// How many examples each drift class lists.
    pub examples: usize,
    /// Shopify is listed with a bulk operation when the window may hold more orders than this:
    /// when `since` is None, or the mirror holds more orders updated since `since`, or the
    /// pages read so far passed it. 0 always uses a bulk operation.
    pub bulk_threshold: usize,
    /// The daemon's clock, which stamps the outbox's effects: a write-back is overdue by this
    /// clock, not by the wall clock (tests run the daemon on a manual one).
    pub clock: Clock,
}

impl Default for ReconcileOptions {
    fn default() -> Self {
        ReconcileOptions {
            since: None,
            repair: false,
            examples: DEFAULT_EXAMPLES,
            bulk_threshold: DEFAULT_BULK_THRESHOLD,
            clock: Clock::system(),
        }
    }
}

/// One kind of disagreement between Shopify and shipgate, with how often it was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftClass {
    /// The class's stable name, e.g. `missing_from_mirror`.
    pub name: Cow<'static, str>,
    /// What the class means, in one sentence for people.
    pub description: Cow<'static, str>,
    /// How many cases were found.
    pub count: usize,
    /// Up to `ReconcileOptions::examples` cases, lowest id first: order ids, or for holds a
    /// fulfillment order id followed by the order's name and the hold's handle.
    pub examples: Vec<String>,
}

/// What one reconciliation of one shop found and did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconcileReport {
    /// The shop's domain.
    pub shop: String,
    /// The window's start as queried (RFC 3339, whole seconds, UTC); None: every order.
    pub since: Option<String>,
    /// Whether Shopify was listed with a bulk operation rather than by pages.
    pub via_bulk: bool,
    /// Orders Shopify returned for the window.
    pub shopify_orders: usize,
    /// Orders the mirror held for the window when reconciliation started.
    pub mirrored_orders: usize,
    /// Every drift class, also those with a count of 0, in a fixed order.
    pub classes: Vec<DriftClass>,
    /// What `repair` did and chose not to do, one sentence each; empty without `repair`.
    pub repairs: Vec<String>,
    /// How long the run took, repairs included.
    pub seconds: f64,
}

impl ReconcileReport {
    /// The number of cases over every class.
    pub fn drift(&self) -> usize {
        self.classes.iter().map(|c| c.count).sum()
    }

    /// The class with this name, if the report has it.
    pub fn class(&self, name: &str) -> Option<&DriftClass> {
        self.classes.iter().find(|c| c.name == name)
    }

    /// The report as a table for people: one row per class with its count and examples (one
    /// per line), then what each class with drift means, then the repairs.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let window = match &self.since {
            Some(since) => format!("orders updated since {since}"),
            None => "every order".to_string(),
        };
        let listing = if self.via_bulk {
            "by bulk operation"
        } else {
            "by pages"
        };
        let _ = writeln!(out, "Reconciliation of {}: {window}", self.shop);
        let _ = writeln!(
            out,
            "Shopify returned {} (listed {listing}); the mirror held {}. Took {:.1} s.",
            plural(self.shopify_orders, "order"),
            plural(self.mirrored_orders, "order"),
            self.seconds
        );
        out.push('\n');
        let width = self
            .classes
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(0)
            .max("CLASS".len());
        let _ = writeln!(out, "{:<width$}  {:>7}  EXAMPLES", "CLASS", "COUNT");
        for class in &self.classes {
            let mut examples = class.examples.iter();
            let first = examples.next().map(String::as_str).unwrap_or("-");
            let _ = writeln!(out, "{:<width$}  {:>7}  {first}", class.name, class.count);
            for example in examples {
                let _ = writeln!(out, "{:<width$}  {:>7}  {example}", "", "");
            }
            let more = class.count.saturating_sub(class.examples.len());
            if more > 0 && !class.examples.is_empty() {
                let _ = writeln!(out, "{:<width$}  {:>7}  (and {more} more)", "", "");
            }
        }
        out.push('\n');
        match self.drift() {
            0 => out.push_str("No drift.\n"),
            n => {
                let _ = writeln!(out, "Drift: {} in total.", plural(n, "case"));
                for class in self.classes.iter().filter(|c| c.count > 0) {
                    let _ = writeln!(out, "  {}: {}", class.name, class.description);
                }
            }
        }
        if !self.repairs.is_empty() {
            out.push_str("\nRepairs:\n");
            for repair in &self.repairs {
                let _ = writeln!(out, "  - {repair}");
            }
        }
        out
    }
}

/// Where a run is, for a progress display. Reported in the order listed here: `Listing` while
/// pages are read, the `Bulk…` stages for a bulk operation (also after some pages, when they
/// passed `bulk_threshold`), `Repairing` only with `repair`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum Progress {
    /// Another page of Shopify's orders was read: totals so far.
    Listing {
        /// Pages read so far.
        pages: usize,
        /// Orders read so far.
        orders: usize,
    },
    /// A bulk operation was started in Shopify.
    BulkStarted {
        /// The operation's gid.
        id: String,
    },
    /// A poll of the bulk operation answered.
    BulkPolled {
        /// Shopify's `BulkOperationStatus`, e.g. `RUNNING`.
        status: String,
        /// Objects Shopify reported written so far.
        objects: u64,
    },
    /// The bulk result was read to its end.
    BulkDownloaded {
        /// Lines read (the orders, plus any child lines).
        lines: usize,
    },
    /// Orders compared so far, out of every order seen on either side.
    Comparing {
        /// Orders compared so far.
        done: usize,
        /// Orders to compare.
        total: usize,
    },
    /// Orders triggered for fetching so far by `repair`.
    Repairing {
        /// Orders triggered so far.
        triggered: usize,
    },
}

/// The line a progress display shows, on the store or through the daemon.
impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Progress::Listing { pages, orders } => {
                write!(f, "listed {orders} orders in {pages} pages")
            }
            Progress::BulkStarted { id } => write!(f, "bulk operation {id} started"),
            Progress::BulkPolled { status, objects } => {
                write!(f, "bulk operation {status}, {objects} objects")
            }
            Progress::BulkDownloaded { lines } => {
                write!(f, "bulk result downloaded: {lines} lines")
            }
            Progress::Comparing { done, total } => write!(f, "compared {done} of {total}"),
            Progress::Repairing { triggered } => {
                write!(f, "repairing: {triggered} orders to fetch")
            }
        }
    }
}

/// Why a reconciliation could not finish.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// A call to Shopify failed.
    #[error(transparent)]
    Shopify(#[from] ShopifyError),
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Shopify's answer could not be read (a timestamp that is not RFC 3339, say).
    #[error("Shopify's answer could not be read: {0}")]
    Convert(#[from] ConvertError),
    /// The app is uninstalled from the shop (or the shop was erased after it): its tokens are
    /// revoked, and it is reconciled again once it is installed again.
    #[error("{0}")]
    Stopped(String),
    /// The bulk operation was refused, failed, was canceled or expired.
    #[error("bulk operation: {0}")]
    Bulk(String),
    /// The bulk operation's result could not be downloaded or read.
    #[error("downloading the bulk result: {0}")]
    Download(String),
}

/// Reconciles the shop of `client` with the mirror in `store`.
///
/// `http` downloads the bulk result; it must not carry the shop's access token (the result's
/// URL is a signed storage URL that needs none, and the token must not leave for other hosts).
/// `progress` is called from the task running this future, between steps.
pub async fn reconcile(
    store: &Store,
    client: &ShopifyClient,
    http: &reqwest::Client,
    options: &ReconcileOptions,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<ReconcileReport, ReconcileError> {
    let started = std::time::Instant::now();
    let shop = client.shop().to_string();
    if let Some(why) = stopped(store, &shop)? {
        return Err(ReconcileError::Stopped(why));
    }
    // Shopify's `updated_at` search compares whole seconds, and every `updatedAt` is a whole
    // second: rounding the start down makes the mirror's window and Shopify's the same.
    let since = options
        .since
        .as_ref()
        .map(|t| Timestamp::from_unix_ms(t.unix_ms.div_euclid(1000) * 1000));
    let since_ms = since.as_ref().map(|t| t.unix_ms);
    let filter = since.as_ref().map(|t| format!("updated_at:>='{}'", t.text));

    let index = {
        let store = store.clone();
        let shop = shop.clone();
        let examples = options.examples;
        // Decoding every mirrored order is a long synchronous pass over sled: off the runtime.
        match tokio::task::spawn_blocking(move || index_mirror(&store, &shop, since_ms, examples))
            .await
        {
            Ok(index) => index?,
            // A panic there is a bug: it goes on as a panic here rather than as a store error.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "reading the mirror was interrupted: {e}"
                ))
                .into());
            }
        }
    };
    let MirrorIndex {
        mut entries,
        in_window,
        holds,
        stray_holds,
        exceptions_without_hold,
        cancelled_live,
        cancelled_live_orders,
    } = index;

    let mut via_bulk =
        since.is_none() || options.bulk_threshold == 0 || in_window > options.bulk_threshold;
    if !via_bulk {
        let query = filter.clone().unwrap_or_default();
        match list_pages(client, &query, options.bulk_threshold, progress).await? {
            Some(orders) => {
                for order in orders {
                    note_shopify(&mut entries, order);
                }
            }
            // The mirror undercounted the window (it may have lost orders, which is when
            // reconciliation matters most): what was read is dropped and bulk takes over.
            None => via_bulk = true,
        }
    }
    if via_bulk {
        list_bulk(client, http, filter.as_deref(), progress, &mut |order| {
            note_shopify(&mut entries, order)
        })
        .await?;
    }

    let compared = compare(store, &shop, &mut entries, options.examples, progress).await?;
    // The write-back classes read the mirror as Shopify's state, so orders the comparison found
    // behind Shopify are left out: the repair's fetch plans them again anyway.
    let behind: HashSet<Box<str>> = entries
        .iter()
        .filter(|(_, e)| e.drift.is_some())
        .map(|(id, _)| id.clone())
        .collect();
    let gates = {
        let store = store.clone();
        let shop = shop.clone();
        let examples = options.examples;
        let now_ms = options.clock.now_ms();
        match tokio::task::spawn_blocking(move || {
            index_write_backs(&store, &shop, &behind, now_ms, examples)
        })
        .await
        {
            Ok(gates) => gates?,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "reading the cases was interrupted: {e}"
                ))
                .into());
            }
        }
    };
    let mut report = ReconcileReport {
        shop: shop.clone(),
        since: since.map(|t| t.text),
        via_bulk,
        shopify_orders: compared.shopify_orders,
        mirrored_orders: in_window,
        classes: vec![
            DriftClass {
                name: MISSING_FROM_MIRROR.into(),
                description: "orders Shopify has in the window that the mirror lacks".into(),
                count: compared.missing.count,
                examples: compared.missing.examples.into_vec(),
            },
            DriftClass {
                name: STALE_IN_MIRROR.into(),
                description: "mirrored orders whose updatedAt is older than Shopify's".into(),
                count: compared.stale.count,
                examples: compared.stale.examples.into_vec(),
            },
            DriftClass {
                name: UNKNOWN_TO_SHOPIFY.into(),
                description: "mirrored orders in the window that Shopify does not return \
                              (deleted, or out of the app's reach)"
                    .into(),
                count: compared.unknown.count,
                examples: compared.unknown.examples.into_vec(),
            },
            DriftClass {
                name: HOLDS_WITHOUT_EXCEPTION.into(),
                description: "fulfillment orders held by shipgate without an open exception \
                              (in the whole mirror, whatever the window)"
                    .into(),
                count: holds.count,
                examples: holds.examples.into_vec(),
            },
            DriftClass {
                name: EXCEPTIONS_WITHOUT_HOLD.into(),
                description: "open exceptions whose Shopify hold is gone (released in Shopify)"
                    .into(),
                count: exceptions_without_hold.count,
                examples: exceptions_without_hold.examples.into_vec(),
            },
            DriftClass {
                name: CANCELLED_WITH_LIVE_SHIPMENTS.into(),
                description: "orders cancelled in Shopify whose shipments were not stopped".into(),
                count: cancelled_live.count,
                examples: cancelled_live.examples.into_vec(),
            },
            DriftClass {
                name: GATES_OPEN_NOT_WRITTEN_BACK.into(),
                description: "shipments whose gate is open on Shopify's state with no \
                              fulfillment intent recorded (their case was not settled since)"
                    .into(),
                count: gates.open.count,
                examples: gates.open.examples.into_vec(),
            },
            DriftClass {
                name: WRITE_BACKS_OVERDUE.into(),
                description: "fulfillment intents whose outbox effect is still pending, \
                              failed or missing more than an hour after it was recorded"
                    .into(),
                count: gates.overdue.count,
                examples: gates.overdue.examples.into_vec(),
            },
            DriftClass {
                name: FULFILLMENTS_GONE_FROM_SHOPIFY.into(),
                description: "fulfillments shipgate recorded as created that Shopify no longer \
                              shows on the order (cancelled or deleted there)"
                    .into(),
                count: gates.gone.count,
                examples: gates.gone.examples.into_vec(),
            },
        ],
        repairs: Vec::new(),
        seconds: 0.0,
    };
    if options.repair {
        report.repairs = repair(store, &shop, &entries, &report, progress).await?;
        let more = repair_workflow(
            store,
            &shop,
            &stray_holds,
            &cancelled_live_orders,
            &gates.open_orders,
            &report,
        )?;
        report.repairs.extend(more);
        if report.repairs.is_empty() {
            report.repairs.push("Nothing needed repairing.".to_string());
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// The mirror's side
// ---------------------------------------------------------------------------------------------

/// What the comparison found for one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drift {
    Missing,
    Stale,
}

/// One order as the two sides know it, in Unix milliseconds of `updatedAt`.
#[derive(Debug, Default)]
struct Entry {
    mirror_ms: Option<i64>,
    shopify_ms: Option<i64>,
    drift: Option<Drift>,
}

/// A count and the examples with the lowest ids.
struct Tally {
    count: usize,
    examples: Examples,
}

impl Tally {
    fn new(limit: usize) -> Tally {
        Tally {
            count: 0,
            examples: Examples::new(limit),
        }
    }

    fn add(&mut self, id: &str, display: impl FnOnce() -> String) {
        self.count += 1;
        self.examples.offer(id, display);
    }
}

/// Keeps the `limit` examples with the lowest ids whatever order they arrive in, so that the
/// paged and the bulk listing, which see orders in different orders, give the same examples.
/// Ids compare by length first: gids with one prefix then compare by their number.
struct Examples {
    limit: usize,
    /// A max-heap of (id length, id, text shown): the top is the first to give way.
    heap: BinaryHeap<(usize, String, String)>,
}

impl Examples {
    fn new(limit: usize) -> Examples {
        Examples {
            limit,
            heap: BinaryHeap::with_capacity(limit.min(1024) + 1),
        }
    }

    fn offer(&mut self, id: &str, display: impl FnOnce() -> String) {
        if self.limit == 0 {
            return;
        }
        if self.heap.len() >= self.limit
            && let Some((len, top, _)) = self.heap.peek()
            && (id.len(), id) >= (*len, top.as_str())
        {
            return;
        }
        self.heap.push((id.len(), id.to_string(), display()));
        if self.heap.len() > self.limit {
            self.heap.pop();
        }
    }

    fn into_vec(self) -> Vec<String> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|(_, _, text)| text)
            .collect()
    }
}

/// The lean image of a shop's mirror.
struct MirrorIndex {
    /// The orders in the window, by id; Shopify's side is added to the same map.
    entries: HashMap<Box<str>, Entry>,
    /// How many orders the mirror holds in the window.
    in_window: usize,
    /// Fulfillment orders carrying a hold placed by shipgate, in the whole mirror.
    holds: Tally,
    /// Those holds, to release: (order gid, fulfillment order gid, hold gid, handle).
    stray_holds: Vec<(String, String, String, Option<String>)>,
    /// Open exceptions whose placed hold is no longer on the fulfillment order.
    exceptions_without_hold: Tally,
    /// Cancelled orders with shipments that were neither stopped nor asked to stop.
    cancelled_live: Tally,
    /// Those orders, to plan again.
    cancelled_live_orders: Vec<String>,
}

/// Reads the shop's mirror once, keeping only what the comparison needs: `(id, updatedAt)` of
/// the orders in the window, and the fulfillment orders shipgate holds. This is the lean
/// iterator over the mirror that `Store` does not have; it decodes each order and drops it.
fn index_mirror(
    store: &Store,
    shop: &str,
    since_ms: Option<i64>,
    examples: usize,
) -> Result<MirrorIndex, StoreError> {
    let mut index = MirrorIndex {
        entries: HashMap::new(),
        in_window: 0,
        holds: Tally::new(examples),
        stray_holds: Vec::new(),
        exceptions_without_hold: Tally::new(examples),
        cancelled_live: Tally::new(examples),
        cancelled_live_orders: Vec::new(),
    };
    // Open exceptions are few: look each placed hold up in the mirror.
    for case in store.cases_with_open_exceptions()? {
        if case.shop != shop {
            continue;
        }
        let order = store.order(shop, &case.order_gid)?;
        for exception in case.open_exceptions() {
            let Some(hold) = &exception.hold else {
                continue;
            };
            if !matches!(hold.state, crate::workflow::model::HoldState::Placed { .. }) {
                continue;
            }
            let present = order.as_ref().is_some_and(|o| {
                o.fulfillment_orders
                    .iter()
                    .filter(|fo| fo.id == hold.fulfillment_order_id)
                    .flat_map(|fo| &fo.holds)
                    .any(|h| h.handle.as_deref() == Some(hold.handle.as_str()))
            });
            if !present {
                index.exceptions_without_hold.add(&exception.id, || {
                    format!(
                        "{} ({} on order {}, hold {})",
                        exception.id,
                        exception.kind.name(),
                        case.order_name,
                        hold.handle
                    )
                });
            }
        }
    }
    for order in store.orders(shop) {
        let order = order?;
        // A hold of ours is accounted for while an open exception owns its handle, or while
        // the release of a closed one is on its way (an outbox intent).
        let case = if order.is_cancelled()
            || order
                .fulfillment_orders
                .iter()
                .any(|fo| fo.holds.iter().any(|h| h.held_by_us))
        {
            store.case(shop, &order.id)?
        } else {
            None
        };
        let owned = |handle: Option<&str>| {
            case.as_ref().is_some_and(|case| {
                case.exceptions.iter().any(|e| {
                    e.hold.as_ref().is_some_and(|h| {
                        Some(h.handle.as_str()) == handle
                            && (e.is_open()
                                || matches!(
                                    h.state,
                                    crate::workflow::model::HoldState::ReleaseRequested { .. }
                                ))
                    })
                })
            })
        };
        for fo in &order.fulfillment_orders {
            // Counted per fulfillment order, since that is what a release names.
            if let Some(hold) = fo
                .holds
                .iter()
                .find(|h| h.held_by_us && !owned(h.handle.as_deref()))
            {
                index.holds.add(&fo.id, || {
                    format!(
                        "{} (order {}, hold {})",
                        fo.id,
                        order.name,
                        hold.handle.as_deref().unwrap_or("without a handle")
                    )
                });
                index.stray_holds.push((
                    order.id.clone(),
                    fo.id.clone(),
                    hold.id.clone(),
                    hold.handle.clone(),
                ));
            }
        }
        if order.is_cancelled()
            && let Some(case) = &case
        {
            // A shipment of a cancelled order must be over, or its supplier asked to stop.
            let live = case.shipments.iter().any(|s| {
                !crate::workflow::derive::is_cancelled(s)
                    && !s.evidence.iter().any(|e| {
                        matches!(
                            e.kind,
                            crate::workflow::model::EvidenceKind::CancelRequested { .. }
                        )
                    })
            });
            if live {
                index
                    .cancelled_live
                    .add(&order.id, || format!("{} ({})", order.name, order.id));
                index.cancelled_live_orders.push(order.id.clone());
            }
        }
        let ms = order.updated_at.unix_ms;
        if since_ms.is_none_or(|since| ms >= since) {
            index.in_window += 1;
            index.entries.insert(
                order.id.into_boxed_str(),
                Entry {
                    mirror_ms: Some(ms),
                    ..Entry::default()
                },
            );
        }
    }
    Ok(index)
}

/// The write-back classes of a shop's cases.
struct WriteBackIndex {
    /// Shipments whose gate is open with no intent recorded, by shipment id.
    open: Tally,
    /// Their orders, to plan again.
    open_orders: Vec<String>,
    /// Fulfillment intents whose effect is overdue, by idempotency key.
    overdue: Tally,
    /// Fulfillments recorded as created that Shopify no longer shows, by fulfillment id.
    gone: Tally,
}

/// Reads every case of the shop with its mirrored order and finds the write-backs that
/// drifted: gates open with nothing intended (`plan::open_gates`, which already discounts what
/// was intended), intents whose effect has not gone out an hour after it was recorded, and
/// fulfillments of ours that the order no longer shows. Orders in `behind` (missing or stale
/// in the mirror) are skipped: their mirror is not Shopify's state.
fn index_write_backs(
    store: &Store,
    shop: &str,
    behind: &HashSet<Box<str>>,
    now_ms: i64,
    examples: usize,
) -> Result<WriteBackIndex, StoreError> {
    use crate::workflow::effect::EffectState;
    use crate::workflow::model::EvidenceKind;
    let mut index = WriteBackIndex {
        open: Tally::new(examples),
        open_orders: Vec::new(),
        overdue: Tally::new(examples),
        gone: Tally::new(examples),
    };
    let overdue_before = now_ms - WRITE_BACK_OVERDUE_AFTER.as_millis() as i64;
    for case in store.cases() {
        let case = case?;
        if case.shop != shop || behind.contains(case.order_gid.as_str()) {
            continue;
        }
        let Some(order) = store.order(shop, &case.order_gid)? else {
            continue;
        };
        let open = crate::workflow::plan::open_gates(&case, &order);
        for (shipment, decision) in &open {
            let units: i64 = decision.lines.iter().map(|(_, q)| q).sum();
            index.open.add(shipment, || {
                format!(
                    "{shipment} (order {}, {}): the gate lets {} through at {}, nothing intended",
                    case.order_name,
                    case.order_gid,
                    plural(units as usize, "unit"),
                    decision.fulfillment_order_id
                )
            });
        }
        if !open.is_empty() {
            index.open_orders.push(case.order_gid.clone());
        }
        for shipment in &case.shipments {
            let outcome = |key: &str| {
                shipment.evidence.iter().any(|e| match &e.kind {
                    EvidenceKind::FulfillmentCreated { key: k, .. }
                    | EvidenceKind::FulfillmentRefused { key: k, .. }
                    // Withdrawn because the gate shut: intended no more, so not overdue.
                    | EvidenceKind::FulfillmentWithdrawn { key: k, .. } => k == key,
                    _ => false,
                })
            };
            for evidence in &shipment.evidence {
                match &evidence.kind {
                    EvidenceKind::FulfillmentIntended { key, .. }
                        if !outcome(key) && evidence.recorded_ms < overdue_before =>
                    {
                        let effect = store.effect_by_key(key)?;
                        let state = match &effect {
                            None => "no effect in the outbox".to_string(),
                            Some(effect) => match &effect.state {
                                EffectState::Pending => format!(
                                    "pending since {}, {}{}",
                                    Timestamp::from_unix_ms(effect.created_ms).text,
                                    plural(effect.attempts as usize, "attempt"),
                                    effect
                                        .last_error
                                        .as_deref()
                                        .map(|e| format!(", last error: {e}"))
                                        .unwrap_or_default()
                                ),
                                EffectState::Failed { reason, .. } => {
                                    format!("failed ({reason}) without a refusal on the shipment")
                                }
                                EffectState::Done { .. } => {
                                    "done in the outbox but not recorded on the shipment"
                                        .to_string()
                                }
                                EffectState::Superseded { reason, .. } => {
                                    format!("superseded ({reason}) though still intended")
                                }
                            },
                        };
                        index.overdue.add(key, || {
                            format!(
                                "{key} (order {}, {}): {state}",
                                case.order_name, shipment.id
                            )
                        });
                    }
                    EvidenceKind::FulfillmentCreated { fulfillment_id, .. } => {
                        let shown = order.fulfillments.iter().find(|f| &f.id == fulfillment_id);
                        let gone = match shown {
                            // A mirror that did not fit in one query may lack it.
                            None if order.truncated => None,
                            None => Some("is not on the order".to_string()),
                            Some(f)
                                if matches!(
                                    f.status.as_str(),
                                    "CANCELLED" | "ERROR" | "FAILURE"
                                ) =>
                            {
                                Some(format!("is {} there", f.status))
                            }
                            Some(_) => None,
                        };
                        if let Some(why) = gone {
                            index.gone.add(fulfillment_id, || {
                                format!(
                                    "{fulfillment_id} (order {}, {}): shipgate created it, but in \
                                     Shopify it {why}",
                                    case.order_name, shipment.id
                                )
                            });
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(index)
}

/// Adds one order Shopify listed. An order can be listed twice when it changed while the pages
/// were read (it moves to the end of the `UPDATED_AT` order): its newest time counts.
fn note_shopify(entries: &mut HashMap<Box<str>, Entry>, order: ChangedOrder) {
    let ms = order.updated_at.unix_ms;
    match entries.get_mut(order.id.as_str()) {
        Some(entry) => entry.shopify_ms = Some(entry.shopify_ms.map_or(ms, |known| known.max(ms))),
        None => {
            entries.insert(
                order.id.into_boxed_str(),
                Entry {
                    shopify_ms: Some(ms),
                    ..Entry::default()
                },
            );
        }
    }
}

/// What the comparison counted.
struct Compared {
    shopify_orders: usize,
    missing: Tally,
    stale: Tally,
    unknown: Tally,
}

/// Classifies every entry, marking the repairable ones. An order that looks missing or stale is
/// read once more from the store first: the daemon's fetcher went on working while Shopify was
/// listed, and an order it mirrored meanwhile is not drift. (An order that looks unknown to
/// Shopify is not re-read: being in the window, Shopify would have listed it whatever changed.)
async fn compare(
    store: &Store,
    shop: &str,
    entries: &mut HashMap<Box<str>, Entry>,
    examples: usize,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Compared, ReconcileError> {
    let total = entries.len();
    let mut compared = Compared {
        shopify_orders: 0,
        missing: Tally::new(examples),
        stale: Tally::new(examples),
        unknown: Tally::new(examples),
    };
    for (done, (id, entry)) in entries.iter_mut().enumerate() {
        if done % PROGRESS_EVERY == 0 {
            progress(Progress::Comparing { done, total });
            // The pass is synchronous store reads: let other tasks in now and then.
            tokio::task::yield_now().await;
        }
        let Some(shopify_ms) = entry.shopify_ms else {
            compared.unknown.add(id, || id.to_string());
            continue;
        };
        compared.shopify_orders += 1;
        if entry.mirror_ms.is_some_and(|m| m >= shopify_ms) {
            continue;
        }
        // Missing from the window's image, or older there: the store has the last word.
        let now = store.order(shop, id)?.map(|o| o.updated_at.unix_ms);
        entry.mirror_ms = now;
        match now {
            None => {
                entry.drift = Some(Drift::Missing);
                compared.missing.add(id, || id.to_string());
            }
            Some(m) if m < shopify_ms => {
                entry.drift = Some(Drift::Stale);
                compared.stale.add(id, || id.to_string());
            }
            Some(_) => {}
        }
    }
    progress(Progress::Comparing { done: total, total });
    Ok(compared)
}

// ---------------------------------------------------------------------------------------------
// Repair
// ---------------------------------------------------------------------------------------------

/// Triggers the missing and stale orders, waits until the fetcher has fetched them, checks the
/// result, and says what it did and what it left alone.
async fn repair(
    store: &Store,
    shop: &str,
    entries: &HashMap<Box<str>, Entry>,
    report: &ReconcileReport,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Vec<String>, ReconcileError> {
    let count = |name| report.class(name).map_or(0, |c| c.count);
    let (missing, stale) = (count(MISSING_FROM_MIRROR), count(STALE_IN_MIRROR));
    let mut repairs = Vec::new();
    let mut triggered = 0;
    for (id, entry) in entries {
        let (Some(_), Some(shopify_ms)) = (entry.drift, entry.shopify_ms) else {
            continue;
        };
        // Naming Shopify's updatedAt makes the trigger coalesce with one already pending for
        // the same change, exactly as the poller's triggers do.
        let changed_at = Timestamp::from_unix_ms(shopify_ms).text;
        store.trigger_order(shop, id, Some(&changed_at))?;
        triggered += 1;
        if triggered % PROGRESS_EVERY == 0 {
            progress(Progress::Repairing { triggered });
            tokio::task::yield_now().await;
        }
    }
    store.flush().await?;
    progress(Progress::Repairing { triggered });

    if triggered > 0 {
        let stalled = wait_for_fetcher(store, shop).await?;
        let mut current = 0;
        for (id, entry) in entries {
            if let (Some(_), Some(shopify_ms)) = (entry.drift, entry.shopify_ms)
                && store
                    .order(shop, id)?
                    .is_some_and(|o| o.updated_at.unix_ms >= shopify_ms)
            {
                current += 1;
            }
        }
        let what = match (missing, stale) {
            (m, 0) => format!("{} missing from the mirror", plural(m, "order")),
            (0, s) => format!("{} stale in the mirror", plural(s, "order")),
            (m, 1) => format!(
                "{} missing from the mirror and 1 stale one",
                plural(m, "order")
            ),
            (m, s) => format!(
                "{} missing from the mirror and {s} stale ones",
                plural(m, "order")
            ),
        };
        let outcome = if current == triggered {
            match triggered {
                1 => "it is now mirrored at Shopify's state".to_string(),
                n => format!("all {n} are now mirrored at Shopify's state"),
            }
        } else {
            format!(
                "{current} of {triggered} are now mirrored at Shopify's state; the others were \
                 deleted in Shopify meanwhile or their fetch keeps failing (see the daemon's log)"
            )
        };
        repairs.push(format!("Triggered a fetch of {what}: {outcome}."));
        if let Some(pending) = stalled {
            repairs.push(format!(
                "Stopped waiting after the fetcher fetched nothing for {} s; {} still \
                 waiting to be fetched, and the daemon keeps working through them.",
                FETCH_STALL.as_secs(),
                plural_verb(pending, "order is", "orders are"),
            ));
        }
    }
    let unknown = count(UNKNOWN_TO_SHOPIFY);
    if unknown > 0 {
        repairs.push(format!(
            "Left {} unknown to Shopify in the mirror: shipgate never deletes an order on a \
             guess; look {} up in the Shopify admin.",
            plural(unknown, "order"),
            if unknown == 1 { "it" } else { "them" }
        ));
    }
    Ok(repairs)
}

/// Repairs the workflow's drift: holds of shipgate's without an exception are released
/// (through the outbox, by their ids), cancelled orders with live shipments are planned again
/// (which asks their suppliers to stop), and exceptions whose hold was released in Shopify are
/// left as they are: someone released it there on purpose.
fn repair_workflow(
    store: &Store,
    shop: &str,
    stray_holds: &[(String, String, String, Option<String>)],
    cancelled_live: &[String],
    gates_open: &[String],
    report: &ReconcileReport,
) -> Result<Vec<String>, StoreError> {
    use crate::workflow::effect::{Action, Effect, EffectState};
    let mut repairs = Vec::new();
    let now = crate::delivery::now_ms() as i64;
    let mut releases = Vec::new();
    for (order_gid, fo, hold_id, handle) in stray_holds {
        let Some(handle) = handle else {
            continue;
        };
        releases.push(Effect {
            id: store.next_effect_id()?,
            // One release per hold, ever: a second reconciliation finds the same intent.
            key: format!("reconcile.release.{hold_id}"),
            stream: crate::workflow::plan::hold_stream(fo),
            shop: shop.to_string(),
            order_gid: order_gid.clone(),
            action: Action::ReleaseHold {
                fulfillment_order_id: fo.clone(),
                handle: handle.clone(),
                exception_id: String::new(),
            },
            state: EffectState::Pending,
            attempts: 0,
            next_attempt_ms: now,
            created_ms: now,
            last_error: None,
            maybe_delivered: false,
        });
    }
    if !releases.is_empty() {
        let n = releases.len();
        store.write_case(crate::store::cases::CaseWrite {
            case: None,
            new_effects: releases,
            updated_effects: Vec::new(),
        })?;
        repairs.push(format!(
            "Asked the outbox to release {} that no open exception owns (see `shipgate outbox list`).",
            plural(n, "shipgate hold")
        ));
    }
    for order in cancelled_live {
        store.queue_plan(shop, order)?;
    }
    if !cancelled_live.is_empty() {
        repairs.push(format!(
            "Planned {} again: their suppliers are asked to stop.",
            plural(cancelled_live.len(), "cancelled order")
        ));
    }
    for order in gates_open {
        store.queue_plan(shop, order)?;
    }
    if !gates_open.is_empty() {
        let shipments = report
            .class(GATES_OPEN_NOT_WRITTEN_BACK)
            .map_or(0, |c| c.count);
        repairs.push(format!(
            "Planned {} again, for {} whose gate is open but not written back: the planner \
             records the fulfillment intents and the outbox sends them.",
            plural(gates_open.len(), "order"),
            plural(shipments, "shipment")
        ));
    }
    let overdue = report.class(WRITE_BACKS_OVERDUE).map_or(0, |c| c.count);
    if overdue > 0 {
        repairs.push(format!(
            "Left {} to the outbox, which keeps retrying (see `shipgate outbox list` and the \
             daemon's log); a fulfillment Shopify refuses opens a write_back_refused exception.",
            plural(overdue, "overdue fulfillment write-back")
        ));
    }
    let gone = report
        .class(FULFILLMENTS_GONE_FROM_SHOPIFY)
        .map_or(0, |c| c.count);
    if gone > 0 {
        repairs.push(format!(
            "Left {} as {}: shipgate never fulfils again on a guess; look the orders up in the \
             Shopify admin and fulfil by hand what did ship.",
            plural(gone, "fulfillment gone from Shopify"),
            if gone == 1 { "it is" } else { "they are" }
        ));
    }
    let without_hold = report.class(EXCEPTIONS_WITHOUT_HOLD).map_or(0, |c| c.count);
    if without_hold > 0 {
        let (is, them) = if without_hold == 1 {
            ("it is: its hold was", "decide it")
        } else {
            ("they are: their holds were", "decide them")
        };
        repairs.push(format!(
            "Left {} as {is} released in Shopify, on purpose as far as shipgate can tell; \
             {them}, or hold the order in Shopify by hand.",
            plural(without_hold, "open exception")
        ));
    }
    Ok(repairs)
}

/// Waits until the shop has no pending order triggers, which the daemon's fetcher removes as it
/// fetches. Returns the number still pending if the fetcher stopped making progress (it fails
/// on every try, or no daemon is fetching), so that a repair never waits forever.
async fn wait_for_fetcher(store: &Store, shop: &str) -> Result<Option<usize>, StoreError> {
    let mut pending = store.order_triggers(shop)?.len();
    while pending > 0 {
        if tokio::time::timeout(FETCH_STALL, store.triggers_empty(shop))
            .await
            .is_ok()
        {
            return Ok(None);
        }
        let now = store.order_triggers(shop)?.len();
        if now >= pending {
            return Ok(Some(now));
        }
        pending = now;
    }
    Ok(None)
}

// ---------------------------------------------------------------------------------------------
// Shopify's side: pages
// ---------------------------------------------------------------------------------------------

/// Lists the window page by page with `OrderScan`. Returns None as soon as more than `limit`
/// orders were read: the window is too big for pages and a bulk operation takes over.
async fn list_pages(
    client: &ShopifyClient,
    query: &str,
    limit: usize,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Option<Vec<ChangedOrder>>, ReconcileError> {
    let mut orders = Vec::new();
    let mut pages = 0;
    let mut after = None;
    loop {
        let data = client
            .run::<OrderScan>(
                order_scan::Variables {
                    first: PAGE_SIZE as i64,
                    after: after.take(),
                    query: query.to_string(),
                },
                1,
            )
            .await?;
        let page = convert::order_scan(data)?;
        pages += 1;
        orders.extend(page.orders);
        progress(Progress::Listing {
            pages,
            orders: orders.len(),
        });
        if orders.len() > limit {
            return Ok(None);
        }
        match page.end_cursor {
            Some(cursor) if page.has_next_page => after = Some(cursor),
            _ => return Ok(Some(orders)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shopify's side: a bulk operation
// ---------------------------------------------------------------------------------------------

/// The bulk query listing the window: ids and `updatedAt` only, so that the result stays near
/// 80 bytes per order. `filter` is a search such as `updated_at:>='…'`; None lists every order.
fn bulk_query(filter: Option<&str>) -> String {
    let arguments = match filter {
        Some(filter) => {
            // The search goes inside a GraphQL string literal.
            let escaped = filter.replace('\\', "\\\\").replace('"', "\\\"");
            format!("(query: \"{escaped}\")")
        }
        None => String::new(),
    };
    format!("{{ orders{arguments} {{ edges {{ node {{ id updatedAt }} }} }} }}")
}

/// The wait before the next poll: half as long again as the last, up to the cap.
fn next_poll_delay(delay: Duration) -> Duration {
    (delay + delay / 2).min(BULK_POLL_MAX)
}

/// Runs a bulk operation over the window and feeds every order of its result to `sink`.
async fn list_bulk<F: FnMut(ChangedOrder) + Send>(
    client: &ShopifyClient,
    http: &reqwest::Client,
    filter: Option<&str>,
    progress: &(dyn Fn(Progress) + Send + Sync),
    sink: &mut F,
) -> Result<(), ReconcileError> {
    let started = client
        .run::<BulkOperationRunQuery>(
            bulk_operation_run_query::Variables {
                query: bulk_query(filter),
            },
            1,
        )
        .await
        .map_err(|e| match e {
            // Another bulk query running (OPERATION_IN_PROGRESS before 2026-01, a limit
            // after) or a query Shopify rejects: the operation itself was refused.
            ShopifyError::UserErrors { errors, .. } => ReconcileError::Bulk(format!(
                "Shopify refused to start it: {}",
                errors
                    .iter()
                    .map(|e| e.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
            other => ReconcileError::Shopify(other),
        })?;
    let id = convert::bulk_started(started)
        .ok_or_else(|| ReconcileError::Bulk("Shopify started no operation".to_string()))?;
    progress(Progress::BulkStarted { id: id.clone() });

    let mut delay = BULK_POLL_FIRST;
    let url = loop {
        // Pacing the polls, not waiting for an event: Shopify offers a webhook for the finish,
        // but reconciliation also runs where none can arrive (the CLI against a stopped daemon).
        tokio::time::sleep(delay).await;
        delay = next_poll_delay(delay);
        let data = client
            .run::<BulkOperation>(bulk_operation::Variables { id: id.clone() }, 1)
            .await?;
        let op = convert::bulk_state(data)
            .ok_or_else(|| ReconcileError::Bulk(format!("operation {id} no longer exists")))?;
        progress(Progress::BulkPolled {
            status: op.status.clone(),
            objects: op.object_count,
        });
        if op.is_completed() {
            break op.url;
        }
        if !op.is_pending() {
            // FAILED, CANCELED, CANCELING, EXPIRED, and any status this build does not know:
            // the result will not come (partial data cannot tell a deleted order from an
            // unlisted one, so it is not used).
            let code = op.error_code.as_deref().unwrap_or("no error code");
            return Err(ReconcileError::Bulk(format!(
                "operation {id} ended {} ({code})",
                op.status
            )));
        }
    };
    // A completed operation that found nothing has no file.
    let lines = match url {
        Some(url) => download(http, &url, sink).await?,
        None => 0,
    };
    progress(Progress::BulkDownloaded { lines });
    Ok(())
}

/// How one download attempt failed.
enum DownloadFailure {
    /// The transfer broke: another attempt may succeed (lines fed already are fed again, which
    /// `note_shopify` absorbs).
    Transfer(String),
    /// The content is wrong: another attempt would read the same.
    Content(ReconcileError),
}

/// Downloads the bulk result and feeds its orders to `sink`; returns the number of lines.
async fn download<F: FnMut(ChangedOrder) + Send>(
    http: &reqwest::Client,
    url: &str,
    sink: &mut F,
) -> Result<usize, ReconcileError> {
    let mut attempt = 1;
    loop {
        match download_once(http, url, sink).await {
            Ok(lines) => return Ok(lines),
            Err(DownloadFailure::Content(e)) => return Err(e),
            Err(DownloadFailure::Transfer(why)) if attempt >= DOWNLOAD_ATTEMPTS => {
                return Err(ReconcileError::Download(format!(
                    "{why} (after {attempt} attempts)"
                )));
            }
            Err(DownloadFailure::Transfer(why)) => {
                tracing::warn!(
                    attempt,
                    "downloading the bulk result failed: {why}; retrying"
                );
                tokio::time::sleep(BULK_POLL_FIRST * 2u32.pow(attempt)).await;
                attempt += 1;
            }
        }
    }
}

/// One attempt at the download, read chunk by chunk so that a result of many megabytes is never
/// held whole.
async fn download_once<F: FnMut(ChangedOrder) + Send>(
    http: &reqwest::Client,
    url: &str,
    sink: &mut F,
) -> Result<usize, DownloadFailure> {
    let transfer = |e: reqwest::Error| DownloadFailure::Transfer(e.without_url().to_string());
    let mut response = http.get(url).send().await.map_err(transfer)?;
    let status = response.status();
    if status.is_server_error() {
        return Err(DownloadFailure::Transfer(format!("HTTP {status}")));
    }
    if !status.is_success() {
        // The URL expired (Shopify keeps results for a week) or is wrong: retrying cannot help.
        return Err(DownloadFailure::Content(ReconcileError::Download(format!(
            "HTTP {status}"
        ))));
    }
    let mut splitter = LineSplitter::default();
    let mut lines = 0;
    let mut feed = |line: &[u8]| -> Result<(), ReconcileError> {
        lines += 1;
        if let Some(order) = parse_bulk_line(line, lines)? {
            sink(order);
        }
        Ok(())
    };
    loop {
        let chunk = tokio::time::timeout(DOWNLOAD_STALL, response.chunk())
            .await
            .map_err(|_| {
                DownloadFailure::Transfer(format!("no data for {} s", DOWNLOAD_STALL.as_secs()))
            })?
            .map_err(transfer)?;
        let Some(chunk) = chunk else { break };
        splitter
            .feed(&chunk, &mut feed)
            .map_err(DownloadFailure::Content)?;
    }
    splitter
        .finish(&mut feed)
        .map_err(DownloadFailure::Content)?;
    Ok(lines)
}

/// Cuts a byte stream into lines, keeping only the unfinished line between chunks.
#[derive(Default)]
struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds one chunk, calling `f` with every line it completes (without the newline).
    fn feed(
        &mut self,
        chunk: &[u8],
        f: &mut impl FnMut(&[u8]) -> Result<(), ReconcileError>,
    ) -> Result<(), ReconcileError> {
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                f(&rest[..end])?;
            } else {
                self.partial.extend_from_slice(&rest[..end]);
                let line = std::mem::take(&mut self.partial);
                f(&line)?;
            }
            rest = &rest[end + 1..];
        }
        if self.partial.len() + rest.len() > MAX_LINE_BYTES {
            return Err(ReconcileError::Download(format!(
                "a line is longer than {MAX_LINE_BYTES} bytes: this is not the result asked for"
            )));
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }

    /// Ends the stream: a last line without a newline is a line too.
    fn finish(
        self,
        f: &mut impl FnMut(&[u8]) -> Result<(), ReconcileError>,
    ) -> Result<(), ReconcileError> {
        if self.partial.is_empty() {
            Ok(())
        } else {
            f(&self.partial)
        }
    }
}

/// One line of the bulk result. Child objects of nested connections come as lines of their own
/// with `__parentId`; the query asks for none, but Shopify's format allows them.
#[derive(Deserialize)]
struct BulkLine {
    id: String,
    #[serde(rename = "updatedAt")]
    updated_at: Option<String>,
    #[serde(rename = "__parentId")]
    parent_id: Option<serde::de::IgnoredAny>,
}

/// Parses line `number` (from 1) of the bulk result: an order, or None for a blank line or a
/// child object's line. The line's text is never put into an error: results can hold customer
/// data when someone widens the query.
fn parse_bulk_line(line: &[u8], number: usize) -> Result<Option<ChangedOrder>, ReconcileError> {
    let line = line.trim_ascii();
    if line.is_empty() {
        return Ok(None);
    }
    let parsed: BulkLine = serde_json::from_slice(line).map_err(|e| {
        ReconcileError::Download(format!(
            "line {number} is not an order object ({})",
            json_error_kind(&e)
        ))
    })?;
    if parsed.parent_id.is_some() {
        return Ok(None);
    }
    let Some(text) = parsed.updated_at else {
        return Err(ReconcileError::Download(format!(
            "line {number} (order {}) has no updatedAt",
            parsed.id
        )));
    };
    let updated_at = Timestamp::parse(&text).map_err(|reason| ConvertError::Timestamp {
        order_id: parsed.id.clone(),
        field: "updatedAt".to_string(),
        reason,
    })?;
    Ok(Some(ChangedOrder {
        id: parsed.id,
        updated_at,
    }))
}

/// What kind of mistake a serde_json error is, without the input's text.
fn json_error_kind(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "not the fields asked for",
        serde_json::error::Category::Eof => "cut short",
    }
}

/// Why the shop is not to be reconciled now, if it is stopped: the app was uninstalled, or the
/// shop erased by `shop/redact`, and no sign of a reinstall came since. Asking Shopify would only
/// meet a revoked token; the poller's probe notices a reinstall.
fn stopped(store: &Store, shop: &str) -> Result<Option<String>, StoreError> {
    let Some(state) = store.shop_state(shop)? else {
        return Ok(None);
    };
    let Some(uninstalled) = state.uninstalled_at_ms else {
        return Ok(None);
    };
    let when = |ms: u64| Timestamp::from_unix_ms(ms as i64).text;
    Ok(Some(match state.erased_at_ms {
        Some(erased) => format!(
            "{shop} was erased (shop/redact at {}) after the app was uninstalled: it is not \
             reconciled until the app is installed again",
            when(erased)
        ),
        None => format!(
            "the app was uninstalled from {shop} at {}: it is not reconciled until it is \
             installed again",
            when(uninstalled)
        ),
    }))
}

/// `1 order`, `2 orders`.
fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `1 order is`, `2 orders are`.
fn plural_verb(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// Reconciles the shop every `every`, repairing what drifted, and logs each report. The first run
/// is one interval after start: start-up already scans for changed orders.
pub async fn run_periodically(
    store: Store,
    client: ShopifyClient,
    http: reqwest::Client,
    every: Duration,
    clock: Clock,
    cancel: tokio_util::sync::CancellationToken,
) {
    let shop = client.shop().to_string();
    loop {
        // The schedule survives restarts: a daemon restarted more often than `every` would
        // otherwise never get to run it. A shop never reconciled waits one interval (start-up
        // already scans it for changed orders).
        let now = crate::delivery::now_ms();
        let last = match store.last_reconciled_ms(&shop) {
            Ok(Some(last)) => last,
            Ok(None) => {
                let _ = store.set_last_reconciled_ms(&shop, now);
                now
            }
            Err(e) => {
                tracing::warn!(%shop, error = %e, "cannot read the last reconciliation time");
                now
            }
        };
        let due = Duration::from_millis((last + every.as_millis() as u64).saturating_sub(now));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(due) => {}
        }
        // An uninstalled or erased shop is skipped until it is installed again, without
        // counting as a run: the first round after the reinstall reconciles it.
        match stopped(&store, &shop) {
            Ok(Some(why)) => {
                tracing::info!(%shop, "daily reconciliation skipped: {why}");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(%shop, error = %e, "cannot read the shop's state"),
        }
        let options = ReconcileOptions {
            since: Some(default_since()),
            repair: true,
            clock: clock.clone(),
            ..ReconcileOptions::default()
        };
        let run = reconcile(&store, &client, &http, &options, &|_| {});
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            result = run => result,
        };
        if let Err(e) = store.set_last_reconciled_ms(&shop, crate::delivery::now_ms()) {
            tracing::warn!(%shop, error = %e, "cannot record the reconciliation time");
        }
        match result {
            Ok(report) => {
                let drift: Vec<String> = report
                    .classes
                    .iter()
                    .filter(|c| c.count > 0)
                    .map(|c| format!("{} {}", c.name, c.count))
                    .collect();
                tracing::info!(%shop, drift = %drift.join(", "), repairs = report.repairs.len(),
                    seconds = report.seconds, "daily reconciliation finished");
            }
            Err(e) => tracing::warn!(%shop, error = %e, "daily reconciliation failed"),
        }
    }
}

/// The window used when none is given: the last 59 days. With the `read_orders` scope Shopify
/// returns only the last 60 days of orders, so a longer window would report every older mirrored
/// order as unknown to Shopify. (With `read_all_orders`, pass an earlier `--since`.)
pub fn default_since() -> Timestamp {
    Timestamp::from_unix_ms(crate::delivery::now_ms() as i64 - 59 * 86_400_000)
}

/// Reads `--since`: an RFC 3339 time, or a date (`2026-11-01`, midnight UTC).
pub fn parse_since(text: &str) -> Result<Timestamp, String> {
    let text = text.trim();
    let full = if text.len() == 10 && text.as_bytes().get(4) == Some(&b'-') {
        format!("{text}T00:00:00Z")
    } else {
        text.to_string()
    };
    Timestamp::parse(&full)
        .map_err(|_| format!("`{text}` is neither a date (YYYY-MM-DD) nor an RFC 3339 time"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(chunks: &[&[u8]]) -> Result<Vec<Vec<u8>>, ReconcileError> {
        let mut splitter = LineSplitter::default();
        let mut out = Vec::new();
        let mut f = |line: &[u8]| {
            out.push(line.to_vec());
            Ok(())
        };
        for chunk in chunks {
            splitter.feed(chunk, &mut f)?;
        }
        splitter.finish(&mut f)?;
        Ok(out)
    }

    #[test]
    fn order_lines_parse_and_child_lines_are_skipped() {
        let order = parse_bulk_line(
            br#"{"id":"gid://shopify/Order/820982911946154508","updatedAt":"2026-11-25T10:00:00-05:00"}"#,
            1,
        )
        .unwrap()
        .unwrap();
        assert_eq!(order.id, "gid://shopify/Order/820982911946154508");
        assert_eq!(
            order.updated_at.unix_ms,
            Timestamp::parse("2026-11-25T15:00:00Z").unwrap().unix_ms
        );
        // A trailing carriage return and surrounding blanks are not part of the object.
        assert!(
            parse_bulk_line(
                b" {\"id\":\"gid://shopify/Order/1\",\"updatedAt\":\"2026-01-01T00:00:00Z\"}\r",
                2
            )
            .unwrap()
            .is_some()
        );
        let child = br#"{"id":"gid://shopify/LineItem/1","sku":"LAMP","__parentId":"gid://shopify/Order/1"}"#;
        assert!(parse_bulk_line(child, 3).unwrap().is_none());
        assert!(parse_bulk_line(b"", 4).unwrap().is_none());
        assert!(parse_bulk_line(b"  \r", 5).unwrap().is_none());
    }

    #[test]
    fn bad_lines_are_errors_that_name_the_line_but_not_its_text() {
        let err = parse_bulk_line(br#"{"id": "gid://shopify/Order/1", "upd"#, 7).unwrap_err();
        assert!(matches!(err, ReconcileError::Download(_)), "{err}");
        assert!(err.to_string().contains("line 7"), "{err}");
        assert!(!err.to_string().contains("upd"), "{err}");

        let err = parse_bulk_line(br#"{"name":"Ada Lovelace"}"#, 8).unwrap_err();
        assert!(err.to_string().contains("line 8"), "{err}");
        assert!(!err.to_string().contains("Ada"), "{err}");

        let err = parse_bulk_line(br#"{"id":"gid://shopify/Order/2"}"#, 9).unwrap_err();
        assert!(err.to_string().contains("has no updatedAt"), "{err}");

        let err = parse_bulk_line(
            br#"{"id":"gid://shopify/Order/3","updatedAt":"yesterday"}"#,
            10,
        )
        .unwrap_err();
        assert!(
            matches!(&err, ReconcileError::Convert(ConvertError::Timestamp { order_id, .. }) if order_id == "gid://shopify/Order/3"),
            "{err}"
        );
    }

    #[test]
    fn lines_survive_any_chunking() {
        let text = b"{\"a\":1}\n{\"b\":2}\r\n\n{\"c\":3}";
        let whole = lines_of(&[text]).unwrap();
        assert_eq!(
            whole,
            vec![
                b"{\"a\":1}".to_vec(),
                b"{\"b\":2}\r".to_vec(),
                Vec::new(),
                b"{\"c\":3}".to_vec()
            ]
        );
        for cut in 0..text.len() {
            let (a, b) = text.split_at(cut);
            assert_eq!(lines_of(&[a, b]).unwrap(), whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(lines_of(&bytes).unwrap(), whole);
        // A final newline does not make an extra line.
        assert_eq!(lines_of(&[b"x\n"]).unwrap(), vec![b"x".to_vec()]);
        assert!(lines_of(&[]).unwrap().is_empty());
    }

    #[test]
    fn an_endless_line_is_refused() {
        let big = vec![b'x'; MAX_LINE_BYTES / 2 + 1];
        assert!(lines_of(&[&big, &big]).is_err());
    }

    #[test]
    fn the_bulk_query_lists_ids_and_times_with_or_without_a_filter() {
        assert_eq!(
            bulk_query(Some("updated_at:>='2026-11-01T00:00:00Z'")),
            "{ orders(query: \"updated_at:>='2026-11-01T00:00:00Z'\") { edges { node { id updatedAt } } } }"
        );
        assert_eq!(
            bulk_query(None),
            "{ orders { edges { node { id updatedAt } } } }"
        );
        assert_eq!(
            bulk_query(Some(r#"a"b"#)),
            r#"{ orders(query: "a\"b") { edges { node { id updatedAt } } } }"#
        );
    }

    #[test]
    fn polls_back_off_to_the_cap() {
        let mut delay = BULK_POLL_FIRST;
        let mut total = Duration::ZERO;
        for _ in 0..30 {
            total += delay;
            delay = next_poll_delay(delay);
        }
        assert_eq!(delay, BULK_POLL_MAX);
        assert_eq!(next_poll_delay(BULK_POLL_FIRST), Duration::from_millis(300));
        assert!(total < Duration::from_secs(150), "{total:?}");
    }

    #[test]
    fn examples_are_the_lowest_ids_whatever_the_arrival_order() {
        let ids: Vec<String> = [12, 3, 100, 7, 1, 55, 2]
            .iter()
            .map(|n| format!("gid://shopify/Order/{n}"))
            .collect();
        let mut forward = Examples::new(3);
        let mut backward = Examples::new(3);
        for id in &ids {
            forward.offer(id, || id.clone());
        }
        for id in ids.iter().rev() {
            backward.offer(id, || format!("{id}!"));
        }
        assert_eq!(
            forward.into_vec(),
            vec![
                "gid://shopify/Order/1",
                "gid://shopify/Order/2",
                "gid://shopify/Order/3"
            ]
        );
        assert_eq!(backward.into_vec().len(), 3);
        let mut none = Examples::new(0);
        none.offer("x", || unreachable!("no examples asked for"));
        assert!(none.into_vec().is_empty());
    }

    fn sample_report() -> ReconcileReport {
        ReconcileReport {
            shop: "example.myshopify.com".into(),
            since: Some("2026-11-01T00:00:00Z".into()),
            via_bulk: false,
            shopify_orders: 120,
            mirrored_orders: 118,
            classes: vec![
                DriftClass {
                    name: MISSING_FROM_MIRROR.into(),
                    description: "orders Shopify has in the window that the mirror lacks".into(),
                    count: 3,
                    examples: vec![
                        "gid://shopify/Order/1".into(),
                        "gid://shopify/Order/2".into(),
                    ],
                },
                DriftClass {
                    name: STALE_IN_MIRROR.into(),
                    description: "stale".into(),
                    count: 0,
                    examples: vec![],
                },
                DriftClass {
                    name: HOLDS_WITHOUT_EXCEPTION.into(),
                    description: "held".into(),
                    count: 1,
                    examples: vec![
                        "gid://shopify/FulfillmentOrder/9 (order #1001, hold shipgate-1)".into(),
                    ],
                },
            ],
            repairs: vec!["Triggered a fetch of 3 orders missing from the mirror: all 3 are now mirrored at Shopify's state.".into()],
            seconds: 1.25,
        }
    }

    #[test]
    fn the_text_report_is_a_table_of_classes_counts_and_examples() {
        let report = sample_report();
        assert_eq!(report.drift(), 4);
        let text = report.to_text();
        let expected = "\
Reconciliation of example.myshopify.com: orders updated since 2026-11-01T00:00:00Z
Shopify returned 120 orders (listed by pages); the mirror held 118 orders. Took 1.2 s.

CLASS                      COUNT  EXAMPLES
missing_from_mirror            3  gid://shopify/Order/1
                                  gid://shopify/Order/2
                                  (and 1 more)
stale_in_mirror                0  -
holds_without_exception        1  gid://shopify/FulfillmentOrder/9 (order #1001, hold shipgate-1)

Drift: 4 cases in total.
  missing_from_mirror: orders Shopify has in the window that the mirror lacks
  holds_without_exception: held

Repairs:
  - Triggered a fetch of 3 orders missing from the mirror: all 3 are now mirrored at Shopify's state.
";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn a_clean_report_says_so() {
        let mut report = sample_report();
        for class in &mut report.classes {
            class.count = 0;
            class.examples.clear();
        }
        report.repairs.clear();
        report.since = None;
        report.via_bulk = true;
        let text = report.to_text();
        assert!(text.contains(": every order\n"), "{text}");
        assert!(text.contains("(listed by bulk operation)"), "{text}");
        assert!(text.ends_with("No drift.\n"), "{text}");
        assert_eq!(report.drift(), 0);
    }

    /// The admin API and the daemon's daily run spawn the future, so it must stay `Send`; this
    /// fails to compile otherwise.
    #[test]
    fn the_reconcile_future_is_send() {
        fn check(
            store: &Store,
            client: &ShopifyClient,
            http: &reqwest::Client,
            options: &ReconcileOptions,
            progress: &(dyn Fn(Progress) + Send + Sync),
        ) {
            fn send<T: Send>(_: T) {}
            send(reconcile(store, client, http, options, progress));
        }
        let _ = check;
    }

    #[test]
    fn the_report_serializes_every_field() {
        let json = serde_json::to_value(sample_report()).unwrap();
        assert_eq!(json["classes"][0]["name"], "missing_from_mirror");
        assert_eq!(json["classes"][0]["count"], 3);
        assert_eq!(json["since"], "2026-11-01T00:00:00Z");
        assert_eq!(json["via_bulk"], false);
        let progress = serde_json::to_value(Progress::BulkDownloaded { lines: 5 }).unwrap();
        assert_eq!(
            progress,
            serde_json::json!({"stage": "bulk_downloaded", "lines": 5})
        );
    }
}

#[cfg(test)]
mod write_back_tests {
    use super::*;
    use crate::store::{Store, StoreOptions};
    use crate::workflow::model::{Actor, Evidence, EvidenceKind, OrderCase, Shipment, Source};

    fn own(id: &str, kind: EvidenceKind) -> Evidence {
        Evidence {
            id: id.into(),
            at_ms: 1_000,
            recorded_ms: 1_000,
            actor: Actor::System,
            source: Source::Workflow,
            kind,
        }
    }

    /// An intent withdrawn because the gate shut is no write-back the outbox owes.
    #[test]
    fn a_withdrawn_intent_is_not_an_overdue_write_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let shop = "shop.myshopify.com";
        let case_with = |withdrawn: bool, order: &str| {
            let mut case = OrderCase::new(shop, order, "#1001");
            let mut shipment = Shipment {
                id: format!("SG-{}", order.len()),
                supplier: "acme".into(),
                fulfillment_order_id: "gid://shopify/FulfillmentOrder/1".into(),
                lines: Vec::new(),
                created_ms: 1_000,
                evidence: Vec::new(),
            };
            let key = format!("{}.f1", shipment.id);
            shipment.record(own(
                "f1.intended",
                EvidenceKind::FulfillmentIntended {
                    key: key.clone(),
                    fulfillment_order_id: shipment.fulfillment_order_id.clone(),
                    lines: vec![("gid://shopify/FulfillmentOrderLineItem/1".into(), 1)],
                    parcels: vec!["P1".into()],
                    numbers: vec!["1Z1".into()],
                },
            ));
            if withdrawn {
                shipment.record(own(
                    "f1.withdrawn",
                    EvidenceKind::FulfillmentWithdrawn {
                        key,
                        reason: "the order was cancelled".into(),
                    },
                ));
            }
            case.shipments.push(shipment);
            store
                .put_order(&crate::order::OrderMirror {
                    shop: shop.into(),
                    id: order.into(),
                    name: "#1001".into(),
                    created_at: None,
                    updated_at: Timestamp::from_unix_ms(1_000),
                    cancelled_at: None,
                    cancel_reason: None,
                    display_fulfillment_status: "UNFULFILLED".into(),
                    shipping_address: None,
                    line_items: Vec::new(),
                    fulfillment_orders: Vec::new(),
                    fulfillments: Vec::new(),
                    truncated: false,
                })
                .unwrap();
            case
        };
        let withdrawn = case_with(true, "gid://shopify/Order/1");
        store
            .write_case(crate::store::cases::CaseWrite {
                case: Some(&withdrawn),
                ..Default::default()
            })
            .unwrap();
        let day = 86_400_000;
        let index = index_write_backs(&store, shop, &HashSet::new(), 2 * day, 5).unwrap();
        assert_eq!(index.overdue.count, 0);
        // The same intent without its withdrawal is overdue: the check above is not vacuous.
        let pending = case_with(false, "gid://shopify/Order/22");
        store
            .write_case(crate::store::cases::CaseWrite {
                case: Some(&pending),
                ..Default::default()
            })
            .unwrap();
        let index = index_write_backs(&store, shop, &HashSet::new(), 2 * day, 5).unwrap();
        assert_eq!(index.overdue.count, 1);
    }
}
