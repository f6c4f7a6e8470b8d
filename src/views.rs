//! What the admin API and the CLI show, computed in one place from the store.
//!
//! The CLI works through the daemon's admin API when the daemon runs and on the store directly
//! when it does not; both call these functions, so both give the same answer.

use serde::Serialize;

use crate::order::OrderMirror;
use crate::store::{Store, StoreError};

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
) -> Result<Option<OrderMirror>, StoreError> {
    match resolve_order(store, shop, reference)? {
        Some(gid) => store.order(shop, &gid),
        None => Ok(None),
    }
}

/// Renders order summaries as a table for people.
pub fn orders_table(orders: &[OrderSummary]) -> String {
    let mut out = format!(
        "{:<8} {:<34} {:<22} {:<20} {:>6} {:>4} {:>5}\n",
        "NAME", "ID", "UPDATED", "STATUS", "TO SHIP", "FOS", "HELD"
    );
    for o in orders {
        let status = if o.cancelled {
            "CANCELLED".to_string()
        } else {
            o.fulfillment_status.clone()
        };
        out.push_str(&format!(
            "{:<8} {:<34} {:<22} {:<20} {:>6} {:>4} {:>5}\n",
            o.name,
            o.id,
            o.updated_at,
            status,
            o.unfulfilled_units,
            o.fulfillment_orders,
            o.on_hold
        ));
    }
    out.push_str(&format!("{} order(s)\n", orders.len()));
    out
}

/// Renders one order for people. The shipping address is customer data: only its country shows.
pub fn order_text(order: &OrderMirror) -> String {
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
    out
}
