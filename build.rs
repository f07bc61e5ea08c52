//! Compiles the protos in `proto/` without a system `protoc`: `protox` parses
//! them in Rust, `tonic-prost-build` generates the server and client code, and
//! the encoded descriptor set is written for server reflection.

use std::path::PathBuf;

/// The files whose descriptors reflection serves. `error_details.proto` is not
/// imported by our contract, but dynamic clients need it to decode the
/// `ErrorInfo` / `BadRequest` / `RetryInfo` details of our errors.
const PROTOS: &[&str] = &["faceid/v1/faceid.proto", "google/rpc/error_details.proto"];

/// Messages whose derived `Debug` would print images or personal data.
const REDACTED_MESSAGES: &[&str] = &[
    ".faceid.v1.VerifyIdCardRequest",
    ".faceid.v1.VerifyIdCardResponse",
    ".faceid.v1.IdCard",
    ".faceid.v1.VerifyIdCardBatchRequest",
    ".faceid.v1.VerifyIdCardBatchResponse",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let file_descriptors = protox::compile(PROTOS, ["proto"])?;
    let encoded = protox::prost::Message::encode_to_vec(&file_descriptors);
    std::fs::write(out_dir.join("faceid_descriptor.bin"), &encoded)?;
    // The proto3 JSON mapping of our messages (HTTP/JSON on the gRPC port):
    // camelCase and original names read, bytes as base64, enums by name or
    // number, unknown fields refused. The batch answer holds a
    // google.rpc.Status (tonic-types, which has no serde), so it is written
    // by hand in src/server/json.rs.
    pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        .out_dir(&out_dir)
        .exclude([".faceid.v1.VerifyIdCardBatchResponse"])
        .build(&[".faceid.v1"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // google.rpc types come from tonic-types, so `Status` values built with
        // its richer-error helpers drop straight into our messages.
        .extern_path(".google.rpc", "::tonic_types::pb")
        // Images arrive as `Bytes` sliced from the decode buffer, not copied.
        .bytes(".faceid.v1")
        // Messages holding images or personal data get hand-written `Debug`
        // impls (in src/proto.rs) that print no content.
        .skip_debug(REDACTED_MESSAGES)
        .compile_fds(file_descriptors)?;
    // tonic-prost-build does not emit these itself.
    println!("cargo:rerun-if-changed=proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }
    Ok(())
}
