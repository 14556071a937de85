//! Per-channel settings from the configuration (`[[overflow]]`,
//! `[[history]]`, `[[lazy]]`, `[[qos]]`), parsed once at start-up so a publish looks
//! them up without re-parsing patterns. Within each kind the first rule
//! whose pattern matches the channel wins; the lists are short.

use halley_protocol::{ChannelName, ChannelPattern};

use crate::config::Config;
use crate::history::Retention;
use crate::state::outbox::OverflowPolicy;
use crate::state::throttle::Mode;

/// A `[[qos]]` rule, parsed once (see [`crate::config::ChannelQos`] and
/// [`crate::qos`]).
#[derive(Debug, Clone, PartialEq)]
pub struct QosRule {
    pub max_frequency: f64,
    pub mode: Mode,
    /// Merge only: the top-level field of `data` to conflate by.
    pub key: Option<Box<str>>,
}

pub struct ChannelRules {
    default_overflow: OverflowPolicy,
    overflow: Vec<(ChannelPattern, OverflowPolicy)>,
    history: Vec<(ChannelPattern, Retention)>,
    /// Lazy channels and how long their messages may wait, in ms.
    lazy: Vec<(ChannelPattern, u64)>,
    /// Rate-limited channels.
    qos: Vec<(ChannelPattern, QosRule)>,
}

fn first<'a, T>(rules: &'a [(ChannelPattern, T)], channel: &ChannelName) -> Option<&'a T> {
    rules
        .iter()
        .find(|(pattern, _)| pattern.matches(channel))
        .map(|(_, value)| value)
}

impl ChannelRules {
    /// The rules of `config`, whose patterns `Config::validate` has checked
    /// (an invalid one is skipped here rather than trusted).
    pub fn from_config(config: &Config) -> Self {
        fn parsed<R, T>(
            rules: &[R],
            pattern: impl Fn(&R) -> &str,
            value: impl Fn(&R) -> T,
        ) -> Vec<(ChannelPattern, T)> {
            rules
                .iter()
                .filter_map(|rule| {
                    ChannelPattern::parse(pattern(rule))
                        .ok()
                        .map(|p| (p, value(rule)))
                })
                .collect()
        }
        ChannelRules {
            default_overflow: config.overflow_policy,
            overflow: parsed(&config.overflow, |r| &r.pattern, |r| r.policy),
            history: parsed(&config.history, |r| &r.pattern, |r| r.retention()),
            lazy: parsed(
                &config.lazy,
                |r| &r.pattern,
                |r| r.max_lazy_timeout.unwrap_or(config.max_lazy_timeout),
            ),
            qos: parsed(
                &config.qos,
                |r| &r.pattern,
                |r| QosRule {
                    max_frequency: r.max_frequency,
                    mode: r.mode,
                    key: r.key.as_deref().map(Into::into),
                },
            ),
        }
    }

    pub fn overflow_policy(&self, channel: &ChannelName) -> OverflowPolicy {
        first(&self.overflow, channel)
            .copied()
            .unwrap_or(self.default_overflow)
    }

    pub fn retention(&self, channel: &ChannelName) -> Option<Retention> {
        first(&self.history, channel).copied()
    }

    pub fn lazy_timeout_ms(&self, channel: &ChannelName) -> Option<u64> {
        first(&self.lazy, channel).copied()
    }

    /// The channel's `[[qos]]` rule; `None` at once when there are none.
    #[inline]
    pub fn qos(&self, channel: &ChannelName) -> Option<&QosRule> {
        if self.qos.is_empty() {
            return None;
        }
        first(&self.qos, channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ChannelLazy, ChannelOverflow};

    #[test]
    fn first_matching_rule_wins_and_defaults_apply() {
        let config = Config {
            overflow: vec![
                ChannelOverflow {
                    pattern: "/a/x".into(),
                    policy: OverflowPolicy::Disconnect,
                },
                ChannelOverflow {
                    pattern: "/a/*".into(),
                    policy: OverflowPolicy::DropNewest,
                },
            ],
            lazy: vec![ChannelLazy {
                pattern: "/t/**".into(),
                max_lazy_timeout: None,
            }],
            ..Config::default()
        };
        let rules = ChannelRules::from_config(&config);
        let ch = |s| ChannelName::parse(s).unwrap();
        assert_eq!(
            rules.overflow_policy(&ch("/a/x")),
            OverflowPolicy::Disconnect
        );
        assert_eq!(
            rules.overflow_policy(&ch("/a/y")),
            OverflowPolicy::DropNewest
        );
        assert_eq!(rules.overflow_policy(&ch("/b")), OverflowPolicy::DropOldest);
        assert_eq!(rules.lazy_timeout_ms(&ch("/t/1/2")), Some(5_000));
        assert_eq!(rules.lazy_timeout_ms(&ch("/a/x")), None);
        assert_eq!(rules.retention(&ch("/a/x")), None);
    }
}
