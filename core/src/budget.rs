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
//!
//! **Bounded size.** The ledger is one key-value entry, written back on every request, so its
//! size must not grow with the jobs or the budget (NATS refuses a value over its payload limit,
//! 1 MiB by default, and then no request could be admitted at all):
//! - the cap counts every job's requests together, one stamp per granule: at most
//!   [`MAX_GRANULES`] + 2 stamps (the window, the sending slack and the granule rounded up);
//! - a job's own use (for its fair share only) is kept in parts of the window no finer than a
//!   granule, at most [`USE_PARTS`] + 2 stamps per job (a part of a 12-hour window is 11
//!   minutes: a request counts that much longer in its job's share, 1.6% of the window);
//! - at most [`MAX_ASKERS`] jobs are remembered as asking. A job that asks when the ledger is
//!   full takes the place of the job that waited least (the one served most recently); if every
//!   remembered job waited longer than it, it is not remembered and its run does not start yet
//!   (it is last in line). Its requests still count against the cap, and a run in progress of a
//!   job no longer remembered meets the cap only, so it finishes.
//!
//! At these bounds, with 64-byte job ids and every number at its largest, the ledger is 707 KiB
//! as JSON (a test checks it stays under 750 KiB); about 430 KiB with realistic numbers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest time between admitting a request and NewsAPI receiving it that the cap allows for.
pub const SEND_SLACK_MS: u64 = 1_000;

/// A window is cut into at most this many granules; the cap's stamps are rounded up to one, so
/// a ledger holds at most this many of them (plus two) whatever the budget.
pub const MAX_GRANULES: u64 = 256;

/// A window is cut into at most this many parts, no shorter than a granule, to stamp a job's
/// own use: a remembered job holds at most this many stamps plus two.
pub const USE_PARTS: u64 = 64;

/// Jobs remembered as asking at once (their wait and their use, for fair shares).
pub const MAX_ASKERS: usize = 256;

/// The ledger of one key, as stored (JSON) in the shared bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Requests allowed per window, as the last writer configured it.
    pub budget: u32,
    /// The window, in seconds, as the last writer configured it.
    pub window_secs: u64,
    /// Requests of every job admitted whose window has not ended, oldest first: what the cap
    /// counts.
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// Jobs that asked recently, by job id: what they plan to use, and used.
    #[serde(default)]
    pub asks: BTreeMap<String, Asker>,
}

/// Requests stamped at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The latest moment they reach NewsAPI (ms since the epoch), rounded up.
    pub at_ms: u64,
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
    /// Its own requests whose window has not ended, stamped in parts of the window.
    #[serde(default)]
    pub used: Vec<Grant>,
}

impl Asker {
    /// Whether this asker has waited longer for a run than `other`: it was served less
    /// recently, or neither was served and it asked first.
    fn waited_longer_than(&self, other: &Asker) -> bool {
        self.wait_rank() < other.wait_rank()
    }

    /// The lower, the longer it waited.
    fn wait_rank(&self) -> (u64, u64) {
        (self.served_ms, self.first_ask_ms)
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
        let counted = |grant: &Grant| grant.at_ms.saturating_add(window) > now_ms;
        self.grants.retain(counted);
        self.asks.retain(|_, asker| {
            asker.used.retain(counted);
            asker.live_until_ms > now_ms
        });
    }

    /// Requests counted in the window ending at `now_ms`.
    pub fn used(&self, now_ms: u64) -> u64 {
        self.counted(&self.grants, now_ms)
    }

    /// The requests of `stamps` counted in the window ending at `now_ms`.
    fn counted(&self, stamps: &[Grant], now_ms: u64) -> u64 {
        let window = self.window_ms();
        stamps
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
        let remembered = match self.remember(ask.job, now_ms) {
            Some(asker) => {
                asker.live_until_ms = live_until_ms;
                asker.demand = demand;
                true
            }
            None => false,
        };
        let used = self.used(now_ms);
        let budget = u64::from(self.budget);
        if used >= budget {
            return Err(Exhausted {
                cap_reached: true,
                returns_at_ms: self.resets_at_ms(now_ms).unwrap_or(now_ms),
            });
        }
        let admitted = match (remembered, ask.kind) {
            (true, _) => self.fair_to_admit(ask, budget - used, now_ms),
            // Last in line: every remembered job waited longer.
            (false, Kind::RunStart) => false,
            // A run in progress of a job the ledger had to forget: it finishes.
            (false, Kind::InRun) => true,
        };
        if !admitted {
            return Err(Exhausted {
                cap_reached: false,
                returns_at_ms: self.first_expiry_of(ask.job, now_ms),
            });
        }
        self.stamp(ask, now_ms);
        Ok(())
    }

