//! Supplier events: what a supplier or agent reports about a shipment (docs/suppliers.md
//! section 3), whichever channel it came through.
//!
//! The wire form (`WireEvent`) is JSON with a `type` tag; it is parsed and validated once, here,
//! into `SupplierEvent`, the domain form that the workflow applies and the store keeps as evidence.
//! Every channel (the `http` webhook, a `csv` sheet, a `manual` entry) produces the same type, so
//! each event is handled the same way wherever it came from.

use serde::{Deserialize, Serialize};

use crate::order::Timestamp;

/// A calendar date (`YYYY-MM-DD`), validated.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Day(String);

impl Day {
    /// Parses `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Result<Day, String> {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        time::Date::parse(text, format)
            .map_err(|_| format!("`{text}` is not a date (YYYY-MM-DD)"))?;
        Ok(Day(text.to_string()))
    }

    /// The date's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Midnight UTC at the start of this day, in Unix milliseconds.
    pub fn start_ms(&self) -> i64 {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        let date = time::Date::parse(&self.0, format).expect("validated when parsed");
        date.midnight().assume_utc().unix_timestamp() * 1000
    }
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One line of a parcel: which order line and how many of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParcelLine {
    pub line_id: String,
    pub quantity: i64,
}

/// A parcel as the supplier packed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedParcel {
    pub parcel_id: String,
    pub lines: Vec<ParcelLine>,
    pub weight_grams: Option<i64>,
    pub dimensions_cm: Option<[i64; 3]>,
    pub photos: Vec<String>,
}

/// What happened, by kind. Field meanings follow docs/suppliers.md section 3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Received {
        supplier_ref: Option<String>,
    },
    Rejected {
        reason: String,
    },
    LineConfirmed {
        line_id: String,
        sku: String,
        variant: Option<String>,
        quantity: i64,
        cost: Option<String>,
        ship_by: Option<Day>,
        hold_until: Option<Day>,
    },
    LineShort {
        line_id: String,
        quantity_short: i64,
        restock_date: Option<Day>,
        reason: Option<String>,
    },
    SubstituteOffered {
        line_id: String,
        offered_sku: String,
        offered_variant: Option<String>,
        differences: String,
        photos: Vec<String>,
        price_change: Option<String>,
        expires_at: Option<Timestamp>,
    },
    /// The physical check record as the supplier sent it (JSON text; validated by the check
    /// module when it is turned into check evidence).
    CheckReported {
        check_json: String,
    },
    Packed {
        parcels: Vec<PackedParcel>,
    },
    LabelCreated {
        parcel_id: Option<String>,
        carrier: String,
        tracking_number: String,
        tracking_url: Option<String>,
    },
    /// A claim that the parcel went to the carrier: never proof of acceptance.
    HandedOver {
        parcel_id: Option<String>,
        carrier: Option<String>,
        tracking_number: Option<String>,
    },
    Cancelled {
        reason: Option<String>,
    },
    /// The supplier cannot ship to the order's address as it stands (incomplete, undeliverable,
    /// refused by the carrier). Appended last: stored events keep their variant positions.
    AddressIssue {
        reason: String,
    },
}

