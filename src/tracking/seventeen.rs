//! 17TRACK push notifications (API v2.x webhooks).
//!
//! Signature: header `sign` = hex(SHA-256(raw body + "/" + security key)). This is a plain
//! SHA-256 over the body and the key, not an HMAC, and the facts mark it (unverified): it rests
//! on third-party implementations only, so check it against a real delivery before relying on
//! it. It has no signed timestamp; a replay can only repeat a delivery, which the store
//! deduplicates.
//!
//! Bodies (the fields read; everything else is ignored and kept in the raw delivery):
//!
//! ```json
//! {"event": "TRACKING_UPDATED",
//!  "data": {"number": "LX123456789CN", "carrier": 3011,
//!           "track_info": {"latest_status": {"status": "InTransit", "sub_status": "InTransit_PickedUp"},
//!                          "tracking": {"providers": [{"provider": {"key": 190271, "name": "Cainiao"},
//!                            "events": [{"time_iso": "2026-11-25T14:20:00+08:00", "time_utc": "2026-11-25T06:20:00Z",
//!                                        "description": "Picked up", "location": "Shenzhen",
//!                                        "stage": "PickedUp", "sub_status": "InTransit_PickedUp"}]}]}}}}
//! {"event": "TRACKING_STOPPED", "data": {"number": "LX123456789CN", "carrier": 3011}}
//! ```
//!
//! The body carries no id of its own, so the dedupe id is derived from what it reports
//! ([`delivery_id`]): the event name, number, carrier, the time of the latest event, how many
//! events there are and the latest sub-status. A retry of the same push has the same id; a push
//! that adds an event (even one older than the latest, which carriers backfill) or changes the
//! status has another.

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{
    ExceptionKind, MAX_TRACKING_NUMBER_LEN, Normalized, ParsedWebhook, PayloadError, Provider,
    SignatureError, TrackingEvent, check_key_text, event_id, parse_carrier_time,
};

/// The signature header, lowercase.
pub const HEADER: &str = "sign";
/// Tracking information changed.
pub const TRACKING_UPDATED: &str = "TRACKING_UPDATED";
/// 17TRACK stopped tracking the number; nothing more will come for it.
pub const TRACKING_STOPPED: &str = "TRACKING_STOPPED";

fn digest(key: &[u8], body: &[u8]) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(body);
    digest.update(b"/");
    digest.update(key);
    digest.finalize().into()
}

/// The header value 17TRACK would send for `body` with security key `key`.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    hex::encode(digest(key, body))
}

/// Checks the header against the raw body with any of `keys`, in constant time. No key at all
/// refuses everything.
pub fn verify<'a>(
    header: Option<&str>,
    body: &[u8],
    keys: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing(HEADER))?;
    let presented = match hex::decode(header.trim()) {
        Ok(bytes) if bytes.len() == 32 => bytes,
        _ => {
            return Err(SignatureError::Malformed(
                HEADER,
                "not the hex of a 32-byte SHA-256",
            ));
        }
    };
    super::verify_any(&presented, body, keys, digest)
}

#[derive(Deserialize)]
struct Wire {
    event: String,
    data: Data,
}

/// 17TRACK's codes are numbers (`3011`); a string is taken as it is.
#[derive(Deserialize)]
#[serde(untagged)]
enum Code {
    Number(i64),
    Text(String),
}

impl Code {
    fn text(self) -> String {
        match self {
            Code::Number(n) => n.to_string(),
            Code::Text(t) => t,
        }
    }
}

#[derive(Deserialize)]
struct Data {
    number: String,
    #[serde(default)]
    carrier: Option<Code>,
    #[serde(default)]
    track_info: Option<TrackInfo>,
}

#[derive(Deserialize)]
struct TrackInfo {
    #[serde(default)]
    latest_status: Option<LatestStatus>,
    #[serde(default)]
    latest_event: Option<Event>,
    #[serde(default)]
    tracking: Option<Tracking>,
}

#[derive(Deserialize)]
struct LatestStatus {
    #[serde(default)]
    sub_status: Option<String>,
}

#[derive(Deserialize)]
struct Tracking {
    #[serde(default)]
    providers: Option<Vec<ProviderEvents>>,
}

#[derive(Deserialize)]
struct ProviderEvents {
    #[serde(default)]
    provider: Option<ProviderInfo>,
    #[serde(default)]
    events: Option<Vec<Event>>,
}

