//! A device login's wait that talks back and can be cancelled: `wait_with` reports each wait
//! between polls (`DeviceProgress`), and a `DeviceCancel` ends it from another thread.
//!
//! Against the kit's server, as in `device_flow.rs`: time is a `ManualClock` that sleeping
//! advances, except where the default wait (a condition variable) is what is tested; then
//! the threads meet through the progress callback and channels, never through sleeps.

use std::fmt::Debug;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use parking_lot::Mutex;
use tokengate::login::{DeviceCancel, DeviceError, DeviceProgress};
use tokengate::testing::{Fault, TestClient, TestServer};
use tokengate::time::Sleeper;

use crate::device_flow::{approved, device_error, flow, flow_of, server, Login, CLI, S};
use crate::harness::fixtures::TestTime;

/// Only a wait that a cancel failed to end lasts this long.
const HANG_GUARD: Duration = Duration::from_secs(60);

fn waiting(remaining: u64, next_poll: u64) -> DeviceProgress {
    DeviceProgress::Waiting {
        remaining: S(remaining),
        next_poll: S(next_poll),
    }
}

fn retrying(failed_polls: u32, next_poll: u64, remaining: u64) -> DeviceProgress {
    DeviceProgress::Retrying {
        failed_polls,
        next_poll: S(next_poll),
        remaining: S(remaining),
    }
}

/// A cancel set later, for the hooks built before the login starts.
type Slot = Arc<Mutex<Option<DeviceCancel>>>;

#[test]
fn progress_is_reported_before_each_wait_and_slow_down_gives_the_new_interval() {
    let srv = Login::start();
    let time = TestTime::new();
    let pending = approved(&srv, flow(&srv, &time));
    srv.script(&[Fault::AuthorizationPending, Fault::SlowDown]);
    let mut seen = Vec::new();
    let tokens = pending.wait_with(|p| seen.push(p)).unwrap();
    assert_eq!(tokens.access_token().secret(), "at-1");
    let slow_down = DeviceProgress::SlowDown {
        interval: S(10),
        remaining: S(590),
    };
    assert_eq!(seen, vec![waiting(600, 5), waiting(595, 5), slow_down]);
    assert_eq!(time.sleeps(), vec![S(5), S(5), S(10)]);
    assert_eq!(srv.polls(), 3);
    assert!(!format!("{seen:?}").contains("dc-1"), "{seen:?}");
}

#[test]
fn retrying_counts_failed_polls_in_a_row_and_an_answer_starts_the_count_again() {
    let unavailable = Fault::Unavailable { retry_after: None };
    let srv = Login::start();
    let time = TestTime::new();
    let pending = approved(&srv, flow(&srv, &time));
    srv.script(&[
        unavailable.clone(),
        unavailable.clone(),
        Fault::AuthorizationPending,
        unavailable,
    ]);
    let mut seen = Vec::new();
    pending.wait_with(|p| seen.push(p)).unwrap();
    // The interval doubles on each failure and stays doubled after the pending answer.
    let expected = vec![
        waiting(600, 5),
        retrying(1, 10, 595),
        retrying(2, 20, 585),
        waiting(565, 20),
        retrying(1, 40, 545),
    ];
    assert_eq!(seen, expected);
    assert_eq!(srv.polls(), 5);
}

#[test]
fn the_last_wait_is_reported_cut_to_the_time_left() {
    let srv = Login::of(
        TestServer::builder()
            .client(TestClient::public(CLI))
            .device_code_lifetime(S(12)),
    );
    let time = TestTime::new();
    let mut seen = Vec::new();
    let e = device_error(
        flow(&srv, &time)
            .start()
            .unwrap()
            .wait_with(|p| seen.push(p)),
    );
    assert!(matches!(e, DeviceError::CodeExpired), "{e:?}");
    assert_eq!(seen, vec![waiting(12, 5), waiting(7, 5), waiting(2, 2)]);
    assert_eq!(srv.polls(), 2);
}

fn clone_send_sync_debug<T: Clone + Send + Sync + Debug>() {}

/// The default wait (no sleeper given) is an hour here: a cancel from another thread ends
/// it at once, with no poll.
#[test]
fn a_cancel_from_another_thread_ends_the_default_wait_without_a_poll() {
    clone_send_sync_debug::<DeviceCancel>();
    let srv = Login::of(
        TestServer::builder()
            .client(TestClient::public(CLI))
            .device_interval(Some(3600))
            .device_code_lifetime(S(7200)),
    );
    let pending = server(&srv).device_flow().unwrap().start().unwrap();
    let cancel = pending.canceller();
    let (progress, reported) = mpsc::channel();
    let (done, result) = mpsc::channel();
    thread::spawn(move || {
        let r = pending.wait_with(|p| progress.send(p).unwrap());
        done.send(r).unwrap();
    });
    let first = reported.recv_timeout(HANG_GUARD).unwrap();
    assert!(
        matches!(first, DeviceProgress::Waiting { next_poll, .. } if next_poll == S(3600)),
        "{first:?}"
    );
    let canceller = thread::spawn(move || cancel.cancel());
    canceller.join().unwrap();
    let r = result
        .recv_timeout(HANG_GUARD)
        .expect("the wait did not end on cancel");
    let e = device_error(r);
    assert!(matches!(e, DeviceError::Cancelled), "{e:?}");
    assert_eq!(srv.polls(), 0);
    assert!(reported.try_recv().is_err(), "one report only");
}

