//! callback-polling (JSONP): `GET ?jsonp=<callback>&message=<JSON array>`,
//! answered as `text/javascript`: `callback([...])`.
//!
//! The response is executed as script by the browser, so the callback name
//! is the dangerous part: only a plain JavaScript identifier path
//! (`cb`, `a.b_c$1`) is accepted; anything else is refused with 400 before
//! a byte of script is written.

use http::{Response, StatusCode};

use halley_protocol::BayeuxError;

use super::http::{bayeux_error, browser_id, decode_request, plain, respond, Body};
use super::http1::IncomingRequest;
use crate::engine::Engine;
use crate::exchange::Origin;
use crate::state::session::ConnectionType;

pub async fn handle(
    engine: &Engine,
    peer: Option<std::net::IpAddr>,
    request: IncomingRequest,
) -> Response<Body> {
    let transport = crate::metrics::Transport::CallbackPolling;
    crate::metrics::metrics().connections.get(transport).inc();
    let Jsonp { callback, message } = match parse_query(request.uri().query().unwrap_or("")) {
        Ok(jsonp) => jsonp,
        Err(why) => return plain(StatusCode::BAD_REQUEST, why),
    };
    let max = engine.node().config().max_request_bytes;
    if message.len() > max {
        return bayeux_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            BayeuxError::MESSAGE_INVALID,
            &format!("message larger than {max} bytes"),
        );
    }
    let batch = match decode_request(engine, message.as_bytes()) {
        Ok(batch) => batch,
        Err(response) => return *response,
    };
    let origin =
        Origin::http(ConnectionType::CallbackPolling, browser_id(&request)).from_peer(peer);
    let exchange = engine.handle_batch(batch, origin).await;
    let prefix = format!("{callback}(");
    respond(
        engine,
        exchange,
        prefix.as_bytes(),
        b")",
        "text/javascript; charset=utf-8",
    )
    .await
}

/// What a callback-polling request's query asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct Jsonp {
    /// The function the answer is wrapped in; a valid callback name.
    pub callback: String,
    /// The batch, as JSON text (not yet decoded).
    pub message: String,
}

/// Reads `jsonp` and `message` from a query string (the last of each wins)
/// and checks the callback name. The refusal is the 400's body.
pub fn parse_query(query: &str) -> Result<Jsonp, &'static str> {
    let mut callback = None;
    let mut message = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "jsonp" => callback = Some(value.into_owned()),
            "message" => message = Some(value.into_owned()),
            _ => {}
        }
    }
    let Some(callback) = callback else {
        return Err("missing jsonp parameter (callback-polling) or use POST (long-polling)\n");
    };
    if !is_valid_callback(&callback) {
        return Err("invalid jsonp callback name\n");
    }
    let Some(message) = message else {
        return Err("missing message parameter\n");
    };
    Ok(Jsonp { callback, message })
}

/// A dotted path of JavaScript identifiers (ASCII only), at most 128 bytes.
pub fn is_valid_callback(name: &str) -> bool {
    let identifier = |part: &str| {
        let mut bytes = part.bytes();
        matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_' | b'$'))
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
    };
    !name.is_empty() && name.len() <= 128 && name.split('.').all(identifier)
}

#[cfg(test)]
mod tests {
    use super::{is_valid_callback, parse_query, Jsonp};

    #[test]
    fn query_parameters() {
        assert_eq!(
            parse_query("jsonp=a.b&x=1&message=%5B%5D"),
            Ok(Jsonp {
                callback: "a.b".into(),
                message: "[]".into()
            })
        );
        assert!(parse_query("message=[]")
            .unwrap_err()
            .contains("missing jsonp"));
        assert!(parse_query("jsonp=alert(1)&message=[]")
            .unwrap_err()
            .contains("invalid jsonp"));
        assert!(parse_query("jsonp=cb")
            .unwrap_err()
            .contains("missing message"));
        // The last of a repeated parameter wins, and is the one checked.
        assert!(parse_query("jsonp=ok&jsonp=a-b&message=[]").is_err());
    }

    #[test]
    fn callback_names() {
        for ok in [
            "cb",
            "jQuery123_456",
            "a.b.c",
            "$",
            "_x$1",
            "org.cometd.jsonp_1",
        ] {
            assert!(is_valid_callback(ok), "{ok}");
        }
        for bad in [
            "",
            "1a",
            "a..b",
            "a.",
            ".a",
            "alert(1)//",
            "a-b",
            "a b",
            "a[0]",
            "é",
            "a;b",
            &"a".repeat(129),
        ] {
            assert!(!is_valid_callback(bad), "{bad}");
        }
    }
}
