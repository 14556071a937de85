//! Channel names and globs (`halley_protocol::channel`), against the plain
//! reference in `halley_fuzz::reference`.
//!
//! The input is up to three lines: a pattern `p`, a pattern `q`, a name `c`.
//! Checked: each parses exactly when the reference says it is valid; a
//! name's kind follows its first segment; `p.matches(c)` agrees with the
//! reference, and with the O(depth) lookup keys the server uses instead;
//! and `p.covers(q)` is sound (whatever `q` matches, `p` matches).
#![no_main]

use halley_fuzz::reference;
use halley_protocol::{ChannelKind, ChannelName, ChannelPattern};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    let mut lines = input.splitn(3, '\n');
    let (p, q) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    let c = lines.next().unwrap_or(p);

    for s in [p, q, c] {
        let name = ChannelName::parse(s);
        assert_eq!(name.is_ok(), reference::is_name(s), "name {s:?}: {name:?}");
        let pattern = ChannelPattern::parse(s);
        assert_eq!(
            pattern.is_ok(),
            reference::is_pattern(s),
            "pattern {s:?}: {pattern:?}"
        );
        if let Ok(name) = name {
            let expected = match reference::first_segment(s) {
                "meta" => ChannelKind::Meta,
                "service" => ChannelKind::Service,
                _ => ChannelKind::Broadcast,
            };
            assert_eq!(name.kind(), expected, "{s}");
            assert_eq!(name.as_str(), s);
        }
    }

    let (Ok(p), Ok(q)) = (ChannelPattern::parse(p), ChannelPattern::parse(q)) else {
        return;
    };
    let Ok(c) = ChannelName::parse(c) else {
        return;
    };
    let matches = p.matches(&c);
    assert_eq!(
        matches,
        reference::matches(p.as_str(), c.as_str()),
        "{p} on {c}"
    );
    let by_lookup = c.matching_patterns().iter().any(|key| key == p.as_str());
    assert_eq!(by_lookup, matches, "lookup keys of {c} for {p}");
    if p.covers(&q) && q.matches(&c) {
        assert!(
            matches,
            "{p} covers {q}, which matches {c}, but {p} does not"
        );
    }
});
