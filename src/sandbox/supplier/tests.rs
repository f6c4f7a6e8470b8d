//! The agent against a tiny stand-in for shipgate's supplier webhook, all on loopback. Waiting is
//! done with `flush_events` and the stand-in's own counter; timeouts only turn a hang into a
//! failure, or bound a check that nothing happens.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::*;
use crate::order::Address;
use crate::suppliers::signature::{self, sign};
use crate::suppliers::{EventKind, MessageBody, MessageLine};

const NAME: &str = "acme";
const SECRET: &[u8] = b"agent-secret";
/// Bounds every wait, so that a bug fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(10);

/// What the stand-in for shipgate saw.
struct Received {
    /// Events stored, once per id, in arrival order.
    stored: Mutex<Vec<SupplierEvent>>,
    /// The id of every attempt, retries included.
    attempts: Mutex<Vec<String>>,
    /// Statuses to answer to the next attempts before any check, to play a failing shipgate.
    script: Mutex<VecDeque<u16>>,
    /// How many events are stored, to wait on.
    count: watch::Sender<usize>,
}

/// A stand-in for shipgate's `POST /webhooks/suppliers/<name>`: it verifies each signature with
/// the shared secret and the real clock, validates the event with shipgate's own parser and
/// stores each id once, as section 3 of docs/suppliers.md says.
struct Shipgate {
    url: String,
    received: Arc<Received>,
}

async fn webhook(
    State(received): State<Arc<Received>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = SupplierEvent::from_json(&body)
        .map(|e| e.id)
        .unwrap_or_default();
    received.attempts.lock().unwrap().push(id);
    if let Some(status) = received.script.lock().unwrap().pop_front() {
        return (StatusCode::from_u16(status).unwrap(), "scripted answer").into_response();
    }
    if name != NAME {
        return (StatusCode::NOT_FOUND, "no such supplier").into_response();
    }
    let header = headers.get(signature::HEADER).and_then(|v| v.to_str().ok());
    if let Err(e) = signature::verify(header, &body, [SECRET], signature::now_secs()) {
        return (StatusCode::UNAUTHORIZED, e.to_string()).into_response();
    }
    let event = match SupplierEvent::from_json(&body) {
        Ok(event) => event,
        Err(e) => return (StatusCode::BAD_REQUEST, e.0).into_response(),
    };
    let mut stored = received.stored.lock().unwrap();
    if stored.iter().any(|e| e.id == event.id) {
        return axum::Json(json!({"duplicate": true})).into_response();
    }
    stored.push(event);
    received.count.send_replace(stored.len());
    axum::Json(json!({"stored": true})).into_response()
}

impl Shipgate {
    async fn start() -> Shipgate {
        let received = Arc::new(Received {
            stored: Mutex::new(Vec::new()),
            attempts: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            count: watch::Sender::new(0),
        });
        let app = Router::new()
            .route("/webhooks/suppliers/{name}", routing::post(webhook))
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/webhooks/suppliers/{NAME}",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Shipgate { url, received }
    }

    fn stored(&self) -> Vec<SupplierEvent> {
        self.received.stored.lock().unwrap().clone()
    }

    fn attempts(&self) -> Vec<String> {
        self.received.attempts.lock().unwrap().clone()
    }

    /// Waits until `n` events are stored.
    async fn wait_stored(&self, n: usize) {
        let mut count = self.received.count.subscribe();
        tokio::time::timeout(PATIENCE, count.wait_for(|c| *c >= n))
            .await
            .expect("events should arrive")
            .unwrap();
    }
}

async fn agent() -> SandboxAgent {
    SandboxAgent::start(AgentSettings {
        name: NAME.into(),
        secret: SECRET.to_vec(),
    })
    .await
    .unwrap()
}

/// An agent that reports to a fresh stand-in.
async fn setup() -> (SandboxAgent, Shipgate) {
    let agent = agent().await;
    let shipgate = Shipgate::start().await;
    agent.set_report_to(shipgate.url.clone());
    (agent, shipgate)
}

