//! AfterShip Tracking webhooks.
//!
//! Signature: header `aftership-hmac-sha256` = base64(HMAC-SHA256(webhook secret, raw body)),
//! with no signed timestamp; AfterShip retries for about 68 hours, so a replay can only repeat a
//! delivery, which the store deduplicates on the webhook's `event_id`.
//!
//! Body (the fields read; everything else is ignored and kept in the raw delivery):
//!
//! ```json
//! {"event_id": "3f645f5e-530b-4062-8695-db6a64420af8", "event": "tracking_update", "ts": 1764064800,
//!  "msg": {"tracking_number": "9400111899223197428490", "slug": "usps", "tag": "InTransit",
//!          "subtag": "InTransit_002",
//!          "checkpoints": [{"checkpoint_time": "2026-11-25T09:14:00-05:00", "slug": "usps",
//!                           "message": "Accepted at USPS Origin Facility", "raw_tag": "OA",
//!                           "location": "ATLANTA, GA 30304", "tag": "InTransit",
//!                           "subtag": "InTransit_002"}]}}
//! ```
//!
//! AfterShip sends the whole checkpoint list on every update, so each checkpoint becomes a
//! [`TrackingEvent`] whose id is derived from the checkpoint itself ([`super::event_id`]): the
//! same checkpoint in the next webhook has the same id.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::{
    ExceptionKind, MAX_ID_LEN, MAX_TRACKING_NUMBER_LEN, Normalized, ParsedWebhook, PayloadError,
    Provider, SignatureError, TrackingEvent, check_key_text, event_id, parse_carrier_time,
};

/// The signature header, lowercase.
pub const HEADER: &str = "aftership-hmac-sha256";

/// AfterShip's subtag for an acceptance scan (USPS `OA`, "Accepted at USPS Origin Facility").
pub const ACCEPTANCE_SUBTAG: &str = "InTransit_002";

fn mac(secret: &[u8], body: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// The header value AfterShip would send for `body` signed with `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    BASE64.encode(mac(secret, body))
}

/// Checks the header against the raw body with any of `secrets` (current and previous during a
/// rotation), in constant time. No secret at all refuses everything: a provider whose secret is
/// missing from the configuration must not become one anyone can speak for.
pub fn verify<'a>(
    header: Option<&str>,
    body: &[u8],
    secrets: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing(HEADER))?;
    let presented = match BASE64.decode(header.trim()) {
        Ok(bytes) if bytes.len() == 32 => bytes,
        _ => {
            return Err(SignatureError::Malformed(
                HEADER,
                "not the base64 of a 32-byte HMAC-SHA256",
            ));
        }
    };
    super::verify_any(&presented, body, secrets, mac)
}

#[derive(Deserialize)]
struct Wire {
    event_id: String,
    event: String,
    msg: Msg,
}

#[derive(Deserialize)]
struct Msg {
    tracking_number: String,
    slug: String,
    #[serde(default)]
    checkpoints: Option<Vec<Checkpoint>>,
}

#[derive(Deserialize)]
struct Checkpoint {
    #[serde(default)]
    checkpoint_time: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    subtag_message: Option<String>,
    #[serde(default)]
    raw_tag: Option<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    city: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    country_iso3: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    subtag: Option<String>,
    #[serde(default)]
    slug: Option<String>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Reads a verified webhook body: the webhook's `event_id` (the delivery's dedupe id) and one
/// event per checkpoint, in the order the body lists them.
pub fn parse(body: &[u8]) -> Result<ParsedWebhook, PayloadError> {
    let wire: Wire = serde_json::from_slice(body)
        .map_err(|e| PayloadError(format!("not an AfterShip webhook: {e}")))?;
    check_key_text("event_id", &wire.event_id, MAX_ID_LEN)?;
    check_key_text("event", &wire.event, MAX_ID_LEN)?;
    let msg = wire.msg;
    check_key_text(
        "msg.tracking_number",
        &msg.tracking_number,
        MAX_TRACKING_NUMBER_LEN,
    )?;
    check_key_text("msg.slug", &msg.slug, MAX_ID_LEN)?;
    let tracking_number = msg.tracking_number.trim().to_string();
    let slug = msg.slug.trim().to_string();
    let mut events = Vec::new();
    for (i, checkpoint) in msg.checkpoints.unwrap_or_default().into_iter().enumerate() {
        events.push(read_checkpoint(i, checkpoint, &tracking_number, &slug)?);
    }
    Ok(ParsedWebhook {
        provider: Provider::AfterShip,
        delivery_id: wire.event_id,
        kind: wire.event,
        tracking_number,
        carrier: slug,
        events,
        stopped: false,
    })
}

