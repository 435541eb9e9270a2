//! The NewsAPI request budgets the workers share: `GET /quota`, and the `over_budget` warning a
//! create or start answers with when the running jobs plan more requests than a budget allows.

use axum::extract::State;
use axum::Json;
use newsflow_core::budget::{planned_requests, Ledger};
use newsflow_core::unix_ms;

use super::error::{AppError, ErrorBody};
use super::views::{KeyQuota, QuotaView, Warning};
use super::AppState;

/// Each NewsAPI key's request budget, from the count every worker on the key shares.
#[utoipa::path(get, path = "/quota", tag = "ops",
    responses(
        (status = 200, description = "One entry per key a worker uses with a budget, by fingerprint", body = QuotaView),
        (status = 401, body = ErrorBody),
        (status = 503, description = "The shared counts cannot be read (NATS is down)", body = ErrorBody),
    ))]
pub async fn quota(State(state): State<AppState>) -> Result<Json<QuotaView>, AppError> {
    let ledgers = current_ledgers(&state)?;
    let now = newsflow_core::now_utc();
    let now_ms = unix_ms(now);
    let mut keys: Vec<KeyQuota> = ledgers
        .into_iter()
        .map(|(fingerprint, ledger)| KeyQuota {
            fingerprint,
            budget: ledger.budget,
            window_secs: ledger.window_secs,
            used: ledger.used(now_ms),
            resets_at: ledger.resets_at_ms(now_ms).map(newsflow_core::from_unix_ms),
        })
        .collect();
    keys.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
    Ok(Json(QuotaView { keys }))
}

/// The `over_budget` warnings for the jobs running now: one per key whose budget is smaller
/// than what they plan per window (pages × window / interval, summed). No key known, no warning.
pub fn warnings(state: &AppState) -> Result<Vec<Warning>, AppError> {
    let ledgers = state.shared.budgets.all();
    if ledgers.is_empty() {
        return Ok(Vec::new());
    }
    // From the index's running aggregate: a handful of plan shapes, not a record per job.
    let running: Vec<(u32, u64, u64)> = state.shared.store.job_index().running_plans().collect();
    let mut warnings: Vec<(String, Warning)> = ledgers
        .into_iter()
        .filter_map(|(fingerprint, ledger)| {
            over_budget(&fingerprint, &ledger, &running).map(|w| (fingerprint, w))
        })
        .collect();
    warnings.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(warnings.into_iter().map(|(_, warning)| warning).collect())
}

/// `running` is `(max_pages, interval_ms, how many jobs)` of the running jobs.
fn over_budget(fingerprint: &str, ledger: &Ledger, running: &[(u32, u64, u64)]) -> Option<Warning> {
    let window_ms = ledger.window_secs.saturating_mul(1000);
    let planned: u64 = running
        .iter()
        .map(|&(pages, interval_ms, jobs)| {
            planned_requests(pages, interval_ms, window_ms).saturating_mul(jobs)
        })
        .sum();
    let jobs: u64 = running.iter().map(|&(_, _, jobs)| jobs).sum();
    (ledger.budget > 0 && planned > u64::from(ledger.budget)).then(|| Warning {
        code: "over_budget".to_owned(),
        message: format!(
            "the {} running job(s) plan {planned} NewsAPI requests per {} s, but the request budget of key {fingerprint} is {}: runs will be skipped in turn (each job keeps a fair share) until intervals are longer or max_pages lower (see the README, \"Sizing intervals\")",
            jobs,
            ledger.window_secs,
            ledger.budget
        ),
    })
}

/// The ledgers, or 503 when the copy of them is not current.
fn current_ledgers(state: &AppState) -> Result<Vec<(String, Ledger)>, AppError> {
    if !state.shared.nats_connected() || !state.shared.budgets.is_current() {
        return Err(AppError::NotReady(
            "the shared request counts cannot be read: NATS is not connected".to_owned(),
        ));
    }
    Ok(state.shared.budgets.all())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_planning_more_than_the_budget_get_a_warning_naming_the_key_and_figures() {
        let ledger = Ledger::new(50, 43_200);
        // Two jobs at the default 5 minutes, one page: 144 requests each per 12 hours.
        let running = [(1, 300_000, 2)];

        let warning = over_budget("0123456789abcdef", &ledger, &running).expect("over budget");

        assert_eq!(warning.code, "over_budget");
        assert!(
            warning
                .message
                .contains("plan 288 NewsAPI requests per 43200 s"),
            "{}",
            warning.message
        );
        assert!(warning.message.contains("0123456789abcdef"));
    }

    #[test]
    fn jobs_within_the_budget_get_no_warning() {
        let ledger = Ledger::new(50, 43_200);
        // Every hour, two pages: 24 per 12 hours; plus one daily job: 1.
        let running = [(2, 3_600_000, 1), (1, 86_400_000, 1)];
        assert_eq!(over_budget("f", &ledger, &running), None);
    }
}
