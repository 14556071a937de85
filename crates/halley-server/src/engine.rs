//! The dispatcher: one batch of messages in, an [`Exchange`] out.
//!
//! Transports decode a request into messages and hand them to
//! [`Engine::handle_batch`]. For each message it checks the `id` and
//! `channel`, parses `ext` once (meta and service messages), resolves the
//! session the message speaks for (all but the handshake) and refuses it
//! if the session's credentials expired ([`crate::credentials`]), runs the
//! extensions' incoming hooks ([`crate::ext`]), calls the handler by
//! channel (`meta/<channel>.rs`, `publish.rs`, `service/`), and runs the
//! outgoing hooks on its reply. A batch's second `/meta/handshake` is
//! refused (`400::one_handshake_per_request`). The `/meta/connect` is left pending in the
//! exchange: the connection state machine ([`crate::connection`]) answers
//! it last, possibly after holding it.
//!
//! The engine sits above the handlers and the core ([`Node`]) they share;
//! nothing below imports it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use halley_protocol::codec::InvalidMessage;
use halley_protocol::{meta, BayeuxError, ChannelKind, Inbound, Message, Reply};

use crate::config::Config;
use crate::exchange::{Exchange, Origin};
use crate::ext::{Context, InboundExt};
use crate::meta as handlers;
use crate::node::Node;
use crate::state::limits::Limit;
use crate::state::session::{ConnectionType, Session};

pub struct Engine {
    node: Arc<Node>,
}

impl Engine {
    /// An engine on a new node with the embedded broker, and the built-in
    /// services (`/service/echo`, `/service/presence`).
    pub fn new(config: Config) -> Arc<Self> {
        Self::with_node(Node::new(config))
    }

    /// An engine dispatching to `node` (e.g. one built with another
    /// broker), with the built-in services registered on it.
    pub fn with_node(node: Arc<Node>) -> Arc<Self> {
        crate::service::echo::register(node.services());
        crate::service::presence::register(&node);
        Arc::new(Engine { node })
    }

