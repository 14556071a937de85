//! What the client's tests share: waiting for something to happen.
//!
//! Nothing here bounds how long a step may take: the deadline is long
//! (30 s) and is reached only by a broken client or fake, where it fails
//! with what was awaited rather than hanging the test run.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

/// How long a test waits for something before it declares it broken.
const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `condition` every 10 ms until it holds.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// Awaits `future`.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("still waiting after {DEADLINE:?} for {what}"))
}
