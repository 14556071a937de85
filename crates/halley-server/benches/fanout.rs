//! Publish fan-out: one broadcast delivered to N subscribers of a channel.
//!
//! Each iteration is what the server does for one published message:
//! encode it once, find the subscribers, push a `Bytes` handle into each
//! outbox, and then every subscriber takes its delivery (what a held
//! `/meta/connect` does before writing). No sockets: this is the engine's
//! share of the cost. Run with `cargo bench -p halley-server --bench fanout`.

use std::sync::Arc;

use halley_protocol::ChannelName;
use halley_server::state::session::Session;
use halley_server::{Config, Engine};
use serde_json::value::RawValue;

fn main() {
    divan::main();
}

/// An engine with `subscribers` sessions on `/chat/room`.
fn setup(subscribers: usize) -> (Arc<Engine>, Vec<Arc<Session>>) {
    let engine = Engine::new(Config::default());
    let sessions: Vec<_> = (0..subscribers)
        .map(|_| {
            let session = engine.node().sessions().create(None, false);
            engine
                .node()
                .subscriptions()
                .subscribe("/chat/room", &session);
            session
        })
        .collect();
    (engine, sessions)
}

/// The seed's payload: 50 bytes of chat text.
fn payload() -> Box<RawValue> {
    RawValue::from_string(format!(r#"{{"user":"u1","chat":"{}"}}"#, "x".repeat(29))).unwrap()
}

#[divan::bench(args = [1, 200, 10_000])]
fn publish_and_take(bencher: divan::Bencher, subscribers: usize) {
    let (engine, sessions) = setup(subscribers);
    let channel = ChannelName::parse("/chat/room").unwrap();
    let data = payload();
    bencher
        .counter(divan::counter::ItemsCount::new(subscribers))
        .bench_local(|| {
            let delivered = engine.node().publish(&channel, &data, None, None);
            // One clock read per flush round, as a transport's poll does.
            let now = tokio::time::Instant::now();
            for session in &sessions {
                divan::black_box(session.take_deliveries(now));
            }
            delivered
        });
}

/// The publish alone (subscribers' outboxes emptied outside the timing).
#[divan::bench(args = [1, 200, 10_000])]
fn publish_only(bencher: divan::Bencher, subscribers: usize) {
    let (engine, sessions) = setup(subscribers);
    let channel = ChannelName::parse("/chat/room").unwrap();
    let data = payload();
    bencher
        .counter(divan::counter::ItemsCount::new(subscribers))
        .with_inputs(|| {
            let now = tokio::time::Instant::now();
            for session in &sessions {
                session.take_deliveries(now);
            }
        })
        .bench_local_values(|()| engine.node().publish(&channel, &data, None, None));
}

/// The publish alone on a channel capped by a `[[qos]]` merge rule (10/s),
/// after the first update: every subscriber's throttle conflates (replaces
/// its held update), which is the cost of a limited channel.
#[divan::bench(args = [1, 200, 10_000])]
fn publish_merged(bencher: divan::Bencher, subscribers: usize) {
    let config = Config {
        qos: vec![halley_server::config::ChannelQos {
            pattern: "/chat/room".into(),
            max_frequency: 10.0,
            mode: halley_server::state::throttle::Mode::Merge,
            key: None,
        }],
        ..Config::default()
    };
    // Release tasks are spawned on this runtime but never run: the bench
    // measures the publish, not the timer.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let engine = Engine::new(config);
    for _ in 0..subscribers {
        let session = engine.node().sessions().create(None, false);
        engine
            .node()
            .subscriptions()
            .subscribe("/chat/room", &session);
    }
    let channel = ChannelName::parse("/chat/room").unwrap();
    let data = payload();
    engine.node().publish(&channel, &data, None, None);
    bencher
        .counter(divan::counter::ItemsCount::new(subscribers))
        .bench_local(|| engine.node().publish(&channel, &data, None, None));
}
