//! A session ends with its credentials (issue 14, finding 9): the JWT
//! adapter grants a session until its token's `exp` (plus the leeway);
//! after that every message, and a held `/meta/connect`, is refused with
//! `401::token_expired` and advice to handshake; a `/meta/connect` carrying
//! a fresh token of the same user moves the end later, and one carrying
//! someone else's ends the session. Tokio's clock is paused: the node's
//! clock (monotonic and wall) moves only when the test lets time pass.
#![cfg(feature = "jwt")]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use halley_server::metadata::jwt::JwtConfig;
use halley_server::state::listeners::{SessionEnd, SessionListener};
use halley_server::state::session::Session;
use halley_server::{Config, Engine};
use jsonwebtoken::{encode, EncodingKey, Header};
use parking_lot::Mutex;
use serde_json::{json, Value};

const SECRET: &str = "a-secret-of-at-least-32-bytes-for-hs256";

/// Seconds since the Unix epoch, by the system clock (which the paused
/// tokio clock does not move: tokens are minted against it).
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn token(sub: &str, exp: i64) -> String {
    encode(
        &Header::default(),
        &json!({"sub": sub, "exp": exp, "subscribe": ["/chat/**"], "publish": ["/chat/*"]}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Remembers why sessions ended.
#[derive(Default)]
struct Ends(Mutex<Vec<SessionEnd>>);

impl SessionListener for Ends {
    fn session_ended(&self, _: &Session, why: SessionEnd) {
        self.0.lock().push(why);
    }
}

/// A node with the JWT adapter, no leeway (so the end is the token's `exp`).
fn engine() -> (Arc<Engine>, Arc<Ends>) {
    let config = Config {
        jwt: Some(JwtConfig {
            hs256_secret: Some(SECRET.into()),
            leeway_s: Some(0),
            ..JwtConfig::default()
        }),
        ..Config::default()
    };
    let adapter = config.metadata_adapter().unwrap().unwrap();
    let engine = Engine::new(config);
    engine.node().set_metadata_adapter(adapter).unwrap();
    let ends = Arc::new(Ends::default());
    engine.node().session_listeners().add(ends.clone());
    (engine, ends)
}

async fn send(engine: &Arc<Engine>, browser: &mut Option<String>, message: Value) -> Value {
    let replies = common::exchange(engine, browser, &json!([message])).await;
    replies
        .into_iter()
        .find(|m| m.get("successful").is_some())
        .expect("a reply")
}

/// Handshakes with `token`, then makes the first (immediate) connect.
async fn session(engine: &Arc<Engine>, browser: &mut Option<String>, token: &str) -> String {
    let reply = send(
        engine,
        browser,
        json!({"channel": "/meta/handshake", "version": "1.0",
               "supportedConnectionTypes": ["long-polling"],
               "ext": {"authentication": {"token": token}}}),
    )
    .await;
    assert_eq!(reply["successful"], true, "{reply}");
    let id = reply["clientId"].as_str().unwrap().to_owned();
    let connect = send(
        engine,
        browser,
        json!({"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling"}),
    )
    .await;
    assert_eq!(connect["successful"], true, "{connect}");
    id
}

fn publish(id: &str, n: u32) -> Value {
    json!({"channel": "/chat/1", "clientId": id, "data": n})
}

fn assert_expired(reply: &Value, error: &str) {
    assert_eq!(reply["successful"], false, "{reply}");
    assert_eq!(reply["error"], error, "{reply}");
    assert_eq!(reply["advice"]["reconnect"], "handshake", "{reply}");
    assert!(
        reply["ext"]["halley"]["reason"].as_str().is_some(),
        "says why: {reply}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_first_message_after_exp_is_refused_and_the_session_ends() {
    let (engine, ends) = engine();
    let mut browser = None;
    let id = session(&engine, &mut browser, &token("ada", unix_now() + 60)).await;
    assert_eq!(
        send(&engine, &mut browser, publish(&id, 1)).await["successful"],
        true
    );

    // The attack: the token expired, the session goes on. Past `exp`:
    tokio::time::advance(Duration::from_secs(61)).await;
    let refused = send(&engine, &mut browser, publish(&id, 2)).await;
    assert_expired(&refused, "401::token_expired");
    assert!(
        refused["ext"]["halley"]["reason"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{refused}"
    );
    assert!(engine.node().sessions().get(&id).is_none(), "ended");
    assert_eq!(*ends.0.lock(), [SessionEnd::TokenExpired]);
    assert_eq!(engine.node().user_sessions().count("ada"), 0);
    // Its next message finds no session, as after any end.
    let after = send(&engine, &mut browser, publish(&id, 3)).await;
    assert_eq!(after["error"], "402::session_unknown", "{after}");
}

#[tokio::test(start_paused = true)]
async fn a_held_connect_is_answered_at_exp_not_at_its_timeout() {
    let (engine, ends) = engine();
    let mut browser = None;
    let id = session(&engine, &mut browser, &token("ada", unix_now() + 5)).await;
    let held_since = tokio::time::Instant::now();
    // Held: answered when the token expires (virtual time), well before
    // the 30 s `timeout` would have let it go on.
    let reply = send(
        &engine,
        &mut browser,
        json!({"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling"}),
    )
    .await;
    let held = held_since.elapsed();
    assert_expired(&reply, "401::token_expired");
    assert!(
        held <= Duration::from_secs(5),
        "held {held:?}, past the token's exp"
    );
    assert!(
        held >= Duration::from_secs(3),
        "held {held:?}: answered early"
    );
    assert_eq!(*ends.0.lock(), [SessionEnd::TokenExpired]);
}

#[tokio::test(start_paused = true)]
async fn a_fresh_token_on_a_connect_moves_the_end_and_anothers_ends_the_session() {
    let (engine, ends) = engine();
    let mut browser = None;
    let id = session(&engine, &mut browser, &token("ada", unix_now() + 60)).await;
    let session = engine.node().sessions().get(&id).unwrap();
    let first_end = session.credentials_expire_ms().unwrap();

    // Refreshed before it expires: same user, later exp. The connect is
    // held (advice timeout 0 answers it at once).
    let fresh = token("ada", unix_now() + 3_600);
    let refreshed = send(
        &engine,
        &mut browser,
        json!({"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling",
               "advice": {"timeout": 0},
               "ext": {"authentication": {"token": fresh}}}),
    )
    .await;
    assert_eq!(refreshed["successful"], true, "{refreshed}");
    assert_eq!(
        session.credentials_expire_ms(),
        Some(first_end + 3_540_000),
        "moved to the fresh token's exp"
    );
    tokio::time::advance(Duration::from_secs(120)).await;
    assert_eq!(
        send(&engine, &mut browser, publish(&id, 1)).await["successful"],
        true,
        "alive past the first token's exp"
    );
    // An older token does not shorten it.
    let older = send(
        &engine,
        &mut browser,
        json!({"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling",
               "advice": {"timeout": 0},
               "ext": {"authentication": {"token": token("ada", unix_now() + 600)}}}),
    )
    .await;
    assert_eq!(older["successful"], true, "{older}");
    assert_eq!(session.credentials_expire_ms(), Some(first_end + 3_540_000));

    // Someone else's token (valid, signed): not this session's owner.
    let eve = send(
        &engine,
        &mut browser,
        json!({"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling",
               "advice": {"timeout": 0},
               "ext": {"authentication": {"token": token("eve", unix_now() + 3_600)}}}),
    )
    .await;
    assert_expired(&eve, "401::refresh_denied");
    assert!(
        eve["ext"]["halley"]["reason"]
            .as_str()
            .unwrap()
            .contains("another user"),
        "{eve}"
    );
    assert!(engine.node().sessions().get(&id).is_none(), "ended");
    assert_eq!(*ends.0.lock(), [SessionEnd::TokenExpired]);
}

#[tokio::test(start_paused = true)]
async fn a_forged_refresh_ends_the_session() {
    let (engine, _) = engine();
    let mut browser = None;
    let id = session(&engine, &mut browser, &token("ada", unix_now() + 60)).await;
    let forged = encode(
        &Header::default(),
        &json!({"sub": "ada", "exp": unix_now() + 3_600}),
        &EncodingKey::from_secret(b"not-the-servers-secret-not-the-servers"),
    )
    .unwrap();
    let reply = send(
        &engine,
        &mut browser,
        json!({"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling",
               "advice": {"timeout": 0},
               "ext": {"authentication": {"token": forged}}}),
    )
    .await;
    assert_expired(&reply, "401::refresh_denied");
    assert!(engine.node().sessions().get(&id).is_none());
}

/// A held connect whose session another message ended at `exp` (the
/// client's publish got there before the connect's timer): it is told to
/// handshake too, not `reconnect: none`, which would stop the client.
#[tokio::test(start_paused = true)]
async fn a_held_connect_of_a_session_already_ended_at_exp_advises_handshake() {
    use halley_protocol::{decode_batch, BodyWriter};
    use halley_server::exchange::Origin;
    use halley_server::state::session::ConnectionType;

    let (engine, _) = engine();
    let mut browser = None;
    let id = session(&engine, &mut browser, &token("ada", unix_now() + 5)).await;
    // The connect arrives and is registered; its answer is not driven yet.
    let connect =
        json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling"}]);
    let held = engine
        .handle_batch(
            decode_batch(&serde_json::to_vec(&connect).unwrap()).unwrap(),
            Origin::http(ConnectionType::LongPolling, browser.clone()),
        )
        .await;
    tokio::time::advance(Duration::from_secs(6)).await;
    let refused = send(&engine, &mut browser, publish(&id, 1)).await;
    assert_expired(&refused, "401::token_expired");
    // Now the held connect is answered: its session has ended.
    let mut body = BodyWriter::new();
    halley_server::transport::drive_http(&engine, held, &mut body).await;
    let replies: Vec<Value> = serde_json::from_slice(&body.finish(b"")).unwrap();
    let reply = replies
        .iter()
        .find(|m| m["channel"] == "/meta/connect")
        .expect("the connect's reply");
    assert_expired(reply, "401::token_expired");
}

/// The same when another connect of the session presented a token that
/// was refused: the held one says so and advises handshake too.
#[tokio::test(start_paused = true)]
async fn a_held_connect_of_a_session_ended_by_a_refused_refresh_advises_handshake() {
    use halley_protocol::{decode_batch, BodyWriter};
    use halley_server::exchange::Origin;
    use halley_server::state::session::ConnectionType;

    let (engine, _) = engine();
    let mut browser = None;
    let id = session(&engine, &mut browser, &token("ada", unix_now() + 600)).await;
    let connect =
        json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling"}]);
    let held = engine
        .handle_batch(
            decode_batch(&serde_json::to_vec(&connect).unwrap()).unwrap(),
            Origin::http(ConnectionType::LongPolling, browser.clone()),
        )
        .await;
    let eve = send(
        &engine,
        &mut browser,
        json!({"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling",
               "ext": {"authentication": {"token": token("eve", unix_now() + 600)}}}),
    )
    .await;
    assert_expired(&eve, "401::refresh_denied");
    let mut body = BodyWriter::new();
    halley_server::transport::drive_http(&engine, held, &mut body).await;
    let replies: Vec<Value> = serde_json::from_slice(&body.finish(b"")).unwrap();
    let reply = replies
        .iter()
        .find(|m| m["channel"] == "/meta/connect")
        .expect("the connect's reply");
    assert_expired(reply, "401::refresh_denied");
}
