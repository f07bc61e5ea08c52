//! Per-request symmetric material: the session key and the IV.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::{Algorithm, CryptoError, Part};

/// The characters of a session key, as in Tencent's demos.
const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The largest multiple of 62 that fits in a byte: random bytes at or above it
/// are dropped so every character is equally likely.
const UNBIASED_LIMIT: u8 = 248;

/// The longest key and IV of any algorithm, the size of the inline buffers.
const MAX_LEN: usize = 32;

/// A fresh symmetric key in Tencent's format: 32 (AES-256-CBC) or 16
/// (SM4-GCM) random ASCII letters and digits, whose ASCII bytes are the key.
///
/// Lives in memory only; zeroized on drop; `Debug` shows the algorithm only.
/// Deliberately not `Clone`, so a key is not copied around by accident.
pub(crate) struct SessionKey {
    /// Which algorithm the key is for; fixes its length.
    algorithm: Algorithm,
    /// The key in the first `algorithm.key_len()` bytes, zeros after.
    bytes: [u8; MAX_LEN],
}

impl SessionKey {
    /// Draws a new key from the operating system's CSPRNG.
    ///
    /// # Errors
    /// [`CryptoError::Random`] if the OS generator fails.
    pub(crate) fn generate(algorithm: Algorithm) -> Result<Self, CryptoError> {
        let mut key = SessionKey {
            algorithm,
            bytes: [0; MAX_LEN],
        };
        let mut pool = [0u8; 64];
        let mut filled = 0;
        while filled < algorithm.key_len() {
            getrandom::fill(&mut pool).map_err(|_| CryptoError::Random)?;
            for &byte in &pool {
                if filled == algorithm.key_len() {
                    break;
                }
                if byte < UNBIASED_LIMIT {
                    key.bytes[filled] = ALPHABET[usize::from(byte % 62)];
                    filled += 1;
                }
            }
        }
        pool.zeroize();
        Ok(key)
    }

    /// Takes an existing key (an unwrapped one, or a test vector's).
    ///
    /// # Errors
    /// [`CryptoError::SessionKeyFormat`] unless `bytes` are exactly
    /// `algorithm.key_len()` ASCII letters or digits.
    pub(crate) fn from_bytes(algorithm: Algorithm, bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != algorithm.key_len() || !bytes.iter().all(u8::is_ascii_alphanumeric) {
            return Err(CryptoError::SessionKeyFormat {
                algorithm,
                expected: algorithm.key_len(),
            });
        }
        let mut key = SessionKey {
            algorithm,
            bytes: [0; MAX_LEN],
        };
        key.bytes[..bytes.len()].copy_from_slice(bytes);
        Ok(key)
    }

    /// The algorithm this key is for.
    pub(crate) fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The key bytes (ASCII). Named so that every use stands out in review.
    pub(crate) fn expose_secret(&self) -> &[u8] {
        &self.bytes[..self.algorithm.key_len()]
    }
}

impl Drop for SessionKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl ZeroizeOnDrop for SessionKey {}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// An initialization vector (for GCM: the nonce) of the right size for its
/// algorithm. Not secret, but must be fresh for every encryption with a key.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Iv {
    /// Which algorithm the IV is for; fixes its length.
    algorithm: Algorithm,
    /// The IV in the first `algorithm.iv_len()` bytes.
    bytes: [u8; MAX_LEN],
}

impl Iv {
    /// Draws a fresh IV from the operating system's CSPRNG.
    ///
    /// # Errors
    /// [`CryptoError::Random`] if the OS generator fails.
    pub(crate) fn generate(algorithm: Algorithm) -> Result<Self, CryptoError> {
        let mut iv = Iv {
            algorithm,
            bytes: [0; MAX_LEN],
        };
        getrandom::fill(&mut iv.bytes[..algorithm.iv_len()]).map_err(|_| CryptoError::Random)?;
        Ok(iv)
    }

    /// Takes raw IV bytes.
    ///
    /// # Errors
    /// [`CryptoError::Length`] unless there are exactly `algorithm.iv_len()`.
    pub(crate) fn from_bytes(algorithm: Algorithm, bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != algorithm.iv_len() {
            return Err(CryptoError::Length {
                part: Part::Iv,
                algorithm,
                expected: algorithm.iv_len(),
                actual: bytes.len(),
            });
        }
        let mut iv = Iv {
            algorithm,
            bytes: [0; MAX_LEN],
        };
        iv.bytes[..bytes.len()].copy_from_slice(bytes);
        Ok(iv)
    }

    /// Takes the base64 form sent in `Encryption.Iv`.
    ///
    /// # Errors
    /// [`CryptoError::Base64`] or [`CryptoError::Length`].
    pub(crate) fn from_base64(algorithm: Algorithm, text: &str) -> Result<Self, CryptoError> {
        let bytes = STANDARD
            .decode(text)
            .map_err(|_| CryptoError::Base64 { part: Part::Iv })?;
        Iv::from_bytes(algorithm, &bytes)
    }

