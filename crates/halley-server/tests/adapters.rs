//! Data Adapters driven through the engine, without sockets: first and
//! last subscribers (unsubscribe, disconnect, expiry), snapshots, publishing.

use std::sync::Arc;
use std::time::Duration;

use halley_protocol::{decode_batch, BodyWriter, ChannelName};
use halley_server::adapter::{DataAdapter, Publisher};
use halley_server::engine::Engine;
use halley_server::exchange::Origin;
use halley_server::state::session::ConnectionType;
use halley_server::transport::drive_http;
use halley_server::Config;
use parking_lot::Mutex;
use serde_json::value::RawValue;
use serde_json::{json, Value};

/// A socket-less long-polling client (as in tests/engine.rs).
struct Client {
    engine: Arc<Engine>,
    browser: Option<String>,
    client_id: Option<String>,
    /// Deliveries seen in any response (they ride on replies too), not read yet.
    inbox: Vec<Value>,
}

impl Client {
    async fn connected(engine: &Arc<Engine>) -> Self {
        let mut client = Client {
            engine: engine.clone(),
            browser: None,
            client_id: None,
            inbox: Vec::new(),
        };
        let replies = client
            .send(json!([{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}]))
            .await;
        client.client_id = Some(replies[0]["clientId"].as_str().unwrap().to_owned());
        client.connect().await;
        client
    }

    async fn send(&mut self, batch: Value) -> Vec<Value> {
        let body = serde_json::to_vec(&batch).unwrap();
        let origin = Origin::http(ConnectionType::LongPolling, self.browser.clone());
        let exchange = self
            .engine
            .handle_batch(decode_batch(&body).unwrap(), origin)
            .await;
        let mut body = BodyWriter::new();
        if let Some(id) = drive_http(&self.engine, exchange, &mut body).await {
            self.browser = Some(id);
        }
        let messages = serde_json::from_slice::<Vec<Value>>(&body.finish(b"")).unwrap();
        let deliveries = messages.iter().filter(|m| m.get("successful").is_none());
        self.inbox.extend(deliveries.cloned());
        messages
    }

    /// A connect that does not wait: what is queued now.
    async fn connect(&mut self) -> Vec<Value> {
        let id = self.client_id.clone();
        self.send(json!([{"channel":"/meta/connect","clientId":id,"connectionType":"long-polling","advice":{"timeout":0}}]))
            .await
    }

    async fn meta(&mut self, channel: &str, subscription: &str) {
        let id = self.client_id.clone();
        let replies = self
            .send(json!([{"channel":channel,"clientId":id,"subscription":subscription}]))
            .await;
        assert_eq!(replies.last().unwrap()["successful"], true, "{replies:?}");
    }

    async fn subscribe(&mut self, channel: &str) {
        self.meta("/meta/subscribe", channel).await;
    }

    async fn unsubscribe(&mut self, channel: &str) {
        self.meta("/meta/unsubscribe", channel).await;
    }

    async fn disconnect(&mut self) {
        let id = self.client_id.clone();
        self.send(json!([{"channel":"/meta/disconnect","clientId":id}]))
            .await;
    }

    /// The data of the deliveries queued for this client on `channel`.
    async fn received(&mut self, channel: &str) -> Vec<Value> {
        self.connect().await;
        let (mine, others) = std::mem::take(&mut self.inbox)
            .into_iter()
            .partition(|m| m["channel"] == channel);
        self.inbox = others;
        mine.into_iter().map(|m: Value| m["data"].clone()).collect()
    }
}

/// Records what the engine tells it; its snapshot is `{"snapshot": channel}`.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
}

impl Recorder {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().clone()
    }
}

impl DataAdapter for Recorder {
    fn first_subscriber(&self, channel: &ChannelName) {
        self.calls.lock().push(format!("first {channel}"));
    }

    fn last_unsubscribed(&self, channel: &ChannelName) {
        self.calls.lock().push(format!("last {channel}"));
    }

