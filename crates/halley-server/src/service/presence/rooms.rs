//! The presence rooms of a single node, in memory: the [`Roster`] the
//! presence service uses when the broker has none (no cluster).

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;

use crate::broker::directory::Pending;
use crate::broker::roster::{Bounds, Joined, Left, Member, Refused, Roster};

#[derive(Default)]
pub struct LocalRooms {
    inner: Mutex<Rooms>,
}

impl LocalRooms {
    /// [`Roster::leave_all`], without a future: a session's end takes its
    /// members out before the next request of another session is served.
    pub fn leave_all_now(&self, client_id: &str) -> Vec<Left> {
        self.inner.lock().leave_all(client_id)
    }
}

#[derive(Default)]
struct Rooms {
    /// room -> member id -> name.
    members: HashMap<String, BTreeMap<String, String>>,
    /// clientId -> room -> member id.
    by_session: HashMap<Box<str>, BTreeMap<String, String>>,
}

impl Rooms {
    fn join(
        &mut self,
        client_id: &str,
        room: &str,
        name: &str,
        new_id: String,
        bounds: Bounds,
    ) -> Result<Joined, Refused> {
        let mine = self.by_session.entry(client_id.into()).or_default();
        if let Some(id) = mine.get(room) {
            let id = id.clone();
            let members = self.members.entry(room.to_owned()).or_default();
            let old = members.insert(id.clone(), name.to_owned());
            let count = members.len();
            let changed = old.as_deref() != Some(name);
            return Ok(Joined { id, changed, count });
        }
        let refused = if mine.len() >= bounds.max_rooms {
            Some(Refused::TooManyRooms)
        } else if self.count(room) >= bounds.max_members {
            Some(Refused::RoomFull)
        } else {
            None
        };
        if let Some(refused) = refused {
            if self
                .by_session
                .get(client_id)
                .is_some_and(BTreeMap::is_empty)
            {
                self.by_session.remove(client_id);
            }
            return Err(refused);
        }
        let mine = self.by_session.entry(client_id.into()).or_default();
        mine.insert(room.to_owned(), new_id.clone());
        let members = self.members.entry(room.to_owned()).or_default();
        members.insert(new_id.clone(), name.to_owned());
        Ok(Joined {
            id: new_id,
            changed: true,
            count: members.len(),
        })
    }

    fn leave(&mut self, client_id: &str, room: &str) -> Option<Left> {
        let mine = self.by_session.get_mut(client_id)?;
        let id = mine.remove(room)?;
        if mine.is_empty() {
            self.by_session.remove(client_id);
        }
        let name = self.remove_member(room, &id)?;
        Some(Left {
            room: room.to_owned(),
            member: Member { id, name },
            count: self.count(room),
        })
    }

    fn leave_all(&mut self, client_id: &str) -> Vec<Left> {
        let Some(memberships) = self.by_session.remove(client_id) else {
            return Vec::new();
        };
        let mut lefts = Vec::with_capacity(memberships.len());
        for (room, id) in memberships {
            if let Some(name) = self.remove_member(&room, &id) {
                let count = self.count(&room);
                lefts.push(Left {
                    room,
                    member: Member { id, name },
                    count,
                });
            }
        }
        lefts
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

    fn members(&self, room: &str) -> Vec<Member> {
        self.members.get(room).map_or_else(Vec::new, |members| {
            members
                .iter()
                .map(|(id, name)| Member {
                    id: id.clone(),
                    name: name.clone(),
                })
                .collect()
        })
    }
}

impl Roster for LocalRooms {
    fn join<'a>(
        &'a self,
        client_id: &'a str,
        room: &'a str,
        name: &'a str,
        new_id: String,
        bounds: Bounds,
    ) -> Pending<'a, Result<Result<Joined, Refused>, String>> {
        let joined = self
            .inner
            .lock()
            .join(client_id, room, name, new_id, bounds);
        Box::pin(std::future::ready(Ok(joined)))
    }

    fn leave<'a>(
        &'a self,
        client_id: &'a str,
        room: &'a str,
    ) -> Pending<'a, Result<Option<Left>, String>> {
        let left = self.inner.lock().leave(client_id, room);
        Box::pin(std::future::ready(Ok(left)))
    }

    fn leave_all<'a>(&'a self, client_id: &'a str) -> Pending<'a, Result<Vec<Left>, String>> {
        let lefts = self.leave_all_now(client_id);
        Box::pin(std::future::ready(Ok(lefts)))
    }

    fn members<'a>(&'a self, room: &'a str) -> Pending<'a, Result<Vec<Member>, String>> {
        let members = self.inner.lock().members(room);
        Box::pin(std::future::ready(Ok(members)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        max_members: 10,
        max_rooms: 3,
    };

    fn join(rooms: &mut Rooms, client: &str, room: &str, name: &str) -> Result<Joined, Refused> {
        let id = crate::state::sessions::new_random_id()[..16].to_owned();
        rooms.join(client, room, name, id, BOUNDS)
    }

    #[test]
    fn join_is_idempotent_per_session_and_leave_forgets() {
        let mut rooms = Rooms::default();
        let first = join(&mut rooms, "c1", "lobby", "ada").unwrap();
        assert!(first.changed);
        let again = join(&mut rooms, "c1", "lobby", "ada").unwrap();
        assert_eq!(
            (again.id.as_str(), again.changed),
            (first.id.as_str(), false)
        );
        let renamed = join(&mut rooms, "c1", "lobby", "Ada").unwrap();
        assert_eq!(
            (renamed.id.as_str(), renamed.changed),
            (first.id.as_str(), true)
        );
        let other = join(&mut rooms, "c2", "lobby", "Ada").unwrap();
        assert_ne!(first.id, other.id, "one name, two sessions, two members");
        assert_eq!(other.count, 2);
        let left = rooms.leave("c1", "lobby").unwrap();
        assert_eq!(
            (left.member.id, left.member.name, left.count),
            (first.id, "Ada".into(), 1)
        );
        assert_eq!(rooms.leave("c1", "lobby"), None);
        assert_eq!(rooms.leave_all("c2").len(), 1);
        assert!(rooms.members.is_empty() && rooms.by_session.is_empty());
    }

    #[test]
    fn a_session_is_in_a_bounded_number_of_rooms_and_a_room_is_bounded() {
        let mut rooms = Rooms::default();
        for i in 0..BOUNDS.max_rooms {
            assert!(join(&mut rooms, "c1", &format!("r{i}"), "ada").is_ok());
        }
        assert_eq!(
            join(&mut rooms, "c1", "one-more", "ada"),
            Err(Refused::TooManyRooms)
        );
        assert!(
            join(&mut rooms, "c1", "r0", "ada").is_ok(),
            "rejoining is fine"
        );
        for i in 1..BOUNDS.max_members {
            assert!(join(&mut rooms, &format!("x{i}"), "r0", "x").is_ok());
        }
        assert_eq!(join(&mut rooms, "late", "r0", "x"), Err(Refused::RoomFull));
        assert!(
            !rooms.by_session.contains_key("late"),
            "nothing left behind"
        );
        assert!(
            join(&mut rooms, "x1", "r0", "y").is_ok(),
            "a member may rename"
        );
        assert_eq!(rooms.leave_all("c1").len(), BOUNDS.max_rooms);
    }
}
