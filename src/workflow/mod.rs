//! The supplier workflow: from a mirrored order to shipments at suppliers, their evidence, and
//! the exceptions (with Shopify holds) that stop them.
//!
//! Every change to an order's case goes through [`Workflow`], which holds a lock per order,
//! applies the change, settles the case (`plan::settle`: planning, revisions, exceptions) and
//! writes the case together with the outbound intents it calls for. The outbox sender
//! (`sender`) delivers those intents and reports their outcomes back through the same door.
//! Invariants 2 (each effect once), 5 (nothing silent) and 6 (status is derived) live here and
//! in `derive`.

pub mod derive;
pub mod effect;
pub mod gate;
pub mod model;
pub mod plan;
pub mod progress;
pub mod sender;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::clock::Clock;
use crate::store::cases::CaseWrite;
use crate::store::{Store, StoreError};
use crate::suppliers::{ShipmentView, SupplierEvent};
use effect::{Action, Effect, EffectState};
use model::{Actor, Decided, Decision, Evidence, EvidenceKind, HoldState, OrderCase, Source};
use plan::{Changes, Ctx};

/// Where suppliers come from for planning: the routing rules of the configuration.
pub trait Routes: Send + Sync {
    /// The suppliers that may ship a SKU, preferred first (empty: unmapped).
    fn chain(&self, sku: Option<&str>) -> Vec<String>;
    /// Whether a supplier of that name is configured.
    fn has_supplier(&self, name: &str) -> bool;
    /// Whether any supplier is configured. Without one, shipgate only mirrors and reconciles:
    /// holding every order as "unmapped" would disrupt a shop that does not use the workflow.
    fn any(&self) -> bool {
        true
    }
}

/// Workflow switches from the configuration.
#[derive(Debug, Clone)]
pub struct WorkflowSettings {
    /// Whether exceptions place Shopify holds.
    pub hold_on_exceptions: bool,
    /// Whether Shopify notifies the merchant of a hold.
    pub notify_merchant: bool,
    /// Whether Shopify e-mails the customer when shipgate creates a fulfillment.
    pub notify_customer: bool,
    /// Orders created before this (Unix ms) are mirrored but not routed. None: before the
    /// shop's routing start, the first time shipgate planned an order of the shop.
    pub route_orders_created_after_ms: Option<i64>,
    /// Business days a label may wait for the carrier's acceptance.
    pub no_acceptance_business_days: u32,
    /// Business days a fulfilled parcel's tracking may stand still.
    pub stalled_business_days: u32,
}

impl WorkflowSettings {
    /// The settings of a loaded configuration (the daemon and the store-direct CLI share it).
    pub fn from_config(config: &crate::config::WorkflowConfig) -> WorkflowSettings {
        WorkflowSettings {
            hold_on_exceptions: config.hold_on_exceptions,
            notify_merchant: config.notify_merchant,
            notify_customer: config.notify_customer,
            route_orders_created_after_ms: config
                .route_orders_created_after
                .as_ref()
                .map(|t| t.unix_ms),
            no_acceptance_business_days: config.no_acceptance_business_days,
            stalled_business_days: config.stalled_business_days,
        }
    }
}

impl Default for WorkflowSettings {
    fn default() -> Self {
        WorkflowSettings {
            hold_on_exceptions: true,
            notify_merchant: false,
            notify_customer: true,
            route_orders_created_after_ms: None,
            no_acceptance_business_days: 3,
            stalled_business_days: 5,
        }
    }
}

/// Why a workflow request was refused. The texts name what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

const LOCK_STRIPES: usize = 64;

/// The workflow's entry points. Cheap to clone.
#[derive(Clone)]
pub struct Workflow {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Workflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workflow")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

struct Inner {
    store: Store,
    clock: Clock,
    routes: Arc<dyn Routes>,
    settings: WorkflowSettings,
    locks: Vec<Mutex<()>>,
    /// Counts case and outbox writes, so that waiters can tell when work moved.
    writes: tokio::sync::watch::Sender<u64>,
}

/// What a sheet import recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub recorded: usize,
    /// Rows whose event was already recorded (the same sheet imported again).
    pub already_recorded: usize,
}

/// Why a sheet import recorded nothing (rows) or stopped (the store).
#[derive(Debug, thiserror::Error)]
pub enum ImportFailure {
    #[error("{0}")]
    Rows(crate::suppliers::csv::ImportErrors),
    #[error(transparent)]
    Workflow(WorkflowError),
}

/// What applying a supplier event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventApplied {
    /// Recorded as new evidence.
    Recorded,
    /// The same event id was already recorded: nothing changed.
    AlreadyRecorded,
}

