//! callback-polling (JSONP): query strings in, `callback([...])` out.
//!
//! The input is one query string per line (`jsonp=cb&message=[...]`),
//! each a request to the same fresh node, in order; `$CLIENT` in a line
//! becomes the clientId of the last handshake, and the browser cookie the
//! server sets is sent back. A request goes the way
//! `transport::callback_polling::handle` takes it: the query parsed
//! (`parse_query`), the size checked, the batch decoded, the engine, the
//! connection state machine writing the body.
//!
//! Checked: an accepted callback name is a dotted path of JavaScript
//! identifiers (checked here the plain way), and every body is exactly
//! `callback(` + a JSON array of message objects + `)`, with no delivery
//! nested deeper than `max-data-depth`.
#![no_main]

use halley_fuzz::{check_replies, engine, handshake_client_id, runtime, LIMITS};
use halley_protocol::BodyWriter;
use halley_server::exchange::Origin;
use halley_server::fuzzing::{callback_polling_query, Jsonp};
use halley_server::state::session::ConnectionType;
use halley_server::transport::{decode_request, drive_http};
use libfuzzer_sys::fuzz_target;

/// `a.b_c.$1`: identifiers (a letter, `_` or `$`, then those or digits) joined by dots.
fn is_identifier_path(name: &str) -> bool {
    name.len() <= 128
        && name.split('.').all(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        })
}

fuzz_target!(|input: &str| {
    let runtime = runtime();
    runtime.block_on(async {
        let engine = engine();
        let mut client_id = String::new();
        let mut browser_id = None;
        for query in input.split('\n') {
            let query = query.replace("$CLIENT", &client_id);
            let Ok(Jsonp { callback, message }) = callback_polling_query(&query) else {
                continue;
            };
            assert!(
                is_identifier_path(&callback),
                "callback {callback:?} accepted"
            );
            if message.len() > LIMITS.max_request_bytes {
                continue; // a 413 before decoding
            }
            let Ok(batch) = decode_request(&engine, message.as_bytes()) else {
                continue; // a 400 or 413 with a plain Bayeux error
            };
            let origin = Origin::http(ConnectionType::CallbackPolling, browser_id.clone());
            let exchange = engine.handle_batch(batch, origin).await;
            let prefix = format!("{callback}(");
            let mut body = BodyWriter::with_prefix(prefix.as_bytes());
            if let Some(cookie) = drive_http(&engine, exchange, &mut body).await {
                browser_id = Some(cookie);
            }
            let body = body.finish(b")");
            let json = body
                .strip_prefix(prefix.as_bytes())
                .and_then(|rest| rest.strip_suffix(b")"))
                .expect("the body is callback(...)");
            if std::env::var_os("FUZZ_SHOW").is_some() {
                // Replaying one input: what the server wrote.
                eprintln!("<- {}", String::from_utf8_lossy(&body));
            }
            check_replies(json);
            if let Some(id) = handshake_client_id(json) {
                client_id = id;
            }
        }
    });
});
