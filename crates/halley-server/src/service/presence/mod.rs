//! `/service/presence`: who is in which room, kept by the server.
//!
//! The chat demo's member list, and any application's "who is here". A
//! client asks this service to *join* a room under a display name; the
//! membership then lives exactly as long as the client's Bayeux session. A
//! member who closes the tab, loses the network or crashes leaves on their
//! own: the session's `/meta/disconnect`, or its expiry `interval +
//! maxInterval` after the last sign of life, removes them (this service is a
//! [`SessionListener`]). No client has to be trusted to say goodbye.
//!
//! Requests (the `data` of a `/service/presence` message) and reply data:
//!
//! | request | reply |
//! |---|---|
//! | `{"action":"join","room":"lobby","name":"ada"}` | `{"room":"lobby","you":"<member id>","members":[{"id":"..","name":"ada"}, ...],"count":1}` |
//! | `{"action":"leave","room":"lobby"}` | `{"room":"lobby","left":true}` (`false`: was not a member) |
//! | `{"action":"list","room":"lobby","offset":0}` | `{"room":"lobby","members":[...],"count":1}` |
//!
//! `members` is one page: at most [`PAGE`] members, by name, from `offset`
//! (0 when absent; a join always gives the first page); `count` is the
//! room's size, and `"more": true` says a `list` with a higher `offset`
//! has the rest. A reply never carries a whole large room, so a batch of
//! joins cannot make the server write the room over and over.
//!
//! Every change is broadcast on `/presence/<room>`:
//!
//! ```json
//! {"room":"lobby","event":"join","member":{"id":"..","name":"ada"},"count":3}
//! {"room":"lobby","event":"leave","member":{"id":"..","name":"ada"},"reason":"expired","count":2}
//! ```
//!
//! `reason` is `left` (asked to leave), `disconnected` (`/meta/disconnect`)
//! or `expired` (the session timed out). A client subscribes to
//! `/presence/<room>` *before* joining, then applies events to the join
//! reply's list by member id (an event may repeat what the list shows).
//!
//! Rules and limits:
//! - a room is one channel segment (letters, digits, `- _ ! ~ ( ) $ @`) of at
//!   most 64 bytes; a name is 1 to 40 characters after trimming, without
//!   control characters; a session is in at most 16 rooms; a room holds at
//!   most `max-room-members` members (a join beyond it: `400::room_full`);
//! - a call counts against the session's `max-publish-rate`, as a publish
//!   does (see [`crate::service`]);
//! - member ids are random and public; the clientId never leaves the server
//!   (knowing one is half of what it takes to read a session's messages);
//! - several sessions may use one name (two tabs of one person); joining
//!   again from the same session keeps the member id, and a new name is
//!   broadcast as a `join`;
//! - errors are replies: `400::room_invalid`, `400::name_invalid`,
//!   `400::action_unknown`, `400::request_invalid`, `400::too_many_rooms`,
//!   `400::room_full`.
//!
//! Where the rooms live: in this process on a single node
//! ([`rooms::LocalRooms`]); on a cluster, in the broker's shared store
//! ([`crate::broker::roster`]), so a room lists the members of every node
//! and a member stays while its session moves between nodes. A member whose
//! node died leaves (`reason: "expired"`) once the cluster no longer has
//! its session's record, found by a sweep every few seconds. Until Halley
//! has a publish policy, any client may also publish on `/presence/**`;
//! consumers should treat the service's replies as the truth and events as
//! hints to refresh.

mod rooms;

use std::sync::{Arc, Weak};

use halley_protocol::ChannelName;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::broker::roster::{Bounds, Left, Member, Refused, Roster};
use crate::node::services::{ServiceError, ServiceRequest};
use crate::node::Node;
use crate::state::limits::Limit;
use crate::state::listeners::{SessionEnd, SessionListener};
use crate::state::session::Session;
use crate::state::sessions::new_random_id;

pub const CHANNEL: &str = "/service/presence";
/// Membership changes of room `r` are broadcast on `/presence/r`.
pub const EVENTS_PREFIX: &str = "/presence/";

const MAX_ROOM_BYTES: usize = 64;
const MAX_NAME_CHARS: usize = 40;
const MAX_ROOMS_PER_SESSION: usize = 16;
/// Most members in one reply.
pub const PAGE: usize = 100;

/// Registers the service on `node` and subscribes it to session ends; on a
/// cluster, starts the sweep of members whose session vanished with its
/// node.
pub fn register(node: &Arc<Node>) {
    let presence = Arc::new(Presence {
        node: Arc::downgrade(node),
        local: rooms::LocalRooms::default(),
        bounds: Bounds {
            max_members: node.config().max_room_members,
            max_rooms: MAX_ROOMS_PER_SESSION,
        },
    });
    node.session_listeners().add(presence.clone());
    if node.broker().roster().is_some() {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep(Arc::downgrade(node)));
        }
    }
    node.services()
        .register(CHANNEL, move |request: ServiceRequest| {
            let presence = presence.clone();
            async move { presence.handle(&request).await }
        });
}

