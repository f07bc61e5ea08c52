//! Tencent's sensitive-data encryption on the gateway's side of the wire:
//! asking for it in a request (`IsEncryptResponse` or `IsEncrypt` with a
//! freshly wrapped session key) and opening the answer, so callers get the
//! same plain answer either way. The cryptography is in [`crate::tencent::crypto`].
//!
//! - [`Mode::Response`]: Tencent encrypts the whole answer into
//!   `EncryptedBody`; the gateway decrypts it with the answer's `Iv` (and
//!   `TagList[0]` for SM4-GCM) and parses the plaintext as the answer.
//! - [`Mode::Fields`]: only `Name` and `IdNum` come encrypted, each with the
//!   IV of the answer's `Encryption` (else the one sent) and, for SM4-GCM,
//!   its tag in `TagList`, in `EncryptList` order.
//!
//! The session key lives in memory for one request and is zeroized when the
//! request is dropped.

use std::sync::Arc;

use crate::tencent::crypto::{self, Algorithm, Iv, PublicKeys, SessionKey};

use super::model::{CheckIdCardInformationRequest, CheckIdCardInformationResponse, Encryption};

/// What to encrypt in Tencent's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The whole answer (`IsEncryptResponse`).
    Response,
    /// `Name` and `IdNum` (`IsEncrypt`).
    Fields,
}

/// The `EncryptList` entry naming the whole answer (as Tencent's demos send).
const ENCRYPTED_BODY_ITEM: &str = "EncryptionBody";

/// How the gateway asks for encryption: the algorithm and Tencent's public
/// keys. Shared by every request.
#[derive(Debug, Clone)]
pub struct EncryptionSettings {
    /// The symmetric algorithm.
    pub algorithm: Algorithm,
    /// The keys that wrap each session key.
    pub public_keys: Arc<PublicKeys>,
}

/// Why an answer could not be opened. Messages never hold ciphertext.
#[derive(Debug, thiserror::Error)]
pub enum DecryptError {
    /// The answer lacks what the mode needs.
    #[error("the encrypted answer has no {0}")]
    Missing(&'static str),
    /// The cryptography refused (bad tag, padding, base64, sizes).
    #[error("the encrypted answer does not decrypt")]
    Crypto(#[from] crypto::CryptoError),
    /// The decrypted body is not the answer's JSON.
    #[error("the decrypted answer is not valid JSON")]
    Json,
}

/// One request's encryption: the mode, the session key and the IV sent.
pub struct RequestEncryption {
    mode: Mode,
    key: SessionKey,
    iv: Iv,
}

impl std::fmt::Debug for RequestEncryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestEncryption")
            .field("mode", &self.mode)
            .field("algorithm", &self.key.algorithm())
            .finish_non_exhaustive()
    }
}

impl RequestEncryption {
    /// A fresh session key and IV for one request, and the request's
    /// `IsEncrypt*` and `Encryption` parameters set to ask for `mode`.
    ///
    /// # Errors
    /// The random generator or the key wrapping failed.
    pub fn start(
        mode: Mode,
        settings: &EncryptionSettings,
        params: &mut CheckIdCardInformationRequest,
    ) -> Result<Self, crypto::CryptoError> {
        let key = SessionKey::generate(settings.algorithm)?;
        let iv = Iv::generate(settings.algorithm)?;
        let encrypt_list = match mode {
            Mode::Response => vec![ENCRYPTED_BODY_ITEM.to_owned()],
            Mode::Fields => vec!["Name".to_owned(), "IdNum".to_owned()],
        };
        params.encryption = Some(Encryption {
            encrypt_list: Some(encrypt_list),
            ciphertext_blob: Some(crypto::wrap_key(&settings.public_keys, &key)?),
            iv: Some(iv.to_base64()),
            algorithm: Some(settings.algorithm.as_wire().to_owned()),
            tag_list: None,
        });
        match mode {
            Mode::Response => params.is_encrypt_response = Some(true),
            Mode::Fields => params.is_encrypt = Some(true),
        }
        Ok(Self { mode, key, iv })
    }

