//! Wrapping the session key with the server's public key, and unwrapping it
//! on the server side (the simulator).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rsa::Pkcs1v15Encrypt;
use sm2::pke::{DecryptingKey, EncryptingKey, Mode};
use zeroize::Zeroizing;

use super::{Algorithm, CryptoError, KeyKind, Part, PrivateKeys, PublicKeys, SessionKey};

/// Encrypts the session key for `Encryption.CiphertextBlob`: RSA PKCS#1 v1.5
/// for AES-256-CBC keys (128 bytes with a 1024-bit key), SM2 in C1C3C2 order
/// for SM4-GCM keys (`0x04`‖X‖Y ‖ SM3 digest ‖ C2: 113 bytes for 16
/// characters). Returns base64.
///
/// # Errors
/// [`CryptoError::Wrap`] if the OS random generator fails or the key is too
/// small for the message.
pub(crate) fn wrap_key(public: &PublicKeys, key: &SessionKey) -> Result<String, CryptoError> {
    let kind = key.algorithm().wrapping();
    let wrapped = match key.algorithm() {
        Algorithm::Aes256Cbc => public
            .rsa
            .encrypt(&mut getrandom::SysRng, Pkcs1v15Encrypt, key.expose_secret())
            .map_err(|_| CryptoError::Wrap { kind })?,
        Algorithm::Sm4Gcm => EncryptingKey::new_with_mode(public.sm2, Mode::C1C3C2)
            .encrypt(&mut getrandom::SysRng, key.expose_secret())
            .map_err(|_| CryptoError::Wrap { kind })?,
    };
    Ok(STANDARD.encode(wrapped))
}

