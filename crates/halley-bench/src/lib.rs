//! `halley bench`: the load generator that reproduces the benchmark of the
//! article Halley started from (chat users in rooms of 200, bursts of
//! 50-byte messages to 10 random rooms) against any Bayeux server.
//!
//! | module | what it holds |
//! |---|---|
//! | [`scenario`] | the workload as numbers: rooms, members, offered rate |
//! | [`cuts`] | a soak's schedule of connection cuts: when, and which users |
//! | [`payload`] | what a message carries: scheduled send time, room, sequence |
//! | [`publisher`] | the open-loop burst schedule (no coordinated omission) |
//! | [`worker`] | one process's users: real clients, counting and timing deliveries |
//! | [`tally`] | per-user sequence tracking: duplicates, out-of-order |
//! | [`histogram`] | HdrHistogram latencies, merged across processes |
//! | [`control`] | the JSON-lines dialogue between coordinator and workers |
//! | [`run`] | the coordinator: phases, progress, merge, [`report::Report`] |
//! | [`report`] | the summary and the JSON contract scripts rely on |
//! | [`series`] | a long run's time series: server RSS, fds, sessions, rates, latency |
//! | [`sweep`] | a matrix of runs; [`chart`] draws it as the seed's SVG chart (and a series) |
//! | [`sysstat`] | CPU time and RSS from `/proc` (both sides share the cores) |
//! | [`transport`] | the clients of a run, long-polling, websocket or both |

pub mod chart;
pub mod control;
pub mod cuts;
pub mod histogram;
pub mod payload;
pub mod publisher;
pub mod report;
pub mod run;
pub mod scenario;
pub mod series;
pub mod sweep;
pub mod sysstat;
pub mod tally;
pub mod transport;
pub mod worker;

pub use report::Report;
pub use run::{run, RunOptions};
pub use scenario::{Scenario, TransportChoice};
