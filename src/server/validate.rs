//! Checks a `VerifyIdCardRequest` before anything is billed, and turns it into
//! a [`Verification`]: the validated input the upstream call is built from.
//! Every failure names the field and the rule, and never echoes the input.

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::Bytes;
use reqwest::Url;

use crate::proto::{
    Checks, UpstreamEncryption, VerifyIdCardRequest, verify_id_card_request::Source,
};
use crate::tencent::crypto::CryptoError;
use crate::tencent::image::{MAX_IMAGE_BYTES, check_image};
use crate::tencent::model::{CheckIdCardInformationRequest, Config};
use crate::tencent::{EncryptionMode, EncryptionSettings, RequestBody, RequestEncryption};

/// The longest `image_url` accepted, in characters.
pub(crate) const MAX_IMAGE_URL_LEN: usize = 2048;
/// The largest gRPC message the server decodes: the largest valid image plus
/// room for the other fields of a batch item, and no more.
pub(crate) const MAX_REQUEST_MESSAGE_BYTES: usize = MAX_IMAGE_BYTES + 4 * 1024;

/// What the operator allows as input, fixed at start-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct InputRules {
    /// Let `image_url` name internal addresses (private, loopback,
    /// link-local, CGNAT, unique-local, unspecified, `localhost`), for a
    /// gateway whose upstream is a local test double.
    pub(crate) allow_private_image_urls: bool,
}

/// One rule a request broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation {
    /// The offending field's path, e.g. `image` or `request.image_url`.
    pub(crate) field: String,
    /// What is wrong, without the value.
    pub(crate) description: String,
    /// The Tencent code that means the same thing, used as the error reason so
    /// callers see one reason whoever caught the problem.
    pub(crate) code: &'static str,
}

/// A request that must not reach Tencent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid request: {}", .violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; "))]
pub(crate) struct InvalidArgument {
    /// Every broken rule (at least one).
    pub(crate) violations: Vec<Violation>,
}

impl InvalidArgument {
    /// The `ErrorInfo.reason`: the Tencent code of the first violation.
    pub(crate) fn reason(&self) -> &'static str {
        self.violations
            .first()
            .map_or("InvalidParameter", |v| v.code)
    }

    /// A single violation.
    pub(crate) fn new(
        field: impl Into<String>,
        description: impl Into<String>,
        code: &'static str,
    ) -> Self {
        Self {
            violations: vec![Violation {
                field: field.into(),
                description: description.into(),
                code,
            }],
        }
    }
}

/// Where the image comes from, once validated.
#[derive(Clone)]
pub(crate) enum ImageSource {
    /// PNG or JPEG bytes within the size cap.
    Image(Bytes),
    /// An http(s) URL within the length cap, naming a host the rules allow.
    Url(String),
}

/// What a request asked about Tencent's answer encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EncryptionChoice {
    /// The gateway's configured default.
    GatewayDefault,
    /// No encryption.
    Off,
    /// This mode.
    On(EncryptionMode),
}

/// A validated verification, ready to become an upstream request body.
#[derive(Clone)]
pub(crate) struct Verification {
    /// The image.
    pub(crate) source: ImageSource,
    /// The alarm switches.
    pub(crate) config: Config,
    /// The caller's encryption override.
    pub(crate) encryption: EncryptionChoice,
}

impl std::fmt::Debug for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.source {
            ImageSource::Image(bytes) => format!("image ({} bytes)", bytes.len()),
            ImageSource::Url(_) => "image_url".to_owned(),
        };
        f.debug_struct("Verification")
            .field("source", &source)
            .field("config", &self.config)
            .field("encryption", &self.encryption)
            .finish()
    }
}

