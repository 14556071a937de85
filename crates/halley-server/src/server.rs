//! The accept loop and graceful shutdown.
//!
//! [`Server::bind`] opens the socket (so `127.0.0.1:0` can be bound and its
//! port read before serving); [`Server::run`] serves until the given signal
//! resolves, then: stops accepting, answers every held `/meta/connect` with
//! `reconnect: retry`, lets in-flight responses finish (bounded by a grace
//! period), and returns. The links of remote adapters run beside it and
//! end with it, and so do the broker's tasks (with `redis` set: the
//! cluster's reader and writer, see [`crate::broker::redis`]).
//!
//! What bounds a connection here (see `docs/security.md`): a place among
//! the open connections, in total and per client IP
//! ([`crate::transport::connections`]), taken before it is served (over a
//! cap it is closed at once); hyper's header-read timeout, which also ends
//! a keep-alive connection idle between requests; and an accept loop that
//! backs off when accepting fails (out of file descriptors) instead of
//! spinning.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::task::TaskTracker;

use crate::adapter;
use crate::broker::LocalFanout;
use crate::config::Config;
use crate::engine::Engine;
use crate::node::Node;
use crate::state::limits::Limit;
use crate::transport;
use crate::transport::connections::OpenConnections;

/// Pending connections the kernel queues before `accept`: thousands of
/// clients connecting at once must not be refused (Linux caps it at
/// `net.core.somaxconn`).
const ACCEPT_BACKLOG: u32 = 4096;

/// The first wait after a failed `accept`, doubled up to [`MAX_ACCEPT_BACKOFF`]
/// while it keeps failing (out of file descriptors: only a closing
/// connection frees one, so retrying at once only burns CPU).
const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// How long in-flight responses may take to finish after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

pub struct Server {
    engine: Arc<Engine>,
    listener: TcpListener,
    /// The links of the remote adapters, started by [`Server::run`].
    remote_links: Vec<adapter::remote::Link>,
}