    /// The algorithm this IV is for.
    pub(crate) fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The IV bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.algorithm.iv_len()]
    }

    /// The base64 form for `Encryption.Iv` (24 characters for CBC, 16 for GCM).
    pub(crate) fn to_base64(&self) -> String {
        STANDARD.encode(self.as_bytes())
    }
}

impl fmt::Debug for Iv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iv")
            .field("algorithm", &self.algorithm)
            .field("base64", &self.to_base64())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_tencents_length_and_alphabet() {
        for algorithm in Algorithm::ALL {
            let key = SessionKey::generate(algorithm).unwrap();
            assert_eq!(key.algorithm(), algorithm);
            assert_eq!(key.expose_secret().len(), algorithm.key_len());
            assert!(key.expose_secret().iter().all(u8::is_ascii_alphanumeric));
        }
        assert_eq!(
            SessionKey::generate(Algorithm::Aes256Cbc)
                .unwrap()
                .expose_secret()
                .len(),
            32
        );
        assert_eq!(
            SessionKey::generate(Algorithm::Sm4Gcm)
                .unwrap()
                .expose_secret()
                .len(),
            16
        );
    }

    #[test]
    fn two_generated_keys_differ() {
        for algorithm in Algorithm::ALL {
            let a = SessionKey::generate(algorithm).unwrap();
            let b = SessionKey::generate(algorithm).unwrap();
            assert_ne!(a.expose_secret(), b.expose_secret());
        }
    }

    #[test]
    fn generated_keys_use_the_whole_alphabet() {
        // 200 keys of 32 characters: each of the 62 characters is expected
        // about 100 times, so a missing one would point at a biased mapping.
        let mut seen = [false; 128];
        for _ in 0..200 {
            let key = SessionKey::generate(Algorithm::Aes256Cbc).unwrap();
            for &c in key.expose_secret() {
                seen[usize::from(c)] = true;
            }
        }
        for &c in ALPHABET {
            assert!(seen[usize::from(c)], "character {} never drawn", c as char);
        }
    }

    #[test]
    fn debug_shows_no_key_bytes() {
        let key = SessionKey::from_bytes(Algorithm::Sm4Gcm, b"q7Wm3Zk9Xp2Lr8Vt").unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("q7Wm"), "{shown}");
        assert!(shown.contains("Sm4Gcm"));
    }

    #[test]
    fn keys_of_the_wrong_length_or_alphabet_are_rejected() {
        let cases: [(Algorithm, &[u8]); 5] = [
            (Algorithm::Aes256Cbc, b"short"),
            (Algorithm::Aes256Cbc, b"q7Wm3Zk9Xp2Lr8Vt"),
            (Algorithm::Sm4Gcm, b"Tk3v9QmZ2pLx7RbN8cWy4HsJ6dFg1AeU"),
            (Algorithm::Sm4Gcm, b"q7Wm3Zk9Xp2Lr8V!"),
            (Algorithm::Sm4Gcm, b"q7Wm3Zk9Xp2Lr8V\xff"),
        ];
        for (algorithm, bytes) in cases {
            assert!(matches!(
                SessionKey::from_bytes(algorithm, bytes),
                Err(CryptoError::SessionKeyFormat { .. })
            ));
        }
    }

    #[test]
    fn ivs_have_the_algorithms_length_and_base64_form() {
        let cbc = Iv::generate(Algorithm::Aes256Cbc).unwrap();
        assert_eq!(cbc.as_bytes().len(), 16);
        assert_eq!(cbc.to_base64().len(), 24);
        let gcm = Iv::generate(Algorithm::Sm4Gcm).unwrap();
        assert_eq!(gcm.as_bytes().len(), 12);
        assert_eq!(gcm.to_base64().len(), 16);
        assert_eq!(
            Iv::from_base64(Algorithm::Sm4Gcm, &gcm.to_base64()).unwrap(),
            gcm
        );
        assert_ne!(Iv::generate(Algorithm::Sm4Gcm).unwrap(), gcm);
    }

    #[test]
    fn ivs_of_the_wrong_length_or_encoding_are_rejected() {
        let twelve = STANDARD.encode([7u8; 12]);
        assert!(matches!(
            Iv::from_base64(Algorithm::Aes256Cbc, &twelve),
            Err(CryptoError::Length {
                part: Part::Iv,
                expected: 16,
                actual: 12,
                ..
            })
        ));
        assert!(matches!(
            Iv::from_base64(Algorithm::Sm4Gcm, "not base64!"),
            Err(CryptoError::Base64 { part: Part::Iv })
        ));
        assert!(matches!(
            Iv::from_base64(Algorithm::Sm4Gcm, ""),
            Err(CryptoError::Length { actual: 0, .. })
        ));
    }
}
