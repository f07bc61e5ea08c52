//! TC3-HMAC-SHA256, Tencent Cloud API 3.0 request signing: pure functions, no
//! I/O and no clock (the timestamp is an input), so every step is testable
//! against the official SDK's vectors.
//!
//! The steps: canonical request → string to sign → signing key derived from
//! the secret key, the UTC date and the service → hex HMAC → `Authorization`.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The algorithm name that opens the string to sign and the header.
pub const ALGORITHM: &str = "TC3-HMAC-SHA256";
/// The last element of the credential scope.
const TERMINATOR: &str = "tc3_request";
/// Lower-case hex SHA-256 of the empty string (the payload hash of a GET).
pub const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

type HmacSha256 = Hmac<Sha256>;

/// Lower-case hex SHA-256 of `bytes`, the form every hash takes in TC3.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The `YYYY-MM-DD` UTC calendar day of a Unix timestamp: the date of the
/// credential scope. Never the local day.
///
/// Returns `None` for timestamps outside the representable calendar range.
pub fn credential_date(timestamp: i64) -> Option<String> {
    let date = time::OffsetDateTime::from_unix_timestamp(timestamp)
        .ok()?
        .date();
    Some(format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    ))
}

/// The parts of an HTTP request that a TC3 signature covers.
#[derive(Debug, Clone, Copy)]
pub struct CanonicalRequest<'a> {
    /// HTTP method in upper case.
    pub method: &'a str,
    /// The query string exactly as sent (empty for POST).
    pub query: &'a str,
    /// Signed headers as `(lower-case name, trimmed value)`, sorted by name.
    pub headers: &'a [(&'a str, &'a str)],
    /// Lower-case hex SHA-256 of the body bytes exactly as sent.
    pub payload_sha256: &'a str,
}

impl CanonicalRequest<'_> {
    /// The `SignedHeaders` list: header names joined by `;`.
    pub fn signed_headers(&self) -> String {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| *name).collect();
        names.join(";")
    }

    /// The canonical request text: six parts joined by `\n`, the header block
    /// itself ending in `\n`.
    pub fn to_text(&self) -> String {
        let mut headers = String::new();
        for (name, value) in self.headers {
            headers.push_str(name);
            headers.push(':');
            headers.push_str(value);
            headers.push('\n');
        }
        format!(
            "{}\n/\n{}\n{}\n{}\n{}",
            self.method,
            self.query,
            headers,
            self.signed_headers(),
            self.payload_sha256
        )
    }
}

