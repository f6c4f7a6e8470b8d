//! The sandbox: loopback stand-ins for the services shipgate talks to, part of the product because
//! `shipgate demo`, the integration tests and the benchmarks all run against it.
//!
//! So far it holds the Shopify webhook sender: it signs deliveries exactly as Shopify does and can
//! break them in each way a real sender or an attacker might.

pub mod harness;
pub mod shopify;
pub mod supplier;
pub mod webhooks;
