//! Carrier tracking (SPEC §7, `../shared/tracking/FACTS.md`): what tracking providers report
//! about parcels, read into one domain type, and the acceptance latch built on it.
//!
//! A provider's webhook is verified over its raw bytes ([`aftership::verify`],
//! [`seventeen::verify`]), stored raw by the intake, and read here into [`TrackingEvent`]s: one per
//! carrier checkpoint, each keeping the carrier's own words (raw text, raw code, location, time)
//! as evidence next to a [`Normalized`] status that is only a hint. [`acceptance`] decides from
//! those events whether, and when, the carrier really has the parcel.
//!
//! Every type here is stored with postcard, so none of them uses `serde_json::Value`, untagged
//! or internally tagged enums, or skipped fields: postcard can only read back what it can
//! describe by position.

pub mod acceptance;
pub mod aftership;
pub mod manual;
pub mod seventeen;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::order::Timestamp;

/// The longest tracking number accepted. Real ones are under 40 characters; the bound keeps a
/// stranger's input out of store keys and logs.
pub const MAX_TRACKING_NUMBER_LEN: usize = 100;
/// The longest delivery id accepted (it becomes part of a store key).
pub const MAX_ID_LEN: usize = 200;

/// Who reported a carrier event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Provider {
    /// AfterShip Tracking webhooks.
    #[serde(rename = "aftership")]
    AfterShip,
    /// 17TRACK push notifications.
    #[serde(rename = "17track")]
    SeventeenTrack,
    /// A supplier's adapter relaying what the carrier said.
    #[serde(rename = "supplier")]
    Supplier,
    /// An operator recording a scan by hand, with evidence.
    #[serde(rename = "manual")]
    Manual,
}

impl Provider {
    /// The provider's name as configured and as used in routes and topics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Provider::AfterShip => "aftership",
            Provider::SeventeenTrack => "17track",
            Provider::Supplier => "supplier",
            Provider::Manual => "manual",
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The providers that post webhooks to shipgate, one route each
/// (`/webhooks/tracking/<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookProvider {
    /// `POST /webhooks/tracking/aftership`.
    AfterShip,
    /// `POST /webhooks/tracking/17track`.
    SeventeenTrack,
}

/// The names a configuration may give a tracking provider with a webhook.
pub const WEBHOOK_PROVIDERS: [&str; 2] = ["aftership", "17track"];

impl WebhookProvider {
    /// The provider of this name (exactly as in [`WEBHOOK_PROVIDERS`]).
    pub fn from_name(name: &str) -> Option<WebhookProvider> {
        match name {
            "aftership" => Some(WebhookProvider::AfterShip),
            "17track" => Some(WebhookProvider::SeventeenTrack),
            _ => None,
        }
    }

    /// The provider's name.
    pub fn name(&self) -> &'static str {
        self.provider().as_str()
    }

    /// The provider its events are attributed to.
    pub fn provider(&self) -> Provider {
        match self {
            WebhookProvider::AfterShip => Provider::AfterShip,
            WebhookProvider::SeventeenTrack => Provider::SeventeenTrack,
        }
    }

    /// The header that carries the signature (lowercase).
    pub fn signature_header(&self) -> &'static str {
        match self {
            WebhookProvider::AfterShip => aftership::HEADER,
            WebhookProvider::SeventeenTrack => seventeen::HEADER,
        }
    }

    /// Checks the signature header against the raw body with any of `secrets`.
    pub fn verify<'a>(
        &self,
        header: Option<&str>,
        body: &[u8],
        secrets: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), SignatureError> {
        match self {
            WebhookProvider::AfterShip => aftership::verify(header, body, secrets),
            WebhookProvider::SeventeenTrack => seventeen::verify(header, body, secrets),
        }
    }

    /// Reads a verified body.
    pub fn parse(&self, body: &[u8]) -> Result<ParsedWebhook, PayloadError> {
        match self {
            WebhookProvider::AfterShip => aftership::parse(body),
            WebhookProvider::SeventeenTrack => seventeen::parse(body),
        }
    }
}

/// Why a provider's signature was refused. The texts name the problem, never a secret or a
/// digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is absent.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// The header cannot be a signature of this scheme (wrong encoding or length).
    #[error("malformed {0} header: {1}")]
    Malformed(&'static str, &'static str),
    /// A well-formed signature made with none of the configured secrets, or over other bytes.
    #[error("signature does not match the body")]
    Mismatch,
    /// The provider is configured without a secret: nothing it sends can be trusted.
    #[error("no secret is configured for this provider")]
    NoSecret,
}