    fn snapshot(&self, channel: &ChannelName) -> Vec<Box<RawValue>> {
        vec![serde_json::value::to_raw_value(&json!({ "snapshot": channel.as_str() })).unwrap()]
    }
}

fn engine_with_recorder(config: Config) -> (Arc<Engine>, Arc<Recorder>) {
    let engine = Engine::new(config);
    let recorder = Arc::new(Recorder::default());
    engine
        .node()
        .data_adapters()
        .register("/stocks/*", recorder.clone())
        .unwrap();
    (engine, recorder)
}

#[tokio::test(start_paused = true)]
async fn the_adapter_hears_the_first_subscriber_once_and_the_last_one_leaving() {
    let (engine, recorder) = engine_with_recorder(Config::default());
    let mut ada = Client::connected(&engine).await;
    let mut bob = Client::connected(&engine).await;

    ada.subscribe("/stocks/AAPL").await;
    assert_eq!(recorder.calls(), ["first /stocks/AAPL"]);
    bob.subscribe("/stocks/AAPL").await;
    ada.subscribe("/stocks/AAPL").await;
    assert_eq!(
        recorder.calls(),
        ["first /stocks/AAPL"],
        "not for the second"
    );

    ada.unsubscribe("/stocks/AAPL").await;
    assert_eq!(
        recorder.calls(),
        ["first /stocks/AAPL"],
        "bob still listens"
    );
    bob.unsubscribe("/stocks/AAPL").await;
    assert_eq!(
        recorder.calls(),
        ["first /stocks/AAPL", "last /stocks/AAPL"]
    );
    bob.unsubscribe("/stocks/AAPL").await;
    assert_eq!(
        recorder.calls().len(),
        2,
        "unsubscribing twice says nothing"
    );

    ada.subscribe("/stocks/AAPL").await;
    assert_eq!(
        recorder.calls().last().unwrap(),
        "first /stocks/AAPL",
        "again"
    );
}

#[tokio::test(start_paused = true)]
async fn an_adapter_registered_late_hears_of_the_channels_already_listened_to() {
    let engine = Engine::new(Config::default());
    let mut ada = Client::connected(&engine).await;
    ada.subscribe("/stocks/AAPL").await;
    ada.subscribe("/stocks/*").await;
    ada.subscribe("/news").await;
    let recorder = Arc::new(Recorder::default());
    engine
        .node()
        .data_adapters()
        .register("/stocks/*", recorder.clone())
        .unwrap();
    assert_eq!(
        recorder.calls(),
        ["first /stocks/AAPL"],
        "the glob and /news are not its"
    );
    ada.unsubscribe("/stocks/AAPL").await;
    assert_eq!(
        recorder.calls(),
        ["first /stocks/AAPL", "last /stocks/AAPL"]
    );

    // A second adapter over the same channels: the first owns them.
    ada.subscribe("/stocks/MSFT").await;
    let second = Arc::new(Recorder::default());
    engine
        .node()
        .data_adapters()
        .register("/stocks/**", second.clone())
        .unwrap();
    assert!(second.calls().is_empty(), "{:?}", second.calls());
}

#[tokio::test(start_paused = true)]
async fn channels_it_does_not_own_and_globs_are_not_announced() {
    let (engine, recorder) = engine_with_recorder(Config::default());
    let mut ada = Client::connected(&engine).await;
    ada.subscribe("/news").await;
    ada.subscribe("/stocks/*").await;
    ada.subscribe("/stocks/AAPL/deep").await;
    ada.subscribe("/**").await;
    assert_eq!(recorder.calls(), Vec::<String>::new());
    assert_eq!(
        ada.received("/stocks/*").await,
        Vec::<Value>::new(),
        "no snapshot"
    );
}