fn read_checkpoint(
    i: usize,
    checkpoint: Checkpoint,
    tracking_number: &str,
    slug: &str,
) -> Result<TrackingEvent, PayloadError> {
    let field = |name: &str| format!("msg.checkpoints[{i}].{name}");
    let time = checkpoint
        .checkpoint_time
        .ok_or_else(|| PayloadError(format!("`{}` is missing", field("checkpoint_time"))))?;
    let occurred_at = parse_carrier_time(&time)
        .map_err(|e| PayloadError(format!("`{}`: {e}", field("checkpoint_time"))))?;
    // The carrier's words first; AfterShip's normalized message only when the carrier gave none.
    let raw_text = non_empty(checkpoint.message)
        .or(non_empty(checkpoint.subtag_message))
        .unwrap_or_default();
    let raw_code = non_empty(checkpoint.raw_tag);
    let location = non_empty(checkpoint.location).or_else(|| {
        let parts: Vec<String> = [checkpoint.city, checkpoint.state, checkpoint.country_iso3]
            .into_iter()
            .filter_map(non_empty)
            .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    });
    let tag = non_empty(checkpoint.tag);
    let subtag = non_empty(checkpoint.subtag);
    let normalized = normalize(tag.as_deref(), subtag.as_deref());
    let acceptance_scan = subtag.as_deref() == Some(ACCEPTANCE_SUBTAG);
    Ok(TrackingEvent {
        provider: Provider::AfterShip,
        event_id: event_id(
            Provider::AfterShip,
            tracking_number,
            occurred_at.unix_ms,
            raw_code.as_deref(),
            &raw_text,
            location.as_deref(),
        ),
        tracking_number: tracking_number.to_string(),
        carrier: non_empty(checkpoint.slug).unwrap_or_else(|| slug.to_string()),
        occurred_at,
        raw_text,
        raw_code,
        location,
        provider_code: subtag.or(tag),
        acceptance_scan,
        normalized,
        evidence: Vec::new(),
    })
}

/// Maps an AfterShip tag and subtag onto [`Normalized`]. A missing tag is taken from the
/// subtag's prefix (`InTransit_002` → `InTransit`).
pub fn normalize(tag: Option<&str>, subtag: Option<&str>) -> Normalized {
    let tag = tag.or_else(|| subtag.and_then(|s| s.split('_').next()));
    match tag {
        Some("Pending") => Normalized::NotFound,
        Some("InfoReceived") => Normalized::InfoReceived,
        // InTransit_002, the acceptance scan, is still in transit: `acceptance_scan` says more.
        Some("InTransit") => Normalized::InTransit,
        Some("OutForDelivery") => Normalized::OutForDelivery,
        Some("AvailableForPickup") => Normalized::AvailableForPickup,
        Some("AttemptFail") => Normalized::AttemptFailed,
        Some("Delivered") => Normalized::Delivered,
        Some("Expired") => Normalized::Expired,
        Some("Exception") => match subtag {
            Some("Exception_010") => Normalized::Returning,
            Some("Exception_011") => Normalized::Returned,
            other => Normalized::Exception(exception_kind(other)),
        },
        Some(other) => Normalized::Unknown(other.to_string()),
        None => Normalized::Unknown(String::new()),
    }
}

