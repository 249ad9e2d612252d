//! The Agent Ledger v1 API: protobuf messages generated from
//! `proto/agentledger/v1/ledger.proto`, and with the `grpc` feature the tonic
//! client and server stubs for its services.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/agentledger.v1.rs"));
}

/// Encoded `FileDescriptorSet` of the API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ledger_descriptor.bin"));

pub use prost;
pub use prost_types;