impl Workflow {
    /// A workflow over the store.
    pub fn new(
        store: Store,
        clock: Clock,
        routes: Arc<dyn Routes>,
        settings: WorkflowSettings,
    ) -> Workflow {
        Workflow {
            inner: Arc::new(Inner {
                store,
                clock,
                routes,
                settings,
                locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
                writes: tokio::sync::watch::Sender::new(0),
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The clock.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The settings.
    pub fn settings(&self) -> &WorkflowSettings {
        &self.inner.settings
    }

    /// Whether a supplier of that name is configured.
    pub fn has_supplier(&self, name: &str) -> bool {
        self.inner.routes.has_supplier(name)
    }

    fn lock(&self, shop: &str, order_gid: &str) -> &Mutex<()> {
        let mut hasher = DefaultHasher::new();
        (shop, order_gid).hash(&mut hasher);
        &self.inner.locks[hasher.finish() as usize % LOCK_STRIPES]
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            store: &self.inner.store,
            routes: &*self.inner.routes,
            settings: &self.inner.settings,
            now_ms: self.inner.clock.now_ms(),
        }
    }

    fn write(&self, case: &OrderCase, changes: Changes) -> Result<(), StoreError> {
        self.inner.store.write_case(CaseWrite {
            case: Some(case),
            new_effects: changes.new_effects,
            updated_effects: changes.updated_effects,
        })?;
        self.bump();
        Ok(())
    }

    /// Tells waiters that the workflow's state moved.
    pub(crate) fn bump(&self) {
        self.inner.writes.send_modify(|n| *n += 1);
    }

    /// How many writes the workflow made so far (a change detector for tests and the demo).
    pub fn writes(&self) -> u64 {
        *self.inner.writes.borrow()
    }

    /// Waits until no order waits to be planned and no effect is due now: everything the
    /// workflow can do without news from outside (or the clock) is done.
    pub async fn wait_quiet(&self) -> Result<(), StoreError> {
        let mut rx = self.inner.writes.subscribe();
        let store = &self.inner.store;
        loop {
            rx.mark_unchanged();
            let now = self.inner.clock.now_ms();
            if store.plan_queue_len() == 0 && store.due_effects(now, 1)?.is_empty() {
                return Ok(());
            }
            // Each planning pass bumps the counter, so this wakes when the queue moved.
            let _ = rx.changed().await;
        }
    }

    /// Plans an order against its current mirror: creates, amends or cancels shipments and
    /// opens or closes exceptions.
    pub async fn plan(&self, shop: &str, order_gid: &str) -> Result<(), StoreError> {
        if !self.inner.routes.any() {
            return Ok(());
        }
        let _guard = self.lock(shop, order_gid).lock().await;
        let store = &self.inner.store;
        let Some(order) = store.order(shop, order_gid)? else {
            return Ok(());
        };
        let existing = store.case(shop, order_gid)?;
        if existing.is_none() {
            // An order from before routing began for the shop belongs to whoever handled
            // orders then: it is mirrored, never sent to a supplier.
            let since = match self.inner.settings.route_orders_created_after_ms {
                Some(since) => since,
                None => store.routing_start_ms(shop, self.inner.clock.now_ms())?,
            };
            // A minute's grace: Shopify's times are whole seconds, and an order placed just as
            // shipgate started is new business, not backlog.
            if order
                .created_at
                .as_ref()
                .is_some_and(|c| c.unix_ms < since - 60_000)
            {
                return Ok(());
            }
        }
        let mut case = existing
            .clone()
            .unwrap_or_else(|| OrderCase::new(shop, order_gid, &order.name));
        let changes = plan::settle(&mut case, Some(&order), &self.ctx())?;
        // An order with nothing to do and no history needs no case (a digital order, say).
        if existing.is_none() && case.shipments.is_empty() && case.exceptions.is_empty() {
            return Ok(());
        }
        if existing.as_ref() == Some(&case) && changes.new_effects.is_empty() {
            return Ok(());
        }
        self.write(&case, changes)
    }

    /// Plans every order the mirror announced, until the queue is empty. Returns how many
    /// orders were planned.
    pub async fn plan_pending(&self) -> Result<usize, StoreError> {
        let store = &self.inner.store;
        let mut planned = 0;
        loop {
            let batch = store.plan_queue(256)?;
            let mut progress = false;
            for request in &batch {
                let mirrored = store
                    .order(&request.shop, &request.order_gid)?
                    .map(|o| o.updated_at.unix_ms);
                // The mirror write this request announced has not landed yet (it is written
                // just after the request): leave it for the wake-up that write sends.
                if mirrored.is_some_and(|m| m < request.updated_at_ms) {
                    continue;
                }
                match self.plan(&request.shop, &request.order_gid).await {
                    Ok(()) => {}
                    // One unreadable record must not stop planning for every shop: it is
                    // logged and left for an operator, and the queue moves on.
                    Err(e @ StoreError::Corrupt { .. }) => {
                        tracing::error!(shop = %request.shop, order = %request.order_gid,
                            error = %e, "order not planned: a record cannot be read");
                    }
                    Err(e) => return Err(e),
                }
                store.planned(request)?;
                planned += 1;
                progress = true;
            }
            if progress {
                self.bump();
            }
            if !progress || batch.len() < 256 {
                return Ok(planned);
            }
        }
    }

    /// Checks that an event fits a shipment of this supplier (the intake answers 422 with the
    /// `Invalid` text, which names the problem and nothing private; a store failure is 503).
    pub fn validate_event(
        &self,
        supplier: &str,
        event: &SupplierEvent,
    ) -> Result<(), WorkflowError> {
        self.validate_in_batch(supplier, event, &[])
    }

    /// Validates an event as if `earlier` (events of the same batch, validated already) were
    /// recorded: a sheet may carry a shipment's check, packing and label in one go.
    fn validate_in_batch(
        &self,
        supplier: &str,
        event: &SupplierEvent,
        earlier: &[SupplierEvent],
    ) -> Result<(), WorkflowError> {
        let unknown = || WorkflowError::Invalid(format!("unknown shipment {}", event.shipment_id));
        let case = self
            .inner
            .store
            .case_of(&event.shipment_id)?
            .ok_or_else(unknown)?;
        let mut shipment = case
            .shipment(&event.shipment_id)
            .ok_or_else(unknown)?
            .clone();
        for e in earlier
            .iter()
            .filter(|e| e.shipment_id == event.shipment_id)
        {
            shipment.record(Evidence {
                id: e.id.clone(),
                at_ms: e.occurred_at.unix_ms,
                recorded_ms: e.occurred_at.unix_ms,
                actor: Actor::Supplier(supplier.to_string()),
                source: Source::Manual,
                kind: EvidenceKind::Supplier(e.clone()),
            });
        }
        let shipment = &shipment;
        if shipment.supplier != supplier {
            return Err(WorkflowError::Invalid(format!(
                "shipment {} is not {supplier}'s",
                event.shipment_id
            )));
        }
        // Already recorded (a retry, a sheet imported again): it was valid when it came in,
        // and recording it again changes nothing.
        let evidence_id = format!("supplier:{}", event.id);
        if shipment.evidence.iter().any(|e| e.id == evidence_id) {
            return Ok(());
        }
        // Once Shopify has a fulfillment of the shipment, its goods are with the carrier: an
        // address problem now is the carrier's to report, and sending the shipment to the
        // supplier again (what correcting the address does) could ship it twice.
        if matches!(event.kind, crate::suppliers::EventKind::AddressIssue { .. })
            && shipment
                .evidence
                .iter()
                .any(|e| matches!(e.kind, EvidenceKind::FulfillmentCreated { .. }))
        {
            return Err(WorkflowError::Invalid(format!(
                "shipment {} is fulfilled already: its parcels are with the carrier, so an \
                 address issue is the carrier's to report",
                event.shipment_id
            )));
        }
        for line in event.kind.line_ids() {
            if !shipment.lines.iter().any(|l| l.line_item_id == line) {
                return Err(WorkflowError::Invalid(format!(
                    "line {line} is not in shipment {}",
                    event.shipment_id
                )));
            }
        }
        // A physical check must be a whole, consistent record of this shipment (SPEC 3.1):
        // one that does not cover its lines and quantities is refused with the reasons.
        if let crate::suppliers::EventKind::CheckReported { .. } = &event.kind {
            let view = crate::evidence::ShipmentLinesView::from_shipment(shipment);
            crate::evidence::CheckRecord::from_event(event, supplier)
                .and_then(|check| {
                    crate::evidence::validate(check, &view, self.inner.clock.now_ms())
                })
                .map_err(|e| {
                    WorkflowError::Invalid(format!(
                        "the check of shipment {} is refused: {e}",
                        event.shipment_id
                    ))
                })?;
        }
        match &event.kind {
            crate::suppliers::EventKind::Packed { .. } => {
                self.packing_at_the_door(supplier, shipment, event)?;
            }
            crate::suppliers::EventKind::LabelCreated { .. } => {
                // What the label says of itself is checked whatever arrived before it.
                crate::evidence::LabelRecord::from_event(event)
                    .and_then(|label| crate::evidence::check_label_fields(&label))
                    .map_err(|e| {
                        WorkflowError::Invalid(format!(
                            "the label of shipment {} is refused: {e}",
                            event.shipment_id
                        ))
                    })?;
                let packing = self.packing_at_the_door(supplier, shipment, event)?;
                if let Some(packing) = packing {
                    crate::evidence::LabelRecord::from_event(event)
                        .and_then(|label| crate::evidence::validate_label(label, &packing))
                        .map_err(|e| {
                            WorkflowError::Invalid(format!(
                                "the label of shipment {} is refused: {e}",
                                event.shipment_id
                            ))
                        })?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Packing and labels are checked against the check at the door (SPEC 3.1): a parcel may
    /// only hold units that passed the shipment's latest check, and a label must name a packed
    /// parcel. For a `packed` event the event itself is the packing checked; for a label, the
    /// parcels packed so far.
    ///
    /// Events may arrive out of order, so what is not here yet is not held against an event:
    /// with no check recorded, only one made after the event, or (for a label) its parcel not
    /// packed yet, the event is taken as it is; the gate still needs a passing check that
    /// covers the quantities. None then, and when the latest check bounds nothing (below).
    fn packing_at_the_door(
        &self,
        supplier: &str,
        shipment: &model::Shipment,
        event: &SupplierEvent,
    ) -> Result<Option<crate::evidence::ValidPacking>, WorkflowError> {
        let what = match &event.kind {
            crate::suppliers::EventKind::Packed { .. } => "packing",
            _ => "label",
        };
        let refuse = |why: String| {
            WorkflowError::Invalid(format!(
                "the {what} of shipment {} is refused: {why}",
                shipment.id
            ))
        };
        let Some(check) = derive::latest_check_event(shipment)
            .filter(|c| c.occurred_at.unix_ms <= event.occurred_at.unix_ms)
        else {
            return Ok(None);
        };
        // A failed check (its re-check may be on its way), an accepted deviation (the owner's
        // note is the bound) or a check the order has since outgrown (an edit changed the
        // lines) bounds nothing here: the gate still needs a passing check that covers the
        // quantities, and the failed check is an exception already.
        if derive::failed_check(shipment).is_some() || derive::deviation_accepted(shipment) {
            return Ok(None);
        }
        let view = crate::evidence::ShipmentLinesView::from_shipment(shipment);
        let Ok(valid_check) = crate::evidence::CheckRecord::from_event(check, supplier)
            .and_then(|c| crate::evidence::validate(c, &view, self.inner.clock.now_ms()))
        else {
            return Ok(None);
        };
        let record = match &event.kind {
            crate::suppliers::EventKind::Packed { .. } => {
                crate::evidence::PackingRecord::from_event(event)
                    .map_err(|e| refuse(e.to_string()))?
            }
            crate::suppliers::EventKind::LabelCreated { parcel_id, .. } => {
                let parcels = derive::parcels(shipment);
                // A label for a parcel whose packing has not arrived yet is taken as it is.
                let packed = match parcel_id {
                    Some(p) => parcels.contains_key(p),
                    None => !parcels.is_empty(),
                };
                if !packed {
                    return Ok(None);
                }
                crate::evidence::PackingRecord {
                    packed_at: event.occurred_at.clone(),
                    parcels: parcels
                        .into_iter()
                        .map(|(parcel_id, lines)| crate::evidence::PackedParcelRecord {
                            parcel_id,
                            lines: lines
                                .into_iter()
                                .map(|(line_id, quantity)| crate::suppliers::ParcelLine {
                                    line_id,
                                    quantity,
                                })
                                .collect(),
                            weight_grams: None,
                            dimensions_cm: None,
                            photos: Vec::new(),
                        })
                        .collect(),
                }
            }
            _ => return Ok(None),
        };
        crate::evidence::validate_packing(record, &view, &valid_check)
            .map(Some)
            .map_err(|e| refuse(e.to_string()))
    }

    /// Records a supplier event as evidence and settles the case.
    pub async fn apply_event(
        &self,
        supplier: &str,
        event: SupplierEvent,
        source: Source,
    ) -> Result<EventApplied, WorkflowError> {
        let actor = Actor::Supplier(supplier.to_string());
        self.apply_event_as(supplier, event, source, actor).await
    }

    /// Brings in the carrier events that arrived before a label with this number.
    async fn label_recorded(&self, number: &str) -> Result<(), StoreError> {
        for waiting in self.inner.store.waiting_tracking(number)? {
            let event_id = waiting.event_id.clone();
            self.apply_tracking(waiting, Source::Workflow).await?;
            self.inner.store.waiting_tracking_done(number, &event_id)?;
        }
        Ok(())
    }

    /// Records an event an operator relays for a supplier (the `manual` adapter, and any
    /// supplier's event entered by hand), with the operator as its actor. The same door as
    /// the webhook: the same checks, the same effects.
    pub async fn record_event(
        &self,
        supplier: &str,
        event: SupplierEvent,
        by: Actor,
    ) -> Result<EventApplied, WorkflowError> {
        self.apply_event_as(supplier, event, Source::Manual, by)
            .await
    }

    /// Imports an agent's CSV sheet: every row is checked against the shipments first, and
    /// one bad row refuses the whole file (nothing is recorded). Importing the same file again
    /// records nothing new.
    pub async fn import_sheet(
        &self,
        supplier: &str,
        file_name: &str,
        bytes: &[u8],
        by: Actor,
    ) -> Result<ImportReport, ImportFailure> {
        let imported_at = crate::order::Timestamp::from_unix_ms(self.inner.clock.now_ms());
        // A store failure must not read as "unknown shipment": it is kept and reported as what
        // it is, so the sheet can be imported again later.
        // (In a block, so that nothing borrowed here lives across the awaits below.)
        let (imported, failure) = {
            let failure = std::cell::RefCell::new(None);
            let lookup = |id: &str| match self.shipment_view(id) {
                Ok(view) => view,
                Err(e) => {
                    failure.borrow_mut().get_or_insert(e);
                    None
                }
            };
            let imported =
                crate::suppliers::csv::import(supplier, file_name, bytes, imported_at, &lookup);
            (imported, failure.into_inner())
        };
        if let Some(e) = failure {
            return Err(ImportFailure::Workflow(WorkflowError::Store(e)));
        }
        let events = imported.map_err(ImportFailure::Rows)?;
        // Every event is checked before any is recorded: the whole sheet or nothing.
        for (i, event) in events.iter().enumerate() {
            self.validate_in_batch(supplier, event, &events[..i])
                .map_err(ImportFailure::Workflow)?;
        }
        let mut report = ImportReport::default();
        for event in events {
            let source = Source::CsvImport {
                file: file_name.to_string(),
            };
            match self
                .apply_event_as(supplier, event, source, by.clone())
                .await
                .map_err(ImportFailure::Workflow)?
            {
                EventApplied::Recorded => report.recorded += 1,
                EventApplied::AlreadyRecorded => report.already_recorded += 1,
            }
        }
        Ok(report)
    }

    /// The shipments waiting for a supplier's action, for the CSV export and the manual
    /// adapter's listing: those not yet confirmed, and those asked to cancel and not yet
    /// confirmed cancelled.
    pub fn pending_for(
        &self,
        supplier: &str,
    ) -> Result<Vec<crate::suppliers::csv::PendingSubmission>, StoreError> {
        let mut out = Vec::new();
        for case in self.inner.store.cases() {
            let case = case?;
            for shipment in case.shipments.iter().filter(|s| s.supplier == supplier) {
                let cancel_pending = shipment
                    .evidence
                    .iter()
                    .any(|e| matches!(e.kind, EvidenceKind::CancelRequested { .. }))
                    && !derive::is_cancelled(shipment);
                // Acceptance (the order's placing time) tells nothing about these two states.
                let awaiting = matches!(
                    derive::status(shipment, &case.exceptions, None),
                    derive::ShipmentStatus::AwaitingSubmission
                        | derive::ShipmentStatus::AwaitingConfirmation
                );
                // A revision (an edit after the supplier confirmed) that the supplier has not
                // answered yet is pending too, or an offline agent would ship the old one.
                let last = |supplier_side: bool| {
                    shipment
                        .evidence
                        .iter()
                        .filter(|e| {
                            if supplier_side {
                                matches!(e.kind, EvidenceKind::Supplier(_))
                            } else {
                                matches!(e.kind, EvidenceKind::SubmissionIntended { .. })
                            }
                        })
                        .map(|e| e.recorded_ms)
                        .max()
                };
                let unanswered_revision = derive::revision(shipment) > 1
                    && !derive::is_cancelled(shipment)
                    && last(false) > last(true);
                if !cancel_pending && !awaiting && !unanswered_revision {
                    continue;
                }
                let Some(view) = self.shipment_view(&shipment.id)? else {
                    continue;
                };
                let ship_to = if cancel_pending {
                    None
                } else {
                    self.inner
                        .store
                        .order(&case.shop, &case.order_gid)?
                        .and_then(|o| o.shipping_address)
                };
                out.push(crate::suppliers::csv::PendingSubmission {
                    shipment_id: view.shipment_id,
                    order_name: view.order_name,
                    lines: view.lines,
                    ship_to,
                    cancelled: cancel_pending,
                });
            }
        }
        Ok(out)
    }

    async fn apply_event_as(
        &self,
        supplier: &str,
        event: SupplierEvent,
        source: Source,
        actor: Actor,
    ) -> Result<EventApplied, WorkflowError> {
        let store = &self.inner.store;
        let located = store
            .case_of(&event.shipment_id)?
            .ok_or_else(|| WorkflowError::NotFound(format!("shipment {}", event.shipment_id)))?;
        let _guard = self.lock(&located.shop, &located.order_gid).lock().await;
        // A retry of an event already recorded is answered as such, whatever arrived since:
        // validating it again against newer evidence could refuse what was accepted.
        let evidence_id = format!("supplier:{}", event.id);
        if located.shipment(&event.shipment_id).is_some_and(|s| {
            s.supplier == supplier && s.evidence.iter().any(|e| e.id == evidence_id)
        }) {
            return Ok(EventApplied::AlreadyRecorded);
        }
        self.validate_event(supplier, &event)?;
        let mut case = store
            .case(&located.shop, &located.order_gid)?
            .ok_or_else(|| WorkflowError::NotFound(format!("shipment {}", event.shipment_id)))?;
        let now = self.inner.clock.now_ms();
        let label_number = match &event.kind {
            crate::suppliers::EventKind::LabelCreated {
                tracking_number, ..
            } => Some(tracking_number.clone()),
            _ => None,
        };
        let shipment = case
            .shipment_mut(&event.shipment_id)
            .expect("validated above");
        let numbers_before: Vec<String> = derive::labels(shipment)
            .into_iter()
            .map(|(_, _, n, _)| n)
            .collect();
        let new = shipment.record(Evidence {
            // Apart from shipgate's own record ids, whatever the supplier calls its events.
            id: format!("supplier:{}", event.id),
            at_ms: event.occurred_at.unix_ms,
            recorded_ms: now,
            actor,
            source,
            kind: EvidenceKind::Supplier(event),
        });
        if !new {
            return Ok(EventApplied::AlreadyRecorded);
        }
        let order = store.order(&case.shop, &case.order_gid)?;
        let changes = plan::settle(&mut case, order.as_ref(), &self.ctx())?;
        self.write(&case, changes)?;
        drop(_guard);
        if let Some(number) = label_number {
            // Other orders that share the new number, or shared the one it replaced, see
            // their tracking conflict appear or go away when they are planned again.
            let mut touched = numbers_before;
            touched.push(number.clone());
            self.replan_sharing(&case, &touched)?;
            self.label_recorded(&number).await?;
        }
        Ok(EventApplied::Recorded)
    }

    /// Queues for planning the other orders whose labels carry any of these numbers.
    fn replan_sharing(&self, case: &OrderCase, numbers: &[String]) -> Result<(), StoreError> {
        let store = &self.inner.store;
        for number in numbers {
            for other in store.shipments_with_tracking_number(number)? {
                if case.shipment(&other).is_some() {
                    continue;
                }
                if let Some(located) = store.case_of(&other)? {
                    store.queue_plan(&located.shop, &located.order_gid)?;
                }
            }
        }
        Ok(())
    }

    /// Records a carrier's tracking event on every shipment whose label carries its number.
    /// Returns how many shipments recorded it as new; 0 for a number no label carries (the
    /// caller keeps such a delivery visible).
    pub async fn apply_tracking(
        &self,
        event: crate::tracking::TrackingEvent,
        source: Source,
    ) -> Result<usize, StoreError> {
        let store = &self.inner.store;
        let shipments = store.shipments_with_tracking_number(&event.tracking_number)?;
        if shipments.is_empty() {
            // The carrier may scan before the supplier's label reaches us: the event waits
            // for the label (`apply_event` brings it in).
            tracing::info!(number = %event.tracking_number, provider = event.provider.as_str(),
                "carrier event for a number no label carries yet: kept until the label arrives");
            store.keep_waiting_tracking(&event)?;
            return Ok(0);
        }
        let mut recorded = 0;
        let mut taken = false;
        for shipment_id in shipments {
            let Some(located) = store.case_of(&shipment_id)? else {
                continue;
            };
            let _guard = self.lock(&located.shop, &located.order_gid).lock().await;
            let Some(mut case) = store.case(&located.shop, &located.order_gid)? else {
                continue;
            };
            let now = self.inner.clock.now_ms();
            let Some(shipment) = case.shipment_mut(&shipment_id) else {
                continue;
            };
            // A delivered shipment's journey is over: a scan of its number made after the
            // delivery is a reused label's, and must not reach this order's customer. Earlier
            // scans arriving late are still its own.
            if derive::delivered_at(shipment).is_some_and(|at| event.occurred_at.unix_ms > at) {
                continue;
            }
            taken = true;
            let new = shipment.record(Evidence {
                id: format!("tracking:{}", event.event_id),
                at_ms: event.occurred_at.unix_ms,
                recorded_ms: now,
                actor: Actor::Carrier(event.provider.as_str().to_string()),
                source: source.clone(),
                kind: EvidenceKind::Carrier(event.clone()),
            });
            if !new {
                continue;
            }
            let order = store.order(&case.shop, &case.order_gid)?;
            let changes = plan::settle(&mut case, order.as_ref(), &self.ctx())?;
            self.write(&case, changes)?;
            recorded += 1;
        }
        if !taken {
            // Only delivered shipments carry the number, and the scan is newer than their
            // deliveries: the carrier recycled it, and the new parcel's label has not reached
            // us yet. The scan waits for that label like a scan of an unknown number.
            tracing::info!(number = %event.tracking_number, provider = event.provider.as_str(),
                "carrier event after the delivery of every parcel with this number: kept until a new label arrives");
            store.keep_waiting_tracking(&event)?;
        }
        Ok(recorded)
    }

    /// Takes a decision on an open exception and settles the case.
    pub async fn decide(
        &self,
        exception_id: &str,
        decision: Decision,
        by: Actor,
        note: Option<String>,
    ) -> Result<OrderCase, WorkflowError> {
        let store = &self.inner.store;
        let located = store
            .case_of(exception_id)?
            .ok_or_else(|| WorkflowError::NotFound(format!("exception {exception_id}")))?;
        let _guard = self.lock(&located.shop, &located.order_gid).lock().await;
        let mut case = store
            .case(&located.shop, &located.order_gid)?
            .ok_or_else(|| WorkflowError::NotFound(format!("exception {exception_id}")))?;
        let order = store.order(&case.shop, &case.order_gid)?;
        let ctx = self.ctx();
        let mut changes = Changes::default();
        let decided = Decided {
            decision,
            by,
            at_ms: ctx.now_ms,
            note,
        };
        plan::apply_decision(
            &mut case,
            order.as_ref(),
            exception_id,
            decided,
            &ctx,
            &mut changes,
        )?
        .map_err(WorkflowError::Invalid)?;
        let more = plan::settle(&mut case, order.as_ref(), &ctx)?;
        changes.new_effects.extend(more.new_effects);
        changes.updated_effects.extend(more.updated_effects);
        self.write(&case, changes)?;
        Ok(case)
    }

    /// Runs the timers: settles every case whose wake time came (a wait that ran out, a
    /// label the carrier has not accepted in time, tracking that stood still). Settling
    /// re-derives the conditions with the clock, which opens or closes the exceptions. Returns
    /// how many cases were settled.
    pub async fn tick(&self) -> Result<usize, StoreError> {
        let store = &self.inner.store;
        let now = self.inner.clock.now_ms();
        let mut settled = 0;
        // Each due case is settled once per pass; settling moves its wake time past `now`.
        for due in store.due_cases(now, usize::MAX)? {
            let result = async {
                let _guard = self.lock(&due.shop, &due.order_gid).lock().await;
                // Settled even if its wake time moved meanwhile: settling is idempotent, and
                // the write puts the index right.
                if let Some(mut case) = store.case(&due.shop, &due.order_gid)? {
                    let order = store.order(&due.shop, &due.order_gid)?;
                    let changes = plan::settle(&mut case, order.as_ref(), &self.ctx())?;
                    self.write(&case, changes)?;
                }
                store.wake_done(&due)
            }
            .await;
            match result {
                Ok(()) => settled += 1,
                // One case that cannot be settled must not hold up every other timer.
                Err(e) => {
                    tracing::error!(shop = %due.shop, order = %due.order_gid, error = %e,
                        "a timer could not settle the order; trying it again in a minute");
                    store.postpone_wake(&due, now + 60_000)?;
                }
            }
        }
        Ok(settled)
    }

    /// The earliest time a timer is due, if any (read from the store's wake index).
    pub fn next_timer_ms(&self) -> Result<Option<i64>, StoreError> {
        self.inner.store.next_wake_ms()
    }

    /// Records an effect's new state and what it means for the case, in one write. The sender
    /// calls this under the case lock it holds.
    pub(crate) fn record_outcome(
        &self,
        effect: &Effect,
        case: Option<OrderCase>,
    ) -> Result<(), StoreError> {
        let store = &self.inner.store;
        let Some(mut case) = case else {
            return store.write_case(CaseWrite {
                case: None,
                new_effects: Vec::new(),
                updated_effects: vec![effect.clone()],
            });
        };
        let now = self.inner.clock.now_ms();
        let outcome = |kind: EvidenceKind| Evidence {
            id: format!("{}.outcome", effect.key),
            at_ms: now,
            recorded_ms: now,
            actor: Actor::System,
            source: Source::Outbox {
                effect_id: effect.id,
            },
            kind,
        };
        match (&effect.action, &effect.state) {
            (Action::Supplier { message, .. }, state) => {
                if let crate::suppliers::MessageBody::Submission { revision, .. } = &message.body
                    && let Some(shipment) = case.shipment_mut(&message.shipment_id)
                {
                    match state {
                        EffectState::Done { reference, .. } => {
                            shipment.record(outcome(EvidenceKind::SubmissionDelivered {
                                revision: *revision,
                                supplier_ref: reference.clone(),
                            }));
                        }
                        EffectState::Failed { reason, .. } => {
                            shipment.record(outcome(EvidenceKind::SubmissionRefused {
                                revision: *revision,
                                reason: reason.clone(),
                            }));
                        }
                        _ => {}
                    }
                }
            }
            (Action::PlaceHold { exception_id, .. }, state) => {
                if let Some(hold) = case
                    .exceptions
                    .iter_mut()
                    .find(|e| e.id == *exception_id)
                    .and_then(|e| e.hold.as_mut())
                {
                    match state {
                        EffectState::Done { reference, .. } => {
                            let hold_id = reference.clone().unwrap_or_default();
                            match &mut hold.state {
                                HoldState::Requested => hold.state = HoldState::Placed { hold_id },
                                // Closed before the hold was confirmed: the release needs the id.
                                HoldState::ReleaseRequested { hold_id: id @ None } => {
                                    *id = Some(hold_id)
                                }
                                _ => {}
                            }
                        }
                        EffectState::Failed { reason, .. }
                            if hold.state == HoldState::Requested =>
                        {
                            hold.state = HoldState::Refused {
                                reason: reason.clone(),
                            };
                        }
                        _ => {}
                    }
                }
            }
            (
                Action::CreateFulfillment { shipment_id, .. },
                EffectState::Done { reference, .. },
            ) => {
                if let Some(shipment) = case.shipment_mut(shipment_id) {
                    shipment.record(outcome(EvidenceKind::FulfillmentCreated {
                        key: effect.key.clone(),
                        fulfillment_id: reference.clone().unwrap_or_default(),
                    }));
                }
            }
            (Action::CreateFulfillment { shipment_id, .. }, EffectState::Failed { reason, .. }) => {
                if let Some(shipment) = case.shipment_mut(shipment_id) {
                    shipment.record(outcome(EvidenceKind::FulfillmentRefused {
                        key: effect.key.clone(),
                        reason: reason.clone(),
                    }));
                }
            }
            // Withdrawn by the sender because the gate shut before it went out.
            (
                Action::CreateFulfillment { shipment_id, .. },
                EffectState::Superseded { reason, .. },
            ) => {
                if let Some(shipment) = case.shipment_mut(shipment_id)
                    && !derive::withdrawn(shipment, &effect.key)
                {
                    shipment.record(outcome(EvidenceKind::FulfillmentWithdrawn {
                        key: effect.key.clone(),
                        reason: reason.clone(),
                    }));
                }
            }
            (Action::CreateFulfillment { .. }, _) => {}
            // A refused progress event costs the customer one line of tracking history, not
            // the parcel: the outbox shows it as failed, and nothing else depends on it.
            (Action::FulfillmentEvent { .. }, EffectState::Failed { reason, .. }) => {
                tracing::warn!(effect = %effect.key, %reason, "Shopify refused a fulfillment event");
            }
            (Action::FulfillmentEvent { .. }, _) => {}
            (Action::UpdateTracking { shipment_id, .. }, EffectState::Failed { reason, .. }) => {
                // The customer keeps seeing the old number: as visible as a refused fulfillment,
                // with the same decisions (retry, investigate).
                if let Some(shipment) = case.shipment_mut(shipment_id) {
                    shipment.record(outcome(EvidenceKind::FulfillmentRefused {
                        key: effect.key.clone(),
                        reason: reason.clone(),
                    }));
                }
            }
            (Action::UpdateTracking { .. }, _) => {}
            (Action::ReleaseHold { exception_id, .. }, state) => {
                if let Some(hold) = case
                    .exceptions
                    .iter_mut()
                    .find(|e| e.id == *exception_id)
                    .and_then(|e| e.hold.as_mut())
                    && matches!(state, EffectState::Done { .. })
                {
                    hold.state = HoldState::Released;
                }
            }
        }
        let order = store.order(&case.shop, &case.order_gid)?;
        let mut changes = plan::settle(&mut case, order.as_ref(), &self.ctx())?;
        changes.updated_effects.push(effect.clone());
        self.write(&case, changes)
    }

    /// Whether the gate of the shipment that intended a fulfillment is shut now, on the case and
    /// mirror as stored (the sender asks under the case lock, just before it sends). A case or
    /// order that is gone counts as shut: nothing is fulfilled that shipgate cannot see.
    pub(crate) fn fulfillment_shut(
        &self,
        shop: &str,
        order_gid: &str,
        shipment_id: &str,
    ) -> Result<Option<gate::Closed>, StoreError> {
        let store = &self.inner.store;
        let (Some(case), Some(order)) =
            (store.case(shop, order_gid)?, store.order(shop, order_gid)?)
        else {
            return Ok(Some(gate::Closed::FulfillmentOrderGone));
        };
        // An incomplete mirror lacks fulfillment orders it does not show: it cannot tell that
        // the gate shut, as settling does not plan on it either.
        if order.truncated {
            return Ok(None);
        }
        Ok(plan::fulfillment_shut(&case, &order, shipment_id))
    }

    /// Locks an effect's case for the sender.
    pub(crate) async fn lock_case(
        &self,
        shop: &str,
        order_gid: &str,
    ) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock(shop, order_gid).lock().await
    }

    /// The shipments of a supplier as the csv export and validators see them.
    pub fn shipment_view(&self, shipment_id: &str) -> Result<Option<ShipmentView>, StoreError> {
        let Some(case) = self.inner.store.case_of(shipment_id)? else {
            return Ok(None);
        };
        let Some(shipment) = case.shipment(shipment_id) else {
            return Ok(None);
        };
        let current = derive::current_lines(shipment);
        Ok(Some(ShipmentView {
            shipment_id: shipment.id.clone(),
            supplier: shipment.supplier.clone(),
            shop: case.shop.clone(),
            order_name: case.order_name.clone(),
            open: !derive::is_cancelled(shipment),
            lines: shipment
                .lines
                .iter()
                .filter_map(|l| {
                    current
                        .iter()
                        .find(|(id, _)| *id == l.line_item_id)
                        .map(|(_, q)| crate::suppliers::MessageLine {
                            line_id: l.line_item_id.clone(),
                            sku: l.sku.clone(),
                            variant_title: l.variant_title.clone(),
                            quantity: *q,
                        })
                })
                .collect(),
        }))
    }
}

/// Plans orders as the mirror announces changes, until cancelled.
pub async fn run_planner(workflow: Workflow, cancel: tokio_util::sync::CancellationToken) {
    let mut failures = 0u32;
    loop {
        let queued = workflow.store().plan_queued();
        match workflow.plan_pending().await {
            Ok(_) => failures = 0,
            Err(e) => {
                failures += 1;
                tracing::error!(error = %e, "planning orders failed; retrying");
            }
        }
        // A request skipped because its mirror write was still landing is woken by that
        // write (`put_order` notifies after it landed), so only failures need a timer.
        let retry = async {
            if failures == 0 {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep(std::time::Duration::from_millis(
                    100 * 2u64.pow(failures.min(8)),
                ))
                .await
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = queued => {}
            _ = retry => {}
        }
    }
}

/// Runs the workflow's timers (waits that run out), until cancelled.
pub async fn run_timers(workflow: Workflow, cancel: tokio_util::sync::CancellationToken) {
    loop {
        let failed = match workflow.tick().await {
            Ok(_) => false,
            Err(e) => {
                tracing::error!(error = %e, "workflow timers failed; retrying in a minute");
                true
            }
        };
        let next = workflow.next_timer_ms().ok().flatten();
        let clock = workflow.clock().clone();
        // Decisions taken meanwhile may set an earlier timer: look again at least every minute.
        // After a failure, a timer already due would otherwise be retried without a pause.
        // Never sooner than a second from now: whatever a pass left due (it cannot, but a
        // store that disagrees with itself could) is not worth a busy loop.
        let now = clock.now_ms();
        let at = if failed {
            now + 60_000
        } else {
            next.unwrap_or(i64::MAX).min(now + 60_000).max(now + 1_000)
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = clock.sleep_until(at) => {}
        }
    }
}

#[cfg(test)]
mod tests;