impl Verification {
    /// Validates `request` under `rules`; `field_prefix` (e.g. `request.`)
    /// is put before field names so batch items point at the right path.
    ///
    /// # Errors
    /// [`InvalidArgument`] naming the first broken rule.
    pub(crate) fn parse(
        request: VerifyIdCardRequest,
        field_prefix: &str,
        rules: InputRules,
    ) -> Result<Self, InvalidArgument> {
        // prost keeps enum fields as raw numbers: a value this gateway does
        // not know must not silently mean "unset".
        let encryption = match UpstreamEncryption::try_from(request.upstream_encryption) {
            Ok(UpstreamEncryption::Unspecified) => EncryptionChoice::GatewayDefault,
            Ok(UpstreamEncryption::Off) => EncryptionChoice::Off,
            Ok(UpstreamEncryption::Response) => EncryptionChoice::On(EncryptionMode::Response),
            Ok(UpstreamEncryption::Fields) => EncryptionChoice::On(EncryptionMode::Fields),
            Err(_) => {
                return Err(InvalidArgument::new(
                    format!("{field_prefix}upstream_encryption"),
                    "is not a known UpstreamEncryption value",
                    "InvalidParameterValue",
                ));
            }
        };
        let source = match request.source {
            Some(Source::Image(image)) => {
                check_image(&image).map_err(|(description, code)| {
                    InvalidArgument::new(format!("{field_prefix}image"), description, code)
                })?;
                ImageSource::Image(image)
            }
            Some(Source::ImageUrl(url)) => {
                check_url(&url, rules).map_err(|description| {
                    InvalidArgument::new(
                        format!("{field_prefix}image_url"),
                        description,
                        "InvalidParameterValue",
                    )
                })?;
                ImageSource::Url(url)
            }
            None => {
                return Err(InvalidArgument::new(
                    format!("{field_prefix}image"),
                    "one of image or image_url is required",
                    "MissingParameter",
                ));
            }
        };
        Ok(Self {
            source,
            config: request.checks.map(config_from_checks).unwrap_or_default(),
            encryption,
        })
    }

    /// Builds the upstream body asking Tencent to encrypt its answer in
    /// `mode` (when given), consuming the image; returns the body and the
    /// request's session key.
    ///
    /// # Errors
    /// The session key cannot be made or wrapped.
    pub(crate) fn into_encrypted_body(
        self,
        mode: Option<EncryptionMode>,
        settings: &EncryptionSettings,
    ) -> Result<(RequestBody, Option<RequestEncryption>), CryptoError> {
        let mut params = self.params();
        let encryption = mode
            .map(|mode| RequestEncryption::start(mode, settings, &mut params))
            .transpose()?;
        Ok((self.source.into_body(params), encryption))
    }

    fn params(&self) -> CheckIdCardInformationRequest {
        CheckIdCardInformationRequest {
            config: self.config.any().then(|| self.config.to_json_string()),
            ..Default::default()
        }
    }
}

impl ImageSource {
    /// The request body with `params` and this image.
    fn into_body(self, mut params: CheckIdCardInformationRequest) -> RequestBody {
        match self {
            ImageSource::Image(image) => RequestBody::with_image(&image, &params),
            ImageSource::Url(url) => {
                params.image_url = Some(url);
                RequestBody::new(&params)
            }
        }
    }
}

fn config_from_checks(checks: Checks) -> Config {
    Config {
        copy_warn: checks.copy_warn,
        border_check_warn: checks.border_check_warn,
        reshoot_warn: checks.reshoot_warn,
        detect_ps_warn: checks.detect_ps_warn,
        temp_id_warn: checks.temp_id_warn,
        quality: checks.quality,
    }
}

/// Checks `image_url`. The raw text comes first, because the URL parser
/// (WHATWG) forgives what it should not pass on: it drops tabs and newlines,
/// trims spaces and controls, and reads `http:///a.jpg` or `http:a.jpg` as
/// the host `a.jpg`. Then the parsed host must not be internal, unless
/// `rules` allow it: Tencent fetches the URL with our account.
fn check_url(url: &str, rules: InputRules) -> Result<(), String> {
    if url.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let chars = url.chars().count();
    if chars > MAX_IMAGE_URL_LEN {
        return Err(format!(
            "is {chars} characters; the limit is {MAX_IMAGE_URL_LEN}"
        ));
    }
    if url.chars().any(char::is_control) {
        return Err("must not contain control characters".to_owned());
    }
    if url.chars().any(char::is_whitespace) {
        return Err("must not contain whitespace".to_owned());
    }
    let parsed = Url::parse(url).map_err(|_| "is not a valid absolute URL".to_owned())?;
    let scheme = parsed.scheme();
    if !matches!(scheme, "http" | "https") {
        return Err("must use http or https".to_owned());
    }
    // The parser found the scheme at the start (no leading junk is left),
    // so the authority must follow it as written: `://` and a host.
    let after_scheme = &url.as_bytes()[scheme.len()..];
    let authority_follows = after_scheme.starts_with(b"://")
        && after_scheme
            .get(3)
            .is_some_and(|c| !matches!(c, b'/' | b'\\' | b'?' | b'#'));
    if !authority_follows {
        return Err("must name a host right after http:// or https://".to_owned());
    }
    let host = parsed
        .host_str()
        .filter(|host| !host.is_empty())
        .ok_or_else(|| "must name a host".to_owned())?;
    if !rules.allow_private_image_urls
        && let Some(kind) = internal_host(host)
    {
        return Err(format!(
            "names {kind}; the gateway does not ask Tencent to fetch internal addresses"
        ));
    }
    Ok(())
}

