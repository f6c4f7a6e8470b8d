//! The workflow's trees: order cases, their id index, the open exceptions, and the outbox.
//!
//! A case and the effects its change calls for are written in one sled transaction, so an
//! intent exists exactly when the change that caused it does (invariant 2). Callers serialize
//! changes to one case themselves (the workflow holds a lock per order); the transaction is for
//! atomicity, not for isolation between writers of the same case.

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use super::codec::{Record, composite_key, composite_prefix, decode, encode, u64_key};
use super::{Store, StoreError};
use crate::workflow::effect::{Effect, EffectState};
use crate::workflow::model::OrderCase;

impl Record for OrderCase {
    // Version 2 added `wake_at_ms`, `numbers` to fulfillment intents and `evidence` to carrier
    // events; `legacy` reads version 1.
    const VERSION: u8 = 2;
    const NAME: &'static str = "order case";

    fn upgrade(version: u8, bytes: &[u8]) -> Option<Result<Self, super::codec::DecodeError>> {
        super::legacy::order_case(version, bytes)
    }
}

impl Record for crate::tracking::TrackingEvent {
    // Version 2 added `evidence`; `legacy` reads version 1.
    const VERSION: u8 = 2;
    const NAME: &'static str = "carrier event";

    fn upgrade(version: u8, bytes: &[u8]) -> Option<Result<Self, super::codec::DecodeError>> {
        super::legacy::tracking_event(version, bytes)
    }
}

impl Record for Effect {
    // Still version 1: the actions and supplier messages added since were appended as new
    // variants, which leaves the encoding of the old ones as it was.
    const VERSION: u8 = 1;
    const NAME: &'static str = "outbox effect";
}

/// The workflow's trees.
pub(super) struct CaseTrees {
    /// shop NUL order gid → OrderCase.
    cases: sled::Tree,
    /// Shipment or exception id → the case key.
    ids: sled::Tree,
    /// Open exception id → the case key.
    open_exceptions: sled::Tree,
    /// Effect id (BE) → Effect.
    outbox: sled::Tree,
    /// Idempotency key → effect id (BE).
    outbox_keys: sled::Tree,
    /// Due time (BE, offset so negative times sort) ++ effect id → (): pending effects.
    outbox_due: sled::Tree,
    /// Stream NUL effect id (BE) → (): pending effects per stream, in order.
    outbox_streams: sled::Tree,
    /// shop NUL order gid → (): orders whose mirror changed and that must be planned again.
    plan_queue: sled::Tree,
    /// Effect state name → count (i64 BE), and `action` NUL action name NUL state name →
    /// count, kept in the same transactions as the effects, so that metrics never decode the
    /// whole outbox.
    outbox_counts: sled::Tree,
    /// Tracking number → shipment ids (NUL-joined): where carrier events go.
    tracking_numbers: sled::Tree,
    /// Tracking number NUL event id → carrier event, for numbers no label carries yet: a
    /// carrier's first scan can arrive before the supplier's label.
    tracking_waiting: sled::Tree,
    /// shop NUL order gid → the case's `wake_at_ms` (i64 BE), to find its entry in `wakes`.
    case_wakes: sled::Tree,
    /// Wake time (BE, offset so negative times sort) ++ case key → (): when each case must be
    /// settled again without news, so the timers read only the cases that are due.
    wakes: sled::Tree,
}

impl CaseTrees {
    pub(super) fn open(db: &sled::Db) -> Result<CaseTrees, sled::Error> {
        Ok(CaseTrees {
            cases: db.open_tree("cases")?,
            ids: db.open_tree("case_ids")?,
            open_exceptions: db.open_tree("open_exceptions")?,
            outbox: db.open_tree("outbox")?,
            outbox_keys: db.open_tree("outbox_keys")?,
            outbox_due: db.open_tree("outbox_due")?,
            outbox_streams: db.open_tree("outbox_streams")?,
            plan_queue: db.open_tree("plan_queue")?,
            outbox_counts: db.open_tree("outbox_counts")?,
            tracking_numbers: db.open_tree("tracking_numbers")?,
            tracking_waiting: db.open_tree("tracking_waiting")?,
            case_wakes: db.open_tree("case_wakes")?,
            wakes: db.open_tree("wakes")?,
        })
        .and_then(|trees| {
            trees.count_actions_once()?;
            trees.wake_unindexed_once()?;
            Ok(trees)
        })
    }

    /// Counts the outbox by action once, for a store written before the counts by action
    /// existed; from then on every write keeps them. Runs at open, before anything writes.
    fn count_actions_once(&self) -> Result<(), sled::Error> {
        if self.outbox_counts.get(ACTION_COUNTS_MARKER)?.is_some() {
            return Ok(());
        }
        let mut counts: std::collections::BTreeMap<Vec<u8>, i64> = Default::default();
        for entry in self.outbox.iter() {
            let (_, value) = entry?;
            match decode::<Effect>(&value) {
                Ok(effect) => {
                    *counts
                        .entry(action_key(effect.action.name(), &effect.state))
                        .or_default() += 1;
                }
                // Left out of the counts, as it is out of every listing; the sender logs it.
                Err(e) => {
                    tracing::warn!(error = %e, "an outbox effect cannot be read; not counted by action")
                }
            }
        }
        let mut batch = sled::Batch::default();
        for (key, n) in counts {
            batch.insert(key, &n.to_be_bytes());
        }
        batch.insert(ACTION_COUNTS_MARKER, &[1u8]);
        self.outbox_counts.apply_batch(batch)
    }
}

