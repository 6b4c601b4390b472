//! Simulated remote APIs, served over loopback HTTP, for the integration tests, the `demo`
//! command and the benchmarks. Built only with the `sim` feature (on by default).
//!
//! - `graph/`: Meta's Graph API ([`GraphSim`]), in Meta's real shapes, with fault injection.
//! - `finedu/`: the Finedu BSP's "Waba account list" API ([`FineduSim`]).
//! - `webhooks.rs`: Meta's side of webhooks: signed deliveries POSTed to a receiver.
//! - `whatomate.rs`: a Whatomate instance's `GET /api/accounts` ([`WhatomateSim`]).
//!
//! Everything either simulator offers is re-exported here, so callers name `sim::GraphSim` or
//! `sim::FineduSim` and never the folder.

pub mod finedu;
pub mod graph;
mod server;
pub mod webhooks;
pub mod whatomate;

pub use finedu::{
    FineduFault, FineduHandle, FineduPhone, FineduRequest, FineduSim, FineduState, FineduWaba,
};
pub use graph::{
    DEFAULT_APP_CALL_BUDGET, DEFAULT_WABA_CALL_BUDGET, FIRST_TEMPLATE_ID, Fault, FaultKind,
    FaultTarget, FieldSpec, FieldsError, GraphSim, HealthError, MAX_BATCH_ITEMS, RecordedRequest,
    Relation, SIM_APP_ID, SimBusiness, SimHandle, SimOptions, SimPhone, SimState, SimTemplate,
    SimWaba, TEMPLATE_QUALITY_DATE, demo_ids, fields_to_string, health_entity, health_status,
    parse_fields,
};
pub use webhooks::WebhookTarget;
pub use whatomate::{WhatomateRequest, WhatomateSim, WhatomateSimAccount, WhatomateState};
