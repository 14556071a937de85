//! A session's wake-up: a waiter that registered and called
//! `Session::watching` is woken by the next delivery queued, and the rest
//! of a burst does not ring again until a waiter watches anew.

use std::future::Future;
use std::pin::pin;
use std::task::Context;

use bytes::Bytes;
use futures_util::task::noop_waker_ref;
use halley_server::state::outbox::{OutboxLimits, OverflowPolicy};
use halley_server::state::session::Session;

fn session() -> Session {
    let limits = OutboxLimits {
        max_messages: 100,
        max_bytes: 1 << 20,
    };
    Session::new(1, "client".into(), None, limits, 0)
}

fn woken(notified: std::pin::Pin<&mut impl Future<Output = ()>>) -> bool {
    notified
        .poll(&mut Context::from_waker(noop_waker_ref()))
        .is_ready()
}

#[test]
fn a_watching_waiter_is_woken_once_per_burst() {
    let session = session();
    let delivery = || Bytes::from_static(b"{}");

    let mut first = pin!(session.wake().notified());
    first.as_mut().enable();
    session.watching();
    assert!(!woken(first.as_mut()), "nothing queued yet");
    assert!(session.enqueue(delivery(), OverflowPolicy::DropOldest));
    assert!(woken(first.as_mut()), "the first delivery wakes the waiter");

    // A waiter that registered but has not looked yet (no `watching`): the
    // rest of the burst does not ring again; it finds them in the outbox.
    let mut second = pin!(session.wake().notified());
    second.as_mut().enable();
    assert!(session.enqueue(delivery(), OverflowPolicy::DropOldest));
    assert!(!woken(second.as_mut()), "the burst rang once");

    // Once it watches (about to look at the outbox), the next one rings.
    session.watching();
    assert!(session.enqueue(delivery(), OverflowPolicy::DropOldest));
    assert!(
        woken(second.as_mut()),
        "a delivery after `watching` wakes it"
    );
}
