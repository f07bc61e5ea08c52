//! What Tencent accepts as an image for this action: a PNG or JPEG whose
//! structure a decoder can read, within the size cap of its base64 form.
//! Shared by the gateway's validation (so bad input is refused before a
//! billed call) and the simulator (which refuses what Tencent refuses).
//!
//! The structure check is one pass over the headers (PNG chunks, JPEG
//! markers) and never decodes pixels: it catches fakes (a bare signature),
//! truncated uploads and absurd dimensions. Bytes after the end of the image
//! (PNG `IEND`, JPEG `EOI`) are allowed, as decoders ignore them (the
//! simulator's directive blocks travel there).

/// Tencent's cap on `ImageBase64`: 7 MiB of base64 text.
pub(crate) const MAX_IMAGE_BASE64_LEN: usize = 7 * 1024 * 1024;
/// The largest raw image whose base64 form fits [`MAX_IMAGE_BASE64_LEN`].
pub const MAX_IMAGE_BYTES: usize = MAX_IMAGE_BASE64_LEN / 4 * 3;
/// The largest width or height accepted, in pixels.
pub const MAX_IMAGE_DIMENSION: u32 = 16_384;

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
/// The largest chunk length the PNG format allows (2^31 - 1).
const PNG_MAX_CHUNK_LEN: usize = 0x7FFF_FFFF;
/// A chunk's length and type fields.
const PNG_CHUNK_HEAD: usize = 8;
/// A chunk's CRC field.
const PNG_CHUNK_CRC: usize = 4;
/// The data length of `IHDR`.
const PNG_IHDR_LEN: usize = 13;

/// JPEG markers the check needs by name.
const JPEG_EOI: u8 = 0xD9;
const JPEG_SOS: u8 = 0xDA;

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
        if bytes.starts_with(PNG_SIGNATURE) {
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
    check_structure(image).map_err(|description| (description, "FailedOperation.ImageDecodeFailed"))
}

/// Checks that `image` is a PNG or JPEG a decoder can read: the format by
/// its first bytes, then its headers. On failure returns what is wrong, in
/// words that never quote the bytes.
pub(crate) fn check_structure(image: &[u8]) -> Result<ImageFormat, String> {
    match ImageFormat::sniff(image) {
        ImageFormat::Png => check_png(image).map(|()| ImageFormat::Png),
        ImageFormat::Jpeg => check_jpeg(image).map(|()| ImageFormat::Jpeg),
        ImageFormat::Unknown => Err("must be a PNG or JPEG image".to_owned()),
        other => Err(format!(
            "{other:?} images are not supported; send PNG or JPEG"
        )),
    }
}

/// Refuses a width or height of zero or above [`MAX_IMAGE_DIMENSION`].
fn check_dimensions(what: &str, width: u32, height: u32) -> Result<(), String> {
    for (name, value) in [("width", width), ("height", height)] {
        if value == 0 {
            return Err(format!("is a {what} gives a {name} of 0"));
        }
        if value > MAX_IMAGE_DIMENSION {
            return Err(format!(
                "is a {what} gives a {name} of {value} pixels; the limit is {MAX_IMAGE_DIMENSION}"
            ));
        }
    }
    Ok(())
}

/// Walks the chunks of a PNG (its signature already seen): `IHDR` first
/// with a sane size, every chunk inside the buffer, image data, then `IEND`.
/// CRCs are not checked: a decoder decides what a bad one means.
fn check_png(image: &[u8]) -> Result<(), String> {
    let mut at = PNG_SIGNATURE.len();
    let mut first = true;
    let mut has_data = false;
    loop {
        let Some(head) = image.get(at..at + PNG_CHUNK_HEAD) else {
            return Err(if first {
                "is a PNG signature without an IHDR header (truncated?)"
            } else {
                "is a PNG without an IEND chunk (truncated?)"
            }
            .to_owned());
        };
        let length = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let kind = &head[4..8];
        if !kind.iter().all(u8::is_ascii_alphabetic) {
            return Err("is a PNG with a malformed chunk type".to_owned());
        }
        if first && (kind != b"IHDR" || length != PNG_IHDR_LEN) {
            return Err("is a PNG whose first chunk is not a 13-byte IHDR header".to_owned());
        }
        if length > PNG_MAX_CHUNK_LEN {
            return Err("is a PNG with a chunk length beyond the format's limit".to_owned());
        }
        let data = at + PNG_CHUNK_HEAD;
        let end = data + length + PNG_CHUNK_CRC;
        if end > image.len() {
            return Err(
                "is a PNG with a chunk that runs past the end of the data (truncated?)".to_owned(),
            );
        }
        match kind {
            b"IHDR" if first => {
                let field = |i: usize| {
                    u32::from_be_bytes([
                        image[data + i],
                        image[data + i + 1],
                        image[data + i + 2],
                        image[data + i + 3],
                    ])
                };
                check_dimensions("PNG whose IHDR header", field(0), field(4))?;
            }
            b"IDAT" => has_data = true,
            b"IEND" if has_data => return Ok(()),
            b"IEND" => return Err("is a PNG without image data (no IDAT chunk)".to_owned()),
            _ => {}
        }
        first = false;
        at = end;
    }
}

