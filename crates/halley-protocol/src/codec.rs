//! Request bodies to messages, and replies plus deliveries to a response body.
//!
//! Decoding takes the fast path first (the whole body as `Vec<Message>` in one
//! pass) and only when that fails parses message by message, so one bad
//! message in a batch gets its own error reply while the others proceed.
//!
//! Encoding never re-serializes a broadcast: [`encode_delivery`] produces the
//! JSON object once, and [`BodyWriter`] copies such objects into the body
//! between `[`, `,` and `]`.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::advice::{Advice, Reconnect};
use crate::message::{Message, Reply, Subscription};

/// One element of a decoded batch.
pub type Inbound = Result<Message, InvalidMessage>;

/// A batch element that is JSON but not a usable message. What could be
/// recovered of it (`channel`, `id`) lets the server address an error reply.
#[derive(Debug)]
pub struct InvalidMessage {
    pub channel: Option<String>,
    pub id: Option<Box<RawValue>>,
    pub reason: String,
}

/// The body as a whole is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not JSON at all (the serde_json message says where).
    Json(String),
    /// JSON, but neither an array of objects nor a single object.
    NotMessages,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Json(e) => write!(f, "malformed JSON: {e}"),
            DecodeError::NotMessages => f.write_str("body must be a JSON array of message objects"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes a request body (a JSON array of messages, or one bare message).
pub fn decode_batch(body: &[u8]) -> Result<Vec<Inbound>, DecodeError> {
    let first = body.iter().copied().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'[') => {
            if let Ok(messages) = serde_json::from_slice::<Vec<Message>>(body) {
                return Ok(messages.into_iter().map(Ok).collect());
            }
            // Slow path: find out which element is at fault.
            let elements: Vec<Box<RawValue>> =
                serde_json::from_slice(body).map_err(|e| match e.classify() {
                    serde_json::error::Category::Data => DecodeError::NotMessages,
                    _ => DecodeError::Json(e.to_string()),
                })?;
            Ok(elements.iter().map(|raw| decode_one(raw)).collect())
        }
        Some(b'{') => {
            let raw: Box<RawValue> =
                serde_json::from_slice(body).map_err(|e| DecodeError::Json(e.to_string()))?;
            Ok(vec![decode_one(&raw)])
        }
        Some(_) => match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Ok(_) => Err(DecodeError::NotMessages),
            Err(e) => Err(DecodeError::Json(e.to_string())),
        },
        None => Err(DecodeError::Json("empty body".into())),
    }
}

fn decode_one(raw: &RawValue) -> Inbound {
    match serde_json::from_str::<Message>(raw.get()) {
        Ok(message) => Ok(message),
        Err(e) => {
            /// Whatever can be salvaged to address the error reply.
            #[derive(Deserialize)]
            struct Salvage {
                channel: Option<serde_json::Value>,
                id: Option<Box<RawValue>>,
            }
            let salvage = serde_json::from_str::<Salvage>(raw.get()).ok();
            let (channel, id) = match salvage {
                Some(s) => (s.channel.and_then(|c| c.as_str().map(str::to_owned)), s.id),
                None => (None, None),
            };
            Err(InvalidMessage {
                channel,
                id,
                reason: e.to_string(),
            })
        }
    }
}

/// Encodes one broadcast delivery, once, for every subscriber to share.
/// The publisher's `clientId` is never included.
pub fn encode_delivery(
    channel: &str,
    data: &RawValue,
    id: Option<&RawValue>,
    ext: Option<&RawValue>,
) -> Bytes {
    let mut out = BytesMut::with_capacity(channel.len() + data.get().len() + 48);
    out.put_slice(b"{\"channel\":");
    // Channel names are validated (no characters that need escaping), but
    // go through serde anyway: this is the one place a delivery is encoded.
    serde_json::to_writer((&mut out).writer(), channel).expect("writing to memory");
    out.put_slice(b",\"data\":");
    out.put_slice(data.get().as_bytes());
    if let Some(id) = id {
        out.put_slice(b",\"id\":");
        out.put_slice(id.get().as_bytes());
    }
    if let Some(ext) = ext {
        out.put_slice(b",\"ext\":");
        out.put_slice(ext.get().as_bytes());
    }
    out.put_u8(b'}');
    out.freeze()
}