/// A progress callback that gives up (after a first failed poll here) ends the wait before
/// the sleep it was told of.
#[test]
fn a_cancel_from_the_progress_callback_ends_the_wait_before_its_sleep() {
    let srv = Login::start();
    let time = TestTime::new();
    let pending = approved(&srv, flow(&srv, &time));
    srv.script(&[Fault::Unavailable { retry_after: None }]);
    let cancel = pending.canceller();
    let e = device_error(pending.wait_with(|p| {
        if matches!(p, DeviceProgress::Retrying { .. }) {
            cancel.cancel();
        }
    }));
    assert!(matches!(e, DeviceError::Cancelled), "{e:?}");
    assert_eq!((srv.polls(), time.sleeps()), (1, vec![S(5)]));
}

#[test]
fn a_cancel_before_the_wait_makes_no_poll() {
    let srv = Login::start();
    let time = TestTime::new();
    let pending = approved(&srv, flow(&srv, &time));
    let cancel = pending.canceller();
    cancel.cancel();
    assert!(cancel.is_cancelled());
    let mut seen = Vec::new();
    let e = device_error(pending.wait_with(|p| seen.push(p)));
    assert!(matches!(e, DeviceError::Cancelled), "{e:?}");
    assert_eq!(e.to_string(), "the login was cancelled");
    assert!(!e.is_transient() && !e.is_expired());
    assert_eq!((srv.polls(), seen, time.sleeps()), (0, vec![], vec![]));
}

/// With a sleeper of one's own, a cancel that comes while it sleeps (the second sleep here)
/// is seen when it returns: no poll follows.
#[test]
fn a_cancel_during_a_given_sleepers_sleep_is_seen_when_it_returns() {
    struct CancelOnSecond(Arc<TestTime>, Slot);
    impl Sleeper for CancelOnSecond {
        fn sleep(&self, d: Duration) {
            self.0.sleep(d);
            if self.0.sleeps().len() == 2 {
                self.1.lock().as_ref().unwrap().cancel();
            }
        }
    }
    let srv = Login::start();
    let time = TestTime::new();
    let slot = Slot::default();
    let flow = flow(&srv, &time).sleeper(CancelOnSecond(time.clone(), slot.clone()));
    let pending = flow.start().unwrap();
    *slot.lock() = Some(pending.canceller());
    let e = device_error(pending.wait());
    assert!(matches!(e, DeviceError::Cancelled), "{e:?}");
    assert_eq!(time.sleeps(), vec![S(5), S(5)]);
    assert_eq!(srv.polls(), 1);
}

/// A cancel while a poll is on the wire: that poll finishes; pending, the wait ends with
/// no further poll nor report; with the tokens, they are returned.
#[test]
fn a_poll_on_the_wire_finishes_and_its_tokens_are_kept() {
    for user_approves in [false, true] {
        let slot = Slot::default();
        let hook = slot.clone();
        let srv = Login::watched(
            TestServer::builder().client(TestClient::public(CLI)),
            move |req| {
                if req.path == "/oauth/token" {
                    hook.lock().as_ref().unwrap().cancel();
                }
            },
        );
        let time = TestTime::new();
        let pending = flow_of(server(&srv), &time).start().unwrap();
        if user_approves {
            srv.kit.approve(pending.user_code()).unwrap();
        }
        let cancel = pending.canceller();
        *slot.lock() = Some(cancel.clone());
        let mut seen = Vec::new();
        let r = pending.wait_with(|p| seen.push(p));
        assert!(cancel.is_cancelled());
        match user_approves {
            true => assert_eq!(r.unwrap().access_token().secret(), "at-1"),
            false => assert!(matches!(device_error(r), DeviceError::Cancelled)),
        }
        assert_eq!(seen, vec![waiting(600, 5)], "approved: {user_approves}");
        assert_eq!((srv.polls(), time.sleeps()), (1, vec![S(5)]));
    }
}

#[test]
fn a_cancel_after_the_tokens_came_changes_nothing() {
    let srv = Login::start();
    let time = TestTime::new();
    let pending = approved(&srv, flow(&srv, &time));
    let cancel = pending.canceller();
    let tokens = pending.wait().unwrap();
    cancel.cancel();
    assert!(cancel.is_cancelled());
    assert_eq!(tokens.refresh_token().unwrap().secret(), "rt-1");
    assert_eq!(srv.polls(), 1);
    assert_eq!(format!("{cancel:?}"), "DeviceCancel { cancelled: true }");
}
