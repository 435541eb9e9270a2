//! Being the one instance that controls jobs. Every instance contends for the control lease
//! ([`crate::lease`]); the holder runs the control tasks (the reconciler, the publisher of job
//! records, the answerer of forwarded job requests) and decides about heartbeats, and every
//! other instance is a read replica. Taking the lease starts them; losing it (or shutting down)
//! stops them, before the lease can expire.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_nats::jetstream;
use futures::FutureExt as _;
use newsflow_core::retry::Backoff;
use newsflow_runtime::retry::{retry, Failure, RetryError, RetryPolicy};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control::Control;
use crate::lease::{Claim, Holder, Lease, LeaseSettings, RenewError};
use crate::state::Shared;

/// Whether this instance controls jobs, and who does as far as it knows.
#[derive(Default)]
pub struct Role {
    controls: AtomicBool,
    settled: AtomicBool,
    holder: RwLock<Option<Holder>>,
}

impl Role {
    /// Whether this instance holds the lease and runs the control tasks.
    pub fn controls(&self) -> bool {
        self.controls.load(Ordering::Acquire)
    }

    /// Whether this instance has tried for the lease at least once, so it knows whether it
    /// controls: until then a job change would be forwarded for nothing.
    pub fn is_settled(&self) -> bool {
        self.settled.load(Ordering::Acquire)
    }

