//! Shopify's compliance topics: erase or export what they name (invariant 7).
//!
//! `customers/redact` names a customer and their orders; every stored payload that belongs to one
//! of those orders or mentions the customer loses its personal fields. `shop/redact` erases the
//! whole shop. `customers/data_request` writes what is held on the customer to a JSON file in the
//! export folder; only its path is logged. The compliance deliveries themselves carry the
//! customer's e-mail and phone, so once handled they are cut down to the ids they name.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::delivery::{Delivery, Origin, now_ms};
use crate::store::{Rewrite, Store, StoreError};

/// Keys whose values are personal data wherever they occur in a Shopify payload. Whole address
/// and customer objects go, which takes the names, streets and coordinates inside them along.
const PERSONAL_KEYS: &[&str] = &[
    "customer",
    "email",
    "contact_email",
    "phone",
    "billing_address",
    "shipping_address",
    "destination",
    "addresses",
    "default_address",
    "client_details",
    "browser_ip",
    "note",
    "note_attributes",
    "first_name",
    "last_name",
    "address1",
    "address2",
    "city",
    "zip",
    "company",
    "latitude",
    "longitude",
    "landing_site",
    "referring_site",
];

/// The replacement for every erased string.
const REDACTED: &str = "[redacted]";

/// The customer a compliance request names.
#[derive(Debug, Clone, Deserialize)]
pub struct CustomerRef {
    /// Shopify's numeric customer id.
    pub id: Option<u64>,
    /// The customer's e-mail address.
    pub email: Option<String>,
    /// The customer's phone number.
    pub phone: Option<String>,
}

/// A `customers/redact` or `customers/data_request` body.
#[derive(Debug, Clone, Deserialize)]
pub struct CustomerRequest {
    /// The shop the request is for; it must be the shop that sent it.
    #[serde(default)]
    pub shop_domain: Option<String>,
    /// The customer.
    pub customer: CustomerRef,
    /// Orders to erase (`customers/redact`).
    #[serde(default)]
    pub orders_to_redact: Vec<u64>,
    /// Orders to export (`customers/data_request`).
    #[serde(default)]
    pub orders_requested: Vec<u64>,
    /// The data request's id (`customers/data_request`).
    #[serde(default)]
    pub data_request: Option<DataRequestId>,
}

/// The id of a data request.
#[derive(Debug, Clone, Deserialize)]
pub struct DataRequestId {
    /// Shopify's id for the request.
    pub id: u64,
}

/// Why a compliance request could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ComplianceError {
    #[error("the request body is not a valid {topic} payload ({})", json_error_position(.source))]
    Malformed {
        topic: &'static str,
        source: serde_json::Error,
    },
    #[error("the {topic} request names shop {named}, but was sent for {shop}")]
    OtherShop {
        topic: &'static str,
        named: String,
        shop: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the export {path}: {source}")]
    Export {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl CustomerRequest {
    /// Parses a compliance body.
    pub fn parse(topic: &'static str, body: &[u8]) -> Result<CustomerRequest, ComplianceError> {
        serde_json::from_slice(body).map_err(|source| ComplianceError::Malformed { topic, source })
    }

    /// Refuses a request whose body names another shop than the one that sent it: Shopify signs
    /// the body, not the topic header, and one app secret signs every shop's deliveries.
    pub fn check_shop(&self, topic: &'static str, shop: &str) -> Result<(), ComplianceError> {
        check_shop(topic, self.shop_domain.as_deref(), shop)
    }

    fn orders(&self) -> impl Iterator<Item = u64> + '_ {
        self.orders_to_redact
            .iter()
            .chain(&self.orders_requested)
            .copied()
    }

    /// Whether a stored payload belongs to one of the named orders or mentions the customer.
    pub fn concerns(&self, payload: &Value) -> bool {
        let order_id = payload
            .get("order_id")
            .or_else(|| payload.get("id"))
            .and_then(Value::as_u64);
        if order_id.is_some_and(|id| self.orders().any(|o| o == id)) {
            return true;
        }
        let customer_id = payload.pointer("/customer/id").and_then(Value::as_u64);
        if self.customer.id.is_some() && customer_id == self.customer.id {
            return true;
        }
        let needles: Vec<String> = [&self.customer.email, &self.customer.phone]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .map(|s| s.to_lowercase())
            .collect();
        !needles.is_empty() && mentions(payload, &needles)
    }

    /// The request cut down to what it names, without the e-mail and phone it carried.
    pub fn minimized(&self, shop: &str) -> Value {
        json!({
            "shop_domain": shop,
            "customer": { "id": self.customer.id },
            "orders_to_redact": self.orders_to_redact,
            "orders_requested": self.orders_requested,
            "data_request": self.data_request.as_ref().map(|d| json!({ "id": d.id })),
        })
    }
}

fn mentions(value: &Value, needles: &[String]) -> bool {
    match value {
        Value::String(s) => {
            let s = s.to_lowercase();
            needles.iter().any(|n| s.contains(n.as_str()))
        }
        Value::Array(items) => items.iter().any(|v| mentions(v, needles)),
        Value::Object(map) => map.values().any(|v| mentions(v, needles)),
        _ => false,
    }
}

/// Where a JSON error is, without the offending value (serde's message quotes it, and it may be
/// customer data).
pub fn json_error_position(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "read",
        serde_json::error::Category::Syntax => "syntax",
        serde_json::error::Category::Data => "unexpected field or type",
        serde_json::error::Category::Eof => "truncated",
    };
    format!("{kind} error at line {}, column {}", e.line(), e.column())
}

