//! The physical check record (SPEC section 3.1): who checked what, how, what they found, and
//! whether it may ship.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    CLOCK_SKEW_MS, EvidenceErrors, Photo, Problems, ShipmentLinesView, blank, check_photos,
};
use crate::order::Timestamp;
use crate::suppliers::{EventKind, SupplierEvent};

/// Who checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inspector {
    /// The person who did the check.
    pub name: String,
    /// Whom they work for (the supplier, a sourcing agent, an inspection company).
    #[serde(default)]
    pub organisation: Option<String>,
}

/// How the units were chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckMethod {
    /// Every unit of the shipment was looked at: what a dropship order normally gets.
    EveryUnit,
    /// The units come from a lot accepted by checking a sample (ISO 2859-1 / ANSI Z1.4).
    Sampling { lot_size: i64, sample_size: i64 },
}

/// How bad a defect is (the classes of ISO 2859-1 inspections).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefectClass {
    /// Unsafe or illegal to sell: never a plain `pass`.
    Critical,
    /// Likely to make the customer return it.
    Major,
    /// Cosmetic.
    Minor,
}

/// A defect found on some units of a line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckDefect {
    pub class: DefectClass,
    /// How many units have it.
    #[serde(default = "one")]
    pub count: i64,
    #[serde(default)]
    pub note: Option<String>,
    /// The `file` of one of the check's `photos` that shows it. A reference rather than a URL
    /// of its own, so that the photo is one whose SHA-256 the check carries.
    #[serde(default)]
    pub photo: Option<String>,
}

fn one() -> i64 {
    1
}

/// The packaging checks of an inspection report, each one optional: a `false` is a finding,
/// an absent value is a check that was not done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackagingChecks {
    /// The carton or mailer is strong enough for the goods and the journey.
    #[serde(default)]
    pub strength_ok: Option<bool>,
    /// Inserts, padding and dividers are in place.
    #[serde(default)]
    pub inserts_ok: Option<bool>,
    /// Sealed, with leak protection where liquids travel.
    #[serde(default)]
    pub seal_ok: Option<bool>,
    /// Blind shipping: no price list, invoice or supplier advertising inside.
    #[serde(default)]
    pub no_price_or_invoice_inside: Option<bool>,
    /// The parcel holds exactly the bundle ordered.
    #[serde(default)]
    pub bundle_accurate: Option<bool>,
    /// The label matches the ship-to address and the tracking number.
    #[serde(default)]
    pub label_matches: Option<bool>,
    #[serde(default)]
    pub weight_grams: Option<i64>,
    /// Length, width, height.
    #[serde(default)]
    pub dimensions_cm: Option<[i64; 3]>,
}

impl PackagingChecks {
    /// The yes/no checks by their field names, for the rules that apply to all of them.
    fn flags(&self) -> [(&'static str, Option<bool>); 6] {
        [
            ("strength_ok", self.strength_ok),
            ("inserts_ok", self.inserts_ok),
            ("seal_ok", self.seal_ok),
            (
                "no_price_or_invoice_inside",
                self.no_price_or_invoice_inside,
            ),
            ("bundle_accurate", self.bundle_accurate),
            ("label_matches", self.label_matches),
        ]
    }
}

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckResult {
    Pass,
    Fail,
    /// It differs from the order in a way someone accepted: who, and why.
    PassWithDeviation {
        approver: String,
        reason: String,
    },
}

impl CheckResult {
    /// The name used in the JSON form (`result`) and in the workflow.
    pub fn name(&self) -> &'static str {
        match self {
            CheckResult::Pass => "pass",
            CheckResult::Fail => "fail",
            CheckResult::PassWithDeviation { .. } => "pass_with_deviation",
        }
    }
}

/// What happens to the goods after the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    Ship,
    Rework,
    Replace,
    Hold,
    Cancel,
}