/// Whether a JPEG marker is a frame header: SOF0 to SOF15, less the three
/// codes in that range that are something else (DHT, JPG, DAC).
fn is_frame_header(marker: u8) -> bool {
    matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC)
}

/// Walks the markers of a JPEG (its start of image already seen): every
/// segment inside the buffer, a frame header with a sane size before the
/// first scan, and an end-of-image marker after the scans.
fn check_jpeg(image: &[u8]) -> Result<(), String> {
    const NO_END: &str = "is a JPEG without an EOI marker (truncated?)";
    let mut at = 2;
    let mut has_frame = false;
    loop {
        match image.get(at) {
            Some(0xFF) => {}
            Some(_) => return Err("is a JPEG with data where a marker should be".to_owned()),
            None => return Err(NO_END.to_owned()),
        }
        // Any number of 0xFF fill bytes may precede a marker code.
        while image.get(at) == Some(&0xFF) {
            at += 1;
        }
        let Some(&marker) = image.get(at) else {
            return Err(NO_END.to_owned());
        };
        at += 1;
        match marker {
            JPEG_EOI => return Err("is a JPEG that ends before any scan".to_owned()),
            // TEM and restart markers stand alone, without a length.
            0x01 | 0xD0..=0xD7 => continue,
            0x00 | 0xD8 => return Err("is a JPEG with a misplaced marker".to_owned()),
            _ => {}
        }
        let Some(length) = image.get(at..at + 2) else {
            return Err(NO_END.to_owned());
        };
        let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
        if length < 2 {
            return Err("is a JPEG with a malformed segment length".to_owned());
        }
        let end = at + length;
        if end > image.len() {
            return Err(
                "is a JPEG with a segment that runs past the end of the data (truncated?)"
                    .to_owned(),
            );
        }
        let segment = &image[at + 2..end];
        at = end;
        if is_frame_header(marker) {
            // Precision (1), height (2), width (2), component count (1).
            if segment.len() < 6 {
                return Err("is a JPEG whose frame header is too short".to_owned());
            }
            let height = u16::from_be_bytes([segment[1], segment[2]]);
            let width = u16::from_be_bytes([segment[3], segment[4]]);
            check_dimensions(
                "JPEG whose frame header",
                u32::from(width),
                u32::from(height),
            )?;
            has_frame = true;
        } else if marker == JPEG_SOS {
            if !has_frame {
                return Err("is a JPEG with a scan before any frame header".to_owned());
            }
            match marker_after_scan(image, at) {
                Some((_, JPEG_EOI)) => return Ok(()),
                // Another table or scan (progressive JPEGs have several).
                Some((next, _)) => at = next,
                None => return Err(NO_END.to_owned()),
            }
        }
    }
}

/// Finds the marker that ends the entropy-coded data starting at `from`:
/// the first 0xFF that is neither a stuffed 0xFF 0x00 nor a restart marker.
/// Returns its position and code.
fn marker_after_scan(image: &[u8], mut from: usize) -> Option<(usize, u8)> {
    while let Some(offset) = memchr::memchr(0xFF, image.get(from..)?) {
        let at = from + offset;
        let mut code_at = at + 1;
        while image.get(code_at) == Some(&0xFF) {
            code_at += 1;
        }
        match *image.get(code_at)? {
            0x00 | 0xD0..=0xD7 => from = code_at + 1,
            code => return Some((at, code)),
        }
    }
    None
}

/// Real images for tests: the smallest PNG and JPEG (1×1, built byte by
/// byte by `tests/data/make_tiny_images.py` and checked with a decoder) and
/// the README's sample card.
#[cfg(test)]
pub(crate) mod samples {
    /// A 1×1 grayscale PNG.
    pub(crate) const PNG: &[u8] = include_bytes!("../../tests/data/images/pixel.png");
    /// A 1×1 grayscale baseline JPEG.
    pub(crate) const JPEG: &[u8] = include_bytes!("../../tests/data/images/pixel.jpg");
    /// The sample card of the README.
    pub(crate) const CARD: &[u8] = include_bytes!("../../examples/images/id-card.png");
}

