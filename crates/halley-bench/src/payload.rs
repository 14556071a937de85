//! What each benchmark message carries: its scheduled send time, its room
//! and its sequence number in that room, and `--payload` bytes of chat text.
//!
//! `{"t":1764150000123456,"r":7,"s":42,"text":"xxxx..."}`
//!
//! `t` is the *scheduled* send time in microseconds since the Unix epoch, so
//! a publisher that falls behind is charged for it (no coordinated omission).
//! Every process of a run is on the same host and reads the same clock.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Scheduled send time, µs since the epoch.
    pub t: u64,
    /// Room number.
    pub r: u32,
    /// Sequence number of this message in its room, from 1.
    pub s: u64,
    pub text: String,
}

impl ChatMessage {
    pub fn new(scheduled_us: u64, room: u32, seq: u64, payload: usize) -> Self {
        ChatMessage {
            t: scheduled_us,
            r: room,
            s: seq,
            text: "x".repeat(payload),
        }
    }
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_has_the_payload_size() {
        let m = ChatMessage::new(1_764_150_000_123_456, 7, 42, 50);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(m.text.len(), 50);
        assert_eq!(serde_json::from_str::<ChatMessage>(&json).unwrap(), m);
    }
}
