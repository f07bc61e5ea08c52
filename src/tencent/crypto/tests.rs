//! Known-answer tests against an independent implementation: the vectors in
//! `tests/data/crypto-vectors.json` come from Python's `cryptography`
//! (OpenSSL) and `gmssl`, written by `tests/data/make_crypto_vectors.py`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::keys::{parse_rsa_private_pem, parse_rsa_public_pem, parse_sm2_public_pem};
use super::*;

const VECTORS_JSON: &str = include_str!("../../../tests/data/crypto-vectors.json");

#[derive(Deserialize)]
struct Vectors {
    aes_256_cbc: Vec<SymmetricVector>,
    sm4_gcm: Vec<SymmetricVector>,
    rsa_pkcs1v15: RsaVectors,
    sm2_c1c3c2: Sm2Vectors,
}

#[derive(Deserialize)]
struct SymmetricVector {
    name: String,
    key: String,
    iv_b64: String,
    plaintext_hex: String,
    plaintext_utf8: Option<String>,
    ciphertext_b64: String,
    tag_b64: Option<String>,
}

#[derive(Deserialize)]
struct RsaVectors {
    private_pkcs8_pem: String,
    private_pkcs1_pem: String,
    public_pkcs1_pem: String,
    public_spki_pem: String,
    wrapped: Vec<WrappedVector>,
}

#[derive(Deserialize)]
struct Sm2Vectors {
    private_hex: String,
    public_point_hex: String,
    public_spki_pem: String,
    wrapped: Vec<WrappedVector>,
}

#[derive(Deserialize)]
struct WrappedVector {
    key: String,
    wrapped_b64: String,
}

fn vectors() -> Vectors {
    serde_json::from_str(VECTORS_JSON).expect("tests/data/crypto-vectors.json parses")
}

fn symmetric(algorithm: Algorithm) -> Vec<SymmetricVector> {
    let all = vectors();
    match algorithm {
        Algorithm::Aes256Cbc => all.aes_256_cbc,
        Algorithm::Sm4Gcm => all.sm4_gcm,
    }
}

/// The Python test key pairs: RSA from its PKCS#8 PEM, SM2 from its scalar.
fn python_private_keys() -> PrivateKeys {
    let all = vectors();
    let rsa = parse_rsa_private_pem(&all.rsa_pkcs1v15.private_pkcs8_pem).unwrap();
    let scalar = hex::decode(&all.sm2_c1c3c2.private_hex).unwrap();
    let sm2 = sm2::SecretKey::from_slice(&scalar).unwrap();
    PrivateKeys::new(rsa, sm2)
}

#[test]
fn the_vector_file_covers_the_required_cases() {
    for algorithm in Algorithm::ALL {
        let cases = symmetric(algorithm);
        assert!(cases.len() >= 5, "{algorithm}");
        assert!(cases.iter().any(|v| v.plaintext_hex.is_empty()));
        assert!(cases.iter().any(|v| v.plaintext_hex.len() / 2 > 64));
        assert!(cases.iter().any(|v| {
            v.plaintext_utf8
                .as_deref()
                .is_some_and(|text| text.contains("张三") && text.starts_with('{'))
        }));
    }
    let all = vectors();
    assert!(!all.rsa_pkcs1v15.wrapped.is_empty());
    assert!(!all.sm2_c1c3c2.wrapped.is_empty());
}

#[test]
fn encryption_reproduces_every_python_ciphertext_and_tag() {
    for algorithm in Algorithm::ALL {
        for vector in symmetric(algorithm) {
            let key = SessionKey::from_bytes(algorithm, vector.key.as_bytes()).unwrap();
            let iv = Iv::from_base64(algorithm, &vector.iv_b64).unwrap();
            let plaintext = hex::decode(&vector.plaintext_hex).unwrap();
            let sealed = encrypt(&key, &iv, &plaintext).unwrap();
            assert_eq!(
                sealed.ciphertext_b64, vector.ciphertext_b64,
                "{algorithm} ciphertext: {}",
                vector.name
            );
            assert_eq!(
                sealed.tag_b64, vector.tag_b64,
                "{algorithm} tag: {}",
                vector.name
            );
        }
    }
}

#[test]
fn decryption_recovers_every_python_plaintext() {
    for algorithm in Algorithm::ALL {
        for vector in symmetric(algorithm) {
            let key = SessionKey::from_bytes(algorithm, vector.key.as_bytes()).unwrap();
            let plaintext = decrypt(
                algorithm,
                &key,
                &vector.iv_b64,
                &vector.ciphertext_b64,
                vector.tag_b64.as_deref(),
            )
            .unwrap_or_else(|e| panic!("{algorithm} {}: {e}", vector.name));
            assert_eq!(
                hex::encode(plaintext.as_slice()),
                vector.plaintext_hex,
                "{algorithm}: {}",
                vector.name
            );
            if let Some(text) = &vector.plaintext_utf8 {
                assert_eq!(std::str::from_utf8(&plaintext).unwrap(), text);
            }
        }
    }
}

#[test]
fn a_decrypted_python_response_body_is_the_answer_json() {
    for algorithm in Algorithm::ALL {
        let vector = symmetric(algorithm)
            .into_iter()
            .find(|v| v.name.starts_with("response json"))
            .unwrap();
        let key = SessionKey::from_bytes(algorithm, vector.key.as_bytes()).unwrap();
        let body = decrypt(
            algorithm,
            &key,
            &vector.iv_b64,
            &vector.ciphertext_b64,
            vector.tag_b64.as_deref(),
        )
        .unwrap();
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["Name"], "张三");
        assert_eq!(answer["IdNum"], "11010519491231002X");
        assert_eq!(answer["Result"], "Success");
    }
}

