//! Who wants to know when a session ends.
//!
//! A session ends in one of two ways: the client says goodbye
//! (`/meta/disconnect`) or it falls silent and the sweeper expires it. Either
//! way [`super::end_session`] has already unregistered it, closed it and
//! dropped its subscriptions when the listeners are told, so a listener sees
//! the final state and may publish (e.g. "ada left the room") without the
//! ended session receiving it.
//!
//! Listeners are called synchronously on the task that ended the session
//! (a request handler or the sweeper): they must be quick and must not
//! block. Each session ends once; a listener is told once per session.

use std::sync::Arc;

use parking_lot::RwLock;

use super::session::Session;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client sent `/meta/disconnect`.
    Disconnected,
    /// No sign of life for `interval + maxInterval`: the sweeper removed it.
    Expired,
    /// Its outbox overflowed on a channel whose policy is `disconnect`.
    Overflowed,
    /// Another node of the cluster took it over (its client goes on there).
    Moved,
    /// Its credentials expired (a JWT's `exp`) and were not refreshed, or
    /// the fresh ones it presented were refused.
    TokenExpired,
}

impl SessionEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionEnd::Disconnected => "disconnected",
            SessionEnd::Expired => "expired",
            SessionEnd::Overflowed => "overflowed",
            SessionEnd::Moved => "moved",
            SessionEnd::TokenExpired => "token_expired",
        }
    }
}

/// Told about every session that ends. Registered on the engine with
/// `engine.session_listeners().add(...)`.
pub trait SessionListener: Send + Sync {
    fn session_ended(&self, session: &Session, why: SessionEnd);
}

/// The listeners of one engine.
#[derive(Default)]
pub struct SessionListeners {
    listeners: RwLock<Vec<Arc<dyn SessionListener>>>,
}

impl SessionListeners {
    pub fn add(&self, listener: Arc<dyn SessionListener>) {
        self.listeners.write().push(listener);
    }

    /// Tells every listener that `session` ended. The list is copied first,
    /// so a listener may register another without deadlocking.
    pub fn session_ended(&self, session: &Session, why: SessionEnd) {
        let listeners = self.listeners.read().clone();
        for listener in listeners {
            listener.session_ended(session, why);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::outbox::OutboxLimits;
    use parking_lot::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, SessionEnd)>>);

    impl SessionListener for Recorder {
        fn session_ended(&self, session: &Session, why: SessionEnd) {
            self.0.lock().push((session.client_id().to_owned(), why));
        }
    }

    #[test]
    fn every_listener_hears_every_end_with_its_reason() {
        let listeners = SessionListeners::default();
        let (a, b) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
        listeners.add(a.clone());
        listeners.add(b.clone());
        let limits = OutboxLimits {
            max_messages: 10,
            max_bytes: 1024,
        };
        let one = Session::new(1, "one".into(), None, limits, 0);
        let two = Session::new(2, "two".into(), None, limits, 0);
        listeners.session_ended(&one, SessionEnd::Disconnected);
        listeners.session_ended(&two, SessionEnd::Expired);
        let expected = vec![
            ("one".to_owned(), SessionEnd::Disconnected),
            ("two".to_owned(), SessionEnd::Expired),
        ];
        assert_eq!(*a.0.lock(), expected);
        assert_eq!(*b.0.lock(), expected);
    }
}