/// Writes `reply` as JSON, byte for byte what its derived `Serialize`
/// writes (the same fields in the same order, absent ones left out), but
/// with the field names written as they are rather than escaped again on
/// every reply, and numbers through `itoa`. Every request is answered with
/// at least one reply; serde's way cost a long-polling round trip ~2,100
/// instructions, 6% of the server's (`bench/instructions.sh`).
pub fn write_reply(out: &mut BytesMut, reply: &Reply) {
    let mut fields = Fields { out, first: true };
    if !reply.channel.is_empty() {
        fields.string("channel", &reply.channel);
    }
    if let Some(id) = &reply.id {
        fields.raw("id", id.get());
    }
    if let Some(successful) = reply.successful {
        fields.raw("successful", if successful { "true" } else { "false" });
    }
    if let Some(client_id) = &reply.client_id {
        fields.string("clientId", client_id);
    }
    if let Some(version) = reply.version {
        fields.string("version", version);
    }
    if let Some(minimum_version) = reply.minimum_version {
        fields.string("minimumVersion", minimum_version);
    }
    if let Some(types) = &reply.supported_connection_types {
        fields.key("supportedConnectionTypes");
        strings(fields.out, types.iter().copied());
    }
    if let Some(subscription) = &reply.subscription {
        match subscription {
            Subscription::One(one) => fields.string("subscription", one),
            Subscription::Many(many) => {
                fields.key("subscription");
                strings(fields.out, many.iter().map(String::as_str));
            }
        }
    }
    if let Some(error) = &reply.error {
        fields.string("error", error);
    }
    if let Some(advice) = &reply.advice {
        fields.key("advice");
        write_advice(fields.out, advice);
    }
    if let Some(data) = &reply.data {
        fields.raw("data", data.get());
    }
    if let Some(ext) = &reply.ext {
        fields.raw("ext", ext.get());
    }
    fields.end();
}

fn write_advice(out: &mut BytesMut, advice: &Advice) {
    let mut fields = Fields { out, first: true };
    if let Some(reconnect) = advice.reconnect {
        fields.raw(
            "reconnect",
            match reconnect {
                Reconnect::Retry => "\"retry\"",
                Reconnect::Handshake => "\"handshake\"",
                Reconnect::None => "\"none\"",
            },
        );
    }
    for (name, value) in [
        ("interval", advice.interval),
        ("timeout", advice.timeout),
        ("maxInterval", advice.max_interval),
    ] {
        if let Some(value) = value {
            fields.raw(name, itoa::Buffer::new().format(value));
        }
    }
    if let Some(multiple) = advice.multiple_clients {
        fields.raw("multiple-clients", if multiple { "true" } else { "false" });
    }
    fields.end();
}

/// A JSON object being written, field by field. The names are this file's
/// own constants, which need no escaping.
struct Fields<'a> {
    out: &'a mut BytesMut,
    first: bool,
}

impl Fields<'_> {
    fn key(&mut self, name: &str) {
        self.out.put_slice(if self.first { b"{\"" } else { b",\"" });
        self.first = false;
        self.out.put_slice(name.as_bytes());
        self.out.put_slice(b"\":");
    }

    fn raw(&mut self, name: &str, json: &str) {
        self.key(name);
        self.out.put_slice(json.as_bytes());
    }

    fn string(&mut self, name: &str, value: &str) {
        self.key(name);
        string(self.out, value);
    }

    fn end(self) {
        self.out.put_slice(if self.first { b"{}" } else { b"}" });
    }
}

/// A JSON string, escaped as serde_json escapes it.
fn string(out: &mut BytesMut, value: &str) {
    serde_json::to_writer((&mut *out).writer(), value).expect("writing to memory");
}

fn strings<'s>(out: &mut BytesMut, values: impl Iterator<Item = &'s str>) {
    out.put_u8(b'[');
    for (i, value) in values.enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        string(out, value);
    }
    out.put_u8(b']');
}

