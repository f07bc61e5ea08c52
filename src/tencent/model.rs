//! The JSON wire model of `CheckIdCardInformation` (version 2018-03-01), as
//! Tencent's SDKs define it: PascalCase keys, every field optional. These
//! types never cross the gRPC boundary, and their `Debug` output shows no
//! image, name, ID number, address or portrait.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The action name sent in `X-TC-Action`.
pub const ACTION: &str = "CheckIdCardInformation";
/// The API version sent in `X-TC-Version`.
pub const VERSION: &str = "2018-03-01";
/// The service name of the credential scope.
pub const SERVICE: &str = "faceid";

/// Request parameters. The body holds only these (no Action/Version/Region).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CheckIdCardInformationRequest {
    /// Standard base64 (with padding) of the portrait side, at most 7 MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_base64: Option<String>,
    /// URL of the portrait side; wins over `ImageBase64` when both are sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    /// A JSON document *as a string* holding the alarm switches ([`Config`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// Encrypt `Name` and `IdNum` in the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_encrypt: Option<bool>,
    /// Encrypt the whole answer into `EncryptedBody`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_encrypt_response: Option<bool>,
    /// Key material for the two switches above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

impl fmt::Debug for CheckIdCardInformationRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckIdCardInformationRequest")
            .field(
                "image_base64_len",
                &self.image_base64.as_ref().map(String::len),
            )
            .field("image_url", &self.image_url.as_ref().map(|_| "<redacted>"))
            .field("config", &self.config)
            .field("is_encrypt", &self.is_encrypt)
            .field("is_encrypt_response", &self.is_encrypt_response)
            .field(
                "encryption",
                &self.encryption.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The alarm switches that `Config` carries as a JSON string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Config {
    /// Photocopy alarm (-9102).
    #[serde(default, skip_serializing_if = "is_false")]
    pub copy_warn: bool,
    /// Border incomplete or occluded alarms (-9101, -9105).
    #[serde(default, skip_serializing_if = "is_false")]
    pub border_check_warn: bool,
    /// Re-shot image alarm (-9103).
    #[serde(default, skip_serializing_if = "is_false")]
    pub reshoot_warn: bool,
    /// Edited image alarm (-9106).
    #[serde(default, skip_serializing_if = "is_false")]
    pub detect_ps_warn: bool,
    /// Temporary ID card alarm (-9104).
    #[serde(default, skip_serializing_if = "is_false")]
    pub temp_id_warn: bool,
    /// Blur alarm and quality score (-8001).
    #[serde(default, skip_serializing_if = "is_false")]
    pub quality: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl Config {
    /// Whether any switch is on (otherwise `Config` is left out).
    pub fn any(&self) -> bool {
        *self != Config::default()
    }

    /// The `Config` string Tencent expects, e.g. `{"CopyWarn":true}`.
    pub fn to_json_string(&self) -> String {
        serde_json::to_string(self).expect("a struct of booleans always serializes")
    }
}

/// Sensitive-data encryption parameters, shared by request and answer.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Encryption {
    /// Names of the encrypted items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypt_list: Option<Vec<String>>,
    /// The symmetric key wrapped with Tencent's public key, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext_blob: Option<String>,
    /// The initialization vector, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iv: Option<String>,
    /// `AES-256-CBC` (the default) or `SM4-GCM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    /// SM4-GCM tags, base64, one per encrypted item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_list: Option<Vec<String>>,
}

impl fmt::Debug for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encryption")
            .field("encrypt_list", &self.encrypt_list)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The outer object of every answer: `{"Response": {...}}`.
#[derive(Debug, Deserialize, Serialize)]
pub struct Envelope {
    /// The answer itself.
    #[serde(rename = "Response")]
    pub response: CheckIdCardInformationResponse,
}

/// The `Error` object of a failed call.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ApiError {
    /// The error code; the only part to branch on.
    pub code: String,
    /// Human text; Tencent changes it, so it is never parsed. It may echo
    /// input, so the gateway never logs or returns it.
    #[serde(default)]
    pub message: String,
}

