//! One integration test binary (one link step) for the whole daemon: every module here drives the
//! real daemon, in-process on port 0 or as the real binary, against the built-in sandbox.

mod admin;
mod binary;
mod compliance;
mod demo;
mod helpers;
mod intake;
mod mirror;
mod operations;
mod outbox_shopify;
mod reconcile;
mod shopify_client;
mod suppliers;
