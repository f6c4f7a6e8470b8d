//! The store: shipgate's only door to sled.
//!
//! No other module names sled. Everything persistent goes through the typed methods here, which
//! keep three promises:
//!
//! - Keys sort the way the data is read (big-endian integers, NUL-joined composite keys; see
//!   [`codec`]).
//! - Every value carries a format version (see [`codec::Record`]).
//! - A method that returns after `flush` has made its write durable. Flushes are shared between
//!   concurrent writers by one thread (see [`flusher`]), which is how the intake meets invariant 1
//!   (durable before acknowledged) at thousands of deliveries per second.
//!
//! Trees:
//!
//! | tree             | key                                  | value                          |
//! |------------------|--------------------------------------|--------------------------------|
//! | `meta`           | name                                 | layout version, cursor (u64 BE)|
//! | `deliveries`     | sequence number (u64 BE)             | [`Delivery`]                   |
//! | `delivery_ids`   | origin scope \0 sender's delivery id | sequence number                |
//! | `shops`          | shop domain                          | [`ShopState`]                  |
//! | `order_triggers` | shop \0 order gid                    | [`OrderTrigger`]               |
//! | `orders`         | shop \0 order gid                    | [`OrderMirror`]                |
//! | `fo_index`       | shop \0 fulfillment order gid        | order gid (UTF-8)              |
//! | `parked_orders`  | shop \0 order gid                    | [`ParkedOrder`]                |
//! | `redacted_orders`| shop \0 order gid                    | empty: address erased for good |
//!
//! Recording a delivery is two plain inserts, not a sled transaction: transactions (and
//! batches) take sled's global write lock, and when this was decided a three-tree transaction
//! reached about a quarter of the throughput of two plain inserts on two cores (10.8k against
//! 40k raw writes/s of 4 KiB; `benches/store.rs` measures the store as it is now). Safety comes
//! from the order instead. The id is written
//! first and the delivery second, under a lock striped by id, so a crash between the two leaves an
//! id without its delivery, which the sender's retry detects and repairs; an unflushed delivery
//! was never acknowledged. The processor walks deliveries by sequence number behind a cursor and
//! never passes a number still being written (see `Sequencer`).

pub mod cases;
mod codec;
mod flusher;
mod legacy;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::delivery::{Delivery, Origin};
use crate::order::{OrderMirror, Timestamp};
use codec::{DecodeError, Record, composite_key, composite_prefix, decode, encode, u64_key};
pub use flusher::FlushStats;

/// The store layout this build writes. A store written by a newer layout is refused.
const SCHEMA_VERSION: u64 = 1;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot read or write right now (disk error, injected fault, closed).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored value could not be decoded.
    #[error("corrupt value in tree `{tree}`: {source}")]
    Corrupt {
        tree: &'static str,
        source: DecodeError,
    },
    /// The store was written by a newer shipgate.
    #[error(
        "the store at {path} has layout version {found}; this build reads up to {SCHEMA_VERSION}"
    )]
    TooNew { path: String, found: u64 },
    /// Another process holds the store open.
    #[error("the store at {0} is in use by another process (is the daemon running?)")]
    Locked(String),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// Whether writes that ask for durability are flushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Flush before answering: the only mode for production.
    Flush,
    /// Skip every flush. Only for the crash test that proves flushing matters; loses data.
    UnsafeNoFlush,
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// sled's page cache cap in bytes.
    pub cache_capacity_bytes: u64,
    /// How often writes that nobody waits for are flushed.
    pub flush_interval: Duration,
    /// Whether durable writes are really flushed.
    pub durability: Durability,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_capacity_bytes: 64 << 20,
            flush_interval: Duration::from_millis(500),
            durability: Durability::Flush,
        }
    }
}

/// The outcome of recording a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Stored for the first time under this sequence number.
    New(u64),
    /// The sender's delivery id was already stored under this sequence number; nothing written.
    Duplicate(u64),
}

/// What shipgate knows of a shop's installation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShopState {
    /// Set by `app/uninstalled` and by `shop/redact` (the event's time): no more work is
    /// started for the shop (no polling, fetching, reconciliation).
    pub uninstalled_at_ms: Option<u64>,
    /// Set when the app was seen installed again after the uninstall (an order webhook
    /// triggered after it, or the poller's probe answered); an uninstall older than this is a
    /// late retry and is ignored.
    pub reinstalled_at_ms: Option<u64>,
    /// Set by `shop/redact` (the request's time): everything else stored for the shop was
    /// erased, and this state is the tombstone that keeps the erased shop stopped until it is
    /// installed again. It names the shop's domain and times only.
    pub erased_at_ms: Option<u64>,
}

impl ShopState {
    /// Whether no work may be started for the shop.
    pub fn is_stopped(&self) -> bool {
        self.uninstalled_at_ms.is_some()
    }
}

/// `ShopState` as format version 2 wrote it, before the erasure tombstone; read and migrated.
#[derive(Deserialize, Serialize)]
struct ShopStateV2 {
    uninstalled_at_ms: Option<u64>,
    reinstalled_at_ms: Option<u64>,
}

/// A pending request to (re)fetch one order: many webhooks for one order coalesce into one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderTrigger {
    /// When the first still-pending trigger arrived (Unix ms).
    pub first_at_ms: u64,
    /// How many triggers with news were coalesced into this one.
    pub deliveries: u32,
    /// The newest change time the triggers named (a webhook's `X-Shopify-Triggered-At`, a scan's
    /// `updatedAt`), in Unix ms.
    pub newest_change_ms: Option<i64>,
}

/// How a rewrite callback wants a stored delivery changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrite {
    /// Leave it as it is.
    Keep,
    /// Store the callback's changed value.
    Replace,
}

/// What erasing a shop removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Erased {
    /// Deliveries removed.
    pub deliveries: usize,
    /// Other entries removed (ids, triggers, state).
    pub entries: usize,
}

