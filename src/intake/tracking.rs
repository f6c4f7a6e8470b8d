//! Carrier events posted by tracking providers to `/webhooks/tracking/{provider}` (SPEC §7).
//!
//! The checks run from the cheapest and least trusting to the most, as for suppliers: the
//! provider must be configured (404), the body must fit the limit (413) and arrive in time
//! (408), its signature must match one of the provider's secrets (401, `aftership-hmac-sha256`
//! or 17TRACK's `sign`), and only then is the body read (400) for the id the delivery is
//! deduplicated on. The raw bytes are stored and flushed before the 200 (invariant 1); a
//! repeated delivery is acknowledged without a second record, because the store deduplicates by
//! (provider, id). Turning the stored delivery into evidence is the workflow's work.

use std::collections::HashMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::response::Response;

use super::{Answer, Intake, IntakeError, Refusal};
use crate::delivery::Origin;
use crate::tracking::{SignatureError, WebhookProvider};

/// The configured tracking providers and their secrets.
#[derive(Default)]
pub(crate) struct TrackingTable {
    providers: HashMap<String, (WebhookProvider, Vec<Vec<u8>>)>,
}

impl TrackingTable {
    pub(crate) fn new(providers: impl IntoIterator<Item = (String, Vec<Vec<u8>>)>) -> Self {
        let mut table = HashMap::new();
        for (name, secrets) in providers {
            match WebhookProvider::from_name(&name) {
                Some(provider) => {
                    table.insert(name, (provider, secrets));
                }
                // The configuration should have refused it; if it did not, its deliveries
                // answer 404 and this line says why.
                None => tracing::warn!(
                    provider = %name,
                    "tracking provider ignored: shipgate reads webhooks from {:?} only",
                    crate::tracking::WEBHOOK_PROVIDERS
                ),
            }
        }
        TrackingTable { providers: table }
    }
}

/// The topic of a provider's deliveries: `tracking/aftership`, `tracking/17track`.
pub fn topic(provider: WebhookProvider) -> String {
    format!("tracking/{}", provider.name())
}

/// The route: `POST /webhooks/tracking/{provider}`.
pub(super) async fn tracking_webhook(
    State(intake): State<Intake>,
    provider: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    // A name that does not even decode cannot be configured: it is simply unknown.
    let outcome = match provider {
        Ok(Path(provider)) => receive(&intake, &provider, request).await,
        Err(_) => Err(IntakeError::UnknownTrackingProvider.into()),
    };
    super::json_answer(&intake, "tracking", outcome)
}