    /// `job`'s entry among the askers, made if need be; `None` when the ledger is full of
    /// jobs that all waited longer than it (see the module's "Bounded size").
    fn remember(&mut self, job: &str, now_ms: u64) -> Option<&mut Asker> {
        if !self.asks.contains_key(job) {
            let newcomer = Asker {
                live_until_ms: now_ms,
                demand: 0,
                served_ms: 0,
                first_ask_ms: now_ms,
                used: Vec::new(),
            };
            if self.asks.len() >= MAX_ASKERS {
                let waited_least = self
                    .asks
                    .iter()
                    .max_by_key(|(_, asker)| asker.wait_rank())
                    .filter(|(_, asker)| newcomer.waited_longer_than(asker))
                    .map(|(other, _)| other.clone())?;
                self.asks.remove(&waited_least);
            }
            self.asks.insert(job.to_owned(), newcomer);
        }
        self.asks.get_mut(job)
    }

    /// Whether `ask` may take one of the `free` requests left under the cap.
    ///
    /// A job under its fair share may, unless as many jobs under theirs have waited longer for
    /// a run (for a run's first request only: they go first). A job at or over its share may
    /// only if a whole request is left once the other jobs' unused shares are set aside.
    fn fair_to_admit(&self, ask: Ask<'_>, free: u64, now_ms: u64) -> bool {
        let shares = fair_shares(&self.asks, u64::from(self.budget));
        let used: BTreeMap<&str, u64> = self
            .asks
            .iter()
            .map(|(job, asker)| (job.as_str(), self.counted(&asker.used, now_ms)))
            .collect();
        let used_by = |job: &str| used.get(job).copied().unwrap_or(0) as f64;
        let under_share = |job: &str| used_by(job) < shares.get(job).copied().unwrap_or(0.0);
        if !under_share(ask.job) {
            let held: f64 = shares
                .iter()
                .filter(|(other, _)| other.as_str() != ask.job)
                .map(|(other, share)| (share - used_by(other)).max(0.0))
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

    /// When `job`'s own oldest request leaves the window (its share frees up then), else when
    /// anyone's does.
    fn first_expiry_of(&self, job: &str, now_ms: u64) -> u64 {
        let window = self.window_ms();
        let own = self
            .asks
            .get(job)
            .and_then(|asker| asker.used.iter().map(|grant| grant.at_ms).min())
            .map(|at_ms| at_ms.saturating_add(window));
        own.or_else(|| self.resets_at_ms(now_ms)).unwrap_or(now_ms)
    }

    fn granule_ms(&self) -> u64 {
        (self.window_ms() / MAX_GRANULES).max(1_000)
    }

    /// Stamps one request of `ask` admitted at `now_ms`: for the cap, and in its job's own use;
    /// on a run's first request, the job was served.
    fn stamp(&mut self, ask: Ask<'_>, now_ms: u64) {
        let latest = now_ms.saturating_add(SEND_SLACK_MS);
        let granule = self.granule_ms();
        add(&mut self.grants, latest.div_ceil(granule) * granule);
        let part = granule.max(self.window_ms() / USE_PARTS);
        if let Some(asker) = self.asks.get_mut(ask.job) {
            add(&mut asker.used, latest.div_ceil(part) * part);
            if ask.kind == Kind::RunStart {
                asker.served_ms = now_ms;
            }
        }
    }
}

/// Counts one more request stamped `at_ms` (usually the newest stamp; workers' clocks may
/// differ a little, so it is looked for from the newest back).
fn add(stamps: &mut Vec<Grant>, at_ms: u64) {
    match stamps.iter_mut().rev().find(|grant| grant.at_ms == at_ms) {
        Some(grant) => grant.n = grant.n.saturating_add(1),
        None => stamps.push(Grant { at_ms, n: 1 }),
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
