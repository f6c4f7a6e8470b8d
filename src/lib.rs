//! shipgate: a Shopify dropshipping daemon that writes fulfillment back only after the carrier
//! has the parcel and a physical check is recorded. ARCHITECTURE.md has the map; each module's
//! documentation says what it owns and which invariants live there.

pub mod admin;
pub mod cli;
pub mod clock;
pub mod compliance;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod demo;
pub mod evidence;
pub mod health;
pub mod http;
pub mod intake;
pub mod mirror;
pub mod order;
pub mod processor;
pub mod reconcile;
pub mod sandbox;
pub mod shopify;
pub mod store;
pub mod suppliers;
pub mod telemetry;
pub mod tracking;
pub mod views;
pub mod workflow;
