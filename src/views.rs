//! What the admin API and the CLI show, computed in one place from the store.
//!
//! The CLI works through the daemon's admin API when the daemon runs and on the store directly
//! when it does not; both call these functions, so both give the same answer.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{AdapterKind, Config};
use crate::order::{OrderMirror, Timestamp};
use crate::store::{Store, StoreError};
use crate::suppliers::{EventKind, SupplierEvent};
use crate::workflow::derive::{self, ShipmentStatus};
use crate::workflow::effect::{Action, Effect, EffectState};
use crate::workflow::model::{
    Actor, Closed, Decided, Decision, Evidence, EvidenceKind, Exception, ExceptionKind, HoldRecord,
    HoldState, OrderCase, Shipment, Source,
};
use crate::workflow::{EventApplied, ImportFailure, Workflow, WorkflowError};

/// One line of `orders list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OrderSummary {
    pub shop: String,
    pub id: String,
    pub name: String,
    pub updated_at: String,
    pub cancelled: bool,
    /// Shopify's display fulfillment status, e.g. `UNFULFILLED`.
    pub fulfillment_status: String,
    /// Units still to ship over all lines.
    pub unfulfilled_units: i64,
    /// Fulfillment orders, and how many of them are on hold.
    pub fulfillment_orders: usize,
    pub on_hold: usize,
}

impl OrderSummary {
    fn of(order: &OrderMirror) -> OrderSummary {
        OrderSummary {
            shop: order.shop.clone(),
            id: order.id.clone(),
            name: order.name.clone(),
            updated_at: order.updated_at.text.clone(),
            cancelled: order.is_cancelled(),
            fulfillment_status: order.display_fulfillment_status.clone(),
            unfulfilled_units: order
                .line_items
                .iter()
                .map(|l| l.unfulfilled_quantity)
                .sum(),
            fulfillment_orders: order.fulfillment_orders.len(),
            on_hold: order
                .fulfillment_orders
                .iter()
                .filter(|fo| !fo.holds.is_empty())
                .count(),
        }
    }
}

/// The mirrored orders of the given shops (or all), newest change first, at most `limit`.
pub fn list_orders(
    store: &Store,
    shops: &[String],
    limit: usize,
) -> Result<Vec<OrderSummary>, StoreError> {
    let mut out = Vec::new();
    for shop in shops {
        for order in store.orders(shop) {
            out.push(OrderSummary::of(&order?));
        }
    }
    out.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(a.id.cmp(&b.id)));
    out.truncate(limit);
    Ok(out)
}

/// Turns what an operator types (`1001`, `#1001`, a numeric id or a gid) into the order's gid,
/// looking names up in the shop's mirror.
pub fn resolve_order(
    store: &Store,
    shop: &str,
    reference: &str,
) -> Result<Option<String>, StoreError> {
    if reference.starts_with("gid://shopify/Order/") {
        return Ok(Some(reference.to_string()));
    }
    let name = if reference.starts_with('#') {
        reference.to_string()
    } else {
        format!("#{reference}")
    };
    for order in store.orders(shop) {
        let order = order?;
        if order.name == name {
            return Ok(Some(order.id));
        }
    }
    if reference.chars().all(|c| c.is_ascii_digit()) && !reference.is_empty() {
        return Ok(Some(format!("gid://shopify/Order/{reference}")));
    }
    Ok(None)
}

/// One order in full, found by any reference `resolve_order` understands.
pub fn show_order(
    store: &Store,
    shop: &str,
    reference: &str,
) -> Result<Option<OrderView>, StoreError> {
    let Some(gid) = resolve_order(store, shop, reference)? else {
        return Ok(None);
    };
    let Some(order) = store.order(shop, &gid)? else {
        return Ok(None);
    };
    let placed = crate::workflow::plan::placed(Some(&order));
    let shipments = store
        .case(shop, &gid)?
        .map(|case| {
            case.shipments
                .iter()
                .map(|s| ShipmentBrief {
                    id: s.id.clone(),
                    supplier: s.supplier.clone(),
                    status: derive::status(s, &case.exceptions, placed)
                        .name()
                        .to_string(),
                    lines: line_views(s),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(OrderView { order, shipments }))
}

/// One order as `orders show` gives it: the mirror, and the shipments shipgate made of it (with
/// their `SG-…` ids, which the other commands take).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    #[serde(flatten)]
    pub order: OrderMirror,
    #[serde(default)]
    pub shipments: Vec<ShipmentBrief>,
}

/// A table for people: each column as wide as its widest cell, so that long ids and kinds never
/// push the columns after them out of line. Columns marked right-aligned are numbers; the last
/// column is never padded.
struct Table {
    headers: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Headers; a leading `>` right-aligns the column (and is not shown).
    fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.trim_start_matches('>')).collect(),
            right: headers.iter().map(|h| h.starts_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let width = |i: usize| {
            self.rows
                .iter()
                .map(|r| r[i].chars().count())
                .chain([self.headers[i].chars().count()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.headers.len()).map(width).collect();
        let last = self.headers.len() - 1;
        let line = |cells: Vec<&str>| {
            let mut out = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                let pad = widths[i].saturating_sub(cell.chars().count());
                if self.right[i] {
                    out.push_str(&" ".repeat(pad));
                    out.push_str(cell);
                } else if i == last {
                    out.push_str(cell);
                } else {
                    out.push_str(cell);
                    out.push_str(&" ".repeat(pad));
                }
            }
            out.truncate(out.trim_end().len());
            out.push('\n');
            out
        };
        let mut out = line(self.headers.clone());
        for row in &self.rows {
            out.push_str(&line(row.iter().map(String::as_str).collect()));
        }
        out
    }
}

/// Renders order summaries as a table for people.
pub fn orders_table(orders: &[OrderSummary]) -> String {
    let mut table = Table::new(&[
        "NAME", "ID", "UPDATED", "STATUS", ">TO SHIP", ">FOS", ">HELD",
    ]);
    for o in orders {
        let status = if o.cancelled {
            "CANCELLED".to_string()
        } else {
            o.fulfillment_status.clone()
        };
        table.row(vec![
            o.name.clone(),
            o.id.clone(),
            o.updated_at.to_string(),
            status,
            o.unfulfilled_units.to_string(),
            o.fulfillment_orders.to_string(),
            o.on_hold.to_string(),
        ]);
    }
    let mut out = table.render();
    out.push_str(&format!("{} order(s)\n", orders.len()));
    out
}

/// Renders one order for people. The shipping address is customer data: only its country shows.
pub fn order_text(view: &OrderView) -> String {
    let order = &view.order;
    let mut out = format!(
        "{} {} ({})\n  updated {}{}\n  status {}; ships to {}\n",
        order.name,
        order.id,
        order.shop,
        order.updated_at.text,
        order
            .cancelled_at
            .as_ref()
            .map(|c| format!(
                ", cancelled {} ({})",
                c.text,
                order.cancel_reason.as_deref().unwrap_or("no reason")
            ))
            .unwrap_or_default(),
        order.display_fulfillment_status,
        order
            .shipping_address
            .as_ref()
            .and_then(|a| a.country_code.clone())
            .unwrap_or_else(|| "-".into()),
    );
    out.push_str("  lines:\n");
    for l in &order.line_items {
        out.push_str(&format!(
            "    {} {} x{} (to ship {}) {}\n",
            l.id,
            l.sku.as_deref().unwrap_or("(no SKU)"),
            l.current_quantity,
            l.unfulfilled_quantity,
            l.variant_title.as_deref().unwrap_or("")
        ));
    }
    out.push_str("  fulfillment orders:\n");
    for fo in &order.fulfillment_orders {
        out.push_str(&format!(
            "    {} {} at {}{}\n",
            fo.id,
            fo.status.as_shopify(),
            fo.location_name.as_deref().unwrap_or("?"),
            if fo.holds.is_empty() {
                String::new()
            } else {
                format!(
                    ", held: {}",
                    fo.holds
                        .iter()
                        .map(|h| format!(
                            "{}{}",
                            h.reason,
                            if h.held_by_us { " (shipgate)" } else { "" }
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ));
        for line in &fo.lines {
            out.push_str(&format!(
                "      {} remaining {}/{}\n",
                line.line_item_id, line.remaining_quantity, line.total_quantity
            ));
        }
    }
    if !order.fulfillments.is_empty() {
        out.push_str("  fulfillments:\n");
        for f in &order.fulfillments {
            let tracking: Vec<String> = f
                .tracking
                .iter()
                .map(|t| {
                    format!(
                        "{} {}",
                        t.company.as_deref().unwrap_or("?"),
                        t.number.as_deref().unwrap_or("?")
                    )
                })
                .collect();
            out.push_str(&format!(
                "    {} {} {}\n",
                f.id,
                f.status,
                tracking.join(", ")
            ));
        }
    }
    if view.shipments.is_empty() {
        out.push_str("  shipments: none\n");
    } else {
        out.push_str("  shipments:\n");
        for s in &view.shipments {
            let lines: Vec<String> = s
                .lines
                .iter()
                .filter(|l| l.current > 0)
                .map(|l| format!("{} x{}", l.sku, l.current))
                .collect();
            out.push_str(&format!(
                "    {} {} {}: {}\n",
                s.id,
                s.supplier,
                s.status,
                if lines.is_empty() {
                    "no lines".to_string()
                } else {
                    lines.join(", ")
                }
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The supplier workflow's operator surface (SPEC section 8): exceptions, supplier sheets and
// events, shipments and the outbox. `Operations` does the work for both the admin API and the
// CLI's store-direct path, so the two cannot drift apart; the CLI through the daemon receives
// these same types as JSON.

/// Why an operator request failed. The admin API answers each with its status (404, 400, 422,
/// 422, 503); the CLI prints the text. Store errors keep their cause for the CLI and the log,
/// and the API answers them with a plain "store unavailable".
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// No such exception, shipment, supplier or shop.
    #[error("{0}")]
    NotFound(String),
    /// The request itself is malformed; the text names the field.
    #[error("{0}")]
    BadInput(String),
    /// Well formed, but it does not fit the state of things (a decision the exception does not
    /// allow, an event about a shipment that is not the supplier's).
    #[error("{0}")]
    Unfit(String),
    /// A sheet was refused whole: nothing of it was recorded.
    #[error("{0}")]
    Refused(ImportRefusal),
    #[error("the store is unavailable: {0}")]
    Store(#[from] StoreError),
}

impl From<WorkflowError> for OpError {
    fn from(e: WorkflowError) -> Self {
        match e {
            WorkflowError::Invalid(text) => OpError::Unfit(text),
            // The workflow's "not found" is about the subject of an event or decision that
            // the caller named inside the request, so it is an unfit request, not a missing
            // resource; callers that look an id up in the path check it first.
            WorkflowError::NotFound(what) => OpError::Unfit(format!("unknown {what}")),
            WorkflowError::Store(e) => OpError::Store(e),
        }
    }
}

/// The problems of a refused sheet, row by row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRefusal {
    pub file_name: String,
    pub problems: Vec<ImportProblemView>,
}

/// One problem of a refused sheet; `row` is the spreadsheet row (the header is row 1), absent
/// for a problem with the whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportProblemView {
    pub row: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for ImportRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} refused, nothing recorded:", self.file_name)?;
        for p in &self.problems {
            match p.row {
                Some(row) => write!(f, "\n  row {row}: {}", p.message)?,
                None => write!(f, "\n  {}", p.message)?,
            }
        }
        Ok(())
    }
}

/// What a sheet import recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportSummary {
    pub supplier: String,
    pub file_name: String,
    pub recorded: usize,
    /// Events already recorded by an earlier import of the same rows.
    pub already_recorded: usize,
}

/// What recording one supplier event did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecorded {
    pub supplier: String,
    /// The event's id: as given, or the one generated for it.
    pub id: String,
    pub shipment_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `recorded`, or `already_recorded` for an id that was recorded before.
    pub result: String,
}

/// Which exceptions to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionFilter {
    /// Closed ones too.
    #[serde(default)]
    pub all: bool,
    /// Only this kind (its name, e.g. `stockout`).
    pub kind: Option<String>,
    /// Only this shop.
    pub shop: Option<String>,
}

/// A decision as the CLI and the admin API receive it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideRequest {
    /// `route`, `reroute`, `wait`, `cancel`, `approve`, `reject`, `intercepted`, `accept_loss`.
    pub decision: String,
    pub supplier: Option<String>,
    /// `YYYY-MM-DD`, for `wait`.
    pub until: Option<String>,
    pub note: Option<String>,
    /// Who decides; `operator` when absent.
    pub by: Option<String>,
}

/// What an exception is about, with the line's SKU when it names a line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectView {
    pub fulfillment_order_id: String,
    pub shipment_id: Option<String>,
    pub line_id: Option<String>,
    pub sku: Option<String>,
}

/// A decision taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionView {
    pub name: String,
    pub supplier: Option<String>,
    pub until: Option<String>,
    pub by: String,
    pub at: String,
    pub note: Option<String>,
}

/// The Shopify hold placed for an exception.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldView {
    /// Stable per exception, so a retried hold cannot be placed twice.
    pub handle: String,
    pub reason: String,
    pub fulfillment_order_id: String,
    /// `requested`, `placed`, `refused`, `release_requested` or `released`.
    pub state: String,
    /// Shopify's id of the hold, once known.
    pub hold_id: Option<String>,
    /// Shopify's message when it refused the hold.
    pub refused_reason: Option<String>,
}

