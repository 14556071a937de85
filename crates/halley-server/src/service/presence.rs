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
//! The membership lives in this process: with a cluster broker it will have
//! to move to shared state. Until Halley has a publish policy, any client may
//! also publish on `/presence/**`; consumers should treat the service's
//! replies as the truth and events as hints to refresh.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};

use halley_protocol::ChannelName;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{json, Value};

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

/// Registers the service on `node` and subscribes it to session ends.
pub fn register(node: &Arc<Node>) {
    let presence = Arc::new(Presence {
        node: Arc::downgrade(node),
        rooms: Mutex::new(Rooms {
            max_members: node.config().max_room_members,
            ..Rooms::default()
        }),
    });
    node.session_listeners().add(presence.clone());
    node.services()
        .register(CHANNEL, move |request: ServiceRequest| {
            let presence = presence.clone();
            async move { presence.handle(&request) }
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
    rooms: Mutex<Rooms>,
}

/// Why a join was refused.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    TooManyRooms,
    RoomFull,
}

#[derive(Default)]
struct Rooms {
    /// Most members of one room (`max-room-members`).
    max_members: usize,
    /// room -> member id -> name.
    members: HashMap<String, BTreeMap<String, String>>,
    /// clientId -> room -> member id.
    by_session: HashMap<Box<str>, BTreeMap<String, String>>,
}

impl Presence {
    fn handle(&self, request: &ServiceRequest) -> Result<Value, ServiceError> {
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
        let channel = events_channel(room).ok_or_else(|| bad("room_invalid"))?;
        // Publishing under the lock keeps events in the order of the changes;
        // `Engine::publish` never calls back into this service.
        let mut rooms = self.rooms.lock();
        match &parsed {
            Request::List { offset, .. } => Ok(rooms.page(room, *offset)),
            Request::Leave { .. } => {
                let left = rooms.leave(&request.client_id, room);
                if let Some((id, name)) = &left {
                    let event = rooms.event(room, "leave", id, name, Some("left"));
                    publish(&node, &channel, &event);
                }
                Ok(json!({ "room": room, "left": left.is_some() }))
            }
            Request::Join { name, .. } => {
                let name = valid_name(name).ok_or_else(|| bad("name_invalid"))?;
                // A session that ended while this request was on its way must
                // not leave a member behind: its listener call has passed (or
                // waits for this lock and will remove it).
                let alive = node
                    .sessions()
                    .get(&request.client_id)
                    .is_some_and(|s| !s.is_closed());
                if !alive {
                    return Err(ServiceError::Failed("session ended".into()));
                }
                let (id, changed) = match rooms.join(&request.client_id, room, name) {
                    Ok(joined) => joined,
                    Err(Refused::TooManyRooms) => return Err(bad("too_many_rooms")),
                    Err(Refused::RoomFull) => {
                        let max = rooms.max_members;
                        node.limits().hit(Limit::RoomMembers, || {
                            format!("presence room {room:?} is full ({max} members)")
                        });
                        return Err(bad("room_full"));
                    }
                };
                if changed {
                    publish(&node, &channel, &rooms.event(room, "join", &id, name, None));
                }
                let mut reply = rooms.page(room, 0);
                reply["you"] = json!(id);
                Ok(reply)
            }
        }
    }
}

impl SessionListener for Presence {
    fn session_ended(&self, session: &Session, why: SessionEnd) {
        let Some(node) = self.node.upgrade() else {
            return;
        };
        let mut rooms = self.rooms.lock();
        let Some(memberships) = rooms.by_session.remove(session.client_id()) else {
            return;
        };
        for (room, id) in memberships {
            let Some(name) = rooms.remove_member(&room, &id) else {
                continue;
            };
            if let Some(channel) = events_channel(&room) {
                let event = rooms.event(&room, "leave", &id, &name, Some(why.as_str()));
                publish(&node, &channel, &event);
            }
        }
    }
}

impl Rooms {
    /// Adds (or renames) the session's member in `room`: its id, and whether
    /// anything changed.
    fn join(&mut self, client_id: &str, room: &str, name: &str) -> Result<(String, bool), Refused> {
        let mine = self.by_session.entry(client_id.into()).or_default();
        if let Some(id) = mine.get(room) {
            let id = id.clone();
            let members = self.members.entry(room.to_owned()).or_default();
            let old = members.insert(id.clone(), name.to_owned());
            return Ok((id, old.as_deref() != Some(name)));
        }
        if mine.len() >= MAX_ROOMS_PER_SESSION {
            return Err(Refused::TooManyRooms);
        }
        if self.members.get(room).map_or(0, BTreeMap::len) >= self.max_members {
            if mine.is_empty() {
                self.by_session.remove(client_id);
            }
            return Err(Refused::RoomFull);
        }
        let mine = self.by_session.entry(client_id.into()).or_default();
        let id = new_random_id()[..16].to_owned();
        mine.insert(room.to_owned(), id.clone());
        self.members
            .entry(room.to_owned())
            .or_default()
            .insert(id.clone(), name.to_owned());
        Ok((id, true))
    }

    /// Removes the session's member from `room`: its id and name, if it was one.
    fn leave(&mut self, client_id: &str, room: &str) -> Option<(String, String)> {
        let mine = self.by_session.get_mut(client_id)?;
        let id = mine.remove(room)?;
        if mine.is_empty() {
            self.by_session.remove(client_id);
        }
        let name = self.remove_member(room, &id)?;
        Some((id, name))
    }

    fn remove_member(&mut self, room: &str, id: &str) -> Option<String> {
        let members = self.members.get_mut(room)?;
        let name = members.remove(id);
        if members.is_empty() {
            self.members.remove(room);
        }
        name
    }

    fn count(&self, room: &str) -> usize {
        self.members.get(room).map_or(0, BTreeMap::len)
    }

    /// The broadcast of a change to `room`, with its member count after it.
    fn event(&self, room: &str, event: &str, id: &str, name: &str, reason: Option<&str>) -> Value {
        let mut data = json!({
            "room": room,
            "event": event,
            "member": { "id": id, "name": name },
            "count": self.count(room),
        });
        if let Some(reason) = reason {
            data["reason"] = json!(reason);
        }
        data
    }

    /// One page of `room`'s members from `offset`, with the room's size.
    fn page(&self, room: &str, offset: usize) -> Value {
        let members = self.list(room);
        let count = members.len();
        let page: Vec<Value> = members.into_iter().skip(offset).take(PAGE).collect();
        let mut reply = json!({ "room": room, "members": page, "count": count });
        if offset.saturating_add(PAGE) < count {
            reply["more"] = json!(true);
        }
        reply
    }

    /// The members of `room`, by name (then id, for a stable order).
    fn list(&self, room: &str) -> Vec<Value> {
        let mut members: Vec<(&String, &String)> = self
            .members
            .get(room)
            .map(|m| m.iter().collect())
            .unwrap_or_default();
        members.sort_by(|a, b| {
            a.1.to_lowercase()
                .cmp(&b.1.to_lowercase())
                .then(a.0.cmp(b.0))
        });
        members
            .into_iter()
            .map(|(id, name)| json!({ "id": id, "name": name }))
            .collect()
    }
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

/// Broadcasts a membership change on the room's events channel.
fn publish(node: &Node, channel: &ChannelName, event: &Value) {
    if let Ok(raw) = serde_json::value::to_raw_value(event) {
        node.publish(channel, &raw, None, None);
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
    fn join_is_idempotent_per_session_and_leave_forgets() {
        let mut rooms = Rooms {
            max_members: 10,
            ..Rooms::default()
        };
        let (id, changed) = rooms.join("c1", "lobby", "ada").unwrap();
        assert!(changed);
        assert_eq!(
            rooms.join("c1", "lobby", "ada").unwrap(),
            (id.clone(), false)
        );
        assert_eq!(
            rooms.join("c1", "lobby", "Ada").unwrap(),
            (id.clone(), true)
        );
        let (other, _) = rooms.join("c2", "lobby", "Ada").unwrap();
        assert_ne!(id, other, "one name, two sessions, two members");
        assert_eq!(rooms.count("lobby"), 2);
        assert_eq!(rooms.leave("c1", "lobby"), Some((id, "Ada".to_owned())));
        assert_eq!(rooms.leave("c1", "lobby"), None);
        assert_eq!(
            rooms.leave("c2", "lobby").map(|(_, n)| n).as_deref(),
            Some("Ada")
        );
        assert!(rooms.members.is_empty() && rooms.by_session.is_empty());
    }

    #[test]
    fn a_session_is_in_a_bounded_number_of_rooms() {
        let mut rooms = Rooms {
            max_members: 10,
            ..Rooms::default()
        };
        for i in 0..MAX_ROOMS_PER_SESSION {
            assert!(rooms.join("c1", &format!("r{i}"), "ada").is_ok());
        }
        assert_eq!(
            rooms.join("c1", "one-more", "ada"),
            Err(Refused::TooManyRooms)
        );
        assert!(rooms.join("c1", "r0", "ada").is_ok(), "rejoining is fine");
    }

    #[test]
    fn a_room_is_bounded_and_listed_in_pages() {
        let mut rooms = Rooms {
            max_members: PAGE + 5,
            ..Rooms::default()
        };
        for i in 0..PAGE + 5 {
            assert!(rooms.join(&format!("c{i}"), "big", "x").is_ok());
        }
        assert_eq!(rooms.join("late", "big", "x"), Err(Refused::RoomFull));
        assert!(
            !rooms.by_session.contains_key("late"),
            "nothing left behind"
        );
        assert!(rooms.join("c0", "big", "y").is_ok(), "a member may rename");
        let first = rooms.page("big", 0);
        assert_eq!(first["members"].as_array().unwrap().len(), PAGE);
        assert_eq!(first["count"], PAGE + 5);
        assert_eq!(first["more"], true);
        let rest = rooms.page("big", PAGE);
        assert_eq!(rest["members"].as_array().unwrap().len(), 5);
        assert!(rest.get("more").is_none());
    }
}