/// Builds one response body: `prefix[item,item,...]suffix`.
///
/// The prefix/suffix pair is empty for JSON transports and `callback(`/`)`
/// for callback-polling.
pub struct BodyWriter {
    out: BytesMut,
    empty: bool,
}

impl BodyWriter {
    pub fn new() -> Self {
        Self::with_prefix(b"")
    }

    /// Starts a body with `prefix` before the opening `[` (JSONP's `callback(`).
    pub fn with_prefix(prefix: &[u8]) -> Self {
        let mut out = BytesMut::with_capacity(256);
        out.put_slice(prefix);
        out.put_u8(b'[');
        BodyWriter { out, empty: true }
    }

    fn separator(&mut self) {
        if !self.empty {
            self.out.put_u8(b',');
        }
        self.empty = false;
    }

    /// Appends an already-encoded message object (a shared delivery).
    pub fn push_encoded(&mut self, encoded: &[u8]) {
        self.separator();
        self.out.put_slice(encoded);
    }

    /// Appends a reply, serializing it here.
    pub fn push_reply(&mut self, reply: &Reply) {
        self.separator();
        write_reply(&mut self.out, reply);
    }

    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// Closes the array, appends `suffix`, and hands the body over.
    pub fn finish(mut self, suffix: &[u8]) -> Bytes {
        self.out.put_u8(b']');
        self.out.put_slice(suffix);
        self.out.freeze()
    }
}

