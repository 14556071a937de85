//! The remote adapter protocol: lines from an adapter
//! (`halley_server::adapter::remote::protocol::decode`).
//!
//! The input is what an adapter sends, split at `\n` as the link does.
//! Checked: a `publish` names a broadcast channel and its `data` is JSON
//! taken byte for byte from the line, never `null`; a `snapshot`'s entries
//! are JSON; and every refusal makes an `error` line that is one line of
//! JSON however the reason reads (a reason quotes the adapter's input).
#![no_main]

use halley_protocol::{ChannelKind, ChannelName};
use halley_server::adapter::remote::protocol::{decode, FromAdapter, ToAdapter};
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;

fn is_json(text: &str) -> bool {
    serde_json::from_str::<IgnoredAny>(text).is_ok()
}

fuzz_target!(|input: &[u8]| {
    for line in input.split(|&b| b == b'\n') {
        match decode(line) {
            Ok(FromAdapter::Publish { channel, data }) => {
                assert_eq!(channel.kind(), ChannelKind::Broadcast);
                assert!(ChannelName::parse(channel.as_str()).is_ok());
                assert_ne!(data.get(), "null");
                assert!(is_json(data.get()));
                let text = std::str::from_utf8(line).expect("decoded, so UTF-8");
                assert!(
                    text.contains(data.get()),
                    "data is not the line's own bytes"
                );
            }
            Ok(FromAdapter::Snapshot { channel, data }) => {
                assert_eq!(channel.kind(), ChannelKind::Broadcast);
                assert!(data.iter().all(|d| is_json(d.get())));
            }
            Ok(
                FromAdapter::Hello { .. }
                | FromAdapter::Ping
                | FromAdapter::Pong
                | FromAdapter::Error { .. },
            ) => {}
            Err(refused) => {
                let message = refused.message();
                let answer = ToAdapter::Error { message: &message }.encode();
                let (body, rest) = answer.split_once('\n').expect("a line");
                assert!(rest.is_empty(), "the error answer spans lines: {answer:?}");
                assert!(is_json(body), "the error answer is not JSON: {answer:?}");
            }
        }
    }
});
