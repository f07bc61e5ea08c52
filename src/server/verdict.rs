//! Turns a Tencent verification outcome into the gRPC answer. The one rule
//! that matters most lives here: only `Success` with a similarity at or above
//! the threshold is [`Verdict::Match`]; anything else, including a missing or
//! non-numeric similarity, is not.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

use crate::proto::{IdCard, Verdict, VerifyIdCardResponse, Warning};
use crate::tencent::{Class, NoMatch, Reply};

/// Maps `reply` to the gRPC answer, with `threshold` deciding a match.
pub(crate) fn to_response(reply: Reply, threshold: f64) -> VerifyIdCardResponse {
    let response = reply.response;
    let similarity = response.sim.filter(|s| s.is_finite()).unwrap_or(0.0);
    let verdict = match reply.class {
        Class::Success if similarity >= threshold => Verdict::Match,
        Class::Success => Verdict::LowSimilarity,
        Class::NoMatch(reason) => verdict_for(reason),
        // `Reply` only ever holds the two classes above; anything else is
        // not a match by construction.
        _ => Verdict::Unspecified,
    };
    let warning_codes: Vec<String> = response
        .warnings
        .as_deref()
        .unwrap_or("")
        .split('|')
        .map(str::trim)
        .filter(|code| !code.is_empty())
        .map(str::to_owned)
        .collect();
    let portrait = response
        .portrait
        .as_deref()
        .filter(|p| !p.is_empty())
        .and_then(|p| match STANDARD.decode(p) {
            Ok(bytes) => Some(Bytes::from(bytes)),
            Err(_) => {
                tracing::warn!("upstream portrait is not valid base64; dropped");
                None
            }
        })
        .unwrap_or_default();
    VerifyIdCardResponse {
        verdict: verdict.into(),
        similarity,
        result_code: response.result.unwrap_or_default(),
        description: response.description.unwrap_or_default(),
        id_card: Some(IdCard {
            name: response.name.unwrap_or_default(),
            sex: response.sex.unwrap_or_default(),
            nation: response.nation.unwrap_or_default(),
            birth: response.birth.unwrap_or_default(),
            address: response.address.unwrap_or_default(),
            id_number: response.id_num.unwrap_or_default(),
        }),
        portrait,
        warnings: warning_codes
            .iter()
            .map(|code| warning_for(code).into())
            .collect(),
        warning_codes,
        quality: response.quality.filter(|q| q.is_finite()),
        request_id: response.request_id.unwrap_or_default(),
        simulated: reply.simulated,
    }
}

fn verdict_for(reason: NoMatch) -> Verdict {
    match reason {
        NoMatch::LowSimilarity => Verdict::LowSimilarity,
        NoMatch::CompareFailed => Verdict::CompareFailed,
        NoMatch::IdNameMismatch => Verdict::IdNameMismatch,
        NoMatch::IdNotFound => Verdict::IdNotFound,
        NoMatch::IdPhotoNotFound => Verdict::IdPhotoNotFound,
        NoMatch::IdPhotoPoorQuality => Verdict::IdPhotoPoorQuality,
        NoMatch::Warning => Verdict::Warning,
        NoMatch::FaceRejected => Verdict::FaceRejected,
        NoMatch::ImageBlurry => Verdict::ImageBlurry,
        NoMatch::OcrFailed => Verdict::OcrFailed,
    }
}

/// The enum value of a raw warning code.
pub(crate) fn warning_for(code: &str) -> Warning {
    match code {
        "-9101" => Warning::BorderIncomplete,
        "-9102" => Warning::Photocopy,
        "-9103" => Warning::Reshoot,
        "-9104" => Warning::TemporaryId,
        "-9105" => Warning::BorderOccluded,
        "-9106" => Warning::Edited,
        "-8001" => Warning::Blurry,
        _ => Warning::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tencent::model::CheckIdCardInformationResponse;

    fn reply(result: &str, sim: Option<f64>, class: Class) -> Reply {
        Reply {
            response: CheckIdCardInformationResponse {
                result: Some(result.into()),
                sim,
                ..Default::default()
            },
            class,
            simulated: false,
        }
    }

    fn verdict(reply: Reply, threshold: f64) -> Verdict {
        to_response(reply, threshold).verdict()
    }

    #[test]
    fn success_at_or_above_the_threshold_is_the_only_match() {
        assert_eq!(
            verdict(reply("Success", Some(70.0), Class::Success), 70.0),
            Verdict::Match
        );
        assert_eq!(
            verdict(reply("Success", Some(99.9), Class::Success), 70.0),
            Verdict::Match
        );
        assert_eq!(
            verdict(reply("Success", Some(69.99), Class::Success), 70.0),
            Verdict::LowSimilarity
        );
        assert_eq!(
            verdict(reply("Success", Some(80.0), Class::Success), 85.0),
            Verdict::LowSimilarity
        );
    }

    #[test]
    fn missing_or_nonsense_similarity_is_never_a_match() {
        for sim in [None, Some(f64::NAN), Some(f64::INFINITY)] {
            assert_eq!(
                verdict(reply("Success", sim, Class::Success), 70.0),
                Verdict::LowSimilarity
            );
        }
    }

    #[test]
    fn no_match_codes_keep_their_reason_even_with_a_high_similarity() {
        let r = reply(
            "FailedOperation.IdNameMisMatch",
            Some(99.0),
            Class::NoMatch(NoMatch::IdNameMismatch),
        );
        assert_eq!(verdict(r, 70.0), Verdict::IdNameMismatch);
    }

    #[test]
    fn warnings_are_decoded_and_kept_raw() {
        let mut r = reply(
            "FailedOperation.OcrWarningOccurred",
            Some(0.0),
            Class::NoMatch(NoMatch::Warning),
        );
        r.response.warnings = Some("-9101|-9103|-7777".into());
        let response = to_response(r, 70.0);
        assert_eq!(response.verdict(), Verdict::Warning);
        assert_eq!(response.warning_codes, ["-9101", "-9103", "-7777"]);
        assert_eq!(
            response.warnings().collect::<Vec<_>>(),
            [Warning::BorderIncomplete, Warning::Reshoot, Warning::Other]
        );
    }

    #[test]
    fn portrait_is_decoded_and_bad_base64_is_dropped() {
        let mut r = reply("Success", Some(90.0), Class::Success);
        r.response.portrait = Some(STANDARD.encode(b"\xFF\xD8\xFFjpeg"));
        assert_eq!(
            to_response(r.clone(), 70.0).portrait.as_ref(),
            b"\xFF\xD8\xFFjpeg"
        );
        r.response.portrait = Some("***".into());
        assert!(to_response(r, 70.0).portrait.is_empty());
    }
}
