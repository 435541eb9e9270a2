//! Injectable faults: what they are, how they are written, and the FIFO queue that hands them out.
//!
//! A fault replaces (or delays) the answer to the next `times` requests to `/v2/*`. Faults are
//! queued at start from `--fault kind[:times]` and at run time through `POST /__mock/faults`.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default `Retry-After` of a `rate_limited` fault, in seconds.
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 1;
/// Default delay of a `slow` fault, in milliseconds.
pub const DEFAULT_DELAY_MS: u64 = 5_000;
/// Default minimum body size of an `oversized` fault: 8 MiB.
pub const DEFAULT_OVERSIZED_BYTES: usize = 8 * 1024 * 1024;

/// The names accepted for [`FaultKind`], in the order error messages list them.
pub const KIND_NAMES: [&str; 11] = [
    "rate_limited",
    "key_exhausted",
    "server_error",
    "unavailable",
    "slow",
    "malformed",
    "oversized",
    "key_invalid",
    "bad_request",
    "drop",
    "wrong_shape",
];

/// One way of misbehaving, with its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// 429 `rateLimited` with a `Retry-After` header.
    RateLimited { retry_after_secs: u64 },
    /// 429 `apiKeyExhausted`.
    KeyExhausted,
    /// 500 `unexpectedError`.
    ServerError,
    /// 503 with an HTML body, as a reverse proxy in front of the API would send.
    Unavailable,
    /// Waits before answering normally.
    Slow { delay: Duration },
    /// 200 whose JSON body is cut short.
    Malformed,
    /// 200 with a valid body of at least `bytes` bytes.
    Oversized { bytes: usize },
    /// 401 `apiKeyInvalid` whatever the key.
    KeyInvalid,
    /// 400 `parameterInvalid` whatever the parameters.
    BadRequest,
    /// Hangs up without answering.
    Drop,
    /// 200 with valid JSON that is not a NewsAPI body.
    WrongShape,
}

impl FaultKind {
    /// The kind called `name`, with default parameters.
    pub fn with_defaults(name: &str) -> Result<Self, FaultParseError> {
        Ok(match name {
            "rate_limited" => Self::RateLimited {
                retry_after_secs: DEFAULT_RETRY_AFTER_SECS,
            },
            "key_exhausted" => Self::KeyExhausted,
            "server_error" => Self::ServerError,
            "unavailable" => Self::Unavailable,
            "slow" => Self::Slow {
                delay: Duration::from_millis(DEFAULT_DELAY_MS),
            },
            "malformed" => Self::Malformed,
            "oversized" => Self::Oversized {
                bytes: DEFAULT_OVERSIZED_BYTES,
            },
            "key_invalid" => Self::KeyInvalid,
            "bad_request" => Self::BadRequest,
            "drop" => Self::Drop,
            "wrong_shape" => Self::WrongShape,
            other => return Err(FaultParseError::UnknownKind(other.to_owned())),
        })
    }

    /// The name this kind is written with.
    pub fn name(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "rate_limited",
            Self::KeyExhausted => "key_exhausted",
            Self::ServerError => "server_error",
            Self::Unavailable => "unavailable",
            Self::Slow { .. } => "slow",
            Self::Malformed => "malformed",
            Self::Oversized { .. } => "oversized",
            Self::KeyInvalid => "key_invalid",
            Self::BadRequest => "bad_request",
            Self::Drop => "drop",
            Self::WrongShape => "wrong_shape",
        }
    }
}

/// A fault and how many requests it applies to (`None`: all of them until cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultSpec {
    /// What to do.
    pub kind: FaultKind,
    /// How many requests to do it to; `None` is forever.
    pub times: Option<u32>,
}

/// Why a fault could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultParseError {
    /// The kind is not one of [`KIND_NAMES`].
    UnknownKind(String),
    /// `times` is not a whole number of at least 1.
    InvalidTimes(String),
    /// A parameter was given to a kind that has no use for it.
    UnusedParameter {
        kind: &'static str,
        parameter: &'static str,
    },
}

impl fmt::Display for FaultParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownKind(kind) => write!(
                f,
                "unknown fault kind `{kind}`; expected one of: {}",
                KIND_NAMES.join(", ")
            ),
            Self::InvalidTimes(times) => {
                write!(
                    f,
                    "invalid fault times `{times}`; expected a whole number >= 1"
                )
            }
            Self::UnusedParameter { kind, parameter } => {
                write!(f, "fault kind `{kind}` takes no `{parameter}`")
            }
        }
    }
}

impl std::error::Error for FaultParseError {}

/// Reads the command-line form `kind[:times]`, e.g. `rate_limited:3` or `server_error`.
impl FromStr for FaultSpec {
    type Err = FaultParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (name, times) = match text.split_once(':') {
            Some((name, times)) => (name.trim(), Some(parse_times(times.trim())?)),
            None => (text, None),
        };
        Ok(Self {
            kind: FaultKind::with_defaults(name)?,
            times,
        })
    }
}

fn parse_times(text: &str) -> Result<u32, FaultParseError> {
    match text.parse::<u32>() {
        Ok(times) if times >= 1 => Ok(times),
        _ => Err(FaultParseError::InvalidTimes(text.to_owned())),
    }
}

/// The body of `POST /__mock/faults`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    /// One of [`KIND_NAMES`].
    pub kind: String,
    /// Requests to apply it to; absent means forever.
    pub times: Option<u32>,
    /// `rate_limited` only.
    pub retry_after_secs: Option<u64>,
    /// `slow` only.
    pub delay_ms: Option<u64>,
    /// `oversized` only.
    pub bytes: Option<usize>,
}

impl TryFrom<FaultRequest> for FaultSpec {
    type Error = FaultParseError;

