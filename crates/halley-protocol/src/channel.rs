//! Channel names, their kinds, and the two globs Bayeux has.
//!
//! A channel name is `/segment(/segment)*` where a segment is one or more
//! letters, digits or one of `- _ ! ~ ( ) $ @`. Only the last segment of a
//! *subscription* may be a glob:
//! - `/a/*` matches exactly one more segment: `/a/b`, not `/a/b/c`, not `/a`;
//! - `/a/**` matches one or more: `/a/b` and `/a/b/c`, not `/a`.
//!
//! Matching is done the other way round from what one might expect: instead
//! of testing a published channel against every pattern (a scan), the server
//! asks [`ChannelName::matching_patterns`] for the handful of subscription keys
//! that *could* match it (the name itself, its parent's `*`, and `**` of every
//! ancestor) and looks each up in a map. That is O(depth), however many
//! patterns exist.

use std::fmt;

/// What a channel is for, decided by its first segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// `/meta/**`: the protocol itself; never published or subscribed by clients.
    Meta,
    /// `/service/**`: request/response with the server; never broadcast.
    Service,
    /// Everything else: delivered to every subscriber.
    Broadcast,
}

/// Why a string is not a channel name (or not a subscription pattern).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelError {
    Empty,
    NoLeadingSlash,
    EmptySegment,
    InvalidCharacter,
    /// A glob where a plain channel is required, or a glob that is not the last segment.
    MisplacedGlob,
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChannelError::Empty => "empty channel name",
            ChannelError::NoLeadingSlash => "channel name must start with '/'",
            ChannelError::EmptySegment => "channel name has an empty segment",
            ChannelError::InvalidCharacter => "channel name has a character Bayeux does not allow",
            ChannelError::MisplacedGlob => {
                "glob ('*' or '**') allowed only as the last segment of a subscription"
            }
        })
    }
}

impl std::error::Error for ChannelError {}

fn is_segment_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'!' | b'~' | b'(' | b')' | b'$' | b'@')
}

/// Checks the shape of a name; `allow_glob` permits `*`/`**` as the last segment.
fn validate(name: &str, allow_glob: bool) -> Result<(), ChannelError> {
    if name.is_empty() {
        return Err(ChannelError::Empty);
    }
    let Some(rest) = name.strip_prefix('/') else {
        return Err(ChannelError::NoLeadingSlash);
    };
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if segment.is_empty() {
            return Err(ChannelError::EmptySegment);
        }
        if segment == "*" || segment == "**" {
            if allow_glob && last {
                continue;
            }
            return Err(ChannelError::MisplacedGlob);
        }
        if segment.contains('*') {
            return Err(ChannelError::MisplacedGlob);
        }
        if !segment.bytes().all(is_segment_char) {
            return Err(ChannelError::InvalidCharacter);
        }
    }
    Ok(())
}

fn kind_of(name: &str) -> ChannelKind {
    if name == "/meta" || name.starts_with("/meta/") {
        ChannelKind::Meta
    } else if name == "/service" || name.starts_with("/service/") {
        ChannelKind::Service
    } else {
        ChannelKind::Broadcast
    }
}

/// A valid, glob-free channel name: something one can publish to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelName(String);

