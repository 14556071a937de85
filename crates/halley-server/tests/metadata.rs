//! The Metadata Adapter trait, embedded: a custom adapter decides handshakes,
//! subscribes and publishes, names users and hears sessions open and close
//! (disconnect and expiry alike).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use halley_protocol::{ChannelName, ChannelPattern};
use halley_server::metadata::{ready, Denial, HandshakeRequest, MetadataAdapter, Verdict};
use halley_server::state::grant::Grant;
use halley_server::state::listeners::SessionEnd;
use halley_server::state::session::Session;
use halley_server::{Config, Engine};
use serde_json::value::RawValue;
use serde_json::{json, Value};

/// Users are named by `ext.authentication.user`; "eve" is refused; only
/// "ada" may publish; nobody may subscribe to `/vault`. Waits a little
/// before answering subscribes, as a remote check would.
#[derive(Default)]
struct Rules {
    opened: AtomicUsize,
    closed: AtomicUsize,
    expired: AtomicUsize,
}

impl MetadataAdapter for Rules {
    fn handshake<'a>(&'a self, request: HandshakeRequest<'a>) -> Verdict<'a, Grant> {
        let user = request
            .authentication()
            .and_then(|a| a.get("user"))
            .and_then(Value::as_str);
        ready(match user {
            Some("eve") => Err(Denial::new("eve is not welcome")),
            Some(user) => Ok(Grant {
                user: Some(user.into()),
                ..Grant::anonymous()
            }),
            None => Ok(Grant::anonymous()),
        })
    }

    fn subscribe<'a>(
        &'a self,
        _: &'a Session,
        subscription: &'a ChannelPattern,
    ) -> Verdict<'a, ()> {
        Box::pin(async move {
            // A remote check's latency, in virtual time: the verdict pends.
            tokio::time::sleep(Duration::from_millis(50)).await;
            if subscription.as_str() == "/vault" {
                Err(Denial::new("the vault is closed"))
            } else {
                Ok(())
            }
        })
    }

    fn publish<'a>(
        &'a self,
        session: &'a Session,
        _: &'a ChannelName,
        _: &'a RawValue,
    ) -> Verdict<'a, ()> {
        ready(if session.user() == Some("ada") {
            Ok(())
        } else {
            Err(Denial::new("only ada publishes"))
        })
    }

    fn session_opened(&self, _: &Session) {
        self.opened.fetch_add(1, Ordering::SeqCst);
    }

    fn session_closed(&self, _: &Session, why: SessionEnd) {
        self.closed.fetch_add(1, Ordering::SeqCst);
        if why == SessionEnd::Expired {
            self.expired.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn engine_with(rules: &Arc<Rules>) -> Arc<Engine> {
    let config = Config {
        max_interval: 1_000,
        max_sessions_per_user: Some(1),
        ..Config::default()
    };
    let engine = Engine::new(config);
    engine.node().set_metadata_adapter(rules.clone()).unwrap();
    assert!(
        engine.node().set_metadata_adapter(rules.clone()).is_err(),
        "installed once"
    );
    engine
}

async fn handshake(
    engine: &Arc<Engine>,
    browser: &mut Option<String>,
    user: Option<&str>,
) -> Value {
    let ext = match user {
        Some(user) => json!({"authentication": {"user": user}}),
        None => Value::Null,
    };
    let replies = common::exchange(
        engine,
        browser,
        &json!([{"channel": "/meta/handshake", "version": "1.0",
                 "supportedConnectionTypes": ["long-polling"], "ext": ext}]),
    )
    .await;
    replies[0].clone()
}

/// Sends one message; its reply (deliveries may ride along).
async fn send(engine: &Arc<Engine>, browser: &mut Option<String>, message: Value) -> Value {
    let replies = common::exchange(engine, browser, &json!([message])).await;
    replies
        .into_iter()
        .find(|m| m.get("successful").is_some())
        .expect("a reply")
}

#[tokio::test(start_paused = true)]
async fn the_adapter_decides_and_names_users() {
    let rules = Arc::new(Rules::default());
    let engine = engine_with(&rules);
    let mut browser = None;

    let eve = handshake(&engine, &mut browser, Some("eve")).await;
    assert_eq!(eve["error"], "403::handshake_denied");
    assert_eq!(eve["ext"]["halley"]["reason"], "eve is not welcome");
    assert_eq!(
        rules.opened.load(Ordering::SeqCst),
        0,
        "no session for a denied handshake"
    );

    let ada = handshake(&engine, &mut browser, Some("ada")).await;
    let id = ada["clientId"].as_str().unwrap().to_owned();
    let session = engine.node().sessions().get(&id).unwrap();
    assert_eq!(session.user(), Some("ada"));
    assert_eq!(rules.opened.load(Ordering::SeqCst), 1);

    let vault = send(
        &engine,
        &mut browser,
        json!({"channel": "/meta/subscribe", "clientId": id, "subscription": "/vault"}),
    )
    .await;
    assert_eq!(vault["error"], "403::subscribe_denied");
    assert_eq!(vault["ext"]["halley"]["reason"], "the vault is closed");
    let news = send(
        &engine,
        &mut browser,
        json!({"channel": "/meta/subscribe", "clientId": id, "subscription": "/news"}),
    )
    .await;
    assert_eq!(news["successful"], true, "{news}");
    let published = send(
        &engine,
        &mut browser,
        json!({"channel": "/news", "clientId": id, "data": 1}),
    )
    .await;
    assert_eq!(published["successful"], true, "{published}");

    // The cap: ada holds her one session.
    let again = handshake(&engine, &mut browser, Some("ada")).await;
    assert_eq!(again["error"], "403::handshake_denied");
    assert_eq!(engine.node().user_sessions().count("ada"), 1);

    // An anonymous session may not publish.
    let anon = handshake(&engine, &mut browser, None).await;
    let anon_id = anon["clientId"].as_str().unwrap();
    let refused = send(
        &engine,
        &mut browser,
        json!({"channel": "/news", "clientId": anon_id, "data": 2}),
    )
    .await;
    assert_eq!(refused["error"], "403::publish_denied");
    assert_eq!(refused["ext"]["halley"]["reason"], "only ada publishes");

    let bye = send(
        &engine,
        &mut browser,
        json!({"channel": "/meta/disconnect", "clientId": id}),
    )
    .await;
    assert_eq!(bye["successful"], true);
    assert_eq!(
        rules.closed.load(Ordering::SeqCst),
        1,
        "told of the disconnect"
    );
    assert_eq!(
        engine.node().user_sessions().count("ada"),
        0,
        "her place is free"
    );
    assert_eq!(
        handshake(&engine, &mut browser, Some("ada")).await["successful"],
        true
    );
}

#[tokio::test(start_paused = true)]
async fn expiry_closes_the_session_for_the_adapter_and_frees_the_cap() {
    let rules = Arc::new(Rules::default());
    let engine = engine_with(&rules);
    let sweeper = tokio::spawn({
        let engine = engine.clone();
        async move { engine.node().run_sweeper().await }
    });
    let mut browser = None;
    assert_eq!(
        handshake(&engine, &mut browser, Some("ada")).await["successful"],
        true
    );
    // Silence past max_interval, in virtual time; the sweeper runs meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(rules.expired.load(Ordering::SeqCst), 1);
    assert_eq!(engine.node().user_sessions().count("ada"), 0);
    sweeper.abort();
}
