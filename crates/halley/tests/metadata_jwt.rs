//! The JWT Metadata Adapter end to end: a real `halley serve` with a `[jwt]`
//! section, tokens signed in the test (HS256 and RS256), and the errors a
//! client sees at handshake, subscribe and publish.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    handshake_with, handshake_with_token, publish_raw, refused_config, send_one, start_with_config,
    subscribe_raw, within, Server,
};
use halley_client::Client;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "test-secret-for-hs256-tokens-only";

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A server with HS256 and RS256 keys, anonymous access to `/public/**`
/// (read only) and `extra` TOML.
fn server(extra: &str) -> Server {
    start_with_config(
        &format!(
            "{extra}\n[jwt]\nhs256-secret = \"{SECRET}\"\nrs256-public-key = \"{}\"\n\
             allow-anonymous = true\nanonymous-subscribe = [\"/public/**\"]\n",
            fixture("jwt-rs256-public.pem")
        ),
        &[],
    )
}

fn hs256(claims: &Value) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn rs256(claims: &Value, key_file: &str) -> String {
    let pem = std::fs::read(fixture(key_file)).unwrap();
    encode(
        &Header::new(jsonwebtoken::Algorithm::RS256),
        claims,
        &EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap()
}

/// Ada may read the chat and write to room 1.
fn ada_claims() -> Value {
    json!({"sub": "ada", "exp": now() + 3600,
           "subscribe": ["/chat/**"], "publish": ["/chat/1"]})
}

fn assert_denied(reply: &Value, error: &str, reason_part: &str) {
    assert_eq!(reply["successful"], false, "{reply}");
    assert_eq!(reply["error"], error, "{reply}");
    let reason = reply["ext"]["halley"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains(reason_part),
        "reason {reason:?} should mention {reason_part:?}: {reply}"
    );
}

#[tokio::test]
async fn a_valid_hs256_token_handshakes_and_its_claims_decide_subscribe_and_publish() {
    let server = server("");
    let browser = server.browser();
    let reply = handshake_with_token(&browser, &hs256(&ada_claims())).await;
    assert_eq!(reply["successful"], true, "{reply}");
    let client_id = reply["clientId"].as_str().unwrap().to_owned();

    let ok = subscribe_raw(&browser, &client_id, "s1", "/chat/*").await;
    assert_eq!(ok["successful"], true, "inside the claims: {ok}");
    let denied = subscribe_raw(&browser, &client_id, "s2", "/admin/logs").await;
    assert_denied(&denied, "403::subscribe_denied", "/admin/logs");
    assert_eq!(denied["subscription"], "/admin/logs");
    let wider = subscribe_raw(&browser, &client_id, "s3", "/**").await;
    assert_denied(&wider, "403::subscribe_denied", "/**");
    // All or nothing: one denied channel refuses the whole request.
    let mixed = send_one(
        &browser,
        &client_id,
        "s4",
        "/meta/subscribe",
        json!({"subscription": ["/chat/2", "/secret"]}),
    )
    .await;
    assert_denied(&mixed, "403::subscribe_denied", "/secret");

    let published = publish_raw(&browser, &client_id, "p1", "/chat/1", json!("hi")).await;
    assert_eq!(published["successful"], true, "{published}");
    let refused = publish_raw(&browser, &client_id, "p2", "/chat/2", json!("hi")).await;
    assert_denied(&refused, "403::publish_denied", "/chat/2");
    let service = publish_raw(&browser, &client_id, "p3", "/service/echo", json!("hi")).await;
    assert_denied(&service, "403::publish_denied", "/service/echo");
}

#[tokio::test]
async fn a_denied_publish_reaches_no_one_and_an_allowed_one_does() {
    let server = server("");
    let reader = Client::builder(&server.url)
        .handshake_ext(
            serde_json::value::to_raw_value(
                &json!({"authentication": {"token": hs256(&ada_claims())}}),
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    let mut deliveries = reader.take_deliveries().unwrap();
    reader.handshake().await.expect("ada's handshake");
    reader
        .subscribe("/chat/**")
        .await
        .expect("inside the claims");
    let writer_claims =
        json!({"sub": "bob", "exp": now() + 60, "subscribe": [], "publish": ["/chat/1"]});
    let writer = Client::builder(&server.url)
        .handshake_ext(
            serde_json::value::to_raw_value(
                &json!({"authentication": {"token": hs256(&writer_claims)}}),
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    writer.handshake().await.unwrap();
    assert!(
        writer.publish("/chat/2", &json!("nope")).await.is_err(),
        "outside bob's claims"
    );
    writer
        .publish("/chat/1", &json!("yes"))
        .await
        .expect("inside bob's claims");
    let delivery = within(30.0, "the allowed message", deliveries.recv())
        .await
        .unwrap();
    assert_eq!(
        delivery.channel, "/chat/1",
        "the denied message was never delivered"
    );
    assert_eq!(delivery.data.get(), "\"yes\"");
}

#[tokio::test]
async fn a_valid_rs256_token_is_accepted() {
    let server = server("");
    let reply = handshake_with_token(
        &server.browser(),
        &rs256(&ada_claims(), "jwt-rs256-private.pem"),
    )
    .await;
    assert_eq!(reply["successful"], true, "{reply}");
}

#[tokio::test]
async fn an_expired_token_is_denied_with_the_reason() {
    let server = server("");
    let mut claims = ada_claims();
    claims["exp"] = json!(now() - 3600);
    let reply = handshake_with_token(&server.browser(), &hs256(&claims)).await;
    assert_denied(&reply, "403::handshake_denied", "expired");
    assert_eq!(reply["advice"]["reconnect"], "none", "{reply}");
    assert!(reply.get("clientId").is_none(), "no session: {reply}");
}

#[tokio::test]
async fn a_wrong_signature_is_denied() {
    let server = server("");
    let browser = server.browser();
    let forged = encode(
        &Header::default(),
        &ada_claims(),
        &EncodingKey::from_secret(b"not-the-secret"),
    )
    .unwrap();
    assert_denied(
        &handshake_with_token(&browser, &forged).await,
        "403::handshake_denied",
        "signature",
    );
    let foreign = rs256(&ada_claims(), "other-rs256-private.pem");
    assert_denied(
        &handshake_with_token(&browser, &foreign).await,
        "403::handshake_denied",
        "signature",
    );
    // A token whose claims were edited after signing.
    let token = hs256(&ada_claims());
    let parts: Vec<&str> = token.split('.').collect();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims = ada_claims();
    claims["subscribe"] = json!(["/**"]);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(claims.to_string()),
        parts[2]
    );
    assert_denied(
        &handshake_with_token(&browser, &tampered).await,
        "403::handshake_denied",
        "signature",
    );
    assert_denied(
        &handshake_with_token(&browser, "not.a.jwt").await,
        "403::handshake_denied",
        "token",
    );
    let reply = handshake_with(&browser, json!({"authentication": {"token": 42}})).await;
    assert_denied(&reply, "403::handshake_denied", "ext.authentication.token");
}

#[tokio::test]
async fn anonymous_sessions_get_only_the_anonymous_patterns() {
    let server = server("");
    let browser = server.browser();
    let reply = handshake_with(&browser, Value::Null).await;
    assert_eq!(reply["successful"], true, "anonymous allowed: {reply}");
    let client_id = reply["clientId"].as_str().unwrap();
    let ok = subscribe_raw(&browser, client_id, "s1", "/public/**").await;
    assert_eq!(ok["successful"], true, "{ok}");
    let denied = subscribe_raw(&browser, client_id, "s2", "/chat/1").await;
    assert_denied(&denied, "403::subscribe_denied", "anonymous");
    let publish = publish_raw(&browser, client_id, "p1", "/public/news", json!(1)).await;
    assert_denied(&publish, "403::publish_denied", "anonymous");
}

#[tokio::test]
async fn anonymous_handshakes_are_refused_unless_allowed() {
    let server = start_with_config(&format!("[jwt]\nhs256-secret = \"{SECRET}\"\n"), &[]);
    let reply = handshake_with(&server.browser(), json!({})).await;
    assert_denied(&reply, "403::handshake_denied", "authentication required");
}

#[tokio::test]
async fn the_session_cap_per_user_refuses_the_extra_session_until_one_ends() {
    let server = server("max-sessions-per-user = 2");
    let token = hs256(&ada_claims());
    let first = server.browser();
    let first_id = handshake_with_token(&first, &token).await["clientId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        handshake_with_token(&server.browser(), &token).await["successful"],
        true
    );
    let third = handshake_with_token(&server.browser(), &token).await;
    assert_denied(&third, "403::handshake_denied", "too many sessions");
    let bob = json!({"sub": "bob", "exp": now() + 60});
    assert_eq!(
        handshake_with_token(&server.browser(), &hs256(&bob)).await["successful"],
        true,
        "other users unaffected"
    );

    let bye = send_one(&first, &first_id, "d", "/meta/disconnect", json!({})).await;
    assert_eq!(bye["successful"], true);
    let again = handshake_with_token(&server.browser(), &token).await;
    assert_eq!(again["successful"], true, "a freed place: {again}");
}

#[tokio::test]
async fn an_expired_session_frees_its_place() {
    let server = server("max-sessions-per-user = 1\nmax-interval = 300\nsweep-period = 100");
    let token = hs256(&ada_claims());
    assert_eq!(
        handshake_with_token(&server.browser(), &token).await["successful"],
        true
    );
    // Never connects: expires after max-interval. Until then the user's
    // place is taken; ask every 100 ms until it is free.
    within(30.0, "the expired session's place to be freed", async {
        loop {
            let again = handshake_with_token(&server.browser(), &token).await;
            if again["successful"] == true {
                break;
            }
            assert_denied(&again, "403::handshake_denied", "too many sessions");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

#[test]
fn a_bad_jwt_configuration_stops_the_server_with_the_reason() {
    let stderr = refused_config("[jwt]\nrs256-public-key = \"/nonexistent/key.pem\"\n");
    assert!(stderr.contains("rs256-public-key"), "{stderr}");
}

#[tokio::test]
async fn a_tokens_limits_become_the_sessions_limits() {
    let server = server("");
    let browser = server.browser();
    let mut claims = ada_claims();
    claims["limits"] = json!({"max-publish-rate": 2});
    let reply = handshake_with_token(&browser, &hs256(&claims)).await;
    let id = reply["clientId"].as_str().unwrap().to_owned();
    let mut errors = Vec::new();
    for i in 0..4 {
        let reply = publish_raw(&browser, &id, &format!("p{i}"), "/chat/1", json!(i)).await;
        errors.push(reply["error"].as_str().unwrap_or("ok").to_owned());
    }
    assert_eq!(errors[..2], ["ok", "ok"], "a burst of 2 passes: {errors:?}");
    assert!(
        errors[2..]
            .iter()
            .any(|e| e == "429::publish_rate_exceeded"),
        "{errors:?}"
    );
}

#[tokio::test]
async fn a_configured_issuer_and_audience_are_required_not_only_checked() {
    let server = start_with_config(
        &format!(
            "[jwt]\nhs256-secret = \"{SECRET}\"\nissuer = \"https://auth.example\"\n\
             audience = \"halley\"\n"
        ),
        &[],
    );
    let browser = server.browser();
    let with = |iss: Option<&str>, aud: Option<&str>| {
        let mut claims = ada_claims();
        if let Some(iss) = iss {
            claims["iss"] = json!(iss);
        }
        if let Some(aud) = aud {
            claims["aud"] = json!(aud);
        }
        hs256(&claims)
    };
    let both = with(Some("https://auth.example"), Some("halley"));
    assert_eq!(
        handshake_with_token(&browser, &both).await["successful"],
        true
    );
    let no_iss = with(None, Some("halley"));
    assert_denied(
        &handshake_with_token(&browser, &no_iss).await,
        "403::handshake_denied",
        "iss",
    );
    let no_aud = with(Some("https://auth.example"), None);
    assert_denied(
        &handshake_with_token(&browser, &no_aud).await,
        "403::handshake_denied",
        "aud",
    );
    let wrong_iss = with(Some("https://evil.example"), Some("halley"));
    assert_denied(
        &handshake_with_token(&browser, &wrong_iss).await,
        "403::handshake_denied",
        "issuer",
    );
}