async fn flush(agent: &SandboxAgent) {
    tokio::time::timeout(PATIENCE, agent.flush_events())
        .await
        .expect("flush_events should resolve");
}

fn line_id(n: u32) -> String {
    format!("gid://shopify/LineItem/{n}")
}

/// A submission (revision 1) or amendment of `(line number, sku, quantity)` lines.
fn submission(shipment: &str, revision: u32, lines: &[(u32, &str, i64)]) -> SupplierMessage {
    SupplierMessage {
        key: format!("{shipment}.r{revision}"),
        shipment_id: shipment.into(),
        sent_at: "2026-11-25T10:00:00Z".into(),
        body: MessageBody::Submission {
            revision,
            shop: "example.myshopify.com".into(),
            order_name: "#1001".into(),
            lines: lines
                .iter()
                .map(|&(n, sku, quantity)| MessageLine {
                    line_id: line_id(n),
                    sku: sku.into(),
                    variant_title: Some("Red / 350 ml".into()),
                    quantity,
                })
                .collect(),
            ship_to: Some(Box::new(Address {
                name: Some("Ada Lovelace".into()),
                address1: Some("1 Example Street".into()),
                city: Some("London".into()),
                zip: Some("N1 1AA".into()),
                country_code: Some("GB".into()),
                ..Address::default()
            })),
        },
    }
}

fn cancellation(shipment: &str) -> SupplierMessage {
    SupplierMessage {
        key: format!("{shipment}.cancel"),
        shipment_id: shipment.into(),
        sent_at: "2026-11-25T11:00:00Z".into(),
        body: MessageBody::Cancellation {
            reason: "order cancelled in Shopify".into(),
        },
    }
}

fn decision(shipment: &str, line: u32, approve: bool) -> SupplierMessage {
    let verb = if approve { "approve" } else { "reject" };
    SupplierMessage {
        key: format!("{shipment}.sub.{}.{verb}", line_id(line)),
        shipment_id: shipment.into(),
        sent_at: "2026-11-25T12:00:00Z".into(),
        body: MessageBody::Decision {
            line_id: line_id(line),
            approve,
        },
    }
}

