//! Who is in which presence room, for the whole cluster: the store behind
//! `/service/presence` (see [`crate::service::presence`]).
//!
//! A single node keeps its rooms in memory (the service's own
//! `LocalRooms`). A cluster engine implements [`Roster`] on its shared
//! store (the Redis broker does, `broker/redis/roster.rs`), so a room lists
//! the members of every node, and a member stays listed while its session
//! moves from node to node. A member belongs to a session (its clientId),
//! not to a node: it leaves when the session ends on whichever node holds
//! it then, and a session that vanished with its node is found by
//! [`Roster::sweep`] once the cluster no longer has its record.

use std::time::Duration;

use super::directory::Pending;

/// How often a cluster looks for members whose session is gone.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// One member of a room, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Random and public (the clientId never leaves the server).
    pub id: String,
    pub name: String,
}

/// A join that was made (or renewed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The session's member id in the room (kept when it joins again).
    pub id: String,
    /// Whether anything changed (new, or a new name): worth a broadcast.
    pub changed: bool,
    /// The room's size after it.
    pub count: usize,
}

/// Why a join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The session is in [`Bounds::max_rooms`] rooms already.
    TooManyRooms,
    /// The room has [`Bounds::max_members`] members.
    RoomFull,
}

/// The caps a join is checked against, atomically with it.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_members: usize,
    pub max_rooms: usize,
}

/// A member that left a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Left {
    pub room: String,
    pub member: Member,
    /// The room's size after it.
    pub count: usize,
}

/// The rooms' store. Errors are the engine's (Redis unreachable).
pub trait Roster: Send + Sync {
    /// Puts `client_id`'s member in `room` under `name`: a new member gets
    /// `new_id`; a session already in the room keeps its id (a new name is
    /// a change).
    fn join<'a>(
        &'a self,
        client_id: &'a str,
        room: &'a str,
        name: &'a str,
        new_id: String,
        bounds: Bounds,
    ) -> Pending<'a, Result<Result<Joined, Refused>, String>>;

    /// Takes `client_id`'s member out of `room`, if it was one.
    fn leave<'a>(
        &'a self,
        client_id: &'a str,
        room: &'a str,
    ) -> Pending<'a, Result<Option<Left>, String>>;

    /// Takes `client_id` out of every room (its session ended).
    fn leave_all<'a>(&'a self, client_id: &'a str) -> Pending<'a, Result<Vec<Left>, String>>;

    /// Every member of `room`, in no particular order.
    fn members<'a>(&'a self, room: &'a str) -> Pending<'a, Result<Vec<Member>, String>>;

    /// Takes out the members whose session the cluster no longer has (its
    /// node died and its client did not come back). Cheap to call often:
    /// an engine shared by many nodes lets one of them do the work per
    /// period. The local store has nothing to sweep.
    fn sweep(&self) -> Pending<'_, Result<Vec<Left>, String>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
}
