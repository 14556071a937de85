//! The Prometheus metrics of a Halley process: every handle in one place.
//!
//! Built on `prometheus-client` (typed metrics and an explicit registry,
//! encoded in the Prometheus/OpenMetrics text format): counters and gauges
//! are one atomic each. The few labelled families are resolved once, at
//! start, into plain handles per label value (`transport`, `origin`,
//! `outcome`, `reason`), so code on a hot path never looks a label up.
//! Labels have fixed, small value sets: no channel or client in a label.
//!
//! The delivery latency histogram is this module's own [`AtomicHistogram`]:
//! the library's histogram takes a lock per observation, and a delivery
//! is the hot path (one observation per delivery written). Its start is
//! the publish's time, read once per fan-out ([`PublishTime`]), not once
//! per subscriber.
//!
//! One set per process ([`metrics`]): the counters are statics reached from
//! every floor (the outbox counts its own drops and depth) without
//! threading a handle through each session. A process embedding several
//! nodes sums them. Values read from the node itself (live sessions, the
//! broker's availability) are set by the admin listener at each scrape
//! ([`crate::admin`]).
//!
//! Where each figure is counted:
//!
//! | metric | counted in |
//! |---|---|
//! | `halley_sessions` | the admin listener, at scrape (the node's sessions) |
//! | `halley_connections_total{transport}`, `halley_websockets_open` | `transport::{long_polling, callback_polling, websocket}` |
//! | `halley_handshakes_total{outcome}` | `engine` (the handshake's reply) |
//! | `halley_publishes_total{origin}` | `publish`, `transport::publish_api`, `adapter`, `service::presence` |
//! | `halley_deliveries_total`, `halley_delivery_latency_seconds`, `halley_outbox_depth`, `halley_deliveries_dropped_total{reason="overflow"}` | [`crate::state::outbox`] |
//! | `halley_deliveries_dropped_total{reason="qos"}` | `node` (a QoS rule dropped an update) |
//! | `halley_deliveries_dropped_total{reason="session_end"}` | [`crate::state::outbox`], when a session ends with deliveries queued |
//! | `halley_metadata_decisions_total{action,outcome}`, `halley_metadata_latency_seconds{action}` | [`crate::metadata::measured`] |
//! | `halley_remote_adapter_links` | `adapter::remote::link` |
//! | `halley_broker_up`, `halley_broker_publish_errors_total` | the admin listener (at scrape); `node` (a refused publish) |
//! | `halley_draining` | [`crate::server`] |
//! | `halley_limit_hits_total{limit}` | [`crate::state::limits`], copied at scrape by the admin listener |
//! | `halley_takeovers_total{outcome}`, `halley_takeover_seconds` | `node::takeover` (a cluster node taking a session over) |

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The metrics of this process.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// A transport, as a label value.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Transport {
    LongPolling,
    CallbackPolling,
    Websocket,
}

/// Where a publish came from, as a label value.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Origin {
    /// A client's publish over Bayeux.
    Bayeux,
    /// `POST /api/publish`.
    HttpApi,
    /// A Data Adapter (in-process or remote).
    Adapter,
    /// A service of the node (presence).
    Service,
}

/// Why a delivery was dropped, as a label value.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum DropReason {
    /// The session's outbox was full (its overflow policy dropped one).
    Overflow,
    /// A `[[qos]]` frequency limit dropped an update.
    Qos,
    /// The session ended (disconnect, expiry, overflow) with it queued.
    SessionEnd,
}

/// How a handshake or a Metadata Adapter's question ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    /// Refused with a verdict (or, for handshakes, any refusal).
    Denied,
    /// No verdict: the adapter's backend could not be reached.
    Unavailable,
}

/// How a cluster takeover ended, as a label value.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Takeover {
    /// The old owner was alive and let go.
    Released,
    /// The old owner did not answer (dead): what it last wrote was used.
    Presumed,
    /// No such session in the cluster (or one that may not move).
    Unknown,
    /// Redis could not be asked.
    Failed,
}

