//! The Data Adapter: server-side code that feeds a set of channels.
//!
//! Registered with `node.data_adapters().register(pattern, adapter)`, an
//! adapter *owns* the channels its pattern matches (`/stocks/*` owns
//! `/stocks/AAPL`). For each owned channel the node calls:
//!
//! - [`DataAdapter::first_subscriber`] when the channel goes from no
//!   subscriber to one: start the feed;
//! - [`DataAdapter::snapshot`] for every session that subscribes: the
//!   messages that session gets first, and alone (the last price, the
//!   current score);
//! - [`DataAdapter::last_unsubscribed`] when its last subscriber leaves,
//!   whether by `/meta/unsubscribe`, `/meta/disconnect`, expiry or overflow:
//!   stop the feed.
//!
//! Only subscriptions to a channel itself count: a `/stocks/*` or `/**`
//! subscriber (a monitor, a logger) hears what the feeds publish but does
//! not start them, and gets no snapshot.
//!
//! The adapter publishes with a [`crate::adapter::Publisher`], which calls
//! [`crate::node::Node::publish`] (encode once, fan out). Publishes of one adapter,
//! its snapshots and its start/stop calls take turns on one per-adapter
//! lock, so a new subscriber gets its snapshot before any later message
//! of that adapter and misses none. Client publishes (and every channel no
//! adapter owns) never touch that lock.
//!
//! The callbacks run on the task that caused them (a request handler, the
//! sweeper): keep them quick and non-blocking; spawn a task to start a
//! real feed. A callback may publish.

use std::collections::HashSet;
use std::sync::Arc;

use halley_protocol::{ChannelKind, ChannelName, ChannelPattern};
use parking_lot::{Mutex, ReentrantMutex, RwLock};
use serde_json::value::RawValue;

use crate::state::subscriptions::Subscriptions;

/// Server-side code that feeds the channels of one pattern. Every method
/// has a default that does nothing, so an adapter implements what it needs.
pub trait DataAdapter: Send + Sync + 'static {
    /// `channel` has its first subscriber: start feeding it.
    fn first_subscriber(&self, channel: &ChannelName) {
        let _ = channel;
    }

    /// `channel` lost its last subscriber: stop feeding it.
    fn last_unsubscribed(&self, channel: &ChannelName) {
        let _ = channel;
    }

    /// The `data` of the messages a new subscriber of `channel` receives
    /// before anything else, and alone. Called for every new subscriber
    /// (after `first_subscriber` for the first one).
    fn snapshot(&self, channel: &ChannelName) -> Vec<Box<RawValue>> {
        let _ = channel;
        Vec::new()
    }
}

/// One registered adapter and its bookkeeping.
pub(crate) struct Registered {
    pattern: ChannelPattern,
    adapter: Arc<dyn DataAdapter>,
    /// Taken by publishes, subscribes with snapshot, and start/stop calls.
    /// Reentrant so a callback may publish.
    turn: ReentrantMutex<()>,
    /// The channels the adapter was last told have subscribers.
    active: Mutex<HashSet<Box<str>>>,
    /// Channels whose subscriber count crossed zero, to reconcile under `turn`.
    edges: Mutex<Vec<Box<str>>>,
}

impl Registered {
    /// Reconciles pending edges if no one else holds the turn; whoever
    /// does will reconcile them when it lets go.
    fn drain(&self, subscriptions: &Subscriptions) {
        loop {
            if self.edges.lock().is_empty() {
                return;
            }
            let Some(_turn) = self.turn.try_lock() else {
                return;
            };
            let edges = std::mem::take(&mut *self.edges.lock());
            for channel in edges {
                self.reconcile(subscriptions, &channel);
            }
        }
    }

    /// Tells the adapter whether `channel` is listened to, if that changed
    /// since it was last told. Reads the current state, so edges reported
    /// out of order still end in the right call. Called under `turn`.
    fn reconcile(&self, subscriptions: &Subscriptions, channel: &str) {
        let listened = subscriptions.has_subscribers(channel);
        let changed = {
            let mut active = self.active.lock();
            if listened {
                active.insert(channel.into())
            } else {
                active.remove(channel)
            }
        };
        if !changed {
            return;
        }
        let Ok(name) = ChannelName::parse(channel) else {
            return;
        };
        if listened {
            self.adapter.first_subscriber(&name);
        } else {
            self.adapter.last_unsubscribed(&name);
        }
    }
}

