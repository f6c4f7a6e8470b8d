//! Packing and label records: which passed units went into which parcel, and the label each
//! parcel carries.

use serde::{Deserialize, Serialize};

use super::{
    EvidenceErrors, Photo, PhotoKind, Problems, ShipmentLinesView, ValidCheck, blank, check_photos,
};
use crate::order::Timestamp;
use crate::suppliers::{EventKind, ParcelLine, SupplierEvent};

/// One parcel as packed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedParcelRecord {
    /// The packer's id for the parcel, unique within the shipment; labels name it.
    pub parcel_id: String,
    /// Which order lines, and how many units of each.
    pub lines: Vec<ParcelLine>,
    pub weight_grams: Option<i64>,
    /// Length, width, height.
    pub dimensions_cm: Option<[i64; 3]>,
    pub photos: Vec<Photo>,
}

/// The parcels a shipment was packed into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackingRecord {
    pub packed_at: Timestamp,
    pub parcels: Vec<PackedParcelRecord>,
}

impl PackingRecord {
    /// The packing a supplier reported with a `packed` event. The event lists photos as plain
    /// URLs, without a kind or a hash, so they become `other` photos without a SHA-256.
    pub fn from_event(event: &SupplierEvent) -> Result<PackingRecord, EvidenceErrors> {
        let EventKind::Packed { parcels } = &event.kind else {
            return Err(not_kind(event, "packed"));
        };
        Ok(PackingRecord {
            packed_at: event.occurred_at.clone(),
            parcels: parcels
                .iter()
                .map(|p| PackedParcelRecord {
                    parcel_id: p.parcel_id.clone(),
                    lines: p.lines.clone(),
                    weight_grams: p.weight_grams,
                    dimensions_cm: p.dimensions_cm,
                    photos: p
                        .photos
                        .iter()
                        .map(|file| Photo {
                            kind: PhotoKind::Other,
                            file: file.clone(),
                            sha256: None,
                        })
                        .collect(),
                })
                .collect(),
        })
    }
}

fn not_kind(event: &SupplierEvent, expected: &str) -> EvidenceErrors {
    EvidenceErrors::one(
        "type",
        format!(
            "event `{}` is a `{}` event, not `{expected}`",
            event.id,
            event.kind.name()
        ),
    )
}

/// A packing that fits its shipment and its check: every parcel holds at least one line of
/// the shipment, and no line is packed beyond what passed the check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidPacking {
    shipment_id: String,
    record: PackingRecord,
}

impl ValidPacking {
    pub fn shipment_id(&self) -> &str {
        &self.shipment_id
    }

    pub fn record(&self) -> &PackingRecord {
        &self.record
    }

    pub fn into_record(self) -> PackingRecord {
        self.record
    }

    /// The parcels' ids, in the order they were reported.
    pub fn parcel_ids(&self) -> Vec<&str> {
        self.record
            .parcels
            .iter()
            .map(|p| p.parcel_id.as_str())
            .collect()
    }

    /// A parcel by id.
    pub fn parcel(&self, parcel_id: &str) -> Option<&PackedParcelRecord> {
        self.record
            .parcels
            .iter()
            .find(|p| p.parcel_id == parcel_id)
    }

    /// How many units of each line are packed, over all parcels, in the order lines first
    /// appear.
    pub fn packed_quantities(&self) -> Vec<(String, i64)> {
        totals(&self.record.parcels)
            .into_iter()
            .map(|(id, total, _)| (id, total))
            .collect()
    }
}

/// Per line, in the order it first appears: the total packed and the field of the last
/// parcel line that adds to it (where a total that goes too far is reported).
fn totals(parcels: &[PackedParcelRecord]) -> Vec<(String, i64, String)> {
    let mut totals: Vec<(String, i64, String)> = Vec::new();
    for (i, parcel) in parcels.iter().enumerate() {
        for (j, line) in parcel.lines.iter().enumerate() {
            let field = format!("parcels[{i}].lines[{j}].quantity");
            match totals.iter_mut().find(|(id, _, _)| *id == line.line_id) {
                Some((_, total, at)) => {
                    *total += line.quantity;
                    *at = field;
                }
                None => totals.push((line.line_id.clone(), line.quantity, field)),
            }
        }
    }
    totals
}

