//! Tencent FaceID sensitive-data encryption: the pure cryptography, no I/O
//! besides reading PEM files.
//!
//! The caller (the gateway) makes a fresh [`SessionKey`] per request, wraps it
//! with Tencent's public key ([`wrap_key`]) and sends the wrapped key in
//! `Encryption.CiphertextBlob`; Tencent encrypts the personal data with that
//! key and the gateway opens it with [`decrypt`]. The server side
//! ([`PrivateKeys`], [`unwrap_key`], [`encrypt`]) is here too, for the
//! simulator.
//!
//! | | [`Algorithm::Aes256Cbc`] | [`Algorithm::Sm4Gcm`] |
//! | --- | --- | --- |
//! | session key | 32 ASCII letters/digits, used as the key bytes | 16 ASCII letters/digits |
//! | IV | 16 random bytes | 12 random bytes |
//! | data | AES-256-CBC, PKCS#7 padding | SM4-GCM, 16-byte tag (sent apart), no associated data |
//! | key wrapping | RSA PKCS#1 v1.5 (Tencent: RSA-1024) | SM2, `0x04`‖X‖Y ‖ SM3 digest ‖ C2 (C1C3C2) |
//!
//! Everything on the wire is standard base64 with padding. Session keys and
//! decrypted plaintexts are zeroized when dropped, and no error message or
//! `Debug` output carries key or data bytes.

mod keys;
mod session;
mod symmetric;
mod wrap;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub use keys::{PrivateKeys, PublicKeys};
pub(crate) use session::{Iv, SessionKey};
pub(crate) use symmetric::{decrypt, encrypt};
pub(crate) use wrap::{unwrap_key, wrap_key};

/// The symmetric algorithm of one request, as named in `Encryption.Algorithm`.
///
/// It also fixes the key wrapping: RSA for AES-256-CBC, SM2 for SM4-GCM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `AES-256-CBC`, what Tencent assumes when `Algorithm` is absent.
    #[default]
    Aes256Cbc,
    /// `SM4-GCM`.
    Sm4Gcm,
}

impl Algorithm {
    /// Both algorithms, for tests and help texts.
    pub const ALL: [Algorithm; 2] = [Algorithm::Aes256Cbc, Algorithm::Sm4Gcm];

    /// The name Tencent uses in `Encryption.Algorithm`.
    pub const fn as_wire(self) -> &'static str {
        match self {
            Algorithm::Aes256Cbc => "AES-256-CBC",
            Algorithm::Sm4Gcm => "SM4-GCM",
        }
    }

    /// Parses a wire name; ASCII case is ignored.
    ///
    /// # Errors
    /// [`CryptoError::UnknownAlgorithm`] for any other name.
    pub fn from_wire(name: &str) -> Result<Self, CryptoError> {
        Algorithm::ALL
            .into_iter()
            .find(|algorithm| algorithm.as_wire().eq_ignore_ascii_case(name.trim()))
            .ok_or(CryptoError::UnknownAlgorithm)
    }

    /// Length of the session key in bytes (= ASCII characters).
    pub const fn key_len(self) -> usize {
        match self {
            Algorithm::Aes256Cbc => 32,
            Algorithm::Sm4Gcm => 16,
        }
    }

    /// Length of the IV (GCM: nonce) in bytes.
    pub const fn iv_len(self) -> usize {
        match self {
            Algorithm::Aes256Cbc => 16,
            Algorithm::Sm4Gcm => 12,
        }
    }

    /// Length of the authentication tag in bytes, for the AEAD algorithm only.
    pub const fn tag_len(self) -> Option<usize> {
        match self {
            Algorithm::Aes256Cbc => None,
            Algorithm::Sm4Gcm => Some(16),
        }
    }

    /// The key pair that wraps session keys of this algorithm.
    pub const fn wrapping(self) -> KeyKind {
        match self {
            Algorithm::Aes256Cbc => KeyKind::RsaPublic,
            Algorithm::Sm4Gcm => KeyKind::Sm2Public,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_wire())
    }
}

impl FromStr for Algorithm {
    type Err = CryptoError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Algorithm::from_wire(name)
    }
}

/// Which asymmetric key an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// The RSA public key that wraps AES-256-CBC session keys.
    RsaPublic,
    /// The SM2 public key that wraps SM4-GCM session keys.
    Sm2Public,
    /// The simulator's RSA private key.
    RsaPrivate,
    /// The simulator's SM2 private key.
    Sm2Private,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::RsaPublic => "RSA public",
            KeyKind::Sm2Public => "SM2 public",
            KeyKind::RsaPrivate => "RSA private",
            KeyKind::Sm2Private => "SM2 private",
        })
    }
}

/// Which base64 input an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The wrapped session key (`Encryption.CiphertextBlob`).
    WrappedKey,
    /// The IV (`Encryption.Iv`).
    Iv,
    /// The encrypted data (`EncryptedBody` or a field value).
    Ciphertext,
    /// The SM4-GCM tag (`Encryption.TagList`).
    Tag,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::WrappedKey => "the wrapped key",
            Part::Iv => "the IV",
            Part::Ciphertext => "the ciphertext",
            Part::Tag => "the authentication tag",
        })
    }
}