/// One line of a check: what was expected, what was found, how many passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckLine {
    /// Shopify's line item id, as in the shipment.
    pub line_id: String,
    /// The SKU ordered. Not sent by the checker: validation fills it in from the shipment, so
    /// the stored record shows both sides of the comparison.
    pub expected_sku: Option<String>,
    /// The variant ordered, filled in like `expected_sku`.
    pub expected_variant: Option<String>,
    pub found_sku: Option<String>,
    pub found_variant: Option<String>,
    /// Colour, size, version, plug/voltage/region… as found, by option name.
    pub found_options: BTreeMap<String, String>,
    /// The barcode scanned on the product, if any.
    pub barcode: Option<String>,
    /// Whether the product matches the store's listing (photos, description).
    pub matches_listing: Option<bool>,
    /// How many units were checked. `None` only when the sender gave no count: a CSV `check`
    /// row speaks for its whole line, so validation then takes the line's quantity.
    pub quantity_checked: Option<i64>,
    pub quantity_passed: i64,
    pub accessories_expected: Vec<String>,
    pub accessories_found: Vec<String>,
    /// The condition in words (`new, sealed`, `box dented`).
    pub condition: Option<String>,
    pub defects: Vec<CheckDefect>,
    pub note: Option<String>,
}

/// A physical check record in its domain form, as the store keeps it (postcard).
///
/// Build it from the JSON form with [`CheckRecord::from_json`] (or from a supplier's
/// `check_reported` event with [`CheckRecord::from_event`]), then [`validate`] it against the
/// shipment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRecord {
    /// The checker's own id for the record, if it has one.
    pub check_id: Option<String>,
    /// The supplier's order reference, if given.
    pub supplier_ref: Option<String>,
    pub inspector: Inspector,
    /// When the check was done.
    pub checked_at: Timestamp,
    /// Where (a warehouse, an address).
    pub place: Option<String>,
    pub method: CheckMethod,
    pub lines: Vec<CheckLine>,
    pub packaging: Option<PackagingChecks>,
    pub photos: Vec<Photo>,
    pub result: CheckResult,
    pub disposition: Disposition,
    pub note: Option<String>,
}

/// `method` in the JSON form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckMethodJson {
    /// The default: a dropship order is small enough to check every unit.
    #[default]
    EveryUnit,
    Sampling,
}

/// `sampling` in the JSON form: required with `"method": "sampling"`, refused otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingJson {
    pub lot_size: i64,
    pub sample_size: i64,
}

/// `result` in the JSON form. It stays a plain string (rather than an object holding the
/// deviation) because the workflow and the views read `result` from stored check JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckResultJson {
    Pass,
    Fail,
    PassWithDeviation,
}

/// `deviation` in the JSON form: required with `"result": "pass_with_deviation"`. Both fields
/// are optional here only so that a missing one is reported by name with every other problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckDeviationJson {
    #[serde(default)]
    pub approver: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// One line of the JSON form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckLineJson {
    pub line_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found_sku: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found_variant: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub found_options: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barcode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches_listing: Option<bool>,
    /// Required; optional here so that its absence is reported with the other problems.
    #[serde(default)]
    pub quantity_checked: Option<i64>,
    pub quantity_passed: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accessories_expected: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accessories_found: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub defects: Vec<CheckDefect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The JSON form of a check: the `check` object of a supplier's `check_reported` event, and