impl Server {
    /// Validates the configuration and binds its listen address; with
    /// `redis` set, joins the cluster first (an unreachable Redis is an
    /// error naming its URL).
    pub async fn bind(config: Config) -> std::io::Result<Server> {
        config
            .validate()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        let metadata = config.metadata_adapter().map_err(invalid)?;
        let listener = listen(config.listen)?;
        let engine = Engine::with_node(node(config).await?);
        let node = engine.node();
        if let Some(metadata) = metadata {
            node.set_metadata_adapter(metadata).map_err(invalid)?;
        }
        // Registered now, so the adapters own their channels before the
        // first client arrives; their `listen` sockets are bound now too.
        let mut remote_links = Vec::new();
        for remote in &node.config().remote_adapter {
            remote_links.push(adapter::remote::bind(node, remote).await?);
        }
        Ok(Server {
            engine,
            listener,
            remote_links,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The engine, e.g. to register service handlers on its node before serving.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The node the engine serves (its state, services, adapters, broker).
    pub fn node(&self) -> &Arc<crate::node::Node> {
        self.engine.node()
    }

    /// Serves until `signal` resolves, then shuts down gracefully.
    pub async fn run(self, signal: impl Future<Output = ()>) -> std::io::Result<()> {
        let Server {
            engine,
            listener,
            remote_links,
        } = self;
        let addr = listener.local_addr()?;
        let node = engine.node().clone();
        // Before the first client: a cluster node must hear the others'
        // publications (and its own) from the moment it serves.
        let local: Weak<Node> = node.weak();
        let broker = node.broker().start(local as Weak<dyn LocalFanout>);
        tracing::info!("listening on http://{addr}{}", node.config().path);

        let sweeper = tokio::spawn({
            let node = node.clone();
            async move { node.run_sweeper().await }
        });
        // Each ends on the shutdown signal.
        let remote_links: Vec<_> = remote_links
            .into_iter()
            .map(|link| tokio::spawn(link.run(node.clone())))
            .collect();
        // Connections and WebSocket tasks (which outlive their upgraded
        // HTTP connection) are tracked so shutdown can wait for them.
        let tasks = TaskTracker::new();
        let config = node.config();
        let open = OpenConnections::new(config.max_connections, config.max_connections_per_ip);
        let header_read_timeout = Duration::from_millis(config.header_read_timeout);
        let mut backoff = MIN_ACCEPT_BACKOFF;
        tokio::pin!(signal);
        loop {
            let (stream, addr) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // EMFILE and friends: back off instead of spinning,
                        // and say so at a bounded rate.
                        node.limits().hit(Limit::AcceptErrors, || {
                            format!("accept failed: {error}; retrying in {backoff:?}")
                        });
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = &mut signal => break,
                        }
                        backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                        continue;
                    }
                },
                _ = &mut signal => break,
            };
            backoff = MIN_ACCEPT_BACKOFF;
            let peer = match open.admit(addr) {
                Ok(peer) => peer,
                Err(limit) => {
                    // Closed at once (dropped): no bytes read, none written.
                    node.limits().hit(limit, || {
                        format!("connection from {addr} closed: {} open", open.total())
                    });
                    continue;
                }
            };
            // Small writes (a delivery, a connect reply) must leave at once.
            let _ = stream.set_nodelay(true);
            let service = service_fn({
                let engine = engine.clone();
                let tasks = tasks.clone();
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(peer.clone());
                    transport::route(engine.clone(), tasks.clone(), request)
                }
            });
            let node = node.clone();
            tasks.spawn(async move {
                // The timer starts whenever hyper waits for a request head:
                // on a new connection, and between two keep-alive requests.
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_read_timeout)
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                tokio::pin!(connection);
                let result = tokio::select! {
                    result = connection.as_mut() => result,
                    _ = node.shutdown().wait() => {
                        // Finish the response in flight (held connects are
                        // being answered), then close.
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                };
                if let Err(error) = result {
                    if error.is_timeout() {
                        node.limits().hit(Limit::HeaderReadTimeout, || {
                            format!(
                                "{addr} sent no request head in {header_read_timeout:?}; closed"
                            )
                        });
                    } else {
                        tracing::debug!(%addr, %error, "connection ended with an error");
                    }
                }
            });
        }

        tracing::info!("shutting down: answering held connects");
        drop(listener);
        node.shutdown().trigger();
        tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
        }
        let _ = sweeper.await;
        for link in remote_links {
            let _ = link.await;
        }
        // Last: the answers above may still have published.
        node.broker().stop();
        if let Some(broker) = broker {
            let _ = broker.await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The node `config` asks for: with the embedded broker, or with `redis`
/// set, a member of the cluster on that Redis.
async fn node(config: Config) -> std::io::Result<Arc<Node>> {
    let Some(url) = config.redis.clone() else {
        return Ok(Node::new(config));
    };
    cluster_node(config, &url).await
}

#[cfg(feature = "redis")]
async fn cluster_node(config: Config, url: &str) -> std::io::Result<Arc<Node>> {
    let node_id = config
        .node_id
        .clone()
        .unwrap_or_else(|| format!("{:012x}", rand::random::<u64>() >> 16));
    let broker = crate::broker::redis::RedisBroker::connect(url, &node_id)
        .await
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::ConnectionRefused, e))?;
    tracing::info!("cluster mode: node {node_id}, Redis at {}", broker.url());
    Ok(Node::with_broker(config, Box::new(broker)))
}

#[cfg(not(feature = "redis"))]
async fn cluster_node(_: Config, _: &str) -> std::io::Result<Arc<Node>> {
    // Config::validate refuses it first; kept for embedders that skip it.
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        "redis is set, but this halley was built without the redis feature",
    ))
}

/// Binds with a deep accept backlog, and `SO_REUSEADDR` so a restarted
/// server can take its port back while old connections sit in TIME_WAIT.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}