    /// The mode asked for.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Opens a successful (non-`Error`) answer: decrypts the body or the two
    /// fields and returns the plain answer.
    ///
    /// # Errors
    /// [`DecryptError`] when the answer lacks its encryption data or does
    /// not decrypt.
    pub fn open(
        &self,
        mut response: CheckIdCardInformationResponse,
    ) -> Result<CheckIdCardInformationResponse, DecryptError> {
        let algorithm = self.key.algorithm();
        let info = response.encryption.take().unwrap_or_default();
        let iv = info.iv.clone().filter(|iv| !iv.is_empty());
        let iv = iv.unwrap_or_else(|| self.iv.to_base64());
        let tags = info.tag_list.clone().unwrap_or_default();
        match self.mode {
            Mode::Response => {
                let body = response
                    .encrypted_body
                    .take()
                    .filter(|body| !body.is_empty())
                    .ok_or(DecryptError::Missing("EncryptedBody"))?;
                let tag = tags.first().map(String::as_str);
                let plain = crypto::decrypt(algorithm, &self.key, &iv, &body, tag)?;
                let mut inner: CheckIdCardInformationResponse =
                    serde_json::from_slice(&plain).map_err(|_| DecryptError::Json)?;
                if inner.request_id.is_none() {
                    inner.request_id = response.request_id.take();
                }
                Ok(inner)
            }
            Mode::Fields => {
                let order = info
                    .encrypt_list
                    .unwrap_or_else(|| vec!["Name".to_owned(), "IdNum".to_owned()]);
                let tag_of = |field: &str| -> Option<&str> {
                    let position = order.iter().position(|item| item == field)?;
                    tags.get(position).map(String::as_str)
                };
                let open_field = |value: Option<String>, field: &'static str| {
                    let text = value
                        .filter(|v| !v.is_empty())
                        .ok_or(DecryptError::Missing(field))?;
                    let plain = crypto::decrypt(algorithm, &self.key, &iv, &text, tag_of(field))?;
                    String::from_utf8(plain.to_vec()).map_err(|_| DecryptError::Json)
                };
                // A comparison that never read the card has nothing to open.
                if response.name.as_deref().is_some_and(|n| !n.is_empty()) {
                    response.name = Some(open_field(response.name.take(), "Name")?);
                }
                if response.id_num.as_deref().is_some_and(|n| !n.is_empty()) {
                    response.id_num = Some(open_field(response.id_num.take(), "IdNum")?);
                }
                Ok(response)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tencent::crypto::PrivateKeys;

    /// The simulator's half: unwrap and encrypt as Tencent does.
    fn server_encrypt(
        private: &PrivateKeys,
        request: &CheckIdCardInformationRequest,
        plain: &CheckIdCardInformationResponse,
        mode: Mode,
    ) -> CheckIdCardInformationResponse {
        let encryption = request.encryption.as_ref().unwrap();
        let algorithm = Algorithm::from_wire(encryption.algorithm.as_deref().unwrap()).unwrap();
        let key = crypto::unwrap_key(
            private,
            algorithm,
            encryption.ciphertext_blob.as_deref().unwrap(),
        )
        .unwrap();
        match mode {
            Mode::Response => {
                let iv = Iv::generate(algorithm).unwrap();
                let sealed =
                    crypto::encrypt(&key, &iv, &serde_json::to_vec(plain).unwrap()).unwrap();
                CheckIdCardInformationResponse {
                    encrypted_body: Some(sealed.ciphertext_b64),
                    encryption: Some(Encryption {
                        iv: Some(iv.to_base64()),
                        tag_list: sealed.tag_b64.map(|t| vec![t]),
                        ..Default::default()
                    }),
                    request_id: Some("outer".into()),
                    ..Default::default()
                }
            }
            Mode::Fields => {
                let iv = Iv::from_base64(algorithm, encryption.iv.as_deref().unwrap()).unwrap();
                let name =
                    crypto::encrypt(&key, &iv, plain.name.as_deref().unwrap().as_bytes()).unwrap();
                let id = crypto::encrypt(&key, &iv, plain.id_num.as_deref().unwrap().as_bytes())
                    .unwrap();
                CheckIdCardInformationResponse {
                    name: Some(name.ciphertext_b64),
                    id_num: Some(id.ciphertext_b64),
                    encryption: Some(Encryption {
                        encrypt_list: Some(vec!["Name".into(), "IdNum".into()]),
                        tag_list: name.tag_b64.zip(id.tag_b64).map(|(a, b)| vec![a, b]),
                        ..Default::default()
                    }),
                    ..plain.clone()
                }
            }
        }
    }

    fn plain() -> CheckIdCardInformationResponse {
        CheckIdCardInformationResponse {
            result: Some("Success".into()),
            sim: Some(95.5),
            name: Some("张三".into()),
            id_num: Some("11010519491231002X".into()),
            request_id: Some("rid".into()),
            ..Default::default()
        }
    }

    #[test]
    fn both_modes_and_algorithms_round_trip() {
        let private = PrivateKeys::generate().unwrap();
        for algorithm in Algorithm::ALL {
            let settings = EncryptionSettings {
                algorithm,
                public_keys: Arc::new(private.public_keys()),
            };
            for mode in [Mode::Response, Mode::Fields] {
                let mut request = CheckIdCardInformationRequest::default();
                let encryption = RequestEncryption::start(mode, &settings, &mut request).unwrap();
                assert_eq!(
                    request.is_encrypt_response,
                    (mode == Mode::Response).then_some(true)
                );
                assert_eq!(request.is_encrypt, (mode == Mode::Fields).then_some(true));
                let sealed = server_encrypt(&private, &request, &plain(), mode);
                let text = serde_json::to_string(&sealed).unwrap();
                assert!(!text.contains("张三") && !text.contains("11010519491231002X"));
                let opened = encryption.open(sealed).unwrap();
                assert_eq!(
                    opened.name.as_deref(),
                    Some("张三"),
                    "{algorithm:?} {mode:?}"
                );
                assert_eq!(opened.id_num.as_deref(), Some("11010519491231002X"));
                assert_eq!(opened.sim, Some(95.5));
            }
        }
    }

    #[test]
    fn tampering_and_missing_parts_are_errors_not_panics() {
        let private = PrivateKeys::generate().unwrap();
        for algorithm in Algorithm::ALL {
            let settings = EncryptionSettings {
                algorithm,
                public_keys: Arc::new(private.public_keys()),
            };
            let mut request = CheckIdCardInformationRequest::default();
            let encryption =
                RequestEncryption::start(Mode::Response, &settings, &mut request).unwrap();
            let mut sealed = server_encrypt(&private, &request, &plain(), Mode::Response);
            let body = sealed.encrypted_body.take().unwrap();
            let mut bytes = body.into_bytes();
            bytes[4] = if bytes[4] == b'A' { b'B' } else { b'A' };
            sealed.encrypted_body = Some(String::from_utf8(bytes).unwrap());
            let error = encryption.open(sealed).unwrap_err();
            assert!(
                matches!(error, DecryptError::Crypto(_) | DecryptError::Json),
                "{algorithm:?}"
            );

            let missing = encryption
                .open(CheckIdCardInformationResponse::default())
                .unwrap_err();
            assert!(matches!(missing, DecryptError::Missing("EncryptedBody")));
        }
    }
}