/// what the CLI and the admin API take. Unknown fields are refused, so that a misspelt field
/// is not silently dropped from the evidence.
///
/// ```json
/// {
///   "check_id": "QC-2026-0042",
///   "supplier_ref": "PO-7781",
///   "inspector": {"name": "Li Wei", "organisation": "Acme Sourcing"},
///   "checked_at": "2026-11-26T09:30:00+08:00",
///   "place": "Acme warehouse, Yiwu",
///   "method": "every_unit",
///   "lines": [
///     {
///       "line_id": "gid://shopify/LineItem/1001",
///       "found_sku": "MUG-RED",
///       "found_variant": "Red / 350 ml",
///       "found_options": {"colour": "red", "volume": "350 ml"},
///       "barcode": "6901234567892",
///       "matches_listing": true,
///       "quantity_checked": 2,
///       "quantity_passed": 2,
///       "accessories_expected": ["gift box"],
///       "accessories_found": ["gift box"],
///       "condition": "new",
///       "defects": [
///         {"class": "minor", "count": 1, "note": "faint scuff under the base", "photo": "scuff.jpg"}
///       ]
///     }
///   ],
///   "packaging": {
///     "strength_ok": true, "inserts_ok": true, "seal_ok": true,
///     "no_price_or_invoice_inside": true, "bundle_accurate": true, "label_matches": true,
///     "weight_grams": 640, "dimensions_cm": [20, 15, 10]
///   },
///   "photos": [
///     {"kind": "variant_label", "file": "https://cdn.acme.example/qc/42/label.jpg",
///      "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
///     {"kind": "defect", "file": "scuff.jpg",
///      "sha256": "60303AE22B998861BCE3B28F33EEC1BE758A213C86C93C076DBE9F558C11C752"}
///   ],
///   "result": "pass",
///   "disposition": "ship"
/// }
/// ```
///
/// - `method` is `every_unit` (the default) or `sampling`, which then needs
///   `"sampling": {"lot_size": 500, "sample_size": 50}`.
/// - `result` is `pass`, `fail` or `pass_with_deviation`, which then needs
///   `"deviation": {"approver": "Mia (store owner)", "reason": "lid is matte, not glossy"}`.
/// - `disposition` is `ship`, `rework`, `replace`, `hold` or `cancel`.
/// - A photo `kind` is `variant_label`, `accessories`, `defect`, `packed_open`,
///   `packed_sealed`, `label`, `scale` or `other`; `sha256` is 64 hex digits, either case.
/// - A defect `class` is `critical`, `major` or `minor`; its `photo` names the `file` of one
///   of the check's `photos`.
///
/// A check built by `shipgate supplier import` from CSV rows has another shape (`"source":
/// "csv"`); [`CheckRecord::from_json`] reads both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplier_ref: Option<String>,
    pub inspector: Inspector,
    /// RFC 3339 with an offset.
    pub checked_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
    #[serde(default)]
    pub method: CheckMethodJson,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<SamplingJson>,
    pub lines: Vec<CheckLineJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packaging: Option<PackagingChecks>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub photos: Vec<Photo>,
    pub result: CheckResultJson,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deviation: Option<CheckDeviationJson>,
    pub disposition: Disposition,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The check JSON that `shipgate supplier import` builds from the `check` rows of a CSV sheet
/// (src/suppliers/csv.rs): one row per line, each with what was found, how many passed and
/// its own result; the record's result is the worst of them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CsvCheckJson {
    // Read only so that `deny_unknown_fields` accepts it: `from_json` already dispatched on it.
    #[allow(dead_code)]
    source: String,
    result: CheckResultJson,
    lines: Vec<CsvCheckLineJson>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CsvCheckLineJson {
    line_id: String,
    #[serde(default)]
    sku_found: Option<String>,
    #[serde(default)]
    variant_found: Option<String>,
    quantity_passed: i64,
    result: CheckResultJson,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    row: Option<u64>,
}

impl CheckResultJson {
    fn name(self) -> &'static str {
        match self {
            CheckResultJson::Pass => "pass",
            CheckResultJson::Fail => "fail",
            CheckResultJson::PassWithDeviation => "pass_with_deviation",
        }
    }
}