    /// The node: its state, its configuration, its broker.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Handles every message of one request, in order.
    ///
    /// Boxed: a transport's task (a held long poll, an idle WebSocket) is
    /// as large as its largest state, and handling a batch is big (~2.5 KB
    /// of futures: handlers, Metadata Adapter verdicts) but short-lived; on
    /// the heap only while it runs, it no longer sizes every idle client's
    /// task (see docs/benchmarks.md, memory per idle client).
    pub fn handle_batch(
        &self,
        batch: Vec<Inbound>,
        origin: Origin,
    ) -> Pin<Box<dyn Future<Output = Exchange> + Send + '_>> {
        Box::pin(self.handle_batch_inline(batch, origin))
    }

    async fn handle_batch_inline(&self, batch: Vec<Inbound>, origin: Origin) -> Exchange {
        let mut exchange = Exchange::new(origin, batch.len());
        let mut handshakes = 0usize;
        for inbound in batch {
            match inbound {
                Ok(message) if message.channel.as_deref() == Some(meta::HANDSHAKE) => {
                    handshakes += 1;
                    // One session per request, as CometD: a batch of
                    // handshakes would create sessions faster than any
                    // per-request limit could see.
                    if handshakes > 1 {
                        self.node.limits().hit(Limit::HandshakesPerRequest, || {
                            "a request carried more than one /meta/handshake; refused the extra ones".into()
                        });
                        let reply = Reply::to(meta::HANDSHAKE, message.id)
                            .failure(BayeuxError::HANDSHAKE_ONCE_PER_REQUEST);
                        exchange.handshake_replies.push(reply);
                        continue;
                    }
                    self.handle_message(message, &mut exchange).await
                }
                Ok(message) => self.handle_message(message, &mut exchange).await,
                Err(invalid) => exchange.replies.push(invalid_reply(invalid)),
            }
        }
        // A long poll that may be held: on a cluster, the other nodes count
        // its browser's polls too (`max-sessions-per-browser`).
        if exchange.batch_len == 1 && exchange.origin.connection_type != ConnectionType::WebSocket {
            let asked = match (exchange.browser_id(), exchange.connect.as_ref()) {
                (Some(browser), Some(pending)) => {
                    let client_id = pending.session().client_id();
                    self.node
                        .ask_cluster_for_poll(browser, client_id, pending.hold_for())
                        .await
                }
                _ => None,
            };
            if let (Some(poll), Some(pending)) = (asked, exchange.connect.as_mut()) {
                pending.set_cluster_poll(poll);
            }
        }
        exchange
    }

    async fn handle_message(&self, mut message: Message, exchange: &mut Exchange) {
        let node = &*self.node;
        if !message.id_is_valid() {
            let reply = Reply::to(message.channel.unwrap_or_default(), None)
                .failure(BayeuxError::MESSAGE_ID_INVALID);
            exchange.replies.push(reply);
            return;
        }
        let Some(channel) = message.channel.clone() else {
            let reply = Reply::to("", message.id).failure(BayeuxError::CHANNEL_MISSING);
            exchange.replies.push(reply);
            return;
        };
        let kind = route(&channel);
        if kind == ChannelKind::Meta && !is_defined_meta_channel(&channel) {
            // Not a meta channel Bayeux defines: a publish to /meta/**.
            let reply = Reply::to(channel, message.id).failure(BayeuxError::PUBLISH_DENIED);
            exchange.replies.push(reply);
            return;
        }
        let received_ms = node.sessions().clock().wall_ms();
        // Parsed once, here; a broadcast publish keeps its `ext` raw.
        let ext = match kind {
            ChannelKind::Broadcast => InboundExt::EMPTY,
            ChannelKind::Meta | ChannelKind::Service => InboundExt::parse(message.ext.as_deref()),
        };

        if channel == meta::HANDSHAKE {
            if let Err(error) = node
                .extensions()
                .incoming(&mut message, &context(None, &ext, received_ms, received_ms))
            {
                exchange.handshake_replies.push(refused(&message, error));
                return;
            }
            let ext_value = handshake_ext(&message);
            let (mut reply, session) =
                handlers::handshake::handle(node, message, ext_value, exchange).await;
            let outcome = match session {
                Some(_) => crate::metrics::Outcome::Accepted,
                None => crate::metrics::Outcome::Denied,
            };
            crate::metrics::metrics().handshakes.get(outcome).inc();
            let now = node.sessions().clock().wall_ms();
            node.extensions().outgoing(
                &mut reply,
                &context(session.as_ref(), &ext, received_ms, now),
            );
            if let Some(session) = &session {
                // A cluster node: in Redis before the client hears of it, so
                // its next request may reach any node. Without Redis, no new
                // session (its next request, on another node, would not
                // find it): the client retries later, as advised.
                if !node.store_session(session).await {
                    node.remove_session(session, crate::state::listeners::SessionEnd::Disconnected);
                    reply = Reply::to(meta::HANDSHAKE, reply.id.clone())
                        .failure(crate::broker::UNAVAILABLE)
                        .with_advice(halley_protocol::Advice::retry(
                            node.config().interval.max(1000) as i64,
                            node.config().timeout as i64,
                        ));
                }
            }
            exchange.handshake_replies.push(reply);
            return;
        }

        let acknowledged = crate::ext::ack::received(ext.ack.as_ref());
        let session = match exchange.resolve_session(node, &message, acknowledged).await {
            Ok(session) => session,
            Err(mut reply) => {
                if kind != ChannelKind::Broadcast && channel != meta::CONNECT {
                    let now = node.sessions().clock().wall_ms();
                    node.extensions()
                        .outgoing(&mut reply, &context(None, &ext, received_ms, now));
                }
                exchange.replies.push(*reply);
                return;
            }
        };
        // Credentials that expired end the session here, whatever the
        // message (a connect may first refresh them).
        if let Err(reply) = crate::credentials::check(node, &message, &session, received_ms).await {
            exchange.replies.push(*reply);
            return;
        }
        let incoming = context(Some(&session), &ext, received_ms, received_ms);
        let verdict = match kind {
            ChannelKind::Broadcast => node.extensions().incoming_added(&mut message, &incoming),
            _ => node.extensions().incoming(&mut message, &incoming),
        };
        if let Err(error) = verdict {
            exchange.replies.push(refused(&message, error));
            return;
        }

        let mut reply = match channel.as_str() {
            meta::CONNECT => {
                match handlers::connect::handle(node, message, session, ext, received_ms, exchange)
                {
                    Ok(pending) => {
                        // Only the last connect of a batch is held; an
                        // earlier one (a confused client) is answered now.
                        if let Some(earlier) = exchange.connect.replace(pending) {
                            let (reply, _) = earlier.answer(
                                node,
                                crate::exchange::ConnectEnd::Superseded,
                                tokio::time::Instant::now(),
                            );
                            exchange.replies.push(reply);
                        }
                    }
                    Err(reply) => exchange.replies.push(*reply),
                }
                // Its outgoing hooks run when it is answered.
                return;
            }
            // On a cluster node, made and written under the session's turn,
            // so that a node taking the session over gets the change.
            meta::SUBSCRIBE => {
                let (session, _turn) = node.hold(session.clone()).await;
                let reply = handlers::subscribe::handle(node, message, &session, &ext).await;
                node.store_session(&session).await;
                reply
            }
            meta::UNSUBSCRIBE => {
                let (session, _turn) = node.hold(session.clone()).await;
                let reply = handlers::unsubscribe::handle(node, message, &session);
                node.store_session(&session).await;
                reply
            }
            meta::DISCONNECT => {
                handlers::disconnect::handle(node, message, session.clone(), exchange)
            }
            _ if kind == ChannelKind::Service => {
                crate::service::handle(node, message, &session).await
            }
            _ => crate::publish::handle(node, message, &session).await,
        };
        let now = node.sessions().clock().wall_ms();
        let outgoing = context(Some(&session), &ext, received_ms, now);
        match kind {
            ChannelKind::Broadcast => node.extensions().outgoing_added(&mut reply, &outgoing),
            _ => node.extensions().outgoing(&mut reply, &outgoing),
        }
        exchange.replies.push(reply);
    }
}

