//! A cap on the sessions one user may hold at once (`max-sessions-per-user`).
//!
//! Counted per user name, whichever Metadata Adapter named the user: a
//! handshake that would exceed the cap is denied; a session's end frees
//! its place. Anonymous sessions are not counted.

use dashmap::DashMap;

#[derive(Debug, Default)]
pub struct UserSessions {
    max: Option<usize>,
    open: DashMap<Box<str>, usize>,
}

impl UserSessions {
    pub fn new(max: Option<usize>) -> Self {
        UserSessions {
            max,
            open: DashMap::new(),
        }
    }

    /// Takes a place for one more session of `user`; `false` when the cap is reached.
    pub fn try_open(&self, user: &str) -> bool {
        let mut open = self.open.entry(user.into()).or_insert(0);
        if self.max.is_some_and(|max| *open >= max) {
            return false;
        }
        *open += 1;
        true
    }

    /// Frees the place of one ended session of `user`.
    pub fn close(&self, user: &str) {
        self.open.remove_if_mut(user, |_, open| {
            *open = open.saturating_sub(1);
            *open == 0
        });
    }

    /// Sessions `user` holds now.
    pub fn count(&self, user: &str) -> usize {
        self.open.get(user).map_or(0, |open| *open)
    }

    pub fn max(&self) -> Option<usize> {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_holds_per_user_and_frees_on_close() {
        let caps = UserSessions::new(Some(2));
        assert!(caps.try_open("ada") && caps.try_open("ada"));
        assert!(!caps.try_open("ada"), "third session refused");
        assert!(caps.try_open("bob"), "another user is counted apart");
        caps.close("ada");
        assert!(caps.try_open("ada"), "a freed place can be taken");
        caps.close("bob");
        assert_eq!(caps.count("bob"), 0);
        assert!(
            caps.open.get("bob").is_none(),
            "no entry left for a user without sessions"
        );
    }

    #[test]
    fn without_a_cap_everyone_is_counted_but_never_refused() {
        let caps = UserSessions::new(None);
        for _ in 0..100 {
            assert!(caps.try_open("ada"));
        }
        assert_eq!(caps.count("ada"), 100);
    }
}