/// Decrypts a wrapped session key with the matching private key.
///
/// The result must be a key in Tencent's format (right length, ASCII letters
/// and digits): that check also catches a wrong RSA key or a damaged blob,
/// since RSA PKCS#1 v1.5 decryption here uses implicit rejection and answers
/// a bad blob with random bytes instead of an error.
///
/// # Errors
/// [`CryptoError::Base64`] for bad base64, [`CryptoError::Unwrap`] when the
/// blob does not open or does not hold a session key.
pub(crate) fn unwrap_key(
    private: &PrivateKeys,
    algorithm: Algorithm,
    wrapped_b64: &str,
) -> Result<SessionKey, CryptoError> {
    let blob = STANDARD
        .decode(wrapped_b64)
        .map_err(|_| CryptoError::Base64 {
            part: Part::WrappedKey,
        })?;
    let (kind, opened) = match algorithm {
        Algorithm::Aes256Cbc => (
            KeyKind::RsaPrivate,
            private.rsa().decrypt(Pkcs1v15Encrypt, &blob).ok(),
        ),
        Algorithm::Sm4Gcm => (
            KeyKind::Sm2Private,
            DecryptingKey::new_with_mode(private.sm2().to_nonzero_scalar(), Mode::C1C3C2)
                .decrypt(&blob)
                .ok(),
        ),
    };
    let opened = Zeroizing::new(opened.ok_or(CryptoError::Unwrap { kind })?);
    SessionKey::from_bytes(algorithm, &opened).map_err(|_| CryptoError::Unwrap { kind })
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use super::*;

    /// One generated pair for all tests here; RSA generation is slow in
    /// debug builds.
    static KEYS: LazyLock<PrivateKeys> = LazyLock::new(|| PrivateKeys::generate().unwrap());

    fn decoded_len(b64: &str) -> usize {
        STANDARD.decode(b64).unwrap().len()
    }

    #[test]
    fn wrapping_then_unwrapping_gives_the_same_key_for_both_algorithms() {
        let public = KEYS.public_keys();
        for algorithm in Algorithm::ALL {
            let key = SessionKey::generate(algorithm).unwrap();
            let wrapped = wrap_key(&public, &key).unwrap();
            let unwrapped = unwrap_key(&KEYS, algorithm, &wrapped).unwrap();
            assert_eq!(unwrapped.algorithm(), algorithm);
            assert_eq!(unwrapped.expose_secret(), key.expose_secret());
        }
    }

    #[test]
    fn wrapped_keys_have_tencents_sizes() {
        for public in [PublicKeys::tencent_defaults(), KEYS.public_keys()] {
            let rsa = wrap_key(
                &public,
                &SessionKey::generate(Algorithm::Aes256Cbc).unwrap(),
            )
            .unwrap();
            assert_eq!(rsa.len(), 172);
            assert_eq!(decoded_len(&rsa), 128);

            let sm2 = wrap_key(&public, &SessionKey::generate(Algorithm::Sm4Gcm).unwrap()).unwrap();
            let blob = STANDARD.decode(&sm2).unwrap();
            assert_eq!(blob.len(), 113);
            assert_eq!(blob[0], 0x04, "C1 is an uncompressed point");
        }
    }

    #[test]
    fn wrapping_is_randomized() {
        let public = KEYS.public_keys();
        for algorithm in Algorithm::ALL {
            let key = SessionKey::generate(algorithm).unwrap();
            assert_ne!(
                wrap_key(&public, &key).unwrap(),
                wrap_key(&public, &key).unwrap()
            );
        }
    }

    #[test]
    fn sm2_wrapping_is_in_c1c3c2_order() {
        // Reading the blob back in the other order must fail the C3 check.
        let public = KEYS.public_keys();
        let key = SessionKey::generate(Algorithm::Sm4Gcm).unwrap();
        let blob = STANDARD.decode(wrap_key(&public, &key).unwrap()).unwrap();
        let c1c2c3 = DecryptingKey::new_with_mode(KEYS.sm2().to_nonzero_scalar(), Mode::C1C2C3);
        assert!(c1c2c3.decrypt(&blob).is_err());
        let c1c3c2 = DecryptingKey::new_with_mode(KEYS.sm2().to_nonzero_scalar(), Mode::C1C3C2);
        assert_eq!(c1c3c2.decrypt(&blob).unwrap(), key.expose_secret());
    }

    #[test]
    fn tampered_or_foreign_wrapped_keys_do_not_unwrap() {
        let public = KEYS.public_keys();
        for algorithm in Algorithm::ALL {
            let key = SessionKey::generate(algorithm).unwrap();
            let mut blob = STANDARD.decode(wrap_key(&public, &key).unwrap()).unwrap();
            let last = blob.len() - 1;
            blob[last] ^= 0x01;
            let error = unwrap_key(&KEYS, algorithm, &STANDARD.encode(&blob)).unwrap_err();
            assert!(
                matches!(error, CryptoError::Unwrap { .. }),
                "{algorithm}: {error}"
            );

            // Wrapped for Tencent: our simulator's keys cannot open it.
            let for_tencent = wrap_key(&PublicKeys::tencent_defaults(), &key).unwrap();
            assert!(matches!(
                unwrap_key(&KEYS, algorithm, &for_tencent),
                Err(CryptoError::Unwrap { .. })
            ));
        }
    }

    #[test]
    fn a_key_wrapped_for_one_algorithm_does_not_unwrap_as_the_other() {
        let public = KEYS.public_keys();
        let rsa_wrapped = wrap_key(
            &public,
            &SessionKey::generate(Algorithm::Aes256Cbc).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            unwrap_key(&KEYS, Algorithm::Sm4Gcm, &rsa_wrapped),
            Err(CryptoError::Unwrap {
                kind: KeyKind::Sm2Private
            })
        ));
        let sm2_wrapped =
            wrap_key(&public, &SessionKey::generate(Algorithm::Sm4Gcm).unwrap()).unwrap();
        assert!(matches!(
            unwrap_key(&KEYS, Algorithm::Aes256Cbc, &sm2_wrapped),
            Err(CryptoError::Unwrap {
                kind: KeyKind::RsaPrivate
            })
        ));
    }

    #[test]
    fn malformed_wrapped_keys_are_typed_errors_not_panics() {
        for algorithm in Algorithm::ALL {
            assert!(matches!(
                unwrap_key(&KEYS, algorithm, "not base64!"),
                Err(CryptoError::Base64 {
                    part: Part::WrappedKey
                })
            ));
            for bytes in [
                &[][..],
                &[0x04][..],
                &[0x04; 97][..],
                &[0u8; 128][..],
                &[0xff; 129][..],
            ] {
                assert!(matches!(
                    unwrap_key(&KEYS, algorithm, &STANDARD.encode(bytes)),
                    Err(CryptoError::Unwrap { .. })
                ));
            }
        }
    }
}
