//! Open connections, counted in total and per client IP
//! (`max-connections`, `max-connections-per-ip`).
//!
//! Every accepted TCP connection asks [`OpenConnections::admit`] for a
//! place before it is served; over a cap it is closed at once (the accept
//! loop in [`crate::server`] drops it), so idle or slow sockets cannot hold
//! every file descriptor. The place is a [`Peer`], which the router hands
//! to each request's handler: a WebSocket keeps a clone after its HTTP
//! connection has been upgraded away, so the place is given back only when
//! the last user of the socket is gone.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::state::limits::{client_net, Limit};

pub struct OpenConnections {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    /// By [`client_net`]; an address leaves when its last connection closes.
    by_net: HashMap<IpAddr, usize>,
}

/// A connection's place, given back when the last clone is dropped.
#[derive(Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    _place: Arc<Place>,
}

struct Place {
    connections: Arc<OpenConnections>,
    net: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.connections.open.lock();
        open.total -= 1;
        if let Some(count) = open.by_net.get_mut(&self.net) {
            *count -= 1;
            if *count == 0 {
                open.by_net.remove(&self.net);
            }
        }
    }
}

impl OpenConnections {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(OpenConnections {
            max_total,
            max_per_ip,
            open: Mutex::default(),
        })
    }

    /// A place for a connection from `addr`, or the limit it would exceed.
    pub fn admit(self: &Arc<Self>, addr: SocketAddr) -> Result<Peer, Limit> {
        let net = client_net(addr.ip());
        let mut open = self.open.lock();
        if open.total >= self.max_total {
            return Err(Limit::Connections);
        }
        let count = open.by_net.entry(net).or_default();
        if *count >= self.max_per_ip {
            return Err(Limit::ConnectionsPerIp);
        }
        *count += 1;
        open.total += 1;
        Ok(Peer {
            addr,
            _place: Arc::new(Place {
                connections: self.clone(),
                net,
            }),
        })
    }

    /// Connections open now.
    pub fn total(&self) -> usize {
        self.open.lock().total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn caps_in_total_and_per_address_and_gives_places_back() {
        let connections = OpenConnections::new(3, 2);
        let a1 = connections.admit(addr("10.0.0.1:1")).unwrap();
        let a2 = connections.admit(addr("10.0.0.1:2")).unwrap();
        assert_eq!(
            connections.admit(addr("10.0.0.1:3")).err(),
            Some(Limit::ConnectionsPerIp)
        );
        let b1 = connections.admit(addr("10.0.0.2:1")).unwrap();
        assert_eq!(
            connections.admit(addr("10.0.0.3:1")).err(),
            Some(Limit::Connections)
        );
        let upgraded = a1.clone();
        drop(a1);
        assert_eq!(connections.total(), 3, "a clone keeps the place");
        drop(upgraded);
        assert!(connections.admit(addr("10.0.0.1:4")).is_ok());
        drop((a2, b1));
        assert_eq!(connections.total(), 0);
        assert!(connections.open.lock().by_net.is_empty());
    }
}
