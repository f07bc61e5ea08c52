//! Directives that make the simulator produce a chosen outcome, read from the
//! image itself so any client (the gateway, an official SDK, grpcurl) can
//! trigger them without side channels.
//!
//! A directive block is the ASCII text `FACEID-SIM[key=value,key=value]`
//! anywhere in the decoded image bytes (append it to any PNG or JPEG; decoders
//! ignore trailing bytes) or anywhere in `ImageUrl`. Keys:
//!
//! | key | value | effect |
//! | --- | --- | --- |
//! | `error` | a Tencent code | answer `{"Error":{"Code":…}}` |
//! | `result` | a Tencent code | answer with `Result` = the code |
//! | `sim` | 0–100 | the similarity of a `Success` (or of `result`) |
//! | `warn` | codes joined by `\|` | fire these warnings when `Config` enables them (unknown codes always fire) |
//! | `quality` | 0–100 | the `Quality` score when `Config.Quality` is on |
//! | `delay` | milliseconds (≤ 60000) | wait before answering |
//! | `http` | 400–599 | answer this HTTP status with a text body |
//! | `fault` | `reset`, `malformed`, `html` | close the connection unanswered; send broken JSON; send an HTML page |
//! | `key` + `fail-first` | a name, a count | apply `error`/`http`/`fault` only to the first N requests carrying this key, then answer normally |
//! | `portrait` | `none` | answer without a portrait |
//! | `crypto` | `tamper`, `omit` | with encryption asked for: corrupt the ciphertext; leave `EncryptedBody` out |

use std::time::Duration;

/// The marker that opens a directive block.
pub(crate) const MARKER: &[u8] = b"FACEID-SIM[";
/// The longest directive block read.
const MAX_BLOCK_LEN: usize = 512;
/// The longest `delay` honoured.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// A transport-level fault to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Close the connection without answering.
    Reset,
    /// Answer HTTP 200 with a body that is not JSON.
    Malformed,
    /// Answer HTTP 200 with an HTML page, as a misrouted proxy would.
    Html,
}

/// The parsed directives of one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Directives {
    /// Answer with this code in the `Error` envelope.
    pub(crate) error: Option<String>,
    /// Answer with this code in `Result`.
    pub(crate) result: Option<String>,
    /// The similarity to report.
    pub(crate) sim: Option<f64>,
    /// Warning codes to fire.
    pub(crate) warn: Vec<String>,
    /// The quality score to report.
    pub(crate) quality: Option<f64>,
    /// Wait this long before answering.
    pub(crate) delay: Option<Duration>,
    /// Answer with this HTTP status.
    pub(crate) http: Option<u16>,
    /// Inject this fault.
    pub(crate) fault: Option<Fault>,
    /// The counter name for `fail_first`.
    pub(crate) key: Option<String>,
    /// Apply the failure directives only to the first N requests with `key`.
    pub(crate) fail_first: Option<u32>,
    /// Leave the portrait out.
    pub(crate) no_portrait: bool,
    /// Corrupt the encrypted answer.
    pub(crate) crypto_tamper: bool,
    /// Leave `EncryptedBody` out of an encrypted answer.
    pub(crate) crypto_omit: bool,
}

impl Directives {
    /// Drops the failure directives (once `fail-first` is used up).
    pub(crate) fn without_failures(mut self) -> Self {
        self.error = None;
        self.http = None;
        self.fault = None;
        self
    }
}

/// Finds and parses the directive block in `haystack`.
///
/// Returns `Ok(None)` when there is no block.
///
/// # Errors
/// A description of the first bad directive (for the simulator's
/// `InvalidParameterValue` answer).
pub(crate) fn find(haystack: &[u8]) -> Result<Option<Directives>, String> {
    let Some(start) = memchr::memmem::find(haystack, MARKER) else {
        return Ok(None);
    };
    let body_start = start + MARKER.len();
    let window = &haystack[body_start..haystack.len().min(body_start + MAX_BLOCK_LEN)];
    let end = memchr::memchr(b']', window).ok_or("directive block is not closed with ]")?;
    let text = std::str::from_utf8(&window[..end]).map_err(|_| "directive block is not ASCII")?;
    parse(text).map(Some)
}

