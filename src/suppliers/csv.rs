//! The `csv` adapter, for an agent who works in spreadsheets (docs/suppliers.md section 4).
//!
//! Nothing is sent over a network: the store owner runs `shipgate supplier export`, which turns
//! the shipments waiting for the agent into a sheet ([`export`]), and later
//! `shipgate supplier import` with the sheet the agent sends back ([`import`]). An import is all
//! or nothing: every row is checked against the shipments first, and one bad row refuses the
//! whole file with every problem listed by spreadsheet row number, so that the agent can fix the
//! sheet and send it again without anyone working out which half of it was recorded.
//!
//! Cells are written and read with the `csv` crate rather than by hand, because shipping
//! addresses and notes contain commas, quotes and line breaks, and spreadsheets quote them in
//! ways a `split(',')` would get wrong.

use std::collections::HashMap;
use std::fmt;

use sha2::{Digest, Sha256};

use super::{
    BoxFuture, Day, EventKind, LookupOutcome, MessageLine, PackedParcel, ParcelLine, SendOutcome,
    ShipmentView, SupplierAdapter, SupplierEvent, SupplierMessage,
};
use crate::order::{Address, Timestamp};

/// The largest sheet [`import`] reads. A sheet of a few thousand rows is well under a megabyte,
/// so anything larger is almost certainly the wrong file, and the limit bounds the memory an
/// import can take.
pub const MAX_SHEET_BYTES: usize = 5 * 1024 * 1024;

/// The columns of an exported sheet, in order: those of docs/suppliers.md section 4, then
/// `action` (`ship` or `cancel`).
pub const EXPORT_HEADER: [&str; 15] = [
    "shipment_id",
    "order_name",
    "line_id",
    "sku",
    "variant_title",
    "quantity",
    "ship_to_name",
    "ship_to_address1",
    "ship_to_address2",
    "ship_to_city",
    "ship_to_province",
    "ship_to_zip",
    "ship_to_country",
    "ship_to_phone",
    "action",
];

/// The `csv` channel to one supplier.
///
/// A spreadsheet cannot be reached, so [`SupplierAdapter::send`] only acknowledges the message:
/// the shipment and its pending submission or cancellation stay in shipgate's store, and the next
/// `shipgate supplier export` puts them in the sheet the owner gives the agent. Answering
/// `Accepted` rather than `Retry` is what keeps the outbox from retrying forever a message that
/// no retry could ever deliver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CsvAdapter;

impl SupplierAdapter for CsvAdapter {
    fn kind(&self) -> &'static str {
        "csv"
    }

    /// Records nothing and answers `Accepted` with no supplier reference: the message waits in
    /// shipgate's store for the next export (see the type's documentation).
    fn send<'a>(&'a self, _message: &'a SupplierMessage) -> BoxFuture<'a, SendOutcome> {
        Box::pin(async { SendOutcome::Accepted { supplier_ref: None } })
    }

    /// Answers `Received`, since [`CsvAdapter::send`] never fails in a way that leaves the
    /// outcome unknown; a lookup only happens if a caller asks anyway.
    fn lookup<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, LookupOutcome> {
        Box::pin(async { LookupOutcome::Received { supplier_ref: None } })
    }
}

/// One shipment waiting for the agent, as the export shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSubmission {
    pub shipment_id: String,
    pub order_name: String,
    /// The full list of lines to ship; a line removed by an amendment has quantity 0.
    pub lines: Vec<MessageLine>,
    pub ship_to: Option<Address>,
    /// The shipment is to be stopped: its rows say `cancel` instead of `ship`.
    pub cancelled: bool,
}

/// Writes the sheet of shipments waiting for the agent: the header [`EXPORT_HEADER`], then one
/// row per line of each shipment.
///
/// The final `action` column says `ship` or `cancel`. A cancelled shipment keeps its lines, so
/// the agent can find what to stop, but not its address: the agent no longer needs it to ship,
/// and customer data is shared only when it is needed. A shipment with no lines still gets one
/// row, with the line columns empty, so that it cannot silently drop out of the sheet.
pub fn export(pending: &[PendingSubmission]) -> String {
    // Writing into a `Vec` cannot fail, and every cell is a Rust string, so the expectations
    // below hold for any input.
    let mut writer = ::csv::Writer::from_writer(Vec::new());
    writer
        .write_record(EXPORT_HEADER)
        .expect("writing to memory");
    for submission in pending {
        let action = if submission.cancelled {
            "cancel"
        } else {
            "ship"
        };
        let empty = Address::default();
        let address = match (&submission.ship_to, submission.cancelled) {
            (Some(address), false) => address,
            _ => &empty,
        };
        let text = |value: &Option<String>| value.clone().unwrap_or_default();
        let address_cells = [
            text(&address.name),
            text(&address.address1),
            text(&address.address2),
            text(&address.city),
            text(&address.province_code),
            text(&address.zip),
            text(&address.country_code),
            text(&address.phone),
        ];
        let line_cells: Vec<[String; 4]> = if submission.lines.is_empty() {
            vec![Default::default()]
        } else {
            submission
                .lines
                .iter()
                .map(|line| {
                    [
                        line.line_id.clone(),
                        line.sku.clone(),
                        text(&line.variant_title),
                        line.quantity.to_string(),
                    ]
                })
                .collect()
        };
        for line in line_cells {
            let mut record = Vec::with_capacity(EXPORT_HEADER.len());
            record.push(submission.shipment_id.clone());
            record.push(submission.order_name.clone());
            record.extend(line);
            record.extend(address_cells.iter().cloned());
            record.push(action.to_string());
            writer.write_record(&record).expect("writing to memory");
        }
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| e.into_error())
        .expect("flushing to memory");
    String::from_utf8(bytes).expect("every cell is UTF-8")
}

/// One thing wrong with an imported sheet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportProblem {
    /// The spreadsheet row (the header is row 1), or `None` for a problem with the whole file.
    pub row: Option<usize>,
    pub message: String,
}

impl fmt::Display for ImportProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.row {
            Some(row) => write!(f, "row {row}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Why a sheet was refused: every problem found, in row order. Nothing of the sheet was
/// imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportErrors {
    /// The file's name as the owner gave it, for the heading of a report.
    pub file_name: String,
    pub problems: Vec<ImportProblem>,
}

impl ImportErrors {
    /// The row numbers with problems, each once, in order.
    pub fn rows(&self) -> Vec<usize> {
        let mut rows: Vec<usize> = self.problems.iter().filter_map(|p| p.row).collect();
        rows.dedup();
        rows
    }

    fn file(file_name: &str, message: String) -> ImportErrors {
        ImportErrors {
            file_name: file_name.to_string(),
            problems: vec![ImportProblem { row: None, message }],
        }
    }
}

/// One problem per line, as `row N: what is wrong`.
impl fmt::Display for ImportErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ImportErrors {}

/// The columns an imported sheet may have (docs/suppliers.md section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    ShipmentId,
    Event,
    LineId,
    Sku,
    Variant,
    Quantity,
    Date,
    ParcelId,
    Carrier,
    TrackingNumber,
    TrackingUrl,
    WeightGrams,
    Note,
}

impl Col {
    const ALL: [Col; 13] = [
        Col::ShipmentId,
        Col::Event,
        Col::LineId,
        Col::Sku,
        Col::Variant,
        Col::Quantity,
        Col::Date,
        Col::ParcelId,
        Col::Carrier,
        Col::TrackingNumber,
        Col::TrackingUrl,
        Col::WeightGrams,
        Col::Note,
    ];

