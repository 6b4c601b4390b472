//! Simulated Meta Graph API (being written).
