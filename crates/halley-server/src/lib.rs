//! The Halley server: a Bayeux engine and its HTTP transports.
//!
//! Floors, bottom up; a module imports only from its own floor's
//! neighbours below it and from lower floors, never from above (checked
//! with `farm-studio look crates/halley-server/src`; see
//! `docs/architecture.md`):
//!
//! | floor | modules | job |
//! |---|---|---|
//! | state | [`state`] (session, sessions, outbox, subscriptions, unacked, throttle, token bucket, grant, clock, sweeper, listeners), [`history`], [`broker`] (the seam: [`broker::Broker`], [`broker::local::LocalBroker`], and with the `redis` feature the cluster's `broker::redis::RedisBroker`), [`shutdown`] (and the drain's pacing), [`metrics`] (every Prometheus metric), [`traffic`] (the admin page's bounded per-channel counts) | what a node remembers, knowing nothing of messages' handling |
//! | extensions, rules | [`ext`] (the pipeline and ack, timesync, replay), [`metadata`] (Metadata Adapters: JWT, webhook, session caps, measured), [`config`], `rules` (per-channel settings parsed once), `qos` (the decisions of max frequency, bandwidth, publish rate) | how messages may be rewritten or refused; who may do what; the settings |
//! | core | [`node`] ([`Node`]: the shared state, the Data Adapter and service registries, the broker; the fan-out) | one handle on everything a node holds; the only way a publish leaves the node |
//! | handlers | [`exchange`] (one request's passage: origin, replies, the pending connect, session resolution), [`credentials`] (expiring credentials, refreshed on a connect), `meta` (one file per meta channel), `publish`, [`service`] (dispatch, `echo`, `presence`), [`adapter`] (the [`adapter::Publisher`], remote Data Adapters over TCP) | what each kind of message does; where server-side messages come from |
//! | connection | [`connection`] | the sans-io state machine every transport drives: what to write, when to wake |
//! | dispatch | [`engine`] ([`Engine`]) | one batch in: session, extensions, handler, replies |
//! | I/O | [`transport`] (long-polling, callback-polling, websocket, pages, the HTTP publish API, TLS), [`admin`] (the admin listener: `/metrics`, `/healthz`, `/readyz`, the admin page and `/api/stats`), [`server`] ([`Server`]) | HTTP, cookies, bodies, accept loop, drain, shutdown; the chat demo and `/halley.js` |
//!
//! Outside the floors, hidden from the docs: `fuzzing`, the fuzz targets'
//! handles on parsers that are otherwise private (`fuzz/` at the repository's root).
//!
//! The path of a broadcast: a transport decodes the request
//! (`halley_protocol::decode_batch`); [`Engine::handle_batch`] resolves the
//! session, runs the extensions and routes the publish to `publish`, which
//! calls [`Node::publish`]; the node hands it to its [`broker::Broker`],
//! and the local broker to the node's own fan-out: the delivery is encoded
//! once into `Bytes`, the subscriber sets of the O(depth) matching patterns
//! are looked up, and each subscriber's outbox gets a clone of the same
//! `Bytes`. The session's wake-up reaches whoever waits for it; that
//! transport asks its [`connection::Connection`] what to write, and writes it.
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
pub mod admin;
pub mod broker;
pub mod config;
pub mod connection;
pub mod credentials;
pub mod engine;
pub mod exchange;
pub mod ext;
#[doc(hidden)]
pub mod fuzzing;
pub mod history;
pub(crate) mod meta;
pub mod metadata;
pub mod metrics;
pub mod node;
pub(crate) mod publish;
pub(crate) mod qos;
pub(crate) mod rules;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod state;
pub mod traffic;
pub mod transport;

pub use config::Config;
pub use engine::Engine;
pub use node::Node;
pub use server::Server;
