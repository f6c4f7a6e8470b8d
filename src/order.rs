//! The order mirror's domain types: the latest known state of a Shopify order.
//!
//! These are shipgate's own types. GraphQL response types are generated at the edge
//! (`shopify::ops`) and converted into these, so nothing past the client depends on the shape of
//! a query. Ids are Shopify's GraphQL ids (`gid://shopify/Order/…`) kept as strings: they exceed
//! 2^53 and are opaque.

use serde::{Deserialize, Serialize};

/// A point in time as Shopify sent it, with its Unix milliseconds for comparisons. Two texts
/// for the same instant (another offset) compare equal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timestamp {
    /// Milliseconds since the Unix epoch (compared first).
    pub unix_ms: i64,
    /// The RFC 3339 text as received.
    pub text: String,
}

impl PartialEq for Timestamp {
    fn eq(&self, other: &Self) -> bool {
        self.unix_ms == other.unix_ms
    }
}

impl Eq for Timestamp {}

impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timestamp {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.unix_ms.cmp(&other.unix_ms)
    }
}

impl Timestamp {
    /// Parses an RFC 3339 timestamp such as `2026-11-25T10:00:00Z` or `…-05:00`.
    pub fn parse(text: &str) -> Result<Timestamp, String> {
        let parsed =
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map_err(|e| format!("`{text}` is not an RFC 3339 timestamp: {e}"))?;
        Ok(Timestamp {
            unix_ms: (parsed.unix_timestamp_nanos() / 1_000_000) as i64,
            text: text.to_string(),
        })
    }

    /// The timestamp of a Unix millisecond count, rendered in UTC.
    pub fn from_unix_ms(unix_ms: i64) -> Timestamp {
        let at = time::OffsetDateTime::from_unix_timestamp_nanos(unix_ms as i128 * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let text = at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Timestamp { unix_ms, text }
    }
}

/// The status of a fulfillment order, as Shopify names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FulfillmentOrderStatus {
    Open,
    InProgress,
    OnHold,
    Scheduled,
    Incomplete,
    Closed,
    Cancelled,
    /// A value this build does not know (Shopify adds enum values without notice).
    Other(String),
}

impl FulfillmentOrderStatus {
    /// Maps Shopify's enum name (`OPEN`, `ON_HOLD`, …).
    pub fn from_shopify(name: &str) -> FulfillmentOrderStatus {
        match name {
            "OPEN" => Self::Open,
            "IN_PROGRESS" => Self::InProgress,
            "ON_HOLD" => Self::OnHold,
            "SCHEDULED" => Self::Scheduled,
            "INCOMPLETE" => Self::Incomplete,
            "CLOSED" => Self::Closed,
            "CANCELLED" => Self::Cancelled,
            other => Self::Other(other.to_string()),
        }
    }

    /// Shopify's enum name.
    pub fn as_shopify(&self) -> &str {
        match self {
            Self::Open => "OPEN",
            Self::InProgress => "IN_PROGRESS",
            Self::OnHold => "ON_HOLD",
            Self::Scheduled => "SCHEDULED",
            Self::Incomplete => "INCOMPLETE",
            Self::Closed => "CLOSED",
            Self::Cancelled => "CANCELLED",
            Self::Other(name) => name,
        }
    }
}

/// A shipping address. Customer data: erased by `customers/redact`, never logged.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub name: Option<String>,
    pub address1: Option<String>,
    pub address2: Option<String>,
    pub city: Option<String>,
    pub province_code: Option<String>,
    pub zip: Option<String>,
    pub country_code: Option<String>,
    pub phone: Option<String>,
}

impl Address {
    /// What keeps a supplier from shipping to it, if anything: a street line and a country are
    /// the least any carrier needs (a city or postcode is not used everywhere).
    pub fn unusable(address: Option<&Address>) -> Option<&'static str> {
        let filled = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
        match address {
            None => Some("the order has no shipping address"),
            Some(a) if !filled(&a.address1) => Some("the shipping address has no street line"),
            Some(a) if !filled(&a.country_code) => Some("the shipping address has no country"),
            Some(_) => None,
        }
    }
}

