//! Bayeux 1.0, as CometD speaks it, with no I/O and no async runtime.
//!
//! Everything here takes bytes or values and returns bytes or values, so the
//! server, the client and the load generator share one definition of the wire
//! and it can be tested exhaustively without sockets.
//!
//! | module | what it holds |
//! |---|---|
//! | [`channel`] | channel names, their kinds (`/meta`, `/service`, broadcast) and globs (`/*`, `/**`) |
//! | [`message`] | the inbound [`Message`] as clients send it, and the outbound [`Reply`] |
//! | [`advice`] | the `advice` object both ways and its `reconnect` values |
//! | [`error`] | the `code:args:message` error strings CometD uses |
//! | [`codec`] | a request body to messages, and messages or pre-encoded deliveries to a body |
//! | [`websocket`] | `Sec-WebSocket-Accept`, which client and server both compute |
//!
//! The hot-path rule that shapes this crate: a broadcast is encoded **once**
//! into [`bytes::Bytes`] by [`codec::encode_delivery`] and then shared by every
//! subscriber's queue; [`codec::BodyWriter`] joins such pieces into one JSON
//! array without re-encoding them.

pub mod advice;
pub mod channel;
pub mod codec;
pub mod error;
pub mod message;
pub mod websocket;

pub use advice::{Advice, Reconnect};
pub use channel::{ChannelKind, ChannelName, ChannelPattern};
pub use codec::{decode_batch, encode_delivery, BodyWriter, DecodeError, Inbound};
pub use error::BayeuxError;
pub use message::{Message, Reply, Subscription};

/// The only protocol version Halley speaks, and the one every client sends.
pub const BAYEUX_VERSION: &str = "1.0";

/// The connection types, spelled as on the wire.
pub mod connection_type {
    pub const LONG_POLLING: &str = "long-polling";
    pub const CALLBACK_POLLING: &str = "callback-polling";
    pub const WEBSOCKET: &str = "websocket";
}

/// The meta channels, spelled as on the wire.
pub mod meta {
    pub const HANDSHAKE: &str = "/meta/handshake";
    pub const CONNECT: &str = "/meta/connect";
    pub const SUBSCRIBE: &str = "/meta/subscribe";
    pub const UNSUBSCRIBE: &str = "/meta/unsubscribe";
    pub const DISCONNECT: &str = "/meta/disconnect";
}