/// Where a message goes by its channel: `/meta` and `/meta/**` to the meta
/// handlers, `/service/**` to the services, anything else to the publish
/// handler (which refuses what is not a valid broadcast channel, e.g.
/// `/service` itself).
fn route(channel: &str) -> ChannelKind {
    if channel == "/meta" || channel.starts_with("/meta/") {
        ChannelKind::Meta
    } else if channel.starts_with("/service/") {
        ChannelKind::Service
    } else {
        ChannelKind::Broadcast
    }
}

/// The meta channels Bayeux defines; any other `/meta/**` is refused.
fn is_defined_meta_channel(channel: &str) -> bool {
    matches!(
        channel,
        meta::HANDSHAKE | meta::CONNECT | meta::SUBSCRIBE | meta::UNSUBSCRIBE | meta::DISCONNECT
    )
}

fn context<'a>(
    session: Option<&'a Arc<Session>>,
    ext: &'a InboundExt,
    received_ms: i64,
    now_ms: i64,
) -> Context<'a> {
    Context {
        session,
        ext,
        received_ms,
        now_ms,
        ack_batch: None,
    }
}

/// A handshake's whole `ext`, for the Metadata Adapter (credentials).
fn handshake_ext(message: &Message) -> serde_json::Value {
    message
        .ext
        .as_deref()
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .unwrap_or_default()
}

/// The reply to a message an extension refused.
fn refused(message: &Message, error: BayeuxError) -> Reply {
    Reply::to(
        message.channel.clone().unwrap_or_default(),
        message.id.clone(),
    )
    .failure(error)
}

fn invalid_reply(invalid: InvalidMessage) -> Reply {
    tracing::debug!(reason = %invalid.reason, "invalid message in batch");
    Reply::to(invalid.channel.unwrap_or_default(), invalid.id).failure(BayeuxError::MESSAGE_INVALID)
}
