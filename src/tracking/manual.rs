//! Manual carrier scans (SPEC section 7: "manual scans with evidence"): an operator who holds
//! the carrier's acceptance receipt, or a photo of the parcel at the counter, records the
//! acceptance by hand.
//!
//! Such a scan is a claim like any provider's: it becomes an ordinary [`TrackingEvent`] that
//! the acceptance latch judges by the same rule (not pre-advice, not timed before the label or
//! the order, never for a number on another open order). What sets it apart is that it must
//! name its evidence, a SHA-256 of the receipt or photo, which stays on the event.

use super::{
    MAX_TRACKING_NUMBER_LEN, Normalized, PayloadError, Provider, TrackingEvent, check_key_text,
    event_id,
};
use crate::order::Timestamp;

/// The raw code every manual acceptance carries, so that it reads as what it is wherever the
/// event is shown.
pub const RAW_CODE: &str = "MANUAL_ACCEPTANCE";

/// How far after now a manual scan may be timed: the operator's clock may be a little ahead,
/// but a scan hours in the future is a wrong date.
const FUTURE_SLACK_MS: i64 = 5 * 60 * 1000;

/// What an operator states about a carrier's acceptance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualAcceptance {
    pub tracking_number: String,
    /// When the carrier took the parcel (RFC 3339 with an offset).
    pub at: String,
    /// Where, as the receipt says.
    pub location: Option<String>,
    /// The carrier, as the label names it (`unknown` when no label is known yet).
    pub carrier: String,
    /// `sha256:<64 hex>`, optionally `=<URL or file name>`: at least one.
    pub evidence: Vec<String>,
    /// What the operator saw, for the record.
    pub note: String,
    /// Who records it.
    pub by: String,
}

/// Checks one evidence reference and returns it normalized (`sha256:` and lowercase hex, then
/// `=<where>` if given).
pub fn evidence_reference(text: &str) -> Result<String, PayloadError> {
    let text = text.trim();
    let (digest, place) = match text.split_once('=') {
        Some((digest, place)) => (digest, Some(place.trim())),
        None => (text, None),
    };
    let hex = digest
        .trim()
        .strip_prefix("sha256:")
        .ok_or_else(|| {
            PayloadError(format!(
                "evidence `{text}` must start with sha256: followed by the 64 hex digits of the receipt or photo"
            ))
        })?;
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(PayloadError(format!(
            "evidence `{text}`: a SHA-256 is 64 hex digits, got {} characters",
            hex.chars().count()
        )));
    }
    let mut normalized = format!("sha256:{}", hex.to_ascii_lowercase());
    match place {
        Some("") => {
            return Err(PayloadError(format!(
                "evidence `{text}`: nothing after `=` (give the URL or file name, or leave out the `=`)"
            )));
        }
        Some(place) => {
            check_key_text("evidence location", place, 2000)?;
            normalized.push('=');
            normalized.push_str(place);
        }
        None => {}
    }
    Ok(normalized)
}