impl std::fmt::Debug for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Address(country {:?}, redacted)", self.country_code)
    }
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItem {
    pub id: String,
    pub sku: Option<String>,
    pub variant_id: Option<String>,
    pub variant_title: Option<String>,
    /// The quantity originally ordered.
    pub quantity: i64,
    /// The quantity after edits and removals.
    pub current_quantity: i64,
    /// What is still to be fulfilled.
    pub unfulfilled_quantity: i64,
    pub requires_shipping: bool,
}

/// A hold on a fulfillment order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub id: String,
    /// The idempotency handle the app that placed it chose (shipgate: one per exception).
    pub handle: Option<String>,
    /// `FulfillmentHoldReason`, e.g. `INVENTORY_OUT_OF_STOCK`.
    pub reason: String,
    pub reason_notes: Option<String>,
    /// Whether shipgate's own app placed it (only those may be released by shipgate).
    pub held_by_us: bool,
}

/// A line of a fulfillment order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FulfillmentOrderLine {
    pub id: String,
    /// The order line item it ships.
    pub line_item_id: String,
    pub total_quantity: i64,
    pub remaining_quantity: i64,
}

/// The part of an order one location fulfils.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FulfillmentOrder {
    pub id: String,
    pub status: FulfillmentOrderStatus,
    pub updated_at: Option<Timestamp>,
    pub location_id: Option<String>,
    pub location_name: Option<String>,
    pub holds: Vec<Hold>,
    pub lines: Vec<FulfillmentOrderLine>,
}

/// Tracking attached to a fulfillment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracking {
    pub company: Option<String>,
    pub number: Option<String>,
    pub url: Option<String>,
}

/// A fulfillment that exists in Shopify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fulfillment {
    pub id: String,
    /// `FulfillmentStatus`, e.g. `SUCCESS`.
    pub status: String,
    pub created_at: Option<Timestamp>,
    pub tracking: Vec<Tracking>,
}

/// The latest known state of one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderMirror {
    /// The shop's domain.
    pub shop: String,
    pub id: String,
    /// The order's name, e.g. `#1001`.
    pub name: String,
    pub created_at: Option<Timestamp>,
    /// Invariant 4 compares this: an older state never replaces a newer one.
    pub updated_at: Timestamp,
    pub cancelled_at: Option<Timestamp>,
    pub cancel_reason: Option<String>,
    /// `OrderDisplayFulfillmentStatus`, e.g. `UNFULFILLED`.
    pub display_fulfillment_status: String,
    pub shipping_address: Option<Address>,
    pub line_items: Vec<LineItem>,
    pub fulfillment_orders: Vec<FulfillmentOrder>,
    pub fulfillments: Vec<Fulfillment>,
    /// Set when a nested list did not fit in one query; the mirror is then incomplete.
    pub truncated: bool,
}

impl OrderMirror {
    /// Whether the order was cancelled in Shopify.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled_at.is_some()
    }
}

/// A changed order found by the polling scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedOrder {
    pub id: String,
    pub updated_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_compare_by_instant_not_by_text() {
        let utc = Timestamp::parse("2026-11-25T15:00:00Z").unwrap();
        let est = Timestamp::parse("2026-11-25T10:00:01-05:00").unwrap();
        assert!(est > utc, "one second later, whatever the offset");
        assert_eq!(
            Timestamp::from_unix_ms(utc.unix_ms).text,
            "2026-11-25T15:00:00Z"
        );
        assert!(Timestamp::parse("yesterday").is_err());
        assert_eq!(
            Timestamp::parse("2026-11-25T10:00:00-05:00").unwrap(),
            Timestamp::parse("2026-11-25T15:00:00Z").unwrap(),
            "the same instant in two offsets is equally new"
        );
    }

    #[test]
    fn unknown_fulfillment_order_statuses_survive() {
        let s = FulfillmentOrderStatus::from_shopify("AWAITING_SOMETHING_NEW");
        assert_eq!(s.as_shopify(), "AWAITING_SOMETHING_NEW");
        assert_eq!(
            FulfillmentOrderStatus::from_shopify("ON_HOLD"),
            FulfillmentOrderStatus::OnHold
        );
    }
}