#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
enum Request {
    Join {
        room: String,
        name: String,
    },
    Leave {
        room: String,
    },
    List {
        room: String,
        #[serde(default)]
        offset: usize,
    },
}

impl Request {
    fn room(&self) -> &str {
        match self {
            Request::Join { room, .. } | Request::Leave { room } | Request::List { room, .. } => {
                room
            }
        }
    }
}

pub struct Presence {
    /// Weak: the node owns this service (through its registry).
    node: Weak<Node>,
    /// The rooms when the broker keeps none (a single node).
    local: rooms::LocalRooms,
    bounds: Bounds,
}

/// The rooms' store: the cluster's, or this node's.
fn roster<'a>(node: &'a Node, local: &'a rooms::LocalRooms) -> &'a dyn Roster {
    node.broker().roster().unwrap_or(local)
}

impl Presence {
    async fn handle(&self, request: &ServiceRequest) -> Result<Value, ServiceError> {
        let bad = |why: &str| ServiceError::BadRequest(why.to_owned());
        let parsed: Request = serde_json::from_str(request.data.get()).map_err(|e| {
            if e.to_string().starts_with("unknown variant") {
                bad("action_unknown")
            } else {
                bad("request_invalid")
            }
        })?;
        let Some(node) = self.node.upgrade() else {
            return Err(ServiceError::Failed("node gone".into()));
        };
        let room = parsed.room();
        events_channel(room).ok_or_else(|| bad("room_invalid"))?;
        let roster = roster(&node, &self.local);
        let failed = |error: String| ServiceError::Failed(format!("presence store: {error}"));
        match &parsed {
            Request::List { offset, .. } => {
                let members = roster.members(room).await.map_err(failed)?;
                Ok(page(room, members, *offset))
            }
            Request::Leave { .. } => {
                let left = roster
                    .leave(&request.client_id, room)
                    .await
                    .map_err(failed)?;
                let was = left.is_some();
                if let Some(left) = left {
                    publish(&node, &event(&left, "leave", Some("left")));
                }
                Ok(json!({ "room": room, "left": was }))
            }
            Request::Join { name, .. } => {
                let name = valid_name(name).ok_or_else(|| bad("name_invalid"))?;
                // A session that ended while this request was on its way must
                // not leave a member behind. (One that ends during the join
                // is taken out by its end, which runs after; on a cluster,
                // by the sweep at the latest.)
                let alive = node
                    .sessions()
                    .get(&request.client_id)
                    .is_some_and(|s| !s.is_closed());
                if !alive {
                    return Err(ServiceError::Failed("session ended".into()));
                }
                let new_id = new_random_id()[..16].to_owned();
                let joined = roster
                    .join(&request.client_id, room, name, new_id, self.bounds)
                    .await
                    .map_err(failed)?;
                let joined = match joined {
                    Ok(joined) => joined,
                    Err(Refused::TooManyRooms) => return Err(bad("too_many_rooms")),
                    Err(Refused::RoomFull) => {
                        let max = self.bounds.max_members;
                        node.limits().hit(Limit::RoomMembers, || {
                            format!("presence room {room:?} is full ({max} members)")
                        });
                        return Err(bad("room_full"));
                    }
                };
                if joined.changed {
                    let left = Left {
                        room: room.to_owned(),
                        member: Member {
                            id: joined.id.clone(),
                            name: name.to_owned(),
                        },
                        count: joined.count,
                    };
                    publish(&node, &event(&left, "join", None));
                }
                let members = roster.members(room).await.map_err(failed)?;
                let mut reply = page(room, members, 0);
                reply["you"] = json!(joined.id);
                Ok(reply)
            }
        }
    }
}

