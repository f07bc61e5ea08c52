//! Encrypting and decrypting the data itself: AES-256-CBC with PKCS#7
//! padding, or SM4-GCM with a detached 16-byte tag and no associated data.

use aes_gcm::aead::consts::U12;
use aes_gcm::{AeadInOut, AesGcm, KeyInit, Tag};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use zeroize::Zeroizing;

use super::{Algorithm, CryptoError, Iv, Part, SessionKey};

/// SM4 in GCM with a 96-bit nonce and a 128-bit tag.
type Sm4Gcm = AesGcm<sm4::Sm4, U12>;
type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

/// Encrypted data as it travels: base64 ciphertext, and for SM4-GCM the tag
/// apart (Tencent's `TagList` entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sealed {
    /// Base64 of the ciphertext; for SM4-GCM without the tag.
    pub(crate) ciphertext_b64: String,
    /// Base64 of the 16-byte SM4-GCM tag; `None` for AES-256-CBC.
    pub(crate) tag_b64: Option<String>,
}

/// Encrypts `plaintext` with the session key and IV (what Tencent, or the
/// simulator, does to the answer).
///
/// Never use one key and IV pair twice with SM4-GCM for different data.
///
/// # Errors
/// [`CryptoError::AlgorithmMismatch`] if key and IV are for different
/// algorithms; [`CryptoError::TooLong`] past GCM's 64 GiB limit.
pub(crate) fn encrypt(key: &SessionKey, iv: &Iv, plaintext: &[u8]) -> Result<Sealed, CryptoError> {
    let algorithm = key.algorithm();
    if iv.algorithm() != algorithm {
        return Err(CryptoError::AlgorithmMismatch {
            key: algorithm,
            other: "the IV",
            expected: iv.algorithm(),
        });
    }
    match algorithm {
        Algorithm::Aes256Cbc => {
            let cipher = Aes256CbcEnc::new_from_slices(key.expose_secret(), iv.as_bytes())
                .map_err(|_| internal_length_error(algorithm))?;
            let ciphertext = cipher.encrypt_padded_vec::<Pkcs7>(plaintext);
            Ok(Sealed {
                ciphertext_b64: STANDARD.encode(ciphertext),
                tag_b64: None,
            })
        }
        Algorithm::Sm4Gcm => {
            let (cipher, nonce) = sm4_gcm(key, iv.as_bytes())?;
            let mut buffer = plaintext.to_vec();
            let tag = cipher
                .encrypt_inout_detached(nonce, &[], buffer.as_mut_slice().into())
                .map_err(|_| CryptoError::TooLong { algorithm })?;
            Ok(Sealed {
                ciphertext_b64: STANDARD.encode(&buffer),
                tag_b64: Some(STANDARD.encode(tag)),
            })
        }
    }
}

/// Decrypts data that was encrypted with our session key: `algorithm` is
/// what the answer's `Encryption.Algorithm` says, `iv_b64` its `Iv`,
/// `tag_b64` (SM4-GCM only) its `TagList` entry.
///
/// # Errors
/// A typed error, never a panic, for: an algorithm other than the key's,
/// bad base64, a wrong IV or tag size, a missing or unexpected tag, and a
/// wrong key, IV or damaged data ([`CryptoError::Padding`] for CBC,
/// [`CryptoError::Authentication`] for GCM). CBC cannot detect every wrong
/// key: about one wrong key in 256 still yields valid padding, and garbage.
pub(crate) fn decrypt(
    algorithm: Algorithm,
    key: &SessionKey,
    iv_b64: &str,
    ciphertext_b64: &str,
    tag_b64: Option<&str>,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if key.algorithm() != algorithm {
        return Err(CryptoError::AlgorithmMismatch {
            key: key.algorithm(),
            other: "the data",
            expected: algorithm,
        });
    }
    let iv = Iv::from_base64(algorithm, iv_b64)?;
    let ciphertext = STANDARD
        .decode(ciphertext_b64)
        .map_err(|_| CryptoError::Base64 {
            part: Part::Ciphertext,
        })?;
    let mut buffer = Zeroizing::new(ciphertext);
    match algorithm {
        Algorithm::Aes256Cbc => {
            if tag_b64.is_some() {
                return Err(CryptoError::UnexpectedTag { algorithm });
            }
            let cipher = Aes256CbcDec::new_from_slices(key.expose_secret(), iv.as_bytes())
                .map_err(|_| internal_length_error(algorithm))?;
            let plain_len = cipher
                .decrypt_padded::<Pkcs7>(buffer.as_mut_slice())
                .map_err(|_| CryptoError::Padding)?
                .len();
            buffer.truncate(plain_len);
        }
        Algorithm::Sm4Gcm => {
            let tag_b64 = tag_b64.ok_or(CryptoError::MissingTag { algorithm })?;
            let tag_bytes = STANDARD
                .decode(tag_b64)
                .map_err(|_| CryptoError::Base64 { part: Part::Tag })?;
            let tag = Tag::try_from(tag_bytes.as_slice()).map_err(|_| CryptoError::Length {
                part: Part::Tag,
                algorithm,
                expected: 16,
                actual: tag_bytes.len(),
            })?;
            let (cipher, nonce) = sm4_gcm(key, iv.as_bytes())?;
            cipher
                .decrypt_inout_detached(nonce, &[], buffer.as_mut_slice().into(), &tag)
                .map_err(|_| CryptoError::Authentication)?;
        }
    }
    Ok(buffer)
}

