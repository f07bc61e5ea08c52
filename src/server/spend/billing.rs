//! Which outcomes cost money: Tencent's billing table
//! ([`crate::tencent::billing`]) or the `--billable-results` override, and
//! the bounded `result` label outcomes are counted under.

use std::collections::HashSet;

use crate::proto::VerifyIdCardResponse;
use crate::server::error::Error;
use crate::tencent::billing::BILLED_RESULTS;
use crate::tencent::{self, codes};

/// What Tencent bills.
#[derive(Debug, Clone)]
pub(crate) struct Billing {
    billed: HashSet<String>,
}

impl Default for Billing {
    fn default() -> Self {
        Self::new(None)
    }
}

/// Whether an outcome was billed, as far as the gateway can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Billed {
    /// Tencent answered with a billed code.
    Yes,
    /// Tencent answered with a code it does not bill, or the call never
    /// reached it.
    No,
    /// The gateway cannot tell: the call may have reached Tencent and been
    /// answered after the gateway stopped listening (an upstream timeout, a
    /// connection lost mid-call, the caller's deadline, an answer that does
    /// not decode). Budgets keep such a unit: it may have been billed.
    Unknown,
}

impl Billing {
    /// Tencent's table, or `override_codes` instead when given.
    pub(crate) fn new(override_codes: Option<&[String]>) -> Self {
        let billed = match override_codes {
            Some(codes) => codes.iter().map(|code| code.trim().to_owned()).collect(),
            None => BILLED_RESULTS
                .iter()
                .map(|code| (*code).to_owned())
                .collect(),
        };
        Self { billed }
    }

    /// Whether Tencent bills `code`.
    pub(crate) fn bills(&self, code: &str) -> bool {
        self.billed.contains(code)
    }

    /// Whether the outcome of one verification was billed.
    pub(crate) fn billed(&self, result: &Result<VerifyIdCardResponse, Error>) -> Billed {
        match result {
            Ok(answer) => {
                if self.bills(&answer.result_code) {
                    Billed::Yes
                } else {
                    Billed::No
                }
            }
            Err(Error::Upstream(error)) => match error {
                tencent::Error::Api { code, .. } if self.bills(code) => Billed::Yes,
                // Tencent answered, or nothing was sent.
                tencent::Error::Api { .. }
                | tencent::Error::Connect(_)
                | tencent::Error::HttpStatus { .. }
                | tencent::Error::Signing
                | tencent::Error::CredentialsExpired { .. } => Billed::No,
                tencent::Error::Timeout
                | tencent::Error::Transport(_)
                | tencent::Error::Malformed { .. }
                | tencent::Error::Decryption(_) => Billed::Unknown,
            },
            // The caller's deadline may have passed while Tencent answered.
            Err(Error::DeadlineExceeded | Error::Cancelled) => Billed::Unknown,
            Err(_) => Billed::No,
        }
    }
}

/// The `result` label of an outcome: its row in the code table (bounded),
/// a fixed failure name, or `other`.
pub(crate) fn result_label(result: &Result<VerifyIdCardResponse, Error>) -> String {
    let code = match result {
        Ok(answer) => answer.result_code.as_str(),
        Err(Error::Upstream(tencent::Error::Api { code, .. })) => code.as_str(),
        Err(error) => return error.reason().to_owned(),
    };
    codes::lookup(code).map_or_else(|| "other".to_owned(), |(row, _)| row.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: &str) -> Result<VerifyIdCardResponse, Error> {
        Ok(VerifyIdCardResponse {
            result_code: code.to_owned(),
            ..Default::default()
        })
    }

    #[test]
    fn tencents_table_bills_completed_comparisons_only() {
        let billing = Billing::default();
        assert_eq!(billing.billed(&answer("Success")), Billed::Yes);
        assert_eq!(
            billing.billed(&answer("FailedOperation.IdNameMisMatch")),
            Billed::Yes
        );
        assert_eq!(
            billing.billed(&answer("FailedOperation.IdPhotoPoorQuality")),
            Billed::No
        );
        let internal = Err(Error::Upstream(tencent::Error::api("InternalError", None)));
        assert_eq!(billing.billed(&internal), Billed::No);
        assert_eq!(
            billing.billed(&Err(Error::Upstream(tencent::Error::Timeout))),
            Billed::Unknown
        );
        assert_eq!(
            billing.billed(&Err(Error::RateLimited {
                retry_after: std::time::Duration::ZERO
            })),
            Billed::No
        );
    }

    #[test]
    fn the_override_replaces_the_table() {
        let billing = Billing::new(Some(&["FailedOperation.CompareFail".to_owned()]));
        assert_eq!(billing.billed(&answer("Success")), Billed::No);
        assert_eq!(
            billing.billed(&answer("FailedOperation.CompareFail")),
            Billed::Yes
        );
    }

    #[test]
    fn result_labels_are_bounded() {
        assert_eq!(result_label(&answer("Success")), "Success");
        assert_eq!(
            result_label(&answer("FailedOperation.LifePhotoDetectFake")),
            "FailedOperation.LifePhoto*"
        );
        assert_eq!(result_label(&answer("SomethingNew.AndUnbounded")), "other");
        let timeout = Err(Error::Upstream(tencent::Error::Timeout));
        assert_eq!(result_label(&timeout), "UpstreamTimeout");
    }
}
