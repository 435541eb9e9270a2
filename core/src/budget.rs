//! The request budget of one NewsAPI key, shared by every worker that uses the key: a ledger
//! of the requests sent in the last window, and the rule that admits the next one.
//!
//! Workers keep the ledger in a key-value store and change it by compare-and-set, so this
//! module only decides; time is passed in (milliseconds since the Unix epoch).
//!
//! Two rules:
//! - **The cap.** In any window of `window_ms`, at most `budget` requests. Each request is
//!   stamped with the latest moment it can reach NewsAPI (the time it was admitted plus
//!   [`SEND_SLACK_MS`], rounded up to the ledger's granule), and a request is admitted at `now`
//!   only while fewer than `budget` stamps are later than `now - window_ms`. Stamps never
//!   fall before the real sending time, so the cap holds for real sending times too.
//! - **Fair share.** A run's first request is admitted only if it leaves enough of the budget
//!   for every other job that asked recently to reach its fair share: the max-min share of the
//!   budget, given what each job plans to ask for in a window (its pages times the runs that fit
//!   in one window). A job never starves behind greedier ones; a quiet job's share is not wasted
//!   on it beyond what it plans to use. The pages after a run's first one only meet the cap, so
//!   a run that started normally finishes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest time between admitting a request and NewsAPI receiving it that the cap allows for.
pub const SEND_SLACK_MS: u64 = 1_000;

/// A window is cut into at most this many granules; stamps are rounded up to one, so a ledger
/// holds at most this many stamps per job whatever the budget.
pub const MAX_GRANULES: u64 = 256;

/// The ledger of one key, as stored (JSON) in the shared bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Requests allowed per window, as the last writer configured it.
    pub budget: u32,
    /// The window, in seconds, as the last writer configured it.
    pub window_secs: u64,
    /// Requests admitted whose window has not ended, oldest first.
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// Jobs that asked recently, by job id: what they plan to use.
    #[serde(default)]
    pub asks: BTreeMap<String, Asker>,
}

/// Requests of one job stamped in one granule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The latest moment they reach NewsAPI (ms since the epoch).
    pub at_ms: u64,
    /// The job that sent them.
    pub job: String,
    /// How many.
    pub n: u32,
}

/// A job that asked recently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asker {
    /// Until when it counts as wanting its share (it asks again before then while it runs).
    pub live_until_ms: u64,
    /// Requests it plans per window.
    pub demand: u64,
    /// When a run of it last started (0: none since it began asking).
    #[serde(default)]
    pub served_ms: u64,
    /// When it began asking.
    #[serde(default)]
    pub first_ask_ms: u64,
}

impl Asker {
    /// Whether this asker has waited longer for a run than `other`: it was served less
    /// recently, or neither was served and it asked first.
    fn waited_longer_than(&self, other: &Asker) -> bool {
        (self.served_ms, self.first_ask_ms) < (other.served_ms, other.first_ask_ms)
    }
}

/// What a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The first request of a run: meets the cap and the fair share.
    RunStart,
    /// A later page or a retry of a run in progress: meets the cap only.
    InRun,
}

/// A request for one admission.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The asking job.
    pub job: &'a str,
    /// Its pages per run.
    pub pages: u32,
    /// Its interval.
    pub interval_ms: u64,
    /// What the request is.
    pub kind: Kind,
}

/// Why a request was not admitted, and when asking again may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    /// Whether the cap itself is reached (else: the rest is held for other jobs' shares).
    pub cap_reached: bool,
    /// When the first request counted against this one leaves the window (ms since the epoch).
    pub returns_at_ms: u64,
}

impl Ledger {
    /// An empty ledger for `budget` requests per `window_secs`.
    pub fn new(budget: u32, window_secs: u64) -> Self {
        Self {
            budget,
            window_secs,
            grants: Vec::new(),
            asks: BTreeMap::new(),
        }
    }

    fn window_ms(&self) -> u64 {
        self.window_secs.saturating_mul(1000)
    }

    /// Forgets requests whose window has ended and askers that stopped asking.
    pub fn prune(&mut self, now_ms: u64) {
        let window = self.window_ms();
        self.grants
            .retain(|grant| grant.at_ms.saturating_add(window) > now_ms);
        self.asks.retain(|_, asker| asker.live_until_ms > now_ms);
    }

    /// Requests counted in the window ending at `now_ms`.
    pub fn used(&self, now_ms: u64) -> u64 {
        let window = self.window_ms();
        self.grants
            .iter()
            .filter(|grant| grant.at_ms.saturating_add(window) > now_ms)
            .map(|grant| u64::from(grant.n))
            .sum()
    }

    /// When the oldest counted request leaves the window; `None` when none is counted.
    pub fn resets_at_ms(&self, now_ms: u64) -> Option<u64> {
        let window = self.window_ms();
        self.grants
            .iter()
            .map(|grant| grant.at_ms.saturating_add(window))
            .filter(|end| *end > now_ms)
            .min()
    }

