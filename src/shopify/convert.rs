//! Conversions between graphql_client's generated types (`ops`) and shipgate's domain types
//! (`crate::order`), plus the builders of the variables the write-back sends.
//!
//! Nothing here panics on Shopify data: a value the domain cannot represent (a timestamp that is
//! not RFC 3339, a node that is not an order) becomes a `ConvertError` naming the field and the
//! order. Enum values keep Shopify's names as strings, and a value this build does not know
//! (graphql_client's `Other(name)`) keeps its name, because Shopify adds enum values without
//! a version bump.

use serde::Serialize;
use serde::de::IntoDeserializer;

use crate::order::{
    Address, ChangedOrder, Fulfillment, FulfillmentOrder, FulfillmentOrderLine,
    FulfillmentOrderStatus, Hold, LineItem, OrderMirror, Timestamp, Tracking,
};
use crate::shopify::ops;
use crate::shopify::ops::fulfillment_create as fc;
use crate::shopify::ops::fulfillment_event_create as fec;
use crate::shopify::ops::fulfillment_events as fev;
use crate::shopify::ops::fulfillment_order_hold as fh;
use crate::shopify::ops::fulfillment_tracking_info_update as ftu;
use crate::shopify::ops::orders_by_ids as obi;

/// `fulfillments(first: …)` in `graphql/OrdersByIds.graphql`. That field is a plain list without
/// `pageInfo`, so a list this long may have been cut and the mirror is marked truncated.
const FULFILLMENTS_FIRST: usize = 10;

/// `trackingInfo(first: …)` in `graphql/OrdersByIds.graphql`, read the same way as
/// `FULFILLMENTS_FIRST`.
const TRACKING_FIRST: usize = 10;

/// `events(first: …)` in `graphql/FulfillmentEvents.graphql`: how many of a fulfillment's newest
/// events a read-back sees.
pub const EVENTS_FIRST: usize = 100;

/// The longest hold handle Shopify accepts, in characters.
const HOLD_HANDLE_MAX_CHARS: usize = 64;

/// What Shopify's data could not be converted into, or a write-back input Shopify would reject.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// `nodes(ids:)` answered with a different number of entries than ids were asked for.
    #[error("field `nodes`: {returned} entries returned for {requested} requested order ids")]
    NodeCount {
        /// How many ids were requested.
        requested: usize,
        /// How many entries `nodes` held.
        returned: usize,
    },
    /// A requested id resolved to an object that is not an order.
    #[error(
        "field `nodes[{index}]`: requested order {id} resolved to a `{typename}` node, not an Order"
    )]
    NotAnOrder {
        /// Position in the request.
        index: usize,
        /// The id that was requested.
        id: String,
        /// The variant name of the node (`Unknown` for a type outside the schema subset).
        typename: String,
    },
    /// An order came back at the position of another requested id.
    #[error(
        "field `nodes[{index}].id`: order {returned} came back where order {requested} was requested"
    )]
    IdMismatch {
        /// Position in the request.
        index: usize,
        /// The id that was requested at that position.
        requested: String,
        /// The id of the order Shopify returned there.
        returned: String,
    },
    /// A timestamp field of an order is not RFC 3339.
    #[error("order {order_id}: field `{field}`: {reason}")]
    Timestamp {
        /// The order the field belongs to.
        order_id: String,
        /// The field's path inside the order, e.g. `fulfillmentOrders[1].updatedAt`.
        field: String,
        /// Why the text did not parse.
        reason: String,
    },
    /// A hold reason that is not a `FulfillmentHoldReason` value this build knows.
    #[error(
        "fulfillment order {fulfillment_order_id}: field `reason`: unknown FulfillmentHoldReason `{reason}`"
    )]
    UnknownHoldReason {
        /// The fulfillment order the hold was for.
        fulfillment_order_id: String,
        /// The name that was given.
        reason: String,
    },
    /// A fulfillment event status that is not a `FulfillmentEventStatus` value this build knows.
    #[error(
        "fulfillment {fulfillment_id}: field `status`: unknown FulfillmentEventStatus `{status}`"
    )]
    UnknownEventStatus {
        /// The fulfillment the event was for.
        fulfillment_id: String,
        /// The name that was given.
        status: String,
    },
    /// A field of a fulfillment (a write-back input, or the read-back answer) that Shopify would
    /// refuse or that shipgate cannot read.
    #[error("fulfillment {fulfillment_id}: field `{field}`: {reason}")]
    FulfillmentField {
        /// The fulfillment concerned.
        fulfillment_id: String,
        /// The field's path, e.g. `events[2].happenedAt`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `nodes(ids: [fulfillment])` answered with something else than that one fulfillment.
    #[error("field `nodes`: requested fulfillment {requested} came back as {returned}")]
    NotTheFulfillment {
        /// The fulfillment id that was requested.
        requested: String,
        /// What came back instead (a count, another type, another id).
        returned: String,
    },
    /// A hold handle that is empty or longer than Shopify accepts.
    #[error(
        "fulfillment order {fulfillment_order_id}: field `handle`: must be 1 to 64 characters, got {chars}"
    )]
    BadHoldHandle {
        /// The fulfillment order the hold was for.
        fulfillment_order_id: String,
        /// The handle's length in characters.
        chars: usize,
    },
}

/// One requested order as `nodes(ids:)` answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
// Nearly every entry is an `Order`, so boxing it would add an allocation per order to save
// space only on the rare `Missing`.
#[allow(clippy::large_enum_variant)]
pub enum Fetched {
    /// The order's current state.
    Order(OrderMirror),
    /// `nodes` returned null for this requested id: the order was deleted or is not visible to
    /// the app (for example older than the `read_orders` window).
    Missing(String),
}

/// One page of the polling scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    /// The changed orders on this page, in Shopify's `UPDATED_AT` order.
    pub orders: Vec<ChangedOrder>,
    /// Whether another page follows.
    pub has_next_page: bool,
    /// The cursor to pass as `after` for the next page.
    pub end_cursor: Option<String>,
}

/// What shipgate wants one `fulfillmentCreate` call to do, in domain terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FulfillmentRequest {
    /// Per fulfillment order id, the `(fulfillment order line id, quantity)` pairs to fulfil.
    /// Every fulfillment order must belong to the same order and location. Shopify fulfils every
    /// line of a fulfillment order whose line list is "left blank", and an empty list (sent as
    /// `[]`) may count as blank, so callers must always name the lines.
    pub lines_by_fulfillment_order: Vec<(String, Vec<(String, i64)>)>,
    /// Whether Shopify emails the shipping confirmation to the customer.
    pub notify_customer: bool,
    /// The carrier exactly as Shopify's list spells it; otherwise give `tracking_urls` too.
    pub tracking_company: Option<String>,
    /// The tracking numbers, one or more.
    pub tracking_numbers: Vec<String>,
    /// Tracking URLs, matched to `tracking_numbers` by position.
    pub tracking_urls: Vec<String>,
    /// An optional message stored with the fulfillment.
    pub message: Option<String>,
}

/// One fulfillment event as Shopify lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostedEvent {
    /// The event's gid.
    pub id: String,
    /// Its `FulfillmentEventStatus` name (an unknown value keeps its name).
    pub status: String,
    /// When it happened.
    pub happened_at: Timestamp,
}

/// What a fulfillment carries now, as `FulfillmentEvents` reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FulfillmentProgress {
    /// The fulfillment's gid.
    pub id: String,
    /// Its tracking numbers (entries without a number are left out).
    pub tracking_numbers: Vec<String>,
    /// Its newest events (at most `EVENTS_FIRST`), newest first.
    pub events: Vec<PostedEvent>,
}