/// POSTs a body with the given key and signature header; an error is a connection that gave no
/// answer.
async fn post(
    agent: &SandboxAgent,
    key: &str,
    body: Vec<u8>,
    signature: Option<String>,
) -> reqwest::Result<(u16, String)> {
    let mut request = reqwest::Client::new()
        .post(agent.endpoint())
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(body);
    if let Some(signature) = signature {
        request = request.header(signature::HEADER, signature);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

/// Sends a message as shipgate does: its JSON, signed now with the shared secret.
async fn send(agent: &SandboxAgent, message: &SupplierMessage) -> (u16, String) {
    let body = message.to_json();
    let signature = sign(SECRET, signature::now_secs(), &body);
    post(agent, &message.key, body, Some(signature))
        .await
        .expect("the agent answers")
}

/// Looks a key up as it is written in `path_key`, signed over the empty body.
async fn lookup(agent: &SandboxAgent, path_key: &str, signed: bool) -> (u16, String) {
    let mut request = reqwest::Client::new().get(format!("{}/{path_key}", agent.endpoint()));
    if signed {
        request = request.header(signature::HEADER, sign(SECRET, signature::now_secs(), b""));
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn names(events: &[SupplierEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[tokio::test]
async fn signed_submission_is_answered_then_received_and_confirmed_in_signed_events() {
    let (agent, shipgate) = setup().await;
    let message = submission("SG-0000000042", 1, &[(1, "MUG-RED", 2), (2, "PLATE", 1)]);
    let (status, body) = send(&agent, &message).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body), json!({"supplier_ref": "PO-1"}));
    flush(&agent).await;

    // The stand-in verified every signature and parsed every event with shipgate's own parser.
    let stored = shipgate.stored();
    assert_eq!(
        names(&stored),
        ["received", "line_confirmed", "line_confirmed"]
    );
    assert!(stored.iter().all(|e| e.shipment_id == "SG-0000000042"));
    assert_eq!(
        stored.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["evt_acme_1", "evt_acme_2", "evt_acme_3"]
    );
    assert_eq!(
        stored[0].kind,
        EventKind::Received {
            supplier_ref: Some("PO-1".into())
        }
    );
    let EventKind::LineConfirmed {
        line_id: confirmed_line,
        sku,
        quantity,
        ship_by,
        ..
    } = &stored[1].kind
    else {
        panic!("{:?}", stored[1]);
    };
    assert_eq!(
        (confirmed_line.as_str(), sku.as_str(), *quantity),
        (line_id(1).as_str(), "MUG-RED", 2)
    );
    assert!(ship_by.is_some(), "a real agent promises a ship-by date");
    assert!(
        matches!(&stored[2].kind, EventKind::LineConfirmed { sku, quantity: 1, .. } if sku == "PLATE")
    );
    assert_eq!(agent.events_sent(), stored);
    assert!(agent.events_refused().is_empty());
    assert_eq!(agent.pending_events(), 0);

    let accepted = agent.accepted_messages();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].key, "SG-0000000042.r1");
    assert_eq!(accepted[0].kind, "submission");
    assert_eq!(accepted[0].shipment_id, "SG-0000000042");
    assert_eq!(accepted[0].message, message);
    assert_eq!(accepted[0].body["order_name"], "#1001");
    assert_eq!(accepted[0].supplier_ref.as_deref(), Some("PO-1"));
    assert_eq!(agent.posts_for("SG-0000000042.r1"), 1);
    agent.stop().await;
}

#[tokio::test]
async fn a_repeated_key_is_answered_alike_and_acted_on_once() {
    let (agent, shipgate) = setup().await;
    let message = submission("SG-1", 1, &[(1, "MUG-RED", 2)]);
    let first = send(&agent, &message).await;
    let again = send(&agent, &message).await;
    assert_eq!(first, (200, r#"{"supplier_ref":"PO-1"}"#.to_string()));
    assert_eq!(again, first);
    flush(&agent).await;
    assert_eq!(names(&shipgate.stored()), ["received", "line_confirmed"]);
    assert_eq!(agent.duplicates(), 1);
    assert_eq!(agent.posts_for("SG-1.r1"), 2);
    assert_eq!(agent.accepted_messages().len(), 1);

    // The same key with another message is a sender's bug: refused for good, nothing recorded.
    let other = submission("SG-1", 1, &[(1, "MUG-RED", 3)]);
    let (status, body) = send(&agent, &other).await;
    assert_eq!(status, 422);
    assert!(
        body.contains("already used for a different message"),
        "{body}"
    );
    assert_eq!(agent.duplicates(), 1);
    assert_eq!(agent.pending_events(), 0);
    agent.stop().await;
}

#[tokio::test]
async fn a_wrong_or_missing_signature_is_refused_with_401() {
    let (agent, _shipgate) = setup().await;
    let message = submission("SG-1", 1, &[(1, "MUG-RED", 2)]);
    let body = message.to_json();
    let now = signature::now_secs();

    let wrong = sign(b"another-secret", now, &body);
    let (status, text) = post(&agent, &message.key, body.clone(), Some(wrong))
        .await
        .unwrap();
    assert_eq!(status, 401);
    assert!(text.contains("does not match"), "{text}");

    let (status, text) = post(&agent, &message.key, body.clone(), None)
        .await
        .unwrap();
    assert_eq!(status, 401);
    assert!(text.contains("missing Shipgate-Signature"), "{text}");

    // A signature over other bytes: the body was changed on the way.
    let tampered = sign(SECRET, now, b"{}");
    let (status, _) = post(&agent, &message.key, body, Some(tampered))
        .await
        .unwrap();
    assert_eq!(status, 401);

    assert_eq!(agent.posts_for(&message.key), 3);
    assert!(agent.accepted_messages().is_empty());
    assert_eq!(agent.pending_events(), 0);
    agent.stop().await;
}

#[tokio::test]
async fn a_timestamp_more_than_five_minutes_off_is_refused_with_401() {
    let (agent, _shipgate) = setup().await;
    let message = submission("SG-1", 1, &[(1, "MUG-RED", 2)]);
    let body = message.to_json();
    let now = signature::now_secs();
    for t in [now - 400, now + 400] {
        let stale = sign(SECRET, t, &body);
        let (status, text) = post(&agent, &message.key, body.clone(), Some(stale))
            .await
            .unwrap();
        assert_eq!(status, 401, "t = now {:+}", t - now);
        assert!(text.contains("away from now"), "{text}");
    }
    assert!(agent.accepted_messages().is_empty());
    // Inside the tolerance it is accepted.
    let fresh = sign(SECRET, now - 60, &body);
    let (status, _) = post(&agent, &message.key, body, Some(fresh)).await.unwrap();
    assert_eq!(status, 200);
    agent.stop().await;
}

#[tokio::test]
async fn a_body_that_is_not_a_valid_message_is_refused_with_400_naming_the_problem() {
    let (agent, _shipgate) = setup().await;
    let valid: Value =
        serde_json::from_slice(&submission("SG-1", 1, &[(1, "MUG-RED", 2)]).to_json()).unwrap();
    let with = |change: &dyn Fn(&mut Value)| {
        let mut value = valid.clone();
        change(&mut value);
        serde_json::to_vec(&value).unwrap()
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "body is not JSON"),
        (b"[1]".to_vec(), "not a JSON object"),
        (
            with(&|v| {
                v.as_object_mut().unwrap().remove("type");
            }),
            "`type` is missing",
        ),
        (
            with(&|v| v["type"] = json!("teleport")),
            "unknown `type` `teleport`",
        ),
        (
            with(&|v| {
                v.as_object_mut().unwrap().remove("shop");
            }),
            "missing field `shop`",
        ),
        (
            with(&|v| v["ship_to"]["email"] = json!("ada@example.com")),
            "unknown field `email`",
        ),
        (
            with(&|v| v["revision"] = json!(2)),
            "a submission has `revision` 1",
        ),
        (
            with(&|v| v["lines"][0]["quantity"] = json!(0)),
            "`lines[0].quantity` must be at least 1",
        ),
        (with(&|v| v["lines"] = json!([])), "`lines` is empty"),
        (with(&|v| v["sent_at"] = json!("yesterday")), "`sent_at`"),
        (
            with(&|v| v["key"] = json!("SG-1.r9")),
            "differs from the body's `key`",
        ),
    ];
    for (body, expected) in cases {
        let signature = sign(SECRET, signature::now_secs(), &body);
        let (status, text) = post(&agent, "SG-1.r1", body, Some(signature))
            .await
            .unwrap();
        assert_eq!(status, 400, "{expected}: {text}");
        assert!(text.contains(expected), "{text} should mention {expected}");
    }

    // The content type is checked too.
    let body = serde_json::to_vec(&valid).unwrap();
    let response = reqwest::Client::new()
        .post(agent.endpoint())
        .header("content-type", "text/plain")
        .header("idempotency-key", "SG-1.r1")
        .header(
            signature::HEADER,
            sign(SECRET, signature::now_secs(), &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert!(response.text().await.unwrap().contains("Content-Type"));
    assert!(agent.accepted_messages().is_empty());
    agent.stop().await;
}

#[tokio::test]
async fn a_lookup_finds_a_received_key_and_not_an_unknown_one() {
    let (agent, _shipgate) = setup().await;
    send(&agent, &submission("SG-7", 1, &[(1, "MUG-RED", 2)])).await;

    let (status, body) = lookup(&agent, "SG-7.r1", true).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json_of(&body),
        json!({"key": "SG-7.r1", "status": "received", "supplier_ref": "PO-1"})
    );
    let (status, body) = lookup(&agent, "SG-7.r2", true).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("SG-7.r2"), "{body}");
    let (status, _) = lookup(&agent, "SG-7.r1", false).await;
    assert_eq!(status, 401, "a lookup is signed like any message");
    assert_eq!(agent.lookups(), 3);
    agent.stop().await;
}

#[tokio::test]
async fn stockout_and_substitute_switches_shape_the_answers_and_decisions_settle_offers() {
    let (agent, shipgate) = setup().await;
    let restock = Day::parse("2026-12-10").unwrap();
    agent.stockout("MUG-RED", Some(restock.clone()));
    agent.substitute("MUG-BLUE", "MUG-NAVY", "navy instead of blue");
    agent.substitute("MUG-GREEN", "MUG-TEAL", "teal instead of green");
    let message = submission(
        "SG-2",
        1,
        &[
            (1, "MUG-RED", 2),
            (2, "MUG-BLUE", 1),
            (3, "MUG-GREEN", 1),
            (4, "PLATE", 3),
        ],
    );
    assert_eq!(send(&agent, &message).await.0, 200);
    flush(&agent).await;
    let stored = shipgate.stored();
    assert_eq!(
        names(&stored),
        [
            "received",
            "line_short",
            "substitute_offered",
            "substitute_offered",
            "line_confirmed"
        ]
    );
    assert_eq!(
        stored[1].kind,
        EventKind::LineShort {
            line_id: line_id(1),
            quantity_short: 2,
            restock_date: Some(restock),
            reason: Some("out of stock".into()),
        }
    );
    assert!(matches!(&stored[2].kind,
        EventKind::SubstituteOffered { line_id: l, offered_sku, differences, .. }
            if *l == line_id(2) && offered_sku == "MUG-NAVY" && differences == "navy instead of blue"));

    // Approving confirms the offered SKU; rejecting makes the line short.
    assert_eq!(send(&agent, &decision("SG-2", 2, true)).await.0, 200);
    assert_eq!(send(&agent, &decision("SG-2", 3, false)).await.0, 200);
    // A decision on a line with nothing on offer cannot be acted on.
    let (status, body) = send(&agent, &decision("SG-2", 4, true)).await;
    assert_eq!(status, 422);
    assert!(body.contains("no substitute is on offer"), "{body}");
    flush(&agent).await;
    let stored = shipgate.stored();
    assert_eq!(stored.len(), 7);
    assert!(matches!(&stored[5].kind,
        EventKind::LineConfirmed { line_id: l, sku, quantity: 1, .. }
            if *l == line_id(2) && sku == "MUG-NAVY"));
    assert!(matches!(&stored[6].kind,
        EventKind::LineShort { line_id: l, quantity_short: 1, restock_date: None, .. }
            if *l == line_id(3)));

    // Decision keys hold `gid://…`: the lookup finds them written as they are or percent-encoded.
    let key = decision("SG-2", 2, true).key;
    assert_eq!(lookup(&agent, &key, true).await.0, 200);
    let encoded = key.replace(':', "%3A").replace('/', "%2F");
    assert_eq!(lookup(&agent, &encoded, true).await.0, 200);

    // Shipping packs the confirmed lines only: the substitute and the plates.
    agent.ship("SG-2").unwrap();
    flush(&agent).await;
    let stored = shipgate.stored();
    let EventKind::Packed { parcels } = &stored[7].kind else {
        panic!("{:?}", stored[7]);
    };
    let packed: Vec<_> = parcels[0]
        .lines
        .iter()
        .map(|l| (l.line_id.clone(), l.quantity))
        .collect();
    assert_eq!(packed, [(line_id(2), 1), (line_id(4), 3)]);
    assert_eq!(parcels[0].weight_grams, Some(150 + 250 * 4));
    agent.stop().await;
}

#[tokio::test]
async fn the_reject_switch_answers_every_new_submission_with_rejected_only() {
    let (agent, shipgate) = setup().await;
    agent.reject(Some("we do not ship to GB".into()));
    let (status, body) = send(&agent, &submission("SG-3", 1, &[(1, "MUG-RED", 2)])).await;
    assert_eq!((status, body.as_str()), (200, r#"{"supplier_ref":"PO-1"}"#));
    flush(&agent).await;
    let stored = shipgate.stored();
    assert_eq!(
        stored.iter().map(|e| e.kind.clone()).collect::<Vec<_>>(),
        [EventKind::Rejected {
            reason: "we do not ship to GB".into()
        }]
    );
    assert!(matches!(
        agent.ship("SG-3"),
        Err(AgentError::CannotShip { .. })
    ));

    agent.clear_switches();
    send(&agent, &submission("SG-4", 1, &[(1, "MUG-RED", 2)])).await;
    flush(&agent).await;
    assert_eq!(
        names(&shipgate.stored()),
        ["rejected", "received", "line_confirmed"]
    );
    agent.stop().await;
}

#[tokio::test]
async fn an_amendment_is_received_again_and_confirms_its_remaining_lines() {
    let (agent, shipgate) = setup().await;
    send(
        &agent,
        &submission("SG-5", 1, &[(1, "MUG-RED", 2), (2, "PLATE", 1)]),
    )
    .await;
    let amendment = submission(
        "SG-5",
        2,
        &[(1, "MUG-RED", 1), (2, "PLATE", 0), (3, "BOWL", 4)],
    );
    let (status, body) = send(&agent, &amendment).await;
    assert_eq!((status, body.as_str()), (200, r#"{"supplier_ref":"PO-1"}"#));
    flush(&agent).await;
    let stored = shipgate.stored();
    assert_eq!(
        names(&stored),
        [
            "received",
            "line_confirmed",
            "line_confirmed",
            "received",
            "line_confirmed",
            "line_confirmed"
        ]
    );
    let confirmed: Vec<_> = stored[4..]
        .iter()
        .map(|e| match &e.kind {
            EventKind::LineConfirmed {
                line_id, quantity, ..
            } => (line_id.clone(), *quantity),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(confirmed, [(line_id(1), 1), (line_id(3), 4)]);
    assert_eq!(agent.accepted_messages()[1].kind, "amendment");

    // The parcel holds the amended quantities; the removed line is not in it.
    agent.ship("SG-5").unwrap();
    flush(&agent).await;
    let stored = shipgate.stored();
    let EventKind::Packed { parcels } = &stored[6].kind else {
        panic!("{:?}", stored[6]);
    };
    assert_eq!(parcels[0].lines.len(), 2);
    assert_eq!(parcels[0].lines[0].quantity, 1);
    agent.stop().await;
}

#[tokio::test]
async fn down_answers_503_and_holds_events_until_up_again() {
    // Events are queued before shipgate's address is known; then the agent goes down.
    let agent = agent().await;
    let shipgate = Shipgate::start().await;
    send(&agent, &submission("SG-6", 1, &[(1, "MUG-RED", 2)])).await;
    assert_eq!(agent.pending_events(), 2);
    agent.set_down(true);
    agent.set_report_to(shipgate.url.clone());

    let message = submission("SG-8", 1, &[(1, "PLATE", 1)]);
    let (status, _) = send(&agent, &message).await;
    assert_eq!(status, 503);
    assert_eq!(
        agent.posts_for("SG-8.r1"),
        1,
        "a POST while down still counts"
    );
    assert_eq!(lookup(&agent, "SG-6.r1", true).await.0, 503);
    assert_eq!(agent.accepted_messages().len(), 1);

    // Nothing goes out while down: flushing does not finish, and the stand-in saw nothing.
    let held = tokio::time::timeout(Duration::from_millis(300), agent.flush_events()).await;
    assert!(
        held.is_err(),
        "flush_events should wait while the agent is down"
    );
    assert!(shipgate.attempts().is_empty());
    assert_eq!(agent.pending_events(), 2);

    // A flush started while down resolves once the agent is up again.
    tokio::time::timeout(PATIENCE, async {
        tokio::join!(agent.flush_events(), async { agent.set_down(false) })
    })
    .await
    .expect("flush_events resolves once up");
    assert_eq!(names(&shipgate.stored()), ["received", "line_confirmed"]);
    assert_eq!(send(&agent, &message).await.0, 200);
    agent.stop().await;
}

#[tokio::test]
async fn a_dropped_response_closes_the_connection_but_the_message_is_recorded() {
    let (agent, shipgate) = setup().await;
    agent.drop_next_responses(1);
    let message = submission("SG-9", 1, &[(1, "MUG-RED", 2)]);
    let body = message.to_json();
    let signature = sign(SECRET, signature::now_secs(), &body);
    let lost = post(&agent, &message.key, body, Some(signature)).await;
    let error = lost.expect_err("the connection closes without an answer");
    assert!(!error.is_timeout(), "{error}");
    assert_eq!(agent.posts_for(&message.key), 1);
    assert_eq!(agent.accepted_messages().len(), 1);

    // shipgate's next step: ask before sending again. The agent has it.
    let (status, answer) = lookup(&agent, &message.key, true).await;
    assert_eq!(status, 200);
    assert_eq!(json_of(&answer)["supplier_ref"], "PO-1");
    // Sending it again anyway is a duplicate, answered alike (the switch is used up).
    assert_eq!(
        send(&agent, &message).await,
        (200, r#"{"supplier_ref":"PO-1"}"#.to_string())
    );
    assert_eq!(agent.duplicates(), 1);
    flush(&agent).await;
    assert_eq!(names(&shipgate.stored()), ["received", "line_confirmed"]);
    agent.stop().await;
}

#[tokio::test]
async fn a_slow_agent_acts_before_it_answers_and_stops_without_waiting_out_the_delay() {
    let (agent, shipgate) = setup().await;
    agent.set_slow(Some(Duration::from_secs(30)));
    let message = submission("SG-10", 1, &[(1, "MUG-RED", 2)]);
    let body = message.to_json();
    let response = reqwest::Client::new()
        .post(agent.endpoint())
        .timeout(Duration::from_millis(300))
        .header("content-type", "application/json")
        .header("idempotency-key", &message.key)
        .header(
            signature::HEADER,
            sign(SECRET, signature::now_secs(), &body),
        )
        .body(body)
        .send()
        .await;
    assert!(response.expect_err("no answer in time").is_timeout());
    // The events prove the agent acted although the client gave up.
    shipgate.wait_stored(2).await;
    assert_eq!(agent.accepted_messages().len(), 1);
    tokio::time::timeout(PATIENCE, agent.stop())
        .await
        .expect("stop cuts the slow answer short");
}

#[tokio::test]
async fn a_cancellation_is_answered_with_a_cancelled_event() {
    let (agent, shipgate) = setup().await;
    send(&agent, &submission("SG-11", 1, &[(1, "MUG-RED", 2)])).await;
    let (status, body) = send(&agent, &cancellation("SG-11")).await;
    assert_eq!((status, body.as_str()), (200, r#"{"supplier_ref":"PO-1"}"#));
    flush(&agent).await;
    let stored = shipgate.stored();
    assert_eq!(names(&stored), ["received", "line_confirmed", "cancelled"]);
    assert_eq!(stored[2].kind, EventKind::Cancelled { reason: None });
    assert_eq!(agent.accepted_messages()[1].kind, "cancellation");
    assert!(matches!(
        agent.ship("SG-11"),
        Err(AgentError::CannotShip { .. })
    ));

    // A later revision cannot revive it.
    send(&agent, &submission("SG-11", 2, &[(1, "MUG-RED", 1)])).await;
    flush(&agent).await;
    assert!(matches!(
        &shipgate.stored()[3].kind,
        EventKind::Rejected { reason } if reason.contains("cancelled")
    ));
    agent.stop().await;
}

#[tokio::test]
async fn shipping_reports_parcel_label_and_handover_with_a_unique_tracking_number() {
    let (agent, shipgate) = setup().await;
    send(
        &agent,
        &submission("SG-12", 1, &[(1, "MUG-RED", 2), (2, "PLATE", 1)]),
    )
    .await;
    send(&agent, &submission("SG-13", 1, &[(1, "BOWL", 1)])).await;
    let first = agent.ship("SG-12").unwrap();
    let second = agent.ship("SG-13").unwrap();
    assert!(first.starts_with("1ZSG") && first.len() == 18, "{first}");
    assert_ne!(first, second);
    flush(&agent).await;
    let stored: Vec<_> = shipgate
        .stored()
        .into_iter()
        .filter(|e| e.shipment_id == "SG-12")
        .collect();
    assert_eq!(
        names(&stored),
        [
            "received",
            "line_confirmed",
            "line_confirmed",
            "packed",
            "label_created",
            "handed_over"
        ]
    );
    assert_eq!(
        stored[4].kind,
        EventKind::LabelCreated {
            parcel_id: Some("PO-1-1".into()),
            carrier: "UPS".into(),
            tracking_number: first.clone(),
            tracking_url: Some(format!("https://www.ups.com/track?tracknum={first}")),
        }
    );
    assert_eq!(
        stored[5].kind,
        EventKind::HandedOver {
            parcel_id: Some("PO-1-1".into()),
            carrier: Some("UPS".into()),
            tracking_number: Some(first.clone()),
        }
    );
    assert!(
        matches!(agent.ship("SG-12"), Err(AgentError::CannotShip { reason, .. }) if reason.contains(&first))
    );
    assert_eq!(
        agent.ship("SG-404"),
        Err(AgentError::UnknownShipment("SG-404".into()))
    );

    // Too late to cancel: the agent cannot stop a parcel that left, so it claims nothing.
    let before = shipgate.stored().len();
    send(&agent, &cancellation("SG-12")).await;
    flush(&agent).await;
    assert_eq!(
        shipgate.stored().len(),
        before,
        "no `cancelled` for a shipped parcel"
    );
    agent.stop().await;
}

#[tokio::test]
async fn events_are_retried_under_the_same_id_and_a_refusal_is_recorded() {
    let (agent, shipgate) = setup().await;
    // shipgate fails twice in ways worth retrying, then refuses the event for good.
    shipgate
        .received
        .script
        .lock()
        .unwrap()
        .extend([503, 429, 422]);
    send(&agent, &submission("SG-14", 1, &[(1, "MUG-RED", 2)])).await;
    flush(&agent).await;
    assert_eq!(
        shipgate.attempts(),
        ["evt_acme_1", "evt_acme_1", "evt_acme_1", "evt_acme_2"]
    );
    let refused = agent.events_refused();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].event.id, "evt_acme_1");
    assert_eq!(refused[0].status, 422);
    assert_eq!(refused[0].answer, "scripted answer");
    assert_eq!(names(&agent.events_sent()), ["line_confirmed"]);
    assert_eq!(names(&shipgate.stored()), ["line_confirmed"]);
    agent.stop().await;
}

#[tokio::test]
async fn flushing_with_nothing_queued_or_after_stop_returns_at_once() {
    let (agent, _shipgate) = setup().await;
    flush(&agent).await;
    // Queued but never sent: shipgate's address is wrong and the agent stops.
    agent.set_report_to("http://127.0.0.1:9/nowhere");
    send(&agent, &submission("SG-15", 1, &[(1, "MUG-RED", 2)])).await;
    let other = agent.clone();
    agent.stop().await;
    flush(&other).await;
    assert_eq!(other.pending_events(), 2);
}

#[tokio::test]
async fn settings_without_a_name_or_secret_are_refused() {
    let error = SandboxAgent::start(AgentSettings {
        name: " ".into(),
        secret: SECRET.to_vec(),
    })
    .await
    .err()
    .unwrap();
    assert!(error.to_string().contains("name"), "{error}");
    let error = SandboxAgent::start(AgentSettings {
        name: NAME.into(),
        secret: Vec::new(),
    })
    .await
    .err()
    .unwrap();
    assert!(error.to_string().contains("secret"), "{error}");
    let debug = format!(
        "{:?}",
        AgentSettings {
            name: NAME.into(),
            secret: SECRET.to_vec()
        }
    );
    assert!(!debug.contains("agent-secret"), "{debug}");
}