impl ChannelName {
    pub fn parse(name: &str) -> Result<Self, ChannelError> {
        validate(name, false)?;
        Ok(ChannelName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn kind(&self) -> ChannelKind {
        kind_of(&self.0)
    }

    /// Every subscription key that matches this channel: the name itself,
    /// `<parent>/*`, and `<ancestor>/**` for every ancestor including the root.
    /// `/a/b` yields `/a/b`, `/a/*`, `/a/**`, `/**`.
    pub fn matching_patterns(&self) -> Vec<String> {
        let name = self.0.as_str();
        let depth = name.bytes().filter(|&b| b == b'/').count();
        let mut keys = Vec::with_capacity(depth + 2);
        keys.push(name.to_owned());
        // Byte offsets of every '/': each one ends an ancestor prefix.
        let mut first = true;
        for (i, _) in name.match_indices('/').rev() {
            let prefix = &name[..=i];
            if first {
                keys.push(format!("{prefix}*"));
                first = false;
            }
            keys.push(format!("{prefix}**"));
        }
        keys
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A subscription: a channel name, or one ending in `*` or `**`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelPattern(String);

impl ChannelPattern {
    pub fn parse(pattern: &str) -> Result<Self, ChannelError> {
        validate(pattern, true)?;
        Ok(ChannelPattern(pattern.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The kind of the channels this pattern covers. `/**` and `/*` cover
    /// broadcast channels (and would cover `/meta` ones, which are never broadcast).
    pub fn kind(&self) -> ChannelKind {
        kind_of(&self.0)
    }

    pub fn is_glob(&self) -> bool {
        self.0.ends_with('*')
    }

    /// Direct test of one channel against this pattern; the server does not
    /// use it on the publish path (see [`ChannelName::matching_patterns`]),
    /// but clients and tests do.
    pub fn matches(&self, channel: &ChannelName) -> bool {
        let pattern = self.0.as_str();
        let name = channel.as_str();
        if let Some(prefix) = pattern.strip_suffix("/**") {
            // `prefix` is "" for the root pattern `/**`.
            name.len() > prefix.len() + 1
                && name.starts_with(prefix)
                && name.as_bytes()[prefix.len()] == b'/'
        } else if let Some(prefix) = pattern.strip_suffix("/*") {
            name.len() > prefix.len() + 1
                && name.starts_with(prefix)
                && name.as_bytes()[prefix.len()] == b'/'
                && !name[prefix.len() + 1..].contains('/')
        } else {
            pattern == name
        }
    }

    /// Whether every channel `other` matches is also matched by `self`:
    /// `/chat/**` covers `/chat/42`, `/chat/*` and `/chat/a/**`; `/chat/*`
    /// covers `/chat/42` and `/chat/*` but not `/chat/**`. Used to decide
    /// whether a permission (a pattern) allows a subscription (a pattern).
    pub fn covers(&self, other: &ChannelPattern) -> bool {
        let mine: Vec<&str> = self.0[1..].split('/').collect();
        let theirs: Vec<&str> = other.0[1..].split('/').collect();
        let (last, prefix) = mine.split_last().expect("a valid pattern has a segment");
        let same_prefix = || theirs.len() > prefix.len() && theirs[..prefix.len()] == *prefix;
        match *last {
            "**" => same_prefix(),
            "*" => same_prefix() && theirs.len() == mine.len() && theirs[prefix.len()] != "**",
            _ => self == other,
        }
    }
}

impl fmt::Display for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(s: &str) -> ChannelName {
        ChannelName::parse(s).unwrap()
    }
    fn pattern(s: &str) -> ChannelPattern {
        ChannelPattern::parse(s).unwrap()
    }

    #[test]
    fn validates_names() {
        for ok in [
            "/a",
            "/chat/room-1",
            "/a/b_c/!~()$@",
            "/meta/connect",
            "/service/echo",
        ] {
            assert!(ChannelName::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(ChannelName::parse(""), Err(ChannelError::Empty));
        assert_eq!(ChannelName::parse("a/b"), Err(ChannelError::NoLeadingSlash));
        assert_eq!(ChannelName::parse("/"), Err(ChannelError::EmptySegment));
        assert_eq!(ChannelName::parse("/a//b"), Err(ChannelError::EmptySegment));
        assert_eq!(ChannelName::parse("/a/"), Err(ChannelError::EmptySegment));
        assert_eq!(
            ChannelName::parse("/a b"),
            Err(ChannelError::InvalidCharacter)
        );
        assert_eq!(
            ChannelName::parse("/a.b"),
            Err(ChannelError::InvalidCharacter)
        );
        assert_eq!(ChannelName::parse("/a/*"), Err(ChannelError::MisplacedGlob));
    }

    #[test]
    fn validates_patterns() {
        for ok in ["/*", "/**", "/a/*", "/a/**", "/a/b"] {
            assert!(ChannelPattern::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["/*/a", "/a/b*", "/a/***", "/**/**", "*"] {
            assert!(ChannelPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kinds() {
        assert_eq!(name("/meta/connect").kind(), ChannelKind::Meta);
        assert_eq!(name("/service/echo").kind(), ChannelKind::Service);
        assert_eq!(name("/metadata").kind(), ChannelKind::Broadcast);
        assert_eq!(name("/chat").kind(), ChannelKind::Broadcast);
        assert_eq!(pattern("/meta/*").kind(), ChannelKind::Meta);
    }

    #[test]
    fn glob_semantics_follow_the_spec() {
        let star = pattern("/a/*");
        assert!(star.matches(&name("/a/b")));
        assert!(!star.matches(&name("/a/b/c")));
        assert!(!star.matches(&name("/a")));
        assert!(!star.matches(&name("/ab/c")));
        let deep = pattern("/a/**");
        assert!(deep.matches(&name("/a/b")));
        assert!(deep.matches(&name("/a/b/c")));
        assert!(!deep.matches(&name("/a")));
        assert!(!deep.matches(&name("/ab/c")));
        assert!(pattern("/**").matches(&name("/x/y/z")));
        assert!(pattern("/*").matches(&name("/x")));
        assert!(!pattern("/*").matches(&name("/x/y")));
    }

    #[test]
    fn matching_patterns_of_a_channel() {
        assert_eq!(
            name("/a/b").matching_patterns(),
            vec!["/a/b", "/a/*", "/a/**", "/**"]
        );
        assert_eq!(name("/a").matching_patterns(), vec!["/a", "/*", "/**"]);
    }

    #[test]
    fn covers_globs_and_names_as_permissions_expect() {
        let covers = |p: &str, q: &str| pattern(p).covers(&pattern(q));
        assert!(covers("/**", "/a/b/*"));
        assert!(covers("/**", "/**"));
        assert!(covers("/chat/**", "/chat/42"));
        assert!(covers("/chat/**", "/chat/*"));
        assert!(covers("/chat/**", "/chat/a/**"));
        assert!(!covers("/chat/**", "/chat"));
        assert!(!covers("/chat/**", "/**"));
        assert!(!covers("/chat/**", "/chatter/1"));
        assert!(covers("/chat/*", "/chat/42"));
        assert!(covers("/chat/*", "/chat/*"));
        assert!(!covers("/chat/*", "/chat/**"));
        assert!(!covers("/chat/*", "/chat/a/b"));
        assert!(covers("/chat/42", "/chat/42"));
        assert!(!covers("/chat/42", "/chat/*"));
        assert!(!covers("/chat/42", "/chat/43"));
    }

    fn segment() -> impl Strategy<Value = String> {
        "[a-c]{1,2}"
    }

    fn channel() -> impl Strategy<Value = String> {
        prop::collection::vec(segment(), 1..5).prop_map(|s| format!("/{}", s.join("/")))
    }

    fn any_pattern() -> impl Strategy<Value = String> {
        prop_oneof![
            (channel(), 0..3u8).prop_map(|(c, g)| match g {
                0 => c,
                1 => format!("{c}/*"),
                _ => format!("{c}/**"),
            }),
            Just("/*".to_owned()),
            Just("/**".to_owned()),
        ]
    }

    proptest! {
        /// The O(depth) lookup keys agree with the direct definition of matching.
        #[test]
        fn lookup_keys_agree_with_matches(c in channel(), p in any_pattern()) {
            let c = name(&c);
            let p = pattern(&p);
            let by_lookup = c.matching_patterns().iter().any(|k| k == p.as_str());
            prop_assert_eq!(by_lookup, p.matches(&c));
        }

        /// A pattern covering another matches everything the other matches.
        #[test]
        fn covering_is_sound(p in any_pattern(), q in any_pattern(), c in channel()) {
            let (p, q, c) = (pattern(&p), pattern(&q), name(&c));
            if p.covers(&q) && q.matches(&c) {
                prop_assert!(p.matches(&c), "{} covers {} but not {}", p, q, c);
            }
        }

        #[test]
        fn every_generated_name_is_valid_and_round_trips(c in channel()) {
            let parsed = name(&c);
            prop_assert_eq!(parsed.as_str(), c.as_str());
        }

        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,24}") {
            let _ = ChannelName::parse(&s);
            let _ = ChannelPattern::parse(&s);
        }
    }
}