impl EventKind {
    /// The wire name of the kind (`line_confirmed`, …).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Received { .. } => "received",
            EventKind::Rejected { .. } => "rejected",
            EventKind::LineConfirmed { .. } => "line_confirmed",
            EventKind::LineShort { .. } => "line_short",
            EventKind::SubstituteOffered { .. } => "substitute_offered",
            EventKind::CheckReported { .. } => "check_reported",
            EventKind::Packed { .. } => "packed",
            EventKind::LabelCreated { .. } => "label_created",
            EventKind::HandedOver { .. } => "handed_over",
            EventKind::Cancelled { .. } => "cancelled",
            EventKind::AddressIssue { .. } => "address_issue",
        }
    }

    /// The order lines the event names, to be checked against the shipment.
    pub fn line_ids(&self) -> Vec<&str> {
        match self {
            EventKind::LineConfirmed { line_id, .. }
            | EventKind::LineShort { line_id, .. }
            | EventKind::SubstituteOffered { line_id, .. } => vec![line_id],
            EventKind::Packed { parcels } => parcels
                .iter()
                .flat_map(|p| p.lines.iter().map(|l| l.line_id.as_str()))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// A supplier event in its domain form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupplierEvent {
    /// The sender's unique id for the event; a repeated id is the same event.
    pub id: String,
    pub shipment_id: String,
    /// When it happened, as the sender says.
    pub occurred_at: Timestamp,
    pub kind: EventKind,
}

/// Why an event body was refused. The text names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EventError(pub String);

// The JSON form. Kept apart from the domain type: serde's tagged enums need a self-describing
// format, and the store writes postcard.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct WireParcelLine {
    line_id: String,
    quantity: i64,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct WireParcel {
    parcel_id: String,
    lines: Vec<WireParcelLine>,
    weight_grams: Option<i64>,
    dimensions_cm: Option<[i64; 3]>,
    #[serde(default)]
    photos: Vec<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum WireKind {
    Received {
        supplier_ref: Option<String>,
    },
    Rejected {
        reason: String,
    },
    LineConfirmed {
        line_id: String,
        sku: String,
        variant: Option<String>,
        quantity: i64,
        cost: Option<String>,
        ship_by: Option<String>,
        hold_until: Option<String>,
    },
    LineShort {
        line_id: String,
        quantity_short: i64,
        restock_date: Option<String>,
        reason: Option<String>,
    },
    SubstituteOffered {
        line_id: String,
        offered_sku: String,
        offered_variant: Option<String>,
        differences: String,
        #[serde(default)]
        photos: Vec<String>,
        price_change: Option<String>,
        expires_at: Option<String>,
    },
    CheckReported {
        check: serde_json::Value,
    },
    Packed {
        parcels: Vec<WireParcel>,
    },
    LabelCreated {
        parcel_id: Option<String>,
        carrier: String,
        tracking_number: String,
        tracking_url: Option<String>,
    },
    HandedOver {
        parcel_id: Option<String>,
        carrier: Option<String>,
        tracking_number: Option<String>,
    },
    Cancelled {
        reason: Option<String>,
    },
    AddressIssue {
        reason: String,
    },
}

#[derive(Deserialize)]
struct WireHead {
    id: Option<String>,
    shipment_id: Option<String>,
    occurred_at: Option<String>,
}

#[derive(Serialize)]
struct WireOut<'a> {
    id: &'a str,
    shipment_id: &'a str,
    occurred_at: &'a str,
    #[serde(flatten)]
    kind: WireKind,
}

fn required(field: &str, value: Option<String>) -> Result<String, EventError> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        Some(_) => Err(EventError(format!("`{field}` is empty"))),
        None => Err(EventError(format!("`{field}` is missing"))),
    }
}

fn nonempty(field: &str, value: &str) -> Result<(), EventError> {
    if value.trim().is_empty() {
        return Err(EventError(format!("`{field}` is empty")));
    }
    Ok(())
}

fn positive(field: &str, value: i64) -> Result<(), EventError> {
    if value <= 0 {
        return Err(EventError(format!(
            "`{field}` must be at least 1, got {value}"
        )));
    }
    Ok(())
}

fn day(field: &str, value: Option<String>) -> Result<Option<Day>, EventError> {
    value
        .map(|v| Day::parse(&v).map_err(|e| EventError(format!("`{field}`: {e}"))))
        .transpose()
}

