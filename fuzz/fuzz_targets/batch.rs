//! The Bayeux batch decoder (`halley_protocol::decode_batch`), on any bytes.
//!
//! Beyond not panicking: every message it decodes re-encodes and decodes to
//! the same message (as an array and as a bare object), a body it refuses
//! as not JSON is refused by serde_json too, and the bracket count that
//! enforces `max-data-depth` agrees with the depth of the parsed `data`.
#![no_main]

use halley_fuzz::{encode_message, parsed_depth, same_message};
use halley_protocol::{decode_batch, DecodeError};
use halley_server::fuzzing::json_depth;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let batch = match decode_batch(body) {
        Ok(batch) => batch,
        Err(DecodeError::NotMessages) => {
            // JSON, but not messages: serde_json must agree it is JSON.
            assert!(serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok());
            return;
        }
        Err(DecodeError::Json(_)) => return,
    };
    let messages: Vec<_> = batch.into_iter().filter_map(Result::ok).collect();
    let encoded: Vec<String> = messages.iter().map(encode_message).collect();
    let again = decode_batch(format!("[{}]", encoded.join(",")).as_bytes())
        .unwrap_or_else(|e| panic!("re-encoded batch {encoded:?} does not decode: {e}"));
    assert_eq!(again.len(), messages.len());
    for ((message, again), encoded) in messages.iter().zip(again).zip(&encoded) {
        let again = again.unwrap_or_else(|e| panic!("{encoded} no longer decodes: {e:?}"));
        assert!(
            same_message(message, &again),
            "{encoded} decodes differently"
        );
        // A bare object, as a client may send one message alone.
        let bare = decode_batch(encoded.as_bytes()).expect("a bare message decodes");
        assert!(same_message(
            message,
            bare[0].as_ref().expect("still valid")
        ));

        if let Some(data) = &message.data {
            // serde_json stops at 128 levels; below that, the two counts
            // agree. (A number past f64's range, which `RawValue` lets
            // through, also stops it, and says nothing of depth.)
            match parsed_depth(data.get()) {
                Ok(depth) => assert_eq!(json_depth(data.get()), depth, "depth of {}", data.get()),
                Err(e) if e.to_string().contains("recursion limit") => {
                    assert!(json_depth(data.get()) >= 128, "depth of {}", data.get())
                }
                Err(_) => {}
            }
        }
    }
});
