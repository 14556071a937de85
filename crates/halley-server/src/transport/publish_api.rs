//! The HTTP publish API: `POST /api/publish`, so a backend can push a
//! message with one HTTP request instead of speaking Bayeux.
//!
//! ```text
//! POST /api/publish
//! Authorization: Bearer <key>
//! {"channel": "/stocks/AAPL", "data": {"price": 187.2}}      (or an array of them)
//!
//! 200 [{"channel": "/stocks/AAPL", "delivered": 3}]           (one entry per message)
//! ```
//!
//! `delivered` is the number of sessions the message was queued for. On a
//! cluster node (`redis` set) the message reaches its subscribers, on every
//! node, when it comes back from Redis, so the count is not known when the
//! request is answered: the entry says so, `{"channel": ..., "delivered":
//! null, "accepted": true}`.
//! Messages go through [`crate::adapter::Publisher`], so they reach
//! subscribers exactly as a client's publish does (`data` is passed on
//! byte for byte) and take turns with the Data Adapter owning the channel.
//!
//! The API is off unless `api-keys` is set (404 then, saying how to turn it
//! on): an open publish endpoint would let anyone write to every channel.
//! A request is all or nothing: if any message is invalid, none is sent.
//!
//! | status | when |
//! |---|---|
//! | 200 | published; the body lists what was delivered |
//! | 400 | not JSON, not `{channel, data}` objects, a channel that is invalid, a glob, `/meta/**` or `/service/**`, `data` missing |
//! | 401 | no `Authorization: Bearer` header, or an unknown key |
//! | 404 | no API key configured: the API is disabled |
//! | 429 | this address failed too many API-key attempts (`api-key-failures-per-ip`), or this key sent more than `api-publish-rate` messages a second (nothing published): retry after `Retry-After` seconds |
//! | 405 | not a `POST` |
//! | 413 | a body over `max-request-bytes`, or more than `max-batch-messages` messages |
//! | 503 | a cluster node that cannot reach Redis: nothing was published (or, lost in the middle of a request, the entries with `"error": "broker_unavailable"` were not; or, lost after they were handed over, the request's messages may or may not have been published) |

use std::sync::Arc;

use bytes::Bytes;
use halley_protocol::{ChannelKind, ChannelName};
use http::header::{
    HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::http::Body;
use super::http1::IncomingRequest;
use crate::adapter::Publisher;
use crate::engine::Engine;
use crate::state::limits::Limit;

/// Where the API listens.
pub const PATH: &str = "/api/publish";

/// One message to publish, as the request spells it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Publish {
    channel: String,
    /// `null` is data; only an absent `data` is missing.
    #[serde(default, deserialize_with = "halley_protocol::message::present")]
    data: Option<Box<RawValue>>,
}

/// `peer`: the client's address, for the failed-key limit.
pub async fn handle(
    engine: &Arc<Engine>,
    peer: Option<std::net::IpAddr>,
    request: IncomingRequest,
) -> Response<Body> {
    let keys = &engine.node().config().api_keys;
    if keys.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            "the HTTP publish API is disabled: configure an API key \
             (api-keys in the TOML file, --api-key, or HALLEY_API_KEYS)",
        );
    }
    if request.method() != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
    }
    // Guessing keys: an address that failed too often is refused for a
    // while, whatever it sends.
    let node = engine.node();
    let now = tokio::time::Instant::now();
    if node.api_key_failures().is_exhausted(peer, now) {
        node.limits().hit(Limit::ApiKeyFailures, || {
            let peer = peer.map_or_else(|| "an unknown address".to_owned(), |ip| ip.to_string());
            format!("{peer} failed too many API-key attempts (api-key-failures-per-ip); 429")
        });
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed API-key attempts from this address: retry later",
        );
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("10"));
        return response;
    }
    let Some(key) = authorized(&request, keys) else {
        node.api_key_failures().try_take(peer, now);
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "missing or unknown API key: send `Authorization: Bearer <key>`",
        );
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    };
    let max = engine.node().config().max_request_bytes;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body larger than {max} bytes"),
        )
    };
    let Some(body) = request.into_body().bytes() else {
        return too_large();
    };
    let messages = match parse(&body, engine.node().config().max_batch_messages) {
        Ok(messages) => messages,
        Err((status, message)) => return error(status, &message),
    };
    // A trusted publisher is still bounded: a leaked key or a runaway
    // backend must not make the node broadcast without end.
    if let Err(wait) = node.api_publish_rate(key).map_or(Ok(()), |rate| {
        rate.try_take(messages.len(), tokio::time::Instant::now())
    }) {
        let rate = node.config().api_publish_rate;
        node.limits().hit(Limit::ApiPublishRate, || {
            format!("API key {} over api-publish-rate ({rate}/s); 429", key + 1)
        });
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "this API key publishes more than api-publish-rate ({rate} messages a second): \
                 nothing was published; retry after the time in Retry-After"
            ),
        );
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        return response;
    }
    // All or nothing, as far as can be known before sending.
    if !engine.node().broker().available() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the cluster's Redis is unavailable: nothing was published",
        );
    }
    let publisher = Publisher::new(engine.node());
    let mut refused = false;
    let results: Vec<serde_json::Value> = messages
        .iter()
        .map(|(channel, data)| {
            let published = publisher.try_publish_as(channel, data, crate::metrics::Origin::HttpApi);
            if published.is_unavailable() {
                refused = true;
                return serde_json::json!({
                    "channel": channel.as_str(),
                    "delivered": 0,
                    "error": crate::broker::UNAVAILABLE.reason,
                });
            }
            match published {
                // Handed to the cluster: how many it reaches is not known yet.
                crate::broker::Published::Accepted { .. } => serde_json::json!({
                    "channel": channel.as_str(),
                    "delivered": null,
                    "accepted": true,
                }),
                _ => serde_json::json!({ "channel": channel.as_str(), "delivered": published.local() }),
            }
        })
        .collect();
    // Answered once the accepted ones cannot be lost (a cluster node: in
    // Redis), so a 200 is a promise.
    if !refused && !engine.node().broker().confirm().await {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the cluster's Redis was lost while publishing: the messages may or may not have been published",
        );
    }
    let status = if refused {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json(status, serde_json::Value::Array(results).to_string())
}