/// A Metadata Adapter's question, as a label value.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Action {
    Handshake,
    Subscribe,
    Publish,
    /// Fresh credentials presented on a `/meta/connect`.
    Refresh,
}

/// Each variant's label value (kebab-case, as the settings name them).
macro_rules! label_values {
    ($ty:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
                use std::fmt::Write;
                encoder.write_str(match self {
                    $($ty::$variant => $name,)*
                })
            }
        }
    };
}

label_values!(Transport { LongPolling => "long-polling", CallbackPolling => "callback-polling", Websocket => "websocket" });
label_values!(Origin { Bayeux => "bayeux", HttpApi => "http-api", Adapter => "adapter", Service => "service" });
label_values!(DropReason { Overflow => "overflow", Qos => "qos", SessionEnd => "session_end" });
label_values!(Outcome { Accepted => "accepted", Denied => "denied", Unavailable => "unavailable" });
label_values!(Takeover { Released => "released", Presumed => "presumed-dead", Unknown => "unknown", Failed => "failed" });
label_values!(Action { Handshake => "handshake", Subscribe => "subscribe", Publish => "publish", Refresh => "refresh" });

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: Transport,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OriginLabel {
    origin: Origin,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: DropReason,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabel {
    action: Action,
    outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TakeoverLabel {
    outcome: Takeover,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: Action,
}

/// One handle per value of a label, resolved at start.
pub struct ByLabel<K, M> {
    handles: Vec<(K, M)>,
}

impl<K: PartialEq + Copy, M> ByLabel<K, M> {
    /// The handle of `key` (every value was resolved at start).
    #[inline]
    pub fn get(&self, key: K) -> &M {
        &self
            .handles
            .iter()
            .find(|(k, _)| *k == key)
            .expect("every label value is resolved at start")
            .1
    }
}

/// Every metric of the process. See the module documentation.
pub struct Metrics {
    registry: Registry,
    /// Live sessions (set at scrape).
    pub sessions: Gauge,
    /// HTTP requests on the Bayeux path and WebSocket upgrades, by transport.
    pub connections: ByLabel<Transport, Counter>,
    /// WebSockets open now.
    pub websockets_open: Gauge,
    pub handshakes: ByLabel<Outcome, Counter>,
    pub publishes: ByLabel<Origin, Counter>,
    /// Deliveries written to clients (taken from an outbox to be written).
    pub deliveries: Counter,
    pub dropped: ByLabel<DropReason, Counter>,
    /// Deliveries queued in all outboxes now.
    pub outbox_depth: Gauge,
    /// From a delivery's queuing (its publish accepted) to its write.
    pub delivery_latency: AtomicHistogram,
    pub metadata_decisions: ByLabel<(Action, Outcome), Counter>,
    pub metadata_latency: ByLabel<Action, Histogram>,
    /// Remote Data Adapter links connected now.
    pub remote_links: Gauge,
    /// 1 while the broker takes publishes (set at scrape).
    pub broker_up: Gauge,
    /// Publishes the broker refused (its engine unreachable).
    pub broker_publish_errors: Counter,
    /// 1 once a drain has begun.
    pub draining: Gauge,
    /// Hits of each safety limit (`docs/security.md`), copied from the
    /// node's counters at scrape ([`Metrics::set_limit_hits`]).
    limit_hits: Family<LimitLabel, Counter>,
    /// Sessions this node took over from another, by outcome.
    pub takeovers: ByLabel<Takeover, Counter>,
    /// From a request for a session held elsewhere to the session served here.
    pub takeover_latency: Histogram,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let sessions = Gauge::default();
        registry.register("halley_sessions", "Live Bayeux sessions", sessions.clone());

        let connections = Family::<TransportLabel, Counter>::default();
        registry.register(
            "halley_connections",
            "HTTP requests on the Bayeux path and WebSocket upgrades, by transport",
            connections.clone(),
        );
        let connections = ByLabel {
            handles: [
                Transport::LongPolling,
                Transport::CallbackPolling,
                Transport::Websocket,
            ]
            .into_iter()
            .map(|transport| {
                let label = TransportLabel { transport };
                (transport, connections.get_or_create(&label).clone())
            })
            .collect(),
        };
        let websockets_open = Gauge::default();
        registry.register(
            "halley_websockets_open",
            "WebSocket connections open now",
            websockets_open.clone(),
        );

        let handshakes = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "halley_handshakes",
            "Handshakes, by outcome (accepted, denied)",
            handshakes.clone(),
        );
        let handshakes = ByLabel {
            handles: [Outcome::Accepted, Outcome::Denied]
                .into_iter()
                .map(|outcome| {
                    let label = OutcomeLabel { outcome };
                    (outcome, handshakes.get_or_create(&label).clone())
                })
                .collect(),
        };

        let publishes = Family::<OriginLabel, Counter>::default();
        registry.register(
            "halley_publishes",
            "Publishes accepted, by origin (bayeux, http-api, adapter, service)",
            publishes.clone(),
        );
        let publishes = ByLabel {
            handles: [
                Origin::Bayeux,
                Origin::HttpApi,
                Origin::Adapter,
                Origin::Service,
            ]
            .into_iter()
            .map(|origin| {
                let label = OriginLabel { origin };
                (origin, publishes.get_or_create(&label).clone())
            })
            .collect(),
        };

        let deliveries = Counter::default();
        registry.register(
            "halley_deliveries",
            "Deliveries written to clients",
            deliveries.clone(),
        );
        let dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "halley_deliveries_dropped",
            "Deliveries dropped, by reason (overflow, qos, session_end)",
            dropped.clone(),
        );
        let dropped = ByLabel {
            handles: [
                DropReason::Overflow,
                DropReason::Qos,
                DropReason::SessionEnd,
            ]
            .into_iter()
            .map(|reason| {
                let label = ReasonLabel { reason };
                (reason, dropped.get_or_create(&label).clone())
            })
            .collect(),
        };
        let outbox_depth = Gauge::default();
        registry.register(
            "halley_outbox_depth",
            "Deliveries queued in all session outboxes now",
            outbox_depth.clone(),
        );
        let delivery_latency = AtomicHistogram::new(LATENCY_BUCKETS);
        registry.register(
            "halley_delivery_latency_seconds",
            "Seconds from a delivery's queuing (its publish accepted) to its write to the client",
            delivery_latency.clone(),
        );

        let decisions = Family::<DecisionLabel, Counter>::default();
        registry.register(
            "halley_metadata_decisions",
            "Metadata Adapter answers, by action and outcome",
            decisions.clone(),
        );
        let actions = [
            Action::Handshake,
            Action::Subscribe,
            Action::Publish,
            Action::Refresh,
        ];
        let outcomes = [Outcome::Accepted, Outcome::Denied, Outcome::Unavailable];
        let metadata_decisions = ByLabel {
            handles: actions
                .iter()
                .flat_map(|&action| outcomes.iter().map(move |&outcome| (action, outcome)))
                .map(|(action, outcome)| {
                    let label = DecisionLabel { action, outcome };
                    ((action, outcome), decisions.get_or_create(&label).clone())
                })
                .collect(),
        };
        let latency = Family::<ActionLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0005, 2.0, 14))) as fn() -> Histogram,
        );
        registry.register(
            "halley_metadata_latency_seconds",
            "Seconds a Metadata Adapter took to answer, by action",
            latency.clone(),
        );
        let metadata_latency = ByLabel {
            handles: actions
                .iter()
                .map(|&action| {
                    let label = ActionLabel { action };
                    (action, latency.get_or_create(&label).clone())
                })
                .collect(),
        };

        let remote_links = Gauge::default();
        registry.register(
            "halley_remote_adapter_links",
            "Remote Data Adapter links connected now",
            remote_links.clone(),
        );
        let broker_up = Gauge::default();
        registry.register(
            "halley_broker_up",
            "1 while the broker takes publishes (always 1 on a single node)",
            broker_up.clone(),
        );
        let broker_publish_errors = Counter::default();
        registry.register(
            "halley_broker_publish_errors",
            "Publishes refused because the broker could not reach its engine",
            broker_publish_errors.clone(),
        );
        let draining = Gauge::default();
        registry.register(
            "halley_draining",
            "1 once the node is draining (not ready, moving its clients away)",
            draining.clone(),
        );
        let takeovers = Family::<TakeoverLabel, Counter>::default();
        registry.register(
            "halley_takeovers",
            "Requests for a session this node did not hold, by outcome (released, presumed-dead, unknown, failed)",
            takeovers.clone(),
        );
        let takeovers = ByLabel {
            handles: [
                Takeover::Released,
                Takeover::Presumed,
                Takeover::Unknown,
                Takeover::Failed,
            ]
            .into_iter()
            .map(|outcome| {
                let label = TakeoverLabel { outcome };
                (outcome, takeovers.get_or_create(&label).clone())
            })
            .collect(),
        };
        let takeover_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "halley_takeover_seconds",
            "Seconds to take a session over (claim, release by a live owner, replay from the log)",
            takeover_latency.clone(),
        );
        let limit_hits = Family::<LimitLabel, Counter>::default();
        registry.register(
            "halley_limit_hits",
            "Times each safety limit was hit (a connection, handshake, subscription... refused), by limit",
            limit_hits.clone(),
        );
        Metrics {
            registry,
            limit_hits,
            takeovers,
            takeover_latency,
            sessions,
            connections,
            websockets_open,
            handshakes,
            publishes,
            deliveries,
            dropped,
            outbox_depth,
            delivery_latency,
            metadata_decisions,
            metadata_latency,
            remote_links,
            broker_up,
            broker_publish_errors,
            draining,
        }
    }

    /// Brings `halley_limit_hits_total` up to the node's counts (each only
    /// grows, so the counter is moved forward by the difference).
    pub fn set_limit_hits(&self, counts: &[(&'static str, u64)]) {
        for &(limit, count) in counts {
            let counter = self.limit_hits.get_or_create(&LimitLabel {
                limit: limit.to_owned(),
            });
            let seen = counter.get();
            if count > seen {
                counter.inc_by(count - seen);
            }
        }
    }

    /// Everything, in the Prometheus text format (OpenMetrics flavour).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing into a String does not fail");
        text
    }

    /// Deliveries written: counted, and their latency observed, once per
    /// batch taken from an outbox (`queued_at` holds their queuing times).
    #[inline]
    pub fn written(&self, queued_at: impl ExactSizeIterator<Item = std::time::Instant>) {
        let count = queued_at.len() as u64;
        if count == 0 {
            return;
        }
        let now = std::time::Instant::now();
        for at in queued_at {
            self.delivery_latency
                .observe(now.saturating_duration_since(at));
        }
        self.deliveries.inc_by(count);
    }
}

