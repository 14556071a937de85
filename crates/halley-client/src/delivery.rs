//! What the application receives: broadcasts on subscribed channels, and
//! messages the server sends on its own (a `/service` reply to someone else's
//! request never lands here; it is a reply).
//!
//! Deliveries arrive in the order the server sent them: the connect loop
//! hands over each response's deliveries in order before sending the next
//! `/meta/connect`. Deliveries piggybacked on the reply to a publish or
//! subscribe are handed over by the task that made that call, so a client
//! that publishes *and* receives on the same session can see those interleave
//! differently from the server's queue order. On websocket there is one
//! reader per socket and it hands every delivery over in the server's
//! order, whatever frame it came in.
//!
//! Two ways to receive them: the [`Deliveries`] queue (the default), read by
//! a task of the application's, or a handler given to
//! [`crate::ClientBuilder::on_delivery`], called by the task that read them.
//! The handler saves a queue and a task wake-up per delivery, which is what
//! a load generator simulating thousands of users on the server's cores
//! needs; it must not block.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

/// One message delivered to this client.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub channel: String,
    /// Raw JSON, exactly as the server sent it (`null` if it sent none).
    pub data: Box<RawValue>,
    /// The publisher's message id, when the server passes it through.
    pub id: Option<String>,
    pub ext: Option<Box<RawValue>>,
}

impl Delivery {
    /// `data` parsed into a JSON tree.
    pub fn data_value(&self) -> serde_json::Value {
        serde_json::from_str(self.data.get()).expect("RawValue holds valid JSON")
    }

    /// `data` parsed into `T`.
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.data.get())
    }

    /// `ext` parsed into a JSON tree.
    pub fn ext_value(&self) -> Option<serde_json::Value> {
        self.ext
            .as_ref()
            .map(|ext| serde_json::from_str(ext.get()).expect("RawValue holds valid JSON"))
    }
}

/// A function each delivery is handed to, in the server's order; see
/// [`crate::ClientBuilder::on_delivery`].
#[derive(Clone)]
pub(crate) struct DeliveryHandler(pub(crate) Arc<dyn Fn(Delivery) + Send + Sync>);

impl std::fmt::Debug for DeliveryHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeliveryHandler")
    }
}

/// Where a session hands its deliveries.
#[derive(Debug)]
pub(crate) enum DeliverySink {
    /// To the [`Deliveries`] queue.
    Queue(mpsc::UnboundedSender<Delivery>),
    /// To the application's handler, at once.
    Handler(DeliveryHandler),
}

impl DeliverySink {
    pub(crate) fn hand_over(&self, delivery: Delivery) {
        match self {
            // The receiver may have been dropped: deliveries are then discarded.
            DeliverySink::Queue(queue) => {
                let _ = queue.send(delivery);
            }
            DeliverySink::Handler(handler) => (handler.0)(delivery),
        }
    }
}

/// The receiving end of a client's deliveries.
///
/// Unbounded: the connect loop never waits for the application, so an
/// application that stops reading grows this queue (and should drop it).
/// The stream ends (`recv` returns `None`) when the [`crate::Client`] is dropped.
#[derive(Debug)]
pub struct Deliveries {
    receiver: mpsc::UnboundedReceiver<Delivery>,
}

impl Deliveries {
    pub(crate) fn channel() -> (DeliverySink, Deliveries) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (DeliverySink::Queue(sender), Deliveries { receiver })
    }

    /// The next delivery, waiting for it.
    pub async fn recv(&mut self) -> Option<Delivery> {
        self.receiver.recv().await
    }

    /// The next delivery if one is already here.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        self.receiver.try_recv().ok()
    }

    /// How many deliveries are waiting.
    pub fn len(&self) -> usize {
        self.receiver.len()
    }

    pub fn is_empty(&self) -> bool {
        self.receiver.is_empty()
    }
}
