//! Identifiers, parsed once at the edge.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ValidationError;

/// A job id: `[a-z0-9][a-z0-9_-]{0,63}`. Safe to use as a NATS subject token and a sled key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(String);

impl JobId {
    /// The longest id accepted.
    pub const MAX_LEN: usize = 64;

    /// Parses a user-supplied id.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let bytes = raw.as_bytes();
        let first_ok = bytes
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let rest_ok = bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-');
        if first_ok && rest_ok && bytes.len() <= Self::MAX_LEN {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ValidationError::new(
                "id",
                "invalid_id",
                format!(
                    "job id {:?} must match [a-z0-9][a-z0-9_-]{{0,63}}: 1 to 64 lowercase letters, digits, '_' or '-', starting with a letter or digit",
                    truncate_for_message(raw)
                ),
            ))
        }
    }

    /// A fresh id for a job created without one: `job-` and a lowercase ULID.
    pub fn generate() -> Self {
        Self(format!(
            "job-{}",
            ulid::Ulid::new().to_string().to_ascii_lowercase()
        ))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for JobId {
    type Error = ValidationError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> Self {
        id.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for JobId {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A batch id: a ULID, so batch ids sort by the time the batch started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BatchId(ulid::Ulid);

impl BatchId {
    /// A new id for a batch starting now.
    pub fn generate() -> Self {
        Self(ulid::Ulid::new())
    }

    /// Parses the canonical 26-character ULID text.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        ulid::Ulid::from_string(raw).map(Self).map_err(|_| {
            ValidationError::new(
                "batch_id",
                "invalid_batch_id",
                format!(
                    "batch id {:?} is not a ULID (26 Crockford base32 characters)",
                    truncate_for_message(raw)
                ),
            )
        })
    }

    /// The 16 big-endian bytes of the ULID: sorts like the text, half the size as a key.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0 .0.to_be_bytes()
    }

    /// Rebuilds an id from [`BatchId::to_bytes`].
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(ulid::Ulid(u128::from_be_bytes(bytes)))
    }

    /// Milliseconds since the Unix epoch at which the batch started.
    pub fn timestamp_ms(self) -> u64 {
        self.0.timestamp_ms()
    }

    /// Builds an id with a given start time (tests and tombstone comparisons).
    pub fn from_parts(timestamp_ms: u64, random: u128) -> Self {
        Self(ulid::Ulid::from_parts(timestamp_ms, random))
    }
}

impl TryFrom<String> for BatchId {
    type Error = ValidationError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<BatchId> for String {
    fn from(id: BatchId) -> Self {
        id.0.to_string()
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for BatchId {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// An article id: the first 16 bytes of the SHA-256 of its URL, as 32 hex digits. The same
/// URL gives the same id in every job and batch, which is what "unique by URL" keys on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ArticleId(String);

impl ArticleId {
    /// The id of the article at `url`.
    pub fn from_url(url: &str) -> Self {
        let digest = Sha256::digest(url.as_bytes());
        Self(crate::cursor::hex_encode(&digest[..16]))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ArticleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Cuts user input down to a size fit for an error message.
pub(crate) fn truncate_for_message(raw: &str) -> String {
    truncate_chars(raw, 80)
}

/// `text` cut to at most `max` characters, with `…` marking a cut.
pub(crate) fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        text.chars().take(max).chain(std::iter::once('…')).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_follow_the_contract_pattern() {
        for ok in ["a", "bitcoin", "0x", "a_b-c", &"a".repeat(64)] {
            assert!(JobId::parse(ok).is_ok(), "{ok} should be accepted");
        }
        for bad in [
            "",
            "_a",
            "-a",
            "A",
            "a.b",
            "a b",
            "a>",
            "a*",
            &"a".repeat(65),
            "é",
        ] {
            let err = JobId::parse(bad).expect_err(bad);
            assert_eq!(err.code, "invalid_id");
        }
    }

    #[test]
    fn generated_job_ids_are_valid_and_unique() {
        let a = JobId::generate();
        let b = JobId::generate();
        assert_ne!(a, b);
        assert!(JobId::parse(a.as_str()).is_ok());
    }

    #[test]
    fn batch_ids_round_trip_and_sort_by_start_time() {
        let early = BatchId::from_parts(1_000, 99);
        let late = BatchId::from_parts(2_000, 1);
        assert!(early < late);
        assert!(early.to_bytes() < late.to_bytes());
        assert_eq!(BatchId::from_bytes(late.to_bytes()), late);
        assert_eq!(BatchId::parse(&late.to_string()), Ok(late));
        assert!(BatchId::parse("not-a-ulid").is_err());
    }

    #[test]
    fn article_ids_depend_only_on_the_url() {
        let a = ArticleId::from_url("https://example.com/a");
        assert_eq!(a, ArticleId::from_url("https://example.com/a"));
        assert_ne!(a, ArticleId::from_url("https://example.com/b"));
        assert_eq!(a.as_str().len(), 32);
    }
}
