//! Suppliers and sourcing agents: the messages shipgate sends them, the events they send back,
//! and one adapter module per channel (`http`, `csv`, `manual`) behind [`SupplierAdapter`].
//!
//! The wire formats are documented for agents in `docs/suppliers.md`; the types here are their
//! single source in code. Adapters only move messages: what a message means for a shipment
//! (evidence, exceptions, holds) is the workflow's business, so every channel behaves the same.

pub mod csv;
pub mod event;
pub mod http;
pub mod manual;
pub mod routing;
pub mod signature;

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::order::Address;

pub use event::{Day, EventError, EventKind, PackedParcel, ParcelLine, SupplierEvent};

/// A boxed future, so that [`SupplierAdapter`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One line of a message to a supplier: only what is needed to ship it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageLine {
    pub line_id: String,
    pub sku: String,
    pub variant_title: Option<String>,
    pub quantity: i64,
}

/// What a message asks of the supplier (docs/suppliers.md section 2.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// Ship these lines (revision 1), or ship these lines instead of the previous revision.
    Submission {
        revision: u32,
        shop: String,
        order_name: String,
        lines: Vec<MessageLine>,
        ship_to: Option<Box<Address>>,
    },
    /// Stop; do not ship.
    Cancellation { reason: String },
    /// The owner's answer to an offered substitute.
    Decision { line_id: String, approve: bool },
    /// The owner's answer to a failed physical check: `replace` the goods or `repack` them
    /// (then check again and report the new check).
    CheckDecision { action: String },
    /// The owner's answer to a parcel the carrier never took or that stopped moving: `chase` it
    /// with the carrier, make a `new_label`, or `reship` the goods. A new label or a reshipment
    /// is reported as a new `label_created` for the same parcel.
    ParcelDecision {
        action: String,
        tracking_number: String,
    },
}

/// One message to a supplier, named by its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupplierMessage {
    /// The same key always means the same message; the supplier acts on it once.
    pub key: String,
    pub shipment_id: String,
    /// When the intent was recorded, RFC 3339.
    pub sent_at: String,
    pub body: MessageBody,
}

impl SupplierMessage {
    /// The wire `type`.
    pub fn kind(&self) -> &'static str {
        match &self.body {
            MessageBody::Submission { revision: 1, .. } => "submission",
            MessageBody::Submission { .. } => "amendment",
            MessageBody::Cancellation { .. } => "cancellation",
            MessageBody::Decision { .. } => "decision",
            MessageBody::CheckDecision { .. } => "check_decision",
            MessageBody::ParcelDecision { .. } => "parcel_decision",
        }
    }

    /// The JSON body of docs/suppliers.md section 2.1.
    pub fn to_json(&self) -> Vec<u8> {
        let mut value = serde_json::json!({
            "type": self.kind(),
            "key": self.key,
            "shipment_id": self.shipment_id,
            "sent_at": self.sent_at,
        });
        let object = value.as_object_mut().expect("a JSON object");
        match &self.body {
            MessageBody::Submission {
                revision,
                shop,
                order_name,
                lines,
                ship_to,
            } => {
                object.insert("revision".into(), (*revision).into());
                object.insert("shop".into(), shop.as_str().into());
                object.insert("order_name".into(), order_name.as_str().into());
                object.insert(
                    "lines".into(),
                    serde_json::to_value(lines).expect("lines serialize"),
                );
                object.insert(
                    "ship_to".into(),
                    serde_json::to_value(ship_to).expect("address serializes"),
                );
            }
            MessageBody::Cancellation { reason } => {
                object.insert("reason".into(), reason.as_str().into());
            }
            MessageBody::CheckDecision { action } => {
                object.insert("decision".into(), action.as_str().into());
            }
            MessageBody::ParcelDecision {
                action,
                tracking_number,
            } => {
                object.insert("decision".into(), action.as_str().into());
                object.insert("tracking_number".into(), tracking_number.as_str().into());
            }
            MessageBody::Decision { line_id, approve } => {
                object.insert("line_id".into(), line_id.as_str().into());
                let decision = if *approve {
                    "approve_substitute"
                } else {
                    "reject_substitute"
                };
                object.insert("decision".into(), decision.into());
            }
        }
        serde_json::to_vec(&value).expect("a message serializes")
    }
}

/// What became of a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The supplier has the message (2xx, or 409 for a key it already had).
    Accepted { supplier_ref: Option<String> },
    /// The supplier refused it for good; `reason` is what it said (shortened).
    Refused { reason: String },
    /// Not received, or not known to be: retry later. `maybe_delivered` is set when the request
    /// may have reached the supplier (a timeout or a broken connection after sending), so the
    /// next attempt must look the key up first.
    Retry {
        reason: String,
        maybe_delivered: bool,
    },
}

/// What a lookup of a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupOutcome {
    /// The supplier has the message.
    Received { supplier_ref: Option<String> },
    /// The supplier never saw it: it is safe to send.
    NotReceived,
    /// The supplier could not be asked; try again later.
    Unknown { reason: String },
}

/// One channel to one supplier.
pub trait SupplierAdapter: Send + Sync {
    /// The adapter's kind (`http`, `csv`, `manual`), for logs and the CLI.
    fn kind(&self) -> &'static str;

    /// Delivers a message.
    fn send<'a>(&'a self, message: &'a SupplierMessage) -> BoxFuture<'a, SendOutcome>;

    /// Asks whether a message whose outcome is unknown reached the supplier.
    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, LookupOutcome>;
}

/// The lines of a shipment as an adapter or validator needs to see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipmentView {
    pub shipment_id: String,
    pub supplier: String,
    pub shop: String,
    pub order_name: String,
    /// Whether the shipment is still live (not cancelled or finished).
    pub open: bool,
    pub lines: Vec<MessageLine>,
}

/// One adapter per configured supplier, by name.
pub fn adapters(
    config: &crate::config::Config,
    http: &reqwest::Client,
) -> anyhow::Result<std::collections::HashMap<String, std::sync::Arc<dyn SupplierAdapter>>> {
    use crate::config::AdapterConfig;
    let mut out: std::collections::HashMap<String, std::sync::Arc<dyn SupplierAdapter>> =
        std::collections::HashMap::new();
    for supplier in &config.suppliers {
        let adapter: std::sync::Arc<dyn SupplierAdapter> = match &supplier.adapter {
            AdapterConfig::Http(settings) => std::sync::Arc::new(
                http::HttpAdapter::new(
                    http.clone(),
                    settings.endpoint.clone(),
                    settings
                        .secrets
                        .iter()
                        .map(|s| s.expose().as_bytes().to_vec())
                        .collect(),
                    settings.request_timeout,
                )
                .map_err(|e| anyhow::anyhow!("suppliers.{}: {e}", supplier.name))?,
            ),
            AdapterConfig::Csv => std::sync::Arc::new(csv::CsvAdapter),
            AdapterConfig::Manual => std::sync::Arc::new(manual::ManualAdapter),
        };
        out.insert(supplier.name.clone(), adapter);
    }
    Ok(out)
}

/// The secrets each supplier signs its events with (current first), for the intake. Only
/// `http` suppliers post events; the others have none and are refused at the door.
pub fn inbound_secrets(config: &crate::config::Config) -> Vec<(String, Vec<Vec<u8>>)> {
    config
        .suppliers
        .iter()
        .filter_map(|s| match &s.adapter {
            crate::config::AdapterConfig::Http(settings) => Some((
                s.name.clone(),
                settings
                    .secrets
                    .iter()
                    .map(|secret| secret.expose().as_bytes().to_vec())
                    .collect(),
            )),
            _ => None,
        })
        .collect()
}