/// Which of `keys` the request's `Authorization: Bearer <key>` carries.
fn authorized<B>(request: &Request<B>, keys: &[String]) -> Option<usize> {
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme is case-insensitive (RFC 9110): `bearer` is fine.
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim())?;
    // Every key is compared, each in time independent of where it differs.
    keys.iter().enumerate().fold(None, |found, (index, key)| {
        found.or(constant_time_eq(given, key).then_some(index))
    })
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

type Invalid = (StatusCode, String);

/// The messages of a body (one object or an array), each validated; the
/// first problem, naming the message, otherwise.
fn parse(body: &[u8], max_messages: usize) -> Result<Vec<(ChannelName, Box<RawValue>)>, Invalid> {
    let bad = |what: String| (StatusCode::BAD_REQUEST, what);
    let is_array = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'[');
    let requests: Vec<Publish> = if is_array {
        serde_json::from_slice(body)
    } else {
        serde_json::from_slice(body).map(|one| vec![one])
    }
    .map_err(|e| {
        bad(format!(
            "expected {{\"channel\": ..., \"data\": ...}} or an array of them: {e}"
        ))
    })?;
    if requests.is_empty() {
        return Err(bad("nothing to publish: the array is empty".into()));
    }
    if requests.len() > max_messages {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("at most {max_messages} messages per request"),
        ));
    }
    let at = |i: usize| {
        if is_array {
            // Counted from 1, as people count.
            format!("message {}: ", i + 1)
        } else {
            String::new()
        }
    };
    requests
        .into_iter()
        .enumerate()
        .map(|(i, request)| {
            let channel = ChannelName::parse(&request.channel).map_err(|e| {
                bad(format!(
                    "{}invalid channel {:?}: {e}",
                    at(i),
                    request.channel
                ))
            })?;
            if channel.kind() != ChannelKind::Broadcast {
                return Err(bad(format!(
                    "{}cannot publish to {channel}: /meta and /service channels are not broadcast",
                    at(i)
                )));
            }
            let data = request
                .data
                .ok_or_else(|| bad(format!("{}data is missing", at(i))))?;
            Ok((channel, data))
        })
        .collect()
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, serde_json::json!({ "error": message }).to_string())
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_object_or_an_array() {
        let one = parse(br#"{"channel":"/x","data":{"a":1}}"#, 10).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].1.get(), r#"{"a":1}"#, "data kept byte for byte");
        let many = parse(
            br#" [{"channel":"/x","data":1},{"channel":"/y/z","data":"s"}]"#,
            10,
        )
        .unwrap();
        assert_eq!(many[1].0.as_str(), "/y/z");
    }

    #[test]
    fn invalid_requests_are_refused_with_a_reason() {
        let refused = |body: &str| parse(body.as_bytes(), 2).unwrap_err();
        assert_eq!(refused("not json").0, StatusCode::BAD_REQUEST);
        assert_eq!(refused("[]").0, StatusCode::BAD_REQUEST);
        assert!(refused(r#"{"channel":"/x"}"#).1.contains("data is missing"));
        let null = parse(br#"{"channel":"/x","data":null}"#, 10).unwrap();
        assert_eq!(null[0].1.get(), "null", "null is data");
        assert!(refused(r#"{"channel":"x","data":1}"#)
            .1
            .contains("invalid channel"));
        assert!(refused(r#"{"channel":"/x/*","data":1}"#)
            .1
            .contains("invalid channel"));
        assert!(refused(r#"{"channel":"/meta/connect","data":1}"#)
            .1
            .contains("/meta"));
        assert!(refused(r#"{"channel":"/service/echo","data":1}"#)
            .1
            .contains("/service"));
        assert!(refused(r#"{"channel":"/x","data":1,"extra":2}"#)
            .1
            .contains("unknown field"));
        let second = refused(r#"[{"channel":"/x","data":1},{"channel":"/meta","data":1}]"#);
        assert!(second.1.starts_with("message 2: "), "{}", second.1);
        let three =
            r#"[{"channel":"/x","data":1},{"channel":"/x","data":1},{"channel":"/x","data":1}]"#;
        assert_eq!(refused(three).0, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn keys_compare_exactly() {
        assert!(constant_time_eq("secret", "secret"));
        assert!(!constant_time_eq("secret", "secreT"));
        assert!(!constant_time_eq("secret", "secret2"));
    }
}
