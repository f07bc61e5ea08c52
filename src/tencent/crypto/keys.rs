//! The asymmetric keys that wrap session keys: Tencent's public keys (built
//! in, or from PEM files) and the simulator's key pairs.

use std::fmt;
use std::path::Path;

use rsa::pkcs1::{DecodeRsaPublicKey, EncodeRsaPublicKey};
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use rsa::{PrivateKey as RsaPrivateKey, PublicKey as RsaPublicKey};
use sm2::elliptic_curve::Generate as _;
use zeroize::Zeroizing;

use super::{BoxError, CryptoError, KeyKind};

/// Tencent's RSA-1024 public key (PKCS#1 "RSA PUBLIC KEY" PEM), published in
/// its FaceID encryption demos and console; wraps AES-256-CBC session keys.
pub(crate) const TENCENT_RSA_PUBLIC_KEY_PEM: &str = "-----BEGIN RSA PUBLIC KEY-----
MIGJAoGBAMRJoaUkZN1d5Mp8F5V6itXmSLNM5Z771afayoI49SndkFtsspHS402Z
EUUPQfqbuZk/VuSh59LtA/fBKzb4BP5bV8aqogVhG4e/q+NDkwlaq0i31HwLyBla
EojE/EEHpXBsuEkVTbKEy5elRq9toL7IZ80i+H2mtfU5CPsar+R3AgMBAAE=
-----END RSA PUBLIC KEY-----
";

/// Tencent's SM2 public key (SubjectPublicKeyInfo "PUBLIC KEY" PEM), from the
/// same sources; wraps SM4-GCM session keys.
pub(crate) const TENCENT_SM2_PUBLIC_KEY_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoEcz1UBgi0DQgAEy2QjbKC4L6LJpw51mjX90X41NYGa
Mp+OGX7eJBfs8K98MOtKN8wPjj1iqHUlW6qyPGggNPI5RGEoAXaojOVycg==
-----END PUBLIC KEY-----
";

/// Modulus size of the simulator's RSA key, the same as Tencent's, so
/// wrapped keys have the real size (128 bytes).
const SIMULATOR_RSA_BITS: usize = 1024;

/// The public keys a caller wraps session keys with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKeys {
    /// Wraps AES-256-CBC keys (PKCS#1 v1.5 encryption).
    pub(crate) rsa: RsaPublicKey,
    /// Wraps SM4-GCM keys (SM2 encryption, C1C3C2).
    pub(crate) sm2: sm2::PublicKey,
}

impl PublicKeys {
    /// Tencent's published keys.
    ///
    /// # Panics
    /// Never: the built-in PEM constants are checked by the tests.
    pub fn tencent_defaults() -> Self {
        PublicKeys {
            rsa: parse_rsa_public_pem(TENCENT_RSA_PUBLIC_KEY_PEM)
                .expect("the built-in Tencent RSA key parses"),
            sm2: parse_sm2_public_pem(TENCENT_SM2_PUBLIC_KEY_PEM)
                .expect("the built-in Tencent SM2 key parses"),
        }
    }

    /// Both keys from PEM text; see [`parse_rsa_public_pem`] and
    /// [`parse_sm2_public_pem`] for the accepted forms.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKey`] naming the key that did not parse.
    #[cfg(test)]
    pub(crate) fn from_pem(rsa_pem: &str, sm2_pem: &str) -> Result<Self, CryptoError> {
        Ok(PublicKeys {
            rsa: parse_rsa_public_pem(rsa_pem)?,
            sm2: parse_sm2_public_pem(sm2_pem)?,
        })
    }

    /// Keys from PEM files where given, Tencent's built-in keys otherwise
    /// (for operators when Tencent rotates a key).
    ///
    /// # Errors
    /// [`CryptoError::KeyFile`] if a file cannot be read,
    /// [`CryptoError::InvalidKey`] if it holds no usable key.
    pub fn from_pem_files(rsa: Option<&Path>, sm2: Option<&Path>) -> Result<Self, CryptoError> {
        let defaults = PublicKeys::tencent_defaults();
        Ok(PublicKeys {
            rsa: match rsa {
                Some(path) => parse_rsa_public_pem(&read_pem(KeyKind::RsaPublic, path)?)?,
                None => defaults.rsa,
            },
            sm2: match sm2 {
                Some(path) => parse_sm2_public_pem(&read_pem(KeyKind::Sm2Public, path)?)?,
                None => defaults.sm2,
            },
        })
    }