/// Checks that a compliance body's `shop_domain`, when given, is the sending shop.
pub fn check_shop(
    topic: &'static str,
    named: Option<&str>,
    shop: &str,
) -> Result<(), ComplianceError> {
    match named {
        Some(named) if !named.eq_ignore_ascii_case(shop) => Err(ComplianceError::OtherShop {
            topic,
            named: named.to_string(),
            shop: shop.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Removes personal data from a payload: personal keys become null and any other string that
/// contains the customer's e-mail or phone is replaced.
pub fn redact_payload(value: &mut Value, customer: &CustomerRef) {
    let needles: Vec<String> = [&customer.email, &customer.phone]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .map(|s| s.to_lowercase())
        .collect();
    redact_value(value, &needles);
}

fn redact_value(value: &mut Value, needles: &[String]) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if PERSONAL_KEYS.contains(&key.as_str()) {
                    *v = Value::Null;
                } else {
                    redact_value(v, needles);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact_value(v, needles)),
        Value::String(s) => {
            let lower = s.to_lowercase();
            if needles.iter().any(|n| lower.contains(n.as_str())) {
                *s = REDACTED.to_string();
            }
        }
        _ => {}
    }
}

/// Handles `customers/redact`: erases the customer's data from every stored payload of the
/// shop, then cuts the request itself down to ids. Returns how many deliveries were rewritten.
pub fn redact_customer(
    store: &Store,
    request_seq: u64,
    origin: &Origin,
    request: &CustomerRequest,
) -> Result<usize, ComplianceError> {
    let shop = origin.sender().to_string();
    let rewritten = store.rewrite_deliveries(origin, |seq, delivery| {
        if seq == request_seq {
            delivery.body = request.minimized(&shop).to_string().into_bytes();
            delivery.redacted = true;
            return Rewrite::Replace;
        }
        let Ok(mut payload) = serde_json::from_slice::<Value>(&delivery.body) else {
            // A body that is not JSON cannot be searched field by field; if it names the
            // customer at all it goes entirely.
            return redact_opaque(delivery, request);
        };
        if !request.concerns(&payload) {
            return Rewrite::Keep;
        }
        redact_payload(&mut payload, &request.customer);
        delivery.body = payload.to_string().into_bytes();
        delivery.redacted = true;
        Rewrite::Replace
    })?;
    // The mirror keeps the shipping address of each order (suppliers need it); it goes too,
    // for good: the store strips it from every later fetch of these orders.
    for order in &request.orders_to_redact {
        store.redact_order(&shop, &format!("gid://shopify/Order/{order}"))?;
    }
    Ok(rewritten)
}

fn redact_opaque(delivery: &mut Delivery, request: &CustomerRequest) -> Rewrite {
    let text = String::from_utf8_lossy(&delivery.body).to_lowercase();
    let named = [&request.customer.email, &request.customer.phone]
        .into_iter()
        .flatten()
        .any(|n| !n.is_empty() && text.contains(&n.to_lowercase()));
    if named {
        delivery.body = Vec::new();
        delivery.redacted = true;
        Rewrite::Replace
    } else {
        Rewrite::Keep
    }
}

/// Handles `customers/data_request`: writes what is held on the customer to
/// `<export_dir>/<shop>/data-request-<id>.json` (readable by the owner only), cuts the request
/// down to ids, and returns the file's path.
pub fn export_customer(
    store: &Store,
    export_dir: &Path,
    request_seq: u64,
    origin: &Origin,
    request: &CustomerRequest,
) -> Result<PathBuf, ComplianceError> {
    let shop = origin.sender();
    let mut held = Vec::new();
    for entry in store.deliveries() {
        let (seq, delivery) = entry?;
        if seq == request_seq || &delivery.origin != origin {
            continue;
        }
        let Ok(payload) = serde_json::from_slice::<Value>(&delivery.body) else {
            continue;
        };
        if request.concerns(&payload) {
            held.push(json!({
                "topic": delivery.topic,
                "received_at_ms": delivery.received_at_ms,
                "redacted": delivery.redacted,
                "payload": payload,
            }));
        }
    }
    // The mirror holds what suppliers need of the requested orders (the shipping address).
    let mut mirrored = Vec::new();
    for order in &request.orders_requested {
        if let Some(order) = store.order(shop, &format!("gid://shopify/Order/{order}"))? {
            mirrored.push(json!({
                "order": order.id,
                "name": order.name,
                "shipping_address": order.shipping_address.as_ref().map(|a| json!({
                    "name": a.name, "address1": a.address1, "address2": a.address2,
                    "city": a.city, "province_code": a.province_code, "zip": a.zip,
                    "country_code": a.country_code, "phone": a.phone,
                })),
            }));
        }
    }
    let request_id = request.data_request.as_ref().map_or(request_seq, |d| d.id);
    let export = json!({
        "shop_domain": shop,
        "customer_id": request.customer.id,
        "data_request_id": request_id,
        "generated_at_ms": now_ms(),
        "held": held,
        "order_mirror": mirrored,
    });
    let folder = export_dir.join(shop);
    let path = folder.join(format!("data-request-{request_id}.json"));
    write_private(
        &folder,
        &path,
        &serde_json::to_vec_pretty(&export).unwrap_or_default(),
    )
    .map_err(|source| ComplianceError::Export {
        path: path.clone(),
        source,
    })?;
    store.rewrite_deliveries(origin, |seq, delivery| {
        if seq != request_seq {
            return Rewrite::Keep;
        }
        delivery.body = request.minimized(shop).to_string().into_bytes();
        delivery.redacted = true;
        Rewrite::Replace
    })?;
    Ok(path)
}

/// Removes every export written for a shop (they hold its customers' data).
pub fn erase_exports(export_dir: &Path, shop: &str) {
    let folder = export_dir.join(shop);
    match std::fs::remove_dir_all(&folder) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::error!(path = %folder.display(), error = %e, "cannot erase the shop's exports")
        }
    }
}

