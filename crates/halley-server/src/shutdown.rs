//! The server-wide "we are stopping" signal.
//!
//! Held connects listen to it so that, on SIGINT/SIGTERM, each one is
//! answered at once with `reconnect: retry` instead of being cut.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Shutdown {
    started: AtomicBool,
    notify: Notify,
}

impl Shutdown {
    pub fn trigger(&self) {
        self.started.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Resolves once shutdown has begun (immediately if it already has).
    pub async fn wait(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_started() {
            return;
        }
        notified.await;
    }
}
