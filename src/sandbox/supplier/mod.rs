//! The sandbox supplier agent: a loopback stand-in for a supplier or sourcing agent on the `http`
//! adapter, answering as docs/suppliers.md says a real one does, so that the integration tests and
//! `shipgate demo` exercise the supplier channel end to end.
//!
//! It receives shipgate's signed messages on [`SandboxAgent::endpoint`] (section 2), acts on each
//! idempotency key once, and reports what it does as signed events to shipgate's
//! `/webhooks/suppliers/<name>` (section 3): in order, one at a time, each retried under the same
//! id until shipgate answers it. Switches make it fail the ways real agents do: down, slow,
//! losing answers, out of stock, offering substitutes, rejecting orders.
//!
//! What it does with each message:
//! - a new submission: answers `200 {"supplier_ref":"PO-<n>"}` (one reference per shipment), then
//!   reports `received` and, per line, `line_confirmed`, `line_short` (stockout switch) or
//!   `substitute_offered` (substitute switch); with the reject switch on, only `rejected`; for an
//!   address it is told it cannot ship to (undeliverable switch), `address_issue` instead of lines;
//! - an amendment: `received` again and an event per line of the new list whose quantity is not 0;
//!   a revision older than the one it holds changes nothing;
//! - a cancellation: `cancelled`, unless [`SandboxAgent::ship`] already ran (a parcel that left
//!   cannot be stopped by the agent: it says nothing and the owner decides);
//! - a decision: `line_confirmed` with the offered SKU, or `line_short`; a decision for a line
//!   with no substitute on offer is refused with 422;
//! - a key it already has with the same message: the same answer again and nothing else; a key
//!   it has with a different message: 422.
//!
//! Layout: `wire` reads messages strictly; `orders` holds the state and decides what each message
//! causes; `server` is the HTTP side (including closing a connection without answering);
//! `outbox` sends the events.

// Every public item here is documented; the lint keeps it that way.
#![warn(missing_docs)]

mod orders;
mod outbox;
mod server;
#[cfg(test)]
mod tests;
mod wire;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::suppliers::{Day, SupplierEvent, SupplierMessage};
use orders::State;

/// How a sandbox agent is set up.
#[derive(Clone)]
pub struct AgentSettings {
    /// The supplier's name in shipgate's configuration: the `<name>` of
    /// `/webhooks/suppliers/<name>`, and part of every event id (`evt_<name>_<n>`).
    pub name: String,
    /// The shared secret: it verifies shipgate's messages and signs the agent's events.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for AgentSettings {
    // Secrets stay out of debug output, as everywhere in shipgate.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSettings")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A message the agent recorded: a new key that passed the signature and format checks
/// (including those whose answer was then lost on purpose). Duplicates are not repeated here.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedMessage {
    /// The idempotency key.
    pub key: String,
    /// The wire `type`: `submission`, `amendment`, `cancellation` or `decision`.
    pub kind: String,
    /// The shipment it is about.
    pub shipment_id: String,
    /// The body as received.
    pub body: serde_json::Value,
    /// The body read into shipgate's own type.
    pub message: SupplierMessage,
    /// The reference the agent answered with (None for a shipment it never had).
    pub supplier_ref: Option<String>,
}

/// An event shipgate refused for good (a 4xx other than 408 and 429); the agent does not send it
/// again, as a real agent would give up on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedEvent {
    /// The event.
    pub event: SupplierEvent,
    /// shipgate's status code.
    pub status: u16,
    /// The start of shipgate's answer.
    pub answer: String,
}

/// Why [`SandboxAgent::ship`] could not ship.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// The agent never received a submission for this shipment.
    #[error("the agent has no shipment `{0}`")]
    UnknownShipment(String),
    /// The shipment is in no state to ship; `reason` says why.
    #[error("cannot ship `{shipment_id}`: {reason}")]
    CannotShip {
        /// The shipment.
        shipment_id: String,
        /// Why not.
        reason: String,
    },
}

/// What the event sender waits for before each attempt.
#[derive(Debug, Clone, Default)]
struct Readiness {
    down: bool,
    report_to: Option<String>,
}

