//! The supplier workflow.
pub mod derive;
pub mod model;