impl CaseTrees {
    /// Makes every case that has no wake entry due now, once, for a store written before the
    /// wake index existed: its waits were found by scanning then, and its label and stall
    /// deadlines did not exist. The first timer pass settles each such case, which stores its
    /// real wake time. Runs at open, before anything writes.
    fn wake_unindexed_once(&self) -> Result<(), sled::Error> {
        if self.case_wakes.get(WAKES_MARKER)?.is_some() {
            return Ok(());
        }
        let mut wakes = sled::Batch::default();
        let mut case_wakes = sled::Batch::default();
        for entry in self.cases.iter() {
            let (key, _) = entry?;
            if self.case_wakes.get(&key)?.is_none() {
                wakes.insert(wake_key(i64::MIN, &key), &[]);
                case_wakes.insert(key, &i64::MIN.to_be_bytes());
            }
        }
        case_wakes.insert(WAKES_MARKER, &[1u8]);
        self.wakes.apply_batch(wakes)?;
        self.case_wakes.apply_batch(case_wakes)
    }
}

/// A wake entry whose time has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueCase {
    pub at_ms: i64,
    pub shop: String,
    pub order_gid: String,
}

/// Marks, in `case_wakes`, that cases from before the wake index were made due. A case key
/// never starts with NUL (a shop domain is never empty), so it cannot collide.
const WAKES_MARKER: &[u8] = b"\0wakes-indexed";

fn case_key(shop: &str, order_gid: &str) -> Vec<u8> {
    composite_key(&[shop, order_gid])
}

fn due_key(at_ms: i64, id: u64) -> Vec<u8> {
    // Flipping the sign bit makes signed times sort as unsigned bytes.
    let mut key = ((at_ms as u64) ^ (1 << 63)).to_be_bytes().to_vec();
    key.extend_from_slice(&u64_key(id));
    key
}

fn wake_key(at_ms: i64, case_key: &[u8]) -> Vec<u8> {
    let mut key = ((at_ms as u64) ^ (1 << 63)).to_be_bytes().to_vec();
    key.extend_from_slice(case_key);
    key
}

fn stream_key(stream: &str, id: u64) -> Vec<u8> {
    let mut key = composite_prefix(&[stream]);
    key.extend_from_slice(&u64_key(id));
    key
}

/// An order waiting to be planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRequest {
    pub shop: String,
    pub order_gid: String,
    /// The mirror state (`updatedAt`, Unix ms) the request announced; 0 for any.
    pub updated_at_ms: i64,
}

/// What one case write contains.
#[derive(Debug, Default)]
pub struct CaseWrite<'a> {
    /// The case as it is to be stored.
    pub case: Option<&'a OrderCase>,
    /// New intents. One whose key is already recorded is skipped: recording an intent twice is
    /// the same intent.
    pub new_effects: Vec<Effect>,
    /// Effects whose state changed (outcomes, supersessions).
    pub updated_effects: Vec<Effect>,
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn corrupt<T>(tree: &'static str, e: super::codec::DecodeError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(StoreError::Corrupt {
        tree,
        source: e,
    }))
}

/// The state names the outbox counts, in the order `effect_counts` lists them.
const STATE_NAMES: [&str; 4] = ["pending", "done", "failed", "superseded"];

fn state_name(state: &EffectState) -> &'static str {
    match state {
        EffectState::Pending => STATE_NAMES[0],
        EffectState::Done { .. } => STATE_NAMES[1],
        EffectState::Failed { .. } => STATE_NAMES[2],
        EffectState::Superseded { .. } => STATE_NAMES[3],
    }
}

