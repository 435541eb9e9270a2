//! Percentiles: a sorted sample and nearest-rank look-ups, enough for latencies.

use serde::Serialize;

/// The value at percentile `p` (0..=100) of `sorted` by nearest rank; `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The percentiles a latency distribution is drawn with.
pub const DISTRIBUTION_POINTS: [f64; 12] = [
    1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 100.0,
];

/// A latency distribution: `(percentile, value)` at [`DISTRIBUTION_POINTS`].
pub type Distribution = Vec<(f64, f64)>;

/// The distribution of `sorted` at [`DISTRIBUTION_POINTS`] (empty when `sorted` is).
pub fn distribution(sorted: &[f64]) -> Distribution {
    DISTRIBUTION_POINTS
        .iter()
        .filter_map(|&p| Some((p, percentile(sorted, p)?)))
        .collect()
}

/// The median of `values` (the lower middle one of an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile(&sorted, 50.0)
}

/// A sample summed up.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// How many values.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// The whole distribution.
    pub distribution: Distribution,
}

/// Sums up `values`; `None` when there are none.
pub fn summarize(mut values: Vec<f64>) -> Option<Summary> {
    values.sort_by(f64::total_cmp);
    Some(Summary {
        count: values.len(),
        p50: percentile(&values, 50.0)?,
        p99: percentile(&values, 99.0)?,
        max: *values.last()?,
        mean: values.iter().sum::<f64>() / values.len() as f64,
        distribution: distribution(&values),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_of_a_hundred_values() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(50.0));
        assert_eq!(percentile(&values, 99.0), Some(99.0));
        assert_eq!(percentile(&values, 100.0), Some(100.0));
        assert_eq!(percentile(&values, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn a_summary_sorts_its_sample_first() {
        let summary = summarize(vec![3.0, 1.0, 2.0]).expect("not empty");
        assert_eq!((summary.p50, summary.p99, summary.max), (2.0, 3.0, 3.0));
        assert!((summary.mean - 2.0).abs() < 1e-9);
        assert!(summarize(Vec::new()).is_none());
    }

    #[test]
    fn medians_and_distributions() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.0));
        assert_eq!(median(&[]), None);
        let values: Vec<f64> = (1..=1000).map(f64::from).collect();
        let drawn = distribution(&values);
        assert_eq!(drawn.len(), DISTRIBUTION_POINTS.len());
        assert_eq!(drawn[4], (50.0, 500.0));
        assert_eq!(drawn.last(), Some(&(100.0, 1000.0)));
        assert!(drawn.windows(2).all(|w| w[0].1 <= w[1].1), "{drawn:?}");
    }
}