/// How an exception ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedView {
    pub at: String,
    pub by: String,
    pub reason: String,
}

/// One line of `exceptions list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionRow {
    pub id: String,
    pub kind: String,
    pub shop: String,
    pub order_id: String,
    pub order_name: String,
    pub subject: SubjectView,
    pub summary: String,
    pub opened_at: String,
    pub open: bool,
    pub decision: Option<DecisionView>,
    pub hold: Option<HoldView>,
}

/// A shipment in brief, with its derived status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentBrief {
    pub id: String,
    pub supplier: String,
    pub status: String,
    pub lines: Vec<ShipmentLineView>,
}

/// One line of a shipment: as planned, and its current quantity after edits and decisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentLineView {
    pub line_id: String,
    pub fulfillment_order_line_id: String,
    pub sku: String,
    pub variant: Option<String>,
    pub planned: i64,
    pub current: i64,
}

/// Everything about one exception (`exceptions show`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionDetail {
    #[serde(flatten)]
    pub exception: ExceptionRow,
    /// The decisions it allows while open (none once closed).
    pub allowed_decisions: Vec<String>,
    pub opened_by: String,
    /// Decisions that ran out (a wait whose day came while the problem remained).
    pub past_decisions: Vec<DecisionView>,
    pub closed: Option<ClosedView>,
    /// The order's shipments with their derived status.
    pub shipments: Vec<ShipmentBrief>,
}

/// One evidence record of a shipment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceView {
    pub id: String,
    /// When it happened (for supplier events: as the supplier says).
    pub at: String,
    /// When shipgate recorded it.
    pub recorded_at: String,
    pub actor: String,
    pub source: String,
    pub kind: String,
    /// What it says, in a line.
    pub what: String,
    /// For supplier events: the event as docs/suppliers.md section 3 writes it.
    pub event: Option<serde_json::Value>,
}

/// An exception in brief.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionBrief {
    pub id: String,
    pub kind: String,
    pub open: bool,
    pub summary: String,
}

/// One outbound effect (`outbox list`, `shipments show`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectRow {
    pub id: u64,
    /// The idempotency key.
    pub key: String,
    pub shop: String,
    pub order_id: String,
    /// `supplier_submission`, `shopify_hold`, …
    pub action: String,
    /// The supplier, or the fulfillment order a hold is about.
    pub target: String,
    /// `pending`, `done`, `failed` or `superseded`.
    pub state: String,
    pub attempts: u32,
    /// For a pending effect: when it is tried next.
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
    /// How it ended: the remote reference and how we know, the refusal, or why it was not needed.
    pub outcome: Option<String>,
    pub created_at: String,
}

/// Everything about one shipment (`shipments show`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentDetail {
    pub id: String,
    pub supplier: String,
    pub shop: String,
    pub order_id: String,
    pub order_name: String,
    pub fulfillment_order_id: String,
    pub status: String,
    pub created_at: String,
    /// The current revision of the submission (0: none intended yet).
    pub revision: u32,
    pub lines: Vec<ShipmentLineView>,
    /// In the order things happened (then by id), as the status reads them.
    pub evidence: Vec<EvidenceView>,
    pub exceptions: Vec<ExceptionBrief>,
    pub effects: Vec<EffectRow>,
}

fn time_text(ms: i64) -> String {
    Timestamp::from_unix_ms(ms).text
}

fn decision_view(d: &Decided) -> DecisionView {
    let (supplier, until) = match &d.decision {
        Decision::RouteTo { supplier } => (Some(supplier.clone()), None),
        Decision::Reroute { supplier } => (supplier.clone(), None),
        Decision::WaitUntil { day } => (None, Some(day.to_string())),
        _ => (None, None),
    };
    DecisionView {
        name: d.decision.name().to_string(),
        supplier,
        until,
        by: d.by.to_string(),
        at: time_text(d.at_ms),
        note: d.note.clone(),
    }
}

