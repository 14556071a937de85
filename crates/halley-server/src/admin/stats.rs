//! The admin page's figures, as JSON (`/api/stats`): the node's totals read
//! live, and the rates and latency percentiles of the last [`HISTORY`]
//! seconds, sampled once a second by [`Sampler::run`] (so the charts have a
//! past the moment the page opens, whoever polls and however often).
//!
//! Everything here is read from what exists anyway: the Prometheus counters
//! ([`crate::metrics`]), the node's sessions and subscriptions, the
//! bounded per-channel table ([`crate::traffic`]) and the ring of recent
//! warnings ([`super::recent`]). Nothing is added to the publish path but
//! that table.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde_json::{json, Value};

use super::health::Health;
use super::recent::recent;
use crate::metrics::{metrics, DropReason, Origin, Outcome, Transport};
use crate::node::Node;
use crate::traffic::{traffic, ChannelTraffic};

/// Seconds of history the charts show.
pub const HISTORY: usize = 300;
/// Rows in each "top channels" table.
pub const TOP: usize = 10;

/// One second of the charts.
#[derive(Debug, Clone, Copy)]
struct Point {
    at_ms: u64,
    sessions: usize,
    /// Publishes accepted per second (every origin).
    messages_in: f64,
    /// Deliveries written per second.
    messages_out: f64,
    /// Delivery latency percentiles over the second, in seconds (none: no
    /// delivery in it).
    latency: Option<[f64; 3]>,
}

/// The counters one sample reads, to difference with the next.
struct Reading {
    at: Instant,
    published: u64,
    delivered: u64,
    latency_buckets: Vec<(f64, u64)>,
    channels: HashMap<Box<str>, (u64, u64)>,
}

/// See the module documentation.
pub struct Sampler {
    started: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    last: Option<Reading>,
    history: VecDeque<Point>,
    /// Per tracked channel: messages and deliveries per second, last sample.
    channel_rates: HashMap<Box<str>, (f64, f64)>,
    /// Publishes per second on channels the traffic table had no room for.
    untracked_per_second: f64,
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler {
            started: Instant::now(),
            state: Mutex::default(),
        }
    }
}