impl SupplierEvent {
    /// Parses and validates one event from its JSON (docs/suppliers.md section 3).
    pub fn from_json(body: &[u8]) -> Result<SupplierEvent, EventError> {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| EventError(format!("body is not JSON: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| EventError("body is not a JSON object".into()))?;
        let head: WireHead = serde_json::from_value(value.clone())
            .map_err(|e| EventError(format!("invalid event: {e}")))?;
        let id = required("id", head.id)?;
        if id.len() > 200 {
            return Err(EventError("`id` is longer than 200 characters".into()));
        }
        let shipment_id = required("shipment_id", head.shipment_id)?;
        let occurred_at = Timestamp::parse(&required("occurred_at", head.occurred_at)?)
            .map_err(|e| EventError(format!("`occurred_at`: {e}")))?;
        if !object.contains_key("type") {
            return Err(EventError("`type` is missing".into()));
        }
        let mut rest = object.clone();
        for field in ["id", "shipment_id", "occurred_at"] {
            rest.remove(field);
        }
        let wire: WireKind =
            serde_json::from_value(serde_json::Value::Object(rest)).map_err(|e| {
                let kind = match &object["type"] {
                    serde_json::Value::String(kind) => kind.clone(),
                    other => other.to_string(),
                };
                EventError(format!("invalid `{kind}` event: {e}"))
            })?;
        let kind = Self::kind_from_wire(wire)?;
        Ok(SupplierEvent {
            id,
            shipment_id,
            occurred_at,
            kind,
        })
    }

    fn kind_from_wire(wire: WireKind) -> Result<EventKind, EventError> {
        Ok(match wire {
            WireKind::Received { supplier_ref } => EventKind::Received { supplier_ref },
            WireKind::Rejected { reason } => {
                nonempty("reason", &reason)?;
                EventKind::Rejected { reason }
            }
            WireKind::AddressIssue { reason } => {
                nonempty("reason", &reason)?;
                EventKind::AddressIssue { reason }
            }
            WireKind::LineConfirmed {
                line_id,
                sku,
                variant,
                quantity,
                cost,
                ship_by,
                hold_until,
            } => {
                nonempty("line_id", &line_id)?;
                nonempty("sku", &sku)?;
                positive("quantity", quantity)?;
                EventKind::LineConfirmed {
                    line_id,
                    sku,
                    variant,
                    quantity,
                    cost,
                    ship_by: day("ship_by", ship_by)?,
                    hold_until: day("hold_until", hold_until)?,
                }
            }
            WireKind::LineShort {
                line_id,
                quantity_short,
                restock_date,
                reason,
            } => {
                nonempty("line_id", &line_id)?;
                positive("quantity_short", quantity_short)?;
                EventKind::LineShort {
                    line_id,
                    quantity_short,
                    restock_date: day("restock_date", restock_date)?,
                    reason,
                }
            }
            WireKind::SubstituteOffered {
                line_id,
                offered_sku,
                offered_variant,
                differences,
                photos,
                price_change,
                expires_at,
            } => {
                nonempty("line_id", &line_id)?;
                nonempty("offered_sku", &offered_sku)?;
                nonempty("differences", &differences)?;
                EventKind::SubstituteOffered {
                    line_id,
                    offered_sku,
                    offered_variant,
                    differences,
                    photos,
                    price_change,
                    expires_at: expires_at
                        .map(|t| {
                            Timestamp::parse(&t)
                                .map_err(|e| EventError(format!("`expires_at`: {e}")))
                        })
                        .transpose()?,
                }
            }
            WireKind::CheckReported { check } => {
                if !check.is_object() {
                    return Err(EventError("`check` must be an object".into()));
                }
                EventKind::CheckReported {
                    check_json: check.to_string(),
                }
            }
            WireKind::Packed { parcels } => {
                if parcels.is_empty() {
                    return Err(EventError("`parcels` is empty".into()));
                }
                let mut out = Vec::with_capacity(parcels.len());
                for (i, p) in parcels.into_iter().enumerate() {
                    nonempty(&format!("parcels[{i}].parcel_id"), &p.parcel_id)?;
                    if p.lines.is_empty() {
                        return Err(EventError(format!("`parcels[{i}].lines` is empty")));
                    }
                    let mut lines = Vec::with_capacity(p.lines.len());
                    for (j, l) in p.lines.into_iter().enumerate() {
                        nonempty(&format!("parcels[{i}].lines[{j}].line_id"), &l.line_id)?;
                        positive(&format!("parcels[{i}].lines[{j}].quantity"), l.quantity)?;
                        lines.push(ParcelLine {
                            line_id: l.line_id,
                            quantity: l.quantity,
                        });
                    }
                    if let Some(w) = p.weight_grams {
                        positive(&format!("parcels[{i}].weight_grams"), w)?;
                    }
                    out.push(PackedParcel {
                        parcel_id: p.parcel_id,
                        lines,
                        weight_grams: p.weight_grams,
                        dimensions_cm: p.dimensions_cm,
                        photos: p.photos,
                    });
                }
                EventKind::Packed { parcels: out }
            }
            WireKind::LabelCreated {
                parcel_id,
                carrier,
                tracking_number,
                tracking_url,
            } => {
                nonempty("carrier", &carrier)?;
                nonempty("tracking_number", &tracking_number)?;
                EventKind::LabelCreated {
                    parcel_id,
                    carrier,
                    tracking_number,
                    tracking_url,
                }
            }
            WireKind::HandedOver {
                parcel_id,
                carrier,
                tracking_number,
            } => EventKind::HandedOver {
                parcel_id,
                carrier,
                tracking_number,
            },
            WireKind::Cancelled { reason } => EventKind::Cancelled { reason },
        })
    }

    /// The event as the JSON a supplier sends (the sandbox agent and the docs use this).
    pub fn to_json(&self) -> Vec<u8> {
        let kind = match &self.kind {
            EventKind::Received { supplier_ref } => WireKind::Received {
                supplier_ref: supplier_ref.clone(),
            },
            EventKind::Rejected { reason } => WireKind::Rejected {
                reason: reason.clone(),
            },
            EventKind::AddressIssue { reason } => WireKind::AddressIssue {
                reason: reason.clone(),
            },
            EventKind::LineConfirmed {
                line_id,
                sku,
                variant,
                quantity,
                cost,
                ship_by,
                hold_until,
            } => WireKind::LineConfirmed {
                line_id: line_id.clone(),
                sku: sku.clone(),
                variant: variant.clone(),
                quantity: *quantity,
                cost: cost.clone(),
                ship_by: ship_by.as_ref().map(|d| d.to_string()),
                hold_until: hold_until.as_ref().map(|d| d.to_string()),
            },
            EventKind::LineShort {
                line_id,
                quantity_short,
                restock_date,
                reason,
            } => WireKind::LineShort {
                line_id: line_id.clone(),
                quantity_short: *quantity_short,
                restock_date: restock_date.as_ref().map(|d| d.to_string()),
                reason: reason.clone(),
            },
            EventKind::SubstituteOffered {
                line_id,
                offered_sku,
                offered_variant,
                differences,
                photos,
                price_change,
                expires_at,
            } => WireKind::SubstituteOffered {
                line_id: line_id.clone(),
                offered_sku: offered_sku.clone(),
                offered_variant: offered_variant.clone(),
                differences: differences.clone(),
                photos: photos.clone(),
                price_change: price_change.clone(),
                expires_at: expires_at.as_ref().map(|t| t.text.clone()),
            },
            EventKind::CheckReported { check_json } => WireKind::CheckReported {
                check: serde_json::from_str(check_json).unwrap_or(serde_json::Value::Null),
            },
            EventKind::Packed { parcels } => WireKind::Packed {
                parcels: parcels
                    .iter()
                    .map(|p| WireParcel {
                        parcel_id: p.parcel_id.clone(),
                        lines: p
                            .lines
                            .iter()
                            .map(|l| WireParcelLine {
                                line_id: l.line_id.clone(),
                                quantity: l.quantity,
                            })
                            .collect(),
                        weight_grams: p.weight_grams,
                        dimensions_cm: p.dimensions_cm,
                        photos: p.photos.clone(),
                    })
                    .collect(),
            },
            EventKind::LabelCreated {
                parcel_id,
                carrier,
                tracking_number,
                tracking_url,
            } => WireKind::LabelCreated {
                parcel_id: parcel_id.clone(),
                carrier: carrier.clone(),
                tracking_number: tracking_number.clone(),
                tracking_url: tracking_url.clone(),
            },
            EventKind::HandedOver {
                parcel_id,
                carrier,
                tracking_number,
            } => WireKind::HandedOver {
                parcel_id: parcel_id.clone(),
                carrier: carrier.clone(),
                tracking_number: tracking_number.clone(),
            },
            EventKind::Cancelled { reason } => WireKind::Cancelled {
                reason: reason.clone(),
            },
        };
        serde_json::to_vec(&WireOut {
            id: &self.id,
            shipment_id: &self.shipment_id,
            occurred_at: &self.occurred_at.text,
            kind,
        })
        .expect("serializing an event to JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<SupplierEvent, String> {
        SupplierEvent::from_json(json.as_bytes()).map_err(|e| e.0)
    }

    #[test]
    fn every_documented_example_parses_and_round_trips() {
        let examples = [
            r#"{"id":"evt_0001","type":"received","shipment_id":"SG-0000000042","occurred_at":"2026-11-25T10:01:00Z","supplier_ref":"PO-7781"}"#,
            r#"{"id":"e2","type":"rejected","shipment_id":"SG-1","occurred_at":"2026-11-25T10:01:00Z","reason":"we do not ship to GB"}"#,
            r#"{"id":"e3","type":"line_confirmed","shipment_id":"SG-1","occurred_at":"2026-11-25T10:01:00Z","line_id":"gid://shopify/LineItem/1","sku":"MUG-RED","variant":"Red","quantity":2,"cost":"4.20 USD","ship_by":"2026-11-28","hold_until":"2026-12-01"}"#,
            r#"{"id":"e4","type":"line_short","shipment_id":"SG-1","occurred_at":"2026-11-25T10:01:00Z","line_id":"gid://shopify/LineItem/1","quantity_short":1,"restock_date":"2026-12-10"}"#,
            r#"{"id":"e5","type":"substitute_offered","shipment_id":"SG-1","occurred_at":"2026-11-25T10:01:00Z","line_id":"gid://shopify/LineItem/1","offered_sku":"MUG-BLUE","differences":"blue instead of red","photos":["https://x/1.jpg"],"expires_at":"2026-11-27T00:00:00Z"}"#,
            r#"{"id":"e6","type":"check_reported","shipment_id":"SG-1","occurred_at":"2026-11-25T10:01:00Z","check":{"result":"pass"}}"#,
            r#"{"id":"e7","type":"packed","shipment_id":"SG-1","occurred_at":"2026-11-25T10:01:00Z","parcels":[{"parcel_id":"P1","lines":[{"line_id":"gid://shopify/LineItem/1","quantity":2}],"weight_grams":640,"dimensions_cm":[20,15,10]}]}"#,
            r#"{"id":"e8","type":"label_created","shipment_id":"SG-1","occurred_at":"2026-11-25T10:01:00Z","parcel_id":"P1","carrier":"UPS","tracking_number":"1Z999","tracking_url":"https://ups.example/1Z999"}"#,
            r#"{"id":"e9","type":"handed_over","shipment_id":"SG-1","occurred_at":"2026-11-25T10:01:00Z","parcel_id":"P1"}"#,
            r#"{"id":"e10","type":"cancelled","shipment_id":"SG-1","occurred_at":"2026-11-25T10:01:00Z"}"#,
        ];
        for example in examples {
            let event = parse(example).unwrap_or_else(|e| panic!("{example}: {e}"));
            let again = SupplierEvent::from_json(&event.to_json()).unwrap();
            assert_eq!(event, again, "{example}");
        }
    }

    #[test]
    fn invalid_events_name_the_field() {
        let cases = [
            ("not json", "not JSON"),
            ("[]", "not a JSON object"),
            (
                r#"{"type":"received","shipment_id":"SG-1","occurred_at":"2026-11-25T10:01:00Z"}"#,
                "`id` is missing",
            ),
            (
                r#"{"id":"","type":"received","shipment_id":"SG-1","occurred_at":"2026-11-25T10:01:00Z"}"#,
                "`id` is empty",
            ),
            (
                r#"{"id":"e","type":"received","occurred_at":"2026-11-25T10:01:00Z"}"#,
                "`shipment_id` is missing",
            ),
            (
                r#"{"id":"e","type":"received","shipment_id":"SG-1","occurred_at":"yesterday"}"#,
                "`occurred_at`",
            ),
            (
                r#"{"id":"e","shipment_id":"SG-1","occurred_at":"2026-11-25T10:01:00Z"}"#,
                "`type` is missing",
            ),
            (
                r#"{"id":"e","type":"teleported","shipment_id":"SG-1","occurred_at":"2026-11-25T10:01:00Z"}"#,
                "unknown variant `teleported`",
            ),
            (
                r#"{"id":"e","type":"line_confirmed","shipment_id":"SG-1","occurred_at":"2026-11-25T10:01:00Z","line_id":"l","sku":"S","quantity":0}"#,
                "`quantity` must be at least 1",
            ),
            (
                r#"{"id":"e","type":"line_confirmed","shipment_id":"SG-1","occurred_at":"2026-11-25T10:01:00Z","line_id":"l","quantity":1}"#,
                "missing field `sku`",
            ),
            (
                r#"{"id":"e","type":"line_short","shipment_id":"SG-1","occurred_at":"2026-11-25T10:01:00Z","line_id":"l","quantity_short":1,"restock_date":"soon"}"#,
                "`restock_date`",
            ),
            (
                r#"{"id":"e","type":"packed","shipment_id":"SG-1","occurred_at":"2026-11-25T10:01:00Z","parcels":[{"parcel_id":"P","lines":[]}]}"#,
                "`parcels[0].lines` is empty",
            ),
            (
                r#"{"id":"e","type":"received","shipment_id":"SG-1","occurred_at":"2026-11-25T10:01:00Z","colour":"red"}"#,
                "unknown field `colour`",
            ),
        ];
        for (body, expected) in cases {
            let err = parse(body).expect_err(body);
            assert!(
                err.contains(expected),
                "{body}: {err} should mention {expected}"
            );
        }
    }
}