/// Checks a packing against the shipment's current lines and its validated check.
///
/// Refused, each with the field it is about: no parcels; a parcel without an id, with an id
/// used twice, or without lines; a line that is not in the shipment, twice in one parcel, or
/// with a quantity below 1; a weight or a dimension that is not positive; a photo whose hash
/// is not a SHA-256; a check of another shipment; and, over all parcels, more units of a line
/// than passed the check (a unit may only be packed once it passed) or than the line holds.
///
/// One record is checked on its own: when a shipment is packed in several reports, the caller
/// decides how they combine (a later report of a parcel replaces the earlier one).
pub fn validate_packing(
    mut record: PackingRecord,
    shipment: &ShipmentLinesView,
    check: &ValidCheck,
) -> Result<ValidPacking, EvidenceErrors> {
    let mut problems = Problems::default();
    let shipment_id = &shipment.shipment_id;
    if check.shipment_id() != shipment_id {
        problems.push(
            "check",
            format!(
                "the check is of shipment `{}`, not `{shipment_id}`",
                check.shipment_id()
            ),
        );
    }
    if record.parcels.is_empty() {
        problems.push("parcels", "is empty: a packing has at least one parcel");
    }
    let mut parcel_ids: Vec<&str> = Vec::new();
    for (i, parcel) in record.parcels.iter_mut().enumerate() {
        if blank(&parcel.parcel_id) {
            problems.push(format!("parcels[{i}].parcel_id"), "is empty");
        } else if parcel_ids.contains(&parcel.parcel_id.as_str()) {
            problems.push(
                format!("parcels[{i}].parcel_id"),
                format!(
                    "parcel `{}` is listed twice; list each parcel once with all its lines",
                    parcel.parcel_id
                ),
            );
        }
        if parcel.lines.is_empty() {
            problems.push(
                format!("parcels[{i}].lines"),
                "is empty: a parcel holds at least one line",
            );
        }
        let mut line_ids: Vec<&str> = Vec::new();
        for (j, line) in parcel.lines.iter().enumerate() {
            let field = |name: &str| format!("parcels[{i}].lines[{j}].{name}");
            let id = &line.line_id;
            if blank(id) {
                problems.push(field("line_id"), "is empty");
            } else if shipment.line(id).is_none() {
                problems.push(
                    field("line_id"),
                    format!("line `{id}` is not in shipment `{shipment_id}`"),
                );
            }
            if line_ids.contains(&id.as_str()) {
                problems.push(
                    field("line_id"),
                    format!("line `{id}` is twice in parcel `{}`", parcel.parcel_id),
                );
            }
            line_ids.push(id);
            if line.quantity < 1 {
                problems.push(
                    field("quantity"),
                    format!("must be at least 1, got {}", line.quantity),
                );
            }
        }
        if let Some(weight) = parcel.weight_grams
            && weight <= 0
        {
            problems.push(
                format!("parcels[{i}].weight_grams"),
                format!("must be positive, got {weight}"),
            );
        }
        if let Some(dimensions) = parcel.dimensions_cm
            && dimensions.iter().any(|d| *d <= 0)
        {
            problems.push(
                format!("parcels[{i}].dimensions_cm"),
                format!("must all be positive, got {dimensions:?}"),
            );
        }
        check_photos(
            &mut parcel.photos,
            &format!("parcels[{i}].photos"),
            false,
            &mut problems,
        );
        parcel_ids.push(&parcel.parcel_id);
    }
    for (id, total, field) in totals(&record.parcels) {
        let Some(ordered) = shipment.line(&id) else {
            continue;
        };
        let passed = check.passed_quantity(&id);
        if total > passed {
            let why = if check.failed() {
                "but the check failed, so none of it may be packed".to_string()
            } else if passed == 0 {
                "but none of it passed the check".to_string()
            } else {
                format!("but only {passed} passed the check")
            };
            problems.push(field.clone(), format!("line `{id}`: {total} packed, {why}"));
        }
        if total > ordered.quantity {
            problems.push(
                field,
                format!(
                    "line `{id}`: {total} packed, but the shipment holds {}",
                    ordered.quantity
                ),
            );
        }
    }
    problems.into_result(ValidPacking {
        shipment_id: shipment_id.clone(),
        record,
    })
}

/// A shipping label made for a parcel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelRecord {
    /// The parcel it is for. A supplier may leave it out when the shipment has one parcel.
    pub parcel_id: Option<String>,
    pub carrier: String,
    pub tracking_number: String,
    pub tracking_url: Option<String>,
    pub created_at: Timestamp,
}