impl Sampler {
    /// Samples once a second, until dropped.
    pub async fn run(&self, node: &Node) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sample(node);
        }
    }

    /// Reads the counters and records the rates since the last sample.
    pub fn sample(&self, node: &Node) {
        let metrics = metrics();
        let (tracked, turned_away) = traffic().sample();
        let reading = Reading {
            at: Instant::now(),
            published: published(),
            delivered: metrics.deliveries.get(),
            latency_buckets: metrics.delivery_latency.buckets(),
            channels: tracked
                .into_iter()
                .map(|c| (c.channel, (c.messages, c.deliveries)))
                .collect(),
        };
        let mut state = self.state.lock();
        if let Some(last) = &state.last {
            let seconds = reading.at.duration_since(last.at).as_secs_f64().max(1e-3);
            let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / seconds;
            let latency_delta: Vec<(f64, u64)> = reading
                .latency_buckets
                .iter()
                .zip(&last.latency_buckets)
                .map(|(&(bound, now), &(_, then))| (bound, now.saturating_sub(then)))
                .collect();
            let point = Point {
                at_ms: unix_ms(),
                sessions: node.sessions().len(),
                messages_in: rate(reading.published, last.published),
                messages_out: rate(reading.delivered, last.delivered),
                latency: percentiles(&latency_delta),
            };
            state.channel_rates = reading
                .channels
                .iter()
                .map(|(channel, &(messages, deliveries))| {
                    // A channel new since the last sample started from 0.
                    let (m0, d0) = last.channels.get(channel).copied().unwrap_or((0, 0));
                    (channel.clone(), (rate(messages, m0), rate(deliveries, d0)))
                })
                .collect();
            state.untracked_per_second = turned_away as f64 / seconds;
            if state.history.len() == HISTORY {
                state.history.pop_front();
            }
            state.history.push_back(point);
        }
        state.last = Some(reading);
    }

    /// The whole of `/api/stats`.
    pub fn stats(&self, node: &Node, health: &Health) -> Value {
        let metrics = metrics();
        let config = node.config();
        let state = self.state.lock();
        let history: Vec<Value> = state
            .history
            .iter()
            .map(|p| {
                json!({
                    "at_ms": p.at_ms,
                    "sessions": p.sessions,
                    "messages_in": p.messages_in,
                    "messages_out": p.messages_out,
                    "latency": p.latency.map(|[p50, p90, p99]| json!({ "p50": p50, "p90": p90, "p99": p99 })),
                })
            })
            .collect();
        let last = state.history.back();

        let by_subscribers: Vec<Value> = node
            .subscriptions()
            .top_by_subscribers(TOP)
            .into_iter()
            .map(|(channel, subscribers)| json!({ "channel": channel, "subscribers": subscribers }))
            .collect();
        let mut by_traffic: Vec<(ChannelTraffic, (f64, f64))> = traffic()
            .read()
            .into_iter()
            .map(|c| {
                let rates = state.channel_rates.get(&c.channel).copied();
                (c, rates.unwrap_or((0.0, 0.0)))
            })
            .collect();
        // Busiest now first; the totals break ties (and order a quiet node).
        by_traffic.sort_by(|(a, ra), (b, rb)| {
            (rb.0 + rb.1)
                .total_cmp(&(ra.0 + ra.1))
                .then((b.messages + b.deliveries).cmp(&(a.messages + a.deliveries)))
                .then(a.channel.cmp(&b.channel))
        });
        let by_traffic: Vec<Value> = by_traffic
            .into_iter()
            .take(TOP)
            .map(|(c, (messages_rate, deliveries_rate))| {
                json!({
                    "channel": c.channel,
                    "messages": c.messages,
                    "deliveries": c.deliveries,
                    "messages_per_second": messages_rate,
                    "deliveries_per_second": deliveries_rate,
                })
            })
            .collect();

        let metadata = if config.jwt.is_some() {
            "jwt"
        } else if config.webhook.is_some() {
            "webhook"
        } else if node.metadata_adapter().is_some() {
            "embedded"
        } else {
            "none"
        };
        let cluster = node.broker().cluster_node().map(|(id, url)| {
            json!({
                "node_id": id,
                "broker": node.broker().name(),
                "broker_up": node.broker().available(),
                "redis": url,
            })
        });
        let transport = |t: Transport| metrics.connections.get(t).get();
        let dropped = |r: DropReason| metrics.dropped.get(r).get();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "ready": health.not_ready(node).is_none(),
            "not_ready_because": health.not_ready(node),
            "sessions": node.sessions().len(),
            "websockets_open": metrics.websockets_open.get(),
            "connections": {
                "long-polling": transport(Transport::LongPolling),
                "callback-polling": transport(Transport::CallbackPolling),
                "websocket": transport(Transport::Websocket),
            },
            "handshakes": {
                "accepted": metrics.handshakes.get(Outcome::Accepted).get(),
                "denied": metrics.handshakes.get(Outcome::Denied).get(),
            },
            "publishes": published(),
            "deliveries": metrics.deliveries.get(),
            "dropped": {
                "overflow": dropped(DropReason::Overflow),
                "qos": dropped(DropReason::Qos),
                "session_end": dropped(DropReason::SessionEnd),
            },
            "outbox_depth": metrics.outbox_depth.get(),
            "rates": {
                "messages_in": last.map_or(0.0, |p| p.messages_in),
                "messages_out": last.map_or(0.0, |p| p.messages_out),
            },
            "latency": {
                "count": metrics.delivery_latency.count(),
                "since_start": percentiles(&metrics.delivery_latency.buckets())
                    .map(|[p50, p90, p99]| json!({ "p50": p50, "p90": p90, "p99": p99 })),
            },
            "history": history,
            "channels": {
                "by_subscribers": by_subscribers,
                "by_traffic": by_traffic,
                "untracked_per_second": state.untracked_per_second,
            },
            "adapters": {
                "metadata": metadata,
                "data_adapters": node.data_adapters().patterns(),
                "remote": {
                    "configured": config.remote_adapter.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
                    "connected": metrics.remote_links.get(),
                },
            },
            "cluster": cluster,
            "recent_errors": recent(),
        })
    }
}

/// Publishes accepted, every origin.
fn published() -> u64 {
    let publishes = &metrics().publishes;
    [
        Origin::Bayeux,
        Origin::HttpApi,
        Origin::Adapter,
        Origin::Service,
    ]
    .into_iter()
    .map(|origin| publishes.get(origin).get())
    .sum()
}

/// p50, p90 and p99 of a histogram given per bucket (upper bound, count;
/// not cumulative), interpolated linearly inside the bucket as Prometheus'
/// `histogram_quantile` does; the `+Inf` bucket answers its lower bound.
fn percentiles(buckets: &[(f64, u64)]) -> Option<[f64; 3]> {
    let total: u64 = buckets.iter().map(|(_, count)| count).sum();
    if total == 0 {
        return None;
    }
    let quantile = |q: f64| {
        let rank = q * total as f64;
        let mut below = 0u64;
        let mut lower = 0.0;
        for &(upper, count) in buckets {
            if count > 0 && (below + count) as f64 >= rank {
                if upper == f64::MAX {
                    return lower;
                }
                let within = (rank - below as f64) / count as f64;
                return lower + (upper - lower) * within;
            }
            below += count;
            if upper != f64::MAX {
                lower = upper;
            }
        }
        lower
    };
    Some([quantile(0.5), quantile(0.9), quantile(0.99)])
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_inside_their_bucket() {
        // 100 observations: 50 in (0, 1], 40 in (1, 2], 10 in (2, 4].
        let buckets = [(1.0, 50), (2.0, 40), (4.0, 10), (f64::MAX, 0)];
        let [p50, p90, p99] = percentiles(&buckets).unwrap();
        assert_eq!(p50, 1.0);
        assert_eq!(p90, 2.0);
        assert!((p99 - 3.8).abs() < 1e-9, "{p99}");
        assert_eq!(percentiles(&[(1.0, 0), (f64::MAX, 0)]), None);
        // Beyond the last bound: the last bound.
        assert_eq!(percentiles(&[(1.0, 0), (f64::MAX, 3)]), Some([1.0; 3]));
    }
}