#[tokio::test(start_paused = true)]
async fn a_disconnect_ends_the_feed_of_every_channel_it_was_last_on() {
    let (engine, recorder) = engine_with_recorder(Config::default());
    let mut ada = Client::connected(&engine).await;
    let mut bob = Client::connected(&engine).await;
    ada.subscribe("/stocks/AAPL").await;
    ada.subscribe("/stocks/MSFT").await;
    bob.subscribe("/stocks/MSFT").await;
    ada.disconnect().await;
    assert_eq!(
        recorder.calls(),
        [
            "first /stocks/AAPL",
            "first /stocks/MSFT",
            "last /stocks/AAPL"
        ]
    );
    bob.disconnect().await;
    assert_eq!(recorder.calls().last().unwrap(), "last /stocks/MSFT");
}

#[tokio::test(start_paused = true)]
async fn an_expired_session_ends_the_feed() {
    let (engine, recorder) = engine_with_recorder(Config {
        max_interval: 2_000,
        sweep_period: 100,
        ..Config::default()
    });
    let sweeper = tokio::spawn({
        let engine = engine.clone();
        async move { engine.node().run_sweeper().await }
    });
    let mut ada = Client::connected(&engine).await;
    ada.subscribe("/stocks/AAPL").await;
    // Silence past max_interval, in virtual time; the sweeper runs meanwhile.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(engine.node().sessions().len(), 0, "expired");
    assert_eq!(
        recorder.calls(),
        ["first /stocks/AAPL", "last /stocks/AAPL"]
    );
    engine.node().shutdown().trigger();
    sweeper.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_snapshot_goes_to_the_new_subscriber_only_then_publishes_to_all() {
    let (engine, _recorder) = engine_with_recorder(Config::default());
    let publisher = Publisher::new(engine.node());
    let mut ada = Client::connected(&engine).await;
    let mut bob = Client::connected(&engine).await;
    ada.subscribe("/stocks/AAPL").await;
    assert_eq!(
        ada.received("/stocks/AAPL").await,
        [json!({"snapshot": "/stocks/AAPL"})]
    );
    bob.subscribe("/stocks/AAPL").await;
    assert_eq!(
        ada.received("/stocks/AAPL").await,
        Vec::<Value>::new(),
        "not ada's"
    );

    let channel = ChannelName::parse("/stocks/AAPL").unwrap();
    let price = RawValue::from_string(r#"{"price":187.2}"#.into()).unwrap();
    assert_eq!(publisher.publish(&channel, &price), 2);
    assert_eq!(ada.received("/stocks/AAPL").await, [json!({"price":187.2})]);
    assert_eq!(
        bob.received("/stocks/AAPL").await,
        [json!({"snapshot": "/stocks/AAPL"}), json!({"price":187.2})],
        "snapshot first, then the feed"
    );
}

/// An adapter that publishes from inside its callback (the turn lock is reentrant).
struct Greeter(Mutex<Option<Publisher>>);

impl DataAdapter for Greeter {
    fn first_subscriber(&self, channel: &ChannelName) {
        let publisher = self.0.lock().clone().unwrap();
        let hello = RawValue::from_string("\"hello\"".into()).unwrap();
        publisher.publish(channel, &hello);
    }
}

#[tokio::test(start_paused = true)]
async fn a_callback_may_publish() {
    let engine = Engine::new(Config::default());
    let greeter = Arc::new(Greeter(Mutex::new(Some(Publisher::new(engine.node())))));
    engine
        .node()
        .data_adapters()
        .register("/greet/**", greeter)
        .unwrap();
    let mut ada = Client::connected(&engine).await;
    ada.subscribe("/greet/room").await;
    assert_eq!(ada.received("/greet/room").await, [json!("hello")]);
}

#[test]
fn meta_and_service_patterns_are_refused() {
    let engine = Engine::new(Config::default());
    let adapter = Arc::new(Recorder::default());
    assert!(engine
        .node()
        .data_adapters()
        .register("/meta/*", adapter.clone())
        .is_err());
    assert!(engine
        .node()
        .data_adapters()
        .register("/service/**", adapter.clone())
        .is_err());
    assert!(engine
        .node()
        .data_adapters()
        .register("nope", adapter)
        .is_err());
    assert!(engine.node().data_adapters().is_empty());
}