#[cfg(test)]
mod tests {
    use super::samples::{CARD, JPEG, PNG};
    use super::*;

    fn defect(image: &[u8]) -> String {
        check_structure(image).expect_err("the image is refused")
    }

    /// `image` with the bytes at `range` replaced by `with`.
    fn patched(image: &[u8], at: usize, with: &[u8]) -> Vec<u8> {
        let mut image = image.to_vec();
        image[at..at + with.len()].copy_from_slice(with);
        image
    }

    /// The pixel JPEG with the segment of `marker` removed.
    fn jpeg_without(marker: u8) -> Vec<u8> {
        let start = JPEG
            .windows(2)
            .position(|w| w == [0xFF, marker])
            .expect("the marker is there");
        let length = usize::from(u16::from_be_bytes([JPEG[start + 2], JPEG[start + 3]]));
        [&JPEG[..start], &JPEG[start + 2 + length..]].concat()
    }

    /// Where the pixel JPEG's frame header (SOF0) starts.
    fn sof0() -> usize {
        JPEG.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap()
    }

    #[test]
    fn real_images_are_accepted_with_anything_after_their_end() {
        assert_eq!(check_structure(PNG), Ok(ImageFormat::Png));
        assert_eq!(check_structure(JPEG), Ok(ImageFormat::Jpeg));
        assert_eq!(check_structure(CARD), Ok(ImageFormat::Png));
        for image in [PNG, JPEG, CARD] {
            let mut with_directives = image.to_vec();
            with_directives.extend_from_slice(b"FACEID-SIM[error=InternalError]");
            assert!(check_structure(&with_directives).is_ok());
            let mut with_junk = image.to_vec();
            with_junk.extend_from_slice(&[0xFF; 100]);
            assert!(check_structure(&with_junk).is_ok());
        }
    }

    #[test]
    fn every_cut_short_image_is_refused() {
        for image in [PNG, JPEG, CARD] {
            for len in 0..image.len() {
                assert!(check_structure(&image[..len]).is_err(), "cut at {len}");
            }
        }
        assert_eq!(
            defect(&PNG[..PNG.len() - 12]),
            "is a PNG without an IEND chunk (truncated?)"
        );
        assert_eq!(
            defect(&JPEG[..JPEG.len() - 2]),
            "is a JPEG without an EOI marker (truncated?)"
        );
    }