impl FulfillmentProgress {
    /// The event already posted with this status at this instant, if any.
    ///
    /// Instants are compared in whole Unix seconds, not as text: Shopify answers in UTC without
    /// fractions, whatever offset and precision the event was posted with. Only the newest
    /// `EVENTS_FIRST` events are read, so an event older than that many later ones is not found.
    pub fn find_event(&self, status: &str, happened_at: &Timestamp) -> Option<&PostedEvent> {
        let second = happened_at.unix_ms.div_euclid(1000);
        self.events
            .iter()
            .find(|e| e.status == status && e.happened_at.unix_ms.div_euclid(1000) == second)
    }

    /// Whether the fulfillment carries exactly these tracking numbers, in any order.
    pub fn has_tracking_numbers(&self, numbers: &[String]) -> bool {
        let ours: std::collections::BTreeSet<&str> = numbers.iter().map(String::as_str).collect();
        let theirs: std::collections::BTreeSet<&str> =
            self.tracking_numbers.iter().map(String::as_str).collect();
        ours == theirs
    }
}

/// Converts an `OrdersByIds` response into one `Fetched` per requested id, in request order.
///
/// Shopify returns `nodes` in the order of the ids it was given, so entry `i` answers
/// `requested[i]`; a count or id that does not line up is an error rather than a mirror stored
/// under the wrong order.
pub fn orders_by_ids(
    shop: &str,
    requested: &[String],
    data: obi::ResponseData,
) -> Result<Vec<Fetched>, ConvertError> {
    if data.nodes.len() != requested.len() {
        return Err(ConvertError::NodeCount {
            requested: requested.len(),
            returned: data.nodes.len(),
        });
    }
    requested
        .iter()
        .zip(data.nodes)
        .enumerate()
        .map(|(index, (id, node))| match node {
            None => Ok(Fetched::Missing(id.clone())),
            Some(obi::OrdersByIdsNodes::Order(order)) if order.id != *id => {
                Err(ConvertError::IdMismatch {
                    index,
                    requested: id.clone(),
                    returned: order.id,
                })
            }
            Some(obi::OrdersByIdsNodes::Order(order)) => {
                order_mirror(shop, order).map(Fetched::Order)
            }
            // The other variants carry no data; their Debug output is the GraphQL type name.
            Some(other) => Err(ConvertError::NotAnOrder {
                index,
                id: id.clone(),
                typename: format!("{other:?}"),
            }),
        })
        .collect()
}

/// Converts one `OrderScan` page.
pub fn order_scan(data: ops::order_scan::ResponseData) -> Result<ScanPage, ConvertError> {
    let orders = data
        .orders
        .nodes
        .into_iter()
        .map(|node| {
            Ok(ChangedOrder {
                updated_at: timestamp(&node.id, "updatedAt", &node.updated_at)?,
                id: node.id,
            })
        })
        .collect::<Result<Vec<_>, ConvertError>>()?;
    Ok(ScanPage {
        orders,
        has_next_page: data.orders.page_info.has_next_page,
        end_cursor: data.orders.page_info.end_cursor,
    })
}

/// Builds the `FulfillmentCreate` variables for a request.
///
/// Tracking goes in the plural fields (`numbers`, `urls`), which Shopify matches by position;
/// `trackingInfo` is left out entirely when the request carries no tracking at all.
pub fn fulfillment_create_variables(req: &FulfillmentRequest) -> fc::Variables {
    let has_tracking = req.tracking_company.is_some()
        || !req.tracking_numbers.is_empty()
        || !req.tracking_urls.is_empty();
    let tracking_info = has_tracking.then(|| fc::FulfillmentTrackingInput {
        company: req.tracking_company.clone(),
        number: None,
        numbers: non_empty(&req.tracking_numbers),
        url: None,
        urls: non_empty(&req.tracking_urls),
    });
    let line_items_by_fulfillment_order = req
        .lines_by_fulfillment_order
        .iter()
        .map(
            |(fulfillment_order_id, lines)| fc::FulfillmentOrderLineItemsInput {
                fulfillment_order_id: fulfillment_order_id.clone(),
                fulfillment_order_line_items: Some(
                    lines
                        .iter()
                        .map(|(id, quantity)| fc::FulfillmentOrderLineItemInput {
                            id: id.clone(),
                            quantity: *quantity,
                        })
                        .collect(),
                ),
            },
        )
        .collect();
    fc::Variables {
        fulfillment: fc::FulfillmentInput {
            line_items_by_fulfillment_order,
            notify_customer: Some(req.notify_customer),
            origin_address: None,
            tracking_info,
        },
        message: req.message.clone(),
    }
}

/// The name a `FulfillmentEventStatus` has in an Admin API version: the carrier's pickup is
/// `CARRIER_PICKED_UP` from 2025-10 on, and `IN_TRANSIT` before it existed. Versions are
/// `YYYY-MM` (they compare as text); `unstable` counts as new.
pub fn event_status_for<'a>(api_version: &str, status: &'a str) -> &'a str {
    if status == "CARRIER_PICKED_UP" && api_version < "2025-10" {
        "IN_TRANSIT"
    } else {
        status
    }
}

/// Builds the `FulfillmentOrderHold` variables: a hold on the whole fulfillment order, keyed by
/// `handle`, with `reason` given as a `FulfillmentHoldReason` name (e.g. `INVENTORY_OUT_OF_STOCK`).
///
/// A second hold with the same handle on the same fulfillment order is refused by Shopify with
/// `DUPLICATE_FULFILLMENT_HOLD_HANDLE`, which is how the handle makes a retry harmless.
pub fn hold_variables(
    fo_id: &str,
    reason: &str,
    notes: &str,
    handle: &str,
) -> Result<fh::Variables, ConvertError> {
    // The generated enum's own Deserialize knows the schema's names, so it is the single place
    // that lists them; anything it files under `Other` would be rejected by Shopify.
    let parsed: Result<fh::FulfillmentHoldReason, serde::de::value::Error> =
        serde::Deserialize::deserialize(reason.into_deserializer());
    let reason = match parsed {
        Ok(fh::FulfillmentHoldReason::Other(_)) | Err(_) => {
            return Err(ConvertError::UnknownHoldReason {
                fulfillment_order_id: fo_id.to_string(),
                reason: reason.to_string(),
            });
        }
        Ok(known) => known,
    };
    // An empty handle is Shopify's default and would collide with any other handle-less hold;
    // a longer one is refused by Shopify, so both are caught here where the cause is visible.
    let chars = handle.chars().count();
    if chars == 0 || chars > HOLD_HANDLE_MAX_CHARS {
        return Err(ConvertError::BadHoldHandle {
            fulfillment_order_id: fo_id.to_string(),
            chars,
        });
    }
    Ok(fh::Variables {
        id: fo_id.to_string(),
        fulfillment_hold: fh::FulfillmentOrderHoldInput {
            external_id: None,
            // Left out, the hold covers every line of the fulfillment order.
            fulfillment_order_line_items: None,
            handle: Some(handle.to_string()),
            notify_merchant: None,
            reason,
            reason_notes: (!notes.is_empty()).then(|| notes.to_string()),
        },
    })
}

/// Builds the `FulfillmentEventCreate` variables: `status` is a `FulfillmentEventStatus` name
/// (e.g. `CARRIER_PICKED_UP`), `happened_at` RFC 3339.
///
/// A status the schema does not name, or a time that is not RFC 3339, is refused here, where the
/// cause is visible, rather than by Shopify as a GraphQL error about the variables.
pub fn fulfillment_event_variables(
    fulfillment_id: &str,
    status: &str,
    happened_at: &str,
    message: Option<&str>,
) -> Result<fec::Variables, ConvertError> {
    // As for hold reasons, the generated enum's Deserialize is the single list of known names.
    let parsed: Result<fec::FulfillmentEventStatus, serde::de::value::Error> =
        serde::Deserialize::deserialize(status.into_deserializer());
    let status = match parsed {
        Ok(fec::FulfillmentEventStatus::Other(_)) | Err(_) => {
            return Err(ConvertError::UnknownEventStatus {
                fulfillment_id: fulfillment_id.to_string(),
                status: status.to_string(),
            });
        }
        Ok(known) => known,
    };
    Timestamp::parse(happened_at).map_err(|reason| ConvertError::FulfillmentField {
        fulfillment_id: fulfillment_id.to_string(),
        field: "happenedAt".into(),
        reason,
    })?;
    Ok(fec::Variables {
        fulfillment_event: fec::FulfillmentEventInput {
            address1: None,
            city: None,
            country: None,
            estimated_delivery_at: None,
            fulfillment_id: fulfillment_id.to_string(),
            happened_at: Some(happened_at.to_string()),
            latitude: None,
            longitude: None,
            message: message.filter(|m| !m.is_empty()).map(str::to_string),
            province: None,
            status,
            zip: None,
        },
    })
}

