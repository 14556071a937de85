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
//! Deliveries can instead go to a handler, called by the task that read
//! them, in order ([`ClientBuilder::on_delivery`]; it must not block): no
//! queue and no task of the application's per delivery, which is how the
//! load generator's thousands of users record what they receive.
//!
//! The same over WebSocket (one socket per client; the URL stays `http://`,
//! or `https://` for `wss`; [`ClientBuilder::trust`] adds a CA of one's own):
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
//! The modules are private; what an application needs is re-exported here.
//! From the bottom up (a module imports only modules listed before it, so no
//! two import each other):
//!
//! | module | what it holds |
//! |---|---|
//! | `error` | [`Error`], [`Result`], and [`ServerError`] for the `code:args:message` strings a server refuses with |
//! | `tls` | which servers an `https://` client trusts ([`Trust`]: the system's roots, plus CAs of one's own) |
//! | `ack` | the ack extension ([`ClientBuilder::ack`]): numbered connect replies, re-sent when lost |
//! | `cookie` | a tiny per-browser cookie jar ([`CookieJar`], `BAYEUX_BROWSER`), private to a client or shared |
//! | `message` | the client's side of the wire: [`Outgoing`] messages and [`Incoming`] replies and deliveries (a refusal among them becomes an [`Error`]) |
//! | `delivery` | a broadcast as the application sees it ([`Delivery`]) and the receiver they arrive on ([`Deliveries`]) |
//! | `session` | what one Bayeux session remembers: `clientId`, the server's advice, subscriptions, counters ([`State`], [`Stats`]) |
//! | `transport` | how messages travel: long-polling or websocket, chosen with [`TransportKind`]; plain HTTP ([`RawResponse`], [`http_client`]) |
//! | `transport::long_polling` | one HTTP/1.1 `POST` per batch, answered with replies and queued deliveries |
//! | `transport::websocket` | one WebSocket per client: a reader task hands deliveries over as they come and matches replies to requests by `id` |
//! | `shared` | what a client and its connect loop share: transport, session, settings, the handshake ([`HandshakeInfo`]) and request/reply exchanges |
//! | `connect_loop` | the background task that keeps a `/meta/connect` outstanding and follows the advice |
//! | `client` | [`Client`] and its builder: handshake, subscribe, publish, disconnect, raw requests |
//!
//! Cost per client matters (the load generator runs ~15,000 of them in one
//! process): a client is one `Arc`, a few small mutexes, one background task
//! (plus, on websocket, one socket and its reader task; no polling loops)
//! and, when it is given one, a shared `reqwest::Client` (connection pool);
//! cookies are handled here rather than by a reqwest cookie store so that many
//! "browsers" can share one HTTP client.

// Layered as in the table above (rustfmt sorts these lines alphabetically).
mod ack;
mod client;
mod connect_loop;
mod cookie;
mod delivery;
mod error;
mod message;
mod session;
mod shared;
mod tls;
mod transport;

pub use client::{Client, ClientBuilder, PublishAck};
pub use cookie::CookieJar;
pub use delivery::{Deliveries, Delivery};
pub use error::{Error, Result, ServerError};
pub use halley_protocol::{Advice, Reconnect};
pub use message::{Incoming, Outgoing};
pub use session::{State, Stats};
pub use shared::HandshakeInfo;
pub use tls::Trust;
pub use transport::{http_client, RawResponse, TransportKind};
