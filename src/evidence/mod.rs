//! The records of the physical work on a shipment: the physical check (SPEC section 3.1), the
//! packing of its parcels and their labels, and their validation against the shipment.
//!
//! These records are what the gate (SPEC section 2, invariant 3) will rely on: a quantity of a line
//! may only be fulfilled in Shopify once it passed a check, was packed into a parcel and that
//! parcel was accepted by the carrier. A record that contradicts itself or the shipment is
//! therefore refused here, with every problem named by its field, rather than stored and
//! misread later.
//!
//! Each record has a domain form that the store keeps with postcard (so no internally tagged
//! enums, no `serde_json::Value` and no `flatten`: postcard is not self-describing), and the check
//! also has a JSON wire form ([`CheckJson`]) for the supplier's `check_reported` event, the CLI
//! and the admin API. Validation turns a record into its `Valid…` form, which is the only form
//! the gate should read.
//!
//! Everything here is pure: no clock (the caller passes `now_ms`), no store, no I/O.

mod check;
mod packing;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::workflow::derive;
use crate::workflow::model::Shipment;

pub use check::{
    CheckDefect, CheckDeviationJson, CheckJson, CheckLine, CheckLineJson, CheckMethod,
    CheckMethodJson, CheckRecord, CheckResult, CheckResultJson, DefectClass, Disposition,
    Inspector, PackagingChecks, SamplingJson, ValidCheck, validate,
};
pub use packing::{
    LabelRecord, PackedParcelRecord, PackingRecord, ValidLabel, ValidPacking, check_label_fields,
    validate_label, validate_packing,
};

/// How far ahead of shipgate's clock a reported time may be before it counts as "in the
/// future". An agent's phone or warehouse PC is rarely set to the second, and refusing a
/// check for a minute of clock drift would only make the agent send it again; an hour ahead,
/// though, is a wrong date or a made-up record.
pub const CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// One problem with a record: the field it is about (as named in the JSON form, with indexes,
/// such as `lines[0].quantity_checked`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`: {}", self.field, self.message)
    }
}

/// Why a record was refused: every problem found, not only the first, so that a supplier or an
/// operator can fix the whole record in one go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct EvidenceErrors {
    pub problems: Vec<Problem>,
}

/// The errors of a check record (the same type as for packing and labels; the name reads better
/// where a check is validated).
pub type CheckErrors = EvidenceErrors;

impl std::fmt::Display for EvidenceErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl EvidenceErrors {
    /// A refusal with one problem.
    pub fn one(field: impl Into<String>, message: impl Into<String>) -> EvidenceErrors {
        EvidenceErrors {
            problems: vec![Problem {
                field: field.into(),
                message: message.into(),
            }],
        }
    }

    /// Whether some problem is about this field (exactly as named).
    pub fn has_field(&self, field: &str) -> bool {
        self.problems.iter().any(|p| p.field == field)
    }
}

/// Collects the problems of one record while it is checked.
#[derive(Debug, Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            message: message.into(),
        });
    }

    /// `Ok(value)` when nothing was found, otherwise every problem.
    fn into_result<T>(self, value: T) -> Result<T, EvidenceErrors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(EvidenceErrors { problems: self.0 })
        }
    }
}

/// One current line of a shipment, as validation needs it: what was ordered and how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentLineView {
    /// Shopify's line item id (`gid://shopify/LineItem/…`), the `line_id` suppliers use.
    pub line_id: String,
    pub sku: String,
    pub variant_title: Option<String>,
    /// The current quantity; a line at 0 has been taken out of the shipment.
    pub quantity: i64,
}

/// A shipment's current lines: what a check must cover and what a parcel may hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentLinesView {
    pub shipment_id: String,
    pub lines: Vec<ShipmentLineView>,
}

impl ShipmentLinesView {
    /// The current lines of a stored shipment: its planned lines at the quantities its
    /// evidence has left them, lines taken out entirely being left out.
    pub fn from_shipment(shipment: &Shipment) -> ShipmentLinesView {
        let lines = derive::current_lines(shipment)
            .into_iter()
            .filter_map(|(line_id, quantity)| {
                let planned = shipment.lines.iter().find(|l| l.line_item_id == line_id)?;
                Some(ShipmentLineView {
                    line_id,
                    sku: planned.sku.clone(),
                    variant_title: planned.variant_title.clone(),
                    quantity,
                })
            })
            .collect();
        ShipmentLinesView {
            shipment_id: shipment.id.clone(),
            lines,
        }
    }

    /// A current line by id. Lines at quantity 0 are not part of the shipment any more, so
    /// they are not found.
    pub fn line(&self, line_id: &str) -> Option<&ShipmentLineView> {
        self.lines
            .iter()
            .find(|l| l.line_id == line_id && l.quantity > 0)
    }

    /// The lines that are still in the shipment.
    pub fn current(&self) -> impl Iterator<Item = &ShipmentLineView> {
        self.lines.iter().filter(|l| l.quantity > 0)
    }
}

/// What a photo shows (the kinds an inspection report uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhotoKind {
    /// The product's label or tag showing SKU, variant, barcode.
    VariantLabel,
    /// The accessories laid out.
    Accessories,
    Defect,
    /// The parcel open, with the goods and inserts in it.
    PackedOpen,
    PackedSealed,
    /// The shipping label on the parcel.
    Label,
    /// The parcel on the scale.
    Scale,
    Other,
}

/// A photo of the physical work: what it shows, where it is (a URL or a file name the sender
/// keeps), and the SHA-256 of the file, so that the photo can later be proved to be the one
/// that was reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Photo {
    pub kind: PhotoKind,
    /// A URL (`https://…`) or a file name.
    pub file: String,
    /// 64 hexadecimal digits. Required on a check's photos; a packing photo reported through
    /// the `packed` event has none, since that event lists photos as plain URLs.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// The SHA-256 of some bytes in lower-case hex, as photos carry it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks a SHA-256 given in hex and returns it in lower case. Upper-case digits are accepted
/// because some tools (`certutil`, many Windows programs) print them that way; the digest is
/// the same.
pub fn parse_sha256(text: &str) -> Result<String, String> {
    if text.len() != 64 {
        return Err(format!(
            "a SHA-256 is 64 hexadecimal digits, got {} characters",
            text.chars().count()
        ));
    }
    if let Some(bad) = text.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(format!(
            "a SHA-256 is 64 hexadecimal digits, `{bad}` is not one"
        ));
    }
    Ok(text.to_ascii_lowercase())
}

/// Checks the photos of a record: each names a file, and each hash given is a SHA-256 (which
/// is returned normalised). `hash_required` is set for a check's photos, whose hashes are what
/// makes them evidence.
fn check_photos(photos: &mut [Photo], field: &str, hash_required: bool, problems: &mut Problems) {
    for (i, photo) in photos.iter_mut().enumerate() {
        if photo.file.trim().is_empty() {
            problems.push(
                format!("{field}[{i}].file"),
                "is empty: give the photo's URL or file name",
            );
        }
        match &photo.sha256 {
            Some(hash) => match parse_sha256(hash) {
                Ok(normal) => photo.sha256 = Some(normal),
                Err(e) => problems.push(format!("{field}[{i}].sha256"), e),
            },
            None if hash_required => problems.push(
                format!("{field}[{i}].sha256"),
                "is missing: every photo of a check carries the SHA-256 of its file",
            ),
            None => {}
        }
    }
}

/// Whether a text is empty once blanks are trimmed.
fn blank(text: &str) -> bool {
    text.trim().is_empty()
}