/// The string to sign for a canonical request.
pub fn string_to_sign(
    timestamp: i64,
    date: &str,
    service: &str,
    canonical_request: &str,
) -> String {
    format!(
        "{ALGORITHM}\n{timestamp}\n{date}/{service}/{TERMINATOR}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// The key derived from a secret key for one UTC date and one service.
///
/// It is as sensitive as the secret key for that day, so it has no `Debug`.
#[derive(Clone)]
pub struct SigningKey([u8; 32]);

impl SigningKey {
    /// Derives `HMAC(HMAC(HMAC("TC3" + secret_key, date), service), "tc3_request")`,
    /// each step keyed with the raw digest of the previous one.
    pub fn derive(secret_key: &str, date: &str, service: &str) -> Self {
        let k_date = hmac(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
        let k_service = hmac(&k_date, service.as_bytes());
        Self(hmac(&k_service, TERMINATOR.as_bytes()))
    }

    /// The lower-case hex signature of a string to sign.
    pub fn sign(&self, string_to_sign: &str) -> String {
        hex::encode(hmac(&self.0, string_to_sign.as_bytes()))
    }

    /// Checks a hex signature in constant time.
    pub fn verify(&self, string_to_sign: &str, signature_hex: &str) -> bool {
        let Ok(expected) = hex::decode(signature_hex) else {
            return false;
        };
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(string_to_sign.as_bytes());
        mac.verify_slice(&expected).is_ok()
    }
}

/// The `Authorization` header value, with the exact spacing Tencent expects.
pub fn authorization(
    secret_id: &str,
    date: &str,
    service: &str,
    signed_headers: &str,
    signature: &str,
) -> String {
    format!(
        "{ALGORITHM} Credential={secret_id}/{date}/{service}/{TERMINATOR}, \
         SignedHeaders={signed_headers}, Signature={signature}"
    )
}

/// A parsed `Authorization` header, as a server receives it.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedAuthorization<'a> {
    /// The `SecretId` in the credential scope.
    pub secret_id: &'a str,
    /// The date in the credential scope.
    pub date: &'a str,
    /// The service in the credential scope.
    pub service: &'a str,
    /// The `SignedHeaders` list as sent.
    pub signed_headers: &'a str,
    /// The hex signature.
    pub signature: &'a str,
}

/// Parses an `Authorization` header of the form [`authorization`] writes.
///
/// Returns `None` when the algorithm, the layout or the scope terminator is
/// not what TC3 prescribes.
pub fn parse_authorization(header: &str) -> Option<ParsedAuthorization<'_>> {
    let rest = header.strip_prefix(ALGORITHM)?.strip_prefix(' ')?;
    let mut parts = rest.split(", ");
    let credential = parts.next()?.strip_prefix("Credential=")?;
    let signed_headers = parts.next()?.strip_prefix("SignedHeaders=")?;
    let signature = parts.next()?.strip_prefix("Signature=")?;
    if parts.next().is_some() {
        return None;
    }
    let mut scope = credential.split('/');
    let parsed = ParsedAuthorization {
        secret_id: scope.next()?,
        date: scope.next()?,
        service: scope.next()?,
        signed_headers,
        signature,
    };
    if scope.next()? != TERMINATOR || scope.next().is_some() || parsed.secret_id.is_empty() {
        return None;
    }
    Some(parsed)
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_date_is_the_utc_day() {
        // 2025-01-01T00:00:00Z minus one second is still 2024 in UTC.
        assert_eq!(
            credential_date(1_735_689_599).as_deref(),
            Some("2024-12-31")
        );
        assert_eq!(
            credential_date(1_735_689_600).as_deref(),
            Some("2025-01-01")
        );
    }

    #[test]
    fn credential_date_rejects_absurd_timestamps() {
        assert_eq!(credential_date(i64::MAX), None);
    }

    #[test]
    fn authorization_round_trips_through_the_parser() {
        let header = authorization("AKID1", "2025-01-01", "faceid", "content-type;host", "ab12");
        let parsed = parse_authorization(&header).expect("parses");
        assert_eq!(
            parsed,
            ParsedAuthorization {
                secret_id: "AKID1",
                date: "2025-01-01",
                service: "faceid",
                signed_headers: "content-type;host",
                signature: "ab12",
            }
        );
    }

    #[test]
    fn malformed_authorizations_are_refused() {
        for header in [
            "",
            "TC3-HMAC-SHA256",
            "HMAC-SHA1 Credential=a/b/c/tc3_request, SignedHeaders=host, Signature=00",
            "TC3-HMAC-SHA256 Credential=a/b/c/other, SignedHeaders=host, Signature=00",
            "TC3-HMAC-SHA256 Credential=a/b/c/tc3_request,SignedHeaders=host,Signature=00",
            "TC3-HMAC-SHA256 Credential=/b/c/tc3_request, SignedHeaders=host, Signature=00",
            "TC3-HMAC-SHA256 Credential=a/b/c/tc3_request/x, SignedHeaders=host, Signature=00",
        ] {
            assert_eq!(parse_authorization(header), None, "{header:?}");
        }
    }

    #[test]
    fn verify_accepts_only_the_right_signature() {
        let key = SigningKey::derive("secret", "2025-01-01", "faceid");
        let signature = key.sign("text");
        assert!(key.verify("text", &signature));
        assert!(!key.verify("other text", &signature));
        assert!(!key.verify("text", "not hex"));
        let other_key = SigningKey::derive("secret2", "2025-01-01", "faceid");
        assert!(!other_key.verify("text", &signature));
    }
}
