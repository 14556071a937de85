//! The accept loop, the drain and graceful shutdown.
//!
//! [`Server::bind`] opens the sockets, the public one and the admin one
//! (so `127.0.0.1:0` can be bound and its port read before serving);
//! [`Server::run`] serves until the given signal resolves, then: stops
//! accepting, answers every held `/meta/connect` with `reconnect: retry`,
//! lets in-flight responses finish (bounded by a grace period), and
//! returns. The links of remote adapters run beside it and end with it,
//! and so do the broker's tasks (with `redis` set: the cluster's reader and
//! writer, see [`crate::broker::redis`]), and the admin listener
//! ([`crate::admin`]).
//!
//! [`Server::run_with_drain`] adds a drain, for a node a load balancer
//! sends clients to. When its `drain` signal resolves:
//!
//! 1. `/readyz` answers 503 at once; the node serves as before for
//!    `drain-delay`, while the balancers notice and stop sending it clients;
//! 2. it stops accepting connections, and HTTP connections close after
//!    their response (a client's next request opens a new connection);
//! 3. over `drain-timeout` it asks its sessions to leave, spread evenly in
//!    a fixed order ([`crate::shutdown`]): a held connect is answered with
//!    `reconnect: retry` (the client keeps its clientId and subscriptions,
//!    and reconnects on a new connection, so to another node), a
//!    WebSocket is then closed (1001);
//! 4. then it shuts down as above.
//!
//! Its `stop` signal, at any time, shuts down at once.
//!
//! What bounds a connection here (see `docs/security.md`): a place among
//! the open connections, in total and per client IP
//! ([`crate::transport::connections`]), taken before it is served (over a
//! cap it is closed at once); with `tls-cert`, the TLS handshake's timeout
//! (the header-read timeout, [`crate::transport::tls`]); the HTTP
//! connection's header-read timeout, which also ends a keep-alive
//! connection idle between requests ([`crate::transport::http1`]); and an accept loop that backs off when accepting fails
//! (out of file descriptors) instead of spinning.
//!
//! TLS is one layer of the accept path: each admitted connection goes
//! through [`PublicTls::accept`] when `tls-cert` is set, and
//! [`crate::transport::http1`] serves the [`Stream`] that comes out,
//! encrypted or not.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::task::TaskTracker;

use crate::adapter;
use crate::admin::health::{Health, Phase};
use crate::broker::LocalFanout;
use crate::config::Config;
use crate::engine::Engine;
use crate::metadata::measured::Measured;
use crate::node::Node;
use crate::state::limits::Limit;
use crate::transport;
use crate::transport::connections::OpenConnections;
use crate::transport::tls::{PublicTls, Stream};

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
    /// The admin listener's socket (none: `admin-listen = "off"`).
    admin: Option<TcpListener>,
    /// Starting, serving, draining; read by `/readyz`.
    health: Arc<Health>,
    /// The links of the remote adapters, started by [`Server::run`].
    remote_links: Vec<adapter::remote::Link>,
    /// HTTPS and WSS on `listener` (none: plain HTTP).
    tls: Option<Arc<PublicTls>>,
}