fn hold_view(h: &HoldRecord) -> HoldView {
    let (state, hold_id, refused_reason) = match &h.state {
        HoldState::Requested => ("requested", None, None),
        HoldState::Placed { hold_id } => ("placed", Some(hold_id.clone()), None),
        HoldState::Refused { reason } => ("refused", None, Some(reason.clone())),
        HoldState::ReleaseRequested { hold_id } => ("release_requested", hold_id.clone(), None),
        HoldState::Released => ("released", None, None),
    };
    HoldView {
        handle: h.handle.clone(),
        reason: h.reason.clone(),
        fulfillment_order_id: h.fulfillment_order_id.clone(),
        state: state.to_string(),
        hold_id,
        refused_reason,
    }
}

fn closed_view(c: &Closed) -> ClosedView {
    ClosedView {
        at: time_text(c.at_ms),
        by: c.by.to_string(),
        reason: c.reason.clone(),
    }
}

fn line_views(shipment: &Shipment) -> Vec<ShipmentLineView> {
    let current = derive::current_lines(shipment);
    shipment
        .lines
        .iter()
        .map(|l| ShipmentLineView {
            line_id: l.line_item_id.clone(),
            fulfillment_order_line_id: l.fulfillment_order_line_id.clone(),
            sku: l.sku.clone(),
            variant: l.variant_title.clone(),
            planned: l.quantity,
            current: current
                .iter()
                .find(|(id, _)| *id == l.line_item_id)
                .map_or(0, |(_, q)| *q),
        })
        .collect()
}

/// The shipment's status, judged against the order's placing time from the mirror (carrier
/// events before it are not the parcel's); without a readable mirror, against none.
/// The shipment's status; `placed` is its order's placing time (`placed_of`), read once per case.
fn status_of(shipment: &Shipment, case: &OrderCase, placed: Option<i64>) -> ShipmentStatus {
    derive::status(shipment, &case.exceptions, placed)
}

/// When the case's order was placed, as the mirror says.
fn placed_of(workflow: &Workflow, case: &OrderCase) -> Option<i64> {
    let order = workflow
        .store()
        .order(&case.shop, &case.order_gid)
        .ok()
        .flatten();
    crate::workflow::plan::placed(order.as_ref())
}

fn source_text(source: &Source) -> String {
    match source {
        Source::SupplierWebhook { delivery_seq } => format!("webhook delivery {delivery_seq}"),
        Source::CsvImport { file } => format!("sheet {file}"),
        Source::Manual => "manual entry".into(),
        Source::Workflow => "workflow".into(),
        Source::Outbox { effect_id } => format!("outbox effect {effect_id}"),
        Source::TrackingWebhook { delivery_seq } => {
            format!("tracking webhook delivery {delivery_seq}")
        }
    }
}

fn opt(label: &str, value: &Option<String>) -> String {
    value
        .as_deref()
        .map(|v| format!(", {label} {v}"))
        .unwrap_or_default()
}

