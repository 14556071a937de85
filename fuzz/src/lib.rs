//! What the fuzz targets share: reference implementations to check the
//! server's parsers against, the checks of what the server writes, and a
//! small engine on a paused clock.
//!
//! | item | used by |
//! |---|---|
//! | [`encode_message`], [`same_message`] | `batch`: a decoded batch re-encodes to the same messages |
//! | [`parsed_depth`] | `batch`: the depth count behind `max-data-depth` agrees with serde_json's |
//! | [`reference`] | `channel`: names, globs and matching, written the plain way |
//! | [`engine`], [`runtime`], [`LIMITS`] | `callback_polling`, `websocket`: the whole path through the engine |
//! | [`check_replies`] | `callback_polling`, `websocket`: every message written out |

use std::collections::HashMap;
use std::sync::Arc;

use halley_protocol::Message;
use halley_server::{Config, Engine};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The bounds the engine targets run with: small, so the fuzzer reaches them.
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_batch_messages: usize,
    pub max_data_depth: usize,
}

pub const LIMITS: Limits = Limits {
    max_request_bytes: 2048,
    max_batch_messages: 8,
    max_data_depth: 6,
};

/// A node with [`LIMITS`] and otherwise the default configuration (anonymous
/// clients allowed, every transport on): what a client of a fresh server meets.
pub fn engine() -> Arc<Engine> {
    Engine::new(Config {
        max_request_bytes: LIMITS.max_request_bytes,
        max_batch_messages: LIMITS.max_batch_messages,
        max_data_depth: LIMITS.max_data_depth,
        ..Config::default()
    })
}

/// A single-threaded runtime on a paused clock: a held `/meta/connect` or a
/// timeout costs no real time (the clock jumps to the next timer when
/// every task waits), and a run is the same every time.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime")
}

/// `message` as a JSON object, every present field written back: raw fields
/// (`id`, `data`, `ext`) byte for byte, the others through serde.
pub fn encode_message(message: &Message) -> String {
    let mut fields: Vec<String> = Vec::new();
    let mut typed = |name: &str, value: Option<Value>| {
        if let Some(value) = value {
            fields.push(format!("{}:{value}", Value::from(name)));
        }
    };
    let text = |s: &Option<String>| s.as_ref().map(|s| Value::from(s.as_str()));
    typed("channel", text(&message.channel));
    typed("clientId", text(&message.client_id));
    typed("version", text(&message.version));
    typed("minimumVersion", text(&message.minimum_version));
    typed(
        "supportedConnectionTypes",
        message
            .supported_connection_types
            .as_ref()
            .map(|types| Value::from(types.clone())),
    );
    typed("connectionType", text(&message.connection_type));
    typed(
        "subscription",
        message
            .subscription
            .as_ref()
            .map(|s| serde_json::to_value(s).unwrap()),
    );
    typed(
        "advice",
        message
            .advice
            .as_ref()
            .map(|a| serde_json::to_value(a).unwrap()),
    );
    for (name, raw) in [
        ("id", &message.id),
        ("data", &message.data),
        ("ext", &message.ext),
    ] {
        if let Some(raw) = raw {
            fields.push(format!("\"{name}\":{}", raw.get()));
        }
    }
    format!("{{{}}}", fields.join(","))
}

/// Whether two messages say the same, raw fields compared byte for byte.
pub fn same_message(a: &Message, b: &Message) -> bool {
    let raw = |r: &Option<Box<RawValue>>| r.as_ref().map(|r| r.get().to_owned());
    a.channel == b.channel
        && a.client_id == b.client_id
        && a.version == b.version
        && a.minimum_version == b.minimum_version
        && a.supported_connection_types == b.supported_connection_types
        && a.connection_type == b.connection_type
        && a.subscription == b.subscription
        && a.advice == b.advice
        && raw(&a.id) == raw(&b.id)
        && raw(&a.data) == raw(&b.data)
        && raw(&a.ext) == raw(&b.ext)
}

/// How deep arrays and objects nest in a JSON text (0 for a scalar),
/// parsed recursively by serde_json: the definition `max-data-depth` is
/// counted against. Not through a `Value`, whose objects keep only the
/// last of duplicate keys: `{"a":[[1]],"a":1}` nests 3 deep as written, and
/// as a subscriber's parser descends it. An error where serde_json refuses
/// the text (past its 128 levels, or a number out of `f64`'s range).
pub fn parsed_depth(json: &str) -> Result<usize, serde_json::Error> {
    serde_json::from_str::<Depth>(json).map(|d| d.0)
}

/// A JSON value's nesting depth, counted while deserializing it.
struct Depth(usize);

impl<'de> serde::Deserialize<'de> for Depth {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DepthVisitor)
    }
}

struct DepthVisitor;

