//! The long soak (issue 10, point 7): jobs every second until `SOAK_LONG_BATCHES` batches
//! (default 2,000) have completed, with a reader polling the latest batches throughout. The
//! resident memory of data-streams and of the worker after the last batch must be at most 1.2×
//! what it was after batch 200, and their open file descriptors and threads must stay flat. Run
//! it with `just soak-long`; it prints the figures.

use std::time::{Duration, Instant};

use newsflow_tests::{wait_for, Api, System};
use serde_json::json;

/// What a process holds, read from `/proc`.
#[derive(Debug, Clone, Copy)]
struct Footprint {
    rss_kib: u64,
    fds: usize,
    threads: u64,
}

fn footprint(pid: u32) -> Footprint {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc fd")
        .count();
    Footprint {
        rss_kib: field("VmRSS:"),
        fds,
        threads: field("Threads:"),
    }
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn completed(api: &Api) -> u64 {
    api.counter("newsflow_batches_promoted_total").await
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| match entry.metadata() {
                    Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
                    Ok(meta) => meta.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run with `just soak-long` (SOAK_LONG_BATCHES, default 2000)"]
async fn memory_descriptors_and_threads_stay_flat_over_thousands_of_batches() {
    let batches = setting("SOAK_LONG_BATCHES", 2_000);
    let jobs = setting("SOAK_LONG_JOBS", 10);
    let baseline_at = 200.min(batches / 2);
    let started = Instant::now();
    let mut system = System::builder().workers(1).start().await;
    let api = system.api();
    for i in 0..jobs {
        api.create_job_ok(&json!({
            "id": format!("long-{i}"), "params": {"q": format!("long {i}")},
            "interval_secs": 1, "page_size": 20
        }))
        .await;
    }
    let reader = {
        let api = api.clone();
        tokio::spawn(async move {
            loop {
                for i in 0..jobs {
                    let _ = api.get(&format!("/jobs/long-{i}/articles")).await;
                }
                let _ = api.get("/articles?limit=50").await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let deadline = Duration::from_secs(batches * 2 / jobs.max(1) + 600);
    wait_for(deadline, "the baseline batch count", || async {
        (completed(&api).await >= baseline_at).then_some(())
    })
    .await;
    let ds_pid = system.data_streams().pid();
    let worker_pid = system.worker("worker-1").pid();
    let (ds_base, worker_base) = (footprint(ds_pid), footprint(worker_pid));
    let disk_base = dir_size(system.data_dir());

    wait_for(deadline, "the last batch", || async {
        (completed(&api).await >= batches).then_some(())
    })
    .await;
    let (ds_end, worker_end) = (footprint(ds_pid), footprint(worker_pid));
    let disk_end = dir_size(system.data_dir());
    reader.abort();
    let _ = reader.await;

    let ratio = |end: Footprint, base: Footprint| end.rss_kib as f64 / base.rss_kib as f64;
    println!(
        "soak-long: {} batches of {jobs} jobs every second in {:.0} s\n\
         process      | RSS at {baseline_at} | RSS at end | ratio | fds {baseline_at} -> end | threads {baseline_at} -> end\n\
         data-streams | {:>8} KiB | {:>8} KiB | {:.2}x | {} -> {} | {} -> {}\n\
         worker       | {:>8} KiB | {:>8} KiB | {:.2}x | {} -> {} | {} -> {}\n\
         data dir: {} KiB -> {} KiB",
        completed(&api).await,
        started.elapsed().as_secs_f64(),
        ds_base.rss_kib, ds_end.rss_kib, ratio(ds_end, ds_base), ds_base.fds, ds_end.fds, ds_base.threads, ds_end.threads,
        worker_base.rss_kib, worker_end.rss_kib, ratio(worker_end, worker_base), worker_base.fds, worker_end.fds, worker_base.threads, worker_end.threads,
        disk_base / 1024, disk_end / 1024,
    );
    for (name, base, end) in [
        ("data-streams", ds_base, ds_end),
        ("worker", worker_base, worker_end),
    ] {
        assert!(
            ratio(end, base) <= 1.2,
            "{name}: RSS {} KiB -> {} KiB",
            base.rss_kib,
            end.rss_kib
        );
        assert!(
            end.fds <= base.fds + 4,
            "{name}: fds {} -> {}",
            base.fds,
            end.fds
        );
        assert!(
            end.threads <= base.threads + 2,
            "{name}: threads {} -> {}",
            base.threads,
            end.threads
        );
    }
}
