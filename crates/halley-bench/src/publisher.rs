//! The open-loop publisher: bursts on a fixed schedule, whatever the server does.
//!
//! Burst `k` is due at `start + k × interval` and goes to `burst` distinct
//! random rooms. Its messages carry that *scheduled* time, not the time they
//! actually left, so when the publisher (or the machine) falls behind, the
//! delay counts against latency instead of silently thinning the load (no
//! coordinated omission, as wrk2).
//!
//! Room `r` is always published by session `r % publishers`, and each
//! publishing session sends its batches one after the other from a queue.
//! So every room's messages leave in sequence order through one session,
//! and a delivery out of order is the server's doing, not the publisher's.
//! The scheduler never waits for a send: a session that falls behind just
//! has a longer queue, which shows up as latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use halley_client::{Client, Outgoing};
use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::SeedableRng;
use serde_json::value::to_raw_value;
use tokio::sync::mpsc;

use crate::payload::ChatMessage;
use crate::scenario::Scenario;

/// What the publisher did, for the report.
#[derive(Debug, Default)]
pub struct Published {
    /// Messages scheduled inside the window and acknowledged by the server.
    pub published: AtomicU64,
    /// Deliveries those messages owe (sum of their rooms' members).
    pub expected: AtomicU64,
    /// Messages (in the window) whose publish failed or was refused.
    pub errors: AtomicU64,
    /// Bursts scheduled in total (warm-up included).
    pub bursts: AtomicU64,
}

/// One session's share of a burst.
struct Batch {
    messages: Vec<Outgoing>,
    /// Deliveries owed per message (members of its room).
    owed: Vec<u64>,
    counted: bool,
}

/// Publishes from `start_us` until `end_us` (µs since the epoch); messages
/// scheduled in `[window_from_us, end_us)` are the ones counted. Returns
/// once every queued batch has been answered.
pub async fn run(
    scenario: &Scenario,
    publishers: &[Arc<Client>],
    start_us: u64,
    window_from_us: u64,
    end_us: u64,
    published: Arc<Published>,
) {
    let senders: Vec<_> = publishers
        .iter()
        .map(|client| {
            let (queue, batches) = mpsc::unbounded_channel::<Batch>();
            let task = tokio::spawn(send_in_order(client.clone(), batches, published.clone()));
            (queue, task)
        })
        .collect();

    let interval_us = scenario.interval.as_micros() as u64;
    let rooms = scenario.rooms();
    let burst = scenario.effective_burst();
    let mut rng = StdRng::seed_from_u64(0x4841_4c4c_4559); // "HALLEY": runs are repeatable
    let mut sequence = vec![0u64; rooms];
    let clock = tokio::time::Instant::now();
    let clock_us = crate::payload::now_us();
    for k in 0u64.. {
        let due_us = start_us + k * interval_us;
        if due_us >= end_us {
            break;
        }
        tokio::time::sleep_until(clock + Duration::from_micros(due_us.saturating_sub(clock_us)))
            .await;
        published.bursts.fetch_add(1, Ordering::Relaxed);
        let counted = due_us >= window_from_us;
        let mut batches: Vec<Option<Batch>> = (0..senders.len()).map(|_| None).collect();
        for room in sample(&mut rng, rooms, burst).into_iter() {
            sequence[room] += 1;
            let message = ChatMessage::new(due_us, room as u32, sequence[room], scenario.payload);
            let mut publish = Outgoing::new(Scenario::channel(room));
            publish.data = Some(to_raw_value(&message).expect("chat messages serialize"));
            let batch = batches[room % senders.len()].get_or_insert_with(|| Batch {
                messages: Vec::new(),
                owed: Vec::new(),
                counted,
            });
            batch.messages.push(publish);
            batch.owed.push(scenario.members(room) as u64);
        }
        for (index, batch) in batches.into_iter().enumerate() {
            if let Some(batch) = batch {
                let _ = senders[index].0.send(batch);
            }
        }
    }
    for (queue, task) in senders {
        drop(queue);
        let _ = task.await;
    }
}

/// Sends one session's batches in queue order, each after the previous reply.
async fn send_in_order(
    client: Arc<Client>,
    mut batches: mpsc::UnboundedReceiver<Batch>,
    published: Arc<Published>,
) {
    while let Some(batch) = batches.recv().await {
        let Batch {
            messages,
            owed,
            counted,
        } = batch;
        let sent = messages.len() as u64;
        match client.send_batch(messages).await {
            Ok(replies) if counted => {
                // Replies come in request order; with piggybacked deliveries
                // filtered out by the client, one reply per publish.
                for (reply, owed) in replies.iter().zip(&owed) {
                    if reply.successful == Some(true) {
                        published.published.fetch_add(1, Ordering::Relaxed);
                        published.expected.fetch_add(*owed, Ordering::Relaxed);
                    } else {
                        published.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let missing = sent.saturating_sub(replies.len() as u64);
                published.errors.fetch_add(missing, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!("a publish batch failed: {error}");
                if counted {
                    published.errors.fetch_add(sent, Ordering::Relaxed);
                }
            }
        }
    }
}
