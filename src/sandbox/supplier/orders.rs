//! What the agent does with each message: the state of the shipments it holds, the switches that
//! change its answers, and the events each message causes (docs/suppliers.md sections 2 and 3).
//!
//! Everything here runs under one lock, so the events of one message are queued together and in
//! the order the messages were accepted, as a real agent's system would report them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

use super::{AcceptedMessage, AgentError, RefusedEvent};
use crate::order::Timestamp;
use crate::suppliers::{
    Day, EventKind, MessageBody, MessageLine, PackedParcel, ParcelLine, SupplierEvent,
    SupplierMessage,
};

/// The carrier every sandbox parcel goes with.
pub(super) const CARRIER: &str = "UPS";

/// Grams per unit and for the box, for a plausible parcel weight.
const GRAMS_PER_UNIT: i64 = 250;
const GRAMS_PER_BOX: i64 = 150;

/// Days between a confirmation and the promised ship-by date.
const SHIP_WITHIN_DAYS: i64 = 2;

/// Tracking numbers are unique in the process (several agents may feed one shipgate, which
/// treats a number seen on another open order as a conflict) and across runs (the random part).
static TRACKING_SEQ: AtomicU64 = AtomicU64::new(0);

/// The switches that make the agent misbehave. `down` lives apart, in the readiness channel,
/// because the event sender waits on it.
#[derive(Debug, Default)]
pub(super) struct Switches {
    pub slow: Option<Duration>,
    pub drop_responses: usize,
    /// SKU → restock date.
    pub stockouts: HashMap<String, Option<Day>>,
    /// SKU → (offered SKU, what differs).
    pub substitutes: HashMap<String, (String, String)>,
    pub reject: Option<String>,
    /// An address whose first line contains this (or no address) cannot be shipped to.
    pub undeliverable: Option<String>,
}

/// Where one order line stands at the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LineState {
    /// Will ship this SKU.
    Confirmed { sku: String },
    /// Cannot ship it.
    Short,
    /// Waiting for the owner's decision on this SKU instead.
    Offered { offered_sku: String },
    /// Quantity 0 in the latest revision.
    Removed,
}

#[derive(Debug, Clone)]
struct Line {
    line_id: String,
    sku: String,
    quantity: i64,
    state: LineState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    Open,
    Rejected,
    Cancelled,
    Shipped { tracking_number: String },
}

#[derive(Debug, Clone)]
struct Shipment {
    supplier_ref: String,
    revision: u32,
    lines: Vec<Line>,
    status: Status,
}

/// What became of a message that passed the signature and format checks.
pub(super) enum Acceptance {
    /// A new key: recorded, and its events queued.
    New { supplier_ref: Option<String> },
    /// A key already recorded with the same message: nothing more is done.
    Duplicate { supplier_ref: Option<String> },
    /// The message cannot be acted on; the text says why (a 422 answer).
    Refused(String),
}

/// Everything the agent knows, behind one lock.
pub(super) struct State {
    /// The supplier name, part of every event id.
    name: String,
    pub switches: Switches,
    shipments: HashMap<String, Shipment>,
    accepted: Vec<AcceptedMessage>,
    by_key: HashMap<String, usize>,
    posts: HashMap<String, usize>,
    pub lookups: usize,
    pub duplicates: usize,
    next_ref: u64,
    next_event: u64,
    /// Events not yet answered by shipgate, oldest first. The sender leaves an event here until
    /// it is answered, so that [`State::pending`] counts the one in flight too.
    outbox: VecDeque<SupplierEvent>,
    /// Events ever queued; `flush_events` waits for the sender's count to reach it.
    pub queued_total: u64,
    sent: Vec<SupplierEvent>,
    refused: Vec<RefusedEvent>,
}

fn today_plus(days: i64) -> Option<Day> {
    let date = time::OffsetDateTime::now_utc().date() + time::Duration::days(days);
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Day::parse(&date.format(format).ok()?).ok()
}

fn now() -> Timestamp {
    Timestamp::from_unix_ms(crate::delivery::now_ms() as i64)
}

impl State {
    pub fn new(name: &str) -> State {
        State {
            name: name.to_string(),
            switches: Switches::default(),
            shipments: HashMap::new(),
            accepted: Vec::new(),
            by_key: HashMap::new(),
            posts: HashMap::new(),
            lookups: 0,
            duplicates: 0,
            next_ref: 0,
            next_event: 0,
            outbox: VecDeque::new(),
            queued_total: 0,
            sent: Vec::new(),
            refused: Vec::new(),
        }
    }

    /// Counts a POST that carried `key`, whatever became of it.
    pub fn count_post(&mut self, key: &str) {
        *self.posts.entry(key.to_string()).or_default() += 1;
    }