/// What kind of internal address `host` (as the URL parser normalised it:
/// IPv4 dotted, IPv6 in brackets, names lower-case) is, if it is one.
fn internal_host(host: &str) -> Option<&'static str> {
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return internal_ipv4(ip);
    }
    if let Some(ip) = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<Ipv6Addr>().ok())
    {
        return internal_ipv6(ip);
    }
    let name = host.trim_end_matches('.');
    (name == "localhost" || name.ends_with(".localhost")).then_some("localhost")
}

fn internal_ipv4(ip: Ipv4Addr) -> Option<&'static str> {
    let [first, second, ..] = ip.octets();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_private() {
        Some("a private address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if first == 0 {
        // 0.0.0.0/8: "this network"; 0.0.0.0 itself reaches the local host.
        Some("an unspecified address")
    } else if first == 100 && (64..128).contains(&second) {
        Some("a shared (CGNAT) address")
    } else {
        None
    }
}

fn internal_ipv6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() {
        Some("an unspecified address")
    } else if segments[0] & 0xFFC0 == 0xFE80 {
        Some("a link-local address")
    } else if segments[0] & 0xFFC0 == 0xFEC0 {
        Some("a site-local address")
    } else if segments[0] & 0xFE00 == 0xFC00 {
        Some("a unique-local address")
    } else {
        embedded_ipv4(ip).and_then(internal_ipv4)
    }
}