    /// The holder last seen (this instance when it controls).
    pub fn holder(&self) -> Option<Holder> {
        self.holder
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Makes this instance control jobs without a lease: for tests of the handlers, which run
    /// with no NATS.
    pub fn control_alone(&self) {
        self.controls.store(true, Ordering::Release);
        self.settled.store(true, Ordering::Release);
    }

    fn set(&self, controls: bool, holder: Option<Holder>) {
        *self.holder.write().unwrap_or_else(PoisonError::into_inner) = holder;
        self.controls.store(controls, Ordering::Release);
        self.settled.store(true, Ordering::Release);
    }
}

/// What the control tasks need.
pub struct Context {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// Ownership.
    pub control: Arc<Control>,
    /// NATS.
    pub client: async_nats::Client,
    /// Replicas of the buckets.
    pub replicas: usize,
    /// The lease's life and this instance.
    pub lease: LeaseSettings,
    /// The API, to answer forwarded requests.
    pub router: axum::Router,
}

/// Contends for the lease and controls while holding it, until `shutdown`.
pub async fn run(context: Context, shutdown: CancellationToken) -> anyhow::Result<()> {
    let js = jetstream::new(context.client.clone());
    let policy = RetryPolicy::new(Backoff::new(
        Duration::from_millis(200),
        Duration::from_secs(5),
    ));
    let opened = retry(&policy, &shutdown, "cannot open the control lease", || {
        let (js, settings) = (&js, context.lease.clone());
        async move {
            Lease::open(js, context.replicas, settings)
                .await
                .map_err(Failure::Transient)
        }
    })
    .await;
    let lease = match opened {
        Ok(lease) => lease,
        Err(RetryError::Cancelled) => return Ok(()),
        Err(RetryError::GaveUp(gave_up)) => anyhow::bail!("opening the control lease: {gave_up}"),
    };
    let bucket = retry(&policy, &shutdown, "cannot open the jobs bucket", || {
        let js = &js;
        async move {
            crate::replicate::open(js, context.replicas)
                .await
                .map_err(Failure::Transient)
        }
    })
    .await;
    let bucket = match bucket {
        Ok(bucket) => bucket,
        Err(RetryError::Cancelled) => return Ok(()),
        Err(RetryError::GaveUp(gave_up)) => anyhow::bail!("opening the jobs bucket: {gave_up}"),
    };
    let every = lease.settings().renew_every();
    let mut logged_holder: Option<Holder> = None;
    loop {
        let tick = tokio::time::sleep(every);
        // A replica takes control only with a copy of the job records that is current.
        let current = context.shared.jobs.is_current();
        if current {
            let sent = Instant::now();
            match lease.claim().await {
                Ok(Claim::Held(revision)) => {
                    let led = lead(&context, &js, &lease, &bucket, revision, sent, &shutdown).await;
                    if led == Led::Shutdown {
                        return Ok(());
                    }
                    continue;
                }
                Ok(Claim::Taken(holder)) => {
                    if holder.is_some() && holder != logged_holder {
                        tracing::info!(holder = ?holder, "another instance controls jobs; this one is a read replica");
                        logged_holder.clone_from(&holder);
                    }
                    context.shared.role.set(false, holder);
                }
                Err(error) => {
                    tracing::warn!(%error, "could not contend for the control lease");
                    context.shared.role.set(false, None);
                }
            }
        }
        // Not yet current (a start catching up with the bucket): contend as soon as it is,
        // not a renewal period later (up to a second of every start's time to ready).
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tick => {}
            () = context.shared.jobs.wait_current(), if !current => {}
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Led {
    Shutdown,
    Lost,
}

/// Controls from taking the lease at `revision` (claimed by a write sent at `sent`) until it
/// is lost or the process shuts down.
async fn lead(
    context: &Context,
    js: &jetstream::Context,
    lease: &Lease,
    bucket: &async_nats::jetstream::kv::Store,
    mut revision: u64,
    sent: Instant,
    shutdown: &CancellationToken,
) -> Led {
    let settings = lease.settings();
    let mut valid_until = sent + settings.valid_for();
    let shared = &context.shared;
    // What the previous controller wrote just before it stopped is read before taking over.
    let last = match crate::replicate::last_sequence(js).await {
        Ok(last) => last,
        Err(error) => {
            tracing::warn!(
                error = format!("{error:#}"),
                "could not read the jobs bucket's state; giving the lease back"
            );
            lease.release(revision).await;
            return Led::Lost;
        }
    };
    if !shared.jobs.wait_read(last, settings.valid_for() / 2).await {
        tracing::warn!("the copy of the jobs bucket is behind; giving the lease back");
        lease.release(revision).await;
        return Led::Lost;
    }
    let changes = shared.store.job_changes();
    changes.record(true);
    if last == 0 {
        seed(shared);
    }
    context.control.forget_connection();
    // Not a child of `shutdown`: at shutdown the publisher still flushes the last changes.
    let stop = CancellationToken::new();
    let failed = CancellationToken::new();
    let tasks = TaskTracker::new();
    let spawn = |name: &'static str, task: futures::future::BoxFuture<'static, ()>| {
        let (stop, failed) = (stop.clone(), failed.clone());
        tasks.spawn(async move {
            let outcome = std::panic::AssertUnwindSafe(task).catch_unwind().await;
            if !stop.is_cancelled() {
                tracing::error!(
                    task = name,
                    panicked = outcome.is_err(),
                    "a control task ended while controlling; giving the lease up"
                );
                failed.cancel();
            }
        });
    };
    spawn(
        "reconciler",
        crate::control::run_reconciler(context.control.clone(), shared.clone(), stop.clone())
            .boxed(),
    );
    spawn(
        "job records publisher",
        crate::replicate::publish(shared.clone(), bucket.clone(), stop.clone()).boxed(),
    );
    spawn(
        "forwarded requests",
        crate::http::forward::answer(context.router.clone(), context.client.clone(), stop.clone())
            .boxed(),
    );
    shared.role.set(true, Some(settings.me.clone()));
    shared.metrics.controls.set(1);
    tracing::info!(instance_id = %settings.me.instance_id, "took the control lease; this instance controls jobs");
    let mut next_renewal = Instant::now() + settings.renew_every();
    let led = loop {
        tokio::select! {
            () = shutdown.cancelled() => break Led::Shutdown,
            () = failed.cancelled() => break Led::Lost,
            () = tokio::time::sleep_until(valid_until) => {
                tracing::warn!("the control lease could not be renewed in time; this instance stops controlling");
                break Led::Lost;
            }
            () = tokio::time::sleep_until(next_renewal) => {}
        }
        let sent = Instant::now();
        match tokio::time::timeout_at(valid_until, lease.renew(revision)).await {
            Ok(Ok(renewed)) => {
                revision = renewed;
                valid_until = sent + settings.valid_for();
                next_renewal = Instant::now() + settings.renew_every();
            }
            Ok(Err(RenewError::Lost)) => {
                tracing::warn!(
                    "the control lease was taken by another instance; this one stops controlling"
                );
                break Led::Lost;
            }
            Ok(Err(error @ RenewError::Failed(_))) => {
                tracing::warn!(%error, "could not renew the control lease; trying again");
                next_renewal = Instant::now() + settings.renew_every() / 4;
            }
            Err(_) => {}
        }
    };
    shared.role.set(false, None);
    shared.metrics.controls.set(0);
    if led == Led::Lost {
        // The commands in flight would act for a controller that no longer is (at shutdown
        // they may finish: main waits for them).
        context.control.end_term();
    }
    let giving_up = led == Led::Shutdown || failed.is_cancelled();
    if giving_up {
        // Published before the lease is given up, so the next controller reads every change.
        let within = valid_until.saturating_duration_since(Instant::now());
        if !changes.published(within).await {
            tracing::warn!("some job changes were not published before giving up control");
        }
    }
    stop.cancel();
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(5), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("control tasks did not stop within 5 s");
    }
    if giving_up {
        lease.release(revision).await;
    }
    changes.record(false);
    if led == Led::Lost {
        shared.jobs.resync();
    }
    led
}

/// Publishes every local job: the first controller of a bucket never written brings the jobs
/// it had before read replicas existed.
fn seed(shared: &Shared) {
    match shared.store.all_jobs() {
        Ok(jobs) => {
            tracing::info!(
                jobs = jobs.len(),
                "the jobs bucket was never written; publishing every job"
            );
            for record in jobs {
                shared.store.job_changes().changed(record.spec.id());
            }
        }
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "listing jobs to seed the jobs bucket"
            )
        }
    }
}
