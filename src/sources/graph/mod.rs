//! Meta's Graph API: the HTTP client, its error classification and the wire parsing.

pub mod client;
pub mod error;
pub mod parse;
pub mod usage;

pub use client::{GraphClient, NodeRequest};
pub use error::{ErrorClass, GraphError};