async fn receive(
    intake: &Intake,
    name: &str,
    request: Request,
) -> Result<(String, Answer), Refusal> {
    let (provider, secrets) = intake
        .tracking
        .providers
        .get(name)
        .ok_or(IntakeError::UnknownTrackingProvider)?;
    let provider = *provider;
    let header_name = provider.signature_header();
    // Kept to be stored with the delivery: the signature is the evidence of who sent it.
    let header = match request.headers().get(header_name) {
        None => None,
        Some(value) => Some(value.to_str().map(str::to_string).map_err(|_| {
            IntakeError::TrackingSignature(SignatureError::Malformed(
                header_name,
                "not visible ASCII",
            ))
        })?),
    };
    let body = intake.read_limited_body(request).await?;
    provider
        .verify(header.as_deref(), &body, secrets.iter().map(Vec::as_slice))
        .map_err(IntakeError::TrackingSignature)?;

    let topic = topic(provider);
    // The parser bounds and checks the id, which becomes part of a store key.
    let parsed = provider.parse(&body).map_err(|e| Refusal {
        error: IntakeError::InvalidTrackingPayload(e.0),
        topic: Some(topic.clone()),
    })?;
    let verified = super::Verified {
        origin: Origin::Tracking {
            provider: provider.name().to_string(),
        },
        id: parsed.delivery_id,
        topic,
        signature: (header_name, header),
        body,
    };
    super::store_verified(intake, verified, "tracking delivery").await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::StatusCode;

    use super::*;
    use crate::intake::test_support::{TestIntake, counted, send, stalled};
    use crate::intake::{IntakeCounters, IntakeMode, IntakeSettings};
    use crate::store::{Store, StoreOptions};
    use crate::tracking::{aftership, seventeen};

    const LIMIT: usize = 8192;
    const NEW: &[u8] = b"aftership-new-secret";
    const OLD: &[u8] = b"aftership-old-secret";
    const KEY: &[u8] = b"17track-key";

    fn intake_with(mode: IntakeMode, providers: Vec<(String, Vec<Vec<u8>>)>) -> TestIntake {
        crate::intake::test_support::intake(mode, LIMIT, |intake| intake.with_tracking(providers))
    }

    fn intake() -> TestIntake {
        intake_with(
            IntakeMode::Durable,
            vec![
                ("aftership".into(), vec![NEW.to_vec(), OLD.to_vec()]),
                ("17track".into(), vec![KEY.to_vec()]),
            ],
        )
    }

    fn aftership_body(event_id: &str) -> Vec<u8> {
        format!(
            r#"{{"event_id":"{event_id}","event":"tracking_update","msg":{{"tracking_number":"9400111899223197428490","slug":"usps","tag":"InTransit","checkpoints":[{{"checkpoint_time":"2026-11-25T09:14:00-05:00","message":"Accepted at USPS Origin Facility","raw_tag":"OA","location":"ATLANTA, GA","tag":"InTransit","subtag":"InTransit_002"}}]}}}}"#
        )
        .into_bytes()
    }

    fn seventeen_body() -> Vec<u8> {
        br#"{"event":"TRACKING_UPDATED","data":{"number":"LX123456789CN","carrier":3011,"track_info":{"latest_status":{"status":"InTransit","sub_status":"InTransit_PickedUp"},"tracking":{"providers":[{"provider":{"key":190271},"events":[{"time_iso":"2026-11-25T14:20:00+08:00","time_utc":"2026-11-25T06:20:00Z","description":"Picked up","stage":"PickedUp","sub_status":"InTransit_PickedUp"}]}]}}}}"#.to_vec()
    }

    fn request(provider: &str, header: Option<(&str, &str)>, body: impl Into<Body>) -> Request {
        let mut builder = Request::post(format!("/webhooks/tracking/{provider}"))
            .header("content-type", "application/json");
        if let Some((name, value)) = header {
            builder = builder.header(name, value);
        }
        builder.body(body.into()).unwrap()
    }

    fn aftership_request(secret: &[u8], body: Vec<u8>) -> Request {
        let signature = aftership::sign(secret, &body);
        request("aftership", Some((aftership::HEADER, &signature)), body)
    }

    fn seventeen_request(key: &[u8], body: Vec<u8>) -> Request {
        let signature = seventeen::sign(key, &body);
        request("17track", Some((seventeen::HEADER, &signature)), body)
    }

    fn origin(provider: &str) -> Origin {
        Origin::Tracking {
            provider: provider.into(),
        }
    }

    #[tokio::test]
    async fn an_aftership_webhook_is_stored_raw_before_the_200() {
        let t = intake();
        let body = aftership_body("evt-1");
        let signature = aftership::sign(NEW, &body);
        let (status, answer) = send(
            &t.router,
            request(
                "aftership",
                Some((aftership::HEADER, &signature)),
                body.clone(),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer, r#"{"stored":true}"#);
        let seq = t
            .store
            .delivery_seq(&origin("aftership"), "evt-1")
            .unwrap()
            .expect("stored under the webhook's event_id");
        let stored = t.store.delivery(seq).unwrap().unwrap();
        assert_eq!(stored.body, body, "the exact signed bytes are kept");
        assert_eq!(stored.topic, "tracking/aftership");
        assert_eq!(stored.header(aftership::HEADER), Some(signature.as_str()));
        assert!(!stored.redacted);
        let events = aftership::parse(&stored.body).unwrap().events;
        assert!(events[0].acceptance_scan);
        assert_eq!(counted(&t.counters, "tracking/aftership", "accepted"), 1);
        assert_eq!(t.counters.accepted.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_17track_push_is_stored_under_its_derived_id() {
        let t = intake();
        let body = seventeen_body();
        let (status, answer) = send(&t.router, seventeen_request(KEY, body.clone())).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let id = seventeen::parse(&body).unwrap().delivery_id;
        assert!(
            id.starts_with("TRACKING_UPDATED/LX123456789CN/3011/"),
            "{id}"
        );
        let seq = t
            .store
            .delivery_seq(&origin("17track"), &id)
            .unwrap()
            .expect("stored");
        let stored = t.store.delivery(seq).unwrap().unwrap();
        assert_eq!(stored.topic, "tracking/17track");
        assert_eq!(stored.body, body);
        assert!(stored.header("sign").is_some());
        // 17TRACK pushes the same report again: one record.
        let (status, again) = send(&t.router, seventeen_request(KEY, body)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(again, r#"{"duplicate":true}"#);
        assert_eq!(t.store.delivery_count(), 1);
    }

    #[tokio::test]
    async fn the_previous_secret_is_accepted_during_rotation() {
        let t = intake();
        let (status, _) = send(&t.router, aftership_request(OLD, aftership_body("evt-old"))).await;
        assert_eq!(status, StatusCode::OK);
        // Another provider's secret does not speak for AfterShip.
        let (status, _) = send(&t.router, aftership_request(KEY, aftership_body("evt-key"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(t.store.delivery_count(), 1);
    }

    #[tokio::test]
    async fn an_unconfigured_provider_is_404() {
        let t = intake_with(
            IntakeMode::Durable,
            vec![
                ("aftership".into(), vec![NEW.to_vec()]),
                // Not a provider this build reads: ignored, so it answers 404 too.
                ("easypost".into(), vec![b"x".to_vec()]),
            ],
        );
        for provider in ["17track", "easypost", "AfterShip", "nobody", "%FF"] {
            let (status, answer) =
                send(&t.router, request(provider, None, aftership_body("evt-1"))).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{provider}");
            assert_eq!(answer, "no tracking provider of that name is configured\n");
        }
        assert_eq!(
            counted(&t.counters, "unverified", "unknown_tracking_provider"),
            5
        );
        assert_eq!(t.store.delivery_count(), 0);
    }

    #[tokio::test]
    async fn without_tracking_every_tracking_delivery_is_404() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let router = Intake::new(
            store,
            [],
            IntakeSettings {
                body_limit: LIMIT,
                body_read_timeout: Duration::from_secs(1),
                mode: IntakeMode::Durable,
            },
            Arc::new(IntakeCounters::default()),
        )
        .router();
        let (status, _) = send(&router, aftership_request(NEW, aftership_body("evt-1"))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_413_before_the_signature() {
        let t = intake();
        let mut req = request("aftership", None, Body::empty());
        req.headers_mut()
            .insert("content-length", (LIMIT + 1).to_string().parse().unwrap());
        let (status, answer) = send(&t.router, req).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(answer.contains(&LIMIT.to_string()), "{answer}");
        assert_eq!(counted(&t.counters, "unverified", "too_large"), 1);
    }

    #[tokio::test]
    async fn an_undeclared_body_over_the_limit_is_413_while_reading() {
        let t = intake();
        let req = aftership_request(NEW, vec![b' '; LIMIT + 1]);
        assert!(req.headers().get("content-length").is_none());
        let (status, _) = send(&t.router, req).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(t.store.delivery_count(), 0);
    }

    #[tokio::test]
    async fn a_body_that_never_arrives_is_408() {
        let t = intake();
        let signature = aftership::sign(NEW, &aftership_body("evt-1"));
        let (status, _) = send(
            &t.router,
            request(
                "aftership",
                Some((aftership::HEADER, &signature)),
                stalled(),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(counted(&t.counters, "unverified", "body_timeout"), 1);
    }

    #[tokio::test]
    async fn every_bad_signature_is_401_naming_the_problem_and_stores_nothing() {
        let t = intake_with(
            IntakeMode::Durable,
            vec![
                ("aftership".into(), vec![NEW.to_vec()]),
                ("17track".into(), Vec::new()),
            ],
        );
        let body = aftership_body("evt-1");
        let good = aftership::sign(NEW, &body);
        let hex_digest = seventeen::sign(NEW, &body);
        let wrong = aftership::sign(b"wrong", &body);
        let unkeyed = seventeen::sign(KEY, &body);
        // (provider, signature header, what the answer must say)
        type Case<'a> = (&'a str, Option<(&'a str, &'a str)>, &'a str);
        let cases: Vec<Case> = vec![
            ("aftership", None, "missing aftership-hmac-sha256 header"),
            (
                "aftership",
                Some((aftership::HEADER, "")),
                "malformed aftership-hmac-sha256 header",
            ),
            (
                "aftership",
                Some((aftership::HEADER, &hex_digest)),
                "not the base64 of a 32-byte HMAC-SHA256",
            ),
            (
                "aftership",
                Some((aftership::HEADER, &wrong)),
                "signature does not match the body",
            ),
            // A configured provider without a secret is refused whatever it sends.
            (
                "17track",
                Some((seventeen::HEADER, &unkeyed)),
                "no secret is configured for this provider",
            ),
        ];
        for (provider, header, expected) in cases {
            let (status, answer) = send(&t.router, request(provider, header, body.clone())).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{header:?}");
            assert!(answer.contains(expected), "{header:?}: {answer}");
        }
        // A signature over other bytes does not cover this body.
        let (status, _) = send(
            &t.router,
            request(
                "aftership",
                Some((aftership::HEADER, &good)),
                aftership_body("evt-tampered"),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(t.store.delivery_count(), 0);
        assert_eq!(counted(&t.counters, "unverified", "missing_signature"), 1);
        assert_eq!(counted(&t.counters, "unverified", "malformed_signature"), 2);
        assert_eq!(counted(&t.counters, "unverified", "bad_signature"), 2);
        assert_eq!(counted(&t.counters, "unverified", "no_secret"), 1);
    }

    #[tokio::test]
    async fn a_signed_body_that_cannot_be_read_is_400_naming_the_problem() {
        let t = intake();
        let aftership_cases: [(Vec<u8>, &str); 3] = [
            (
                b"not json".to_vec(),
                "invalid tracking payload: not an AfterShip webhook",
            ),
            (
                br#"{"event":"tracking_update","msg":{"tracking_number":"1Z","slug":"ups"}}"#
                    .to_vec(),
                "missing field `event_id`",
            ),
            (
                aftership_body(&"e".repeat(201)),
                "`event_id` is longer than 200 characters",
            ),
        ];
        for (body, expected) in aftership_cases {
            let (status, answer) = send(&t.router, aftership_request(NEW, body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
            assert!(answer.contains(expected), "{answer}");
        }
        let (status, answer) = send(
            &t.router,
            seventeen_request(
                KEY,
                br#"{"event":"AWB_UPDATED","data":{"number":"LX1"}}"#.to_vec(),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(answer.contains("unknown event `AWB_UPDATED`"), "{answer}");
        assert_eq!(t.store.delivery_count(), 0);
        assert_eq!(
            counted(&t.counters, "tracking/aftership", "invalid_payload"),
            3
        );
        assert_eq!(
            counted(&t.counters, "tracking/17track", "invalid_payload"),
            1
        );
    }

    #[tokio::test]
    async fn a_repeated_event_id_is_stored_once() {
        let t = intake();
        let (_, first) = send(&t.router, aftership_request(NEW, aftership_body("evt-1"))).await;
        assert_eq!(first, r#"{"stored":true}"#);
        // AfterShip's retry, signed with the previous secret after a rotation, is the same one.
        let (status, again) =
            send(&t.router, aftership_request(OLD, aftership_body("evt-1"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(again, r#"{"duplicate":true}"#);
        assert_eq!(t.store.delivery_count(), 1);
        assert_eq!(t.counters.duplicates.load(Ordering::Relaxed), 1);
        assert_eq!(counted(&t.counters, "tracking/aftership", "duplicate"), 1);
    }

    #[tokio::test]
    async fn concurrent_duplicates_are_stored_once() {
        let t = intake();
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let router = t.router.clone();
                tokio::spawn(async move {
                    send(&router, aftership_request(NEW, aftership_body("evt-race"))).await
                })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            let (status, answer) = task.await.unwrap();
            assert_eq!(status, StatusCode::OK);
            answers.push(answer);
        }
        let stored = answers
            .iter()
            .filter(|a| *a == r#"{"stored":true}"#)
            .count();
        assert_eq!(stored, 1, "{answers:?}");
        assert_eq!(t.store.delivery_count(), 1);
    }

    #[tokio::test]
    async fn a_store_fault_is_503_and_never_2xx() {
        let t = intake();
        t.store.inject_write_fault(true);
        let (status, answer) =
            send(&t.router, aftership_request(NEW, aftership_body("evt-1"))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer, "storage unavailable, retry later\n");
        assert_eq!(
            counted(&t.counters, "tracking/aftership", "store_unavailable"),
            1
        );
        assert_eq!(t.counters.refused.load(Ordering::Relaxed), 1);
        // Once the store recovers, the provider's retry is stored as new.
        t.store.inject_write_fault(false);
        let (status, answer) =
            send(&t.router, aftership_request(NEW, aftership_body("evt-1"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer, r#"{"stored":true}"#);
    }

    #[tokio::test]
    async fn verify_only_mode_answers_without_storing() {
        let t = intake_with(
            IntakeMode::VerifyOnly,
            vec![("aftership".into(), vec![NEW.to_vec()])],
        );
        let (status, answer) =
            send(&t.router, aftership_request(NEW, aftership_body("evt-1"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer, r#"{"stored":false}"#);
        assert_eq!(t.store.delivery_count(), 0);
    }
}
