//! The one table that classifies every Tencent code, wherever it arrives
//! (`Response.Error.Code` or the business `Response.Result`), into exactly one
//! [`Class`]. Retry decisions, gRPC status codes and verdicts all derive from
//! it; README.md shows the same table (a test in `error.rs` keeps the two
//! in step).

/// Why a verification ran to completion but did not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoMatch {
    /// `Success` below the threshold, or `CompareLowSimilarity`.
    LowSimilarity,
    /// `CompareFail`.
    CompareFailed,
    /// `IdNameMisMatch`.
    IdNameMismatch,
    /// `IdNoExistSystem`.
    IdNotFound,
    /// `IdPhotoNoExist`.
    IdPhotoNotFound,
    /// `IdPhotoPoorQuality`.
    IdPhotoPoorQuality,
    /// `OcrWarningOccurred`: a requested check fired.
    Warning,
    /// `LifePhoto*`.
    FaceRejected,
    /// `ImageBlur`.
    ImageBlurry,
    /// `OcrFailed`.
    OcrFailed,
}

/// What a Tencent code means for the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// `Success`: compare the similarity with the threshold.
    Success,
    /// A completed verification that is not a match: an OK answer.
    NoMatch(NoMatch),
    /// The caller's input was refused.
    InvalidInput,
    /// Transient upstream trouble; safe to retry.
    Transient,
    /// Tencent's per-second rate limit; safe to retry after a pause.
    RateLimited,
    /// A call-count quota; retrying cannot help until it is raised.
    Quota,
    /// The gateway's own setup is wrong (credentials, clock, endpoint).
    GatewaySetup,
    /// The Tencent account cannot use the service (arrears, not activated).
    AccountState,
    /// A code this table does not know.
    Unknown,
}

impl Class {
    /// A short stable name, used in logs and metric labels.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Class::Success => "success",
            Class::NoMatch(_) => "no_match",
            Class::InvalidInput => "invalid_input",
            Class::Transient => "transient",
            Class::RateLimited => "rate_limited",
            Class::Quota => "quota",
            Class::GatewaySetup => "gateway_setup",
            Class::AccountState => "account_state",
            Class::Unknown => "unknown",
        }
    }

    /// Whether another attempt of the same request may succeed.
    pub(crate) fn is_retryable(self) -> bool {
        matches!(self, Class::Transient | Class::RateLimited)
    }
}

