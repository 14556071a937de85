//! Adapters: where Halley meets the rest of a system.
//!
//! A Bayeux server on its own only relays what its clients publish. Most
//! real messages come from elsewhere: a price feed, a database's change
//! stream, a queue, a backend that calls an HTTP endpoint. Lightstreamer
//! calls the code that brings them in a *Data Adapter*; Halley uses the
//! same idea:
//!
//! - the [`DataAdapter`] trait and its registry, in the core
//!   ([`crate::node::data_adapters`], since the node tells adapters who listens). An adapter owns the channels of
//!   a pattern (`/stocks/*`), is told when one of them gains its first
//!   subscriber and loses its last (so a feed runs only while someone
//!   listens), may hand each new subscriber a snapshot (the current state,
//!   delivered to that subscriber only), and publishes through a
//!   [`Publisher`] ([`publisher`]), which goes through
//!   [`crate::node::Node::publish`] like any client's message: encoded
//!   once, fanned out to every subscriber.
//! - [`remote`]: remote Data Adapters, feeds in any language in their own
//!   process, linked over TCP by a line-delimited JSON protocol
//!   (`[[remote-adapter]]` in the configuration); each stands in the node
//!   as a [`DataAdapter`] relaying the notices and publishing what it sends.
//!
//! The HTTP publish API (`POST /api/publish`,
//! [`crate::transport::publish_api`]) is the adapter every deployment needs
//! first: a backend publishes with one authenticated HTTP request.

pub mod publisher;
pub mod remote;

pub use crate::node::data_adapters::{DataAdapter, DataAdapters};
pub use publisher::Publisher;