#[derive(Deserialize)]
struct ProviderInfo {
    #[serde(default)]
    key: Option<Code>,
}

#[derive(Deserialize)]
struct Event {
    #[serde(default)]
    time_iso: Option<String>,
    #[serde(default)]
    time_utc: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    sub_status: Option<String>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Reads a verified push: its derived dedupe id and one event per carrier event, from every
/// carrier that handled the parcel (`track_info.tracking.providers[].events[]`), or from
/// `latest_event` alone when the body lists none.
pub fn parse(body: &[u8]) -> Result<ParsedWebhook, PayloadError> {
    let wire: Wire = serde_json::from_slice(body)
        .map_err(|e| PayloadError(format!("not a 17TRACK push: {e}")))?;
    let stopped = match wire.event.as_str() {
        TRACKING_UPDATED => false,
        TRACKING_STOPPED => true,
        other => {
            return Err(PayloadError(format!(
                "unknown event `{}` (expected {TRACKING_UPDATED} or {TRACKING_STOPPED})",
                other.chars().take(40).collect::<String>()
            )));
        }
    };
    let data = wire.data;
    check_key_text("data.number", &data.number, MAX_TRACKING_NUMBER_LEN)?;
    let number = data.number.trim().to_string();
    let carrier = data.carrier.map(Code::text).unwrap_or_default();
    // The carrier is part of the dedupe id, which becomes a store key: it may be absent, but
    // not long or made of control characters.
    if carrier.chars().count() > 40 || carrier.chars().any(char::is_control) {
        return Err(PayloadError(
            "`data.carrier` is not a 17TRACK carrier code".to_string(),
        ));
    }
    let mut events = Vec::new();
    let mut latest_sub_status = None;
    if let Some(info) = data.track_info {
        latest_sub_status = info.latest_status.and_then(|s| non_empty(s.sub_status));
        let providers = info.tracking.and_then(|t| t.providers).unwrap_or_default();
        for (p, provider) in providers.into_iter().enumerate() {
            // Each event is attributed to the carrier that reported it (a parcel goes from
            // Cainiao to USPS); the tracking's carrier when 17TRACK does not say.
            let provider_carrier = provider
                .provider
                .and_then(|p| p.key)
                .map(Code::text)
                .unwrap_or_else(|| carrier.clone());
            for (e, event) in provider.events.unwrap_or_default().into_iter().enumerate() {
                let field = format!("data.track_info.tracking.providers[{p}].events[{e}]");
                events.push(read_event(&field, event, &number, &provider_carrier)?);
            }
        }
        if let (true, Some(latest)) = (events.is_empty(), info.latest_event) {
            events.push(read_event(
                "data.track_info.latest_event",
                latest,
                &number,
                &carrier,
            )?);
        }
    }
    let delivery_id = delivery_id(
        &wire.event,
        &number,
        &carrier,
        &events,
        latest_sub_status.as_deref(),
    );
    Ok(ParsedWebhook {
        provider: Provider::SeventeenTrack,
        delivery_id,
        kind: wire.event,
        tracking_number: number,
        carrier,
        events,
        stopped,
    })
}

/// The dedupe id of a push, which has none of its own:
/// `<event>/<number>/<carrier>/<latest event's Unix ms or "none">/<event count>/<latest sub-status>`.
/// The number and the latest event's time identify the update, as the facts suggest; the count
/// and sub-status tell apart pushes that backfill an older event or change the status without a
/// new event, so neither is mistaken for a repeat and dropped.
pub fn delivery_id(
    event: &str,
    number: &str,
    carrier: &str,
    events: &[TrackingEvent],
    latest_sub_status: Option<&str>,
) -> String {
    let latest = events
        .iter()
        .map(|e| e.occurred_at.unix_ms)
        .max()
        .map_or_else(|| "none".to_string(), |ms| ms.to_string());
    format!(
        "{event}/{number}/{carrier}/{latest}/{}/{}",
        events.len(),
        latest_sub_status.unwrap_or("-")
    )
}

fn read_event(
    field: &str,
    event: Event,
    number: &str,
    carrier: &str,
) -> Result<TrackingEvent, PayloadError> {
    let time_iso = non_empty(event.time_iso);
    let time_utc = non_empty(event.time_utc);
    let read = |name: &str, text: &str| {
        parse_carrier_time(text).map_err(|e| PayloadError(format!("`{field}.{name}`: {e}")))
    };
    // The text kept is the carrier's local time; the instant comes from `time_utc` when 17TRACK
    // gives it, because a local time without an offset would be read as UTC.
    let occurred_at = match (time_iso, time_utc) {
        (Some(iso), Some(utc)) => {
            let mut at = read("time_iso", &iso)?;
            at.unix_ms = read("time_utc", &utc)?.unix_ms;
            at
        }
        (Some(iso), None) => read("time_iso", &iso)?,
        (None, Some(utc)) => read("time_utc", &utc)?,
        (None, None) => {
            return Err(PayloadError(format!(
                "`{field}` has neither `time_iso` nor `time_utc`"
            )));
        }
    };
    let raw_text = non_empty(event.description).unwrap_or_default();
    let location = non_empty(event.location);
    let sub_status = non_empty(event.sub_status);
    let stage = non_empty(event.stage);
    let normalized = normalize(sub_status.as_deref(), stage.as_deref());
    let acceptance_scan =
        sub_status.as_deref() == Some("InTransit_PickedUp") || stage.as_deref() == Some("PickedUp");
    Ok(TrackingEvent {
        provider: Provider::SeventeenTrack,
        event_id: event_id(
            Provider::SeventeenTrack,
            number,
            occurred_at.unix_ms,
            sub_status.as_deref(),
            &raw_text,
            location.as_deref(),
        ),
        tracking_number: number.to_string(),
        carrier: carrier.to_string(),
        occurred_at,
        raw_text,
        raw_code: sub_status.clone(),
        location,
        provider_code: sub_status.or(stage),
        acceptance_scan,
        normalized,
        evidence: Vec::new(),
    })
}

/// Maps a 17TRACK sub-status (`InTransit_PickedUp`), or the milestone stage when there is no
/// sub-status (`PickedUp`), onto [`Normalized`].
pub fn normalize(sub_status: Option<&str>, stage: Option<&str>) -> Normalized {
    if let Some(sub_status) = sub_status {
        let (status, detail) = sub_status.split_once('_').unwrap_or((sub_status, ""));
        return match status {
            "NotFound" => Normalized::NotFound,
            "InfoReceived" => Normalized::InfoReceived,
            "InTransit" => Normalized::InTransit,
            "Expired" => Normalized::Expired,
            "AvailableForPickup" => Normalized::AvailableForPickup,
            "OutForDelivery" => Normalized::OutForDelivery,
            "DeliveryFailure" => Normalized::AttemptFailed,
            "Delivered" => Normalized::Delivered,
            "Exception" => match detail {
                "Returning" => Normalized::Returning,
                "Returned" => Normalized::Returned,
                "Lost" => Normalized::Exception(ExceptionKind::Lost),
                "Damage" => Normalized::Exception(ExceptionKind::Damaged),
                "Destroyed" => Normalized::Exception(ExceptionKind::Disposed),
                "Cancel" => Normalized::Exception(ExceptionKind::Cancelled),
                "Rejected" => Normalized::Exception(ExceptionKind::Refused),
                // Held by customs or another authority.
                "Security" => Normalized::Exception(ExceptionKind::Customs),
                "Delayed" => Normalized::Exception(ExceptionKind::Delayed),
                _ => Normalized::Exception(ExceptionKind::Other),
            },
            _ => Normalized::Unknown(sub_status.to_string()),
        };
    }
    match stage {
        Some("InfoReceived") => Normalized::InfoReceived,
        Some("PickedUp") | Some("Departure") | Some("Arrival") => Normalized::InTransit,
        Some("AvailableForPickup") => Normalized::AvailableForPickup,
        Some("OutForDelivery") => Normalized::OutForDelivery,
        Some("Delivered") => Normalized::Delivered,
        Some("Returning") => Normalized::Returning,
        Some("Returned") => Normalized::Returned,
        Some(other) => Normalized::Unknown(other.to_string()),
        None => Normalized::Unknown(String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"17track-security-key";

    fn body() -> Vec<u8> {
        br#"{"event":"TRACKING_UPDATED","data":{"number":"LX123456789CN","carrier":3011,"param":null,"tag":null,
        "track_info":{"latest_status":{"status":"InTransit","sub_status":"InTransit_Departure","sub_status_descr":null},
        "latest_event":{"time_iso":"2026-11-26T08:00:00+08:00","description":"Departed"},
        "tracking":{"providers_hash":1,"providers":[
          {"provider":{"key":190271,"name":"Cainiao"},"events":[
            {"time_iso":"2026-11-26T08:00:00+08:00","time_utc":"2026-11-26T00:00:00Z","description":"Departed from sorting center","location":"Shenzhen","stage":"Departure","sub_status":"InTransit_Departure"},
            {"time_iso":"2026-11-25T14:20:00+08:00","time_utc":"2026-11-25T06:20:00Z","description":"Picked up","location":"Shenzhen","stage":"PickedUp","sub_status":"InTransit_PickedUp"},
            {"time_iso":"2026-11-25T09:00:00","time_utc":"2026-11-25T01:00:00Z","description":"Order received successfully","location":null,"stage":"InfoReceived","sub_status":"InfoReceived"}
          ]}]}}}}"#
            .to_vec()
    }

    #[test]
    fn verifies_the_plain_sha256_scheme() {
        let body = body();
        let header = sign(KEY, &body);
        assert_eq!(header.len(), 64);
        assert_eq!(
            verify(Some(&header), &body, [b"old".as_slice(), KEY]),
            Ok(())
        );
        assert_eq!(
            verify(Some(&header.to_uppercase()), &body, [KEY]),
            Ok(()),
            "hex case does not matter"
        );
        assert_eq!(
            verify(Some(&header), b"{}", [KEY]),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(None, &body, [KEY]),
            Err(SignatureError::Missing("sign"))
        );
        assert!(matches!(
            verify(Some("abc"), &body, [KEY]),
            Err(SignatureError::Malformed(..))
        ));
        assert_eq!(
            verify(Some(&header), &body, std::iter::empty()),
            Err(SignatureError::NoSecret)
        );
        // Not an HMAC: a body signed as AfterShip does is refused.
        let hmac = super::super::aftership::sign(KEY, &body);
        assert!(verify(Some(&hmac), &body, [KEY]).is_err());
    }

    #[test]
    fn reads_every_carrier_event_with_its_own_words() {
        let parsed = parse(&body()).unwrap();
        assert_eq!(parsed.kind, TRACKING_UPDATED);
        assert_eq!(parsed.tracking_number, "LX123456789CN");
        assert_eq!(parsed.carrier, "3011");
        assert!(!parsed.stopped);
        assert_eq!(parsed.events.len(), 3, "latest_event is not counted twice");
        let picked = &parsed.events[1];
        assert_eq!(picked.raw_text, "Picked up");
        assert_eq!(picked.raw_code.as_deref(), Some("InTransit_PickedUp"));
        assert_eq!(
            picked.carrier, "190271",
            "the carrier that reported the event"
        );
        assert_eq!(picked.location.as_deref(), Some("Shenzhen"));
        assert!(picked.acceptance_scan);
        assert_eq!(picked.normalized, Normalized::InTransit);
        assert_eq!(picked.occurred_at.text, "2026-11-25T14:20:00+08:00");
        let order = &parsed.events[2];
        assert_eq!(order.normalized, Normalized::InfoReceived);
        assert!(!order.acceptance_scan);
        assert_eq!(
            order.occurred_at.text, "2026-11-25T09:00:00",
            "the local text is kept"
        );
        assert_eq!(
            order.occurred_at.unix_ms,
            parse_carrier_time("2026-11-25T01:00:00Z").unwrap().unix_ms,
            "the instant comes from time_utc"
        );
        let latest_ms = parse_carrier_time("2026-11-26T00:00:00Z").unwrap().unix_ms;
        assert_eq!(
            parsed.delivery_id,
            format!("TRACKING_UPDATED/LX123456789CN/3011/{latest_ms}/3/InTransit_Departure")
        );
    }

    #[test]
    fn the_dedupe_id_changes_with_what_the_push_reports() {
        let first = parse(&body()).unwrap().delivery_id;
        assert_eq!(
            parse(&body()).unwrap().delivery_id,
            first,
            "a retry is a repeat"
        );
        // Another formatting of the same report is the same report.
        let reformatted: serde_json::Value = serde_json::from_slice(&body()).unwrap();
        let reformatted = serde_json::to_vec_pretty(&reformatted).unwrap();
        assert_eq!(parse(&reformatted).unwrap().delivery_id, first);
        // A backfilled older event, or a new status, is news.
        let text = String::from_utf8(body()).unwrap();
        let backfilled = text.replace(
            r#"{"time_iso":"2026-11-25T09:00:00""#,
            r#"{"time_iso":"2026-11-25T08:00:00","description":"Label printed"},{"time_iso":"2026-11-25T09:00:00""#,
        );
        assert_ne!(parse(backfilled.as_bytes()).unwrap().delivery_id, first);
        let expired = text.replace(
            r#""sub_status":"InTransit_Departure","sub_status_descr""#,
            r#""sub_status":"Expired_Other","sub_status_descr""#,
        );
        assert_ne!(parse(expired.as_bytes()).unwrap().delivery_id, first);
    }

    #[test]
    fn a_stop_and_a_bare_latest_event_are_read() {
        let stopped = parse(br#"{"event":"TRACKING_STOPPED","data":{"number":"LX1","carrier":3011,"param":null,"tag":null}}"#).unwrap();
        assert!(stopped.stopped);
        assert!(stopped.events.is_empty());
        assert_eq!(stopped.delivery_id, "TRACKING_STOPPED/LX1/3011/none/0/-");
        let bare = parse(br#"{"event":"TRACKING_UPDATED","data":{"number":"LX1","carrier":"3011","track_info":{"latest_status":{"status":"Delivered","sub_status":"Delivered_Other"},"latest_event":{"time_utc":"2026-11-30T10:00:00Z","description":"Delivered","stage":"Delivered","sub_status":"Delivered_Other"}}}}"#).unwrap();
        assert_eq!(bare.events.len(), 1);
        assert_eq!(bare.events[0].normalized, Normalized::Delivered);
        assert_eq!(bare.events[0].carrier, "3011");
    }

    #[test]
    fn bodies_that_are_not_pushes_name_the_problem() {
        let cases: [(&[u8], &str); 5] = [
            (b"[]", "not a 17TRACK push"),
            (br#"{"event":"AWB_UPDATED","data":{"number":"LX1"}}"#, "unknown event `AWB_UPDATED`"),
            (br#"{"event":"TRACKING_UPDATED","data":{"carrier":1}}"#, "missing field `number`"),
            (br#"{"event":"TRACKING_UPDATED","data":{"number":"LX1","track_info":{"tracking":{"providers":[{"events":[{"description":"x"}]}]}}}}"#, "`data.track_info.tracking.providers[0].events[0]` has neither `time_iso` nor `time_utc`"),
            (br#"{"event":"TRACKING_UPDATED","data":{"number":"LX1","track_info":{"tracking":{"providers":[{"events":[{"time_utc":"later"}]}]}}}}"#, "`data.track_info.tracking.providers[0].events[0].time_utc`: `later` is not a date-time"),
        ];
        for (body, expected) in cases {
            let err = parse(body).unwrap_err().0;
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn normalizes_sub_statuses_and_stages_per_the_facts_table() {
        let s = |sub: &str| normalize(Some(sub), None);
        assert_eq!(s("NotFound_Other"), Normalized::NotFound);
        assert_eq!(s("InfoReceived"), Normalized::InfoReceived);
        assert_eq!(s("InTransit_PickedUp"), Normalized::InTransit);
        assert_eq!(s("InTransit_CustomsProcessing"), Normalized::InTransit);
        assert_eq!(s("OutForDelivery_Other"), Normalized::OutForDelivery);
        assert_eq!(
            s("AvailableForPickup_Other"),
            Normalized::AvailableForPickup
        );
        assert_eq!(
            s("DeliveryFailure_InvalidAddress"),
            Normalized::AttemptFailed
        );
        assert_eq!(s("Delivered_Other"), Normalized::Delivered);
        assert_eq!(s("Exception_Returning"), Normalized::Returning);
        assert_eq!(s("Exception_Returned"), Normalized::Returned);
        assert_eq!(
            s("Exception_Lost"),
            Normalized::Exception(ExceptionKind::Lost)
        );
        assert_eq!(
            s("Exception_Destroyed"),
            Normalized::Exception(ExceptionKind::Disposed)
        );
        assert_eq!(
            s("Exception_Cancel"),
            Normalized::Exception(ExceptionKind::Cancelled)
        );
        assert_eq!(
            s("Exception_Other"),
            Normalized::Exception(ExceptionKind::Other)
        );
        assert_eq!(s("Expired_Other"), Normalized::Expired);
        assert_eq!(
            s("Teleported_Other"),
            Normalized::Unknown("Teleported_Other".into())
        );
        assert_eq!(normalize(None, Some("PickedUp")), Normalized::InTransit);
        assert_eq!(normalize(None, Some("Delivered")), Normalized::Delivered);
        assert_eq!(normalize(None, None), Normalized::Unknown(String::new()));
    }
}