impl LabelRecord {
    /// The label a supplier reported with a `label_created` event.
    pub fn from_event(event: &SupplierEvent) -> Result<LabelRecord, EvidenceErrors> {
        let EventKind::LabelCreated {
            parcel_id,
            carrier,
            tracking_number,
            tracking_url,
        } = &event.kind
        else {
            return Err(not_kind(event, "label_created"));
        };
        Ok(LabelRecord {
            parcel_id: parcel_id.clone(),
            carrier: carrier.clone(),
            tracking_number: tracking_number.clone(),
            tracking_url: tracking_url.clone(),
            created_at: event.occurred_at.clone(),
        })
    }
}

/// A label for a packed parcel of the shipment, with a plausible tracking number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidLabel {
    shipment_id: String,
    parcel_id: String,
    record: LabelRecord,
}

impl ValidLabel {
    pub fn shipment_id(&self) -> &str {
        &self.shipment_id
    }

    /// The parcel it is for (named by the label, or the shipment's only parcel).
    pub fn parcel_id(&self) -> &str {
        &self.parcel_id
    }

    pub fn record(&self) -> &LabelRecord {
        &self.record
    }

    pub fn into_record(self) -> LabelRecord {
        self.record
    }
}

/// Why a tracking number is implausible, if it is. Carriers' numbers are letters, digits and
/// sometimes hyphens, 6 to 40 of them; anything else is a typo, a pasted sentence or a number
/// in another column, and a wrong number sent to the customer is worse than a late one.
fn tracking_number_problem(number: &str) -> Option<String> {
    if number.is_empty() {
        return Some("is empty".to_string());
    }
    if number.chars().any(char::is_whitespace) {
        return Some(format!(
            "`{number}` contains a space; give the number alone"
        ));
    }
    if let Some(bad) = number
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Some(format!(
            "`{number}` contains `{bad}`; a tracking number is letters, digits and hyphens"
        ));
    }
    let length = number.chars().count();
    if !(6..=40).contains(&length) {
        return Some(format!(
            "`{number}` is {length} characters long; a tracking number has 6 to 40"
        ));
    }
    None
}

/// Why a tracking URL is unusable, if it is: it is shown to the customer as a link, so it must
/// be an absolute `http` or `https` URL with a host.
fn tracking_url_problem(url: &str) -> Option<String> {
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    let Some(rest) = rest else {
        return Some(format!("`{url}` is not an http(s) URL"));
    };
    if url.chars().any(char::is_whitespace) {
        return Some(format!("`{url}` contains a space"));
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() {
        return Some(format!("`{url}` has no host"));
    }
    None
}

/// Checks what a label says of itself, whatever was packed: a carrier, a plausible tracking
/// number, an http(s) tracking URL. For a label that arrives before its parcel's packing.
pub fn check_label_fields(label: &LabelRecord) -> Result<(), EvidenceErrors> {
    let mut problems = Problems::default();
    label_field_problems(label, &mut problems);
    problems.into_result(())
}

fn label_field_problems(label: &LabelRecord, problems: &mut Problems) {
    if blank(&label.carrier) {
        problems.push("carrier", "is empty");
    }
    if let Some(problem) = tracking_number_problem(&label.tracking_number) {
        problems.push("tracking_number", problem);
    }
    if let Some(url) = &label.tracking_url
        && let Some(problem) = tracking_url_problem(url)
    {
        problems.push("tracking_url", problem);
    }
}

/// Checks a label against the shipment's validated packing.
///
/// Refused, each with the field it is about: a label for a parcel that was not packed (or
/// none named while the shipment has several parcels), an empty carrier, an implausible
/// tracking number (spaces, characters other than letters, digits and hyphens, fewer than 6 or
/// more than 40), a tracking URL that is not http(s).
pub fn validate_label(
    label: LabelRecord,
    packing: &ValidPacking,
) -> Result<ValidLabel, EvidenceErrors> {
    let mut problems = Problems::default();
    let shipment_id = packing.shipment_id();
    let parcels = packing.parcel_ids();
    let parcel_id = match &label.parcel_id {
        Some(id) if parcels.contains(&id.as_str()) => id.clone(),
        Some(id) => {
            problems.push(
                "parcel_id",
                format!(
                    "parcel `{id}` is not packed in shipment `{shipment_id}` (packed: {})",
                    parcels.join(", ")
                ),
            );
            String::new()
        }
        None if parcels.len() == 1 => parcels[0].to_string(),
        None => {
            problems.push(
                "parcel_id",
                format!(
                    "is missing and shipment `{shipment_id}` has {} parcels ({}): name one",
                    parcels.len(),
                    parcels.join(", ")
                ),
            );
            String::new()
        }
    };
    label_field_problems(&label, &mut problems);
    problems.into_result(ValidLabel {
        shipment_id: shipment_id.to_string(),
        parcel_id,
        record: label,
    })
}
