//! Reading shipgate's messages (docs/suppliers.md section 2.1), strictly.
//!
//! The agent refuses what a careful real agent would refuse, and says why in the words of the
//! wire format, so that a test against the sandbox catches a malformed message before a supplier
//! does. Unknown fields are refused too: the format promises that only what is needed to ship is
//! sent, and a field the format does not name (an e-mail address, a price) is a leak to catch.

use serde::Deserialize;
use serde_json::Value;

use crate::order::{Address, Timestamp};
use crate::suppliers::{MessageBody, MessageLine, SupplierMessage};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireLine {
    line_id: String,
    sku: String,
    variant_title: Option<String>,
    quantity: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireAddress {
    name: Option<String>,
    address1: Option<String>,
    address2: Option<String>,
    city: Option<String>,
    province_code: Option<String>,
    zip: Option<String>,
    country_code: Option<String>,
    phone: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSubmission {
    key: String,
    shipment_id: String,
    sent_at: String,
    revision: u32,
    shop: String,
    order_name: String,
    lines: Vec<WireLine>,
    ship_to: Option<WireAddress>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireCancellation {
    key: String,
    shipment_id: String,
    sent_at: String,
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireDecision {
    key: String,
    shipment_id: String,
    sent_at: String,
    line_id: String,
    decision: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireCheckDecision {
    key: String,
    shipment_id: String,
    sent_at: String,
    decision: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireParcelDecision {
    key: String,
    shipment_id: String,
    sent_at: String,
    decision: String,
    tracking_number: String,
}

fn nonempty(field: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("`{field}` is empty"));
    }
    Ok(())
}

/// The fields every message has, checked the same way for each type.
fn head(key: &str, shipment_id: &str, sent_at: &str) -> Result<(), String> {
    nonempty("key", key)?;
    nonempty("shipment_id", shipment_id)?;
    Timestamp::parse(sent_at).map_err(|e| format!("`sent_at`: {e}"))?;
    Ok(())
}

/// Parses one message body into shipgate's own type, with the JSON kept for the record.
/// The error text names the field that is wrong; it becomes the body of a 400 answer.
pub(super) fn parse(body: &[u8]) -> Result<(SupplierMessage, Value), String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let Value::Object(mut object) = value.clone() else {
        return Err("body is not a JSON object".into());
    };
    let kind = match object.remove("type") {
        Some(Value::String(kind)) => kind,
        Some(_) => return Err("`type` is not a string".into()),
        None => return Err("`type` is missing".into()),
    };
    let rest = Value::Object(object);
    let invalid = |e: serde_json::Error| format!("invalid {kind}: {e}");
    let message = match kind.as_str() {
        "submission" | "amendment" => {
            let wire: WireSubmission = serde_json::from_value(rest).map_err(invalid)?;
            head(&wire.key, &wire.shipment_id, &wire.sent_at)?;
            submission(&kind, wire)?
        }
        "cancellation" => {
            let wire: WireCancellation = serde_json::from_value(rest).map_err(invalid)?;
            head(&wire.key, &wire.shipment_id, &wire.sent_at)?;
            SupplierMessage {
                key: wire.key,
                shipment_id: wire.shipment_id,
                sent_at: wire.sent_at,
                body: MessageBody::Cancellation {
                    reason: wire.reason,
                },
            }
        }
        "decision" => {
            let wire: WireDecision = serde_json::from_value(rest).map_err(invalid)?;
            head(&wire.key, &wire.shipment_id, &wire.sent_at)?;
            nonempty("line_id", &wire.line_id)?;
            let approve = match wire.decision.as_str() {
                "approve_substitute" => true,
                "reject_substitute" => false,
                other => {
                    return Err(format!(
                        "`decision` is `{other}`; expected approve_substitute or reject_substitute"
                    ));
                }
            };
            SupplierMessage {
                key: wire.key,
                shipment_id: wire.shipment_id,
                sent_at: wire.sent_at,
                body: MessageBody::Decision {
                    line_id: wire.line_id,
                    approve,
                },
            }
        }
        "check_decision" => {
            let wire: WireCheckDecision = serde_json::from_value(rest).map_err(invalid)?;
            head(&wire.key, &wire.shipment_id, &wire.sent_at)?;
            if !matches!(wire.decision.as_str(), "replace" | "repack") {
                return Err(format!(
                    "`decision` is `{}`; expected replace or repack",
                    wire.decision
                ));
            }
            SupplierMessage {
                key: wire.key,
                shipment_id: wire.shipment_id,
                sent_at: wire.sent_at,
                body: MessageBody::CheckDecision {
                    action: wire.decision,
                },
            }
        }
        "parcel_decision" => {
            let wire: WireParcelDecision = serde_json::from_value(rest).map_err(invalid)?;
            head(&wire.key, &wire.shipment_id, &wire.sent_at)?;
            nonempty("tracking_number", &wire.tracking_number)?;
            if !matches!(wire.decision.as_str(), "chase" | "new_label" | "reship") {
                return Err(format!(
                    "`decision` is `{}`; expected chase, new_label or reship",
                    wire.decision
                ));
            }
            SupplierMessage {
                key: wire.key,
                shipment_id: wire.shipment_id,
                sent_at: wire.sent_at,
                body: MessageBody::ParcelDecision {
                    action: wire.decision,
                    tracking_number: wire.tracking_number,
                },
            }
        }
        other => {
            return Err(format!(
                "unknown `type` `{other}` (expected submission, amendment, cancellation, decision, check_decision or parcel_decision)"
            ));
        }
    };
    Ok((message, value))
}

fn submission(kind: &str, wire: WireSubmission) -> Result<SupplierMessage, String> {
    // The type and the revision say the same thing twice; a disagreement is a sender's bug.
    if kind == "submission" && wire.revision != 1 {
        return Err(format!(
            "a submission has `revision` 1, got {}; later revisions are amendments",
            wire.revision
        ));
    }
    if kind == "amendment" && wire.revision < 2 {
        return Err(format!(
            "an amendment has `revision` 2 or more, got {}",
            wire.revision
        ));
    }
    nonempty("shop", &wire.shop)?;
    nonempty("order_name", &wire.order_name)?;
    if wire.lines.is_empty() {
        return Err("`lines` is empty".into());
    }
    // A removed line stays in an amendment with quantity 0; a first submission has no reason to
    // name a line it does not want shipped.
    let least = if kind == "submission" { 1 } else { 0 };
    let mut lines = Vec::with_capacity(wire.lines.len());
    for (i, line) in wire.lines.into_iter().enumerate() {
        nonempty(&format!("lines[{i}].line_id"), &line.line_id)?;
        nonempty(&format!("lines[{i}].sku"), &line.sku)?;
        if line.quantity < least {
            return Err(format!(
                "`lines[{i}].quantity` must be at least {least} in a {kind}, got {}",
                line.quantity
            ));
        }
        if lines
            .iter()
            .any(|l: &MessageLine| l.line_id == line.line_id)
        {
            return Err(format!(
                "`lines[{i}].line_id` `{}` appears twice",
                line.line_id
            ));
        }
        lines.push(MessageLine {
            line_id: line.line_id,
            sku: line.sku,
            variant_title: line.variant_title,
            quantity: line.quantity,
        });
    }
    Ok(SupplierMessage {
        key: wire.key,
        shipment_id: wire.shipment_id,
        sent_at: wire.sent_at,
        body: MessageBody::Submission {
            revision: wire.revision,
            shop: wire.shop,
            order_name: wire.order_name,
            lines,
            ship_to: wire.ship_to.map(|a| {
                Box::new(Address {
                    name: a.name,
                    address1: a.address1,
                    address2: a.address2,
                    city: a.city,
                    province_code: a.province_code,
                    zip: a.zip,
                    country_code: a.country_code,
                    phone: a.phone,
                })
            }),
        },
    })
}