    pub fn posts_for(&self, key: &str) -> usize {
        self.posts.get(key).copied().unwrap_or(0)
    }

    pub fn accepted(&self) -> Vec<AcceptedMessage> {
        self.accepted.clone()
    }

    /// The record of a key, for lookups.
    pub fn find(&self, key: &str) -> Option<&AcceptedMessage> {
        self.by_key.get(key).map(|&i| &self.accepted[i])
    }

    pub fn sent(&self) -> Vec<SupplierEvent> {
        self.sent.clone()
    }

    pub fn refused(&self) -> Vec<RefusedEvent> {
        self.refused.clone()
    }

    pub fn pending(&self) -> usize {
        self.outbox.len()
    }

    /// The oldest unanswered event, which the sender is to deliver next.
    pub fn next_to_send(&self) -> Option<SupplierEvent> {
        self.outbox.front().cloned()
    }

    /// Takes the oldest event off the queue once shipgate answered it: `refused` holds the status
    /// and answer when it was refused for good.
    pub fn answered(&mut self, id: &str, refused: Option<(u16, String)>) {
        // Only the sender removes events, one at a time, so the front is the one it sent.
        let Some(event) = self.outbox.pop_front() else {
            return;
        };
        debug_assert_eq!(event.id, id, "the sender answers the front event");
        match refused {
            None => self.sent.push(event),
            Some((status, answer)) => self.refused.push(RefusedEvent {
                event,
                status,
                answer,
            }),
        }
    }

    fn queue(&mut self, shipment_id: &str, kind: EventKind) {
        self.next_event += 1;
        let event = SupplierEvent {
            id: format!("evt_{}_{}", self.name, self.next_event),
            shipment_id: shipment_id.to_string(),
            occurred_at: now(),
            kind,
        };
        self.outbox.push_back(event);
        self.queued_total += 1;
    }

    /// Acts on a message that passed the signature and format checks. The flag returned with the
    /// outcome is set when the drop switch claims this answer; only new keys and duplicates can
    /// lose theirs, because a lost answer matters only when the message really arrived.
    pub fn receive(&mut self, message: SupplierMessage, body: Value) -> (Acceptance, bool) {
        if let Some(&i) = self.by_key.get(&message.key) {
            let earlier = &self.accepted[i];
            if earlier.message == message {
                self.duplicates += 1;
                let supplier_ref = earlier.supplier_ref.clone();
                return (Acceptance::Duplicate { supplier_ref }, self.take_drop());
            }
            // The same key always means the same message; a different one under it is a bug in
            // the sender that a real agent could not resolve either.
            let reason = format!(
                "key `{}` was already used for a different message (a {} of {})",
                message.key, earlier.kind, earlier.shipment_id
            );
            return (Acceptance::Refused(reason), false);
        }
        let outcome = match &message.body {
            MessageBody::Submission {
                revision,
                lines,
                ship_to,
                ..
            } => Ok(Some(self.submit(
                &message.shipment_id,
                *revision,
                lines,
                ship_to.as_deref(),
            ))),
            MessageBody::Cancellation { .. } => Ok(self.cancel(&message.shipment_id)),
            MessageBody::Decision { line_id, approve } => {
                self.decide(&message.shipment_id, line_id, *approve)
            }
            // The owner's answer to a failed check or a stuck parcel: the agent takes note; a
            // new check or label is reported by hand in tests (the agent has no goods).
            MessageBody::CheckDecision { .. } | MessageBody::ParcelDecision { .. } => {
                match self.shipments.get(&message.shipment_id) {
                    Some(_) => Ok(None),
                    None => Err(format!("no shipment `{}` here", message.shipment_id)),
                }
            }
        };
        let supplier_ref = match outcome {
            Ok(supplier_ref) => supplier_ref,
            Err(reason) => return (Acceptance::Refused(reason), false),
        };
        self.by_key.insert(message.key.clone(), self.accepted.len());
        self.accepted.push(AcceptedMessage {
            key: message.key.clone(),
            kind: message.kind().to_string(),
            shipment_id: message.shipment_id.clone(),
            body,
            supplier_ref: supplier_ref.clone(),
            message,
        });
        (Acceptance::New { supplier_ref }, self.take_drop())
    }

    fn take_drop(&mut self) -> bool {
        if self.switches.drop_responses == 0 {
            return false;
        }
        self.switches.drop_responses -= 1;
        true
    }

