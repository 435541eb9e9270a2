//! A digest of a set of job ids that both sides of a heartbeat can keep up to date one job at
//! a time: the XOR of each id's 64-bit fingerprint (the first 8 bytes of its SHA-256).
//!
//! A worker with 100,000 jobs cannot list them in every heartbeat (NATS caps a message at
//! 1 MiB), so it sends the count and this digest; data-streams compares it with the digest of
//! the jobs it recorded for that worker and asks for the list only when they differ. XOR makes
//! adding and removing one id O(1), and the same set gives the same digest in any order.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::JobId;

/// The digest of a set of job ids with how many there are; the empty set is zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct JobSetDigest {
    xor: u64,
    count: u64,
}

/// One id's fingerprint: the first 8 bytes of the SHA-256 of its text, big-endian.
pub fn fingerprint(job: &JobId) -> u64 {
    let hash = Sha256::digest(job.as_str().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(first)
}

impl JobSetDigest {
    /// The digest of `jobs`, each counted once however often it is given.
    pub fn of<'a>(jobs: impl IntoIterator<Item = &'a JobId>) -> Self {
        let unique: std::collections::BTreeSet<&JobId> = jobs.into_iter().collect();
        let mut digest = Self::default();
        for job in unique {
            digest.insert(job);
        }
        digest
    }

    /// Adds `job`, which must not be in the set already.
    pub fn insert(&mut self, job: &JobId) {
        self.xor ^= fingerprint(job);
        self.count += 1;
    }

    /// Removes `job`, which must be in the set.
    pub fn remove(&mut self, job: &JobId) {
        self.xor ^= fingerprint(job);
        self.count = self.count.saturating_sub(1);
    }

    /// How many ids the set holds.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The XOR of the fingerprints, as 16 lowercase hex digits on the wire.
    pub fn hash(&self) -> u64 {
        self.xor
    }

    /// A digest from its wire parts.
    pub fn from_parts(hash: u64, count: u64) -> Self {
        Self { xor: hash, count }
    }
}

impl fmt::Display for JobSetDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}/{}", self.xor, self.count)
    }
}

/// A digest's hash on the wire: exactly 16 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DigestHash(pub u64);

impl Serialize for DigestHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{:016x}", self.0))
    }
}

impl<'de> Deserialize<'de> for DigestHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        let valid =
            text.len() == 16 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !valid {
            return Err(serde::de::Error::custom(
                "a job-set digest is 16 lowercase hex digits",
            ));
        }
        u64::from_str_radix(&text, 16)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

impl JobSetDigest {
    /// The hash as the wire carries it.
    pub fn wire_hash(&self) -> DigestHash {
        DigestHash(self.xor)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn job(text: &str) -> JobId {
        JobId::parse(text).expect("valid id")
    }

    #[test]
    fn the_empty_set_is_zero() {
        assert_eq!(JobSetDigest::of([]).to_string(), "0000000000000000/0");
    }

    #[test]
    fn a_fingerprint_is_the_sha256_prefix() {
        // sha256("a") = ca978112ca1bbdca...
        assert_eq!(fingerprint(&job("a")), 0xca97_8112_ca1b_bdca);
    }

    #[test]
    fn the_wire_form_is_sixteen_hex_digits() {
        let hash = JobSetDigest::of([&job("a")]).wire_hash();
        let text = serde_json::to_string(&hash).expect("serializes");
        assert_eq!(text, r#""ca978112ca1bbdca""#);
        assert_eq!(serde_json::from_str::<DigestHash>(&text).ok(), Some(hash));
        for bad in [r#""CA978112CA1BBDCA""#, r#""ca97""#, "12"] {
            assert!(serde_json::from_str::<DigestHash>(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn updates_one_at_a_time_match_the_whole_set(
            ids in proptest::collection::btree_set("[a-z0-9]{1,12}", 0..40),
            drop_every in 1usize..5,
        ) {
            let ids: Vec<JobId> = ids.iter().map(|s| job(s)).collect();
            let mut running = JobSetDigest::default();
            for id in ids.iter().rev() {
                running.insert(id);
            }
            prop_assert_eq!(running, JobSetDigest::of(&ids));
            let mut kept = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                if i % drop_every == 0 {
                    running.remove(id);
                } else {
                    kept.push(id.clone());
                }
            }
            prop_assert_eq!(running, JobSetDigest::of(&kept));
        }
    }
}