/// The sender's progress, for `flush_events`.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// Events answered (stored or refused) so far.
    done: u64,
    /// The agent stopped: nothing more will be answered, so nobody should wait.
    stopped: bool,
}

/// What the server, the sender and the handles share.
struct Inner {
    secret: Vec<u8>,
    endpoint: String,
    state: Mutex<State>,
    readiness: watch::Sender<Readiness>,
    progress: watch::Sender<Progress>,
    /// Wakes the sender when events are queued. It has a single waiter, so `notify_one`'s stored
    /// permit means a wake-up sent while it was busy is not lost.
    wake: Notify,
    cancel: CancellationToken,
}

impl Inner {
    /// Locks the state. A panic elsewhere (a failed assertion in a test's task) must not take the
    /// agent down with it, so a poisoned lock is used as it is.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_down(&self) -> bool {
        self.readiness.borrow().down
    }
}

/// A running sandbox agent. Cloning gives another handle to the same agent; every method takes
/// `&self` and may be called from any task.
#[derive(Clone)]
pub struct SandboxAgent {
    inner: Arc<Inner>,
    name: String,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl SandboxAgent {
    /// Starts the agent on `127.0.0.1:0` with its event sender. Events wait in the queue until
    /// [`SandboxAgent::set_report_to`] says where shipgate is.
    pub async fn start(settings: AgentSettings) -> std::io::Result<SandboxAgent> {
        let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
        if settings.name.trim().is_empty() {
            return Err(invalid(
                "the agent needs the supplier's name from shipgate's configuration",
            ));
        }
        if settings.secret.is_empty() {
            return Err(invalid(
                "the agent needs a non-empty secret to sign and verify with",
            ));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}/orders", listener.local_addr()?);
        let inner = Arc::new(Inner {
            secret: settings.secret,
            endpoint,
            state: Mutex::new(State::new(&settings.name)),
            readiness: watch::Sender::new(Readiness::default()),
            progress: watch::Sender::new(Progress::default()),
            wake: Notify::new(),
            cancel: CancellationToken::new(),
        });
        let sender = tokio::spawn(outbox::run(inner.clone()));
        let server = tokio::spawn(server::serve(listener, inner.clone()));
        Ok(SandboxAgent {
            inner,
            name: settings.name,
            tasks: Arc::new(Mutex::new(vec![sender, server])),
        })
    }

    /// The supplier's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `http://127.0.0.1:PORT/orders`: the supplier's `endpoint` in shipgate's configuration.
    /// Messages are POSTed here; `GET {endpoint}/{key}` looks a key up (the key may be sent
    /// as it is or percent-encoded).
    pub fn endpoint(&self) -> String {
        self.inner.endpoint.clone()
    }

    /// Where events go: shipgate's `http://…/webhooks/suppliers/<name>`, known only once shipgate
    /// has started. Queued events start going out when it is set.
    pub fn set_report_to(&self, url: impl Into<String>) {
        let url = url.into();
        self.inner
            .readiness
            .send_modify(|r| r.report_to = Some(url));
    }

    /// Down: every request is answered 503 (it is still counted) and no event is sent; queued
    /// events stay queued, in order, until the agent is up again.
    pub fn set_down(&self, down: bool) {
        self.inner.readiness.send_modify(|r| r.down = down);
    }

    /// Slow: each request is processed at once, then its answer waits `delay`, so that a client
    /// that times out does so after the agent really acted (None: answer at once). The 503 of a
    /// down agent is not delayed.
    pub fn set_slow(&self, delay: Option<Duration>) {
        self.inner.state().switches.slow = delay;
    }

    /// Lost answers: the next `n` messages that are recorded (new keys and duplicates alike) are
    /// acted on, then their connection is closed without an answer. Replaces an earlier count.
    pub fn drop_next_responses(&self, n: usize) {
        self.inner.state().switches.drop_responses = n;
    }

    /// Out of stock: lines of `sku` in later submissions and amendments get `line_short` for
    /// their whole quantity, with `restock` as the restock date.
    pub fn stockout(&self, sku: impl Into<String>, restock: Option<Day>) {
        self.inner
            .state()
            .switches
            .stockouts
            .insert(sku.into(), restock);
    }

    /// Substitutes: lines of `sku` in later submissions and amendments get `substitute_offered`
    /// with `offered_sku` and `differences` (what the owner should know). This wins over a
    /// stockout of the same SKU: offering a substitute implies the ordered item is not there.
    pub fn substitute(
        &self,
        sku: impl Into<String>,
        offered_sku: impl Into<String>,
        differences: impl Into<String>,
    ) {
        self.inner
            .state()
            .switches
            .substitutes
            .insert(sku.into(), (offered_sku.into(), differences.into()));
    }

    /// Undeliverable addresses: a later submission or amendment whose address line contains
    /// `text` (or that carries no address) is answered 200, then reported `received` and
    /// `address_issue` instead of its lines; one with another address is handled as usual.
    pub fn refuse_addresses_containing(&self, text: impl Into<String>) {
        self.inner.state().switches.undeliverable = Some(text.into());
    }

    /// Rejection: with `Some(reason)`, every later submission and amendment is answered 200 and
    /// then only a `rejected` event with that reason is sent; `None` turns it off.
    pub fn reject(&self, reason: Option<String>) {
        self.inner.state().switches.reject = reason;
    }

    /// Turns every switch off: up, fast, answering, in stock, no substitutes, not rejecting.
    pub fn clear_switches(&self) {
        self.inner.state().switches = orders::Switches::default();
        self.set_down(false);
    }

    /// Ships a shipment it holds: queues `packed` (one parcel with every confirmed line),
    /// `label_created` (UPS, a new tracking number) and `handed_over`, and returns the tracking
    /// number (`1ZSG` and 14 digits, unique in the process).
    pub fn ship(&self, shipment_id: &str) -> Result<String, AgentError> {
        let tracking_number = self.inner.state().ship(shipment_id)?;
        self.inner.wake.notify_one();
        Ok(tracking_number)
    }

    /// Resolves once every event queued before the call was answered by shipgate (stored, or
    /// refused for good). Tests use it instead of sleeping. While the agent is down, or before
    /// [`SandboxAgent::set_report_to`], nothing is sent, so it waits until the agent is up and
    /// knows where to report; after [`SandboxAgent::stop`] it resolves at once.
    pub async fn flush_events(&self) {
        let target = self.inner.state().queued_total;
        let mut progress = self.inner.progress.subscribe();
        // The sender lives in `inner`, which this handle keeps alive, so the channel cannot close.
        let _ = progress.wait_for(|p| p.stopped || p.done >= target).await;
    }

    /// Events queued and not yet answered (including the one in flight).
    pub fn pending_events(&self) -> usize {
        self.inner.state().pending()
    }

    /// How many POSTs carried this `Idempotency-Key`, whatever became of them: duplicates, those
    /// answered 503 while down, 401 or 400, and those whose answer was lost all count.
    pub fn posts_for(&self, key: &str) -> usize {
        self.inner.state().posts_for(key)
    }

    /// The messages recorded, in the order they arrived.
    pub fn accepted_messages(&self) -> Vec<AcceptedMessage> {
        self.inner.state().accepted()
    }

    /// How many lookups (`GET {endpoint}/{key}`) arrived, whatever the answer.
    pub fn lookups(&self) -> usize {
        self.inner.state().lookups
    }

    /// How many messages repeated a recorded key with the same message.
    pub fn duplicates(&self) -> usize {
        self.inner.state().duplicates
    }

    /// The events shipgate answered with a 2xx, in the order sent.
    pub fn events_sent(&self) -> Vec<SupplierEvent> {
        self.inner.state().sent()
    }

    /// The events shipgate refused for good.
    pub fn events_refused(&self) -> Vec<RefusedEvent> {
        self.inner.state().refused()
    }

    /// Stops accepting connections, lets requests in progress finish (a slow answer's delay is
    /// cut short) and stops the sender; events still queued are not sent. Waits for both tasks.
    pub async fn stop(self) {
        self.inner.cancel.cancel();
        self.inner.progress.send_modify(|p| p.stopped = true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }
}