impl CheckRecord {
    /// Reads a check from its JSON text: the JSON form ([`CheckJson`]) or the shape a CSV
    /// import builds (`"source": "csv"`). A CSV sheet says neither who checked nor when, so
    /// for that shape the inspector is the `supplier` who sent the sheet and the time is
    /// `reported_at` (the event's `occurred_at`, which for an import is when it was imported).
    ///
    /// This only reads the record; [`validate`] checks it against the shipment.
    pub fn from_json(
        text: &str,
        supplier: &str,
        reported_at: &Timestamp,
    ) -> Result<CheckRecord, EvidenceErrors> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| EvidenceErrors::one("check", format!("is not JSON: {e}")))?;
        let Some(object) = value.as_object() else {
            return Err(EvidenceErrors::one("check", "must be a JSON object"));
        };
        match object.get("source") {
            None => {
                let json: CheckJson = serde_json::from_value(value)
                    .map_err(|e| EvidenceErrors::one("check", format!("invalid check: {e}")))?;
                CheckRecord::from_check_json(json)
            }
            Some(source) if source == "csv" => {
                let json: CsvCheckJson = serde_json::from_value(value).map_err(|e| {
                    EvidenceErrors::one("check", format!("invalid check from a CSV sheet: {e}"))
                })?;
                Ok(CheckRecord::from_csv_json(json, supplier, reported_at))
            }
            Some(other) => Err(EvidenceErrors::one(
                "source",
                format!(
                    "is {other}; only a check built from a CSV sheet has a `source` (`csv`), \
                     leave it out otherwise"
                ),
            )),
        }
    }

    /// Reads the check of a supplier's `check_reported` event (see [`CheckRecord::from_json`]
    /// for `supplier`, who reported it).
    pub fn from_event(
        event: &SupplierEvent,
        supplier: &str,
    ) -> Result<CheckRecord, EvidenceErrors> {
        match &event.kind {
            EventKind::CheckReported { check_json } => {
                CheckRecord::from_json(check_json, supplier, &event.occurred_at)
            }
            other => Err(EvidenceErrors::one(
                "type",
                format!(
                    "event `{}` is a `{}` event, not `check_reported`",
                    event.id,
                    other.name()
                ),
            )),
        }
    }

    /// Converts the JSON form. What is wrong in the form itself (a time that is not RFC 3339,
    /// `sampling` or `deviation` where they do not belong, a missing `quantity_checked`) is
    /// reported here, all at once; what is wrong against the shipment is for [`validate`].
    pub fn from_check_json(json: CheckJson) -> Result<CheckRecord, EvidenceErrors> {
        let mut problems = Problems::default();
        let checked_at = match Timestamp::parse(&json.checked_at) {
            Ok(at) => Some(at),
            Err(e) => {
                problems.push("checked_at", e);
                None
            }
        };
        let method = match (json.method, json.sampling) {
            (CheckMethodJson::EveryUnit, None) => CheckMethod::EveryUnit,
            (CheckMethodJson::EveryUnit, Some(_)) => {
                problems.push(
                    "sampling",
                    "is only for `\"method\": \"sampling\"`; this check says every unit was checked",
                );
                CheckMethod::EveryUnit
            }
            (CheckMethodJson::Sampling, Some(s)) => CheckMethod::Sampling {
                lot_size: s.lot_size,
                sample_size: s.sample_size,
            },
            (CheckMethodJson::Sampling, None) => {
                problems.push(
                    "sampling",
                    "is missing: a sampled check gives `{\"lot_size\": …, \"sample_size\": …}`",
                );
                CheckMethod::Sampling {
                    lot_size: 0,
                    sample_size: 0,
                }
            }
        };
        let result = match (json.result, json.deviation) {
            (CheckResultJson::PassWithDeviation, deviation) => {
                let deviation = deviation.unwrap_or(CheckDeviationJson {
                    approver: None,
                    reason: None,
                });
                // A missing approver or reason is kept empty here and refused by `validate`,
                // which names the field along with every other problem.
                CheckResult::PassWithDeviation {
                    approver: deviation.approver.unwrap_or_default(),
                    reason: deviation.reason.unwrap_or_default(),
                }
            }
            (plain, Some(_)) => {
                problems.push(
                    "deviation",
                    format!(
                        "is only for `\"result\": \"pass_with_deviation\"`, not `{}`",
                        plain.name()
                    ),
                );
                CheckResult::Fail
            }
            (CheckResultJson::Pass, None) => CheckResult::Pass,
            (CheckResultJson::Fail, None) => CheckResult::Fail,
        };
        let mut lines = Vec::with_capacity(json.lines.len());
        for (i, line) in json.lines.into_iter().enumerate() {
            if line.quantity_checked.is_none() {
                problems.push(
                    format!("lines[{i}].quantity_checked"),
                    "is missing: say how many units of the line were checked",
                );
            }
            lines.push(CheckLine {
                line_id: line.line_id,
                expected_sku: None,
                expected_variant: None,
                found_sku: line.found_sku,
                found_variant: line.found_variant,
                found_options: line.found_options,
                barcode: line.barcode,
                matches_listing: line.matches_listing,
                quantity_checked: line.quantity_checked,
                quantity_passed: line.quantity_passed,
                accessories_expected: line.accessories_expected,
                accessories_found: line.accessories_found,
                condition: line.condition,
                defects: line.defects,
                note: line.note,
            });
        }
        let Some(checked_at) = checked_at else {
            return Err(EvidenceErrors {
                problems: problems.0,
            });
        };
        problems.into_result(CheckRecord {
            check_id: json.check_id,
            supplier_ref: json.supplier_ref,
            inspector: json.inspector,
            checked_at,
            place: json.place,
            method,
            lines,
            packaging: json.packaging,
            photos: json.photos,
            result,
            disposition: json.disposition,
            note: json.note,
        })
    }

    /// Converts the shape a CSV import builds. The sheet's `pass_with_deviation` note holds
    /// what differs and who approved it in one text, so the supplier who sent the sheet is
    /// recorded as the approver (they vouch for the approval they wrote down) and the notes of
    /// the deviating rows are the reason. A failed sheet is put on hold: the owner decides what
    /// happens to the goods through the exception it raises.
    fn from_csv_json(json: CsvCheckJson, supplier: &str, reported_at: &Timestamp) -> CheckRecord {
        let mut deviations = Vec::new();
        let lines = json
            .lines
            .into_iter()
            .map(|line| {
                let row = line
                    .row
                    .map(|r| format!(" (sheet row {r})"))
                    .unwrap_or_default();
                let note = match (line.result, line.note) {
                    (CheckResultJson::Pass, note) => note,
                    (result, note) => {
                        let why = note.unwrap_or_default();
                        if result == CheckResultJson::PassWithDeviation {
                            deviations.push(format!("line `{}`: {why}", line.line_id));
                        }
                        Some(format!("{}: {why}{row}", result.name()))
                    }
                };
                CheckLine {
                    line_id: line.line_id,
                    expected_sku: None,
                    expected_variant: None,
                    found_sku: line.sku_found,
                    found_variant: line.variant_found,
                    found_options: BTreeMap::new(),
                    barcode: None,
                    matches_listing: None,
                    quantity_checked: None,
                    quantity_passed: line.quantity_passed,
                    accessories_expected: Vec::new(),
                    accessories_found: Vec::new(),
                    condition: None,
                    defects: Vec::new(),
                    note,
                }
            })
            .collect();
        let (result, disposition) = match json.result {
            CheckResultJson::Pass => (CheckResult::Pass, Disposition::Ship),
            CheckResultJson::Fail => (CheckResult::Fail, Disposition::Hold),
            CheckResultJson::PassWithDeviation => (
                CheckResult::PassWithDeviation {
                    approver: supplier.to_string(),
                    reason: deviations.join("; "),
                },
                Disposition::Ship,
            ),
        };
        CheckRecord {
            check_id: None,
            supplier_ref: None,
            inspector: Inspector {
                name: supplier.to_string(),
                organisation: Some(supplier.to_string()),
            },
            checked_at: reported_at.clone(),
            place: None,
            method: CheckMethod::EveryUnit,
            lines,
            packaging: None,
            photos: Vec::new(),
            result,
            disposition,
            note: Some("from a CSV sheet".to_string()),
        }
    }

    /// The record in its JSON form. A line whose `quantity_checked` is not known (a CSV
    /// record before validation) is written without it; a validated record always has it.
    pub fn to_check_json(&self) -> CheckJson {
        let (method, sampling) = match self.method {
            CheckMethod::EveryUnit => (CheckMethodJson::EveryUnit, None),
            CheckMethod::Sampling {
                lot_size,
                sample_size,
            } => (
                CheckMethodJson::Sampling,
                Some(SamplingJson {
                    lot_size,
                    sample_size,
                }),
            ),
        };
        let (result, deviation) = match &self.result {
            CheckResult::Pass => (CheckResultJson::Pass, None),
            CheckResult::Fail => (CheckResultJson::Fail, None),
            CheckResult::PassWithDeviation { approver, reason } => (
                CheckResultJson::PassWithDeviation,
                Some(CheckDeviationJson {
                    approver: Some(approver.clone()),
                    reason: Some(reason.clone()),
                }),
            ),
        };
        CheckJson {
            check_id: self.check_id.clone(),
            supplier_ref: self.supplier_ref.clone(),
            inspector: self.inspector.clone(),
            checked_at: self.checked_at.text.clone(),
            place: self.place.clone(),
            method,
            sampling,
            lines: self
                .lines
                .iter()
                .map(|l| CheckLineJson {
                    line_id: l.line_id.clone(),
                    found_sku: l.found_sku.clone(),
                    found_variant: l.found_variant.clone(),
                    found_options: l.found_options.clone(),
                    barcode: l.barcode.clone(),
                    matches_listing: l.matches_listing,
                    quantity_checked: l.quantity_checked,
                    quantity_passed: l.quantity_passed,
                    accessories_expected: l.accessories_expected.clone(),
                    accessories_found: l.accessories_found.clone(),
                    condition: l.condition.clone(),
                    defects: l.defects.clone(),
                    note: l.note.clone(),
                })
                .collect(),
            packaging: self.packaging.clone(),
            photos: self.photos.clone(),
            result,
            deviation,
            disposition: self.disposition,
            note: self.note.clone(),
        }
    }

    /// The record as JSON text (the [`CheckJson`] form).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.to_check_json()).expect("serializing a check to JSON")
    }
}