impl SignatureError {
    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            SignatureError::Missing(_) => "missing_signature",
            SignatureError::Malformed(..) => "malformed_signature",
            SignatureError::Mismatch => "bad_signature",
            SignatureError::NoSecret => "no_secret",
        }
    }
}

/// Why a verified body could not be read; the text names the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(pub String);

/// What kind of trouble an exception status reports (the facts' table: lost, damaged, customs,
/// refused, address, cancelled, disposed), plus delays and what fits none of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExceptionKind {
    Lost,
    Damaged,
    Customs,
    Refused,
    Address,
    Cancelled,
    Disposed,
    Delayed,
    /// A provider's generic or unknown exception.
    Other,
}

/// A provider's status mapped onto one vocabulary (the facts' "Normalized status" table). It is
/// a hint: providers apply their tags loosely, so acceptance also reads the raw text and code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Normalized {
    NotFound,
    InfoReceived,
    InTransit,
    OutForDelivery,
    AvailableForPickup,
    AttemptFailed,
    Delivered,
    Returning,
    Returned,
    Exception(ExceptionKind),
    Expired,
    /// A status this build does not know, as the provider spelt it (providers add values
    /// without notice).
    Unknown(String),
}

impl Normalized {
    /// Whether the status can only come from a carrier that holds the parcel: a scan in
    /// transit, out for delivery, at a pickup point, a delivery attempt, a delivery.
    /// Pre-advice wording can still make a single event of these kinds not count.
    pub fn is_physical(&self) -> bool {
        matches!(
            self,
            Normalized::InTransit
                | Normalized::OutForDelivery
                | Normalized::AvailableForPickup
                | Normalized::AttemptFailed
                | Normalized::Delivered
        )
    }

    /// Whether the parcel's journey is over: nothing more will move.
    pub fn is_final(&self) -> bool {
        matches!(self, Normalized::Delivered | Normalized::Returned)
    }
}

impl std::fmt::Display for Normalized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Normalized::Exception(kind) => write!(f, "Exception({kind:?})"),
            Normalized::Unknown(raw) => write!(f, "Unknown({raw})"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// One carrier event, from whichever provider, with the carrier's own words kept as evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackingEvent {
    /// Who reported it.
    pub provider: Provider,
    /// A stable id for this very carrier event, the same each time a provider repeats it
    /// ([`event_id`]), so that evidence is recorded once.
    pub event_id: String,
    /// The tracking number, as the provider gave it.
    pub tracking_number: String,
    /// The carrier as the provider names it: an AfterShip slug (`usps`), a 17TRACK carrier
    /// code (`21051`), or what a supplier or operator wrote.
    pub carrier: String,
    /// When the carrier says it happened (the checkpoint's own time, not when it was reported).
    pub occurred_at: Timestamp,
    /// The carrier's message (`Accepted at USPS Origin Facility`).
    pub raw_text: String,
    /// The carrier's own status code when the provider passes it on: AfterShip `raw_tag`
    /// (`OA`, `GWMS_ACCEPT`), 17TRACK `sub_status`, a supplier's code.
    pub raw_code: Option<String>,
    /// Where it happened, as the carrier wrote it.
    pub location: Option<String>,
    /// The provider's own classification: AfterShip subtag (`InTransit_002`) or tag, 17TRACK
    /// `sub_status` or stage. Kept because the acceptance rule reads it, and as evidence.
    pub provider_code: Option<String>,
    /// The provider classified this as an explicit acceptance scan (AfterShip `InTransit_002`,
    /// 17TRACK `InTransit_PickedUp` or stage `PickedUp`; for a manual scan, the operator said
    /// so). A claim the acceptance rule still checks against pre-advice wording and time.
    pub acceptance_scan: bool,
    /// The status mapped onto shipgate's vocabulary.
    pub normalized: Normalized,
    /// What a manual scan rests on: references to a receipt or photo as `sha256:<64 hex>`,
    /// optionally followed by `=<URL or file name>`. Empty for providers' events, whose
    /// evidence is the provider's own record. (postcard ignores `default`: it is there for
    /// the JSON form.)
    #[serde(default)]
    pub evidence: Vec<String>,
}