/// Effects by state name, in the order of `STATE_NAMES`.
pub type StateCounts = [(&'static str, u64); 4];

/// Set in `outbox_counts` once the counts by action cover every effect.
const ACTION_COUNTS_MARKER: &[u8] = b"counted_by_action";

/// The counter of one action in one state.
fn action_key(action: &str, state: &EffectState) -> Vec<u8> {
    composite_key(&["action", action, state_name(state)])
}

fn add(counts: &TransactionalTree, key: &[u8], by: i64) -> TxResult<()> {
    let now = counts
        .get(key)?
        .filter(|v| v.len() == 8)
        .map(|v| i64::from_be_bytes(v.as_ref().try_into().expect("8 bytes")))
        .unwrap_or(0);
    counts.insert(key, &(now + by).to_be_bytes())?;
    Ok(())
}

/// Counts an effect in its state, overall and for its action.
fn count(counts: &TransactionalTree, effect: &Effect, by: i64) -> TxResult<()> {
    add(counts, state_name(&effect.state).as_bytes(), by)?;
    add(counts, &action_key(effect.action.name(), &effect.state), by)
}

fn index_effect(
    due: &TransactionalTree,
    streams: &TransactionalTree,
    old: Option<&Effect>,
    new: &Effect,
) -> TxResult<()> {
    if let Some(old) = old.filter(|o| o.is_pending()) {
        due.remove(due_key(old.next_attempt_ms, old.id))?;
        streams.remove(stream_key(&old.stream, old.id))?;
    }
    if new.is_pending() {
        due.insert(due_key(new.next_attempt_ms, new.id), &[])?;
        streams.insert(stream_key(&new.stream, new.id), &[])?;
    }
    Ok(())
}

impl Store {
    fn case_trees(&self) -> &CaseTrees {
        &self.inner.cases
    }

    /// A fresh id with a prefix: `SG-0000000042`, `EX-0000000007`. Ids are never reused; gaps
    /// are harmless.
    pub fn next_id(&self, prefix: &str) -> Result<String, StoreError> {
        self.check_fault()?;
        let n = self.inner.db.generate_id()? + 1;
        Ok(format!("{prefix}-{n:010}"))
    }

    /// A fresh effect id.
    pub fn next_effect_id(&self) -> Result<u64, StoreError> {
        self.check_fault()?;
        Ok(self.inner.db.generate_id()? + 1)
    }

    /// The case of an order, if it has one.
    pub fn case(&self, shop: &str, order_gid: &str) -> Result<Option<OrderCase>, StoreError> {
        self.case_trees()
            .cases
            .get(case_key(shop, order_gid))?
            .map(|v| decode(&v))
            .transpose()
            .map_err(|source| StoreError::Corrupt {
                tree: "cases",
                source,
            })
    }

    /// The case holding a shipment or exception id.
    pub fn case_of(&self, id: &str) -> Result<Option<OrderCase>, StoreError> {
        let trees = self.case_trees();
        let Some(key) = trees.ids.get(id.as_bytes())? else {
            return Ok(None);
        };
        trees
            .cases
            .get(key)?
            .map(|v| decode(&v))
            .transpose()
            .map_err(|source| StoreError::Corrupt {
                tree: "cases",
                source,
            })
    }

    /// Every case, in key order (shop, then order id).
    pub fn cases(&self) -> impl Iterator<Item = Result<OrderCase, StoreError>> + '_ {
        self.case_trees().cases.iter().map(|entry| {
            let (_, v) = entry?;
            decode(&v).map_err(|source| StoreError::Corrupt {
                tree: "cases",
                source,
            })
        })
    }

    /// The cases with at least one open exception.
    pub fn cases_with_open_exceptions(&self) -> Result<Vec<OrderCase>, StoreError> {
        let trees = self.case_trees();
        let mut keys: Vec<sled::IVec> = Vec::new();
        for entry in trees.open_exceptions.iter() {
            let (_, key) = entry?;
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(v) = trees.cases.get(&key)? {
                out.push(decode(&v).map_err(|source| StoreError::Corrupt {
                    tree: "cases",
                    source,
                })?);
            }
        }
        Ok(out)
    }

    /// How many exceptions are open.
    pub fn open_exception_count(&self) -> usize {
        self.case_trees().open_exceptions.len()
    }

    /// The shipments that carry a tracking number (on a label), oldest first.
    pub fn shipments_with_tracking_number(&self, number: &str) -> Result<Vec<String>, StoreError> {
        Ok(
            match self.case_trees().tracking_numbers.get(number.as_bytes())? {
                Some(v) => super::codec::split_composite_key(&v)
                    .map_err(|source| StoreError::Corrupt {
                        tree: "tracking_numbers",
                        source,
                    })?
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect(),
                None => Vec::new(),
            },
        )
    }

    /// Keeps a carrier event whose number no label carries yet. Not flushed: its delivery
    /// stays stored, and a replay keeps it again.
    pub fn keep_waiting_tracking(
        &self,
        event: &crate::tracking::TrackingEvent,
    ) -> Result<(), StoreError> {
        self.check_fault()?;
        self.case_trees().tracking_waiting.insert(
            composite_key(&[&event.tracking_number, &event.event_id]),
            encode(event),
        )?;
        Ok(())
    }

    /// The carrier events waiting for a label with this number.
    pub fn waiting_tracking(
        &self,
        number: &str,
    ) -> Result<Vec<crate::tracking::TrackingEvent>, StoreError> {
        let mut out = Vec::new();
        for entry in self
            .case_trees()
            .tracking_waiting
            .scan_prefix(composite_prefix(&[number]))
        {
            let (_, v) = entry?;
            out.push(decode(&v).map_err(|source| StoreError::Corrupt {
                tree: "tracking_waiting",
                source,
            })?);
        }
        Ok(out)
    }

    /// Forgets a waiting carrier event once it was recorded on its shipment.
    pub fn waiting_tracking_done(&self, number: &str, event_id: &str) -> Result<(), StoreError> {
        self.case_trees()
            .tracking_waiting
            .remove(composite_key(&[number, event_id]))?;
        Ok(())
    }

    /// How many carrier events wait for a label.
    pub fn waiting_tracking_count(&self) -> usize {
        self.case_trees().tracking_waiting.len()
    }

    /// A future that resolves when effects are written after this call (enabled at once: check
    /// the outbox after calling this, then await it, and no wake-up is lost).
    pub fn effects_written(&self) -> std::pin::Pin<Box<tokio::sync::futures::Notified<'_>>> {
        let mut notified = Box::pin(self.inner.effects_written.notified());
        notified.as_mut().enable();
        notified
    }

    /// Writes a case and its effects atomically. Not flushed: the outbox flushes before it
    /// sends, which covers the intent.
    pub fn write_case(&self, write: CaseWrite<'_>) -> Result<(), StoreError> {
        self.check_fault()?;
        let wake = !write.new_effects.is_empty() || !write.updated_effects.is_empty();
        let t = self.case_trees();
        let trees = (
            &t.cases,
            &t.ids,
            &t.open_exceptions,
            &t.outbox,
            &t.outbox_keys,
            &t.outbox_due,
            &t.outbox_streams,
            &t.outbox_counts,
            &t.tracking_numbers,
            &t.case_wakes,
            &t.wakes,
        );
        let result = trees.transaction(
            |(cases, ids, open, outbox, keys, due, streams, counts, numbers, case_wakes, wakes)| {
                if let Some(case) = write.case {
                    let key = case_key(&case.shop, &case.order_gid);
                    cases.insert(key.clone(), encode(case))?;
                    let old_wake = case_wakes
                        .get(&key)?
                        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok().map(i64::from_be_bytes));
                    if old_wake != case.wake_at_ms {
                        if let Some(old) = old_wake {
                            wakes.remove(wake_key(old, &key))?;
                        }
                        match case.wake_at_ms {
                            Some(at) => {
                                wakes.insert(wake_key(at, &key), &[])?;
                                case_wakes.insert(key.clone(), &at.to_be_bytes())?;
                            }
                            None => {
                                case_wakes.remove(key.clone())?;
                            }
                        }
                    }
                    for shipment in &case.shipments {
                        ids.insert(shipment.id.as_bytes(), key.clone())?;
                    }
                    for (number, shipment) in case.shipments.iter().flat_map(|s| {
                        s.evidence.iter().filter_map(move |e| match &e.kind {
                            crate::workflow::model::EvidenceKind::Supplier(ev) => match &ev.kind {
                                crate::suppliers::EventKind::LabelCreated {
                                    tracking_number,
                                    ..
                                } => Some((tracking_number.as_str(), s.id.as_str())),
                                _ => None,
                            },
                            _ => None,
                        })
                    }) {
                        let known = numbers.get(number.as_bytes())?;
                        let mut list = match &known {
                            Some(v) => super::codec::split_composite_key(v).unwrap_or_default(),
                            None => Vec::new(),
                        };
                        if !list.iter().any(|s| s == shipment) {
                            list.push(shipment.to_string());
                            let parts: Vec<&str> = list.iter().map(String::as_str).collect();
                            numbers.insert(number.as_bytes(), composite_key(&parts))?;
                        }
                    }
                    for exception in &case.exceptions {
                        ids.insert(exception.id.as_bytes(), key.clone())?;
                        if exception.is_open() {
                            open.insert(exception.id.as_bytes(), key.clone())?;
                        } else {
                            open.remove(exception.id.as_bytes())?;
                        }
                    }
                }
                for effect in &write.new_effects {
                    if keys.get(effect.key.as_bytes())?.is_some() {
                        continue;
                    }
                    keys.insert(effect.key.as_bytes(), &u64_key(effect.id))?;
                    outbox.insert(&u64_key(effect.id), encode(effect))?;
                    index_effect(due, streams, None, effect)?;
                    count(counts, effect, 1)?;
                }
                for effect in &write.updated_effects {
                    let old = match outbox.get(u64_key(effect.id))? {
                        Some(v) => match decode::<Effect>(&v) {
                            Ok(e) => Some(e),
                            Err(e) => return corrupt("outbox", e),
                        },
                        // Erased meanwhile (shop/redact): an outcome must not bring it back.
                        None => continue,
                    };
                    outbox.insert(&u64_key(effect.id), encode(effect))?;
                    index_effect(due, streams, old.as_ref(), effect)?;
                    if let Some(old) = &old {
                        count(counts, old, -1)?;
                    }
                    count(counts, effect, 1)?;
                }
                Ok(())
            },
        );
        match result {
            Ok(()) => {
                if wake {
                    self.inner.effects_written.notify_waiters();
                }
                Ok(())
            }
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    /// The wake entries whose time has come, earliest first: (wake time, shop, order gid).
    pub fn due_cases(&self, now_ms: i64, limit: usize) -> Result<Vec<DueCase>, StoreError> {
        let end = wake_key(now_ms.saturating_add(1), &[]);
        let mut out = Vec::new();
        for entry in self.case_trees().wakes.range(..end).take(limit) {
            let (k, _) = entry?;
            let mut be = [0u8; 8];
            be.copy_from_slice(&k[..8]);
            let parts = super::codec::split_composite_key(&k[8..]).unwrap_or_default();
            if let [shop, order_gid] = parts.as_slice() {
                out.push(DueCase {
                    at_ms: (u64::from_be_bytes(be) ^ (1 << 63)) as i64,
                    shop: shop.clone(),
                    order_gid: order_gid.clone(),
                });
            } else {
                // Not a case key: nothing can settle it, so it must not stay due.
                self.case_trees().wakes.remove(&k)?;
            }
        }
        Ok(out)
    }

    /// After a due case was settled (or found gone): removes its due entry unless the case's
    /// wake time is still that entry's. An entry left behind by a race (an erasure, say) would
    /// otherwise be due for ever and keep the timers busy.
    pub fn wake_done(&self, due: &DueCase) -> Result<(), StoreError> {
        let t = self.case_trees();
        let key = case_key(&due.shop, &due.order_gid);
        let current = t
            .case_wakes
            .get(&key)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok().map(i64::from_be_bytes));
        if current != Some(due.at_ms) {
            t.wakes.remove(wake_key(due.at_ms, &key))?;
        }
        Ok(())
    }

    /// Moves a due case's wake time to `to_ms`: settling it failed, and it is tried again then
    /// instead of holding up every other timer.
    pub fn postpone_wake(&self, due: &DueCase, to_ms: i64) -> Result<(), StoreError> {
        let t = self.case_trees();
        let key = case_key(&due.shop, &due.order_gid);
        (&t.wakes, &t.case_wakes)
            .transaction(|(wakes, case_wakes)| {
                if let Some(old) = case_wakes
                    .get(&key)?
                    .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok().map(i64::from_be_bytes))
                {
                    wakes.remove(wake_key(old, &key))?;
                }
                wakes.remove(wake_key(due.at_ms, &key))?;
                wakes.insert(wake_key(to_ms, &key), &[])?;
                case_wakes.insert(key.clone(), &to_ms.to_be_bytes())?;
                Ok::<(), ConflictableTransactionError<StoreError>>(())
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => e.into(),
            })
    }

    /// The earliest wake time of any case.
    pub fn next_wake_ms(&self) -> Result<Option<i64>, StoreError> {
        Ok(match self.case_trees().wakes.first()? {
            Some((k, _)) if k.len() >= 8 => {
                let mut be = [0u8; 8];
                be.copy_from_slice(&k[..8]);
                Some((u64::from_be_bytes(be) ^ (1 << 63)) as i64)
            }
            _ => None,
        })
    }

    /// An effect by id.
    pub fn effect(&self, id: u64) -> Result<Option<Effect>, StoreError> {
        self.case_trees()
            .outbox
            .get(u64_key(id))?
            .map(|v| decode(&v))
            .transpose()
            .map_err(|source| StoreError::Corrupt {
                tree: "outbox",
                source,
            })
    }

    /// Removes the due and stream index entries of an effect that is no longer pending.
    pub fn drop_due(&self, effect: &Effect) -> Result<(), StoreError> {
        let t = self.case_trees();
        t.outbox_due
            .remove(due_key(effect.next_attempt_ms, effect.id))?;
        t.outbox_streams
            .remove(stream_key(&effect.stream, effect.id))?;
        Ok(())
    }

    /// An effect by idempotency key.
    pub fn effect_by_key(&self, key: &str) -> Result<Option<Effect>, StoreError> {
        match self.case_trees().outbox_keys.get(key.as_bytes())? {
            Some(id) => self.effect(super::codec::read_u64_key(&id).map_err(|source| {
                StoreError::Corrupt {
                    tree: "outbox_keys",
                    source,
                }
            })?),
            None => Ok(None),
        }
    }

    /// Pending effects due at or before `now_ms`, earliest first, at most `limit`.
    pub fn due_effects(&self, now_ms: i64, limit: usize) -> Result<Vec<Effect>, StoreError> {
        let t = self.case_trees();
        let mut out = Vec::new();
        for entry in t.outbox_due.range(..due_key(now_ms, u64::MAX)) {
            let (k, _) = entry?;
            let id = super::codec::read_u64_key(&k[8..]).map_err(|source| StoreError::Corrupt {
                tree: "outbox_due",
                source,
            })?;
            if let Some(effect) = self.effect(id)? {
                out.push(effect);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// When the earliest pending effect is due, if any is pending.
    pub fn next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        Ok(match self.case_trees().outbox_due.first()? {
            Some((k, _)) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(&k[..8]);
                Some((u64::from_be_bytes(be) ^ (1 << 63)) as i64)
            }
            None => None,
        })
    }

    /// The first pending effect of a stream: only it may be sent.
    pub fn stream_head(&self, stream: &str) -> Result<Option<u64>, StoreError> {
        let prefix = composite_prefix(&[stream]);
        match self.case_trees().outbox_streams.scan_prefix(&prefix).next() {
            Some(entry) => {
                let (k, _) = entry?;
                Ok(Some(
                    super::codec::read_u64_key(&k[prefix.len()..]).map_err(|source| {
                        StoreError::Corrupt {
                            tree: "outbox_streams",
                            source,
                        }
                    })?,
                ))
            }
            None => Ok(None),
        }
    }

    /// Every effect, oldest first.
    pub fn effects(&self) -> impl Iterator<Item = Result<Effect, StoreError>> + '_ {
        self.case_trees().outbox.iter().map(|entry| {
            let (_, v) = entry?;
            decode(&v).map_err(|source| StoreError::Corrupt {
                tree: "outbox",
                source,
            })
        })
    }

    /// How many effects are pending.
    pub fn pending_effect_count(&self) -> usize {
        self.case_trees().outbox_due.len()
    }

    /// Effects by state name (`pending`, `done`, `failed`, `superseded`), from counters kept
    /// with the effects.
    pub fn effect_counts(&self) -> Result<[(&'static str, u64); 4], StoreError> {
        let counts = &self.case_trees().outbox_counts;
        let mut out = STATE_NAMES.map(|name| (name, 0u64));
        for (name, n) in out.iter_mut() {
            if let Some(v) = counts.get(*name)?.filter(|v| v.len() == 8) {
                *n = i64::from_be_bytes(v.as_ref().try_into().expect("8 bytes")).max(0) as u64;
            }
        }
        Ok(out)
    }

    /// Effects by action name (`Action::name`) and state, from counters kept with the
    /// effects: every action the outbox ever held, with each state (0 included).
    pub fn effect_counts_by_action(&self) -> Result<Vec<(String, StateCounts)>, StoreError> {
        let counts = &self.case_trees().outbox_counts;
        let mut out: Vec<(String, StateCounts)> = Vec::new();
        for entry in counts.scan_prefix(composite_prefix(&["action"])) {
            let (key, value) = entry?;
            let parts =
                super::codec::split_composite_key(&key).map_err(|source| StoreError::Corrupt {
                    tree: "outbox_counts",
                    source,
                })?;
            let [_, action, state] = parts.as_slice() else {
                continue;
            };
            let n = if value.len() == 8 {
                i64::from_be_bytes(value.as_ref().try_into().expect("8 bytes")).max(0) as u64
            } else {
                0
            };
            // Keys sort by action, so one action's states are neighbours.
            if out.last().is_none_or(|(a, _)| a != action) {
                out.push((action.clone(), STATE_NAMES.map(|name| (name, 0u64))));
            }
            let (_, states) = out.last_mut().expect("pushed above");
            if let Some(slot) = states.iter_mut().find(|(name, _)| name == state) {
                slot.1 = n;
            }
        }
        Ok(out)
    }

    /// Marks an order to be planned again, for a mirror state of `updated_at_ms` (0: whatever
    /// the mirror holds). Written before the mirror change it announces.
    pub(super) fn queue_plan_at(
        &self,
        shop: &str,
        order_gid: &str,
        updated_at_ms: i64,
    ) -> Result<(), StoreError> {
        let key = case_key(shop, order_gid);
        let value = updated_at_ms.to_be_bytes();
        // Keep the newest announced state: planning waits until the mirror has reached it.
        self.case_trees()
            .plan_queue
            .fetch_and_update(&key, |old| match old {
                Some(old) if old >= value.as_slice() && updated_at_ms != 0 => Some(old.to_vec()),
                _ => Some(value.to_vec()),
            })?;
        Ok(())
    }

    /// Asks for an order to be planned again with whatever the mirror holds.
    pub fn queue_plan(&self, shop: &str, order_gid: &str) -> Result<(), StoreError> {
        self.check_fault()?;
        self.queue_plan_at(shop, order_gid, 0)?;
        self.inner.plan_queued.notify_one();
        Ok(())
    }

    /// Orders waiting to be planned, with the mirror state each waits for, at most `limit`.
    pub fn plan_queue(&self, limit: usize) -> Result<Vec<PlanRequest>, StoreError> {
        let mut out = Vec::new();
        for entry in self.case_trees().plan_queue.iter().take(limit) {
            let (k, v) = entry?;
            let parts =
                super::codec::split_composite_key(&k).map_err(|source| StoreError::Corrupt {
                    tree: "plan_queue",
                    source,
                })?;
            let mut be = [0u8; 8];
            if v.len() == 8 {
                be.copy_from_slice(&v);
            }
            if let [shop, order_gid] = parts.as_slice() {
                out.push(PlanRequest {
                    shop: shop.clone(),
                    order_gid: order_gid.clone(),
                    updated_at_ms: i64::from_be_bytes(be),
                });
            }
        }
        Ok(out)
    }

    /// Takes a planned request off the queue, unless a newer change was announced meanwhile.
    pub fn planned(&self, request: &PlanRequest) -> Result<(), StoreError> {
        let key = case_key(&request.shop, &request.order_gid);
        let _ = self.case_trees().plan_queue.compare_and_swap(
            key,
            Some(request.updated_at_ms.to_be_bytes().as_slice()),
            None::<&[u8]>,
        )?;
        Ok(())
    }

    /// How many orders wait to be planned.
    pub fn plan_queue_len(&self) -> usize {
        self.case_trees().plan_queue.len()
    }

    /// Resolves after the next `queue_plan`.
    pub fn plan_queued(&self) -> std::pin::Pin<Box<tokio::sync::futures::Notified<'_>>> {
        Box::pin(self.inner.plan_queued.notified())
    }

    /// When shipgate began routing the shop's orders: set to `now_ms` the first time this is
    /// asked, then kept (it survives restarts; `shop/redact` removes it with the shop).
    pub fn routing_start_ms(&self, shop: &str, now_ms: i64) -> Result<i64, StoreError> {
        let key = composite_key(&["workflow.routing_start", shop]);
        let value = now_ms.to_be_bytes();
        let stored =
            match self
                .inner
                .meta
                .compare_and_swap(&key, None::<&[u8]>, Some(value.as_slice()))?
            {
                Ok(()) => return Ok(now_ms),
                Err(current) => current.current,
            };
        let mut be = [0u8; 8];
        if let Some(v) = stored.filter(|v| v.len() == 8) {
            be.copy_from_slice(&v);
        }
        Ok(i64::from_be_bytes(be))
    }

    /// Removes a shop's cases, indexes and effects (shop/redact). Returns how many entries went.
    pub(super) fn erase_cases(&self, shop: &str) -> Result<usize, StoreError> {
        let t = self.case_trees();
        let prefix = composite_prefix(&[shop]);
        let mut erased = 0;
        for entry in t.cases.scan_prefix(&prefix) {
            let (k, v) = entry?;
            if let Ok(case) = decode::<OrderCase>(&v) {
                for id in case
                    .shipments
                    .iter()
                    .map(|s| &s.id)
                    .chain(case.exceptions.iter().map(|e| &e.id))
                {
                    t.ids.remove(id.as_bytes())?;
                    t.open_exceptions.remove(id.as_bytes())?;
                }
            }
            if let Some(at) = t
                .case_wakes
                .remove(&k)?
                .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok().map(i64::from_be_bytes))
            {
                t.wakes.remove(wake_key(at, &k))?;
            }
            t.cases.remove(k)?;
            erased += 1;
        }
        for entry in t.plan_queue.scan_prefix(&prefix) {
            let (k, _) = entry?;
            t.plan_queue.remove(k)?;
            erased += 1;
        }
        if self
            .inner
            .meta
            .remove(composite_key(&["workflow.routing_start", shop]))?
            .is_some()
        {
            erased += 1;
        }
        let mut doomed = Vec::new();
        for effect in self.effects() {
            let effect = effect?;
            if effect.shop == shop {
                doomed.push(effect);
            }
        }
        for effect in doomed {
            if effect.is_pending() {
                t.outbox_due
                    .remove(due_key(effect.next_attempt_ms, effect.id))?;
                t.outbox_streams
                    .remove(stream_key(&effect.stream, effect.id))?;
            }
            t.outbox_keys.remove(effect.key.as_bytes())?;
            if t.outbox.remove(u64_key(effect.id))?.is_some() {
                let by_action = action_key(effect.action.name(), &effect.state);
                for key in [state_name(&effect.state).as_bytes(), by_action.as_slice()] {
                    t.outbox_counts.fetch_and_update(key, |v| {
                        let n = v
                            .filter(|v| v.len() == 8)
                            .map(|v| i64::from_be_bytes(v.try_into().expect("8 bytes")))
                            .unwrap_or(0);
                        Some((n - 1).max(0).to_be_bytes().to_vec())
                    })?;
                }
            }
            erased += 1;
        }
        Ok(erased)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::effect::Action;

    fn effect(id: u64, action: Action, state: EffectState) -> Effect {
        Effect {
            id,
            key: format!("EX-{id}.hold"),
            stream: format!("fo-{id}"),
            shop: "a.myshopify.com".into(),
            order_gid: format!("gid://shopify/Order/{id}"),
            action,
            state,
            attempts: 0,
            next_attempt_ms: 0,
            created_ms: 0,
            last_error: None,
            maybe_delivered: false,
        }
    }

    fn hold(id: u64) -> Effect {
        effect(
            id,
            Action::PlaceHold {
                fulfillment_order_id: "gid://shopify/FulfillmentOrder/1".into(),
                handle: format!("shipgate-EX-{id}"),
                reason: "OTHER".into(),
                notes: String::new(),
                exception_id: format!("EX-{id}"),
            },
            EffectState::Pending,
        )
    }

    fn release(id: u64) -> Effect {
        effect(
            id,
            Action::ReleaseHold {
                fulfillment_order_id: "gid://shopify/FulfillmentOrder/1".into(),
                handle: format!("shipgate-EX-{id}"),
                exception_id: format!("EX-{id}"),
            },
            EffectState::Pending,
        )
    }

    fn counted(store: &Store) -> Vec<(String, Vec<u64>)> {
        store
            .effect_counts_by_action()
            .unwrap()
            .into_iter()
            .map(|(action, states)| (action, states.iter().map(|(_, n)| *n).collect()))
            .collect()
    }

    #[test]
    fn counts_by_action_follow_every_write_and_are_made_once_for_an_older_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &crate::store::StoreOptions::default()).unwrap();
        store
            .write_case(CaseWrite {
                case: None,
                new_effects: vec![hold(1), hold(2), release(3)],
                updated_effects: Vec::new(),
            })
            .unwrap();
        let mut done = hold(1);
        done.state = EffectState::Done {
            at_ms: 1,
            reference: Some("hold-1".into()),
            note: "answered".into(),
        };
        store
            .write_case(CaseWrite {
                case: None,
                // Recording an intent twice counts it once.
                new_effects: vec![hold(2)],
                updated_effects: vec![done],
            })
            .unwrap();
        let expected = vec![
            ("shopify_hold".to_string(), vec![1, 1, 0, 0]),
            ("shopify_release_hold".to_string(), vec![1, 0, 0, 0]),
        ];
        assert_eq!(counted(&store), expected);

        // A store written before the counts by action existed has only the counts by state:
        // they are made from the outbox once, and not again.
        let t = store.case_trees();
        for key in [
            action_key("shopify_hold", &EffectState::Pending),
            action_key("shopify_release_hold", &EffectState::Pending),
            ACTION_COUNTS_MARKER.to_vec(),
        ] {
            t.outbox_counts.remove(key).unwrap();
        }
        let done_key = composite_key(&["action", "shopify_hold", "done"]);
        t.outbox_counts.remove(&done_key).unwrap();
        assert_eq!(counted(&store), Vec::<(String, Vec<u64>)>::new());
        t.count_actions_once().unwrap();
        assert_eq!(counted(&store), expected);
        t.outbox_counts
            .insert(&done_key, &7i64.to_be_bytes())
            .unwrap();
        t.count_actions_once().unwrap();
        assert_eq!(
            counted(&store)[0],
            ("shopify_hold".to_string(), vec![1, 7, 0, 0]),
            "counted once: later runs leave the counters to the writes"
        );
        assert_eq!(
            store.effect_counts().unwrap().map(|(_, n)| n),
            [2, 1, 0, 0],
            "the counts by state are untouched"
        );
    }

    #[test]
    fn wakes_follow_every_write_and_cases_from_before_the_index_are_due_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &crate::store::StoreOptions::default()).unwrap();
        let mut case = OrderCase::new("a.myshopify.com", "gid://shopify/Order/1", "#1001");
        let write = |case: &OrderCase| {
            store
                .write_case(CaseWrite {
                    case: Some(case),
                    ..Default::default()
                })
                .unwrap()
        };
        write(&case);
        assert_eq!(store.next_wake_ms().unwrap(), None);
        case.wake_at_ms = Some(5_000);
        write(&case);
        assert_eq!(store.next_wake_ms().unwrap(), Some(5_000));
        assert!(store.due_cases(4_999, 10).unwrap().is_empty());
        let due = |at_ms| {
            vec![DueCase {
                at_ms,
                shop: "a.myshopify.com".into(),
                order_gid: "gid://shopify/Order/1".into(),
            }]
        };
        assert_eq!(store.due_cases(5_000, 10).unwrap(), due(5_000));
        // Moving the wake time moves the entry; none leaves it.
        case.wake_at_ms = Some(9_000);
        write(&case);
        assert!(store.due_cases(5_000, 10).unwrap().is_empty());
        case.wake_at_ms = None;
        write(&case);
        assert_eq!(store.next_wake_ms().unwrap(), None);

        // A store from before the index: the case has no entry and the marker is missing.
        let t = store.case_trees();
        t.case_wakes.remove(WAKES_MARKER).unwrap();
        t.wake_unindexed_once().unwrap();
        assert_eq!(
            store.due_cases(i64::MIN, 10).unwrap(),
            due(i64::MIN),
            "due at once"
        );
        // Settling it writes its real wake time (here none), which clears the entry.
        write(&case);
        assert_eq!(store.next_wake_ms().unwrap(), None);
        t.wake_unindexed_once().unwrap();
        assert_eq!(store.next_wake_ms().unwrap(), None, "only once");

        // An entry the case no longer names (left by a race) goes once it was handled; one
        // that could not be settled is tried again later instead of staying due.
        t.wakes
            .insert(wake_key(100, &case_key(&case.shop, &case.order_gid)), &[])
            .unwrap();
        let stray = store.due_cases(100, 10).unwrap();
        assert_eq!(stray, due(100));
        store.wake_done(&stray[0]).unwrap();
        assert_eq!(store.next_wake_ms().unwrap(), None);
        case.wake_at_ms = Some(200);
        write(&case);
        let failing = store.due_cases(200, 10).unwrap();
        store.postpone_wake(&failing[0], 60_200).unwrap();
        assert!(store.due_cases(60_199, 10).unwrap().is_empty());
        assert_eq!(store.due_cases(60_200, 10).unwrap(), due(60_200));
    }

    /// Cases are stored with postcard, which writes an enum variant as its position: a variant
    /// inserted before another (rather than appended) would make stored cases read as the
    /// wrong records. These positions are part of the format of version 2.
    #[test]
    fn evidence_kinds_keep_their_stored_positions() {
        use crate::workflow::model::EvidenceKind;
        let position = |kind: &EvidenceKind| postcard::to_allocvec(kind).unwrap()[0];
        assert_eq!(
            position(&EvidenceKind::FulfillmentRefusalDecided {
                key: "k".into(),
                retry: true
            }),
            13
        );
        assert_eq!(
            position(&EvidenceKind::ProgressIntended {
                key: "k".into(),
                fulfillment_id: "f".into(),
                status: "DELIVERED".into(),
                happened_ms: 1,
                event: "e".into(),
            }),
            14
        );
        assert_eq!(
            position(&EvidenceKind::TrackingUpdateIntended {
                key: "k".into(),
                fulfillment: "f".into(),
                fulfillment_id: "g".into(),
                numbers: vec![],
            }),
            15
        );
        assert_eq!(
            position(&EvidenceKind::ParcelFollowUp {
                action: "chase".into(),
                tracking_number: "1Z".into(),
            }),
            16
        );
        assert_eq!(
            position(&EvidenceKind::ProgressSkipped {
                key: "k".into(),
                until_ms: 1,
            }),
            17
        );
        assert_eq!(
            position(&EvidenceKind::FulfillmentWithdrawn {
                key: "k".into(),
                reason: "r".into(),
            }),
            18
        );
        assert_eq!(
            position(&EvidenceKind::AddressCorrected { issue: "i".into() }),
            19
        );
    }
}
