//! Channel permissions: the patterns a session may subscribe to and publish on.
//!
//! A permission is a channel or a glob. A subscription is allowed when one
//! permission *covers* it (every channel it matches, the permission matches
//! too: `/chat/**` allows subscribing to `/chat/*`, `/chat/*` does not allow
//! `/chat/**`); a publish when one permission matches its channel.

use halley_protocol::{ChannelName, ChannelPattern};

/// What one session (or anonymous sessions) may do, by channel pattern.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelPermissions {
    pub subscribe: Vec<ChannelPattern>,
    pub publish: Vec<ChannelPattern>,
}

impl ChannelPermissions {
    /// Parses two lists of patterns, naming the first invalid one.
    pub fn parse(subscribe: &[String], publish: &[String]) -> Result<Self, String> {
        let parse = |patterns: &[String]| {
            patterns
                .iter()
                .map(|p| {
                    ChannelPattern::parse(p).map_err(|e| format!("channel pattern {p:?}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(ChannelPermissions {
            subscribe: parse(subscribe)?,
            publish: parse(publish)?,
        })
    }

    pub fn may_subscribe(&self, subscription: &ChannelPattern) -> bool {
        self.subscribe.iter().any(|p| p.covers(subscription))
    }

    pub fn may_publish(&self, channel: &ChannelName) -> bool {
        self.publish.iter().any(|p| p.matches(channel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permissions(subscribe: &[&str], publish: &[&str]) -> ChannelPermissions {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        ChannelPermissions::parse(&own(subscribe), &own(publish)).unwrap()
    }

    #[test]
    fn subscriptions_need_a_covering_pattern_and_publishes_a_matching_one() {
        let p = permissions(&["/chat/**", "/news"], &["/chat/*"]);
        let sub = |s: &str| p.may_subscribe(&ChannelPattern::parse(s).unwrap());
        let publ = |s: &str| p.may_publish(&ChannelName::parse(s).unwrap());
        assert!(sub("/chat/1") && sub("/chat/*") && sub("/chat/**") && sub("/news"));
        assert!(!sub("/news/1") && !sub("/**") && !sub("/other"));
        assert!(publ("/chat/1"));
        assert!(!publ("/chat/1/2") && !publ("/news"));
    }

    #[test]
    fn an_invalid_pattern_is_named() {
        let error = ChannelPermissions::parse(&["/ok".into(), "no-slash".into()], &[]).unwrap_err();
        assert!(error.contains("no-slash"), "{error}");
    }
}