/// One line about a supplier event.
fn event_text(kind: &EventKind) -> String {
    match kind {
        EventKind::Received { supplier_ref } => format!("received{}", opt("ref", supplier_ref)),
        EventKind::Rejected { reason } => format!("rejected: {reason}"),
        EventKind::AddressIssue { reason } => format!("address issue: {reason}"),
        EventKind::LineConfirmed {
            line_id,
            sku,
            quantity,
            ship_by,
            ..
        } => format!(
            "confirmed {quantity} × {sku} for line {line_id}{}",
            opt("ship by", &ship_by.as_ref().map(|d| d.to_string()))
        ),
        EventKind::LineShort {
            line_id,
            quantity_short,
            restock_date,
            reason,
        } => format!(
            "short {quantity_short} of line {line_id}{}{}",
            opt("restock", &restock_date.as_ref().map(|d| d.to_string())),
            reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        EventKind::SubstituteOffered {
            line_id,
            offered_sku,
            differences,
            ..
        } => format!("offers {offered_sku} for line {line_id}: {differences}"),
        EventKind::CheckReported { check_json } => {
            let result = serde_json::from_str::<serde_json::Value>(check_json)
                .ok()
                .and_then(|v| v.get("result").and_then(|r| r.as_str()).map(String::from));
            format!(
                "physical check reported: {}",
                result.as_deref().unwrap_or("no result")
            )
        }
        EventKind::Packed { parcels } => format!(
            "packed in {} parcel(s): {}",
            parcels.len(),
            parcels
                .iter()
                .map(|p| p.parcel_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        EventKind::LabelCreated {
            carrier,
            tracking_number,
            parcel_id,
            ..
        } => format!(
            "label {carrier} {tracking_number}{}",
            opt("parcel", parcel_id)
        ),
        EventKind::HandedOver {
            carrier,
            tracking_number,
            parcel_id,
        } => format!(
            "handed over (a claim, not acceptance){}{}{}",
            opt("carrier", carrier),
            opt("tracking", tracking_number),
            opt("parcel", parcel_id)
        ),
        EventKind::Cancelled { reason } => format!(
            "cancelled{}",
            reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
    }
}

fn evidence_view(e: &Evidence) -> EvidenceView {
    let (kind, what, event) = match &e.kind {
        EvidenceKind::SubmissionIntended {
            revision,
            key,
            lines,
        } => (
            "submission_intended".to_string(),
            format!(
                "revision {revision} to be sent ({key}): {}",
                lines
                    .iter()
                    .map(|(line, q)| format!("{q} × line {line}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None,
        ),
        EvidenceKind::SubmissionDelivered {
            revision,
            supplier_ref,
        } => (
            "submission_delivered".to_string(),
            format!(
                "revision {revision} delivered{}",
                opt("supplier ref", supplier_ref)
            ),
            None,
        ),
        EvidenceKind::SubmissionRefused { revision, reason } => (
            "submission_refused".to_string(),
            format!("revision {revision} refused: {reason}"),
            None,
        ),
        EvidenceKind::Supplier(event) => (
            event.kind.name().to_string(),
            event_text(&event.kind),
            serde_json::from_slice(&event.to_json()).ok(),
        ),
        EvidenceKind::LineChanged {
            line_item_id,
            quantity,
            reason,
        } => (
            "line_changed".to_string(),
            format!("line {line_item_id} now {quantity}: {reason}"),
            None,
        ),
        EvidenceKind::CancelRequested { reason } => (
            "cancel_requested".to_string(),
            format!("cancellation asked of the supplier: {reason}"),
            None,
        ),
        EvidenceKind::SubstituteDecided {
            line_item_id,
            approve,
            ..
        } => (
            "substitute_decided".to_string(),
            format!(
                "substitute for line {line_item_id} {}",
                if *approve { "approved" } else { "rejected" }
            ),
            None,
        ),
        EvidenceKind::Abandoned { reason } => {
            ("abandoned".to_string(), format!("given up: {reason}"), None)
        }
        EvidenceKind::FulfillmentIntended { key, lines, .. } => (
            "fulfillment_intended".to_string(),
            format!(
                "the gate opened ({key}): {}",
                lines
                    .iter()
                    .map(|(l, q)| format!("{q} × {l}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None,
        ),
        EvidenceKind::FulfillmentRefused { key, reason } => (
            "fulfillment_refused".to_string(),
            format!("Shopify refused {key}: {reason}"),
            None,
        ),
        EvidenceKind::AddressCorrected { issue } => (
            "address_corrected".to_string(),
            format!("address corrected in Shopify (answering {issue}); the supplier gets it again"),
            None,
        ),
        EvidenceKind::FulfillmentWithdrawn { key, reason } => (
            "fulfillment_withdrawn".to_string(),
            format!("{key} withdrawn before it was sent: {reason}"),
            None,
        ),
        EvidenceKind::FulfillmentRefusalDecided { key, retry } => (
            "fulfillment_refusal_decided".to_string(),
            format!(
                "{key}: {}",
                if *retry {
                    "try again"
                } else {
                    "left to be fulfilled by hand"
                }
            ),
            None,
        ),
        EvidenceKind::FulfillmentCreated { fulfillment_id, .. } => (
            "fulfillment_created".to_string(),
            format!("fulfilled in Shopify as {fulfillment_id}"),
            None,
        ),
        EvidenceKind::ProgressIntended {
            status,
            happened_ms,
            fulfillment_id,
            ..
        } => (
            "progress_intended".to_string(),
            format!(
                "{status} ({}) to be posted on {fulfillment_id}",
                time_text(*happened_ms)
            ),
            None,
        ),
        EvidenceKind::TrackingUpdateIntended {
            fulfillment_id,
            numbers,
            ..
        } => (
            "tracking_update_intended".to_string(),
            format!(
                "the tracking of {fulfillment_id} to become {}",
                numbers.join(", ")
            ),
            None,
        ),
        EvidenceKind::ProgressSkipped { key, until_ms } => (
            "progress_skipped".to_string(),
            format!(
                "{key}: carrier progress until {} is not posted (recorded before progress was)",
                time_text(*until_ms)
            ),
            None,
        ),
        EvidenceKind::ParcelFollowUp {
            action,
            tracking_number,
        } => (
            "parcel_follow_up".to_string(),
            format!("{tracking_number}: {}", action.replace('_', " ")),
            None,
        ),
        EvidenceKind::DeviationApproved { check, reason } => (
            "deviation_approved".to_string(),
            format!("failed check {check} accepted as a deviation: {reason}"),
            None,
        ),
        EvidenceKind::Carrier(event) => (
            "carrier_event".to_string(),
            format!(
                "{} {}: {}{}{}",
                event.carrier,
                event.tracking_number,
                event.raw_text,
                event
                    .raw_code
                    .as_deref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default(),
                event
                    .location
                    .as_deref()
                    .map(|l| format!(", {l}"))
                    .unwrap_or_default()
            ),
            None,
        ),
    };
    EvidenceView {
        id: e.id.clone(),
        at: time_text(e.at_ms),
        recorded_at: time_text(e.recorded_ms),
        actor: e.actor.to_string(),
        source: source_text(&e.source),
        kind,
        what,
        event,
    }
}

fn effect_row(e: &Effect) -> EffectRow {
    let target = match &e.action {
        Action::Supplier { supplier, .. } => supplier.clone(),
        Action::PlaceHold {
            fulfillment_order_id,
            ..
        }
        | Action::ReleaseHold {
            fulfillment_order_id,
            ..
        }
        | Action::CreateFulfillment {
            fulfillment_order_id,
            ..
        } => fulfillment_order_id.clone(),
        Action::FulfillmentEvent { fulfillment_id, .. }
        | Action::UpdateTracking { fulfillment_id, .. } => fulfillment_id.clone(),
    };
    let (state, outcome) = match &e.state {
        EffectState::Pending => ("pending", None),
        EffectState::Done {
            reference, note, ..
        } => (
            "done",
            Some(match reference {
                Some(r) => format!("{note} (ref {r})"),
                None => note.clone(),
            }),
        ),
        EffectState::Failed { reason, .. } => ("failed", Some(reason.clone())),
        EffectState::Superseded { reason, .. } => ("superseded", Some(reason.clone())),
    };
    EffectRow {
        id: e.id,
        key: e.key.clone(),
        shop: e.shop.clone(),
        order_id: e.order_gid.clone(),
        action: e.action.name().to_string(),
        target,
        state: state.to_string(),
        attempts: e.attempts,
        next_attempt_at: e.is_pending().then(|| time_text(e.next_attempt_ms)),
        last_error: e.last_error.clone(),
        outcome,
        created_at: time_text(e.created_ms),
    }
}

/// Checks an operator's name (`--by`, `by`): `operator` when absent.
fn operator(by: Option<&str>) -> Result<Actor, OpError> {
    let name = by.map(str::trim).unwrap_or("operator");
    if name.is_empty() {
        return Err(OpError::BadInput("`by` is empty".into()));
    }
    if name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(OpError::BadInput(
            "`by` must be a name of at most 100 characters on one line".into(),
        ));
    }
    Ok(Actor::Operator(name.to_string()))
}

/// Makes a manually entered event complete: an event without `id` gets
/// `manual-<unix ms>-<8 hex digits>`, and one without `occurred_at` happened now. A generated
/// id is new on every call, so retrying a command that relied on it records the event twice;
/// give an `id` to make retries safe.
pub fn complete_manual_event(body: &[u8], now_ms: i64) -> Result<Vec<u8>, OpError> {
    let mut value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| OpError::BadInput(format!("the event is not JSON: {e}")))?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| OpError::BadInput("the event is not a JSON object".into()))?;
    if object.get("id").is_none_or(serde_json::Value::is_null) {
        let random: u32 = rand::random();
        object.insert("id".into(), format!("manual-{now_ms}-{random:08x}").into());
    }
    if object
        .get("occurred_at")
        .is_none_or(serde_json::Value::is_null)
    {
        object.insert("occurred_at".into(), time_text(now_ms).into());
    }
    Ok(serde_json::to_vec(&value).expect("a JSON value serializes"))
}

/// The supplier workflow as operators see it: the same answers through the admin API and on
/// the store directly.
#[derive(Clone)]
pub struct Operations {
    workflow: Workflow,
    shops: Arc<Vec<String>>,
    suppliers: Arc<Vec<(String, AdapterKind)>>,
}

impl std::fmt::Debug for Operations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operations")
            .field("shops", &self.shops)
            .field("suppliers", &self.suppliers)
            .finish_non_exhaustive()
    }
}

impl Operations {
    /// Operations over a workflow, with the shops and suppliers of the configuration.
    pub fn new(workflow: Workflow, config: &Config) -> Operations {
        Operations {
            workflow,
            shops: Arc::new(config.shops.iter().map(|s| s.domain.clone()).collect()),
            suppliers: Arc::new(
                config
                    .suppliers
                    .iter()
                    .map(|s| (s.name.clone(), s.adapter_kind()))
                    .collect(),
            ),
        }
    }

    /// The workflow.
    pub fn workflow(&self) -> &Workflow {
        &self.workflow
    }

    fn store(&self) -> &Store {
        self.workflow.store()
    }

    fn supplier(&self, name: &str) -> Result<AdapterKind, OpError> {
        self.suppliers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, kind)| *kind)
            .ok_or_else(|| OpError::NotFound(format!("supplier {name} is not configured")))
    }

    fn exception_row(&self, case: &OrderCase, e: &Exception) -> Result<ExceptionRow, OpError> {
        let line_id = e.subject.line_item_id.clone();
        let mut sku = line_id.as_ref().and_then(|line| {
            case.shipments
                .iter()
                .flat_map(|s| &s.lines)
                .find(|l| l.line_item_id == *line)
                .map(|l| l.sku.clone())
        });
        // A line no shipment took (an unmapped SKU) is only in the mirror.
        if sku.is_none()
            && let Some(line) = &line_id
            && let Some(order) = self.store().order(&case.shop, &case.order_gid)?
        {
            sku = order
                .line_items
                .iter()
                .find(|l| l.id == *line)
                .and_then(|l| l.sku.clone());
        }
        Ok(ExceptionRow {
            id: e.id.clone(),
            kind: e.kind.name().to_string(),
            shop: case.shop.clone(),
            order_id: case.order_gid.clone(),
            order_name: case.order_name.clone(),
            subject: SubjectView {
                fulfillment_order_id: e.subject.fulfillment_order_id.clone(),
                shipment_id: e.subject.shipment_id.clone(),
                line_id,
                sku,
            },
            summary: e.summary.clone(),
            opened_at: time_text(e.opened_ms),
            open: e.is_open(),
            decision: e.decision.as_ref().map(decision_view),
            hold: e.hold.as_ref().map(hold_view),
        })
    }

    /// The exceptions that match, oldest first: the open ones, or all with `filter.all`.
    pub fn list_exceptions(&self, filter: &ExceptionFilter) -> Result<Vec<ExceptionRow>, OpError> {
        let kind = match filter.kind.as_deref() {
            None => None,
            Some(name) => Some(
                ExceptionKind::ALL
                    .into_iter()
                    .find(|k| k.name() == name)
                    .ok_or_else(|| {
                        OpError::BadInput(format!(
                            "`kind`: no exception kind `{name}` ({})",
                            ExceptionKind::ALL.map(|k| k.name()).join(", ")
                        ))
                    })?,
            ),
        };
        let shop = match filter.shop.as_deref() {
            None => None,
            Some(s) => {
                let s = s.to_ascii_lowercase();
                if !self.shops.contains(&s) {
                    return Err(OpError::NotFound(format!("shop {s} is not configured")));
                }
                Some(s)
            }
        };
        let cases: Vec<OrderCase> = if filter.all {
            self.store().cases().collect::<Result<_, _>>()?
        } else {
            self.store().cases_with_open_exceptions()?
        };
        let mut rows: Vec<(i64, ExceptionRow)> = Vec::new();
        for case in cases
            .iter()
            .filter(|c| shop.as_ref().is_none_or(|s| c.shop == *s))
        {
            for e in case
                .exceptions
                .iter()
                .filter(|e| (filter.all || e.is_open()) && kind.is_none_or(|k| e.kind == k))
            {
                rows.push((e.opened_ms, self.exception_row(case, e)?));
            }
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
        Ok(rows.into_iter().map(|(_, row)| row).collect())
    }

    fn exception_detail(&self, case: &OrderCase, id: &str) -> Result<ExceptionDetail, OpError> {
        let e = case
            .exception(id)
            .ok_or_else(|| OpError::NotFound(format!("no exception {id}")))?;
        let placed = placed_of(&self.workflow, case);
        Ok(ExceptionDetail {
            exception: self.exception_row(case, e)?,
            allowed_decisions: if e.is_open() {
                e.kind.decisions().iter().map(|d| d.to_string()).collect()
            } else {
                Vec::new()
            },
            opened_by: e.opened_by.to_string(),
            past_decisions: e.past_decisions.iter().map(decision_view).collect(),
            closed: e.closed.as_ref().map(closed_view),
            shipments: case
                .shipments
                .iter()
                .map(|s| ShipmentBrief {
                    id: s.id.clone(),
                    supplier: s.supplier.clone(),
                    status: status_of(s, case, placed).name().to_string(),
                    lines: line_views(s),
                })
                .collect(),
        })
    }

    /// One exception in full.
    pub fn show_exception(&self, id: &str) -> Result<ExceptionDetail, OpError> {
        let case = self
            .store()
            .case_of(id)?
            .ok_or_else(|| OpError::NotFound(format!("no exception {id}")))?;
        self.exception_detail(&case, id)
    }

    /// Takes a decision on an open exception; answers the exception as it stands after it.
    pub async fn decide(
        &self,
        id: &str,
        request: &DecideRequest,
    ) -> Result<ExceptionDetail, OpError> {
        let decision = Decision::parse(
            request.decision.trim(),
            request.supplier.as_deref(),
            request.until.as_deref(),
        )
        .map_err(OpError::BadInput)?;
        let by = operator(request.by.as_deref())?;
        let note = request
            .note
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        // An id that names a shipment (or nothing) is not an exception to decide on.
        match self.store().case_of(id)? {
            Some(case) if case.exception(id).is_some() => {}
            _ => return Err(OpError::NotFound(format!("no exception {id}"))),
        }
        let case = self.workflow.decide(id, decision, by, note).await?;
        self.exception_detail(&case, id)
    }

    /// The CSV sheet of the shipments waiting for a supplier (docs/suppliers.md section 4).
    pub fn export(&self, supplier: &str) -> Result<String, OpError> {
        self.supplier(supplier)?;
        let pending = self.workflow.pending_for(supplier)?;
        Ok(crate::suppliers::csv::export(&pending))
    }

    /// Imports a supplier's sheet, whole or not at all.
    pub async fn import(
        &self,
        supplier: &str,
        file_name: &str,
        bytes: &[u8],
        by: Option<&str>,
    ) -> Result<ImportSummary, OpError> {
        self.supplier(supplier)?;
        let file_name = file_name.trim();
        if file_name.is_empty() {
            return Err(OpError::BadInput("`file_name` is empty".into()));
        }
        let by = operator(by)?;
        match self
            .workflow
            .import_sheet(supplier, file_name, bytes, by)
            .await
        {
            Ok(report) => Ok(ImportSummary {
                supplier: supplier.to_string(),
                file_name: file_name.to_string(),
                recorded: report.recorded,
                already_recorded: report.already_recorded,
            }),
            Err(ImportFailure::Rows(errors)) => Err(OpError::Refused(ImportRefusal {
                file_name: errors.file_name.clone(),
                problems: errors
                    .problems
                    .iter()
                    .map(|p| ImportProblemView {
                        row: p.row,
                        message: p.message.clone(),
                    })
                    .collect(),
            })),
            Err(ImportFailure::Workflow(e)) => Err(e.into()),
        }
    }

    /// Records one supplier event entered by an operator (see [`complete_manual_event`] for
    /// what is filled in).
    pub async fn record_event(
        &self,
        supplier: &str,
        body: &[u8],
        by: Option<&str>,
    ) -> Result<EventRecorded, OpError> {
        self.supplier(supplier)?;
        let by = operator(by)?;
        let body = complete_manual_event(body, self.workflow.clock().now_ms())?;
        let event = SupplierEvent::from_json(&body).map_err(|e| OpError::BadInput(e.0))?;
        self.workflow
            .validate_event(supplier, &event)
            .map_err(|e| match e {
                crate::workflow::WorkflowError::Store(e) => OpError::from(e),
                other => OpError::Unfit(other.to_string()),
            })?;
        let (id, shipment_id, kind) = (
            event.id.clone(),
            event.shipment_id.clone(),
            event.kind.name().to_string(),
        );
        let result = match self.workflow.record_event(supplier, event, by).await? {
            EventApplied::Recorded => "recorded",
            EventApplied::AlreadyRecorded => "already_recorded",
        };
        Ok(EventRecorded {
            supplier: supplier.to_string(),
            id,
            shipment_id,
            kind,
            result: result.to_string(),
        })
    }

    /// One shipment in full: lines, evidence, status, exceptions and effects.
    pub fn show_shipment(&self, id: &str) -> Result<ShipmentDetail, OpError> {
        let not_found = || OpError::NotFound(format!("no shipment {id}"));
        let case = self.store().case_of(id)?.ok_or_else(not_found)?;
        let shipment = case.shipment(id).ok_or_else(not_found)?;
        let mut evidence: Vec<&Evidence> = shipment.evidence.iter().collect();
        evidence.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
        let exceptions: Vec<&Exception> = case
            .exceptions
            .iter()
            .filter(|e| e.subject.shipment_id.as_deref() == Some(id))
            .collect();
        let mut effects = Vec::new();
        for effect in self.store().effects() {
            let effect = effect?;
            if effect.shop != case.shop || effect.order_gid != case.order_gid {
                continue;
            }
            let about = match &effect.action {
                Action::Supplier { message, .. } => message.shipment_id == id,
                Action::PlaceHold { exception_id, .. }
                | Action::ReleaseHold { exception_id, .. } => {
                    exceptions.iter().any(|e| e.id == *exception_id)
                }
                Action::CreateFulfillment { shipment_id, .. }
                | Action::FulfillmentEvent { shipment_id, .. }
                | Action::UpdateTracking { shipment_id, .. } => *shipment_id == id,
            };
            if about {
                effects.push(effect_row(&effect));
            }
        }
        Ok(ShipmentDetail {
            id: shipment.id.clone(),
            supplier: shipment.supplier.clone(),
            shop: case.shop.clone(),
            order_id: case.order_gid.clone(),
            order_name: case.order_name.clone(),
            fulfillment_order_id: shipment.fulfillment_order_id.clone(),
            status: status_of(shipment, &case, placed_of(&self.workflow, &case))
                .name()
                .to_string(),
            created_at: time_text(shipment.created_ms),
            revision: derive::revision(shipment),
            lines: line_views(shipment),
            evidence: evidence.into_iter().map(evidence_view).collect(),
            exceptions: exceptions
                .into_iter()
                .map(|e| ExceptionBrief {
                    id: e.id.clone(),
                    kind: e.kind.name().to_string(),
                    open: e.is_open(),
                    summary: e.summary.clone(),
                })
                .collect(),
            effects,
        })
    }

    /// The outbox, newest first, at most `limit`: every effect, or those that failed for good.
    pub fn outbox(&self, failed: bool, limit: usize) -> Result<Vec<EffectRow>, OpError> {
        // Only the newest `limit` are kept while reading, so a long history costs no memory.
        let mut newest: std::collections::VecDeque<Effect> = std::collections::VecDeque::new();
        for effect in self.store().effects() {
            let effect = effect?;
            if failed && !matches!(effect.state, EffectState::Failed { .. }) {
                continue;
            }
            newest.push_back(effect);
            if newest.len() > limit {
                newest.pop_front();
            }
        }
        Ok(newest.iter().rev().map(effect_row).collect())
    }
}

/// How long ago, for people: `45s`, `12m`, `5h`, `3d`.
fn age(at: &str, now_ms: i64) -> String {
    let Ok(at) = Timestamp::parse(at) else {
        return "?".into();
    };
    let secs = (now_ms - at.unix_ms).max(0) / 1000;
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn decision_text(d: &DecisionView) -> String {
    let mut out = d.name.clone();
    if let Some(s) = &d.supplier {
        out.push_str(&format!(" to {s}"));
    }
    if let Some(u) = &d.until {
        out.push_str(&format!(" until {u}"));
    }
    out
}

fn subject_text(s: &SubjectView) -> String {
    // A line no shipment took yet (an unmapped SKU) is named by its SKU alone.
    let head = s.shipment_id.as_deref().unwrap_or("unrouted");
    match (&s.sku, &s.line_id) {
        (Some(sku), _) => format!("{head} {sku}"),
        (None, Some(line)) => format!("{head} line {}", numeric_id(line)),
        (None, None) => head.to_string(),
    }
}

/// The number at the end of a Shopify gid, for narrow columns.
fn numeric_id(gid: &str) -> &str {
    gid.rsplit('/').next().unwrap_or(gid)
}

/// A Shopify target by its kind and number: `FO 12` for a fulfillment order, `F 34` for a
/// fulfillment, the id itself otherwise.
fn target_text(gid: &str) -> String {
    let kind = gid.trim_start_matches("gid://shopify/").split('/').next();
    match kind {
        Some("FulfillmentOrder") => format!("FO {}", numeric_id(gid)),
        Some("Fulfillment") => format!("F {}", numeric_id(gid)),
        _ => gid.to_string(),
    }
}

fn shop_text(shop: &str) -> &str {
    shop.strip_suffix(".myshopify.com").unwrap_or(shop)
}

/// Renders `exceptions list` for people; `now_ms` dates the ages.
pub fn exceptions_table(rows: &[ExceptionRow], now_ms: i64) -> String {
    let mut table = Table::new(&[
        "ID", "KIND", "SHOP", "ORDER", "SUBJECT", ">AGE", "DECISION", "HOLD", "SUMMARY",
    ]);
    for r in rows {
        let kind = if r.open {
            r.kind.clone()
        } else {
            format!("{} (closed)", r.kind)
        };
        table.row(vec![
            r.id.clone(),
            kind,
            shop_text(&r.shop).to_string(),
            r.order_name.clone(),
            subject_text(&r.subject),
            age(&r.opened_at, now_ms),
            r.decision
                .as_ref()
                .map(decision_text)
                .unwrap_or_else(|| "-".into()),
            r.hold
                .as_ref()
                .map(|h| h.state.clone())
                .unwrap_or_else(|| "-".into()),
            r.summary.clone(),
        ]);
    }
    let mut out = table.render();
    out.push_str(&format!("{} exception(s)\n", rows.len()));
    out
}

fn decision_line(d: &DecisionView) -> String {
    format!(
        "{} by {} at {}{}",
        decision_text(d),
        d.by,
        d.at,
        d.note
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default()
    )
}

fn lines_text(out: &mut String, indent: &str, lines: &[ShipmentLineView]) {
    for l in lines {
        let quantity = if l.current == l.planned {
            format!("x{}", l.current)
        } else {
            format!("x{} (planned {})", l.current, l.planned)
        };
        out.push_str(&format!(
            "{indent}{} {} {}{}\n",
            l.line_id,
            l.sku,
            quantity,
            l.variant
                .as_deref()
                .map(|v| format!(" {v}"))
                .unwrap_or_default()
        ));
    }
}

/// Renders `exceptions show` for people.
pub fn exception_text(d: &ExceptionDetail) -> String {
    let e = &d.exception;
    let mut out = format!(
        "{} {} ({})\n  order {} {} ({})\n  subject: fulfillment order {}",
        e.id,
        e.kind,
        if e.open { "open" } else { "closed" },
        e.order_name,
        e.order_id,
        e.shop,
        e.subject.fulfillment_order_id
    );
    if let Some(s) = &e.subject.shipment_id {
        out.push_str(&format!(", shipment {s}"));
    }
    if let Some(l) = &e.subject.line_id {
        out.push_str(&format!(", line {l}"));
    }
    if let Some(sku) = &e.subject.sku {
        out.push_str(&format!(" ({sku})"));
    }
    out.push_str(&format!(
        "\n  {}\n  opened {} by {}\n",
        e.summary, e.opened_at, d.opened_by
    ));
    if !d.allowed_decisions.is_empty() {
        out.push_str(&format!("  allows: {}\n", d.allowed_decisions.join(", ")));
    }
    match &e.decision {
        Some(dec) => out.push_str(&format!("  decision: {}\n", decision_line(dec))),
        None => out.push_str("  decision: none yet\n"),
    }
    for past in &d.past_decisions {
        out.push_str(&format!("  earlier decision: {}\n", decision_line(past)));
    }
    if let Some(c) = &d.closed {
        out.push_str(&format!("  closed {} by {}: {}\n", c.at, c.by, c.reason));
    }
    match &e.hold {
        Some(h) => out.push_str(&format!(
            "  hold: {} {} ({}){}{}\n",
            h.handle,
            h.state,
            h.reason,
            h.hold_id
                .as_deref()
                .map(|id| format!(", Shopify hold {id}"))
                .unwrap_or_default(),
            h.refused_reason
                .as_deref()
                .map(|r| format!(", refused: {r}"))
                .unwrap_or_default()
        )),
        None => out.push_str("  hold: none\n"),
    }
    if d.shipments.is_empty() {
        out.push_str("  shipments: none\n");
    } else {
        out.push_str("  shipments:\n");
        for s in &d.shipments {
            out.push_str(&format!("    {} {} {}\n", s.id, s.supplier, s.status));
            lines_text(&mut out, "      ", &s.lines);
        }
    }
    out
}

fn effect_line(e: &EffectRow) -> String {
    let mut out = format!(
        "{} {} {} {} attempts {}",
        e.key, e.action, e.target, e.state, e.attempts
    );
    if let Some(next) = &e.next_attempt_at {
        out.push_str(&format!(", next {next}"));
    }
    if let Some(outcome) = &e.outcome {
        out.push_str(&format!(", {outcome}"));
    }
    if let Some(err) = &e.last_error {
        out.push_str(&format!(", last error: {err}"));
    }
    out
}

/// Renders `shipments show` for people.
pub fn shipment_text(s: &ShipmentDetail) -> String {
    let mut out = format!(
        "{} {} {}\n  order {} {} ({})\n  fulfillment order {}; created {}; revision {}\n  lines:\n",
        s.id,
        s.supplier,
        s.status,
        s.order_name,
        s.order_id,
        s.shop,
        s.fulfillment_order_id,
        s.created_at,
        s.revision
    );
    lines_text(&mut out, "    ", &s.lines);
    out.push_str("  evidence:\n");
    for e in &s.evidence {
        out.push_str(&format!(
            "    {} {} via {}: {}\n",
            e.at, e.actor, e.source, e.what
        ));
    }
    if !s.exceptions.is_empty() {
        out.push_str("  exceptions:\n");
        for e in &s.exceptions {
            out.push_str(&format!(
                "    {} {} ({}): {}\n",
                e.id,
                e.kind,
                if e.open { "open" } else { "closed" },
                e.summary
            ));
        }
    }
    out.push_str("  effects:\n");
    for e in &s.effects {
        out.push_str(&format!("    {}\n", effect_line(e)));
    }
    out
}

/// Renders `outbox list` for people.
pub fn outbox_table(rows: &[EffectRow]) -> String {
    let mut table = Table::new(&[
        ">ID",
        "ACTION",
        "TARGET",
        "STATE",
        ">TRY",
        "NEXT",
        "KEY / LAST ERROR",
    ]);
    for e in rows {
        let target = if e.action.starts_with("supplier") {
            e.target.clone()
        } else {
            target_text(&e.target)
        };
        table.row(vec![
            e.id.to_string(),
            e.action.clone(),
            target,
            e.state.clone(),
            e.attempts.to_string(),
            e.next_attempt_at.as_deref().unwrap_or("-").to_string(),
            format!(
                "{}{}",
                e.key,
                e.last_error
                    .as_deref()
                    .or(if e.state == "failed" {
                        e.outcome.as_deref()
                    } else {
                        None
                    })
                    .map(|err| format!(" ({err})"))
                    .unwrap_or_default()
            ),
        ]);
    }
    let mut out = table.render();
    out.push_str(&format!("{} effect(s)\n", rows.len()));
    out
}

// Physical evidence and manual carrier scans entered by an operator (`check record`,
// `pack record`, `parcel label`, `parcel accept`). The evidence commands build the supplier
// event an agent would have sent and record it through the same door (`validate_event`, then
// `record_event`), so a check is refused for the same reasons whichever way it comes; the
// manual scan goes through `apply_tracking` and the acceptance latch like a provider's.

/// A physical check record entered by an operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// The check record (SPEC 3.1): the `check` object of docs/suppliers.md section 3.
    pub check: serde_json::Value,
    /// Who records it; `operator` when absent.
    pub by: Option<String>,
}

/// One line of a parcel as an operator names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParcelLineRequest {
    /// The line item: its gid, its numeric id, or the SKU when only one line has it.
    pub line_id: String,
    pub quantity: i64,
}

/// One parcel as an operator packed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParcelRequest {
    pub parcel_id: String,
    pub lines: Vec<ParcelLineRequest>,
    #[serde(default)]
    pub weight_grams: Option<i64>,
    /// Length, width, height.
    #[serde(default)]
    pub dimensions_cm: Option<[i64; 3]>,
    /// `sha256:<64 hex>`, optionally `=<URL or file name>`.
    #[serde(default)]
    pub photos: Vec<String>,
}

/// A packing record entered by an operator: the parcels and what is in each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackRequest {
    pub parcels: Vec<ParcelRequest>,
    pub by: Option<String>,
}

/// A label entered by an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelRequest {
    /// The parcel it is for (may be left out when the shipment has one parcel).
    pub parcel_id: Option<String>,
    pub carrier: String,
    pub tracking_number: String,
    pub tracking_url: Option<String>,
    pub by: Option<String>,
}

