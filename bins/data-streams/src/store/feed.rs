//! The cross-job feed's keys: reversed publication time, read from a stored article without
//! decoding the rest of it.

use anyhow::Context as _;

/// Order-preserving map of a signed time to an unsigned key, reversed so newer sorts first.
pub(super) fn rev_time(unix_secs: i64) -> u64 {
    u64::MAX - (unix_secs as u64 ^ (1 << 63))
}

/// The inverse of [`rev_time`].
pub(super) fn from_rev_time(rev: u64) -> i64 {
    ((u64::MAX - rev) ^ (1 << 63)) as i64
}

/// The fields of a stored article the feed is keyed by, read without decoding the rest.
#[derive(serde::Deserialize)]
pub(super) struct FeedFields<'a> {
    #[serde(borrow)]
    pub(super) id: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    published_at: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    fetched_at: std::borrow::Cow<'a, str>,
}

impl FeedFields<'_> {
    /// The time the feed orders by, newest first: publication time, or fetch time when the
    /// publisher gave none (Unix seconds).
    pub(super) fn sort_time(&self) -> i64 {
        let parse = |text: &str| {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
        };
        self.published_at
            .as_deref()
            .and_then(parse)
            .or_else(|| parse(&self.fetched_at))
            .map_or(0, |t| t.unix_timestamp())
    }
}

pub(super) fn hex_id(text: &str) -> anyhow::Result<[u8; 16]> {
    let text = text.as_bytes();
    let mut out = [0u8; 16];
    anyhow::ensure!(text.len() == 32, "an article id is not 32 hex digits");
    for (i, pair) in text.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).context("article id")?;
        out[i] = u8::from_str_radix(s, 16).context("article id")?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reversed_times_sort_newest_first_and_round_trip() {
        for (older, newer) in [(-5i64, 3i64), (0, 1), (1_700_000_000, 1_800_000_000)] {
            assert!(rev_time(newer) < rev_time(older));
            assert_eq!(from_rev_time(rev_time(older)), older);
        }
    }
}