    /// The RSA key as PKCS#1 "RSA PUBLIC KEY" PEM, the form Tencent publishes.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKey`] if encoding fails (it does not for valid keys).
    pub fn rsa_pem(&self) -> Result<String, CryptoError> {
        self.rsa
            .to_pkcs1_pem(LineEnding::LF)
            .map_err(|e| invalid(KeyKind::RsaPublic, "cannot be encoded as PEM", e))
    }

    /// The SM2 key as SubjectPublicKeyInfo "PUBLIC KEY" PEM.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKey`] if encoding fails (it does not for valid keys).
    pub fn sm2_pem(&self) -> Result<String, CryptoError> {
        self.sm2
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| invalid(KeyKind::Sm2Public, "cannot be encoded as PEM", e))
    }
}

/// The server side's key pairs (the simulator's stand-in for Tencent's).
/// Both private keys are zeroized on drop; `Debug` prints no key material.
#[derive(Clone)]
pub struct PrivateKeys {
    /// Unwraps AES-256-CBC keys.
    rsa: RsaPrivateKey,
    /// Unwraps SM4-GCM keys.
    sm2: sm2::SecretKey,
}

impl PrivateKeys {
    /// Fresh random key pairs: RSA-1024 (e = 65537, like Tencent's) and SM2.
    ///
    /// # Errors
    /// [`CryptoError::KeyGeneration`] if the OS generator fails.
    pub fn generate() -> Result<Self, CryptoError> {
        let rsa = RsaPrivateKey::new(&mut getrandom::SysRng, SIMULATOR_RSA_BITS).map_err(|_| {
            CryptoError::KeyGeneration {
                kind: KeyKind::RsaPrivate,
            }
        })?;
        let sm2 = sm2::SecretKey::try_generate_from_rng(&mut getrandom::SysRng).map_err(|_| {
            CryptoError::KeyGeneration {
                kind: KeyKind::Sm2Private,
            }
        })?;
        Ok(PrivateKeys { rsa, sm2 })
    }

    /// Puts together existing keys.
    #[cfg(test)]
    pub(crate) fn new(rsa: RsaPrivateKey, sm2: sm2::SecretKey) -> Self {
        PrivateKeys { rsa, sm2 }
    }

    /// The public halves, which a gateway wraps session keys with.
    pub fn public_keys(&self) -> PublicKeys {
        PublicKeys {
            rsa: self.rsa.to_public_key(),
            sm2: self.sm2.public_key(),
        }
    }

    /// The RSA private key, for unwrapping.
    pub(super) fn rsa(&self) -> &RsaPrivateKey {
        &self.rsa
    }

    /// The SM2 private key, for unwrapping.
    pub(super) fn sm2(&self) -> &sm2::SecretKey {
        &self.sm2
    }
}

impl fmt::Debug for PrivateKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKeys").finish_non_exhaustive()
    }
}

/// Parses an RSA public key from PKCS#1 ("RSA PUBLIC KEY", Tencent's form) or
/// SubjectPublicKeyInfo ("PUBLIC KEY") PEM. Sizes from 1024 to 4096 bits.
///
/// # Errors
/// [`CryptoError::InvalidKey`] for any other label or a malformed key.
pub(crate) fn parse_rsa_public_pem(pem: &str) -> Result<RsaPublicKey, CryptoError> {
    const KIND: KeyKind = KeyKind::RsaPublic;
    let pem = pem.trim();
    match pem_label(pem) {
        Some("RSA PUBLIC KEY") => RsaPublicKey::from_pkcs1_pem(pem)
            .map_err(|e| invalid(KIND, "malformed PKCS#1 RSA public key", e)),
        Some("PUBLIC KEY") => RsaPublicKey::from_public_key_pem(pem).map_err(|e| {
            invalid(
                KIND,
                "not an RSA key in SubjectPublicKeyInfo (PUBLIC KEY) form",
                e,
            )
        }),
        _ => Err(invalid_without_source(
            KIND,
            "expected PEM labelled RSA PUBLIC KEY (PKCS#1) or PUBLIC KEY (SubjectPublicKeyInfo)",
        )),
    }
}

