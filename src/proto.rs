//! The generated `faceid.v1` types, client and server, and the encoded
//! descriptor set that server reflection serves.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("faceid.v1");
// serde for the proto3 JSON mapping (HTTP/JSON).
include!(concat!(env!("OUT_DIR"), "/faceid.v1.serde.rs"));

/// Descriptors of `faceid/v1/faceid.proto` and everything it imports, plus
/// `google/rpc/error_details.proto` so dynamic clients can decode details.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("faceid_descriptor");

// `Debug` for the messages that hold images or personal data: structure and
// sizes only, never content, so `{:?}` in a log line or panic cannot leak.

use std::fmt;

impl fmt::Debug for verify_id_card_request::Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Image(bytes) => write!(f, "Image({} bytes)", bytes.len()),
            Self::ImageUrl(url) => write!(f, "ImageUrl({} chars)", url.len()),
        }
    }
}

impl fmt::Debug for VerifyIdCardRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyIdCardRequest")
            .field("source", &self.source)
            .field("checks", &self.checks)
            .finish()
    }
}

impl fmt::Debug for IdCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdCard { <redacted> }")
    }
}

impl fmt::Debug for VerifyIdCardResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyIdCardResponse")
            .field("verdict", &self.verdict())
            .field("similarity", &self.similarity)
            .field("result_code", &self.result_code)
            .field("id_card", &self.id_card)
            .field("portrait_bytes", &self.portrait.len())
            .field("warning_codes", &self.warning_codes)
            .field("quality", &self.quality)
            .field("request_id", &self.request_id)
            .field("simulated", &self.simulated)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for VerifyIdCardBatchRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyIdCardBatchRequest")
            .field("item_id", &self.item_id)
            .field("request", &self.request)
            .finish()
    }
}

impl fmt::Debug for verify_id_card_batch_response::Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Result(result) => f.debug_tuple("Result").field(result).finish(),
            Self::Error(status) => f
                .debug_struct("Error")
                .field("code", &status.code)
                .field("message", &status.message)
                .finish_non_exhaustive(),
        }
    }
}

impl fmt::Debug for VerifyIdCardBatchResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyIdCardBatchResponse")
            .field("item_id", &self.item_id)
            .field("outcome", &self.outcome)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn debug_prints_sizes_not_content() {
        let request = VerifyIdCardRequest {
            source: Some(verify_id_card_request::Source::Image(Bytes::from_static(
                b"\x89PNG secret pixels",
            ))),
            ..Default::default()
        };
        let response = VerifyIdCardResponse {
            id_card: Some(IdCard {
                name: "Wei Xiaobao".into(),
                id_number: "11204416541220243X".into(),
                address: "No. 4 Jingshan Front Street".into(),
                ..Default::default()
            }),
            portrait: Bytes::from_static(b"portrait pixels"),
            ..Default::default()
        };
        let text = format!("{request:?} {response:?}");
        for secret in [
            "secret pixels",
            "Wei",
            "11204416541220243X",
            "Jingshan",
            "portrait pixels",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("Image(18 bytes)"));
    }
}