/// The Data Adapters of one node.
pub struct DataAdapters {
    registered: RwLock<Vec<Arc<Registered>>>,
    /// The node's subscriptions: who listens decides what the adapters are
    /// told, and a new adapter hears of its channels listened to already.
    subscriptions: Arc<Subscriptions>,
}

impl DataAdapters {
    /// No adapters yet, for the node whose subscriptions these are.
    pub fn new(subscriptions: Arc<Subscriptions>) -> Self {
        DataAdapters {
            registered: RwLock::default(),
            subscriptions,
        }
    }

    /// Registers `adapter` as the owner of the broadcast channels matching
    /// `pattern` (a channel or a glob). When patterns overlap, the first
    /// registered wins. Channels it now owns that already have subscribers
    /// are announced with `first_subscriber` at once (those subscribers got
    /// no snapshot: they subscribed before the adapter existed).
    pub fn register(&self, pattern: &str, adapter: Arc<dyn DataAdapter>) -> Result<(), String> {
        let pattern = ChannelPattern::parse(pattern)
            .map_err(|e| format!("data adapter pattern {pattern:?}: {e}"))?;
        if pattern.kind() != ChannelKind::Broadcast {
            return Err(format!(
                "data adapter pattern {pattern}: only broadcast channels can be fed (not /meta or /service)"
            ));
        }
        let registered = Arc::new(Registered {
            pattern,
            adapter,
            turn: ReentrantMutex::new(()),
            active: Mutex::default(),
            edges: Mutex::default(),
        });
        self.registered.write().push(registered.clone());
        for channel in self.subscriptions.subscribed_channels() {
            // Owned by this adapter (not by one registered before it)?
            let owned = self
                .owner(&channel)
                .is_some_and(|owner| Arc::ptr_eq(&owner, &registered));
            if owned {
                registered.edges.lock().push(channel);
            }
        }
        registered.drain(&self.subscriptions);
        Ok(())
    }

    /// The patterns of the registered adapters, in registration order.
    pub fn patterns(&self) -> Vec<String> {
        self.registered
            .read()
            .iter()
            .map(|r| r.pattern.to_string())
            .collect()
    }

    /// Number of registered adapters.
    pub fn len(&self) -> usize {
        self.registered.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.registered.read().is_empty()
    }

    /// The adapter owning `subscription`, if it is a channel (not a glob)
    /// that one owns.
    pub(crate) fn owner(&self, subscription: &str) -> Option<Arc<Registered>> {
        let registered = self.registered.read();
        if registered.is_empty() {
            return None;
        }
        let channel = ChannelName::parse(subscription).ok()?;
        registered
            .iter()
            .find(|r| r.pattern.matches(&channel))
            .cloned()
    }

    /// Runs `f` in the turn of the adapter owning `channel` (if any), then
    /// reconciles the edges reported meanwhile.
    pub(crate) fn in_turn<R>(&self, channel: &ChannelName, f: impl FnOnce() -> R) -> R {
        let Some(owner) = self.owner(channel.as_str()) else {
            return f();
        };
        let result = {
            let _turn = owner.turn.lock();
            f()
        };
        owner.drain(&self.subscriptions);
        result
    }

    /// Subscribes through `subscribe` in the owner's turn, starting the
    /// feed and queuing the snapshot for `session` when it was added.
    pub(crate) fn subscribe(
        &self,
        owner: &Registered,
        channel: &ChannelName,
        added: impl FnOnce() -> bool,
        deliver_snapshot: impl FnOnce(Vec<Box<RawValue>>),
    ) {
        {
            let _turn = owner.turn.lock();
            if added() {
                owner.reconcile(&self.subscriptions, channel.as_str());
                deliver_snapshot(owner.adapter.snapshot(channel));
            }
        }
        owner.drain(&self.subscriptions);
    }

    /// Reports that `subscription` lost its last subscriber.
    pub(crate) fn emptied(&self, subscription: &str) {
        if let Some(owner) = self.owner(subscription) {
            owner.edges.lock().push(subscription.into());
            owner.drain(&self.subscriptions);
        }
    }
}
