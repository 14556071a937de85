//! A Rust Bayeux client: what a browser running the CometD JavaScript client
//! does, in a form Halley's end-to-end tests and its load generator can drive.
//!
//! ```no_run
//! # async fn demo() -> Result<(), halley_client::Error> {
//! use halley_client::Client;
//!
//! let client = Client::builder("http://127.0.0.1:8080/cometd").build()?;
//! let mut deliveries = client.take_deliveries().expect("taken once");
//! client.handshake().await?;              // starts the /meta/connect loop
//! client.subscribe("/chat/**").await?;
//! client.publish("/chat/room1", &serde_json::json!({"text": "hi"})).await?;
//! let delivery = deliveries.recv().await.expect("client alive");
//! assert_eq!(delivery.channel, "/chat/room1");
//! client.disconnect().await?;
//! # Ok(()) }
//! ```
//!
//! The same over WebSocket (one socket per client; the URL stays `http://`):
//!
//! ```no_run
//! # async fn demo() -> Result<(), halley_client::Error> {
//! use halley_client::{Client, TransportKind};
//!
//! let client = Client::builder("http://127.0.0.1:8080/cometd")
//!     .transport(TransportKind::WebSocket)
//!     .build()?;
//! client.handshake().await?;              // opens the socket; connectionType "websocket"
//! # Ok(()) }
//! ```
//!
//! | module | what it holds |
//! |---|---|
//! | [`ack`] | the ack extension ([`ClientBuilder::ack`]): numbered connect replies, re-sent when lost |
//! | [`client`] | [`Client`] and its builder: handshake, subscribe, publish, disconnect, raw requests |
//! | [`session`] | what one Bayeux session remembers: `clientId`, the server's advice, subscriptions, counters |
//! | `connect_loop` | the background task that keeps a `/meta/connect` outstanding and follows the advice |
//! | [`transport`] | how messages travel: a [`Transport`] enum, chosen with [`TransportKind`] |
//! | [`transport::long_polling`] | one HTTP/1.1 `POST` per batch, answered with replies and queued deliveries |
//! | [`transport::websocket`] | one WebSocket per client: a reader task hands deliveries over as they come and matches replies to requests by `id` |
//! | [`message`] | the client's side of the wire: [`Outgoing`] messages and [`Incoming`] replies and deliveries |
//! | [`delivery`] | a broadcast as the application sees it ([`Delivery`]) and the receiver they arrive on |
//! | [`cookie`] | a tiny per-browser cookie jar (`BAYEUX_BROWSER`), private to a client or shared |
//! | [`error`] | [`Error`], and [`ServerError`] for the `code:args:message` strings a server refuses with |
//!
//! Cost per client matters (the load generator runs ~15,000 of them in one
//! process): a client is one `Arc`, a few small mutexes, one background task
//! (plus, on websocket, one socket and its reader task; no polling loops)
//! and, when it is given one, a shared `reqwest::Client` (connection pool);
//! cookies are handled here rather than by a reqwest cookie store so that many
//! "browsers" can share one HTTP client.

pub mod ack;
pub mod client;
pub mod cookie;
pub mod delivery;
pub mod error;
pub mod message;
pub mod session;
pub mod transport;

mod connect_loop;

pub use client::{Client, ClientBuilder, HandshakeInfo, PublishAck};
pub use cookie::CookieJar;
pub use delivery::{Deliveries, Delivery};
pub use error::{Error, ServerError};
pub use halley_protocol::{Advice, Reconnect};
pub use message::{Incoming, Outgoing};
pub use session::{State, Stats};
pub use transport::{http_client, RawResponse, Transport, TransportKind};

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
