//! Who serves a session: its `/meta/connect`s (numbered, so a newer one
//! supersedes a held one), the transport and WebSocket of the latest, and
//! how many connects (or sockets) hold it right now. One part of
//! [`super::Session`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

/// The transport a session's connects arrive on, as far as the engine cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionType {
    LongPolling,
    CallbackPolling,
    WebSocket,
}

impl ConnectionType {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionType::LongPolling => halley_protocol::connection_type::LONG_POLLING,
            ConnectionType::CallbackPolling => halley_protocol::connection_type::CALLBACK_POLLING,
            ConnectionType::WebSocket => halley_protocol::connection_type::WEBSOCKET,
        }
    }
}

pub(super) struct Connects {
    /// The WebSocket of the latest connect (0: none, HTTP): only that socket
    /// takes deliveries, so a half-dead old socket cannot swallow them.
    owner_socket: AtomicU64,
    /// Bumped by every `/meta/connect`; a held connect whose number is no
    /// longer current has been superseded and returns.
    generation: AtomicU64,
    /// The transport of the most recent connect (callback-polling answers a
    /// held connect on any inbound message).
    connection_type: Mutex<ConnectionType>,
    /// Connects (or attached sockets) holding the session right now; a
    /// session with one never expires.
    holding: AtomicUsize,
    /// Set by the first `/meta/connect`.
    connected: AtomicBool,
}

impl Connects {
    #[inline]
    pub(super) fn new() -> Self {
        Connects {
            owner_socket: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            connection_type: Mutex::new(ConnectionType::LongPolling),
            holding: AtomicUsize::new(0),
            connected: AtomicBool::new(false),
        }
    }

    /// Registers a connect that came on `socket_id` over `connection_type`;
    /// returns its number.
    #[inline]
    pub(super) fn begin(&self, connection_type: ConnectionType, socket_id: u64) -> u64 {
        *self.connection_type.lock() = connection_type;
        self.owner_socket.store(socket_id, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Supersedes whatever connect is held (without a new one).
    #[inline]
    pub(super) fn supersede(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    #[inline]
    pub(super) fn is_current(&self, generation: u64) -> bool {
        self.generation.load(Ordering::Acquire) == generation
    }

    #[inline]
    pub(super) fn owner_socket(&self) -> u64 {
        self.owner_socket.load(Ordering::Acquire)
    }

    #[inline]
    pub(super) fn connection_type(&self) -> ConnectionType {
        *self.connection_type.lock()
    }

    #[inline]
    pub(super) fn start_holding(&self) {
        self.holding.fetch_add(1, Ordering::AcqRel);
    }

    #[inline]
    pub(super) fn stop_holding(&self) {
        self.holding.fetch_sub(1, Ordering::AcqRel);
    }

    #[inline]
    pub(super) fn is_holding(&self) -> bool {
        self.holding.load(Ordering::Acquire) > 0
    }

    /// Marks the session connected; `true` the first time.
    #[inline]
    pub(super) fn mark_connected(&self) -> bool {
        !self.connected.swap(true, Ordering::AcqRel)
    }

    #[inline]
    pub(super) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }
}
