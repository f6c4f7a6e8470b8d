//! The sandbox: loopback stand-ins for the services shipgate talks to, part of the product because
//! `shipgate demo`, the integration tests and the benchmarks all run against it.
//!
//! It holds the Shopify webhook sender (it signs deliveries exactly as Shopify does and can break
//! them in each way a real sender or an attacker might), the Shopify Admin API, a supplier agent
//! (`supplier`) and an AfterShip-like tracking provider (`tracking`).

pub mod harness;
mod post;
pub mod shopify;
pub mod supplier;
pub mod tracking;
pub mod webhooks;