/// The id of a carrier event: the provider's name and a digest of what identifies the event
/// (tracking number, instant, raw code, raw text, location). Providers resend the same
/// checkpoints (AfterShip sends the whole list on every update), so the id must be derived from
/// the event itself; the provider's classification and the carrier's name are left out because
/// providers revise those for events that did not change.
pub fn event_id(
    provider: Provider,
    tracking_number: &str,
    occurred_at_ms: i64,
    raw_code: Option<&str>,
    raw_text: &str,
    location: Option<&str>,
) -> String {
    let mut digest = Sha256::new();
    for part in [
        tracking_number,
        &occurred_at_ms.to_string(),
        raw_code.unwrap_or(""),
        raw_text,
        location.unwrap_or(""),
    ] {
        // Length-prefixed so that moving text from one field to the next changes the id.
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part.as_bytes());
    }
    let digest = digest.finalize();
    format!("{}:{}", provider.as_str(), hex::encode(&digest[..16]))
}

/// A verified webhook read into shipgate's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedWebhook {
    /// Who sent it.
    pub provider: Provider,
    /// The id the delivery is deduplicated on (see each provider's module for how it is made).
    pub delivery_id: String,
    /// The provider's event name (`tracking_update`, `TRACKING_UPDATED`, `TRACKING_STOPPED`).
    pub kind: String,
    /// The tracking number the webhook is about.
    pub tracking_number: String,
    /// The carrier as the provider names it at the tracking level.
    pub carrier: String,
    /// One event per carrier checkpoint in the body, in the order the body lists them (which
    /// need not be chronological).
    pub events: Vec<TrackingEvent>,
    /// The provider stopped tracking this number (17TRACK `TRACKING_STOPPED`): no further
    /// events will come from it.
    pub stopped: bool,
}

/// Checks a text that becomes part of a store key or a log line: present, bounded, and free of
/// control characters (a NUL would split a composite key).
pub(crate) fn check_key_text(field: &str, value: &str, max: usize) -> Result<(), PayloadError> {
    if value.trim().is_empty() {
        return Err(PayloadError(format!("`{field}` is empty")));
    }
    if value.chars().count() > max {
        return Err(PayloadError(format!(
            "`{field}` is longer than {max} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(PayloadError(format!(
            "`{field}` contains control characters"
        )));
    }
    Ok(())
}

/// Reads a carrier's time. Carriers give RFC 3339 with an offset (`2026-11-25T10:00:00+08:00`),
/// a local time without one (`2026-11-25T10:00:00`, AfterShip's "timezone of the checkpoint"),
/// or only a date. The last two are read as UTC: the true instant is unknown and may be up to
/// 14 hours away, which the acceptance rule's day of slack before the label absorbs. The text is
/// kept as received.
pub fn parse_carrier_time(text: &str) -> Result<Timestamp, String> {
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;

    let trimmed = text.trim();
    if let Ok(at) = time::OffsetDateTime::parse(trimmed, &Rfc3339) {
        return Ok(timestamp(at, text));
    }
    // Some carriers separate date and time with a space.
    let normalized = match trimmed.as_bytes().get(10) {
        Some(b' ') => format!("{}T{}", &trimmed[..10], &trimmed[11..]),
        _ => trimmed.to_string(),
    };
    if let Ok(at) = time::OffsetDateTime::parse(&normalized, &Rfc3339) {
        return Ok(timestamp(at, text));
    }
    let local = format_description!(
        version = 2,
        "[year]-[month]-[day]T[hour]:[minute][optional [:[second][optional [.[subsecond]]]]]"
    );
    if let Ok(at) = time::PrimitiveDateTime::parse(&normalized, &local) {
        return Ok(timestamp(at.assume_utc(), text));
    }
    let day = format_description!("[year]-[month]-[day]");
    if let Ok(date) = time::Date::parse(trimmed, &day) {
        return Ok(timestamp(date.midnight().assume_utc(), text));
    }
    Err(format!(
        "`{text}` is not a date-time (expected e.g. 2026-11-25T10:00:00+08:00)"
    ))
}

fn timestamp(at: time::OffsetDateTime, text: &str) -> Timestamp {
    Timestamp {
        unix_ms: (at.unix_timestamp_nanos() / 1_000_000) as i64,
        text: text.to_string(),
    }
}