    #[test]
    fn fake_pngs_say_what_is_wrong() {
        assert_eq!(
            defect(PNG_SIGNATURE),
            "is a PNG signature without an IHDR header (truncated?)"
        );
        assert_eq!(
            defect(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            "is a PNG with a chunk that runs past the end of the data (truncated?)"
        );
        // IHDR's width, then its height, at bytes 16 and 20.
        assert_eq!(
            defect(&patched(PNG, 16, &[0, 0, 0, 0])),
            "is a PNG whose IHDR header gives a width of 0"
        );
        assert_eq!(
            defect(&patched(PNG, 20, &[0, 0, 0, 0])),
            "is a PNG whose IHDR header gives a height of 0"
        );
        assert_eq!(
            defect(&patched(PNG, 16, &16_385u32.to_be_bytes())),
            "is a PNG whose IHDR header gives a width of 16385 pixels; the limit is 16384"
        );
        assert!(check_structure(&patched(PNG, 16, &16_384u32.to_be_bytes())).is_ok());
        assert_eq!(
            defect(&patched(PNG, 12, b"IDAT")),
            "is a PNG whose first chunk is not a 13-byte IHDR header"
        );
        assert_eq!(
            defect(&patched(PNG, 8, &12u32.to_be_bytes())),
            "is a PNG whose first chunk is not a 13-byte IHDR header"
        );
        // The IDAT chunk's type (after IHDR's 25 bytes) made unreadable, or
        // its length made huge.
        assert_eq!(
            defect(&patched(PNG, 37, b"ID\0T")),
            "is a PNG with a malformed chunk type"
        );
        assert_eq!(
            defect(&patched(PNG, 33, &0x7FFF_FFF0u32.to_be_bytes())),
            "is a PNG with a chunk that runs past the end of the data (truncated?)"
        );
        assert_eq!(
            defect(&patched(PNG, 33, &u32::MAX.to_be_bytes())),
            "is a PNG with a chunk length beyond the format's limit"
        );
        // Renamed to an ancillary chunk, the IDAT no longer counts as data.
        assert_eq!(
            defect(&patched(PNG, 37, b"iDAT")),
            "is a PNG without image data (no IDAT chunk)"
        );
    }

    #[test]
    fn fake_jpegs_say_what_is_wrong() {
        assert_eq!(
            defect(&[0xFF, 0xD8, 0xFF]),
            "is a JPEG without an EOI marker (truncated?)"
        );
        assert_eq!(
            defect(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F']),
            "is a JPEG with a segment that runs past the end of the data (truncated?)"
        );
        assert_eq!(
            defect(&[0xFF, 0xD8, 0xFF, 0xD9]),
            "is a JPEG that ends before any scan"
        );
        assert_eq!(
            defect(&jpeg_without(0xC0)),
            "is a JPEG with a scan before any frame header"
        );
        let sos = JPEG.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        let tables_only = [&JPEG[..sos], &JPEG[JPEG.len() - 2..]].concat();
        assert_eq!(defect(&tables_only), "is a JPEG that ends before any scan");
        // SOF0: marker (2), length (2), precision (1), height (2), width (2).
        let height = sof0() + 5;
        assert_eq!(
            defect(&patched(JPEG, height, &[0, 0])),
            "is a JPEG whose frame header gives a height of 0"
        );
        assert_eq!(
            defect(&patched(JPEG, height + 2, &[0, 0])),
            "is a JPEG whose frame header gives a width of 0"
        );
        assert_eq!(
            defect(&patched(JPEG, height + 2, &20_000u16.to_be_bytes())),
            "is a JPEG whose frame header gives a width of 20000 pixels; the limit is 16384"
        );
        assert_eq!(
            defect(&patched(JPEG, sof0() + 2, &[0, 1])),
            "is a JPEG with a malformed segment length"
        );
        assert_eq!(
            defect(&patched(JPEG, sof0() + 2, &[0, 5])),
            "is a JPEG whose frame header is too short"
        );
        assert_eq!(
            defect(&patched(JPEG, sof0() + 2, &[0x7F, 0xFF])),
            "is a JPEG with a segment that runs past the end of the data (truncated?)"
        );
        assert_eq!(
            defect(&patched(JPEG, sof0(), &[0x00])),
            "is a JPEG with data where a marker should be"
        );
        assert_eq!(
            defect(&patched(JPEG, 3, &[0xD8])),
            "is a JPEG with a misplaced marker"
        );
    }

    #[test]
    fn dht_jpg_and_dac_are_not_frame_headers_but_other_sofs_are() {
        for not_a_frame in [0xC4, 0xC8, 0xCC] {
            let image = patched(JPEG, sof0() + 1, &[not_a_frame]);
            assert_eq!(
                defect(&image),
                "is a JPEG with a scan before any frame header",
                "{not_a_frame:#x}"
            );
        }
        for frame in (0xC0..=0xCF).filter(|m| ![0xC4, 0xC8, 0xCC].contains(m)) {
            let image = patched(JPEG, sof0() + 1, &[frame]);
            assert!(check_structure(&image).is_ok(), "{frame:#x}");
        }
    }

    #[test]
    fn scans_may_hold_stuffed_bytes_restarts_and_further_tables() {
        let eoi = JPEG.len() - 2;
        let scan_end = |middle: &[u8]| [&JPEG[..eoi], middle, &JPEG[eoi..]].concat();
        // A stuffed 0xFF 0x00, a restart marker, fill bytes.
        assert!(check_structure(&scan_end(&[0xFF, 0x00, 0x12, 0xFF, 0xD3, 0x34, 0xFF])).is_ok());
        // A second scan after a table segment, as progressive JPEGs have.
        let dht = &JPEG[JPEG.windows(2).position(|w| w == [0xFF, 0xC4]).unwrap()..][..22];
        let sos = &JPEG[JPEG.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap()..eoi];
        assert!(check_structure(&scan_end(&[dht, sos].concat())).is_ok());
        // A scan whose data runs to the end without EOI.
        let unfinished = [&JPEG[..eoi], &[0xFF, 0x00, 0x12][..]].concat();
        assert_eq!(
            defect(&unfinished),
            "is a JPEG without an EOI marker (truncated?)"
        );
    }

    #[test]
    fn other_formats_are_refused_by_name() {
        assert_eq!(
            defect(b"GIF89a\x01\x00\x01\x00"),
            "Gif images are not supported; send PNG or JPEG"
        );
        assert_eq!(defect(b"random"), "must be a PNG or JPEG image");
    }
}