impl Default for BodyWriter {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_array_and_bare_object() {
        let batch = decode_batch(br#"[{"channel":"/a","data":1},{"channel":"/b"}]"#).unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[1].as_ref().unwrap().channel.as_deref(), Some("/b"));
        let batch = decode_batch(br#" {"channel":"/a"} "#).unwrap();
        assert_eq!(batch.len(), 1);
        assert!(decode_batch(b"[]").unwrap().is_empty());
    }

    #[test]
    fn one_bad_message_does_not_spoil_the_batch() {
        let batch = decode_batch(br#"[{"channel":"/a"},{"channel":"/b","clientId":7,"id":"3"},5]"#)
            .unwrap();
        assert!(batch[0].is_ok());
        let bad = batch[1].as_ref().unwrap_err();
        assert_eq!(bad.channel.as_deref(), Some("/b"));
        assert_eq!(bad.id.as_ref().unwrap().get(), r#""3""#);
        assert!(batch[2].is_err());
    }

    /// Found by the `batch` fuzz target: a number past `f64`'s range is
    /// JSON, so `data` carries it through byte for byte (a subscriber's
    /// parser makes it `Infinity` or `0`); only a parse into a `Value`
    /// refuses it. The codec must never take that path for `data`.
    #[test]
    fn a_number_past_f64_passes_through() {
        let body = br#"[{"channel":"/a","data":{"n":[2.5e4444,-1e-999]},"id":1e999}]"#;
        let batch = decode_batch(body).unwrap();
        let message = batch[0].as_ref().unwrap();
        assert_eq!(
            message.data.as_ref().unwrap().get(),
            r#"{"n":[2.5e4444,-1e-999]}"#
        );
        assert_eq!(message.id.as_ref().unwrap().get(), "1e999");
        assert!(serde_json::from_str::<serde_json::Value>(r#"2.5e4444"#).is_err());
    }

    #[test]
    fn whole_body_errors() {
        assert!(matches!(decode_batch(b"[{"), Err(DecodeError::Json(_))));
        assert!(matches!(decode_batch(b""), Err(DecodeError::Json(_))));
        assert!(matches!(decode_batch(b"nope"), Err(DecodeError::Json(_))));
        assert_eq!(decode_batch(b"42").unwrap_err(), DecodeError::NotMessages);
        assert_eq!(
            decode_batch(br#""x""#).unwrap_err(),
            DecodeError::NotMessages
        );
    }

    #[test]
    fn delivery_is_encoded_once_as_valid_json() {
        let data = RawValue::from_string(r#"{"text":"hi \"there\""}"#.into()).unwrap();
        let id = RawValue::from_string(r#""4""#.into()).unwrap();
        let bytes = encode_delivery("/chat/room1", &data, Some(&id), None);
        assert_eq!(
            &bytes[..],
            br#"{"channel":"/chat/room1","data":{"text":"hi \"there\""},"id":"4"}"#
        );
        let mut body = BodyWriter::with_prefix(b"cb(");
        body.push_encoded(&bytes);
        body.push_reply(&Reply::to("/meta/connect", None).success());
        let body = body.finish(b")");
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"cb([{"channel":"/chat/room1","data":{"text":"hi \"there\""},"id":"4"},{"channel":"/meta/connect","successful":true}])"#
        );
    }

    proptest! {
        /// Arbitrary data survives encode -> body -> decode unchanged.
        #[test]
        fn delivery_round_trips(text in ".{0,40}", n in any::<i64>(), channel in "/[a-z]{1,5}(/[a-z0-9_]{1,5}){0,3}") {
            let value = serde_json::json!({"text": text, "n": n, "list": [1, null, true]});
            let data = RawValue::from_string(value.to_string()).unwrap();
            let mut body = BodyWriter::new();
            body.push_encoded(&encode_delivery(&channel, &data, None, None));
            body.push_encoded(&encode_delivery(&channel, &data, None, None));
            let decoded = decode_batch(&body.finish(b"")).unwrap();
            prop_assert_eq!(decoded.len(), 2);
            for m in decoded {
                let m = m.unwrap();
                prop_assert_eq!(m.channel.as_deref(), Some(channel.as_str()));
                let back: serde_json::Value = serde_json::from_str(m.data.unwrap().get()).unwrap();
                prop_assert_eq!(&back, &value);
            }
        }

        /// The hand-written reply encoder writes what serde's derived
        /// `Serialize` writes, for any mix of fields and any text.
        #[test]
        fn write_reply_matches_serde(
            channel in prop::option::of(".{0,12}"),
            id in prop::option::of(prop_oneof![Just(r#""7""#.to_owned()), any::<i64>().prop_map(|n| n.to_string())]),
            successful in prop::option::of(any::<bool>()),
            client_id in prop::option::of("[a-z0-9\"\\\u{0}-\u{1f}é]{0,10}"),
            handshake in any::<bool>(),
            subscription in prop::option::of(prop_oneof![
                ".{0,8}".prop_map(Subscription::One),
                prop::collection::vec(".{0,6}", 0..3).prop_map(Subscription::Many),
            ]),
            error in prop::option::of(".{0,16}"),
            advice in prop::option::of((
                prop::option::of(prop_oneof![Just(Reconnect::Retry), Just(Reconnect::Handshake), Just(Reconnect::None)]),
                prop::option::of(any::<i64>()),
                prop::option::of(any::<i64>()),
                prop::option::of(any::<i64>()),
                prop::option::of(any::<bool>()),
            )),
            data in prop::option::of(Just(r#"{"a":[1,"x",null]}"#)),
            ext in prop::option::of(Just(r#"{"ack":3}"#)),
        ) {
            let raw = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
            let reply = Reply {
                channel: channel.unwrap_or_default().into(),
                id: id.as_deref().map(raw),
                successful,
                client_id,
                version: handshake.then_some("1.0"),
                minimum_version: handshake.then_some("1.0"),
                supported_connection_types: handshake.then(|| vec!["websocket", "long-polling"]),
                subscription,
                error,
                advice: advice.map(|(reconnect, interval, timeout, max_interval, multiple_clients)| Advice {
                    reconnect,
                    interval,
                    timeout,
                    max_interval,
                    multiple_clients,
                }),
                data: data.map(raw),
                ext: ext.map(raw),
            };
            let mut ours = BytesMut::new();
            write_reply(&mut ours, &reply);
            let serde = serde_json::to_vec(&reply).unwrap();
            prop_assert_eq!(String::from_utf8(ours.to_vec()).unwrap(), String::from_utf8(serde).unwrap());
        }

        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_batch(&body);
        }
    }
}