impl<'de> serde::de::Visitor<'de> for DepthVisitor {
    type Value = Depth;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Depth, E> {
        Ok(Depth(0))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Depth, E> {
        Ok(Depth(0))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Depth, E> {
        Ok(Depth(0))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Depth, E> {
        Ok(Depth(0))
    }
    fn visit_str<E>(self, _: &str) -> Result<Depth, E> {
        Ok(Depth(0))
    }
    fn visit_unit<E>(self) -> Result<Depth, E> {
        Ok(Depth(0))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<Depth, A::Error> {
        let mut deepest = 0;
        while let Some(Depth(d)) = items.next_element()? {
            deepest = deepest.max(d);
        }
        Ok(Depth(1 + deepest))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut fields: A) -> Result<Depth, A::Error> {
        let mut deepest = 0;
        while let Some((_, Depth(d))) = fields.next_entry::<serde::de::IgnoredAny, Depth>()? {
            deepest = deepest.max(d);
        }
        Ok(Depth(1 + deepest))
    }
}

/// Checks a body or frame the server wrote: a JSON array of message
/// objects, where every delivery's `data` respects `max-data-depth`.
/// Panics (a finding) otherwise.
pub fn check_replies(json: &[u8]) {
    // Fields kept raw: `data` passes through byte for byte, and may hold a
    // number no `Value` can (`1e999`), which is still JSON.
    let messages: Vec<HashMap<String, Box<RawValue>>> = serde_json::from_slice(json)
        .unwrap_or_else(|e| {
            panic!(
                "the server wrote something other than an array of objects ({e}): {}",
                String::from_utf8_lossy(json)
            )
        });
    for message in &messages {
        let channel = message
            .get("channel")
            .and_then(|c| serde_json::from_str::<String>(c.get()).ok());
        // A delivery: a broadcast channel with data, and no `successful`.
        let is_delivery = channel.is_some_and(|c| !c.starts_with("/meta/"))
            && !message.contains_key("successful");
        if let (true, Some(data)) = (is_delivery, message.get("data")) {
            // Past serde_json's 128 levels, or with a number out of range:
            // the bracket count (checked against `parsed_depth` by `batch`).
            let depth = parsed_depth(data.get())
                .unwrap_or_else(|_| halley_server::fuzzing::json_depth(data.get()));
            assert!(
                depth <= LIMITS.max_data_depth,
                "a delivery nests {depth} deep, over max-data-depth {}: {}",
                LIMITS.max_data_depth,
                data.get()
            );
        }
    }
}

/// Channel names and globs as the Bayeux specification words them, one
/// segment at a time: slower than `halley_protocol::channel`, and plainly right.
pub mod reference {
    /// A segment's characters: letters, digits and `- _ ! ~ ( ) $ @`.
    fn is_segment(segment: &str) -> bool {
        !segment.is_empty()
            && segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_!~()$@".contains(c))
    }

    /// The segments of `/a/b`, or `None` if it does not start with `/`.
    fn segments(name: &str) -> Option<Vec<&str>> {
        name.strip_prefix('/').map(|rest| rest.split('/').collect())
    }

    pub fn is_name(name: &str) -> bool {
        segments(name).is_some_and(|s| s.iter().all(|s| is_segment(s)))
    }

    pub fn is_pattern(pattern: &str) -> bool {
        let Some(segments) = segments(pattern) else {
            return false;
        };
        let (last, init) = segments.split_last().expect("split yields one at least");
        init.iter().all(|s| is_segment(s)) && (is_segment(last) || *last == "*" || *last == "**")
    }

    /// `/meta`, `/service` or broadcast, by the first segment.
    pub fn first_segment(name: &str) -> &str {
        name[1..].split('/').next().unwrap_or("")
    }

    /// Whether `pattern` (valid) matches `name` (valid): `*` is one more
    /// segment, `**` one or more, anything else itself.
    pub fn matches(pattern: &str, name: &str) -> bool {
        let p = segments(pattern).expect("a valid pattern");
        let n = segments(name).expect("a valid name");
        let (last, init) = p.split_last().expect("one segment at least");
        let prefix_matches = n.len() > init.len() && n[..init.len()] == *init;
        match *last {
            "**" => prefix_matches,
            "*" => prefix_matches && n.len() == p.len(),
            _ => p == n,
        }
    }
}

/// The clientId of the first successful handshake reply in `json`, if any:
/// the engine targets put it where an input says `$CLIENT`, so a fuzzed
/// batch can speak for a live session (clientIds are random otherwise).
pub fn handshake_client_id(json: &[u8]) -> Option<String> {
    let messages: Vec<Map<String, Value>> = serde_json::from_slice(json).ok()?;
    messages.iter().find_map(|m| {
        let handshake = m.get("channel")? == "/meta/handshake" && m.get("successful")? == true;
        handshake
            .then(|| m.get("clientId")?.as_str().map(str::to_owned))
            .flatten()
    })
}

/// WebSocket frames, written and read by hand (RFC 6455, section 5): the
/// fuzz target plays a client over an in-memory stream, byte for byte.
pub mod frames {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    pub const TEXT: u8 = 0x1;
    pub const CLOSE: u8 = 0x8;

    /// A frame as read: its opcode and its payload.
    pub type Frame = (u8, Vec<u8>);

    /// One final text frame as a client sends it: masked (with a zero mask,
    /// which leaves the payload as it is).
    pub fn client_text(payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x80 | TEXT];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= u16::MAX as usize => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(payload);
        frame
    }

    /// Sends `frame`; false once the server has hung up.
    pub async fn send<W: AsyncWrite + Unpin>(writer: &mut W, frame: &[u8]) -> bool {
        writer.write_all(frame).await.is_ok() && writer.flush().await.is_ok()
    }

    /// The next frame from the server, `(opcode, payload)`; `None` at the
    /// end of the stream. A server frame is never masked.
    pub async fn next<R: AsyncRead + Unpin>(reader: &mut R) -> Option<Frame> {
        let mut head = [0u8; 2];
        reader.read_exact(&mut head).await.ok()?;
        assert_eq!(head[1] & 0x80, 0, "the server masked a frame");
        let len = match head[1] & 0x7f {
            126 => u64::from(reader.read_u16().await.ok()?),
            127 => reader.read_u64().await.ok()?,
            n => u64::from(n),
        };
        let mut payload = vec![0; usize::try_from(len).expect("a frame that fits")];
        reader.read_exact(&mut payload).await.ok()?;
        Some((head[0] & 0x0f, payload))
    }
}