/// How a table row matches a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pattern {
    /// The code itself.
    Exact(&'static str),
    /// The code and every code that continues it (`AuthFailure` matches
    /// `AuthFailure.SignatureFailure`; `InvalidParameter` also matches
    /// `InvalidParameterValue`).
    Prefix(&'static str),
}

impl Pattern {
    fn matches(self, code: &str) -> bool {
        match self {
            Pattern::Exact(exact) => code == exact,
            Pattern::Prefix(prefix) => code.starts_with(prefix),
        }
    }

    /// The pattern as README.md writes it (`Prefix*` for prefixes).
    pub(crate) fn display(self) -> String {
        match self {
            Pattern::Exact(exact) => exact.to_owned(),
            Pattern::Prefix(prefix) => format!("{prefix}*"),
        }
    }
}

use Class::{
    AccountState, GatewaySetup, InvalidInput, Quota, RateLimited, Success, Transient, Unknown,
};
use NoMatch as N;
use Pattern::{Exact, Prefix};

/// Every code the gateway knows. Exact rows are checked first, then the
/// longest matching prefix wins, so order within each kind does not matter.
pub(crate) const TABLE: &[(Pattern, Class)] = &[
    (Exact("Success"), Success),
    // Completed verifications that are not a match.
    (
        Exact("FailedOperation.CompareLowSimilarity"),
        Class::NoMatch(N::LowSimilarity),
    ),
    (
        Exact("FailedOperation.CompareFail"),
        Class::NoMatch(N::CompareFailed),
    ),
    (
        Exact("FailedOperation.IdNameMisMatch"),
        Class::NoMatch(N::IdNameMismatch),
    ),
    (
        Exact("FailedOperation.IdNoExistSystem"),
        Class::NoMatch(N::IdNotFound),
    ),
    (
        Exact("FailedOperation.IdPhotoNoExist"),
        Class::NoMatch(N::IdPhotoNotFound),
    ),
    (
        Exact("FailedOperation.IdPhotoPoorQuality"),
        Class::NoMatch(N::IdPhotoPoorQuality),
    ),
    (
        Exact("FailedOperation.OcrWarningOccurred"),
        Class::NoMatch(N::Warning),
    ),
    (
        Prefix("FailedOperation.LifePhoto"),
        Class::NoMatch(N::FaceRejected),
    ),
    (
        Exact("FailedOperation.ImageBlur"),
        Class::NoMatch(N::ImageBlurry),
    ),
    (
        Exact("FailedOperation.OcrFailed"),
        Class::NoMatch(N::OcrFailed),
    ),
    // The caller's input.
    (Prefix("InvalidParameter"), InvalidInput),
    (Prefix("MissingParameter"), InvalidInput),
    (Prefix("UnknownParameter"), InvalidInput),
    (Exact("RequestSizeLimitExceeded"), InvalidInput),
    (Exact("FailedOperation.IdFormatError"), InvalidInput),
    (Exact("FailedOperation.ImageDecodeFailed"), InvalidInput),
    (Exact("FailedOperation.EmptyImageError"), InvalidInput),
    (Exact("FailedOperation.ImageSizeTooLarge"), InvalidInput),
    (Exact("FailedOperation.ImageNoIdCard"), InvalidInput),
    (Exact("FailedOperation.DownLoadError"), InvalidInput),
    // Transient upstream trouble.
    (Prefix("InternalError"), Transient),
    (Exact("FailedOperation.UnKnown"), Transient),
    (Exact("FailedOperation.CompareSystemError"), Transient),
    (Exact("FailedOperation.IdPhotoSystemNoanswer"), Transient),
    (Exact("FailedOperation.FileSaveError"), Transient),
    (Exact("FailedOperation.EncryptSystemError"), Transient),
    (Prefix("ServiceUnavailable"), Transient),
    (Prefix("ResourceUnavailable"), Transient),
    (Prefix("ResourceInsufficient"), Transient),
    (Prefix("ResourceInUse"), Transient),
    // Rate and quota.
    (Prefix("RequestLimitExceeded"), RateLimited),
    (Exact("FailedOperation.RequestLimitExceeded"), Quota),
    (Prefix("LimitExceeded"), Quota),
    // The gateway's own setup.
    (Prefix("AuthFailure"), GatewaySetup),
    (Exact("FailedOperation.StsUnAuthErrError"), GatewaySetup),
    (Exact("ActionOffline"), GatewaySetup),
    (Exact("InvalidAction"), GatewaySetup),
    (Exact("NoSuchProduct"), GatewaySetup),
    (Exact("NoSuchVersion"), GatewaySetup),
    (Exact("InvalidRequest"), GatewaySetup),
    (Exact("DryRunOperation"), GatewaySetup),
    (Prefix("UnsupportedOperation"), GatewaySetup),
    (Exact("UnsupportedProtocol"), GatewaySetup),
    (Exact("UnsupportedRegion"), GatewaySetup),
    (Prefix("ResourceNotFound"), GatewaySetup),
    (Exact("ResponseSizeLimitExceeded"), GatewaySetup),
    // The account's state.
    (Prefix("UnauthorizedOperation"), AccountState),
    (Exact("IpInBlacklist"), AccountState),
    (Exact("IpNotInWhitelist"), AccountState),
    // Known, but too vague to act on: the bare `FailedOperation`.
    (Exact("FailedOperation"), Unknown),
];

/// The table row for `code`, if any row matches.
pub(crate) fn lookup(code: &str) -> Option<(Pattern, Class)> {
    let exact = TABLE
        .iter()
        .find(|(pattern, _)| matches!(pattern, Exact(_)) && pattern.matches(code));
    let longest_prefix = || {
        TABLE
            .iter()
            .filter(|(pattern, _)| matches!(pattern, Prefix(_)) && pattern.matches(code))
            .max_by_key(|(pattern, _)| match pattern {
                Prefix(prefix) => prefix.len(),
                Exact(_) => 0,
            })
    };
    exact.or_else(longest_prefix).copied()
}

/// The class of `code`; [`Class::Unknown`] when no row matches.
pub(crate) fn classify(code: &str) -> Class {
    lookup(code).map_or(Unknown, |(_, class)| class)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code of the API page's error table and of the reference's lists.
    const DOCUMENTED_CODES: &[&str] = &[
        // CheckIdCardInformation error codes.
        "FailedOperation.CompareFail",
        "FailedOperation.CompareLowSimilarity",
        "FailedOperation.CompareSystemError",
        "FailedOperation.DownLoadError",
        "FailedOperation.EmptyImageError",
        "FailedOperation.EncryptSystemError",
        "FailedOperation.FileSaveError",
        "FailedOperation.IdFormatError",
        "FailedOperation.IdNameMisMatch",
        "FailedOperation.IdNoExistSystem",
        "FailedOperation.IdPhotoNoExist",
        "FailedOperation.IdPhotoPoorQuality",
        "FailedOperation.IdPhotoSystemNoanswer",
        "FailedOperation.ImageBlur",
        "FailedOperation.ImageDecodeFailed",
        "FailedOperation.ImageNoIdCard",
        "FailedOperation.ImageSizeTooLarge",
        "FailedOperation.LifePhotoDetectFaces",
        "FailedOperation.LifePhotoDetectFake",
        "FailedOperation.LifePhotoDetectNoFaces",
        "FailedOperation.LifePhotoPoorQuality",
        "FailedOperation.LifePhotoSizeError",
        "FailedOperation.OcrFailed",
        "FailedOperation.OcrWarningOccurred",
        "FailedOperation.RequestLimitExceeded",
        "FailedOperation.StsUnAuthErrError",
        "FailedOperation.UnKnown",
        "InternalError.EncryptSystemError",
        "InternalError.UnKnown",
        "InvalidParameter",
        "UnauthorizedOperation.Arrears",
        "UnauthorizedOperation.ChargeStatusException",
        "UnauthorizedOperation.Nonactivated",
        // Common error codes of API 3.0.
        "ActionOffline",
        "AuthFailure.InvalidAuthorization",
        "AuthFailure.InvalidSecretId",
        "AuthFailure.MFAFailure",
        "AuthFailure.SecretIdNotFound",
        "AuthFailure.SignatureExpire",
        "AuthFailure.SignatureFailure",
        "AuthFailure.TokenFailure",
        "AuthFailure.UnauthorizedOperation",
        "DryRunOperation",
        "FailedOperation",
        "InternalError",
        "InvalidAction",
        "InvalidParameterValue",
        "InvalidRequest",
        "IpInBlacklist",
        "IpNotInWhitelist",
        "LimitExceeded",
        "MissingParameter",
        "NoSuchProduct",
        "NoSuchVersion",
        "RequestLimitExceeded",
        "RequestLimitExceeded.GlobalRegionUinLimitExceeded",
        "RequestLimitExceeded.IPLimitExceeded",
        "RequestLimitExceeded.UinLimitExceeded",
        "RequestSizeLimitExceeded",
        "ResourceInUse",
        "ResourceInsufficient",
        "ResourceNotFound",
        "ResourceUnavailable",
        "ResponseSizeLimitExceeded",
        "ServiceUnavailable",
        "UnauthorizedOperation",
        "UnknownParameter",
        "UnsupportedOperation",
        "UnsupportedProtocol",
        "UnsupportedRegion",
        // The business result of a completed comparison.
        "Success",
    ];

    #[test]
    fn every_documented_code_has_a_row() {
        let missing: Vec<_> = DOCUMENTED_CODES
            .iter()
            .filter(|code| lookup(code).is_none())
            .collect();
        assert!(missing.is_empty(), "codes without a row: {missing:?}");
    }

    #[test]
    fn design_classes_hold() {
        let expectations = [
            (
                "FailedOperation.CompareLowSimilarity",
                Class::NoMatch(N::LowSimilarity),
            ),
            (
                "FailedOperation.LifePhotoDetectFake",
                Class::NoMatch(N::FaceRejected),
            ),
            ("FailedOperation.ImageBlur", Class::NoMatch(N::ImageBlurry)),
            ("InvalidParameterValue.Something", InvalidInput),
            ("FailedOperation.ImageNoIdCard", InvalidInput),
            ("InternalError.EncryptSystemError", Transient),
            ("FailedOperation.EncryptSystemError", Transient),
            ("RequestLimitExceeded.IPLimitExceeded", RateLimited),
            ("FailedOperation.RequestLimitExceeded", Quota),
            ("AuthFailure.SignatureFailure", GatewaySetup),
            ("FailedOperation.StsUnAuthErrError", GatewaySetup),
            ("UnauthorizedOperation.Arrears", AccountState),
            ("FailedOperation.SomethingNew", Unknown),
            ("NeverHeardOf", Unknown),
        ];
        for (code, class) in expectations {
            assert_eq!(classify(code), class, "{code}");
        }
    }

    #[test]
    fn exact_rows_win_over_prefixes() {
        // `FailedOperation.RequestLimitExceeded` is a quota, although
        // `RequestLimitExceeded*` is a prefix of nothing here; and
        // `InternalError*` must not capture an unrelated exact code.
        assert_eq!(classify("FailedOperation.RequestLimitExceeded"), Quota);
        assert_eq!(classify("RequestLimitExceeded"), RateLimited);
    }

    #[test]
    fn only_transient_and_rate_limited_codes_are_retryable() {
        let retryable: Vec<_> = TABLE
            .iter()
            .filter(|(_, class)| class.is_retryable())
            .map(|(_, class)| *class)
            .collect();
        assert!(
            retryable
                .iter()
                .all(|c| matches!(c, Transient | RateLimited))
        );
        assert!(!classify("FailedOperation.RequestLimitExceeded").is_retryable());
        assert!(!classify("AuthFailure.SignatureFailure").is_retryable());
        assert!(!classify("FailedOperation.IdNameMisMatch").is_retryable());
    }
}