    fn name(self) -> &'static str {
        match self {
            Col::ShipmentId => "shipment_id",
            Col::Event => "event",
            Col::LineId => "line_id",
            Col::Sku => "sku",
            Col::Variant => "variant",
            Col::Quantity => "quantity",
            Col::Date => "date",
            Col::ParcelId => "parcel_id",
            Col::Carrier => "carrier",
            Col::TrackingNumber => "tracking_number",
            Col::TrackingUrl => "tracking_url",
            Col::WeightGrams => "weight_grams",
            Col::Note => "note",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

fn column_list() -> String {
    Col::ALL.map(Col::name).join(", ")
}

/// The events a sheet row may report, by the names the sheet uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SheetEvent {
    Received,
    Rejected,
    Confirmed,
    Short,
    Substitute,
    Check,
    Packed,
    Label,
    HandedOver,
    Cancelled,
    AddressIssue,
}

impl SheetEvent {
    const ALL: [SheetEvent; 11] = [
        SheetEvent::Received,
        SheetEvent::Rejected,
        SheetEvent::Confirmed,
        SheetEvent::Short,
        SheetEvent::Substitute,
        SheetEvent::Check,
        SheetEvent::Packed,
        SheetEvent::Label,
        SheetEvent::HandedOver,
        SheetEvent::Cancelled,
        SheetEvent::AddressIssue,
    ];

    fn name(self) -> &'static str {
        match self {
            SheetEvent::Received => "received",
            SheetEvent::Rejected => "rejected",
            SheetEvent::Confirmed => "confirmed",
            SheetEvent::Short => "short",
            SheetEvent::Substitute => "substitute",
            SheetEvent::Check => "check",
            SheetEvent::Packed => "packed",
            SheetEvent::Label => "label",
            SheetEvent::HandedOver => "handed_over",
            SheetEvent::Cancelled => "cancelled",
            SheetEvent::AddressIssue => "address_issue",
        }
    }

    /// Reads an `event` cell. Case, surrounding spaces, and spaces or hyphens for underscores
    /// are forgiven because people type these cells by hand; the event names of section 3
    /// (`line_confirmed`, …) are accepted too, since an agent who also uses the webhook will
    /// reach for them.
    fn parse(cell: &str) -> Option<SheetEvent> {
        let name = cell.trim().to_lowercase().replace([' ', '-'], "_");
        let alias = match name.as_str() {
            "line_confirmed" => Some(SheetEvent::Confirmed),
            "line_short" => Some(SheetEvent::Short),
            "substitute_offered" => Some(SheetEvent::Substitute),
            "label_created" => Some(SheetEvent::Label),
            "check_reported" => Some(SheetEvent::Check),
            _ => None,
        };
        alias.or_else(|| SheetEvent::ALL.into_iter().find(|e| e.name() == name))
    }

    /// The columns a row of this event may fill besides `shipment_id` and `event`. A value in
    /// any other column is refused rather than dropped, since it is most likely a fact the agent
    /// put in the wrong row or column.
    fn columns(self) -> &'static [Col] {
        match self {
            SheetEvent::Received
            | SheetEvent::Rejected
            | SheetEvent::Cancelled
            | SheetEvent::AddressIssue => &[Col::Note],
            SheetEvent::Confirmed => &[
                Col::LineId,
                Col::Sku,
                Col::Variant,
                Col::Quantity,
                Col::Date,
            ],
            SheetEvent::Short => &[Col::LineId, Col::Quantity, Col::Date, Col::Note],
            SheetEvent::Substitute => &[Col::LineId, Col::Sku, Col::Variant, Col::Note],
            SheetEvent::Check => &[
                Col::LineId,
                Col::Sku,
                Col::Variant,
                Col::Quantity,
                Col::Note,
            ],
            SheetEvent::Packed => &[Col::ParcelId, Col::LineId, Col::Quantity, Col::WeightGrams],
            SheetEvent::Label => &[
                Col::ParcelId,
                Col::Carrier,
                Col::TrackingNumber,
                Col::TrackingUrl,
            ],
            SheetEvent::HandedOver => &[Col::ParcelId, Col::Carrier, Col::TrackingNumber],
        }
    }
}

/// Where each known column is in the sheet, and which positions hold unnamed columns.
struct Header {
    positions: [Option<usize>; 13],
    unnamed: Vec<usize>,
    width: usize,
}

/// What one valid row says, before rows of one parcel (or one shipment's check) are joined
/// into one event.
enum RowEvent {
    Single(EventKind),
    /// One line of a physical check: what was found and how many passed.
    CheckLine {
        line_id: String,
        sku_found: Option<String>,
        variant_found: Option<String>,
        quantity_passed: i64,
        result: CheckResult,
        note: Option<String>,
    },
    PackedLine {
        parcel_id: String,
        line_id: String,
        quantity: i64,
        weight_grams: Option<i64>,
    },
}

struct ParsedRow {
    row: usize,
    shipment_id: String,
    event: RowEvent,
}

/// Reads the cells of one row, collecting every problem instead of stopping at the first, so
/// the agent sees everything wrong with a row in one report.
struct Cells<'a> {
    header: &'a Header,
    record: &'a ::csv::StringRecord,
    event: &'static str,
    problems: Vec<String>,
}

impl Cells<'_> {
    /// The trimmed cell of `col`, or `None` when the column is absent or the cell is blank.
    fn get(&self, col: Col) -> Option<String> {
        cell(self.header, self.record, col).map(str::to_string)
    }

    fn required(&mut self, col: Col) -> Option<String> {
        let value = self.get(col);
        if value.is_none() {
            let name = col.name();
            let event = self.event;
            self.problems
                .push(if self.header.positions[col.index()].is_none() {
                    format!("a `{event}` row needs `{name}`, and the sheet has no `{name}` column")
                } else {
                    format!("`{name}` is empty; a `{event}` row needs it")
                });
        }
        value
    }

    fn number(&mut self, col: Col, required: bool) -> Option<i64> {
        let text = if required {
            self.required(col)?
        } else {
            self.get(col)?
        };
        let name = col.name();
        match text.parse::<i64>() {
            Ok(value) if value > 0 => Some(value),
            Ok(value) => {
                self.problems
                    .push(format!("`{name}` must be at least 1, got {value}"));
                None
            }
            Err(_) => {
                self.problems
                    .push(format!("`{name}` must be a whole number, got `{text}`"));
                None
            }
        }
    }

    fn day(&mut self, col: Col) -> Option<Day> {
        let text = self.get(col)?;
        match Day::parse(&text) {
            Ok(day) => Some(day),
            Err(e) => {
                self.problems.push(format!("`{}`: {e}", col.name()));
                None
            }
        }
    }
}

fn cell<'r>(header: &Header, record: &'r ::csv::StringRecord, col: Col) -> Option<&'r str> {
    let position = header.positions[col.index()]?;
    let value = record.get(position)?.trim();
    (!value.is_empty()).then_some(value)
}

