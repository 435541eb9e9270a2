use std::cell::{Cell, RefCell};

use super::*;

fn policy(base_ms: u64, max_ms: u64) -> RetryPolicy {
    RetryPolicy::new(Backoff::new(
        Duration::from_millis(base_ms),
        Duration::from_millis(max_ms),
    ))
    .with_jitter(|| 1.0)
}

/// An operation that fails `failures` times with its attempt number, then answers `"ok"`,
/// recording when each attempt began.
struct Flaky {
    failures: u32,
    calls: Cell<u32>,
    began: RefCell<Vec<Instant>>,
}

impl Flaky {
    fn new(failures: u32) -> Self {
        Self {
            failures,
            calls: Cell::new(0),
            began: RefCell::new(Vec::new()),
        }
    }

    async fn call(&self) -> Result<&'static str, Failure<String>> {
        self.began.borrow_mut().push(Instant::now());
        let n = self.calls.get() + 1;
        self.calls.set(n);
        if n <= self.failures {
            Err(Failure::Transient(format!("failure {n}")))
        } else {
            Ok("ok")
        }
    }

    fn gaps_ms(&self) -> Vec<u128> {
        self.began
            .borrow()
            .windows(2)
            .map(|pair| (pair[1] - pair[0]).as_millis())
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn waits_follow_the_backoff_doubling_up_to_its_cap() {
    let flaky = Flaky::new(5);
    let result = retry(
        &policy(100, 1000),
        &CancellationToken::new(),
        "flaky",
        || flaky.call(),
    )
    .await;
    assert_eq!(result.ok(), Some("ok"));
    assert_eq!(flaky.gaps_ms(), vec![100, 200, 400, 800, 1000]);
}

#[tokio::test(start_paused = true)]
async fn an_operation_that_succeeds_at_once_is_called_once_and_never_waits() {
    let flaky = Flaky::new(0);
    let started = Instant::now();
    let result = retry(
        &policy(100, 1000),
        &CancellationToken::new(),
        "flaky",
        || flaky.call(),
    )
    .await;
    assert_eq!(result.ok(), Some("ok"));
    assert_eq!(flaky.calls.get(), 1);
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn it_gives_up_after_the_allowed_attempts_with_the_last_error() {
    let flaky = Flaky::new(10);
    let result = retry(
        &policy(100, 1000).attempts(3),
        &CancellationToken::new(),
        "flaky",
        || flaky.call(),
    )
    .await;
    let Err(RetryError::GaveUp(gave_up)) = result else {
        panic!("expected to give up, got {result:?}");
    };
    assert_eq!(gave_up.attempts, 3);
    assert_eq!(gave_up.error, "failure 3");
    assert_eq!(gave_up.elapsed, Duration::from_millis(300));
    assert_eq!(flaky.calls.get(), 3);
}

#[tokio::test(start_paused = true)]
async fn it_makes_no_new_attempt_once_its_time_is_up() {
    let flaky = Flaky::new(100);
    let result = retry(
        &policy(100, 100).give_up_after(Duration::from_millis(350)),
        &CancellationToken::new(),
        "flaky",
        || flaky.call(),
    )
    .await;
    let Err(RetryError::GaveUp(gave_up)) = result else {
        panic!("expected to give up, got {result:?}");
    };
    // Attempts at 0, 100, 200, 300 and 400 ms: the one at 400 is the first to end past 350.
    assert_eq!(gave_up.attempts, 5);
    assert_eq!(gave_up.elapsed, Duration::from_millis(400));
}

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_is_not_retried() {
    let calls = Cell::new(0);
    let result: Result<(), _> = retry(
        &policy(100, 1000),
        &CancellationToken::new(),
        "refused",
        || {
            calls.set(calls.get() + 1);
            async { Err(Failure::Permanent("no such key")) }
        },
    )
    .await;
    let Err(RetryError::GaveUp(gave_up)) = result else {
        panic!("expected to give up, got {result:?}");
    };
    assert_eq!((gave_up.attempts, gave_up.error), (1, "no such key"));
    assert_eq!(calls.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn cancelling_during_a_wait_ends_the_retry_at_once() {
    let flaky = Flaky::new(u32::MAX);
    let cancel = CancellationToken::new();
    let policy = policy(10_000, 10_000);
    let started = Instant::now();
    let (result, ()) = tokio::join!(retry(&policy, &cancel, "flaky", || flaky.call()), async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        cancel.cancel();
    });
    assert!(matches!(result, Err(RetryError::Cancelled)), "{result:?}");
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert_eq!(flaky.calls.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn cancelling_during_an_attempt_abandons_it() {
    let cancel = CancellationToken::new();
    let policy = policy(100, 1000);
    let (result, ()) = tokio::join!(
        retry(&policy, &cancel, "hangs", || async {
            std::future::pending::<Result<(), Failure<String>>>().await
        }),
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            cancel.cancel();
        }
    );
    assert!(matches!(result, Err(RetryError::Cancelled)), "{result:?}");
}

#[tokio::test(start_paused = true)]
async fn an_already_cancelled_token_means_no_attempt_at_all() {
    let flaky = Flaky::new(0);
    let cancel = CancellationToken::new();
    cancel.cancel();
    let result = retry(&policy(100, 1000), &cancel, "flaky", || flaky.call()).await;
    assert!(matches!(result, Err(RetryError::Cancelled)), "{result:?}");
    assert_eq!(flaky.calls.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_asked_wait_is_honoured_up_to_the_cap_only_when_the_policy_says_so() {
    let asking = |asked_ms: u64| {
        let calls = Cell::new(0);
        move || {
            calls.set(calls.get() + 1);
            let first = calls.get() == 1;
            async move {
                if first {
                    Err(Failure::TransientAfter(
                        "slow down",
                        Duration::from_millis(asked_ms),
                    ))
                } else {
                    Ok(())
                }
            }
        }
    };
    let cancel = CancellationToken::new();
    for (policy, asked_ms, waited_ms) in [
        (policy(100, 1000), 5_000, 100),
        (
            policy(100, 1000).honour_asked_waits_up_to(Duration::from_secs(2)),
            1_500,
            1_500,
        ),
        (
            policy(100, 1000).honour_asked_waits_up_to(Duration::from_secs(2)),
            5_000,
            2_000,
        ),
    ] {
        let started = Instant::now();
        let result = retry(&policy, &cancel, "asking", asking(asked_ms)).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(started.elapsed(), Duration::from_millis(waited_ms));
    }
}

#[tokio::test(start_paused = true)]
async fn without_a_token_only_giving_up_ends_a_retry_without_a_result() {
    let flaky = Flaky::new(10);
    let result =
        retry_until_dropped(&policy(100, 1000).attempts(2), "flaky", || flaky.call()).await;
    let gave_up = result.expect_err("gives up");
    assert_eq!((gave_up.attempts, gave_up.error.as_str()), (2, "failure 2"));
    assert_eq!(
        gave_up.to_string(),
        "gave up after 2 attempt(s) in 100ms: failure 2"
    );
}