/// Builds the `FulfillmentTrackingInfoUpdate` variables, which replace the fulfillment's tracking
/// with these numbers (and URLs, matched by position) under `company` as given.
///
/// Tracking goes in the plural fields, as in `fulfillment_create_variables`. At least one number
/// is required: without one the update would not say what the fulfillment carries from now on,
/// and a read-back could not tell whether it landed.
pub fn tracking_update_variables(
    fulfillment_id: &str,
    company: Option<&str>,
    numbers: &[String],
    urls: &[String],
    notify_customer: bool,
) -> Result<ftu::Variables, ConvertError> {
    if numbers.iter().all(|n| n.trim().is_empty()) {
        return Err(ConvertError::FulfillmentField {
            fulfillment_id: fulfillment_id.to_string(),
            field: "trackingInfoInput.numbers".into(),
            reason: "at least one tracking number is required".into(),
        });
    }
    Ok(ftu::Variables {
        fulfillment_id: fulfillment_id.to_string(),
        tracking_info_input: ftu::FulfillmentTrackingInput {
            company: company.map(str::to_string),
            number: None,
            numbers: non_empty(numbers),
            url: None,
            urls: non_empty(urls),
        },
        notify_customer: Some(notify_customer),
    })
}

/// Converts a `FulfillmentEvents` answer for `requested`: none when Shopify has no such
/// fulfillment (`nodes` answered null), an error when anything else than it came back.
pub fn fulfillment_progress(
    requested: &str,
    data: fev::ResponseData,
) -> Result<Option<FulfillmentProgress>, ConvertError> {
    let not_it = |returned: String| ConvertError::NotTheFulfillment {
        requested: requested.to_string(),
        returned,
    };
    let mut nodes = data.nodes;
    if nodes.len() != 1 {
        return Err(not_it(format!("{} entries", nodes.len())));
    }
    let fulfillment = match nodes.pop().flatten() {
        None => return Ok(None),
        Some(fev::FulfillmentEventsNodes::Fulfillment(f)) if f.id == requested => f,
        Some(fev::FulfillmentEventsNodes::Fulfillment(f)) => return Err(not_it(f.id)),
        // The other variants carry no data; their Debug output is the GraphQL type name.
        Some(other) => return Err(not_it(format!("a `{other:?}` node"))),
    };
    let events = fulfillment
        .events
        .nodes
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let happened_at = Timestamp::parse(&e.happened_at).map_err(|reason| {
                ConvertError::FulfillmentField {
                    fulfillment_id: requested.to_string(),
                    field: format!("events[{i}].happenedAt"),
                    reason,
                }
            })?;
            Ok(PostedEvent {
                id: e.id,
                status: enum_name(&e.status),
                happened_at,
            })
        })
        .collect::<Result<Vec<_>, ConvertError>>()?;
    Ok(Some(FulfillmentProgress {
        id: fulfillment.id,
        tracking_numbers: fulfillment
            .tracking_info
            .into_iter()
            .filter_map(|t| t.number)
            .collect(),
        events,
    }))
}

/// Converts one order node into the mirror.
fn order_mirror(
    shop: &str,
    order: obi::OrdersByIdsNodesOnOrder,
) -> Result<OrderMirror, ConvertError> {
    let obi::OrdersByIdsNodesOnOrder {
        id,
        name,
        created_at,
        updated_at,
        cancelled_at,
        cancel_reason,
        display_fulfillment_status,
        shipping_address,
        line_items,
        fulfillment_orders,
        fulfillments,
    } = order;

    let truncated = line_items.page_info.has_next_page
        || fulfillment_orders.page_info.has_next_page
        || fulfillment_orders
            .nodes
            .iter()
            .any(|fo| fo.line_items.page_info.has_next_page)
        || fulfillments.len() >= FULFILLMENTS_FIRST
        || fulfillments
            .iter()
            .any(|f| f.tracking_info.len() >= TRACKING_FIRST);

    let fulfillment_orders = fulfillment_orders
        .nodes
        .into_iter()
        .enumerate()
        .map(|(i, fo)| fulfillment_order(&id, i, fo))
        .collect::<Result<Vec<_>, _>>()?;
    let fulfillments = fulfillments
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            Ok(Fulfillment {
                created_at: Some(timestamp(
                    &id,
                    &format!("fulfillments[{i}].createdAt"),
                    &f.created_at,
                )?),
                id: f.id,
                status: enum_name(&f.status),
                tracking: f
                    .tracking_info
                    .into_iter()
                    .map(|t| Tracking {
                        company: t.company,
                        number: t.number,
                        url: t.url,
                    })
                    .collect(),
            })
        })
        .collect::<Result<Vec<_>, ConvertError>>()?;

    Ok(OrderMirror {
        shop: shop.to_string(),
        name,
        created_at: Some(timestamp(&id, "createdAt", &created_at)?),
        updated_at: timestamp(&id, "updatedAt", &updated_at)?,
        cancelled_at: cancelled_at
            .map(|text| timestamp(&id, "cancelledAt", &text))
            .transpose()?,
        cancel_reason: cancel_reason.map(|reason| enum_name(&reason)),
        display_fulfillment_status: enum_name(&display_fulfillment_status),
        shipping_address: shipping_address.map(|a| Address {
            name: a.name,
            address1: a.address1,
            address2: a.address2,
            city: a.city,
            province_code: a.province_code,
            zip: a.zip,
            country_code: a.country_code_v2.map(|code| enum_name(&code)),
            phone: a.phone,
        }),
        line_items: line_items.nodes.into_iter().map(line_item).collect(),
        fulfillment_orders,
        fulfillments,
        truncated,
        id,
    })
}

/// Converts one order line item.
fn line_item(item: obi::OrdersByIdsNodesOnOrderLineItemsNodes) -> LineItem {
    let (variant_id, variant_sku) = match item.variant {
        Some(variant) => (Some(variant.id), variant.sku),
        None => (None, None),
    };
    LineItem {
        id: item.id,
        // The line's own SKU is what was ordered; the variant's current SKU only fills in when the
        // variant had none at order time (merchants often add SKUs after the fact).
        sku: item.sku.or(variant_sku),
        variant_id,
        variant_title: item.variant_title,
        quantity: item.quantity,
        current_quantity: item.current_quantity,
        unfulfilled_quantity: item.unfulfilled_quantity,
        requires_shipping: item.requires_shipping,
    }
}

/// Converts one fulfillment order (position `index` in the order's list).
fn fulfillment_order(
    order_id: &str,
    index: usize,
    fo: obi::OrdersByIdsNodesOnOrderFulfillmentOrdersNodes,
) -> Result<FulfillmentOrder, ConvertError> {
    let updated_at = timestamp(
        order_id,
        &format!("fulfillmentOrders[{index}].updatedAt"),
        &fo.updated_at,
    )?;
    Ok(FulfillmentOrder {
        id: fo.id,
        status: FulfillmentOrderStatus::from_shopify(&enum_name(&fo.status)),
        updated_at: Some(updated_at),
        location_id: fo.assigned_location.location.map(|location| location.id),
        location_name: Some(fo.assigned_location.name),
        holds: fo
            .fulfillment_holds
            .into_iter()
            .map(|hold| Hold {
                id: hold.id,
                handle: hold.handle,
                reason: enum_name(&hold.reason),
                reason_notes: hold.reason_notes,
                held_by_us: hold.held_by_requesting_app,
            })
            .collect(),
        lines: fo
            .line_items
            .nodes
            .into_iter()
            .map(|line| FulfillmentOrderLine {
                id: line.id,
                line_item_id: line.line_item.id,
                total_quantity: line.total_quantity,
                remaining_quantity: line.remaining_quantity,
            })
            .collect(),
    })
}

