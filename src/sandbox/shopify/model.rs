//! The sandbox shop's data: orders, their line items, fulfillment orders, holds and
//! fulfillments; the rules that change them; and their renderings as GraphQL objects (for the
//! resolvers) and as REST payloads (for webhooks).
//!
//! Every change goes through a method of [`State`] that validates first and changes nothing on
//! failure, bumps the order's `updatedAt` to `max(now, previous + 1 s)` so successive states of
//! one order are strictly ordered, and records the webhooks it causes in the outbox.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Value, json};

use super::{NewLine, NewOrder, OrderEdit, SandboxError};

/// Shopify's enum names for a fulfillment order's status.
pub(crate) mod fo_status {
    pub const OPEN: &str = "OPEN";
    pub const IN_PROGRESS: &str = "IN_PROGRESS";
    pub const ON_HOLD: &str = "ON_HOLD";
    pub const CLOSED: &str = "CLOSED";
}

/// `FulfillmentHoldReason` values.
pub(crate) const HOLD_REASONS: [&str; 8] = [
    "AWAITING_PAYMENT",
    "AWAITING_RETURN_ITEMS",
    "HIGH_RISK_OF_FRAUD",
    "INCORRECT_ADDRESS",
    "INVENTORY_OUT_OF_STOCK",
    "ONLINE_STORE_POST_PURCHASE_CROSS_SELL",
    "OTHER",
    "UNKNOWN_DELIVERY_DATE",
];

/// `OrderCancelReason` values.
pub(crate) const CANCEL_REASONS: [&str; 6] = [
    "CUSTOMER",
    "DECLINED",
    "FRAUD",
    "INVENTORY",
    "OTHER",
    "STAFF",
];

/// `FulfillmentEventStatus` values (CARRIER_PICKED_UP since 2025-10).
pub(crate) const EVENT_STATUSES: [&str; 11] = [
    "LABEL_PRINTED",
    "LABEL_PURCHASED",
    "CONFIRMED",
    "CARRIER_PICKED_UP",
    "IN_TRANSIT",
    "DELAYED",
    "OUT_FOR_DELIVERY",
    "READY_FOR_PICKUP",
    "ATTEMPTED_DELIVERY",
    "DELIVERED",
    "FAILURE",
];

/// An app can hold one fulfillment order at most this many times at once.
pub(crate) const MAX_APP_HOLDS: usize = 10;

/// A Shopify global id.
pub(crate) fn gid(kind: &str, id: u64) -> String {
    format!("gid://shopify/{kind}/{id}")
}

/// The kind and number of a global id, if it is one.
pub(crate) fn parse_gid(text: &str) -> Option<(&str, u64)> {
    let rest = text.strip_prefix("gid://shopify/")?;
    let (kind, id) = rest.split_once('/')?;
    // Shopify ids may carry a query string (`?…`), which does not change the object.
    let id = id.split('?').next()?;
    Some((kind, id.parse().ok()?))
}

/// The number of a global id of the given kind.
pub(crate) fn gid_of(text: &str, kind: &str) -> Option<u64> {
    parse_gid(text)
        .filter(|(k, _)| *k == kind)
        .map(|(_, id)| id)
}