/// AfterShip's exception subtags (its "Delivery Sub-statuses" enum) by kind.
fn exception_kind(subtag: Option<&str>) -> ExceptionKind {
    match subtag {
        // Customer moved; incorrect address.
        Some("Exception_002") | Some("Exception_007") => ExceptionKind::Address,
        Some("Exception_003") => ExceptionKind::Refused,
        // Delayed in customs clearance; incorrect or missing documents.
        Some("Exception_004") | Some("Exception_018") => ExceptionKind::Customs,
        // External factors, processing issue, extreme weather.
        Some("Exception_005") | Some("Exception_016") | Some("Exception_017") => {
            ExceptionKind::Delayed
        }
        Some("Exception_012") => ExceptionKind::Damaged,
        Some("Exception_013") => ExceptionKind::Lost,
        // Generic, held for payment, pickup missed, rejected by carrier, and codes added later.
        _ => ExceptionKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"aftership-webhook-secret";

    fn body() -> Vec<u8> {
        br#"{"event_id":"3f645f5e-530b-4062-8695-db6a64420af8","event":"tracking_update","ts":1764064800,"is_tracking_first_tag":true,
        "msg":{"id":"grhrexm6t3hiwkjwq37jd003","tracking_number":"9400111899223197428490","slug":"usps","tag":"InTransit","subtag":"InTransit_002",
        "checkpoints":[
          {"checkpoint_time":"2026-11-24T18:02:00-05:00","slug":"usps","message":"Shipping Label Created, USPS Awaiting Item","raw_tag":"GX","location":"ATLANTA, GA 30304","tag":"InfoReceived","subtag":"InfoReceived_001"},
          {"checkpoint_time":"2026-11-25T09:14:00-05:00","slug":"usps","message":"Accepted at USPS Origin Facility","raw_tag":"OA","location":null,"city":"ATLANTA","state":"GA","country_iso3":"USA","tag":"InTransit","subtag":"InTransit_002","coordinates":[]},
          {"checkpoint_time":"2026-11-26T01:00:00","message":null,"subtag_message":"Departure Scan","tag":"InTransit","subtag":"InTransit_007"}
        ]}}"#
            .to_vec()
    }

    #[test]
    fn verifies_the_documented_scheme_with_rotation() {
        let body = body();
        let header = sign(SECRET, &body);
        assert_eq!(BASE64.decode(&header).unwrap().len(), 32);
        let secrets = [b"old".as_slice(), SECRET];
        assert_eq!(verify(Some(&header), &body, secrets), Ok(()));
        assert_eq!(
            verify(Some(&header), b"{}", secrets),
            Err(SignatureError::Mismatch),
            "a signature covers its own bytes only"
        );
        assert_eq!(
            verify(Some(&header), &body, [b"other".as_slice()]),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(None, &body, secrets),
            Err(SignatureError::Missing(HEADER))
        );
        let hex_instead = hex::encode(mac(SECRET, &body));
        assert!(matches!(
            verify(Some(&hex_instead), &body, secrets),
            Err(SignatureError::Malformed(..))
        ));
        assert!(matches!(
            verify(Some(""), &body, secrets),
            Err(SignatureError::Malformed(..))
        ));
        assert_eq!(
            verify(Some(&header), &body, std::iter::empty()),
            Err(SignatureError::NoSecret)
        );
    }

    #[test]
    fn reads_one_event_per_checkpoint_with_the_carriers_words() {
        let parsed = parse(&body()).unwrap();
        assert_eq!(parsed.delivery_id, "3f645f5e-530b-4062-8695-db6a64420af8");
        assert_eq!(parsed.kind, "tracking_update");
        assert_eq!(parsed.tracking_number, "9400111899223197428490");
        assert_eq!(parsed.carrier, "usps");
        assert!(!parsed.stopped);
        let [label, accepted, departed] = parsed.events.as_slice() else {
            panic!("three checkpoints: {:?}", parsed.events);
        };
        assert_eq!(label.normalized, Normalized::InfoReceived);
        assert!(!label.acceptance_scan);
        assert_eq!(label.raw_code.as_deref(), Some("GX"));

        assert_eq!(accepted.raw_text, "Accepted at USPS Origin Facility");
        assert_eq!(accepted.raw_code.as_deref(), Some("OA"));
        assert_eq!(accepted.location.as_deref(), Some("ATLANTA, GA, USA"));
        assert_eq!(accepted.provider_code.as_deref(), Some("InTransit_002"));
        assert!(accepted.acceptance_scan);
        assert_eq!(accepted.normalized, Normalized::InTransit);
        assert_eq!(accepted.carrier, "usps");
        assert_eq!(accepted.occurred_at.text, "2026-11-25T09:14:00-05:00");
        assert_eq!(
            accepted.occurred_at.unix_ms,
            parse_carrier_time("2026-11-25T14:14:00Z").unwrap().unix_ms
        );

        assert_eq!(
            departed.raw_text, "Departure Scan",
            "AfterShip's words when the carrier gave none"
        );
        assert_eq!(departed.raw_code, None);
        assert_eq!(departed.location, None);
        assert_eq!(
            departed.carrier, "usps",
            "the tracking's slug when the checkpoint has none"
        );
        // The same checkpoint in the next webhook is the same event.
        assert_eq!(
            parse(&body()).unwrap().events[1].event_id,
            accepted.event_id
        );
        assert_ne!(label.event_id, accepted.event_id);
    }

    #[test]
    fn a_webhook_without_checkpoints_has_no_events() {
        let body = br#"{"event_id":"e1","event":"tracking_update","msg":{"tracking_number":"1Z","slug":"ups","checkpoints":null}}"#;
        assert!(parse(body).unwrap().events.is_empty());
        let body = br#"{"event_id":"e1","event":"edd_revise","msg":{"tracking_number":"1Z","slug":"ups"}}"#;
        let parsed = parse(body).unwrap();
        assert_eq!(parsed.kind, "edd_revise");
        assert!(parsed.events.is_empty());
    }

    #[test]
    fn bodies_that_are_not_webhooks_name_the_problem() {
        let cases: [(&[u8], &str); 7] = [
            (b"not json", "not an AfterShip webhook"),
            (br#"{"event":"tracking_update","msg":{"tracking_number":"1Z","slug":"ups"}}"#, "missing field `event_id`"),
            (br#"{"event_id":"e","event":"tracking_update","msg":{"slug":"ups"}}"#, "missing field `tracking_number`"),
            (br#"{"event_id":"","event":"tracking_update","msg":{"tracking_number":"1Z","slug":"ups"}}"#, "`event_id` is empty"),
            (br#"{"event_id":"e","event":"tracking_update","msg":{"tracking_number":"1Z\u0000","slug":"ups"}}"#, "`msg.tracking_number` contains control characters"),
            (br#"{"event_id":"e","event":"tracking_update","msg":{"tracking_number":"1Z","slug":"ups","checkpoints":[{"message":"x"}]}}"#, "`msg.checkpoints[0].checkpoint_time` is missing"),
            (br#"{"event_id":"e","event":"tracking_update","msg":{"tracking_number":"1Z","slug":"ups","checkpoints":[{"checkpoint_time":"soon"}]}}"#, "`msg.checkpoints[0].checkpoint_time`: `soon` is not a date-time"),
        ];
        for (body, expected) in cases {
            let err = parse(body).unwrap_err().0;
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn normalizes_tags_and_subtags_per_the_facts_table() {
        let n = |tag: &str, subtag: &str| normalize(Some(tag), Some(subtag));
        assert_eq!(n("Pending", "Pending_001"), Normalized::NotFound);
        assert_eq!(
            n("InfoReceived", "InfoReceived_001"),
            Normalized::InfoReceived
        );
        assert_eq!(n("InTransit", "InTransit_001"), Normalized::InTransit);
        assert_eq!(n("InTransit", "InTransit_002"), Normalized::InTransit);
        assert_eq!(
            n("OutForDelivery", "OutForDelivery_001"),
            Normalized::OutForDelivery
        );
        assert_eq!(
            n("AvailableForPickup", "AvailableForPickup_001"),
            Normalized::AvailableForPickup
        );
        assert_eq!(
            n("AttemptFail", "AttemptFail_001"),
            Normalized::AttemptFailed
        );
        assert_eq!(n("Delivered", "Delivered_003"), Normalized::Delivered);
        assert_eq!(n("Exception", "Exception_010"), Normalized::Returning);
        assert_eq!(n("Exception", "Exception_011"), Normalized::Returned);
        assert_eq!(
            n("Exception", "Exception_013"),
            Normalized::Exception(ExceptionKind::Lost)
        );
        assert_eq!(
            n("Exception", "Exception_012"),
            Normalized::Exception(ExceptionKind::Damaged)
        );
        assert_eq!(
            n("Exception", "Exception_004"),
            Normalized::Exception(ExceptionKind::Customs)
        );
        assert_eq!(
            n("Exception", "Exception_003"),
            Normalized::Exception(ExceptionKind::Refused)
        );
        assert_eq!(
            n("Exception", "Exception_007"),
            Normalized::Exception(ExceptionKind::Address)
        );
        assert_eq!(
            n("Exception", "Exception_099"),
            Normalized::Exception(ExceptionKind::Other)
        );
        assert_eq!(n("Expired", "Expired_001"), Normalized::Expired);
        assert_eq!(
            n("Teleported", "Teleported_001"),
            Normalized::Unknown("Teleported".into())
        );
        assert_eq!(
            normalize(None, Some("Delivered_001")),
            Normalized::Delivered
        );
        assert_eq!(normalize(None, None), Normalized::Unknown(String::new()));
    }
}
