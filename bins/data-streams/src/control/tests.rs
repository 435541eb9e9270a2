//! The control shell's own bookkeeping: fence dedupe and owned tasks.

use super::*;

fn control() -> Control {
    Control::new(ControlSettings {
        worker_timeout: Duration::from_secs(10),
        reconcile_every: Duration::from_secs(1),
        command_timeout: Duration::from_secs(1),
    })
}

fn key() -> (WorkerId, JobId) {
    (
        WorkerId::parse("w1").expect("a valid worker id"),
        JobId::parse("j1").expect("a valid job id"),
    )
}

#[test]
fn a_fence_in_flight_is_not_sent_again_until_it_is_done() {
    let control = control();
    let first = Claim::take(&control.fencing, key());
    assert!(first.is_some());
    assert!(Claim::take(&control.fencing, key()).is_none());
    drop(first);
    assert!(Claim::take(&control.fencing, key()).is_some());
}

#[tokio::test]
async fn a_panicking_control_task_is_waited_for_and_releases_its_claim() {
    let control = control();
    let claim = Claim::take(&control.fencing, key());
    assert!(claim.is_some());
    control.spawn("test", key().1, async move {
        let _claim = claim;
        panic!("a bug in a control task");
    });
    control.tasks().close();
    control.tasks().wait().await;
    assert!(Claim::take(&control.fencing, key()).is_some());
}