impl Record for Delivery {
    const VERSION: u8 = 1;
    const NAME: &'static str = "delivery";
}
impl Record for ShopState {
    // Version 2 added `reinstalled_at_ms` (no store with version 1 left the first session);
    // version 3 added `erased_at_ms`, and version 2 is still read (`shop_state`).
    const VERSION: u8 = 3;
    const NAME: &'static str = "shop state";
}
impl Record for ShopStateV2 {
    const VERSION: u8 = 2;
    const NAME: &'static str = "shop state (version 2)";
}
impl Record for OrderMirror {
    const VERSION: u8 = 1;
    const NAME: &'static str = "order mirror";
}

/// What `put_order` did with a fetched order state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The order was not mirrored before.
    Inserted,
    /// The fetched state replaced an older (or equally old) one.
    Updated,
    /// The stored state is newer: the fetched one was dropped (invariant 4).
    Stale { stored: Timestamp },
}

/// An order the mirror could not fetch, set aside so the shop's other orders go on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedOrder {
    /// Why (Shopify's or the conversion's message).
    pub reason: String,
    /// When (Unix ms).
    pub at_ms: u64,
}

impl Record for ParkedOrder {
    const VERSION: u8 = 1;
    const NAME: &'static str = "parked order";
}

impl Record for OrderTrigger {
    // Version 1 kept the triggering time as text; `order_triggers` rewrites an unreadable
    // trigger as a fresh one, which only costs one fetch.
    const VERSION: u8 = 2;
    const NAME: &'static str = "order trigger";
}

/// The handle every module uses to persist state. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    deliveries: sled::Tree,
    delivery_ids: sled::Tree,
    meta: sled::Tree,
    shops: sled::Tree,
    order_triggers: sled::Tree,
    orders: sled::Tree,
    fo_index: sled::Tree,
    parked_orders: sled::Tree,
    redacted_orders: sled::Tree,
    /// The workflow's trees (`cases.rs`).
    cases: cases::CaseTrees,
    /// Woken when an order was queued for planning.
    plan_queued: Notify,
    /// Woken when outbox effects were written, so the sender looks at once.
    effects_written: Notify,
    /// Woken when an order trigger was added.
    triggers_added: Notify,
    /// Woken when an order trigger was completed.
    triggers_done: Notify,
    flusher: std::sync::Mutex<flusher::Flusher>,
    durability: Durability,
    write_fault: AtomicBool,
    /// Serializes check-then-write per delivery id (striped: distinct ids rarely contend).
    id_locks: Vec<std::sync::Mutex<()>>,
    sequencer: std::sync::Mutex<Sequencer>,
    /// Woken when a delivery was stored.
    inbox_filled: Notify,
    /// Every sequence number below this had been processed (or erased) when the processor last
    /// found nothing left to do.
    covered_below: tokio::sync::watch::Sender<u64>,
}

/// Hands out sequence numbers and knows which are still being written, so that the processor
/// never moves its cursor past a number whose delivery is not in the tree yet.
struct Sequencer {
    next: u64,
    in_flight: std::collections::BTreeSet<u64>,
    /// The last delivery processed; everything at or below it is done.
    cursor: u64,
}

impl Sequencer {
    /// The first sequence number the processor may not read yet.
    fn readable_below(&self) -> u64 {
        self.in_flight.first().copied().unwrap_or(self.next)
    }
}

const CURSOR_KEY: &str = "processor.cursor";
const ID_LOCK_STRIPES: usize = 64;

