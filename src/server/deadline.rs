//! The caller's deadline, read from the `grpc-timeout` request header.

use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::MetadataMap;

/// The deadline a caller set (`grpc-timeout`), counted from `received`.
/// A malformed header counts as no deadline, as gRPC specifies.
pub(crate) fn from_metadata(metadata: &MetadataMap, received: Instant) -> Option<Instant> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    parse_timeout(value).map(|timeout| received + timeout)
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (`H`, `M`, `S`,
/// `m`, `u`, `n`).
pub(crate) fn parse_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_parses() {
        assert_eq!(parse_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_timeout("4S"), Some(Duration::from_secs(4)));
        assert_eq!(parse_timeout("500m"), Some(Duration::from_millis(500)));
        assert_eq!(
            parse_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_timeout("7n"), Some(Duration::from_nanos(7)));
    }

    #[test]
    fn malformed_values_mean_no_deadline() {
        for value in ["", "S", "10", "123456789S", "1.5S", "-1S", "10s", "10X"] {
            assert_eq!(parse_timeout(value), None, "{value}");
        }
    }
}