/// Reads the sheet the agent sent back and turns it into supplier events, or refuses it whole.
///
/// `supplier` is the supplier whose sheet this is; `shipments` finds a shipment by id. Each row
/// becomes one event, except that the `packed` rows of one parcel of one shipment become one
/// `Packed` event with a line per row. Every event takes `imported_at` as its `occurred_at`,
/// because a sheet has no time column and the import is when shipgate learned of it. Event ids
/// are `csv:<first 16 hex digits of the file's SHA-256>:<row>` (the first row, for a parcel), so
/// importing the same file again yields the same ids and the store records nothing new.
///
/// Every row must name an existing, open shipment of `supplier`, lines of that shipment, and
/// quantities no larger than the line's (for `packed`, the sum over the sheet's parcels). The one
/// exception is a `cancelled` row, accepted for a closed shipment too, because it is how the
/// agent confirms a cancellation shipgate asked for, and that shipment may already be closed.
pub fn import(
    supplier: &str,
    file_name: &str,
    bytes: &[u8],
    imported_at: Timestamp,
    shipments: &dyn Fn(&str) -> Option<ShipmentView>,
) -> Result<Vec<SupplierEvent>, ImportErrors> {
    let text = sheet_text(file_name, bytes)?;
    let digest = Sha256::digest(bytes);
    let file_id = hex::encode(&digest[..8]);

    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        // Rows of uneven length are checked here, with a row number, instead of failing the
        // read with the crate's less helpful message.
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = reader.records();

    let header_record = match records.next() {
        Some(Ok(record)) => record,
        Some(Err(e)) => return Err(ImportErrors::file(file_name, format!("row 1: {e}"))),
        None => return Err(ImportErrors::file(file_name, empty_message(file_name))),
    };
    let header = read_header(file_name, &header_record)?;

    let mut problems: Vec<ImportProblem> = Vec::new();
    let mut parsed: Vec<ParsedRow> = Vec::new();
    let mut seen: HashMap<String, Option<ShipmentView>> = HashMap::new();
    for (index, record) in records.enumerate() {
        // The header is row 1, so the first record after it is row 2, as a spreadsheet shows it.
        // Records are counted rather than text lines, because a quoted cell may hold a line
        // break and a spreadsheet still shows it as one row.
        let row = index + 2;
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                problems.push(ImportProblem {
                    row: Some(row),
                    message: format!("cannot be read: {e}"),
                });
                break;
            }
        };
        let (row_problems, row_event) = read_row(supplier, &header, &record, &mut seen, shipments);
        for message in row_problems {
            problems.push(ImportProblem {
                row: Some(row),
                message,
            });
        }
        if let Some((shipment_id, event)) = row_event {
            parsed.push(ParsedRow {
                row,
                shipment_id,
                event,
            });
        }
    }
    if parsed.is_empty() && problems.is_empty() {
        // Importing nothing is harmless, but a sheet without events is almost certainly the
        // wrong file, and saying so beats a silent success.
        return Err(ImportErrors::file(
            file_name,
            format!("`{file_name}` has a header but no event rows"),
        ));
    }

    let events = join_rows(parsed, &seen, &mut problems, &file_id, &imported_at);
    if problems.is_empty() {
        Ok(events)
    } else {
        // Rows are read in order, but the checks over several rows (parcel totals) come last;
        // a stable sort by row puts every problem where the agent will look for it.
        problems.sort_by_key(|p| p.row);
        Err(ImportErrors {
            file_name: file_name.to_string(),
            problems,
        })
    }
}

fn empty_message(file_name: &str) -> String {
    format!("`{file_name}` is empty: expected a header row and one row per event")
}

/// Checks the file as a whole and returns its text without a byte order mark.
fn sheet_text<'b>(file_name: &str, bytes: &'b [u8]) -> Result<&'b str, ImportErrors> {
    if bytes.len() > MAX_SHEET_BYTES {
        return Err(ImportErrors::file(
            file_name,
            format!(
                "`{file_name}` is {} bytes, more than the {} MB a sheet may have; split it into \
                 several files",
                bytes.len(),
                MAX_SHEET_BYTES / (1024 * 1024)
            ),
        ));
    }
    // A workbook or UTF-16 text is what a spreadsheet writes when "Save as CSV UTF-8" was not
    // chosen; naming that is more useful than reporting an invalid byte.
    if bytes.starts_with(b"PK\x03\x04") {
        return Err(ImportErrors::file(
            file_name,
            format!(
                "`{file_name}` is a spreadsheet workbook (.xlsx or .ods), not CSV: save it as \
                 \"CSV UTF-8 (comma-separated)\""
            ),
        ));
    }
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(ImportErrors::file(
            file_name,
            format!("`{file_name}` is UTF-16 text: save it as \"CSV UTF-8 (comma-separated)\""),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let offset = e.valid_up_to();
        let line = bytes[..offset].iter().filter(|&&b| b == b'\n').count() + 1;
        ImportErrors::file(
            file_name,
            format!(
                "`{file_name}` is not UTF-8 text (invalid byte at offset {offset}, line {line}): \
                 save it as \"CSV UTF-8 (comma-separated)\""
            ),
        )
    })?;
    // Excel's "CSV UTF-8" starts the file with a byte order mark, which would otherwise become
    // part of the first column's name.
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(ImportErrors::file(file_name, empty_message(file_name)));
    }
    Ok(text)
}

fn read_header(file_name: &str, record: &::csv::StringRecord) -> Result<Header, ImportErrors> {
    let mut header = Header {
        positions: [None; 13],
        unnamed: Vec::new(),
        width: record.len(),
    };
    let mut problems = Vec::new();
    let mut unknown = Vec::new();
    for (position, raw) in record.iter().enumerate() {
        let name = raw.trim().to_lowercase();
        if name.is_empty() {
            // Spreadsheets often export a few empty columns after the last used one; they are
            // harmless as long as no row puts a value under them.
            header.unnamed.push(position);
            continue;
        }
        match Col::ALL.into_iter().find(|c| c.name() == name) {
            Some(col) if header.positions[col.index()].is_some() => {
                problems.push(format!("column `{}` appears twice", col.name()));
            }
            Some(col) => header.positions[col.index()] = Some(position),
            None => unknown.push(raw.trim().to_string()),
        }
    }
    let known = header.positions.iter().filter(|p| p.is_some()).count();
    if known == 0 {
        let hint = if record.len() == 1 && record[0].contains([';', '\t']) {
            " (the columns seem to be separated by `;` or tabs: save the sheet with commas)"
        } else {
            ""
        };
        return Err(ImportErrors::file(
            file_name,
            format!(
                "`{file_name}` has no header row: its first row must name the columns ({}){hint}",
                column_list()
            ),
        ));
    }
    // The sheet shipgate exported shares a few column names with the event sheet, so sending
    // it back unchanged would otherwise produce a screenful of unknown columns.
    if unknown.iter().any(|n| n.eq_ignore_ascii_case("order_name"))
        && unknown.iter().any(|n| n.eq_ignore_ascii_case("action"))
    {
        return Err(ImportErrors {
            file_name: file_name.to_string(),
            problems: vec![ImportProblem {
                row: Some(1),
                message: format!(
                    "this is the sheet of orders shipgate exported, not a sheet of events; an \
                     event sheet has the columns {}",
                    column_list()
                ),
            }],
        });
    }
    for name in unknown {
        problems.push(format!(
            "unknown column `{name}`; the columns are {}",
            column_list()
        ));
    }
    for col in [Col::ShipmentId, Col::Event] {
        if header.positions[col.index()].is_none() {
            problems.push(format!("the header has no `{}` column", col.name()));
        }
    }
    if problems.is_empty() {
        Ok(header)
    } else {
        Err(ImportErrors {
            file_name: file_name.to_string(),
            problems: problems
                .into_iter()
                .map(|message| ImportProblem {
                    row: Some(1),
                    message,
                })
                .collect(),
        })
    }
}