/// RFC 3339 in UTC with second precision, as GraphQL renders DateTime.
pub(crate) fn fmt_secs(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// RFC 3339 in UTC with milliseconds (for `X-Shopify-Triggered-At`).
pub(crate) fn fmt_ms(ms: i64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// RFC 3339 in the shop's time zone, as REST payloads carry timestamps. The sandbox shop is in
/// New York without daylight saving (-05:00) so that consumers must compare instants, not text.
pub(crate) fn fmt_rest(secs: i64) -> String {
    let offset = time::UtcOffset::from_hms(-5, 0, 0).unwrap_or(time::UtcOffset::UTC);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .map(|t| t.to_offset(offset))
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Parses an RFC 3339 timestamp (or a bare date, midnight UTC) to Unix milliseconds.
pub(crate) fn parse_time_ms(text: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Some((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(text, &date_format) {
        return Some(d.midnight().assume_utc().unix_timestamp() * 1000);
    }
    // A timestamp without an offset is read as UTC.
    let local = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    time::PrimitiveDateTime::parse(text, &local)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp() * 1000)
}

/// A small deterministic generator (SplitMix64): every random choice of the sandbox comes from
/// the configured seed through one of these, so a run can be repeated exactly.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator for one purpose (`stream` keeps purposes independent of each other).
    pub fn new(seed: u64, stream: u64) -> Rng {
        Rng(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p` (always draws, so the sequence does not depend on `p`).
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// Shuffles in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }

    /// A version-4 UUID, the shape of Shopify's webhook ids.
    pub fn uuid(&mut self) -> String {
        let a = self.next_u64();
        let b = self.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0x0fff,
            ((b >> 48) & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    /// Hex characters, for tokens.
    pub fn hex(&mut self, chars: usize) -> String {
        let mut s = String::with_capacity(chars + 16);
        while s.len() < chars {
            s.push_str(&format!("{:016x}", self.next_u64()));
        }
        s.truncate(chars);
        s
    }
}

/// A line of an order.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub id: u64,
    pub sku: String,
    pub variant_id: u64,
    pub variant_title: Option<String>,
    pub quantity: i64,
    pub current_quantity: i64,
    pub location: usize,
}

/// A hold on a fulfillment order.
#[derive(Debug, Clone)]
pub(crate) struct Hold {
    pub id: u64,
    pub handle: String,
    pub reason: String,
    pub reason_notes: Option<String>,
    /// Placed by the app that calls the API (shipgate); otherwise by the merchant or another app.
    pub by_app: bool,
}

/// A line of a fulfillment order.
#[derive(Debug, Clone)]
pub(crate) struct FoLine {
    pub id: u64,
    pub line_id: u64,
    pub total: i64,
    pub remaining: i64,
}

/// The part of an order one location fulfils.
#[derive(Debug, Clone)]
pub(crate) struct FulfillmentOrder {
    pub id: u64,
    pub location: usize,
    pub status: &'static str,
    pub created_at: i64,
    pub updated_at: i64,
    pub holds: Vec<Hold>,
    pub lines: Vec<FoLine>,
}

impl FulfillmentOrder {
    /// Derives the status from holds and remaining quantities; CLOSED is final.
    fn refresh_status(&mut self) {
        if self.status == fo_status::CLOSED {
            return;
        }
        self.status = if self.lines.iter().all(|l| l.remaining == 0) {
            self.holds.clear();
            fo_status::CLOSED
        } else if !self.holds.is_empty() {
            fo_status::ON_HOLD
        } else if self.lines.iter().any(|l| l.remaining < l.total) {
            fo_status::IN_PROGRESS
        } else {
            fo_status::OPEN
        };
    }
}

/// Tracking of a fulfillment.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Tracking {
    pub company: Option<String>,
    pub number: Option<String>,
    pub url: Option<String>,
}

/// A carrier or merchant event on a fulfillment.
#[derive(Debug, Clone)]
pub(crate) struct FulfillmentEvent {
    pub id: u64,
    pub status: String,
    pub happened_at: i64,
    pub created_at: i64,
    pub estimated_delivery_at: Option<i64>,
    pub message: Option<String>,
    pub city: Option<String>,
    pub province: Option<String>,
    pub country: Option<String>,
    pub zip: Option<String>,
}

/// A quantity of one fulfillment order line shipped by a fulfillment.
#[derive(Debug, Clone)]
pub(crate) struct FulfilledLine {
    pub id: u64,
    pub line_id: u64,
    pub quantity: i64,
}

/// A fulfillment made in the shop.
#[derive(Debug, Clone)]
pub(crate) struct Fulfillment {
    pub id: u64,
    pub name: String,
    pub status: &'static str,
    pub display_status: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub location: usize,
    pub fo_ids: Vec<u64>,
    pub lines: Vec<FulfilledLine>,
    pub tracking: Vec<Tracking>,
    pub events: Vec<FulfillmentEvent>,
    pub notify_customer: bool,
    pub message: Option<String>,
    /// Made through the API by the app (shipgate); otherwise outside it.
    pub by_app: bool,
}

/// An order.
#[derive(Debug, Clone)]
pub(crate) struct Order {
    pub id: u64,
    pub name: String,
    pub email: Option<String>,
    pub note: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub cancelled_at: Option<i64>,
    pub cancel_reason: Option<String>,
    pub shipping_address: Option<Value>,
    pub lines: Vec<Line>,
    pub fos: Vec<FulfillmentOrder>,
    pub fulfillments: Vec<Fulfillment>,
    pub edits: u64,
}

impl Order {
    /// How much of a line was fulfilled.
    pub fn fulfilled(&self, line_id: u64) -> i64 {
        self.fulfillments
            .iter()
            .flat_map(|f| &f.lines)
            .filter(|l| l.line_id == line_id)
            .map(|l| l.quantity)
            .sum()
    }

    /// What of a line is still to fulfil.
    pub fn unfulfilled(&self, line: &Line) -> i64 {
        if self.cancelled_at.is_some() {
            return 0;
        }
        (line.current_quantity - self.fulfilled(line.id)).max(0)
    }

    /// `OrderDisplayFulfillmentStatus`.
    pub fn display_fulfillment_status(&self) -> &'static str {
        let fulfilled: i64 = self.lines.iter().map(|l| self.fulfilled(l.id)).sum();
        let unfulfilled: i64 = self.lines.iter().map(|l| self.unfulfilled(l)).sum();
        if fulfilled > 0 && unfulfilled == 0 {
            "FULFILLED"
        } else if fulfilled > 0 {
            "PARTIALLY_FULFILLED"
        } else if self.fos.iter().any(|fo| fo.status == fo_status::ON_HOLD) {
            "ON_HOLD"
        } else {
            "UNFULFILLED"
        }
    }

    /// The REST name of the fulfillment status (`null`, `partial`, `fulfilled`).
    fn rest_fulfillment_status(&self) -> Value {
        match self.display_fulfillment_status() {
            "FULFILLED" => json!("fulfilled"),
            "PARTIALLY_FULFILLED" => json!("partial"),
            _ => Value::Null,
        }
    }

    fn fo(&self, fo_id: u64) -> Option<&FulfillmentOrder> {
        self.fos.iter().find(|f| f.id == fo_id)
    }
}

/// A location of the shop.
#[derive(Debug, Clone)]
pub(crate) struct Location {
    pub id: u64,
    pub name: String,
}

/// A webhook subscription made through the API.
#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    pub id: u64,
    pub topic: String,
    pub uri: String,
    pub format: String,
    pub include_fields: Vec<String>,
    pub filter: Option<String>,
    pub created_at: i64,
}

/// A bulk query operation.
#[derive(Debug, Clone)]
pub(crate) struct BulkOp {
    pub id: u64,
    pub query: String,
    pub created_at: i64,
    pub completed_at: Option<i64>,
    /// How often a poll saw it running: it completes on the poll after the first.
    pub polls: u32,
    /// The JSONL, once the run went through every order.
    pub result: Option<std::sync::Arc<Vec<u8>>>,
    /// When the run finished, on the sandbox clock.
    pub computed_at: Option<i64>,
    pub object_count: u64,
    pub root_object_count: u64,
    /// The run's progress while it goes through the orders in chunks.
    pub job: Option<BulkJob>,
}

/// What a running bulk operation still has to do.
#[derive(Debug, Clone)]
pub(crate) struct BulkJob {
    pub filter: super::search::Filter,
    pub selection: Vec<super::engine::Selection>,
    /// The last order id written; the run goes on after it.
    pub after: Option<u64>,
    pub out: Vec<u8>,
    /// (objects, root objects) written so far.
    pub counts: (u64, u64),
}

/// A webhook caused by a change, waiting to be queued for delivery.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub topic: String,
    pub body: Vec<u8>,
    pub at_ms: i64,
}

/// The lines asked of one fulfillment order: (line gid, quantity), or None for all that remains.
pub(crate) type FoLines = Option<Vec<(String, i64)>>;

/// A fulfillment to create: fulfillment order ids with their lines (None = all remaining).
#[derive(Debug, Clone, Default)]
pub(crate) struct FulfillmentSpec {
    pub groups: Vec<(String, FoLines)>,
    pub tracking: Vec<Tracking>,
    pub notify_customer: bool,
    pub message: Option<String>,
    pub by_app: bool,
}

/// A `userErrors` entry: the input path and the message (and a code where the type has one).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UserError {
    pub field: Vec<String>,
    pub message: String,
    pub code: Option<&'static str>,
}

impl UserError {
    pub fn new(field: &[&str], message: impl Into<String>) -> UserError {
        UserError {
            field: field.iter().map(|s| s.to_string()).collect(),
            message: message.into(),
            code: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> UserError {
        self.code = Some(code);
        self
    }
}

/// The whole shop.
#[derive(Debug)]
pub(crate) struct State {
    pub shop: String,
    pub locations: Vec<Location>,
    next_id: u64,
    next_order_number: u64,
    pub orders: BTreeMap<u64, Order>,
    /// (updatedAt, id) of every order, for the UPDATED_AT sort.
    pub by_updated: BTreeSet<(i64, u64)>,
    /// (createdAt, id) of every order, for the CREATED_AT sort.
    pub by_created: BTreeSet<(i64, u64)>,
    fo_owner: HashMap<u64, u64>,
    fulfillment_owner: HashMap<u64, u64>,
    variants: HashMap<String, u64>,
    pub outbox: Vec<Outgoing>,
    /// Whether webhooks have anywhere to go: building payloads nobody receives would only
    /// slow down the creation of the 100k orders a benchmark needs.
    pub emitting: bool,
    pub bulk_ops: Vec<BulkOp>,
    /// Bulk operations whose run must go on in the background (too big for one step).
    pub bulk_started: Vec<u64>,
    pub subscriptions: Vec<Subscription>,
}

/// Ids start beyond 2^53 so that a consumer that parses them through a float breaks visibly.
const FIRST_ID: u64 = 9_007_199_254_741_001;

impl State {
    /// An empty shop with these locations.
    pub fn new(shop: &str, location_names: &[String]) -> State {
        let mut state = State {
            shop: shop.to_string(),
            locations: Vec::new(),
            next_id: FIRST_ID,
            next_order_number: 1001,
            orders: BTreeMap::new(),
            by_updated: BTreeSet::new(),
            by_created: BTreeSet::new(),
            fo_owner: HashMap::new(),
            fulfillment_owner: HashMap::new(),
            variants: HashMap::new(),
            outbox: Vec::new(),
            emitting: true,
            bulk_ops: Vec::new(),
            bulk_started: Vec::new(),
            subscriptions: Vec::new(),
        };
        for name in location_names {
            let id = state.new_id();
            state.locations.push(Location {
                id,
                name: name.clone(),
            });
        }
        state
    }

    /// A fresh numeric id.
    pub fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn variant_for(&mut self, sku: &str) -> u64 {
        if let Some(id) = self.variants.get(sku) {
            return *id;
        }
        let id = self.new_id();
        self.variants.insert(sku.to_string(), id);
        id
    }

    /// The order that holds a fulfillment order.
    pub fn order_of_fo(&self, fo_id: u64) -> Option<u64> {
        self.fo_owner.get(&fo_id).copied()
    }

    /// The order that holds a fulfillment.
    pub fn order_of_fulfillment(&self, fulfillment_id: u64) -> Option<u64> {
        self.fulfillment_owner.get(&fulfillment_id).copied()
    }

    /// The order with this gid (or bare number).
    pub fn order_id(&self, text: &str) -> Option<u64> {
        let id = gid_of(text, "Order").or_else(|| text.parse().ok())?;
        self.orders.contains_key(&id).then_some(id)
    }

    fn emit(&mut self, topic: &str, body: Value, now_ms: i64) {
        if !self.emitting {
            return;
        }
        self.outbox.push(Outgoing {
            topic: topic.to_string(),
            body: shopify_json(&body),
            at_ms: now_ms,
        });
    }

    /// Moves an order's updatedAt to `max(now, previous + 1 s)` and keeps the index in step.
    fn bump(&mut self, order_id: u64, now_ms: i64) {
        if let Some(order) = self.orders.get_mut(&order_id) {
            self.by_updated.remove(&(order.updated_at, order_id));
            order.updated_at = (now_ms / 1000).max(order.updated_at + 1);
            self.by_updated.insert((order.updated_at, order_id));
        }
    }

    fn emit_order(&mut self, order_id: u64, topics: &[&str], now_ms: i64) {
        if !self.emitting {
            return;
        }
        let Some(order) = self.orders.get(&order_id) else {
            return;
        };
        let body = self.order_rest(order);
        for topic in topics {
            self.emit(topic, body.clone(), now_ms);
        }
    }

    fn make_line(&mut self, line: &NewLine) -> Line {
        Line {
            id: self.new_id(),
            sku: line.sku.clone(),
            variant_id: self.variant_for(&line.sku),
            variant_title: line.variant_title.clone(),
            quantity: line.quantity,
            current_quantity: line.quantity,
            location: line.location,
        }
    }

    fn check_line(&self, line: &NewLine) -> Result<(), SandboxError> {
        if line.location >= self.locations.len() {
            return Err(SandboxError::Invalid(format!(
                "line {} names location {} but the shop has {}",
                line.sku,
                line.location,
                self.locations.len()
            )));
        }
        if line.quantity < 1 {
            return Err(SandboxError::Invalid(format!(
                "line {} has quantity {}",
                line.sku, line.quantity
            )));
        }
        Ok(())
    }

    /// Creates an order with one fulfillment order per distinct location; emits orders/create.
    pub fn create_order(&mut self, new: &NewOrder, now_ms: i64) -> Result<u64, SandboxError> {
        if new.lines.is_empty() {
            return Err(SandboxError::Invalid(
                "an order needs at least one line".into(),
            ));
        }
        for line in &new.lines {
            self.check_line(line)?;
        }
        let id = self.new_id();
        let number = self.next_order_number;
        self.next_order_number += 1;
        let now = now_ms / 1000;
        let lines: Vec<Line> = new.lines.iter().map(|l| self.make_line(l)).collect();
        let mut fos: Vec<FulfillmentOrder> = Vec::new();
        for line in &lines {
            let fo_line = FoLine {
                id: self.new_id(),
                line_id: line.id,
                total: line.quantity,
                remaining: line.quantity,
            };
            match fos.iter_mut().find(|fo| fo.location == line.location) {
                Some(fo) => fo.lines.push(fo_line),
                None => {
                    let fo_id = self.new_id();
                    fos.push(FulfillmentOrder {
                        id: fo_id,
                        location: line.location,
                        status: fo_status::OPEN,
                        created_at: now,
                        updated_at: now,
                        holds: Vec::new(),
                        lines: vec![fo_line],
                    });
                }
            }
        }
        for fo in &fos {
            self.fo_owner.insert(fo.id, id);
        }
        let order = Order {
            id,
            name: new.name.clone().unwrap_or_else(|| format!("#{number}")),
            email: new.customer_email.clone(),
            note: None,
            created_at: now,
            updated_at: now,
            cancelled_at: None,
            cancel_reason: None,
            shipping_address: new.shipping_address.clone(),
            lines,
            fos,
            fulfillments: Vec::new(),
            edits: 0,
        };
        self.by_updated.insert((now, id));
        self.by_created.insert((now, id));
        self.orders.insert(id, order);
        self.emit_order(id, &["orders/create"], now_ms);
        Ok(id)
    }

    /// Edits an order: a line's quantity, or a new line; emits orders/edited and orders/updated.
    pub fn edit_order(
        &mut self,
        order_id: u64,
        edit: &OrderEdit,
        now_ms: i64,
    ) -> Result<(), SandboxError> {
        let order = self
            .orders
            .get(&order_id)
            .ok_or_else(|| SandboxError::UnknownOrder(gid("Order", order_id)))?;
        if order.cancelled_at.is_some() {
            return Err(SandboxError::Invalid(
                "a cancelled order cannot be edited".into(),
            ));
        }
        let now = now_ms / 1000;
        // The shape of Shopify's orders/edited payload: what changed, not the order.
        let (additions, removals);
        match edit {
            OrderEdit::SetQuantity { sku, quantity } => {
                let line = order
                    .lines
                    .iter()
                    .find(|l| &l.sku == sku && l.current_quantity > 0)
                    .or_else(|| order.lines.iter().find(|l| &l.sku == sku))
                    .ok_or_else(|| {
                        SandboxError::Invalid(format!("the order has no line with SKU {sku}"))
                    })?;
                let fulfilled = order.fulfilled(line.id);
                if *quantity < fulfilled {
                    return Err(SandboxError::Invalid(format!(
                        "{fulfilled} of {sku} were fulfilled already; the quantity cannot go below that"
                    )));
                }
                let line_id = line.id;
                let location = line.location;
                let delta = quantity - line.current_quantity;
                (additions, removals) = if delta >= 0 {
                    (vec![json!({ "id": line_id, "delta": delta })], vec![])
                } else {
                    (vec![], vec![json!({ "id": line_id, "delta": -delta })])
                };
                let new_fo_line_id = self.new_id();
                let new_fo_id = self.new_id();
                let order = self.orders.get_mut(&order_id).expect("checked above");
                if let Some(line) = order.lines.iter_mut().find(|l| l.id == line_id) {
                    line.current_quantity = *quantity;
                }
                let mut left = delta;
                if delta < 0 {
                    // Take the removed units out of what is still to fulfil, newest FO first.
                    for fo in order.fos.iter_mut().rev() {
                        if fo.status == fo_status::CLOSED {
                            continue;
                        }
                        for fl in fo.lines.iter_mut().filter(|fl| fl.line_id == line_id) {
                            let take = fl.remaining.min(-left);
                            fl.remaining -= take;
                            fl.total -= take;
                            left += take;
                        }
                        fo.updated_at = now;
                        fo.refresh_status();
                    }
                } else if delta > 0 {
                    let open = order
                        .fos
                        .iter_mut()
                        .find(|fo| fo.location == location && fo.status != fo_status::CLOSED);
                    match open {
                        Some(fo) => {
                            match fo.lines.iter_mut().find(|fl| fl.line_id == line_id) {
                                Some(fl) => {
                                    fl.total += delta;
                                    fl.remaining += delta;
                                }
                                None => fo.lines.push(FoLine {
                                    id: new_fo_line_id,
                                    line_id,
                                    total: delta,
                                    remaining: delta,
                                }),
                            }
                            fo.updated_at = now;
                            fo.refresh_status();
                        }
                        None => {
                            // Everything at that location was fulfilled: the added units get a
                            // fulfillment order of their own, as Shopify does.
                            order.fos.push(FulfillmentOrder {
                                id: new_fo_id,
                                location,
                                status: fo_status::OPEN,
                                created_at: now,
                                updated_at: now,
                                holds: Vec::new(),
                                lines: vec![FoLine {
                                    id: new_fo_line_id,
                                    line_id,
                                    total: delta,
                                    remaining: delta,
                                }],
                            });
                            self.fo_owner.insert(new_fo_id, order_id);
                        }
                    }
                }
            }
            OrderEdit::AddLine(new_line) => {
                self.check_line(new_line)?;
                let line = self.make_line(new_line);
                let fo_line = FoLine {
                    id: self.new_id(),
                    line_id: line.id,
                    total: line.quantity,
                    remaining: line.quantity,
                };
                let new_fo_id = self.new_id();
                additions = vec![json!({ "id": line.id, "delta": line.quantity })];
                removals = vec![];
                let order = self.orders.get_mut(&order_id).expect("checked above");
                let open = order.fos.iter_mut().find(|fo| {
                    fo.location == line.location
                        && (fo.status == fo_status::OPEN || fo.status == fo_status::IN_PROGRESS)
                });
                match open {
                    Some(fo) => {
                        fo.lines.push(fo_line);
                        fo.updated_at = now;
                    }
                    None => {
                        order.fos.push(FulfillmentOrder {
                            id: new_fo_id,
                            location: line.location,
                            status: fo_status::OPEN,
                            created_at: now,
                            updated_at: now,
                            holds: Vec::new(),
                            lines: vec![fo_line],
                        });
                        self.fo_owner.insert(new_fo_id, order_id);
                    }
                }
                order.lines.push(line);
            }
        }
        let edit_id = self.new_id();
        if let Some(order) = self.orders.get_mut(&order_id) {
            order.edits += 1;
        }
        self.bump(order_id, now_ms);
        let body = json!({
            "order_edit": {
                "id": edit_id,
                "app_id": null,
                "created_at": fmt_rest(now),
                "notify_customer": false,
                "order_id": order_id,
                "staff_note": "",
                "user_id": null,
                "line_items": { "additions": additions, "removals": removals },
                "discounts": { "line_item": { "additions": [], "removals": [] } },
                "shipping_lines": { "additions": [], "removals": [] },
            }
        });
        self.emit("orders/edited", body, now_ms);
        self.emit_order(order_id, &["orders/updated"], now_ms);
        Ok(())
    }

    /// Cancels an order: closes what is left to fulfil; emits orders/cancelled and orders/updated.
    pub fn cancel_order(
        &mut self,
        order_id: u64,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), SandboxError> {
        if !CANCEL_REASONS.contains(&reason) {
            return Err(SandboxError::Invalid(format!(
                "{reason} is not an OrderCancelReason ({})",
                CANCEL_REASONS.join(", ")
            )));
        }
        let order = self
            .orders
            .get_mut(&order_id)
            .ok_or_else(|| SandboxError::UnknownOrder(gid("Order", order_id)))?;
        if order.cancelled_at.is_some() {
            return Err(SandboxError::Invalid(format!(
                "{} is cancelled already",
                order.name
            )));
        }
        let now = now_ms / 1000;
        // The same instant `bump` gives updatedAt below: the cancellation is this change.
        order.cancelled_at = Some(now.max(order.updated_at + 1));
        order.cancel_reason = Some(reason.to_string());
        let fulfilled: HashMap<u64, i64> = order
            .lines
            .iter()
            .map(|l| (l.id, order.fulfilled(l.id)))
            .collect();
        for line in &mut order.lines {
            line.current_quantity = fulfilled.get(&line.id).copied().unwrap_or(0);
        }
        let mut closed = Vec::new();
        for fo in &mut order.fos {
            if fo.status == fo_status::CLOSED {
                continue;
            }
            for fl in &mut fo.lines {
                fl.total -= fl.remaining;
                fl.remaining = 0;
            }
            fo.holds.clear();
            fo.status = fo_status::CLOSED;
            fo.updated_at = now;
            closed.push(fo.id);
        }
        self.bump(order_id, now_ms);
        for fo_id in closed {
            self.emit(
                "fulfillment_orders/cancelled",
                json!({ "fulfillment_order": { "id": gid("FulfillmentOrder", fo_id), "status": "closed" } }),
                now_ms,
            );
        }
        self.emit_order(order_id, &["orders/cancelled", "orders/updated"], now_ms);
        Ok(())
    }

    /// Replaces the shipping address (as `orderUpdate` does); emits orders/updated.
    pub fn set_shipping_address(
        &mut self,
        order_id: u64,
        address: Value,
        now_ms: i64,
    ) -> Result<(), SandboxError> {
        let order = self
            .orders
            .get_mut(&order_id)
            .ok_or_else(|| SandboxError::UnknownOrder(gid("Order", order_id)))?;
        order.shipping_address = Some(address);
        self.bump(order_id, now_ms);
        self.emit_order(order_id, &["orders/updated"], now_ms);
        Ok(())
    }

    /// Changes something that bumps updatedAt (the note); emits orders/updated.
    pub fn touch_order(&mut self, order_id: u64, now_ms: i64) -> Result<(), SandboxError> {
        let order = self
            .orders
            .get_mut(&order_id)
            .ok_or_else(|| SandboxError::UnknownOrder(gid("Order", order_id)))?;
        order.edits += 1;
        order.note = Some(format!("note revision {}", order.edits));
        self.bump(order_id, now_ms);
        self.emit_order(order_id, &["orders/updated"], now_ms);
        Ok(())
    }

    /// Places a hold. An app's holds are unique per handle (an empty handle is a handle too),
    /// as Shopify documents: a second hold with a handle in use is refused with
    /// DUPLICATE_FULFILLMENT_HOLD_HANDLE and no hold is added.
    pub fn place_hold(
        &mut self,
        fo_gid: &str,
        reason: &str,
        reason_notes: Option<String>,
        handle: Option<String>,
        by_app: bool,
        now_ms: i64,
    ) -> Result<(u64, u64), UserError> {
        let not_found = || {
            UserError::new(&["id"], "The fulfillment order could not be found.")
                .with_code("FULFILLMENT_ORDER_NOT_FOUND")
        };
        let fo_id = gid_of(fo_gid, "FulfillmentOrder").ok_or_else(not_found)?;
        let order_id = self.order_of_fo(fo_id).ok_or_else(not_found)?;
        let fo = self.orders[&order_id].fo(fo_id).ok_or_else(not_found)?;
        if fo.status == fo_status::CLOSED {
            return Err(UserError::new(
                &["id"],
                format!(
                    "The fulfillment order has an unholdable status= {}.",
                    fo.status.to_lowercase()
                ),
            ));
        }
        let handle = handle.unwrap_or_default();
        if handle.chars().count() > 64 {
            return Err(UserError::new(
                &["fulfillmentHold", "handle"],
                "Handle is too long (maximum is 64 characters)",
            ));
        }
        if by_app {
            if fo.holds.iter().any(|h| h.by_app && h.handle == handle) {
                return Err(UserError::new(
                    &["fulfillmentHold", "handle"],
                    "The handle provided for the fulfillment hold is already in use by this app for another hold on this fulfillment order.",
                )
                .with_code("DUPLICATE_FULFILLMENT_HOLD_HANDLE"));
            }
            if fo.holds.iter().filter(|h| h.by_app).count() >= MAX_APP_HOLDS {
                return Err(UserError::new(
                    &["id"],
                    "The maximum number of fulfillment holds for this fulfillment order has been reached for this app.",
                )
                .with_code("FULFILLMENT_ORDER_HOLD_LIMIT_REACHED"));
            }
        }
        let hold_id = self.new_id();
        let now = now_ms / 1000;
        let order = self
            .orders
            .get_mut(&order_id)
            .expect("owner index is consistent");
        let fo = order
            .fos
            .iter_mut()
            .find(|f| f.id == fo_id)
            .expect("checked above");
        fo.holds.push(Hold {
            id: hold_id,
            handle,
            reason: reason.to_string(),
            reason_notes: reason_notes.clone(),
            by_app,
        });
        fo.updated_at = now;
        fo.refresh_status();
        let body = json!({
            "fulfillment_order": {
                "id": gid("FulfillmentOrder", fo_id),
                "status": fo.status.to_lowercase(),
                "fulfillment_holds": fo.holds.iter().map(|h| json!({
                    "reason": h.reason.to_lowercase(), "reason_notes": h.reason_notes,
                })).collect::<Vec<_>>(),
            },
            "created_fulfillment_hold": {
                "id": gid("FulfillmentHold", hold_id),
                "reason": reason.to_lowercase(),
                "reason_notes": reason_notes,
            },
        });
        self.bump(order_id, now_ms);
        self.emit("fulfillment_orders/placed_on_hold", body, now_ms);
        self.emit_order(order_id, &["orders/updated"], now_ms);
        Ok((order_id, hold_id))
    }

    /// Releases holds. Named holds must all be releasable by the caller (the app may release
    /// only its own: another's gives INVALID_ACCESS and nothing is released); ids of holds not on
    /// this fulfillment order are ignored, as Shopify documents. Without ids every hold goes,
    /// the merchant's included: Shopify warns apps about exactly that.
    pub fn release_holds(
        &mut self,
        fo_gid: &str,
        hold_ids: Option<&[String]>,
        by_app: bool,
        now_ms: i64,
    ) -> Result<u64, UserError> {
        let not_found = || {
            UserError::new(&["id"], "The fulfillment order wasn't found.")
                .with_code("FULFILLMENT_ORDER_NOT_FOUND")
        };
        let fo_id = gid_of(fo_gid, "FulfillmentOrder").ok_or_else(not_found)?;
        let order_id = self.order_of_fo(fo_id).ok_or_else(not_found)?;
        let fo = self.orders[&order_id].fo(fo_id).ok_or_else(not_found)?;
        let wanted: Option<Vec<u64>> = hold_ids.map(|ids| {
            ids.iter()
                .filter_map(|id| gid_of(id, "FulfillmentHold"))
                .collect()
        });
        let releasing: Vec<u64> = fo
            .holds
            .iter()
            .filter(|h| wanted.as_ref().is_none_or(|w| w.contains(&h.id)))
            .map(|h| h.id)
            .collect();
        if wanted.is_some()
            && by_app
            && fo
                .holds
                .iter()
                .any(|h| releasing.contains(&h.id) && !h.by_app)
        {
            return Err(UserError::new(
                &["holdIds"],
                "The app doesn't have access to release the fulfillment hold.",
            )
            .with_code("INVALID_ACCESS"));
        }
        if releasing.is_empty() {
            return Ok(order_id);
        }
        let now = now_ms / 1000;
        let order = self
            .orders
            .get_mut(&order_id)
            .expect("owner index is consistent");
        let fo = order
            .fos
            .iter_mut()
            .find(|f| f.id == fo_id)
            .expect("checked above");
        fo.holds.retain(|h| !releasing.contains(&h.id));
        fo.updated_at = now;
        fo.refresh_status();
        let body = json!({
            "fulfillment_order": { "id": gid("FulfillmentOrder", fo_id), "status": fo.status.to_lowercase() }
        });
        self.bump(order_id, now_ms);
        self.emit("fulfillment_orders/hold_released", body, now_ms);
        self.emit_order(order_id, &["orders/updated"], now_ms);
        Ok(order_id)
    }

    /// Creates a fulfillment with Shopify's checks: one order, one location, every fulfillment
    /// order OPEN or IN_PROGRESS, quantities within what remains.
    pub fn create_fulfillment(
        &mut self,
        spec: &FulfillmentSpec,
        now_ms: i64,
    ) -> Result<u64, UserError> {
        let base = ["fulfillment", "lineItemsByFulfillmentOrder"];
        if spec.groups.is_empty() {
            return Err(UserError::new(
                &base,
                "Line items by fulfillment order can't be blank.",
            ));
        }
        let mut order_id = None;
        let mut location = None;
        // (fo id, fo line id, line id, quantity), validated before anything changes.
        let mut picks: Vec<(u64, u64, u64, i64)> = Vec::new();
        for (fo_gid, lines) in &spec.groups {
            let fo_id = gid_of(fo_gid, "FulfillmentOrder")
                .filter(|id| self.order_of_fo(*id).is_some())
                .ok_or_else(|| UserError::new(&base, "Fulfillment order does not exist."))?;
            let owner = self.order_of_fo(fo_id).expect("checked above");
            if *order_id.get_or_insert(owner) != owner {
                return Err(UserError::new(
                    &base,
                    "All fulfillment orders must belong to the same order.",
                ));
            }
            let order = &self.orders[&owner];
            let fo = order.fo(fo_id).expect("owner index is consistent");
            if *location.get_or_insert(fo.location) != fo.location {
                return Err(UserError::new(
                    &base,
                    "All fulfillment orders must belong to the same location.",
                ));
            }
            if fo.status != fo_status::OPEN && fo.status != fo_status::IN_PROGRESS {
                return Err(UserError::new(
                    &base,
                    format!(
                        "Fulfillment order {fo_gid} has an unfulfillable status= {}.",
                        fo.status.to_lowercase()
                    ),
                ));
            }
            match lines.as_ref().filter(|l| !l.is_empty()) {
                None => {
                    for fl in fo.lines.iter().filter(|fl| fl.remaining > 0) {
                        picks.push((fo_id, fl.id, fl.line_id, fl.remaining));
                    }
                }
                Some(lines) => {
                    for (line_gid, quantity) in lines {
                        let fl = gid_of(line_gid, "FulfillmentOrderLineItem")
                            .and_then(|id| fo.lines.iter().find(|fl| fl.id == id))
                            .ok_or_else(|| {
                                UserError::new(&base, "Fulfillment order line item does not exist.")
                            })?;
                        let already: i64 = picks.iter().filter(|p| p.1 == fl.id).map(|p| p.3).sum();
                        if *quantity < 1 || quantity + already > fl.remaining {
                            return Err(UserError::new(
                                &base,
                                "Invalid fulfillment order line item quantity requested.",
                            ));
                        }
                        picks.push((fo_id, fl.id, fl.line_id, *quantity));
                    }
                }
            }
        }
        let (Some(order_id), Some(location)) = (order_id, location) else {
            return Err(UserError::new(
                &base,
                "Line items by fulfillment order can't be blank.",
            ));
        };
        if picks.is_empty() {
            return Err(UserError::new(
                &base,
                "Invalid fulfillment order line item quantity requested.",
            ));
        }
        let fulfillment_id = self.new_id();
        let line_ids: Vec<u64> = picks.iter().map(|_| self.new_id()).collect();
        let now = now_ms / 1000;
        let order = self.orders.get_mut(&order_id).expect("checked above");
        let mut fo_ids: Vec<u64> = Vec::new();
        for (fo_id, fo_line_id, _, quantity) in &picks {
            let fo = order
                .fos
                .iter_mut()
                .find(|f| f.id == *fo_id)
                .expect("checked above");
            if let Some(fl) = fo.lines.iter_mut().find(|fl| fl.id == *fo_line_id) {
                fl.remaining -= quantity;
            }
            fo.updated_at = now;
            fo.refresh_status();
            if !fo_ids.contains(fo_id) {
                fo_ids.push(*fo_id);
            }
        }
        let number = order.fulfillments.len() + 1;
        order.fulfillments.push(Fulfillment {
            id: fulfillment_id,
            name: format!("{}-F{number}", order.name),
            status: "SUCCESS",
            display_status: "FULFILLED".into(),
            created_at: now,
            updated_at: now,
            location,
            fo_ids,
            lines: picks
                .iter()
                .zip(line_ids)
                .map(|((_, _, line_id, quantity), id)| FulfilledLine {
                    id,
                    line_id: *line_id,
                    quantity: *quantity,
                })
                .collect(),
            tracking: spec.tracking.clone(),
            events: Vec::new(),
            notify_customer: spec.notify_customer,
            message: spec.message.clone(),
            by_app: spec.by_app,
        });
        self.fulfillment_owner.insert(fulfillment_id, order_id);
        self.bump(order_id, now_ms);
        let order = &self.orders[&order_id];
        let topic = if order.display_fulfillment_status() == "FULFILLED" {
            "orders/fulfilled"
        } else {
            "orders/partially_fulfilled"
        };
        if let Some(f) = order.fulfillments.last() {
            let body = self.fulfillment_rest(order, f);
            self.emit("fulfillments/create", body, now_ms);
        }
        self.emit_order(order_id, &["orders/updated", topic], now_ms);
        Ok(fulfillment_id)
    }

    /// Emits `app/uninstalled` with the shop's REST body, as Shopify does when the merchant
    /// removes the app.
    pub fn app_uninstalled(&mut self, shop: &str, now_ms: i64) {
        let name = shop.split('.').next().unwrap_or(shop).to_string();
        self.emit(
            "app/uninstalled",
            json!({ "id": 1, "name": name, "domain": shop, "myshopify_domain": shop }),
            now_ms,
        );
    }

    /// Cancels a fulfillment as the merchant would in the admin: its status becomes CANCELLED
    /// and its quantities are open again on the fulfillment orders it took them from (Shopify
    /// reopens a fulfillment order a cancelled fulfillment had closed).
    pub fn cancel_fulfillment(
        &mut self,
        fulfillment_gid: &str,
        now_ms: i64,
    ) -> Result<(), UserError> {
        let base = ["fulfillmentId"];
        let (order_id, fulfillment) = self
            .fulfillment_mut(fulfillment_gid)
            .ok_or_else(|| UserError::new(&base, "Fulfillment does not exist."))?;
        if fulfillment.status == "CANCELLED" {
            return Err(UserError::new(&base, "Fulfillment is already cancelled."));
        }
        let id = fulfillment.id;
        fulfillment.status = "CANCELLED";
        fulfillment.display_status = "CANCELED".into();
        fulfillment.updated_at = now_ms / 1000;
        let lines = fulfillment.lines.clone();
        let fo_ids = fulfillment.fo_ids.clone();
        let order = self
            .orders
            .get_mut(&order_id)
            .expect("the owner index is consistent");
        for line in &lines {
            let mut left = line.quantity;
            for fo in order.fos.iter_mut().filter(|fo| fo_ids.contains(&fo.id)) {
                for fl in fo.lines.iter_mut().filter(|fl| fl.line_id == line.line_id) {
                    let back = left.min(fl.total - fl.remaining);
                    if back > 0 {
                        fl.remaining += back;
                        left -= back;
                        if fo.status == fo_status::CLOSED {
                            fo.status = fo_status::OPEN;
                        }
                    }
                }
                fo.updated_at = now_ms / 1000;
                fo.refresh_status();
            }
        }
        self.bump(order_id, now_ms);
        let order = &self.orders[&order_id];
        if let Some(f) = order.fulfillments.iter().find(|f| f.id == id) {
            let body = self.fulfillment_rest(order, f);
            self.emit("fulfillments/update", body, now_ms);
        }
        self.emit_order(order_id, &["orders/updated"], now_ms);
        Ok(())
    }

    /// Finds a fulfillment by gid.
    pub fn fulfillment(&self, fulfillment_gid: &str) -> Option<(&Order, &Fulfillment)> {
        let id = gid_of(fulfillment_gid, "Fulfillment")?;
        let order = self.orders.get(&self.order_of_fulfillment(id)?)?;
        Some((order, order.fulfillments.iter().find(|f| f.id == id)?))
    }

    fn fulfillment_mut(&mut self, fulfillment_gid: &str) -> Option<(u64, &mut Fulfillment)> {
        let id = gid_of(fulfillment_gid, "Fulfillment")?;
        let order_id = self.order_of_fulfillment(id)?;
        let order = self.orders.get_mut(&order_id)?;
        Some((
            order_id,
            order.fulfillments.iter_mut().find(|f| f.id == id)?,
        ))
    }

    /// Appends an event to a fulfillment.
    pub fn add_event(
        &mut self,
        fulfillment_gid: &str,
        mut event: FulfillmentEvent,
        now_ms: i64,
    ) -> Result<(u64, u64), UserError> {
        if self.fulfillment(fulfillment_gid).is_none() {
            return Err(UserError::new(
                &["fulfillmentEvent", "fulfillmentId"],
                "Fulfillment does not exist.",
            ));
        }
        event.id = self.new_id();
        let event_id = event.id;
        let (order_id, f) = self
            .fulfillment_mut(fulfillment_gid)
            .expect("checked above");
        match event.status.as_str() {
            "IN_TRANSIT" | "CARRIER_PICKED_UP" => f.display_status = "IN_TRANSIT".into(),
            "OUT_FOR_DELIVERY" | "ATTEMPTED_DELIVERY" | "DELIVERED" | "FAILURE"
            | "READY_FOR_PICKUP" | "CONFIRMED" | "LABEL_PRINTED" | "LABEL_PURCHASED" => {
                f.display_status = event.status.clone()
            }
            _ => {}
        }
        f.updated_at = f.updated_at.max(now_ms / 1000);
        f.events.push(event);
        let body = json!({
            "id": event_id,
            "fulfillment_id": f.id,
            "order_id": order_id,
            "status": f.events.last().map(|e| e.status.to_lowercase()),
            "happened_at": f.events.last().map(|e| fmt_rest(e.happened_at)),
            "admin_graphql_api_id": gid("FulfillmentEvent", event_id),
        });
        self.emit("fulfillment_events/create", body, now_ms);
        Ok((order_id, event_id))
    }

    /// Replaces a fulfillment's tracking; bumps the order (its fulfillments changed).
    pub fn update_tracking(
        &mut self,
        fulfillment_gid: &str,
        tracking: Vec<Tracking>,
        now_ms: i64,
    ) -> Result<u64, UserError> {
        let Some((order_id, f)) = self.fulfillment_mut(fulfillment_gid) else {
            return Err(UserError::new(
                &["fulfillmentId"],
                "Fulfillment does not exist.",
            ));
        };
        f.tracking = tracking;
        f.updated_at = f.updated_at.max(now_ms / 1000);
        let fulfillment_id = f.id;
        self.bump(order_id, now_ms);
        let order = &self.orders[&order_id];
        if let Some(f) = order.fulfillments.iter().find(|f| f.id == fulfillment_id) {
            let body = self.fulfillment_rest(order, f);
            self.emit("fulfillments/update", body, now_ms);
        }
        self.emit_order(order_id, &["orders/updated"], now_ms);
        Ok(fulfillment_id)
    }

    // -----------------------------------------------------------------------------------------
    // GraphQL objects
    // -----------------------------------------------------------------------------------------

    fn location_json(&self, index: usize) -> Value {
        let loc = &self.locations[index.min(self.locations.len().saturating_sub(1))];
        json!({
            "__typename": "Location",
            "id": gid("Location", loc.id),
            "legacyResourceId": loc.id.to_string(),
            "name": loc.name,
            "isActive": true,
        })
    }

    /// Every location as GraphQL objects.
    pub fn locations_json(&self) -> Vec<Value> {
        (0..self.locations.len())
            .map(|i| self.location_json(i))
            .collect()
    }

    fn line_json(&self, order: &Order, line: &Line) -> Value {
        json!({
            "__typename": "LineItem",
            "__implements": ["Node"],
            "id": gid("LineItem", line.id),
            "name": match &line.variant_title {
                Some(v) => format!("{} - {v}", line.sku),
                None => line.sku.clone(),
            },
            "title": line.sku,
            "sku": line.sku,
            "quantity": line.quantity,
            "currentQuantity": line.current_quantity,
            "unfulfilledQuantity": order.unfulfilled(line),
            "fulfillableQuantity": order.unfulfilled(line),
            "nonFulfillableQuantity": line.quantity - line.current_quantity,
            "variantTitle": line.variant_title,
            "requiresShipping": true,
            "vendor": "Sandbox Supplier",
            "variant": {
                "__typename": "ProductVariant",
                "id": gid("ProductVariant", line.variant_id),
                "legacyResourceId": line.variant_id.to_string(),
                "sku": line.sku,
                "title": line.variant_title.clone().unwrap_or_else(|| "Default Title".into()),
            },
        })
    }

    fn hold_json(hold: &Hold) -> Value {
        json!({
            "__typename": "FulfillmentHold",
            "id": gid("FulfillmentHold", hold.id),
            "handle": hold.handle,
            "reason": hold.reason,
            "reasonNotes": hold.reason_notes,
            "displayReason": hold.reason.replace('_', " ").to_lowercase(),
            "heldByRequestingApp": hold.by_app,
        })
    }

    /// A fulfillment order as a GraphQL object.
    pub fn fo_json(&self, order: &Order, fo: &FulfillmentOrder) -> Value {
        let location = self.location_json(fo.location);
        let lines: Vec<Value> = fo
            .lines
            .iter()
            .map(|fl| {
                let line = order.lines.iter().find(|l| l.id == fl.line_id);
                json!({
                    "__typename": "FulfillmentOrderLineItem",
                    "id": gid("FulfillmentOrderLineItem", fl.id),
                    "totalQuantity": fl.total,
                    "remainingQuantity": fl.remaining,
                    "sku": line.map(|l| l.sku.clone()),
                    "variantTitle": line.and_then(|l| l.variant_title.clone()),
                    "lineItem": line.map(|l| self.line_json(order, l)),
                })
            })
            .collect();
        json!({
            "__typename": "FulfillmentOrder",
            "id": gid("FulfillmentOrder", fo.id),
            "orderId": gid("Order", order.id),
            "orderName": order.name,
            "status": fo.status,
            "requestStatus": "UNSUBMITTED",
            "createdAt": fmt_secs(fo.created_at),
            "updatedAt": fmt_secs(fo.updated_at),
            "assignedLocation": {
                "__typename": "FulfillmentOrderAssignedLocation",
                "name": location["name"],
                "location": location,
            },
            "fulfillmentHolds": fo.holds.iter().map(Self::hold_json).collect::<Vec<_>>(),
            "lineItems": { "__connection": lines, "__itemType": "FulfillmentOrderLineItem" },
        })
    }

    /// Tracking as a GraphQL object.
    fn tracking_json(t: &Tracking) -> Value {
        json!({ "__typename": "FulfillmentTrackingInfo", "company": t.company, "number": t.number, "url": t.url })
    }

    /// A fulfillment event as a GraphQL object.
    pub fn event_json(e: &FulfillmentEvent) -> Value {
        json!({
            "__typename": "FulfillmentEvent",
            "id": gid("FulfillmentEvent", e.id),
            "status": e.status,
            "happenedAt": fmt_secs(e.happened_at),
            "createdAt": fmt_secs(e.created_at),
            "estimatedDeliveryAt": e.estimated_delivery_at.map(fmt_secs),
            "message": e.message,
            "city": e.city,
            "province": e.province,
            "country": e.country,
            "zip": e.zip,
        })
    }

    /// A fulfillment's events in the order of `events`' default sort key, `HAPPENED_AT` (ties in
    /// the order they were posted): a carrier event posted late still lands in its place. The
    /// sandbox does not implement the other sort key, `ID`.
    fn events_by_happened_at(f: &Fulfillment) -> Vec<&FulfillmentEvent> {
        let mut events: Vec<&FulfillmentEvent> = f.events.iter().collect();
        events.sort_by_key(|e| (e.happened_at, e.id));
        events
    }

    /// A fulfillment as a GraphQL object.
    pub fn fulfillment_json(&self, order: &Order, f: &Fulfillment) -> Value {
        let lines: Vec<Value> = f
            .lines
            .iter()
            .map(|fl| {
                let line = order.lines.iter().find(|l| l.id == fl.line_id);
                json!({
                    "__typename": "FulfillmentLineItem",
                    "id": gid("FulfillmentLineItem", fl.id),
                    "quantity": fl.quantity,
                    "lineItem": line.map(|l| self.line_json(order, l)),
                })
            })
            .collect();
        let delivered = f
            .events
            .iter()
            .find(|e| e.status == "DELIVERED")
            .map(|e| fmt_secs(e.happened_at));
        let in_transit = f
            .events
            .iter()
            .find(|e| e.status == "IN_TRANSIT" || e.status == "CARRIER_PICKED_UP")
            .map(|e| fmt_secs(e.happened_at));
        json!({
            "__typename": "Fulfillment",
            "id": gid("Fulfillment", f.id),
            "legacyResourceId": f.id.to_string(),
            "name": f.name,
            "status": f.status,
            "displayStatus": f.display_status,
            "createdAt": fmt_secs(f.created_at),
            "updatedAt": fmt_secs(f.updated_at),
            "deliveredAt": delivered,
            "inTransitAt": in_transit,
            "estimatedDeliveryAt": f.events.iter().rev().find_map(|e| e.estimated_delivery_at).map(fmt_secs),
            "totalQuantity": f.lines.iter().map(|l| l.quantity).sum::<i64>(),
            "location": self.location_json(f.location),
            "trackingInfo": f.tracking.iter().map(Self::tracking_json).collect::<Vec<_>>(),
            "events": { "__connection": Self::events_by_happened_at(f).into_iter().map(Self::event_json).collect::<Vec<_>>(), "__itemType": "FulfillmentEvent" },
            "fulfillmentLineItems": { "__connection": lines, "__itemType": "FulfillmentLineItem" },
            "fulfillmentOrders": {
                "__connection": f.fo_ids.iter().filter_map(|id| order.fo(*id)).map(|fo| self.fo_json(order, fo)).collect::<Vec<_>>(),
                "__itemType": "FulfillmentOrder",
            },
            "order": { "__typename": "Order", "id": gid("Order", order.id), "name": order.name },
        })
    }

    /// The whole order as a GraphQL object: every field the operations may ask for.
    pub fn order_json(&self, order: &Order) -> Value {
        self.order_json_only(order, None)
    }

    /// The order as a GraphQL object, building the costly nested fields (address, line items,
    /// fulfillment orders, fulfillments) only if `only` names them: a scan of 250 orders for
    /// `id updatedAt` should not render every order in full. None builds everything.
    pub fn order_json_only(&self, order: &Order, only: Option<&BTreeSet<String>>) -> Value {
        let want = |field: &str| only.is_none_or(|names| names.contains(field));
        let address = order
            .shipping_address
            .as_ref()
            .filter(|_| want("shippingAddress"))
            .map(|a| {
                let mut out = json!({
                    "__typename": "MailingAddress",
                    "name": null, "firstName": null, "lastName": null, "company": null,
                    "address1": null, "address2": null, "city": null, "province": null,
                    "provinceCode": null, "zip": null, "country": null, "countryCodeV2": null,
                    "phone": null,
                });
                if let (Some(out), Some(given)) = (out.as_object_mut(), a.as_object()) {
                    for (k, v) in given {
                        out.insert(k.clone(), v.clone());
                    }
                }
                out
            });
        let fulfilled = order.display_fulfillment_status();
        let mut out = json!({
            "__typename": "Order",
            "__implements": ["Node"],
            "id": gid("Order", order.id),
            "legacyResourceId": order.id.to_string(),
            "name": order.name,
            "email": order.email,
            "note": order.note,
            "createdAt": fmt_secs(order.created_at),
            "processedAt": fmt_secs(order.created_at),
            "updatedAt": fmt_secs(order.updated_at),
            "cancelledAt": order.cancelled_at.map(fmt_secs),
            "cancelReason": order.cancel_reason,
            "closed": order.cancelled_at.is_some() || fulfilled == "FULFILLED",
            "closedAt": if order.cancelled_at.is_some() || fulfilled == "FULFILLED" { json!(fmt_secs(order.updated_at)) } else { Value::Null },
            "confirmed": true,
            "test": false,
            "displayFulfillmentStatus": fulfilled,
            "displayFinancialStatus": "PAID",
            "currencyCode": "USD",
            "tags": [],
            "subtotalLineItemsQuantity": order.lines.iter().map(|l| l.quantity).sum::<i64>(),
            "currentSubtotalLineItemsQuantity": order.lines.iter().map(|l| l.current_quantity).sum::<i64>(),
            "shippingAddress": address,
        });
        if want("lineItems") {
            out["lineItems"] = json!({
                "__connection": order.lines.iter().map(|l| self.line_json(order, l)).collect::<Vec<_>>(),
                "__itemType": "LineItem",
            });
        }
        if want("fulfillmentOrders") {
            out["fulfillmentOrders"] = json!({
                "__connection": order.fos.iter().map(|fo| self.fo_json(order, fo)).collect::<Vec<_>>(),
                "__itemType": "FulfillmentOrder",
            });
        }
        if want("fulfillments") {
            out["fulfillments"] = Value::Array(
                order
                    .fulfillments
                    .iter()
                    .map(|f| self.fulfillment_json(order, f))
                    .collect(),
            );
        }
        out
    }

    /// The object behind a global id, for `nodes(ids:)`.
    pub fn node_json(&self, id: &str) -> Option<Value> {
        self.node_json_only(id, None)
    }

    /// The object behind a global id; an order only with the costly fields `only` names.
    pub fn node_json_only(&self, id: &str, only: Option<&BTreeSet<String>>) -> Option<Value> {
        let (kind, n) = parse_gid(id)?;
        match kind {
            "Order" => self.orders.get(&n).map(|o| self.order_json_only(o, only)),
            "FulfillmentOrder" => {
                let order = self.orders.get(&self.order_of_fo(n)?)?;
                order.fo(n).map(|fo| self.fo_json(order, fo))
            }
            "Fulfillment" => self
                .fulfillment(id)
                .map(|(o, f)| self.fulfillment_json(o, f)),
            "Location" => self
                .locations
                .iter()
                .position(|l| l.id == n)
                .map(|i| self.location_json(i)),
            _ => None,
        }
    }

    // -----------------------------------------------------------------------------------------
    // REST payloads
    // -----------------------------------------------------------------------------------------

    /// The order in REST shape, as order webhooks carry it.
    pub fn order_rest(&self, order: &Order) -> Value {
        let address = order.shipping_address.as_ref().map(|a| {
            let get = |k: &str| a.get(k).cloned().unwrap_or(Value::Null);
            json!({
                "name": get("name"), "first_name": get("firstName"), "last_name": get("lastName"),
                "company": get("company"), "address1": get("address1"), "address2": get("address2"),
                "city": get("city"), "province": get("province"), "province_code": get("provinceCode"),
                "zip": get("zip"), "country": get("country"), "country_code": get("countryCodeV2"),
                "phone": get("phone"),
            })
        });
        let lines: Vec<Value> = order
            .lines
            .iter()
            .map(|l| {
                let fulfilled = order.fulfilled(l.id);
                json!({
                    "id": l.id,
                    "admin_graphql_api_id": gid("LineItem", l.id),
                    "sku": l.sku,
                    "variant_id": l.variant_id,
                    "title": l.sku,
                    "name": match &l.variant_title { Some(v) => format!("{} - {v}", l.sku), None => l.sku.clone() },
                    "quantity": l.quantity,
                    "current_quantity": l.current_quantity,
                    "fulfillable_quantity": order.unfulfilled(l),
                    "fulfillment_status": if fulfilled > 0 && order.unfulfilled(l) == 0 { json!("fulfilled") } else if fulfilled > 0 { json!("partial") } else { Value::Null },
                    "variant_title": l.variant_title,
                    "requires_shipping": true,
                    "vendor": "Sandbox Supplier",
                })
            })
            .collect();
        json!({
            "id": order.id,
            "admin_graphql_api_id": gid("Order", order.id),
            "name": order.name,
            "order_number": order.name.trim_start_matches('#').parse::<u64>().ok(),
            "email": order.email,
            "note": order.note,
            "created_at": fmt_rest(order.created_at),
            "updated_at": fmt_rest(order.updated_at),
            "processed_at": fmt_rest(order.created_at),
            "cancelled_at": order.cancelled_at.map(fmt_rest),
            "cancel_reason": order.cancel_reason.as_ref().map(|r| r.to_lowercase()),
            "financial_status": "paid",
            "fulfillment_status": order.rest_fulfillment_status(),
            "currency": "USD",
            "shipping_address": address,
            "line_items": lines,
            "fulfillments": order.fulfillments.iter().map(|f| self.fulfillment_rest(order, f)).collect::<Vec<_>>(),
            "order_status_url": format!("https://{}/orders/{}/authenticate", self.shop, order.id),
        })
    }

    /// A fulfillment in REST shape.
    pub fn fulfillment_rest(&self, order: &Order, f: &Fulfillment) -> Value {
        json!({
            "id": f.id,
            "admin_graphql_api_id": gid("Fulfillment", f.id),
            "order_id": order.id,
            "name": f.name,
            "status": f.status.to_lowercase(),
            "created_at": fmt_rest(f.created_at),
            "updated_at": fmt_rest(f.updated_at),
            "location_id": self.locations.get(f.location).map(|l| l.id),
            "tracking_company": f.tracking.first().and_then(|t| t.company.clone()),
            "tracking_number": f.tracking.first().and_then(|t| t.number.clone()),
            "tracking_numbers": f.tracking.iter().filter_map(|t| t.number.clone()).collect::<Vec<_>>(),
            "tracking_url": f.tracking.first().and_then(|t| t.url.clone()),
            "tracking_urls": f.tracking.iter().filter_map(|t| t.url.clone()).collect::<Vec<_>>(),
            "line_items": f.lines.iter().map(|fl| json!({
                "id": fl.line_id,
                "admin_graphql_api_id": gid("LineItem", fl.line_id),
                "quantity": fl.quantity,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Serializes a payload the way Shopify does: `/` and `&` escaped, so that a receiver that
/// verifies a re-serialized body instead of the raw bytes fails, as it would in production.
pub(crate) fn shopify_json(value: &Value) -> Vec<u8> {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            // Both characters can only appear inside strings in serde_json's output.
            '/' => out.push_str("\\/"),
            '&' => out.push_str("\\u0026"),
            c => out.push(c),
        }
    }
    out.into_bytes()
}

/// A tracking URL for carriers whose pattern Shopify knows; others need one given.
pub(crate) fn tracking_url(company: Option<&str>, number: &str) -> Option<String> {
    let url = match company? {
        "USPS" => format!("https://tools.usps.com/go/TrackConfirmAction?tLabels={number}"),
        "UPS" => {
            format!("https://www.ups.com/WebTracking?loc=en_US&requester=ST&trackNums={number}")
        }
        "FedEx" => format!("https://www.fedex.com/fedextrack/?trknbr={number}"),
        "DHL Express" => {
            format!("https://www.dhl.com/en/express/tracking.html?AWB={number}&brand=DHL")
        }
        "4PX" => format!("https://track.4px.com/#/result/0/{number}"),
        "YunExpress" => format!("https://www.yuntrack.com/parcelTracking?id={number}"),
        "China Post" => format!("https://track.aftership.com/china-post/{number}"),
        _ => return None,
    };
    Some(url)
}