/// Parses a timestamp field of an order, naming the field and the order on failure.
fn timestamp(order_id: &str, field: &str, text: &str) -> Result<Timestamp, ConvertError> {
    Timestamp::parse(text).map_err(|reason| ConvertError::Timestamp {
        order_id: order_id.to_string(),
        field: field.to_string(),
        reason,
    })
}

/// Shopify's name of a generated enum value; an unknown value (`Other(name)`) gives `name`.
fn enum_name(value: &impl Serialize) -> String {
    // graphql_client's generated `Serialize` writes exactly the GraphQL name (and `name` for
    // `Other(name)`), so going through it avoids repeating every enum's values in a match.
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        // Unreachable for generated enums, which always serialize as a string; handled anyway so
        // that no input can make this module panic.
        other => format!("{other:?}"),
    }
}

/// `Some(list)` unless the list is empty, so an empty list is left out of the request.
fn non_empty(list: &[String]) -> Option<Vec<String>> {
    (!list.is_empty()).then(|| list.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SHOP: &str = "example-dropship.myshopify.com";
    /// Shopify's own sample order id: above 2^53, so any float on the way would corrupt it.
    const BIG_ORDER: &str = "gid://shopify/Order/820982911946154508";

    /// An order with 2 line items, 2 fulfillment orders at 2 locations (the first held by
    /// shipgate and by another app), and 1 fulfillment with tracking.
    fn full_order_json() -> serde_json::Value {
        json!({
            "__typename": "Order",
            "id": BIG_ORDER,
            "name": "#1001",
            "createdAt": "2026-11-20T09:15:00Z",
            "updatedAt": "2026-11-25T10:00:00-05:00",
            "cancelledAt": null,
            "cancelReason": null,
            "displayFulfillmentStatus": "PARTIALLY_FULFILLED",
            "shippingAddress": {
                "name": "Ada Lovelace",
                "address1": "12 St James's Square",
                "address2": null,
                "city": "London",
                "provinceCode": "ENG",
                "zip": "SW1Y 4JH",
                "countryCodeV2": "GB",
                "phone": "+44 20 7946 0000"
            },
            "lineItems": {
                "pageInfo": { "hasNextPage": false },
                "nodes": [
                    {
                        "id": "gid://shopify/LineItem/466157049",
                        "sku": "LAMP-RED",
                        "quantity": 2,
                        "currentQuantity": 2,
                        "unfulfilledQuantity": 2,
                        "variantTitle": "Red",
                        "requiresShipping": true,
                        "variant": { "id": "gid://shopify/ProductVariant/39072856", "sku": "LAMP-RED" }
                    },
                    {
                        "id": "gid://shopify/LineItem/518995019",
                        "sku": null,
                        "quantity": 1,
                        "currentQuantity": 1,
                        "unfulfilledQuantity": 0,
                        "variantTitle": null,
                        "requiresShipping": true,
                        "variant": { "id": "gid://shopify/ProductVariant/49148385", "sku": "CABLE-1M" }
                    }
                ]
            },
            "fulfillmentOrders": {
                "pageInfo": { "hasNextPage": false },
                "nodes": [
                    {
                        "id": "gid://shopify/FulfillmentOrder/1046000777",
                        "status": "ON_HOLD",
                        "updatedAt": "2026-11-25T14:59:00Z",
                        "assignedLocation": {
                            "name": "Shenzhen supplier",
                            "location": { "id": "gid://shopify/Location/124656943" }
                        },
                        "fulfillmentHolds": [
                            {
                                "id": "gid://shopify/FulfillmentHold/1",
                                "handle": "shipgate-oos-1046000777",
                                "reason": "INVENTORY_OUT_OF_STOCK",
                                "reasonNotes": "Supplier out of red lamps",
                                "heldByRequestingApp": true
                            },
                            {
                                "id": "gid://shopify/FulfillmentHold/2",
                                "handle": "",
                                "reason": "HIGH_RISK_OF_FRAUD",
                                "reasonNotes": null,
                                "heldByRequestingApp": false
                            }
                        ],
                        "lineItems": {
                            "pageInfo": { "hasNextPage": false },
                            "nodes": [
                                {
                                    "id": "gid://shopify/FulfillmentOrderLineItem/1058737482",
                                    "totalQuantity": 2,
                                    "remainingQuantity": 2,
                                    "lineItem": { "id": "gid://shopify/LineItem/466157049" }
                                }
                            ]
                        }
                    },
                    {
                        "id": "gid://shopify/FulfillmentOrder/1046000778",
                        "status": "CLOSED",
                        "updatedAt": "2026-11-24T08:00:00Z",
                        "assignedLocation": {
                            "name": "Warehouse EU",
                            "location": { "id": "gid://shopify/Location/346779380" }
                        },
                        "fulfillmentHolds": [],
                        "lineItems": {
                            "pageInfo": { "hasNextPage": false },
                            "nodes": [
                                {
                                    "id": "gid://shopify/FulfillmentOrderLineItem/1058737483",
                                    "totalQuantity": 1,
                                    "remainingQuantity": 0,
                                    "lineItem": { "id": "gid://shopify/LineItem/518995019" }
                                }
                            ]
                        }
                    }
                ]
            },
            "fulfillments": [
                {
                    "id": "gid://shopify/Fulfillment/255858046",
                    "status": "SUCCESS",
                    "createdAt": "2026-11-24T08:00:00Z",
                    "trackingInfo": [
                        {
                            "company": "YunExpress",
                            "number": "YT2412345678901234",
                            "url": "https://www.yuntrack.com/parcelTracking?id=YT2412345678901234"
                        }
                    ]
                }
            ]
        })
    }

    /// A minimal valid order node, for tests that change one thing.
    fn small_order_json(id: &str) -> serde_json::Value {
        json!({
            "__typename": "Order",
            "id": id,
            "name": "#1002",
            "createdAt": "2026-11-21T00:00:00Z",
            "updatedAt": "2026-11-21T00:00:00Z",
            "cancelledAt": null,
            "cancelReason": null,
            "displayFulfillmentStatus": "UNFULFILLED",
            "shippingAddress": null,
            "lineItems": { "pageInfo": { "hasNextPage": false }, "nodes": [] },
            "fulfillmentOrders": { "pageInfo": { "hasNextPage": false }, "nodes": [] },
            "fulfillments": []
        })
    }

    fn response(nodes: serde_json::Value) -> obi::ResponseData {
        serde_json::from_value(json!({ "nodes": nodes })).expect("fixture deserializes")
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn only_order(fetched: Vec<Fetched>) -> OrderMirror {
        match <[Fetched; 1]>::try_from(fetched) {
            Ok([Fetched::Order(order)]) => order,
            other => panic!("expected one order, got {other:?}"),
        }
    }

    #[test]
    fn the_pickup_is_in_transit_before_api_2025_10() {
        assert_eq!(
            event_status_for("2025-07", "CARRIER_PICKED_UP"),
            "IN_TRANSIT"
        );
        assert_eq!(
            event_status_for("2025-10", "CARRIER_PICKED_UP"),
            "CARRIER_PICKED_UP"
        );
        assert_eq!(
            event_status_for("2026-10", "CARRIER_PICKED_UP"),
            "CARRIER_PICKED_UP"
        );
        assert_eq!(
            event_status_for("unstable", "CARRIER_PICKED_UP"),
            "CARRIER_PICKED_UP"
        );
        assert_eq!(event_status_for("2025-01", "DELIVERED"), "DELIVERED");
    }
    #[test]
    fn full_order_converts_field_by_field() {
        let data = response(json!([full_order_json()]));
        let order = only_order(orders_by_ids(SHOP, &ids(&[BIG_ORDER]), data).unwrap());

        assert_eq!(order.shop, SHOP);
        assert_eq!(order.id, BIG_ORDER, "an id above 2^53 survives intact");
        assert_eq!(order.name, "#1001");
        assert_eq!(
            order.created_at,
            Some(Timestamp::parse("2026-11-20T09:15:00Z").unwrap())
        );
        assert_eq!(order.updated_at.text, "2026-11-25T10:00:00-05:00");
        assert_eq!(
            order.updated_at.unix_ms,
            Timestamp::parse("2026-11-25T15:00:00Z").unwrap().unix_ms
        );
        assert_eq!(order.cancelled_at, None);
        assert_eq!(order.cancel_reason, None);
        assert!(!order.is_cancelled());
        assert_eq!(order.display_fulfillment_status, "PARTIALLY_FULFILLED");
        assert!(!order.truncated);

        let address = order.shipping_address.as_ref().unwrap();
        assert_eq!(address.name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(address.address1.as_deref(), Some("12 St James's Square"));
        assert_eq!(address.address2, None);
        assert_eq!(address.city.as_deref(), Some("London"));
        assert_eq!(address.province_code.as_deref(), Some("ENG"));
        assert_eq!(address.zip.as_deref(), Some("SW1Y 4JH"));
        assert_eq!(address.country_code.as_deref(), Some("GB"));
        assert_eq!(address.phone.as_deref(), Some("+44 20 7946 0000"));

        assert_eq!(
            order.line_items,
            vec![
                LineItem {
                    id: "gid://shopify/LineItem/466157049".into(),
                    sku: Some("LAMP-RED".into()),
                    variant_id: Some("gid://shopify/ProductVariant/39072856".into()),
                    variant_title: Some("Red".into()),
                    quantity: 2,
                    current_quantity: 2,
                    unfulfilled_quantity: 2,
                    requires_shipping: true,
                },
                LineItem {
                    id: "gid://shopify/LineItem/518995019".into(),
                    // The line had no SKU: the variant's fills in.
                    sku: Some("CABLE-1M".into()),
                    variant_id: Some("gid://shopify/ProductVariant/49148385".into()),
                    variant_title: None,
                    quantity: 1,
                    current_quantity: 1,
                    unfulfilled_quantity: 0,
                    requires_shipping: true,
                },
            ]
        );

        assert_eq!(order.fulfillment_orders.len(), 2);
        let held = &order.fulfillment_orders[0];
        assert_eq!(held.id, "gid://shopify/FulfillmentOrder/1046000777");
        assert_eq!(held.status, FulfillmentOrderStatus::OnHold);
        assert_eq!(
            held.updated_at.as_ref().unwrap().text,
            "2026-11-25T14:59:00Z"
        );
        assert_eq!(
            held.location_id.as_deref(),
            Some("gid://shopify/Location/124656943")
        );
        assert_eq!(held.location_name.as_deref(), Some("Shenzhen supplier"));
        assert_eq!(
            held.holds,
            vec![
                Hold {
                    id: "gid://shopify/FulfillmentHold/1".into(),
                    handle: Some("shipgate-oos-1046000777".into()),
                    reason: "INVENTORY_OUT_OF_STOCK".into(),
                    reason_notes: Some("Supplier out of red lamps".into()),
                    held_by_us: true,
                },
                Hold {
                    id: "gid://shopify/FulfillmentHold/2".into(),
                    handle: Some(String::new()),
                    reason: "HIGH_RISK_OF_FRAUD".into(),
                    reason_notes: None,
                    held_by_us: false,
                },
            ]
        );
        assert_eq!(
            held.lines,
            vec![FulfillmentOrderLine {
                id: "gid://shopify/FulfillmentOrderLineItem/1058737482".into(),
                line_item_id: "gid://shopify/LineItem/466157049".into(),
                total_quantity: 2,
                remaining_quantity: 2,
            }]
        );

        let closed = &order.fulfillment_orders[1];
        assert_eq!(closed.id, "gid://shopify/FulfillmentOrder/1046000778");
        assert_eq!(closed.status, FulfillmentOrderStatus::Closed);
        assert_eq!(
            closed.location_id.as_deref(),
            Some("gid://shopify/Location/346779380")
        );
        assert_eq!(closed.location_name.as_deref(), Some("Warehouse EU"));
        assert!(closed.holds.is_empty());
        assert_eq!(
            closed.lines[0].line_item_id,
            "gid://shopify/LineItem/518995019"
        );
        assert_eq!(closed.lines[0].remaining_quantity, 0);

        assert_eq!(
            order.fulfillments,
            vec![Fulfillment {
                id: "gid://shopify/Fulfillment/255858046".into(),
                status: "SUCCESS".into(),
                created_at: Some(Timestamp::parse("2026-11-24T08:00:00Z").unwrap()),
                tracking: vec![Tracking {
                    company: Some("YunExpress".into()),
                    number: Some("YT2412345678901234".into()),
                    url: Some(
                        "https://www.yuntrack.com/parcelTracking?id=YT2412345678901234".into()
                    ),
                }],
            }]
        );
    }

    #[test]
    fn null_nodes_are_missing_and_results_stay_aligned_with_the_request() {
        let other = "gid://shopify/Order/5";
        let gone = "gid://shopify/Order/4";
        let data = response(json!([null, small_order_json(other)]));
        let fetched = orders_by_ids(SHOP, &ids(&[gone, other]), data).unwrap();
        assert_eq!(fetched.len(), 2);
        assert_eq!(fetched[0], Fetched::Missing(gone.into()));
        match &fetched[1] {
            Fetched::Order(order) => {
                assert_eq!(order.id, other);
                assert_eq!(order.shipping_address, None);
                assert!(order.line_items.is_empty());
                assert!(!order.truncated);
            }
            missing => panic!("expected the order, got {missing:?}"),
        }
    }

    #[test]
    fn unknown_enum_values_keep_their_shopify_names() {
        let mut node = full_order_json();
        node["fulfillmentOrders"]["nodes"][0]["status"] = json!("SOMETHING_NEW");
        node["fulfillmentOrders"]["nodes"][0]["fulfillmentHolds"][0]["reason"] =
            json!("AWAITING_SOMETHING");
        node["displayFulfillmentStatus"] = json!("PARTIALLY_SOMETHING");
        node["cancelReason"] = json!("CHARGEBACK");
        node["cancelledAt"] = json!("2026-11-25T16:00:00Z");
        node["fulfillments"][0]["status"] = json!("IN_LIMBO");
        // Iceland is a real code the schema subset leaves out.
        node["shippingAddress"]["countryCodeV2"] = json!("IS");

        let order =
            only_order(orders_by_ids(SHOP, &ids(&[BIG_ORDER]), response(json!([node]))).unwrap());
        assert_eq!(
            order.fulfillment_orders[0].status,
            FulfillmentOrderStatus::Other("SOMETHING_NEW".into())
        );
        assert_eq!(
            order.fulfillment_orders[0].holds[0].reason,
            "AWAITING_SOMETHING"
        );
        assert_eq!(order.display_fulfillment_status, "PARTIALLY_SOMETHING");
        assert_eq!(order.cancel_reason.as_deref(), Some("CHARGEBACK"));
        assert!(order.is_cancelled());
        assert_eq!(order.fulfillments[0].status, "IN_LIMBO");
        assert_eq!(
            order.shipping_address.unwrap().country_code.as_deref(),
            Some("IS")
        );
    }

    #[test]
    fn known_cancel_reasons_convert_to_their_names() {
        let mut node = small_order_json("gid://shopify/Order/9");
        node["cancelReason"] = json!("INVENTORY");
        node["cancelledAt"] = json!("2026-11-22T00:00:00Z");
        let order = only_order(
            orders_by_ids(
                SHOP,
                &ids(&["gid://shopify/Order/9"]),
                response(json!([node])),
            )
            .unwrap(),
        );
        assert_eq!(order.cancel_reason.as_deref(), Some("INVENTORY"));
        assert_eq!(order.cancelled_at.unwrap().text, "2026-11-22T00:00:00Z");
    }

    #[test]
    fn any_nested_next_page_marks_the_order_truncated() {
        let id = [BIG_ORDER];
        for path in [
            &["lineItems", "pageInfo"][..],
            &["fulfillmentOrders", "pageInfo"][..],
        ] {
            let mut node = full_order_json();
            node[path[0]][path[1]]["hasNextPage"] = json!(true);
            let order =
                only_order(orders_by_ids(SHOP, &ids(&id), response(json!([node]))).unwrap());
            assert!(order.truncated, "{path:?}");
        }

        let mut node = full_order_json();
        node["fulfillmentOrders"]["nodes"][1]["lineItems"]["pageInfo"]["hasNextPage"] = json!(true);
        let order = only_order(orders_by_ids(SHOP, &ids(&id), response(json!([node]))).unwrap());
        assert!(order.truncated, "a fulfillment order's line items");
        assert_eq!(order.fulfillment_orders.len(), 2, "what did fit is kept");
    }

    #[test]
    fn full_plain_lists_mark_the_order_truncated() {
        let mut node = full_order_json();
        let fulfillment = node["fulfillments"][0].clone();
        node["fulfillments"] = json!(vec![fulfillment; FULFILLMENTS_FIRST]);
        let order =
            only_order(orders_by_ids(SHOP, &ids(&[BIG_ORDER]), response(json!([node]))).unwrap());
        assert!(order.truncated, "fulfillments may have been cut at `first`");

        // A fulfillment of several parcels (shipgate writes one number per parcel) is whole.
        let mut node = full_order_json();
        let tracking = node["fulfillments"][0]["trackingInfo"][0].clone();
        node["fulfillments"][0]["trackingInfo"] = json!(vec![tracking.clone(); 4]);
        let order =
            only_order(orders_by_ids(SHOP, &ids(&[BIG_ORDER]), response(json!([node]))).unwrap());
        assert!(!order.truncated, "four parcels' numbers fit");

        let mut node = full_order_json();
        node["fulfillments"][0]["trackingInfo"] = json!(vec![tracking; TRACKING_FIRST]);
        let order =
            only_order(orders_by_ids(SHOP, &ids(&[BIG_ORDER]), response(json!([node]))).unwrap());
        assert!(order.truncated, "tracking may have been cut at `first`");
    }

    #[test]
    fn truncation_limits_match_the_query() {
        let query = obi::QUERY;
        assert!(query.contains(&format!("fulfillments(first: {FULFILLMENTS_FIRST})")));
        assert_eq!(
            query
                .matches(&format!("trackingInfo(first: {TRACKING_FIRST})"))
                .count(),
            1
        );
    }

    #[test]
    fn a_node_of_another_type_is_an_error() {
        let product = "gid://shopify/Product/1";
        let data = response(json!([{ "__typename": "Product" }]));
        let err = orders_by_ids(SHOP, &ids(&[product]), data).unwrap_err();
        assert!(
            matches!(&err, ConvertError::NotAnOrder { index: 0, id, typename } if id == product && typename == "Unknown"),
            "{err:?}"
        );

        let location = "gid://shopify/Location/1";
        let data = response(json!([{ "__typename": "Location" }]));
        let err = orders_by_ids(SHOP, &ids(&[location]), data).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field `nodes[0]`: requested order gid://shopify/Location/1 resolved to a `Location` node, not an Order"
        );
    }

    #[test]
    fn misaligned_answers_are_errors() {
        let data = response(json!([null]));
        let err = orders_by_ids(
            SHOP,
            &ids(&["gid://shopify/Order/1", "gid://shopify/Order/2"]),
            data,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                ConvertError::NodeCount {
                    requested: 2,
                    returned: 1
                }
            ),
            "{err:?}"
        );

        let data = response(json!([small_order_json("gid://shopify/Order/2")]));
        let err = orders_by_ids(SHOP, &ids(&["gid://shopify/Order/1"]), data).unwrap_err();
        assert!(
            matches!(err, ConvertError::IdMismatch { index: 0, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_bad_timestamp_names_the_field_and_the_order() {
        let mut node = full_order_json();
        node["fulfillmentOrders"]["nodes"][1]["updatedAt"] = json!("yesterday");
        let err = orders_by_ids(SHOP, &ids(&[BIG_ORDER]), response(json!([node]))).unwrap_err();
        let message = err.to_string();
        assert!(message.contains(BIG_ORDER), "{message}");
        assert!(
            message.contains("fulfillmentOrders[1].updatedAt"),
            "{message}"
        );

        let mut node = full_order_json();
        node["updatedAt"] = json!("2026-13-45");
        let err = orders_by_ids(SHOP, &ids(&[BIG_ORDER]), response(json!([node]))).unwrap_err();
        assert!(
            matches!(&err, ConvertError::Timestamp { order_id, field, .. } if order_id == BIG_ORDER && field == "updatedAt"),
            "{err:?}"
        );
    }

    #[test]
    fn scan_page_converts() {
        let data: ops::order_scan::ResponseData = serde_json::from_value(json!({
            "orders": {
                "pageInfo": { "hasNextPage": true, "endCursor": "eyJsYXN0X2lkIjo0NTY3fQ==" },
                "nodes": [
                    { "id": "gid://shopify/Order/4567", "updatedAt": "2026-11-25T09:00:00Z" },
                    { "id": BIG_ORDER, "updatedAt": "2026-11-25T10:00:00-05:00" }
                ]
            }
        }))
        .unwrap();
        let page = order_scan(data).unwrap();
        assert_eq!(
            page,
            ScanPage {
                orders: vec![
                    ChangedOrder {
                        id: "gid://shopify/Order/4567".into(),
                        updated_at: Timestamp::parse("2026-11-25T09:00:00Z").unwrap(),
                    },
                    ChangedOrder {
                        id: BIG_ORDER.into(),
                        updated_at: Timestamp::parse("2026-11-25T10:00:00-05:00").unwrap(),
                    },
                ],
                has_next_page: true,
                end_cursor: Some("eyJsYXN0X2lkIjo0NTY3fQ==".into()),
            }
        );

        let last: ops::order_scan::ResponseData = serde_json::from_value(json!({
            "orders": { "pageInfo": { "hasNextPage": false, "endCursor": null }, "nodes": [] }
        }))
        .unwrap();
        assert_eq!(
            order_scan(last).unwrap(),
            ScanPage {
                orders: vec![],
                has_next_page: false,
                end_cursor: None
            }
        );
    }

    #[test]
    fn scan_page_with_a_bad_timestamp_names_the_order() {
        let data: ops::order_scan::ResponseData = serde_json::from_value(json!({
            "orders": {
                "pageInfo": { "hasNextPage": false, "endCursor": null },
                "nodes": [{ "id": "gid://shopify/Order/7", "updatedAt": "" }]
            }
        }))
        .unwrap();
        let err = order_scan(data).unwrap_err();
        assert!(
            matches!(&err, ConvertError::Timestamp { order_id, field, .. } if order_id == "gid://shopify/Order/7" && field == "updatedAt"),
            "{err:?}"
        );
    }

    #[test]
    fn fulfillment_create_variables_have_the_shape_shopify_expects() {
        let req = FulfillmentRequest {
            lines_by_fulfillment_order: vec![(
                "gid://shopify/FulfillmentOrder/1046000777".into(),
                vec![
                    (
                        "gid://shopify/FulfillmentOrderLineItem/1058737482".into(),
                        2,
                    ),
                    (
                        "gid://shopify/FulfillmentOrderLineItem/1058737484".into(),
                        1,
                    ),
                ],
            )],
            notify_customer: true,
            tracking_company: Some("Yanwen".into()),
            tracking_numbers: vec!["UG123456789YW".into()],
            tracking_urls: vec!["https://track.yw56.com.cn/en/querydel?nums=UG123456789YW".into()],
            message: Some("Shipped from Shenzhen".into()),
        };
        let json = serde_json::to_value(fulfillment_create_variables(&req)).unwrap();
        assert_eq!(
            json,
            json!({
                "fulfillment": {
                    "lineItemsByFulfillmentOrder": [{
                        "fulfillmentOrderId": "gid://shopify/FulfillmentOrder/1046000777",
                        "fulfillmentOrderLineItems": [
                            { "id": "gid://shopify/FulfillmentOrderLineItem/1058737482", "quantity": 2 },
                            { "id": "gid://shopify/FulfillmentOrderLineItem/1058737484", "quantity": 1 }
                        ]
                    }],
                    "notifyCustomer": true,
                    "trackingInfo": {
                        "company": "Yanwen",
                        "numbers": ["UG123456789YW"],
                        "urls": ["https://track.yw56.com.cn/en/querydel?nums=UG123456789YW"]
                    }
                },
                "message": "Shipped from Shenzhen"
            })
        );
    }

    #[test]
    fn fulfillment_without_tracking_leaves_tracking_out() {
        let req = FulfillmentRequest {
            lines_by_fulfillment_order: vec![(
                "gid://shopify/FulfillmentOrder/1".into(),
                vec![("gid://shopify/FulfillmentOrderLineItem/2".into(), 1)],
            )],
            notify_customer: false,
            ..FulfillmentRequest::default()
        };
        let json = serde_json::to_value(fulfillment_create_variables(&req)).unwrap();
        assert_eq!(json["fulfillment"]["notifyCustomer"], json!(false));
        assert!(json["fulfillment"].get("trackingInfo").is_none());
        assert!(json["fulfillment"].get("originAddress").is_none());
        // Top-level variables are not skipped when `None`: a null message is simply no message.
        assert_eq!(json.get("message"), Some(&json!(null)));
    }

    #[test]
    fn hold_variables_have_the_shape_shopify_expects() {
        let vars = hold_variables(
            "gid://shopify/FulfillmentOrder/1046000777",
            "INVENTORY_OUT_OF_STOCK",
            "Supplier out of red lamps",
            "shipgate-oos-1046000777",
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(vars).unwrap(),
            json!({
                "id": "gid://shopify/FulfillmentOrder/1046000777",
                "fulfillmentHold": {
                    "handle": "shipgate-oos-1046000777",
                    "reason": "INVENTORY_OUT_OF_STOCK",
                    "reasonNotes": "Supplier out of red lamps"
                }
            })
        );

        let vars = hold_variables("gid://shopify/FulfillmentOrder/1", "OTHER", "", "h").unwrap();
        assert_eq!(vars.fulfillment_hold.reason_notes, None);
    }

    #[test]
    fn hold_variables_reject_what_shopify_would() {
        let fo = "gid://shopify/FulfillmentOrder/1";
        let err = hold_variables(fo, "OUT_OF_STOCK", "", "h").unwrap_err();
        assert_eq!(
            err.to_string(),
            "fulfillment order gid://shopify/FulfillmentOrder/1: field `reason`: unknown FulfillmentHoldReason `OUT_OF_STOCK`"
        );
        assert!(matches!(
            hold_variables(fo, "inventory_out_of_stock", "", "h"),
            Err(ConvertError::UnknownHoldReason { .. })
        ));
        assert!(matches!(
            hold_variables(fo, "OTHER", "", ""),
            Err(ConvertError::BadHoldHandle { chars: 0, .. })
        ));
        assert!(matches!(
            hold_variables(fo, "OTHER", "", &"x".repeat(65)),
            Err(ConvertError::BadHoldHandle { chars: 65, .. })
        ));
        assert!(hold_variables(fo, "OTHER", "", &"é".repeat(64)).is_ok());
    }

    const FULFILLMENT: &str = "gid://shopify/Fulfillment/255858046";

    #[test]
    fn fulfillment_event_variables_have_the_shape_shopify_expects() {
        let vars = fulfillment_event_variables(
            FULFILLMENT,
            "CARRIER_PICKED_UP",
            "2026-11-25T10:00:00+08:00",
            Some("Picked up in Shenzhen"),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(vars).unwrap(),
            json!({
                "fulfillmentEvent": {
                    "fulfillmentId": FULFILLMENT,
                    "status": "CARRIER_PICKED_UP",
                    "happenedAt": "2026-11-25T10:00:00+08:00",
                    "message": "Picked up in Shenzhen"
                }
            })
        );
        // An empty message is no message rather than an empty line in the order's timeline.
        let vars =
            fulfillment_event_variables(FULFILLMENT, "DELIVERED", "2026-11-30T09:00:00Z", Some(""))
                .unwrap();
        assert_eq!(vars.fulfillment_event.message, None);
        assert_eq!(
            vars.fulfillment_event.status,
            fec::FulfillmentEventStatus::DELIVERED
        );
    }

    #[test]
    fn fulfillment_event_variables_reject_what_shopify_would() {
        let err =
            fulfillment_event_variables(FULFILLMENT, "PICKED_UP", "2026-11-25T10:00:00Z", None)
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "fulfillment gid://shopify/Fulfillment/255858046: field `status`: unknown FulfillmentEventStatus `PICKED_UP`"
        );
        assert!(matches!(
            fulfillment_event_variables(FULFILLMENT, "in_transit", "2026-11-25T10:00:00Z", None),
            Err(ConvertError::UnknownEventStatus { .. })
        ));
        let err = fulfillment_event_variables(FULFILLMENT, "IN_TRANSIT", "25/11/2026 10:00", None)
            .unwrap_err();
        assert!(
            matches!(&err, ConvertError::FulfillmentField { field, .. } if field == "happenedAt"),
            "{err}"
        );
    }

    #[test]
    fn tracking_update_variables_replace_the_numbers_in_the_plural_fields() {
        let vars = tracking_update_variables(
            FULFILLMENT,
            Some("China Post"),
            &["LX123456789CN".into(), "LX123456790CN".into()],
            &[],
            false,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(vars).unwrap(),
            json!({
                "fulfillmentId": FULFILLMENT,
                "trackingInfoInput": {
                    "company": "China Post",
                    "numbers": ["LX123456789CN", "LX123456790CN"]
                },
                "notifyCustomer": false
            })
        );
        let vars = tracking_update_variables(
            FULFILLMENT,
            None,
            &["UG1YW".into()],
            &["https://track.yw56.com.cn/en/querydel?nums=UG1YW".into()],
            true,
        )
        .unwrap();
        let json = serde_json::to_value(vars).unwrap();
        assert_eq!(
            json["trackingInfoInput"],
            json!({ "numbers": ["UG1YW"], "urls": ["https://track.yw56.com.cn/en/querydel?nums=UG1YW"] })
        );
        assert_eq!(json["notifyCustomer"], json!(true));
    }

    #[test]
    fn tracking_update_variables_need_a_number() {
        for numbers in [vec![], vec![" ".to_string()]] {
            let err = tracking_update_variables(FULFILLMENT, Some("UPS"), &numbers, &[], true)
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                "fulfillment gid://shopify/Fulfillment/255858046: field `trackingInfoInput.numbers`: at least one tracking number is required"
            );
        }
    }

    fn progress_response(node: serde_json::Value) -> fev::ResponseData {
        serde_json::from_value(json!({ "nodes": [node] })).unwrap()
    }

    fn fulfillment_node() -> serde_json::Value {
        json!({
            "__typename": "Fulfillment",
            "id": FULFILLMENT,
            "trackingInfo": [{ "number": "LX123456789CN" }, { "number": null }, { "number": "LX123456790CN" }],
            "events": { "nodes": [
                { "id": "gid://shopify/FulfillmentEvent/3", "status": "DELIVERED", "happenedAt": "2026-11-30T09:00:00Z" },
                { "id": "gid://shopify/FulfillmentEvent/2", "status": "PARCEL_TELEPORTED", "happenedAt": "2026-11-27T09:00:00Z" },
                { "id": "gid://shopify/FulfillmentEvent/1", "status": "CARRIER_PICKED_UP", "happenedAt": "2026-11-25T02:00:00Z" }
            ] }
        })
    }

    #[test]
    fn fulfillment_progress_converts_numbers_and_events() {
        let progress = fulfillment_progress(FULFILLMENT, progress_response(fulfillment_node()))
            .unwrap()
            .unwrap();
        assert_eq!(progress.id, FULFILLMENT);
        assert_eq!(
            progress.tracking_numbers,
            vec!["LX123456789CN", "LX123456790CN"]
        );
        let statuses: Vec<_> = progress.events.iter().map(|e| e.status.as_str()).collect();
        // An enum value this build does not know keeps its name.
        assert_eq!(
            statuses,
            vec!["DELIVERED", "PARCEL_TELEPORTED", "CARRIER_PICKED_UP"]
        );
        assert_eq!(
            progress.events[2].happened_at.unix_ms,
            Timestamp::parse("2026-11-25T10:00:00+08:00")
                .unwrap()
                .unix_ms
        );
    }

    #[test]
    fn an_event_is_found_by_status_and_instant_not_by_text() {
        let progress = fulfillment_progress(FULFILLMENT, progress_response(fulfillment_node()))
            .unwrap()
            .unwrap();
        let at = |text: &str| Timestamp::parse(text).unwrap();
        // The same instant written with another offset and with fractions of a second.
        let found = progress.find_event("CARRIER_PICKED_UP", &at("2026-11-25T10:00:00.400+08:00"));
        assert_eq!(
            found.map(|e| e.id.as_str()),
            Some("gid://shopify/FulfillmentEvent/1")
        );
        // Another status at that instant, or the same status a second later, is another event.
        assert!(
            progress
                .find_event("IN_TRANSIT", &at("2026-11-25T02:00:00Z"))
                .is_none()
        );
        assert!(
            progress
                .find_event("CARRIER_PICKED_UP", &at("2026-11-25T02:00:01Z"))
                .is_none()
        );
    }

    #[test]
    fn tracking_numbers_match_as_a_set() {
        let progress = fulfillment_progress(FULFILLMENT, progress_response(fulfillment_node()))
            .unwrap()
            .unwrap();
        let numbers = |list: &[&str]| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert!(progress.has_tracking_numbers(&numbers(&["LX123456790CN", "LX123456789CN"])));
        assert!(!progress.has_tracking_numbers(&numbers(&["LX123456789CN"])));
        assert!(!progress.has_tracking_numbers(&numbers(&[
            "LX123456789CN",
            "LX123456790CN",
            "LX123456791CN"
        ])));
    }

    #[test]
    fn a_missing_fulfillment_is_none_and_anything_else_an_error() {
        assert_eq!(
            fulfillment_progress(FULFILLMENT, progress_response(json!(null))).unwrap(),
            None
        );
        let mut other = fulfillment_node();
        other["id"] = json!("gid://shopify/Fulfillment/1");
        let err = fulfillment_progress(FULFILLMENT, progress_response(other)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field `nodes`: requested fulfillment gid://shopify/Fulfillment/255858046 came back as gid://shopify/Fulfillment/1"
        );
        let order = json!({ "__typename": "Order" });
        assert!(matches!(
            fulfillment_progress(FULFILLMENT, progress_response(order)),
            Err(ConvertError::NotTheFulfillment { .. })
        ));
        let empty: fev::ResponseData = serde_json::from_value(json!({ "nodes": [] })).unwrap();
        assert!(matches!(
            fulfillment_progress(FULFILLMENT, empty),
            Err(ConvertError::NotTheFulfillment { .. })
        ));
        let mut bad = fulfillment_node();
        bad["events"]["nodes"][1]["happenedAt"] = json!("yesterday");
        let err = fulfillment_progress(FULFILLMENT, progress_response(bad)).unwrap_err();
        assert!(
            matches!(&err, ConvertError::FulfillmentField { field, .. } if field == "events[1].happenedAt"),
            "{err}"
        );
    }
}

/// A bulk operation as a poll reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkState {
    /// Shopify's status name: `CREATED`, `RUNNING`, `COMPLETED`, `FAILED`, `CANCELED`, …
    pub status: String,
    /// Why it failed, if it did (`BulkOperationErrorCode`).
    pub error_code: Option<String>,
    /// Objects written so far.
    pub object_count: u64,
    /// Where the JSONL result is, once completed; none when the result is empty.
    pub url: Option<String>,
}

impl BulkState {
    /// Whether the operation is still on its way.
    pub fn is_pending(&self) -> bool {
        matches!(self.status.as_str(), "CREATED" | "RUNNING")
    }

    /// Whether the result is ready.
    pub fn is_completed(&self) -> bool {
        self.status == "COMPLETED"
    }
}

/// The id of the bulk operation a `bulkOperationRunQuery` started.
pub fn bulk_started(data: ops::bulk_operation_run_query::ResponseData) -> Option<String> {
    data.bulk_operation_run_query
        .and_then(|payload| payload.bulk_operation)
        .map(|op| op.id)
}

/// A polled bulk operation, or none if Shopify no longer knows it.
pub fn bulk_state(data: ops::bulk_operation::ResponseData) -> Option<BulkState> {
    let op = data.bulk_operation?;
    Some(BulkState {
        status: shopify_enum_name(&op.status),
        error_code: op.error_code.as_ref().map(shopify_enum_name),
        object_count: op.object_count.parse().unwrap_or(0),
        url: op.url,
    })
}

/// The name Shopify uses for a generated enum value (unknown values keep their name too).
fn shopify_enum_name(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        other => format!("{other:?}"),
    }
}

/// The topics shipgate subscribes a shop to (the compliance topics are declared in the app's
/// configuration instead: Shopify does not accept them through the API).
pub const SUBSCRIBED_TOPICS: &[&str] = &[
    "ORDERS_CREATE",
    "ORDERS_UPDATED",
    "ORDERS_CANCELLED",
    "ORDERS_EDITED",
    "ORDERS_FULFILLED",
    "ORDERS_PARTIALLY_FULFILLED",
    "FULFILLMENT_ORDERS_PLACED_ON_HOLD",
    "FULFILLMENT_ORDERS_HOLD_RELEASED",
    "FULFILLMENT_ORDERS_CANCELLED",
    "FULFILLMENT_ORDERS_SPLIT",
    "FULFILLMENT_ORDERS_MERGED",
    "FULFILLMENT_ORDERS_MOVED",
    "APP_UNINSTALLED",
];

/// The variables of `webhookSubscriptionCreate` for one topic, delivered as JSON to `uri`, with
/// the whole payload (no `includeFields`, so nothing is debounced away).
pub fn webhook_subscription_variables(
    topic: &str,
    uri: &str,
) -> ops::webhook_subscription_create::Variables {
    use ops::webhook_subscription_create as op;
    op::Variables {
        // The generated enum serializes an `Other` value as its name, which is what Shopify
        // expects; the names come from SUBSCRIBED_TOPICS.
        topic: op::WebhookSubscriptionTopic::Other(topic.to_string()),
        webhook_subscription: op::WebhookSubscriptionInput {
            uri: Some(uri.to_string()),
            format: Some(op::WebhookSubscriptionFormat::JSON),
            callback_url: None,
            filter: None,
            include_fields: None,
            metafield_namespaces: None,
        },
    }
}
