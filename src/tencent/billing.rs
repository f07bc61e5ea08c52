//! Which outcomes of `CheckIdCardInformation` Tencent bills, next to the
//! code table ([`super::codes`]) that classifies the same codes.
//!
//! Source: Tencent Cloud FaceID, "人脸核身服务错误码 / 计费" —
//! <https://cloud.tencent.com/document/product/1007/47911>, section
//! 人脸核验类 (face-verification actions, which compare a portrait with the
//! authoritative ID photo, as this action does): `Success` (检测通过),
//! `FailedOperation.IdNameMisMatch` and
//! `FailedOperation.CompareLowSimilarity` are billed (是否收费: 是); every
//! other code on that list is not (否), among them
//! `FailedOperation.IdPhotoPoorQuality`, `FailedOperation.LifePhoto*`,
//! `FailedOperation.CompareFail`, `FailedOperation.ImageDecodeFailed`,
//! `InvalidParameter*` and `UnauthorizedOperation.*`. The same rule is what
//! Tencent states for its sibling action `IdCardOCRVerification`
//! (<https://cloud.tencent.com/document/api/1007/37980>: only "consistent"
//! and "inconsistent" are 收费结果码). The API page of this action
//! (<https://cloud.tencent.com/document/product/1007/47276>) names no billing
//! rule of its own. Errors answered in `Response.Error` (rate limits, auth,
//! internal errors) are never billed by API 3.0.
//!
//! `--billable-results` replaces this list when a contract says otherwise.

/// The codes Tencent bills for this action (see the module documentation
/// for the source).
pub(crate) const BILLED_RESULTS: &[&str] = &[
    "Success",
    "FailedOperation.IdNameMisMatch",
    "FailedOperation.CompareLowSimilarity",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tencent::codes::{self, Class};

    #[test]
    fn every_billed_code_is_a_completed_verification_in_the_code_table() {
        for code in BILLED_RESULTS {
            let class = codes::classify(code);
            assert!(
                matches!(class, Class::Success | Class::NoMatch(_)),
                "{code} is billed but classified {class:?}"
            );
        }
    }
}
