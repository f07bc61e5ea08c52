//! Builds the JSON request body in one pass over the image: the base64 text is
//! written straight into the body buffer, the buffer is hashed once, and the
//! same bytes are sent by every attempt (hashed bytes = sent bytes).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

use super::model::CheckIdCardInformationRequest;
use super::sign::sha256_hex;

/// A finished request body and its SHA-256, shared by every attempt.
#[derive(Clone)]
pub struct RequestBody {
    bytes: Bytes,
    sha256_hex: String,
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody")
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

const IMAGE_KEY: &[u8] = br#"{"ImageBase64":""#;

impl RequestBody {
    /// Serializes `params` as the whole body (e.g. an `ImageUrl` request).
    pub fn new(params: &CheckIdCardInformationRequest) -> Self {
        let json = serde_json::to_vec(params).expect("the request model always serializes");
        Self::from_json(json)
    }

    /// Serializes `params` with `ImageBase64` = base64 of `image` as its first
    /// key, without building the base64 text anywhere else. The bytes equal
    /// `serde_json::to_vec` of `params` with `image_base64` set.
    ///
    /// `params.image_base64` must be `None`.
    pub fn with_image(image: &[u8], params: &CheckIdCardInformationRequest) -> Self {
        debug_assert!(params.image_base64.is_none());
        let rest = serde_json::to_vec(params).expect("the request model always serializes");
        let encoded_len =
            base64::encoded_len(image.len(), true).expect("image length fits in usize");
        let mut json = Vec::with_capacity(IMAGE_KEY.len() + encoded_len + rest.len() + 1);
        json.extend_from_slice(IMAGE_KEY);
        let start = json.len();
        json.resize(start + encoded_len, 0);
        let written = STANDARD
            .encode_slice(image, &mut json[start..])
            .expect("buffer sized by encoded_len");
        debug_assert_eq!(written, encoded_len);
        json.push(b'"');
        // `rest` is `{}` or `{"Key":...}`: splice its members after ours.
        if rest.len() > 2 {
            json.push(b',');
            json.extend_from_slice(&rest[1..]);
        } else {
            json.push(b'}');
        }
        Self::from_json(json)
    }

    /// Takes JSON bytes that are already serialized, to be sent as they are.
    pub fn from_json(json: Vec<u8>) -> Self {
        let sha256_hex = sha256_hex(&json);
        Self {
            bytes: Bytes::from(json),
            sha256_hex,
        }
    }

    /// The body bytes to send (a cheap reference-counted clone).
    pub fn bytes(&self) -> Bytes {
        self.bytes.clone()
    }

    /// Lower-case hex SHA-256 of [`Self::bytes`].
    pub fn sha256_hex(&self) -> &str {
        &self.sha256_hex
    }

    /// Body length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the body is empty (never, for a built body).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_model(image: &[u8], params: &CheckIdCardInformationRequest) -> Vec<u8> {
        let mut full = params.clone();
        full.image_base64 = Some(STANDARD.encode(image));
        serde_json::to_vec(&full).unwrap()
    }

    #[test]
    fn image_body_equals_the_serde_serialization_of_the_full_model() {
        let image: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let cases = [
            CheckIdCardInformationRequest::default(),
            CheckIdCardInformationRequest {
                config: Some(r#"{"CopyWarn":true}"#.into()),
                is_encrypt: Some(false),
                ..Default::default()
            },
        ];
        for params in cases {
            let body = RequestBody::with_image(&image, &params);
            assert_eq!(
                body.bytes().as_ref(),
                full_model(&image, &params).as_slice()
            );
            assert_eq!(body.sha256_hex(), sha256_hex(&body.bytes()));
        }
    }

    #[test]
    fn empty_image_still_gives_valid_json() {
        let body = RequestBody::with_image(&[], &CheckIdCardInformationRequest::default());
        assert_eq!(body.bytes().as_ref(), br#"{"ImageBase64":""}"#);
    }

    #[test]
    fn url_body_is_the_plain_serialization() {
        let params = CheckIdCardInformationRequest {
            image_url: Some("https://example.com/a.jpg".into()),
            ..Default::default()
        };
        let body = RequestBody::new(&params);
        assert_eq!(
            body.bytes().as_ref(),
            br#"{"ImageUrl":"https://example.com/a.jpg"}"#
        );
        assert_eq!(body.len(), 40);
    }
}