/// The SM4-GCM cipher for `key`, and `iv` as its nonce.
fn sm4_gcm<'a>(
    key: &SessionKey,
    iv: &'a [u8],
) -> Result<(Sm4Gcm, &'a aes_gcm::Nonce<U12>), CryptoError> {
    let algorithm = Algorithm::Sm4Gcm;
    let cipher = Sm4Gcm::new_from_slice(key.expose_secret())
        .map_err(|_| internal_length_error(algorithm))?;
    let nonce = iv
        .try_into()
        .map_err(|_| internal_length_error(algorithm))?;
    Ok((cipher, nonce))
}

/// Key and IV lengths are checked by their types, so the ciphers cannot
/// refuse them; reported as a length error rather than a panic all the same.
fn internal_length_error(algorithm: Algorithm) -> CryptoError {
    CryptoError::SessionKeyFormat {
        algorithm,
        expected: algorithm.key_len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(algorithm: Algorithm) -> SessionKey {
        match algorithm {
            Algorithm::Aes256Cbc => {
                SessionKey::from_bytes(algorithm, b"Tk3v9QmZ2pLx7RbN8cWy4HsJ6dFg1AeU").unwrap()
            }
            Algorithm::Sm4Gcm => SessionKey::from_bytes(algorithm, b"q7Wm3Zk9Xp2Lr8Vt").unwrap(),
        }
    }

    fn iv(algorithm: Algorithm) -> Iv {
        Iv::from_bytes(algorithm, &[0x5a; 16][..algorithm.iv_len()]).unwrap()
    }

    const BODY: &str = r#"{"Result":"0","Name":"张三","IdNum":"11010519491231002X"}"#;

    /// Flips one bit of the base64-encoded bytes.
    fn flip(b64: &str, index: usize) -> String {
        let mut bytes = STANDARD.decode(b64).unwrap();
        let at = index % bytes.len();
        bytes[at] ^= 0x01;
        STANDARD.encode(bytes)
    }

    #[test]
    fn encrypt_then_decrypt_round_trips_for_both_algorithms_and_many_lengths() {
        for algorithm in Algorithm::ALL {
            let key = SessionKey::generate(algorithm).unwrap();
            for len in [0, 1, 15, 16, 17, 31, 32, 33, 100, 1000] {
                let plaintext: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
                let iv = Iv::generate(algorithm).unwrap();
                let sealed = encrypt(&key, &iv, &plaintext).unwrap();
                assert_eq!(sealed.tag_b64.is_some(), algorithm == Algorithm::Sm4Gcm);
                let opened = decrypt(
                    algorithm,
                    &key,
                    &iv.to_base64(),
                    &sealed.ciphertext_b64,
                    sealed.tag_b64.as_deref(),
                )
                .unwrap();
                assert_eq!(opened.as_slice(), plaintext.as_slice(), "{algorithm} {len}");
            }
        }
    }

    #[test]
    fn ciphertext_sizes_follow_the_modes() {
        let cbc = encrypt(
            &key(Algorithm::Aes256Cbc),
            &iv(Algorithm::Aes256Cbc),
            &[1; 16],
        )
        .unwrap();
        assert_eq!(STANDARD.decode(cbc.ciphertext_b64).unwrap().len(), 32);
        let gcm = encrypt(&key(Algorithm::Sm4Gcm), &iv(Algorithm::Sm4Gcm), &[1; 5]).unwrap();
        // GCM: the ciphertext is as long as the plaintext, the tag travels apart.
        assert_eq!(STANDARD.decode(gcm.ciphertext_b64).unwrap().len(), 5);
        assert_eq!(STANDARD.decode(gcm.tag_b64.unwrap()).unwrap().len(), 16);
    }

    #[test]
    fn sm4_gcm_detects_every_flipped_ciphertext_bit_position_and_tag_bit() {
        let algorithm = Algorithm::Sm4Gcm;
        let (key, iv) = (key(algorithm), iv(algorithm));
        let sealed = encrypt(&key, &iv, BODY.as_bytes()).unwrap();
        let tag = sealed.tag_b64.clone().unwrap();
        for index in [0, 1, 17, BODY.len() - 1] {
            let tampered = flip(&sealed.ciphertext_b64, index);
            assert!(matches!(
                decrypt(algorithm, &key, &iv.to_base64(), &tampered, Some(&tag)),
                Err(CryptoError::Authentication)
            ));
        }
        for index in [0, 7, 15] {
            let tampered = flip(&tag, index);
            assert!(matches!(
                decrypt(
                    algorithm,
                    &key,
                    &iv.to_base64(),
                    &sealed.ciphertext_b64,
                    Some(&tampered)
                ),
                Err(CryptoError::Authentication)
            ));
        }
    }

    #[test]
    fn sm4_gcm_rejects_a_wrong_key_or_iv() {
        let algorithm = Algorithm::Sm4Gcm;
        let sealed = encrypt(&key(algorithm), &iv(algorithm), BODY.as_bytes()).unwrap();
        let other_key = SessionKey::generate(algorithm).unwrap();
        assert!(matches!(
            decrypt(
                algorithm,
                &other_key,
                &iv(algorithm).to_base64(),
                &sealed.ciphertext_b64,
                sealed.tag_b64.as_deref()
            ),
            Err(CryptoError::Authentication)
        ));
        let other_iv = Iv::generate(algorithm).unwrap();
        assert!(matches!(
            decrypt(
                algorithm,
                &key(algorithm),
                &other_iv.to_base64(),
                &sealed.ciphertext_b64,
                sealed.tag_b64.as_deref()
            ),
            Err(CryptoError::Authentication)
        ));
    }

    #[test]
    fn sm4_gcm_needs_a_tag_of_sixteen_bytes() {
        let algorithm = Algorithm::Sm4Gcm;
        let (key, iv) = (key(algorithm), iv(algorithm));
        let sealed = encrypt(&key, &iv, BODY.as_bytes()).unwrap();
        assert!(matches!(
            decrypt(
                algorithm,
                &key,
                &iv.to_base64(),
                &sealed.ciphertext_b64,
                None
            ),
            Err(CryptoError::MissingTag { .. })
        ));
        let short = STANDARD.encode([0u8; 12]);
        assert!(matches!(
            decrypt(
                algorithm,
                &key,
                &iv.to_base64(),
                &sealed.ciphertext_b64,
                Some(&short)
            ),
            Err(CryptoError::Length {
                part: Part::Tag,
                expected: 16,
                actual: 12,
                ..
            })
        ));
        assert!(matches!(
            decrypt(
                algorithm,
                &key,
                &iv.to_base64(),
                &sealed.ciphertext_b64,
                Some("@@@")
            ),
            Err(CryptoError::Base64 { part: Part::Tag })
        ));
    }

    #[test]
    fn aes_cbc_with_a_wrong_key_fails_on_padding() {
        // Fixed inputs, so the outcome is fixed: with this wrong key the last
        // block's padding is invalid (as it is for ~255 wrong keys in 256).
        let algorithm = Algorithm::Aes256Cbc;
        let sealed = encrypt(&key(algorithm), &iv(algorithm), BODY.as_bytes()).unwrap();
        let wrong = SessionKey::from_bytes(algorithm, b"a0B1c2D3e4F5g6H7i8J9k0L1m2N3o4P5").unwrap();
        assert!(matches!(
            decrypt(
                algorithm,
                &wrong,
                &iv(algorithm).to_base64(),
                &sealed.ciphertext_b64,
                None
            ),
            Err(CryptoError::Padding)
        ));
    }

    #[test]
    fn aes_cbc_rejects_partial_blocks_empty_input_and_a_tag() {
        let algorithm = Algorithm::Aes256Cbc;
        let (key, iv) = (key(algorithm), iv(algorithm));
        for bytes in [&[][..], &[0u8; 15][..], &[0u8; 17][..]] {
            assert!(matches!(
                decrypt(
                    algorithm,
                    &key,
                    &iv.to_base64(),
                    &STANDARD.encode(bytes),
                    None
                ),
                Err(CryptoError::Padding)
            ));
        }
        let sealed = encrypt(&key, &iv, b"x").unwrap();
        assert!(matches!(
            decrypt(
                algorithm,
                &key,
                &iv.to_base64(),
                &sealed.ciphertext_b64,
                Some("AAAAAAAAAAAAAAAAAAAAAA==")
            ),
            Err(CryptoError::UnexpectedTag { .. })
        ));
    }

    #[test]
    fn aes_cbc_tampering_with_the_last_block_breaks_the_padding() {
        let algorithm = Algorithm::Aes256Cbc;
        let (key, iv) = (key(algorithm), iv(algorithm));
        let sealed = encrypt(&key, &iv, b"exactly sixteen!").unwrap();
        // Flipping the last byte of the next-to-last block flips the last
        // byte of the padding block (0x10 becomes 0x11): invalid padding.
        let tampered = flip(&sealed.ciphertext_b64, 15);
        assert!(matches!(
            decrypt(algorithm, &key, &iv.to_base64(), &tampered, None),
            Err(CryptoError::Padding)
        ));
    }

    #[test]
    fn bad_base64_and_bad_iv_sizes_are_typed_errors() {
        for algorithm in Algorithm::ALL {
            let key = key(algorithm);
            let iv_b64 = iv(algorithm).to_base64();
            let tag = (algorithm == Algorithm::Sm4Gcm).then_some("AAAAAAAAAAAAAAAAAAAAAA==");
            assert!(matches!(
                decrypt(algorithm, &key, &iv_b64, "not base64 at all", tag),
                Err(CryptoError::Base64 {
                    part: Part::Ciphertext
                })
            ));
            assert!(matches!(
                decrypt(algorithm, &key, "%%%", "AAAA", tag),
                Err(CryptoError::Base64 { part: Part::Iv })
            ));
            let wrong_iv = STANDARD.encode([1u8; 8]);
            assert!(matches!(
                decrypt(algorithm, &key, &wrong_iv, "AAAA", tag),
                Err(CryptoError::Length {
                    part: Part::Iv,
                    actual: 8,
                    ..
                })
            ));
        }
    }

    #[test]
    fn key_iv_and_data_must_agree_on_the_algorithm() {
        let key = key(Algorithm::Sm4Gcm);
        let cbc_iv = iv(Algorithm::Aes256Cbc);
        assert!(matches!(
            encrypt(&key, &cbc_iv, b"x"),
            Err(CryptoError::AlgorithmMismatch { .. })
        ));
        assert!(matches!(
            decrypt(
                Algorithm::Aes256Cbc,
                &key,
                &cbc_iv.to_base64(),
                "AAAA",
                None
            ),
            Err(CryptoError::AlgorithmMismatch { .. })
        ));
    }

    #[test]
    fn error_messages_carry_no_data() {
        let algorithm = Algorithm::Sm4Gcm;
        let (key, iv) = (key(algorithm), iv(algorithm));
        let sealed = encrypt(&key, &iv, BODY.as_bytes()).unwrap();
        let tampered = flip(&sealed.ciphertext_b64, 3);
        let error = decrypt(
            algorithm,
            &key,
            &iv.to_base64(),
            &tampered,
            sealed.tag_b64.as_deref(),
        )
        .unwrap_err();
        let message = format!("{error} {error:?}");
        for secret in [&tampered[..8], &iv.to_base64()[..8], "q7Wm3Zk9", "张三"] {
            assert!(!message.contains(secret), "{message}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn decrypt_never_panics_on_arbitrary_text(
                gcm in any::<bool>(),
                iv_b64 in ".{0,40}",
                ciphertext_b64 in ".{0,200}",
                tag_b64 in proptest::option::of(".{0,40}"),
            ) {
                let algorithm = if gcm { Algorithm::Sm4Gcm } else { Algorithm::Aes256Cbc };
                let _ = decrypt(algorithm, &key(algorithm), &iv_b64, &ciphertext_b64, tag_b64.as_deref());
            }

            #[test]
            fn decrypt_never_panics_on_well_formed_base64_of_arbitrary_bytes(
                gcm in any::<bool>(),
                iv in proptest::collection::vec(any::<u8>(), 0..20),
                ciphertext in proptest::collection::vec(any::<u8>(), 0..100),
                tag in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            ) {
                let algorithm = if gcm { Algorithm::Sm4Gcm } else { Algorithm::Aes256Cbc };
                let result = decrypt(
                    algorithm,
                    &key(algorithm),
                    &STANDARD.encode(&iv),
                    &STANDARD.encode(&ciphertext),
                    tag.map(|t| STANDARD.encode(t)).as_deref(),
                );
                // Random GCM data never authenticates.
                if gcm {
                    prop_assert!(result.is_err());
                }
            }

            #[test]
            fn round_trip_holds_for_arbitrary_plaintexts(
                gcm in any::<bool>(),
                plaintext in proptest::collection::vec(any::<u8>(), 0..300),
            ) {
                let algorithm = if gcm { Algorithm::Sm4Gcm } else { Algorithm::Aes256Cbc };
                let (key, iv) = (key(algorithm), iv(algorithm));
                let sealed = encrypt(&key, &iv, &plaintext).unwrap();
                let opened = decrypt(
                    algorithm,
                    &key,
                    &iv.to_base64(),
                    &sealed.ciphertext_b64,
                    sealed.tag_b64.as_deref(),
                ).unwrap();
                prop_assert_eq!(opened.as_slice(), plaintext.as_slice());
            }
        }
    }
}