#[test]
fn tampered_python_sm4_gcm_data_is_rejected() {
    let algorithm = Algorithm::Sm4Gcm;
    for vector in symmetric(algorithm) {
        let key = SessionKey::from_bytes(algorithm, vector.key.as_bytes()).unwrap();
        let tag = vector.tag_b64.as_deref().unwrap();
        let mut tag_bytes = STANDARD.decode(tag).unwrap();
        tag_bytes[0] ^= 0x80;
        assert!(matches!(
            decrypt(
                algorithm,
                &key,
                &vector.iv_b64,
                &vector.ciphertext_b64,
                Some(&STANDARD.encode(&tag_bytes))
            ),
            Err(CryptoError::Authentication)
        ));
        let mut ciphertext = STANDARD.decode(&vector.ciphertext_b64).unwrap();
        if let Some(first) = ciphertext.first_mut() {
            *first ^= 0x01;
            assert!(matches!(
                decrypt(
                    algorithm,
                    &key,
                    &vector.iv_b64,
                    &STANDARD.encode(&ciphertext),
                    Some(tag)
                ),
                Err(CryptoError::Authentication)
            ));
        }
    }
}

#[test]
fn rsa_keys_wrapped_by_python_unwrap_with_our_private_key_code() {
    let all = vectors();
    // Both private-key forms Python wrote load to the same key.
    let from_pkcs8 = parse_rsa_private_pem(&all.rsa_pkcs1v15.private_pkcs8_pem).unwrap();
    let from_pkcs1 = parse_rsa_private_pem(&all.rsa_pkcs1v15.private_pkcs1_pem).unwrap();
    assert_eq!(from_pkcs8, from_pkcs1);

    let keys = python_private_keys();
    for vector in &all.rsa_pkcs1v15.wrapped {
        assert_eq!(STANDARD.decode(&vector.wrapped_b64).unwrap().len(), 128);
        let key = unwrap_key(&keys, Algorithm::Aes256Cbc, &vector.wrapped_b64).unwrap();
        assert_eq!(key.expose_secret(), vector.key.as_bytes());
    }
}

#[test]
fn rsa_public_key_forms_from_python_match_ours() {
    let all = vectors();
    let ours = python_private_keys().public_keys();
    assert_eq!(
        parse_rsa_public_pem(&all.rsa_pkcs1v15.public_pkcs1_pem).unwrap(),
        ours.rsa
    );
    assert_eq!(
        parse_rsa_public_pem(&all.rsa_pkcs1v15.public_spki_pem).unwrap(),
        ours.rsa
    );
    // We print PKCS#1 exactly as Python's `cryptography` does.
    assert_eq!(ours.rsa_pem().unwrap(), all.rsa_pkcs1v15.public_pkcs1_pem);
}

#[test]
fn sm2_keys_wrapped_by_gmssl_unwrap_with_our_private_key_code() {
    let all = vectors();
    let keys = python_private_keys();
    for vector in &all.sm2_c1c3c2.wrapped {
        let blob = STANDARD.decode(&vector.wrapped_b64).unwrap();
        assert_eq!(blob.len(), 113);
        let key = unwrap_key(&keys, Algorithm::Sm4Gcm, &vector.wrapped_b64).unwrap();
        assert_eq!(key.expose_secret(), vector.key.as_bytes());
    }
}

#[test]
fn sm2_public_key_from_gmssl_matches_ours() {
    let all = vectors();
    let ours = python_private_keys().public_keys();
    assert_eq!(
        hex::encode(ours.sm2.to_sec1_bytes()),
        all.sm2_c1c3c2.public_point_hex
    );
    assert_eq!(
        parse_sm2_public_pem(&all.sm2_c1c3c2.public_spki_pem).unwrap(),
        ours.sm2
    );
    assert_eq!(ours.sm2_pem().unwrap(), all.sm2_c1c3c2.public_spki_pem);
}

#[test]
fn keys_wrapped_with_the_python_public_keys_round_trip() {
    let all = vectors();
    let public = PublicKeys::from_pem(
        &all.rsa_pkcs1v15.public_pkcs1_pem,
        &all.sm2_c1c3c2.public_spki_pem,
    )
    .unwrap();
    let private = python_private_keys();
    for algorithm in Algorithm::ALL {
        let key = SessionKey::generate(algorithm).unwrap();
        let wrapped = wrap_key(&public, &key).unwrap();
        let back = unwrap_key(&private, algorithm, &wrapped).unwrap();
        assert_eq!(back.expose_secret(), key.expose_secret());
    }
}

#[test]
fn a_whole_exchange_between_gateway_and_server_works_for_both_algorithms() {
    // The gateway side: fresh key, wrapped for the server.
    let server = python_private_keys();
    let public = server.public_keys();
    for algorithm in Algorithm::ALL {
        let key = SessionKey::generate(algorithm).unwrap();
        let blob = wrap_key(&public, &key).unwrap();

        // The server side: unwrap, encrypt the answer with its own IV.
        let server_key = unwrap_key(&server, algorithm, &blob).unwrap();
        let iv = Iv::generate(algorithm).unwrap();
        let body = r#"{"Result":"0","Name":"张三"}"#;
        let sealed = encrypt(&server_key, &iv, body.as_bytes()).unwrap();

        // The gateway again: decrypt with its key and the answer's IV and tag.
        let opened = decrypt(
            Algorithm::from_wire(algorithm.as_wire()).unwrap(),
            &key,
            &iv.to_base64(),
            &sealed.ciphertext_b64,
            sealed.tag_b64.as_deref(),
        )
        .unwrap();
        assert_eq!(opened.as_slice(), body.as_bytes());
    }
}