impl Store {
    /// Opens (or creates) the store in `path`.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_capacity_bytes)
            .mode(sled::Mode::HighThroughput)
            // Our flusher thread is the only one that flushes: see `flusher`.
            .flush_every_ms(None)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                    StoreError::Locked(path.display().to_string())
                }
                sled::Error::Io(io) if io.to_string().contains("lock") => {
                    StoreError::Locked(path.display().to_string())
                }
                other => StoreError::from(other),
            })?;
        let meta = db.open_tree("meta")?;
        match meta.get("schema")? {
            Some(v) => {
                let found = codec::read_u64_key(&v).map_err(|source| StoreError::Corrupt {
                    tree: "meta",
                    source,
                })?;
                if found > SCHEMA_VERSION {
                    return Err(StoreError::TooNew {
                        path: path.display().to_string(),
                        found,
                    });
                }
            }
            None => {
                meta.insert("schema", &u64_key(SCHEMA_VERSION))?;
            }
        }
        let interval = match options.durability {
            Durability::Flush => Some(options.flush_interval),
            Durability::UnsafeNoFlush => None,
        };
        let flusher = flusher::Flusher::start(db.clone(), interval)
            .map_err(|e| StoreError::Unavailable(format!("cannot start the flusher: {e}")))?;
        let inner = Inner {
            deliveries: db.open_tree("deliveries")?,
            delivery_ids: db.open_tree("delivery_ids")?,
            meta: meta.clone(),
            shops: db.open_tree("shops")?,
            order_triggers: db.open_tree("order_triggers")?,
            orders: db.open_tree("orders")?,
            fo_index: db.open_tree("fo_index")?,
            parked_orders: db.open_tree("parked_orders")?,
            redacted_orders: db.open_tree("redacted_orders")?,
            cases: cases::CaseTrees::open(&db)?,
            plan_queued: Notify::new(),
            effects_written: Notify::new(),
            triggers_added: Notify::new(),
            triggers_done: Notify::new(),
            db,
            flusher: std::sync::Mutex::new(flusher),
            durability: options.durability,
            write_fault: AtomicBool::new(false),
            id_locks: (0..ID_LOCK_STRIPES)
                .map(|_| std::sync::Mutex::new(()))
                .collect(),
            sequencer: std::sync::Mutex::new(Sequencer {
                next: 1,
                in_flight: Default::default(),
                cursor: 0,
            }),
            inbox_filled: Notify::new(),
            covered_below: tokio::sync::watch::Sender::new(0),
        };
        let cursor = match meta.get(CURSOR_KEY)? {
            Some(v) => codec::read_u64_key(&v).map_err(|source| StoreError::Corrupt {
                tree: "meta",
                source,
            })?,
            None => 0,
        };
        let last = match inner.deliveries.last()? {
            Some((k, _)) => codec::read_u64_key(&k).map_err(|source| StoreError::Corrupt {
                tree: "deliveries",
                source,
            })?,
            None => 0,
        };
        {
            let mut sequencer = inner.sequencer.lock().unwrap_or_else(|e| e.into_inner());
            sequencer.cursor = cursor;
            // Never reuse a number at or below the cursor, even if its delivery was erased:
            // the processor would skip it.
            sequencer.next = last.max(cursor) + 1;
        }
        Ok(Store {
            inner: Arc::new(inner),
        })
    }

    /// Makes every write made so far durable (shared with concurrent callers).
    pub async fn flush(&self) -> Result<(), StoreError> {
        if self.inner.durability == Durability::UnsafeNoFlush {
            return Ok(());
        }
        self.check_fault()?;
        // The lock is held only to queue the request; the wait happens outside it.
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner
            .flusher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .request(tx)
            .map_err(StoreError::Unavailable)?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the flusher stopped".into()))?
            .map_err(StoreError::Unavailable)
    }

    /// Counts of group-commit rounds and the waiters they answered.
    pub fn flush_stats(&self) -> FlushStats {
        self.inner
            .flusher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stats()
    }

    /// Flushes a last time and stops the flusher. Later durable writes fail as unavailable.
    pub fn close(&self) {
        self.inner
            .flusher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stop();
    }

    /// Makes every later write fail as if the disk had failed. For tests of the 503 path.
    #[doc(hidden)]
    pub fn inject_write_fault(&self, on: bool) {
        self.inner.write_fault.store(on, Ordering::SeqCst);
    }

    fn check_fault(&self) -> Result<(), StoreError> {
        if self.inner.write_fault.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected write fault".into()));
        }
        Ok(())
    }

    // --- deliveries -----------------------------------------------------------------------

    /// Records a delivery unless its sender's id was recorded before, and returns once the
    /// record is durable.
    pub async fn record_delivery(&self, delivery: &Delivery) -> Result<Recorded, StoreError> {
        self.check_fault()?;
        let [kind, scope] = delivery.origin.scope();
        let id_key = composite_key(&[kind, scope, &delivery.id]);
        let value = encode(delivery);
        let outcome = self.write_delivery(&delivery.origin, &delivery.id, &id_key, &value)?;
        if let Recorded::New(_) = outcome {
            self.inner.inbox_filled.notify_one();
        }
        // A duplicate is flushed too: its first copy may still be on its way to the disk, and
        // the sender must not get a 2xx before that copy is durable.
        self.flush().await?;
        Ok(outcome)
    }

    fn write_delivery(
        &self,
        origin: &Origin,
        id: &str,
        id_key: &[u8],
        value: &[u8],
    ) -> Result<Recorded, StoreError> {
        let inner = &self.inner;
        let stripe = {
            use std::hash::{Hash as _, Hasher as _};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            id_key.hash(&mut h);
            (h.finish() as usize) % inner.id_locks.len()
        };
        let _id_lock = inner.id_locks[stripe]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = inner.delivery_ids.get(id_key)? {
            let seq = codec::read_u64_key(&existing).map_err(|source| StoreError::Corrupt {
                tree: "delivery_ids",
                source,
            })?;
            // An id without its delivery is what a crash between the two inserts leaves: the
            // delivery was never acknowledged, so this retry stores it for real. After a restart
            // the orphaned number may have been handed to another delivery, so the stored one
            // must be this very delivery to count as a duplicate.
            if let Some(stored) = inner.deliveries.get(u64_key(seq))? {
                let stored: Delivery = decode_in("deliveries", &stored)?;
                if stored.id == id && stored.origin == *origin {
                    return Ok(Recorded::Duplicate(seq));
                }
            }
        }
        let seq = {
            let mut sequencer = inner.sequencer.lock().unwrap_or_else(|e| e.into_inner());
            let seq = sequencer.next;
            sequencer.next += 1;
            sequencer.in_flight.insert(seq);
            seq
        };
        let written = inner
            .delivery_ids
            .insert(id_key, &u64_key(seq))
            .and_then(|_| inner.deliveries.insert(u64_key(seq), value));
        inner
            .sequencer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .in_flight
            .remove(&seq);
        written?;
        Ok(Recorded::New(seq))
    }

    /// One delivery by sequence number.
    pub fn delivery(&self, seq: u64) -> Result<Option<Delivery>, StoreError> {
        self.inner
            .deliveries
            .get(u64_key(seq))?
            .map(|v| decode_in("deliveries", &v))
            .transpose()
    }

    /// Whether a delivery is (still) stored, without reading it.
    pub fn has_delivery(&self, seq: u64) -> Result<bool, StoreError> {
        Ok(self.inner.deliveries.contains_key(u64_key(seq))?)
    }

    /// Every stored delivery in arrival order.
    pub fn deliveries(&self) -> impl Iterator<Item = Result<(u64, Delivery), StoreError>> + '_ {
        self.inner.deliveries.iter().map(|entry| {
            let (k, v) = entry?;
            let seq = codec::read_u64_key(&k).map_err(|source| StoreError::Corrupt {
                tree: "deliveries",
                source,
            })?;
            Ok((seq, decode_in("deliveries", &v)?))
        })
    }

    /// How many deliveries are stored.
    pub fn delivery_count(&self) -> usize {
        self.inner.deliveries.len()
    }

    /// Removes a delivery's stored body (an erasure covers it). Its id stays recorded, so a
    /// retry of it is still acknowledged as a duplicate and not stored again. Not flushed.
    pub fn drop_delivery(&self, seq: u64) -> Result<(), StoreError> {
        self.check_fault()?;
        self.inner.deliveries.remove(u64_key(seq))?;
        Ok(())
    }

    /// The sequence number a sender's delivery id was recorded under.
    pub fn delivery_seq(&self, origin: &Origin, id: &str) -> Result<Option<u64>, StoreError> {
        let [kind, scope] = origin.scope();
        self.inner
            .delivery_ids
            .get(composite_key(&[kind, scope, id]))?
            .map(|v| {
                codec::read_u64_key(&v).map_err(|source| StoreError::Corrupt {
                    tree: "delivery_ids",
                    source,
                })
            })
            .transpose()
    }

    /// Rewrites stored deliveries of one origin in place: `f` may change a delivery and says
    /// whether to store the change. Returns how many were replaced. Not flushed: call `flush`.
    pub fn rewrite_deliveries(
        &self,
        origin: &Origin,
        mut f: impl FnMut(u64, &mut Delivery) -> Rewrite,
    ) -> Result<usize, StoreError> {
        self.check_fault()?;
        let mut replaced = 0;
        for entry in self.deliveries() {
            let (seq, mut delivery) = entry?;
            if &delivery.origin != origin {
                continue;
            }
            if f(seq, &mut delivery) == Rewrite::Replace {
                self.inner
                    .deliveries
                    .insert(u64_key(seq), encode(&delivery))?;
                replaced += 1;
            }
        }
        Ok(replaced)
    }

    // --- the inbox of deliveries not yet processed ------------------------------------------

    /// Up to `limit` unprocessed deliveries, oldest first. A delivery that cannot be decoded is
    /// logged and passed over: one bad record must not stop the processing of every shop.
    pub fn inbox(&self, limit: usize) -> Result<Vec<(u64, Delivery)>, StoreError> {
        let (cursor, below) = {
            let sequencer = self
                .inner
                .sequencer
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            (sequencer.cursor, sequencer.readable_below())
        };
        let mut out = Vec::new();
        if below <= cursor + 1 {
            self.inner.covered_below.send_if_modified(|c| {
                let moved = below > *c;
                *c = (*c).max(below);
                moved
            });
            return Ok(out);
        }
        for entry in self
            .inner
            .deliveries
            .range(u64_key(cursor + 1)..u64_key(below))
            .take(limit)
        {
            let (k, v) = entry?;
            let seq = codec::read_u64_key(&k).map_err(|source| StoreError::Corrupt {
                tree: "deliveries",
                source,
            })?;
            match decode::<Delivery>(&v) {
                Ok(d) => out.push((seq, d)),
                Err(e) => {
                    tracing::error!(seq, error = %e, "unreadable delivery passed over");
                }
            }
        }
        // The processor moves the cursor past what it is handed. When nothing readable is left,
        // move it here: past unreadable deliveries, and past numbers whose deliveries were
        // erased (shop/redact) after they were stored, which would otherwise stay a gap that
        // nobody covers.
        if out.is_empty() {
            self.inbox_done(below - 1)?;
            self.inner.covered_below.send_if_modified(|c| {
                let moved = below > *c;
                *c = (*c).max(below);
                moved
            });
        }
        Ok(out)
    }

    /// Deletes processed deliveries received before `received_before_ms`, with their ids:
    /// the retention window (`[store] delivery_retention_days`). Deliveries still waiting to be
    /// processed are never deleted, whatever their age. Returns how many went. Not flushed.
    pub fn prune_deliveries(&self, received_before_ms: u64) -> Result<usize, StoreError> {
        self.check_fault()?;
        let cursor = self.processed_cursor();
        let mut pruned = 0;
        // Sequence numbers follow arrival, so the old ones come first; the walk stops at the
        // first delivery young enough to keep (give or take a clock step backwards).
        for entry in self.inner.deliveries.range(..=u64_key(cursor)) {
            let (k, v) = entry?;
            let delivery = match decode::<Delivery>(&v) {
                Ok(d) => d,
                // An unreadable record cannot be dated; it stays for an operator, as elsewhere.
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable delivery left by the retention");
                    continue;
                }
            };
            if delivery.received_at_ms >= received_before_ms {
                break;
            }
            let [kind, scope] = delivery.origin.scope();
            self.inner
                .delivery_ids
                .remove(composite_key(&[kind, scope, &delivery.id]))?;
            self.inner.deliveries.remove(k)?;
            pruned += 1;
        }
        Ok(pruned)
    }

    /// How many stored deliveries wait to be processed.
    pub fn inbox_len(&self) -> usize {
        let cursor = self.processed_cursor();
        self.inner.deliveries.range(u64_key(cursor + 1)..).count()
    }

    /// The sequence number up to which every delivery was processed.
    fn processed_cursor(&self) -> u64 {
        self.inner
            .sequencer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cursor
    }

    /// Marks every delivery up to and including `seq` processed. Not flushed: a crash repeats
    /// the processing, which is idempotent.
    pub fn inbox_done(&self, seq: u64) -> Result<(), StoreError> {
        self.check_fault()?;
        {
            let mut sequencer = self
                .inner
                .sequencer
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if seq <= sequencer.cursor {
                return Ok(());
            }
            sequencer.cursor = seq;
        }
        self.inner.meta.insert(CURSOR_KEY, &u64_key(seq))?;
        // Everything up to the cursor is processed: a waiter whose deliveries are all behind it
        // need not wait for the inbox to run empty (it may never, on a busy day).
        self.inner.covered_below.send_if_modified(|c| {
            let moved = seq + 1 > *c;
            *c = (*c).max(seq + 1);
            moved
        });
        Ok(())
    }

    /// Waits until a delivery may have been stored.
    pub async fn inbox_filled(&self) {
        self.inner.inbox_filled.notified().await
    }

    /// Waits until every delivery stored before this call has been processed: the processor
    /// has since found its inbox empty. (Counting what is left would not do: a shop/redact
    /// erases its own delivery before it has finished its work.) Needs the processor running.
    pub async fn inbox_empty(&self) {
        let target = self
            .inner
            .sequencer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next;
        let mut covered = self.inner.covered_below.subscribe();
        // The inbox may be empty with nobody to notice: the processor only looks when woken.
        self.inner.inbox_filled.notify_one();
        let _ = covered.wait_for(|c| *c >= target).await;
    }

    // --- shops ------------------------------------------------------------------------------

    /// What is known of a shop's installation.
    ///
    /// A state this build cannot read (an older format) counts as none, with an error in the
    /// log: failing instead would stop every delivery of the shop from being processed, while
    /// the worst a lost uninstall mark does is let work go on until the next `app/uninstalled`.
    pub fn shop_state(&self, shop: &str) -> Result<Option<ShopState>, StoreError> {
        let Some(v) = self.inner.shops.get(shop.as_bytes())? else {
            return Ok(None);
        };
        match decode_shop_state(&v) {
            Ok(state) => Ok(Some(state)),
            Err(e) => {
                tracing::error!(%shop, error = %e, "unreadable shop state taken as none");
                Ok(None)
            }
        }
    }

    /// Records that the app answered for the shop at `at_ms` (the poller's probe): a shop
    /// stopped by an uninstall (or an erasure) older than that is running again. An uninstall
    /// at or after `at_ms` wins, as it does against an order webhook, so a late probe result
    /// cannot undo a newer uninstall. Returns whether the shop was resumed. Compare-and-swap:
    /// the processor may record an uninstall meanwhile. Not flushed: call `flush`.
    pub fn mark_reinstalled(&self, shop: &str, at_ms: u64) -> Result<bool, StoreError> {
        self.swap_shop_state(shop, |state| {
            let state = state?;
            match state.uninstalled_at_ms {
                Some(uninstalled) if uninstalled < at_ms => Some(ShopState {
                    uninstalled_at_ms: None,
                    reinstalled_at_ms: Some(at_ms),
                    ..state
                }),
                _ => None,
            }
        })
    }

    /// Records an `app/uninstalled` triggered at `at_ms`: the shop stops, unless a reinstall at or
    /// after `at_ms` was already seen (a late retry of an old uninstall must not stop a shop that
    /// was installed again). The newest uninstall's time is kept, so a late retry of an older one
    /// cannot wind it back. Returns whether the shop is stopped by it. Compare-and-swap, like
    /// `mark_reinstalled`: the poller's probe may resume the shop meanwhile, and whichever of the
    /// two is newer must win. Not flushed: call `flush`.
    pub fn mark_uninstalled(&self, shop: &str, at_ms: u64) -> Result<bool, StoreError> {
        self.swap_shop_state(shop, |state| {
            // An unknown (or unreadable) state starts from none, as `shop_state` takes it.
            let state = state.unwrap_or_default();
            if state.reinstalled_at_ms.is_some_and(|r| r >= at_ms) {
                return None;
            }
            Some(ShopState {
                uninstalled_at_ms: Some(at_ms.max(state.uninstalled_at_ms.unwrap_or(0))),
                ..state
            })
        })
    }

    /// Changes a shop's state by compare-and-swap until it sticks: `change` gets the stored
    /// state (none when absent or unreadable) and returns the new one, or none to leave it.
    /// Says whether it changed it.
    fn swap_shop_state(
        &self,
        shop: &str,
        change: impl Fn(Option<ShopState>) -> Option<ShopState>,
    ) -> Result<bool, StoreError> {
        self.check_fault()?;
        loop {
            let current = self.inner.shops.get(shop.as_bytes())?;
            let state = current.as_deref().and_then(|v| decode_shop_state(v).ok());
            let Some(next) = change(state) else {
                return Ok(false);
            };
            if self
                .inner
                .shops
                .compare_and_swap(shop.as_bytes(), current, Some(encode(&next)))?
                .is_ok()
            {
                return Ok(true);
            }
        }
    }

    /// Writes a shop state's bytes as they are, for the format migration tests.
    #[cfg(test)]
    fn put_raw_shop_state(&self, shop: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.inner.shops.insert(shop.as_bytes(), bytes)?;
        Ok(())
    }

    /// Replaces a shop's state. Not flushed: call `flush`.
    pub fn set_shop_state(&self, shop: &str, state: &ShopState) -> Result<(), StoreError> {
        self.check_fault()?;
        self.inner.shops.insert(shop.as_bytes(), encode(state))?;
        Ok(())
    }

    /// Removes everything stored for a shop: deliveries, their ids, triggers, the mirror, the
    /// cases and checkpoints. `request` is the shop/redact delivery that asked for it, removed
    /// last; `at_ms` is when it was sent.
    ///
    /// What stays is a tombstone, the shop's state marked erased at `at_ms` and stopped (as an
    /// uninstall at that time would), so that the poller, reconciliation and the daily run do
    /// not start again from scratch against a shop whose tokens are revoked. It is lifted the
    /// way an uninstall is: by a sign of a reinstall after `at_ms`. A reinstall already seen at
    /// or after `at_ms` keeps the shop running (the same rule as a late `app/uninstalled`).
    /// Not flushed: call `flush`.
    pub fn erase_shop(
        &self,
        shop: &str,
        request: Option<u64>,
        at_ms: u64,
    ) -> Result<Erased, StoreError> {
        self.check_fault()?;
        let previous = self.shop_state(shop)?.unwrap_or_default();
        let origin = Origin::Shopify {
            shop: shop.to_string(),
        };
        let mut erased = Erased::default();
        let [kind, scope] = origin.scope();
        // Everything but the deliveries first: the shop/redact request is itself a delivery,
        // and while it is stored a crash in the middle repeats the whole erasure on restart.
        for (tree, prefix) in [
            (&self.inner.delivery_ids, composite_prefix(&[kind, scope])),
            (&self.inner.order_triggers, composite_prefix(&[shop])),
            (&self.inner.orders, composite_prefix(&[shop])),
            (&self.inner.fo_index, composite_prefix(&[shop])),
            (&self.inner.parked_orders, composite_prefix(&[shop])),
            (&self.inner.redacted_orders, composite_prefix(&[shop])),
        ] {
            for entry in tree.scan_prefix(&prefix) {
                let (k, _) = entry?;
                tree.remove(k)?;
                erased.entries += 1;
            }
        }
        erased.entries += self.erase_cases(shop)?;
        let reinstalled_since = previous.reinstalled_at_ms.is_some_and(|r| r >= at_ms);
        let tombstone = ShopState {
            uninstalled_at_ms: if reinstalled_since {
                None
            } else {
                Some(at_ms.max(previous.uninstalled_at_ms.unwrap_or(0)))
            },
            reinstalled_at_ms: previous.reinstalled_at_ms,
            erased_at_ms: Some(at_ms),
        };
        self.inner
            .shops
            .insert(shop.as_bytes(), encode(&tombstone))?;
        for key in [
            checkpoint_key(shop),
            composite_key(&["reconcile.last", shop]),
        ] {
            if self.inner.meta.remove(key)?.is_some() {
                erased.entries += 1;
            }
        }
        let mut seqs = Vec::new();
        for entry in self.inner.deliveries.iter() {
            let (k, v) = entry?;
            // A delivery that cannot be read cannot be told apart: it stays, and the erasure
            // goes on with the others.
            match decode::<Delivery>(&v) {
                Ok(d) if d.origin == origin => seqs.push(k),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable delivery skipped while erasing a shop")
                }
            }
        }
        // The request itself goes last: while it is stored, a crash repeats the erasure.
        let request = request.map(u64_key);
        let (last, first): (Vec<_>, Vec<_>) = seqs
            .into_iter()
            .partition(|k| request.is_some_and(|r| k.as_ref() == r));
        for k in first.into_iter().chain(last) {
            self.inner.deliveries.remove(k)?;
            erased.deliveries += 1;
        }
        Ok(erased)
    }

    // --- order triggers ---------------------------------------------------------------------

    /// Asks for an order to be (re)fetched; repeated triggers for one order coalesce.
    /// `changed_at` (RFC 3339) is when the change that caused the trigger happened, if known. A
    /// trigger that names no newer change than the pending one leaves it untouched, so that
    /// duplicates and a scan that merely sees what is already queued do not cause a second
    /// fetch; one with news touches it, so an order fetched meanwhile is fetched again.
    /// Not flushed: call `flush`.
    pub fn trigger_order(
        &self,
        shop: &str,
        order_gid: &str,
        changed_at: Option<&str>,
    ) -> Result<(), StoreError> {
        self.check_fault()?;
        let key = composite_key(&[shop, order_gid]);
        let now = crate::delivery::now_ms();
        let changed_ms = changed_at
            .and_then(|t| Timestamp::parse(t).ok())
            .map(|t| t.unix_ms);
        let mut error = None;
        let mut touched = false;
        self.inner.order_triggers.fetch_and_update(&key, |old| {
            let fresh = OrderTrigger {
                first_at_ms: now,
                deliveries: 0,
                newest_change_ms: None,
            };
            let mut trigger = match old.map(decode::<OrderTrigger>) {
                Some(Ok(t)) => t,
                Some(Err(e)) => {
                    error = Some(e);
                    fresh
                }
                None => fresh,
            };
            let news = match (changed_ms, trigger.newest_change_ms) {
                (Some(at), Some(known)) => at > known,
                _ => true,
            };
            if !news && old.is_some() {
                touched = false;
                return old.map(|o| o.to_vec());
            }
            touched = true;
            trigger.deliveries = trigger.deliveries.saturating_add(1);
            if let Some(at) = changed_ms {
                trigger.newest_change_ms = Some(trigger.newest_change_ms.map_or(at, |k| k.max(at)));
            }
            Some(encode(&trigger))
        })?;
        if let Some(e) = error {
            tracing::warn!(error = %e, "replaced an unreadable order trigger");
        }
        if touched {
            self.inner.triggers_added.notify_waiters();
        }
        Ok(())
    }

    /// Removes a trigger once its order was fetched, unless another delivery updated the
    /// trigger meanwhile (then the order is fetched again). Returns whether it was removed.
    pub fn complete_trigger(
        &self,
        shop: &str,
        order_gid: &str,
        seen: &OrderTrigger,
    ) -> Result<bool, StoreError> {
        self.check_fault()?;
        let key = composite_key(&[shop, order_gid]);
        let removed = self
            .inner
            .order_triggers
            .compare_and_swap(key, Some(encode(seen)), None as Option<&[u8]>)?
            .is_ok();
        self.inner.triggers_done.notify_waiters();
        Ok(removed)
    }

    /// Waits until none of these orders waits to be fetched (each fetched or parked).
    pub async fn triggers_cleared(&self, shop: &str, order_gids: &[String]) {
        let keys: Vec<Vec<u8>> = order_gids
            .iter()
            .map(|gid| composite_key(&[shop, gid]))
            .collect();
        loop {
            let done = self.inner.triggers_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            let pending = keys
                .iter()
                .any(|k| self.inner.order_triggers.contains_key(k).unwrap_or(false));
            if !pending {
                return;
            }
            done.await;
        }
    }

    /// Waits until no order of the shop waits to be fetched.
    pub async fn triggers_empty(&self, shop: &str) {
        let prefix = composite_prefix(&[shop]);
        loop {
            let done = self.inner.triggers_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self
                .inner
                .order_triggers
                .scan_prefix(&prefix)
                .next()
                .is_none()
            {
                return;
            }
            done.await;
        }
    }

    /// A future that resolves when a trigger is added after this call, even if it is awaited
    /// later: check the queue after calling this, then await it, and no wake-up is lost.
    pub fn triggers_added(&self) -> std::pin::Pin<Box<tokio::sync::futures::Notified<'_>>> {
        let mut notified = Box::pin(self.inner.triggers_added.notified());
        notified.as_mut().enable();
        notified
    }

    // --- the order mirror -------------------------------------------------------------------

    /// Stores a fetched order state unless the stored one is newer (invariant 4: arrival order
    /// never matters; an equally new state replaces the stored one, since it was fetched later).
    /// Not flushed: call `flush`.
    pub fn put_order(&self, order: &OrderMirror) -> Result<Applied, StoreError> {
        self.check_fault()?;
        let key = composite_key(&[&order.shop, &order.id]);
        // A customer's erasure outlives later fetches: Shopify keeps the address, we do not.
        let redacted = || self.inner.redacted_orders.contains_key(&key);
        let stripped_value = || {
            let mut stripped = order.clone();
            stripped.shipping_address = None;
            encode(&stripped)
        };
        let value = if order.shipping_address.is_some() && redacted()? {
            stripped_value()
        } else {
            encode(order)
        };
        // Announce the change to the workflow before making it: a crash in between costs one
        // needless planning, never a missed one.
        self.queue_plan_at(&order.shop, &order.id, order.updated_at.unix_ms)?;
        loop {
            let current = self.inner.orders.get(&key)?;
            let applied = match &current {
                None => Applied::Inserted,
                Some(bytes) => {
                    let stored: OrderMirror = decode_in("orders", bytes)?;
                    if stored.updated_at > order.updated_at {
                        return Ok(Applied::Stale {
                            stored: stored.updated_at,
                        });
                    }
                    Applied::Updated
                }
            };
            // Compare-and-swap so that two fetches racing for one order cannot let the older
            // state land last.
            if self
                .inner
                .orders
                .compare_and_swap(&key, current, Some(value.as_slice()))?
                .is_ok()
            {
                // An erasure that ran between the check above and the swap would have rewritten
                // the old value, not this one: look again and strip what was just written.
                if order.shipping_address.is_some() && redacted()? {
                    self.rewrite_order(&order.shop, &order.id, |o| o.shipping_address = None)?;
                }
                self.inner.parked_orders.remove(&key)?;
                // Fulfillment-order webhooks name fulfillment orders, not orders: keep the way
                // back. Entries of fulfillment orders that moved away are harmless (they point
                // at an order that no longer lists them, which a fetch corrects).
                for fo in &order.fulfillment_orders {
                    self.inner
                        .fo_index
                        .insert(composite_key(&[&order.shop, &fo.id]), order.id.as_bytes())?;
                }
                self.inner.plan_queued.notify_one();
                return Ok(applied);
            }
        }
    }

    /// The order a fulfillment order belongs to, as last mirrored.
    pub fn order_of_fulfillment_order(
        &self,
        shop: &str,
        fulfillment_order_gid: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .inner
            .fo_index
            .get(composite_key(&[shop, fulfillment_order_gid]))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Sets an order that cannot be fetched aside: its trigger is removed and the reason kept
    /// until the order is mirrored. Not flushed: call `flush`.
    pub fn park_order(&self, shop: &str, order_gid: &str, reason: &str) -> Result<(), StoreError> {
        self.check_fault()?;
        let key = composite_key(&[shop, order_gid]);
        let parked = ParkedOrder {
            reason: reason.to_string(),
            at_ms: crate::delivery::now_ms(),
        };
        self.inner.parked_orders.insert(&key, encode(&parked))?;
        self.inner.order_triggers.remove(&key)?;
        self.inner.triggers_done.notify_waiters();
        Ok(())
    }

    /// The orders of a shop that are parked, with why.
    pub fn parked_orders(&self, shop: &str) -> Result<Vec<(String, ParkedOrder)>, StoreError> {
        let prefix = composite_prefix(&[shop]);
        let mut out = Vec::new();
        for entry in self.inner.parked_orders.scan_prefix(&prefix) {
            let (k, v) = entry?;
            let gid = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.push((gid, decode_in("parked_orders", &v)?));
        }
        Ok(out)
    }

    /// One mirrored order.
    pub fn order(&self, shop: &str, order_gid: &str) -> Result<Option<OrderMirror>, StoreError> {
        self.inner
            .orders
            .get(composite_key(&[shop, order_gid]))?
            .map(|v| decode_in("orders", &v))
            .transpose()
    }

    /// Every mirrored order of a shop, by id.
    pub fn orders(&self, shop: &str) -> impl Iterator<Item = Result<OrderMirror, StoreError>> + '_ {
        self.inner
            .orders
            .scan_prefix(composite_prefix(&[shop]))
            .map(|entry| decode_in("orders", &entry?.1))
    }

    /// How many orders of a shop are mirrored, without decoding them.
    pub fn order_count_of(&self, shop: &str) -> usize {
        self.inner
            .orders
            .scan_prefix(composite_prefix(&[shop]))
            .keys()
            .count()
    }

    /// How many orders of a shop wait to be fetched, without decoding or rewriting anything.
    pub fn pending_trigger_count(&self, shop: &str) -> usize {
        self.inner
            .order_triggers
            .scan_prefix(composite_prefix(&[shop]))
            .keys()
            .count()
    }

    /// How many orders of a shop are parked.
    pub fn parked_count(&self, shop: &str) -> usize {
        self.inner
            .parked_orders
            .scan_prefix(composite_prefix(&[shop]))
            .keys()
            .count()
    }

    /// How many orders are mirrored (all shops).
    pub fn order_count(&self) -> usize {
        self.inner.orders.len()
    }

    /// Erases an order's customer data from the mirror, now and in every later fetch.
    /// Not flushed: call `flush`.
    pub fn redact_order(&self, shop: &str, order_gid: &str) -> Result<(), StoreError> {
        self.check_fault()?;
        self.inner
            .redacted_orders
            .insert(composite_key(&[shop, order_gid]), &[][..])?;
        self.rewrite_order(shop, order_gid, |o| o.shipping_address = None)?;
        Ok(())
    }

    /// Rewrites one mirrored order in place (compliance erasure). Returns whether it existed.
    /// Not flushed: call `flush`.
    pub fn rewrite_order(
        &self,
        shop: &str,
        order_gid: &str,
        f: impl Fn(&mut OrderMirror),
    ) -> Result<bool, StoreError> {
        self.check_fault()?;
        let key = composite_key(&[shop, order_gid]);
        let mut error = None;
        let result = self.inner.orders.update_and_fetch(&key, |old| {
            let old = old?;
            match decode::<OrderMirror>(old) {
                Ok(mut order) => {
                    f(&mut order);
                    Some(encode(&order))
                }
                Err(e) => {
                    error = Some(e);
                    Some(old.to_vec())
                }
            }
        })?;
        if let Some(source) = error {
            return Err(StoreError::Corrupt {
                tree: "orders",
                source,
            });
        }
        Ok(result.is_some())
    }

    /// When the shop was last reconciled by the daemon (Unix ms), if ever.
    pub fn last_reconciled_ms(&self, shop: &str) -> Result<Option<u64>, StoreError> {
        self.inner
            .meta
            .get(composite_key(&["reconcile.last", shop]))?
            .map(|v| {
                codec::read_u64_key(&v).map_err(|source| StoreError::Corrupt {
                    tree: "meta",
                    source,
                })
            })
            .transpose()
    }

    /// Records when the shop was reconciled. Not flushed: call `flush`.
    pub fn set_last_reconciled_ms(&self, shop: &str, at_ms: u64) -> Result<(), StoreError> {
        self.check_fault()?;
        self.inner
            .meta
            .insert(composite_key(&["reconcile.last", shop]), &u64_key(at_ms))?;
        Ok(())
    }

    /// Where the shop's polling scan resumes (the newest `updatedAt` a finished scan saw).
    pub fn poll_checkpoint(&self, shop: &str) -> Result<Option<Timestamp>, StoreError> {
        match self.inner.meta.get(checkpoint_key(shop))? {
            None => Ok(None),
            Some(v) => {
                let text = String::from_utf8_lossy(&v);
                Timestamp::parse(&text)
                    .map(Some)
                    .map_err(|_| StoreError::Corrupt {
                        tree: "meta",
                        source: DecodeError::Key("poll checkpoint is not a timestamp"),
                    })
            }
        }
    }

    /// Moves the shop's polling checkpoint. Not flushed: call `flush`.
    pub fn set_poll_checkpoint(&self, shop: &str, at: &Timestamp) -> Result<(), StoreError> {
        self.check_fault()?;
        self.inner
            .meta
            .insert(checkpoint_key(shop), at.text.as_bytes())?;
        Ok(())
    }

    /// Every pending order trigger of a shop, as (order gid, trigger). A trigger that cannot be
    /// read (an older format) is rewritten as a fresh one: it still means "fetch this order".
    pub fn order_triggers(&self, shop: &str) -> Result<Vec<(String, OrderTrigger)>, StoreError> {
        let prefix = composite_prefix(&[shop]);
        let mut out = Vec::new();
        for entry in self.inner.order_triggers.scan_prefix(&prefix) {
            let (k, v) = entry?;
            let gid = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            let trigger = match decode::<OrderTrigger>(&v) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(%shop, order = %gid, error = %e, "rewriting an unreadable order trigger");
                    let fresh = OrderTrigger {
                        first_at_ms: crate::delivery::now_ms(),
                        deliveries: 1,
                        newest_change_ms: None,
                    };
                    self.inner.order_triggers.insert(&k, encode(&fresh))?;
                    fresh
                }
            };
            out.push((gid, trigger));
        }
        Ok(out)
    }

    // --- inspection -------------------------------------------------------------------------

    /// Every (tree, key) whose key or value contains `needle`. Used to prove erasure.
    pub fn find_bytes(&self, needle: &[u8]) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut hits = Vec::new();
        for name in self.inner.db.tree_names() {
            let tree = self.inner.db.open_tree(&name)?;
            for entry in tree.iter() {
                let (k, v) = entry?;
                if contains(&k, needle) || contains(&v, needle) {
                    hits.push((String::from_utf8_lossy(&name).into_owned(), k.to_vec()));
                }
            }
        }
        Ok(hits)
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("deliveries", &self.inner.deliveries.len())
            .field("durability", &self.inner.durability)
            .finish()
    }
}

fn checkpoint_key(shop: &str) -> Vec<u8> {
    composite_key(&["poll.checkpoint", shop])
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn decode_in<T: Record>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    decode(bytes).map_err(|source| StoreError::Corrupt { tree, source })
}

/// Reads a stored shop state, migrating format version 2 (no erasure tombstone).
fn decode_shop_state(bytes: &[u8]) -> Result<ShopState, DecodeError> {
    if bytes.first() == Some(&<ShopStateV2 as Record>::VERSION) {
        let old = decode::<ShopStateV2>(bytes)?;
        return Ok(ShopState {
            uninstalled_at_ms: old.uninstalled_at_ms,
            reinstalled_at_ms: old.reinstalled_at_ms,
            erased_at_ms: None,
        });
    }
    decode::<ShopState>(bytes)
}

#[cfg(test)]
mod tests;
