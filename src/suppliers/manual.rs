//! The `manual` adapter: an operator relays messages and records the supplier's events.
//!
//! There is no channel to send on: a message is "delivered" by being stored, where the CLI and
//! the admin API show it (`shipgate supplier export` lists what is waiting), and the operator
//! records every event the supplier reports with `shipgate supplier event`, through the same
//! workflow entry point as the webhook and the CSV import.

use super::{BoxFuture, LookupOutcome, SendOutcome, SupplierAdapter, SupplierMessage};

/// The manual adapter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ManualAdapter;

impl SupplierAdapter for ManualAdapter {
    fn kind(&self) -> &'static str {
        "manual"
    }

    fn send<'a>(&'a self, _message: &'a SupplierMessage) -> BoxFuture<'a, SendOutcome> {
        // Stored is delivered: the operator reads it from the store.
        Box::pin(async { SendOutcome::Accepted { supplier_ref: None } })
    }

    fn lookup<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, LookupOutcome> {
        Box::pin(async { LookupOutcome::Received { supplier_ref: None } })
    }
}
