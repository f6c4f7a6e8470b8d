//! Supplier events posted to `/webhooks/suppliers/{supplier}` (docs/suppliers.md section 3).
//!
//! The checks run from the cheapest and least trusting to the most: the supplier must be
//! configured (404), the body must fit the limit (413), the `Shipgate-Signature` must match one of
//! the supplier's secrets (401), and only then is the body parsed (400) and checked against the
//! supplier's shipments (422). The raw bytes are stored before the 200, like a Shopify delivery,
//! and a repeated event id is acknowledged without a second record: the store deduplicates by
//! (supplier, id).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::response::Response;

use super::{Answer, Intake, IntakeError, Refusal};
use crate::delivery::Origin;
use crate::suppliers::SupplierEvent;
use crate::suppliers::signature::{self, SignatureError};

/// Decides whether a verified, well-formed event fits a shipment of the named supplier (the
/// shipment exists, belongs to that supplier, and has every line the event names).
pub type EventValidator =
    Arc<dyn Fn(&str, &SupplierEvent) -> Result<(), EventRefusal> + Send + Sync>;

/// Why the validator did not accept an event.
#[derive(Debug)]
pub enum EventRefusal {
    /// The event does not fit: the text goes back to the supplier with a 422, so it names the
    /// problem and nothing private.
    DoesNotFit(String),
    /// The shipments could not be read: 503, so that the supplier retries the event later
    /// instead of giving it up.
    Unavailable(crate::store::StoreError),
}

/// The topic under which verified deliveries that are not valid events are counted: the wire
/// `type` of an invalid body is the sender's invention and must not become a label.
const INVALID_TOPIC: &str = "supplier/invalid";

/// The configured suppliers and their secrets, with the validator for their events.
pub(crate) struct SupplierTable {
    secrets: HashMap<String, Vec<Vec<u8>>>,
    validator: EventValidator,
}

impl Default for SupplierTable {
    fn default() -> Self {
        SupplierTable {
            secrets: HashMap::new(),
            // Never asked: with no supplier configured, every delivery stops at the 404.
            validator: Arc::new(|_, _| {
                Err(EventRefusal::DoesNotFit("no supplier is configured".into()))
            }),
        }
    }
}

impl SupplierTable {
    pub(crate) fn new(
        suppliers: impl IntoIterator<Item = (String, Vec<Vec<u8>>)>,
        validator: EventValidator,
    ) -> SupplierTable {
        SupplierTable {
            secrets: suppliers.into_iter().collect(),
            validator,
        }
    }
}

/// The route: `POST /webhooks/suppliers/{supplier}`.
pub(super) async fn supplier_webhook(
    State(intake): State<Intake>,
    supplier: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    // A name that does not even decode cannot be configured: it is simply unknown.
    let outcome = match supplier {
        Ok(Path(supplier)) => receive(&intake, &supplier, request).await,
        Err(_) => Err(IntakeError::UnknownSupplier.into()),
    };
    super::json_answer(&intake, "supplier", outcome)
}

