//! The seed's workload as numbers: users in rooms, bursts to random rooms.
//!
//! Users are numbered `0..users` and user `u` sits in room `u / room_size`,
//! so every room has `room_size` members except possibly the last. Every
//! `interval`, one burst publishes one message to each of `burst` distinct
//! rooms picked at random. Every member of a room receives each of its
//! messages, so:
//!
//! `delivered/s = bursts/s × burst × average room size`.
//!
//! Against several nodes of a cluster, user `u` connects to `urls[u % n]`
//! and publishing session `p` to `urls[p % n]`: every room then has members
//! on every node, so each message crosses the cluster (the case a cluster
//! exists for), and each node holds an equal share of the users.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The transports `halley bench` can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportChoice {
    LongPolling,
    Websocket,
    /// Every other user (and publisher) on each: even indices websocket,
    /// odd ones long-polling, so every room has both.
    Mixed,
}

impl TransportChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportChoice::LongPolling => "long-polling",
            TransportChoice::Websocket => "websocket",
            TransportChoice::Mixed => "mixed",
        }
    }

    /// The transport user (or publisher) `index` uses: long-polling or websocket.
    pub fn for_index(self, index: usize) -> TransportChoice {
        match self {
            TransportChoice::Mixed if index.is_multiple_of(2) => TransportChoice::Websocket,
            TransportChoice::Mixed => TransportChoice::LongPolling,
            one => one,
        }
    }
}

impl std::str::FromStr for TransportChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "long-polling" => Ok(TransportChoice::LongPolling),
            "websocket" => Ok(TransportChoice::Websocket),
            "mixed" => Ok(TransportChoice::Mixed),
            other => Err(format!(
                "unknown transport {other:?}: use long-polling, websocket or mixed"
            )),
        }
    }
}

/// Everything that defines one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scenario {
    /// The Bayeux URLs of the server under test (`http://host:port/cometd`):
    /// one, or one per node of a cluster (see [`Scenario::url_for`]).
    pub urls: Vec<String>,
    pub transport: TransportChoice,
    pub users: usize,
    pub room_size: usize,
    /// Rooms that get a message in each burst.
    pub burst: usize,
    /// Time between bursts.
    pub interval: Duration,
    /// Bytes of chat text in each message.
    pub payload: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Sessions that publish (round robin), apart from the users.
    pub publishers: usize,
    /// Every session (users and publishers) uses the ack extension.
    #[serde(default)]
    pub ack: bool,
    /// A PEM file of CA certificates an `https://` server's certificate may
    /// chain to, besides the system's roots (a test server's self-signed
    /// certificate).
    #[serde(default)]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Connections cut while measuring (a soak), if any.
    #[serde(default)]
    pub cuts: Option<crate::cuts::CutSchedule>,
    /// How often the time series is sampled while measuring, if at all.
    #[serde(default)]
    pub sample_every: Option<Duration>,
}

impl Scenario {
    pub fn rooms(&self) -> usize {
        self.users.div_ceil(self.room_size.max(1))
    }

    pub fn room_of(&self, user: usize) -> usize {
        user / self.room_size.max(1)
    }

    /// Members of `room` (the last room may be smaller).
    pub fn members(&self, room: usize) -> usize {
        let start = room * self.room_size;
        self.users.saturating_sub(start).min(self.room_size)
    }

    /// Rooms per burst, never more than there are rooms.
    pub fn effective_burst(&self) -> usize {
        self.burst.min(self.rooms())
    }

    /// Bursts per second.
    pub fn bursts_per_sec(&self) -> f64 {
        1.0 / self.interval.as_secs_f64()
    }

    /// The delivered messages/s the schedule asks for, with average rooms.
    pub fn offered_deliveries_per_sec(&self) -> f64 {
        let average_room = self.users as f64 / self.rooms() as f64;
        self.bursts_per_sec() * self.effective_burst() as f64 * average_room
    }

    /// The URL that user (or publishing session) `index` connects to: the
    /// URLs in turn, so `n` nodes get equal shares.
    pub fn url_for(&self, index: usize) -> &str {
        &self.urls[index % self.urls.len()]
    }

    /// The URLs as one string, as given on the command line.
    pub fn urls_joined(&self) -> String {
        self.urls.join(",")
    }

    /// The channel of a room.
    pub fn channel(room: usize) -> String {
        format!("/chat/{room}")
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.urls.is_empty() {
            return Err("give at least one server URL".into());
        }
        if self.users == 0 || self.room_size == 0 || self.burst == 0 {
            return Err("users, room-size and burst must be at least 1".into());
        }
        if self.interval.is_zero() {
            return Err("interval must be at least 1 ms".into());
        }
        if self.publishers == 0 {
            return Err("publishers must be at least 1".into());
        }
        if let Some(cuts) = &self.cuts {
            cuts.validate()?;
        }
        if self.sample_every.is_some_and(|every| every.is_zero()) {
            return Err("sample-every must be at least 1 ms".into());
        }
        Ok(())
    }
}