/// Constant-time comparison of a presented digest with an expected one.
pub(crate) fn digest_matches(presented: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    presented.len() == expected.len() && bool::from(presented.ct_eq(expected))
}

/// Checks a presented 32-byte digest against the digest of the body under each secret, in
/// constant time; refuses when no secret is configured. `digest` is the provider's scheme.
pub(crate) fn verify_any<'a>(
    presented: &[u8],
    body: &[u8],
    secrets: impl IntoIterator<Item = &'a [u8]>,
    digest: impl Fn(&[u8], &[u8]) -> [u8; 32],
) -> Result<(), SignatureError> {
    let mut any_secret = false;
    for secret in secrets {
        any_secret = true;
        if digest_matches(presented, &digest(secret, body)) {
            return Ok(());
        }
    }
    if !any_secret {
        return Err(SignatureError::NoSecret);
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carrier_times_in_every_shape_carriers_use() {
        let utc = |t: &str| parse_carrier_time(t).unwrap().unix_ms;
        let base = utc("2026-11-25T10:00:00Z");
        assert_eq!(utc("2026-11-25T18:00:00+08:00"), base);
        assert_eq!(utc("2026-11-25 10:00:00Z"), base);
        assert_eq!(utc("2026-11-25T10:00:00"), base, "local time read as UTC");
        assert_eq!(utc("2026-11-25T10:00"), base);
        assert_eq!(utc("2026-11-25T10:00:00.000"), base);
        assert_eq!(utc("2026-11-25 10:00:00"), base);
        assert_eq!(utc("2026-11-25"), base - 10 * 3_600_000);
        let kept = parse_carrier_time("2026-11-25T18:00:00+08:00").unwrap();
        assert_eq!(
            kept.text, "2026-11-25T18:00:00+08:00",
            "the text is kept as sent"
        );
        let err = parse_carrier_time("yesterday").unwrap_err();
        assert!(err.contains("`yesterday` is not a date-time"), "{err}");
    }

    #[test]
    fn event_ids_are_stable_and_tell_fields_apart() {
        let id = |code: Option<&str>, text: &str| {
            event_id(
                Provider::AfterShip,
                "9400",
                1,
                code,
                text,
                Some("ATLANTA, GA"),
            )
        };
        assert_eq!(id(Some("OA"), "Accepted"), id(Some("OA"), "Accepted"));
        assert!(id(Some("OA"), "Accepted").starts_with("aftership:"));
        assert_ne!(id(Some("OA"), "Accepted"), id(Some("OAA"), "ccepted"));
        assert_ne!(
            event_id(Provider::AfterShip, "9400", 1, None, "t", None),
            event_id(Provider::SeventeenTrack, "9400", 1, None, "t", None)
        );
    }

    #[test]
    fn events_round_trip_through_postcard() {
        let event = TrackingEvent {
            provider: Provider::SeventeenTrack,
            event_id: "17track:00".into(),
            tracking_number: "LX123456789CN".into(),
            carrier: "3011".into(),
            occurred_at: parse_carrier_time("2026-11-25T10:00:00+08:00").unwrap(),
            raw_text: "Picked up".into(),
            raw_code: Some("InTransit_PickedUp".into()),
            location: None,
            provider_code: Some("InTransit_PickedUp".into()),
            acceptance_scan: true,
            normalized: Normalized::Exception(ExceptionKind::Customs),
            evidence: vec![format!("sha256:{}", "ab".repeat(32))],
        };
        let bytes = postcard::to_stdvec(&event).unwrap();
        let back: TrackingEvent = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.occurred_at.text, event.occurred_at.text);
        let unknown = Normalized::Unknown("Teleported".into());
        let bytes = postcard::to_stdvec(&unknown).unwrap();
        assert_eq!(postcard::from_bytes::<Normalized>(&bytes).unwrap(), unknown);
    }

    #[test]
    fn key_texts_refuse_what_would_break_a_key() {
        assert!(check_key_text("number", "LX1", 10).is_ok());
        assert_eq!(
            check_key_text("number", " ", 10).unwrap_err().0,
            "`number` is empty"
        );
        assert!(
            check_key_text("number", "a\0b", 10)
                .unwrap_err()
                .0
                .contains("control")
        );
        assert!(
            check_key_text("number", &"9".repeat(11), 10)
                .unwrap_err()
                .0
                .contains("longer than 10")
        );
    }
}