/// A carrier's acceptance recorded by hand, with its evidence (SPEC 7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptRequest {
    /// When the carrier took the parcel: RFC 3339 with an offset.
    pub at: String,
    pub location: Option<String>,
    /// At least one `sha256:<64 hex>[=<URL or file name>]` of the receipt or a photo.
    #[serde(default)]
    pub evidence: Vec<String>,
    /// What shows the carrier has the parcel.
    #[serde(default)]
    pub note: String,
    /// The carrier; by default the one the label names.
    pub carrier: Option<String>,
    pub by: Option<String>,
}

/// What recording a check, a packing or a label did, and where the shipment stands after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRecorded {
    #[serde(flatten)]
    pub event: EventRecorded,
    /// The shipment's derived status after it.
    pub status: String,
    /// The open exceptions about the shipment after it (a failed check opens one).
    pub open_exceptions: Vec<ExceptionBrief>,
}

/// A shipment a manual scan was recorded on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanShipment {
    pub shipment_id: String,
    /// Its derived status after the scan.
    pub status: String,
    /// Whether the carrier's acceptance of this number is established (by this scan or an
    /// earlier event).
    pub accepted: bool,
    /// Why it counts (the latch's account), or why this scan does not.
    pub why: String,
}

/// What recording a manual carrier scan did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRecorded {
    pub tracking_number: String,
    pub event_id: String,
    /// `recorded`, `already_recorded`, or `waiting`: no label carries the number yet, and
    /// the scan is kept until one does.
    pub result: String,
    /// The evidence the scan rests on, as recorded.
    pub evidence: Vec<String>,
    pub shipments: Vec<ScanShipment>,
}