    fn try_from(request: FaultRequest) -> Result<Self, Self::Error> {
        let mut kind = FaultKind::with_defaults(&request.kind)?;
        let name = kind.name();
        let unused = |parameter| FaultParseError::UnusedParameter {
            kind: name,
            parameter,
        };
        match (&mut kind, request.retry_after_secs) {
            (FaultKind::RateLimited { retry_after_secs }, Some(secs)) => *retry_after_secs = secs,
            (_, Some(_)) => return Err(unused("retry_after_secs")),
            (_, None) => {}
        }
        match (&mut kind, request.delay_ms) {
            (FaultKind::Slow { delay }, Some(ms)) => *delay = Duration::from_millis(ms),
            (_, Some(_)) => return Err(unused("delay_ms")),
            (_, None) => {}
        }
        match (&mut kind, request.bytes) {
            (FaultKind::Oversized { bytes }, Some(size)) => *bytes = size,
            (_, Some(_)) => return Err(unused("bytes")),
            (_, None) => {}
        }
        let times = match request.times {
            Some(0) => return Err(FaultParseError::InvalidTimes("0".to_owned())),
            times => times,
        };
        Ok(Self { kind, times })
    }
}

/// How a queued fault is shown by `GET /__mock/faults`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QueuedFault {
    /// The kind's name.
    pub kind: &'static str,
    /// Requests it still applies to; `None` is forever.
    pub remaining: Option<u32>,
}

/// Faults waiting to be applied, oldest first.
#[derive(Debug, Default)]
pub struct FaultQueue {
    entries: VecDeque<FaultSpec>,
}

impl FaultQueue {
    /// A queue holding `faults` in order.
    pub fn new(faults: impl IntoIterator<Item = FaultSpec>) -> Self {
        Self {
            entries: faults.into_iter().collect(),
        }
    }

    /// Queues `fault` behind the others and returns the queue's length.
    pub fn push(&mut self, fault: FaultSpec) -> usize {
        self.entries.push_back(fault);
        self.entries.len()
    }

    /// The fault for the next request, if any; counts it against its `times`.
    pub fn take(&mut self) -> Option<FaultKind> {
        let front = self.entries.front_mut()?;
        let kind = front.kind;
        match &mut front.times {
            None => {}
            Some(remaining) if *remaining > 1 => *remaining -= 1,
            Some(_) => {
                self.entries.pop_front();
            }
        }
        Some(kind)
    }

    /// Empties the queue and returns how many faults it held.
    pub fn clear(&mut self) -> usize {
        let cleared = self.entries.len();
        self.entries.clear();
        cleared
    }

    /// The queue's content, oldest first.
    pub fn snapshot(&self) -> Vec<QueuedFault> {
        self.entries
            .iter()
            .map(|spec| QueuedFault {
                kind: spec.kind.name(),
                remaining: spec.times,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: &str) -> FaultRequest {
        FaultRequest {
            kind: kind.to_owned(),
            times: None,
            retry_after_secs: None,
            delay_ms: None,
            bytes: None,
        }
    }

    #[test]
    fn every_kind_name_parses_back_to_a_kind_with_that_name() {
        for name in KIND_NAMES {
            let spec: FaultSpec = name.parse().unwrap();
            assert_eq!(spec.kind.name(), name);
            assert_eq!(spec.times, None);
        }
    }

    #[test]
    fn command_line_form_reads_kind_and_times() {
        let spec: FaultSpec = "rate_limited:3".parse().unwrap();
        assert_eq!(
            spec,
            FaultSpec {
                kind: FaultKind::RateLimited {
                    retry_after_secs: 1
                },
                times: Some(3)
            }
        );
    }

    #[test]
    fn unknown_kind_and_zero_times_are_rejected() {
        assert_eq!(
            "teapot".parse::<FaultSpec>(),
            Err(FaultParseError::UnknownKind("teapot".into()))
        );
        assert!(matches!(
            "slow:0".parse::<FaultSpec>(),
            Err(FaultParseError::InvalidTimes(_))
        ));
        assert!(matches!(
            "slow:x".parse::<FaultSpec>(),
            Err(FaultParseError::InvalidTimes(_))
        ));
    }

    #[test]
    fn request_parameters_override_the_defaults_of_their_kind() {
        let spec = FaultSpec::try_from(FaultRequest {
            delay_ms: Some(20),
            times: Some(2),
            ..request("slow")
        })
        .unwrap();
        assert_eq!(
            spec.kind,
            FaultKind::Slow {
                delay: Duration::from_millis(20)
            }
        );
        assert_eq!(spec.times, Some(2));
    }

    #[test]
    fn request_parameter_for_another_kind_is_rejected() {
        let error = FaultSpec::try_from(FaultRequest {
            bytes: Some(10),
            ..request("rate_limited")
        })
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "fault kind `rate_limited` takes no `bytes`"
        );
    }

    #[test]
    fn queue_applies_each_fault_its_times_in_fifo_order() {
        let mut queue =
            FaultQueue::new(["server_error:2".parse().unwrap(), "drop:1".parse().unwrap()]);
        assert_eq!(queue.take(), Some(FaultKind::ServerError));
        assert_eq!(queue.take(), Some(FaultKind::ServerError));
        assert_eq!(queue.take(), Some(FaultKind::Drop));
        assert_eq!(queue.take(), None);
    }

    #[test]
    fn fault_without_times_applies_until_cleared() {
        let mut queue = FaultQueue::default();
        queue.push("malformed".parse().unwrap());
        for _ in 0..50 {
            assert_eq!(queue.take(), Some(FaultKind::Malformed));
        }
        assert_eq!(queue.clear(), 1);
        assert_eq!(queue.take(), None);
    }
}