    /// Records that `ask.job` asks at `now_ms` and admits one request, stamping it, or says why
    /// not. The asker is recorded either way, so other jobs leave room for its share.
    pub fn take(&mut self, ask: Ask<'_>, now_ms: u64) -> Result<(), Exhausted> {
        self.prune(now_ms);
        // A stamp holds its request up to a slack and a granule past the window.
        let held_for = self.window_ms() + SEND_SLACK_MS + self.granule_ms();
        let demand = planned_requests(ask.pages, ask.interval_ms, held_for);
        // Asking again is due one interval on; twice that (and a little) means it stopped.
        let live_until_ms = now_ms
            .saturating_add(ask.interval_ms.saturating_mul(2))
            .saturating_add(5_000);
        let asker = self
            .asks
            .entry(ask.job.to_owned())
            .or_insert_with(|| Asker {
                live_until_ms,
                demand,
                served_ms: 0,
                first_ask_ms: now_ms,
            });
        asker.live_until_ms = live_until_ms;
        asker.demand = demand;
        let used = self.used(now_ms);
        let budget = u64::from(self.budget);
        if used >= budget {
            return Err(Exhausted {
                cap_reached: true,
                returns_at_ms: self.resets_at_ms(now_ms).unwrap_or(now_ms),
            });
        }
        if !self.fair_to_admit(ask, budget - used) {
            return Err(Exhausted {
                cap_reached: false,
                returns_at_ms: self.first_expiry_of(ask.job, now_ms),
            });
        }
        if ask.kind == Kind::RunStart {
            if let Some(asker) = self.asks.get_mut(ask.job) {
                asker.served_ms = now_ms;
            }
        }
        self.stamp(ask.job, now_ms);
        Ok(())
    }

    /// Whether `ask` may take one of the `free` requests left under the cap.
    ///
    /// A job under its fair share may, unless as many jobs under theirs have waited longer for
    /// a run (for a run's first request only: they go first). A job at or over its share may
    /// only if a whole request is left once the other jobs' unused shares are set aside.
    fn fair_to_admit(&self, ask: Ask<'_>, free: u64) -> bool {
        let shares = fair_shares(&self.asks, u64::from(self.budget));
        let under_share =
            |job: &str| (self.used_by(job) as f64) < shares.get(job).copied().unwrap_or(0.0);
        if !under_share(ask.job) {
            let held: f64 = shares
                .iter()
                .filter(|(other, _)| other.as_str() != ask.job)
                .map(|(other, share)| (share - self.used_by(other) as f64).max(0.0))
                .sum();
            return free as f64 - held >= 1.0;
        }
        let Some(me) = self.asks.get(ask.job) else {
            return true;
        };
        if ask.kind == Kind::InRun {
            return true;
        }
        let waited_longer = self
            .asks
            .iter()
            .filter(|(other, asker)| {
                other.as_str() != ask.job && asker.waited_longer_than(me) && under_share(other)
            })
            .count() as u64;
        waited_longer < free
    }

    fn used_by(&self, job: &str) -> u64 {
        self.grants
            .iter()
            .filter(|grant| grant.job == job)
            .map(|grant| u64::from(grant.n))
            .sum()
    }

    /// When `job`'s own oldest request leaves the window (its share frees up then), else when
    /// anyone's does.
    fn first_expiry_of(&self, job: &str, now_ms: u64) -> u64 {
        let window = self.window_ms();
        let own = self
            .grants
            .iter()
            .filter(|grant| grant.job == job)
            .map(|grant| grant.at_ms.saturating_add(window))
            .min();
        own.or_else(|| self.resets_at_ms(now_ms)).unwrap_or(now_ms)
    }

    fn granule_ms(&self) -> u64 {
        (self.window_ms() / MAX_GRANULES).max(1_000)
    }

    fn stamp(&mut self, job: &str, now_ms: u64) {
        let granule = self.granule_ms();
        let latest = now_ms.saturating_add(SEND_SLACK_MS);
        let at_ms = latest.div_ceil(granule).saturating_mul(granule);
        if let Some(grant) = self
            .grants
            .iter_mut()
            .rev()
            .find(|grant| grant.job == job && grant.at_ms == at_ms)
        {
            grant.n = grant.n.saturating_add(1);
            return;
        }
        self.grants.push(Grant {
            at_ms,
            job: job.to_owned(),
            n: 1,
        });
    }
}

/// Requests a job plans per window: its pages times the runs that start in one window.
pub fn planned_requests(pages: u32, interval_ms: u64, window_ms: u64) -> u64 {
    let runs = window_ms.div_ceil(interval_ms.max(1)).max(1);
    u64::from(pages).saturating_mul(runs)
}

/// Max-min fair shares of `budget` among `asks`: jobs that plan to use less than an equal split
/// get what they plan; the rest is split equally among the others. Shares are fractions: with
/// more jobs than requests, each job's share is under one request, and the jobs take turns.
pub fn fair_shares(asks: &BTreeMap<String, Asker>, budget: u64) -> BTreeMap<String, f64> {
    let mut by_demand: Vec<(&String, u64)> = asks
        .iter()
        .map(|(job, asker)| (job, asker.demand))
        .collect();
    by_demand.sort_by_key(|(_, demand)| *demand);
    let mut left = budget as f64;
    let mut shares = BTreeMap::new();
    let count = by_demand.len();
    for (taken, (job, demand)) in by_demand.into_iter().enumerate() {
        let equal = left / (count - taken) as f64;
        let share = (demand as f64).min(equal);
        left -= share;
        shares.insert(job.clone(), share);
    }
    shares
}

/// The fingerprint a key is known by in the shared bucket and in `GET /quota`: the first 16 hex
/// digits of its SHA-256. A NewsAPI key is 128 random bits, so this reveals nothing usable.
pub fn fingerprint(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests;
