//! What Tencent accepts as an image for this action: PNG or JPEG, within the
//! size cap of its base64 form. Shared by the gateway's validation (so bad
//! input is refused before a billed call) and the simulator (which refuses
//! what Tencent refuses).

/// Tencent's cap on `ImageBase64`: 7 MiB of base64 text.
pub(crate) const MAX_IMAGE_BASE64_LEN: usize = 7 * 1024 * 1024;
/// The largest raw image whose base64 form fits [`MAX_IMAGE_BASE64_LEN`].
pub const MAX_IMAGE_BYTES: usize = MAX_IMAGE_BASE64_LEN / 4 * 3;

/// The formats an image can be recognised as by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImageFormat {
    /// PNG: accepted.
    Png,
    /// JPEG: accepted.
    Jpeg,
    /// GIF: refused by Tencent.
    Gif,
    /// WebP: not supported by Tencent.
    Webp,
    /// BMP: not supported by Tencent.
    Bmp,
    /// Anything else.
    Unknown,
}

impl ImageFormat {
    /// Recognises the format from the magic bytes.
    pub(crate) fn sniff(bytes: &[u8]) -> Self {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Self::Png
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Self::Jpeg
        } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
            Self::Gif
        } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
            Self::Webp
        } else if bytes.starts_with(b"BM") {
            Self::Bmp
        } else {
            Self::Unknown
        }
    }

    /// Whether Tencent accepts the format.
    pub(crate) fn is_supported(self) -> bool {
        matches!(self, Self::Png | Self::Jpeg)
    }
}

/// Checks raw image bytes; on failure returns the description and the
/// equivalent Tencent code.
pub(crate) fn check_image(image: &[u8]) -> Result<ImageFormat, (String, &'static str)> {
    if image.is_empty() {
        return Err((
            "must not be empty".to_owned(),
            "FailedOperation.EmptyImageError",
        ));
    }
    if image.len() > MAX_IMAGE_BYTES {
        return Err((
            format!(
                "is {} bytes; the limit is {MAX_IMAGE_BYTES} bytes (7 MiB once base64-encoded)",
                image.len()
            ),
            "FailedOperation.ImageSizeTooLarge",
        ));
    }
    match ImageFormat::sniff(image) {
        format if format.is_supported() => Ok(format),
        ImageFormat::Unknown => Err((
            "must be a PNG or JPEG image".to_owned(),
            "FailedOperation.ImageDecodeFailed",
        )),
        other => Err((
            format!("{other:?} images are not supported; send PNG or JPEG"),
            "FailedOperation.ImageDecodeFailed",
        )),
    }
}