/// Why the accept loop ended.
enum Ended {
    /// Shut down at once.
    Stop,
    /// A drain reached the point where clients are moved away.
    Draining,
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
        // Before binding: a certificate that cannot be read is a
        // configuration error, named as such.
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(PublicTls::load(cert, key).map_err(invalid)?)),
            _ => None,
        };
        let listener = listen(config.listen)?;
        let admin_addr = config.admin_listen.addr();
        let engine = Engine::with_node(node(config).await?);
        let node = engine.node();
        // After joining the cluster: an unreachable Redis is the error to show.
        let admin =
            match admin_addr {
                Some(addr) => Some(listen(addr).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("admin-listen {addr}: {e}"))
                })?),
                None => None,
            };
        // Measured: the metrics count its answers, `/readyz` sees its
        // backend go down.
        let metadata = metadata.map(Measured::new);
        if let Some(metadata) = &metadata {
            node.set_metadata_adapter(metadata.clone())
                .map_err(invalid)?;
        }
        let health = Arc::new(Health::new(metadata));
        // Registered now, so the adapters own their channels before the
        // first client arrives; their `listen` sockets are bound now too.
        let mut remote_links = Vec::new();
        for remote in &node.config().remote_adapter {
            remote_links.push(adapter::remote::bind(node, remote).await?);
        }
        Ok(Server {
            engine,
            listener,
            admin,
            health,
            remote_links,
            tls,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The admin listener's address (none when `admin-listen` is `off`).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|a| a.local_addr().ok())
    }

    /// The public listener's TLS, when `tls-cert` is set: to reload the
    /// certificate on a signal ([`PublicTls::reload`]).
    pub fn tls(&self) -> Option<&Arc<PublicTls>> {
        self.tls.as_ref()
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
        self.run_with_drain(std::future::pending(), signal).await
    }

    /// Serves until `stop` resolves (then shuts down at once, as
    /// [`Server::run`]) or `drain` does (then drains, see the module
    /// documentation; `stop` still cuts the drain short).
    pub async fn run_with_drain(
        self,
        drain: impl Future<Output = ()>,
        stop: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let Server {
            engine,
            listener,
            admin,
            health,
            remote_links,
            tls,
        } = self;
        let addr = listener.local_addr()?;
        let node = engine.node().clone();
        // Up first, so `/readyz` says "starting" until the node serves.
        let admin = match admin {
            Some(admin) => {
                tracing::info!(
                    "admin endpoints at http://{} (/ the admin page, /metrics, /healthz, /readyz)",
                    admin.local_addr()?
                );
                Some(tokio::spawn(crate::admin::serve(
                    admin,
                    node.clone(),
                    health.clone(),
                )))
            }
            None => None,
        };
        // Before the first client: a cluster node must hear the others'
        // publications (and its own) from the moment it serves.
        let local: Weak<Node> = node.weak();
        let broker = node.broker().start(local as Weak<dyn LocalFanout>);
        for feature in node.config().features() {
            tracing::info!("{feature}");
        }
        // Ready before saying so: whoever waits for the line below may ask
        // `/readyz` at once (the listener is bound; accepting starts now).
        health.set_phase(Phase::Serving);
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!("listening on {scheme}://{addr}{}", node.config().path);
        // New certificates when the files change (SIGHUP: `PublicTls::reload`).
        if let Some(tls) = &tls {
            tokio::spawn({
                let (tls, node) = (tls.clone(), node.clone());
                async move { tls.watch(node.shutdown().wait()).await }
            });
        }

        let sweeper = tokio::spawn({
            let node = node.clone();
            async move { node.run_sweeper().await }
        });
        // A cluster node writes where its clients stand (nothing otherwise).
        tokio::spawn({
            let node = node.clone();
            async move { node.run_record_refresh().await }
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
        let limits = transport::http1::Limits {
            header_read_timeout,
            max_body_bytes: config.max_request_bytes,
        };
        let mut backoff = MIN_ACCEPT_BACKOFF;
        tokio::pin!(drain);
        tokio::pin!(stop);
        let mut pacing = None;
        let ended = loop {
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
                            _ = &mut stop => break Ended::Stop,
                        }
                        backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                        continue;
                    }
                },
                _ = &mut drain, if pacing.is_none() => {
                    let config = node.config();
                    let (delay, window) = (config.drain_delay(), config.drain_timeout());
                    tracing::info!(
                        "draining: not ready; serving {delay:?} more, then moving clients away over {window:?}"
                    );
                    health.set_phase(Phase::Draining);
                    pacing = Some(tokio::spawn(drain_clients(node.clone(), delay, window)));
                    continue;
                }
                _ = node.shutdown().wait_draining(), if pacing.is_some() => break Ended::Draining,
                _ = &mut stop => break Ended::Stop,
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
            let node = node.clone();
            let tls = tls.clone();
            let engine = engine.clone();
            let sockets = tasks.clone();
            tasks.spawn(async move {
                let stream = match &tls {
                    None => Stream::Plain(stream),
                    Some(tls) => {
                        // Boxed: inline, the handshake's state (rustls'
                        // buffers) would size this task's future for the
                        // connection's whole life, plain ones included
                        // (+1.3 KiB per idle long-polling client, measured).
                        let accept = Box::pin(tls.accept(stream, header_read_timeout));
                        let accepted = tokio::select! {
                            accepted = accept => accepted,
                            // Nothing to answer yet: shutdown need not wait for it.
                            _ = node.shutdown().wait() => return,
                        };
                        match accepted {
                            Ok(stream) => stream,
                            Err(error) => {
                                node.limits().hit(Limit::TlsHandshake, || {
                                    format!("TLS handshake with {addr} failed: {error}; closed")
                                });
                                return;
                            }
                        }
                    }
                };
                // The connection closes after its response in flight once
                // the server drains (held connects are answered at
                // shutdown, or as a drain reaches their session): the
                // client's next request opens a new connection, which a
                // balancer sends to another node.
                let result = transport::http1::serve(stream, limits, node.shutdown(), |request| {
                    transport::route(engine.clone(), sockets.clone(), &peer, request)
                })
                .await;
                if let Err(error) = result {
                    if error.is_timeout() {
                        node.limits().hit(Limit::HeaderReadTimeout, || {
                            format!(
                                "{addr} sent no complete request in {header_read_timeout:?}; closed"
                            )
                        });
                    } else if let transport::http1::Error::Refused(why) = error {
                        node.limits().hit(Limit::RequestHead, || {
                            format!(
                                "{addr} sent a request refused before any handler ({why}); closed"
                            )
                        });
                    } else {
                        tracing::debug!(%addr, %error, "connection ended with an error");
                    }
                }
            });
        };

        drop(listener);
        match (ended, pacing) {
            (Ended::Draining, Some(mut pacing)) => {
                tracing::info!(
                    "draining: no longer accepting connections; asking clients to reconnect elsewhere"
                );
                tokio::select! {
                    _ = &mut pacing => tracing::info!("drained: every session was asked to reconnect elsewhere"),
                    _ = &mut stop => {
                        pacing.abort();
                        tracing::info!("drain cut short");
                    }
                }
            }
            (Ended::Stop, Some(pacing)) => {
                pacing.abort();
                tracing::info!("drain cut short");
            }
            (_, None) => {}
        }
        tracing::info!("shutting down: answering held connects");
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
        // A cluster node: where each client stands, for the node it moves to.
        node.store_all_sessions().await;
        // Last: the answers above may still have published.
        node.broker().stop();
        if let Some(broker) = broker {
            let _ = broker.await;
        }
        if let Some(admin) = admin {
            admin.abort();
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// A drain's work once `/readyz` says 503: waits `delay`, then moves the
/// sessions away evenly over `window`, in the order of their slots
/// ([`crate::shutdown::slot`]): each step raises the bound and wakes the
/// sessions it passed, whose held connect is then answered.
async fn drain_clients(node: Arc<Node>, delay: Duration, window: Duration) {
    tokio::time::sleep(delay).await;
    let shutdown = node.shutdown();
    shutdown.begin_drain();
    // About 50 steps over the window: spread enough, cheap enough (each
    // step looks at every session).
    let step = (window / 50).max(Duration::from_millis(10));
    let start = tokio::time::Instant::now();
    loop {
        let elapsed = start.elapsed();
        let bound = if elapsed >= window {
            u64::MAX
        } else {
            (elapsed.as_secs_f64() / window.as_secs_f64() * u64::MAX as f64) as u64
        };
        let previous = shutdown.ask_below(bound);
        for session in node.sessions().all() {
            let slot = crate::shutdown::slot(session.client_id());
            if slot >= previous && (slot < bound || bound == u64::MAX) {
                session.wake().notify_waiters();
            }
        }
        if bound == u64::MAX {
            return;
        }
        tokio::time::sleep(step).await;
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
