//! The Halley server: a Bayeux engine and its HTTP transports.
//!
//! Layers, bottom up; each imports only from the layers below it:
//!
//! | layer | modules | job |
//! |---|---|---|
//! | state | [`state`], [`history`] (replay) (`outbox`, `session`, `sessions`, `subscriptions`, `sweeper`, `listeners`) | sessions, their bounded queues, who subscribes to what, expiry, who hears when a session ends |
//! | handlers | [`meta`] (one file per meta channel), [`ext`] (ack, timesync), [`publish`], [`service`] (`echo`, `presence`), [`adapter`] (Data Adapters, in-process and remote over TCP), [`metadata`] (Metadata Adapters: JWT, webhook, session caps) | what each kind of message does; where server-side messages come from; who may do what |
//! | dispatch | [`engine`], [`rules`] (per-channel settings), [`qos`] (max frequency, bandwidth, publish rate) | one batch in, replies out; the publish path |
//! | I/O | [`transport`] (long-polling, callback-polling, websocket, pages, the HTTP publish API), [`server`] | HTTP, cookies, bodies, accept loop, shutdown; the chat demo and `/halley.js` |
//!
//! Settings live in [`config`]; the shutdown signal in [`shutdown`].
//!
//! The path of a broadcast: a transport decodes the request
//! (`halley_protocol::decode_batch`), [`Engine::handle_batch`] routes the
//! publish to [`publish`], which calls [`Engine::publish`]: the delivery is
//! encoded once into `Bytes`, the subscriber sets of the O(depth) matching
//! patterns are looked up, and each subscriber's outbox gets a clone of the
//! same `Bytes`; a held connect waiting on that session wakes and writes it.
//!
//! Embedding:
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let server = halley_server::Server::bind(halley_server::Config::default()).await?;
//! server.node().services().register("/service/ping", |_req| async {
//!     Ok(serde_json::json!("pong"))
//! });
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

pub mod adapter;
pub mod broker;
pub mod config;
pub mod connection;
pub mod engine;
pub mod exchange;
pub mod ext;
pub mod history;
pub mod meta;
pub mod metadata;
pub mod node;
pub mod publish;
pub mod qos;
pub mod rules;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod state;
pub mod transport;

pub use config::Config;
pub use engine::Engine;
pub use node::Node;
pub use server::Server;