/// Parses an SM2 public key from SubjectPublicKeyInfo ("PUBLIC KEY") PEM
/// with algorithm id-ecPublicKey and curve sm2p256v1, Tencent's form.
///
/// # Errors
/// [`CryptoError::InvalidKey`] for any other label, another curve or a
/// point not on the curve.
pub(crate) fn parse_sm2_public_pem(pem: &str) -> Result<sm2::PublicKey, CryptoError> {
    const KIND: KeyKind = KeyKind::Sm2Public;
    let pem = pem.trim();
    match pem_label(pem) {
        Some("PUBLIC KEY") => sm2::PublicKey::from_public_key_pem(pem).map_err(|e| {
            invalid(
                KIND,
                "not an SM2 key in SubjectPublicKeyInfo (PUBLIC KEY) form",
                e,
            )
        }),
        _ => Err(invalid_without_source(
            KIND,
            "expected PEM labelled PUBLIC KEY (SubjectPublicKeyInfo)",
        )),
    }
}

/// Parses an RSA private key from PKCS#1 ("RSA PRIVATE KEY") or unencrypted
/// PKCS#8 ("PRIVATE KEY") PEM.
///
/// # Errors
/// [`CryptoError::InvalidKey`] for any other label or a malformed key.
#[cfg(test)]
pub(crate) fn parse_rsa_private_pem(pem: &str) -> Result<RsaPrivateKey, CryptoError> {
    use rsa::pkcs1::DecodeRsaPrivateKey as _;
    use rsa::pkcs8::DecodePrivateKey as _;

    const KIND: KeyKind = KeyKind::RsaPrivate;
    let pem = pem.trim();
    match pem_label(pem) {
        Some("RSA PRIVATE KEY") => RsaPrivateKey::from_pkcs1_pem(pem)
            .map_err(|e| invalid(KIND, "malformed PKCS#1 RSA private key", e)),
        Some("PRIVATE KEY") => RsaPrivateKey::from_pkcs8_pem(pem)
            .map_err(|e| invalid(KIND, "not an RSA key in PKCS#8 (PRIVATE KEY) form", e)),
        _ => Err(invalid_without_source(
            KIND,
            "expected PEM labelled RSA PRIVATE KEY (PKCS#1) or PRIVATE KEY (PKCS#8)",
        )),
    }
}

/// Parses an SM2 private key from unencrypted PKCS#8 ("PRIVATE KEY") PEM.
///
/// # Errors
/// [`CryptoError::InvalidKey`] for any other label or a malformed key.
fn pem_label(pem: &str) -> Option<&str> {
    let rest = pem.strip_prefix("-----BEGIN ")?;
    let (label, _) = rest.split_once("-----")?;
    (!label.contains('\n')).then_some(label)
}

/// Reads a PEM file; the text is zeroized after use since it may be private.
fn read_pem(kind: KeyKind, path: &Path) -> Result<Zeroizing<String>, CryptoError> {
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|source| CryptoError::KeyFile {
            kind,
            path: path.to_owned(),
            source,
        })
}

fn invalid(
    kind: KeyKind,
    reason: &'static str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> CryptoError {
    CryptoError::InvalidKey {
        kind,
        reason,
        source: Some(Box::new(source) as BoxError),
    }
}