    /// What the agent does with an order line, given the switches: a substitute on offer wins
    /// over a plain stockout, since offering one implies the ordered item is not available.
    fn line_event(&self, line: &MessageLine) -> (EventKind, LineState) {
        if let Some((offered_sku, differences)) = self.switches.substitutes.get(&line.sku) {
            let kind = EventKind::SubstituteOffered {
                line_id: line.line_id.clone(),
                offered_sku: offered_sku.clone(),
                offered_variant: None,
                differences: differences.clone(),
                photos: Vec::new(),
                price_change: None,
                expires_at: None,
            };
            let state = LineState::Offered {
                offered_sku: offered_sku.clone(),
            };
            return (kind, state);
        }
        if let Some(restock) = self.switches.stockouts.get(&line.sku) {
            let kind = EventKind::LineShort {
                line_id: line.line_id.clone(),
                quantity_short: line.quantity,
                restock_date: restock.clone(),
                reason: Some("out of stock".into()),
            };
            return (kind, LineState::Short);
        }
        let kind = EventKind::LineConfirmed {
            line_id: line.line_id.clone(),
            sku: line.sku.clone(),
            variant: line.variant_title.clone(),
            quantity: line.quantity,
            cost: None,
            ship_by: today_plus(SHIP_WITHIN_DAYS),
            hold_until: None,
        };
        let state = LineState::Confirmed {
            sku: line.sku.clone(),
        };
        (kind, state)
    }

    /// A submission (revision 1) or an amendment (a later revision with the full new list of
    /// lines). Returns the shipment's supplier reference: one per shipment, as a purchase order.
    fn submit(
        &mut self,
        shipment_id: &str,
        revision: u32,
        lines: &[MessageLine],
        ship_to: Option<&crate::order::Address>,
    ) -> String {
        let known = self.shipments.get(shipment_id).cloned();
        let supplier_ref = match &known {
            Some(shipment) => shipment.supplier_ref.clone(),
            None => {
                self.next_ref += 1;
                format!("PO-{}", self.next_ref)
            }
        };
        if let Some(shipment) = &known
            && revision <= shipment.revision
        {
            // An older revision arriving late (or a revision sent again under a new key): the
            // newer one already stands, so this one changes nothing.
            return supplier_ref;
        }
        let mut shipment = known.unwrap_or(Shipment {
            supplier_ref: supplier_ref.clone(),
            revision,
            lines: Vec::new(),
            status: Status::Open,
        });
        shipment.revision = revision;
        let refusal = match (&self.switches.reject, &shipment.status) {
            (Some(reason), _) => Some((reason.clone(), Status::Rejected)),
            (None, Status::Cancelled) => Some((
                format!("the shipment was cancelled before revision {revision} arrived"),
                Status::Cancelled,
            )),
            (None, Status::Shipped { tracking_number }) => Some((
                format!(
                    "already handed to {CARRIER} as {tracking_number}; revision {revision} was not applied"
                ),
                shipment.status.clone(),
            )),
            (None, Status::Open | Status::Rejected) => None,
        };
        let undeliverable = self.switches.undeliverable.as_ref().and_then(|text| {
            let line = ship_to.and_then(|a| a.address1.as_deref());
            match line {
                None => Some("the order came without a street address".to_string()),
                Some(line) if line.contains(text.as_str()) => Some(format!(
                    "{CARRIER} does not deliver to \"{text}\" addresses; send a street address"
                )),
                Some(_) => None,
            }
        });
        let mut events = Vec::new();
        if let Some((reason, status)) = refusal {
            shipment.status = status;
            events.push(EventKind::Rejected { reason });
        } else if let Some(reason) = undeliverable {
            // The lines wait for an amendment with an address the agent can ship to.
            shipment.status = Status::Open;
            events.push(EventKind::Received {
                supplier_ref: Some(supplier_ref.clone()),
            });
            events.push(EventKind::AddressIssue { reason });
        } else {
            shipment.status = Status::Open;
            events.push(EventKind::Received {
                supplier_ref: Some(supplier_ref.clone()),
            });
            shipment.lines = lines
                .iter()
                .map(|line| {
                    let state = if line.quantity == 0 {
                        LineState::Removed
                    } else {
                        let (event, state) = self.line_event(line);
                        events.push(event);
                        state
                    };
                    Line {
                        line_id: line.line_id.clone(),
                        sku: line.sku.clone(),
                        quantity: line.quantity,
                        state,
                    }
                })
                .collect();
        }
        self.shipments.insert(shipment_id.to_string(), shipment);
        for event in events {
            self.queue(shipment_id, event);
        }
        supplier_ref
    }

    /// A cancellation: the agent stops the shipment and says so, or says it could not.
    fn cancel(&mut self, shipment_id: &str) -> Option<String> {
        let Some(shipment) = self.shipments.get_mut(shipment_id) else {
            // Nothing to stop: confirming the cancellation is the truthful answer.
            self.queue(
                shipment_id,
                EventKind::Cancelled {
                    reason: Some("no order for this shipment reached us; nothing will ship".into()),
                },
            );
            return None;
        };
        let supplier_ref = shipment.supplier_ref.clone();
        // docs/suppliers.md 2.1: a shipment that already left cannot be stopped by the agent,
        // so it sends no `cancelled` (that would claim it was stopped); the owner decides.
        if let Status::Shipped { .. } = &shipment.status {
            return Some(supplier_ref);
        }
        shipment.status = Status::Cancelled;
        let reason = None;
        self.queue(shipment_id, EventKind::Cancelled { reason });
        Some(supplier_ref)
    }

