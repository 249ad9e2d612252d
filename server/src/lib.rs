//! `ledgerd`, the Agent Ledger server: gRPC handlers hand validated events to
//! one sequencer per log, which commits them in groups to RocksDB, durably,
//! with a signed checkpoint per group.
//!
//! request → [`service`] → [`log`] → [`sequencer`] → [`store`] → ack

pub mod anchor;
pub mod auth;
pub mod config;
pub mod console;
pub mod indexer;
pub mod log;
pub mod metrics;
pub mod mirror;
pub mod niced;
pub mod objects;
pub mod otlp;
pub mod query;
pub mod restore;
pub mod sequencer;
pub mod server;
pub mod service;
pub mod store;
pub mod tiles_http;
pub mod validate;