/// A boxed library error kept as the `source` of a key error. The libraries'
/// messages describe the defect ("ASN.1 DER message is malformed"), never the
/// key bytes.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong here. Messages name the part and the
/// algorithm, never key material, IVs or data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// `Encryption.Algorithm` named something else.
    #[error("unknown encryption algorithm: expected AES-256-CBC or SM4-GCM")]
    UnknownAlgorithm,
    /// The operating system's random generator failed.
    #[error("the operating system's random number generator failed")]
    Random,
    /// A PEM file could not be read.
    #[error("cannot read the {kind} key file {}", path.display())]
    KeyFile {
        /// Which key.
        kind: KeyKind,
        /// The file that was asked for.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// A PEM text is not a key of the expected type and form.
    #[error("the {kind} key is not usable: {reason}")]
    InvalidKey {
        /// Which key.
        kind: KeyKind,
        /// What was expected.
        reason: &'static str,
        /// The parser's own account, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// A key pair could not be generated.
    #[error("generating the {kind} key failed")]
    KeyGeneration {
        /// Which key.
        kind: KeyKind,
    },
    /// Bytes offered as a session key are not in Tencent's format.
    #[error("an {algorithm} session key must be {expected} ASCII letters or digits")]
    SessionKeyFormat {
        /// The algorithm the key was meant for.
        algorithm: Algorithm,
        /// The required length.
        expected: usize,
    },
    /// The key, the IV or the data belong to different algorithms.
    #[error("the session key is for {key}, but {other} is for {expected}")]
    AlgorithmMismatch {
        /// The session key's algorithm.
        key: Algorithm,
        /// What disagrees with it.
        other: &'static str,
        /// That thing's algorithm.
        expected: Algorithm,
    },
    /// Public-key encryption of the session key failed.
    #[error("wrapping the session key with the {kind} key failed")]
    Wrap {
        /// Which key.
        kind: KeyKind,
    },
    /// The wrapped key does not decrypt to a session key.
    #[error("the wrapped session key does not open with the {kind} key")]
    Unwrap {
        /// Which key.
        kind: KeyKind,
    },
    /// An input is not standard padded base64.
    #[error("{part} is not valid base64")]
    Base64 {
        /// Which input.
        part: Part,
    },
    /// An IV or tag of the wrong size.
    #[error("{part} has {actual} bytes, {algorithm} needs {expected}")]
    Length {
        /// Which input.
        part: Part,
        /// The algorithm in use.
        algorithm: Algorithm,
        /// The required size.
        expected: usize,
        /// The size received.
        actual: usize,
    },
    /// SM4-GCM data came without its tag.
    #[error("{algorithm} data needs its authentication tag")]
    MissingTag {
        /// The algorithm in use.
        algorithm: Algorithm,
    },
    /// A tag came with data of an algorithm that has none.
    #[error("{algorithm} data takes no authentication tag")]
    UnexpectedTag {
        /// The algorithm in use.
        algorithm: Algorithm,
    },
    /// AES-256-CBC: not whole blocks, or bad PKCS#7 padding after decryption
    /// (wrong key or IV, or damaged data).
    #[error(
        "AES-256-CBC decryption failed: bad length or padding (wrong key or IV, or damaged data)"
    )]
    Padding,
    /// SM4-GCM: the tag does not match (wrong key or IV, or damaged data or tag).
    #[error(
        "SM4-GCM decryption failed: the authentication tag does not match (wrong key or IV, or damaged data or tag)"
    )]
    Authentication,
    /// The plaintext exceeds what the mode allows.
    #[error("the plaintext is too long for {algorithm}")]
    TooLong {
        /// The algorithm in use.
        algorithm: Algorithm,
    },
}

#[cfg(test)]
mod algorithm_tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for algorithm in Algorithm::ALL {
            assert_eq!(
                Algorithm::from_wire(algorithm.as_wire()).unwrap(),
                algorithm
            );
            assert_eq!(
                algorithm.to_string().parse::<Algorithm>().unwrap(),
                algorithm
            );
        }
        assert_eq!(Algorithm::Aes256Cbc.as_wire(), "AES-256-CBC");
        assert_eq!(Algorithm::Sm4Gcm.as_wire(), "SM4-GCM");
    }

    #[test]
    fn wire_names_ignore_ascii_case() {
        assert_eq!(Algorithm::from_wire("sm4-gcm").unwrap(), Algorithm::Sm4Gcm);
        assert_eq!(
            Algorithm::from_wire("aes-256-cbc").unwrap(),
            Algorithm::Aes256Cbc
        );
    }

    #[test]
    fn unknown_wire_names_are_rejected() {
        for name in ["", "AES-128-CBC", "SM4-CBC", "AES256CBC", "AES-256-GCM"] {
            assert!(matches!(
                Algorithm::from_wire(name),
                Err(CryptoError::UnknownAlgorithm)
            ));
        }
    }

    #[test]
    fn default_is_aes_256_cbc_and_sizes_match_tencent() {
        assert_eq!(Algorithm::default(), Algorithm::Aes256Cbc);
        assert_eq!(
            (
                Algorithm::Aes256Cbc.key_len(),
                Algorithm::Aes256Cbc.iv_len()
            ),
            (32, 16)
        );
        assert_eq!(
            (Algorithm::Sm4Gcm.key_len(), Algorithm::Sm4Gcm.iv_len()),
            (16, 12)
        );
        assert_eq!(Algorithm::Aes256Cbc.tag_len(), None);
        assert_eq!(Algorithm::Sm4Gcm.tag_len(), Some(16));
    }
}