/// A check that fits its shipment: every line it names is one of the shipment's, each line's
/// expected SKU and variant are filled in, every count is known, every photo hash is a
/// lower-case SHA-256, and its result agrees with what it found. This is what the gate reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidCheck {
    shipment_id: String,
    record: CheckRecord,
}

impl ValidCheck {
    /// The shipment the check was validated against.
    pub fn shipment_id(&self) -> &str {
        &self.shipment_id
    }

    pub fn record(&self) -> &CheckRecord {
        &self.record
    }

    pub fn into_record(self) -> CheckRecord {
        self.record
    }

    pub fn result(&self) -> &CheckResult {
        &self.record.result
    }

    /// Whether the check failed: then nothing of the shipment passed it.
    pub fn failed(&self) -> bool {
        self.record.result == CheckResult::Fail
    }

    /// The quantity of each line that passed, for the gate: a `pass` or a
    /// `pass_with_deviation` gives what passed of each line (lines of which nothing passed are
    /// left out); a `fail` gives nothing, since a failed check lets nothing through however
    /// many units looked fine.
    pub fn passed_quantities(&self) -> Vec<(String, i64)> {
        if self.failed() {
            return Vec::new();
        }
        self.record
            .lines
            .iter()
            .filter(|l| l.quantity_passed > 0)
            .map(|l| (l.line_id.clone(), l.quantity_passed))
            .collect()
    }

