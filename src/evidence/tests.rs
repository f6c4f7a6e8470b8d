//! Tests of the evidence records: every refusal reason, valid records, the CSV-shaped check,
//! SHA-256 handling, and the JSON and postcard round trips.

use serde_json::{Value, json};

use super::*;
use crate::order::Timestamp;
use crate::suppliers::SupplierEvent;

const SHIPMENT: &str = "SG-0000000042";
const L1: &str = "gid://shopify/LineItem/1001";
const L2: &str = "gid://shopify/LineItem/1002";
const L3: &str = "gid://shopify/LineItem/1003";
const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const HASH_UPPER: &str = "60303AE22B998861BCE3B28F33EEC1BE758A213C86C93C076DBE9F558C11C752";

/// The JSON example of `CheckJson`'s documentation, read from the source, so that the
/// documented example is known to be valid and cannot drift from the code.
fn documented_example() -> String {
    let source = include_str!("check.rs");
    let start = source.find("/// ```json\n").expect("the example's start") + "/// ```json\n".len();
    let end = start
        + source[start..]
            .find("/// ```\n")
            .expect("the example's end");
    source[start..end]
        .lines()
        .map(|line| line.trim_start().trim_start_matches("///"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// shipgate's clock in the tests: a day after the checks were done.
fn now_ms() -> i64 {
    Timestamp::parse("2026-11-26T12:00:00Z").unwrap().unix_ms
}

fn reported_at() -> Timestamp {
    Timestamp::parse("2026-11-26T10:00:00Z").unwrap()
}

/// Two lines: two red mugs and one T-shirt.
fn shipment() -> ShipmentLinesView {
    ShipmentLinesView {
        shipment_id: SHIPMENT.to_string(),
        lines: vec![
            ShipmentLineView {
                line_id: L1.to_string(),
                sku: "MUG-RED".to_string(),
                variant_title: Some("Red / 350 ml".to_string()),
                quantity: 2,
            },
            ShipmentLineView {
                line_id: L2.to_string(),
                sku: "TEE-M".to_string(),
                variant_title: Some("M".to_string()),
                quantity: 1,
            },
        ],
    }
}

/// A complete passing check of `shipment()`, as JSON to be edited by each test.
fn passing_json() -> Value {
    json!({
        "check_id": "QC-1",
        "inspector": {"name": "Li Wei", "organisation": "Acme Sourcing"},
        "checked_at": "2026-11-26T09:30:00+08:00",
        "place": "Yiwu",
        "lines": [
            {
                "line_id": L1, "found_sku": "MUG-RED", "found_variant": "Red / 350 ml",
                "quantity_checked": 2, "quantity_passed": 2,
                "accessories_expected": ["gift box"], "accessories_found": ["Gift box"],
                "defects": [{"class": "minor", "note": "scuff", "photo": "scuff.jpg"}]
            },
            {"line_id": L2, "found_sku": "TEE-M", "quantity_checked": 1, "quantity_passed": 1}
        ],
        "photos": [
            {"kind": "variant_label", "file": "https://cdn.example/label.jpg", "sha256": HASH},
            {"kind": "defect", "file": "scuff.jpg", "sha256": HASH_UPPER}
        ],
        "result": "pass",
        "disposition": "ship"
    })
}

fn read(json: &Value) -> Result<CheckRecord, EvidenceErrors> {
    CheckRecord::from_json(&json.to_string(), "acme", &reported_at())
}

/// Reads and validates an edited passing check.
fn check_with(edit: impl FnOnce(&mut Value)) -> Result<ValidCheck, EvidenceErrors> {
    let mut json = passing_json();
    edit(&mut json);
    validate(read(&json)?, &shipment(), now_ms())
}

/// Asserts that the errors name `field` with a message containing `text`.
#[track_caller]
fn assert_problem(errors: &EvidenceErrors, field: &str, text: &str) {
    assert!(
        errors
            .problems
            .iter()
            .any(|p| p.field == field && p.message.contains(text)),
        "expected a problem with `{field}` mentioning `{text}`, got: {errors}"
    );
}

fn valid_check() -> ValidCheck {
    check_with(|_| {}).expect("the passing check is valid")
}

// --- The check: valid records ----------------------------------------------------------------

#[test]
fn the_documented_json_example_is_a_valid_check() {
    let record = CheckRecord::from_json(&documented_example(), "acme", &reported_at()).unwrap();
    let view = ShipmentLinesView {
        shipment_id: SHIPMENT.to_string(),
        lines: vec![shipment().lines[0].clone()],
    };
    let valid = validate(record, &view, now_ms()).unwrap();
    assert_eq!(valid.passed_quantities(), vec![(L1.to_string(), 2)]);
    assert_eq!(valid.record().inspector.name, "Li Wei");
    assert_eq!(
        valid.record().packaging.as_ref().unwrap().weight_grams,
        Some(640)
    );
}

#[test]
fn a_valid_check_fills_in_what_was_expected_and_normalises_hashes() {
    let valid = valid_check();
    assert_eq!(valid.shipment_id(), SHIPMENT);
    assert!(!valid.failed());
    let line = &valid.record().lines[0];
    assert_eq!(line.expected_sku.as_deref(), Some("MUG-RED"));
    assert_eq!(line.expected_variant.as_deref(), Some("Red / 350 ml"));
    assert_eq!(line.quantity_checked, Some(2));
    assert_eq!(
        valid.record().photos[1].sha256.as_deref(),
        Some(HASH_UPPER.to_ascii_lowercase().as_str())
    );
    assert_eq!(
        valid.passed_quantities(),
        vec![(L1.to_string(), 2), (L2.to_string(), 1)]
    );
    assert_eq!(valid.passed_quantity(L2), 1);
    assert_eq!(valid.passed_quantity(L3), 0);
}

#[test]
fn a_found_sku_in_another_case_or_with_blanks_is_the_same_product() {
    let valid = check_with(|j| j["lines"][0]["found_sku"] = json!(" mug-red ")).unwrap();
    assert!(!valid.failed());
}

#[test]
fn a_check_reported_event_becomes_a_valid_check() {
    let body = json!({
        "id": "evt_9", "type": "check_reported", "shipment_id": SHIPMENT,
        "occurred_at": "2026-11-26T10:00:00Z", "check": passing_json()
    });
    let event = SupplierEvent::from_json(body.to_string().as_bytes()).unwrap();
    let record = CheckRecord::from_event(&event, "acme").unwrap();
    assert_eq!(record.check_id.as_deref(), Some("QC-1"));
    assert!(validate(record, &shipment(), now_ms()).is_ok());
}

#[test]
fn an_event_of_another_kind_is_not_a_check() {
    let body = json!({
        "id": "evt_1", "type": "received", "shipment_id": SHIPMENT,
        "occurred_at": "2026-11-26T10:00:00Z"
    });
    let event = SupplierEvent::from_json(body.to_string().as_bytes()).unwrap();
    let errors = CheckRecord::from_event(&event, "acme").unwrap_err();
    assert_problem(
        &errors,
        "type",
        "is a `received` event, not `check_reported`",
    );
}

#[test]
fn a_sampled_check_is_read_with_its_plan() {
    let valid = check_with(|j| {
        j["method"] = json!("sampling");
        j["sampling"] = json!({"lot_size": 500, "sample_size": 50});
    })
    .unwrap();
    assert_eq!(
        valid.record().method,
        CheckMethod::Sampling {
            lot_size: 500,
            sample_size: 50
        }
    );
}

#[test]
fn a_time_a_little_ahead_of_our_clock_is_accepted() {
    let valid = check_with(|j| j["checked_at"] = json!("2026-11-26T12:03:00Z"));
    assert!(valid.is_ok(), "{valid:?}");
}

// --- The check: what the JSON form refuses --------------------------------------------------

#[test]
fn unknown_fields_are_refused_by_name() {
    let errors = check_with(|j| j["colour"] = json!("red")).unwrap_err();
    assert_problem(&errors, "check", "unknown field `colour`");
    let errors = check_with(|j| j["lines"][0]["colour"] = json!("red")).unwrap_err();
    assert_problem(&errors, "check", "unknown field `colour`");
    let errors = check_with(|j| j["photos"][0]["size"] = json!(12)).unwrap_err();
    assert_problem(&errors, "check", "unknown field `size`");
}

#[test]
fn required_fields_and_values_are_named() {
    let errors = check_with(|j| {
        j.as_object_mut().unwrap().remove("inspector");
    })
    .unwrap_err();
    assert_problem(&errors, "check", "missing field `inspector`");
    let errors = check_with(|j| j["result"] = json!("great")).unwrap_err();
    assert_problem(&errors, "check", "unknown variant `great`");
    let errors = check_with(|j| j["photos"][0]["kind"] = json!("selfie")).unwrap_err();
    assert_problem(&errors, "check", "unknown variant `selfie`");
    let errors = check_with(|j| j["lines"][0]["defects"][0]["class"] = json!("fatal")).unwrap_err();
    assert_problem(&errors, "check", "unknown variant `fatal`");
    let errors = CheckRecord::from_json("[1]", "acme", &reported_at()).unwrap_err();
    assert_problem(&errors, "check", "must be a JSON object");
    let errors = CheckRecord::from_json("{", "acme", &reported_at()).unwrap_err();
    assert_problem(&errors, "check", "is not JSON");
}

#[test]
fn form_problems_are_collected_together() {
    let errors = check_with(|j| {
        j["checked_at"] = json!("yesterday");
        j["sampling"] = json!({"lot_size": 10, "sample_size": 2});
        j["deviation"] = json!({"approver": "Mia", "reason": "fine"});
        j["lines"][1]
            .as_object_mut()
            .unwrap()
            .remove("quantity_checked");
    })
    .unwrap_err();
    assert_problem(&errors, "checked_at", "not an RFC 3339 timestamp");
    assert_problem(&errors, "sampling", "only for `\"method\": \"sampling\"`");
    assert_problem(&errors, "deviation", "not `pass`");
    assert_problem(&errors, "lines[1].quantity_checked", "is missing");
    assert_eq!(errors.problems.len(), 4, "{errors}");
}

#[test]
fn a_sampled_check_needs_its_plan() {
    let errors = check_with(|j| j["method"] = json!("sampling")).unwrap_err();
    assert_problem(&errors, "sampling", "is missing");
    let errors = check_with(|j| {
        j["method"] = json!("sampling");
        j["sampling"] = json!({"lot_size": 5, "sample_size": 0});
    })
    .unwrap_err();
    assert_problem(&errors, "sampling.sample_size", "at least 1");
    let errors = check_with(|j| {
        j["method"] = json!("sampling");
        j["sampling"] = json!({"lot_size": 5, "sample_size": 8});
    })
    .unwrap_err();
    assert_problem(&errors, "sampling.lot_size", "smaller than the sample of 8");
}

#[test]
fn a_source_other_than_csv_is_refused() {
    let errors = check_with(|j| j["source"] = json!("fax")).unwrap_err();
    assert_problem(&errors, "source", "only a check built from a CSV sheet");
}

// --- The check: every refusal of `validate` -------------------------------------------------

#[test]
fn a_line_checked_short_of_its_quantity_is_refused() {
    let errors = check_with(|j| {
        j["lines"][0]["quantity_checked"] = json!(1);
        j["lines"][0]["quantity_passed"] = json!(1);
        j["result"] = json!("pass_with_deviation");
        j["deviation"] = json!({"approver": "Mia", "reason": "only one found"});
    })
    .unwrap_err();
    assert_problem(
        &errors,
        "lines[0].quantity_checked",
        &format!("line `{L1}`: 1 of 2 checked"),
    );
}

#[test]
fn a_shipment_line_missing_from_the_check_is_refused() {
    let errors = check_with(|j| {
        j["lines"].as_array_mut().unwrap().remove(1);
    })
    .unwrap_err();
    assert_problem(&errors, "lines", &format!("line `{L2}`: 0 of 1 checked"));
}

#[test]
fn a_check_without_lines_is_refused() {
    let errors = check_with(|j| j["lines"] = json!([])).unwrap_err();
    assert_problem(&errors, "lines", "is empty");
    assert_problem(&errors, "lines", &format!("line `{L1}`: 0 of 2 checked"));
}

#[test]
fn a_line_not_in_the_shipment_is_refused() {
    let errors = check_with(|j| {
        j["lines"].as_array_mut().unwrap().push(
            json!({"line_id": L3, "found_sku": "CAP", "quantity_checked": 1, "quantity_passed": 1}),
        );
    })
    .unwrap_err();
    assert_problem(
        &errors,
        "lines[2].line_id",
        &format!("line `{L3}` is not in shipment `{SHIPMENT}`"),
    );
}

#[test]
fn a_line_taken_out_of_the_shipment_need_not_and_may_not_be_checked() {
    let mut view = shipment();
    view.lines[1].quantity = 0;
    let mut json = passing_json();
    json["lines"].as_array_mut().unwrap().remove(1);
    assert!(validate(read(&json).unwrap(), &view, now_ms()).is_ok());
    let errors = validate(read(&passing_json()).unwrap(), &view, now_ms()).unwrap_err();
    assert_problem(&errors, "lines[1].line_id", "is not in shipment");
}

#[test]
fn a_line_checked_twice_is_refused() {
    let errors = check_with(|j| {
        let second = j["lines"][1].clone();
        j["lines"].as_array_mut().unwrap().push(second);
    })
    .unwrap_err();
    assert_problem(&errors, "lines[2].line_id", "already checked in `lines[1]`");
}

#[test]
fn more_checked_than_the_line_holds_is_refused() {
    let errors = check_with(|j| j["lines"][1]["quantity_checked"] = json!(3)).unwrap_err();
    assert_problem(
        &errors,
        "lines[1].quantity_checked",
        "3 checked, but the shipment holds 1",
    );
}

#[test]
fn more_passed_than_checked_is_refused() {
    let errors = check_with(|j| {
        j["lines"][0]["quantity_checked"] = json!(2);
        j["lines"][0]["quantity_passed"] = json!(3);
    })
    .unwrap_err();
    assert_problem(
        &errors,
        "lines[0].quantity_passed",
        "3 passed, but only 2 checked",
    );
}

#[test]
fn negative_counts_are_refused() {
    let errors = check_with(|j| {
        j["result"] = json!("fail");
        j["disposition"] = json!("hold");
        j["lines"][0]["quantity_checked"] = json!(-1);
        j["lines"][1]["quantity_passed"] = json!(-2);
        j["lines"][0]["defects"][0]["count"] = json!(0);
    })
    .unwrap_err();
    assert_problem(&errors, "lines[0].quantity_checked", "must not be negative");
    assert_problem(&errors, "lines[1].quantity_passed", "must not be negative");
    assert_problem(&errors, "lines[0].defects[0].count", "at least 1");
}

#[test]
fn a_photo_without_a_sha256_is_refused() {
    let errors = check_with(|j| {
        j["photos"][0].as_object_mut().unwrap().remove("sha256");
    })
    .unwrap_err();
    assert_problem(&errors, "photos[0].sha256", "is missing");
}

#[test]
fn a_photo_whose_sha256_has_the_wrong_length_or_digits_is_refused() {
    let errors = check_with(|j| {
        j["photos"][0]["sha256"] = json!(&HASH[..63]);
        j["photos"][1]["sha256"] = json!(format!("{}g", &HASH[..63]));
    })
    .unwrap_err();
    assert_problem(&errors, "photos[0].sha256", "got 63 characters");
    assert_problem(&errors, "photos[1].sha256", "`g` is not one");
}

#[test]
fn a_photo_without_a_file_is_refused() {
    let errors = check_with(|j| j["photos"][0]["file"] = json!(" ")).unwrap_err();
    assert_problem(&errors, "photos[0].file", "is empty");
}

#[test]
fn a_defect_photo_must_be_one_of_the_checks_photos() {
    let errors =
        check_with(|j| j["lines"][0]["defects"][0]["photo"] = json!("other.jpg")).unwrap_err();
    assert_problem(
        &errors,
        "lines[0].defects[0].photo",
        "`other.jpg` is not the `file` of any of the check's `photos`",
    );
}

#[test]
fn a_deviation_without_approver_or_reason_is_refused() {
    let errors = check_with(|j| j["result"] = json!("pass_with_deviation")).unwrap_err();
    assert_problem(&errors, "deviation.approver", "is missing");
    assert_problem(&errors, "deviation.reason", "is missing");
    let errors = check_with(|j| {
        j["result"] = json!("pass_with_deviation");
        j["deviation"] = json!({"approver": " ", "reason": "lid is matte"});
    })
    .unwrap_err();
    assert_problem(&errors, "deviation.approver", "is missing");
    assert!(!errors.has_field("deviation.reason"), "{errors}");
}

#[test]
fn a_pass_with_fewer_passed_than_ordered_is_refused_but_a_deviation_is_not() {
    let short = |j: &mut Value| {
        j["lines"][0]["quantity_passed"] = json!(1);
    };
    let errors = check_with(short).unwrap_err();
    assert_problem(
        &errors,
        "lines[0].quantity_passed",
        &format!("line `{L1}`: 1 of 2 passed, so the result cannot be `pass`"),
    );
    let valid = check_with(|j| {
        short(j);
        j["result"] = json!("pass_with_deviation");
        j["deviation"] = json!({"approver": "Mia", "reason": "ship the good one now"});
    })
    .unwrap();
    assert_eq!(
        valid.passed_quantities(),
        vec![(L1.to_string(), 1), (L2.to_string(), 1)]
    );
}

#[test]
fn a_pass_with_a_critical_defect_is_refused() {
    let errors =
        check_with(|j| j["lines"][0]["defects"][0]["class"] = json!("critical")).unwrap_err();
    assert_problem(
        &errors,
        "lines[0].defects[0].class",
        "critical defect, so the result cannot be `pass`",
    );
    // A major defect on a unit that still passed is the inspector's call.
    assert!(check_with(|j| j["lines"][0]["defects"][0]["class"] = json!("major")).is_ok());
}

#[test]
fn a_pass_that_found_another_sku_is_refused_but_a_deviation_is_not() {
    let other = |j: &mut Value| j["lines"][0]["found_sku"] = json!("MUG-BLUE");
    let errors = check_with(other).unwrap_err();
    assert_problem(
        &errors,
        "lines[0].found_sku",
        "found `MUG-BLUE` but `MUG-RED` was ordered",
    );
    let valid = check_with(|j| {
        other(j);
        j["result"] = json!("pass_with_deviation");
        j["deviation"] = json!({"approver": "Mia", "reason": "blue approved by the customer"});
    })
    .unwrap();
    assert_eq!(
        valid.result(),
        &CheckResult::PassWithDeviation {
            approver: "Mia".to_string(),
            reason: "blue approved by the customer".to_string()
        }
    );
}

#[test]
fn a_pass_contradicted_by_accessories_listing_or_packaging_is_refused() {
    let errors = check_with(|j| {
        j["lines"][0]["accessories_expected"] = json!(["gift box", "cable", "cable"]);
        j["lines"][0]["accessories_found"] = json!(["gift box", "cable"]);
        j["lines"][1]["matches_listing"] = json!(false);
        j["packaging"] =
            json!({"seal_ok": false, "no_price_or_invoice_inside": false, "strength_ok": true});
    })
    .unwrap_err();
    assert_problem(&errors, "lines[0].accessories_found", "lacks cable");
    assert_problem(
        &errors,
        "lines[1].matches_listing",
        "does not match the listing",
    );
    assert_problem(&errors, "packaging.seal_ok", "is false");
    assert_problem(&errors, "packaging.no_price_or_invoice_inside", "is false");
    assert!(!errors.has_field("packaging.strength_ok"), "{errors}");
}

#[test]
fn packaging_measures_must_be_positive() {
    let errors = check_with(|j| {
        j["packaging"] = json!({"weight_grams": 0, "dimensions_cm": [20, -1, 10]});
    })
    .unwrap_err();
    assert_problem(&errors, "packaging.weight_grams", "must be positive");
    assert_problem(&errors, "packaging.dimensions_cm", "must all be positive");
}

#[test]
fn an_empty_inspector_name_is_refused() {
    let errors = check_with(|j| j["inspector"]["name"] = json!("  ")).unwrap_err();
    assert_problem(&errors, "inspector.name", "is empty");
}

#[test]
fn a_check_time_in_the_future_is_refused() {
    let errors = check_with(|j| j["checked_at"] = json!("2026-11-26T13:00:00Z")).unwrap_err();
    assert_problem(&errors, "checked_at", "is in the future");
}

#[test]
fn a_failed_check_may_not_ship() {
    let errors = check_with(|j| j["result"] = json!("fail")).unwrap_err();
    assert_problem(&errors, "disposition", "is `ship` but the check failed");
}

#[test]
fn a_failed_check_need_not_cover_everything_and_lets_nothing_pass() {
    // The inspector found a cracked mug and stopped: the failure is recorded, not refused.
    let valid = check_with(|j| {
        j["result"] = json!("fail");
        j["disposition"] = json!("replace");
        j["lines"] = json!([{
            "line_id": L1, "found_sku": "MUG-RED", "quantity_checked": 1, "quantity_passed": 0,
            "defects": [{"class": "critical", "note": "cracked handle"}]
        }]);
    })
    .unwrap();
    assert!(valid.failed());
    assert_eq!(valid.passed_quantities(), Vec::<(String, i64)>::new());
    assert_eq!(valid.passed_quantity(L1), 0);
    // Even a failed check names only lines of the shipment.
    let errors = check_with(|j| {
        j["result"] = json!("fail");
        j["disposition"] = json!("hold");
        j["lines"][1]["line_id"] = json!(L3);
    })
    .unwrap_err();
    assert_problem(&errors, "lines[1].line_id", "is not in shipment");
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let errors = check_with(|j| {
        j["inspector"]["name"] = json!("");
        j["checked_at"] = json!("2027-01-01T00:00:00Z");
        j["lines"][0]["quantity_passed"] = json!(3);
        j["lines"][1]["line_id"] = json!(L3);
        j["photos"][0]["sha256"] = json!("abc");
    })
    .unwrap_err();
    for field in [
        "inspector.name",
        "checked_at",
        "lines[0].quantity_passed",
        "lines[1].line_id",
        "lines",
        "photos[0].sha256",
    ] {
        assert!(errors.has_field(field), "`{field}` missing from: {errors}");
    }
    // The text lists them all, each naming its field.
    let text = errors.to_string();
    assert!(text.contains("`inspector.name`: is empty"), "{text}");
    assert!(text.contains("; `checked_at`: "), "{text}");
}

// --- The check: the CSV shape ---------------------------------------------------------------

fn csv_view(id: &str) -> Option<crate::suppliers::ShipmentView> {
    (id == SHIPMENT).then(|| crate::suppliers::ShipmentView {
        shipment_id: SHIPMENT.to_string(),
        supplier: "acme".to_string(),
        shop: "example.myshopify.com".to_string(),
        order_name: "#1001".to_string(),
        open: true,
        lines: shipment()
            .lines
            .into_iter()
            .map(|l| crate::suppliers::MessageLine {
                line_id: l.line_id,
                sku: l.sku,
                variant_title: l.variant_title,
                quantity: l.quantity,
            })
            .collect(),
    })
}

/// The check event `shipgate supplier import` makes of these `check` rows.
fn csv_check_event(rows: &[String]) -> SupplierEvent {
    let mut sheet = String::from(
        "shipment_id,event,line_id,sku,variant,quantity,date,parcel_id,carrier,tracking_number,tracking_url,weight_grams,note\n",
    );
    for row in rows {
        sheet.push_str(row);
        sheet.push('\n');
    }
    let mut events = crate::suppliers::csv::import(
        "acme",
        "sheet.csv",
        sheet.as_bytes(),
        reported_at(),
        &csv_view,
    )
    .expect("the sheet imports");
    assert_eq!(events.len(), 1);
    events.remove(0)
}

#[test]
fn a_csv_check_is_converted_and_validated() {
    let event = csv_check_event(&[
        format!("{SHIPMENT},check,{L1},MUG-RED,Red / 350 ml,2,,,,,,,pass"),
        format!("{SHIPMENT},check,{L2},TEE-M,M,1,,,,,,,pass"),
    ]);
    let record = CheckRecord::from_event(&event, "acme").unwrap();
    assert_eq!(record.inspector.name, "acme");
    assert_eq!(record.inspector.organisation.as_deref(), Some("acme"));
    assert_eq!(record.checked_at, reported_at());
    assert_eq!(record.method, CheckMethod::EveryUnit);
    assert_eq!(record.disposition, Disposition::Ship);
    assert_eq!(record.lines[0].found_sku.as_deref(), Some("MUG-RED"));
    assert_eq!(record.lines[0].quantity_checked, None);
    let valid = validate(record, &shipment(), now_ms()).unwrap();
    // A CSV row speaks for its whole line.
    assert_eq!(valid.record().lines[0].quantity_checked, Some(2));
    assert_eq!(
        valid.passed_quantities(),
        vec![(L1.to_string(), 2), (L2.to_string(), 1)]
    );
}

#[test]
fn a_csv_deviation_is_approved_by_the_supplier_with_the_rows_notes() {
    let event = csv_check_event(&[
        format!("{SHIPMENT},check,{L1},MUG-RED,,2,,,,,,,pass"),
        format!(
            "{SHIPMENT},check,{L2},TEE-M,,1,,,,,,,pass_with_deviation: print is lighter; approved by Mia"
        ),
    ]);
    let valid = validate(
        CheckRecord::from_event(&event, "acme").unwrap(),
        &shipment(),
        now_ms(),
    )
    .unwrap();
    assert_eq!(
        valid.result(),
        &CheckResult::PassWithDeviation {
            approver: "acme".to_string(),
            reason: format!("line `{L2}`: print is lighter; approved by Mia"),
        }
    );
    assert_eq!(
        valid.record().lines[1].note.as_deref(),
        Some("pass_with_deviation: print is lighter; approved by Mia (sheet row 3)")
    );
}

#[test]
fn a_failed_csv_check_is_held_and_lets_nothing_pass() {
    let event = csv_check_event(&[format!(
        "{SHIPMENT},check,{L1},MUG-RED,,1,,,,,,,fail: one handle cracked"
    )]);
    let record = CheckRecord::from_event(&event, "acme").unwrap();
    assert_eq!(record.disposition, Disposition::Hold);
    let valid = validate(record, &shipment(), now_ms()).unwrap();
    assert!(valid.failed());
    assert!(valid.passed_quantities().is_empty());
}

#[test]
fn a_csv_pass_that_is_short_or_another_sku_is_refused() {
    let event = csv_check_event(&[
        format!("{SHIPMENT},check,{L1},MUG-BLUE,,1,,,,,,,pass"),
        format!("{SHIPMENT},check,{L2},TEE-M,,1,,,,,,,pass"),
    ]);
    let errors = validate(
        CheckRecord::from_event(&event, "acme").unwrap(),
        &shipment(),
        now_ms(),
    )
    .unwrap_err();
    assert_problem(&errors, "lines[0].quantity_passed", "1 of 2 passed");
    assert_problem(&errors, "lines[0].found_sku", "found `MUG-BLUE`");
}

#[test]
fn the_csv_shape_is_read_strictly() {
    let csv = json!({"source": "csv", "result": "pass", "lines": [
        {"line_id": L1, "sku_found": null, "variant_found": null, "quantity_passed": 2,
         "result": "pass", "note": null, "row": 2, "extra": 1}
    ]});
    let errors = read(&csv).unwrap_err();
    assert_problem(&errors, "check", "unknown field `extra`");
}

// --- SHA-256 --------------------------------------------------------------------------------

#[test]
fn sha256_is_64_hex_digits_in_either_case() {
    assert_eq!(parse_sha256(HASH), Ok(HASH.to_string()));
    assert_eq!(
        parse_sha256(HASH_UPPER),
        Ok(HASH_UPPER.to_ascii_lowercase())
    );
    assert!(parse_sha256(&HASH[..63]).unwrap_err().contains("got 63"));
    assert!(
        parse_sha256(&format!("{HASH}0"))
            .unwrap_err()
            .contains("got 65")
    );
    assert!(parse_sha256("").is_err());
    assert!(
        parse_sha256(&format!("{}z", &HASH[..63]))
            .unwrap_err()
            .contains("`z`")
    );
    // A multi-byte character is refused without slicing through it.
    assert!(parse_sha256(&format!("{}é", &HASH[..62])).is_err());
    assert_eq!(sha256_hex(b"test"), HASH);
}

// --- Packing --------------------------------------------------------------------------------

fn event(body: Value) -> SupplierEvent {
    SupplierEvent::from_json(body.to_string().as_bytes()).unwrap()
}

fn packed_event(parcels: Value) -> SupplierEvent {
    event(json!({
        "id": "evt_p", "type": "packed", "shipment_id": SHIPMENT,
        "occurred_at": "2026-11-26T11:00:00Z", "parcels": parcels
    }))
}

fn two_parcels() -> PackingRecord {
    PackingRecord::from_event(&packed_event(json!([
        {"parcel_id": "P1", "lines": [{"line_id": L1, "quantity": 2}], "weight_grams": 640,
         "dimensions_cm": [20, 15, 10], "photos": ["https://cdn.example/p1.jpg"]},
        {"parcel_id": "P2", "lines": [{"line_id": L2, "quantity": 1}], "weight_grams": 200}
    ])))
    .unwrap()
}

fn valid_packing() -> ValidPacking {
    validate_packing(two_parcels(), &shipment(), &valid_check()).unwrap()
}

#[test]
fn a_packed_event_becomes_a_valid_packing() {
    let record = two_parcels();
    assert_eq!(
        record.packed_at,
        Timestamp::parse("2026-11-26T11:00:00Z").unwrap()
    );
    assert_eq!(
        record.parcels[0].photos,
        vec![Photo {
            kind: PhotoKind::Other,
            file: "https://cdn.example/p1.jpg".to_string(),
            sha256: None
        }]
    );
    let valid = validate_packing(record, &shipment(), &valid_check()).unwrap();
    assert_eq!(valid.shipment_id(), SHIPMENT);
    assert_eq!(valid.parcel_ids(), vec!["P1", "P2"]);
    assert_eq!(valid.parcel("P2").unwrap().weight_grams, Some(200));
    assert_eq!(
        valid.packed_quantities(),
        vec![(L1.to_string(), 2), (L2.to_string(), 1)]
    );
}

#[test]
fn a_line_split_over_parcels_is_summed() {
    let record = PackingRecord::from_event(&packed_event(json!([
        {"parcel_id": "P1", "lines": [{"line_id": L1, "quantity": 1}]},
        {"parcel_id": "P2", "lines": [{"line_id": L1, "quantity": 1}, {"line_id": L2, "quantity": 1}]}
    ])))
    .unwrap();
    let valid = validate_packing(record, &shipment(), &valid_check()).unwrap();
    assert_eq!(
        valid.packed_quantities(),
        vec![(L1.to_string(), 2), (L2.to_string(), 1)]
    );
}

#[test]
fn a_partial_packing_is_valid() {
    let record = PackingRecord::from_event(&packed_event(json!([
        {"parcel_id": "P1", "lines": [{"line_id": L1, "quantity": 1}]}
    ])))
    .unwrap();
    assert!(validate_packing(record, &shipment(), &valid_check()).is_ok());
}

#[test]
fn packing_more_than_passed_is_refused() {
    let deviation = check_with(|j| {
        j["lines"][0]["quantity_passed"] = json!(1);
        j["lines"][1]["quantity_passed"] = json!(0);
        j["result"] = json!("pass_with_deviation");
        j["deviation"] = json!({"approver": "Mia", "reason": "ship what passed"});
    })
    .unwrap();
    let errors = validate_packing(two_parcels(), &shipment(), &deviation).unwrap_err();
    assert_problem(
        &errors,
        "parcels[0].lines[0].quantity",
        &format!("line `{L1}`: 2 packed, but only 1 passed the check"),
    );
    assert_problem(
        &errors,
        "parcels[1].lines[0].quantity",
        &format!("line `{L2}`: 1 packed, but none of it passed the check"),
    );
}

#[test]
fn nothing_may_be_packed_after_a_failed_check() {
    let failed = check_with(|j| {
        j["result"] = json!("fail");
        j["disposition"] = json!("rework");
    })
    .unwrap();
    let errors = validate_packing(two_parcels(), &shipment(), &failed).unwrap_err();
    assert_problem(
        &errors,
        "parcels[0].lines[0].quantity",
        "but the check failed, so none of it may be packed",
    );
}

#[test]
fn packing_beyond_the_lines_current_quantity_is_refused() {
    // The order was edited after the check: one mug is left in the shipment.
    let mut view = shipment();
    view.lines[0].quantity = 1;
    let errors = validate_packing(two_parcels(), &view, &valid_check()).unwrap_err();
    assert_problem(
        &errors,
        "parcels[0].lines[0].quantity",
        "2 packed, but the shipment holds 1",
    );
}

#[test]
fn a_packing_checked_against_another_shipments_check_is_refused() {
    let mut other = shipment();
    other.shipment_id = "SG-0000000099".to_string();
    let errors = validate_packing(two_parcels(), &other, &valid_check()).unwrap_err();
    assert_problem(
        &errors,
        "check",
        &format!("the check is of shipment `{SHIPMENT}`, not `SG-0000000099`"),
    );
}

#[test]
fn malformed_parcels_are_refused_with_every_problem() {
    let record = PackingRecord {
        packed_at: reported_at(),
        parcels: vec![
            PackedParcelRecord {
                parcel_id: "P1".to_string(),
                lines: vec![],
                weight_grams: Some(0),
                dimensions_cm: Some([20, 0, 10]),
                photos: vec![Photo {
                    kind: PhotoKind::PackedSealed,
                    file: "sealed.jpg".to_string(),
                    sha256: Some("xyz".to_string()),
                }],
            },
            PackedParcelRecord {
                parcel_id: "P1".to_string(),
                lines: vec![
                    crate::suppliers::ParcelLine {
                        line_id: L3.to_string(),
                        quantity: 1,
                    },
                    crate::suppliers::ParcelLine {
                        line_id: L2.to_string(),
                        quantity: 0,
                    },
                    crate::suppliers::ParcelLine {
                        line_id: L2.to_string(),
                        quantity: 1,
                    },
                ],
                weight_grams: Some(-5),
                dimensions_cm: None,
                photos: vec![],
            },
        ],
    };
    let errors = validate_packing(record, &shipment(), &valid_check()).unwrap_err();
    assert_problem(
        &errors,
        "parcels[0].lines",
        "a parcel holds at least one line",
    );
    assert_problem(&errors, "parcels[0].weight_grams", "must be positive");
    assert_problem(&errors, "parcels[0].dimensions_cm", "must all be positive");
    assert_problem(
        &errors,
        "parcels[0].photos[0].sha256",
        "64 hexadecimal digits",
    );
    assert_problem(&errors, "parcels[1].parcel_id", "`P1` is listed twice");
    assert_problem(
        &errors,
        "parcels[1].lines[0].line_id",
        &format!("line `{L3}` is not in shipment"),
    );
    assert_problem(&errors, "parcels[1].lines[1].quantity", "at least 1");
    assert_problem(
        &errors,
        "parcels[1].lines[2].line_id",
        "is twice in parcel `P1`",
    );
    assert_problem(&errors, "parcels[1].weight_grams", "must be positive");
    let empty = PackingRecord {
        packed_at: reported_at(),
        parcels: vec![],
    };
    let errors = validate_packing(empty, &shipment(), &valid_check()).unwrap_err();
    assert_problem(&errors, "parcels", "at least one parcel");
}

#[test]
fn a_packing_photo_with_a_hash_is_checked_and_normalised() {
    let mut record = two_parcels();
    record.parcels[0].photos[0].sha256 = Some(HASH_UPPER.to_string());
    let valid = validate_packing(record, &shipment(), &valid_check()).unwrap();
    assert_eq!(
        valid.parcel("P1").unwrap().photos[0].sha256.as_deref(),
        Some(HASH_UPPER.to_ascii_lowercase().as_str())
    );
}

#[test]
fn an_event_of_another_kind_is_not_a_packing_or_a_label() {
    let received = event(json!({
        "id": "evt_r", "type": "received", "shipment_id": SHIPMENT,
        "occurred_at": "2026-11-26T10:00:00Z"
    }));
    assert_problem(
        &PackingRecord::from_event(&received).unwrap_err(),
        "type",
        "not `packed`",
    );
    assert_problem(
        &LabelRecord::from_event(&received).unwrap_err(),
        "type",
        "not `label_created`",
    );
}

// --- Labels ---------------------------------------------------------------------------------

fn label_event(fields: Value) -> SupplierEvent {
    let mut body = json!({
        "id": "evt_l", "type": "label_created", "shipment_id": SHIPMENT,
        "occurred_at": "2026-11-26T11:30:00Z", "carrier": "UPS",
        "tracking_number": "1Z999AA10123456784"
    });
    for (k, v) in fields.as_object().unwrap() {
        body[k] = v.clone();
    }
    event(body)
}

fn label(fields: Value) -> LabelRecord {
    LabelRecord::from_event(&label_event(fields)).unwrap()
}

#[test]
fn a_label_created_event_becomes_a_valid_label() {
    let record = label(
        json!({"parcel_id": "P2", "tracking_url": "https://ups.example/track?n=1Z999AA10123456784"}),
    );
    assert_eq!(
        record.created_at,
        Timestamp::parse("2026-11-26T11:30:00Z").unwrap()
    );
    let valid = validate_label(record, &valid_packing()).unwrap();
    assert_eq!(valid.parcel_id(), "P2");
    assert_eq!(valid.shipment_id(), SHIPMENT);
    assert_eq!(valid.record().carrier, "UPS");
}

#[test]
fn a_label_without_a_parcel_is_for_the_only_parcel() {
    let one = PackingRecord::from_event(&packed_event(json!([
        {"parcel_id": "P1", "lines": [{"line_id": L1, "quantity": 2}, {"line_id": L2, "quantity": 1}]}
    ])))
    .unwrap();
    let packing = validate_packing(one, &shipment(), &valid_check()).unwrap();
    let valid = validate_label(label(json!({})), &packing).unwrap();
    assert_eq!(valid.parcel_id(), "P1");
    let errors = validate_label(label(json!({})), &valid_packing()).unwrap_err();
    assert_problem(&errors, "parcel_id", "is missing and shipment");
    assert_problem(&errors, "parcel_id", "2 parcels (P1, P2): name one");
}

#[test]
fn a_label_for_a_parcel_not_packed_is_refused() {
    let errors = validate_label(label(json!({"parcel_id": "P9"})), &valid_packing()).unwrap_err();
    assert_problem(
        &errors,
        "parcel_id",
        &format!("parcel `P9` is not packed in shipment `{SHIPMENT}` (packed: P1, P2)"),
    );
}

#[test]
fn implausible_tracking_numbers_are_refused() {
    let cases = [
        ("1Z999 AA1", "contains a space"),
        ("1Z99", "4 characters long; a tracking number has 6 to 40"),
        (
            "A1234567890123456789012345678901234567890",
            "41 characters long",
        ),
        ("1Z999/AA10", "contains `/`"),
        ("", "is empty"),
    ];
    for (number, expected) in cases {
        let mut record = label(json!({"parcel_id": "P1"}));
        record.tracking_number = number.to_string();
        let errors = validate_label(record, &valid_packing()).unwrap_err();
        assert_problem(&errors, "tracking_number", expected);
    }
    for number in ["LX123456789CN", "123456", "JD-0145-8899-12"] {
        let mut record = label(json!({"parcel_id": "P1"}));
        record.tracking_number = number.to_string();
        assert!(validate_label(record, &valid_packing()).is_ok(), "{number}");
    }
}

#[test]
fn a_tracking_url_must_be_http_or_https_with_a_host() {
    for (url, expected) in [
        ("ftp://ups.example/1Z", "is not an http(s) URL"),
        ("ups.example/1Z", "is not an http(s) URL"),
        ("javascript:alert(1)", "is not an http(s) URL"),
        ("https:///track", "has no host"),
        ("https://ups.example/track me", "contains a space"),
    ] {
        let errors = validate_label(
            label(json!({"parcel_id": "P1", "tracking_url": url})),
            &valid_packing(),
        )
        .unwrap_err();
        assert_problem(&errors, "tracking_url", expected);
    }
    for url in ["http://ups.example/1Z", "HTTPS://ups.example"] {
        assert!(
            validate_label(
                label(json!({"parcel_id": "P1", "tracking_url": url})),
                &valid_packing()
            )
            .is_ok(),
            "{url}"
        );
    }
}

#[test]
fn a_label_with_every_problem_names_each_field() {
    let mut record = label(json!({"parcel_id": "P7", "tracking_url": "mailto:x@y"}));
    record.carrier = " ".to_string();
    record.tracking_number = "12 34".to_string();
    let errors = validate_label(record, &valid_packing()).unwrap_err();
    for field in ["parcel_id", "carrier", "tracking_number", "tracking_url"] {
        assert!(errors.has_field(field), "`{field}` missing from: {errors}");
    }
}

// --- Round trips ----------------------------------------------------------------------------

fn postcard_round_trip<T>(value: &T) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let bytes = postcard::to_allocvec(value).expect("postcard encodes");
    postcard::from_bytes(&bytes).expect("postcard decodes")
}

#[test]
fn a_check_round_trips_through_its_json_form() {
    for text in [documented_example(), passing_json().to_string()] {
        let record = CheckRecord::from_json(&text, "acme", &reported_at()).unwrap();
        let again = CheckRecord::from_json(&record.to_json(), "acme", &reported_at()).unwrap();
        assert_eq!(record, again);
        // The JSON form itself survives serde both ways.
        let json = record.to_check_json();
        let reparsed: CheckJson =
            serde_json::from_str(&serde_json::to_string(&json).unwrap()).unwrap();
        assert_eq!(json, reparsed);
    }
    // A deviation and a sampling plan too.
    let valid = check_with(|j| {
        j["method"] = json!("sampling");
        j["sampling"] = json!({"lot_size": 500, "sample_size": 50});
        j["result"] = json!("pass_with_deviation");
        j["deviation"] = json!({"approver": "Mia", "reason": "lid is matte"});
        j["packaging"] = json!({"seal_ok": true, "weight_grams": 640});
    })
    .unwrap();
    let again = CheckRecord::from_json(&valid.to_json(), "acme", &reported_at()).unwrap();
    assert_eq!(validate(again, &shipment(), now_ms()).unwrap(), valid);
}

#[test]
fn a_validated_csv_check_round_trips_through_json() {
    let event = csv_check_event(&[
        format!("{SHIPMENT},check,{L1},MUG-RED,,2,,,,,,,pass"),
        format!("{SHIPMENT},check,{L2},TEE-M,,1,,,,,,,pass"),
    ]);
    let valid = validate(
        CheckRecord::from_event(&event, "acme").unwrap(),
        &shipment(),
        now_ms(),
    )
    .unwrap();
    // Validation made every count known, so the JSON form is complete.
    let again = CheckRecord::from_json(&valid.to_json(), "acme", &reported_at()).unwrap();
    assert_eq!(validate(again, &shipment(), now_ms()).unwrap(), valid);
}

#[test]
fn records_round_trip_through_postcard() {
    let check = read(&passing_json()).unwrap();
    assert_eq!(postcard_round_trip(&check), check);
    let valid = valid_check();
    assert_eq!(postcard_round_trip(&valid), valid);
    let deviation = check_with(|j| {
        j["method"] = json!("sampling");
        j["sampling"] = json!({"lot_size": 500, "sample_size": 50});
        j["result"] = json!("pass_with_deviation");
        j["deviation"] = json!({"approver": "Mia", "reason": "lid is matte"});
        j["packaging"] = json!({"seal_ok": true, "dimensions_cm": [1, 2, 3]});
        j["lines"][0]["found_options"] = json!({"plug": "UK", "colour": "red"});
    })
    .unwrap();
    assert_eq!(postcard_round_trip(&deviation), deviation);
    let record = two_parcels();
    assert_eq!(postcard_round_trip(&record), record);
    let packing = valid_packing();
    assert_eq!(postcard_round_trip(&packing), packing);
    let label_record = label(json!({"parcel_id": "P1", "tracking_url": "https://ups.example/1Z"}));
    assert_eq!(postcard_round_trip(&label_record), label_record);
    let valid_label = validate_label(label_record, &packing).unwrap();
    assert_eq!(postcard_round_trip(&valid_label), valid_label);
    let view = shipment();
    assert_eq!(postcard_round_trip(&view), view);
}

// --- The shipment view ----------------------------------------------------------------------

#[test]
fn the_view_of_a_stored_shipment_has_its_current_lines() {
    use crate::workflow::model::{Actor, Evidence, EvidenceKind, Shipment, ShipmentLine, Source};
    let line = |id: &str, sku: &str, quantity: i64| ShipmentLine {
        fulfillment_order_line_id: format!("{id}/fo"),
        line_item_id: id.to_string(),
        sku: sku.to_string(),
        variant_title: None,
        quantity,
    };
    let changed = |id: &str, quantity: i64| Evidence {
        id: format!("change-{id}"),
        at_ms: 1,
        recorded_ms: 1,
        actor: Actor::System,
        source: Source::Workflow,
        kind: EvidenceKind::LineChanged {
            line_item_id: id.to_string(),
            quantity,
            reason: "edited".to_string(),
        },
    };
    let stored = Shipment {
        id: SHIPMENT.to_string(),
        supplier: "acme".to_string(),
        fulfillment_order_id: "gid://shopify/FulfillmentOrder/1".to_string(),
        lines: vec![
            line(L1, "MUG-RED", 2),
            line(L2, "TEE-M", 1),
            line(L3, "CAP", 4),
        ],
        created_ms: 0,
        evidence: vec![changed(L2, 0), changed(L3, 3)],
    };
    let view = ShipmentLinesView::from_shipment(&stored);
    assert_eq!(view.shipment_id, SHIPMENT);
    assert_eq!(
        view.lines
            .iter()
            .map(|l| (l.line_id.as_str(), l.sku.as_str(), l.quantity))
            .collect::<Vec<_>>(),
        vec![(L1, "MUG-RED", 2), (L3, "CAP", 3)]
    );
}