impl SessionListener for Presence {
    fn session_ended(&self, session: &Session, why: SessionEnd) {
        // A session another node took over goes on there, in its rooms.
        if why == SessionEnd::Moved {
            return;
        }
        let Some(node) = self.node.upgrade() else {
            return;
        };
        if node.broker().roster().is_none() {
            // In memory: at once, so the leave is broadcast before anything
            // the next request of another session does.
            let lefts = self.local.leave_all_now(session.client_id());
            broadcast_leaves(&node, &lefts, why);
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client_id = session.client_id().to_owned();
        runtime.spawn(async move {
            let Some(roster) = node.broker().roster() else {
                return;
            };
            match roster.leave_all(&client_id).await {
                Ok(lefts) => broadcast_leaves(&node, &lefts, why),
                // The sweep takes the members out once the session's record
                // is gone.
                Err(error) => tracing::debug!(%error, "presence: leaving rooms later"),
            }
        });
    }
}

fn broadcast_leaves(node: &Node, lefts: &[Left], why: SessionEnd) {
    for left in lefts {
        publish(node, &event(left, "leave", Some(why.as_str())));
    }
}

/// Takes out, every few seconds until the node stops, the members whose
/// session the cluster lost with its node.
async fn sweep(node: Weak<Node>) {
    let mut every = tokio::time::interval(crate::broker::roster::SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        {
            let Some(strong) = node.upgrade() else {
                return;
            };
            let stopping = strong.shutdown().wait();
            tokio::select! {
                _ = every.tick() => {}
                _ = stopping => return,
            }
        }
        let Some(node) = node.upgrade() else {
            return;
        };
        let Some(roster) = node.broker().roster() else {
            return;
        };
        match roster.sweep().await {
            Ok(lefts) => broadcast_leaves(&node, &lefts, SessionEnd::Expired),
            Err(error) => tracing::debug!(%error, "presence sweep failed"),
        }
    }
}

/// The broadcast of a change, with the room's size after it.
fn event(left: &Left, event: &str, reason: Option<&str>) -> Value {
    let mut data = json!({
        "room": left.room,
        "event": event,
        "member": { "id": left.member.id, "name": left.member.name },
        "count": left.count,
    });
    if let Some(reason) = reason {
        data["reason"] = json!(reason);
    }
    data
}

/// One page of a room's members from `offset`, by name (then id, for a
/// stable order), with the room's size.
fn page(room: &str, mut members: Vec<Member>, offset: usize) -> Value {
    members.sort_by(|a, b| {
        a.name
            .to_lowercase()
            .cmp(&b.name.to_lowercase())
            .then_with(|| a.id.cmp(&b.id))
    });
    let count = members.len();
    let page: Vec<Value> = members
        .into_iter()
        .skip(offset)
        .take(PAGE)
        .map(|m| json!({ "id": m.id, "name": m.name }))
        .collect();
    let mut reply = json!({ "room": room, "members": page, "count": count });
    if offset.saturating_add(PAGE) < count {
        reply["more"] = json!(true);
    }
    reply
}

/// `/presence/<room>`, if `room` is one valid channel segment.
fn events_channel(room: &str) -> Option<ChannelName> {
    if room.is_empty() || room.len() > MAX_ROOM_BYTES || room.contains('/') || room.contains('*') {
        return None;
    }
    ChannelName::parse(&format!("{EVENTS_PREFIX}{room}")).ok()
}

fn valid_name(name: &str) -> Option<&str> {
    let name = name.trim();
    let chars = name.chars().count();
    ((1..=MAX_NAME_CHARS).contains(&chars) && !name.chars().any(char::is_control)).then_some(name)
}

/// Broadcasts a membership change on its room's events channel.
fn publish(node: &Node, event: &Value) {
    let Some(channel) = event["room"].as_str().and_then(events_channel) else {
        return;
    };
    if let Ok(raw) = serde_json::value::to_raw_value(event) {
        node.publish(&channel, &raw, None, None);
        let origin = crate::metrics::Origin::Service;
        crate::metrics::metrics().publishes.get(origin).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_must_be_one_segment_and_names_short_and_printable() {
        assert!(events_channel("lobby").is_some());
        assert!(events_channel("room-1_(a)").is_some());
        for bad in ["", "a/b", "*", "**", "sp ace", "é", &"r".repeat(65)] {
            assert!(events_channel(bad).is_none(), "{bad:?}");
        }
        assert_eq!(valid_name("  ada  "), Some("ada"));
        assert_eq!(valid_name("Zoë 🚀"), Some("Zoë 🚀"));
        for bad in ["", "   ", "a\nb", &"n".repeat(41)] {
            assert_eq!(valid_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_room_is_listed_by_name_in_pages() {
        let members: Vec<Member> = (0..PAGE + 5)
            .map(|i| Member {
                id: format!("m{i:03}"),
                name: if i == 7 {
                    "Ada".into()
                } else {
                    format!("x{i:03}")
                },
            })
            .collect();
        let first = page("big", members.clone(), 0);
        assert_eq!(first["members"].as_array().unwrap().len(), PAGE);
        assert_eq!(first["members"][0]["name"], "Ada", "by name, case-blind");
        assert_eq!(first["count"], PAGE + 5);
        assert_eq!(first["more"], true);
        let rest = page("big", members, PAGE);
        assert_eq!(rest["members"].as_array().unwrap().len(), 5);
        assert!(rest.get("more").is_none());
    }
}