/// The IPv4 address an IPv6 one carries: IPv4-mapped (`::ffff:0:0/96`),
/// IPv4-compatible (`::/96`) or NAT64 (`64:ff9b::/96`).
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let octets = ip.octets();
    let low = Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    match ip.segments()[..6] {
        [0, 0, 0, 0, 0, 0xFFFF] | [0, 0, 0, 0, 0, 0] | [0x64, 0xFF9B, 0, 0, 0, 0] => Some(low),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tencent::image::samples::{CARD, JPEG, PNG};
    use crate::tencent::image::{ImageFormat, MAX_IMAGE_BASE64_LEN};

    const STRICT: InputRules = InputRules {
        allow_private_image_urls: false,
    };
    const LENIENT: InputRules = InputRules {
        allow_private_image_urls: true,
    };

    fn image_request(bytes: &[u8]) -> VerifyIdCardRequest {
        VerifyIdCardRequest {
            source: Some(Source::Image(Bytes::copy_from_slice(bytes))),
            ..Default::default()
        }
    }

    fn url_request(url: &str) -> VerifyIdCardRequest {
        VerifyIdCardRequest {
            source: Some(Source::ImageUrl(url.to_owned())),
            ..Default::default()
        }
    }

    fn violation(request: VerifyIdCardRequest) -> Violation {
        Verification::parse(request, "", STRICT)
            .unwrap_err()
            .violations
            .remove(0)
    }

    fn url_violation(url: &str) -> Violation {
        violation(url_request(url))
    }

    #[test]
    fn real_png_and_jpeg_are_accepted() {
        for bytes in [PNG, JPEG, CARD] {
            assert!(Verification::parse(image_request(bytes), "", STRICT).is_ok());
        }
    }

    #[test]
    fn other_formats_and_fake_headers_are_refused_by_name() {
        let gif = b"GIF89a\x01\x00\x01\x00";
        let webp = b"RIFF\x00\x00\x00\x00WEBPVP8 ";
        let bmp = b"BM\x00\x00\x00\x00";
        for (bytes, words) in [
            (&gif[..], "Gif"),
            (&webp[..], "Webp"),
            (&bmp[..], "Bmp"),
            (b"random bytes", "PNG or JPEG"),
            (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "runs past the end"),
            (&[0xFF, 0xD8, 0xFF][..], "without an EOI marker"),
            (&PNG[..PNG.len() - 12], "without an IEND chunk"),
            (&PNG[..PNG.len() - 1], "truncated"),
        ] {
            let v = violation(image_request(bytes));
            assert_eq!(v.field, "image");
            assert_eq!(v.code, "FailedOperation.ImageDecodeFailed");
            assert!(v.description.contains(words), "{}", v.description);
        }
    }

    #[test]
    fn empty_and_oversized_images_are_refused() {
        let v = violation(image_request(b""));
        assert_eq!(v.code, "FailedOperation.EmptyImageError");

        let mut big = PNG.to_vec();
        big.resize(MAX_IMAGE_BYTES + 1, 0);
        let v = violation(image_request(&big));
        assert_eq!(v.code, "FailedOperation.ImageSizeTooLarge");
        assert!(v.description.contains("bytes"), "{}", v.description);

        big.truncate(MAX_IMAGE_BYTES);
        assert!(Verification::parse(image_request(&big), "", STRICT).is_ok());
    }

    #[test]
    fn the_largest_image_fits_tencents_base64_cap() {
        assert!(base64::encoded_len(MAX_IMAGE_BYTES, true).unwrap() <= MAX_IMAGE_BASE64_LEN);
        assert!(base64::encoded_len(MAX_IMAGE_BYTES + 1, true).unwrap() > MAX_IMAGE_BASE64_LEN);
    }

    #[test]
    fn missing_source_is_refused() {
        let v = violation(VerifyIdCardRequest::default());
        assert_eq!(v.code, "MissingParameter");
    }

    #[test]
    fn urls_must_be_http_with_a_host_and_short() {
        assert!(
            Verification::parse(url_request("https://cos.example.com/a.jpg"), "", STRICT).is_ok()
        );
        let long = format!("https://example.com/{}", "a".repeat(MAX_IMAGE_URL_LEN));
        for url in [
            "",
            "ftp://example.com/a.jpg",
            "not a url",
            "file:///etc/passwd",
            &long,
        ] {
            let v = url_violation(url);
            assert_eq!(v.field, "image_url", "{url}");
            assert_eq!(v.code, "InvalidParameterValue", "{url}");
            assert!(!v.description.contains("passwd"));
        }
    }

    #[test]
    fn the_url_length_counts_characters() {
        let prefix = "https://example.com/";
        let fill = |n: usize| format!("{prefix}{}", "证".repeat(n - prefix.len()));
        let at_limit = fill(MAX_IMAGE_URL_LEN);
        assert!(at_limit.len() > 3 * (MAX_IMAGE_URL_LEN - prefix.len()));
        assert!(Verification::parse(url_request(&at_limit), "", STRICT).is_ok());
        let v = url_violation(&fill(MAX_IMAGE_URL_LEN + 1));
        assert_eq!(v.description, "is 2049 characters; the limit is 2048");
    }

    #[test]
    fn urls_the_parser_would_repair_are_refused_as_written() {
        for (url, words) in [
            ("http:///a.jpg", "right after"),
            ("https:///example.com/a.jpg", "right after"),
            ("http:/example.com/a.jpg", "right after"),
            ("http:example.com/a.jpg", "right after"),
            ("http:\\\\example.com\\a.jpg", "right after"),
            ("http://\\example.com/a.jpg", "right after"),
            // These the parser refuses itself.
            ("http://?a.jpg", "not a valid"),
            ("http://#a.jpg", "not a valid"),
            ("http://", "not a valid"),
            ("https://exa mple.com/a.jpg", "whitespace"),
            (" https://example.com/a.jpg", "whitespace"),
            ("https://example.com/a.jpg\u{3000}", "whitespace"),
            ("https://example.com/a\r\n.jpg", "control characters"),
            ("https://example.com/a\t.jpg", "control characters"),
            ("https://exam\0ple.com/a.jpg", "control characters"),
            ("https://example.com/\u{7f}", "control characters"),
            ("https://example.com/\u{85}", "control characters"),
        ] {
            let v = url_violation(url);
            assert_eq!(v.field, "image_url", "{url:?}");
            assert!(v.description.contains(words), "{url:?}: {}", v.description);
        }
        for fine in [
            "HTTPS://Example.COM/a.jpg",
            "https://user@example.com:8443/a.jpg?x=1#FACEID-SIM[sim=50]",
            "https://example.com/FACEID-SIM[warn=-9102|-9103]",
            "https://证件.example/a.jpg",
        ] {
            assert!(
                Verification::parse(url_request(fine), "", STRICT).is_ok(),
                "{fine}"
            );
        }
    }

    #[test]
    fn internal_hosts_are_refused_in_any_notation_unless_allowed() {
        for (url, kind) in [
            ("http://127.0.0.1/a.jpg", "loopback"),
            ("http://127.8.9.10:8080/a.jpg", "loopback"),
            ("http://2130706433/", "loopback"),
            ("http://0x7f.1/", "loopback"),
            ("http://0177.0.0.1/", "loopback"),
            ("http://127.1/", "loopback"),
            ("http://%31%32%37.0.0.1/", "loopback"),
            ("http://[::1]/", "loopback"),
            ("http://[::ffff:127.0.0.1]/", "loopback"),
            ("http://[::ffff:7f00:1]/", "loopback"),
            ("http://[0:0:0:0:0:ffff:10.1.2.3]/", "private"),
            ("http://[64:ff9b::192.168.0.1]/", "private"),
            ("http://[::10.0.0.1]/", "private"),
            ("http://10.0.0.1/", "private"),
            ("http://172.16.0.1/", "private"),
            ("http://172.31.255.255/", "private"),
            ("http://192.168.1.1/", "private"),
            ("http://169.254.169.254/latest/meta-data/", "link-local"),
            ("http://[fe80::1]/", "link-local"),
            ("http://0.0.0.0/", "unspecified"),
            ("http://0/", "unspecified"),
            ("http://0.1.2.3/", "unspecified"),
            ("http://[::]/", "unspecified"),
            ("http://100.64.0.1/", "CGNAT"),
            ("http://100.127.255.255/", "CGNAT"),
            ("http://[fc00::1]/", "unique-local"),
            ("http://[fd12:3456::1]/", "unique-local"),
            ("http://[fec0::1]/", "site-local"),
            ("http://localhost/a.jpg", "localhost"),
            ("http://LOCALHOST:9000/", "localhost"),
            ("http://localhost./", "localhost"),
            ("http://cards.localhost/", "localhost"),
        ] {
            let v = url_violation(url);
            assert_eq!(v.field, "image_url", "{url}");
            assert!(v.description.contains(kind), "{url}: {}", v.description);
            assert!(
                Verification::parse(url_request(url), "", LENIENT).is_ok(),
                "{url} with internal addresses allowed"
            );
        }
        for public in [
            "http://8.8.8.8/a.jpg",
            "http://172.32.0.1/",
            "http://100.128.0.1/",
            "http://100.63.255.255/",
            "http://[2001:db8::1]/",
            "http://[::ffff:8.8.8.8]/",
            "http://localhost.example.com/",
            "http://notlocalhost/",
        ] {
            assert!(
                Verification::parse(url_request(public), "", STRICT).is_ok(),
                "{public}"
            );
        }
        // The rules never let a URL without a host through.
        assert!(Verification::parse(url_request("http:///a.jpg"), "", LENIENT).is_err());
    }

    #[test]
    fn unknown_encryption_values_are_refused() {
        for value in [4, 99, -1, i32::MAX] {
            let mut request = image_request(PNG);
            request.upstream_encryption = value;
            let error = Verification::parse(request, "request.", STRICT).unwrap_err();
            let v = &error.violations[0];
            assert_eq!(v.field, "request.upstream_encryption");
            assert_eq!(v.code, "InvalidParameterValue");
            assert!(!v.description.contains(&value.to_string()));
        }
        for known in [0, 1, 2, 3] {
            let mut request = image_request(PNG);
            request.upstream_encryption = known;
            assert!(Verification::parse(request, "", STRICT).is_ok(), "{known}");
        }
    }

    #[test]
    fn batch_items_get_prefixed_field_paths() {
        let error = Verification::parse(image_request(b""), "request.", STRICT).unwrap_err();
        assert_eq!(error.violations[0].field, "request.image");
    }

    #[test]
    fn checks_become_the_config_string() {
        let mut request = url_request("https://example.com/a.jpg");
        request.checks = Some(Checks {
            copy_warn: true,
            temp_id_warn: true,
            ..Default::default()
        });
        let settings = EncryptionSettings {
            algorithm: crate::tencent::crypto::Algorithm::default(),
            public_keys: std::sync::Arc::new(crate::tencent::crypto::PublicKeys::tencent_defaults()),
        };
        let verification = Verification::parse(request, "", STRICT).unwrap();
        let (body, encryption) = verification.into_encrypted_body(None, &settings).unwrap();
        assert!(encryption.is_none());
        assert_eq!(
            std::str::from_utf8(&body.bytes()).unwrap(),
            r#"{"ImageUrl":"https://example.com/a.jpg","Config":"{\"CopyWarn\":true,\"TempIdWarn\":true}"}"#
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn whole_image() -> impl Strategy<Value = &'static [u8]> {
            prop_oneof![Just(PNG), Just(JPEG), Just(CARD)]
        }

        proptest! {
            /// Signatures followed by anything that is not a real image
            /// structure (fake headers, random data) are refused.
            #[test]
            fn fake_headers_and_random_bytes_are_refused(
                head in prop_oneof![
                    Just(b"\x89PNG\r\n\x1a\n".to_vec()),
                    Just(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec()),
                    Just(vec![0xFF, 0xD8, 0xFF]),
                    Just(b"GIF89a".to_vec()),
                    Just(Vec::new()),
                ],
                tail in proptest::collection::vec(any::<u8>(), 0..256),
            ) {
                let mut bytes = head;
                bytes.extend(tail);
                let error = Verification::parse(image_request(&bytes), "", STRICT).unwrap_err();
                prop_assert_eq!(error.violations[0].field.as_str(), "image");
            }

            /// A whole image stays whole whatever follows its end.
            #[test]
            fn whole_images_with_any_trailing_bytes_are_accepted(
                image in whole_image(),
                tail in proptest::collection::vec(any::<u8>(), 0..256),
            ) {
                let mut bytes = image.to_vec();
                bytes.extend(tail);
                prop_assert!(Verification::parse(image_request(&bytes), "", STRICT).is_ok());
            }

            /// Any image cut before its end marker is refused.
            #[test]
            fn cut_images_are_refused(image in whole_image(), cut in any::<prop::sample::Index>()) {
                let cut = cut.index(image.len());
                let error = Verification::parse(image_request(&image[..cut]), "", STRICT).unwrap_err();
                prop_assert_eq!(error.violations[0].field.as_str(), "image");
            }

            /// Damaged images never panic; what is accepted is a PNG or
            /// JPEG, and what is refused is refused as an image.
            #[test]
            fn damaged_images_never_panic_and_classify(
                image in whole_image(),
                damage in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            ) {
                let mut bytes = image.to_vec();
                for (at, byte) in damage {
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                }
                match Verification::parse(image_request(&bytes), "", STRICT) {
                    Ok(_) => prop_assert!(matches!(
                        ImageFormat::sniff(&bytes),
                        ImageFormat::Png | ImageFormat::Jpeg
                    )),
                    Err(error) => {
                        prop_assert_eq!(error.violations[0].field.as_str(), "image");
                        prop_assert_eq!(error.violations[0].code, "FailedOperation.ImageDecodeFailed");
                    }
                }
            }

            #[test]
            fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                if let Err(error) = Verification::parse(image_request(&bytes), "", STRICT) {
                    prop_assert_eq!(error.violations[0].field.as_str(), "image");
                }
            }

            #[test]
            fn any_url_text_never_panics_and_never_echoes(url in ".{0,300}") {
                for rules in [STRICT, LENIENT] {
                    if let Err(error) = Verification::parse(url_request(&url), "", rules) {
                        prop_assert_eq!(error.violations[0].field.as_str(), "image_url");
                        if url.len() > 3 {
                            prop_assert!(!error.to_string().contains(&url));
                        }
                    }
                }
            }

            #[test]
            fn urls_with_any_host_never_panic(
                host in "[a-zA-Z0-9.:\\[\\]%@_-]{0,40}",
                scheme in prop_oneof![Just("http://"), Just("https://"), Just("http:"), Just("http:/")],
            ) {
                let url = format!("{scheme}{host}/a.jpg");
                if let Err(error) = Verification::parse(url_request(&url), "", STRICT) {
                    prop_assert_eq!(error.violations[0].field.as_str(), "image_url");
                }
            }
        }
    }
}
