//! The last warnings and errors the process logged, for the admin page: a
//! `tracing` layer ([`layer`]) keeping the last [`KEPT`] WARN and ERROR
//! events in a ring ([`recent`]).
//!
//! The binary adds the layer next to its log writer; an embedder that does
//! not gets an empty list. Only WARN and ERROR reach the ring (the layer's
//! filter says so to `tracing`, so other events cost it nothing), and they
//! are rare by nature: one lock per event is fine.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{Filtered, LevelFilter};
use tracing_subscriber::layer::{Context, Layer};

/// Events kept.
pub const KEPT: usize = 50;

/// One logged warning or error.
#[derive(Debug, Clone, Serialize)]
pub struct Logged {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `WARN` or `ERROR`.
    pub level: &'static str,
    /// The module that logged it.
    pub target: String,
    /// The message and its fields, as the text log shows them.
    pub message: String,
}

fn ring() -> &'static Mutex<VecDeque<Logged>> {
    static RING: LazyLock<Mutex<VecDeque<Logged>>> =
        LazyLock::new(|| Mutex::new(VecDeque::with_capacity(KEPT)));
    &RING
}

/// The kept events, oldest first.
pub fn recent() -> Vec<Logged> {
    ring().lock().iter().cloned().collect()
}

/// The layer that fills the ring (WARN and ERROR only).
pub fn layer<S: Subscriber>() -> Filtered<RecentErrors, LevelFilter, S> {
    RecentErrors.with_filter(LevelFilter::WARN)
}

/// See [`layer`].
pub struct RecentErrors;

impl<S: Subscriber> Layer<S> for RecentErrors {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let metadata = event.metadata();
        let logged = Logged {
            at_ms,
            level: if *metadata.level() == Level::ERROR {
                "ERROR"
            } else {
                "WARN"
            },
            target: metadata.target().to_owned(),
            message: message.0,
        };
        let mut ring = ring().lock();
        if ring.len() == KEPT {
            ring.pop_front();
        }
        ring.push_back(logged);
    }
}

/// Writes `message` first, then ` field=value` for the others.
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let fields = std::mem::take(&mut self.0);
            let _ = write!(self.0, "{value:?}{fields}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.insert_str(0, value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn warnings_and_errors_are_kept_and_the_ring_is_bounded() {
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not kept");
            tracing::warn!("the first, pushed out");
            for n in 0..KEPT - 1 {
                tracing::error!("error {n}");
            }
            tracing::warn!(peer = "x", "lost");
        });
        let kept = recent();
        assert_eq!(kept.len(), KEPT);
        assert_eq!(kept[0].message, "error 0");
        assert_eq!(kept[0].level, "ERROR");
        let last = kept.last().unwrap();
        assert_eq!((last.level, last.message.as_str()), ("WARN", "lost peer=x"));
        assert!(kept.iter().all(|l| !l.message.contains("not kept")));
    }
}