/// A stable id for evidence an operator enters: the same record entered twice (a retried
/// command) is the same event, recorded once.
fn manual_event_id(kind: &str, shipment_id: &str, content: &serde_json::Value) -> String {
    use sha2::Digest as _;
    let mut digest = sha2::Sha256::new();
    digest.update(shipment_id.as_bytes());
    digest.update([0]);
    digest.update(content.to_string().as_bytes());
    format!("manual-{kind}-{}", hex::encode(&digest.finalize()[..12]))
}

/// Finds the shipment line an operator means: by gid, numeric id, or a SKU only one line has.
fn resolve_line(shipment: &Shipment, named: &str) -> Result<String, OpError> {
    let named = named.trim();
    if let Some(line) = shipment
        .lines
        .iter()
        .find(|l| l.line_item_id == named || l.line_item_id.rsplit('/').next() == Some(named))
    {
        return Ok(line.line_item_id.clone());
    }
    let by_sku: Vec<&str> = shipment
        .lines
        .iter()
        .filter(|l| l.sku == named)
        .map(|l| l.line_item_id.as_str())
        .collect();
    match by_sku.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(OpError::Unfit(format!(
            "line `{named}` is not in shipment {}; its lines are {}",
            shipment.id,
            shipment
                .lines
                .iter()
                .map(|l| format!("{} ({})", numeric_id(&l.line_item_id), l.sku))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        _ => Err(OpError::Unfit(format!(
            "SKU `{named}` is on several lines of shipment {}: name the line by its id",
            shipment.id
        ))),
    }
}

impl Operations {
    /// The case of a shipment named in a path, or 404.
    fn shipment_case(&self, id: &str) -> Result<OrderCase, OpError> {
        let not_found = || OpError::NotFound(format!("no shipment {id}"));
        let case = self.store().case_of(id)?.ok_or_else(not_found)?;
        case.shipment(id).ok_or_else(not_found)?;
        Ok(case)
    }

    /// Records an event of `kind` (its fields in `fields`) on a shipment for its own supplier,
    /// as an operator, through the supplier events' door.
    async fn record_for_shipment(
        &self,
        shipment_id: &str,
        kind: &str,
        fields: serde_json::Value,
        occurred_at: Option<String>,
        by: Option<&str>,
    ) -> Result<EvidenceRecorded, OpError> {
        let case = self.shipment_case(shipment_id)?;
        let supplier = case
            .shipment(shipment_id)
            .expect("checked by shipment_case")
            .supplier
            .clone();
        let by = operator(by)?;
        let mut body = fields;
        let object = body
            .as_object_mut()
            .expect("the event's fields are built as an object");
        object.insert("type".into(), kind.into());
        let short = match kind {
            "check_reported" => "check",
            "packed" => "pack",
            "label_created" => "label",
            other => other,
        };
        let id = manual_event_id(
            short,
            shipment_id,
            &serde_json::Value::Object(object.clone()),
        );
        object.insert("id".into(), id.into());
        object.insert("shipment_id".into(), shipment_id.into());
        let occurred_at = occurred_at.unwrap_or_else(|| time_text(self.workflow.clock().now_ms()));
        object.insert("occurred_at".into(), occurred_at.into());
        let event = SupplierEvent::from_json(body.to_string().as_bytes())
            .map_err(|e| OpError::Unfit(e.0))?;
        self.workflow
            .validate_event(&supplier, &event)
            .map_err(|e| match e {
                WorkflowError::Store(e) => OpError::from(e),
                other => OpError::Unfit(other.to_string()),
            })?;
        let (id, kind) = (event.id.clone(), event.kind.name().to_string());
        let result = match self.workflow.record_event(&supplier, event, by).await? {
            EventApplied::Recorded => "recorded",
            EventApplied::AlreadyRecorded => "already_recorded",
        };
        let case = self.shipment_case(shipment_id)?;
        let shipment = case
            .shipment(shipment_id)
            .expect("checked by shipment_case");
        Ok(EvidenceRecorded {
            event: EventRecorded {
                supplier,
                id,
                shipment_id: shipment_id.to_string(),
                kind,
                result: result.to_string(),
            },
            status: status_of(shipment, &case, placed_of(&self.workflow, &case))
                .name()
                .to_string(),
            open_exceptions: case
                .open_exceptions()
                .filter(|e| e.subject.shipment_id.as_deref() == Some(shipment_id))
                .map(|e| ExceptionBrief {
                    id: e.id.clone(),
                    kind: e.kind.name().to_string(),
                    open: true,
                    summary: e.summary.clone(),
                })
                .collect(),
        })
    }

    /// Records a physical check of a shipment (a `check_reported` event for its supplier). A
    /// check that does not fit the shipment is refused with every reason.
    pub async fn record_check(
        &self,
        shipment_id: &str,
        request: &CheckRequest,
    ) -> Result<EvidenceRecorded, OpError> {
        if !request.check.is_object() {
            return Err(OpError::BadInput(
                "`check` must be a JSON object: the check record of docs/suppliers.md section 3"
                    .into(),
            ));
        }
        // The check happened when it says it did, which is what evidence is ordered by.
        let occurred_at = request
            .check
            .get("checked_at")
            .and_then(serde_json::Value::as_str)
            .filter(|t| Timestamp::parse(t).is_ok())
            .map(str::to_string);
        self.record_for_shipment(
            shipment_id,
            "check_reported",
            serde_json::json!({ "check": request.check }),
            occurred_at,
            request.by.as_deref(),
        )
        .await
    }

    /// Records how a shipment was packed (a `packed` event for its supplier).
    pub async fn record_packing(
        &self,
        shipment_id: &str,
        request: &PackRequest,
    ) -> Result<EvidenceRecorded, OpError> {
        let case = self.shipment_case(shipment_id)?;
        let shipment = case
            .shipment(shipment_id)
            .expect("checked by shipment_case");
        let mut parcels = Vec::with_capacity(request.parcels.len());
        for parcel in &request.parcels {
            let mut lines = Vec::with_capacity(parcel.lines.len());
            for line in &parcel.lines {
                lines.push(serde_json::json!({
                    "line_id": resolve_line(shipment, &line.line_id)?,
                    "quantity": line.quantity,
                }));
            }
            if let Some(dimensions) = parcel.dimensions_cm
                && dimensions.iter().any(|d| *d <= 0)
            {
                return Err(OpError::Unfit(format!(
                    "parcel {}: dimensions must be positive centimetres, got {}x{}x{}",
                    parcel.parcel_id, dimensions[0], dimensions[1], dimensions[2]
                )));
            }
            let photos = parcel
                .photos
                .iter()
                .map(|p| crate::tracking::manual::evidence_reference(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| OpError::Unfit(format!("parcel {} photo: {e}", parcel.parcel_id)))?;
            parcels.push(serde_json::json!({
                "parcel_id": parcel.parcel_id,
                "lines": lines,
                "weight_grams": parcel.weight_grams,
                "dimensions_cm": parcel.dimensions_cm,
                "photos": photos,
            }));
        }
        self.record_for_shipment(
            shipment_id,
            "packed",
            serde_json::json!({ "parcels": parcels }),
            None,
            request.by.as_deref(),
        )
        .await
    }

    /// Records a parcel's label (a `label_created` event for its supplier). Carrier events
    /// that waited for this number are brought in.
    pub async fn record_label(
        &self,
        shipment_id: &str,
        request: &LabelRequest,
    ) -> Result<EvidenceRecorded, OpError> {
        crate::tracking::check_key_text(
            "tracking_number",
            &request.tracking_number,
            crate::tracking::MAX_TRACKING_NUMBER_LEN,
        )
        .map_err(|e| OpError::Unfit(e.0))?;
        self.record_for_shipment(
            shipment_id,
            "label_created",
            serde_json::json!({
                "parcel_id": request.parcel_id,
                "carrier": request.carrier,
                "tracking_number": request.tracking_number.trim(),
                "tracking_url": request.tracking_url,
            }),
            None,
            request.by.as_deref(),
        )
        .await
    }

    /// Records a carrier's acceptance by hand, with its evidence, as a manual carrier scan.
    /// The acceptance latch judges it like any scan; a number no label carries yet is kept
    /// until a label does.
    pub async fn accept_scan(
        &self,
        tracking_number: &str,
        request: &AcceptRequest,
    ) -> Result<ScanRecorded, OpError> {
        // The operator's name goes into the scan's own words: a carrier event's actor is
        // the carrier, as the workflow records every scan.
        let Actor::Operator(by) = operator(request.by.as_deref())? else {
            unreachable!("operator() names an operator")
        };
        let number = tracking_number.trim();
        let store = self.store();
        let shipments = store.shipments_with_tracking_number(number)?;
        let mut label_carrier = None;
        for id in &shipments {
            if let Some(case) = store.case_of(id)?
                && let Some(shipment) = case.shipment(id)
            {
                label_carrier = derive::labels(shipment)
                    .into_iter()
                    .find(|(_, _, n, _)| n == number)
                    .map(|(_, carrier, _, _)| carrier);
            }
            if label_carrier.is_some() {
                break;
            }
        }
        let carrier = request
            .carrier
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .or(label_carrier)
            .unwrap_or_else(|| "unknown".to_string());
        let event = crate::tracking::manual::ManualAcceptance {
            tracking_number: number.to_string(),
            at: request.at.clone(),
            location: request.location.clone(),
            carrier,
            evidence: request.evidence.clone(),
            note: request.note.clone(),
            by,
        }
        .to_event(self.workflow.clock().now_ms())
        .map_err(|e| OpError::Unfit(e.0))?;
        let recorded = self
            .workflow
            .apply_tracking(event.clone(), Source::Manual)
            .await?;
        // Read again: a label recorded meanwhile took the scan in.
        let shipments = store.shipments_with_tracking_number(number)?;
        let result = if recorded > 0 {
            "recorded"
        } else if shipments.is_empty() {
            "waiting"
        } else {
            "already_recorded"
        };
        let mut on = Vec::new();
        for id in &shipments {
            let Some(case) = store.case_of(id)? else {
                continue;
            };
            let Some(shipment) = case.shipment(id) else {
                continue;
            };
            let placed = placed_of(&self.workflow, &case);
            let acceptance = derive::acceptances(shipment, placed)
                .into_iter()
                .find(|(n, _)| n == number)
                .and_then(|(_, a)| a);
            let why = match &acceptance {
                Some(a) => a.why.clone(),
                None => {
                    let label_ms = shipment
                        .evidence
                        .iter()
                        .filter(|e| {
                            matches!(&e.kind, EvidenceKind::Supplier(ev)
                            if matches!(&ev.kind, EventKind::LabelCreated { tracking_number, .. }
                                if tracking_number == number))
                        })
                        .map(|e| e.at_ms)
                        .min();
                    match crate::tracking::acceptance::judge(&event, label_ms, placed) {
                        Err(reason) => format!("this scan does not count: {reason}"),
                        Ok(_) => "not accepted".to_string(),
                    }
                }
            };
            on.push(ScanShipment {
                shipment_id: id.clone(),
                status: status_of(shipment, &case, placed).name().to_string(),
                accepted: acceptance.is_some(),
                why,
            });
        }
        Ok(ScanRecorded {
            tracking_number: number.to_string(),
            event_id: event.event_id.clone(),
            result: result.to_string(),
            evidence: event.evidence.clone(),
            shipments: on,
        })
    }
}

/// The human form of a recorded check, packing or label.
pub fn evidence_recorded_text(r: &EvidenceRecorded) -> String {
    let what = if r.event.result == "recorded" {
        "recorded"
    } else {
        "already recorded"
    };
    let mut out = format!(
        "{what}: {} {} for {} (supplier {})\nshipment {} is now {}\n",
        r.event.kind,
        r.event.id,
        r.event.shipment_id,
        r.event.supplier,
        r.event.shipment_id,
        r.status
    );
    for e in &r.open_exceptions {
        out.push_str(&format!(
            "open exception {} {}: {}\n",
            e.id, e.kind, e.summary
        ));
    }
    out
}

/// The human form of a recorded manual scan.
pub fn scan_recorded_text(r: &ScanRecorded) -> String {
    let mut out = match r.result.as_str() {
        "waiting" => format!(
            "no label carries {} yet; the acceptance ({}) is kept until a label arrives\n",
            r.tracking_number, r.event_id
        ),
        "recorded" => format!(
            "recorded: manual acceptance {} of {}\n",
            r.event_id, r.tracking_number
        ),
        _ => format!(
            "already recorded: manual acceptance {} of {}\n",
            r.event_id, r.tracking_number
        ),
    };
    out.push_str(&format!("evidence: {}\n", r.evidence.join(", ")));
    for s in &r.shipments {
        out.push_str(&format!(
            "shipment {} is now {}: {}{}\n",
            s.shipment_id,
            s.status,
            if s.accepted {
                "accepted; "
            } else {
                "not accepted; "
            },
            s.why
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{Table, target_text};

    #[test]
    fn a_long_cell_widens_its_column_instead_of_pushing_the_next_ones_out_of_line() {
        let mut table = Table::new(&["ID", "KIND", ">AGE", "SUMMARY"]);
        let rows = [
            ["EX-1", "cancelled_after_submission (closed)", "3d", "short"],
            ["EX-0000000042", "stockout", "12h", "a longer summary"],
        ];
        for row in rows {
            table.row(row.iter().map(|c| c.to_string()).collect());
        }
        let text = table.render();
        let lines: Vec<&str> = text.lines().collect();
        let kind_at = lines[0].find("KIND").unwrap();
        let age_end = lines[0].find("AGE").unwrap() + "AGE".len();
        let summary_at = lines[0].find("SUMMARY").unwrap();
        for (line, row) in lines[1..].iter().zip(rows) {
            assert!(line[kind_at..].starts_with(row[1]), "{line}");
            assert_eq!(&line[age_end - row[2].len()..age_end], row[2], "{line}");
            assert_eq!(&line[summary_at..], row[3], "{line}");
        }
        assert!(
            !text.lines().any(|l| l.ends_with(' ')),
            "no trailing blanks"
        );
    }

    #[test]
    fn targets_are_named_by_their_kind() {
        assert_eq!(target_text("gid://shopify/FulfillmentOrder/12"), "FO 12");
        assert_eq!(target_text("gid://shopify/Fulfillment/34"), "F 34");
        assert_eq!(target_text("acme"), "acme");
    }
}