impl ManualAcceptance {
    /// The carrier event this acceptance is, or why it cannot be one. `now_ms` bounds the time.
    pub fn to_event(&self, now_ms: i64) -> Result<TrackingEvent, PayloadError> {
        check_key_text(
            "tracking_number",
            &self.tracking_number,
            MAX_TRACKING_NUMBER_LEN,
        )?;
        let occurred_at = Timestamp::parse(self.at.trim()).map_err(|e| {
            PayloadError(format!(
                "`at`: {e} (give the time on the receipt with its offset, e.g. 2026-11-25T10:00:00+08:00)"
            ))
        })?;
        if occurred_at.unix_ms > now_ms + FUTURE_SLACK_MS {
            return Err(PayloadError(format!(
                "`at` {} is in the future",
                occurred_at.text
            )));
        }
        if self.evidence.is_empty() {
            return Err(PayloadError(
                "a manual acceptance needs evidence: the SHA-256 of the carrier's receipt or a photo of the handover (sha256:<64 hex>[=URL])"
                    .into(),
            ));
        }
        let evidence = self
            .evidence
            .iter()
            .map(|e| evidence_reference(e))
            .collect::<Result<Vec<_>, _>>()?;
        let note = self.note.trim();
        if note.is_empty() {
            return Err(PayloadError(
                "`note` is empty: say what shows the carrier has the parcel".into(),
            ));
        }
        check_key_text("note", note, 1000)?;
        check_key_text("by", &self.by, 100)?;
        let location = self
            .location
            .as_deref()
            .map(str::trim)
            .filter(|l| !l.is_empty());
        if let Some(location) = location {
            check_key_text("location", location, 200)?;
        }
        check_key_text("carrier", &self.carrier, 100)?;
        // The digests go into the text (the URLs do not: a file name such as
        // `label_created.jpg` would read as pre-advice to the latch), so that the event's one
        // line, as every listing shows it, says what it rests on.
        let digests: Vec<&str> = evidence
            .iter()
            .map(|e| e.split_once('=').map_or(e.as_str(), |(d, _)| d))
            .collect();
        let raw_text = format!(
            "Carrier acceptance recorded by operator {} on evidence {}: {note}",
            self.by.trim(),
            digests.join(", ")
        );
        Ok(TrackingEvent {
            provider: Provider::Manual,
            event_id: event_id(
                Provider::Manual,
                &self.tracking_number,
                occurred_at.unix_ms,
                Some(RAW_CODE),
                &raw_text,
                location,
            ),
            tracking_number: self.tracking_number.clone(),
            carrier: self.carrier.clone(),
            occurred_at,
            raw_text,
            raw_code: Some(RAW_CODE.to_string()),
            location: location.map(str::to_string),
            provider_code: None,
            acceptance_scan: true,
            normalized: Normalized::InTransit,
            evidence,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracking::acceptance::{self, Signal};

    const NOW: i64 = 1_800_000_000_000;

    fn stated() -> ManualAcceptance {
        ManualAcceptance {
            tracking_number: "1Z999AA10123456784".into(),
            at: "2026-11-25T10:00:00+08:00".into(),
            location: Some("Shenzhen counter".into()),
            carrier: "ups".into(),
            evidence: vec![format!(
                "sha256:{}=https://files.example/receipt.jpg",
                "AB".repeat(32)
            )],
            note: "receipt stamped by the counter clerk".into(),
            by: "alice".into(),
        }
    }

    #[test]
    fn an_acceptance_with_evidence_is_an_acceptance_scan_the_latch_counts() {
        let event = stated().to_event(NOW).unwrap();
        assert_eq!(event.provider, Provider::Manual);
        assert!(event.acceptance_scan);
        assert_eq!(event.normalized, Normalized::InTransit);
        assert_eq!(
            event.evidence,
            vec![format!(
                "sha256:{}=https://files.example/receipt.jpg",
                "ab".repeat(32)
            )],
            "the digest is kept, lowercase, with where the file is"
        );
        assert!(
            event.raw_text.contains("operator alice"),
            "{}",
            event.raw_text
        );
        assert!(event.raw_text.contains(&"ab".repeat(32)));
        assert!(
            event
                .raw_text
                .ends_with("receipt stamped by the counter clerk")
        );
        assert!(event.event_id.starts_with("manual:"));
        assert_eq!(
            event.event_id,
            stated().to_event(NOW).unwrap().event_id,
            "recording the same statement again is the same event"
        );
        assert_eq!(
            acceptance::judge(&event, Some(event.occurred_at.unix_ms), None),
            Ok(Signal::AcceptanceScan)
        );
    }

    #[test]
    fn the_latch_still_judges_a_manual_scan() {
        let mut early = stated();
        early.at = "2026-11-20T10:00:00Z".into();
        let event = early.to_event(NOW).unwrap();
        let label = Timestamp::parse("2026-11-25T00:00:00Z").unwrap().unix_ms;
        assert_eq!(
            acceptance::judge(&event, Some(label), None),
            Err(acceptance::NotAcceptance::BeforeLabel)
        );
        let mut pre = stated();
        pre.note = "the counter said: awaiting item".into();
        let event = pre.to_event(NOW).unwrap();
        assert!(matches!(
            acceptance::judge(&event, None, None),
            Err(acceptance::NotAcceptance::PreAdvice(_))
        ));
    }

    #[test]
    fn evidence_is_mandatory_and_must_be_a_sha256() {
        let mut none = stated();
        none.evidence.clear();
        assert!(none.to_event(NOW).unwrap_err().0.contains("needs evidence"));
        for (bad, says) in [
            ("receipt.jpg", "must start with sha256:"),
            ("sha256:abc", "64 hex digits, got 3"),
            (&format!("sha256:{}", "zz".repeat(32)), "64 hex digits"),
            (&format!("sha256:{}=", "ab".repeat(32)), "nothing after `=`"),
        ] {
            let mut wrong = stated();
            wrong.evidence = vec![bad.to_string()];
            let err = wrong.to_event(NOW).unwrap_err().0;
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert_eq!(
            evidence_reference(&format!(" sha256:{} ", "Cd".repeat(32))).unwrap(),
            format!("sha256:{}", "cd".repeat(32))
        );
    }

    #[test]
    fn times_notes_and_numbers_are_checked() {
        let mut future = stated();
        future.at = "2099-01-01T00:00:00Z".into();
        assert!(
            future
                .to_event(NOW)
                .unwrap_err()
                .0
                .contains("in the future")
        );
        let mut unparsed = stated();
        unparsed.at = "yesterday".into();
        assert!(unparsed.to_event(NOW).unwrap_err().0.starts_with("`at`:"));
        let mut silent = stated();
        silent.note = "  ".into();
        assert!(
            silent
                .to_event(NOW)
                .unwrap_err()
                .0
                .contains("`note` is empty")
        );
        let mut blank = stated();
        blank.tracking_number = " ".into();
        assert!(
            blank
                .to_event(NOW)
                .unwrap_err()
                .0
                .contains("`tracking_number` is empty")
        );
    }
}