/// Parses the inside of a directive block (`key=value,key=value`).
///
/// # Errors
/// A description of the first bad directive.
pub(crate) fn parse(text: &str) -> Result<Directives, String> {
    let mut directives = Directives::default();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| format!("directive {item:?} is not key=value"))?;
        let bad = || format!("bad value for directive {key}");
        match key {
            "error" => directives.error = Some(code(value).ok_or_else(bad)?),
            "result" => directives.result = Some(code(value).ok_or_else(bad)?),
            "sim" => directives.sim = Some(percent(value).ok_or_else(bad)?),
            "quality" => directives.quality = Some(percent(value).ok_or_else(bad)?),
            "warn" => {
                directives.warn = value
                    .split('|')
                    .map(|w| w.trim().to_owned())
                    .filter(|w| !w.is_empty())
                    .collect();
                if directives.warn.is_empty() {
                    return Err(bad());
                }
            }
            "delay" => {
                let millis: u64 = value.parse().map_err(|_| bad())?;
                directives.delay = Some(Duration::from_millis(millis).min(MAX_DELAY));
            }
            "http" => {
                let status: u16 = value.parse().map_err(|_| bad())?;
                if !(400..=599).contains(&status) {
                    return Err(bad());
                }
                directives.http = Some(status);
            }
            "fault" => {
                directives.fault = Some(match value {
                    "reset" => Fault::Reset,
                    "malformed" => Fault::Malformed,
                    "html" => Fault::Html,
                    _ => return Err(bad()),
                });
            }
            "key" => directives.key = Some(code(value).ok_or_else(bad)?),
            "fail-first" => directives.fail_first = Some(value.parse().map_err(|_| bad())?),
            "portrait" if value == "none" => directives.no_portrait = true,
            "crypto" => match value {
                "tamper" => directives.crypto_tamper = true,
                "omit" => directives.crypto_omit = true,
                _ => return Err(bad()),
            },
            _ => return Err(format!("unknown directive {key}")),
        }
    }
    if directives.fail_first.is_some() != directives.key.is_some() {
        return Err("fail-first and key go together".to_owned());
    }
    Ok(directives)
}

/// A code-like token: letters, digits, `.`, `-`, `_`, at most 128 chars.
fn code(value: &str) -> Option<String> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    ok.then(|| value.to_owned())
}

fn percent(value: &str) -> Option<f64> {
    value
        .parse::<f64>()
        .ok()
        .filter(|v| (0.0..=100.0).contains(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_block_appended_to_an_image() {
        let mut image = b"\x89PNG\r\n\x1a\n....IEND".to_vec();
        image.extend_from_slice(b"FACEID-SIM[error=InternalError, delay=250]");
        let directives = find(&image).unwrap().unwrap();
        assert_eq!(directives.error.as_deref(), Some("InternalError"));
        assert_eq!(directives.delay, Some(Duration::from_millis(250)));
    }

    #[test]
    fn no_block_means_no_directives() {
        assert_eq!(find(b"\x89PNG plain image").unwrap(), None);
    }

    #[test]
    fn every_key_parses() {
        let d = parse(
            "result=FailedOperation.CompareLowSimilarity,sim=42.5,warn=-9101|-9102,quality=30,\
             http=503,fault=reset,key=k1,fail-first=2,portrait=none",
        )
        .unwrap();
        assert_eq!(
            d.result.as_deref(),
            Some("FailedOperation.CompareLowSimilarity")
        );
        assert_eq!(d.sim, Some(42.5));
        assert_eq!(d.warn, ["-9101", "-9102"]);
        assert_eq!(d.quality, Some(30.0));
        assert_eq!(d.http, Some(503));
        assert_eq!(d.fault, Some(Fault::Reset));
        assert_eq!((d.key.as_deref(), d.fail_first), (Some("k1"), Some(2)));
        assert!(d.no_portrait);
    }

    #[test]
    fn bad_directives_are_reported() {
        for text in [
            "nonsense",
            "colour=red",
            "sim=101",
            "http=200",
            "fault=explode",
            "error=<script>",
            "fail-first=1",
            "delay=-1",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
        assert!(find(b"FACEID-SIM[error=InternalError").is_err());
    }

    #[test]
    fn long_delays_are_capped() {
        assert_eq!(parse("delay=999999999").unwrap().delay, Some(MAX_DELAY));
    }
}
