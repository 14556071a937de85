//! Building the Bayeux clients of a run for the chosen transport.

use std::net::IpAddr;

use anyhow::Context;
use halley_client::{Client, ClientBuilder, TransportKind, Trust};

use crate::scenario::{Scenario, TransportChoice};

/// What the clients of one process share: one HTTP connection pool (each
/// user still gets its own connection for its held `/meta/connect`, but
/// idle connections are reused), and whose certificates an `https://`
/// server may present.
#[derive(Clone)]
pub struct SharedHttp {
    http: reqwest::Client,
    trust: Trust,
}

/// The system's roots, plus the scenario's `ca_cert` (`--ca-cert`): the
/// error names the file.
pub fn trust(scenario: &Scenario) -> anyhow::Result<Trust> {
    match &scenario.ca_cert {
        None => Ok(Trust::system()),
        Some(path) => Trust::with_ca_file(path).context("--ca-cert"),
    }
}

pub fn shared_http(
    scenario: &Scenario,
    local_address: Option<IpAddr>,
) -> anyhow::Result<SharedHttp> {
    let trust = trust(scenario)?;
    let http = trust
        .http_client(local_address)
        .context("building the HTTP client")?;
    Ok(SharedHttp { http, trust })
}

/// A client of `url` (one of the scenario's), as one simulated user (its own
/// cookie jar), with the ack extension when the scenario asks for it; user
/// (or publisher) `index` picks its transport when the scenario mixes them.
/// Built by the caller, who may add a delivery handler.
pub fn client(
    scenario: &Scenario,
    index: usize,
    url: &str,
    shared: SharedHttp,
    local_address: Option<IpAddr>,
    spare_connection: bool,
) -> ClientBuilder {
    let builder = Client::builder(url.to_owned())
        .http_client(shared.http)
        .trust(shared.trust);
    let builder = match local_address {
        Some(address) => builder.local_address(address),
        None => builder,
    };
    let kind = match scenario.transport.for_index(index) {
        TransportChoice::Websocket => TransportKind::WebSocket,
        TransportChoice::LongPolling | TransportChoice::Mixed => TransportKind::LongPolling,
    };
    builder
        .transport(kind)
        .ack(scenario.ack)
        .spare_connection(spare_connection)
}
