//! The subscription: which topics the connector consumes (`topics` or `topics.regex`), and the
//! one reading of a `topics.regex` that agrees with librdkafka's.
//!
//! Three places must agree with librdkafka about which topics a `topics.regex` consumes: the
//! output-topic check (config), the `lark.rate.share=auto` partition count (the rebalance
//! context) and `lark-sink check`. They all ask this file.

/// Which topics to consume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topics {
    List(Vec<String>),
    /// A regex; librdkafka subscribes to it as `^...` ([`regex_subscription`]).
    Regex(String),
}

/// Whether the subscription `topics` would consume `topic`: config refuses output topics that
/// are also source topics. A `topics.regex` goes through [`topics_regex_matcher`]; one the `regex`
/// crate cannot parse is not checked here (librdkafka reports it at subscribe time).
pub fn topics_include(topics: &Topics, topic: &str) -> bool {
    match topics {
        Topics::List(list) => list.iter().any(|t| t == topic),
        Topics::Regex(re) => topics_regex_matcher(re).is_ok_and(|r| r.is_match(topic)),
    }
}

/// The subscription lark-sink hands librdkafka for `topics.regex`. librdkafka reads a
/// subscription starting with `^` as a regex (anything else is one literal topic name), so a `^`
/// is added when the pattern lacks one.
pub fn regex_subscription(re: &str) -> String {
    if re.starts_with('^') {
        re.to_string()
    } else {
        format!("^{re}")
    }
}

/// Which topic names a `topics.regex` subscription consumes, for everything that must agree with
/// librdkafka about it: the output-topic check ([`topics_include`]), the `lark.rate.share=auto` partition count
/// (a different set of topics means a wrong share of the app quota) and `lark-sink check`.
/// librdkafka matches its subscription with POSIX `regexec`, a search, so the pattern is anchored
/// only where it says: at the start by the `^` of [`regex_subscription`], not at the end (`^alerts`
/// also consumes `alerts-archive`; `^alerts$` is one topic), and in `a|b` the `^` binds to `a`
/// alone. Compiling that exact string with the `regex` crate (whose `is_match` also searches)
/// keeps all of this. The two syntaxes differ at the edges (POSIX has no `\d`, the `regex` crate
/// no back-references); a pattern the `regex` crate rejects is an error.
pub fn topics_regex_matcher(re: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&regex_subscription(re))
}

/// How many partitions the subscription consumes, given `(topic, partition count)` for every
/// topic of the cluster: the denominator of the rebalance context's partition share, apart from
/// the metadata request so it can be tested without a broker.
pub(super) fn subscribed_partitions<'a>(
    topics: &Topics,
    cluster: impl IntoIterator<Item = (&'a str, usize)>,
) -> usize {
    let regex = match topics {
        Topics::Regex(re) => match topics_regex_matcher(re) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!("topics.regex cannot be read for lark.rate.share: {e}");
                return 0;
            }
        },
        Topics::List(_) => None,
    };
    cluster
        .into_iter()
        .filter(|(name, _)| match (topics, &regex) {
            (Topics::List(list), _) => list.iter().any(|l| l == name),
            (Topics::Regex(_), Some(re)) => re.is_match(name),
            (Topics::Regex(_), None) => false,
        })
        .map(|(_, n)| n)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(topics.regex, topic, whether librdkafka's subscription consumes it)`. librdkafka takes
    /// the `^`-prefixed pattern to POSIX `regexec`, a search: anchored at the start by the `^`,
    /// not at the end, and `^a|b` is `^a` or `b` anywhere (checked against glibc's regexec).
    const CASES: &[(&str, &str, bool)] = &[
        ("alerts.*", "alerts", true),
        ("alerts.*", "alerts-p1", true),
        ("alerts.*", "xalerts", false),
        ("^alerts", "alerts", true),
        ("^alerts", "alerts-p1", true),
        ("^alerts", "xalerts", false),
        ("^alerts-p1", "alerts-p1", true),
        ("^alerts-p1", "alerts-p1-archive", true),
        ("^alerts-p1", "alerts", false),
        ("^alerts-p1$", "alerts-p1-archive", false),
        ("^alerts-p1$", "alerts-p1", true),
        ("alerts|audit", "alerts-p1", true),
        ("alerts|audit", "xaudit", true),
        ("alerts|audit", "xalerts", false),
    ];

    #[test]
    fn rate_share_and_output_check_match_what_the_subscription_consumes() {
        for &(re, topic, consumed) in CASES {
            let topics = Topics::Regex(re.to_string());
            assert_eq!(
                topics_include(&topics, topic),
                consumed,
                "config's output-topic check: '{re}' vs '{topic}'"
            );
            assert_eq!(
                subscribed_partitions(&topics, [(topic, 3)]),
                if consumed { 3 } else { 0 },
                "lark.rate.share=auto partition count: '{re}' vs '{topic}'"
            );
        }
        let cluster = [
            ("alerts", 3),
            ("alerts-p1", 2),
            ("alerts-p1-archive", 1),
            ("xalerts", 5),
        ];
        let regex = |re: &str| Topics::Regex(re.to_string());
        assert_eq!(subscribed_partitions(&regex("^alerts-p1"), cluster), 3);
        assert_eq!(subscribed_partitions(&regex("alerts"), cluster), 6);
        assert_eq!(subscribed_partitions(&regex("(unclosed"), cluster), 0);
        let list = Topics::List(vec!["alerts".into(), "xalerts".into(), "gone".into()]);
        assert_eq!(subscribed_partitions(&list, cluster), 8);
    }

    #[test]
    fn the_subscription_is_what_the_matcher_compiles() {
        assert_eq!(regex_subscription("alerts.*"), "^alerts.*");
        assert_eq!(regex_subscription("^alerts"), "^alerts");
        for &(re, topic, consumed) in CASES {
            let subscription = regex_subscription(re);
            assert!(subscription.starts_with('^'), "librdkafka needs the ^");
            let matcher = topics_regex_matcher(re).expect("the cases are valid regexes");
            assert_eq!(matcher.as_str(), subscription);
            assert_eq!(matcher.is_match(topic), consumed, "'{re}' vs '{topic}'");
        }
    }
}