thread_local! {
    /// When the fan-out running on this thread accepted its publish.
    static PUBLISHED_AT: std::cell::Cell<Option<std::time::Instant>> =
        const { std::cell::Cell::new(None) };
}

/// Marks a fan-out: until it is dropped, the deliveries queued on this
/// thread share one reading of the clock (a publish reaching thousands of
/// subscribers reads it once, not once per subscriber).
pub struct PublishTime {
    previous: Option<std::time::Instant>,
}

impl PublishTime {
    pub fn start() -> PublishTime {
        let now = std::time::Instant::now();
        PublishTime {
            previous: PUBLISHED_AT.with(|at| at.replace(Some(now))),
        }
    }
}

impl Drop for PublishTime {
    fn drop(&mut self) {
        PUBLISHED_AT.with(|at| at.set(self.previous));
    }
}

/// When a delivery queued now was accepted: its fan-out's time, or now.
#[inline]
pub fn queued_at() -> std::time::Instant {
    PUBLISHED_AT
        .with(|at| at.get())
        .unwrap_or_else(std::time::Instant::now)
}

/// The latency buckets, in seconds: 50 µs to ~3.3 s, doubling.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_2, 0.000_4, 0.000_8, 0.001_6, 0.003_2, 0.006_4, 0.012_8, 0.025_6,
    0.051_2, 0.102_4, 0.204_8, 0.409_6, 0.819_2, 1.638_4, 3.276_8,
];