async fn receive(
    intake: &Intake,
    supplier: &str,
    request: Request,
) -> Result<(String, Answer), Refusal> {
    let table = &intake.suppliers;
    let secrets = table
        .secrets
        .get(supplier)
        .ok_or(IntakeError::UnknownSupplier)?;
    // Kept to be stored with the delivery: the signature is the evidence of who sent it.
    let header = match request.headers().get(signature::HEADER) {
        None => None,
        Some(value) => Some(value.to_str().map(str::to_string).map_err(|_| {
            IntakeError::SupplierSignature(SignatureError::Malformed("not visible ASCII"))
        })?),
    };
    let body = intake.read_limited_body(request).await?;
    // An empty secret list refuses everything (`NoSecret`): a supplier whose secret is missing
    // from the configuration must not become a supplier anyone can speak for.
    signature::verify(
        header.as_deref(),
        &body,
        secrets.iter().map(Vec::as_slice),
        signature::now_secs(),
    )
    .map_err(IntakeError::SupplierSignature)?;

    let invalid = |e: crate::suppliers::EventError| Refusal {
        error: IntakeError::InvalidEvent(e.0),
        topic: Some(INVALID_TOPIC.to_string()),
    };
    // The parser also bounds the id's length, which becomes part of a store key.
    let event = SupplierEvent::from_json(&body).map_err(invalid)?;
    let topic = format!("supplier/{}", event.kind.name());
    if let Err(refusal) = (table.validator)(supplier, &event) {
        let error = match refusal {
            EventRefusal::DoesNotFit(text) => IntakeError::EventDoesNotFit(text),
            EventRefusal::Unavailable(e) => IntakeError::Store(e),
        };
        return Err(Refusal {
            error,
            topic: Some(topic),
        });
    }
    let verified = super::Verified {
        origin: Origin::Supplier {
            supplier: supplier.to_string(),
        },
        id: event.id,
        topic,
        signature: (signature::HEADER, header),
        body,
    };
    super::store_verified(intake, verified, "supplier event").await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::StatusCode;

    use super::*;
    use crate::intake::test_support::{TestIntake, counted, send, stalled};
    use crate::intake::{IntakeCounters, IntakeMode, IntakeSettings};
    use crate::store::{Store, StoreOptions};
    use crate::suppliers::EventKind;

    const LIMIT: usize = 4096;
    const NEW: &[u8] = b"acme-new-secret";
    const OLD: &[u8] = b"acme-old-secret";

    /// Shipment SG-1 is acme's and SG-2 is other's, each with line L1; nothing else exists.
    fn validator() -> EventValidator {
        Arc::new(|supplier, event| {
            let (owner, lines): (&str, &[&str]) = match event.shipment_id.as_str() {
                "SG-1" => ("acme", &["L1"]),
                "SG-2" => ("other", &["L1"]),
                _ => {
                    return Err(EventRefusal::DoesNotFit(format!(
                        "unknown shipment {}",
                        event.shipment_id
                    )));
                }
            };
            if owner != supplier {
                return Err(EventRefusal::DoesNotFit(format!(
                    "shipment {} is not yours",
                    event.shipment_id
                )));
            }
            for line in event.kind.line_ids() {
                if !lines.contains(&line) {
                    return Err(EventRefusal::DoesNotFit(format!(
                        "line {line} is not in {}",
                        event.shipment_id
                    )));
                }
            }
            Ok(())
        })
    }

    fn intake_with(mode: IntakeMode) -> TestIntake {
        crate::intake::test_support::intake(mode, LIMIT, |intake| {
            intake.with_suppliers(
                [
                    ("acme".to_string(), vec![NEW.to_vec(), OLD.to_vec()]),
                    ("other".to_string(), vec![b"other-secret".to_vec()]),
                    ("unkeyed".to_string(), Vec::new()),
                ],
                validator(),
            )
        })
    }

    fn intake() -> TestIntake {
        intake_with(IntakeMode::Durable)
    }

    fn event(id: &str) -> Vec<u8> {
        format!(
            r#"{{"id":"{id}","type":"line_confirmed","shipment_id":"SG-1","occurred_at":"2026-11-25T10:01:00Z","line_id":"L1","sku":"MUG-RED","quantity":2}}"#
        )
        .into_bytes()
    }

    fn signed(secret: &[u8], body: &[u8]) -> String {
        signature::sign(secret, signature::now_secs(), body)
    }

    fn request(supplier: &str, signature: Option<&str>, body: impl Into<Body>) -> Request {
        let mut builder = Request::post(format!("/webhooks/suppliers/{supplier}"))
            .header("content-type", "application/json");
        if let Some(signature) = signature {
            builder = builder.header("Shipgate-Signature", signature);
        }
        builder.body(body.into()).unwrap()
    }

    fn signed_request(supplier: &str, secret: &[u8], body: Vec<u8>) -> Request {
        let signature = signed(secret, &body);
        request(supplier, Some(&signature), body)
    }

    fn origin(supplier: &str) -> Origin {
        Origin::Supplier {
            supplier: supplier.into(),
        }
    }

    #[tokio::test]
    async fn a_verified_event_is_stored_raw_before_the_200() {
        let t = intake();
        let body = event("evt_1");
        let signature = signed(NEW, &body);
        let (status, answer) =
            send(&t.router, request("acme", Some(&signature), body.clone())).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer, r#"{"stored":true}"#);
        let seq = t
            .store
            .delivery_seq(&origin("acme"), "evt_1")
            .unwrap()
            .expect("stored");
        let stored = t.store.delivery(seq).unwrap().unwrap();
        assert_eq!(stored.body, body, "the exact signed bytes are kept");
        assert_eq!(stored.topic, "supplier/line_confirmed");
        assert_eq!(
            stored.header("shipgate-signature"),
            Some(signature.as_str())
        );
        assert!(!stored.redacted);
        let parsed = SupplierEvent::from_json(&stored.body).unwrap();
        assert!(matches!(parsed.kind, EventKind::LineConfirmed { .. }));
        assert_eq!(
            counted(&t.counters, "supplier/line_confirmed", "accepted"),
            1
        );
        assert_eq!(t.counters.accepted.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn the_previous_secret_is_accepted_during_rotation() {
        let t = intake();
        let (status, _) = send(&t.router, signed_request("acme", OLD, event("evt_old"))).await;
        assert_eq!(status, StatusCode::OK);
        // Another supplier's secret does not speak for acme.
        let (status, _) = send(
            &t.router,
            signed_request("acme", b"other-secret", event("evt_other")),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(t.store.delivery_count(), 1);
    }

    #[tokio::test]
    async fn an_unknown_supplier_is_404() {
        let t = intake();
        for supplier in ["nobody", "ACME", "%FF"] {
            let (status, answer) =
                send(&t.router, signed_request(supplier, NEW, event("evt_1"))).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{supplier}");
            assert_eq!(answer, "no supplier of that name is configured\n");
        }
        assert_eq!(counted(&t.counters, "unverified", "unknown_supplier"), 3);
        assert_eq!(t.store.delivery_count(), 0);
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_413_before_the_signature() {
        let t = intake();
        // The declared length alone decides: the body is never read, and no signature is
        // needed to be refused.
        let mut req = request("acme", None, Body::empty());
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
        let body = vec![b' '; LIMIT + 1];
        let req = signed_request("acme", NEW, body);
        assert!(req.headers().get("content-length").is_none());
        let (status, _) = send(&t.router, req).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(t.store.delivery_count(), 0);
    }

    #[tokio::test]
    async fn a_body_that_never_arrives_is_408() {
        let t = intake();
        let signature = signed(NEW, &event("evt_1"));
        let (status, _) = send(&t.router, request("acme", Some(&signature), stalled())).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(counted(&t.counters, "unverified", "body_timeout"), 1);
    }

    #[tokio::test]
    async fn every_bad_signature_is_401_naming_the_problem_and_stores_nothing() {
        let t = intake();
        let body = event("evt_1");
        let now = signature::now_secs();
        let good = signed(NEW, &body);
        let cases: Vec<(&str, Option<String>, &str)> = vec![
            ("acme", None, "missing Shipgate-Signature header"),
            ("acme", Some(String::new()), "malformed"),
            ("acme", Some("t=1,v1=zz".into()), "malformed"),
            ("acme", Some(good.replace("v1=", "v0=")), "no v1= signature"),
            (
                "acme",
                Some(signature::sign(b"wrong", now, &body)),
                "signature does not match the body",
            ),
            (
                "acme",
                Some(signature::sign(NEW, now - 301, &body)),
                "tolerance 300 s",
            ),
            (
                "acme",
                Some(signature::sign(NEW, now + 400, &body)),
                "tolerance 300 s",
            ),
            // A configured supplier without a secret is refused whatever it sends.
            ("unkeyed", Some(good.clone()), "no secret is configured"),
        ];
        for (supplier, signature, expected) in cases {
            let (status, answer) = send(
                &t.router,
                request(supplier, signature.as_deref(), body.clone()),
            )
            .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{signature:?}");
            assert!(answer.contains(expected), "{signature:?}: {answer}");
        }
        // A signature over other bytes does not cover this body.
        let (status, _) = send(
            &t.router,
            request("acme", Some(&good), event("evt_tampered")),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(t.store.delivery_count(), 0);
        assert_eq!(counted(&t.counters, "unverified", "missing_signature"), 1);
        assert_eq!(counted(&t.counters, "unverified", "stale_signature"), 2);
        assert_eq!(counted(&t.counters, "unverified", "bad_signature"), 2);
        assert_eq!(counted(&t.counters, "unverified", "no_secret"), 1);
    }

    #[tokio::test]
    async fn a_signed_body_that_is_not_an_event_is_400_naming_the_field() {
        let t = intake();
        let long_id = "e".repeat(201);
        let cases = [
            (b"not json".to_vec(), "not JSON"),
            (
                br#"{"id":"e","type":"line_confirmed","shipment_id":"SG-1","occurred_at":"2026-11-25T10:01:00Z","line_id":"L1","quantity":1}"#.to_vec(),
                "missing field `sku`",
            ),
            (
                br#"{"id":"e","type":"teleported","shipment_id":"SG-1","occurred_at":"2026-11-25T10:01:00Z"}"#.to_vec(),
                "unknown variant `teleported`",
            ),
            (event(&long_id), "`id` is longer than 200 characters"),
        ];
        for (body, expected) in cases {
            let (status, answer) = send(&t.router, signed_request("acme", NEW, body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
            assert!(answer.contains(expected), "{answer}");
        }
        assert_eq!(t.store.delivery_count(), 0);
        assert_eq!(counted(&t.counters, INVALID_TOPIC, "invalid_event"), 4);
    }

    #[tokio::test]
    async fn an_event_that_does_not_fit_a_shipment_is_422() {
        let t = intake();
        let cases = [
            (event("e1").replace_shipment("SG-404"), "unknown shipment SG-404"),
            (event("e2").replace_shipment("SG-2"), "shipment SG-2 is not yours"),
            (
                r#"{"id":"e3","type":"line_short","shipment_id":"SG-1","occurred_at":"2026-11-25T10:01:00Z","line_id":"L7","quantity_short":1}"#
                    .as_bytes()
                    .to_vec(),
                "line L7 is not in SG-1",
            ),
        ];
        for (body, expected) in cases {
            let (status, answer) = send(&t.router, signed_request("acme", NEW, body)).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
            assert!(answer.contains(expected), "{answer}");
        }
        assert_eq!(t.store.delivery_count(), 0);
        assert_eq!(
            counted(&t.counters, "supplier/line_confirmed", "event_does_not_fit"),
            2
        );
        assert_eq!(
            counted(&t.counters, "supplier/line_short", "event_does_not_fit"),
            1
        );
    }

    trait ReplaceShipment {
        fn replace_shipment(self, shipment: &str) -> Vec<u8>;
    }

    impl ReplaceShipment for Vec<u8> {
        fn replace_shipment(self, shipment: &str) -> Vec<u8> {
            String::from_utf8(self)
                .unwrap()
                .replace(
                    r#""shipment_id":"SG-1""#,
                    &format!(r#""shipment_id":"{shipment}""#),
                )
                .into_bytes()
        }
    }

    #[tokio::test]
    async fn a_repeated_event_id_is_stored_once() {
        let t = intake();
        let (_, first) = send(&t.router, signed_request("acme", NEW, event("evt_1"))).await;
        assert_eq!(first, r#"{"stored":true}"#);
        // A retry, signed again at another moment, is the same event.
        let (status, again) = send(&t.router, signed_request("acme", OLD, event("evt_1"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(again, r#"{"duplicate":true}"#);
        assert_eq!(t.store.delivery_count(), 1);
        assert_eq!(t.counters.duplicates.load(Ordering::Relaxed), 1);
        assert_eq!(
            counted(&t.counters, "supplier/line_confirmed", "duplicate"),
            1
        );
        // The same id from another supplier is another event.
        let body = event("evt_1").replace_shipment("SG-2");
        let (status, answer) =
            send(&t.router, signed_request("other", b"other-secret", body)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer, r#"{"stored":true}"#);
        assert_eq!(t.store.delivery_count(), 2);
    }

    #[tokio::test]
    async fn concurrent_duplicates_are_stored_once() {
        let t = intake();
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let router = t.router.clone();
                tokio::spawn(async move {
                    send(&router, signed_request("acme", NEW, event("evt_race"))).await
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
        let duplicate = answers
            .iter()
            .filter(|a| *a == r#"{"duplicate":true}"#)
            .count();
        assert_eq!((stored, duplicate), (1, 15), "{answers:?}");
        assert_eq!(t.store.delivery_count(), 1);
    }

    #[tokio::test]
    async fn a_store_fault_is_503_and_never_2xx() {
        let t = intake();
        t.store.inject_write_fault(true);
        let (status, answer) = send(&t.router, signed_request("acme", NEW, event("evt_1"))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer, "storage unavailable, retry later\n");
        assert!(!answer.contains("injected"), "the detail stays in the log");
        assert_eq!(
            counted(&t.counters, "supplier/line_confirmed", "store_unavailable"),
            1
        );
        assert_eq!(t.counters.refused.load(Ordering::Relaxed), 1);
        // Once the store recovers, the supplier's retry is stored as new.
        t.store.inject_write_fault(false);
        let (status, answer) = send(&t.router, signed_request("acme", NEW, event("evt_1"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer, r#"{"stored":true}"#);
    }

    #[tokio::test]
    async fn without_suppliers_every_supplier_delivery_is_404() {
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
        let (status, _) = send(&router, signed_request("acme", NEW, event("evt_1"))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn verify_only_mode_answers_without_storing() {
        let t = intake_with(IntakeMode::VerifyOnly);
        let (status, answer) = send(&t.router, signed_request("acme", NEW, event("evt_1"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer, r#"{"stored":false}"#);
        assert_eq!(t.store.delivery_count(), 0);
    }
}
