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
    pub(crate) fn channel() -> (mpsc::UnboundedSender<Delivery>, Deliveries) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (sender, Deliveries { receiver })
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
