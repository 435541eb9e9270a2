//! Reads for the HTTP API: pages of a batch's articles, a job's batches, the cross-job feed.

use std::ops::Bound;

use anyhow::Context as _;
use newsflow_core::{Article, BatchId, JobId};

use super::feed::from_rev_time;
use super::{article_key, batch_key, decode, job_prefix, prefix_end, BatchRecord, Store};

/// A stored JSON value as the store hands it out, without a copy (the rest of data-streams
/// never names sled).
pub type StoredJson = sled::IVec;

/// A page of stored article JSON values, and the key the next page starts after.
#[derive(Debug, Default)]
pub struct ArticlePage {
    /// The articles' HTTP JSON, in order.
    pub articles: Vec<StoredJson>,
    /// Where the next page starts (exclusive), when there is one.
    pub next: Option<Vec<u8>>,
}

/// Filters of `GET /articles`.
#[derive(Debug, Default, Clone)]
pub struct FeedFilter {
    /// Only this job's articles.
    pub job: Option<JobId>,
    /// Only articles published at or after this time (Unix seconds).
    pub since: Option<i64>,
    /// Only articles whose title, description or content contains this (lowercase).
    pub q: Option<String>,
}

/// The most feed entries one request looks at before returning what it has (with a cursor
/// to go on), so a filter that matches little never makes a request scan the whole store.
const MAX_FEED_SCAN: usize = 20_000;

impl Store {
    /// A page of a batch's articles in seq order, starting after `after_seq`.
    pub fn batch_articles(
        &self,
        job: &JobId,
        batch: BatchId,
        after_seq: Option<u32>,
        limit: usize,
    ) -> anyhow::Result<ArticlePage> {
        let _call = self.watched("batch articles");
        let prefix = batch_key(job, batch);
        let start = match after_seq {
            Some(seq) => Bound::Excluded(article_key(job, batch, seq)),
            None => Bound::Included(prefix.clone()),
        };
        let mut page = ArticlePage::default();
        let mut last_seq = None;
        for entry in self
            .articles
            .range((start, Bound::Excluded(prefix_end(&prefix))))
        {
            let (key, value) = entry.context("reading a batch's articles")?;
            if page.articles.len() == limit {
                page.next = last_seq;
                break;
            }
            page.articles.push(value);
            last_seq = key.get(key.len().saturating_sub(4)..).map(<[u8]>::to_vec);
        }
        Ok(page)
    }

    /// How many articles of a batch are stored.
    pub fn count_batch_articles(&self, job: &JobId, batch: BatchId) -> u32 {
        let _call = self.watched("count batch articles");
        let prefix = batch_key(job, batch);
        self.articles
            .range(prefix.clone()..prefix_end(&prefix))
            .keys()
            .count() as u32
    }

    /// One batch's record.
    pub fn batch(&self, job: &JobId, batch: BatchId) -> anyhow::Result<Option<BatchRecord>> {
        let _call = self.watched("batch");
        self.batches
            .get(batch_key(job, batch))
            .context("reading a batch")?
            .map(|v| decode(&v, "batch"))
            .transpose()
    }

    /// The job's newest batch (by start time), complete or not.
    pub fn newest_batch(&self, job: &JobId) -> anyhow::Result<Option<BatchId>> {
        let _call = self.watched("newest batch");
        let prefix = job_prefix(job);
        match self
            .batches
            .range(prefix.clone()..prefix_end(&prefix))
            .next_back()
        {
            Some(entry) => {
                let (key, _) = entry.context("reading a job's batches")?;
                Ok(Some(batch_from_key(&key, prefix.len())?))
            }
            None => Ok(None),
        }
    }

    /// Up to `limit` of a job's batches, newest first, older than `before`; and whether more follow.
    pub fn batches_page(
        &self,
        job: &JobId,
        before: Option<BatchId>,
        limit: usize,
    ) -> anyhow::Result<(Vec<(BatchId, BatchRecord)>, bool)> {
        let _call = self.watched("batches page");
        let prefix = job_prefix(job);
        let end = match before {
            Some(batch) => Bound::Excluded(batch_key(job, batch)),
            None => Bound::Excluded(prefix_end(&prefix)),
        };
        let mut batches = Vec::with_capacity(limit.min(1024));
        for entry in self
            .batches
            .range((Bound::Included(prefix.clone()), end))
            .rev()
        {
            let (key, value) = entry.context("reading a job's batches")?;
            if batches.len() == limit {
                return Ok((batches, true));
            }
            batches.push((
                batch_from_key(&key, prefix.len())?,
                decode(&value, "batch")?,
            ));
        }
        Ok((batches, false))
    }

    /// A page of the feed: newest first, unique by URL, filtered; `after` is the cursor key.
    pub fn feed_page(
        &self,
        filter: &FeedFilter,
        after: Option<&[u8]>,
        limit: usize,
    ) -> anyhow::Result<ArticlePage> {
        let _call = self.watched("feed page");
        let iter = match after {
            Some(after) => self.feed.range(prefix_end(after)..),
            None => self.feed.iter(),
        };
        let mut page = ArticlePage::default();
        let mut last_id: Option<[u8; 24]> = None;
        for (scanned, entry) in iter.enumerate() {
            let (key, value) = entry.context("reading the feed")?;
            let Some(position) = key.get(..24).and_then(|p| <[u8; 24]>::try_from(p).ok()) else {
                continue;
            };
            if scanned >= MAX_FEED_SCAN {
                page.next = last_id
                    .map(|p| p.to_vec())
                    .or_else(|| Some(position.to_vec()));
                return Ok(page);
            }
            let rev = u64::from_be_bytes(position[..8].try_into().context("feed key")?);
            if filter.since.is_some_and(|since| from_rev_time(rev) < since) {
                return Ok(page);
            }
            if last_id.is_some_and(|last| last[8..] == position[8..]) {
                continue;
            }
            if let Some(job) = &filter.job {
                if &key[24..] != job.as_str().as_bytes() {
                    continue;
                }
            }
            // The feed holds the key of the stored article, not a copy of it.
            let Some(value) = self
                .articles
                .get(&value)
                .context("reading a feed article")?
            else {
                continue;
            };
            if let Some(q) = &filter.q {
                let article: Article = decode(&value, "article")?;
                if !article.matches_text(q) {
                    continue;
                }
            }
            if page.articles.len() == limit {
                page.next = last_id.map(|p| p.to_vec());
                return Ok(page);
            }
            page.articles.push(value);
            last_id = Some(position);
        }
        Ok(page)
    }
}

fn batch_from_key(key: &[u8], prefix_len: usize) -> anyhow::Result<BatchId> {
    let bytes: [u8; 16] = key
        .get(prefix_len..prefix_len + 16)
        .and_then(|b| b.try_into().ok())
        .context("a batch key is malformed")?;
    Ok(BatchId::from_bytes(bytes))
}

impl Store {
    /// A page of dead letters, oldest first, after the key `after`.
    pub fn dead_letters_page(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> anyhow::Result<(Vec<super::DeadLetter>, Option<Vec<u8>>)> {
        let _call = self.watched("dead letters page");
        let range = match after {
            Some(after) => self
                .dead_letters
                .range::<&[u8], _>((Bound::Excluded(after), Bound::Unbounded)),
            None => self.dead_letters.iter(),
        };
        let mut letters = Vec::new();
        let mut last = None;
        for entry in range {
            let (key, value) = entry.context("reading dead letters")?;
            if letters.len() == limit {
                return Ok((letters, last));
            }
            letters.push(decode(&value, "dead letter")?);
            last = Some(key.to_vec());
        }
        Ok((letters, None))
    }
}