/// Checks one row on its own and against its shipment. Returns the row's problems and, when
/// its cells could be read into an event for a shipment of `supplier`, the shipment id and the
/// event. The event is kept even if the row has problems, so that the parcel totals can still
/// be checked and reported in the same pass; it is dropped for another supplier's shipment, so
/// that nothing about that shipment's lines reaches the report.
fn read_row(
    supplier: &str,
    header: &Header,
    record: &::csv::StringRecord,
    seen: &mut HashMap<String, Option<ShipmentView>>,
    shipments: &dyn Fn(&str) -> Option<ShipmentView>,
) -> (Vec<String>, Option<(String, RowEvent)>) {
    let mut problems = Vec::new();
    if record.iter().all(|c| c.trim().is_empty()) {
        // A row with nothing in it is a spreadsheet's blank line, not an event.
        return (problems, None);
    }
    for position in header.width..record.len() {
        if !record[position].trim().is_empty() {
            problems.push(format!(
                "a value in column {}, but the header names only {} columns",
                position + 1,
                header.width
            ));
        }
    }
    for &position in &header.unnamed {
        if record.get(position).is_some_and(|c| !c.trim().is_empty()) {
            problems.push(format!(
                "a value in column {}, which has no name in the header",
                position + 1
            ));
        }
    }

    let shipment_id = cell(header, record, Col::ShipmentId).map(str::to_string);
    if shipment_id.is_none() {
        problems.push("`shipment_id` is empty".to_string());
    }
    let event = match cell(header, record, Col::Event) {
        None => {
            problems.push("`event` is empty".to_string());
            None
        }
        Some(name) => {
            let event = SheetEvent::parse(name);
            if event.is_none() {
                problems.push(format!(
                    "unknown event `{name}`; the events are {}",
                    SheetEvent::ALL.map(SheetEvent::name).join(", ")
                ));
            }
            event
        }
    };

    let row_event = event.and_then(|event| {
        for col in Col::ALL {
            if col != Col::ShipmentId
                && col != Col::Event
                && !event.columns().contains(&col)
                && cell(header, record, col).is_some()
            {
                problems.push(format!(
                    "`{}` is not used by `{}` rows; leave it empty",
                    col.name(),
                    event.name()
                ));
            }
        }
        let mut cells = Cells {
            header,
            record,
            event: event.name(),
            problems: Vec::new(),
        };
        let row_event = read_event(event, &mut cells);
        problems.append(&mut cells.problems);
        row_event
    });

    let Some(shipment_id) = shipment_id else {
        return (problems, None);
    };
    let shipment = seen
        .entry(shipment_id.clone())
        .or_insert_with(|| shipments(&shipment_id));
    match shipment {
        None => {
            problems.push(format!("unknown shipment `{shipment_id}`"));
            return (problems, None);
        }
        Some(shipment) if shipment.supplier != supplier => {
            problems.push(format!(
                "shipment `{shipment_id}` is not one of `{supplier}`'s shipments"
            ));
            return (problems, None);
        }
        Some(shipment) => {
            if !shipment.open && event != Some(SheetEvent::Cancelled) {
                problems.push(format!(
                    "shipment `{shipment_id}` is closed (cancelled or finished); only a \
                     `cancelled` row may still name it"
                ));
            }
            if let Some(row_event) = &row_event {
                check_line(shipment, row_event, &mut problems);
            }
        }
    }
    (problems, row_event.map(|e| (shipment_id, e)))
}

/// The result of one checked line, from the `note` cell: `pass`, `fail: <what is wrong>` or
/// `pass_with_deviation: <who approved, and why>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum CheckResult {
    Pass,
    PassWithDeviation,
    Fail,
}

impl CheckResult {
    fn name(self) -> &'static str {
        match self {
            CheckResult::Pass => "pass",
            CheckResult::PassWithDeviation => "pass_with_deviation",
            CheckResult::Fail => "fail",
        }
    }

    /// Reads a `note` cell of a `check` row; a deviation or a failure must say why.
    fn parse(note: &str) -> Result<(CheckResult, Option<String>), String> {
        let (head, rest) = match note.split_once(':') {
            Some((head, rest)) => (
                head,
                Some(rest.trim().to_string()).filter(|r| !r.is_empty()),
            ),
            None => (note, None),
        };
        let result = match head.trim().to_lowercase().replace([' ', '-'], "_").as_str() {
            "pass" => CheckResult::Pass,
            "pass_with_deviation" => CheckResult::PassWithDeviation,
            "fail" => CheckResult::Fail,
            other => {
                return Err(format!(
                    "`note` of a `check` row starts with pass, fail or pass_with_deviation, not `{other}`"
                ));
            }
        };
        if result != CheckResult::Pass && rest.is_none() {
            return Err(format!(
                "`note` of a `{}` check must say why after a colon (e.g. `{}: …`)",
                result.name(),
                result.name()
            ));
        }
        Ok((result, rest))
    }
}

fn read_event(event: SheetEvent, cells: &mut Cells<'_>) -> Option<RowEvent> {
    let kind = match event {
        SheetEvent::Received => EventKind::Received {
            supplier_ref: cells.get(Col::Note),
        },
        SheetEvent::Rejected => EventKind::Rejected {
            reason: cells.required(Col::Note)?,
        },
        SheetEvent::AddressIssue => EventKind::AddressIssue {
            reason: cells.required(Col::Note)?,
        },
        SheetEvent::Confirmed => {
            let line_id = cells.required(Col::LineId);
            let sku = cells.required(Col::Sku);
            let quantity = cells.number(Col::Quantity, true);
            let ship_by = cells.day(Col::Date);
            EventKind::LineConfirmed {
                line_id: line_id?,
                sku: sku?,
                variant: cells.get(Col::Variant),
                quantity: quantity?,
                cost: None,
                ship_by,
                hold_until: None,
            }
        }
        SheetEvent::Short => {
            let line_id = cells.required(Col::LineId);
            let quantity = cells.number(Col::Quantity, true);
            let restock_date = cells.day(Col::Date);
            EventKind::LineShort {
                line_id: line_id?,
                quantity_short: quantity?,
                restock_date,
                reason: cells.get(Col::Note),
            }
        }
        SheetEvent::Substitute => {
            let line_id = cells.required(Col::LineId);
            let offered_sku = cells.required(Col::Sku);
            let differences = cells.required(Col::Note);
            EventKind::SubstituteOffered {
                line_id: line_id?,
                offered_sku: offered_sku?,
                offered_variant: cells.get(Col::Variant),
                differences: differences?,
                photos: Vec::new(),
                price_change: None,
                expires_at: None,
            }
        }
        SheetEvent::Check => {
            let line_id = cells.required(Col::LineId);
            let quantity = cells.number(Col::Quantity, true);
            let note = cells.required(Col::Note);
            let parsed = match note.as_deref().map(CheckResult::parse) {
                Some(Ok(parsed)) => Some(parsed),
                Some(Err(problem)) => {
                    cells.problems.push(problem);
                    None
                }
                None => None,
            };
            let (result, note) = parsed?;
            return Some(RowEvent::CheckLine {
                line_id: line_id?,
                sku_found: cells.get(Col::Sku),
                variant_found: cells.get(Col::Variant),
                quantity_passed: quantity?,
                result,
                note,
            });
        }
        SheetEvent::Packed => {
            let parcel_id = cells.required(Col::ParcelId);
            let line_id = cells.required(Col::LineId);
            let quantity = cells.number(Col::Quantity, true);
            let weight_grams = cells.number(Col::WeightGrams, false);
            return Some(RowEvent::PackedLine {
                parcel_id: parcel_id?,
                line_id: line_id?,
                quantity: quantity?,
                weight_grams,
            });
        }
        SheetEvent::Label => {
            let carrier = cells.required(Col::Carrier);
            let tracking_number = cells.required(Col::TrackingNumber);
            EventKind::LabelCreated {
                parcel_id: cells.get(Col::ParcelId),
                carrier: carrier?,
                tracking_number: tracking_number?,
                tracking_url: cells.get(Col::TrackingUrl),
            }
        }
        SheetEvent::HandedOver => EventKind::HandedOver {
            parcel_id: cells.get(Col::ParcelId),
            carrier: cells.get(Col::Carrier),
            tracking_number: cells.get(Col::TrackingNumber),
        },
        SheetEvent::Cancelled => EventKind::Cancelled {
            reason: cells.get(Col::Note),
        },
    };
    Some(RowEvent::Single(kind))
}

/// Checks that the row's line is one of the shipment's and that its quantity fits the line.
fn check_line(shipment: &ShipmentView, event: &RowEvent, problems: &mut Vec<String>) {
    let (line_id, quantity) = match event {
        RowEvent::Single(EventKind::LineConfirmed {
            line_id, quantity, ..
        }) => (line_id, Some(*quantity)),
        RowEvent::Single(EventKind::LineShort {
            line_id,
            quantity_short,
            ..
        }) => (line_id, Some(*quantity_short)),
        RowEvent::Single(EventKind::SubstituteOffered { line_id, .. }) => (line_id, None),
        RowEvent::PackedLine {
            line_id, quantity, ..
        } => (line_id, Some(*quantity)),
        RowEvent::CheckLine {
            line_id,
            quantity_passed,
            ..
        } => (line_id, Some(*quantity_passed)),
        RowEvent::Single(_) => return,
    };
    let shipment_id = &shipment.shipment_id;
    let Some(line) = shipment.lines.iter().find(|l| &l.line_id == line_id) else {
        problems.push(format!(
            "line `{line_id}` is not in shipment `{shipment_id}`"
        ));
        return;
    };
    if let Some(quantity) = quantity
        && quantity > line.quantity
    {
        problems.push(format!(
            "`quantity` {quantity} is more than the {} of line `{line_id}` in shipment \
             `{shipment_id}`",
            line.quantity
        ));
    }
}

