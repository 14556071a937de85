//! Building the Bayeux clients of a run for the chosen transport.

use std::net::IpAddr;

use halley_client::{Client, TransportKind};

use crate::scenario::{Scenario, TransportChoice};

/// One HTTP connection pool per worker: each user still gets its own
/// connection for its held `/meta/connect`, but idle connections are reused.
pub fn shared_http(local_address: Option<IpAddr>) -> reqwest::Client {
    halley_client::http_client(local_address).expect("an HTTP client without TLS always builds")
}

/// A client of `url` (one of the scenario's), as one simulated user (its own
/// cookie jar), with the ack extension when the scenario asks for it; user
/// (or publisher) `index` picks its transport when the scenario mixes them.
pub fn client(
    scenario: &Scenario,
    index: usize,
    url: &str,
    http: reqwest::Client,
    local_address: Option<IpAddr>,
    spare_connection: bool,
) -> anyhow::Result<Client> {
    let builder = Client::builder(url.to_owned()).http_client(http);
    let builder = match local_address {
        Some(address) => builder.local_address(address),
        None => builder,
    };
    let kind = match scenario.transport.for_index(index) {
        TransportChoice::Websocket => TransportKind::WebSocket,
        TransportChoice::LongPolling | TransportChoice::Mixed => TransportKind::LongPolling,
    };
    Ok(builder
        .transport(kind)
        .ack(scenario.ack)
        .spare_connection(spare_connection)
        .build()?)
}
