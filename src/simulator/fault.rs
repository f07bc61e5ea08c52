//! Faults of the whole simulated server, switchable while it runs: down
//! (the port closed, so connections are refused, and open ones cut), every
//! API call answered with an HTTP 5xx, or every API call slow. They show
//! and test failover between endpoints; faults of single requests are
//! [`super::directives`].
//!
//! The text form, shared by `simulator --fault` and
//! `POST /__simulator/fault`: `none`, `down`, `5xx` (HTTP 503) or `5xx=502`,
//! `slow` (5 s) or `slow=2s`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

/// How long `slow` makes each call wait when no delay is given.
const DEFAULT_SLOW: Duration = Duration::from_secs(5);
/// The status `5xx` answers with when none is given.
const DEFAULT_STATUS: u16 = 503;

/// A fault of the whole server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerFault {
    /// Answer as usual.
    #[default]
    None,
    /// Refuse connections: the port closes and open connections are cut,
    /// as when the process is killed.
    Down,
    /// Answer every API call with this HTTP status (500 to 599).
    Http(u16),
    /// Wait this long before handling each API call.
    Slow(Duration),
}

/// Why a fault's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown simulator fault {0:?} (none, down, 5xx, 5xx=<500-599>, slow, slow=<duration>)")]
pub struct ParseFaultError(String);

impl FromStr for ServerFault {
    type Err = ParseFaultError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refuse = || ParseFaultError(text.to_owned());
        let (mode, value) = match text.trim().split_once('=') {
            Some((mode, value)) => (mode, Some(value)),
            None => (text.trim(), None),
        };
        match (mode, value) {
            ("none", None) => Ok(Self::None),
            ("down", None) => Ok(Self::Down),
            ("5xx", None) => Ok(Self::Http(DEFAULT_STATUS)),
            ("5xx", Some(status)) => match status.parse::<u16>() {
                Ok(status @ 500..=599) => Ok(Self::Http(status)),
                _ => Err(refuse()),
            },
            ("slow", None) => Ok(Self::Slow(DEFAULT_SLOW)),
            ("slow", Some(delay)) => humantime::parse_duration(delay)
                .map(Self::Slow)
                .map_err(|_| refuse()),
            _ => Err(refuse()),
        }
    }
}

impl fmt::Display for ServerFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Down => f.write_str("down"),
            Self::Http(status) => write!(f, "5xx={status}"),
            Self::Slow(delay) => write!(f, "slow={}", humantime::format_duration(*delay)),
        }
    }
}

/// The body of `POST /__simulator/fault`: `{"mode": "down", "for": "10s"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FaultRequest {
    /// The fault's text form.
    pub(super) mode: String,
    /// How long it lasts (`10s`, `500ms`); until switched when absent.
    #[serde(rename = "for")]
    pub(super) duration: Option<String>,
}

/// The answer of `GET` and `POST /__simulator/fault`.
#[derive(Debug, Serialize)]
pub(super) struct FaultStatus {
    /// The fault in force, in its text form.
    pub(super) mode: String,
    /// Milliseconds until it ends by itself; absent when it lasts until
    /// switched (or there is none).
    pub(super) remaining_ms: Option<u64>,
}

/// A fault and when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Setting {
    pub(super) fault: ServerFault,
    pub(super) until: Option<Instant>,
}

impl Setting {
    /// The fault in force at `now` (none once it has ended).
    pub(super) fn at(&self, now: Instant) -> ServerFault {
        match self.until {
            Some(until) if until <= now => ServerFault::None,
            _ => self.fault,
        }
    }
}

/// The current fault, shared by the handler (which reads it per call) and
/// the accept loop (which waits for `down`).
#[derive(Debug)]
pub(super) struct FaultSwitch {
    setting: watch::Sender<Setting>,
}

impl Default for FaultSwitch {
    fn default() -> Self {
        Self {
            setting: watch::Sender::new(Setting::default()),
        }
    }
}

impl FaultSwitch {
    /// Puts `fault` in force, for `duration` or until switched again.
    pub(super) fn set(&self, fault: ServerFault, duration: Option<Duration>) {
        let until = duration.map(|d| Instant::now() + d);
        self.setting.send_replace(Setting { fault, until });
        tracing::info!(
            fault = %fault,
            for_s = duration.map(|d| d.as_secs_f64()),
            "simulator fault switched"
        );
    }

    /// The fault in force now.
    pub(super) fn current(&self) -> ServerFault {
        self.setting.borrow().at(Instant::now())
    }

    /// What `GET /__simulator/fault` reports.
    pub(super) fn status(&self) -> FaultStatus {
        let setting = *self.setting.borrow();
        let now = Instant::now();
        let fault = setting.at(now);
        FaultStatus {
            mode: fault.to_string(),
            remaining_ms: match (fault, setting.until) {
                (ServerFault::None, _) | (_, None) => None,
                (_, Some(until)) => {
                    Some(u64::try_from((until - now).as_millis()).unwrap_or(u64::MAX))
                }
            },
        }
    }

    /// Follows every switch.
    pub(super) fn subscribe(&self) -> watch::Receiver<Setting> {
        self.setting.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_form_parses_and_prints_back() {
        for (text, fault) in [
            ("none", ServerFault::None),
            ("down", ServerFault::Down),
            ("5xx", ServerFault::Http(503)),
            ("5xx=502", ServerFault::Http(502)),
            ("slow", ServerFault::Slow(Duration::from_secs(5))),
            ("slow=250ms", ServerFault::Slow(Duration::from_millis(250))),
        ] {
            assert_eq!(text.parse::<ServerFault>(), Ok(fault), "{text}");
            assert_eq!(fault.to_string().parse::<ServerFault>(), Ok(fault));
        }
        for bad in ["", "up", "5xx=404", "5xx=abc", "slow=soon", "down=1"] {
            assert!(bad.parse::<ServerFault>().is_err(), "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_fault_with_a_duration_ends_by_itself() {
        let switch = FaultSwitch::default();
        switch.set(ServerFault::Http(500), Some(Duration::from_secs(2)));
        assert_eq!(switch.current(), ServerFault::Http(500));
        assert_eq!(switch.status().remaining_ms, Some(2000));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(switch.current(), ServerFault::None);
        assert_eq!(switch.status().remaining_ms, None);
        switch.set(ServerFault::Down, None);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(switch.current(), ServerFault::Down);
    }
}
