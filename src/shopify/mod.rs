//! Talking to Shopify's Admin GraphQL API.
//!
//! `client` sends operations with the cost budget, retries and tokens; `ops` holds the types
//! graphql_client generates from `graphql/`; `convert` turns them into shipgate's domain types.
//! Generated types never leave this module.

pub mod client;
pub mod convert;
pub mod ops;
