//! The signer reproduces every vector computed by Tencent's official Python
//! SDK (`tests/data/tc3-vectors.json`): date, canonical request, string to
//! sign, signature and Authorization, step by step.

use base64::Engine as _;
use faceid_gateway::tencent::model::{CheckIdCardInformationRequest, SERVICE};
use faceid_gateway::tencent::sign::{self, CanonicalRequest, SigningKey};
use faceid_gateway::tencent::{Client, ClientConfig};
use faceid_gateway::tencent::{CredentialProvider, Credentials, RequestBody};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

fn vectors() -> Vec<Value> {
    let text = include_str!("data/tc3-vectors.json");
    let file: Value = serde_json::from_str(text).expect("vectors file is JSON");
    let mut all = file["vectors"].as_array().expect("vectors").clone();
    all.extend(
        file["non_sdk_vectors"]
            .as_array()
            .expect("non_sdk_vectors")
            .clone(),
    );
    assert_eq!(all.len(), 17, "16 SDK vectors and 1 extra");
    all
}

fn str_field<'a>(vector: &'a Value, key: &str) -> &'a str {
    vector[key]
        .as_str()
        .unwrap_or_else(|| panic!("{}: {key} is not a string", vector["name"]))
}

/// The exact body bytes of a vector: the payload, or the 1 MiB recipe.
fn payload(vector: &Value) -> Vec<u8> {
    if let Some(payload) = vector["payload"].as_str() {
        return payload.as_bytes().to_vec();
    }
    assert_eq!(str_field(vector, "name"), "faceid_large_image_base64_1MiB");
    let image: Vec<u8> = (0..786_432u32).map(|i| (i % 251) as u8).collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(image);
    format!("{{\"ImageBase64\": \"{encoded}\"}}").into_bytes()
}

#[test]
fn every_vector_is_reproduced_step_by_step() {
    for vector in vectors() {
        let name = str_field(&vector, "name");
        let body = payload(&vector);
        let payload_sha256 = sign::sha256_hex(&body);
        let expected_sha256 = vector["payload_sha256"].as_str().unwrap_or_else(|| {
            let canonical = str_field(&vector, "canonical_request");
            canonical.rsplit('\n').next().expect("last line")
        });
        assert_eq!(payload_sha256, expected_sha256, "{name}");
        if let Some(length) = vector["payload_length_bytes"].as_u64() {
            assert_eq!(body.len() as u64, length, "{name}");
        }

        let timestamp = vector["timestamp"].as_i64().expect("timestamp");
        let date = sign::credential_date(timestamp).expect("date");
        assert_eq!(date, str_field(&vector, "date"), "{name}");

        let content_type = str_field(&vector, "content_type");
        let host = str_field(&vector, "host");
        let action_lower = vector["canonical_request"]
            .as_str()
            .and_then(|c| c.lines().find_map(|l| l.strip_prefix("x-tc-action:")))
            .unwrap_or_default()
            .to_owned();
        let signed_headers = vector["signed_headers"]
            .as_str()
            .unwrap_or("content-type;host");
        let mut headers = vec![("content-type", content_type), ("host", host)];
        if signed_headers.contains("x-tc-action") {
            headers.push(("x-tc-action", action_lower.as_str()));
        }
        let method = vector["method"].as_str().unwrap_or("POST");
        let query = vector["canonical_querystring"].as_str().unwrap_or("");
        let canonical = CanonicalRequest {
            method,
            query,
            headers: &headers,
            payload_sha256: &payload_sha256,
        };
        assert_eq!(canonical.signed_headers(), signed_headers, "{name}");
        assert_eq!(
            canonical.to_text(),
            str_field(&vector, "canonical_request"),
            "{name}"
        );

        let service = str_field(&vector, "service");
        let string_to_sign = sign::string_to_sign(timestamp, &date, service, &canonical.to_text());
        assert_eq!(
            string_to_sign,
            str_field(&vector, "string_to_sign"),
            "{name}"
        );

        let key = SigningKey::derive(str_field(&vector, "secret_key"), &date, service);
        let signature = key.sign(&string_to_sign);
        assert_eq!(signature, str_field(&vector, "signature"), "{name}");
        assert!(key.verify(&string_to_sign, &signature), "{name}");

        let authorization = sign::authorization(
            str_field(&vector, "secret_id"),
            &date,
            service,
            signed_headers,
            &signature,
        );
        assert_eq!(authorization, str_field(&vector, "authorization"), "{name}");
    }
}

/// The client's own header building (the code path every real call takes)
/// produces the SDK's Authorization for every FaceID POST vector.
#[tokio::test]
async fn the_client_signs_faceid_requests_as_the_sdk_does() {
    let mut checked = 0;
    for vector in vectors() {
        let is_faceid_post = vector["service"] == SERVICE
            && vector["method"] == "POST"
            && vector["content_type"] == "application/json"
            && vector["signed_headers"].is_null();
        if !is_faceid_post {
            continue;
        }
        let name = str_field(&vector, "name");
        let token = vector["token"].as_str().map(str::to_owned);
        let credentials = Credentials::new(
            str_field(&vector, "secret_id"),
            str_field(&vector, "secret_key"),
            token.clone(),
        )
        .unwrap();
        let endpoint = format!("https://{}/", str_field(&vector, "host"));
        let client = Client::new(
            ClientConfig {
                endpoint: endpoint.parse().unwrap(),
                region: None,
                connect_timeout: Duration::from_secs(1),
                request_timeout: Duration::from_secs(1),
            },
            Arc::new(CredentialProvider::fixed(credentials)),
        )
        .unwrap();
        let body = body_of(&payload(&vector));
        let headers = client
            .signed_headers(&body, vector["timestamp"].as_i64().unwrap())
            .expect("valid keys sign");
        assert_eq!(
            headers["authorization"].to_str().unwrap(),
            str_field(&vector, "authorization"),
            "{name}"
        );
        assert_eq!(headers["content-type"], "application/json", "{name}");
        assert_eq!(
            headers["x-tc-timestamp"].to_str().unwrap(),
            vector["timestamp"].to_string(),
            "{name}"
        );
        assert_eq!(headers["x-tc-action"], "CheckIdCardInformation", "{name}");
        assert_eq!(headers["x-tc-version"], "2018-03-01", "{name}");
        assert_eq!(
            headers
                .get("x-tc-token")
                .map(|v| v.to_str().unwrap().to_owned()),
            token,
            "{name}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} FaceID POST vectors checked");
}

/// A `RequestBody` holding exactly the vector's bytes (the Python SDK's JSON
/// layout, which differs from serde's), after checking they are a valid
/// request for our wire model.
fn body_of(bytes: &[u8]) -> RequestBody {
    let _: CheckIdCardInformationRequest =
        serde_json::from_slice(bytes).expect("vector bodies are valid requests");
    let body = RequestBody::from_json(bytes.to_vec());
    assert_eq!(body.bytes().as_ref(), bytes);
    body
}