    /// The owner's decision on a substitute the agent offered.
    fn decide(
        &mut self,
        shipment_id: &str,
        line_id: &str,
        approve: bool,
    ) -> Result<Option<String>, String> {
        let restock_dates = &self.switches.stockouts;
        let shipment = self
            .shipments
            .get_mut(shipment_id)
            .ok_or_else(|| format!("no shipment `{shipment_id}` here"))?;
        if shipment.status != Status::Open {
            return Err(format!(
                "shipment `{shipment_id}` is no longer open ({:?})",
                shipment.status
            ));
        }
        let line = shipment
            .lines
            .iter_mut()
            .find(|l| l.line_id == line_id)
            .ok_or_else(|| format!("shipment `{shipment_id}` has no line `{line_id}`"))?;
        let LineState::Offered { offered_sku } = &line.state else {
            return Err(format!(
                "no substitute is on offer for line `{line_id}` of shipment `{shipment_id}`"
            ));
        };
        let event = if approve {
            let sku = offered_sku.clone();
            line.state = LineState::Confirmed { sku: sku.clone() };
            EventKind::LineConfirmed {
                line_id: line_id.to_string(),
                sku,
                variant: None,
                quantity: line.quantity,
                cost: None,
                ship_by: today_plus(SHIP_WITHIN_DAYS),
                hold_until: None,
            }
        } else {
            line.state = LineState::Short;
            EventKind::LineShort {
                line_id: line_id.to_string(),
                quantity_short: line.quantity,
                restock_date: restock_dates.get(&line.sku).cloned().flatten(),
                reason: Some("substitute declined; the ordered item is out of stock".into()),
            }
        };
        let supplier_ref = shipment.supplier_ref.clone();
        self.queue(shipment_id, event);
        Ok(Some(supplier_ref))
    }

    /// Packs every confirmed line into one parcel, buys a label and hands it over.
    pub fn ship(&mut self, shipment_id: &str) -> Result<String, AgentError> {
        let shipment = self
            .shipments
            .get_mut(shipment_id)
            .ok_or_else(|| AgentError::UnknownShipment(shipment_id.to_string()))?;
        let cannot = |reason: String| AgentError::CannotShip {
            shipment_id: shipment_id.to_string(),
            reason,
        };
        match &shipment.status {
            Status::Open => {}
            Status::Rejected => return Err(cannot("it was rejected".into())),
            Status::Cancelled => return Err(cannot("it was cancelled".into())),
            Status::Shipped { tracking_number } => {
                return Err(cannot(format!(
                    "it was already shipped as {tracking_number}"
                )));
            }
        }
        let lines: Vec<ParcelLine> = shipment
            .lines
            .iter()
            .filter(|l| matches!(l.state, LineState::Confirmed { .. }))
            .map(|l| ParcelLine {
                line_id: l.line_id.clone(),
                quantity: l.quantity,
            })
            .collect();
        if lines.is_empty() {
            return Err(cannot("no line of it is confirmed".into()));
        }
        let units: i64 = lines.iter().map(|l| l.quantity).sum();
        let tracking_number = format!(
            "1ZSG{:04}{:010}",
            TRACKING_SEQ.fetch_add(1, Ordering::Relaxed) % 10_000,
            rand::random::<u64>() % 10_000_000_000
        );
        let parcel_id = format!("{}-1", shipment.supplier_ref);
        shipment.status = Status::Shipped {
            tracking_number: tracking_number.clone(),
        };
        let events = [
            EventKind::Packed {
                parcels: vec![PackedParcel {
                    parcel_id: parcel_id.clone(),
                    lines,
                    weight_grams: Some(GRAMS_PER_BOX + GRAMS_PER_UNIT * units),
                    dimensions_cm: Some([30, 20, 15]),
                    photos: Vec::new(),
                }],
            },
            EventKind::LabelCreated {
                parcel_id: Some(parcel_id.clone()),
                carrier: CARRIER.into(),
                tracking_number: tracking_number.clone(),
                tracking_url: Some(format!(
                    "https://www.ups.com/track?tracknum={tracking_number}"
                )),
            },
            EventKind::HandedOver {
                parcel_id: Some(parcel_id),
                carrier: Some(CARRIER.into()),
                tracking_number: Some(tracking_number.clone()),
            },
        ];
        for event in events {
            self.queue(shipment_id, event);
        }
        Ok(tracking_number)
    }
}
