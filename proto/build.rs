//! Compiles `proto/agentledger/v1/ledger.proto` with protox (pure Rust, so no
//! system `protoc` is needed) into prost messages and, with the `grpc` feature,
//! tonic client and server stubs. Also writes the encoded descriptor set, which
//! the server serves through gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/agentledger/v1/ledger.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;

    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("ledger_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_server(grpc)
        .build_client(grpc)
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