/// Writes a file only its owner can read, atomically (a reader never sees half of it).
fn write_private(folder: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(folder)?;
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> CustomerRequest {
        CustomerRequest::parse(
            "customers/redact",
            br#"{"shop_id":1,"shop_domain":"a.myshopify.com","customer":{"id":42,"email":"Jane@Example.com","phone":"+15550001"},"orders_to_redact":[820982911946154508]}"#,
        )
        .unwrap()
    }

    #[test]
    fn orders_named_or_mentioning_the_customer_are_concerned() {
        let r = request();
        assert!(r.concerns(&json!({"id": 820982911946154508u64})));
        assert!(r.concerns(&json!({"id": 1, "customer": {"id": 42}})));
        assert!(r.concerns(&json!({"id": 1, "note": "call jane@example.com"})));
        assert!(!r.concerns(&json!({"id": 1, "customer": {"id": 43}, "email": "x@y"})));
    }

    #[test]
    fn redaction_removes_personal_fields_and_keeps_the_order_shape() {
        let r = request();
        let mut order = json!({
            "id": 820982911946154508u64,
            "name": "#1001",
            "email": "jane@example.com",
            "shipping_address": {"first_name": "Jane", "address1": "1 Main St", "zip": "12345"},
            "customer": {"id": 42, "email": "jane@example.com"},
            "line_items": [{"id": 1, "sku": "MUG-1", "properties": [{"name": "engraving", "value": "for +15550001"}]}],
        });
        redact_payload(&mut order, &r.customer);
        let text = order.to_string();
        for planted in [
            "jane@example.com",
            "1 Main St",
            "12345",
            "Jane",
            "+15550001",
        ] {
            assert!(!text.contains(planted), "{planted} survived: {text}");
        }
        assert_eq!(order["name"], "#1001");
        assert_eq!(order["line_items"][0]["sku"], "MUG-1");
    }

    #[test]
    fn the_minimized_request_keeps_ids_only() {
        let text = request().minimized("a.myshopify.com").to_string();
        assert!(!text.to_lowercase().contains("jane"));
        assert!(!text.contains("15550001"));
        assert!(text.contains("820982911946154508"));
    }
}
