//! The generated `faceid.v1` types, client and server, and the encoded
//! descriptor set that server reflection serves.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("faceid.v1");

/// Descriptors of `faceid/v1/faceid.proto` and everything it imports, plus
/// `google/rpc/error_details.proto` so dynamic clients can decode details.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("faceid_descriptor");