/// Turns the rows into events in row order, joining the `packed` rows of one parcel, and
/// checks what only several rows together can get wrong: a line twice in one parcel, parcel
/// weights that disagree, and parcels that together hold more of a line than was ordered.
fn join_rows(
    rows: Vec<ParsedRow>,
    shipments: &HashMap<String, Option<ShipmentView>>,
    problems: &mut Vec<ImportProblem>,
    file_id: &str,
    imported_at: &Timestamp,
) -> Vec<SupplierEvent> {
    struct Parcel {
        first_row: usize,
        shipment_id: String,
        parcel: PackedParcel,
        rows: Vec<(usize, String)>,
        weight_row: Option<usize>,
    }
    // Events are kept by the row they start at; a parcel's place is its first row, and so is
    // a shipment's check (its rows, one per line, are one check record).
    let mut singles: Vec<(usize, String, EventKind)> = Vec::new();
    let mut checks: Vec<(usize, String, Vec<serde_json::Value>, CheckResult)> = Vec::new();
    let mut parcels: Vec<Parcel> = Vec::new();
    let mut parcel_index: HashMap<(String, String), usize> = HashMap::new();
    // Per shipment and line: the packed rows and their running total.
    let mut packed_totals: HashMap<(String, String), (i64, Vec<usize>, bool)> = HashMap::new();
    let mut problem = |row: usize, message: String| {
        problems.push(ImportProblem {
            row: Some(row),
            message,
        })
    };

    for ParsedRow {
        row,
        shipment_id,
        event,
    } in rows
    {
        match event {
            RowEvent::Single(kind) => singles.push((row, shipment_id, kind)),
            RowEvent::CheckLine {
                line_id,
                sku_found,
                variant_found,
                quantity_passed,
                result,
                note,
            } => {
                let line = serde_json::json!({
                    "line_id": line_id,
                    "sku_found": sku_found,
                    "variant_found": variant_found,
                    "quantity_passed": quantity_passed,
                    "result": result.name(),
                    "note": note,
                    "row": row,
                });
                match checks.iter_mut().find(|(_, s, _, _)| *s == shipment_id) {
                    Some((_, _, lines, worst)) => {
                        if let Some(other) = lines.iter().find(|l| l["line_id"] == line_id) {
                            problem(
                                row,
                                format!(
                                    "line `{line_id}` is already checked in row {}; give each line one `check` row",
                                    other["row"]
                                ),
                            );
                        }
                        lines.push(line);
                        *worst = (*worst).max(result);
                    }
                    None => checks.push((row, shipment_id, vec![line], result)),
                }
            }
            RowEvent::PackedLine {
                parcel_id,
                line_id,
                quantity,
                weight_grams,
            } => {
                let key = (shipment_id.clone(), parcel_id.clone());
                let index = *parcel_index.entry(key).or_insert_with(|| {
                    parcels.push(Parcel {
                        first_row: row,
                        shipment_id: shipment_id.clone(),
                        parcel: PackedParcel {
                            parcel_id: parcel_id.clone(),
                            lines: Vec::new(),
                            weight_grams: None,
                            dimensions_cm: None,
                            photos: Vec::new(),
                        },
                        rows: Vec::new(),
                        weight_row: None,
                    });
                    parcels.len() - 1
                });
                let parcel = &mut parcels[index];
                if let Some((other, _)) = parcel.rows.iter().find(|(_, l)| *l == line_id) {
                    problem(
                        row,
                        format!(
                            "line `{line_id}` is already in parcel `{parcel_id}` (row {other}); \
                             give each line of a parcel one row"
                        ),
                    );
                }
                parcel.rows.push((row, line_id.clone()));
                if let Some(weight) = weight_grams {
                    match (parcel.parcel.weight_grams, parcel.weight_row) {
                        (Some(known), Some(other)) if known != weight => problem(
                            row,
                            format!(
                                "`weight_grams` {weight} differs from the {known} given for \
                                 parcel `{parcel_id}` in row {other}"
                            ),
                        ),
                        (Some(_), _) => {}
                        (None, _) => {
                            parcel.parcel.weight_grams = Some(weight);
                            parcel.weight_row = Some(row);
                        }
                    }
                }
                parcel.parcel.lines.push(ParcelLine {
                    line_id: line_id.clone(),
                    quantity,
                });

                let ordered = shipments
                    .get(&shipment_id)
                    .and_then(|s| s.as_ref())
                    .and_then(|s| s.lines.iter().find(|l| l.line_id == line_id))
                    .map(|l| l.quantity);
                let total = packed_totals
                    .entry((shipment_id.clone(), line_id.clone()))
                    .or_insert((0, Vec::new(), false));
                total.0 += quantity;
                total.1.push(row);
                // A single row above the line's quantity is already reported by the row
                // checks; this reports, once, the row where several rows together go over.
                if let Some(ordered) = ordered
                    && total.0 > ordered
                    && quantity <= ordered
                    && !total.2
                {
                    total.2 = true;
                    let rows = total.1.iter().map(|r| r.to_string()).collect::<Vec<_>>();
                    problem(
                        row,
                        format!(
                            "the parcels of shipment `{shipment_id}` hold {} of line \
                             `{line_id}` (rows {}), more than its {ordered}",
                            total.0,
                            rows.join(", ")
                        ),
                    );
                }
            }
        }
    }

    let event_id = |row: usize| format!("csv:{file_id}:{row}");
    let mut events: Vec<(usize, SupplierEvent)> = singles
        .into_iter()
        .map(|(row, shipment_id, kind)| {
            (
                row,
                SupplierEvent {
                    id: event_id(row),
                    shipment_id,
                    occurred_at: imported_at.clone(),
                    kind,
                },
            )
        })
        .collect();
    events.extend(checks.into_iter().map(|(row, shipment_id, lines, worst)| {
        let check = serde_json::json!({
            "source": "csv",
            "result": worst.name(),
            "lines": lines,
        });
        (
            row,
            SupplierEvent {
                id: event_id(row),
                shipment_id,
                occurred_at: imported_at.clone(),
                kind: EventKind::CheckReported {
                    check_json: check.to_string(),
                },
            },
        )
    }));
    events.extend(parcels.into_iter().map(|p| {
        (
            p.first_row,
            SupplierEvent {
                id: event_id(p.first_row),
                shipment_id: p.shipment_id,
                occurred_at: imported_at.clone(),
                kind: EventKind::Packed {
                    parcels: vec![p.parcel],
                },
            },
        )
    }));
    events.sort_by_key(|(row, _)| *row);
    events.into_iter().map(|(_, event)| event).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "shipment_id,event,line_id,sku,variant,quantity,date,parcel_id,carrier,\
                          tracking_number,tracking_url,weight_grams,note";
    const L1: &str = "gid://shopify/LineItem/1001";
    const L2: &str = "gid://shopify/LineItem/1002";

    fn line(line_id: &str, sku: &str, quantity: i64) -> MessageLine {
        MessageLine {
            line_id: line_id.to_string(),
            sku: sku.to_string(),
            variant_title: None,
            quantity,
        }
    }

    fn view(id: &str, supplier: &str, open: bool, lines: Vec<MessageLine>) -> ShipmentView {
        ShipmentView {
            shipment_id: id.to_string(),
            supplier: supplier.to_string(),
            shop: "example.myshopify.com".to_string(),
            order_name: "#1001".to_string(),
            open,
            lines,
        }
    }

    /// SG-1 and SG-3 are acme's (SG-3 closed), SG-2 is another supplier's.
    fn shipments(id: &str) -> Option<ShipmentView> {
        match id {
            "SG-1" => Some(view(
                "SG-1",
                "acme",
                true,
                vec![line(L1, "MUG-RED", 2), line(L2, "MUG-BLUE", 3)],
            )),
            "SG-2" => Some(view(
                "SG-2",
                "other",
                true,
                vec![line("gid://shopify/LineItem/2001", "CAP", 1)],
            )),
            "SG-3" => Some(view("SG-3", "acme", false, vec![line(L1, "MUG-RED", 1)])),
            _ => None,
        }
    }

    fn at() -> Timestamp {
        Timestamp::parse("2026-11-26T09:00:00Z").unwrap()
    }

    fn run(bytes: &[u8]) -> Result<Vec<SupplierEvent>, ImportErrors> {
        import("acme", "sheet.csv", bytes, at(), &shipments)
    }

    /// A sheet with the documented header and these rows (row 2 onwards).
    fn sheet(rows: &[&str]) -> String {
        let mut text = HEADER.to_string();
        for row in rows {
            text.push('\n');
            text.push_str(row);
        }
        text.push('\n');
        text
    }

    fn file_id(bytes: &[u8]) -> String {
        hex::encode(&Sha256::digest(bytes)[..8])
    }

    fn address() -> Address {
        Address {
            name: Some("Ada \"The Countess\" Lovelace".to_string()),
            address1: Some("Flat 3, 1 Example Street".to_string()),
            address2: Some("Building B\nsecond floor, \"rear\"".to_string()),
            city: Some("London".to_string()),
            province_code: None,
            zip: Some("N1 1AA".to_string()),
            country_code: Some("GB".to_string()),
            phone: Some("+44 20 0000 0000".to_string()),
        }
    }

    fn read_back(text: &str) -> Vec<Vec<String>> {
        ::csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(text.as_bytes())
            .records()
            .map(|r| r.unwrap().iter().map(str::to_string).collect())
            .collect()
    }

    #[test]
    fn export_header_is_the_documented_columns_then_action() {
        let text = export(&[]);
        assert_eq!(
            text,
            "shipment_id,order_name,line_id,sku,variant_title,quantity,ship_to_name,\
             ship_to_address1,ship_to_address2,ship_to_city,ship_to_province,ship_to_zip,\
             ship_to_country,ship_to_phone,action\n"
        );
    }

    #[test]
    fn export_round_trips_through_the_csv_crate_with_commas_quotes_and_newlines() {
        let mut red = line(L1, "MUG-RED", 2);
        red.variant_title = Some("Red, \"large\" / 350 ml".to_string());
        let pending = [PendingSubmission {
            shipment_id: "SG-0000000042".to_string(),
            order_name: "#1001".to_string(),
            lines: vec![red, line(L2, "MUG-BLUE", 1)],
            ship_to: Some(address()),
            cancelled: false,
        }];
        let rows = read_back(&export(&pending));
        assert_eq!(rows.len(), 3, "header and one row per line");
        assert_eq!(rows[0], EXPORT_HEADER.map(str::to_string).to_vec());
        let a = address();
        let expected_address = [
            a.name.unwrap(),
            a.address1.unwrap(),
            a.address2.unwrap(),
            a.city.unwrap(),
            String::new(),
            a.zip.unwrap(),
            a.country_code.unwrap(),
            a.phone.unwrap(),
        ];
        assert_eq!(
            rows[1][..6],
            [
                "SG-0000000042",
                "#1001",
                L1,
                "MUG-RED",
                "Red, \"large\" / 350 ml",
                "2"
            ]
        );
        assert_eq!(rows[1][6..14], expected_address);
        assert_eq!(rows[1][14], "ship");
        assert_eq!(rows[2][2..6], [L2, "MUG-BLUE", "", "1"]);
        assert_eq!(rows[2][6..14], expected_address);
        assert_eq!(rows[2][14], "ship");
    }

    #[test]
    fn export_marks_cancellations_without_the_address_and_keeps_lineless_shipments() {
        let pending = [
            PendingSubmission {
                shipment_id: "SG-1".to_string(),
                order_name: "#1001".to_string(),
                lines: vec![line(L1, "MUG-RED", 2)],
                ship_to: Some(address()),
                cancelled: true,
            },
            PendingSubmission {
                shipment_id: "SG-2".to_string(),
                order_name: "#1002".to_string(),
                lines: Vec::new(),
                ship_to: None,
                cancelled: false,
            },
        ];
        let rows = read_back(&export(&pending));
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1][..6], ["SG-1", "#1001", L1, "MUG-RED", "", "2"]);
        assert!(rows[1][6..14].iter().all(String::is_empty), "{:?}", rows[1]);
        assert_eq!(rows[1][14], "cancel");
        assert_eq!(rows[2][..2], ["SG-2", "#1002"]);
        assert!(rows[2][2..14].iter().all(String::is_empty), "{:?}", rows[2]);
        assert_eq!(rows[2][14], "ship");
    }

    #[test]
    fn a_valid_sheet_with_every_event_kind_imports_into_the_expected_events() {
        let text = sheet(&[
            "SG-1,received,,,,,,,,,,,PO-7781",
            "SG-1,confirmed,gid://shopify/LineItem/1001,MUG-RED,Red / 350 ml,2,2026-11-28,,,,,,",
            "SG-1,short,gid://shopify/LineItem/1002,,,1,2026-12-10,,,,,,\"one broken, restocking\"",
            "SG-1,substitute,gid://shopify/LineItem/1002,MUG-NAVY,Navy,,,,,,,,navy instead of blue",
            "SG-1,packed,gid://shopify/LineItem/1001,,,2,,P1,,,,640,",
            "SG-1,packed,gid://shopify/LineItem/1002,,,1,,P1,,,,,",
            "SG-1,packed,gid://shopify/LineItem/1002,,,1,,P2,,,,300,",
            "SG-1,label,,,,,,P1,UPS,1Z999,https://ups.example/1Z999,,",
            "SG-1,handed_over,,,,,,P1,UPS,1Z999,,,",
            "SG-1,rejected,,,,,,,,,,,we do not ship to GB",
            "SG-3,cancelled,,,,,,,,,,,stopped before packing",
            "SG-1,address issue,,,,,,,,,,,no street number",
        ]);
        let events = run(text.as_bytes()).unwrap();
        let id = |row: usize| format!("csv:{}:{row}", file_id(text.as_bytes()));
        let event = |row: usize, shipment: &str, kind: EventKind| SupplierEvent {
            id: id(row),
            shipment_id: shipment.to_string(),
            occurred_at: at(),
            kind,
        };
        let day = |text: &str| Some(Day::parse(text).unwrap());
        let expected = vec![
            event(
                2,
                "SG-1",
                EventKind::Received {
                    supplier_ref: Some("PO-7781".into()),
                },
            ),
            event(
                3,
                "SG-1",
                EventKind::LineConfirmed {
                    line_id: L1.into(),
                    sku: "MUG-RED".into(),
                    variant: Some("Red / 350 ml".into()),
                    quantity: 2,
                    cost: None,
                    ship_by: day("2026-11-28"),
                    hold_until: None,
                },
            ),
            event(
                4,
                "SG-1",
                EventKind::LineShort {
                    line_id: L2.into(),
                    quantity_short: 1,
                    restock_date: day("2026-12-10"),
                    reason: Some("one broken, restocking".into()),
                },
            ),
            event(
                5,
                "SG-1",
                EventKind::SubstituteOffered {
                    line_id: L2.into(),
                    offered_sku: "MUG-NAVY".into(),
                    offered_variant: Some("Navy".into()),
                    differences: "navy instead of blue".into(),
                    photos: Vec::new(),
                    price_change: None,
                    expires_at: None,
                },
            ),
            event(
                6,
                "SG-1",
                EventKind::Packed {
                    parcels: vec![PackedParcel {
                        parcel_id: "P1".into(),
                        lines: vec![
                            ParcelLine {
                                line_id: L1.into(),
                                quantity: 2,
                            },
                            ParcelLine {
                                line_id: L2.into(),
                                quantity: 1,
                            },
                        ],
                        weight_grams: Some(640),
                        dimensions_cm: None,
                        photos: Vec::new(),
                    }],
                },
            ),
            event(
                8,
                "SG-1",
                EventKind::Packed {
                    parcels: vec![PackedParcel {
                        parcel_id: "P2".into(),
                        lines: vec![ParcelLine {
                            line_id: L2.into(),
                            quantity: 1,
                        }],
                        weight_grams: Some(300),
                        dimensions_cm: None,
                        photos: Vec::new(),
                    }],
                },
            ),
            event(
                9,
                "SG-1",
                EventKind::LabelCreated {
                    parcel_id: Some("P1".into()),
                    carrier: "UPS".into(),
                    tracking_number: "1Z999".into(),
                    tracking_url: Some("https://ups.example/1Z999".into()),
                },
            ),
            event(
                10,
                "SG-1",
                EventKind::HandedOver {
                    parcel_id: Some("P1".into()),
                    carrier: Some("UPS".into()),
                    tracking_number: Some("1Z999".into()),
                },
            ),
            event(
                11,
                "SG-1",
                EventKind::Rejected {
                    reason: "we do not ship to GB".into(),
                },
            ),
            event(
                12,
                "SG-3",
                EventKind::Cancelled {
                    reason: Some("stopped before packing".into()),
                },
            ),
            event(
                13,
                "SG-1",
                EventKind::AddressIssue {
                    reason: "no street number".into(),
                },
            ),
        ];
        assert_eq!(events, expected);
        // The same events pass the webhook's own validation, so both channels agree.
        for event in &events {
            assert_eq!(&SupplierEvent::from_json(&event.to_json()).unwrap(), event);
        }
    }

    #[test]
    fn a_sheet_with_three_bad_rows_reports_exactly_those_rows_and_imports_nothing() {
        let text = sheet(&[
            "SG-1,received,,,,,,,,,,,PO-1",
            "SG-404,received,,,,,,,,,,,",
            "SG-1,confirmed,gid://shopify/LineItem/1001,MUG-RED,,2,,,,,,,",
            "SG-1,confirmed,gid://shopify/LineItem/1001,MUG-RED,,9,,,,,,,",
            "SG-1,short,gid://shopify/LineItem/1002,,,1,next week,,,,,,",
            "SG-1,label,,,,,,P1,UPS,1Z999,,,",
        ]);
        let errors = run(text.as_bytes()).unwrap_err();
        assert_eq!(errors.rows(), vec![3, 5, 6], "{errors}");
        assert_eq!(errors.problems.len(), 3, "{errors}");
    }

    #[test]
    fn every_kind_of_bad_row_is_named() {
        let cases: [(&str, &str); 14] = [
            ("SG-404,received,,,,,,,,,,,", "unknown shipment `SG-404`"),
            (
                "SG-2,received,,,,,,,,,,,",
                "shipment `SG-2` is not one of `acme`'s shipments",
            ),
            (
                "SG-3,received,,,,,,,,,,,",
                "shipment `SG-3` is closed (cancelled or finished)",
            ),
            (
                "SG-1,confirmed,gid://shopify/LineItem/9,MUG-RED,,1,,,,,,,",
                "line `gid://shopify/LineItem/9` is not in shipment `SG-1`",
            ),
            (
                "SG-1,confirmed,gid://shopify/LineItem/1001,MUG-RED,,3,,,,,,,",
                "`quantity` 3 is more than the 2 of line `gid://shopify/LineItem/1001`",
            ),
            (
                "SG-1,short,gid://shopify/LineItem/1001,,,0,,,,,,,",
                "`quantity` must be at least 1, got 0",
            ),
            (
                "SG-1,packed,gid://shopify/LineItem/1001,,,two,,P1,,,,,",
                "`quantity` must be a whole number, got `two`",
            ),
            (
                "SG-1,confirmed,gid://shopify/LineItem/1001,MUG-RED,,1,28/11/2026,,,,,,",
                "`date`: `28/11/2026` is not a date (YYYY-MM-DD)",
            ),
            (
                "SG-1,teleported,,,,,,,,,,,",
                "unknown event `teleported`; the events are received, rejected",
            ),
            (
                "SG-1,rejected,,,,,,,,,,,",
                "`note` is empty; a `rejected` row needs it",
            ),
            (
                "SG-1,label,,,,,,P1,,1Z999,,,",
                "`carrier` is empty; a `label` row needs it",
            ),
            (
                "SG-1,received,,,,,,,,1Z999,,,",
                "`tracking_number` is not used by `received` rows",
            ),
            (",received,,,,,,,,,,,", "`shipment_id` is empty"),
            (
                "SG-1,received,,,,,,,,,,,,surplus",
                "a value in column 14, but the header names only 13 columns",
            ),
        ];
        for (row, expected) in cases {
            let errors = run(sheet(&[row]).as_bytes()).unwrap_err();
            assert_eq!(errors.problems.len(), 1, "{row}: {errors}");
            assert_eq!(errors.problems[0].row, Some(2), "{row}: {errors}");
            assert!(
                errors.problems[0].message.contains(expected),
                "{row}: `{errors}` should contain `{expected}`"
            );
        }
    }

    #[test]
    fn a_missing_column_is_named_for_each_row_that_needs_it() {
        let text = "shipment_id,event,parcel_id,tracking_number\n\
                    SG-1,label,P1,1Z999\n\
                    SG-1,handed_over,P1,1Z999\n\
                    SG-1,label,P2,1Z998\n";
        let errors = run(text.as_bytes()).unwrap_err();
        assert_eq!(
            errors.to_string(),
            "row 2: a `label` row needs `carrier`, and the sheet has no `carrier` column\n\
             row 4: a `label` row needs `carrier`, and the sheet has no `carrier` column"
        );
    }

    #[test]
    fn parcels_that_together_hold_more_than_the_line_are_refused_at_the_row_that_goes_over() {
        let text = sheet(&[
            "SG-1,packed,gid://shopify/LineItem/1001,,,1,,P1,,,,,",
            "SG-1,packed,gid://shopify/LineItem/1001,,,1,,P2,,,,,",
            "SG-1,packed,gid://shopify/LineItem/1001,,,1,,P3,,,,,",
        ]);
        let errors = run(text.as_bytes()).unwrap_err();
        assert_eq!(
            errors.to_string(),
            "row 4: the parcels of shipment `SG-1` hold 3 of line `gid://shopify/LineItem/1001` \
             (rows 2, 3, 4), more than its 2"
        );
    }

    #[test]
    fn a_line_twice_in_one_parcel_or_disagreeing_weights_are_refused() {
        let text = sheet(&[
            "SG-1,packed,gid://shopify/LineItem/1002,,,1,,P1,,,,500,",
            "SG-1,packed,gid://shopify/LineItem/1002,,,1,,P1,,,,,",
            "SG-1,packed,gid://shopify/LineItem/1001,,,1,,P1,,,,600,",
        ]);
        let errors = run(text.as_bytes()).unwrap_err();
        assert_eq!(errors.rows(), vec![3, 4], "{errors}");
        assert!(
            errors.problems[0]
                .message
                .contains("already in parcel `P1` (row 2)")
        );
        assert!(errors.problems[1].message.contains("differs from the 500"));
    }

    #[test]
    fn the_check_rows_of_a_shipment_are_one_check_record_with_its_worst_result() {
        let text = sheet(&[
            &format!("SG-1,check,{L1},MUG-RED,Red,2,,,,,,,pass"),
            &format!(
                "SG-1,check,{L2},MUG-BLUE,,3,,,,,,,pass_with_deviation: box dented; approved by Mia"
            ),
        ]);
        let events = run(text.as_bytes()).unwrap();
        assert_eq!(events.len(), 1);
        let EventKind::CheckReported { check_json } = &events[0].kind else {
            panic!("{:?}", events[0]);
        };
        let check: serde_json::Value = serde_json::from_str(check_json).unwrap();
        assert_eq!(check["result"], "pass_with_deviation");
        assert_eq!(check["lines"][0]["sku_found"], "MUG-RED");
        assert_eq!(check["lines"][1]["note"], "box dented; approved by Mia");
        assert_eq!(events[0].id, format!("csv:{}:2", file_id(text.as_bytes())));

        let bad = sheet(&[
            &format!("SG-1,check,{L1},MUG-RED,,2,,,,,,,looks fine"),
            &format!("SG-1,check,{L2},MUG-BLUE,,3,,,,,,,fail"),
            &format!("SG-1,check,{L2},MUG-BLUE,,9,,,,,,,pass"),
        ]);
        let errors = run(bad.as_bytes()).unwrap_err().to_string();
        assert!(
            errors.contains("row 2: `note` of a `check` row starts with pass"),
            "{errors}"
        );
        assert!(
            errors.contains("row 3: `note` of a `fail` check must say why"),
            "{errors}"
        );
        assert!(
            errors.contains("row 4: `quantity` 9 is more than the 3"),
            "{errors}"
        );
    }

    #[test]
    fn the_same_file_twice_gives_the_same_event_ids() {
        let text = sheet(&[
            "SG-1,received,,,,,,,,,,,PO-1",
            "SG-1,packed,gid://shopify/LineItem/1001,,,2,,P1,,,,,",
        ]);
        let first = run(text.as_bytes()).unwrap();
        let second = run(text.as_bytes()).unwrap();
        assert_eq!(first, second);
        let prefix = format!("csv:{}:", file_id(text.as_bytes()));
        assert_eq!(
            first.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
            [format!("{prefix}2"), format!("{prefix}3")]
        );
        // Another file (here one more character) names other events.
        let other = run(format!("{text}\n").as_bytes()).unwrap();
        assert_ne!(other[0].id, first[0].id);
    }

    #[test]
    fn header_names_are_trimmed_case_insensitive_and_in_any_order() {
        let text = " Note ,EVENT,Shipment_ID ,,\nPO-9,Received,SG-1,,\n,,,,\n";
        let events = run(text.as_bytes()).unwrap();
        assert_eq!(events.len(), 1, "the blank row is skipped");
        assert_eq!(
            events[0].kind,
            EventKind::Received {
                supplier_ref: Some("PO-9".into())
            }
        );
    }

    #[test]
    fn section_three_event_names_are_accepted_too() {
        let text = "shipment_id,event,carrier,tracking_number\nSG-1,Label Created,UPS,1Z9\n";
        let events = run(text.as_bytes()).unwrap();
        assert_eq!(events[0].kind.name(), "label_created");
    }

    #[test]
    fn bad_headers_are_refused_on_row_one() {
        let cases = [
            (
                "shipment_id,event,colour\nSG-1,received,red\n",
                "row 1: unknown column `colour`; the columns are shipment_id, event,",
            ),
            (
                "shipment_id,event,note,NOTE\nSG-1,received,a,b\n",
                "row 1: column `note` appears twice",
            ),
            (
                "shipment_id,note\nSG-1,a\n",
                "row 1: the header has no `event` column",
            ),
        ];
        for (text, expected) in cases {
            let errors = run(text.as_bytes()).unwrap_err();
            assert!(errors.to_string().starts_with(expected), "{errors}");
        }
        let exported = export(&[PendingSubmission {
            shipment_id: "SG-1".into(),
            order_name: "#1001".into(),
            lines: vec![line(L1, "MUG-RED", 2)],
            ship_to: None,
            cancelled: false,
        }]);
        let errors = run(exported.as_bytes()).unwrap_err();
        assert!(
            errors
                .to_string()
                .starts_with("row 1: this is the sheet of orders shipgate exported"),
            "{errors}"
        );
        assert_eq!(errors.problems.len(), 1);
        let errors = run(b"shipment_id,event,\nSG-1,received,oops\n").unwrap_err();
        assert_eq!(
            errors.to_string(),
            "row 2: a value in column 3, which has no name in the header"
        );
    }

    #[test]
    fn files_that_are_not_a_sheet_are_refused_with_a_clear_message() {
        let too_large = vec![b'a'; MAX_SHEET_BYTES + 1];
        let cases: [(&[u8], &str); 8] = [
            (b"", "`sheet.csv` is empty"),
            (b"\xEF\xBB\xBF \r\n", "`sheet.csv` is empty"),
            (
                b"SG-1,received,,PO-1\n",
                "`sheet.csv` has no header row: its first row must name the columns",
            ),
            (
                b"shipment_id;event;note\nSG-1;received;x\n",
                "separated by `;` or tabs",
            ),
            (HEADER.as_bytes(), "has a header but no event rows"),
            (&too_large, "more than the 5 MB a sheet may have"),
            (
                b"shipment_id,event,note\nSG-1,received,Fran\xE7ois\n",
                "`sheet.csv` is not UTF-8 text (invalid byte at offset 41, line 2)",
            ),
            (b"PK\x03\x04\x14\x00", "is a spreadsheet workbook"),
        ];
        for (bytes, expected) in cases {
            let errors = run(bytes).unwrap_err();
            assert_eq!(errors.problems.len(), 1, "{errors}");
            assert_eq!(errors.problems[0].row, None, "{errors}");
            assert!(
                errors.to_string().contains(expected),
                "`{errors}` should contain `{expected}`"
            );
        }
    }

    #[test]
    fn row_numbers_count_spreadsheet_rows_across_a_bom_crlf_and_line_breaks_in_cells() {
        let text = "\u{FEFF}shipment_id,event,note\r\n\
                    SG-1,received,\"line one\r\nline two\"\r\n\
                    SG-404,received,\r\n";
        let errors = run(text.as_bytes()).unwrap_err();
        assert_eq!(errors.to_string(), "row 3: unknown shipment `SG-404`");
        let events =
            run("\u{FEFF}shipment_id,event,note\r\nSG-1,received,\"a\nb\"\r\n".as_bytes()).unwrap();
        assert_eq!(
            events[0].kind,
            EventKind::Received {
                supplier_ref: Some("a\nb".into())
            }
        );
    }

    #[test]
    fn import_errors_display_one_problem_per_line() {
        let text = sheet(&["SG-404,received,,,,,,,,,,,", "SG-1,teleported,,,,,,,,,,,"]);
        let errors = run(text.as_bytes()).unwrap_err();
        let shown = errors.to_string();
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 2, "{shown}");
        assert_eq!(lines[0], "row 2: unknown shipment `SG-404`");
        assert!(lines[1].starts_with("row 3: unknown event `teleported`"));
        let _: &dyn std::error::Error = &errors;
    }

    #[tokio::test]
    async fn sending_is_accepted_and_left_for_the_next_export() {
        let adapter = CsvAdapter;
        assert_eq!(adapter.kind(), "csv");
        let message = SupplierMessage {
            key: "SG-1.r1".into(),
            shipment_id: "SG-1".into(),
            sent_at: "2026-11-25T10:00:00Z".into(),
            body: super::super::MessageBody::Cancellation {
                reason: "order cancelled in Shopify".into(),
            },
        };
        assert_eq!(
            adapter.send(&message).await,
            SendOutcome::Accepted { supplier_ref: None }
        );
        assert_eq!(
            adapter.lookup("SG-1.r1").await,
            LookupOutcome::Received { supplier_ref: None }
        );
    }
}