/// A histogram with fixed buckets, lock-free: one observation is a bucket
/// search over a dozen bounds and three atomic adds. Cloning shares it.
#[derive(Clone)]
pub struct AtomicHistogram {
    inner: std::sync::Arc<HistogramInner>,
}

struct HistogramInner {
    /// Upper bounds in nanoseconds, ascending (the `+Inf` bucket is implied).
    bounds_ns: Vec<u64>,
    bounds_s: &'static [f64],
    /// Per bucket (not cumulative), the last one being `+Inf`.
    counts: Vec<AtomicU64>,
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl AtomicHistogram {
    pub fn new(bounds_s: &'static [f64]) -> Self {
        AtomicHistogram {
            inner: std::sync::Arc::new(HistogramInner {
                bounds_ns: bounds_s.iter().map(|s| (s * 1e9) as u64).collect(),
                bounds_s,
                counts: (0..=bounds_s.len()).map(|_| AtomicU64::new(0)).collect(),
                sum_ns: AtomicU64::new(0),
                count: AtomicU64::new(0),
            }),
        }
    }

    #[inline]
    pub fn observe(&self, value: Duration) {
        let inner = &*self.inner;
        let ns = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        let bucket = inner.bounds_ns.partition_point(|&bound| bound < ns);
        inner.counts[bucket].fetch_add(1, Ordering::Relaxed);
        inner.sum_ns.fetch_add(ns, Ordering::Relaxed);
        inner.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Per bucket (not cumulative): its upper bound in seconds and its
    /// count, the last bound being `f64::MAX` (`+Inf`).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        let inner = &*self.inner;
        inner
            .counts
            .iter()
            .enumerate()
            .map(|(i, count)| {
                let bound = inner.bounds_s.get(i).copied().unwrap_or(f64::MAX);
                (bound, count.load(Ordering::Relaxed))
            })
            .collect()
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.inner.count.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for AtomicHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AtomicHistogram")
            .field("count", &self.count())
            .finish()
    }
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let inner = &*self.inner;
        // Read without a lock: a scrape racing observations may see a sum
        // and buckets a few observations apart, as Prometheus tolerates.
        // Per bucket: the encoder adds them up; `f64::MAX` is its `+Inf`.
        let buckets = self.buckets();
        let total = buckets.iter().map(|(_, count)| count).sum();
        let sum = inner.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        // The count is the buckets' total, so `_count` and `+Inf` agree.
        encoder.encode_histogram::<NoLabelSet>(sum, total, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_counts_each_observation_in_its_bucket() {
        let histogram = AtomicHistogram::new(&[0.001, 0.01]);
        histogram.observe(Duration::from_micros(500));
        histogram.observe(Duration::from_millis(1));
        histogram.observe(Duration::from_millis(5));
        histogram.observe(Duration::from_secs(1));
        let mut registry = Registry::default();
        registry.register("latency_seconds", "test", histogram.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("latency_seconds_bucket{le=\"0.001\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("latency_seconds_bucket{le=\"0.01\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("latency_seconds_bucket{le=\"+Inf\"} 4"),
            "{text}"
        );
        assert!(text.contains("latency_seconds_count 4"), "{text}");
        assert_eq!(histogram.count(), 4);
    }

    #[test]
    fn every_family_shows_its_label_values_from_the_start() {
        let text = metrics().encode();
        for line in [
            "halley_connections_total{transport=\"websocket\"}",
            "halley_publishes_total{origin=\"http-api\"}",
            "halley_deliveries_dropped_total{reason=\"qos\"}",
            "halley_metadata_decisions_total{action=\"subscribe\",outcome=\"unavailable\"}",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