/// The answer's fields. Absent and `null` fields are `None`.
#[derive(Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckIdCardInformationResponse {
    /// Present only when the call failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
    /// Similarity 0 to 100.
    #[serde(default)]
    pub sim: Option<f64>,
    /// `Success` or a `FailedOperation.*` business code.
    #[serde(default)]
    pub result: Option<String>,
    /// Text for `Result`.
    #[serde(default)]
    pub description: Option<String>,
    /// Name on the card (ciphertext with `IsEncrypt`).
    #[serde(default)]
    pub name: Option<String>,
    /// Sex on the card.
    #[serde(default)]
    pub sex: Option<String>,
    /// Ethnicity on the card.
    #[serde(default)]
    pub nation: Option<String>,
    /// Date of birth on the card.
    #[serde(default)]
    pub birth: Option<String>,
    /// Address on the card.
    #[serde(default)]
    pub address: Option<String>,
    /// ID number on the card (ciphertext with `IsEncrypt`).
    #[serde(default)]
    pub id_num: Option<String>,
    /// Base64 of the portrait cropped from the card.
    #[serde(default)]
    pub portrait: Option<String>,
    /// Warning codes joined by `|`.
    #[serde(default)]
    pub warnings: Option<String>,
    /// Image quality score 0 to 100.
    #[serde(default)]
    pub quality: Option<f64>,
    /// Encryption info of an encrypted answer.
    #[serde(default)]
    pub encryption: Option<Encryption>,
    /// Base64 ciphertext of the whole answer (`IsEncryptResponse`).
    #[serde(default)]
    pub encrypted_body: Option<String>,
    /// Tencent's request id, present on every processed call.
    #[serde(default)]
    pub request_id: Option<String>,
}

impl fmt::Debug for CheckIdCardInformationResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckIdCardInformationResponse")
            .field("error", &self.error.as_ref().map(|e| &e.code))
            .field("result", &self.result)
            .field("sim", &self.sim)
            .field("warnings", &self.warnings)
            .field("quality", &self.quality)
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_a_compact_json_string_of_the_switches_that_are_on() {
        let config = Config {
            copy_warn: true,
            quality: true,
            ..Config::default()
        };
        assert_eq!(
            config.to_json_string(),
            r#"{"CopyWarn":true,"Quality":true}"#
        );
        assert!(!Config::default().any());
    }

    #[test]
    fn request_serializes_config_as_a_string_and_leaves_out_absent_fields() {
        let request = CheckIdCardInformationRequest {
            image_url: Some("https://example.com/a.jpg".into()),
            config: Some(r#"{"CopyWarn":true}"#.into()),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"ImageUrl":"https://example.com/a.jpg","Config":"{\"CopyWarn\":true}"}"#
        );
    }

    #[test]
    fn the_api_pages_success_example_decodes() {
        let body = r#"{"Response":{"Address":"A","Birth":"1654/12/20","Description":"Success",
            "Encryption":null,"IdNum":"11204416541220243X","Name":"N","Nation":"Han",
            "Portrait":"/9j/4AAQSk","Quality":98,"RequestId":"8dc2b640-caad-4a13-ad8c-204d46d29fe1",
            "Result":"Success","Sex":"Male","Sim":99.76,"Warnings":"","NewFieldFromTencent":1}}"#;
        let envelope: Envelope = serde_json::from_str(body).unwrap();
        let response = envelope.response;
        assert_eq!(response.result.as_deref(), Some("Success"));
        assert_eq!(response.sim, Some(99.76));
        assert_eq!(response.quality, Some(98.0));
        assert_eq!(response.encryption, None);
        assert!(response.error.is_none());
    }

    #[test]
    fn error_envelope_decodes() {
        let body = r#"{"Response":{"Error":{"Code":"AuthFailure.SignatureFailure","Message":"m"},"RequestId":"r"}}"#;
        let envelope: Envelope = serde_json::from_str(body).unwrap();
        let error = envelope.response.error.unwrap();
        assert_eq!(error.code, "AuthFailure.SignatureFailure");
        assert_eq!(envelope.response.request_id.as_deref(), Some("r"));
    }

    #[test]
    fn debug_output_holds_no_personal_data() {
        let response = CheckIdCardInformationResponse {
            name: Some("Wei Xiaobao".into()),
            id_num: Some("11204416541220243X".into()),
            address: Some("No. 4 Jingshan Front Street".into()),
            portrait: Some("/9j/4AAQSk".into()),
            ..Default::default()
        };
        let request = CheckIdCardInformationRequest {
            image_base64: Some("/9j/4AAQSkZJRg".into()),
            image_url: Some("https://example.com/x.jpg?owner=Wei".into()),
            ..Default::default()
        };
        let text = format!("{response:?} {request:?}");
        for secret in ["Wei", "1120441654", "Jingshan", "/9j/4AAQSk", "example.com"] {
            assert!(!text.contains(secret), "{secret} leaked into {text}");
        }
    }
}