    /// The quantity of one line that passed (0 if none, or if the check failed).
    pub fn passed_quantity(&self, line_id: &str) -> i64 {
        self.passed_quantities()
            .into_iter()
            .find(|(id, _)| id == line_id)
            .map_or(0, |(_, q)| q)
    }

    /// The record as JSON text, complete (every `quantity_checked` is known).
    pub fn to_json(&self) -> String {
        self.record.to_json()
    }
}

/// Whether two SKUs name the same product. Blanks around them and the case of letters are
/// ignored: the checker types what is printed on a label, and `mug-red` on a label is the
/// product the store calls `MUG-RED`.
fn same_sku(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// The expected accessories not found, comparing names without case or surrounding blanks,
/// and counting repeats (two cables expected, one found: one is missing).
fn missing_accessories(expected: &[String], found: &[String]) -> Vec<String> {
    let mut left: Vec<String> = found.iter().map(|f| f.trim().to_lowercase()).collect();
    let mut missing = Vec::new();
    for item in expected {
        let key = item.trim().to_lowercase();
        match left.iter().position(|f| *f == key) {
            Some(at) => {
                left.swap_remove(at);
            }
            None => missing.push(item.clone()),
        }
    }
    missing
}

/// Checks a check record against the shipment's current lines and returns it as a
/// [`ValidCheck`], or every problem found.
///
/// Refused, each with the field it is about:
/// - an empty `inspector.name`, or a `checked_at` more than [`CLOCK_SKEW_MS`] after `now_ms`;
/// - a line that is not (or no longer) in the shipment, or checked twice;
/// - a `pass` or `pass_with_deviation` that does not cover every current line of the shipment
///   and its full quantity (`line X: 1 of 2 checked`). A `fail` need not: one broken unit
///   is enough to fail a shipment, and refusing the report for being incomplete would hide the
///   failure instead of recording it;
/// - more units checked than the line holds, more passed than checked, a negative count;
/// - a `pass` that its own findings contradict: fewer passed than the line's quantity, a
///   critical defect, a found SKU other than the one ordered, missing accessories, a product
///   that does not match the listing, a packaging check that is `false` (such a check is a
///   `fail` or a `pass_with_deviation`);
/// - a `pass_with_deviation` without `deviation.approver` or `deviation.reason`;
/// - a `fail` whose disposition is `ship`;
/// - a photo without a valid SHA-256, a defect whose photo is not among the check's photos, a
///   defect count below 1, a sampling plan or packaging measure that is not positive.
pub fn validate(
    mut check: CheckRecord,
    shipment: &ShipmentLinesView,
    now_ms: i64,
) -> Result<ValidCheck, EvidenceErrors> {
    let mut problems = Problems::default();
    let shipment_id = &shipment.shipment_id;
    let plain_pass = check.result == CheckResult::Pass;
    let covering = check.result != CheckResult::Fail;

    if blank(&check.inspector.name) {
        problems.push("inspector.name", "is empty: say who did the check");
    }
    if check.checked_at.unix_ms > now_ms + CLOCK_SKEW_MS {
        problems.push(
            "checked_at",
            format!(
                "`{}` is in the future: a check is recorded after it was done",
                check.checked_at.text
            ),
        );
    }
    if let CheckMethod::Sampling {
        lot_size,
        sample_size,
    } = check.method
    {
        if sample_size < 1 {
            problems.push(
                "sampling.sample_size",
                format!("must be at least 1, got {sample_size}"),
            );
        }
        if lot_size < sample_size.max(1) {
            problems.push(
                "sampling.lot_size",
                format!("{lot_size} is smaller than the sample of {sample_size}"),
            );
        }
    }
    match &check.result {
        CheckResult::PassWithDeviation { approver, reason } => {
            if blank(approver) {
                problems.push(
                    "deviation.approver",
                    "is missing: a pass with deviation names who accepted the difference",
                );
            }
            if blank(reason) {
                problems.push(
                    "deviation.reason",
                    "is missing: a pass with deviation says what differs and why it may ship",
                );
            }
        }
        CheckResult::Fail if check.disposition == Disposition::Ship => problems.push(
            "disposition",
            "is `ship` but the check failed: rework, replace, hold or cancel",
        ),
        _ => {}
    }

    check_photos(&mut check.photos, "photos", true, &mut problems);
    let photo_files: Vec<&str> = check.photos.iter().map(|p| p.file.as_str()).collect();

    if check.lines.is_empty() {
        problems.push("lines", "is empty: a check covers the shipment's lines");
    }
    let mut seen: Vec<(String, usize)> = Vec::new();
    for (i, line) in check.lines.iter_mut().enumerate() {
        let field = |name: &str| format!("lines[{i}].{name}");
        let id = line.line_id.clone();
        if blank(&id) {
            problems.push(field("line_id"), "is empty");
        } else if let Some((_, first)) = seen.iter().find(|(seen_id, _)| *seen_id == id) {
            problems.push(
                field("line_id"),
                format!("line `{id}` is already checked in `lines[{first}]`; check each line once"),
            );
        } else {
            seen.push((id.clone(), i));
        }

        for (k, defect) in line.defects.iter().enumerate() {
            if defect.count < 1 {
                problems.push(
                    field(&format!("defects[{k}].count")),
                    format!("must be at least 1, got {}", defect.count),
                );
            }
            if let Some(photo) = &defect.photo
                && !photo_files.contains(&photo.as_str())
            {
                problems.push(
                    field(&format!("defects[{k}].photo")),
                    format!("`{photo}` is not the `file` of any of the check's `photos`"),
                );
            }
            if plain_pass && defect.class == DefectClass::Critical {
                problems.push(
                    field(&format!("defects[{k}].class")),
                    format!(
                        "line `{id}` has a critical defect, so the result cannot be `pass` \
                         (use `fail`, or `pass_with_deviation` with who approved it)"
                    ),
                );
            }
        }
        if line.quantity_passed < 0 {
            problems.push(
                field("quantity_passed"),
                format!("must not be negative, got {}", line.quantity_passed),
            );
        }
        if let Some(checked) = line.quantity_checked
            && checked < 0
        {
            problems.push(
                field("quantity_checked"),
                format!("must not be negative, got {checked}"),
            );
        }
        if plain_pass && line.matches_listing == Some(false) {
            problems.push(
                field("matches_listing"),
                format!("line `{id}` does not match the listing, so the result cannot be `pass`"),
            );
        }
        let missing = missing_accessories(&line.accessories_expected, &line.accessories_found);
        if plain_pass && !missing.is_empty() {
            problems.push(
                field("accessories_found"),
                format!(
                    "line `{id}` lacks {}, so the result cannot be `pass`",
                    missing.join(", ")
                ),
            );
        }

        let Some(ordered) = shipment.line(&id) else {
            if !blank(&id) {
                problems.push(
                    field("line_id"),
                    format!("line `{id}` is not in shipment `{shipment_id}`"),
                );
            }
            continue;
        };
        line.expected_sku = Some(ordered.sku.clone());
        line.expected_variant = ordered.variant_title.clone();
        let checked = *line.quantity_checked.get_or_insert(ordered.quantity);
        if checked > ordered.quantity {
            problems.push(
                field("quantity_checked"),
                format!(
                    "line `{id}`: {checked} checked, but the shipment holds {}",
                    ordered.quantity
                ),
            );
        } else if covering && checked < ordered.quantity {
            problems.push(
                field("quantity_checked"),
                format!("line `{id}`: {checked} of {} checked", ordered.quantity),
            );
        }
        if line.quantity_passed > checked {
            problems.push(
                field("quantity_passed"),
                format!(
                    "line `{id}`: {} passed, but only {checked} checked",
                    line.quantity_passed
                ),
            );
        } else if plain_pass && line.quantity_passed < ordered.quantity {
            problems.push(
                field("quantity_passed"),
                format!(
                    "line `{id}`: {} of {} passed, so the result cannot be `pass` \
                     (use `fail`, or `pass_with_deviation` with who approved it)",
                    line.quantity_passed, ordered.quantity
                ),
            );
        }
        if plain_pass
            && let Some(found) = &line.found_sku
            && !same_sku(found, &ordered.sku)
        {
            problems.push(
                field("found_sku"),
                format!(
                    "line `{id}`: found `{found}` but `{}` was ordered, so the result cannot \
                     be `pass` (use `fail`, or `pass_with_deviation` with who approved it)",
                    ordered.sku
                ),
            );
        }
    }
    if covering {
        for ordered in shipment.current() {
            if !check.lines.iter().any(|l| l.line_id == ordered.line_id) {
                problems.push(
                    "lines",
                    format!(
                        "line `{}`: 0 of {} checked (the check has no line for it)",
                        ordered.line_id, ordered.quantity
                    ),
                );
            }
        }
    }

    if let Some(packaging) = &check.packaging {
        if let Some(weight) = packaging.weight_grams
            && weight <= 0
        {
            problems.push(
                "packaging.weight_grams",
                format!("must be positive, got {weight}"),
            );
        }
        if let Some(dimensions) = packaging.dimensions_cm
            && dimensions.iter().any(|d| *d <= 0)
        {
            problems.push(
                "packaging.dimensions_cm",
                format!("must all be positive, got {dimensions:?}"),
            );
        }
        if plain_pass {
            for (name, value) in packaging.flags() {
                if value == Some(false) {
                    problems.push(
                        format!("packaging.{name}"),
                        "is false, so the result cannot be `pass`",
                    );
                }
            }
        }
    }

    problems.into_result(ValidCheck {
        shipment_id: shipment_id.clone(),
        record: check,
    })
}