/// A contiguous slice of users, one per worker process.
pub fn split_users(users: usize, workers: usize) -> Vec<std::ops::Range<usize>> {
    let workers = workers.max(1).min(users.max(1));
    let base = users / workers;
    let extra = users % workers;
    let mut start = 0;
    (0..workers)
        .map(|w| {
            let len = base + usize::from(w < extra);
            let range = start..start + len;
            start += len;
            range
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(users: usize, room_size: usize, burst: usize, interval_ms: u64) -> Scenario {
        Scenario {
            urls: vec!["http://127.0.0.1:1/cometd".into()],
            transport: TransportChoice::LongPolling,
            users,
            room_size,
            burst,
            interval: Duration::from_millis(interval_ms),
            payload: 50,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            publishers: 1,
            ack: false,
            ca_cert: None,
            cuts: None,
            sample_every: None,
        }
    }

    #[test]
    fn mixed_puts_every_other_user_on_websocket() {
        let mixed = TransportChoice::Mixed;
        assert_eq!(mixed.for_index(0), TransportChoice::Websocket);
        assert_eq!(mixed.for_index(1), TransportChoice::LongPolling);
        assert_eq!(mixed.for_index(200), TransportChoice::Websocket);
        let lp = TransportChoice::LongPolling;
        assert_eq!(lp.for_index(0), TransportChoice::LongPolling);
        assert_eq!("mixed".parse::<TransportChoice>(), Ok(mixed));
    }

    #[test]
    fn rooms_and_members() {
        let s = scenario(20_000, 200, 10, 100);
        assert_eq!(s.rooms(), 100);
        assert_eq!(s.room_of(0), 0);
        assert_eq!(s.room_of(199), 0);
        assert_eq!(s.room_of(200), 1);
        assert_eq!(s.members(99), 200);
        let odd = scenario(450, 200, 10, 100);
        assert_eq!(odd.rooms(), 3);
        assert_eq!(odd.members(2), 50);
        assert_eq!((0..3).map(|r| odd.members(r)).sum::<usize>(), 450);
        assert_eq!(odd.effective_burst(), 3);
    }

    #[test]
    fn offered_rate_is_bursts_times_rooms_times_members() {
        // The seed: 20,000 users, rooms of 200, bursts to 10 rooms every 20 ms
        // = 50 bursts/s x 10 rooms x 200 members = 100,000 deliveries/s.
        let s = scenario(20_000, 200, 10, 20);
        assert!((s.offered_deliveries_per_sec() - 100_000.0).abs() < 1e-6);
    }

    #[test]
    fn users_and_publishers_take_the_urls_in_turn() {
        let mut s = scenario(1000, 200, 10, 100);
        assert_eq!(s.url_for(0), "http://127.0.0.1:1/cometd");
        assert_eq!(s.url_for(7), "http://127.0.0.1:1/cometd");
        s.urls = vec![
            "http://a/cometd".into(),
            "http://b/cometd".into(),
            "http://c/cometd".into(),
        ];
        let first_six: Vec<&str> = (0..6).map(|u| s.url_for(u)).collect();
        assert_eq!(
            first_six,
            [
                "http://a/cometd",
                "http://b/cometd",
                "http://c/cometd",
                "http://a/cometd",
                "http://b/cometd",
                "http://c/cometd"
            ]
        );
        // Equal shares: 1000 users over 3 nodes = 334, 333, 333.
        let on_a = (0..1000)
            .filter(|&u| s.url_for(u) == "http://a/cometd")
            .count();
        let on_c = (0..1000)
            .filter(|&u| s.url_for(u) == "http://c/cometd")
            .count();
        assert_eq!((on_a, on_c), (334, 333));
        // A room of 200 has members on every node, so its messages cross the cluster.
        let nodes_of_room_0: std::collections::BTreeSet<&str> =
            (0..200).map(|u| s.url_for(u)).collect();
        assert_eq!(nodes_of_room_0.len(), 3);
        assert_eq!(
            s.urls_joined(),
            "http://a/cometd,http://b/cometd,http://c/cometd"
        );
    }

    #[test]
    fn a_scenario_needs_a_url() {
        let mut s = scenario(10, 200, 10, 100);
        assert!(s.validate().is_ok());
        s.urls.clear();
        assert!(s.validate().unwrap_err().contains("URL"));
    }

    #[test]
    fn users_split_into_contiguous_slices() {
        let slices = split_users(10, 3);
        assert_eq!(slices, vec![0..4, 4..7, 7..10]);
        assert_eq!(split_users(2, 5), vec![0..1, 1..2]);
        let total: usize = split_users(20_000, 2).iter().map(|r| r.len()).sum();
        assert_eq!(total, 20_000);
    }
}