fn invalid_without_source(kind: KeyKind, reason: &'static str) -> CryptoError {
    CryptoError::InvalidKey {
        kind,
        reason,
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::io::Write as _;

    use rsa::traits::PublicKeyParts as _;

    use super::*;

    /// The whole error chain as one string, as a log line would show it.
    fn chain(error: &CryptoError) -> String {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }

    #[test]
    fn tencent_default_keys_parse_as_rsa_1024_and_sm2() {
        let keys = PublicKeys::tencent_defaults();
        assert_eq!(keys.rsa.size(), 128);
        assert_eq!(keys.rsa.e(), &rsa::BoxedUint::from(65537u32));
        assert_eq!(keys.sm2.to_sec1_bytes().len(), 65);
        // Re-encoding gives back the published text.
        assert_eq!(keys.rsa_pem().unwrap(), TENCENT_RSA_PUBLIC_KEY_PEM);
        assert_eq!(keys.sm2_pem().unwrap(), TENCENT_SM2_PUBLIC_KEY_PEM);
    }

    #[test]
    fn rsa_public_keys_parse_in_pkcs1_and_spki_form() {
        let keys = PublicKeys::tencent_defaults();
        let spki = keys.rsa.to_public_key_pem(LineEnding::LF).unwrap();
        assert!(spki.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(parse_rsa_public_pem(&spki).unwrap(), keys.rsa);
        // Surrounding whitespace and CRLF line ends are fine.
        let crlf = format!("\n  {}\n", TENCENT_RSA_PUBLIC_KEY_PEM.replace('\n', "\r\n"));
        assert_eq!(parse_rsa_public_pem(&crlf).unwrap(), keys.rsa);
    }

    #[test]
    fn keys_of_the_wrong_type_are_rejected_by_name() {
        let rsa_as_sm2 = parse_sm2_public_pem(TENCENT_RSA_PUBLIC_KEY_PEM).unwrap_err();
        assert!(matches!(
            rsa_as_sm2,
            CryptoError::InvalidKey {
                kind: KeyKind::Sm2Public,
                ..
            }
        ));
        let sm2_as_rsa = parse_rsa_public_pem(TENCENT_SM2_PUBLIC_KEY_PEM).unwrap_err();
        assert!(matches!(
            sm2_as_rsa,
            CryptoError::InvalidKey {
                kind: KeyKind::RsaPublic,
                ..
            }
        ));
        assert!(parse_rsa_private_pem(TENCENT_RSA_PUBLIC_KEY_PEM).is_err());
    }

    #[test]
    fn malformed_pem_errors_do_not_echo_the_input() {
        let garbage = "-----BEGIN RSA PUBLIC KEY-----\nU0VDUkVUU0VDUkVUU0VDUkVU\n-----END RSA PUBLIC KEY-----\n";
        let error = parse_rsa_public_pem(garbage).unwrap_err();
        let text = format!("{} {error:?}", chain(&error));
        assert!(!text.contains("U0VDUkVU"), "{text}");
        assert!(text.contains("RSA public"), "{text}");

        let not_pem = "SECRETSECRETSECRET";
        let error = parse_sm2_public_pem(not_pem).unwrap_err();
        let text = format!("{} {error:?}", chain(&error));
        assert!(!text.contains("SECRET"), "{text}");
    }

    #[test]
    fn public_keys_load_from_files_or_fall_back_to_tencents() {
        let defaults = PublicKeys::tencent_defaults();
        assert_eq!(PublicKeys::from_pem_files(None, None).unwrap(), defaults);

        let own = PrivateKeys::generate().unwrap().public_keys();
        let mut rsa_file = tempfile::NamedTempFile::new().unwrap();
        rsa_file
            .write_all(own.rsa_pem().unwrap().as_bytes())
            .unwrap();
        let mut sm2_file = tempfile::NamedTempFile::new().unwrap();
        sm2_file
            .write_all(own.sm2_pem().unwrap().as_bytes())
            .unwrap();

        let both =
            PublicKeys::from_pem_files(Some(rsa_file.path()), Some(sm2_file.path())).unwrap();
        assert_eq!(both, own);
        let only_sm2 = PublicKeys::from_pem_files(None, Some(sm2_file.path())).unwrap();
        assert_eq!(only_sm2.rsa, defaults.rsa);
        assert_eq!(only_sm2.sm2, own.sm2);
    }

    #[test]
    fn a_missing_or_wrong_key_file_is_a_typed_error() {
        let missing = Path::new("/nonexistent/faceid/rsa.pem");
        let error = PublicKeys::from_pem_files(Some(missing), None).unwrap_err();
        assert!(matches!(
            error,
            CryptoError::KeyFile {
                kind: KeyKind::RsaPublic,
                ..
            }
        ));
        assert!(error.to_string().contains("/nonexistent/faceid/rsa.pem"));

        let mut rsa_file = tempfile::NamedTempFile::new().unwrap();
        rsa_file
            .write_all(TENCENT_RSA_PUBLIC_KEY_PEM.as_bytes())
            .unwrap();
        let error = PublicKeys::from_pem_files(None, Some(rsa_file.path())).unwrap_err();
        assert!(matches!(
            error,
            CryptoError::InvalidKey {
                kind: KeyKind::Sm2Public,
                ..
            }
        ));
    }

    #[test]
    fn private_keys_make_rsa_1024_and_do_not_debug_print() {
        let keys = PrivateKeys::generate().unwrap();
        assert_eq!(keys.public_keys().rsa.size(), 128);
        assert_eq!(format!("{keys:?}"), "PrivateKeys { .. }");
    }

    #[test]
    fn pem_labels_are_read_from_the_first_line_only() {
        assert_eq!(
            pem_label("-----BEGIN PUBLIC KEY-----\nAA"),
            Some("PUBLIC KEY")
        );
        assert_eq!(pem_label("BEGIN PUBLIC KEY"), None);
        assert_eq!(pem_label("-----BEGIN PUBLIC\nKEY-----"), None);
        assert_eq!(pem_label(""), None);
    }
}
